//! A store rolled back under bkp, played through the binary: the newest
//! manifests deleted (or hidden behind S3 delete markers under Object Lock),
//! the newest WAL objects deleted. bkp keeps a sealed, create-only record of
//! each kind's head (`heads/`), so `restore latest`, `status` and `verify`
//! refuse or alarm (exit 13) instead of taking an older backup for the newest,
//! `verify` names delete markers and overwritten versions of bkp's keys, and
//! `wal fetch` does not call a gap before the recorded head the archive's end.

mod common;

use std::fs;
use std::path::PathBuf;
use std::process::Output;

use common::{assert_exit, formatted_data_file, setup, setup_moto, shared_moto, Setup, StoreKind};

/// The exit code of a store that lost backups it recorded.
const ROLLBACK: i32 = 13;

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn restore_latest(s: &Setup, target: &str) -> Output {
    let target = s.path(target);
    s.bkp(&["restore", "latest", "--target", target.to_str().unwrap()])
}

#[test]
fn deleting_the_newest_manifests_makes_restore_latest_status_and_verify_alarm() {
    let dir = tempfile::tempdir().unwrap();
    let data = formatted_data_file(dir.path());
    let s = setup(&data, StoreKind::Local, "");
    for _ in 0..3 {
        assert_exit(&s.bkp(&["snapshot"]), 0);
    }
    let ids = s.listed(&[]);
    assert_eq!(ids.len(), 3);
    // Nothing lost: no alarm.
    assert_exit(&s.bkp(&["status"]), 0);

    // A bucket writer deletes the two newest manifests (the objects stay).
    for id in &ids[1..] {
        fs::remove_file(s.path(&format!("store/manifests/tigerbeetle/{id}.json"))).unwrap();
    }
    assert_eq!(s.listed(&[]), ids[..1]);

    let out = restore_latest(&s, "restored");
    assert_exit(&out, ROLLBACK);
    let err = stderr(&out);
    assert!(
        err.contains(&ids[2]) && err.contains(&ids[0]) && err.contains("--at"),
        "{err}"
    );
    assert!(!s.path("restored").exists(), "something was restored");

    let out = s.bkp(&["status"]);
    assert_exit(&out, ROLLBACK);
    assert!(stderr(&out).contains(&ids[2]), "{}", stderr(&out));

    let out = s.bkp(&["verify"]);
    assert_exit(&out, ROLLBACK);
    let all = format!("{}{}", stderr(&out), String::from_utf8_lossy(&out.stdout));
    assert!(all.contains(&ids[2]), "{all}");

    // Naming the older backup accepts it.
    let target = s.path("older");
    let out = s.bkp(&["restore", &ids[0], "--target", target.to_str().unwrap()]);
    assert_exit(&out, 0);
}

#[test]
fn a_head_document_without_the_key_is_not_believed() {
    let dir = tempfile::tempdir().unwrap();
    let data = formatted_data_file(dir.path());
    let s = setup(&data, StoreKind::Local, "");
    assert_exit(&s.bkp(&["snapshot"]), 0);
    let heads = s.path("store/heads/tigerbeetle");
    let genuine: Vec<PathBuf> = fs::read_dir(&heads)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(genuine.len(), 1, "one head per backup: {genuine:?}");
    // A bucket writer plants heads newer than every backup: unsealed, with a
    // seal of another key, and too large to be one. None is believed (a
    // warning, no alarm, nothing read whole).
    let text = fs::read_to_string(&genuine[0]).unwrap();
    let mut v: serde_json::Value = serde_json::from_str(&text).unwrap();
    let future = "7fffffff-ffff-7fff-bfff-ffffffffff01";
    v["id"] = future.into();
    fs::write(heads.join(format!("{future}.json")), v.to_string()).unwrap();
    v.as_object_mut().unwrap().remove("seal");
    let future2 = "7fffffff-ffff-7fff-bfff-ffffffffff02";
    v["id"] = future2.into();
    fs::write(heads.join(format!("{future2}.json")), v.to_string()).unwrap();
    fs::write(
        heads.join("7fffffff-ffff-7fff-bfff-ffffffffff03.json"),
        vec![b' '; 2 << 20],
    )
    .unwrap();
    let out = restore_latest(&s, "restored");
    assert_exit(&out, 0);
    assert!(stderr(&out).contains("head"), "{}", stderr(&out));
    assert_exit(&s.bkp(&["status"]), 0);
}

/// A genuine head copied from another store of the same key names that
/// store: it raises no alarm here (a bucket writer could otherwise stop
/// every `restore latest` with another installation's heads), and is named.
#[test]
fn a_head_copied_from_another_store_of_the_same_key_raises_no_alarm() {
    let dir = tempfile::tempdir().unwrap();
    let data = formatted_data_file(dir.path());
    let here = setup(&data, StoreKind::Local, "");
    let other = setup(&data, StoreKind::Local, "");
    assert_exit(&here.bkp(&["snapshot"]), 0);
    assert_exit(&other.bkp(&["snapshot"]), 0);
    let from = other.path("store/heads/tigerbeetle");
    for e in fs::read_dir(&from).unwrap() {
        let p = e.unwrap().path();
        fs::copy(
            &p,
            here.path("store/heads/tigerbeetle")
                .join(p.file_name().unwrap()),
        )
        .unwrap();
    }
    let out = restore_latest(&here, "restored");
    assert_exit(&out, 0);
    assert!(stderr(&out).contains("another store"), "{}", stderr(&out));
    assert_exit(&here.bkp(&["status"]), 0);
}

#[test]
fn delete_markers_and_overwritten_versions_under_object_lock_are_reported() {
    let moto = shared_moto();
    let bucket = moto.new_bucket("rollback", true);
    let dir = tempfile::tempdir().unwrap();
    let data = formatted_data_file(dir.path());
    let s = setup_moto(
        &data,
        &bucket,
        "object_lock_mode = \"governance\"\nobject_lock_days = 1\n",
        "",
    );
    for _ in 0..2 {
        assert_exit(&s.bkp(&["snapshot"]), 0);
    }
    let ids = s.listed(&[]);
    assert_eq!(ids.len(), 2);
    assert_exit(&s.bkp(&["verify"]), 0);

    // A plain DELETE under Object Lock hides the newest manifest behind a
    // delete marker (the version stays, retained); a PUT over the older one
    // makes a new current version.
    let newest = format!("team/bkp/manifests/tigerbeetle/{}.json", ids[1]);
    let out = moto.request("s3", "DELETE", &format!("/{bucket}/{newest}"), &[], "");
    assert!(out.status == 204 || out.status == 200, "{}", out.body);
    let older = format!("team/bkp/manifests/tigerbeetle/{}.json", ids[0]);
    let body = moto
        .request("s3", "GET", &format!("/{bucket}/{older}"), &[], "")
        .body;
    let out = moto.request("s3", "PUT", &format!("/{bucket}/{older}"), &[], &body);
    assert_eq!(out.status, 200, "{}", out.body);
    assert_eq!(s.listed(&[]), ids[..1]);

    let out = restore_latest(&s, "restored");
    assert_exit(&out, ROLLBACK);
    assert!(stderr(&out).contains(&ids[1]), "{}", stderr(&out));

    let out = s.bkp(&["verify"]);
    assert_exit(&out, ROLLBACK);
    let all = format!("{}{}", stderr(&out), String::from_utf8_lossy(&out.stdout));
    assert!(
        all.contains("delete marker") && all.contains(&format!("manifests/tigerbeetle/{}", ids[1])),
        "{all}"
    );
    assert!(
        all.contains("overwritten") && all.contains(&format!("manifests/tigerbeetle/{}", ids[0])),
        "{all}"
    );
}

#[test]
fn deleting_the_newest_wal_is_not_the_end_of_the_archive() {
    let dir = tempfile::tempdir().unwrap();
    let data = formatted_data_file(dir.path());
    let s = setup(&data, StoreKind::Local, "");
    let system = 7_301_234_567_890_123_999u64;
    let pg = common::postgres::fake_pgdata(s.dir.path(), system);
    let pgdata = pg.to_str().unwrap();
    let seg = |n: u32| format!("0000000100000000{n:08X}");
    // Segments up to 0x41; a head is recorded every 64 segments (at 0x40).
    for n in 0x3Eu32..=0x41 {
        fs::write(pg.join("pg_wal").join(seg(n)), vec![n as u8; 4096]).unwrap();
        let path = format!("pg_wal/{}", seg(n));
        assert_exit(&s.bkp(&["wal", "push", &path, "--pgdata", pgdata]), 0);
    }
    // A bucket writer deletes the newest segments, down to 0x3F.
    let archive = s.path(&format!("store/wal/{system}"));
    for e in fs::read_dir(&archive).unwrap() {
        let p = e.unwrap().path();
        let name = p.file_name().unwrap().to_string_lossy().into_owned();
        if (0x3Fu32..=0x41).any(|n| name.starts_with(&seg(n))) {
            fs::remove_file(p).unwrap();
        }
    }
    let fetch = |n: u32| {
        s.bkp(&[
            "wal",
            "fetch",
            &seg(n),
            "pg_wal/RECOVERYXLOG",
            "--pgdata",
            pgdata,
        ])
    };
    assert_exit(&fetch(0x3E), 0);
    // Before the recorded head: a gap, which stops recovery (above 125).
    let out = fetch(0x3F);
    let code = out.status.code().unwrap();
    assert!(code > 125, "exit {code}: {}", stderr(&out));
    assert!(stderr(&out).contains(&seg(0x40)), "{}", stderr(&out));
    // After it, nothing tells: the archive's end, as before.
    assert_exit(&fetch(0x41), 9);
}

#[test]
fn with_a_ledger_deleting_the_heads_too_does_not_hide_the_loss() {
    let dir = tempfile::tempdir().unwrap();
    let data = formatted_data_file(dir.path());
    let ledger = format!(
        "[ledger]\naddresses = \"{}\"\nledger = 12\ntimeout = \"5s\"\n",
        common::shared_ledger().address()
    );
    let s = setup(&data, StoreKind::Local, &ledger);
    for _ in 0..2 {
        assert_exit(&s.bkp(&["snapshot"]), 0);
    }
    let ids = s.listed(&[]);
    assert_exit(&s.bkp(&["status"]), 0);
    // Without Object Lock, whoever deletes the newest manifest deletes its
    // head too: the ledger still records the backup as stored.
    fs::remove_file(s.path(&format!("store/manifests/tigerbeetle/{}.json", ids[1]))).unwrap();
    let _ = fs::remove_dir_all(s.path("store/heads"));
    let out = restore_latest(&s, "restored");
    assert_exit(&out, ROLLBACK);
    assert!(
        stderr(&out).contains(&ids[1]) && stderr(&out).contains("ledger"),
        "{}",
        stderr(&out)
    );
    let out = s.bkp(&["status"]);
    assert_exit(&out, ROLLBACK);
    assert!(stderr(&out).contains(&ids[1]), "{}", stderr(&out));
}
