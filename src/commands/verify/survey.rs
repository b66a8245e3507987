//! What `verify` takes of every manifest as the catalog hands it out
//! ([`catalog::fold`]): every backup in brief (chains, ids listed twice, the
//! ledger audit), and whole only those the run has a use for: the backups it
//! checks, the newest of each kind (a rolled-back store), the base backups
//! that start a WAL archive, and with the audit those with a chunk list. Of
//! the others' objects it keeps the size each records, under a hash of the
//! key: a history years long is never held whole.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::hash::{BuildHasher, RandomState};

use anyhow::Result;
use time::OffsetDateTime;

use crate::manifest::brief::Brief;
use crate::manifest::{self, catalog, Kind, Manifest, Trust, Unreadable};
use crate::store::Store;

/// What the run asks of the manifests.
pub struct Wants {
    /// The backups it checks: of this kind (or any), started at or after
    /// this time (or ever). `None`: none (a run given an `ID` reads that one
    /// from its key).
    pub select: Option<(Option<Kind>, Option<OffsetDateTime>)>,
    /// The backups with a chunk list, whole: the ledger audit reads their
    /// lists for the bytes they retain.
    pub chunked: bool,
}

/// See the module documentation. Each list is oldest first.
#[derive(Default)]
pub struct Survey {
    pub briefs: Vec<Brief>,
    /// Those [`Wants::select`] picks, as the catalog has them.
    pub selected: Vec<Manifest>,
    /// The newest backup of each kind (by start, then id).
    pub newest: BTreeMap<Kind, Manifest>,
    /// Base backups that start a WAL archive.
    pub bases: Vec<Manifest>,
    /// With [`Wants::chunked`], the backups with a chunk list.
    pub chunked: Vec<Manifest>,
    pub recorded: Recorded,
    pub unreadable: Vec<Unreadable>,
}

impl Survey {
    /// Reads every manifest of every kind, as the catalog checks them
    /// against every manifest key ([`catalog::Depth::Complete`]).
    pub fn read(store: &dyn Store, trust: &Trust, wants: &Wants) -> Result<Survey> {
        let mut s = Survey::default();
        for kind in Kind::ALL {
            let marks = s.marks();
            let bad = catalog::fold(store, trust, kind, catalog::Depth::Complete, &mut |m| {
                match m {
                    Some(m) => s.add(m, wants),
                    // The kind's read starts again: what was made of it goes.
                    None => s.forget(kind, marks),
                }
            })?;
            s.unreadable.extend(bad);
        }
        let order = |m: &Manifest| (m.started_at, m.id);
        s.briefs.sort_unstable_by_key(|b| (b.started_at, b.id));
        s.selected.sort_unstable_by_key(order);
        s.bases.sort_unstable_by_key(order);
        s.chunked.sort_unstable_by_key(order);
        Ok(s)
    }

    fn marks(&self) -> [usize; 4] {
        [
            self.briefs.len(),
            self.selected.len(),
            self.bases.len(),
            self.chunked.len(),
        ]
    }

    fn add(&mut self, m: Manifest, wants: &Wants) {
        self.briefs.push(Brief::of(&m));
        self.recorded.add(&m);
        let picked = wants.select.is_some_and(|(kind, since)| {
            kind.is_none_or(|k| m.kind == k) && since.is_none_or(|t| m.started_at >= t)
        });
        if picked {
            self.selected.push(m.clone());
        }
        if manifest::postgres::wal_start(&m).is_some() {
            self.bases.push(m.clone());
        }
        if wants.chunked && m.chunks.is_some() {
            self.chunked.push(m.clone());
        }
        let newer = self
            .newest
            .get(&m.kind)
            .is_none_or(|b| (m.started_at, m.id) > (b.started_at, b.id));
        if newer {
            self.newest.insert(m.kind, m);
        }
    }

    fn forget(&mut self, kind: Kind, [briefs, selected, bases, chunked]: [usize; 4]) {
        self.briefs.truncate(briefs);
        self.selected.truncate(selected);
        self.bases.truncate(bases);
        self.chunked.truncate(chunked);
        self.newest.remove(&kind);
        self.recorded.forget(kind);
    }

    /// The id of every backup read, sorted.
    pub fn ids(&self) -> Vec<u128> {
        let mut ids: Vec<u128> = self.briefs.iter().map(|b| b.id.as_u128()).collect();
        ids.sort_unstable();
        ids
    }
}

/// The size the manifests record for each object and chunk list, by a hash
/// of its key: 16 bytes an object where its key alone takes some 80. The
/// hash is keyed afresh each run (`RandomState`), so that no manifest can be
/// made to name a key that collides with another's.
#[derive(Default)]
pub struct Recorded {
    hasher: RandomState,
    sizes: BTreeMap<Kind, HashMap<u64, u64>>,
    /// Keys that manifests of a kind record with different sizes (kept at
    /// the larger): no bkp run writes a key twice.
    disagree: HashSet<(Kind, u64)>,
}

/// What the manifests record of an object's size.
#[derive(Debug, PartialEq, Eq)]
pub enum Size {
    Unknown,
    Is(u64),
    /// Two manifests record it with different sizes.
    Disagree,
}

impl Recorded {
    fn add(&mut self, m: &Manifest) {
        let sizes = self.sizes.entry(m.kind).or_default();
        let objects = m.objects.iter().map(|o| (&o.key, o.size));
        let list = m.chunks.iter().map(|c| (&c.list.key, c.list.size));
        for (key, size) in objects.chain(list) {
            let h = self.hasher.hash_one(key.as_str());
            match sizes.insert(h, size) {
                Some(was) if was != size => {
                    sizes.insert(h, was.max(size));
                    self.disagree.insert((m.kind, h));
                }
                _ => {}
            }
        }
    }

    fn forget(&mut self, kind: Kind) {
        self.sizes.remove(&kind);
        self.disagree.retain(|(k, _)| *k != kind);
    }

    /// The size recorded for `key` by the manifests that name it.
    pub fn size(&self, key: &str) -> Size {
        let h = self.hasher.hash_one(key);
        let mut found = None;
        for (kind, sizes) in &self.sizes {
            if self.disagree.contains(&(*kind, h)) {
                return Size::Disagree;
            }
            match (found, sizes.get(&h)) {
                (Some(f), Some(&s)) if f != s => return Size::Disagree,
                (_, Some(&s)) => found = Some(s),
                (_, None) => {}
            }
        }
        found.map_or(Size::Unknown, Size::Is)
    }

    /// The bytes of every object and chunk list recorded, each key once (at
    /// the larger size where manifests disagree).
    pub fn bytes(&self) -> u64 {
        let mut total = 0u64;
        let maps: Vec<&HashMap<u64, u64>> = self.sizes.values().collect();
        for (i, sizes) in maps.iter().enumerate() {
            for h in sizes.keys() {
                if !maps[..i].iter().any(|m| m.contains_key(h)) {
                    let most = maps[i..].iter().filter_map(|m| m.get(h)).max();
                    total = total.saturating_add(most.copied().unwrap_or(0));
                }
            }
        }
        total
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::id::BackupId;
    use crate::manifest::tests::sample;

    fn with_objects(kind: Kind, objects: &[(&str, u64)]) -> Manifest {
        let mut m = sample(kind, time::macros::datetime!(2026-11-20 06:00 UTC));
        m.objects = objects
            .iter()
            .map(|(key, size)| manifest::ObjectEntry {
                key: key.to_string(),
                size: *size,
                ..m.objects[0].clone()
            })
            .collect();
        m
    }

    #[test]
    fn every_backup_is_read_in_brief_and_whole_only_those_the_run_uses() {
        use crate::store::memory::MemoryStore;
        use time::Duration;
        let store = MemoryStore::default();
        let trust = Trust::none();
        let t0 = time::macros::datetime!(2026-11-20 06:00 UTC);
        let old_duck = sample(Kind::Duckdb, t0);
        let new_duck = sample(Kind::Duckdb, t0 + Duration::days(2));
        let mut chunked = sample(Kind::Tigerbeetle, t0 + Duration::days(1));
        chunked.files = vec![manifest::FileEntry {
            name: "0_0.tigerbeetle".into(),
            size: 4 << 20,
            sha256: "00".into(),
        }];
        chunked.chunks = Some(Box::new(manifest::chunks::Chunked {
            file: "0_0.tigerbeetle".into(),
            chunk_size: 4 << 20,
            naming: "blake3:zstd".into(),
            count: 1,
            stored: 1,
            stored_bytes: 5,
            added: 1,
            added_bytes: 5,
            list: manifest::chunks::ListRef {
                key: "tigerbeetle/chunks/list".into(),
                size: 33,
                sha256: "00".into(),
            },
        }));
        let mut base = sample(Kind::Postgres, t0 + Duration::hours(1));
        base.source.insert(
            "system_identifier",
            serde_json::json!("7000000000000000001"),
        );
        base.source
            .insert("wal_start", serde_json::json!("000000010000000000000002"));
        let dump = sample(Kind::Postgres, t0 + Duration::hours(2));
        for m in [&old_duck, &new_duck, &chunked, &base, &dump] {
            manifest::write(&store, m, None).unwrap();
        }
        let ids = |ms: &[Manifest]| ms.iter().map(|m| m.id).collect::<Vec<_>>();

        let wants = Wants {
            select: Some((Some(Kind::Duckdb), Some(t0 + Duration::days(1)))),
            chunked: true,
        };
        let s = Survey::read(&store, &trust, &wants).unwrap();
        assert!(
            s.unreadable.is_empty(),
            "{:?}",
            s.unreadable.iter().map(|u| &u.error).collect::<Vec<_>>()
        );
        let briefs: Vec<BackupId> = s.briefs.iter().map(|b| b.id).collect();
        assert_eq!(
            briefs,
            ids(&[
                old_duck.clone(),
                base.clone(),
                dump.clone(),
                chunked.clone(),
                new_duck.clone()
            ])
        );
        assert_eq!(ids(&s.selected), vec![new_duck.id]);
        assert_eq!(ids(&s.bases), vec![base.id]);
        assert_eq!(ids(&s.chunked), vec![chunked.id]);
        let newest: Vec<(Kind, BackupId)> = s.newest.iter().map(|(k, m)| (*k, m.id)).collect();
        let mut want = vec![
            (Kind::Duckdb, new_duck.id),
            (Kind::Postgres, dump.id),
            (Kind::Tigerbeetle, chunked.id),
        ];
        want.sort();
        assert_eq!(newest, want);
        assert_eq!(s.recorded.size("tigerbeetle/chunks/list"), Size::Is(33));
        assert_eq!(s.recorded.size(&base.objects[0].key), Size::Is(10));
        let mut all = s.ids();
        all.dedup();
        assert_eq!(all.len(), 5);

        // A run given an ID selects nothing; one without the audit keeps no
        // chunked backup whole.
        let wants = Wants {
            select: None,
            chunked: false,
        };
        let s = Survey::read(&store, &trust, &wants).unwrap();
        assert!(s.selected.is_empty() && s.chunked.is_empty());
        assert_eq!(s.briefs.len(), 5);
    }

    #[test]
    fn sizes_are_found_by_key_counted_once_and_disagreements_named() {
        let mut r = Recorded::default();
        r.add(&with_objects(Kind::Duckdb, &[("a", 10), ("b", 20)]));
        r.add(&with_objects(Kind::Duckdb, &[("a", 10), ("c", 5)]));
        r.add(&with_objects(Kind::Parquet, &[("d", 7), ("b", 20)]));
        assert_eq!(r.size("a"), Size::Is(10));
        assert_eq!(r.size("b"), Size::Is(20));
        assert_eq!(r.size("d"), Size::Is(7));
        assert_eq!(r.size("e"), Size::Unknown);
        // Each key once, whichever kinds name it.
        assert_eq!(r.bytes(), 10 + 20 + 5 + 7);

        r.add(&with_objects(Kind::Duckdb, &[("c", 6)]));
        r.add(&with_objects(Kind::Tigerbeetle, &[("d", 8)]));
        assert_eq!(r.size("c"), Size::Disagree);
        assert_eq!(r.size("d"), Size::Disagree);
        assert_eq!(r.size("a"), Size::Is(10));
        // At the larger size, once.
        assert_eq!(r.bytes(), 10 + 20 + 6 + 8);

        r.forget(Kind::Tigerbeetle);
        assert_eq!(r.size("d"), Size::Is(7));
        r.forget(Kind::Duckdb);
        assert_eq!(r.size("c"), Size::Unknown);
        assert_eq!(r.bytes(), 7 + 20);
    }
}
