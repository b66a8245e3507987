//! The spool: records not yet accepted by the cluster, one JSON file each, written
//! atomically and removed only after TigerBeetle answered `ok` or `exists`.

use std::io::{ErrorKind, Write};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

use super::record::Record;

/// A spool file: the record and the ledger it was made for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct SpoolEntry {
    /// Hex, for people reading the file; the file name repeats it.
    pub transfer_id: String,
    pub ledger: u32,
    pub record: Record,
    /// A record sent late, for a backup whose own run may have recorded it
    /// already (see `intent.rs`): any `exists` answer settles it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub late: bool,
}

/// Writes `entry` atomically (temp file, fsync, rename, fsync of the directory). A file
/// already there with the same content is kept; one with different content is an error.
pub(super) fn write_spool(dir: &Path, entry: &SpoolEntry) -> Result<PathBuf> {
    std::fs::create_dir_all(dir)
        .with_context(|| format!("cannot create ledger spool directory {}", dir.display()))?;
    let path = dir.join(format!("{}.json", entry.transfer_id));
    match read_entry(&path) {
        // A late copy of a record already spooled is that record.
        Ok(existing) if (existing.ledger, &existing.record) == (entry.ledger, &entry.record) => {
            return Ok(path)
        }
        Ok(_) => bail!(
            "{} already holds a different ledger record for transfer {}: the backup id was \
             reused with different fields",
            path.display(),
            entry.transfer_id
        ),
        Err(_) if !path.exists() => {}
        Err(e) => return Err(e),
    }
    let tmp = dir.join(format!(
        ".{}.json.tmp{}",
        entry.transfer_id,
        std::process::id()
    ));
    let write = || -> std::io::Result<()> {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(&serde_json::to_vec_pretty(entry)?)?;
        f.sync_all()?;
        std::fs::rename(&tmp, &path)?;
        std::fs::File::open(dir)?.sync_all()
    };
    write().with_context(|| format!("cannot write ledger spool file {}", path.display()))?;
    Ok(path)
}

fn read_entry(path: &Path) -> Result<SpoolEntry> {
    let bytes = std::fs::read(path)
        .with_context(|| format!("cannot read ledger spool file {}", path.display()))?;
    serde_json::from_slice(&bytes).with_context(|| {
        format!(
            "{} is not a bkp ledger record: move it out of the spool directory",
            path.display()
        )
    })
}

/// The finished files of the spool directory `dir` whose names end in
/// `suffix` (hidden files are unfinished writes); none when it does not exist.
pub(super) fn spooled(dir: &Path, suffix: &str) -> Result<Vec<PathBuf>> {
    let listing = match std::fs::read_dir(dir) {
        Ok(l) => l,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => {
            return Err(e)
                .with_context(|| format!("cannot list ledger spool directory {}", dir.display()))
        }
    };
    let mut out = Vec::new();
    for item in listing {
        let path = item
            .with_context(|| format!("cannot list ledger spool directory {}", dir.display()))?
            .path();
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or(".");
        if !name.starts_with('.') && name.ends_with(suffix) {
            out.push(path);
        }
    }
    Ok(out)
}

/// Spooled records, oldest first (by start time, then file name). Hidden files are
/// unfinished writes and are skipped.
pub(super) fn read_spool(dir: &Path) -> Result<Vec<(PathBuf, SpoolEntry)>> {
    let mut files = Vec::new();
    for path in spooled(dir, ".json")? {
        let entry = read_entry(&path)?;
        files.push((path, entry));
    }
    files.sort_by(|(pa, a), (pb, b)| {
        (a.record.started_at_unix_ns, pa).cmp(&(b.record.started_at_unix_ns, pb))
    });
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ledger::record::tests::sample;

    #[test]
    fn spool_round_trip_and_conflicts() {
        let dir = tempfile::tempdir().unwrap();
        let spool = dir.path().join("spool");
        assert!(read_spool(&spool).unwrap().is_empty());
        let older = Record {
            started_at_unix_ns: 1,
            backup_id: [7; 16],
            ..sample()
        };
        let entry = |r: &Record| SpoolEntry {
            transfer_id: format!("{:032x}", r.transfer_id().unwrap()),
            ledger: 12,
            record: r.clone(),
            late: false,
        };
        let p1 = write_spool(&spool, &entry(&sample())).unwrap();
        let p2 = write_spool(&spool, &entry(&older)).unwrap();
        assert_eq!(
            p1.file_name().unwrap(),
            "0190a1b2c3d47e5f8a9b0c1d2e3f4a5b.json"
        );
        // The same content again is fine; different content under the same id is not.
        assert_eq!(write_spool(&spool, &entry(&sample())).unwrap(), p1);
        let late = SpoolEntry {
            late: true,
            ..entry(&sample())
        };
        assert_eq!(write_spool(&spool, &late).unwrap(), p1);
        let changed = Record {
            amount: 1,
            ..sample()
        };
        assert!(write_spool(&spool, &entry(&changed))
            .unwrap_err()
            .to_string()
            .contains("reused"));
        std::fs::write(spool.join(".x.json.tmp1"), b"partial").unwrap();
        let files = read_spool(&spool).unwrap();
        assert_eq!(files.len(), 2);
        assert_eq!((files[0].0.clone(), files[1].0.clone()), (p2, p1.clone()));
        assert_eq!(files[1].1, entry(&sample()));
        let text = std::fs::read_to_string(&p1).unwrap();
        assert!(
            text.contains("\"backup_id\": \"0190a1b2c3d47e5f8a9b0c1d2e3f4a5b\""),
            "{text}"
        );
        assert!(text.contains("\"encryption\": \"aes256-gcm\""), "{text}");
        std::fs::write(spool.join("junk.json"), b"{").unwrap();
        assert!(read_spool(&spool)
            .unwrap_err()
            .to_string()
            .contains("junk.json"));
    }
}
