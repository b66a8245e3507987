//! The `[sqlite]` section: the SQLite database `bkp snapshot --kind sqlite`
//! copies, and how long it waits for a writer's lock.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Result;
use serde::Deserialize;

use super::Validator;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SqliteFile {
    /// The database file to copy.
    pub database: PathBuf,
    /// How long to wait for a database another process holds locked.
    pub lock_wait: Option<String>,
    pub retention_days: Option<u16>,
}

#[derive(Debug, Clone)]
pub struct SqlitePlan {
    pub database: PathBuf,
    pub lock_wait: Duration,
    pub retention_days: u16,
}

pub(super) fn validate(f: SqliteFile, v: &Validator) -> Result<SqlitePlan> {
    if f.database.as_os_str().is_empty() {
        return Err(v.error(
            "sqlite.database",
            "must name the SQLite database file, e.g. \"/var/lib/app/app.db\"",
        ));
    }
    let lock_wait = match &f.lock_wait {
        Some(s) => v.duration("sqlite.lock_wait", s)?,
        None => Duration::from_secs(30),
    };
    Ok(SqlitePlan {
        database: v.path(f.database),
        lock_wait,
        retention_days: f.retention_days.unwrap_or(90),
    })
}

#[cfg(test)]
mod tests {
    use super::super::tests::{fails_naming, with, MINIMAL};

    #[test]
    fn the_section_resolves_its_path_and_refuses_an_empty_one() {
        let p = with("[sqlite]\ndatabase = \"app.db\"\nlock_wait = \"5s\"\n").unwrap();
        let s = p.sqlite.unwrap();
        assert_eq!(s.database, std::path::Path::new("/etc/bkp/app.db"));
        assert_eq!(s.lock_wait, std::time::Duration::from_secs(5));
        assert_eq!(s.retention_days, 90);
        fails_naming(
            &format!("{MINIMAL}[sqlite]\ndatabase = \"\"\n"),
            "sqlite.database",
        );
        fails_naming(
            &format!("{MINIMAL}[sqlite]\ndatabase = \"a\"\nlock_wait = \"soon\"\n"),
            "sqlite.lock_wait",
        );
    }
}
