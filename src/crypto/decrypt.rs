//! The reading half of the stream format (see the `crypto` module): checks
//! the header, unwraps the data key with the configured key it names, and
//! releases plaintext only from chunks that authenticated.

use std::io::{self, Read};
use std::num::NonZeroU32;

use ring::aead::{Aad, LessSafeKey, Nonce};
use zeroize::Zeroizing;

use super::keys::Keyring;
use super::{
    aead_key, chunk_aad, chunk_nonce, integrity, Params, CHUNK_LOG2, ITERATIONS, MAGIC, MAGIC_V2,
    MAX_KEY_ID_LEN, MAX_STANZAS, METHOD_KEY, METHOD_PASSPHRASE, METHOD_X25519, PREFIX_LEN, REFETCH,
    SALT_LEN, TAG_LEN, WRAPPED_LEN, WRAP_NONCE_LEN,
};

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
        } else if core[7] != MAGIC[7] && core[7] != MAGIC_V2[7] {
            let v = core[7].escape_ascii();
            return Err(integrity(format!(
                "failed to decrypt: the stream has format version '{v}', which this bkp does \
                 not support; restore it with a newer bkp"
            )));
        }
        let (chunk_log2, stanzas) = if core[7] == MAGIC[7] {
            read_part(&mut inner, &mut core, 3)?;
            let (method, chunk_log2, id_len) = (core[8], core[9], core[10]);
            known_method(method)?;
            let stanza = read_stanza(&mut inner, &mut core, method, id_len)?;
            read_part(&mut inner, &mut core, PREFIX_LEN)?;
            (chunk_log2, vec![stanza])
        } else {
            read_part(&mut inner, &mut core, 1 + PREFIX_LEN + 1)?;
            let (chunk_log2, count) = (core[8], usize::from(core[16]));
            if !(2..=MAX_STANZAS).contains(&count) {
                return Err(corrupt(format!(
                    "{count} recipients is not in 2..={MAX_STANZAS}"
                )));
            }
            let mut stanzas = Vec::with_capacity(count);
            for _ in 0..count {
                read_part(&mut inner, &mut core, 2)?;
                let (method, id_len) = (core[core.len() - 2], core[core.len() - 1]);
                stanzas.push(read_stanza(&mut inner, &mut core, method, id_len)?);
            }
            (chunk_log2, stanzas)
        };
        if !CHUNK_LOG2.contains(&chunk_log2) {
            return Err(corrupt(format!(
                "chunk size 2^{chunk_log2} is not in 2^12..=2^24"
            )));
        }
        let mut nonce_prefix = [0u8; PREFIX_LEN];
        let at = if core[7] == MAGIC[7] {
            core.len() - PREFIX_LEN
        } else {
            9
        };
        nonce_prefix.copy_from_slice(&core[at..at + PREFIX_LEN]);
        let mut wrapped = core.clone();
        read_part(&mut inner, &mut wrapped, WRAPPED_LEN * stanzas.len())?;
        let wrapped = &wrapped[core.len()..];
        let key = unwrap(keys, &stanzas, wrapped, &core)?;
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

/// One recipient of the data key, as a header names it: its method, key id
/// and parameters (`None`: a method this bkp does not know, skipped).
struct Stanza {
    method: u8,
    id: String,
    params: Option<Params>,
}

/// An error unless `method` is one this bkp knows (a v1 stream has one
/// stanza: an unknown method cannot be skipped).
fn known_method(method: u8) -> io::Result<()> {
    if matches!(method, METHOD_KEY | METHOD_PASSPHRASE | METHOD_X25519) {
        return Ok(());
    }
    Err(integrity(format!(
        "failed to decrypt: the stream uses encryption method {method}, which is \
         unsupported: it needs a newer bkp, or its header is corrupt"
    )))
}

/// Reads the rest of a stanza whose method and key id length were read:
/// the key id, the parameters' length and the parameters, onto `core`.
fn read_stanza(
    inner: &mut impl Read,
    core: &mut Vec<u8>,
    method: u8,
    id_len: u8,
) -> io::Result<Stanza> {
    let id_len = usize::from(id_len);
    if id_len == 0 || id_len > MAX_KEY_ID_LEN {
        return Err(corrupt(format!("key id length {id_len} is not in 1..=64")));
    }
    let at = core.len();
    read_part(inner, core, id_len + 2)?;
    let id_bytes = &core[at..at + id_len];
    if !id_bytes.iter().all(u8::is_ascii_graphic) {
        return Err(corrupt("the key id is not printable ASCII".to_string()));
    }
    let id = String::from_utf8_lossy(id_bytes).into_owned();
    let params_len = usize::from(u16::from_be_bytes([
        core[at + id_len],
        core[at + id_len + 1],
    ]));
    let expected = match method {
        METHOD_KEY => Some(0),
        METHOD_PASSPHRASE => Some(4 + SALT_LEN),
        METHOD_X25519 => Some(32),
        _ => None,
    };
    if expected.is_some_and(|n| n != params_len) {
        let detail = format!("parameters of {params_len} bytes for method {method}");
        return Err(corrupt(detail));
    }
    let start = core.len();
    read_part(inner, core, params_len)?;
    let p = &core[start..];
    let params = match method {
        METHOD_KEY => Some(Params::Key),
        METHOD_X25519 => {
            let mut ephemeral = [0u8; 32];
            ephemeral.copy_from_slice(p);
            Some(Params::X25519 { ephemeral })
        }
        METHOD_PASSPHRASE => {
            let n = u32::from_be_bytes([p[0], p[1], p[2], p[3]]);
            let iterations = NonZeroU32::new(n)
                .filter(|n| ITERATIONS.contains(&n.get()))
                .ok_or_else(|| corrupt(format!("PBKDF2 iteration count {n} is out of range")))?;
            let mut salt = [0u8; SALT_LEN];
            salt.copy_from_slice(&p[4..]);
            Some(Params::Passphrase { iterations, salt })
        }
        _ => None,
    };
    Ok(Stanza { method, id, params })
}

/// The data key, unwrapped with the first stanza whose key `keys` holds;
/// `wrapped` holds one wrapped key per stanza, `core` is their AAD.
fn unwrap(
    keys: &Keyring,
    stanzas: &[Stanza],
    wrapped: &[u8],
    core: &[u8],
) -> io::Result<LessSafeKey> {
    let mut first_error = None;
    for (i, s) in stanzas.iter().enumerate() {
        let (Some(params), Some(master)) = (&s.params, keys.find(&s.id)) else {
            continue;
        };
        let id = &s.id;
        let tried = if !master.decrypts() {
            Err(super::config_error(format!(
                "failed to decrypt: the stream was encrypted to recipient '{id}', and this host \
                 holds only its public key (a write-only host): restore, verify and drill \
                 where its identity is configured (`identity_files`)"
            )))
        } else if let Some(kek) = master.kek(params) {
            let w = &wrapped[i * WRAPPED_LEN..(i + 1) * WRAPPED_LEN];
            let mut nonce = [0u8; WRAP_NONCE_LEN];
            nonce.copy_from_slice(&w[..WRAP_NONCE_LEN]);
            // Opened in place: it then holds the data key, wiped when dropped.
            let mut sealed = Zeroizing::new([0u8; 32 + TAG_LEN]);
            sealed.copy_from_slice(&w[WRAP_NONCE_LEN..]);
            let nonce = Nonce::assume_unique_for_key(nonce);
            let key = kek
                .open_in_place(nonce, Aad::from(core), &mut sealed[..])
                .map(|k| aead_key(k));
            key.map_err(|_| {
                integrity(format!(
                    "failed to unlock the stream with key '{id}': either the key or passphrase is \
                     wrong (same id, different secret, e.g. a passphrase typo) or the stream header \
                     was tampered with; check the configured key, else restore another backup"
                ))
            })
        } else {
            let wanted = match s.method {
                METHOD_KEY => "raw key",
                METHOD_PASSPHRASE => "passphrase",
                _ => "public-key recipient",
            };
            let have = master.kind_name();
            Err(integrity(format!(
                "failed to decrypt: the stream was encrypted with a {wanted} named '{id}', but \
                 the configured key '{id}' is a {have}; configure the right key under that id"
            )))
        };
        match tried {
            Ok(key) => return Ok(key),
            Err(e) => {
                first_error.get_or_insert(e);
            }
        }
    }
    if let Some(e) = first_error {
        return Err(e);
    }
    let ids: Vec<String> = keys.all().map(|k| format!("'{}'", k.id)).collect();
    let named = match stanzas {
        [one] => format!("key '{}', which is not", one.id),
        [first, rest @ ..] => format!(
            "key '{}' and escrow {}, none of which is",
            first.id,
            rest.iter()
                .map(|s| format!("'{}'", s.id))
                .collect::<Vec<_>>()
                .join(", ")
        ),
        [] => "no key, and none is".to_string(),
    };
    Err(integrity(format!(
        "failed to decrypt: the stream was encrypted with {named} configured (configured: {}); \
         add that key to the config (old keys stay configured for restores) and retry",
        ids.join(", ")
    )))
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
