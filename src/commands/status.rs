//! `bkp status`: per schedule, the newest good backup, its age, the next due time
//! and whether the RPO is breached; exit 11 if any watched schedule is breached or
//! never ran.
//!
//! It answers from the manifest listing: UUIDv7 ids make the keys
//! `manifests/{kind}/{id}.json` sort chronologically, so it lists a kind's keys and
//! reads manifests from the newest backwards only until every watched schedule of
//! that kind is found. With the shipped schedules that is a few dozen small reads
//! (the log segments since the last snapshot), however long the history. What
//! the store holds (bytes per kind and class), and what each copy lacks, take
//! one listing of every manifest (through the catalogs); a failure there is a
//! warning, and the verdicts stand.

use std::collections::BTreeMap;

use anyhow::Result;
use serde_json::json;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use super::{open_store, Ctx};
use crate::exit::{coded, Code};
use crate::manifest::{self, Kind, Unreadable};
use crate::schedule::{decide, Newest, Schedule, State, Verdict};
use crate::store::Store;
pub use crate::ui::human_duration;
use crate::{ui, units};

/// The environment variable that fixes "now" (RFC 3339), for tests.
pub const NOW_ENV: &str = "BKP_NOW";

/// What a scan of the manifests found.
#[derive(Debug, Default)]
pub struct Scan {
    pub newest: BTreeMap<Schedule, Newest>,
    /// Manifests of the watched kinds known (through the catalog).
    pub manifests: usize,
    /// Manifests that could not be read and may be newer than what was found.
    pub unreadable: Vec<Unreadable>,
    /// Kinds whose recorded head the store no longer shows (`manifest::head`).
    pub lost: Vec<anyhow::Error>,
    /// The newest backup listed of each kind, for the ledger's comparison.
    pub listed: Vec<(Kind, Option<manifest::Manifest>)>,
    /// What each kind read holds, for what the store holds.
    pub read: Vec<(Kind, Held)>,
}

/// What a kind's manifests hold, counted as they were read; the manifests
/// themselves only where copies are compared with them.
#[derive(Debug, Default)]
pub struct Held {
    pub tally: manifest::usage::Tally,
    pub all: Option<Vec<manifest::Manifest>>,
}

/// One kind as [`newest_backups`] reads it.
#[derive(Default)]
struct Seen {
    count: usize,
    newest: Option<manifest::Manifest>,
    /// The newest of each schedule watched, in their order.
    per: Vec<Option<manifest::Manifest>>,
    held: Held,
}

/// The manifests of `kind`, folded (see [`manifest::gather`]): the newest,
/// the newest of each of `wanted` that is `mine`, what they hold, and all of
/// them when `keep`. Those that could not be read.
fn fold_kind(
    store: &dyn Store,
    trust: &manifest::Trust,
    kind: Kind,
    wanted: &[Schedule],
    mine: &dyn Fn(&manifest::Manifest) -> bool,
    keep: bool,
) -> Result<(Seen, Vec<Unreadable>)> {
    let fresh = || Seen {
        per: vec![None; wanted.len()],
        held: Held {
            all: keep.then(Vec::new),
            ..Held::default()
        },
        ..Seen::default()
    };
    let newer = manifest::is_newer;
    let mut seen = fresh();
    let unreadable = manifest::catalog::fold(
        store,
        trust,
        kind,
        manifest::catalog::Depth::Recent,
        &mut |m| {
            let Some(m) = m else {
                seen = fresh();
                return;
            };
            seen.count += 1;
            seen.held.tally.add(&m);
            for (s, slot) in wanted.iter().zip(seen.per.iter_mut()) {
                if s.matches(&m) && mine(&m) && newer(&m, slot) {
                    *slot = Some(m.clone());
                }
            }
            if newer(&m, &seen.newest) {
                seen.newest = Some(m.clone());
            }
            if let Some(all) = &mut seen.held.all {
                all.push(m);
            }
        },
    )?;
    Ok((seen, unreadable))
}

/// Finds the newest good backup of each of `schedules` that is `mine` (of
/// this config's source: see [`of_this_source`]), through the catalog (see
/// `manifest/catalog.rs`): a few requests per kind however long the history
/// is.
/// Every manifest is kept (in `read`) only when `keep`.
pub fn newest_backups(
    store: &dyn Store,
    trust: &manifest::Trust,
    schedules: &[Schedule],
    mine: &dyn Fn(&manifest::Manifest) -> bool,
    keep: bool,
) -> Result<Scan> {
    let mut scan = Scan::default();
    let mut kinds: Vec<Kind> = schedules.iter().map(|s| s.kind()).collect();
    kinds.sort();
    kinds.dedup();
    for kind in kinds {
        let wanted: Vec<Schedule> = schedules
            .iter()
            .copied()
            .filter(|s| s.kind() == kind)
            .collect();
        let (seen, unreadable) = fold_kind(store, trust, kind, &wanted, mine, keep)?;
        scan.lost.extend(manifest::head::lost(
            store,
            trust,
            kind,
            seen.newest.as_ref(),
        )?);
        scan.listed.push((kind, seen.newest));
        scan.manifests += seen.count + unreadable.len();
        let mut oldest_found: Option<OffsetDateTime> = None;
        for (s, m) in wanted.iter().zip(&seen.per) {
            if let Some(m) = m {
                scan.newest.insert(
                    *s,
                    Newest {
                        id: m.id,
                        finished_at: m.finished_at,
                    },
                );
                oldest_found = Some(oldest_found.map_or(m.started_at, |t| t.min(m.started_at)));
            }
        }
        // Damage older than every schedule's newest backup changes no verdict.
        let all_found = wanted.iter().all(|s| scan.newest.contains_key(s));
        scan.unreadable.extend(
            unreadable
                .into_iter()
                .filter(|u| !all_found || u.may_be_within(oldest_found, None)),
        );
        scan.read.push((kind, seen.held));
    }
    Ok(scan)
}

/// Whether `m` is a backup of the source this config describes, as far as
/// its manifest tells (see [`crate::config::Plan::own_source`]): a
/// TigerBeetle backup of another cluster than `[tigerbeetle] cluster_id`
/// (when the config names the cluster) is not. Clusters sharing a store
/// each watch their own backups: one cluster's timer that stopped is not
/// hidden by another's that runs. The source is read as retention reads it
/// ([`crate::retention::source_of`]: `"01"` is cluster 1); a manifest that
/// names none (an older release's, or of a file that is no TigerBeetle data
/// file) counts for every cluster.
pub fn of_this_source(plan: &crate::config::Plan, m: &manifest::Manifest) -> bool {
    let crate::kinds::SourceIs::Fact { label, .. } = m.kind.describe().source_is else {
        return true;
    };
    let Some(own) = plan.own_source(m.kind) else {
        return true;
    };
    let source = crate::retention::source_of(m);
    source.is_empty() || source == format!("{label} {own}")
}

/// " of cluster N" for a schedule [`of_this_source`] judges by its source.
fn whose(plan: &crate::config::Plan, s: Schedule) -> String {
    match (s.kind().describe().source_is, plan.own_source(s.kind())) {
        (crate::kinds::SourceIs::Fact { label, .. }, Some(own)) => format!(" of {label} {own}"),
        _ => String::new(),
    }
}

/// "Now", or the time `BKP_NOW` fixes.
pub fn now() -> Result<OffsetDateTime> {
    match std::env::var(NOW_ENV) {
        Ok(v) if !v.is_empty() => OffsetDateTime::parse(&v, &Rfc3339).map_err(|e| {
            coded(
                Code::Config,
                format!(
                    "{NOW_ENV}={v:?} is not an RFC 3339 time ({e}); unset it (it exists for tests)"
                ),
            )
        }),
        _ => Ok(OffsetDateTime::now_utc()),
    }
}

pub fn run(ctx: &Ctx) -> Result<()> {
    let schedules = ctx.plan.watched_schedules();
    if schedules.is_empty() {
        return Err(coded(
            Code::Config,
            format!(
                "{}: nothing to watch: no [tigerbeetle] data_file or addresses, and freshness.watch is empty",
                ctx.plan.source.display()
            ),
        ));
    }
    let now = now()?;
    let store = open_store(&ctx.plan)?;
    // A backup counts only if its manifest is proven (see `manifest/seal.rs`).
    let trust = super::trust(&ctx.plan, Vec::new())?;
    let scan = scan_whole(ctx, store.as_ref(), &trust, &schedules)?;
    let junk = warn_unreadable(ctx, &scan.unreadable);
    let verdicts: Vec<Verdict> = schedules
        .iter()
        .map(|s| {
            decide(
                ctx.plan.freshness.rule(*s),
                scan.newest.get(s).copied(),
                now,
            )
        })
        .collect();
    ctx.ui
        .detail(&format!("{} manifests known", scan.manifests));

    // The WAL archive, when a PostgreSQL server is configured: its newest file
    // and its gaps (a gap is a point no recovery can pass).
    let archives = if ctx.plan.postgres.is_some() {
        // Gaps count from the oldest base backup on: its manifests are few.
        let (bases, _) = manifest::list(store.as_ref(), &trust, Some(Kind::Postgres))?;
        crate::manifest::wal::archive::archives(store.as_ref(), &bases, true)?
    } else {
        Vec::new()
    };
    for a in &archives {
        for (tli, after, before) in a.summary.gaps() {
            ctx.ui.warn(&format!(
                "WAL archive of system {}: timeline {tli} has a gap after {after} up to {before}; `bkp verify` checks it",
                a.system
            ));
        }
    }
    let wal_alarms = wal_alarms(ctx, &archives, now);
    // A replica a killed snapshot left stopped, which the start command (run
    // by `recover_stop_window` before this) could not bring back.
    let work = crate::workdir::WorkDir::new(&ctx.plan.work_dir);
    let stopped = crate::sources::stop_window::left_behind(&work).unwrap_or_else(|e| {
        ctx.ui.warn(&format!("{e:#}"));
        None
    });
    let (stored, stored_line, copies) = holdings(ctx, store.as_ref(), &trust, now, scan.read)?;
    if ctx.ui.json {
        let rows: Vec<_> = verdicts
            .iter()
            .map(|v| {
                let s = v.rule.schedule;
                json!({
                    "schedule": s.as_str(),
                    "kind": s.kind().as_str(),
                    "operation": s.operation(),
                    "scope": s.scope().map(|x| x.as_str()),
                    "command": s.command(),
                    "newest": v.newest.map(|n| json!({
                        "id": n.id,
                        "finished_at": units::rfc3339(n.finished_at),
                    })),
                    "age_seconds": v.age.map(|a| a.as_secs()),
                    "next_due": units::rfc3339(v.next_due),
                    "rpo_seconds": v.rule.rpo.as_secs(),
                    "grace_seconds": v.rule.grace.as_secs(),
                    "every_seconds": v.rule.every.as_secs(),
                    "state": v.state,
                    "breached": v.state.is_alarm(),
                })
            })
            .collect();
        ui::document(json!({
            "schema": "bkp.status/1",
            "now": units::rfc3339(now),
            "store": store.identity(),
            "ok": verdicts.iter().all(|v| !v.state.is_alarm()) && wal_alarms.is_empty() && stopped.is_none() && junk == 0 && copies.iter().all(|c| c.alarm.is_none()),
            "replica_stopped": stopped.as_ref().map(|s| json!({
                "data_file": s.data_file,
                "pid": s.pid,
                "since": s.since,
            })),
            "wal_alarms": wal_alarms,
            "schedules": rows,
            "manifests": scan.manifests,
            "unreadable": scan.unreadable.iter().map(|u| &u.key).collect::<Vec<_>>(),
            "wal": archives.iter().map(|a| a.json()).collect::<Vec<_>>(),
            "copies": copies.iter().map(|c| &c.json).collect::<Vec<_>>(),
            "stored": stored,
        }))?;
    } else {
        print_table(&verdicts, now)?;
        let lines = std::iter::once(stored_line).chain(archives.iter().map(|a| a.describe(now)));
        for line in lines.chain(copies.iter().map(|c| c.line.clone())) {
            ui::out(&line)?;
        }
    }

    let mut alarms: Vec<String> = verdicts
        .iter()
        .filter(|v| v.state.is_alarm())
        .map(|v| {
            let s = v.rule.schedule;
            let of = whose(&ctx.plan, s);
            match (v.state, v.age) {
                (State::Breached, Some(age)) => format!(
                    "{}: the newest good backup{of} is {} old, RPO {}",
                    s.as_str(),
                    human_duration(age),
                    human_duration(v.rule.rpo)
                ),
                _ => format!("{}: no good backup{of} at all", s.as_str()),
            }
        })
        .collect();
    alarms.extend(wal_alarms.iter().cloned());
    alarms.extend(copies.into_iter().filter_map(|c| c.alarm));
    alarms.extend(junk_alarm(junk));
    if let Some(s) = &stopped {
        let mut message = format!(
            "the replica may be down: {} was killed before its start command ran, and bkp could not start it (the warning above says why; the commands' output is in {}). Start it by hand; bkp removes {} once its start command succeeds, or remove it yourself",
            s.describe(),
            work.command_log().display(),
            work.root().join(crate::sources::stop_window::MARKER).display()
        );
        if !alarms.is_empty() {
            message.push_str(&format!("; also: {}", alarms.join("; ")));
        }
        return Err(coded(Code::UnsafeSource, message));
    }
    if !alarms.is_empty() {
        return Err(coded(Code::Stale, {
            let commands: Vec<&str> = verdicts
                .iter()
                .filter(|v| v.state.is_alarm())
                .map(|v| v.rule.schedule.command())
                .collect();
            if commands.is_empty() {
                format!("{} in {}", alarms.join("; "), store.identity())
            } else {
                format!(
                        "{} in {}: run each now by hand (`{}`), then find out why its timer did not (journalctl -u 'bkp-*')",
                        alarms.join("; "),
                        store.identity(),
                        commands.join("`, `")
                    )
            }
        }));
    }
    ctx.ui.info(&match verdicts.len() {
        1 => "the watched schedule is within its RPO".to_string(),
        n => format!("all {n} watched schedules are within their RPO"),
    });
    Ok(())
}

/// An alarm per WAL archive with nothing newer than `freshness.wal`.
fn wal_alarms(
    ctx: &Ctx,
    archives: &[crate::manifest::wal::archive::Archive],
    now: OffsetDateTime,
) -> Vec<String> {
    let mut wal_alarms: Vec<String> = Vec::new();
    // A server that stopped archiving loses every point in time after it.
    if let Some(rpo) = ctx.plan.freshness.wal {
        for a in archives {
            let age = a
                .summary
                .newest
                .map(|t| (now - t).try_into().unwrap_or_default());
            match age {
                Some(age) if age <= rpo => {}
                Some(age) => wal_alarms.push(format!(
                    "the WAL archive of system {} has nothing newer than {} (freshness.wal {}): check the server's archive_command with `bkp check` and its log",
                    a.system,
                    human_duration(age),
                    human_duration(rpo)
                )),
                None => wal_alarms.push(format!(
                    "the WAL archive of system {} is empty: set the server's archive_command to `bkp … wal push %p`",
                    a.system
                )),
            }
        }
    }
    wal_alarms
}

/// Every manifest, read once: what the store holds (as JSON, and as the
/// line `status` prints), and what each copy lacks ([`copy_states`]). The
/// kinds the verdicts `read` already are not listed again.
fn holdings(
    ctx: &Ctx,
    store: &dyn Store,
    trust: &manifest::Trust,
    now: OffsetDateTime,
    read: Vec<(Kind, Held)>,
) -> Result<(serde_json::Value, String, Vec<CopyState>)> {
    let keep = keeps_all(ctx);
    let every = || -> Result<(manifest::usage::Tally, Vec<manifest::Manifest>)> {
        let mut helds = Vec::new();
        for kind in Kind::ALL {
            if !read.iter().any(|(k, _)| *k == kind) {
                helds.push(fold_kind(store, trust, kind, &[], &|_| true, keep)?.0.held);
            }
        }
        helds.extend(read.into_iter().map(|(_, h)| h));
        let mut tally = manifest::usage::Tally::default();
        // The shorter lists join the longest, which is not copied (a year of
        // log segments is most of a store's manifests).
        let mut all = Vec::new();
        for h in helds {
            tally.join(h.tally);
            let mut ms = h.all.unwrap_or_default();
            if ms.len() > all.len() {
                std::mem::swap(&mut all, &mut ms);
            }
            all.extend(ms);
        }
        // No scratch space, as a stable sort takes ((time, id) is unique).
        all.sort_unstable_by_key(|m| (m.started_at, m.id));
        Ok((tally, all))
    };
    // Not being able to weigh the store is no reason to withhold verdicts.
    let (tally, all) = match every() {
        Ok(all) => all,
        Err(e) => {
            let e = format!("{e:#}");
            ctx.ui
                .warn(&format!("what the store holds could not be read: {e}"));
            let copies = copy_states(ctx, Err(&e), trust, now);
            return Ok((
                serde_json::Value::Null,
                format!("stored in {}: unknown ({e})", store.identity()),
                copies,
            ));
        }
    };
    let (class, default) = super::store_classes(&ctx.plan.store);
    let usage = tally.usage(class, default);
    let line = format!(
        "stored in {}: {}",
        store.identity(),
        manifest::usage::describe(&usage)
    );
    let copies = copy_states(ctx, Ok(&all), trust, now);
    Ok((manifest::usage::json(&usage), line, copies))
}

/// Whether `status` compares copies with the primary's manifests, and so
/// holds them all.
fn keeps_all(ctx: &Ctx) -> bool {
    ctx.plan.primary.is_none() && !ctx.plan.copies.is_empty()
}

/// One copy's state for `bkp status`.
struct CopyState {
    json: serde_json::Value,
    line: String,
    alarm: Option<String>,
}

/// What each copy (`[[copies]]`) lacks of the primary `store` and since when:
/// an alarm when a backup has waited longer than the copy's `max_lag`, or the
/// copy cannot be read. None when this run reads a copy (`--store`).
fn copy_states(
    ctx: &Ctx,
    all: std::result::Result<&[manifest::Manifest], &String>,
    trust: &manifest::Trust,
    now: OffsetDateTime,
) -> Vec<CopyState> {
    if ctx.plan.primary.is_some() {
        return Vec::new();
    }
    let one = |c: &crate::config::CopyPlan| {
        let all =
            all.map_err(|e| anyhow::anyhow!("the primary's manifests could not be listed: {e}"))?;
        let copy = super::open_plan_store(&c.store)?;
        let lag = crate::copies::lag(
            all,
            copy.as_ref(),
            trust,
            &c.retention,
            super::store_classes(&c.store),
        )?;
        anyhow::Ok((copy.identity(), lag))
    };
    let mut states = Vec::new();
    for c in &ctx.plan.copies {
        let max = human_duration(c.max_lag);
        let state = match one(c) {
            Err(e) => {
                let why = format!("copy {} could not be read: {e:#}", c.name);
                CopyState {
                    json: json!({"name": c.name, "error": format!("{e:#}"), "breached": true}),
                    line: format!("copy {}: NOT READ ({e:#})", c.name),
                    alarm: Some(format!("{why}; its backups may be out of date")),
                }
            }
            Ok((identity, lag)) => {
                let age: Option<std::time::Duration> =
                    lag.oldest.map(|t| (now - t).try_into().unwrap_or_default());
                let breached = age.is_some_and(|a| a > c.max_lag);
                let held = manifest::usage::describe(&lag.held);
                let line = match age {
                    None => format!("copy {} ({identity}): up to date, holds {held}", c.name),
                    Some(a) => format!(
                        "copy {} ({identity}): lacks {}, the oldest finished {} ago (max_lag {max}){}",
                        c.name,
                        units::count(lag.lacks, "backup"),
                        human_duration(a),
                        if breached { ": BREACHED" } else { "" }
                    ),
                };
                CopyState {
                    json: json!({
                        "name": c.name,
                        "store": identity,
                        "holds": lag.holds,
                        "stored": manifest::usage::json(&lag.held),
                        "lacks": lag.lacks,
                        "oldest_lacking_finished_at": lag.oldest.map(units::rfc3339),
                        "lag_seconds": age.map_or(0, |a| a.as_secs()),
                        "max_lag_seconds": c.max_lag.as_secs(),
                        "breached": breached,
                    }),
                    line,
                    alarm: breached.then(|| format!(
                        "copy {} lacks {} of the primary, the oldest for {} (max_lag {max}): run `bkp copy --to {}` now, then find out why its timer did not",
                        c.name,
                        units::count(lag.lacks, "backup"),
                        human_duration(age.unwrap_or_default()),
                        c.name
                    )),
                }
            }
        };
        states.push(state);
    }
    states
}

/// Warns about each manifest that could not be read but junk (named where it
/// was read, one line each); how many are junk.
fn warn_unreadable(ctx: &Ctx, unreadable: &[Unreadable]) -> usize {
    for u in unreadable.iter().filter(|u| !u.is_junk()) {
        ctx.ui.warn(&format!(
            "manifest {} could not be read and is not counted: {}",
            ui::printable(&u.key),
            u.error
        ));
    }
    unreadable.iter().filter(|u| u.is_junk()).count()
}

/// The alarm for `junk` manifests ([`Unreadable::is_junk`]), if any: no
/// backup counts because of them, but whoever wrote them can write to the
/// store.
fn junk_alarm(junk: usize) -> Option<String> {
    let one = junk == 1;
    (junk > 0).then(|| {
        format!(
            "{junk} manifest{} in the store {} not bkp's (named above): bkp leaves {} out, but whoever can write there may be trying to make it choose; find out how {} got there, then remove {}",
            if one { "" } else { "s" },
            if one { "is" } else { "are" },
            if one { "it" } else { "them" },
            if one { "it" } else { "they" },
            if one { "it" } else { "them" },
        )
    })
}

/// [`newest_backups`], refused when the store lost backups bkp recorded as
/// stored (its heads; with a `[ledger]`, the newest it records per kind):
/// that outranks every verdict, what the store says is not to be believed.
fn scan_whole(
    ctx: &Ctx,
    store: &dyn Store,
    trust: &manifest::Trust,
    schedules: &[Schedule],
) -> Result<Scan> {
    let mine = |m: &manifest::Manifest| of_this_source(&ctx.plan, m);
    let mut scan = newest_backups(store, trust, schedules, &mine, keeps_all(ctx))?;
    let mut lost = std::mem::take(&mut scan.lost);
    for (kind, m) in scan.listed.iter().filter(|_| ctx.plan.ledger.is_some()) {
        let cfg = ctx.plan.ledger.as_ref().expect("a ledger");
        match manifest::head::ledger_lost(cfg, store, *kind, m.as_ref()) {
            Ok(found) => lost.extend(found),
            Err(e) => ctx.ui.warn(&format!(
                "what the ledger records as stored could not be compared with the store: {e:#}"
            )),
        }
    }
    if lost.is_empty() {
        return Ok(scan);
    }
    Err(crate::exit::combine(
        "status cannot vouch for the store:",
        lost,
    ))
}

fn print_table(verdicts: &[Verdict], now: OffsetDateTime) -> Result<()> {
    let fmt = time::macros::format_description!("[year]-[month]-[day] [hour]:[minute]:[second]Z");
    let at = |t: OffsetDateTime| t.format(&fmt).unwrap_or_default();
    ui::out(&format!(
        "{:<18}  {:<36}  {:<20}  {:>8}  {:>6}  {:<26}  STATE",
        "SCHEDULE", "NEWEST", "FINISHED (UTC)", "AGE", "RPO", "NEXT DUE (UTC)"
    ))?;
    for v in verdicts {
        let state = match v.state {
            State::Ok => "ok".to_string(),
            State::Breached => "BREACHED".to_string(),
            State::Never => "NEVER RAN".to_string(),
        };
        let due = if v.next_due <= now {
            format!("{} (due)", at(v.next_due))
        } else {
            at(v.next_due)
        };
        ui::out(&format!(
            "{:<18}  {:<36}  {:<20}  {:>8}  {:>6}  {:<26}  {state}",
            v.rule.schedule.as_str(),
            v.newest.map_or("-".into(), |n| n.id.to_string()),
            v.newest.map_or("-".into(), |n| at(n.finished_at)),
            v.age.map_or("-".into(), human_duration),
            human_duration(v.rule.rpo),
            due,
        ))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::id::BackupId;
    use crate::manifest::{Manifest, Scope, Status};
    use crate::store::memory::MemoryStore;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    /// Counts reads, to show that status does not read every manifest.
    struct Counting {
        inner: MemoryStore,
        gets: AtomicUsize,
    }

    impl Store for Counting {
        fn identity(&self) -> String {
            self.inner.identity()
        }
        fn create(
            &self,
            key: &str,
            metadata: &crate::store::Metadata,
        ) -> Result<Box<dyn crate::store::ObjectWriter>> {
            self.inner.create(key, metadata)
        }
        fn open(&self, key: &str) -> Result<Box<dyn std::io::Read + Send>> {
            self.gets.fetch_add(1, Ordering::Relaxed);
            self.inner.open(key)
        }
        fn head(&self, key: &str) -> Result<Option<crate::store::ObjectInfo>> {
            self.inner.head(key)
        }
        fn list(&self, prefix: &str) -> Result<Vec<crate::store::ObjectInfo>> {
            self.inner.list(prefix)
        }
        fn delete(&self, key: &str) -> Result<()> {
            self.inner.delete(key)
        }
    }

    fn put(store: &dyn Store, kind: Kind, op: &str, scope: Scope, at: OffsetDateTime) -> BackupId {
        let id = BackupId::new_v7(at);
        let m = Manifest {
            schema: manifest::schema_string(),
            id,
            kind,
            scope,
            operation: op.into(),
            status: Status::Completed,
            started_at: at,
            finished_at: at + Duration::from_secs(30),
            host: "h".into(),
            bkp_version: "0".into(),
            retention_days: 1,
            compression: crate::stages::compress::Compression::None,
            encryption: None,
            objects: vec![],
            files: vec![],
            parent: None,
            uses: vec![],
            chunks: None,
            source: Default::default(),
            store: None,
        };
        manifest::write(store, &m, None).unwrap();
        id
    }

    #[test]
    fn reads_only_back_to_the_newest_of_each_schedule() {
        let store = Counting {
            inner: MemoryStore::new(),
            gets: AtomicUsize::new(0),
        };
        let t0 = OffsetDateTime::from_unix_timestamp(1_760_000_000).unwrap();
        let at = |min: u64| t0 + Duration::from_secs(min * 60);
        // Two days: a snapshot every 6 h, a log segment every 15 min.
        let mut last_snapshot = None;
        let mut last_log = None;
        for q in 0..(2 * 24 * 4) {
            if q % 24 == 0 {
                last_snapshot = Some(put(
                    &store,
                    Kind::Tigerbeetle,
                    "snapshot",
                    Scope::Full,
                    at(q * 15),
                ));
            }
            last_log = Some(put(
                &store,
                Kind::Tigerbeetle,
                "logs",
                Scope::Incremental,
                at(q * 15 + 1),
            ));
        }
        put(&store, Kind::Duckdb, "export", Scope::Full, at(0));
        put(&store, Kind::Duckdb, "export", Scope::Incremental, at(60));
        put(&store, Kind::Duckdb, "export", Scope::Incremental, at(120));
        // A damaged manifest newer than everything is reported, not fatal.
        store
            .inner
            .put_new(
                "manifests/tigerbeetle/ffffffff-ffff-7fff-bfff-ffffffffffff.json",
                b"{",
                &vec![],
            )
            .unwrap();

        let all = [
            Schedule::named("snapshot"),
            Schedule::named("logs"),
            Schedule::named("export-full"),
            Schedule::named("export-incremental"),
            Schedule::named("replicate"),
        ];
        let scan =
            newest_backups(&store, &manifest::Trust::none(), &all, &|_| true, false).unwrap();
        assert_eq!(
            scan.newest[&Schedule::named("snapshot")].id,
            last_snapshot.unwrap()
        );
        assert_eq!(scan.newest[&Schedule::named("logs")].id, last_log.unwrap());
        assert!(!scan.newest.contains_key(&Schedule::named("replicate")));
        assert_eq!(scan.manifests, 192 + 8 + 1 + 3);
        assert_eq!(scan.unreadable.len(), 1);
        // The first scan built the catalog; the next reads it, and the damaged
        // manifest again (it is reported every time), not the history.
        store.gets.store(0, Ordering::Relaxed);
        let again =
            newest_backups(&store, &manifest::Trust::none(), &all, &|_| true, false).unwrap();
        assert_eq!(again.newest[&Schedule::named("logs")].id, last_log.unwrap());
        assert_eq!(again.unreadable.len(), 1);
        // One catalog object per kind (each a base), plus the damaged manifest.
        assert_eq!(store.gets.load(Ordering::Relaxed), 2 + 1);
    }

    #[test]
    fn human_durations() {
        for (secs, want) in [
            (0, "0s"),
            (42, "42s"),
            (900, "15m"),
            (845, "14m 5s"),
            (6 * 3600, "6h"),
            (6 * 3600 + 120, "6h 2m"),
            (86400, "1d"),
            (2 * 86400 + 3 * 3600 + 59, "2d 3h"),
        ] {
            assert_eq!(human_duration(Duration::from_secs(secs)), want);
        }
    }
}
