//! `bkp check`: the preflight against a local store and SeaweedFS, and against a
//! store that refuses bkp's credentials.

mod common;

use common::{assert_exit, formatted_data_file, json, setup, walk, StoreKind};

#[test]
fn check_passes_on_a_good_setup_and_leaves_nothing_behind() {
    let dir = tempfile::tempdir().unwrap();
    let data = formatted_data_file(dir.path());
    for kind in [StoreKind::Local, StoreKind::S3] {
        let s = setup(&data, kind, "");
        let out = s.bkp(&["check"]);
        assert_exit(&out, 0);
        let stdout = String::from_utf8_lossy(&out.stdout);
        for name in [
            "config",
            "keys",
            "work_dir",
            "store",
            "tigerbeetle.binary",
            "tigerbeetle.data_file",
        ] {
            assert!(
                stdout
                    .lines()
                    .any(|l| l.starts_with("ok") && l.contains(name)),
                "{name}: {stdout}"
            );
        }
        assert!(stdout.contains("create-only"), "{stdout}");
        let out = s.bkp(&["--json", "check"]);
        assert_exit(&out, 0);
        let v = json(&out);
        assert_eq!(v["schema"], "bkp.check/1");
        assert_eq!(v["ok"], true);
        assert!(v["checks"].as_array().unwrap().len() >= 6);
    }
    // The probe objects are gone from the local store.
    let s = setup(&data, StoreKind::Local, "");
    assert_exit(&s.bkp(&["check"]), 0);
    let left: Vec<_> = walk(&s.path("store"))
        .into_iter()
        .filter(|p| p.is_file())
        .collect();
    assert!(left.is_empty(), "{left:?}");
}

#[test]
fn a_store_that_refuses_bkp_fails_the_check_without_showing_the_secret() {
    let dir = tempfile::tempdir().unwrap();
    let data = formatted_data_file(dir.path());
    let mut s = setup(&data, StoreKind::S3, "");
    let wrong = "0123456789abcdef0123456789abcdefWRONG";
    for (k, v) in s.env.iter_mut() {
        if k == "AWS_SECRET_ACCESS_KEY" {
            *v = wrong.to_string();
        }
    }
    let out = s.bkp(&["check"]);
    assert_ne!(out.status.code(), Some(0));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stdout
            .lines()
            .any(|l| l.starts_with("FAIL") && l.contains("store")),
        "{stdout}"
    );
    // The other checks still ran.
    assert!(
        stdout
            .lines()
            .any(|l| l.starts_with("ok") && l.contains("keys")),
        "{stdout}"
    );
    assert!(!stdout.contains(wrong) && !stderr.contains(wrong));
}
