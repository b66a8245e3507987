//! Copying one run's new and changed files: a small pool of workers, each file
//! checked to be Parquet, read (once into memory when small, streamed when
//! large), hashed, and stored through the pipeline or copied inside the store.
//!
//! A file that changes while it is read is caught by comparing its facts (size,
//! modification time or ETag) before and after, and for streamed files the
//! SHA-256 of the upload's read with that of a first read; the upload is then
//! aborted, so no half-new object is ever completed, and the file is read once
//! more before it is reported.

use std::io;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use anyhow::{Context, Result};

use super::record::{FileRecord, Skipped};
use super::source::{Entry, Fetched, Source};
use crate::crypto::Keyring;
use crate::id::BackupId;
use crate::manifest::ObjectEntry;
use crate::stages::compress::Compression;
use crate::stages::hash::{digest_reader, HashReader};
use crate::stages::progress::Silent;
use crate::store::Store;
use crate::store::UnstorableKey;
use crate::{parquet, pipeline, ui};

/// Files up to this size are read into memory once: checked, hashed and uploaded
/// from the same bytes (one GET and one PUT; a server-side copy would take more
/// requests than it saves). Larger files are streamed, or copied inside the
/// store when possible.
const INLINE_MAX: u64 = 8 << 20;
/// The tail read first for the Parquet check; a larger footer costs a second read.
const TAIL_GUESS: u64 = 64 << 10;

/// The backup store, kept concrete when it is S3 so that server-side copies can
/// be made.
pub use crate::store::Opened as Target;

/// What every worker shares.
pub struct Job<'a> {
    pub id: BackupId,
    pub source: &'a Source,
    pub target: &'a Target,
    pub keyring: Option<&'a Keyring>,
    pub compression: Compression,
    pub key_prefix: String,
    pub suffix: String,
    pub server_side: bool,
    pub ui: &'a ui::Ui,
}

pub enum Outcome {
    Stored {
        rec: FileRecord,
        object: ObjectEntry,
        server_side: bool,
    },
    Reused(FileRecord),
    Skipped(Skipped),
    /// Deleted between the listing and the read.
    Gone,
}

enum Try {
    Done(Box<Outcome>),
    Corrupt(String),
    Changed(String),
    /// The source refused to give the file (archived storage class, missing
    /// permission, an I/O error): skipped, the rest replicated.
    Unreadable(String),
}

/// A failure to read one source file: a temporary one (the service is down)
/// stops the run, anything else skips that file only.
fn unreadable<T>(err: anyhow::Error) -> Result<T, Result<Try>> {
    match crate::exit::classify(&err) {
        Some(crate::exit::Code::Transient) => Err(Err(err)),
        _ => Err(Ok(Try::Unreadable(format!("{err:#}")))),
    }
}

/// Whether the store refused this one object's key (e.g. a name too long for
/// a local store): the file is skipped, the run goes on.
fn unstorable(err: &anyhow::Error) -> bool {
    err.chain().any(|c| c.is::<UnstorableKey>())
}

/// Raised inside a streamed upload to abort it when the file changed.
#[derive(Debug)]
struct Changed(String);

impl std::fmt::Display for Changed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Changed {}

fn changed_reason(err: &anyhow::Error) -> Option<String> {
    err.chain().find_map(|c| {
        c.downcast_ref::<Changed>()
            .map(|c| c.0.clone())
            .or_else(|| {
                c.downcast_ref::<io::Error>()
                    .and_then(|io| io.get_ref())
                    .and_then(|e| e.downcast_ref::<Changed>())
                    .map(|c| c.0.clone())
            })
    })
}

/// Copies the changed files with `n` workers. The first hard failure stops the
/// others from starting new files and is returned.
pub fn run_pool(job: &Job, work: &[(Entry, Option<FileRecord>)], n: usize) -> Result<Vec<Outcome>> {
    let next = AtomicUsize::new(0);
    let stop = AtomicBool::new(false);
    let results: Mutex<Vec<Option<Outcome>>> = Mutex::new((0..work.len()).map(|_| None).collect());
    let first_error: Mutex<Option<anyhow::Error>> = Mutex::new(None);
    let progress = job.ui.progress();
    // Progress in source bytes (the bar shows bytes), a file at a time.
    progress.begin("replicating", Some(work.iter().map(|(e, _)| e.size).sum()));
    std::thread::scope(|s| {
        for _ in 0..n.min(work.len()).max(1) {
            s.spawn(|| loop {
                if stop.load(Ordering::Relaxed) {
                    return;
                }
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some((entry, prev)) = work.get(i) else {
                    return;
                };
                match copy_file(job, entry.clone(), prev.as_ref()).with_context(|| {
                    format!("failed to replicate {}", job.source.where_(&entry.path))
                }) {
                    Ok(o) => {
                        if let Ok(mut r) = results.lock() {
                            r[i] = Some(o);
                        }
                        progress.advance(entry.size);
                    }
                    Err(e) => {
                        stop.store(true, Ordering::Relaxed);
                        if let Ok(mut f) = first_error.lock() {
                            f.get_or_insert(e);
                        }
                        return;
                    }
                }
            });
        }
    });
    progress.end();
    if let Some(e) = first_error.into_inner().ok().flatten() {
        return Err(e);
    }
    let results = results
        .into_inner()
        .map_err(|_| anyhow::anyhow!("a replication worker panicked"))?;
    results
        .into_iter()
        .map(|o| o.ok_or_else(|| anyhow::anyhow!("internal: a file was left unreplicated")))
        .collect()
}

/// One file: tries twice when it changes while being read.
fn copy_file(job: &Job, entry: Entry, prev: Option<&FileRecord>) -> Result<Outcome> {
    let mut e = entry;
    for attempt in 0..2 {
        let tried = match try_copy(job, &e, prev) {
            Err(err) if unstorable(&err) => {
                return Ok(Outcome::Skipped(Skipped {
                    path: e.path.clone(),
                    reason: format!("{err:#}"),
                    last_good: prev.cloned(),
                }))
            }
            tried => tried?,
        };
        match tried {
            Try::Done(o) => return Ok(*o),
            Try::Corrupt(reason) => {
                return Ok(Outcome::Skipped(Skipped {
                    path: e.path.clone(),
                    reason: format!("not a valid Parquet file: {reason}"),
                    last_good: prev.cloned(),
                }))
            }
            Try::Unreadable(reason) => {
                return Ok(Outcome::Skipped(Skipped {
                    path: e.path.clone(),
                    reason: format!("it cannot be read: {reason}"),
                    last_good: prev.cloned(),
                }))
            }
            Try::Changed(why) => {
                let Some(now) = job.source.stat(&e.path)? else {
                    return Ok(Outcome::Gone);
                };
                if attempt == 1 {
                    return Ok(Outcome::Skipped(Skipped {
                        path: e.path.clone(),
                        reason: format!(
                            "it changed while being read, twice ({why}); the next run tries again"
                        ),
                        last_good: prev.cloned(),
                    }));
                }
                job.ui.detail(&format!(
                    "{} changed while being read ({why}): reading it again",
                    e.path
                ));
                e = now;
            }
        }
    }
    unreachable!("the loop returns on its second attempt")
}

/// Whether the file is still the version read: size and modification time
/// locally, size and ETag on S3 ([`crate::store::Version::same_as`]); a file
/// gone is not.
fn same_facts(before: &Entry, now: Option<&Entry>) -> bool {
    now.is_some_and(|n| before.version().same_as(&n.version()))
}

fn metadata(id: BackupId, sha256: Option<&str>) -> Vec<(String, String)> {
    let mut m = vec![
        ("backup-id".to_string(), id.to_string()),
        ("backup-type".to_string(), "parquet".to_string()),
        ("backup-scope".to_string(), "full".to_string()),
    ];
    if let Some(s) = sha256 {
        m.push(("checksum-sha256".to_string(), s.to_string()));
    }
    m
}

fn stored(job: &Job, e: &Entry, object: ObjectEntry, server_side: bool) -> Outcome {
    Outcome::Stored {
        rec: FileRecord {
            path: e.path.clone(),
            size: e.size,
            mtime_ns: e.mtime_ns,
            etag: e.etag.clone(),
            sha256: object.content_sha256.clone(),
            object: object.key.clone(),
            object_size: object.size,
            object_sha256: object.sha256.clone(),
            compression: job.compression,
            key_id: job.keyring.map(|k| k.current().id().to_string()),
            stored_by: job.id,
        },
        object,
        server_side,
    }
}

/// The previous record with this version's facts, when the bytes are the same.
fn reuse(prev: Option<&FileRecord>, e: &Entry, sha256: &str) -> Option<Outcome> {
    prev.filter(|p| p.size == e.size && p.sha256 == sha256)
        .map(|p| {
            Outcome::Reused(FileRecord {
                mtime_ns: e.mtime_ns,
                etag: e.etag.clone(),
                ..p.clone()
            })
        })
}

fn try_copy(job: &Job, e: &Entry, prev: Option<&FileRecord>) -> Result<Try> {
    let key = format!("{}{}{}", job.key_prefix, e.path, job.suffix);
    let store = job.target.store();
    if e.size <= INLINE_MAX {
        // Small: one read, checked, hashed and uploaded from memory.
        let fetched = match job.source.read_all(e).or_else(unreadable) {
            Ok(f) => f,
            Err(t) => return t,
        };
        let Fetched::Got(bytes) = fetched else {
            return Ok(Try::Changed("it was replaced or deleted".into()));
        };
        if bytes.len() as u64 != e.size {
            return Ok(Try::Changed(format!(
                "{} bytes read, {} listed",
                bytes.len(),
                e.size
            )));
        }
        if !same_facts(e, job.source.stat(&e.path)?.as_ref()) {
            return Ok(Try::Changed("its size, time or ETag changed".into()));
        }
        if let Err(err) = parquet::check_bytes(&bytes) {
            return Ok(Try::Corrupt(format!("{err:#}")));
        }
        let sha = digest_reader(&bytes[..])?.sha256;
        if let Some(o) = reuse(prev, e, &sha) {
            return Ok(Try::Done(Box::new(o)));
        }
        let object = pipeline::upload(
            store,
            &key,
            &metadata(job.id, Some(&sha)),
            job.compression,
            job.keyring,
            Arc::new(Silent),
            |w| Ok(w.write_all(&bytes)?),
        )?;
        return Ok(Try::Done(Box::new(stored(job, e, object, false))));
    }

    // Large (or copied inside the store): check the footer from the tail first.
    let fetched = match job.source.head_tail(e, TAIL_GUESS).or_else(unreadable) {
        Ok(f) => f,
        Err(t) => return t,
    };
    let Fetched::Got((head, mut tail)) = fetched else {
        return Ok(Try::Changed("it was replaced or deleted".into()));
    };
    if tail.len() >= 8 && e.size >= parquet::MIN_LEN {
        if let Ok(n) = parquet::footer_len(&tail[tail.len() - 8..], e.size) {
            if tail.len() < n as usize + 8 {
                let Fetched::Got((_, t)) = job.source.head_tail(e, u64::from(n) + 8)? else {
                    return Ok(Try::Changed("it was replaced or deleted".into()));
                };
                tail = t;
            }
        }
    }
    if let Err(err) = parquet::check_parts(&head, &tail, e.size) {
        return Ok(Try::Corrupt(format!("{err:#}")));
    }

    if job.server_side && e.etag.is_some() {
        return server_side_copy(job, e, prev, &key);
    }

    // A first read gives the SHA-256 for the object's metadata and to recognise a
    // touched but unchanged file; the upload's own read must give the same.
    let first = match e.etag {
        None => {
            let Fetched::Got(r) = job.source.reader(e)? else {
                return Ok(Try::Changed("it was replaced or deleted".into()));
            };
            let d = digest_reader(r)
                .with_context(|| format!("failed to read {}", job.source.where_(&e.path)))?;
            if let Some(o) = reuse(prev, e, &d.sha256) {
                if d.bytes == e.size && same_facts(e, job.source.stat(&e.path)?.as_ref()) {
                    return Ok(Try::Done(Box::new(o)));
                }
            }
            Some(d.sha256)
        }
        Some(_) => None,
    };
    let Fetched::Got(reader) = job.source.reader(e)? else {
        return Ok(Try::Changed("it was replaced or deleted".into()));
    };
    let upload = pipeline::upload(
        store,
        &key,
        &metadata(job.id, first.as_deref()),
        job.compression,
        job.keyring,
        Arc::new(Silent),
        |w| {
            let mut h = HashReader::new(reader);
            io::copy(&mut h, w)?;
            crate::failpoint::pause("replicate-read");
            let (_, d) = h.finish();
            if d.bytes != e.size {
                return Err(Changed(format!("{} bytes read, {} listed", d.bytes, e.size)).into());
            }
            if first.as_ref().is_some_and(|f| *f != d.sha256) {
                return Err(Changed("a second read gave another SHA-256".into()).into());
            }
            if !same_facts(e, job.source.stat(&e.path)?.as_ref()) {
                return Err(Changed("its size, time or ETag changed".into()).into());
            }
            Ok(())
        },
    );
    match upload {
        Ok(object) => Ok(Try::Done(Box::new(stored(job, e, object, false)))),
        Err(err) => match changed_reason(&err) {
            Some(why) => Ok(Try::Changed(why)),
            None => Err(err),
        },
    }
}

/// Hashes the source object (one read, nothing uploaded) and copies it inside the
/// object store, pinned to the ETag that was hashed.
fn server_side_copy(job: &Job, e: &Entry, prev: Option<&FileRecord>, key: &str) -> Result<Try> {
    let (Source::S3(src), Target::S3(dst)) = (job.source, job.target) else {
        anyhow::bail!("internal: a server-side copy needs S3 on both sides");
    };
    let etag = e.etag.clone().unwrap_or_default();
    let Fetched::Got(r) = job.source.reader(e)? else {
        return Ok(Try::Changed("its ETag changed".into()));
    };
    let d = digest_reader(r)
        .with_context(|| format!("failed to read {}", job.source.where_(&e.path)))?;
    if d.bytes != e.size {
        return Ok(Try::Changed(format!(
            "{} bytes read, {} listed",
            d.bytes, e.size
        )));
    }
    if let Some(o) = reuse(prev, e, &d.sha256) {
        return Ok(Try::Done(Box::new(o)));
    }
    let full = src.full_key_of(&e.path)?;
    let copied = dst.copy_from(
        &src.settings().bucket,
        &full,
        &etag,
        e.size,
        key,
        &metadata(job.id, Some(&d.sha256)),
    )?;
    if copied.is_none() {
        return Ok(Try::Changed("its ETag changed before the copy".into()));
    }
    // A service that ignores the copy's ETag condition could have copied a newer
    // version than the one hashed: look again, and drop such a copy.
    if !same_facts(e, job.source.stat(&e.path)?.as_ref()) {
        dst.delete(key)
            .with_context(|| format!("failed to remove the copy {key} of a changed file"))?;
        return Ok(Try::Changed("its ETag changed during the copy".into()));
    }
    // The copy is of the hashed version (pinned by ETag); check it landed whole.
    match dst.head(key)? {
        Some(info) if info.size == e.size => {}
        other => anyhow::bail!(
            "the server-side copy {key} has {} bytes, expected {}",
            other.map_or(0, |i| i.size),
            e.size
        ),
    }
    let object = ObjectEntry {
        key: key.to_string(),
        size: e.size,
        sha256: d.sha256.clone(),
        content_bytes: e.size,
        content_sha256: d.sha256,
    };
    Ok(Try::Done(Box::new(stored(job, e, object, true))))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unreadable_file_is_skipped_but_an_unreachable_source_stops_the_run() {
        let denied = anyhow::anyhow!("Permission denied (os error 13)");
        match unreadable::<()>(denied) {
            Err(Ok(Try::Unreadable(why))) => assert!(why.contains("Permission denied")),
            _ => panic!("a refused file must be skipped"),
        }
        let archived = crate::exit::coded(crate::exit::Code::Config, "403 InvalidObjectState");
        assert!(matches!(
            unreadable::<()>(archived),
            Err(Ok(Try::Unreadable(_)))
        ));
        let down = crate::exit::coded(crate::exit::Code::Transient, "503 Slow Down");
        assert!(matches!(unreadable::<()>(down), Err(Err(_))));
    }
    use crate::store::memory::MemoryStore;

    #[test]
    fn a_change_seen_mid_upload_aborts_the_object_and_is_recognised() {
        let store = MemoryStore::new();
        let err = pipeline::upload(
            &store,
            "parquet/x/a.parquet",
            &Vec::new(),
            Compression::None,
            None,
            Arc::new(Silent),
            |w| {
                w.write_all(b"PAR1 half of the old file")?;
                Err(Changed("a second read gave another SHA-256".into()).into())
            },
        )
        .unwrap_err();
        assert_eq!(
            changed_reason(&err).as_deref(),
            Some("a second read gave another SHA-256")
        );
        assert!(
            store.list("").unwrap().is_empty(),
            "a half-new object was stored"
        );
        assert_eq!(changed_reason(&anyhow::anyhow!("disk full")), None);
    }

    #[test]
    fn versions_compare_by_etag_on_s3_and_by_time_locally() {
        let e = |size, mtime, etag: Option<&str>| Entry {
            path: "p".into(),
            size,
            mtime_ns: Some(mtime),
            etag: etag.map(str::to_string),
        };
        assert!(same_facts(&e(1, 5, None), Some(&e(1, 5, None))));
        assert!(!same_facts(&e(1, 5, None), Some(&e(1, 6, None))));
        assert!(!same_facts(&e(1, 5, None), Some(&e(2, 5, None))));
        assert!(!same_facts(&e(1, 5, None), None));
        assert!(same_facts(&e(1, 5, Some("a")), Some(&e(1, 9, Some("a")))));
        assert!(!same_facts(&e(1, 5, Some("a")), Some(&e(1, 5, Some("b")))));
    }
}
