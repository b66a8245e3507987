//! `bkp restore` of a PostgreSQL base backup: a new data directory, checked
//! file by file by `pg_verifybackup` against the backup's own manifest before it
//! is put in place.
//!
//! The tar stream is verified (stored SHA-256, every encrypted chunk, the
//! content digest) as it is unpacked into a staging directory beside the
//! target; `pg_verifybackup` then checks every file's size and checksum and
//! the WAL the backup needs; only then is the directory (0700, files 0600)
//! renamed into place. The result starts as the server was at the end of the
//! backup: `chown -R postgres:` it and start PostgreSQL on it.

use std::path::Path;
use std::time::Instant;

use anyhow::{Context, Result};
use serde_json::json;

use super::target::{Shape, Target};
use super::{RestorePlan, Source};
use crate::cli::RestoreArgs;
use crate::commands::Ctx;
use crate::exit::{coded, Code};
use crate::manifest::Manifest;
use crate::{pipeline, ui};

pub fn run(ctx: &Ctx, src: &Source, rp: &RestorePlan, args: &RestoreArgs) -> Result<()> {
    let m = rp
        .backup
        .as_ref()
        .context("a base backup restore needs a base backup")?;
    let target = Target::check(
        &args.target,
        Shape::Dir,
        args.force,
        &super::precious(&ctx.plan),
    )?;
    // A server that still runs on the directory would be corrupted under it.
    let pid = target.path.join("postmaster.pid");
    if target.exists && pid.exists() {
        return Err(coded(
            Code::TargetExists,
            format!(
                "{} holds postmaster.pid: a PostgreSQL server may be running on it. Stop it (or, after a crash, remove the file), or restore into a new directory",
                target.path.display()
            ),
        ));
    }
    super::countdown::before_replacing(&target, args.yes)?;
    let mut scratch = src.work.scratch("restore")?;
    let staging = target.stage(&mut scratch)?;
    let clock = Instant::now();
    ctx.ui.detail(&format!(
        "restoring base backup {} from {} into {}",
        m.id,
        src.store.identity(),
        target.path.display()
    ));
    let bin_dir = ctx
        .plan
        .postgres
        .as_ref()
        .and_then(|p| p.bin_dir.as_deref());
    let files = restore_tree(src, m, &staging, bin_dir)?;
    target.commit(&staging, &mut scratch)?;
    let elapsed = clock.elapsed();
    let bytes = m.objects.first().map_or(0, |o| o.content_bytes);
    if ctx.ui.json {
        return ui::print(&serde_json::to_string_pretty(&json!({
            "schema": "bkp.restore/1",
            "id": m.id,
            "kind": "postgres",
            "target": target.path.display().to_string(),
            "files_verified": files,
            "bytes": bytes,
            "seconds": elapsed.as_secs_f64(),
        }))?);
    }
    ctx.ui.info(&format!(
        "restored base backup {} into {}: {files} files verified by pg_verifybackup, {} in {:.1}s. Start it as the server's user: chown -R postgres: {} && pg_ctl -D {} start",
        m.id,
        target.path.display(),
        ui::size(bytes),
        elapsed.as_secs_f64(),
        target.path.display(),
        target.path.display(),
    ));
    ui::print(&target.path.display().to_string())
}

/// Unpacks base backup `m` into `dir` (an empty directory) through the
/// verifying pipeline and checks it with `pg_verifybackup`; the number of
/// files its manifest lists.
pub fn restore_tree(
    src: &Source,
    m: &Manifest,
    dir: &Path,
    bin_dir: Option<&Path>,
) -> Result<usize> {
    let [entry] = m.objects.as_slice() else {
        return Err(coded(
            Code::Integrity,
            format!(
                "base backup {} lists {} objects; it has exactly one",
                m.id,
                m.objects.len()
            ),
        ));
    };
    let keyring = pipeline::keys_for(m, src.keyring)?;
    let spool = src.work.scratch("spool")?;
    pipeline::download(
        src.store,
        entry,
        m.compression,
        keyring,
        spool.path(),
        src.progress.clone(),
        |r| {
            let mut archive = tar::Archive::new(r);
            archive.set_preserve_permissions(false);
            archive.set_overwrite(false);
            archive
                .unpack(dir)
                .with_context(|| format!("failed to unpack base backup {}", m.id))
        },
    )?;
    crate::sources::postgres::verify_base_backup(bin_dir, dir)
}
