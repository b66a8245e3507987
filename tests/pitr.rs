//! Point-in-time restore of TigerBeetle through the real binary: a snapshot plus log
//! segments (and the log alone, before any snapshot) reproduce every account's
//! balances at several moments; a missing or damaged segment stops the restore
//! and names it.

mod common;

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use common::{assert_exit, repl, run_bkp, tool, walk, TigerBeetle};

/// Every account's (debits pending, debits posted, credits pending, credits posted).
fn balances(address: &str) -> BTreeMap<String, [String; 4]> {
    let text = repl(address, "lookup_accounts id=1, id=2, id=3, id=4;");
    serde_json::Deserializer::from_str(&text)
        .into_iter::<serde_json::Value>()
        .map(|v| {
            let v = v.unwrap();
            let f = |k: &str| v[k].as_str().unwrap().to_string();
            (
                f("id"),
                [
                    f("debits_pending"),
                    f("debits_posted"),
                    f("credits_pending"),
                    f("credits_posted"),
                ],
            )
        })
        .collect()
}

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
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join("key"), [3u8; 32]).unwrap();
    let cfg = dir.path().join("bkp.toml");
    fs::write(
        &cfg,
        format!(
            "work_dir = \"work\"\n[store]\ntype = \"local\"\npath = \"store\"\n[encryption]\nkey_file = \"key\"\n\
             [tigerbeetle]\ndata_file = \"{}\"\naddresses = \"{address}\"\nbinary = \"{}\"\nreplica_args = [\"--development\"]\n",
            tb.data_file.display(),
            tool("tigerbeetle").display()
        ),
    )
    .unwrap();

    // Phase 1: accounts, plain and two-phase transfers, a linked chain.
    repl(&address, "create_accounts id=1 code=10 ledger=700, id=2 code=10 ledger=700, id=3 code=10 ledger=700, id=4 code=10 ledger=700;");
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
    let (out, _) = restore_at(&cfg, dir.path(), &t1, "at1-again");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("from the beginning"),
        "logs alone before the snapshot"
    );

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
