//! Operator conventions, through the real binary: `bkp cat` (break glass),
//! the countdown before `restore --force` replaces a target from a terminal,
//! and debug output (`-vvv`, `BKP_LOG`) that never shows a secret, against the
//! real SeaweedFS server.

mod common;

use std::fs;
use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{
    assert_exit, bkp_bin, formatted_data_file, json, reseal, setup, walk, Setup, StoreKind,
};

/// A snapshot of a fresh data file; returns the setup, the backup id, and its
/// one object's key and content digest.
fn snapshot(dir: &Path, store: StoreKind) -> (Setup, String, String, String) {
    let data = formatted_data_file(dir);
    let s = setup(&data, store, common::ARCHIVE);
    let out = s.bkp(&["--json", "snapshot"]);
    assert_exit(&out, 0);
    let m = json(&out)["manifest"].clone();
    let id = m["id"].as_str().unwrap().to_string();
    let key = m["objects"][0]["key"].as_str().unwrap().to_string();
    let content = m["objects"][0]["content_sha256"]
        .as_str()
        .unwrap()
        .to_string();
    (s, id, key, content)
}

fn sha256(bytes: &[u8]) -> String {
    bkp::stages::hash::digest_reader(bytes).unwrap().sha256
}

fn manifest_file(s: &Setup) -> std::path::PathBuf {
    walk(&s.path("store/manifests"))
        .into_iter()
        .find(|p| p.is_file())
        .expect("a manifest")
}

#[test]
fn cat_writes_the_verified_tar_stream_and_refuses_what_does_not_verify() {
    let dir = tempfile::tempdir().unwrap();
    let (s, id, key, content) = snapshot(dir.path(), StoreKind::Local);

    // The tar stream the snapshot read: its digest is the manifest's, and it
    // holds the data file, byte for byte.
    let out = s.bkp(&["cat", &key]);
    assert_exit(&out, 0);
    assert_eq!(sha256(&out.stdout), content);
    let mut archive = tar::Archive::new(&out.stdout[..]);
    let mut names = Vec::new();
    for entry in archive.entries().unwrap() {
        let mut entry = entry.unwrap();
        let name = entry.path().unwrap().display().to_string();
        let mut bytes = Vec::new();
        entry.read_to_end(&mut bytes).unwrap();
        assert_eq!(bytes, fs::read(dir.path().join(&name)).unwrap(), "{name}");
        names.push(name);
    }
    assert_eq!(names, ["0_0.tigerbeetle"]);

    // --compressed: the decrypted zstd frame, which decompresses to the same.
    let out = s.bkp(&["cat", "--compressed", &key]);
    assert_exit(&out, 0);
    assert_eq!(sha256(&zstd::decode_all(&out.stdout[..]).unwrap()), content);

    // An object no manifest names: not found.
    let out = s.bkp(&["cat", "tigerbeetle/2026/01/01/nothing.tar.zst"]);
    assert_exit(&out, 9);
    let out = s.bkp(&[
        "cat",
        &key.replace(&id, "0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b"),
    ]);
    assert_exit(&out, 9);
    assert!(out.stdout.is_empty());

    // A manifest whose content digest is wrong (but sealed): everything was
    // written before the end could be checked, and the exit code says so.
    let mpath = manifest_file(&s);
    let original = fs::read(&mpath).unwrap();
    let mut v: serde_json::Value = serde_json::from_slice(&original).unwrap();
    v["objects"][0]["content_sha256"] = "0".repeat(64).into();
    fs::write(&mpath, serde_json::to_vec(&v).unwrap()).unwrap();
    reseal(&mpath);
    let out = s.bkp(&["cat", &key]);
    assert_exit(&out, 5);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("NOT to be trusted"), "{stderr}");

    // An unsealed manifest is refused as `show` refuses it, and --trust accepts it.
    let mut v: serde_json::Value = serde_json::from_slice(&original).unwrap();
    v.as_object_mut().unwrap().remove("seal");
    fs::write(&mpath, serde_json::to_vec(&v).unwrap()).unwrap();
    let shown = s.bkp(&["show", &id]);
    let out = s.bkp(&["cat", &key]);
    assert_ne!(out.status.code(), Some(0));
    assert_eq!(out.status.code(), shown.status.code());
    assert!(out.stdout.is_empty());
    let out = s.bkp(&["cat", "--trust", &id, &key]);
    assert_exit(&out, 0);
    assert_eq!(sha256(&out.stdout), content);
    fs::write(&mpath, &original).unwrap();

    // A flipped byte in the stored object: nothing is written, exit 5.
    let obj = s.path(&format!("store/{key}"));
    let mut bytes = fs::read(&obj).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x01;
    fs::write(&obj, &bytes).unwrap();
    let out = s.bkp(&["cat", &key]);
    assert_exit(&out, 5);
    assert!(out.stdout.is_empty(), "unverified bytes were written");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("failed verification"), "{stderr}");
}

/// Runs `bkp ARGS` on a terminal (util-linux `script`), with stdout and stderr
/// both going to the returned output. `interrupt_on` sends SIGINT to bkp once
/// its output contains that text.
fn on_terminal(s: &Setup, args: &[&str], interrupt_on: Option<&str>) -> (Option<i32>, String) {
    let mut line = format!(
        "exec {} --config {}",
        bkp_bin().display(),
        s.config.display()
    );
    for a in args {
        line.push(' ');
        line.push_str(a);
    }
    let mut child = Command::new("script")
        .args(["-qec", &line, "/dev/null"])
        .envs(s.env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("util-linux script");
    let mut stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n) = stdout.read(&mut buf) {
            if n == 0 || tx.send(buf[..n].to_vec()).is_err() {
                break;
            }
        }
    });
    let mut seen = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut signalled = false;
    loop {
        match rx.recv_timeout(Duration::from_millis(100)) {
            Ok(bytes) => seen.extend(bytes),
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => break,
            Err(_) => {}
        }
        let text = String::from_utf8_lossy(&seen).into_owned();
        if let Some(want) = interrupt_on {
            if !signalled && text.contains(want) {
                // `script` runs the command (exec'd into bkp) as its child.
                let pid = child.id();
                let children =
                    fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).unwrap();
                let bkp: i32 = children.split_whitespace().next().unwrap().parse().unwrap();
                // SAFETY: kill(2) on the pid of our own grandchild, still running.
                assert_eq!(unsafe { libc::kill(bkp, libc::SIGINT) }, 0);
                signalled = true;
            }
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("still running after 120 s: {text}");
        }
    }
    let status = child.wait().unwrap();
    (status.code(), String::from_utf8_lossy(&seen).into_owned())
}

#[test]
fn force_counts_down_on_a_terminal_and_ctrl_c_cancels() {
    let dir = tempfile::tempdir().unwrap();
    let (s, _, _, _) = snapshot(dir.path(), StoreKind::Local);
    let target = s.path("target");
    let t = target.to_str().unwrap();
    let fill = || {
        let _ = fs::remove_dir_all(&target);
        fs::create_dir(&target).unwrap();
        fs::write(target.join("old"), b"old").unwrap();
    };
    let countdown = "Ctrl-C cancels";

    // SIGINT during the countdown: exit 130, the target as it was.
    fill();
    let (code, text) = on_terminal(
        &s,
        &["restore", "latest", "--force", "--target", t],
        Some(countdown),
    );
    assert_eq!(code, Some(130), "{text}");
    assert!(text.contains("was not touched"), "{text}");
    assert_eq!(fs::read(target.join("old")).unwrap(), b"old");
    assert!(!target.join("0_0.tigerbeetle").exists());

    // Left alone, the countdown runs out and the restore replaces the target.
    let clock = Instant::now();
    let (code, text) = on_terminal(&s, &["restore", "latest", "--force", "--target", t], None);
    assert_eq!(code, Some(0), "{text}");
    assert!(text.contains(countdown), "{text}");
    assert!(clock.elapsed() >= Duration::from_secs(5));
    assert!(!target.join("old").exists());

    // --yes: no countdown.
    fill();
    let (code, text) = on_terminal(
        &s,
        &["restore", "latest", "--force", "--yes", "--target", t],
        None,
    );
    assert_eq!(code, Some(0), "{text}");
    assert!(!text.contains(countdown), "{text}");
    assert!(target.join("0_0.tigerbeetle").exists());

    // No terminal (cron, CI): --force alone, no countdown.
    fill();
    let out = s.bkp(&["restore", "latest", "--force", "--target", t]);
    assert_exit(&out, 0);
    assert!(!String::from_utf8_lossy(&out.stderr).contains(countdown));
    assert!(!target.join("old").exists());

    // Binary data is not written to a terminal without --force.
    let key = json(&s.bkp(&["--json", "list"]))["backups"][0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let object = json(&s.bkp(&["--json", "show", &key]))["manifest"]["objects"][0]["key"]
        .as_str()
        .unwrap()
        .to_string();
    let (code, text) = on_terminal(&s, &["cat", &object], None);
    assert_eq!(code, Some(3), "{text}");
    assert!(text.contains("standard output is a terminal"), "{text}");
}

#[test]
fn the_most_verbose_output_never_shows_a_secret() {
    let dir = tempfile::tempdir().unwrap();
    let (s, id, key, _) = snapshot(dir.path(), StoreKind::S3);
    let secret = s
        .env
        .iter()
        .find(|(k, _)| k == "AWS_SECRET_ACCESS_KEY")
        .unwrap()
        .1
        .clone();
    let token = "SESSION-TOKEN-MARKER-5c1e0b7d";
    // The encryption key (32 bytes of 7) as hex and as base64.
    let key_hex = "07".repeat(32);
    let key_b64 = "BwcHBwcHBwcH";
    let markers = [secret.as_str(), token, key_hex.as_str(), key_b64];
    let commands = [
        vec!["-vvv", "snapshot"],
        vec!["-vvv", "list"],
        vec!["-vvv", "show", id.as_str()],
        vec!["-vvv", "cat", key.as_str()],
        vec!["-vvv", "--json", "verify"],
    ];
    let check = |what: &str, out: &std::process::Output| {
        let stderr = String::from_utf8_lossy(&out.stderr);
        for text in [String::from_utf8_lossy(&out.stdout), stderr.clone()] {
            for marker in markers {
                assert!(!text.contains(marker), "{what} printed {marker:?}");
            }
        }
        assert!(
            stderr.contains("aws_smithy_runtime"),
            "{what}: no SDK output"
        );
        assert!(stderr.contains("TRACE"), "{what}: no trace output");
    };

    // With the server's credentials: every command works, at trace level.
    for args in &commands {
        let out = s.bkp(args);
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        check(&args.join(" "), &out);
    }
    let mut by_env = s.env.clone();
    by_env.push(("BKP_LOG".into(), "trace".into()));
    let out = common::run_bkp(&["--config", s.config.to_str().unwrap(), "list"], &by_env);
    assert_exit(&out, 0);
    check("BKP_LOG=trace list", &out);

    // With a session token too (signed into every request, which SeaweedFS
    // then refuses): the token is not printed either.
    let mut with_token = s.env.clone();
    with_token.push(("AWS_SESSION_TOKEN".into(), token.into()));
    for args in &commands {
        let mut all = vec!["--config", s.config.to_str().unwrap()];
        all.extend_from_slice(args);
        let out = common::run_bkp(&all, &with_token);
        check(&format!("{args:?} with a session token"), &out);
        // The signer's own trace (what it signed) is shown, redacted.
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains("x-amz-security-token"),
            "{args:?}: {stderr}"
        );
        assert!(stderr.contains("canonical_request"), "{args:?}: {stderr}");
    }
}

#[test]
fn cat_writes_a_replicated_file_from_the_set_that_names_it() {
    let s3 = common::shared_s3();
    let bucket = s3.new_bucket("cat");
    let dir = tempfile::tempdir().unwrap();
    let cold = dir.path().join("cold");
    fs::create_dir_all(&cold).unwrap();
    let db = duckdb::Connection::open_in_memory().unwrap();
    let parquet = |name: &str, seed: u64| {
        let path = cold.join(name);
        db.execute_batch(&format!(
            "COPY (SELECT {seed} AS seed, i FROM range(50) t(i)) TO '{}' (FORMAT parquet)",
            path.display()
        ))
        .unwrap();
        fs::read(path).unwrap()
    };
    let first = parquet("a.parquet", 1);
    common::write_key(dir.path().join("key"), [7u8; 32]);
    let cfg = dir.path().join("bkp.toml");
    fs::write(
        &cfg,
        format!(
            "work_dir = \"work\"\n[store]\ntype = \"s3\"\nbucket = \"{bucket}\"\nprefix = \"bkp\"\nendpoint = \"{}\"\n\
             [encryption]\nkey_file = \"key\"\n[replicate]\nsource = \"cold\"\n",
            s3.endpoint
        ),
    )
    .unwrap();
    let bkp = |args: &[&str]| {
        let mut all = vec!["--config", cfg.to_str().unwrap()];
        all.extend_from_slice(args);
        common::run_bkp(&all, &s3.env())
    };
    let out = bkp(&["--json", "replicate"]);
    assert_exit(&out, 0);
    let object = json(&out)["manifest"]["source"]["set"][0]["object"]
        .as_str()
        .unwrap()
        .to_string();
    // A second run stores only the new file and names the first one's object
    // (stored by the first run) in its set.
    parquet("b.parquet", 2);
    assert_exit(&bkp(&["replicate"]), 0);

    let out = bkp(&["cat", &object]);
    assert_exit(&out, 0);
    assert_eq!(out.stdout, first);
}

#[test]
fn quiet_conflicts_with_any_count_of_verbose() {
    for args in [["-q", "-v"], ["-vv", "--quiet"], ["--verbose", "-q"]] {
        let out = common::run_bkp(&[args[0], args[1], "list"], &[]);
        assert_exit(&out, 2);
        assert!(String::from_utf8_lossy(&out.stderr).contains("cannot be used with"));
    }
}

/// An S3 store with no credentials anywhere is a config error (exit 3, so a
/// timer's alarm says "config", not "network"), said in one line of bkp's
/// words; the SDK's whole chain only with `-v`. An unreachable endpoint stays
/// transient (exit 6), also in one line.
#[test]
fn s3_errors_are_one_line_in_the_right_class() {
    let dir = tempfile::tempdir().unwrap();
    let (s, _, _, _) = snapshot(dir.path(), StoreKind::S3);
    let no_credentials: Vec<(String, String)> = s
        .env
        .iter()
        .filter(|(k, _)| !k.starts_with("AWS_ACCESS_KEY_ID") && !k.starts_with("AWS_SECRET"))
        .cloned()
        .collect();
    let run = |args: &[&str], env: &[(String, String)]| {
        let mut all = vec!["--config", s.config.to_str().unwrap()];
        all.extend_from_slice(args);
        common::run_bkp(&all, env)
    };
    let out = run(&["list"], &no_credentials);
    assert_exit(&out, 3);
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(stderr.contains("no S3 credentials"), "{stderr}");
    assert!(stderr.contains("AWS_ACCESS_KEY_ID"), "{stderr}");
    assert!(
        stderr.lines().count() == 1 && stderr.len() < 700,
        "not one short line: {stderr}"
    );
    for debug in ["DispatchFailure", "CredentialsNotLoaded", " { "] {
        assert!(!stderr.contains(debug), "{debug:?} in {stderr}");
    }
    // `-v` adds the detail.
    let out = run(&["-v", "list"], &no_credentials);
    assert_exit(&out, 3);
    let verbose = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(verbose.len() > stderr.len(), "{verbose}");

    // Nothing listens at the endpoint: transient, one line.
    let config = std::fs::read_to_string(&s.config).unwrap();
    let endpoint = config
        .lines()
        .find_map(|l| l.strip_prefix("endpoint = \""))
        .unwrap()
        .trim_end_matches('"')
        .to_string();
    let closed = format!("http://127.0.0.1:{}", common::free_port());
    std::fs::write(&s.config, config.replace(&endpoint, &closed)).unwrap();
    let mut once = s.env.clone();
    once.push(("AWS_MAX_ATTEMPTS".into(), "1".into()));
    let out = run(&["list"], &once);
    assert_exit(&out, 6);
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(
        stderr.lines().count() == 1 && stderr.len() < 700,
        "not one short line: {stderr}"
    );
    assert!(!stderr.contains("DispatchFailure"), "{stderr}");
}

/// A ledger with nothing listening is known at once: the backup, a refused
/// restore, a good restore and `check` each finish without waiting out
/// `ledger.timeout` (here an hour: a run that waited for it would be killed
/// by the harness, which allows each run 300 s), and the records wait in the
/// spool for the next run.
#[test]
fn a_ledger_that_refuses_connections_costs_no_timeout() {
    let d = tempfile::tempdir().unwrap();
    let data = formatted_data_file(d.path());
    let closed = common::free_port();
    let s = setup(
        &data,
        StoreKind::Local,
        &format!("[ledger]\naddresses = \"127.0.0.1:{closed}\"\ntimeout = \"3600s\"\n[metrics]\ndir = \"metrics\"\n"),
    );
    std::fs::create_dir_all(s.path("metrics")).unwrap();
    let out = s.bkp(&["snapshot"]);
    assert_exit(&out, 0);
    let target = s.path("target");
    std::fs::create_dir_all(&target).unwrap();
    std::fs::write(target.join("keep"), b"x").unwrap();
    let out = s.bkp(&["restore", "latest", "--target", target.to_str().unwrap()]);
    assert_exit(&out, 8);
    let fresh = s.path("fresh");
    let out = s.bkp(&["restore", "latest", "--target", fresh.to_str().unwrap()]);
    assert_exit(&out, 0);
    let out = s.bkp(&["check"]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("accepts no connection")
            || String::from_utf8_lossy(&out.stderr).contains("accepts no connection"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // A verify that could not read the ledger exits 6, and its metrics say
    // it did not succeed.
    let out = s.bkp(&["verify"]);
    assert_exit(&out, 6);
    let metrics = std::fs::read_to_string(s.path("metrics/bkp_verify_tigerbeetle.prom")).unwrap();
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("bkp_last_run_success") && l.ends_with(" 0")),
        "{metrics}"
    );
    let spooled = walk(&s.path("work/ledger-spool"));
    assert!(spooled.len() >= 2, "records not spooled: {spooled:?}");
}
