//! `bkp logs`: TigerBeetle accounts and transfers created since the last watermark →
//! segment → compress → encrypt → SHA-256 → upload → manifest → ledger.
//!
//! Stateless: the watermark is where the chain's head segment ends
//! ([`chain::log_head`]), with its marks per row kind (see [`tblog::Watermark`];
//! the first run starts from the beginning), and each segment names the previous
//! one as its parent, so the chain is explicit and a gap is visible. A run with
//! nothing new uploads no data object but still writes a note (a manifest saying
//! the log is current up to its bound, so freshness stays provable); a note
//! continues nothing, so it is written without the store lease, which only a run
//! that captures takes (and then checks under it that the head is still the
//! head: one listing of the manifests near it, the whole chain read again
//! only when that listing changed).

use std::collections::HashMap;
use std::io::Write;
use std::time::Duration;

use anyhow::{Context, Result};
use serde_json::json;

use super::run::{json_report, Body, Run, Spec, Stored};
use super::Ctx;
use crate::chain;
use crate::exit::{coded, Code};
use crate::id::BackupId;
use crate::lease::{self, Lease};
use crate::ledger::Operation;
use crate::manifest::brief::Brief;
use crate::manifest::tigerbeetle::{insert_watermark, interval, watermark, LOGS, SNAPSHOT};
use crate::manifest::{self, Kind, Manifest, Scope};
use crate::store::Store;
use crate::tigerbeetle::tblog;
use crate::{pipeline, ui};

/// Up to this many audit records of bkp's own (about ten days of runs) wait
/// for the next real segment; beyond, they are captured on their own.
const AUDIT_ROWS_DEFERRED: u32 = 1024;

/// The TigerBeetle backups of a store (snapshots and log segments): every one
/// in brief, oldest first, which their chain is judged on; whole, those that
/// started since [`manifest::catalog::WINDOW`] before the newest snapshot,
/// where what a restore past the head needs is (all of them where no snapshot
/// was taken), and the cluster's segments that end last, among which is the
/// head; and those that could not be read. Ten years of segments are never
/// held whole.
struct History {
    briefs: Vec<Brief>,
    recent: HashMap<BackupId, Manifest>,
    unreadable: Vec<manifest::Unreadable>,
}

impl History {
    fn read(store: &dyn Store, trust: &manifest::Trust, cluster: u128) -> Result<History> {
        let margin = manifest::catalog::WINDOW;
        let mut briefs = Vec::new();
        let mut recent: Vec<Manifest> = Vec::new();
        let mut newest: Option<time::OffsetDateTime> = None;
        // The segments that end last (as `chain::log_head` orders them).
        let mut tip: (u64, Vec<Manifest>) = (0, Vec::new());
        let unreadable = manifest::catalog::fold(
            store,
            trust,
            Kind::Tigerbeetle,
            manifest::catalog::Depth::Recent,
            &mut |m| match m {
                Some(m) => {
                    briefs.push(Brief::of(&m));
                    if chain::Member::is_log_of(&m, cluster) && !m.is_note() {
                        let until = interval(&m).map_or(u64::MAX, |(_, u)| u);
                        if until > tip.0 || tip.1.is_empty() {
                            tip = (until, Vec::new());
                        }
                        if until == tip.0 {
                            tip.1.push(m.clone());
                        }
                    }
                    if is_snapshot(&m) && newest.is_none_or(|t| m.started_at > t) {
                        newest = Some(m.started_at);
                        recent.retain(|r| r.started_at >= m.started_at - margin);
                    }
                    if newest.is_none_or(|t| m.started_at >= t - margin) {
                        recent.push(m);
                    }
                }
                None => {
                    briefs.clear();
                    recent.clear();
                    newest = None;
                    tip = (0, Vec::new());
                }
            },
        )?;
        briefs.sort_unstable_by_key(|b| (b.started_at, b.id));
        let mut recent: HashMap<BackupId, Manifest> =
            recent.into_iter().map(|m| (m.id, m)).collect();
        for m in tip.1 {
            recent.entry(m.id).or_insert(m);
        }
        Ok(History {
            briefs,
            recent,
            unreadable,
        })
    }

    /// Backup `id` of the history, whole: as it was kept, else read again
    /// from its key (a segment the snapshot was taken during that started
    /// longer than the margin before it).
    fn whole(
        &self,
        store: &dyn Store,
        trust: &manifest::Trust,
        id: BackupId,
    ) -> Result<std::borrow::Cow<'_, Manifest>> {
        match self.recent.get(&id) {
            Some(m) => Ok(std::borrow::Cow::Borrowed(m)),
            None => manifest::find(store, trust, &id.to_string(), Some(Kind::Tigerbeetle))
                .map(std::borrow::Cow::Owned),
        }
    }
}

/// Whether `m` is a snapshot a restore to a point in time starts from.
fn is_snapshot(m: &impl chain::Member) -> bool {
    m.scope() == Scope::Full && m.operation() == SNAPSHOT
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
    let (trust, store) = super::backup_store(plan)?;
    let run = Run::begin(
        ctx,
        store.as_ref(),
        &trust,
        true,
        Spec {
            kind: Kind::Tigerbeetle,
            scope: Scope::Incremental,
            operation: Operation::Logs,
            compression: plan.compression,
            retention_days,
        },
    )?;
    let lease_for = tb.map_or(Duration::from_secs(600), |t| t.log_lease);
    let job = Job {
        ctx,
        cfg: &cfg,
        store: store.as_ref(),
        trust: &trust,
        run: &run,
        lease_for,
    };
    // Where [ledger] is this very cluster, the session the run opened for its
    // record captures too: one client's message buffers (tens of MiB), not two.
    let lent = crate::ledger::lend(&cfg);
    let shared = lent.is_some();
    let outcome = match lent.map_or_else(|| tblog::reader(&cfg), tblog::session_with) {
        Err(e) => Ok(Err(e)),
        Ok(client) => {
            let outcome = job.attempt(&client);
            if shared {
                crate::ledger::give_back(&cfg, client);
            }
            outcome
        }
    }?;

    let store = store.as_ref();
    run.finish(outcome, |m, elapsed, ledger| {
        if ctx.ui.json {
            return json_report(m, store, elapsed, ledger, json!({}));
        }
        let (after, until) = interval(m).unwrap_or_default();
        let count = |k: &str, noun: &str| {
            crate::units::count(m.source.get(k).and_then(|v| v.as_u64()).unwrap_or(0), noun)
        };
        if m.is_note() {
            let deferred = m.source.contains_key("audit_rows_deferred");
            ctx.ui.info(&format!(
                "log {} : nothing new after timestamp {after}{}; the log is current",
                m.id,
                if deferred {
                    " but bkp's own audit records (they go with the next segment)"
                } else {
                    ""
                }
            ));
        } else {
            ctx.ui.info(&format!(
                "log segment {}: {}, {} and {} in ({after}, {until}], {} stored in {:.1}s",
                m.id,
                count("accounts", "account"),
                count("transfers", "transfer"),
                count("expiries", "expiry"),
                ui::size(m.stored_bytes()),
                elapsed.as_secs_f64()
            ));
        }
        if let Some(n) = ledger {
            ctx.ui.detail(&n.to_string());
        }
        ui::print(&m.id.to_string())
    })
}

/// What one run of `logs` works with.
#[derive(Clone, Copy)]
struct Job<'a> {
    ctx: &'a Ctx,
    cfg: &'a tblog::ClusterConfig,
    store: &'a dyn Store,
    trust: &'a manifest::Trust,
    run: &'a Run<'a>,
    lease_for: Duration,
}

impl Job<'_> {
    /// The run's outcome, for `run.finish` to record; `Err` when the lease is held
    /// by another run, which is no failed run and records nothing.
    fn attempt(&self, client: &crate::tigerbeetle::client::Client) -> Result<Result<Stored>> {
        let Job {
            ctx,
            cfg,
            store,
            trust,
            run,
            lease_for,
        } = *self;
        // The session was opened before the chain is read: the cluster's
        // registration of its sessions (~0.6 s) runs meanwhile.
        let seen = match self.look(client, None) {
            Ok(s) => s,
            Err(e) => return Ok(Err(e)),
        };
        for (segment, b) in &seen.breaks {
            ctx.ui.warn(&format!(
            "the TigerBeetle log chain is broken: segment {segment}: {b}; point-in-time restore cannot cross this gap — take a snapshot to start a restorable point after it"
        ));
        }
        // Whether anything is new is known without the lease: a run that finds
        // nothing stores a note, which continues nothing (see `chain::log_head`),
        // so an idle run costs a few requests.
        if seen.idle() {
            return Ok(self.store_note(&seen));
        }
        crate::failpoint::pause("logs-looked");
        // One host at a time continues this cluster's chain.
        let warn = |m: &str| ctx.ui.warn(m);
        let mut lease = Lease::acquire(
            store,
            trust,
            (
                &format!("tigerbeetle-logs-{:032x}", cfg.cluster_id),
                lease::Covers {
                    kind: Some(crate::kinds::Kind::Tigerbeetle),
                    tigerbeetle_cluster: Some(cfg.cluster_id),
                },
            ),
            lease::holder(super::run::hostname(), &run.id.to_string()),
            lease_for,
            &warn,
        )?;
        crate::failpoint::hit("logs-leased");
        let outcome = self.continue_chain(client, &mut lease, seen);
        lease.release();
        Ok(outcome)
    }
}

/// Where the chain stands, and what the cluster holds beyond it.
struct Seen {
    /// Segments whose link is broken, with the break.
    breaks: Vec<(crate::id::BackupId, chain::Break)>,
    /// The head segment.
    parent: Option<crate::id::BackupId>,
    /// Where the head ends.
    from: tblog::Watermark,
    /// The cluster's newest marks, read after the head.
    now: tblog::Watermark,
    /// Rows past `from` are only bkp's own audit records, which wait.
    only_audit: bool,
    /// What a restore to a point in the new segment needs of earlier backups
    /// (see [`pitr_needs`]).
    needs: Vec<String>,
    /// The manifest keys the chain was read with from where a run continuing
    /// the head could start (see [`Window`]).
    window: Window,
}

/// The manifest keys after `after` ([`manifest::catalog::WINDOW`] before a
/// lease's length before the head started, or before this run with no head:
/// where a run that continues the head has its key, its clock or its wait
/// for the lease allowing), readable or not, sorted. Under the lease the chain is read again only when a listing from
/// `after` differs: a year of manifests is read once, not twice, while the
/// capture's buffers are held.
#[derive(Debug, Clone, PartialEq)]
struct Window {
    after: String,
    keys: Vec<String>,
}

impl Seen {
    /// Nothing to capture.
    fn idle(&self) -> bool {
        !self.from.behind(&self.now) || self.only_audit
    }

    /// What every manifest of this run records of its source: the cluster,
    /// and where it starts.
    fn source(&self, cfg: &tblog::ClusterConfig) -> crate::manifest::facts::Facts {
        let mut source = crate::manifest::facts::Facts::new();
        source.insert("cluster_id", json!(cfg.cluster_id.to_string()));
        source.insert("after", json!(self.from.after.to_string()));
        source
    }
}

impl Job<'_> {
    /// Reads the chain's head (unless `before`, an earlier look, still holds:
    /// see [`Window`]), then the cluster's newest marks: refuses a chain that
    /// cannot continue safely and a cluster behind it.
    fn look(
        &self,
        client: &crate::tigerbeetle::client::Client,
        before: Option<Seen>,
    ) -> Result<Seen> {
        let seen = match before {
            Some(b) if self.unchanged(&b.window)? => b,
            _ => self.read_chain()?,
        };
        self.marks(client, seen)
    }

    /// Whether the manifests listed from the window's start are the keys it
    /// holds: then the head read with it is still the head.
    fn unchanged(&self, w: &Window) -> Result<bool> {
        let mut keys: Vec<String> = self
            .store
            .list_after(&manifest::manifest_dir(Kind::Tigerbeetle), &w.after)?
            .into_iter()
            .map(|o| o.key)
            .filter(|k| k.ends_with(".json"))
            .collect();
        keys.sort_unstable();
        Ok(keys == w.keys)
    }

    /// The chain as the store holds it: its head, where the head ends, its
    /// breaks, and what a restore past it needs. The cluster's marks are
    /// left for [`Job::marks`].
    fn read_chain(&self) -> Result<Seen> {
        let Job {
            cfg,
            store,
            trust,
            lease_for,
            ..
        } = *self;
        let history = History::read(store, trust, cfg.cluster_id)?;
        let (all, unreadable) = (&history.briefs, &history.unreadable);
        let breaks = chain::Index::new(all).log_breaks();
        let head = match chain::log_head(all, cfg.cluster_id) {
            Some(b) => Some(history.whole(store, trust, b.id)?),
            None => None,
        };
        let head = head.as_deref();
        // A manifest that cannot be read may continue the head, and continuing
        // the head again would fork the chain. It may have started before the head
        // did (it waited for the lease, or its host's clock is behind): anything
        // from a lease's length before the head counts.
        let since = head.map(|h| h.started_at - lease_for);
        manifest::refuse_unreadable_within(unreadable, since, None, || {
            "the log chain cannot continue safely".into()
        })?;
        let (parent, from) = match head {
            Some(m) => {
                let from = watermark(m).with_context(|| {
                    format!(
                    "log manifest {} has no readable interval (`source.after`, `source.until`, \
                     `source.accounts_until` and `source.transfers_until` must be decimal \
                     timestamps): the chain cannot continue from it; take a snapshot and remove \
                     the manifest, or restore it from a copy",
                    m.key()
                )
                })?;
                (Some(m.id), from)
            }
            None => (None, tblog::Watermark::default()),
        };
        // As far back as a catalog read lists the manifests it checks, before
        // the head (or this run, with no head yet): a host whose clock is
        // behind, or whose run waited, continues the head with a key from
        // before it.
        let t = since.map_or(self.run.started_at, |s| s.min(self.run.started_at))
            - manifest::catalog::WINDOW;
        let after = manifest::manifest_key(Kind::Tigerbeetle, crate::id::BackupId::floor_at(t));
        let dir = manifest::manifest_dir(Kind::Tigerbeetle);
        let mut keys: Vec<String> = all
            .iter()
            .map(Brief::key)
            .chain(unreadable.iter().map(|u| u.key.clone()))
            .filter(|k| *k > after && k.starts_with(&dir) && k.ends_with(".json"))
            .collect();
        keys.sort_unstable();
        keys.dedup();
        Ok(Seen {
            breaks,
            parent,
            from,
            now: tblog::Watermark::default(),
            only_audit: false,
            needs: pitr_needs(store, trust, &history, head)?,
            window: Window { after, keys },
        })
    }

    /// `seen` with the cluster's newest marks, read now, and whether what
    /// lies past the head is only bkp's own audit records.
    fn marks(&self, client: &crate::tigerbeetle::client::Client, seen: Seen) -> Result<Seen> {
        let Job { ctx, cfg, .. } = *self;
        let plan = &ctx.plan;
        let from = seen.from;
        // The client's errors name the cluster and its addresses.
        let now =
            tblog::newest_marks(client).context("failed to read the cluster's newest timestamp")?;
        if now.after < from.after {
            return Err(coded(
                Code::Integrity,
                format!(
                "the TigerBeetle cluster at {} holds nothing newer than timestamp {}, but the log \
                 chain already covers up to {}: this is not the cluster the chain was captured \
                 from, or it was restored to an earlier state. Start a new chain with a snapshot",
                cfg.addresses, now.after, from.after
            ),
            ));
        }
        // When the audit ledger is this cluster, every run adds its own record:
        // rows that are only those wait for the next real segment, so that a
        // quiet cluster costs no segment per run.
        let only_audit = from.behind(&now)
            && match plan.ledger.as_ref() {
                Some(l) if l.cluster_id == cfg.cluster_id => {
                    let ledger = l.ledger;
                    tblog::only_rows_of(
                        client,
                        &from,
                        &now,
                        AUDIT_ROWS_DEFERRED,
                        &|t| crate::ledger::is_audit_transfer(ledger, t),
                        &|a| crate::ledger::is_audit_account(ledger, a),
                    )?
                }
                _ => false,
            };
        Ok(Seen {
            now,
            only_audit,
            ..seen
        })
    }

    /// The manifest of a run that found nothing new: a note that the log is
    /// current up to where the head ends, as of now. It stores no data and
    /// continues nothing, so it needs no lease.
    fn store_note(&self, seen: &Seen) -> Result<Stored> {
        let Job { cfg, run, .. } = *self;
        let mut source = seen.source(cfg);
        if seen.only_audit {
            source.insert("audit_rows_deferred", json!(true));
        }
        insert_watermark(&mut source, &seen.from);
        source.insert("accounts", json!(0));
        source.insert("transfers", json!(0));
        run.store_manifest(run.manifest(Body {
            objects: Vec::new(),
            parent: seen.parent,
            source,
            ..Body::default()
        }))
    }

    /// Continues the chain under `lease`: checks its head again (another host
    /// may have continued it since the look that found `before`), captures
    /// what the cluster holds after it (or notes that nothing is new) and
    /// stores the manifest.
    fn continue_chain(
        &self,
        client: &crate::tigerbeetle::client::Client,
        lease: &mut Lease,
        before: Seen,
    ) -> Result<Stored> {
        let Job {
            ctx,
            cfg,
            store,
            run,
            ..
        } = *self;
        let plan = &ctx.plan;
        let seen = self.look(client, Some(before))?;
        lease.keep_alive()?;
        if seen.idle() {
            return self.store_note(&seen);
        }
        let mut source = seen.source(cfg);
        let (from, now) = (seen.from, seen.now);
        let suffix = run.suffix(".tblog", plan.compression);
        let key = manifest::object_key(Kind::Tigerbeetle, LOGS, run.id, run.started_at, &suffix);
        let mut stats = None;
        let mut lost = None;
        let entry = pipeline::upload(
            store,
            &key,
            &run.metadata(Scope::Incremental),
            plan.compression,
            run.keyring,
            ctx.progress(),
            |w| {
                // A large backlog may take longer than the lease: renewed as
                // the segment is written.
                let mut w = KeepAlive {
                    inner: w,
                    lease: &mut *lease,
                    lost: &mut lost,
                };
                stats = Some(tblog::capture_on(client, from, now, &mut w)?);
                Ok(())
            },
        );
        if let Some(e) = lost {
            return Err(e);
        }
        let entry = entry?;
        let stats = stats.context("the capture produced no statistics")?;
        let seg = &stats.segment;
        insert_watermark(&mut source, &stats.next);
        source.insert("accounts", json!(seg.accounts));
        source.insert("transfers", json!(seg.transfers));
        source.insert("expiries", json!(seg.expiries));
        source.insert("first_timestamp", json!(seg.first_timestamp.to_string()));
        source.insert("last_timestamp", json!(seg.last_timestamp.to_string()));
        // Every request of the run's session: the newest marks' too.
        source.insert("requests", json!(client.requests()));
        // Under Object Lock the chain it continues is held as long as it is.
        run.hold(&[], seen.needs.clone())?;
        // The decisive check: a run that outlived its lease stores no manifest.
        lease.renew()?;
        run.store_manifest(run.manifest(Body {
            objects: vec![entry],
            parent: seen.parent,
            source,
            ..Body::default()
        }))
    }
}

/// The manifests and objects a restore to a point after `head` reads besides
/// the new segment: the newest snapshot (its manifest, objects and chunk
/// list; its chunks were held by the snapshot run that shared them) and the
/// segments from the one it was taken during up to `head`; with no snapshot,
/// the whole chain.
fn pitr_needs(
    store: &dyn Store,
    trust: &manifest::Trust,
    history: &History,
    head: Option<&Manifest>,
) -> Result<Vec<String>> {
    let all = &history.briefs;
    let index = chain::Index::new(all);
    let snapshot = all
        .iter()
        .filter(|m| is_snapshot(*m))
        .max_by_key(|m| (m.started_at, m.id));
    let mut keys = Vec::new();
    if let Some(s) = snapshot {
        keys.push(s.key());
        keys.extend(history.whole(store, trust, s.id)?.needed_keys());
    }
    let mut seen = std::collections::HashSet::new();
    let mut cur = head.and_then(|h| index.get(h.id));
    while let Some(m) = cur.filter(|m| seen.insert(m.id)) {
        // One the catalog lists whose manifest is gone holds nothing a
        // restore could read: the walk goes on past it.
        match history.whole(store, trust, m.id) {
            Ok(whole) => {
                keys.push(m.key());
                keys.extend(whole.needed_keys());
            }
            Err(e) if crate::exit::classify(&e) == Some(Code::NotFound) => {}
            Err(e) => return Err(e),
        }
        if snapshot.is_some_and(|s| m.started_at < s.started_at) {
            break;
        }
        cur = m.parent().and_then(|p| index.get(p));
    }
    Ok(keys)
}

/// The segment's writer, renewing the lease as it goes
/// ([`Lease::keep_alive`]); once the lease is lost every write fails, and the
/// lease's error waits in `lost`.
struct KeepAlive<'w, 'l> {
    inner: &'w mut dyn Write,
    lease: &'w mut Lease<'l>,
    lost: &'w mut Option<anyhow::Error>,
}

impl Write for KeepAlive<'_, '_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        crate::failpoint::pause("logs-write");
        if self.lost.is_none() {
            if let Err(e) = self.lease.keep_alive() {
                *self.lost = Some(e);
            }
        }
        if self.lost.is_some() {
            return Err(std::io::Error::other(
                "the store lease of the log chain was lost",
            ));
        }
        self.inner.write(buf)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::tests::sample;
    use crate::manifest::Trust;
    use crate::store::memory::MemoryStore;
    use time::{Duration, OffsetDateTime};

    fn segment(at: OffsetDateTime, parent: Option<&Manifest>, after: u64, until: u64) -> Manifest {
        let mut m = sample(Kind::Tigerbeetle, at);
        m.scope = Scope::Incremental;
        m.operation = LOGS.into();
        m.parent = parent.map(|p| p.id);
        m.source.insert("after", json!(after.to_string()));
        m.source.insert("until", json!(until.to_string()));
        m.objects[0].key = format!("tigerbeetle/segment-{}.tblog.zst", m.id);
        m
    }

    #[test]
    fn the_head_and_the_backups_after_the_newest_snapshot_are_kept_whole_the_rest_read_again() {
        let store = MemoryStore::default();
        let trust = Trust::none();
        let now = OffsetDateTime::now_utc();
        let first = sample(Kind::Tigerbeetle, now - Duration::days(20));
        let a = segment(now - Duration::days(10), None, 0, 10);
        let b = segment(now - Duration::days(9), Some(&a), 10, 20);
        // The newest snapshot, taken after the log stopped: only what started
        // shortly before it is kept whole.
        let snap = sample(Kind::Tigerbeetle, now - Duration::hours(1));
        for m in [&first, &a, &b, &snap] {
            manifest::write(&store, m, None).unwrap();
        }
        let history = History::read(&store, &trust, 0).unwrap();
        assert_eq!(history.briefs.len(), 4);
        assert!(history.unreadable.is_empty());
        // The snapshot (in the margin) and the segment that ends last.
        let mut kept: Vec<BackupId> = history.recent.keys().copied().collect();
        kept.sort();
        assert_eq!(kept, vec![b.id, snap.id]);
        // A segment outside both is read from its key; one gone from the
        // store is not found.
        let again = history.whole(&store, &trust, a.id).unwrap();
        assert_eq!((again.id, &again.objects), (a.id, &a.objects));
        store.delete(&a.key()).unwrap();
        let gone = history.whole(&store, &trust, a.id).unwrap_err();
        assert_eq!(crate::exit::classify(&gone), Some(Code::NotFound));
        let head = chain::log_head(&history.briefs, 0).map(|h| h.id);
        assert_eq!(head, Some(b.id));
        let whole = history.whole(&store, &trust, b.id).unwrap();
        assert_eq!((whole.id, &whole.objects), (b.id, &b.objects));
        let needs = pitr_needs(&store, &trust, &history, Some(&whole)).unwrap();
        let want = [
            snap.key(),
            snap.objects[0].key.clone(),
            b.key(),
            b.objects[0].key.clone(),
        ];
        assert_eq!(needs, want);
    }
}
