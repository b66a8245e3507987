//! A stolen write-only host holds its Ed25519 signing key, which the key
//! holder trusts as a signer. It must not reach beyond its own backups. Each
//! test plays an attack through the binary, on a local store: a signed
//! tombstone for another host's backup, a signed manifest claiming another
//! host or a kind outside the signer's scope, signed WAL objects under
//! another PostgreSQL system's names, and the config that says what a signer
//! may sign (a bare, unscoped signer is refused).

mod common;

use std::fs;
use std::path::{Path, PathBuf};

use bkp::crypto::pubkey::SigningKey;
use bkp::crypto::{Keyring, MasterKey};
use common::{
    assert_exit, formatted_data_file, json, rfc3339, run_bkp, setup, text, Setup, StoreKind,
};
use serde_json::Value;

/// `bkp key generate --type KIND PATH`: what it printed.
fn generate(kind: &str, path: &Path) -> String {
    let out = run_bkp(
        &["key", "generate", "--type", kind, path.to_str().unwrap()],
        &[],
    );
    assert_exit(&out, 0);
    String::from_utf8(out.stdout).unwrap()
}

/// The public key (`bkp-ed25519:…` or `bkp-x25519:…`) in `printed`.
fn public(printed: &str, prefix: &str) -> String {
    let at = printed.find(prefix).expect("a public key");
    printed[at..].split('"').next().unwrap().trim().to_string()
}

/// The stolen host: its signing key (a file the thief holds) and signer.
struct Thief {
    dir: PathBuf,
    signer: String,
    id: String,
}

impl Thief {
    fn new(root: &Path) -> Thief {
        let dir = root.join("thief");
        fs::create_dir_all(&dir).unwrap();
        let printed = generate("ed25519", &dir.join("signing.key"));
        let signer = public(&printed, "bkp-ed25519:");
        let id = printed.lines().next().unwrap().trim().to_string();
        Thief { dir, signer, id }
    }

    /// What the stolen key seals with.
    fn keys(&self) -> Keyring {
        let key = fs::read(self.dir.join("signing.key")).unwrap();
        Keyring::new(MasterKey::from_bytes([9; 32]), Vec::new())
            .with_signing(Some(SigningKey::from_text(&key, "thief").unwrap()), vec![])
    }

    fn seal(&self, doc: &Value) -> Vec<u8> {
        bkp::manifest::seal::encode(doc, Some(&self.keys())).unwrap()
    }
}

/// Trusts `signer` in the key holder's config `s`, with scope `scope` (TOML
/// lines of an `[[encryption.signer]]` table).
fn trust(s: &Setup, signer: &str, scope: &str) {
    let mut cfg = fs::read_to_string(&s.config).unwrap();
    cfg.push_str(&format!(
        "\n[[encryption.signer]]\nkey = \"{signer}\"\n{scope}\n"
    ));
    fs::write(&s.config, cfg).unwrap();
}

/// A key holder's setup (a TigerBeetle data file, the HMAC key, a local
/// store), running as host `db1`, with one genuine snapshot: its manifest as
/// stored, without the seal.
fn key_holder(root: &Path) -> (Setup, Value) {
    let data = formatted_data_file(root);
    // One archive object per snapshot: a manifest naming it restores it.
    let mut s = setup(&data, StoreKind::Local, common::ARCHIVE);
    let kept = s.path("data.tigerbeetle");
    fs::copy(&data, &kept).unwrap();
    let cfg = fs::read_to_string(&s.config)
        .unwrap()
        .replace(&data.display().to_string(), &kept.display().to_string());
    fs::write(&s.config, cfg).unwrap();
    s.env.push(("BKP_HOSTNAME".into(), "db1".into()));
    let out = s.bkp(&["--json", "snapshot"]);
    assert_exit(&out, 0);
    let id = json(&out)["manifest"]["id"].as_str().unwrap().to_string();
    let mut m: Value = serde_json::from_slice(
        &fs::read(s.path(&format!("store/manifests/tigerbeetle/{id}.json"))).unwrap(),
    )
    .unwrap();
    m.as_object_mut().unwrap().remove("seal");
    (s, m)
}

/// The key holder's setup with its genuine snapshot ([`key_holder`]), and a
/// thief whose signer it trusts with `scope`. The directory lives as long as
/// the tuple.
fn scene(scope: &str) -> (tempfile::TempDir, Setup, Value, Thief) {
    let d = tempfile::tempdir().unwrap();
    let (s, genuine) = key_holder(d.path());
    let thief = Thief::new(d.path());
    trust(&s, &thief.signer, scope);
    (d, s, genuine, thief)
}

fn put(s: &Setup, key: &str, bytes: &[u8]) {
    let p = s.path(&format!("store/{key}"));
    fs::create_dir_all(p.parent().unwrap()).unwrap();
    fs::write(p, bytes).unwrap();
}

#[test]
fn a_signers_tombstone_deletes_no_backup() {
    // Even a scope that covers the backup's host and kind decides no deletion.
    let (_d, s, genuine, thief) =
        scene("hosts = [\"db1\"]\nkinds = [\"tigerbeetle\"]\ntigerbeetle_clusters = [0]");
    let id = genuine["id"].as_str().unwrap();
    let manifest = format!("store/manifests/tigerbeetle/{id}.json");
    let tombstone = serde_json::json!({
        "schema": "bkp.tombstone/1.0",
        "manifest": genuine,
        "bytes": 0,
        "planned_at": rfc3339(time::OffsetDateTime::now_utc()),
    });
    put(
        &s,
        &format!("trash/tigerbeetle/{id}.json"),
        &thief.seal(&tombstone),
    );

    let out = s.bkp(&["cleanup"]);
    assert_exit(&out, 5);
    let t = text(&out);
    assert!(
        t.contains(&thief.id) && t.contains("only a holder of the key"),
        "{t}"
    );
    assert!(
        s.path(&manifest).exists(),
        "the genuine backup was deleted: {t}"
    );
    assert_eq!(s.listed(&[]), vec![id.to_string()]);
}

/// A signer that may sign only its own kind plants a backup of that kind
/// under the id of the key holder's newest snapshot, and a newer one so that
/// retention deletes the first: cleanup, which plans by id, must not delete
/// the snapshot in its name. It refuses to plan, naming both manifests. Nor
/// may `bkp copy`, whose retention decides by id too, leave the snapshot out
/// of the copy in the other's name: it copies neither, and says so.
#[test]
fn a_signers_backup_under_another_backups_id_deletes_and_leaves_out_nothing() {
    let (_d, s, genuine, thief) = scene("hosts = [\"web1\"]\nkinds = [\"parquet\"]");
    let mut cfg = fs::read_to_string(&s.config).unwrap();
    cfg.push_str("\n[retention.replicate]\npreset = \"none\"\n");
    fs::write(&s.config, cfg).unwrap();
    let id = genuine["id"].as_str().unwrap().to_string();
    let started: time::OffsetDateTime = time::OffsetDateTime::parse(
        genuine["started_at"].as_str().unwrap(),
        &time::format_description::well_known::Rfc3339,
    )
    .unwrap();
    let replicate = |id: &str, at: time::OffsetDateTime| {
        let mut m = genuine.clone();
        m["id"] = id.into();
        m["kind"] = "parquet".into();
        m["host"] = "web1".into();
        m["scope"] = "full".into();
        m["operation"] = "replicate".into();
        m["started_at"] = rfc3339(at).into();
        m["finished_at"] = rfc3339(at).into();
        m["objects"] = serde_json::json!([]);
        m["files"] = serde_json::json!([]);
        m["source"] = serde_json::json!({});
        put(&s, &format!("manifests/parquet/{id}.json"), &thief.seal(&m));
    };
    // Inside the id's minute, before the snapshot: planned first, by id.
    replicate(&id, started - time::Duration::seconds(30));
    let newer = time::OffsetDateTime::now_utc() + time::Duration::minutes(1);
    let newer_id = bkp::id::BackupId::new_v7(newer).to_string();
    replicate(&newer_id, newer);
    let snapshot = s.path(&format!("store/manifests/tigerbeetle/{id}.json"));
    let object = s.path(&format!(
        "store/{}",
        genuine["objects"][0]["key"].as_str().unwrap()
    ));

    for args in [&["cleanup", "--dry-run"][..], &["cleanup"]] {
        let out = s.bkp(args);
        let t = text(&out);
        assert_exit(&out, 5);
        assert!(
            t.contains(&format!("manifests/tigerbeetle/{id}.json"))
                && t.contains(&format!("manifests/parquet/{id}.json"))
                && t.contains("deletes nothing"),
            "{args:?}: {t}"
        );
        assert!(snapshot.exists() && object.exists(), "{args:?}: {t}");
    }
    // verify, whose chains and ledger audit look backups up by id, names it too.
    let out = s.bkp(&["verify"]);
    let t = text(&out);
    assert_exit(&out, 5);
    assert!(
        t.contains(&format!("manifests/tigerbeetle/{id}.json"))
            && t.contains(&format!("manifests/parquet/{id}.json")),
        "{t}"
    );
    let mut cfg = fs::read_to_string(&s.config).unwrap();
    cfg.push_str("\n[[copies]]\nname = \"c\"\ntype = \"local\"\npath = \"copy\"\n");
    fs::write(&s.config, cfg).unwrap();
    let out = s.bkp(&["copy"]);
    let t = text(&out);
    assert_exit(&out, 5);
    for kind in ["tigerbeetle", "parquet"] {
        assert!(
            t.contains(&format!("manifests/{kind}/{id}.json is not copied")),
            "{kind}: {t}"
        );
    }
    let copied = |kind: &str, id: &str| s.path(&format!("copy/manifests/{kind}/{id}.json"));
    assert!(!copied("tigerbeetle", &id).exists() && !copied("parquet", &id).exists());
    assert!(copied("parquet", &newer_id).exists(), "{t}");
    // The planted one moved to the copy: the copy's retention still sees
    // the id under two kinds, and leaves the snapshot in.
    let planted = format!("manifests/parquet/{id}.json");
    fs::rename(
        s.path(&format!("store/{planted}")),
        s.path(&format!("copy/{planted}")),
    )
    .unwrap();
    let out = s.bkp(&["copy"]);
    assert_exit(&out, 0);
    assert!(copied("tigerbeetle", &id).exists(), "{}", text(&out));
    let target = s.path("restored");
    let out = s.bkp(&[
        "restore",
        &id,
        "--kind",
        "tigerbeetle",
        "--target",
        target.to_str().unwrap(),
    ]);
    assert_exit(&out, 0);
}

/// A signer's manifest naming the key holder's object with other bytes (a
/// genuine object of another backup, put in its place) is checked first, as
/// the older: the key holder's backup must still be checked against its own
/// record, not taken as read already.
#[test]
fn a_signers_manifest_naming_another_backups_object_vouches_for_nothing() {
    let (_d, s, genuine, thief) =
        scene("hosts = [\"web1\"]\nkinds = [\"tigerbeetle\"]\ntigerbeetle_clusters = [0]");
    let out = s.bkp(&["--json", "snapshot"]);
    assert_exit(&out, 0);
    let other: Value = json(&out)["manifest"].clone();
    let key = genuine["objects"][0]["key"].as_str().unwrap();
    let other_key = other["objects"][0]["key"].as_str().unwrap();
    assert_exit(&s.bkp(&["verify"]), 0);

    // The other backup's object in place of the genuine one, and a manifest
    // of the thief's, older than both, that records those bytes at that key.
    fs::copy(
        s.path(&format!("store/{other_key}")),
        s.path(&format!("store/{key}")),
    )
    .unwrap();
    let started: time::OffsetDateTime = time::OffsetDateTime::parse(
        genuine["started_at"].as_str().unwrap(),
        &time::format_description::well_known::Rfc3339,
    )
    .unwrap();
    let at = started - time::Duration::hours(1);
    let id = bkp::id::BackupId::new_v7(at).to_string();
    let mut m = other.clone();
    m.as_object_mut().unwrap().remove("seal");
    m["id"] = id.as_str().into();
    m["host"] = "web1".into();
    m["started_at"] = rfc3339(at).into();
    m["finished_at"] = rfc3339(at).into();
    m["objects"][0]["key"] = key.into();
    put(
        &s,
        &format!("manifests/tigerbeetle/{id}.json"),
        &thief.seal(&m),
    );

    let out = s.bkp(&["verify"]);
    let t = text(&out);
    assert_exit(&out, 5);
    let genuine_id = genuine["id"].as_str().unwrap();
    assert!(t.contains(genuine_id) && t.contains(key), "{t}");
}

#[test]
fn a_signed_manifest_outside_the_signers_scope_is_never_restored() {
    // The stolen host backs up its Parquet tier, as web1.
    let (_d, s, genuine, thief) = scene("hosts = [\"web1\"]\nkinds = [\"parquet\"]");
    let genuine_id = genuine["id"].as_str().unwrap().to_string();

    // A newer "snapshot of db1" (the genuine one's objects: a rollback at
    // best), then one of its own host but of a kind it does not back up.
    for (n, (host, breaks)) in [("db1", "host \"db1\""), ("web1", "kind tigerbeetle")]
        .into_iter()
        .enumerate()
    {
        let at = time::OffsetDateTime::now_utc() + time::Duration::minutes(n as i64 + 1);
        let id = bkp::id::BackupId::new_v7(at).to_string();
        let mut forged = genuine.clone();
        forged["id"] = id.clone().into();
        forged["host"] = host.into();
        forged["started_at"] = rfc3339(at).into();
        forged["finished_at"] = rfc3339(at).into();
        let key = format!("manifests/tigerbeetle/{id}.json");
        put(&s, &key, &thief.seal(&forged));

        let target = s.path(&format!("restored-{n}"));
        let out = s.bkp(&["restore", "latest", "--target", target.to_str().unwrap()]);
        let t = text(&out);
        assert_exit(&out, 5);
        assert!(!target.exists(), "restored the forgery: {t}");
        assert!(
            t.contains(&id) && t.contains(&thief.id) && t.contains(breaks),
            "{breaks}: {t}"
        );
        // `list` names it as refused, and the genuine backup stays listed.
        let out = s.bkp(&["list"]);
        assert_exit(&out, 5);
        assert!(text(&out).contains(&id), "{}", text(&out));
        fs::remove_file(s.path(&format!("store/{key}"))).unwrap();
    }
    assert_eq!(s.listed(&[]), vec![genuine_id]);
}

fn segment(seed: u8) -> Vec<u8> {
    let mut b = vec![0u8; 1 << 20];
    for (i, x) in b.iter_mut().enumerate().take(50_000) {
        *x = (i as u8).wrapping_mul(31).wrapping_add(seed);
    }
    b
}

#[test]
fn a_signer_names_no_wal_of_another_system() {
    let d = tempfile::tempdir().unwrap();
    let (mut s, _) = key_holder(d.path());
    let thief = Thief::new(d.path());
    let victim: u64 = 7_301_234_567_890_123_456;
    let own: u64 = 7_300_000_000_000_000_001;
    // The key holder also decrypts what write-only hosts encrypt to its identity.
    let recipient = public(&generate("x25519", &s.path("identity")), "bkp-x25519:");
    let cfg = fs::read_to_string(&s.config).unwrap().replace(
        "key_file = \"key\"\n",
        "key_file = \"key\"\nidentity_files = [\"identity\"]\n",
    );
    fs::write(&s.config, cfg).unwrap();
    trust(
        &s,
        &thief.signer,
        &format!("hosts = [\"pg2\"]\nkinds = [\"postgres\"]\npostgres_systems = [\"{own}\"]"),
    );
    s.env.retain(|(k, _)| k != "BKP_HOSTNAME");

    // The thief runs bkp as the stolen host, with a pg_control claiming the
    // victim's system: its next segment, and one after.
    let thief_cfg = thief.dir.join("bkp.toml");
    fs::write(
        &thief_cfg,
        format!(
            "work_dir = \"work\"\n[store]\ntype = \"local\"\npath = \"{}\"\n[encryption]\nrecipient = \"{recipient}\"\nsigning_key_file = \"signing.key\"\n",
            s.path("store").display()
        ),
    )
    .unwrap();
    let thief_pg = common::postgres::fake_pgdata(&thief.dir, victim);
    let seg = |n: u32| format!("0000000100000000{n:08X}");
    for n in [1, 2] {
        fs::write(thief_pg.join("pg_wal").join(seg(n)), segment(100 + n as u8)).unwrap();
        let out = run_bkp(
            &[
                "--config",
                thief_cfg.to_str().unwrap(),
                "wal",
                "push",
                &format!("pg_wal/{}", seg(n)),
                "--pgdata",
                thief_pg.to_str().unwrap(),
            ],
            &[],
        );
        assert_exit(&out, 0);
    }

    // The victim's server archives its own segment 1: the planted object
    // under that name does not occupy it.
    let pg = common::postgres::fake_pgdata(&s.path("victim"), victim);
    let pgdata = pg.to_str().unwrap();
    fs::write(pg.join("pg_wal").join(seg(1)), segment(1)).unwrap();
    let out = s.bkp(&[
        "wal",
        "push",
        &format!("pg_wal/{}", seg(1)),
        "--pgdata",
        pgdata,
    ]);
    assert_exit(&out, 0);
    let t = text(&out);
    assert!(
        t.contains(&thief.id) && t.contains(&format!("PostgreSQL system {victim}")),
        "{t}"
    );

    // Recovery gets the genuine segment 1, and never the planted segment 2.
    let out = s.bkp(&["wal", "fetch", &seg(1), "restored1", "--pgdata", pgdata]);
    assert_exit(&out, 0);
    assert_eq!(fs::read(pg.join("restored1")).unwrap(), segment(1));
    let out = s.bkp(&["wal", "fetch", &seg(2), "restored2", "--pgdata", pgdata]);
    assert_exit(&out, 205);
    let t = text(&out);
    assert!(!pg.join("restored2").exists(), "{t}");
    assert!(
        t.contains(&thief.id) && t.contains(&format!("PostgreSQL system {victim}")),
        "{t}"
    );
}

#[test]
fn a_signer_is_configured_with_its_scope() {
    let d = tempfile::tempdir().unwrap();
    let data = formatted_data_file(d.path());
    let s = setup(&data, StoreKind::Local, "");
    let thief = Thief::new(d.path());
    let base = fs::read_to_string(&s.config).unwrap();
    let with = |extra: &str| {
        fs::write(&s.config, format!("{base}{extra}")).unwrap();
        s.bkp(&["list"])
    };

    // Today's bare signer would be trusted for everything: a config error
    // that shows the table to write, with this key in it.
    let bare = base.replace(
        "key_file = \"key\"\n",
        &format!("key_file = \"key\"\nsigners = [\"{}\"]\n", thief.signer),
    );
    fs::write(&s.config, bare).unwrap();
    let out = s.bkp(&["list"]);
    assert_exit(&out, 3);
    let t = text(&out);
    assert!(
        t.contains("encryption.signers")
            && t.contains("[[encryption.signer]]")
            && t.contains(&format!("key = \"{}\"", thief.signer))
            && t.contains("hosts = ")
            && t.contains("kinds = "),
        "{t}"
    );

    let table = |body: &str| {
        format!(
            "\n[[encryption.signer]]\nkey = \"{}\"\n{body}\n",
            thief.signer
        )
    };
    for (body, field) in [
        ("kinds = [\"parquet\"]", "encryption.signer[0].hosts"),
        ("hosts = [\"web1\"]", "encryption.signer[0].kinds"),
        (
            "hosts = [\"web1\"]\nkinds = [\"parket\"]",
            "encryption.signer[0].kinds",
        ),
        (
            "hosts = [\"pg2\"]\nkinds = [\"postgres\"]",
            "encryption.signer[0].postgres_systems",
        ),
        (
            "hosts = [\"tb\"]\nkinds = [\"tigerbeetle\"]",
            "encryption.signer[0].tigerbeetle_clusters",
        ),
        (
            "hosts = [\"web1\"]\nkinds = [\"parquet\"]\npostgres_systems = [\"12\"]",
            "encryption.signer[0].postgres_systems",
        ),
        (
            "hosts = [\"pg2\"]\nkinds = [\"postgres\"]\npostgres_systems = [\"x\"]",
            "encryption.signer[0].postgres_systems",
        ),
    ] {
        let out = with(&table(body));
        assert_exit(&out, 3);
        assert!(text(&out).contains(field), "{body}: {}", text(&out));
    }
    let twice = format!(
        "{}{}",
        table("hosts = [\"a\"]\nkinds = [\"parquet\"]"),
        table("hosts = [\"b\"]\nkinds = [\"duckdb\"]")
    );
    let out = with(&twice);
    assert_exit(&out, 3);
    assert!(
        text(&out).contains("encryption.signer[1].key"),
        "{}",
        text(&out)
    );

    // A scoped signer loads, and `bkp check` shows it with its scope.
    let out = with(&table(
        "hosts = [\"pg2\"]\nkinds = [\"postgres\", \"pgdump\"]\npostgres_systems = [7300000000000000001]",
    ));
    assert_exit(&out, 0);
    let out = s.bkp(&["check"]);
    let t = text(&out);
    assert!(
        t.contains(&format!(
            "signer {} for hosts pg2; kinds pgdump, postgres; PostgreSQL systems 7300000000000000001",
            thief.id
        )) || t.contains(&format!(
            "signer {} for hosts pg2; kinds postgres, pgdump; PostgreSQL systems 7300000000000000001",
            thief.id
        )),
        "{t}"
    );
}

/// A signer scoped to cluster 0 signs a snapshot that names no cluster: it
/// would count as every cluster's newest for `status` and bound every
/// cluster's log for retention. It is refused as outside the scope, and
/// named. The key holder's own snapshot names its cluster, read from the
/// data file, with no `addresses` configured.
#[test]
fn a_scoped_signers_snapshot_that_names_no_cluster_is_refused() {
    let (_d, s, genuine, thief) =
        scene("hosts = [\"db1\"]\nkinds = [\"tigerbeetle\"]\ntigerbeetle_clusters = [0]");
    assert_eq!(genuine["source"]["cluster_id"], "0", "{genuine}");
    let id = bkp::id::BackupId::new_v7(time::OffsetDateTime::now_utc()).to_string();
    let mut planted = genuine.clone();
    planted["id"] = id.clone().into();
    planted["source"]
        .as_object_mut()
        .unwrap()
        .remove("cluster_id");
    put(
        &s,
        &format!("manifests/tigerbeetle/{id}.json"),
        &thief.seal(&planted),
    );
    let out = s.bkp(&["--json", "list"]);
    let t = text(&out);
    assert_ne!(out.status.code(), Some(0), "{t}");
    assert!(
        t.contains(&id) && t.contains("the snapshot names none"),
        "{t}"
    );
    let listed = json(&out);
    let shown: Vec<&str> = listed["backups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["id"].as_str().unwrap())
        .collect();
    assert_eq!(shown, vec![genuine["id"].as_str().unwrap()]);
}

/// A signer scoped to one PostgreSQL system signs a base backup that names
/// no system: it would count as every system's newest for `status` and date
/// every system's WAL for retention. It is refused as outside the scope,
/// while the same signer's base backup naming its system is used.
#[test]
fn a_scoped_signers_base_backup_that_names_no_system_is_refused() {
    let (_d, s, genuine, thief) = scene(
        "hosts = [\"db1\"]\nkinds = [\"tigerbeetle\", \"postgres\"]\ntigerbeetle_clusters = [0]\npostgres_systems = [7300000000000000001]",
    );
    let base = |system: Option<&str>| {
        let id = bkp::id::BackupId::new_v7(time::OffsetDateTime::now_utc()).to_string();
        let mut m = genuine.clone();
        m["id"] = id.clone().into();
        m["kind"] = "postgres".into();
        for o in m["objects"].as_array_mut().unwrap() {
            let key = o["key"]
                .as_str()
                .unwrap()
                .replacen("tigerbeetle/", "postgres/", 1);
            o["key"] = key.into();
        }
        m["source"] = match system {
            Some(sys) => serde_json::json!({"format": "tar", "system_identifier": sys}),
            None => serde_json::json!({"format": "tar"}),
        };
        put(
            &s,
            &format!("manifests/postgres/{id}.json"),
            &thief.seal(&m),
        );
        id
    };
    let inside = base(Some("7300000000000000001"));
    let out = s.bkp(&["--json", "list", "--kind", "postgres"]);
    assert_exit(&out, 0);
    assert!(text(&out).contains(&inside), "{}", text(&out));

    let unnamed = base(None);
    let out = s.bkp(&["--json", "list", "--kind", "postgres"]);
    let t = text(&out);
    assert_ne!(out.status.code(), Some(0), "{t}");
    assert!(
        t.contains(&unnamed) && t.contains("the base backup names none"),
        "{t}"
    );
    let shown: Vec<String> = json(&out)["backups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(shown, vec![inside]);
}
