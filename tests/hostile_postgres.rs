//! A base backup's own PostgreSQL settings never run on the host that restores or
//! drills it. The backup may be forged, or its server's superuser hostile
//! (`ALTER SYSTEM`), and bkp starts PostgreSQL on it (`restore --at`, `verify
//! --drill`) as the user who reads bkp's key. Each setting that can run a command,
//! load a library or write a file is planted in a real server before
//! `bkp snapshot --kind postgres`, each command touching a marker file of its own;
//! after every restore and drill no marker exists, and settings that would make
//! the start fail (a preload library or an included file that does not exist) do
//! not. Through the real binary, a real PostgreSQL server and a local store.

mod common;

use std::fs;
use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use common::postgres::Postgres;
use common::{assert_exit, json};

/// The passphrase of the planted server key, printed by the planted
/// `ssl_passphrase_command`.
const PASS: &str = "bkp-hostile-pass";

extern "C" {
    fn geteuid() -> u32;
}

fn root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { geteuid() == 0 }
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn chown_to_server_user(p: &Path) {
    if root() {
        let ok = Command::new("chown")
            .args(["-R", "postgres:postgres"])
            .arg(p)
            .status()
            .unwrap();
        assert!(ok.success(), "chown of {} failed", p.display());
    }
}

/// The markers the planted commands and library left.
fn markers(dir: &Path) -> Vec<String> {
    let mut found: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    found.sort();
    found
}

fn assert_nothing_ran(dir: &Path, after: &str) {
    let found = markers(dir);
    assert!(
        found.is_empty(),
        "after {after}, the backup's own settings ran on this host: {found:?}"
    );
}

/// The server's clock, as RFC 3339 in UTC.
fn server_now(pg: &Postgres) -> String {
    pg.psql(
        "postgres",
        "SELECT to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')",
    )
}

/// Ends the current WAL segment and waits until the server archived it.
fn archive_now(pg: &Postgres) {
    let seg = pg.psql("postgres", "SELECT pg_walfile_name(pg_switch_wal())");
    for _ in 0..600 {
        let last = pg.psql(
            "postgres",
            "SELECT coalesce(last_archived_wal, '') FROM pg_stat_archiver",
        );
        if last >= seg {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!(
        "{seg} was not archived: {}",
        pg.psql("postgres", "SELECT * FROM pg_stat_archiver")
    );
}

/// A passphrase-protected key and its certificate in `data`: with `ssl = on`,
/// PostgreSQL runs `ssl_passphrase_command` at start to read the key.
/// Inserts row `n`, takes the server's time, inserts row `n + 1` and archives
/// the WAL: the arguments of a `restore latest --kind postgres --at` to that
/// time (which keeps row `n` and not `n + 1`) into `target`.
fn restore_between(pg: &Postgres, n: u32, target: &Path) -> Vec<String> {
    pg.psql("app", &format!("INSERT INTO t VALUES ({n})"));
    std::thread::sleep(Duration::from_millis(1100));
    let at = server_now(pg);
    std::thread::sleep(Duration::from_millis(300));
    pg.psql("app", &format!("INSERT INTO t VALUES ({})", n + 1));
    archive_now(pg);
    [
        "restore", "latest", "--kind", "postgres", "--at", &at, "--target",
    ]
    .iter()
    .map(|a| a.to_string())
    .chain([target.to_str().unwrap().to_string()])
    .collect()
}

fn plant_encrypted_key(data: &Path) {
    let out = Command::new("openssl")
        .args(["req", "-x509", "-newkey", "rsa:2048", "-days", "2"])
        .args(["-subj", "/CN=bkp-hostile", "-passout"])
        .arg(format!("pass:{PASS}"))
        .arg("-keyout")
        .arg(data.join("server.key"))
        .arg("-out")
        .arg(data.join("server.crt"))
        .output()
        .unwrap();
    assert!(out.status.success(), "openssl: {}", text(&out.stderr));
}

/// A shared library in `data` whose loading alone (its constructor, before
/// PostgreSQL checks anything) leaves the marker `library_loaded`.
fn plant_library(data: &Path, markers: &Path) {
    let src = data.join("bkp_evil.c");
    fs::write(
        &src,
        format!(
            "#include <fcntl.h>\n#include <unistd.h>\n\
             __attribute__((constructor)) static void bkp_evil(void) {{\n\
               int fd = open(\"{}\", O_CREAT | O_WRONLY, 0644);\n\
               if (fd >= 0) close(fd);\n\
             }}\n",
            markers.join("library_loaded").display()
        ),
    )
    .unwrap();
    let out = Command::new("cc")
        .args(["-shared", "-fPIC", "-o"])
        .arg(data.join("bkp_evil.so"))
        .arg(&src)
        .output()
        .unwrap();
    assert!(out.status.success(), "cc: {}", text(&out.stderr));
    fs::remove_file(src).unwrap();
}

fn append(path: &Path, lines: &str) {
    use std::io::Write;
    let mut f = fs::OpenOptions::new().append(true).open(path).unwrap();
    f.write_all(lines.as_bytes()).unwrap();
}

/// A PostgreSQL server that archives its WAL with bkp (`archive_command`),
/// database `app` made with `schema`, and a bkp config in `dir` (a key, a
/// local store, base backups of `app`); with it, `bkp` run as the server's
/// user, as its `archive_command` and its restores run.
fn archiving(dir: &Path, schema: &str) -> (Postgres, impl Fn(&[&str]) -> Output) {
    let bin = dir.join("bkp");
    if fs::hard_link(common::bkp_bin(), &bin).is_err() {
        fs::copy(common::bkp_bin(), &bin).unwrap();
    }
    let config = dir.join("bkp.toml");
    let pg = Postgres::start_with(
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
        Vec::new(),
    );
    pg.create_db("app", schema);
    common::write_key(dir.join("key"), [9u8; 32]);
    fs::write(
        &config,
        format!(
            "work_dir = \"work\"\n[store]\ntype = \"local\"\npath = \"store\"\n\
             [encryption]\nkey_file = \"key\"\n{}checkpoint = \"fast\"\n\
             [retention.pgbase]\npreset = \"none\"\n",
            pg.toml("app")
        ),
    )
    .unwrap();
    chown_to_server_user(dir);
    let bkp = move |args: &[&str]| -> Output {
        let (program, mut pre) = common::postgres::as_server_user(&bin);
        pre.extend(["--config".to_string(), config.display().to_string()]);
        pre.extend(args.iter().map(|a| a.to_string()));
        common::run(
            Command::new(program).args(&pre),
            None,
            Duration::from_secs(600),
        )
    };
    (pg, bkp)
}

#[test]
fn a_base_backups_own_settings_run_nothing_where_bkp_starts_postgres() {
    // bkp as archive_command, as in tests/postgres.rs: the server reaches the
    // config, the key and the binary as its own user.
    let dir = tempfile::tempdir().unwrap();
    let marks = dir.path().join("markers");
    fs::create_dir(&marks).unwrap();
    let (pg, bkp) = archiving(
        dir.path(),
        "CREATE TABLE t (n int PRIMARY KEY); INSERT INTO t VALUES (1)",
    );
    let pg = &pg;
    let m = |name: &str| marks.join(name).display().to_string();
    let data = pg.dir.join("data");

    // 1. What a hostile superuser of the source can set (ALTER SYSTEM writes
    // postgresql.auto.conf; the source itself reads it only when reloaded or
    // restarted, which this test never does), and what only a forged backup
    // holds (include directives, files in the data directory).
    plant_encrypted_key(&data);
    plant_library(&data, &marks);
    let sets = [
        ("ssl", "on".to_string()),
        ("ssl_cert_file", "server.crt".into()),
        ("ssl_key_file", "server.key".into()),
        (
            "ssl_passphrase_command",
            format!("touch {}; echo {PASS}", m("ssl_passphrase_command")),
        ),
        (
            "recovery_end_command",
            format!("touch {}", m("recovery_end_command")),
        ),
        (
            "archive_cleanup_command",
            format!("touch {}", m("archive_cleanup_command")),
        ),
        (
            "restore_command",
            format!("touch {}; false", m("restore_command")),
        ),
        ("archive_mode", "always".into()),
        ("archive_command", format!("touch {}", m("archive_command"))),
        ("shared_preload_libraries", "./bkp_evil.so".into()),
        ("session_preload_libraries", "./bkp_evil.so".into()),
        ("local_preload_libraries", "bkp_evil".into()),
        ("dynamic_library_path", "/nonexistent/bkp-hostile".into()),
        ("jit", "on".into()),
        ("jit_provider", "bkp_evil".into()),
    ];
    for (k, v) in &sets {
        pg.psql(
            "postgres",
            &format!("ALTER SYSTEM SET {k} = '{}'", v.replace('\'', "''")),
        );
    }
    fs::write(
        data.join("bkp-hostile-include.conf"),
        format!("external_pid_file = '{}'\n", m("external_pid_file")),
    )
    .unwrap();
    fs::write(
        data.join("bkp-hostile-if-exists.conf"),
        format!(
            "archive_cleanup_command = 'touch {}'\n",
            m("include_if_exists")
        ),
    )
    .unwrap();
    fs::create_dir(data.join("bkp-hostile.d")).unwrap();
    fs::write(
        data.join("bkp-hostile.d/a.conf"),
        format!("restore_command = 'touch {}; false'\n", m("include_dir")),
    )
    .unwrap();
    append(
        &data.join("postgresql.auto.conf"),
        "include 'bkp-hostile-include.conf'\n\
         include_if_exists 'bkp-hostile-if-exists.conf'\n\
         include_dir 'bkp-hostile.d'\n",
    );
    chown_to_server_user(&data);
    assert_exit(&bkp(&["snapshot", "--kind", "postgres"]), 0);

    // 2. A restore to a point in time starts PostgreSQL on the backup.
    let target = dir.path().join("at");
    let args = restore_between(pg, 2, &target);
    let out = bkp(&args.iter().map(String::as_str).collect::<Vec<_>>());
    assert_nothing_ran(&marks, "restore --at");
    assert_exit(&out, 0);
    assert!(
        text(&out.stderr).contains("recovery stopping before commit"),
        "{}",
        text(&out.stderr)
    );
    // The backup's file is kept for the operator, unused; bkp's is in its place.
    let own = fs::read_to_string(target.join("postgresql.auto.conf")).unwrap();
    assert!(!own.contains("ssl") && !own.contains("include"), "{own}");
    assert!(own.contains("archive_mode = 'off'"), "{own}");
    let kept = fs::read_to_string(target.join("postgresql.auto.conf.from-backup")).unwrap();
    assert!(
        kept.contains("ssl_passphrase_command") && kept.contains("include_dir"),
        "{kept}"
    );
    // Started as the README says, it runs none of them either and holds the
    // data of T.
    let restored = Postgres::start_on(&target);
    assert_eq!(restored.psql("app", "SELECT count(*) FROM t"), "2");
    drop(restored);
    assert_nothing_ran(&marks, "starting the restored directory");

    // 3. A plain restore sets the file aside too, and says so.
    let plain = dir.path().join("plain");
    let out = bkp(&[
        "restore",
        "latest",
        "--kind",
        "postgres",
        "--target",
        plain.to_str().unwrap(),
    ]);
    assert_exit(&out, 0);
    assert!(
        text(&out.stderr).contains("postgresql.auto.conf.from-backup"),
        "{}",
        text(&out.stderr)
    );
    let own = fs::read_to_string(plain.join("postgresql.auto.conf")).unwrap();
    assert!(!own.contains("ssl_passphrase_command"), "{own}");
    assert!(plain.join("postgresql.auto.conf.from-backup").is_file());

    // 4. A drill replays the whole archive onto the backup.
    let out = bkp(&["--json", "verify", "--drill", "--kind", "postgres"]);
    assert_nothing_ran(&marks, "verify --drill");
    assert_exit(&out, 0);
    let report = json(&out);
    assert!(
        report["drills"][0]["facts"]["wal_files"].as_u64().unwrap() >= 1,
        "{report}"
    );

    // 5. Settings that would stop the start: preload libraries and included
    // files that do not exist, and a recovery target of the backup's own.
    // Written straight into the file (ALTER SYSTEM would rewrite the include
    // lines above).
    append(
        &data.join("postgresql.auto.conf"),
        "shared_preload_libraries = 'bkp_no_such_library'\n\
         local_preload_libraries = 'bkp_no_such_library'\n\
         session_preload_libraries = 'bkp_no_such_library'\n\
         jit_provider = 'bkp_no_such_library'\n\
         recovery_target_name = 'bkp-hostile'\n\
         include 'bkp-no-such-file.conf'\n\
         include_dir 'bkp-no-such-dir'\n",
    );
    assert_exit(&bkp(&["snapshot", "--kind", "postgres"]), 0);
    let target = dir.path().join("at-again");
    let args = restore_between(pg, 4, &target);
    let out = bkp(&args.iter().map(String::as_str).collect::<Vec<_>>());
    assert_exit(&out, 0);
    let restored = Postgres::start_on(&target);
    assert_eq!(restored.psql("app", "SELECT count(*) FROM t"), "4");
    drop(restored);
    let out = bkp(&["--json", "verify", "--drill", "--kind", "postgres"]);
    assert_exit(&out, 0);
    assert_nothing_ran(&marks, "the second restore and drill");
}

/// The newest WAL objects deleted: a point-in-time restore to after them must
/// not stop at the archive's new end as if that were all there was. bkp
/// recorded the archive's head (`heads/wal/…`, every 64 segments), and
/// `restore --at` refuses an archive that ends, before the target, short of
/// it (exit 5), before PostgreSQL is started.
#[test]
fn a_point_in_time_restore_refuses_an_archive_that_lost_its_newest_wal() {
    let dir = tempfile::tempdir().unwrap();
    let (pg, bkp) = archiving(dir.path(), "CREATE TABLE t (n int PRIMARY KEY)");
    let system: u64 = pg
        .psql(
            "postgres",
            "SELECT system_identifier FROM pg_control_system()",
        )
        .parse()
        .unwrap();
    let fake = common::postgres::fake_pgdata(&dir.path().join("fake"), system);
    chown_to_server_user(dir.path());
    assert_exit(&bkp(&["snapshot", "--kind", "postgres"]), 0);
    pg.psql("app", "INSERT INTO t VALUES (1)");
    archive_now(&pg);
    drop(pg);

    // The archive after the server stopped: its real segments, then more
    // pushed up to the first head (segment 0x40), as a busy server would.
    let wal = dir.path().join(format!("store/wal/{system}"));
    let position = |p: &Path| {
        let name = p.file_name().unwrap().to_string_lossy().into_owned();
        u32::from_str_radix(name.get(16..24)?, 16)
            .ok()
            .filter(|_| name.get(..8) == Some("00000001"))
    };
    let real = common::walk(&wal)
        .iter()
        .filter_map(|p| position(p))
        .max()
        .unwrap();
    assert!(
        real < 0x3f,
        "the test needs segments before the head: {real:#x}"
    );
    for n in real + 1..=0x40 {
        let name = format!("00000001000000000000{n:04X}");
        fs::write(fake.join("pg_wal").join(&name), vec![n as u8; 1 << 16]).unwrap();
        chown_to_server_user(&fake);
        let at = format!("pg_wal/{name}");
        let out = bkp(&["wal", "push", &at, "--pgdata", fake.to_str().unwrap()]);
        assert_exit(&out, 0);
    }
    assert!(
        dir.path()
            .join(format!(
                "store/heads/wal/{system}/000000010000000000000040.json"
            ))
            .exists(),
        "no head was recorded"
    );
    std::thread::sleep(Duration::from_millis(1100));
    let at = time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap();
    // A bucket writer deletes the newest segments (the heads stay).
    for p in common::walk(&wal) {
        if position(&p).is_some_and(|n| n > real) {
            fs::remove_file(p).unwrap();
        }
    }
    let target = dir.path().join("restored");
    let out = bkp(&[
        "restore",
        "latest",
        "--kind",
        "postgres",
        "--at",
        &at,
        "--target",
        target.to_str().unwrap(),
    ]);
    assert_exit(&out, 5);
    let said = text(&out.stderr);
    assert!(
        said.contains("000000010000000000000040") && said.contains("WAL was deleted"),
        "{said}"
    );
    assert!(!target.exists());
}
