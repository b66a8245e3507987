//! Chunked snapshots through the real binary, on a real TigerBeetle data file,
//! in S3 on SeaweedFS and in a local store, with the audit ledger on a real
//! TigerBeetle cluster: a second snapshot uploads only the chunks that changed,
//! both restore exactly, `cleanup` deletes only chunks no kept snapshot names
//! (and the ledger keeps equalling the bytes retained), `verify` reads each
//! chunk once per run and names a damaged one.

mod common;

use std::fs;
use std::path::Path;

use common::{
    assert_exit, json, repl, setup, snapshot_manifest, walk, Setup, StoreKind, TigerBeetle,
};

fn digest(p: &Path) -> String {
    bkp::stages::hash::digest_reader(std::io::BufReader::new(fs::File::open(p).unwrap()))
        .unwrap()
        .sha256
}

fn extra() -> String {
    format!(
        "[ledger]\naddresses = \"{}\"\nledger = 12\ntimeout = \"5s\"\n\
         [retention]\ngrace = \"1h\"\n[retention.snapshot]\npreset = \"none\"\n",
        common::shared_ledger().address()
    )
}

/// The distinct chunk ids of backup `m` in the local store of `s`, read from
/// its chunk list as bkp reads it.
fn chunk_ids(s: &Setup, m: &serde_json::Value) -> Vec<String> {
    let store = bkp::store::local::LocalStore::new(s.path("store")).unwrap();
    let m: bkp::manifest::Manifest = serde_json::from_value(m.clone()).unwrap();
    let map = bkp::chunks::load(&store, &m).unwrap().unwrap();
    let mut ids: Vec<String> = map.chunks.iter().flatten().map(|c| c.0.clone()).collect();
    ids.sort();
    ids.dedup();
    ids
}

fn summary(m: &serde_json::Value, field: &str) -> i128 {
    m["chunks"][field].as_u64().unwrap() as i128
}

fn restore(s: &Setup, id: &str, name: &str) -> std::path::PathBuf {
    let target = s.path(name);
    let out = s.bkp(&["restore", id, "--target", target.to_str().unwrap()]);
    assert_exit(&out, 0);
    target
}

/// Two snapshots of a ledger that changed a little in between.
fn two_snapshots(
    s: &Setup,
    tb: &mut TigerBeetle,
) -> (serde_json::Value, String, serde_json::Value, String) {
    repl(
        &tb.address(),
        "create_accounts id=1 code=10 ledger=700, id=2 code=10 ledger=700;",
    );
    repl(
        &tb.address(),
        "create_transfers id=11 debit_account_id=1 credit_account_id=2 amount=125 ledger=700 code=10;",
    );
    tb.stop();
    let first = snapshot_manifest(s);
    let first_digest = digest(&tb.data_file);
    let data = tb.data_file.clone();
    let mut tb2 = TigerBeetle::start_on(&data);
    repl(
        &tb2.address(),
        "create_transfers id=12 debit_account_id=2 credit_account_id=1 amount=7 ledger=700 code=10;",
    );
    tb2.stop();
    let second = snapshot_manifest(s);
    let second_digest = digest(&data);
    assert_ne!(first_digest, second_digest, "the ledger changed");
    (first, first_digest, second, second_digest)
}

#[test]
fn a_second_snapshot_stores_only_changed_chunks_and_cleanup_keeps_what_is_shared() {
    let mut tb = TigerBeetle::start();
    let s = setup(&tb.data_file, StoreKind::S3, &extra());
    let (first, first_digest, second, second_digest) = two_snapshots(&s, &mut tb);
    let name = tb
        .data_file
        .file_name()
        .unwrap()
        .to_str()
        .unwrap()
        .to_string();

    let added = summary(&second, "added");
    let stored = summary(&second, "stored");
    assert!(
        added * 5 < stored,
        "a few transfers changed {added} of {stored} chunks"
    );
    assert!(summary(&first, "added") > 0);
    assert_eq!(summary(&first, "added"), summary(&first, "stored"));
    assert_eq!(second["schema"], "bkp.manifest/2.0");
    assert_eq!(second["source"]["chunks_shared_with"], first["id"]);
    let first_id = first["id"].as_str().unwrap().to_string();
    let second_id = second["id"].as_str().unwrap().to_string();
    // What a backup added to the store: its new chunks and its chunk list.
    let bytes = |m: &serde_json::Value| {
        summary(m, "added_bytes") + m["chunks"]["list"]["size"].as_u64().unwrap() as i128
    };

    // Both restore exactly.
    let t1 = restore(&s, &first_id, "r1");
    assert_eq!(digest(&t1.join(&name)), first_digest);
    let t2 = restore(&s, &second_id, "r2");
    assert_eq!(digest(&t2.join(&name)), second_digest);

    // verify reads every chunk once although two snapshots name most of them,
    // and the ledger's store account holds the bytes of every chunk once.
    let out = s.bkp(&["--json", "verify"]);
    assert_exit(&out, 0);
    let report = json(&out);
    assert_eq!(
        report["bytes_read"].as_u64().unwrap() as i128,
        bytes(&first) + bytes(&second),
        "{report:#}"
    );
    let ledger = &report["ledger"];
    assert_eq!(ledger["checked"], true, "{report:#}");
    assert_eq!(ledger["problems"], serde_json::json!([]), "{report:#}");
    assert_eq!(
        ledger["store_balance"].as_i64().unwrap() as i128,
        bytes(&first) + bytes(&second)
    );

    // Only the newest is kept: the first's own chunks go, the shared ones stay,
    // and the reverse transfer takes back exactly the bytes freed.
    let out = s.bkp(&["cleanup"]);
    assert_exit(&out, 0);
    assert_eq!(s.listed(&[]), vec![second_id.clone()]);
    // verify reads every chunk the second names, its id recomputed.
    let out = s.bkp(&["--json", "verify"]);
    assert_exit(&out, 0);
    let report = json(&out);
    let ledger = &report["ledger"];
    assert_eq!(ledger["problems"], serde_json::json!([]), "{report:#}");
    // What the second names: all its chunks and its list.
    let retained = summary(&second, "stored_bytes")
        + second["chunks"]["list"]["size"].as_u64().unwrap() as i128;
    assert!(
        retained < bytes(&first) + bytes(&second),
        "the first had chunks of its own"
    );
    assert_eq!(ledger["retained_bytes"].as_i64().unwrap() as i128, retained);
    assert_eq!(ledger["store_balance"].as_i64().unwrap() as i128, retained);
}

#[test]
fn a_damaged_or_missing_chunk_fails_restore_and_verify_and_is_named() {
    let mut tb = TigerBeetle::start();
    let s = setup(&tb.data_file, StoreKind::Local, "");
    let (first, _, second, _) = two_snapshots(&s, &mut tb);
    let second_id = second["id"].as_str().unwrap().to_string();
    let chunks: Vec<_> = walk(&s.path("store/tigerbeetle/chunks"))
        .into_iter()
        .filter(|p| p.is_file())
        .collect();
    assert!(!chunks.is_empty());
    // Damage one chunk both snapshots name.
    let older = chunk_ids(&s, &first);
    let id = chunk_ids(&s, &second)
        .into_iter()
        .find(|id| older.contains(id))
        .unwrap();
    let victim = chunks.iter().find(|p| p.ends_with(&id)).unwrap().clone();
    let mut bytes = fs::read(&victim).unwrap();
    let n = bytes.len();
    bytes[n / 2] ^= 1;
    fs::write(&victim, &bytes).unwrap();

    let target = s.path("target");
    let out = s.bkp(&["restore", &second_id, "--target", target.to_str().unwrap()]);
    assert_exit(&out, 5);
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(stderr.contains(&id), "{stderr}");
    assert!(!target.exists(), "nothing is put in place");

    // verify names it for every backup that needs it.
    let out = s.bkp(&["--json", "verify"]);
    assert_exit(&out, 5);
    let report = json(&out);
    let named = report["backups"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|b| b.to_string().contains(&id))
        .count();
    assert_eq!(named, 2, "{report:#}");

    // Gone altogether: the same.
    fs::remove_file(&victim).unwrap();
    let out = s.bkp(&["restore", &second_id, "--target", target.to_str().unwrap()]);
    assert_exit(&out, 5);
    assert!(String::from_utf8_lossy(&out.stderr).contains("missing"));
    assert!(!target.exists());
}

#[test]
fn a_replaced_chunk_list_is_refused_by_restore_and_verify() {
    let mut tb = TigerBeetle::start();
    let s = setup(&tb.data_file, StoreKind::Local, "");
    let (first, _, second, _) = two_snapshots(&s, &mut tb);
    let list = |m: &serde_json::Value| {
        s.path("store")
            .join(m["chunks"]["list"]["key"].as_str().unwrap())
    };
    // The first snapshot's list, a valid list of real chunks, under the second's name.
    fs::copy(list(&first), list(&second)).unwrap();
    let second_id = second["id"].as_str().unwrap();
    let target = s.path("target");
    let out = s.bkp(&["restore", second_id, "--target", target.to_str().unwrap()]);
    assert_exit(&out, 5);
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(
        stderr.contains("chunk list") && stderr.contains("damaged"),
        "{stderr}"
    );
    assert!(!target.exists());
    let out = s.bkp(&["--json", "verify"]);
    assert_exit(&out, 5);
    let report = json(&out);
    let failed: Vec<&serde_json::Value> = report["backups"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|b| !b["problems"].as_array().unwrap().is_empty())
        .collect();
    assert_eq!(failed.len(), 1, "{report:#}");
    assert_eq!(failed[0]["id"], second["id"]);
    // The first is untouched and still restores.
    let out = s.bkp(&[
        "restore",
        first["id"].as_str().unwrap(),
        "--target",
        target.to_str().unwrap(),
    ]);
    assert_exit(&out, 0);
}

#[test]
fn a_chunk_lost_from_the_store_is_stored_again_by_the_next_snapshot() {
    let dir = tempfile::tempdir().unwrap();
    let data = common::formatted_data_file(dir.path());
    let s = setup(&data, StoreKind::Local, "");
    let first = snapshot_manifest(&s);
    let lost = walk(&s.path("store/tigerbeetle/chunks"))
        .into_iter()
        .find(|p| p.is_file())
        .unwrap();
    fs::remove_file(&lost).unwrap();
    assert_exit(&s.bkp(&["verify"]), 5);
    // The next snapshot does not name the lost chunk on its base's word.
    let second = snapshot_manifest(&s);
    assert_eq!(second["chunks"]["added"], 1, "{second:#}");
    assert!(lost.exists());
    assert_exit(&s.bkp(&["verify"]), 0);
    let target = restore(&s, first["id"].as_str().unwrap(), "r1");
    assert_eq!(
        digest(&target.join(data.file_name().unwrap())),
        digest(&data)
    );
}
