//! The manifest keys of a kind that a read listed, each with how it is
//! stored: the keys bkp writes (the kind's folder, an id, `.json`) by id in
//! a sorted vector, some 64 bytes a key where a map of the keys took some
//! 150; any other key in a map beside it.

use std::collections::BTreeMap;

use super::Stored;
use crate::id::BackupId;
use crate::manifest::{manifest_dir, manifest_key, Kind};
use crate::store::ObjectInfo;

pub(super) struct Listing {
    dir: String,
    kind: Kind,
    ids: Vec<(BackupId, Stored)>,
    odd: BTreeMap<String, Stored>,
}

impl Listing {
    /// The manifests (`.json`) of `kind` among `objects`.
    pub fn of(kind: Kind, objects: Vec<ObjectInfo>) -> Listing {
        let mut listing = Listing::new(kind);
        objects.into_iter().for_each(|o| listing.add(o));
        listing.finish()
    }

    /// An empty listing of `kind`'s manifests, to [`Listing::add`] to.
    pub fn new(kind: Kind) -> Listing {
        Listing {
            dir: manifest_dir(kind),
            kind,
            ids: Vec::new(),
            odd: BTreeMap::new(),
        }
    }

    /// Takes `o` where it is a manifest (`.json`), in any order.
    pub fn add(&mut self, o: ObjectInfo) {
        if !o.key.ends_with(".json") {
            return;
        }
        match id_of(self.kind, &self.dir, &o.key) {
            Some(id) => self.ids.push((id, Stored::of(&o))),
            None => {
                self.odd.insert(o.key.clone(), Stored::of(&o));
            }
        }
    }

    /// Once every object was added. A key listed twice with two records (no
    /// store does that) is held to neither: its entry is read again.
    pub fn finish(mut self) -> Listing {
        self.ids.sort_by_key(|(id, _)| *id);
        self.ids.dedup_by(|next, kept| {
            let same = next.0 == kept.0;
            if same && next.1 != kept.1 {
                kept.1 = Stored {
                    size: u64::MAX,
                    modified: None,
                    etag: None,
                };
            }
            same
        });
        self.ids.shrink_to_fit();
        self
    }

    pub fn get(&self, key: &str) -> Option<&Stored> {
        id_of(self.kind, &self.dir, key)
            .and_then(|id| self.at(id))
            .map(|at| &self.ids[at].1)
            .or_else(|| self.odd.get(key))
    }

    fn at(&self, id: BackupId) -> Option<usize> {
        self.ids.binary_search_by_key(&id, |(i, _)| *i).ok()
    }

    /// Takes what `late`, a listing of part of the same keys taken after
    /// this one, shows: its record of a key replaces this one's.
    pub fn merge(&mut self, late: Listing) {
        for (id, stored) in late.ids {
            match self.at(id) {
                Some(at) => self.ids[at].1 = stored,
                None => {
                    self.odd.insert(manifest_key(self.kind, id), stored);
                }
            }
        }
        self.odd.extend(late.odd);
    }

    /// Every key listed, in no order.
    pub fn keys(&self) -> impl Iterator<Item = String> + '_ {
        let ids = self.ids.iter().map(|(id, _)| manifest_key(self.kind, *id));
        ids.chain(self.odd.keys().cloned())
    }
}

/// The id `key` is the manifest key of, where it is one exactly as bkp
/// writes it (no other spelling of the id).
fn id_of(kind: Kind, dir: &str, key: &str) -> Option<BackupId> {
    let id: BackupId = key.strip_prefix(dir)?.strip_suffix(".json")?.parse().ok()?;
    (manifest_key(kind, id) == key).then_some(id)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(key: &str, size: u64) -> ObjectInfo {
        ObjectInfo {
            key: key.into(),
            size,
            modified: None,
            etag: Some(format!("\"{size}\"")),
        }
    }

    #[test]
    fn every_listed_manifest_key_is_found_with_its_own_record_and_no_other() {
        let at = time::macros::datetime!(2026-11-20 06:00 UTC);
        let a = BackupId::new_v7(at);
        let b = BackupId::new_v7(at + time::Duration::hours(1));
        let ka = manifest_key(Kind::Duckdb, a);
        let kb = manifest_key(Kind::Duckdb, b);
        let upper = ka
            .to_uppercase()
            .replace("MANIFESTS/DUCKDB/", "manifests/duckdb/");
        let upper = upper.replace(".JSON", ".json");
        let odd = "manifests/duckdb/not-an-id.json";
        let listing = Listing::of(
            Kind::Duckdb,
            vec![
                info(&kb, 2),
                info(&ka, 1),
                info(&upper, 3),
                info(odd, 4),
                info("manifests/duckdb/x.tmp", 5),
            ],
        );
        assert_eq!(listing.get(&ka).map(|s| s.size), Some(1));
        assert_eq!(listing.get(&kb).map(|s| s.size), Some(2));
        assert_eq!(listing.get(&upper).map(|s| s.size), Some(3));
        assert_eq!(listing.get(odd).map(|s| s.size), Some(4));
        assert!(listing.get("manifests/duckdb/x.tmp").is_none());
        let other = manifest_key(Kind::Duckdb, BackupId::new_v7(at));
        assert!(listing.get(&other).is_none());
        assert!(listing.get(&manifest_key(Kind::Parquet, a)).is_none());
        let mut keys: Vec<String> = listing.keys().collect();
        keys.sort();
        let mut want = vec![ka.clone(), kb.clone(), upper, odd.to_string()];
        want.sort();
        assert_eq!(keys, want);

        // A later listing of part of the keys: its records win, its new
        // keys are added, what it does not show stays.
        let c = BackupId::new_v7(at + time::Duration::hours(2));
        let kc = manifest_key(Kind::Duckdb, c);
        let mut listing = listing;
        listing.merge(Listing::of(
            Kind::Duckdb,
            vec![info(&kb, 20), info(&kc, 30)],
        ));
        assert_eq!(listing.get(&ka).map(|s| s.size), Some(1));
        assert_eq!(listing.get(&kb).map(|s| s.size), Some(20));
        assert_eq!(listing.get(&kc).map(|s| s.size), Some(30));
        assert_eq!(listing.keys().filter(|k| *k == kc).count(), 1);
    }

    #[test]
    fn a_key_listed_twice_with_two_records_is_confirmed_by_neither() {
        let at = time::macros::datetime!(2026-11-20 06:00 UTC);
        let key = manifest_key(Kind::Duckdb, BackupId::new_v7(at));
        let twice = Listing::of(Kind::Duckdb, vec![info(&key, 1), info(&key, 1)]);
        assert_eq!(twice.get(&key).map(|s| s.size), Some(1));
        assert_eq!(twice.keys().count(), 1);
        let two = Listing::of(Kind::Duckdb, vec![info(&key, 1), info(&key, 2)]);
        let stored = two.get(&key).unwrap();
        let as_listed = |size| Stored::of(&info(&key, size));
        assert!(!stored.is(&as_listed(1)) && !stored.is(&as_listed(2)));
        assert_eq!(two.keys().count(), 1);
    }
}
