//! Who decides what counts as "from before sealing" and "from before a key
//! rotation": the operator, once, in a sealed list (`bkp trust-legacy`), never
//! the writer of a document. Each test plays an attack through the binary:
//! manifests planted with old ids and far-future start times, an edited
//! legacy manifest, a start time that disagrees with the id, and a manifest
//! and a tombstone sealed with a rotated-out (leaked) key. None is listed,
//! restored, counted by `status` or acted on by `cleanup`; what the operator
//! recorded still is, with a warning when restored.

mod common;

use std::fs;
use std::process::Output;

use common::{
    assert_exit, formatted_data_file, json, rfc3339, setup, snapshot_manifest, text, Setup,
    StoreKind,
};
use serde_json::Value;

fn id(m: &Value) -> String {
    m["id"].as_str().unwrap().to_string()
}

fn manifest_key(id: &str) -> String {
    format!("manifests/tigerbeetle/{id}.json")
}

/// Where a store of `kind` keeps its objects, for an attacker with write
/// access and no key.
enum Bucket<'a> {
    Local(&'a Setup),
    S3(String),
}

impl Bucket<'_> {
    fn of<'s>(s: &'s Setup, kind: &StoreKind) -> Bucket<'s> {
        match kind {
            StoreKind::Local => Bucket::Local(s),
            StoreKind::S3 => Bucket::S3(s.bucket()),
        }
    }

    fn put(&self, key: &str, bytes: &[u8]) {
        match self {
            Bucket::Local(s) => {
                let p = s.path(&format!("store/{key}"));
                fs::create_dir_all(p.parent().unwrap()).unwrap();
                let _ = fs::remove_file(&p);
                fs::write(p, bytes).unwrap();
            }
            Bucket::S3(bucket) => {
                let out = common::shared_s3()
                    .rclone_stdin(&["rcat", &format!("s3:{bucket}/team/bkp/{key}")], bytes);
                assert!(out.status.success(), "{}", text(&out));
            }
        }
    }

    fn get(&self, key: &str) -> Vec<u8> {
        match self {
            Bucket::Local(s) => fs::read(s.path(&format!("store/{key}"))).unwrap(),
            Bucket::S3(bucket) => {
                let out =
                    common::shared_s3().rclone(&["cat", &format!("s3:{bucket}/team/bkp/{key}")]);
                assert!(out.status.success(), "{}", text(&out));
                out.stdout
            }
        }
    }

    fn exists(&self, key: &str) -> bool {
        match self {
            Bucket::Local(s) => s.path(&format!("store/{key}")).exists(),
            Bucket::S3(bucket) => {
                let out =
                    common::shared_s3().rclone(&["lsf", &format!("s3:{bucket}/team/bkp/{key}")]);
                !out.stdout.is_empty()
            }
        }
    }
}

/// A store with one backup from before sealing (no `[encryption]`: no seal,
/// no encryption), then configured with the key and `unsealed_before` as the
/// upgrade asks. Returns the setup, the legacy manifest, and the keyed config.
fn upgraded_store(kind: &StoreKind, extra: &str) -> (Setup, Value, String) {
    let d = tempfile::tempdir().unwrap();
    let data = formatted_data_file(d.path());
    let s = setup(&data, *kind, extra);
    // The data file must outlive the test: keep it in the setup's directory.
    let kept = s.path("data.tigerbeetle");
    fs::copy(&data, &kept).unwrap();
    let keyed = fs::read_to_string(&s.config)
        .unwrap()
        .replace(&data.display().to_string(), &kept.display().to_string());
    fs::write(
        &s.config,
        keyed.replace(
            "[encryption]\nkey_file = \"key\"\n",
            "[encryption]\nenabled = false\n",
        ),
    )
    .unwrap();
    let legacy = snapshot_manifest(&s);
    // What the store holds (not the run's report of it) has no seal.
    let stored: Value =
        serde_json::from_slice(&Bucket::of(&s, kind).get(&manifest_key(&id(&legacy)))).unwrap();
    assert!(stored.get("seal").is_none() && stored["encryption"].is_null());
    let cut = rfc3339(time::OffsetDateTime::now_utc() + time::Duration::minutes(1));
    let keyed = keyed.replace(
        "[encryption]\nkey_file = \"key\"\n",
        &format!("[encryption]\nkey_file = \"key\"\nunsealed_before = \"{cut}\"\n"),
    );
    fs::write(&s.config, &keyed).unwrap();
    (s, legacy, keyed)
}

/// Rotates the key of `s`, whose config was `base`: a new current key
/// (`ops-2026`), the old one (`ops-2025`) kept only to decrypt.
fn rotate(s: &Setup, base: &str) {
    common::write_key(s.path("new.key"), [42u8; 32]);
    fs::write(
        &s.config,
        base.replace(
            "key_file = \"key\"",
            "key_file = \"new.key\"\nkey_id = \"ops-2026\"\n[[encryption.old_keys]]\nkey_file = \"key\"\nkey_id = \"ops-2025\"",
        ),
    )
    .unwrap();
}

/// The ids `bkp --json list` shows, and the keys it refuses, whatever its exit.
fn listing(s: &Setup) -> (Vec<String>, Vec<String>, Output) {
    let out = s.bkp(&["--json", "list"]);
    let l = json(&out);
    let ids = l["backups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["id"].as_str().unwrap().to_string())
        .collect();
    let refused = l["unreadable"]
        .as_array()
        .map(|u| {
            u.iter()
                .map(|b| b["manifest"].as_str().unwrap_or_default().to_string())
                .collect()
        })
        .unwrap_or_default();
    (ids, refused, out)
}

/// A keyless writer's manifests: the legacy one's content (its object, no
/// seal, no encryption) under ids of 2020 that start in 2099, so that they
/// sort newest and look fresh forever.
fn plant_future_manifests(b: &Bucket, legacy: &Value, n: usize) -> Vec<String> {
    let mut planted = Vec::new();
    for i in 0..n {
        let when = time::macros::datetime!(2020-01-01 00:00 UTC) + time::Duration::days(i as i64);
        let forged = bkp::id::BackupId::new_v7(when).to_string();
        let mut v = legacy.clone();
        v["id"] = forged.clone().into();
        let future = time::macros::datetime!(2099-01-01 00:00 UTC) + time::Duration::days(i as i64);
        v["started_at"] = rfc3339(future).into();
        v["finished_at"] = rfc3339(future).into();
        b.put(
            &manifest_key(&forged),
            &serde_json::to_vec_pretty(&v).unwrap(),
        );
        planted.push(forged);
    }
    planted
}

fn planted_manifests_choose_nothing(kind: StoreKind) {
    // Cleanup keeps the two newest snapshots: forgeries that sort newest would
    // take both places and leave the genuine ones to be deleted.
    let extra = format!(
        "{}[retention]\ngrace = \"0s\"\n[retention.snapshot]\npreset = \"none\"\nkeep_last = 2\n",
        common::ARCHIVE
    );
    let (s, legacy, _) = upgraded_store(&kind, &extra);
    let b = Bucket::of(&s, &kind);
    let g1 = snapshot_manifest(&s);
    let g2 = snapshot_manifest(&s);
    let planted = plant_future_manifests(&b, &legacy, 2);

    // With `unsealed_before` alone, an unsealed manifest's own id admits
    // nothing: the forgeries (and the real legacy backup) are refused, the
    // latter with the way out named.
    let (ids, refused, out) = listing(&s);
    assert_exit(&out, 5);
    for p in &planted {
        assert!(!ids.contains(p), "a planted manifest was listed: {ids:?}");
        assert!(refused.contains(&manifest_key(p)), "{refused:?}");
    }
    assert!(text(&out).contains("bkp trust-legacy"), "{}", text(&out));
    assert_eq!(ids, vec![id(&g1), id(&g2)]);

    // The operator records what is from before sealing; the planted ones,
    // whose start times disagree with their ids, are shown and left out.
    let out = s.bkp(&["--json", "trust-legacy"]);
    assert_exit(&out, 0);
    let r = json(&out);
    let recorded: Vec<&str> = r["recorded"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["key"].as_str().unwrap())
        .collect();
    assert_eq!(recorded, vec![manifest_key(&id(&legacy))]);
    assert_eq!(r["not_recorded"].as_array().unwrap().len(), planted.len());

    let (ids, refused, out) = listing(&s);
    assert_exit(&out, 5);
    assert_eq!(ids, vec![id(&legacy), id(&g1), id(&g2)]);
    assert_eq!(refused.len(), planted.len(), "{refused:?}");

    // `restore latest` restores the newest genuine backup.
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

    // `status` counts the newest genuine snapshot, not a forgery.
    let out = s.bkp(&["--json", "status"]);
    let st = json(&out);
    let snap = st["schedules"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["schedule"] == "snapshot")
        .unwrap_or_else(|| panic!("{st:#}"));
    assert_eq!(snap["newest"]["id"], id(&g2).as_str(), "{st:#}");

    // `cleanup` deletes nothing while manifests are refused.
    let out = s.bkp(&["cleanup"]);
    assert_exit(&out, 5);
    for m in [&legacy, &g1, &g2] {
        let object = m["objects"][0]["key"].as_str().unwrap();
        assert!(b.exists(object), "cleanup deleted {object}");
    }
}

#[test]
fn planted_manifests_with_old_ids_choose_nothing_local() {
    planted_manifests_choose_nothing(StoreKind::Local);
}

#[test]
fn planted_manifests_with_old_ids_choose_nothing_s3() {
    planted_manifests_choose_nothing(StoreKind::S3);
}

#[test]
fn an_edited_legacy_manifest_is_refused_and_a_recorded_one_restores_with_a_warning() {
    let (s, legacy, _) = upgraded_store(&StoreKind::Local, common::ARCHIVE);
    let b = Bucket::of(&s, &StoreKind::Local);
    let lid = id(&legacy);
    let key = manifest_key(&lid);
    assert_exit(&s.bkp(&["trust-legacy"]), 0);
    assert_eq!(s.listed(&[]), vec![lid.clone()]);

    // Restoring what the list records works, and says that only the list
    // vouches for it; `--trust` says the same.
    let warning = "is not sealed by the current key";
    let target = s.path("t1");
    let out = s.bkp(&["restore", &lid, "--target", target.to_str().unwrap()]);
    assert_exit(&out, 0);
    assert!(text(&out).contains(warning), "{}", text(&out));
    assert!(text(&out).contains("bkp trust-legacy"), "{}", text(&out));
    assert!(target.join("data.tigerbeetle").exists());

    // The attacker edits it in place: other bytes than the list records.
    let original = b.get(&key);
    let mut v: Value = serde_json::from_slice(&original).unwrap();
    v["retention_days"] = 1.into();
    b.put(&key, &serde_json::to_vec_pretty(&v).unwrap());
    let out = s.bkp(&["list"]);
    assert_exit(&out, 5);
    assert!(text(&out).contains(&lid), "{}", text(&out));
    let target = s.path("t2");
    let out = s.bkp(&["restore", &lid, "--target", target.to_str().unwrap()]);
    assert_exit(&out, 5);
    assert!(text(&out).contains("no seal"), "{}", text(&out));
    assert!(!target.exists());

    // Vouched for by id, it is used, with the same warning.
    let out = s.bkp(&[
        "restore",
        &lid,
        "--trust",
        &lid,
        "--target",
        target.to_str().unwrap(),
    ]);
    assert_exit(&out, 0);
    assert!(text(&out).contains(warning), "{}", text(&out));

    // Put back byte for byte, it is what was recorded again.
    b.put(&key, &original);
    assert_eq!(s.listed(&[]), vec![lid]);
}

#[test]
fn a_start_time_far_from_the_id_is_refused_sealed_or_not() {
    let d = tempfile::tempdir().unwrap();
    let s = setup(
        &formatted_data_file(d.path()),
        StoreKind::Local,
        common::ARCHIVE,
    );
    let a = snapshot_manifest(&s);
    let b = snapshot_manifest(&s);
    // Sealed by the key itself (a bug, or a holder of the key): still refused.
    let path = s.path(&format!("store/{}", manifest_key(&id(&a))));
    let mut v: Value = serde_json::from_slice(&fs::read(&path).unwrap()).unwrap();
    let later = rfc3339(time::OffsetDateTime::now_utc() + time::Duration::days(400));
    v["started_at"] = later.clone().into();
    v["finished_at"] = later.into();
    fs::write(&path, serde_json::to_vec_pretty(&v).unwrap()).unwrap();
    common::reseal(&path);
    let out = s.bkp(&["show", &id(&a)]);
    assert_exit(&out, 5);
    assert!(text(&out).contains("its id was made at"), "{}", text(&out));
    let (ids, refused, out) = listing(&s);
    assert_exit(&out, 5);
    assert_eq!(ids, vec![id(&b)]);
    assert_eq!(refused, vec![manifest_key(&id(&a))]);
}

#[test]
fn a_rotated_out_key_seals_nothing_new() {
    let d = tempfile::tempdir().unwrap();
    let s = setup(
        &formatted_data_file(d.path()),
        StoreKind::Local,
        common::ARCHIVE,
    );
    let bucket = Bucket::of(&s, &StoreKind::Local);
    let base = fs::read_to_string(&s.config).unwrap();
    fs::write(
        &s.config,
        base.replace(
            "key_file = \"key\"",
            "key_file = \"key\"\nkey_id = \"ops-2025\"",
        ),
    )
    .unwrap();
    let before = snapshot_manifest(&s);
    let bid = id(&before);

    // Rotation: the old key stays for decrypting.
    rotate(&s, &base);
    // Until the operator records what the old key sealed, it is not used.
    let target = s.path("t0");
    let out = s.bkp(&["restore", &bid, "--target", target.to_str().unwrap()]);
    assert_exit(&out, 5);
    assert!(text(&out).contains("bkp trust-legacy"), "{}", text(&out));
    // The operator may vouch for that one backup instead, as for an unsealed one.
    let vouched = d.path().join("vouched");
    let out = s.bkp(&[
        "restore",
        &bid,
        "--trust",
        &bid,
        "--target",
        vouched.to_str().unwrap(),
    ]);
    assert_exit(&out, 0);
    assert!(vouched.join("0_0.tigerbeetle").is_file());
    let out = s.bkp(&["--json", "trust-legacy"]);
    assert_exit(&out, 0);
    assert_eq!(
        json(&out)["recorded"][0]["key"],
        manifest_key(&bid).as_str()
    );
    let after = snapshot_manifest(&s);
    let aid = id(&after);

    // Whoever holds the leaked old key seals a newer manifest (the last
    // backup's content under a new id) and a tombstone for the newest backup.
    let old_keys = bkp::crypto::Keyring::new(
        bkp::crypto::MasterKey::from_bytes([7u8; 32]).with_id("ops-2025".into()),
        Vec::new(),
    );
    let now = time::OffsetDateTime::now_utc() + time::Duration::minutes(1);
    let forged = bkp::id::BackupId::new_v7(now).to_string();
    let mut v: Value = serde_json::from_slice(&bucket.get(&manifest_key(&aid))).unwrap();
    v.as_object_mut().unwrap().remove("seal");
    v["id"] = forged.clone().into();
    v["started_at"] = rfc3339(now).into();
    v["finished_at"] = rfc3339(now).into();
    bucket.put(
        &manifest_key(&forged),
        &bkp::manifest::seal::encode(&v, Some(&old_keys)).unwrap(),
    );
    let mut m: Value = serde_json::from_slice(&bucket.get(&manifest_key(&aid))).unwrap();
    m.as_object_mut().unwrap().remove("seal");
    let tombstone = serde_json::json!({"schema": "bkp.tombstone/1.0", "manifest": m,
        "bytes": 1, "planned_at": rfc3339(time::OffsetDateTime::now_utc())});
    let tkey = format!("trash/tigerbeetle/{aid}.json");
    bucket.put(
        &tkey,
        &bkp::manifest::seal::encode(&tombstone, Some(&old_keys)).unwrap(),
    );

    let (ids, refused, out) = listing(&s);
    assert_exit(&out, 5);
    assert_eq!(ids, vec![bid.clone(), aid.clone()]);
    assert_eq!(refused, vec![manifest_key(&forged)]);
    assert!(
        text(&out).contains("no longer the current key"),
        "{}",
        text(&out)
    );
    // `restore latest` does not fall back in silence, nor restore the forgery.
    let target = s.path("t1");
    let out = s.bkp(&["restore", "latest", "--target", target.to_str().unwrap()]);
    assert_exit(&out, 5);
    assert!(!target.exists());
    // The operator removes the refused manifest; the forged tombstone still
    // deletes nothing.
    fs::remove_file(s.path(&format!("store/{}", manifest_key(&forged)))).unwrap();
    let out = s.bkp(&["cleanup"]);
    assert_exit(&out, 5);
    assert!(text(&out).contains(&tkey), "{}", text(&out));
    let object = after["objects"][0]["key"].as_str().unwrap();
    assert!(bucket.exists(object), "a forged tombstone deleted {object}");
    // Told to by the refusal, the operator runs `bkp trust-legacy` again: what
    // the old key sealed after the store was first recorded under the new
    // key is not recorded, and the forged tombstone still deletes nothing.
    let out = s.bkp(&["--json", "trust-legacy"]);
    assert_exit(&out, 0);
    let said = text(&out);
    assert_eq!(json(&out)["recorded"], serde_json::json!([]), "{said}");
    assert!(
        said.contains(&tkey) && said.contains("a rotated-out key, and the store got it after"),
        "{said}"
    );
    let out = s.bkp(&["cleanup"]);
    assert_exit(&out, 5);
    assert!(bucket.exists(object), "a forged tombstone deleted {object}");
    assert!(listing(&s).0.contains(&aid));
    // What the old key sealed before the rotation still restores, with a warning.
    let target = s.path("t2");
    let out = s.bkp(&["restore", &bid, "--target", target.to_str().unwrap()]);
    assert_exit(&out, 0);
    assert!(
        text(&out).contains("is not sealed by the current key"),
        "{}",
        text(&out)
    );
    assert!(target.join("0_0.tigerbeetle").exists());
}

/// `bkp trust-legacy` records an unsealed manifest only when the store held it
/// before `unsealed_before`, by the store's own time of the object: a bucket
/// writer chooses a manifest's id and times, not when the store got it.
#[test]
fn trust_legacy_records_nothing_the_store_got_after_the_cut() {
    let (s, legacy, keyed) = upgraded_store(&StoreKind::Local, common::ARCHIVE);
    let b = Bucket::of(&s, &StoreKind::Local);
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let cut = time::OffsetDateTime::now_utc();
    let line = keyed
        .lines()
        .find(|l| l.starts_with("unsealed_before"))
        .unwrap()
        .to_string();
    fs::write(
        &s.config,
        keyed.replace(&line, &format!("unsealed_before = \"{}\"", rfc3339(cut))),
    )
    .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(1100));
    // Planted after the cut, its id and times agreeing, all from 2020.
    let when = time::macros::datetime!(2020-01-01 00:00 UTC);
    let forged = bkp::id::BackupId::new_v7(when).to_string();
    let mut v = legacy.clone();
    v["id"] = forged.clone().into();
    v["started_at"] = rfc3339(when).into();
    v["finished_at"] = rfc3339(when).into();
    b.put(
        &manifest_key(&forged),
        &serde_json::to_vec_pretty(&v).unwrap(),
    );

    let out = s.bkp(&["--json", "trust-legacy"]);
    assert_exit(&out, 0);
    let r = json(&out);
    let recorded: Vec<&str> = r["recorded"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["key"].as_str().unwrap())
        .collect();
    assert_eq!(recorded, vec![manifest_key(&id(&legacy))], "{}", text(&out));
    let left = r["not_recorded"].to_string();
    assert!(
        left.contains(&forged) && left.contains("since after"),
        "{left}"
    );
}

/// What `wal fetch` exits with on damage: above 125, so that PostgreSQL
/// stops the recovery instead of taking it for the archive's end.
const STOPS_RECOVERY: i32 = 205;

/// The WAL archive after a rotation: an object tagged by the old key is
/// replayed only when `bkp trust-legacy`, run with the new key current,
/// recorded it. Whoever holds the leaked old key (here: bkp run with the old
/// config) names segments past the archive's end and a second content for
/// one archived before; `wal fetch` hands PostgreSQL none of them.
#[test]
fn an_old_keys_wal_is_replayed_only_as_recorded_at_the_rotation() {
    let d = tempfile::tempdir().unwrap();
    let s = setup(&formatted_data_file(d.path()), StoreKind::Local, "");
    let system = 7_301_234_567_890_124_001u64;
    let pg = common::postgres::fake_pgdata(s.dir.path(), system);
    let pgdata = pg.to_str().unwrap().to_string();
    let seg = |n: u32| format!("0000000100000000{n:08X}");
    let base = fs::read_to_string(&s.config).unwrap();
    let old = base.replace(
        "key_file = \"key\"",
        "key_file = \"key\"\nkey_id = \"ops-2025\"",
    );
    fs::write(&s.config, &old).unwrap();
    let push = |config: &str, root: &std::path::Path, n: u32, content: &[u8]| {
        let pg = common::postgres::fake_pgdata(root, system);
        fs::write(pg.join("pg_wal").join(seg(n)), content).unwrap();
        let path = format!("pg_wal/{}", seg(n));
        let args = [
            "--config",
            config,
            "wal",
            "push",
            &path,
            "--pgdata",
            pg.to_str().unwrap(),
        ];
        let out = common::run_bkp(&args, &s.env);
        assert_exit(&out, 0);
    };
    let cfg = s.config.to_str().unwrap().to_string();
    for n in 1..=2 {
        push(&cfg, s.dir.path(), n, &[n as u8; 4096]);
    }
    let fetch = |n: u32| {
        let dest = format!("restored{n}");
        let _ = fs::remove_file(pg.join(&dest));
        let out = s.bkp(&["wal", "fetch", &seg(n), &dest, "--pgdata", &pgdata]);
        (out, fs::read(pg.join(&dest)).ok())
    };
    assert_eq!(fetch(1).1, Some(vec![1u8; 4096]));

    // Rotation: the old key stays for decrypting.
    rotate(&s, &base);
    // Until the operator records the archive, the old key's tags are not believed.
    let (out, got) = fetch(1);
    assert_exit(&out, STOPS_RECOVERY);
    assert!(got.is_none());
    assert!(text(&out).contains("bkp trust-legacy"), "{}", text(&out));
    let out = s.bkp(&["--json", "trust-legacy"]);
    assert_exit(&out, 0);
    assert_eq!(json(&out)["wal"][0]["objects"], 2, "{}", text(&out));
    assert_eq!(fetch(1).1, Some(vec![1u8; 4096]));

    // The holder of the leaked key archives with the old config into a
    // store of its own, then copies the objects into the bucket.
    let thief = s.path("thief.toml");
    fs::write(
        &thief,
        old.replace("path = \"store\"", "path = \"thiefstore\""),
    )
    .unwrap();
    let thief_root = s.path("thief");
    fs::create_dir_all(&thief_root).unwrap();
    let thief = thief.to_str().unwrap().to_string();
    push(&thief, &thief_root, 2, b"forged two");
    push(&thief, &thief_root, 3, b"forged three");
    let planted = common::walk(&s.path("thiefstore/wal"));
    assert_eq!(planted.len(), 2);
    for p in planted {
        let rel = p.strip_prefix(s.path("thiefstore")).unwrap();
        fs::copy(&p, s.path("store").join(rel)).unwrap();
    }
    // Archived before the rotation and recorded: the genuine content.
    let (out, got) = fetch(2);
    assert_exit(&out, 0);
    assert_eq!(got, Some(vec![2u8; 4096]));
    // Past the archive's end: nothing reaches PostgreSQL.
    let (out, got) = fetch(3);
    assert!(got.is_none(), "the old key's forgery was fetched");
    assert_exit(&out, STOPS_RECOVERY);
    assert!(text(&out).contains("rotated out"), "{}", text(&out));
    // Recording the archive again takes in nothing stored since it was recorded.
    let out = s.bkp(&["--json", "trust-legacy"]);
    assert_exit(&out, 0);
    assert_eq!(json(&out)["wal_not_recorded"], 2, "{}", text(&out));
    let (out, got) = fetch(3);
    assert!(got.is_none(), "the old key's forgery was recorded");
    assert_exit(&out, STOPS_RECOVERY);
    // What the new key archives needs no list.
    push(&cfg, s.dir.path(), 4, &[4u8; 4096]);
    assert_eq!(fetch(4).1, Some(vec![4u8; 4096]));
}

/// A sealed list names the store it was written for: copied into another
/// store that uses the same key, together with the legacy manifest it
/// records, it makes that store list nothing of the first one's.
#[test]
fn a_sealed_list_records_nothing_in_another_store() {
    let (s, legacy, keyed) = upgraded_store(&StoreKind::Local, common::ARCHIVE);
    assert_exit(&s.bkp(&["init"]), 0);
    let out = s.bkp(&["--json", "trust-legacy"]);
    assert_exit(&out, 0);
    let lid = id(&legacy);
    assert_eq!(s.listed(&[]), vec![lid.clone()]);
    // A second installation with the same key, its own store and marker.
    fs::write(
        &s.config,
        keyed.replace("path = \"store\"", "path = \"other\""),
    )
    .unwrap();
    let own = snapshot_manifest(&s);
    // A writer of that bucket copies the first store's list and legacy backup in.
    for key in common::walk(&s.path("store")) {
        let rel = key
            .strip_prefix(s.path("store"))
            .unwrap()
            .to_str()
            .unwrap()
            .to_string();
        let legacy_doc = rel.starts_with("legacy/")
            || rel.contains(&lid)
            || legacy["objects"]
                .as_array()
                .unwrap()
                .iter()
                .any(|o| o["key"].as_str() == Some(rel.as_str()));
        if legacy_doc {
            let to = s.path(&format!("other/{rel}"));
            fs::create_dir_all(to.parent().unwrap()).unwrap();
            fs::copy(&key, &to).unwrap();
        }
    }
    let (ids, refused, out) = listing(&s);
    assert_eq!(ids, vec![id(&own)], "{}", text(&out));
    assert_eq!(refused, vec![manifest_key(&lid)]);
    assert!(
        text(&out).contains("was written for store"),
        "{}",
        text(&out)
    );
    let target = s.path("t");
    let out = s.bkp(&["restore", &lid, "--target", target.to_str().unwrap()]);
    assert_exit(&out, 5);
    assert!(!target.exists());
}

/// The first `bkp trust-legacy` run after a rotation writes a list even with
/// nothing to record: a later run records nothing a rotated-out key sealed
/// that the store got after it began.
#[test]
fn the_first_trust_legacy_after_a_rotation_marks_its_time_with_nothing_to_record() {
    let d = tempfile::tempdir().unwrap();
    let s = setup(
        &formatted_data_file(d.path()),
        StoreKind::Local,
        common::ARCHIVE,
    );
    let bucket = Bucket::of(&s, &StoreKind::Local);
    let base = fs::read_to_string(&s.config).unwrap();
    rotate(&s, &base);
    let genuine = snapshot_manifest(&s);
    let out = s.bkp(&["--json", "trust-legacy"]);
    assert_exit(&out, 0);
    assert_eq!(json(&out)["recorded"], serde_json::json!([]));
    assert!(json(&out)["list"].is_string(), "{}", text(&out));
    std::thread::sleep(std::time::Duration::from_millis(1100));

    // The old key's holder seals a copy of the genuine backup under a new id.
    let old_keys = bkp::crypto::Keyring::new(
        bkp::crypto::MasterKey::from_bytes([7u8; 32]).with_id("ops-2025".into()),
        Vec::new(),
    );
    let forged = bkp::id::BackupId::new_v7(time::OffsetDateTime::now_utc()).to_string();
    let mut v = genuine.clone();
    v.as_object_mut().unwrap().remove("seal");
    v["id"] = forged.clone().into();
    bucket.put(
        &manifest_key(&forged),
        &bkp::manifest::seal::encode(&v, Some(&old_keys)).unwrap(),
    );
    let out = s.bkp(&["--json", "trust-legacy"]);
    assert_exit(&out, 0);
    let said = text(&out);
    assert_eq!(json(&out)["recorded"], serde_json::json!([]), "{said}");
    assert!(said.contains(&forged), "{said}");
    let (ids, refused, _) = listing(&s);
    assert_eq!(ids, vec![id(&genuine)]);
    assert_eq!(refused, vec![manifest_key(&forged)]);
}
