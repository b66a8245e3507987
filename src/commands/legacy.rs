//! `bkp trust-legacy`: the operator's one decision about what in the store is
//! this installation's although the current key did not seal it — manifests
//! from before the store was sealed, and manifests and tombstones sealed by a
//! key rotated out since — written down as a sealed list (see
//! `manifest/legacy.rs`) that readers believe instead of anything the
//! documents say about themselves.
//!
//! It reads every manifest and tombstone once, shows what it records (and
//! what it leaves out, and why), and writes one new create-only list under the
//! current key. Documents already sealed by the current key, or recorded by a
//! list it believes, are left alone; so running it again records only what is
//! new, and after a rotation it records again what the old key's list held.

use anyhow::Result;
use serde_json::json;

use super::{open_store, Ctx};
use crate::cli::TrustLegacyArgs;
use crate::exit::{coded, Code};
use crate::id::BackupId;
use crate::manifest::legacy::{self, List, Listed};
use crate::manifest::{self, seal, tombstone, wal, Kind, Trust};
use crate::store::Store;
use crate::ui::{self, printable};

/// A document the list will record, and why it needs recording.
struct Found {
    listed: Listed,
    why: String,
    detail: String,
}

pub fn run(ctx: &Ctx, args: &TrustLegacyArgs) -> Result<()> {
    let plan = &ctx.plan;
    let store = open_store(plan)?;
    let trust = super::trust(plan, Vec::new())?;
    if !trust.checks() {
        return Err(coded(
            Code::Config,
            format!(
                "{}: bkp trust-legacy needs [encryption]: without a key nothing is sealed, so every manifest is read as it is and there is nothing to record",
                plan.source.display()
            ),
        ));
    }
    let sealer = seal::own_sealer(trust.keys()).ok_or_else(|| {
        coded(
            Code::Config,
            "cannot seal a list: the current key is a public-key recipient and no signing_key_file is configured",
        )
    })?;
    manifest::marker::check(store.as_ref(), &trust)?;
    // A list's time is when its run began to look: what the store gets after
    // that is left to a later run, which holds it to this list's time.
    let started = time::OffsetDateTime::now_utc();
    let before = trust.unsealed_before();
    let recorded = trust.lists()?.first_listed_at();
    let mut found = Vec::new();
    let mut left = Vec::new();
    let mut kept = 0usize;
    let dirs = Kind::ALL
        .iter()
        .map(|k| (format!("{}/{}/", manifest::MANIFEST_DIR, k.as_str()), true))
        .chain([(format!("{}/", tombstone::TRASH_DIR), false)]);
    for (dir, is_manifest) in dirs {
        for o in store.list(&dir)? {
            if !o.key.ends_with(".json") {
                continue;
            }
            let bytes = store.get_at_most(&o.key, crate::limits::DOCUMENT)?;
            let times = Times {
                unsealed_before: before,
                recorded,
                modified: o.modified,
            };
            match examine(&bytes, &o.key, is_manifest, &trust, times) {
                Ok(Some(f)) => found.push(f),
                Ok(None) => kept += 1,
                Err(why) => left.push((o.key.clone(), why)),
            }
        }
    }
    let wal = wal_to_record(store.as_ref(), &trust, recorded)?;
    for (key, why) in &left {
        ctx.ui
            .warn(&format!("{} is not recorded: {why}", printable(key)));
    }
    if let Some(at) = wal.since.filter(|_| wal.later > 0) {
        ctx.ui.warn(&format!(
            "{} stored since the first run under the current key began ({}) {} not recorded: those the current key tagged need no list, and a rotated-out key's tag on any of them is not believed",
            crate::units::count(wal.later as u64, "WAL archive object"),
            crate::units::rfc3339(at),
            if wal.later == 1 { "is" } else { "are" },
        ));
    }
    let documents: Vec<Listed> = found
        .iter()
        .map(|f| f.listed.clone())
        .chain(
            wal.systems
                .iter()
                .flat_map(|(_, objects)| objects.iter().cloned()),
        )
        .collect();
    let mut written = Vec::new();
    // After a rotation, the first run writes a list even with nothing to
    // record: its time is what later runs hold the old keys' documents to.
    let rotated = trust.keys().is_some_and(|k| k.has_old_seal_keys());
    let parts: Vec<&[Listed]> = match documents.is_empty() && recorded.is_none() && rotated {
        true => vec![&[]],
        false => documents.chunks(legacy::MAX_DOCUMENTS).collect(),
    };
    if !args.dry_run {
        for part in parts {
            let list = List {
                schema: legacy::SCHEMA.into(),
                id: BackupId::new_v7(started),
                created_at: started,
                host: super::run::hostname(),
                bkp_version: env!("CARGO_PKG_VERSION").into(),
                unsealed_before: before,
                // `legacy::write` names the store it writes to.
                store: None,
                documents: part.to_vec(),
            };
            written.push(legacy::write(store.as_ref(), &list, &trust)?);
        }
    }
    let outcome = Outcome {
        store: store.identity(),
        sealer,
        dry_run: args.dry_run,
        found,
        left,
        kept,
        wal,
        written,
    };
    report(ctx, &outcome)
}

/// What one `trust-legacy` run found and did.
struct Outcome {
    store: String,
    sealer: String,
    dry_run: bool,
    found: Vec<Found>,
    left: Vec<(String, String)>,
    kept: usize,
    wal: Wal,
    written: Vec<String>,
}

fn report(ctx: &Ctx, o: &Outcome) -> Result<()> {
    let wal_objects: usize = o.wal.systems.iter().map(|(_, l)| l.len()).sum();
    if ctx.ui.json {
        let doc = json!({
            "store": o.store,
            "list": o.written.first(),
            "lists": o.written,
            "sealed_by": o.sealer,
            "dry_run": o.dry_run,
            "recorded": o.found.iter().map(|f| json!({
                "key": printable(&f.listed.key),
                "sha256": f.listed.sha256,
                "why": f.why,
            })).collect::<Vec<_>>(),
            "not_recorded": o.left.iter().map(|(k, why)| json!({"key": printable(k), "why": why})).collect::<Vec<_>>(),
            "wal": o.wal.systems.iter().map(|(system, l)| json!({"system": system.to_string(), "objects": l.len()})).collect::<Vec<_>>(),
            "wal_not_recorded": o.wal.later,
            "already_trusted": o.kept,
        });
        return ui::print(&serde_json::to_string_pretty(&doc)?);
    }
    for f in &o.found {
        ui::print(&format!(
            "{}  {}  {}",
            printable(&f.listed.key),
            f.why,
            f.detail
        ))?;
    }
    for (system, objects) in &o.wal.systems {
        let names = |l: &Listed| {
            l.key
                .rsplit('/')
                .next()
                .unwrap_or_default()
                .split('.')
                .next()
                .unwrap_or_default()
                .to_string()
        };
        ui::print(&format!(
            "{}{system}/  {} of PostgreSQL system {system}, {} to {}  tagged with a key's HMAC (the current key's or a rotated-out one's)",
            wal::PREFIX,
            crate::units::count(objects.len() as u64, "WAL archive object"),
            objects.first().map(names).unwrap_or_default(),
            objects.last().map(names).unwrap_or_default(),
        ))?;
    }
    let n = o.found.len() + wal_objects;
    let what = crate::units::count(n as u64, "document");
    ctx.ui.info(&match (o.written.as_slice(), n) {
        (keys, 0) => format!(
            "nothing to record in {}: every manifest and tombstone ({}) is sealed with the current key or already recorded{}{}",
            o.store,
            o.kept,
            if o.wal.examined { ", and so is the WAL archive" } else { "" },
            match keys {
                [] => String::new(),
                _ => format!(
                    "; wrote the empty list {}, the time later runs hold what old keys sealed to",
                    keys.join(", ")
                ),
            }
        ),
        ([], _) => format!(
            "would record {what} above in a sealed list (dry run: nothing written); check where each came from first"
        ),
        (keys, _) => format!(
            "recorded {what} above in {}, sealed by {}: they are read as this installation's from now on, and an edited copy of any is refused",
            keys.join(", "),
            o.sealer
        ),
    });
    Ok(())
}

/// The WAL archive objects a run records.
#[derive(Default)]
struct Wal {
    /// Whether the archive was looked at (only with old keys configured).
    examined: bool,
    /// By system, the objects to record.
    systems: Vec<(u64, Vec<Listed>)>,
    /// When the first run under the current key that wrote a list began.
    since: Option<time::OffsetDateTime>,
    /// Objects stored since then, which are not recorded.
    later: usize,
}

/// The WAL archive's objects a rotated-out key may have tagged and no
/// believed list records yet, by system: every object tagged with an HMAC
/// (a signer's tags are never a rotated key's), taken from the listing
/// alone. Its tag names its content, so recording the key records the
/// content: an object an old key's holder writes later has another key and
/// is not believed ([`wal::tagged`]). Objects the store got after `since`
/// (when the first run under the current key that wrote a list began) are
/// left out: an old key's holder may have written them. Nothing without old
/// keys configured.
fn wal_to_record(
    store: &dyn Store,
    trust: &Trust,
    since: Option<time::OffsetDateTime>,
) -> Result<Wal> {
    if !trust.keys().is_some_and(|k| k.has_old_seal_keys()) {
        return Ok(Wal::default());
    }
    let lists = trust.lists()?;
    let mut out = Wal {
        examined: true,
        since,
        ..Wal::default()
    };
    for system in wal::archive::systems(store)? {
        let mut objects = Vec::new();
        for s in wal::archive::archived(store, system)? {
            if s.tag.len() != 64 || lists.has(&s.key, &s.tag) {
                continue;
            }
            if since.is_some_and(|t| s.modified.is_none_or(|m| m > t)) {
                out.later += 1;
                continue;
            }
            objects.push(Listed {
                key: s.key,
                sha256: s.tag,
            });
        }
        if !objects.is_empty() {
            out.systems.push((system, objects));
        }
    }
    Ok(out)
}

/// The times [`examine`] holds a document to.
#[derive(Clone, Copy)]
struct Times {
    /// `[encryption] unsealed_before`.
    unsealed_before: Option<time::OffsetDateTime>,
    /// When the first list this run believes was written (under the current
    /// key: [`crate::manifest::seal::Allowed::first_listed_at`]).
    recorded: Option<time::OffsetDateTime>,
    /// The store's own time of the document.
    modified: Option<time::OffsetDateTime>,
}

/// Whether the document `bytes` at `key` needs recording: `Ok(Some)` with
/// why, `Ok(None)` when the current key sealed it or a list already records
/// it, `Err(why)` when it is not recorded: forged, not a manifest, unsealed
/// and started or stored after `unsealed_before`, or sealed by a rotated-out
/// key and stored after the first list under the current key. Its id's time
/// is its writer's choice; the store's own time of the object is not.
fn examine(
    bytes: &[u8],
    key: &str,
    is_manifest: bool,
    trust: &Trust,
    times: Times,
) -> std::result::Result<Option<Found>, String> {
    let Times {
        unsealed_before: before,
        recorded,
        modified,
    } = times;
    let opened = seal::open(bytes, key, trust).map_err(|e| format!("{e:#}"))?;
    match trust.vouch(opened.sealer.as_deref(), key, bytes, key) {
        Ok(Some(_)) => return Ok(None),
        Ok(None) => {}
        // Sealed by an old key and not recorded yet: that is what this is for.
        Err(_) if opened.sealed => {}
        Err(e) => return Err(format!("{e:#}")),
    }
    if let (Some(s), Some(at)) = (&opened.sealer, recorded) {
        if modified.is_none_or(|t| t > at) {
            return Err(format!(
                "it is sealed by {}, a rotated-out key, and the store got it after the first `bkp trust-legacy` run under the current key began ({}): a host still sealing with that key, or someone holding it, wrote it. Rotate that host's key: its backups since are not believed (`--trust ID` vouches for one), its next ones are",
                printable(s),
                crate::units::rfc3339(at)
            ));
        }
    }
    let why = match &opened.sealer {
        Some(s) => format!("sealed by {} (rotated out)", printable(s)),
        None if is_manifest => "unsealed".to_string(),
        None => return Err("a tombstone without a seal was never bkp's".into()),
    };
    let detail = if is_manifest {
        // As bkp would read it, the seal aside.
        let m = manifest::parse(bytes, key, &Trust::none()).map_err(|e| format!("{e:#}"))?;
        if opened.sealer.is_none() {
            if let Some(cut) = before {
                if m.id.timestamp().is_none_or(|t| t >= cut) {
                    return Err(
                        "it has no seal and started after [encryption] unsealed_before".into(),
                    );
                }
                if modified.is_none_or(|t| t >= cut) {
                    return Err(
                        "it has no seal and the store holds it since after [encryption] unsealed_before".into(),
                    );
                }
            }
        }
        format!(
            "{} {} started {} on {}",
            m.kind.as_str(),
            m.operation,
            m.started_at
                .format(&time::format_description::well_known::Rfc3339)
                .unwrap_or_default(),
            printable(&m.host)
        )
    } else {
        String::new()
    };
    Ok(Some(Found {
        listed: Listed {
            key: key.to_string(),
            sha256: crate::stages::hash::hex(&<sha2::Sha256 as sha2::Digest>::digest(bytes)),
        },
        why,
        detail,
    }))
}
