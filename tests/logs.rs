//! `bkp logs` against a real TigerBeetle cluster: segments chain by watermark, a run
//! with nothing new stores no data but proves freshness, the segment holds exactly
//! the new events, and a missing link is reported as a broken chain.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Output;

use bkp::tigerbeetle::tblog::{Event, SegmentReader};
use common::{assert_exit, repl, run_bkp, tool, walk, TigerBeetle};

fn config(dir: &Path, address: &str) -> PathBuf {
    common::write_key(dir.join("key"), [5u8; 32]);
    let cfg = dir.join("bkp.toml");
    fs::write(
        &cfg,
        format!(
            "work_dir = \"work\"\n[store]\ntype = \"local\"\npath = \"store\"\n[encryption]\nkey_file = \"key\"\n\
             [tigerbeetle]\naddresses = \"{address}\"\n"
        ),
    )
    .unwrap();
    cfg
}

fn logs(cfg: &Path) -> (serde_json::Value, Output) {
    let out = run_bkp(&["--config", cfg.to_str().unwrap(), "--json", "logs"], &[]);
    assert_exit(&out, 0);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    (v["manifest"].clone(), out)
}

/// What `bkp list` says of each backup's chain.
fn chains(cfg: &Path) -> Vec<String> {
    let out = run_bkp(&["--config", cfg.to_str().unwrap(), "list", "--json"], &[]);
    assert_exit(&out, 0);
    let list: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    list["backups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["chain"].as_str().unwrap().to_string())
        .collect()
}

fn transfer_ids(cfg: &Path, m: &serde_json::Value) -> Vec<u128> {
    let plan = bkp::config::load(cfg, &bkp::config::Overrides::default()).unwrap();
    let keys = plan.keyring().unwrap();
    let store = bkp::commands::open_store(&plan).unwrap();
    let manifest: bkp::manifest::Manifest = serde_json::from_value(m.clone()).unwrap();
    let mut ids = Vec::new();
    bkp::pipeline::download(
        store.as_ref(),
        &manifest.objects[0],
        manifest.compression,
        keys.as_ref(),
        &plan.work_dir,
        std::sync::Arc::new(bkp::stages::progress::Silent),
        |r| {
            let reader = SegmentReader::new(r)?;
            for e in reader {
                if let Event::Transfer(t) = e? {
                    ids.push(t.as_raw().id);
                }
            }
            Ok(())
        },
    )
    .unwrap();
    ids
}

#[test]
fn segments_chain_and_hold_exactly_the_new_events() {
    let tb = TigerBeetle::start();
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), &tb.address());
    repl(&tb.address(), "create_accounts id=1 code=10 ledger=700, id=2 code=10 ledger=700, id=3 code=10 ledger=700;");
    repl(&tb.address(), "create_transfers id=11 debit_account_id=1 credit_account_id=2 amount=5 ledger=700 code=10, id=12 debit_account_id=2 credit_account_id=3 amount=3 ledger=700 code=10;");

    let (first, _) = logs(&cfg);
    assert_eq!(first["source"]["accounts"], 3);
    assert_eq!(first["source"]["transfers"], 2);
    assert_eq!(first["source"]["after"], "0");
    assert!(first["parent"].is_null());
    assert_eq!(first["objects"].as_array().unwrap().len(), 1);
    assert_eq!(transfer_ids(&cfg, &first), [11, 12]);

    // Nothing new: no data object, but a note that proves the log is current.
    // It takes no lease (the lease's objects stay as the first run left them),
    // and it continues nothing: the next segment continues the first.
    let leases = || walk(&dir.path().join("store/leases"));
    let leased = leases();
    assert!(!leased.is_empty(), "the first run took the lease");
    let (idle, _) = logs(&cfg);
    assert!(idle["objects"].as_array().unwrap().is_empty());
    assert_eq!(idle["parent"], first["id"]);
    assert_eq!(idle["source"]["after"], first["source"]["until"]);
    assert_eq!(idle["source"]["until"], first["source"]["until"]);
    let (again, _) = logs(&cfg);
    assert_eq!(again["parent"], first["id"], "notes continue nothing");
    assert_eq!(leases(), leased, "a run with nothing new took the lease");

    repl(&tb.address(), "create_transfers id=13 debit_account_id=1 credit_account_id=3 amount=9 ledger=700 code=10 flags=pending, id=14 debit_account_id=3 credit_account_id=1 amount=1 ledger=700 code=10;");
    repl(&tb.address(), "create_transfers id=15 pending_id=13 amount=9 ledger=700 code=10 flags=post_pending_transfer;");
    let (third, _) = logs(&cfg);
    assert_eq!(third["parent"], first["id"]);
    assert_eq!(third["source"]["after"], first["source"]["until"]);
    assert_eq!(third["source"]["accounts"], 0);
    assert_eq!(transfer_ids(&cfg, &third), [13, 14, 15]);

    let objects: Vec<_> = walk(&dir.path().join("store/tigerbeetle"))
        .into_iter()
        .filter(|p| p.to_string_lossy().contains("-logs-"))
        .collect();
    assert_eq!(objects.len(), 2, "{objects:?}");

    let whole = chains(&cfg);
    assert!(whole.iter().all(|c| !c.contains("BROKEN")), "{whole:?}");

    // A missing link is a broken chain, loudly.
    let first_manifest = dir.path().join(format!(
        "store/manifests/tigerbeetle/{}.json",
        first["id"].as_str().unwrap()
    ));
    fs::remove_file(first_manifest).unwrap();
    let broken = chains(&cfg);
    assert!(broken.iter().any(|c| c.contains("BROKEN")), "{broken:?}");
    // A run that captures reads the chain twice (before the lease and under
    // it) and still warns of each break once.
    repl(&tb.address(), "create_transfers id=16 debit_account_id=1 credit_account_id=2 amount=1 ledger=700 code=10;");
    let (captured, out) = logs(&cfg);
    assert_eq!(transfer_ids(&cfg, &captured), [16]);
    let err = String::from_utf8_lossy(&out.stderr);
    let warned: Vec<&str> = err
        .lines()
        .filter(|l| l.contains("log chain is broken"))
        .collect();
    assert!(!warned.is_empty(), "{err}");
    let once: std::collections::BTreeSet<&str> = warned.iter().copied().collect();
    assert_eq!(
        once.len(),
        warned.len(),
        "a break warned twice: {warned:#?}"
    );
}

#[test]
fn an_unreachable_cluster_is_transient_and_stores_nothing() {
    let mut tb = TigerBeetle::start();
    let address = tb.address();
    tb.stop();
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), &address);
    fs::write(
        &cfg,
        fs::read_to_string(&cfg).unwrap()
            + "[ledger]\naddresses = \""
            + &address
            + "\"\ntimeout = \"2s\"\n",
    )
    .unwrap();
    let out = run_bkp(&["--config", cfg.to_str().unwrap(), "logs"], &[]);
    assert_exit(&out, 6);
    // The error names the cluster once: the client's message carries it.
    let stderr = String::from_utf8_lossy(&out.stderr);
    let error = stderr.lines().find(|l| l.starts_with("bkp: error:"));
    let error = error.unwrap_or_else(|| panic!("no error line: {stderr}"));
    assert_eq!(error.matches(address.as_str()).count(), 1, "{error}");
    assert!(
        !dir.path().join("store/manifests").exists()
            || walk(&dir.path().join("store/manifests")).is_empty()
    );
}

/// The backlog [`a_killed_run_resumes_without_gap_or_duplicate`] captures.
const TRANSFERS: u64 = 300_000;

/// Fills the cluster at `address` with 1000 accounts and `transfers` transfers.
fn backlog(address: &str, transfers: u64) {
    let out = std::process::Command::new(tool("tigerbeetle"))
        .args([
            "benchmark",
            &format!("--addresses={address}"),
            "--account-count=1000",
            &format!("--transfer-count={transfers}"),
            "--transfer-batch-count=250",
            "--account-batch-count=250",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn a_killed_run_resumes_without_gap_or_duplicate() {
    let tb = TigerBeetle::start();
    backlog(&tb.address(), TRANSFERS);
    let dir = tempfile::tempdir().unwrap();
    // The default lease: the kill, not the clock, ends the first run (renewal
    // under a long capture has a test of its own below).
    let cfg = config(dir.path(), &tb.address());

    // Interrupt a run part-way (wherever the kill lands, the invariants hold).
    let mut child = std::process::Command::new(common::bkp_bin())
        .args(["--config", cfg.to_str().unwrap(), "logs"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(700));
    let _ = child.kill();
    child.wait().unwrap();
    logs(&cfg);
    logs(&cfg);

    let out = run_bkp(&["--config", cfg.to_str().unwrap(), "list", "--json"], &[]);
    let list: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let mut total_transfers = 0;
    let mut total_accounts = 0;
    let mut ids = std::collections::HashSet::new();
    for b in list["backups"].as_array().unwrap() {
        assert!(!b["chain"].as_str().unwrap().contains("BROKEN"), "{b}");
        let key = format!("store/{}", b["manifest"].as_str().unwrap());
        let m: serde_json::Value =
            serde_json::from_slice(&fs::read(dir.path().join(key)).unwrap()).unwrap();
        total_accounts += m["source"]["accounts"].as_u64().unwrap();
        total_transfers += m["source"]["transfers"].as_u64().unwrap();
        if !m["objects"].as_array().unwrap().is_empty() {
            ids.extend(transfer_ids(&cfg, &m));
        }
    }
    assert_eq!(total_accounts, 1000);
    assert_eq!(total_transfers, TRANSFERS);
    assert_eq!(ids.len() as u64, TRANSFERS, "a transfer was captured twice");
}

/// A capture that takes longer than the lease renews it as it writes the
/// segment, or the run would store nothing. The run is held twice as it writes
/// (`BKP_PAUSEPOINT`), each time for more than half the lease: longer than the
/// lease in all, whatever the machine's speed, while what it does between two
/// renewals takes a moment.
#[test]
fn a_capture_longer_than_its_lease_renews_it_as_it_goes() {
    const LEASE_SECS: u64 = 10;
    let tb = TigerBeetle::start();
    backlog(&tb.address(), 2000);
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), &tb.address());
    let lease = format!("log_lease = \"{LEASE_SECS}s\"\n");
    fs::write(&cfg, fs::read_to_string(&cfg).unwrap() + &lease).unwrap();

    let mut child = common::bkp_command(&[("BKP_PAUSEPOINT".into(), "logs-write".into())])
        .args(["--config", cfg.to_str().unwrap(), "--json", "logs"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut held = 0;
    while child.try_wait().unwrap().is_none() {
        if common::stopped(child.id()) {
            if held < 2 {
                held += 1;
                std::thread::sleep(std::time::Duration::from_millis(LEASE_SECS * 600));
            }
            common::resume(child.id());
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    let out = child.wait_with_output().unwrap();
    assert_exit(&out, 0);
    assert_eq!(held, 2, "the segment was written in one piece");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["manifest"]["source"]["transfers"], 2000, "{v:#}");
}

#[test]
fn a_stored_segment_is_reported_even_when_its_ledger_record_fails() {
    let tb = TigerBeetle::start();
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), &tb.address());
    let mut text = fs::read_to_string(&cfg).unwrap();
    text.push_str(&format!("[ledger]\naddresses = \"{}\"\n", tb.address()));
    fs::write(&cfg, text).unwrap();
    // Something in the spool that is no ledger record: recording fails.
    fs::create_dir_all(dir.path().join("work/ledger-spool")).unwrap();
    fs::write(dir.path().join("work/ledger-spool/junk.json"), b"{").unwrap();
    repl(
        &tb.address(),
        "create_accounts id=1 code=10 ledger=700, id=2 code=10 ledger=700;",
    );

    let out = run_bkp(&["--config", cfg.to_str().unwrap(), "--json", "logs"], &[]);
    assert_exit(&out, 1);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("recording it in the ledger failed"),
        "{stderr}"
    );
    // The segment was stored, and the report says so before the failure.
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("no report on stdout ({e}); stderr: {stderr}"));
    let id = v["manifest"]["id"].as_str().unwrap();
    assert!(stderr.contains(id), "{stderr}");
    assert!(dir
        .path()
        .join(format!("store/manifests/tigerbeetle/{id}.json"))
        .exists());
}

#[test]
fn two_clusters_sharing_a_store_keep_their_own_chains() {
    let a = TigerBeetle::start();
    let b = TigerBeetle::start_cluster(7);
    let dir = tempfile::tempdir().unwrap();
    let cfg_a = config(dir.path(), &a.address());
    // The same store, the other cluster.
    let cfg_b = dir.path().join("b.toml");
    fs::write(
        &cfg_b,
        fs::read_to_string(&cfg_a).unwrap().replace(
            &format!("addresses = \"{}\"", a.address()),
            &format!("addresses = \"{}\"\ncluster_id = 7", b.address()),
        ),
    )
    .unwrap();
    repl(
        &a.address(),
        "create_accounts id=1 code=10 ledger=700, id=2 code=10 ledger=700;",
    );
    common::repl_cluster(7, &b.address(), "create_accounts id=5 code=10 ledger=700;");
    let (a1, _) = logs(&cfg_a);
    let (b1, _) = logs(&cfg_b);
    assert_eq!(b1["source"]["accounts"], 1, "{b1}");
    assert!(
        b1["parent"].is_null(),
        "cluster 7 continued cluster 0's chain: {b1}"
    );
    assert_eq!(b1["source"]["after"], "0");
    assert_eq!(b1["source"]["cluster_id"], "7");
    let (a2, _) = logs(&cfg_a);
    assert_eq!(a2["parent"], a1["id"], "cluster 0 continues its own chain");
    let (b2, _) = logs(&cfg_b);
    assert_eq!(b2["parent"], b1["id"]);
}

#[test]
fn a_cluster_quiet_but_for_bkps_own_audit_records_costs_no_segment() {
    let tb = TigerBeetle::start();
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), &tb.address());
    // The audit ledger is the captured cluster itself.
    let mut text = fs::read_to_string(&cfg).unwrap();
    text.push_str(&format!(
        "[ledger]\naddresses = \"{}\"\nledger = 12\n",
        tb.address()
    ));
    fs::write(&cfg, text).unwrap();
    repl(
        &tb.address(),
        "create_accounts id=1 code=10 ledger=700, id=2 code=10 ledger=700;",
    );
    repl(&tb.address(), "create_transfers id=11 debit_account_id=1 credit_account_id=2 amount=5 ledger=700 code=10;");
    let (first, _) = logs(&cfg);
    assert_eq!(transfer_ids(&cfg, &first), [11]);

    // Only the previous runs' own records since: no segment, the watermark stays.
    let mut quiet = Vec::new();
    for _ in 0..2 {
        let (m, out) = logs(&cfg);
        assert!(m["objects"].as_array().unwrap().is_empty(), "{m:#}");
        assert_eq!(m["source"]["until"], first["source"]["until"], "{m:#}");
        assert_eq!(m["source"]["audit_rows_deferred"], true, "{m:#}");
        let _ = out;
        quiet.push(m);
    }

    // Real traffic again: the next segment holds it and the waiting records.
    repl(&tb.address(), "create_transfers id=12 debit_account_id=2 credit_account_id=1 amount=2 ledger=700 code=10;");
    let (next, _) = logs(&cfg);
    assert_eq!(next["source"]["after"], first["source"]["until"]);
    let ids = transfer_ids(&cfg, &next);
    assert_eq!(ids.last(), Some(&12), "{ids:?}");
    let record = |m: &serde_json::Value| {
        u128::from_str_radix(&m["id"].as_str().unwrap().replace('-', ""), 16).unwrap()
    };
    for m in std::iter::once(&first).chain(&quiet) {
        assert!(
            ids.contains(&record(m)),
            "{ids:?} lacks the record of {}",
            m["id"]
        );
    }
    // And bkp's accounts, made with its first record.
    assert!(
        next["source"]["accounts"].as_u64().unwrap() >= 2,
        "{next:#}"
    );
}

/// Two hosts (two work directories, so their run locks never meet) capture one
/// cluster into one S3 store, started together many times. The store lease lets
/// one host at a time continue the chain: every run stores a manifest or exits
/// with the lock code naming the holder, and the chain never forks. A holder
/// killed inside its lease blocks the other host until the lease expires.
///
/// The lease is the default ten minutes, so that no run outlives it however
/// loaded the machine; only the last holder killed has a lease of one second,
/// which the test waits out.
#[test]
fn two_hosts_sharing_a_store_never_fork_the_chain() {
    let tb = TigerBeetle::start();
    let address = tb.address();
    let a = common::setup(
        &tb.data_file,
        common::StoreKind::S3,
        &format!("addresses = \"{address}\"\nlog_lease = \"10m\"\n"),
    );
    let b_dir = tempfile::tempdir().unwrap();
    fs::copy(a.path("key"), b_dir.path().join("key")).unwrap();
    let cfg_b = b_dir.path().join("bkp.toml");
    fs::copy(&a.config, &cfg_b).unwrap();
    // Both "hosts" run on this machine: give each its own name.
    let host = |name: &str| [a.env.clone(), vec![("BKP_HOSTNAME".into(), name.into())]].concat();
    let (env_a, env_b) = (host("host-a"), host("host-b"));
    let start = |cfg: &Path| {
        let env = if cfg == a.config { &env_a } else { &env_b };
        common::bkp_command(env)
            .args(["--config", cfg.to_str().unwrap(), "--json", "logs"])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    };
    repl(
        &address,
        "create_accounts id=1 code=10 ledger=700, id=2 code=10 ledger=700;",
    );
    let (mut stored, mut locked) = (0, 0);
    for round in 0..10u32 {
        repl(
            &address,
            &format!(
                "create_transfers id={} debit_account_id=1 credit_account_id=2 amount=1 ledger=700 code=10;",
                100 + round
            ),
        );
        let (pa, pb) = (start(&a.config), start(&cfg_b));
        for out in [
            pa.wait_with_output().unwrap(),
            pb.wait_with_output().unwrap(),
        ] {
            let err = String::from_utf8_lossy(&out.stderr);
            match out.status.code() {
                Some(0) => stored += 1,
                Some(4) => {
                    locked += 1;
                    assert!(
                        err.contains("holds the lease") && err.contains("pid"),
                        "the lock message names the holder: {err}"
                    );
                }
                other => panic!("round {round}: exit {other:?}: {err}"),
            }
        }
    }
    // The chain is one line: no two manifests continue the same parent, each
    // starts where its parent ended, and every transfer is in it once.
    let list = common::json(&a.bkp(&["--json", "list", "--operation", "logs"]));
    let manifests = list["backups"].as_array().unwrap();
    assert_eq!(manifests.len(), stored, "one manifest per successful run");
    let mut parents = std::collections::HashSet::new();
    // Listed by start: a run that waited for the lease starts before the
    // parent it continues.
    let shown: Vec<serde_json::Value> = manifests
        .iter()
        .map(|m| {
            let shown = common::json(&a.bkp(&["--json", "show", m["id"].as_str().unwrap()]));
            if shown["manifest"].is_object() {
                shown["manifest"].clone()
            } else {
                shown
            }
        })
        .collect();
    let until: std::collections::HashMap<String, String> = shown
        .iter()
        .map(|m| {
            (
                m["id"].as_str().unwrap().to_string(),
                m["source"]["until"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    for m in &shown {
        // Notes (runs that found nothing new) continue nothing: any number may
        // name one parent.
        let note = m["objects"].as_array().is_none_or(|o| o.is_empty());
        assert!(
            note || parents.insert(m["parent"].to_string()),
            "two segments continue parent {}: the chain forked",
            m["parent"]
        );
        if let Some(p) = m["parent"].as_str() {
            assert_eq!(
                m["source"]["after"].as_str(),
                until.get(p).map(String::as_str),
                "{} starts where its parent ended",
                m["id"]
            );
        }
    }
    // The segments' own counts (each checked against its trailer when written).
    let ids: u64 = shown
        .iter()
        .map(|m| m["source"]["transfers"].as_u64().unwrap())
        .sum();
    assert_eq!(ids, 10, "every transfer captured exactly once");
    println!("10 rounds of two hosts: {stored} runs stored, {locked} found the lease held");
    // Runs clean up behind them: the lease's scope holds its last epoch or two.
    let listed =
        common::shared_s3().rclone(&["lsf", "-R", &format!("s3:{}/team/bkp/leases", a.bucket())]);
    let leases: Vec<_> = String::from_utf8_lossy(&listed.stdout)
        .lines()
        .filter(|l| l.ends_with(".json"))
        .map(str::to_string)
        .collect();
    assert!(
        !leases.is_empty() && leases.len() <= 2,
        "lease objects left: {leases:?}"
    );

    // A holder killed inside its lease: the other host is refused, naming it, until
    // the lease expires; a run on the holder's own host sees the holder is gone and
    // takes over at once.
    let mut next_id = 1000;
    let mut kill_holder = |cfg: &Path| {
        // Something to capture: a run with nothing new takes no lease.
        next_id += 1;
        repl(
            &address,
            &format!(
                "create_transfers id={next_id} debit_account_id=1 credit_account_id=2 amount=1 ledger=700 code=10;"
            ),
        );
        let killed = common::bkp_command(
            &[
                env_a.clone(),
                vec![("BKP_FAILPOINT".into(), "logs-leased".into())],
            ]
            .concat(),
        )
        .args(["--config", cfg.to_str().unwrap(), "logs"])
        .output()
        .unwrap();
        assert_eq!(killed.status.code(), None, "killed by its failpoint");
    };
    kill_holder(&a.config);
    let out = run_bkp(&["--config", cfg_b.to_str().unwrap(), "logs"], &env_b);
    assert_exit(&out, 4);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("host-a") && err.contains("if that run died"),
        "{err}"
    );
    let out = run_bkp(&["--config", a.config.to_str().unwrap(), "logs"], &env_a);
    assert_exit(&out, 0);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("which died holding it"), "{err}");

    // Once the lease of a dead holder has expired, the other host takes it over.
    let short = a.path("short-lease.toml");
    let text = fs::read_to_string(&a.config).unwrap();
    let one_second = text.replace("log_lease = \"10m\"", "log_lease = \"1s\"");
    assert_ne!(one_second, text);
    fs::write(&short, one_second).unwrap();
    kill_holder(&short);
    // The claim was written before the holder died: a second after its death
    // (and then some), it has expired.
    std::thread::sleep(std::time::Duration::from_secs(2));
    let out = run_bkp(&["--config", cfg_b.to_str().unwrap(), "logs"], &env_b);
    assert_exit(&out, 0);
}

/// The `timestamp` of the one row `repl` printed for `lookup`.
fn repl_timestamp(address: &str, lookup: &str) -> u64 {
    let out = repl(address, lookup);
    let at = out.find("\"timestamp\": \"").expect("a timestamp") + 14;
    let digits: String = out[at..].chars().take_while(char::is_ascii_digit).collect();
    digits.parse().unwrap()
}

/// A cluster that imports: a transfer imported below the last run's `until` (an
/// account set it) is captured by the next run. One watermark for both kinds read
/// nothing after `until` and called the log current, losing the transfer.
#[test]
fn a_transfer_imported_below_the_last_run_is_captured_by_the_next() {
    let tb = TigerBeetle::start();
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), &tb.address());
    let address = tb.address();
    repl(
        &address,
        "create_accounts id=1 code=10 ledger=700, id=2 code=10 ledger=700;",
    );
    repl(&address, "create_transfers id=11 debit_account_id=1 credit_account_id=2 amount=5 ledger=700 code=10;");
    repl(&address, "create_accounts id=3 code=10 ledger=700;");
    let (first, _) = logs(&cfg);
    let t11 = repl_timestamp(&address, "lookup_transfers id=11;");
    let a3 = repl_timestamp(&address, "lookup_accounts id=3;");
    assert_eq!(first["source"]["until"], a3.to_string());
    assert_eq!(first["source"]["transfers_until"], t11.to_string());
    assert!(first["source"].get("accounts_until").is_none(), "{first}");
    assert!(a3 - t11 >= 2, "no room between {t11} and {a3}");

    let imported = t11 + (a3 - t11) / 2;
    repl(&address, &format!("create_transfers id=12 debit_account_id=2 credit_account_id=1 amount=3 ledger=700 code=10 flags=imported timestamp={imported};"));
    let (second, _) = logs(&cfg);
    assert_eq!(second["parent"], first["id"]);
    assert_eq!(second["source"]["after"], a3.to_string());
    assert_eq!(second["source"]["until"], a3.to_string());
    assert_eq!(second["source"]["transfers_until"], imported.to_string());
    assert_eq!(second["objects"].as_array().unwrap().len(), 1, "{second}");
    assert_eq!(transfer_ids(&cfg, &second), [12]);

    // Then quiet: the marks carry over, nothing is captured twice.
    let (third, _) = logs(&cfg);
    assert!(third["objects"].as_array().unwrap().is_empty(), "{third}");
    assert_eq!(third["source"]["transfers_until"], imported.to_string());
    // The chain is whole.
    let whole = chains(&cfg);
    assert!(whole.iter().all(|c| !c.contains("BROKEN")), "{whole:?}");
}

/// A run that read the chain, found something new and then waited while
/// another host continued the chain (here: held before it takes the lease,
/// `BKP_PAUSEPOINT=logs-looked`) continues from the new head, under the
/// lease: no fork, and no transfer captured twice. (Under the lease the chain
/// is read again only when the manifests listed near the head changed.)
#[test]
fn a_run_that_waited_after_its_look_continues_from_the_new_head() {
    race_after_the_look(true);
}

/// As above, with no chain yet: the other host starts it.
#[test]
fn a_run_that_waited_after_its_look_continues_the_chain_another_host_started() {
    race_after_the_look(false);
}

fn race_after_the_look(with_head: bool) {
    let tb = TigerBeetle::start();
    let address = tb.address();
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), &address);
    // The other host: the same store and key, its own work directory.
    let cfg_b = dir.path().join("b.toml");
    fs::write(
        &cfg_b,
        fs::read_to_string(&cfg)
            .unwrap()
            .replace("work_dir = \"work\"", "work_dir = \"work-b\""),
    )
    .unwrap();
    repl(
        &address,
        "create_accounts id=1 code=10 ledger=700, id=2 code=10 ledger=700;",
    );
    let first = with_head.then(|| logs(&cfg).0);
    let transfer = |id: u64| {
        repl(
            &address,
            &format!("create_transfers id={id} debit_account_id=1 credit_account_id=2 amount=1 ledger=700 code=10;"),
        );
    };
    transfer(11);
    let held = held_after_look(&cfg);
    // Meanwhile the other host captures transfer 11, and then 12 arrives.
    let (second, _) = logs(&cfg_b);
    match &first {
        Some(f) => assert_eq!(second["parent"], f["id"]),
        None => assert!(second["parent"].is_null(), "{second:#}"),
    }
    transfer(12);
    let third = &resumed(held);
    assert_eq!(third["parent"], second["id"], "the chain forked: {third:#}");
    assert!(transfer_ids(&cfg, &second).contains(&11));
    assert_eq!(transfer_ids(&cfg, third), [12]);
    assert!(!chains(&cfg).iter().any(|c| c.contains("BROKEN")));
}

/// Starts `bkp logs` on `cfg` and returns it stopped after its look (it found
/// something new, and has not taken the lease).
fn held_after_look(cfg: &Path) -> std::process::Child {
    let mut held = common::bkp_command(&[("BKP_PAUSEPOINT".into(), "logs-looked".into())])
        .args(["--config", cfg.to_str().unwrap(), "--json", "logs"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    while !common::stopped(held.id()) {
        assert!(held.try_wait().unwrap().is_none(), "ended before its look");
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    held
}

/// Resumes a run [`held_after_look`] and returns its manifest.
fn resumed(held: std::process::Child) -> serde_json::Value {
    common::resume(held.id());
    let out = held.wait_with_output().unwrap();
    assert_exit(&out, 0);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    v["manifest"].clone()
}

/// A run continues the head with a key from long before it (its host's clock
/// is behind, or it waited longer than a lease between its start and the
/// lease): a run that read the chain before and checks it under the lease
/// sees that segment all the same, and continues it. Here host B starts, is
/// held, and continues head H1, written by host C more than A's lease after B
/// started; host A read H1 meanwhile, its lease 2 s.
#[test]
fn a_segment_keyed_long_before_the_head_is_seen_under_the_lease() {
    let tb = TigerBeetle::start();
    let address = tb.address();
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), &address);
    let base = fs::read_to_string(&cfg).unwrap();
    let host = |name: &str, extra: &str| {
        let p = dir.path().join(format!("{name}.toml"));
        let text = base.replace(
            "work_dir = \"work\"",
            &format!("work_dir = \"work-{name}\""),
        );
        fs::write(&p, text + extra).unwrap();
        p
    };
    let cfg_a = host("a", "log_lease = \"2s\"\n");
    let (cfg_b, cfg_c) = (host("b", ""), host("c", ""));
    repl(
        &address,
        "create_accounts id=1 code=10 ledger=700, id=2 code=10 ledger=700;",
    );
    let transfer = |id: u64| {
        repl(
            &address,
            &format!("create_transfers id={id} debit_account_id=1 credit_account_id=2 amount=1 ledger=700 code=10;"),
        );
    };
    let (h0, _) = logs(&cfg);
    transfer(11);
    let b = held_after_look(&cfg_b);
    std::thread::sleep(std::time::Duration::from_secs(3));
    let (h1, _) = logs(&cfg_c);
    assert_eq!(h1["parent"], h0["id"]);
    transfer(12);
    let a = held_after_look(&cfg_a);
    // B, its key from before H1 less A's lease, continues H1 with transfer 12.
    let mb = resumed(b);
    assert_eq!(mb["parent"], h1["id"]);
    assert!(mb["id"].as_str().unwrap() < h1["id"].as_str().unwrap());
    transfer(13);
    let ma = resumed(a);
    assert_eq!(ma["parent"], mb["id"], "the chain forked: {ma:#}");
    assert_eq!(transfer_ids(&cfg, &mb), [12]);
    assert_eq!(transfer_ids(&cfg, &ma), [13]);
}
