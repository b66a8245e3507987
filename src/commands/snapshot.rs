//! `bkp snapshot`: TigerBeetle data file → consistent copy → tar (and the
//! file's SHA-256, in the same read) → compress → encrypt → SHA-256 → upload →
//! manifest → ledger → local cleanup.

use std::collections::HashMap;

use anyhow::Result;
use serde_json::json;

use super::run::{json_report, Body, Run, Spec, Stored};
use super::Ctx;
use crate::config::StorePlan;
use crate::exit::{coded, Code};
use crate::ledger::Operation;
use crate::manifest::tigerbeetle::SNAPSHOT;
use crate::manifest::{self, Kind, Manifest, Scope};
use crate::sources::tigerbeetle;
use crate::sources::tigerbeetle::{SnapshotFormat, TigerBeetlePlan};
use crate::tigerbeetle::tblog::SegmentStats;
use crate::{archive, chunks, pipeline, ui};

pub fn run(ctx: &Ctx) -> Result<()> {
    let plan = &ctx.plan;
    let (tb, data_file) = plan
        .tigerbeetle
        .as_ref()
        .and_then(|t| Some((t, t.data_file.clone()?)))
        .ok_or_else(|| {
            let what = "`bkp snapshot` needs a [tigerbeetle] section with data_file";
            coded(Code::Config, format!("{}: {what}", plan.source.display()))
        })?;
    let chunked = chunked_format(plan, tb)?;
    let (trust, store) = super::backup_store(plan)?;
    let run = Run::begin(
        ctx,
        store.as_ref(),
        &trust,
        true,
        Spec {
            kind: Kind::Tigerbeetle,
            scope: Scope::Full,
            operation: Operation::Snapshot,
            compression: plan.compression,
            retention_days: tb.retention_days,
        },
    )?;
    let id = run.id;
    ctx.ui.detail(&format!(
        "snapshot {id} of {} to {}",
        data_file.display(),
        store.identity()
    ));

    // The chunks' key, derived once (a passphrase's costs a PBKDF2).
    let chunk_key = chunked
        .then(|| run.keyring.map(|k| k.current().for_chunks()))
        .flatten();
    let outcome = (|| -> Result<Stored> {
        let log = |m: &str| ctx.ui.detail(m);
        let settle = |copy: &std::path::Path| settle(ctx, copy);
        let prepared = tigerbeetle::prepare(tb, &data_file, &plan.work_dir, &log, &settle)?;
        let cluster = recorded_cluster(tb, &trust, &data_file, &prepared)?;
        // A start command that failed leaves the replica down: whatever ends
        // this run, its error says so.
        let down = |e: anyhow::Error| match &prepared.deferred_error {
            Some(d) => e.context(d.clone()),
            None => e,
        };
        let progress = ctx.progress();
        progress.begin("uploading", Some(prepared.size));
        let (objects, archived, stored_chunks, base) = if chunked {
            // Only chunks the newest snapshot does not name are uploaded.
            let base = chunk_base(store.as_ref(), &trust, plan.compression, chunk_key.as_ref())?;
            let (base, known) = base_chunks(ctx, store.as_ref(), base)?;
            if let Some(b) = &base {
                log(&format!(
                    "building on snapshot {}: {} of its chunks are in the store",
                    b.id,
                    known.len()
                ));
            }
            let sink = chunks::Sink {
                store: store.as_ref(),
                kind: Kind::Tigerbeetle,
                compression: plan.compression,
                key: chunk_key.as_ref(),
                escrow: trust.keys().map_or(&[], |k| k.escrow()),
                progress: progress.clone(),
            };
            let (mut map, entry) = chunks::write_file(
                &sink,
                &prepared.path,
                &prepared.name,
                chunks::CHUNK_SIZE,
                &known,
            )
            .map_err(down)?;
            claim_and_hold(&run, &trust, &mut map, &known).map_err(down)?;
            let list = manifest::object_key(
                Kind::Tigerbeetle,
                SNAPSHOT,
                id,
                run.started_at,
                manifest::chunks::LIST_SUFFIX,
            );
            let summary = chunks::store_list(store.as_ref(), Kind::Tigerbeetle, id, &list, &map)
                .map_err(down)?;
            (
                Vec::new(),
                vec![entry],
                Some((summary, map)),
                base.map(|b| (b, known)),
            )
        } else {
            let (entry, archived) =
                upload_whole(store.as_ref(), &run, plan, &prepared, progress.clone())
                    .map_err(down)?;
            (vec![entry], archived, None, None)
        };
        progress.end();

        let source = snapshot_source(
            ctx,
            tb,
            &data_file,
            &prepared,
            cluster,
            base.as_ref().map(|(b, _)| b),
        );
        let m = run.manifest(Body {
            objects,
            files: archived,
            chunks: stored_chunks.as_ref().map(|(summary, _)| summary.clone()),
            source,
            ..Body::default()
        });
        let mut stored = run.store_manifest(m).map_err(down)?;
        if let Some((_, map)) = &stored_chunks {
            let sink = chunks::Sink {
                store: store.as_ref(),
                kind: Kind::Tigerbeetle,
                compression: plan.compression,
                key: chunk_key.as_ref(),
                escrow: trust.keys().map_or(&[], |k| k.escrow()),
                progress: std::sync::Arc::new(crate::stages::progress::Silent),
            };
            let base = base.as_ref().map(|(b, known)| (b, known));
            ensure_shared(ctx, &sink, base, map, &prepared.path).map_err(down)?;
        }
        stored
            .problems
            .extend(prepared.deferred_error.clone().map(anyhow::Error::msg));
        Ok(stored)
        // `prepared` drops here: the lock is released and the local copy removed.
    })();

    let store = store.as_ref();
    run.finish(outcome, |m, elapsed, ledger| {
        report(ctx, m, &data_file, store, elapsed, ledger)
    })
}

/// The data file as one object (the format before chunks): its entry and
/// the archived file's record. The data file is read once: the pass that
/// archives it digests it too, so its SHA-256 is known only at the end and
/// goes into the manifest (object metadata is fixed when an upload starts).
fn upload_whole(
    store: &dyn crate::store::Store,
    run: &Run,
    plan: &crate::config::Plan,
    prepared: &tigerbeetle::Prepared,
    progress: std::sync::Arc<dyn crate::stages::progress::Progress>,
) -> Result<(manifest::ObjectEntry, Vec<manifest::FileEntry>)> {
    let suffix = run.suffix(".tar", plan.compression);
    let key = manifest::object_key(Kind::Tigerbeetle, SNAPSHOT, run.id, run.started_at, &suffix);
    let files = [(prepared.name.clone(), prepared.path.clone())];
    let mut archived = Vec::new();
    let entry = pipeline::upload(
        store,
        &key,
        &run.metadata(Scope::Full),
        plan.compression,
        run.keyring,
        progress,
        |w| {
            archived = archive::write_files(w, &files)?;
            Ok(())
        },
    )?;
    Ok((entry, archived))
}

fn report(
    ctx: &Ctx,
    m: &Manifest,
    data_file: &std::path::Path,
    store: &dyn crate::store::Store,
    elapsed: std::time::Duration,
    ledger_note: Option<super::run::LedgerNote>,
) -> Result<()> {
    if ctx.ui.json {
        json_report(m, store, elapsed, ledger_note, json!({}))?;
    } else {
        let stored = match (&m.chunks, m.objects.first()) {
            (Some(c), _) => format!(
                "stored as {} chunks of {} ({} new, {})",
                c.count,
                ui::size(c.chunk_size),
                c.added,
                ui::size(c.added_bytes),
            ),
            (None, Some(o)) => format!("stored as {} ({})", o.key, ui::size(o.size)),
            (None, None) => "stored".to_string(),
        };
        let size = m.files.first().map_or(0, |f| f.size);
        ctx.ui.info(&format!(
            "snapshot {} of {} ({}) {stored} in {} in {:.1}s ({})",
            m.id,
            data_file.display(),
            ui::size(size),
            store.identity(),
            elapsed.as_secs_f64(),
            ui::rate(size, elapsed),
        ));
        if let Some(n) = ledger_note {
            ctx.ui.detail(&n.to_string());
        }
        crate::ui::out(&m.id.to_string())?;
    }
    Ok(())
}

/// Lets a private replica open a copy that failed `tigerbeetle inspect
/// integrity` as taken (see `sources::tigerbeetle::prepare`).
fn settle(ctx: &Ctx, copy: &std::path::Path) -> Result<()> {
    let spec = super::restore::pitr::replica_spec(&ctx.plan, "settling a torn copy")?;
    crate::tigerbeetle::replica::settle(&spec, copy)
}

/// The cluster a snapshot records: the one the config names (with
/// `addresses`), else the one the copy's superblock holds. A snapshot that
/// names none counts as every cluster's, so a host that signs its backups
/// (whose signer is trusted for its clusters only) refuses to store one, as
/// every reader would refuse it.
fn recorded_cluster(
    tb: &TigerBeetlePlan,
    trust: &crate::manifest::Trust,
    data_file: &std::path::Path,
    prepared: &tigerbeetle::Prepared,
) -> Result<Option<u128>> {
    let cluster = match &tb.cluster {
        Some(c) => Some(c.cluster_id),
        None => crate::tigerbeetle::replica::cluster_of(&prepared.path),
    };
    if cluster.is_none() && trust.keys().is_some_and(|k| k.signing().is_some()) {
        return Err(crate::exit::coded(
            crate::exit::Code::Config,
            format!(
                "{} holds no TigerBeetle superblock bkp can read its cluster from, and this host signs its backups: a signer's snapshot must name its cluster, or every reader refuses it. Set [tigerbeetle] addresses and cluster_id, or check that data_file is the replica's data file",
                data_file.display()
            ),
        ));
    }
    Ok(cluster)
}

/// What a snapshot's manifest records of its source: the data file, how it
/// was kept consistent, its cluster ([`recorded_cluster`]; a signer's scope is
/// checked against it), the snapshot it shares chunks with
/// (information only: shared chunks are counted by reference, and that
/// snapshot may go while this one stays), and its rows (`count_rows`).
fn snapshot_source(
    ctx: &Ctx,
    tb: &TigerBeetlePlan,
    data_file: &std::path::Path,
    prepared: &tigerbeetle::Prepared,
    cluster: Option<u128>,
    base: Option<&Manifest>,
) -> crate::manifest::facts::Facts {
    let mut source = crate::manifest::facts::Facts::new();
    source.insert("data_file", json!(data_file.display().to_string()));
    source.insert("snapshot_mode", json!(prepared.mode));
    if let Some(c) = cluster {
        source.insert("cluster_id", json!(c.to_string()));
    }
    source.insert("integrity_checked", json!(prepared.integrity_checked));
    if let Some(why) = &prepared.torn_writes {
        source.insert("torn_writes", json!(why));
    }
    if let Some(b) = base {
        source.insert("chunks_shared_with", json!(b.id));
    }
    if tb.count_rows {
        record_rows(ctx, prepared, &mut source);
    }
    source
}

/// Counts the snapshot's rows into its manifest's `source` (`count_rows`),
/// on bkp's private copy through a replica started on it (never on the
/// original data file), so that `verify --drill` can compare a restore with
/// them; a count that fails is a warning: the snapshot is stored all the same.
fn record_rows(
    ctx: &Ctx,
    prepared: &tigerbeetle::Prepared,
    source: &mut crate::manifest::facts::Facts,
) {
    match count_rows(ctx, prepared) {
        Ok(stats) => {
            source.insert("accounts", json!(stats.accounts));
            source.insert("transfers", json!(stats.transfers));
            source.insert("newest_timestamp", json!(stats.until));
            ctx.ui.detail(&format!(
                "the snapshot holds {} and {}",
                crate::units::count(stats.accounts, "account"),
                crate::units::count(stats.transfers, "transfer")
            ));
        }
        Err(e) => ctx.ui.warn(&format!(
            "the snapshot is stored, but its rows could not be counted: {e:#}"
        )),
    }
}

fn count_rows(ctx: &Ctx, prepared: &tigerbeetle::Prepared) -> Result<SegmentStats> {
    if !prepared.is_copy() {
        anyhow::bail!(
            "tigerbeetle.count_rows needs snapshot_mode \"stop\" or \"reflink\": in \"offline\" mode bkp reads the data file in place and never starts a replica on it"
        );
    }
    let replica = super::restore::pitr::replica_spec(&ctx.plan, "counting a snapshot's rows")?;
    crate::tigerbeetle::replica::count_rows(&replica, &prepared.path)
}

/// Whether this snapshot is stored as chunks: `tigerbeetle.snapshot_format`,
/// by default chunked, except on a store with Object Lock, where every run
/// extends the retention of each chunk it shares (a request or two per chunk,
/// see [`Run::hold`]): there a snapshot is one archive unless chunks are asked
/// for.
fn chunked_format(plan: &crate::config::Plan, tb: &TigerBeetlePlan) -> Result<bool> {
    let locked = matches!(&plan.store, StorePlan::S3(s) if s.object_lock.is_some());
    Ok(match (tb.format, locked) {
        (Some(SnapshotFormat::Archive), _) | (None, true) => false,
        (Some(SnapshotFormat::Chunked), _) | (None, false) => true,
    })
}

/// The newest chunked snapshot whose chunks this one can name: same chunk
/// size, naming (key, and on a write-only host the host's own naming) and
/// compression algorithm. Read again from its own manifest: the catalog only
/// finds it.
fn chunk_base(
    store: &dyn crate::store::Store,
    trust: &crate::manifest::Trust,
    compression: crate::stages::compress::Compression,
    key: Option<&crate::crypto::MasterKey>,
) -> Result<Option<Manifest>> {
    let escrow = trust.keys().map_or(&[][..], |k| k.escrow());
    let (_, naming) = chunks::Naming::of(key, escrow, compression)?;
    let fits = |m: &Manifest| {
        m.operation == SNAPSHOT
            && m.chunks.as_ref().is_some_and(|c| {
                c.chunk_size == chunks::CHUNK_SIZE
                    && c.naming == naming
                    && m.compression.name() == compression.name()
            })
    };
    let (newest, _) = manifest::newest(store, trust, Some(Kind::Tigerbeetle), fits)?;
    let Some(m) = newest else { return Ok(None) };
    crate::manifest::catalog::current(store, trust, &m).map(Some)
}

/// The chunks of `base` this snapshot can name without storing them: those
/// its list names that one listing of the store finds with their recorded
/// size (a chunk lost since is stored again, not named forever). A base whose
/// list is damaged is not built on.
fn base_chunks(
    ctx: &Ctx,
    store: &dyn crate::store::Store,
    base: Option<Manifest>,
) -> Result<(Option<Manifest>, HashMap<String, u64>)> {
    let Some(b) = base else {
        return Ok((None, HashMap::new()));
    };
    let map = match chunks::load(store, &b) {
        Ok(Some(map)) => map,
        Ok(None) => return Ok((None, HashMap::new())),
        Err(e) if crate::exit::is_damage(&e) => {
            ctx.ui.warn(&format!(
                "{e:#}; this snapshot stores every chunk it needs instead of building on it"
            ));
            return Ok((None, HashMap::new()));
        }
        Err(e) => return Err(e),
    };
    let listed: HashMap<String, u64> = store
        .list(&format!("{}/chunks/", Kind::Tigerbeetle.as_str()))?
        .into_iter()
        .map(|o| (o.key, o.size))
        .collect();
    let known = map
        .chunks
        .iter()
        .flatten()
        .filter(|c| {
            listed.get(&crate::manifest::chunks::chunk_key(Kind::Tigerbeetle, &c.0)) == Some(&c.1)
        })
        .map(|c| (c.0.clone(), c.1))
        .collect();
    Ok((Some(b), known))
}

/// Counts as added by this snapshot the chunks it found in the store that no
/// listed backup names (a killed run uploaded them): a chunk's bytes go to the
/// ledger with the first backup whose manifest names it, whoever uploaded it,
/// so that the store account's balance stays the bytes the manifests retain.
/// The listed snapshots' chunk lists are read only when the run found such
/// chunks; a damaged list (`verify` names it) names none.
fn claim_unnamed(
    store: &dyn crate::store::Store,
    trust: &crate::manifest::Trust,
    map: &mut chunks::ChunkMap,
) -> Result<()> {
    let mut unnamed: HashMap<String, u64> = map
        .adopted
        .iter()
        .filter_map(|&i| map.chunks[i].as_ref())
        .map(|c| (c.0.clone(), c.1))
        .collect();
    if unnamed.is_empty() {
        return Ok(());
    }
    // Only the chunked backups name chunks.
    let (chunked, _) = manifest::gather(store, trust, Some(Kind::Tigerbeetle), |m| {
        m.chunks.is_some()
    })?;
    let lists = chunks::Lists::new(store);
    for m in &chunked {
        let named = match lists.get(m) {
            Ok(named) => named,
            Err(e) if crate::exit::is_damage(&e) => continue,
            Err(e) => return Err(e),
        };
        for c in named.iter().flat_map(|n| n.chunks.iter().flatten()) {
            unnamed.remove(&c.0);
        }
    }
    map.added += unnamed.len() as u64;
    map.added_bytes += unnamed.values().sum::<u64>();
    Ok(())
}

/// [`claim_unnamed`], then holds the chunks earlier snapshots stored as long
/// as this one (Object Lock, see [`Run::hold`]).
fn claim_and_hold(
    run: &Run,
    trust: &crate::manifest::Trust,
    map: &mut chunks::ChunkMap,
    known: &HashMap<String, u64>,
) -> Result<()> {
    claim_unnamed(run.store, trust, map)?;
    run.hold(&[], shared_chunks(map, known))
}

/// The keys of the chunks `map` names that earlier snapshots stored: those
/// the base named (`known`) and those the run found in the store.
fn shared_chunks(map: &chunks::ChunkMap, known: &HashMap<String, u64>) -> Vec<String> {
    let adopted: std::collections::HashSet<usize> = map.adopted.iter().copied().collect();
    let mut ids: Vec<&str> = map
        .chunks
        .iter()
        .enumerate()
        .filter_map(|(i, c)| c.as_ref().map(|c| (i, c)))
        .filter(|(i, c)| known.contains_key(&c.0) || adopted.contains(i))
        .map(|(_, c)| c.0.as_str())
        .collect();
    ids.sort_unstable();
    ids.dedup();
    ids.into_iter()
        .map(|id| crate::manifest::chunks::chunk_key(Kind::Tigerbeetle, id))
        .collect()
}

/// After this snapshot's manifest is written: the chunks it shares with
/// `base` are safe if `base` is still listed (a cleanup deleting `base` lists
/// the manifests again after unlisting it, and then sees this one). If `base`
/// went meanwhile, each shared chunk is looked for, as is every chunk the run
/// found in the store without its base naming it (an orphan a cleanup may
/// have been deleting); one that is gone is stored again from the copy still
/// at hand.
fn ensure_shared(
    ctx: &Ctx,
    sink: &chunks::Sink,
    base: Option<(&Manifest, &HashMap<String, u64>)>,
    map: &chunks::ChunkMap,
    path: &std::path::Path,
) -> Result<()> {
    use anyhow::Context as _;
    let store = sink.store;
    let mut look: Vec<usize> = map.adopted.clone();
    let base_gone = match base {
        Some((b, _)) => store.head(&b.key())?.is_none(),
        None => false,
    };
    if let (true, Some((_, shared))) = (base_gone, base) {
        look.extend(
            map.chunks
                .iter()
                .enumerate()
                .filter(|(_, c)| c.as_ref().is_some_and(|c| shared.contains_key(&c.0)))
                .map(|(i, _)| i),
        );
    }
    let mut restored = 0;
    for i in look {
        let Some(c) = &map.chunks[i] else { continue };
        let key = crate::manifest::chunks::chunk_key(Kind::Tigerbeetle, &c.0);
        if store.head(&key)?.is_none() {
            chunks::store_again(sink, map, i, path).with_context(|| {
                format!("chunk {key}, which this snapshot names, was deleted while it ran (a cleanup at the same time) and could not be stored again: run `bkp snapshot` again, and `bkp verify`")
            })?;
            restored += 1;
        }
    }
    if base_gone || restored > 0 {
        ctx.ui.warn(&format!(
            "a cleanup ran while this snapshot did; {} it names were gone and were stored again",
            crate::units::count(restored as u64, "chunk")
        ));
    }
    Ok(())
}
