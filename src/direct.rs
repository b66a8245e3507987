//! I/O around the page cache (`O_DIRECT`): the one place that knows what it
//! asks of memory, offsets and lengths, which file systems take it well, and
//! whether a file is in the page cache already; and the one place that sets a
//! descriptor's status flags ([`blocking`]).
//!
//! A restore writes a data file this way ([`crate::archive::Sparse::direct`]):
//! buffered writes of a 4 GB file cost more kernel CPU than decompressing it.
//! A chunked snapshot reads one this way ([`reader`]) when it is not in the
//! cache, as TigerBeetle (which writes with `O_DIRECT`) leaves it: read
//! through the cache it would cost a copy of every byte and push out what
//! the host had cached.

use std::fs::File;
use std::io;
use std::path::Path;

/// Clears `O_NONBLOCK` on `f`: a file opened without waiting (a named pipe
/// put where a file was expected opens at once, to be looked at first) is
/// then read as files are, each read waiting for its bytes.
pub(crate) fn blocking(f: &File) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    // SAFETY: fcntl on a descriptor `f` owns, with no pointer arguments.
    let flags = unsafe { libc::fcntl(f.as_raw_fd(), libc::F_GETFL) };
    if flags < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: as above.
    if unsafe { libc::fcntl(f.as_raw_fd(), libc::F_SETFL, flags & !libc::O_NONBLOCK) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// What `O_DIRECT` asks of an I/O's memory address, file offset and length.
pub(crate) const ALIGN: usize = 4096;

/// Where the first address aligned to [`ALIGN`] is in `buf`.
pub(crate) fn start(buf: &[u8]) -> usize {
    (ALIGN - buf.as_ptr() as usize % ALIGN) % ALIGN
}

/// The length of a buffer that holds `want` bytes from its first aligned
/// address on, rounded up to whole blocks (what [`read`] needs).
pub(crate) fn span(want: usize) -> usize {
    want.next_multiple_of(ALIGN) + ALIGN
}

/// Whether `file` is on ext2/3/4 or xfs, where direct I/O goes straight to a
/// local disk (over NFS each direct write would wait for the server).
#[cfg(target_os = "linux")]
pub(crate) fn supported(file: &File) -> bool {
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
pub(crate) fn supported(_file: &File) -> bool {
    false
}

/// Turns `O_DIRECT` on or off for `file`.
#[cfg(target_os = "linux")]
pub(crate) fn set(file: &File, on: bool) -> io::Result<()> {
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

#[cfg(not(target_os = "linux"))]
pub(crate) fn set(_file: &File, on: bool) -> io::Result<()> {
    if on {
        return Err(io::ErrorKind::Unsupported.into());
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

/// The file at `path` (open as `file`, `size` bytes) opened again to be read
/// around the page cache with [`read`]: where its file system is
/// [`supported`] and most of it is not in the cache already.
#[cfg(target_os = "linux")]
pub(crate) fn reader(path: &Path, file: &File, size: u64) -> Option<File> {
    use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
    if !supported(file) || mostly_cached(file, size) {
        return None;
    }
    let direct = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECT)
        .open(path)
        .ok()?;
    // The same file, not one renamed into its place since it was opened.
    let (a, b) = (file.metadata().ok()?, direct.metadata().ok()?);
    (a.dev() == b.dev() && a.ino() == b.ino()).then_some(direct)
}

#[cfg(not(target_os = "linux"))]
pub(crate) fn reader(_path: &Path, _file: &File, _size: u64) -> Option<File> {
    None
}

/// Reads `want` bytes at `at` (a multiple of [`ALIGN`]) from `file`, open
/// with `O_DIRECT`, into `buf` (at least [`span`] long) from its first
/// aligned address on: where they start in `buf`, and how many were read
/// (fewer than `want` only at the end of the file).
pub(crate) fn read(
    file: &File,
    at: u64,
    want: usize,
    buf: &mut [u8],
) -> io::Result<(usize, usize)> {
    use std::os::unix::fs::FileExt;
    debug_assert!(at.is_multiple_of(ALIGN as u64));
    let off = start(buf);
    let end = off + want.next_multiple_of(ALIGN);
    let mut got = 0;
    while got < want {
        let n = match file.read_at(&mut buf[off + got..end], at + got as u64) {
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

/// Asks the kernel to start writing `len` bytes of `file` from `from` (0: to
/// its end) to disk, without waiting: a restore that writes many files then
/// makes them durable overlaps that I/O with its own work instead of waiting
/// for all of it at the end. Only a hint (Linux's `sync_file_range`): a
/// failure is left for the final `fsync` to report.
pub(crate) fn write_behind(file: &File, from: u64, len: u64) {
    #[cfg(target_os = "linux")]
    {
        use std::os::fd::AsRawFd;
        // SAFETY: a plain system call on a file descriptor the caller owns.
        unsafe {
            libc::sync_file_range(
                file.as_raw_fd(),
                from as libc::off64_t,
                len as libc::off64_t,
                libc::SYNC_FILE_RANGE_WRITE,
            );
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = (file, from, len);
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

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
        assert!(reader(&path, &file, size).is_none());
        if !supported(&file) {
            return; // Not ext4 or xfs: never read around the cache.
        }
        assert!(evict(&path), "the file stayed in the page cache");
        let d = reader(&path, &file, size).expect("read around the cache");
        let step = 16 * ALIGN;
        let mut buf = vec![0u8; span(step)];
        let mut all = Vec::new();
        for at in (0..total).step_by(step) {
            let want = step.min(total - at);
            let (off, got) = read(&d, at as u64, want, &mut buf).unwrap();
            assert_eq!(got, want, "at {at}");
            assert!((buf.as_ptr() as usize + off).is_multiple_of(ALIGN));
            all.extend_from_slice(&buf[off..off + got]);
        }
        assert!(all == bytes);
        // Asked for more than is left: what there is.
        let last = (total / ALIGN * ALIGN) as u64;
        let (off, got) = read(&d, last, step, &mut buf).unwrap();
        assert_eq!(&buf[off..off + got], &bytes[last as usize..]);
        // The probe read nothing into the cache.
        assert!(!mostly_cached(&file, size));
    }
}
