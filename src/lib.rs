//! bkp: backups for a TigerBeetle ledger, a DuckDB hot tier and a Parquet cold tier.
//!
//! The binary (`main.rs`) only parses flags and maps results to exit codes; the
//! work happens here. Each subcommand in [`commands`] is a short chain of stages:
//! a [`sources`] module makes the data safe to read, [`archive`] and the byte
//! [`stages`] turn it into a compressed, encrypted, checksummed stream that
//! [`pipeline`] sends to a [`store`], and a [`manifest`] written last makes the
//! stored objects a backup. [`ledger`] records each run in TigerBeetle.

pub mod archive;
pub mod chain;
pub mod child;
pub mod chunks;
pub mod cli;
pub mod commands;
pub mod config;
pub mod copies;
pub mod credentials;
pub mod crypto;
pub mod direct;
pub mod exit;
pub mod failpoint;
pub mod id;
pub mod interrupt;
pub mod junit;
pub mod kinds;
pub mod lease;
pub mod ledger;
pub mod limits;
pub mod lock;
pub mod manifest;
pub mod metrics;
pub mod notify;
pub mod parquet;
pub mod pipeline;
pub mod replicate;
pub mod retention;
pub mod schedule;
pub mod sources;
pub mod stages;
pub mod store;
pub mod tigerbeetle;
pub mod ui;
pub mod units;
pub mod workdir;

use std::time::Duration;

use anyhow::Result;

use crate::cli::{Cli, Command, KeyCommand, WalCommand};
use crate::commands::Ctx;
use crate::ui::{Level, Ui};

/// Runs a parsed command line.
pub fn run(cli: Cli) -> Result<()> {
    let g = &cli.global;
    let filter = ui::log_filter(g.verbose, std::env::var(ui::LOG_ENV).ok().as_deref())?;
    let ui = Ui {
        level: if g.quiet {
            Level::Quiet
        } else if g.verbose >= 2 || filter.as_ref().is_some_and(ui::wants_bkp_debug) {
            Level::Debug
        } else if g.verbose == 1 {
            Level::Verbose
        } else {
            Level::Normal
        },
        json: g.json,
        bars: !g.no_progress,
    };
    ui::show_error_detail(ui.level >= Level::Verbose);
    ui::json_lines(g.json);
    if let Some(filter) = filter {
        ui::init_tracing(filter);
    }
    // Commands that need no config.
    if let Command::Key(KeyCommand::Generate { path, kind }) = &cli.command {
        return commands::key::generate(&ui, path, *kind);
    }
    let overrides = config::Overrides::from_env();
    let (plan, path, first_try) = match g.config.clone() {
        Some(path) => (config::load(&path, &overrides)?, path, false),
        None => {
            let path = std::path::PathBuf::from(config::DEFAULT_CONFIG);
            match (std::fs::metadata(&path), config::from_environment()) {
                // No config file anywhere: a first try, described by the environment.
                (Err(e), Some((text, source))) if e.kind() == std::io::ErrorKind::NotFound => {
                    ui.info(&format!(
                        "no config file ({} does not exist): a first try, configured by \
                         BKP_STORE_PATH and the variables beside it",
                        path.display()
                    ));
                    (config::parse(&text, &source, &overrides)?, source, true)
                }
                (Err(e), None) if e.kind() == std::io::ErrorKind::NotFound => {
                    return Err(crate::exit::coded(
                        crate::exit::Code::Config,
                        format!(
                            "no config file: {} does not exist; pass --config FILE or set \
                             BKP_CONFIG (examples/ has complete configs), or for a first try \
                             without one set BKP_STORE_PATH, BKP_KEY_FILE and \
                             BKP_TIGERBEETLE_DATA_FILE (or BKP_SQLITE_DATABASE)",
                            path.display()
                        ),
                    ))
                }
                _ => (config::load(&path, &overrides)?, path, false),
            }
        }
    };
    if !first_try {
        config::no_first_try_vars(&path)?;
    }
    let plan = commands::copy::reading(plan, &cli.command, g.store.as_deref(), &ui)?;
    ui.debug(&format!(
        "config {} read; work directory {}",
        path.display(),
        plan.work_dir.display()
    ));
    let ctx = Ctx {
        plan,
        ui,
        wait: g.wait.unwrap_or(Duration::ZERO),
    };
    if !matches!(
        cli.command,
        Command::Wal(_) | Command::Key(_) | Command::Notify(_)
    ) {
        commands::recover_stop_window(&ctx);
    }
    let result = match &cli.command {
        Command::Snapshot(a) => snapshot(&ctx, a),
        Command::Logs => commands::logs::run(&ctx),
        Command::Export(a) => export(&ctx, a),
        Command::List(a) => commands::list::run(&ctx, a),
        Command::Show(a) => commands::show::run(&ctx, a),
        Command::Restore(a) => commands::restore::run(&ctx, a),
        Command::Cat(a) => commands::cat::run(&ctx, a),
        Command::Cleanup(a) => commands::cleanup::run(&ctx, a),
        Command::Verify(a) => commands::verify::run(&ctx, a),
        Command::Status => commands::status::run(&ctx),
        Command::Copy(a) => commands::copy::run(&ctx, a),
        Command::Check => commands::check::run(&ctx),
        Command::Init => commands::key::init(&ctx),
        Command::TrustLegacy(a) => commands::legacy::run(&ctx, a),
        Command::Replicate(a) => commands::replicate::run(&ctx, a),
        Command::Notify(a) => commands::notify::run(&ctx, a),
        Command::Key(KeyCommand::Generate { path, kind }) => {
            commands::key::generate(&ctx.ui, path, *kind)
        }
        Command::Wal(WalCommand::Push { path, pgdata }) => commands::wal::push(&ctx, path, pgdata),
        Command::Wal(WalCommand::Fetch {
            name,
            dest,
            pgdata,
            system,
        }) => commands::wal::fetch(&ctx, name, dest, pgdata, *system),
    };
    notify(&ctx, &cli.command, &result);
    result
}

/// `bkp snapshot`: the TigerBeetle data file when the config names one, else
/// the one other source `bkp snapshot` copies that the config sets up (a
/// PostgreSQL base backup, a SQLite database); `--kind` chooses.
fn snapshot(ctx: &commands::Ctx, a: &cli::SnapshotArgs) -> Result<()> {
    use kinds::Kind;
    let plan = &ctx.plan;
    if a.from_log {
        return commands::base::run(ctx);
    }
    // With a data file, a bare `bkp snapshot` stays what it always was (a
    // TigerBeetle snapshot), so adding [postgres] for dumps changes no timer.
    let tb = plan
        .tigerbeetle
        .as_ref()
        .is_some_and(|t| t.data_file.is_some());
    let others: Vec<Kind> = kinds::ALL
        .iter()
        .filter(|d| d.maker == kinds::Maker::Snapshot && d.kind != Kind::Tigerbeetle)
        .map(|d| d.kind)
        .filter(|k| plan.has_source(*k))
        .collect();
    let kind = match (a.kind, tb, others.as_slice()) {
        (Some(cli::SnapshotKind(k)), _, _) => k,
        (None, false, [one]) => *one,
        (None, false, [_, _, ..]) => {
            return Err(exit::coded(
                exit::Code::Config,
                format!(
                    "{} sets up several sources `bkp snapshot` copies: choose one with {}",
                    plan.source.display(),
                    others
                        .iter()
                        .map(|k| format!("`bkp snapshot --kind {}`", k.as_str()))
                        .collect::<Vec<_>>()
                        .join(" or ")
                ),
            ))
        }
        (None, _, _) => Kind::Tigerbeetle,
    };
    match commands::code(kind).snapshot {
        Some(run) => run(ctx),
        None => Err(not_made_by("snapshot", kind)),
    }
}

/// `bkp export`: the DuckDB export or the PostgreSQL dump, whichever the
/// config describes, or `--kind` chooses when it describes both.
fn export(ctx: &commands::Ctx, a: &cli::ExportArgs) -> Result<()> {
    use cli::ExportKind;
    use kinds::Kind;
    let plan = &ctx.plan;
    let kind = match (a.kind, plan.duckdb.is_some(), plan.postgres.is_some()) {
        (Some(ExportKind(k)), _, _) => k,
        (None, true, true) => {
            return Err(exit::coded(
                exit::Code::Config,
                format!(
                    "{} describes a DuckDB database and a PostgreSQL database: choose one with `bkp export --kind duckdb` or `--kind pgdump`",
                    plan.source.display()
                ),
            ))
        }
        (None, false, true) => Kind::Pgdump,
        (None, _, false) => Kind::Duckdb,
    };
    match kind {
        Kind::Pgdump if a.full || a.differential => Err(exit::coded(
            exit::Code::Config,
            "--full and --differential are for DuckDB exports: every PostgreSQL dump is whole",
        )),
        Kind::Pgdump => commands::pgdump::run(ctx),
        Kind::Duckdb => commands::export::run(
            ctx,
            match (a.full, a.differential) {
                (true, _) => commands::export::Mode::Full,
                (false, true) => commands::export::Mode::Differential,
                (false, false) => commands::export::Mode::Incremental,
            },
        ),
        other => Err(not_made_by("export", other)),
    }
}

/// A kind whose descriptor names a subcommand that has no recipe for it: a
/// new kind half added. clap offers only the descriptors' values, so this is
/// reached only by a build that forgot the recipe.
fn not_made_by(command: &str, kind: kinds::Kind) -> anyhow::Error {
    exit::coded(
        exit::Code::Config,
        format!(
            "`bkp {command} --kind {}` has no recipe in this build of bkp",
            kind.as_str()
        ),
    )
}

/// Tells `[notify]`'s command about a failure, a recovery or a breached RPO of
/// a timer-driven run (not of dry runs). Its own failure is reported only.
fn notify(ctx: &Ctx, command: &Command, result: &Result<()>) {
    let operation = match command {
        Command::Snapshot(_) => "snapshot",
        Command::Logs => "logs",
        Command::Export(_) => "export",
        Command::Replicate(a) if !a.dry_run => "replicate",
        Command::Cleanup(a) if !a.dry_run => "cleanup",
        Command::Verify(_) => "verify",
        Command::Status => "status",
        Command::Copy(a) if !a.dry_run => "copy",
        _ => return,
    };
    let Some(plan) = &ctx.plan.notify else {
        return;
    };
    let exit_code = result
        .as_ref()
        .map_or_else(exit::exit_code, |()| exit::SUCCESS);
    let state = workdir::WorkDir::new(&ctx.plan.work_dir).notify_state();
    let Some(event) = notify::event_for(&state, operation, exit_code) else {
        return;
    };
    if !plan.on.contains(&event) {
        return;
    }
    // The top-level message only: bkp's own words.
    let message = match result {
        Ok(()) => format!("bkp {operation} succeeded"),
        Err(e) => e.to_string(),
    };
    let host = commands::run::hostname();
    let doc = notify::document(
        event,
        operation,
        Some(exit_code),
        exit::name(exit_code),
        &message,
        &host,
    );
    match notify::send(plan, &doc) {
        Ok(()) if event == notify::Event::Failure => notify::mark_reported(&state, operation),
        Ok(()) => {}
        Err(e) => ctx.ui.warn(&format!(
            "the {} notification was not delivered: {e:#}",
            event.as_str()
        )),
    }
}
