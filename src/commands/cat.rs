//! `bkp cat`: break glass. `bkp cat ID [FILE]` writes one file of a backup,
//! verified and decrypted, to standard output; `bkp cat OBJECT` one stored
//! object: the bytes the backup read (the tar stream of a snapshot, a log
//! segment, a Parquet file), or with `--compressed` the decrypted bytes still
//! compressed.
//!
//! Everything is trusted only through the sealed manifest that names it, read
//! as `bkp show` reads it (`--trust` excuses an unsealed one).
//!
//! - An object goes through the restore reader ([`pipeline::download_as`]):
//!   the whole stored object is read and compared with the manifest's size and
//!   SHA-256 before one byte is decrypted, and each encrypted chunk is
//!   authenticated before it is written.
//! - A chunked snapshot's file goes through the restore's chunk reader
//!   ([`chunks::write_to`]): each chunk is authenticated and its id recomputed
//!   from its plaintext before a byte of it is written, and the whole file's
//!   SHA-256 is compared with the manifest's at the end. One chunk alone
//!   (`bkp cat tigerbeetle/chunks/…`) is checked the same way, whole, first.
//!
//! What can still fail after output began is the end (a damaged chunk further
//! on, a missing final chunk, the compression trailer, the content digest):
//! then the exit code is 5 and the message says that what was written is not
//! to be trusted.

use std::io::{self, IsTerminal, Read, Write};

use anyhow::{Context, Result};

use super::{open_store, Ctx};
use crate::chunks;
use crate::cli::CatArgs;
use crate::exit::{classify, coded, Code};
use crate::id::BackupId;
use crate::manifest::chunks::chunk_key;
use crate::manifest::parquet as replicated;
use crate::manifest::{self, FileEntry, Kind, Manifest, ObjectEntry, Trust};
use crate::pipeline::{self, Decode};
use crate::replicate::record::ReplicaSet;
use crate::stages::compress::Compression;
use crate::store::Store;
use crate::workdir::WorkDir;

pub fn run(ctx: &Ctx, args: &CatArgs) -> Result<()> {
    if io::stdout().is_terminal() && !args.force {
        return Err(coded(
            Code::Config,
            "standard output is a terminal: redirect it (`bkp cat ID FILE > FILE`, `bkp cat OBJECT > FILE`, or into a pipe), or pass --force to write binary data to the terminal",
        ));
    }
    let store = open_store(&ctx.plan)?;
    let trust = super::reading_trust(&ctx.plan, args.trust.trust.clone())?;
    // Object keys have a kind and a path; backup ids and `latest` have neither.
    if !args.object.contains('/') {
        return cat_file(ctx, store.as_ref(), &trust, args);
    }
    if args.file.is_some() {
        return Err(coded(
            Code::Config,
            format!(
                "{} is an object's key, and FILE goes with a backup id: `bkp cat ID FILE`, or `bkp cat OBJECT` alone",
                args.object
            ),
        ));
    }
    if let Some((kind, id)) = chunk_named(&args.object) {
        return cat_chunk(ctx, store.as_ref(), &trust, args, kind, id);
    }
    cat_object(ctx, store.as_ref(), &trust, args)
}

/// `bkp cat OBJECT`: one object a manifest lists.
fn cat_object(ctx: &Ctx, store: &dyn Store, trust: &Trust, args: &CatArgs) -> Result<()> {
    let (m, found) = owner(store, trust, &args.object)?;
    let entry = found.entry;
    ctx.ui.detail(&format!(
        "{} is an object of backup {} ({} {})",
        entry.key,
        m.id,
        m.kind.as_str(),
        m.operation
    ));
    let keyring = match found.encrypted {
        Some(true) if trust.keys().is_none() => {
            return Err(coded(
                Code::Config,
                format!(
                    "{} is encrypted but no key is configured: add the key to [encryption]",
                    entry.key
                ),
            ))
        }
        Some(true) => trust.keys(),
        Some(false) => None,
        None => pipeline::keys_for(&m, trust.keys())?,
    };
    let decode = if args.compressed {
        Decode::Compressed
    } else {
        Decode::Content(found.compression)
    };
    let spool = WorkDir::new(&ctx.plan.work_dir).scratch("spool")?;
    let mut out = Counting {
        inner: io::stdout().lock(),
        written: 0,
    };
    let result = pipeline::download_as(
        store,
        &entry,
        decode,
        keyring,
        spool.path(),
        ctx.progress(),
        |r: &mut dyn Read| {
            io::copy(r, &mut out)?;
            out.flush()?;
            Ok(())
        },
    );
    finish(ctx, &entry.key, None, out.written, result)
}

/// `bkp cat ID [FILE]`: a file of a backup, rebuilt from its chunks.
fn cat_file(ctx: &Ctx, store: &dyn Store, trust: &Trust, args: &CatArgs) -> Result<()> {
    let m = match args.object.as_str() {
        "latest" => newest_holding(store, trust, args.file.as_deref())?,
        which => manifest::find(store, trust, which, None)?,
    };
    // `latest` alone chose the file its chunks make up.
    let chunked = m.chunks.as_ref().map(|c| c.file.as_str());
    let name = args
        .file
        .as_deref()
        .or(chunked.filter(|_| args.object == "latest"));
    let want = file_of(&m, name)?;
    let map = match chunks::load(store, &m)? {
        Some(map) if map.file == want.name => map,
        _ => return Err(not_chunked(&m, &want.name)),
    };
    if args.compressed {
        return Err(coded(
            Code::Config,
            format!("--compressed writes one stored object, and {} of backup {} is stored as chunks, each compressed on its own: leave --compressed out", want.name, m.id),
        ));
    }
    let keyring = pipeline::keys_for(&m, trust.keys())?;
    let src = chunks::source(store, m.kind, m.compression, &map, keyring)?;
    if src.naming.is_none() {
        ctx.ui.warn(&format!(
            "the chunks of {} cannot be checked one by one with an escrow's identity (their ids are keyed by the lost key): the whole file's SHA-256 is checked at the end, and what was written before an error then is not to be trusted",
            want.name
        ));
    }
    // Which backup `latest` or a prefix chose, before anything is written.
    ctx.ui.info(&format!(
        "writing {} of backup {} ({} {} of host {}, started {}): {} chunks, each checked before it is written",
        want.name,
        m.id,
        m.kind.as_str(),
        m.operation,
        m.host,
        crate::units::rfc3339(m.started_at),
        map.chunks.len()
    ));
    let progress = ctx.progress();
    progress.begin("writing", Some(want.size));
    let mut out = Counting {
        inner: io::stdout(),
        written: 0,
    };
    let result = chunks::write_to(&src, &map, want, &mut out, &progress).map(drop);
    progress.end();
    finish(ctx, &want.name, Some(&want.sha256), out.written, result)
}

/// `bkp cat KIND/chunks/…/ID`: one chunk's plaintext, read and checked whole
/// (its id recomputed) before any of it is written.
fn cat_chunk(
    ctx: &Ctx,
    store: &dyn Store,
    trust: &Trust,
    args: &CatArgs,
    kind: Kind,
    id: &str,
) -> Result<()> {
    let key = &args.object;
    if args.compressed {
        return Err(coded(
            Code::Config,
            format!("--compressed writes a whole object a manifest lists, and {key} is a chunk: leave --compressed out"),
        ));
    }
    let (m, map, i) = chunk_owner(store, trust, kind, id)?;
    let size = m
        .files
        .iter()
        .find(|f| f.name == map.file)
        .map_or(0, |f| f.size);
    let c = map.chunks[i].as_ref().expect("a stored chunk");
    let keyring = pipeline::keys_for(&m, trust.keys())?;
    let src = chunks::source(store, m.kind, m.compression, &map, keyring)?;
    if src.naming.is_none() {
        return Err(coded(
            Code::Config,
            format!(
                "{key} can be checked only against its id, which an escrow's identity cannot compute (the ids are keyed by the lost key): cat the whole file instead, whose SHA-256 is checked"
            ),
        ));
    }
    let plain = src.read(c, map.len_of(i, size), true)?;
    ctx.ui.detail(&format!(
        "{key} is chunk {i} of {} in backup {} (bytes {} to {} of it)",
        map.file,
        m.id,
        i as u64 * map.chunk_size,
        i as u64 * map.chunk_size + plain.len() as u64
    ));
    let mut out = Counting {
        inner: io::stdout().lock(),
        written: 0,
    };
    let result = out
        .write_all(&plain)
        .and_then(|()| out.flush())
        .map_err(anyhow::Error::from);
    finish(ctx, key, None, out.written, result)
}

/// The end of a `cat`: `written` bytes of `what` reached standard output
/// before `result`; `sha256`, a whole file's, is printed once it verified
/// (for a check with `sha256sum`).
fn finish(
    ctx: &Ctx,
    what: &str,
    sha256: Option<&str>,
    written: u64,
    result: Result<()>,
) -> Result<()> {
    match result {
        Err(e) if crate::ui::is_stdout_closed(&e) => Err(e),
        Err(e) if written > 0 => Err(coded(
            classify(&e).unwrap_or(Code::Integrity),
            format!(
                "{written} bytes of {what} were written to standard output, but it did not verify to its end: that output is NOT to be trusted; discard it ({e:#})"
            ),
        )),
        Err(e) => Err(e).context(format!("nothing of {what} was written")),
        Ok(()) => {
            let sha = sha256.map(|s| format!(", sha256 {s}")).unwrap_or_default();
            // On standard error: what was written is on standard output.
            ctx.ui
                .info(&format!("{what}: {written} bytes written, verified{sha}"));
            Ok(())
        }
    }
}

/// `latest` for `bkp cat latest [FILE]`: the newest backup that holds a file
/// named `name` (any file without one) as chunks, which is what `cat` writes
/// by file; not the newest backup, which is mostly a log segment or an export
/// that holds none.
fn newest_holding(store: &dyn Store, trust: &Trust, name: Option<&str>) -> Result<Manifest> {
    let holds = |m: &Manifest| {
        m.chunks
            .as_ref()
            .is_some_and(|c| name.is_none_or(|n| c.file == n))
    };
    let (newest, _) = manifest::newest(store, trust, None, holds)?;
    newest.ok_or_else(|| {
        let what = name.map_or("a file".to_string(), |n| format!("a file named {n}"));
        coded(
            Code::NotFound,
            format!(
                "no backup in {} holds {what} as chunks: `bkp list` shows the backups, `bkp show ID` the files of one, and `bkp cat OBJECT` writes an archive's object",
                store.identity()
            ),
        )
    })
}

/// The file of `m` named `name`, or its only file.
fn file_of<'m>(m: &'m Manifest, name: Option<&str>) -> Result<&'m FileEntry> {
    let names = || {
        m.files
            .iter()
            .map(|f| f.name.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    };
    match (name, m.files.as_slice()) {
        (_, []) => Err(coded(
            Code::Config,
            format!(
                "backup {} records no files, only objects: `bkp show {}` lists them, and `bkp cat OBJECT` writes one",
                m.id, m.id
            ),
        )),
        (None, [only]) => Ok(only),
        (None, _) => Err(coded(
            Code::Config,
            format!(
                "backup {} has {} files ({}): name one, `bkp cat {} FILE`",
                m.id,
                m.files.len(),
                names(),
                m.id
            ),
        )),
        (Some(name), files) => files.iter().find(|f| f.name == name).ok_or_else(|| {
            coded(
                Code::Config,
                format!(
                    "backup {} has no file {name:?}; its files: {}",
                    m.id,
                    names()
                ),
            )
        }),
    }
}

/// Why file `name` of `m` is not written by `bkp cat ID FILE`: it is inside
/// the backup's objects.
fn not_chunked(m: &Manifest, name: &str) -> anyhow::Error {
    let keys: Vec<&str> = m.objects.iter().map(|o| o.key.as_str()).collect();
    coded(
        Code::Config,
        format!(
            "backup {} stores {name} inside its {} ({}), not as chunks: `bkp cat OBJECT` writes one (a snapshot's is a tar stream: `bkp cat OBJECT | tar x {name}`)",
            m.id,
            if keys.len() == 1 { "object" } else { "objects" },
            keys.join(", ")
        ),
    )
}

/// The kind and chunk id of a chunk's key (`{kind}/chunks/{fan}/{id}`).
fn chunk_named(key: &str) -> Option<(Kind, &str)> {
    let kind = Kind::ALL.into_iter().find(|k| {
        key.strip_prefix(k.as_str())
            .is_some_and(|r| r.starts_with("/chunks/"))
    })?;
    let id = key.rsplit('/').next()?;
    (!id.is_empty() && chunk_key(kind, id) == key).then_some((kind, id))
}

/// The newest proven backup of `kind` whose chunk list names chunk `id`: its
/// manifest, chunk map and the chunk's index in it.
fn chunk_owner(
    store: &dyn Store,
    trust: &Trust,
    kind: Kind,
    id: &str,
) -> Result<(Manifest, chunks::ChunkMap, usize)> {
    // Only the chunked backups hold chunks.
    let (chunked, _) = manifest::gather(store, trust, Some(kind), |m| m.chunks.is_some())?;
    let mut unreadable = None;
    for m in chunked.into_iter().rev() {
        let map = match chunks::load(store, &m) {
            Ok(Some(map)) => map,
            Ok(None) => continue,
            Err(e) => {
                unreadable.get_or_insert(e);
                continue;
            }
        };
        let at = map
            .chunks
            .iter()
            .position(|c| c.as_ref().is_some_and(|c| c.0 == id));
        if let Some(i) = at {
            return Ok((m, map, i));
        }
    }
    let key = chunk_key(kind, id);
    Err(match unreadable {
        Some(e) => e.context(format!(
            "no readable chunk list names chunk {key}, and one could not be read"
        )),
        None => coded(
            Code::NotFound,
            format!(
                "no backup in {} names chunk {key}: `bkp cat ID FILE` writes a snapshot's file from its chunks",
                store.identity()
            ),
        ),
    })
}

/// An object as a manifest records it.
struct Found {
    entry: ObjectEntry,
    compression: Compression,
    /// Whether the object is encrypted, when its record says so itself (a
    /// replicated file); `None`: as the backup is.
    encrypted: Option<bool>,
}

/// The record of object `key` in `m`: one of its objects or, for a
/// replication, a file of its set (whose object an earlier run may have stored).
fn listing(m: &Manifest, key: &str) -> Result<Option<Found>> {
    if let Some(c) = m.chunks.as_ref().filter(|c| c.list.key == key) {
        return Err(coded(
            Code::Config,
            format!(
                "{key} is the chunk list of backup {}, which names its chunks: `bkp cat {} {}` writes the file they make up, rebuilt and verified",
                m.id, m.id, c.file
            ),
        ));
    }
    if m.kind == Kind::Parquet && m.operation == replicated::OPERATION {
        let set = ReplicaSet::from_manifest(m)?;
        return Ok(set.set.iter().find(|r| r.object == key).map(|r| Found {
            entry: r.object_entry(),
            compression: r.compression,
            encrypted: Some(r.key_id.is_some()),
        }));
    }
    Ok(m.objects.iter().find(|o| o.key == key).map(|o| Found {
        entry: o.clone(),
        compression: m.compression,
        encrypted: None,
    }))
}

/// The object named `key` and the proven manifest that lists it. A key that
/// names a backup id is looked up in that backup first; otherwise (or if that
/// backup does not list it) every manifest of the key's kind is read, newest
/// first (the newest replication's set names every file it kept).
fn owner(store: &dyn Store, trust: &Trust, key: &str) -> Result<(Manifest, Found)> {
    let Some(kind) = Kind::ALL
        .into_iter()
        .find(|k| manifest::is_data_key(*k, key))
    else {
        return Err(not_named(store, key));
    };
    for id in ids_in(key) {
        match manifest::find(store, trust, &id.to_string(), Some(kind)) {
            Ok(m) => {
                if let Some(found) = listing(&m, key)? {
                    return Ok((m, found));
                }
            }
            Err(e) if classify(&e) == Some(Code::NotFound) => {}
            Err(e) => return Err(e),
        }
    }
    let (all, unreadable) = manifest::list(store, trust, Some(kind))?;
    for m in all.into_iter().rev() {
        if let Some(found) = listing(&m, key)? {
            return Ok((m, found));
        }
    }
    if !unreadable.is_empty() {
        let bad: Vec<_> = unreadable.iter().collect();
        return Err(manifest::unreadable_error(
            &format!("no readable manifest names {key}"),
            &bad,
        ));
    }
    Err(not_named(store, key))
}

fn not_named(store: &dyn Store, key: &str) -> anyhow::Error {
    coded(
        Code::NotFound,
        format!(
            "no backup in {} names object {key:?}: `bkp show ID` lists each backup's objects",
            store.identity()
        ),
    )
}

/// The backup ids spelled inside `key` (object keys end in `-{id}{suffix}`).
fn ids_in(key: &str) -> Vec<BackupId> {
    const LEN: usize = 36;
    let mut ids = Vec::new();
    for (i, _) in key.char_indices() {
        if let Some(id) = key.get(i..i + LEN).and_then(|s| s.parse().ok()) {
            if !ids.contains(&id) {
                ids.push(id);
            }
        }
    }
    ids
}

/// Counts what reached standard output, and turns a reader that went away
/// (`bkp cat KEY | head`) into a quiet end.
struct Counting<W> {
    inner: W,
    written: u64,
}

impl<W: Write> Write for Counting<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf).map_err(crate::ui::stdout_error)?;
        self.written += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush().map_err(crate::ui::stdout_error)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_found_where_object_keys_spell_them() {
        let id = "0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b";
        let key = format!("tigerbeetle/2026/11/23/tigerbeetle-snapshot-{id}.tar.zst");
        assert_eq!(ids_in(&key), vec![id.parse::<BackupId>().unwrap()]);
        assert!(ids_in("parquet/files/a/b.parquet").is_empty());
        assert!(ids_in("").is_empty());
        // Not cut in the middle of a multi-byte character.
        assert!(ids_in("tigerbeetle/é-0190a1b2").is_empty());
    }
}
