//! Attacks on what names a chunk and on which store a sealed document belongs
//! to, played through the binary on local stores:
//!
//! - a stolen write-only host that holds the same recipient as its victim
//!   computes the names of the victim's next chunks (a freshly formatted data
//!   file, two replicas of one cluster) and plants junk under them: neither
//!   the victim (a write-only host) nor the key holder adopts the junk, and
//!   their snapshots restore;
//! - a genuine sealed manifest (and its objects) copied from one store into
//!   another store of the same key is not that store's backup: `list` does not
//!   show it and `restore latest` does not pick it.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Output;

use common::{assert_exit, formatted_data_file, json, run_bkp, setup, text, tool, walk, StoreKind};

fn bkp(cfg: &Path, args: &[&str]) -> Output {
    let mut all = vec!["--config", cfg.to_str().unwrap()];
    all.extend_from_slice(args);
    run_bkp(&all, &[])
}

/// Runs `bkp key generate --type KIND PATH`; the config line it printed.
fn generate(kind: &str, path: &Path) -> String {
    let out = run_bkp(
        &["key", "generate", "--type", kind, path.to_str().unwrap()],
        &[],
    );
    assert_exit(&out, 0);
    let text = String::from_utf8(out.stdout).unwrap();
    // A recipient is one config line; a signer is the table to paste.
    match kind {
        "ed25519" => text,
        _ => text.lines().nth(1).expect("a config line").to_string(),
    }
}

/// The `bkp-ed25519:…` of the `[[encryption.signer]]` table printed.
fn signer(text: &str) -> String {
    let at = text.find("bkp-ed25519:").expect("a signer key");
    text[at..].split('"').next().unwrap().to_string()
}

/// The `[[encryption.signer]]` table trusting `key` for this test's hosts.
fn signer_table(key: &str) -> String {
    format!(
        "[[encryption.signer]]\nkey = \"{key}\"\nhosts = [\"{}\"]\nkinds = [\"tigerbeetle\"]\ntigerbeetle_clusters = [0]\n",
        bkp::commands::run::hostname()
    )
}

/// A config in `dir` backing up `data` to the local store `store`, with the
/// `[encryption]` lines `encryption`.
fn config(dir: &Path, store: &Path, encryption: &str, data: &Path) -> PathBuf {
    let cfg = dir.join("bkp.toml");
    fs::write(
        &cfg,
        format!(
            "work_dir = \"work\"\n[store]\ntype = \"local\"\npath = \"{}\"\n[encryption]\n{encryption}\n\
             [tigerbeetle]\ndata_file = \"{}\"\nbinary = \"{}\"\n",
            store.display(),
            data.display(),
            tool("tigerbeetle").display()
        ),
    )
    .unwrap();
    cfg
}

fn chunk_names(store: &Path) -> Vec<String> {
    walk(&store.join("tigerbeetle/chunks"))
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect()
}

/// Snapshots with `cfg` to `store`; the manifest's chunk summary, the chunk
/// ids its list names, and its id.
fn snapshot(cfg: &Path, store: &Path) -> (serde_json::Value, Vec<String>, String) {
    let out = bkp(cfg, &["--json", "snapshot"]);
    assert_exit(&out, 0);
    let m = json(&out)["manifest"].clone();
    let list = fs::read(store.join(m["chunks"]["list"]["key"].as_str().unwrap())).unwrap();
    let list: serde_json::Value =
        serde_json::from_slice(&zstd::decode_all(&list[..]).unwrap()).unwrap();
    let named = list["chunks"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|c| c[0].as_str().map(str::to_string))
        .collect();
    (
        m["chunks"].clone(),
        named,
        m["id"].as_str().unwrap().to_string(),
    )
}

/// Fails unless `named` shares no chunk with `planted`.
fn none_planted(named: &[String], planted: &[String], who: &str) {
    let adopted: Vec<&String> = named.iter().filter(|n| planted.contains(n)).collect();
    assert!(
        adopted.is_empty(),
        "{who} named {} chunk(s) the thief planted instead of storing its own",
        adopted.len()
    );
}

fn restores(admin: &Path, id: &str, target: &Path, data: &Path) {
    let out = bkp(
        admin,
        &["restore", id, "--target", target.to_str().unwrap()],
    );
    assert_exit(&out, 0);
    assert_eq!(
        fs::read(target.join("0_0.tigerbeetle")).unwrap(),
        fs::read(data).unwrap(),
        "the restored data file differs"
    );
}

#[test]
fn junk_planted_under_predicted_chunk_names_is_never_adopted() {
    let d = tempfile::tempdir().unwrap();
    let root = d.path();
    for dir in ["admin", "victim", "thief"] {
        fs::create_dir_all(root.join(dir)).unwrap();
    }
    let recipient = generate("x25519", &root.join("admin/identity"));
    let victim_signer = generate("ed25519", &root.join("victim/signing.key"));
    let thief_signer = generate("ed25519", &root.join("thief/signing.key"));
    let data = formatted_data_file(&root.join("victim"));
    // The thief knows the victim's bytes (a replica of the same cluster, or a
    // freshly formatted file): it backs up a copy to a store of its own.
    fs::copy(&data, root.join("thief/0_0.tigerbeetle")).unwrap();
    let store = root.join("store");
    let write_only = format!("{recipient}\nsigning_key_file = \"signing.key\"");
    let victim = config(&root.join("victim"), &store, &write_only, &data);
    let thief_store = root.join("thief-store");
    let thief = config(
        &root.join("thief"),
        &thief_store,
        &write_only,
        &root.join("thief/0_0.tigerbeetle"),
    );
    let admin = config(
        &root.join("admin"),
        &store,
        &format!(
            "identity_files = [\"identity\"]\n{}{}",
            signer_table(&signer(&victim_signer)),
            signer_table(&signer(&thief_signer))
        ),
        &data,
    );

    // The thief learns the names its copy's chunks get and plants junk under
    // each in the shared store.
    snapshot(&thief, &thief_store);
    let predicted = chunk_names(&thief_store);
    assert!(!predicted.is_empty());
    for name in &predicted {
        let p = store.join(format!("tigerbeetle/chunks/{}/{name}", &name[..2]));
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(&p, b"junk a thief planted").unwrap();
    }

    // The write-only victim stores every chunk of its own: none of them is
    // the thief's junk.
    let (_, named, id) = snapshot(&victim, &store);
    none_planted(&named, &predicted, "the write-only victim");
    restores(&admin, &id, &root.join("admin/t1"), &data);

    // So does the key holder's own snapshot of the same bytes.
    let (_, named, id) = snapshot(&admin, &store);
    none_planted(&named, &predicted, "the key holder");
    restores(&admin, &id, &root.join("admin/t2"), &data);

    // The victim's next snapshot still builds on its own chunks.
    let (chunks, _, _) = snapshot(&victim, &store);
    assert_eq!(chunks["added"], 0, "{chunks:#}");
}

fn listed(cfg: &Path) -> (Vec<String>, Output) {
    let out = bkp(cfg, &["--json", "list"]);
    let ids = json(&out)["backups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["id"].as_str().unwrap().to_string())
        .collect();
    (ids, out)
}

#[test]
fn a_manifest_copied_from_another_store_of_the_same_key_is_not_this_stores() {
    let d = tempfile::tempdir().unwrap();
    let data_a = formatted_data_file(&d.path().join("a").tap_mkdir());
    let data_b = formatted_data_file(&d.path().join("b").tap_mkdir());
    // Two stores, one key (setup() writes the same key for both).
    let a = setup(&data_a, StoreKind::Local, common::ARCHIVE);
    let b = setup(&data_b, StoreKind::Local, common::ARCHIVE);
    let own = {
        let out = b.bkp(&["--json", "snapshot"]);
        assert_exit(&out, 0);
        json(&out)["manifest"]["id"].as_str().unwrap().to_string()
    };
    let out = a.bkp(&["--json", "snapshot"]);
    assert_exit(&out, 0);
    let foreign = json(&out)["manifest"].clone();
    let foreign_id = foreign["id"].as_str().unwrap().to_string();

    // A writer of store B copies A's genuine manifest and its objects in.
    let key = format!("manifests/tigerbeetle/{foreign_id}.json");
    let mut keys = vec![key];
    for o in foreign["objects"].as_array().unwrap() {
        keys.push(o["key"].as_str().unwrap().to_string());
    }
    for k in &keys {
        let to = b.path(&format!("store/{k}"));
        fs::create_dir_all(to.parent().unwrap()).unwrap();
        fs::copy(a.path(&format!("store/{k}")), to).unwrap();
    }

    let (ids, out) = listed(&b.config);
    assert!(
        !ids.contains(&foreign_id),
        "store B lists store A's backup as its own: {ids:?}\n{}",
        text(&out)
    );
    assert!(ids.contains(&own), "{ids:?}\n{}", text(&out));
    assert!(text(&out).contains("another store"), "{}", text(&out));

    // `restore latest` does not restore it: it names the copy and stops (a
    // newer manifest it cannot use may hide a newer backup of its own).
    let target = b.path("target");
    let out = b.bkp(&[
        "--json",
        "restore",
        "latest",
        "--target",
        target.to_str().unwrap(),
    ]);
    assert_exit(&out, 5);
    assert!(text(&out).contains("another store"), "{}", text(&out));
    assert!(!target.exists());
    let out = b.bkp(&[
        "--json",
        "restore",
        &own,
        "--target",
        target.to_str().unwrap(),
    ]);
    assert_exit(&out, 0);
    assert_eq!(json(&out)["id"], own.as_str(), "{}", text(&out));
    let out = b.bkp(&[
        "restore",
        &foreign_id,
        "--target",
        b.path("t2").to_str().unwrap(),
    ]);
    assert_exit(&out, 5);
    assert!(text(&out).contains("another store"), "{}", text(&out));

    // Store A still lists its own.
    let (ids, out) = listed(&a.config);
    assert_exit(&out, 0);
    assert_eq!(ids, vec![foreign_id]);
}

trait Mkdir {
    fn tap_mkdir(self) -> Self;
}

impl Mkdir for PathBuf {
    fn tap_mkdir(self) -> Self {
        fs::create_dir_all(&self).unwrap();
        self
    }
}

/// Segment-sized content for a fake WAL file, distinct per `seed`.
fn segment(seed: u8) -> Vec<u8> {
    let mut b = vec![0u8; 1 << 20];
    for (i, x) in b.iter_mut().enumerate().take(50_000) {
        *x = (i as u8).wrapping_mul(31).wrapping_add(seed);
    }
    b
}

/// A genuine WAL object copied from another store of the same key and the
/// same PostgreSQL system (a cloned cluster archiving with the production
/// key into a store of its own) is not this store's: its tag names the other
/// store, so `wal fetch` here refuses it instead of handing it to recovery,
/// and this store's own object under the same name is still fetched.
#[test]
fn a_wal_object_copied_from_another_store_of_the_same_key_is_not_fetched() {
    let d = tempfile::tempdir().unwrap();
    let data = formatted_data_file(d.path());
    let a = setup(&data, StoreKind::Local, "");
    let b = setup(&data, StoreKind::Local, "");
    for s in [&a, &b] {
        assert_exit(&s.bkp(&["init"]), 0);
    }
    let system = 7_301_234_567_890_123_457u64;
    let seg = |n: u32| format!("0000000100000000{n:08X}");
    let push = |s: &common::Setup, pg: &Path, n: u32, seed: u8| {
        fs::write(pg.join("pg_wal").join(seg(n)), segment(seed)).unwrap();
        let at = format!("pg_wal/{}", seg(n));
        let out = s.bkp(&["wal", "push", &at, "--pgdata", pg.to_str().unwrap()]);
        assert_exit(&out, 0);
    };
    let pg_a = common::postgres::fake_pgdata(&a.path("a"), system);
    let pg_b = common::postgres::fake_pgdata(&b.path("b"), system);
    // The clone archived segments 1 and 2 into store A; this cluster only 1,
    // with other content.
    push(&a, &pg_a, 1, 11);
    push(&a, &pg_a, 2, 12);
    push(&b, &pg_b, 1, 21);
    // A writer of store B copies A's objects in.
    let in_a = walk(&a.path(&format!("store/wal/{system}")));
    assert_eq!(in_a.len(), 2, "{in_a:?}");
    for p in &in_a {
        let to = b.path(&format!(
            "store/wal/{system}/{}",
            p.file_name().unwrap().to_string_lossy()
        ));
        fs::copy(p, to).unwrap();
    }
    let fetch = |n: u32, to: &str| {
        b.bkp(&[
            "wal",
            "fetch",
            &seg(n),
            to,
            "--pgdata",
            pg_b.to_str().unwrap(),
        ])
    };
    // Segment 1: this store's own, whichever object is tried first.
    let out = fetch(1, "restored1");
    assert_exit(&out, 0);
    assert_eq!(fs::read(pg_b.join("restored1")).unwrap(), segment(21));
    // Segment 2: only the copied object holds it, and it is refused.
    let out = fetch(2, "restored2");
    assert_ne!(out.status.code(), Some(0), "{}", text(&out));
    assert!(!pg_b.join("restored2").exists(), "{}", text(&out));
    // Store A reads its own.
    let out = a.bkp(&[
        "wal",
        "fetch",
        &seg(2),
        "restored2",
        "--pgdata",
        pg_a.to_str().unwrap(),
    ]);
    assert_exit(&out, 0);
    assert_eq!(fs::read(pg_a.join("restored2")).unwrap(), segment(12));

    // A marker that cannot be read does not stop archiving (PostgreSQL would
    // keep its WAL): the push warns and tags the file without the store.
    let marker = b.path("store/bkp-store.json");
    let genuine = fs::read(&marker).unwrap();
    fs::write(&marker, b"{ not a marker").unwrap();
    fs::write(pg_b.join("pg_wal").join(seg(3)), segment(23)).unwrap();
    let at = format!("pg_wal/{}", seg(3));
    let out = b.bkp(&["wal", "push", &at, "--pgdata", pg_b.to_str().unwrap()]);
    assert_exit(&out, 0);
    assert!(text(&out).contains("names no store"), "{}", text(&out));
    fs::write(&marker, &genuine).unwrap();
    let out = fetch(3, "restored3");
    assert_exit(&out, 0);
    assert_eq!(fs::read(pg_b.join("restored3")).unwrap(), segment(23));

    // With the store's id pinned, a push tags and records its head with the
    // pin, whatever became of the marker: heads keep advancing.
    let id = {
        let out = b.bkp(&["--json", "init"]);
        json(&out)["store_id"].as_str().unwrap().to_string()
    };
    let cfg = fs::read_to_string(&b.config).unwrap();
    fs::write(
        &b.config,
        cfg.replace(
            "[encryption]\n",
            &format!("[encryption]\nstore_id = \"{id}\"\n"),
        ),
    )
    .unwrap();
    fs::remove_file(&marker).unwrap();
    fs::write(pg_b.join("pg_wal").join(seg(0x40)), segment(64)).unwrap();
    let at = format!("pg_wal/{}", seg(0x40));
    let out = b.bkp(&["wal", "push", &at, "--pgdata", pg_b.to_str().unwrap()]);
    assert_exit(&out, 0);
    assert!(b
        .path(&format!("store/heads/wal/{system}/{}.json", seg(0x40)))
        .exists());
    fs::write(&marker, &genuine).unwrap();
    let out = fetch(0x40, "restored40");
    assert_exit(&out, 0);
    assert_eq!(fs::read(pg_b.join("restored40")).unwrap(), segment(64));
}

/// The store marker is the store's identity: a bucket writer who replaces it
/// with another store's genuine marker of the same key would make the store
/// take that store's documents for its own. `[encryption] store_id`, as
/// `bkp init` prints it, pins it: a replaced marker is then refused (exit 3)
/// before anything is listed or restored, and putting it back heals it.
#[test]
fn a_marker_replaced_by_another_stores_is_refused_where_the_id_is_pinned() {
    let d = tempfile::tempdir().unwrap();
    let data = formatted_data_file(d.path());
    let a = setup(&data, StoreKind::Local, "");
    let b = setup(&data, StoreKind::Local, "");
    let init = |s: &common::Setup| {
        let out = s.bkp(&["--json", "init"]);
        assert_exit(&out, 0);
        json(&out)["store_id"].as_str().unwrap().to_string()
    };
    let (id_a, id_b) = (init(&a), init(&b));
    assert_ne!(id_a, id_b);
    let out = b.bkp(&["init"]);
    assert!(
        text(&out).contains(&format!("store_id = \"{id_b}\"")),
        "{}",
        text(&out)
    );
    assert_exit(&a.bkp(&["snapshot"]), 0);
    assert_exit(&b.bkp(&["snapshot"]), 0);
    let cfg = fs::read_to_string(&b.config).unwrap();
    let pinned = |id: &str| {
        cfg.replace(
            "[encryption]\n",
            &format!("[encryption]\nstore_id = \"{id}\"\n"),
        )
    };
    fs::write(&b.config, pinned(&id_b)).unwrap();
    assert_exit(&b.bkp(&["list"]), 0);
    let out = b.bkp(&["check"]);
    assert!(text(&out).contains(&id_b), "{}", text(&out));

    let marker = b.path("store/bkp-store.json");
    let own = fs::read(&marker).unwrap();
    fs::copy(a.path("store/bkp-store.json"), &marker).unwrap();
    for args in [&["list"][..], &["snapshot"][..], &["verify"][..]] {
        let out = b.bkp(args);
        assert_exit(&out, 3);
        let t = text(&out);
        assert!(t.contains(&id_a) && t.contains(&id_b), "{args:?}: {t}");
    }
    let target = b.path("target");
    let out = b.bkp(&["restore", "latest", "--target", target.to_str().unwrap()]);
    assert_exit(&out, 3);
    assert!(!target.exists());

    fs::write(&marker, own).unwrap();
    let before = listed(&b.config).0;
    assert_eq!(before.len(), 1);

    // The marker deleted, and the catalogs (caches) with it: the pinned
    // store is marked again with its own id, and nothing is disowned.
    fs::remove_file(&marker).unwrap();
    let _ = fs::remove_dir_all(b.path("store/catalog"));
    let out = b.bkp(&["init"]);
    assert_exit(&out, 0);
    assert!(text(&out).contains(&id_b), "{}", text(&out));
    assert_exit(&b.bkp(&["snapshot"]), 0);
    let after = listed(&b.config).0;
    assert_eq!(after.len(), 2, "{after:?}");
    assert!(after.contains(&before[0]));

    // Unpinned, a lost marker is not replaced by one of a new id (which
    // would disown every backup): the run warns, whatever caches are gone.
    fs::write(&b.config, &cfg).unwrap();
    fs::remove_file(&marker).unwrap();
    let _ = fs::remove_dir_all(b.path("store/catalog"));
    let out = b.bkp(&["snapshot"]);
    assert!(text(&out).contains("no store marker"), "{}", text(&out));
    assert!(!marker.exists());

    // A pin that is no store id is a config error naming the key.
    fs::write(&b.config, pinned("st-nope")).unwrap();
    let out = b.bkp(&["list"]);
    assert_exit(&out, 3);
    assert!(text(&out).contains("encryption.store_id"), "{}", text(&out));
}
