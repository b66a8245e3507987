//! Point-in-time restore of TigerBeetle through the real binary: a snapshot plus log
//! segments (and the log alone, before any snapshot) reproduce every account's
//! balances at several moments; a missing or damaged segment stops the restore
//! and names it.

mod common;

use std::fs;
use std::path::{Path, PathBuf};

use common::cluster::{balances, Balances, Cluster as Cluster3, FOUR_ACCOUNTS};
use common::{assert_exit, repl, run_bkp, walk, TigerBeetle};

fn bkp(cfg: &Path, args: &[&str]) -> std::process::Output {
    let mut all = vec!["--config", cfg.to_str().unwrap()];
    all.extend_from_slice(args);
    run_bkp(&all, &[])
}

fn now() -> String {
    std::thread::sleep(std::time::Duration::from_millis(20));
    let t = time::OffsetDateTime::now_utc();
    std::thread::sleep(std::time::Duration::from_millis(20));
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap()
}

/// The backup side of the cluster at `addresses`, which gets accounts 1 to 4: a
/// directory with a config (local store, a key; snapshots copy `data_file`;
/// private replicas in development mode).
fn source(data_file: &Path, addresses: &str) -> (tempfile::TempDir, PathBuf) {
    let s = common::setup(
        data_file,
        common::StoreKind::Local,
        &format!("addresses = \"{addresses}\"\nreplica_args = [\"--development\"]\n"),
    );
    repl(addresses, FOUR_ACCOUNTS);
    (s.dir, s.config)
}

/// A recorded instant: `before` (a transfer on ledger 700) and a `logs` run,
/// the instant and the balances then, and a transfer and a `logs` run after it.
fn moment(cfg: &Path, address: &str, before: &str) -> (String, Balances) {
    repl(
        address,
        &format!("create_transfers {before} ledger=700 code=10;"),
    );
    assert_exit(&bkp(cfg, &["logs"]), 0);
    let at = now();
    let want = balances(address);
    repl(address, "create_transfers id=11 debit_account_id=3 credit_account_id=4 amount=7 ledger=700 code=10;");
    assert_exit(&bkp(cfg, &["logs"]), 0);
    (at, want)
}

fn restore_at(cfg: &Path, dir: &Path, at: &str, name: &str) -> (std::process::Output, PathBuf) {
    let target = dir.join(name);
    let out = bkp(
        cfg,
        &[
            "--json",
            "restore",
            "--at",
            at,
            "--target",
            target.to_str().unwrap(),
        ],
    );
    (out, target)
}

#[test]
fn snapshot_plus_logs_and_logs_alone_reach_every_moment() {
    let mut tb = TigerBeetle::start();
    let address = tb.address();
    let (dir, cfg) = source(&tb.data_file, &address);

    // Phase 1: plain and two-phase transfers, a linked chain.
    repl(&address, "create_transfers id=11 debit_account_id=1 credit_account_id=2 amount=100 ledger=700 code=10, \
        id=12 debit_account_id=2 credit_account_id=3 amount=40 ledger=700 code=10 flags=pending, \
        id=13 debit_account_id=3 credit_account_id=4 amount=7 ledger=700 code=10 flags=linked, \
        id=14 debit_account_id=4 credit_account_id=1 amount=2 ledger=700 code=10;");
    assert_exit(&bkp(&cfg, &["logs"]), 0);
    let s1 = balances(&address);
    let t1 = now();

    // A snapshot of the quiet file, then the replica comes back.
    tb.stop();
    assert_exit(&bkp(&cfg, &["snapshot"]), 0);
    tb.restart();

    // Phase 2: post the pending transfer, more traffic.
    repl(&address, "create_transfers id=21 pending_id=12 amount=40 ledger=700 code=10 flags=post_pending_transfer, \
        id=22 debit_account_id=1 credit_account_id=4 amount=9 ledger=700 code=10 flags=pending;");
    assert_exit(&bkp(&cfg, &["logs"]), 0);
    let s2 = balances(&address);
    let t2 = now();

    // Phase 3: void, and a transfer with a 128-bit amount.
    repl(&address, "create_transfers id=31 pending_id=22 ledger=700 code=10 flags=void_pending_transfer, \
        id=32 debit_account_id=3 credit_account_id=2 amount=340282366920938463463374607431768211000 ledger=700 code=10;");
    assert_exit(&bkp(&cfg, &["logs"]), 0);
    let s3 = balances(&address);
    let t3 = now();
    assert_ne!(s1, s2);
    assert_ne!(s2, s3);

    for (at, want, name) in [(&t1, &s1, "at1"), (&t2, &s2, "at2"), (&t3, &s3, "at3")] {
        let (out, target) = restore_at(&cfg, dir.path(), at, name);
        assert_exit(&out, 0);
        // The reported digest is the replayed file's own.
        let report: serde_json::Value = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stdout)));
        let file = target.join("0_0.tigerbeetle");
        let digest = bkp::stages::hash::digest_reader(fs::File::open(&file).unwrap()).unwrap();
        assert_eq!(report["files"][0]["sha256"], digest.sha256);
        let restored = TigerBeetle::start_on(&file);
        assert_eq!(&balances(&restored.address()), want, "restore --at {at}");
    }
    // Before the snapshot: the log alone, no snapshot named.
    let (out, _) = restore_at(&cfg, dir.path(), &t1, "at1-again");
    assert_exit(&out, 0);
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(
        report["id"].is_null(),
        "logs alone before the snapshot: {report:#}"
    );
    assert!(report["replayed"].is_object(), "{report:#}");

    // A damaged segment in the middle of the chain stops the restore and is named.
    let (list, _) = (bkp(&cfg, &["list", "--json"]), ());
    let list: serde_json::Value = serde_json::from_slice(&list.stdout).unwrap();
    let segs: Vec<&serde_json::Value> = list["backups"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|b| b["operation"] == "logs")
        .collect();
    let middle = segs[1]["id"].as_str().unwrap().to_string();
    let object = walk(&dir.path().join("store/tigerbeetle"))
        .into_iter()
        .find(|p| p.to_string_lossy().contains(&middle))
        .unwrap();
    let mut bytes = fs::read(&object).unwrap();
    let n = bytes.len() / 2;
    bytes[n] ^= 1;
    fs::write(&object, &bytes).unwrap();
    let (out, target) = restore_at(&cfg, dir.path(), &t3, "damaged");
    assert_exit(&out, 5);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains(&middle),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!target.exists());
    // And a missing one.
    fs::remove_file(&object).unwrap();
    let (out, target) = restore_at(&cfg, dir.path(), &t3, "missing");
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains(&middle),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!target.exists());
}

/// Pending transfers with a timeout: one expires in the source and its expiry is
/// replayed at its own timestamp; a snapshot holds both while they are live, and
/// the replica that runs the restored snapshot expires them by its own clock. Every
/// restore must deliver the source's balances at its moment, or nothing: the
/// snapshot is abandoned for the log alone.
#[test]
fn pending_transfers_that_expire_or_outlive_a_snapshot_restore_exactly() {
    let mut tb = TigerBeetle::start();
    let address = tb.address();
    let (dir, cfg) = source(&tb.data_file, &address);

    // Q (51) will expire untouched; P (52) will be posted in time.
    repl(&address, "create_transfers id=50 debit_account_id=1 credit_account_id=2 amount=1000 ledger=700 code=10, \
        id=51 debit_account_id=1 credit_account_id=2 amount=50 ledger=700 code=10 timeout=90 flags=pending, \
        id=52 debit_account_id=3 credit_account_id=4 amount=30 ledger=700 code=10 timeout=90 flags=pending;");
    let created = std::time::Instant::now();
    assert_exit(&bkp(&cfg, &["logs"]), 0);
    tb.stop();
    assert_exit(&bkp(&cfg, &["snapshot"]), 0);
    tb.restart();
    let s_snap = balances(&address);
    let t_snap = now();

    repl(&address, "create_transfers id=53 pending_id=52 amount=30 ledger=700 code=10 flags=post_pending_transfer;");
    let s_post = balances(&address);
    let t_post = now();
    assert!(
        created.elapsed() < std::time::Duration::from_secs(90),
        "the post came after P's timeout: the machine is too slow for this test"
    );
    assert_eq!(s_post["4"][3], "30", "P was posted in time: {s_post:?}");
    assert_exit(&bkp(&cfg, &["logs"]), 0);

    // Q expires in the source: its pending amount is released.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(180);
    let s_expired = loop {
        let b = balances(&address);
        if b["1"][0] == "0" {
            break b;
        }
        assert!(std::time::Instant::now() < deadline, "Q did not expire");
        std::thread::sleep(std::time::Duration::from_millis(250));
    };
    assert_exit(&bkp(&cfg, &["logs"]), 0);
    let t_expired = now();
    repl(&address, "create_transfers id=60 debit_account_id=2 credit_account_id=1 amount=5 ledger=700 code=10;");
    assert_exit(&bkp(&cfg, &["logs"]), 0);
    let s_after = balances(&address);
    let t_after = now();
    assert_eq!(
        s_snap["1"][0], "50",
        "Q pending at the snapshot: {s_snap:?}"
    );
    assert_ne!(s_post, s_expired);

    for (at, want, name) in [
        (&t_snap, &s_snap, "snap"),
        (&t_post, &s_post, "post"),
        (&t_expired, &s_expired, "expired"),
        (&t_after, &s_after, "after"),
    ] {
        let (out, target) = restore_at(&cfg, dir.path(), at, name);
        assert_exit(&out, 0);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("restoring again from the log alone"),
            "the snapshot holds live timeouts: {err}"
        );
        let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert!(report["id"].is_null(), "restored from the log: {report}");
        let expiries = report["replayed"]["expiries"].as_u64().unwrap();
        assert_eq!(
            expiries,
            u64::from(name == "expired" || name == "after"),
            "{name}: {report}"
        );
        let restored = TigerBeetle::start_on(&target.join("0_0.tigerbeetle"));
        assert_eq!(&balances(&restored.address()), want, "restore --at {at}");
    }
}

/// A snapshot of one replica of a three-replica cluster cannot run alone (its
/// superblock says three), so a point-in-time restore from it says so and replays
/// the log alone into a fresh one-replica file, with the source's balances.
#[test]
fn a_snapshot_of_one_replica_of_three_restores_from_the_log_alone() {
    let mut cluster = Cluster3::start(3);
    let addresses = cluster.addresses();
    let (dir, cfg) = source(&cluster.file(1), &addresses);
    repl(&addresses, "create_transfers id=10 debit_account_id=1 credit_account_id=2 amount=100 ledger=700 code=10;");
    assert_exit(&bkp(&cfg, &["logs"]), 0);

    // Replica 1 stops; its file is the snapshot; it rejoins.
    cluster.stop_replica(1);
    let snap = bkp(&cfg, &["--json", "snapshot"]);
    assert_exit(&snap, 0);
    cluster.start_replica(1);
    // A drill proves what it can (digests, `inspect integrity`) and says why it
    // cannot count the rows.
    let drill = bkp(
        &cfg,
        &["--json", "verify", "--drill", "--kind", "tigerbeetle"],
    );
    assert_exit(&drill, 0);
    let report: serde_json::Value = serde_json::from_slice(&drill.stdout).unwrap();
    let facts = &report["drills"][0]["facts"];
    assert_eq!(facts["integrity"], "passed", "{report}");
    assert_eq!(facts["replica_count"], 3, "{report}");
    repl(&addresses, "create_transfers id=11 debit_account_id=3 credit_account_id=4 amount=7 ledger=700 code=10;");
    assert_exit(&bkp(&cfg, &["logs"]), 0);
    let want = balances(&addresses);
    assert_eq!(want["4"][3], "7", "{want:?}");

    let (out, target) = restore_at(&cfg, dir.path(), &now(), "restored");
    assert_exit(&out, 0);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("one replica of a 3-replica cluster") && err.contains("log alone"),
        "{err}"
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(report["id"].is_null(), "restored from the log: {report}");
    assert_eq!(report["replayed"]["transfers"], 2, "{report}");
    let restored = TigerBeetle::start_on(&target.join("0_0.tigerbeetle"));
    assert_eq!(balances(&restored.address()), want);
}

/// `restore --at T --into ADDRESSES` replays the log into a three-replica cluster
/// the operator formatted and started, giving a whole cluster back with the
/// source's balances; it never writes into the cluster being backed up.
#[test]
fn the_log_replays_into_a_new_three_replica_cluster() {
    let tb = TigerBeetle::start();
    let address = tb.address();
    let (_dir, cfg) = source(&tb.data_file, &address);
    let (t1, want) = moment(
        &cfg,
        &address,
        "id=10 debit_account_id=1 credit_account_id=2 amount=100",
    );

    // Never into the live cluster.
    let out = bkp(&cfg, &["restore", "--at", &t1, "--into", &address]);
    assert_exit(&out, 3);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("the cluster being backed up"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let target = Cluster3::start(3);
    let out = bkp(
        &cfg,
        &[
            "--json",
            "restore",
            "--at",
            &t1,
            "--into",
            &target.addresses(),
        ],
    );
    assert_exit(&out, 0);
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["replayed"]["transfers"], 1, "{report}");
    assert_eq!(report["into"], target.addresses(), "{report}");
    assert_eq!(balances(&target.addresses()), want);
    // Again, to a later point: replay goes on from what the cluster holds.
    let out = bkp(
        &cfg,
        &[
            "--json",
            "restore",
            "--at",
            &now(),
            "--into",
            &target.addresses(),
        ],
    );
    assert_exit(&out, 0);
    assert_eq!(balances(&target.addresses()), balances(&address));
}

/// A log segment on a local store is verified, then replayed into the cluster
/// `--into` names: another genuine segment put under its name in between (a
/// writer of the shared file system; it decrypts with the same key) must not
/// be what reaches the cluster. The restore stops itself after verifying the
/// first segment (`BKP_PAUSEPOINT`), the test swaps the object, and the
/// restore goes on.
#[test]
fn a_segment_swapped_after_its_verification_is_not_what_the_cluster_gets() {
    let tb = TigerBeetle::start();
    let address = tb.address();
    let (dir, cfg) = source(&tb.data_file, &address);
    moment(
        &cfg,
        &address,
        "id=10 debit_account_id=1 credit_account_id=2 amount=100",
    );
    let at = now();
    let want = balances(&address);
    let mut segments: Vec<PathBuf> = walk(&dir.path().join("store/tigerbeetle"))
        .into_iter()
        .filter(|p| p.to_string_lossy().contains("-logs-"))
        .collect();
    // By id, which is by time: the first segment holds the accounts.
    segments.sort_by_key(|p| p.file_name().unwrap().to_os_string());
    assert_eq!(segments.len(), 2, "{segments:?}");

    let target = TigerBeetle::start();
    let saved = fs::read(&segments[0]).unwrap();
    let into = target.address();
    let out = common::run_paused(
        &cfg,
        &["restore", "--at", &at, "--into", &into],
        "restore-verified:1",
        "the restore, between verifying and replaying a segment",
        || {
            fs::copy(&segments[1], &segments[0]).unwrap();
        },
    );
    fs::write(&segments[0], saved).unwrap();
    assert_exit(&out, 0);
    assert_eq!(balances(&target.address()), want);
}

/// `restore --at T --target DIR --replicas 3` replays the log into a private
/// three-replica cluster and delivers its three data files, which start as a
/// cluster of their own with the source's balances at T.
#[test]
fn the_log_restores_as_the_data_files_of_a_three_replica_cluster() {
    let mut tb = TigerBeetle::start();
    let address = tb.address();
    let (dir, cfg) = source(&tb.data_file, &address);
    repl(&address, "create_transfers id=10 debit_account_id=1 credit_account_id=2 amount=100 ledger=700 code=10;");
    // A snapshot (one replica's file) is no base for a cluster of three.
    tb.stop();
    assert_exit(&bkp(&cfg, &["snapshot"]), 0);
    tb.restart();
    let (t1, want) = moment(
        &cfg,
        &address,
        "id=12 debit_account_id=2 credit_account_id=3 amount=30",
    );

    let target = dir.path().join("cluster");
    let target_arg = target.to_str().unwrap();
    // A cluster is replayed to a point in time, from the log alone.
    let out = bkp(
        &cfg,
        &["restore", "--target", target_arg, "--replicas", "3"],
    );
    assert_exit(&out, 3);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("--replicas"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!target.exists());
    // `restore --at t1 --target DIR --replicas 3`, and more arguments.
    let as_cluster = |target: &Path, more: &[&str]| {
        let target = target.to_str().unwrap();
        let args = [
            &[
                "restore",
                "--at",
                &t1,
                "--target",
                target,
                "--replicas",
                "3",
            ],
            more,
        ];
        bkp(&cfg, &args.concat())
    };
    let out = as_cluster(&target, &["--dry-run"]);
    assert_exit(&out, 0);
    let plan = String::from_utf8_lossy(&out.stdout);
    assert!(
        plan.contains("from the beginning") && plan.contains("private cluster of 3 fresh replicas"),
        "{plan}"
    );

    let out = as_cluster(&target, &["--json"]);
    assert_exit(&out, 0);
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(report["id"].is_null(), "from the log alone: {report}");
    assert_eq!(report["replicas"], 3, "{report}");
    assert_eq!(report["replayed"]["transfers"], 2, "{report}");
    let names: Vec<&str> = report["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        ["0_0.tigerbeetle", "0_1.tigerbeetle", "0_2.tigerbeetle"],
        "{report}"
    );
    // The three files run as a cluster of their own, at T.
    let restored = Cluster3::adopt(&target, 3);
    assert_eq!(balances(&restored.addresses()), want);

    // Without the log's first segment there is no cluster to replay: the restore
    // fails, says why a snapshot cannot stand in, and leaves no target.
    let mut segments: Vec<PathBuf> = walk(&dir.path().join("store/tigerbeetle"))
        .into_iter()
        .filter(|p| p.to_string_lossy().contains("tigerbeetle-logs-"))
        .collect();
    segments.sort_by_key(|p| p.file_name().map(|n| n.to_os_string()));
    fs::remove_file(&segments[0]).unwrap();
    let again = dir.path().join("again");
    let out = as_cluster(&again, &[]);
    // Exit 9, as for any stored object that is gone.
    assert_exit(&out, 9);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("replayed from the log alone"), "{err}");
    assert!(!again.exists());
    // Its manifest gone too: the log has a gap, which the restore finds before
    // it formats and starts any replica.
    let replica_log = dir.path().join("work/replica.log");
    let log_len = || fs::metadata(&replica_log).map_or(0, |m| m.len());
    let logged = log_len();
    let first = segments[0]
        .file_name()
        .unwrap()
        .to_string_lossy()
        .to_string();
    let id = first
        .trim_start_matches("tigerbeetle-logs-")
        .split('.')
        .next()
        .unwrap()
        .to_string();
    fs::remove_file(
        dir.path()
            .join(format!("store/manifests/tigerbeetle/{id}.json")),
    )
    .unwrap();
    // Its head records it as stored: the store lost a backup (exit 13).
    let out = as_cluster(&again, &[]);
    assert_exit(&out, 13);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("has lost backups"), "{err}");
    assert_eq!(log_len(), logged, "no replica was started: {err}");
    // Its head deleted too (a store without Object Lock): the log has a gap,
    // which the restore finds before it formats and starts any replica.
    fs::remove_file(
        dir.path()
            .join(format!("store/heads/tigerbeetle/{id}.json")),
    )
    .unwrap();
    let out = as_cluster(&again, &[]);
    assert_exit(&out, 5);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("replayed from the log alone") && err.contains("gap"),
        "{err}"
    );
    assert_eq!(log_len(), logged, "no replica was started: {err}");
    assert!(!again.exists());
    // Only the configured cluster's log is replayed: without one, a config error.
    let no_cluster = dir.path().join("no-cluster.toml");
    let text = fs::read_to_string(&cfg).unwrap();
    let text: Vec<&str> = text
        .lines()
        .filter(|l| !l.starts_with("addresses"))
        .collect();
    fs::write(&no_cluster, text.join("\n")).unwrap();
    let args = [
        "restore",
        "--at",
        &t1,
        "--target",
        again.to_str().unwrap(),
        "--replicas",
        "3",
    ];
    // The dry run says what the restore would.
    for dry in [false, true] {
        let args = [&args[..], if dry { &["--dry-run"][..] } else { &[] }].concat();
        let out = bkp(&no_cluster, &args);
        assert_exit(&out, 3);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("tigerbeetle.addresses"),
            "dry run {dry}: {err}"
        );
    }
}
