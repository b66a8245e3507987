//! `bkp restore` of a replicate backup: the cold-tier tree exactly as of that
//! run, rebuilt from the one manifest.
//!
//! Every file is downloaded through the verifying pipeline (the stored object's
//! SHA-256 before decryption, the file's own SHA-256 after) into a staging
//! directory beside the target; the tree must then match the manifest's file
//! list exactly, and only then is it renamed into place. A damaged object, a
//! missing key or an interrupted run leave the target as it was.

use std::fs;
use std::io::{self, BufWriter};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use anyhow::{Context, Result};
use serde_json::json;

use super::{Options, RestorePlan, Source};
use crate::crypto::Keyring;
use crate::exit::{coded, Code};
use crate::manifest::{FileEntry, Manifest};
use crate::replicate::record::{FileRecord, ReplicaSet};
use crate::stages::progress::Silent;
use crate::store::Store;
use crate::{pipeline, ui};

/// Files downloaded at once.
const CONCURRENCY: usize = 4;

/// Rebuilds the tree `m` describes under `dir` (an existing, empty directory),
/// checking every file against its SHA-256, and returns the files restored. On
/// error `dir` may hold a partial tree: callers restore into a staging directory.
pub fn restore_tree(src: &Source, m: &Manifest, dir: &Path) -> Result<Vec<FileEntry>> {
    let (store, keyring) = (src.store, src.keyring);
    let set = ReplicaSet::from_manifest(m)?;
    for r in &set.set {
        crate::store::check_key(&r.path).map_err(|e| {
            coded(
                Code::Integrity,
                format!(
                    "backup {}: file {:?} cannot be restored safely: {e:#}",
                    m.id, r.path
                ),
            )
        })?;
        if r.key_id.is_some() && keyring.is_none() {
            return Err(coded(
                Code::Config,
                format!(
                    "backup {} holds files encrypted with key {}, but the config has no [encryption] key: configure it to restore",
                    m.id,
                    r.key_id.as_deref().unwrap_or_default()
                ),
            ));
        }
    }
    let spool = src.work.scratch("spool")?;
    let spool = spool.path();
    let next = AtomicUsize::new(0);
    let stop = AtomicBool::new(false);
    let first_error: Mutex<Option<anyhow::Error>> = Mutex::new(None);
    std::thread::scope(|s| {
        for _ in 0..CONCURRENCY.min(set.set.len()).max(1) {
            s.spawn(|| loop {
                if stop.load(Ordering::Relaxed) {
                    return;
                }
                let Some(r) = set.set.get(next.fetch_add(1, Ordering::Relaxed)) else {
                    return;
                };
                if let Err(e) = restore_file(store, r, keyring, spool, dir) {
                    stop.store(true, Ordering::Relaxed);
                    if let Ok(mut f) = first_error.lock() {
                        f.get_or_insert(e);
                    }
                    return;
                }
            });
        }
    });
    if let Some(e) = first_error.into_inner().ok().flatten() {
        return Err(e);
    }

    // Exactly the files the manifest names, with their sizes and digests.
    let mut got: Vec<FileEntry> = set.set.iter().map(FileRecord::file_entry).collect();
    got.sort_by(|a, b| a.name.cmp(&b.name));
    let mut want = m.files.clone();
    want.sort_by(|a, b| a.name.cmp(&b.name));
    let on_disk = walk_files(dir)?;
    let named: Vec<&str> = got.iter().map(|f| f.name.as_str()).collect();
    if got != want || on_disk != named {
        return Err(coded(
            Code::Integrity,
            format!(
                "backup {}: the restored tree does not match the manifest's file list; the target was not touched",
                m.id
            ),
        ));
    }
    Ok(got)
}

fn restore_file(
    store: &dyn Store,
    r: &FileRecord,
    keyring: Option<&Keyring>,
    spool: &Path,
    dir: &Path,
) -> Result<()> {
    let path = dir.join(&r.path);
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent)
            .with_context(|| format!("failed to create {}", parent.display()))?;
    }
    pipeline::download(
        store,
        &r.object_entry(),
        r.compression,
        if r.key_id.is_some() { keyring } else { None },
        spool,
        Arc::new(Silent),
        |src| {
            let f = fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&path)
                .with_context(|| format!("failed to create {}", path.display()))?;
            let mut w = BufWriter::with_capacity(1 << 20, f);
            io::copy(src, &mut w).with_context(|| format!("failed to write {}", path.display()))?;
            // Made durable with the whole tree before it is put in place.
            w.into_inner()
                .map_err(|e| e.into_error())
                .with_context(|| format!("failed to write {}", path.display()))?;
            Ok(())
        },
    )
    .with_context(|| format!("failed to restore {} from {}", r.path, r.object))?;
    if let Some(ns) = r.mtime_ns.filter(|n| *n >= 0) {
        let t = SystemTime::UNIX_EPOCH + Duration::from_nanos(ns as u64);
        let _ = fs::File::options()
            .write(true)
            .open(&path)
            .and_then(|f| f.set_modified(t));
    }
    Ok(())
}

/// Every regular file under `dir`, as sorted `/`-separated relative paths.
pub fn walk_files(dir: &Path) -> Result<Vec<String>> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).with_context(|| format!("failed to read {}", d.display()))? {
            let e = e?;
            if e.file_type()?.is_dir() {
                stack.push(e.path());
            } else if let Ok(rel) = e.path().strip_prefix(dir) {
                out.push(rel.to_string_lossy().into_owned());
            }
        }
    }
    out.sort();
    Ok(out)
}

/// The restore of a replication: staging beside the target, [`restore_tree`],
/// then the staging put in place.
pub fn run(src: &Source, rp: &RestorePlan, opts: &Options) -> Result<()> {
    let m = rp
        .backup
        .as_ref()
        .context("a Parquet restore needs a replication")?;
    let done = opts
        .envelope(rp.kind)
        .deliver(&src.work, src.ui, |staging| restore_tree(src, m, staging))?;
    let (target, restored, elapsed) = (&done.target, &done.made, done.elapsed);
    let bytes: u64 = restored.iter().map(|f| f.size).sum();
    if src.ui.json {
        return ui::document(json!({
            "schema": "bkp.restore/1",
            "id": m.id,
            "kind": "parquet",
            "target": target.path.display().to_string(),
            "files": restored,
            "bytes": bytes,
            "seconds": elapsed.as_secs_f64(),
        }));
    }
    src.ui.info(&format!(
        "restored replicate {} into {}: {}, {}, verified, in {:.1}s ({})",
        m.id,
        target.path.display(),
        crate::units::count(restored.len() as u64, "file"),
        ui::size(bytes),
        elapsed.as_secs_f64(),
        ui::rate(bytes, elapsed)
    ));
    ui::print(&target.path.display().to_string())
}
