//! `bkp replicate` and its restore against the real SeaweedFS S3: incremental runs
//! copy exactly the new and changed files and record deletions, each run's
//! manifest restores exactly that run's tree, a corrupt Parquet file is reported
//! and skipped with exit 10, and a bucket on the same server as source is copied
//! inside the store.

mod common;

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use common::{assert_exit, run_bkp, shared_s3, unique_name, walk, S3Server};
use serde_json::Value;

/// Writes Parquet files with DuckDB, one `COPY` each from one connection.
struct Maker(duckdb::Connection);

impl Maker {
    fn new() -> Maker {
        Maker(duckdb::Connection::open_in_memory().unwrap())
    }

    /// A small file whose contents depend on `seed`.
    fn small(&self, path: &Path, seed: u64) {
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        self.0
            .execute_batch(&format!(
                "COPY (SELECT {seed} AS seed, i, 'v' || (i * {seed}) AS s FROM range(20) t(i)) TO '{}' (FORMAT parquet)",
                path.display()
            ))
            .unwrap();
    }

    /// A file over the in-memory threshold, so it is streamed.
    fn large(&self, path: &Path, seed: u64) {
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        self.0
            .execute_batch(&format!(
                "COPY (SELECT i, md5((i + {seed})::VARCHAR) AS a, md5((i + 1)::VARCHAR) AS b, md5((i + 2)::VARCHAR) AS c FROM range(150000) t(i)) TO '{}' (FORMAT parquet, COMPRESSION uncompressed)",
                path.display()
            ))
            .unwrap();
        assert!(
            fs::metadata(path).unwrap().len() > 9 << 20,
            "the large file is not large"
        );
    }
}

/// Relative path → SHA-256 of every file under `dir`.
fn tree(dir: &Path) -> BTreeMap<String, String> {
    walk(dir)
        .into_iter()
        .filter(|p| p.is_file())
        .map(|p| {
            let rel = p.strip_prefix(dir).unwrap().to_string_lossy().into_owned();
            let d = bkp::stages::hash::digest_reader(fs::File::open(&p).unwrap()).unwrap();
            (rel, d.sha256)
        })
        .collect()
}

fn config(dir: &Path, s3: &S3Server, bucket: &str, source: &str, extra: &str) -> PathBuf {
    common::write_key(dir.join("key"), [7u8; 32]);
    let cfg = dir.join("bkp.toml");
    fs::write(
        &cfg,
        format!(
            "work_dir = \"work\"\n[store]\ntype = \"s3\"\nbucket = \"{bucket}\"\nprefix = \"bkp\"\nendpoint = \"{}\"\n\
             [encryption]\nkey_file = \"key\"\n[replicate]\nsource = \"{source}\"\n{extra}",
            s3.endpoint
        ),
    )
    .unwrap();
    cfg
}

/// Runs `bkp replicate --json`, expecting `code`, and returns its report.
fn replicate(cfg: &Path, s3: &S3Server, code: i32) -> (Value, String) {
    let out = run_bkp(
        &["--config", cfg.to_str().unwrap(), "--json", "replicate"],
        &s3.env(),
    );
    assert_exit(&out, code);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    (serde_json::from_slice(&out.stdout).unwrap(), stderr)
}

fn restore(
    cfg: &Path,
    s3: &S3Server,
    id: &str,
    target: &Path,
    extra: &[&str],
) -> std::process::Output {
    let args = [
        &[
            "--config",
            cfg.to_str().unwrap(),
            "restore",
            id,
            "--kind",
            "parquet",
            "--target",
        ][..],
        &[target.to_str().unwrap()],
        extra,
    ]
    .concat();
    run_bkp(&args, &s3.env())
}

fn paths(v: &Value) -> Vec<String> {
    let mut p: Vec<String> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["path"].as_str().unwrap().to_string())
        .collect();
    p.sort();
    p
}

#[test]
fn incremental_runs_copy_only_changes_and_each_restores_its_own_tree() {
    let s3 = shared_s3();
    let bucket = s3.new_bucket("repl");
    let dir = tempfile::tempdir().unwrap();
    let cold = dir.path().join("cold");
    let mk = Maker::new();
    let name = |i: u64| format!("day={:02}/part-{i:04}.parquet", i % 10);
    for i in 0..1000 {
        mk.small(&cold.join(name(i)), i + 1);
    }
    fs::write(
        cold.join("README.txt"),
        "not selected by the default include",
    )
    .unwrap();
    let cfg = config(dir.path(), s3, &bucket, "cold", "");

    let tree1 = tree(&cold);
    let (r1, _) = replicate(&cfg, s3, 0);
    assert_eq!(r1["files"], 1000);
    assert_eq!(r1["copied"], 1000);
    assert_eq!(r1["manifest"]["objects"].as_array().unwrap().len(), 1000);
    assert_eq!(r1["manifest"]["kind"], "parquet");
    assert_eq!(r1["manifest"]["scope"], "full");
    assert_eq!(r1["manifest"]["source"]["previous"], Value::Null);
    assert!(r1["manifest"].get("uses").is_none());
    let id1 = r1["manifest"]["id"].as_str().unwrap().to_string();
    let key0 = r1["manifest"]["source"]["set"][0]["object"]
        .as_str()
        .unwrap();
    assert!(
        key0.starts_with("parquet/")
            && key0.contains(&format!("/{id1}/day=00/"))
            && key0.ends_with(".parquet.enc"),
        "{key0}"
    );

    // Change 10 (new contents), add 5, delete 3, and touch one without changing it.
    for i in 0..10 {
        mk.small(&cold.join(name(i * 7)), 5000 + i);
    }
    for i in 1000..1005 {
        mk.small(&cold.join(name(i)), i + 1);
    }
    let deleted: Vec<String> = [100, 200, 300].iter().map(|&i| name(i)).collect();
    for d in &deleted {
        fs::remove_file(cold.join(d)).unwrap();
    }
    let touched = cold.join(name(999));
    let later = std::time::SystemTime::now() + std::time::Duration::from_secs(5);
    fs::File::options()
        .write(true)
        .open(&touched)
        .unwrap()
        .set_modified(later)
        .unwrap();

    let tree2 = tree(&cold);
    let (r2, _) = replicate(&cfg, s3, 0);
    let set2 = &r2["manifest"]["source"];
    assert_eq!(r2["files"], 1002);
    assert_eq!(r2["copied"], 15, "{}", set2["stats"]);
    assert_eq!(set2["stats"]["touched_unchanged"], 1);
    assert_eq!(paths(&set2["deleted"]), deleted);
    assert_eq!(set2["previous"].as_str().unwrap(), id1);
    assert_eq!(r2["manifest"]["objects"].as_array().unwrap().len(), 15);
    // Every unchanged file is named by the first run's object, and listed in `uses`.
    assert_eq!(r2["manifest"]["uses"].as_array().unwrap().len(), 987);
    assert!(r2["manifest"]["uses"]
        .as_array()
        .unwrap()
        .iter()
        .all(|k| k.as_str().unwrap().contains(&id1)));
    let id2 = r2["manifest"]["id"].as_str().unwrap().to_string();

    // Nothing changed: nothing copied, one manifest written.
    let (r3, _) = replicate(&cfg, s3, 0);
    assert_eq!(
        (r3["copied"].as_u64(), r3["stored_bytes"].as_u64()),
        (Some(0), Some(0))
    );
    assert_eq!(
        r3["manifest"]["source"]["deleted"]
            .as_array()
            .unwrap()
            .len(),
        0
    );

    // Each run restores to exactly its own tree.
    let t1 = dir.path().join("r1");
    assert_exit(&restore(&cfg, s3, &id1, &t1, &[]), 0);
    assert_eq!(
        tree(&t1),
        tree1
            .iter()
            .filter(|(k, _)| k.ends_with(".parquet"))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    );
    let t2 = dir.path().join("r2");
    assert_exit(&restore(&cfg, s3, &id2, &t2, &[]), 0);
    let want2: BTreeMap<_, _> = tree2
        .into_iter()
        .filter(|(k, _)| k.ends_with(".parquet"))
        .collect();
    assert_eq!(tree(&t2), want2);
    assert_ne!(tree(&t1), tree(&t2));
    // The modification times are restored too.
    assert_eq!(
        fs::metadata(t2.join(name(999)))
            .unwrap()
            .modified()
            .unwrap(),
        fs::metadata(&touched).unwrap().modified().unwrap()
    );

    // A non-empty target needs --force, and is then replaced by `latest`.
    let refused = restore(&cfg, s3, "latest", &t1, &[]);
    assert_exit(&refused, 8);
    assert_exit(&restore(&cfg, s3, "latest", &t1, &["--force"]), 0);
    assert_eq!(tree(&t1), want2);
}

#[test]
fn a_corrupt_file_is_reported_and_skipped_and_the_rest_replicated() {
    let s3 = shared_s3();
    let bucket = s3.new_bucket("repl-bad");
    let dir = tempfile::tempdir().unwrap();
    let cold = dir.path().join("cold");
    let mk = Maker::new();
    for i in 0..20 {
        mk.small(&cold.join(format!("f{i:02}.parquet")), i + 1);
    }
    mk.large(&cold.join("big/large.parquet"), 0);
    let good = fs::read(cold.join("f05.parquet")).unwrap();
    fs::write(cold.join("f05.parquet"), &good[..good.len() - 10]).unwrap();
    let big = fs::read(cold.join("big/large.parquet")).unwrap();
    fs::write(cold.join("big/cut.parquet"), &big[..big.len() - 4096]).unwrap();
    let cfg = config(dir.path(), s3, &bucket, "cold", "concurrency = 3\n");

    let (r, stderr) = replicate(&cfg, s3, 10);
    assert!(
        stderr.contains("f05.parquet") && stderr.contains("cut.parquet"),
        "{stderr}"
    );
    assert!(stderr.contains("PAR1"), "{stderr}");
    assert_eq!(r["copied"], 20);
    let skipped = paths(&r["manifest"]["source"]["skipped"]);
    assert_eq!(skipped, vec!["big/cut.parquet", "f05.parquet"]);
    let set = paths(&r["manifest"]["source"]["set"]);
    assert!(
        set.contains(&"big/large.parquet".to_string()) && !set.contains(&"f05.parquet".to_string())
    );
    // The manifest was written: the partial run is a restorable backup.
    let id = r["manifest"]["id"].as_str().unwrap().to_string();
    let t = dir.path().join("restored");
    assert_exit(&restore(&cfg, s3, &id, &t, &[]), 0);
    assert_eq!(tree(&t).len(), 20);
    assert_eq!(fs::read(t.join("big/large.parquet")).unwrap(), big);

    // A damaged stored object fails the restore (exit 5) and leaves no target.
    let victim = r["manifest"]["source"]["set"][3]["object"]
        .as_str()
        .unwrap();
    let out = s3.rclone_stdin(&["rcat", &format!("s3:{bucket}/bkp/{victim}")], b"damaged");
    assert!(out.status.success());
    let t2 = dir.path().join("restored-damaged");
    let out = restore(&cfg, s3, &id, &t2, &[]);
    assert_exit(&out, 5);
    assert!(!t2.exists());
    assert!(fs::read_dir(dir.path()).unwrap().all(|e| !e
        .unwrap()
        .file_name()
        .to_string_lossy()
        .contains("bkp-restore")));

    // Once repaired (and the other removed), the next run copies it and succeeds.
    fs::write(cold.join("f05.parquet"), &good).unwrap();
    fs::remove_file(cold.join("big/cut.parquet")).unwrap();
    let (r, _) = replicate(&cfg, s3, 0);
    assert_eq!(r["copied"], 1);
    assert_eq!(r["files"], 21);
}

#[test]
fn a_bucket_on_the_same_server_is_copied_inside_the_store() {
    let s3 = shared_s3();
    let source_bucket = s3.new_bucket("cold");
    let bucket = s3.new_bucket("repl-s3");
    let dir = tempfile::tempdir().unwrap();
    let cold = dir.path().join("cold");
    let mk = Maker::new();
    for i in 0..12 {
        mk.small(&cold.join(format!("t=a/{i:02}.parquet")), i + 1);
    }
    mk.large(&cold.join("t=b/large.parquet"), 0);
    let out = s3.rclone(&[
        "copy",
        cold.to_str().unwrap(),
        &format!("s3:{source_bucket}/tier"),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let source = format!("s3://{source_bucket}/tier");

    // Unencrypted and uncompressed: the large file is copied inside the store (small
    // ones are read once and put, which takes fewer requests).
    let plain = config(
        dir.path(),
        s3,
        &bucket,
        &source,
        &format!("encryption = false\nendpoint = \"{}\"\n", s3.endpoint),
    );
    let (r, _) = replicate(&plain, s3, 0);
    assert_eq!(
        (r["copied"].as_u64(), r["server_side_copies"].as_u64()),
        (Some(13), Some(1))
    );
    let id = r["manifest"]["id"].as_str().unwrap().to_string();
    let t = dir.path().join("restored");
    assert_exit(&restore(&plain, s3, &id, &t, &[]), 0);
    assert_eq!(tree(&t), tree(&cold));

    // Change two objects at the source: only they are copied next time.
    mk.small(&cold.join("t=a/03.parquet"), 999);
    mk.large(&cold.join("t=b/large.parquet"), 7);
    for f in ["t=a/03.parquet", "t=b/large.parquet"] {
        let out = s3.rclone(&[
            "copyto",
            cold.join(f).to_str().unwrap(),
            &format!("s3:{source_bucket}/tier/{f}"),
        ]);
        assert!(out.status.success());
    }
    let (r, _) = replicate(&plain, s3, 0);
    assert_eq!(
        (r["copied"].as_u64(), r["server_side_copies"].as_u64()),
        (Some(2), Some(1))
    );
    let t = dir.path().join("restored-2");
    let id = r["manifest"]["id"].as_str().unwrap().to_string();
    assert_exit(&restore(&plain, s3, &id, &t, &[]), 0);
    assert_eq!(tree(&t), tree(&cold));

    // Encrypted: the bytes are streamed through bkp instead, from the same source.
    let dir2 = tempfile::tempdir().unwrap();
    let enc = config(
        dir2.path(),
        s3,
        &bucket,
        &source,
        &format!("endpoint = \"{}\"\n", s3.endpoint),
    );
    let prefix_free = fs::read_to_string(&enc).unwrap().replace(
        "prefix = \"bkp\"",
        &format!("prefix = \"{}\"", unique_name("enc")),
    );
    fs::write(&enc, prefix_free).unwrap();
    let (r, _) = replicate(&enc, s3, 0);
    assert_eq!(
        (r["copied"].as_u64(), r["server_side_copies"].as_u64()),
        (Some(13), Some(0))
    );
    let id = r["manifest"]["id"].as_str().unwrap().to_string();
    let t = dir2.path().join("restored");
    assert_exit(&restore(&enc, s3, &id, &t, &[]), 0);
    assert_eq!(tree(&t), tree(&cold));
}

/// What keeps a replicated S3 file from being half-new: reads and server-side copies
/// name the ETag that was listed, and the server refuses them once it changed.
#[test]
fn reads_and_copies_are_pinned_to_the_listed_etag() {
    use bkp::store::s3::{S3Settings, S3Store};
    use bkp::store::Store;
    let s3 = shared_s3();
    let bucket = s3.new_bucket("pin");
    let out = s3.rclone_stdin(
        &["rcat", &format!("s3:{bucket}/src/a.parquet")],
        b"version one",
    );
    assert!(out.status.success());
    let store = S3Store::with_credentials(
        S3Settings {
            bucket: bucket.clone(),
            prefix: String::new(),
            region: Some(s3.region.clone()),
            endpoint: Some(s3.endpoint.clone()),
            path_style: true,
            part_size: 5 << 20,
            concurrency: 2,
            object_lock: None,
            sse: None,
            storage_class: None,
            credentials_env: None,
            ca_file: None,
        },
        &s3.access_key,
        &s3.secret_key,
    )
    .unwrap();
    let listed = store.list_with_etags("src/").unwrap();
    assert_eq!(listed.len(), 1);
    let etag = listed[0].etag.clone().expect("a listing gives ETags");
    assert_eq!(
        store
            .head_with_etag("src/a.parquet")
            .unwrap()
            .unwrap()
            .etag
            .as_deref(),
        Some(etag.as_str())
    );

    let mut tail = String::new();
    let mut r = store
        .open_if_match("src/a.parquet", Some(&etag), Some("bytes=-3"))
        .unwrap()
        .unwrap();
    std::io::Read::read_to_string(&mut r, &mut tail).unwrap();
    assert_eq!(tail, "one");
    let stale = "\"00000000000000000000000000000000\"";
    assert!(store
        .open_if_match("src/a.parquet", Some(stale), None)
        .unwrap()
        .is_none());

    let meta = vec![("backup-id".to_string(), "x".to_string())];
    assert!(store
        .copy_from(&bucket, "src/a.parquet", stale, 11, "dst/stale", &meta)
        .unwrap()
        .is_none());
    assert!(store.head("dst/stale").unwrap().is_none());
    let copied = store
        .copy_from(&bucket, "src/a.parquet", &etag, 11, "dst/a.parquet", &meta)
        .unwrap();
    assert_eq!(copied.map(|c| c.size), Some(11));
    assert_eq!(store.get("dst/a.parquet").unwrap(), b"version one");
    // Create-only like every write.
    assert!(store
        .copy_from(&bucket, "src/a.parquet", &etag, 11, "dst/a.parquet", &meta)
        .is_err());

    // Above 5 GiB the copy is made of UploadPartCopy parts; here with 5 MiB parts.
    let big: Vec<u8> = (0..11u32 << 20)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    let out = s3.rclone_stdin(&["rcat", &format!("s3:{bucket}/src/big.parquet")], &big);
    assert!(out.status.success());
    let etag = store
        .head_with_etag("src/big.parquet")
        .unwrap()
        .unwrap()
        .etag
        .unwrap();
    let size = big.len() as u64;
    assert!(store
        .copy_in_parts(
            &bucket,
            "src/big.parquet",
            stale,
            size,
            "dst/big-stale",
            &meta
        )
        .unwrap()
        .is_none());
    assert!(store.head("dst/big-stale").unwrap().is_none());
    let out = s3.rclone(&["backend", "list-multipart-uploads", &format!("s3:{bucket}")]);
    if out.status.success() {
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            !text.contains("big-stale"),
            "an upload was left behind: {text}"
        );
    }
    let copied = store
        .copy_in_parts(
            &bucket,
            "src/big.parquet",
            &etag,
            size,
            "dst/big.parquet",
            &meta,
        )
        .unwrap();
    assert_eq!(copied.map(|c| c.size), Some(size));
    assert!(
        store.get("dst/big.parquet").unwrap() == big,
        "the copy differs"
    );
}

/// A file rewritten all the time is read twice, reported, and never stored; the
/// files around it are replicated. The run stops itself each time it has streamed
/// a large file (`BKP_PAUSEPOINT`), before it checks the file is the version it
/// listed, and the test gives the busy file a new modification time there, as a
/// writer would: every read of it meets a change, however fast the machine.
#[test]
fn a_file_that_keeps_changing_is_reported_not_stored_half_new() {
    let s3 = shared_s3();
    let bucket = s3.new_bucket("repl-busy");
    let dir = tempfile::tempdir().unwrap();
    let cold = dir.path().join("cold");
    let mk = Maker::new();
    mk.small(&cold.join("calm.parquet"), 1);
    mk.large(&cold.join("busy.parquet"), 3);
    let cfg = config(dir.path(), s3, &bucket, "cold", "");

    let busy = fs::File::options()
        .write(true)
        .open(cold.join("busy.parquet"))
        .unwrap();
    let listed = busy.metadata().unwrap().modified().unwrap();
    let paused = [("BKP_PAUSEPOINT".to_string(), "replicate-read".to_string())];
    let mut child = common::bkp_command(&[s3.env(), paused.to_vec()].concat())
        .args(["--config", cfg.to_str().unwrap(), "--json", "replicate"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut touched = 0;
    while child.try_wait().unwrap().is_none() {
        if common::stopped(child.id()) {
            touched += 1;
            busy.set_modified(listed + std::time::Duration::from_secs(touched))
                .unwrap();
            common::resume(child.id());
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    let out = child.wait_with_output().unwrap();
    assert_exit(&out, 10);
    // Read twice, each time held and changed (calm.parquet is read in memory).
    assert_eq!(touched, 2, "held {touched} times");
    let r: Value = serde_json::from_slice(&out.stdout).unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);

    assert!(
        stderr.contains("busy.parquet") && stderr.contains("changed while being read"),
        "{stderr}"
    );
    assert_eq!(paths(&r["manifest"]["source"]["set"]), vec!["calm.parquet"]);
    assert_eq!(
        paths(&r["manifest"]["source"]["skipped"]),
        vec!["busy.parquet"]
    );
    // Nothing of it reached the store, not even an object without a manifest.
    let out = s3.rclone(&["lsf", "-R", &format!("s3:{bucket}/bkp/parquet")]);
    let stored = String::from_utf8_lossy(&out.stdout);
    assert!(
        stored.contains("calm.parquet") && !stored.contains("busy"),
        "{stored}"
    );

    // Once it is quiet, the next run stores it.
    let (r, _) = replicate(&cfg, s3, 0);
    assert_eq!(r["copied"], 1);
    assert_eq!(
        paths(&r["manifest"]["source"]["set"]),
        vec!["busy.parquet", "calm.parquet"]
    );
}

/// A source that holds the store (or lies inside it) would copy the backups
/// themselves: refused as a config error before anything is read.
#[test]
fn a_source_overlapping_the_store_is_refused() {
    let s3 = shared_s3();
    let bucket = s3.new_bucket("repl-overlap");
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(
        dir.path(),
        s3,
        &bucket,
        &format!("s3://{bucket}"),
        &format!("endpoint = \"{}\"\n", s3.endpoint),
    );
    let out = run_bkp(&["--config", cfg.to_str().unwrap(), "replicate"], &s3.env());
    assert_exit(&out, 3);
    assert!(String::from_utf8_lossy(&out.stderr).contains("overlap"));
    let local = dir.path().join("local.toml");
    fs::write(&local, "work_dir = \"work\"\n[store]\ntype = \"local\"\npath = \"cold/store\"\n[encryption]\nenabled = false\n[replicate]\nsource = \"cold\"\nencryption = false\n").unwrap();
    fs::create_dir_all(dir.path().join("cold")).unwrap();
    let out = run_bkp(&["--config", local.to_str().unwrap(), "replicate"], &[]);
    assert_exit(&out, 3);
    assert!(!dir.path().join("cold/store/manifests").exists());
}

/// Each run is a code-12 transfer whose amount is the bytes it stored.
#[test]
fn each_run_records_the_bytes_it_copied_in_the_ledger() {
    use bkp::ledger;
    let tb = common::shared_ledger();
    let s3 = shared_s3();
    let bucket = s3.new_bucket("repl-ledger");
    let dir = tempfile::tempdir().unwrap();
    let cold = dir.path().join("cold");
    let mk = Maker::new();
    for i in 0..6 {
        mk.small(&cold.join(format!("{i}.parquet")), i + 1);
    }
    let cfg = config(
        dir.path(),
        s3,
        &bucket,
        "cold",
        &format!(
            "retention_days = 30\n[ledger]\naddresses = \"{}\"\nledger = 1205\n",
            tb.address()
        ),
    );
    let lc = ledger::LedgerConfig {
        cluster_id: 0,
        addresses: tb.address(),
        ledger: 1205,
        timeout: std::time::Duration::from_secs(10),
        spool_dir: dir.path().join("unused-spool"),
    };
    let transfer = |r: &Value| {
        let id = r["manifest"]["id"].as_str().unwrap().replace('-', "");
        ledger::lookup(&lc, u128::from_str_radix(&id, 16).unwrap())
            .unwrap()
            .expect("the run's transfer exists")
    };

    let (r1, _) = replicate(&cfg, s3, 0);
    mk.small(&cold.join("2.parquet"), 99);
    let (r2, _) = replicate(&cfg, s3, 0);
    let sizes = |r: &Value| -> u128 {
        r["manifest"]["objects"]
            .as_array()
            .unwrap()
            .iter()
            .map(|o| o["size"].as_u64().unwrap() as u128)
            .sum()
    };
    let (t1, t2) = (transfer(&r1), transfer(&r2));
    assert_eq!(
        (r1["copied"].as_u64(), r2["copied"].as_u64()),
        (Some(6), Some(1))
    );
    assert_eq!(t1.amount, sizes(&r1));
    assert_eq!(t2.amount, sizes(&r2));
    assert!(t2.amount > 0 && t2.amount < t1.amount);
    assert_eq!(t1.code, 12);
    assert_eq!(t1.operation, Some(ledger::Operation::Replicate));
    assert_eq!(
        t1.debit_account_id,
        ledger::source_account_id(ledger::BackupType::Parquet)
    );
    let f = t1.fields.expect("bkp fields");
    assert_eq!(f.backup_type, ledger::BackupType::Parquet);
    assert_eq!(f.scope, ledger::Scope::Full);
    assert_eq!(f.encryption, ledger::EncryptionCode::Aes256Gcm);
    assert_eq!(f.compression, ledger::CompressionCode::None);
    assert_eq!(f.retention_days, 30);
}

#[test]
fn skipped_files_keep_exit_10_when_the_ledger_record_fails_too() {
    let s3 = shared_s3();
    let bucket = s3.new_bucket("repl-ledger");
    let dir = tempfile::tempdir().unwrap();
    let cold = dir.path().join("cold");
    let mk = Maker::new();
    mk.small(&cold.join("good.parquet"), 1);
    fs::write(cold.join("bad.parquet"), b"not parquet at all").unwrap();
    // A ledger whose spool holds something that is no ledger record: recording
    // the run fails (not merely spooled).
    let cfg = config(
        dir.path(),
        s3,
        &bucket,
        "cold",
        "[ledger]\naddresses = \"127.0.0.1:9\"\ntimeout = \"1s\"\n",
    );
    fs::create_dir_all(dir.path().join("work/ledger-spool")).unwrap();
    fs::write(dir.path().join("work/ledger-spool/junk.json"), b"{").unwrap();

    // The backup is reported (its JSON on stdout), and the run fails with the
    // most specific code among its problems: the skipped file (10), not the
    // ledger's plain failure (1).
    let (r, stderr) = replicate(&cfg, s3, 10);
    assert_eq!(
        paths(&r["manifest"]["source"]["skipped"]),
        vec!["bad.parquet"]
    );
    assert!(stderr.contains("bad.parquet"), "{stderr}");
    assert!(
        stderr.contains("recording it in the ledger failed"),
        "{stderr}"
    );
}

/// Runs `bkp replicate --json` in a process that file modes bind: as root,
/// without the capabilities that let root read any directory (dropped with
/// `setpriv`), so a mode-000 directory refuses it as it refuses anyone else.
fn replicate_bound_by_modes(
    cfg: &Path,
    s3: &S3Server,
    locked: &Path,
    code: i32,
    extra: &[&str],
) -> (Value, String) {
    let mut args = vec!["--config", cfg.to_str().unwrap(), "--json", "replicate"];
    args.extend_from_slice(extra);
    let plain = common::bkp_command(&s3.env());
    let mut cmd = if fs::read_dir(locked).is_ok() {
        let caps = "-dac_override,-dac_read_search";
        let mut c = std::process::Command::new("setpriv");
        c.arg(format!("--inh-caps={caps}"))
            .arg(format!("--bounding-set={caps}"))
            .arg("--")
            .arg(plain.get_program());
        for (k, v) in plain.get_envs() {
            match v {
                Some(v) => c.env(k, v),
                None => c.env_remove(k),
            };
        }
        c
    } else {
        plain
    };
    let out = common::run(cmd.args(args), None, common::BKP_TIMEOUT);
    assert_exit(&out, code);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    (serde_json::from_slice(&out.stdout).unwrap(), stderr)
}

#[test]
fn an_unreadable_directory_is_reported_and_skipped_like_a_file() {
    use std::os::unix::fs::PermissionsExt;
    let s3 = shared_s3();
    let bucket = s3.new_bucket("repl-dir");
    let dir = tempfile::tempdir().unwrap();
    let cold = dir.path().join("cold");
    let mk = Maker::new();
    mk.small(&cold.join("a.parquet"), 1);
    mk.small(&cold.join("locked/b.parquet"), 2);
    mk.small(&cold.join("z/c.parquet"), 3);
    let cfg = config(dir.path(), s3, &bucket, "cold", "");
    let (r, _) = replicate(&cfg, s3, 0);
    assert_eq!(r["files"], 3);

    let locked = cold.join("locked");
    mk.small(&cold.join("z/d.parquet"), 4);
    fs::set_permissions(&locked, fs::Permissions::from_mode(0o000)).unwrap();
    // The dry run says what the run will do: the file below the unreadable
    // directory is kept, not gone.
    let plan = replicate_bound_by_modes(&cfg, s3, &locked, 0, &["--dry-run"]).0;
    let run = replicate_bound_by_modes(&cfg, s3, &locked, 10, &[]);
    fs::set_permissions(&locked, fs::Permissions::from_mode(0o755)).unwrap();
    let (r, stderr) = run;
    assert_eq!(plan["gone"], serde_json::json!([]), "{plan:#}");
    assert_eq!(
        plan["kept_unlisted"],
        serde_json::json!(["locked/b.parquet"]),
        "{plan:#}"
    );
    assert!(stderr.contains("locked"), "{stderr}");
    // The directory is skipped like a file; the file below it is not taken as
    // deleted but keeps its last good copy; the rest is replicated.
    let skipped = paths(&r["manifest"]["source"]["skipped"]);
    assert_eq!(skipped, vec!["locked", "locked/b.parquet"]);
    assert!(r["manifest"]["source"]["skipped"][0]["reason"]
        .as_str()
        .unwrap()
        .contains("cannot be read"));
    assert_eq!(
        paths(&r["manifest"]["source"]["deleted"]),
        Vec::<String>::new()
    );
    let set = paths(&r["manifest"]["source"]["set"]);
    assert_eq!(set, vec!["a.parquet", "z/c.parquet", "z/d.parquet"]);
    assert_eq!(r["copied"], 1);
    let id = r["manifest"]["id"].as_str().unwrap().to_string();
    let t = dir.path().join("restored");
    assert_exit(&restore(&cfg, s3, &id, &t, &[]), 0);
    assert_eq!(tree(&t).len(), 3);

    // Readable again: the next run is whole and finds the file unchanged.
    let (r, _) = replicate(&cfg, s3, 0);
    assert_eq!(r["files"], 4);
    assert_eq!(r["copied"], 0);
}

/// With a local store, object keys become paths: a long source path must not
/// make a write's temporary name too long, and a file whose object name would
/// exceed the 255 bytes a file name may have is skipped and reported alone.
#[test]
fn long_names_with_a_local_store_are_stored_or_skipped_one_by_one() {
    let dir = tempfile::tempdir().unwrap();
    let cold = dir.path().join("cold");
    let mk = Maker::new();
    let deep = format!("{}/{}.parquet", "d".repeat(200), "y".repeat(200));
    // 255 bytes, the longest file name; its object adds ".enc" at least.
    let too_long = format!("{}.parquet", "x".repeat(247));
    mk.small(&cold.join("a.parquet"), 1);
    mk.small(&cold.join(&deep), 2);
    mk.small(&cold.join(&too_long), 3);
    common::write_key(dir.path().join("key"), [7u8; 32]);
    let cfg = dir.path().join("bkp.toml");
    fs::write(
        &cfg,
        "work_dir = \"work\"\n[store]\ntype = \"local\"\npath = \"store\"\n\
         [encryption]\nkey_file = \"key\"\n[replicate]\nsource = \"cold\"\n",
    )
    .unwrap();
    let cfg_arg = cfg.to_str().unwrap();

    let out = run_bkp(&["--config", cfg_arg, "--json", "replicate"], &[]);
    assert_exit(&out, 10);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&too_long) && stderr.contains("too long"),
        "{stderr}"
    );
    let r: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(paths(&r["manifest"]["source"]["skipped"]), vec![too_long]);
    let set = paths(&r["manifest"]["source"]["set"]);
    assert_eq!(set, vec!["a.parquet".to_string(), deep.clone()]);
    let partial = dir.path().join("store/.bkp-partial");
    assert_eq!(fs::read_dir(&partial).unwrap().count(), 0);

    let id = r["manifest"]["id"].as_str().unwrap();
    let t = dir.path().join("restored");
    let target = t.to_str().unwrap();
    let out = run_bkp(
        &[
            "--config", cfg_arg, "restore", id, "--kind", "parquet", "--target", target,
        ],
        &[],
    );
    assert_exit(&out, 0);
    assert_eq!(
        fs::read(t.join(&deep)).unwrap(),
        fs::read(cold.join(&deep)).unwrap()
    );
}

#[test]
fn a_restore_dry_run_counts_the_whole_replicated_set() {
    let s3 = shared_s3();
    let bucket = s3.new_bucket("repldry");
    let dir = tempfile::tempdir().unwrap();
    let cold = dir.path().join("cold");
    let mk = Maker::new();
    for i in 0..4 {
        mk.small(&cold.join(format!("part-{i}.parquet")), i + 1);
    }
    let cfg = config(dir.path(), s3, &bucket, "cold", "");
    replicate(&cfg, s3, 0);
    mk.small(&cold.join("part-9.parquet"), 99);
    let (r2, _) = replicate(&cfg, s3, 0);
    // The second run stored one object but its set is five files.
    assert_eq!(r2["manifest"]["objects"].as_array().unwrap().len(), 1);
    let set_bytes: u64 = r2["manifest"]["source"]["set"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["object_size"].as_u64().unwrap())
        .sum();
    let target = dir.path().join("restored");
    let out = run_bkp(
        &[
            "--config",
            cfg.to_str().unwrap(),
            "--json",
            "restore",
            "latest",
            "--kind",
            "parquet",
            "--dry-run",
            "--target",
            target.to_str().unwrap(),
        ],
        &s3.env(),
    );
    assert_exit(&out, 0);
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["objects"], 5, "{v}");
    assert_eq!(v["bytes"], set_bytes);
    assert!(!target.exists());
}

/// `replicate --dry-run` says what a run would read (new and changed files,
/// with sizes), what is unchanged or gone, and writes nothing to the store.
#[test]
fn a_dry_run_names_what_a_run_would_copy_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let cold = dir.path().join("cold");
    let mk = Maker::new();
    mk.small(&cold.join("a.parquet"), 1);
    mk.small(&cold.join("b.parquet"), 2);
    common::write_key(dir.path().join("key"), [7u8; 32]);
    let cfg = dir.path().join("bkp.toml");
    fs::write(
        &cfg,
        "work_dir = \"work\"\n[store]\ntype = \"local\"\npath = \"store\"\n\
         [encryption]\nkey_file = \"key\"\n[replicate]\nsource = \"cold\"\n",
    )
    .unwrap();
    let cfg_arg = cfg.to_str().unwrap();
    assert_exit(&run_bkp(&["--config", cfg_arg, "replicate"], &[]), 0);

    mk.small(&cold.join("c.parquet"), 3);
    fs::remove_file(cold.join("b.parquet")).unwrap();
    let before = common::walk(&dir.path().join("store"));
    let out = run_bkp(
        &["--config", cfg_arg, "--json", "replicate", "--dry-run"],
        &[],
    );
    assert_exit(&out, 0);
    let plan: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(plan["schema"], "bkp.replicate-plan/1");
    assert_eq!(plan["to_read"][0]["path"], "c.parquet", "{plan:#}");
    assert_eq!(plan["to_read"][0]["new"], true);
    assert_eq!(
        plan["bytes_to_read"],
        fs::metadata(cold.join("c.parquet")).unwrap().len()
    );
    assert_eq!(plan["unchanged"], 1);
    assert_eq!(plan["gone"], serde_json::json!(["b.parquet"]));
    assert_eq!(
        common::walk(&dir.path().join("store")),
        before,
        "a dry run wrote to the store"
    );

    let out = run_bkp(&["--config", cfg_arg, "replicate", "-n"], &[]);
    assert_exit(&out, 0);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("new") && text.contains("c.parquet"), "{text}");
    assert!(
        text.contains("gone") && text.contains("b.parquet"),
        "{text}"
    );
}
