//! The chunks of a chunked backup: a large file stored as fixed-size,
//! content-addressed chunks (see `chunks.rs` for how they are written and read).
//!
//! A manifest records a summary ([`Chunked`]) and the key and digest of its
//! chunk list ([`ChunkList`], an object of its own), which names the file's
//! chunks in order; a chunk that is all zeros is stored as nothing. Chunks are shared: a later snapshot names the
//! chunks an earlier one stored, and an object is deleted only when no kept
//! manifest names it (`cleanup`'s reference counting). Keys:
//! `{kind}/chunks/{first two hex digits}/{id}`.

use serde::{Deserialize, Serialize};

use super::Kind;

/// What a manifest says of its chunked file. Small: the list of chunks is an
/// object of its own (see [`ChunkList`]), so that catalogs of a year of
/// snapshots stay small.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Chunked {
    /// The file the chunks make up: one of the manifest's `files`.
    pub file: String,
    /// Bytes of plaintext per chunk (the last one may be shorter).
    pub chunk_size: u64,
    /// How chunk ids were computed, per compression algorithm (so that a
    /// chunk stored one way is never named by a backup that reads it another
    /// way): `blake3:{compression}:{key id}` (BLAKE3 keyed with the key's
    /// [chunk id key](crate::crypto::MasterKey::chunk_id_key)),
    /// `blake3x:{compression}:{writer}:{key id}` (keyed by an X25519 exchange
    /// between the writer's naming key, 64 hex digits, and the recipient: see
    /// [`new_chunk_naming`](crate::crypto::MasterKey::new_chunk_naming)), or
    /// `blake3:{compression}` (an unencrypted backup).
    pub naming: String,
    /// Chunks of the file, zeros included: the entries of the list.
    pub count: u64,
    /// Distinct chunks stored and their bytes: what a restore reads.
    pub stored: u64,
    pub stored_bytes: u64,
    /// Chunks this backup uploaded (the others were in the store already)
    /// and their bytes.
    pub added: u64,
    pub added_bytes: u64,
    /// The chunk list: zstd-compressed JSON, not encrypted (it holds keyed
    /// ids and sizes only, which the store's listing shows anyway), checked
    /// against this size and SHA-256 when read.
    pub list: ListRef,
}

/// Where a chunk list is stored, and its digest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListRef {
    pub key: String,
    pub size: u64,
    pub sha256: String,
}

/// The stored chunk list of one backup.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunkList {
    pub schema: String,
    /// The backup it belongs to: a list copied under another backup's name
    /// is refused.
    pub backup: crate::id::BackupId,
    /// One entry per chunk of the file, in order: `null` for a chunk of
    /// zeros, else `[id, stored bytes]`.
    pub chunks: Vec<Option<Chunk>>,
}

pub const LIST_SCHEMA: &str = "bkp.chunks/1";

/// How a chunk list's key ends. Lists stay in the bucket's default storage
/// class (see `store.storage_class`): a restore reads its list first, to
/// know which chunks it needs.
pub const LIST_SUFFIX: &str = ".chunks.json.zst";

/// A chunked file as the code works with it: the manifest's facts and the
/// list, read and checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChunkMap {
    pub file: String,
    pub chunk_size: u64,
    pub naming: String,
    pub added: u64,
    pub added_bytes: u64,
    pub chunks: Vec<Option<Chunk>>,
    /// Chunks a run found in the store and named without storing them (and
    /// not named by the snapshot it built on): looked for again once its
    /// manifest is written. Empty for a map read back from the store.
    pub adopted: Vec<usize>,
}

/// One stored chunk: its id (64 lowercase hex digits) and stored size.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Chunk(pub String, pub u64);

/// The smallest and largest chunk sizes bkp writes or reads.
pub const MIN_CHUNK: u64 = 64 << 10;
pub const MAX_CHUNK: u64 = 64 << 20;

/// The most bytes a chunk of `len` plaintext bytes can take stored: the
/// compressors' worst case on incompressible data and the encryption's
/// header and tags, with room to spare. A larger object is no chunk of bkp's.
pub fn max_stored(len: u64) -> u64 {
    len + len / 64 + (64 << 10)
}

/// The naming of chunks keyed with the key `key_id`.
pub fn keyed_naming(compression: &str, key_id: &str) -> String {
    format!("blake3:{compression}:{key_id}")
}

/// The naming of chunks keyed by an exchange between the writer's naming
/// key `writer` and the X25519 key `key_id`.
pub fn exchange_naming(compression: &str, writer: &[u8; 32], key_id: &str) -> String {
    format!("blake3x:{compression}:{}:{key_id}", hex::encode(writer))
}

/// `naming` with the escrows its chunks are also wrapped to (ids sorted,
/// see `chunks::Naming`): `{naming};escrow={id},{id}`; `naming` alone
/// without escrows.
pub fn with_escrow(naming: String, escrow: &[&str]) -> String {
    if escrow.is_empty() {
        return naming;
    }
    format!("{naming};escrow={}", escrow.join(","))
}

/// The naming of the chunks of an unencrypted backup.
pub fn plain_naming(compression: &str) -> String {
    format!("blake3:{compression}")
}

/// What keys a naming's chunk ids (see [`Chunked::naming`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NamedBy<'a> {
    /// Nothing: an unencrypted backup.
    Plain,
    /// The chunk id key of the key with this id.
    Key(&'a str),
    /// An exchange between the writer's naming key and this X25519 key.
    Exchange { key: &'a str, writer: [u8; 32] },
}

/// The parts of a naming: the compression algorithm, what keys it, and the
/// escrows its chunks are also wrapped to.
pub fn parse_naming(naming: &str) -> Option<(&str, NamedBy<'_>, Vec<&str>)> {
    let (naming, escrow) = match naming.split_once(";escrow=") {
        None => (naming, Vec::new()),
        Some((n, ids)) => {
            let ids: Vec<&str> = ids.split(',').collect();
            let ok = ids.iter().all(|i| {
                i.strip_prefix("x-")
                    .is_some_and(|h| h.len() == 16 && h.bytes().all(|b| b.is_ascii_hexdigit()))
            });
            if !ok || ids.windows(2).any(|w| w[0] >= w[1]) {
                return None;
            }
            (n, ids)
        }
    };
    let (alg, by) = parse_base(naming)?;
    if !escrow.is_empty() && by == NamedBy::Plain {
        return None;
    }
    Some((alg, by, escrow))
}

fn parse_base(naming: &str) -> Option<(&str, NamedBy<'_>)> {
    if let Some(rest) = naming.strip_prefix("blake3x:") {
        let (alg, rest) = rest.split_once(':')?;
        let (writer, key) = rest.split_once(':')?;
        let mut w = [0u8; 32];
        hex::decode_to_slice(writer, &mut w).ok()?;
        let ok = matches!(alg, "zstd" | "gzip" | "none") && !key.is_empty();
        return ok.then_some((alg, NamedBy::Exchange { key, writer: w }));
    }
    let rest = naming.strip_prefix("blake3:")?;
    let (alg, key) = match rest.split_once(':') {
        Some((a, k)) => (a, NamedBy::Key(k)),
        None => (rest, NamedBy::Plain),
    };
    matches!(alg, "zstd" | "gzip" | "none").then_some((alg, key))
}

/// The key of chunk `id` of `kind`.
pub fn chunk_key(kind: Kind, id: &str) -> String {
    let fan = id.get(..2).unwrap_or("00");
    format!("{}/chunks/{fan}/{id}", kind.as_str())
}

/// Whether `id` is a chunk id: 64 lowercase hex digits.
pub fn is_chunk_id(id: &str) -> bool {
    id.len() == 64 && id.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

impl ChunkMap {
    /// The plaintext length of chunk `i` of a file of `size` bytes.
    pub fn len_of(&self, i: usize, size: u64) -> u64 {
        let start = i as u64 * self.chunk_size;
        size.saturating_sub(start).min(self.chunk_size)
    }

    /// Every stored chunk's key and size, each once.
    pub fn keys(&self, kind: Kind) -> impl Iterator<Item = (String, u64)> + '_ {
        let mut seen = std::collections::HashSet::new();
        self.chunks
            .iter()
            .flatten()
            .filter(move |c| seen.insert(c.0.as_str()))
            .map(move |c| (chunk_key(kind, &c.0), c.1))
    }

    /// Checks the list of a manifest's [`Chunked`] against it.
    pub fn check(&self, size: u64) -> Result<(), String> {
        if self.chunks.len() as u64 != size.div_ceil(self.chunk_size) {
            return Err(format!(
                "{} chunks do not make up {size} bytes in chunks of {}",
                self.chunks.len(),
                self.chunk_size
            ));
        }
        let limit = max_stored(self.chunk_size);
        if let Some(c) = self.chunks.iter().flatten().find(|c| c.1 > limit) {
            return Err(format!(
                "a chunk of {} stored bytes is larger than any chunk of {} bytes",
                c.1, self.chunk_size
            ));
        }
        if let Some(c) = self.chunks.iter().flatten().find(|c| !is_chunk_id(&c.0)) {
            return Err(format!(
                "chunk id {:?} is not 64 hex digits",
                c.0.chars().take(80).collect::<String>()
            ));
        }
        Ok(())
    }

    /// The summary a manifest records of this map, its list stored at `list`.
    pub fn summary(&self, kind: Kind, list: ListRef) -> Chunked {
        let keys: Vec<(String, u64)> = self.keys(kind).collect();
        Chunked {
            file: self.file.clone(),
            chunk_size: self.chunk_size,
            naming: self.naming.clone(),
            count: self.chunks.len() as u64,
            stored: keys.len() as u64,
            stored_bytes: keys.iter().map(|(_, n)| n).sum(),
            added: self.added,
            added_bytes: self.added_bytes,
            list,
        }
    }
}

impl Chunked {
    /// Checks what a stored manifest says against the file it describes:
    /// untrusted input (a sealed manifest, but from any bkp version) must not
    /// make a restore allocate, loop or write beyond the file.
    pub fn check(&self, size: u64) -> Result<(), String> {
        if !(MIN_CHUNK..=MAX_CHUNK).contains(&self.chunk_size) {
            return Err(format!(
                "chunk size {} is outside {MIN_CHUNK}..={MAX_CHUNK}",
                self.chunk_size
            ));
        }
        if self.count != size.div_ceil(self.chunk_size) {
            return Err(format!(
                "{} chunks do not make up {size} bytes in chunks of {}",
                self.count, self.chunk_size
            ));
        }
        if parse_naming(&self.naming).is_none() {
            return Err(format!("chunk naming {:?} is unknown", self.naming));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(chunks: Vec<Option<Chunk>>) -> ChunkMap {
        ChunkMap {
            file: "0_0.tigerbeetle".into(),
            chunk_size: MIN_CHUNK,
            naming: plain_naming("zstd"),
            added: 0,
            added_bytes: 0,
            chunks,
            adopted: Vec::new(),
        }
    }

    #[test]
    fn lists_round_trip_compactly_with_zero_chunks_as_null() {
        let list = ChunkList {
            schema: LIST_SCHEMA.into(),
            backup: crate::id::BackupId::new_v7(time::OffsetDateTime::UNIX_EPOCH),
            chunks: vec![Some(Chunk("a".repeat(64), 7)), None],
        };
        let text = serde_json::to_string(&list).unwrap();
        assert!(text.contains(&format!(r#""chunks":[["{}",7],null]"#, "a".repeat(64))));
        assert_eq!(serde_json::from_str::<ChunkList>(&text).unwrap(), list);
    }

    #[test]
    fn check_refuses_what_would_misplace_bytes() {
        let id = "0".repeat(64);
        let ok = map(vec![Some(Chunk(id.clone(), 1)), None]);
        assert!(ok.check(MIN_CHUNK + 1).is_ok());
        assert!(ok.check(2 * MIN_CHUNK).is_ok());
        assert!(ok
            .check(2 * MIN_CHUNK + 1)
            .unwrap_err()
            .contains("do not make up"));
        assert!(ok.check(MIN_CHUNK).unwrap_err().contains("do not make up"));
        let bad = map(vec![Some(Chunk("../x".into(), 1))]);
        assert!(bad.check(10).unwrap_err().contains("not 64 hex"));
        let list = ListRef {
            key: "tigerbeetle/x".into(),
            size: 1,
            sha256: String::new(),
        };
        let summary = ok.summary(Kind::Tigerbeetle, list);
        assert_eq!(
            (summary.count, summary.stored, summary.stored_bytes),
            (2, 1, 1)
        );
        assert!(summary.check(MIN_CHUNK + 1).is_ok());
        assert!(summary
            .check(3 * MIN_CHUNK)
            .unwrap_err()
            .contains("do not make up"));
        let mut tiny = summary.clone();
        tiny.chunk_size = 1;
        assert!(tiny.check(2).unwrap_err().contains("chunk size"));
        let mut odd = summary.clone();
        odd.naming = "md5".into();
        assert!(odd.check(MIN_CHUNK + 1).unwrap_err().contains("unknown"));
    }

    #[test]
    fn keys_fan_out_and_name_each_chunk_once() {
        let a = format!("ab{}", "0".repeat(62));
        let m = map(vec![
            Some(Chunk(a.clone(), 3)),
            None,
            Some(Chunk(a.clone(), 3)),
        ]);
        let keys: Vec<_> = m.keys(Kind::Tigerbeetle).collect();
        assert_eq!(keys, vec![(format!("tigerbeetle/chunks/ab/{a}"), 3)]);
        assert_eq!(m.len_of(2, 2 * MIN_CHUNK + 5), 5);
        assert_eq!(m.len_of(0, 2 * MIN_CHUNK + 5), MIN_CHUNK);
    }
}
