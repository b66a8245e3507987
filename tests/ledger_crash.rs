//! Runs SIGKILLed between the store and the audit ledger (`BKP_FAILPOINT`, see
//! `src/failpoint.rs`) leave the two agreeing again after the next run, or after
//! one `verify`: a backup whose manifest was stored but whose code-12 transfer
//! was never sent is recorded late, with the amount its sealed manifest gives;
//! chunks a killed snapshot uploaded are counted by the snapshot that first
//! names them. Real TigerBeetle (the ledger and the data file's replica), a
//! local store and S3 on SeaweedFS.

mod common;

use std::fs;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::time::Duration;

use bkp::ledger::{self, LedgerConfig};
use common::{assert_exit, json, repl, setup, walk, Setup, StoreKind, TigerBeetle};

fn extra() -> String {
    format!(
        "[ledger]\naddresses = \"{}\"\nledger = 12\ntimeout = \"5s\"\n",
        common::shared_ledger().address()
    )
}

fn ledger_cfg(s: &Setup) -> LedgerConfig {
    LedgerConfig {
        cluster_id: 0,
        addresses: common::shared_ledger().address(),
        ledger: 12,
        timeout: Duration::from_secs(10),
        spool_dir: s.path("unused-spool"),
    }
}

/// Runs `bkp snapshot` with `BKP_FAILPOINT=point` and checks that it died by SIGKILL.
#[track_caller]
fn killed_snapshot(s: &Setup, point: &str) {
    let mut env = s.env.clone();
    env.push(("BKP_FAILPOINT".into(), point.into()));
    let out = common::run_bkp(&["--config", s.config.to_str().unwrap(), "snapshot"], &env);
    assert_eq!(
        out.status.signal(),
        Some(9),
        "`bkp snapshot` at {point} was not SIGKILLed: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A snapshot that succeeds: its JSON report.
fn snapshot(s: &Setup) -> serde_json::Value {
    let out = s.bkp(&["--json", "snapshot"]);
    assert_exit(&out, 0);
    json(&out)
}

/// `bkp --json verify`: its exit code and report.
fn verify(s: &Setup) -> (i32, serde_json::Value) {
    let out = s.bkp(&["--json", "verify"]);
    let code = out.status.code().unwrap_or(-1);
    (code, json(&out))
}

/// The spooled ledger records (files `*.json`) in the setup's work directory.
fn spooled(s: &Setup) -> Vec<String> {
    match fs::read_dir(s.path("work/ledger-spool")) {
        Ok(d) => d
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".json"))
            .collect(),
        Err(_) => Vec::new(),
    }
}

fn transfer_id(id: &str) -> u128 {
    u128::from_str_radix(&id.replace('-', ""), 16).unwrap()
}

/// Checks what a clean audit says, and that the store account's balance, read
/// from the cluster, is the bytes the manifests retain.
#[track_caller]
fn assert_balanced(s: &Setup, store_identity: &str, what: &str) {
    let (code, report) = verify(s);
    let ledger_report = &report["ledger"];
    assert_eq!(code, 0, "{what}: verify failed: {report:#}");
    assert_eq!(ledger_report["checked"], true, "{what}: {report:#}");
    assert_eq!(
        ledger_report["problems"],
        serde_json::json!([]),
        "{what}: {report:#}"
    );
    assert_eq!(
        ledger_report["pending"],
        serde_json::json!([]),
        "{what}: {report:#}"
    );
    let retained = ledger_report["retained_bytes"].as_u64().unwrap();
    assert_eq!(
        ledger_report["store_balance"].as_i64().unwrap(),
        retained as i64,
        "{what}: {report:#}"
    );
    let account = ledger::store_account_id(store_identity);
    let (debits, credits) = ledger::account_balances(&ledger_cfg(s), account)
        .unwrap()
        .expect("the store account exists");
    assert_eq!(
        credits - debits,
        retained as u128,
        "{what}: the store account's balance in the cluster"
    );
}

/// The listed backups' manifests, oldest first.
fn manifests(s: &Setup) -> Vec<serde_json::Value> {
    s.listed(&[])
        .iter()
        .map(|id| {
            let out = s.bkp(&["--json", "show", id]);
            assert_exit(&out, 0);
            json(&out)["manifest"].clone()
        })
        .collect()
}

#[test]
fn a_snapshot_killed_after_its_manifest_is_recorded_by_the_next_run() {
    let dir = tempfile::tempdir().unwrap();
    let data = common::formatted_data_file(dir.path());
    let s = setup(&data, StoreKind::S3, &extra());
    let first = snapshot(&s);
    let identity = first["store"].as_str().unwrap().to_string();

    killed_snapshot(&s, "manifest-stored");
    let listed = s.listed(&[]);
    assert_eq!(listed.len(), 2, "the killed run's manifest is stored");
    let orphan = listed[1].clone();
    let lc = ledger_cfg(&s);
    assert!(
        ledger::lookup(&lc, transfer_id(&orphan)).unwrap().is_none(),
        "the killed run recorded nothing"
    );
    assert!(spooled(&s).is_empty(), "and spooled nothing");

    // The next run records it along with its own record.
    snapshot(&s);
    assert_balanced(&s, &identity, "after the next run");
    let t = ledger::lookup(&lc, transfer_id(&orphan))
        .unwrap()
        .expect("the next run recorded the killed run's backup");
    let shown = manifests(&s);
    let m = shown
        .iter()
        .find(|m| m["id"] == orphan.as_str())
        .unwrap_or_else(|| panic!("{orphan} listed: {shown:#?}"));
    let bytes = m["chunks"]["added_bytes"].as_u64().unwrap()
        + m["chunks"]["list"]["size"].as_u64().unwrap();
    assert_eq!(t.amount, bytes as u128, "the amount its manifest gives");
    assert_eq!(t.user_data_32, 1, "operation snapshot");

    // A run after that finds nothing left to settle.
    snapshot(&s);
    assert_balanced(&s, &identity, "after a later run");
}

#[test]
fn one_verify_reconciles_a_run_killed_after_its_manifest() {
    let dir = tempfile::tempdir().unwrap();
    let data = common::formatted_data_file(dir.path());
    let s = setup(&data, StoreKind::Local, &extra());
    killed_snapshot(&s, "manifest-stored");
    let listed = s.listed(&[]);
    assert_eq!(listed.len(), 1, "the killed run's manifest is stored");
    let id = listed[0].clone();
    let identity = {
        use bkp::store::Store;
        bkp::store::local::LocalStore::new(s.path("store"))
            .unwrap()
            .identity()
    };

    // The first verify finds it unrecorded, records it, and says so.
    let (code, report) = verify(&s);
    assert_eq!(code, 0, "{report:#}");
    assert_eq!(
        report["ledger"]["problems"],
        serde_json::json!([]),
        "{report:#}"
    );
    assert_eq!(
        report["ledger"]["reconciled"],
        serde_json::json!([id]),
        "{report:#}"
    );
    let t = ledger::lookup(&ledger_cfg(&s), transfer_id(&id))
        .unwrap()
        .expect("verify recorded it");
    assert_eq!(t.credit_account_id, ledger::store_account_id(&identity));
    // The next one finds the ledger and the store agreeing.
    assert_balanced(&s, &identity, "after one verify");
    // And a later snapshot does not record it again.
    snapshot(&s);
    assert_balanced(&s, &identity, "after a later snapshot");
}

/// The chunk objects in the local store of `s`.
fn chunk_files(s: &Setup) -> usize {
    walk(&s.path("store/tigerbeetle/chunks"))
        .into_iter()
        .filter(|p| p.is_file())
        .count()
}

#[test]
fn chunks_a_killed_first_snapshot_uploaded_are_counted_by_the_next() {
    let dir = tempfile::tempdir().unwrap();
    let data = common::formatted_data_file(dir.path());
    let s = setup(&data, StoreKind::Local, &extra());
    killed_snapshot(&s, "chunk-stored");
    assert!(s.listed(&[]).is_empty(), "no manifest");
    let left = chunk_files(&s);
    assert!(left > 0, "the killed run left chunks in the store");

    let second = snapshot(&s);
    let identity = second["store"].as_str().unwrap().to_string();
    assert_balanced(&s, &identity, "after the next snapshot");
    let m = &second["manifest"];
    assert_eq!(
        m["chunks"]["added"], m["chunks"]["stored"],
        "every chunk is this snapshot's: no listed backup names one: {m:#}"
    );
}

/// Starts a replica on `data`, adds a transfer (`n` makes it new) and stops it.
fn change(data: &Path, n: u32) {
    let mut tb = TigerBeetle::start_on(data);
    if n == 1 {
        repl(
            &tb.address(),
            "create_accounts id=1 code=10 ledger=700, id=2 code=10 ledger=700;",
        );
    }
    repl(
        &tb.address(),
        &format!(
            "create_transfers id={} debit_account_id=1 credit_account_id=2 amount=5 ledger=700 code=10;",
            100 + n
        ),
    );
    tb.stop();
}

#[test]
fn chunks_a_killed_snapshot_uploaded_on_s3_are_counted_by_the_next() {
    let dir = tempfile::tempdir().unwrap();
    let data = common::formatted_data_file(dir.path());
    let s = setup(&data, StoreKind::S3, &extra());
    change(&data, 1);
    let first = snapshot(&s);
    let identity = first["store"].as_str().unwrap().to_string();
    assert_balanced(&s, &identity, "after the first snapshot");

    // The second is killed once it uploaded a chunk the first does not name.
    change(&data, 2);
    killed_snapshot(&s, "chunk-stored");
    assert_eq!(s.listed(&[]).len(), 1, "the killed run stored no manifest");

    // The third finds that chunk in the store, named by no backup: it is its own.
    let third = snapshot(&s);
    let added = third["manifest"]["chunks"]["added"].as_u64().unwrap();
    assert!(added > 0, "{third:#}");
    assert_balanced(&s, &identity, "after the next snapshot");
}
