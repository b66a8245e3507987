//! Break glass on the default, chunked snapshot format, through the real
//! binary on a real TigerBeetle data file: `bkp cat ID FILE` writes the data
//! file, rebuilt from its chunks and verified, byte for byte (in a local store
//! and in S3 on SeaweedFS); `bkp cat` of a chunk writes its plaintext and of
//! the chunk list points at `bkp cat ID FILE`; a damaged chunk fails with the
//! integrity code and is named; `bkp show` counts the objects a restore reads.

mod common;

use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};

use common::{assert_exit, setup, snapshot_manifest, text, walk, Setup, StoreKind};

const INTEGRITY: i32 = 5;
const CONFIG: i32 = 3;

/// A snapshot of a freshly formatted TigerBeetle data file (the default,
/// chunked format): the setup, the data file, and the backup's manifest.
fn snapshot(store: StoreKind) -> (tempfile::TempDir, PathBuf, Setup, serde_json::Value) {
    let dir = tempfile::tempdir().unwrap();
    let data = common::formatted_data_file(dir.path());
    let s = setup(&data, store, "");
    let m = snapshot_manifest(&s);
    assert!(
        m["chunks"].is_object(),
        "the default format is chunked: {m:#}"
    );
    (dir, data, s, m)
}

/// Runs `bkp ARGS` with its standard output in the file `out`, as the
/// runbook tells an operator to (`bkp cat ID FILE > FILE`); stderr captured.
fn bkp_into(s: &Setup, args: &[&str], out: &Path) -> Output {
    let mut cmd = common::bkp_command(&s.env);
    cmd.arg("--config")
        .arg(&s.config)
        .args(args)
        .stdin(Stdio::null())
        .stdout(fs::File::create(out).unwrap())
        .stderr(Stdio::piped());
    cmd.output().unwrap()
}

/// Whether files `a` and `b` hold the same bytes (compared block by block: a
/// data file is a gigabyte).
fn same_bytes(a: &Path, b: &Path) -> bool {
    let (mut a, mut b) = (fs::File::open(a).unwrap(), fs::File::open(b).unwrap());
    if a.metadata().unwrap().len() != b.metadata().unwrap().len() {
        return false;
    }
    let (mut x, mut y) = (vec![0u8; 1 << 20], vec![0u8; 1 << 20]);
    loop {
        let n = read_full(&mut a, &mut x);
        if n != read_full(&mut b, &mut y) || x[..n] != y[..n] {
            return false;
        }
        if n == 0 {
            return true;
        }
    }
}

fn read_full(f: &mut fs::File, buf: &mut [u8]) -> usize {
    let mut n = 0;
    while n < buf.len() {
        match f.read(&mut buf[n..]).unwrap() {
            0 => break,
            k => n += k,
        }
    }
    n
}

/// The chunk files of the local store of `s`.
fn chunk_files(s: &Setup) -> Vec<PathBuf> {
    walk(&s.path("store/tigerbeetle/chunks"))
        .into_iter()
        .filter(|p| p.is_file())
        .collect()
}

fn name_of(data: &Path) -> String {
    data.file_name().unwrap().to_str().unwrap().to_string()
}

#[test]
fn cat_writes_a_chunked_data_file_byte_for_byte_and_names_what_it_cannot_write() {
    let (_dir, data, s, m) = snapshot(StoreKind::Local);
    let id = m["id"].as_str().unwrap();
    let name = name_of(&data);

    // The runbook's command: the data file, rebuilt from its chunks.
    let got = s.path("got");
    let out = bkp_into(&s, &["cat", id, &name], &got);
    assert_exit(&out, 0);
    assert!(same_bytes(&got, &data), "cat ID FILE wrote other bytes");
    // Its only file needs no name.
    let only = s.path("only");
    let out = bkp_into(&s, &["cat", id], &only);
    assert_exit(&out, 0);
    assert!(same_bytes(&only, &data), "cat ID wrote other bytes");

    // A file the backup does not have: the names it has, nothing written.
    let out = s.bkp(&["cat", id, "1_0.tigerbeetle"]);
    assert_exit(&out, CONFIG);
    assert!(out.stdout.is_empty());
    assert!(text(&out).contains(&name), "{}", text(&out));

    // The chunk list, the one object `bkp show` names: pointed at `cat ID FILE`.
    let list = m["chunks"]["list"]["key"].as_str().unwrap();
    let out = s.bkp(&["cat", list]);
    assert_exit(&out, CONFIG);
    assert!(out.stdout.is_empty());
    assert!(
        text(&out).contains(&format!("bkp cat {id} {name}")),
        "{}",
        text(&out)
    );

    // A chunk: its plaintext, the data file's bytes at its place.
    let store = bkp::store::local::LocalStore::new(s.path("store")).unwrap();
    let manifest: bkp::manifest::Manifest = serde_json::from_value(m.clone()).unwrap();
    let map = bkp::chunks::load(&store, &manifest).unwrap().unwrap();
    let (i, c) = map
        .chunks
        .iter()
        .enumerate()
        .find_map(|(i, c)| c.as_ref().map(|c| (i, c)))
        .unwrap();
    let key = format!("tigerbeetle/chunks/{}/{}", &c.0[..2], c.0);
    let out = s.bkp(&["cat", &key]);
    assert_exit(&out, 0);
    let bytes = fs::read(&data).unwrap();
    let at = i * map.chunk_size as usize;
    let end = (at + map.chunk_size as usize).min(bytes.len());
    assert!(out.stdout == bytes[at..end], "cat CHUNK wrote other bytes");
}

/// `bkp cat latest FILE`, as the runbook runs it, on a store whose newest
/// backup is another kind's: the newest backup that holds the file, not the
/// newest backup (a log segment, every 15 minutes, holds none).
#[test]
fn cat_latest_writes_the_newest_backup_that_holds_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let data = common::formatted_data_file(dir.path());
    let s = setup(&data, StoreKind::Local, "[sqlite]\ndatabase = \"app.db\"\n");
    let snap = snapshot_manifest(&s);
    let db = rusqlite::Connection::open(s.path("app.db")).unwrap();
    db.execute_batch("CREATE TABLE t (x); INSERT INTO t VALUES (1);")
        .unwrap();
    drop(db);
    assert_exit(&s.bkp(&["snapshot", "--kind", "sqlite"]), 0);
    let name = name_of(&data);

    let got = s.path("got");
    let out = bkp_into(&s, &["cat", "latest", &name], &got);
    assert_exit(&out, 0);
    assert!(same_bytes(&got, &data), "cat latest FILE wrote other bytes");
    // Which backup it wrote, and the file's SHA-256, for `sha256sum` to be
    // compared with.
    let sha = snap["files"][0]["sha256"].as_str().unwrap();
    let id = snap["id"].as_str().unwrap();
    assert!(
        text(&out).contains(sha) && text(&out).contains(id),
        "{}",
        text(&out)
    );

    // No FILE: the newest backup holding any file as chunks, and that file
    // (the SQLite snapshot, newer, holds its database as one archive).
    let whole = s.path("whole");
    let out = bkp_into(&s, &["cat", "latest"], &whole);
    assert_exit(&out, 0);
    assert!(same_bytes(&whole, &data), "cat latest wrote other bytes");
    assert!(
        text(&out).contains(sha) && text(&out).contains(id) && text(&out).contains(&name),
        "{}",
        text(&out)
    );

    // A file no backup holds: named, nothing written.
    let none = s.path("none");
    let out = bkp_into(&s, &["cat", "latest", "1_0.tigerbeetle"], &none);
    assert_exit(&out, 9);
    assert!(text(&out).contains("1_0.tigerbeetle"), "{}", text(&out));
    assert_eq!(fs::metadata(&none).unwrap().len(), 0);
}

#[test]
fn cat_of_a_damaged_chunk_exits_with_the_integrity_code_and_names_it() {
    let (_dir, data, s, m) = snapshot(StoreKind::Local);
    let id = m["id"].as_str().unwrap();
    let victim = chunk_files(&s).pop().unwrap();
    let chunk = victim.file_name().unwrap().to_str().unwrap().to_string();
    let mut bytes = fs::read(&victim).unwrap();
    let n = bytes.len();
    bytes[n / 2] ^= 1;
    fs::write(&victim, &bytes).unwrap();

    let got = s.path("got");
    let out = bkp_into(&s, &["cat", id, &name_of(&data)], &got);
    assert_exit(&out, INTEGRITY);
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(stderr.contains(&chunk), "{stderr}");
    assert!(!same_bytes(&got, &data), "the damage did not go unnoticed");

    // The chunk alone: the same.
    let key = format!("tigerbeetle/chunks/{}/{chunk}", &chunk[..2]);
    let out = s.bkp(&["cat", &key]);
    assert_exit(&out, INTEGRITY);
    assert!(out.stdout.is_empty());
    assert!(text(&out).contains(&chunk), "{}", text(&out));
}

/// The `objects N (SIZE)` line of `bkp show`: N and SIZE.
fn shown_objects(out: &Output) -> (usize, String) {
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    let line = stdout
        .lines()
        .find_map(|l| l.strip_prefix("objects"))
        .unwrap_or_else(|| panic!("no objects line: {stdout}"))
        .trim();
    let (n, rest) = line.split_once(' ').unwrap();
    let size = rest.trim_start_matches('(').split(')').next().unwrap();
    (n.parse().unwrap(), size.to_string())
}

#[test]
fn show_counts_the_objects_restore_and_verify_read() {
    let (_dir, _data, s, m) = snapshot(StoreKind::Local);
    let id = m["id"].as_str().unwrap();
    let out = s.bkp(&["show", id]);
    assert_exit(&out, 0);
    let (count, size) = shown_objects(&out);
    // The chunk list and every chunk: all the store holds of this backup's data.
    assert_eq!(count, 1 + chunk_files(&s).len(), "{}", text(&out));

    // The restore reads as many, as many bytes.
    let target = s.path("target");
    let out = s.bkp(&[
        "--json",
        "restore",
        "--dry-run",
        id,
        "--target",
        target.to_str().unwrap(),
    ]);
    assert_exit(&out, 0);
    let plan = common::json(&out);
    assert_eq!(
        plan["objects"].as_u64().unwrap() as usize,
        count,
        "{plan:#}"
    );

    // verify reads the same objects and bytes (the list and each chunk).
    let out = s.bkp(&["--json", "verify"]);
    assert_exit(&out, 0);
    let report = common::json(&out);
    let read = report["bytes_read"].as_u64().unwrap();
    let list = m["chunks"]["list"]["size"].as_u64().unwrap();
    let chunks = m["chunks"]["stored_bytes"].as_u64().unwrap();
    assert_eq!(read, list + chunks, "{report:#}");
    assert_eq!(size, format_size(read));
    // And counts as many objects.
    assert_eq!(
        report["backups"][0]["objects"].as_u64().unwrap() as usize,
        count,
        "{report:#}"
    );
}

/// `bytes` as bkp prints sizes (binary units, two decimals).
fn format_size(bytes: u64) -> String {
    bkp::ui::size(bytes)
}

#[test]
fn cat_writes_a_chunked_data_file_from_s3() {
    let (_dir, data, s, m) = snapshot(StoreKind::S3);
    let id = m["id"].as_str().unwrap();
    let got = s.path("got");
    let out = bkp_into(&s, &["cat", id, &name_of(&data)], &got);
    assert_exit(&out, 0);
    assert!(same_bytes(&got, &data), "cat ID FILE wrote other bytes");
}

#[test]
fn cat_whose_file_does_not_match_its_manifest_at_the_end_says_to_discard_it() {
    let (_dir, data, s, m) = snapshot(StoreKind::Local);
    let id = m["id"].as_str().unwrap();
    // A manifest, sealed by the key, whose file digest its chunks do not make
    // up: every chunk checks, only the end can tell.
    let path = s.path(&format!("store/manifests/tigerbeetle/{id}.json"));
    let mut v: serde_json::Value = serde_json::from_slice(&fs::read(&path).unwrap()).unwrap();
    v["files"][0]["sha256"] = "0".repeat(64).into();
    fs::write(&path, serde_json::to_vec(&v).unwrap()).unwrap();
    common::reseal(&path);

    let got = s.path("got");
    let out = bkp_into(&s, &["cat", id, &name_of(&data)], &got);
    assert_exit(&out, INTEGRITY);
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(
        stderr.contains("NOT to be trusted") && stderr.contains("SHA-256"),
        "{stderr}"
    );
    // Every byte went out before the end could be checked: hence the exit code.
    assert!(same_bytes(&got, &data));
}
