//! Object Lock that must not end under a backup that still needs it, and
//! restores that must restore exactly what they checked.
//!
//! A new backup often needs objects an earlier one stored: the chunks a
//! snapshot shares, the objects a replicate run names in `uses`, the full
//! export under an incremental. Each was retained until its own write plus
//! `object_lock_days`; the tests here make that date near (as time passing
//! would, with the governance bypass moto grants), run the new backup, and read
//! the retention back on the server that implements
//! Object Lock (moto), as a HEAD shows it.

mod common;

use std::fs;
use std::path::Path;

use common::postgres::Postgres;
use common::{
    assert_exit, formatted_data_file, run_bkp, setup_moto, shared_moto, unique_name, Moto,
};
use time::format_description::well_known::Rfc3339;
use time::{Duration, OffsetDateTime};

const GOVERNANCE: &str = "object_lock_mode = \"governance\"\nobject_lock_days = 1\n";
/// Where the test store's keys live in its bucket (see `Moto::store_toml`).
const PREFIX: &str = "team/bkp/";

/// Writes `dir/bkp.toml`: a work directory, a key file of `byte`s, and `rest`
/// (the store and the source); its path.
fn config(dir: &Path, byte: u8, rest: &str) -> std::path::PathBuf {
    common::write_key(dir.join("key"), [byte; 32]);
    let cfg = dir.join("bkp.toml");
    fs::write(&cfg, format!("work_dir = \"work\"\n{rest}")).unwrap();
    cfg
}

/// Runs bkp with config `cfg`, `args` and environment `env`.
fn run_with(cfg: &Path, args: &[&str], env: &[(String, String)]) -> std::process::Output {
    let mut all = vec!["--config", cfg.to_str().unwrap()];
    all.extend_from_slice(args);
    run_bkp(&all, env)
}

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The retain-until date of `bucket/key`, as its HEAD answers it.
fn retention(moto: &Moto, bucket: &str, key: &str) -> Option<OffsetDateTime> {
    let head = moto.head(bucket, key);
    let until = head.header("x-amz-object-lock-retain-until-date")?;
    OffsetDateTime::parse(until, &Rfc3339).ok()
}

/// Sets the retention of `bucket/key` to `until` without the governance
/// bypass: only a later date is accepted.
fn extend(moto: &Moto, bucket: &str, key: &str, until: OffsetDateTime) {
    let until = until
        .replace_nanosecond(0)
        .unwrap()
        .format(&Rfc3339)
        .unwrap();
    let body = format!(
        "<Retention xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\"><Mode>GOVERNANCE</Mode><RetainUntilDate>{until}</RetainUntilDate></Retention>"
    );
    let out = moto.request(
        "s3",
        "PUT",
        &format!("/{bucket}/{key}?retention"),
        &[],
        &body,
    );
    assert_eq!(out.status, 200, "extend {key}: {}", out.body);
}

/// Makes the retention of `keys` end in two minutes, as it would for objects
/// stored a day ago.
fn age(moto: &Moto, bucket: &str, keys: &[String]) {
    let soon = OffsetDateTime::now_utc() + Duration::minutes(2);
    for k in keys {
        moto.shorten_retention(bucket, k, soon);
    }
}

/// Asserts that each of `keys` is retained for about a day from now, as an
/// object written now is.
fn assert_held(moto: &Moto, bucket: &str, keys: &[String]) {
    assert!(!keys.is_empty());
    let expected = OffsetDateTime::now_utc() + Duration::days(1);
    for k in keys {
        let until = retention(moto, bucket, k).unwrap_or_else(|| panic!("{k} has no retention"));
        assert!(
            until > expected - Duration::minutes(10),
            "{k} is retained only until {until}, but the newest backup needs it until about {expected}"
        );
    }
}

#[test]
fn a_chunked_snapshot_holds_the_chunks_it_shares() {
    let moto = shared_moto();
    let bucket = moto.new_bucket("lockchunks", true);
    let dir = tempfile::tempdir().unwrap();
    let data = formatted_data_file(dir.path());
    let s = setup_moto(
        &data,
        &bucket,
        GOVERNANCE,
        "snapshot_format = \"chunked\"\n",
    );
    let out = s.bkp(&["snapshot"]);
    assert_exit(&out, 0);
    let chunks: Vec<String> = moto
        .keys(&bucket)
        .into_iter()
        .filter(|k| k.contains("/chunks/") && !k.ends_with(".chunks.json.zst"))
        .collect();
    assert!(!chunks.is_empty(), "{:?}", moto.keys(&bucket));
    age(moto, &bucket, &chunks);
    // One chunk is already retained longer than the next snapshot needs: it
    // keeps its date (retention is never shortened).
    let longer = OffsetDateTime::now_utc() + Duration::days(5);
    extend(moto, &bucket, &chunks[0], longer);

    let out = s.bkp(&["-v", "snapshot"]);
    assert_exit(&out, 0);
    // The file did not change: every chunk is shared with the first snapshot.
    assert_held(moto, &bucket, &chunks[1..]);
    let kept = retention(moto, &bucket, &chunks[0]).unwrap();
    assert!(
        (kept - longer).abs() < Duration::seconds(2),
        "{} was moved from {longer} to {kept}",
        chunks[0]
    );
    assert!(
        stderr(&out).contains("extended the Object Lock retention of"),
        "{}",
        stderr(&out)
    );
    // Extended with headroom: a snapshot soon after finds them held and
    // extends nothing.
    let out = s.bkp(&["-v", "snapshot"]);
    assert_exit(&out, 0);
    assert!(
        !stderr(&out).contains("extended the Object Lock retention of"),
        "{}",
        stderr(&out)
    );
    let target = s.path("restored");
    let out = s.bkp(&["restore", "latest", "--target", target.to_str().unwrap()]);
    assert_exit(&out, 0);
}

#[test]
fn a_replicate_run_holds_the_objects_it_uses() {
    let moto = shared_moto();
    let bucket = moto.new_bucket("lockrepl", true);
    let dir = tempfile::tempdir().unwrap();
    let cold = dir.path().join("cold");
    for i in 0..3 {
        let p = cold.join(format!("day=0{i}/part-{i}.parquet"));
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        let c = duckdb::Connection::open_in_memory().unwrap();
        c.execute_batch(&format!(
            "COPY (SELECT r + {i} AS x FROM range(100) t(r)) TO '{}' (FORMAT parquet)",
            p.display()
        ))
        .unwrap();
    }
    let cfg = config(
        dir.path(),
        7,
        &format!(
            "{}[encryption]\nkey_file = \"key\"\n[replicate]\nsource = \"cold\"\n",
            moto.store_toml(&bucket, GOVERNANCE)
        ),
    );
    let run = |args: &[&str]| run_with(&cfg, args, &moto.env());
    let out = run(&["--json", "replicate"]);
    assert_exit(&out, 0);
    let first: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let objects: Vec<String> = first["manifest"]["objects"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| format!("{PREFIX}{}", o["key"].as_str().unwrap()))
        .collect();
    assert_eq!(objects.len(), 3, "{first}");
    age(moto, &bucket, &objects);

    let out = run(&["--json", "replicate"]);
    assert_exit(&out, 0);
    let second: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let uses: Vec<String> = second["manifest"]["uses"]
        .as_array()
        .unwrap_or_else(|| panic!("the second run uses nothing: {second}"))
        .iter()
        .map(|k| format!("{PREFIX}{}", k.as_str().unwrap()))
        .collect();
    assert_eq!(uses.len(), 3, "{second}");
    assert_held(moto, &bucket, &uses);
}

#[test]
fn an_incremental_export_holds_the_exports_it_builds_on() {
    let moto = shared_moto();
    let bucket = moto.new_bucket("lockexport", true);
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("hot.duckdb");
    let sql = |q: &str| {
        let c = duckdb::Connection::open(&db).unwrap();
        c.execute_batch(q).unwrap();
    };
    sql(
        "CREATE TABLE events (id INTEGER PRIMARY KEY, ts TIMESTAMP, what VARCHAR);
         INSERT INTO events VALUES (1, '2026-01-01', 'a'), (2, '2026-01-02', 'b');",
    );
    let cfg = config(
        dir.path(),
        7,
        &format!(
            "{}[encryption]\nkey_file = \"key\"\n[duckdb]\ndatabase = \"hot.duckdb\"\n[duckdb.watermarks]\nevents = \"ts\"\n",
            moto.store_toml(&bucket, GOVERNANCE)
        ),
    );
    let run = |args: &[&str]| run_with(&cfg, args, &moto.env());
    let json = |out: &std::process::Output| -> serde_json::Value {
        serde_json::from_slice(&out.stdout).unwrap()
    };
    let out = run(&["--json", "export"]);
    assert_exit(&out, 0);
    let full = json(&out)["manifest"].clone();
    assert_eq!(full["scope"], "full", "{full}");
    let id = full["id"].as_str().unwrap();
    // Its head is not among them: only the newest heads tell of a rollback.
    let of_full: Vec<String> = moto
        .keys(&bucket)
        .into_iter()
        .filter(|k| k.contains(id) && !k.contains("/heads/"))
        .collect();
    assert!(of_full.len() >= 2, "{of_full:?}");
    age(moto, &bucket, &of_full);

    sql("INSERT INTO events VALUES (3, '2026-01-03', 'c');");
    let out = run(&["--json", "export"]);
    assert_exit(&out, 0);
    let inc = json(&out)["manifest"].clone();
    assert_eq!(inc["scope"], "incremental", "{inc}");
    assert_eq!(inc["parent"], full["id"]);
    // The full export's manifest and objects: a restore of the incremental
    // reads them all.
    assert_held(moto, &bucket, &of_full);
}

/// The one `.dump` object under `dir` whose path does not contain `not`.
fn dump_object(dir: &Path, not: Option<&Path>) -> std::path::PathBuf {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else if p.to_string_lossy().contains(".dump") && Some(p.as_path()) != not {
                found.push(p);
            }
        }
    }
    assert_eq!(found.len(), 1, "{found:?}");
    found.pop().unwrap()
}

/// A config in `dir` (a local store, a key) for database `db` of `pg`, and
/// the id of a dump `bkp export --kind pgdump` stored of it.
fn dumped(pg: &Postgres, dir: &Path, db: &str) -> (std::path::PathBuf, String) {
    let cfg = config(
        dir,
        9,
        &format!(
            "[store]\ntype = \"local\"\npath = \"store\"\n[encryption]\nkey_file = \"key\"\n{}",
            pg.toml(db)
        ),
    );
    let out = run_with(&cfg, &["export", "--kind", "pgdump"], &[]);
    assert_exit(&out, 0);
    let id = String::from_utf8(out.stdout).unwrap().trim().to_string();
    (cfg, id)
}

/// A dump on a local store is verified, then read by pg_restore: another dump
/// put under its name in between (a writer of the shared file system) must not
/// be what pg_restore runs. The restore stops itself between the two
/// (`BKP_PAUSEPOINT`), the test swaps the object, and the restore goes on.
#[test]
fn a_dump_swapped_after_its_verification_is_not_what_pg_restore_reads() {
    let pg = &Postgres::start();
    let db = unique_name("swap");
    pg.create_db(
        &db,
        "CREATE TABLE genuine (id int PRIMARY KEY); INSERT INTO genuine SELECT generate_series(1, 50);",
    );
    let dir = tempfile::tempdir().unwrap();
    let (cfg, genuine_id) = dumped(pg, dir.path(), &db);
    let run = |args: &[&str]| run_with(&cfg, args, &[]);
    let store = dir.path().join("store/pgdump");
    let genuine = dump_object(&store, None);
    pg.psql(
        &db,
        "CREATE TABLE planted (x int); INSERT INTO planted VALUES (1);",
    );
    assert_exit(&run(&["export", "--kind", "pgdump"]), 0);
    let other = dump_object(&store, Some(&genuine));

    let target = unique_name("swapped");
    let saved = fs::read(&genuine).unwrap();
    let out = common::run_paused(
        &cfg,
        &["restore", &genuine_id, "--target", &target],
        "restore-verified",
        "the restore, between verifying and reading its dump",
        || {
            fs::copy(&other, &genuine).unwrap();
        },
    );
    fs::write(&genuine, saved).unwrap();
    assert_exit(&out, 0);
    // What was restored is the verified dump: no table of the other one.
    let tables = pg.psql(
        &target,
        "SELECT string_agg(tablename, ',' ORDER BY tablename) FROM pg_tables WHERE schemaname = 'public'",
    );
    assert_eq!(tables, "genuine");
    assert_eq!(pg.psql(&target, "SELECT count(*) FROM genuine"), "50");
}

/// A dump restores into a staging database that other roles of the server
/// cannot enter (they could plant a function or a view there, which the row
/// counts would not see, and it would be delivered with the restore); the
/// restored database then grants PUBLIC what a new database does. The restore
/// stops itself once the staging database exists (`BKP_PAUSEPOINT`).
#[test]
fn a_dumps_staging_database_takes_no_other_roles_session() {
    let pg = &Postgres::start();
    let db = unique_name("staged");
    pg.create_db(
        &db,
        "CREATE TABLE t (id int PRIMARY KEY); INSERT INTO t SELECT generate_series(1, 5);",
    );
    pg.psql("postgres", "CREATE ROLE bkp_other LOGIN");
    let dir = tempfile::tempdir().unwrap();
    let (cfg, id) = dumped(pg, dir.path(), &db);

    let target = unique_name("restored");
    let may = |db: &str| {
        pg.psql(
            "postgres",
            &format!(
                "SELECT has_database_privilege('bkp_other', datname, 'CONNECT') FROM pg_database WHERE datname = '{db}'"
            ),
        )
    };
    let (mut staging, mut during) = (String::new(), String::new());
    let out = common::run_paused(
        &cfg,
        &["restore", &id, "--target", &target],
        "restore-verified:1",
        "the restore, its staging database made",
        || {
            staging = pg.psql(
                "postgres",
                "SELECT datname FROM pg_database WHERE datname LIKE 'bkp_restore_%'",
            );
            during = may(&staging);
        },
    );
    assert!(staging.starts_with("bkp_restore_"), "{staging:?}");
    assert_exit(&out, 0);
    assert_eq!(during, "f", "another role may enter {staging}");
    assert_eq!(
        may(&target),
        "t",
        "the restored database is closed to PUBLIC"
    );
    assert_eq!(pg.psql(&target, "SELECT count(*) FROM t"), "5");
}
