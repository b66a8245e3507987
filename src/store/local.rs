//! A store in a local directory (or a mounted file system).
//!
//! Writes go to a short, uniquely named file under `.bkp-partial/` in the store
//! root (never longer than a file name may be, whatever the key) and are
//! published with `link(2)`, which fails if the final name exists: a create-only,
//! atomic publish. Data and directory entries are fsynced before `finish` returns,
//! so a completed object survives a power cut.
//!
//! Files are created 0600 and directories 0700, whatever the umask: backups
//! (and, in an unencrypted store, the data itself) are readable by the user bkp
//! runs as and nobody else, under systemd (`UMask=0077`) or from a shell or
//! cron with the usual 022. A store root that exists already keeps its mode.

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use time::OffsetDateTime;

use super::{
    already_exists, check_key, not_found, Metadata, ObjectInfo, ObjectWriter, Store, UnstorableKey,
};

/// Directory under the store root that holds writes in progress.
pub const PARTIAL_DIR: &str = ".bkp-partial";

/// The longest file name (one path component), in bytes, Linux file systems take.
const NAME_MAX: usize = 255;
/// The longest path, in bytes, a Linux system call takes (with its NUL).
const PATH_MAX: usize = 4096;

/// The mode of the files a local store creates (see the module's documentation).
const FILE_MODE: u32 = 0o600;
/// The mode of the directories a local store creates.
const DIR_MODE: u32 = 0o700;

/// `fs::create_dir_all`, each directory it creates made [`DIR_MODE`].
fn create_dir_all(dir: &Path) -> io::Result<()> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(DIR_MODE)
        .create(dir)
}

/// Refuses a key whose path under `root` the file system cannot hold.
fn check_path_length(key: &str, dest: &Path) -> Result<()> {
    let refuse = |reason: String| {
        Err(anyhow::Error::new(UnstorableKey {
            key: key.to_string(),
            reason,
        }))
    };
    if let Some(long) = key.split('/').find(|c| c.len() > NAME_MAX) {
        return refuse(format!(
            "its name part of {} bytes is too long for a file name (at most {NAME_MAX} bytes in \
             a local store); shorten the name at the source",
            long.len()
        ));
    }
    let len = dest.as_os_str().len();
    if len >= PATH_MAX {
        return refuse(format!(
            "its path {} of {len} bytes is too long (under {PATH_MAX} bytes in a local \
             store); shorten the path at the source or the store's path",
            dest.display()
        ));
    }
    Ok(())
}

pub struct LocalStore {
    root: PathBuf,
}

impl LocalStore {
    /// The objects under `prefix` (sorting after `after`, where given), in key
    /// order.
    fn walk(&self, prefix: &str, after: Option<&str>) -> Result<Vec<ObjectInfo>> {
        super::gather_sorted(|each| self.walk_each(prefix, after, each))
    }

    /// [`LocalStore::walk`], each object handed to `each` as it is found, in
    /// no order; only the directory that can contain the prefix is walked.
    fn walk_each(
        &self,
        prefix: &str,
        after: Option<&str>,
        each: &mut dyn FnMut(ObjectInfo),
    ) -> Result<()> {
        let start_rel = match prefix.rfind('/') {
            Some(i) => &prefix[..i],
            None => "",
        };
        let start = self.root.join(start_rel);
        let mut stack = vec![start];
        while let Some(dir) = stack.pop() {
            let entries = match fs::read_dir(&dir) {
                Ok(e) => e,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => {
                    return Err(e).with_context(|| format!("failed to list {}", dir.display()))
                }
            };
            for entry in entries {
                let entry = entry.with_context(|| format!("failed to list {}", dir.display()))?;
                let path = entry.path();
                let rel = match path.strip_prefix(&self.root) {
                    Ok(r) => r.to_string_lossy().into_owned(),
                    Err(_) => continue,
                };
                if rel == PARTIAL_DIR {
                    continue;
                }
                let ft = entry.file_type()?;
                if ft.is_dir() {
                    if prefix.starts_with(&format!("{rel}/")) || rel.starts_with(prefix) {
                        stack.push(path);
                    }
                } else if ft.is_file()
                    && rel.starts_with(prefix)
                    && after.is_none_or(|a| rel.as_str() > a)
                {
                    each(info(rel, &entry.metadata()?));
                }
            }
        }
        Ok(())
    }

    /// A store rooted at `root`, which is created if missing.
    pub fn new(root: impl Into<PathBuf>) -> Result<Self> {
        let root = root.into();
        create_dir_all(&root.join(PARTIAL_DIR)).with_context(|| {
            format!(
                "failed to create the local store directory {}: check that the path is writable",
                root.display()
            )
        })?;
        let root = root
            .canonicalize()
            .with_context(|| format!("failed to resolve {}", root.display()))?;
        Ok(LocalStore { root })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    fn path(&self, key: &str) -> Result<PathBuf> {
        check_key(key)?;
        if key == PARTIAL_DIR || key.starts_with(&format!("{PARTIAL_DIR}/")) {
            anyhow::bail!("invalid object key {key:?}: {PARTIAL_DIR} is reserved");
        }
        Ok(self.root.join(key))
    }
}

fn fsync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// `create_dir_all`, then fsync the parent of every directory it created, so that
/// after a power cut a published object's path exists as surely as its bytes.
fn create_dirs_durably(dir: &Path) -> io::Result<()> {
    let mut missing = Vec::new();
    let mut d = Some(dir);
    while let Some(p) = d {
        if p.exists() {
            break;
        }
        missing.push(p);
        d = p.parent();
    }
    create_dir_all(dir)?;
    for created in missing.iter().rev() {
        if let Some(parent) = created.parent() {
            fsync_dir(parent)?;
        }
    }
    Ok(())
}

fn info(key: String, meta: &fs::Metadata) -> ObjectInfo {
    ObjectInfo {
        key,
        size: meta.len(),
        modified: meta.modified().ok().map(OffsetDateTime::from),
        etag: None,
    }
}

struct LocalWriter {
    file: Option<BufWriter<File>>,
    tmp: PathBuf,
    dest: PathBuf,
    key: String,
    store: String,
}

impl Write for LocalWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let f = self.file.as_mut();
        let n = f
            .ok_or_else(|| io::Error::other("write after finish"))?
            .write(buf)?;
        crate::failpoint::hit("store-write");
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        match self.file.as_mut() {
            Some(f) => f.flush(),
            None => Ok(()),
        }
    }
}

impl LocalWriter {
    fn publish(&self, file: BufWriter<File>) -> Result<ObjectInfo> {
        let file = file
            .into_inner()
            .map_err(|e| e.into_error())
            .and_then(|f| f.sync_all().map(|_| f))
            .with_context(|| format!("failed to write {}", self.tmp.display()))?;
        let meta = file.metadata()?;
        drop(file);
        if let Some(parent) = self.dest.parent() {
            create_dirs_durably(parent)
                .with_context(|| format!("failed to create {}", parent.display()))?;
        }
        match fs::hard_link(&self.tmp, &self.dest) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                return Err(already_exists(&self.store, &self.key));
            }
            Err(e) => {
                return Err(e).with_context(|| {
                    format!(
                        "failed to publish {} as {}",
                        self.tmp.display(),
                        self.dest.display()
                    )
                })
            }
        }
        if let Some(parent) = self.dest.parent() {
            fsync_dir(parent).with_context(|| format!("failed to sync {}", parent.display()))?;
        }
        Ok(info(self.key.clone(), &meta))
    }
}

impl ObjectWriter for LocalWriter {
    fn finish(mut self: Box<Self>) -> Result<ObjectInfo> {
        let file = self.file.take().expect("finish is called once");
        let published = self.publish(file);
        // Published or not, the partial file has no further use.
        let _ = fs::remove_file(&self.tmp);
        published
    }

    fn abort(mut self: Box<Self>) -> Result<()> {
        self.file.take();
        match fs::remove_file(&self.tmp) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e).with_context(|| format!("failed to remove {}", self.tmp.display())),
        }
    }
}

impl Drop for LocalWriter {
    fn drop(&mut self) {
        // Only reached without finish/abort (an error path): discard the partial file.
        if self.file.take().is_some() {
            let _ = fs::remove_file(&self.tmp);
        }
    }
}

impl Store for LocalStore {
    fn identity(&self) -> String {
        format!("file://{}", self.root.display())
    }

    fn create(&self, key: &str, _metadata: &Metadata) -> Result<Box<dyn ObjectWriter>> {
        let dest = self.path(key)?;
        check_path_length(key, &dest)?;
        if dest.exists() {
            return Err(already_exists(&self.identity(), key));
        }
        // Short whatever the key: the key is in `dest`, not in this name.
        let name = format!("{}-{:016x}", std::process::id(), crate::id::random_u64());
        let tmp = self.root.join(PARTIAL_DIR).join(name);
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(FILE_MODE)
            .open(&tmp)
            .with_context(|| format!("failed to create {}", tmp.display()))?;
        Ok(Box::new(LocalWriter {
            file: Some(BufWriter::with_capacity(1 << 20, file)),
            tmp,
            dest,
            key: key.to_string(),
            store: self.identity(),
        }))
    }

    fn open(&self, key: &str) -> Result<Box<dyn std::io::Read + Send>> {
        let path = self.path(key)?;
        match File::open(&path) {
            Ok(f) => Ok(Box::new(io::BufReader::with_capacity(1 << 20, f))),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Err(not_found(&self.identity(), key)),
            Err(e) => Err(e).with_context(|| format!("failed to open {}", path.display())),
        }
    }

    fn head(&self, key: &str) -> Result<Option<ObjectInfo>> {
        let path = self.path(key)?;
        match fs::metadata(&path) {
            Ok(m) if m.is_file() => Ok(Some(info(key.to_string(), &m))),
            Ok(_) => Ok(None),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e).with_context(|| format!("failed to stat {}", path.display())),
        }
    }

    fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>> {
        self.walk(prefix, None)
    }

    // Filtered as the directory is walked: a run that checks the newest
    // manifests of a history years long does not hold every key.
    fn list_after(&self, prefix: &str, after: &str) -> Result<Vec<ObjectInfo>> {
        self.walk(prefix, Some(after))
    }

    fn list_each(&self, prefix: &str, each: &mut dyn FnMut(ObjectInfo)) -> Result<()> {
        self.walk_each(prefix, None, each)
    }

    fn reread_is_cheap(&self) -> bool {
        true
    }

    fn delete(&self, key: &str) -> Result<()> {
        let path = self.path(key)?;
        match fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => {
                return Err(e).with_context(|| format!("failed to delete {}", path.display()))
            }
        }
        // Remove directories the delete left empty, up to the root.
        let mut dir = path.parent();
        while let Some(d) = dir {
            if d == self.root || fs::remove_dir(d).is_err() {
                break;
            }
            dir = d.parent();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(store: &LocalStore, key: &str, bytes: &[u8]) -> Result<ObjectInfo> {
        let mut w = store.create(key, &Metadata::default())?;
        w.write_all(bytes)?;
        w.finish()
    }

    #[test]
    fn long_keys_are_stored_and_a_too_long_name_fails_alone() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore::new(dir.path().join("s")).unwrap();
        // Every part fits a file name, the whole key does not.
        let long = format!("p/{}/{}.parquet", "d".repeat(200), "y".repeat(240));
        assert_eq!(put(&store, &long, b"long").unwrap().size, 4);
        assert_eq!(store.head(&long).unwrap().unwrap().size, 4);
        let partial = store.root().join(PARTIAL_DIR);
        assert_eq!(fs::read_dir(&partial).unwrap().count(), 0);

        let too_long = format!("p/{}.parquet.enc", "x".repeat(247));
        let err = put(&store, &too_long, b"x").unwrap_err();
        let refused = err
            .downcast_ref::<UnstorableKey>()
            .expect("an UnstorableKey");
        assert_eq!(refused.key, too_long);
        assert!(
            format!("{err:#}").contains("too long for a file name"),
            "{err:#}"
        );
        let deep = format!("{}/f", vec!["d".repeat(250); 17].join("/"));
        assert!(put(&store, &deep, b"x")
            .unwrap_err()
            .downcast_ref::<UnstorableKey>()
            .is_some());
        // The store goes on working.
        put(&store, "p/after", b"ok").unwrap();
        assert_eq!(fs::read_dir(&partial).unwrap().count(), 0);
    }

    /// Created under the usual umask of a shell or cron (022), what the store
    /// creates is still its user's alone.
    #[test]
    fn files_and_directories_are_private_whatever_the_umask() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        // SAFETY: umask only sets this process's file mode mask.
        let before = unsafe { libc::umask(0o022) };
        let store = LocalStore::new(dir.path().join("s"));
        let written = store
            .as_ref()
            .map_err(|e| anyhow::anyhow!("{e:#}"))
            .and_then(|s| put(s, "tigerbeetle/2025/10/11/x.tar", b"x"));
        unsafe { libc::umask(before) };
        let store = store.unwrap();
        written.unwrap();
        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
        let root = store.root();
        assert_eq!(mode(&root.join("tigerbeetle/2025/10/11/x.tar")), 0o600);
        for d in ["", "tigerbeetle", "tigerbeetle/2025/10/11", PARTIAL_DIR] {
            assert_eq!(mode(&root.join(d)), 0o700, "{d:?}");
        }
    }
}
