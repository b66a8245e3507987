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
/// What `O_DIRECT` asks of a write's memory, offset and length.
pub(crate) const ALIGN: usize = 4096;

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

/// Turns `O_DIRECT` on or off for `file`.
#[cfg(target_os = "linux")]
fn set_direct(file: &File, on: bool) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let fd = file.as_raw_fd();
    // SAFETY: plain system calls on a file descriptor the caller owns.
    unsafe {
        let flags = libc::fcntl(fd, libc::F_GETFL);
        if flags < 0 {
            return Err(io::Error::last_os_error());
        }
        let flags = if on {
            flags | libc::O_DIRECT
        } else {
            flags & !libc::O_DIRECT
        };
        if libc::fcntl(fd, libc::F_SETFL, flags) < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Pages of a file [`mostly_cached`] asks about.
const CACHE_SAMPLES: usize = 64;

/// Whether most of `file` (`size` bytes) is in the page cache, going by
/// pages spread over it (`mincore` on a mapping that is never touched, so
/// asking reads nothing). Where that cannot be asked, it counts as cached;
/// Linux also answers "cached" for a file the caller may not write and does
/// not own.
#[cfg(target_os = "linux")]
pub(crate) fn mostly_cached(file: &File, size: u64) -> bool {
    use std::os::fd::AsRawFd;
    let Ok(len) = usize::try_from(size) else {
        return true;
    };
    // SAFETY: sysconf only answers.
    let page_size = match unsafe { libc::sysconf(libc::_SC_PAGESIZE) } {
        n if n > 0 => n as usize,
        _ => return true,
    };
    let pages = len / page_size;
    if pages == 0 {
        return true;
    }
    // SAFETY: a read-only mapping of the file that is never read through;
    // mincore only reports on it (at page-aligned addresses inside it), and
    // it is unmapped before returning.
    unsafe {
        let base = libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ,
            libc::MAP_SHARED,
            file.as_raw_fd(),
            0,
        );
        if base == libc::MAP_FAILED {
            return true;
        }
        let mut cached = 0;
        let mut asked = 0;
        for k in 0..CACHE_SAMPLES {
            let page = k * pages / CACHE_SAMPLES;
            let at = base.cast::<u8>().add(page * page_size);
            let mut v = 0u8;
            if libc::mincore(at.cast(), page_size, &mut v) == 0 {
                asked += 1;
                cached += usize::from(v & 1);
            }
        }
        libc::munmap(base, len);
        asked == 0 || cached * 2 > asked
    }
}

#[cfg(not(target_os = "linux"))]
pub(crate) fn mostly_cached(_file: &File, _size: u64) -> bool {
    true
}

/// The file at `path` (open as `file`, `size` bytes) opened again to be read
/// around the page cache, in reads of whole `ALIGN` blocks: where its file
/// system takes direct I/O and the file is not mostly in the page cache
/// already. A data file TigerBeetle writes with `O_DIRECT` is not; read
/// through the cache it would cost a copy of every byte and push out what
/// the host had cached.
#[cfg(target_os = "linux")]
pub(crate) fn direct_reader(path: &Path, file: &File, size: u64) -> Option<File> {
    use std::os::unix::fs::OpenOptionsExt;
    if !takes_direct(file) || mostly_cached(file, size) {
        return None;
    }
    let direct = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECT)
        .open(path)
        .ok()?;
    // The same file, not one renamed into its place since it was opened.
    use std::os::unix::fs::MetadataExt;
    let (a, b) = (file.metadata().ok()?, direct.metadata().ok()?);
    (a.dev() == b.dev() && a.ino() == b.ino()).then_some(direct)
}

#[cfg(not(target_os = "linux"))]
pub(crate) fn direct_reader(_path: &Path, _file: &File, _size: u64) -> Option<File> {
    None
}

/// The length of a buffer [`read_direct`] can read `want` bytes into.
pub(crate) fn direct_span(want: usize) -> usize {
    want.next_multiple_of(ALIGN) + ALIGN
}

/// Reads `want` bytes at `at` (a multiple of [`ALIGN`]) from `file`, open
/// with `O_DIRECT`, into `buf` (at least [`direct_span`] long) from its first
/// aligned address on: where they start in `buf`, and how many were read
/// (fewer than `want` only at the end of the file).
pub(crate) fn read_direct(
    file: &File,
    at: u64,
    want: usize,
    buf: &mut [u8],
) -> io::Result<(usize, usize)> {
    use std::os::unix::fs::FileExt;
    debug_assert!(at.is_multiple_of(ALIGN as u64));
    let off = (ALIGN - buf.as_ptr() as usize % ALIGN) % ALIGN;
    let span = want.next_multiple_of(ALIGN);
    let mut got = 0;
    while got < want {
        let n = match file.read_at(&mut buf[off + got..off + span], at + got as u64) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        got += n;
        if got % ALIGN != 0 {
            break; // the end of the file
        }
    }
    Ok((off, got.min(want)))
}

/// Writes the file at `path` out and drops it from the page cache, as a file
/// written with `O_DIRECT` is; whether it is out (the file system may keep it).
#[cfg(all(test, target_os = "linux"))]
pub(crate) fn evict(path: &Path) -> bool {
    use std::os::fd::AsRawFd;
    let file = File::open(path).unwrap();
    file.sync_all().unwrap();
    // SAFETY: advice about a file descriptor this function owns.
    let advised = unsafe { libc::posix_fadvise(file.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
    advised == 0 && !mostly_cached(&file, file.metadata().unwrap().len())
}

/// Whether `file` is on ext2/3/4 or xfs, where direct writes go straight to
/// a local disk.
#[cfg(target_os = "linux")]
pub(crate) fn takes_direct(file: &File) -> bool {
    use std::os::fd::AsRawFd;
    const EXT4: i64 = 0xEF53;
    const XFS: i64 = 0x5846_5342;
    let mut st = std::mem::MaybeUninit::<libc::statfs>::uninit();
    // SAFETY: fstatfs fills the struct it is given, checked before use.
    let st = unsafe {
        if libc::fstatfs(file.as_raw_fd(), st.as_mut_ptr()) != 0 {
            return false;
        }
        st.assume_init()
    };
    matches!(st.f_type as i64, EXT4 | XFS)
}

#[cfg(not(target_os = "linux"))]
pub(crate) fn takes_direct(_file: &File) -> bool {
    false
}

#[cfg(not(target_os = "linux"))]
fn set_direct(_file: &File, on: bool) -> io::Result<()> {
    if on {
        return Err(io::ErrorKind::Unsupported.into());
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
        let direct = takes_direct(&file) && set_direct(&file, true).is_ok();
        Sparse::with_buffer(file, DIRECT_BUF, direct)
    }

    fn with_buffer(file: File, cap: usize, direct: bool) -> Self {
        let buf = vec![0u8; cap + ALIGN];
        let off = buf.as_ptr().align_offset(ALIGN);
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
        #[cfg(target_os = "linux")]
        {
            use std::os::fd::AsRawFd;
            // SAFETY: a plain system call on a file descriptor this owns.
            unsafe {
                libc::sync_file_range(
                    self.file.as_raw_fd(),
                    self.behind as libc::off64_t,
                    (upto - self.behind) as libc::off64_t,
                    libc::SYNC_FILE_RANGE_WRITE,
                );
            }
        }
        self.behind = upto;
    }

    /// Writes `bytes` at `at`. A file system that refuses a direct write
    /// (`EINVAL`) gets it, and every later one, through the page cache.
    fn write_at(&mut self, bytes: &[u8], at: u64) -> io::Result<()> {
        use std::os::unix::fs::FileExt;
        match self.file.write_all_at(bytes, at) {
            Err(e) if self.direct && e.raw_os_error() == Some(libc::EINVAL) => {
                set_direct(&self.file, false)?;
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
            set_direct(&self.file, false)?;
            self.direct = false;
        }
        self.put_buffer()?;
        if self.direct {
            set_direct(&self.file, false)?;
        }
        self.file.set_len(self.len)?;
        Ok(self.file)
    }
}

impl Write for Sparse {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let aligned = !self.direct || data.as_ptr().align_offset(ALIGN) == 0;
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

    #[test]
    #[cfg(target_os = "linux")]
    fn a_file_out_of_the_page_cache_is_read_around_it_in_whole_blocks() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("data");
        // Whole blocks and a tail of 1,234 bytes.
        let total = 80 * ALIGN + 1234;
        let bytes: Vec<u8> = (0..total).map(|i| (i * 31 % 251) as u8).collect();
        fs::write(&path, &bytes).unwrap();
        let file = File::open(&path).unwrap();
        let size = total as u64;
        // Just written: in the page cache, and read through it.
        assert!(mostly_cached(&file, size));
        assert!(direct_reader(&path, &file, size).is_none());
        if !takes_direct(&file) {
            return; // Not ext4 or xfs: never read around the cache.
        }
        assert!(evict(&path), "the file stayed in the page cache");
        let d = direct_reader(&path, &file, size).expect("read around the cache");
        let step = 16 * ALIGN;
        let mut buf = vec![0u8; direct_span(step)];
        let mut read = Vec::new();
        for at in (0..total).step_by(step) {
            let want = step.min(total - at);
            let (off, got) = read_direct(&d, at as u64, want, &mut buf).unwrap();
            assert_eq!(got, want, "at {at}");
            assert!((buf.as_ptr() as usize + off).is_multiple_of(ALIGN));
            read.extend_from_slice(&buf[off..off + got]);
        }
        assert!(read == bytes);
        // Asked for more than is left: what there is.
        let last = (total / ALIGN * ALIGN) as u64;
        let (off, got) = read_direct(&d, last, step, &mut buf).unwrap();
        assert_eq!(&buf[off..off + got], &bytes[last as usize..]);
        // The probe read nothing into the cache.
        assert!(!mostly_cached(&file, size));
    }

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
        let files = unpack(&mut &buf[..], dest.path()).unwrap();
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
        let dest = tempfile::tempdir().unwrap();
        let files = unpack(&mut &buf[..], dest.path()).unwrap();
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
        let files = unpack(&mut &buf[..], dest.path()).unwrap();
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
        let off = aligned.as_ptr().align_offset(ALIGN);
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
            let probe = takes_direct(&w.file);
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
