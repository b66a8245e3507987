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
}

/// The database a restore connects to for `CREATE`, `DROP` and `ALTER DATABASE`.
const MAINTENANCE_DB: &str = "postgres";

/// How much of a tool's standard error an error message quotes.
const STDERR_KEPT: usize = 4096;

/// A server, as the plan describes it.
pub struct Server<'a> {
    plan: &'a PostgresPlan,
}

/// What a dump recorded about itself, for the manifest.
#[derive(Debug, Clone)]
pub struct Dumped {
    pub pg_dump_version: String,
    pub server_version: String,
    /// Rows per table whose data the dump holds, in the dump's snapshot, keyed
    /// as the dump names the table (`public.accounts`).
    pub tables: std::collections::BTreeMap<String, u64>,
}

/// The tables whose rows `pg_dump` writes (ordinary tables, not those of
/// extensions), one count query each, run by `\gexec`; then an end mark. Names
/// are quoted as `pg_dump` quotes them. Output fields are NUL-separated.
const COUNT_ROWS: &str = r#"SELECT format('SELECT %L, count(*) FROM %I.%I', format('%I.%I', n.nspname, c.relname), n.nspname, c.relname)
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind = 'r' AND c.relpersistence <> 't'
  AND n.nspname NOT IN ('pg_catalog', 'information_schema')
  AND n.nspname NOT LIKE 'pg\_toast%' AND n.nspname NOT LIKE 'pg\_temp%'
  AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_class'::regclass
                  AND d.objid = c.oid AND d.deptype = 'e')
ORDER BY 1 \gexec
SELECT 'bkp:end', 0;
"#;

/// An open `psql` session: bkp writes statements and reads NUL-separated fields.
struct Session {
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
        self.send(COUNT_ROWS)?;
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
        let status = self.child.wait()?;
        let stderr = self.stderr.take().map(|h| h.join().unwrap_or_default());
        check_status(&status, &stderr.unwrap_or_default(), || {
            format!("the snapshot session of {}", what())
        })
    }

    /// The error psql ended with, once it has ended (it is stopped first).
    fn failure(&mut self, tool: &str, what: &impl Fn() -> String) -> anyhow::Error {
        drop(self.stdin.take());
        let _ = self.child.kill();
        let status = self.child.wait();
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
        if self.stdin.is_some() {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

/// What part of a dump a restore applies (`pg_restore -n`/`-t`).
#[derive(Debug, Clone, Default)]
pub struct Selection {
    pub schemas: Vec<String>,
    pub tables: Vec<String>,
}

impl Selection {
    /// `pg_restore`'s `--schema` and `--table` values: a table given as
    /// `schema.name` becomes `--schema schema --table name`.
    fn arguments(&self) -> (Vec<String>, Vec<String>) {
        let mut schemas = self.schemas.clone();
        let mut tables = Vec::new();
        for t in &self.tables {
            match t.split_once('.') {
                Some((s, name)) => {
                    if !schemas.iter().any(|x| x == s) {
                        schemas.push(s.to_string());
                    }
                    tables.push(name.to_string());
                }
                None => tables.push(t.clone()),
            }
        }
        (schemas, tables)
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
        session.send(&format!(
            "SET lock_timeout = {};\nBEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY;\nSELECT current_setting('server_version'), pg_export_snapshot();\n",
            self.plan.lock_wait_timeout.as_millis()
        ))?;
        let (server_version, snapshot) = match (session.field(), session.field()) {
            (Ok(Some(v)), Ok(Some(s))) => (v, s),
            _ => return Err(session.failure("psql", &what)),
        };
        let mut c = self.command("pg_dump", db)?;
        c.args(["--format=custom", "--compress=0"])
            .arg(format!("--snapshot={snapshot}"))
            .arg(format!(
                "--lock-wait-timeout={}",
                self.plan.lock_wait_timeout.as_millis()
            ));
        let (dumped, counted) = std::thread::scope(|s| {
            let counter = s.spawn(|| session.count_rows());
            let dumped = stream_out(c, w, what);
            (dumped, counter.join())
        });
        dumped?;
        let tables = match counted {
            Ok(Ok(t)) => t,
            _ => return Err(session.failure("psql", &what)),
        };
        session.send("COMMIT;\n")?;
        session.close(&what)?;
        Ok(Dumped {
            pg_dump_version,
            server_version,
            tables,
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

    /// `CREATE DATABASE` from `template0`, owned by the role bkp connects as.
    pub fn create_database(&self, database: &str) -> Result<()> {
        self.psql(
            MAINTENANCE_DB,
            "CREATE DATABASE :\"name\" TEMPLATE template0;\n",
            &[("name", database)],
        )
        .map(drop)
    }

    /// `DROP DATABASE`; with `force`, the sessions connected to it are ended.
    pub fn drop_database(&self, database: &str, force: bool) -> Result<()> {
        let script = if force {
            "DROP DATABASE IF EXISTS :\"name\" WITH (FORCE);\n"
        } else {
            "DROP DATABASE IF EXISTS :\"name\";\n"
        };
        self.psql(MAINTENANCE_DB, script, &[("name", database)])
            .map(drop)
    }

    /// `ALTER DATABASE … RENAME TO …`.
    pub fn rename_database(&self, from: &str, to: &str) -> Result<()> {
        self.psql(
            MAINTENANCE_DB,
            "ALTER DATABASE :\"from\" RENAME TO :\"to\";\n",
            &[("from", from), ("to", to)],
        )
        .map(drop)
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
        for s in &schemas {
            c.arg("--schema").arg(s);
        }
        for t in &tables {
            c.arg("--table").arg(t);
        }
        let what = || format!("pg_restore into {}", self.describe(database));
        let restored = stream_in(c, input, what);
        let partial = !(schemas.is_empty() && tables.is_empty());
        match restored {
            Err(e) if partial && format!("{e:#}").contains("does not exist") => Err(coded(
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
                        let rest = String::from_utf8_lossy(rest);
                        let name = rest
                            .split_once(" (")
                            .or_else(|| rest.split_once(" FROM "))
                            .map_or(rest.as_ref(), |(n, _)| n)
                            .to_string();
                        current = Some((name, 0));
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
    c.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = c
        .spawn()
        .with_context(|| format!("failed to start {}", what()))?;
    let stderr = collect_stderr(child.stderr.take());
    let mut out = child.stdout.take().context("no stdout")?;
    let copied = copy_interruptible(&mut out, w);
    drop(out);
    if copied.is_err() {
        let _ = child.kill();
    }
    let status = child.wait()?;
    let stderr = stderr.join().unwrap_or_default();
    // The tool's own failure explains a broken copy better than the copy does.
    check_status(&status, &stderr, &what)?;
    copied
        .map(drop)
        .with_context(|| format!("{} was not stored", what()))
}

/// Runs `c`, feeding `input` to its standard input.
fn stream_in(mut c: Command, input: &mut dyn Read, what: impl Fn() -> String) -> Result<()> {
    c.stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut child = c
        .spawn()
        .with_context(|| format!("failed to start {}", what()))?;
    let stderr = collect_stderr(child.stderr.take());
    let mut stdin = child.stdin.take().context("no stdin")?;
    let copied = copy_interruptible(input, &mut stdin);
    drop(stdin);
    if copied.is_err() {
        let _ = child.kill();
    }
    let status = child.wait()?;
    let stderr = stderr.join().unwrap_or_default();
    check_status(&status, &stderr, &what)?;
    copied
        .map(drop)
        .with_context(|| format!("{} did not read the whole dump", what()))
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
    let text = text.trim();
    let text = if text.len() > STDERR_KEPT {
        &text[text.len() - STDERR_KEPT..]
    } else {
        text
    };
    let (code, hint) = classify(text);
    let msg = format!(
        "{} failed ({status}): {}{hint}",
        what(),
        if text.is_empty() { "no message" } else { text }
    );
    Err(match code {
        Some(code) => coded(code, msg),
        None => anyhow::Error::msg(msg),
    })
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
        let script = b"SET x = 1;\nCOPY public.a (id, note) FROM stdin;\n1\tx\\ny\n2\t\\N\n\\.\n\nCOPY \"Odd\".\"t b\" (v) FROM stdin;\n\\.\nCOPY public.c FROM stdin;\n7\n\\.\n";
        let counts = count_copy_rows(&script[..]).unwrap();
        assert_eq!(counts.get("public.a"), Some(&2));
        assert_eq!(counts.get("\"Odd\".\"t b\""), Some(&0));
        assert_eq!(counts.get("public.c"), Some(&1));
        assert_eq!(counts.len(), 3);
        let cut = b"COPY public.a (id) FROM stdin;\n1\n";
        assert!(count_copy_rows(&cut[..]).is_err());
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
