//! Point-in-time recovery of TigerBeetle: replay the log segments after a restored
//! snapshot (or from the very beginning into a fresh data file) up to a moment.
//!
//! A private replica ([`crate::tigerbeetle::replica`]) is started on the restored
//! data file, its newest timestamp tells where the snapshot ends, and the segments
//! covering `(newest, at]` are verified, decrypted and replayed with the `imported`
//! flag and their original timestamps.
//! What replay cannot reproduce exactly (an expiry becomes a void at the same
//! timestamp, the `imported` bit) is documented in `tigerbeetle/tblog/replay.rs`.
//!
//! A snapshot may hold pending transfers with a live timeout. The private replica's
//! clock is past them, so it expires them as soon as it runs, by its own clock. That
//! is right for those the source expired by `--at` (the log says when), and wrong
//! for the others: the source still had them pending at `--at`, or posted or voided
//! them in time. After the replay the replica's own expiries are read back from its
//! change events (they carry its clock's timestamps, after `--at`), and every one
//! the log does not account for is reported in [`Replayed::expired_early`]: such a
//! file is never delivered (the caller restores again from an older base). Replay
//! starts only once the replica's own expiries have held still for a second (it
//! expires on its pulse), so that it meets the amounts they released.

use std::path::Path;

use anyhow::{Context, Result};
use time::OffsetDateTime;

use crate::chain;
use crate::commands::Ctx;
use crate::exit::{coded, Code};
use crate::manifest::tigerbeetle::{interval, is_log_of, LOGS};
use crate::manifest::{self, Kind};
use crate::pipeline;
use crate::store::Store;
use crate::tigerbeetle::replica::{self, ReplicaSpec};
use crate::tigerbeetle::tblog;
use crate::workdir::WorkDir;

/// What a point-in-time replay did.
#[derive(Debug, Default, serde::Serialize)]
pub struct Replayed {
    pub snapshot_until: u64,
    pub segments: usize,
    pub accounts: u64,
    pub transfers: u64,
    pub last_timestamp: u64,
    pub at: u64,
    /// Expiries of pending transfers replayed as voids.
    pub expiries: u64,
    /// Pending transfers the private replica expired by its own clock although the
    /// source had not expired them by `--at`: the restored state is wrong.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub expired_early: Vec<String>,
}

/// The private replica of the configured `tigerbeetle` binary, logging to the
/// work directory's replica log; `why` names the caller in errors.
pub fn replica_spec(ctx: &Ctx, why: &str) -> Result<ReplicaSpec> {
    let plan = &ctx.plan;
    let tb = plan.tigerbeetle.as_ref();
    let binary = tb.and_then(|t| t.binary.clone()).ok_or_else(|| {
        coded(
            Code::Config,
            format!(
                "{}: {why} starts a private replica: set tigerbeetle.binary",
                plan.source.display()
            ),
        )
    })?;
    Ok(ReplicaSpec {
        binary,
        cluster_id: super::cluster_id(plan),
        replica_args: tb.map(|t| t.replica_args.clone()).unwrap_or_default(),
        log: WorkDir::new(&plan.work_dir).replica_log(),
        pass_env: tb.map(|t| t.pass_env.clone()).unwrap_or_default(),
    })
}

/// Replays the log onto `data_file` (formatting it first when `fresh`) up to `at`.
pub fn replay_logs(
    ctx: &Ctx,
    store: &dyn Store,
    trust: &manifest::Trust,
    data_file: &Path,
    at: OffsetDateTime,
    fresh: bool,
) -> Result<Replayed> {
    let spec = replica_spec(ctx, "point-in-time restore")?;
    let started = OffsetDateTime::now_utc();
    let (replica, cfg) = replica::start(&spec, data_file, fresh)?;
    let out = replay_onto(
        ctx,
        store,
        trust,
        &cfg,
        cfg.cluster_id,
        at,
        (!fresh).then_some(started),
    )?;
    drop(replica);
    Ok(out)
}

/// Replays the log from the beginning up to `at` into a private cluster of
/// `files.len()` fresh replicas (one data file per path, formatted here), then
/// stops it: one data file per replica of a whole cluster.
pub fn replay_into_cluster(
    ctx: &Ctx,
    store: &dyn Store,
    trust: &manifest::Trust,
    files: &[std::path::PathBuf],
    at: OffsetDateTime,
) -> Result<Replayed> {
    let spec = replica_spec(ctx, "point-in-time restore")?;
    let (cluster, cfg) = replica::start_cluster(&spec, files)?;
    let out = replay_onto(ctx, store, trust, &cfg, cfg.cluster_id, at, None)?;
    drop(cluster);
    Ok(out)
}

/// Replays the log of cluster `source` onto the cluster `cfg` reaches, up to `at`.
/// `restored`: when that cluster was started on a restored snapshot (its own
/// expiries come after); `None` when it holds nothing but replayed rows.
pub fn replay_onto(
    ctx: &Ctx,
    store: &dyn Store,
    trust: &manifest::Trust,
    cfg: &tblog::ClusterConfig,
    source: u128,
    at: OffsetDateTime,
    restored: Option<OffsetDateTime>,
) -> Result<Replayed> {
    let fresh = restored.is_none();
    let started = restored.unwrap_or(at);
    let at_ns = u64::try_from(at.unix_timestamp_nanos()).context("--at is before 1970")?;
    let started_ns = u64::try_from(started.unix_timestamp_nanos()).unwrap_or(0);
    let own_from = started_ns.min(at_ns) + 1;
    if !fresh {
        settle_expiries(cfg, own_from)?;
    }
    // Rows only: the replica's own expiries are not the snapshot's.
    let rows_until = tblog::newest_row_timestamp(cfg)?;
    if rows_until > at_ns {
        return Err(coded(Code::NotFound, format!("the cluster being restored already holds rows newer than --at ({rows_until} > {at_ns}): restore from an older snapshot, or into a fresh cluster")));
    }
    // The log continues the file after its newest row or a later expiry of the
    // source it holds (the segment that captured that expiry may end there).
    let newest = if fresh {
        rows_until
    } else {
        tblog::newest_before(cfg, own_from)?
    };

    // The segments covering (newest, at], which must meet without a gap.
    // Only this cluster's chain (the cluster the private replica runs as).
    let chain_of = |(all, unreadable): (Vec<manifest::Manifest>, Vec<manifest::Unreadable>)| {
        let all: Vec<_> = all
            .into_iter()
            .filter(|m| m.operation != LOGS || is_log_of(m, source))
            .collect();
        (all, unreadable)
    };
    let (mut all, mut unreadable) =
        chain_of(manifest::list(store, trust, Some(Kind::Tigerbeetle))?);
    // A gap or a short log may be the catalog's (a segment stored behind its
    // back): every manifest key is listed before the restore says so.
    if !chain::log_cover(&all, newest, at_ns).is_ok_and(|(_, reached)| reached >= at_ns) {
        (all, unreadable) = chain_of(manifest::list_complete(
            store,
            trust,
            Some(Kind::Tigerbeetle),
        )?);
    }
    let (logs, reached) = chain::log_cover(&all, newest, at_ns).map_err(|h| {
        coded(
            Code::Integrity,
            format!("the log has a gap before segment {}: nothing covers ({}, {}]; the restore cannot reach {at} — restore to an earlier time or from a later snapshot", h.next, h.reached, h.after),
        )
    })?;
    if reached < at_ns {
        // A segment that could not be read may be the one that continues the
        // chain: never end early in silence.
        let bad: Vec<_> = unreadable.iter().collect();
        if !bad.is_empty() {
            return Err(manifest::unreadable_error(
                &format!("the log reaches only timestamp {reached}, short of --at {at}"),
                &bad,
            ));
        }
        let current_at = all
            .iter()
            .filter(|m| m.operation == LOGS && interval(m).is_some_and(|(_, u)| u >= reached))
            .map(|m| m.started_at)
            .max();
        if current_at.is_none_or(|t| t < at) {
            ctx.ui.warn(&format!("the log reaches only timestamp {reached} (the newest log run was before {at}); restoring up to there"));
        }
    }

    let mut out = Replayed {
        snapshot_until: newest,
        at: at_ns,
        ..Default::default()
    };
    let spool = WorkDir::new(&ctx.plan.work_dir).scratch("spool")?;
    let mut by_target = std::collections::HashSet::new();
    for m in &logs {
        // The catalog chose the segments; each is used as its own manifest says.
        let m = &manifest::catalog::reread(store, trust, m)?;
        let entry = &m.objects[0];
        pipeline::download(
            store,
            entry,
            m.compression,
            pipeline::keys_for(m, trust.keys())?,
            spool.path(),
            ctx.progress(),
            |r| {
                let reader = tblog::SegmentReader::new(r)?;
                let stats = tblog::replay(cfg, std::iter::once(Ok(reader)), at_ns)?;
                out.accounts += stats.accounts;
                out.transfers += stats.transfers;
                out.expiries += stats.expiries;
                by_target.extend(stats.expiries_by_target.iter().copied());
                out.last_timestamp = out.last_timestamp.max(stats.last_timestamp);
                Ok(())
            },
        )
        .with_context(|| format!("failed to replay log segment {} ({})", m.id, entry.key))?;
        out.segments += 1;
    }
    if !fresh {
        // The replica's own expiries carry its clock's timestamps: after it started.
        let own = tblog::expiries(cfg, own_from, 0)?;
        out.expired_early = own
            .iter()
            .filter(|x| !by_target.contains(&x.pending_id))
            .map(|x| format!("{:#x}", x.pending_id))
            .collect();
    }
    Ok(out)
}

/// Waits until the private replica has expired what its clock says is due: it does so
/// on its pulse (every few hundred milliseconds, a bounded number per pulse), so the
/// count of its own expiries since `from` must hold still for a second (at most 30 s
/// in all). Replay then meets released amounts, not amounts about to be released.
fn settle_expiries(cfg: &tblog::ClusterConfig, from: u64) -> Result<()> {
    const STILL: std::time::Duration = std::time::Duration::from_secs(1);
    const LIMIT: std::time::Duration = std::time::Duration::from_secs(30);
    let begin = std::time::Instant::now();
    let mut seen = tblog::expiries(cfg, from, 0)?.len();
    let mut since = std::time::Instant::now();
    while since.elapsed() < STILL && begin.elapsed() < LIMIT {
        std::thread::sleep(std::time::Duration::from_millis(200));
        let now = tblog::expiries(cfg, from, 0)?.len();
        if now != seen {
            seen = now;
            since = std::time::Instant::now();
        }
    }
    Ok(())
}
