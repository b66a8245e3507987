//! The wire format of the code-12 ledger: account and transfer codes, the values
//! packed into a transfer's `user_data_128`, and the stable ids of bkp's accounts.

use anyhow::{bail, Result};
use serde::{Deserialize, Serialize};

use crate::kinds::Kind;

/// `code` of every bkp transfer.
pub const TRANSFER_CODE: u16 = 12;
/// `code` of the account of a source kind (debited by a backup).
pub const SOURCE_ACCOUNT_CODE: u16 = 1201;
/// `code` of the account of a store (credited by a backup).
pub const STORE_ACCOUNT_CODE: u16 = 1202;
/// `code` of the account that counts the bytes `verify` read from a store.
pub const VERIFIED_ACCOUNT_CODE: u16 = 1203;
/// `code` of the account that counts the bytes restores (and point-in-time
/// restores) read from a store.
pub const RESTORED_ACCOUNT_CODE: u16 = 1204;
/// A suggested ledger number for configs that do not set one.
pub const DEFAULT_LEDGER: u32 = 12;

macro_rules! wire_codes {
    ($ty:ident, $field:literal, $($var:ident = $val:literal),+ $(,)?) => {
        impl $ty {
            /// Every value, in code order.
            pub const ALL: &'static [$ty] = &[$($ty::$var),+];

            /// The number stored in the transfer. Extend with new values, never reuse one.
            pub fn code(self) -> u8 {
                match self { $($ty::$var => $val),+ }
            }

            /// The value stored as `code`; an unknown code is an error naming the field.
            pub fn from_code(code: u8) -> Result<Self> {
                match code {
                    $($val => Ok($ty::$var),)+
                    other => bail!("unknown {} code {} in a code-12 transfer", $field, other),
                }
            }
        }
    };
}

/// Kind of backup (`user_data_128` bits 120–127): each kind's
/// [`ledger_code`](crate::kinds::Descriptor::ledger_code).
pub type BackupType = Kind;

/// Full or incremental (`user_data_128` bits 112–119).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Scope {
    Full,
    Incremental,
}
wire_codes!(Scope, "scope", Full = 1, Incremental = 2);

/// Compression of the stored objects (`user_data_128` bits 104–111).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum CompressionCode {
    None,
    Gzip,
    Zstd,
}
wire_codes!(CompressionCode, "compression", None = 1, Gzip = 2, Zstd = 3);

/// Encryption of the stored objects (`user_data_128` bits 96–103).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum EncryptionCode {
    None,
    Aes256Gcm,
}
wire_codes!(EncryptionCode, "encryption", None = 1, Aes256Gcm = 2);

/// Outcome of the run (`user_data_128` bits 88–95).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Status {
    Started,
    Completed,
    Failed,
}
wire_codes!(Status, "status", Started = 1, Completed = 2, Failed = 3);

/// The subcommand that recorded the transfer (`user_data_32`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Operation {
    Snapshot,
    Logs,
    Export,
    Replicate,
    Verify,
    Cleanup,
    Restore,
}
wire_codes!(
    Operation,
    "operation",
    Snapshot = 1,
    Logs = 2,
    Export = 3,
    Replicate = 4,
    Verify = 5,
    Cleanup = 6,
    Restore = 7,
);

/// The fields packed into a transfer's `user_data_128`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Packed {
    pub backup_type: BackupType,
    pub scope: Scope,
    pub compression: CompressionCode,
    pub encryption: EncryptionCode,
    pub status: Status,
    pub retention_days: u16,
}

/// Packs `p`, most significant bits first: type 120–127, scope 112–119, compression
/// 104–111, encryption 96–103, status 88–95, retention days 72–87; bits 0–71 zero.
pub fn pack(p: &Packed) -> u128 {
    (u128::from(p.backup_type.ledger_code()) << 120)
        | (u128::from(p.scope.code()) << 112)
        | (u128::from(p.compression.code()) << 104)
        | (u128::from(p.encryption.code()) << 96)
        | (u128::from(p.status.code()) << 88)
        | (u128::from(p.retention_days) << 72)
}

/// Reverses [`pack`]; unknown codes or nonzero reserved bits are errors naming the field.
pub fn unpack(v: u128) -> Result<Packed> {
    if v & ((1u128 << 72) - 1) != 0 {
        bail!("user_data_128 {v:#034x} has reserved bits 0-71 set: not a bkp packing");
    }
    // Truncating casts pick out one field each.
    let byte = |shift: u32| (v >> shift) as u8;
    Ok(Packed {
        backup_type: {
            let code = byte(120);
            Kind::from_ledger_code(code).ok_or_else(|| {
                anyhow::anyhow!("unknown backup type code {code} in a code-12 transfer")
            })?
        },
        scope: Scope::from_code(byte(112))?,
        compression: CompressionCode::from_code(byte(104))?,
        encryption: EncryptionCode::from_code(byte(96))?,
        status: Status::from_code(byte(88))?,
        retention_days: (v >> 72) as u16,
    })
}

/// FNV-1a with 128 bits: a stable identifier scheme, not a security measure. Never
/// change it, the ids of accounts that already exist depend on it. TigerBeetle
/// reserves 0 and `u128::MAX`, which map to their neighbours.
fn fnv1a_128(data: &[u8]) -> u128 {
    const OFFSET: u128 = 0x6c62_272e_07bb_0142_62b8_2175_6295_c58d;
    const PRIME: u128 = 0x0000_0000_0100_0000_0000_0000_0000_013b;
    let h = data
        .iter()
        .fold(OFFSET, |h, &b| (h ^ u128::from(b)).wrapping_mul(PRIME));
    if h == 0 || h == u128::MAX {
        h ^ 1
    } else {
        h
    }
}

/// Account id of a source kind: FNV-1a-128 of `bkp/source/` + kind name.
pub fn source_account_id(t: BackupType) -> u128 {
    fnv1a_128(format!("bkp/source/{}", t.as_str()).as_bytes())
}

/// Account id of a store: FNV-1a-128 of `bkp/store/` + its identity, such as
/// `s3://bucket/prefix` or `file:///path` (callers must spell it the same way every run).
pub fn store_account_id(store_identity: &str) -> u128 {
    fnv1a_128(format!("bkp/store/{store_identity}").as_bytes())
}

/// The id of the transfer that records the deletion of backup `backup_id`.
pub fn cleanup_transfer_id(backup_id: u128) -> u128 {
    fnv1a_128(format!("bkp/cleanup/{backup_id:032x}").as_bytes())
}

/// Account id of the bytes `verify` read from a store: FNV-1a-128 of
/// `bkp/verified/` + the store's identity.
pub fn verified_account_id(store_identity: &str) -> u128 {
    fnv1a_128(format!("bkp/verified/{store_identity}").as_bytes())
}

/// The account credited with the bytes restores read from a store.
pub fn restored_account_id(store_identity: &str) -> u128 {
    fnv1a_128(format!("bkp/restored/{store_identity}").as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pack_puts_each_field_at_its_bits() {
        let p = Packed {
            backup_type: BackupType::Duckdb,
            scope: Scope::Incremental,
            compression: CompressionCode::Zstd,
            encryption: EncryptionCode::Aes256Gcm,
            status: Status::Completed,
            retention_days: 365,
        };
        // 02 | 02 | 03 | 02 | 02 | 016d | nine zero bytes
        assert_eq!(pack(&p), 0x0202_0302_0201_6d00_0000_0000_0000_0000);
        let ones = Packed {
            backup_type: BackupType::Tigerbeetle,
            scope: Scope::Full,
            compression: CompressionCode::None,
            encryption: EncryptionCode::None,
            status: Status::Started,
            retention_days: u16::MAX,
        };
        assert_eq!(pack(&ones), 0x0101_0101_01ff_ff00_0000_0000_0000_0000);
        assert_eq!(pack(&ones) & ((1u128 << 72) - 1), 0);
        assert_eq!(
            pack(&Packed {
                backup_type: BackupType::Kms,
                ..ones
            }) >> 120,
            4
        );
        assert_eq!(
            (pack(&Packed {
                status: Status::Failed,
                ..ones
            }) >> 88)
                & 0xff,
            3
        );
    }

    #[test]
    fn pack_unpack_round_trip_every_value() {
        let mut n = 0;
        for backup_type in BackupType::ALL {
            for &scope in Scope::ALL {
                for &compression in CompressionCode::ALL {
                    for &encryption in EncryptionCode::ALL {
                        for &status in Status::ALL {
                            for retention_days in [0, 1, 90, 365, u16::MAX] {
                                let p = Packed {
                                    backup_type,
                                    scope,
                                    compression,
                                    encryption,
                                    status,
                                    retention_days,
                                };
                                assert_eq!(unpack(pack(&p)).unwrap(), p);
                                n += 1;
                            }
                        }
                    }
                }
            }
        }
        assert_eq!(n, BackupType::ALL.len() * 2 * 3 * 2 * 3 * 5);
        for &op in Operation::ALL {
            assert_eq!(Operation::from_code(op.code()).unwrap(), op);
        }
    }

    #[test]
    fn unpack_names_the_bad_field() {
        let good = pack(&Packed {
            backup_type: BackupType::Duckdb,
            scope: Scope::Incremental,
            compression: CompressionCode::Zstd,
            encryption: EncryptionCode::Aes256Gcm,
            status: Status::Completed,
            retention_days: 90,
        });
        let cases = [
            (120, "backup type"),
            (112, "scope"),
            (104, "compression"),
            (96, "encryption"),
            (88, "status"),
        ];
        for (shift, field) in cases {
            for bad in [0u128, 9] {
                let v = (good & !(0xffu128 << shift)) | (bad << shift);
                let err = unpack(v).unwrap_err().to_string();
                assert!(err.contains(field), "{err}");
            }
        }
        assert!(unpack(good | 1)
            .unwrap_err()
            .to_string()
            .contains("reserved bits"));
        assert_eq!(Operation::from_code(7).unwrap(), Operation::Restore);
        assert!(Operation::from_code(8)
            .unwrap_err()
            .to_string()
            .contains("operation"));
    }

    #[test]
    fn ids_are_stable_distinct_and_nonzero() {
        // Published FNV-1a-128 test vectors.
        assert_eq!(fnv1a_128(b""), 0x6c62_272e_07bb_0142_62b8_2175_6295_c58d);
        assert_eq!(fnv1a_128(b"a"), 0xd228_cb69_6f1a_8caf_7891_2b70_4e4a_8964);
        let mut ids: Vec<u128> = BackupType::ALL
            .iter()
            .map(|&t| source_account_id(t))
            .collect();
        ids.push(store_account_id("s3://bucket/prefix"));
        ids.push(store_account_id("file:///srv/backups"));
        for (i, a) in ids.iter().enumerate() {
            assert!(*a != 0 && *a != u128::MAX);
            assert!(ids[i + 1..].iter().all(|b| b != a));
        }
        assert_eq!(
            source_account_id(BackupType::Tigerbeetle),
            fnv1a_128(b"bkp/source/tigerbeetle")
        );
        assert_eq!(
            store_account_id("file:///x"),
            fnv1a_128(b"bkp/store/file:///x")
        );
    }
}
