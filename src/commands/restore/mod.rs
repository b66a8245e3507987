//! `bkp restore`: one front for every kind. `ID|latest`, `--kind` and `--at`
//! become one [`RestorePlan`] with one store open; the target is checked before
//! anything is downloaded ([`target`]); then the engine of the backup's kind
//! rebuilds it in staging beside the target, verified, and the staging is put in
//! place.
//!
//! `latest` is the newest *restorable* backup of the kind asked for (with `--at`,
//! at or before that time): a TigerBeetle snapshot (never a log segment), a
//! DuckDB export, a Parquet replication. An id may name a backup of any kind.
//!
//! The engines ([`tigerbeetle`], [`duckdb`], [`parquet`]) take what they need
//! (a [`Source`] to read from, a directory to fill) so that `verify --drill`
//! calls them too.

use std::path::Path;
use std::sync::Arc;

use anyhow::Result;
use time::OffsetDateTime;

use super::Ctx;
use crate::cli::RestoreArgs;
use crate::config::{Plan, StorePlan};
use crate::crypto::Keyring;
use crate::exit::{coded, Code};
use crate::kinds::{At, Delivers};
use crate::manifest::{self, parquet as replicated, Kind, Manifest, Trust};
use crate::stages::progress::Progress;
use crate::store::Store;
use crate::workdir::WorkDir;

mod archived;
pub mod countdown;
mod dry_run;
mod reads;
pub use reads::read_by;
pub mod duckdb;
pub mod parquet;
pub mod pgbase;
pub mod pgconf;
pub mod pgdump;
pub mod pgpitr;
pub mod pitr;
pub mod target;
pub mod tigerbeetle;

/// Where an engine reads a backup from.
pub struct Source<'a> {
    pub store: &'a dyn Store,
    /// The keys; `None` when the config has no encryption (an encrypted object
    /// is then refused with a config error naming its key).
    pub keyring: Option<&'a Keyring>,
    /// What manifests read during the restore must prove (the keys' seals).
    pub trust: &'a Trust,
    pub work: WorkDir,
    pub progress: Arc<dyn Progress>,
    pub ui: crate::ui::Ui,
}

impl Source<'_> {
    /// Says (with `-v`) which backup is restored from where into `target`.
    pub fn announce(&self, m: &Manifest, target: &Path) {
        self.ui.detail(&format!(
            "restoring {} {} from {} into {}",
            m.kind.describe().noun,
            m.id,
            self.store.identity(),
            target.display()
        ));
    }
}

/// What the command line asked of a restore, in the engines' terms: an
/// engine sees neither the CLI's types nor a run's context.
pub struct Options<'a> {
    /// The configuration: the sections an engine reads (the cluster, the
    /// PostgreSQL server) and the paths a restore never replaces.
    pub plan: &'a Plan,
    /// `--target`: a path, or the new database's name for a PostgreSQL dump.
    pub target: &'a Path,
    pub force: bool,
    /// `--yes`: no countdown before an existing target is replaced.
    pub yes: bool,
    /// `--replicas`: the data files of a whole cluster.
    pub replicas: u8,
    /// `--at` as written.
    pub at: Option<&'a str>,
    pub accept_content_mismatch: bool,
    /// `--schema`, `--table` and `--no-owner` (PostgreSQL dumps).
    pub schema: &'a [String],
    pub table: &'a [String],
    pub no_owner: bool,
}

impl<'a> Options<'a> {
    pub fn of(plan: &'a Plan, a: &'a RestoreArgs) -> Self {
        Options {
            plan,
            target: a.target(),
            force: a.force,
            yes: a.yes,
            replicas: a.replicas,
            at: a.at.as_deref(),
            accept_content_mismatch: a.accept_content_mismatch,
            schema: &a.schema,
            table: &a.table,
            no_owner: a.no_owner,
        }
    }

    /// The envelope of a restore of `kind` into [`Options::target`] (a kind
    /// that delivers a database on a server has none: see [`pgdump`]).
    pub fn envelope(&self, kind: Kind) -> target::Envelope<'a> {
        let (shape, beside, beside_is) = match kind.describe().delivers {
            Delivers::File { beside, beside_is } => (target::Shape::File, beside, beside_is),
            Delivers::Directory | Delivers::Database => (target::Shape::Dir, &[][..], ""),
        };
        target::Envelope {
            path: self.target,
            shape,
            force: self.force,
            yes: self.yes,
            precious: precious(self.plan),
            work_dir: &self.plan.work_dir,
            beside,
            beside_is,
            in_use: engine(kind).ok().and_then(|e| e.in_use),
        }
    }
}

/// A kind's restore engine, and how it tells that a process uses an
/// existing target (see [`super::code`]).
#[derive(Clone, Copy)]
pub struct Engine {
    pub run: Run,
    pub in_use: Option<InUse>,
}

pub type Run = fn(&Source, &RestorePlan, &Options) -> Result<()>;
pub type InUse = fn(&Path) -> Result<()>;

/// What a drill found out about a backup, for its report.
pub type Facts = std::collections::BTreeMap<String, serde_json::Value>;

/// A kind's drill (`verify --drill`): restores backup `m` into a scratch
/// directory with the kind's engine and proves that the data loads; damage
/// is an error [`crate::exit::is_damage`] tells apart.
pub type Drill = fn(&Plan, &Source, &Manifest, &Path, &mut Facts) -> Result<()>;

/// The restore engine of `kind`, or the error that says it has none.
fn engine(kind: Kind) -> Result<Engine> {
    super::code(kind).restore.ok_or_else(|| {
        coded(
            Code::Config,
            format!(
                "{}s are not restored by `bkp restore`",
                kind.describe().noun
            ),
        )
    })
}

/// What one restore does.
#[derive(Debug)]
pub struct RestorePlan {
    pub kind: Kind,
    /// The backup to restore; `None` only for a TigerBeetle point-in-time
    /// restore with no snapshot at or before `--at` (the log is replayed from
    /// the beginning).
    pub backup: Option<Manifest>,
    pub at: Option<OffsetDateTime>,
}

pub fn run(ctx: &Ctx, args: &RestoreArgs) -> Result<()> {
    let plan = &ctx.plan;
    let at = parse_at(args.at.as_deref())?;
    let thaw = args
        .request_restore
        .as_deref()
        .map(archived::parse)
        .transpose()?;
    // `latest` names its kind: a target that cannot take it is refused before
    // the store is opened (the engine checks it again as it stages).
    let opts = Options::of(plan, args);
    if args.backup == "latest" && args.into.is_none() && !args.dry_run {
        let kind = Kind::from(args.kind);
        if shape(kind).is_some() {
            opts.envelope(kind).check()?;
        }
    }
    let store = super::open_store(plan)?;
    // With [encryption] configured the keys are needed even for unencrypted
    // backups: they prove each manifest (see `manifest/seal.rs`).
    let trust = super::reading_trust(plan, args.trust.trust.clone())?;
    // Every byte read is counted for the run's ledger record.
    let counting = crate::store::counting::Counting::new(store.as_ref());
    let store: &dyn Store = &counting;
    let started_at = OffsetDateTime::now_utc();
    let rp = resolve(store, &trust, args, at)?;
    if args.backup == "latest" && at.is_none() {
        refuse_lost(ctx, store, &trust, &rp)?;
    }
    // A backup the current key did not seal is used only as the operator
    // said (`--trust`, or the sealed list): say so every time.
    if let Some((m, why)) = rp
        .backup
        .as_ref()
        .and_then(|m| trust.excused_why(m).map(|w| (m, w)))
    {
        ctx.ui.warn(&format!(
            "backup {} is not sealed by the current key: it is used because {why}. Nothing else proves it is the backup bkp made: check what is restored before relying on it",
            m.id
        ));
    }
    if rp.kind != Kind::Pgdump
        && !(args.schema.is_empty() && args.table.is_empty() && !args.no_owner)
    {
        return Err(coded(
            Code::Config,
            "--schema, --table and --no-owner are for PostgreSQL dumps: a backup of another kind restores whole",
        ));
    }
    // A cluster of several replicas starts from a base built from the log, or
    // from nothing (see `tigerbeetle::run_cluster`), never from one replica's file.
    let rp = if args.replicas > 1 {
        if rp.kind != Kind::Tigerbeetle || rp.at.is_none() || args.backup != "latest" {
            return Err(coded(
                Code::Config,
                "--replicas delivers a TigerBeetle cluster at a point in time: use it with --at TIME and `latest` (the default); a base restores by its id without --replicas",
            ));
        }
        let cluster = tigerbeetle::configured_cluster(plan, "--replicas")?.cluster_id;
        let at_ns = rp
            .at
            .map_or(0, |t| u64::try_from(t.unix_timestamp_nanos()).unwrap_or(0));
        let base = tigerbeetle::cluster_base(store, &trust, cluster, args.replicas, at_ns)?;
        RestorePlan { backup: base, ..rp }
    } else {
        rp
    };
    // A kind `bkp restore` does not restore is refused before it is recorded,
    // thawed or planned.
    let engine = engine(rp.kind)?;
    if args.dry_run {
        return dry_run::run(ctx, store, &trust, &rp, args, &opts);
    }
    if let Some(req) = thaw {
        thaw_first(ctx, store, &trust, &rp, (args, &opts), req)?;
    }
    let src = Source {
        store,
        keyring: trust.keys(),
        trust: &trust,
        work: WorkDir::new(&plan.work_dir),
        progress: ctx.progress(),
        ui: ctx.ui,
    };
    if let Some(into) = &args.into {
        if rp.kind != Kind::Tigerbeetle || args.backup != "latest" {
            return Err(coded(
                Code::Config,
                "--into replays the TigerBeetle log alone: use it with --at TIME and `latest` (the default)",
            ));
        }
        // A snapshot is a data file: the log is replayed alone.
        let rp = RestorePlan { backup: None, ..rp };
        let held = crate::ui::hold_documents();
        let result = tigerbeetle::run_into(&src, plan, &rp, into);
        let note = record(ctx, &counting, &rp, started_at, result.is_ok());
        return released(held, note, result);
    }
    // The document is printed after the ledger record, with its outcome.
    let held = crate::ui::hold_documents();
    let result = (engine.run)(&src, &rp, &opts);
    let note = record(ctx, &counting, &rp, started_at, result.is_ok());
    let result = result.map_err(|e| match crate::exit::classify(&e) {
        Some(Code::Archived) => archived::explain(ctx, store, &trust, &rp, e),
        _ => e,
    });
    released(held, note, result)
}

/// `--request-restore`: asks for the archived objects the restore reads (a
/// replay `--into` a cluster reads the log alone), once the target is known
/// to take the restore: nothing is paid for a restore that would be refused.
fn thaw_first(
    ctx: &Ctx,
    store: &dyn Store,
    trust: &Trust,
    rp: &RestorePlan,
    (args, opts): (&RestoreArgs, &Options),
    req: archived::Request,
) -> Result<()> {
    let backup = match &args.into {
        Some(_) => None,
        None => rp.backup.clone(),
    };
    if let (None, Some(_)) = (&args.into, shape(rp.kind)) {
        opts.envelope(rp.kind).check()?;
    }
    let reading = RestorePlan {
        kind: rp.kind,
        backup,
        at: rp.at,
    };
    archived::request(ctx, store, trust, &reading, req)
}

/// Prints the restore's document (held back while it was recorded) with the
/// ledger's outcome; the restore's own result first.
fn released(
    held: crate::ui::Held,
    note: Option<super::run::LedgerNote>,
    result: Result<()>,
) -> Result<()> {
    let add = note
        .map(|n| vec![("ledger", serde_json::json!(n))])
        .unwrap_or_default();
    let printed = held.release(&add);
    result?;
    printed
}

/// `latest` refuses a store that lost backups: for a replication (chosen
/// from the newest manifests alone, so [`resolve`] did not look) the heads
/// after it; with a `[ledger]`, the newest backup it records as stored.
fn refuse_lost(ctx: &Ctx, store: &dyn Store, trust: &Trust, rp: &RestorePlan) -> Result<()> {
    if rp.kind == Kind::Parquet {
        manifest::head::refuse_lost(store, trust, rp.kind, rp.backup.as_ref(), None)?;
    }
    let Some(cfg) = &ctx.plan.ledger else {
        return Ok(());
    };
    match manifest::head::ledger_lost(cfg, store, rp.kind, rp.backup.as_ref()) {
        Ok(Some(lost)) => Err(lost),
        Ok(None) => Ok(()),
        Err(e) => {
            ctx.ui.warn(&format!(
                "what the ledger records as stored could not be compared with the store: {e:#}"
            ));
            Ok(())
        }
    }
}

/// Records the restore in the audit ledger (operation `restore`, from the
/// kind's account to the store's restored-bytes account, so the store
/// account's balance stays the bytes retained): who restored when is then in
/// the ledger beside the backups. Never fails the restore: an unreachable
/// ledger spools the record, and a problem is a warning.
fn record(
    ctx: &Ctx,
    store: &crate::store::counting::Counting,
    rp: &RestorePlan,
    started_at: OffsetDateTime,
    completed: bool,
) -> Option<super::run::LedgerNote> {
    let m = rp.backup.as_ref();
    let record = super::run::RunRecord {
        id: crate::id::BackupId::new_v7(started_at),
        kind: rp.kind,
        scope: m.map_or(manifest::Scope::Full, |m| m.scope),
        operation: crate::ledger::Operation::Restore,
        compression: m.map_or(ctx.plan.compression, |m| m.compression),
        encrypted: m.is_some_and(|m| m.encryption.is_some()),
        completed,
        retention_days: 0,
        started_at,
        bytes: store.bytes_read(),
    };
    match super::run::send_record(ctx, &record.to_ledger(store)) {
        Ok(Some(note)) => {
            ctx.ui.detail(&note.to_string());
            Some(note)
        }
        Ok(None) => None,
        Err(e) => {
            ctx.ui.warn(&format!(
                "the restore is not recorded in the audit ledger: {e:#}"
            ));
            None
        }
    }
}

/// `ID|latest` + `--kind` + `--at` → the backup to restore.
pub fn resolve(
    store: &dyn Store,
    trust: &Trust,
    args: &RestoreArgs,
    at: Option<OffsetDateTime>,
) -> Result<RestorePlan> {
    if args.backup != "latest" {
        let m = manifest::find(store, trust, &args.backup, None)?;
        let kind = m.kind;
        if at.is_some() && kind.describe().at == At::Never {
            return Err(coded(
                Code::Config,
                format!(
                    "--at chooses the {} backup itself: pass `latest` with --at, or an id without it",
                    kind.as_str()
                ),
            ));
        }
        if !restorable(&m) {
            return Err(coded(
                Code::Config,
                format!(
                    "backup {} is a {} {}, which is not restored on its own: {}",
                    m.id,
                    m.kind.as_str(),
                    m.operation,
                    if m.kind.describe().at == At::Log {
                        "restore a snapshot, with --at TIME to replay the log segments after it"
                    } else {
                        "restore the backup `bkp list` shows it belongs to"
                    }
                ),
            ));
        }
        if let Some(at) = at.filter(|at| kind.describe().at == At::Wal && m.finished_at > *at) {
            return Err(coded(
                Code::Config,
                format!(
                    "base backup {} finished at {}, after --at {}: it can only be replayed forward from its end. Pass `latest` to choose the newest base backup that finished by then",
                    m.id,
                    m.finished_at
                        .format(&time::format_description::well_known::Rfc3339)
                        .unwrap_or_default(),
                    at.format(&time::format_description::well_known::Rfc3339)
                        .unwrap_or_default()
                ),
            ));
        }
        return planned(kind, Some(m), at);
    }
    let kind = Kind::from(args.kind);
    // The newest backup that can be restored to `at`.
    let fits = |m: &Manifest| {
        // A base backup is consistent only from its end on.
        let from = match m.kind.describe().at {
            At::Wal => m.finished_at,
            At::Log | At::Never => m.started_at,
        };
        // One data file at a point in time: a base of several replicas
        // is no such file (`--replicas N` starts from one).
        let one_file = at.is_none() || crate::manifest::tigerbeetle::replica_count(m) == 1;
        restorable(m) && at.is_none_or(|at| from <= at) && one_file
    };
    // The newest listed up to `at`, for rollback detection.
    let listed = |m: &Manifest| at.is_none_or(|u| m.started_at <= u);
    // Each read holds those two only, not the kind's whole history.
    let choose = |depth| -> Result<(Option<Manifest>, Vec<manifest::Unreadable>)> {
        let ([newest, listed], unreadable) =
            manifest::newest_each(store, trust, Some(kind), depth, [&fits, &listed])?;
        manifest::head::refuse_lost(store, trust, kind, listed.as_ref(), at)?;
        Ok((newest, unreadable))
    };
    let backup = match kind {
        // One read of the newest manifests only: a replication lists a whole set.
        Kind::Parquet if at.is_none() => Some(replicated::latest(store, trust)?),
        _ => {
            let (newest, mut unreadable) = choose(manifest::catalog::Depth::Recent)?;
            // The catalog chose it; the manifest itself is what is restored. One
            // the catalog still holds but the store no longer does (deleted
            // behind it) sends the choice to every manifest key.
            let reread = |m: Option<Manifest>| {
                m.map(|m| manifest::catalog::reread(store, trust, &m))
                    .transpose()
            };
            let chosen = match reread(newest) {
                Ok(m) => m,
                Err(_) => {
                    let (newest, u) = choose(manifest::catalog::Depth::Complete)?;
                    unreadable = u;
                    reread(newest)?
                }
            };
            // `latest` must not fall back to an older backup in silence when a
            // newer manifest could not be read.
            let after = chosen.as_ref().map(|m| m.started_at);
            manifest::refuse_unreadable_within(&unreadable, after, at, || match &chosen {
                Some(m) => format!("the newest readable {} backup is {}", kind.as_str(), m.id),
                None => format!("no readable {} backup was found", kind.as_str()),
            })?;
            chosen
        }
    };
    // A log replays into an empty cluster when no snapshot is old enough.
    if backup.is_none() && !(kind.describe().at == At::Log && at.is_some()) {
        return Err(coded(
            Code::NotFound,
            format!(
                "no {} in {}{}: {}, or check the store settings",
                kind.describe().noun,
                store.identity(),
                args.at
                    .as_ref()
                    .map(|t| format!(" at or before {t}"))
                    .unwrap_or_default(),
                kind.describe().first
            ),
        ));
    }
    planned(kind, backup, at)
}

/// The plan to restore `backup` (of `kind`) to `at`, once a base backup to
/// replay WAL onto records where its WAL starts: refused before anything is
/// read, not after the base backup was downloaded.
fn planned(
    kind: Kind,
    backup: Option<Manifest>,
    at: Option<OffsetDateTime>,
) -> Result<RestorePlan> {
    if let (Some(m), Some(_)) = (&backup, at) {
        if kind.describe().at == At::Wal {
            pgpitr::wal_start(m)?;
        }
    }
    Ok(RestorePlan { kind, backup, at })
}

/// The shape a restore of `kind` delivers at a path (`None`: a database on a
/// server, named by `--target`).
pub fn shape(kind: Kind) -> Option<target::Shape> {
    match kind.describe().delivers {
        Delivers::Directory => Some(target::Shape::Dir),
        Delivers::File { .. } => Some(target::Shape::File),
        Delivers::Database => None,
    }
}

/// Whether `m` is a backup that restores on its own (with its chain), and so
/// can be drilled.
pub fn restorable(m: &Manifest) -> bool {
    m.kind.describe().restores == Some(m.operation.as_str())
}

/// The configured TigerBeetle cluster id (0 when none is): the cluster whose log
/// a point-in-time restore replays, and which its new data files belong to.
pub fn cluster_id(plan: &Plan) -> u128 {
    plan.tigerbeetle
        .as_ref()
        .and_then(|t| t.cluster.as_ref())
        .map_or(0, |c| c.cluster_id)
}

/// The paths a restore must never replace, from the config.
pub fn precious(plan: &Plan) -> Vec<target::Precious> {
    let mut p = vec![
        ("the work directory", plan.work_dir.clone()),
        ("the config file", plan.source.clone()),
    ];
    if let StorePlan::Local(root) = &plan.store {
        p.push(("the backup store", root.clone()));
    }
    p.extend(plan.source_files());
    p
}

/// `--at TIME`, parsed (RFC 3339).
pub fn parse_at(at: Option<&str>) -> Result<Option<OffsetDateTime>> {
    at.map(|t| {
        OffsetDateTime::parse(t, &time::format_description::well_known::Rfc3339).map_err(|e| {
            coded(
                Code::Config,
                format!("--at {t:?} is not an RFC 3339 time ({e}); example: 2026-11-22T13:05:00Z"),
            )
        })
    })
    .transpose()
}
