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
