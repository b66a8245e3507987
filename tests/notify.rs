//! `[notify]`: the command runs on a failure, on the recovery after it, and
//! on a breached RPO, with the event as JSON on stdin and a scrubbed
//! environment; a failing command never changes the run's exit code.

mod common;

use std::fs;

use common::{assert_exit, formatted_data_file, setup, StoreKind};

#[test]
fn failures_recoveries_and_breaches_reach_the_command_and_nothing_secret_does() {
    let d = tempfile::tempdir().unwrap();
    let data = formatted_data_file(d.path());
    let events = d.path().join("events");
    let hook = format!(
        "[notify]\ncommand = [\"sh\", \"-c\", \"cat >> {0}; echo >> {0}; env >> {0}.env\"]\n",
        events.display()
    );
    let s = setup(
        &d.path().join("missing.tigerbeetle"),
        StoreKind::Local,
        &hook,
    );
    let secret = [(
        "AWS_SECRET_ACCESS_KEY".to_string(),
        "hunter2-secret".to_string(),
    )];
    let run = |args: &[&str]| {
        let mut all = vec!["--config", s.config.to_str().unwrap()];
        all.extend_from_slice(args);
        common::run_bkp(&all, &secret)
    };

    // A failure: the data file is missing.
    let out = run(&["snapshot"]);
    assert_ne!(out.status.code(), Some(0));
    let code = out.status.code().unwrap();
    // The recovery: the data file is there now.
    let cfg = fs::read_to_string(&s.config).unwrap();
    fs::write(
        &s.config,
        cfg.replace(
            &d.path().join("missing.tigerbeetle").display().to_string(),
            &data.display().to_string(),
        ),
    )
    .unwrap();
    assert_exit(&run(&["snapshot"]), 0);
    // A success after a success says nothing.
    assert_exit(&run(&["snapshot"]), 0);

    let text = fs::read_to_string(&events).unwrap();
    let docs: Vec<serde_json::Value> = serde_json::Deserializer::from_str(&text)
        .into_iter()
        .map(|v| v.unwrap())
        .collect();
    assert_eq!(docs.len(), 2, "{text}");
    assert_eq!(docs[0]["schema"], "bkp.notify/1");
    assert_eq!(docs[0]["event"], "failure");
    assert_eq!(docs[0]["operation"], "snapshot");
    assert_eq!(docs[0]["exit_code"], code);
    assert!(docs[0]["message"]
        .as_str()
        .unwrap()
        .contains("missing.tigerbeetle"));
    assert_eq!(docs[1]["event"], "recovery");
    let env = fs::read_to_string(d.path().join("events.env")).unwrap();
    assert!(env.contains("BKP_EVENT=failure") && env.contains("BKP_OPERATION=snapshot"));
    assert!(
        !env.contains("hunter2"),
        "a secret reached the notify command"
    );
    assert!(!text.contains("hunter2"));

    // A command that fails is reported; the run's own exit code stands.
    let cfg = fs::read_to_string(&s.config).unwrap();
    fs::write(
        &s.config,
        cfg.replace(
            &hook,
            "[notify]\ncommand = [\"false\"]\non = [\"failure\", \"recovery\"]\n",
        ),
    )
    .unwrap();
    fs::remove_file(&data).unwrap();
    let out = run(&["snapshot"]);
    assert_eq!(out.status.code(), Some(code));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("notification was not delivered"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
