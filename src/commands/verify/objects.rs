//! `verify`'s object checks: every object of a backup exists with its recorded
//! size and reads back whole (SHA-256, every encrypted chunk, the compression
//! framing, the content digest), shared objects exist, and the chain is whole.

use std::collections::BTreeSet;

use anyhow::Result;
use serde::Serialize;
use time::OffsetDateTime;

use crate::chain;
use crate::commands::Ctx;
use crate::crypto::Keyring;
use crate::exit::{coded, Code};
use crate::id::BackupId;
use crate::manifest::brief::Brief;
use crate::manifest::{self, Kind, Manifest, Scope};
use crate::pipeline;
use crate::stages::compress::Compression;
use crate::store::Store;

use super::{Recorded, Retained, Size};

/// What was found for one backup.
#[derive(Debug, Serialize)]
pub struct BackupCheck {
    pub id: BackupId,
    pub kind: Kind,
    pub scope: Scope,
    pub operation: String,
    #[serde(with = "time::serde::rfc3339")]
    pub started_at: OffsetDateTime,
    pub objects: usize,
    pub bytes_read: u64,
    pub problems: Vec<String>,
    /// Each object looked at, in order (for `--junit`; the report keeps the
    /// problems only).
    #[serde(skip)]
    pub results: Vec<ObjectResult>,
}

/// What was found for one object of a backup.
#[derive(Debug)]
pub struct ObjectResult {
    pub key: String,
    /// `shared`: an object of an earlier backup this one uses (its presence and
    /// size checked; the backup that wrote it reads it).
    pub shared: bool,
    /// `None`: whole.
    pub problem: Option<String>,
}

/// Every object a backup's data lives in, with how it was written. A
/// replication describes each file's object itself (objects of earlier runs
/// too, each with its own compression and key), so all of them are checked.
/// How `check_backup` records object `o` as read and verified: its key with
/// everything it was verified against (chunks, whose ids are checked against
/// their contents, are recorded by key).
fn as_checked(o: &manifest::ObjectEntry, compression: Compression, encrypted: bool) -> String {
    let manifest::ObjectEntry {
        key,
        size,
        sha256,
        content_bytes,
        content_sha256,
    } = o;
    format!(
        "{key}\n{size}\n{sha256}\n{content_bytes}\n{content_sha256}\n{compression:?}\n{encrypted}"
    )
}

fn objects_of(m: &Manifest) -> Result<Vec<(manifest::ObjectEntry, Compression, bool)>> {
    if m.kind == Kind::Parquet && m.operation == "replicate" {
        let set = crate::replicate::record::ReplicaSet::from_manifest(m)?;
        let mut seen = BTreeSet::new();
        let records = set
            .set
            .iter()
            .chain(set.skipped.iter().filter_map(|s| s.last_good.as_ref()));
        return Ok(records
            .filter(|r| seen.insert(r.object.clone()))
            .map(|r| (r.object_entry(), r.compression, r.key_id.is_some()))
            .collect());
    }
    Ok(m.objects
        .iter()
        .map(|o| (o.clone(), m.compression, m.encryption.is_some()))
        .collect())
}

/// What the store holds, for checking one backup against the rest.
pub struct StoreIndex<'a> {
    pub chains: &'a chain::Index<'a, Brief>,
    pub recorded: &'a Recorded,
}

/// Damage becomes a problem; trouble (the store is unreachable, no key) stops
/// the run with its own code (`exit::is_damage`).
fn problem_or_stop(e: anyhow::Error) -> Result<String> {
    if crate::exit::is_damage(&e) {
        Ok(format!("{e:#}"))
    } else {
        Err(e)
    }
}

/// Checks `m`. Its chunk list is read here and dropped when done: what the
/// ledger audit needs of it is taken into `retained` (`None`: the run has no
/// audit), so that the audit does not read it again.
pub fn check_backup(
    ctx: &Ctx,
    store: &dyn Store,
    keyring: Option<&Keyring>,
    m: &Manifest,
    store_index: &StoreIndex,
    checked: &mut BTreeSet<String>,
    retained: Option<&mut Retained>,
) -> Result<BackupCheck> {
    let StoreIndex { chains, recorded } = store_index;
    let mut c = BackupCheck {
        id: m.id,
        kind: m.kind,
        scope: m.scope,
        operation: m.operation.to_string(),
        started_at: m.started_at,
        objects: m.objects.len() + m.uses.len(),
        bytes_read: 0,
        problems: Vec::new(),
        results: Vec::new(),
    };
    // A sealed manifest whose record of its objects cannot be read (a
    // replicated set without its fields) is this backup's damage, not the end
    // of the run.
    let objects = objects_of(m).map_err(|e| c.problems.push(format!("{e:#}")));
    let Ok(objects) = objects else { return Ok(c) };
    let described: BTreeSet<String> = objects.iter().map(|(o, _, _)| o.key.clone()).collect();
    for (o, compression, encrypted) in objects {
        // Read already in this run (a shared object), against the same record:
        // another manifest naming the key with other bytes (a planted one
        // checked first) must not vouch for this one's.
        let record = as_checked(&o, compression, encrypted);
        if checked.contains(&record) {
            continue;
        }
        let problem = match store.head(&o.key)? {
            None => Some(format!("object {} is missing", o.key)),
            Some(info) if info.size != o.size => Some(format!(
                "object {} has {} bytes, the manifest recorded {} (truncated or replaced)",
                o.key, info.size, o.size
            )),
            Some(_) => {
                let keys = if encrypted {
                    keyring.ok_or_else(|| {
                        coded(
                            Code::Config,
                            format!("backup {} has encrypted objects but no key is configured: add it to [encryption]", m.id),
                        )
                    })
                    .map(Some)
                } else {
                    Ok(None)
                };
                match keys.and_then(|k| pipeline::check(store, &o, compression, k, ctx.progress()))
                {
                    Ok(n) => {
                        c.bytes_read += n;
                        checked.insert(record);
                        None
                    }
                    Err(e) => Some(problem_or_stop(e)?),
                }
            }
        };
        c.problems.extend(problem.clone());
        c.results.push(ObjectResult {
            key: o.key.clone(),
            shared: false,
            problem,
        });
    }
    for key in m.uses.iter().filter(|k| !described.contains(*k)) {
        let problem = shared_problem(store, recorded, key)?;
        c.problems.extend(problem.clone());
        c.results.push(ObjectResult {
            key: key.clone(),
            shared: true,
            problem,
        });
    }
    match crate::chunks::load(store, m) {
        Ok(Some(map)) => {
            check_chunks(store, keyring, m, &map, checked, &mut c)?;
            if let Some(r) = retained {
                r.add(m, Some(&map));
            }
        }
        Ok(None) => {}
        Err(e) => {
            let problem = problem_or_stop(e)?;
            if let Some(r) = retained {
                r.add(m, None);
            }
            c.problems.push(problem.clone());
            c.results.push(ObjectResult {
                key: m
                    .chunks
                    .as_ref()
                    .map(|l| l.list.key.clone())
                    .unwrap_or_default(),
                shared: false,
                problem: Some(problem),
            });
        }
    }
    for b in chains.problems(&Brief::of(m)) {
        c.problems.push(format!("chain broken: {b}"));
    }
    Ok(c)
}

/// What is wrong with shared object `key`: missing, or not of the size the
/// manifests that stored it record.
fn shared_problem(store: &dyn Store, recorded: &Recorded, key: &str) -> Result<Option<String>> {
    Ok(match (store.head(key)?, recorded.size(key)) {
        (None, _) => Some(format!("shared object {key} is missing")),
        (Some(info), Size::Is(want)) if info.size != want => Some(format!(
            "shared object {key} has {} bytes, its manifest recorded {want}",
            info.size
        )),
        (Some(info), Size::Disagree) => Some(format!(
            "shared object {key} ({} bytes) is recorded with different sizes by the manifests that name it: one of them was not written by bkp",
            info.size
        )),
        _ => None,
    })
}

/// Reads and checks every chunk of `map` no earlier backup of this run read
/// (shared chunks are read once per run): one result for the chunks whole,
/// one per damaged chunk.
fn check_chunks(
    store: &dyn Store,
    keyring: Option<&Keyring>,
    m: &Manifest,
    map: &crate::manifest::chunks::ChunkMap,
    checked: &mut BTreeSet<String>,
    c: &mut BackupCheck,
) -> Result<()> {
    // `check_keys` admitted the map: its file is among the manifest's.
    let size = m
        .files
        .iter()
        .find(|f| f.name == map.file)
        .map_or(0, |f| f.size);
    let keys = pipeline::keys_for(m, keyring)?;
    let src = crate::chunks::source(store, m.kind, m.compression, map, keys)?;
    let mut damaged = Vec::new();
    let before = checked.len();
    // The chunk list was read and checked before it named the chunks: one
    // object more, as `show` and a restore count it.
    if let Some(l) = &m.chunks {
        c.objects += 1;
        c.bytes_read += l.list.size;
    }
    if src.naming.is_some() {
        c.bytes_read += crate::chunks::check(&src, map, size, checked, &mut damaged)?;
    } else {
        // Read through an escrow, whose identity cannot recompute chunk ids:
        // the file is rebuilt and its SHA-256 checked, as a restore does.
        let want = m.files.iter().find(|f| f.name == map.file);
        let silent: std::sync::Arc<dyn crate::stages::progress::Progress> =
            std::sync::Arc::new(crate::stages::progress::Silent);
        let rebuilt = want.map(|w| crate::chunks::write_to(&src, map, w, std::io::sink(), &silent));
        match rebuilt {
            Some(Err(e)) if crate::exit::is_damage(&e) => damaged.push((map.file.clone(), e)),
            Some(Err(e)) => return Err(e),
            _ => {}
        }
        checked.extend(map.keys(m.kind).map(|(k, _)| k));
        c.bytes_read += m.chunks.as_ref().map_or(0, |l| l.stored_bytes);
    }
    let stored = map.keys(m.kind).count();
    c.objects += stored;
    for (key, e) in &damaged {
        let problem = format!("{e:#}");
        c.problems.push(problem.clone());
        c.results.push(ObjectResult {
            key: key.clone(),
            shared: false,
            problem: Some(problem),
        });
    }
    c.results.push(ObjectResult {
        key: format!(
            "{} in {stored} chunks ({} read now, the rest read for an earlier backup)",
            map.file,
            checked.len() - before
        ),
        shared: false,
        problem: (!damaged.is_empty())
            .then(|| crate::units::count(damaged.len() as u64, "damaged chunk")),
    });
    Ok(())
}
