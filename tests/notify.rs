//! `[notify]`: the command runs on a failure, on the recovery after it, and
//! on a breached RPO, with the event as JSON on stdin and a scrubbed
//! environment; the webhook gets the same events (and `bkp notify`'s), its URL
//! never shown; a failing command or webhook never changes the run's exit code.

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

    // A unit systemd killed has no exit code of bkp's: the command is not
    // told one (no BKP_EXIT_CODE=null), and the document says what systemd saw.
    let killed = [
        ("MONITOR_SERVICE_RESULT".to_string(), "timeout".to_string()),
        ("MONITOR_EXIT_STATUS".to_string(), "TERM".to_string()),
    ];
    let cfg_arg = s.config.to_str().unwrap();
    let out = common::run_bkp(
        &[
            "--config",
            cfg_arg,
            "notify",
            "--failed-unit",
            "bkp-logs.service",
        ],
        &killed,
    );
    assert_exit(&out, 0);
    let env = fs::read_to_string(d.path().join("events.env")).unwrap();
    let last = env.rsplit("BKP_EVENT=").next().unwrap();
    assert!(last.starts_with("failure"), "{env}");
    assert!(!env.contains("BKP_EXIT_CODE=null"), "{env}");
    let text = fs::read_to_string(&events).unwrap();
    let doc: serde_json::Value = serde_json::Deserializer::from_str(&text)
        .into_iter()
        .map(|v| v.unwrap())
        .last()
        .unwrap();
    assert_eq!(doc["exit_code"], serde_json::Value::Null);
    assert_eq!(doc["code"], "timeout");
    assert_eq!(doc["operation"], "logs");

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

/// A one-thread HTTP server on loopback that records each request (first
/// line and body) and answers every one with `status`.
struct Listener {
    url: String,
    seen: std::sync::mpsc::Receiver<(String, String)>,
}

fn listen(status: u16) -> Listener {
    use std::io::{BufRead, BufReader, Read, Write};
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", l.local_addr().unwrap());
    let (tx, seen) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for conn in l.incoming() {
            let Ok(mut conn) = conn else { return };
            let mut r = BufReader::new(conn.try_clone().unwrap());
            let mut first = String::new();
            r.read_line(&mut first).unwrap();
            let mut len = 0;
            loop {
                let mut h = String::new();
                r.read_line(&mut h).unwrap();
                if h.trim().is_empty() {
                    break;
                }
                if let Some((k, v)) = h.split_once(':') {
                    if k.eq_ignore_ascii_case("content-length") {
                        len = v.trim().parse().unwrap();
                    }
                }
            }
            let mut body = vec![0; len];
            r.read_exact(&mut body).unwrap();
            let _ = write!(
                conn,
                "HTTP/1.1 {status} X\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            );
            let _ = tx.send((first.trim().to_string(), String::from_utf8(body).unwrap()));
        }
    });
    Listener { url, seen }
}

impl Listener {
    fn next(&self) -> Option<(String, String)> {
        self.seen
            .recv_timeout(std::time::Duration::from_secs(10))
            .ok()
    }
}

#[test]
fn the_webhook_gets_failures_tests_and_unit_failures_and_never_shows_its_url() {
    let d = tempfile::tempdir().unwrap();
    let hook = listen(200);
    let url_file = d.path().join("webhook-url");
    fs::write(&url_file, format!("{}/hooks/T0KEN-SECRET\n", hook.url)).unwrap();
    let s = setup(
        &d.path().join("missing.tigerbeetle"),
        StoreKind::Local,
        &format!(
            "[notify]\nwebhook_url_file = \"{}\"\nwebhook_format = \"slack\"\n",
            url_file.display()
        ),
    );
    let run = |args: &[&str], env: &[(&str, &str)]| {
        let mut all = vec!["--config", s.config.to_str().unwrap()];
        all.extend_from_slice(args);
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        common::run_bkp(&all, &env)
    };

    // A failed run (under systemd: its invocation id): a Slack-compatible body,
    // POSTed to the URL.
    let out = run(&["snapshot"], &[("INVOCATION_ID", "inv-1")]);
    let code = out.status.code().unwrap();
    assert_ne!(code, 0);
    let (line, body) = hook.next().expect("the failure reached the webhook");
    assert_eq!(line, "POST /hooks/T0KEN-SECRET HTTP/1.1");
    let body: serde_json::Value = serde_json::from_str(&body).unwrap();
    let text = body["text"].as_str().unwrap();
    assert!(
        text.starts_with("bkp snapshot on ") && text.contains(": failure (exit "),
        "{text}"
    );
    assert!(text.contains("missing.tigerbeetle"), "{text}");

    // `bkp notify --test` proves delivery.
    assert_exit(&run(&["notify", "--test"], &[]), 0);
    let (_, body) = hook.next().expect("the test event");
    assert!(body.contains(": test"), "{body}");

    // A unit systemd saw killed at its runtime cap: reported, with systemd's result.
    let killed = [
        ("MONITOR_SERVICE_RESULT", "timeout"),
        ("MONITOR_EXIT_CODE", "killed"),
        ("MONITOR_EXIT_STATUS", "TERM"),
    ];
    assert_exit(
        &run(&["notify", "--failed-unit", "bkp-logs@eu.service"], &killed),
        0,
    );
    let (_, body) = hook.next().expect("the unit failure");
    assert!(
        body.contains("bkp logs on ")
            && body.contains("bkp-logs@eu.service failed")
            && body.contains("runtime cap"),
        "{body}"
    );
    // The run that delivered its own failure is not reported twice; another
    // invocation of the same unit (one that failed before it could notify, say
    // on a config error) is.
    let exited = |invocation| {
        [
            ("MONITOR_SERVICE_RESULT", "exit-code"),
            ("MONITOR_EXIT_CODE", "exited"),
            ("MONITOR_EXIT_STATUS", "3"),
            ("MONITOR_INVOCATION_ID", invocation),
        ]
    };
    let unit = ["notify", "--failed-unit", "bkp-snapshot.service"];
    let out = run(&unit, &exited("inv-1"));
    assert_exit(&out, 0);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("not sent again"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        hook.seen
            .recv_timeout(std::time::Duration::from_secs(1))
            .is_err(),
        "the failure inv-1 delivered itself was sent again"
    );
    assert_exit(&run(&unit, &exited("inv-2")), 0);
    let (_, body) = hook.next().expect("the failure inv-2 did not report");
    assert!(body.contains("exited with status 3"), "{body}");

    // The generic body is bkp's own document.
    let cfg = fs::read_to_string(&s.config).unwrap();
    fs::write(&s.config, cfg.replace("webhook_format = \"slack\"\n", "")).unwrap();
    assert_eq!(run(&["snapshot"], &[]).status.code(), Some(code));
    let (_, body) = hook.next().expect("the second failure");
    let doc: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(doc["schema"], "bkp.notify/1");
    assert_eq!(doc["event"], "failure");
    assert_eq!(doc["exit_code"], code);
    assert!(hook.seen.try_recv().is_err(), "nothing else was sent");

    // A webhook that is down or refuses: a warning naming the host, never the
    // URL's token; the run's exit code stands; `notify --test` exits 6.
    let refusing = listen(500);
    fs::write(&url_file, format!("{}/hooks/T0KEN-SECRET\n", refusing.url)).unwrap();
    let out = run(&["snapshot"], &[]);
    assert_eq!(out.status.code(), Some(code));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("answered HTTP 500"), "{stderr}");
    assert!(
        !stderr.contains("T0KEN"),
        "the webhook's token reached stderr"
    );
    let gone = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let closed = format!("http://{}", gone.local_addr().unwrap());
    drop(gone);
    fs::write(&url_file, format!("{closed}/hooks/T0KEN-SECRET\n")).unwrap();
    let out = run(&["notify", "--test"], &[]);
    assert_exit(&out, 6);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("was not reached"), "{stderr}");
    assert!(
        !stderr.contains("T0KEN"),
        "the webhook's token reached stderr"
    );
    assert!(!String::from_utf8_lossy(&out.stdout).contains("T0KEN"));
}
