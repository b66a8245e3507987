//! `bkp restore`: manifest → download → verify SHA-256 → decrypt → decompress →
//! unpack into a staging directory beside the target → check every file against
//! the manifest → rename into place.
//!
//! The target is touched only after everything verified: a damaged backup, a wrong
//! key or an interrupted run leave it exactly as it was. A non-empty target is
//! replaced only with `--force`, and then by a rename swap.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result};
use serde_json::json;

use super::{open_store, pitr, Ctx};
use crate::cli::RestoreArgs;
use crate::config::{Plan, StorePlan};
use crate::exit::{coded, Code};
use crate::manifest::{self, Kind};
use crate::{archive, pipeline, ui};
use time::OffsetDateTime;

/// Removes a directory when dropped, unless disarmed.
struct Scratch(Option<PathBuf>);

impl Drop for Scratch {
    fn drop(&mut self) {
        if let Some(p) = self.0.take() {
            let _ = fs::remove_dir_all(p);
        }
    }
}

fn is_empty_dir(p: &Path) -> Result<bool> {
    Ok(fs::read_dir(p)
        .with_context(|| format!("failed to read {}", p.display()))?
        .next()
        .is_none())
}

/// `p` made absolute with symlinks resolved as far as it exists.
fn resolved(p: &Path) -> PathBuf {
    p.canonicalize()
        .unwrap_or_else(|_| std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf()))
}

/// Refuses to replace a directory that holds something bkp or a replica needs: the
/// store, the work directory, the config, or a file a running process has locked
/// (a live TigerBeetle data file).
fn guard_target(plan: &Plan, target: &Path) -> Result<()> {
    let target = resolved(target);
    let mut precious = vec![
        ("the work directory", resolved(&plan.work_dir)),
        ("the config file", resolved(&plan.source)),
    ];
    if let StorePlan::Local(root) = &plan.store {
        precious.push(("the backup store", resolved(root)));
    }
    if let Some(df) = plan.tigerbeetle.as_ref().and_then(|t| t.data_file.as_ref()) {
        precious.push(("the configured TigerBeetle data file", resolved(df)));
    }
    for (what, p) in precious {
        if p.starts_with(&target) {
            return Err(coded(
                Code::TargetExists,
                format!(
                    "refusing to restore into {}: it holds {what} ({}); choose a new directory",
                    target.display(),
                    p.display()
                ),
            ));
        }
    }
    let mut stack = vec![target.clone()];
    while let Some(dir) = stack.pop() {
        for e in fs::read_dir(&dir).with_context(|| format!("failed to read {}", dir.display()))? {
            let e = e?;
            let ft = e.file_type()?;
            if ft.is_dir() {
                stack.push(e.path());
            } else if ft.is_file() {
                if let Ok(f) = fs::File::open(e.path()) {
                    if let Err(fs::TryLockError::WouldBlock) = f.try_lock() {
                        return Err(coded(
                            Code::UnsafeSource,
                            format!("refusing to replace {}: {} is locked by a running process (a live TigerBeetle replica?); stop it or choose a new directory", target.display(), e.path().display()),
                        ));
                    }
                }
            }
        }
    }
    Ok(())
}

pub fn run(ctx: &Ctx, args: &RestoreArgs) -> Result<()> {
    if super::export_restore::wants(ctx, args)? {
        return super::export_restore::run(ctx, args);
    }
    let plan = &ctx.plan;
    let target = std::path::absolute(&args.target)
        .with_context(|| format!("invalid target {}", args.target.display()))?;

    // Refuse early, before any download, when the target would be overwritten.
    let exists = match fs::symlink_metadata(&target) {
        Ok(m) if m.is_dir() => true,
        Ok(_) => {
            return Err(coded(
                Code::TargetExists,
                format!(
                    "restore target {} exists and is not a directory: choose a new directory",
                    target.display()
                ),
            ))
        }
        Err(_) => false,
    };
    if exists && !args.force && !is_empty_dir(&target)? {
        return Err(coded(
            Code::TargetExists,
            format!(
                "restore target {} is not empty: choose a new directory, or pass --force to replace its contents (they are swapped out only after the restore verified)",
                target.display()
            ),
        ));
    }

    if exists {
        guard_target(plan, &target)?;
    }

    let at = parse_at(args.at.as_deref())?;
    let store = open_store(plan)?;
    let m = match at {
        Some(at) if args.backup == "latest" => {
            let (all, _) = manifest::list(store.as_ref(), Some(Kind::Tigerbeetle))?;
            all.into_iter()
                .rev()
                .find(|m| m.operation == "snapshot" && m.started_at <= at)
        }
        None if args.backup == "latest" && Kind::from(args.kind) == Kind::Parquet => {
            Some(super::replicate::latest(store.as_ref())?)
        }
        _ => Some(
            manifest::find(store.as_ref(), &args.backup, Some(Kind::from(args.kind))).or_else(
                |e| {
                    if args.backup == "latest" {
                        Err(e)
                    } else {
                        manifest::find(store.as_ref(), &args.backup, None)
                    }
                },
            )?,
        ),
    };
    if let Some(m) = m
        .as_ref()
        .filter(|m| m.kind == Kind::Parquet && at.is_none())
    {
        return super::replicate_restore::run(ctx, store.as_ref(), m, &target, exists);
    }
    if let Some(m) = &m {
        if m.kind != Kind::Tigerbeetle || m.operation != "snapshot" {
            return Err(coded(
                Code::Config,
                format!(
                    "backup {} is a {} {}; this bkp restores TigerBeetle snapshots (and, with --at, their logs)",
                    m.id,
                    m.kind.as_str(),
                    m.operation
                ),
            ));
        }
    }
    let keyring = match (&m, at) {
        (_, Some(_)) => plan.keyring()?,
        (Some(m), None) => match &m.encryption {
            Some(e) => Some(plan.keyring()?.ok_or_else(|| {
                coded(
                    Code::Config,
                    format!("backup {} is encrypted with key {}, but the config has no [encryption] key: configure it to restore", m.id, e.key_id),
                )
            })?),
            None => None,
        },
        (None, None) => unreachable!("without --at a backup is always found or an error"),
    };
    if let Some(m) = &m {
        ctx.ui.detail(&format!(
            "restoring snapshot {} from {}",
            m.id,
            store.identity()
        ));
    } else {
        ctx.ui.info("no snapshot at or before --at: replaying the log from the beginning into a fresh data file");
    }

    let (parent, name, staging) = staging_beside(&target)?;
    let parent = parent.as_path();
    fs::create_dir(&staging).with_context(|| format!("failed to create {}", staging.display()))?;
    let mut scratch = Scratch(Some(staging.clone()));

    let clock = Instant::now();
    let progress = ctx.progress();
    let mut restored = Vec::new();
    if let Some(m) = &m {
        restored = unpack_backup(ctx, store.as_ref(), keyring.as_ref(), m, &staging, progress)?;
    }
    let replayed = match at {
        Some(at) => {
            let name = restored
                .first()
                .map_or("0_0.tigerbeetle".to_string(), |f| f.name.clone());
            let r = pitr::replay_logs(
                ctx,
                store.as_ref(),
                keyring.as_ref(),
                &staging.join(&name),
                at,
                m.is_none(),
            )?;
            // The replayed file differs from the snapshot's: report its own digest.
            let path = staging.join(&name);
            let digest = crate::stages::hash::digest_reader(std::io::BufReader::new(
                fs::File::open(&path)
                    .with_context(|| format!("failed to open {}", path.display()))?,
            ))?;
            restored = vec![crate::manifest::FileEntry {
                name,
                size: digest.bytes,
                sha256: digest.sha256,
            }];
            Some(r)
        }
        None => None,
    };

    // Swap into place.
    if exists {
        let old = parent.join(format!(".{name}.bkp-old-{}", crate::id::random_u64()));
        fs::rename(&target, &old)
            .with_context(|| format!("failed to move {} aside", target.display()))?;
        if let Err(e) = fs::rename(&staging, &target) {
            let _ = fs::rename(&old, &target);
            return Err(e)
                .with_context(|| format!("failed to move the restore into {}", target.display()));
        }
        // The swap is durable before the old tree goes.
        fs::File::open(parent).and_then(|d| d.sync_all()).ok();
        fs::remove_dir_all(&old)
            .with_context(|| format!("failed to remove the replaced {}", old.display()))?;
    } else {
        fs::rename(&staging, &target)
            .with_context(|| format!("failed to move the restore into {}", target.display()))?;
    }
    scratch.0 = None;
    fs::File::open(parent).and_then(|d| d.sync_all()).ok();

    let bytes: u64 = restored.iter().map(|f| f.size).sum();
    let elapsed = clock.elapsed();
    if ctx.ui.json {
        crate::ui::out(&serde_json::to_string_pretty(&json!({
            "id": m.as_ref().map(|m| m.id),
            "kind": "tigerbeetle",
            "replayed": replayed,
            "target": target.display().to_string(),
            "files": restored,
            "bytes": bytes,
            "seconds": elapsed.as_secs_f64(),
        }))?)?;
    } else {
        let from = m
            .as_ref()
            .map_or("the log".to_string(), |m| format!("snapshot {}", m.id));
        if let Some(r) = &replayed {
            ctx.ui.info(&format!(
                "replayed {} log segment(s) after timestamp {}: {} accounts and {} transfers, up to {}",
                r.segments, r.snapshot_until, r.accounts, r.transfers, r.last_timestamp
            ));
        }
        ctx.ui.info(&format!(
            "restored {from} into {}: {} file(s), {}, verified, in {:.1}s ({})",
            target.display(),
            restored.len(),
            ui::size(bytes),
            elapsed.as_secs_f64(),
            ui::rate(bytes, elapsed)
        ));
        for f in &restored {
            crate::ui::out(&target.join(&f.name).display().to_string())?;
        }
    }
    Ok(())
}

/// Downloads, verifies and unpacks every object of archive backup `m` into `dir`
/// (an empty directory), then checks that exactly the files the manifest names
/// came out, with their sizes and SHA-256. Returns them, sorted by name.
pub fn unpack_backup(
    ctx: &Ctx,
    store: &dyn crate::store::Store,
    keyring: Option<&crate::crypto::Keyring>,
    m: &manifest::Manifest,
    dir: &Path,
    progress: std::sync::Arc<dyn crate::stages::progress::Progress>,
) -> Result<Vec<manifest::FileEntry>> {
    let mut restored = Vec::new();
    let keyring = pipeline::keys_for(m, keyring)?;
    for entry in &m.objects {
        pipeline::download(
            store,
            entry,
            m.compression,
            keyring,
            &ctx.plan.work_dir,
            progress.clone(),
            |r| {
                restored.extend(archive::unpack(r, dir)?);
                Ok(())
            },
        )?;
    }
    // Every file the manifest names, with its exact size and digest; nothing else.
    let mut want = m.files.clone();
    want.sort_by(|a, b| a.name.cmp(&b.name));
    restored.sort_by(|a, b| a.name.cmp(&b.name));
    if want != restored {
        return Err(coded(
            Code::Integrity,
            format!(
                "backup {}: the restored files do not match the manifest (expected {:?}, got {:?}); the target was not touched",
                m.id, want, restored
            ),
        ));
    }
    Ok(restored)
}

/// `--at TIME`, parsed (RFC 3339).
pub fn parse_at(at: Option<&str>) -> Result<Option<OffsetDateTime>> {
    at.map(|t| {
        OffsetDateTime::parse(t, &time::format_description::well_known::Rfc3339).map_err(|e| {
            coded(
                Code::Config,
                format!("--at {t:?} is not an RFC 3339 time ({e}); example: 2026-11-22T13:05:00Z"),
            )
        })
    })
    .transpose()
}

/// Where a restore into `target` is built before it is renamed into place: a
/// hidden, uniquely named sibling (same file system, so the rename is atomic).
/// Returns the parent directory (created if missing), the target's name and the
/// staging path.
pub fn staging_beside(target: &Path) -> Result<(PathBuf, String, PathBuf)> {
    let parent = target.parent().with_context(|| {
        format!(
            "restore target {} has no parent directory",
            target.display()
        )
    })?;
    fs::create_dir_all(parent).with_context(|| format!("failed to create {}", parent.display()))?;
    let name = target
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let staging = parent.join(format!(".{name}.bkp-restore-{}", crate::id::random_u64()));
    Ok((parent.to_path_buf(), name, staging))
}
