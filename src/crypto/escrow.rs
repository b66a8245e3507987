//! Escrow: a second way into every backup, for the day the working key is
//! lost (a KMS gone, a key file never copied, a host burnt with its disk).
//!
//! An escrow is an X25519 identity kept offline, in another place. The hosts
//! that back up hold its *escrow file* (`BKP-X25519-ESCROW:` and 128 hex
//! digits): the identity's public key R, and the key the identity seals
//! documents with (HKDF-SHA256 of its secret, as every identity's, see
//! `keys.rs`). With it, a host that holds a key
//!
//! - wraps every stream's data key to R as well as to its own key (stream
//!   format v2, see the `crypto` module), so the identity decrypts every
//!   stream, chunks included;
//! - seals every document twice: its own key's HMAC, and the escrow's (the
//!   seal's `escrow` member), and makes every tag (WAL object names, catalog
//!   tags) of 16-byte halves, its own and the escrow's.
//!
//! A config whose only key is the escrow identity (`identity_files`) is then
//! a key holder of the whole store: the escrow's seals verify as its current
//! key's, so manifests, tombstones, catalogs, sealed lists and WAL names are
//! all believed, and restores, `verify` and drills run as they did with the
//! working key.
//!
//! What the escrow file gives a thief of the host: the power to seal as the
//! escrow (never to decrypt: R is public). After a host is stolen, rotate the
//! working key *and* the escrow. A write-only host (`recipient`) takes no
//! escrow: its backups are read with the identity where restores run, and
//! that identity is what to keep a copy of offline.

use std::fmt;

use zeroize::Zeroizing;

use crate::exit::{coded, Code};

/// The text form of an escrow file's contents.
pub const ESCROW: &str = "BKP-X25519-ESCROW:";

/// What a backed-up host holds of an escrow: its public key and its seal key.
pub struct Escrow {
    id: String,
    public: [u8; 32],
    seal: ring::hmac::Key,
}

impl Escrow {
    /// From the contents of an escrow file; `origin` names it in errors,
    /// which never quote the text.
    pub fn from_text(text: &[u8], origin: &str) -> anyhow::Result<Escrow> {
        let mut raw = Zeroizing::new([0u8; 64]);
        let t = text.trim_ascii();
        let ok = t
            .strip_prefix(ESCROW.as_bytes())
            .is_some_and(|hex| hex::decode_to_slice(hex, &mut raw[..]).is_ok());
        if !ok {
            return Err(coded(
                Code::Config,
                format!(
                    "{origin} is not an escrow file ({ESCROW}<128 hex digits>): make one with `bkp key generate --type escrow PATH`, which writes the escrow file at PATH and its identity at PATH.identity"
                ),
            ));
        }
        let mut public = [0u8; 32];
        public.copy_from_slice(&raw[..32]);
        // The same check a recipient gets: a point of small order is refused.
        super::pubkey::parse_recipient(&format!(
            "{}{}",
            super::pubkey::RECIPIENT,
            hex::encode(public)
        ))
        .map_err(|_| {
            coded(
                Code::Config,
                format!("{origin} holds no usable X25519 public key: it is damaged; make a new escrow with `bkp key generate --type escrow PATH`"),
            )
        })?;
        Ok(Escrow {
            id: super::pubkey::x25519_id(&public),
            public,
            seal: ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &raw[32..]),
        })
    }

    /// The contents of the escrow file of the identity with public key
    /// `public` and seal secret `seal`.
    pub(super) fn text(public: &[u8; 32], seal: &[u8; 32]) -> Zeroizing<String> {
        Zeroizing::new(format!(
            "{ESCROW}{}{}\n",
            hex::encode(public),
            hex::encode(seal)
        ))
    }

    /// The escrow identity's id (`x-…`), which its stanzas and seals name.
    pub fn id(&self) -> &str {
        &self.id
    }

    pub(super) fn public(&self) -> &[u8; 32] {
        &self.public
    }

    /// The key the escrow's seals are made with.
    pub fn seal_key(&self) -> &ring::hmac::Key {
        &self.seal
    }
}

impl fmt::Debug for Escrow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Escrow")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}
