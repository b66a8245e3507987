//! Round trips and tampering of the stream format: every edge of the chunking,
//! the documented layout byte by byte, and each way a stream can be damaged.

use std::fmt;
use std::io::{self, Read, Write};

use ring::aead::{Aad, Nonce};
use sha2::{Digest, Sha256};

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

/// Asserts a config error whose message holds `needle` (shared with `keys.rs`).
#[track_caller]
pub(super) fn assert_config<T: fmt::Debug>(r: anyhow::Result<T>, needle: &str) {
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
        (9, 0x40, "header is corrupt"),    // chunk_log2 out of range
        (9, 1, "failed to unlock"),        // chunk_log2 13: valid, but in the AAD
        (10, 0x40, "header is corrupt"),   // key id length
        (13, 1, "not configured"),         // key id
        (13, 0x80, "not printable"),       // key id
        (29, 1, "header is corrupt"),      // params length
        (32, 1, "failed to unlock"),       // nonce prefix
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
        (8, 4, "needs a newer bkp"),
        (8, 3, "parameters of 0 bytes for method 3"),
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
fn streams_are_recognised_by_their_magic() {
    assert!(is_encrypted(&encrypt(b"x")[..8]));
    assert!(!is_encrypted(b"BKPSTRM") && !is_encrypted(b"PK\x03\x04...."));
}

fn identity(byte: u8) -> MasterKey {
    let text = format!("{}{}", pubkey::IDENTITY, hex::encode([byte; 32]));
    MasterKey::identity(text.as_bytes(), "test identity").unwrap()
}

fn recipient_of(byte: u8) -> MasterKey {
    let public = pubkey::x25519_public(&[byte; 32]);
    MasterKey::recipient(&format!("{}{}", pubkey::RECIPIENT, hex::encode(public))).unwrap()
}

#[test]
fn a_stream_to_a_recipient_opens_only_with_its_identity() {
    let plain = data(3 * CS + 5);
    let ct = encrypt_with(&plain, &recipient_of(4), 1000);
    // Method 3, the recipient's id, 32 bytes of parameters (the ephemeral key).
    assert_eq!(ct[8], METHOD_X25519);
    let id = recipient_of(4).id().to_string();
    assert_eq!(identity(4).id(), id);
    assert_eq!(&ct[11..11 + id.len()], id.as_bytes());
    assert_eq!(&ct[11 + id.len()..13 + id.len()], &32u16.to_be_bytes());
    assert_eq!(
        decrypt_with(&ct, &ring_of(identity(4)), 777).unwrap(),
        plain
    );
    // With old keys too: found by id.
    let ring = Keyring::new(key(1), vec![identity(9), identity(4)]);
    assert_eq!(decrypt_with(&ct, &ring, 4096).unwrap(), plain);

    // The write-only host itself cannot read it: a config error, not damage.
    let e = decrypt_with(&ct, &ring_of(recipient_of(4)), 1000).unwrap_err();
    let e = anyhow::Error::new(e);
    assert_eq!(classify(&e), Some(Code::Config), "{e:#}");
    assert!(format!("{e:#}").contains("write-only host"), "{e:#}");
    // Another identity does not have its id.
    assert_integrity(
        decrypt_with(&ct, &ring_of(identity(5)), 1000),
        "not configured",
    );
    // The ephemeral key is bound to the header: changing it fails the unwrap.
    let at = 13 + id.len();
    assert_integrity(
        decrypt_with(&flipped(&ct, at, 1), &ring_of(identity(4)), 1000),
        "failed to unlock",
    );
}

mod escrow {
    use super::*;

    fn escrow_pair() -> (MasterKey, Escrow) {
        let (identity_text, _) = pubkey::generate_identity().unwrap();
        let identity = MasterKey::identity(identity_text.as_bytes(), "identity").unwrap();
        let text = identity.escrow_text().unwrap();
        let escrow = Escrow::from_text(text.as_bytes(), "escrow file").unwrap();
        (identity, escrow)
    }

    fn encrypt_escrowed(plain: &[u8], key: &MasterKey, escrow: &[Escrow]) -> Vec<u8> {
        let mut w = EncryptWriter::with_escrow(Vec::new(), key, escrow).unwrap();
        w.write_all(plain).unwrap();
        w.finish().unwrap()
    }

    #[test]
    fn the_working_key_and_each_escrow_alone_decrypt_a_v2_stream() {
        let (id1, e1) = escrow_pair();
        let (id2, e2) = escrow_pair();
        let plain = data(200_000);
        let ct = encrypt_escrowed(&plain, &key(1), &[e1, e2]);
        assert_eq!(&ct[..8], b"BKPSTRM2");
        assert!(is_encrypted(&ct));
        assert_eq!(decrypt(&ct).unwrap(), plain);
        assert_eq!(decrypt_with(&ct, &ring_of(id1), 777).unwrap(), plain);
        assert_eq!(decrypt_with(&ct, &ring_of(id2), 777).unwrap(), plain);
        // Neither key: the error names every recipient.
        let err = decrypt_with(&ct, &ring_of(key(2)), 777).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains(&key(1).id) && msg.contains("escrow"), "{msg}");
        assert_eq!(
            classify(&anyhow::Error::from(err)),
            Some(crate::exit::Code::Integrity)
        );
    }

    #[test]
    fn a_passphrase_stream_with_an_escrow_reads_with_either() {
        let (id, e) = escrow_pair();
        let ct = encrypt_escrowed(b"hello", &pass("pw"), &[e]);
        assert_eq!(
            decrypt_with(&ct, &ring_of(pass("pw")), 3).unwrap(),
            b"hello"
        );
        assert_eq!(decrypt_with(&ct, &ring_of(id), 3).unwrap(), b"hello");
    }

    #[test]
    fn no_escrow_writes_v1_as_before() {
        let ct = encrypt_escrowed(b"x", &key(1), &[]);
        assert_eq!(&ct[..8], b"BKPSTRM1");
        assert_eq!(ct.len(), HDR + 1 + TAG_LEN);
    }

    #[test]
    fn every_header_byte_of_a_v2_stream_is_authenticated_for_every_reader() {
        let (id, e) = escrow_pair();
        let ct = encrypt_escrowed(&data(5000), &key(1), &[e]);
        // The header: core then two wrapped keys; flip each byte in turn.
        let core = 8 + 1 + 7 + 1 + (1 + 1 + 18 + 2) + (1 + 1 + 18 + 2 + 32);
        let header = core + 2 * WRAPPED_LEN;
        for i in 0..header {
            let mut bad = ct.clone();
            bad[i] ^= 0x01;
            for keys in [ring_of(key(1)), ring_of(id.for_chunks())] {
                assert!(
                    decrypt_with(&bad, &keys, 4096).is_err(),
                    "byte {i} was not checked"
                );
            }
        }
    }

    #[test]
    fn a_stanza_of_an_unknown_method_is_skipped() {
        let (_, e) = escrow_pair();
        let mut ct = encrypt_escrowed(b"data", &key(1), &[e]);
        // The escrow stanza's method byte (after the first stanza).
        let at = 8 + 1 + 7 + 1 + (1 + 1 + 18 + 2);
        assert_eq!(ct[at], 3);
        ct[at] = 9;
        // The first stanza still reads; the AAD changed with the byte, so
        // the data key does not unwrap: an integrity error, never a panic.
        let err = decrypt(&ct).unwrap_err();
        assert_eq!(
            classify(&anyhow::Error::from(err)),
            Some(crate::exit::Code::Integrity)
        );
    }

    #[test]
    fn an_escrow_file_that_is_not_one_is_a_config_error_that_quotes_nothing() {
        let err = Escrow::from_text(b"BKP-X25519-ESCROW:zz-secret", "escrow file /e").unwrap_err();
        let msg = format!("{err:#}");
        assert!(
            msg.contains("escrow file /e") && !msg.contains("secret"),
            "{msg}"
        );
        assert_eq!(classify(&err), Some(crate::exit::Code::Config));
        let zero = format!("{}{}", crate::crypto::escrow::ESCROW, "0".repeat(128));
        assert!(Escrow::from_text(zero.as_bytes(), "e").is_err());
    }
}
