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
use crate::manifest::{self, seal, tombstone, Kind, Trust};
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
    let before = trust.unsealed_before();
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
            match examine(&bytes, &o.key, is_manifest, &trust, before, o.modified) {
                Ok(Some(f)) => found.push(f),
                Ok(None) => kept += 1,
                Err(why) => left.push((o.key.clone(), why)),
            }
        }
    }
    for (key, why) in &left {
        ctx.ui
            .warn(&format!("{} is not recorded: {why}", printable(key)));
    }
    let now = time::OffsetDateTime::now_utc();
    let list = List {
        schema: legacy::SCHEMA.into(),
        id: BackupId::new_v7(now),
        created_at: now,
        host: super::run::hostname(),
        bkp_version: env!("CARGO_PKG_VERSION").into(),
        unsealed_before: before,
        documents: found.iter().map(|f| f.listed.clone()).collect(),
    };
    let written = if found.is_empty() || args.dry_run {
        None
    } else {
        Some(legacy::write(store.as_ref(), &list, &trust)?)
    };
    if ctx.ui.json {
        let doc = json!({
            "store": store.identity(),
            "list": written,
            "sealed_by": sealer,
            "dry_run": args.dry_run,
            "recorded": found.iter().map(|f| json!({
                "key": printable(&f.listed.key),
                "sha256": f.listed.sha256,
                "why": f.why,
            })).collect::<Vec<_>>(),
            "not_recorded": left.iter().map(|(k, why)| json!({"key": printable(k), "why": why})).collect::<Vec<_>>(),
            "already_trusted": kept,
        });
        ui::print(&serde_json::to_string_pretty(&doc)?)?;
        return Ok(());
    }
    for f in &found {
        ui::print(&format!(
            "{}  {}  {}",
            printable(&f.listed.key),
            f.why,
            f.detail
        ))?;
    }
    let n = found.len();
    ctx.ui.info(&match (&written, n) {
        (_, 0) => format!(
            "nothing to record in {}: every manifest and tombstone ({kept}) is sealed with the current key or already recorded",
            store.identity()
        ),
        (None, _) => format!(
            "would record {} above in a sealed list (dry run: nothing written); check where each came from first",
            crate::units::count(n as u64, "document")
        ),
        (Some(key), _) => format!(
            "recorded {} above in {key}, sealed by {sealer}: they are read as this installation's from now on, and an edited copy of any is refused",
            crate::units::count(n as u64, "document")
        ),
    });
    Ok(())
}

/// Whether the document `bytes` at `key` needs recording: `Ok(Some)` with
/// why, `Ok(None)` when the current key sealed it or a list already records
/// it, `Err(why)` when it is not recorded (forged, not a manifest, started
/// or stored after `before`: its id's time is its writer's choice, the
/// store's own time of the object, `modified`, is not).
fn examine(
    bytes: &[u8],
    key: &str,
    is_manifest: bool,
    trust: &Trust,
    before: Option<time::OffsetDateTime>,
    modified: Option<time::OffsetDateTime>,
) -> std::result::Result<Option<Found>, String> {
    let opened = seal::open(bytes, key, trust).map_err(|e| format!("{e:#}"))?;
    match trust.vouch(opened.sealer.as_deref(), key, bytes, key) {
        Ok(Some(_)) => return Ok(None),
        Ok(None) => {}
        // Sealed by an old key and not recorded yet: that is what this is for.
        Err(_) if opened.sealed => {}
        Err(e) => return Err(format!("{e:#}")),
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
