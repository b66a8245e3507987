//! The store as an attacker with write access to it (and not the key) would
//! leave it: edited, copied and forged manifests, a plaintext claim, a forged
//! tombstone, object keys outside a backup's part of the store. Each is refused
//! with the data-error exit code (5) and named; nothing is restored, deleted or
//! written outside the target; the key appears in no output and in no object.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Output;

use common::{
    assert_exit, formatted_data_file, json, setup, snapshot_manifest, text, walk, Setup, StoreKind,
};
use serde_json::Value;
use sha2::{Digest, Sha256};

/// The key every test config uses (`common::setup` writes 32 bytes of 7).
const KEY_HEX: &str = "0707070707070707070707070707070707070707070707070707070707070707";

fn manifest_path(s: &Setup, id: &str) -> PathBuf {
    s.path(&format!("store/manifests/tigerbeetle/{id}.json"))
}

fn read(p: &Path) -> Value {
    serde_json::from_slice(&fs::read(p).unwrap()).unwrap()
}

fn write(p: &Path, v: &Value) {
    fs::write(p, serde_json::to_vec_pretty(v).unwrap()).unwrap();
}

/// Exit 5, naming `needle`, and no key material in the output.
#[track_caller]
fn refused(out: &Output, needle: &str) {
    assert_exit(out, 5);
    let t = text(out);
    assert!(t.contains(needle), "{needle:?} not named in:\n{t}");
    assert!(!t.contains(KEY_HEX), "the key was printed:\n{t}");
}

/// A backup id of `at` (a UUIDv7, as bkp makes them).
fn id_at(at: time::OffsetDateTime) -> String {
    bkp::id::BackupId::new_v7(at).to_string()
}

fn three_days_ago() -> String {
    (time::OffsetDateTime::now_utc() - time::Duration::days(3))
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap()
}

fn no_key_in_store(s: &Setup) {
    for f in walk(&s.path("store")) {
        let bytes = fs::read(&f).unwrap();
        assert!(
            !String::from_utf8_lossy(&bytes).contains(KEY_HEX)
                && !bytes.windows(32).any(|w| w == [7u8; 32]),
            "key material in {}",
            f.display()
        );
    }
}

#[test]
fn an_edited_manifest_is_refused_by_every_reader_and_cleanup_deletes_nothing() {
    let d = tempfile::tempdir().unwrap();
    let s = setup(
        &formatted_data_file(d.path()),
        StoreKind::Local,
        common::ARCHIVE,
    );
    let a = snapshot_manifest(&s);
    let b = snapshot_manifest(&s);
    let a_id = a["id"].as_str().unwrap();
    let a_object = s
        .path("store")
        .join(a["objects"][0]["key"].as_str().unwrap());

    let out = s.bkp(&["show", a_id]);
    assert_exit(&out, 0);
    assert!(text(&out).contains("seal verified"), "{}", text(&out));

    // The attacker shortens A's retention and backdates it, so that it looks
    // expired; the seal stays as it was.
    let path = manifest_path(&s, a_id);
    let mut v = read(&path);
    assert!(v["seal"]["hmac"].is_string(), "manifests are sealed: {v:#}");
    v["retention_days"] = 1.into();
    v["started_at"] = three_days_ago().into();
    v["finished_at"] = three_days_ago().into();
    write(&path, &v);

    // `list` shows the good one, marks the forged one, and exits 5.
    let out = s.bkp(&["--json", "list"]);
    refused(&out, "altered or forged");
    let l = json(&out);
    let ids: Vec<&str> = l["backups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, vec![b["id"].as_str().unwrap()]);
    assert_eq!(l["unreadable"][0]["id"], a_id);
    assert_eq!(l["unreadable"][0]["code"], "integrity");
    let out = s.bkp(&["list"]);
    refused(&out, "REFUSED");
    refused(&s.bkp(&["show", a_id]), "altered or forged");

    // `cleanup` acts on a complete, proven picture only.
    let out = s.bkp(&["cleanup"]);
    refused(&out, a_id);
    assert!(
        a_object.exists(),
        "cleanup deleted a backup on a forged manifest"
    );
    assert!(path.exists());

    refused(&s.bkp(&["verify"]), a_id);
    let target = s.path("target");
    let out = s.bkp(&["restore", a_id, "--target", target.to_str().unwrap()]);
    refused(&out, "altered or forged");
    assert!(!target.exists(), "a refused restore created its target");

    // An edited object digest is refused the same way.
    let bpath = manifest_path(&s, b["id"].as_str().unwrap());
    let mut v = read(&bpath);
    v["objects"][0]["sha256"] = "00".repeat(32).into();
    write(&bpath, &v);
    let out = s.bkp(&["restore", "latest", "--target", target.to_str().unwrap()]);
    refused(&out, "altered or forged");
    assert!(!target.exists());
    no_key_in_store(&s);
}

#[test]
fn a_manifest_copied_under_a_new_id_is_not_the_newest_backup() {
    let d = tempfile::tempdir().unwrap();
    let s = setup(
        &formatted_data_file(d.path()),
        StoreKind::Local,
        common::ARCHIVE,
    );
    let a = snapshot_manifest(&s);
    let newer = id_at(time::OffsetDateTime::now_utc() + time::Duration::minutes(1));
    fs::copy(
        manifest_path(&s, a["id"].as_str().unwrap()),
        manifest_path(&s, &newer),
    )
    .unwrap();
    let target = s.path("target");
    let out = s.bkp(&["restore", "latest", "--target", target.to_str().unwrap()]);
    refused(&out, "copied under another name");
    assert!(text(&out).contains(&newer));
    assert!(!target.exists());
    refused(
        &s.bkp(&["restore", &newer, "--target", target.to_str().unwrap()]),
        &newer,
    );
}

#[test]
fn a_forged_plaintext_snapshot_is_neither_restored_nor_verified() {
    let d = tempfile::tempdir().unwrap();
    let s = setup(
        &formatted_data_file(d.path()),
        StoreKind::Local,
        common::ARCHIVE,
    );
    let a = snapshot_manifest(&s);

    // The attacker's own archive, stored unencrypted, and a newer manifest for
    // it that claims no encryption (a seal it cannot make).
    let forged = id_at(time::OffsetDateTime::now_utc() + time::Duration::minutes(1));
    let archive = b"not the ledger".to_vec();
    let key = format!("tigerbeetle/forged/{forged}.tar");
    fs::create_dir_all(s.path("store/tigerbeetle/forged")).unwrap();
    fs::write(s.path(&format!("store/{key}")), &archive).unwrap();
    let digest = hex::encode(Sha256::digest(&archive));
    let mut v = read(&manifest_path(&s, a["id"].as_str().unwrap()));
    v.as_object_mut().unwrap().remove("seal");
    v["id"] = forged.clone().into();
    v["encryption"] = Value::Null;
    v["compression"] = serde_json::json!({"algorithm": "none"});
    v["objects"] = serde_json::json!([{"key": key, "size": archive.len(),
        "sha256": digest, "content_bytes": archive.len(), "content_sha256": digest}]);
    write(&manifest_path(&s, &forged), &v);

    let target = s.path("target");
    let out = s.bkp(&["restore", "latest", "--target", target.to_str().unwrap()]);
    refused(&out, "no seal");
    assert!(!target.exists());
    refused(
        &s.bkp(&["restore", &forged, "--target", target.to_str().unwrap()]),
        "no seal",
    );
    assert!(!target.exists());
    refused(&s.bkp(&["verify", "--drill"]), &forged);
    // Vouching for it by id lets it be read; it still claims to be unencrypted
    // and still is not the backup it says, so what was vouched for fails too.
    let out = s.bkp(&[
        "restore",
        &forged,
        "--trust",
        &forged,
        "--target",
        target.to_str().unwrap(),
    ]);
    assert_ne!(out.status.code(), Some(0), "{}", text(&out));
    assert!(!target.exists());
    no_key_in_store(&s);
}

#[test]
fn a_forged_tombstone_deletes_nothing() {
    let d = tempfile::tempdir().unwrap();
    let s = setup(
        &formatted_data_file(d.path()),
        StoreKind::Local,
        common::ARCHIVE,
    );
    let a = snapshot_manifest(&s);
    snapshot_manifest(&s);
    let a_id = a["id"].as_str().unwrap();
    let a_object = s
        .path("store")
        .join(a["objects"][0]["key"].as_str().unwrap());
    let mut m = read(&manifest_path(&s, a_id));
    m.as_object_mut().unwrap().remove("seal");
    fs::create_dir_all(s.path("store/trash/tigerbeetle")).unwrap();
    write(
        &s.path(&format!("store/trash/tigerbeetle/{a_id}.json")),
        &serde_json::json!({"schema": "bkp.tombstone/1.0", "manifest": m, "bytes": 1,
            "planned_at": "2026-01-01T00:00:00Z"}),
    );
    let out = s.bkp(&["cleanup"]);
    refused(&out, "no seal");
    assert!(a_object.exists(), "a forged tombstone deleted a backup");
    assert!(manifest_path(&s, a_id).exists());
}

#[test]
fn a_store_from_before_sealing_is_read_only_as_the_operator_says() {
    let d = tempfile::tempdir().unwrap();
    let s = setup(
        &formatted_data_file(d.path()),
        StoreKind::Local,
        common::ARCHIVE,
    );
    // Written without [encryption]: no seal, no encryption.
    let keyed = fs::read_to_string(&s.config).unwrap();
    fs::write(
        &s.config,
        keyed.replace(
            "[encryption]\nkey_file = \"key\"\n",
            "[encryption]\nenabled = false\n",
        ),
    )
    .unwrap();
    let old = snapshot_manifest(&s);
    let old_id = old["id"].as_str().unwrap();
    // What the store holds (not the run's report of it) has no seal.
    assert!(read(&manifest_path(&s, old_id)).get("seal").is_none());
    fs::write(&s.config, &keyed).unwrap();

    refused(&s.bkp(&["list"]), old_id);
    let target = s.path("target");
    let out = s.bkp(&["restore", old_id, "--target", target.to_str().unwrap()]);
    refused(&out, &format!("--trust {old_id}"));
    assert!(!target.exists());
    let out = s.bkp(&[
        "restore",
        old_id,
        "--trust",
        old_id,
        "--target",
        target.to_str().unwrap(),
    ]);
    assert_exit(&out, 0);
    assert!(target.join("0_0.tigerbeetle").exists());

    // Or the whole store up to a point in time, once the operator has
    // recorded it in a sealed list: the cut-off alone admits nothing.
    let cut = (time::OffsetDateTime::now_utc() + time::Duration::minutes(1))
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap();
    fs::write(
        &s.config,
        keyed.replace(
            "[encryption]\nkey_file = \"key\"\n",
            &format!("[encryption]\nkey_file = \"key\"\nunsealed_before = \"{cut}\"\n"),
        ),
    )
    .unwrap();
    refused(&s.bkp(&["list"]), "bkp trust-legacy");
    assert_exit(&s.bkp(&["trust-legacy"]), 0);
    assert_eq!(s.listed(&[]), vec![old_id.to_string()]);
}

#[test]
fn object_keys_outside_a_backups_part_of_the_store_are_refused() {
    let d = tempfile::tempdir().unwrap();
    let s = setup(
        &formatted_data_file(d.path()),
        StoreKind::Local,
        common::ARCHIVE,
    );
    // Without [encryption] nothing can be proven, so the keys themselves are checked.
    let cfg = fs::read_to_string(&s.config).unwrap().replace(
        "[encryption]\nkey_file = \"key\"\n",
        "[encryption]\nenabled = false\n",
    );
    fs::write(&s.config, cfg).unwrap();
    let a = snapshot_manifest(&s);
    let a_id = a["id"].as_str().unwrap();
    let path = manifest_path(&s, a_id);
    let target = s.path("target");
    for bad in [
        "../../outside",
        "tigerbeetle/../manifests/x.json",
        "manifests/tigerbeetle/x.json",
        "/etc/passwd",
        "duckdb/2026/01/01/x",
    ] {
        let mut v = read(&path);
        let good = v["objects"][0]["key"].clone();
        v["objects"][0]["key"] = bad.into();
        write(&path, &v);
        let out = s.bkp(&["restore", a_id, "--target", target.to_str().unwrap()]);
        refused(&out, "outside the tigerbeetle part of the store");
        assert!(!target.exists());
        v["objects"][0]["key"] = good;
        v["uses"] = serde_json::json!([bad]);
        write(&path, &v);
        refused(
            &s.bkp(&["verify"]),
            "outside the tigerbeetle part of the store",
        );
        v.as_object_mut().unwrap().remove("uses");
        write(&path, &v);
    }
    assert_eq!(s.listed(&[]), vec![a_id.to_string()]);
}

#[test]
fn a_swapped_object_is_refused_before_anything_is_restored() {
    let d = tempfile::tempdir().unwrap();
    let s = setup(
        &formatted_data_file(d.path()),
        StoreKind::Local,
        common::ARCHIVE,
    );
    let a = snapshot_manifest(&s);
    let b = snapshot_manifest(&s);
    // Both objects are genuine and encrypted with the key: only the manifest's
    // digest tells them apart.
    let object = |m: &Value| {
        s.path("store")
            .join(m["objects"][0]["key"].as_str().unwrap())
    };
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(object(&a), fs::Permissions::from_mode(0o600)).unwrap();
    fs::copy(object(&b), object(&a)).unwrap();
    let target = s.path("target");
    let a_id = a["id"].as_str().unwrap();
    let out = s.bkp(&["restore", a_id, "--target", target.to_str().unwrap()]);
    refused(&out, "failed verification");
    assert!(!target.exists());
    refused(&s.bkp(&["verify", a_id]), a_id);
}

#[test]
fn a_store_marked_by_another_installation_is_refused_before_anything_is_written() {
    let d = tempfile::tempdir().unwrap();
    let s = setup(
        &formatted_data_file(d.path()),
        StoreKind::Local,
        common::ARCHIVE,
    );
    assert_exit(&s.bkp(&["init"]), 0);
    assert!(s.path("store/bkp-store.json").exists());
    let marker = fs::read(s.path("store/bkp-store.json")).unwrap();
    // A second `init` of its own store changes nothing and is no error.
    let again = s.bkp(&["init"]);
    assert_exit(&again, 0);
    assert!(text(&again).contains("already"), "{}", text(&again));
    assert_eq!(fs::read(s.path("store/bkp-store.json")).unwrap(), marker);
    snapshot_manifest(&s);
    let out = s.bkp(&["--json", "check"]);
    assert!(text(&out).contains("this installation's"), "{}", text(&out));

    // The same store under a second config with another key.
    common::write_key(s.path("other.key"), [8u8; 32]);
    let other = s.path("other.toml");
    fs::write(
        &other,
        fs::read_to_string(&s.config)
            .unwrap()
            .replace("key_file = \"key\"", "key_file = \"other.key\""),
    )
    .unwrap();
    let contents = |root: &Path| -> Vec<(PathBuf, Vec<u8>)> {
        walk(root)
            .into_iter()
            .map(|p| (p.clone(), fs::read(&p).unwrap_or_default()))
            .collect()
    };
    let before = contents(&s.path("store"));
    // Every run that could write (a backup, a catalog, a report, a deletion,
    // another marker) is refused, and none writes: read-only runs included,
    // which would otherwise rewrite the owner's catalog.
    for args in [
        &["snapshot"][..],
        &["list"],
        &["status"],
        &["verify"],
        &["cleanup"],
        &["init"],
    ] {
        let mut all = vec!["--config", other.to_str().unwrap()];
        all.extend_from_slice(args);
        let out = common::run_bkp(&all, &[]);
        assert_exit(&out, 3);
        assert!(
            text(&out).contains("belongs to another installation"),
            "{args:?}: {}",
            text(&out)
        );
        assert!(
            contents(&s.path("store")) == before,
            "a refused `{args:?}` changed the store"
        );
    }
    // The owner's runs find their catalog as they left it.
    let out = s.bkp(&["list"]);
    assert_exit(&out, 0);
    assert!(!text(&out).contains("does not verify"), "{}", text(&out));
}
