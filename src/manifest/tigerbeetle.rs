//! The manifests of TigerBeetle backups, read as what they are: a snapshot (a copy
//! of the data file) or a log segment with its interval of cluster timestamps.

use super::Manifest;
use crate::tigerbeetle::tblog::Watermark;

/// The operation of a data-file snapshot.
pub const SNAPSHOT: &str = "snapshot";
/// The operation of a log segment (`bkp logs`).
pub const LOGS: &str = "logs";

/// The chain position a log manifest records, `(after, until]`, as strings in
/// `source` (TigerBeetle timestamps exceed the integers many JSON readers keep
/// exactly). `None` for anything but a readable log manifest.
pub fn interval(m: &Manifest) -> Option<(u64, u64)> {
    if m.operation != LOGS {
        return None;
    }
    let get = |k: &str| m.source.get(k)?.as_str()?.parse::<u64>().ok();
    Some((get("after")?, get("until")?))
}

/// Where a log manifest leaves its chain: `until`, and the newest account and
/// transfer captured (`source.accounts_until`, `source.transfers_until`; `until`
/// itself where a manifest does not record them, or records one above it, which
/// no bkp writes: that kind is then read again from `until`, capturing more,
/// never less). `None` for anything but a readable log manifest.
pub fn watermark(m: &Manifest) -> Option<Watermark> {
    let (_, until) = interval(m)?;
    let get = |k: &str| match m.source.get(k) {
        None => Some(until),
        Some(v) => v.as_str()?.parse::<u64>().ok().map(|n| n.min(until)),
    };
    Some(Watermark {
        after: until,
        accounts: get(ACCOUNTS_UNTIL)?,
        transfers: get(TRANSFERS_UNTIL)?,
    })
}

/// Records `w` in a log manifest's `source`, as [`watermark`] reads it: `until`,
/// and a kind's mark only where it lies below `until`. At least one kind's
/// nearly always does (the newest row is of the other kind, or an expiry), so
/// most manifests record one or both.
pub fn insert_watermark(source: &mut super::facts::Facts, w: &Watermark) {
    source.insert("until", serde_json::json!(w.after.to_string()));
    for (key, mark) in [(ACCOUNTS_UNTIL, w.accounts), (TRANSFERS_UNTIL, w.transfers)] {
        if mark != w.after {
            source.insert(key, serde_json::json!(mark.to_string()));
        }
    }
}

const ACCOUNTS_UNTIL: &str = "accounts_until";
const TRANSFERS_UNTIL: &str = "transfers_until";

/// The cluster a log segment was captured from (`source.cluster_id`, a decimal
/// string). Log chains are per cluster: two clusters sharing a store never
/// continue each other's chain.
pub fn cluster_id(m: &Manifest) -> Option<u128> {
    match m.source.get("cluster_id")? {
        serde_json::Value::String(s) => s.parse().ok(),
        v => v.as_u64().map(u128::from),
    }
}

/// Whether `m` is a log segment (of any cluster).
pub fn is_log(m: &Manifest) -> bool {
    m.operation == LOGS
}

/// Whether `m` is a log segment of `cluster` (a segment that names no cluster
/// belongs to every one, as older releases wrote them).
pub fn is_log_of(m: &Manifest, cluster: u128) -> bool {
    m.operation == LOGS && cluster_id(m).is_none_or(|c| c == cluster)
}

/// The newest TigerBeetle timestamp a snapshot holds, when its rows were counted
/// (`tigerbeetle.count_rows`).
pub fn snapshot_newest(m: &Manifest) -> Option<u64> {
    if m.operation != SNAPSHOT {
        return None;
    }
    m.source.get("newest_timestamp").and_then(|v| v.as_u64())
}

/// Whether a snapshot's file was stored with torn writes (`source.torn_writes`:
/// copied from a replica stopped mid-write, rejected by `tigerbeetle inspect
/// integrity` as stored, accepted once a replica had opened a copy of it).
pub fn torn_writes(m: &Manifest) -> bool {
    m.source.get("torn_writes").is_some_and(|v| v.is_string())
}

/// Whether the snapshot's file passed `tigerbeetle inspect integrity` before it
/// was stored (`source.integrity_checked`).
pub fn integrity_checked(m: &Manifest) -> bool {
    m.source.get("integrity_checked") == Some(&serde_json::Value::Bool(true))
}

/// The number of replicas whose data files a snapshot holds
/// (`source.replica_count`): a base built from the log holds one file per
/// replica of its cluster; a snapshot of a replica's data file is 1.
pub fn replica_count(m: &Manifest) -> u8 {
    m.source
        .get("replica_count")
        .and_then(|v| v.as_u64())
        .and_then(|n| u8::try_from(n).ok())
        .unwrap_or(1)
}

/// Whether `m` is a base built from its cluster's log (`bkp snapshot
/// --from-log`): every row in it was replayed from the log, so it holds
/// exactly the source's state at its newest timestamp.
pub fn is_base(m: &Manifest) -> bool {
    m.operation == SNAPSHOT && m.source.get("from_log").and_then(|v| v.as_bool()) == Some(true)
}

/// A base's newest timestamp: it restores any instant from there on, with
/// the log after it.
pub fn base_newest(m: &Manifest) -> Option<u64> {
    if !is_base(m) {
        return None;
    }
    m.source.get("newest_timestamp").and_then(|v| v.as_u64())
}
