//! Backup ids: UUIDv7, so ids sort by creation time, embed that time, and map
//! one-to-one onto TigerBeetle's 128-bit transfer ids.

use std::fmt;
use std::str::FromStr;

use ring::rand::{SecureRandom, SystemRandom};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use time::OffsetDateTime;
use uuid::fmt::Hyphenated;
use uuid::{Builder, Uuid};

/// Fills a buffer from the operating system's CSPRNG.
pub fn fill_random(buf: &mut [u8]) {
    // The OS random source failing is not recoverable and not caused by input.
    SystemRandom::new()
        .fill(buf)
        .expect("the operating system's random number generator failed");
}

pub fn random_u64() -> u64 {
    let mut b = [0u8; 8];
    fill_random(&mut b);
    u64::from_le_bytes(b)
}

/// A backup id. Its bytes order as the id sorts (big-endian), which for UUIDv7
/// is creation order; its text is the lowercase hyphenated UUID form stored in
/// manifests and object keys.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct BackupId(Uuid);

impl BackupId {
    /// A new UUIDv7 for `now`: 48 bits of Unix milliseconds, version 7, 74 random bits.
    pub fn new_v7(now: OffsetDateTime) -> Self {
        let ms = (now.unix_timestamp_nanos() / 1_000_000).max(0) as u64;
        let mut random = [0u8; 10];
        fill_random(&mut random);
        BackupId(Builder::from_unix_timestamp_millis(ms, &random).into_uuid())
    }

    /// The smallest id of the millisecond `t` (not itself a UUIDv7): every id
    /// made at `t` or later sorts after it, as bytes and as text.
    pub fn floor_at(t: OffsetDateTime) -> Self {
        let ms = (t.unix_timestamp_nanos() / 1_000_000).max(0) as u128;
        BackupId(Uuid::from_u128((ms & ((1 << 48) - 1)) << 80))
    }

    pub fn from_bytes(b: [u8; 16]) -> Self {
        BackupId(Uuid::from_bytes(b))
    }

    /// The id a ledger transfer carries (the bytes read big-endian), back as an id.
    pub fn from_u128(v: u128) -> Self {
        BackupId(Uuid::from_u128(v))
    }

    pub fn as_bytes(&self) -> [u8; 16] {
        *self.0.as_bytes()
    }

    pub fn as_u128(&self) -> u128 {
        self.0.as_u128()
    }

    /// The creation time embedded in a UUIDv7 (millisecond precision). Read from
    /// the first 48 bits whatever the version nibble says, as ids always were.
    pub fn timestamp(&self) -> Option<OffsetDateTime> {
        let mut ms = [0u8; 8];
        ms[2..].copy_from_slice(&self.0.as_bytes()[..6]);
        let ms = u64::from_be_bytes(ms) as i128;
        OffsetDateTime::from_unix_timestamp_nanos(ms * 1_000_000).ok()
    }
}

impl fmt::Display for BackupId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0.hyphenated(), f)
    }
}

impl fmt::Debug for BackupId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl FromStr for BackupId {
    type Err = anyhow::Error;
    /// Only the hyphenated form (8-4-4-4-12 hex digits, either case); the other
    /// spellings `uuid` knows (simple, braced, URN) are not backup ids.
    fn from_str(s: &str) -> anyhow::Result<Self> {
        match s.parse::<Hyphenated>() {
            Ok(h) => Ok(BackupId(h.into_uuid())),
            Err(_) => anyhow::bail!(
                "{s:?} is not a backup id (expected a UUID like 0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b)"
            ),
        }
    }
}

impl Serialize for BackupId {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for BackupId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v7_round_trips_and_sorts_by_time() {
        let t1 = OffsetDateTime::from_unix_timestamp(1_700_000_000).unwrap();
        let t2 = t1 + time::Duration::milliseconds(1);
        let a = BackupId::new_v7(t1);
        let b = BackupId::new_v7(t2);
        assert!(a < b);
        assert_eq!(a.timestamp(), Some(t1));
        let s = a.to_string();
        assert_eq!(s.len(), 36);
        assert_eq!(&s[14..15], "7", "version nibble");
        assert_eq!(s.parse::<BackupId>().unwrap(), a);
        assert_ne!(a.as_u128(), 0);
        assert!("not-an-id".parse::<BackupId>().is_err());
        // The text and the ledger's u128 both read the bytes big-endian.
        let fixed = BackupId::from_u128(0x0190a1b2_c3d4_7e5f_8a9b_0c1d2e3f4a5b);
        assert_eq!(fixed.to_string(), "0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b");
        assert_eq!(fixed.as_bytes()[0], 0x01);
        assert_eq!(
            "0190A1B2-C3D4-7E5F-8A9B-0C1D2E3F4A5B"
                .parse::<BackupId>()
                .unwrap(),
            fixed
        );
        assert_eq!(BackupId::from_bytes(fixed.as_bytes()), fixed);
        assert!("0190a1b2c3d47e5f8a9b0c1d2e3f4a5b"
            .parse::<BackupId>()
            .is_err());
    }

    #[test]
    fn misplaced_hyphens_and_odd_text_are_refused_without_panicking() {
        let good = "0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b";
        assert!(good.parse::<BackupId>().is_ok());
        for bad in [
            // Four hyphens and 32 hex digits, but not where a UUID has them.
            "0190a1b2c-3d4-7e5f-8a9b-0c1d2e3f4a5b",
            "0190a1b2-c3d47-e5f-8a9b-0c1d2e3f4a5b",
            "-0190a1b2c3d4-7e5f-8a9b-0c1d2e3f4a5b",
            "0190a1b2-c3d4-7e5f-8a9b0c1d2e3f4a5b-",
            "0190a1b2--c3d47e5f-8a9b-0c1d2e3f4a5b",
            // Other UUID spellings are not backup ids either.
            "{0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5}",
            "urn:uuid:0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b",
            // Untrusted text from a store: multibyte characters, signs, blanks.
            "0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4aé",
            "é190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b",
            "+190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b",
            " 190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b",
            "0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b\n",
            "",
            "------------------------------------",
        ] {
            assert!(bad.parse::<BackupId>().is_err(), "{bad:?} was accepted");
        }
    }
}
