//! Runs SIGKILLed part-way (`BKP_FAILPOINT`, see `src/failpoint.rs`) leave nothing
//! that `bkp cleanup` does not sweep: not in the work directory, not in the store,
//! not beside a restore target; and every good backup survives, listed and verified.
//! Real TigerBeetle, DuckDB, a local store and S3 on SeaweedFS.

mod common;

use std::collections::BTreeSet;
use std::fs;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

use common::{assert_exit, formatted_data_file, json, repl, setup, walk, Setup, StoreKind};

/// The grace period the configs set: what a killed run left is swept once this old.
const GRACE: &str = "1s";

/// Long enough for everything a killed run left to be past [`GRACE`].
fn past_grace() {
    std::thread::sleep(Duration::from_millis(2100));
}

/// Everything after `[tigerbeetle]`'s data_file: the cluster `bkp logs` reads, the
/// audit ledger, every backup kept a week, DuckDB and a Parquet tier.
fn extra(address: &str, cold: &Path) -> String {
    let keep = "preset = \"none\"\nkeep_within = \"7d\"\n";
    format!(
        "addresses = \"{address}\"\nreplica_args = [\"--development\"]\n\
         [ledger]\naddresses = \"{}\"\nledger = 12\ntimeout = \"5s\"\n\
         [retention]\ngrace = \"{GRACE}\"\n\
         [retention.snapshot]\n{keep}[retention.logs]\n{keep}[retention.export_full]\n{keep}\
         [retention.export_incremental]\n{keep}[retention.replicate]\n{keep}\
         [duckdb]\ndatabase = \"hot.duckdb\"\n[replicate]\nsource = \"{}\"\n",
        common::shared_ledger().address(),
        cold.display()
    )
}

/// Runs `bkp args` with `BKP_FAILPOINT=point` and checks that it died by SIGKILL.
#[track_caller]
fn killed(s: &Setup, config: &Path, point: &str, args: &[&str]) {
    let mut env = s.env.clone();
    env.push(("BKP_FAILPOINT".into(), point.into()));
    let mut all = vec!["--config", config.to_str().unwrap()];
    all.extend_from_slice(args);
    let out = common::run_bkp(&all, &env);
    assert_eq!(
        out.status.signal(),
        Some(9),
        "`bkp {}` at {point} was not SIGKILLed: {}\n{}",
        args.join(" "),
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}

fn listed(s: &Setup) -> BTreeSet<String> {
    s.listed(&[]).into_iter().collect()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Every string in a JSON document (the keys a manifest names, among others).
fn strings(v: &serde_json::Value, out: &mut BTreeSet<String>) {
    match v {
        serde_json::Value::String(s) => {
            out.insert(s.clone());
        }
        serde_json::Value::Array(a) => a.iter().for_each(|v| strings(v, out)),
        serde_json::Value::Object(o) => o.values().for_each(|v| strings(v, out)),
        _ => {}
    }
}

/// What may stay in `work_dir` after a sweep, as `src/workdir.rs` lays it out:
/// the run locks, the command and replica logs, the ledger spool (complete
/// records only) and an empty `tmp/`.
fn work_dir_leftovers(work: &Path) -> Vec<PathBuf> {
    let mut bad = Vec::new();
    for e in fs::read_dir(work).unwrap().flatten() {
        let p = e.path();
        let name = e.file_name().to_string_lossy().into_owned();
        let ok = match name.as_str() {
            "commands.log" | "replica.log" => p.is_file(),
            "tmp" => p.is_dir() && fs::read_dir(&p).unwrap().next().is_none(),
            "ledger-spool" => {
                let spool = walk(&p);
                bad.extend(spool.into_iter().filter(|f| {
                    let n = f.file_name().unwrap().to_string_lossy();
                    n.starts_with('.') || !n.ends_with(".json")
                }));
                true
            }
            n => n.ends_with(".lock") && p.is_file(),
        };
        if !ok {
            bad.push(p);
        }
    }
    bad
}

/// Data objects in a local store that no manifest names, and partial writes.
fn store_leftovers(store: &Path) -> Vec<PathBuf> {
    let mut named = BTreeSet::new();
    let local = bkp::store::local::LocalStore::new(store).unwrap();
    for m in walk(&store.join("manifests")) {
        let doc: serde_json::Value = serde_json::from_slice(&fs::read(&m).unwrap()).unwrap();
        strings(&doc, &mut named);
        // A chunked snapshot names its chunks in its chunk list, as bkp reads it.
        if doc["chunks"].is_object() {
            let m: bkp::manifest::Manifest = serde_json::from_value(doc.clone()).unwrap();
            let map = bkp::chunks::load(&local, &m).unwrap().unwrap();
            named.extend(map.keys(m.kind).map(|(k, _)| k));
        }
    }
    let mut bad = walk(&store.join(".bkp-partial"));
    bad.extend(walk(&store.join("trash")));
    for kind in ["tigerbeetle", "duckdb", "parquet"] {
        for f in walk(&store.join(kind)) {
            let key = f
                .strip_prefix(store)
                .unwrap()
                .to_string_lossy()
                .into_owned();
            if !named.contains(&key) {
                bad.push(f);
            }
        }
    }
    bad
}

/// Names carrying bkp's staging mark anywhere below `dir` (the store's reserved
/// `.bkp-partial` directory aside).
fn staging_leftovers(dir: &Path) -> Vec<PathBuf> {
    let mut bad = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).into_iter().flatten().flatten() {
            let (p, name) = (e.path(), e.file_name().to_string_lossy().into_owned());
            if name == ".bkp-partial" {
                continue;
            }
            if name.contains(".bkp-") {
                bad.push(p.clone());
            }
            if p.is_dir() && !p.is_symlink() {
                stack.push(p);
            }
        }
    }
    bad
}

/// Processes that name a path under `dir` on their command line, waiting up to
/// 10 s for them to go: a killed run's child processes must not outlive it.
/// Returns the survivors (killed, so that the next case starts clean).
fn processes_using(dir: &Path) -> Vec<String> {
    let dir = dir.to_string_lossy().into_owned();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let users: Vec<(String, String)> = fs::read_dir("/proc")
            .unwrap()
            .flatten()
            .filter_map(|e| {
                let c = fs::read(e.path().join("cmdline")).ok()?;
                let pid = e.file_name().to_string_lossy().into_owned();
                Some((pid, String::from_utf8_lossy(&c).replace('\0', " ")))
            })
            .filter(|(_, c)| c.contains(&dir))
            .collect();
        if users.is_empty() || std::time::Instant::now() > deadline {
            for (pid, _) in &users {
                let _ = std::process::Command::new("kill")
                    .args(["-9", pid])
                    .status();
            }
            return users.into_iter().map(|(_, c)| c).collect();
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// `bkp cleanup` once the killed run's leftovers are past the grace period, then
/// the proof: nothing left anywhere (what is left is recorded in `problems` and
/// removed, so that each case is judged on its own), and the good backups listed
/// and verified.
#[track_caller]
fn sweep_and_check(s: &Setup, what: &str, good: &BTreeSet<String>, problems: &mut Vec<String>) {
    past_grace();
    let out = s.bkp(&["cleanup"]);
    assert_exit(&out, 0);
    let mut left = work_dir_leftovers(&s.path("work"));
    left.extend(store_leftovers(&s.path("store")));
    left.extend(staging_leftovers(s.dir.path()));
    if !left.is_empty() {
        eprintln!("LEFT after {what} and cleanup: {left:?}");
        problems.push(format!("after {what} and cleanup: {left:?}"));
        for p in &left {
            let _ = fs::remove_dir_all(p).or_else(|_| fs::remove_file(p));
        }
    }
    assert_eq!(
        &listed(s),
        good,
        "after {what}: the good backups are listed"
    );
    let out = s.bkp(&["verify"]);
    assert_exit(&out, 0);
}

fn duckdb_write(s: &Setup, sql: &str) {
    // Opened and closed each time: export refuses a database a writer holds.
    let db = duckdb::Connection::open(s.path("hot.duckdb")).unwrap();
    db.execute_batch(sql).unwrap();
}

fn parquet(path: &Path, seed: u64, rows: u64) {
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    let db = duckdb::Connection::open_in_memory().unwrap();
    db.execute_batch(&format!(
        "COPY (SELECT {seed} AS seed, i, md5((i + {seed})::VARCHAR) AS a FROM range({rows}) t(i)) \
         TO '{}' (FORMAT parquet, COMPRESSION uncompressed)",
        path.display()
    ))
    .unwrap();
}

/// The id a `--json` backup run printed.
fn made(s: &Setup, args: &[&str]) -> String {
    let mut all = vec!["--json"];
    all.extend_from_slice(args);
    let out = s.bkp(&all);
    assert_exit(&out, 0);
    json(&out)["manifest"]["id"].as_str().unwrap().to_string()
}

#[test]
fn every_killed_run_is_swept_by_cleanup_and_good_backups_survive() {
    let tb = common::TigerBeetle::start();
    repl(
        &tb.address(),
        "create_accounts id=1 code=10 ledger=700, id=2 code=10 ledger=700;",
    );
    let transfer = |id: u32| {
        repl(
            &tb.address(),
            &format!("create_transfers id={id} debit_account_id=1 credit_account_id=2 amount=5 ledger=700 code=10;"),
        );
    };
    transfer(11);
    let dir = tempfile::tempdir().unwrap();
    let data = formatted_data_file(dir.path());
    let cold = dir.path().join("cold");
    for i in 0..3 {
        parquet(&cold.join(format!("t/{i}.parquet")), i, 1000);
    }
    let s = setup(&data, StoreKind::Local, &extra(&tb.address(), &cold));
    let config = s.config.clone();
    duckdb_write(
        &s,
        "CREATE TABLE t (id INTEGER PRIMARY KEY, v VARCHAR);
         INSERT INTO t SELECT i, 'a' FROM range(1000) r(i);",
    );

    // The good backups, one of each kind.
    let snapshot = made(&s, &["snapshot"]);
    let export = made(&s, &["export", "--full"]);
    let replication = made(&s, &["replicate"]);
    let logs = made(&s, &["logs"]);
    let mut good: BTreeSet<String> = [&snapshot, &export, &replication, &logs]
        .into_iter()
        .cloned()
        .collect();
    assert_eq!(listed(&s), good);

    // Each backup subcommand, killed with bytes in the store's partial write.
    let mut problems = Vec::new();
    killed(&s, &config, "store-write", &["snapshot"]);
    sweep_and_check(&s, "a killed snapshot", &good, &mut problems);
    transfer(12);
    killed(&s, &config, "store-write", &["logs"]);
    sweep_and_check(&s, "killed logs", &good, &mut problems);
    killed(&s, &config, "store-write", &["export", "--full"]);
    sweep_and_check(&s, "a killed export", &good, &mut problems);
    parquet(&cold.join("t/3.parquet"), 3, 1000);
    killed(&s, &config, "store-write", &["replicate"]);
    sweep_and_check(&s, "a killed replication", &good, &mut problems);

    // Each kind of restore, killed half-way through its download and just
    // before its commit; the targets are left alone.
    let targets = s.path("restores");
    fs::create_dir_all(&targets).unwrap();
    for (id, kind, target) in [
        (&snapshot, "tigerbeetle", "tb"),
        (&export, "duckdb", "hot.duckdb"),
        (&replication, "parquet", "cold"),
    ] {
        let t = targets.join(target);
        let t = t.to_str().unwrap();
        for point in ["restore-download", "restore-commit"] {
            let args = ["restore", id.as_str(), "--kind", kind, "--target", t];
            killed(&s, &config, point, &args);
            assert!(
                !Path::new(t).exists(),
                "a killed {kind} restore created its target"
            );
            sweep_and_check(
                &s,
                &format!("a {kind} restore killed at {point}"),
                &good,
                &mut problems,
            );
        }
    }

    // A `--force` restore killed once its tree has replaced the target, before
    // the replaced tree is removed: the restore stands, the old tree goes.
    let forced = targets.join("forced");
    fs::create_dir_all(&forced).unwrap();
    fs::write(forced.join("old"), b"replaced").unwrap();
    let t = forced.to_str().unwrap();
    let args = ["restore", snapshot.as_str(), "--target", t, "--force"];
    killed(&s, &config, "restore-replaced", &args);
    assert!(!forced.join("old").exists(), "the swap happened");
    sweep_and_check(&s, "a restore killed after its swap", &good, &mut problems);
    assert!(walk(&forced).len() == 1, "{:?}", walk(&forced));

    // A drill killed with its restore in scratch, and one killed while its
    // private replica serves: the replica dies with it.
    killed(&s, &config, "verify-drill", &["verify", "--drill"]);
    sweep_and_check(&s, "a killed drill", &good, &mut problems);
    killed(&s, &config, "private-replica", &["verify", "--drill"]);
    let survivors = processes_using(&s.path("work"));
    if !survivors.is_empty() {
        eprintln!("SURVIVORS of a killed drill: {survivors:?}");
        problems.push(format!("processes outlived a killed drill: {survivors:?}"));
    }
    sweep_and_check(
        &s,
        "a drill killed with its replica up",
        &good,
        &mut problems,
    );

    // A cleanup killed between unlisting a backup and deleting its objects (a
    // newer full export, and `keep_last = 1` for them): the next cleanup
    // finishes it.
    let newest = made(&s, &["export", "--full"]);
    let trim = s.path("trim.toml");
    let text = fs::read_to_string(&config).unwrap();
    let full = "[retention.export_full]\npreset = \"none\"\nkeep_within = \"7d\"\n";
    assert!(text.contains(full));
    let one = "[retention.export_full]\npreset = \"none\"\nkeep_last = 1\n";
    fs::write(&trim, text.replace(full, one)).unwrap();
    killed(&s, &trim, "cleanup-after-manifest", &["cleanup"]);
    assert!(!listed(&s).contains(&export), "the manifest went first");
    good.remove(&export);
    good.insert(newest);
    sweep_and_check(&s, "a killed cleanup", &good, &mut problems);
    assert!(problems.is_empty(), "{problems:#?}");
}

/// The unfinished multipart uploads in `bucket`, as rclone sees them.
fn multipart_uploads(bucket: &str) -> String {
    let out =
        common::shared_s3().rclone(&["backend", "list-multipart-uploads", &format!("s3:{bucket}")]);
    assert!(out.status.success(), "{}", stderr(&out));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn a_killed_s3_upload_is_listed_by_the_dry_run_and_discarded_by_cleanup() {
    let dir = tempfile::tempdir().unwrap();
    let data = formatted_data_file(dir.path());
    let cold = dir.path().join("cold");
    parquet(&cold.join("t/small.parquet"), 0, 1000);
    // Config: one S3 store with 5 MiB parts; no ledger, no cluster.
    let extra = format!(
        "[retention]\ngrace = \"{GRACE}\"\n[replicate]\nsource = \"{}\"\n",
        cold.display()
    );
    let s = setup(&data, StoreKind::S3, &extra);
    let bucket = s.bucket();
    let good: BTreeSet<String> = [made(&s, &["snapshot"]), made(&s, &["replicate"])].into();

    // Over two parts: the upload is a multipart upload when the run dies.
    parquet(&cold.join("t/large.parquet"), 1, 400_000);
    assert!(fs::metadata(cold.join("t/large.parquet")).unwrap().len() > 12 << 20);
    killed(&s, &s.config, "store-write", &["replicate"]);
    let before = multipart_uploads(&bucket);
    assert!(before.contains("large.parquet"), "{before}");
    past_grace();

    // The dry run names it, in text and JSON, and leaves it.
    let out = s.bkp(&["cleanup", "--dry-run"]);
    assert_exit(&out, 0);
    assert!(
        stderr(&out).contains("would discard the unfinished upload of parquet/")
            && stderr(&out).contains("large.parquet"),
        "{}",
        stderr(&out)
    );
    let out = s.bkp(&["--json", "cleanup", "--dry-run"]);
    assert_exit(&out, 0);
    let plan = json(&out);
    let uploads = plan["unfinished_uploads"].as_array().unwrap();
    assert_eq!(uploads.len(), 1, "{plan:#}");
    let key = uploads[0]["key"].as_str().unwrap();
    assert!(
        key.starts_with("parquet/") && key.contains("/t/large.parquet"),
        "{key}"
    );
    assert!(uploads[0]["started_at"].is_string(), "{plan:#}");
    assert_eq!(
        multipart_uploads(&bucket),
        before,
        "the dry run changed nothing"
    );

    // The real run discards exactly that.
    let out = s.bkp(&["cleanup"]);
    assert_exit(&out, 0);
    assert!(
        stderr(&out).contains(&format!("discarded the unfinished upload of {key}")),
        "{}",
        stderr(&out)
    );
    let after = multipart_uploads(&bucket);
    assert!(!after.contains("large.parquet"), "{after}");
    assert_eq!(listed(&s), good);
    assert_exit(&s.bkp(&["verify"]), 0);
    let out = s.bkp(&["--json", "cleanup", "--dry-run"]);
    assert_exit(&out, 0);
    let plan = json(&out);
    assert_eq!(
        plan["unfinished_uploads"],
        serde_json::json!([]),
        "{plan:#}"
    );
    assert_eq!(plan["orphans"], serde_json::json!([]), "{plan:#}");
}
