//! The `[postgres]` section: the PostgreSQL database `bkp export --kind pgdump`
//! dumps with `pg_dump`, and how bkp reaches it.
//!
//! No password is ever written here. libpq reads it from the `passfile` named
//! (the `.pgpass` format, mode 0600), which bkp hands to `pg_dump` as
//! `PGPASSFILE`: the secret never appears on a command line, in a child's
//! environment, in a log or in a manifest.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Result;
use serde::Deserialize;

use super::Validator;
pub use crate::sources::postgres::PostgresPlan;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PostgresFile {
    /// The database to dump.
    pub database: String,
    /// Host name, IP address, or the directory of the server's Unix socket
    /// (default: libpq's, the local socket).
    pub host: Option<String>,
    pub port: Option<u16>,
    /// The role bkp connects as (default: libpq's, the OS user).
    pub user: Option<String>,
    /// A `.pgpass` file holding the password.
    pub passfile: Option<PathBuf>,
    /// The directory of `pg_dump`, `pg_restore` and `psql` (default: the search
    /// path, then the newest `/usr/lib/postgresql/*/bin`).
    pub bin_dir: Option<PathBuf>,
    /// How long `pg_dump` waits for a table lock before failing (default 5m).
    pub lock_wait_timeout: Option<String>,
    /// Variables of bkp's environment passed on to the PostgreSQL tools
    /// (`PGSSLMODE`, `PGSSLROOTCERT`, …). Never a password variable.
    #[serde(default)]
    pub pass_env: Vec<String>,
    pub retention_days: Option<u16>,
    /// Count every table's rows in the dump's snapshot (default true).
    pub count_rows: Option<bool>,
    /// Also store the cluster's roles and tablespaces (`pg_dumpall
    /// --globals-only --no-role-passwords`; default true).
    pub globals: Option<bool>,
    /// How a base backup starts: `"spread"` (the server's paced checkpoint, the
    /// default) or `"fast"` (at once, with a burst of I/O).
    pub checkpoint: Option<String>,
}

/// Variables that carry a password or a whole connection string with one.
const SECRET_VARS: [&str; 1] = ["PGPASSWORD"];

pub(super) fn validate(f: PostgresFile, v: &Validator) -> Result<PostgresPlan> {
    let name_ok = |s: &str| !s.trim().is_empty() && !s.contains('\0');
    if !name_ok(&f.database) {
        return Err(v.error(
            "postgres.database",
            "must name the database to dump, e.g. \"app\"",
        ));
    }
    // A connection string here would be one more place for a password.
    if f.database.contains('=') || f.database.contains("://") {
        return Err(v.error(
            "postgres.database",
            "must be a database name, not a connection string: set host, port and user as their own keys and put the password in passfile",
        ));
    }
    for (key, value) in [("postgres.host", &f.host), ("postgres.user", &f.user)] {
        if value.as_deref().is_some_and(|s| !name_ok(s)) {
            return Err(v.error(key, "must not be empty"));
        }
    }
    if f.port == Some(0) {
        return Err(v.error("postgres.port", "must be a TCP port, 1 to 65535"));
    }
    v.env_names("postgres.pass_env", &f.pass_env)?;
    if let Some(bad) = f
        .pass_env
        .iter()
        .find(|n| SECRET_VARS.contains(&n.as_str()))
    {
        return Err(v.error(
            "postgres.pass_env",
            format!("{bad} is not passed to child processes, where any process of the same user could read it: write the password to a .pgpass file and name it in postgres.passfile"),
        ));
    }
    let fast_checkpoint = match f.checkpoint.as_deref().unwrap_or("spread") {
        "spread" => false,
        "fast" => true,
        other => return Err(v.not_one_of("postgres.checkpoint", other, &["spread", "fast"])),
    };
    let lock_wait_timeout = match &f.lock_wait_timeout {
        Some(s) => v.positive_duration("postgres.lock_wait_timeout", s)?,
        None => Duration::from_secs(300),
    };
    Ok(PostgresPlan {
        database: f.database,
        host: f.host,
        port: f.port,
        user: f.user,
        passfile: f.passfile.map(|p| v.path(p)),
        bin_dir: f.bin_dir.map(|p| v.path(p)),
        lock_wait_timeout,
        pass_env: f.pass_env,
        retention_days: f.retention_days.unwrap_or(90),
        count_rows: f.count_rows.unwrap_or(true),
        globals: f.globals.unwrap_or(true),
        fast_checkpoint,
    })
}

#[cfg(test)]
mod tests {
    use super::super::tests::{fails_naming, with, MINIMAL};

    #[test]
    fn defaults_and_relative_paths() {
        let p = with("[postgres]\ndatabase = \"app\"\npassfile = \"pgpass\"\n")
            .unwrap()
            .postgres
            .unwrap();
        assert_eq!(p.database, "app");
        assert_eq!(p.lock_wait_timeout, std::time::Duration::from_secs(300));
        assert_eq!(p.retention_days, 90);
        assert!(p.passfile.unwrap().is_absolute());
        assert_eq!(p.host, None);
    }

    #[test]
    fn bad_postgres_settings_name_the_key() {
        for (extra, needle) in [
            ("database = \" \"\n", "postgres.database: must name"),
            (
                "database = \"postgresql://u:pw@h/app\"\n",
                "not a connection string",
            ),
            ("database = \"host=h dbname=app\"\n", "postgres.database"),
            ("database = \"a\"\nport = 0\n", "postgres.port"),
            ("database = \"a\"\nhost = \"\"\n", "postgres.host"),
            (
                "database = \"a\"\npass_env = [\"PGPASSWORD\"]\n",
                "postgres.pass_env: PGPASSWORD is not passed",
            ),
            (
                "database = \"a\"\nlock_wait_timeout = \"0s\"\n",
                "postgres.lock_wait_timeout",
            ),
            ("database = \"a\"\npassword = \"x\"\n", "password"),
        ] {
            fails_naming(&format!("{MINIMAL}[postgres]\n{extra}"), needle);
        }
    }
}
