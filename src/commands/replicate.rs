//! `bkp replicate`: Parquet cold tier → list → compare with the previous run's set
//! → check each new or changed file is Parquet → copy (compress ⇒ encrypt →
//! SHA-256 → store, or a server-side copy) → manifest of the whole set → ledger.
//!
//! Stateless: the previous set is read back from the newest replicate manifest of
//! the same source. A file whose size and modification time (ETag on S3) match
//! that record is not read at all, so a run with nothing new costs a listing and
//! two manifest requests. A file that changes while it is read is detected (its
//! facts before and after, and the SHA-256 of a second read for streamed files),
//! retried once, and otherwise reported: a half-new file is never stored. A file
//! that is not valid Parquet is reported and skipped; the run still replicates
//! the rest, writes its manifest, and exits with code 10.

use std::collections::BTreeSet;
use std::io;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use anyhow::{Context, Result};
use serde_json::json;
use time::OffsetDateTime;

use super::{hostname, record_run, Ctx, RunRecord};
use crate::config::StorePlan;
use crate::crypto::Keyring;
use crate::exit::{coded, Code};
use crate::id::BackupId;
use crate::ledger::Operation;
use crate::lock::RunLock;
use crate::manifest::{self, Kind, Manifest, ObjectEntry, Scope, Status};
use crate::parquet;
use crate::replicate::config::{ReplicatePlan, SourcePlan};
use crate::replicate::record::{self, FileRecord, ReplicaSet, Skipped, Stats};
use crate::replicate::source::{Entry, Fetched, Source};
use crate::stages::compress::Compression;
use crate::stages::hash::{digest_reader, HashReader};
use crate::stages::progress::Silent;
use crate::store::s3::S3Store;
use crate::store::{local::LocalStore, Store};
use crate::{pipeline, ui};

/// Files up to this size are read into memory once: checked, hashed and uploaded
/// from the same bytes (one GET and one PUT; a server-side copy would take more
/// requests than it saves). Larger files are streamed, or copied inside the
/// store when possible.
const INLINE_MAX: u64 = 8 << 20;
/// The tail read first for the Parquet check; a larger footer costs a second read.
const TAIL_GUESS: u64 = 64 << 10;

/// The backup store, kept concrete when it is S3 so that server-side copies can
/// be made.
enum Target {
    Plain(Box<dyn Store>),
    S3(S3Store),
}

impl Target {
    fn store(&self) -> &dyn Store {
        match self {
            Target::Plain(s) => s.as_ref(),
            Target::S3(s) => s,
        }
    }
}

/// What every worker shares.
struct Job<'a> {
    id: BackupId,
    source: &'a Source,
    target: &'a Target,
    keyring: Option<&'a Keyring>,
    compression: Compression,
    key_prefix: String,
    suffix: String,
    server_side: bool,
    ui: &'a ui::Ui,
}

enum Outcome {
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

pub fn run(ctx: &Ctx) -> Result<()> {
    let plan = &ctx.plan;
    let rp = plan.replicate.as_ref().ok_or_else(|| {
        coded(
            Code::Config,
            format!(
                "{}: `bkp replicate` needs a [replicate] section with source = a directory or s3://bucket/prefix",
                plan.source.display()
            ),
        )
    })?;
    let keyring = if rp.encrypt {
        Some(plan.keyring()?.ok_or_else(|| {
            coded(
                Code::Config,
                format!("{}: replicate.encryption is on (the default) but [encryption] is disabled: configure a key, or set encryption = false under [replicate]", plan.source.display()),
            )
        })?)
    } else {
        None
    };
    refuse_overlap(plan, rp)?;
    let source = Source::open(&rp.source, rp.concurrency)?;
    let target = match &plan.store {
        StorePlan::S3(s) => Target::S3(S3Store::new(s.clone())?),
        StorePlan::Local(p) => Target::Plain(Box::new(LocalStore::new(p)?)),
    };
    let server_side = server_side_possible(plan, rp, keyring.is_some());
    let store = target.store();
    let _lock = RunLock::acquire(&plan.work_dir, "replicate", ctx.wait)?;

    let started_at = OffsetDateTime::now_utc();
    let clock = Instant::now();
    let id = BackupId::new_v7(started_at);
    let root = rp.source.identity();
    ctx.ui.detail(&format!(
        "replicate {id} of {root} to {}{}",
        store.identity(),
        if server_side {
            " (server-side copies)"
        } else {
            ""
        }
    ));

    let outcome = (|| -> Result<Manifest> {
        let previous = find_previous(ctx, store, &root)?;
        let (listing, ignored) = source.list(rp)?;
        let diff = record::diff(previous.as_ref().map(|(_, s)| s), &listing);
        ctx.ui.detail(&format!(
            "{} file(s) at the source: {} unchanged since {}, {} to check, {} gone",
            listing.len(),
            diff.unchanged.len(),
            previous
                .as_ref()
                .map_or("(no previous run)".to_string(), |(m, _)| m.id.to_string()),
            diff.changed.len(),
            diff.deleted.len()
        ));
        let job = Job {
            id,
            source: &source,
            target: &target,
            keyring: keyring.as_ref(),
            compression: rp.compression,
            key_prefix: format!(
                "{k}/{y:04}/{m:02}/{d:02}/{id}/",
                k = Kind::Parquet.as_str(),
                y = started_at.year(),
                m = started_at.month() as u8,
                d = started_at.day()
            ),
            suffix: super::object_suffix("", rp.compression, keyring.as_ref()),
            server_side,
            ui: &ctx.ui,
        };
        let outcomes = run_pool(&job, &diff.changed, rp.concurrency)?;

        let mut set = diff.unchanged;
        let mut objects = Vec::new();
        let mut skipped: Vec<Skipped> = ignored
            .into_iter()
            .map(|i| Skipped {
                path: i.path,
                reason: i.reason,
                last_good: None,
            })
            .collect();
        let mut deleted = diff.deleted;
        let mut stats = Stats::default();
        for ((entry, prev), o) in diff.changed.iter().zip(outcomes) {
            match o {
                Outcome::Stored {
                    rec,
                    object,
                    server_side,
                } => {
                    stats.copied_files += 1;
                    stats.copied_bytes += rec.size;
                    stats.server_side_copies += u64::from(server_side);
                    set.push(rec);
                    objects.push(object);
                }
                Outcome::Reused(rec) => {
                    stats.touched_unchanged += 1;
                    set.push(rec);
                }
                Outcome::Skipped(s) => {
                    ctx.ui
                        .warn(&format!("skipped {}: {}", source.where_(&s.path), s.reason));
                    skipped.push(s);
                }
                Outcome::Gone => {
                    ctx.ui
                        .detail(&format!("{} was deleted during the run", entry.path));
                    if let Some(p) = prev {
                        deleted.push(p.clone());
                    }
                }
            }
        }
        set.sort_by(|a, b| a.path.cmp(&b.path));
        objects.sort_by(|a, b| a.key.cmp(&b.key));
        skipped.sort_by(|a, b| a.path.cmp(&b.path));
        deleted.sort_by(|a, b| a.path.cmp(&b.path));
        let uses: Vec<String> = set
            .iter()
            .filter(|r| r.stored_by != id)
            .map(|r| r.object.clone())
            .chain(
                skipped
                    .iter()
                    .filter_map(|s| s.last_good.as_ref().map(|r| r.object.clone())),
            )
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        let files = set.iter().map(FileRecord::file_entry).collect();
        let replica = ReplicaSet {
            format: record::FORMAT.into(),
            root: root.clone(),
            previous: previous.as_ref().map(|(m, _)| m.id),
            set,
            deleted,
            skipped,
            stats,
        };
        let m = Manifest {
            schema: manifest::schema_string(),
            id,
            kind: Kind::Parquet,
            scope: Scope::Full,
            operation: "replicate".into(),
            status: Status::Completed,
            started_at,
            finished_at: OffsetDateTime::now_utc(),
            host: hostname(),
            bkp_version: env!("CARGO_PKG_VERSION").into(),
            retention_days: rp.retention_days,
            compression: rp.compression,
            encryption: super::encryption_record(keyring.as_ref()),
            objects,
            files,
            parent: None,
            uses,
            source: replica.into_source_map()?,
        };
        manifest::write(store, &m)?;
        Ok(m)
    })();

    let record = RunRecord {
        id,
        kind: Kind::Parquet,
        scope: Scope::Full,
        operation: Operation::Replicate,
        compression: rp.compression,
        encrypted: keyring.is_some(),
        completed: outcome.is_ok(),
        retention_days: rp.retention_days,
        started_at,
        bytes: outcome.as_ref().map_or(0, |m| m.stored_bytes()),
    };
    let ledger = record_run(ctx, store, &record);
    let m = outcome?;
    let set = ReplicaSet::from_manifest(&m)?;

    let mut problems = Vec::new();
    let ledger_note = match ledger {
        Ok(n) => n,
        Err(e) => {
            problems.push(format!("recording it in the ledger failed: {e:#}"));
            None
        }
    };
    report(ctx, &m, &set, store, clock.elapsed(), ledger_note)?;
    if !problems.is_empty() {
        anyhow::bail!(
            "replicate {} completed, but {}",
            m.id,
            problems.join("; and ")
        );
    }
    if !set.skipped.is_empty() {
        let names: Vec<String> = set
            .skipped
            .iter()
            .map(|s| format!("{} ({})", source.where_(&s.path), s.reason))
            .collect();
        return Err(coded(
            Code::Partial,
            format!(
                "replicate {} stored its manifest, but skipped {} file(s): {}. Fix or remove them at the source; the next run picks them up",
                m.id,
                names.len(),
                names.join("; ")
            ),
        ));
    }
    Ok(())
}

/// Refuses a source that holds the store or lies inside it: each run would copy
/// the backups of the one before.
fn refuse_overlap(plan: &crate::config::Plan, rp: &ReplicatePlan) -> Result<()> {
    let nested = |a: &str, b: &str| {
        let (a, b) = (a.trim_matches('/'), b.trim_matches('/'));
        a.is_empty()
            || b.is_empty()
            || a == b
            || b.starts_with(&format!("{a}/"))
            || a.starts_with(&format!("{b}/"))
    };
    let overlap = match (&rp.source, &plan.store) {
        (SourcePlan::Local(src), StorePlan::Local(dst)) => {
            let (src, dst) = (
                std::path::absolute(src).unwrap_or(src.clone()),
                std::path::absolute(dst).unwrap_or(dst.clone()),
            );
            src.starts_with(&dst) || dst.starts_with(&src)
        }
        (SourcePlan::S3(src), StorePlan::S3(dst)) => {
            src.bucket == dst.bucket
                && src.endpoint == dst.endpoint
                && nested(&src.prefix, &dst.prefix)
        }
        _ => false,
    };
    if overlap {
        return Err(coded(
            Code::Config,
            format!(
                "{}: replicate.source {} and the store {} overlap: each run would copy the backups themselves; give them separate directories or prefixes",
                plan.source.display(),
                rp.source.identity(),
                match &plan.store {
                    StorePlan::Local(p) => p.display().to_string(),
                    StorePlan::S3(s) => format!("s3://{}/{}", s.bucket, s.prefix),
                }
            ),
        ));
    }
    Ok(())
}

/// A server-side copy is possible when the bytes need no transformation (no
/// encryption, no compression) and the source is a bucket on the same service,
/// read with the store's own credentials.
fn server_side_possible(plan: &crate::config::Plan, rp: &ReplicatePlan, encrypted: bool) -> bool {
    match (&rp.source, &plan.store) {
        (SourcePlan::S3(src), StorePlan::S3(dst)) => {
            rp.server_side_copy
                && !encrypted
                && rp.compression == Compression::None
                && src.credentials_env.is_none()
                && src.endpoint == dst.endpoint
                && src.region == dst.region
        }
        _ => false,
    }
}

/// Keys of the parquet manifests, newest first (UUIDv7 keys sort by time).
fn manifest_keys_newest_first(store: &dyn Store) -> Result<Vec<String>> {
    let prefix = format!("{}/{}/", manifest::MANIFEST_DIR, Kind::Parquet.as_str());
    let mut keys: Vec<String> = store
        .list(&prefix)?
        .into_iter()
        .map(|o| o.key)
        .filter(|k| k.ends_with(".json"))
        .collect();
    keys.sort();
    keys.reverse();
    Ok(keys)
}

/// The newest replicate manifest in the store, reading only as many manifests
/// as it takes (each lists a whole set, so reading them all would be slow).
pub fn latest(store: &dyn Store) -> Result<Manifest> {
    for key in manifest_keys_newest_first(store)? {
        let m = manifest::parse(&store.get(&key)?, &key)?;
        if m.operation == "replicate" {
            return Ok(m);
        }
    }
    Err(coded(
        Code::NotFound,
        format!(
            "no replicate backup in {}: run `bkp replicate` first, or check the store settings",
            store.identity()
        ),
    ))
}

/// The newest replicate manifest of this source and its set. Only the newest
/// manifests are read, not the whole history.
fn find_previous(
    ctx: &Ctx,
    store: &dyn Store,
    root: &str,
) -> Result<Option<(Manifest, ReplicaSet)>> {
    for key in manifest_keys_newest_first(store)?.iter() {
        let m = match store.get(key).and_then(|b| manifest::parse(&b, key)) {
            Ok(m) => m,
            Err(e) => {
                ctx.ui
                    .warn(&format!("ignoring unreadable manifest {key}: {e:#}"));
                continue;
            }
        };
        if m.operation != "replicate" {
            continue;
        }
        match ReplicaSet::from_manifest(&m) {
            Ok(s) if s.root == root => return Ok(Some((m, s))),
            Ok(_) => continue,
            Err(e) => ctx.ui.warn(&format!("ignoring {key}: {e:#}")),
        }
    }
    Ok(None)
}

/// Copies the changed files with `n` workers. The first hard failure stops the
/// others from starting new files and is returned.
fn run_pool(job: &Job, work: &[(Entry, Option<FileRecord>)], n: usize) -> Result<Vec<Outcome>> {
    let next = AtomicUsize::new(0);
    let stop = AtomicBool::new(false);
    let results: Mutex<Vec<Option<Outcome>>> = Mutex::new((0..work.len()).map(|_| None).collect());
    let first_error: Mutex<Option<anyhow::Error>> = Mutex::new(None);
    let done = AtomicUsize::new(0);
    let progress = job.ui.progress();
    progress.begin("replicating files", Some(work.len() as u64));
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
                        done.fetch_add(1, Ordering::Relaxed);
                        progress.advance(1);
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
        match try_copy(job, &e, prev)? {
            Try::Done(o) => return Ok(*o),
            Try::Corrupt(reason) => {
                return Ok(Outcome::Skipped(Skipped {
                    path: e.path.clone(),
                    reason: format!("not a valid Parquet file: {reason}"),
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

/// Same version: size and modification time locally, size and ETag on S3.
fn same_facts(before: &Entry, now: Option<&Entry>) -> bool {
    now.is_some_and(|n| {
        n.size == before.size
            && match (&before.etag, &n.etag) {
                (Some(a), Some(b)) => a == b,
                _ => n.mtime_ns == before.mtime_ns,
            }
    })
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
        let Fetched::Got(bytes) = job.source.read_all(e)? else {
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
    let Fetched::Got((head, mut tail)) = job.source.head_tail(e, TAIL_GUESS)? else {
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

fn report(
    ctx: &Ctx,
    m: &Manifest,
    set: &ReplicaSet,
    store: &dyn Store,
    elapsed: std::time::Duration,
    ledger_note: Option<String>,
) -> Result<()> {
    let s = &set.stats;
    if ctx.ui.json {
        let out = json!({
            "manifest": m,
            "manifest_key": m.key(),
            "store": store.identity(),
            "seconds": elapsed.as_secs_f64(),
            "ledger": ledger_note,
            "files": set.set.len(),
            "copied": s.copied_files,
            "copied_bytes": s.copied_bytes,
            "stored_bytes": m.stored_bytes(),
            "server_side_copies": s.server_side_copies,
            "deleted": set.deleted.len(),
            "skipped": set.skipped,
        });
        ui::out(&serde_json::to_string_pretty(&out)?)?;
    } else {
        ctx.ui.info(&format!(
            "replicate {} of {} to {}: {} file(s) in the set; copied {} ({}{}), {} unchanged, {} deleted at the source, {} skipped, in {:.1}s ({})",
            m.id,
            set.root,
            store.identity(),
            set.set.len(),
            s.copied_files,
            ui::size(s.copied_bytes),
            if s.server_side_copies > 0 {
                format!(", {} inside the store", s.server_side_copies)
            } else {
                String::new()
            },
            set.set.len() as u64 - s.copied_files,
            set.deleted.len(),
            set.skipped.len(),
            elapsed.as_secs_f64(),
            ui::rate(s.copied_bytes, elapsed),
        ));
        if let Some(n) = ledger_note {
            ctx.ui.detail(&n);
        }
        ui::out(&m.id.to_string())?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
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
