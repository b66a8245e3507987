//! The code-12 ledger module against a real development-mode TigerBeetle replica.

mod common;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use bkp::exit::{classify, Code};
use bkp::ledger::*;

const TIMEOUT: Duration = Duration::from_secs(2);

/// A replica on a free loopback port (the shared harness), killed when dropped.
struct Replica {
    port: u16,
    _tb: common::TigerBeetle,
}

impl Replica {
    fn start() -> Replica {
        let tb = common::TigerBeetle::start();
        Replica {
            port: tb.port,
            _tb: tb,
        }
    }
}

/// A loopback port with nothing listening (just released by the OS).
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn config(port: u16, spool: &Path) -> LedgerConfig {
    LedgerConfig {
        cluster_id: 0,
        addresses: format!("127.0.0.1:{port}"),
        ledger: 12,
        timeout: TIMEOUT,
        spool_dir: spool.to_path_buf(),
    }
}

fn rec(n: u128, amount: u128, store: &str) -> Record {
    Record {
        // UUIDv7-like: time-ordered high bits, version nibble 7.
        backup_id: ((0x0190_0000_0000_7000u128 + n) << 64 | 0x8000_0000_0000_0000 | n)
            .to_be_bytes(),
        backup_type: BackupType::Tigerbeetle,
        scope: Scope::Full,
        compression: CompressionCode::Zstd,
        encryption: EncryptionCode::Aes256Gcm,
        status: Status::Completed,
        retention_days: 365,
        operation: Operation::Snapshot,
        started_at_unix_ns: 1_760_000_000_000_000_000 + n as u64,
        amount,
        store_identity: store.into(),
    }
}

fn spooled(dir: &Path) -> Vec<PathBuf> {
    match std::fs::read_dir(dir) {
        Ok(l) => l.map(|e| e.unwrap().path()).collect(),
        Err(_) => Vec::new(),
    }
}

fn expect_spooled(cfg: &LedgerConfig, r: &Record) -> PathBuf {
    let t0 = Instant::now();
    let out = record(cfg, r).unwrap();
    let took = t0.elapsed();
    eprintln!("unreachable cluster: record returned after {took:?}: {out:?}");
    assert!(took < TIMEOUT + Duration::from_secs(2), "took {took:?}");
    match out {
        Outcome::Spooled { path, reason } => {
            assert!(
                reason.contains(&cfg.addresses) && reason.contains("spooled to"),
                "{reason}"
            );
            assert!(path.exists());
            path
        }
        other => panic!("expected Spooled, got {other:?}"),
    }
}

/// The harness takes a replica for started only when that replica listens on its port:
/// another process answering there (a second test binary that picked the same free
/// port) is not it, and the start fails so that it is retried on another port.
#[test]
fn a_replica_whose_port_another_process_holds_is_not_taken_for_started() {
    let mut first = common::TigerBeetle::start();
    first.stop();
    let held = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = held.local_addr().unwrap().port();
    // The start below runs on its own copy: `first`'s directory goes when it is dropped.
    let copy = first.data_file.with_file_name("copy.tigerbeetle");
    std::fs::copy(&first.data_file, &copy).unwrap();
    match common::TigerBeetle::try_start_at(&copy, port) {
        Ok(tb) => panic!(
            "taken for started on {}, a port it does not hold",
            tb.address()
        ),
        Err(e) => assert!(e.contains("AddressInUse"), "{e}"),
    }
    drop(held);
}

#[test]
fn unreachable_cluster_is_bounded_by_the_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(free_port(), dir.path());
    let t0 = Instant::now();
    let err = lookup(&cfg, 1).unwrap_err();
    assert!(
        t0.elapsed() < TIMEOUT + Duration::from_secs(2),
        "{:?}",
        t0.elapsed()
    );
    assert_eq!(classify(&err), Some(Code::Transient), "{err:#}");
    assert!(err.to_string().contains("start the cluster"), "{err:#}");
    let err = account_balances(&cfg, 1).unwrap_err();
    assert_eq!(classify(&err), Some(Code::Transient), "{err:#}");
    // Nothing spooled: flushing does not wait for the unreachable cluster.
    let t0 = Instant::now();
    assert_eq!(flush_spool(&cfg).unwrap(), 0);
    assert!(t0.elapsed() < TIMEOUT, "{:?}", t0.elapsed());
    let bad = LedgerConfig {
        addresses: "not an address".into(),
        ..cfg.clone()
    };
    let err = record(&bad, &rec(1, 1, "file:///x")).unwrap_err();
    assert_eq!(classify(&err), Some(Code::Config), "{err:#}");
    assert_eq!(
        spooled(dir.path()).len(),
        1,
        "kept for when the config is fixed"
    );
}

#[test]
fn records_against_a_real_replica() {
    let store = "s3://bucket/prefix";
    let spool_dir = tempfile::tempdir().unwrap();
    let spool = spool_dir.path().join("spool");

    // Cluster down: two runs spool their records and return within the timeout.
    let dead = config(free_port(), &spool);
    let (a, b) = (rec(1, 1000, store), rec(2, 2000, store));
    expect_spooled(&dead, &a);
    expect_spooled(&dead, &b);
    assert_eq!(spooled(&spool).len(), 2);
    let t0 = Instant::now();
    let err = flush_spool(&dead).unwrap_err();
    assert!(t0.elapsed() < TIMEOUT + Duration::from_secs(2));
    assert_eq!(classify(&err), Some(Code::Transient), "{err:#}");
    assert_eq!(spooled(&spool).len(), 2);

    let replica = Replica::start();
    let cfg = config(replica.port, &spool);

    // The next run sends the spooled records first, then its own.
    let c = rec(3, 4000, store);
    let out = record(&cfg, &c).unwrap();
    let c_id = u128::from_be_bytes(c.backup_id);
    assert_eq!(
        out,
        Outcome::Recorded {
            transfer_id: c_id,
            already_existed: false
        }
    );
    assert!(spooled(&spool).is_empty(), "{:?}", spooled(&spool));
    assert_eq!(flush_spool(&cfg).unwrap(), 0);

    let view = lookup(&cfg, c_id).unwrap().expect("transfer exists");
    assert_eq!(view.id, c_id);
    assert_eq!(
        (view.amount, view.code, view.ledger, view.flags),
        (4000, 12, 12, 0)
    );
    assert_eq!(
        view.debit_account_id,
        source_account_id(BackupType::Tigerbeetle)
    );
    assert_eq!(view.credit_account_id, store_account_id(store));
    assert_eq!(view.fields, Some(c.packed()));
    assert_eq!(view.operation, Some(Operation::Snapshot));
    assert_eq!(
        (view.user_data_64, view.user_data_32),
        (c.started_at_unix_ns, 1)
    );
    assert!(view.timestamp > 0);
    let (va, vb) = (
        lookup(&cfg, u128::from_be_bytes(a.backup_id))
            .unwrap()
            .unwrap(),
        lookup(&cfg, u128::from_be_bytes(b.backup_id))
            .unwrap()
            .unwrap(),
    );
    assert_eq!((va.amount, vb.amount), (1000, 2000));
    assert!(
        va.timestamp < vb.timestamp && vb.timestamp < view.timestamp,
        "oldest first"
    );
    assert_eq!(lookup(&cfg, 42).unwrap(), None);

    // A retried run: the same record again is answered `exists`, nothing doubles.
    let again = record(&cfg, &c).unwrap();
    assert_eq!(
        again,
        Outcome::Recorded {
            transfer_id: c_id,
            already_existed: true
        }
    );
    assert_eq!(
        lookup(&cfg, c_id).unwrap().unwrap().timestamp,
        view.timestamp
    );

    // Spooled while down, flushed by flush_spool once up.
    let d = rec(4, 8000, store);
    expect_spooled(&dead, &d);
    assert_eq!(flush_spool(&cfg).unwrap(), 1);
    assert_eq!(flush_spool(&cfg).unwrap(), 0);
    assert!(spooled(&spool).is_empty());
    assert_eq!(
        lookup(&cfg, u128::from_be_bytes(d.backup_id))
            .unwrap()
            .unwrap()
            .amount,
        8000
    );

    // A failed run: status failed, amount 0.
    let f = Record {
        status: Status::Failed,
        amount: 0,
        ..rec(5, 0, store)
    };
    record(&cfg, &f).unwrap();
    let vf = lookup(&cfg, u128::from_be_bytes(f.backup_id))
        .unwrap()
        .unwrap();
    assert_eq!(
        (vf.amount, vf.fields.map(|p| p.status)),
        (0, Some(Status::Failed))
    );

    // The same id with a different amount is a hard rejection: error, file kept.
    let reused = rec(3, 5, store);
    let err = record(&cfg, &reused).unwrap_err();
    let msg = format!("{err:#}");
    assert!(msg.contains("exists_with_different_amount"), "{msg}");
    let kept = spool.join(format!("{c_id:032x}.json"));
    assert!(msg.contains(&kept.display().to_string()), "{msg}");
    assert!(kept.exists());
    let err = flush_spool(&cfg).unwrap_err();
    assert!(format!("{err:#}").contains("exists_with_different_amount"));
    assert!(kept.exists(), "a rejected record is never deleted silently");
    std::fs::remove_file(&kept).unwrap();

    // Balances: the store holds what was recorded; cleanup moves bytes back.
    let stored = 1000 + 2000 + 4000 + 8000;
    assert_eq!(
        account_balances(&cfg, store_account_id(store)).unwrap(),
        Some((0, stored))
    );
    assert_eq!(
        account_balances(&cfg, source_account_id(BackupType::Tigerbeetle)).unwrap(),
        Some((stored, 0))
    );
    let cleanup = Record {
        operation: Operation::Cleanup,
        ..a.clone()
    };
    assert!(matches!(
        record(&cfg, &cleanup).unwrap(),
        Outcome::Recorded {
            already_existed: false,
            ..
        }
    ));
    assert!(matches!(
        record(&cfg, &cleanup).unwrap(),
        Outcome::Recorded {
            already_existed: true,
            ..
        }
    ));
    let (debits, credits) = account_balances(&cfg, store_account_id(store))
        .unwrap()
        .unwrap();
    assert_eq!((debits, credits - debits), (1000, stored - 1000));
    assert_eq!(
        account_balances(&cfg, store_account_id("file:///nowhere")).unwrap(),
        None
    );

    // Other stores and kinds get their own accounts.
    let other = Record {
        backup_type: BackupType::Parquet,
        ..rec(6, 77, "file:///srv/b")
    };
    record(&cfg, &other).unwrap();
    assert_eq!(
        account_balances(&cfg, store_account_id("file:///srv/b")).unwrap(),
        Some((0, 77))
    );
    assert_eq!(
        account_balances(&cfg, source_account_id(BackupType::Parquet)).unwrap(),
        Some((77, 0))
    );
    drop(replica);
}
