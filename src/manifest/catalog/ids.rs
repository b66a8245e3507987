//! A set of backup ids built almost always in order (a base's ids, as it is
//! parsed in order of id): a sorted vector, with the few added out of order
//! and those removed since beside it. Ten years of manifests are 365,000 ids:
//! 6 MiB here, about twice that in a `BTreeSet`.

use std::collections::BTreeSet;
use std::iter::Peekable;

use crate::id::BackupId;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Ids {
    /// In order, each once.
    sorted: Vec<BackupId>,
    /// Not in `sorted`.
    added: BTreeSet<BackupId>,
    /// In `sorted`, and removed since.
    removed: BTreeSet<BackupId>,
}

impl Ids {
    pub fn contains(&self, id: &BackupId) -> bool {
        self.added.contains(id)
            || (self.sorted.binary_search(id).is_ok() && !self.removed.contains(id))
    }

    /// Adds `id`; whether it was not there.
    pub fn insert(&mut self, id: BackupId) -> bool {
        if self.contains(&id) {
            return false;
        }
        if !self.removed.remove(&id) {
            if self.sorted.last().is_none_or(|last| *last < id) {
                self.sorted.push(id);
            } else {
                self.added.insert(id);
            }
        }
        true
    }

    /// Removes `id`; whether it was there.
    pub fn remove(&mut self, id: &BackupId) -> bool {
        self.added.remove(id) || (self.sorted.binary_search(id).is_ok() && self.removed.insert(*id))
    }

    pub fn len(&self) -> usize {
        self.sorted.len() - self.removed.len() + self.added.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn clear(&mut self) {
        *self = Ids::default();
    }

    /// In order of id.
    pub fn iter(&self) -> impl Iterator<Item = &BackupId> + '_ {
        Merge {
            kept: self
                .sorted
                .iter()
                .filter(|id| !self.removed.contains(id))
                .peekable(),
            added: self.added.iter().peekable(),
        }
    }
}

impl Extend<BackupId> for Ids {
    fn extend<I: IntoIterator<Item = BackupId>>(&mut self, iter: I) {
        for id in iter {
            self.insert(id);
        }
    }
}

impl FromIterator<BackupId> for Ids {
    fn from_iter<I: IntoIterator<Item = BackupId>>(iter: I) -> Ids {
        let mut ids = Ids::default();
        ids.extend(iter);
        ids
    }
}

/// Two ordered runs of ids, as one.
struct Merge<'a, A: Iterator<Item = &'a BackupId>, B: Iterator<Item = &'a BackupId>> {
    kept: Peekable<A>,
    added: Peekable<B>,
}

impl<'a, A, B> Iterator for Merge<'a, A, B>
where
    A: Iterator<Item = &'a BackupId>,
    B: Iterator<Item = &'a BackupId>,
{
    type Item = &'a BackupId;

    fn next(&mut self) -> Option<&'a BackupId> {
        match (self.kept.peek(), self.added.peek()) {
            (Some(a), Some(b)) if b < a => self.added.next(),
            (Some(_), _) => self.kept.next(),
            (None, _) => self.added.next(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u8) -> BackupId {
        format!("019a0000-0000-7000-8000-0000000000{n:02x}")
            .parse()
            .unwrap()
    }

    #[test]
    fn ids_added_in_and_out_of_order_and_removed_read_as_a_set_does() {
        let mut ids = Ids::default();
        let mut set = BTreeSet::new();
        // In order, out of order, again, removed, removed twice, back again.
        let steps: [(bool, u8); 12] = [
            (true, 1),
            (true, 3),
            (true, 5),
            (true, 2),
            (true, 3),
            (false, 3),
            (false, 3),
            (false, 2),
            (true, 9),
            (true, 3),
            (false, 7),
            (true, 0),
        ];
        for (add, n) in steps {
            let got = if add {
                ids.insert(id(n))
            } else {
                ids.remove(&id(n))
            };
            let want = if add {
                set.insert(id(n))
            } else {
                set.remove(&id(n))
            };
            assert_eq!(got, want, "{add} {n}");
            assert_eq!(ids.len(), set.len());
            assert!(ids.iter().eq(set.iter()), "after {add} {n}");
            for m in 0..10 {
                assert_eq!(ids.contains(&id(m)), set.contains(&id(m)));
            }
        }
        ids.clear();
        assert!(ids.is_empty());
    }
}
