//! The PostgreSQL WAL archive in the store: one object per file PostgreSQL
//! hands to `archive_command` (WAL segments, timeline history files, backup
//! history files), and no manifest.
//!
//! Why no manifest: a busy server archives a segment every few seconds, and a
//! quiet one with `archive_timeout = 60` still 1,440 a day. A manifest per
//! segment would make every `list`, `status` and `cleanup` read hundreds of
//! thousands of documents. Instead each object's *key* proves itself:
//!
//! `wal/{system}/{name}.{tag}{suffix}`
//!
//! * `system`: the cluster's system identifier (decimal), from its
//!   `pg_control`: two clusters never share a directory, and a restored copy
//!   that starts archiving by mistake cannot fill its source's.
//! * `name`: the file name PostgreSQL gave it (`000000010000000A000000FF`,
//!   `00000002.history`, `…​.partial`, `…​.00000028.backup`).
//! * `tag`: [`seal::tag`] of [`message`]: the store's id (from its marker),
//!   the system, the name and the SHA-256 of the file's content, under the
//!   configured key (HMAC-SHA256) or this host's signing key (Ed25519): a
//!   genuine object copied from another store of the same key and system
//!   (a cloned cluster archiving with the production key) names the other
//!   store and is refused here. Tags written before they named the store
//!   (`bkp wal v1`, and any tag on a store whose marker has no id) leave the
//!   store out and are still read. Only a key holder, or a signer whose
//!   scope holds the system (`postgres_systems` of its `[[encryption.signer]]`),
//!   can name an object so
//!   that it verifies, so a hostile store can delete segments (a gap, which
//!   `verify` and `status` report) but not swap, alter or invent one; and the
//!   tag of a file is the same every time, which makes `archive_command`
//!   idempotent: a retried push finds its own object by name.
//! * `suffix`: the compression extension and `.enc`, as for every object.
//!
//! The object itself is the file compressed and encrypted by the usual
//! stream format; the reader checks every chunk, then the content's SHA-256
//! against the tag, before a byte reaches PostgreSQL.

use std::collections::BTreeMap;

use time::OffsetDateTime;

use crate::stages::compress::Compression;

use super::seal::{self, Trust};

pub mod archive;

/// Where the archive lives in the store.
pub const PREFIX: &str = "wal/";

/// WAL segment size when nothing records it (PostgreSQL's default).
pub const DEFAULT_SEGMENT_SIZE: u64 = 16 * 1024 * 1024;

/// Whether `bytes` is a WAL segment size PostgreSQL can have: a power of two
/// from 1 MiB to 1 GiB.
pub fn is_segment_size(bytes: u64) -> bool {
    bytes.is_power_of_two() && (1 << 20..=crate::limits::WAL_SEGMENT_MAX).contains(&bytes)
}

/// What a file PostgreSQL archives is, by its name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum FileKind {
    /// A WAL segment: `TTTTTTTTXXXXXXXXYYYYYYYY`.
    Segment,
    /// The last, partial segment of a timeline a standby left when promoted.
    Partial,
    /// A backup history file: `TTTTTTTTXXXXXXXXYYYYYYYY.OOOOOOOO.backup`.
    BackupHistory,
    /// A timeline history file: `TTTTTTTT.history`.
    History,
}

/// A file name PostgreSQL archives, parsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WalName {
    pub timeline: u32,
    /// `XXXXXXXXYYYYYYYY` as one number (log id, segment in log); 0 for history files.
    pub position: u64,
    pub kind: FileKind,
}

fn hex8(s: &str) -> Option<u32> {
    (s.len() == 8
        && s.bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_lowercase()))
    .then(|| u32::from_str_radix(s, 16).ok())
    .flatten()
}

/// Parses a file name PostgreSQL archives; `None` for anything else (which is
/// never stored: a path like `../x` cannot become a key).
pub fn parse_name(name: &str) -> Option<WalName> {
    if let Some(tli) = name.strip_suffix(".history") {
        return Some(WalName {
            timeline: hex8(tli)?,
            position: 0,
            kind: FileKind::History,
        });
    }
    let (segment, kind) = if let Some(s) = name.strip_suffix(".partial") {
        (s, FileKind::Partial)
    } else if let Some(s) = name.strip_suffix(".backup") {
        let (seg, offset) = s.split_once('.')?;
        hex8(offset)?;
        (seg, FileKind::BackupHistory)
    } else {
        (name, FileKind::Segment)
    };
    if segment.len() != 24 || !segment.is_ascii() {
        return None;
    }
    let timeline = hex8(&segment[..8])?;
    let log = hex8(&segment[8..16])?;
    let seg = hex8(&segment[16..])?;
    Some(WalName {
        timeline,
        position: (u64::from(log) << 32) | u64::from(seg),
        kind,
    })
}

/// The segment file name for timeline `timeline` at byte position `lsn`.
pub fn segment_name(timeline: u32, lsn: u64, segment_size: u64) -> String {
    let per_log = segments_per_log(segment_size);
    let segno = lsn / segment_size.max(1);
    format!(
        "{timeline:08X}{:08X}{:08X}",
        segno / per_log,
        segno % per_log
    )
}

/// `0x1_0000_0000 / segment_size`: how many segments one log id holds.
pub fn segments_per_log(segment_size: u64) -> u64 {
    (0x1_0000_0000u64 / segment_size.max(1)).max(1)
}

/// The segment after `position` (log id and segment packed as in [`WalName`]).
pub fn next_position(position: u64, segment_size: u64) -> u64 {
    let (log, seg) = (position >> 32, position & 0xFFFF_FFFF);
    if seg + 1 >= segments_per_log(segment_size) {
        (log + 1) << 32
    } else {
        (log << 32) | (seg + 1)
    }
}

/// The segment file name of timeline `timeline` at `position` (as in [`WalName`]).
pub fn name_at(timeline: u32, position: u64) -> String {
    format!(
        "{timeline:08X}{:08X}{:08X}",
        position >> 32,
        position & 0xFFFF_FFFF
    )
}

/// The segments missing between `after` and `before` (both segment names of
/// one timeline): the first and how many.
pub fn missing(after: &str, before: &str, segment_size: u64) -> Option<(String, u64)> {
    let (a, b) = (parse_name(after)?, parse_name(before)?);
    let first = next_position(a.position, segment_size);
    let per_log = segments_per_log(segment_size);
    let index = |p: u64| (p >> 32) * per_log + (p & 0xFFFF_FFFF);
    let count = index(b.position).checked_sub(index(first))?;
    Some((name_at(a.timeline, first), count))
}

/// The text the tag of file `name` of system `system` with content digest
/// `content_sha256` seals, in the archive of store `store` (its marker's id;
/// `None`: a store without one, and tags written before tags named it).
pub fn message(store: Option<&str>, system: u64, name: &str, content_sha256: &str) -> Vec<u8> {
    match store {
        Some(store) => {
            format!("bkp wal v2\n{store}\n{system}\n{name}\n{content_sha256}\n").into_bytes()
        }
        None => format!("bkp wal v1\n{system}\n{name}\n{content_sha256}\n").into_bytes(),
    }
}

/// `wal/{system}/`.
pub fn prefix(system: u64) -> String {
    format!("{PREFIX}{system}/")
}

/// `wal/{system}/{name}.` : every object stored for file `name`.
pub fn name_prefix(system: u64, name: &str) -> String {
    format!("{}{name}.", prefix(system))
}

/// The key of file `name` with `tag`, stored with `compression` and encrypted
/// when `encrypted`.
pub fn key(
    system: u64,
    name: &str,
    tag: &str,
    compression: Compression,
    encrypted: bool,
) -> String {
    let ext = compression.extension();
    format!(
        "{}{tag}{}{ext}{}",
        name_prefix(system, name),
        if ext.is_empty() { "" } else { "." },
        if encrypted { ".enc" } else { "" }
    )
}

/// One object of the archive, as its key describes it (not yet verified).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stored {
    pub key: String,
    pub name: String,
    pub wal: WalName,
    pub tag: String,
    pub compression: Compression,
    pub encrypted: bool,
    pub size: u64,
    pub modified: Option<OffsetDateTime>,
}

/// Parses a key under [`prefix`]`(system)`; `None` for anything that is not
/// one of the archive's names.
pub fn parse_key(system: u64, key: &str) -> Option<Stored> {
    let rest = key.strip_prefix(&prefix(system))?;
    let (rest, encrypted) = match rest.strip_suffix(".enc") {
        Some(r) => (r, true),
        None => (rest, false),
    };
    let (rest, compression) = if let Some(r) = rest.strip_suffix(".zst") {
        (
            r,
            Compression::Zstd {
                level: 3,
                threads: 0,
            },
        )
    } else if let Some(r) = rest.strip_suffix(".gz") {
        (r, Compression::Gzip { level: 6 })
    } else {
        (rest, Compression::None)
    };
    let (name, tag) = rest.rsplit_once('.')?;
    // An HMAC or SHA-256 (64 hex digits), a signature (128), or 16-byte
    // parts, the key's and each escrow's (up to 8 parts: 256).
    let parts = tag.len() % 32 == 0 && (64..=256).contains(&tag.len());
    if !parts || !tag.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    Some(Stored {
        key: key.to_string(),
        name: name.to_string(),
        wal: parse_name(name)?,
        tag: tag.to_string(),
        compression,
        encrypted,
        size: 0,
        modified: None,
    })
}

/// Whether the object `s` holds file `s.name` with content digest
/// `content_sha256`, written by a holder of the current key, a signer whose
/// scope holds `system`, or (before a rotation, as a sealed list records it)
/// a holder of an old key. A list that cannot be read counts as no list.
pub fn verifies(trust: &Trust, system: u64, s: &Stored, content_sha256: &str) -> bool {
    matches!(
        tagged(trust, system, s, content_sha256),
        Ok(seal::Tagged::Verifies)
    )
}

/// [`verifies`], saying why not: a signer tagged it out of its scope, or
/// only a rotated-out key did and no sealed list records it
/// ([`seal::Tagged::OldKey`]). An error only when the sealed lists, needed
/// for an old key's tag, cannot be read.
pub fn tagged(
    trust: &Trust,
    system: u64,
    s: &Stored,
    content_sha256: &str,
) -> anyhow::Result<seal::Tagged> {
    let claim = crate::crypto::Claim {
        kind: Some(crate::kinds::Kind::Postgres),
        postgres_system: Some(system),
        ..Default::default()
    };
    let check = |store| {
        seal::tag_check(
            trust.keys(),
            &message(store, system, &s.name, content_sha256),
            &s.tag,
            &claim,
        )
    };
    let here = trust.wal_store_id()?;
    let mut found = check(here.as_deref());
    // Tags from before they named the store, read as before.
    if found == seal::Tagged::Fails && here.is_some() {
        found = check(None);
    }
    if found == seal::Tagged::OldKey && trust.lists()?.has(&s.key, &s.tag) {
        return Ok(seal::Tagged::Verifies);
    }
    Ok(found)
}

/// One timeline's run of consecutive segments in the archive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Run {
    pub first: String,
    pub last: String,
    pub segments: u64,
}

/// The archive of one system as its listing shows it: per timeline, the runs
/// of consecutive segments (more than one run: gaps between them).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Summary {
    pub timelines: BTreeMap<u32, Vec<Run>>,
    /// Timelines with a history file.
    pub histories: Vec<u32>,
    pub objects: u64,
    pub bytes: u64,
    pub newest: Option<OffsetDateTime>,
}

impl Summary {
    /// The gaps: (timeline, last segment before, first segment after).
    pub fn gaps(&self) -> Vec<(u32, String, String)> {
        let mut out = Vec::new();
        for (tli, runs) in &self.timelines {
            for w in runs.windows(2) {
                out.push((*tli, w[0].last.clone(), w[1].first.clone()));
            }
        }
        out
    }
}

/// Summarizes the archive objects `stored` (one system's), with segments of
/// `segment_size` bytes. Only segments at or after `from` (a position) count,
/// so that WAL older than every base backup is not reported as a gap.
pub fn summarize(stored: &[Stored], segment_size: u64, from: Option<u64>) -> Summary {
    let mut s = Summary::default();
    let mut by_tli: BTreeMap<u32, std::collections::BTreeSet<u64>> = BTreeMap::new();
    for o in stored {
        s.objects += 1;
        s.bytes += o.size;
        s.newest = s.newest.max(o.modified);
        match o.wal.kind {
            FileKind::Segment => {
                if from.is_none_or(|f| o.wal.position >= f) {
                    by_tli
                        .entry(o.wal.timeline)
                        .or_default()
                        .insert(o.wal.position);
                }
            }
            FileKind::History => s.histories.push(o.wal.timeline),
            FileKind::Partial | FileKind::BackupHistory => {}
        }
    }
    let name = name_at;
    for (tli, positions) in by_tli {
        let mut runs: Vec<Run> = Vec::new();
        let mut prev: Option<u64> = None;
        for p in positions {
            match (prev, runs.last_mut()) {
                (Some(q), Some(run)) if next_position(q, segment_size) == p => {
                    run.last = name(tli, p);
                    run.segments += 1;
                }
                _ => runs.push(Run {
                    first: name(tli, p),
                    last: name(tli, p),
                    segments: 1,
                }),
            }
            prev = Some(p);
        }
        s.timelines.insert(tli, runs);
    }
    s.histories.sort_unstable();
    s.histories.dedup();
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_parse_and_nothing_else_does() {
        let w = parse_name("000000020000000A000000FF").unwrap();
        assert_eq!(
            (w.timeline, w.position, w.kind),
            (2, (0xA << 32) | 0xFF, FileKind::Segment)
        );
        assert_eq!(
            parse_name("00000003.history").unwrap().kind,
            FileKind::History
        );
        assert_eq!(
            parse_name("000000010000000000000002.00000028.backup")
                .unwrap()
                .kind,
            FileKind::BackupHistory
        );
        assert_eq!(
            parse_name("000000010000000000000002.partial").unwrap().kind,
            FileKind::Partial
        );
        for bad in [
            "",
            "../../etc/passwd",
            "00000001000000000000000",
            "0000000100000000000000020",
            "00000001000000000000000g",
            "000000010000000000000002 ",
            "0000000a0000000000000002",
            "x.history",
            "000000010000000000000002.backup",
            "000000010000000000000002/..",
        ] {
            assert!(parse_name(bad).is_none(), "{bad:?} parsed");
        }
    }

    #[test]
    fn segment_names_follow_the_segment_size() {
        let mb16 = 16 * 1024 * 1024;
        assert_eq!(
            segment_name(1, 0x1_0300_0028, mb16),
            "000000010000000100000003"
        );
        assert_eq!(next_position(0xFF, mb16), 1 << 32);
        assert_eq!(next_position(0xFE, mb16), 0xFF);
        // 1 GiB segments: four per log id.
        assert_eq!(next_position(3, 1 << 30), 1 << 32);
        assert_eq!(
            segment_name(1, 3 << 30, 1 << 30),
            "000000010000000000000003"
        );
    }

    fn stored(name: &str) -> Stored {
        let k = key(
            7,
            name,
            &"ab".repeat(32),
            Compression::Zstd {
                level: 3,
                threads: 0,
            },
            true,
        );
        let mut s = parse_key(7, &k).unwrap();
        s.size = 10;
        s
    }

    #[test]
    fn keys_round_trip_and_foreign_keys_are_not_archive_objects() {
        let s = stored("000000010000000000000002.00000028.backup");
        assert_eq!(s.name, "000000010000000000000002.00000028.backup");
        assert!(s.encrypted);
        assert_eq!(s.tag, "ab".repeat(32));
        assert!(parse_key(7, &s.key.replace("wal/7/", "wal/8/")).is_none());
        assert!(parse_key(7, "wal/7/000000010000000000000002.short.zst.enc").is_none());
        assert!(parse_key(7, "wal/7/junk").is_none());
    }

    #[test]
    fn gaps_are_found_per_timeline_and_across_log_ids() {
        let names = [
            "0000000100000000000000FE",
            "0000000100000000000000FF",
            "000000010000000100000000",
            "000000010000000100000002",
            "000000020000000100000002",
            "00000002.history",
        ];
        let all: Vec<Stored> = names.iter().map(|n| stored(n)).collect();
        let s = summarize(&all, DEFAULT_SEGMENT_SIZE, None);
        assert_eq!(s.objects, 6);
        assert_eq!(s.histories, vec![2]);
        assert_eq!(s.timelines[&1].len(), 2);
        assert_eq!(s.timelines[&1][0].segments, 3);
        assert_eq!(
            s.gaps(),
            vec![(
                1,
                "000000010000000100000000".to_string(),
                "000000010000000100000002".to_string()
            )]
        );
        // FF, 1/00 and 1/01 lie between: a log holds 256 segments of 16 MiB.
        assert_eq!(
            missing(
                "0000000100000000000000FE",
                "000000010000000100000002",
                DEFAULT_SEGMENT_SIZE
            ),
            Some(("0000000100000000000000FF".to_string(), 3))
        );
        // Adjacent segments across a log boundary: nothing is missing.
        assert_eq!(
            missing(
                "0000000100000000000000FF",
                "000000010000000100000000",
                DEFAULT_SEGMENT_SIZE
            ),
            Some(("000000010000000100000000".to_string(), 0))
        );
        // From the newest base backup's start on, there is no gap.
        let s = summarize(&all, DEFAULT_SEGMENT_SIZE, Some((1 << 32) | 2));
        assert!(s.gaps().is_empty(), "{s:?}");
    }

    #[test]
    fn a_tag_of_any_number_of_escrows_names_an_object_the_archive_lists() {
        use crate::crypto::{pubkey, Escrow, Keyring, MasterKey};
        let escrow = || {
            let (text, _) = pubkey::generate_identity().unwrap();
            let identity = MasterKey::identity(text.as_bytes(), "i").unwrap();
            Escrow::from_text(identity.escrow_text().unwrap().as_bytes(), "e").unwrap()
        };
        for n in 0..=7 {
            let ring = Keyring::new(MasterKey::from_bytes([3; 32]), vec![])
                .with_escrow((0..n).map(|_| escrow()).collect());
            let m = message(None, 7, "000000010000000000000002", "aa");
            let t = seal::tag(Some(&ring), &m).unwrap();
            let k = key(7, "000000010000000000000002", &t, Compression::None, true);
            let found = parse_key(7, &k).unwrap_or_else(|| panic!("{n} escrows: {k}"));
            assert_eq!(found.tag, t);
            let trust = Trust::new(Some(ring), None, vec![]);
            assert!(verifies(&trust, 7, &found, "aa"), "{n} escrows");
        }
    }

    #[test]
    fn tags_bind_system_name_and_content() {
        let m = message(None, 7, "000000010000000000000002", "aa");
        let t = seal::tag(None, &m).unwrap();
        let mut s = stored("000000010000000000000002");
        s.tag = t;
        let none = Trust::none();
        assert!(verifies(&none, 7, &s, "aa"));
        assert!(!verifies(&none, 7, &s, "ab"));
        assert!(!verifies(&none, 8, &s, "aa"));
        s.name = "000000010000000000000003".into();
        assert!(!verifies(&none, 7, &s, "aa"));
    }

    #[test]
    fn an_old_keys_tag_holds_only_where_a_sealed_list_records_the_object() {
        use crate::crypto::{Keyring, MasterKey};
        let old = || MasterKey::from_bytes([1; 32]).with_id("old".into());
        let new = || MasterKey::from_bytes([2; 32]).with_id("new".into());
        let name = "000000010000000000000002";
        let by_old = Keyring::new(old(), vec![]);
        let mut s = stored(name);
        s.tag = seal::tag(Some(&by_old), &message(None, 7, name, "aa")).unwrap();
        s.key = key(7, name, &s.tag, Compression::None, true);
        // Before the rotation, the key's own tag.
        let before = Trust::new(Some(Keyring::new(old(), vec![])), None, vec![]);
        assert!(verifies(&before, 7, &s, "aa"));
        // After it, the old key still decrypts, but its tag alone is not
        // believed: whoever holds it could have named the object since.
        let after = || Trust::new(Some(Keyring::new(new(), vec![old()])), None, vec![]);
        assert_eq!(tagged(&after(), 7, &s, "aa").unwrap(), seal::Tagged::OldKey);
        assert!(!verifies(&after(), 7, &s, "aa"));
        // A sealed list records it: believed, for that object and content only.
        let (k, t) = (s.key.clone(), s.tag.clone());
        let listed = after().with_lists(seal::Lists::new(move |_| {
            Ok(seal::Allowed::of(&[(k.as_str(), t.as_str())]))
        }));
        assert!(verifies(&listed, 7, &s, "aa"));
        assert!(!verifies(&listed, 7, &s, "ab"));
        let mut forged = stored("000000010000000000000003");
        forged.tag = seal::tag(Some(&by_old), &message(None, 7, &forged.name, "aa")).unwrap();
        forged.key = key(7, &forged.name, &forged.tag, Compression::None, true);
        assert!(!verifies(&listed, 7, &forged, "aa"));
        // The new key's own tag needs no list.
        let mut fresh = stored(name);
        fresh.tag = seal::tag(after().keys(), &message(None, 7, name, "bb")).unwrap();
        assert!(verifies(&after(), 7, &fresh, "bb"));
        // Lists that cannot be read: an error, not a verdict.
        let broken = after().with_lists(seal::Lists::new(|_| {
            Err(crate::exit::coded(
                crate::exit::Code::Transient,
                "store down",
            ))
        }));
        assert!(tagged(&broken, 7, &s, "aa").is_err());
        assert!(!verifies(&broken, 7, &s, "aa"));
    }
}
