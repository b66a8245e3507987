//! One file per subcommand, each a short recipe that reads as its chain of stages.
//! This module holds what they share: the run context, opening the store and
//! sweeping the work directory; `run` holds a run's envelope and bookkeeping.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Result;

use crate::config::{Plan, StorePlan};
use crate::id::BackupId;
use crate::manifest::{Kind, Trust};
use crate::stages::progress::Progress;
use crate::store::{local::LocalStore, s3::S3Store, Opened, Store};
use crate::ui::Ui;

pub mod base;
pub mod cat;
pub mod check;
pub mod cleanup;
pub mod copy;
pub mod export;
pub mod key;
pub mod legacy;
pub mod list;
pub mod logs;
pub mod notify;
pub mod pgbase;
pub mod pgdump;
pub mod replicate;
pub mod restore;
pub mod run;
pub mod show;
pub mod snapshot;
pub mod sqlite;
pub mod status;
pub mod verify;
pub mod wal;

/// Everything a subcommand needs, built by `main` from flags and config.
pub struct Ctx {
    pub plan: Plan,
    pub ui: Ui,
    pub wait: Duration,
}

impl Ctx {
    pub fn progress(&self) -> Arc<dyn Progress> {
        self.ui.progress()
    }
}

/// A quiet context for tests, its work directory `work_dir`.
#[cfg(test)]
pub(crate) fn test_ctx(work_dir: &std::path::Path) -> Ctx {
    let toml = format!(
        "work_dir = \"{}\"\n[store]\ntype = \"local\"\npath = \"/nonexistent\"\n[encryption]\nenabled = false\n[ledger]\naddresses = \"3000\"\n",
        work_dir.display()
    );
    let d = tempfile::tempdir().unwrap();
    let cfg = d.path().join("bkp.toml");
    std::fs::write(&cfg, toml).unwrap();
    Ctx {
        plan: crate::config::load(&cfg, &Default::default()).unwrap(),
        ui: crate::ui::Ui {
            level: crate::ui::Level::Quiet,
            json: false,
            bars: false,
        },
        wait: std::time::Duration::ZERO,
    }
}

/// What `bkp check` found of one thing: its name and the outcome.
pub type Probe = (&'static str, Result<String>);

/// A kind's code at the commands' level, beside its descriptor's data
/// ([`crate::kinds::ALL`]): what `bkp snapshot --kind K` runs, its restore
/// engine, its drill and what `bkp check` probes of its section.
pub struct KindCode {
    /// `None`: another subcommand makes its backups (`export`, `replicate`).
    pub snapshot: Option<fn(&Ctx) -> Result<()>>,
    /// `None`: `bkp restore` does not restore it.
    pub restore: Option<restore::Engine>,
    pub drill: Option<restore::Drill>,
    pub probes: fn(&Plan) -> Vec<Probe>,
}

/// Each kind's code: the one place the commands are taught a new source.
pub fn code(kind: Kind) -> KindCode {
    use restore::Engine;
    use verify::drill;
    let engine = |run, in_use| Some(Engine { run, in_use });
    match kind {
        Kind::Tigerbeetle => KindCode {
            snapshot: Some(snapshot::run),
            restore: engine(restore::tigerbeetle::run, None),
            drill: Some(drill::tigerbeetle),
            probes: check::tigerbeetle,
        },
        Kind::Duckdb => KindCode {
            snapshot: None,
            restore: engine(restore::duckdb::run, Some(restore::duckdb::in_use)),
            drill: Some(drill::duckdb),
            probes: check::duckdb,
        },
        Kind::Parquet => KindCode {
            snapshot: None,
            restore: engine(restore::parquet::run, None),
            drill: Some(drill::parquet),
            probes: check::replicate,
        },
        Kind::Pgdump => KindCode {
            snapshot: None,
            restore: engine(restore::pgdump::run, None),
            drill: Some(drill::pgdump),
            probes: check::postgres,
        },
        // Its section is [postgres], probed for the dumps.
        Kind::Postgres => KindCode {
            snapshot: Some(pgbase::run),
            restore: engine(restore::pgbase::run, Some(restore::pgbase::in_use)),
            drill: Some(drill::pgbase),
            probes: |_| Vec::new(),
        },
        Kind::Kms => KindCode {
            snapshot: None,
            restore: None,
            drill: None,
            probes: |_| Vec::new(),
        },
        Kind::Sqlite => KindCode {
            snapshot: Some(sqlite::run),
            restore: engine(sqlite::restore, Some(sqlite::in_use)),
            drill: Some(sqlite::drill),
            probes: sqlite::probes,
        },
    }
}

/// The store `p` describes, opened for a run that reads or writes it.
pub fn open_plan_store(p: &StorePlan) -> Result<Box<dyn Store>> {
    Ok(match p {
        StorePlan::Local(p) => Box::new(LocalStore::new(p)?),
        StorePlan::S3(s) => Box::new(S3Store::new(s.clone())?),
    })
}

/// The class a store's data objects are written in, and the one of the
/// rest (see `manifest::usage`): S3's classes (`storage_class`, else the
/// default), or a local store's disk.
pub fn store_classes(plan: &StorePlan) -> (&str, &'static str) {
    use crate::manifest::usage::STANDARD;
    match plan {
        StorePlan::S3(s) => (
            s.storage_class
                .as_ref()
                .map_or(STANDARD, |c| c.class.as_str()),
            STANDARD,
        ),
        StorePlan::Local(_) => ("local disk", "local disk"),
    }
}

pub fn open_store(plan: &Plan) -> Result<Box<dyn Store>> {
    Ok(open(plan)?.into_boxed())
}

/// The config's store, opened the one way every run opens it (with the
/// catalog's local copies of its bases kept in the work directory).
pub fn open(plan: &Plan) -> Result<Opened> {
    let opened = match &plan.store {
        StorePlan::Local(p) => Opened::Plain(Box::new(LocalStore::new(p)?)),
        StorePlan::S3(s) => Opened::S3(S3Store::new(s.clone())?),
    };
    crate::manifest::catalog::keep_bases_in(
        opened.store(),
        crate::workdir::WorkDir::new(&plan.work_dir).catalog_bases(),
    );
    Ok(opened)
}

/// The run's keys and what its readers trust (see `manifest/seal.rs`):
/// `accepted` are backups the operator vouches for by id (`--trust`). The
/// store's sealed lists (`manifest/legacy.rs`) are read, through a store of
/// their own, only if a document needs them.
pub fn trust(plan: &Plan, accepted: Vec<BackupId>) -> Result<Trust> {
    let unsealed_before = plan.encryption.as_ref().and_then(|e| e.unsealed_before);
    let at = plan.store.clone();
    let lists = crate::manifest::legacy::Lists::new(move |trust| {
        let store: Box<dyn Store> = match &at {
            StorePlan::Local(p) => Box::new(LocalStore::new(p)?),
            StorePlan::S3(s) => Box::new(S3Store::new(s.clone())?),
        };
        crate::manifest::legacy::load(store.as_ref(), trust)
    });
    let at = plan.store.clone();
    let pinned = plan.encryption.as_ref().and_then(|e| e.store_id.clone());
    let bound = crate::manifest::marker::Bound::new(
        move || -> Result<Box<dyn Store>> {
            Ok(match &at {
                StorePlan::Local(p) => Box::new(LocalStore::new(p)?),
                StorePlan::S3(s) => Box::new(S3Store::new(s.clone())?),
            })
        },
        pinned,
    );
    let trust = Trust::new(plan.keyring()?, unsealed_before, accepted)
        .with_lists(lists)
        .with_binding(bound);
    Ok(match &plan.replicate {
        Some(r) if !r.encrypt => trust.with_plaintext(Kind::Parquet),
        _ => trust,
    })
}

/// [`trust`] for a run that reads backups, with the store's identity
/// checked first (its marker, against `[encryption] store_id` when pinned):
/// a marker that cannot be read, or that is not the pinned store's, is the
/// store's problem, reported once, not a fault of each document read.
pub fn reading_trust(plan: &Plan, accepted: Vec<BackupId>) -> Result<Trust> {
    let trust = trust(plan, accepted)?;
    trust.binding()?;
    Ok(trust)
}

/// What a backup run opens before anything else: its trust (the keys and
/// what they believe) and its store, checked to take writes.
pub fn backup_store(plan: &Plan) -> Result<(Trust, Box<dyn Store>)> {
    let trust = trust(plan, Vec::new())?;
    let store = open_store(plan)?;
    store.preflight_writes()?;
    Ok((trust, store))
}

/// Removes what dead runs of any subcommand left in the work directory (see
/// `workdir.rs`), or with `dry` only says what it would remove; returns how many.
pub fn sweep_work_dir(ctx: &Ctx, dry: bool) -> u64 {
    let grace = ctx.plan.retention.grace.try_into().unwrap_or_default();
    let found = crate::workdir::WorkDir::new(&ctx.plan.work_dir).leftovers(grace);
    for l in &found {
        let what = match &l.outside {
            Some(o) => format!("{} (and {})", l.path.display(), o.display()),
            None => l.path.display().to_string(),
        };
        if dry {
            ctx.ui
                .info(&format!("would remove {what} left by an interrupted run"));
            continue;
        }
        match crate::workdir::remove(l) {
            Ok(()) => ctx
                .ui
                .info(&format!("removed {what} left by an interrupted run")),
            Err(e) => ctx.ui.warn(&format!(
                "cannot remove {what} left by an interrupted run: {e}"
            )),
        }
    }
    found.len() as u64
}

/// Starts the replica a run killed inside its stop window left stopped (see
/// `sources/stop_window.rs`), or warns loudly that it may be down. Every
/// command that reads the config calls this first, except `wal` (run by the
/// PostgreSQL server) and `key`/`notify`.
pub fn recover_stop_window(ctx: &Ctx) {
    use crate::sources::stop_window::{self, Recovery};
    let work = crate::workdir::WorkDir::new(&ctx.plan.work_dir);
    let start = ctx
        .plan
        .tigerbeetle
        .as_ref()
        .and_then(|t| crate::sources::tigerbeetle::start_command(t, &ctx.plan.work_dir));
    let start_ref = start
        .as_ref()
        .map(|(data_file, run)| (data_file.as_path(), run as &dyn Fn() -> Result<()>));
    let now = time::OffsetDateTime::now_utc();
    let down_for = |s: &stop_window::Stopped| {
        s.age(now)
            .map_or_else(|| "an unknown time".to_string(), crate::ui::human_duration)
    };
    match stop_window::recover(&work, start_ref) {
        Ok(Recovery::Nothing) => {}
        Ok(Recovery::Started(s)) => ctx.ui.warn(&format!(
            "{} was killed before its start command ran: the replica was down for {}. bkp ran the start command now and it succeeded; find out what killed that run (journalctl -u bkp-snapshot)",
            s.describe(),
            down_for(&s)
        )),
        Ok(Recovery::Down(s, why)) => ctx.ui.warn(&format!(
            "THE REPLICA MAY BE DOWN: {} was killed before its start command ran, {} ago: {why}",
            s.describe(),
            down_for(&s)
        )),
        Err(e) => ctx.ui.warn(&format!("{e:#}")),
    }
}

pub use crate::config::postgres_section;
