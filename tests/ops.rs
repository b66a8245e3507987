//! Operating bkp, through the real binary: `bkp status` for fresh, stale and
//! never-run schedules against a real S3 server (with a fixed `now`), the
//! Prometheus metrics file after a success and after a failure (checked by
//! `promtool`), and plain, control-character-free logs when not on a terminal.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use common::{assert_exit, run_bkp};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

struct Setup {
    dir: tempfile::TempDir,
    config: PathBuf,
    env: Vec<(String, String)>,
}

impl Setup {
    fn bkp_env(&self, args: &[&str], extra_env: &[(&str, &str)]) -> Output {
        let mut all = vec!["--config", self.config.to_str().unwrap()];
        all.extend_from_slice(args);
        let mut env = self.env.clone();
        env.extend(
            extra_env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string())),
        );
        run_bkp(&all, &env)
    }
    fn bkp(&self, args: &[&str]) -> Output {
        self.bkp_env(args, &[])
    }
    fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }
    fn write_config(&self, store: &str, extra: &str) {
        fs::write(
            &self.config,
            format!(
                "work_dir = \"work\"\n{store}[encryption]\nkey_file = \"key\"\n[tigerbeetle]\ndata_file = \"data/0_0.tigerbeetle\"\n{extra}"
            ),
        )
        .unwrap();
    }
}

/// A config whose data file is a small plain file (no replica needed: the offline
/// mode reads a file no process holds).
fn setup(s3: bool, extra: &str) -> (Setup, String) {
    let dir = tempfile::tempdir().unwrap();
    common::write_key(dir.path().join("key"), [7u8; 32]);
    fs::create_dir(dir.path().join("data")).unwrap();
    let data: Vec<u8> = (0..256 * 1024u32).map(|i| (i * 7 % 251) as u8).collect();
    fs::write(dir.path().join("data/0_0.tigerbeetle"), data).unwrap();
    let (store, env) = if s3 {
        let s3 = common::shared_s3();
        let bucket = s3.new_bucket("status");
        (
            format!(
                "[store]\ntype = \"s3\"\nbucket = \"{bucket}\"\nprefix = \"ops\"\nendpoint = \"{}\"\nregion = \"{}\"\n",
                s3.endpoint, s3.region
            ),
            s3.env(),
        )
    } else {
        (
            "[store]\ntype = \"local\"\npath = \"store\"\n".to_string(),
            vec![],
        )
    };
    let s = Setup {
        config: dir.path().join("bkp.toml"),
        dir,
        env,
    };
    s.write_config(&store, extra);
    (s, store)
}

fn json(out: &Output) -> serde_json::Value {
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stdout)))
}

fn schedule<'a>(v: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    v["schedules"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["schedule"] == name)
        .unwrap_or_else(|| panic!("no {name} in {v}"))
}

fn rfc3339(t: OffsetDateTime) -> String {
    t.format(&Rfc3339).unwrap()
}

#[test]
fn status_reports_fresh_stale_and_never_run_schedules() {
    let (s, store) = setup(true, "");

    // Never ran: exit 11, in JSON and in the table.
    let out = s.bkp(&["--json", "status"]);
    assert_exit(&out, 11);
    let v = json(&out);
    assert_eq!(v["ok"], false);
    let snap = schedule(&v, "snapshot");
    assert_eq!(snap["state"], "never");
    assert!(snap["newest"].is_null());
    assert_eq!(snap["rpo_seconds"], 6 * 3600);
    assert_eq!(v["schedules"].as_array().unwrap().len(), 1, "{v}");
    let out = s.bkp(&["status"]);
    assert_exit(&out, 11);
    assert!(String::from_utf8_lossy(&out.stdout).contains("NEVER RAN"));
    assert!(String::from_utf8_lossy(&out.stderr).contains("bkp snapshot"));

    // One snapshot: fresh.
    let out = s.bkp(&["snapshot"]);
    assert_exit(&out, 0);
    let id = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let out = s.bkp(&["--json", "status"]);
    assert_exit(&out, 0);
    let v = json(&out);
    let snap = schedule(&v, "snapshot");
    assert_eq!(snap["state"], "ok");
    assert_eq!(snap["newest"]["id"], id.as_str());
    let finished =
        OffsetDateTime::parse(snap["newest"]["finished_at"].as_str().unwrap(), &Rfc3339).unwrap();
    assert_eq!(
        OffsetDateTime::parse(snap["next_due"].as_str().unwrap(), &Rfc3339).unwrap(),
        finished + time::Duration::hours(6)
    );

    // A fixed "now": within RPO plus the default grace (10%), then past it.
    let at = |d: time::Duration| rfc3339(finished + d);
    let now = at(time::Duration::minutes(6 * 60 + 30));
    let out = s.bkp_env(&["--json", "status"], &[("BKP_NOW", &now)]);
    assert_exit(&out, 0);
    assert_eq!(
        schedule(&json(&out), "snapshot")["age_seconds"],
        6 * 3600 + 1800
    );
    let now = at(time::Duration::hours(7));
    let out = s.bkp_env(&["--json", "status"], &[("BKP_NOW", &now)]);
    assert_exit(&out, 11);
    let v = json(&out);
    assert_eq!(v["now"], now.as_str());
    let snap = schedule(&v, "snapshot");
    assert_eq!(snap["state"], "breached");
    assert_eq!(snap["age_seconds"], 7 * 3600);
    let out = s.bkp_env(&["status"], &[("BKP_NOW", &now)]);
    assert_exit(&out, 11);
    assert!(String::from_utf8_lossy(&out.stdout).contains("BREACHED"));
    assert!(String::from_utf8_lossy(&out.stderr).contains("7h old, RPO 6h"));

    // A configured RPO, and an explicitly watched schedule that never ran.
    s.write_config(
        &store,
        "[freshness]\nwatch = [\"logs\"]\n[freshness.rpo]\nsnapshot = \"12h\"\n",
    );
    let out = s.bkp_env(&["--json", "status"], &[("BKP_NOW", &now)]);
    assert_exit(&out, 11);
    let v = json(&out);
    assert_eq!(schedule(&v, "snapshot")["state"], "ok");
    assert_eq!(schedule(&v, "logs")["state"], "never");
    s.write_config(&store, "[freshness.rpo]\nsnapshot = \"12h\"\n");
    let out = s.bkp_env(&["status"], &[("BKP_NOW", &now)]);
    assert_exit(&out, 0);

    // A bad BKP_NOW is named.
    let out = s.bkp_env(&["status"], &[("BKP_NOW", "yesterday")]);
    assert_exit(&out, 3);
    assert!(String::from_utf8_lossy(&out.stderr).contains("BKP_NOW"));
}

/// `promtool check metrics` on a file; fails (never skips) without promtool.
fn promtool_check(path: &Path) {
    let promtool = ["/usr/bin/promtool", "/usr/local/bin/promtool"]
        .into_iter()
        .map(PathBuf::from)
        .find(|p| p.is_file())
        .or_else(|| {
            let out = Command::new("sh")
                .args(["-c", "command -v promtool"])
                .output()
                .ok()?;
            let p = String::from_utf8_lossy(&out.stdout).trim().to_string();
            (!p.is_empty()).then(|| PathBuf::from(p))
        })
        .unwrap_or_else(|| {
            panic!("promtool is missing: run scripts/bootstrap (it installs Debian's `prometheus` package, which has promtool)")
        });
    let out = Command::new(promtool)
        .args(["check", "metrics"])
        .stdin(fs::File::open(path).unwrap())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics {} failed:\n{}{}\n--- file ---\n{}",
        path.display(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        fs::read_to_string(path).unwrap()
    );
}

fn metric(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(&format!("{name}{{")))
        .and_then(|l| l.rsplit_once(' '))
        .map(|(_, v)| v.parse().unwrap())
}

#[test]
fn metrics_after_success_and_failure_pass_promtool() {
    let (s, store) = setup(false, "[metrics]\ndir = \"metrics\"\n");
    fs::create_dir(s.path("metrics")).unwrap();
    let file = s.path("metrics/bkp_snapshot_full.prom");

    let out = s.bkp(&["--verbose", "snapshot"]);
    assert_exit(&out, 0);
    // Not a terminal: plain lines, no escape sequences or carriage returns.
    assert!(!out.stderr.is_empty());
    assert!(
        !out.stderr.iter().any(|b| *b == 0x1b || *b == b'\r'),
        "control characters in: {:?}",
        String::from_utf8_lossy(&out.stderr)
    );
    // And a restore, the other long transfer.
    let target = s.path("restored");
    let out = s.bkp(&[
        "--verbose",
        "restore",
        "latest",
        "--target",
        target.to_str().unwrap(),
    ]);
    assert_exit(&out, 0);
    assert!(!out.stderr.is_empty());
    assert!(
        !out.stderr.iter().any(|b| *b == 0x1b || *b == b'\r'),
        "control characters in: {:?}",
        String::from_utf8_lossy(&out.stderr)
    );
    promtool_check(&file);
    let text = fs::read_to_string(&file).unwrap();
    assert_eq!(metric(&text, "bkp_last_run_success"), Some(1.0));
    assert_eq!(metric(&text, "bkp_last_run_objects"), Some(1.0));
    let listed = json(&s.bkp(&["--json", "list"]));
    let stored = listed["backups"][0]["bytes"].as_f64().unwrap();
    assert_eq!(metric(&text, "bkp_last_run_bytes"), Some(stored));
    let success = metric(&text, "bkp_last_success_timestamp_seconds").unwrap();
    assert_eq!(
        Some(success),
        metric(&text, "bkp_last_run_timestamp_seconds")
    );

    // A failing run (the data file is gone): the file says so, keeps the last
    // success, and still passes promtool.
    fs::remove_file(s.path("data/0_0.tigerbeetle")).unwrap();
    let out = s.bkp(&["snapshot"]);
    assert_exit(&out, 3);
    promtool_check(&file);
    let text = fs::read_to_string(&file).unwrap();
    assert_eq!(metric(&text, "bkp_last_run_success"), Some(0.0));
    assert_eq!(metric(&text, "bkp_last_run_bytes"), Some(0.0));
    assert_eq!(
        metric(&text, "bkp_last_success_timestamp_seconds"),
        Some(success)
    );
    assert!(metric(&text, "bkp_last_run_timestamp_seconds").unwrap() > success);

    // BKP_METRICS_DIR overrides the file; nothing but .prom files is left behind.
    fs::create_dir(s.path("other")).unwrap();
    s.write_config(&store, "");
    let other = s.path("other");
    let out = s.bkp_env(
        &["snapshot"],
        &[("BKP_METRICS_DIR", other.to_str().unwrap())],
    );
    assert_exit(&out, 3);
    let names: Vec<String> = fs::read_dir(&other)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, vec!["bkp_snapshot_full.prom".to_string()]);
    promtool_check(&other.join("bkp_snapshot_full.prom"));
}

#[test]
fn a_run_killed_with_sigkill_frees_its_lock_at_once() {
    let (s, store) = setup(false, "");
    // A stop command that takes its time keeps the first run busy under its lock,
    // with no replica needed; it records its pid so the test can end it.
    let pidfile = s.path("stop.pid");
    s.write_config(
        &store,
        &format!(
            "snapshot_mode = \"stop\"\nstop_command = [\"sh\", \"-c\", \"echo $$ > {}; exec sleep 120\"]\nstart_command = [\"true\"]\nstop_timeout = \"300s\"\n",
            pidfile.display()
        ),
    );
    let mut first = common::bkp_command(&s.env)
        .args(["--config", s.config.to_str().unwrap(), "snapshot"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while fs::read_to_string(&pidfile).map_or(true, |p| p.trim().is_empty()) {
        assert!(
            first.try_wait().unwrap().is_none(),
            "the first run ended early"
        );
        assert!(
            std::time::Instant::now() < deadline,
            "the stop command never ran"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let sleeper = fs::read_to_string(&pidfile).unwrap().trim().to_string();

    // Busy: a second run exits 4 at once.
    s.write_config(&store, "");
    let out = s.bkp(&["snapshot"]);
    assert_exit(&out, 4);

    // kill -9: the lock is free at once, even though the first run's child (the
    // stop command) still runs: the lock is not inherited by the commands bkp starts.
    first.kill().unwrap();
    first.wait().unwrap();
    let out = s.bkp(&["snapshot"]);
    let _ = Command::new("kill").arg(&sleeper).status();
    assert_exit(&out, 0);
}

/// Runs `bkp` with stderr going to a file, with `JOURNAL_STREAM` naming that
/// file (as systemd names the journal's socket) when `journal`.
fn stderr_of_a_failing_run(journal: bool) -> String {
    use std::os::unix::fs::MetadataExt;
    let d = tempfile::tempdir().unwrap();
    let log = d.path().join("stderr");
    let f = std::fs::File::create(&log).unwrap();
    let m = f.metadata().unwrap();
    let mut cmd = std::process::Command::new(common::bkp_bin());
    cmd.args([
        "--config",
        d.path().join("missing.toml").to_str().unwrap(),
        "list",
    ])
    .stderr(f)
    .env_remove("JOURNAL_STREAM");
    if journal {
        cmd.env("JOURNAL_STREAM", format!("{}:{}", m.dev(), m.ino()));
    }
    let status = cmd.status().unwrap();
    assert_eq!(status.code(), Some(3));
    std::fs::read_to_string(&log).unwrap()
}

#[test]
fn lines_carry_syslog_priorities_only_when_stderr_is_the_journal() {
    let plain = stderr_of_a_failing_run(false);
    assert!(plain.starts_with("bkp: error: "), "{plain}");
    let journal = stderr_of_a_failing_run(true);
    assert!(journal.starts_with("<3>bkp: error: "), "{journal}");
    assert!(journal.lines().all(|l| l.starts_with('<')), "{journal}");
}

#[test]
fn under_json_an_error_is_one_json_object_with_its_exit_code() {
    let d = tempfile::tempdir().unwrap();
    let missing = d.path().join("missing.toml");
    let out = run_bkp(
        &["--json", "--config", missing.to_str().unwrap(), "list"],
        &[],
    );
    assert_exit(&out, 3);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let v: serde_json::Value = serde_json::from_str(stderr.trim())
        .unwrap_or_else(|e| panic!("not one JSON object ({e}): {stderr}"));
    assert_eq!(v["schema"], "bkp.error/1");
    assert_eq!(v["exit_code"], 3);
    assert_eq!(v["class"], "config");
    assert!(
        v["message"].as_str().unwrap().contains("missing.toml"),
        "{v}"
    );
    assert!(out.stdout.is_empty());
}

#[test]
fn cleanup_writes_what_the_store_holds_and_promtool_takes_it() {
    let (s, _store) = setup(false, "[metrics]\ndir = \"metrics\"\n");
    fs::create_dir(s.path("metrics")).unwrap();
    assert_exit(&s.bkp(&["snapshot"]), 0);
    assert_exit(&s.bkp(&["cleanup"]), 0);
    let file = s.path("metrics/bkp_stored.prom");
    promtool_check(&file);
    let text = fs::read_to_string(&file).unwrap();
    let listed = json(&s.bkp(&["--json", "list"]));
    let stored = listed["backups"][0]["bytes"].as_f64().unwrap();
    assert!(
        text.contains(&format!(
            "bkp_stored_bytes{{store=\"primary\",kind=\"tigerbeetle\"}} {stored}"
        )),
        "{text}"
    );
    assert!(
        text.contains("bkp_stored_backups{store=\"primary\"} 1"),
        "{text}"
    );
    assert!(text.contains("class=\"local disk\""), "{text}");
}

/// Two clusters backing up into one store: each config's `status` judges the
/// backups of its own cluster (`[tigerbeetle] cluster_id`), so one cluster's
/// stopped timer is not hidden by the other's snapshots. A manifest that names
/// no cluster (an older release's) counts for every cluster.
#[test]
fn status_judges_the_configured_clusters_backups_not_another_clusters() {
    let (s, _) = setup(
        false,
        "addresses = \"127.0.0.1:1\"\ncluster_id = 1\n[freshness]\nignore = [\"logs\"]\n",
    );
    let out = s.bkp(&["--json", "snapshot"]);
    assert_exit(&out, 0);
    let id = json(&out)["manifest"]["id"].as_str().unwrap().to_string();
    let key = s.path(&format!("store/manifests/tigerbeetle/{id}.json"));
    let manifest: serde_json::Value = serde_json::from_slice(&fs::read(&key).unwrap()).unwrap();
    assert_eq!(manifest["source"]["cluster_id"], "1", "{manifest}");
    let out = s.bkp(&["--json", "status"]);
    assert_exit(&out, 0);
    assert_eq!(
        schedule(&json(&out), "snapshot")["newest"]["id"],
        id.as_str()
    );

    // The same store's only snapshot is now another cluster's.
    let of_cluster = |cluster: Option<serde_json::Value>| {
        let mut m = manifest.clone();
        let source = m["source"].as_object_mut().unwrap();
        match cluster {
            Some(c) => source.insert("cluster_id".into(), c),
            None => source.remove("cluster_id"),
        };
        fs::write(&key, serde_json::to_vec(&m).unwrap()).unwrap();
        common::reseal(&key);
    };
    of_cluster(Some("2".into()));
    let out = s.bkp(&["--json", "status"]);
    assert_exit(&out, 11);
    let snap = schedule(&json(&out), "snapshot").clone();
    assert_eq!(snap["state"], "never", "{snap}");
    assert!(
        common::text(&out).contains("no good backup of cluster 1 at all"),
        "{}",
        common::text(&out)
    );

    // As a number, or written another way, the id is read as retention
    // and chains read it.
    for (cluster, code) in [(2.into(), 11), (1.into(), 0), ("01".into(), 0)] {
        of_cluster(Some(cluster));
        assert_exit(&s.bkp(&["status"]), code);
    }

    // A snapshot that names no cluster may be of any.
    of_cluster(None);
    let out = s.bkp(&["--json", "status"]);
    assert_exit(&out, 0);
    assert_eq!(
        schedule(&json(&out), "snapshot")["newest"]["id"],
        id.as_str()
    );
}
