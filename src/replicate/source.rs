//! The cold tier as bkp reads it: a local directory tree or an S3 bucket/prefix.
//!
//! Both answer the same questions: which files are there (with size,
//! modification time and, on S3, the ETag), what are a file's facts now (to tell
//! a file that changed while it was read), and its bytes (whole, a head and a
//! tail for the Parquet check, or streamed). On S3 every read names the ETag it
//! expects, so a read never mixes two versions of an object.

use std::fs::{self, File};
use std::io::{self, Read, Seek, SeekFrom};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use walkdir::WalkDir;

use super::{ReplicatePlan, SourcePlan};
use crate::exit::{coded, Code};
use crate::store::s3::{S3Settings, S3Store, MIN_PART_SIZE};
use crate::store::Version;

/// One file of the cold tier, as seen at one moment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// `/`-separated path relative to the source root.
    pub path: String,
    pub size: u64,
    /// Modification time in Unix nanoseconds (seconds precision on S3).
    pub mtime_ns: Option<i64>,
    /// The S3 ETag; `None` for local files.
    pub etag: Option<String>,
}

impl Entry {
    /// The facts that tell this version of the file from another.
    pub fn version(&self) -> Version<'_> {
        Version {
            size: self.size,
            modified: self.mtime_ns.map(i128::from),
            etag: self.etag.as_deref(),
        }
    }
}

/// A path at the source that is not replicated, and why.
#[derive(Debug, Clone)]
pub struct Ignored {
    pub path: String,
    pub reason: String,
    /// A directory that could not be read: the files of the previous set
    /// under it are not known to be gone.
    pub directory: bool,
}

pub enum Source {
    Local(PathBuf),
    S3(S3Store),
}

/// What a read found: the bytes, or that the file changed or vanished meanwhile.
pub enum Fetched<T> {
    Got(T),
    Changed,
}

impl Source {
    pub fn open(plan: &SourcePlan, concurrency: usize) -> Result<Source> {
        Ok(match plan {
            SourcePlan::Local(p) => Source::Local(p.clone()),
            SourcePlan::S3(s) => {
                let settings = S3Settings {
                    bucket: s.bucket.clone(),
                    prefix: s.prefix.clone(),
                    region: s.region.clone(),
                    endpoint: s.endpoint.clone(),
                    path_style: s.path_style,
                    part_size: MIN_PART_SIZE,
                    concurrency,
                    object_lock: None,
                    sse: None,
                    storage_class: None,
                    ca_file: None,
                    credentials_env: None,
                };
                match &s.credentials_env {
                    None => Source::S3(S3Store::new(settings)?),
                    Some((a, k)) => {
                        let get = |v: &str| {
                            std::env::var(v).map_err(|_| {
                                coded(Code::Config, format!("replicate.access_key_env / secret_key_env name {v}, which is not set: export the source's credentials"))
                            })
                        };
                        Source::S3(S3Store::with_credentials(settings, &get(a)?, &get(k)?)?)
                    }
                }
            }
        })
    }

    /// Every file the plan selects, sorted by path, and the selected paths that
    /// cannot be replicated.
    pub fn list(&self, plan: &ReplicatePlan) -> Result<(Vec<Entry>, Vec<Ignored>)> {
        let mut files = Vec::new();
        let mut ignored = Vec::new();
        match self {
            Source::Local(root) => {
                if !root.is_dir() {
                    return Err(coded(
                        Code::Config,
                        format!(
                            "replicate.source {} is not a directory: check the path (or mount)",
                            root.display()
                        ),
                    ));
                }
                walk(root, plan, &mut files, &mut ignored)?;
            }
            Source::S3(s3) => {
                for o in s3.list_with_etags("")? {
                    let path = o.key.clone();
                    if !plan.selects(&path) {
                        continue;
                    }
                    if crate::store::check_key(&path).is_err() {
                        ignored.push(Ignored {
                            path,
                            reason: "the key has an empty, '.' or '..' segment or a backslash, so it cannot be restored as a path".into(),
                            directory: false,
                        });
                        continue;
                    }
                    files.push(Entry {
                        path,
                        size: o.size,
                        mtime_ns: o
                            .modified
                            .map(|t| (t.unix_timestamp_nanos()).clamp(0, i64::MAX as i128) as i64),
                        etag: o.etag,
                    });
                }
            }
        }
        files.sort_by(|a, b| a.path.cmp(&b.path));
        Ok((files, ignored))
    }

    /// The file's facts now, or `None` if it is gone.
    pub fn stat(&self, path: &str) -> Result<Option<Entry>> {
        match self {
            // The file itself, not what a link put in its place (or in
            // place of a directory on its way) points to.
            Source::Local(root) => match open_listed(root, path, true).and_then(|f| f.metadata()) {
                Ok(m) if m.file_type().is_symlink() => Ok(None),
                Ok(m) => Ok(Some(local_entry(path, &m))),
                Err(e) if replaced(&e) => Ok(None),
                Err(e) => {
                    Err(e).with_context(|| format!("failed to stat {}", root.join(path).display()))
                }
            },
            Source::S3(s3) => Ok(s3.head_with_etag(path)?.map(|o| Entry {
                path: path.to_string(),
                size: o.size,
                mtime_ns: o
                    .modified
                    .map(|t| t.unix_timestamp_nanos().clamp(0, i64::MAX as i128) as i64),
                etag: o.etag,
            })),
        }
    }

    /// A streaming read of the version `e` describes.
    pub fn reader(&self, e: &Entry) -> Result<Fetched<Box<dyn Read + Send>>> {
        match self {
            Source::Local(root) => {
                let p = root.join(&e.path);
                match open_listed(root, &e.path, false) {
                    Ok(f) => Ok(Fetched::Got(Box::new(io::BufReader::with_capacity(
                        1 << 20,
                        f,
                    )))),
                    Err(err) if replaced(&err) => Ok(Fetched::Changed),
                    Err(err) => Err(err).with_context(|| format!("failed to open {}", p.display())),
                }
            }
            Source::S3(s3) => Ok(match s3.open_if_match(&e.path, e.etag.as_deref(), None) {
                Ok(Some(r)) => Fetched::Got(r),
                Ok(None) => Fetched::Changed,
                Err(err) if crate::exit::classify(&err) == Some(Code::NotFound) => Fetched::Changed,
                Err(err) => return Err(err),
            }),
        }
    }

    /// The whole file (for small files).
    pub fn read_all(&self, e: &Entry) -> Result<Fetched<Vec<u8>>> {
        let Fetched::Got(mut r) = self.reader(e)? else {
            return Ok(Fetched::Changed);
        };
        let mut buf = Vec::with_capacity(e.size as usize);
        r.read_to_end(&mut buf)
            .with_context(|| format!("failed to read {}", self.where_(&e.path)))?;
        Ok(Fetched::Got(buf))
    }

    /// The first four bytes and the last `n` bytes (fewer if the file is shorter).
    pub fn head_tail(&self, e: &Entry, n: u64) -> Result<Fetched<(Vec<u8>, Vec<u8>)>> {
        let n = n.min(e.size);
        match self {
            Source::Local(root) => {
                let p = root.join(&e.path);
                let mut f = match open_listed(root, &e.path, false) {
                    Ok(f) => f,
                    Err(err) if replaced(&err) => return Ok(Fetched::Changed),
                    Err(err) => {
                        return Err(err).with_context(|| format!("failed to open {}", p.display()))
                    }
                };
                let mut head = vec![0u8; 4.min(e.size as usize)];
                let mut tail = vec![0u8; n as usize];
                let read = f
                    .read_exact(&mut head)
                    .and_then(|_| f.seek(SeekFrom::Start(e.size - n)))
                    .and_then(|_| f.read_exact(&mut tail));
                match read {
                    Ok(_) => Ok(Fetched::Got((head, tail))),
                    // Shorter than listed: it is being rewritten.
                    Err(err) if err.kind() == io::ErrorKind::UnexpectedEof => Ok(Fetched::Changed),
                    Err(err) => Err(err).with_context(|| format!("failed to read {}", p.display())),
                }
            }
            Source::S3(s3) => {
                let get = |range: String| -> Result<Option<Vec<u8>>> {
                    match s3.open_if_match(&e.path, e.etag.as_deref(), Some(&range))? {
                        None => Ok(None),
                        Some(mut r) => {
                            let mut b = Vec::new();
                            r.read_to_end(&mut b).with_context(|| {
                                format!("failed to read {}", self.where_(&e.path))
                            })?;
                            Ok(Some(b))
                        }
                    }
                };
                if e.size == 0 {
                    return Ok(Fetched::Got((Vec::new(), Vec::new())));
                }
                // One request when the tail covers the head too.
                if n == e.size {
                    let Some(all) = get(format!("bytes=0-{}", e.size - 1))? else {
                        return Ok(Fetched::Changed);
                    };
                    return Ok(Fetched::Got((all[..4.min(all.len())].to_vec(), all)));
                }
                let Some(head) = get("bytes=0-3".into())? else {
                    return Ok(Fetched::Changed);
                };
                let Some(tail) = get(format!("bytes={}-{}", e.size - n, e.size - 1))? else {
                    return Ok(Fetched::Changed);
                };
                Ok(Fetched::Got((head, tail)))
            }
        }
    }

    /// `file:///root/path` or `s3://bucket/prefix/path`, for messages.
    pub fn where_(&self, path: &str) -> String {
        match self {
            Source::Local(root) => root.join(path).display().to_string(),
            Source::S3(s3) => {
                let s = s3.settings();
                format!(
                    "s3://{}/{}",
                    s.bucket,
                    s3.full_key_of(path).unwrap_or_default()
                )
            }
        }
    }
}

fn local_entry(path: &str, m: &fs::Metadata) -> Entry {
    Entry {
        path: path.to_string(),
        size: m.len(),
        mtime_ns: Some(
            m.mtime()
                .saturating_mul(1_000_000_000)
                .saturating_add(m.mtime_nsec()),
        ),
        etag: None,
    }
}

/// Lists the files under `root`. What cannot be listed is reported in
/// `ignored`, never fatal: a name that is not UTF-8, something that is not a
/// regular file, and a subdirectory that cannot be read (its files are then
/// neither replicated nor taken as deleted). Only `root` itself failing to be
/// read stops the listing.
fn walk(
    root: &Path,
    plan: &ReplicatePlan,
    files: &mut Vec<Entry>,
    ignored: &mut Vec<Ignored>,
) -> Result<()> {
    let mut it = WalkDir::new(root)
        .min_depth(1)
        .follow_links(false)
        .sort_by_file_name()
        .into_iter();
    while let Some(next) = it.next() {
        let e = match next {
            Ok(e) => e,
            Err(err) => {
                let dir = err.path().map(Path::to_path_buf);
                let why = match err.io_error() {
                    Some(io) => io.to_string(),
                    None => err.to_string(),
                };
                match dir.as_deref().map(|d| d.strip_prefix(root)) {
                    Some(Ok(rel)) if !rel.as_os_str().is_empty() => {
                        let rel = rel.to_string_lossy().into_owned();
                        if plan.may_select_under(&rel) {
                            ignored.push(Ignored {
                                path: rel,
                                reason: format!("the directory cannot be read: {why}"),
                                directory: true,
                            });
                        }
                        continue;
                    }
                    Some(_) => {
                        return Err(err).with_context(|| {
                            format!("failed to read directory {}", root.display())
                        })
                    }
                    None => {
                        return Err(err).with_context(|| {
                            format!("failed to list the files under {}", root.display())
                        })
                    }
                }
            }
        };
        let p = e.path();
        let ft = e.file_type();
        let Ok(rel) = p.strip_prefix(root) else {
            continue;
        };
        let Some(rel) = rel.to_str().map(str::to_string) else {
            ignored.push(Ignored {
                path: rel.display().to_string(),
                reason: "the name is not UTF-8, so it cannot be an object key".into(),
                directory: false,
            });
            if ft.is_dir() {
                it.skip_current_dir();
            }
            continue;
        };
        if ft.is_dir() {
            continue;
        }
        if !plan.selects(&rel) {
            continue;
        }
        if !ft.is_file() {
            ignored.push(Ignored {
                path: rel,
                reason: "not a regular file (symbolic links are not followed)".into(),
                directory: false,
            });
            continue;
        }
        if crate::store::check_key(&rel).is_err() {
            ignored.push(Ignored {
                path: rel,
                reason: "the name cannot be an object key (backslash or control character)".into(),
                directory: false,
            });
            continue;
        }
        // A file deleted between listing and stat is simply not part of this run.
        match e.metadata() {
            Ok(m) => files.push(local_entry(&rel, &m)),
            Err(err) if err.io_error().map(io::Error::kind) == Some(io::ErrorKind::NotFound) => {}
            Err(err) => return Err(err).with_context(|| format!("failed to stat {}", p.display())),
        }
    }
    Ok(())
}

/// Opens file `path` of the local source at `root` as the listing saw it: a
/// symbolic link put in its place since, or in place of a directory on its
/// way (the listing refuses links), is not followed, so that a run that may
/// read any file (root, or a capability to) stores only the source's own.
/// `O_PATH` opens it only to look at it ([`Source::stat`]).
fn open_listed(root: &Path, path: &str, o_path: bool) -> io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    // Not blocking on a named pipe put in the file's place (regular files
    // ignore the flag).
    let flags = libc::O_CLOEXEC
        | libc::O_NOFOLLOW
        | if o_path {
            libc::O_PATH
        } else {
            libc::O_RDONLY | libc::O_NONBLOCK
        };
    let dir = fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECTORY | libc::O_CLOEXEC)
        .open(root)?;
    let f = if openat2_works(&dir) {
        openat2(
            &dir,
            path,
            flags,
            libc::RESOLVE_BENEATH | libc::RESOLVE_NO_SYMLINKS,
        )?
    } else {
        // (`O_PATH` with `O_RDONLY`, which is 0, is `O_PATH`.)
        fs::OpenOptions::new()
            .read(true)
            .custom_flags(flags)
            .open(root.join(path))?
    };
    if o_path {
        return Ok(f);
    }
    // A directory, a pipe or a device put in the file's place since the
    // listing: not the file listed.
    if !f.metadata()?.is_file() {
        return Err(io::Error::new(
            io::ErrorKind::NotFound,
            "no longer a regular file",
        ));
    }
    // Reads wait as reads of a file do (a FUSE daemon may honour the flag).
    crate::direct::blocking(&f)?;
    Ok(f)
}

/// `openat2(2)` of `path` beneath `dir`, with `flags` and `resolve`.
fn openat2(dir: &File, path: &str, flags: i32, resolve: u64) -> io::Result<File> {
    use std::os::fd::{AsRawFd, FromRawFd};
    use std::os::unix::ffi::OsStrExt;
    let name = std::ffi::CString::new(Path::new(path).as_os_str().as_bytes())
        .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // SAFETY: open_how is plain data; zero is "no mode, no resolve flags".
    let mut how: libc::open_how = unsafe { std::mem::zeroed() };
    how.flags = flags as u64;
    how.resolve = resolve;
    // SAFETY: the directory descriptor and the name outlive the call, and
    // `how` is an open_how of the size passed.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_openat2,
            dir.as_raw_fd(),
            name.as_ptr(),
            &how as *const libc::open_how,
            std::mem::size_of::<libc::open_how>(),
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a descriptor openat2 just returned, owned by nothing else.
    Ok(unsafe { File::from_raw_fd(fd as i32) })
}

/// Whether this process may call `openat2(2)`, asked once (of the source's
/// root, `dir`): a kernel before 5.6 lacks it, and a system call filter may
/// refuse it. Where it cannot, a listed file is opened by its whole path, its
/// own name not followed but a directory on its way followed: said once.
fn openat2_works(dir: &File) -> bool {
    static WORKS: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *WORKS.get_or_init(|| {
        match openat2(dir, ".", libc::O_PATH | libc::O_CLOEXEC, 0) {
            Err(e) if matches!(e.raw_os_error(), Some(libc::ENOSYS) | Some(libc::EPERM)) => {
                crate::ui::log(
                    crate::ui::Priority::Warning,
                    &format!(
                        "bkp: warning: openat2 is not available here ({e}): a local source's files are opened by their whole path, and a directory of the tree swapped for a link while the run reads is followed; keep the tree writable only by users you trust"
                    ),
                );
                false
            }
            _ => true,
        }
    })
}

/// Whether `err`, opening a listed file, says it is gone or is a link now
/// (or its way leads through one, or out of the source): the file changed
/// since it was listed.
fn replaced(err: &io::Error) -> bool {
    err.kind() == io::ErrorKind::NotFound
        || matches!(
            err.raw_os_error(),
            Some(libc::ELOOP) | Some(libc::EXDEV) | Some(libc::ENOTDIR)
        )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// File `path` as a listing saw it: 16 bytes.
    fn listed(path: &str) -> Entry {
        Entry {
            path: path.into(),
            size: 16,
            mtime_ns: None,
            etag: None,
        }
    }

    /// A listed file replaced by a link to another file is not read through
    /// the link: every read says it changed.
    #[test]
    fn a_listed_file_replaced_by_a_link_is_not_followed() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path().join("cold");
        fs::create_dir(&root).unwrap();
        fs::write(root.join("a.parquet"), b"PAR1 listed PAR1").unwrap();
        fs::write(d.path().join("secret"), b"not the source's").unwrap();
        let src = Source::Local(root.clone());
        let e = listed("a.parquet");
        assert!(matches!(src.read_all(&e).unwrap(), Fetched::Got(b) if b == b"PAR1 listed PAR1"));
        fs::remove_file(root.join("a.parquet")).unwrap();
        std::os::unix::fs::symlink(d.path().join("secret"), root.join("a.parquet")).unwrap();
        assert!(matches!(src.read_all(&e).unwrap(), Fetched::Changed));
        assert!(matches!(src.head_tail(&e, 4).unwrap(), Fetched::Changed));
        assert!(src.stat("a.parquet").unwrap().is_none());
    }

    /// A directory of the tree swapped for a link after the listing leads
    /// nowhere: the file under it is not read through the link.
    #[test]
    fn a_listed_file_under_a_directory_swapped_for_a_link_is_not_followed() {
        let d = tempfile::tempdir().unwrap();
        if !openat2_works(&File::open(d.path()).unwrap()) {
            eprintln!("openat2 is not available here: nothing to prove");
            return;
        }
        let root = d.path().join("cold");
        fs::create_dir_all(root.join("day")).unwrap();
        fs::write(root.join("day/a.parquet"), b"PAR1 listed PAR1").unwrap();
        fs::create_dir(d.path().join("elsewhere")).unwrap();
        fs::write(d.path().join("elsewhere/a.parquet"), b"PAR1 secret PAR1").unwrap();
        let src = Source::Local(root.clone());
        let e = listed("day/a.parquet");
        assert!(matches!(src.read_all(&e).unwrap(), Fetched::Got(b) if b == b"PAR1 listed PAR1"));
        assert!(src.stat("day/a.parquet").unwrap().is_some());
        fs::rename(root.join("day"), d.path().join("day.old")).unwrap();
        std::os::unix::fs::symlink(d.path().join("elsewhere"), root.join("day")).unwrap();
        assert!(matches!(src.read_all(&e).unwrap(), Fetched::Changed));
        assert!(matches!(src.head_tail(&e, 4).unwrap(), Fetched::Changed));
        assert!(src.stat("day/a.parquet").unwrap().is_none());
    }

    /// A named pipe or a directory put in a listed file's place is not read:
    /// the read neither blocks nor fails, it says the file changed.
    #[test]
    fn a_pipe_or_directory_in_a_listed_files_place_is_a_change() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path().join("cold");
        fs::create_dir(&root).unwrap();
        let e = listed("a.parquet");
        let src = Source::Local(root.clone());
        let c = std::ffi::CString::new(root.join("a.parquet").to_str().unwrap()).unwrap();
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        assert!(matches!(src.read_all(&e).unwrap(), Fetched::Changed));
        assert!(matches!(src.head_tail(&e, 4).unwrap(), Fetched::Changed));
        fs::remove_file(root.join("a.parquet")).unwrap();
        fs::create_dir(root.join("a.parquet")).unwrap();
        assert!(matches!(src.read_all(&e).unwrap(), Fetched::Changed));
    }
}
