//! Sealed lists of legacy documents: what counts as "from before sealing" (a
//! manifest without a seal) or "from before a key's rotation" (a manifest or
//! tombstone sealed by a key now kept only to decrypt), decided by the
//! operator once and recorded so that no writer of the bucket can claim it.
//!
//! A list is `legacy/{id}.json`, written create-only by `bkp trust-legacy`
//! and sealed like a manifest: for each document it records its key in the
//! store and the SHA-256 of its exact bytes. A reader uses a document that the
//! current key did not seal only when a list it believes records that key with
//! those bytes ([`super::seal::Trust::vouch`]); an edited legacy manifest has
//! other bytes and is refused. A list is believed only when sealed by the
//! current key (or signed by this host's own signing key, on a write-only
//! host): a list sealed by a key rotated out since is not, so each rotation is
//! followed by a new list, written under the new key.
//!
//! Lists are read only when a document needs one, so a store whose manifests
//! are all sealed with the current key costs no request more.

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

pub use super::seal::{Allowed, Lists};
use super::{seal, Trust};
use crate::exit::{classify, coded, Code};
use crate::id::BackupId;
use crate::store::Store;

pub const DIR: &str = "legacy";
pub const SCHEMA: &str = "bkp.legacy/1";
/// A list is at most this (a year of 15-minute logs is ~36,500 entries of
/// ~150 bytes): a larger one is not read into memory.
const MAX_BYTES: u64 = 64 << 20;

/// The most documents one list records (~210 bytes each, well under
/// [`MAX_BYTES`]); `bkp trust-legacy` writes as many lists as it needs.
pub const MAX_DOCUMENTS: usize = 100_000;

/// One sealed list, as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct List {
    pub schema: String,
    pub id: BackupId,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    pub host: String,
    pub bkp_version: String,
    /// The cut-off unsealed manifests were recorded up to, if one was set.
    #[serde(
        default,
        with = "time::serde::rfc3339::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub unsealed_before: Option<OffsetDateTime>,
    /// The id of the store the list was written for (its marker's): a list
    /// copied into another store with the same key records nothing there.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub store: Option<String>,
    pub documents: Vec<Listed>,
}

/// A document a list records: its key in the store and the SHA-256 (hex) of
/// its exact bytes.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Listed {
    pub key: String,
    pub sha256: String,
}

pub fn key(id: BackupId) -> String {
    format!("{DIR}/{id}.json")
}

/// Parses list `key` read from the store: it must be sealed by a key that
/// writes lists ([`Trust::trusts_list`]), lie at its own id's key, and have
/// this schema. Any other is an error naming it.
pub fn parse(bytes: &[u8], key: &str, trust: &Trust) -> Result<List> {
    let opened = seal::open(bytes, &format!("sealed list {key}"), trust)?;
    parse_opened(opened, key, trust)
}

/// [`parse`] of a list whose seal is opened already.
fn parse_opened(opened: seal::Opened, key: &str, trust: &Trust) -> Result<List> {
    let what = format!("sealed list {key}");
    if !opened
        .sealer
        .as_deref()
        .is_some_and(|s| trust.trusts_list(s))
    {
        return Err(coded(
            Code::Integrity,
            format!(
                "{what} is not sealed with the current key{}: it is not believed (a list written before a key rotation is replaced by running `bkp trust-legacy` again)",
                if opened.sealed { "" } else { " (it has no seal)" }
            ),
        ));
    }
    let list: List = serde_json::from_value(opened.value)
        .map_err(|_| coded(Code::Integrity, format!("{what} is malformed")))?;
    if list.schema != SCHEMA || self::key(list.id) != key {
        return Err(coded(
            Code::Integrity,
            format!("{what} names another schema or id than its key: it is not used"),
        ));
    }
    let here = trust.binding()?.map(|b| b.id.as_str());
    if list.store.as_deref() != here {
        let named = |s: Option<&str>| {
            s.map_or("no store".to_string(), |s| {
                format!("store {}", crate::ui::printable(s))
            })
        };
        return Err(coded(
            Code::Integrity,
            format!(
                "{what} was written for {}, and this is {}: it records nothing here (a list from before lists named their store is replaced by running `bkp trust-legacy` again)",
                named(list.store.as_deref()),
                named(here)
            ),
        ));
    }
    Ok(list)
}

/// Every list in `store` that `trust` believes, together. A list sealed by
/// a key this host does not hold (a write-only host reading a key holder's)
/// or by a key rotated out since is left out quietly; any other that is not
/// believed (planted, damaged) is named in a warning and left out. A store
/// that does not answer is an error.
pub fn load(store: &dyn Store, trust: &Trust) -> Result<Allowed> {
    let mut out = Allowed::default();
    // The store's id every list must name: a marker that cannot be read now
    // is an error, never "no list" (which would refuse what a list records).
    trust.binding()?;
    for o in store.list(&format!("{DIR}/"))? {
        if !o.key.ends_with(".json") {
            continue;
        }
        let bytes = match store.get_at_most(&o.key, MAX_BYTES) {
            Ok(b) => b,
            Err(e) if classify(&e) == Some(Code::NotFound) => continue,
            Err(e) if classify(&e) == Some(Code::Transient) => return Err(e),
            Err(e) => {
                warn(&e);
                continue;
            }
        };
        if let Some((_, false)) = seal::sealer(&bytes, trust) {
            continue;
        }
        let opened = match seal::open(&bytes, &format!("sealed list {}", o.key), trust) {
            Ok(opened) => opened,
            Err(e) => {
                warn(&e);
                continue;
            }
        };
        // Sealed by a key rotated out since: superseded by a newer list.
        if opened
            .sealer
            .as_ref()
            .is_some_and(|s| !trust.trusts_list(s))
        {
            continue;
        }
        // Written before lists named their store: replaced by a newer list
        // (a refused document says to run `bkp trust-legacy`), not believed,
        // and not worth a warning on every run.
        if opened.value.get("store").is_none() && trust.binding()?.is_some() {
            continue;
        }
        match parse_opened(opened, &o.key, trust) {
            Ok(list) => {
                out.listed_at(list.created_at);
                for d in &list.documents {
                    out.add(&d.key, &d.sha256);
                }
            }
            Err(e) => warn(&e),
        }
    }
    Ok(out)
}

fn warn(e: &anyhow::Error) {
    crate::ui::log(
        crate::ui::Priority::Warning,
        &format!("bkp: warning: {e:#}"),
    );
}

/// Writes `list` sealed with `trust`'s current key or signer, create-only,
/// naming the store it is written for (its marker's id).
pub fn write(store: &dyn Store, list: &List, trust: &Trust) -> Result<String> {
    let key = key(list.id);
    let mut list = list.clone();
    list.store = trust.binding()?.map(|b| b.id.clone());
    let bytes = seal::encode(&list, trust.keys()).context("failed to encode the sealed list")?;
    store
        .put_new(&key, &bytes, &Vec::new())
        .with_context(|| format!("failed to write {key} to {}", store.identity()))?;
    Ok(key)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::{Keyring, MasterKey};
    use crate::store::memory::MemoryStore;

    fn keys(b: u8) -> Keyring {
        Keyring::new(MasterKey::from_bytes([b; 32]), vec![])
    }

    fn trust(b: u8) -> Trust {
        Trust::new(Some(keys(b)), None, vec![])
    }

    fn sample(n: usize) -> List {
        let at = OffsetDateTime::from_unix_timestamp(1_760_140_800).unwrap();
        List {
            schema: SCHEMA.into(),
            id: BackupId::new_v7(at),
            created_at: at,
            host: "h".into(),
            bkp_version: "0".into(),
            unsealed_before: n.is_multiple_of(2).then_some(at),
            store: None,
            documents: (0..n)
                .map(|i| Listed {
                    key: format!("manifests/tigerbeetle/{i}.json"),
                    sha256: format!("{i:064x}"),
                })
                .collect(),
        }
    }

    #[test]
    fn a_list_round_trips_and_any_edit_is_refused() {
        for n in [0, 1, 2, 50] {
            let store = MemoryStore::new();
            let list = sample(n);
            let k = write(&store, &list, &trust(7)).unwrap();
            assert!(write(&store, &list, &trust(7)).is_err(), "create-only");
            let bytes = store.get(&k).unwrap();
            assert_eq!(parse(&bytes, &k, &trust(7)).unwrap(), list);
            let all = load(&store, &trust(7)).unwrap();
            assert_eq!(all.len(), n);
            for d in &list.documents {
                assert!(all.has(&d.key, &d.sha256) && all.has_digest(&d.sha256));
                assert!(!all.has(&d.key, &"f".repeat(64)));
            }
            // Every member is covered by the seal.
            let v: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
            for (field, value) in [
                (
                    "documents",
                    serde_json::json!([{"key": "manifests/x.json", "sha256": "00"}]),
                ),
                (
                    "id",
                    BackupId::new_v7(OffsetDateTime::now_utc())
                        .to_string()
                        .into(),
                ),
                ("extra", true.into()),
            ] {
                let mut w = v.clone();
                w[field] = value;
                let e = parse(&serde_json::to_vec(&w).unwrap(), &k, &trust(7)).unwrap_err();
                assert_eq!(classify(&e), Some(Code::Integrity), "{field}");
            }
        }
    }

    #[test]
    fn only_a_list_sealed_by_the_current_key_is_believed() {
        let store = MemoryStore::new();
        let list = sample(3);
        // Unsealed, sealed by another key, sealed by a key now old.
        let plain = seal::encode(&list, None).unwrap();
        store.put_new(&key(list.id), &plain, &vec![]).unwrap();
        let mut other = sample(2);
        other.id = BackupId::new_v7(OffsetDateTime::now_utc());
        write(&store, &other, &trust(8)).unwrap();
        let mut old = sample(4);
        old.id = BackupId::new_v7(OffsetDateTime::now_utc() + time::Duration::SECOND);
        write(&store, &old, &trust(7)).unwrap();
        let rotated = Trust::new(
            Some(Keyring::new(
                MasterKey::from_bytes([9; 32]),
                vec![MasterKey::from_bytes([7; 32])],
            )),
            None,
            vec![],
        );
        assert!(load(&store, &rotated).unwrap().is_empty());
        // The key that sealed it, current, believes its own list only.
        let t = trust(7);
        assert_eq!(load(&store, &t).unwrap().len(), 4);
        // A list copied under another id's key is not used.
        let moved = key(BackupId::new_v7(OffsetDateTime::now_utc()));
        let bytes = store.get(&key(old.id)).unwrap();
        assert!(parse(&bytes, &moved, &t).is_err());
    }

    #[test]
    fn lists_are_read_once_and_only_when_asked() {
        let calls = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let c = calls.clone();
        let t = trust(7).with_lists(Lists::new(move |_| {
            c.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            Ok(Allowed::of(&[("k", "d")]))
        }));
        assert_eq!(calls.load(std::sync::atomic::Ordering::SeqCst), 0);
        assert!(t.lists().unwrap().has("k", "d"));
        assert!(t.lists().unwrap().has_key("k"));
        assert_eq!(calls.load(std::sync::atomic::Ordering::SeqCst), 1);
    }
}
