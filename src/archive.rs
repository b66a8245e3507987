//! tar archives: writing files into one, and unpacking one without trusting it.
//!
//! Unpacking accepts only plain files and directories with relative paths that stay
//! inside the destination: `..`, absolute paths, symlinks, hard links and device
//! nodes are refused, because a backup read back from a shared bucket is input
//! like any other. Every file's SHA-256 is computed while it is written, so the
//! caller can compare with the manifest.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Component, Path, PathBuf};

use anyhow::{Context, Result};

use crate::direct::{self, ALIGN};
use crate::exit::{coded, Code};
use crate::manifest::FileEntry;
use crate::stages::hash::{HashReader, HashWriter};
use crate::stages::pipe::ThreadWriter;

/// Writes `files` (name in archive, path on disk) as a tar stream into `w`,
/// returning each file's size and SHA-256 as read: the one pass over a file that
/// archives it also digests it. A file whose size changes while it is read is
/// refused (its copy would not be the file the manifest describes).
pub fn write_files(w: &mut dyn Write, files: &[(String, PathBuf)]) -> Result<Vec<FileEntry>> {
    let mut b = tar::Builder::new(w);
    b.follow_symlinks(false);
    let mut out = Vec::with_capacity(files.len());
    for (name, path) in files {
        let f = File::open(path).with_context(|| format!("failed to open {}", path.display()))?;
        let meta = f
            .metadata()
            .with_context(|| format!("failed to read the metadata of {}", path.display()))?;
        if !meta.is_file() {
            anyhow::bail!(
                "{} is not a plain file: name the file itself in the config",
                path.display()
            );
        }
        let mut header = tar::Header::new_gnu();
        header.set_metadata_in_mode(&meta, tar::HeaderMode::Complete);
        let mut r = HashReader::new(io::BufReader::with_capacity(1 << 20, f));
        b.append_data(&mut header, name, &mut r)
            .with_context(|| format!("failed to archive {}", path.display()))?;
        let (f, d) = r.finish();
        let now = f
            .into_inner()
            .metadata()
            .with_context(|| format!("failed to read the metadata of {}", path.display()))?
            .len();
        if d.bytes != meta.len() || now != meta.len() {
            anyhow::bail!(
                "{} changed size while it was archived ({} bytes when opened, {} read, {} now): something else writes to it",
                path.display(),
                meta.len(),
                d.bytes,
                now
            );
        }
        out.push(FileEntry {
            name: name.clone(),
            size: d.bytes,
            sha256: d.sha256,
        });
    }
    b.into_inner().context("failed to end the archive")?;
    Ok(out)
}

fn unsafe_entry(what: impl std::fmt::Display) -> anyhow::Error {
    coded(
        Code::Integrity,
        format!("refusing to unpack the archive: {what}. A bkp archive only holds plain files; this one was altered or is not a bkp backup"),
    )
}

/// Whether `name` (from a manifest: untrusted) is one plain file name that
/// stays inside the directory it is joined to.
pub fn is_plain_name(name: &str) -> bool {
    let path = Path::new(name);
    !name.is_empty()
        && !name.contains('\0')
        && path.components().count() == 1
        && matches!(path.components().next(), Some(Component::Normal(_)))
}

/// Unpacks the tar stream `r` into the existing, empty directory `dest`:
/// only the files of `expected` (a sealed manifest's), each at the size it
/// records, checked from its header before a byte is written. A sparse
/// entry's header may claim terabytes of holes that a few bytes of archive
/// describe: read back as zeros, they would be hashed for hours before the
/// digest could refuse them.
pub fn unpack(r: &mut dyn Read, dest: &Path, expected: &[FileEntry]) -> Result<Vec<FileEntry>> {
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
                match expected.iter().find(|f| f.name == name) {
                    None => {
                        return Err(unsafe_entry(format!(
                            "entry {name:?} is not a file its manifest names"
                        )))
                    }
                    Some(f) if f.size != entry.size() => {
                        return Err(unsafe_entry(format!(
                            "entry {name:?} holds {} bytes, and its manifest records {}",
                            entry.size(),
                            f.size
                        )))
                    }
                    Some(_) => {}
                }
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
                // Hashing here, writing on a thread of its own: the two are
                // most of a restore's work once the download is decoded.
                let writer = ThreadWriter::spawn("write", Sparse::new(file), |s| Ok(s.finish()?))
                    .with_context(|| format!("failed to write {}", target.display()))?;
                let mut w = HashWriter::new(writer);
                io::copy(&mut entry, &mut w)
                    .with_context(|| format!("failed to write {}", target.display()))?;
                let (writer, d) = w.finish()?;
                let file = writer
                    .finish()
                    .with_context(|| format!("failed to write {}", target.display()))?;
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

/// Writes a file leaving holes where whole aligned blocks are zeros: a
/// TigerBeetle data file is a quarter zeros, which then cost neither disk
/// writes nor disk space, and read back as the zeros they were. Every
/// [`WRITE_BEHIND`] bytes it asks the kernel to start writing what it was
/// given, so that the `fsync` which ends a restore waits for the last few
/// MiB rather than for the whole file.
///
/// [`Sparse::direct`] writes around the page cache (`O_DIRECT`) where the
/// file system allows it: the kernel then copies nothing, where buffered
/// writes of a 4 GB file cost more CPU than decompressing it. Every write
/// then starts at a multiple of [`HOLE_BLOCK`] in the file and comes from
/// the aligned buffer; the unaligned end of the file is written through
/// the page cache.
pub(crate) struct Sparse {
    file: File,
    /// `cap` bytes from `off` on, aligned to [`ALIGN`]; `filled` of them used.
    buf: Vec<u8>,
    off: usize,
    cap: usize,
    filled: usize,
    len: u64,
    /// Where the range not yet handed to write-back starts.
    behind: u64,
    direct: bool,
}

/// Bytes written between two requests to start write-back.
const WRITE_BEHIND: u64 = 32 << 20;

/// The unit of a hole: file systems allocate in blocks of 4 KiB, and a smaller
/// unit than this would turn a run of data into many small writes.
const HOLE_BLOCK: usize = 64 << 10;
const SPARSE_BUF: usize = 16 * HOLE_BLOCK;
/// The buffer of a [`Sparse::direct`] writer: each write waits for the disk,
/// so fewer and larger ones.
const DIRECT_BUF: usize = 64 * HOLE_BLOCK;

/// A block of zeros to compare with and to hand out.
pub(crate) static ZEROS: [u8; HOLE_BLOCK] = [0; HOLE_BLOCK];

/// Whether `b` is all zeros: compared against [`ZEROS`], which the C library
/// does a word at a time.
pub(crate) fn is_zero(b: &[u8]) -> bool {
    b.chunks(ZEROS.len()).all(|c| c == &ZEROS[..c.len()])
}

/// Hands `len` bytes of zeros to `f`, a block at a time.
pub(crate) fn zero_blocks(len: u64, mut f: impl FnMut(&[u8]) -> io::Result<()>) -> io::Result<()> {
    let mut left = len;
    while left > 0 {
        let step = left.min(ZEROS.len() as u64) as usize;
        f(&ZEROS[..step])?;
        left -= step as u64;
    }
    Ok(())
}

impl Sparse {
    pub(crate) fn new(file: File) -> Self {
        Sparse::with_buffer(file, SPARSE_BUF, false)
    }

    /// A writer around the page cache on a local file system known to take
    /// direct writes well (ext4, xfs), else as [`Sparse::new`]: over NFS each
    /// direct write would wait for the server.
    pub(crate) fn direct(file: File) -> Self {
        let direct = direct::supported(&file) && direct::set(&file, true).is_ok();
        Sparse::with_buffer(file, DIRECT_BUF, direct)
    }

    fn with_buffer(file: File, cap: usize, direct: bool) -> Self {
        let buf = vec![0u8; cap + ALIGN];
        let off = direct::start(&buf);
        Sparse {
            file,
            buf,
            off,
            cap,
            filled: 0,
            len: 0,
            behind: 0,
            direct,
        }
    }

    /// Whether writes go around the page cache.
    #[cfg(test)]
    fn is_direct(&self) -> bool {
        self.direct
    }

    /// Starts write-back of what was written up to `upto` once enough has
    /// gathered: only a hint (Linux's `sync_file_range`), so a failure is
    /// left for the final `fsync` to report. Direct writes leave nothing to
    /// write back.
    fn write_behind(&mut self, upto: u64) {
        if self.direct || upto < self.behind + WRITE_BEHIND {
            return;
        }
        direct::write_behind(&self.file, self.behind, upto - self.behind);
        self.behind = upto;
    }

    /// Writes `bytes` at `at`. A file system that refuses a direct write
    /// (`EINVAL`) gets it, and every later one, through the page cache.
    fn write_at(&mut self, bytes: &[u8], at: u64) -> io::Result<()> {
        use std::os::unix::fs::FileExt;
        match self.file.write_all_at(bytes, at) {
            Err(e) if self.direct && e.raw_os_error() == Some(libc::EINVAL) => {
                direct::set(&self.file, false)?;
                self.direct = false;
                self.file.write_all_at(bytes, at)?;
            }
            r => r?,
        }
        self.write_behind(at + bytes.len() as u64);
        Ok(())
    }

    /// Writes `data`, which starts at a multiple of `HOLE_BLOCK` in the file
    /// and ends at `self.len` (already counted), leaving its zero blocks out.
    fn put(&mut self, data: &[u8]) -> io::Result<()> {
        let base = self.len - data.len() as u64;
        let mut run = 0..0;
        for (i, block) in data.chunks(HOLE_BLOCK).enumerate() {
            let start = i * HOLE_BLOCK;
            if is_zero(block) {
                if !run.is_empty() {
                    self.write_at(&data[run.clone()], base + run.start as u64)?;
                    run = 0..0;
                }
            } else {
                if run.is_empty() {
                    run = start..start;
                }
                run.end = start + block.len();
            }
        }
        if !run.is_empty() {
            self.write_at(&data[run.clone()], base + run.start as u64)?;
        }
        Ok(())
    }

    /// Adds `n` bytes of zeros: a hole, neither copied nor compared, when
    /// they start at the buffer's start and are whole blocks; else written
    /// as any bytes are.
    pub(crate) fn zeros(&mut self, n: u64) -> io::Result<()> {
        if self.filled == 0 && n.is_multiple_of(HOLE_BLOCK as u64) {
            self.len += n;
            return Ok(());
        }
        zero_blocks(n, |b| self.write_all(b))
    }

    /// Writes the buffer's `filled` bytes.
    fn put_buffer(&mut self) -> io::Result<()> {
        let buf = std::mem::take(&mut self.buf);
        let r = self.put(&buf[self.off..self.off + self.filled]);
        self.buf = buf;
        self.filled = 0;
        r
    }

    /// Writes what is left, gives the file its full length (a trailing hole)
    /// and returns it, writing through the page cache again.
    pub(crate) fn finish(mut self) -> io::Result<File> {
        if self.direct && !self.filled.is_multiple_of(ALIGN) {
            direct::set(&self.file, false)?;
            self.direct = false;
        }
        self.put_buffer()?;
        if self.direct {
            direct::set(&self.file, false)?;
        }
        self.file.set_len(self.len)?;
        Ok(self.file)
    }
}

impl Write for Sparse {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let aligned = !self.direct || direct::start(data) == 0;
        if self.filled == 0 && data.len() >= self.cap && aligned {
            // Aligned already: no copy into the buffer.
            self.len += self.cap as u64;
            self.put(&data[..self.cap])?;
            return Ok(self.cap);
        }
        let n = (self.cap - self.filled).min(data.len());
        let at = self.off + self.filled;
        self.buf[at..at + n].copy_from_slice(&data[..n]);
        self.filled += n;
        self.len += n as u64;
        if self.filled == self.cap {
            self.put_buffer()?;
        }
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
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
        let written = write_files(&mut buf, &[("0_0.tigerbeetle".into(), p)]).unwrap();
        let dest = tempfile::tempdir().unwrap();
        let files = unpack(&mut &buf[..], dest.path(), &written).unwrap();
        assert_eq!(files.len(), 1);
        assert_eq!(written, files, "the digest of the pass that archives");
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
        let written = write_files(&mut buf, &[("sparse".into(), p)]).unwrap();
        // Its header says how large it is once its holes are filled: more
        // than the manifest records is refused before a byte is written.
        let dest = tempfile::tempdir().unwrap();
        let smaller = [FileEntry {
            size: 4 << 20,
            ..written[0].clone()
        }];
        let err = unpack(&mut &buf[..], dest.path(), &smaller).unwrap_err();
        assert_eq!(
            crate::exit::exit_code(&err),
            crate::exit::INTEGRITY,
            "{err:#}"
        );
        assert!(format!("{err:#}").contains("records 4194304"), "{err:#}");
        assert!(fs::read_dir(dest.path()).unwrap().next().is_none());
        let other = [FileEntry {
            name: "other".into(),
            ..written[0].clone()
        }];
        assert!(unpack(&mut &buf[..], dest.path(), &other).is_err());
        assert!(fs::read_dir(dest.path()).unwrap().next().is_none());
        let files = unpack(&mut &buf[..], dest.path(), &written).unwrap();
        assert_eq!(files[0].size, 8 << 20);
        assert_eq!(written, files);
        assert_eq!(
            written[0].sha256,
            crate::stages::hash::digest_reader(&original[..])
                .unwrap()
                .sha256
        );
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
            let err = unpack(&mut &bytes[..], dest.path(), &[]).unwrap_err();
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

    #[test]
    fn zero_blocks_are_restored_as_holes() {
        use std::os::unix::fs::MetadataExt;
        let src = tempfile::tempdir().unwrap();
        let p = src.path().join("data");
        // Data, 8 MiB of zeros, data, then zeros to the end: a hole inside and
        // one at the end, and blocks that are only partly zero.
        let mut bytes = vec![0u8; 20 << 20];
        bytes[..100_000].fill(3);
        bytes[(9 << 20) + 1] = 9;
        bytes[(9 << 20) + HOLE_BLOCK + 17..(10 << 20)].fill(5);
        fs::write(&p, &bytes).unwrap();
        let mut buf = Vec::new();
        let written = write_files(&mut buf, &[("data".into(), p)]).unwrap();
        let dest = tempfile::tempdir().unwrap();
        let files = unpack(&mut &buf[..], dest.path(), &written).unwrap();
        assert_eq!(written, files);
        let out = dest.path().join("data");
        assert!(fs::read(&out).unwrap() == bytes);
        let allocated = fs::metadata(&out).unwrap().blocks() * 512;
        assert!(
            allocated < 4 << 20,
            "{allocated} bytes allocated for 20 MiB with about 1 MiB of data"
        );
    }

    /// A writer of a new file at `out`, direct or buffered.
    fn fresh(out: &Path, direct: bool) -> Sparse {
        let _ = fs::remove_file(out);
        let file = File::create(out).unwrap();
        if direct {
            Sparse::direct(file)
        } else {
            Sparse::new(file)
        }
    }

    #[test]
    fn zeros_are_holes_from_a_block_boundary_and_bytes_elsewhere() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("data");
        for direct in [false, true] {
            let mut w = fresh(&out, direct);
            let mut want = Vec::new();
            let mut data = |w: &mut Sparse, n: usize, b: u8| {
                w.write_all(&vec![b; n]).unwrap();
                want.extend(std::iter::repeat_n(b, n));
            };
            data(&mut w, DIRECT_BUF, 7);
            w.zeros(2 * HOLE_BLOCK as u64).unwrap(); // a hole
            data(&mut w, HOLE_BLOCK + 5, 9);
            w.zeros(HOLE_BLOCK as u64).unwrap(); // mid-buffer: written
            w.zeros(3).unwrap();
            data(&mut w, 11, 4);
            let mut want_all = want.clone();
            want_all.splice(DIRECT_BUF..DIRECT_BUF, vec![0u8; 2 * HOLE_BLOCK]);
            let at = DIRECT_BUF + 2 * HOLE_BLOCK + HOLE_BLOCK + 5;
            want_all.splice(at..at, vec![0u8; HOLE_BLOCK + 3]);
            w.finish().unwrap().sync_all().unwrap();
            assert!(fs::read(&out).unwrap() == want_all, "direct: {direct}");
        }
    }

    #[test]
    fn long_writes_of_any_size_keep_every_byte_and_hole() {
        use std::os::unix::fs::MetadataExt;
        // Over three write-behind windows, written in pieces of odd sizes
        // (some aligned runs, some through the buffer), with a hole between
        // and after the data, and an end that is no multiple of a page.
        let total = 3 * WRITE_BEHIND as usize + 5 * HOLE_BLOCK + 123;
        let mut bytes = vec![0u8; total];
        for (i, b) in bytes.iter_mut().enumerate() {
            let block = i / HOLE_BLOCK;
            if block % 7 != 3 && i < total - 9 * HOLE_BLOCK {
                *b = (i % 251) as u8 | 1;
            }
        }
        // The same from memory aligned for direct writes, in whole buffers:
        // the writer takes those without a copy.
        let mut aligned = vec![0u8; total + ALIGN];
        let off = direct::start(&aligned);
        aligned[off..off + total].copy_from_slice(&bytes);
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("data");
        for (direct, source, sizes) in [
            (
                false,
                &bytes[..],
                vec![1usize, SPARSE_BUF, 77_777, 3 * SPARSE_BUF + 5, HOLE_BLOCK],
            ),
            (
                true,
                &bytes[..],
                vec![1, DIRECT_BUF, 77_777, 3 * DIRECT_BUF + 5, HOLE_BLOCK],
            ),
            (true, &aligned[off..off + total], vec![DIRECT_BUF]),
        ] {
            let mut w = fresh(&out, direct);
            // Where the file system takes direct writes (Linux's ext4, xfs).
            let probe = direct::supported(&w.file);
            assert_eq!(w.is_direct(), direct && probe);
            let mut at = 0;
            for size in sizes.iter().cycle() {
                if at == total {
                    break;
                }
                let end = (at + size).min(total);
                w.write_all(&source[at..end]).unwrap();
                at = end;
            }
            // No write was refused (each was aligned).
            assert_eq!(w.is_direct(), direct && probe);
            if !w.is_direct() {
                assert!(
                    w.behind >= 2 * WRITE_BEHIND,
                    "write-back started at {}",
                    w.behind
                );
            }
            let file = w.finish().unwrap();
            file.sync_all().unwrap();
            assert!(fs::read(&out).unwrap() == bytes, "direct: {direct}");
            let allocated = fs::metadata(&out).unwrap().blocks() * 512;
            assert!(
                allocated < (total - 9 * HOLE_BLOCK - total / 7 + 2 * DIRECT_BUF) as u64,
                "{allocated} bytes allocated: the zero blocks were written (direct: {direct})"
            );
        }
    }
}
