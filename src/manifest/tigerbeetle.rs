//! The manifests of TigerBeetle backups, read as what they are: a snapshot (a copy
//! of the data file) or a log segment with its interval of cluster timestamps.

use super::Manifest;

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

/// The newest TigerBeetle timestamp a snapshot holds, when its rows were counted
/// (`tigerbeetle.count_rows`).
pub fn snapshot_newest(m: &Manifest) -> Option<u64> {
    if m.operation != SNAPSHOT {
        return None;
    }
    m.source.get("newest_timestamp").and_then(|v| v.as_u64())
}
