//! Restore of a TigerBeetle snapshot: download → verify SHA-256 → decrypt →
//! decompress → unpack into staging beside the target → check every file against
//! the manifest → put in place. With `--at`, the log segments after the snapshot
//! (or, with no snapshot at or before that time, all of them into a fresh data
//! file) are replayed up to that moment first ([`super::pitr`]). When the snapshot
//! holds pending transfers with a live timeout that its replica expires by its own
//! clock although the source had not expired them by then, the restore starts
//! again from the next older snapshot (in the end from the log alone), never
//! delivering balances it did not reproduce.
//!
//! With `--replicas N` the log alone is replayed into a private cluster of N fresh
//! replicas, and their N data files are delivered ([`run_cluster`]).
//!
//! The target is touched only after everything verified: a damaged backup, a
//! wrong key or an interrupted run leave it exactly as it was.

use std::path::Path;
use std::time::Instant;

use anyhow::{Context, Result};
use serde_json::json;

use super::target::{Envelope, Target};
use super::{pitr, Options, RestorePlan, Source};
use crate::config::Plan;
use crate::exit::{coded, Code};
use crate::manifest::{FileEntry, Manifest};
use crate::sources::tigerbeetle::ClusterPlan;
use crate::tigerbeetle::replica::NotAlone;
use crate::tigerbeetle::tblog::LiveTimeout;
use crate::units::count;
use crate::{archive, pipeline, ui};

/// The name TigerBeetle suggests for the data file of replica `replica` of
/// cluster `cluster` (`${CLUSTER_ID}_${REPLICA_INDEX}.tigerbeetle`), used for the
/// files the log is replayed into.
pub(crate) fn data_file_name(cluster: u128, replica: u8) -> String {
    format!("{cluster}_{replica}.tigerbeetle")
}

pub fn run(src: &Source, rp: &RestorePlan, opts: &Options) -> Result<()> {
    // Before the target is looked at: a cluster is replayed from the configured
    // cluster's log, and its files are named for it.
    let cluster = match opts.replicas {
        0 | 1 => None,
        _ => Some(configured_cluster(opts.plan, "--replicas")?.cluster_id),
    };
    let envelope = opts.envelope(rp.kind);
    // `restore::run` admits --replicas only with --at.
    if let (Some(cluster), Some(at)) = (cluster, rp.at) {
        return run_cluster(
            src,
            opts.plan,
            &envelope,
            (cluster, opts.replicas),
            at,
            rp.backup.as_ref(),
        );
    }
    let done = envelope.deliver(&src.work, src.ui, |staging| {
        build(src, opts.plan, rp, staging)
    })?;
    let (target, elapsed) = (&done.target, done.elapsed);
    let (restored, replayed, base) = done.made;
    let m = base.as_ref();
    let from = m.map_or("the log".to_string(), |m| format!("snapshot {}", m.id));
    warn_torn(src.ui, m.filter(|_| replayed.is_none()));
    let members = json!({"id": m.map(|m| m.id), "replayed": replayed});
    report(src.ui, Some(target), &restored, elapsed, members, |bytes| {
        let mut lines = Vec::new();
        lines.extend(replayed.as_ref().map(pitr::Replayed::summary));
        lines.push(format!(
            "restored {from} into {}: {}, {}, verified, in {:.1}s ({})",
            target.path.display(),
            count(restored.len() as u64, "file"),
            ui::size(bytes),
            elapsed.as_secs_f64(),
            ui::rate(bytes, elapsed)
        ));
        lines
    })
}

/// Fills `staging` with the snapshot (or nothing) and, with `--at`, the log
/// replayed onto it; starts again from an older snapshot (in the end from
/// the log alone) when a replica expires pending transfers early. Returns
/// the files delivered, what was replayed, and the snapshot they came from.
fn build(
    src: &Source,
    plan: &Plan,
    rp: &RestorePlan,
    staging: &Path,
) -> Result<(Vec<FileEntry>, Option<pitr::Replayed>, Option<Manifest>)> {
    let m = rp.backup.as_ref();
    match m {
        Some(m) => src.ui.detail(&format!(
            "restoring snapshot {} from {}",
            m.id,
            src.store.identity()
        )),
        None => src.ui.info(
            "no snapshot at or before --at: replaying the log from the beginning into a fresh data file",
        ),
    }
    let mut base = m.cloned();
    let mut restored = match m {
        Some(m) => unpack_snapshot(src, m, staging)?,
        None => Vec::new(),
    };
    let Some(at) = rp.at else {
        return Ok((restored, None, base));
    };
    let mut not_alone = None;
    let (r, name) = loop {
        let name = restored.first().map_or_else(
            || data_file_name(super::cluster_id(plan), 0),
            |f| f.name.clone(),
        );
        let path = staging.join(&name);
        let early =
            match pitr::replay_logs(src, plan, &path, at, base.is_none(), not_alone.as_deref()) {
                Ok(r) if r.expired_early.is_empty() => break (r, name),
                Ok(r) => r.expired_early.join(", "),
                Err(e) => {
                    if let (Some(n), Some(b)) = (
                        e.chain().find_map(|c| c.downcast_ref::<NotAlone>()),
                        base.as_ref(),
                    ) {
                        // Every snapshot of this replica is of the same cluster:
                        // no older one can run either.
                        not_alone = Some(one_replica_of_many(src.ui, b, n.replica_count));
                        base = None;
                        clear_dir(staging)?;
                        restored = Vec::new();
                        continue;
                    }
                    match e.chain().find_map(|c| c.downcast_ref::<LiveTimeout>()) {
                        Some(l) if base.is_some() => format!("{:#x}", l.pending_id),
                        _ => return Err(e),
                    }
                }
            };
        let Some(b) = base.take() else {
            return Err(coded(
                Code::Integrity,
                format!("replaying the log alone left pending transfers {early} expired by the private replica's clock: the restored state is not the source's; nothing was restored"),
            ));
        };
        base = older_snapshot(src, &b)?;
        src.ui.warn(&format!(
            "snapshot {} holds pending transfers with a timeout that the restored replica expires by its own clock ({early}), which the source had not expired by --at: restoring again from {}",
            b.id,
            base.as_ref().map_or("the log alone".to_string(), |o| format!("the older snapshot {}", o.id))
        ));
        clear_dir(staging)?;
        restored = match &base {
            Some(o) => unpack_snapshot(src, o, staging)?,
            None => Vec::new(),
        };
    };
    // The replayed file differs from the snapshot's: report its own digest.
    let path = staging.join(&name);
    Ok((vec![replayed_file(name, &path)?], Some(r), base))
}

/// Warns that snapshot `b` is of one replica of a `count`-replica cluster, which
/// TigerBeetle runs only with the others, and returns why the restore replays
/// the log alone.
fn one_replica_of_many(ui: ui::Ui, b: &Manifest, count: u8) -> String {
    ui.warn(&format!(
        "snapshot {} is of one replica of a {count}-replica cluster, which TigerBeetle runs only with the others: restoring one data file from the log alone (--replicas {count} restores the data files of the whole cluster)",
        b.id
    ));
    pitr::from_the_log_alone(&format!(
        "snapshot {} is of one replica of a {count}-replica cluster, so the restore",
        b.id
    ))
}

/// Warns that the snapshot restored as it is (no replay opened it) holds torn
/// writes (see `manifest::tigerbeetle::torn_writes`), which `inspect integrity`
/// rejects.
fn warn_torn(ui: ui::Ui, as_stored: Option<&Manifest>) {
    if let Some(m) = as_stored.filter(|m| crate::manifest::tigerbeetle::torn_writes(m)) {
        ui.warn(&format!(
            "snapshot {} was copied from a replica stopped mid-write: the file holds torn \
             writes that TigerBeetle repairs when a replica opens it (bkp checked that), so \
             `tigerbeetle inspect integrity` rejects it until a replica has started on it once",
            m.id
        ));
    }
}

/// Prints what a restore delivered into `target` (`None`: into a running
/// cluster, no files): with `--json` the `bkp.restore/1` document (`members`
/// beside the files, their bytes and the time), else `lines` (given the bytes)
/// and the path of every file.
fn report(
    ui: ui::Ui,
    target: Option<&Target>,
    files: &[FileEntry],
    elapsed: std::time::Duration,
    members: serde_json::Value,
    lines: impl FnOnce(u64) -> Vec<String>,
) -> Result<()> {
    let bytes: u64 = files.iter().map(|f| f.size).sum();
    if ui.json {
        let mut doc = json!({
            "schema": "bkp.restore/1",
            "kind": "tigerbeetle",
            "files": files,
            "bytes": bytes,
            "seconds": elapsed.as_secs_f64(),
        });
        if let Some(doc) = doc.as_object_mut() {
            if let Some(t) = target {
                doc.insert("target".into(), json!(t.path.display().to_string()));
            }
            if let serde_json::Value::Object(more) = members {
                doc.extend(more);
            }
        }
        return ui::document(doc);
    }
    for line in lines(bytes) {
        ui.info(&line);
    }
    if let Some(t) = target {
        for f in files {
            ui::out(&t.path.join(&f.name).display().to_string())?;
        }
    }
    Ok(())
}

/// The configured cluster whose log `flag` replays. Without one there is no
/// log to name (its id would default to 0): a config error naming the setting.
pub(crate) fn configured_cluster<'a>(plan: &'a Plan, flag: &str) -> Result<&'a ClusterPlan> {
    plan.tigerbeetle
        .as_ref()
        .and_then(|t| t.cluster.as_ref())
        .ok_or_else(|| {
            coded(
                Code::Config,
                format!(
                    "{}: {flag} replays this cluster's log: set tigerbeetle.addresses (and cluster_id)",
                    plan.source.display()
                ),
            )
        })
}

/// The newest base of cluster `cluster` built from its log for `replicas`
/// replicas (`bkp snapshot --from-log`) whose newest row is at or before
/// `until` (a TigerBeetle timestamp), read again from its own manifest.
pub(crate) fn cluster_base(
    store: &dyn crate::store::Store,
    trust: &crate::manifest::Trust,
    cluster: u128,
    replicas: u8,
    until: u64,
) -> Result<Option<Manifest>> {
    use crate::manifest::tigerbeetle as tb;
    let (all, _) = crate::manifest::list(store, trust, Some(crate::manifest::Kind::Tigerbeetle))?;
    all.into_iter()
        .filter(|m| {
            tb::replica_count(m) == replicas
                && tb::cluster_id(m) == Some(cluster)
                && tb::base_newest(m).is_some_and(|n| n <= until)
        })
        .max_by_key(|m| (tb::base_newest(m), m.started_at))
        .map(|m| crate::manifest::catalog::reread(store, trust, &m))
        .transpose()
}

/// Unpacks base `m` of `replicas` replicas of `cluster` into `dir` and checks
/// that it holds exactly the data files `files` names (replica `i` of
/// `cluster`, in order): a base of another shape is refused before any
/// replica runs on it.
pub(crate) fn unpack_base(
    src: &Source,
    m: &Manifest,
    dir: &Path,
    cluster: u128,
    files: &[std::path::PathBuf],
) -> Result<Vec<FileEntry>> {
    let restored = unpack_snapshot(src, m, dir)?;
    let want: Vec<_> = files.iter().map(|f| dir.join(f)).collect();
    let got: Vec<_> = restored.iter().map(|f| dir.join(&f.name)).collect();
    if want != got {
        return Err(coded(
            Code::Integrity,
            format!(
                "base {} holds {:?}, not the {} data files of cluster {cluster} ({:?}); nothing was restored from it",
                m.id,
                restored.iter().map(|f| &f.name).collect::<Vec<_>>(),
                files.len(),
                files,
            ),
        ));
    }
    Ok(restored)
}

/// `restore --at TIME --target DIR --replicas N`: the N data files of a whole
/// cluster (`C_0.tigerbeetle` … `C_{N-1}.tigerbeetle`, replica `i` of N of cluster
/// `C`, the configured cluster's id), to be copied to the N machines of a new
/// cluster. From the newest base of N replicas built from the log
/// (`bkp snapshot --from-log`) at or before TIME, started as a private cluster on
/// loopback, with the log after it replayed; without one, the log is replayed
/// from the beginning into N fresh replicas. A snapshot of one replica's data
/// file is no base for a cluster.
fn run_cluster(
    src: &Source,
    plan: &Plan,
    envelope: &Envelope,
    (cluster, replicas): (u128, u8),
    at: time::OffsetDateTime,
    base: Option<&Manifest>,
) -> Result<()> {
    let done = envelope.deliver(&src.work, src.ui, |staging| {
        match base {
            Some(b) => src.ui.info(&format!(
                "restoring base {} of {replicas} replicas (newest row at timestamp {}) and replaying the log after it",
                b.id,
                crate::manifest::tigerbeetle::base_newest(b).unwrap_or(0)
            )),
            None => src.ui.info(&format!(
                "no base of {replicas} replicas at or before --at: replaying the log from the beginning into a private cluster of {replicas} fresh replicas"
            )),
        }
        let names: Vec<String> = (0..replicas).map(|i| data_file_name(cluster, i)).collect();
        let files: Vec<_> = names.iter().map(|n| staging.join(n)).collect();
        let alone = format!(
            "{}; a snapshot restores as one data file without --replicas, and `bkp snapshot --from-log` stores bases of the cluster",
            pitr::from_the_log_alone(&format!("a cluster of {replicas} replicas"))
        );
        let r = match base {
            Some(b) => {
                let names: Vec<_> = names.iter().map(std::path::PathBuf::from).collect();
                unpack_base(src, b, staging, cluster, &names)?;
                pitr::replay_onto_base(src, plan, &files, cluster, at, b)?
            }
            None => pitr::replay_into_cluster(src, plan, &files, cluster, at, &alone)?,
        };
        let restored = names
            .into_iter()
            .zip(&files)
            .map(|(name, path)| replayed_file(name, path))
            .collect::<Result<Vec<_>>>()?;
        Ok((r, restored))
    })?;
    let (target, elapsed, (r, restored)) = (&done.target, done.elapsed, &done.made);
    let from = base.map_or("the log".to_string(), |b| format!("base {}", b.id));
    let members = json!({"id": base.map(|b| b.id), "replayed": r, "replicas": replicas});
    report(src.ui, Some(target), restored, elapsed, members, |bytes| {
        vec![
            format!(
                "replayed {}: {}, {} and {}, up to timestamp {}",
                count(r.segments as u64, "log segment"),
                count(r.accounts, "account"),
                count(r.transfers, "transfer"),
                count(r.expiries, "expiry"),
                r.last_timestamp
            ),
            format!(
                "restored a {replicas}-replica cluster from {from} into {}: {} data files, {}, in {:.1}s; start replica i on {cluster}_i.tigerbeetle with the new cluster's addresses",
                target.path.display(),
                restored.len(),
                ui::size(bytes),
                elapsed.as_secs_f64(),
            ),
        ]
    })
}

/// `restore --at TIME --into ADDRESSES`: replays the log up to TIME into a running
/// cluster the operator formatted and started (of any replica count), for a whole
/// cluster back at once. A snapshot is a data file, so the log is replayed alone;
/// the cluster must hold nothing newer than TIME (replay checks what it holds), and
/// is never the cluster being backed up.
pub fn run_into(src: &Source, plan: &Plan, rp: &RestorePlan, into: &str) -> Result<()> {
    let at = rp
        .at
        .ok_or_else(|| coded(Code::Config, "--into needs --at"))?;
    let cluster = configured_cluster(plan, "--into")?;
    let wanted: Vec<&str> = into
        .split(',')
        .map(str::trim)
        .filter(|a| !a.is_empty())
        .collect();
    if wanted.is_empty() {
        return Err(coded(Code::Config, "--into: no address given"));
    }
    let live: Vec<&str> = cluster.addresses.split(',').map(str::trim).collect();
    if let Some(a) = wanted.iter().find(|a| live.contains(a)) {
        return Err(coded(
            Code::Config,
            format!("--into {a}: that is the cluster being backed up (tigerbeetle.addresses); a restore never writes into it. Format and start a new cluster and name its addresses"),
        ));
    }
    src.ui.info(&format!(
        "replaying the log of cluster {} up to {} into the cluster at {}",
        cluster.cluster_id,
        at.format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_default(),
        wanted.join(",")
    ));
    let cfg = crate::tigerbeetle::tblog::ClusterConfig {
        cluster_id: cluster.cluster_id,
        addresses: wanted.join(","),
        timeout: std::time::Duration::from_secs(60),
    };
    let clock = Instant::now();
    let r =
        pitr::replay_onto(src, &cfg, cluster.cluster_id, at, None, None).with_context(|| {
            format!(
                "failed to replay the log into the cluster at {}",
                cfg.addresses
            )
        })?;
    let elapsed = clock.elapsed();
    let members = json!({"id": null, "replayed": r, "into": cfg.addresses});
    report(src.ui, None, &[], elapsed, members, |_| {
        vec![format!(
            "replayed {} into the cluster at {}: {}, {} and {}, up to timestamp {}, in {:.1}s",
            count(r.segments as u64, "log segment"),
            cfg.addresses,
            count(r.accounts, "account"),
            count(r.transfers, "transfer"),
            count(r.expiries, "expiry"),
            r.last_timestamp,
            elapsed.as_secs_f64()
        )]
    })
}

/// A data file the log was replayed into, named `name`, with its own size and
/// digest (a replayed file is no stored file's copy).
fn replayed_file(name: String, path: &Path) -> Result<FileEntry> {
    let digest = crate::stages::hash::digest_reader(std::io::BufReader::new(
        std::fs::File::open(path).with_context(|| format!("failed to open {}", path.display()))?,
    ))?;
    Ok(FileEntry {
        name,
        size: digest.bytes,
        sha256: digest.sha256,
    })
}

/// The newest restorable TigerBeetle snapshot started before `than`, if any.
fn older_snapshot(src: &Source, than: &Manifest) -> Result<Option<Manifest>> {
    let (all, _) = crate::manifest::list(
        src.store,
        src.trust,
        Some(crate::manifest::Kind::Tigerbeetle),
    )?;
    all.into_iter()
        .filter(|o| super::restorable(o) && o.started_at < than.started_at)
        .max_by_key(|o| o.started_at)
        .map(|o| crate::manifest::catalog::reread(src.store, src.trust, &o))
        .transpose()
}

/// Empties `dir` (a staging directory of this run).
fn clear_dir(dir: &Path) -> Result<()> {
    for e in std::fs::read_dir(dir).with_context(|| format!("failed to read {}", dir.display()))? {
        let p = e?.path();
        if p.is_dir() {
            std::fs::remove_dir_all(&p)
        } else {
            std::fs::remove_file(&p)
        }
        .with_context(|| format!("failed to remove {}", p.display()))?;
    }
    Ok(())
}

/// Downloads, verifies and unpacks every object of snapshot `m` into `dir` (an
/// empty directory), then checks that exactly the files the manifest names came
/// out, with their sizes and SHA-256. Returns them, sorted by name.
pub fn unpack_snapshot(src: &Source, m: &Manifest, dir: &Path) -> Result<Vec<FileEntry>> {
    let mut restored = Vec::new();
    let keyring = pipeline::keys_for(m, src.keyring)?;
    if let Some(map) = &crate::chunks::load(src.store, m)? {
        // `check_keys` admitted the summary: its file is among the manifest's.
        let want = m.files.iter().find(|f| f.name == map.file).ok_or_else(|| {
            coded(
                Code::Integrity,
                format!("backup {}: its chunk map names no file of its", m.id),
            )
        })?;
        if !archive::is_plain_name(&want.name) {
            return Err(coded(
                Code::Integrity,
                format!("backup {}: file name {:?} is not a plain file name; the target was not touched", m.id, want.name),
            ));
        }
        let chunks = crate::chunks::source(src.store, m.kind, m.compression, map, keyring)?;
        src.progress.begin("restoring", Some(want.size));
        restored.push(crate::chunks::read_file(
            &chunks,
            map,
            want,
            &dir.join(&want.name),
            &src.progress,
        )?);
        src.progress.end();
    }
    for entry in &m.objects {
        // `dir` is staging: nothing unpacked is used before every file below
        // matched the manifest, after the stored digest did.
        pipeline::download_staged(
            src.store,
            entry,
            pipeline::Decode::Files(m.compression),
            keyring,
            src.progress.clone(),
            |r| {
                restored.extend(archive::unpack(r, dir, &m.files)?);
                Ok(())
            },
        )?;
    }
    // Every file the manifest names, with its exact size and digest; nothing else.
    let mut want = m.files.clone();
    want.sort_by(|a, b| a.name.cmp(&b.name));
    restored.sort_by(|a, b| a.name.cmp(&b.name));
    if want != restored {
        return Err(coded(
            Code::Integrity,
            format!(
                "backup {}: the restored files do not match the manifest (expected {:?}, got {:?}); the target was not touched",
                m.id, want, restored
            ),
        ));
    }
    Ok(restored)
}
