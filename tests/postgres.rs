//! `bkp export --kind pgdump` and `bkp restore` of PostgreSQL dumps, through the real
//! binary, against a real PostgreSQL server started here (Debian's packages) and a
//! real S3 server (SeaweedFS) or a local store. Each test has a server of its own,
//! so that what one test finds on it (no staging database left) is its own doing.

mod common;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Output;

use common::postgres::Postgres;
use common::{assert_exit, json, run_bkp, shared_s3, unique_name, StoreKind};

struct Setup {
    dir: tempfile::TempDir,
    config: PathBuf,
    env: Vec<(String, String)>,
}

impl Setup {
    /// A config with a store, a key (unless `encrypted` is false) and `postgres` as
    /// its `[postgres]` section.
    fn new(store: StoreKind, encrypted: bool, postgres: &str) -> Setup {
        Setup::within(tempfile::tempdir().unwrap(), store, encrypted, postgres)
    }

    /// [`Setup::new`] in the directory `dir`.
    fn within(dir: tempfile::TempDir, store: StoreKind, encrypted: bool, postgres: &str) -> Setup {
        common::write_key(dir.path().join("key"), [9u8; 32]);
        let (store_toml, env) = match store {
            StoreKind::Local => (
                "[store]\ntype = \"local\"\npath = \"store\"\n".to_string(),
                vec![],
            ),
            StoreKind::S3 => {
                let s3 = shared_s3();
                let bucket = unique_name("pg");
                s3.create_bucket(&bucket);
                (
                    format!(
                        "[store]\ntype = \"s3\"\nbucket = \"{bucket}\"\nendpoint = \"{}\"\npath_style = true\nregion = \"{}\"\n",
                        s3.endpoint, s3.region
                    ),
                    s3.env(),
                )
            }
        };
        let encryption = if encrypted {
            "[encryption]\nkey_file = \"key\"\n"
        } else {
            "[encryption]\nenabled = false\n"
        };
        let config = dir.path().join("bkp.toml");
        fs::write(
            &config,
            format!("work_dir = \"work\"\n{store_toml}{encryption}{postgres}"),
        )
        .unwrap();
        Setup { dir, config, env }
    }

    fn bkp(&self, args: &[&str]) -> Output {
        let mut all = vec!["--config", self.config.to_str().unwrap()];
        all.extend_from_slice(args);
        run_bkp(&all, &self.env)
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    /// Runs `bkp export --kind pgdump`; the new backup's id.
    fn dump(&self) -> String {
        let out = self.bkp(&["export", "--kind", "pgdump"]);
        assert_exit(&out, 0);
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    }

    fn manifest(&self, id: &str) -> serde_json::Value {
        let out = self.bkp(&["--json", "show", id]);
        assert_exit(&out, 0);
        json(&out)
    }
}

/// A database with what a dump must carry: several schemas, awkward values,
/// sequences, a view, a function, constraints and an index.
const APP: &str = r#"
CREATE SCHEMA tenant_a;
CREATE SCHEMA tenant_b;
CREATE TABLE public.accounts (
    id bigserial PRIMARY KEY,
    name text NOT NULL,
    balance numeric(30, 8),
    tags text[],
    doc jsonb,
    raw bytea,
    seen timestamptz
);
CREATE TABLE tenant_a.orders (id int PRIMARY KEY, account bigint REFERENCES public.accounts, note text);
CREATE TABLE tenant_b.orders (id int PRIMARY KEY, note text);
CREATE TABLE public."Odd ""Name""" (x int);
CREATE INDEX accounts_name ON public.accounts (name);
CREATE VIEW public.rich AS SELECT name FROM public.accounts WHERE balance > 100;
CREATE FUNCTION public.double_it(x int) RETURNS int LANGUAGE sql AS 'SELECT x * 2';
INSERT INTO public.accounts (name, balance, tags, doc, raw, seen)
SELECT 'acct ' || g, g * 1.5, ARRAY['t' || g, NULL], jsonb_build_object('g', g, 'nested', jsonb_build_array(g, 'x')),
       decode(md5(g::text), 'hex'), timestamptz '2026-01-01 00:00:00+00' + g * interval '1 minute'
FROM generate_series(1, 2000) g;
INSERT INTO public.accounts (name, balance, tags, doc, raw, seen)
VALUES (E'tab\there, newline\nthere, backslash \\ and quote '' "', NULL, '{}', 'null', '\x00ff', NULL);
INSERT INTO tenant_a.orders SELECT g, g, 'a' || g FROM generate_series(1, 300) g;
INSERT INTO tenant_b.orders SELECT g, E'b\n' || g FROM generate_series(1, 70) g;
"#;

fn new_app(pg: &Postgres) -> String {
    let db = unique_name("app");
    pg.create_db(&db, APP);
    db
}

#[test]
fn a_dump_restores_into_a_new_database_exactly() {
    let pg = &Postgres::start();
    let db = new_app(pg);
    let s = Setup::new(StoreKind::S3, true, &pg.toml(&db));
    let id = s.dump();

    let listed = s.bkp(&["--json", "list", "--kind", "pgdump"]);
    assert_exit(&listed, 0);
    assert_eq!(json(&listed)["backups"][0]["id"], id.as_str());
    let m = s.manifest(&id);
    let m = &m["manifest"];
    assert_eq!(m["kind"], "pgdump");
    assert_eq!(m["operation"], "export");
    assert!(m["encryption"]["format"].is_string(), "{m}");
    let tables = &m["source"]["tables"];
    assert_eq!(tables["public.accounts"], 2001, "{m}");
    assert_eq!(tables["tenant_a.orders"], 300);
    assert_eq!(tables["public.\"Odd \"\"Name\"\"\""], 0);
    assert!(m["source"]["server_version"]
        .as_str()
        .unwrap()
        .starts_with(char::is_numeric));
    // The cluster's roles come along, without their password hashes.
    let objects = m["objects"].as_array().unwrap();
    assert_eq!(objects.len(), 2, "{m}");
    let globals = objects
        .iter()
        .map(|o| o["key"].as_str().unwrap())
        .find(|k| k.contains(".globals.sql"))
        .expect("a globals object");
    let cat = s.bkp(&["cat", globals]);
    assert_exit(&cat, 0);
    let sql = text(&cat.stdout);
    assert!(sql.contains("CREATE ROLE bkp_pw"), "{sql}");
    assert!(
        !sql.contains("SCRAM-SHA-256") && !sql.contains(&pg.password),
        "{sql}"
    );

    // Rows change after the dump: the restore brings back the dump's state.
    let before = pg.content(&db);
    pg.psql(
        &db,
        "DELETE FROM tenant_b.orders; SELECT nextval('public.accounts_id_seq')",
    );
    let target = unique_name("restored");
    let out = s.bkp(&["restore", &id, "--target", &target]);
    assert_exit(&out, 0);
    assert!(
        text(&out.stderr).contains("every row count verified"),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(pg.content(&target), before);
    assert_eq!(
        pg.psql(
            &target,
            "SELECT public.double_it(21), count(*) FROM public.rich"
        ),
        "42|1934"
    );
    assert_eq!(
        pg.psql(&target, "SELECT last_value FROM public.accounts_id_seq"),
        "2001",
        "the sequence comes back as the dump saw it"
    );
    assert!(
        !pg.databases().iter().any(|d| d.starts_with("bkp_restore_")),
        "no staging database is left: {:?}",
        pg.databases()
    );

    // The same target again: refused, untouched (a dry run says so first);
    // replaced with --force.
    let dry = s.bkp(&["restore", &id, "--target", &target, "--dry-run"]);
    assert_exit(&dry, 8);
    assert!(
        text(&dry.stdout).contains("exists: choose a new name"),
        "{}",
        text(&dry.stdout)
    );
    assert_exit(
        &s.bkp(&["restore", &id, "--target", &target, "--dry-run", "--force"]),
        0,
    );
    pg.psql(
        &target,
        "INSERT INTO tenant_b.orders VALUES (9999, 'local change')",
    );
    let again = s.bkp(&["restore", &id, "--target", &target]);
    assert_exit(&again, 8);
    assert!(
        text(&again.stderr).contains("--force"),
        "{}",
        text(&again.stderr)
    );
    assert_eq!(
        pg.psql(
            &target,
            "SELECT count(*) FROM tenant_b.orders WHERE id = 9999"
        ),
        "1"
    );
    let forced = s.bkp(&["restore", &id, "--target", &target, "--force"]);
    assert_exit(&forced, 0);
    assert_eq!(pg.content(&target), before);

    // `latest` of the kind, and a drill that reads every row without a server.
    let latest = s.bkp(&[
        "restore",
        "latest",
        "--kind",
        "pgdump",
        "--target",
        &unique_name("latest"),
    ]);
    assert_exit(&latest, 0);
    let drill = s.bkp(&["--json", "verify", "--drill"]);
    assert_exit(&drill, 0);
    let report = json(&drill);
    let d = &report["drills"][0];
    assert_eq!(d["ok"], true, "{report}");
    assert_eq!(d["facts"]["rows"], 2001 + 300 + 70, "{report}");
    assert_eq!(d["facts"]["tables"], 4, "{report}");
}

#[test]
fn without_counts_or_globals_the_dump_still_restores_and_says_what_it_checked() {
    let pg = &Postgres::start();
    let db = new_app(pg);
    let toml = format!("{}count_rows = false\nglobals = false\n", pg.toml(&db));
    let s = Setup::new(StoreKind::Local, true, &toml);
    let id = s.dump();
    let m = s.manifest(&id);
    assert!(m["manifest"]["source"].get("tables").is_none(), "{m}");
    assert_eq!(m["manifest"]["objects"].as_array().unwrap().len(), 1);
    let target = unique_name("uncounted");
    let out = s.bkp(&["restore", &id, "--target", &target]);
    assert_exit(&out, 0);
    assert!(
        text(&out.stderr).contains("no row counts recorded to verify"),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(pg.content(&target), pg.content(&db));
}

#[test]
fn a_base_backup_restores_a_data_directory_that_starts() {
    let pg = &Postgres::start();
    let db = new_app(pg);
    let toml = format!("{}checkpoint = \"fast\"\n", pg.toml(&db));
    let s = Setup::new(StoreKind::S3, true, &toml);
    // The source archives its WAL: a restored copy must not, into the same place.
    pg.psql(
        "postgres",
        "ALTER SYSTEM SET archive_mode = on; ALTER SYSTEM SET archive_command = '/bin/false'",
    );
    // Only [postgres] configured: `bkp snapshot` is its base backup.
    let out = s.bkp(&["snapshot"]);
    assert_exit(&out, 0);
    let id = text(&out.stdout).trim().to_string();
    let before = pg.content(&db);
    pg.psql(&db, "DELETE FROM tenant_b.orders");
    let m = s.manifest(&id);
    assert_eq!(m["manifest"]["kind"], "postgres", "{m}");
    assert_eq!(m["manifest"]["operation"], "snapshot");

    // The restore goes where the server's user can reach it.
    fs::set_permissions(s.dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
    let target = s.path("restored");
    let out = s.bkp(&[
        "restore",
        "latest",
        "--kind",
        "postgres",
        "--target",
        target.to_str().unwrap(),
    ]);
    assert_exit(&out, 0);
    assert!(
        text(&out.stderr).contains("verified by pg_verifybackup"),
        "{}",
        text(&out.stderr)
    );
    let mode = fs::metadata(&target).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o700, "PostgreSQL starts only on a private directory");
    let restored = Postgres::start_on(&target);
    assert_eq!(restored.psql("postgres", "SHOW archive_mode"), "off");
    assert_eq!(
        restored.content(&db),
        before,
        "the restored server holds the backup's data"
    );

    // A directory a server runs on is never replaced, not even with --force.
    let again = s.bkp(&[
        "restore",
        &id,
        "--target",
        target.to_str().unwrap(),
        "--force",
    ]);
    assert_exit(&again, 8);
    assert!(
        text(&again.stderr).contains("postmaster.pid"),
        "{}",
        text(&again.stderr)
    );
    drop(restored);

    let drill = s.bkp(&["--json", "verify", "--drill"]);
    assert_exit(&drill, 0);
    let report = json(&drill);
    assert!(
        report["drills"][0]["facts"]["files"].as_u64().unwrap() > 100,
        "{report}"
    );

    // A damaged base backup restores nothing.
    let local = Setup::new(StoreKind::Local, true, &toml);
    assert_exit(&local.bkp(&["snapshot", "--kind", "postgres"]), 0);
    let object = find_object_with(&local.path("store/postgres"), ".tar");
    let mut bytes = fs::read(&object).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x01;
    fs::write(&object, &bytes).unwrap();
    let damaged = local.path("damaged");
    let out = local.bkp(&[
        "restore",
        "latest",
        "--kind",
        "postgres",
        "--target",
        damaged.to_str().unwrap(),
    ]);
    assert_exit(&out, 5);
    assert!(!damaged.exists(), "a damaged restore left its target");
    assert_exit(&local.bkp(&["verify", "--drill"]), 5);

    // A data directory that a server runs on, one level down (Debian's
    // /var/lib/postgresql/15/main), is never replaced.
    let parent = s.path("parent");
    fs::create_dir_all(parent.join("main")).unwrap();
    fs::write(parent.join("main/postmaster.pid"), "4242\n").unwrap();
    let out = s.bkp(&[
        "restore",
        &id,
        "--target",
        parent.to_str().unwrap(),
        "--force",
    ]);
    assert_exit(&out, 8);
    assert!(parent.join("main/postmaster.pid").exists());

    // A tablespace besides the default cannot go through one tar: refused, named.
    let space = pg.dir.join("space");
    fs::create_dir(&space).unwrap();
    if unsafe { geteuid() } == 0 {
        let ok = std::process::Command::new("chown")
            .args(["postgres:postgres"])
            .arg(&space)
            .status()
            .unwrap();
        assert!(ok.success());
    }
    pg.psql(
        "postgres",
        &format!("CREATE TABLESPACE extra LOCATION '{}'", space.display()),
    );
    let out = local.bkp(&["snapshot", "--kind", "postgres"]);
    assert_exit(&out, 12);
    assert!(
        text(&out.stderr).contains("tablespaces besides the default (extra)"),
        "{}",
        text(&out.stderr)
    );

    // With a TigerBeetle data file too, a bare `bkp snapshot` stays the
    // TigerBeetle snapshot it always was.
    let both = Setup::new(
        StoreKind::Local,
        true,
        &format!(
            "{}[tigerbeetle]\ndata_file = \"0_0.tigerbeetle\"\n",
            pg.toml(&db)
        ),
    );
    let out = both.bkp(&["snapshot"]);
    assert_ne!(out.status.code(), Some(0));
    assert!(
        text(&out.stderr).contains("0_0.tigerbeetle"),
        "{}",
        text(&out.stderr)
    );
    assert!(!both.path("store/manifests/postgres").exists());
}

#[test]
fn one_tenant_comes_back_alone() {
    let pg = &Postgres::start();
    let db = new_app(pg);
    let s = Setup::new(StoreKind::Local, true, &pg.toml(&db));
    let id = s.dump();

    // tenant_a's orders refer to public.accounts: alone they cannot come back,
    // and the error says what to add.
    let a = unique_name("tenant_a");
    let alone = s.bkp(&["restore", &id, "--target", &a, "--schema", "tenant_a"]);
    assert_exit(&alone, 3);
    assert!(
        text(&alone.stderr).contains("--schema"),
        "{}",
        text(&alone.stderr)
    );
    assert!(!pg.databases().contains(&a));
    let with_public = [
        "restore", &id, "--target", &a, "--schema", "tenant_a", "--schema", "public",
    ];
    assert_exit(&s.bkp(&with_public), 0);
    assert_eq!(
        pg.psql(&a, "SELECT string_agg(schemaname || '.' || tablename, ',' ORDER BY 1) FROM pg_tables WHERE schemaname NOT IN ('pg_catalog', 'information_schema')"),
        "public.Odd \"Name\",public.accounts,tenant_a.orders"
    );
    assert_eq!(pg.psql(&a, "SELECT count(*) FROM tenant_a.orders"), "300");

    let b = unique_name("tenant_b");
    assert_exit(
        &s.bkp(&["restore", &id, "--target", &b, "--table", "tenant_b.orders"]),
        0,
    );
    assert_eq!(
        pg.psql(&b, "SELECT count(*), min(note) FROM tenant_b.orders"),
        "70|b\n1"
    );

    // A selection that is not in the dump, that pg_restore cannot honour, or that
    // would replace a whole database is refused before anything is created.
    let before = pg.databases();
    let c = unique_name("c");
    for (args, needle) in [
        (
            vec!["--table", "tenant_a.ordrs"],
            "holds no table \"tenant_a.ordrs\"",
        ),
        (
            vec!["--schema", "tenant_c"],
            "holds no table in schema \"tenant_c\"",
        ),
        (
            vec!["--table", "orders"],
            "matches tenant_a.orders, tenant_b.orders",
        ),
        (
            vec!["--schema", "tenant_a", "--table", "tenant_b.orders"],
            "cannot be combined",
        ),
        (
            vec!["--schema", "tenant_b", "--force"],
            "--force with --schema",
        ),
    ] {
        let mut all = vec!["restore", id.as_str(), "--target", c.as_str()];
        all.extend(args.iter().copied());
        let out = s.bkp(&all);
        assert_exit(&out, 3);
        assert!(
            text(&out.stderr).contains(needle),
            "{args:?}: {}",
            text(&out.stderr)
        );
    }
    assert_eq!(
        pg.databases(),
        before,
        "a refused selection created a database"
    );
    // pg_restore takes every chosen name in every chosen schema: asked for
    // tenant_a.orders and public.accounts, it would bring tenant_a.accounts too.
    pg.psql(&db, "CREATE TABLE tenant_a.accounts (id int)");
    let id2 = s.dump();
    let cross = s.bkp(&[
        "restore",
        &id2,
        "--target",
        &c,
        "--table",
        "tenant_a.orders",
        "--table",
        "public.accounts",
    ]);
    assert_exit(&cross, 3);
    assert!(
        text(&cross.stderr).contains("without also restoring tenant_a.accounts"),
        "{}",
        text(&cross.stderr)
    );
    assert_eq!(pg.databases(), before);
}

#[test]
fn force_replaces_a_database_with_sessions_and_sigterm_stops_a_stalled_dump() {
    let pg = &Postgres::start();
    let db = new_app(pg);
    let s = Setup::new(StoreKind::Local, true, &pg.toml(&db));
    let id = s.dump();
    let target = unique_name("busy");
    assert_exit(&s.bkp(&["restore", &id, "--target", &target]), 0);
    pg.psql(
        &target,
        "INSERT INTO tenant_b.orders VALUES (9999, 'local')",
    );

    // A session sits in the target: --force ends it and swaps the databases.
    let mut sitter = pg.background(&target, "SELECT pg_sleep(120);");
    pg.wait_until(
        "postgres",
        &format!(
            "SELECT count(*) > 0 FROM pg_stat_activity WHERE datname = '{target}' \
             AND query LIKE 'SELECT pg_sleep%' AND state = 'active'"
        ),
        "the session sits in the target",
    );
    let out = s.bkp(&["restore", &id, "--target", &target, "--force"]);
    assert_exit(&out, 0);
    assert_eq!(
        pg.psql(&target, "SELECT count(*) FROM tenant_b.orders"),
        "70"
    );
    let dbs = pg.databases();
    assert!(!dbs.iter().any(|d| d.starts_with("bkp_")), "{dbs:?}");
    let _ = sitter.kill();
    let _ = sitter.wait();

    // A table held by another session stalls the dump; SIGTERM ends it at once.
    let mut holder = pg.background(
        &db,
        "BEGIN; LOCK TABLE tenant_b.orders IN ACCESS EXCLUSIVE MODE; SELECT pg_sleep(120);",
    );
    pg.wait_until(
        &db,
        "SELECT count(*) > 0 FROM pg_locks WHERE relation = 'tenant_b.orders'::regclass \
         AND mode = 'AccessExclusiveLock' AND granted",
        "the other session holds the table",
    );
    let mut cmd = common::bkp_command(&s.env);
    cmd.args([
        "--config",
        s.config.to_str().unwrap(),
        "export",
        "--kind",
        "pgdump",
    ]);
    cmd.stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    pg.wait_until(
        &db,
        "SELECT count(*) > 0 FROM pg_stat_activity WHERE application_name = 'bkp' \
         AND wait_event_type = 'Lock'",
        "the dump waits for the table",
    );
    assert!(
        child.try_wait().unwrap().is_none(),
        "the dump did not wait for the lock"
    );
    let sent = std::time::Instant::now();
    std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let took = sent.elapsed();
    let _ = holder.kill();
    let _ = holder.wait();
    assert_eq!(out.status.code(), Some(143), "{}", text(&out.stderr));
    assert!(
        took < std::time::Duration::from_secs(15),
        "SIGTERM took {took:?}"
    );
    assert_eq!(
        fs::read_dir(s.path("store/manifests/pgdump"))
            .unwrap()
            .count(),
        1,
        "the interrupted dump left a manifest"
    );
}

#[test]
fn the_password_comes_from_the_passfile_and_goes_nowhere_else() {
    let pg = &Postgres::start();
    let db = new_app(pg);
    let dir = tempfile::tempdir().unwrap();
    // Tools that record their arguments and environment, then run the real ones.
    let bin = dir.path().join("bin");
    fs::create_dir(&bin).unwrap();
    let log = dir.path().join("seen");
    for tool in ["pg_dump", "pg_dumpall", "pg_restore", "psql"] {
        let wrapper = bin.join(tool);
        fs::write(
            &wrapper,
            format!(
                "#!/bin/sh\n{{ echo \"== {tool} $*\"; env; }} >> '{}'\nexec '{}' \"$@\"\n",
                log.display(),
                pg.bin.join(tool).display()
            ),
        )
        .unwrap();
        fs::set_permissions(&wrapper, fs::Permissions::from_mode(0o755)).unwrap();
    }
    let passfile = dir.path().join("pgpass");
    fs::write(
        &passfile,
        format!("127.0.0.1:{}:*:bkp_pw:{}\n", pg.port, pg.password),
    )
    .unwrap();
    fs::set_permissions(&passfile, fs::Permissions::from_mode(0o600)).unwrap();
    let toml = pg.toml_tcp(&db, &passfile).replace(
        &format!("bin_dir = \"{}\"", pg.bin.display()),
        &format!("bin_dir = \"{}\"", bin.display()),
    );
    let mut s = Setup::new(StoreKind::Local, true, &toml);
    // A secret of bkp's own environment must not reach the tools either.
    s.env
        .push(("AWS_SECRET_ACCESS_KEY".into(), "aws-secret-value".into()));
    s.env.push(("PGPASSWORD".into(), "not-this-one".into()));

    let id = s.dump();
    let target = unique_name("pw_restored");
    let out = s.bkp(&["restore", &id, "--target", &target]);
    assert_exit(&out, 0);
    assert_eq!(
        pg.psql(&target, "SELECT count(*) FROM public.accounts"),
        "2001"
    );

    let seen = fs::read_to_string(&log).unwrap();
    assert!(
        seen.contains("== pg_dump ")
            && seen.contains("== pg_dumpall")
            && seen.contains("== pg_restore"),
        "{seen}"
    );
    assert!(
        seen.contains(&format!("PGPASSFILE={}", passfile.display())),
        "{seen}"
    );
    for secret in [pg.password.as_str(), "aws-secret-value", "not-this-one"] {
        assert!(!seen.contains(secret), "{secret:?} reached a tool:\n{seen}");
    }
    let store = fs::read_dir(s.path("store/manifests/pgdump")).unwrap();
    for f in store {
        let text = fs::read_to_string(f.unwrap().path()).unwrap();
        assert!(
            !text.contains(&pg.password),
            "the password is in a manifest"
        );
    }

    // A passfile others may read is ignored by libpq: bkp says so first.
    fs::set_permissions(&passfile, fs::Permissions::from_mode(0o644)).unwrap();
    let open = s.bkp(&["export", "--kind", "pgdump"]);
    assert_exit(&open, 3);
    assert!(
        text(&open.stderr).contains("chmod 600"),
        "{}",
        text(&open.stderr)
    );

    // Without the passfile the server's refusal is a config error that says where
    // the password goes, and the password in bkp's environment is not used.
    fs::remove_file(&passfile).unwrap();
    let toml = toml.replace(&format!("passfile = \"{}\"\n", passfile.display()), "");
    fs::write(&s.config, format!("work_dir = \"work\"\n[store]\ntype = \"local\"\npath = \"store\"\n[encryption]\nkey_file = \"key\"\n{toml}")).unwrap();
    let none = s.bkp(&["export", "--kind", "pgdump"]);
    assert_exit(&none, 3);
    let err = text(&none.stderr);
    assert!(err.contains("postgres.passfile"), "{err}");
    assert!(
        !err.contains(&pg.password) && !err.contains("not-this-one"),
        "{err}"
    );
}

#[test]
fn a_failed_dump_stores_nothing_and_names_the_database() {
    let pg = &Postgres::start();
    let s = Setup::new(StoreKind::Local, true, &pg.toml("no_such_database"));
    let out = s.bkp(&["export", "--kind", "pgdump"]);
    assert_exit(&out, 3);
    let err = text(&out.stderr);
    assert!(
        err.contains("no_such_database") && err.contains("postgres.database"),
        "{err}"
    );
    assert!(
        !s.path("store/manifests/pgdump").exists(),
        "a manifest was written"
    );
    let check = s.bkp(&["check"]);
    assert_exit(&check, 3);
    assert!(
        text(&check.stdout).contains("postgres.server"),
        "{}",
        text(&check.stdout)
    );
    let good = Setup::new(StoreKind::Local, true, &pg.toml("postgres"));
    let check = good.bkp(&["check"]);
    assert_exit(&check, 0);
    assert!(
        text(&check.stdout).contains("ok    postgres.server")
            && text(&check.stdout).contains("may take base backups"),
        "{}",
        text(&check.stdout)
    );

    // No [postgres] section: each PostgreSQL verb says what it needs.
    let none = Setup::new(StoreKind::Local, true, "");
    for args in [
        vec!["export", "--kind", "pgdump"],
        vec!["snapshot", "--kind", "postgres"],
    ] {
        let out = none.bkp(&args);
        assert_exit(&out, 3);
        assert!(
            text(&out.stderr).contains("needs a [postgres] section"),
            "{args:?}: {}",
            text(&out.stderr)
        );
    }

    // Nothing listening: transient, retry later.
    let closed = Setup::new(
        StoreKind::Local,
        true,
        &format!(
            "[postgres]\ndatabase = \"x\"\nhost = \"127.0.0.1\"\nport = {}\nbin_dir = \"{}\"\n",
            common::free_port(),
            pg.bin.display()
        ),
    );
    assert_exit(&closed.bkp(&["export", "--kind", "pgdump"]), 6);

    // Both kinds of export configured: the run asks which.
    let both = Setup::new(
        StoreKind::Local,
        true,
        &format!("{}[duckdb]\ndatabase = \"hot.duckdb\"\n", pg.toml("x")),
    );
    let out = both.bkp(&["export"]);
    assert_exit(&out, 3);
    assert!(
        text(&out.stderr).contains("--kind pgdump"),
        "{}",
        text(&out.stderr)
    );
    assert_exit(&both.bkp(&["export", "--kind", "pgdump", "--full"]), 3);

    // Roles and tablespaces that cannot be read: the dump is stored all the same,
    // and the run says what is missing (exit 10).
    let db = new_app(pg);
    let bin = tempfile::tempdir().unwrap();
    for tool in ["pg_dump", "pg_restore", "psql"] {
        std::os::unix::fs::symlink(pg.bin.join(tool), bin.path().join(tool)).unwrap();
    }
    let toml = pg.toml(&db).replace(
        &format!("bin_dir = \"{}\"", pg.bin.display()),
        &format!("bin_dir = \"{}\"", bin.path().display()),
    );
    let partial = Setup::new(StoreKind::Local, true, &toml);
    let out = partial.bkp(&["export", "--kind", "pgdump"]);
    assert_exit(&out, 10);
    assert!(
        text(&out.stderr).contains("roles and tablespaces were not stored"),
        "{}",
        text(&out.stderr)
    );
    let id = text(&out.stdout).trim().to_string();
    let m = partial.manifest(&id);
    assert_eq!(m["manifest"]["objects"].as_array().unwrap().len(), 1, "{m}");
}

#[test]
fn damage_and_wrong_counts_are_refused_and_leave_no_database() {
    let pg = &Postgres::start();
    let db = new_app(pg);
    // Unencrypted and unsealed, so that the test can edit a manifest.
    let s = Setup::new(StoreKind::Local, false, &pg.toml(&db));
    let id = s.dump();
    let manifest_path = fs::read_dir(s.path("store/manifests/pgdump"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let original = fs::read_to_string(&manifest_path).unwrap();

    // A count that the restore does not find: refused (5), nothing left behind.
    let edited = original.replace("\"tenant_a.orders\": 300", "\"tenant_a.orders\": 301");
    assert_ne!(
        edited, original,
        "the manifest names tenant_a.orders' count"
    );
    fs::write(&manifest_path, &edited).unwrap();
    let target = unique_name("miscounted");
    let out = s.bkp(&["restore", &id, "--target", &target]);
    assert_exit(&out, 5);
    assert!(
        text(&out.stderr).contains("tenant_a.orders: 300 rows, the dump recorded 301"),
        "{}",
        text(&out.stderr)
    );
    let dbs = pg.databases();
    assert!(
        !dbs.contains(&target) && !dbs.iter().any(|d| d.starts_with("bkp_restore_")),
        "{dbs:?}"
    );
    assert_exit(&s.bkp(&["verify", "--drill"]), 5);
    fs::write(&manifest_path, &original).unwrap();

    // A damaged object: refused before pg_restore sees a byte.
    let object = find_object(&s.path("store/pgdump"));
    let mut bytes = fs::read(&object).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x40;
    fs::write(&object, &bytes).unwrap();
    let out = s.bkp(&["restore", &id, "--target", &target]);
    assert_exit(&out, 5);
    assert!(!pg.databases().contains(&target));
    assert_exit(&s.bkp(&["verify"]), 5);
}

fn find_object(dir: &Path) -> PathBuf {
    find_object_with(dir, ".dump")
}

fn find_object_with(dir: &Path, marker: &str) -> PathBuf {
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else if p.to_string_lossy().contains(marker) {
                return p;
            }
        }
    }
    panic!("no {marker} object under {}", dir.display());
}

extern "C" {
    fn geteuid() -> u32;
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// A WAL segment's worth of bytes that differ per `seed`.
fn segment_bytes(seed: u8) -> Vec<u8> {
    let mut b = vec![0u8; 1 << 20];
    for (i, x) in b.iter_mut().enumerate().take(50_000) {
        *x = (i as u8).wrapping_mul(31).wrapping_add(seed);
    }
    b
}

/// Every archive object of the local store of `s`.
fn archive_objects(s: &Setup) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![s.path("store/wal")];
    while let Some(d) = stack.pop() {
        let Ok(rd) = fs::read_dir(&d) else { continue };
        for e in rd {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

#[test]
fn wal_push_is_idempotent_and_fetch_refuses_what_the_store_altered() {
    let s = Setup::new(
        StoreKind::Local,
        true,
        "[postgres]\ndatabase = \"app\"\n[freshness]\nwal = \"15m\"\n",
    );
    let system = 7_301_234_567_890_123_456u64;
    let data = common::postgres::fake_pgdata(s.dir.path(), system);
    let pgdata = data.to_str().unwrap();
    let push = |name: &str| s.bkp(&["wal", "push", &format!("pg_wal/{name}"), "--pgdata", pgdata]);
    let fetch = |name: &str, dest: &str| s.bkp(&["wal", "fetch", name, dest, "--pgdata", pgdata]);
    let seg = |n: u32| format!("0000000100000000{n:08X}");
    for (n, seed) in [(1, 1u8), (2, 2), (4, 4)] {
        fs::write(data.join("pg_wal").join(seg(n)), segment_bytes(seed)).unwrap();
        assert_exit(&push(&seg(n)), 0);
    }
    fs::write(
        data.join("pg_wal/00000002.history"),
        "1\t0/3000000\tno recovery target specified\n",
    )
    .unwrap();
    assert_exit(&push("00000002.history"), 0);
    let stored = archive_objects(&s);
    assert_eq!(stored.len(), 4, "{stored:?}");
    assert!(
        stored
            .iter()
            .all(|p| p.to_string_lossy().contains(&format!("wal/{system}/"))),
        "{stored:?}"
    );

    // PostgreSQL retries a push it thinks failed: the same content is a success
    // and stores nothing new; other content under the name is refused.
    assert_exit(&push(&seg(1)), 0);
    assert_eq!(archive_objects(&s).len(), 4);
    fs::write(data.join("pg_wal").join(seg(1)), segment_bytes(9)).unwrap();
    let out = push(&seg(1));
    assert_exit(&out, 5);
    assert!(
        text(&out.stderr).contains("other content"),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(archive_objects(&s).len(), 4);
    // Killed after storing, or half way through storing: PostgreSQL pushes the
    // file again, and the archive ends up with it once.
    fs::write(data.join("pg_wal").join(seg(6)), segment_bytes(6)).unwrap();
    fs::write(data.join("pg_wal").join(seg(7)), segment_bytes(7)).unwrap();
    for (n, point) in [(6, "wal-push-stored"), (7, "store-write")] {
        let mut env = s.env.clone();
        env.push(("BKP_FAILPOINT".into(), point.into()));
        let args = [
            "--config",
            s.config.to_str().unwrap(),
            "wal",
            "push",
            &format!("pg_wal/{}", seg(n)),
            "--pgdata",
            pgdata,
        ];
        let killed = run_bkp(&args, &env);
        assert_eq!(
            killed.status.code(),
            None,
            "{point}: not killed: {}",
            text(&killed.stderr)
        );
        assert_exit(&push(&seg(n)), 0);
        assert_exit(&push(&seg(n)), 0);
        let stored: Vec<_> = archive_objects(&s)
            .into_iter()
            .filter(|p| p.to_string_lossy().contains(&seg(n)))
            .collect();
        assert_eq!(stored.len(), 1, "{point}: {stored:?}");
    }
    // The two are gone again for what follows.
    for p in archive_objects(&s) {
        if [6, 7]
            .iter()
            .any(|n| p.to_string_lossy().contains(&seg(*n)))
        {
            fs::remove_file(p).unwrap();
        }
    }

    // Only names PostgreSQL archives are taken.
    fs::write(data.join("pg_wal/notes.txt"), "x").unwrap();
    assert_exit(&push("notes.txt"), 3);

    // Fetch writes exactly the archived bytes, and only them.
    assert_exit(&fetch(&seg(2), "pg_wal/RECOVERYXLOG"), 0);
    assert_eq!(
        fs::read(data.join("pg_wal/RECOVERYXLOG")).unwrap(),
        segment_bytes(2)
    );
    // Past the archive's end: 9, which PostgreSQL takes for the end of the archive.
    assert_exit(&fetch(&seg(5), "pg_wal/RECOVERYXLOG5"), 9);
    assert_exit(&fetch("00000003.history", "pg_wal/RECOVERYHISTORY"), 9);
    // Missing while a later segment is archived: a gap, never the end. 205
    // stops recovery, naming what comes after it.
    let out = fetch(&seg(3), "pg_wal/RECOVERYXLOG3");
    assert_exit(&out, 205);
    let err = text(&out.stderr);
    assert!(err.contains("gap") && err.contains(&seg(4)), "{err}");
    assert!(!data.join("pg_wal/RECOVERYXLOG3").exists());
    // A standby falls back to streaming instead of shutting down: bkp's code.
    fs::write(data.join("standby.signal"), "").unwrap();
    assert_exit(&fetch(&seg(3), "pg_wal/RECOVERYXLOG3"), 5);
    fs::remove_file(data.join("standby.signal")).unwrap();
    // A timeline whose segments are archived but whose history file is not.
    let tli3 = "000000030000000000000005";
    fs::write(data.join("pg_wal").join(tli3), segment_bytes(35)).unwrap();
    assert_exit(&push(tli3), 0);
    let out = fetch("00000003.history", "pg_wal/RECOVERYHISTORY");
    assert_exit(&out, 205);
    assert!(text(&out.stderr).contains(tli3), "{}", text(&out.stderr));
    // A mistyped restore_command (no destination): recovery stops too.
    assert_exit(&s.bkp(&["wal", "fetch", &seg(2)]), 202);
    // An object planted under a name (no key needed) does not block archiving:
    // the push warns and stores the file under its own name, and fetch finds it.
    let one = archive_objects(&s)
        .into_iter()
        .find(|p| p.to_string_lossy().contains(&seg(1)))
        .unwrap();
    let suffix: Vec<String> = one
        .file_name()
        .unwrap()
        .to_string_lossy()
        .split('.')
        .skip(2)
        .map(str::to_string)
        .collect();
    let planted = one.with_file_name(format!(
        "{}.{}.{}",
        seg(8),
        "ab".repeat(32),
        suffix.join(".")
    ));
    fs::write(&planted, b"not a WAL segment").unwrap();
    fs::write(data.join("pg_wal").join(seg(8)), segment_bytes(8)).unwrap();
    let out = push(&seg(8));
    assert_exit(&out, 0);
    assert!(
        text(&out.stderr).contains("ignored"),
        "{}",
        text(&out.stderr)
    );
    assert_exit(&fetch(&seg(8), "pg_wal/RECOVERYXLOG8"), 0);
    assert_eq!(
        fs::read(data.join("pg_wal/RECOVERYXLOG8")).unwrap(),
        segment_bytes(8)
    );
    // Gone again for what follows.
    for p in archive_objects(&s) {
        let name = p.to_string_lossy().into_owned();
        if name.contains(&seg(8)) || name.contains(tli3) {
            fs::remove_file(p).unwrap();
        }
    }
    // Anything else stops recovery: above 125.
    assert_exit(&fetch("../../etc/passwd", "pg_wal/x"), 203);

    // The store alters a segment: refused, nothing written, 205.
    let four = stored
        .iter()
        .find(|p| p.to_string_lossy().contains(&seg(4)))
        .unwrap();
    let mut bytes = fs::read(four).unwrap();
    let at = bytes.len() - 20;
    bytes[at] ^= 1;
    fs::write(four, &bytes).unwrap();
    let out = fetch(&seg(4), "pg_wal/RECOVERYXLOG4");
    assert_exit(&out, 205);
    assert!(!data.join("pg_wal/RECOVERYXLOG4").exists());
    assert!(
        fs::read_dir(data.join("pg_wal")).unwrap().all(|e| !e
            .unwrap()
            .file_name()
            .to_string_lossy()
            .ends_with(".tmp")),
        "a temporary file was left behind"
    );
    // The store serves segment 1 under segment 4's name: its seal says otherwise.
    let one = stored
        .iter()
        .find(|p| p.to_string_lossy().contains(&seg(1)))
        .unwrap();
    let one_tag_as_five = one.to_string_lossy().replace(&seg(1), &seg(5));
    fs::copy(one, &one_tag_as_five).unwrap();
    let out = fetch(&seg(5), "pg_wal/RECOVERYXLOG5");
    assert_exit(&out, 205);
    assert!(
        text(&out.stderr).contains("does not match its name's seal"),
        "{}",
        text(&out.stderr)
    );
    fs::remove_file(&one_tag_as_five).unwrap();

    // verify reads every file: the damaged one and the gap (3 is missing) fail it.
    let out = s.bkp(&["verify"]);
    assert_exit(&out, 5);
    let err = text(&out.stderr);
    assert!(
        err.contains(&format!("gap after {} up to {}", seg(2), seg(4))),
        "{err}"
    );
    assert!(err.contains(&seg(4)), "{err}");
    // status shows the gap without reading the files.
    let out = s.bkp(&["--json", "status"]);
    let report = json(&out);
    assert_eq!(report["wal"][0]["gaps"][0]["after"], seg(2), "{report}");
    assert_eq!(report["wal_alarms"], serde_json::json!([]), "{report}");
    // Two hours without a new file: archiving stopped, status says so.
    let later = time::OffsetDateTime::now_utc() + time::Duration::hours(2);
    let mut env = s.env.clone();
    env.push((
        "BKP_NOW".into(),
        later
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap(),
    ));
    let out = run_bkp(
        &["--config", s.config.to_str().unwrap(), "--json", "status"],
        &env,
    );
    assert_exit(&out, 11);
    let report = json(&out);
    assert!(
        report["wal_alarms"][0]
            .as_str()
            .unwrap()
            .contains("has nothing newer than 2h"),
        "{report}"
    );
}

/// Runs `bkp` as the user PostgreSQL runs as (`postgres` under root): its
/// restores start a server, and its `archive_command` runs as that user.
fn bkp_as_server_user(s: &Setup, bin: &Path, args: &[&str]) -> Output {
    let (program, mut pre) = common::postgres::as_server_user(bin);
    pre.extend(["--config".to_string(), s.config.display().to_string()]);
    pre.extend(args.iter().map(|a| a.to_string()));
    let mut c = std::process::Command::new(program);
    c.args(&pre).envs(s.env.iter().map(|(k, v)| (k, v)));
    common::run(&mut c, None, std::time::Duration::from_secs(600))
}

/// The server's clock, as RFC 3339 in UTC.
fn server_now(pg: &Postgres) -> String {
    pg.psql(
        "postgres",
        "SELECT to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')",
    )
}

/// Ends the current WAL segment and waits until the server archived it; its name.
fn archive_now(pg: &Postgres) -> String {
    let seg = pg.psql("postgres", "SELECT pg_walfile_name(pg_switch_wal())");
    for _ in 0..600 {
        let done = pg.psql(
            "postgres",
            "SELECT coalesce(last_archived_wal, '') || ' ' || failed_count || ' ' || coalesce(last_failed_wal, '') FROM pg_stat_archiver",
        );
        if done
            .split(' ')
            .next()
            .is_some_and(|last| last >= seg.as_str())
        {
            return seg;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    panic!(
        "{seg} was not archived: {}",
        pg.psql("postgres", "SELECT * FROM pg_stat_archiver")
    );
}

#[test]
fn the_wal_archive_restores_a_base_backup_to_a_point_in_time_and_proves_it() {
    // bkp as archive_command: the server must reach the config, the key and the
    // binary as its own user.
    let dir = tempfile::tempdir().unwrap();
    let bin = dir.path().join("bkp");
    if fs::hard_link(common::bkp_bin(), &bin).is_err() {
        fs::copy(common::bkp_bin(), &bin).unwrap();
    }
    let config = dir.path().join("bkp.toml");
    let s3 = shared_s3();
    let envs: Vec<(&'static str, String)> = s3
        .env()
        .into_iter()
        .map(|(k, v)| (&*Box::leak(k.into_boxed_str()), v))
        .collect();
    let pg = &Postgres::start_with(
        &[
            ("archive_mode", "on".into()),
            (
                "archive_command",
                format!(
                    "'{}' --config '{}' wal push %p",
                    bin.display(),
                    config.display()
                ),
            ),
        ],
        envs,
    );
    let db = new_app(pg);
    let toml = format!(
        "{}checkpoint = \"fast\"\n[retention.pgbase]\npreset = \"none\"\n",
        pg.toml(&db)
    );
    let s = Setup::within(dir, StoreKind::S3, true, &toml);
    if unsafe { geteuid() } == 0 {
        let ok = std::process::Command::new("chown")
            .args(["-R", "postgres:postgres"])
            .arg(s.dir.path())
            .status()
            .unwrap();
        assert!(ok.success());
        // The config stays root's, read by the server through its group, as
        // the guide says: root runs bkp on it too (`show` below).
        let ok = std::process::Command::new("chown")
            .args(["root:postgres"])
            .arg(&s.config)
            .status()
            .unwrap();
        assert!(ok.success());
        fs::set_permissions(&s.config, fs::Permissions::from_mode(0o640)).unwrap();
    }
    let bkp = |args: &[&str]| bkp_as_server_user(&s, &bin, args);
    // `bkp restore latest --kind postgres --at AT --target TARGET`.
    let restore_at = |at: &str, target: &Path| {
        bkp(&[
            "restore",
            "latest",
            "--kind",
            "postgres",
            "--at",
            at,
            "--target",
            target.to_str().unwrap(),
        ])
    };

    let out = bkp(&["snapshot", "--kind", "postgres"]);
    assert_exit(&out, 0);
    let first = text(&out.stdout).trim().to_string();
    let m = s.manifest(&first);
    let system = m["manifest"]["source"]["system_identifier"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(
        system,
        pg.psql(
            "postgres",
            "SELECT system_identifier FROM pg_control_system()"
        )
    );
    assert!(
        m["manifest"]["source"]["wal_start"].as_str().unwrap().len() == 24,
        "{m}"
    );

    // A workload (inserts, updates, deletes, DDL) and five instants, each with
    // the content the server had then; each instant's changes in a segment of
    // their own.
    pg.psql(&db, "CREATE TABLE public.pitr (n int PRIMARY KEY, v text)");
    let mut instants: Vec<(String, String)> = Vec::new();
    let mut segments = Vec::new();
    for i in 0..5 {
        pg.psql(
            &db,
            &format!(
                "INSERT INTO public.pitr SELECT g, 'v{i}' FROM generate_series({a}, {b}) g;
                 UPDATE public.pitr SET v = v || '+{i}' WHERE n % 7 = {i};
                 DELETE FROM public.pitr WHERE n % 11 = {i};
                 UPDATE public.accounts SET balance = balance + {i} WHERE id % 5 = {i};
                 DELETE FROM tenant_a.orders WHERE id % 9 = {i};",
                a = i * 100 + 1,
                b = i * 100 + 100
            ),
        );
        if i == 3 {
            pg.psql(
                &db,
                "CREATE TABLE public.late (x int); INSERT INTO public.late VALUES (3)",
            );
        }
        std::thread::sleep(std::time::Duration::from_millis(1100));
        instants.push((server_now(pg), pg.content(&db)));
        std::thread::sleep(std::time::Duration::from_millis(300));
        segments.push(archive_now(pg));
    }
    // A commit after the last instant, so that recovery can stop at it.
    pg.psql(&db, "DROP TABLE public.pitr");
    archive_now(pg);

    for (i, (t, want)) in instants.iter().enumerate() {
        let target = s.path(&format!("at-{i}"));
        let out = restore_at(t, &target);
        assert_exit(&out, 0);
        let err = text(&out.stderr);
        assert!(err.contains("recovery stopping before commit"), "{err}");
        assert!(!fs::read_to_string(target.join("postgresql.auto.conf"))
            .unwrap()
            .contains("restore_command"));
        // The new timeline's history file waits to be archived once the
        // operator turns archiving on (the replay ran with it off).
        let ready: Vec<String> = fs::read_dir(target.join("pg_wal/archive_status"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".history.ready"))
            .collect();
        assert_eq!(ready.len(), 1, "{ready:?}");
        assert!(target
            .join("pg_wal")
            .join(ready[0].trim_end_matches(".ready"))
            .exists());
        let restored = Postgres::start_on(&target);
        assert_eq!(
            &restored.content(&db),
            want,
            "the restore at {t} holds the data of {t}"
        );
        assert_eq!(restored.psql("postgres", "SELECT pg_is_in_recovery()"), "f");
        assert_eq!(restored.psql("postgres", "SHOW archive_mode"), "off");
    }

    // check says the server archives through bkp, and that it works.
    let out = bkp(&["check"]);
    let said = text(&out.stdout);
    assert!(
        said.lines().any(|l| l.contains("postgres.archiving")
            && l.contains("archive_command is bkp's; last archived")),
        "{said}"
    );

    // A time the archive does not reach yet: refused, nothing restored.
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let later = server_now(pg);
    let target = s.path("too-late");
    let out = restore_at(&later, &target);
    assert_exit(&out, 9);
    assert!(
        text(&out.stderr).contains("ends before"),
        "{}",
        text(&out.stderr)
    );
    assert!(!target.exists());
    // Before the base backup finished: no base backup to start from.
    let out = restore_at("2020-01-01T00:00:00Z", &target);
    assert_exit(&out, 9);

    // A segment the store lost: a restore past it fails and names it, one
    // whose next commit lies before it still works (recovery proves T by the
    // first commit after T), and list and verify show the gap.
    let bucket = fs::read_to_string(&s.config)
        .unwrap()
        .lines()
        .find_map(|l| {
            l.strip_prefix("bucket = \"")
                .map(|b| b.trim_end_matches('"').to_string())
        })
        .unwrap();
    let dir = format!("s3:{bucket}/wal/{system}/");
    let listed = s3.rclone(&["lsf", &dir]);
    let lost = text(&listed.stdout)
        .lines()
        .find(|k| k.starts_with(&format!("{}.", segments[2])))
        .unwrap_or_else(|| panic!("{} not archived: {}", segments[2], text(&listed.stdout)))
        .to_string();
    // Altered first: the replay that needs it fails, naming it, and nothing
    // is restored. The fetch runs beside the server's replay, and a file it
    // cannot verify fails the restore whatever the server made of its absence.
    let copy = s.path("altered-segment");
    let out = s3.rclone(&["copyto", &format!("{dir}{lost}"), copy.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let mut bytes = fs::read(&copy).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x01;
    fs::write(&copy, &bytes).unwrap();
    let out = s3.rclone(&["copyto", copy.to_str().unwrap(), &format!("{dir}{lost}")]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let target = s.path("past-the-damage");
    let out = restore_at(&instants[4].0, &target);
    assert_exit(&out, 5);
    assert!(
        text(&out.stderr).contains(&format!("{} of system", segments[2]))
            && text(&out.stderr).contains("has no authentic object"),
        "{}",
        text(&out.stderr)
    );
    assert!(!target.exists());
    let gone = s3.rclone(&["deletefile", &format!("{dir}{lost}")]);
    assert!(gone.status.success(), "{}", text(&gone.stderr));
    let target = s.path("past-the-gap");
    let out = restore_at(&instants[4].0, &target);
    assert_exit(&out, 9);
    assert!(
        text(&out.stderr).contains(&format!("WAL segment {} is missing", segments[2])),
        "{}",
        text(&out.stderr)
    );
    assert!(!target.exists());
    let target = s.path("before-the-gap");
    let out = restore_at(&instants[0].0, &target);
    assert_exit(&out, 0);
    let listed = json(&bkp(&["--json", "list"]));
    assert_eq!(listed["wal"][0]["system"], system.as_str(), "{listed}");
    assert_eq!(
        listed["wal"][0]["gaps"][0]["before"],
        segments[3].as_str(),
        "{listed}"
    );
    let out = bkp(&["verify", "--kind", "postgres"]);
    assert_exit(&out, 5);
    assert!(
        text(&out.stderr).contains("has a gap after"),
        "{}",
        text(&out.stderr)
    );
    // A drill replays to the end, where PostgreSQL would take the gap for the
    // end and promote: the gap fails it, named.
    let out = bkp(&["verify", "--drill", "--kind", "postgres"]);
    assert_exit(&out, 5);
    assert!(
        text(&out.stderr).contains("a replay to the end would stop there"),
        "{}",
        text(&out.stderr)
    );

    // A new base backup; cleanup keeps only the WAL the kept one needs, and with
    // it goes the gap.
    let oldest = |l: &serde_json::Value| {
        l["wal"][0]["timelines"][0]["runs"][0]["first"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let before = oldest(&listed);
    pg.psql(
        &db,
        "CREATE TABLE public.more (n int); INSERT INTO public.more VALUES (1)",
    );
    archive_now(pg);
    let out = bkp(&["snapshot", "--kind", "postgres"]);
    assert_exit(&out, 0);
    let second = s.manifest(text(&out.stdout).trim());
    let start = second["manifest"]["source"]["wal_start"]
        .as_str()
        .unwrap()
        .to_string();
    archive_now(pg);
    let out = bkp(&["cleanup"]);
    assert_exit(&out, 0);
    assert!(
        text(&out.stderr).contains("archived WAL files"),
        "{}",
        text(&out.stderr)
    );
    let listed = json(&bkp(&["--json", "list"]));
    let after = oldest(&listed);
    assert!(before < start, "{before} {start}");
    assert_eq!(listed["wal"][0]["from"], start.as_str(), "{listed}");
    assert_eq!(listed["wal"][0]["gaps"], serde_json::json!([]), "{listed}");
    // Segments before the kept backup's start are gone; its own are not.
    assert!(
        after >= start,
        "cleanup kept {after}, before {start}: {listed}"
    );
    // Asked for anyway, a removed segment is a gap (later ones are there),
    // never the archive's end.
    let out = bkp(&["wal", "fetch", &before, "x", "--system", &system]);
    assert_exit(&out, 205);
    assert!(
        text(&out.stderr).contains("bkp cleanup"),
        "{}",
        text(&out.stderr)
    );

    // The drill replays the whole archive onto the newest base backup.
    pg.psql(&db, "INSERT INTO public.more VALUES (2)");
    archive_now(pg);
    let out = bkp(&["--json", "verify", "--drill", "--kind", "postgres"]);
    assert_exit(&out, 0);
    let report = json(&out);
    let facts = &report["drills"][0]["facts"];
    assert!(facts["wal_files"].as_u64().unwrap() >= 2, "{report}");
    assert!(facts["replayed_to"].is_string(), "{report}");

    // A base backup whose WAL start bkp cannot read (a segment size no
    // PostgreSQL has): the drill still unpacks and checks it, and its report
    // says the replay was skipped and why, rather than claiming one.
    let listed = json(&bkp(&["--json", "list", "--kind", "postgres"]));
    let newest = listed["backups"].as_array().unwrap().last().unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let key = format!("s3:{bucket}/manifests/postgres/{newest}.json");
    let copy = s.path("startless-manifest.json");
    let out = s3.rclone(&["copyto", &key, copy.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let mut m: serde_json::Value = serde_json::from_slice(&fs::read(&copy).unwrap()).unwrap();
    m["source"]["wal_segment_size"] = serde_json::json!(2048);
    fs::write(&copy, serde_json::to_vec(&m).unwrap()).unwrap();
    // (As the key `Setup` writes.)
    common::reseal_with(&copy, [9u8; 32]);
    let out = s3.rclone(&["copyto", copy.to_str().unwrap(), &key]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = bkp(&["--json", "verify", "--drill", "--kind", "postgres"]);
    assert_exit(&out, 0);
    let report = json(&out);
    let d = &report["drills"][0];
    assert_eq!(d["id"], newest.as_str(), "{report}");
    assert!(
        d["facts"]["wal_replay"]
            .as_str()
            .is_some_and(|w| w.starts_with("skipped: the base backup records no WAL start")),
        "{report}"
    );
    assert!(d["facts"]["files"].as_u64().unwrap() > 100, "{report}");
    assert!(d["facts"].get("wal_files").is_none(), "{report}");
}
