//! Every JSON document bkp prints under `--json` names its shape in a top-level
//! `"schema"` member, as the README lists them: machines branch on it.

mod common;

use std::process::Output;

use common::{assert_exit, formatted_data_file, setup, StoreKind};

#[track_caller]
fn schema_of(out: &Output, code: i32) -> String {
    assert_exit(out, code);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "not one JSON document ({e}): {}",
            String::from_utf8_lossy(&out.stdout)
        )
    });
    v["schema"]
        .as_str()
        .unwrap_or_else(|| panic!("no schema in {v:#}"))
        .to_string()
}

#[test]
fn every_json_document_names_its_schema() {
    let d = tempfile::tempdir().unwrap();
    let s = setup(&formatted_data_file(d.path()), StoreKind::Local, "");
    let snap = s.bkp(&["--json", "snapshot"]);
    assert_eq!(schema_of(&snap, 0), "bkp.run/1");
    let id = common::json(&snap)["manifest"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let target = s.path("target");
    let t = target.to_str().unwrap();
    let key = s.path("new.key");
    let cases: Vec<(Vec<&str>, i32, &str)> = vec![
        (vec!["list"], 0, "bkp.list/1"),
        (vec!["show", &id], 0, "bkp.show/1"),
        (vec!["verify"], 0, "bkp.report/1.0"),
        (vec!["cleanup", "--dry-run"], 0, "bkp.cleanup/1"),
        (
            vec!["restore", "latest", "--dry-run", "--target", t],
            0,
            "bkp.restore-plan/1",
        ),
        (vec!["restore", "latest", "--target", t], 0, "bkp.restore/1"),
        (
            vec!["key", "generate", key.to_str().unwrap()],
            0,
            "bkp.key/1",
        ),
    ];
    for (args, code, want) in cases {
        let mut all = vec!["--json"];
        all.extend(args.iter().copied());
        assert_eq!(schema_of(&s.bkp(&all), code), want, "{args:?}");
    }
    // `status` exits 11 here (no schedule has a recent enough backup of every
    // kind it watches) or 0; either way its document names its schema.
    let out = s.bkp(&["--json", "status"]);
    let code = out.status.code().unwrap();
    assert!(code == 0 || code == 11, "status exited {code}");
    assert_eq!(schema_of(&out, code), "bkp.status/1");
    // Errors under --json are one JSON object on stderr.
    let out = s.bkp(&["--json", "show", "00000000-0000-7000-8000-000000000000"]);
    assert_exit(&out, 9);
    let e: serde_json::Value = serde_json::from_slice(&out.stderr).unwrap();
    assert_eq!(e["schema"], "bkp.error/1");
}
