//! Every shipped example config parses, and a corpus of bad configs each gives a
//! clear error naming the file and key, with the config exit code, from the real
//! binary.

mod common;

use std::path::Path;

#[test]
fn every_example_config_parses() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
    let mut n = 0;
    let files = [dir.clone(), dir.join("ci")]
        .iter()
        .flat_map(|d| std::fs::read_dir(d).unwrap())
        .map(|e| e.unwrap().path())
        .collect::<Vec<_>>();
    assert!(files.iter().any(|p| p.ends_with("ci/bkp-drill.toml")));
    for path in files {
        if path.extension().is_some_and(|e| e == "toml") {
            bkp::config::load(&path, &bkp::config::Overrides::default())
                .unwrap_or_else(|e| panic!("{}: {e:#}", path.display()));
            n += 1;
        }
    }
    assert!(n >= 3, "expected the example configs in {}", dir.display());
}

const GOOD: &str = r#"
work_dir = "work"
[store]
type = "local"
path = "store"
[encryption]
key_file = "key"
[tigerbeetle]
data_file = "data/0_0.tigerbeetle"
"#;

#[test]
fn bad_configs_fail_clearly_with_the_config_exit_code() {
    let dir = tempfile::tempdir().unwrap();
    let cases: Vec<(&str, String, &str)> = vec![
        (
            "syntax",
            "work_dir = \"w\"\n[store\n".into(),
            "TOML parse error",
        ),
        (
            "unknown key",
            format!("{GOOD}\ncolour = \"blue\"\n"),
            "colour",
        ),
        ("unknown store", GOOD.replace("\"local\"", "\"ftp\""), "ftp"),
        (
            "retention preset",
            format!("{GOOD}[retention.snapshot]\npreset = \"weekly\"\n"),
            "retention.snapshot.preset",
        ),
        (
            "retention grace",
            format!("{GOOD}[retention]\ngrace = \"soon\"\n"),
            "retention.grace",
        ),
        (
            "retention group",
            format!("{GOOD}[retention.snapshots]\ndaily = 3\n"),
            "snapshots",
        ),
        (
            "s3 without bucket",
            GOOD.replace("type = \"local\"\npath = \"store\"", "type = \"s3\""),
            "bucket",
        ),
        (
            "tiny part",
            GOOD.replace(
                "type = \"local\"\npath = \"store\"",
                "type = \"s3\"\nbucket = \"b\"\npart_size = \"1MiB\"",
            ),
            "store.part_size",
        ),
        (
            "bad size",
            GOOD.replace(
                "type = \"local\"\npath = \"store\"",
                "type = \"s3\"\nbucket = \"b\"\npart_size = \"huge\"",
            ),
            "store.part_size",
        ),
        (
            "wrong type",
            GOOD.replace("path = \"store\"", "path = 42"),
            "path",
        ),
        (
            "no encryption",
            GOOD.replace("[encryption]\nkey_file = \"key\"", ""),
            "[encryption]",
        ),
        (
            "two key sources",
            GOOD.replace("key_file = \"key\"", "key_file = \"key\"\nkey_env = \"K\""),
            "exactly one",
        ),
        ("missing key file", GOOD.to_string(), "cannot read key file"),
        (
            "bad mode",
            format!("{GOOD}snapshot_mode = \"hot\"\n"),
            "tigerbeetle.snapshot_mode",
        ),
        (
            "stop without commands",
            format!("{GOOD}snapshot_mode = \"stop\"\n"),
            "stop_command",
        ),
        (
            "zstd level",
            format!("{GOOD}[compression]\nlevel = 99\n"),
            "compression.level",
        ),
        (
            "ledger zero",
            format!("{GOOD}[ledger]\naddresses = \"3000\"\nledger = 0\n"),
            "ledger.ledger",
        ),
    ];
    for (name, text, needle) in cases {
        let cfg = dir.path().join(format!("{}.toml", name.replace(' ', "-")));
        std::fs::write(&cfg, text).unwrap();
        let out = common::run_bkp(&["--config", cfg.to_str().unwrap(), "snapshot"], &[]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(3), "{name}: {stderr}");
        assert!(
            stderr.contains(needle),
            "{name}: expected {needle:?} in {stderr}"
        );
        assert!(
            stderr.contains(cfg.file_name().unwrap().to_str().unwrap()),
            "{name}: file not named: {stderr}"
        );
        assert!(!stderr.contains("panicked"), "{name}: {stderr}");
    }
    // A config file that does not exist.
    let out = common::run_bkp(&["--config", "/nonexistent/bkp.toml", "list"], &[]);
    assert_eq!(out.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/bkp.toml"));
}
