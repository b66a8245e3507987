//! `bkp snapshot --from-log`: a base of a TigerBeetle cluster of several
//! replicas, built from the cluster's log, from which `restore --at TIME
//! --replicas N` starts instead of replaying the whole history.
//!
//! A snapshot of one replica's data file is no base for a cluster: TigerBeetle
//! runs a replica of several only beside the others, and a replica may hold
//! prepares the cluster never committed. A base is made where the log is
//! instead: the newest base of this cluster and shape (or N freshly formatted
//! replicas) is started as a private cluster on loopback, the log after it is
//! replayed up to the log's head, and the N stopped data files are stored as
//! one snapshot (an archive of N files; `source.from_log`, `replica_count`,
//! `newest_timestamp`). Every row of a base came from the log, with the
//! `imported` flag and its own timestamp, so a base is exactly the source's
//! state at its newest row, holds no pending transfer with a live timeout (an
//! imported one has none: replay records expiries as voids), and needs no stop
//! window on any production replica. The run reads the log, so it runs where
//! the key is (a write-only host cannot decrypt the log); the cost of each run
//! is one base's download, the log since it, and one base's upload.

use std::path::PathBuf;

use anyhow::Result;
use serde_json::json;

use super::restore::{pitr, tigerbeetle as tbrestore, Source};
use super::run::{json_report, Body, Run, Spec, Stored};
use super::{open_store, Ctx};
use crate::exit::{coded, Code};
use crate::ledger::Operation;
use crate::manifest::tigerbeetle::{self as tbm, SNAPSHOT};
use crate::manifest::{self, Kind, Manifest, Scope};
use crate::tigerbeetle::replica::MAX_REPLICAS;
use crate::units::count;
use crate::workdir::WorkDir;
use crate::{archive, chain, pipeline, ui};

pub fn run(ctx: &Ctx) -> Result<()> {
    let plan = &ctx.plan;
    let cluster = tbrestore::configured_cluster(plan, "--from-log")?;
    let (cluster_id, replicas) = (cluster.cluster_id, shape(ctx, &cluster.addresses)?);
    pitr::replica_spec(plan, "`bkp snapshot --from-log`")?;
    let tb = plan.tigerbeetle.as_ref();
    let trust = super::trust(plan, Vec::new())?;
    if trust.keys().is_none() && plan.encryption.is_some() {
        return Err(coded(Code::Config, "`bkp snapshot --from-log` reads the log: it needs the key, not a write-only host's public key"));
    }
    let store = open_store(plan)?;
    store.preflight_writes()?;
    let run = Run::begin(
        ctx,
        store.as_ref(),
        &trust,
        true,
        Spec {
            kind: Kind::Tigerbeetle,
            scope: Scope::Full,
            operation: Operation::Snapshot,
            compression: plan.compression,
            retention_days: tb.map(|t| t.retention_days).unwrap_or_default(),
        },
    )?;
    let outcome = (|| -> Result<Stored> {
        let store = store.as_ref();
        let head = log_head(store, &trust, cluster_id)?;
        let prev = tbrestore::cluster_base(store, &trust, cluster_id, replicas, u64::MAX)?;
        let scratch = WorkDir::new(&plan.work_dir).scratch("base")?;
        let dir = scratch.path().to_path_buf();
        let names: Vec<String> = (0..replicas)
            .map(|i| tbrestore::data_file_name(cluster_id, i))
            .collect();
        let files: Vec<PathBuf> = names.iter().map(|n| dir.join(n)).collect();
        let src = Source {
            store,
            keyring: trust.keys(),
            trust: &trust,
            work: WorkDir::new(&plan.work_dir),
            progress: ctx.progress(),
            ui: ctx.ui,
        };
        let r = match &prev {
            Some(b) => {
                ctx.ui.detail(&format!(
                    "building on base {} (newest row at timestamp {})",
                    b.id,
                    tbm::base_newest(b).unwrap_or(0)
                ));
                let plain: Vec<PathBuf> = names.iter().map(PathBuf::from).collect();
                tbrestore::unpack_base(&src, b, &dir, cluster_id, &plain)?;
                pitr::replay_onto_base(&src, plan, &files, cluster_id, head, b)?
            }
            None => {
                ctx.ui.detail(&format!(
                    "no base of {replicas} replicas yet: replaying the log from the beginning"
                ));
                let alone = pitr::from_the_log_alone("the first base of a cluster");
                pitr::replay_into_cluster(&src, plan, &files, cluster_id, head, &alone)?
            }
        };
        ctx.ui.detail(&r.summary());
        let progress = ctx.progress();
        let suffix = run.suffix(".tar", plan.compression);
        let key =
            manifest::object_key(Kind::Tigerbeetle, SNAPSHOT, run.id, run.started_at, &suffix);
        let pairs: Vec<(String, PathBuf)> =
            names.iter().cloned().zip(files.iter().cloned()).collect();
        let mut archived = Vec::new();
        let entry = pipeline::upload(
            store,
            &key,
            &run.metadata(Scope::Full),
            plan.compression,
            run.keyring,
            progress,
            |w| {
                archived = archive::write_files(w, &pairs)?;
                Ok(())
            },
        )?;
        let source = base_source(cluster_id, replicas, prev.as_ref(), &r);
        let m = run.manifest(Body {
            objects: vec![entry],
            files: archived,
            source,
            ..Body::default()
        });
        run.store_manifest(m)
    })();
    let store = store.as_ref();
    run.finish(outcome, |m, elapsed, ledger| {
        if ctx.ui.json {
            return json_report(m, store, elapsed, ledger, json!({}));
        }
        let bytes: u64 = m.objects.iter().map(|o| o.size).sum();
        ctx.ui.info(&format!(
            "base {} of a {replicas}-replica cluster ({} and {}, newest row at timestamp {}) stored in {} ({}) in {:.1}s",
            m.id,
            count(json_u64(m, "accounts"), "account"),
            count(json_u64(m, "transfers"), "transfer"),
            json_u64(m, "newest_timestamp"),
            store.identity(),
            ui::size(bytes),
            elapsed.as_secs_f64(),
        ));
        if let Some(n) = ledger {
            ctx.ui.detail(&n.to_string());
        }
        Ok(ui::out(&m.id.to_string())?)
    })
}

/// The number of replicas of the configured cluster: its addresses.
fn shape(ctx: &Ctx, addresses: &str) -> Result<u8> {
    let n = addresses
        .split(',')
        .filter(|a| !a.trim().is_empty())
        .count();
    u8::try_from(n)
        .ok()
        .filter(|n| (1..=MAX_REPLICAS).contains(n))
        .ok_or_else(|| {
            coded(
                Code::Config,
                format!(
                    "{}: tigerbeetle.addresses names {n} replicas; a base is of a cluster of 1 to {MAX_REPLICAS}",
                    ctx.plan.source.display()
                ),
            )
        })
}

/// The instant a new base reaches: the end of the cluster's log head, so the
/// base holds everything captured and nothing after.
fn log_head(
    store: &dyn crate::store::Store,
    trust: &manifest::Trust,
    cluster: u128,
) -> Result<time::OffsetDateTime> {
    let (all, _) = manifest::list(store, trust, Some(Kind::Tigerbeetle))?;
    let until = chain::log_head(&all, cluster)
        .and_then(tbm::interval)
        .map(|(_, until)| until)
        .ok_or_else(|| {
            coded(
                Code::NotFound,
                format!("no log segment of cluster {cluster} in {}: a base is built from the log; run `bkp logs` first", store.identity()),
            )
        })?;
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(until)).map_err(|e| {
        coded(
            Code::Integrity,
            format!("the log head's end {until} is no timestamp: {e}"),
        )
    })
}

/// What a base's manifest records: its cluster and shape, that it was built
/// from the log, its newest row (from where it restores), the base it was
/// built on, and its rows (the previous base's and those replayed; a drill
/// counts them again).
fn base_source(
    cluster: u128,
    replicas: u8,
    prev: Option<&Manifest>,
    r: &pitr::Replayed,
) -> crate::manifest::facts::Facts {
    let mut source = crate::manifest::facts::Facts::new();
    source.insert("cluster_id", json!(cluster.to_string()));
    source.insert("replica_count", json!(replicas));
    source.insert("from_log", json!(true));
    source.insert(
        "newest_timestamp",
        json!(r.last_timestamp.max(r.snapshot_until)),
    );
    source.insert("segments_replayed", json!(r.segments));
    let before = |key: &str| prev.map_or(Some(0), |p| p.source.get(key)?.as_u64());
    // A replayed expiry is a void: a transfer row of the base.
    if let (Some(a), Some(t)) = (before("accounts"), before("transfers")) {
        source.insert("accounts", json!(a + r.accounts));
        source.insert("transfers", json!(t + r.transfers + r.expiries));
    }
    if let Some(p) = prev {
        source.insert("built_on", json!(p.id));
    }
    source
}

fn json_u64(m: &Manifest, key: &str) -> u64 {
    m.source.get(key).and_then(|v| v.as_u64()).unwrap_or(0)
}
