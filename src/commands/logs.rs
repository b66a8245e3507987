//! `bkp logs`: TigerBeetle accounts and transfers created since the last watermark →
//! segment → compress → encrypt → SHA-256 → upload → manifest → ledger.
//!
//! Stateless: the watermark is the `until` of the newest `logs` manifest in the
//! store (the first run starts from the beginning), and each manifest names the
//! previous one as its parent, so the chain is explicit and a gap is visible. A run
//! with nothing new uploads no data object but still writes a manifest saying the
//! log is current up to its bound, so freshness stays provable.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use serde_json::json;
use time::OffsetDateTime;

use super::{hostname, open_store, record_run, Ctx, RunRecord};
use crate::exit::{coded, Code};
use crate::id::BackupId;
use crate::ledger::Operation;
use crate::lock::RunLock;
use crate::manifest::{self, Kind, Manifest, Scope, Status};
use crate::store::Store;
use crate::{pipeline, tblog, ui};

pub const OPERATION: &str = "logs";

/// The chain position a log manifest records, as strings in `source` (TigerBeetle
/// timestamps exceed the integers many JSON readers keep exactly).
pub fn interval(m: &Manifest) -> Option<(u64, u64)> {
    let get = |k: &str| m.source.get(k)?.as_str()?.parse::<u64>().ok();
    Some((get("after")?, get("until")?))
}

/// Every TigerBeetle manifest (snapshots and log segments), oldest first.
fn tigerbeetle_manifests(store: &dyn Store) -> Result<Vec<Manifest>> {
    Ok(manifest::list(store, Some(Kind::Tigerbeetle))?.0)
}

/// Links of the chain whose start does not meet the previous link's end, or whose
/// parent is gone: each would make point-in-time recovery across it impossible.
/// A segment whose older predecessors retention removed is no break when a
/// snapshot covers what they held. `all` holds the snapshots too.
pub fn chain_breaks(all: &[Manifest]) -> Vec<String> {
    let logs: Vec<&Manifest> = all.iter().filter(|m| m.operation == OPERATION).collect();
    let by_id: std::collections::HashMap<_, _> = logs.iter().map(|m| (m.id, *m)).collect();
    let covered = |m: &Manifest| super::list::covering_snapshot(m, all).is_some();
    let mut breaks = Vec::new();
    for m in logs.iter().copied() {
        let Some((after, _)) = interval(m) else {
            continue;
        };
        match m.parent {
            None if after != 0 && !covered(m) => {
                breaks.push(format!("segment {} starts at {after} with no parent", m.id))
            }
            None => {}
            Some(p) => match by_id.get(&p).and_then(|p| interval(p)) {
                None if covered(m) => {}
                None => breaks.push(format!("segment {} follows {p}, which is missing", m.id)),
                Some((_, until)) if until != after => breaks.push(format!(
                    "segment {} starts at {after} but its parent {p} ends at {until}",
                    m.id
                )),
                Some(_) => {}
            },
        }
    }
    breaks
}

pub fn run(ctx: &Ctx) -> Result<()> {
    let plan = &ctx.plan;
    let tb = plan.tigerbeetle.as_ref();
    let cluster = tb.and_then(|t| t.cluster.clone()).ok_or_else(|| {
        coded(
            Code::Config,
            format!(
                "{}: `bkp logs` needs the cluster to capture from: set addresses (and cluster_id) in [tigerbeetle]",
                plan.source.display()
            ),
        )
    })?;
    let retention_days = tb.map_or(365, |t| t.retention_days);
    let timeout = plan
        .ledger
        .as_ref()
        .map_or(Duration::from_secs(10), |l| l.timeout);
    let cfg = tblog::ClusterConfig {
        cluster_id: cluster.cluster_id,
        addresses: cluster.addresses.clone(),
        timeout,
    };
    let keyring = plan.keyring()?;
    let store = open_store(plan)?;
    let _lock = RunLock::acquire(&plan.work_dir, OPERATION, ctx.wait)?;

    let started_at = OffsetDateTime::now_utc();
    let clock = Instant::now();
    let id = BackupId::new_v7(started_at);
    let all = tigerbeetle_manifests(store.as_ref())?;
    for b in chain_breaks(&all) {
        ctx.ui.warn(&format!(
            "the TigerBeetle log chain is broken: {b}; point-in-time restore cannot cross this gap — take a snapshot to start a restorable point after it"
        ));
    }
    let head = all.iter().rfind(|m| m.operation == OPERATION).cloned();
    let (parent, after) = match &head {
        Some(m) => {
            let (_, until) = interval(m).with_context(|| {
                format!(
                    "log manifest {} has no readable interval: the chain cannot continue from it",
                    m.key()
                )
            })?;
            (Some(m.id), until)
        }
        None => (None, 0),
    };

    let outcome = (|| -> Result<Manifest> {
        let newest = tblog::newest_timestamp(&cfg).with_context(|| {
            format!(
                "failed to read the newest timestamp of the cluster at {}",
                cfg.addresses
            )
        })?;
        let mut source = BTreeMap::new();
        source.insert("cluster_id".into(), json!(cfg.cluster_id.to_string()));
        source.insert("after".into(), json!(after.to_string()));
        let mut objects = Vec::new();
        if newest <= after {
            // Nothing new: the log is current up to `after` as of now.
            source.insert("until".into(), json!(after.to_string()));
            source.insert("accounts".into(), json!(0));
            source.insert("transfers".into(), json!(0));
        } else {
            let suffix = super::object_suffix(".tblog", plan.compression, keyring.as_ref());
            let key = manifest::object_key(Kind::Tigerbeetle, OPERATION, id, started_at, &suffix);
            let metadata = vec![
                ("backup-id".to_string(), id.to_string()),
                ("backup-type".to_string(), "tigerbeetle".to_string()),
                ("backup-scope".to_string(), "incremental".to_string()),
            ];
            let mut stats = None;
            let entry = pipeline::upload(
                store.as_ref(),
                &key,
                &metadata,
                plan.compression,
                keyring.as_ref(),
                ctx.progress(),
                |w| {
                    stats = Some(tblog::capture(&cfg, after, w)?);
                    Ok(())
                },
            )?;
            let stats = stats.context("the capture produced no statistics")?;
            let seg = &stats.segment;
            source.insert("until".into(), json!(seg.until.to_string()));
            source.insert("accounts".into(), json!(seg.accounts));
            source.insert("transfers".into(), json!(seg.transfers));
            source.insert(
                "first_timestamp".into(),
                json!(seg.first_timestamp.to_string()),
            );
            source.insert(
                "last_timestamp".into(),
                json!(seg.last_timestamp.to_string()),
            );
            source.insert("requests".into(), json!(stats.requests));
            objects.push(entry);
        }
        let m = Manifest {
            schema: manifest::schema_string(),
            id,
            kind: Kind::Tigerbeetle,
            scope: Scope::Incremental,
            operation: OPERATION.into(),
            status: Status::Completed,
            started_at,
            finished_at: OffsetDateTime::now_utc(),
            host: hostname(),
            bkp_version: env!("CARGO_PKG_VERSION").into(),
            retention_days,
            compression: plan.compression,
            encryption: super::encryption_record(keyring.as_ref()),
            objects,
            files: Vec::new(),
            parent,
            uses: Vec::new(),
            source,
        };
        manifest::write(store.as_ref(), &m)?;
        Ok(m)
    })();

    let record = RunRecord {
        id,
        kind: Kind::Tigerbeetle,
        scope: Scope::Incremental,
        operation: Operation::Logs,
        compression: plan.compression,
        encrypted: keyring.is_some(),
        completed: outcome.is_ok(),
        retention_days,
        started_at,
        bytes: outcome.as_ref().map_or(0, |m| m.stored_bytes()),
    };
    let ledger = record_run(ctx, store.as_ref(), &record);
    let m = outcome?;
    let ledger_note = ledger.map_err(|e| {
        e.context(format!(
            "log segment {} was stored, but recording it in the ledger failed",
            m.id
        ))
    })?;

    let elapsed = clock.elapsed();
    if ctx.ui.json {
        ui::out(&serde_json::to_string_pretty(&json!({
            "manifest": m,
            "manifest_key": m.key(),
            "store": store.identity(),
            "seconds": elapsed.as_secs_f64(),
            "ledger": ledger_note,
        }))?)?;
    } else {
        let (after, until) = interval(&m).unwrap_or_default();
        let count = |k: &str| m.source.get(k).and_then(|v| v.as_u64()).unwrap_or(0);
        if m.objects.is_empty() {
            ctx.ui.info(&format!(
                "log {} : nothing new after timestamp {after}; the log is current",
                m.id
            ));
        } else {
            ctx.ui.info(&format!(
                "log segment {}: {} accounts and {} transfers in ({after}, {until}], {} stored in {:.1}s",
                m.id,
                count("accounts"),
                count("transfers"),
                ui::size(m.stored_bytes()),
                elapsed.as_secs_f64()
            ));
        }
        ui::out(&m.id.to_string())?;
    }
    Ok(())
}
