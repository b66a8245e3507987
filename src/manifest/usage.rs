//! What a store holds, from its manifests alone (no bucket inventory): bytes
//! per kind and per storage class, for `bkp status` and its metrics.
//!
//! A backup's stored objects count with their recorded sizes. Chunks are
//! shared between snapshots: each is counted by the snapshot that uploaded
//! it (`added_bytes`), and a chunk uploaded by a snapshot since deleted but
//! still named by a kept one is not, so for chunked snapshots the figure is
//! a lower bound (never below the largest snapshot's own chunks), and says
//! so; so are backups that use objects of earlier ones (`uses`), which may
//! be deleted backups'. Objects count in the class the store writes now
//! (one written before `storage_class` changed may be in another). The WAL
//! archive has no manifests and is not counted.

use std::collections::BTreeMap;

use super::Manifest;

/// The default S3 storage class, where manifests, chunk lists and every
/// object of a store without `storage_class` live.
pub const STANDARD: &str = "STANDARD";

/// Bytes a store holds.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Usage {
    /// Per kind (its name).
    pub kinds: BTreeMap<&'static str, u64>,
    /// Per storage class.
    pub classes: BTreeMap<String, u64>,
    pub backups: u64,
    /// Whether chunks were counted, whose figure is a lower bound.
    pub at_least: bool,
}

impl Usage {
    pub fn total(&self) -> u64 {
        self.kinds.values().fold(0u64, |s, b| s.saturating_add(*b))
    }
}

/// What `manifests` hold, data objects in `data_class` (the store's
/// `storage_class`), chunk lists in `default_class`.
pub fn of<'a>(
    manifests: impl IntoIterator<Item = &'a Manifest>,
    data_class: &str,
    default_class: &str,
) -> Usage {
    let mut t = Tally::default();
    for m in manifests {
        t.add(m);
    }
    t.usage(data_class, default_class)
}

/// [`of`], counted one manifest at a time (a run reading years of them need
/// not hold them), and tallies of several kinds joined.
#[derive(Debug, Default, Clone)]
pub struct Tally {
    backups: u64,
    at_least: bool,
    /// Per kind: the bytes of its objects and chunk lists.
    kinds: BTreeMap<&'static str, u64>,
    /// The bytes of every data object.
    objects: u64,
    /// Per kind: chunk bytes uploaded by kept snapshots, and the most one
    /// snapshot names.
    chunks: BTreeMap<&'static str, (u64, u64)>,
    /// The bytes of every chunk list.
    lists: u64,
}

impl Tally {
    pub fn add(&mut self, m: &Manifest) {
        self.backups += 1;
        let kind = m.kind.as_str();
        let objects = m.objects.iter().fold(0u64, |s, o| s.saturating_add(o.size));
        add(&mut self.kinds, kind, objects);
        self.objects = self.objects.saturating_add(objects);
        self.at_least |= !m.uses.is_empty();
        if let Some(c) = &m.chunks {
            self.at_least = true;
            let e = self.chunks.entry(kind).or_default();
            e.0 = e.0.saturating_add(c.added_bytes);
            e.1 = e.1.max(c.stored_bytes);
            add(&mut self.kinds, kind, c.list.size);
            self.lists = self.lists.saturating_add(c.list.size);
        }
    }

    /// Adds what `other` counted.
    pub fn join(&mut self, other: Tally) {
        self.backups += other.backups;
        self.at_least |= other.at_least;
        for (k, b) in other.kinds {
            add(&mut self.kinds, k, b);
        }
        self.objects = self.objects.saturating_add(other.objects);
        for (k, (added, largest)) in other.chunks {
            let e = self.chunks.entry(k).or_default();
            e.0 = e.0.saturating_add(added);
            e.1 = e.1.max(largest);
        }
        self.lists = self.lists.saturating_add(other.lists);
    }

    /// What was counted, data objects in `data_class`, chunk lists in
    /// `default_class`.
    pub fn usage(self, data_class: &str, default_class: &str) -> Usage {
        let mut u = Usage {
            kinds: self.kinds,
            backups: self.backups,
            at_least: self.at_least,
            ..Usage::default()
        };
        if self.backups > 0 {
            add(&mut u.classes, data_class.to_string(), self.objects);
        }
        for (kind, (added, largest)) in self.chunks {
            let bytes = added.max(largest);
            add(&mut u.kinds, kind, bytes);
            add(&mut u.classes, data_class.to_string(), bytes);
        }
        if self.lists > 0 {
            add(&mut u.classes, default_class.to_string(), self.lists);
        }
        u
    }
}

/// Adds `bytes` to `map[key]`, saturating (sizes come from the store).
fn add<K: Ord>(map: &mut BTreeMap<K, u64>, key: K, bytes: u64) {
    let e = map.entry(key).or_default();
    *e = e.saturating_add(bytes);
}

/// One line: the total, then per kind and per class.
pub fn describe(u: &Usage) -> String {
    let size = |b: u64| humansize::format_size(b, humansize::BINARY);
    let kinds: Vec<String> = u
        .kinds
        .iter()
        .map(|(k, b)| format!("{k} {}", size(*b)))
        .collect();
    let classes: Vec<String> = u
        .classes
        .iter()
        .map(|(c, b)| format!("{c} {}", size(*b)))
        .collect();
    format!(
        "{}{} in {} ({}; {})",
        if u.at_least { "at least " } else { "" },
        size(u.total()),
        crate::units::count(u.backups, "backup"),
        if kinds.is_empty() {
            "nothing".to_string()
        } else {
            kinds.join(", ")
        },
        if classes.is_empty() {
            "no class".to_string()
        } else {
            classes.join(", ")
        },
    )
}

/// The JSON form.
pub fn json(u: &Usage) -> serde_json::Value {
    serde_json::json!({
        "bytes": u.total(),
        "at_least": u.at_least,
        "backups": u.backups,
        "kinds": u.kinds,
        "storage_classes": u.classes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::chunks::{Chunked, ListRef};
    use crate::manifest::tests::sample;
    use crate::manifest::Kind;

    fn chunked(added: u64, stored: u64) -> Manifest {
        let mut m = sample(Kind::Tigerbeetle, time::OffsetDateTime::now_utc());
        m.objects.clear();
        m.chunks = Some(Box::new(Chunked {
            file: "f".into(),
            chunk_size: 4,
            naming: "blake3:zstd".into(),
            count: 1,
            stored: 1,
            stored_bytes: stored,
            added: 1,
            added_bytes: added,
            list: ListRef {
                key: "l".into(),
                size: 7,
                sha256: "00".into(),
            },
        }));
        m
    }

    #[test]
    fn bytes_per_kind_and_class() {
        let now = time::OffsetDateTime::now_utc();
        let mut a = sample(Kind::Duckdb, now);
        a.objects[0].size = 1000;
        let b = sample(Kind::Duckdb, now);
        let u = of(&[a, b], "STANDARD_IA", STANDARD);
        assert_eq!(u.kinds["duckdb"], 1010);
        assert_eq!(u.classes["STANDARD_IA"], 1010);
        assert_eq!((u.backups, u.at_least), (2, false));
        // A backup that uses an earlier one's objects: a lower bound.
        let mut c = sample(Kind::Duckdb, now);
        c.uses = vec!["duckdb/x".into()];
        assert!(of(&[c], STANDARD, STANDARD).at_least);
        let none = of(&[], STANDARD, STANDARD);
        assert_eq!(none.total(), 0);
        assert!(describe(&none).contains("nothing"), "{}", describe(&none));
    }

    #[test]
    fn chunks_count_once_and_at_least_the_largest_snapshot() {
        // Two snapshots: the first uploaded 100, the second 10 more.
        let u = of(
            &[chunked(100, 100), chunked(10, 105)],
            "GLACIER_IR",
            STANDARD,
        );
        assert_eq!(u.kinds["tigerbeetle"], 110 + 2 * 7);
        assert_eq!(u.classes["GLACIER_IR"], 110);
        assert_eq!(u.classes[STANDARD], 14, "chunk lists stay standard");
        assert!(u.at_least && describe(&u).starts_with("at least"));
        // The first deleted: its chunks the second names are still stored.
        let u = of(&[chunked(10, 105)], STANDARD, STANDARD);
        assert_eq!(u.kinds["tigerbeetle"], 105 + 7);
        assert_eq!(u.classes[STANDARD], 112);
    }
}
