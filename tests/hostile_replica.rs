//! A local user against bkp. A config file another user may change names the
//! commands bkp runs as its own user (root, often): it is refused before a byte
//! of it is read. And the private TigerBeetle replica a point-in-time restore
//! replays the log into listens on loopback, where any program of the host
//! reaches it. A row written into it while the log is replayed must stop the
//! restore (nothing delivered), never end up in the restored data file as if the
//! log held it.

mod common;

use std::process::Stdio;

use common::{assert_exit, bkp_command, repl, TigerBeetle};

/// The `--addresses` of the `tigerbeetle start` that process `parent` runs.
fn private_replica_of(parent: u32) -> String {
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        let ppid = stat
            .rsplit_once(") ")
            .and_then(|(_, rest)| rest.split_whitespace().nth(1))
            .and_then(|p| p.parse::<u32>().ok());
        if ppid != Some(parent) {
            continue;
        }
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        for arg in cmdline.split(|b| *b == 0) {
            if let Some(a) = String::from_utf8_lossy(arg).strip_prefix("--addresses=") {
                return a.to_string();
            }
        }
    }
    panic!("process {parent} runs no private replica")
}

#[test]
fn a_row_written_into_the_private_replica_during_replay_stops_the_restore() {
    let tb = TigerBeetle::start();
    let address = tb.address();
    let s = common::setup(
        &tb.data_file,
        common::StoreKind::Local,
        &format!("addresses = \"{address}\"\nreplica_args = [\"--development\"]\n"),
    );
    repl(
        &address,
        "create_accounts id=1 code=10 ledger=700, id=2 code=10 ledger=700;",
    );
    repl(
        &address,
        "create_transfers id=11 debit_account_id=1 credit_account_id=2 amount=100 ledger=700 code=10;",
    );
    assert_exit(&s.bkp(&["logs"]), 0);
    std::thread::sleep(std::time::Duration::from_millis(20));
    let at = common::rfc3339(time::OffsetDateTime::now_utc());
    std::thread::sleep(std::time::Duration::from_millis(20));

    // The restore replays the log into its private replica and stops before it
    // checks and delivers; a local user adds an account and a transfer there.
    let target = s.dir.path().join("restored");
    let mut cmd = bkp_command(&[("BKP_PAUSEPOINT".into(), "replay-sent".into())]);
    cmd.arg("--config")
        .arg(&s.config)
        .args(["restore", "--at", &at, "--target"])
        .arg(&target);
    let child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    common::wait_stopped(pid, "the restore, after replaying the log");
    let private = private_replica_of(pid);
    let added = repl(
        &private,
        "create_accounts id=99 code=10 ledger=700; create_transfers id=98 debit_account_id=2 credit_account_id=99 amount=100 ledger=700 code=10;",
    );
    common::resume(pid);
    let out = child.wait_with_output().unwrap();
    assert_exit(&out, 5);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("another client wrote to it"),
        "{stderr}\n(the planted rows: {added})"
    );
    assert!(!target.exists(), "nothing is delivered");

    // Left alone, the same restore delivers the log's state.
    let out = s.bkp(&["restore", "--at", &at, "--target", target.to_str().unwrap()]);
    assert_exit(&out, 0);
}

/// A config another user may change could name any `stop_command` or
/// `key_command`: bkp refuses it (exit 3), naming the file, why and the fix,
/// and runs nothing it names.
#[test]
fn a_config_another_user_may_change_is_refused_before_it_is_read() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let ran = dir.path().join("ran");
    let config = dir.path().join("bkp.toml");
    std::fs::write(
        &config,
        format!(
            "work_dir = \"work\"\n[store]\ntype = \"local\"\npath = \"store\"\n[encryption]\nkey_command = [\"sh\", \"-c\", \"touch {}\"]\n",
            ran.display()
        ),
    )
    .unwrap();
    let run = || {
        let out = common::run_bkp(&["--config", config.to_str().unwrap(), "list"], &[]);
        (out.status.code(), common::text(&out))
    };
    let mode = |m: u32| {
        std::fs::set_permissions(&config, std::fs::Permissions::from_mode(m)).unwrap();
    };
    for (m, why) in [
        (0o666, "may be changed by every user"),
        (0o664, "may be changed by its group"),
    ] {
        mode(m);
        let (code, text) = run();
        assert_eq!(code, Some(3), "{text}");
        assert!(text.contains(why) && text.contains("chmod go-w"), "{text}");
        assert!(!ran.exists(), "its key_command ran");
    }
    // Another user's (not root's), as a root bkp reads it.
    mode(0o644);
    if unsafe { libc::geteuid() } == 0 {
        std::os::unix::fs::chown(&config, Some(4242), None).unwrap();
        let (code, text) = run();
        assert_eq!(code, Some(3), "{text}");
        assert!(text.contains("belongs to another user"), "{text}");
        assert!(text.contains("chown root:GROUP"), "{text}");
        assert!(!ran.exists(), "its key_command ran");
        std::os::unix::fs::chown(&config, Some(0), None).unwrap();
        // A named pipe that user feeds is that user's config too.
        let fifo = dir.path().join("fifo.toml");
        let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        std::os::unix::fs::chown(&fifo, Some(4242), None).unwrap();
        // Refused without waiting for a writer.
        let out = common::run_bkp(&["--config", fifo.to_str().unwrap(), "list"], &[]);
        let text = common::text(&out);
        assert_eq!(out.status.code(), Some(3), "{text}");
        assert!(text.contains("belongs to another user"), "{text}");
        assert!(!ran.exists(), "its key_command ran");
    }
    // The owner's own, written by the owner only: read (its key command runs).
    let (_, text) = run();
    assert!(ran.exists(), "{text}");
}
