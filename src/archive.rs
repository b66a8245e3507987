//! tar archives: writing files into one, and unpacking one without trusting it.
//!
//! Unpacking accepts only plain files and directories with relative paths that stay
//! inside the destination: `..`, absolute paths, symlinks, hard links and device
//! nodes are refused, because a backup read back from a shared bucket is input
//! like any other. Every file's SHA-256 is computed while it is written, so the
//! caller can compare with the manifest.

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufWriter, Read, Write};
use std::path::{Component, Path, PathBuf};

use anyhow::{Context, Result};

use crate::exit::{coded, Code};
use crate::manifest::FileEntry;
use crate::stages::hash::HashWriter;

/// Writes `files` (name in archive, path on disk) as a tar stream into `w`.
pub fn write_files(w: &mut dyn Write, files: &[(String, PathBuf)]) -> Result<()> {
    let mut b = tar::Builder::new(w);
    b.follow_symlinks(false);
    for (name, path) in files {
        let mut f =
            File::open(path).with_context(|| format!("failed to open {}", path.display()))?;
        b.append_file(name, &mut f)
            .with_context(|| format!("failed to archive {}", path.display()))?;
    }
    b.into_inner().context("failed to end the archive")?;
    Ok(())
}

fn unsafe_entry(what: impl std::fmt::Display) -> anyhow::Error {
    coded(
        Code::Integrity,
        format!("refusing to unpack the archive: {what}. A bkp archive only holds plain files; this one was altered or is not a bkp backup"),
    )
}

/// Unpacks the tar stream `r` into the existing, empty directory `dest`.
pub fn unpack(r: &mut dyn Read, dest: &Path) -> Result<Vec<FileEntry>> {
    let mut archive = tar::Archive::new(r);
    let mut out = Vec::new();
    for entry in archive.entries().context("failed to read the archive")? {
        let mut entry = entry.context("failed to read an archive entry")?;
        let path = entry
            .path()
            .context("archive entry with an unreadable path")?
            .into_owned();
        let name = path.to_string_lossy().into_owned();
        if path.as_os_str().is_empty()
            || !path.components().all(|c| matches!(c, Component::Normal(_)))
        {
            return Err(unsafe_entry(format!(
                "entry {name:?} would land outside the target"
            )));
        }
        let target = dest.join(&path);
        match entry.header().entry_type() {
            tar::EntryType::Directory => {
                fs::create_dir_all(&target)
                    .with_context(|| format!("failed to create {}", target.display()))?;
            }
            // GNU sparse entries (files with holes, such as a grown TigerBeetle data
            // file) read back with their holes as zeros.
            tar::EntryType::Regular | tar::EntryType::Continuous | tar::EntryType::GNUSparse => {
                if let Some(parent) = target.parent() {
                    fs::create_dir_all(parent)
                        .with_context(|| format!("failed to create {}", parent.display()))?;
                }
                let file = OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .open(&target)
                    .with_context(|| {
                        format!(
                            "failed to create {} (a duplicate archive entry?)",
                            target.display()
                        )
                    })?;
                let mut w = HashWriter::new(BufWriter::with_capacity(1 << 20, file));
                io::copy(&mut entry, &mut w)
                    .with_context(|| format!("failed to write {}", target.display()))?;
                let (buf, d) = w.finish()?;
                let file = buf.into_inner().map_err(|e| e.into_error())?;
                if let Ok(mode) = entry.header().mode() {
                    use std::os::unix::fs::PermissionsExt;
                    let _ = file.set_permissions(fs::Permissions::from_mode(mode & 0o777));
                }
                file.sync_all()
                    .with_context(|| format!("failed to sync {}", target.display()))?;
                out.push(FileEntry {
                    name,
                    size: d.bytes,
                    sha256: d.sha256,
                });
            }
            other => {
                return Err(unsafe_entry(format!(
                    "entry {name:?} is a {other:?}, not a plain file"
                )));
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tar_with(build: impl FnOnce(&mut tar::Builder<Vec<u8>>)) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        build(&mut b);
        b.into_inner().unwrap()
    }

    fn header(kind: tar::EntryType, size: u64) -> tar::Header {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(kind);
        h.set_size(size);
        h.set_mode(0o600);
        h
    }

    #[test]
    fn round_trip_hashes_every_file() {
        let src = tempfile::tempdir().unwrap();
        let p = src.path().join("0_0.tigerbeetle");
        fs::write(&p, b"ledger bytes").unwrap();
        let mut buf = Vec::new();
        write_files(&mut buf, &[("0_0.tigerbeetle".into(), p)]).unwrap();
        let dest = tempfile::tempdir().unwrap();
        let files = unpack(&mut &buf[..], dest.path()).unwrap();
        assert_eq!(files.len(), 1);
        assert_eq!(files[0].size, 12);
        assert_eq!(
            files[0].sha256,
            crate::stages::hash::digest_reader(&b"ledger bytes"[..])
                .unwrap()
                .sha256
        );
        assert_eq!(
            fs::read(dest.path().join("0_0.tigerbeetle")).unwrap(),
            b"ledger bytes"
        );
    }

    #[test]
    fn sparse_files_round_trip() {
        let src = tempfile::tempdir().unwrap();
        let p = src.path().join("sparse");
        {
            use std::io::{Seek, SeekFrom};
            let mut f = File::create(&p).unwrap();
            f.seek(SeekFrom::Start(3 << 20)).unwrap();
            f.write_all(b"middle").unwrap();
            f.set_len(8 << 20).unwrap();
        }
        let original = fs::read(&p).unwrap();
        let mut buf = Vec::new();
        write_files(&mut buf, &[("sparse".into(), p)]).unwrap();
        let dest = tempfile::tempdir().unwrap();
        let files = unpack(&mut &buf[..], dest.path()).unwrap();
        assert_eq!(files[0].size, 8 << 20);
        assert!(fs::read(dest.path().join("sparse")).unwrap() == original);
    }

    #[test]
    fn escaping_and_special_entries_are_refused() {
        let cases: Vec<(&str, Vec<u8>)> = vec![
            (
                "dotdot",
                tar_with(|b| {
                    let mut h = header(tar::EntryType::Regular, 1);
                    // set_path refuses "..", so write the name bytes directly.
                    h.as_old_mut().name[..7].copy_from_slice(b"../evil");
                    h.set_cksum();
                    b.append(&h, &b"x"[..]).unwrap();
                }),
            ),
            (
                "absolute",
                tar_with(|b| {
                    let mut h = header(tar::EntryType::Regular, 1);
                    h.as_old_mut().name[..9].copy_from_slice(b"/tmp/evil");
                    h.set_cksum();
                    b.append(&h, &b"x"[..]).unwrap();
                }),
            ),
            (
                "symlink",
                tar_with(|b| {
                    let mut h = header(tar::EntryType::Symlink, 0);
                    b.append_link(&mut h, "link", "/etc/passwd").unwrap();
                }),
            ),
            (
                "hardlink",
                tar_with(|b| {
                    let mut h = header(tar::EntryType::Link, 0);
                    b.append_link(&mut h, "link", "/etc/passwd").unwrap();
                }),
            ),
        ];
        for (what, bytes) in cases {
            let dest = tempfile::tempdir().unwrap();
            let err = unpack(&mut &bytes[..], dest.path()).unwrap_err();
            assert_eq!(
                crate::exit::exit_code(&err),
                crate::exit::INTEGRITY,
                "{what}: {err:#}"
            );
            assert!(
                fs::read_dir(dest.path()).unwrap().next().is_none(),
                "{what} wrote something"
            );
        }
    }
}
