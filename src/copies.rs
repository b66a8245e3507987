//! Copies: bringing a second store up to date with the primary (3-2-1), and
//! saying what a copy lacks.
//!
//! A copy is the primary's store in another place, byte for byte: the same
//! store marker (so the manifests, sealed for the primary's store id, are
//! that copy's backups too), the same sealed lists, manifests, data objects,
//! chunks, heads and WAL archive, under the same keys. Catalogs are not
//! copied (they are caches, and a copied one could name manifests the copy
//! does not hold yet): readers of the copy build its own.
//!
//! What is copied is what the copy lacks, create-only, never replacing
//! anything: one listing of each store tells what is there. Each backup's
//! objects are copied before its manifest, so a copy never holds a manifest
//! whose objects are missing (an interrupted run leaves orphans that the
//! next run completes). Each object is streamed through a fixed buffer (the
//! S3 writer keeps its parts in flight, as a backup's upload does) and
//! hashed on the way: when its size or SHA-256 differs from what the sealed
//! manifest records, the write is aborted and the backup is not copied.
//! Nothing is decrypted. Chunks carry no digest of their stored bytes (their
//! names are keyed digests of the plaintext): their size is checked here,
//! and their authenticity by every restore and `verify` that reads them.
//!
//! Manifests are admitted on the primary as every reader admits them
//! ([`manifest::list_complete`]): one that does not verify there is not
//! copied, and is named. Heads (`manifest/head.rs`) are copied only for
//! backups the copy holds, so a copy never records a backup it lacks.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::io::{Read, Write};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use anyhow::Result;
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::exit::{classify, coded, is_damage, Code};
use crate::manifest::{self, marker, Manifest, ObjectEntry, Trust};
use crate::retention::RetentionPlan;
use crate::store::{is_already_exists, Metadata, Store};

/// Objects larger than this are read from the primary as parallel ranges.
const PARALLEL_FROM: u64 = 32 << 20;
/// The copy buffer.
const BUFFER: usize = 1 << 20;

/// What a copy run did, or (dry) what the copy lacks.
#[derive(Debug, Default, Serialize)]
pub struct Outcome {
    /// Backups (manifest keys) copied (dry: that the copy lacks).
    pub backups_copied: Vec<String>,
    /// Backups the copy held already.
    pub backups_present: u64,
    /// Backups on the primary that the copy lacks and does not get: its own
    /// retention would delete them (see [`not_kept`]).
    pub backups_left_out: u64,
    /// Objects and bytes copied (dry: to copy): data objects, chunk lists
    /// and chunks, the WAL archive's files.
    pub objects_copied: u64,
    pub bytes_copied: u64,
    /// Of those, objects of backups the copy held already: missing there,
    /// now repaired.
    pub objects_repaired: u64,
    /// Documents copied: the store marker, sealed lists, heads.
    pub documents_copied: u64,
    /// Of the objects copied, those copied inside the object store (the
    /// primary and the copy are buckets of one S3 service): no byte went
    /// up from this host, and each was checked before it was copied.
    pub objects_copied_server_side: u64,
    /// What was not copied, and why.
    pub not_copied: Vec<NotCopied>,
    /// The problems behind `not_copied`, for the exit code.
    #[serde(skip)]
    pub problems: Vec<anyhow::Error>,
}

#[derive(Debug, Serialize)]
pub struct NotCopied {
    pub key: String,
    pub why: String,
}

impl Outcome {
    fn refuse(&mut self, key: &str, e: anyhow::Error) {
        self.not_copied.push(NotCopied {
            key: key.to_string(),
            why: format!("{e:#}"),
        });
        self.problems.push(e);
    }
}

/// One object a backup needs, as its manifest records it.
struct Needed {
    key: String,
    size: Option<u64>,
    sha256: Option<String>,
    metadata: Metadata,
}

/// Brings `copy` up to date with `primary`, whose documents `trust` admits;
/// with `dry`, only says what it would copy (what the copy lacks). `say`
/// hears a line per backup copied. A store that does not answer ends it
/// with its error; damage ends only what it concerns, in
/// [`Outcome::not_copied`].
pub fn bring_up_to_date(
    primary: &dyn Store,
    copy: &dyn Store,
    trust: &Trust,
    retention: &RetentionPlan,
    dry: bool,
    say: &dyn Fn(&str),
) -> Result<Outcome> {
    let mut out = Outcome::default();
    let c = Copier::new(primary, copy, dry);
    c.marker(trust, &mut out)?;
    // Before the manifests: a reader of the copy may need them to admit one.
    c.documents(&format!("{}/", manifest::legacy::DIR), None, &mut out)?;
    let (all, unreadable) = manifest::list_complete(primary, trust, None)?;
    for u in unreadable.iter().filter(|u| !u.is_junk()) {
        let e = coded(
            u.code.unwrap_or(Code::Integrity),
            format!(
                "manifest {} cannot be read on the primary: {}",
                u.key, u.error
            ),
        );
        if !is_damage(&e) {
            return Err(e);
        }
        out.refuse(&u.key, e);
    }
    // One id under two kinds: neither is copied (the copy's retention, which
    // decides by id, could leave the genuine one out in the other's name).
    let shared = manifest::shared_ids(&all);
    for (id, keys) in &shared {
        for key in keys {
            let e = coded(
                Code::Integrity,
                format!(
                    "{key} is not copied: {}",
                    manifest::shared_id_error(*id, keys, primary)
                ),
            );
            out.refuse(key, e);
        }
    }
    let shared: HashSet<crate::id::BackupId> = shared.into_iter().map(|(id, _)| id).collect();
    let all: Vec<Manifest> = all
        .into_iter()
        .filter(|m| !shared.contains(&m.id))
        .collect();
    let mut present = c.present()?;
    let keeps = Keeps::of(&all, copy, trust, retention)?;
    let known: HashMap<&str, &ObjectEntry> = all
        .iter()
        .flat_map(|m| m.objects.iter().map(|o| (o.key.as_str(), o)))
        .collect();
    for m in &all {
        let held = present.contains_key(&m.key());
        if !held && keeps.left_out.contains(&m.id) {
            out.backups_left_out += 1;
            continue;
        }
        match c.backup(m, held, trust, &known, &mut present, &mut out) {
            Ok(()) if held => out.backups_present += 1,
            Ok(()) => {
                say(&format!(
                    "{} {} {} {}",
                    if dry { "would copy" } else { "copied" },
                    m.kind.as_str(),
                    m.operation,
                    m.id
                ));
                out.backups_copied.push(m.key());
            }
            Err(e) if is_damage(&e) => out.refuse(&m.key(), e),
            Err(e) => return Err(e),
        }
    }
    c.wal(&keeps.wal_from, &mut present, &mut out)?;
    c.documents(
        &format!("{}/", manifest::head::DIR),
        Some(&present),
        &mut out,
    )?;
    out.objects_copied_server_side = c.copied_server_side.load(Ordering::Relaxed);
    Ok(out)
}

/// Brings one backup, `m`, just stored on `primary`, into `copy`: the
/// marker if the copy has none, what `m` needs that the copy lacks (asked
/// object by object, nothing listed), its manifest, then its head. What a
/// backup run does for a copy with `in_backup_runs`; `bkp copy` still
/// brings everything else (WAL, lists, what an earlier run missed).
pub fn copy_backup(
    primary: &dyn Store,
    copy: &dyn Store,
    trust: &Trust,
    m: &Manifest,
) -> Result<Outcome> {
    let mut out = Outcome::default();
    let c = Copier::new(primary, copy, false);
    c.marker(trust, &mut out)?;
    let known = HashMap::new();
    let wanted = needed(primary, m, &known)?;
    // A few objects are asked for one by one; a snapshot of many chunks
    // lists the copy once instead.
    let mut present = if wanted.len() > HEADS_AT_MOST {
        c.present()?
    } else {
        let mut present = HashMap::new();
        for n in &wanted {
            if let Some(info) = copy.head(&n.key)? {
                present.insert(n.key.clone(), info.size);
            }
        }
        present
    };
    // Objects of earlier backups it uses are checked against their own
    // manifests, which only `bkp copy` reads: one the copy lacks is left
    // to it, and this backup with it.
    if let Some(n) = wanted
        .iter()
        .find(|n| m.uses.contains(&n.key) && !present.contains_key(&n.key))
    {
        return Err(coded(
            Code::Integrity,
            format!(
                "{} uses {}, stored by an earlier backup, which the copy lacks",
                m.id, n.key
            ),
        ));
    }
    let held = copy.head(&m.key())?.is_some();
    c.backup(m, held, trust, &known, &mut present, &mut out)?;
    if !held {
        out.backups_copied.push(m.key());
    }
    let head = manifest::head::key_of(m);
    if copy.head(&head)?.is_none() {
        match primary.get_at_most(&head, crate::limits::HEAD) {
            Ok(bytes) => {
                put_new(copy, &head, &bytes)?;
                out.documents_copied += 1;
            }
            // A run whose head could not be written: nothing to copy.
            Err(e) if classify(&e) == Some(Code::NotFound) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(out)
}

/// Brings one WAL archive file, `key` of `size` bytes as stored on
/// `primary`, into `copy`, then the WAL head at `head` when the push
/// recorded one (after its segment, as `bkp copy` orders them). What `wal
/// push` does for a copy with `in_backup_runs`; the bytes copied (0 when
/// the copy held it).
///
/// Nothing is decrypted: the file's name carries a seal over its content,
/// which every reader checks. A host that holds the key brings the store
/// marker as `bkp copy` does (checked, into an empty copy), since readers
/// of the copy need it to read tags that name the store; a write-only host
/// cannot check the marker and leaves it to `bkp copy`. Either refuses a
/// copy whose marker is not the primary's.
pub fn copy_wal(
    primary: &dyn Store,
    copy: &dyn Store,
    trust: &Trust,
    key: &str,
    size: u64,
    head: Option<&str>,
) -> Result<u64> {
    let c = Copier::new(primary, copy, false);
    if trust.key_holder() {
        c.marker(trust, &mut Outcome::default())?;
    } else {
        let read = |s: &dyn Store| match s.get_at_most(marker::KEY, crate::limits::MARKER) {
            Ok(b) => Ok(Some(b)),
            Err(e) if classify(&e) == Some(Code::NotFound) => Ok(None),
            Err(e) => Err(e),
        };
        if let Some(theirs) = read(copy)? {
            if read(primary)?.is_some_and(|ours| ours != theirs) {
                return Err(not_the_primarys_marker(copy));
            }
        }
    }
    let copied = match copy.head(key)? {
        Some(info) if info.size == size => 0,
        Some(info) => {
            return Err(coded(
                Code::Integrity,
                format!(
                    "{} holds {key} with {} bytes where the primary holds {size}: it is damaged or not bkp's, and nothing is replaced; delete it from the copy",
                    copy.identity(),
                    info.size
                ),
            ))
        }
        None => c.object(&Needed {
            key: key.to_string(),
            size: Some(size),
            sha256: None,
            metadata: Vec::new(),
        })?,
    };
    // A head only once the copy holds the segment it records: a backup
    // history file's head records the segment its base backup started in,
    // which an earlier push may have failed to bring.
    if let Some((head, (system, segment))) = head.and_then(|h| Some((h, wal_head_of(h)?))) {
        let objects = format!("{}{segment}.", manifest::wal::prefix(system));
        let listed = || -> Result<Vec<String>> {
            Ok(copy.list(&objects)?.into_iter().map(|o| o.key).collect())
        };
        if copy.head(head)?.is_none() && holds_segment_of(head, listed()?.iter()) {
            match primary.get_at_most(head, crate::limits::HEAD) {
                Ok(bytes) => put_new(copy, head, &bytes)?,
                Err(e) if classify(&e) == Some(Code::NotFound) => {}
                Err(e) => return Err(e),
            }
        }
    }
    Ok(copied)
}

/// The most objects [`copy_backup`] asks the copy for one by one.
const HEADS_AT_MOST: usize = 256;

/// What a copy lacks of the primary's backups, by manifest key alone (nothing
/// else is read): for `bkp status`.
#[derive(Debug, Default)]
pub struct Lag {
    /// Backups on the primary that the copy lacks.
    pub lacks: u64,
    /// When the oldest of them finished on the primary.
    pub oldest: Option<time::OffsetDateTime>,
    /// Backups of the primary the copy holds.
    pub holds: u64,
    /// What those backups weigh, in the copy's storage class.
    pub held: manifest::usage::Usage,
}

/// Compares `all`, the manifests of the primary (admitted by `trust`),
/// with the manifest keys `copy` lists; what the copy's `retention` would
/// delete is not lacked. `classes`: the copy's class for data, and for the
/// rest (see `manifest::usage::of`).
pub fn lag(
    all: &[Manifest],
    copy: &dyn Store,
    trust: &Trust,
    retention: &RetentionPlan,
    classes: (&str, &str),
) -> Result<Lag> {
    let prefix = format!("{}/", manifest::MANIFEST_DIR);
    let held: HashSet<String> = copy.list(&prefix)?.into_iter().map(|o| o.key).collect();
    let left_out = Keeps::of(all, copy, trust, retention)?.left_out;
    let mut lag = Lag::default();
    let mut holds = Vec::new();
    for m in all {
        if held.contains(&m.key()) {
            lag.holds += 1;
            holds.push(m.clone());
        } else if left_out.contains(&m.id) {
            continue;
        } else {
            lag.lacks += 1;
            lag.oldest = Some(lag.oldest.map_or(m.finished_at, |t| t.min(m.finished_at)));
        }
    }
    lag.held = manifest::usage::of(&holds, classes.0, classes.1);
    Ok(lag)
}

/// What a copy's own retention keeps of the primary's backups, decided as
/// `cleanup --store` decides it there, so that its cleanup never deletes
/// what the next `bkp copy` brings back: on the backups of both stores (the
/// copy's own, which the primary may have deleted, count for its buckets
/// and its log window), with what Object Lock retains in the copy kept.
struct Keeps {
    /// The ids the copy would delete now: not copied.
    left_out: HashSet<crate::id::BackupId>,
    /// Per PostgreSQL system, the first WAL segment of the oldest base
    /// backup the copy keeps: older WAL is not copied (its cleanup trims
    /// it). A system without a kept base backup keeps all of its WAL.
    wal_from: HashMap<u64, u64>,
}

impl Keeps {
    fn of(
        all: &[Manifest],
        copy: &dyn Store,
        trust: &Trust,
        retention: &RetentionPlan,
    ) -> Result<Keeps> {
        let (mut both, _) = manifest::list(copy, trust, None)?;
        let keys: HashMap<crate::id::BackupId, String> =
            both.iter().map(|m| (m.id, m.key())).collect();
        let theirs: HashSet<(manifest::Kind, crate::id::BackupId)> =
            both.iter().map(|m| (m.kind, m.id)).collect();
        both.extend(
            all.iter()
                .filter(|m| !theirs.contains(&(m.kind, m.id)))
                .cloned(),
        );
        // An id the copy holds under another kind than the primary's is
        // never left out: retention decides by id, and would decide on both.
        let shared: HashSet<crate::id::BackupId> = manifest::shared_ids(&both)
            .into_iter()
            .map(|(id, _)| id)
            .collect();
        let (decisions, _) = crate::retention::plan_holding(
            crate::retention::candidates(&both),
            &retention.policies,
            time::OffsetDateTime::now_utc(),
            |id| match keys.get(id) {
                Some(key) => copy.retained_until(key),
                None => Ok(None),
            },
        )?;
        let left_out: HashSet<crate::id::BackupId> = decisions
            .into_iter()
            .filter(|d| !d.keep && !shared.contains(&d.id))
            .map(|d| d.id)
            .collect();
        let wal_from = wal_from(both.iter().filter(|m| !left_out.contains(&m.id)));
        Ok(Keeps { left_out, wal_from })
    }
}

/// By system, the first WAL position the base backups `kept` need
/// ([`manifest::postgres::wal_needed`]; a system not named copies all of
/// its WAL, and so does every system where a base backup names none).
fn wal_from<'a>(kept: impl Iterator<Item = &'a Manifest>) -> HashMap<u64, u64> {
    manifest::postgres::wal_needed(kept)
        .map(|n| n.into_iter().map(|(s, n)| (s, n.from())).collect())
        .unwrap_or_default()
}

struct Copier<'a> {
    primary: &'a dyn Store,
    copy: &'a dyn Store,
    dry: bool,
    /// Whether objects may still be copied server-side in this run.
    server_side: AtomicBool,
    copied_server_side: AtomicU64,
}

impl<'a> Copier<'a> {
    fn new(primary: &'a dyn Store, copy: &'a dyn Store, dry: bool) -> Copier<'a> {
        Copier {
            primary,
            copy,
            dry,
            server_side: AtomicBool::new(
                one_service(primary, copy)
                    && REFUSED.lock().is_ok_and(|r| !r.contains(&copy.identity())),
            ),
            copied_server_side: AtomicU64::new(0),
        }
    }
}

/// The copies (by identity) that refused a copy inside the object store in
/// this process: later objects, and later `wal push` copies, stream.
static REFUSED: std::sync::Mutex<BTreeSet<String>> = std::sync::Mutex::new(BTreeSet::new());

/// Whether `a` and `b` are buckets of one S3 service (the same endpoint
/// and region), between which objects can be copied server-side.
fn one_service(a: &dyn Store, b: &dyn Store) -> bool {
    let (Some(a), Some(b)) = (a.as_s3(), b.as_s3()) else {
        return false;
    };
    let (a, b) = (a.settings(), b.settings());
    a.endpoint == b.endpoint && a.region == b.region
}

impl Copier<'_> {
    /// The primary's store marker, which must be the copy's: copied when
    /// the copy has none, refused when it has another.
    fn marker(&self, trust: &Trust, out: &mut Outcome) -> Result<()> {
        // Another installation's primary is refused as every run refuses it,
        // and a marker that is not the pinned store's is never copied.
        marker::check(self.primary, trust)?;
        trust.binding()?;
        let read = |s: &dyn Store| match s.get_at_most(marker::KEY, crate::limits::MARKER) {
            Ok(b) => Ok(Some(b)),
            Err(e) if classify(&e) == Some(Code::NotFound) => Ok(None),
            Err(e) => Err(e),
        };
        let Some(ours) = read(self.primary)? else {
            return Ok(());
        };
        match read(self.copy)? {
            Some(theirs) if theirs == ours => {}
            Some(_) => return Err(not_the_primarys_marker(self.copy)),
            None if self.dry => out.documents_copied += 1,
            None => {
                put_new(self.copy, marker::KEY, &ours)?;
                out.documents_copied += 1;
            }
        }
        self.escrow_vouches(trust, &ours, out)
    }

    /// The statements that let escrows read the marker (see
    /// `marker::vouch_for_escrows`), which the copy lacks: sealed, copied as
    /// they are. One the copy holds is replaced by the primary's only where
    /// the primary's verifies here for one of this config's escrows (a
    /// statement replaced on the primary, stale on the copy).
    fn escrow_vouches(&self, trust: &Trust, marker: &[u8], out: &mut Outcome) -> Result<()> {
        let prefix = format!("{}/", marker::ESCROW_DIR);
        let theirs: HashSet<String> = self
            .copy
            .list(&prefix)?
            .into_iter()
            .map(|o| o.key)
            .collect();
        let escrows = trust.keys().map_or(&[][..], |k| k.escrow());
        let digest = crate::stages::hash::hex(&Sha256::digest(marker));
        for o in self.primary.list(&prefix)? {
            let ours = escrows.iter().find(|e| marker::vouch_key(e.id()) == o.key);
            let held = theirs.contains(&o.key);
            if o.size > crate::limits::MARKER || (held && ours.is_none()) {
                continue;
            }
            let bytes = self.primary.get_at_most(&o.key, crate::limits::MARKER)?;
            if let (true, Some(e)) = (held, ours) {
                let theirs = self.copy.get_at_most(&o.key, crate::limits::MARKER)?;
                let holds = |b: &[u8]| marker::statement_holds(b, &o.key, trust, e, &digest);
                if holds(&theirs) || !holds(&bytes) {
                    continue;
                }
                if self.dry {
                    out.documents_copied += 1;
                    continue;
                }
                // Retained (Object Lock) or no right to delete: said, and
                // the copy is brought up to date all the same.
                if let Err(err) = self.copy.delete(&o.key) {
                    crate::ui::log(
                        crate::ui::Priority::Warning,
                        &format!("bkp: warning: {} holds a statement for escrow {} that does not verify, and it could not be replaced: {err:#}", self.copy.identity(), e.id()),
                    );
                    continue;
                }
            }
            if !self.dry {
                put_new(self.copy, &o.key, &bytes)?;
            }
            out.documents_copied += 1;
        }
        Ok(())
    }

    /// The keys (and sizes) the copy holds where backups live.
    fn present(&self) -> Result<HashMap<String, u64>> {
        let mut prefixes = vec![format!("{}/", manifest::MANIFEST_DIR)];
        prefixes.extend(
            manifest::Kind::ALL
                .iter()
                .map(|k| format!("{}/", k.as_str())),
        );
        let mut present = HashMap::new();
        for p in prefixes {
            for o in self.copy.list(&p)? {
                present.insert(o.key, o.size);
            }
        }
        Ok(present)
    }

    /// Copies what backup `m` needs that the copy lacks, then (unless it is
    /// `held` already) its manifest, read again from its own key.
    fn backup(
        &self,
        m: &Manifest,
        held: bool,
        trust: &Trust,
        known: &HashMap<&str, &ObjectEntry>,
        present: &mut HashMap<String, u64>,
        out: &mut Outcome,
    ) -> Result<()> {
        let key = m.key();
        // What is copied is what these bytes say, not the catalog.
        let fresh = match held {
            true => None,
            false => {
                let bytes = self.primary.get_at_most(&key, crate::limits::MANIFEST)?;
                Some((manifest::parse(&bytes, &key, trust)?, bytes))
            }
        };
        let m = fresh.as_ref().map_or(m, |(m, _)| m);
        let mut copied = 0;
        for n in needed(self.primary, m, known)? {
            match present.get(&n.key) {
                Some(&size) if n.size.is_none_or(|s| s == size) => continue,
                Some(&size) => {
                    return Err(coded(
                        Code::Integrity,
                        format!(
                            "{} holds {} with {size} bytes where backup {} records {}: it is damaged or not bkp's, and bkp copy replaces nothing; delete it from the copy and run bkp copy again",
                            self.copy.identity(),
                            n.key,
                            m.id,
                            n.size.unwrap_or_default()
                        ),
                    ))
                }
                None => {}
            }
            let bytes = self.object(&n)?;
            present.insert(n.key.clone(), bytes);
            out.objects_copied += 1;
            out.bytes_copied += bytes;
            copied += 1;
        }
        if held {
            out.objects_repaired += copied;
            return Ok(());
        }
        if let Some((_, bytes)) = &fresh {
            if !self.dry {
                put_new(self.copy, &key, bytes)?;
            }
            present.insert(key, bytes.len() as u64);
        }
        Ok(())
    }

    /// Streams one object from the primary to the copy, checking its size
    /// and SHA-256 on the way; the bytes copied. The write is finished only
    /// when both match.
    fn object(&self, n: &Needed) -> Result<u64> {
        if self.dry {
            return Ok(n.size.unwrap_or_default());
        }
        if let Some(bytes) = self.server_side_copy(n)? {
            return Ok(bytes);
        }
        let big = n.size.is_some_and(|s| s >= PARALLEL_FROM);
        let mut from = match big {
            true => self.primary.open_parallel(&n.key)?,
            false => self.primary.open(&n.key)?,
        };
        let mut to = self.copy.create(&n.key, &n.metadata)?;
        let mut hash = Sha256::new();
        let mut buf = vec![0u8; BUFFER];
        let mut total = 0u64;
        let mismatch = |why: String| self.damaged(n, why);
        let copied: Result<()> = (|| loop {
            let got = from.read(&mut buf)?;
            if got == 0 {
                return Ok(());
            }
            total += got as u64;
            if n.size.is_some_and(|s| total > s) {
                return Err(mismatch(format!(
                    "is larger than the {} bytes its manifest records",
                    n.size.unwrap_or_default()
                )));
            }
            hash.update(&buf[..got]);
            to.write_all(&buf[..got])?;
        })();
        let digest = crate::stages::hash::hex(&hash.finalize());
        let checked = copied.and_then(|()| match (n.size, &n.sha256) {
            (Some(s), _) if s != total => Err(mismatch(format!(
                "has {total} bytes where its manifest records {s}"
            ))),
            (_, Some(d)) if *d != digest => Err(mismatch(
                "does not have the SHA-256 its manifest records".into(),
            )),
            _ => Ok(()),
        });
        if let Err(e) = checked {
            let _ = to.abort();
            return Err(e);
        }
        match to.finish() {
            Ok(_) => Ok(total),
            // Another run copied it meanwhile.
            Err(e) if is_already_exists(&e) => Ok(total),
            Err(e) => Err(e),
        }
    }

    /// Copies `n` inside the object store where the primary and the copy
    /// are buckets of one S3 service: first the primary's object is read,
    /// pinned to the ETag just seen, and checked against the manifest (its
    /// size, and its SHA-256 where the manifest records one), then copied by
    /// CopyObject pinned to that same ETag. Nothing unchecked ever reaches
    /// the copy, and this host uploads nothing. `None` where that is not
    /// possible (another service, no ETag, the object changed meanwhile, or
    /// the copy's credentials may not read the primary's bucket: then the
    /// object is streamed, and after a refusal every later one too).
    fn server_side_copy(&self, n: &Needed) -> Result<Option<u64>> {
        if !self.server_side.load(Ordering::Relaxed) {
            return Ok(None);
        }
        let (Some(src), Some(dst)) = (self.primary.as_s3(), self.copy.as_s3()) else {
            return Ok(None);
        };
        let Some(info) = self.primary.head(&n.key)? else {
            return Ok(None);
        };
        let Some(etag) = info.etag.as_deref() else {
            return Ok(None);
        };
        let recorded = n.size.unwrap_or(info.size);
        if recorded != info.size {
            let why = format!(
                "has {} bytes where its manifest records {recorded}",
                info.size
            );
            return Err(self.damaged(n, why));
        }
        if let Some(want) = &n.sha256 {
            let Some(mut from) = src.open_if_match(&n.key, Some(etag), None)? else {
                return Ok(None);
            };
            let mut hash = Sha256::new();
            let mut buf = vec![0u8; BUFFER];
            let mut total = 0u64;
            loop {
                let got = from.read(&mut buf)?;
                if got == 0 {
                    break;
                }
                total += got as u64;
                hash.update(&buf[..got]);
            }
            if total != info.size || crate::stages::hash::hex(&hash.finalize()) != *want {
                let why = "does not have the SHA-256 its manifest records".to_string();
                return Err(self.damaged(n, why));
            }
        }
        let source = src.full_key_of(&n.key)?;
        let bucket = &src.settings().bucket;
        match dst.copy_from(bucket, &source, etag, info.size, &n.key, &n.metadata) {
            Ok(Some(_)) => {}
            // Changed since it was checked: streamed, and checked again.
            Ok(None) => return Ok(None),
            // Another run copied it meanwhile.
            Err(e) if is_already_exists(&e) => return Ok(Some(info.size)),
            Err(e) if classify(&e) == Some(Code::Config) => {
                let text = format!("{e:#}");
                if text.contains("AccessDenied") || text.contains("403") {
                    crate::ui::log(
                        crate::ui::Priority::Warning,
                        &format!(
                            "bkp: warning: {} may not copy from {} inside the object store ({text}): objects are streamed through this host instead",
                            self.copy.identity(),
                            self.primary.identity()
                        ),
                    );
                    self.server_side.store(false, Ordering::Relaxed);
                    if let Ok(mut refused) = REFUSED.lock() {
                        refused.insert(self.copy.identity());
                    }
                }
                return Ok(None);
            }
            Err(e) => return Err(e),
        }
        self.copied_server_side.fetch_add(1, Ordering::Relaxed);
        Ok(Some(info.size))
    }

    /// The error for object `n` of the primary found not to be what its
    /// manifest records.
    fn damaged(&self, n: &Needed, why: String) -> anyhow::Error {
        coded(
            Code::Integrity,
            format!(
                "{} in {} {why}: it is damaged there and is not copied; `bkp verify` on the primary names the backups that need it",
                n.key,
                self.primary.identity()
            ),
        )
    }

    /// The WAL archive's files the copy lacks, their size checked (their
    /// names carry a seal over their content, which readers check).
    fn wal(
        &self,
        from: &HashMap<u64, u64>,
        present: &mut HashMap<String, u64>,
        out: &mut Outcome,
    ) -> Result<()> {
        let prefix = manifest::wal::PREFIX;
        let theirs: HashSet<String> = self.copy.list(prefix)?.into_iter().map(|o| o.key).collect();
        // What the copy holds already counts for the heads that follow.
        present.extend(theirs.iter().map(|k| (k.clone(), 0)));
        for o in self.primary.list(prefix)? {
            if theirs.contains(&o.key) || before_kept_base(&o.key, from) {
                continue;
            }
            let n = Needed {
                key: o.key.clone(),
                size: Some(o.size),
                sha256: None,
                metadata: Vec::new(),
            };
            match self.object(&n) {
                Ok(bytes) => {
                    out.objects_copied += 1;
                    out.bytes_copied += bytes;
                    present.insert(o.key, bytes);
                }
                Err(e) if is_damage(&e) || classify(&e) == Some(Code::NotFound) => {
                    out.refuse(&o.key, e)
                }
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Small documents under `prefix` that the copy lacks, as they are.
    /// With `holding`, a head is copied only when the copy holds what it
    /// records: the backup's manifest (`heads/{kind}/{id}.json`), or, for
    /// the WAL archive, when no WAL file failed to copy.
    fn documents(
        &self,
        prefix: &str,
        holding: Option<&HashMap<String, u64>>,
        out: &mut Outcome,
    ) -> Result<()> {
        let theirs: HashSet<String> = self.copy.list(prefix)?.into_iter().map(|o| o.key).collect();
        let wal_whole = !out
            .not_copied
            .iter()
            .any(|n| n.key.starts_with(manifest::wal::PREFIX));
        for o in self.primary.list(prefix)? {
            if theirs.contains(&o.key) {
                continue;
            }
            if let Some(held) = holding {
                if !head_is_held(&o.key, held, wal_whole) {
                    continue;
                }
            }
            if o.size > crate::limits::DOCUMENT {
                out.refuse(
                    &o.key,
                    crate::limits::too_large(&o.key, crate::limits::DOCUMENT),
                );
                continue;
            }
            if !self.dry {
                let bytes = match self.primary.get(&o.key) {
                    Ok(b) => b,
                    Err(e) if classify(&e) == Some(Code::NotFound) => continue,
                    Err(e) => return Err(e),
                };
                put_new(self.copy, &o.key, &bytes)?;
            }
            out.documents_copied += 1;
        }
        Ok(())
    }
}

/// Whether WAL object `key` lies before the first segment of the oldest
/// base backup its system keeps (`from`, see [`Keeps`]): no recovery from
/// that store starts there. Timeline history files are always kept.
fn before_kept_base(key: &str, from: &HashMap<u64, u64>) -> bool {
    let system = key
        .strip_prefix(manifest::wal::PREFIX)
        .and_then(|r| r.split_once('/'))
        .and_then(|(s, _)| s.parse::<u64>().ok());
    let Some((system, first)) = system.and_then(|s| Some((s, *from.get(&s)?))) else {
        return false;
    };
    manifest::wal::parse_key(system, key)
        .is_some_and(|w| w.wal.kind != manifest::wal::FileKind::History && w.wal.position < first)
}

/// For a WAL head's key (`heads/wal/{system}/{segment}.json`), the system
/// and the segment it records.
fn wal_head_of(key: &str) -> Option<(u64, &str)> {
    let (system, segment) = key
        .strip_prefix(manifest::head::DIR)?
        .strip_prefix("/wal/")?
        .strip_suffix(".json")?
        .split_once('/')?;
    Some((system.parse().ok()?, segment))
}

/// Whether `keys` hold an object of the segment WAL head `head` records
/// (that segment itself: a backup history file `{segment}.{offset}.backup`
/// shares its name's start).
fn holds_segment_of<'a>(head: &str, mut keys: impl Iterator<Item = &'a String>) -> bool {
    let Some((system, segment)) = wal_head_of(head) else {
        return false;
    };
    keys.any(|k| manifest::wal::parse_key(system, k).is_some_and(|w| w.name == segment))
}

/// Whether the copy holds what head `key` records (see [`Copier::documents`]).
fn head_is_held(key: &str, held: &HashMap<String, u64>, wal_whole: bool) -> bool {
    let Some(rest) = key
        .strip_prefix(manifest::head::DIR)
        .and_then(|r| r.strip_prefix('/'))
    else {
        return false;
    };
    match rest.split_once('/') {
        // A WAL head only once the copy holds the segment it records: a
        // segment pushed while the archive was being copied would otherwise
        // reach the copy as a head alone, and read there as WAL deleted.
        Some(("wal", _)) => wal_whole && holds_segment_of(key, held.keys()),
        Some((kind, name)) => {
            held.contains_key(&format!("{}/{kind}/{name}", manifest::MANIFEST_DIR))
        }
        None => false,
    }
}

/// What backup `m` needs besides its manifest: its objects, the objects of
/// earlier backups it uses (with their digests where a listed manifest
/// records them: `known`), its chunk list and every chunk it names (the
/// list read from `primary` and checked against the manifest).
fn needed(
    primary: &dyn Store,
    m: &Manifest,
    known: &HashMap<&str, &ObjectEntry>,
) -> Result<Vec<Needed>> {
    let meta = vec![
        ("backup-id".to_string(), m.id.to_string()),
        ("backup-type".to_string(), m.kind.as_str().to_string()),
        ("backup-scope".to_string(), m.scope.as_str().to_string()),
    ];
    let entry = |o: &ObjectEntry| Needed {
        key: o.key.clone(),
        size: Some(o.size),
        sha256: Some(o.sha256.clone()),
        metadata: [
            meta.clone(),
            vec![("checksum-sha256".to_string(), o.sha256.clone())],
        ]
        .concat(),
    };
    let mut out: Vec<Needed> = m.objects.iter().map(entry).collect();
    for key in &m.uses {
        out.push(match known.get(key.as_str()) {
            Some(o) => entry(o),
            None => Needed {
                key: key.clone(),
                size: None,
                sha256: None,
                metadata: meta.clone(),
            },
        });
    }
    if let Some(c) = &m.chunks {
        out.push(Needed {
            key: c.list.key.clone(),
            size: Some(c.list.size),
            sha256: Some(c.list.sha256.clone()),
            metadata: meta.clone(),
        });
        if let Some(map) = crate::chunks::load(primary, m)? {
            out.extend(map.keys(m.kind).map(|(key, size)| Needed {
                key,
                size: Some(size),
                sha256: None,
                metadata: Vec::new(),
            }));
        }
    }
    Ok(out)
}

/// `copy` holds another store's marker.
fn not_the_primarys_marker(copy: &dyn Store) -> anyhow::Error {
    coded(
        Code::Config,
        format!(
            "{} holds a store marker ({}) that is not the primary's: it is another store, or another installation's; a copy must start empty (or hold what bkp copy put there)",
            copy.identity(),
            marker::KEY
        ),
    )
}

/// A create-only write that another run may have made first.
fn put_new(store: &dyn Store, key: &str, bytes: &[u8]) -> Result<()> {
    match store.put_new(key, bytes, &Vec::new()) {
        Ok(_) => Ok(()),
        Err(e) if is_already_exists(&e) => Ok(()),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::tests::sample;
    use crate::manifest::Kind;
    use crate::store::memory::MemoryStore;

    /// A backup of `bytes` stored in `store` as bkp stores one (object first,
    /// manifest last).
    fn stored(store: &MemoryStore, at: i64, bytes: &[u8]) -> Manifest {
        let t = time::OffsetDateTime::from_unix_timestamp(at).unwrap();
        let mut m = sample(Kind::Tigerbeetle, t);
        // Kept by its own retention whatever the date.
        m.retention_days = 0;
        m.objects[0].size = bytes.len() as u64;
        m.objects[0].sha256 = crate::stages::hash::hex(&Sha256::digest(bytes));
        store.put_new(&m.objects[0].key, bytes, &vec![]).unwrap();
        manifest::write(store, &m, None).unwrap();
        m
    }

    /// A policy that keeps the `last` newest backups of each group, or
    /// everything.
    fn keeping(last: Option<u32>) -> RetentionPlan {
        use crate::retention::{Policies, Policy};
        let policy = match last {
            Some(n) => Policy {
                keep_last: Some(n),
                ..Policy::default()
            },
            None => Policy {
                keep_within: Some(time::Duration::days(36_500)),
                ..Policy::default()
            },
        };
        RetentionPlan {
            policies: Policies::new(policy),
            grace: time::Duration::hours(24),
        }
    }

    fn run(p: &MemoryStore, c: &MemoryStore, dry: bool) -> Outcome {
        bring_up_to_date(p, c, &Trust::none(), &keeping(None), dry, &|_| {}).unwrap()
    }

    #[test]
    fn a_copy_does_not_get_what_its_own_retention_would_delete() {
        let (p, c) = (MemoryStore::named("p3"), MemoryStore::named("c3"));
        let old = stored(&p, 1_760_140_800, b"old");
        let new = stored(&p, 1_760_162_400, b"new");
        let one = keeping(Some(1));
        let out = bring_up_to_date(&p, &c, &Trust::none(), &one, false, &|_| {}).unwrap();
        assert_eq!(out.backups_copied, vec![new.key()]);
        assert_eq!(out.backups_left_out, 1);
        assert!(c.head(&old.key()).unwrap().is_none());
        assert!(c.head(&old.objects[0].key).unwrap().is_none());
        // Not lacked either: status raises no alarm for it.
        let (all, _) = manifest::list(&p, &Trust::none(), None).unwrap();
        let lag = lag(&all, &c, &Trust::none(), &one, ("STANDARD", "STANDARD")).unwrap();
        assert_eq!((lag.holds, lag.lacks), (1, 0));
        assert_eq!(lag.held.backups, 1);
        let classes = ("STANDARD", "STANDARD");
        let lag = super::lag(&all, &c, &Trust::none(), &keeping(None), classes).unwrap();
        assert_eq!((lag.holds, lag.lacks), (1, 1));
    }

    #[test]
    fn a_copy_gets_what_it_lacks_once_and_objects_before_manifests() {
        let (p, c) = (MemoryStore::named("p"), MemoryStore::named("c"));
        let a = stored(&p, 1_760_140_800, b"first");
        let b = stored(&p, 1_760_162_400, &vec![7u8; 3 * BUFFER + 5]);
        let dry = run(&p, &c, true);
        assert_eq!(dry.backups_copied, vec![a.key(), b.key()]);
        assert!(c.list("").unwrap().is_empty(), "a dry run writes nothing");
        let first = run(&p, &c, false);
        assert_eq!(first.backups_copied.len(), 2);
        assert_eq!(first.objects_copied, 2);
        assert_eq!(first.bytes_copied, 5 + 3 * BUFFER as u64 + 5);
        assert_eq!(
            c.get(&b.objects[0].key).unwrap(),
            p.get(&b.objects[0].key).unwrap()
        );
        assert_eq!(c.get(&a.key()).unwrap(), p.get(&a.key()).unwrap());
        let again = run(&p, &c, false);
        assert_eq!((again.objects_copied, again.backups_present), (0, 2));
        assert!(again.backups_copied.is_empty());
        // An object lost from the copy is copied again.
        c.delete(&a.objects[0].key).unwrap();
        let repair = run(&p, &c, false);
        assert_eq!((repair.objects_copied, repair.objects_repaired), (1, 1));
        assert!(c.head(&a.objects[0].key).unwrap().is_some());
    }

    #[test]
    fn a_damaged_object_on_the_primary_copies_neither_it_nor_its_manifest() {
        let (p, c) = (MemoryStore::named("p2"), MemoryStore::named("c2"));
        let m = stored(&p, 1_760_140_800, b"genuine");
        p.delete(&m.objects[0].key).unwrap();
        p.put_new(&m.objects[0].key, b"altered", &vec![]).unwrap();
        let out = run(&p, &c, false);
        assert!(out.backups_copied.is_empty());
        assert_eq!(out.not_copied.len(), 1, "{:?}", out.not_copied);
        assert!(
            out.not_copied[0].why.contains("SHA-256"),
            "{:?}",
            out.not_copied
        );
        assert_eq!(
            crate::exit::most_specific(out.problems.iter().map(classify)),
            Some(Code::Integrity)
        );
        assert!(c.list("").unwrap().is_empty(), "{:?}", c.list("").unwrap());
    }

    #[test]
    fn a_copy_decides_on_the_backups_of_both_stores() {
        // Day D: the primary still holds its 06:00 backup (the copy got it
        // earlier... no: the copy holds D's 18:00 one, which the primary
        // deleted). For the copy's daily rule D's newest is 18:00, so the
        // primary's 06:00 is not brought: its cleanup would delete it.
        let (p, c) = (MemoryStore::named("p4"), MemoryStore::named("c4"));
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        let day = (now - 2 * 86_400) / 86_400 * 86_400;
        let six = stored(&p, day + 6 * 3600, b"06");
        stored(&c, day + 18 * 3600, b"18");
        let today = stored(&p, now - 60, b"now");
        let daily = RetentionPlan {
            policies: crate::retention::Policies::new(crate::retention::Policy {
                daily: Some(7),
                ..Default::default()
            }),
            grace: time::Duration::hours(24),
        };
        let out = bring_up_to_date(&p, &c, &Trust::none(), &daily, false, &|_| {}).unwrap();
        assert_eq!(out.backups_copied, vec![today.key()]);
        assert_eq!(out.backups_left_out, 1);
        assert!(c.head(&six.key()).unwrap().is_none());
        // Decided on the primary's alone, 06:00 would be D's newest: kept.
        let alone = MemoryStore::named("c5");
        let out = bring_up_to_date(&p, &alone, &Trust::none(), &daily, false, &|_| {}).unwrap();
        assert_eq!(out.backups_copied.len(), 2);
    }

    #[test]
    fn wal_before_the_oldest_kept_base_is_not_copied() {
        let from: HashMap<u64, u64> = [(7, 0x40)].into();
        let tag = "a".repeat(64);
        let key = |name: &str| format!("wal/7/{name}.{tag}.zst.enc");
        assert!(before_kept_base(&key("000000010000000000000030"), &from));
        assert!(!before_kept_base(&key("000000010000000000000040"), &from));
        assert!(!before_kept_base(&key("00000002.history"), &from));
        let other = format!("wal/8/000000010000000000000030.{tag}.zst.enc");
        assert!(!before_kept_base(&other, &from), "no kept base: all of it");

        // A kept base backup whose start cannot be read keeps all of its
        // system's WAL; one that names no system, all WAL.
        let at = time::OffsetDateTime::now_utc();
        let base = |facts: serde_json::Value| {
            let mut m = crate::manifest::tests::sample(manifest::Kind::Postgres, at);
            m.source = serde_json::from_value(facts).unwrap();
            m
        };
        let known = base(
            serde_json::json!({"system_identifier": "7", "wal_start": "000000010000000000000040"}),
        );
        let blocks = base(
            serde_json::json!({"system_identifier": "7", "wal_start": "000000010000000000020000", "wal_segment_size": 2048}),
        );
        let other = base(
            serde_json::json!({"system_identifier": "8", "wal_start": "000000010000000000000010"}),
        );
        assert_eq!(
            wal_from([&known, &other].into_iter()),
            [(7, 0x40), (8, 0x10)].into()
        );
        assert_eq!(
            wal_from([&known, &blocks, &other].into_iter()),
            [(7, 0), (8, 0x10)].into()
        );
        let nameless = base(serde_json::json!({}));
        assert_eq!(wal_from([&known, &nameless].into_iter()), HashMap::new());
    }

    #[test]
    fn a_wal_head_reaches_a_copy_only_with_its_segment() {
        let (p, c) = (MemoryStore::named("p6"), MemoryStore::named("c6"));
        let tag = "b".repeat(64);
        let start = "000000010000000000000040";
        let history = format!("wal/7/{start}.00000028.backup.{tag}.zst.enc");
        let head = format!("heads/wal/7/{start}.json");
        p.put_new(&history, b"history", &vec![]).unwrap();
        p.put_new(&head, b"{}", &vec![]).unwrap();
        // The copy lacks the segment the base backup started in.
        copy_wal(&p, &c, &Trust::none(), &history, 7, Some(&head)).unwrap();
        assert!(c.head(&history).unwrap().is_some());
        assert!(c.head(&head).unwrap().is_none());
        // Once it holds it, the head follows.
        let segment = format!("wal/7/{start}.{tag}.zst.enc");
        p.put_new(&segment, b"segment", &vec![]).unwrap();
        copy_wal(&p, &c, &Trust::none(), &segment, 7, Some(&head)).unwrap();
        assert!(c.head(&head).unwrap().is_some());
    }

    #[test]
    fn heads_follow_their_backups() {
        let mut held: HashMap<String, u64> =
            [("manifests/tigerbeetle/x.json".to_string(), 1)].into();
        assert!(head_is_held("heads/tigerbeetle/x.json", &held, false));
        assert!(!head_is_held("heads/tigerbeetle/y.json", &held, true));
        // A WAL head goes only with the segment it records.
        assert!(!head_is_held(
            "heads/wal/7/000000010000000000000040.json",
            &held,
            true
        ));
        // A backup history file named after the segment is not the segment.
        held.insert(
            format!(
                "wal/7/000000010000000000000040.00000028.backup.{}.zst.enc",
                "a".repeat(64)
            ),
            9,
        );
        assert!(!head_is_held(
            "heads/wal/7/000000010000000000000040.json",
            &held,
            true
        ));
        held.insert(
            format!("wal/7/000000010000000000000040.{}.zst.enc", "a".repeat(64)),
            9,
        );
        assert!(head_is_held(
            "heads/wal/7/000000010000000000000040.json",
            &held,
            true
        ));
        assert!(!head_is_held(
            "heads/wal/7/000000010000000000000040.json",
            &held,
            false
        ));
        assert!(!head_is_held("heads", &held, true));
    }
}
