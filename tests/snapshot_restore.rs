//! `bkp snapshot` → `bkp list` → `bkp restore` of a real TigerBeetle data file,
//! through the real binary, into a local store and into S3 on a real SeaweedFS.

mod common;

use std::fs;
use std::path::{Path, PathBuf};

use common::{
    assert_exit, formatted_data_file, json, repl, run_bkp, setup, tool, walk, Setup, StoreKind,
    TigerBeetle, ARCHIVE,
};

/// Creates accounts and transfers and returns what a lookup shows of them.
fn fill(tb: &TigerBeetle) -> String {
    repl(&tb.address(), "create_accounts id=1 code=10 ledger=700, id=2 code=10 ledger=700, id=3 code=10 ledger=700;");
    repl(
        &tb.address(),
        "create_transfers id=11 debit_account_id=1 credit_account_id=2 amount=125 ledger=700 code=10, \
         id=12 debit_account_id=2 credit_account_id=3 amount=7 ledger=700 code=10, \
         id=13 debit_account_id=3 credit_account_id=1 amount=340282366920938463463374607431768211455 ledger=700 code=10;",
    );
    lookup(tb)
}

fn lookup(tb: &TigerBeetle) -> String {
    let accounts = repl(&tb.address(), "lookup_accounts id=1, id=2, id=3;");
    let transfers = repl(&tb.address(), "lookup_transfers id=11, id=12, id=13;");
    assert!(accounts.contains("\"id\": \"3\""), "{accounts}");
    assert!(transfers.contains("\"amount\": \"125\""), "{transfers}");
    format!("{accounts}{transfers}")
}

fn digest(p: &Path) -> String {
    bkp::stages::hash::digest_reader(std::io::BufReader::new(fs::File::open(p).unwrap()))
        .unwrap()
        .sha256
}

fn round_trip(store: StoreKind, format: &str) {
    let mut tb = TigerBeetle::start();
    let before = fill(&tb);
    tb.stop();

    let s = setup(
        &tb.data_file,
        store,
        &format!("snapshot_format = \"{format}\"\n"),
    );
    let out = s.bkp(&["--json", "snapshot"]);
    assert_exit(&out, 0);
    let snap = json(&out);
    let id = snap["manifest"]["id"].as_str().unwrap().to_string();
    let stored = match format {
        "archive" => snap["manifest"]["objects"][0]["size"].as_u64().unwrap(),
        // Its new chunks and its chunk list.
        _ => {
            let c = &snap["manifest"]["chunks"];
            c["added_bytes"].as_u64().unwrap() + c["list"]["size"].as_u64().unwrap()
        }
    };
    let original = fs::metadata(&tb.data_file).unwrap().len();
    assert!(
        stored * 2 < original,
        "compression should at least halve a data file: {stored} of {original}"
    );

    let out = s.bkp(&["list", "--json"]);
    assert_exit(&out, 0);
    let list = json(&out);
    assert_eq!(list["backups"].as_array().unwrap().len(), 1);
    assert_eq!(list["backups"][0]["id"], id);
    assert_eq!(list["backups"][0]["bytes"].as_u64().unwrap(), stored);

    let out = s.bkp(&["list"]);
    assert_exit(&out, 0);
    assert!(String::from_utf8_lossy(&out.stdout).contains(&id));

    let target = s.path("restored");
    let out = s.bkp(&["restore", "latest", "--target", target.to_str().unwrap()]);
    assert_exit(&out, 0);
    let restored = target.join(tb.data_file.file_name().unwrap());
    assert_eq!(
        digest(&restored),
        digest(&tb.data_file),
        "restored file differs"
    );

    // The restored file is a working ledger with everything created before the snapshot.
    let tb2 = TigerBeetle::start_on(&restored);
    assert_eq!(lookup(&tb2), before);
}

#[test]
fn snapshot_list_restore_local_store() {
    round_trip(StoreKind::Local, "chunked");
}

#[test]
fn snapshot_list_restore_s3_store() {
    round_trip(StoreKind::S3, "chunked");
}

#[test]
fn archive_snapshot_list_restore_local_store() {
    round_trip(StoreKind::Local, "archive");
}

#[test]
fn archive_snapshot_list_restore_s3_store() {
    round_trip(StoreKind::S3, "archive");
}

#[test]
fn live_data_file_is_refused_without_a_safe_mode() {
    let tb = TigerBeetle::start();
    let s = setup(&tb.data_file, StoreKind::Local, "");
    let out = s.bkp(&["snapshot"]);
    assert_exit(&out, 7);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("running TigerBeetle replica holds it"),
        "{stderr}"
    );
    assert!(stderr.contains("snapshot_mode"), "{stderr}");
    // Nothing was stored, not even a partial object.
    let out = s.bkp(&["list", "--json"]);
    assert_eq!(json(&out)["backups"].as_array().unwrap().len(), 0);
    assert_no_backup_files(&s.path("store"));
}

#[test]
fn reflink_mode_fails_clearly_where_the_file_system_cannot() {
    let dir = tempfile::tempdir().unwrap();
    let data = formatted_data_file(dir.path());
    let s = setup(&data, StoreKind::Local, "snapshot_mode = \"reflink\"\n");
    let out = s.bkp(&["snapshot"]);
    // ext4 and tmpfs cannot clone; btrfs/xfs can, and then the snapshot succeeds.
    let stderr = String::from_utf8_lossy(&out.stderr);
    match out.status.code() {
        Some(0) => {}
        Some(7) => assert!(stderr.contains("reflink"), "{stderr}"),
        other => panic!("unexpected exit {other:?}: {stderr}"),
    }
}

fn stored_object(s: &Setup) -> PathBuf {
    walk(&s.path("store"))
        .into_iter()
        .find(|p| p.is_file() && p.to_string_lossy().contains("tigerbeetle-snapshot-"))
        .expect("a stored snapshot object")
}

#[test]
fn damaged_object_wrong_key_and_existing_target_leave_the_target_alone() {
    let dir = tempfile::tempdir().unwrap();
    let data = formatted_data_file(dir.path());
    let s = setup(&data, StoreKind::Local, ARCHIVE);
    assert_exit(&s.bkp(&["snapshot"]), 0);

    // A non-empty target is refused without --force.
    let target = s.path("target");
    fs::create_dir(&target).unwrap();
    fs::write(target.join("precious"), b"keep me").unwrap();
    let out = s.bkp(&["restore", "latest", "--target", target.to_str().unwrap()]);
    assert_exit(&out, 8);
    assert_eq!(fs::read(target.join("precious")).unwrap(), b"keep me");

    // A wrong key: the store's marker is sealed with a key this config does
    // not hold, so the store is not this config's: exit 3, naming the key id,
    // target untouched.
    let other = s.path("other.key");
    common::write_key(&other, [9u8; 32]);
    let wrong = s.path("wrong.toml");
    fs::write(
        &wrong,
        fs::read_to_string(&s.config)
            .unwrap()
            .replace("key_file = \"key\"", "key_file = \"other.key\""),
    )
    .unwrap();
    let fresh = s.path("fresh");
    let out = run_bkp(
        &[
            "--config",
            wrong.to_str().unwrap(),
            "restore",
            "latest",
            "--target",
            fresh.to_str().unwrap(),
        ],
        &[],
    );
    assert_exit(&out, 3);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("k-") && stderr.contains("configure that installation's key"),
        "key id expected: {stderr}"
    );
    assert!(!fresh.exists());

    // A flipped byte in the stored object: verification fails before anything is written.
    let obj = stored_object(&s);
    let mut bytes = fs::read(&obj).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x01;
    fs::write(&obj, &bytes).unwrap();
    let out = s.bkp(&["restore", "latest", "--target", fresh.to_str().unwrap()]);
    assert_exit(&out, 5);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("failed verification"), "{stderr}");
    assert!(!fresh.exists(), "target created despite a damaged object");
    let staging: Vec<_> = fs::read_dir(s.dir.path())
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().contains("bkp-restore"))
        .collect();
    assert!(staging.is_empty(), "staging left behind: {staging:?}");

    // --force replaces the target only with a verified restore: still refused here.
    let out = s.bkp(&[
        "restore",
        "latest",
        "--force",
        "--target",
        target.to_str().unwrap(),
    ]);
    assert_exit(&out, 5);
    assert_eq!(fs::read(target.join("precious")).unwrap(), b"keep me");
}

#[test]
fn force_replaces_a_non_empty_target_after_verification() {
    let dir = tempfile::tempdir().unwrap();
    let data = formatted_data_file(dir.path());
    let s = setup(
        &data,
        StoreKind::Local,
        "[compression]\nalgorithm = \"gzip\"\n",
    );
    assert_exit(&s.bkp(&["snapshot"]), 0);
    let target = s.path("target");
    fs::create_dir(&target).unwrap();
    fs::write(target.join("old"), b"old").unwrap();
    assert_exit(
        &s.bkp(&[
            "restore",
            "latest",
            "--force",
            "--target",
            target.to_str().unwrap(),
        ]),
        0,
    );
    assert!(!target.join("old").exists());
    assert_eq!(digest(&target.join("0_0.tigerbeetle")), digest(&data));
}

#[test]
fn damaged_s3_object_fails_restore() {
    let dir = tempfile::tempdir().unwrap();
    let data = formatted_data_file(dir.path());
    let s = setup(&data, StoreKind::S3, ARCHIVE);
    let out = s.bkp(&["--json", "snapshot"]);
    assert_exit(&out, 0);
    let m = json(&out);
    let key = m["manifest"]["objects"][0]["key"]
        .as_str()
        .unwrap()
        .to_string();
    let bucket = s.bucket();
    let remote = format!("s3:{bucket}/team/bkp/{key}");
    let s3 = common::shared_s3();

    // An independent client sees the object and its metadata.
    let out = s3.rclone(&["lsjson", "--metadata", &remote]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let listing = String::from_utf8_lossy(&out.stdout);
    assert!(
        listing.contains(&m["manifest"]["id"].as_str().unwrap().to_string()),
        "{listing}"
    );
    // The data file's own SHA-256 is in the manifest (it is known only once the
    // single read that archives the file ends), so `sha256sum` can check a
    // restored file.
    assert_eq!(
        m["manifest"]["files"][0]["sha256"].as_str().unwrap(),
        digest(&data)
    );

    let local = s.path("object");
    assert!(s3
        .rclone(&["copyto", &remote, local.to_str().unwrap()])
        .status
        .success());
    let mut bytes = fs::read(&local).unwrap();
    let n = bytes.len();
    bytes[n - 100] ^= 0x80;
    fs::write(&local, &bytes).unwrap();
    assert!(s3.rclone(&["deletefile", &remote]).status.success());
    assert!(s3
        .rclone(&["copyto", local.to_str().unwrap(), &remote])
        .status
        .success());

    let target = s.path("target");
    let out = s.bkp(&["restore", "latest", "--target", target.to_str().unwrap()]);
    assert_exit(&out, 5);
    assert!(!target.exists());
}

/// Kills the replica a pid file names, when dropped.
struct PidFile(PathBuf);

impl Drop for PidFile {
    fn drop(&mut self) {
        if let Ok(pid) = fs::read_to_string(&self.0) {
            let _ = std::process::Command::new("kill")
                .arg("-9")
                .arg(pid.trim())
                .status();
        }
    }
}

/// Starts a replica on `data` at `address` by a shell script that records its
/// pid in `dir/tb.pid`, and returns that start script, the matching stop script
/// (for `snapshot_mode = "stop"`) and a guard that kills the replica.
fn replica_scripts(dir: &Path, data: &Path, address: &str) -> (String, String, PidFile) {
    let pidfile = dir.join("tb.pid");
    let start = format!(
        "setsid '{}' start --addresses={address} --development '{}' >>'{}' 2>&1 </dev/null & echo $! > '{}'",
        tool("tigerbeetle").display(),
        data.display(),
        dir.join("tb.log").display(),
        pidfile.display()
    );
    let stop = format!(
        "kill $(cat '{0}') && while kill -0 $(cat '{0}') 2>/dev/null; do sleep 0.1; done",
        pidfile.display()
    );
    let guard = PidFile(pidfile);
    assert!(std::process::Command::new("sh")
        .args(["-c", &start])
        .status()
        .unwrap()
        .success());
    wait_for_port(dir, address);
    (start, stop, guard)
}

/// Waits until the replica whose pid the start script wrote in `dir/tb.pid`
/// listens on `address` (another process answering there is not it).
fn wait_for_port(dir: &Path, address: &str) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let port: u16 = address.rsplit_once(':').unwrap().1.parse().unwrap();
    let pid = || {
        fs::read_to_string(dir.join("tb.pid"))
            .ok()?
            .trim()
            .parse()
            .ok()
    };
    while !pid().is_some_and(|pid| common::listens_on(pid, port)) {
        assert!(
            std::time::Instant::now() < deadline,
            "replica at {address} did not come up"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

#[test]
fn stop_mode_stops_copies_and_restarts_the_replica() {
    let dir = tempfile::tempdir().unwrap();
    let data = formatted_data_file(dir.path());
    let address = format!("127.0.0.1:{}", common::free_port());
    let pidfile = dir.path().join("tb.pid");
    let (start, stop, _guard) = replica_scripts(dir.path(), &data, &address);
    repl(&address, "create_accounts id=1 code=10 ledger=700, id=2 code=10 ledger=700, id=3 code=10 ledger=700;");
    repl(&address, "create_transfers id=11 debit_account_id=1 credit_account_id=2 amount=125 ledger=700 code=10, id=12 debit_account_id=2 credit_account_id=3 amount=7 ledger=700 code=10, id=13 debit_account_id=3 credit_account_id=1 amount=1 ledger=700 code=10;");
    let before = format!(
        "{}{}",
        repl(&address, "lookup_accounts id=1, id=2, id=3;"),
        repl(&address, "lookup_transfers id=11, id=12, id=13;")
    );
    let first_pid = fs::read_to_string(&pidfile).unwrap();

    let extra = stop_mode(&stop, &start)
        + "stop_timeout = \"60s\"\ncount_rows = true\nreplica_args = [\"--development\"]\n";
    let s = setup(&data, StoreKind::Local, &extra);
    let out = s.bkp(&["--verbose", "snapshot"]);
    assert_exit(&out, 0);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("replica stopped for"), "{stderr}");
    // The copy's rows were counted into the manifest (for `verify --drill`).
    let manifests = walk(&s.path("store/manifests"));
    let m: serde_json::Value = serde_json::from_slice(&fs::read(&manifests[0]).unwrap()).unwrap();
    assert_eq!(m["source"]["accounts"], 3, "{m:#}");
    assert_eq!(m["source"]["transfers"], 3, "{m:#}");

    // The replica is back, as a new process, with its data.
    let second_pid = fs::read_to_string(&pidfile).unwrap();
    assert_ne!(first_pid, second_pid, "the start command did not run");
    wait_for_port(dir.path(), &address);
    assert!(repl(&address, "lookup_accounts id=1;").contains("\"debits_posted\": \"125\""));

    // The snapshot holds the state at the stop.
    let target = s.path("restored");
    assert_exit(
        &s.bkp(&["restore", "latest", "--target", target.to_str().unwrap()]),
        0,
    );
    let tb2 = TigerBeetle::start_on(&target.join("0_0.tigerbeetle"));
    assert_eq!(lookup(&tb2), before);
    // The local copy (a scratch directory under work/tmp) is gone.
    let work: Vec<_> = [s.path("work"), s.path("work/tmp")]
        .iter()
        .flat_map(|d| fs::read_dir(d).into_iter().flatten().flatten())
        .map(|e| e.file_name())
        .collect();
    assert!(
        work.iter()
            .all(|n| !n.to_string_lossy().starts_with("snapshot-")),
        "{work:?}"
    );
}

/// TigerBeetle has no clean stop: a replica stopped while it writes its
/// superblock leaves the superblock's four copies torn (the first new, the
/// others old), which the replica repairs when it starts, but which `tigerbeetle
/// inspect integrity` (read-only) rejects. A stop-mode snapshot of such a file
/// is checked through a second copy that a private replica has opened, and the
/// copy as taken is stored, not refused: the source's bytes, with a manifest
/// that says so. The original file is left as it is; a restore warns, a replica
/// started on the restored file serves the source's balances, and a drill
/// passes.
#[test]
fn a_copy_torn_by_the_stop_is_stored_as_taken_not_refused() {
    let dir = tempfile::tempdir().unwrap();
    let data = formatted_data_file(dir.path());
    let address = format!("127.0.0.1:{}", common::free_port());
    let (start, stop, _guard) = replica_scripts(dir.path(), &data, &address);
    repl(
        &address,
        "create_accounts id=1 code=10 ledger=700, id=2 code=10 ledger=700;",
    );
    repl(&address, "create_transfers id=11 debit_account_id=1 credit_account_id=2 amount=125 ledger=700 code=10;");
    let want = repl(&address, "lookup_accounts id=1, id=2;");
    let sh = |script: &str| {
        assert!(std::process::Command::new("sh")
            .args(["-c", script])
            .status()
            .unwrap()
            .success())
    };
    // The superblock's four copies (six sectors each in this release).
    const COPY: usize = 6 * 4096;
    let superblock = |file: &Path| {
        use std::io::Read;
        let mut b = vec![0u8; 4 * COPY];
        fs::File::open(file).unwrap().read_exact(&mut b).unwrap();
        b
    };
    sh(&stop);
    let older = superblock(&data);
    // Each start writes the superblock anew (a new view), and nothing else
    // here: the files differ in their superblocks only.
    sh(&start);
    wait_for_port(dir.path(), &address);
    assert_eq!(repl(&address, "lookup_accounts id=1, id=2;"), want);
    sh(&stop);
    assert!(
        older[..COPY] != superblock(&data)[..COPY],
        "the restart did not rewrite the superblock"
    );
    // The write torn after its first copy: copies 1 to 3 still the older ones.
    {
        use std::io::{Seek, SeekFrom, Write};
        let mut f = fs::OpenOptions::new().write(true).open(&data).unwrap();
        f.seek(SeekFrom::Start(COPY as u64)).unwrap();
        f.write_all(&older[COPY..]).unwrap();
        f.sync_all().unwrap();
    }
    let inspect = |file: &Path| {
        std::process::Command::new(tool("tigerbeetle"))
            .args(["inspect", "integrity"])
            .arg(file)
            .output()
            .unwrap()
    };
    assert!(
        !inspect(&data).status.success(),
        "the torn file passed as it is"
    );
    let torn = superblock(&data);

    let s = setup(
        &data,
        StoreKind::Local,
        &(stop_mode("true", "true") + "replica_args = [\"--development\"]\n"),
    );
    let out = s.bkp(&["--verbose", "snapshot"]);
    assert_exit(&out, 0);
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(said.contains("private replica"), "{said}");
    let manifests = walk(&s.path("store/manifests"));
    let m: serde_json::Value = serde_json::from_slice(&fs::read(&manifests[0]).unwrap()).unwrap();
    assert!(
        m["source"]["torn_writes"]
            .as_str()
            .is_some_and(|w| !w.is_empty()),
        "{m:#}"
    );
    assert_eq!(m["source"]["integrity_checked"], true, "{m:#}");
    assert!(superblock(&data) == torn, "the original was changed");

    let target = s.path("restored");
    let out = s.bkp(&["restore", "latest", "--target", target.to_str().unwrap()]);
    assert_exit(&out, 0);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("torn writes"),
        "the restore does not warn: {out:?}"
    );
    // The source's bytes: torn as the source's file is, until a replica opens it.
    let restored = target.join("0_0.tigerbeetle");
    assert!(superblock(&restored) == torn, "not the bytes as taken");
    assert!(!inspect(&restored).status.success());
    let tb = TigerBeetle::start_on(&restored);
    assert_eq!(repl(&tb.address(), "lookup_accounts id=1, id=2;"), want);
    drop(tb);
    let checked = inspect(&restored);
    assert!(checked.status.success(), "{checked:?}");
    assert_exit(&s.bkp(&["verify", "--drill"]), 0);
}

/// A data file formatted with a cluster id the config does not name (no
/// `[tigerbeetle] cluster_id`, no addresses): the private replicas bkp starts
/// on copies of it (the row count at snapshot time, the drill) are reached
/// with the id its superblock holds, so they answer at once instead of
/// leaving every request to time out.
#[test]
fn a_data_file_of_another_cluster_id_is_drilled_with_its_own() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("0_0.tigerbeetle");
    let out = std::process::Command::new(tool("tigerbeetle"))
        .args([
            "format",
            "--cluster=4242",
            "--replica=0",
            "--replica-count=1",
            "--development",
        ])
        .arg(&data)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert_eq!(bkp::tigerbeetle::replica::cluster_of(&data), Some(4242));
    let s = setup(&data, StoreKind::Local, "");
    assert_exit(&s.bkp(&["snapshot"]), 0);
    let out = s.bkp(&["verify", "--drill"]);
    assert_exit(&out, 0);
}

/// Starts `bkp snapshot` and returns it stopped (`BKP_PAUSEPOINT`) once it has
/// stored its first chunk: it holds its run lock, nothing is in the store that
/// names the chunk, and most of the data file is still to read, however fast or
/// loaded the machine. `common::resume` lets it go on.
fn start_held_snapshot(s: &Setup) -> std::process::Child {
    let held = [("BKP_PAUSEPOINT".to_string(), "chunk-stored:1".to_string())];
    let child = common::bkp_command(&[&s.env[..], &held[..]].concat())
        .args(["--config", s.config.to_str().unwrap(), "snapshot"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    common::wait_stopped(child.id(), "the snapshot, after storing its first chunk");
    child
}

#[test]
fn a_run_killed_mid_upload_leaves_no_backup_that_looks_complete() {
    let dir = tempfile::tempdir().unwrap();
    let data = formatted_data_file(dir.path());
    let s = setup(&data, StoreKind::Local, "");
    let mut child = start_held_snapshot(&s);
    child.kill().unwrap();
    child.wait().unwrap();

    let out = s.bkp(&["list", "--json"]);
    assert_exit(&out, 0);
    assert_eq!(
        json(&out)["backups"].as_array().unwrap().len(),
        0,
        "an interrupted run is listed"
    );
    let target = s.path("target");
    let out = s.bkp(&["restore", "latest", "--target", target.to_str().unwrap()]);
    assert_exit(&out, 9);
    assert!(!target.exists());

    // The next run is not blocked by the dead one's lock or leftovers.
    assert_exit(&s.bkp(&["snapshot"]), 0);
    let out = s.bkp(&["list", "--json"]);
    assert_eq!(json(&out)["backups"].as_array().unwrap().len(), 1);
    // Nothing but the (empty) scratch parent is left in the work directory.
    let copies: Vec<_> = fs::read_dir(s.path("work"))
        .unwrap()
        .flatten()
        .filter(|e| e.path().is_dir() && e.file_name() != "tmp")
        .collect();
    assert!(copies.is_empty(), "{copies:?}");
    let scratch: Vec<_> = fs::read_dir(s.path("work/tmp"))
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    assert!(scratch.is_empty(), "{scratch:?}");
}

#[test]
fn rotated_keys_restore_old_and_new_backups_by_id() {
    let dir = tempfile::tempdir().unwrap();
    let data = formatted_data_file(dir.path());
    let s = setup(
        &data,
        StoreKind::Local,
        "[compression]\nalgorithm = \"none\"\n",
    );
    let base = fs::read_to_string(&s.config).unwrap();
    let labelled = base.replace(
        "key_file = \"key\"",
        "key_file = \"key\"\nkey_id = \"ops-2025\"",
    );
    fs::write(&s.config, &labelled).unwrap();
    let out = s.bkp(&["snapshot"]);
    assert_exit(&out, 0);
    let old_id = String::from_utf8_lossy(&out.stdout).trim().to_string();

    common::write_key(s.path("new.key"), [42u8; 32]);
    let rotated = base.replace(
        "key_file = \"key\"",
        "key_file = \"new.key\"\nkey_id = \"ops-2026\"\n[[encryption.old_keys]]\nkey_file = \"key\"\nkey_id = \"ops-2025\"",
    );
    fs::write(&s.config, &rotated).unwrap();
    // The old key decrypts, but seals nothing new: what it sealed before the
    // rotation is recorded once, under the new key.
    let out = s.bkp(&["--json", "trust-legacy"]);
    assert_exit(&out, 0);
    assert_eq!(json(&out)["recorded"].as_array().unwrap().len(), 1);
    let out = s.bkp(&["snapshot"]);
    assert_exit(&out, 0);
    let new_id = String::from_utf8_lossy(&out.stdout).trim().to_string();

    let out = s.bkp(&["list", "--json"]);
    let list = json(&out);
    let key_ids: Vec<&str> = list["backups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["key_id"].as_str().unwrap())
        .collect();
    assert_eq!(key_ids, ["ops-2025", "ops-2026"]);

    for (id, target) in [(&old_id, "old"), (&new_id, "new")] {
        let t = s.path(target);
        assert_exit(&s.bkp(&["restore", id, "--target", t.to_str().unwrap()]), 0);
        assert_eq!(digest(&t.join("0_0.tigerbeetle")), digest(&data));
    }

    // Without the old key, a restore fails clearly (exit 3, before anything
    // is read) and names the key it needs: the store's marker, sealed before
    // the rotation, needs it as much as the old backup does.
    let forgotten = base.replace(
        "key_file = \"key\"",
        "key_file = \"new.key\"\nkey_id = \"ops-2026\"",
    );
    fs::write(&s.config, forgotten).unwrap();
    let t = s.path("again");
    let out = s.bkp(&["restore", &old_id, "--target", t.to_str().unwrap()]);
    assert_exit(&out, 3);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("ops-2025") && stderr.contains("old_keys"),
        "{stderr}"
    );
    assert!(!t.exists());
}

#[test]
fn force_never_replaces_the_store_or_a_live_data_directory() {
    let tb = TigerBeetle::start();
    let s = setup(
        &tb.data_file,
        StoreKind::Local,
        "snapshot_mode = \"offline\"\n",
    );
    // A backup to restore, from a quiet file.
    let dir = tempfile::tempdir().unwrap();
    let quiet = formatted_data_file(dir.path());
    let other = setup(&quiet, StoreKind::Local, "");
    assert_exit(&other.bkp(&["snapshot"]), 0);
    fs::remove_dir_all(s.path("store")).ok();
    fs::create_dir_all(s.path("store")).unwrap();
    let copy = |from: &Path, to: &Path| {
        let status = std::process::Command::new("cp")
            .arg("-a")
            .arg(from)
            .arg(to)
            .status()
            .unwrap();
        assert!(status.success());
    };
    copy(&other.path("store/."), &s.path("store"));

    // The directory of a running replica: its data file is locked.
    let live_dir = tb.data_file.parent().unwrap();
    let out = s.bkp(&[
        "restore",
        "latest",
        "--force",
        "--target",
        live_dir.to_str().unwrap(),
    ]);
    assert_exit(&out, 8);
    let out = s.bkp(&[
        "restore",
        "latest",
        "--force",
        "--target",
        s.path("store").to_str().unwrap(),
    ]);
    assert_exit(&out, 8);
    assert!(String::from_utf8_lossy(&out.stderr).contains("backup store"));
    // A directory with a file some running process holds locked.
    let held = s.path("held");
    fs::create_dir(&held).unwrap();
    let lock = fs::File::create(held.join("0_0.tigerbeetle")).unwrap();
    lock.lock().unwrap();
    let out = s.bkp(&[
        "restore",
        "latest",
        "--force",
        "--target",
        held.to_str().unwrap(),
    ]);
    assert_exit(&out, 7);
    assert!(String::from_utf8_lossy(&out.stderr).contains("locked by a running process"));
    drop(lock);
    // Once free, --force replaces it.
    assert_exit(
        &s.bkp(&[
            "restore",
            "latest",
            "--force",
            "--target",
            held.to_str().unwrap(),
        ]),
        0,
    );
    assert_eq!(digest(&held.join("0_0.tigerbeetle")), digest(&quiet));
    // Still there and intact.
    assert_exit(&s.bkp(&["list"]), 0);
    assert!(tb.data_file.exists());
}

#[test]
fn two_runs_of_one_config_never_overlap() {
    let dir = tempfile::tempdir().unwrap();
    let data = formatted_data_file(dir.path());
    let s = setup(&data, StoreKind::Local, "");
    // The first run is held under its lock for as long as the test needs.
    let first = start_held_snapshot(&s);
    let out = s.bkp(&["snapshot"]);
    assert_exit(&out, 4);
    assert!(String::from_utf8_lossy(&out.stderr).contains("--wait"));
    // With --wait, the second run queues behind the first: it is held too where
    // it finds the lock taken, then both go on, and it succeeds once the first ends.
    let queued = [("BKP_PAUSEPOINT".to_string(), "lock-wait:1".to_string())];
    let second = common::bkp_command(&[&s.env[..], &queued[..]].concat())
        .args(["--config", s.config.to_str().unwrap()])
        .args(["--wait", "5m", "snapshot"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    common::wait_stopped(second.id(), "the --wait run, finding the lock held");
    common::resume(second.id());
    common::resume(first.id());
    let out = first.wait_with_output().unwrap();
    assert_exit(&out, 0);
    let out = second.wait_with_output().unwrap();
    assert_exit(&out, 0);
    let out = s.bkp(&["list", "--json"]);
    assert_eq!(json(&out)["backups"].as_array().unwrap().len(), 2);
}

#[test]
fn a_failed_stop_command_still_runs_the_start_command() {
    let dir = tempfile::tempdir().unwrap();
    let data = formatted_data_file(dir.path());
    let started = dir.path().join("started");
    let extra = format!(
        "snapshot_mode = \"stop\"\nstop_command = [\"sh\", \"-c\", \"echo cannot stop the unit >&2; exit 3\"]\nstart_command = [\"touch\", \"{}\"]\n",
        started.display()
    );
    let s = setup(&data, StoreKind::Local, &extra);
    let out = s.bkp(&["snapshot"]);
    assert_exit(&out, 1);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("stop command"), "{stderr}");
    assert!(stderr.contains("cannot stop the unit"), "{stderr}");
    assert!(stderr.contains("commands.log"), "{stderr}");
    assert!(
        started.exists(),
        "the start command did not run after a failed stop"
    );
    let out = s.bkp(&["list", "--json"]);
    assert_eq!(json(&out)["backups"].as_array().unwrap().len(), 0);
}

#[test]
fn a_copy_that_fails_the_integrity_check_is_never_uploaded() {
    let dir = tempfile::tempdir().unwrap();
    let data = formatted_data_file(dir.path());
    {
        use std::io::{Seek, SeekFrom, Write};
        let mut f = fs::OpenOptions::new().write(true).open(&data).unwrap();
        f.seek(SeekFrom::Start(16 << 20)).unwrap();
        let junk: Vec<u8> = (0..(1u32 << 20))
            .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
            .collect();
        f.write_all(&junk).unwrap();
    }
    let s = setup(&data, StoreKind::Local, "");
    let out = s.bkp(&["snapshot"]);
    assert_exit(&out, 5);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("inspect integrity"), "{stderr}");
    assert_no_backup_files(&s.path("store"));
}

/// Fails unless `store` holds no file but its marker (which a run with keys
/// writes as it begins): no object, not even a partial one, and no manifest.
fn assert_no_backup_files(store: &std::path::Path) {
    let files: Vec<_> = walk(store)
        .into_iter()
        .filter(|p| p.is_file() && !p.ends_with("bkp-store.json"))
        .collect();
    assert!(files.is_empty(), "{files:?}");
}

#[test]
fn latest_never_falls_back_past_a_newer_manifest_it_cannot_read() {
    let dir = tempfile::tempdir().unwrap();
    let data = formatted_data_file(dir.path());
    let s = setup(&data, StoreKind::Local, "");
    let out = s.bkp(&["--json", "snapshot"]);
    assert_exit(&out, 0);
    let id = json(&out)["manifest"]["id"].as_str().unwrap().to_string();

    // A newer manifest, damaged in the store.
    let later = time::OffsetDateTime::now_utc() + time::Duration::minutes(1);
    let newer = bkp::id::BackupId::new_v7(later).to_string();
    fs::write(
        s.path(&format!("store/manifests/tigerbeetle/{newer}.json")),
        b"{ \"schema\": \"bkp.manifest/1.0\", damaged",
    )
    .unwrap();
    let target = s.path("target");
    let out = s.bkp(&["restore", "latest", "--target", target.to_str().unwrap()]);
    assert_exit(&out, 5);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&newer) && stderr.contains("could not be read"),
        "{stderr}"
    );
    assert!(!target.exists());

    // Named by its id, the readable snapshot restores.
    let out = s.bkp(&["restore", &id, "--target", target.to_str().unwrap()]);
    assert_exit(&out, 0);
    assert!(target.exists());
}

#[test]
fn list_filters_by_operation_time_and_count() {
    let dir = tempfile::tempdir().unwrap();
    let data = formatted_data_file(dir.path());
    let s = setup(&data, StoreKind::Local, "");
    let mut ids = Vec::new();
    for _ in 0..3 {
        let out = s.bkp(&["--json", "snapshot"]);
        assert_exit(&out, 0);
        ids.push(json(&out)["manifest"]["id"].as_str().unwrap().to_string());
    }
    let listed = |args: &[&str]| s.listed(args);
    assert_eq!(listed(&[]), ids);
    assert_eq!(listed(&["--last", "2"]), ids[1..].to_vec());
    assert_eq!(
        listed(&["--operation", "snapshot", "--last", "1"]),
        ids[2..].to_vec()
    );
    assert!(listed(&["--operation", "logs"]).is_empty());
    assert_eq!(listed(&["--since", "1h"]), ids);
    assert!(listed(&["--since", "2999-01-01T00:00:00Z"]).is_empty());
    assert_exit(&s.bkp(&["list", "--operation", "bogus"]), 3);
    assert_exit(&s.bkp(&["list", "--since", "yesterday"]), 3);
}

#[test]
fn restore_dry_run_says_what_it_would_do_and_does_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let data = formatted_data_file(dir.path());
    let s = setup(&data, StoreKind::Local, "");
    let out = s.bkp(&["--json", "snapshot"]);
    assert_exit(&out, 0);
    let m = json(&out)["manifest"].clone();
    let target = s.path("target");
    let out = s.bkp(&[
        "--json",
        "restore",
        "latest",
        "--dry-run",
        "--target",
        target.to_str().unwrap(),
    ]);
    assert_exit(&out, 0);
    let v = json(&out);
    assert_eq!(v["backup"], m["id"]);
    // Its chunk list and every chunk it names, each once.
    let c = &m["chunks"];
    assert_eq!(v["objects"], c["stored"].as_u64().unwrap() + 1);
    assert_eq!(
        v["bytes"],
        c["stored_bytes"].as_u64().unwrap() + c["list"]["size"].as_u64().unwrap()
    );
    assert_eq!(v["target_ok"], true);
    assert!(!target.exists(), "a dry run creates nothing");
    // A non-empty target: the dry run fails as the restore would, and keeps it.
    fs::create_dir(&target).unwrap();
    fs::write(target.join("keep"), b"x").unwrap();
    let out = s.bkp(&[
        "restore",
        "latest",
        "-n",
        "--target",
        target.to_str().unwrap(),
    ]);
    assert_exit(&out, 8);
    assert!(String::from_utf8_lossy(&out.stdout).contains("refused"));
    assert_eq!(fs::read(target.join("keep")).unwrap(), b"x");
    let leftovers: Vec<_> = fs::read_dir(s.dir.path())
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().contains(".bkp-"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[test]
fn sigterm_stops_a_run_cleanly_with_its_own_exit_code() {
    let dir = tempfile::tempdir().unwrap();
    let data = formatted_data_file(dir.path());
    let s = setup(&data, StoreKind::Local, "");
    let child = start_held_snapshot(&s);
    // Delivered as the run goes on again, mid-upload.
    // SAFETY: kill(2) with a pid of our own child.
    unsafe {
        libc::kill(child.id() as i32, libc::SIGTERM);
    }
    common::resume(child.id());
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(143), "{out:?}");
    let out = s.bkp(&["list", "--json"]);
    assert!(json(&out)["backups"].as_array().unwrap().is_empty());
    // Nothing half-written in the store, no scratch in the work directory.
    let partial: Vec<_> = walk(&s.path("store/.bkp-partial"));
    assert!(partial.is_empty(), "{partial:?}");
    let scratch = walk(&s.path("work/tmp"));
    assert!(scratch.is_empty(), "{scratch:?}");
}

/// The `[tigerbeetle]` lines of `snapshot_mode = "stop"` whose stop and start
/// commands are the shell scripts `stop` and `start`.
fn stop_mode(stop: &str, start: &str) -> String {
    format!(
        "snapshot_mode = \"stop\"\nstop_command = [\"sh\", \"-c\", {stop:?}]\n\
         start_command = [\"sh\", \"-c\", {start:?}]\n"
    )
}

#[test]
fn a_signal_inside_the_stop_window_still_runs_the_start_command() {
    let dir = tempfile::tempdir().unwrap();
    let data = formatted_data_file(dir.path());
    // The stop command itself sends bkp SIGTERM: the signal arrives while the
    // replica is stopped.
    let started = dir.path().join("started");
    let s = setup(
        &data,
        StoreKind::Local,
        &stop_mode(
            "kill -TERM $PPID",
            &format!("echo started > {}", started.display()),
        ),
    );
    let out = s.bkp(&["snapshot"]);
    assert_eq!(out.status.code(), Some(143), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("SIGTERM"), "{stderr}");
    assert!(started.exists(), "the start command did not run");
    assert!(s.listed(&[]).is_empty());
}

/// Ctrl-C at a terminal sends SIGINT to the whole foreground process group.
/// The start command runs in a process group of its own, so that it finishes
/// (the replica comes back) while bkp ends the run as interrupted.
#[test]
fn ctrl_c_while_the_start_command_runs_does_not_kill_it() {
    use std::os::unix::process::CommandExt;
    let dir = tempfile::tempdir().unwrap();
    let data = formatted_data_file(dir.path());
    let started = dir.path().join("started");
    // The start command sends SIGINT to bkp's process group, as a terminal
    // would, then takes a moment to finish.
    let s = setup(
        &data,
        StoreKind::Local,
        &stop_mode(
            "true",
            &format!(
                "kill -INT -$(cut -d' ' -f5 /proc/$PPID/stat); sleep 1; echo started > {}",
                started.display()
            ),
        ),
    );
    let mut cmd = common::bkp_command(&s.env);
    cmd.args(["--config", s.config.to_str().unwrap(), "snapshot"])
        .process_group(0);
    let out = common::run(&mut cmd, None, std::time::Duration::from_secs(120));
    assert!(started.exists(), "the start command was killed: {out:?}");
    assert_eq!(out.status.code(), Some(130), "{out:?}");
    assert!(s.listed(&[]).is_empty());
}

/// A run that fails after a start command failed still says the replica may
/// be down (before, only the later error was reported).
#[test]
fn a_failed_start_command_is_reported_whatever_ends_the_run() {
    let dir = tempfile::tempdir().unwrap();
    let data = formatted_data_file(dir.path());
    let s = setup(
        &data,
        StoreKind::Local,
        &stop_mode("true", "kill -TERM $PPID; echo unit failed >&2; exit 1"),
    );
    let out = s.bkp(&["snapshot"]);
    assert_eq!(out.status.code(), Some(143), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("SIGTERM"), "{stderr}");
    assert!(stderr.contains("the replica may still be down"), "{stderr}");
    assert!(stderr.contains("unit failed"), "{stderr}");
}

#[test]
fn a_run_killed_inside_the_stop_window_leaves_the_replica_to_the_next_run() {
    use std::os::unix::process::ExitStatusExt;
    let dir = tempfile::tempdir().unwrap();
    let data = formatted_data_file(dir.path());
    let started = dir.path().join("started");
    let broken = dir.path().join("start-is-broken");
    // The stop command SIGKILLs bkp: no handler, no destructor, no start
    // command. The start command fails while `broken` exists.
    let s = setup(
        &data,
        StoreKind::Local,
        &stop_mode(
            "kill -KILL $PPID",
            &format!(
                "if [ -e {} ]; then echo unit failed to start >&2; exit 1; fi; echo started >> {}",
                broken.display(),
                started.display()
            ),
        ),
    );
    fs::write(&broken, b"").unwrap();
    let out = s.bkp(&["snapshot"]);
    assert_eq!(out.status.signal(), Some(libc::SIGKILL), "{out:?}");
    assert!(!started.exists());
    let marker = s.path("work/replica-stopped.json");
    let recorded: serde_json::Value = serde_json::from_slice(&fs::read(&marker).unwrap()).unwrap();
    assert_eq!(recorded["data_file"], data.to_str().unwrap(), "{recorded}");

    // The start command fails: every run says so, `status` fails with exit 7
    // naming the marker, and the marker stays for the next run.
    let out = s.bkp(&["status"]);
    assert_exit(&out, 7);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("THE REPLICA MAY BE DOWN"), "{stderr}");
    assert!(stderr.contains("unit failed to start"), "{stderr}");
    assert!(stderr.contains("replica-stopped.json"), "{stderr}");
    let out = s.bkp(&["--json", "status"]);
    assert_exit(&out, 7);
    let v = json(&out);
    assert_eq!(v["ok"], false);
    assert_eq!(v["replica_stopped"]["data_file"], data.to_str().unwrap());
    assert!(marker.exists());
    assert!(!started.exists());

    // Once the start command works, the next run of any kind starts the
    // replica, once, says so, and removes the marker.
    fs::remove_file(&broken).unwrap();
    let out = s.bkp(&["list"]);
    assert_exit(&out, 0);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("killed before its start command ran") && stderr.contains("succeeded"),
        "{stderr}"
    );
    assert_eq!(fs::read_to_string(&started).unwrap(), "started\n");
    assert!(!marker.exists());
    let out = s.bkp(&["list"]);
    assert_exit(&out, 0);
    assert!(!String::from_utf8_lossy(&out.stderr).contains("start command"));
    assert_eq!(fs::read_to_string(&started).unwrap(), "started\n");
}

#[test]
fn a_live_stop_window_is_never_ended_by_another_run() {
    let dir = tempfile::tempdir().unwrap();
    let data = formatted_data_file(dir.path());
    let stopping = dir.path().join("stopping");
    let go_on = dir.path().join("go-on");
    let started = dir.path().join("started");
    // The stop command waits for the test; meanwhile other runs must leave the
    // replica stopped: only the snapshot that stopped it starts it.
    let s = setup(
        &data,
        StoreKind::Local,
        &stop_mode(
            &format!(
                "touch {}; while [ ! -e {} ]; do sleep 0.05; done",
                stopping.display(),
                go_on.display()
            ),
            &format!("echo started >> {}", started.display()),
        ),
    );
    let mut snapshot = std::process::Command::new(common::bkp_bin())
        .args(["--config", s.config.to_str().unwrap(), "snapshot"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while !stopping.exists() {
        assert!(
            std::time::Instant::now() < deadline,
            "the stop command never ran"
        );
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    for args in [&["list"][..], &["status"][..]] {
        let out = s.bkp(args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!stderr.contains("start command"), "{args:?}: {stderr}");
        assert!(
            !started.exists(),
            "{args:?} started the replica inside a live stop window"
        );
    }
    fs::write(&go_on, b"").unwrap();
    assert!(snapshot.wait().unwrap().success());
    assert_eq!(fs::read_to_string(&started).unwrap(), "started\n");
    assert!(!s.path("work/replica-stopped.json").exists());
}

#[test]
fn stop_and_start_commands_never_see_bkp_secrets() {
    let dir = tempfile::tempdir().unwrap();
    let data = formatted_data_file(dir.path());
    let seen = dir.path().join("env-seen");
    let mut s = setup(
        &data,
        StoreKind::Local,
        &(stop_mode(&format!("env > {}", seen.display()), "true")
            + "pass_env = [\"TB_SERVICE_NAME\"]\n"),
    );
    s.env
        .push(("AWS_SECRET_ACCESS_KEY".into(), "s3cr3t-never-shown".into()));
    s.env.push((
        "BKP_SOME_PASSPHRASE".into(),
        "passphrase-never-shown".into(),
    ));
    s.env
        .push(("TB_SERVICE_NAME".into(), "tigerbeetle-0".into()));
    assert_exit(&s.bkp(&["snapshot"]), 0);
    let env = fs::read_to_string(&seen).unwrap();
    assert!(!env.contains("never-shown"), "{env}");
    assert!(env.contains("TB_SERVICE_NAME=tigerbeetle-0"), "{env}");
    assert!(env.lines().any(|l| l.starts_with("PATH=")), "{env}");
}

/// The README's restore runbook, step by step, while `bkp logs` and `bkp
/// snapshot` keep firing as their timers would (the replica stopped and started
/// by the snapshots, traffic in between): `list`, `restore latest --dry-run`,
/// `restore latest` (the newest snapshot, never a log segment), `tigerbeetle
/// inspect integrity`, a replica started on the file; then the point-in-time
/// variant, whose balances are the source's at that moment.
#[test]
fn the_runbook_works_while_every_timer_runs() {
    use std::sync::atomic::{AtomicBool, Ordering};
    let dir = tempfile::tempdir().unwrap();
    let data = formatted_data_file(dir.path());
    let address = format!("127.0.0.1:{}", common::free_port());
    let tb = tool("tigerbeetle");
    let (start, stop, _guard) = replica_scripts(dir.path(), &data, &address);
    repl(&address, "create_accounts id=1 code=10 ledger=700, id=2 code=10 ledger=700, id=3 code=10 ledger=700;");
    let extra = stop_mode(&stop, &start)
        + &format!("addresses = \"{address}\"\nstop_timeout = \"60s\"\nreplica_args = [\"--development\"]\n");
    let s = setup(&data, StoreKind::Local, &extra);

    // The timers: logs every few hundred milliseconds, a snapshot now and then,
    // transfers all along. A logs run meeting the stopped replica may time out
    // (exit 6) or find another run holding the lock (exit 4): a timer runs again.
    let done = AtomicBool::new(false);
    // Set however the scope ends (a failed assertion too), or the logs loop
    // would keep the test waiting for ever.
    struct Done<'a>(&'a AtomicBool);
    impl Drop for Done<'_> {
        fn drop(&mut self) {
            self.0.store(true, Ordering::Relaxed);
        }
    }
    let (logs_ok, snapshots) = std::thread::scope(|scope| {
        let _done = Done(&done);
        let logs = scope.spawn(|| {
            let mut ok = 0;
            while !done.load(Ordering::Relaxed) {
                let out = s.bkp(&["logs"]);
                let code = out.status.code();
                assert!(matches!(code, Some(0 | 4 | 6)), "{out:?}");
                ok += usize::from(code == Some(0));
                std::thread::sleep(std::time::Duration::from_millis(300));
            }
            ok
        });
        let mut snapshots = 0;
        for i in 0..3u32 {
            for j in 0..3u32 {
                let id = 100 + i * 10 + j;
                repl(&address, &format!("create_transfers id={id} debit_account_id={} credit_account_id={} amount={} ledger=700 code=10;", 1 + j % 3, 1 + (j + 1) % 3, id));
            }
            // A snapshot timer that meets a held lock or an unreachable store
            // fires again; anything else is a failure.
            for attempt in 1.. {
                let out = s.bkp(&["snapshot"]);
                match out.status.code() {
                    Some(0) => break,
                    Some(4 | 6) if attempt < 5 => {
                        std::thread::sleep(std::time::Duration::from_secs(1))
                    }
                    _ => panic!("snapshot: {out:?}"),
                }
            }
            snapshots += 1;
            wait_for_port(dir.path(), &address);
        }
        done.store(true, Ordering::Relaxed);
        (logs.join().unwrap(), snapshots)
    });
    assert!(logs_ok >= 1, "no logs run succeeded");
    // Nothing changed since the last snapshot: what `restore latest` must bring.
    let at_last_snapshot = repl(&address, "lookup_accounts id=1, id=2, id=3;");
    repl(&address, "create_transfers id=900 debit_account_id=3 credit_account_id=1 amount=9 ledger=700 code=10;");
    assert_exit(&s.bkp(&["logs"]), 0);
    let at_time = time::OffsetDateTime::now_utc();
    let want = repl(&address, "lookup_accounts id=1, id=2, id=3;");
    std::thread::sleep(std::time::Duration::from_millis(50));
    repl(&address, "create_transfers id=901 debit_account_id=1 credit_account_id=2 amount=5 ledger=700 code=10;");
    assert_exit(&s.bkp(&["logs"]), 0);

    // 1. list
    let out = s.bkp(&["--json", "list", "--kind", "tigerbeetle"]);
    assert_exit(&out, 0);
    let listed = json(&out);
    let snaps: Vec<&str> = listed["backups"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|b| b["operation"] == "snapshot")
        .map(|b| b["id"].as_str().unwrap())
        .collect();
    assert_eq!(snaps.len(), snapshots, "{listed:#}");
    // 2. restore latest: the newest snapshot, though log segments are newer.
    let target = s.path("tigerbeetle.restored");
    let t = target.to_str().unwrap();
    let plan = s.bkp(&["restore", "latest", "--dry-run", "--target", t]);
    assert_exit(&plan, 0);
    let said = String::from_utf8_lossy(&plan.stdout);
    let newest = snaps.last().unwrap();
    assert!(
        said.contains("tigerbeetle snapshot") && said.contains(newest),
        "not snapshot {newest}: {said}"
    );
    let restore = s.bkp(&["restore", "latest", "--target", t]);
    assert_exit(&restore, 0);
    // 3. tigerbeetle inspect integrity. A snapshot whose stop met the replica
    // mid-write is stored as taken, and the restore says so: as the runbook
    // says, the file passes once a replica has started on it. Any other file
    // must pass at once.
    let restored = target.join("0_0.tigerbeetle");
    let inspect = || {
        std::process::Command::new(&tb)
            .args(["inspect", "integrity"])
            .arg(&restored)
            .output()
            .unwrap()
    };
    let first = inspect();
    if !first.status.success() {
        let said = String::from_utf8_lossy(&restore.stderr);
        assert!(
            said.contains("stopped mid-write"),
            "inspect integrity failed, and the restore did not say the snapshot holds torn writes: {first:?}; the restore said: {said}"
        );
        let mut replica = TigerBeetle::start_on(&restored);
        assert_eq!(
            repl(&replica.address(), "lookup_accounts id=1, id=2, id=3;"),
            at_last_snapshot
        );
        replica.stop();
        drop(replica);
        let again = inspect();
        assert!(again.status.success(), "after a replica's start: {again:?}");
    }
    // 4. a replica on the restored file serves the newest snapshot's balances.
    let replica = TigerBeetle::start_on(&restored);
    assert_eq!(
        repl(&replica.address(), "lookup_accounts id=1, id=2, id=3;"),
        at_last_snapshot
    );
    drop(replica);

    // Point in time: the balances of that moment exactly.
    let at = at_time
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap();
    let target = s.path("tigerbeetle.at");
    assert_exit(
        &s.bkp(&["restore", "--at", &at, "--target", target.to_str().unwrap()]),
        0,
    );
    let replica = TigerBeetle::start_on(&target.join("0_0.tigerbeetle"));
    assert_eq!(
        repl(&replica.address(), "lookup_accounts id=1, id=2, id=3;"),
        want
    );
}
