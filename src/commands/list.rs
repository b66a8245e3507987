//! `bkp list`: manifests → table (or `--json`).

use anyhow::Result;
use serde_json::json;

use super::{open_store, Ctx};
use crate::chain;
use crate::cli::ListArgs;
use crate::manifest::brief::Brief;
use crate::manifest::{self, Kind, Manifest, Unreadable};
use crate::ui;
use crate::units::count;

pub fn run(ctx: &Ctx, args: &ListArgs) -> Result<()> {
    let store = open_store(&ctx.plan)?;
    // The keys prove each manifest: one that fails is marked, never shown as good.
    let trust = super::reading_trust(&ctx.plan, Vec::new())?;
    let kind = args.kind.map(Kind::from);
    let (all, unreadable, bases) = briefs(store.as_ref(), &trust, kind)?;
    // Chains are judged on everything; the filters choose the rows shown.
    let chains = chain::Index::new(&all);
    let since = args
        .since
        .as_deref()
        .map(|s| crate::units::parse_since("--since", s, time::OffsetDateTime::now_utc()))
        .transpose()?;
    if let Some(op) = &args.operation {
        const OPERATIONS: [&str; 4] = [
            manifest::tigerbeetle::SNAPSHOT,
            manifest::tigerbeetle::LOGS,
            manifest::duckdb::OPERATION,
            manifest::parquet::OPERATION,
        ];
        if !OPERATIONS.contains(&op.as_str()) {
            return Err(crate::exit::coded(
                crate::exit::Code::Config,
                format!("--operation {op:?} is not one of {}", OPERATIONS.join(", ")),
            ));
        }
    }
    let mut shown: Vec<&Brief> = all
        .iter()
        .filter(|m| args.operation.as_ref().is_none_or(|op| &m.operation == op))
        .filter(|m| since.is_none_or(|t| m.started_at >= t))
        .collect();
    if let Some(n) = args.last {
        let skip = shown.len().saturating_sub(n);
        shown.drain(..skip);
    }
    for u in &unreadable {
        ctx.ui.warn(&format!(
            "manifest {} is refused and not listed: {}",
            u.key, u.error
        ));
    }
    // Whatever was shown, a refused manifest makes the exit code say so.
    let refused = || -> Result<()> {
        if unreadable.is_empty() {
            return Ok(());
        }
        let all: Vec<&manifest::Unreadable> = unreadable.iter().collect();
        Err(manifest::unreadable_error(
            &format!("{} listed", count(shown.len() as u64, "backup")),
            &all,
        ))
    };

    // The WAL archives of the base backups' servers (one listing each).
    let archives = if kind.is_none_or(|k| k == Kind::Postgres) {
        crate::manifest::wal::archive::archives(store.as_ref(), &bases, false)?
    } else {
        Vec::new()
    };
    if ctx.ui.json {
        let refused_rows: Vec<_> = unreadable
            .iter()
            .map(|u| {
                json!({
                    "manifest": u.key,
                    "id": u.id(),
                    "code": crate::exit::name(u.code.unwrap_or(crate::exit::Code::Integrity).exit_code()),
                    "reason": u.error,
                })
            })
            .collect();
        let wal: Vec<_> = archives.iter().map(|a| a.json()).collect();
        // Written row by row, not built as one JSON value: a year of backups
        // is tens of MiB as one.
        crate::ui::document_of(|warnings| ListDoc {
            backups: Rows(&shown, &chains),
            schema: "bkp.list/1",
            unreadable: &refused_rows,
            wal: &wal,
            warnings,
        })?;
        return refused();
    }

    if shown.is_empty() {
        ctx.ui.info(&if all.is_empty() {
            format!("no backups in {}", store.identity())
        } else {
            format!(
                "none of the {} backups in {} matches the filters",
                all.len(),
                store.identity()
            )
        });
        return refused();
    }
    let fmt = time::macros::format_description!("[year]-[month]-[day] [hour]:[minute]:[second]Z");
    crate::ui::out(&format!(
        "{:<36}  {:<11}  {:<11}  {:<9}  {:<20}  {:>10}  {:<9}  CHAIN",
        "ID", "KIND", "SCOPE", "OPERATION", "STARTED (UTC)", "SIZE", "STATUS"
    ))?;
    for m in &shown {
        crate::ui::out(&format!(
            "{:<36}  {:<11}  {:<11}  {:<9}  {:<20}  {:>10}  {:<9}  {}",
            m.id.to_string(),
            m.kind.as_str(),
            m.scope.as_str(),
            m.operation,
            m.started_at.format(&fmt).unwrap_or_default(),
            ui::size(m.stored_bytes),
            format!("{:?}", m.status).to_lowercase(),
            chains.link(m),
        ))?;
    }
    for u in &unreadable {
        crate::ui::out(&format!(
            "{:<36}  {:<11}  {:<11}  {:<9}  {:<20}  {:>10}  {:<9}  -",
            u.id().map(|i| i.to_string()).unwrap_or_else(|| "?".into()),
            u.key.split('/').nth(1).unwrap_or("?"),
            "?",
            "?",
            "",
            "",
            "REFUSED",
        ))?;
    }
    let now = time::OffsetDateTime::now_utc();
    for a in &archives {
        crate::ui::out(&a.describe(now))?;
    }
    refused()
}

/// Every backup of `kind` (or of every kind) in brief, oldest first, those
/// that could not be read, and the base backups whose WAL archives are
/// listed: a history years long is never held whole.
fn briefs(
    store: &dyn crate::store::Store,
    trust: &manifest::seal::Trust,
    kind: Option<Kind>,
) -> Result<(Vec<Brief>, Vec<Unreadable>, Vec<Manifest>)> {
    let mut all = Vec::new();
    let mut bad = Vec::new();
    let mut bases = Vec::new();
    // Kind by kind, in the order the refused are reported.
    for k in Kind::ALL
        .into_iter()
        .filter(|k| kind.is_none_or(|w| w == *k))
    {
        if k == Kind::Postgres {
            let mut got = Vec::new();
            bad.extend(manifest::collect(store, trust, Some(k), &mut got, |m| {
                let base = manifest::postgres::wal_start(&m).is_some();
                Some((Brief::of(&m), base.then(|| Box::new(m))))
            })?);
            for (brief, base) in got {
                all.push(brief);
                bases.extend(base.map(|m| *m));
            }
        } else {
            let brief = |m: Manifest| Some(Brief::of(&m));
            bad.extend(manifest::collect(store, trust, Some(k), &mut all, brief)?);
        }
    }
    all.sort_unstable_by_key(|m| (m.started_at, m.id));
    // In the order `list` shows them: of two bases that start the same
    // segment, the archive is named after the first.
    bases.sort_unstable_by_key(|m| (m.started_at, m.id));
    Ok((all, bad, bases))
}

/// `bkp.list/1`, its members in the order a JSON object of them prints.
#[derive(serde::Serialize)]
struct ListDoc<'a> {
    backups: Rows<'a>,
    schema: &'static str,
    unreadable: &'a [serde_json::Value],
    wal: &'a [serde_json::Value],
    warnings: Vec<String>,
}

/// The backups shown, a row each as they are written.
struct Rows<'a>(&'a [&'a Brief], &'a crate::chain::Index<'a, Brief>);

impl serde::Serialize for Rows<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.0.iter().map(|m| Row::of(m, self.1)))
    }
}

/// One backup of `bkp.list/1`, its members in the order a JSON object of
/// them prints.
#[derive(serde::Serialize)]
struct Row<'a> {
    bytes: u64,
    chain: String,
    content_bytes: u64,
    finished_at: Option<String>,
    id: &'a crate::id::BackupId,
    key_id: Option<&'a str>,
    kind: Kind,
    manifest: String,
    operation: &'a str,
    parent: Option<crate::id::BackupId>,
    scope: &'a manifest::Scope,
    started_at: Option<String>,
    status: &'a manifest::Status,
}

impl<'a> Row<'a> {
    fn of(m: &'a Brief, chains: &crate::chain::Index<'_, Brief>) -> Row<'a> {
        let rfc3339 = |t: time::OffsetDateTime| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        };
        Row {
            bytes: m.stored_bytes,
            chain: chains.link(m).to_string(),
            content_bytes: m.content_bytes,
            finished_at: rfc3339(m.finished_at()),
            id: &m.id,
            key_id: m.key_id.as_deref(),
            kind: m.kind,
            manifest: m.key(),
            operation: &m.operation,
            parent: m.parent(),
            scope: &m.scope,
            started_at: rfc3339(m.started_at),
            status: &m.status,
        }
    }
}
