//! `bkp restore` of a PostgreSQL base backup: a new data directory, checked
//! file by file by `pg_verifybackup` against the backup's own manifest before it
//! is put in place.
//!
//! The stored object's SHA-256 is checked before anything of it is used; the
//! tar stream is then unpacked (every encrypted chunk authenticated, every
//! zstd frame's checksum checked) into a staging directory beside the
//! target; `pg_verifybackup` then checks every file's size and checksum and
//! the WAL the backup needs; only then is the directory (0700, files 0600)
//! renamed into place. The result starts as the server was at the end of the
//! backup: `chown -R postgres:` it and start PostgreSQL on it.
//!
//! The backup's `postgresql.auto.conf` (its `ALTER SYSTEM` settings) is set
//! aside as `postgresql.auto.conf.from-backup` and replaced by one of bkp's
//! own: PostgreSQL reads that file whatever configuration it is started with,
//! and its settings can run commands and load libraries as the user who
//! starts the server, who here reads bkp's keys. The operator reads it and
//! copies back what they trust.

use std::path::Path;

use anyhow::{Context, Result};
use serde_json::json;

use super::{Options, RestorePlan, Source};
use crate::config::Plan;
use crate::exit::{coded, Code};
use crate::manifest::Manifest;
use crate::{pipeline, ui};

pub fn run(src: &Source, rp: &RestorePlan, opts: &Options) -> Result<()> {
    let m = rp
        .backup
        .as_ref()
        .context("a base backup restore needs a base backup")?;
    let envelope = opts.envelope(rp.kind);
    envelope.check()?;
    let verifier = verifier(opts.plan, m)?;
    if rp.at.is_some() {
        super::pgpitr::check_user()?;
    }
    if let Some(why) = unsealed(src.trust, m) {
        src.ui.warn(&format!(
            "base backup {}'s manifest {why}: nothing proves it is the backup bkp made. bkp sets its postgresql.auto.conf aside, but a postgresql.conf in it runs commands as the server's user once started with it: read that before starting it",
            m.id
        ));
    }
    let done = envelope.deliver(&src.work, src.ui, |staging| {
        src.announce(m, opts.target);
        let files = restore_tree(src, m, staging, &verifier)?;
        let set_aside = super::pgconf::set_aside_configuration(staging)?;
        let reached = match rp.at {
            Some(at) => {
                let work = src.work.scratch("pitr")?;
                Some(super::pgpitr::recover(
                    src,
                    m,
                    staging,
                    Some(at),
                    &verifier,
                    work.path(),
                )?)
            }
            None => None,
        };
        Ok((files, set_aside, reached))
    })?;
    let (target, elapsed) = (&done.target, done.elapsed);
    let (files, set_aside, reached) = done.made;
    let bytes = m.objects.first().map_or(0, |o| o.content_bytes);
    if src.ui.json {
        return ui::document(json!({
            "schema": "bkp.restore/1",
            "id": m.id,
            "kind": "postgres",
            "target": target.path.display().to_string(),
            "files_verified": files,
            "bytes": bytes,
            "at": rp.at.map(|t| t.format(&time::format_description::well_known::Rfc3339).unwrap_or_default()),
            "recovery": reached.as_ref().map(|r| json!({
                "stopped": r.stop,
                "last_commit": r.last_commit,
                "wal_files": r.files,
                "wal_bytes": r.bytes,
                "timeline": r.timeline,
            })),
            "seconds": elapsed.as_secs_f64(),
        }));
    }
    if let Some(r) = &reached {
        src.ui.info(&format!(
            "replayed {} archived WAL files ({}) to {}: PostgreSQL reports \"{}\"; last transaction replayed committed at {}; promoted to timeline {}",
            r.files,
            ui::size(r.bytes),
            opts.at.unwrap_or_default(),
            r.stop.as_deref().unwrap_or_default(),
            r.last_commit.as_deref().unwrap_or("(none)"),
            r.timeline.as_deref().unwrap_or("?"),
        ));
    }
    let kept = if set_aside {
        format!(" The backup's own postgresql.auto.conf (its ALTER SYSTEM settings, which can run commands) is kept as {}, unused: read it and copy back what you trust.", super::pgconf::SET_ASIDE)
    } else {
        String::new()
    };
    src.ui.info(&format!(
        "restored base backup {} into {}: {files} files verified by pg_verifybackup, {} in {:.1}s. WAL archiving is off in it (postgresql.auto.conf), so that it never writes into the source's archive.{kept} Start it as the server's user: chown -R postgres: {} && pg_ctl -D {} start (on Debian, with the cluster's configuration from /etc/postgresql, and another port while the source runs)",
        m.id,
        target.path.display(),
        ui::size(bytes),
        elapsed.as_secs_f64(),
        target.path.display(),
        target.path.display(),
    ));
    ui::print(&target.path.display().to_string())
}

/// The `pg_verifybackup` that checks base backup `m`, found before anything is
/// downloaded (restores and drills alike).
pub fn verifier(plan: &Plan, m: &Manifest) -> Result<std::path::PathBuf> {
    crate::sources::postgres::base_backup_verifier(
        plan.postgres.as_ref().and_then(|p| p.bin_dir.as_deref()),
        m.source.get("server_version").and_then(|v| v.as_str()),
    )
}

/// Unpacks base backup `m` into `dir` (an empty directory) through the
/// verifying pipeline and checks it with `pg_verifybackup`; the number of
/// files its manifest lists.
pub fn restore_tree(src: &Source, m: &Manifest, dir: &Path, verifier: &Path) -> Result<usize> {
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
    src.ui.timed(
        || format!("read, decrypted and unpacked base backup {}", m.id),
        || {
            let progress = src.progress.clone();
            let into_dir = |r: &mut dyn std::io::Read| unpack(m, r, dir);
            // The stored object's digest is checked before anything is used,
            // every chunk is authenticated, every zstd frame carries its
            // checksum, and pg_verifybackup checks every file against the
            // backup's manifest: a second SHA-256 pass over the whole
            // archive would prove nothing more.
            pipeline::download_as(
                src.store,
                entry,
                pipeline::Decode::Files(m.compression),
                keyring,
                spool.path(),
                progress,
                into_dir,
            )
        },
    )?;
    src.ui.timed(
        || "pg_verifybackup checked its files".into(),
        || crate::sources::postgres::verify_base_backup(verifier, dir),
    )
}

/// Unpacks the tar stream `r` into `dir`: regular files and directories only
/// (`pg_basebackup` writes nothing else to a pipe), each inside `dir`. Any
/// other entry, or one that would land outside, is damage; so is a
/// `tablespace_map` that names a tablespace. bkp backs up no server with
/// tablespaces, and PostgreSQL links each one it names from `pg_tblspc` when
/// it starts on the backup, then writes through that link: a forged map
/// would have the server that bkp starts (`restore --at`, `verify --drill`)
/// write outside the data directory.
fn unpack(m: &Manifest, r: &mut dyn std::io::Read, dir: &Path) -> Result<()> {
    let damaged = |what: String| {
        coded(
            Code::Integrity,
            format!(
                "base backup {} is damaged: {what}; nothing was restored",
                m.id
            ),
        )
    };
    let mut archive = tar::Archive::new(r);
    archive.set_preserve_permissions(false);
    archive.set_overwrite(false);
    let entries = archive
        .entries()
        .map_err(|e| damaged(format!("its tar stream cannot be read ({e})")))?;
    for entry in entries {
        let mut entry =
            entry.map_err(|e| damaged(format!("its tar stream cannot be read ({e})")))?;
        let path = entry
            .path()
            .map(|p| p.display().to_string())
            .unwrap_or_default();
        let kind = entry.header().entry_type();
        if !(kind.is_file() || kind.is_dir()) {
            return Err(damaged(format!(
                "{path:?} is a {kind:?} entry, which pg_basebackup does not write"
            )));
        }
        let inside: std::path::PathBuf = entry
            .path()
            .map(|p| {
                p.components()
                    .filter(|c| matches!(c, std::path::Component::Normal(_)))
                    .collect()
            })
            .unwrap_or_default();
        if inside == Path::new("tablespace_map") && entry.size() > 0 {
            return Err(damaged(
                "its tablespace_map names tablespaces, and bkp backs up no server that has any"
                    .into(),
            ));
        }
        match entry.unpack_in(dir) {
            // The restore is made durable at its end: its disk writes start
            // now, while the next files are decompressed and unpacked.
            Ok(true) if kind.is_file() => {
                use std::os::unix::fs::OpenOptionsExt;
                if let Ok(f) = std::fs::OpenOptions::new()
                    .read(true)
                    .custom_flags(libc::O_NOFOLLOW)
                    .open(dir.join(inside))
                {
                    crate::direct::write_behind(&f, 0, 0);
                }
            }
            Ok(true) => {}
            Ok(false) => return Err(damaged(format!("{path:?} lies outside the data directory"))),
            Err(e) => return Err(damaged(format!("{path:?} cannot be unpacked ({e})"))),
        }
    }
    Ok(())
}

/// Refuses a data directory a server may still run on (or one inside it, as
/// Debian's /var/lib/postgresql/15/main): it would be corrupted under it.
pub fn in_use(dir: &Path) -> Result<()> {
    match find_postmaster_pid(dir, 4) {
        Some(pid) => Err(coded(
            Code::TargetExists,
            format!(
                "{} holds {}: a PostgreSQL server may be running on it. Stop it (or, after a crash, remove the file), or restore into a new directory",
                dir.display(),
                pid.display()
            ),
        )),
        None => Ok(()),
    }
}

/// A `postmaster.pid` in `dir` or up to `depth` levels below it.
fn find_postmaster_pid(dir: &Path, depth: usize) -> Option<std::path::PathBuf> {
    let pid = dir.join("postmaster.pid");
    if pid.exists() {
        return Some(pid);
    }
    if depth == 0 {
        return None;
    }
    std::fs::read_dir(dir)
        .ok()?
        .filter_map(|e| e.ok())
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .find_map(|e| find_postmaster_pid(&e.path(), depth - 1))
}

/// How `m` is unsealed, for the PostgreSQL restores' own warning (what it
/// runs once started): without `[encryption]` nothing is sealed; with it, a
/// backup used because the operator or a sealed list vouched for it.
pub(super) fn unsealed(trust: &crate::manifest::Trust, m: &Manifest) -> Option<&'static str> {
    if trust.keys().is_none() {
        Some("is not sealed (no [encryption])")
    } else {
        trust
            .excused_why(m)
            .map(|_| "is not sealed by the current key")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exit::classify;
    use crate::manifest::{tests::sample, Kind};

    /// A tar stream of `files` (name, content).
    fn tar_of(files: &[(&str, &[u8])]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (name, data) in files {
            let mut h = tar::Header::new_gnu();
            h.set_size(data.len() as u64);
            h.set_mode(0o600);
            h.set_cksum();
            b.append_data(&mut h, name, *data).unwrap();
        }
        b.into_inner().unwrap()
    }

    #[test]
    fn a_tablespace_map_that_names_a_tablespace_is_damage() {
        let m = sample(Kind::Postgres, time::OffsetDateTime::now_utc());
        let dir = tempfile::tempdir().unwrap();
        for d in ["a", "b"] {
            std::fs::create_dir(dir.path().join(d)).unwrap();
        }
        // An empty map, as a server without tablespaces may leave, unpacks.
        let fine = tar_of(&[("PG_VERSION", b"16\n"), ("tablespace_map", b"")]);
        unpack(&m, &mut fine.as_slice(), &dir.path().join("a")).unwrap();
        assert!(dir.path().join("a/tablespace_map").is_file());
        let forged = tar_of(&[
            ("PG_VERSION", b"16\n"),
            ("tablespace_map", b"16390 /var/lib/postgresql/other\n"),
        ]);
        let err = unpack(&m, &mut forged.as_slice(), &dir.path().join("b")).unwrap_err();
        assert_eq!(classify(&err), Some(Code::Integrity), "{err:#}");
        assert!(format!("{err:#}").contains("tablespace_map"), "{err:#}");
        assert!(!dir.path().join("b/tablespace_map").exists());
    }
}
