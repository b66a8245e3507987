//! `bkp wal push` and `bkp wal fetch`: PostgreSQL's `archive_command` and
//! `restore_command`, one file per run, through the usual stream format (see
//! `manifest/wal.rs` for the layout and why no manifest is written).
//!
//! `push` is create-only and idempotent: PostgreSQL retries a failed command
//! with the same file, and a file already archived with the same content is a
//! success, with other content a failure (PostgreSQL then keeps the file and
//! retries, and the server's log says why). `fetch` writes nothing to the
//! destination until the whole file was decrypted and its content matched the
//! tag of its name.
//!
//! Exit codes follow PostgreSQL's rules for these commands: `fetch` exits 9
//! when the archive has no such file and nothing after it (the normal end of
//! an archive), and otherwise above 125 (200 + bkp's code), which makes
//! PostgreSQL stop recovery instead of taking a gap, a damaged or unreachable
//! archive for its end; a standby (`standby.signal`) gets the plain code for
//! every failure, and retries.

use std::fs;
use std::io::{self, Read};
use std::path::Path;

use anyhow::{Context, Result};

use super::{open_store, Ctx};
use crate::exit::{coded, Code};
use crate::manifest::head;
use crate::manifest::seal::Trust;
use crate::manifest::wal::{self, archive};
use crate::stages::hash::digest_reader;
use crate::store::Store;
use crate::{exit, pipeline};

/// The system identifier of the cluster whose data directory is `pgdata`:
/// the first field of `global/pg_control`.
pub fn system_identifier(pgdata: &Path) -> Result<u64> {
    let path = pgdata.join("global/pg_control");
    let mut first = [0u8; 8];
    fs::File::open(&path)
        .and_then(|mut f| f.read_exact(&mut first))
        .map_err(|e| {
            coded(
                Code::Config,
                format!(
                    "cannot read the system identifier from {} ({e}): run in the server's data directory (PostgreSQL runs archive_command and restore_command there) or pass --pgdata",
                    path.display()
                ),
            )
        })?;
    let id = u64::from_ne_bytes(first);
    if id == 0 {
        return Err(coded(
            Code::Config,
            format!("{} holds no system identifier", path.display()),
        ));
    }
    Ok(id)
}

/// The WAL segment size of the cluster whose data directory is `pgdata`, from
/// `global/pg_control`: the field after `floatFormat` (the constant 1234567.0,
/// which PostgreSQL keeps there to check the machine's float format), then
/// `blcksz`, `relseg_size` and `xlog_blcksz`, in every version since 11.
/// [`crate::limits::WAL_SEGMENT_MAX`] when it cannot be read there: a fetch
/// then writes at most the largest segment PostgreSQL can have.
fn segment_size(pgdata: &Path) -> u64 {
    let mut control = Vec::new();
    let read = fs::File::open(pgdata.join("global/pg_control"))
        .and_then(|f| f.take(512).read_to_end(&mut control));
    if read.is_err() {
        return crate::limits::WAL_SEGMENT_MAX;
    }
    control_segment_size(&control).unwrap_or(crate::limits::WAL_SEGMENT_MAX)
}

/// The segment size in the bytes of a `pg_control` file (see [`segment_size`]).
fn control_segment_size(control: &[u8]) -> Option<u64> {
    let float = 1234567.0f64.to_ne_bytes();
    let u32_at = |at: usize| -> Option<u64> {
        let b = control.get(at..at + 4)?;
        Some(u64::from(u32::from_ne_bytes(b.try_into().ok()?)))
    };
    let at = 8 * control
        .chunks_exact(8)
        .position(|c| c == float.as_slice())?;
    let (block, wal_block, segment) = (u32_at(at + 8)?, u32_at(at + 16)?, u32_at(at + 20)?);
    let power = |v: u64, lo: u64, hi: u64| v.is_power_of_two() && (lo..=hi).contains(&v);
    (power(block, 1 << 10, 1 << 15)
        && power(wal_block, 1 << 10, 1 << 16)
        && wal::is_segment_size(segment))
    .then_some(segment)
}

fn file_name(name: &str) -> Result<wal::WalName> {
    wal::parse_name(name).ok_or_else(|| {
        coded(
            Code::Config,
            format!(
                "{:?} is not the name of a file PostgreSQL archives (a WAL segment, a .history, .backup or .partial file)",
                name.chars().take(100).collect::<String>()
            ),
        )
    })
}

/// `bkp wal push PATH`: archives the file at `path` (relative to the data
/// directory `pgdata`, as PostgreSQL's `%p`).
pub fn push(ctx: &Ctx, path: &Path, pgdata: &Path) -> Result<()> {
    let plan = &ctx.plan;
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or_default()
        .to_string();
    file_name(&name)?;
    let system = system_identifier(pgdata)?;
    let full = if path.is_absolute() {
        path.to_path_buf()
    } else {
        pgdata.join(path)
    };
    let trust = super::trust(plan, Vec::new())?;
    let digest = fs::File::open(&full)
        .and_then(digest_reader)
        .with_context(|| format!("failed to read {}", full.display()))?;
    let primary: std::sync::Arc<dyn Store> = open_store(plan)?.into();
    let store = primary.as_ref();
    // The store's id goes into the tag (see `Trust::wal_store_id`). A
    // marker that cannot be read (or one planted in the bucket) must not
    // stop archiving: PostgreSQL would keep the WAL until its disk fills.
    // The tag then names no store, as tags did before they named it.
    let (trust, bound) = match trust.wal_store_id() {
        Ok(Some(id)) => (trust, Some(id)),
        Ok(None) => {
            if trust.pinned_store().is_none() && trust.key_holder() {
                ctx.ui.warn(&format!(
                    "{} has no store marker with an id: {name} is archived with a tag that names no store (`bkp init` marks the store; [encryption] store_id pins its id)",
                    store.identity()
                ));
            }
            (trust.unbound(), None)
        }
        Err(e) => {
            ctx.ui.warn(&format!(
                "{e:#}; {name} is archived with a tag that names no store"
            ));
            (trust.unbound(), None)
        }
    };
    let keys = trust.keys();
    let message = wal::message(bound.as_deref(), system, &name, &digest.sha256);
    let tag = crate::manifest::seal::tag(keys, &message)?;
    if let Some(there) = already_archived(ctx, store, &trust, system, &name, &digest.sha256)? {
        // An earlier push stored it, and may have died before its head
        // and its copies.
        return archived(ctx, &primary, &trust, system, &name, &there.key, there.size);
    }
    let key = wal::key(system, &name, &tag, plan.compression, keys.is_some());
    let uploaded = pipeline::upload(
        store,
        &key,
        &Vec::new(),
        plan.compression,
        keys,
        std::sync::Arc::new(crate::stages::progress::Silent),
        |w| {
            let mut f = fs::File::open(&full)
                .with_context(|| format!("failed to read {}", full.display()))?;
            io::copy(&mut f, w)?;
            Ok(())
        },
    );
    let entry = match uploaded {
        Ok(e) => e,
        // Another push of the same file won the race: fine if it is this content.
        Err(e) => {
            if let Some(there) =
                already_archived(ctx, store, &trust, system, &name, &digest.sha256)?
            {
                return archived(ctx, &primary, &trust, system, &name, &there.key, there.size);
            }
            return Err(e);
        }
    };
    if entry.content_sha256 != digest.sha256 {
        let _ = store.delete(&key);
        return Err(anyhow::anyhow!(
            "{} changed while it was archived (SHA-256 {} before, {} while uploading): nothing was archived; PostgreSQL retries",
            full.display(),
            digest.sha256,
            entry.content_sha256
        ));
    }
    crate::failpoint::hit("wal-push-stored");
    ctx.ui.detail(&format!(
        "archived {name} of system {system} as {key} ({} of {})",
        crate::ui::size(entry.size),
        crate::ui::size(entry.content_bytes)
    ));
    archived(ctx, &primary, &trust, system, &name, &key, entry.size)
}

/// What follows file `name`'s being stored on the primary as `key`: now and
/// then the record that the archive reached this far, which `fetch`
/// believes over a missing file (see `manifest/head.rs`), then the copies.
fn archived(
    ctx: &Ctx,
    primary: &std::sync::Arc<dyn Store>,
    trust: &Trust,
    system: u64,
    name: &str,
    key: &str,
    size: u64,
) -> Result<()> {
    let head = match head::wal_due(name) {
        Some(segment) => {
            head::advance_wal(primary.as_ref(), trust, system, &segment)?;
            Some(head::wal_key(system, &segment))
        }
        None => None,
    };
    into_copies(ctx, primary, trust, (name, key, size), head);
    Ok(())
}

/// Brings WAL `file`, stored as `key` (`size` bytes on `primary`), and the
/// head the push recorded, into every copy with `in_backup_runs`, all at
/// once, waiting for each no longer than its `wal_push_timeout`. The push
/// has succeeded already (the primary holds the file): a copy that fails or
/// is slow is a warning, and `bkp copy` brings the file later. A copy still
/// writing when the wait ends is cut off when this process exits: an S3
/// upload never completed is no object (a lifecycle rule aborts it), a
/// local copy's partial file is left in its `.bkp-partial`.
fn into_copies(
    ctx: &Ctx,
    primary: &std::sync::Arc<dyn Store>,
    trust: &Trust,
    (file, key, size): (&str, &str, u64),
    head: Option<String>,
) {
    use std::time::Instant;
    let (tx, rx) = std::sync::mpsc::channel();
    let mut waiting = Vec::new();
    let started = Instant::now();
    for c in ctx.plan.copies.iter().filter(|c| c.in_backup_runs) {
        let backoff = Backoff::of(ctx, &c.name);
        if let Some(until) = backoff.until() {
            ctx.ui.detail(&format!(
                "copy {}: passed over until {}, after a push to it failed; `bkp copy` brings what it misses",
                c.name,
                crate::units::rfc3339(until)
            ));
            continue;
        }
        let (tx, primary, plan, trust) =
            (tx.clone(), primary.clone(), c.store.clone(), trust.clone());
        let (name, key, head) = (c.name.clone(), key.to_string(), head.clone());
        std::thread::spawn(move || {
            let done = super::open_plan_store(&plan).and_then(|copy| {
                crate::copies::copy_wal(
                    primary.as_ref(),
                    copy.as_ref(),
                    &trust,
                    &key,
                    size,
                    head.as_deref(),
                )
            });
            let _ = tx.send((name, done));
        });
        waiting.push((
            c.name.clone(),
            started + c.wal_push_timeout,
            c.wal_push_timeout,
        ));
    }
    drop(tx);
    while let Some(until) = waiting.iter().map(|w| w.1).min() {
        match rx.recv_timeout(until.saturating_duration_since(Instant::now())) {
            Ok((name, done)) => {
                waiting.retain(|w| w.0 != name);
                match done {
                    Ok(bytes) => {
                        Backoff::of(ctx, &name).clear();
                        ctx.ui.detail(&format!(
                            "copy {name}: {file} written ({})",
                            crate::ui::size(bytes)
                        ))
                    }
                    Err(e) => ctx.ui.warn(&format!(
                        "{file} is archived on the primary, but not in copy {name}: {e:#}; {}",
                        Backoff::of(ctx, &name).start()
                    )),
                }
            }
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                let now = Instant::now();
                for (name, _, limit) in waiting.iter().filter(|w| w.1 <= now) {
                    ctx.ui.warn(&format!(
                        "{file} is archived on the primary, but copy {name} did not take it within its wal_push_timeout ({}); {}",
                        crate::ui::human_duration(*limit),
                        Backoff::of(ctx, name).start()
                    ));
                }
                waiting.retain(|w| w.1 > now);
            }
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => break,
        }
    }
}

/// How long `wal push` passes over a copy after a push to it failed or
/// timed out: a copy that is down must not cost every push (and so
/// PostgreSQL's archiving) its `wal_push_timeout`. `bkp copy` brings what
/// the copy misses meanwhile.
const COPY_BACKOFF: std::time::Duration = std::time::Duration::from_secs(300);

/// The work directory's note that the last push to a copy failed: a file
/// whose modification time is when. Best effort: a host that cannot write
/// it (PostgreSQL's user without access to the work directory) tries every
/// copy on every push.
struct Backoff(std::path::PathBuf);

impl Backoff {
    fn of(ctx: &Ctx, copy: &str) -> Backoff {
        Backoff(
            ctx.plan
                .work_dir
                .join("wal-push")
                .join(format!("{copy}.failed")),
        )
    }

    /// Until when the copy is passed over, if it is.
    fn until(&self) -> Option<time::OffsetDateTime> {
        let at = fs::metadata(&self.0).and_then(|m| m.modified()).ok()?;
        let until = time::OffsetDateTime::from(at + COPY_BACKOFF);
        (until > time::OffsetDateTime::now_utc()).then_some(until)
    }

    /// Notes a failure; what the warning says of it.
    fn start(&self) -> String {
        let noted = self
            .0
            .parent()
            .map_or(Ok(()), fs::create_dir_all)
            .and_then(|()| fs::write(&self.0, b""));
        let copy = self
            .0
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        match noted {
            Ok(()) => format!(
                "pushes pass it over for the next {}, and `bkp copy --to {copy}` brings it",
                crate::ui::human_duration(COPY_BACKOFF)
            ),
            Err(_) => format!("`bkp copy --to {copy}` brings it"),
        }
    }

    fn clear(&self) {
        let _ = fs::remove_file(&self.0);
    }
}

/// The object holding file `name` with content `sha256`, when it is
/// archived already; an error when another content is archived under that
/// name.
fn already_archived(
    ctx: &Ctx,
    store: &dyn Store,
    trust: &Trust,
    system: u64,
    name: &str,
    sha256: &str,
) -> Result<Option<wal::Stored>> {
    let found = archive::candidates(store, system, name)?;
    if let Some(there) = found
        .iter()
        .find(|s| wal::verifies(trust, system, s, sha256))
    {
        ctx.ui.detail(&format!(
            "{name} of system {system} is archived already, with this content"
        ));
        return Ok(Some(there.clone()));
    }
    // Another content under the name blocks this one only when it is
    // authentic: an object planted or damaged in the store must not stop
    // archiving (PostgreSQL would keep the WAL until its disk fills).
    let mut authentic = None;
    for s in &found {
        match archive::check(store, trust, system, s) {
            Ok(_) => {
                authentic = Some(s);
                break;
            }
            Err(e) if exit::exit_code(&e) == exit::INTEGRITY => ctx.ui.warn(&format!(
                "{e:#}; ignored: this push stores the file under its own name"
            )),
            Err(e) => return Err(e),
        }
    }
    if let Some(other) = authentic {
        return Err(coded(
            Code::Integrity,
            format!(
                "the archive in {} already holds {name} of system {system} ({}) with other content, or sealed by a key this host does not hold: it is never replaced. Two servers with one system identifier may be archiving into one place (a restored copy, a promoted standby without a new timeline); stop the one that should not archive, then compare both files",
                store.identity(),
                other.key
            ),
        ));
    }
    Ok(None)
}

/// `bkp wal fetch NAME DEST`: writes archived file `name` to `dest` (relative
/// to `pgdata`, as PostgreSQL's `%p`), verified.
pub fn fetch(ctx: &Ctx, name: &str, dest: &Path, pgdata: &Path, system: Option<u64>) -> Result<()> {
    file_name(name)?;
    let system = match system {
        Some(s) => s,
        None => system_identifier(pgdata)?,
    };
    let dest = if dest.is_absolute() {
        dest.to_path_buf()
    } else {
        pgdata.join(dest)
    };
    let trust = super::trust(&ctx.plan, Vec::new())?;
    let store = open_store(&ctx.plan)?;
    let max = segment_size(pgdata);
    let fetched = archive::fetch_into(store.as_ref(), &trust, system, name, &dest, max);
    if let Err(e) = fetched {
        if exit::exit_code(&e) != exit::NOT_FOUND {
            return Err(e);
        }
        // Not the archive's end if bkp recorded the archive past it.
        let (head, ignored) = head::wal_beyond(store.as_ref(), &trust, system, name)?;
        for w in &ignored {
            ctx.ui.warn(w);
        }
        if let Some(h) = head {
            return Err(coded(
                Code::Integrity,
                format!(
                    "{name} of system {system} is missing from the archive in {}, but bkp recorded the archive holding {} (by {}): WAL was deleted, this is a gap, not the archive's end, so recovery must not end here. Find out who deleted it; restore from a kept base backup to a point before {name}",
                    store.identity(),
                    crate::ui::printable(&h.head),
                    crate::ui::printable(&h.host),
                ),
            ));
        }
        return Err(e);
    }
    ctx.ui.detail(&format!(
        "restored {name} of system {system} to {}",
        dest.display()
    ));
    Ok(())
}

/// The exit code of a failed `wal fetch` (see the module's documentation). A
/// standby gets bkp's own codes (all below 126): it falls back to streaming
/// and asks again, where a code above 125 would shut it down.
pub fn fetch_exit_code(code: i32, pgdata: &Path) -> i32 {
    match code {
        exit::NOT_FOUND => code,
        c if c > 125 => c,
        c if pgdata.join("standby.signal").exists() => c,
        c => 200 + c,
    }
}

#[cfg(test)]
mod tests {
    use super::control_segment_size;

    /// A `pg_control` as PostgreSQL 15 lays it out on x86-64: `floatFormat`
    /// at 208, then the block and segment sizes.
    fn control(segment: u32) -> Vec<u8> {
        let mut c = vec![0u8; 8192];
        c[..8].copy_from_slice(&7u64.to_ne_bytes());
        c[208..216].copy_from_slice(&1234567.0f64.to_ne_bytes());
        for (i, v) in [8192u32, 131072, 8192, segment].iter().enumerate() {
            c[216 + 4 * i..220 + 4 * i].copy_from_slice(&v.to_ne_bytes());
        }
        c
    }

    #[test]
    fn the_segment_size_is_read_from_pg_control_or_not_at_all() {
        assert_eq!(control_segment_size(&control(16 << 20)), Some(16 << 20));
        assert_eq!(control_segment_size(&control(1 << 30)), Some(1 << 30));
        // Not a size PostgreSQL allows, or no float marker: unknown.
        assert_eq!(control_segment_size(&control(3 << 20)), None);
        assert_eq!(control_segment_size(&control(1 << 19)), None);
        assert_eq!(control_segment_size(&vec![0u8; 8192]), None);
        assert_eq!(control_segment_size(&[]), None);
    }
}
