//! A PostgreSQL server, reached through its own client tools: `pg_dump` streams a
//! dump out, `pg_restore` streams one back in, `psql` asks small questions.
//!
//! Every tool runs with bkp's scrubbed environment ([`crate::child`]) plus the
//! connection settings as libpq variables (`PGHOST`, `PGPORT`, `PGUSER`,
//! `PGPASSFILE`, …) and `--no-password`, so it never prompts. The password
//! stays in the passfile: never an argument, a variable, a log line or a
//! manifest field. A tool's failure is classified from its message into bkp's
//! exit codes: a server that cannot be reached is transient (6); a refused
//! login, a missing database or role, a tool older than the server are
//! configuration errors (3).

use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{Context, Result};

use crate::exit::{coded, Code};

/// Where bkp finds a PostgreSQL database and how it connects (`[postgres]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PostgresPlan {
    pub database: String,
    pub host: Option<String>,
    pub port: Option<u16>,
    pub user: Option<String>,
    pub passfile: Option<PathBuf>,
    pub bin_dir: Option<PathBuf>,
    pub lock_wait_timeout: Duration,
    pub pass_env: Vec<String>,
    pub retention_days: u16,
    /// Count every table's rows in the dump's snapshot, for restores and drills
    /// to check (one more scan of every table on the server).
    pub count_rows: bool,
    /// Also store the cluster's roles and tablespaces with each dump.
    pub globals: bool,
    /// Base backups start with an immediate checkpoint instead of a paced one.
    pub fast_checkpoint: bool,
}

/// The database a restore connects to for `CREATE`, `DROP` and `ALTER DATABASE`.
const MAINTENANCE_DB: &str = "postgres";

/// How much of a tool's standard error bkp keeps to classify it.
const STDERR_KEPT: usize = 16384;

/// How much of it an error message quotes.
const STDERR_QUOTED: usize = 2048;

/// A server, as the plan describes it.
/// What a base backup records of the server besides its files.
#[derive(Debug, Clone)]
pub struct BaseBackup {
    pub server_version: String,
    /// Where its WAL starts, for point-in-time recovery from the archive.
    pub wal: Option<WalStart>,
}

/// The cluster's identity and the WAL position a base backup starts from (the
/// redo point of the last checkpoint before it: at or before the backup's own).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WalStart {
    pub system: u64,
    pub timeline: u32,
    pub lsn: u64,
    pub segment_size: u64,
}

impl WalStart {
    /// Parses `SYSTEM LSN TIMELINE SEGMENT_SIZE`, the LSN as `16/B374D848`.
    fn parse(line: &str) -> Option<WalStart> {
        let mut f = line.split_whitespace();
        let system = f.next()?.parse().ok()?;
        let (hi, lo) = f.next()?.split_once('/')?;
        let lsn = (u64::from_str_radix(hi, 16).ok()? << 32) | u64::from_str_radix(lo, 16).ok()?;
        let timeline = f.next()?.parse().ok()?;
        let segment_size: u64 = f.next()?.parse().ok()?;
        let size_ok = crate::manifest::wal::is_segment_size(segment_size);
        (size_ok && f.next().is_none()).then_some(WalStart {
            system,
            timeline,
            lsn,
            segment_size,
        })
    }

    /// The first WAL segment the backup needs.
    pub fn segment(&self) -> String {
        crate::manifest::wal::segment_name(self.timeline, self.lsn, self.segment_size)
    }
}

pub struct Server<'a> {
    plan: &'a PostgresPlan,
}

/// What a dump recorded about itself, for the manifest.
#[derive(Debug, Clone)]
pub struct Dumped {
    pub pg_dump_version: String,
    pub server_version: String,
    /// Rows per table whose data the dump holds, in the dump's snapshot, keyed
    /// as the dump names the table (`public.accounts`); `None` when
    /// `count_rows` is off.
    pub tables: Option<std::collections::BTreeMap<String, u64>>,
}

/// The tables whose rows `pg_dump` writes: ordinary tables, not temporary ones,
/// not those of extensions (whose configuration tables it dumps by their own
/// rules), as `schema.table` quoted the way `pg_dump` quotes them.
const TABLES: &str = r#"SELECT format('%I.%I', n.nspname, c.relname) AS name, n.nspname, c.relname
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind = 'r' AND c.relpersistence <> 't'
  AND n.nspname NOT IN ('pg_catalog', 'information_schema')
  AND n.nspname NOT LIKE 'pg\_toast%' AND n.nspname NOT LIKE 'pg\_temp%'
  AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_class'::regclass
                  AND d.objid = c.oid AND d.deptype = 'e')"#;

/// Takes `ACCESS SHARE` on every dumped table at once, as `pg_dump` does, so
/// that DDL queued during the dump cannot stall the counting; then an end mark.
fn lock_tables() -> String {
    format!(
        "SELECT format('LOCK TABLE %I.%I IN ACCESS SHARE MODE', nspname, relname) FROM ({TABLES}) t ORDER BY 1 \\gexec\nSELECT 'bkp:end', 0;\n"
    )
}

/// One count per dumped table (`ONLY`: an inheritance parent's rows without its
/// children's, as `pg_dump` writes them), run by `\gexec`; then an end mark.
/// Output fields are NUL-separated.
fn count_rows_script() -> String {
    format!(
        "SELECT format('SELECT %L, count(*) FROM ONLY %I.%I', name, nspname, relname) FROM ({TABLES}) t ORDER BY 1 \\gexec\nSELECT 'bkp:end', 0;\n"
    )
}

/// An open `psql` session: bkp writes statements and reads NUL-separated fields.
struct Session {
    /// Ends psql when bkp is asked to stop; dropped before psql is reaped.
    watch: Option<Watchdog>,
    child: std::process::Child,
    stdin: Option<std::process::ChildStdin>,
    stdout: std::io::BufReader<std::process::ChildStdout>,
    stderr: Option<std::thread::JoinHandle<Vec<u8>>>,
}

impl Session {
    fn open(server: &Server, database: &str) -> Result<Session> {
        let mut c = server.command("psql", database)?;
        c.args(["-X", "-q", "-A", "-t", "-z", "-0", "-v", "ON_ERROR_STOP=1"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = c.spawn().context("failed to start psql")?;
        let stderr = Some(collect_stderr(child.stderr.take()));
        let stdin = child.stdin.take();
        let stdout = std::io::BufReader::new(child.stdout.take().context("no stdout")?);
        Ok(Session {
            watch: Some(Watchdog::new(child.id())),
            child,
            stdin,
            stdout,
            stderr,
        })
    }

    fn send(&mut self, sql: &str) -> Result<()> {
        let stdin = self.stdin.as_mut().context("the psql session is closed")?;
        stdin.write_all(sql.as_bytes())?;
        stdin.flush()?;
        Ok(())
    }

    /// The next field, `None` at the end of the output.
    fn field(&mut self) -> Result<Option<String>> {
        use std::io::BufRead;
        let mut buf = Vec::new();
        if self.stdout.read_until(0, &mut buf)? == 0 {
            return Ok(None);
        }
        if buf.last() == Some(&0) {
            buf.pop();
        }
        Ok(Some(String::from_utf8_lossy(&buf).into_owned()))
    }

    fn count_rows(&mut self) -> Result<std::collections::BTreeMap<String, u64>> {
        self.send(&count_rows_script())?;
        self.pairs()
    }

    /// Name and number pairs up to the end mark.
    fn pairs(&mut self) -> Result<std::collections::BTreeMap<String, u64>> {
        let mut counts = std::collections::BTreeMap::new();
        loop {
            let (Some(name), Some(n)) = (self.field()?, self.field()?) else {
                anyhow::bail!("psql ended before counting every table");
            };
            if name == "bkp:end" {
                return Ok(counts);
            }
            counts.insert(
                name,
                n.parse()
                    .context("psql printed a count that is not a number")?,
            );
        }
    }

    /// Ends the session and fails if psql did.
    fn close(mut self, what: &impl Fn() -> String) -> Result<()> {
        drop(self.stdin.take());
        let status = wait_interruptible(&mut self.child)?;
        drop(self.watch.take());
        interrupted(what)?;
        let stderr = self.stderr.take().map(|h| h.join().unwrap_or_default());
        check_status(&status, &stderr.unwrap_or_default(), || {
            format!("the snapshot session of {}", what())
        })
    }

    /// The error psql ended with, once it has ended (it is stopped first).
    fn failure(&mut self, tool: &str, what: &impl Fn() -> String) -> anyhow::Error {
        drop(self.stdin.take());
        drop(self.watch.take());
        let _ = self.child.kill();
        let status = self.child.wait();
        if let Err(e) = interrupted(what) {
            return e;
        }
        let stderr = self
            .stderr
            .take()
            .map(|h| h.join().unwrap_or_default())
            .unwrap_or_default();
        match status {
            Ok(s) if !s.success() => check_status(&s, &stderr, || {
                format!("{tool} (the snapshot session of {})", what())
            })
            .err()
            .unwrap_or_else(|| anyhow::anyhow!("{tool} failed")),
            _ => anyhow::anyhow!(
                "{tool} (the snapshot session of {}) stopped answering: {}",
                what(),
                String::from_utf8_lossy(&stderr).trim()
            ),
        }
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        drop(self.watch.take());
        if self.stdin.is_some() {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

/// What part of a dump a restore applies: whole schemas (`pg_restore
/// --schema`), or tables (`--schema` and `--table`), checked by
/// `commands::restore::pgdump` against the dump's record first.
#[derive(Debug, Clone, Default)]
pub struct Selection {
    pub schemas: Vec<String>,
    /// `(schema, table)`.
    pub tables: Vec<(String, String)>,
    /// `pg_restore --no-owner --no-privileges`.
    pub no_owner: bool,
}

impl Selection {
    /// Whether only part of the dump is chosen.
    pub fn is_partial(&self) -> bool {
        !(self.schemas.is_empty() && self.tables.is_empty())
    }

    /// `pg_restore`'s `--schema` and `--table` values.
    fn arguments(&self) -> (Vec<String>, Vec<String>) {
        let mut schemas = self.schemas.clone();
        let mut tables: Vec<String> = Vec::new();
        for (s, t) in &self.tables {
            if !schemas.contains(s) {
                schemas.push(s.clone());
            }
            if !tables.contains(t) {
                tables.push(t.clone());
            }
        }
        (schemas, tables)
    }
}

/// `schema.table` as `pg_dump` and `format('%I.%I')` write it, split and
/// unquoted: `"My ""T"".x".y` → (`My "T".x`, `y`). `None` if it is not two names.
pub fn split_qualified(name: &str) -> Option<(String, String)> {
    let mut parts = Vec::new();
    let mut chars = name.chars().peekable();
    loop {
        let mut part = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            loop {
                match chars.next()? {
                    '"' if chars.peek() == Some(&'"') => {
                        chars.next();
                        part.push('"');
                    }
                    '"' => break,
                    c => part.push(c),
                }
            }
        } else {
            while let Some(&c) = chars.peek() {
                if c == '.' {
                    break;
                }
                part.push(c);
                chars.next();
            }
        }
        parts.push(part);
        match chars.next() {
            None => break,
            Some('.') => continue,
            Some(_) => return None,
        }
    }
    match <[String; 2]>::try_from(parts) {
        Ok([s, t]) if !s.is_empty() && !t.is_empty() => Some((s, t)),
        _ => None,
    }
}

impl<'a> Server<'a> {
    pub fn new(plan: &'a PostgresPlan) -> Self {
        Server { plan }
    }

    /// How the server is named in messages: `database on host:port`, never
    /// with a password (there is none to show).
    pub fn describe(&self, database: &str) -> String {
        let p = self.plan;
        format!(
            "database {database:?} on {}{}",
            p.host.as_deref().unwrap_or("the local socket"),
            p.port.map(|n| format!(" port {n}")).unwrap_or_default()
        )
    }

    /// The path of one PostgreSQL tool: in `bin_dir` when set, else on the search
    /// path, else in the newest `/usr/lib/postgresql/*/bin` (Debian's layout).
    pub fn tool(&self, name: &str) -> Result<PathBuf> {
        find_tool(self.plan.bin_dir.as_deref(), name)
    }

    /// A command for tool `name` connecting to `database`, with the connection
    /// settings in its environment and nothing else of bkp's but the harmless.
    fn command(&self, name: &str, database: &str) -> Result<Command> {
        let p = self.plan;
        check_passfile(p.passfile.as_deref())?;
        let mut c = crate::child::command(self.tool(name)?, &p.pass_env);
        c.env("PGDATABASE", database)
            .env("PGAPPNAME", "bkp")
            .env("PGCONNECT_TIMEOUT", "30");
        if let Some(h) = &p.host {
            c.env("PGHOST", h);
        }
        if let Some(port) = p.port {
            c.env("PGPORT", port.to_string());
        }
        if let Some(u) = &p.user {
            c.env("PGUSER", u);
        }
        if let Some(f) = &p.passfile {
            c.env("PGPASSFILE", f);
        }
        c.arg("--no-password");
        Ok(c)
    }

    /// The version of tool `name` (`pg_dump (PostgreSQL) 15.18 (Debian …)` →
    /// `15.18`).
    pub fn tool_version(&self, name: &str) -> Result<String> {
        let path = self.tool(name)?;
        let out = crate::child::command(&path, &[])
            .arg("--version")
            .output()
            .with_context(|| format!("failed to run {}", path.display()))?;
        let text = String::from_utf8_lossy(&out.stdout);
        Ok(text
            .split_whitespace()
            .nth(2)
            .unwrap_or("unknown")
            .to_string())
    }

    /// Runs one psql script against `database`, with `vars` as psql variables
    /// (quoted by psql itself where the script writes `:'name'` or `:"name"`),
    /// and returns what it printed (unaligned, tuples only).
    pub fn psql(&self, database: &str, script: &str, vars: &[(&str, &str)]) -> Result<String> {
        let mut c = self.command("psql", database)?;
        c.args(["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1"]);
        for (k, v) in vars {
            c.arg("-v").arg(format!("{k}={v}"));
        }
        let out = run_with_input(c, script.as_bytes(), "psql")?;
        let what = || format!("psql on {}", self.describe(database));
        check_status(&out.status, &out.stderr, what)?;
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    }

    /// `SHOW server_version` of the server, through the configured database.
    pub fn server_version(&self) -> Result<String> {
        self.psql(&self.plan.database, "SHOW server_version;\n", &[])
    }

    /// Streams a custom-format dump of the configured database into `w`
    /// (uncompressed: bkp's own compression follows), and counts each table's
    /// rows in the same snapshot: a session of bkp's exports its snapshot,
    /// `pg_dump --snapshot` reads it, and the session counts while the dump
    /// streams, holding the snapshot until the dump is done.
    pub fn dump(&self, w: &mut dyn Write) -> Result<Dumped> {
        let db = &self.plan.database;
        let pg_dump_version = self.tool_version("pg_dump")?;
        let what = || format!("pg_dump of {}", self.describe(db));
        let mut session = Session::open(self, db)?;
        // psql that could not connect has exited already: the write then fails
        // with a broken pipe, and psql's own message says why (unreachable: 6).
        if session
            .send(&format!(
                "SET lock_timeout = {};\nBEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY;\nSELECT current_setting('server_version'), pg_export_snapshot();\n",
                self.plan.lock_wait_timeout.as_millis()
            ))
            .is_err()
        {
            return Err(session.failure("psql", &what));
        }
        let (server_version, snapshot) = match (session.field(), session.field()) {
            (Ok(Some(v)), Ok(Some(s))) => (v, s),
            _ => return Err(session.failure("psql", &what)),
        };
        if session.send(&lock_tables()).is_err() || session.pairs().is_err() {
            return Err(session.failure("psql", &what));
        }
        let mut c = self.command("pg_dump", db)?;
        c.args(["--format=custom", "--compress=0"])
            .arg(format!("--snapshot={snapshot}"))
            .arg(format!(
                "--lock-wait-timeout={}",
                self.plan.lock_wait_timeout.as_millis()
            ));
        let psql_pid = session.child.id();
        let count = self.plan.count_rows;
        let (dumped, counted) = std::thread::scope(|s| {
            let counter = s.spawn(|| match count {
                true => session.count_rows().map(Some),
                false => Ok(None),
            });
            let dumped = stream_out(c, w, what);
            if dumped.is_err() {
                // The counts are of no use now: end the session instead of
                // waiting for them. It is not reaped yet, so the pid is its own.
                terminate(psql_pid);
            }
            (dumped, counter.join())
        });
        dumped?;
        let tables = match counted {
            Ok(Ok(t)) => t,
            _ => return Err(session.failure("psql", &what)),
        };
        if session.send("COMMIT;\n").is_err() {
            return Err(session.failure("psql", &what));
        }
        session.close(&what)?;
        Ok(Dumped {
            pg_dump_version,
            server_version,
            tables,
        })
    }

    /// Streams the cluster's roles and tablespaces as SQL into `w` (`pg_dumpall
    /// --globals-only --no-role-passwords`: no password hashes are stored).
    pub fn dump_globals(&self, w: &mut dyn Write) -> Result<()> {
        let mut c = self.command("pg_dumpall", &self.plan.database)?;
        // `-l`: the database to read the globals through (a checked name).
        c.args(["--globals-only", "--no-role-passwords", "-l"])
            .arg(&self.plan.database);
        stream_out(c, w, || {
            format!(
                "pg_dumpall --globals-only of the server of {}",
                self.describe(&self.plan.database)
            )
        })
    }

    /// Streams a base backup of the whole server into `w`: `pg_basebackup` in tar
    /// format, with the WAL the backup needs to be consistent (`-X fetch`) and
    /// its `backup_manifest`, which `pg_verifybackup` checks after a restore.
    /// Returns the server's version and where the backup's WAL starts. With
    /// `signed` (this host signs its backups, and a signer's backup must name
    /// its system) a server whose system cannot be read is refused before
    /// anything is streamed.
    pub fn base_backup(&self, w: &mut dyn Write, label: &str, signed: bool) -> Result<BaseBackup> {
        // One session for what the manifest records and what refuses the backup.
        let facts = self.psql(
            &self.plan.database,
            "SELECT current_setting('server_version');\n\
             SELECT coalesce(string_agg(spcname, ', '), '') FROM pg_tablespace WHERE spcname NOT IN ('pg_default', 'pg_global');\n\
             SELECT s.system_identifier || ' ' || c.redo_lsn || ' ' || c.timeline_id || ' ' || i.bytes_per_wal_segment \
             FROM pg_control_system() s, pg_control_checkpoint() c, pg_control_init() i;\n",
            &[],
        )?;
        let mut lines = facts.lines();
        let server_version = lines.next().unwrap_or("unknown").trim().to_string();
        let spaces = lines.next().unwrap_or("").trim().to_string();
        let wal = lines.next().and_then(WalStart::parse);
        if signed && wal.is_none() {
            return Err(coded(
                Code::Config,
                format!(
                    "the server of {} answered its system identifier and WAL position (pg_control_system(), pg_control_checkpoint(), pg_control_init()) in a form bkp cannot read, and this host signs its backups: a signer's base backup must name its system, or every reader refuses it. Nothing was stored; run `SELECT * FROM pg_control_system()` there to see what it answers",
                    self.describe(&self.plan.database)
                ),
            ));
        }
        // pg_basebackup writes only one tablespace to a pipe.
        if !spaces.is_empty() {
            return Err(coded(
                Code::Unsupported,
                format!(
                    "the server has tablespaces besides the default ({spaces}), and bkp streams a base backup as one tar, which holds one tablespace: back this server up with pg_dump (bkp export --kind pgdump) until bkp supports tablespaces"
                ),
            ));
        }
        let mut c = self.command("pg_basebackup", &self.plan.database)?;
        c.args(["--pgdata=-", "--format=tar", "--wal-method=fetch"])
            .arg(format!("--label={label}"))
            .arg(if self.plan.fast_checkpoint {
                "--checkpoint=fast"
            } else {
                "--checkpoint=spread"
            });
        let mut sniffer = LabelSniffer::new(w);
        stream_out(c, &mut sniffer, || {
            format!(
                "pg_basebackup of the server of {}",
                self.describe(&self.plan.database)
            )
        })?;
        // The backup's own start, from its backup_label, where the redo point
        // of the checkpoint before it is only a lower bound.
        let wal = match (wal, sniffer.label.as_deref().and_then(label_start)) {
            (Some(w), Some((timeline, lsn))) => Some(WalStart { timeline, lsn, ..w }),
            (w, _) => w,
        };
        let what = || self.describe(&self.plan.database);
        let wal = same_system(wal, sniffer.control_system(), what)?;
        Ok(BaseBackup {
            server_version,
            wal,
        })
    }

    /// Rows per table of `database` whose data a dump would hold, keyed as
    /// [`Dumped::tables`] is.
    pub fn count_rows(&self, database: &str) -> Result<std::collections::BTreeMap<String, u64>> {
        let what = || self.describe(database);
        let mut session = Session::open(self, database)?;
        match session.count_rows() {
            Ok(counts) => {
                session.close(&what)?;
                Ok(counts)
            }
            Err(_) => Err(session.failure("psql", &what)),
        }
    }

    /// Whether `database` exists on the server.
    pub fn database_exists(&self, database: &str) -> Result<bool> {
        let out = self.psql(
            MAINTENANCE_DB,
            "SELECT count(*) FROM pg_database WHERE datname = :'name';\n",
            &[("name", database)],
        )?;
        Ok(out == "1")
    }

    /// `CREATE DATABASE` from `template0`, owned by the role bkp connects as,
    /// that no other role may connect to until [`Server::grant_public`]: a
    /// restore's staging database must take no objects from other roles of
    /// the server before it is checked and put in place. It is created taking
    /// no sessions at all, PUBLIC's CONNECT and TEMPORARY are revoked, and only
    /// then does it take sessions: there is no instant in which another role
    /// could connect.
    pub fn create_database(&self, database: &str) -> Result<()> {
        self.psql(
            MAINTENANCE_DB,
            "CREATE DATABASE :\"name\" TEMPLATE template0 ALLOW_CONNECTIONS false;\nREVOKE ALL ON DATABASE :\"name\" FROM PUBLIC;\nALTER DATABASE :\"name\" WITH ALLOW_CONNECTIONS true;\n",
            &[("name", database)],
        )
        .map(drop)
    }

    /// Gives PUBLIC on `database` what it has on a new database (CONNECT,
    /// TEMPORARY), which [`Server::create_database`] revoked.
    pub fn grant_public(&self, database: &str) -> Result<()> {
        self.psql(
            MAINTENANCE_DB,
            "GRANT CONNECT, TEMPORARY ON DATABASE :\"name\" TO PUBLIC;\n",
            &[("name", database)],
        )
        .map(drop)
    }

    /// Lets no new session into `database` and ends those connected to it (not
    /// bkp's own: it holds none there), so that it can be renamed or dropped.
    /// Works on every server version (`DROP DATABASE … WITH (FORCE)` needs 13).
    pub fn fence(&self, database: &str) -> Result<()> {
        self.psql(
            MAINTENANCE_DB,
            "SELECT format('ALTER DATABASE %I WITH ALLOW_CONNECTIONS false', datname) FROM pg_database WHERE datname = :'name' \\gexec\nSELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE datname = :'name' AND pid <> pg_backend_pid();\n",
            &[("name", database)],
        )
        .map(drop)
    }

    /// Lets sessions into `database` again.
    pub fn open(&self, database: &str) -> Result<()> {
        self.psql(
            MAINTENANCE_DB,
            "ALTER DATABASE :\"name\" WITH ALLOW_CONNECTIONS true;\n",
            &[("name", database)],
        )
        .map(drop)
    }

    /// Fences `database` and drops it, if it exists.
    pub fn drop_database(&self, database: &str) -> Result<()> {
        self.fence(database)?;
        self.retry_busy(|| {
            self.psql(
                MAINTENANCE_DB,
                "DROP DATABASE IF EXISTS :\"name\";\n",
                &[("name", database)],
            )
        })
    }

    /// `ALTER DATABASE … RENAME TO …` of a fenced database.
    pub fn rename_database(&self, from: &str, to: &str) -> Result<()> {
        self.retry_busy(|| {
            self.psql(
                MAINTENANCE_DB,
                "ALTER DATABASE :\"from\" RENAME TO :\"to\";\n",
                &[("from", from), ("to", to)],
            )
        })
    }

    /// Runs `op` again for up to 5 s while sessions that were just ended are
    /// still leaving ("is being accessed by other users").
    fn retry_busy(&self, op: impl Fn() -> Result<String>) -> Result<()> {
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        loop {
            match op() {
                Ok(_) => return Ok(()),
                Err(e)
                    if format!("{e:#}").contains("is being accessed by other users")
                        && std::time::Instant::now() < deadline =>
                {
                    std::thread::sleep(Duration::from_millis(200));
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Applies the custom-format dump read from `input` to `database` with
    /// `pg_restore`, stopping at the first error. A selection's schemas are
    /// created first: `pg_restore --schema` restores what is in a schema, not
    /// the schema itself.
    pub fn restore(&self, database: &str, input: &mut dyn Read, sel: &Selection) -> Result<()> {
        // `--dbname` takes a name checked by `check_database_name`: with an `=`
        // in it, libpq would read it as a connection string.
        check_database_name(database)?;
        let (schemas, tables) = sel.arguments();
        for s in schemas.iter().filter(|s| *s != "public") {
            self.psql(
                database,
                "CREATE SCHEMA IF NOT EXISTS :\"name\";\n",
                &[("name", s)],
            )?;
        }
        let mut c = self.command("pg_restore", database)?;
        c.args(["--exit-on-error", "--dbname", database]);
        if sel.no_owner {
            c.args(["--no-owner", "--no-privileges"]);
        }
        for s in &schemas {
            c.arg("--schema").arg(s);
        }
        for t in &tables {
            c.arg("--table").arg(t);
        }
        let what = || format!("pg_restore into {}", self.describe(database));
        let restored = stream_in(c, input, what);
        match restored {
            Err(e) if sel.is_partial() && format!("{e:#}").contains("does not exist") => Err(coded(
                Code::Config,
                format!(
                    "{e:#}\nThe chosen schemas and tables depend on something they leave out (a foreign key, a type, a function of another schema): add it with --schema or --table"
                ),
            )),
            other => other,
        }
    }
}

/// Reads a whole custom-format dump from `input` with `pg_restore` (no server:
/// it writes the SQL script it would run) and counts the rows of each table's
/// data, keyed by the table as the dump names it (`public.accounts`). Every
/// data block is decoded, so a dump that does not parse fails here.
pub fn scan_archive(
    bin_dir: Option<&Path>,
    input: &mut dyn Read,
) -> Result<std::collections::BTreeMap<String, u64>> {
    let path = find_tool(bin_dir, "pg_restore")?;
    let mut c = crate::child::command(&path, &[]);
    c.arg("--file=-")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = c.spawn().context("failed to start pg_restore")?;
    let stderr = collect_stderr(child.stderr.take());
    let stdout = child.stdout.take().context("no stdout")?;
    let mut stdin = child.stdin.take().context("no stdin")?;
    let (copied, counted) = std::thread::scope(|s| {
        let counter = s.spawn(move || count_copy_rows(std::io::BufReader::new(stdout)));
        let copied = copy_interruptible(input, &mut stdin);
        drop(stdin);
        (copied, counter.join())
    });
    if copied.is_err() {
        let _ = child.kill();
    }
    let status = child.wait()?;
    let stderr = stderr.join().unwrap_or_default();
    if !status.success() {
        return Err(coded(
            Code::Integrity,
            format!(
                "pg_restore could not read the dump ({status}): {}",
                String::from_utf8_lossy(&stderr).trim()
            ),
        ));
    }
    copied?;
    counted.map_err(|_| anyhow::anyhow!("the row counter failed"))?
}

/// Counts the rows of each `COPY … FROM stdin;` block of a SQL script.
fn count_copy_rows(r: impl std::io::BufRead) -> Result<std::collections::BTreeMap<String, u64>> {
    let mut counts = std::collections::BTreeMap::new();
    let mut current: Option<(String, u64)> = None;
    for line in r.split(b'\n') {
        let line = line?;
        match &mut current {
            Some((table, n)) => {
                if line == b"\\." {
                    counts.insert(std::mem::take(table), *n);
                    current = None;
                } else {
                    *n += 1;
                }
            }
            None => {
                if let Some(rest) = line.strip_prefix(b"COPY ") {
                    if line.ends_with(b"FROM stdin;") {
                        current = Some((copy_target(&String::from_utf8_lossy(rest)), 0));
                    }
                }
            }
        }
    }
    if let Some((table, _)) = current {
        anyhow::bail!("the data of {table} ends without its end marker");
    }
    Ok(counts)
}

/// The table of a `COPY` line's rest (`public."a (b" (x, y) FROM stdin;`): the
/// qualified name up to the first space outside quotes.
fn copy_target(rest: &str) -> String {
    let mut quoted = false;
    for (i, c) in rest.char_indices() {
        match c {
            '"' => quoted = !quoted,
            ' ' if !quoted => return rest[..i].to_string(),
            _ => {}
        }
    }
    rest.to_string()
}

/// The `pg_verifybackup` to check a base backup of a server of
/// `server_version` with: in `bin_dir` when set, else that major version's
/// Debian directory, else as [`find_tool`] finds it; with its `pg_waldump`
/// beside it. Found before anything is downloaded.
pub fn base_backup_verifier(
    bin_dir: Option<&Path>,
    server_version: Option<&str>,
) -> Result<PathBuf> {
    let major = server_version.and_then(|v| v.split(['.', ' ']).next()?.parse::<u32>().ok());
    let own = major
        .map(|m| PathBuf::from(format!("/usr/lib/postgresql/{m}/bin")))
        .filter(|d| bin_dir.is_none() && d.join("pg_verifybackup").is_file());
    let path = match own {
        Some(d) => d.join("pg_verifybackup"),
        None => find_tool(bin_dir, "pg_verifybackup")?,
    };
    let waldump = path.with_file_name("pg_waldump");
    if !waldump.is_file() {
        return Err(coded(
            Code::Config,
            format!(
                "pg_verifybackup ({}) needs pg_waldump beside it to check the backup's WAL: install the PostgreSQL client tools of the server's version{} or set postgres.bin_dir",
                path.display(),
                major.map(|m| format!(" ({m})")).unwrap_or_default()
            ),
        ));
    }
    Ok(path)
}

/// Checks a restored base backup in `dir` against its `backup_manifest` with
/// `verifier` (`pg_verifybackup`): every file's size and checksum, and the WAL
/// it needs. Returns how many files the manifest lists.
pub fn verify_base_backup(verifier: &Path, dir: &Path) -> Result<usize> {
    let manifest = std::fs::read_to_string(dir.join("backup_manifest")).map_err(|e| {
        coded(
            Code::Integrity,
            format!("the base backup holds no readable backup_manifest ({e})"),
        )
    })?;
    let files =
        manifest.matches("\"Path\":").count() + manifest.matches("\"Encoded-Path\":").count();
    let path = verifier;
    let out = crate::child::command(path, &[])
        .arg(dir)
        .output()
        .with_context(|| format!("failed to run {}", path.display()))?;
    if !out.status.success() {
        return Err(coded(
            Code::Integrity,
            format!(
                "pg_verifybackup finds the restored base backup damaged: {}",
                essence(&String::from_utf8_lossy(&out.stderr))
            ),
        ));
    }
    Ok(files)
}

/// Refuses a database name that libpq would read as something else.
pub fn check_database_name(name: &str) -> Result<()> {
    if name.is_empty()
        || name.len() > 63
        || name.contains('=')
        || name.contains('\0')
        || name.starts_with("postgres://")
        || name.starts_with("postgresql://")
    {
        return Err(coded(
            Code::Config,
            format!(
                "{name:?} is not a database name bkp restores into: use 1 to 63 bytes without '=' (not a connection string)"
            ),
        ));
    }
    Ok(())
}

/// Finds PostgreSQL tool `name`.
pub fn find_tool(bin_dir: Option<&Path>, name: &str) -> Result<PathBuf> {
    if let Some(dir) = bin_dir {
        let p = dir.join(name);
        if p.is_file() {
            return Ok(p);
        }
        return Err(coded(
            Code::Config,
            format!(
                "{name} is not in postgres.bin_dir {}: point bin_dir at the directory of the PostgreSQL tools (Debian: /usr/lib/postgresql/VERSION/bin)",
                dir.display()
            ),
        ));
    }
    let on_path = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join(name))
            .find(|p| p.is_file())
    });
    if let Some(p) = on_path {
        return Ok(p);
    }
    if let Some(dir) = newest_debian_bin() {
        let p = dir.join(name);
        if p.is_file() {
            return Ok(p);
        }
    }
    Err(coded(
        Code::Config,
        format!(
            "{name} not found on the search path or under /usr/lib/postgresql: install PostgreSQL's client tools (Debian: apt install postgresql-client) or set postgres.bin_dir"
        ),
    ))
}

/// The newest `/usr/lib/postgresql/N/bin`, if any.
fn newest_debian_bin() -> Option<PathBuf> {
    std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let v: u32 = e.file_name().to_str()?.parse().ok()?;
            Some((v, e.path().join("bin")))
        })
        .max_by_key(|(v, _)| *v)
        .map(|(_, p)| p)
}

/// libpq ignores a passfile that others may read, and then fails with "no
/// password supplied": say so up front, naming the file.
fn check_passfile(passfile: Option<&Path>) -> Result<()> {
    let Some(f) = passfile else {
        return Ok(());
    };
    let meta = std::fs::metadata(f).map_err(|e| {
        coded(
            Code::Config,
            format!(
                "postgres.passfile {} cannot be read ({e}): create it in the .pgpass format (host:port:database:user:password) with mode 0600",
                f.display()
            ),
        )
    })?;
    if meta.permissions().mode() & 0o077 != 0 {
        return Err(coded(
            Code::Config,
            format!(
                "postgres.passfile {} may be read by other users (mode {:o}), and PostgreSQL's tools ignore such a file: chmod 600 {}",
                f.display(),
                meta.permissions().mode() & 0o777,
                f.display()
            ),
        ));
    }
    Ok(())
}

/// Runs `c` with `input` on its standard input; collects its output.
fn run_with_input(mut c: Command, input: &[u8], name: &str) -> Result<std::process::Output> {
    c.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = c
        .spawn()
        .with_context(|| format!("failed to start {name}"))?;
    let mut stdin = child.stdin.take().context("no stdin")?;
    let input = input.to_vec();
    let writer = std::thread::spawn(move || stdin.write_all(&input));
    let out = child
        .wait_with_output()
        .with_context(|| format!("failed to run {name}"))?;
    // A tool that exits early closes its input: its status says why.
    let _ = writer.join();
    Ok(out)
}

/// Runs `c`, copying its standard output into `w`.
fn stream_out(mut c: Command, w: &mut dyn Write, what: impl Fn() -> String) -> Result<()> {
    c.stdin(Stdio::null()).stdout(Stdio::piped());
    run_streaming(c, what, "was not stored", |child| {
        let mut out = child.stdout.take().context("no stdout")?;
        copy_interruptible(&mut out, w)
    })
}

/// Passes a tar stream through and keeps the content of its `backup_label`
/// entry (a few hundred bytes) and the first bytes of `global/pg_control`
/// (the system identifier), read from the headers as they go by.
struct LabelSniffer<'a> {
    inner: &'a mut dyn Write,
    header: Vec<u8>,
    /// Bytes of the current entry's data (padded to 512) still to pass.
    remaining: u64,
    /// Bytes of the current entry still to keep, and where.
    keep: u64,
    keeping: Keeping,
    label: Option<Vec<u8>>,
    control: Option<Vec<u8>>,
    done: bool,
}

/// The entry whose bytes a [`LabelSniffer`] keeps.
#[derive(Clone, Copy)]
enum Keeping {
    Label,
    Control,
}

/// Bytes of `global/pg_control` kept: its first member, the system identifier.
const CONTROL_KEPT: u64 = 8;

impl<'a> LabelSniffer<'a> {
    fn new(inner: &'a mut dyn Write) -> Self {
        LabelSniffer {
            inner,
            header: Vec::with_capacity(512),
            remaining: 0,
            keep: 0,
            keeping: Keeping::Label,
            label: None,
            control: None,
            done: false,
        }
    }

    fn scan(&mut self, mut buf: &[u8]) {
        while !buf.is_empty() && !self.done {
            if self.remaining > 0 {
                let n = (self.remaining.min(buf.len() as u64)) as usize;
                if self.keep > 0 {
                    let k = (self.keep.min(n as u64)) as usize;
                    let into = match self.keeping {
                        Keeping::Label => self.label.as_mut(),
                        Keeping::Control => self.control.as_mut(),
                    };
                    if let Some(l) = into {
                        l.extend_from_slice(&buf[..k]);
                    }
                    self.keep -= k as u64;
                }
                self.remaining -= n as u64;
                buf = &buf[n..];
                continue;
            }
            let n = (512 - self.header.len()).min(buf.len());
            self.header.extend_from_slice(&buf[..n]);
            buf = &buf[n..];
            if self.header.len() < 512 {
                return;
            }
            let h = std::mem::take(&mut self.header);
            if h.iter().all(|b| *b == 0) {
                self.done = true;
                return;
            }
            let name_end = h[..100].iter().position(|b| *b == 0).unwrap_or(100);
            let name = &h[..name_end];
            let name = name.strip_prefix(b"./").unwrap_or(name);
            let Some(size) = tar_size(&h[124..136]) else {
                // Not a header this sniffer understands: stop looking.
                self.done = true;
                return;
            };
            self.remaining = size.div_ceil(512) * 512;
            if name == b"backup_label" && size <= 64 * 1024 {
                self.label = Some(Vec::new());
                (self.keep, self.keeping) = (size, Keeping::Label);
            } else if name == b"global/pg_control" && size >= CONTROL_KEPT {
                self.control = Some(Vec::new());
                (self.keep, self.keeping) = (CONTROL_KEPT, Keeping::Control);
            }
        }
    }

    /// The system identifier `global/pg_control` holds, read in this host's
    /// byte order and in the other (the file is in the server's).
    fn control_system(&self) -> Option<[u64; 2]> {
        let b: [u8; 8] = self.control.as_deref()?.try_into().ok()?;
        let native = u64::from_ne_bytes(b);
        Some([native, native.swap_bytes()])
    }
}

impl Write for LabelSniffer<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.scan(&buf[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// The size field of a tar header: octal digits, or (GNU, for 8 GiB and
/// more, as a server log in the data directory may be) base-256, flagged by
/// the high bit of its first byte.
fn tar_size(field: &[u8]) -> Option<u64> {
    if let Some((&first, rest)) = field.split_first().filter(|(f, _)| **f & 0x80 != 0) {
        if first != 0x80 || rest.len() > 8 && rest[..rest.len() - 8].iter().any(|b| *b != 0) {
            return None;
        }
        return Some(rest.iter().fold(0u64, |n, b| (n << 8) | u64::from(*b)));
    }
    let text = std::str::from_utf8(field).ok()?;
    u64::from_str_radix(text.trim_matches(|c: char| c == '\0' || c == ' '), 8).ok()
}

/// `wal`, the start the server's functions reported, once the system they
/// name is the one whose `global/pg_control` the stream held (`control`, in
/// this host's byte order and the other; `None` where the stream held
/// none): the session that asked and `pg_basebackup` connect apart, and a
/// host name or proxy that moved to another cluster between them would
/// record one cluster's WAL for another's files. (A promoted standby keeps
/// its primary's system, and the backup's own start comes from its label.)
fn same_system(
    wal: Option<WalStart>,
    control: Option<[u64; 2]>,
    what: impl Fn() -> String,
) -> Result<Option<WalStart>> {
    match (&wal, control) {
        (Some(w), Some(c)) if !c.contains(&w.system) => Err(coded(
            Code::Transient,
            format!(
                "the server of {} reported system identifier {}, but the base backup pg_basebackup streamed is of system {}: the two connections reached different PostgreSQL clusters (a host name, port or proxy that points at another cluster now, or pointed there a moment ago). Nothing was stored; check where the config's host and port lead, and run the backup again",
                what(),
                w.system,
                c[0]
            ),
        )),
        _ => Ok(wal),
    }
}

/// `START WAL LOCATION: 0/9000028 (file …)` and `START TIMELINE: 1` of a
/// backup_label: the timeline and position the backup starts at.
fn label_start(label: &[u8]) -> Option<(u32, u64)> {
    let text = std::str::from_utf8(label).ok()?;
    let mut lsn = None;
    let mut timeline = None;
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("START WAL LOCATION: ") {
            let loc = rest.split_whitespace().next()?;
            let (hi, lo) = loc.split_once('/')?;
            lsn =
                Some((u64::from_str_radix(hi, 16).ok()? << 32) | u64::from_str_radix(lo, 16).ok()?);
        } else if let Some(rest) = line.strip_prefix("START TIMELINE: ") {
            timeline = rest.trim().parse().ok();
        }
    }
    Some((timeline?, lsn?))
}

/// Runs `c`, feeding `input` to its standard input.
fn stream_in(mut c: Command, input: &mut dyn Read, what: impl Fn() -> String) -> Result<()> {
    c.stdin(Stdio::piped()).stdout(Stdio::null());
    run_streaming(c, what, "did not read the whole dump", |child| {
        let mut stdin = child.stdin.take().context("no stdin")?;
        copy_interruptible(input, &mut stdin)
    })
}

/// Runs `c` while `copy` feeds or drains its pipe (closing it when done), then
/// judges the run: an interrupt first, then the tool's own failure, which
/// explains a broken copy better than the copy does.
fn run_streaming(
    mut c: Command,
    what: impl Fn() -> String,
    broken: &str,
    copy: impl FnOnce(&mut std::process::Child) -> Result<u64>,
) -> Result<()> {
    c.stderr(Stdio::piped());
    let mut child = c
        .spawn()
        .with_context(|| format!("failed to start {}", what()))?;
    let stderr = collect_stderr(child.stderr.take());
    let copied = {
        let _watch = Watchdog::new(child.id());
        copy(&mut child)
    };
    if copied.is_err() {
        let _ = child.kill();
    }
    let status = wait_interruptible(&mut child)?;
    let stderr = stderr.join().unwrap_or_default();
    interrupted(&what)?;
    check_status(&status, &stderr, &what)?;
    copied
        .map(drop)
        .with_context(|| format!("{} {broken}", what()))
}

/// The interrupted error, when bkp was asked to stop: the child's own death
/// by bkp's hand is not its failure.
fn interrupted(what: &impl Fn() -> String) -> Result<()> {
    match crate::interrupt::received() {
        Some(signal) => Err(coded(
            Code::Interrupted,
            format!("{} stopped by {}", what(), crate::interrupt::name(signal)),
        )),
        None => Ok(()),
    }
}

/// Waits for `child`, killing it if bkp is asked to stop meanwhile.
fn wait_interruptible(child: &mut std::process::Child) -> Result<std::process::ExitStatus> {
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok(status);
        }
        if crate::interrupt::received().is_some() {
            let _ = child.kill();
            return Ok(child.wait()?);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Sends SIGTERM to `pid`: only for a child bkp has not reaped yet.
fn terminate(pid: u32) {
    if let Ok(pid) = i32::try_from(pid) {
        // SAFETY: kill(2) has no memory-safety preconditions; the pid is a
        // child of ours that has not been waited for, so it is not reused.
        unsafe {
            libc::kill(pid, libc::SIGTERM);
        }
    }
}

/// While it lives, ends child `pid` when bkp is asked to stop, so that a read
/// blocked on the child's pipe (a stalled server) returns. Dropped before the
/// child is reaped.
struct Watchdog {
    done: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Watchdog {
    fn new(pid: u32) -> Watchdog {
        use std::sync::atomic::Ordering;
        let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = done.clone();
        let thread = std::thread::spawn(move || {
            while !flag.load(Ordering::SeqCst) {
                if crate::interrupt::received().is_some() {
                    terminate(pid);
                    return;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        });
        Watchdog {
            done,
            thread: Some(thread),
        }
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        self.done.store(true, std::sync::atomic::Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Copies `r` to `w`, stopping when bkp is asked to stop.
fn copy_interruptible(r: &mut dyn Read, w: &mut dyn Write) -> Result<u64> {
    let mut buf = vec![0u8; 256 * 1024];
    let mut n = 0u64;
    loop {
        if let Some(signal) = crate::interrupt::received() {
            return Err(coded(
                Code::Interrupted,
                format!("stopped by {}", crate::interrupt::name(signal)),
            ));
        }
        let got = match r.read(&mut buf) {
            Ok(0) => break,
            Ok(got) => got,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e.into()),
        };
        w.write_all(&buf[..got])?;
        n += got as u64;
    }
    w.flush()?;
    Ok(n)
}

/// Reads a child's standard error on a thread (so a chatty child never blocks),
/// keeping its last [`STDERR_KEPT`] bytes.
fn collect_stderr(stderr: Option<std::process::ChildStderr>) -> std::thread::JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        let mut kept = Vec::new();
        let Some(mut e) = stderr else {
            return kept;
        };
        let mut buf = [0u8; 8192];
        while let Ok(n) = e.read(&mut buf) {
            if n == 0 {
                break;
            }
            kept.extend_from_slice(&buf[..n]);
            if kept.len() > 2 * STDERR_KEPT {
                kept.drain(..kept.len() - STDERR_KEPT);
            }
        }
        kept
    })
}

/// A tool's exit status as bkp's error, classified by what the tool said.
fn check_status(
    status: &std::process::ExitStatus,
    stderr: &[u8],
    what: impl Fn() -> String,
) -> Result<()> {
    if status.success() {
        return Ok(());
    }
    let text = String::from_utf8_lossy(stderr);
    let (code, hint) = classify(&text);
    let msg = format!("{} failed ({status}): {}{hint}", what(), essence(&text));
    Err(match code {
        Some(code) => coded(code, msg),
        None => anyhow::Error::msg(msg),
    })
}

/// The lines of a tool's message that say what went wrong, without the SQL it
/// ran or the rows it was copying (`Command was:`, `CONTEXT:`, `DETAIL:`), which
/// could carry table data into logs and notifications; at most
/// [`STDERR_QUOTED`] bytes, cut at a character boundary.
fn essence(text: &str) -> String {
    let mut kept = Vec::new();
    let mut skipping = false;
    for line in text.lines() {
        let t = line.trim_start();
        if t.starts_with("Command was:") || t.starts_with("CONTEXT:") || t.starts_with("DETAIL:") {
            skipping = true;
            continue;
        }
        let starts_message = t.starts_with("pg_")
            || t.starts_with("psql")
            || t.starts_with("ERROR:")
            || t.starts_with("FATAL:")
            || t.starts_with("HINT:")
            || t.starts_with("connection to server");
        if skipping && !starts_message {
            continue;
        }
        skipping = false;
        kept.push(line.trim_end());
    }
    let mut out = kept.join("\n");
    if out.is_empty() {
        out = "no message".into();
    }
    if out.len() > STDERR_QUOTED {
        let mut end = STDERR_QUOTED;
        while !out.is_char_boundary(end) {
            end -= 1;
        }
        out.truncate(end);
        out.push('…');
    }
    out
}

/// The exit code class and advice for a PostgreSQL tool's error message.
fn classify(msg: &str) -> (Option<Code>, &'static str) {
    let has = |s: &str| msg.contains(s);
    if has("server version mismatch") || has("aborting because of server version") {
        return (
            Some(Code::Config),
            "\nThe PostgreSQL tools are older than the server: install the server's version of the client tools and set postgres.bin_dir to their directory",
        );
    }
    if has("password authentication failed") || has("no password supplied") {
        return (
            Some(Code::Config),
            "\nThe server asked for a password: put it in a .pgpass file (mode 0600) and name that file in postgres.passfile",
        );
    }
    if has("must be member of role") || has("must be owner of") {
        return (
            Some(Code::Config),
            "\nThe dump's objects belong to roles the restoring role (postgres.user) cannot act for: restore as a superuser or a member of those roles, or pass --no-owner to make the restoring role their owner",
        );
    }
    if has("role \"") && has("does not exist") && has("pg_restore") {
        return (
            Some(Code::Config),
            "\nThe dump names a role this server lacks: create the roles first (pg_dumpall --globals-only on the source server has them), or pass --no-owner",
        );
    }
    if has("does not exist") && (has("database \"") || has("role \"")) {
        return (
            Some(Code::Config),
            "\nCheck postgres.database and postgres.user",
        );
    }
    if has("permission denied") {
        return (
            Some(Code::Config),
            "\nThe role bkp connects as (postgres.user) lacks a privilege: grant it, or connect as a role that has it",
        );
    }
    if has("could not connect")
        || has("Is the server running")
        || has("Connection refused")
        || has("timeout expired")
        || has("the database system is starting up")
        || has("the database system is shutting down")
        || has("the database system is in recovery mode")
        || has("too many clients")
        || has("server closed the connection unexpectedly")
    {
        return (
            Some(Code::Transient),
            "\nThe server could not be reached or refused the connection for now: check that it runs and postgres.host/port, then retry",
        );
    }
    if has("could not obtain lock") || has("canceling statement due to lock timeout") {
        return (
            Some(Code::Transient),
            "\nA table stayed locked longer than postgres.lock_wait_timeout: retry later, or raise the timeout",
        );
    }
    (None, "")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_backup_label_and_system_are_found_in_a_passing_tar_stream() {
        let label = "START WAL LOCATION: 1/9000028 (file 000000010000000100000009)\nCHECKPOINT LOCATION: 1/9000060\nBACKUP METHOD: streamed\nSTART TIMELINE: 3\n";
        let mut b = tar::Builder::new(Vec::new());
        for (name, data) in [
            ("PG_VERSION", b"15\n".to_vec()),
            ("base/1/1259", vec![7u8; 3000]),
            ("backup_label", label.as_bytes().to_vec()),
            ("global/pg_control", {
                let mut c = vec![1u8; 8192];
                c[1..7].fill(0);
                c
            }),
        ] {
            let mut h = tar::Header::new_ustar();
            h.set_size(data.len() as u64);
            h.set_mode(0o600);
            h.set_cksum();
            b.append_data(&mut h, name, &data[..]).unwrap();
        }
        let tar = b.into_inner().unwrap();
        for chunk in [1usize, 7, 511, 512, 4096] {
            let mut out = Vec::new();
            let mut sniffer = LabelSniffer::new(&mut out);
            for piece in tar.chunks(chunk) {
                sniffer.write_all(piece).unwrap();
            }
            let got = sniffer.label.clone().unwrap();
            assert_eq!(
                label_start(&got),
                Some((3, (1 << 32) | 0x900_0028)),
                "chunks of {chunk}"
            );
            let system = u64::from_ne_bytes([1, 0, 0, 0, 0, 0, 0, 1]);
            assert_eq!(sniffer.control_system().map(|c| c[0]), Some(system));
            assert_eq!(out, tar, "the stream passes unchanged");
        }
        assert_eq!(label_start(b"BACKUP METHOD: streamed\n"), None);
    }

    #[test]
    fn a_file_of_8_gib_or_more_does_not_hide_pg_control() {
        assert_eq!(tar_size(b"00000001750\0"), Some(1000));
        assert_eq!(tar_size(b"      1750 \0"), Some(1000));
        let mut big = [0u8; 12];
        big[0] = 0x80;
        big[7..].copy_from_slice(&[0x02, 0x00, 0x00, 0x00, 0x10]);
        assert_eq!(tar_size(&big), Some((2 << 32) + 16));
        big[1] = 1;
        assert_eq!(tar_size(&big), None, "more than 64 bits");
        assert_eq!(tar_size(b"not a size!\0"), None);

        // A server log of 9 GiB before pg_control: its header is in
        // base-256, and the sniffer still finds pg_control after it (the
        // log's data is not built here: the sniffer counts its bytes).
        let mut header = tar::Header::new_gnu();
        header.set_path("log/postgresql.log").unwrap();
        header.set_size(9 << 30);
        header.set_cksum();
        assert_eq!(header.as_bytes()[124] & 0x80, 0x80, "base-256 size");
        let mut out = std::io::sink();
        let mut sniffer = LabelSniffer::new(&mut out);
        sniffer.write_all(header.as_bytes()).unwrap();
        let zeros = vec![0u8; 1 << 20];
        for _ in 0..(9 << 10) {
            sniffer.write_all(&zeros).unwrap();
        }
        let mut control = tar::Header::new_ustar();
        control.set_path("global/pg_control").unwrap();
        control.set_size(8192);
        control.set_cksum();
        sniffer.write_all(control.as_bytes()).unwrap();
        let mut body = vec![0u8; 8192];
        body[..8].copy_from_slice(&7u64.to_ne_bytes());
        sniffer.write_all(&body).unwrap();
        assert_eq!(sniffer.control_system().map(|c| c[0]), Some(7));
    }

    #[test]
    fn a_segment_size_is_read_only_where_postgres_could_have_it() {
        let line = |size: &str| format!("7300000000000000001 16/B374D848 1 {size}");
        assert!(WalStart::parse(&line("16777216")).is_some());
        assert!(WalStart::parse(&line("1073741824")).is_some());
        // PostgreSQL 10 gave the size in 8 kB blocks: 2048 is no size.
        assert!(WalStart::parse(&line("2048")).is_none());
        assert!(WalStart::parse(&line("2147483648")).is_none());
        assert!(WalStart::parse(&line("16777215")).is_none());
    }

    #[test]
    fn a_base_backup_of_another_system_than_the_server_reported_is_refused() {
        let w = |system| WalStart {
            system,
            timeline: 1,
            lsn: 0x200_0028,
            segment_size: 16 << 20,
        };
        let what = || "db".to_string();
        let got = same_system(Some(w(11)), Some([11, 99]), what).unwrap();
        assert_eq!(got, Some(w(11)));
        // The server's byte order is not this host's.
        assert_eq!(
            same_system(Some(w(11)), Some([99, 11]), what).unwrap(),
            Some(w(11))
        );
        assert_eq!(same_system(None, Some([11, 99]), what).unwrap(), None);
        assert_eq!(same_system(Some(w(11)), None, what).unwrap(), Some(w(11)));
        let e = same_system(Some(w(11)), Some([12, 13]), what).unwrap_err();
        assert_eq!(crate::exit::classify(&e), Some(Code::Transient));
        assert!(
            format!("{e:#}").contains("system identifier 11")
                && format!("{e:#}").contains("of system 12")
        );
    }

    #[test]
    fn tool_messages_become_exit_codes() {
        for (msg, code) in [
            ("pg_dump: error: connection to server on socket \"/tmp/.s.PGSQL.5\" failed: No such file or directory\n\tIs the server running locally and accepting connections on that socket?", Some(Code::Transient)),
            ("pg_dump: error: connection to server at \"127.0.0.1\", port 1 failed: Connection refused", Some(Code::Transient)),
            ("connection to server at \"h\" failed: FATAL:  password authentication failed for user \"bkp\"", Some(Code::Config)),
            ("fe_sendauth: no password supplied", Some(Code::Config)),
            ("FATAL:  database \"nope\" does not exist", Some(Code::Config)),
            ("pg_dump: error: aborting because of server version mismatch", Some(Code::Config)),
            ("ERROR:  permission denied for table secrets", Some(Code::Config)),
            ("pg_dump: error: query failed: ERROR:  canceling statement due to lock timeout", Some(Code::Transient)),
            ("FATAL:  the database system is starting up", Some(Code::Transient)),
            ("something else", None),
        ] {
            assert_eq!(classify(msg).0, code, "{msg}");
        }
    }

    #[test]
    fn copy_blocks_are_counted_per_table() {
        let script = b"SET x = 1;\nCOPY public.nocols  FROM stdin;\n\\.\nCOPY public.\"has (paren\" (v) FROM stdin;\n1\n\\.\nCOPY public.a (id, note) FROM stdin;\n1\tx\\ny\n2\t\\N\n\\.\n\nCOPY \"Odd\".\"t b\" (v) FROM stdin;\n\\.\nCOPY public.c FROM stdin;\n7\n\\.\n";
        let counts = count_copy_rows(&script[..]).unwrap();
        assert_eq!(counts.get("public.a"), Some(&2));
        assert_eq!(counts.get("\"Odd\".\"t b\""), Some(&0));
        assert_eq!(counts.get("public.c"), Some(&1));
        assert_eq!(counts.get("public.nocols"), Some(&0));
        assert_eq!(counts.get("public.\"has (paren\""), Some(&1));
        assert_eq!(counts.len(), 5);
        let cut = b"COPY public.a (id) FROM stdin;\n1\n";
        assert!(count_copy_rows(&cut[..]).is_err());
    }

    #[test]
    fn qualified_names_split_as_postgres_quotes_them() {
        let pair = |a: &str, b: &str| Some((a.to_string(), b.to_string()));
        assert_eq!(
            split_qualified("public.accounts"),
            pair("public", "accounts")
        );
        assert_eq!(
            split_qualified("\"My \"\"T\"\".x\".y"),
            pair("My \"T\".x", "y")
        );
        assert_eq!(split_qualified("public.\"a.b\""), pair("public", "a.b"));
        assert_eq!(split_qualified("accounts"), None);
        assert_eq!(split_qualified("a.b.c"), None);
        assert_eq!(split_qualified("\"open.x"), None);
    }

    #[test]
    fn error_messages_keep_the_error_not_the_data() {
        let text = "pg_restore: error: could not execute query: ERROR:  duplicate key\nDETAIL:  Key (id)=(secret-row) already exists.\nCONTEXT:  COPY t, line 1: \"secret-row\tvalue\"\nCommand was: COPY public.t (id) FROM stdin;\nsecret-row\n";
        let e = essence(text);
        assert!(
            e.contains("duplicate key") && !e.contains("secret-row"),
            "{e}"
        );
        let long = format!("ERROR: {}", "é".repeat(3000));
        let e = essence(&long);
        assert!(
            e.len() <= STDERR_QUOTED + 3 && e.ends_with('…'),
            "{}",
            e.len()
        );
    }

    #[test]
    fn names_that_libpq_would_read_otherwise_are_refused() {
        for bad in [
            "",
            "host=evil dbname=x",
            "postgresql://u@h/db",
            &"x".repeat(64),
        ] {
            assert!(check_database_name(bad).is_err(), "{bad:?}");
        }
        for good in ["app", "app restored", "Ünïcode", "a-b.c"] {
            check_database_name(good).unwrap();
        }
    }

    #[test]
    fn a_passfile_others_can_read_is_refused_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("pgpass");
        std::fs::write(&f, "*:*:*:*:secret\n").unwrap();
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o644)).unwrap();
        let e = format!("{:#}", check_passfile(Some(&f)).unwrap_err());
        assert!(e.contains("chmod 600") && !e.contains("secret"), "{e}");
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o600)).unwrap();
        check_passfile(Some(&f)).unwrap();
        let missing = format!(
            "{:#}",
            check_passfile(Some(&dir.path().join("none"))).unwrap_err()
        );
        assert!(missing.contains("postgres.passfile"), "{missing}");
    }
}
