//! `bkp restore --kind duckdb` and `bkp verify --drill` of DuckDB exports whose
//! stored bytes were altered: a `schema.sql` that writes, reads or attaches files,
//! changes DuckDB's settings or installs extensions, and a manifest whose file or
//! table names try to leave the restore. Bytes from a store are untrusted: each is
//! refused as damaged data (exit 5), touches no file outside the restore's scratch
//! space and target, and no content of a file it tried to read shows up in the
//! output, the reports in the store or the work directory.
//!
//! The store is local and unencrypted so that the test can rewrite an object and
//! the digests its manifest records, as someone with write access to a store could.

mod common;

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Output;

use common::{assert_exit, run_bkp};
use duckdb::Connection;
use sha2::{Digest, Sha256};

/// The exit code of damaged data.
const INTEGRITY: i32 = 5;
/// Stands for a secret on the machine that restores: it must never leave its file.
const MARKER: &str = "TOPSECRET-1234";

struct Setup {
    dir: tempfile::TempDir,
    config: PathBuf,
    env: Vec<(String, String)>,
}

impl Setup {
    fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }
    fn bkp(&self, args: &[&str]) -> Output {
        let mut all = vec!["--config", self.config.to_str().unwrap()];
        all.extend_from_slice(args);
        run_bkp(&all, &self.env)
    }
    fn restore(&self) -> Output {
        let target = self.path("restored/hot.duckdb");
        self.bkp(&[
            "restore",
            "latest",
            "--kind",
            "duckdb",
            "--target",
            target.to_str().unwrap(),
        ])
    }
    fn drill(&self) -> Output {
        self.bkp(&["--json", "verify", "--drill"])
    }
    /// The path of the (only) export's manifest in the store.
    fn manifest_path(&self) -> PathBuf {
        let dir = self.path("store/manifests/duckdb");
        let mut found: Vec<PathBuf> = fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "json"))
            .collect();
        assert_eq!(found.len(), 1, "{found:?}");
        found.pop().unwrap()
    }
    fn manifest(&self) -> serde_json::Value {
        serde_json::from_slice(&fs::read(self.manifest_path()).unwrap()).unwrap()
    }
    fn save_manifest(&self, m: &serde_json::Value) {
        fs::write(self.manifest_path(), serde_json::to_vec_pretty(m).unwrap()).unwrap();
    }
    /// Replaces the stored `schema.sql` with `sql`, stored the way bkp stores it,
    /// and records its new sizes and digests in the manifest.
    fn replace_schema(&self, sql: &str) {
        let mut m = self.manifest();
        let i = m["files"]
            .as_array()
            .unwrap()
            .iter()
            .position(|f| f["name"] == "schema.sql")
            .expect("the export lists schema.sql");
        let content = sql.as_bytes().to_vec();
        let stored = match m["compression"]["algorithm"].as_str().unwrap() {
            "none" => content.clone(),
            "zstd" => zstd::encode_all(&content[..], 3).unwrap(),
            other => panic!("compression {other} is not handled by this test"),
        };
        assert!(m["encryption"].is_null(), "the test store is unencrypted");
        let key = m["objects"][i]["key"].as_str().unwrap().to_string();
        fs::write(self.path("store").join(&key), &stored).unwrap();
        let o = &mut m["objects"][i];
        o["size"] = stored.len().into();
        o["sha256"] = sha256(&stored).into();
        o["content_bytes"] = content.len().into();
        o["content_sha256"] = sha256(&content).into();
        let f = &mut m["files"][i];
        f["size"] = content.len().into();
        f["sha256"] = sha256(&content).into();
        self.save_manifest(&m);
    }
    /// The schema the export stored.
    fn stored_schema(&self) -> String {
        let m = self.manifest();
        let i = m["files"]
            .as_array()
            .unwrap()
            .iter()
            .position(|f| f["name"] == "schema.sql")
            .unwrap();
        assert_eq!(m["compression"]["algorithm"], "none");
        let key = m["objects"][i]["key"].as_str().unwrap();
        fs::read_to_string(self.path("store").join(key)).unwrap()
    }
    /// Every file and directory under the test directory, relative to it.
    fn tree(&self) -> BTreeSet<PathBuf> {
        walkdir::WalkDir::new(self.dir.path())
            .min_depth(1)
            .into_iter()
            .map(|e| {
                e.unwrap()
                    .path()
                    .strip_prefix(self.dir.path())
                    .unwrap()
                    .to_path_buf()
            })
            .collect()
    }
}

fn sha256(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// A small database, exported in full to a local, unencrypted store. `HOME` is a
/// directory of the test, so that anything DuckDB would put there (extensions,
/// secrets) shows up.
fn setup() -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("bkp.toml");
    fs::write(
        &config,
        "work_dir = \"work\"\n[store]\ntype = \"local\"\npath = \"store\"\n[encryption]\nenabled = false\n[duckdb]\ndatabase = \"hot.duckdb\"\n",
    )
    .unwrap();
    fs::create_dir(dir.path().join("home")).unwrap();
    fs::write(dir.path().join("secret.txt"), format!("{MARKER}\n")).unwrap();
    let env = vec![(
        "HOME".to_string(),
        dir.path().join("home").display().to_string(),
    )];
    let s = Setup { dir, config, env };
    let c = Connection::open(s.path("hot.duckdb")).unwrap();
    c.execute_batch(
        "CREATE SEQUENCE ids START 10;
         CREATE SCHEMA audit;
         CREATE TABLE t (id INTEGER PRIMARY KEY DEFAULT nextval('ids'), v VARCHAR);
         CREATE TABLE audit.log (logged_at TIMESTAMP, what VARCHAR);
         INSERT INTO t (v) VALUES ('a'), ('b'), ('c');
         INSERT INTO audit.log VALUES ('2026-01-01 00:00:00', 'made');",
    )
    .unwrap();
    drop(c);
    assert_exit(&s.bkp(&["export", "--full"]), 0);
    s
}

/// What a run may leave in the test directory besides what was there: run locks,
/// the empty scratch root, the target's (empty) parent directory, the reports
/// `verify` writes to the store and the store's catalog of manifests.
fn allowed_new(p: &Path) -> bool {
    p.starts_with("store/reports")
        || p.starts_with("store/catalog")
        || p == Path::new("work/tmp")
        || p == Path::new("restored")
        || (p.parent() == Some(Path::new("work")) && p.extension().is_some_and(|e| e == "lock"))
}

fn text(out: &Output) -> String {
    format!(
        "--- stdout ---\n{}\n--- stderr ---\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Runs the restore and the drill of the (altered) export: both must refuse it as
/// damaged data, leave nothing behind but what [`allowed_new`] allows, and write
/// nothing to `HOME`.
fn assert_refused(s: &Setup, what: &str) -> Vec<Output> {
    let before = s.tree();
    let out = s.restore();
    assert_exit(&out, INTEGRITY);
    assert!(
        !s.path("restored/hot.duckdb").exists(),
        "{what}: a target was left"
    );
    let drill = s.drill();
    assert_exit(&drill, INTEGRITY);
    let report: serde_json::Value = serde_json::from_slice(&drill.stdout)
        .unwrap_or_else(|e| panic!("{what}: not JSON ({e})\n{}", text(&drill)));
    assert_eq!(report["drills"][0]["ok"], false, "{what}: {report:#}");
    assert_eq!(
        report["backups"][0]["problems"],
        serde_json::json!([]),
        "{what}: the objects themselves are whole: {report:#}"
    );
    let new: Vec<PathBuf> = s
        .tree()
        .difference(&before)
        .filter(|p| !allowed_new(p))
        .cloned()
        .collect();
    assert!(
        new.is_empty(),
        "{what}: files appeared: {new:?}\n{}\n{}",
        text(&out),
        text(&drill)
    );
    vec![out, drill]
}

/// Asserts that [`MARKER`] appears in none of `outputs` and in no file of the test
/// directory but the secret itself.
fn assert_not_leaked(s: &Setup, outputs: &[Output], what: &str) {
    for out in outputs {
        assert!(
            !text(out).contains(MARKER),
            "{what}: the secret leaked into the output\n{}",
            text(out)
        );
    }
    for rel in s.tree() {
        let p = s.path(rel.to_str().unwrap());
        if rel == Path::new("secret.txt") || !p.is_file() {
            continue;
        }
        let bytes = fs::read(&p).unwrap();
        assert!(
            !bytes.windows(MARKER.len()).any(|w| w == MARKER.as_bytes()),
            "{what}: the secret leaked into {}",
            p.display()
        );
    }
}

#[test]
fn an_untouched_export_restores_and_drills() {
    let s = setup();
    let out = s.restore();
    assert_exit(&out, 0);
    let c = Connection::open(s.path("restored/hot.duckdb")).unwrap();
    let n: i64 = c
        .query_row("SELECT count(*) FROM t", [], |r| r.get(0))
        .unwrap();
    assert_eq!(n, 3);
    let next: i64 = c
        .query_row("SELECT nextval('ids')", [], |r| r.get(0))
        .unwrap();
    assert_eq!(next, 13);
    drop(c);
    let out = s.drill();
    assert_exit(&out, 0);
}

#[test]
fn a_schema_that_writes_a_file_is_refused() {
    let s = setup();
    let pwned = s.path("pwned.csv");
    let schema = s.stored_schema();
    s.replace_schema(&format!(
        "COPY (SELECT 42) TO '{}';\n{schema}",
        pwned.display()
    ));
    let outs = assert_refused(&s, "COPY TO");
    assert!(!pwned.exists());
    for out in &outs {
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("schema") && err.contains("refused"),
            "the message says the stored schema was refused:\n{}",
            text(out)
        );
    }
}

#[test]
fn a_schema_that_reads_a_file_is_refused_without_showing_it() {
    let s = setup();
    let secret = s.path("secret.txt");
    let schema = s.stored_schema();
    let f = secret.display();
    for (what, sql) in [
        (
            "read_text into a table",
            format!("CREATE TABLE stolen AS SELECT * FROM read_text('{f}');"),
        ),
        (
            "read_text into an error",
            format!("SELECT error((SELECT content FROM read_text('{f}')));"),
        ),
        (
            "read_csv into a conversion error",
            format!(
                "CREATE TABLE stolen AS SELECT CAST(column0 AS INTEGER) AS n FROM read_csv('{f}', header = false, columns = {{'column0': 'VARCHAR'}});"
            ),
        ),
        (
            "read_blob after the schema",
            format!("{schema}\nCREATE TABLE stolen AS SELECT content FROM read_blob('{f}');"),
        ),
    ] {
        s.replace_schema(&sql);
        let outs = assert_refused(&s, what);
        assert_not_leaked(&s, &outs, what);
    }
}

#[test]
fn a_schema_that_reaches_settings_extensions_or_other_databases_is_refused() {
    let s = setup();
    let schema = s.stored_schema();
    let other = s.path("other.duckdb");
    let ext = s.path("ext");
    for (what, sql) in [
        (
            "turn external access back on",
            "SET enable_external_access = true;".to_string(),
        ),
        (
            "unlock the configuration",
            "SET lock_configuration = false;".to_string(),
        ),
        (
            "widen the allowed directories",
            "SET allowed_directories = ['/'];".to_string(),
        ),
        (
            "move the extension directory",
            format!("SET extension_directory = '{}';", ext.display()),
        ),
        ("install an extension", "INSTALL httpfs;".to_string()),
        ("load an extension", "LOAD httpfs;".to_string()),
        (
            "attach another database",
            format!("ATTACH '{}' AS other;", other.display()),
        ),
        (
            "switch to a database of its own",
            format!("{schema}\nATTACH ':memory:' AS m; USE m;"),
        ),
        (
            "attach another database after the schema",
            format!(
                "{schema}\nATTACH '{}' AS other; CREATE TABLE other.x AS SELECT 1;",
                other.display()
            ),
        ),
    ] {
        s.replace_schema(&sql);
        let outs = assert_refused(&s, what);
        let err = String::from_utf8_lossy(&outs[0].stderr);
        assert!(
            err.contains("stored schema") && err.contains("was refused"),
            "{what}: {err}"
        );
        if what.starts_with("switch") {
            assert!(err.contains("another database"), "{what}: {err}");
        }
        assert!(!other.exists(), "{what}");
        assert!(!ext.exists(), "{what}");
        let home: Vec<_> = fs::read_dir(s.path("home")).unwrap().collect();
        assert!(home.is_empty(), "{what}: HOME got {home:?}");
    }
}

/// Renames the file `from` of the export to `to`, in `files` and in the table
/// records, as an altered manifest would.
fn rename_file(s: &Setup, from: &str, to: &str) {
    let mut m = s.manifest();
    for f in m["files"].as_array_mut().unwrap() {
        if f["name"] == from {
            f["name"] = to.into();
        }
    }
    for (_, r) in m["source"]["tables"].as_object_mut().unwrap() {
        for f in r["files"].as_array_mut().unwrap() {
            if f["name"] == from {
                f["name"] = to.into();
            }
        }
    }
    s.save_manifest(&m);
}

#[test]
fn file_names_that_leave_the_restore_are_refused() {
    let s = setup();
    let data = "main.t/data.parquet";
    let outside = s.path("outside/passwd");
    let mut current = data.to_string();
    for name in [
        "../x".to_string(),
        "../../../../x".to_string(),
        "main.t/../../x".to_string(),
        outside.display().to_string(),
        "/etc/passwd".to_string(),
        String::new(),
    ] {
        rename_file(&s, &current, &name);
        current = name.clone();
        assert_refused(&s, &format!("file name {name:?}"));
        assert!(!outside.exists());
        assert!(!s.path("x").exists() && !s.path("work/x").exists());
    }
    // The same file renamed back restores again: the refusal was the name's.
    rename_file(&s, &current, data);
    assert_exit(&s.restore(), 0);
}

#[test]
fn table_names_from_the_manifest_are_only_ever_identifiers() {
    let s = setup();
    let pwned = s.path("pwned.csv");
    let mut m = s.manifest();
    let tables = m["source"]["tables"].as_object_mut().unwrap();
    let mut r = tables.remove("main.t").unwrap();
    let evil = format!(
        "t\" (v) SELECT 1; COPY (SELECT 42) TO '{}'; --",
        pwned.display()
    );
    r["table"] = evil.clone().into();
    tables.insert(format!("main.{evil}"), r);
    s.save_manifest(&m);
    assert_refused(&s, "a table name with SQL in it");
    assert!(!pwned.exists());
}
