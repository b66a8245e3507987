//! Bases of a three-replica TigerBeetle cluster built from its log
//! (`bkp snapshot --from-log`), through the real binary: a point-in-time restore
//! of the whole cluster starts from the newest base at or before the instant
//! and replays only the log after it, with the source's exact balances; a
//! drill counts a base's rows; a cluster holding a row the log does not is
//! refused; and cleanup trims the log behind the oldest kept base while every
//! kept instant stays restorable.

mod common;

use std::path::{Path, PathBuf};

use common::cluster::{balances, Balances, Cluster, FOUR_ACCOUNTS};
use common::{assert_exit, repl, run_bkp, text};

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

fn json(out: &std::process::Output) -> serde_json::Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(out)))
}

/// Transfers on ledger 700 in the cluster at `address` (events separated by
/// `, `), then a `logs` run; returns the instant after it and the balances then.
fn transfer(cfg: &Path, address: &str, what: &str) -> (String, Balances) {
    let events: Vec<String> = what
        .split(", ")
        .map(|e| format!("{e} ledger=700 code=10"))
        .collect();
    let answer = repl(address, &format!("create_transfers {};", events.join(", ")));
    assert!(!answer.contains("Failed"), "a transfer failed: {answer}");
    assert_exit(&bkp(cfg, &["logs"]), 0);
    (now(), balances(address))
}

/// `snapshot --from-log`: the base's id.
fn base(cfg: &Path) -> String {
    let out = bkp(cfg, &["--json", "snapshot", "--from-log"]);
    assert_exit(&out, 0);
    json(&out)["manifest"]["id"].as_str().unwrap().to_string()
}

/// `restore --at AT --replicas 3` into `dir/name`: the report and the target.
fn restore_cluster(cfg: &Path, dir: &Path, at: &str, name: &str) -> (serde_json::Value, PathBuf) {
    let target = dir.join(name);
    let out = restore_replicas(cfg, at, &target);
    assert_exit(&out, 0);
    let mut report = json(&out);
    report["stderr"] = serde_json::json!(String::from_utf8_lossy(&out.stderr));
    (report, target)
}

/// `bkp --json restore --at AT --target TARGET --replicas 3`.
fn restore_replicas(cfg: &Path, at: &str, target: &Path) -> std::process::Output {
    let target = target.to_str().unwrap();
    let args = [
        "--json",
        "restore",
        "--at",
        at,
        "--target",
        target,
        "--replicas",
        "3",
    ];
    bkp(cfg, &args)
}

/// The balances of the three data files in `target`, started as a cluster.
fn restored_balances(target: &Path) -> Balances {
    let restored = Cluster::adopt(target, 3);
    let b = balances(&restored.addresses());
    drop(restored);
    std::fs::remove_dir_all(target).unwrap();
    b
}

#[test]
fn a_cluster_restores_from_the_newest_base_before_the_instant() {
    let cluster = Cluster::start(3);
    let addresses = cluster.addresses();
    let s = common::setup(
        &cluster.file(0),
        common::StoreKind::Local,
        &format!("addresses = \"{addresses}\"\nreplica_args = [\"--development\"]\n"),
    );
    let (dir, cfg) = (s.dir.path(), &s.config);
    repl(&addresses, FOUR_ACCOUNTS);
    assert_exit(&bkp(cfg, &["logs"]), 0);
    let (t0, want0) = (now(), balances(&addresses));
    // A pending transfer with a live timeout: the base holds it imported,
    // without one, so no restore of the base expires it by its own clock.
    let (t1, want1) = transfer(
        cfg,
        &addresses,
        "id=10 debit_account_id=1 credit_account_id=2 amount=100, id=20 debit_account_id=1 credit_account_id=3 amount=5 flags=pending timeout=3600",
    );
    let b1 = base(cfg);
    let (t2, want2) = transfer(
        cfg,
        &addresses,
        "id=11 debit_account_id=2 credit_account_id=3 amount=30, id=21 pending_id=20 flags=post_pending_transfer",
    );
    let b2 = base(cfg);
    let (t3, want3) = transfer(
        cfg,
        &addresses,
        "id=12 debit_account_id=3 credit_account_id=4 amount=7",
    );

    // The plan names the base and the segments after it.
    let target = dir.join("plan");
    let out = bkp(
        cfg,
        &[
            "restore",
            "--at",
            &t3,
            "--target",
            target.to_str().unwrap(),
            "--replicas",
            "3",
            "--dry-run",
        ],
    );
    assert_exit(&out, 0);
    let plan = String::from_utf8_lossy(&out.stdout);
    assert!(
        plan.contains(&b2)
            && plan.contains("a base of 3 replicas")
            && plan.contains("would replay at most"),
        "{plan}"
    );

    // Before any base: the log alone. After each base: that base, and only the
    // log after it.
    for (at, want, from, transfers, name) in [
        (&t0, &want0, None, 0, "r0"),
        (&t1, &want1, Some(&b1), 0, "r1"),
        (&t2, &want2, Some(&b2), 0, "r2"),
        (&t3, &want3, Some(&b2), 1, "r3"),
    ] {
        let (report, target) = restore_cluster(cfg, dir, at, name);
        assert_eq!(
            report["id"].as_str(),
            from.map(String::as_str),
            "{at}: {report} {}",
            report["stderr"]
        );
        assert_eq!(report["replayed"]["transfers"], transfers, "{at}: {report}");
        if from.is_some() {
            assert_eq!(report["replayed"]["newest_row_in_log"], true, "{report}");
        }
        assert_eq!(&restored_balances(&target), want, "at {at}");
    }

    // A drill starts the base's three files as a cluster and counts its rows.
    let out = bkp(
        cfg,
        &["--json", "verify", "--drill", "--kind", "tigerbeetle"],
    );
    assert_exit(&out, 0);
    let report = json(&out);
    let drill = report["drills"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["id"] == b2.as_str())
        .unwrap_or_else(|| panic!("{report}"));
    let facts = &drill["facts"];
    assert_eq!(facts["replica_count"], 3, "{report}");
    assert_eq!(facts["accounts"], 4, "{report}");
    assert_eq!(facts["transfers"], 4, "{report}");
    assert_eq!(
        facts["newest_row"], "in the log, with the same fields",
        "{report}"
    );

    // Retention keeps the newest base only: cleanup deletes the older base and
    // the segments behind the one that holds the kept base's newest row, and
    // every instant from that base on still restores exactly.
    let mut config = std::fs::read_to_string(cfg).unwrap();
    config.push_str(
        "\n[retention.snapshot]\npreset = \"none\"\nkeep_last = 1\n[retention.logs]\npreset = \"none\"\n",
    );
    std::fs::write(cfg, config).unwrap();
    let out = bkp(cfg, &["--json", "cleanup", "--dry-run"]);
    assert_exit(&out, 0);
    let plan = json(&out);
    let rows = plan["backups"].as_array().unwrap();
    let action = |id: &str| {
        let row = rows.iter().find(|r| r["id"] == id);
        row.map(|r| r["action"].as_str().unwrap().to_string())
    };
    assert_eq!(action(&b1).as_deref(), Some("delete"), "{plan}");
    assert_eq!(action(&b2).as_deref(), Some("keep"), "{plan}");
    let segments = |what: &str| {
        let of = |r: &&serde_json::Value| r["operation"] == "logs" && r["action"] == what;
        rows.iter().filter(of).count()
    };
    // Four segments: the accounts, then one after each transfer; the base b2
    // needs the third (its newest row) and the fourth.
    assert_eq!((segments("delete"), segments("keep")), (2, 2), "{plan}");
    assert_exit(&bkp(cfg, &["cleanup"]), 0);
    for (at, want, name) in [(&t2, &want2, "k2"), (&t3, &want3, "k3")] {
        let (report, target) = restore_cluster(cfg, dir, at, name);
        assert_eq!(report["id"].as_str(), Some(b2.as_str()), "{report}");
        assert_eq!(&restored_balances(&target), want, "after cleanup, at {at}");
    }
    // Before the kept base, the log is gone: refused, nothing written.
    let target = dir.join("k1");
    let out = restore_replicas(cfg, &t1, &target);
    assert_ne!(out.status.code(), Some(0), "{}", text(&out));
    assert!(
        !target.exists() || std::fs::read_dir(&target).unwrap().next().is_none(),
        "{}",
        text(&out)
    );
}

/// A cluster that holds a row the log does not (someone wrote to it, or a
/// base held a prepare the source never committed) is no state of the source:
/// replaying the log onto it is refused, and names the row's timestamp.
#[test]
fn a_cluster_with_a_row_the_log_does_not_hold_is_refused() {
    let cluster = Cluster::start(3);
    let addresses = cluster.addresses();
    let s = common::setup(
        &cluster.file(0),
        common::StoreKind::Local,
        &format!("addresses = \"{addresses}\"\nreplica_args = [\"--development\"]\n"),
    );
    let (dir, cfg) = (s.dir.path(), &s.config);
    repl(&addresses, FOUR_ACCOUNTS);
    transfer(
        cfg,
        &addresses,
        "id=10 debit_account_id=1 credit_account_id=2 amount=100",
    );
    let b1 = base(cfg);
    let (t2, want2) = transfer(
        cfg,
        &addresses,
        "id=11 debit_account_id=2 credit_account_id=3 amount=30",
    );

    // The base by its id: three data files, started as a new cluster.
    let files = dir.join("b1");
    let out = bkp(cfg, &["restore", &b1, "--target", files.to_str().unwrap()]);
    assert_exit(&out, 0);
    let restored = Cluster::adopt(&files, 3);
    let into = restored.addresses();
    // Untouched, it continues to t2 with the log after the base.
    let out = bkp(cfg, &["--json", "restore", "--at", &t2, "--into", &into]);
    assert_exit(&out, 0);
    assert_eq!(balances(&into), want2);
    // A transfer the source never made, then a later instant: refused.
    repl(&into, "create_transfers id=99 debit_account_id=4 credit_account_id=1 amount=1 ledger=700 code=10;");
    let (t3, _) = transfer(
        cfg,
        &addresses,
        "id=12 debit_account_id=3 credit_account_id=4 amount=7",
    );
    let out = bkp(cfg, &["restore", "--at", &t3, "--into", &into]);
    assert_exit(&out, 5);
    let err = text(&out);
    assert!(err.contains("that the log does not hold"), "{err}");
    // Nothing of the log after it was replayed onto it.
    let got = balances(&into);
    assert_eq!(got["4"][3], "0", "{got:?}");
}
