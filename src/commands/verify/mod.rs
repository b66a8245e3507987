//! `bkp verify`: prove that backups are whole, and with `--drill` that they load.
//!
//! For every selected backup: each object exists with its recorded size, is read
//! once end to end (SHA-256 of the stored bytes, every encrypted chunk
//! authenticated, the compression framing, the content digest: see
//! [`pipeline::check`]), objects shared with earlier backups exist, and its chain
//! is complete (log segments meet, incrementals reach their full backup).
//!
//! The ledger audit compares the code-12 transfers on the store's account with
//! the manifests: a backup the ledger records as stored (and not deleted by
//! `cleanup`) must have a manifest, every manifest must have its transfer (or a
//! record waiting in the spool), and the account's balance must equal the bytes
//! the manifests retain.
//!
//! `--drill` restores the newest selected backup of each kind into a scratch
//! directory in the work directory and proves the data loads; the scratch
//! directory is removed afterwards, whatever happened.
//!
//! The run writes a report (`reports/verify/…`) and records one code-12 transfer
//! per kind checked (amount = bytes read; status failed when a problem was found).
//!
//! A verify run only reads, so it runs where CI runs restore drills: read-only
//! store credentials, no ledger, no local state. A report the store refuses is
//! kept locally, the ledger is optional, a work_dir that cannot be written is
//! replaced by a temporary one ([`local`]), and `--junit` writes one test case
//! per check ([`cases`]); the exit code says only what the checks found
//! ([`outcome`]).
//!
//! [`pipeline::check`]: crate::pipeline::check

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use anyhow::Result;
use time::OffsetDateTime;

use super::restore::{restorable, Source};
use super::run::OptionalLedger;
use super::{open_store, Ctx};
use crate::chain;
use crate::cli::VerifyArgs;
use crate::exit::{coded, Code};
use crate::id::BackupId;
use crate::lock::RunLock;
use crate::manifest::brief::Brief;
use crate::manifest::chunks::{chunk_key, is_chunk_id, ChunkMap};
use crate::manifest::tombstone::read_tombstones;
use crate::manifest::{self, Kind, Manifest, Trust};
use crate::store::Store;
use crate::workdir::WorkDir;

mod audit;
mod cases;
pub(crate) mod drill;
mod lag;
mod local;
mod objects;
mod outcome;
mod rollback;
mod survey;

use audit::{audit, Audit};
use drill::{drill, Drill};
use local::Local;
use objects::{check_backup, BackupCheck, StoreIndex};
use survey::{Recorded, Size, Survey};

/// What the checks of a run found.
pub struct Findings {
    /// The run's id: its report's name.
    pub run_id: BackupId,
    pub started_at: OffsetDateTime,
    pub checks: Vec<BackupCheck>,
    pub audit: Audit,
    pub drills: Vec<Drill>,
    /// Problems that concern no single backup.
    pub general: Vec<String>,
    /// What kept a check from looking: fails the run with its own code.
    pub trouble: Vec<anyhow::Error>,
    pub ledger: OptionalLedger,
    /// The run's keys: the report is sealed with them.
    pub trust: Trust,
    /// The code of the damage found when it is not 5: 13 when the store
    /// lost backups bkp recorded, or holds delete markers or overwritten
    /// versions on bkp's keys.
    pub damage_code: Option<Code>,
    /// What the copy verified (`--store NAME`) lacks of the primary.
    pub copy_lacks: Option<serde_json::Value>,
}

/// The time `--since` names, counted back from `now`.
fn since(args: &VerifyArgs, now: OffsetDateTime) -> Result<Option<OffsetDateTime>> {
    args.since
        .as_deref()
        .map(|s| crate::units::parse_since("--since", s, now))
        .transpose()
}

pub fn run(ctx: &Ctx, args: &VerifyArgs) -> Result<()> {
    let started_at = OffsetDateTime::now_utc();
    // A CI job has no work_dir of earlier runs, maybe no writable one at all.
    let local = Local::prepare(ctx)?;
    let ctx = &local.ctx;
    let looked = RunLock::acquire(&ctx.plan.work_dir, "verify", ctx.wait).and_then(|lock| {
        let store = open_store(&ctx.plan)?;
        let found = look(ctx, args, &local, store.as_ref(), started_at)?;
        Ok((lock, store, found))
    });
    match looked {
        Ok((_lock, store, found)) => {
            let junit = args.junit.as_ref().map(|_| {
                cases::report(&found, OffsetDateTime::now_utc(), ctx.plan.ledger.is_some())
            });
            let kept = local.report_file(found.run_id);
            outcome::finish(ctx, args, store.as_ref(), found, &kept, junit)
        }
        Err(e) => {
            // The CI's test report says why there are no results.
            if let Some(path) = &args.junit {
                let xml = cases::aborted(&e, started_at);
                if let Err(w) = outcome::write_file(path, xml.as_bytes()) {
                    ctx.ui.warn(&format!("{w:#}"));
                }
            }
            Err(e)
        }
    }
}

/// The backups the run verifies (`ID`, or those of `--kind`/`--since` the
/// survey `selected`), oldest first, each as its own manifest holds it (not
/// the catalog's copy); one that cannot be read goes to `unreadable`.
fn choose(
    store: &dyn Store,
    trust: &Trust,
    args: &VerifyArgs,
    selected: Vec<Manifest>,
    unreadable: &mut Vec<manifest::Unreadable>,
) -> Result<Vec<Manifest>> {
    let mut chosen = match &args.backup {
        Some(id) => vec![manifest::find(store, trust, id, args.kind.map(Kind::from))?],
        None => {
            let mut fresh = Vec::new();
            for m in selected {
                match manifest::catalog::current(store, trust, &m) {
                    Ok(m) => fresh.push(m),
                    Err(e) => unreadable.push(manifest::Unreadable {
                        key: m.key(),
                        error: format!("{e:#}"),
                        code: crate::exit::classify(&e),
                    }),
                }
            }
            fresh
        }
    };
    chosen.sort_by_key(|m| (m.started_at, m.id));
    Ok(chosen)
}

/// Every backup in brief, and whole only those the run has a use for
/// ([`Survey`]); the backups it checks ([`choose`]); the manifests that
/// could not be read.
fn survey(
    ctx: &Ctx,
    args: &VerifyArgs,
    store: &dyn Store,
    trust: &Trust,
    started_at: OffsetDateTime,
) -> Result<(Survey, Vec<Manifest>, Vec<manifest::Unreadable>)> {
    let wants = survey::Wants {
        select: args
            .backup
            .is_none()
            .then_some((args.kind.map(Kind::from), since(args, started_at)?)),
        // What the ledger audit reads (a copy is not audited).
        chunked: ctx.plan.ledger.is_some() && ctx.plan.primary.is_none(),
    };
    let mut survey = Survey::read(store, trust, &wants)?;
    let mut unreadable = std::mem::take(&mut survey.unreadable);
    let selected = std::mem::take(&mut survey.selected);
    let chosen = choose(store, trust, args, selected, &mut unreadable)?;
    Ok((survey, chosen, unreadable))
}

/// Every check of the run: objects and chains, the ledger audit, the drills.
fn look(
    ctx: &Ctx,
    args: &VerifyArgs,
    local: &Local,
    store: &dyn Store,
    started_at: OffsetDateTime,
) -> Result<Findings> {
    let plan = &ctx.plan;
    // The keys prove each manifest, encrypted or not (see `manifest/seal.rs`).
    let trust = super::reading_trust(plan, args.trust.trust.clone())?;
    // Another installation's store is named as such, not reported damaged
    // (and no report is written into it).
    manifest::marker::check(store, &trust)?;
    let (survey, chosen, unreadable) = survey(ctx, args, store, &trust, started_at)?;
    // Damage found is a problem (exit 5); trouble that kept a check from looking
    // (a store or ledger that did not answer) is not, and ends the run with its
    // own code once every other check is done.
    let mut trouble: Vec<anyhow::Error> = Vec::new();
    let mut general: Vec<String> = Vec::new();
    sort_unreadable(&unreadable, &mut trouble, &mut general);
    let keyring = trust.keys();
    // A rolled-back store: backups bkp recorded that it no longer shows.
    let lost = rollback::check(store, &trust, &survey.newest, args)?;
    let damage_code = (!lost.is_empty()).then_some(Code::Rollback);
    general.extend(lost);
    general.extend(listed_twice(&survey.briefs, store));

    // Objects and chains.
    let chains = chain::Index::new(&survey.briefs);
    let index = StoreIndex {
        chains: &chains,
        recorded: &survey.recorded,
    };
    // Each chunk list is read once per run: the check of its backup takes
    // what the ledger audit needs of it (chunk keys and sizes, not the list),
    // and only when the audit will run.
    let mut retained = plan.ledger.as_ref().map(|_| Retained::default());
    let mut checks = Vec::new();
    let mut checked = BTreeSet::new();
    for m in &chosen {
        ctx.ui.detail(&format!(
            "verifying {} {} {}",
            m.kind.as_str(),
            m.operation,
            m.id
        ));
        let c = check_backup(
            ctx,
            store,
            keyring,
            m,
            &index,
            &mut checked,
            retained.as_mut(),
        )?;
        for p in &c.problems {
            ctx.ui.warn(&format!("{} {}: {p}", m.kind.as_str(), m.id));
        }
        checks.push(c);
    }

    // The WAL archive: every file read and checked against its sealed name,
    // and no gap from the oldest base backup on.
    match wal_of(ctx, args, store, &trust, &survey.bases, started_at)? {
        Ok(problems) => general.extend(problems),
        Err(e) => trouble.push(e),
    }

    // A copy (`--store NAME`): what it lacks of the primary.
    let copy_lacks = plan
        .primary
        .as_ref()
        .map(|p| lag::compare(ctx, p, store, &trust));

    // Ledger audit. The cluster is probed once: one that is not there costs
    // milliseconds, not a timeout per request. It records the primary's
    // backups: a copy is not audited against it.
    let mut ledger = OptionalLedger::probe(ctx, !local.is_temporary());
    let audit = match (&plan.ledger, &plan.primary) {
        (None, _) => Audit::default(),
        (Some(_), Some(_)) => {
            ctx.ui.info("ledger audit skipped: the ledger records the primary store's backups, and this is a copy");
            Audit::default()
        }
        (Some(cfg), None) => {
            let deleting: BTreeSet<u128> = read_tombstones(store, &trust)?
                .iter()
                .map(|t| t.manifest.id.as_u128())
                .collect();
            // Dropped with the audit, before the drills.
            let chunks = retained.take().unwrap_or_default();
            let result = match ledger.down() {
                Some(e) => Err(e),
                None => audit(cfg, store, chunks, &survey, &chosen, &deleting),
            };
            result.unwrap_or_else(|e| {
                let unreachable = crate::exit::classify(&e) == Some(Code::Transient);
                if unreachable {
                    ledger.mark_down(&e);
                }
                // A configured ledger that cannot be read is a check that did
                // not run: the drill goes on, but it does not pass (a drill that
                // stays green while the ledger is down would hide exactly the
                // missing manifests the audit exists to find). A CI drill with
                // no ledger leaves [ledger] out of its config.
                let e = e.context("the ledger audit could not read the ledger");
                if unreachable && args.drill {
                    ctx.ui.warn(&format!(
                        "{e:#}: the drill goes on without the audit and will exit 6 \
                         (leave [ledger] out of the drill's config to skip the audit on purpose)"
                    ));
                }
                trouble.push(e);
                Audit::default()
            })
        }
    };
    for p in &audit.problems {
        ctx.ui.warn(&format!("ledger: {p}"));
    }

    drop(survey);

    // Drills.
    let mut drills = Vec::new();
    if args.drill {
        let mut newest: BTreeMap<Kind, &Manifest> = BTreeMap::new();
        for m in chosen.iter().filter(|m| restorable(m)) {
            newest.insert(m.kind, m);
        }
        if newest.is_empty() {
            general.push("--drill: no selected backup can be drilled (snapshots, full or incremental exports, replications)".into());
        }
        let src = Source {
            store,
            keyring,
            trust: &trust,
            work: WorkDir::new(&plan.work_dir),
            progress: ctx.progress(),
            ui: ctx.ui,
        };
        for m in newest.values() {
            let d = match drill(ctx, &src, m) {
                Ok(d) => d,
                Err(e) => {
                    trouble.push(e);
                    continue;
                }
            };
            for p in &d.details {
                ctx.ui
                    .warn(&format!("drill {} {}: {p}", m.kind.as_str(), m.id));
            }
            drills.push(d);
        }
    }
    Ok(Findings {
        run_id: BackupId::new_v7(started_at),
        started_at,
        checks,
        audit,
        drills,
        general,
        trouble,
        ledger,
        trust,
        damage_code,
        copy_lacks,
    })
}

/// Manifests that could not be read: damage is a problem; trouble that kept
/// the read from looking (the store did not answer) ends the run with its
/// own code.
fn sort_unreadable(
    unreadable: &[manifest::Unreadable],
    trouble: &mut Vec<anyhow::Error>,
    general: &mut Vec<String>,
) {
    for u in unreadable {
        let text = format!("manifest {} cannot be read: {}", u.key, u.error);
        match u.code {
            Some(code) if !crate::exit::is_damage(&coded(code, "")) => {
                trouble.push(coded(code, text))
            }
            _ => general.push(text),
        }
    }
}

/// [`check_wal`] when the run checks the WAL archive (no `ID`, and `--kind`
/// postgres or none): the problems found, each warned of, or the trouble
/// that kept it from looking.
fn wal_of(
    ctx: &Ctx,
    args: &VerifyArgs,
    store: &dyn Store,
    trust: &Trust,
    bases: &[Manifest],
    started_at: OffsetDateTime,
) -> Result<Result<Vec<String>>> {
    if args.backup.is_some() || args.kind.is_some_and(|k| Kind::from(k) != Kind::Postgres) {
        return Ok(Ok(Vec::new()));
    }
    let since = since(args, started_at)?;
    Ok(match check_wal(ctx, store, trust, bases, since) {
        Ok(problems) => {
            for p in &problems {
                ctx.ui.warn(p);
            }
            Ok(problems)
        }
        Err(e) => Err(e.context("the WAL archive could not be checked")),
    })
}

/// Checks the WAL archives of the store: each file (archived since `since`)
/// read once and matched to its sealed name, and the segments from each
/// system's oldest base backup (of `bases`) on without gaps. The problems
/// found.
fn check_wal(
    ctx: &Ctx,
    store: &dyn Store,
    trust: &Trust,
    bases: &[Manifest],
    since: Option<OffsetDateTime>,
) -> Result<Vec<String>> {
    let mut problems = Vec::new();
    for a in crate::manifest::wal::archive::archives(store, bases, true)? {
        let mut read = 0u64;
        let mut files = 0u64;
        for o in &a.objects {
            if since.is_some_and(|t| o.modified.is_some_and(|m| m < t)) {
                continue;
            }
            match crate::manifest::wal::archive::check(store, trust, a.system, o) {
                Ok(n) => {
                    read += n;
                    files += 1;
                }
                Err(e) if crate::exit::is_damage(&e) => {
                    problems.push(format!("WAL archive of system {}: {e:#}", a.system))
                }
                Err(e) => return Err(e),
            }
        }
        for (tli, after, before) in a.summary.gaps() {
            problems.push(format!(
                "WAL archive of system {}: timeline {tli} has a gap after {after} up to {before}: no recovery can pass it; take a new base backup (bkp snapshot --kind postgres) and find out why archive_command skipped segments",
                a.system
            ));
        }
        ctx.ui.info(&format!(
            "{}; {files} files read and verified ({})",
            a.describe(OffsetDateTime::now_utc()),
            crate::ui::size(read)
        ));
    }
    Ok(problems)
}

/// The chunks the manifests retain, each once with its stored size: what the
/// audit adds to the bytes the manifests retain. `verify` fills it as it
/// checks each backup (that backup's chunk list in hand), and the audit for
/// the manifests not checked, so that each chunk list is read once per run
/// and none is kept whole: a chunk takes some 50 bytes here once, where a
/// list takes ~100 per chunk for every backup naming it (a TB-sized file in
/// 4 MiB chunks: ~25 MB per backup). A run without an audit keeps none.
#[derive(Default)]
pub struct Retained {
    /// Chunk ids (decoded) and stored sizes, per kind: the key is
    /// [`chunk_key`] of the two.
    chunks: HashMap<(Kind, [u8; 32]), u64>,
    /// Keys of chunks whose id is no chunk id: never from a list
    /// [`crate::chunks::load`] admits, kept as keys all the same.
    odd: HashMap<String, u64>,
    /// Backups whose chunk list was taken, or found damaged (`verify`
    /// reports that with the backup): not read again.
    seen: HashSet<BackupId>,
}

impl Retained {
    /// Takes the chunks of `m`'s list (`None`: the list is damaged).
    pub fn add(&mut self, m: &Manifest, map: Option<&ChunkMap>) {
        self.seen.insert(m.id);
        for c in map.into_iter().flat_map(|map| map.chunks.iter().flatten()) {
            let mut id = [0u8; 32];
            // Lowercase only: one id, one key.
            if is_chunk_id(&c.0) && hex::decode_to_slice(&c.0, &mut id).is_ok() {
                self.chunks.insert((m.kind, id), c.1);
            } else {
                self.odd.insert(chunk_key(m.kind, &c.0), c.1);
            }
        }
    }

    /// Takes the chunks of `m` unless its list was taken already.
    fn read(&mut self, store: &dyn Store, m: &Manifest) -> Result<()> {
        if m.chunks.is_none() || self.seen.contains(&m.id) {
            return Ok(());
        }
        match crate::chunks::load(store, m) {
            Ok(map) => self.add(m, map.as_ref()),
            // `verify` reports the damage with the backup.
            Err(e) if crate::exit::is_damage(&e) => self.add(m, None),
            Err(e) => return Err(e),
        }
        Ok(())
    }

    fn bytes(&self) -> u64 {
        self.chunks.values().chain(self.odd.values()).sum()
    }
}

/// Each backup id listed under more than one kind, as a problem: chains, the
/// ledger audit and cleanup look backups up by id, and would take one for
/// the other.
fn listed_twice(all: &[Brief], store: &dyn Store) -> Vec<String> {
    let shared = manifest::shared_ids_of(all.iter().map(|b| (b.id, b.kind)));
    let problem = |(id, keys): &(crate::id::BackupId, Vec<String>)| {
        manifest::shared_id_error(*id, keys, store)
    };
    shared.iter().map(problem).collect()
}
