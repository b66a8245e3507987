//! `bkp cleanup` and `bkp verify` through the real binary, on real TigerBeetle
//! snapshots, a local store and S3 on SeaweedFS, with the audit ledger on a real
//! TigerBeetle cluster.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use bkp::ledger::{self, LedgerConfig};
use common::{
    assert_exit, formatted_data_file, json, repl, setup, snapshot_manifest, Setup, StoreKind,
    TigerBeetle,
};

/// Snapshots as one archive object each (the tests below damage and count
/// them; chunked snapshots have `tests/chunked.rs`), and the `[ledger]` and
/// `[retention]` sections: only the newest snapshot is kept.
fn extra(grace: &str) -> String {
    format!(
        "{}[ledger]\naddresses = \"{}\"\nledger = 12\ntimeout = \"5s\"\n\
         [retention]\ngrace = \"{grace}\"\n[retention.snapshot]\npreset = \"none\"\n",
        common::ARCHIVE,
        common::shared_ledger().address()
    )
}

fn ledger_cfg(s: &Setup) -> LedgerConfig {
    LedgerConfig {
        cluster_id: 0,
        addresses: common::shared_ledger().address(),
        ledger: 12,
        timeout: Duration::from_secs(5),
        spool_dir: s.path("work/ledger-spool"),
    }
}

fn listed(s: &Setup) -> Vec<String> {
    s.listed(&[])
}

/// The stored object of an archive snapshot, or the largest chunk of a
/// chunked one.
fn object_path(s: &Setup, m: &serde_json::Value) -> PathBuf {
    if m["chunks"].is_object() {
        return common::walk(&s.path("store/tigerbeetle/chunks"))
            .into_iter()
            .filter(|p| p.is_file())
            .max_by_key(|p| fs::metadata(p).unwrap().len())
            .expect("a stored chunk");
    }
    s.path("store")
        .join(m["objects"][0]["key"].as_str().unwrap())
}

fn manifest_path(s: &Setup, m: &serde_json::Value) -> PathBuf {
    s.path("store").join(format!(
        "manifests/tigerbeetle/{}.json",
        m["id"].as_str().unwrap()
    ))
}

fn age(p: &Path, by: Duration) {
    let f = fs::File::options().write(true).open(p).unwrap();
    f.set_modified(SystemTime::now() - by).unwrap();
}

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Store balance in the ledger: credits minus debits.
fn balance(s: &Setup) -> i128 {
    let identity = format!(
        "file://{}",
        s.path("store").canonicalize().unwrap().display()
    );
    let (debits, credits) =
        ledger::account_balances(&ledger_cfg(s), ledger::store_account_id(&identity))
            .unwrap()
            .expect("the store account exists");
    credits as i128 - debits as i128
}

#[test]
fn cleanup_plans_deletes_sweeps_and_balances_the_ledger() {
    let dir = tempfile::tempdir().unwrap();
    let data = formatted_data_file(dir.path());
    let s = setup(&data, StoreKind::Local, &extra("1h"));
    let snaps: Vec<_> = (0..3).map(|_| snapshot_manifest(&s)).collect();
    let ids: Vec<String> = snaps
        .iter()
        .map(|m| m["id"].as_str().unwrap().to_string())
        .collect();
    let sizes: Vec<i128> = snaps
        .iter()
        .map(|m| m["objects"][0]["size"].as_u64().unwrap() as i128)
        .collect();
    assert_eq!(balance(&s), sizes.iter().sum::<i128>());

    // Leftovers of crashed runs: an old and a fresh unnamed object, an old spool.
    let old_orphan = s.path("store/tigerbeetle/2020/01/01/tigerbeetle-snapshot-orphan.tar.zst.enc");
    let new_orphan = s.path("store/tigerbeetle/2020/01/01/tigerbeetle-snapshot-fresh.tar.zst.enc");
    fs::create_dir_all(old_orphan.parent().unwrap()).unwrap();
    fs::write(&old_orphan, b"half an upload").unwrap();
    fs::write(&new_orphan, b"an upload in progress").unwrap();
    age(&old_orphan, Duration::from_secs(7200));
    let spool = s.path("work/.restore-42.spool");
    fs::write(&spool, b"x").unwrap();
    age(&spool, Duration::from_secs(7200));

    // The dry run shows the plan and changes nothing.
    let out = s.bkp(&["--json", "cleanup", "--dry-run"]);
    assert_exit(&out, 0);
    let plan = json(&out);
    let rows = plan["backups"].as_array().unwrap();
    assert_eq!(rows.len(), 3);
    let action = |id: &str| {
        rows.iter()
            .find(|r| r["id"] == id)
            .map(|r| r["action"].as_str().unwrap().to_string())
            .unwrap()
    };
    assert_eq!(action(&ids[2]), "keep");
    assert_eq!(action(&ids[0]), "delete");
    assert_eq!(action(&ids[1]), "delete");
    assert!(rows
        .iter()
        .any(|r| r["reasons"][0] == "kept: newest good backup of tigerbeetle/full"));
    assert_eq!(listed(&s), ids);
    assert!(old_orphan.exists() && spool.exists());
    let text = s.bkp(&["cleanup", "--dry-run"]);
    assert_exit(&text, 0);
    assert!(String::from_utf8_lossy(&text.stdout).contains("delete"));
    assert!(stderr(&text).contains("would remove"), "{}", stderr(&text));

    let out = s.bkp(&["cleanup"]);
    assert_exit(&out, 0);
    assert_eq!(listed(&s), vec![ids[2].clone()]);
    assert!(!object_path(&s, &snaps[0]).exists());
    assert!(!object_path(&s, &snaps[1]).exists());
    assert!(object_path(&s, &snaps[2]).exists());
    assert!(
        !old_orphan.exists(),
        "an orphan older than the grace period is removed"
    );
    assert!(
        new_orphan.exists(),
        "a young orphan may be an upload in progress"
    );
    assert!(!spool.exists());
    let reports = common::walk(&s.path("store/reports/cleanup"));
    assert!(reports.len() == 1);
    assert!(!s.path("store/trash").exists() || common::walk(&s.path("store/trash")).is_empty());
    // What the dry run said of orphans is what the real run removed: the old
    // one only (not the objects of the backups it deleted).
    let orphans: Vec<&str> = plan["orphans"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["key"].as_str().unwrap())
        .collect();
    assert_eq!(
        orphans,
        ["tigerbeetle/2020/01/01/tigerbeetle-snapshot-orphan.tar.zst.enc"],
        "{plan:#}"
    );

    // Each deletion was recorded in reverse: the balance is what the store retains.
    assert_eq!(balance(&s), sizes[2]);
    let lc = ledger_cfg(&s);
    for id in &ids[..2] {
        let backup = u128::from_str_radix(&id.replace('-', ""), 16).unwrap();
        let t = ledger::lookup(&lc, ledger::cleanup_transfer_id(backup))
            .unwrap()
            .unwrap();
        assert_eq!(t.operation, Some(ledger::Operation::Cleanup));
        assert_eq!(t.code, 12);
    }
    fs::remove_file(&new_orphan).unwrap();
    let out = s.bkp(&["verify"]);
    assert_exit(&out, 0);

    // Nothing left to delete: a second run changes nothing.
    let out = s.bkp(&["cleanup"]);
    assert_exit(&out, 0);
    assert_eq!(listed(&s), vec![ids[2].clone()]);
    assert_eq!(balance(&s), sizes[2]);
}

#[test]
fn an_interrupted_cleanup_is_finished_by_the_next_run() {
    let dir = tempfile::tempdir().unwrap();
    let data = formatted_data_file(dir.path());
    let s = setup(&data, StoreKind::Local, &extra("1h"));
    let old = snapshot_manifest(&s);
    let new = snapshot_manifest(&s);

    let mut env = s.env.clone();
    env.push(("BKP_FAILPOINT".into(), "cleanup-after-manifest".into()));
    let out = common::run_bkp(&["--config", s.config.to_str().unwrap(), "cleanup"], &env);
    assert!(!out.status.success(), "the failpoint must stop the run");
    // Killed between deleting the manifest and its objects: not listed, but not gone.
    assert_eq!(listed(&s), vec![new["id"].as_str().unwrap().to_string()]);
    assert!(object_path(&s, &old).exists());
    assert_eq!(common::walk(&s.path("store/trash")).len(), 1);
    // Verify sees a deletion in progress, not a lost backup.
    let out = s.bkp(&["--json", "verify"]);
    assert_exit(&out, 0);
    let report = json(&out);
    assert_eq!(report["ledger"]["pending"][0], old["id"], "{report:#}");

    let out = s.bkp(&["cleanup"]);
    assert_exit(&out, 0);
    assert!(
        stderr(&out).contains("finishing the interrupted deletion"),
        "{}",
        stderr(&out)
    );
    assert!(!object_path(&s, &old).exists());
    assert!(common::walk(&s.path("store/trash")).is_empty());
    assert_eq!(
        balance(&s),
        new["objects"][0]["size"].as_u64().unwrap() as i128
    );
    let out = s.bkp(&["verify"]);
    assert_exit(&out, 0);
}

#[test]
fn verify_finds_each_kind_of_damage() {
    let dir = tempfile::tempdir().unwrap();
    let data = formatted_data_file(dir.path());
    let s = setup(&data, StoreKind::Local, &extra("1h"));
    let m = snapshot_manifest(&s);
    let object = object_path(&s, &m);
    let manifest = manifest_path(&s, &m);
    let key = m["objects"][0]["key"].as_str().unwrap().to_string();
    let original = fs::read(&object).unwrap();

    let out = s.bkp(&["--json", "verify"]);
    assert_exit(&out, 0);
    let report = json(&out);
    assert_eq!(report["ok"], true);
    assert_eq!(
        report["bytes_read"].as_u64().unwrap(),
        original.len() as u64
    );
    assert_eq!(report["ledger"]["checked"], true);

    let failing_with = |code: i32, what: &str, expect: &str| {
        let out = s.bkp(&["verify"]);
        assert_exit(&out, code);
        let err = stderr(&out);
        assert!(err.contains(expect), "{what}: expected {expect:?} in {err}");
    };
    let failing = |what: &str, expect: &str| failing_with(5, what, expect);
    let put = |bytes: &[u8]| {
        let _ = fs::set_permissions(&object, fs::Permissions::from_mode(0o600));
        fs::write(&object, bytes).unwrap();
    };
    use std::os::unix::fs::PermissionsExt;

    let mut flipped = original.clone();
    flipped[original.len() / 2] ^= 0x40;
    put(&flipped);
    failing("flipped byte", &format!("object {key}"));
    put(&original[..original.len() - 100]);
    failing("truncated", "truncated or replaced");
    fs::remove_file(&object).unwrap();
    failing("missing object", "is missing");
    put(&original);
    let out = s.bkp(&["verify"]);
    assert_exit(&out, 0);

    // A missing manifest, its object still there: the ledger knows the
    // backup, and so does its head: the store lost a backup (exit 13).
    let saved = fs::read(&manifest).unwrap();
    fs::remove_file(&manifest).unwrap();
    failing_with(13, "missing manifest", "has no manifest for it");
    failing_with(13, "missing manifest", "has lost backups");
    fs::write(&manifest, &saved).unwrap();
    let out = s.bkp(&["verify"]);
    assert_exit(&out, 0);

    // Deleted outside bkp, manifest and object both.
    fs::remove_file(&manifest).unwrap();
    fs::remove_file(&object).unwrap();
    failing_with(13, "deleted backup", "deleted outside bkp");
}

#[test]
fn drill_restores_a_snapshot_into_a_replica_and_fails_on_damage() {
    let mut tb = TigerBeetle::start();
    repl(
        &tb.address(),
        "create_accounts id=1 code=10 ledger=700, id=2 code=10 ledger=700;",
    );
    repl(
        &tb.address(),
        "create_transfers id=11 debit_account_id=1 credit_account_id=2 amount=5 ledger=700 code=10, \
         id=12 debit_account_id=2 credit_account_id=1 amount=3 ledger=700 code=10, \
         id=13 debit_account_id=1 credit_account_id=2 amount=1 ledger=700 code=10;",
    );
    tb.stop();
    // A chunked snapshot (`extra` is not used): the drill assembles its chunks.
    let s = setup(
        &tb.data_file,
        StoreKind::Local,
        "replica_args = [\"--development\"]\n",
    );
    let m = snapshot_manifest(&s);
    assert!(m["chunks"].is_object(), "{m:#}");

    let out = s.bkp(&["--json", "verify", "--drill"]);
    assert_exit(&out, 0);
    let report = json(&out);
    let drill = &report["drills"][0];
    assert_eq!(drill["ok"], true, "{report:#}");
    assert_eq!(drill["facts"]["integrity"], "passed");
    assert_eq!(drill["facts"]["accounts"], 2);
    assert_eq!(drill["facts"]["transfers"], 3);
    assert!(!s
        .path(&format!("work/drill-{}", m["id"].as_str().unwrap()))
        .exists());

    // A manifest that records counts is held to them.
    let manifest = manifest_path(&s, &m);
    let original = fs::read(&manifest).unwrap();
    let mut recorded: serde_json::Value = serde_json::from_slice(&original).unwrap();
    recorded["source"]["accounts"] = 2.into();
    recorded["source"]["transfers"] = 3.into();
    fs::write(&manifest, serde_json::to_vec(&recorded).unwrap()).unwrap();
    common::reseal(&manifest);
    assert_exit(&s.bkp(&["verify", "--drill"]), 0);
    recorded["source"]["transfers"] = 4.into();
    fs::write(&manifest, serde_json::to_vec(&recorded).unwrap()).unwrap();
    common::reseal(&manifest);
    let out = s.bkp(&["verify", "--drill"]);
    assert_exit(&out, 5);
    assert!(
        stderr(&out).contains("holds 3 transfers, the snapshot's manifest recorded 4"),
        "{}",
        stderr(&out)
    );
    fs::write(&manifest, &original).unwrap();

    let object = object_path(&s, &m);
    let mut bytes = fs::read(&object).unwrap();
    let at = bytes.len() - 10;
    bytes[at] ^= 1;
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(&object, fs::Permissions::from_mode(0o600)).unwrap();
    fs::write(&object, &bytes).unwrap();
    let out = s.bkp(&["--json", "verify", "--drill"]);
    assert_exit(&out, 5);
    let report = json(&out);
    assert_eq!(report["drills"][0]["ok"], false);
    let work = common::walk(&s.path("work"));
    assert!(
        work.iter().all(|p| !p.to_string_lossy().contains("drill-")),
        "the scratch directory is removed: {work:?}"
    );
}

#[test]
fn cleanup_and_verify_on_s3() {
    let dir = tempfile::tempdir().unwrap();
    let data = formatted_data_file(dir.path());
    let s = setup(&data, StoreKind::S3, &extra("0s"));
    let old = snapshot_manifest(&s);
    let new = snapshot_manifest(&s);
    let bucket = s.bucket();
    let s3 = common::shared_s3();
    let orphan = format!("{bucket}/team/bkp/tigerbeetle/2020/01/01/orphan.tar.zst.enc");
    let up = s3.rclone_stdin(&["rcat", &format!("s3:{orphan}")], b"left by a crash");
    assert!(
        up.status.success(),
        "{}",
        String::from_utf8_lossy(&up.stderr)
    );

    let out = s.bkp(&["cleanup"]);
    assert_exit(&out, 0);
    assert_eq!(listed(&s), vec![new["id"].as_str().unwrap().to_string()]);
    let ls = s3.rclone(&["lsf", "-R", &format!("s3:{bucket}/team/bkp/tigerbeetle")]);
    let ls = String::from_utf8_lossy(&ls.stdout).into_owned();
    assert!(!ls.contains("orphan"), "{ls}");
    assert!(!ls.contains(old["id"].as_str().unwrap()), "{ls}");
    assert!(ls.contains(new["id"].as_str().unwrap()), "{ls}");
    let out = s.bkp(&["verify"]);
    assert_exit(&out, 0);

    // Damage the remaining object in the bucket with an independent client.
    let key = format!(
        "s3:{bucket}/team/bkp/{}",
        new["objects"][0]["key"].as_str().unwrap()
    );
    let mut bytes = s3.rclone(&["cat", &key]).stdout;
    bytes[100] ^= 0xff;
    let up = s3.rclone_stdin(&["rcat", &key], &bytes);
    assert!(up.status.success());
    let out = s.bkp(&["verify"]);
    assert_exit(&out, 5);
    assert!(
        stderr(&out).contains("failed verification"),
        "{}",
        stderr(&out)
    );
}

/// Writes a small Parquet file with DuckDB whose contents depend on `seed`.
fn parquet(db: &duckdb::Connection, path: &Path, seed: u64) {
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    db.execute_batch(&format!(
        "COPY (SELECT {seed} AS seed, i FROM range(50) t(i)) TO '{}' (FORMAT parquet)",
        path.display()
    ))
    .unwrap();
}

#[test]
fn replicated_objects_shared_by_a_kept_run_survive_cleanup_and_verify_and_drill() {
    let dir = tempfile::tempdir().unwrap();
    let data = formatted_data_file(dir.path());
    let cold = dir.path().join("cold");
    let db = duckdb::Connection::open_in_memory().unwrap();
    for i in 0..4 {
        parquet(&db, &cold.join(format!("t/{i}.parquet")), i);
    }
    let extra = format!(
        "{}[retention.replicate]\npreset = \"none\"\n[replicate]\nsource = \"{}\"\n",
        extra("1h"),
        cold.display()
    );
    let s = setup(&data, StoreKind::Local, &extra);
    assert_exit(&s.bkp(&["replicate"]), 0);
    parquet(&db, &cold.join("t/0.parquet"), 100);
    assert_exit(&s.bkp(&["replicate"]), 0);
    let runs = listed(&s);
    assert_eq!(runs.len(), 2);

    // The first run goes; three of its objects stay, the second run uses them.
    let out = s.bkp(&["cleanup"]);
    assert_exit(&out, 0);
    assert_eq!(listed(&s), vec![runs[1].clone()]);
    let objects = common::walk(&s.path("store/parquet"));
    let files: Vec<_> = objects.iter().filter(|p| p.is_file()).collect();
    // The run kept stored 1 object and uses 3 of the first run's; the first run's
    // copy of the replaced file is gone.
    assert_eq!(files.len(), 4, "{files:?}");

    let out = s.bkp(&["--json", "verify", "--drill"]);
    assert_exit(&out, 0);
    let report = json(&out);
    assert_eq!(report["backups"][0]["objects"], 1 + 3, "{report:#}");
    assert!(report["backups"][0]["bytes_read"].as_u64().unwrap() > 0);
    let drill = &report["drills"][0];
    assert_eq!(drill["ok"], true, "{report:#}");
    assert_eq!(drill["facts"]["files"], 4);
    assert_eq!(drill["facts"]["rows"], 200);
}

#[test]
fn export_chains_are_cleaned_up_whole_and_drilled() {
    let dir = tempfile::tempdir().unwrap();
    let extra = format!(
        "{}[retention.export_full]\npreset = \"none\"\n[duckdb]\ndatabase = \"hot.duckdb\"\nwatermarks = {{ t = \"updated_at\" }}\n",
        extra("1h")
    );
    let s = setup(
        &dir.path().join("unused.tigerbeetle"),
        StoreKind::Local,
        &extra,
    );
    let write = |sql: &str| {
        // Opened and closed each time: export refuses a database a writer holds.
        let db = duckdb::Connection::open(s.path("hot.duckdb")).unwrap();
        db.execute_batch(sql).unwrap();
    };
    write(
        "CREATE TABLE t (id INTEGER PRIMARY KEY, v VARCHAR, updated_at TIMESTAMP,
                         loud VARCHAR GENERATED ALWAYS AS (upper(v)) VIRTUAL);
         INSERT INTO t SELECT i, 'a', now() FROM range(100) r(i);",
    );
    let more = |from: u32| {
        write(&format!(
            "INSERT INTO t SELECT i, 'b', now() FROM range({from}, {}) r(i);",
            from + 10
        ))
    };
    assert_exit(&s.bkp(&["export", "--full"]), 0);
    more(100);
    assert_exit(&s.bkp(&["export"]), 0);
    assert_exit(&s.bkp(&["export", "--full"]), 0);
    more(110);
    assert_exit(&s.bkp(&["export"]), 0);
    let runs = listed(&s);
    assert_eq!(runs.len(), 4);

    // Only the newest chain stays: the second full export and its incremental.
    let out = s.bkp(&["cleanup"]);
    assert_exit(&out, 0);
    assert_eq!(listed(&s), runs[2..].to_vec());

    let out = s.bkp(&["--json", "verify", "--drill"]);
    assert_exit(&out, 0);
    let report = json(&out);
    let drill = &report["drills"][0];
    assert_eq!(drill["ok"], true, "{report:#}");
    assert_eq!(drill["kind"], "duckdb");
    assert_eq!(drill["facts"]["rows"], 120);
    assert_eq!(drill["facts"]["tables"], 1);

    // A write-ahead log left where a database was removed is not replayed into
    // the restore: refused without --force, moved away with it.
    let target = s.path("restored.duckdb");
    let stale = s.path("restored.duckdb.wal");
    fs::write(&stale, b"an earlier database's log").unwrap();
    let t = target.to_str().unwrap();
    let out = s.bkp(&["restore", "latest", "--kind", "duckdb", "--target", t]);
    assert_exit(&out, 8);
    assert!(stderr(&out).contains("write-ahead log"), "{}", stderr(&out));
    assert!(!target.exists());
    let out = s.bkp(&[
        "restore", "latest", "--kind", "duckdb", "--target", t, "--force",
    ]);
    assert_exit(&out, 0);
    assert!(!stale.exists());
    let db = duckdb::Connection::open(&target).unwrap();
    let n: i64 = db
        .query_row("SELECT count(*) FROM t", [], |r| r.get(0))
        .unwrap();
    assert_eq!(n, 120);
}

/// A dry run neither reads nor writes the tombstones a real run writes: one
/// per backup it would delete, years of them on a store cleaned for the first
/// time. The real run still writes and deletes each, and its report names
/// every backup it deleted.
#[test]
fn a_dry_run_sends_no_request_for_the_tombstones_a_real_run_writes() {
    let dir = tempfile::tempdir().unwrap();
    let data = formatted_data_file(dir.path());
    let mut s = setup(&data, StoreKind::S3, &extra("0s"));
    let snaps: Vec<_> = (0..3).map(|_| snapshot_manifest(&s)).collect();
    let ids: Vec<&str> = snaps.iter().map(|m| m["id"].as_str().unwrap()).collect();
    s.env.push((
        "BKP_LOG".into(),
        "aws_smithy_runtime::client::orchestrator=trace".into(),
    ));
    // Requests whose key is a tombstone's.
    let tombstone_requests = |out: &std::process::Output| {
        stderr(out)
            .lines()
            .filter(|l| l.contains("transmitting request") && l.contains("/trash/"))
            .count()
    };
    let dry = s.bkp(&["--json", "cleanup", "--dry-run"]);
    assert_exit(&dry, 0);
    let plan = json(&dry);
    let doomed = plan["backups"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["action"] == "delete")
        .count();
    assert_eq!(doomed, 2, "{plan:#}");
    assert_eq!(tombstone_requests(&dry), 0, "{}", stderr(&dry));
    // With no grace, what the real run deletes with its backups is past it:
    // none of it is shown as left over.
    assert_eq!(plan["orphans"], serde_json::json!([]), "{plan:#}");

    let real = s.bkp(&["cleanup"]);
    assert_exit(&real, 0);
    assert!(
        tombstone_requests(&real) >= 2 * doomed,
        "a tombstone is written and deleted per backup: {}",
        stderr(&real)
    );
    assert_eq!(listed(&s), vec![ids[2].to_string()]);
    // The report's rows: the two deleted backups, each with its bytes.
    let s3 = common::shared_s3();
    let reports = s3.rclone(&[
        "lsf",
        "-R",
        &format!("s3:{}/team/bkp/reports/cleanup", s.bucket()),
    ]);
    let names = String::from_utf8_lossy(&reports.stdout).into_owned();
    let name = names
        .lines()
        .find(|l| l.ends_with(".json"))
        .expect("a cleanup report");
    let got = s3.rclone(&[
        "cat",
        &format!("s3:{}/team/bkp/reports/cleanup/{name}", s.bucket()),
    ]);
    let report: serde_json::Value = serde_json::from_slice(&got.stdout).expect("the report");
    let mut rows: Vec<(String, String, String, u64)> = report["deleted"]
        .as_array()
        .expect("rows")
        .iter()
        .map(|r| {
            (
                r["id"].as_str().unwrap().to_string(),
                r["kind"].as_str().unwrap().to_string(),
                r["scope"].as_str().unwrap().to_string(),
                r["bytes"].as_u64().unwrap(),
            )
        })
        .collect();
    rows.sort();
    let mut want: Vec<_> = snaps[..2]
        .iter()
        .map(|m| {
            (
                m["id"].as_str().unwrap().to_string(),
                "tigerbeetle".to_string(),
                "full".to_string(),
                m["objects"][0]["size"].as_u64().unwrap(),
            )
        })
        .collect();
    want.sort();
    assert_eq!(rows, want, "{report:#}");
}

/// Two clusters snapshotting into one store, each with its own config: a real
/// `cleanup` under "keep the newest" keeps each cluster's newest snapshot, not
/// only the newest of the two (which deleted the other cluster's every
/// snapshot), and `status` of each config finds its own.
#[test]
fn each_clusters_newest_snapshot_survives_a_cleanup_of_their_shared_store() {
    let dir = tempfile::tempdir().unwrap();
    let data = formatted_data_file(dir.path());
    let a = setup(
        &data,
        StoreKind::Local,
        &format!(
            "{}addresses = \"127.0.0.1:1\"\ncluster_id = 1\n[retention]\ngrace = \"1h\"\n\
             [retention.snapshot]\npreset = \"none\"\n[freshness]\nignore = [\"logs\"]\n",
            common::ARCHIVE
        ),
    );
    // The other cluster's config: the same store, its own work directory.
    let b_config = a.path("bkp-b.toml");
    let text = fs::read_to_string(&a.config).unwrap();
    fs::write(
        &b_config,
        text.replace("cluster_id = 1", "cluster_id = 2")
            .replace("work_dir = \"work\"", "work_dir = \"work-b\""),
    )
    .unwrap();
    let b = |args: &[&str]| {
        let mut all = vec!["--config", b_config.to_str().unwrap()];
        all.extend_from_slice(args);
        common::run_bkp(&all, &a.env)
    };
    let id = |out: std::process::Output| {
        assert_exit(&out, 0);
        json(&out)["manifest"]["id"].as_str().unwrap().to_string()
    };
    let a1 = id(a.bkp(&["--json", "snapshot"]));
    let b1 = id(b(&["--json", "snapshot"]));
    let a2 = id(a.bkp(&["--json", "snapshot"]));
    let b2 = id(b(&["--json", "snapshot"]));
    assert_eq!(listed(&a), vec![a1, b1, a2.clone(), b2.clone()]);

    let out = a.bkp(&["cleanup"]);
    assert_exit(&out, 0);
    assert_eq!(listed(&a), vec![a2.clone(), b2.clone()], "{}", stderr(&out));
    let newest = |out: std::process::Output| {
        assert_exit(&out, 0);
        let v = json(&out);
        let snap = v["schedules"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["schedule"] == "snapshot")
            .unwrap()
            .clone();
        snap["newest"]["id"].as_str().unwrap().to_string()
    };
    assert_eq!(newest(a.bkp(&["--json", "status"])), a2);
    assert_eq!(newest(b(&["--json", "status"])), b2);
}

/// `cleanup` trims each PostgreSQL system's archived WAL to the start of its
/// oldest kept base backup, and trims nothing of a system with a kept base
/// backup whose start it cannot read: one that records none, or one whose
/// start was named by a segment size PostgreSQL cannot have (PostgreSQL 10
/// gave `wal_segment_size` in 8 kB blocks, 2048), where the WAL it needs
/// would look older than its start.
#[test]
fn cleanup_trims_wal_only_before_a_start_every_kept_base_backup_names() {
    let scratch = tempfile::tempdir().unwrap();
    let s = setup(
        &scratch.path().join("0_0.tigerbeetle"),
        StoreKind::Local,
        "[retention.pgbase]\npreset = \"none\"\nkeep_last = 10\n",
    );
    let segment = |n: u32| format!("00000001000000000000{n:04X}");
    let (trimmed, startless, blocks) = (
        7300000000000000011u64,
        7300000000000000012,
        7300000000000000013,
    );
    for system in [trimmed, startless, blocks] {
        let pgdata = common::postgres::fake_pgdata(&s.path(&format!("pg{system}")), system);
        for n in 1..=6 {
            fs::write(
                pgdata.join("pg_wal").join(segment(n)),
                vec![n as u8; 1 << 16],
            )
            .unwrap();
            let at = format!("pg_wal/{}", segment(n));
            assert_exit(
                &s.bkp(&["wal", "push", &at, "--pgdata", pgdata.to_str().unwrap()]),
                0,
            );
        }
    }
    let archived = |system: u64| -> Vec<u32> {
        let mut n: Vec<u32> = common::walk(&s.path(&format!("store/wal/{system}")))
            .iter()
            .filter_map(|p| {
                let name = p.file_name()?.to_string_lossy().into_owned();
                u32::from_str_radix(name.get(16..24)?, 16).ok()
            })
            .collect();
        n.sort();
        n
    };
    assert_eq!(archived(trimmed), vec![1, 2, 3, 4, 5, 6]);
    let base = |system: u64, facts: serde_json::Value| plant_base(&s, Some(system), facts);
    base(trimmed, serde_json::json!({"wal_start": segment(3)}));
    let older = base(startless, serde_json::json!({}));
    base(startless, serde_json::json!({"wal_start": segment(3)}));
    // Segment 4 named with 2048-byte segments: 0x4000000 / 2048 = 0x8000.
    base(
        blocks,
        serde_json::json!({"wal_start": "000000010000000000008000", "wal_segment_size": 2048}),
    );
    let out = s.bkp(&["cleanup"]);
    assert_exit(&out, 0);
    let said = common::text(&out);
    assert_eq!(archived(trimmed), vec![3, 4, 5, 6], "{said}");
    assert_eq!(archived(startless), vec![1, 2, 3, 4, 5, 6], "{said}");
    assert_eq!(archived(blocks), vec![1, 2, 3, 4, 5, 6], "{said}");
    assert!(
        said.contains(&format!(
            "no archived WAL of system {startless} is trimmed: kept base backup {older} records no WAL start"
        )),
        "{said}"
    );
}

/// Plants the manifest of a PostgreSQL base backup of `system` (none: it
/// names none) with `facts`, of a day ago (before the store was marked, as a
/// manifest that names no store must be), sealed with the config's key; its
/// id.
fn plant_base(s: &Setup, system: Option<u64>, facts: serde_json::Value) -> String {
    let at = time::OffsetDateTime::now_utc() - time::Duration::days(1);
    let id = bkp::id::BackupId::new_v7(at).to_string();
    let mut source = serde_json::json!({"format": "tar"});
    if let Some(system) = system {
        source["system_identifier"] = system.to_string().into();
    }
    source
        .as_object_mut()
        .unwrap()
        .extend(facts.as_object().unwrap().clone());
    let m = serde_json::json!({
        "schema": "bkp.manifest/1.0", "id": id, "kind": "postgres", "scope": "full",
        "operation": "snapshot", "status": "completed",
        "started_at": common::rfc3339(at), "finished_at": common::rfc3339(at),
        "host": "db1", "bkp_version": "0", "retention_days": 365,
        "compression": {"algorithm": "zstd", "level": 3, "threads": 1},
        "encryption": {"format": "aes-256-gcm-stream-v1", "key_id": "k1"},
        "objects": [], "source": source,
    });
    let path = s.path(&format!("store/manifests/postgres/{id}.json"));
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(&path, serde_json::to_vec(&m).unwrap()).unwrap();
    common::reseal(&path);
    id
}

/// A point-in-time restore from a base backup that records no WAL start bkp
/// can use (none, or one named by a segment size PostgreSQL cannot have) is
/// refused before anything is read, naming the backup and both causes.
#[test]
fn a_point_in_time_restore_from_a_base_backup_without_a_usable_start_is_refused_first() {
    let scratch = tempfile::tempdir().unwrap();
    let s = setup(
        &scratch.path().join("0_0.tigerbeetle"),
        StoreKind::Local,
        "",
    );
    // A marked store, as every store that holds a backup is.
    assert_exit(&s.bkp(&["init"]), 0);
    let at = common::rfc3339(time::OffsetDateTime::now_utc());
    for facts in [
        serde_json::json!({}),
        serde_json::json!({"wal_start": "000000010000000000008000", "wal_segment_size": 2048}),
    ] {
        let id = plant_base(&s, Some(7300000000000000021), facts);
        let target = s.path(&format!("restored-{id}"));
        for which in [id.as_str(), "latest"] {
            let out = s.bkp(&[
                "restore",
                which,
                "--kind",
                "postgres",
                "--at",
                &at,
                "--target",
                target.to_str().unwrap(),
            ]);
            assert_exit(&out, 3);
            let said = common::text(&out);
            assert!(
                said.contains(&format!("base backup {id} records no WAL start")),
                "{said}"
            );
            assert!(!target.exists());
        }
        fs::remove_file(s.path(&format!("store/manifests/postgres/{id}.json"))).unwrap();
    }
}

/// Cleanup reads each backup it deletes again from its own key, a batch of
/// 1,024 at a time, just before the batch's first tombstone. One found gone
/// once an earlier batch was deleted stops the run, but not before what it
/// unlisted is finished (objects, tombstones) and reported; the next run
/// deletes the rest.
#[test]
fn a_cleanup_stopped_after_a_batch_finishes_and_reports_what_it_unlisted() {
    let dir = tempfile::tempdir().unwrap();
    let data = formatted_data_file(dir.path());
    let retention = format!(
        "{}[retention]\ngrace = \"1h\"\n[retention.snapshot]\npreset = \"none\"\n",
        common::ARCHIVE
    );
    let s = setup(&data, StoreKind::Local, &retention);
    let real = snapshot_manifest(&s);
    // Older copies of it, one more batch than fits in one: all of them
    // deleted (only the newest snapshot is kept), newest first.
    let start = time::OffsetDateTime::now_utc() - time::Duration::days(30);
    let rfc = |t: time::OffsetDateTime| {
        t.format(&time::format_description::well_known::Rfc3339)
            .unwrap()
    };
    let mut copies = Vec::new();
    for i in 0..1030 {
        let at = start + time::Duration::seconds(i);
        let id = bkp::id::BackupId::new_v7(at).to_string();
        let mut m = real.clone();
        m["id"] = id.clone().into();
        m["started_at"] = rfc(at).into();
        m["finished_at"] = rfc(at + time::Duration::seconds(1)).into();
        let key = format!("tigerbeetle/2026/10/01/tigerbeetle-snapshot-{id}.tar.zst.enc");
        m["objects"][0]["key"] = key.clone().into();
        m.as_object_mut().unwrap().remove("seal");
        let path = manifest_path(&s, &m);
        fs::write(&path, serde_json::to_vec(&m).unwrap()).unwrap();
        common::reseal(&path);
        let object = s.path("store").join(&key);
        fs::create_dir_all(object.parent().unwrap()).unwrap();
        fs::write(&object, b"a copy").unwrap();
        copies.push((path, object));
    }
    // The oldest is in the second batch: it goes once the first is deleted.
    let (oldest, oldest_object) = copies[0].clone();
    let out = common::run_paused(
        &s.config,
        // The plan as one document at the end: its table would fill the
        // pipe before anything reads it.
        &["--json", "cleanup"],
        "cleanup-after-manifest:1",
        "cleanup, after its first deletion",
        || fs::remove_file(&oldest).unwrap(),
    );
    // Exit 9: a manifest it chose is gone.
    assert_exit(&out, 9);
    let err = stderr(&out);
    assert!(
        err.contains("cleanup stopped after deleting 1024 backups"),
        "{err}"
    );
    // The first batch is gone, objects and tombstones too; the rest stays.
    let left: Vec<_> = copies.iter().filter(|(m, _)| m.exists()).collect();
    assert_eq!(left.len(), 5, "{err}");
    let gone_objects = copies.iter().filter(|(_, o)| !o.exists()).count();
    assert_eq!(gone_objects, 1024);
    assert!(
        oldest_object.exists(),
        "named by no manifest, but young: not an orphan yet"
    );
    assert!(!s.path("store/trash").exists() || common::walk(&s.path("store/trash")).is_empty());
    // The report names what was deleted, and why the run stopped.
    let reports = common::walk(&s.path("store/reports/cleanup"));
    assert_eq!(reports.len(), 1);
    let report: serde_json::Value =
        serde_json::from_slice(&fs::read(&reports[0]).unwrap()).unwrap();
    assert_eq!(report["deleted"].as_array().unwrap().len(), 1024);
    assert!(report["stopped"]
        .as_str()
        .is_some_and(|s| s.contains("cannot be read now")));
    // The next run deletes the rest, and keeps the newest.
    assert_exit(&s.bkp(&["cleanup"]), 0);
    assert!(copies.iter().all(|(m, _)| !m.exists()));
    assert_eq!(listed(&s), vec![real["id"].as_str().unwrap().to_string()]);
}
