//! Retention: which backups `cleanup` keeps and which it deletes.
//!
//! [`plan`] is a pure function of the backups found in the store, the policy and
//! the current time: no clock, no I/O, no hidden state. That makes `--dry-run`
//! exactly what a real run would do, lets every rule be tested on hand-computed
//! cases, and gives the same answer whatever order the store lists manifests in
//! (candidates are sorted newest first, ties broken by id, before any rule runs).
//! Every decision carries the reasons behind it so an operator can see why a
//! backup stayed or went.
//!
//! Rules apply per (kind, scope) group, with the bucket semantics of restic's
//! `forget`: `keep_within`, `keep_last` and hourly/daily/weekly/monthly/yearly
//! buckets in UTC; a backup is kept if any rule keeps it. A backup whose own
//! retention (`retention_days` in its manifest) has run out is kept by no rule.
//! The newest backup of a group is always kept, whatever the policy says.
//!
//! Chains are protected after the rules have run, until nothing changes:
//! - a kept incremental keeps its parent, so every link back to the full backup
//!   at the root of its chain stays, and with it that full backup: restoring a
//!   kept incremental never meets a hole or a missing base (DuckDB exports);
//! - kinds restored by replaying a log onto a snapshot (TigerBeetle) chain their
//!   log segments to each other, not to snapshots. For them the kept segments are
//!   one unbroken run: every segment newer than the oldest kept snapshot, or than
//!   the oldest segment a rule keeps, stays; the snapshot such a segment replays
//!   onto stays; and with no older snapshot at all, the log back to its first
//!   segment stays ([`Policy::keep_log_since_oldest_kept_full`]).
//!
//! Keeping only ever adds backups, so the iteration ends. A kept incremental
//! whose chain leads to a backup no longer in the store is marked "chain broken".

use std::collections::{BTreeMap, BTreeSet, HashMap};

use serde::{Deserialize, Serialize};
use time::{Duration, OffsetDateTime, UtcOffset};

use crate::id::BackupId;
use crate::kinds::Preset;
use crate::manifest::shared::Shared;

/// What a candidate's id must do: be told apart, ordered and printed.
pub trait Id: Clone + Ord + std::hash::Hash + std::fmt::Display {
    /// When the backup it names started, where the id tells (UUIDv7 ids
    /// do), for telling a hole in a log from segments retention removed
    /// before a snapshot.
    fn started(&self) -> Option<OffsetDateTime> {
        None
    }
}

impl Id for String {}

impl Id for BackupId {
    fn started(&self) -> Option<OffsetDateTime> {
        self.timestamp()
    }
}
pub use crate::kinds::{Kind, Scope};

/// One good backup as retention sees it.
///
/// `I` is its id: a [`BackupId`] for a store's backups, where a year of
/// history is hundreds of thousands of candidates (a string costs a
/// allocation of its own), any readable string in tests.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Candidate<I = String> {
    pub id: I,
    pub kind: Kind,
    pub scope: Scope,
    #[serde(with = "time::serde::rfc3339")]
    pub started_at: OffsetDateTime,
    /// Id of the backup this one builds on (a full or another incremental).
    pub parent: Option<I>,
    /// When the backup's own retention runs out (its start plus the manifest's
    /// `retention_days`): from then on no rule keeps it, only chains and the
    /// newest-of-group protection can.
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub expires_at: Option<OffsetDateTime>,
    /// When the backup's run ended (default: its start). A log segment that ended
    /// after a snapshot started may hold rows the snapshot does not.
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub finished_at: Option<OffsetDateTime>,
    /// What the backup is of, when one store holds several sources of a kind
    /// (a replication's source root, an export's database): rules and the
    /// newest-of-group protection apply per stream. Empty for one stream.
    #[serde(default)]
    pub stream: Shared,
    /// What the backup was taken from (a TigerBeetle cluster, a PostgreSQL
    /// system; see [`crate::kinds::SourceIs`]): each source's backups are a
    /// group of their own, so that one source's newer backups (another
    /// cluster's, another server's) never take the places another source's
    /// backups are kept in. Empty where the kind tells none, or the manifest
    /// names none (it then counts for each source's log).
    #[serde(default)]
    pub source: Shared,
    /// Why the backup must stay whatever the rules say (a manifest still under
    /// S3 Object Lock retention cannot be deleted): a "kept: …" reason, from
    /// which the chain rules keep what it needs, as for any kept backup.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub held: Option<Box<str>>,
}

impl<I> Candidate<I> {
    fn ended(&self) -> OffsetDateTime {
        self.finished_at.unwrap_or(self.started_at)
    }
}

/// The rules for one (kind, scope) group; `None` turns a rule off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    /// Keep everything started after `now - keep_within`.
    pub keep_within: Option<Duration>,
    /// Keep the N newest.
    pub keep_last: Option<u32>,
    /// Keep the newest backup in each of the N most recent hours that have one.
    pub hourly: Option<u32>,
    pub daily: Option<u32>,
    /// ISO weeks (Monday to Sunday, ISO week-numbering year).
    pub weekly: Option<u32>,
    pub monthly: Option<u32>,
    pub yearly: Option<u32>,
    /// For incrementals of a log-replay kind ([`Kind::replays_log`]): keep every
    /// segment newer than the oldest kept full backup of that kind. Ignored
    /// elsewhere; defaults to true.
    pub keep_log_since_oldest_kept_full: bool,
}

impl Default for Policy {
    /// No rules: only the newest backup and what chains need are kept.
    fn default() -> Self {
        Policy {
            keep_within: None,
            keep_last: None,
            hourly: None,
            daily: None,
            weekly: None,
            monthly: None,
            yearly: None,
            keep_log_since_oldest_kept_full: true,
        }
    }
}

impl Policy {
    /// Grandfather-father-son: 7 daily, 4 weekly, 12 monthly, 5 yearly.
    pub fn gfs() -> Self {
        Policy {
            daily: Some(7),
            weekly: Some(4),
            monthly: Some(12),
            yearly: Some(5),
            ..Self::default()
        }
    }

    /// Count-based: 24 hourly, 30 daily, 12 monthly.
    pub fn count_based() -> Self {
        Policy {
            hourly: Some(24),
            daily: Some(30),
            monthly: Some(12),
            ..Self::default()
        }
    }

    fn buckets(&self) -> [(Bucket, Option<u32>); 5] {
        [
            (Bucket::Hourly, self.hourly),
            (Bucket::Daily, self.daily),
            (Bucket::Weekly, self.weekly),
            (Bucket::Monthly, self.monthly),
            (Bucket::Yearly, self.yearly),
        ]
    }
}

/// A policy per (kind, scope) group, and one for every group not listed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policies {
    pub default: Policy,
    pub groups: BTreeMap<(Kind, Scope), Policy>,
}

impl Default for Policies {
    /// [`Policy::gfs`] for every group.
    fn default() -> Self {
        Policies::new(Policy::gfs())
    }
}

impl Policies {
    pub fn new(default: Policy) -> Self {
        Policies {
            default,
            groups: BTreeMap::new(),
        }
    }

    pub fn with(mut self, kind: Kind, scope: Scope, policy: Policy) -> Self {
        self.groups.insert((kind, scope), policy);
        self
    }

    pub fn get(&self, kind: Kind, scope: Scope) -> &Policy {
        self.groups.get(&(kind, scope)).unwrap_or(&self.default)
    }
}

/// One reason of a [`Decision`]: most are the same few words, not a string
/// of their own each (a first cleanup of years decides on hundreds of
/// thousands of backups).
pub type Reason = std::borrow::Cow<'static, str>;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Decision<I = String> {
    pub id: I,
    pub keep: bool,
    /// Why, most important first: "kept: …" or "delete: …", plus any
    /// "chain broken: …" warning.
    pub reasons: Vec<Reason>,
}

impl<I> Decision<I> {
    /// Why a backup is deleted, in brief: [`NO_RULE`] or [`RAN_OUT`].
    pub fn deleted_for(&self) -> &'static str {
        match self.reasons.first() {
            Some(r) if r == RAN_OUT => RAN_OUT,
            _ => NO_RULE,
        }
    }
}

#[derive(Debug, Clone, Copy)]
enum Bucket {
    Hourly,
    Daily,
    Weekly,
    Monthly,
    Yearly,
}

impl Bucket {
    fn name(self) -> &'static str {
        match self {
            Bucket::Hourly => "hourly",
            Bucket::Daily => "daily",
            Bucket::Weekly => "weekly",
            Bucket::Monthly => "monthly",
            Bucket::Yearly => "yearly",
        }
    }

    /// The UTC period `t` falls in; equal labels mean the same period.
    fn label(self, t: OffsetDateTime) -> String {
        let t = t.to_offset(UtcOffset::UTC);
        let (y, m, d) = (t.year(), t.month() as u8, t.day());
        match self {
            Bucket::Hourly => format!("{y:04}-{m:02}-{d:02} {:02}:00", t.hour()),
            Bucket::Daily => format!("{y:04}-{m:02}-{d:02}"),
            Bucket::Weekly => {
                let (iso_year, week, _) = t.to_iso_week_date();
                format!("{iso_year:04}-W{week:02}")
            }
            Bucket::Monthly => format!("{y:04}-{m:02}"),
            Bucket::Yearly => format!("{y:04}"),
        }
    }
}

/// The first reason of a backup to delete: no rule keeps it, or its own
/// retention ran out ([`Decision::deleted_for`]).
pub const NO_RULE: &str = "delete: no rule keeps it";
pub const RAN_OUT: &str = "delete: retention ran out";

const LOG_REASON: &str = "kept: log segment inside the kept log window (chain)";
const LOG_FROM_START: &str = "kept: log from its first segment (no older snapshot to replay onto)";

/// The rules of one group's policy `p` applied to its backups `group` (newest
/// first): a reason for each backup a rule keeps, or that expired.
fn apply_rules<I>(
    c: &[&Candidate<I>],
    p: &Policy,
    now: OffsetDateTime,
    group: &[usize],
    (reasons, expired): (&mut [Vec<Reason>], &mut [bool]),
) {
    let mut idx = Vec::with_capacity(group.len());
    for &i in group {
        match c[i].expires_at {
            Some(e) if e <= now => expired[i] = true,
            _ => idx.push(i),
        }
    }
    if let Some(d) = p.keep_within {
        let since = now.checked_sub(d);
        for &i in &idx {
            if since.is_none_or(|s| c[i].started_at > s) {
                reasons[i].push(format!("kept: within {} of now", fmt_duration(d)).into());
            }
        }
    }
    if let Some(last) = p.keep_last {
        for (rank, &i) in idx.iter().take(last as usize).enumerate() {
            reasons[i].push(format!("kept: {} of last {last}", ordinal(rank as u32 + 1)).into());
        }
    }
    for (bucket, count) in p.buckets() {
        let Some(count) = count else { continue };
        let (mut used, mut previous) = (0, None);
        for &i in &idx {
            if used == count {
                break;
            }
            let label = bucket.label(c[i].started_at);
            if previous.as_ref() != Some(&label) {
                used += 1;
                let (name, nth) = (bucket.name(), ordinal(used));
                reasons[i]
                    .push(format!("kept: newest {name} for {label} ({nth} of {count})").into());
                previous = Some(label);
            }
        }
    }
}

/// What [`by_rules`] gives.
type Rules = (Vec<Vec<Reason>>, Vec<bool>);

/// The reasons the rules give each of `c` (newest first), group by group: a
/// group is a (kind, scope, stream, source), and its newest backup stays.
/// Beside them, when each backup's own retention ran out, where it has:
/// not a reason each (a first cleanup of years of history finds hundreds
/// of thousands), but one for those kept all the same.
fn by_rules<I>(c: &[&Candidate<I>], policy: &Policies, now: OffsetDateTime) -> Rules {
    let mut groups: BTreeMap<(Kind, Scope, &str, &str), Vec<usize>> = BTreeMap::new();
    // A kind's source is named only where the store holds several.
    let mut sources: BTreeMap<Kind, BTreeSet<&str>> = BTreeMap::new();
    for (i, b) in c.iter().enumerate() {
        groups
            .entry((b.kind, b.scope, b.stream.as_str(), b.source.as_str()))
            .or_default()
            .push(i);
        sources.entry(b.kind).or_default().insert(b.source.as_str());
    }
    // The newest of each (kind, scope, stream), whatever its source.
    let mut newest: BTreeMap<(Kind, Scope, &str), usize> = BTreeMap::new();
    for (&(kind, scope, stream, _), all_of_group) in &groups {
        let at = newest
            .entry((kind, scope, stream))
            .or_insert(all_of_group[0]);
        *at = (*at).min(all_of_group[0]);
    }
    let mut reasons: Vec<Vec<Reason>> = vec![Vec::new(); c.len()];
    let mut expired = vec![false; c.len()];
    for (&(kind, scope, stream, source), all_of_group) in &groups {
        let p = policy.get(kind, scope);
        apply_rules(c, p, now, all_of_group, (&mut reasons, &mut expired));
        // A source's newest stays while its retention lasts (a server replaced,
        // or upgraded into a new system, stops backing up: its last backup
        // goes once it expires); the newest of all always stays.
        let first = all_of_group[0];
        let live = c[first].expires_at.is_none_or(|t| t > now);
        if newest.get(&(kind, scope, stream)) != Some(&first) && !live {
            continue;
        }
        let several = sources.get(&kind).is_some_and(|s| s.len() > 1);
        let of = [stream, if several { source } else { "" }];
        let of: Vec<&str> = of.into_iter().filter(|s| !s.is_empty()).collect();
        let mut group = format!("{}/{}", kind.as_str(), scope.as_str());
        if !of.is_empty() {
            group.push_str(&format!(" ({})", of.join(", ")));
        }
        reasons[all_of_group[0]].push(format!("kept: newest good backup of {group}").into());
    }
    (reasons, expired)
}

/// Decides every candidate: one [`Decision`] each, newest first (ties by id,
/// descending). Ids are expected to be unique.
pub fn plan<I: Id>(
    backups: &[Candidate<I>],
    policy: &Policies,
    now: OffsetDateTime,
) -> Vec<Decision<I>> {
    let mut c: Vec<&Candidate<I>> = backups.iter().collect();
    c.sort_by(|a, b| (b.started_at, &b.id).cmp(&(a.started_at, &a.id)));
    let n = c.len();
    let by_id = index_of(&c);
    let (mut reasons, expired) = by_rules(&c, policy, now);
    for (i, b) in c.iter().enumerate() {
        if let Some(why) = &b.held {
            reasons[i].insert(0, why.to_string().into());
        }
    }
    let mut keep: Vec<bool> = reasons
        .iter()
        .zip(&c)
        .map(|(r, b)| b.held.is_some() || r.iter().any(|r| r.starts_with("kept")))
        .collect();

    // Each source's log and snapshots on their own: another cluster's
    // snapshot holds none of this cluster's rows.
    let mut log_kinds: BTreeSet<(Kind, &str)> = c
        .iter()
        .filter(|b| b.kind.replays_log())
        .map(|b| (b.kind, b.source.as_str()))
        .collect();
    // What names no source counts for each source that is named.
    let named: BTreeSet<Kind> = log_kinds
        .iter()
        .filter(|(_, s)| !s.is_empty())
        .map(|(k, _)| *k)
        .collect();
    log_kinds.retain(|(k, s)| !s.is_empty() || !named.contains(k));
    let c = &c[..];
    let parent_of = |i: usize| c[i].parent.as_ref().and_then(|p| by_id.get(p).copied());
    let mut pushed = vec![false; n];
    loop {
        let mut changed = false;
        let mut mark = |keep: &mut [bool], i: usize, reason: Reason| {
            if !std::mem::replace(&mut keep[i], true) {
                reasons[i].push(reason);
                changed = true;
            }
        };
        for i in 0..n {
            let is_link = c[i].scope == Scope::Incremental && !c[i].kind.replays_log();
            if !pushed[i] && is_link && keep[i] {
                pushed[i] = true;
                let Some(j) = parent_of(i) else { continue };
                let role = if c[j].scope == Scope::Full {
                    "base"
                } else {
                    "parent"
                };
                let id = &c[i].id;
                mark(
                    &mut keep,
                    j,
                    format!("kept: {role} of kept incremental {id} (chain)").into(),
                );
            }
        }
        for &(kind, source) in &log_kinds {
            let window = policy
                .get(kind, Scope::Incremental)
                .keep_log_since_oldest_kept_full;
            // Oldest first. A snapshot that names no source (no cluster
            // configured when it ran) may be any cluster's: it counts for each.
            let of = |scope| -> Vec<usize> {
                (0..n)
                    .rev()
                    .filter(|&i| c[i].kind == kind && c[i].scope == scope)
                    .filter(|&i| c[i].source == source || may_be(c[i], source))
                    .collect()
            };
            let (fulls, segs) = (of(Scope::Full), of(Scope::Incremental));
            let oldest_full = fulls.iter().find(|&&i| keep[i]);
            let oldest_seg = segs.iter().find(|&&i| keep[i]);
            // A segment that ended after the snapshot started may hold rows
            // the snapshot does not: it belongs to the window.
            let since = match (oldest_full, oldest_seg) {
                (Some(&f), Some(&s)) => c[f].started_at.min(c[s].ended()),
                (Some(&f), None) => c[f].started_at,
                (None, Some(&s)) => c[s].ended(),
                (None, None) => continue,
            };
            if window {
                for &i in segs.iter().filter(|&&i| c[i].ended() >= since) {
                    mark(&mut keep, i, LOG_REASON.into());
                }
            }
            // The oldest kept segment needs a snapshot at or before it to replay
            // onto, or else the log from its very first segment.
            let Some(&first) = segs.iter().find(|&&i| keep[i]) else {
                continue;
            };
            let at = c[first].started_at;
            match fulls.iter().rfind(|&&f| c[f].started_at <= at) {
                Some(&f) => {
                    let id = &c[first].id;
                    let why =
                        format!("kept: snapshot that kept log segment {id} replays onto (chain)");
                    mark(&mut keep, f, why.into());
                }
                None => {
                    for &i in segs.iter().filter(|&&i| c[i].started_at < at) {
                        mark(&mut keep, i, LOG_FROM_START.into());
                    }
                }
            }
        }
        if !changed {
            break;
        }
    }

    let missing = missing_ancestors(c, &by_id);
    let mut holes = log_holes(c, &keep);
    // Not held beside the decisions.
    drop((by_id, pushed));
    (0..n)
        .map(|i| {
            let mut r = std::mem::take(&mut reasons[i]);
            let expired = c[i].expires_at.filter(|_| expired[i]);
            why(&mut r, keep[i], expired, c[i].held.is_some());
            if let Some(gone) = missing.get(&i) {
                let direct = c[i].parent.as_ref() == Some(gone);
                let rel = if direct { "parent" } else { "ancestor" };
                r.push(format!("chain broken: {rel} {gone} missing").into());
            }
            if let Some(hole) = holes.remove(&i) {
                r.push(hole.into());
            }
            Decision {
                id: c[i].id.clone(),
                keep: keep[i],
                reasons: r,
            }
        })
        .collect()
}

/// Where each id is in `c`: the first, for an id listed twice.
fn index_of<'a, I: Id>(c: &[&'a Candidate<I>]) -> HashMap<&'a I, usize> {
    let mut by_id = HashMap::with_capacity(c.len());
    for (i, b) in c.iter().enumerate() {
        by_id.entry(&b.id).or_insert(i);
    }
    by_id
}

/// Puts first in `reasons` why a backup is deleted (`keep` false), or,
/// where it is kept though its own retention ran out (`expired`), that it
/// ran out: before every reason but what holds it (`held`).
fn why(reasons: &mut Vec<Reason>, keep: bool, expired: Option<OffsetDateTime>, held: bool) {
    match (keep, expired) {
        // Most backups of a first cleanup of years: one reason, held in
        // a list of one (a list grown from none holds four).
        (false, _) if reasons.is_empty() => *reasons = vec![why_deleted(expired).into()],
        (false, _) => reasons.insert(0, why_deleted(expired).into()),
        (true, Some(e)) => reasons.insert(
            usize::from(held).min(reasons.len()),
            format!("expired: retention ran out at {}", fmt_time(e)).into(),
        ),
        (true, None) => {}
    }
}

fn why_deleted(expired: Option<OffsetDateTime>) -> &'static str {
    match expired {
        None => NO_RULE,
        Some(_) => RAN_OUT,
    }
}

/// Whether `b`, which names no source (a snapshot taken with no cluster
/// configured, a segment of an older release), may be one of `source`'s.
fn may_be<I>(b: &Candidate<I>, source: &str) -> bool {
    b.source.is_empty() && !source.is_empty()
}

/// For each kept log segment (of a log-replay kind), a "chain broken" note when
/// the segment before it is missing inside the window that no snapshot covers:
/// its parent is not the previous segment in the store, and no snapshot lies
/// between that previous segment and it.
fn log_holes<I: Id>(c: &[&Candidate<I>], keep: &[bool]) -> BTreeMap<usize, String> {
    let mut out = BTreeMap::new();
    let n = c.len();
    let log = |i: &usize| c[*i].kind.replays_log();
    for i in (0..n).filter(|i| log(i) && keep[*i] && c[*i].scope == Scope::Incremental) {
        let (kind, source, at) = (c[i].kind, c[i].source.as_str(), c[i].started_at);
        let same = |j: &usize, scope| {
            c[*j].kind == kind
                && c[*j].scope == scope
                && (c[*j].source == source || may_be(c[*j], source))
        };
        // `c` is newest first: the first older match is the nearest.
        let prev = (i + 1..n).find(|j| same(j, Scope::Incremental));
        // The newest kept snapshot that started before this segment.
        let snap = (i + 1..n).find(|j| same(j, Scope::Full) && keep[*j] && c[*j].started_at <= at);
        // The missing parent started before the snapshot: the snapshot holds it.
        let parent_at = c[i].parent.as_ref().and_then(Id::started);
        let covered = |floor: Option<OffsetDateTime>| {
            snap.is_some_and(|s| floor.is_none_or(|f| c[s].started_at > f))
        };
        let hole = match (&c[i].parent, prev) {
            (Some(p), Some(j)) if *p != c[j].id && !covered(parent_at.or(Some(c[j].started_at))) => {
                Some(format!("chain broken: log segment {p} before this one is missing"))
            }
            (Some(p), None) if !covered(parent_at) => Some(format!(
                "chain broken: log segment {p} before this one is missing and no kept snapshot holds it"
            )),
            _ => None,
        };
        if let Some(hole) = hole {
            out.insert(i, hole);
        }
    }
    out
}

/// For each incremental of a parent-chained kind, the id its chain leads to that
/// is not among the candidates, if any. Memoised, so long chains cost linear time.
fn missing_ancestors<I: Id>(c: &[&Candidate<I>], by_id: &HashMap<&I, usize>) -> BTreeMap<usize, I> {
    // Only for the kinds chained by parents: most of a long history is log.
    let mut memo: HashMap<usize, Option<I>> = HashMap::new();
    let mut on_path = vec![false; c.len()];
    for start in (0..c.len()).filter(|&i| !c[i].kind.replays_log()) {
        let (mut path, mut cur) = (Vec::new(), start);
        let result = loop {
            if let Some(done) = memo.get(&cur) {
                break done.clone();
            }
            if c[cur].scope == Scope::Full || on_path[cur] {
                break None; // a root, or a cycle (which manifests cannot form)
            }
            on_path[cur] = true;
            path.push(cur);
            match &c[cur].parent {
                None => break None,
                Some(p) => match by_id.get(p) {
                    Some(&j) => cur = j,
                    None => break Some(p.clone()),
                },
            }
        };
        for i in path {
            on_path[i] = false;
            memo.insert(i, result.clone());
        }
    }
    memo.into_iter()
        .filter_map(|(i, gone)| Some((i, gone?)))
        .collect()
}

/// One line for `--dry-run`, e.g. "keep 7 daily, 4 weekly, 12 monthly, 5 yearly".
pub fn describe(policy: &Policy) -> String {
    let mut parts = Vec::new();
    if let Some(d) = policy.keep_within {
        parts.push(format!("everything within {}", fmt_duration(d)));
    }
    if let Some(n) = policy.keep_last {
        parts.push(format!("the last {n}"));
    }
    for (bucket, count) in policy.buckets() {
        if let Some(count) = count {
            parts.push(format!("{count} {}", bucket.name()));
        }
    }
    let mut s = if parts.is_empty() {
        "keep only the newest backup (and what chains need)".to_string()
    } else {
        format!("keep {}", parts.join(", "))
    };
    if !policy.keep_log_since_oldest_kept_full {
        s.push_str("; log segments since the oldest kept snapshot are not protected");
    }
    s
}

fn fmt_duration(d: Duration) -> String {
    let secs = d.whole_seconds().unsigned_abs();
    let units = [
        (secs / 86_400, "d"),
        (secs / 3600 % 24, "h"),
        (secs / 60 % 60, "m"),
        (secs % 60, "s"),
    ];
    let parts: Vec<String> = units
        .iter()
        .filter(|(v, _)| *v > 0)
        .map(|(v, u)| format!("{v}{u}"))
        .collect();
    let sign = if d.is_negative() { "-" } else { "" };
    if parts.is_empty() {
        "0s".into()
    } else {
        format!("{sign}{}", parts.join(" "))
    }
}

fn fmt_time(t: OffsetDateTime) -> String {
    let t = t.to_offset(UtcOffset::UTC);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}Z",
        t.year(),
        t.month() as u8,
        t.day(),
        t.hour(),
        t.minute()
    )
}

fn ordinal(n: u32) -> String {
    let suffix = match (n % 10, n % 100) {
        (_, 11..=13) => "th",
        (1, _) => "st",
        (2, _) => "nd",
        (3, _) => "rd",
        _ => "th",
    };
    format!("{n}{suffix}")
}

/// What `cleanup` runs with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetentionPlan {
    pub policies: Policies,
    pub grace: Duration,
}

/// Every decision, and the backups Object Lock holds with the date it ends.
pub type Held<I> = (Vec<Decision<I>>, BTreeMap<I, OffsetDateTime>);

/// [`plan`], with the backups `retained` says cannot be deleted yet (a
/// manifest under S3 Object Lock retention: `retained` gives the date it
/// ends) kept, and by the same rules everything their chains need. Also the
/// backups so held, with that date.
pub fn plan_holding<I: Id>(
    mut candidates: Vec<Candidate<I>>,
    policies: &Policies,
    now: OffsetDateTime,
    retained: impl Fn(&I) -> anyhow::Result<Option<OffsetDateTime>>,
) -> anyhow::Result<Held<I>> {
    let mut decisions = plan(&candidates, policies, now);
    let mut locked = BTreeMap::new();
    for d in decisions.iter().filter(|d| !d.keep) {
        if let Some(until) = retained(&d.id)? {
            locked.insert(d.id.clone(), until);
        }
    }
    if !locked.is_empty() {
        for c in candidates.iter_mut() {
            if let Some(until) = locked.get(&c.id) {
                c.held = Some(
                    format!(
                        "kept until {} by Object Lock",
                        crate::units::rfc3339(*until)
                    )
                    .into(),
                );
            }
        }
        decisions = plan(&candidates, policies, now);
    }
    Ok((decisions, locked))
}

/// The candidates retention sees for `manifests`.
pub fn candidates(manifests: &[crate::manifest::Manifest]) -> Vec<Candidate<BackupId>> {
    let mut g = Gather::default();
    for m in manifests {
        g.add(m);
    }
    g.finish()
}

/// [`candidates`] made one manifest at a time, so that a run looking at years
/// of history need not hold the manifests: a TigerBeetle base's time is
/// settled by [`Gather::finish`], once every log segment has been seen.
#[derive(Default)]
pub struct Gather {
    candidates: Vec<Candidate<BackupId>>,
    /// The log segments that could hold what they claim: cluster (where in
    /// `clusters`), the newest cluster timestamp each holds (`until`), and
    /// when its run began. (Ten years of 15-minute segments are 350,000.)
    segments: Vec<(u32, u64, OffsetDateTime)>,
    /// The clusters the segments name, each once, and where.
    clusters: BTreeMap<Option<u128>, u32>,
    /// The bases built from the log: where among the candidates, their
    /// newest row and their cluster.
    bases: Vec<(usize, u64, Option<u128>)>,
}

/// How far past its run's start a segment's newest row may lie (the cluster's
/// clock against the host's): a capture reads up to the newest row when it
/// starts.
const SEGMENT_CLOCK_SKEW: time::Duration = time::Duration::days(1);

impl Gather {
    pub fn add(&mut self, m: &crate::manifest::Manifest) {
        use crate::manifest::tigerbeetle as tb;
        // A segment whose newest row lies further past its run's start than
        // clocks differ (a signed manifest claiming every timestamp, dated
        // years back) would make every base of its cluster count as that old.
        if let Some((_, until)) = tb::interval(m) {
            let newest = OffsetDateTime::from_unix_timestamp_nanos(i128::from(until));
            let limit = m.started_at.checked_add(SEGMENT_CLOCK_SKEW);
            if newest.is_ok_and(|t| limit.is_none_or(|l| t <= l)) {
                let n = self.clusters.len() as u32;
                let cluster = *self.clusters.entry(tb::cluster_id(m)).or_insert(n);
                self.segments.push((cluster, until, m.started_at));
            }
        }
        if let Some(newest) = tb::base_newest(m) {
            let at = self.candidates.len();
            self.bases.push((at, newest, tb::cluster_id(m)));
        }
        self.candidates.push(Candidate {
            id: m.id,
            kind: m.kind,
            scope: m.scope,
            started_at: m.started_at,
            parent: m.parent,
            expires_at: (m.retention_days > 0)
                .then(|| {
                    m.started_at
                        .checked_add(time::Duration::days(i64::from(m.retention_days)))
                })
                .flatten(),
            finished_at: Some(m.finished_at),
            stream: stream_of(m).into(),
            source: source_of(m).into(),
            held: None,
        });
    }

    /// How many have been added: a mark to go back to ([`Gather::truncate`]).
    pub fn marks(&self) -> [usize; 3] {
        [self.candidates.len(), self.segments.len(), self.bases.len()]
    }

    /// Forgets what was added since `marks` (a kind's read that starts again).
    pub fn truncate(&mut self, [c, s, b]: [usize; 3]) {
        self.candidates.truncate(c);
        self.segments.truncate(s);
        self.bases.truncate(b);
    }

    /// The candidates, each base's time settled: its start, but for a
    /// TigerBeetle base built from the log, the start of the log segment that
    /// holds its newest row (a restore from the base replays from that
    /// segment on, and checks the row there), which may have begun before the
    /// base's run: retention's log window starts at the oldest kept
    /// snapshot's time. Without that segment, the newest row's time less a
    /// minute (for the cluster's clock).
    pub fn finish(mut self) -> Vec<Candidate<BackupId>> {
        // Those that may hold each cluster's rows: its own, and those that
        // name none.
        let unnamed = self.clusters.get(&None).copied();
        for &(at, newest, cluster) in &self.bases {
            let own = self.clusters.get(&cluster).copied();
            let holding = self
                .segments
                .iter()
                .filter(|(c, until, _)| {
                    (Some(*c) == unnamed || Some(*c) == own) && *until >= newest
                })
                .map(|(_, _, started_at)| *started_at)
                .min();
            let from = holding.or_else(|| {
                OffsetDateTime::from_unix_timestamp_nanos(i128::from(newest))
                    .ok()
                    .map(|t| t - time::Duration::minutes(1))
            });
            let c = &mut self.candidates[at];
            c.started_at = from.map_or(c.started_at, |t| t.min(c.started_at));
        }
        // Grown by doubling: up to half of it unused.
        self.candidates.shrink_to_fit();
        self.candidates
    }
}

/// What backup `m` was taken from, as its kind tells sources apart
/// ([`crate::kinds::SourceIs`]): "cluster 0", "system 7300…", or nothing.
pub(crate) fn source_of(m: &crate::manifest::Manifest) -> String {
    match m.kind.describe().source_is {
        crate::kinds::SourceIs::Fact { name, label, .. } => match m.source.get(name) {
            // As a number where it is one (`"01"` is 1, as chains read it).
            Some(serde_json::Value::String(v)) => match v.parse::<u128>() {
                Ok(n) => format!("{label} {n}"),
                Err(_) => format!("{label} {v}"),
            },
            Some(v @ serde_json::Value::Number(_)) => format!("{label} {v}"),
            _ => String::new(),
        },
        crate::kinds::SourceIs::Stream => String::new(),
    }
}

/// What a backup is of, when a store can hold several sources of its kind: a
/// replication's source root, an export's database.
fn stream_of(m: &crate::manifest::Manifest) -> String {
    let d = m.kind.describe();
    let Some(key) = d
        .stream_member
        .filter(|_| d.restores == Some(m.operation.as_str()))
    else {
        return String::new();
    };
    m.source
        .get(key)
        .and_then(|v| v.as_str())
        .unwrap_or_default()
        .to_string()
}

/// The policy a group has when the config says nothing: GFS for snapshots and
/// full exports, count-based for replication, and for log segments and
/// incremental exports only what chains need (the newest, its chain, the log
/// window).
pub fn default_policy(kind: Kind, scope: Scope) -> Policy {
    let groups = kind.describe().groups;
    // A scope no group of the kind names (none of its backups have it): a
    // count-based kind stays count-based, any other is kept as its scope.
    let preset = match groups.iter().find(|g| g.scope == scope) {
        Some(g) => g.preset,
        None if groups.iter().any(|g| g.preset == Preset::Count) => Preset::Count,
        None if scope == Scope::Full => Preset::Gfs,
        None => Preset::Chains,
    };
    match preset {
        Preset::Count => Policy::count_based(),
        Preset::Chains => Policy::default(),
        Preset::Gfs => Policy::gfs(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::{datetime, format_description as fd};
    use time::PrimitiveDateTime;

    const NOW: OffsetDateTime = datetime!(2026-11-20 12:00 UTC);
    const TB: Kind = Kind::Tigerbeetle;
    const INC: Scope = Scope::Incremental;

    fn t(s: &str) -> OffsetDateTime {
        let f = fd!("[year]-[month]-[day]T[hour]:[minute]");
        PrimitiveDateTime::parse(s, f).unwrap().assume_utc()
    }

    /// Ids are the UTC start time, so expectations read as dates.
    fn cand(kind: Kind, scope: Scope, at: OffsetDateTime, parent: Option<String>) -> Candidate {
        let f = fd!("[year]-[month]-[day]T[hour]:[minute]");
        let id = at.to_offset(UtcOffset::UTC).format(f).unwrap();
        Candidate {
            id,
            kind,
            scope,
            started_at: at,
            parent,
            expires_at: None,
            finished_at: None,
            stream: Shared::default(),
            source: Shared::default(),
            held: None,
        }
    }

    fn every(start: &str, step: Duration, count: i32) -> Vec<OffsetDateTime> {
        (0..count).map(|k| t(start) + step * k).collect()
    }

    fn fulls(times: &[OffsetDateTime]) -> Vec<Candidate> {
        times
            .iter()
            .map(|&at| cand(TB, Scope::Full, at, None))
            .collect()
    }

    fn pol(f: impl FnOnce(&mut Policy)) -> Policy {
        let mut p = Policy::default();
        f(&mut p);
        p
    }

    fn kept<I: Id>(ds: &[Decision<I>]) -> BTreeSet<String> {
        ds.iter()
            .filter(|d| d.keep)
            .map(|d| d.id.to_string())
            .collect()
    }

    fn ids(list: &str) -> BTreeSet<String> {
        list.split_whitespace().map(String::from).collect()
    }

    fn reasons<'a, I: Id>(ds: &'a [Decision<I>], id: &str) -> &'a [Reason] {
        &ds.iter().find(|d| d.id.to_string() == id).unwrap().reasons
    }

    #[test]
    fn each_rule_on_small_cases() {
        let mut twice_a_day = every("2026-11-11T01:00", Duration::DAY, 5);
        twice_a_day.extend(every("2026-11-11T13:00", Duration::DAY, 5));
        let halves = (1..=6).flat_map(|m| [1, 15].map(|d| t(&format!("2026-{m:02}-{d:02}T00:00"))));
        let years =
            "2024-03-01T00:00 2024-12-31T23:59 2025-01-01T00:00 2025-06-01T00:00 2026-02-01T00:00";
        let years: Vec<_> = years.split(' ').map(t).collect();
        #[rustfmt::skip]
        let cases = [
            ("daily 3 of 10 days", every("2026-11-11T02:00", Duration::DAY, 10), pol(|p| p.daily = Some(3)),
             "2026-11-18T02:00 2026-11-19T02:00 2026-11-20T02:00"),
            ("only the newer of a day counts", twice_a_day, pol(|p| p.daily = Some(3)),
             "2026-11-13T13:00 2026-11-14T13:00 2026-11-15T13:00"),
            ("hourly 3, every 20 min", every("2026-11-20T10:00", Duration::minutes(20), 9),
             pol(|p| p.hourly = Some(3)), "2026-11-20T10:40 2026-11-20T11:40 2026-11-20T12:40"),
            // ISO weeks: 2026-W52 = Dec 21-27, 2026-W53 = Dec 28-Jan 3, 2027-W01 = Jan 4-10.
            ("weekly 4 across a year boundary", every("2026-12-20T02:00", Duration::DAY, 24),
             pol(|p| p.weekly = Some(4)),
             "2026-12-27T02:00 2027-01-03T02:00 2027-01-10T02:00 2027-01-12T02:00"),
            ("monthly 3", halves.collect(), pol(|p| p.monthly = Some(3)),
             "2026-04-15T00:00 2026-05-15T00:00 2026-06-15T00:00"),
            ("yearly 2", years.clone(), pol(|p| p.yearly = Some(2)), "2025-06-01T00:00 2026-02-01T00:00"),
            ("yearly 3", years.clone(), pol(|p| p.yearly = Some(3)),
             "2024-12-31T23:59 2025-06-01T00:00 2026-02-01T00:00"),
            ("last 3", years, pol(|p| p.keep_last = Some(3)),
             "2025-01-01T00:00 2025-06-01T00:00 2026-02-01T00:00"),
            // Strictly after NOW - 2 days = 2026-11-18T12:00.
            ("within 2 days", every("2026-11-17T12:00", Duration::hours(12), 6),
             pol(|p| p.keep_within = Some(Duration::days(2))),
             "2026-11-19T00:00 2026-11-19T12:00 2026-11-20T00:00"),
            ("last 2 + daily 4 + weekly 2", every("2026-11-01T02:00", Duration::DAY, 20),
             pol(|p| (p.keep_last, p.daily, p.weekly) = (Some(2), Some(4), Some(2))),
             "2026-11-15T02:00 2026-11-17T02:00 2026-11-18T02:00 2026-11-19T02:00 2026-11-20T02:00"),
        ];
        for (what, times, policy, expect) in cases {
            let got = plan(&fulls(&times), &Policies::new(policy), NOW);
            assert_eq!(got.len(), times.len(), "{what}");
            assert_eq!(kept(&got), ids(expect), "{what}");
        }
    }

    #[test]
    fn reasons_are_collected_and_periods_are_utc() {
        let mut times = every("2026-11-18T02:00", Duration::DAY, 3);
        times.push(datetime!(2026-11-20 23:30 +05:00)); // 18:30 UTC on the 20th
        let policy = pol(|p| (p.keep_last, p.daily) = (Some(1), Some(2)));
        let got = plan(&fulls(&times), &Policies::new(policy), NOW);
        assert_eq!(kept(&got), ids("2026-11-19T02:00 2026-11-20T18:30"));
        let newest = [
            "kept: 1st of last 1",
            "kept: newest daily for 2026-11-20 (1st of 2)",
            "kept: newest good backup of tigerbeetle/full",
        ];
        assert_eq!(got[0].reasons, newest);
        assert_eq!(got[1].reasons, ["delete: no rule keeps it"]);
        assert_eq!(
            got[2].reasons,
            ["kept: newest daily for 2026-11-19 (2nd of 2)"]
        );
        let within = pol(|p| p.keep_within = Some(Duration::hours(36)));
        assert_eq!(describe(&within), "keep everything within 1d 12h");
        let gfs = "keep 7 daily, 4 weekly, 12 monthly, 5 yearly";
        assert_eq!(describe(&Policy::gfs()), gfs);
        let count = "keep 24 hourly, 30 daily, 12 monthly";
        assert_eq!(describe(&Policy::count_based()), count);
        let bare = pol(|p| p.keep_log_since_oldest_kept_full = false);
        let bare_text = "keep only the newest backup (and what chains need); \
                         log segments since the oldest kept snapshot are not protected";
        assert_eq!(describe(&bare), bare_text);
    }

    #[test]
    fn gfs_over_three_years_of_dailies() {
        let times = every("2024-03-10T02:00", Duration::DAY, 986); // to 2026-11-20
        let got = plan(&fulls(&times), &Policies::new(Policy::gfs()), NOW);
        let daily = "2026-11-14 2026-11-15 2026-11-16 2026-11-17 2026-11-18 2026-11-19 2026-11-20";
        let weekly = "2026-11-20 2026-11-15 2026-11-08 2026-11-01"; // Fri of W47, then Sundays
        let monthly = "2026-11-20 2026-10-31 2026-09-30 2026-08-31 2026-07-31 2026-06-30 \
                       2026-05-31 2026-04-30 2026-03-31 2026-02-28 2026-01-31 2025-12-31";
        let yearly = "2026-11-20 2025-12-31 2024-12-31";
        let all = [daily, weekly, monthly, yearly].join(" ");
        let expect: BTreeSet<String> = ids(&(all + "T02:00").replace(' ', "T02:00 "));
        assert_eq!(expect.len(), 21);
        assert_eq!(kept(&got), expect);
        assert_eq!(got[0].reasons.len(), 5, "{:?}", got[0].reasons);
        let y2024 = ["kept: newest yearly for 2024 (3rd of 5)"];
        assert_eq!(reasons(&got, "2024-12-31T02:00"), y2024);
    }

    #[test]
    fn count_based_over_sixty_days_of_hourlies() {
        let times = every("2026-09-22T00:00", Duration::HOUR, 60 * 24); // to 2026-11-20T23:00
        let got = plan(&fulls(&times), &Policies::new(Policy::count_based()), NOW);
        let hourly = (0..24).map(|h| format!("2026-11-20T{h:02}:00"));
        let october = (22..=31).map(|d| format!("2026-10-{d}T23:00"));
        let november = (1..=20).map(|d| format!("2026-11-{d:02}T23:00"));
        let monthly =
            ["2026-11-20T23:00", "2026-10-31T23:00", "2026-09-30T23:00"].map(String::from);
        let expect = hourly.chain(october).chain(november).chain(monthly);
        assert_eq!(kept(&got), expect.collect());
    }

    #[test]
    fn newest_of_each_group_survives_an_all_zero_policy() {
        let zero = pol(|p| {
            let z = Some(0);
            (
                p.keep_last,
                p.hourly,
                p.daily,
                p.weekly,
                p.monthly,
                p.yearly,
            ) = (z, z, z, z, z, z);
            (p.keep_within, p.keep_log_since_oldest_kept_full) = (Some(Duration::ZERO), false);
        });
        let mut all = fulls(&every("2026-11-01T00:00", Duration::DAY, 5));
        for at in every("2026-11-02T01:00", Duration::DAY, 3) {
            all.push(cand(Kind::Duckdb, INC, at, None));
        }
        let got = plan(&all, &Policies::new(zero), NOW);
        assert_eq!(kept(&got), ids("2026-11-04T01:00 2026-11-05T00:00"));
        let duck = ["kept: newest good backup of duckdb/incremental"];
        assert_eq!(reasons(&got, "2026-11-04T01:00"), duck);
    }

    const DUCK: Kind = Kind::Duckdb;

    /// Fulls every 6 h and incrementals every 15 min for 10 days; each chain
    /// starts at a full and runs through the next 23 incrementals.
    fn ten_days_of_chains(kind: Kind) -> Vec<Candidate> {
        let mut all = Vec::new();
        for full_at in every("2026-11-11T00:00", Duration::hours(6), 40) {
            all.push(cand(kind, Scope::Full, full_at, None));
            for k in 1..24 {
                let parent = Some(all.last().unwrap().id.clone());
                all.push(cand(kind, INC, full_at + Duration::minutes(15) * k, parent));
            }
        }
        all
    }

    fn chain_policies(kind: Kind, log_flag: bool) -> Policies {
        let inc = pol(|p| (p.daily, p.keep_log_since_oldest_kept_full) = (Some(3), log_flag));
        let full = pol(|p| p.keep_last = Some(1));
        Policies::new(Policy::default())
            .with(kind, Scope::Full, full)
            .with(kind, INC, inc)
    }

    /// TigerBeetle as `bkp` writes it: snapshots every 6 h, and log segments every
    /// 15 min (5 min past) that chain to each other, the first to nothing.
    fn ten_days_of_logs() -> Vec<Candidate> {
        let mut all = fulls(&every("2026-11-11T00:00", Duration::hours(6), 40));
        let mut parent = None;
        for at in every("2026-11-11T00:05", Duration::minutes(15), 40 * 24) {
            let c = cand(TB, INC, at, parent.take());
            parent = Some(c.id.clone());
            all.push(c);
        }
        all
    }

    /// No kept backup has a deleted ancestor.
    fn assert_chains_whole(all: &[Candidate], got: &[Decision]) {
        let keep: HashMap<&str, bool> = got.iter().map(|d| (d.id.as_str(), d.keep)).collect();
        let by_id: HashMap<&str, &Candidate> = all.iter().map(|c| (c.id.as_str(), c)).collect();
        for c in all.iter().filter(|c| keep[c.id.as_str()]) {
            let mut cur = c;
            while let Some(p) = cur.parent.as_deref().and_then(|p| by_id.get(p)) {
                assert!(keep[p.id.as_str()], "{} needs deleted {}", c.id, p.id);
                cur = p;
            }
        }
    }

    fn kept_of(all: &[Candidate], got: &[Decision], scope: Scope) -> BTreeSet<String> {
        let kept = kept(got);
        let of_scope = all
            .iter()
            .filter(|c| c.scope == scope && kept.contains(&c.id));
        of_scope.map(|c| c.id.clone()).collect()
    }

    fn starting_from(all: &[Candidate], scope: Scope, since: &str) -> BTreeSet<String> {
        let newer = all
            .iter()
            .filter(|c| c.scope == scope && c.started_at >= t(since));
        newer.map(|c| c.id.clone()).collect()
    }

    #[test]
    fn incremental_chains_keep_their_links_and_base() {
        let all = ten_days_of_chains(DUCK);
        let now = t("2026-11-20T23:50");
        let got = plan(&all, &chain_policies(DUCK, true), now);
        assert_chains_whole(&all, &got);
        // daily 3 keeps the 23:45 incremental of the last 3 days, each pulls its chain back to 18:00.
        let mut incs = BTreeSet::new();
        for day in 18..=20 {
            let since = format!("2026-11-{day}T18:15");
            incs.extend(starting_from(&all, INC, &since).into_iter().take(23));
        }
        assert_eq!(kept_of(&all, &got, INC), incs);
        let bases = ids("2026-11-18T18:00 2026-11-19T18:00 2026-11-20T18:00");
        assert_eq!(kept_of(&all, &got, Scope::Full), bases);
        let base = ["kept: base of kept incremental 2026-11-18T18:15 (chain)"];
        assert_eq!(reasons(&got, "2026-11-18T18:00"), base);
        let link = ["kept: parent of kept incremental 2026-11-19T20:15 (chain)"];
        assert_eq!(reasons(&got, "2026-11-19T20:00"), link);
    }

    #[test]
    fn log_segments_are_kept_as_one_window_from_the_oldest_kept_snapshot() {
        let all = ten_days_of_logs();
        let now = t("2026-11-20T23:50");
        let snapshots = pol(|p| p.daily = Some(3));
        let policies = Policies::new(Policy::default()).with(TB, Scope::Full, snapshots);
        let got = plan(&all, &policies, now);
        let fulls = ids("2026-11-18T18:00 2026-11-19T18:00 2026-11-20T18:00");
        assert_eq!(kept_of(&all, &got, Scope::Full), fulls);
        // Every segment from the oldest kept snapshot on, none before: the
        // newest segment does not drag the whole log back to its start.
        assert_eq!(
            kept_of(&all, &got, INC),
            starting_from(&all, INC, "2026-11-18T18:00")
        );
        assert_eq!(reasons(&got, "2026-11-19T03:05"), [LOG_REASON]);
        assert_eq!(
            reasons(&got, "2026-11-18T17:50"),
            ["delete: no rule keeps it"]
        );
        assert!(got
            .iter()
            .all(|d| d.reasons.iter().all(|r| !r.contains("broken"))));

        // A rule that keeps older segments widens the window, and keeps the
        // snapshot the oldest of them replays onto.
        let logs = pol(|p| p.keep_within = Some(Duration::days(4)));
        let got = plan(&all, &policies.clone().with(TB, INC, logs), now);
        // Within 4 days: strictly after 2026-11-16T23:50, so from 2026-11-17T00:05.
        assert_eq!(
            kept_of(&all, &got, INC),
            starting_from(&all, INC, "2026-11-17T00:00")
        );
        let base = ["kept: snapshot that kept log segment 2026-11-17T00:05 replays onto (chain)"];
        assert_eq!(reasons(&got, "2026-11-17T00:00"), base);
        assert_eq!(
            kept_of(&all, &got, Scope::Full),
            ids("2026-11-17T00:00 2026-11-18T18:00 2026-11-19T18:00 2026-11-20T18:00")
        );
        assert_eq!(
            reasons(&got, "2026-11-17T06:00"),
            ["delete: no rule keeps it"]
        );
    }

    /// Snapshots taken with no cluster configured name none, while log
    /// segments name theirs (and those of older releases none): what names no
    /// cluster counts for the cluster that is named, and the log window is
    /// the same as where both name it.
    /// A cluster id is one source however it is written (`"01"`, `1`,
    /// `"1"`), as chains read it: never two sources of one cluster.
    #[test]
    fn a_cluster_is_one_source_however_its_id_is_written() {
        let of = |v: serde_json::Value| {
            let mut m =
                crate::manifest::tests::sample(Kind::Tigerbeetle, datetime!(2026-01-01 0:00 UTC));
            m.source.insert("cluster_id", v);
            source_of(&m)
        };
        for v in [
            serde_json::json!("01"),
            serde_json::json!(1),
            serde_json::json!("1"),
        ] {
            assert_eq!(of(v), "cluster 1");
        }
        assert_eq!(of(serde_json::json!("2")), "cluster 2");
    }

    #[test]
    fn a_snapshot_that_names_no_cluster_bounds_each_clusters_log() {
        let now = t("2026-11-20T23:50");
        let snapshots = pol(|p| p.daily = Some(3));
        let policies = Policies::new(Policy::default()).with(TB, Scope::Full, snapshots);
        let named = |segments: &str, snaps: &str| {
            let mut all = ten_days_of_logs();
            for c in all.iter_mut() {
                c.source = if c.scope == INC { segments } else { snaps }.into();
            }
            kept(&plan(&all, &policies, now))
        };
        let both = named("cluster 0", "cluster 0");
        assert_eq!(named("cluster 0", ""), both);
        // Segments of a release that named no cluster, snapshots that do.
        assert_eq!(named("", "cluster 0"), both);
        assert_eq!(named("", ""), both);
        // The window starts at the oldest kept snapshot: older segments go.
        assert!(both.len() < ten_days_of_logs().len() / 2, "{both:?}");
    }

    #[test]
    fn a_log_without_an_older_snapshot_is_kept_from_its_first_segment() {
        let mut all = ten_days_of_logs();
        all.retain(|c| c.scope == INC || c.started_at > t("2026-11-20T00:00"));
        // Rules keep a segment from before the oldest snapshot: only the whole
        // log from its start can restore it.
        let logs = pol(|p| p.keep_within = Some(Duration::days(1)));
        let got = plan(
            &all,
            &Policies::new(Policy::default()).with(TB, INC, logs),
            t("2026-11-20T23:50"),
        );
        let segments = all.iter().filter(|c| c.scope == INC).count();
        assert_eq!(kept_of(&all, &got, INC).len(), segments);
        assert_eq!(reasons(&got, "2026-11-11T00:05"), [LOG_FROM_START]);
        assert_eq!(kept_of(&all, &got, Scope::Full), ids("2026-11-20T18:00"));

        // Segments only: all of them stay.
        all.retain(|c| c.scope == INC);
        let got = plan(&all, &Policies::default(), NOW);
        assert!(got.iter().all(|d| d.keep));
    }

    #[test]
    fn a_missing_log_segment_inside_the_window_is_reported() {
        let mut all = ten_days_of_logs();
        let now = t("2026-11-20T23:50");
        // One segment lost after the 18:00 snapshot, one before it.
        all.retain(|c| c.id != "2026-11-20T19:05" && c.id != "2026-11-20T17:05");
        let got = plan(&all, &Policies::new(Policy::default()), now);
        let broken = [
            "kept: log segment inside the kept log window (chain)".to_string(),
            "chain broken: log segment 2026-11-20T19:05 before this one is missing".into(),
        ];
        assert_eq!(reasons(&got, "2026-11-20T19:20"), broken);
        let noted: Vec<_> = got
            .iter()
            .filter(|d| d.reasons.iter().any(|r| r.contains("broken")))
            .collect();
        assert_eq!(noted.len(), 1, "{noted:#?}");
    }

    /// Two PostgreSQL servers and two TigerBeetle clusters back up into one
    /// store: each source keeps its own daily backups and its own newest,
    /// whichever runs a little later each day. A server that stopped (replaced,
    /// or upgraded into a new system) keeps its last backup until it expires.
    #[test]
    fn each_source_of_a_kind_keeps_its_own_backups() {
        use crate::manifest::tests::sample;
        use serde_json::json;
        let mut all = Vec::new();
        for at in every("2026-11-10T02:00", Duration::DAY, 10) {
            for (k, offset) in [("a", 30), ("b", 10)] {
                let at = at + Duration::minutes(offset);
                let mut pg = sample(Kind::Postgres, at);
                let system = if k == "a" {
                    "7300000000000000001"
                } else {
                    "7300000000000000002"
                };
                pg.source.insert("system_identifier", json!(system));
                let mut tb = sample(Kind::Tigerbeetle, at);
                tb.source
                    .insert("cluster_id", json!(if k == "a" { "0" } else { "1" }));
                all.extend([pg, tb]);
            }
        }
        // Two servers that stopped: one a week ago, one past its retention.
        let stopped = |at: &str, system: &str| {
            let mut m = sample(Kind::Postgres, t(at));
            m.retention_days = 30;
            m.source.insert("system_identifier", json!(system));
            m
        };
        let (recent, expired) = (
            stopped("2026-11-13T02:00", "7300000000000000003"),
            stopped("2026-10-01T02:00", "7300000000000000004"),
        );
        all.extend([recent.clone(), expired.clone()]);
        for m in all.iter_mut() {
            m.operation = "snapshot".into();
        }
        let policy = Policies::new(pol(|p| p.daily = Some(3)));
        let got = plan(&candidates(&all), &policy, NOW);
        let kept_of = |kind: Kind, which: &dyn Fn(&crate::manifest::Manifest) -> bool| {
            let ids: BTreeSet<String> = kept(&got);
            all.iter()
                .filter(|m| m.kind == kind && which(m) && ids.contains(&m.id.to_string()))
                .count()
        };
        let fact = |m: &crate::manifest::Manifest, k: &str| m.source.get(k).cloned();
        for (kind, a, b) in [
            (
                Kind::Postgres,
                kept_of(Kind::Postgres, &|m| {
                    fact(m, "system_identifier") == Some(json!("7300000000000000001"))
                }),
                kept_of(Kind::Postgres, &|m| {
                    fact(m, "system_identifier") == Some(json!("7300000000000000002"))
                }),
            ),
            (
                Kind::Tigerbeetle,
                kept_of(Kind::Tigerbeetle, &|m| {
                    fact(m, "cluster_id") == Some(json!("0"))
                }),
                kept_of(Kind::Tigerbeetle, &|m| {
                    fact(m, "cluster_id") == Some(json!("1"))
                }),
            ),
        ] {
            assert_eq!((a, b), (3, 3), "{kind:?}: {got:#?}");
        }
        let kept = kept(&got);
        assert!(kept.contains(&recent.id.to_string()), "{got:#?}");
        assert!(!kept.contains(&expired.id.to_string()), "{got:#?}");
        let newest_b = all
            .iter()
            .rev()
            .find(|m| fact(m, "system_identifier") == Some(json!("7300000000000000002")))
            .unwrap();
        assert!(
            reasons(&got, &newest_b.id.to_string()).contains(
                &"kept: newest good backup of postgres/full (system 7300000000000000002)".into()
            ),
            "{:?}",
            reasons(&got, &newest_b.id.to_string())
        );
    }

    /// A base built from the log counts from the start of the segment that
    /// holds its newest row; a segment that claims rows far past its own start
    /// (every timestamp, in a manifest dated years back) holds none of them,
    /// and moves no base back.
    #[test]
    fn a_base_counts_from_the_segment_that_can_hold_its_newest_row() {
        use crate::manifest::tests::sample;
        use serde_json::json;
        let ns = |t: OffsetDateTime| t.unix_timestamp_nanos() as u64;
        let segment = |at: OffsetDateTime, after: u64, until: u64| {
            let mut m = sample(TB, at);
            m.operation = "logs".into();
            m.scope = INC;
            m.source.insert("cluster_id", json!("0"));
            m.source.insert("after", json!(after.to_string()));
            m.source.insert("until", json!(until.to_string()));
            m
        };
        let holding = t("2026-11-20T06:00");
        let row = ns(holding) - 60_000_000_000;
        let mut base = sample(TB, t("2026-11-20T07:00"));
        base.operation = "snapshot".into();
        base.source.insert("cluster_id", json!("0"));
        base.source.insert("from_log", json!(true));
        base.source.insert("newest_timestamp", json!(row));
        let genuine = segment(holding, row - 1_000, row + 1_000);
        let planted = segment(t("2023-01-01T00:00"), 0, u64::MAX);
        let at = |all: &[crate::manifest::Manifest]| {
            candidates(all)
                .into_iter()
                .find(|c| c.id == base.id)
                .unwrap()
                .started_at
        };
        assert_eq!(at(&[base.clone(), genuine.clone()]), holding);
        assert_eq!(at(&[base.clone(), genuine.clone(), planted]), holding);
        // Another cluster's segment holds none of this cluster's rows; one
        // that names no cluster may.
        let earlier = t("2026-11-20T05:00");
        let mut other = segment(earlier, row - 2_000, row + 2_000);
        other.source.insert("cluster_id", json!("1"));
        assert_eq!(at(&[other.clone(), base.clone(), genuine.clone()]), holding);
        other.source.remove("cluster_id");
        assert_eq!(at(&[other, base.clone(), genuine]), earlier);
    }

    #[test]
    fn each_stream_of_a_kind_keeps_its_own_backups() {
        // Two cold tiers replicated into one store, one always a little earlier.
        let mut all = Vec::new();
        for at in every("2026-11-19T00:00", Duration::HOUR, 36) {
            for (stream, offset) in [("/srv/a", 30), ("/srv/b", 10)] {
                let mut c = cand(
                    Kind::Parquet,
                    Scope::Full,
                    at + Duration::minutes(offset),
                    None,
                );
                c.id.push_str(stream);
                c.stream = stream.into();
                all.push(c);
            }
        }
        let got = plan(&all, &Policies::new(pol(|p| p.daily = Some(2))), NOW);
        let kept: Vec<_> = got
            .iter()
            .filter(|d| d.keep)
            .map(|d| d.id.clone())
            .collect();
        let of = |s: &str| kept.iter().filter(|k| k.ends_with(s)).count();
        assert_eq!((of("/srv/a"), of("/srv/b")), (2, 2), "{kept:?}");
        let newest_b = reasons(&got, "2026-11-20T11:10/srv/b");
        assert!(
            newest_b.contains(&"kept: newest good backup of parquet/full (/srv/b)".into()),
            "{newest_b:?}"
        );
    }

    #[test]
    fn expired_backups_are_kept_by_no_rule() {
        let mut all = fulls(&every("2026-10-22T02:00", Duration::DAY, 30));
        for c in &mut all {
            c.expires_at = Some(c.started_at + Duration::days(10));
        }
        let got = plan(&all, &Policies::new(pol(|p| p.daily = Some(30))), NOW);
        assert_eq!(kept(&got).len(), 10);
        assert!(kept(&got).contains("2026-11-11T02:00"));
        assert_eq!(
            reasons(&got, "2026-11-10T02:00"),
            ["delete: retention ran out"]
        );
        // Everything expired: the newest still stays, and says both, first
        // that it ran out; after what holds it, where something does.
        let later = t("2027-06-01T00:00");
        let got = plan(&all, &Policies::default(), later);
        assert_eq!(kept(&got), ids("2026-11-20T02:00"));
        let ran_out = "expired: retention ran out at 2026-11-30T02:00Z";
        let newest = "kept: newest good backup of tigerbeetle/full";
        assert_eq!(reasons(&got, "2026-11-20T02:00"), [ran_out, newest]);
        let held = "kept until 2099-01-01T00:00:00Z by Object Lock";
        all.last_mut().unwrap().held = Some(held.into());
        let got = plan(&all, &Policies::default(), later);
        assert_eq!(reasons(&got, "2026-11-20T02:00"), [held, ran_out, newest]);
    }

    #[test]
    fn broken_chains_are_reported() {
        let mut all = vec![cand(DUCK, Scope::Full, t("2026-11-19T00:00"), None)];
        #[rustfmt::skip]
        let links = [("2026-11-19T00:15", "gone"), ("2026-11-19T00:30", "2026-11-19T00:15"),
                     ("2026-11-20T00:15", "2026-11-19T00:00")];
        for (at, parent) in links {
            all.push(cand(DUCK, INC, t(at), Some(parent.into())));
        }
        let got = plan(&all, &Policies::new(pol(|p| p.keep_last = Some(10))), NOW);
        let last = "kept: 3rd of last 10";
        let first = [last, "chain broken: parent gone missing"];
        assert_eq!(reasons(&got, "2026-11-19T00:15"), first);
        let second = [
            "kept: 2nd of last 10",
            "chain broken: ancestor gone missing",
        ];
        assert_eq!(reasons(&got, "2026-11-19T00:30"), second);
        let whole = reasons(&got, "2026-11-20T00:15");
        assert!(whole.iter().all(|r| !r.contains("broken")), "{whole:?}");
    }

    #[test]
    fn order_of_input_does_not_matter() {
        let mut all = ten_days_of_chains(DUCK);
        for c in &mut all {
            c.id.insert(0, 'd');
            if let Some(p) = &mut c.parent {
                p.insert(0, 'd');
            }
        }
        all.extend(ten_days_of_logs());
        let mut twin = cand(TB, Scope::Full, t("2026-11-20T18:00"), None); // same time: tie on id
        twin.id.push('b');
        all.push(twin);
        let policies = chain_policies(DUCK, true).with(TB, Scope::Full, Policy::count_based());
        let want = plan(&all, &policies, NOW);
        let mut seed = 0x2545_f491_4f6c_dd1d_u64;
        for _ in 0..3 {
            for i in (1..all.len()).rev() {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                all.swap(i, (seed % (i as u64 + 1)) as usize);
            }
            assert_eq!(plan(&all, &policies, NOW), want);
        }
    }

    /// A backup held by Object Lock keeps what its chain needs by the same
    /// rules as any kept backup: an old snapshot keeps the log window after it
    /// (not only its parents), an incremental export its base.
    #[test]
    fn a_held_backup_keeps_its_chain_by_every_rule() {
        let policy = Policies::new(Policy::default());
        let mut backups = Vec::new();
        // Two snapshots a day apart, segments every 6 h from the first on.
        let old = cand(TB, Scope::Full, t("2026-11-01T00:00"), None);
        let new = cand(TB, Scope::Full, t("2026-11-02T00:00"), None);
        let mut parent = None;
        for at in every("2026-11-01T00:15", Duration::hours(6), 8) {
            let seg = cand(TB, INC, at, parent.clone());
            parent = Some(seg.id.clone());
            backups.push(seg);
        }
        backups.push(old.clone());
        backups.push(new.clone());
        let kept = |b: &[Candidate]| -> BTreeSet<String> {
            plan(b, &policy, NOW)
                .into_iter()
                .filter(|d| d.keep)
                .map(|d| d.id)
                .collect()
        };
        let without = kept(&backups);
        assert!(
            !without.contains(&old.id),
            "only the newest snapshot is kept"
        );
        for b in backups.iter_mut().filter(|b| b.id == old.id) {
            b.held = Some("kept until 2099-01-01T00:00:00Z by Object Lock".into());
        }
        let with = kept(&backups);
        assert!(with.contains(&old.id));
        // Every segment from the held snapshot on is kept (the log window).
        for b in backups.iter().filter(|b| b.scope == INC) {
            assert!(with.contains(&b.id), "segment {} dropped", b.id);
        }
        let reasons = plan(&backups, &policy, NOW);
        let held = reasons.iter().find(|d| d.id == old.id).unwrap();
        assert!(held.reasons[0].contains("Object Lock"), "{held:?}");
    }

    /// The default of every (kind, scope), as the table of the kinds gives it.
    #[test]
    fn default_policies_follow_the_kinds() {
        for kind in Kind::ALL {
            for scope in [Scope::Full, INC] {
                let want = match (kind, scope) {
                    (Kind::Parquet | Kind::Pgdump, _) => Policy::count_based(),
                    (_, Scope::Full) => Policy::gfs(),
                    (_, Scope::Incremental) => Policy::default(),
                };
                assert_eq!(default_policy(kind, scope), want, "{kind:?} {scope:?}");
            }
        }
    }
}
