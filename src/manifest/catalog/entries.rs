//! A catalog's entries by manifest id, held in one vector sorted by id rather
//! than a tree: a base a write reads back whole is one allocation, not tree
//! nodes (which cost more than the entries, and left their pages behind as
//! free but resident heap).
//!
//! Lookups are binary searches. Single changes shift the vector, and are
//! made where it is small (a handed-out state keeps only what a delta
//! carries) or once per run; changes to a full state go in batches
//! ([`Entries::upsert_many`], a merge; [`Entries::remove_many`], `retain`).

use std::cmp::Ordering;
use std::collections::BTreeSet;

use super::Entry;
use crate::id::BackupId;

#[derive(Debug, Clone, Default)]
pub(super) struct Entries(Vec<Entry>);

impl Entries {
    /// `entries`, when they are in strictly ascending order of id, as bkp
    /// writes a catalog object's (else `None`: the object is not bkp's).
    pub(super) fn from_sorted(entries: Vec<Entry>) -> Option<Entries> {
        strictly_sorted(&entries).then_some(Entries(entries))
    }

    fn at(&self, id: &BackupId) -> Result<usize, usize> {
        self.0.binary_search_by(|e| e.manifest.id.cmp(id))
    }

    pub(super) fn len(&self) -> usize {
        self.0.len()
    }

    pub(super) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub(super) fn contains_key(&self, id: &BackupId) -> bool {
        self.at(id).is_ok()
    }

    pub(super) fn get(&self, id: &BackupId) -> Option<&Entry> {
        self.at(id).ok().map(|i| &self.0[i])
    }

    #[cfg(test)]
    pub(super) fn get_mut(&mut self, id: &BackupId) -> Option<&mut Entry> {
        self.at(id).ok().map(|i| &mut self.0[i])
    }

    /// Adds `e`, or replaces the entry of its id.
    pub(super) fn insert(&mut self, e: Entry) {
        match self.at(&e.manifest.id) {
            Ok(i) => self.0[i] = e,
            Err(i) => self.0.insert(i, e),
        }
    }

    pub(super) fn remove(&mut self, id: &BackupId) -> Option<Entry> {
        self.at(id).ok().map(|i| self.0.remove(i))
    }

    /// Removes every entry whose id is in `ids`, in one pass.
    pub(super) fn remove_many(&mut self, ids: &BTreeSet<BackupId>) {
        if !ids.is_empty() {
            self.0.retain(|e| !ids.contains(&e.manifest.id));
        }
    }

    /// Adds `new`, replacing the entries of their ids (of two in `new` with
    /// the same id, the later wins): merged into the held entries from the
    /// first new id on, so that the usual batch (newer than all but a few
    /// held entries) moves only those few.
    pub(super) fn upsert_many(&mut self, mut new: Vec<Entry>) {
        if !strictly_sorted(&new) {
            // Reversed, a stable sort puts the later of two equal ids first,
            // and `dedup` keeps the first.
            new.reverse();
            new.sort_by_key(|e| e.manifest.id);
            new.dedup_by_key(|e| e.manifest.id);
        }
        let Some(first) = new.first().map(|e| e.manifest.id) else {
            return;
        };
        let at = self.0.partition_point(|e| e.manifest.id < first);
        let tail = self.0.split_off(at);
        self.0.reserve(tail.len() + new.len());
        let (mut held, mut new) = (tail.into_iter().peekable(), new.into_iter().peekable());
        loop {
            let next = match (held.peek(), new.peek()) {
                (Some(h), Some(n)) => match h.manifest.id.cmp(&n.manifest.id) {
                    Ordering::Less => held.next(),
                    Ordering::Equal => {
                        held.next();
                        new.next()
                    }
                    Ordering::Greater => new.next(),
                },
                (Some(_), None) => held.next(),
                (None, _) => new.next(),
            };
            match next {
                Some(e) => self.0.push(e),
                None => break,
            }
        }
    }

    pub(super) fn retain(&mut self, mut keep: impl FnMut(&BackupId, &Entry) -> bool) {
        self.0.retain(|e| keep(&e.manifest.id, e));
    }

    pub(super) fn values(&self) -> impl Iterator<Item = &Entry> {
        self.0.iter()
    }

    pub(super) fn keys(&self) -> impl Iterator<Item = &BackupId> {
        self.0.iter().map(|e| &e.manifest.id)
    }

    pub(super) fn into_vec(self) -> Vec<Entry> {
        self.0
    }
}

/// Whether `entries` are in strictly ascending order of id.
pub(super) fn strictly_sorted(entries: &[Entry]) -> bool {
    entries.is_sorted_by(|a, b| a.manifest.id < b.manifest.id)
}

impl std::ops::Index<&BackupId> for Entries {
    type Output = Entry;

    fn index(&self, id: &BackupId) -> &Entry {
        match self.at(id) {
            Ok(i) => &self.0[i],
            Err(_) => panic!("no catalog entry for {id}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::tests::sample;
    use time::OffsetDateTime;

    fn entry(id: BackupId, host: &str) -> Entry {
        let mut m = sample(
            crate::manifest::Kind::Tigerbeetle,
            OffsetDateTime::now_utc(),
        );
        m.id = id;
        m.host = host.into();
        Entry::new(m, None, None)
    }

    fn ids(e: &Entries) -> Vec<BackupId> {
        e.keys().copied().collect()
    }

    #[test]
    fn batches_keep_the_entries_sorted_and_the_latest_version_of_each() {
        let mut id: Vec<BackupId> = (0..6)
            .map(|_| BackupId::new_v7(OffsetDateTime::now_utc()))
            .collect();
        id.sort();
        // Out of order or twice: not a catalog bkp wrote.
        assert!(Entries::from_sorted(vec![entry(id[3], "a"), entry(id[1], "a")]).is_none());
        assert!(Entries::from_sorted(vec![entry(id[1], "a"), entry(id[1], "a")]).is_none());
        let mut e = Entries::from_sorted(vec![entry(id[1], "a"), entry(id[3], "a")]).unwrap();
        // Past the newest, then merged in; of two versions the later wins.
        e.upsert_many(vec![entry(id[5], "a"), entry(id[4], "a")]);
        e.upsert_many(vec![
            entry(id[3], "b"),
            entry(id[0], "a"),
            entry(id[3], "c"),
        ]);
        assert_eq!(ids(&e), vec![id[0], id[1], id[3], id[4], id[5]]);
        assert_eq!(e[&id[3]].manifest.host, "c");
        e.upsert_many(vec![entry(id[4], "d"), entry(id[5], "d")]);
        assert_eq!(ids(&e), vec![id[0], id[1], id[3], id[4], id[5]]);
        assert_eq!(e[&id[4]].manifest.host, "d");
        e.insert(entry(id[2], "a"));
        e.remove_many(&[id[0], id[4]].into_iter().collect());
        assert_eq!(e.remove(&id[5]).map(|x| x.manifest.id), Some(id[5]));
        assert_eq!(ids(&e), vec![id[1], id[2], id[3]]);
        assert!(e.contains_key(&id[2]) && !e.contains_key(&id[4]));
    }
}
