//! `bkp cat OBJECT`: break glass. Writes one stored object, verified and
//! decrypted, to standard output: the bytes the backup read (the tar stream of
//! a snapshot, a log segment, a Parquet file), or with `--compressed` the
//! decrypted bytes still compressed.
//!
//! The object is trusted only through the sealed manifest that lists it, read
//! as `bkp show` reads it (`--trust` excuses an unsealed one). It goes through
//! the restore reader ([`pipeline::download_as`]): the whole stored object is
//! read and compared with the manifest's size and SHA-256 before one byte is
//! decrypted, and each encrypted chunk is authenticated before it is written.
//! What can still fail after output began is the end (a missing final chunk,
//! the compression trailer, the content digest): then the exit code is 5 and
//! the message says that what was written is not to be trusted.

use std::io::{self, IsTerminal, Read, Write};

use anyhow::{Context, Result};

use super::{open_store, Ctx};
use crate::cli::CatArgs;
use crate::exit::{classify, coded, Code};
use crate::id::BackupId;
use crate::manifest::parquet as replicated;
use crate::manifest::{self, Kind, Manifest, ObjectEntry, Trust};
use crate::pipeline::{self, Decode};
use crate::replicate::record::ReplicaSet;
use crate::stages::compress::Compression;
use crate::store::Store;
use crate::workdir::WorkDir;

pub fn run(ctx: &Ctx, args: &CatArgs) -> Result<()> {
    if io::stdout().is_terminal() && !args.force {
        return Err(coded(
            Code::Config,
            "standard output is a terminal: redirect it (`bkp cat OBJECT > FILE`, or into a pipe), or pass --force to write binary data to the terminal",
        ));
    }
    let store = open_store(&ctx.plan)?;
    let trust = super::trust(&ctx.plan, args.trust.trust.clone())?;
    let (m, found) = owner(store.as_ref(), &trust, &args.object)?;
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
        store.as_ref(),
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
    match result {
        Err(e) if crate::ui::is_stdout_closed(&e) => Err(e),
        Err(e) if out.written > 0 => Err(coded(
            classify(&e).unwrap_or(Code::Integrity),
            format!(
                "{} bytes of {} were written to standard output, but the object did not verify to its end: that output is NOT to be trusted; discard it ({e:#})",
                out.written, entry.key
            ),
        )),
        Err(e) => Err(e).context(format!("nothing of {} was written", entry.key)),
        Ok(()) => {
            ctx.ui.detail(&format!(
                "{}: {} bytes written, verified",
                entry.key, out.written
            ));
            Ok(())
        }
    }
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
