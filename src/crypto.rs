//! Authenticated encryption of backup streams: AES-256-GCM in chunks.
//!
//! Why the format is what it is:
//!
//! * AES-GCM seals a whole message in one call and authenticates it only at
//!   the end, so it cannot stream a backup of unknown size with bounded memory.
//!   The stream is therefore cut into fixed-size chunks, each sealed on its
//!   own, after age's STREAM construction: the nonce of every chunk holds its
//!   position (a counter) and whether it is the last one (a flag). A reader
//!   releases a chunk's plaintext only once that chunk authenticated, and
//!   detects reordered, duplicated or dropped chunks (wrong counter) and a
//!   stream cut at a chunk boundary (no chunk carries the final flag).
//! * Every stream has its own random data key, wrapped (encrypted) by the
//!   configured key. The header names the configured key by id, so keys can
//!   rotate: new backups use the current key, old keys stay configured for
//!   restores, and the reader picks the one the header names.
//! * The method byte leaves room for wrapping the data key to a public-key
//!   recipient (X25519) later, without a new format version.
//!
//! # Stream format v1, byte by byte
//!
//! All integers are big-endian. First `header_core`:
//!
//! | bytes      | field        | value |
//! |------------|--------------|-------|
//! | 8          | magic        | `BKPSTRM1` (the `1` is the format version) |
//! | 1          | method       | 1, 2 or 3, see below |
//! | 1          | chunk_log2   | log2 of the plaintext chunk size: 12..=24, written 16 (64 KiB) |
//! | 1          | key_id_len   | 1..=64 |
//! | key_id_len | key_id       | id of the configured key: printable ASCII, no spaces |
//! | 2          | params_len   | method 1: 0; method 2: 20 |
//! | params_len | params       | method 2: iterations (u32), then a random 16-byte salt |
//! | 7          | nonce_prefix | random |
//!
//! Methods: 1, a raw 32-byte key is the key-encryption key; 2, the
//! key-encryption key is PBKDF2-HMAC-SHA256(passphrase, salt, iterations),
//! iterations in 10_000..=10_000_000 (written: 600_000); 3, reserved for X25519
//! recipients, rejected as needing a newer bkp.
//!
//! Then the wrapped data key, 60 bytes: a random 12-byte nonce, then the 32
//! random bytes of the data key sealed with AES-256-GCM under the
//! key-encryption key with AAD = `header_core` (32 bytes ciphertext, 16 bytes
//! tag).
//!
//! Then the chunks, numbered from 0: each is the AES-256-GCM ciphertext of
//! `2^chunk_log2` plaintext bytes followed by its 16-byte tag, except the final
//! chunk, whose plaintext may be shorter, even empty. Every stream has exactly
//! one final chunk and it is the last thing in the stream: empty input gives
//! one empty final chunk; input that is a multiple of the chunk size ends with
//! a full chunk flagged final. Chunk `n` is sealed under the data key with:
//!
//! * nonce = `nonce_prefix` (7 bytes) || `n` (u32, 4 bytes) || 1 if final, else
//!   0 (1 byte);
//! * AAD = SHA-256(`header_core` || wrapped data key).
//!
//! A stream has at most 2^32 chunks. A reader knows a chunk is final by
//! reaching the end of the input right after it; nothing may follow it.

use std::fmt;
use std::io::{self, Read, Write};
use std::num::NonZeroU32;
use std::ops::RangeInclusive;

use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM};
use ring::rand::{SecureRandom, SystemRandom};
use base64::alphabet;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
use base64::engine::{DecodePaddingMode, Engine};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use crate::exit::{coded, Code, Coded};

/// The stream format's name as recorded in manifests.
pub const FORMAT_NAME: &str = "aes-256-gcm-stream-v1";

const MAGIC: &[u8; 8] = b"BKPSTRM1";
const METHOD_KEY: u8 = 1;
const METHOD_PASSPHRASE: u8 = 2;
const METHOD_X25519: u8 = 3;
const DEFAULT_CHUNK_LOG2: u8 = 16;
const CHUNK_LOG2: RangeInclusive<u8> = 12..=24;
const MAX_KEY_ID_LEN: usize = 64;
const DEFAULT_ITERATIONS: u32 = 600_000;
const ITERATIONS: RangeInclusive<u32> = 10_000..=10_000_000;
const SALT_LEN: usize = 16;
const PREFIX_LEN: usize = 7;
const TAG_LEN: usize = 16;
const WRAP_NONCE_LEN: usize = 12;
const WRAPPED_LEN: usize = WRAP_NONCE_LEN + 32 + TAG_LEN;
const PASSPHRASE_ID: &str = "passphrase";
const REFETCH: &str = "fetch the object again or restore another backup";

/// Whether `prefix` (the first bytes of an object) starts like an encrypted
/// bkp stream.
pub fn is_encrypted(prefix: &[u8]) -> bool {
    prefix.starts_with(MAGIC)
}

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

enum Kind {
    Raw,
    Passphrase { iterations: u32 },
}

/// A configured key: 32 raw bytes or a passphrase, with the id that stream
/// headers name it by. The secret is zeroed on drop and never printed.
pub struct MasterKey {
    id: String,
    kind: Kind,
    secret: Zeroizing<Vec<u8>>,
}

impl MasterKey {
    /// A raw 32-byte key; its id is [`key_id_of`] the key.
    pub fn from_bytes(key: [u8; 32]) -> MasterKey {
        let key = Zeroizing::new(key);
        MasterKey {
            id: key_id_of(&key),
            kind: Kind::Raw,
            secret: Zeroizing::new(key.to_vec()),
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
                     `head -c 32 /dev/urandom > FILE` or `openssl rand -hex 32 > FILE`"
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
        };
        if key.secret.is_empty() {
            let msg = "the encryption passphrase is empty: set a long random passphrase";
            return Err(coded(Code::Config, msg));
        }
        validate_key_id(&key.id)?;
        Ok(key)
    }

    /// Replaces the id (operators may label keys). An invalid id (see
    /// [`validate_key_id`]) makes [`EncryptWriter::new`] fail.
    pub fn with_id(mut self, id: String) -> MasterKey {
        self.id = id;
        self
    }

    /// The id stream headers name this key by; safe to print.
    pub fn id(&self) -> &str {
        &self.id
    }

    #[cfg(test)]
    fn with_iterations(mut self, n: u32) -> MasterKey {
        self.kind = Kind::Passphrase { iterations: n };
        self
    }

    fn kind_name(&self) -> &'static str {
        match self.kind {
            Kind::Raw => "raw key",
            Kind::Passphrase { .. } => "passphrase",
        }
    }

    /// The key-encryption key for `params`, or `None` if this key is of the
    /// other kind.
    fn kek(&self, params: &Params) -> Option<LessSafeKey> {
        match (&self.kind, params) {
            (Kind::Raw, Params::Key) => Some(aead_key(&self.secret)),
            (Kind::Passphrase { .. }, Params::Passphrase { iterations, salt }) => {
                let mut k = Zeroizing::new([0u8; 32]);
                let alg = ring::pbkdf2::PBKDF2_HMAC_SHA256;
                ring::pbkdf2::derive(alg, *iterations, salt, &self.secret, &mut k[..]);
                Some(aead_key(&k[..]))
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
}

impl Keyring {
    pub fn new(current: MasterKey, others: Vec<MasterKey>) -> Keyring {
        Keyring { current, others }
    }

    /// The key new streams are encrypted with.
    pub fn current(&self) -> &MasterKey {
        &self.current
    }

    /// The first key with id `id`, looking at the current key first.
    pub fn find(&self, id: &str) -> Option<&MasterKey> {
        self.all().find(|k| k.id == id)
    }

    fn all(&self) -> impl Iterator<Item = &MasterKey> {
        std::iter::once(&self.current).chain(&self.others)
    }
}

/// The key-wrapping parameters of a stream.
enum Params {
    Key,
    Passphrase {
        iterations: NonZeroU32,
        salt: [u8; SALT_LEN],
    },
}

/// Encrypts what is written through it to `inner`.
///
/// [`EncryptWriter::finish`] MUST be called: it writes the final chunk. A
/// writer dropped without `finish` leaves a stream without a final chunk,
/// which readers reject as truncated; that is deliberate, nothing relies on
/// `Drop`. Memory: one chunk plus its tag.
pub struct EncryptWriter<W: Write> {
    inner: W,
    key: LessSafeKey,
    nonce_prefix: [u8; PREFIX_LEN],
    aad: [u8; 32],
    chunk_size: usize,
    /// Number of the chunk being filled.
    counter: u32,
    /// The chunk being filled; sealed in place.
    buf: Vec<u8>,
    /// An earlier chunk failed to be written: the stream is unusable.
    broken: bool,
}

impl<W: Write> EncryptWriter<W> {
    /// Writes a stream header for `key` to `inner`; chunks of 64 KiB.
    pub fn new(inner: W, key: &MasterKey) -> io::Result<Self> {
        Self::with_chunk_log2(inner, key, DEFAULT_CHUNK_LOG2)
    }

    /// Like [`EncryptWriter::new`], with chunks of `2^chunk_log2` bytes
    /// (12..=24).
    pub fn with_chunk_log2(mut inner: W, key: &MasterKey, chunk_log2: u8) -> io::Result<Self> {
        if !CHUNK_LOG2.contains(&chunk_log2) {
            let msg = format!("failed to encrypt: chunk size 2^{chunk_log2} is not in 2^12..=2^24");
            return Err(io::Error::new(io::ErrorKind::InvalidInput, msg));
        }
        if let Err(e) = validate_key_id(&key.id) {
            let message = e.to_string();
            let coded = Coded {
                code: Code::Config,
                message,
            };
            return Err(io::Error::new(io::ErrorKind::InvalidInput, coded));
        }
        let rng = SystemRandom::new();
        let params = match key.kind {
            Kind::Raw => Params::Key,
            Kind::Passphrase { iterations } => Params::Passphrase {
                // 600_000, or what a test set; never 0.
                iterations: NonZeroU32::new(iterations).unwrap_or(NonZeroU32::MIN),
                salt: random(&rng)?,
            },
        };
        let (method, params_bytes) = match &params {
            Params::Key => (METHOD_KEY, Vec::new()),
            Params::Passphrase { iterations, salt } => {
                let it = iterations.get().to_be_bytes();
                (METHOD_PASSPHRASE, [&it[..], salt].concat())
            }
        };
        let nonce_prefix: [u8; PREFIX_LEN] = random(&rng)?;
        // The id was validated above (at most 64 bytes); params are 0 or 20 bytes.
        let (id_len, params_len) = (key.id.len() as u8, params_bytes.len() as u16);
        let core = [
            MAGIC,
            &[method, chunk_log2, id_len][..],
            key.id.as_bytes(),
            &params_len.to_be_bytes(),
            &params_bytes,
            &nonce_prefix,
        ]
        .concat();

        // `params` was made above for the kind of `key`, so this is never `None`.
        let kek = key
            .kek(&params)
            .ok_or_else(|| io::Error::other("failed to derive a key"))?;
        let wrap_nonce: [u8; WRAP_NONCE_LEN] = random(&rng)?;
        let data_key: Zeroizing<[u8; 32]> = Zeroizing::new(random(&rng)?);
        let key_for_data = aead_key(&data_key[..]);
        // Sealed in place: it holds the data key only until sealed below.
        let mut sealed = data_key.to_vec();
        let nonce = Nonce::assume_unique_for_key(wrap_nonce);
        let done = kek.seal_in_place_append_tag(nonce, Aad::from(&core), &mut sealed);
        done.map_err(|_| io::Error::other("failed to wrap the data key"))?;
        let wrapped = [&wrap_nonce[..], &sealed].concat();
        inner.write_all(&core)?;
        inner.write_all(&wrapped)?;
        let chunk_size = 1usize << chunk_log2;
        Ok(EncryptWriter {
            inner,
            key: key_for_data,
            nonce_prefix,
            aad: chunk_aad(&core, &wrapped),
            chunk_size,
            counter: 0,
            buf: Vec::with_capacity(chunk_size + TAG_LEN),
            broken: false,
        })
    }

    /// Seals and writes the final chunk, flushes, and returns the inner writer.
    pub fn finish(mut self) -> io::Result<W> {
        self.seal_chunk(true)?;
        self.inner.flush()?;
        Ok(self.inner)
    }

    fn seal_chunk(&mut self, last: bool) -> io::Result<()> {
        if self.broken {
            let msg = "failed to encrypt: an earlier write of this stream failed; discard it";
            return Err(io::Error::other(msg));
        }
        let n = self.counter;
        if !last && n == u32::MAX {
            let msg = "failed to encrypt: the stream would exceed 2^32 chunks; use larger chunks";
            return Err(io::Error::other(msg));
        }
        // Until the sealed chunk is fully written, the stream is unusable.
        self.broken = true;
        let nonce = chunk_nonce(&self.nonce_prefix, n, last);
        let aad = Aad::from(self.aad);
        let sealed = self.key.seal_in_place_append_tag(nonce, aad, &mut self.buf);
        sealed.map_err(|_| io::Error::other(format!("failed to encrypt chunk {n}")))?;
        self.inner.write_all(&self.buf)?;
        self.buf.clear();
        self.counter = n.wrapping_add(1); // wraps only after the final chunk
        self.broken = false;
        Ok(())
    }
}

impl<W: Write> Write for EncryptWriter<W> {
    /// Buffers into the current chunk. A full chunk is sealed and written only
    /// once more data arrives, since only then is it known not to be final.
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        if data.is_empty() {
            return Ok(0);
        }
        if self.buf.len() == self.chunk_size || self.broken {
            self.seal_chunk(false)?;
        }
        let n = data.len().min(self.chunk_size - self.buf.len());
        self.buf.extend_from_slice(&data[..n]);
        Ok(n)
    }

    /// Flushes the inner writer. The chunk being filled stays buffered: a
    /// chunk is sealed only when full or by `finish`.
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Decrypts the stream read from `inner`, releasing plaintext only from
/// chunks that authenticated. Memory: one sealed chunk and one byte of
/// look-ahead, plus, once, a copy of the final chunk (to tell a truncated
/// stream from a corrupt one).
pub struct DecryptReader<R: Read> {
    inner: R,
    key: LessSafeKey,
    nonce_prefix: [u8; PREFIX_LEN],
    aad: [u8; 32],
    /// Number of the next chunk.
    counter: u32,
    /// One sealed chunk plus one byte of look-ahead.
    buf: Vec<u8>,
    filled: usize,
    /// The last byte of `buf` is the first byte of the next chunk.
    carry: bool,
    /// Authenticated plaintext not yet returned: `buf[pos..end]`.
    pos: usize,
    end: usize,
    /// The final chunk authenticated.
    done: bool,
    /// The stream failed verification; every later read fails the same way.
    failed: Option<String>,
}

impl<R: Read> DecryptReader<R> {
    /// Reads and checks the header, then unwraps the data key with the key of
    /// `keys` that the header names, so that a wrong key fails here.
    pub fn new(mut inner: R, keys: &Keyring) -> io::Result<Self> {
        let mut core = Vec::with_capacity(64 + MAX_KEY_ID_LEN);
        read_part(&mut inner, &mut core, MAGIC.len())?;
        if core[..7] != MAGIC[..7] {
            return Err(integrity(
                "failed to decrypt: this is not a bkp encrypted stream (bad magic); check that \
                 the object is a bkp backup and that it was written with encryption on",
            ));
        } else if core[7] != MAGIC[7] {
            let v = core[7].escape_ascii();
            return Err(integrity(format!(
                "failed to decrypt: the stream has format version '{v}', which this bkp does \
                 not support; restore it with a newer bkp"
            )));
        }
        read_part(&mut inner, &mut core, 3)?;
        let (method, chunk_log2, id_len) = (core[8], core[9], usize::from(core[10]));
        let params_expected = match method {
            METHOD_KEY => 0,
            METHOD_PASSPHRASE => 4 + SALT_LEN,
            METHOD_X25519 => {
                return Err(integrity(
                    "failed to decrypt: the stream is encrypted to a public-key recipient \
                     (method 3), which is unsupported: it needs a newer bkp",
                ))
            }
            m => {
                return Err(integrity(format!(
                    "failed to decrypt: the stream uses encryption method {m}, which is \
                     unsupported: it needs a newer bkp, or its header is corrupt"
                )))
            }
        };
        if !CHUNK_LOG2.contains(&chunk_log2) {
            return Err(corrupt(format!(
                "chunk size 2^{chunk_log2} is not in 2^12..=2^24"
            )));
        }
        if id_len == 0 || id_len > MAX_KEY_ID_LEN {
            return Err(corrupt(format!("key id length {id_len} is not in 1..=64")));
        }
        read_part(&mut inner, &mut core, id_len + 2)?;
        let id_bytes = &core[11..11 + id_len];
        if !id_bytes.iter().all(u8::is_ascii_graphic) {
            return Err(corrupt("the key id is not printable ASCII".to_string()));
        }
        let id = String::from_utf8_lossy(id_bytes).into_owned();
        let params_len = usize::from(u16::from_be_bytes([core[11 + id_len], core[12 + id_len]]));
        if params_len != params_expected {
            let detail = format!("parameters of {params_len} bytes for method {method}");
            return Err(corrupt(detail));
        }
        let start = core.len();
        read_part(&mut inner, &mut core, params_len + PREFIX_LEN)?;
        let params = if method == METHOD_KEY {
            Params::Key
        } else {
            let p = &core[start..start + params_len];
            let n = u32::from_be_bytes([p[0], p[1], p[2], p[3]]);
            let iterations = NonZeroU32::new(n)
                .filter(|n| ITERATIONS.contains(&n.get()))
                .ok_or_else(|| corrupt(format!("PBKDF2 iteration count {n} is out of range")))?;
            let mut salt = [0u8; SALT_LEN];
            salt.copy_from_slice(&p[4..]);
            Params::Passphrase { iterations, salt }
        };
        let mut nonce_prefix = [0u8; PREFIX_LEN];
        nonce_prefix.copy_from_slice(&core[core.len() - PREFIX_LEN..]);
        let mut wrapped = core.clone();
        read_part(&mut inner, &mut wrapped, WRAPPED_LEN)?;
        let wrapped = &wrapped[core.len()..];

        let Some(master) = keys.find(&id) else {
            let ids: Vec<String> = keys.all().map(|k| format!("'{}'", k.id)).collect();
            return Err(integrity(format!(
                "failed to decrypt: the stream was encrypted with key '{id}', which is not \
                 configured (configured: {}); add that key to the config (old keys stay \
                 configured for restores) and retry",
                ids.join(", ")
            )));
        };
        let Some(kek) = master.kek(&params) else {
            let wanted = if method == METHOD_KEY {
                "raw key"
            } else {
                "passphrase"
            };
            let have = master.kind_name();
            return Err(integrity(format!(
                "failed to decrypt: the stream was encrypted with a {wanted} named '{id}', but \
                 the configured key '{id}' is a {have}; configure the right key under that id"
            )));
        };
        let mut nonce = [0u8; WRAP_NONCE_LEN];
        nonce.copy_from_slice(&wrapped[..WRAP_NONCE_LEN]);
        // Opened in place: it then holds the data key, wiped when dropped.
        let mut sealed = Zeroizing::new([0u8; 32 + TAG_LEN]);
        sealed.copy_from_slice(&wrapped[WRAP_NONCE_LEN..]);
        let nonce = Nonce::assume_unique_for_key(nonce);
        let key = kek
            .open_in_place(nonce, Aad::from(&core), &mut sealed[..])
            .map(|k| aead_key(k));
        let key = key.map_err(|_| {
            integrity(format!(
                "failed to unlock the stream with key '{id}': either the key or passphrase is \
                 wrong (same id, different secret, e.g. a passphrase typo) or the stream header \
                 was tampered with; check the configured key, else restore another backup"
            ))
        })?;
        Ok(DecryptReader {
            inner,
            key,
            nonce_prefix,
            aad: chunk_aad(&core, wrapped),
            counter: 0,
            buf: vec![0; (1usize << chunk_log2) + TAG_LEN + 1],
            filled: 0,
            carry: false,
            pos: 0,
            end: 0,
            done: false,
            failed: None,
        })
    }

    fn fail(&mut self, message: String) -> io::Error {
        self.failed = Some(message.clone());
        integrity(message)
    }

    /// Opens `sealed` in place as chunk `n`; returns the plaintext length.
    fn open(&self, n: u32, last: bool, sealed: &mut [u8]) -> Option<usize> {
        let nonce = chunk_nonce(&self.nonce_prefix, n, last);
        let plain = self.key.open_in_place(nonce, Aad::from(self.aad), sealed);
        plain.ok().map(|p| p.len())
    }

    /// Reads the next chunk, then authenticates and decrypts it into
    /// `buf[..end]`.
    fn next_chunk(&mut self) -> io::Result<()> {
        let full = self.buf.len();
        if self.carry {
            self.buf[0] = self.buf[full - 1];
            (self.filled, self.carry) = (1, false);
        }
        read_full(&mut self.inner, &mut self.buf, &mut self.filled)?;
        let len = std::mem::take(&mut self.filled);
        let mut sealed = std::mem::take(&mut self.buf);
        let opened = self.open_chunk(&mut sealed, len);
        self.buf = sealed;
        self.end = opened.map_err(|msg| self.fail(msg))?;
        Ok(())
    }

    /// Opens the `len` bytes read into `sealed`; returns the plaintext length
    /// or what went wrong.
    fn open_chunk(&mut self, sealed: &mut [u8], len: usize) -> Result<usize, String> {
        let n = self.counter;
        if len == sealed.len() {
            // A byte follows, so this chunk is not the final one.
            self.carry = true;
            if n == u32::MAX {
                return Err(format!(
                    "failed to decrypt: the stream has over 2^32 chunks; {REFETCH}"
                ));
            }
            self.counter = n + 1;
            return self.open(n, false, &mut sealed[..len - 1]).ok_or_else(|| {
                format!(
                    "failed to decrypt: chunk {n} failed authentication: the data is corrupted \
                     or its chunks were reordered; {REFETCH}"
                )
            });
        }
        // The input ends here: this must be the final chunk.
        if len == 0 {
            return Err(format!(
                "failed to decrypt: the stream is truncated: it ends right after its header, \
                 before any chunk; {REFETCH}"
            ));
        } else if len < TAG_LEN {
            return Err(format!(
                "failed to decrypt: the stream is truncated inside chunk {n}; {REFETCH}"
            ));
        }
        let mut copy = sealed[..len].to_vec();
        if let Some(plain) = self.open(n, true, &mut sealed[..len]) {
            self.done = true;
            Ok(plain)
        } else if self.open(n, false, &mut copy).is_some() {
            Err(format!(
                "failed to decrypt: the stream is truncated: it ends after chunk {n} without its \
                 final chunk; {REFETCH}"
            ))
        } else {
            Err(format!(
                "failed to decrypt: the last chunk ({n}) failed authentication: the stream was \
                 truncated inside chunk {n}, corrupted, or has bytes appended; {REFETCH}"
            ))
        }
    }
}

impl<R: Read> Read for DecryptReader<R> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if out.is_empty() {
            return Ok(0);
        }
        while self.pos == self.end {
            if let Some(message) = &self.failed {
                return Err(integrity(message.clone()));
            }
            if self.done {
                return Ok(0);
            }
            (self.pos, self.end) = (0, 0);
            self.next_chunk()?;
        }
        let n = out.len().min(self.end - self.pos);
        out[..n].copy_from_slice(&self.buf[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

/// An `InvalidData` error carrying [`Code::Integrity`].
fn integrity(message: impl Into<String>) -> io::Error {
    let message = message.into();
    io::Error::new(
        io::ErrorKind::InvalidData,
        Coded {
            code: Code::Integrity,
            message,
        },
    )
}

fn corrupt(detail: String) -> io::Error {
    integrity(format!(
        "failed to decrypt: the stream header is corrupt ({detail}): the object is damaged; \
         {REFETCH}"
    ))
}

/// Reads into `buf[*filled..]` until it is full or the input ends. `filled`
/// stays right when a read fails, so a later call resumes.
fn read_full(inner: &mut impl Read, buf: &mut [u8], filled: &mut usize) -> io::Result<()> {
    while *filled < buf.len() {
        match inner.read(&mut buf[*filled..]) {
            Ok(0) => break,
            Ok(n) => *filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Appends `len` bytes of `inner` to `header`; the input ending first means a
/// stream cut inside its header (or no stream at all).
fn read_part(inner: &mut impl Read, header: &mut Vec<u8>, len: usize) -> io::Result<()> {
    let mut have = header.len();
    header.resize(have + len, 0);
    read_full(inner, header, &mut have)?;
    if have == header.len() {
        return Ok(());
    }
    if have < MAGIC.len() && header[..have] != MAGIC[..have] {
        return Err(integrity(
            "failed to decrypt: this is not a bkp encrypted stream (bad magic, shorter than a \
             header); check that the object is a bkp backup written with encryption on",
        ));
    }
    Err(integrity(format!(
        "failed to decrypt: the stream is truncated inside its header (after {have} bytes): the \
         upload or download was cut short; {REFETCH}"
    )))
}

fn chunk_aad(core: &[u8], wrapped: &[u8]) -> [u8; 32] {
    Sha256::new()
        .chain_update(core)
        .chain_update(wrapped)
        .finalize()
        .into()
}

fn chunk_nonce(prefix: &[u8; PREFIX_LEN], counter: u32, last: bool) -> Nonce {
    let mut n = [0u8; 12];
    n[..PREFIX_LEN].copy_from_slice(prefix);
    n[PREFIX_LEN..11].copy_from_slice(&counter.to_be_bytes());
    n[11] = u8::from(last);
    Nonce::assume_unique_for_key(n)
}

fn aead_key(bytes: &[u8]) -> LessSafeKey {
    // Callers pass exactly 32 bytes, and AES-256 refuses no other 32-byte key.
    LessSafeKey::new(UnboundKey::new(&AES_256_GCM, bytes).expect("AES-256 key of 32 bytes"))
}

fn random<const N: usize>(rng: &SystemRandom) -> io::Result<[u8; N]> {
    let mut out = [0u8; N];
    let filled = rng.fill(&mut out);
    filled.map_err(|_| io::Error::other("failed to get random bytes from the operating system"))?;
    Ok(out)
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
    use super::*;
    use crate::exit::classify;

    const CS: usize = 4096;
    /// Header (core + wrapped key) length of a stream from `key(1)`.
    const HDR: usize = 8 + 3 + 18 + 2 + 7 + WRAPPED_LEN;
    const SEALED: usize = CS + TAG_LEN;

    fn key(byte: u8) -> MasterKey {
        MasterKey::from_bytes([byte; 32])
    }

    fn pass(p: &str) -> MasterKey {
        let k = MasterKey::from_passphrase(p.into(), None).unwrap();
        k.with_iterations(10_000)
    }

    fn ring_of(k: MasterKey) -> Keyring {
        Keyring::new(k, Vec::new())
    }

    fn data(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 31 + i / 251) as u8).collect()
    }

    fn encrypt_with(plain: &[u8], key: &MasterKey, write_size: usize) -> Vec<u8> {
        let mut w = EncryptWriter::with_chunk_log2(Vec::new(), key, 12).unwrap();
        for part in plain.chunks(write_size.max(1)) {
            w.write_all(part).unwrap();
        }
        w.finish().unwrap()
    }

    fn encrypt(plain: &[u8]) -> Vec<u8> {
        encrypt_with(plain, &key(1), 4097)
    }

    fn decrypt_with(ct: &[u8], keys: &Keyring, read_size: usize) -> io::Result<Vec<u8>> {
        let mut r = DecryptReader::new(ct, keys)?;
        let (mut out, mut buf) = (Vec::new(), vec![0; read_size]);
        loop {
            match r.read(&mut buf)? {
                0 => return Ok(out),
                n => out.extend_from_slice(&buf[..n]),
            }
        }
    }

    fn decrypt(ct: &[u8]) -> io::Result<Vec<u8>> {
        decrypt_with(ct, &ring_of(key(1)), 1000)
    }

    fn flipped(ct: &[u8], at: usize, bit: u8) -> Vec<u8> {
        let mut c = ct.to_vec();
        c[at] ^= bit;
        c
    }

    /// Asserts `r` failed with an Integrity error whose message holds `needle`.
    #[track_caller]
    fn assert_integrity<T: fmt::Debug>(r: io::Result<T>, needle: &str) {
        let err = r.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        let msg = err.to_string();
        assert!(msg.contains(needle), "{msg:?} lacks {needle:?}");
        assert_eq!(classify(&anyhow::Error::new(err)), Some(Code::Integrity));
    }

    #[track_caller]
    fn assert_config<T: fmt::Debug>(r: anyhow::Result<T>, needle: &str) {
        let err = r.unwrap_err();
        assert!(err.to_string().contains(needle), "{err} lacks {needle:?}");
        assert_eq!(classify(&err), Some(Code::Config));
    }

    #[test]
    fn round_trips_at_the_edges() {
        for len in [0, 1, CS - 1, CS, CS + 1, 2 * CS, 5 * CS + 7] {
            let plain = data(len);
            for write_size in [1, 7, 4097, len] {
                let ct = encrypt_with(&plain, &key(1), write_size);
                // One final chunk always; a multiple of CS ends with a full final chunk.
                let chunks = len.div_ceil(CS).max(1);
                assert_eq!(ct.len(), HDR + len + chunks * TAG_LEN, "len {len}");
                for read_size in [1, 13, 4097, 70_000] {
                    let got = decrypt_with(&ct, &ring_of(key(1)), read_size).unwrap();
                    assert_eq!(got, plain);
                }
            }
        }
        let plain = data(200_000);
        let mut w = EncryptWriter::new(Vec::new(), &key(1)).unwrap();
        w.write_all(&plain).unwrap();
        let ct = w.finish().unwrap();
        assert_eq!(ct[9], DEFAULT_CHUNK_LOG2);
        assert_eq!(decrypt(&ct).unwrap(), plain);
    }

    /// An input that yields at most 3 bytes a read and, past the header, is
    /// interrupted or fails transiently now and then.
    struct Trickle<'a>(&'a [u8], usize, u32);

    impl Read for Trickle<'_> {
        fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
            self.2 += 1;
            match self.2 % 7 {
                3 if self.1 > HDR => return Err(io::ErrorKind::Interrupted.into()),
                5 if self.1 > HDR => return Err(io::Error::other("flaky")),
                _ => {}
            }
            let n = out.len().min(3).min(self.0.len() - self.1);
            out[..n].copy_from_slice(&self.0[self.1..self.1 + n]);
            self.1 += n;
            Ok(n)
        }
    }

    #[test]
    fn short_interrupted_and_failed_inner_reads_resume() {
        let plain = data(3 * CS + 5);
        let ct = encrypt(&plain);
        let keys = ring_of(key(1));
        let mut r = DecryptReader::new(Trickle(&ct, 0, 0), &keys).unwrap();
        let (mut got, mut buf, mut flaky) = (Vec::new(), [0; 1000], 0);
        loop {
            match r.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => got.extend_from_slice(&buf[..n]),
                Err(e) => {
                    assert_eq!(e.to_string(), "flaky");
                    flaky += 1;
                }
            }
        }
        assert!(flaky > 100);
        assert_eq!(got, plain);
    }

    #[test]
    fn passphrase_round_trips_and_typo_fails() {
        let plain = data(9000);
        let ct = encrypt_with(&plain, &pass("correct horse"), 100);
        assert_eq!(ct[8], METHOD_PASSPHRASE);
        let got = decrypt_with(&ct, &ring_of(pass("correct horse")), 999);
        assert_eq!(got.unwrap(), plain);
        let typo = ring_of(pass("correct hose"));
        assert_integrity(decrypt_with(&ct, &typo, 999), "key or passphrase is wrong");
        let raw = ring_of(key(1).with_id(PASSPHRASE_ID.into()));
        assert_integrity(decrypt_with(&ct, &raw, 999), "is a raw key");
        assert_config(MasterKey::from_passphrase(String::new(), None), "empty");
        let bad_id = MasterKey::from_passphrase("x".into(), Some("a b".into()));
        assert_config(bad_id, "invalid");
    }

    #[test]
    fn layout_is_as_documented() {
        let plain = data(CS + 10);
        let ct = encrypt(&plain);
        let id = key(1).id().to_string();
        let core_len = HDR - WRAPPED_LEN;
        let (core, wrapped) = (&ct[..core_len], &ct[core_len..HDR]);
        assert_eq!(&core[..11], b"BKPSTRM1\x01\x0c\x12");
        assert_eq!(&core[11..29], id.as_bytes());
        assert_eq!(&core[29..31], &[0, 0]);
        let open = |k: &[u8], nonce: &[u8], aad: &[u8], sealed: &[u8]| {
            let nonce = Nonce::try_assume_unique_for_key(nonce).unwrap();
            let mut buf = sealed.to_vec();
            let plain = aead_key(k)
                .open_in_place(nonce, Aad::from(aad), &mut buf)
                .unwrap();
            plain.to_vec()
        };
        let data_key = open(&[1; 32], &wrapped[..12], core, &wrapped[12..]);
        let aad = Sha256::new()
            .chain_update(core)
            .chain_update(wrapped)
            .finalize();
        let nonce = |n: u8, last: u8| [&core[31..], &[0, 0, 0, n, last]].concat();
        let c0 = open(&data_key, &nonce(0, 0), &aad, &ct[HDR..HDR + SEALED]);
        let c1 = open(&data_key, &nonce(1, 1), &aad, &ct[HDR + SEALED..]);
        assert_eq!([c0, c1].concat(), plain);
    }

    #[test]
    fn same_input_encrypts_differently() {
        let plain = data(5000);
        assert_ne!(encrypt(&plain), encrypt(&plain));
    }

    #[test]
    fn flipped_bits_are_caught_by_region() {
        let ct = encrypt(&data(3 * CS + 100));
        let cases: &[(usize, u8, &str)] = &[
            (0, 1, "not a bkp encrypted stream"),
            (7, 2, "format version"),
            (8, 4, "method 5"),
            (9, 0x40, "header is corrupt"),  // chunk_log2 out of range
            (9, 1, "failed to unlock"),      // chunk_log2 13: valid, but in the AAD
            (10, 0x40, "header is corrupt"), // key id length
            (13, 1, "not configured"),       // key id
            (13, 0x80, "not printable"),     // key id
            (29, 1, "header is corrupt"),    // params length
            (32, 1, "failed to unlock"),     // nonce prefix
            (HDR - 30, 1, "failed to unlock"), // wrapped key
            (HDR + SEALED + 5, 1, "chunk 1 failed authentication"), // middle chunk
            (HDR + 2 * SEALED - 1, 1, "chunk 1 failed authentication"), // its tag
            (ct.len() - 50, 1, "the last chunk (3)"),
        ];
        for &(at, bit, needle) in cases {
            assert_integrity(decrypt(&flipped(&ct, at, bit)), needle);
        }
        let ct = encrypt_with(&data(100), &pass("pw"), 100);
        let keys = ring_of(pass("pw"));
        // Iterations (bytes 23..27) 10_000 -> 10_001, then out of range; salt.
        for (at, bit, needle) in [
            (26, 1, "unlock"),
            (23, 0x80, "iteration"),
            (30, 1, "unlock"),
        ] {
            assert_integrity(decrypt_with(&flipped(&ct, at, bit), &keys, 100), needle);
        }
    }

    #[test]
    fn every_flipped_byte_fails_with_integrity() {
        let ct = encrypt(&data(2 * CS + 10));
        for at in 0..ct.len() {
            let err = decrypt(&flipped(&ct, at, 1 << (at % 8))).unwrap_err();
            let code = classify(&anyhow::Error::new(err));
            assert_eq!(code, Some(Code::Integrity), "byte {at}");
        }
    }

    #[test]
    fn truncation_is_detected() {
        let ct = encrypt(&data(3 * CS + 100));
        for len in 0..HDR {
            assert_integrity(decrypt(&ct[..len]), "truncated inside its header");
        }
        let cut = HDR + 2 * SEALED;
        let cases = [
            (HDR, "ends right after its header"),
            (cut, "ends after chunk 1 without its final chunk"),
            (cut + 5, "truncated inside chunk 2"),
            (cut + 500, "truncated inside chunk 2"),
        ];
        for (len, needle) in cases {
            assert_integrity(decrypt(&ct[..len]), needle);
        }
        // A writer dropped without `finish` leaves such a stream.
        let mut w = EncryptWriter::with_chunk_log2(Vec::new(), &key(1), 12).unwrap();
        w.write_all(&data(CS + 1)).unwrap();
        let unfinished = w.inner.clone();
        drop(w);
        assert_integrity(decrypt(&unfinished), "ends after chunk 0 without");
    }

    #[test]
    fn reordered_duplicated_and_appended_chunks_fail() {
        let ct = encrypt(&data(3 * CS + 100));
        let c: Vec<&[u8]> = ct[HDR..].chunks(SEALED).collect();
        let build = |parts: &[&[u8]]| [&[&ct[..HDR]], parts].concat().concat();
        let cases = [
            (
                build(&[c[0], c[2], c[1], c[3]]),
                "chunk 1 failed authentication",
            ),
            (
                build(&[c[0], c[1], c[1], c[2], c[3]]),
                "chunk 2 failed authentication",
            ),
            (
                build(&[c[0], c[1], c[2], c[3], b"xyz"]),
                "the last chunk (3)",
            ),
            (build(&[c[0], c[1], c[2], c[3], c[3]]), "the last chunk (3)"),
            // A multiple of CS: the full final chunk is then read as non-final.
            (
                [&encrypt(&data(2 * CS))[..], b"!"].concat(),
                "chunk 1 failed authentication",
            ),
        ];
        for (stream, needle) in cases {
            assert_integrity(decrypt(&stream), needle);
        }
    }

    #[test]
    fn failed_chunk_releases_no_plaintext() {
        let plain = data(4 * CS);
        let ct = flipped(&encrypt(&plain), HDR + 2 * SEALED + 100, 4);
        let keys = ring_of(key(1));
        let mut r = DecryptReader::new(&ct[..], &keys).unwrap();
        let (mut got, mut buf) = (Vec::new(), vec![0; 3000]);
        let err = loop {
            match r.read(&mut buf) {
                Ok(0) => panic!("stream with a corrupt chunk read to its end"),
                Ok(n) => got.extend_from_slice(&buf[..n]),
                Err(e) => break e,
            }
        };
        assert_eq!(got, plain[..2 * CS]);
        assert_integrity::<()>(Err(err), "chunk 2 failed authentication");
        assert_integrity(r.read(&mut buf), "chunk 2 failed authentication"); // and stays failed
    }

    #[test]
    fn keys_are_matched_by_id() {
        let ct = encrypt(&data(100));
        let err = decrypt_with(&ct, &ring_of(key(2)), 10)
            .unwrap_err()
            .to_string();
        for needle in [
            key(1).id(),
            key(2).id(),
            "not configured",
            "add that key to the config",
        ] {
            assert!(err.contains(needle), "{err} lacks {needle}");
        }
        let same_id = ring_of(key(2).with_id(key(1).id().into()));
        assert_integrity(
            decrypt_with(&ct, &same_id, 10),
            "key or passphrase is wrong",
        );
        // Rotation: a new current key, the old one kept for restores.
        let rotated = Keyring::new(key(2), vec![key(3), key(1)]);
        assert_eq!(decrypt_with(&ct, &rotated, 10).unwrap(), data(100));
        assert_eq!(rotated.current().id(), key(2).id());
        assert!(rotated.find("k-nope").is_none());
    }

    #[test]
    fn unsupported_methods_and_bad_params_are_rejected() {
        let ct = encrypt(&data(10));
        let cases = [
            (8, 3, "needs a newer bkp"),
            (9, 25, "2^25"),
            (10, 0, "key id length 0"),
        ];
        for (at, value, needle) in cases {
            assert_integrity(decrypt(&flipped(&ct, at, ct[at] ^ value)), needle);
        }
        assert!(EncryptWriter::with_chunk_log2(Vec::new(), &key(1), 11).is_err());
        let bad_id = EncryptWriter::new(Vec::new(), &key(1).with_id("a b".into()));
        let err = anyhow::Error::new(bad_id.err().unwrap());
        assert_eq!(classify(&err), Some(Code::Config));
        let mut w = EncryptWriter::with_chunk_log2(Vec::new(), &key(1), 12).unwrap();
        w.counter = u32::MAX;
        let err = w.write_all(&data(CS + 1)).unwrap_err();
        assert!(err.to_string().contains("2^32 chunks"));
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
            assert!(err.contains("head -c 32") && !err.contains(&hex[..8]));
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
        let keys = ring_of(MasterKey::from_passphrase("hunter2".into(), None).unwrap());
        let debug = format!("{k:?} {keys:?}");
        assert!(debug.contains(&id) && debug.contains("passphrase"));
        for secret in ["abab", "171", "hunter2"] {
            assert!(!debug.contains(secret), "{debug}");
        }
        assert!(is_encrypted(&encrypt(b"x")[..8]));
        assert!(!is_encrypted(b"BKPSTRM") && !is_encrypted(b"PK\x03\x04...."));
    }
}
