//! Small wrong answers an operator meets, through the real binary: a key file
//! other users may read (refused, as ssh refuses such a private key), and
//! `restore --dry-run`'s times and staging directory.

mod common;

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use common::{assert_exit, formatted_data_file, json, setup, StoreKind};

fn chmod(path: &Path, mode: u32) {
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
}

/// `bkp key generate --type TYPE PATH`.
fn generate(kind: &str, path: &Path) -> std::process::Output {
    let path = path.to_str().unwrap();
    common::run_bkp(&["key", "generate", "--type", kind, path], &[])
}

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Asserts that `out` refused `key` (a path) for its mode `mode`, with the fix.
fn refused_for_its_mode(out: &std::process::Output, key: &Path, mode: &str) {
    assert_exit(out, 3);
    let err = stderr(out);
    let shown = key.display().to_string();
    assert!(err.contains(&shown), "names the file: {err}");
    assert!(err.contains(mode), "names the mode {mode}: {err}");
    assert!(
        err.contains(&format!("chmod 600 {shown}")),
        "says how to fix it: {err}"
    );
}

#[test]
fn a_key_file_others_may_read_is_refused_with_the_chmod_that_fixes_it() {
    let dir = tempfile::tempdir().unwrap();
    let data = formatted_data_file(dir.path());
    let s = setup(&data, StoreKind::Local, "");
    let key = s.path("key");
    assert_exit(&s.bkp(&["list"]), 0);

    // What `echo … > key` leaves under the usual umask.
    chmod(&key, 0o644);
    refused_for_its_mode(&s.bkp(&["list"]), &key, "0644");
    refused_for_its_mode(&s.bkp(&["snapshot"]), &key, "0644");

    // `bkp check` shows it as a failed check, not as a valid key.
    let out = s.bkp(&["--json", "check"]);
    assert_exit(&out, 3);
    let v = json(&out);
    let keys = v["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "keys")
        .unwrap()
        .clone();
    assert_eq!(keys["ok"], false, "{v}");
    assert!(
        keys["detail"].as_str().unwrap().contains("chmod 600"),
        "{keys}"
    );

    // A group that may replace the key is refused too; a group that may only
    // read it is accepted only when root owns the file (root chose the group).
    chmod(&key, 0o660);
    refused_for_its_mode(&s.bkp(&["list"]), &key, "0660");
    chmod(&key, 0o640);
    let out = s.bkp(&["list"]);
    if fs::metadata(&key).unwrap().uid() == 0 {
        assert_exit(&out, 0);
    } else {
        refused_for_its_mode(&out, &key, "0640");
    }

    chmod(&key, 0o600);
    assert_exit(&s.bkp(&["list"]), 0);
    chmod(&key, 0o400);
    assert_exit(&s.bkp(&["list"]), 0);
}

#[test]
fn an_old_key_and_a_signing_key_others_may_read_are_refused_too() {
    let dir = tempfile::tempdir().unwrap();
    let data = formatted_data_file(dir.path());
    let s = setup(&data, StoreKind::Local, "");
    let old = s.path("old.key");
    fs::write(&old, [3u8; 32]).unwrap();
    chmod(&old, 0o604);
    let cfg = fs::read_to_string(&s.config).unwrap().replace(
        "key_file = \"key\"\n",
        "key_file = \"key\"\n[[encryption.old_keys]]\nkey_file = \"old.key\"\n",
    );
    fs::write(&s.config, cfg).unwrap();
    refused_for_its_mode(&s.bkp(&["list"]), &old, "0604");
    chmod(&old, 0o600);
    assert_exit(&s.bkp(&["list"]), 0);

    // A write-only host's signing key, as `bkp key generate` wrote it, then
    // opened to everyone.
    let signing = s.path("signing.key");
    let out = generate("ed25519", &signing);
    assert_exit(&out, 0);
    assert_eq!(
        fs::metadata(&signing).unwrap().mode() & 0o777,
        0o400,
        "bkp key generate writes a key only its owner reads"
    );
    let identity = s.path("identity");
    let out = generate("x25519", &identity);
    assert_exit(&out, 0);
    let printed = String::from_utf8_lossy(&out.stdout).into_owned();
    let recipient = printed
        .lines()
        .find(|l| l.starts_with("recipient = "))
        .unwrap_or_else(|| panic!("{printed}"));
    let host = s.path("host.toml");
    fs::write(
        &host,
        format!(
            "work_dir = \"work-host\"\n[store]\ntype = \"local\"\npath = \"store-host\"\n\
             [encryption]\n{recipient}\nsigning_key_file = \"signing.key\"\n"
        ),
    )
    .unwrap();
    let list = || common::run_bkp(&["--config", host.to_str().unwrap(), "list"], &[]);
    assert_exit(&list(), 0);
    chmod(&signing, 0o644);
    refused_for_its_mode(&list(), &signing, "0644");
}

/// `restore --dry-run` of a snapshot, run in the setup's directory with a
/// relative target.
fn dry_run(s: &common::Setup, json: bool) -> std::process::Output {
    let mut cmd = common::bkp_command(&s.env);
    cmd.current_dir(s.path(""))
        .args(["--config", s.config.to_str().unwrap()]);
    if json {
        cmd.arg("--json");
    }
    cmd.args(["restore", "latest", "--dry-run", "--target", "restored"]);
    common::run(&mut cmd, None, common::BKP_TIMEOUT)
}

#[test]
fn a_restore_dry_run_prints_times_as_every_line_does_and_where_it_stages() {
    let dir = tempfile::tempdir().unwrap();
    let data = formatted_data_file(dir.path());
    let s = setup(&data, StoreKind::Local, "");
    let out = s.bkp(&["--json", "snapshot"]);
    assert_exit(&out, 0);
    let started = json(&out)["manifest"]["started_at"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(started.ends_with('Z'), "{started}");

    let out = dry_run(&s, false);
    assert_exit(&out, 0);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        text.contains(&format!("({started})")),
        "the backup's time as the manifest and `bkp show` write it, {started}: {text}"
    );
    assert!(!text.contains("+00:00:00"), "{text}");
    let here = fs::canonicalize(s.path("")).unwrap();
    let line = text
        .lines()
        .find(|l| l.contains("would stage"))
        .unwrap_or_else(|| panic!("{text}"));
    assert!(
        line.ends_with(&format!("in {}", here.display()))
            || line.ends_with(&format!("in {}", s.path("").display())),
        "names the directory it stages in: {line}"
    );

    let out = dry_run(&s, true);
    assert_exit(&out, 0);
    let staging = json(&out)["staging_in"].as_str().unwrap().to_string();
    assert!(
        Path::new(&staging).is_absolute() && !staging.is_empty(),
        "{staging:?}"
    );
}

/// Under `--json` a run says everything as JSON: `init` its result (a second
/// `init` too), a backup its ledger record as an object and its warnings in a
/// `warnings` member, and every warning on stderr as a `bkp.warning/1` line,
/// before the `bkp.error/1` object when the run fails.
#[test]
fn json_runs_say_their_result_ledger_and_warnings_as_json() {
    let dir = tempfile::tempdir().unwrap();
    let data = formatted_data_file(dir.path());
    // A ledger on a port nothing listens on: the record is spooled, with a warning.
    let closed = common::free_port();
    let s = setup(
        &data,
        StoreKind::Local,
        &format!("[ledger]\naddresses = \"127.0.0.1:{closed}\"\n"),
    );
    let first = s.bkp(&["--json", "init"]);
    assert_exit(&first, 0);
    let v = json(&first);
    assert_eq!(v["schema"], "bkp.init/1", "{v:#}");
    assert_eq!(v["marked_now"], true, "{v:#}");
    assert_eq!(v["sealed"], true, "{v:#}");
    let again = json(&s.bkp(&["--json", "init"]));
    assert_eq!(again["marked_now"], false, "{again:#}");
    assert_eq!(again["marked_at"], v["marked_at"], "{again:#}");

    let out = s.bkp(&["--json", "snapshot"]);
    assert_exit(&out, 0);
    let v = json(&out);
    assert_eq!(v["ledger"]["outcome"], "spooled", "{v:#}");
    assert!(v["ledger"]["spool"].as_str().is_some(), "{v:#}");
    let warnings = v["warnings"].as_array().unwrap();
    assert!(
        warnings
            .iter()
            .any(|w| w.as_str().unwrap().contains("spooled")),
        "{v:#}"
    );
    // stderr holds JSON lines only, the warnings the document lists.
    let lines = json_lines(&out);
    assert!(
        lines.iter().all(|l| l["schema"] == "bkp.warning/1"),
        "{lines:#?}"
    );
    let said: Vec<&serde_json::Value> = lines.iter().map(|l| &l["message"]).collect();
    assert_eq!(said, warnings.iter().collect::<Vec<_>>());

    // A restore's document is printed after its ledger record: the record's
    // outcome and warning are in it.
    let target = s.path("restored");
    let out = s.bkp(&[
        "--json",
        "restore",
        "latest",
        "--target",
        target.to_str().unwrap(),
    ]);
    assert_exit(&out, 0);
    let v = json(&out);
    assert_eq!(v["schema"], "bkp.restore/1", "{v:#}");
    assert_eq!(v["ledger"]["outcome"], "spooled", "{v:#}");
    let warnings = v["warnings"].as_array().unwrap();
    let said: Vec<serde_json::Value> = json_lines(&out)
        .iter()
        .map(|l| l["message"].clone())
        .collect();
    assert!(
        said.iter().any(|w| w.as_str().unwrap().contains("spooled")),
        "{said:#?}"
    );
    assert_eq!(warnings, &said, "{v:#}");

    // A failing run: its warnings come before, and inside, the error object.
    fs::remove_file(&data).unwrap();
    let out = s.bkp(&["--json", "snapshot"]);
    assert!(!out.status.success());
    let mut lines = json_lines(&out);
    let e = lines.pop().unwrap();
    assert_eq!(e["schema"], "bkp.error/1", "{e:#}");
    let said: Vec<serde_json::Value> = lines.iter().map(|l| l["message"].clone()).collect();
    assert!(!said.is_empty(), "the spooled record's warning");
    assert_eq!(e["warnings"].as_array().unwrap(), &said, "{e:#}");
}

/// Every line `out` wrote to stderr, each one JSON object.
fn json_lines(out: &std::process::Output) -> Vec<serde_json::Value> {
    stderr(out)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect()
}

/// The variables of a first try without a config file are refused beside a
/// config file, whose data file and store would be used instead.
#[test]
fn a_first_trys_variables_are_refused_beside_a_config_file() {
    let dir = tempfile::tempdir().unwrap();
    let data = formatted_data_file(dir.path());
    let s = setup(&data, StoreKind::Local, "");
    let first_try = [
        ("BKP_STORE_PATH".to_string(), "elsewhere".to_string()),
        ("BKP_KEY_FILE".to_string(), "key".to_string()),
        (
            "BKP_TIGERBEETLE_DATA_FILE".to_string(),
            "other.tigerbeetle".to_string(),
        ),
    ];
    let config = s.config.to_str().unwrap();
    let out = common::run_bkp(&["--config", config, "snapshot"], &first_try);
    assert_exit(&out, 3);
    let err = stderr(&out);
    assert!(
        err.contains("BKP_KEY_FILE, BKP_TIGERBEETLE_DATA_FILE set, but the config file"),
        "{err}"
    );
    assert!(walk_or_empty(&s.path("store/manifests")).is_empty());
}

fn walk_or_empty(dir: &Path) -> Vec<std::path::PathBuf> {
    if dir.exists() {
        common::walk(dir)
    } else {
        Vec::new()
    }
}
