//! A real PostgreSQL server for the tests, from Debian's packages (`scripts/bootstrap`
//! installs them): `initdb` into a scratch directory, then `postgres` on a free port on
//! 127.0.0.1 and a private socket directory, under the same supervisor as the other
//! servers. PostgreSQL refuses to run as root, so under root (CI) it runs as the
//! `postgres` user the packages create.
//!
//! Local socket connections are trusted (role `postgres`); TCP connections need a
//! password (SCRAM), for the tests of `postgres.passfile`: role [`PASSWORD_ROLE`] with
//! [`Postgres::password`].

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;
use std::time::Duration;

use super::{free_port, lossy, random_u64, run, scratch_dir, Spec, Supervised, READY_TIMEOUT};

/// The role that logs in over TCP with a password.
pub const PASSWORD_ROLE: &str = "bkp_pw";

pub struct Postgres {
    pub port: u16,
    /// The directory of the server's Unix socket (`host` for socket connections).
    pub socket_dir: PathBuf,
    /// The directory of `initdb`, `postgres`, `psql`, `pg_dump`, …
    pub bin: PathBuf,
    pub password: String,
    pub dir: PathBuf,
    server: Option<Supervised>,
}

/// The newest `/usr/lib/postgresql/N/bin`, or `$BKP_TEST_PG_BIN`.
pub fn pg_bin() -> PathBuf {
    if let Some(b) = std::env::var_os("BKP_TEST_PG_BIN") {
        return PathBuf::from(b);
    }
    let newest = fs::read_dir("/usr/lib/postgresql").ok().and_then(|d| {
        d.filter_map(|e| e.ok())
            .filter_map(|e| Some((e.file_name().to_str()?.parse::<u32>().ok()?, e.path())))
            .max_by_key(|(v, _)| *v)
            .map(|(_, p)| p.join("bin"))
    });
    match newest {
        Some(b) if b.join("initdb").is_file() => b,
        _ => panic!(
            "no PostgreSQL server under /usr/lib/postgresql: run scripts/bootstrap (it installs Debian's postgresql), or set BKP_TEST_PG_BIN"
        ),
    }
}

/// `program` as the user PostgreSQL runs as: `postgres` under root, else ourselves.
pub fn as_server_user(program: &Path) -> (PathBuf, Vec<String>) {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc_geteuid() } == 0 {
        (
            PathBuf::from("setpriv"),
            vec![
                "--reuid=postgres".into(),
                "--regid=postgres".into(),
                "--init-groups".into(),
                program.display().to_string(),
            ],
        )
    } else {
        (program.to_path_buf(), Vec::new())
    }
}

extern "C" {
    #[link_name = "geteuid"]
    fn libc_geteuid() -> u32;
}

impl Postgres {
    pub fn start() -> Postgres {
        Self::start_with(&[], Vec::new())
    }

    /// A new server with extra settings (`-c name=value`) and environment
    /// variables (what its `archive_command` sees).
    pub fn start_with(settings: &[(&str, String)], envs: Vec<(&'static str, String)>) -> Postgres {
        let bin = pg_bin();
        let dir = scratch_dir("pg");
        let data = dir.join("data");
        let socket_dir = dir.join("sock");
        fs::create_dir(&socket_dir).unwrap();
        if unsafe { libc_geteuid() } == 0 {
            let chown = Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(&dir)
                .status()
                .unwrap();
            assert!(chown.success(), "chown of {} failed", dir.display());
        }
        let password = format!("pw-{:016x}", random_u64());
        let (prog, mut args) = as_server_user(&bin.join("initdb"));
        args.extend(
            [
                "-D",
                data.to_str().unwrap(),
                "-U",
                "postgres",
                "--auth-local=trust",
                "--auth-host=scram-sha-256",
                "-E",
                "UTF8",
                "--locale=C.UTF-8",
                "--no-sync",
            ]
            .map(String::from),
        );
        let out = run(
            Command::new(&prog).args(&args),
            None,
            Duration::from_secs(120),
        );
        assert!(
            out.status.success(),
            "initdb failed: {}",
            lossy(&[out.stdout, out.stderr].concat())
        );
        let pg = Self::launch(bin, dir, data, socket_dir, password, settings, envs);
        pg.psql(
            "postgres",
            &format!(
                "CREATE ROLE {PASSWORD_ROLE} SUPERUSER LOGIN PASSWORD '{}'",
                pg.password
            ),
        );
        pg
    }

    /// Starts a server on a data directory that is already there (a restored
    /// base backup), with a scratch directory of its own for the socket.
    pub fn start_on(data: &Path) -> Postgres {
        let bin = pg_bin();
        let dir = scratch_dir("pg-on");
        let socket_dir = dir.join("sock");
        fs::create_dir(&socket_dir).unwrap();
        if unsafe { libc_geteuid() } == 0 {
            for d in [&dir, &data.to_path_buf()] {
                let chown = Command::new("chown")
                    .args(["-R", "postgres:postgres"])
                    .arg(d)
                    .status()
                    .unwrap();
                assert!(chown.success(), "chown of {} failed", d.display());
            }
        }
        Self::launch(
            bin,
            dir,
            data.to_path_buf(),
            socket_dir,
            String::new(),
            &[],
            Vec::new(),
        )
    }

    fn launch(
        bin: PathBuf,
        dir: PathBuf,
        data: PathBuf,
        socket_dir: PathBuf,
        password: String,
        settings: &[(&str, String)],
        envs: Vec<(&'static str, String)>,
    ) -> Postgres {
        let port = free_port();
        let (program, mut args) = as_server_user(&bin.join("postgres"));
        args.extend([
            "-D".to_string(),
            data.display().to_string(),
            "-p".into(),
            port.to_string(),
            "-k".into(),
            socket_dir.display().to_string(),
            "-c".into(),
            "listen_addresses=127.0.0.1".into(),
            "-c".into(),
            "fsync=off".into(),
            "-c".into(),
            "max_connections=50".into(),
        ]);
        for (k, v) in settings {
            args.push("-c".into());
            args.push(format!("{k}={v}"));
        }
        let spec = Spec {
            program,
            args,
            envs,
            grace: Duration::from_secs(5),
            cleanup: vec![dir.clone()],
        };
        let server = Some(Supervised::spawn(spec, &dir));
        let pg = Postgres {
            port,
            socket_dir,
            bin,
            password,
            dir,
            server,
        };
        pg.server
            .as_ref()
            .unwrap()
            .wait_ready(READY_TIMEOUT, || {
                pg.try_psql("postgres", "SELECT 1")
                    .is_some_and(|o| o.status.success())
            })
            .unwrap_or_else(|e| panic!("PostgreSQL on port {port}: {e}"));
        pg
    }

    fn try_psql(&self, db: &str, sql: &str) -> Option<Output> {
        let mut c = Command::new(self.bin.join("psql"));
        c.args(["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-h"])
            .arg(&self.socket_dir)
            .args(["-p", &self.port.to_string(), "-U", "postgres", "-d", db]);
        c.env_remove("PGPASSWORD");
        Some(run(&mut c, Some(sql.as_bytes()), Duration::from_secs(120)))
    }

    /// Runs `sql` as the superuser over the socket; panics on failure; the output.
    pub fn psql(&self, db: &str, sql: &str) -> String {
        let out = self.try_psql(db, sql).unwrap();
        assert!(
            out.status.success(),
            "psql on {db} failed: {}\n{sql}",
            lossy(&out.stderr)
        );
        lossy(&out.stdout).trim().to_string()
    }

    /// Creates database `name` and runs `sql` in it.
    pub fn create_db(&self, name: &str, sql: &str) {
        self.psql("postgres", &format!("CREATE DATABASE \"{name}\""));
        self.psql(name, sql);
    }

    /// A `[postgres]` section reaching database `db` over the socket, trusted.
    pub fn toml(&self, db: &str) -> String {
        format!(
            "[postgres]\ndatabase = \"{db}\"\nhost = \"{}\"\nport = {}\nuser = \"postgres\"\nbin_dir = \"{}\"\n",
            self.socket_dir.display(),
            self.port,
            self.bin.display()
        )
    }

    /// A `[postgres]` section reaching `db` over TCP as [`PASSWORD_ROLE`], whose
    /// password is in `passfile` (not written here).
    pub fn toml_tcp(&self, db: &str, passfile: &Path) -> String {
        format!(
            "[postgres]\ndatabase = \"{db}\"\nhost = \"127.0.0.1\"\nport = {}\nuser = \"{PASSWORD_ROLE}\"\npassfile = \"{}\"\nbin_dir = \"{}\"\n",
            self.port,
            passfile.display(),
            self.bin.display()
        )
    }

    /// Each user table's rows of `db`, as text in a stable order: two databases
    /// with equal answers hold the same data.
    pub fn content(&self, db: &str) -> String {
        let tables = self.psql(
            db,
            "SELECT format('%I.%I', schemaname, tablename) FROM pg_tables \
             WHERE schemaname NOT IN ('pg_catalog', 'information_schema') ORDER BY 1",
        );
        tables
            .lines()
            .map(|t| {
                let rows = self.psql(
                    db,
                    &format!("SELECT count(*) || ' ' || coalesce(md5(string_agg(r::text, '|' ORDER BY r::text)), '-') FROM {t} r"),
                );
                format!("{t}: {rows}")
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Waits (at most a minute) until `query`, run in `db`, answers `t`: the
    /// server is in the state a test needs (a session connected, a lock
    /// granted or awaited); `what` names that state for the failure.
    pub fn wait_until(&self, db: &str, query: &str, what: &str) {
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        while self.psql(db, query) != "t" {
            assert!(std::time::Instant::now() < deadline, "never: {what}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Starts `psql` running `sql` in `db` in the background (a session that
    /// holds something while a test runs); kill it when done.
    pub fn background(&self, db: &str, sql: &str) -> std::process::Child {
        Command::new(self.bin.join("psql"))
            .args(["-X", "-q", "-h"])
            .arg(&self.socket_dir)
            .args([
                "-p",
                &self.port.to_string(),
                "-U",
                "postgres",
                "-d",
                db,
                "-c",
                sql,
            ])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap()
    }

    pub fn databases(&self) -> Vec<String> {
        self.psql("postgres", "SELECT datname FROM pg_database ORDER BY 1")
            .lines()
            .map(String::from)
            .collect()
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        // Stopped first (the supervisor removes nothing after a stop it was
        // told to make), then its scratch directory goes.
        drop(self.server.take());
        super::remove_later(&self.dir);
    }
}

/// One PostgreSQL server for the whole test process; tests use their own databases.
pub fn shared_postgres() -> &'static Postgres {
    static PG: OnceLock<Postgres> = OnceLock::new();
    PG.get_or_init(Postgres::start)
}

/// A stand-in data directory for `wal push`/`wal fetch` without a server: a
/// `global/pg_control` with system identifier `system`, and `pg_wal`.
pub fn fake_pgdata(root: &Path, system: u64) -> PathBuf {
    let data = root.join("pgdata");
    fs::create_dir_all(data.join("global")).unwrap();
    fs::create_dir_all(data.join("pg_wal")).unwrap();
    let mut control = system.to_ne_bytes().to_vec();
    control.resize(8192, 0);
    fs::write(data.join("global/pg_control"), control).unwrap();
    data
}
