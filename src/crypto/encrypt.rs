//! The writing half of the stream format (see the `crypto` module): a
//! header naming the key, then sealed chunks; `finish` writes the final one.

use std::io::{self, Write};

use ring::aead::{Aad, LessSafeKey, Nonce};
use ring::rand::SystemRandom;
use zeroize::Zeroizing;

use super::escrow::Escrow;
use super::keys::{validate_key_id, MasterKey};
use super::{
    aead_key, chunk_aad, chunk_nonce, random, Params, CHUNK_LOG2, DEFAULT_CHUNK_LOG2, MAGIC,
    MAGIC_V2, MAX_STANZAS, METHOD_KEY, METHOD_PASSPHRASE, METHOD_X25519, PREFIX_LEN, TAG_LEN,
    WRAPPED_LEN, WRAP_NONCE_LEN,
};
use crate::exit::{Code, Coded};

/// Encrypts what is written through it to `inner`.
///
/// [`EncryptWriter::finish`] MUST be called: it writes the final chunk. A
/// writer dropped without `finish` leaves a stream without a final chunk,
/// which readers reject as truncated; that is deliberate, nothing relies on
/// `Drop`. Memory: one chunk plus its tag.
pub struct EncryptWriter<W: Write> {
    pub(super) inner: W,
    key: LessSafeKey,
    nonce_prefix: [u8; PREFIX_LEN],
    aad: [u8; 32],
    chunk_size: usize,
    /// Number of the chunk being filled.
    pub(super) counter: u32,
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

    /// Like [`EncryptWriter::new`], with the data key also wrapped to each of
    /// `escrow` (stream format v2; v1 when `escrow` is empty).
    pub fn with_escrow(inner: W, key: &MasterKey, escrow: &[Escrow]) -> io::Result<Self> {
        Self::start(inner, key, escrow, DEFAULT_CHUNK_LOG2)
    }

    /// Like [`EncryptWriter::new`], with chunks of `2^chunk_log2` bytes
    /// (12..=24).
    pub fn with_chunk_log2(inner: W, key: &MasterKey, chunk_log2: u8) -> io::Result<Self> {
        Self::start(inner, key, &[], chunk_log2)
    }

    fn start(mut inner: W, key: &MasterKey, escrow: &[Escrow], chunk_log2: u8) -> io::Result<Self> {
        if !CHUNK_LOG2.contains(&chunk_log2) {
            let msg = format!("failed to encrypt: chunk size 2^{chunk_log2} is not in 2^12..=2^24");
            return Err(io::Error::new(io::ErrorKind::InvalidInput, msg));
        }
        if escrow.len() + 1 > MAX_STANZAS {
            let msg = format!("failed to encrypt: at most {} escrows", MAX_STANZAS - 1);
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
        let mut stanzas = vec![stanza(&key.id, key.new_wrap(&rng)?)];
        for e in escrow {
            let (ephemeral, kek) = super::pubkey::wrap_to(&rng, e.public())?;
            stanzas.push(stanza(e.id(), (Params::X25519 { ephemeral }, kek)));
        }
        let nonce_prefix: [u8; PREFIX_LEN] = random(&rng)?;
        let core = if escrow.is_empty() {
            let (method, id, params, _) = &stanzas[0];
            // The id was validated above (at most 64 bytes); params are 0, 20 or 32 bytes.
            [
                MAGIC,
                &[*method, chunk_log2, id.len() as u8][..],
                id.as_bytes(),
                &(params.len() as u16).to_be_bytes(),
                params,
                &nonce_prefix,
            ]
            .concat()
        } else {
            let mut core = [MAGIC_V2, &[chunk_log2][..], &nonce_prefix].concat();
            core.push(stanzas.len() as u8);
            for (method, id, params, _) in &stanzas {
                core.extend_from_slice(&[*method, id.len() as u8]);
                core.extend_from_slice(id.as_bytes());
                core.extend_from_slice(&(params.len() as u16).to_be_bytes());
                core.extend_from_slice(params);
            }
            core
        };

        let data_key: Zeroizing<[u8; 32]> = Zeroizing::new(random(&rng)?);
        let mut wrapped = Vec::with_capacity(WRAPPED_LEN * stanzas.len());
        for (_, _, _, kek) in &stanzas {
            let wrap_nonce: [u8; WRAP_NONCE_LEN] = random(&rng)?;
            // Sealed in place: it holds the data key only until sealed below.
            let mut sealed = data_key.to_vec();
            let nonce = Nonce::assume_unique_for_key(wrap_nonce);
            let done = kek.seal_in_place_append_tag(nonce, Aad::from(&core), &mut sealed);
            done.map_err(|_| io::Error::other("failed to wrap the data key"))?;
            wrapped.extend_from_slice(&wrap_nonce);
            wrapped.extend_from_slice(&sealed);
        }
        inner.write_all(&core)?;
        inner.write_all(&wrapped)?;
        let chunk_size = 1usize << chunk_log2;
        Ok(EncryptWriter {
            inner,
            key: aead_key(&data_key[..]),
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

/// One recipient of a stream's data key: its method, key id, parameters and
/// key-encryption key.
fn stanza(id: &str, (params, kek): (Params, LessSafeKey)) -> (u8, String, Vec<u8>, LessSafeKey) {
    let (method, bytes) = match &params {
        Params::Key => (METHOD_KEY, Vec::new()),
        Params::Passphrase { iterations, salt } => {
            let it = iterations.get().to_be_bytes();
            (METHOD_PASSPHRASE, [&it[..], salt].concat())
        }
        Params::X25519 { ephemeral } => (METHOD_X25519, ephemeral.to_vec()),
    };
    (method, id.to_string(), bytes, kek)
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
