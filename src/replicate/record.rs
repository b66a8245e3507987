//! What a replicate manifest records, and the pure decision of what a run copies.
//!
//! A replicate manifest (kind `parquet`, operation `replicate`, scope `full`)
//! lists the whole replicated set as of its run, so a restore needs that one
//! manifest and nothing else:
//!
//! - `files`: every file of the set (`name` = path relative to the source root,
//!   size, SHA-256), like every other kind;
//! - `objects`: the objects this run stored (one per new or changed file);
//! - `uses`: the keys of objects earlier runs stored that this set still names
//!   (unchanged files), so retention keeps them while this manifest is kept;
//! - `source`: the [`ReplicaSet`] fields below: `format`, `root` (the source),
//!   `previous` (the replicate run compared against; deliberately not `parent`,
//!   since every manifest stands alone), `set` (per file: size, modification
//!   time, ETag, SHA-256, and the object holding its bytes with that object's
//!   stored size, SHA-256, compression, key id and the run that stored it — so a
//!   verify can check every object without older manifests), `deleted` (files of
//!   the previous set gone from the source: recorded, not propagated; older
//!   manifests keep their objects until retention removes them), `skipped`
//!   (files not replicated and why), and `stats`.

use std::collections::{BTreeMap, HashMap};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use super::source::Entry;
use crate::id::BackupId;
use crate::manifest::{FileEntry, Manifest, ObjectEntry};
use crate::stages::compress::Compression;
use crate::store::Version;

pub const FORMAT: &str = "bkp.replicate/1";

/// One file of the replicated set and where its bytes live.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileRecord {
    pub path: String,
    pub size: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtime_ns: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub etag: Option<String>,
    /// SHA-256 of the file itself.
    pub sha256: String,
    /// The object holding the file's bytes.
    pub object: String,
    pub object_size: u64,
    pub object_sha256: String,
    pub compression: Compression,
    /// Id of the key the object is encrypted with; `None` when it is not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_id: Option<String>,
    /// The run that stored the object.
    pub stored_by: BackupId,
}

impl FileRecord {
    /// The facts of the version recorded, as [`Entry::version`] gives them.
    pub fn version(&self) -> Version<'_> {
        Version {
            size: self.size,
            modified: self.mtime_ns.map(i128::from),
            etag: self.etag.as_deref(),
        }
    }

    /// The object as the download pipeline checks it.
    pub fn object_entry(&self) -> ObjectEntry {
        ObjectEntry {
            key: self.object.clone(),
            size: self.object_size,
            sha256: self.object_sha256.clone(),
            content_bytes: self.size,
            content_sha256: self.sha256.clone(),
        }
    }

    pub fn file_entry(&self) -> FileEntry {
        FileEntry {
            name: self.path.clone(),
            size: self.size,
            sha256: self.sha256.clone(),
        }
    }
}

/// A file that was not replicated.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Skipped {
    pub path: String,
    pub reason: String,
    /// The last good copy, from an earlier run, still kept (named in `uses`) but
    /// not part of this run's set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_good: Option<FileRecord>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stats {
    /// Files whose bytes this run stored.
    pub copied_files: u64,
    /// Source bytes of those files.
    pub copied_bytes: u64,
    /// Of those, copies made inside the object store.
    pub server_side_copies: u64,
    /// Files whose modification time changed but whose bytes did not.
    pub touched_unchanged: u64,
}

/// The replicate-specific part of the manifest, stored in its `source` map.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplicaSet {
    pub format: String,
    pub root: String,
    pub previous: Option<BackupId>,
    pub set: Vec<FileRecord>,
    pub deleted: Vec<FileRecord>,
    pub skipped: Vec<Skipped>,
    pub stats: Stats,
}

impl ReplicaSet {
    pub fn into_source_map(self) -> Result<BTreeMap<String, serde_json::Value>> {
        match serde_json::to_value(self).context("failed to encode the replicated set")? {
            serde_json::Value::Object(m) => Ok(m.into_iter().collect()),
            _ => anyhow::bail!("internal: the replicated set did not encode as an object"),
        }
    }

    pub fn from_manifest(m: &Manifest) -> Result<ReplicaSet> {
        let v = serde_json::to_value(&m.source)
            .with_context(|| format!("manifest {}: its replicated set is malformed", m.key()))?;
        let set: ReplicaSet = serde_json::from_value(v)
            .with_context(|| format!("manifest {}: its replicated set is malformed", m.key()))?;
        if set.format != FORMAT {
            anyhow::bail!(
                "manifest {}: replicated set format {:?} is not {FORMAT:?}: upgrade bkp to read it",
                m.key(),
                set.format
            );
        }
        Ok(set)
    }
}

/// What a run must do, decided from the previous set and the source listing.
#[derive(Debug, Default)]
pub struct Diff {
    /// Files whose size and modification time (or ETag) match the previous record.
    pub unchanged: Vec<FileRecord>,
    /// Files to read, with the previous record of the same path if any.
    pub changed: Vec<(Entry, Option<FileRecord>)>,
    /// Previous files no longer at the source.
    pub deleted: Vec<FileRecord>,
}

/// Whether the listing shows the same version the record describes: on S3
/// the size and ETag, locally the size and the nanosecond modification time
/// ([`Version::same_as`]).
pub fn same_version(rec: &FileRecord, e: &Entry) -> bool {
    rec.version().same_as(&e.version())
}

pub fn diff(previous: Option<&ReplicaSet>, listing: &[Entry]) -> Diff {
    let mut prev: HashMap<&str, &FileRecord> = previous
        .map(|p| p.set.iter().map(|r| (r.path.as_str(), r)).collect())
        .unwrap_or_default();
    // A file the previous run skipped keeps its last good copy as its previous
    // record, so that copy stays named (and kept) until a good version is stored.
    let last_good: HashMap<&str, &FileRecord> = previous
        .map(|p| {
            p.skipped
                .iter()
                .filter_map(|s| s.last_good.as_ref().map(|r| (s.path.as_str(), r)))
                .collect()
        })
        .unwrap_or_default();
    let mut d = Diff::default();
    for e in listing {
        match prev.remove(e.path.as_str()) {
            Some(r) if same_version(r, e) => d.unchanged.push(r.clone()),
            other => {
                let other = other.or_else(|| last_good.get(e.path.as_str()).copied());
                d.changed.push((e.clone(), other.cloned()))
            }
        }
    }
    let mut gone: Vec<FileRecord> = prev.into_values().cloned().collect();
    gone.sort_by(|a, b| a.path.cmp(&b.path));
    d.deleted = gone;
    d
}

/// The files of the previous set below directories that could not be read
/// this time: taken out of `deleted` (they are not known to be gone) and
/// returned as skipped, each keeping its last good copy. Files the previous
/// run skipped there keep theirs too.
pub fn unlisted_under(
    previous: Option<&ReplicaSet>,
    deleted: &mut Vec<FileRecord>,
    dirs: &[String],
) -> Vec<Skipped> {
    let dir_of = |path: &str| {
        dirs.iter()
            .find(|d| {
                path.strip_prefix(d.as_str())
                    .is_some_and(|r| r.starts_with('/'))
            })
            .cloned()
    };
    let skipped = |dir: String, rec: FileRecord| Skipped {
        path: rec.path.clone(),
        reason: format!("its directory {dir} cannot be read"),
        last_good: Some(rec),
    };
    let mut out = Vec::new();
    deleted.retain(|r| match dir_of(&r.path) {
        Some(dir) => {
            out.push(skipped(dir, r.clone()));
            false
        }
        None => true,
    });
    for s in previous.map_or(&[][..], |p| &p.skipped[..]) {
        if let (Some(dir), Some(rec)) = (dir_of(&s.path), &s.last_good) {
            out.push(skipped(dir, rec.clone()));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_below_an_unreadable_directory_are_skipped_not_deleted() {
        let (kept, gone, old) = (
            rec("locked/a.parquet", 10, 1),
            rec("other.parquet", 10, 1),
            rec("locked/b.parquet", 5, 1),
        );
        let previous = ReplicaSet {
            format: FORMAT.into(),
            root: "/srv/cold".into(),
            previous: None,
            set: vec![kept.clone(), gone.clone()],
            deleted: vec![],
            skipped: vec![Skipped {
                path: "locked/b.parquet".into(),
                reason: "it cannot be read".into(),
                last_good: Some(old.clone()),
            }],
            stats: Stats::default(),
        };
        let mut d = diff(Some(&previous), &[entry("lockedx.parquet", 1, 1)]);
        assert_eq!(d.deleted.len(), 2);
        let dirs = vec!["locked".to_string()];
        let s = unlisted_under(Some(&previous), &mut d.deleted, &dirs);
        assert_eq!(d.deleted, vec![gone]);
        let kept_by: Vec<_> = s.iter().map(|s| s.last_good.clone().unwrap()).collect();
        assert_eq!(kept_by, vec![kept, old]);
        assert!(s[0].reason.contains("locked"), "{}", s[0].reason);
        // A sibling whose name merely starts like the directory is not below it.
        assert!(unlisted_under(None, &mut vec![rec("lockedx.parquet", 1, 1)], &dirs).is_empty());
    }

    #[test]
    fn a_skipped_file_keeps_its_last_good_copy_as_previous() {
        let good = rec("t/a.parquet", 10, 1);
        let previous = ReplicaSet {
            format: FORMAT.into(),
            root: "/srv/cold".into(),
            previous: None,
            set: vec![],
            deleted: vec![],
            skipped: vec![Skipped {
                path: "t/a.parquet".into(),
                reason: "not a valid Parquet file".into(),
                last_good: Some(good.clone()),
            }],
            stats: Stats::default(),
        };
        let d = diff(Some(&previous), &[entry("t/a.parquet", 7, 2)]);
        assert_eq!(d.changed.len(), 1);
        assert_eq!(d.changed[0].1.as_ref(), Some(&good));
        assert!(d.deleted.is_empty());
    }

    fn rec(path: &str, size: u64, mtime: i64) -> FileRecord {
        FileRecord {
            path: path.into(),
            size,
            mtime_ns: Some(mtime),
            etag: None,
            sha256: "s".into(),
            object: format!("parquet/x/{path}"),
            object_size: size,
            object_sha256: "o".into(),
            compression: Compression::None,
            key_id: None,
            stored_by: BackupId::from_bytes([1; 16]),
        }
    }

    fn entry(path: &str, size: u64, mtime: i64) -> Entry {
        Entry {
            path: path.into(),
            size,
            mtime_ns: Some(mtime),
            etag: None,
        }
    }

    #[test]
    fn diff_sorts_files_into_unchanged_changed_and_deleted() {
        let prev = ReplicaSet {
            format: FORMAT.into(),
            root: "file:///c".into(),
            previous: None,
            set: vec![
                rec("a", 1, 10),
                rec("b", 2, 20),
                rec("c", 3, 30),
                rec("d", 4, 40),
            ],
            deleted: vec![],
            skipped: vec![],
            stats: Stats::default(),
        };
        let listing = [
            entry("a", 1, 10),
            entry("b", 2, 21),
            entry("c", 4, 30),
            entry("e", 5, 50),
        ];
        let d = diff(Some(&prev), &listing);
        assert_eq!(d.unchanged, vec![rec("a", 1, 10)]);
        let changed: Vec<_> = d
            .changed
            .iter()
            .map(|(e, p)| (e.path.as_str(), p.is_some()))
            .collect();
        assert_eq!(changed, vec![("b", true), ("c", true), ("e", false)]);
        assert_eq!(d.deleted, vec![rec("d", 4, 40)]);
        // Without a previous run everything is new.
        assert_eq!(diff(None, &listing).changed.len(), 4);
        // On S3 the ETag decides, not the time.
        let mut r = rec("a", 1, 10);
        r.etag = Some("\"e1\"".into());
        let mut e = entry("a", 1, 99);
        e.etag = Some("\"e1\"".into());
        assert!(same_version(&r, &e));
        e.etag = Some("\"e2\"".into());
        assert!(!same_version(&r, &e));
    }

    #[test]
    fn the_set_round_trips_through_a_manifest_source_map() {
        let set = ReplicaSet {
            format: FORMAT.into(),
            root: "s3://b/p".into(),
            previous: Some(BackupId::from_bytes([2; 16])),
            set: vec![rec("x/y.parquet", 9, 1)],
            deleted: vec![rec("z.parquet", 1, 1)],
            skipped: vec![Skipped {
                path: "bad.parquet".into(),
                reason: "no PAR1 magic at the end".into(),
                last_good: None,
            }],
            stats: Stats {
                copied_files: 1,
                copied_bytes: 9,
                ..Default::default()
            },
        };
        let at = time::OffsetDateTime::UNIX_EPOCH;
        let m = Manifest {
            schema: crate::manifest::schema_string(),
            id: BackupId::new_v7(at),
            kind: crate::manifest::Kind::Parquet,
            scope: crate::manifest::Scope::Full,
            operation: "replicate".into(),
            status: crate::manifest::Status::Completed,
            started_at: at,
            finished_at: at,
            host: "h".into(),
            bkp_version: "0".into(),
            retention_days: 1,
            compression: Compression::None,
            encryption: None,
            objects: vec![],
            files: vec![],
            parent: None,
            uses: vec![],
            chunks: None,
            source: set.clone().into_source_map().unwrap().into(),
            store: None,
        };
        let back: Manifest = serde_json::from_slice(&serde_json::to_vec(&m).unwrap()).unwrap();
        assert_eq!(ReplicaSet::from_manifest(&back).unwrap(), set);
    }
}
