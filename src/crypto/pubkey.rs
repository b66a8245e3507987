//! Public-key keys for write-only hosts: a host encrypts each stream to an
//! X25519 *recipient* (a public key) and seals its manifests with an Ed25519
//! *signing key* of its own, so that a stolen host can write new backups but
//! read none, and cannot forge another host's. Restores, `verify` and drills
//! run where the matching X25519 *identity* (the private key) is configured,
//! and trust the hosts whose Ed25519 public keys are listed as *signers*.
//!
//! Text forms (one line each; keys are 32 bytes, written as 64 hex digits):
//!
//! | what | form | where |
//! |---|---|---|
//! | recipient | `bkp-x25519:HEX` | `[encryption] recipient`, on the backed-up host |
//! | identity | `BKP-X25519-IDENTITY:HEX` | a file named by `identity_files`, where restores run |
//! | signer | `bkp-ed25519:HEX` | `[encryption] signers`, where restores run |
//! | signing key | `BKP-ED25519-SIGNING-KEY:HEX` (the seed) | a file named by `signing_key_file`, on the backed-up host |
//!
//! Key ids: `x-` (recipients and identities) or `s-` (signers) and 16 hex
//! digits of SHA-256 of a label and the public key: fingerprints, safe to print.
//!
//! Wrapping a stream's data key to a recipient R (method 3 of the stream
//! format): a fresh ephemeral X25519 secret e; shared = X25519(e, R), refused
//! if all zero; the key-encryption key is HKDF-SHA256(salt = E ‖ R, ikm =
//! shared, info = `bkp x25519 kek v1`), E being e's public key, which the
//! stream header carries as its parameters.

use std::io;

use ring::aead::LessSafeKey;
use ring::rand::SystemRandom;
use ring::signature::{Ed25519KeyPair, KeyPair, UnparsedPublicKey, ED25519};
use sha2::{Digest, Sha256};
use x25519_dalek::{PublicKey, StaticSecret};
use zeroize::Zeroizing;

use super::{aead_key, random};
use crate::exit::{coded, Code};

pub const RECIPIENT: &str = "bkp-x25519:";
pub const IDENTITY: &str = "BKP-X25519-IDENTITY:";
pub const SIGNER: &str = "bkp-ed25519:";
pub const SIGNING_KEY: &str = "BKP-ED25519-SIGNING-KEY:";

fn fingerprint(label: &[u8], prefix: &str, public: &[u8; 32]) -> String {
    let d = Sha256::new()
        .chain_update(label)
        .chain_update(public)
        .finalize();
    format!("{prefix}{}", hex::encode(&d[..8]))
}

/// The id of an X25519 recipient (and of its identity).
pub fn x25519_id(public: &[u8; 32]) -> String {
    fingerprint(b"bkp x25519 id v1\0", "x-", public)
}

/// The id of an Ed25519 signer.
pub fn ed25519_id(public: &[u8; 32]) -> String {
    fingerprint(b"bkp ed25519 id v1\0", "s-", public)
}

/// Decodes `PREFIX` + 64 hex digits (surrounding white space ignored) into 32
/// bytes. `what` names the text in errors, which never quote it.
fn decode(text: &[u8], prefix: &str, what: &str) -> anyhow::Result<Zeroizing<[u8; 32]>> {
    let mut out = Zeroizing::new([0u8; 32]);
    let t = text.trim_ascii();
    let ok = t
        .strip_prefix(prefix.as_bytes())
        .is_some_and(|hex| hex::decode_to_slice(hex, &mut out[..]).is_ok());
    if !ok {
        return Err(coded(
            Code::Config,
            format!("{what} is not of the form {prefix}<64 hex digits>: make one with `bkp key generate`"),
        ));
    }
    Ok(out)
}

/// A recipient's public key from its text form. A point of small order (all
/// zero, for one) would make every exchange with it zero: refused.
pub fn parse_recipient(text: &str) -> anyhow::Result<[u8; 32]> {
    let public = *decode(text.as_bytes(), RECIPIENT, "the recipient")?;
    let probe = StaticSecret::from([7u8; 32]).diffie_hellman(&PublicKey::from(public));
    if probe.to_bytes().iter().all(|b| *b == 0) {
        return Err(coded(
            Code::Config,
            "the recipient is not a usable X25519 public key: use the line `bkp key generate --type x25519` printed",
        ));
    }
    Ok(public)
}

/// An identity's secret from its text form (a file's contents).
pub fn parse_identity(text: &[u8], origin: &str) -> anyhow::Result<Zeroizing<[u8; 32]>> {
    decode(text, IDENTITY, origin)
}

/// The public key of an X25519 secret.
pub fn x25519_public(secret: &[u8; 32]) -> [u8; 32] {
    PublicKey::from(&StaticSecret::from(*secret)).to_bytes()
}

/// Fresh ephemeral parameters and the key-encryption key for `recipient`.
pub(super) fn wrap_to(
    rng: &SystemRandom,
    recipient: &[u8; 32],
) -> io::Result<([u8; 32], LessSafeKey)> {
    let e = StaticSecret::from(*Zeroizing::new(random::<32>(rng)?));
    let ephemeral = PublicKey::from(&e).to_bytes();
    let shared = Zeroizing::new(e.diffie_hellman(&PublicKey::from(*recipient)).to_bytes());
    let kek = kek(&shared, &ephemeral, recipient)
        .ok_or_else(|| io::Error::other("the recipient is not a usable X25519 public key"))?;
    Ok((ephemeral, kek))
}

/// The key-encryption key of a stream wrapped to the identity `secret`, from
/// the header's ephemeral key; `None` for a degenerate exchange.
pub(super) fn unwrap_with(secret: &[u8; 32], ephemeral: &[u8; 32]) -> Option<LessSafeKey> {
    let s = StaticSecret::from(*secret);
    let public = PublicKey::from(&s).to_bytes();
    let shared = Zeroizing::new(s.diffie_hellman(&PublicKey::from(*ephemeral)).to_bytes());
    kek(&shared, ephemeral, &public)
}

/// X25519(`secret`, `peer`); `None` for a degenerate exchange (a peer of
/// small order, which a stored naming may name).
pub(super) fn exchange(secret: &[u8; 32], peer: &[u8; 32]) -> Option<Zeroizing<[u8; 32]>> {
    let s = StaticSecret::from(*secret);
    let shared = Zeroizing::new(s.diffie_hellman(&PublicKey::from(*peer)).to_bytes());
    (!shared.iter().all(|b| *b == 0)).then_some(shared)
}

fn kek(shared: &[u8; 32], ephemeral: &[u8; 32], recipient: &[u8; 32]) -> Option<LessSafeKey> {
    if shared.iter().all(|b| *b == 0) {
        return None;
    }
    struct Len;
    impl ring::hkdf::KeyType for Len {
        fn len(&self) -> usize {
            32
        }
    }
    let salt = [&ephemeral[..], &recipient[..]].concat();
    let prk = ring::hkdf::Salt::new(ring::hkdf::HKDF_SHA256, &salt).extract(shared);
    let mut k = Zeroizing::new([0u8; 32]);
    prk.expand(&[b"bkp x25519 kek v1"], Len)
        .and_then(|okm| okm.fill(&mut k[..]))
        .ok()?;
    Some(aead_key(&k[..]))
}

/// A host's Ed25519 signing key: it seals the documents the host writes.
pub struct SigningKey {
    id: String,
    pair: Ed25519KeyPair,
    /// The X25519 secret this host names its chunks with (derived from the
    /// seed, see `MasterKey::new_chunk_naming`): no other host can compute it.
    naming: Zeroizing<[u8; 32]>,
}

impl SigningKey {
    /// From the contents of a signing-key file; `origin` names it in errors.
    pub fn from_text(text: &[u8], origin: &str) -> anyhow::Result<SigningKey> {
        let seed = decode(text, SIGNING_KEY, origin)?;
        let pair = Ed25519KeyPair::from_seed_unchecked(&seed[..]).map_err(|_| {
            coded(
                Code::Config,
                format!("{origin} is not a usable Ed25519 key"),
            )
        })?;
        let public: [u8; 32] = pair.public_key().as_ref().try_into().map_err(|_| {
            coded(
                Code::Config,
                format!("{origin} is not a usable Ed25519 key"),
            )
        })?;
        Ok(SigningKey {
            id: ed25519_id(&public),
            pair,
            naming: super::hkdf32(&seed[..], super::CHUNK_NAMING_INFO),
        })
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    /// This host's chunk-naming secret (never printed, never stored).
    pub(super) fn naming_secret(&self) -> &[u8; 32] {
        &self.naming
    }

    pub fn sign(&self, message: &[u8]) -> Vec<u8> {
        self.pair.sign(message).as_ref().to_vec()
    }

    /// The signer that verifies what this key signs.
    pub fn verifier(&self) -> Verifier {
        let mut public = [0u8; 32];
        public.copy_from_slice(self.pair.public_key().as_ref());
        Verifier {
            id: self.id.clone(),
            public,
        }
    }
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKey")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

/// An Ed25519 public key whose seals are trusted.
#[derive(Debug, Clone)]
pub struct Verifier {
    pub id: String,
    public: [u8; 32],
}

impl Verifier {
    pub fn parse(text: &str) -> anyhow::Result<Verifier> {
        let public = *decode(text.as_bytes(), SIGNER, "a signer in [encryption] signers")?;
        Ok(Verifier {
            id: ed25519_id(&public),
            public,
        })
    }

    pub fn verify(&self, message: &[u8], signature: &[u8]) -> bool {
        UnparsedPublicKey::new(&ED25519, self.public)
            .verify(message, signature)
            .is_ok()
    }

    pub fn text(&self) -> String {
        format!("{SIGNER}{}", hex::encode(self.public))
    }
}

/// A new X25519 identity: its file contents and its recipient's text form.
pub fn generate_identity() -> io::Result<(Zeroizing<String>, String)> {
    let secret = Zeroizing::new(random::<32>(&SystemRandom::new())?);
    let public = x25519_public(&secret);
    Ok((
        Zeroizing::new(format!("{IDENTITY}{}\n", hex::encode(&secret[..]))),
        format!("{RECIPIENT}{}", hex::encode(public)),
    ))
}

/// A new Ed25519 signing key: its file contents and its signer's text form.
pub fn generate_signing_key() -> anyhow::Result<(Zeroizing<String>, String)> {
    let seed = Zeroizing::new(random::<32>(&SystemRandom::new())?);
    let text = Zeroizing::new(format!("{SIGNING_KEY}{}\n", hex::encode(&seed[..])));
    let signer = SigningKey::from_text(text.as_bytes(), "the new signing key")?
        .verifier()
        .text();
    Ok((text, signer))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_wrap_to_a_recipient_opens_only_with_its_identity() {
        let rng = SystemRandom::new();
        let secret = [5u8; 32];
        let public = x25519_public(&secret);
        let (eph, kek) = wrap_to(&rng, &public).unwrap();
        let mut sealed = vec![1u8; 32];
        let nonce = ring::aead::Nonce::assume_unique_for_key([0; 12]);
        kek.seal_in_place_append_tag(nonce, ring::aead::Aad::empty(), &mut sealed)
            .unwrap();
        let open = |k: LessSafeKey| {
            let mut s = sealed.clone();
            let nonce = ring::aead::Nonce::assume_unique_for_key([0; 12]);
            k.open_in_place(nonce, ring::aead::Aad::empty(), &mut s)
                .map(|p| p.to_vec())
                .ok()
        };
        assert_eq!(
            open(unwrap_with(&secret, &eph).unwrap()),
            Some(vec![1u8; 32])
        );
        assert_eq!(open(unwrap_with(&[6u8; 32], &eph).unwrap()), None);
        // A low-order ephemeral key gives an all-zero secret: refused.
        assert!(unwrap_with(&secret, &[0u8; 32]).is_none());
    }

    #[test]
    fn text_forms_round_trip_and_are_refused_when_wrong() {
        let (identity, recipient) = generate_identity().unwrap();
        let secret = parse_identity(identity.as_bytes(), "f").unwrap();
        assert_eq!(
            format!("{RECIPIENT}{}", hex::encode(x25519_public(&secret))),
            recipient
        );
        assert!(parse_recipient(&recipient).is_ok());
        assert!(parse_recipient(&recipient[..recipient.len() - 1]).is_err());
        assert!(parse_recipient(&format!("{RECIPIENT}{}", "00".repeat(32))).is_err());
        assert!(parse_identity(recipient.as_bytes(), "f").is_err());

        let (key, signer) = generate_signing_key().unwrap();
        let k = SigningKey::from_text(key.as_bytes(), "f").unwrap();
        let v = Verifier::parse(&signer).unwrap();
        assert_eq!(k.id(), v.id);
        let sig = k.sign(b"m");
        assert!(v.verify(b"m", &sig));
        assert!(!v.verify(b"n", &sig));
        let e = Verifier::parse("bkp-ed25519:00").unwrap_err();
        assert!(!format!("{e:#}").contains("00"), "{e:#}");
    }
}
