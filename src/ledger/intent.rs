//! Intents: a backup's ledger record, written beside the spool before its
//! manifest is stored, so that a run killed between the two leaves its record
//! for the next run.
//!
//! Why: the store and the ledger cannot be written together. A run killed after
//! its manifest is stored but before its record is sent or spooled leaves a
//! listed backup the ledger never hears of; without a trace on disk, finding it
//! would cost every run a look at the ledger. An intent is that trace: one file
//! `{transfer id}.intent` in the spool directory, which the owner holds an
//! exclusive `flock` on while it runs (the kernel drops it however the process
//! dies) and removes once its record is sent or spooled. A run that can lock an
//! intent knows its owner is gone, and settles it from the store: the manifest
//! is there → its record, made again from the sealed manifest, is spooled as a
//! late record (sent with the run's own); no manifest → the owner died before
//! storing its backup, and there is nothing to record.
//!
//! The record is the same on every attempt: the run and the settling run both
//! make it from the manifest, and a late record that finds the transfer already
//! made is recorded all the same (`exists`, see `send.rs`).

use std::fs::{File, TryLockError};
use std::io::{ErrorKind, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use super::record::Record;
use super::LedgerConfig;

/// An intent file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct IntentFile {
    /// Where the backup's manifest is (or would be) stored.
    manifest_key: String,
    ledger: u32,
    record: Record,
}

/// This run's intent, locked until dropped. Removed by [`Intent::done`]; left
/// in place when the run ends otherwise, for the next run to settle.
pub struct Intent {
    path: PathBuf,
    _file: File,
}

/// An intent whose run is gone, locked by this run while it settles it.
pub struct Orphan {
    path: PathBuf,
    _file: File,
    pub manifest_key: String,
    pub record: Record,
}

fn intent_path(dir: &Path, transfer_id: u128) -> PathBuf {
    dir.join(format!("{transfer_id:032x}.intent"))
}

/// Writes the intent of `rec`, whose manifest goes to `manifest_key`, and
/// holds its lock: written and locked under a temporary name, then renamed
/// (the lock goes with the file), so no other run ever finds it unlocked
/// while this one lives.
pub fn intend(cfg: &LedgerConfig, rec: &Record, manifest_key: &str) -> Result<Intent> {
    rec.transfer(cfg.ledger)?;
    let dir = &cfg.spool_dir;
    std::fs::create_dir_all(dir)
        .with_context(|| format!("cannot create ledger spool directory {}", dir.display()))?;
    let id = rec.transfer_id()?;
    let path = intent_path(dir, id);
    let tmp = dir.join(format!(".{id:032x}.intent.tmp{}", std::process::id()));
    let body = IntentFile {
        manifest_key: manifest_key.to_string(),
        ledger: cfg.ledger,
        record: rec.clone(),
    };
    let write = || -> std::io::Result<File> {
        let mut f = File::create(&tmp)?;
        f.lock()?;
        f.write_all(&serde_json::to_vec_pretty(&body)?)?;
        f.sync_all()?;
        std::fs::rename(&tmp, &path)?;
        File::open(dir)?.sync_all()?;
        Ok(f)
    };
    let file = write().with_context(|| format!("cannot write ledger intent {}", path.display()))?;
    Ok(Intent { path, _file: file })
}

impl Intent {
    /// The record was sent or spooled: the intent goes.
    pub fn done(self) -> Result<()> {
        remove(&self.path)
    }
}

fn remove(path: &Path) -> Result<()> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != ErrorKind::NotFound => Err(e).with_context(|| {
            format!(
                "cannot remove ledger intent {}; remove it by hand (settling it again is harmless)",
                path.display()
            )
        }),
        _ => Ok(()),
    }
}

/// The intents of runs that are gone (their lock is free), each locked now.
/// Only the spool directory is read: a run with none pays one listing of it.
pub fn orphans(cfg: &LedgerConfig) -> Result<Vec<Orphan>> {
    let mut out = Vec::new();
    for path in super::spool::spooled(&cfg.spool_dir, ".intent")? {
        let file = match File::open(&path) {
            Ok(f) => f,
            // Its run finished meanwhile.
            Err(e) if e.kind() == ErrorKind::NotFound => continue,
            Err(e) => return Err(e).with_context(|| format!("cannot open {}", path.display())),
        };
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => continue,
            Err(TryLockError::Error(e)) => {
                return Err(e).with_context(|| format!("cannot lock {}", path.display()))
            }
        }
        // Removed between the open and the lock: its run finished.
        if !path.exists() {
            continue;
        }
        let bytes =
            std::fs::read(&path).with_context(|| format!("cannot read {}", path.display()))?;
        let body: IntentFile = serde_json::from_slice(&bytes).with_context(|| {
            format!(
                "{} is not a bkp ledger intent: move it out of the spool directory",
                path.display()
            )
        })?;
        if body.ledger != cfg.ledger {
            continue;
        }
        out.push(Orphan {
            path,
            _file: file,
            manifest_key: body.manifest_key,
            record: body.record,
        });
    }
    Ok(out)
}

impl Orphan {
    /// Settles the intent: `stored` is the record made again from the
    /// manifest found in the store (spooled as a late record), `None` when the
    /// store has no such manifest. Then the intent goes.
    pub fn settle(self, cfg: &LedgerConfig, stored: Option<&Record>) -> Result<()> {
        if let Some(rec) = stored {
            super::write_entry(cfg, rec, true)?;
        }
        remove(&self.path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ledger::record::tests::sample;
    use std::time::Duration;

    fn cfg(dir: &Path) -> LedgerConfig {
        LedgerConfig {
            cluster_id: 0,
            addresses: "127.0.0.1:1".into(),
            ledger: 12,
            timeout: Duration::from_secs(1),
            spool_dir: dir.join("spool"),
        }
    }

    #[test]
    fn an_intent_is_an_orphan_only_once_its_run_is_gone() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = cfg(dir.path());
        let rec = sample();
        let held = intend(&cfg, &rec, "manifests/duckdb/x.json").unwrap();
        // Its run lives: nobody settles it.
        assert!(orphans(&cfg).unwrap().is_empty());
        drop(held);
        let found = orphans(&cfg).unwrap();
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].record, rec);
        assert_eq!(found[0].manifest_key, "manifests/duckdb/x.json");
        // Another run finds it locked while this one settles it.
        assert!(orphans(&cfg).unwrap().is_empty());
        let o = found.into_iter().next().unwrap();
        o.settle(&cfg, Some(&rec)).unwrap();
        assert!(orphans(&cfg).unwrap().is_empty());
        let files = super::super::spool::read_spool(&cfg.spool_dir).unwrap();
        assert_eq!(files.len(), 1);
        assert!(files[0].1.late);
        assert_eq!(files[0].1.record, rec);

        // A run that finishes removes its intent; one with no manifest records nothing.
        intend(&cfg, &rec, "k").unwrap().done().unwrap();
        assert!(orphans(&cfg).unwrap().is_empty());
        let other = Record {
            backup_id: [9; 16],
            ..rec.clone()
        };
        drop(intend(&cfg, &other, "k").unwrap());
        let o = orphans(&cfg).unwrap().into_iter().next().unwrap();
        o.settle(&cfg, None).unwrap();
        assert!(orphans(&cfg).unwrap().is_empty());
        assert_eq!(
            super::super::spool::read_spool(&cfg.spool_dir)
                .unwrap()
                .len(),
            1
        );
    }
}
