//! 3-2-1 through the binary: `[[copies]]` on a second SeaweedFS server (its
//! own credentials) and in a local directory, brought up to date by `bkp
//! copy`, read with `--store NAME` once the primary is gone; an object lost
//! from a copy is reported by `verify` and copied again; a copy that lies
//! is caught by the restore that reads it.

mod common;

use std::fs;
use std::path::{Path, PathBuf};

use common::{
    assert_exit, formatted_data_file, json, run_bkp, text, tool, walk, write_key, S3Server, ARCHIVE,
};

/// A config with its primary store `store` (TOML lines after `[store]`) and
/// `copies` (whole `[[copies]]` tables), a key, and the data file `data`.
struct Site {
    dir: tempfile::TempDir,
    config: PathBuf,
    env: Vec<(String, String)>,
}

impl Site {
    fn new(data: &Path, store: &str, copies: &str, tb: &str, env: Vec<(String, String)>) -> Site {
        let dir = tempfile::tempdir().unwrap();
        write_key(dir.path().join("key"), [7u8; 32]);
        let config = dir.path().join("bkp.toml");
        fs::write(
            &config,
            format!(
                "work_dir = \"work\"\n[store]\n{store}[encryption]\nkey_file = \"key\"\n[tigerbeetle]\ndata_file = \"{}\"\nbinary = \"{}\"\n{tb}{copies}",
                data.display(),
                tool("tigerbeetle").display()
            ),
        )
        .unwrap();
        Site { dir, config, env }
    }

    /// A local primary (`store`) with one local copy `c` (`copy`), snapshots
    /// in the archive format.
    fn local_with_copy(data: &Path) -> Site {
        let copies = "[[copies]]\nname = \"c\"\ntype = \"local\"\npath = \"copy\"\n";
        let store = "type = \"local\"\npath = \"store\"\n";
        Site::new(data, store, copies, ARCHIVE, vec![])
    }

    fn bkp(&self, args: &[&str]) -> std::process::Output {
        let mut all = vec!["--config", self.config.to_str().unwrap()];
        all.extend_from_slice(args);
        run_bkp(&all, &self.env)
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    /// `restore ID --store STORE` into `name`: it must succeed and restore
    /// `data` exactly. Its output, for what else it must say.
    fn restores_from_store(
        &self,
        id: &str,
        store: &str,
        name: &str,
        data: &Path,
    ) -> std::process::Output {
        let target = self.path(name);
        let out = self.bkp(&[
            "restore",
            id,
            "--store",
            store,
            "--target",
            target.to_str().unwrap(),
        ]);
        assert_exit(&out, 0);
        assert_eq!(digest(&restored_data_file(&target)), digest(data));
        out
    }

    /// `restore latest` into `name` with the environment `env`, without
    /// --store: it must say it reads copy `copy` and restore `data` exactly.
    fn restores_from_copy(&self, copy: &str, name: &str, env: &[(String, String)], data: &Path) {
        let target = self.path(name);
        let cfg = self.config.to_str().unwrap();
        let args = [
            "--config",
            cfg,
            "restore",
            "latest",
            "--target",
            target.to_str().unwrap(),
        ];
        let out = run_bkp(&args, env);
        assert_exit(&out, 0);
        let said = format!("restoring from copy {copy}");
        assert!(text(&out).contains(&said), "{}", text(&out));
        assert_eq!(digest(&restored_data_file(&target)), digest(data));
    }

    /// `bkp --json copy ARGS`, which must exit `code`; the outcome per copy name.
    fn copy(&self, args: &[&str], code: i32) -> serde_json::Map<String, serde_json::Value> {
        let mut all = vec!["--json", "copy"];
        all.extend_from_slice(args);
        let out = self.bkp(&all);
        assert_exit(&out, code);
        json(&out)["copies"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| {
                (
                    c["name"].as_str().unwrap().to_string(),
                    c["outcome"].clone(),
                )
            })
            .collect()
    }
}

fn s3_store(s3: &S3Server, bucket: &str) -> String {
    format!(
        "type = \"s3\"\nbucket = \"{bucket}\"\nprefix = \"team/bkp\"\nendpoint = \"{}\"\nregion = \"{}\"\npart_size = \"5MiB\"\n",
        s3.endpoint, s3.region
    )
}

fn digest(p: &Path) -> String {
    bkp::stages::hash::digest_reader(std::io::BufReader::new(fs::File::open(p).unwrap()))
        .unwrap()
        .sha256
}

/// The restored data file under `target`.
fn restored_data_file(target: &Path) -> PathBuf {
    walk(target)
        .into_iter()
        .find(|p| p.to_string_lossy().ends_with(".tigerbeetle"))
        .unwrap_or_else(|| panic!("no data file restored in {}", target.display()))
}

fn n(v: &serde_json::Value, field: &str) -> u64 {
    v[field]
        .as_u64()
        .unwrap_or_else(|| panic!("{field} in {v}"))
}

#[test]
fn copies_in_another_region_restore_and_drill_after_the_primary_is_gone() {
    let tmp = tempfile::tempdir().unwrap();
    let data = formatted_data_file(tmp.path());
    let mut primary = S3Server::start();
    let region2 = S3Server::start();
    let (b1, b2) = (primary.new_bucket("main"), region2.new_bucket("dr"));
    let copies = format!(
        "[[copies]]\nname = \"dr\"\n{}access_key_env = \"DR_KEY\"\nsecret_key_env = \"DR_SECRET\"\n[[copies]]\nname = \"nas\"\ntype = \"local\"\npath = \"nas\"\n",
        s3_store(&region2, &b2)
    );
    let mut env = primary.env();
    env.push(("DR_KEY".into(), region2.access_key.clone()));
    env.push(("DR_SECRET".into(), region2.secret_key.clone()));
    let site = Site::new(&data, &s3_store(&primary, &b1), &copies, "", env);

    let out = site.bkp(&["--json", "snapshot"]);
    assert_exit(&out, 0);
    let first = json(&out)["manifest"]["id"].as_str().unwrap().to_string();

    // Both copies get the backup: its chunks, chunk list and manifest.
    let done = site.copy(&[], 0);
    for name in ["dr", "nas"] {
        let o = &done[name];
        assert_eq!(o["backups_copied"].as_array().unwrap().len(), 1, "{o}");
        assert!(n(o, "objects_copied") >= 2, "{o}");
        assert!(
            n(o, "documents_copied") >= 2,
            "the marker and the head: {o}"
        );
    }
    // Again: nothing to copy, nothing uploaded.
    let again = site.copy(&[], 0);
    for name in ["dr", "nas"] {
        let o = &again[name];
        assert_eq!(
            (
                n(o, "objects_copied"),
                n(o, "bytes_copied"),
                n(o, "documents_copied")
            ),
            (0, 0, 0),
            "{o}"
        );
        assert!(o["backups_copied"].as_array().unwrap().is_empty(), "{o}");
        assert_eq!(n(o, "backups_present"), 1, "{o}");
    }

    // A second backup reaches only the copy asked for; verify says what the
    // other lacks (a lagging copy is not a damaged one: exit 0).
    let out = site.bkp(&["--json", "snapshot"]);
    assert_exit(&out, 0);
    let second = json(&out)["manifest"]["id"].as_str().unwrap().to_string();
    let to_dr = site.copy(&["--to", "dr"], 0);
    assert_eq!(to_dr.len(), 1);
    assert_eq!(to_dr["dr"]["backups_copied"].as_array().unwrap().len(), 1);
    let out = site.bkp(&["--json", "verify", "--store", "nas"]);
    assert_exit(&out, 0);
    let lacks = &json(&out)["copy_lacks"];
    assert_eq!(lacks["backups"].as_array().unwrap().len(), 1, "{lacks}");
    assert!(
        lacks["backups"][0].as_str().unwrap().contains(&second),
        "{lacks}"
    );
    let listed = |store: &str| -> Vec<String> {
        let out = site.bkp(&["--json", "list", "--store", store]);
        assert_exit(&out, 0);
        json(&out)["backups"]
            .as_array()
            .unwrap()
            .iter()
            .map(|b| b["id"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(listed("nas"), vec![first.clone()]);
    assert_eq!(listed("dr"), vec![first.clone(), second.clone()]);

    // status has a line per copy; a backup that waited longer than max_lag
    // (a day later, by BKP_NOW) raises the alarm naming the copy run to make.
    let status = |now: Option<String>| {
        let mut env = site.env.clone();
        env.extend(now.map(|t| ("BKP_NOW".to_string(), t)));
        let cfg = site.config.to_str().unwrap();
        let out = run_bkp(&["--config", cfg, "--json", "status"], &env);
        let copies = json(&out)["copies"].as_array().unwrap().clone();
        (out, copies)
    };
    let (_, copies) = status(None);
    let row = |rows: &[serde_json::Value], name: &str| {
        let found = rows.iter().find(|c| c["name"] == name).cloned();
        found.unwrap_or_else(|| panic!("{rows:?}"))
    };
    let (dr, nas) = (row(&copies, "dr"), row(&copies, "nas"));
    assert_eq!((n(&dr, "lacks"), n(&dr, "holds")), (0, 2), "{dr}");
    assert_eq!((n(&nas, "lacks"), n(&nas, "holds")), (1, 1), "{nas}");
    assert_eq!(nas["breached"], false, "{nas}");
    // What each store holds, by its manifests: the copy that holds both
    // backups weighs what the primary does; the one that holds one, less.
    let cfg = site.config.to_str().unwrap();
    let out = run_bkp(&["--config", cfg, "--json", "status"], &site.env);
    let stored = json(&out)["stored"].clone();
    let bytes = |v: &serde_json::Value| v["bytes"].as_u64().unwrap();
    assert!(bytes(&stored) > 0 && stored["at_least"] == true, "{stored}");
    assert_eq!(stored["backups"], 2, "{stored}");
    assert_eq!(stored["kinds"]["tigerbeetle"], stored["bytes"], "{stored}");
    assert_eq!(bytes(&dr["stored"]), bytes(&stored), "{dr}");
    assert!(bytes(&nas["stored"]) < bytes(&stored), "{nas}");
    let out = run_bkp(&["--config", cfg, "status"], &site.env);
    assert!(text(&out).contains("stored in "), "{}", text(&out));
    let later = time::OffsetDateTime::now_utc() + time::Duration::days(2);
    let later = later.format(&time::format_description::well_known::Rfc3339);
    let (out, copies) = status(Some(later.unwrap()));
    assert_exit(&out, 11);
    assert_eq!(row(&copies, "nas")["breached"], true, "{copies:?}");
    assert_eq!(row(&copies, "dr")["breached"], false, "{copies:?}");
    assert!(text(&out).contains("bkp copy --to nas"), "{}", text(&out));

    // A chunk lost from the copy: verify of the copy names it (exit 5), and
    // the next copy run puts it back.
    let chunks = region2.rclone(&[
        "lsf",
        "-R",
        "--files-only",
        &format!("s3:{b2}/team/bkp/tigerbeetle/chunks"),
    ]);
    let chunk = String::from_utf8_lossy(&chunks.stdout)
        .lines()
        .next()
        .expect("the copy holds chunks")
        .to_string();
    let key = format!("tigerbeetle/chunks/{chunk}");
    let gone = region2.rclone(&["deletefile", &format!("s3:{b2}/team/bkp/{key}")]);
    assert!(gone.status.success(), "{}", text(&gone));
    let out = site.bkp(&["verify", "--store", "dr"]);
    assert_exit(&out, 5);
    assert!(text(&out).contains(&key), "{}", text(&out));
    let repaired = site.copy(&["--to", "dr"], 0);
    assert_eq!(
        n(&repaired["dr"], "objects_repaired"),
        1,
        "{}",
        repaired["dr"]
    );
    assert_eq!(
        n(&repaired["dr"], "objects_copied"),
        1,
        "{}",
        repaired["dr"]
    );
    assert_exit(&site.bkp(&["verify", "--store", "dr"]), 0);

    // The primary refuses bkp's credentials (an account suspended): a restore
    // reads the first copy that answers, and says why.
    let refused: Vec<(String, String)> = site
        .env
        .iter()
        .map(|(k, v)| match k.as_str() {
            "AWS_SECRET_ACCESS_KEY" => (k.clone(), "not-the-secret".to_string()),
            _ => (k.clone(), v.clone()),
        })
        .collect();
    site.restores_from_copy("dr", "restored-while-refused", &refused, &data);

    // The primary region is gone: the copy restores and drills on its own.
    primary.stop();
    assert_exit(&site.bkp(&["list"]), 6);
    let out = site.restores_from_store("latest", "dr", "restored", &data);
    assert!(text(&out).contains(&second), "{}", text(&out));
    // Without --store, a restore passes over the primary that does not
    // answer, and says which copy it reads.
    site.restores_from_copy("dr", "restored-by-fallback", &site.env, &data);
    let out = site.bkp(&["--json", "verify", "--drill", "--store", "dr"]);
    assert_exit(&out, 0);
    let report = json(&out);
    assert!(
        report["copy_lacks"]["error"].is_string(),
        "{}",
        report["copy_lacks"]
    );
    assert_eq!(report["drills"].as_array().unwrap().len(), 1, "{report}");
    let out = site.bkp(&["status", "--store", "nas"]);
    assert!(text(&out).contains(&first[..8]), "{}", text(&out));
}

#[test]
fn a_copy_that_lies_is_caught_and_damage_on_the_primary_is_not_copied() {
    let tmp = tempfile::tempdir().unwrap();
    let data = formatted_data_file(tmp.path());
    let site = Site::local_with_copy(&data);
    let out = site.bkp(&["--json", "snapshot"]);
    assert_exit(&out, 0);
    let m = json(&out)["manifest"].clone();
    let object = m["objects"][0]["key"].as_str().unwrap().to_string();
    site.copy(&[], 0);
    let manifest = format!("manifests/tigerbeetle/{}.json", m["id"].as_str().unwrap());
    assert_eq!(
        fs::read(site.path("copy").join(&manifest)).unwrap(),
        fs::read(site.path("store").join(&manifest)).unwrap(),
        "the manifest is copied byte for byte"
    );

    // One byte changed in the copy, size kept: the restore from it refuses.
    let planted = site.path("copy").join(&object);
    let mut bytes = fs::read(&planted).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x55;
    fs::write(&planted, &bytes).unwrap();
    let target = site.path("from-copy");
    let out = site.bkp(&[
        "restore",
        "latest",
        "--store",
        "c",
        "--target",
        target.to_str().unwrap(),
    ]);
    assert_exit(&out, 5);
    let out = site.bkp(&[
        "restore",
        "latest",
        "--target",
        site.path("from-primary").to_str().unwrap(),
    ]);
    assert_exit(&out, 0);
    // bkp copy replaces nothing (create-only): the damage stays for verify.
    let again = site.copy(&[], 0);
    assert_eq!(n(&again["c"], "objects_copied"), 0);
    assert_exit(&site.bkp(&["verify", "--store", "c"]), 5);

    // Damage on the primary: that backup is not copied, and is named.
    let out = site.bkp(&["--json", "snapshot"]);
    assert_exit(&out, 0);
    let m2 = json(&out)["manifest"].clone();
    let object2 = site
        .path("store")
        .join(m2["objects"][0]["key"].as_str().unwrap());
    let mut bytes = fs::read(&object2).unwrap();
    bytes[10] ^= 1;
    fs::write(&object2, &bytes).unwrap();
    let out = site.bkp(&["--json", "copy"]);
    assert_exit(&out, 5);
    let o = &json(&out)["copies"][0]["outcome"];
    assert!(o["backups_copied"].as_array().unwrap().is_empty(), "{o}");
    let why = o["not_copied"][0]["why"].as_str().unwrap();
    assert!(why.contains("SHA-256"), "{why}");
    let id2 = m2["id"].as_str().unwrap();
    assert!(!site
        .path("copy")
        .join(format!("manifests/tigerbeetle/{id2}.json"))
        .exists());
    assert!(
        !site
            .path("copy")
            .join(m2["objects"][0]["key"].as_str().unwrap())
            .exists(),
        "an object that does not match its manifest is not left in the copy"
    );

    // --store is for the commands that read; names are checked.
    assert_exit(&site.bkp(&["snapshot", "--store", "c"]), 3);
    let out = site.bkp(&["list", "--store", "elsewhere"]);
    assert_exit(&out, 3);
    assert!(text(&out).contains("primary, c"), "{}", text(&out));
    assert_exit(&site.bkp(&["list", "--store", "primary"]), 0);
}

#[test]
fn a_copy_of_another_store_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let data = formatted_data_file(tmp.path());
    let site = Site::local_with_copy(&data);
    assert_exit(&site.bkp(&["init"]), 0);
    // The copy's directory is another store, with its own marker.
    let other = Site::new(
        &data,
        "type = \"local\"\npath = \"../copy\"\n",
        "",
        ARCHIVE,
        vec![],
    );
    fs::create_dir_all(site.path("copy")).unwrap();
    let other_cfg = other.config.clone();
    fs::write(
        &other_cfg,
        fs::read_to_string(&other_cfg)
            .unwrap()
            .replace("../copy", site.path("copy").to_str().unwrap()),
    )
    .unwrap();
    assert_exit(&other.bkp(&["init"]), 0);
    assert_exit(&site.bkp(&["snapshot"]), 0);
    let out = site.bkp(&["copy"]);
    assert_exit(&out, 3);
    assert!(text(&out).contains("not the primary's"), "{}", text(&out));
    assert!(
        !site.path("copy").join("manifests").exists(),
        "nothing is copied into another store"
    );
}

/// A `bkp copy` killed while it writes an object leaves nothing the copy
/// lists (the manifest is written last), and the next run finishes the
/// copy: the backup then restores from it exactly and `verify --store`
/// finds nothing missing.
#[test]
fn a_copy_killed_mid_object_is_finished_by_the_next_run() {
    use std::os::unix::process::ExitStatusExt;
    let tmp = tempfile::tempdir().unwrap();
    let data = formatted_data_file(tmp.path());
    let site = Site::local_with_copy(&data);
    let out = site.bkp(&["--json", "snapshot"]);
    assert_exit(&out, 0);
    let id = json(&out)["manifest"]["id"].as_str().unwrap().to_string();

    let cfg = site.config.to_str().unwrap();
    let env = vec![("BKP_FAILPOINT".to_string(), "store-write".to_string())];
    let out = run_bkp(&["--config", cfg, "copy"], &env);
    assert_eq!(out.status.signal(), Some(9), "not killed: {}", text(&out));
    let listed = |site: &Site| {
        let out = site.bkp(&["--json", "list", "--store", "c"]);
        json(&out)["backups"]
            .as_array()
            .map(|b| {
                b.iter()
                    .map(|m| m["id"].as_str().unwrap().to_string())
                    .collect::<Vec<_>>()
            })
            .unwrap_or_default()
    };
    assert!(listed(&site).is_empty(), "a half-copied backup is listed");

    let done = site.copy(&[], 0);
    assert!(done.contains_key("c"), "{done:?}");
    assert_eq!(listed(&site), vec![id.clone()]);
    assert_exit(&site.bkp(&["verify", "--store", "c"]), 0);
    site.restores_from_store(&id, "c", "restored", &data);
}

/// A copy with `in_backup_runs` gets each backup from the run that stores it
/// (the default chunked format: its chunk list and chunks too), restorable
/// from the copy at once, with nothing left for `bkp copy`. A copy that
/// cannot be written is a warning: the backup is stored on the primary.
#[test]
fn a_copy_written_by_the_backup_run_restores_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let data = formatted_data_file(dir.path());
    let copies =
        "[[copies]]\nname = \"c\"\ntype = \"local\"\npath = \"copy\"\nin_backup_runs = true\n";
    let site = Site::new(
        &data,
        "type = \"local\"\npath = \"store\"\n",
        copies,
        "",
        vec![],
    );
    for _ in 0..2 {
        let out = site.bkp(&["--json", "snapshot"]);
        assert_exit(&out, 0);
        let id = json(&out)["manifest"]["id"].as_str().unwrap().to_string();
        assert!(site
            .path(&format!("copy/manifests/tigerbeetle/{id}.json"))
            .exists());
        assert!(site
            .path(&format!("copy/heads/tigerbeetle/{id}.json"))
            .exists());
    }
    site.restores_from_store("latest", "c", "restored", &data);
    let outcome = site.copy(&["--dry-run"], 0);
    assert_eq!(
        outcome["c"]["backups_copied"].as_array().map(Vec::len),
        Some(0),
        "{outcome:?}"
    );
    assert_eq!(n(&outcome["c"], "objects_copied"), 0, "{outcome:?}");

    // The copy's place taken by a file: the run warns and still succeeds.
    fs::remove_dir_all(site.path("copy")).unwrap();
    fs::write(site.path("copy"), b"not a store").unwrap();
    let out = site.bkp(&["snapshot"]);
    assert_exit(&out, 0);
    assert!(text(&out).contains("not in copy c"), "{}", text(&out));
}

/// `wal push` writes each WAL file, and the head it records, into every copy
/// with `in_backup_runs` (an S3 copy in a second region here), so that `wal
/// fetch --store` reads it there once the primary is gone. A copy that
/// accepts connections and never answers holds the push up for its
/// `wal_push_timeout` only (PostgreSQL waits for the push) and is named; a
/// copy without `in_backup_runs` gets nothing until `bkp copy`.
#[test]
fn wal_push_reaches_every_copy_and_a_copy_that_hangs_is_left_to_bkp_copy() {
    let tmp = tempfile::tempdir().unwrap();
    let data = formatted_data_file(tmp.path());
    let region2 = S3Server::start();
    let dr = region2.new_bucket("dr");
    // Accepts every connection, answers none.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let silent_at = silent.local_addr().unwrap();
    std::thread::spawn(move || {
        let held: Vec<_> = silent.incoming().collect();
        drop(held);
    });
    let copies = format!(
        "[[copies]]\nname = \"dr\"\n{}access_key_env = \"DR_KEY\"\nsecret_key_env = \"DR_SECRET\"\nin_backup_runs = true\n\
         [[copies]]\nname = \"slow\"\ntype = \"s3\"\nbucket = \"slow\"\nendpoint = \"http://{silent_at}\"\nregion = \"us-east-1\"\naccess_key_env = \"DR_KEY\"\nsecret_key_env = \"DR_SECRET\"\nin_backup_runs = true\nwal_push_timeout = \"2s\"\n\
         [[copies]]\nname = \"nas\"\ntype = \"local\"\npath = \"nas\"\n",
        s3_store(&region2, &dr)
    );
    let env = vec![
        ("DR_KEY".to_string(), region2.access_key.clone()),
        ("DR_SECRET".to_string(), region2.secret_key.clone()),
    ];
    let site = Site::new(
        &data,
        "type = \"local\"\npath = \"store\"\n",
        &copies,
        "",
        env,
    );
    assert_exit(&site.bkp(&["init"]), 0);
    let pgdata = common::postgres::fake_pgdata(&site.path("pg"), 7);
    let pg = pgdata.to_str().unwrap();
    // Segment 0x40 is one whose push records a head.
    let name = "000000010000000000000040";
    let content = common::pattern(1 << 20, 3);
    fs::write(pgdata.join("pg_wal").join(name), &content).unwrap();
    let at = format!("pg_wal/{name}");
    let out = site.bkp(&["wal", "push", &at, "--pgdata", pg]);
    assert_exit(&out, 0);
    assert!(
        text(&out).contains(&format!(
            "{name} is archived on the primary, but copy slow did not take it within its wal_push_timeout (2s)"
        )),
        "{}",
        text(&out)
    );
    assert!(!text(&out).contains("copy dr"), "{}", text(&out));
    assert!(!site.path("nas/wal").exists(), "nas is not written by runs");
    let in_dr = region2.rclone(&["lsf", "-R", &format!("s3:{dr}/team/bkp")]);
    let in_dr = String::from_utf8_lossy(&in_dr.stdout).to_string();
    assert!(
        in_dr.contains(&format!("wal/7/{name}.")),
        "the segment: {in_dr}"
    );
    assert!(
        in_dr.contains(&format!("heads/wal/7/{name}.json")),
        "its head: {in_dr}"
    );
    assert!(
        text(&out).contains("pushes pass it over for the next"),
        "{}",
        text(&out)
    );
    // A second push of the same file (PostgreSQL retrying) is a success and
    // writes nothing again; the silent copy is passed over, not waited for.
    let out = site.bkp(&["wal", "push", &at, "--pgdata", pg]);
    assert_exit(&out, 0);
    assert!(!text(&out).contains("copy slow"), "{}", text(&out));
    let out = site.bkp(&["-v", "wal", "push", &at, "--pgdata", pg]);
    assert_exit(&out, 0);
    assert!(
        text(&out).contains("copy slow: passed over until"),
        "{}",
        text(&out)
    );

    // The primary is gone: recovery reads the copy.
    fs::rename(site.path("store"), site.path("store.lost")).unwrap();
    let out = site.bkp(&[
        "wal", "fetch", name, "restored", "--pgdata", pg, "--store", "dr",
    ]);
    assert_exit(&out, 0);
    assert_eq!(fs::read(pgdata.join("restored")).unwrap(), content);
    // The head reached the copy with its segment: a segment before it that
    // the copy lacks is a gap (recovery stops, exit above 125), not the
    // archive's normal end (exit 9).
    let out = site.bkp(&[
        "wal",
        "fetch",
        "00000001000000000000003F",
        "restored2",
        "--pgdata",
        pg,
        "--store",
        "dr",
    ]);
    assert!(out.status.code().is_some_and(|c| c > 125), "{}", text(&out));
    // `bkp copy` brings the copy that runs skip.
    fs::rename(site.path("store.lost"), site.path("store")).unwrap();
    let done = site.copy(&["--to", "nas"], 0);
    assert_eq!(n(&done["nas"], "objects_copied"), 1, "{done:?}");
    assert_exit(
        &site.bkp(&[
            "wal",
            "fetch",
            name,
            "restored3",
            "--pgdata",
            pg,
            "--store",
            "nas",
        ]),
        0,
    );
}

/// Each copy keeps by its own retention: `bkp copy` leaves out what a
/// copy's policy would delete (so that its cleanup does not delete what the
/// next copy brings back), `cleanup --store NAME` applies that policy there
/// and nowhere else, takes nothing back from the ledger (the copy's backups
/// were recorded as the primary's), and `status` raises no alarm for what a
/// copy leaves out on purpose.
#[test]
fn each_copy_keeps_by_its_own_retention_and_cleanup_runs_per_store() {
    let dir = tempfile::tempdir().unwrap();
    let data = formatted_data_file(dir.path());
    let extra = format!(
        "[ledger]\naddresses = \"{}\"\nledger = 12\ntimeout = \"5s\"\n\
         [retention.snapshot]\npreset = \"none\"\nkeep_last = 2\n\
         [[copies]]\nname = \"long\"\ntype = \"local\"\npath = \"long\"\n\
         [copies.retention.snapshot]\npreset = \"none\"\nkeep_last = 3\n\
         [[copies]]\nname = \"short\"\ntype = \"local\"\npath = \"short\"\n\
         [copies.retention.snapshot]\npreset = \"none\"\nkeep_last = 1\n",
        common::shared_ledger().address()
    );
    let metrics = tempfile::tempdir().unwrap();
    let env = vec![(
        "BKP_METRICS_DIR".to_string(),
        metrics.path().display().to_string(),
    )];
    let site = Site::new(
        &data,
        "type = \"local\"\npath = \"store\"\n",
        &extra,
        ARCHIVE,
        env,
    );
    let mut ids = Vec::new();
    let snapshot = |ids: &mut Vec<String>| {
        let out = site.bkp(&["--json", "snapshot"]);
        assert_exit(&out, 0);
        ids.push(json(&out)["manifest"]["id"].as_str().unwrap().to_string());
    };
    for _ in 0..4 {
        snapshot(&mut ids);
    }
    let held = |store: &str| -> Vec<String> {
        let mut found: Vec<String> =
            fs::read_dir(site.path(&format!("{store}/manifests/tigerbeetle")))
                .map(|d| {
                    d.flatten()
                        .map(|e| {
                            e.file_name()
                                .to_string_lossy()
                                .trim_end_matches(".json")
                                .to_string()
                        })
                        .collect()
                })
                .unwrap_or_default();
        found.sort();
        found
    };
    let done = site.copy(&[], 0);
    assert_eq!(n(&done["long"], "backups_left_out"), 1, "{done:?}");
    assert_eq!(n(&done["short"], "backups_left_out"), 3, "{done:?}");
    assert_eq!(held("long"), ids[1..4].to_vec());
    assert_eq!(held("short"), ids[3..4].to_vec());
    // Each copy has its metrics.
    let prom = fs::read_to_string(metrics.path().join("bkp_copy_long.prom")).unwrap();
    for line in [
        "bkp_copy_last_run_success{copy=\"long\"} 1\n",
        "bkp_copy_last_run_backups{copy=\"long\"} 3\n",
        "bkp_copy_not_copied{copy=\"long\"} 0\n",
    ] {
        assert!(prom.contains(line), "{prom}");
    }
    assert!(metrics.path().join("bkp_copy_short.prom").exists());

    // The primary's cleanup: its policy, its store.
    assert_exit(&site.bkp(&["cleanup"]), 0);
    assert_eq!(held("store"), ids[2..4].to_vec());
    assert_eq!(held("long"), ids[1..4].to_vec(), "copies are not touched");
    snapshot(&mut ids);
    site.copy(&[], 0);
    assert_eq!(held("long"), ids[1..5].to_vec());
    // Each copy's cleanup: its own policy, in that copy only.
    let out = site.bkp(&["cleanup", "--store", "long", "--dry-run"]);
    assert_exit(&out, 0);
    assert_eq!(held("long"), ids[1..5].to_vec(), "{}", text(&out));
    for name in ["long", "short"] {
        let out = site.bkp(&["cleanup", "--store", name]);
        assert_exit(&out, 0);
    }
    assert_eq!(held("long"), ids[2..5].to_vec());
    assert_eq!(held("short"), ids[4..5].to_vec());
    assert_eq!(held("store"), ids[2..5].to_vec());
    let objects_of = |store: &str, id: &str| {
        walk(&site.path(&format!("{store}/tigerbeetle")))
            .iter()
            .filter(|p| p.to_string_lossy().contains(id))
            .count()
    };
    assert_eq!(objects_of("short", &ids[3]), 0, "its objects went with it");
    assert_eq!(objects_of("short", &ids[4]), 1);
    // Nothing to bring back: what the copies deleted stays deleted.
    let again = site.copy(&[], 0);
    for name in ["long", "short"] {
        assert_eq!(n(&again[name], "objects_copied"), 0, "{again:?}");
    }
    assert_eq!(n(&again["short"], "backups_left_out"), 2, "{again:?}");
    // The primary's ledger audit still balances, and no copy lags.
    assert_exit(&site.bkp(&["verify"]), 0);
    let out = site.bkp(&["status"]);
    assert_exit(&out, 0);
    assert!(text(&out).contains("copy short"), "{}", text(&out));
    let out = site.bkp(&["verify", "--store", "short"]);
    assert_exit(&out, 0);
}

#[test]
fn a_copy_on_the_same_service_is_made_inside_it_and_still_checked_on_arrival() {
    let tmp = tempfile::tempdir().unwrap();
    let data = formatted_data_file(tmp.path());
    let s3 = common::shared_s3();
    let (b1, b2) = (s3.new_bucket("ss-primary"), s3.new_bucket("ss-copy"));
    let copies = format!("[[copies]]\nname = \"dr\"\n{}", s3_store(s3, &b2));
    let site = Site::new(&data, &s3_store(s3, &b1), &copies, ARCHIVE, s3.env());

    // Two buckets of one service: every object is copied by CopyObject.
    let out = site.bkp(&["--json", "snapshot"]);
    assert_exit(&out, 0);
    let first = json(&out)["manifest"]["id"].as_str().unwrap().to_string();
    let done = site.copy(&[], 0);
    let o = &done["dr"];
    assert!(n(o, "objects_copied") >= 1, "{o}");
    assert_eq!(
        n(o, "objects_copied_server_side"),
        n(o, "objects_copied"),
        "{o}"
    );
    site.restores_from_store(&first, "dr", "from-copy", &data);

    // An object damaged on the primary (same size): the copy made inside
    // the service is read back, refused, and not left in the copy.
    let out = site.bkp(&["--json", "snapshot"]);
    assert_exit(&out, 0);
    let m2 = json(&out)["manifest"].clone();
    let key = m2["objects"][0]["key"].as_str().unwrap();
    let remote = |b: &str| format!("s3:{b}/team/bkp/{key}");
    let mut bytes = s3.rclone(&["cat", &remote(&b1)]).stdout;
    assert!(!bytes.is_empty());
    bytes[10] ^= 1;
    assert!(s3
        .rclone_stdin(&["rcat", &remote(&b1)], &bytes)
        .status
        .success());
    let out = site.bkp(&["--json", "copy"]);
    assert_exit(&out, 5);
    let o = &json(&out)["copies"][0]["outcome"];
    let why = o["not_copied"][0]["why"].as_str().unwrap();
    assert!(why.contains("SHA-256"), "{why}");
    let listed = s3.rclone(&["lsf", &remote(&b2)]);
    assert!(
        String::from_utf8_lossy(&listed.stdout).trim().is_empty(),
        "the damaged object was left in the copy"
    );
}
