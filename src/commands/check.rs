//! `bkp check`: a preflight of everything a backup run needs, one line per check,
//! changing nothing that matters (a probe object is written and removed; under S3
//! Object Lock it stays until its retention ends, and cleanup removes it then).
//!
//! Checks: the config (it loaded), every key, the work directory, the store
//! (PUT, HEAD, LIST, GET, DELETE, and that a second create-only PUT of one key
//! is refused — bkp's promise never to overwrite a backup rests on the service
//! honouring `If-None-Match: *`), the ledger cluster, then the probes of each
//! source the config sets up ([`super::code`]), in the kinds' order: the
//! TigerBeetle binary and data file, the DuckDB database, the replication
//! source, the PostgreSQL server and its archiving, the SQLite database. The exit code is the code of the first
//! failure.

use std::time::Instant;

use anyhow::{Context, Result};
use serde_json::json;

use super::{open_store, Ctx};
use crate::exit::{coded, like, Code};
use crate::store::s3::Retained;
use crate::store::Store;
use crate::ui;
use crate::workdir::WorkDir;

/// The outcome of one check.
struct Check {
    name: &'static str,
    outcome: Result<String>,
}

pub fn run(ctx: &Ctx) -> Result<()> {
    let plan = &ctx.plan;
    let mut checks = vec![Check {
        name: "config",
        outcome: Ok(format!("{} is valid", plan.source.display())),
    }];
    // The keys are loaded once (a key_command runs once) for every check.
    let trust = super::trust(plan, Vec::new());
    checks.push(Check {
        name: "keys",
        outcome: trust
            .as_ref()
            .map_err(|e| like(e, format!("{e:#}")))
            .map(|t| keys(ctx, t.keys())),
    });
    checks.push(Check {
        name: "work_dir",
        outcome: work_dir(ctx),
    });
    // One store client for every check that needs it (an S3 client costs a
    // runtime, an HTTPS client and the region chain).
    let store = open_store(plan);
    checks.push(Check {
        name: "store",
        outcome: store
            .as_ref()
            .map_err(|e| like(e, format!("{e:#}")))
            .and_then(|s| {
                s.preflight_writes()?;
                probe_store(s.as_ref())
            }),
    });
    checks.push(Check {
        name: "store_marker",
        outcome: store
            .as_ref()
            .map_err(|e| like(e, "not checked: the store could not be opened".into()))
            .and_then(|s| {
                let trust = trust
                    .as_ref()
                    .map_err(|e| like(e, "not checked: the keys could not be loaded".into()))?;
                marker_line(s.as_ref(), trust)
            }),
    });
    if let Some(cfg) = &plan.ledger {
        checks.push(Check {
            name: "ledger",
            // A cluster with nothing listening fails in milliseconds.
            outcome: crate::ledger::probe(cfg)
                .and_then(|()| {
                    crate::ledger::account_balances(
                        cfg,
                        crate::ledger::source_account_id(crate::kinds::Kind::Tigerbeetle),
                    )
                })
                .map(|_| format!("cluster {} answers", cfg.addresses)),
        });
    }
    // Each source the config sets up, in the kinds' order.
    for d in crate::kinds::ALL.iter() {
        for (name, outcome) in (super::code(d.kind).probes)(plan) {
            checks.push(Check { name, outcome });
        }
    }
    report(ctx, &checks)
}

/// The probes of the `[tigerbeetle]` section: its binary runs, its data file
/// is readable.
pub(crate) fn tigerbeetle(plan: &crate::config::Plan) -> Vec<super::Probe> {
    let mut probes = Vec::new();
    if let Some(tb) = &plan.tigerbeetle {
        if let Some(binary) = &tb.binary {
            probes.push(("tigerbeetle.binary", binary_version(binary, &tb.pass_env)));
        }
        if let Some(file) = &tb.data_file {
            probes.push(("tigerbeetle.data_file", readable_file(file)));
        }
    }
    probes
}

/// The probes of the `[duckdb]` section.
pub(crate) fn duckdb(plan: &crate::config::Plan) -> Vec<super::Probe> {
    plan.duckdb
        .iter()
        .flat_map(|d| {
            [
                ("duckdb.database", readable_file(&d.database)),
                ("duckdb.schema", duckdb_schema(d)),
            ]
        })
        .collect()
}

/// The probes of the `[postgres]` section (its dumps and base backups).
pub(crate) fn postgres(plan: &crate::config::Plan) -> Vec<super::Probe> {
    plan.postgres
        .iter()
        .flat_map(|pg| {
            [
                ("postgres.server", postgres_server(pg)),
                ("postgres.archiving", postgres_archiving(pg)),
            ]
        })
        .collect()
}

/// The probe of the `[replicate]` section's source.
pub(crate) fn replicate(plan: &crate::config::Plan) -> Vec<super::Probe> {
    plan.replicate
        .iter()
        .map(|r| {
            let outcome = match &r.source {
                crate::replicate::SourcePlan::Local(dir) => std::fs::read_dir(dir)
                    .map(|_| format!("{} is readable", dir.display()))
                    .with_context(|| format!("cannot read {}", dir.display())),
                _ => Ok("an S3 source, checked by `bkp replicate`".into()),
            };
            ("replicate.source", outcome)
        })
        .collect()
}

/// Whether a restore could recreate the DuckDB database's schema, as an
/// export finds out (see `sources::duck::replay`): said before the next export
/// leaves something out. A database a writer holds is not checked.
fn duckdb_schema(d: &crate::config::DuckdbPlan) -> Result<String> {
    use crate::sources::duck;
    let conn = match duck::open_read_only(
        &d.database,
        std::time::Duration::ZERO,
        d.memory_limit.as_deref(),
        d.threads,
    ) {
        Ok(c) => c,
        Err(e) if crate::exit::classify(&e) == Some(Code::UnsafeSource) => {
            return Ok("not checked: a process holds the database open for writing".into())
        }
        Err(e) => return Err(e),
    };
    let tables = duck::tables(&conn)?;
    let mut schema = duck::schema(&conn)?;
    duck::replay(&mut schema, &tables)?;
    if schema.omitted.is_empty() {
        return Ok(format!(
            "a restore can recreate its {} statements ({} tables)",
            schema.statements.len(),
            tables.len()
        ));
    }
    let list: Vec<String> = schema
        .omitted
        .iter()
        .map(|(what, why)| format!("{what} ({why})"))
        .collect();
    Err(coded(
        Code::Unsupported,
        format!(
            "a restore could not recreate {}: exports leave them out and exit 12. Change or drop them",
            list.join("; ")
        ),
    ))
}

/// That the PostgreSQL tools are there, that bkp can log in to the database,
/// and that `pg_dump` is not older than the server (it refuses to dump one).
fn postgres_server(pg: &crate::config::PostgresPlan) -> Result<String> {
    let server = crate::sources::postgres::Server::new(pg);
    let tools = server.tool_version("pg_dump")?;
    let version = server.server_version()?;
    let major = |v: &str| -> Option<u32> { v.split(['.', ' ']).next()?.parse().ok() };
    if let (Some(t), Some(s)) = (major(&tools), major(&version)) {
        if t < s {
            return Err(coded(
                Code::Config,
                format!(
                    "pg_dump {tools} is older than the server ({version}) and would refuse to dump it: install the client tools of version {s} or newer and set postgres.bin_dir"
                ),
            ));
        }
    }
    // Base backups need the replication privilege; dumps do not.
    let replication = server
        .psql(
            &pg.database,
            "SELECT rolreplication OR rolsuper FROM pg_roles WHERE rolname = current_user;\n",
            &[],
        )
        .map(|r| r == "t")
        .unwrap_or(false);
    Ok(format!(
        "{} answers (PostgreSQL {version}); pg_dump {tools}; {}",
        server.describe(&pg.database),
        if replication {
            "the role may take base backups (REPLICATION)"
        } else {
            "the role lacks REPLICATION: dumps work, base backups (bkp snapshot --kind postgres) will not"
        }
    ))
}

/// Whether the server archives its WAL through bkp, and whether that works:
/// point-in-time recovery needs it; dumps and base backups do not.
fn postgres_archiving(pg: &crate::config::PostgresPlan) -> Result<String> {
    let server = crate::sources::postgres::Server::new(pg);
    let row = server.psql(
        &pg.database,
        "SELECT current_setting('archive_mode') || '|' || coalesce((SELECT setting FROM pg_settings WHERE name = 'archive_command'), '') || '|' || \
         coalesce(last_archived_wal, '') || '|' || coalesce(to_char(last_archived_time AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"'), '') || '|' || \
         failed_count || '|' || coalesce(last_failed_wal, '') || '|' || (coalesce(last_failed_time, '-infinity') > coalesce(last_archived_time, '-infinity'))::text \
         FROM pg_stat_archiver;\n",
        &[],
    )?;
    let f: Vec<&str> = row.split('|').collect();
    let [mode, command, last, last_time, failed, last_failed, failing] = f.as_slice() else {
        anyhow::bail!("unexpected answer from pg_stat_archiver: {row:?}");
    };
    if *mode == "off" {
        return Ok(
            "WAL archiving is off: restores reach the end of a base backup or a dump, no later point; for point-in-time recovery set archive_mode = on and archive_command = 'bkp --config … wal push %p'".into(),
        );
    }
    if !command.contains("wal push") {
        return Ok(format!(
            "the server archives its WAL with {:?}, not through bkp: `bkp restore --at` replays only what `bkp wal push` archived",
            if command.is_empty() { "(a command this role may not read)" } else { command }
        ));
    }
    if *failing == "true" {
        return Err(coded(
            Code::Transient,
            format!(
                "archive_command fails: {last_failed} could not be archived ({failed} failures since the statistics were reset), and PostgreSQL keeps its WAL until it can; read the server's log for bkp's message"
            ),
        ));
    }
    Ok(if last.is_empty() {
        "archive_command is bkp's; nothing archived yet".to_string()
    } else {
        format!("archive_command is bkp's; last archived {last} at {last_time}; {failed} failures")
    })
}

fn report(ctx: &Ctx, checks: &[Check]) -> Result<()> {
    let first_failure = checks.iter().find_map(|c| c.outcome.as_ref().err());
    if ctx.ui.json {
        let rows: Vec<_> = checks
            .iter()
            .map(|c| match &c.outcome {
                Ok(detail) => json!({"name": c.name, "ok": true, "detail": detail}),
                Err(e) => json!({
                    "name": c.name,
                    "ok": false,
                    "detail": format!("{e:#}"),
                    "exit_code": crate::exit::exit_code(e),
                }),
            })
            .collect();
        ui::document(json!({
            "schema": "bkp.check/1",
            "ok": first_failure.is_none(),
            "checks": rows,
        }))?;
    } else {
        for c in checks {
            match &c.outcome {
                Ok(detail) => ui::out(&format!("ok    {:<22} {detail}", c.name))?,
                Err(e) => ui::out(&format!("FAIL  {:<22} {e:#}", c.name))?,
            }
        }
    }
    match first_failure {
        None => Ok(()),
        Some(e) => {
            let failed = checks.iter().filter(|c| c.outcome.is_err()).count();
            // The first failure's own class: a store that refused bkp is not a
            // config error, and an unclassified failure exits 1.
            let message = format!(
                "{failed} check{} failed; the first: {e:#}",
                if failed == 1 { "" } else { "s" }
            );
            Err(like(e, message))
        }
    }
}

fn keys(ctx: &Ctx, keyring: Option<&crate::crypto::Keyring>) -> String {
    match keyring {
        None => "encryption is off: backups are stored unencrypted".into(),
        Some(k) => {
            let mut ids = vec![format!(
                "{} (current{})",
                k.current().id(),
                if k.current().decrypts() {
                    ""
                } else {
                    ", a public-key recipient: this host cannot read its backups"
                }
            )];
            let n = ctx.plan.encryption.as_ref().map_or(0, |e| e.old.len());
            if n > 0 {
                ids.push(format!("{n} older key{}", if n == 1 { "" } else { "s" }));
            }
            if let Some(s) = k.signing() {
                ids.push(format!("signing key {}", s.id()));
            }
            // Each trusted signer with what it may seal (this host's own has
            // no scope and is named above).
            let own = k.signing().map(|s| s.id());
            for s in k.signers().iter().filter(|s| s.scope.is_some()) {
                if Some(s.verifier.id.as_str()) != own {
                    ids.push(format!(
                        "signer {} for {}",
                        s.verifier.id,
                        s.describe_scope()
                    ));
                }
            }
            for e in k.escrow() {
                ids.push(format!("escrow {}", e.id()));
            }
            // An identity is itself the key to keep a copy of offline (an
            // escrow's vault holds one).
            let identity = k.current().escrow_text().is_some();
            if k.escrow().is_empty() && k.current().decrypts() && !identity {
                ctx.ui.warn(NO_ESCROW);
                return format!("loaded {}; warning: {NO_ESCROW}", ids.join(", "));
            }
            format!("loaded {}", ids.join(", "))
        }
    }
}

/// `bkp check`'s warning where no escrow is configured.
const NO_ESCROW: &str = "no escrow is configured: a lost key loses every backup; make one with `bkp key generate --type escrow PATH`, keep its identity offline in another place, and list PATH in [encryption] escrow_files";

fn work_dir(ctx: &Ctx) -> Result<String> {
    let w = WorkDir::new(&ctx.plan.work_dir);
    w.create()?;
    drop(w.scratch("check")?);
    Ok(format!("{} is writable", ctx.plan.work_dir.display()))
}

/// Writes, reads, lists and deletes a probe object, and proves that a second
/// create-only write of the same key is refused.
fn probe_store(store: &dyn Store) -> Result<String> {
    let started = Instant::now();
    let key = format!(
        "check/{}.probe",
        crate::id::BackupId::new_v7(time::OffsetDateTime::now_utc())
    );
    let body = b"bkp check probe\n";
    store
        .put_new(&key, body, &Vec::new())
        .with_context(|| format!("PUT {key} failed: bkp needs to write to the store"))?;
    let outcome = (|| -> Result<()> {
        let info = store
            .head(&key)
            .with_context(|| format!("HEAD {key} failed"))?
            .with_context(|| format!("HEAD {key}: the object just written is missing"))?;
        if info.size != body.len() as u64 {
            anyhow::bail!(
                "HEAD {key}: size {} where {} were written",
                info.size,
                body.len()
            );
        }
        let listed = store.list("check/").context("LIST check/ failed")?;
        if !listed.iter().any(|o| o.key == key) {
            anyhow::bail!("LIST check/ does not show {key}, just written");
        }
        if store
            .get(&key)
            .with_context(|| format!("GET {key} failed"))?
            != body
        {
            anyhow::bail!("GET {key} returned other bytes than were written");
        }
        if store.put_new(&key, b"overwritten\n", &Vec::new()).is_ok() {
            return Err(coded(
                Code::UnsafeSource,
                format!(
                    "{} let a create-only PUT replace {key}: the service ignores If-None-Match, so bkp could not promise never to overwrite a backup; use a service that honours conditional writes",
                    store.identity()
                ),
            ));
        }
        Ok(())
    })();
    // Under Object Lock the probe is retained like any object: S3 refusing to
    // delete it is the lock working, and a later cleanup removes it.
    let (deleted, delete_note) = match store.delete(&key) {
        Err(e) if e.downcast_ref::<Retained>().is_some() => (
            Ok(()),
            format!(
                "work; DELETE is refused while Object Lock retains an object, as configured ({e}; a later cleanup removes it)"
            ),
        ),
        other => (
            other.with_context(|| {
                format!("DELETE {key} failed: cleanup needs to delete expired backups")
            }),
            "and DELETE work".to_string(),
        ),
    };
    outcome?;
    deleted?;
    let note = store.note().map(|n| format!("; {n}")).unwrap_or_default();
    Ok(format!(
        "{}: PUT, HEAD, LIST, GET, create-only {delete_note} ({} ms){note}",
        store.identity(),
        started.elapsed().as_millis()
    ))
}

fn binary_version(binary: &std::path::Path, pass_env: &[String]) -> Result<String> {
    let out = crate::child::command(binary, pass_env)
        .arg("version")
        .output()
        .map_err(|e| {
            coded(
                Code::Config,
                format!("cannot run {}: {e}", binary.display()),
            )
        })?;
    if !out.status.success() {
        return Err(coded(
            Code::Config,
            format!("{} version failed ({})", binary.display(), out.status),
        ));
    }
    let text = String::from_utf8_lossy(&out.stdout);
    Ok(format!(
        "{}: {}",
        binary.display(),
        text.lines().next().unwrap_or("").trim()
    ))
}

fn readable_file(path: &std::path::Path) -> Result<String> {
    use std::os::unix::fs::PermissionsExt;
    let meta = std::fs::metadata(path)
        .map_err(|e| coded(Code::Config, format!("cannot read {}: {e}", path.display())))?;
    if !meta.is_file() {
        return Err(coded(
            Code::Config,
            format!("{} is not a file", path.display()),
        ));
    }
    std::fs::File::open(path)
        .map_err(|e| coded(Code::Config, format!("cannot open {}: {e}", path.display())))?;
    Ok(format!(
        "{} ({}, mode {:o})",
        path.display(),
        ui::size(meta.len()),
        meta.permissions().mode() & 0o7777
    ))
}

/// The store marker's line of `bkp check`: whose it is, when it was marked,
/// and the store's id (checked against `[encryption] store_id` when pinned).
fn marker_line(store: &dyn crate::store::Store, trust: &crate::manifest::Trust) -> Result<String> {
    let found = crate::manifest::marker::check(store, trust)?;
    // The pin of [encryption] store_id, when set.
    trust.binding()?;
    Ok(match found {
        None => "no marker: `bkp init` marks the store as this installation's".into(),
        Some(m) => format!(
            "this installation's (marked {} by {}{})",
            m.created_at
                .format(&time::format_description::well_known::Rfc3339)
                .unwrap_or_default(),
            crate::ui::printable(&m.host),
            m.store_id
                .map(|id| format!(", store id {}", crate::ui::printable(&id)))
                .unwrap_or_default()
        ),
    })
}
