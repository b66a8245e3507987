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
//! | key_id_len | key_id       | id of the configured key: printable ASCII, no spaces (method 3: the recipient's id, `x-` and 16 hex digits) |
//! | 2          | params_len   | method 1: 0; method 2: 20; method 3: 32 |
//! | params_len | params       | method 2: iterations (u32), then a random 16-byte salt; method 3: the ephemeral X25519 public key E |
//! | 7          | nonce_prefix | random |
//!
//! Methods: 1, a raw 32-byte key is the key-encryption key; 2, the
//! key-encryption key is PBKDF2-HMAC-SHA256(passphrase, salt, iterations),
//! iterations in 10_000..=10_000_000 (written: 600_000); 3, an X25519
//! recipient R (a public key, see `pubkey.rs`): for each stream a fresh
//! ephemeral secret e with public key E, and the key-encryption key is
//! HKDF-SHA256(salt = E ‖ R, ikm = X25519(e, R), info = `bkp x25519 kek v1`);
//! an all-zero exchange is refused. Only the holder of R's private key (the
//! identity) can unwrap, so a host that holds R alone writes what it cannot read.
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
//!
//! # Stream format v2: one data key, several recipients
//!
//! Written when escrows are configured (see `escrow.rs`): the data key is
//! wrapped once per recipient, the first being the configured key, as age
//! wraps a file key to each recipient. `header_core`:
//!
//! | bytes | field | value |
//! |-------|-------|-------|
//! | 8 | magic | `BKPSTRM2` |
//! | 1 | chunk_log2 | as in v1 |
//! | 7 | nonce_prefix | random |
//! | 1 | count | stanzas, 2..=8 |
//!
//! then `count` stanzas, each: method (1 byte, as in v1), key_id_len (1),
//! key_id, params_len (2), params (as in v1; a reader skips a stanza of a
//! method it does not know). Then `count` wrapped data keys, 60 bytes each,
//! in stanza order, each sealed as in v1 under its stanza's key-encryption
//! key with AAD = `header_core` (every stanza is bound to every wrap), and the
//! chunks exactly as in v1, AAD = SHA-256(`header_core` || the wrapped keys).
//! A reader unwraps the first stanza whose key it holds.
//!
//! The code: `keys` (configured keys, key text, the keyring), `encrypt`
//! (the writer), `decrypt` (the reader); the format's constants and shared
//! helpers are here.

use std::io;
use std::num::NonZeroU32;
use std::ops::RangeInclusive;

use ring::aead::{LessSafeKey, Nonce, UnboundKey, AES_256_GCM};
use ring::rand::{SecureRandom, SystemRandom};
use sha2::{Digest, Sha256};

use crate::exit::{Code, Coded};

mod decrypt;
mod encrypt;
pub mod escrow;
mod keys;
pub mod pubkey;
#[cfg(test)]
mod tests;

pub use decrypt::DecryptReader;
pub use encrypt::EncryptWriter;
pub use escrow::Escrow;
pub use keys::{key_id_of, validate_key_id, Claim, Keyring, MasterKey, Signer, SignerScope};

/// The stream format's name as recorded in manifests.
pub const FORMAT_NAME: &str = "aes-256-gcm-stream-v1";

const MAGIC: &[u8; 8] = b"BKPSTRM1";
const MAGIC_V2: &[u8; 8] = b"BKPSTRM2";
/// Recipients of one stream's data key, the configured key's included.
const MAX_STANZAS: usize = 8;
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
    prefix.starts_with(MAGIC) || prefix.starts_with(MAGIC_V2)
}

/// The key-wrapping parameters of a stream.
enum Params {
    Key,
    Passphrase {
        iterations: NonZeroU32,
        salt: [u8; SALT_LEN],
    },
    X25519 {
        ephemeral: [u8; 32],
    },
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

/// An `InvalidInput` error carrying [`Code::Config`]: the data is fine, the
/// configuration cannot read it.
fn config_error(message: impl Into<String>) -> io::Error {
    let message = message.into();
    io::Error::new(
        io::ErrorKind::InvalidInput,
        Coded {
            code: Code::Config,
            message,
        },
    )
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

/// The HKDF info of a host's own chunk-naming secret (from its identity or its
/// signing seed; see `keys.rs` and `pubkey.rs`).
const CHUNK_NAMING_INFO: &[u8] = b"bkp chunk naming secret v1";

/// HKDF-SHA256 of `secret` with `info` as salt and info: 32 bytes.
fn hkdf32(secret: &[u8], info: &[u8]) -> zeroize::Zeroizing<[u8; 32]> {
    struct Len;
    impl ring::hkdf::KeyType for Len {
        fn len(&self) -> usize {
            32
        }
    }
    let mut k = zeroize::Zeroizing::new([0u8; 32]);
    ring::hkdf::Salt::new(ring::hkdf::HKDF_SHA256, info)
        .extract(secret)
        .expand(&[info], Len)
        .and_then(|okm| okm.fill(&mut k[..]))
        .expect("HKDF-SHA256 yields 32 bytes");
    k
}
