//! `bkp restore` of a PostgreSQL dump: into a new database on the configured
//! server, never over an existing one without `--force`.
//!
//! The dump is restored into a staging database (`bkp_restore_…`) created from
//! `template0`; `pg_restore` stops at the first error. Only when it succeeded,
//! the stream matched the manifest's digests and every table has the rows the
//! dump counted is the staging database renamed to the target's name. With
//! `--force` the old database is first renamed aside (its sessions ended), and
//! dropped only once the new one holds the name; if the swap fails half way the
//! old one gets its name back. A failed restore drops the staging database,
//! also when bkp panics: the target is never left half restored under its name.
//!
//! A partial restore (`--schema`, `--table`) is checked against the dump's
//! record before anything is created: every chosen schema and table must be in
//! the dump, and `pg_restore`'s way of choosing (any chosen table name in any
//! chosen schema) must not bring in a table that was not chosen. It never
//! replaces an existing database.

use std::collections::BTreeMap;
use std::time::Instant;

use anyhow::{Context, Result};
use serde_json::json;

use super::{Options, RestorePlan, Source};
use crate::exit::{coded, Code};
use crate::manifest::Manifest;
use crate::pipeline;
use crate::sources::postgres::{check_database_name, split_qualified, Selection, Server};
use crate::ui;

pub fn run(src: &Source, rp: &RestorePlan, opts: &Options) -> Result<()> {
    let m = rp.backup.as_ref().context("a dump restore needs a dump")?;
    let pg = crate::config::postgres_section(opts.plan, "restoring a PostgreSQL dump")?;
    let server = Server::new(pg);
    let target = opts.target.to_str().ok_or_else(|| {
        coded(
            Code::Config,
            "--target for a PostgreSQL dump is the name of the new database, in UTF-8",
        )
    })?;
    check_database_name(target)?;
    let recorded = recorded(m)?;
    let (selection, expected) = select(m, opts, recorded.as_ref())?;
    if selection.is_partial() && opts.force {
        return Err(coded(
            Code::Config,
            "--force with --schema or --table would replace a whole database with part of a dump: restore the part into a new database (--target NEWNAME) and move what you need from there",
        ));
    }
    let role = pg.user.as_deref().unwrap_or("the connecting role");
    if let Some(why) = super::pgbase::unsealed(src.trust, m) {
        src.ui.warn(&format!(
            "dump {}'s manifest {why}: nothing proves it is the dump bkp made, and pg_restore runs its SQL as {role}; restore with a role that is not a superuser",
            m.id,
        ));
    } else if let Some(signer) = sealed_by_a_host(src, m) {
        src.ui.warn(&format!(
            "dump {} was sealed by {signer}, the signing key of host {:?} ([[encryption.signer]]), not by this host's key: that proves it came from that host, and pg_restore runs its SQL as {role}. If that host may be compromised, restore with a role that is not a superuser",
            m.id, m.host
        ));
    }
    let described = server.describe(target);
    let exists = server.database_exists(target)?;
    if exists && !opts.force {
        return Err(coded(
            Code::TargetExists,
            format!(
                "{described} exists: restore into a new database (--target NEWNAME), or pass --force to replace it (its sessions are ended)"
            ),
        ));
    }
    if exists && target == pg.database {
        src.ui.warn(&format!(
            "{described} is the database bkp backs up (postgres.database): it is replaced"
        ));
    }
    super::countdown::before_replacing_named(&described, exists, opts.yes)?;

    let clock = Instant::now();
    let suffix = format!("{:016x}", crate::id::random_u64());
    let staging = Staging {
        server: &server,
        name: format!("bkp_restore_{suffix}"),
        armed: true,
        ui: src.ui,
    };
    src.ui.detail(&format!(
        "restoring dump {} from {} into {} (staged as {:?})",
        m.id,
        src.store.identity(),
        described,
        staging.name
    ));
    server.create_database(&staging.name)?;
    restore_into(src, m, &server, &staging.name, &selection)?;
    let counts = server.count_rows(&staging.name)?;
    if let Some(want) = &expected {
        compare(m, want, &counts)?;
    }
    server.fence(&staging.name)?;
    // Fenced, it takes no session: PUBLIC gets back what a new database gives.
    server.grant_public(&staging.name)?;
    if exists {
        replace(
            &server,
            staging,
            target,
            &format!("bkp_replaced_{suffix}"),
            &src.ui,
        )?;
    } else {
        server.rename_database(&staging.name, target)?;
        staging.disarm();
        server.open(target)?;
    }

    let elapsed = clock.elapsed();
    let bytes = crate::manifest::pgdump::dump_object(m)?.content_bytes;
    let tables = counts.len();
    let verified = if expected.is_some() {
        "every row count verified"
    } else {
        "no row counts recorded to verify"
    };
    if src.ui.json {
        return ui::document(json!({
            "schema": "bkp.restore/1",
            "id": m.id,
            "kind": "pgdump",
            "target": target,
            "replaced": exists,
            "schemas": selection.schemas,
            "tables": counts,
            "rows_verified": expected.is_some(),
            "bytes": bytes,
            "seconds": elapsed.as_secs_f64(),
        }));
    }
    src.ui.info(&format!(
        "restored dump {} into {described}{}: {tables} tables, {verified}, {} in {:.1}s",
        m.id,
        if exists { ", replacing it" } else { "" },
        ui::size(bytes),
        elapsed.as_secs_f64(),
    ));
    ui::print(target)
}

/// The staging database of a restore: dropped when it goes out of scope
/// armed (an error, a panic), kept once it took the target's name.
struct Staging<'a> {
    server: &'a Server<'a>,
    name: String,
    armed: bool,
    ui: crate::ui::Ui,
}

impl Staging<'_> {
    fn disarm(mut self) {
        self.armed = false;
    }
}

impl Drop for Staging<'_> {
    fn drop(&mut self) {
        if self.armed {
            if let Err(e) = self.server.drop_database(&self.name) {
                self.ui.warn(&format!(
                    "the staging database {:?} could not be dropped ({e:#}): drop it by hand",
                    self.name
                ));
            }
        }
    }
}

/// Puts the fenced staging database in the place of `target`: the old one is
/// renamed to `aside` first and dropped last, and gets its name back if the
/// new one cannot take it.
fn replace(
    server: &Server,
    staging: Staging,
    target: &str,
    aside: &str,
    ui: &crate::ui::Ui,
) -> Result<()> {
    server.fence(target)?;
    if let Err(e) = server.rename_database(target, aside) {
        let reopened = server.open(target);
        return Err(e.context(match reopened {
            Ok(()) => format!("nothing was restored; database {target:?} is as it was"),
            Err(_) => format!(
                "nothing was restored; database {target:?} is as it was but takes no new sessions: ALTER DATABASE \"{target}\" WITH ALLOW_CONNECTIONS true"
            ),
        }));
    }
    if let Err(e) = server.rename_database(&staging.name, target) {
        return Err(match server.rename_database(aside, target) {
            Ok(()) => {
                let _ = server.open(target);
                e.context(format!(
                    "nothing was restored; database {target:?} is as it was"
                ))
            }
            Err(back) => {
                let restored = staging.name.clone();
                staging.disarm();
                e.context(format!(
                    "the old database is now named {aside:?} and could not get its name back ({back:#}); the restored one is {restored:?}: rename one of them to {target:?} by hand"
                ))
            }
        });
    }
    staging.disarm();
    server.open(target)?;
    if let Err(e) = server.drop_database(aside) {
        ui.warn(&format!(
            "the replaced database, renamed {aside:?}, could not be dropped ({e:#}): drop it by hand"
        ));
    }
    Ok(())
}

/// The selection `args` ask for, checked against the dump's record, and the
/// rows per table the restore must then hold (`None`: the dump recorded none).
fn select(
    m: &Manifest,
    args: &Options,
    recorded: Option<&BTreeMap<String, u64>>,
) -> Result<(Selection, Option<BTreeMap<String, u64>>)> {
    let refuse = |msg: String| Err(coded(Code::Config, msg));
    if !args.schema.is_empty() && !args.table.is_empty() {
        return refuse(
            "--schema and --table cannot be combined (pg_restore would then restore only the tables named, in those schemas): restore the schemas and the tables into separate databases".into(),
        );
    }
    let mut selection = Selection {
        schemas: args.schema.to_vec(),
        tables: Vec::new(),
        no_owner: args.no_owner,
    };
    let Some(recorded) = recorded else {
        // An unrecorded dump: the tables are taken as written.
        for t in args.table {
            let (s, n) = t.split_once('.').unwrap_or(("public", t.as_str()));
            selection.tables.push((s.to_string(), n.to_string()));
        }
        return Ok((selection, None));
    };
    let all: Vec<(String, (String, String))> = recorded
        .keys()
        .filter_map(|k| Some((k.clone(), split_qualified(k)?)))
        .collect();
    let mut chosen: Vec<&String> = Vec::new();
    for s in args.schema {
        let before = chosen.len();
        chosen.extend(all.iter().filter(|(_, (x, _))| x == s).map(|(k, _)| k));
        if chosen.len() == before {
            return refuse(format!(
                "dump {} holds no table in schema {s:?}: `bkp show {}` lists its tables",
                m.id, m.id
            ));
        }
    }
    for t in args.table {
        let matches: Vec<&(String, (String, String))> = all
            .iter()
            .filter(|(_, (s, n))| {
                t.split_once('.')
                    .is_some_and(|(ts, tn)| ts == s.as_str() && tn == n.as_str())
                    || n == t
            })
            .collect();
        match matches.as_slice() {
            [(key, (s, n))] => {
                chosen.push(key);
                selection.tables.push((s.clone(), n.clone()));
            }
            [] => {
                return refuse(format!(
                    "dump {} holds no table {t:?}: name it as SCHEMA.TABLE, as `bkp show {}` lists them",
                    m.id, m.id
                ))
            }
            more => {
                let names: Vec<&str> = more.iter().map(|(k, _)| k.as_str()).collect();
                return refuse(format!(
                    "--table {t:?} matches {}: name one as SCHEMA.TABLE",
                    names.join(", ")
                ));
            }
        }
    }
    if !selection.tables.is_empty() {
        // pg_restore restores every chosen name in every chosen schema.
        let (schemas, names): (Vec<&String>, Vec<&String>) =
            selection.tables.iter().map(|(s, n)| (s, n)).unzip();
        let extra: Vec<&str> = all
            .iter()
            .filter(|(k, (s, n))| {
                schemas.contains(&s) && names.contains(&n) && !chosen.contains(&k)
            })
            .map(|(k, _)| k.as_str())
            .collect();
        if !extra.is_empty() {
            return refuse(format!(
                "pg_restore cannot restore these tables without also restoring {} (it takes every chosen name in every chosen schema): restore them one --table at a time into separate databases",
                extra.join(", ")
            ));
        }
    }
    let expected = if selection.is_partial() {
        recorded
            .iter()
            .filter(|(k, _)| chosen.contains(k))
            .map(|(k, v)| (k.clone(), *v))
            .collect()
    } else {
        recorded.clone()
    };
    Ok((selection, Some(expected)))
}

/// What `restore --dry-run` says of a database target: whether the restore
/// would accept it, and why.
pub fn dry_run_verdict(opts: &Options) -> (Result<()>, String) {
    let checked = (|| -> Result<String> {
        let pg = crate::config::postgres_section(opts.plan, "restoring a PostgreSQL dump")?;
        let target = opts.target.to_str().unwrap_or_default();
        check_database_name(target)?;
        let server = Server::new(pg);
        let described = server.describe(target);
        match (server.database_exists(target)?, opts.force) {
            (false, _) => Ok(format!("{described} is new: accepted")),
            (true, true) => Ok(format!(
                "{described} exists and would be replaced once the restore verified (--force)"
            )),
            (true, false) => Err(coded(
                Code::TargetExists,
                format!("{described} exists: choose a new name, or pass --force"),
            )),
        }
    })();
    match checked {
        Ok(v) => (Ok(()), v),
        Err(e) => {
            let v = format!("refused: {e:#}");
            (Err(e), v)
        }
    }
}

/// The row counts dump `m` recorded, if it did.
fn recorded(m: &Manifest) -> Result<Option<BTreeMap<String, u64>>> {
    m.source
        .get("tables")
        .map(|t| serde_json::from_value(t.clone()))
        .transpose()
        .map_err(|e| {
            coded(
                Code::Integrity,
                format!(
                    "dump {}: its manifest's table counts are malformed: {e}",
                    m.id
                ),
            )
        })
}

/// Checks that `counts` (of a restored database) are exactly `want`.
fn compare(
    m: &Manifest,
    want: &BTreeMap<String, u64>,
    counts: &BTreeMap<String, u64>,
) -> Result<()> {
    let mut wrong: Vec<String> = Vec::new();
    for (t, n) in want {
        match counts.get(t) {
            Some(got) if got == n => {}
            Some(got) => wrong.push(format!("{t}: {got} rows, the dump recorded {n}")),
            None => wrong.push(format!("{t}: missing, the dump recorded {n} rows")),
        }
    }
    for t in counts.keys().filter(|t| !want.contains_key(*t)) {
        wrong.push(format!(
            "{t}: restored, but not chosen or not in the dump's record"
        ));
    }
    check_wrong(m, wrong)
}

/// Checks the rows per table read from dump `m`'s archive (by a drill) against
/// the counts it recorded. Tables the record does not name (extensions'
/// configuration tables, which `pg_dump` dumps by their own rules) are not
/// compared.
pub fn compare_counts(m: &Manifest, counts: &BTreeMap<String, u64>) -> Result<()> {
    let Some(want) = recorded(m)? else {
        return Ok(());
    };
    let found: BTreeMap<String, u64> = counts
        .iter()
        .filter(|(t, _)| want.contains_key(*t))
        .map(|(t, n)| (t.clone(), *n))
        .collect();
    compare(m, &want, &found)
}

fn check_wrong(m: &Manifest, wrong: Vec<String>) -> Result<()> {
    if wrong.is_empty() {
        return Ok(());
    }
    Err(coded(
        Code::Integrity,
        format!(
            "dump {} does not restore the rows it recorded: {}",
            m.id,
            wrong.join("; ")
        ),
    ))
}

/// The signer (`ed25519:ID`) that sealed dump `m`'s manifest, when that is
/// another host's signing key: a write-only host seals what it backs up, and
/// a thief of that host can seal any dump of its scope, whose SQL pg_restore
/// runs. `None`: sealed by this host's key, or the manifest cannot be read
/// again (the restore reads it again anyway, and fails).
fn sealed_by_a_host(src: &Source, m: &Manifest) -> Option<String> {
    let key = m.key();
    let bytes = src.store.get_at_most(&key, crate::limits::MANIFEST).ok()?;
    let (_, sealer) = crate::manifest::parse_with_sealer(&bytes, &key, src.trust).ok()?;
    let own = crate::manifest::seal::own_sealer(src.trust.keys());
    sealer.filter(|s| s.starts_with("ed25519:") && Some(s) != own.as_ref())
}

/// Streams dump `m` through the verifying pipeline into `pg_restore` on
/// `database`.
pub fn restore_into(
    src: &Source,
    m: &Manifest,
    server: &Server,
    database: &str,
    selection: &Selection,
) -> Result<()> {
    let entry = crate::manifest::pgdump::dump_object(m)?;
    let keyring = pipeline::keys_for(m, src.keyring)?;
    let spool = src.work.scratch("spool")?;
    pipeline::download(
        // pg_restore runs the dump's SQL as it reads it.
        &pipeline::OwnCopy(src.store),
        entry,
        m.compression,
        keyring,
        spool.path(),
        src.progress.clone(),
        |r| server.restore(database, r, selection),
    )
}
