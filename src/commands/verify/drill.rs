//! `verify --drill`: restore a backup into scratch space with the restore
//! engines and prove that the data loads.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{Context, Result};
use serde::Serialize;
use serde_json::json;

use crate::commands::restore::{self, Source};
use crate::commands::Ctx;
use crate::config::Plan;
use crate::exit::{coded, Code};
use crate::id::BackupId;
use crate::manifest::{Kind, Manifest};

/// What a restore drill found.
#[derive(Debug, Serialize)]
pub struct Drill {
    pub id: BackupId,
    pub kind: Kind,
    pub ok: bool,
    /// What a passing drill of this kind proves (its kind's descriptor).
    pub proves: &'static str,
    pub facts: BTreeMap<String, serde_json::Value>,
    /// In bkp's own words: this goes into the report in the store.
    pub problems: Vec<String>,
    /// The same with the underlying errors' text, for this run's output only
    /// (it may quote a child process or stored data).
    #[serde(skip)]
    pub details: Vec<String>,
}

/// Restores `m` into a scratch directory and proves the data loads. Damage is
/// the drill's finding; trouble (the store did not answer, no key configured)
/// is an error: the drill could not look.
pub fn drill(ctx: &Ctx, src: &Source, m: &Manifest) -> Result<Drill> {
    let mut d = Drill {
        id: m.id,
        kind: m.kind,
        ok: false,
        proves: m.kind.describe().drill,
        facts: BTreeMap::new(),
        problems: Vec::new(),
        details: Vec::new(),
    };
    let scratch = src.work.scratch("drill")?;
    let dir = scratch.path();
    let result = match crate::commands::code(m.kind).drill {
        Some(drill) => drill(&ctx.plan, src, m, dir, &mut d.facts),
        None => Err(anyhow::anyhow!("no drill for {} backups", m.kind.as_str())),
    };
    crate::failpoint::hit("verify-drill");
    match result {
        Ok(()) => d.ok = true,
        Err(e) if crate::exit::is_damage(&e) => {
            d.problems.push(e.to_string());
            d.details.push(format!("{e:#}"));
        }
        Err(e) => {
            return Err(e.context(format!(
                "the drill of {} {} could not run",
                m.kind.as_str(),
                m.id
            )))
        }
    }
    Ok(d)
}

pub(crate) fn tigerbeetle(
    plan: &Plan,
    src: &Source,
    m: &Manifest,
    dir: &Path,
    facts: &mut restore::Facts,
) -> Result<()> {
    let files = restore::tigerbeetle::unpack_snapshot(src, m, dir)?;
    let file = files
        .first()
        .map(|f| dir.join(&f.name))
        .context("the snapshot holds no data file")?;
    let binary = plan
        .tigerbeetle
        .as_ref()
        .and_then(|t| t.binary.clone())
        .ok_or_else(|| {
            coded(
                Code::Config,
                format!(
                    "{}: a TigerBeetle drill runs `tigerbeetle inspect integrity` and a replica: set tigerbeetle.binary",
                    plan.source.display()
                ),
            )
        })?;
    let pass_env = plan
        .tigerbeetle
        .as_ref()
        .map(|t| t.pass_env.clone())
        .unwrap_or_default();
    let replica = restore::pitr::replica_spec(plan, "a restore drill")?;
    let mut checked = crate::sources::tigerbeetle::check_integrity(&binary, &file, &pass_env);
    // A file stored with torn writes (or never checked) is repaired by the
    // replica that opens it, as the restore's replica will: a private replica
    // opens it first, then it is checked again.
    let torn = crate::manifest::tigerbeetle::torn_writes(m);
    if checked.is_err()
        && crate::manifest::tigerbeetle::replica_count(m) == 1
        && (torn || !crate::manifest::tigerbeetle::integrity_checked(m))
    {
        let say = "the restored file fails `tigerbeetle inspect integrity` as stored; opening it in a private replica, then checking again";
        match torn {
            true => src.ui.detail(say),
            false => src.ui.warn(say),
        }
        match crate::tigerbeetle::replica::settle(&replica, &file) {
            Ok(()) => {
                checked = crate::sources::tigerbeetle::check_integrity(&binary, &file, &pass_env);
                facts.insert("settled".into(), json!(true));
            }
            Err(e) => src.ui.detail(&format!(
                "a private replica could not open it either: {e:#}"
            )),
        }
    }
    checked.map_err(|e| {
        coded(Code::Integrity, format!("{e:#}"))
            .context("the restored data file failed `tigerbeetle inspect integrity`")
    })?;
    if crate::manifest::tigerbeetle::replica_count(m) > 1 {
        let paths: Vec<_> = files.iter().map(|f| dir.join(&f.name)).collect();
        for f in &paths[1..] {
            crate::sources::tigerbeetle::check_integrity(&binary, f, &pass_env).map_err(|e| {
                coded(Code::Integrity, format!("{e:#}")).context(format!(
                    "the restored data file {} failed `tigerbeetle inspect integrity`",
                    f.display()
                ))
            })?;
        }
        facts.insert("integrity".into(), json!("passed"));
        return drill_base(src, m, &replica, &paths, facts);
    }
    facts.insert("integrity".into(), json!("passed"));
    let stats = match crate::tigerbeetle::replica::count_rows(&replica, &file) {
        Ok(stats) => stats,
        Err(e) => {
            let Some(n) = e
                .chain()
                .find_map(|c| c.downcast_ref::<crate::tigerbeetle::replica::NotAlone>())
            else {
                return Err(e);
            };
            // One replica of a larger cluster runs only with the others: its
            // integrity and digests are all a drill can prove.
            facts.insert("replica_count".into(), json!(n.replica_count));
            facts.insert(
                "rows".into(),
                json!(format!(
                    "not counted: one replica of a {}-replica cluster runs only with the others",
                    n.replica_count
                )),
            );
            return Ok(());
        }
    };
    facts.insert("accounts".into(), json!(stats.accounts));
    facts.insert("transfers".into(), json!(stats.transfers));
    facts.insert("newest_timestamp".into(), json!(stats.until));
    for (key, got) in [("accounts", stats.accounts), ("transfers", stats.transfers)] {
        if let Some(want) = m.source.get(key).and_then(|v| v.as_u64()) {
            if want != got {
                return Err(coded(
                    Code::Integrity,
                    format!("the restored replica holds {got} {key}, the snapshot's manifest recorded {want}"),
                ));
            }
        }
    }
    Ok(())
}

/// A base of several replicas built from the log: its N files start as a
/// private cluster, whose rows are counted and compared with the manifest,
/// and whose newest row must be the log's, with the same fields (the replay of
/// the log up to that row checks the segment that holds it, and replays
/// nothing).
fn drill_base(
    src: &Source,
    m: &Manifest,
    replica: &crate::tigerbeetle::replica::ReplicaSpec,
    files: &[std::path::PathBuf],
    facts: &mut restore::Facts,
) -> Result<()> {
    use crate::manifest::tigerbeetle as tbm;
    let (cluster, cfg) = crate::tigerbeetle::replica::start_cluster_on(replica, files)?;
    let c = crate::tigerbeetle::tblog::reader(&cfg)?;
    let stats = crate::tigerbeetle::tblog::capture_rows_on(&c, &mut std::io::sink())?.segment;
    c.close();
    facts.insert("replica_count".into(), json!(files.len()));
    facts.insert("accounts".into(), json!(stats.accounts));
    facts.insert("transfers".into(), json!(stats.transfers));
    facts.insert("newest_timestamp".into(), json!(stats.until));
    let want = |key: &str| m.source.get(key).and_then(|v| v.as_u64());
    for (key, got) in [
        ("accounts", stats.accounts),
        ("transfers", stats.transfers),
        ("newest_timestamp", stats.until),
    ] {
        if want(key).is_some_and(|w| w != got) {
            return Err(coded(
                Code::Integrity,
                format!(
                    "the restored base holds {key} {got}, its manifest recorded {}",
                    want(key).unwrap_or(0)
                ),
            ));
        }
    }
    let newest = tbm::base_newest(m).unwrap_or(stats.until);
    let source = tbm::cluster_id(m).unwrap_or(0);
    if newest > 0 {
        let at = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(newest))
            .context("the base's newest timestamp is no time")?;
        let r = restore::pitr::replay_onto(src, &cfg, source, at, None, None)?;
        facts.insert(
            "newest_row".into(),
            json!(if r.newest_row_in_log {
                "in the log, with the same fields"
            } else {
                "not checked: the log no longer holds its segment"
            }),
        );
    }
    drop(cluster);
    Ok(())
}

/// Rebuilds a DuckDB database from the export chain ending at `m` (the full
/// export and the incrementals after it); the restore itself checks every
/// table's row count and content fingerprint against the manifests.
pub(crate) fn duckdb(
    _: &Plan,
    src: &Source,
    m: &Manifest,
    dir: &Path,
    facts: &mut restore::Facts,
) -> Result<()> {
    let r = restore::duckdb::restore_database(src, m, &dir.join("drill.duckdb"), false)?;
    facts.insert("tables".into(), json!(r.counts.len()));
    facts.insert("rows".into(), json!(r.counts.values().sum::<u64>()));
    facts.insert("fingerprinted_tables".into(), json!(r.fingerprinted));
    Ok(())
}

/// Unpacks a PostgreSQL base backup into the scratch directory and has
/// `pg_verifybackup` check every file and the WAL it needs.
pub(crate) fn pgbase(
    plan: &Plan,
    src: &Source,
    m: &Manifest,
    dir: &Path,
    facts: &mut restore::Facts,
) -> Result<()> {
    let data = dir.join("data");
    {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new().mode(0o700).create(&data)?;
    }
    let verifier = restore::pgbase::verifier(plan, m)?;
    let files = restore::pgbase::restore_tree(src, m, &data, &verifier)?;
    facts.insert("files".into(), json!(files));
    // With a WAL archive, PostgreSQL replays all of it onto the backup: the
    // proof that the archive restores, not only that its files are whole.
    let Some((system, _, _)) = crate::manifest::postgres::wal_start(m) else {
        facts.insert(
            "wal_replay".into(),
            json!("skipped: the base backup records no WAL start bkp can use"),
        );
        return Ok(());
    };
    if crate::manifest::wal::archive::archived(src.store, system)?.is_empty() {
        return Ok(());
    }
    if let Err(e) = restore::pgpitr::check_user() {
        facts.insert("wal_replay".into(), json!(format!("skipped: {e}")));
        return Ok(());
    }
    let pitr = dir.join("pitr");
    std::fs::create_dir(&pitr)?;
    let r = restore::pgpitr::recover(src, m, &data, None, &verifier, &pitr)?;
    facts.insert("wal_files".into(), json!(r.files));
    facts.insert("wal_bytes".into(), json!(r.bytes));
    facts.insert("replayed_to".into(), json!(r.last_commit));
    facts.insert("timeline".into(), json!(r.timeline));
    Ok(())
}

/// Reads a PostgreSQL dump end to end through the verifying pipeline into
/// `pg_restore`, which decodes every data block (no server is needed, none is
/// touched), and compares each table's rows with the counts the dump recorded.
pub(crate) fn pgdump(
    plan: &Plan,
    src: &Source,
    m: &Manifest,
    _: &Path,
    facts: &mut restore::Facts,
) -> Result<()> {
    let entry = crate::manifest::pgdump::dump_object(m)?;
    let bin_dir = plan.postgres.as_ref().and_then(|p| p.bin_dir.as_deref());
    let keyring = crate::pipeline::keys_for(m, src.keyring)?;
    let spool = src.work.scratch("spool")?;
    let mut counts = None;
    crate::pipeline::download(
        src.store,
        entry,
        m.compression,
        keyring,
        spool.path(),
        src.progress.clone(),
        |r| {
            counts = Some(crate::sources::postgres::scan_archive(bin_dir, r)?);
            Ok(())
        },
    )?;
    let counts = counts.unwrap_or_default();
    restore::pgdump::compare_counts(m, &counts)?;
    facts.insert("tables".into(), json!(counts.len()));
    facts.insert("rows".into(), json!(counts.values().sum::<u64>()));
    Ok(())
}

/// Restores a replicated cold tier and makes DuckDB decode every row of every
/// Parquet file, comparing the row count with each file's footer.
pub(crate) fn parquet(
    _: &Plan,
    src: &Source,
    m: &Manifest,
    dir: &Path,
    facts: &mut restore::Facts,
) -> Result<()> {
    let tree = dir.join("tree");
    std::fs::create_dir_all(&tree)?;
    let files = restore::parquet::restore_tree(src, m, &tree)?;
    let mut rows = 0i64;
    for f in &files {
        rows += crate::parquet::load_check(&tree.join(&f.name)).map_err(|e| {
            coded(Code::Integrity, format!("{e:#}"))
                .context(format!("restored file {} does not load", f.name))
        })?;
    }
    facts.insert("files".into(), json!(files.len()));
    facts.insert("rows".into(), json!(rows));
    Ok(())
}
