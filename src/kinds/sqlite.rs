//! SQLite: one database file, copied while it is in use through SQLite's
//! online backup API, stored as one object, restored as one file.
//!
//! Everything bkp knows about the kind beyond its descriptor lives here: how
//! the live database is read safely ([`copy`]), the manifest's `source`
//! members with a typed writer and reader ([`View`]), and the engine that
//! restores and checks a copy ([`restore`]), which the drill uses too. The
//! engine takes a store, a manifest and a path; the subcommands wrap it.
//!
//! The copy is one `sqlite3_backup_step(-1)`: the whole database under one read
//! transaction, so it is the database as of one commit, whatever other
//! connections write meanwhile (in WAL mode they go on writing; in rollback
//! mode a writer waits for the copy to end, as for any long reader). The copy
//! is written to a private file in the work directory, checked with `PRAGMA
//! integrity_check`, its tables' rows counted, and only then streamed into the
//! pipeline; it is removed when the run ends.
//!
//! A restored file is untrusted until checked: it is opened read-only with
//! `trusted_schema` off (no SQL function of the file's schema runs) and must
//! pass `PRAGMA integrity_check` and have exactly the tables and row counts
//! the sealed manifest records before it is put in place.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use rusqlite::{Connection, OpenFlags};
use serde::{Deserialize, Serialize};

use crate::crypto::Keyring;
use crate::exit::{coded, Code};
use crate::manifest::{Manifest, ObjectEntry};
use crate::stages::progress::Progress;
use crate::store::Store;

/// The operation that makes a copy, in manifests and object keys.
pub const OPERATION: &str = "snapshot";

/// How the copy's object key ends before compression and encryption.
pub const SUFFIX: &str = ".sqlite";

/// What a manifest's `source` records of a copy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct View {
    /// The database file copied, as the config names it.
    pub database: String,
    /// The SQLite library that made the copy.
    pub sqlite_version: String,
    pub page_size: u64,
    pub pages: u64,
    /// Each table's rows, by name (SQLite's own `sqlite_*` tables and
    /// virtual tables left out: a virtual table's rows are in its shadow
    /// tables, or outside the file, and reading it runs its module).
    pub tables: BTreeMap<String, u64>,
}

impl View {
    /// The `source` members of the manifest.
    pub fn members(&self) -> BTreeMap<String, serde_json::Value> {
        match serde_json::to_value(self) {
            Ok(serde_json::Value::Object(m)) => m.into_iter().collect(),
            _ => BTreeMap::new(),
        }
    }

    /// The view a manifest records; an error naming it when its `source` is
    /// not one.
    pub fn of(m: &Manifest) -> Result<View> {
        let source = serde_json::Value::Object(
            m.source
                .iter()
                .map(|(k, v)| (k.to_string(), v.clone()))
                .collect(),
        );
        serde_json::from_value(source).map_err(|e| {
            coded(
                Code::Integrity,
                format!(
                    "SQLite copy {} does not record its database as bkp writes it ({}): it is damaged or not bkp's; restore another backup (`bkp list --kind sqlite`)",
                    m.id,
                    crate::ui::printable(&e.to_string())
                ),
            )
        })
    }
}

/// The one object of copy `m`.
pub fn object(m: &Manifest) -> Result<&ObjectEntry> {
    match m.objects.as_slice() {
        [one] => Ok(one),
        other => Err(coded(
            Code::Integrity,
            format!(
                "SQLite copy {} lists {} objects; a copy has exactly one",
                m.id,
                other.len()
            ),
        )),
    }
}

/// Copies the database at `database` into a new file `to` (which must not
/// exist), waiting up to `lock_wait` for a writer's lock, then checks the
/// copy and counts its tables' rows.
pub fn copy(database: &Path, to: &Path, lock_wait: Duration) -> Result<View> {
    let what = database.display();
    if !database.is_file() {
        return Err(coded(
            Code::Config,
            format!("the SQLite database {what} does not exist or is not a file: check [sqlite] database"),
        ));
    }
    let src = Connection::open_with_flags(
        database,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .with_context(|| format!("failed to open the SQLite database {what}"))?;
    src.busy_timeout(lock_wait)?;
    let mut dst = Connection::open_with_flags(
        to,
        OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .with_context(|| format!("failed to create {}", to.display()))?;
    {
        let backup = rusqlite::backup::Backup::new(&src, &mut dst)
            .with_context(|| format!("failed to start copying {what}"))?;
        let started = std::time::Instant::now();
        loop {
            use rusqlite::backup::StepResult;
            match backup.step(-1).with_context(|| format!("failed to copy {what}"))? {
                StepResult::Done => break,
                StepResult::More => continue,
                _ if started.elapsed() < lock_wait => std::thread::sleep(Duration::from_millis(50)),
                _ => {
                    return Err(coded(
                        Code::Transient,
                        format!(
                            "the SQLite database {what} stayed locked by another process for {}s: nothing was stored; the next run tries again (raise [sqlite] lock_wait if writes hold it that long)",
                            lock_wait.as_secs()
                        ),
                    ))
                }
            }
        }
    }
    drop(dst);
    let c = open_checked(to)?;
    let mut view = describe(&c, &what.to_string())?;
    view.database = database.display().to_string();
    Ok(view)
}

/// What `bkp check` says of the database at `database`: that it opens
/// read-only and its schema reads (nothing is copied or checked in depth).
pub fn probe(database: &Path) -> Result<String> {
    let what = database.display();
    let refused = |why: String| {
        coded(
            Code::Config,
            format!("the SQLite database {what} {why}: check [sqlite] database and that bkp's user may read it"),
        )
    };
    if !database.is_file() {
        return Err(refused("does not exist or is not a file".into()));
    }
    let c = Connection::open_with_flags(
        database,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(|e| refused(format!("cannot be opened ({e})")))?;
    // A writer's lock for a moment is not a config error.
    c.busy_timeout(Duration::from_secs(5))?;
    let read = |sql: &str| -> Result<i64> {
        c.query_row(sql, [], |r| r.get(0))
            .map_err(|e| refused(format!("cannot be read ({e})")))
    };
    let tables = read("SELECT count(*) FROM sqlite_schema WHERE type = 'table'")?;
    let bytes = read("PRAGMA page_count")? * read("PRAGMA page_size")?;
    Ok(format!(
        "{what} opens read-only: {}, {}",
        crate::units::count(tables.max(0) as u64, "table"),
        crate::ui::size(bytes.max(0) as u64)
    ))
}

/// Whether another process has database `db` open as SQLite shows it: a
/// connection in WAL mode holds a read lock on its `-shm` file's DMS byte
/// for as long as it is open, and one in a transaction holds the database
/// file's lock bytes. (An idle connection in rollback-journal mode holds no
/// lock and cannot be seen.) Asked with `F_GETLK`, which takes no lock.
pub fn in_use(db: &Path) -> bool {
    /// SQLite's unix VFS: the `-shm` DMS byte, and the database's pending byte
    /// followed by its shared range.
    const SHM_DMS: i64 = 128;
    const PENDING_BYTE: i64 = 0x4000_0000;
    let mut shm = db.as_os_str().to_owned();
    shm.push("-shm");
    locked(Path::new(&shm), SHM_DMS, 1) || locked(db, PENDING_BYTE, 512)
}

/// Whether another process holds a POSIX lock on `len` bytes at `start` of `path`.
fn locked(path: &Path, start: i64, len: i64) -> bool {
    use std::os::fd::AsRawFd;
    let Ok(f) = std::fs::File::open(path) else {
        return false;
    };
    // SAFETY: `flock` is plain data, zeroed is a valid value; `fcntl` with
    // F_GETLK only writes into it, and the descriptor is open.
    let mut fl: libc::flock = unsafe { std::mem::zeroed() };
    fl.l_type = libc::F_WRLCK as libc::c_short;
    fl.l_whence = libc::SEEK_SET as libc::c_short;
    fl.l_start = start;
    fl.l_len = len;
    let r = unsafe { libc::fcntl(f.as_raw_fd(), libc::F_GETLK, &mut fl) };
    r == 0 && fl.l_type != libc::F_UNLCK as libc::c_short
}

/// Opens the complete database file `path` (a copy bkp made or restored,
/// which no other process uses) read-only and immutable (no lock, no `-wal`
/// or `-shm` beside it is read or made), with nothing of its schema trusted
/// to run.
fn open_checked(path: &Path) -> Result<Connection> {
    let c = Connection::open_with_flags(
        format!("file:{}?immutable=1", uri_path(path)),
        OpenFlags::SQLITE_OPEN_READ_ONLY
            | OpenFlags::SQLITE_OPEN_URI
            | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .with_context(|| format!("failed to open {}", path.display()))?;
    use rusqlite::config::DbConfig;
    c.set_db_config(DbConfig::SQLITE_DBCONFIG_DEFENSIVE, true)?;
    c.set_db_config(DbConfig::SQLITE_DBCONFIG_TRUSTED_SCHEMA, false)?;
    c.execute_batch("PRAGMA cell_size_check = ON;")?;
    Ok(c)
}

/// The first column of every row `sql` gives, as text.
fn strings(c: &Connection, sql: &str) -> rusqlite::Result<Vec<String>> {
    let mut stmt = c.prepare(sql)?;
    let rows = stmt.query_map([], |r| r.get::<_, String>(0))?;
    rows.collect()
}

/// `p` as the path of a `file:` URI: every byte but letters, digits and
/// `/._-` percent-encoded, so that no `?`, `#` or `%` in a name is read as
/// part of the URI.
fn uri_path(p: &Path) -> String {
    use std::os::unix::ffi::OsStrExt;
    let mut out = String::new();
    for &b in p.as_os_str().as_bytes() {
        if b.is_ascii_alphanumeric() || b"/._-".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Checks the database open in `c` (`what` in errors) and counts its rows.
fn describe(c: &Connection, what: &str) -> Result<View> {
    let damaged = |why: String| coded(Code::Integrity, format!("{what} {why}"));
    let verdict = strings(c, "PRAGMA integrity_check").map_err(|e| {
        damaged(format!(
            "cannot be checked: {}",
            crate::ui::printable(&e.to_string())
        ))
    })?;
    if verdict != ["ok"] {
        let first: Vec<String> = verdict
            .iter()
            .take(3)
            .map(|l| crate::ui::printable(l))
            .collect();
        return Err(damaged(format!(
            "fails SQLite's integrity check: {}",
            first.join("; ")
        )));
    }
    let names = strings(
        c,
        "SELECT name FROM sqlite_schema WHERE type = 'table' AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\' AND sql NOT LIKE 'CREATE VIRTUAL TABLE%' ORDER BY name",
    )
    .map_err(|e| damaged(format!("cannot be read: {}", crate::ui::printable(&e.to_string()))))?;
    let mut tables = BTreeMap::new();
    for name in names {
        let sql = format!("SELECT count(*) FROM \"{}\"", name.replace('"', "\"\""));
        let n: i64 = c.query_row(&sql, [], |r| r.get(0)).map_err(|e| {
            damaged(format!(
                "cannot count table {}: {}",
                crate::ui::printable(&name),
                crate::ui::printable(&e.to_string())
            ))
        })?;
        tables.insert(name, n.max(0) as u64);
    }
    let pragma = |p: &str| -> Result<u64> {
        let n: i64 = c.query_row(&format!("PRAGMA {p}"), [], |r| r.get(0))?;
        Ok(n.max(0) as u64)
    };
    Ok(View {
        database: String::new(),
        sqlite_version: rusqlite::version().to_string(),
        page_size: pragma("page_size")?,
        pages: pragma("page_count")?,
        tables,
    })
}

/// What a restore proved of the file it delivered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Restored {
    pub bytes: u64,
    /// Each table's rows, as counted in the restored file (and recorded).
    pub tables: BTreeMap<String, u64>,
}

impl Restored {
    pub fn rows(&self) -> u64 {
        self.tables.values().sum()
    }
}

/// Writes copy `m` from `store` to `file` (which must not exist), verified
/// on the way (the object's SHA-256, every encrypted chunk, the content's
/// digest), then checks it as [`View`] says: SQLite's integrity check, and
/// exactly the tables and row counts the manifest records. On any failure
/// `file` is removed and nothing is to be used.
pub fn restore(
    store: &dyn Store,
    m: &Manifest,
    keyring: Option<&Keyring>,
    file: &Path,
    progress: Arc<dyn Progress>,
) -> Result<Restored> {
    let recorded = View::of(m)?;
    let entry = object(m)?;
    let keyring = crate::pipeline::keys_for(m, keyring)?;
    let result = (|| -> Result<Restored> {
        let mut out = {
            use std::os::unix::fs::OpenOptionsExt;
            std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(file)
                .with_context(|| format!("failed to create {}", file.display()))?
        };
        crate::pipeline::download_staged(
            store,
            entry,
            crate::pipeline::Decode::Content(m.compression),
            keyring,
            progress,
            |r| {
                std::io::copy(r, &mut out)?;
                Ok(())
            },
        )?;
        out.sync_all()?;
        drop(out);
        let what = format!("SQLite copy {} (restored to {})", m.id, file.display());
        let found = describe(&open_checked(file)?, &what)?;
        if found.tables != recorded.tables {
            return Err(coded(
                Code::Integrity,
                format!(
                    "{what} holds other tables or rows than its manifest records ({} tables, {} rows found; {} tables, {} rows recorded): it is not the copy that was taken",
                    found.tables.len(),
                    found.tables.values().sum::<u64>(),
                    recorded.tables.len(),
                    recorded.tables.values().sum::<u64>()
                ),
            ));
        }
        Ok(Restored {
            bytes: entry.content_bytes,
            tables: found.tables,
        })
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(file);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    fn database(dir: &Path) -> std::path::PathBuf {
        let p = dir.join("app ?#% é.db");
        let c = Connection::open(&p).unwrap();
        c.execute_batch(
            "PRAGMA journal_mode = WAL;
             CREATE TABLE accounts (id INTEGER PRIMARY KEY, name TEXT);
             CREATE TABLE \"odd \"\"name\"\"\" (x);
             INSERT INTO accounts (name) VALUES ('a'), ('b'), ('c');
             INSERT INTO \"odd \"\"name\"\"\" VALUES (1);",
        )
        .unwrap();
        p
    }

    fn view_page_size(p: &Path) -> usize {
        let c = Connection::open(p).unwrap();
        c.query_row("PRAGMA page_size", [], |r| r.get::<_, i64>(0))
            .unwrap() as usize
    }

    #[test]
    fn a_copy_of_a_database_in_use_records_its_tables_and_rows() {
        let d = tempfile::tempdir().unwrap();
        let db = database(d.path());
        // A writer holds the database open meanwhile (WAL mode).
        let writer = Connection::open(&db).unwrap();
        writer
            .execute("INSERT INTO accounts (name) VALUES ('d')", [])
            .unwrap();
        let view = copy(&db, &d.path().join("copy.db"), Duration::from_secs(5)).unwrap();
        assert_eq!(view.tables["accounts"], 4);
        assert_eq!(view.tables["odd \"name\""], 1);
        assert_eq!(view.tables.len(), 2);
        assert!(view.pages > 0 && view.page_size >= 512);
        assert_eq!(view.database, db.display().to_string());
        // The view round-trips through a manifest's `source`, and a source
        // that is not one is refused.
        let back: View = serde_json::from_value(serde_json::Value::Object(
            view.members().into_iter().collect(),
        ))
        .unwrap();
        assert_eq!(back, view);
        let mut extra = view.members();
        extra.insert("rows".into(), 1.into());
        assert!(serde_json::from_value::<View>(serde_json::Value::Object(
            extra.into_iter().collect()
        ))
        .is_err());
    }

    #[test]
    fn a_database_another_process_has_open_is_seen() {
        let d = tempfile::tempdir().unwrap();
        let db = database(d.path());
        assert!(!in_use(&db), "no process has it open");
        assert!(!in_use(&d.path().join("none.db")));
        // Another process (Python's sqlite3) opens it in WAL mode and reads.
        let script = "import sqlite3, sys, time\nc = sqlite3.connect(sys.argv[1])\nc.execute('SELECT count(*) FROM accounts').fetchall()\nprint('open', flush=True)\ntime.sleep(60)\n";
        let mut child = std::process::Command::new("python3")
            .args(["-c", script])
            .arg(&db)
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        std::io::BufRead::read_line(
            &mut std::io::BufReader::new(child.stdout.take().unwrap()),
            &mut line,
        )
        .unwrap();
        assert_eq!(line.trim(), "open");
        let seen = in_use(&db);
        let _ = child.kill();
        let _ = child.wait();
        assert!(seen, "a reader in WAL mode was not seen");
    }

    #[test]
    fn a_missing_database_is_a_config_error_and_a_damaged_copy_is_refused() {
        let d = tempfile::tempdir().unwrap();
        let e = copy(
            &d.path().join("none.db"),
            &d.path().join("c"),
            Duration::ZERO,
        )
        .unwrap_err();
        assert_eq!(crate::exit::classify(&e), Some(Code::Config));
        let db = database(d.path());
        let copied = d.path().join("copy.db");
        copy(&db, &copied, Duration::ZERO).unwrap();
        // Damage the b-tree header of the copy's last page (a table's leaf):
        // the check refuses it.
        let mut bytes = std::fs::read(&copied).unwrap();
        let page = view_page_size(&copied);
        let last = bytes.len() - page;
        for b in &mut bytes[last..last + 12] {
            *b = 0xA5;
        }
        std::fs::write(&copied, &bytes).unwrap();
        let e = describe(&open_checked(&copied).unwrap(), "the copy").unwrap_err();
        assert_eq!(crate::exit::classify(&e), Some(Code::Integrity), "{e:#}");
    }
}
