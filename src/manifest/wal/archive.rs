//! The WAL archive in the store, read: the objects of one file or one system,
//! a file fetched or checked against its sealed name, and a system's archive
//! summarized for `list`, `status`, `verify` and `cleanup`.

use std::fs;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use super::{Stored, Summary};
use crate::crypto::DecryptReader;
use crate::exit::{self, coded, Code};
use crate::limits::AtMost;
use crate::manifest::seal::{Tagged, Trust};
use crate::stages::compress::decompress;
use crate::stages::hash::HashWriter;
use crate::store::Store;

/// The objects of `system`'s archive under `prefix`, as their keys describe
/// them (keys that are not the archive's are left out).
fn listed(store: &dyn Store, system: u64, prefix: &str) -> Result<Vec<Stored>> {
    Ok(store
        .list(prefix)?
        .into_iter()
        .filter_map(|o| {
            let mut s = super::parse_key(system, &o.key)?;
            s.size = o.size;
            s.modified = o.modified;
            Some(s)
        })
        .collect())
}

/// The archive's objects for file `name` of `system`, newest first.
pub fn candidates(store: &dyn Store, system: u64, name: &str) -> Result<Vec<Stored>> {
    Ok(named(
        &listed(store, system, &super::name_prefix(system, name))?,
        name,
    ))
}

/// The objects of `all` stored for file `name`, newest first.
fn named(all: &[Stored], name: &str) -> Vec<Stored> {
    let mut found: Vec<Stored> = all.iter().filter(|s| s.name == name).cloned().collect();
    found.sort_by_key(|s| std::cmp::Reverse(s.modified));
    found
}

/// Writes archived file `name` of `system` to `dest`, verified: nothing is at
/// `dest` unless the whole file decrypted and matched its tag, and nothing
/// over `max` bytes (the cluster's segment size: no file PostgreSQL archives
/// is larger) is written anywhere. Tries every object stored under the name,
/// newest first.
///
/// Objects whose tag does not verify (planted, or damaged) are passed over
/// with a warning when an authentic object of the name is there, and when
/// nothing authentic is archived after the name either way: the archive's
/// end stays its end (exit 9), whatever junk lies beyond it. Junk alone
/// under the name asked for, with nothing authentic after it, may be that
/// very file, damaged: that fails ([`Code::Integrity`]), saying what to do.
pub fn fetch_into(
    store: &dyn Store,
    trust: &Trust,
    system: u64,
    name: &str,
    dest: &Path,
    max: u64,
) -> Result<u64> {
    // The store's id (a marker that cannot be read is the store's problem,
    // never one object's) before any object is judged.
    trust.wal_store_id()?;
    let found = candidates(store, system, name)?;
    match fetch(store, trust, system, name, found, dest, max)? {
        Fetched::Bytes(n) => Ok(n),
        Fetched::OnlyJunk(e) => Err(e),
    }
}

/// [`fetch_into`] for a replay bkp drives itself (`restore --at`, drills),
/// which fetches every file of the listing it made once (`all`, of
/// [`archived`]): a file that is only junk with nothing authentic after it is
/// left out with a warning (`None`), and the replay ends at the last
/// authentic file, as it would had the junk never been planted.
pub fn fetch_listed(
    store: &dyn Store,
    trust: &Trust,
    system: u64,
    all: &[Stored],
    name: &str,
    dest: &Path,
    max: u64,
) -> Result<Option<u64>> {
    trust.wal_store_id()?;
    let found = named(all, name);
    match fetch(store, trust, system, name, found, dest, max)? {
        Fetched::Bytes(n) => Ok(Some(n)),
        Fetched::OnlyJunk(e) => {
            crate::ui::log(
                crate::ui::Priority::Warning,
                &format!("bkp: warning: {e:#}; it is left out of this replay"),
            );
            Ok(None)
        }
    }
}

/// What [`fetch`] found.
enum Fetched {
    /// The file, verified, at `dest`: its bytes.
    Bytes(u64),
    /// Only objects that do not verify under the name, and nothing authentic
    /// after it: why.
    OnlyJunk(anyhow::Error),
}

/// Tries `found`, the objects stored for file `name` (newest first).
fn fetch(
    store: &dyn Store,
    trust: &Trust,
    system: u64,
    name: &str,
    found: Vec<Stored>,
    dest: &Path,
    max: u64,
) -> Result<Fetched> {
    let mut junk: Vec<String> = Vec::new();
    let mut old: Vec<String> = Vec::new();
    let mut last = None;
    for s in &found {
        match fetch_one(store, trust, system, s, dest, max) {
            Ok(n) => return Ok(Fetched::Bytes(n)),
            Err(e) if old_key(&e) => old.push(s.key.clone()),
            // Listed, then gone: never "not in the archive".
            Err(e) if exit::exit_code(&e) == exit::NOT_FOUND => {
                last = Some(coded(
                    Code::Transient,
                    format!(
                        "{} was listed but could not be read ({e:#}): the store changed during the read; PostgreSQL retries",
                        s.key
                    ),
                ))
            }
            Err(e) if exit::exit_code(&e) == exit::INTEGRITY => {
                warn_junk(&s.key, &e);
                junk.push(s.key.clone());
            }
            Err(e) => last = Some(e),
        }
    }
    // A store that did not answer, or a key missing: nothing can be said.
    if let Some(e) = last {
        return Err(e);
    }
    // Not junk and not the end: the operator has not recorded the archive
    // since the key's rotation. Recovery must stop here, not end.
    if !old.is_empty() {
        return Err(coded(
            Code::Integrity,
            format!(
                "{name} of system {system} is in the archive in {} only as {}, which {OLD_KEY}, and no sealed list records it. If it was archived before the rotation, run `bkp trust-legacy` once (the new key current) and start the recovery again; if the old key may have leaked, it may be forged: restore to a point before it (see the security model)",
                store.identity(),
                old.join(", ")
            ),
        ));
    }
    // "Not in the archive" ends a recovery as if at the archive's end, so
    // it is said only when nothing authentic after the file is archived.
    if let Some(later) = archived_after(store, trust, system, name, max)? {
        let hint = if name.ends_with(".history") {
            format!(". If a restore created that timeline, push the file from its server: `bkp wal push pg_wal/{name}`")
        } else {
            String::new()
        };
        let what = if junk.is_empty() {
            "is missing from".to_string()
        } else {
            format!(
                "has no authentic object in (only {}, which do not match its seal)",
                junk.join(", ")
            )
        };
        return Err(coded(
            Code::Integrity,
            format!(
                "{name} of system {system} {what} the archive in {}, while {later}, which comes after it, is there: a gap, not the archive's end, so recovery must not end here. Either `bkp cleanup` removed it (WAL older than every kept base backup), or it was lost: restore from a kept base backup (`bkp list`), to a point before any gap{hint}",
                store.identity()
            ),
        ));
    }
    if !junk.is_empty() {
        return Ok(Fetched::OnlyJunk(coded(
            Code::Integrity,
            format!(
                "{name} of system {system} is in the archive in {} only as {}, which does not match its name's seal, and nothing authentic is archived after it. Either it was planted there (then {name} was never archived, and this is the archive's end: remove {} from the store and start the recovery again), or {name} itself was archived and is damaged (then recovery cannot pass it: restore to a point before it)",
                store.identity(),
                junk.join(", "),
                if junk.len() == 1 { "it" } else { "them" }
            ),
        )));
    }
    Err(coded(
        Code::NotFound,
        format!(
            "{name} of system {system} is not in the archive in {}",
            store.identity()
        ),
    ))
}

/// Warns that archive object `key` was passed over, and why (`e`).
fn warn_junk(key: &str, e: &anyhow::Error) {
    let why = format!("{e:#}");
    let line = if why.contains(key) {
        format!("bkp: warning: {why}; passed over")
    } else {
        format!("bkp: warning: archived object {key} is not used ({why}); passed over")
    };
    crate::ui::log(crate::ui::Priority::Warning, &line);
}

/// For file `name`, which the archive does not hold: an authentic file
/// archived after it, which makes it a gap rather than the archive's end.
/// For a segment, a later segment of its timeline (in its log or the next);
/// for a timeline's history file, a segment of that timeline. Two small
/// listings at most; the candidates are read (at most `max` bytes each),
/// nearest first, until one matches its seal: junk planted past the end
/// does not make the end a gap (it is named in a warning).
pub fn archived_after(
    store: &dyn Store,
    trust: &Trust,
    system: u64,
    name: &str,
    max: u64,
) -> Result<Option<String>> {
    use super::FileKind;
    let Some(w) = super::parse_name(name) else {
        return Ok(None);
    };
    trust.wal_store_id()?;
    let segments_of = |prefix: String| -> Result<Vec<(u64, Stored)>> {
        let mut found: Vec<(u64, Stored)> = listed(store, system, &prefix)?
            .into_iter()
            .filter(|s| s.wal.kind == FileKind::Segment && s.wal.timeline == w.timeline)
            .map(|s| (s.wal.position, s))
            .collect();
        found.sort_by(|a, b| (a.0, &a.1.key).cmp(&(b.0, &b.1.key)));
        Ok(found)
    };
    let authentic = |found: Vec<(u64, Stored)>| -> Result<Option<String>> {
        for (_, s) in found {
            match read_verified(store, trust, system, &s, &mut io::sink(), max) {
                Ok(_) => return Ok(Some(s.name)),
                // Not believed yet, but there: the archive does not end before it.
                Err(e) if old_key(&e) => {
                    return Ok(Some(format!(
                        "{} (tagged by a rotated-out key: run `bkp trust-legacy`)",
                        s.name
                    )))
                }
                Err(e) if exit::exit_code(&e) == exit::INTEGRITY => warn_junk(&s.key, &e),
                // Gone since the listing: not there.
                Err(e) if exit::exit_code(&e) == exit::NOT_FOUND => {}
                Err(e) => return Err(e),
            }
        }
        Ok(None)
    };
    let root = super::prefix(system);
    match w.kind {
        FileKind::Segment => {
            let log = w.position >> 32;
            for l in [Some(log), log.checked_add(1)].into_iter().flatten() {
                let later: Vec<(u64, Stored)> =
                    segments_of(format!("{root}{:08X}{l:08X}", w.timeline))?
                        .into_iter()
                        .filter(|(p, _)| *p > w.position)
                        .collect();
                if let Some(name) = authentic(later)? {
                    return Ok(Some(name));
                }
            }
            Ok(None)
        }
        // Timeline 1 has no history file.
        FileKind::History if w.timeline > 1 => {
            authentic(segments_of(format!("{root}{:08X}", w.timeline))?)
        }
        _ => Ok(None),
    }
}

/// Removes a temporary file unless it was kept.
struct Temp(Option<PathBuf>);

impl Drop for Temp {
    fn drop(&mut self) {
        if let Some(p) = self.0.take() {
            let _ = fs::remove_file(p);
        }
    }
}

fn fetch_one(
    store: &dyn Store,
    trust: &Trust,
    system: u64,
    s: &Stored,
    dest: &Path,
    max: u64,
) -> Result<u64> {
    let dir = dest.parent().filter(|p| !p.as_os_str().is_empty());
    let tmp = dir.unwrap_or(Path::new(".")).join(format!(
        ".{}.bkp-{:016x}.tmp",
        s.name,
        crate::id::random_u64()
    ));
    let mut guard = Temp(Some(tmp.clone()));
    let file = {
        use std::os::unix::fs::OpenOptionsExt;
        fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)
            .with_context(|| format!("failed to create {}", tmp.display()))?
    };
    let mut w = io::BufWriter::new(file);
    let bytes = read_verified(store, trust, system, s, &mut w, max)?;
    let file = w.into_inner().map_err(|e| e.into_error())?;
    file.sync_all()?;
    fs::rename(&tmp, dest)
        .with_context(|| format!("failed to move {} to {}", tmp.display(), dest.display()))?;
    guard.0 = None;
    Ok(bytes)
}

/// Reads archived file `s` into `w`, decrypted and decompressed, and checks
/// its content against the tag of its name; the bytes written. What `w` got
/// is not to be used unless this returns `Ok`. A file that decodes to more
/// than `max` bytes is refused after `max` (and the object is read to at
/// most what `max` bytes take stored): the tag is checked only at the end,
/// so an object planted under a WAL name must not fill `pg_wal` first.
fn read_verified(
    store: &dyn Store,
    trust: &Trust,
    system: u64,
    s: &Stored,
    w: &mut dyn Write,
    max: u64,
) -> Result<u64> {
    let damaged = |why: String| {
        coded(
            Code::Integrity,
            format!(
                "archived {} of system {system} ({} in {}) {why}: it is not used",
                s.name,
                s.key,
                store.identity()
            ),
        )
    };
    let keys = trust.keys();
    if keys.is_some() && !s.encrypted {
        return Err(damaged(
            "is stored unencrypted, but [encryption] is configured".into(),
        ));
    }
    if keys.is_none() && s.encrypted {
        return Err(coded(
            Code::Config,
            format!(
                "archived {} is encrypted and no [encryption] key is configured",
                s.name
            ),
        ));
    }
    let stored_max = crate::limits::stored_at_most(max);
    let raw = AtMost::new(store.open(&s.key)?, stored_max, || {
        anyhow::anyhow!("too long")
    });
    let raw_over = raw.tripped();
    let plain: Box<dyn Read + Send> = match keys {
        Some(k) => Box::new(DecryptReader::new(raw, k)?),
        None => Box::new(raw),
    };
    let mut r = AtMost::new(decompress(plain, s.compression)?, max, || {
        anyhow::anyhow!("too long")
    });
    let over = r.tripped();
    let mut hashed = HashWriter::new(w);
    io::copy(&mut r, &mut hashed).map_err(|e| {
        if over.is_set() || raw_over.is_set() {
            damaged(format!(
                "is larger than {} ({max} bytes), the most a WAL file of this cluster can be, and was not read further",
                crate::ui::size(max)
            ))
        } else if coded_io(&e) {
            anyhow::Error::new(e)
        } else {
            damaged(format!("cannot be read ({e})"))
        }
    })?;
    let (_, digest) = hashed.finish()?;
    match super::tagged(trust, system, s, &digest.sha256)? {
        Tagged::Verifies => {}
        Tagged::OutOfScope(why) => return Err(damaged(why)),
        Tagged::OldKey => return Err(damaged(format!(
            "{OLD_KEY}, and no sealed list records it: whoever holds the old key could have written it. If it was archived before the rotation, record the archive once with `bkp trust-legacy` (the new key current)"
        ))),
        Tagged::Fails => return Err(damaged(
            "does not match its name's seal: it was altered, or stored under another file's name"
                .into(),
        )),
    }
    Ok(digest.bytes)
}

/// What the refusal of an object only a rotated-out key tagged says (and how
/// it is told apart from damage: it is not junk to pass over, and not to be
/// removed, but a decision the operator has not recorded yet).
const OLD_KEY: &str = "is tagged by a key rotated out of [encryption] since";

/// Whether `e` refuses an object only a rotated-out key tagged, which no
/// sealed list records.
fn old_key(e: &anyhow::Error) -> bool {
    exit::classify(e) == Some(Code::Integrity) && format!("{e:#}").contains(OLD_KEY)
}

/// Whether `e` carries a classified failure (an unreachable store, a wrong
/// key) rather than damage to the bytes read.
fn coded_io(e: &io::Error) -> bool {
    e.get_ref()
        .is_some_and(|x| x.downcast_ref::<exit::Coded>().is_some())
}

/// The WAL archive of `system`: every object whose key parses, with sizes and times.
pub fn archived(store: &dyn Store, system: u64) -> Result<Vec<Stored>> {
    listed(store, system, &super::prefix(system))
}

/// The systems with an archive in the store.
pub fn systems(store: &dyn Store) -> Result<Vec<u64>> {
    let mut out: Vec<u64> = store
        .list(super::PREFIX)?
        .into_iter()
        .filter_map(|o| {
            o.key
                .strip_prefix(super::PREFIX)?
                .split('/')
                .next()?
                .parse()
                .ok()
        })
        .collect();
    out.sort_unstable();
    out.dedup();
    Ok(out)
}

/// Reads archived file `s` end to end and checks it against its tag, writing
/// nothing; at most [`crate::limits::WAL_SEGMENT_MAX`] bytes of it. For `bkp
/// verify`, and for `wal push` comparing what is archived.
pub fn check(store: &dyn Store, trust: &Trust, system: u64, s: &Stored) -> Result<u64> {
    trust.wal_store_id()?;
    let max = crate::limits::WAL_SEGMENT_MAX;
    read_verified(store, trust, system, s, &mut io::sink(), max)
}

/// The WAL archive of one system, as `list`, `status` and `verify` show it.
#[derive(Debug, Clone)]
pub struct Archive {
    pub system: u64,
    /// The oldest kept base backup's first segment: what recovery can start from.
    pub from: Option<String>,
    pub summary: Summary,
    pub objects: Vec<Stored>,
}

impl Archive {
    /// One line for people.
    pub fn describe(&self, now: time::OffsetDateTime) -> String {
        let s = &self.summary;
        let runs: Vec<String> = s
            .timelines
            .iter()
            .map(|(tli, runs)| {
                let n: u64 = runs.iter().map(|r| r.segments).sum();
                format!(
                    "timeline {tli}: {} to {} ({n} segments)",
                    runs.first().map_or("?", |r| r.first.as_str()),
                    runs.last().map_or("?", |r| r.last.as_str())
                )
            })
            .collect();
        let gaps = s.gaps();
        format!(
            "WAL archive of system {}: {} files, {}; {}; {}{}",
            self.system,
            s.objects,
            crate::ui::size(s.bytes),
            if runs.is_empty() {
                "no segments".to_string()
            } else {
                runs.join(", ")
            },
            match gaps.len() {
                0 => "no gaps".to_string(),
                n => format!(
                    "{}: {}",
                    crate::units::count(n as u64, "gap"),
                    gaps.iter()
                        .map(|(_, a, b)| format!("after {a} up to {b}"))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            },
            s.newest
                .map(|t| format!(
                    "; newest archived {} ago",
                    crate::ui::human_duration((now - t).try_into().unwrap_or_default())
                ))
                .unwrap_or_default()
        )
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::json!({
            "system": self.system.to_string(),
            "from": self.from,
            "files": self.summary.objects,
            "bytes": self.summary.bytes,
            "newest": self.summary.newest.and_then(|t| t.format(&time::format_description::well_known::Rfc3339).ok()),
            "histories": self.summary.histories,
            "timelines": self.summary.timelines.iter().map(|(tli, runs)| serde_json::json!({
                "timeline": tli,
                "runs": runs.iter().map(|r| serde_json::json!({"first": r.first, "last": r.last, "segments": r.segments})).collect::<Vec<_>>(),
            })).collect::<Vec<_>>(),
            "gaps": self.summary.gaps().iter().map(|(tli, a, b)| serde_json::json!({"timeline": tli, "after": a, "before": b})).collect::<Vec<_>>(),
        })
    }
}

/// The archives of the systems base backups in `manifests` name (and, with
/// `every`, of every system with an archive in the store), summarized from
/// the oldest base backup's first segment on.
pub fn archives(
    store: &dyn Store,
    manifests: &[crate::manifest::Manifest],
    every: bool,
) -> Result<Vec<Archive>> {
    let mut starts: std::collections::BTreeMap<u64, (u64, String, u64)> = Default::default();
    for m in manifests {
        if let Some((system, start, size)) = crate::manifest::postgres::wal_start(m) {
            let name = m
                .source
                .get("wal_start")
                .and_then(|v| v.as_str())
                .unwrap_or_default()
                .to_string();
            let e = starts
                .entry(system)
                .or_insert((start.position, name.clone(), size));
            if start.position < e.0 {
                *e = (start.position, name, size);
            }
        }
    }
    let mut systems: Vec<u64> = starts.keys().copied().collect();
    if every {
        systems.extend(self::systems(store)?);
        systems.sort_unstable();
        systems.dedup();
    }
    let mut out = Vec::new();
    for system in systems {
        let objects = archived(store, system)?;
        if objects.is_empty() && !starts.contains_key(&system) {
            continue;
        }
        let (from, name, size) = match starts.get(&system) {
            Some((p, n, s)) => (Some(*p), Some(n.clone()), *s),
            None => (None, None, super::DEFAULT_SEGMENT_SIZE),
        };
        out.push(Archive {
            system,
            from: name,
            summary: super::summarize(&objects, size, from),
            objects,
        });
    }
    Ok(out)
}
