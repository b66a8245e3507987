//! `bkp verify --drill` as CI systems run restore drills, through the real
//! binary against SeaweedFS: read-only store credentials (an identity allowed
//! Read and List only), the key from an environment variable, no ledger
//! listening, no usable work_dir or HOME, and a JUnit test report.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use common::{assert_exit, formatted_data_file, json, setup, shared_s3, Setup, StoreKind};

/// A store with two TigerBeetle snapshots, made with full credentials.
struct Store {
    s: Setup,
    _data: tempfile::TempDir,
    manifests: Vec<serde_json::Value>,
}

fn store() -> Store {
    let data = tempfile::tempdir().unwrap();
    let file = formatted_data_file(data.path());
    let s = setup(
        &file,
        StoreKind::S3,
        &format!("replica_args = [\"--development\"]\n{}", common::ARCHIVE),
    );
    let manifests = (0..2)
        .map(|_| {
            let out = s.bkp(&["--json", "snapshot"]);
            assert_exit(&out, 0);
            json(&out)["manifest"].clone()
        })
        .collect();
    Store {
        s,
        _data: data,
        manifests,
    }
}

impl Store {
    fn ids(&self) -> Vec<String> {
        let id = |m: &serde_json::Value| m["id"].as_str().unwrap().to_string();
        self.manifests.iter().map(id).collect()
    }

    /// The CI job's config: `work_dir` as given, the key from `BKP_CI_KEY`, and
    /// with `ledger_port` a `[ledger]` there (with a long timeout).
    fn ci_config(&self, work_dir: &Path, ledger_port: Option<u16>) -> PathBuf {
        let mut t = fs::read_to_string(&self.s.config)
            .unwrap()
            .replace(
                "work_dir = \"work\"",
                &format!("work_dir = \"{}\"", work_dir.display()),
            )
            .replace("key_file = \"key\"", "key_env = \"BKP_CI_KEY\"");
        assert!(t.contains("BKP_CI_KEY"), "{t}");
        if let Some(port) = ledger_port {
            t.push_str(&format!(
                "[ledger]\naddresses = \"{port}\"\ntimeout = \"{}s\"\n",
                LEDGER_TIMEOUT.as_secs()
            ));
        }
        let path = self.s.path("ci.toml");
        fs::write(&path, t).unwrap();
        path
    }

    /// The object key (in the bucket) of a backup's first object.
    fn object(&self, n: usize) -> (String, String) {
        let key = self.manifests[n]["objects"][0]["key"]
            .as_str()
            .unwrap()
            .to_string();
        let bucket = self.s.bucket();
        (format!("s3:{bucket}/team/bkp/{key}"), key)
    }
}

const LEDGER_TIMEOUT: Duration = Duration::from_secs(45);

/// The environment of a CI job: store credentials (read-only unless
/// `writer`), the key in `BKP_CI_KEY` (the 32 bytes of 7 [`setup`] writes),
/// HOME and TMPDIR.
fn ci_env(writer: bool, home: &Path, tmp: &Path) -> Vec<(String, String)> {
    let s3 = shared_s3();
    let mut env = if writer { s3.env() } else { s3.read_only_env() };
    env.push(("BKP_CI_KEY".into(), "07".repeat(32)));
    env.push(("HOME".into(), home.display().to_string()));
    env.push(("TMPDIR".into(), tmp.display().to_string()));
    env
}

fn bkp(config: &Path, env: &[(String, String)], args: &[&str]) -> Output {
    let mut all = vec!["--config", config.to_str().unwrap()];
    all.extend_from_slice(args);
    common::run_bkp(&all, env)
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The test cases of a JUnit file, per suite: `[name, status, message]`.
/// Python's XML parser refuses a file that is not well-formed.
fn junit(path: &Path) -> serde_json::Value {
    let script = r#"
import json, sys, xml.dom.minidom as m
doc = m.parse(sys.argv[1])
assert doc.documentElement.tagName == "testsuites"
out = {}
for s in doc.getElementsByTagName("testsuite"):
    cases = []
    for c in s.getElementsByTagName("testcase"):
        found = [(t, c.getElementsByTagName(t)) for t in ("failure", "error", "skipped")]
        found = [(t, e[0].getAttribute("message")) for t, e in found if e]
        status, message = found[0] if found else ("passed", "")
        cases.append([c.getAttribute("name"), status, message])
    assert int(s.getAttribute("tests")) == len(cases)
    out[s.getAttribute("name")] = cases
print(json.dumps(out))
"#;
    let out = Command::new("python3")
        .args(["-c", script])
        .arg(path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{} is not well-formed JUnit XML: {}\n{}",
        path.display(),
        String::from_utf8_lossy(&out.stderr),
        fs::read_to_string(path).unwrap_or_default()
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn names(cases: &serde_json::Value) -> Vec<String> {
    cases
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c[0].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn a_report_the_store_refuses_is_kept_locally_and_the_drill_passes() {
    let st = store();
    let (home, tmp) = (st.s.path("home"), st.s.path("tmp"));
    fs::create_dir_all(&home).unwrap();
    fs::create_dir_all(&tmp).unwrap();
    let config = st.ci_config(&st.s.path("work"), None);
    let env = ci_env(false, &home, &tmp);

    // The read-only identity may not write: the premise of this test.
    let out = bkp(&config, &env, &["check"]);
    assert!(!out.status.success(), "{}", stderr(&out));

    let out = bkp(&config, &env, &["verify", "--drill"]);
    assert_exit(&out, 0);
    let err = stderr(&out);
    let kept: PathBuf =
        st.s.path("work/reports")
            .read_dir()
            .unwrap_or_else(|e| panic!("no local report ({e}): {err}"))
            .map(|e| e.unwrap().path())
            .next()
            .unwrap();
    assert!(err.contains(&kept.display().to_string()), "{err}");
    let report: serde_json::Value = serde_json::from_slice(&fs::read(&kept).unwrap()).unwrap();
    assert_eq!(report["ok"], true, "{report:#}");
    assert_eq!(report["drills"][0]["ok"], true, "{report:#}");

    // Under --json the report is on stdout; with --report in the file.
    let out = bkp(&config, &env, &["--json", "verify"]);
    assert_exit(&out, 0);
    assert_eq!(json(&out)["backups"].as_array().unwrap().len(), 2);
    assert!(
        stderr(&out).contains("the report is in stdout"),
        "{}",
        stderr(&out)
    );
    let file = st.s.path("out/report.json");
    let out = bkp(
        &config,
        &env,
        &["verify", "--report", file.to_str().unwrap()],
    );
    assert_exit(&out, 0);
    let report: serde_json::Value = serde_json::from_slice(&fs::read(&file).unwrap()).unwrap();
    assert_eq!(report["operation"], "verify");
    assert_eq!(report["problems"], 0);
}

#[test]
fn an_unreachable_ledger_fails_the_drill_at_once_and_its_records_are_spooled() {
    let st = store();
    let (home, tmp) = (st.s.path("home"), st.s.path("tmp"));
    fs::create_dir_all(&home).unwrap();
    fs::create_dir_all(&tmp).unwrap();
    let config = st.ci_config(&st.s.path("work"), Some(common::free_port()));
    let env = ci_env(true, &home, &tmp);

    let started = Instant::now();
    let out = bkp(&config, &env, &["--json", "verify", "--drill"]);
    let took = started.elapsed();
    // A configured ledger that cannot be read is an audit that did not run:
    // the drill still restores, but it does not pass.
    assert_exit(&out, 6);
    assert!(
        took < LEDGER_TIMEOUT,
        "no waiting for the ledger's timeout: {took:?}"
    );
    let report = json(&out);
    assert_eq!(report["drills"][0]["ok"], true, "{report:#}");
    let skipped = &report["not_checked"][0];
    assert_eq!(skipped["code"], "transient", "{report:#}");
    assert!(
        skipped["message"].as_str().unwrap().contains("ledger"),
        "{report:#}"
    );
    let spooled = fs::read_dir(st.s.path("work/ledger-spool"))
        .unwrap()
        .count();
    assert_eq!(
        spooled, 1,
        "the verify record of the one kind waits for the next run"
    );
}

#[test]
fn a_drill_needs_no_local_state_and_its_junit_report_names_each_check() {
    let st = store();
    let ids = st.ids();
    let base = tempfile::tempdir().unwrap();
    // Paths below a regular file cannot be created, by root either.
    let file = base.path().join("file");
    fs::write(&file, b"").unwrap();
    let tmp = base.path().join("tmp");
    fs::create_dir_all(&tmp).unwrap();
    // No ledger for CI: [ledger] is left out, so no audit is attempted.
    let config = st.ci_config(&file.join("work"), None);
    let env = ci_env(false, &file, &tmp);

    let out = bkp(&config, &env, &["--json", "verify", "--drill"]);
    assert_exit(&out, 0);
    let err = stderr(&out);
    assert!(err.contains("is not usable"), "{err}");
    assert!(
        err.contains(&tmp.display().to_string()),
        "names the temporary directory: {err}"
    );
    let report = json(&out);
    assert_eq!(report["drills"][0]["ok"], true, "{report:#}");
    assert_eq!(
        fs::read_dir(&tmp).unwrap().count(),
        0,
        "the temporary work directory is removed"
    );

    let junit_file = base.path().join("out/junit.xml");
    let args = ["verify", "--drill", "--junit", junit_file.to_str().unwrap()];
    let out = bkp(&config, &env, &args);
    assert_exit(&out, 0);
    let suites = junit(&junit_file);
    let backups = names(&suites["backups"]);
    assert_eq!(backups.len(), 2, "{suites:#}");
    for (case, id) in backups.iter().zip(&ids) {
        assert!(
            case.ends_with(id.as_str()),
            "{case} is backup {id}: {suites:#}"
        );
    }
    assert!(suites["backups"]
        .as_array()
        .unwrap()
        .iter()
        .all(|c| c[1] == "passed"));
    assert_eq!(
        names(&suites["drills"]),
        [format!("restore tigerbeetle {}", ids[1])]
    );
    assert_eq!(suites["drills"][0][1], "passed");
    let objects = names(&suites["objects"]);
    assert!(objects.contains(&st.object(1).1), "{suites:#}");
    assert_eq!(
        suites["not_checked"].as_array().map_or(0, Vec::len),
        0,
        "everything was checked: {suites:#}"
    );

    // The newest backup's object, damaged in place (same size).
    let s3 = shared_s3();
    let (remote, key) = st.object(1);
    let mut bytes = s3.rclone(&["cat", &remote]).stdout;
    assert!(bytes.len() > 100);
    let at = bytes.len() - 50;
    bytes[at] ^= 1;
    assert!(s3.rclone_stdin(&["rcat", &remote], &bytes).status.success());
    fs::remove_file(&junit_file).unwrap();
    let out = bkp(&config, &env, &args);
    assert_exit(&out, 5);
    let suites = junit(&junit_file);
    let failed: Vec<&serde_json::Value> = suites["objects"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c[1] == "failure")
        .collect();
    assert_eq!(failed.len(), 1, "{suites:#}");
    assert_eq!(
        failed[0][0],
        key.as_str(),
        "names the damaged object: {suites:#}"
    );
    assert!(!failed[0][2].as_str().unwrap().is_empty());
    let backups = suites["backups"].as_array().unwrap();
    assert_eq!(backups[0][1], "passed", "{suites:#}");
    assert_eq!(backups[1][1], "failure", "{suites:#}");
    assert_eq!(suites["drills"][0][1], "failure", "{suites:#}");
}
