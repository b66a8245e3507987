//! Configured encryption keys: a raw key (from key text: raw bytes, hex or
//! base64) or a passphrase, its printable id, and the keyring of current and
//! older keys. Secrets are wiped when dropped and never printed.

use std::fmt;
use std::sync::OnceLock;

use base64::alphabet;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
use base64::engine::{DecodePaddingMode, Engine};
use ring::aead::LessSafeKey;
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use super::{aead_key, Params, DEFAULT_ITERATIONS, MAX_KEY_ID_LEN, PASSPHRASE_ID};
use crate::exit::{coded, Code};

/// Domain separation for the sealing key: changing it invalidates every seal.
const SEAL_INFO: &[u8] = b"bkp document seal v1";
/// Domain separation for chunk ids: changing it renames every chunk.
const CHUNK_ID_INFO: &[u8] = b"bkp chunk id v1";
/// Domain separation for chunk ids keyed by an X25519 exchange (see
/// [`MasterKey::new_chunk_naming`]).
const CHUNK_ID_EXCHANGE_INFO: &[u8] = b"bkp chunk id v2 x25519";
/// Domain separation for the X25519 secret a writer names chunks with: from
/// a write-only host's signing seed, or from an identity.
use super::CHUNK_NAMING_INFO;
/// Domain separation for the raw key a passphrase's chunks are encrypted with.
const CHUNK_KEY_INFO: &[u8] = b"bkp chunk key v1";
/// PBKDF2 iterations of that key: fixed, so that changing a passphrase's
/// configured iterations never changes the key its stored chunks need.
const CHUNK_KEY_ITERATIONS: u32 = 600_000;

use super::hkdf32;

/// The id of a raw key: `k-` and 16 lowercase hex digits of
/// SHA-256("bkp key id v1\0" || key). A fingerprint, safe to print and log.
pub fn key_id_of(key: &[u8; 32]) -> String {
    let digest = Sha256::new()
        .chain_update(b"bkp key id v1\0")
        .chain_update(key)
        .finalize();
    format!("k-{}", hex::encode(&digest[..8]))
}

/// Checks that `id` can name a key in a stream header: 1 to 64 printable
/// ASCII characters, no spaces. A Config error otherwise.
pub fn validate_key_id(id: &str) -> anyhow::Result<()> {
    if id.is_empty() || id.len() > MAX_KEY_ID_LEN || !id.bytes().all(|b| b.is_ascii_graphic()) {
        let msg =
            format!("key id {id:?} is invalid: use 1 to 64 printable ASCII characters, no spaces");
        return Err(coded(Code::Config, msg));
    }
    Ok(())
}

pub(super) enum Kind {
    Raw,
    Passphrase {
        iterations: u32,
    },
    /// An X25519 public key: encrypts only (a write-only host). Its
    /// `secret` is this host's chunk-naming secret once a signing key is
    /// configured ([`Keyring::with_signing`]), else empty.
    Recipient {
        public: [u8; 32],
    },
    /// An X25519 private key: decrypts what was encrypted to its recipient.
    Identity {
        public: [u8; 32],
    },
}

/// A configured key: 32 raw bytes or a passphrase, with the id that stream
/// headers name it by. The secret is zeroed on drop and never printed.
pub struct MasterKey {
    pub(super) id: String,
    pub(super) kind: Kind,
    secret: Zeroizing<Vec<u8>>,
    /// The document-sealing key, derived on first use.
    seal: OnceLock<ring::hmac::Key>,
}

impl MasterKey {
    /// A raw 32-byte key; its id is [`key_id_of`] the key.
    pub fn from_bytes(key: [u8; 32]) -> MasterKey {
        let key = Zeroizing::new(key);
        MasterKey {
            id: key_id_of(&key),
            kind: Kind::Raw,
            secret: Zeroizing::new(key.to_vec()),
            seal: OnceLock::new(),
        }
    }

    /// Reads a raw key from the contents of a key file (or similar): exactly
    /// 32 raw bytes, or 64 hex digits, or base64 of 32 bytes (standard
    /// alphabet, padding optional), with surrounding ASCII whitespace ignored
    /// in the text forms. `origin` names the source in errors, e.g. "key file
    /// /etc/bkp/key". Errors are Config errors and never quote the text.
    pub fn from_key_text(text: &[u8], origin: &str) -> anyhow::Result<MasterKey> {
        let mut key = Zeroizing::new([0u8; 32]);
        let t = text.trim_ascii();
        let problem = if text.len() == 32 {
            key.copy_from_slice(text);
            None
        } else if t.len() == 64 {
            let ok = hex::decode_to_slice(t, &mut key[..]).is_ok();
            (!ok).then(|| "it has 64 characters but not all are hex digits".to_string())
        } else if t.len() == 43 || t.len() == 44 {
            let ok = decode_base64(t, &mut key);
            (!ok).then(|| {
                format!(
                    "it has {} characters but is not base64 of 32 bytes",
                    t.len()
                )
            })
        } else {
            Some(format!(
                "it has {} bytes ({} without surrounding whitespace)",
                text.len(),
                t.len()
            ))
        };
        match problem {
            None => Ok(MasterKey::from_bytes(*key)),
            Some(problem) => Err(coded(
                Code::Config,
                format!(
                    "failed to read the encryption key from {origin}: {problem}; expected exactly \
                     32 raw bytes, 64 hex digits or base64 of 32 bytes: make one with \
                     `bkp key generate FILE` or `(umask 077; openssl rand -hex 32 > FILE)`"
                ),
            )),
        }
    }

    /// A passphrase: each stream's data key is wrapped under
    /// PBKDF2-HMAC-SHA256(passphrase, random salt, 600_000 iterations). The id
    /// defaults to "passphrase". An empty passphrase or an invalid id is a
    /// Config error.
    pub fn from_passphrase(pass: String, id: Option<String>) -> anyhow::Result<MasterKey> {
        let key = MasterKey {
            id: id.unwrap_or_else(|| PASSPHRASE_ID.to_string()),
            kind: Kind::Passphrase {
                iterations: DEFAULT_ITERATIONS,
            },
            secret: Zeroizing::new(pass.into_bytes()),
            seal: OnceLock::new(),
        };
        if key.secret.is_empty() {
            let msg = "the encryption passphrase is empty: set a long random passphrase";
            return Err(coded(Code::Config, msg));
        }
        validate_key_id(&key.id)?;
        Ok(key)
    }

    /// An X25519 recipient from its text form (`bkp-x25519:…`): new streams
    /// are encrypted to it, and this key cannot decrypt them.
    pub fn recipient(text: &str) -> anyhow::Result<MasterKey> {
        let public = super::pubkey::parse_recipient(text)?;
        Ok(MasterKey {
            id: super::pubkey::x25519_id(&public),
            kind: Kind::Recipient { public },
            secret: Zeroizing::new(Vec::new()),
            seal: OnceLock::new(),
        })
    }

    /// An X25519 identity from the contents of its file; `origin` names it.
    pub fn identity(text: &[u8], origin: &str) -> anyhow::Result<MasterKey> {
        let secret = super::pubkey::parse_identity(text, origin)?;
        let public = super::pubkey::x25519_public(&secret);
        Ok(MasterKey {
            id: super::pubkey::x25519_id(&public),
            kind: Kind::Identity { public },
            secret: Zeroizing::new(secret.to_vec()),
            seal: OnceLock::new(),
        })
    }

    /// The contents of the escrow file of this identity (see `escrow.rs`):
    /// `None` for any other key.
    pub fn escrow_text(&self) -> Option<Zeroizing<String>> {
        let Kind::Identity { public } = self.kind else {
            return None;
        };
        Some(super::escrow::Escrow::text(
            &public,
            &hkdf32(&self.secret, SEAL_INFO),
        ))
    }

    /// Whether this key can decrypt (it is not a public key only).
    pub fn decrypts(&self) -> bool {
        !matches!(self.kind, Kind::Recipient { .. })
    }

    /// Replaces the id (operators may label keys). An invalid id (see
    /// [`validate_key_id`]) makes [`EncryptWriter::new`](super::EncryptWriter::new) fail.
    pub fn with_id(mut self, id: String) -> MasterKey {
        self.id = id;
        self
    }

    /// The id stream headers name this key by; safe to print.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The HMAC-SHA256 key that seals (authenticates) the documents bkp stores
    /// beside its backups: manifests, tombstones, reports. Derived from the
    /// secret, never from the printable id: HKDF-SHA256 for a raw key;
    /// PBKDF2-HMAC-SHA256 with the key's iterations for a passphrase, so that a
    /// seal is no shortcut for guessing the passphrase. Computed once per run.
    /// `None` for a recipient (a public key holds no secret: a write-only host
    /// signs instead, see `pubkey.rs`).
    pub fn seal_key(&self) -> Option<&ring::hmac::Key> {
        if let Kind::Recipient { .. } = self.kind {
            return None;
        }
        Some(self.seal.get_or_init(|| {
            let k = match self.kind {
                Kind::Raw | Kind::Identity { .. } | Kind::Recipient { .. } => {
                    hkdf32(&self.secret, SEAL_INFO)
                }
                Kind::Passphrase { iterations } => self.stretch(iterations, SEAL_INFO),
            };
            ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &k[..])
        }))
    }

    /// PBKDF2-HMAC-SHA256 of the passphrase with `salt` and its iterations.
    fn stretch(&self, iterations: u32, salt: &[u8]) -> Zeroizing<[u8; 32]> {
        let mut k = Zeroizing::new([0u8; 32]);
        let n = std::num::NonZeroU32::MIN.saturating_add(iterations.saturating_sub(1));
        let alg = ring::pbkdf2::PBKDF2_HMAC_SHA256;
        ring::pbkdf2::derive(alg, n, salt, &self.secret, &mut k[..]);
        k
    }

    /// The key chunks (see `chunks.rs`) are encrypted with, under this key's id:
    /// the key itself, except that a passphrase gives a raw key derived once
    /// (PBKDF2 with its iterations), so that a chunk costs no PBKDF2 of its own.
    pub fn for_chunks(&self) -> MasterKey {
        let (kind, secret) = match self.kind {
            Kind::Passphrase { .. } => (
                Kind::Raw,
                self.stretch(CHUNK_KEY_ITERATIONS, CHUNK_KEY_INFO).to_vec(),
            ),
            Kind::Raw => (Kind::Raw, self.secret.to_vec()),
            Kind::Recipient { public } => (Kind::Recipient { public }, self.secret.to_vec()),
            Kind::Identity { public } => (Kind::Identity { public }, self.secret.to_vec()),
        };
        MasterKey {
            id: self.id.clone(),
            kind,
            secret: Zeroizing::new(secret),
            seal: OnceLock::new(),
        }
    }

    /// The secret the chunks of a naming `blake3:{alg}:{id}` (see `chunks.rs`)
    /// are keyed with: a raw key's (HKDF-SHA256 of the secret; call it on
    /// [`MasterKey::for_chunks`], on a passphrase it is `None`). For X25519
    /// keys it was derived from the public key, which every host encrypting to
    /// it holds: such names are only read now, never written (see
    /// [`MasterKey::new_chunk_naming`]).
    pub fn chunk_id_key(&self) -> Option<Zeroizing<[u8; 32]>> {
        match self.kind {
            Kind::Recipient { public } | Kind::Identity { public } => {
                Some(hkdf32(&public, CHUNK_ID_INFO))
            }
            Kind::Raw => Some(hkdf32(&self.secret, CHUNK_ID_INFO)),
            Kind::Passphrase { .. } => None,
        }
    }

    /// How this key names new chunks (call it on [`MasterKey::for_chunks`]):
    /// the secret ids are keyed with, and for X25519 keys the writer's public
    /// naming key `W` that the naming records. A chunk's name must be beyond
    /// the reach of anyone who could plant an object under it before the
    /// writer stores it, because a write-only host cannot read back what it
    /// finds there (see `chunks.rs`):
    ///
    /// - a raw key: [`MasterKey::chunk_id_key`], a secret of key holders;
    /// - X25519: the writer's naming secret `w` (from its signing key on a
    ///   write-only host, from the identity on a key holder), `W = w·G`, and
    ///   the key HKDF-SHA256(salt = W ‖ R, ikm = X25519(w, R), info) for the
    ///   recipient `R`: the writer computes it with `w`, a key holder with the
    ///   identity (X25519(r, W)), and no other host encrypting to `R`.
    ///
    /// `None` for a passphrase, and for a recipient without a signing key.
    pub fn new_chunk_naming(&self) -> Option<ChunkNaming> {
        let (own, public) = match self.kind {
            Kind::Raw => return self.chunk_id_key().map(|k| (k, None)),
            Kind::Passphrase { .. } => return None,
            Kind::Recipient { public } => {
                let mut w = Zeroizing::new([0u8; 32]);
                w.copy_from_slice(self.secret.get(..32)?);
                (w, public)
            }
            Kind::Identity { public } => (hkdf32(&self.secret, CHUNK_NAMING_INFO), public),
        };
        let writer = super::pubkey::x25519_public(&own);
        let shared = super::pubkey::exchange(&own, &public)?;
        Some((exchange_key(&shared, &writer, &public), Some(writer)))
    }

    /// The secret of chunks named by the writer whose public naming key is
    /// `writer` (see [`MasterKey::new_chunk_naming`]): only an identity
    /// computes it. `None` for other keys and for a degenerate `writer`.
    pub fn chunk_id_key_for(&self, writer: &[u8; 32]) -> Option<Zeroizing<[u8; 32]>> {
        let Kind::Identity { public } = self.kind else {
            return None;
        };
        let mut r = Zeroizing::new([0u8; 32]);
        r.copy_from_slice(self.secret.get(..32)?);
        let shared = super::pubkey::exchange(&r, writer)?;
        Some(exchange_key(&shared, writer, &public))
    }

    /// The parameters and key-encryption key for wrapping a new stream's data key.
    pub(super) fn new_wrap(
        &self,
        rng: &ring::rand::SystemRandom,
    ) -> std::io::Result<(Params, LessSafeKey)> {
        let params = match self.kind {
            Kind::Raw => Params::Key,
            Kind::Passphrase { iterations } => Params::Passphrase {
                // 600_000, or what a test set; never 0.
                iterations: std::num::NonZeroU32::new(iterations)
                    .unwrap_or(std::num::NonZeroU32::MIN),
                salt: super::random(rng)?,
            },
            Kind::Recipient { public } | Kind::Identity { public } => {
                let (ephemeral, kek) = super::pubkey::wrap_to(rng, &public)?;
                return Ok((Params::X25519 { ephemeral }, kek));
            }
        };
        let kek = self
            .kek(&params)
            .ok_or_else(|| std::io::Error::other("failed to derive a key"))?;
        Ok((params, kek))
    }

    #[cfg(test)]
    pub(super) fn with_iterations(mut self, n: u32) -> MasterKey {
        self.kind = Kind::Passphrase { iterations: n };
        self
    }

    pub(super) fn kind_name(&self) -> &'static str {
        match self.kind {
            Kind::Raw => "raw key",
            Kind::Passphrase { .. } => "passphrase",
            Kind::Recipient { .. } => "public-key recipient (it encrypts only)",
            Kind::Identity { .. } => "X25519 identity",
        }
    }

    /// The key-encryption key for `params`, or `None` if this key is of the
    /// other kind.
    pub(super) fn kek(&self, params: &Params) -> Option<LessSafeKey> {
        match (&self.kind, params) {
            (Kind::Raw, Params::Key) => Some(aead_key(&self.secret)),
            (Kind::Passphrase { .. }, Params::Passphrase { iterations, salt }) => {
                let mut k = Zeroizing::new([0u8; 32]);
                let alg = ring::pbkdf2::PBKDF2_HMAC_SHA256;
                ring::pbkdf2::derive(alg, *iterations, salt, &self.secret, &mut k[..]);
                Some(aead_key(&k[..]))
            }
            (Kind::Identity { .. }, Params::X25519 { ephemeral }) => {
                let mut secret = Zeroizing::new([0u8; 32]);
                secret.copy_from_slice(&self.secret);
                super::pubkey::unwrap_with(&secret, ephemeral)
            }
            _ => None,
        }
    }
}

impl fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MasterKey")
            .field("id", &self.id)
            .field("kind", &self.kind_name())
            .finish_non_exhaustive()
    }
}

/// The configured keys: `current` encrypts; any of them (matched by the id in
/// the stream header) decrypts, so old keys stay configured for restores.
#[derive(Debug)]
pub struct Keyring {
    current: MasterKey,
    others: Vec<MasterKey>,
    /// This host's signing key: it seals what the host writes.
    signing: Option<super::pubkey::SigningKey>,
    /// The signers whose seals are trusted (this host's own included), each
    /// within its scope.
    signers: Vec<Signer>,
    /// Escrows every new stream is also wrapped to, and every seal and tag
    /// also made for (see `escrow.rs`).
    escrow: Vec<super::escrow::Escrow>,
}

impl Keyring {
    pub fn new(current: MasterKey, others: Vec<MasterKey>) -> Keyring {
        Keyring {
            current,
            others,
            signing: None,
            signers: Vec::new(),
            escrow: Vec::new(),
        }
    }

    /// With escrows: new streams are also wrapped to each, and what this
    /// host seals is also sealed for each.
    pub fn with_escrow(mut self, escrow: Vec<super::escrow::Escrow>) -> Keyring {
        self.escrow = escrow;
        self
    }

    /// The escrows new streams are also wrapped to.
    pub fn escrow(&self) -> &[super::escrow::Escrow] {
        &self.escrow
    }

    /// With a signing key for this host's seals, and trusted signers without
    /// a scope (for tests: a configured signer always has one, see
    /// [`Keyring::with_scoped_signers`]). This host's own signer is trusted
    /// for everything: a thief of it holds the host already.
    pub fn with_signing(
        mut self,
        signing: Option<super::pubkey::SigningKey>,
        signers: Vec<super::pubkey::Verifier>,
    ) -> Keyring {
        self.signers = signers
            .into_iter()
            .map(|verifier| Signer {
                verifier,
                scope: None,
            })
            .collect();
        if let Some(s) = &signing {
            self.signers.push(Signer {
                verifier: s.verifier(),
                scope: None,
            });
            // A write-only host names its chunks with a secret of its own.
            if let Kind::Recipient { .. } = self.current.kind {
                self.current.secret = Zeroizing::new(s.naming_secret().to_vec());
            }
        }
        self.signing = signing;
        self
    }

    /// With a signing key for this host's seals, and the configured signers,
    /// each trusted only within its scope.
    pub fn with_scoped_signers(
        self,
        signing: Option<super::pubkey::SigningKey>,
        signers: Vec<(super::pubkey::Verifier, SignerScope)>,
    ) -> Keyring {
        let mut ring = self.with_signing(signing, Vec::new());
        let own = ring.signers.drain(..);
        let scoped = signers.into_iter().map(|(verifier, scope)| Signer {
            verifier,
            scope: Some(scope),
        });
        ring.signers = scoped.chain(own).collect();
        ring
    }

    pub fn signing(&self) -> Option<&super::pubkey::SigningKey> {
        self.signing.as_ref()
    }

    /// The trusted signer with id `id`.
    pub fn signer(&self, id: &str) -> Option<&super::pubkey::Verifier> {
        self.trusted_signer(id).map(|s| &s.verifier)
    }

    /// The trusted signer with id `id`, with its scope. This host's own
    /// signing key wins over a configured entry for the same key.
    pub fn trusted_signer(&self, id: &str) -> Option<&Signer> {
        // This host's own is pushed last.
        self.signers.iter().rev().find(|s| s.verifier.id == id)
    }

    /// The key new streams are encrypted with.
    pub fn current(&self) -> &MasterKey {
        &self.current
    }

    /// The first key with id `id`, looking at the current key first.
    pub fn find(&self, id: &str) -> Option<&MasterKey> {
        self.all().find(|k| k.id == id)
    }

    /// The seal keys of every configured key that has one, the current first.
    pub fn seal_keys(&self) -> impl Iterator<Item = &ring::hmac::Key> {
        self.all().filter_map(MasterKey::seal_key)
    }

    /// Whether a key kept only to decrypt could have sealed or tagged
    /// something (an old key with a seal key).
    pub fn has_old_seal_keys(&self) -> bool {
        self.others.iter().any(|k| k.seal_key().is_some())
    }

    /// The trusted signers, this host's own included.
    pub fn signers(&self) -> &[Signer] {
        &self.signers
    }

    pub(super) fn all(&self) -> impl Iterator<Item = &MasterKey> {
        std::iter::once(&self.current).chain(&self.others)
    }
}

/// The secret new chunk ids are keyed with, and for an X25519 naming the
/// writer's public naming key (see [`MasterKey::new_chunk_naming`]).
pub type ChunkNaming = (Zeroizing<[u8; 32]>, Option<[u8; 32]>);

/// The chunk-id secret of an X25519 naming: HKDF-SHA256(salt = writer ‖
/// recipient, ikm = shared, info).
fn exchange_key(shared: &[u8; 32], writer: &[u8; 32], recipient: &[u8; 32]) -> Zeroizing<[u8; 32]> {
    struct Len;
    impl ring::hkdf::KeyType for Len {
        fn len(&self) -> usize {
            32
        }
    }
    let salt = [&writer[..], &recipient[..]].concat();
    let mut k = Zeroizing::new([0u8; 32]);
    ring::hkdf::Salt::new(ring::hkdf::HKDF_SHA256, &salt)
        .extract(shared)
        .expand(&[CHUNK_ID_EXCHANGE_INFO], Len)
        .and_then(|okm| okm.fill(&mut k[..]))
        .expect("HKDF-SHA256 yields 32 bytes");
    k
}

/// A trusted signer (a write-only host's Ed25519 public key) and what it may
/// seal.
#[derive(Debug, Clone)]
pub struct Signer {
    pub verifier: super::pubkey::Verifier,
    /// `None` only for this host's own signing key (and in tests).
    pub scope: Option<SignerScope>,
}

impl Signer {
    /// Why a document claiming `claim` is outside this signer's scope, or
    /// `None` when it may seal it.
    pub fn refuses(&self, claim: &Claim) -> Option<String> {
        self.scope.as_ref()?.refuses(claim)
    }

    /// The scope for people: `hosts db1; kinds postgres; …`, or "everything".
    pub fn describe_scope(&self) -> String {
        match &self.scope {
            None => "everything (this host's own signing key)".into(),
            Some(s) => s.to_string(),
        }
    }
}

/// What one configured signer may seal (`[[encryption.signer]]`): documents
/// of these hosts and kinds, and, where a document names one, of these
/// PostgreSQL systems and TigerBeetle clusters. Every list is required where
/// it applies (see `config/encryption.rs`): nothing is "any".
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SignerScope {
    pub hosts: Vec<String>,
    pub kinds: Vec<crate::kinds::Kind>,
    pub postgres_systems: Vec<u64>,
    pub tigerbeetle_clusters: Vec<u128>,
}

/// What a sealed document says it is, as far as a signer's scope limits it:
/// the host that made it, its kind, the PostgreSQL system and TigerBeetle
/// cluster it is of. `None`: the document does not say (a WAL object names
/// no host); the scope is then not asked about it.
#[derive(Debug, Clone, Copy, Default)]
pub struct Claim<'a> {
    pub host: Option<&'a str>,
    pub kind: Option<crate::kinds::Kind>,
    pub postgres_system: Option<u64>,
    pub tigerbeetle_cluster: Option<u128>,
    /// What the document records in a form that cannot be read (e.g. a
    /// cluster id that is no number): outside every scope.
    pub unreadable: Option<&'static str>,
}

impl SignerScope {
    /// Why `claim` lies outside this scope (what it claims that the scope
    /// lacks), or `None` when inside.
    pub fn refuses(&self, c: &Claim) -> Option<String> {
        if let Some(what) = c.unreadable {
            return Some(format!("an unreadable {what}"));
        }
        if let Some(h) = c.host.filter(|h| !self.hosts.iter().any(|x| x == h)) {
            return Some(format!("host {:?}", crate::ui::printable(h)));
        }
        if let Some(k) = c.kind.filter(|k| !self.kinds.contains(k)) {
            return Some(format!("kind {}", k.as_str()));
        }
        if let Some(s) = c
            .postgres_system
            .filter(|s| !self.postgres_systems.contains(s))
        {
            return Some(format!("PostgreSQL system {s}"));
        }
        if let Some(t) = c
            .tigerbeetle_cluster
            .filter(|t| !self.tigerbeetle_clusters.contains(t))
        {
            return Some(format!("TigerBeetle cluster {t}"));
        }
        None
    }
}

impl fmt::Display for SignerScope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let list = |items: Vec<String>| items.join(", ");
        write!(f, "hosts {}", list(self.hosts.clone()))?;
        let kinds = self.kinds.iter().map(|k| k.as_str().to_string()).collect();
        write!(f, "; kinds {}", list(kinds))?;
        if !self.postgres_systems.is_empty() {
            let s = self.postgres_systems.iter().map(u64::to_string).collect();
            write!(f, "; PostgreSQL systems {}", list(s))?;
        }
        if !self.tigerbeetle_clusters.is_empty() {
            let c = self
                .tigerbeetle_clusters
                .iter()
                .map(u128::to_string)
                .collect();
            write!(f, "; TigerBeetle clusters {}", list(c))?;
        }
        Ok(())
    }
}

/// Decodes base64 (standard alphabet, `=` padding optional) of exactly 32
/// bytes; the spare bits of the last character must be zero.
fn decode_base64(text: &[u8], out: &mut [u8; 32]) -> bool {
    const KEY_BASE64: GeneralPurpose = GeneralPurpose::new(
        &alphabet::STANDARD,
        GeneralPurposeConfig::new()
            .with_decode_padding_mode(DecodePaddingMode::Indifferent)
            .with_decode_allow_trailing_bits(false),
    );
    // Room for any 44 characters, so that a wrong length is an error, not a panic.
    let mut buf = Zeroizing::new([0u8; 33]);
    match KEY_BASE64.decode_slice(text, &mut buf[..]) {
        Ok(32) => {
            out.copy_from_slice(&buf[..32]);
            true
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::assert_config;
    use super::*;

    fn key(byte: u8) -> MasterKey {
        MasterKey::from_bytes([byte; 32])
    }

    #[test]
    fn key_text_parsing() {
        let raw: [u8; 32] = std::array::from_fn(|i| (i * 7 + 3) as u8);
        let id = key_id_of(&raw);
        let hex: String = raw.iter().map(|b| format!("{b:02x}")).collect();
        let b64 = "AwoRGB8mLTQ7QklQV15lbHN6gYiPlp2kq7K5wMfO1dw=";
        let origin = "key file /etc/bkp/key";
        let parse = |t: &[u8]| MasterKey::from_key_text(t, origin);
        for good in [
            raw.to_vec(),
            hex.clone().into_bytes(),
            format!("  {}\n", hex.to_uppercase()).into_bytes(),
            b64.as_bytes().to_vec(),
            format!("{}\r\n", b64.trim_end_matches('=')).into_bytes(),
        ] {
            assert_eq!(parse(&good).unwrap().id(), id);
        }
        for (bad, needle) in [
            (hex.as_bytes()[..62].to_vec(), "62 bytes"),
            (raw[..31].to_vec(), "31 bytes"),
            (Vec::new(), "0 bytes"),
            (format!("{}zz", &hex[..62]).into_bytes(), "not all are hex"),
            (
                b"AwoRGB8mLTQ7QklQV15lbHN6gYiPlp2kq7K5wMfO1d-".to_vec(),
                "not base64",
            ),
            (
                b"AwoRGB8mLTQ7QklQV15lbHN6gYiPlp2kq7K5wMfO1dx".to_vec(),
                "not base64",
            ),
        ] {
            assert_config(parse(&bad), needle);
            let err = parse(&bad).unwrap_err().to_string();
            assert!(err.contains(origin) && err.contains("openssl rand -hex 32"));
            assert!(err.contains("bkp key generate FILE") && !err.contains(&hex[..8]));
        }
    }

    #[test]
    fn ids_and_debug_never_show_secrets() {
        let k = key(0xab);
        let id = k.id().to_string();
        assert!(id.starts_with("k-") && id.len() == 18 && id != key(0xac).id());
        assert!(id[2..]
            .bytes()
            .all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f')));
        let keys = Keyring::new(
            MasterKey::from_passphrase("hunter2".into(), None).unwrap(),
            Vec::new(),
        );
        let debug = format!("{k:?} {keys:?}");
        assert!(debug.contains(&id) && debug.contains("passphrase"));
        for secret in ["abab", "171", "hunter2"] {
            assert!(!debug.contains(secret), "{debug}");
        }
    }
}
