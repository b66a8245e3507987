//! What a stolen write-only host or a bucket writer can no longer decide
//! through the store's shared indexes and names. Each test plays the attack
//! through the binary:
//!
//! - a signer's catalog whose entries edit the key holder's genuine manifests
//!   (and claim the key holder sealed them): not believed, never rebased into
//!   the key holder's catalog, and `cleanup` deletes nothing because of it,
//!   before or after the signer is removed;
//! - junk manifests under a far-future or malformed id: named once per run,
//!   and `restore latest`, `cleanup` and `logs` go on with the rest, while
//!   `status` alarms;
//! - junk WAL objects: the archive's end stays its end for `wal fetch`, an
//!   authentic object under the same name is still found, and junk that is
//!   the only thing under the name asked for fails with what to do.

mod common;

use std::fs;
use std::path::Path;
use std::process::Output;

use common::{
    assert_exit, formatted_data_file, json, rfc3339, run_bkp, setup, snapshot_manifest, text,
    Setup, StoreKind,
};
use serde_json::Value;

fn id(m: &Value) -> String {
    m["id"].as_str().unwrap().to_string()
}

fn manifest_key(id: &str) -> String {
    format!("manifests/tigerbeetle/{id}.json")
}

/// Puts `bytes` at `key` of the setup's store, as a bucket writer would.
fn put(s: &Setup, kind: &StoreKind, key: &str, bytes: &[u8]) {
    match kind {
        StoreKind::Local => {
            let p = s.path(&format!("store/{key}"));
            fs::create_dir_all(p.parent().unwrap()).unwrap();
            fs::write(p, bytes).unwrap();
        }
        StoreKind::S3 => {
            let out = common::shared_s3().rclone_stdin(
                &["rcat", &format!("s3:{}/team/bkp/{key}", s.bucket())],
                bytes,
            );
            assert!(out.status.success(), "{}", text(&out));
        }
    }
}

// ---- a signer's catalog ----------------------------------------------------------------

/// A catalog object's payload as JSON (the bytes after its header line).
fn catalog_doc(bytes: &[u8]) -> Value {
    let nl = bytes.iter().position(|&b| b == b'\n').unwrap();
    serde_json::from_slice(&zstd::decode_all(&bytes[nl + 1..]).unwrap()).unwrap()
}

/// The store's catalog objects of the TigerBeetle kind, by number.
fn catalog_objects(s: &Setup) -> Vec<(u64, std::path::PathBuf)> {
    let dir = s.path("store/catalog/tigerbeetle");
    let mut out: Vec<(u64, std::path::PathBuf)> = fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let n = name.strip_suffix(".json.zst")?.parse().ok()?;
            Some((n, e.path()))
        })
        .collect();
    out.sort();
    out
}

/// A genuine backup the key holder made 10, 9, … days ago: `m` under an older
/// id, sealed with the key again (the key holder's own doing, not the attack).
fn genuine_old_copy(s: &Setup, m: &Value, days_ago: i64) -> String {
    let at = time::OffsetDateTime::now_utc() - time::Duration::days(days_ago);
    let new_id = bkp::id::BackupId::new_v7(at).to_string();
    let mut v = m.clone();
    v.as_object_mut().unwrap().remove("seal");
    v["id"] = new_id.clone().into();
    v["started_at"] = rfc3339(at).into();
    v["finished_at"] = rfc3339(at + time::Duration::seconds(5)).into();
    let path = s.path(&format!("store/{}", manifest_key(&new_id)));
    fs::write(&path, serde_json::to_vec_pretty(&v).unwrap()).unwrap();
    common::reseal(&path);
    new_id
}

/// The attack: a stolen host's signer writes a delta on the key holder's
/// newest catalog whose entries are the genuine manifests `victims` with
/// `retention_days = 1`, still claiming the key holder's seal and the
/// objects' listing, padded to one change short of a rebase with entries of
/// backups that do not exist.
fn plant_signers_delta(s: &Setup, thief: &bkp::crypto::Keyring, victims: &[String]) {
    let objects = catalog_objects(s);
    let (top, top_path) = objects.last().unwrap().clone();
    let top_doc = catalog_doc(&fs::read(&top_path).unwrap());
    let base = top_doc["base"].as_u64().unwrap_or(top);
    let base_path = objects.iter().find(|(n, _)| *n == base).unwrap().1.clone();
    let mut entries: Vec<Value> = catalog_doc(&fs::read(base_path).unwrap())["entries"]
        .as_array()
        .unwrap()
        .clone();
    if base != top {
        entries.extend(top_doc["entries"].as_array().unwrap().iter().cloned());
    }
    let mut forged: Vec<Value> = entries
        .iter()
        .filter(|e| victims.iter().any(|v| e["manifest"]["id"] == v.as_str()))
        .cloned()
        .map(|mut e| {
            e["manifest"]["retention_days"] = 1.into();
            assert!(e["sealer"].as_str().unwrap().starts_with("hmac:"), "{e}");
            e
        })
        .collect();
    assert_eq!(forged.len(), victims.len(), "{entries:#?}");
    let template = forged[0].clone();
    let old = time::OffsetDateTime::now_utc() - time::Duration::days(20);
    while forged.len() < 511 {
        let mut e = template.clone();
        let at = old + time::Duration::minutes(forged.len() as i64);
        e["manifest"]["id"] = bkp::id::BackupId::new_v7(at).to_string().into();
        e["manifest"]["started_at"] = rfc3339(at).into();
        e["manifest"]["finished_at"] = rfc3339(at).into();
        forged.push(e);
    }
    let doc = serde_json::json!({
        "schema": "bkp.catalog/2",
        "kind": "tigerbeetle",
        "seq": top + 1,
        "base": base,
        "written_at": rfc3339(time::OffsetDateTime::now_utc()),
        "understands": 0,
        "entries": forged,
        "removed": [],
        "damaged": [],
    });
    let payload = zstd::encode_all(serde_json::to_vec(&doc).unwrap().as_slice(), 3).unwrap();
    let tag = bkp::manifest::seal::tag(Some(thief), &payload).unwrap();
    let mut bytes = format!("bkp.catalog/2 {tag}\n").into_bytes();
    bytes.extend_from_slice(&payload);
    let key = format!("catalog/tigerbeetle/{:020}.json.zst", top + 1);
    put(s, &StoreKind::Local, &key, &bytes);
}

/// The ids `cleanup --dry-run` would delete.
fn would_delete(s: &Setup) -> Vec<String> {
    let out = s.bkp(&["--json", "cleanup", "--dry-run"]);
    assert_exit(&out, 0);
    json(&out)["backups"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|b| b["action"] == "delete")
        .map(|b| b["id"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn a_signers_catalog_vouches_only_for_what_that_signer_sealed() {
    use bkp::crypto::pubkey::{generate_signing_key, SigningKey};
    let d = tempfile::tempdir().unwrap();
    let extra = format!(
        "{}[retention]\ngrace = \"0s\"\n[retention.snapshot]\npreset = \"none\"\nkeep_last = 10\n",
        common::ARCHIVE
    );
    let s = setup(&formatted_data_file(d.path()), StoreKind::Local, &extra);
    let (secret, public) = generate_signing_key().unwrap();
    let thief = bkp::crypto::Keyring::new(bkp::crypto::MasterKey::from_bytes([9u8; 32]), vec![])
        .with_signing(
            Some(SigningKey::from_text(secret.as_bytes(), "stolen host").unwrap()),
            vec![],
        );
    let keyed = fs::read_to_string(&s.config).unwrap();
    let trusting = keyed.replace(
        "[encryption]\nkey_file = \"key\"\n",
        &format!(
            "[encryption]\nkey_file = \"key\"\n[[encryption.signer]]\nkey = \"{public}\"\n\
             hosts = [\"stolen\"]\nkinds = [\"tigerbeetle\"]\ntigerbeetle_clusters = [0]\n"
        ),
    );
    fs::write(&s.config, &trusting).unwrap();

    // The key holder's backups: one now, three from the days before.
    let now = snapshot_manifest(&s);
    let victims: Vec<String> = (8..11).map(|d| genuine_old_copy(&s, &now, d)).collect();
    // A complete read finds them and writes the key holder's catalog.
    assert!(would_delete(&s).is_empty());
    let mut all = victims.clone();
    all.push(id(&now));
    all.sort();
    let mut listed = s.listed(&[]);
    listed.sort();
    assert_eq!(listed, all);

    plant_signers_delta(&s, &thief, &victims);
    // While the signer is trusted, its catalog decides nothing about backups
    // it did not seal.
    assert_eq!(would_delete(&s), Vec::<String>::new(), "before the rebase");
    // The key holder's next backup writes the catalog again (on the code
    // before the fix, a rebase carrying the signer's entries under its own
    // tag).
    snapshot_manifest(&s);
    assert_eq!(would_delete(&s), Vec::<String>::new(), "after a write");

    // The operator removes the stolen host's signer: nothing it wrote counts,
    // and cleanup deletes no genuine backup.
    fs::write(&s.config, &keyed).unwrap();
    let out = s.bkp(&["--json", "cleanup"]);
    assert_exit(&out, 0);
    for v in &victims {
        assert!(
            s.path(&format!("store/{}", manifest_key(v))).exists(),
            "cleanup deleted {v}: {}",
            text(&out)
        );
    }
    assert_eq!(s.listed(&[]).len(), 5);
}

// ---- junk manifests ----------------------------------------------------------------------

/// Ids no bkp makes: one in the far future, one that is no id at all (with
/// a terminal escape in it where the store allows one).
fn junk_keys(kind: &StoreKind) -> Vec<String> {
    let future = bkp::id::BackupId::new_v7(time::macros::datetime!(2999-01-01 00:00 UTC));
    let malformed = match kind {
        StoreKind::Local => "not-an-id\u{1b}[2J",
        StoreKind::S3 => "not-an-id",
    };
    vec![manifest_key(&future.to_string()), manifest_key(malformed)]
}

fn junk_manifests_stop_nothing(kind: StoreKind) {
    let d = tempfile::tempdir().unwrap();
    let extra = format!(
        "{}[retention]\ngrace = \"0s\"\n[retention.snapshot]\npreset = \"none\"\nkeep_last = 1\n",
        common::ARCHIVE
    );
    let s = setup(&formatted_data_file(d.path()), kind, &extra);
    let g1 = snapshot_manifest(&s);
    let g2 = snapshot_manifest(&s);
    let junk = junk_keys(&kind);
    put(&s, &kind, &junk[0], b"{\"schema\": \"bkp.manifest/1.0\"");
    put(&s, &kind, &junk[1], b"junk");
    let named = |out: &Output| {
        let t = text(out);
        assert!(
            !t.contains('\u{1b}'),
            "a raw escape reached the terminal: {t}"
        );
        for k in &junk {
            let shown = k.replace('\u{1b}', "\\u{1b}");
            let printable = bkp::ui::printable(k);
            assert!(
                t.contains(&printable) || t.contains(&shown),
                "{k:?} not named: {t}"
            );
        }
    };

    // `restore latest` restores the newest genuine backup, and says what it
    // passed over.
    let target = s.path("target");
    let out = s.bkp(&[
        "--json",
        "restore",
        "latest",
        "--target",
        target.to_str().unwrap(),
    ]);
    assert_exit(&out, 0);
    assert_eq!(json(&out)["id"], id(&g2).as_str(), "{}", text(&out));
    named(&out);

    // `status` alarms (exit 11, as for a breached RPO).
    let out = s.bkp(&["status"]);
    assert_exit(&out, 11);
    named(&out);

    // `cleanup` does its work on the rest.
    let out = s.bkp(&["cleanup"]);
    assert_exit(&out, 0);
    named(&out);
    let out = s.bkp(&["--json", "list"]);
    named(&out);
    // keep_last = 1: the newer genuine backup is the one kept.
    let listed = json(&out);
    let left: Vec<&str> = listed["backups"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|b| b["id"].as_str())
        .collect();
    assert_eq!(left, [id(&g2)], "{}", text(&out));
    assert!(!left.contains(&id(&g1).as_str()));
}

#[test]
fn junk_manifests_with_future_or_malformed_ids_stop_nothing_s3() {
    junk_manifests_stop_nothing(StoreKind::S3);
}

#[test]
fn junk_manifests_with_future_or_malformed_ids_stop_nothing_local() {
    junk_manifests_stop_nothing(StoreKind::Local);
}

#[test]
fn a_junk_manifest_with_a_future_id_does_not_stop_the_log_chain() {
    let tb = common::TigerBeetle::start();
    let dir = tempfile::tempdir().unwrap();
    common::write_key(dir.path().join("key"), [5u8; 32]);
    let cfg = dir.path().join("bkp.toml");
    fs::write(
        &cfg,
        format!(
            "work_dir = \"work\"\n[store]\ntype = \"local\"\npath = \"store\"\n[encryption]\nkey_file = \"key\"\n\
             [tigerbeetle]\naddresses = \"{}\"\n",
            tb.address()
        ),
    )
    .unwrap();
    let logs = || run_bkp(&["--config", cfg.to_str().unwrap(), "logs"], &[]);
    common::repl(&tb.address(), "create_accounts id=1 code=10 ledger=700;");
    assert_exit(&logs(), 0);
    let junk = &junk_keys(&StoreKind::Local)[0];
    let p = dir.path().join("store").join(junk);
    fs::write(&p, b"junk").unwrap();
    common::repl(&tb.address(), "create_accounts id=2 code=10 ledger=700;");
    let out = logs();
    assert_exit(&out, 0);
    assert!(text(&out).contains(junk.as_str()), "{}", text(&out));
    // The chain went on: the new segment continues the first one.
    let out = run_bkp(&["--config", cfg.to_str().unwrap(), "--json", "list"], &[]);
    let rows: Vec<Value> = json(&out)["backups"].as_array().unwrap().clone();
    assert_eq!(rows.len(), 2, "{}", text(&out));
    let first = rows
        .iter()
        .find(|r| r["parent"].is_null())
        .expect("a first segment");
    let second = rows
        .iter()
        .find(|r| !r["parent"].is_null())
        .expect("a second segment");
    assert_eq!(second["parent"], first["id"], "{}", text(&out));
}

// ---- junk WAL objects --------------------------------------------------------------------

const SYSTEM: u64 = 4242;

/// A data directory that names system [`SYSTEM`], with WAL files
/// `…01` to `…03` of timeline 1 archived.
fn archived_wal(dir: &Path) -> (std::path::PathBuf, std::path::PathBuf) {
    common::write_key(dir.join("key"), [5u8; 32]);
    let cfg = dir.join("bkp.toml");
    fs::write(
        &cfg,
        "work_dir = \"work\"\n[store]\ntype = \"local\"\npath = \"store\"\n[encryption]\nkey_file = \"key\"\n",
    )
    .unwrap();
    let pgdata = dir.join("pgdata");
    fs::create_dir_all(pgdata.join("global")).unwrap();
    fs::create_dir_all(pgdata.join("pg_wal")).unwrap();
    let mut control = SYSTEM.to_ne_bytes().to_vec();
    control.resize(512, 0);
    fs::write(pgdata.join("global/pg_control"), control).unwrap();
    for n in 1..=3u8 {
        let name = format!("0000000100000000000000{n:02X}");
        fs::write(pgdata.join("pg_wal").join(&name), common::pattern(4096, n)).unwrap();
        let out = run_bkp(
            &[
                "--config",
                cfg.to_str().unwrap(),
                "wal",
                "push",
                &format!("pg_wal/{name}"),
                "--pgdata",
                pgdata.to_str().unwrap(),
            ],
            &[],
        );
        assert_exit(&out, 0);
    }
    (cfg, pgdata)
}

fn plant_wal(dir: &Path, name: &str, seed: u8) -> String {
    let key = format!(
        "wal/{SYSTEM}/{name}.{}.zst.enc",
        format!("{seed:02x}").repeat(32)
    );
    let p = dir.join("store").join(&key);
    fs::write(p, common::pattern(300, seed)).unwrap();
    key
}

fn fetch(cfg: &Path, pgdata: &Path, name: &str) -> Output {
    run_bkp(
        &[
            "--config",
            cfg.to_str().unwrap(),
            "wal",
            "fetch",
            name,
            "pg_wal/RECOVERYXLOG",
            "--pgdata",
            pgdata.to_str().unwrap(),
        ],
        &[],
    )
}

#[test]
fn junk_wal_objects_do_not_move_the_archives_end() {
    let dir = tempfile::tempdir().unwrap();
    let (cfg, pgdata) = archived_wal(dir.path());
    // The end: PostgreSQL asks for the segment after the last, and the next
    // timeline's history file.
    assert_exit(&fetch(&cfg, &pgdata, "000000010000000000000004"), 9);
    assert_exit(&fetch(&cfg, &pgdata, "00000002.history"), 9);

    // Junk far after the end, and on a timeline nobody created.
    let later = plant_wal(dir.path(), "000000010000000000000090", 0xa1);
    let other = plant_wal(dir.path(), "000000020000000000000001", 0xa2);
    let out = fetch(&cfg, &pgdata, "000000010000000000000004");
    assert_exit(&out, 9);
    assert!(text(&out).contains(&later), "{}", text(&out));
    let out = fetch(&cfg, &pgdata, "00000002.history");
    assert_exit(&out, 9);
    assert!(text(&out).contains(&other), "{}", text(&out));

    // Junk under a name that also has its authentic object: the authentic
    // one is restored, and the junk named.
    let beside = plant_wal(dir.path(), "000000010000000000000002", 0xa3);
    let out = fetch(&cfg, &pgdata, "000000010000000000000002");
    assert_exit(&out, 0);
    assert_eq!(
        fs::read(pgdata.join("pg_wal/RECOVERYXLOG")).unwrap(),
        common::pattern(4096, 2)
    );
    assert!(text(&out).contains(&beside), "{}", text(&out));

    // Junk alone under the exact name asked for: it may be that file,
    // damaged, so recovery stops, and the message says what to do.
    let alone = plant_wal(dir.path(), "000000010000000000000004", 0xa4);
    let out = fetch(&cfg, &pgdata, "000000010000000000000004");
    assert_exit(&out, 205);
    let t = text(&out);
    assert!(t.contains(&alone) && t.contains("remove"), "{t}");

    // A later authentic segment makes a missing one a gap, as before.
    fs::write(
        pgdata.join("pg_wal/000000010000000000000006"),
        common::pattern(4096, 6),
    )
    .unwrap();
    let out = run_bkp(
        &[
            "--config",
            cfg.to_str().unwrap(),
            "wal",
            "push",
            "pg_wal/000000010000000000000006",
            "--pgdata",
            pgdata.to_str().unwrap(),
        ],
        &[],
    );
    assert_exit(&out, 0);
    assert_exit(&fetch(&cfg, &pgdata, "000000010000000000000005"), 205);
}
