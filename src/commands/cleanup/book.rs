//! What `cleanup` plans on: every backup of the store as retention sees it
//! ([`Candidate`]), and of each what the plan shows and what deleting it
//! touches, not the manifests. A store cleaned for the first time after
//! years holds hundreds of thousands of them; only the chunked ones are
//! held whole (which chunks the kept backups name decides what a deletion
//! frees).
//!
//! A deletion acts on the manifest as its own key holds it, read again just
//! before, and checked against the fingerprint of the version the plan was
//! made on ([`Book::same`]).

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::hash::{BuildHasher, Hasher, RandomState};
use std::io::{BufWriter, Seek, SeekFrom, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::id::BackupId;
use crate::manifest::shared::Shared;
use crate::manifest::usage::Tally;
use crate::manifest::{self, catalog, Kind, Manifest, Scope, Trust, Unreadable};
use crate::retention::{Candidate, Gather};
use crate::store::Store;

use crate::workdir::ROOM;

/// What the plan shows of one backup, and how its manifest is recognised.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct Row {
    pub kind: Kind,
    pub scope: Scope,
    pub operation: Shared,
    #[serde(with = "time::serde::rfc3339")]
    pub started_at: OffsetDateTime,
    /// [`Manifest::stored_bytes`].
    pub stored_bytes: u64,
    /// A hash of the whole manifest, keyed afresh each run (a real run's
    /// only).
    fingerprint: u64,
    /// The hashes of the keys it names (`needed_keys`), gathered for a dry
    /// run: it deletes nothing, and must not show what a real run's
    /// deletions remove as left over.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub keys: Vec<u64>,
}

/// The rows of every backup cleaned, each a line in an unnamed file of this
/// process's own (in the work directory), found by id: a store cleaned for
/// the first time after years has hundreds of thousands, and the plan needs
/// its memory for the candidates.
struct Rows {
    dir: PathBuf,
    file: BufWriter<File>,
    /// Bytes written.
    len: u64,
    /// Each row's id, and where its line starts and how long it is
    /// (sorted by id once every row is written: an id listed
    /// twice is refused before anything reads these).
    index: Vec<(BackupId, u64)>,
}

/// Bits of an index entry that tell a line's length (the rest its start).
const LEN_BITS: u32 = 24;

impl Rows {
    fn new(dir: &Path) -> Result<Rows> {
        let file = tempfile::tempfile_in(dir).with_context(|| {
            format!(
                "failed to make a file for the plan in {} ({ROOM}); nothing was deleted",
                dir.display()
            )
        })?;
        Ok(Rows {
            dir: dir.to_path_buf(),
            file: BufWriter::with_capacity(1 << 16, file),
            len: 0,
            index: Vec::new(),
        })
    }

    fn failed(&self) -> String {
        format!(
            "failed to write the plan to a file in {} ({ROOM}); nothing was deleted",
            self.dir.display()
        )
    }

    fn push(&mut self, id: BackupId, row: &Row) -> Result<()> {
        let line = serde_json::to_vec(row)?;
        let n = line.len() as u64;
        if n >> LEN_BITS != 0 || self.len >> (64 - LEN_BITS) != 0 {
            anyhow::bail!("backup {id} makes the plan's file too large");
        }
        self.file.write_all(&line).with_context(|| self.failed())?;
        self.index.push((id, self.len << LEN_BITS | n));
        self.len += n;
        Ok(())
    }

    /// How many rows were written: a mark to go back to.
    fn mark(&self) -> (usize, u64) {
        (self.index.len(), self.len)
    }

    /// Forgets the rows written since `mark`.
    fn truncate(&mut self, (n, len): (usize, u64)) -> Result<()> {
        self.index.truncate(n);
        let failed = self.failed();
        let f = &mut self.file;
        let back = f.flush().and_then(|()| f.get_ref().set_len(len));
        back.and_then(|()| f.get_mut().seek(SeekFrom::Start(len)))
            .context(failed)?;
        self.len = len;
        Ok(())
    }

    fn finish(&mut self) -> Result<()> {
        self.file.flush().with_context(|| self.failed())?;
        self.index.sort_unstable_by_key(|(id, _)| *id);
        self.index.shrink_to_fit();
        Ok(())
    }

    fn get(&self, id: &BackupId) -> Result<Option<Row>> {
        let Ok(at) = self.index.binary_search_by_key(id, |(i, _)| *i) else {
            return Ok(None);
        };
        let at = self.index[at].1;
        let (from, n) = (at >> LEN_BITS, at & ((1 << LEN_BITS) - 1));
        let mut line = vec![0; n as usize];
        let failed = || {
            format!(
                "failed to read the plan back from a file in {}",
                self.dir.display()
            )
        };
        self.file
            .get_ref()
            .read_exact_at(&mut line, from)
            .with_context(failed)?;
        Ok(Some(serde_json::from_slice(&line).with_context(failed)?))
    }
}

/// Every backup of the store, for a cleanup (see the module documentation).
pub(super) struct Book {
    /// The backups of the kind cleaned (of every kind, without `--kind`).
    pub candidates: Vec<Candidate<BackupId>>,
    /// Beside each of them, by id.
    rows: Rows,
    /// Every backup's id and kind, of every kind.
    pub ids: Vec<(BackupId, Kind)>,
    /// The chunked backups of every kind, whole.
    pub chunked: BTreeMap<(Kind, BackupId), Manifest>,
    pub unreadable: Vec<Unreadable>,
    hasher: RandomState,
}

impl Book {
    /// Reads the catalog of every kind completely (checked against every
    /// manifest key), holding each manifest only while it is looked at.
    /// `kind`: the kind cleaned (the others are kept, and named by id).
    /// `gone`: the backups whose deletion an earlier run left to finish,
    /// named by id only. `dry`: for a dry run, which reads nothing again
    /// and deletes nothing, the hashes of the keys each cleaned backup names
    /// are gathered, and no fingerprint is made. The rows go to a file in
    /// `dir`.
    pub fn read(
        store: &dyn Store,
        trust: &Trust,
        (kind, gone): (Option<Kind>, &BTreeSet<BackupId>),
        dry: bool,
        dir: &Path,
    ) -> Result<Book> {
        let mut gather = Gather::default();
        let mut b = Book {
            candidates: Vec::new(),
            rows: Rows::new(dir)?,
            ids: Vec::new(),
            chunked: BTreeMap::new(),
            unreadable: Vec::new(),
            hasher: RandomState::new(),
        };
        let mut failed = None;
        for k in Kind::ALL {
            let marks = (gather.marks(), b.rows.mark(), b.ids.len());
            let bad = catalog::fold(store, trust, k, catalog::Depth::Complete, &mut |m| {
                let Some(m) = m else {
                    // The kind's read starts again: what was made of it goes.
                    gather.truncate(marks.0);
                    if let Err(e) = b.rows.truncate(marks.1) {
                        failed.get_or_insert(e);
                    }
                    b.ids.truncate(marks.2);
                    b.chunked.retain(|(of, _), _| *of != k);
                    return;
                };
                b.ids.push((m.id, m.kind));
                if gone.contains(&m.id) {
                    return;
                }
                if kind.is_none_or(|want| want == m.kind) && failed.is_none() {
                    gather.add(&m);
                    let row = b.row(&m, dry);
                    if let Err(e) = b.rows.push(m.id, &row) {
                        failed.get_or_insert(e);
                    }
                }
                if m.chunks.is_some() {
                    b.chunked.insert((m.kind, m.id), m);
                }
            })?;
            if let Some(e) = failed.take() {
                return Err(e);
            }
            b.unreadable.extend(bad);
        }
        // Cleanup adds no manifest: what the reads kept of the catalogs for
        // that is not held through the plan.
        catalog::forget_cached();
        b.candidates = gather.finish();
        b.rows.finish()?;
        b.ids.shrink_to_fit();
        Ok(b)
    }

    fn row(&self, m: &Manifest, dry: bool) -> Row {
        let keys = match dry {
            true => m
                .needed_keys()
                .iter()
                .map(|k| self.hasher.hash_one(k.as_str()))
                .collect(),
            false => Vec::new(),
        };
        Row {
            kind: m.kind,
            scope: m.scope,
            operation: m.operation.clone(),
            started_at: m.started_at,
            stored_bytes: m.stored_bytes(),
            // Serializing every manifest is most of the read's work: only
            // for a run that reads them again.
            fingerprint: if dry { 0 } else { self.fingerprint(m) },
            keys,
        }
    }

    /// The row of backup `id` of the kind cleaned.
    pub fn get(&self, id: &BackupId) -> Result<Option<Row>> {
        self.rows.get(id)
    }

    /// Whether `fresh`, read again from its key, is the version of backup
    /// `row` the plan was made on.
    fn same(&self, row: &Row, fresh: &Manifest) -> bool {
        self.fingerprint(fresh) == row.fingerprint
    }

    /// How [`Row::keys`] hashes a key (`hash_one` of the key as a `&str`),
    /// for after the book is dropped.
    pub fn key_hasher(&self) -> RandomState {
        self.hasher.clone()
    }

    /// Backup `id` of the kind cleaned as its own key holds it now, checked
    /// against the version the plan was made on (see
    /// [`catalog::reread_as`]).
    pub fn reread(&self, store: &dyn Store, trust: &Trust, id: BackupId) -> Result<Manifest> {
        let Some(row) = self.get(&id)? else {
            anyhow::bail!("backup {id} is not among those cleanup planned on");
        };
        catalog::reread_as(store, trust, row.kind, id, |fresh| self.same(&row, fresh))
    }

    /// A hash of the whole of `m`, as it serializes (a dry run's book
    /// makes none: it reads nothing again).
    fn fingerprint(&self, m: &Manifest) -> u64 {
        struct Feed<'a>(&'a mut dyn Hasher);
        impl std::io::Write for Feed<'_> {
            fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
                self.0.write(b);
                Ok(b.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let mut h = self.hasher.build_hasher();
        // Cannot fail: every map of a manifest is keyed by strings, and the
        // feed takes every byte.
        let _ = serde_json::to_writer(Feed(&mut h), m);
        h.finish()
    }
}

/// The key of backup `id` of `row`'s kind.
pub(super) fn key_of(row: &Row, id: BackupId) -> String {
    manifest::manifest_key(row.kind, id)
}

/// What the store holds once the deletions are unlisted, read afresh (a
/// manifest written meanwhile counts), each manifest held only while it is
/// looked at but the chunked and PostgreSQL ones.
pub(super) struct Remaining {
    /// Every key the listed manifests name (`needed_keys`), but the chunks
    /// of the chunked ones.
    pub named: BTreeSet<String>,
    /// The chunked ones, whole: their chunk lists name their chunks.
    pub chunked: Vec<Manifest>,
    /// PostgreSQL's, whole: the archived WAL older than all of them goes.
    pub postgres: Vec<Manifest>,
    /// What the store holds, but the backups whose deletion this run
    /// finishes (`finished`, sorted: their manifests may still be listed).
    pub tally: Tally,
    pub unreadable: Vec<Unreadable>,
}

impl Remaining {
    pub fn read(
        store: &dyn Store,
        trust: &Trust,
        finished: &[(Kind, BackupId)],
    ) -> Result<Remaining> {
        let mut r = Remaining {
            named: BTreeSet::new(),
            chunked: Vec::new(),
            postgres: Vec::new(),
            tally: Tally::default(),
            unreadable: Vec::new(),
        };
        for k in Kind::ALL {
            // One kind's, joined once its read is done: a read that starts
            // again forgets what was made of it.
            let mut named = Vec::new();
            let mut chunked = Vec::new();
            let mut postgres = Vec::new();
            let mut tally = Tally::default();
            let bad = catalog::fold(store, trust, k, catalog::Depth::Complete, &mut |m| {
                let Some(m) = m else {
                    named.clear();
                    chunked.clear();
                    postgres.clear();
                    tally = Tally::default();
                    return;
                };
                named.extend(m.needed_keys());
                if finished.binary_search(&(m.kind, m.id)).is_err() {
                    tally.add(&m);
                }
                if m.kind == Kind::Postgres {
                    postgres.push(m.clone());
                }
                if m.chunks.is_some() {
                    chunked.push(m);
                }
            })?;
            r.named.extend(named);
            r.chunked.extend(chunked);
            r.postgres.extend(postgres);
            r.tally.join(tally);
            r.unreadable.extend(bad);
        }
        Ok(r)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(n: u64) -> Row {
        Row {
            kind: Kind::Duckdb,
            scope: Scope::Full,
            operation: "export".into(),
            started_at: OffsetDateTime::UNIX_EPOCH + time::Duration::nanoseconds(n as i64 * 1001),
            stored_bytes: n,
            fingerprint: n * 7,
            keys: (0..n % 3).collect(),
        }
    }

    /// Rows a read that started again wrote are forgotten; every other is
    /// found by its id as it was written, whatever the order.
    #[test]
    fn the_plans_rows_are_found_by_id_as_written() {
        let dir = tempfile::tempdir().unwrap();
        let mut rows = Rows::new(dir.path()).unwrap();
        let at = OffsetDateTime::UNIX_EPOCH + time::Duration::days(20_000);
        let ids: Vec<BackupId> = (0..6)
            .map(|i| BackupId::new_v7(at + time::Duration::minutes(i)))
            .collect();
        for i in [5, 0, 3] {
            rows.push(ids[i], &row(i as u64)).unwrap();
        }
        let mark = rows.mark();
        rows.push(ids[1], &row(100)).unwrap();
        rows.push(ids[2], &row(200)).unwrap();
        rows.truncate(mark).unwrap();
        rows.push(ids[1], &row(1)).unwrap();
        rows.finish().unwrap();
        for i in [0, 1, 3, 5] {
            let got = rows.get(&ids[i]).unwrap().unwrap();
            let want = row(i as u64);
            assert_eq!(
                (got.stored_bytes, got.fingerprint, got.keys, got.started_at),
                (
                    want.stored_bytes,
                    want.fingerprint,
                    want.keys,
                    want.started_at
                )
            );
        }
        assert!(rows.get(&ids[2]).unwrap().is_none());
        assert!(rows.get(&ids[4]).unwrap().is_none());
    }
}
