//! Point-in-time recovery of TigerBeetle: replay the log segments after a restored
//! snapshot (or from the very beginning into a fresh data file) up to a moment.
//!
//! A private replica ([`crate::tigerbeetle::replica`]) is started on the restored
//! data file, its newest timestamp tells where the snapshot ends, and the segments
//! covering `(newest, at]` are verified, decrypted and replayed with the `imported`
//! flag and their original timestamps, all through one client session (each new
//! session costs TigerBeetle's client about 0.6 s before its first answer, which
//! per segment would make a long log slow to restore).
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

use super::Source;
use crate::chain;
use crate::config::Plan;
use crate::exit::{coded, Code};
use crate::manifest::tigerbeetle::{interval, is_log_of, LOGS};
use crate::manifest::{self, Kind};
use crate::pipeline;
use crate::tigerbeetle::client::Client;
use crate::tigerbeetle::replica::{self, ReplicaSpec};
use crate::tigerbeetle::tblog;
use crate::units::count;
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
    /// The restored state's newest row was found in the log, with the same
    /// fields (see `ReplayStats::newest_row_in_log`).
    pub newest_row_in_log: bool,
    /// Requests that created rows, and the seconds the replay took from its
    /// first segment read to its last check (what a faster replay shortens).
    pub batches: u64,
    pub seconds: f64,
    /// Of `seconds`, those during which a create request was at the cluster
    /// (the rest is bkp's own work that did not overlap one).
    pub in_flight_seconds: f64,
    /// Of `seconds`, those spent after the last answer making sure the target
    /// holds only the replayed rows.
    pub checked_seconds: f64,
}

impl Replayed {
    /// One line for the operator.
    pub fn summary(&self) -> String {
        format!(
            "replayed {} after timestamp {}: {} and {}, up to {}",
            count(self.segments as u64, "log segment"),
            self.snapshot_until,
            count(self.accounts, "account"),
            count(self.transfers, "transfer"),
            self.last_timestamp
        )
    }
}

/// The private replica of the configured `tigerbeetle` binary, logging to the
/// work directory's replica log; `why` names the caller in errors.
pub fn replica_spec(plan: &Plan, why: &str) -> Result<ReplicaSpec> {
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

/// What an error that finds the log short of a replay's start adds when the
/// replay starts from nothing: `what` (e.g. "a cluster of 3 replicas") is
/// replayed from the log alone, and why that needs the chain's first segment.
pub fn from_the_log_alone(what: &str) -> String {
    format!(
        "{what} is replayed from the log alone, which must reach back to the cluster's first \
         segment (keep it: [retention.logs])"
    )
}

/// Replays the log onto `data_file` (formatting it first when `fresh`) up to `at`.
/// `alone`: why a fresh file is replayed from the log alone, added to an error
/// that finds the log does not reach back (see [`from_the_log_alone`]).
pub fn replay_logs(
    src: &Source,
    plan: &Plan,
    data_file: &Path,
    at: OffsetDateTime,
    fresh: bool,
    alone: Option<&str>,
) -> Result<Replayed> {
    let spec = replica_spec(plan, "point-in-time restore")?;
    let started = OffsetDateTime::now_utc();
    let (replica, cfg) = replica::start(&spec, data_file, fresh)?;
    let out = replay_onto(
        src,
        &cfg,
        cfg.cluster_id,
        at,
        (!fresh).then_some(started),
        alone,
    )?;
    drop(replica);
    Ok(out)
}

/// Replays the log of cluster `source` from the beginning up to `at` into a
/// private cluster of `files.len()` fresh replicas (one data file per path,
/// formatted here), then stops it: one data file per replica of a whole cluster.
/// The log must cover everything from the cluster's first segment: that is
/// checked before any replica is formatted, and an error that finds it short
/// says `alone`.
pub fn replay_into_cluster(
    src: &Source,
    plan: &Plan,
    files: &[std::path::PathBuf],
    source: u128,
    at: OffsetDateTime,
    alone: &str,
) -> Result<Replayed> {
    let spec = replica_spec(plan, "point-in-time restore")?;
    let at_ns = timestamp(at)?;
    let logs = cover(src, source, 0, at, Some(alone))?;
    let (cluster, cfg) = replica::start_cluster(&spec, files)?;
    let c = tblog::connect(&cfg)?;
    let replay = tblog::Replay::start(&c, at_ns)?;
    let mut out = Replayed {
        at: at_ns,
        ..Default::default()
    };
    replay_segments(src, replay, &logs, &mut out, Some(alone))?;
    c.close();
    drop(cluster);
    Ok(out)
}

/// Starts a private cluster on `files`, the data files of base `base` of
/// cluster `source` just unpacked (replica `i` at `files[i]`), replays the log
/// after the base up to `at` onto it, then stops it. The base's newest row must
/// be in the log with the same fields ([`Replayed::newest_row_in_log`]): a base
/// holding a row the log does not, or one whose log was trimmed past it, is
/// refused, and nothing is delivered from it.
pub fn replay_onto_base(
    src: &Source,
    plan: &Plan,
    files: &[std::path::PathBuf],
    source: u128,
    at: OffsetDateTime,
    base: &manifest::Manifest,
) -> Result<Replayed> {
    let spec = replica_spec(plan, "point-in-time restore")?;
    let (cluster, cfg) = replica::start_cluster_on(&spec, files)?;
    let out = replay_onto(src, &cfg, source, at, None, None)?;
    if out.snapshot_until > 0 && !out.newest_row_in_log {
        return Err(coded(
            Code::Integrity,
            format!(
                "base {}: the log no longer holds the segment with its newest row (timestamp {}), so nothing proves the base is the cluster's state; nothing is delivered from it. Restore from a newer base, or keep the log back to the oldest base ([retention.logs])",
                base.id, out.snapshot_until
            ),
        ));
    }
    drop(cluster);
    Ok(out)
}

/// Replays the log of cluster `source` onto the cluster `cfg` reaches, up to `at`,
/// through one session. `restored`: when that cluster was started on a restored
/// snapshot (its own expiries come after); `None` when it holds nothing but
/// replayed rows. `alone`: as for [`replay_logs`].
pub fn replay_onto(
    src: &Source,
    cfg: &tblog::ClusterConfig,
    source: u128,
    at: OffsetDateTime,
    restored: Option<OffsetDateTime>,
    alone: Option<&str>,
) -> Result<Replayed> {
    let fresh = restored.is_none();
    let started = restored.unwrap_or(at);
    let at_ns = timestamp(at)?;
    let started_ns = u64::try_from(started.unix_timestamp_nanos()).unwrap_or(0);
    let own_from = started_ns.min(at_ns) + 1;
    // A restored file's own expiries are read from its change events: open that
    // session too, at once, so that both registrations overlap.
    let c = if fresh {
        tblog::connect(cfg)?
    } else {
        tblog::session(cfg)?
    };
    // Rows only: the replica's own expiries are not the snapshot's. Nothing
    // writes rows to the target but the replay, which starts from these: read
    // them at once, and again once the replica's expiries settled, when no row
    // may have been added (the replay's end checks the rest).
    let target = tblog::newest_rows(&c)?;
    if !fresh {
        settle_expiries(&c, own_from)?;
        let now = tblog::newest_rows(&c)?;
        if now != target {
            return Err(coded(Code::Integrity, format!("the private replica running the restored snapshot got rows from another client before the replay began (its newest rows moved from {} to {}): it is not the snapshot's state; nothing is delivered from it. Restore again on a host where no other user runs programs", target.after, now.after)));
        }
    }
    let rows_until = target.after;
    if rows_until > at_ns {
        return Err(coded(Code::NotFound, format!("the cluster being restored already holds rows newer than --at ({rows_until} > {at_ns}): restore from an older snapshot, or into a fresh cluster")));
    }
    // The log continues the file after its newest row or a later expiry of the
    // source it holds (the segment that captured that expiry may end there).
    let newest = if fresh {
        rows_until
    } else {
        tblog::newest_before_on(&c, own_from)?
    };
    let logs = cover(src, source, newest, at, alone)?;
    let replay = tblog::Replay::with_newest(&c, target, at_ns)?;
    let mut out = Replayed {
        snapshot_until: newest,
        at: at_ns,
        ..Default::default()
    };
    let by_target = replay_segments(src, replay, &logs, &mut out, alone)?;
    if !fresh {
        // The replica's own expiries carry its clock's timestamps: after it started.
        let own = tblog::expiries_on(&c, own_from, 0)?;
        out.expired_early = own
            .iter()
            .filter(|x| !by_target.contains(&x.pending_id))
            .map(|x| format!("{:#x}", x.pending_id))
            .collect();
    }
    c.close();
    Ok(out)
}

/// `at` as a TigerBeetle timestamp (ns since 1970).
fn timestamp(at: OffsetDateTime) -> Result<u64> {
    u64::try_from(at.unix_timestamp_nanos()).context("--at is before 1970")
}

/// The log segments of cluster `source` covering `(from, at]`, which must meet
/// without a gap, each as its manifest says now (a gap, or a manifest that is
/// gone, is an error that says `alone`). A log that ends short of `at` is a
/// warning, or an error when an unreadable manifest may be the segment that
/// continues it.
fn cover(
    src: &Source,
    source: u128,
    from: u64,
    at: OffsetDateTime,
    alone: Option<&str>,
) -> Result<Vec<manifest::Manifest>> {
    let at_ns = timestamp(at)?;
    // Only this cluster's chain (the cluster the private replica runs as).
    let chain_of = |(all, unreadable): (Vec<manifest::Manifest>, Vec<manifest::Unreadable>)| {
        let all: Vec<_> = all
            .into_iter()
            .filter(|m| m.operation != LOGS || is_log_of(m, source))
            .collect();
        (all, unreadable)
    };
    let (mut all, mut unreadable) = chain_of(manifest::list(
        src.store,
        src.trust,
        Some(Kind::Tigerbeetle),
    )?);
    // A gap or a short log may be the catalog's (a segment stored behind its
    // back): every manifest key is listed before the restore says so.
    if !chain::log_cover(&all, from, at_ns).is_ok_and(|(_, reached)| reached >= at_ns) {
        (all, unreadable) = chain_of(manifest::list_complete(
            src.store,
            src.trust,
            Some(Kind::Tigerbeetle),
        )?);
    }
    let (logs, reached) = chain::log_cover(&all, from, at_ns).map_err(|h| {
        let e = coded(
            Code::Integrity,
            format!("the log has a gap before segment {}: nothing covers ({}, {}]; the restore cannot reach {at} — restore to an earlier time or from a later snapshot", h.next, h.reached, h.after),
        );
        with_why(e, alone)
    })?;
    if reached < at_ns {
        // A segment that could not be read may be the one that continues the
        // chain: never end early in silence.
        manifest::refuse_unreadable_within(&unreadable, None, None, || {
            format!("the log reaches only timestamp {reached}, short of --at {at}")
        })?;
        let current_at = all
            .iter()
            .filter(|m| m.operation == LOGS && interval(m).is_some_and(|(_, u)| u >= reached))
            .map(|m| m.started_at)
            .max();
        if current_at.is_none_or(|t| t < at) {
            src.ui.warn(&format!("the log reaches only timestamp {reached} (the newest log run was before {at}); restoring up to there"));
        }
    }
    // The catalog chose the segments; each is used as its own manifest says,
    // read now, so that one that is gone stops the restore before it starts.
    logs.into_iter()
        .map(|m| manifest::catalog::reread(src.store, src.trust, m).map_err(|e| if_gone(e, alone)))
        .collect()
}

/// `e` with `alone` on top when it says that something stored is gone.
fn if_gone(e: anyhow::Error, alone: Option<&str>) -> anyhow::Error {
    match crate::exit::classify(&e) {
        Some(Code::NotFound) => with_why(e, alone),
        _ => e,
    }
}

/// `e` with `alone` (why the log must reach back) on top, if given.
fn with_why(e: anyhow::Error, alone: Option<&str>) -> anyhow::Error {
    match alone {
        Some(why) => e.context(why.to_string()),
        None => e,
    }
}

/// Downloads, verifies and decrypts each of `logs` in turn and hands it to
/// `replay`, one session for them all; adds what was replayed to `out`. Returns
/// the expiries the target had applied by its own clock (their pending
/// transfers). A segment whose object is gone is an error that says `alone`.
fn replay_segments(
    src: &Source,
    mut replay: tblog::Replay<'_>,
    logs: &[manifest::Manifest],
    out: &mut Replayed,
    alone: Option<&str>,
) -> Result<std::collections::HashSet<u128>> {
    let clock = std::time::Instant::now();
    let spool = src.work.scratch("spool")?;
    for m in logs {
        if !replay.wants_more() {
            break;
        }
        let entry = &m.objects[0];
        pipeline::keys_for(m, src.trust.keys())
            .and_then(|keys| {
                // The replay sends rows to the cluster as it reads them.
                pipeline::download(
                    &pipeline::OwnCopy(src.store),
                    entry,
                    m.compression,
                    keys,
                    spool.path(),
                    src.progress.clone(),
                    |r| replay.segment(tblog::SegmentReader::new(r)?),
                )
            })
            .with_context(|| format!("failed to replay log segment {} ({})", m.id, entry.key))
            .map_err(|e| if_gone(e, alone))
            // The request still in flight was sent first: its failure is reported too.
            .map_err(|e| replay.first_error(e))?;
        out.segments += 1;
    }
    let stats = replay.finish()?;
    out.accounts += stats.accounts;
    out.transfers += stats.transfers;
    out.expiries += stats.expiries;
    out.newest_row_in_log |= stats.newest_row_in_log;
    out.last_timestamp = out.last_timestamp.max(stats.last_timestamp);
    out.batches += stats.batches;
    out.in_flight_seconds += stats.in_flight_seconds;
    out.checked_seconds += stats.checked_seconds;
    out.seconds += clock.elapsed().as_secs_f64();
    Ok(stats.expiries_by_target.into_iter().collect())
}

/// Waits until the private replica has expired what its clock says is due: it does so
/// on its pulse (every few hundred milliseconds, a bounded number per pulse), so the
/// count of its own expiries since `from` must hold still for a second (at most 30 s
/// in all). Replay then meets released amounts, not amounts about to be released.
fn settle_expiries(c: &Client, from: u64) -> Result<()> {
    const STILL: std::time::Duration = std::time::Duration::from_secs(1);
    const LIMIT: std::time::Duration = std::time::Duration::from_secs(30);
    let begin = std::time::Instant::now();
    let mut seen = tblog::expiries_on(c, from, 0)?.len();
    let mut since = std::time::Instant::now();
    while since.elapsed() < STILL && begin.elapsed() < LIMIT {
        std::thread::sleep(std::time::Duration::from_millis(200));
        let now = tblog::expiries_on(c, from, 0)?.len();
        if now != seen {
            seen = now;
            since = std::time::Instant::now();
        }
    }
    Ok(())
}
