//! One run as the ledger records it ([`Record`]), and the TigerBeetle transfer and
//! accounts it becomes.

use anyhow::{bail, Result};
use serde::{Deserialize, Serialize};
use tigerbeetle_unofficial as tb;

use super::codes::*;

/// One run, as recorded in the ledger and in the spool.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    /// The run's backup id (UUIDv7 bytes); for `cleanup`, the id of the deleted
    /// backup; for `verify` and `restore`, the run's own id.
    #[serde(with = "hex_id")]
    pub backup_id: [u8; 16],
    pub backup_type: BackupType,
    pub scope: Scope,
    pub compression: CompressionCode,
    pub encryption: EncryptionCode,
    pub status: Status,
    pub retention_days: u16,
    pub operation: Operation,
    pub started_at_unix_ns: u64,
    /// Bytes stored (for `cleanup`: bytes deleted); must be 0 when `status` is failed.
    pub amount: u128,
    pub store_identity: String,
}

impl Record {
    /// The fields that go into `user_data_128`.
    pub fn packed(&self) -> Packed {
        Packed {
            backup_type: self.backup_type,
            scope: self.scope,
            compression: self.compression,
            encryption: self.encryption,
            status: self.status,
            retention_days: self.retention_days,
        }
    }

    /// The transfer id: the backup id read big-endian, or for `cleanup` FNV-1a-128
    /// of `bkp/cleanup/` + the deleted backup's id in hex (one reversal per backup).
    pub fn transfer_id(&self) -> Result<u128> {
        let id = u128::from_be_bytes(self.backup_id);
        if id == 0 || id == u128::MAX {
            bail!("backup id {id:032x} is reserved by TigerBeetle and cannot identify a transfer");
        }
        Ok(match self.operation {
            Operation::Cleanup => cleanup_transfer_id(id),
            _ => id,
        })
    }

    /// The transfer for `ledger`, after checking what TigerBeetle would reject.
    pub(super) fn transfer(&self, ledger: u32) -> Result<tb::Transfer> {
        let id = self.transfer_id()?;
        if ledger == 0 {
            bail!("ledger 0 is reserved by TigerBeetle: set [ledger] ledger to a nonzero number");
        }
        if self.store_identity.is_empty() {
            bail!("the ledger record for transfer {id:032x} names no store");
        }
        if self.status == Status::Failed && self.amount != 0 {
            bail!(
                "the ledger record of failed run {id:032x} must have amount 0, not {}",
                self.amount
            );
        }
        let (source, store) = (
            source_account_id(self.backup_type),
            store_account_id(&self.store_identity),
        );
        let (debit, credit) = match self.operation {
            Operation::Cleanup => (store, source),
            // Bytes read to verify are counted apart: the store's balance stays
            // the bytes it retains.
            Operation::Verify => (source, verified_account_id(&self.store_identity)),
            // So are the bytes a restore read.
            Operation::Restore => (source, restored_account_id(&self.store_identity)),
            _ => (source, store),
        };
        Ok(tb::Transfer::new(id)
            .with_debit_account_id(debit)
            .with_credit_account_id(credit)
            .with_amount(self.amount)
            .with_ledger(ledger)
            .with_code(TRANSFER_CODE)
            .with_user_data_128(pack(&self.packed()))
            .with_user_data_64(self.started_at_unix_ns)
            .with_user_data_32(self.operation.code().into()))
    }

    /// The accounts the transfer moves between (`ledger` was checked nonzero).
    pub(super) fn accounts(&self, ledger: u32) -> Vec<tb::Account> {
        let mut accounts = vec![
            tb::Account::new(
                source_account_id(self.backup_type),
                ledger,
                SOURCE_ACCOUNT_CODE,
            )
            .with_user_data_32(self.backup_type.ledger_code().into()),
            tb::Account::new(
                store_account_id(&self.store_identity),
                ledger,
                STORE_ACCOUNT_CODE,
            ),
        ];
        if self.operation == Operation::Verify {
            accounts.push(tb::Account::new(
                verified_account_id(&self.store_identity),
                ledger,
                VERIFIED_ACCOUNT_CODE,
            ));
        }
        if self.operation == Operation::Restore {
            accounts.push(tb::Account::new(
                restored_account_id(&self.store_identity),
                ledger,
                RESTORED_ACCOUNT_CODE,
            ));
        }
        accounts
    }
}

/// `[u8; 16]` as 32 hex digits in JSON.
mod hex_id {
    use serde::{de::Error, Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(id: &[u8; 16], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format!("{:032x}", u128::from_be_bytes(*id)))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<[u8; 16], D::Error> {
        let s = String::deserialize(d)?;
        if s.len() != 32 {
            return Err(D::Error::custom(format!(
                "backup id {s:?} is not 32 hex digits"
            )));
        }
        u128::from_str_radix(&s, 16)
            .map(u128::to_be_bytes)
            .map_err(|e| D::Error::custom(format!("backup id {s:?}: {e}")))
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    pub(crate) fn sample() -> Record {
        Record {
            backup_id: 0x0190_a1b2_c3d4_7e5f_8a9b_0c1d_2e3f_4a5bu128.to_be_bytes(),
            backup_type: BackupType::Duckdb,
            scope: Scope::Incremental,
            compression: CompressionCode::Zstd,
            encryption: EncryptionCode::Aes256Gcm,
            status: Status::Completed,
            retention_days: 90,
            operation: Operation::Export,
            started_at_unix_ns: 1_760_000_000_123_456_789,
            amount: 123_456,
            store_identity: "s3://bucket/prefix".into(),
        }
    }

    #[test]
    fn transfer_follows_the_record() {
        let rec = sample();
        let t = rec.transfer(12).unwrap();
        assert_eq!(t.id(), 0x0190_a1b2_c3d4_7e5f_8a9b_0c1d_2e3f_4a5b);
        assert_eq!(t.debit_account_id(), source_account_id(BackupType::Duckdb));
        assert_eq!(
            t.credit_account_id(),
            store_account_id("s3://bucket/prefix")
        );
        assert_eq!((t.amount(), t.ledger(), t.code()), (123_456, 12, 12));
        assert_eq!(unpack(t.user_data_128()).unwrap(), rec.packed());
        assert_eq!(
            (t.user_data_64(), t.user_data_32()),
            (rec.started_at_unix_ns, 3)
        );
        assert_eq!(
            (t.flags().bits(), t.timeout(), t.as_raw().timestamp),
            (0, 0, 0)
        );

        let undo = Record {
            operation: Operation::Cleanup,
            ..rec.clone()
        };
        let u = undo.transfer(12).unwrap();
        assert_ne!(u.id(), t.id());
        assert_eq!(u.id(), undo.transfer_id().unwrap());
        assert_eq!(
            (u.debit_account_id(), u.credit_account_id()),
            (t.credit_account_id(), t.debit_account_id())
        );

        for id in [0, u128::MAX] {
            let bad = Record {
                backup_id: id.to_be_bytes(),
                ..rec.clone()
            };
            assert!(bad
                .transfer(12)
                .unwrap_err()
                .to_string()
                .contains("reserved"));
        }
        assert!(rec.transfer(0).is_err());
        let failed = Record {
            status: Status::Failed,
            ..rec.clone()
        };
        assert!(failed.transfer(12).is_err());
        assert!(Record {
            amount: 0,
            ..failed
        }
        .transfer(12)
        .is_ok());
    }
}
