//! Restores that meet objects in an archive storage class (S3 Glacier
//! Flexible Retrieval or Deep Archive, by `store.storage_class` or a
//! lifecycle rule's transition): such an object cannot be read until a
//! restored copy of it is requested and made, which takes minutes to two
//! days by retrieval tier.
//!
//! `--request-restore` asks, before anything is read, for every archived
//! object the restore needs, and stops (exit 14) until all are readable; the
//! same command run again then restores. `--dry-run` lists them. A restore
//! run without either that meets one stops at it, and its error names
//! every archived object it needs and the command that asks for them.

use std::sync::Mutex;

use anyhow::Result;

use super::RestorePlan;
use crate::commands::Ctx;
use crate::exit::{coded, Code};
use crate::manifest::{self, Kind, Trust};
use crate::store::{Archived, RetrievalTier, Store};

/// What `--request-restore[=DAYS[,TIER]]` asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Request {
    /// How long the restored copies stay readable.
    pub days: u32,
    pub tier: RetrievalTier,
}

/// `DAYS`, `DAYS,TIER` or `TIER` (`expedited`, `standard`, `bulk`); the
/// defaults are 7 days and the standard tier.
pub fn parse(text: &str) -> Result<Request> {
    let mut out = Request {
        days: 7,
        tier: RetrievalTier::Standard,
    };
    for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        if let Ok(days) = part.parse::<u32>() {
            if !(1..=30).contains(&days) {
                return Err(bad(text, "the days must be 1 to 30"));
            }
            out.days = days;
            continue;
        }
        out.tier = match part.to_ascii_lowercase().as_str() {
            "expedited" => RetrievalTier::Expedited,
            "standard" => RetrievalTier::Standard,
            "bulk" => RetrievalTier::Bulk,
            _ => return Err(bad(text, "the tier is expedited, standard or bulk")),
        };
    }
    Ok(out)
}

fn bad(text: &str, why: &str) -> anyhow::Error {
    coded(
        Code::Config,
        format!("--request-restore={text}: {why} (e.g. --request-restore=7,bulk)"),
    )
}

/// The objects restore `rp` reads: each backup's objects and those of
/// earlier backups it uses, its chunk list and chunks, a replication's whole
/// set, and for PostgreSQL the archived WAL recovery fetches.
pub fn needed(
    ctx: &Ctx,
    store: &dyn Store,
    trust: &Trust,
    rp: &RestorePlan,
) -> Result<Vec<String>> {
    let mut keys = Vec::new();
    for m in super::read_by(&ctx.plan, store, trust, rp)? {
        keys.extend(m.needed_keys());
        match crate::chunks::load(store, &m) {
            Ok(Some(map)) => keys.extend(map.keys(m.kind).map(|(k, _)| k)),
            Ok(None) => {}
            // A chunk list moved by a lifecycle rule: it is asked for first
            // (it is among `needed_keys`), its chunks once it can be read.
            Err(e) if crate::exit::classify(&e) == Some(Code::Archived) => {}
            Err(e) => return Err(e),
        }
        if m.kind == Kind::Parquet {
            let set = crate::replicate::record::ReplicaSet::from_manifest(&m)?;
            keys.extend(set.set.into_iter().map(|f| f.object));
        }
        // WAL: only a point-in-time recovery replays the archive (a base
        // restored as it is holds the WAL it needs).
        let wal_start = manifest::postgres::wal_start(&m).filter(|_| rp.at.is_some());
        if let Some((system, start, _)) = wal_start {
            let all = manifest::wal::archive::archived(store, system)?;
            let until = rp.at.unwrap_or_else(time::OffsetDateTime::now_utc)
                + std::time::Duration::from_secs(15 * 60);
            let wal = super::pgpitr::to_fetch(&all, start.position, until);
            keys.extend(wal.into_iter().map(|s| s.key));
        }
    }
    keys.sort();
    keys.dedup();
    Ok(keys)
}

/// Which of `keys` are archived, asked `store.parallelism()` at a time.
pub fn find(store: &dyn Store, keys: &[String]) -> Result<Vec<(String, Archived)>> {
    let found = Mutex::new(Vec::new());
    each(store, keys, |key| {
        match store.archived(key) {
            Ok(Some(a)) => found.lock().unwrap().push((key.clone(), a)),
            Ok(None) => {}
            // Missing: the restore reports it as it reports any.
            Err(e) if crate::exit::classify(&e) == Some(Code::NotFound) => {}
            Err(e) => return Err(e),
        }
        Ok(())
    })?;
    let mut found = found.into_inner().unwrap();
    found.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(found)
}

/// `--request-restore`: asks for every archived object restore `rp` needs,
/// and stops (exit 14) while any of them is not readable yet. Nothing
/// archived: the restore goes on.
pub fn request(
    ctx: &Ctx,
    store: &dyn Store,
    trust: &Trust,
    rp: &RestorePlan,
    req: Request,
) -> Result<()> {
    let keys = needed(ctx, store, trust, rp)?;
    let archived = find(store, &keys)?;
    if archived.is_empty() {
        ctx.ui.info(&format!(
            "every one of the {} objects this restore reads is readable",
            keys.len()
        ));
        return Ok(());
    }
    let deep = |a: &Archived| a.class == "DEEP_ARCHIVE" || a.class == "INTELLIGENT_TIERING";
    if req.tier == RetrievalTier::Expedited && archived.iter().any(|(_, a)| deep(a)) {
        return Err(coded(
            Code::Config,
            format!(
                "--request-restore: {} of the archived objects are in Deep Archive (or an Intelligent-Tiering archive tier), which has no expedited retrieval: ask with standard (within 12 hours) or bulk (within 48); nothing was requested",
                archived.iter().filter(|(_, a)| deep(a)).count()
            ),
        ));
    }
    let wanted: Vec<&(String, Archived)> = archived.iter().filter(|(_, a)| !a.restoring).collect();
    each(store, &wanted, |(key, a)| {
        store.request_restore(key, a, req.days, req.tier)
    })?;
    let what = match &rp.backup {
        Some(m) => format!("{} {} {}", m.kind.as_str(), m.operation, m.id),
        None => "the log".to_string(),
    };
    Err(coded(
        Code::Archived,
        format!(
            "{} of the {} objects this restore of {what} reads are archived ({}) in {}: restores requested now for {} ({} tier, readable for {} days), {} already under way. Run this command again once they are readable (name {what} rather than `latest` if newer backups may arrive meanwhile): {}",
            archived.len(),
            keys.len(),
            classes(&archived),
            store.identity(),
            wanted.len(),
            req.tier.as_str(),
            req.days,
            archived.len() - wanted.len(),
            wait(req.tier)
        ),
    ))
}

/// Runs `f` on every item, `store.parallelism()` at a time; the first error.
fn each<T: Sync>(
    store: &dyn Store,
    items: &[T],
    f: impl Fn(&T) -> Result<()> + Sync,
) -> Result<()> {
    let next = Mutex::new(items.iter());
    let failed = Mutex::new(None);
    std::thread::scope(|s| {
        for _ in 0..store.parallelism().clamp(1, 16) {
            s.spawn(|| loop {
                let Some(item) = next.lock().ok().and_then(|mut n| n.next()) else {
                    return;
                };
                if let Err(e) = f(item) {
                    failed.lock().unwrap().get_or_insert(e);
                    return;
                }
            });
        }
    });
    match failed.into_inner().unwrap() {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// The error for a restore that met an archived object (`met`): every
/// archived object it needs, found again, and the command that asks for them.
pub fn explain(
    ctx: &Ctx,
    store: &dyn Store,
    trust: &Trust,
    rp: &RestorePlan,
    met: anyhow::Error,
) -> anyhow::Error {
    let found =
        needed(ctx, store, trust, rp).and_then(|keys| Ok((keys.len(), find(store, &keys)?)));
    let Ok((total, archived)) = found else {
        return met;
    };
    let restoring = archived.iter().filter(|(_, a)| a.restoring).count();
    coded(
        Code::Archived,
        format!(
            "{met:#}. Of the {total} objects this restore reads, {} are archived ({}), {restoring} of them being restored already: run it again with --request-restore[=DAYS,TIER] to ask for them all, then once more when they are readable",
            archived.len(),
            classes(&archived)
        ),
    )
}

/// The classes of `archived`, with how many objects each.
pub fn classes(archived: &[(String, Archived)]) -> String {
    let mut by: std::collections::BTreeMap<&str, usize> = Default::default();
    for (_, a) in archived {
        *by.entry(a.class.as_str()).or_default() += 1;
    }
    by.iter()
        .map(|(c, n)| format!("{n} {c}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// How long a restore at `tier` takes (S3's figures).
fn wait(tier: RetrievalTier) -> &'static str {
    match tier {
        RetrievalTier::Expedited => {
            "1–5 minutes (Glacier Flexible Retrieval; Deep Archive has no expedited tier)"
        }
        RetrievalTier::Standard => {
            "3–5 hours (Glacier Flexible Retrieval), within 12 hours (Deep Archive)"
        }
        RetrievalTier::Bulk => {
            "5–12 hours (Glacier Flexible Retrieval), within 48 hours (Deep Archive)"
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_request_names_days_and_a_tier() {
        let r = |t: &str| parse(t).map_err(|e| format!("{e:#}"));
        assert_eq!(
            r("").unwrap(),
            Request {
                days: 7,
                tier: RetrievalTier::Standard
            }
        );
        assert_eq!(
            r("3,bulk").unwrap(),
            Request {
                days: 3,
                tier: RetrievalTier::Bulk
            }
        );
        assert_eq!(r("Expedited").unwrap().tier, RetrievalTier::Expedited);
        assert!(r("0").unwrap_err().contains("1 to 30"));
        assert!(r("7,slow")
            .unwrap_err()
            .contains("expedited, standard or bulk"));
    }
}
