//! Seals: the proof that a document in the store (a manifest, a tombstone, a
//! report) was written by a holder of the encryption key, and is whole.
//!
//! A sealed document is a JSON object with one extra top-level member,
//! `"seal": {"key_id": …, "hmac": <64 hex digits>}`. The HMAC-SHA256 (under
//! the key's [`seal_key`](crate::crypto::MasterKey::seal_key), derived from its
//! secret) covers the canonical encoding of every other member: the object is
//! parsed into a `serde_json::Value` (object members in sorted order),
//! the seal is taken out, and the rest re-encoded compactly. A reader then
//! deserializes its struct *from that same value*, so every field it acts on
//! (ids, times, retention, object keys, sizes, digests) is authenticated, and
//! members added by a newer minor schema are covered too.
//!
//! Who is trusted is a [`Trust`]: with no keys configured nothing can be
//! checked (and nothing is sealed); with keys, a document counts as sealed
//! only when the current key or a trusted signer sealed it. A signer (a
//! write-only host) is trusted only within its scope (`[[encryption.signer]]`:
//! hosts, kinds, PostgreSQL systems, TigerBeetle clusters): a manifest or a
//! WAL object claiming anything else is refused ([`Trust::check_scope`],
//! [`tag_check`]), and what deletes or vouches for other documents
//! (tombstones, catalogs) counts only from a key holder
//! ([`Trust::is_key_holder`]) or, on a write-only host, from itself. An old key (kept
//! to decrypt after a rotation) seals nothing new: a document without a seal,
//! or sealed by an old key, is used only when its exact bytes are in a sealed
//! list the operator wrote (`bkp trust-legacy`, see [`super::legacy`]), or
//! when the operator accepts that one backup by id (`--trust`). Nothing the
//! document's writer chooses (its id, its times) decides it.

use std::collections::BTreeSet;
use std::sync::{Arc, OnceLock};

use anyhow::Result;
use ring::hmac;
use serde::{Deserialize, Serialize};
use sha2::Digest;
use time::OffsetDateTime;

use crate::crypto::{Claim, Keyring, Signer};
use crate::exit::{classify, coded, Code};
use crate::id::BackupId;
use crate::ui::printable;

use super::Kind;

/// The JSON member that holds the seal.
pub const FIELD: &str = "seal";

/// Exactly one of `hmac` (a symmetric key's) and `ed25519` (a signer's);
/// with escrows (see `crypto/escrow.rs`), an HMAC of the same bytes by each.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Seal {
    key_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    hmac: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    ed25519: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    escrow: Vec<EscrowSeal>,
}

/// An escrow's seal: the HMAC under its seal key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct EscrowSeal {
    key_id: String,
    hmac: String,
}

/// Bytes of each part of a tag made with escrows: the key's HMAC and each
/// escrow's, truncated to 128 bits.
const TAG_PART: usize = 16;

/// Whether `raw` is `key`'s HMAC of `message`, or (a tag made with escrows,
/// see [`tag`]) one of its 16-byte parts is that HMAC's first 16 bytes.
fn mac_ok(key: &hmac::Key, message: &[u8], raw: &[u8]) -> bool {
    mac_matches(hmac::sign(key, message).as_ref(), raw)
}

/// Whether `raw` is the HMAC `want`, or one of its 16-byte parts is the
/// first 16 bytes of `want` ([`mac_ok`]). Compared in constant time.
fn mac_matches(want: &[u8], raw: &[u8]) -> bool {
    let same = |a: &[u8], b: &[u8]| {
        a.len() == b.len() && a.iter().zip(b).fold(0u8, |d, (x, y)| d | (x ^ y)) == 0
    };
    if same(want, raw) {
        return true;
    }
    if raw.len() < 2 * TAG_PART || !raw.len().is_multiple_of(TAG_PART) {
        return false;
    }
    raw.chunks(TAG_PART)
        .any(|part| same(part, &want[..TAG_PART]))
}

/// [`tag_verifies_now`] of a message fed in parts, for one too large to
/// hold whole (a catalog of years of history): by the current key, or
/// without keys as a digest. A trusted signer's tag needs the whole message
/// ([`TagStream::verifies`] is false for it: check it the usual way).
pub struct TagStream {
    mac: Option<hmac::Context>,
    digest: Option<sha2::Sha256>,
}

impl TagStream {
    pub fn new(keys: Option<&Keyring>) -> TagStream {
        match keys {
            Some(k) => TagStream {
                mac: k.current().seal_key().map(hmac::Context::with_key),
                digest: None,
            },
            None => TagStream {
                mac: None,
                digest: Some(sha2::Sha256::new()),
            },
        }
    }

    pub fn update(&mut self, part: &[u8]) {
        if let Some(m) = &mut self.mac {
            m.update(part);
        }
        if let Some(d) = &mut self.digest {
            d.update(part);
        }
    }

    /// Whether `tag` (hex) is the current key's tag of what was fed, or
    /// without keys its digest.
    pub fn verifies(self, tag: &str) -> bool {
        let Ok(raw) = hex::decode(tag) else {
            return false;
        };
        match (self.mac, self.digest) {
            (Some(m), _) => mac_matches(m.sign().as_ref(), &raw),
            (None, Some(d)) => raw.as_slice() == d.finalize().as_slice(),
            (None, None) => false,
        }
    }
}

/// [`tag`] of a message fed in parts, for one too large to hold whole (a
/// catalog base of years of history) where the tag is a key's HMAC (with
/// each escrow's) or a digest. A signature needs the whole message: there
/// is no such maker for a host with a signing key ([`TagMaker::new`]).
pub struct TagMaker {
    own: Option<hmac::Context>,
    escrows: Vec<hmac::Context>,
    digest: Option<sha2::Sha256>,
}

impl TagMaker {
    /// A maker of the tag `keys` make; `None` where that is a signature. An
    /// error where [`tag`] would fail (no key seals).
    pub fn new(keys: Option<&Keyring>) -> Result<Option<TagMaker>> {
        let Some(keys) = keys else {
            return Ok(Some(TagMaker {
                own: None,
                escrows: Vec::new(),
                digest: Some(sha2::Sha256::new()),
            }));
        };
        let Sealing::Mac(mac, _) = Sealing::of(keys)? else {
            return Ok(None);
        };
        Ok(Some(TagMaker {
            own: Some(hmac::Context::with_key(mac)),
            escrows: keys
                .escrow()
                .iter()
                .map(|e| hmac::Context::with_key(e.seal_key()))
                .collect(),
            digest: None,
        }))
    }

    pub fn update(&mut self, part: &[u8]) {
        if let Some(m) = &mut self.own {
            m.update(part);
        }
        for e in &mut self.escrows {
            e.update(part);
        }
        if let Some(d) = &mut self.digest {
            d.update(part);
        }
    }

    /// The tag (hex), as [`tag`] makes it of what was fed.
    pub fn finish(self) -> String {
        let Some(own) = self.own else {
            let digest = self.digest.map(|d| d.finalize().to_vec());
            return hex::encode(digest.unwrap_or_default());
        };
        let own = own.sign();
        if self.escrows.is_empty() {
            return hex::encode(own.as_ref());
        }
        let mut out = own.as_ref()[..TAG_PART].to_vec();
        for e in self.escrows {
            out.extend_from_slice(&e.sign().as_ref()[..TAG_PART]);
        }
        hex::encode(out)
    }
}

/// What the readers of one run trust; also holds the run's keys.
#[derive(Clone, Default)]
pub struct Trust {
    keys: Option<Arc<Keyring>>,
    unsealed_before: Option<OffsetDateTime>,
    accepted: Vec<BackupId>,
    /// Kinds the configuration stores unencrypted on purpose
    /// (`replicate.encryption = false`).
    plaintext: Vec<Kind>,
    /// The sealed lists of documents from before sealing or before a key's
    /// rotation, read from the store when first needed.
    lists: Option<Arc<Lists>>,
    /// The store's id, which sealed manifests must name (see `marker.rs`).
    /// (A `marker::Bound`, held as `Any` so that this module needs nothing
    /// of the marker's.)
    pub(super) store: Option<Arc<dyn std::any::Any + Send + Sync>>,
}

impl Trust {
    /// Trust without keys: nothing is checked (no `[encryption]`).
    pub fn none() -> Trust {
        Trust::default()
    }

    pub fn new(
        keys: Option<Keyring>,
        unsealed_before: Option<OffsetDateTime>,
        accepted: Vec<BackupId>,
    ) -> Trust {
        Trust {
            keys: keys.map(Arc::new),
            unsealed_before,
            accepted,
            plaintext: Vec::new(),
            lists: None,
            store: None,
        }
    }

    /// Also reads the store's sealed lists (see [`super::legacy`]) through
    /// `lists`, when a document needs them.
    pub fn with_lists(mut self, lists: Lists) -> Trust {
        self.lists = Some(Arc::new(lists));
        self
    }

    /// Also accepts unencrypted backups of `kind`, which the configuration
    /// stores so on purpose.
    pub fn with_plaintext(mut self, kind: Kind) -> Trust {
        self.plaintext.push(kind);
        self
    }

    /// Whether backup `id` of `kind` may be unencrypted.
    pub fn plaintext_ok(&self, kind: Kind, id: BackupId) -> bool {
        self.plaintext.contains(&kind) || self.excuses(id)
    }

    /// The configured keys, for encrypting and decrypting.
    pub fn keys(&self) -> Option<&Keyring> {
        self.keys.as_deref()
    }

    /// Whether documents must be sealed (keys are configured).
    pub fn checks(&self) -> bool {
        self.keys.is_some()
    }

    /// Whether backup `id` may come without a seal, or without encryption:
    /// always without keys; with keys, only when the operator named it
    /// (`--trust`). Its id's time excuses nothing: whoever wrote it chose it.
    pub fn excuses(&self, id: BackupId) -> bool {
        self.keys.is_none() || self.accepted.contains(&id)
    }

    /// The cut-off `bkp trust-legacy` records unsealed manifests up to.
    pub fn unsealed_before(&self) -> Option<OffsetDateTime> {
        self.unsealed_before
    }

    /// Whether `sealer` ([`Opened::sealer`]) seals now: the current key, or a
    /// trusted signer. A key kept only to decrypt (`old_keys`, further
    /// identities) does not.
    pub fn seals_now(&self, sealer: &str) -> bool {
        let Some(keys) = self.keys() else {
            return false;
        };
        match sealer.split_once(':') {
            Some(("hmac", id)) => keys.current().id() == id && keys.current().seal_key().is_some(),
            Some(("ed25519", id)) => keys.signer(id).is_some(),
            _ => false,
        }
    }

    /// Whether `sealer` holds the key: the current key's HMAC. Signers (write-
    /// only hosts) never do; what only a key holder may write (tombstones,
    /// catalogs) asks this (or [`Trust::trusts_list`], which also believes
    /// this host's own signature on a write-only host).
    pub fn is_key_holder(&self, sealer: &str) -> bool {
        sealer.starts_with("hmac:") && self.seals_now(sealer)
    }

    /// Refuses a document (`what` in errors) that `sealer` sealed and that
    /// claims `claim`, when `sealer` is a signer whose scope does not cover
    /// it. Keys, lists and this host's own signer have no scope.
    pub fn check_scope(&self, sealer: Option<&str>, claim: &Claim, what: &str) -> Result<()> {
        let Some(id) = sealer.and_then(|s| s.strip_prefix("ed25519:")) else {
            return Ok(());
        };
        let Some(signer) = self.keys().and_then(|k| k.trusted_signer(id)) else {
            return Ok(());
        };
        match signer.refuses(claim) {
            None => Ok(()),
            Some(breaks) => Err(out_of_scope(what, signer, &breaks)),
        }
    }

    /// Whether a sealed list sealed by `sealer` is believed: the current key's
    /// HMAC, or this host's own signature (a write-only host trusts the lists
    /// it wrote itself, and no other signer's).
    pub fn trusts_list(&self, sealer: &str) -> bool {
        let Some(keys) = self.keys() else {
            return false;
        };
        match sealer.split_once(':') {
            Some(("hmac", _)) => self.seals_now(sealer),
            Some(("ed25519", id)) => keys.signing().is_some_and(|s| s.id() == id),
            _ => false,
        }
    }

    /// The store's sealed lists, read on first use (empty without a reader).
    pub fn lists(&self) -> Result<&Allowed> {
        match &self.lists {
            Some(l) => l.get(self),
            None => Ok(&NONE),
        }
    }

    /// Why backup `m` is used although the current key did not seal it, if
    /// that is so: the operator vouched for it (`--trust`), or a sealed list
    /// records it. Only lists this run already read are looked at.
    pub fn excused_why(&self, m: &super::Manifest) -> Option<&'static str> {
        self.keys.as_ref()?;
        if self.accepted.contains(&m.id) {
            return Some("you vouched for it with --trust");
        }
        let listed = self
            .lists
            .as_ref()
            .and_then(|l| l.loaded())
            .is_some_and(|a| a.has_key(&m.key()));
        listed.then_some(
            "it is recorded in the store's sealed list of backups from before sealing or before a key rotation (`bkp trust-legacy`)",
        )
    }

    /// Who vouches for the document `bytes` stored at `key` (`what` in
    /// errors), whose seal [`open`] checked and found made by `sealer`: that
    /// sealer when it seals now ([`Trust::seals_now`]); `legacy:{sha256}` when
    /// a sealed list records these exact bytes at this key; `None` when it
    /// has no seal and no list records it (the caller judges that). A seal of
    /// an old key that no list records is a data error.
    pub fn vouch(
        &self,
        sealer: Option<&str>,
        key: &str,
        bytes: &[u8],
        what: &str,
    ) -> Result<Option<String>> {
        if self.keys.is_none() {
            return Ok(None);
        }
        if let Some(s) = sealer.filter(|s| self.seals_now(s)) {
            return Ok(Some(s.to_string()));
        }
        let digest = crate::stages::hash::hex(&sha2::Sha256::digest(bytes));
        if self.lists()?.has(key, &digest) {
            return Ok(Some(format!("{LEGACY}{digest}")));
        }
        match sealer {
            None => Ok(None),
            Some(s) => Err(coded(
                Code::Integrity,
                format!(
                    "{what} is sealed with {}, which is no longer the current key: a rotated-out key still decrypts, but what it seals is believed only when a sealed list records it. If it was sealed before the rotation, run `bkp trust-legacy` once with the new key current (it records only what the store got before its first run under that key), or pass `--trust ID` to vouch for one backup; otherwise the old key may have leaked, and the document is not used",
                    printable(s)
                ),
            )),
        }
    }
}

/// What the sealed lists a run believes record, together (see
/// [`super::legacy`]): documents by key and SHA-256 of their bytes.
#[derive(Debug, Default, Clone)]
pub struct Allowed {
    pairs: BTreeSet<(String, String)>,
    digests: BTreeSet<String>,
    keys: BTreeSet<String>,
    /// When the oldest list was written.
    first_at: Option<OffsetDateTime>,
}

/// No list.
pub static NONE: Allowed = Allowed {
    pairs: BTreeSet::new(),
    digests: BTreeSet::new(),
    keys: BTreeSet::new(),
    first_at: None,
};

impl Allowed {
    /// The lists recording `(key, sha256)` pairs.
    pub fn of(pairs: &[(&str, &str)]) -> Allowed {
        let mut a = Allowed::default();
        for (k, d) in pairs {
            a.add(k, d);
        }
        a
    }

    pub fn add(&mut self, key: &str, sha256: &str) {
        self.pairs.insert((key.to_string(), sha256.to_string()));
        self.digests.insert(sha256.to_string());
        self.keys.insert(key.to_string());
    }

    /// Whether a list records the bytes of digest `sha256` at `key`.
    pub fn has(&self, key: &str, sha256: &str) -> bool {
        self.pairs.contains(&(key.to_string(), sha256.to_string()))
    }

    /// Whether a list records bytes of digest `sha256` (at some key).
    pub fn has_digest(&self, sha256: &str) -> bool {
        self.digests.contains(sha256)
    }

    /// Whether a list records a document at `key`.
    pub fn has_key(&self, key: &str) -> bool {
        self.keys.contains(key)
    }

    /// Notes that a list was written at `at`.
    pub fn listed_at(&mut self, at: OffsetDateTime) {
        self.first_at = Some(self.first_at.map_or(at, |t| t.min(at)));
    }

    /// When the oldest list these are began: under the current key, so after
    /// its rotation in, and what a rotated-out key sealed or tagged had been
    /// recorded then; a document or WAL object of that key the store got
    /// since is a host still sealing with it, or someone holding it.
    pub fn first_listed_at(&self) -> Option<OffsetDateTime> {
        self.first_at
    }

    pub fn len(&self) -> usize {
        self.pairs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.pairs.is_empty()
    }
}

/// What reads the sealed lists of a run's store, with the run's keys.
type LoadLists = dyn Fn(&Trust) -> Result<Allowed> + Send + Sync;

/// How a run reads the sealed lists: `load` on first need, at most once.
pub struct Lists {
    load: Box<LoadLists>,
    got: OnceLock<std::result::Result<Allowed, (Option<Code>, String)>>,
}

impl Lists {
    pub fn new(load: impl Fn(&Trust) -> Result<Allowed> + Send + Sync + 'static) -> Lists {
        Lists {
            load: Box::new(load),
            got: OnceLock::new(),
        }
    }

    /// The lists, read with `trust`'s keys the first time.
    pub fn get(&self, trust: &Trust) -> Result<&Allowed> {
        let got = self
            .got
            .get_or_init(|| (self.load)(trust).map_err(|e| (classify(&e), format!("{e:#}"))));
        match got {
            Ok(a) => Ok(a),
            Err((Some(code), msg)) => Err(coded(*code, msg.clone())),
            Err((None, msg)) => Err(anyhow::anyhow!("{msg}")),
        }
    }

    /// The lists, if this run already read them.
    pub fn loaded(&self) -> Option<&Allowed> {
        self.got.get().and_then(|r| r.as_ref().ok())
    }
}

/// The sealer name [`Trust::vouch`] gives a document a sealed list records.
pub const LEGACY: &str = "legacy:";

/// The error for a document `what` sealed by `signer` that claims what its
/// scope lacks (`breaks`, e.g. `host "db1"`).
fn out_of_scope(what: &str, signer: &Signer, breaks: &str) -> anyhow::Error {
    coded(
        Code::Integrity,
        format!(
            "{what} is sealed by signer {}, whose scope ({}) does not include {breaks}: a write-only host signs only its own backups, so it is not used. If that host does back this up, add it to the signer's [[encryption.signer]] scope; otherwise the host's signing key may be stolen: remove the signer",
            signer.verifier.id,
            signer.describe_scope()
        ),
    )
}

/// What manifest `m` claims, for a signer's scope: its host and kind, and
/// the PostgreSQL system (`source.system_identifier`) and TigerBeetle
/// cluster (`source.cluster_id`) it records, if any. One it records in a
/// form bkp cannot read is outside every scope.
pub fn manifest_claim(m: &super::Manifest) -> Claim<'_> {
    let mut unreadable = None;
    let system = m.source.get("system_identifier").and_then(|v| {
        let s = super::facts::system_identifier(v);
        if s.is_none() {
            unreadable = Some("PostgreSQL system identifier");
        }
        s
    });
    let cluster = m.source.get("cluster_id").and_then(|_| {
        let c = super::tigerbeetle::cluster_id(m);
        if c.is_none() {
            unreadable = Some("TigerBeetle cluster id");
        }
        c
    });
    // A backup of a kind whose sources its manifests tell apart (a
    // TigerBeetle cluster, a PostgreSQL system) that names none counts as
    // every source's (as older releases wrote them): from a signer, whose
    // scope names sources, a log segment would join any cluster's chain, and
    // a snapshot or base backup would be any source's newest for `status`
    // and date any source's log or WAL for retention. bkp records the
    // cluster of every snapshot it takes of a TigerBeetle data file (from its
    // superblock without `addresses`), and the system of every base backup.
    if let crate::kinds::SourceIs::Fact { name, unnamed, .. } = m.kind.describe().source_is {
        if !m.source.contains_key(name) {
            let log = m.kind == Kind::Tigerbeetle && super::tigerbeetle::is_log(m);
            unreadable = Some(match log {
                true => "TigerBeetle cluster id (the log segment names none)",
                false => unnamed,
            });
        }
    }
    Claim {
        host: Some(&m.host),
        kind: Some(m.kind),
        postgres_system: system,
        tigerbeetle_cluster: cluster,
        unreadable,
    }
}

fn canonical(v: &serde_json::Value) -> Result<Vec<u8>> {
    Ok(serde_json::to_vec(v)?)
}

/// How this host seals what it writes: a host with a signing key signs (a
/// write-only host has no other secret); otherwise the current key's HMAC.
enum Sealing<'a> {
    Sign(&'a crate::crypto::pubkey::SigningKey),
    Mac(&'a hmac::Key, &'a str),
}

impl<'a> Sealing<'a> {
    fn of(keys: &'a Keyring) -> Result<Sealing<'a>> {
        match (keys.signing(), keys.current().seal_key()) {
            (Some(signer), _) => Ok(Sealing::Sign(signer)),
            (None, Some(mac)) => Ok(Sealing::Mac(mac, keys.current().id())),
            (None, None) => anyhow::bail!(
                "cannot seal: the current key is a public-key recipient and no signing_key_file is configured"
            ),
        }
    }

    /// The raw seal of `message`.
    fn seal(&self, message: &[u8]) -> Vec<u8> {
        match self {
            Sealing::Sign(signer) => signer.sign(message),
            Sealing::Mac(mac, _) => hmac::sign(mac, message).as_ref().to_vec(),
        }
    }

    /// The escrows' seals of `message` (none for a write-only host, whose
    /// documents the escrow's holder believes as a signer's, by its scope).
    fn escrow_seals(&self, keys: &Keyring, message: &[u8]) -> Vec<EscrowSeal> {
        if let Sealing::Sign(_) = self {
            return Vec::new();
        }
        keys.escrow()
            .iter()
            .map(|e| EscrowSeal {
                key_id: e.id().to_string(),
                hmac: hex::encode(hmac::sign(e.seal_key(), message)),
            })
            .collect()
    }

    /// A tag of `message`: the seal, or with escrows the first 16 bytes of
    /// this key's HMAC and of each escrow's, so that either holder verifies
    /// it (a WAL object's name has room for one tag).
    fn tag(&self, keys: &Keyring, message: &[u8]) -> Vec<u8> {
        let escrow = self.escrow_seals(keys, message);
        if escrow.is_empty() {
            return self.seal(message);
        }
        let mut out = self.seal(message)[..TAG_PART].to_vec();
        for e in keys.escrow() {
            out.extend_from_slice(&hmac::sign(e.seal_key(), message).as_ref()[..TAG_PART]);
        }
        out
    }

    /// The name [`Opened::sealer`] gives what this seals.
    fn name(&self) -> String {
        match self {
            Sealing::Sign(signer) => format!("ed25519:{}", signer.id()),
            Sealing::Mac(_, id) => format!("hmac:{id}"),
        }
    }
}

/// The JSON bytes to store for `doc`: sealed with the current key when keys
/// are configured, plain otherwise.
pub fn encode<T: Serialize>(doc: &T, keys: Option<&Keyring>) -> Result<Vec<u8>> {
    encode_with_rows::<()>(&serde_json::to_value(doc)?, None, keys)
}

/// [`encode`] of the document `head` with one more member, `rows`: a name
/// and its rows, each turned into JSON only as it is written (a cleanup of
/// years of history reports hundreds of thousands of deleted backups, which
/// as one JSON value took hundreds of MiB). The same bytes as [`encode`]
/// of the whole.
pub fn encode_with_rows<R: Serialize>(
    head: &serde_json::Value,
    rows: Option<(&str, &[R])>,
    keys: Option<&Keyring>,
) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    write_with_rows(head, rows, keys, &mut out)?;
    Ok(out)
}

/// [`encode_with_rows`], written to `out` as it is made: neither the
/// document nor the message its seal covers is held whole (but under a
/// signing key, whose signature needs the whole message).
pub fn write_with_rows<R: Serialize>(
    head: &serde_json::Value,
    rows: Option<(&str, &[R])>,
    keys: Option<&Keyring>,
    out: &mut dyn std::io::Write,
) -> Result<()> {
    let Some(head) = head.as_object() else {
        anyhow::bail!("a sealed document must be a JSON object");
    };
    if head.contains_key(FIELD) || rows.is_some_and(|(name, _)| name == FIELD) {
        anyhow::bail!("a sealed document cannot have its own {FIELD:?} member");
    }
    if rows.is_some_and(|(name, _)| head.contains_key(name)) {
        anyhow::bail!("a document's rows cannot have the name of another member");
    }
    let mut doc = Members {
        head,
        rows,
        seal: None,
    };
    let mut seal = None;
    if let Some(keys) = keys {
        let sealing = Sealing::of(keys)?;
        let (tag, escrow) = match sealing {
            Sealing::Mac(mac, _) => {
                // The key's HMAC and each escrow's, fed as the message is
                // serialized.
                let escrows = keys.escrow();
                let mut macs: Vec<hmac::Context> = std::iter::once(mac)
                    .chain(escrows.iter().map(|e| e.seal_key()))
                    .map(hmac::Context::with_key)
                    .collect();
                serde_json::to_writer(MacFeed(&mut macs), &doc)?;
                let mut tags = macs.into_iter().map(|m| hex::encode(m.sign().as_ref()));
                let tag = tags.next();
                let escrow = escrows
                    .iter()
                    .zip(tags)
                    .map(|(e, hmac)| EscrowSeal {
                        key_id: e.id().to_string(),
                        hmac,
                    })
                    .collect();
                (tag, escrow)
            }
            Sealing::Sign(_) => {
                let message = serde_json::to_vec(&doc)?;
                let tag = Some(hex::encode(sealing.seal(&message)));
                (tag, sealing.escrow_seals(keys, &message))
            }
        };
        let s = match sealing {
            Sealing::Sign(signer) => Seal {
                key_id: signer.id().to_string(),
                hmac: None,
                ed25519: tag,
                escrow,
            },
            Sealing::Mac(_, id) => Seal {
                key_id: id.to_string(),
                hmac: tag,
                ed25519: None,
                escrow,
            },
        };
        seal = Some(serde_json::to_value(s)?);
    }
    doc.seal = seal.as_ref();
    use std::io::Write as _;
    let mut out = std::io::BufWriter::with_capacity(1 << 16, out);
    serde_json::to_writer_pretty(&mut out, &doc)?;
    out.flush()?;
    Ok(())
}

/// Feeds what is written to each of a seal's HMACs.
struct MacFeed<'a>(&'a mut [hmac::Context]);

impl std::io::Write for MacFeed<'_> {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.iter_mut().for_each(|m| m.update(b));
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// A document's members as a JSON object holds them (in order of name),
/// its rows turned into JSON one at a time.
struct Members<'a, R> {
    head: &'a serde_json::Map<String, serde_json::Value>,
    rows: Option<(&'a str, &'a [R])>,
    seal: Option<&'a serde_json::Value>,
}

impl<R: Serialize> Serialize for Members<'_, R> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let rows = self.rows.map(|(name, _)| name);
        let mut names: Vec<&str> = self.head.keys().map(String::as_str).collect();
        names.extend(rows);
        names.extend(self.seal.map(|_| FIELD));
        names.sort_unstable();
        let mut m = s.serialize_map(Some(names.len()))?;
        for name in names {
            match (self.rows, self.seal) {
                (Some((n, rows)), _) if n == name => m.serialize_entry(name, &Rows(rows))?,
                (_, Some(seal)) if name == FIELD => m.serialize_entry(name, seal)?,
                _ => m.serialize_entry(name, &self.head[name])?,
            }
        }
        m.end()
    }
}

struct Rows<'a, R>(&'a [R]);

impl<R: Serialize> Serialize for Rows<'_, R> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        use serde::ser::{Error, SerializeSeq};
        let mut q = s.serialize_seq(Some(self.0.len()))?;
        for r in self.0 {
            // As `to_value` gives it: its members in order of name.
            let v = serde_json::to_value(r).map_err(S::Error::custom)?;
            q.serialize_element(&v)?;
        }
        q.end()
    }
}

/// A short seal of `message` as hex, for a name that must prove itself (a WAL
/// segment's object key, see `wal.rs`): this host's Ed25519 signature when it
/// has a signing key, else the current key's HMAC, else (no keys: nothing can
/// be proven) SHA-256 of the message. Deterministic, so that the same message
/// always gives the same tag.
pub fn tag(keys: Option<&Keyring>, message: &[u8]) -> Result<String> {
    let Some(keys) = keys else {
        return Ok(crate::stages::hash::hex(&sha2::Sha256::digest(message)));
    };
    Ok(hex::encode(Sealing::of(keys)?.tag(keys, message)))
}

/// What [`tag_check`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Tagged {
    /// The current key, or a signer within its scope, made it (or a
    /// rotated-out key, where a sealed list records the object).
    Verifies,
    /// A trusted signer made it, for something outside its scope: the words
    /// for an error (the signer, its scope, what the tag claims).
    OutOfScope(String),
    /// Only a key kept to decrypt (rotated out) made it: believed only where
    /// a sealed list records the object (a holder of the old key could have
    /// made it since the rotation).
    OldKey,
    /// Nobody trusted made it.
    Fails,
}

/// Whether `tag` is [`tag`] of `message` under the current key, or by a
/// trusted signer whose scope covers `claim` (what the tagged object is: a
/// WAL file's kind and system), or only under a rotated-out key
/// ([`Tagged::OldKey`]); with no keys, whether it is the message's SHA-256.
pub fn tag_check(keys: Option<&Keyring>, message: &[u8], tag: &str, claim: &Claim) -> Tagged {
    let Ok(raw) = hex::decode(tag) else {
        return Tagged::Fails;
    };
    let Some(keys) = keys else {
        let ok = raw.as_slice() == sha2::Sha256::digest(message).as_slice();
        return if ok { Tagged::Verifies } else { Tagged::Fails };
    };
    let by = |k: &hmac::Key| mac_ok(k, message, &raw);
    if keys.current().seal_key().is_some_and(by) {
        return Tagged::Verifies;
    }
    let mut out = if keys.seal_keys().any(by) {
        Tagged::OldKey
    } else {
        Tagged::Fails
    };
    for s in keys
        .signers()
        .iter()
        .filter(|s| s.verifier.verify(message, &raw))
    {
        match s.refuses(claim) {
            None => return Tagged::Verifies,
            Some(breaks) => {
                out = Tagged::OutOfScope(format!(
                    "is tagged by signer {}, whose scope ({}) does not include {breaks}: a write-only host names only its own systems' files",
                    s.verifier.id,
                    s.describe_scope()
                ))
            }
        }
    }
    out
}

/// Whether `tag` is [`tag`] of `message` under a key that seals now: the
/// current key or a trusted signer, not an old key (a catalog tagged by a
/// rotated-out key is not believed; the manifests are read instead).
pub fn tag_verifies_now(keys: Option<&Keyring>, message: &[u8], tag: &str) -> bool {
    let Some(keys) = keys else {
        return tag_check(None, message, tag, &Claim::default()) == Tagged::Verifies;
    };
    let Ok(raw) = hex::decode(tag) else {
        return false;
    };
    tag_verifies_by_current_key(keys, message, &raw)
        || keys
            .signers()
            .iter()
            .any(|s| s.verifier.verify(message, &raw))
}

/// Whether `raw` is a tag ([`tag`]) of `message` by the current key.
pub fn tag_verifies_by_current_key(keys: &Keyring, message: &[u8], raw: &[u8]) -> bool {
    keys.current()
        .seal_key()
        .is_some_and(|k| mac_ok(k, message, raw))
}

/// A document read from the store, its seal checked if it had one.
#[derive(Debug)]
pub struct Opened {
    /// Every member but the seal.
    pub value: serde_json::Value,
    /// Whether it carried a seal that verified (always `false` when the trust
    /// has no keys: then nothing was checked).
    pub sealed: bool,
    /// Who sealed it, when `sealed` ([`sealer_known`] checks it again later).
    pub sealer: Option<String>,
}

/// The name of the key (`hmac:{id}`) or signer (`ed25519:{id}`) that seals
/// what this host writes, as [`encode`] chooses it.
pub fn own_sealer(keys: Option<&Keyring>) -> Option<String> {
    Sealing::of(keys?).ok().map(|s| s.name())
}

/// Whether the key, signer or list named by [`Trust::vouch`] still vouches
/// for a document under `trust`: a signer removed from the config (a stolen
/// host's) no longer vouches for what it sealed, wherever a copy of its
/// verdict was kept; a key rotated out vouches for nothing; a list entry
/// only while a believed list holds it. Without keys nothing is checked, so
/// anything passes.
pub fn sealer_known(trust: &Trust, sealer: Option<&str>) -> bool {
    if trust.keys().is_none() {
        return true;
    }
    match sealer {
        Some(s) if s.starts_with(LEGACY) => trust
            .lists()
            .is_ok_and(|l| l.has_digest(&s[LEGACY.len()..])),
        Some(s) => trust.seals_now(s),
        None => false,
    }
}

/// Parses `bytes` as a JSON object and checks its seal, if any, against the
/// configured keys. `what` names the document in errors (e.g. "manifest
/// manifests/duckdb/….json"). A seal that does not verify, or names a key
/// that is not configured, is a data error; a missing seal is for the caller
/// to judge (see [`Trust::excuses`]).
pub fn open(bytes: &[u8], what: &str, trust: &Trust) -> Result<Opened> {
    let malformed = || coded(Code::Integrity, format!("{what} is not valid JSON"));
    let mut value: serde_json::Value = serde_json::from_slice(bytes).map_err(|_| malformed())?;
    let obj = value.as_object_mut().ok_or_else(malformed)?;
    let raw = obj.remove(FIELD);
    let Some(keys) = trust.keys() else {
        return Ok(Opened {
            value,
            sealed: false,
            sealer: None,
        });
    };
    let Some(raw) = raw else {
        return Ok(Opened {
            value,
            sealed: false,
            sealer: None,
        });
    };
    let bad_seal = || coded(Code::Integrity, format!("{what} has a malformed seal"));
    let seal: Seal = serde_json::from_value(raw).map_err(|_| bad_seal())?;
    let unknown = |kind: &str, add: &str| {
        coded(
            Code::Integrity,
            format!(
                "{what} is sealed with {kind} {:?}, which is not configured: {add} if it is yours; otherwise the document is not from this installation",
                printable(&seal.key_id)
            ),
        )
    };
    let forged = || {
        coded(
            Code::Integrity,
            format!("{what} does not match its seal: it was altered or forged; it is not used"),
        )
    };
    let message = canonical(&value)?;
    let sealer = match (&seal.hmac, &seal.ed25519) {
        // The writer's key is not held, an escrow's identity is: its seal.
        (Some(_), None) if keys.find(&seal.key_id).and_then(|k| k.seal_key()).is_none() => {
            let (e, key) = seal
                .escrow
                .iter()
                .find_map(|e| Some((e, keys.find(&e.key_id)?.seal_key()?)))
                .ok_or_else(|| unknown("key id", "add that key to [encryption] (or [[encryption.old_keys]], or identity_files)"))?;
            let tag = hex::decode(&e.hmac).map_err(|_| bad_seal())?;
            hmac::verify(key, &message, &tag).map_err(|_| forged())?;
            format!("hmac:{}", e.key_id)
        }
        (Some(tag), None) => {
            let key = keys
                .find(&seal.key_id)
                .and_then(|k| k.seal_key())
                .ok_or_else(|| unknown("key id", "add that key to [encryption] (or [[encryption.old_keys]], or identity_files)"))?;
            let tag = hex::decode(tag).map_err(|_| bad_seal())?;
            hmac::verify(key, &message, &tag).map_err(|_| forged())?;
            format!("hmac:{}", seal.key_id)
        }
        (None, Some(sig)) => {
            let signer = keys.signer(&seal.key_id).ok_or_else(|| {
                unknown(
                    "signer",
                    "add the writing host's signer (`bkp-ed25519:…`), with its scope, as an [[encryption.signer]]",
                )
            })?;
            let sig = hex::decode(sig).map_err(|_| bad_seal())?;
            if !signer.verify(&message, &sig) {
                return Err(forged());
            }
            format!("ed25519:{}", seal.key_id)
        }
        _ => return Err(bad_seal()),
    };
    Ok(Opened {
        value,
        sealed: true,
        sealer: Some(sealer),
    })
}

/// The id of the key or signer that sealed the document `bytes`, if it has
/// a seal, and whether this trust holds that key or signer.
pub fn sealer(bytes: &[u8], trust: &Trust) -> Option<(String, bool)> {
    let v: serde_json::Value = serde_json::from_slice(bytes).ok()?;
    let seal: Seal = serde_json::from_value(v.get(FIELD)?.clone()).ok()?;
    let holds = |k: &Keyring, id: &str| k.find(id).and_then(|m| m.seal_key()).is_some();
    let known = trust.keys().is_some_and(|k| {
        if seal.ed25519.is_some() {
            k.signer(&seal.key_id).is_some()
        } else {
            holds(k, &seal.key_id)
        }
    });
    if !known && seal.ed25519.is_none() {
        let by_escrow = trust
            .keys()
            .and_then(|k| seal.escrow.iter().find(|e| holds(k, &e.key_id)));
        if let Some(e) = by_escrow {
            return Some((printable(&e.key_id), true));
        }
    }
    Some((printable(&seal.key_id), known))
}

/// Whether the document `bytes` carries a seal of `escrow` that verifies
/// (a host holds each escrow's seal key).
pub fn escrow_sealed(bytes: &[u8], escrow: &crate::crypto::Escrow) -> bool {
    let Ok(mut v) = serde_json::from_slice::<serde_json::Value>(bytes) else {
        return false;
    };
    let Some(raw) = v.as_object_mut().and_then(|o| o.remove(FIELD)) else {
        return false;
    };
    let Ok(seal) = serde_json::from_value::<Seal>(raw) else {
        return false;
    };
    let Ok(message) = canonical(&v) else {
        return false;
    };
    seal.escrow.iter().any(|e| {
        e.key_id == escrow.id()
            && hex::decode(&e.hmac)
                .is_ok_and(|t| hmac::verify(escrow.seal_key(), &message, &t).is_ok())
    })
}

/// `bytes` without its seal, when the seal is an HMAC of the key whose
/// public recipient this (write-only) config holds: the host cannot check
/// it (only the key holder can), but the document names this installation's
/// key. `None` for any other document.
pub fn of_own_recipient(bytes: &[u8], trust: &Trust) -> Option<serde_json::Value> {
    let mut v: serde_json::Value = serde_json::from_slice(bytes).ok()?;
    let seal: Seal = serde_json::from_value(v.get(FIELD)?.clone()).ok()?;
    let key = trust.keys()?.find(&seal.key_id)?;
    if seal.hmac.is_none() || seal.ed25519.is_some() || key.seal_key().is_some() {
        return None;
    }
    v.as_object_mut()?.remove(FIELD);
    Some(v)
}

/// The error for an unsealed document where a seal is required.
pub fn unsealed_error(what: &str, id: BackupId) -> anyhow::Error {
    coded(
        Code::Integrity,
        format!(
            "{what} has no seal, but [encryption] is configured: it may have been written by someone without the key, so it is not used. If it is a backup from before sealing, record the store's unsealed manifests once with `bkp trust-legacy` (a sealed list of their exact bytes; [encryption] unsealed_before limits it to older backups), or accept this one backup with `--trust {id}`"
        ),
    )
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::crypto::MasterKey;
    use crate::exit::classify;

    fn ring(b: u8) -> Keyring {
        Keyring::new(MasterKey::from_bytes([b; 32]), Vec::new())
    }

    fn trust(b: u8) -> Trust {
        Trust::new(Some(ring(b)), None, vec![])
    }

    fn doc() -> serde_json::Value {
        serde_json::json!({"id": "x", "retention_days": 365, "objects": [{"key": "a", "size": 1}], "f": 0.1})
    }

    /// A host's keyring with an escrow, and the escrow identity's trust.
    fn escrowed(b: u8) -> (Keyring, Trust) {
        let (text, _) = crate::crypto::pubkey::generate_identity().unwrap();
        let identity = MasterKey::identity(text.as_bytes(), "identity").unwrap();
        let file = identity.escrow_text().unwrap();
        let escrow = crate::crypto::Escrow::from_text(file.as_bytes(), "escrow").unwrap();
        let host = ring(b).with_escrow(vec![escrow]);
        let vault = Trust::new(Some(Keyring::new(identity, vec![])), None, vec![]);
        (host, vault)
    }

    #[test]
    fn a_tag_made_in_parts_is_the_tag_made_whole() {
        let message: Vec<u8> = (0..100_000u32).map(|i| (i * 7 % 251) as u8).collect();
        let (escrowed, _) = escrowed(7);
        for keys in [None, Some(ring(3)), Some(escrowed)] {
            let mut maker = TagMaker::new(keys.as_ref()).unwrap().unwrap();
            for part in message.chunks(4099) {
                maker.update(part);
            }
            assert_eq!(maker.finish(), tag(keys.as_ref(), &message).unwrap());
        }
        // A signature needs the whole message.
        let (host, _, _) = host_and_scoped_reader();
        assert!(TagMaker::new(Some(&host)).unwrap().is_none());
    }

    #[test]
    fn a_document_written_row_by_row_is_the_document_written_whole() {
        #[derive(Serialize)]
        struct Row {
            id: u32,
            // Members out of order, as a struct may declare them.
            bytes: u64,
            kind: &'static str,
        }
        let rows: Vec<Row> = (0..3)
            .map(|i| Row {
                id: i,
                bytes: u64::from(i) * 10,
                kind: "tigerbeetle",
            })
            .collect();
        let head = serde_json::json!({"schema": "bkp.report/1.0", "zeta": [1, 2], "alpha": {"b": 1, "a": 2}});
        let mut whole = head.clone();
        whole["middle"] = serde_json::to_value(&rows).unwrap();
        let (escrowed, _) = escrowed(7);
        for keys in [None, Some(ring(3)), Some(escrowed)] {
            let streamed =
                encode_with_rows(&head, Some(("middle", &rows[..])), keys.as_ref()).unwrap();
            assert_eq!(
                String::from_utf8(streamed).unwrap(),
                String::from_utf8(encode(&whole, keys.as_ref()).unwrap()).unwrap()
            );
        }
        // A name the document has already, or the seal's, is refused.
        for name in ["alpha", FIELD] {
            assert!(encode_with_rows(&head, Some((name, &rows[..])), None).is_err());
        }
    }

    #[test]
    fn the_escrow_identity_believes_what_a_host_with_its_escrow_sealed_and_tagged() {
        let (host, vault) = escrowed(7);
        let bytes = encode(&doc(), Some(&host)).unwrap();
        // The key holder reads it as before.
        assert_eq!(
            open(&bytes, "d", &trust(7)).unwrap().sealer.unwrap(),
            format!("hmac:{}", ring(7).current().id())
        );
        // The escrow's identity, as the current key: a key holder's seal.
        let o = open(&bytes, "d", &vault).unwrap();
        let sealer = o.sealer.unwrap();
        assert!(vault.is_key_holder(&sealer), "{sealer}");
        assert_eq!(o.value, doc());
        assert!(sealer_known(&vault, Some(&sealer)));
        // Any edit fails the escrow's seal too.
        let mut v: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        v["retention_days"] = 1.into();
        let err = open(&serde_json::to_vec(&v).unwrap(), "d", &vault).unwrap_err();
        assert_eq!(classify(&err), Some(Code::Integrity));
        // A tag: both halves, each holder checks its own.
        let t = tag(Some(&host), b"wal message").unwrap();
        assert_eq!(t.len(), 64);
        assert_eq!(
            tag(Some(&host), b"wal message").unwrap(),
            t,
            "deterministic"
        );
        let none = Claim::default();
        assert_eq!(
            tag_check(Some(&ring(7)), b"wal message", &t, &none),
            Tagged::Verifies
        );
        assert_eq!(
            tag_check(vault.keys(), b"wal message", &t, &none),
            Tagged::Verifies
        );
        assert_eq!(
            tag_check(vault.keys(), b"other message", &t, &none),
            Tagged::Fails
        );
        assert_eq!(
            tag_check(Some(&ring(8)), b"wal message", &t, &none),
            Tagged::Fails
        );
        assert!(tag_verifies_now(vault.keys(), b"wal message", &t));
    }

    #[test]
    fn an_escrow_seal_alone_is_not_believed_where_only_the_escrow_file_is_held() {
        // A host holds the escrow's seal key (its file), not its identity: a
        // document sealed by another key with a genuine escrow seal is a
        // stranger's to it. (A thief of some host holds that file.)
        let (host, _) = escrowed(7);
        let stranger = Keyring::new(MasterKey::from_bytes([9; 32]), vec![]);
        let mut v: serde_json::Value =
            serde_json::from_slice(&encode(&doc(), Some(&stranger)).unwrap()).unwrap();
        let message = canonical(&doc()).unwrap();
        let e = &host.escrow()[0];
        v[FIELD]["escrow"] = serde_json::json!([{
            "key_id": e.id(),
            "hmac": hex::encode(hmac::sign(e.seal_key(), &message)),
        }]);
        let bytes = serde_json::to_vec(&v).unwrap();
        // A tag made with the escrow's half only, likewise.
        let half = hex::encode(&hmac::sign(e.seal_key(), b"m").as_ref()[..TAG_PART]);
        let forged = format!("{}{half}", "00".repeat(TAG_PART));
        let at_host = Trust::new(Some(host), None, vec![]);
        let err = open(&bytes, "d", &at_host).unwrap_err();
        assert!(format!("{err:#}").contains("not configured"), "{err:#}");
        assert_eq!(
            tag_check(at_host.keys(), b"m", &forged, &Claim::default()),
            Tagged::Fails
        );
    }

    #[test]
    fn a_sealed_document_opens_and_any_edit_is_refused() {
        let bytes = encode(&doc(), Some(&ring(7))).unwrap();
        let o = open(&bytes, "d", &trust(7)).unwrap();
        assert!(o.sealed);
        assert_eq!(o.value, doc());

        let sealed: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        let edits: Vec<(&str, serde_json::Value)> = vec![
            ("id", "y".into()),
            ("retention_days", 1.into()),
            ("objects", serde_json::json!([])),
            ("new_member", true.into()),
        ];
        for (field, value) in edits {
            let mut v = sealed.clone();
            v[field] = value;
            let e = open(&serde_json::to_vec(&v).unwrap(), "d", &trust(7)).expect_err(field);
            assert_eq!(classify(&e), Some(Code::Integrity), "{field}");
        }
        // Re-ordered and re-indented, it still verifies: the seal covers content.
        let compact = serde_json::to_vec(&sealed).unwrap();
        assert!(open(&compact, "d", &trust(7)).unwrap().sealed);
    }

    #[test]
    fn a_foreign_key_or_a_broken_seal_is_refused_and_a_missing_one_reported() {
        let other = encode(&doc(), Some(&ring(8))).unwrap();
        let e = open(&other, "d", &trust(7)).unwrap_err();
        assert_eq!(classify(&e), Some(Code::Integrity));
        assert!(format!("{e:#}").contains("not configured"), "{e:#}");

        let mut v: serde_json::Value = serde_json::from_slice(&other).unwrap();
        v[FIELD]["hmac"] = "zz".into();
        let e = open(&serde_json::to_vec(&v).unwrap(), "d", &trust(8)).unwrap_err();
        assert_eq!(classify(&e), Some(Code::Integrity));

        let plain = encode(&doc(), None).unwrap();
        assert!(!open(&plain, "d", &trust(7)).unwrap().sealed);
        assert!(!open(&plain, "d", &Trust::none()).unwrap().sealed);
        let e = open(b"[1]", "d", &trust(7)).unwrap_err();
        assert_eq!(classify(&e), Some(Code::Integrity));
    }

    #[test]
    fn a_passphrase_seals_differently_from_a_raw_key_with_the_same_id() {
        let pass = MasterKey::from_passphrase("correct horse".into(), Some("k".into())).unwrap();
        let raw = MasterKey::from_bytes([1; 32]).with_id("k".into());
        let by_pass = encode(&doc(), Some(&Keyring::new(pass, vec![]))).unwrap();
        let t = Trust::new(Some(Keyring::new(raw, vec![])), None, vec![]);
        assert!(open(&by_pass, "d", &t).is_err());
    }

    #[test]
    fn excuses_follow_the_configuration() {
        let at = OffsetDateTime::from_unix_timestamp(1_760_140_800).unwrap();
        let id = BackupId::new_v7(at);
        assert!(Trust::none().excuses(id));
        assert!(!trust(7).excuses(id));
        assert!(Trust::new(Some(ring(7)), None, vec![id]).excuses(id));
        // The id's time is the writer's choice: it excuses nothing.
        let hour = time::Duration::HOUR;
        assert!(!Trust::new(Some(ring(7)), Some(at + hour), vec![]).excuses(id));
    }

    #[test]
    fn an_old_key_verifies_but_seals_nothing_new_unless_a_list_records_it() {
        let old = MasterKey::from_bytes([1; 32]).with_id("old".into());
        let rotated = || {
            Keyring::new(
                MasterKey::from_bytes([2; 32]).with_id("new".into()),
                vec![MasterKey::from_bytes([1; 32]).with_id("old".into())],
            )
        };
        let by_old = encode(&doc(), Some(&Keyring::new(old, vec![]))).unwrap();
        let t = Trust::new(Some(rotated()), None, vec![]);
        let o = open(&by_old, "d", &t).unwrap();
        assert_eq!(o.sealer.as_deref(), Some("hmac:old"));
        assert!(!t.seals_now("hmac:old") && t.seals_now("hmac:new"));
        let e = t.vouch(o.sealer.as_deref(), "k", &by_old, "d").unwrap_err();
        assert_eq!(classify(&e), Some(Code::Integrity));
        assert!(format!("{e:#}").contains("bkp trust-legacy"), "{e:#}");
        assert!(!sealer_known(&t, Some("hmac:old")));
        assert!(sealer_known(&t, Some("hmac:new")));

        // A list (as the store would hold it) that records these bytes at k.
        let digest = crate::stages::hash::hex(&sha2::Sha256::digest(&by_old));
        let allowed = Allowed::of(&[("k", digest.as_str())]);
        let t = t.with_lists(Lists::new(move |_| Ok(allowed.clone())));
        let v = t.vouch(o.sealer.as_deref(), "k", &by_old, "d").unwrap();
        assert_eq!(v, Some(format!("{LEGACY}{digest}")));
        assert!(sealer_known(&t, v.as_deref()));
        // Elsewhere, or with other bytes, it is not recorded.
        assert!(t.vouch(o.sealer.as_deref(), "k2", &by_old, "d").is_err());
        let plain = encode(&doc(), None).unwrap();
        assert_eq!(t.vouch(None, "k", &plain, "d").unwrap(), None);
        assert!(!sealer_known(&t, Some("legacy:00")));

        // A tag: an old key's is told apart from the current key's, and only
        // the current key's is believed.
        let old_only = Keyring::new(MasterKey::from_bytes([1; 32]).with_id("old".into()), vec![]);
        let by_old = tag(Some(&old_only), b"catalog").unwrap();
        let any = Claim::default();
        assert_eq!(
            tag_check(Some(&rotated()), b"catalog", &by_old, &any),
            Tagged::OldKey
        );
        assert_eq!(
            tag_check(Some(&old_only), b"catalog", &by_old, &any),
            Tagged::Verifies
        );
        assert_eq!(
            tag_check(Some(&rotated()), b"other", &by_old, &any),
            Tagged::Fails
        );
        assert!(!tag_verifies_now(Some(&rotated()), b"catalog", &by_old));
        let by_new = tag(Some(&rotated()), b"catalog").unwrap();
        assert!(tag_verifies_now(Some(&rotated()), b"catalog", &by_new));
    }

    #[test]
    fn a_write_only_host_signs_and_a_reader_trusts_only_listed_signers() {
        use crate::crypto::pubkey::{
            generate_identity, generate_signing_key, SigningKey, Verifier,
        };
        let (_, recipient) = generate_identity().unwrap();
        let (key, signer) = generate_signing_key().unwrap();
        let host = Keyring::new(MasterKey::recipient(&recipient).unwrap(), vec![]).with_signing(
            Some(SigningKey::from_text(key.as_bytes(), "k").unwrap()),
            vec![],
        );
        let bytes = encode(&doc(), Some(&host)).unwrap();
        let sealed: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        assert!(sealed[FIELD]["ed25519"].is_string() && sealed[FIELD]["hmac"].is_null());
        // The host verifies its own; a reader that lists the signer does too.
        let own = Trust::new(Some(host), None, vec![]);
        assert!(open(&bytes, "d", &own).unwrap().sealed);
        let reader = Keyring::new(MasterKey::from_bytes([3; 32]), vec![])
            .with_signing(None, vec![Verifier::parse(&signer).unwrap()]);
        let reader = Trust::new(Some(reader), None, vec![]);
        assert!(open(&bytes, "d", &reader).unwrap().sealed);
        // An edit, or a signer nobody listed, is refused.
        let mut v = sealed.clone();
        v["retention_days"] = 1.into();
        let e = open(&serde_json::to_vec(&v).unwrap(), "d", &reader).unwrap_err();
        assert!(format!("{e:#}").contains("altered or forged"), "{e:#}");
        let e = open(&bytes, "d", &trust(3)).unwrap_err();
        assert!(format!("{e:#}").contains("signer"), "{e:#}");
        // A recipient without a signing key cannot seal at all.
        let bare = Keyring::new(MasterKey::recipient(&recipient).unwrap(), vec![]);
        assert!(encode(&doc(), Some(&bare)).is_err());
    }

    /// A write-only host with a fresh signing key, and a key holder (key
    /// byte 3) that trusts that signer for host pg2, kind postgres and
    /// PostgreSQL system 11 only; with the signer's public text.
    pub(crate) fn host_and_scoped_reader() -> (Keyring, Keyring, String) {
        use crate::crypto::pubkey::{generate_signing_key, SigningKey, Verifier};
        use crate::crypto::SignerScope;
        let (key, signer) = generate_signing_key().unwrap();
        let host = Keyring::new(MasterKey::from_bytes([9; 32]), vec![]).with_signing(
            Some(SigningKey::from_text(key.as_bytes(), "k").unwrap()),
            vec![],
        );
        let scope = SignerScope {
            hosts: vec!["pg2".into()],
            kinds: vec![Kind::Postgres],
            postgres_systems: vec![11],
            tigerbeetle_clusters: vec![],
        };
        let reader = Keyring::new(MasterKey::from_bytes([3; 32]), vec![])
            .with_scoped_signers(None, vec![(Verifier::parse(&signer).unwrap(), scope)]);
        (host, reader, signer)
    }

    #[test]
    fn a_signer_tags_only_within_its_scope_and_never_holds_the_key() {
        let (host, reader, signer) = host_and_scoped_reader();
        let wal = |system| Claim {
            kind: Some(Kind::Postgres),
            postgres_system: Some(system),
            ..Default::default()
        };
        let t = tag(Some(&host), b"segment").unwrap();
        assert_eq!(
            tag_check(Some(&reader), b"segment", &t, &wal(11)),
            Tagged::Verifies
        );
        match tag_check(Some(&reader), b"segment", &t, &wal(12)) {
            Tagged::OutOfScope(why) => assert!(why.contains("PostgreSQL system 12"), "{why}"),
            other => panic!("{other:?}"),
        }
        assert_eq!(
            tag_check(Some(&reader), b"other", &t, &wal(11)),
            Tagged::Fails
        );
        // The host trusts its own tags for anything; the key's tag verifies.
        assert_eq!(
            tag_check(Some(&host), b"segment", &t, &wal(12)),
            Tagged::Verifies
        );
        let by_key = tag(Some(&reader), b"segment").unwrap();
        assert_eq!(
            tag_check(Some(&reader), b"segment", &by_key, &wal(12)),
            Tagged::Verifies
        );

        let trust = Trust::new(Some(reader), None, vec![]);
        let id = crate::crypto::pubkey::Verifier::parse(&signer).unwrap().id;
        let sealer = format!("ed25519:{id}");
        assert!(trust.seals_now(&sealer) && !trust.is_key_holder(&sealer));
        assert!(!trust.trusts_list(&sealer));
        let current = format!("hmac:{}", MasterKey::from_bytes([3; 32]).id());
        assert!(trust.is_key_holder(&current));
        let claim = Claim {
            host: Some("db1"),
            kind: Some(Kind::Postgres),
            ..Default::default()
        };
        let e = trust
            .check_scope(Some(&sealer), &claim, "manifest m")
            .unwrap_err();
        assert_eq!(classify(&e), Some(Code::Integrity));
        let text = format!("{e:#}");
        assert!(
            text.contains(&id) && text.contains("host \"db1\"") && text.contains("hosts pg2"),
            "{text}"
        );
        assert!(trust
            .check_scope(Some(&current), &claim, "manifest m")
            .is_ok());
    }
}
