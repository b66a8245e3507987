//! The manifest keys of a kind that a read listed, each with how it is
//! stored: the keys bkp writes (the kind's folder, an id, `.json`) as rows
//! of id, size and time sorted by id (32 bytes a key, where a map of the
//! keys took some 150), their entity tags where the store gives them beside
//! the rows; any other key in a map.

use std::collections::BTreeMap;

use super::Stored;
use crate::id::BackupId;
use crate::manifest::{manifest_dir, manifest_key, Kind};
use crate::store::ObjectInfo;

/// A key's id, size and time (Unix milliseconds; [`NO_TIME`]: none).
type Row = (BackupId, u64, i64);
const NO_TIME: i64 = i64::MIN;

pub(super) struct Listing {
    dir: String,
    kind: Kind,
    rows: Vec<Row>,
    /// The entity tags of the rows that have one, by id.
    tags: Vec<(BackupId, Box<str>)>,
    odd: BTreeMap<String, Stored>,
}

/// What no listed object is: an entry is never confirmed by it.
fn unconfirmable() -> Stored {
    Stored {
        size: u64::MAX,
        modified: None,
        etag: None,
    }
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
            rows: Vec::new(),
            tags: Vec::new(),
            odd: BTreeMap::new(),
        }
    }

    /// Takes `o` where it is a manifest (`.json`), in any order.
    pub fn add(&mut self, o: ObjectInfo) {
        if !o.key.ends_with(".json") {
            return;
        }
        let Some(id) = id_of(self.kind, &self.dir, &o.key) else {
            self.odd.insert(o.key.clone(), Stored::of(&o));
            return;
        };
        let Stored {
            size,
            modified,
            etag,
        } = Stored::of(&o);
        self.rows.push((id, size, modified.unwrap_or(NO_TIME)));
        if let Some(tag) = etag {
            self.tags.push((id, tag.into_boxed_str()));
        }
    }

    /// Once every object was added. A key listed twice (no store does that)
    /// confirms no entry: it is read again.
    pub fn finish(mut self) -> Listing {
        self.rows.sort_unstable_by_key(|r| r.0);
        let mut twice: Vec<BackupId> = self
            .rows
            .windows(2)
            .filter(|w| w[0].0 == w[1].0)
            .map(|w| w[0].0)
            .collect();
        twice.dedup();
        if !twice.is_empty() {
            let once = |id: &BackupId| twice.binary_search(id).is_err();
            self.rows.retain(|r| once(&r.0));
            self.tags.retain(|t| once(&t.0));
            for id in &twice {
                self.odd
                    .insert(manifest_key(self.kind, *id), unconfirmable());
            }
        }
        self.tags.sort_unstable_by_key(|t| t.0);
        self.rows.shrink_to_fit();
        self.tags.shrink_to_fit();
        self
    }

    pub fn get(&self, key: &str) -> Option<Stored> {
        let row = id_of(self.kind, &self.dir, key).and_then(|id| self.at(id));
        match row {
            Some(at) => {
                let (id, size, ms) = self.rows[at];
                Some(Stored {
                    size,
                    modified: (ms != NO_TIME).then_some(ms),
                    etag: self.tag(id).map(|t| t.to_string()),
                })
            }
            None => self.odd.get(key).cloned(),
        }
    }

    fn at(&self, id: BackupId) -> Option<usize> {
        self.rows.binary_search_by_key(&id, |r| r.0).ok()
    }

    fn tag(&self, id: BackupId) -> Option<&str> {
        let at = self.tags.binary_search_by_key(&id, |t| t.0).ok()?;
        Some(&self.tags[at].1)
    }

    /// Takes what `late`, a listing of part of the same keys taken after
    /// this one, shows: its record of a key replaces this one's.
    pub fn merge(&mut self, late: Listing) {
        for &(id, size, ms) in &late.rows {
            let Some(at) = self.at(id) else {
                let key = manifest_key(self.kind, id);
                if let Some(stored) = late.get(&key) {
                    self.odd.insert(key, stored);
                }
                continue;
            };
            self.rows[at] = (id, size, ms);
            let tag = late.tag(id).map(Box::<str>::from);
            match (self.tags.binary_search_by_key(&id, |t| t.0), tag) {
                (Ok(i), Some(t)) => self.tags[i].1 = t,
                (Ok(i), None) => {
                    self.tags.remove(i);
                }
                (Err(i), Some(t)) => self.tags.insert(i, (id, t)),
                (Err(_), None) => {}
            }
        }
        self.odd.extend(late.odd);
    }

    /// Every key listed, in no order.
    pub fn keys(&self) -> impl Iterator<Item = String> + '_ {
        let ids = self.rows.iter().map(|r| manifest_key(self.kind, r.0));
        ids.chain(self.odd.keys().cloned())
    }

    /// Every key listed, in order, each once (the keys of the rows sort as
    /// their ids do; a key is a row's or an odd one, never both).
    pub fn sorted_keys(&self) -> impl Iterator<Item = String> + '_ {
        let mut ids = self
            .rows
            .iter()
            .map(|r| manifest_key(self.kind, r.0))
            .peekable();
        let mut odd = self.odd.keys().peekable();
        std::iter::from_fn(move || match (ids.peek(), odd.peek()) {
            (Some(id), Some(o)) if o.as_str() < id.as_str() => odd.next().cloned(),
            (Some(_), _) => ids.next(),
            (None, _) => odd.next().cloned(),
        })
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty() && self.odd.is_empty()
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
        let mut want = vec![ka.clone(), kb.clone(), upper.clone(), odd.to_string()];
        want.sort();
        assert_eq!(keys, want);
        // Odd keys sort before, between and after the rows' keys.
        let ks: Vec<String> = (0..3)
            .map(|i| {
                manifest_key(
                    Kind::Duckdb,
                    BackupId::new_v7(at + time::Duration::hours(i)),
                )
            })
            .collect();
        let odd_between = format!("{}x.json", &ks[1][..ks[1].len() - 6]);
        let odd_after = "manifests/duckdb/zz.json".to_string();
        let mixed = Listing::of(
            Kind::Duckdb,
            [&ks[2], &upper, &odd_after, &ks[0], &odd_between, &ks[1]]
                .into_iter()
                .map(|k| info(k, 1))
                .collect(),
        );
        let mut want: Vec<String> = mixed.keys().collect();
        want.sort();
        assert_eq!(want.len(), 6);
        assert_eq!(mixed.sorted_keys().collect::<Vec<_>>(), want);

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
        let b20 = listing.get(&kb).unwrap();
        assert!(b20.is(&Stored::of(&info(&kb, 20))));
        assert!(!b20.is(&Stored::of(&info(&kb, 2))));
    }

    #[test]
    fn a_key_listed_twice_confirms_no_entry() {
        let at = time::macros::datetime!(2026-11-20 06:00 UTC);
        let key = manifest_key(Kind::Duckdb, BackupId::new_v7(at));
        let other = manifest_key(Kind::Duckdb, BackupId::new_v7(at));
        let as_listed = |size| Stored::of(&info(&key, size));
        for sizes in [[1, 1], [1, 2]] {
            let objects = vec![info(&key, sizes[0]), info(&other, 7), info(&key, sizes[1])];
            let listing = Listing::of(Kind::Duckdb, objects);
            let stored = listing.get(&key).unwrap();
            assert!(!stored.is(&as_listed(1)) && !stored.is(&as_listed(2)));
            assert_eq!(listing.keys().filter(|k| *k == key).count(), 1);
            // The others are confirmed as listed, their tags with them.
            let seven = listing.get(&other).unwrap();
            assert!(seven.is(&Stored::of(&info(&other, 7))));
        }
    }
}
