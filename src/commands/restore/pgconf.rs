//! A restored PostgreSQL data directory's own configuration: the backup's
//! `postgresql.auto.conf` is set aside, unused, and bkp's takes its place
//! before any server starts on the directory (restore and drill alike).

use std::path::Path;

use anyhow::{Context, Result};

/// Where the backup's own `postgresql.auto.conf` goes in a restored data
/// directory.
pub const SET_ASIDE: &str = "postgresql.auto.conf.from-backup";

/// The `postgresql.auto.conf` of a restored data directory: archiving off (a
/// restored copy started as it was would archive its own WAL, on the source's
/// timeline, into the source's archive, where its segments take the names the
/// source has not written yet), and nothing else.
const OWN_AUTO_CONF: &str = "\
# Written by bkp restore. The backup's own postgresql.auto.conf (its ALTER SYSTEM
# settings), if it had one, is kept beside this file as
# postgresql.auto.conf.from-backup, unused: its settings can run commands as the
# server's user. Read it, and copy back (or ALTER SYSTEM again) what you trust.
# A restored copy must not archive into the source's archive: remove this line
# to archive from this server on purpose.
archive_mode = 'off'
";

/// Sets the backup's `postgresql.auto.conf` in `dir` aside as [`SET_ASIDE`]
/// and writes bkp's own in its place, before any server starts on `dir`;
/// whether there was one to set aside. Done already (the file is bkp's), it
/// does nothing.
pub fn set_aside_configuration(dir: &Path) -> Result<bool> {
    let conf = dir.join("postgresql.auto.conf");
    let set_aside = match std::fs::symlink_metadata(&conf) {
        Ok(_) if std::fs::read(&conf).is_ok_and(|b| b == OWN_AUTO_CONF.as_bytes()) => {
            return Ok(false)
        }
        Ok(_) => {
            let aside = free_name(dir)?;
            std::fs::rename(&conf, &aside).with_context(|| {
                format!(
                    "failed to set the backup's {} aside as {}",
                    conf.display(),
                    aside.display()
                )
            })?;
            true
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => false,
        Err(e) => return Err(e).with_context(|| format!("failed to read {}", conf.display())),
    };
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&conf)
        .with_context(|| format!("failed to create {}", conf.display()))?;
    std::io::Write::write_all(&mut f, OWN_AUTO_CONF.as_bytes())
        .and_then(|()| f.sync_all())
        .with_context(|| format!("failed to write {}", conf.display()))?;
    Ok(set_aside)
}

/// [`SET_ASIDE`] in `dir`, or the first of `SET_ASIDE.1`, `.2`, … that is
/// free: a backup of a server bkp restored before holds one already, which
/// is the operator's and is never replaced.
fn free_name(dir: &Path) -> Result<std::path::PathBuf> {
    let free = |p: &Path| matches!(std::fs::symlink_metadata(p), Err(e) if e.kind() == std::io::ErrorKind::NotFound);
    let first = dir.join(SET_ASIDE);
    if free(&first) {
        return Ok(first);
    }
    (1..1000)
        .map(|n| dir.join(format!("{SET_ASIDE}.{n}")))
        .find(|p| free(p))
        .with_context(|| {
            format!(
                "{}: no free name to set postgresql.auto.conf aside as",
                dir.display()
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_backups_auto_conf_is_set_aside_once() {
        let dir = tempfile::tempdir().unwrap();
        let conf = dir.path().join("postgresql.auto.conf");
        std::fs::write(&conf, "ssl_passphrase_command = 'touch /tmp/x'\n").unwrap();
        assert!(set_aside_configuration(dir.path()).unwrap());
        assert_eq!(std::fs::read_to_string(&conf).unwrap(), OWN_AUTO_CONF);
        let aside = dir.path().join(SET_ASIDE);
        assert!(std::fs::read_to_string(&aside)
            .unwrap()
            .contains("ssl_passphrase_command"));
        // Again (a --at restore sets aside before the replay does): nothing changes.
        assert!(!set_aside_configuration(dir.path()).unwrap());
        assert!(std::fs::read_to_string(&aside)
            .unwrap()
            .contains("ssl_passphrase_command"));
        // A backup without the file gets bkp's; one with a directory in its place
        // has that set aside.
        let none = tempfile::tempdir().unwrap();
        assert!(!set_aside_configuration(none.path()).unwrap());
        assert!(none.path().join("postgresql.auto.conf").is_file());
        let odd = tempfile::tempdir().unwrap();
        std::fs::create_dir(odd.path().join("postgresql.auto.conf")).unwrap();
        assert!(set_aside_configuration(odd.path()).unwrap());
        assert!(odd.path().join(SET_ASIDE).is_dir());
        // A backup of a directory bkp restored before holds a set-aside file
        // already: it is kept, and this one takes the next name.
        let again = tempfile::tempdir().unwrap();
        std::fs::write(again.path().join(SET_ASIDE), "earlier\n").unwrap();
        std::fs::write(
            again.path().join("postgresql.auto.conf"),
            "work_mem = '1MB'\n",
        )
        .unwrap();
        assert!(set_aside_configuration(again.path()).unwrap());
        assert_eq!(
            std::fs::read_to_string(again.path().join(SET_ASIDE)).unwrap(),
            "earlier\n"
        );
        assert_eq!(
            std::fs::read_to_string(again.path().join(format!("{SET_ASIDE}.1"))).unwrap(),
            "work_mem = '1MB'\n"
        );
    }
}
