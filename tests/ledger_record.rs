//! The code-12 audit record of a run, against a real TigerBeetle cluster: found by
//! lookup with the right amount and packed fields; spooled when the cluster is
//! down and sent exactly once by the next run.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use bkp::ledger::{self, LedgerConfig};
use common::{assert_exit, formatted_data_file, run_bkp, TigerBeetle};

fn config(dir: &Path, data: &Path, ledger_address: &str, ledger_number: u32) -> PathBuf {
    let cfg = dir.join("bkp.toml");
    fs::write(
        &cfg,
        format!(
            "work_dir = \"work\"\n[store]\ntype = \"local\"\npath = \"store\"\n[encryption]\nenabled = false\n\
             [compression]\nalgorithm = \"gzip\"\nlevel = 1\n\
             [tigerbeetle]\ndata_file = \"{}\"\nretention_days = 400\n\
             [ledger]\naddresses = \"{ledger_address}\"\nledger = {ledger_number}\ntimeout = \"3s\"\n",
            data.display()
        ),
    )
    .unwrap();
    cfg
}

fn snapshot(cfg: &Path) -> (String, u64, String) {
    let out = run_bkp(
        &["--config", cfg.to_str().unwrap(), "--json", "snapshot"],
        &[],
    );
    assert_exit(&out, 0);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let m = &v["manifest"];
    (
        m["id"].as_str().unwrap().to_string(),
        // Bytes the backup added: its new chunks and its chunk list.
        m["chunks"]["added_bytes"].as_u64().unwrap()
            + m["chunks"]["list"]["size"].as_u64().unwrap(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn transfer_id(id: &str) -> u128 {
    u128::from_str_radix(&id.replace('-', ""), 16).unwrap()
}

fn ledger_cfg(address: &str, ledger_number: u32, dir: &Path) -> LedgerConfig {
    LedgerConfig {
        cluster_id: 0,
        addresses: address.to_string(),
        ledger: ledger_number,
        timeout: Duration::from_secs(10),
        spool_dir: dir.join("unused-spool"),
    }
}

#[test]
fn snapshot_records_a_code_12_transfer_with_packed_fields() {
    let tb = common::shared_ledger();
    let dir = tempfile::tempdir().unwrap();
    let data = formatted_data_file(dir.path());
    let cfg = config(dir.path(), &data, &tb.address(), 1201);
    let (id, size, _) = snapshot(&cfg);

    let lc = ledger_cfg(&tb.address(), 1201, dir.path());
    let t = ledger::lookup(&lc, transfer_id(&id))
        .unwrap()
        .expect("the transfer exists");
    assert_eq!(t.amount, size as u128);
    assert_eq!(t.code, 12);
    assert_eq!(t.ledger, 1201);
    assert_eq!(
        t.debit_account_id,
        ledger::source_account_id(ledger::BackupType::Tigerbeetle)
    );
    let fields = ledger::unpack(t.user_data_128).unwrap();
    assert_eq!(fields.backup_type, ledger::BackupType::Tigerbeetle);
    assert_eq!(fields.scope, ledger::Scope::Full);
    assert_eq!(fields.compression, ledger::CompressionCode::Gzip);
    assert_eq!(fields.encryption, ledger::EncryptionCode::None);
    assert_eq!(fields.status, ledger::Status::Completed);
    assert_eq!(fields.retention_days, 400);
    // The top byte is the backup type, as PRD-022a lays out.
    assert_eq!(t.user_data_128 >> 120, 1);
}

#[test]
fn unreachable_cluster_spools_and_the_next_run_sends_once() {
    let mut tb = TigerBeetle::start();
    let address = tb.address();
    tb.stop();

    let dir = tempfile::tempdir().unwrap();
    let data = formatted_data_file(dir.path());
    let cfg = config(dir.path(), &data, &address, 77);
    let began = Instant::now();
    let (first, first_size, stderr) = snapshot(&cfg);
    assert!(
        began.elapsed() < Duration::from_secs(60),
        "run took {:?}",
        began.elapsed()
    );
    assert!(stderr.contains("spooled"), "{stderr}");
    let spool = dir.path().join("work/ledger-spool");
    assert_eq!(
        fs::read_dir(&spool).unwrap().count(),
        1,
        "one spooled record"
    );

    tb.restart();
    let (second, second_size, _) = snapshot(&cfg);
    assert_eq!(fs::read_dir(&spool).unwrap().count(), 0, "spool drained");

    let lc = ledger_cfg(&tb.address(), 77, dir.path());
    for (id, size) in [(&first, first_size), (&second, second_size)] {
        let t = ledger::lookup(&lc, transfer_id(id))
            .unwrap()
            .expect("transfer recorded");
        assert_eq!(t.amount, size as u128);
    }
    // Sent once: the store account holds exactly the two backups' bytes.
    let store_account = t_credit(&lc, &first);
    let (_, credits) = ledger::account_balances(&lc, store_account)
        .unwrap()
        .unwrap();
    assert_eq!(credits, (first_size + second_size) as u128);

    // A third run finds nothing to resend and adds only its own bytes.
    let (_, third_size, _) = snapshot(&cfg);
    let (_, credits) = ledger::account_balances(&lc, store_account)
        .unwrap()
        .unwrap();
    assert_eq!(credits, (first_size + second_size + third_size) as u128);
}

fn t_credit(lc: &LedgerConfig, id: &str) -> u128 {
    ledger::lookup(lc, transfer_id(id))
        .unwrap()
        .unwrap()
        .credit_account_id
}

#[test]
fn a_restore_is_recorded_apart_from_the_bytes_the_store_retains() {
    let tb = common::shared_ledger();
    let dir = tempfile::tempdir().unwrap();
    let data = formatted_data_file(dir.path());
    // The shared cluster's bkp accounts exist on ledger 1201 already (account
    // ids do not depend on the ledger).
    let cfg = config(dir.path(), &data, &tb.address(), 1201);
    let (id, size, _) = snapshot(&cfg);
    let lc = ledger_cfg(&tb.address(), 1201, dir.path());
    let store_account = t_credit(&lc, &id);
    let target = dir.path().join("restored");
    let out = run_bkp(
        &[
            "--config",
            cfg.to_str().unwrap(),
            "--verbose",
            "restore",
            "latest",
            "--target",
            target.to_str().unwrap(),
        ],
        &[],
    );
    assert_exit(&out, 0);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let transfer = stderr
        .lines()
        .find_map(|l| l.split("ledger: transfer ").nth(1))
        .and_then(|t| t.split_whitespace().next())
        .unwrap_or_else(|| panic!("no ledger record named: {stderr}"));
    let t = ledger::lookup(&lc, u128::from_str_radix(transfer, 16).unwrap())
        .unwrap()
        .expect("the restore's transfer exists");
    assert_eq!(t.user_data_32, 7, "operation restore");
    assert_eq!(
        t.debit_account_id,
        ledger::source_account_id(ledger::BackupType::Tigerbeetle)
    );
    assert_ne!(t.credit_account_id, store_account);
    // The bytes read: the object (a local store is verified in place, then
    // read again for use) and the manifest that named it.
    assert!(t.amount > size as u128, "{} <= {size}", t.amount);
    assert!(t.amount < 2 * size as u128 + 64 * 1024, "{}", t.amount);
    let fields = ledger::unpack(t.user_data_128).unwrap();
    assert_eq!(fields.status, ledger::Status::Completed);
    // The store account still holds exactly the bytes stored.
    let (_, credits) = ledger::account_balances(&lc, store_account)
        .unwrap()
        .unwrap();
    assert_eq!(credits, size as u128);
}
