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

/// An S3 [`setup`] whose `[store]` names no endpoint, path style or region: those
/// come from the environment the way the AWS tools expect.
fn s3_setup_from_aws_env(data: &std::path::Path) -> common::Setup {
    let s3 = common::shared_s3();
    let mut s = setup(data, StoreKind::S3, "");
    let text = std::fs::read_to_string(&s.config).unwrap();
    let kept: Vec<&str> = text
        .lines()
        .filter(|l| {
            !l.starts_with("endpoint =")
                && !l.starts_with("path_style =")
                && !l.starts_with("region =")
        })
        .collect();
    std::fs::write(&s.config, kept.join("\n") + "\n").unwrap();
    // By name, not IP: the SDK itself falls back to path style for an IP address.
    s.env
        .push(("AWS_ENDPOINT_URL".to_string(), by_name(&s3.endpoint)));
    s
}

/// `http://127.0.0.1:PORT` as `http://localhost:PORT`.
fn by_name(endpoint: &str) -> String {
    endpoint.replace("127.0.0.1", "localhost")
}

#[test]
fn the_endpoint_and_region_can_come_from_the_aws_environment() {
    let dir = tempfile::tempdir().unwrap();
    let data = formatted_data_file(dir.path());
    let mut s = s3_setup_from_aws_env(&data);
    assert!(s.env.iter().any(|(k, _)| k == "AWS_REGION"));
    let text = std::fs::read_to_string(&s.config).unwrap();
    assert!(
        !text.contains("endpoint") && !text.contains("region") && !text.contains("path_style"),
        "{text}"
    );
    // AWS_ENDPOINT_URL reaches the SDK and makes path style the default
    // (SeaweedFS on 127.0.0.1 has no virtual hosts).
    let out = s.bkp(&["check"]);
    assert_exit(&out, 0);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout
            .lines()
            .any(|l| l.starts_with("ok") && l.contains("store") && l.contains("create-only")),
        "{stdout}"
    );
    assert!(!stdout.contains("by default"), "{stdout}");
    // The service-specific variable wins over the general one.
    for (k, v) in s.env.iter_mut() {
        if k == "AWS_ENDPOINT_URL" {
            *v = "http://127.0.0.1:9".into();
        }
    }
    let s3 = common::shared_s3();
    s.env
        .push(("AWS_ENDPOINT_URL_S3".to_string(), by_name(&s3.endpoint)));
    assert_exit(&s.bkp(&["check"]), 0);
    // With no region anywhere, us-east-1 is used and check says so.
    s.env.retain(|(k, _)| k != "AWS_REGION");
    let out = s.bkp(&["check"]);
    assert_exit(&out, 0);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout
            .lines()
            .any(|l| l.contains("store") && l.contains("region us-east-1 by default")),
        "{stdout}"
    );
    // BKP_S3_PATH_STYLE overrides the default: virtual-host addressing cannot
    // reach a bucket as BUCKET.localhost, and a bad value is a config error.
    s.env
        .push(("BKP_S3_PATH_STYLE".to_string(), "maybe".to_string()));
    let out = s.bkp(&["list"]);
    assert_exit(&out, 3);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("BKP_S3_PATH_STYLE"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    s.env.last_mut().unwrap().1 = "false".into();
    let out = s.bkp(&["list"]);
    assert_ne!(
        out.status.code(),
        Some(0),
        "virtual hosts reached BUCKET.localhost?"
    );
    assert_ne!(out.status.code(), Some(3), "not a config error");
    s.env.last_mut().unwrap().1 = "true".into();
    assert_exit(&s.bkp(&["list"]), 0);
    // store.endpoint wins over the SDK's variables, even the S3-specific one.
    let text = std::fs::read_to_string(&s.config).unwrap();
    let with_endpoint = text.replace(
        "[store]\n",
        &format!("[store]\nendpoint = \"{}\"\n", by_name(&s3.endpoint)),
    );
    std::fs::write(&s.config, with_endpoint).unwrap();
    for (k, v) in s.env.iter_mut() {
        if k == "AWS_ENDPOINT_URL_S3" {
            *v = "http://127.0.0.1:9".into();
        }
    }
    s.env.retain(|(k, _)| k != "BKP_S3_PATH_STYLE");
    assert_exit(&s.bkp(&["list"]), 0);
}

#[test]
fn a_ca_file_that_is_missing_or_not_pem_is_a_config_error() {
    let dir = tempfile::tempdir().unwrap();
    let data = formatted_data_file(dir.path());
    let s = s3_setup_from_aws_env(&data);
    let base = std::fs::read_to_string(&s.config).unwrap();
    let with_ca = |ca: &str| {
        let text = base.replace("[store]\n", &format!("[store]\nca_file = \"{ca}\"\n"));
        std::fs::write(&s.config, text).unwrap();
    };
    std::fs::write(s.path("garbage.pem"), "not a certificate\n").unwrap();
    for (ca, why) in [
        ("missing.pem", "cannot read"),
        ("garbage.pem", "no certificate"),
    ] {
        with_ca(ca);
        let out = s.bkp(&["list"]);
        assert_exit(&out, 3);
        let stderr = String::from_utf8_lossy(&out.stderr);
        let named = s.path(ca);
        assert!(
            stderr.contains("store.ca_file") && stderr.contains(named.to_str().unwrap()),
            "{stderr}"
        );
        assert!(stderr.contains(why), "{stderr}");
        let out = s.bkp(&["check"]);
        assert_exit(&out, 3);
    }
    // A real bundle is accepted (the platform's own roots, for want of a private CA).
    let system = std::path::Path::new("/etc/ssl/certs/ca-certificates.crt");
    if system.exists() {
        with_ca(system.to_str().unwrap());
        assert_exit(&s.bkp(&["check"]), 0);
    }
}

/// Runs `openssl args` in `dir`, or says why not.
fn openssl(dir: &std::path::Path, args: &[&str]) -> bool {
    std::process::Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

#[test]
fn a_ca_file_lets_the_client_trust_a_private_ca() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // A private CA and a certificate for localhost signed by it; an HTTPS server
    // that answers every request with a status page (not S3: enough to tell a
    // refused certificate from an accepted one).
    std::fs::write(
        d.join("ext"),
        "subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\n",
    )
    .unwrap();
    let made = openssl(
        d,
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
            "-days",
            "2",
            "-subj",
            "/CN=bkp test CA",
        ],
    ) && openssl(
        d,
        &[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "srv.key",
            "-out",
            "srv.csr",
            "-subj",
            "/CN=localhost",
        ],
    ) && openssl(
        d,
        &[
            "x509",
            "-req",
            "-in",
            "srv.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "srv.pem",
            "-days",
            "2",
            "-extfile",
            "ext",
        ],
    );
    if !made {
        eprintln!("skipped: no working openssl command to make a private CA");
        return;
    }
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut server = std::process::Command::new("openssl")
        .args([
            "s_server", "-quiet", "-www", "-cert", "srv.pem", "-key", "srv.key",
        ])
        .args(["-accept", &format!("127.0.0.1:{port}")])
        .current_dir(d)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let started = std::time::Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            started.elapsed().as_secs() < 20,
            "openssl s_server did not start"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let config = d.join("bkp.toml");
    let write = |ca: &str| {
        std::fs::write(
            &config,
            format!("work_dir = \"work\"\n[store]\ntype = \"s3\"\nbucket = \"b\"\nendpoint = \"https://localhost:{port}\"\n{ca}[encryption]\nenabled = false\n"),
        )
        .unwrap()
    };
    let env: Vec<(String, String)> = [
        ("AWS_ACCESS_KEY_ID", "a"),
        ("AWS_SECRET_ACCESS_KEY", "b"),
        ("AWS_REGION", "us-east-1"),
        ("AWS_EC2_METADATA_DISABLED", "true"),
        ("AWS_CONFIG_FILE", "/dev/null"),
        ("AWS_SHARED_CREDENTIALS_FILE", "/dev/null"),
        ("AWS_MAX_ATTEMPTS", "1"),
    ]
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .to_vec();
    let list = || {
        let out = common::run_bkp(&["--config", config.to_str().unwrap(), "list"], &env);
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    write("");
    let refused = list();
    write("ca_file = \"ca.pem\"\n");
    let trusted = list();
    server.kill().unwrap();
    server.wait().unwrap();
    assert!(refused.contains("UnknownIssuer"), "{refused}");
    // The server's page reached bkp (and is no S3 answer): the handshake passed.
    assert!(
        !trusted.contains("UnknownIssuer") && trusted.contains("<HTML>"),
        "the private CA was not trusted: {trusted}"
    );
}

/// A key_command (a secret manager's CLI, say) runs once per check, however many
/// checks need the keys.
#[test]
fn check_runs_the_key_command_once() {
    let dir = tempfile::tempdir().unwrap();
    let data = formatted_data_file(dir.path());
    let s = setup(&data, StoreKind::Local, "");
    let runs = s.path("runs");
    let toml = std::fs::read_to_string(&s.config).unwrap().replace(
        "key_file = \"key\"",
        &format!(
            "key_command = [\"sh\", \"-c\", \"echo run >> '{}'; printf %s {}\"]",
            runs.display(),
            "09".repeat(32)
        ),
    );
    std::fs::write(&s.config, toml).unwrap();
    let out = s.bkp(&["check"]);
    assert_exit(&out, 0);
    assert_eq!(std::fs::read_to_string(&runs).unwrap(), "run\n");
}
