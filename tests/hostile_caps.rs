//! The store as an attacker who can write to it would fill it: objects longer
//! than their manifests say, compression bombs encrypted to the public
//! recipient, multi-GiB objects where a small document belongs, lease claims at
//! the top of the epochs, keys that carry terminal escapes. Every read stops at
//! what was recorded (or at a cap far above anything bkp writes), nothing past
//! it is written anywhere, and what bkp prints of a key is harmless.
//!
//! "Nothing past it is written" is checked by the kernel: the run gets a file
//! size limit (`RLIMIT_FSIZE`) at what the manifest records, and a write past
//! it kills the run with SIGXFSZ. "Not read whole" is checked by the run's
//! peak memory (`VmHWM`, read from `/proc` while it runs: `wait4`'s
//! `ru_maxrss` would count the test process it was forked from) against the
//! size of what was planted.

mod common;

use std::fs;
use std::io::{self, Read, Write};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use common::{
    assert_exit, bkp_command, formatted_data_file, json, repl, run_bkp, text, tool, TigerBeetle,
};

/// What is planted where a small document belongs.
const PLANTED: usize = 128 << 20;
/// Peak memory of a run that did not read [`PLANTED`] bytes into memory (KiB).
const PEAK_KIB: u64 = 96 << 10;

/// What the run gets before bkp starts.
#[derive(Clone, Copy, Default)]
struct Limits {
    /// `RLIMIT_FSIZE`: no file the run writes may grow past this.
    file_size: Option<u64>,
    umask: Option<u32>,
}

/// Runs `bkp --config CONFIG ARGS` under `limits`: its output and its peak
/// resident memory in KiB.
fn bkp_limited(
    config: &Path,
    args: &[&str],
    env: &[(String, String)],
    limits: Limits,
) -> (Output, u64) {
    let mut cmd = bkp_command(env);
    cmd.arg("--config").arg(config).args(args);
    let Limits { file_size, umask } = limits;
    // SAFETY: only async-signal-safe calls between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            if let Some(n) = file_size {
                let r = libc::rlimit {
                    rlim_cur: n,
                    rlim_max: n,
                };
                if libc::setrlimit(libc::RLIMIT_FSIZE, &r) != 0 {
                    return Err(io::Error::last_os_error());
                }
                let none = libc::rlimit {
                    rlim_cur: 0,
                    rlim_max: 0,
                };
                libc::setrlimit(libc::RLIMIT_CORE, &none);
            }
            if let Some(m) = umask {
                libc::umask(m);
            }
            Ok(())
        });
    }
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    let drain = |mut r: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut b = Vec::new();
            let _ = r.read_to_end(&mut b);
            b
        })
    };
    let stdout = drain(Box::new(child.stdout.take().unwrap()));
    let stderr = drain(Box::new(child.stderr.take().unwrap()));
    let pid = child.id() as libc::pid_t;
    let done = Arc::new(AtomicBool::new(false));
    let watched = done.clone();
    std::thread::spawn(move || {
        std::thread::sleep(common::BKP_TIMEOUT);
        if !watched.load(Ordering::SeqCst) {
            // SAFETY: signals a child not reaped yet.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
    });
    // The child has exec'd: its memory is bkp's own from here on.
    let sampled = done.clone();
    let sampler = std::thread::spawn(move || {
        let mut peak = 0u64;
        while !sampled.load(Ordering::SeqCst) {
            let hwm = fs::read_to_string(format!("/proc/{pid}/status"))
                .ok()
                .and_then(|s| {
                    let line = s.lines().find_map(|l| l.strip_prefix("VmHWM:"))?;
                    line.trim()
                        .trim_end_matches("kB")
                        .trim()
                        .parse::<u64>()
                        .ok()
                });
            peak = peak.max(hwm.unwrap_or(0));
            std::thread::sleep(Duration::from_millis(1));
        }
        peak
    });
    let status = child.wait().unwrap();
    done.store(true, Ordering::SeqCst);
    let out = Output {
        status,
        stdout: stdout.join().unwrap(),
        stderr: stderr.join().unwrap(),
    };
    (out, sampler.join().unwrap())
}

/// Exit `code` (not a signal: SIGXFSZ means something wrote past its
/// limit), naming `needle`.
#[track_caller]
fn refused(out: &Output, code: i32, needle: &str) {
    assert_eq!(
        out.status.signal(),
        None,
        "killed by a signal (SIGXFSZ is 25: a file was written past what was recorded)\n{}",
        text(out)
    );
    assert_exit(out, code);
    assert!(
        text(out).contains(needle),
        "{needle:?} not named in:\n{}",
        text(out)
    );
}

/// A key-holding installation on a local store in `dir`, plus `extra` TOML.
fn keyed(dir: &Path, extra: &str) -> PathBuf {
    common::write_key(dir.join("key"), [7u8; 32]);
    let config = dir.join("bkp.toml");
    fs::write(
        &config,
        format!("work_dir = \"work\"\n[store]\ntype = \"local\"\npath = \"store\"\n[encryption]\nkey_file = \"key\"\n{extra}"),
    )
    .unwrap();
    config
}

/// A write-only host and its operator on the local store `root/store`: the
/// host holds the public recipient and a signing key, the operator the
/// identity and the host's signer. `extra` goes into both configs. Returns
/// both configs and the recipient, as anyone who has seen the host's config
/// holds it.
fn write_only(root: &Path, extra: &str) -> (PathBuf, PathBuf, bkp::crypto::MasterKey) {
    for d in ["host", "admin"] {
        fs::create_dir_all(root.join(d)).unwrap();
    }
    let generate = |kind: &str, path: PathBuf| {
        let out = run_bkp(
            &["key", "generate", "--type", kind, path.to_str().unwrap()],
            &[],
        );
        assert_exit(&out, 0);
        // The config lines it printed (a signer's table: header, key, hosts).
        String::from_utf8(out.stdout)
            .unwrap()
            .lines()
            .skip(1)
            .take(3)
            .collect::<Vec<_>>()
            .join("\n")
    };
    let recipient = generate("x25519", root.join("admin/identity"));
    let signers = format!(
        "{}\nkinds = [\"tigerbeetle\", \"postgres\"]\ntigerbeetle_clusters = [0]\npostgres_systems = [\"7301234567890123456\"]",
        generate("ed25519", root.join("host/signing.key"))
    );
    let store = format!(
        "work_dir = \"work\"\n[store]\ntype = \"local\"\npath = \"{}\"\n",
        root.join("store").display()
    );
    let host = root.join("host/bkp.toml");
    fs::write(
        &host,
        format!("{store}[encryption]\n{recipient}\nsigning_key_file = \"signing.key\"\n{extra}"),
    )
    .unwrap();
    let admin = root.join("admin/bkp.toml");
    fs::write(
        &admin,
        format!("{store}[encryption]\nidentity_files = [\"identity\"]\n{extra}\n{signers}\n"),
    )
    .unwrap();
    let public = recipient.split('"').nth(1).unwrap();
    (
        host,
        admin,
        bkp::crypto::MasterKey::recipient(public).unwrap(),
    )
}

/// `plain`, compressed with zstd and encrypted to `recipient` as bkp's
/// stream format: what a bucket writer can make without any secret.
fn encrypted_zstd(recipient: &bkp::crypto::MasterKey, plain: impl Read) -> Vec<u8> {
    let enc = bkp::crypto::EncryptWriter::new(Vec::new(), recipient).unwrap();
    let mut z = zstd::stream::write::Encoder::new(enc, 3).unwrap();
    io::copy(&mut io::BufReader::new(plain), &mut z).unwrap();
    z.finish().unwrap().finish().unwrap()
}

/// Sets the modification time of `path` a day back.
fn age(path: &Path) {
    let f = fs::File::options().write(true).open(path).unwrap();
    f.set_modified(SystemTime::now() - Duration::from_secs(86_400))
        .unwrap();
}

/// A small Parquet file at `path`, as a cold tier holds.
fn parquet(path: &Path) {
    let c = duckdb::Connection::open_in_memory().unwrap();
    c.execute_batch(&format!(
        "COPY (SELECT range AS n FROM range(100)) TO '{}' (FORMAT parquet)",
        path.display()
    ))
    .unwrap();
}

/// `len` bytes of junk at `path` (not a document of any kind).
fn plant(path: &Path, len: usize) {
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    let mut f = io::BufWriter::new(fs::File::create(path).unwrap());
    let block = common::pattern(1 << 20, 9);
    let mut left = len;
    while left > 0 {
        let n = left.min(block.len());
        f.write_all(&block[..n]).unwrap();
        left -= n;
    }
    f.flush().unwrap();
}

#[test]
fn an_object_longer_than_its_manifest_is_refused_before_more_is_spooled() {
    let d = tempfile::tempdir().unwrap();
    let s = common::setup(
        &formatted_data_file(d.path()),
        common::StoreKind::S3,
        common::ARCHIVE,
    );
    let out = s.bkp(&["--json", "snapshot"]);
    assert_exit(&out, 0);
    let object = json(&out)["manifest"]["objects"][0].clone();
    let key = object["key"].as_str().unwrap();
    let size = object["size"].as_u64().unwrap();

    // The bucket writer replaces the object with itself and 64 MiB more.
    let s3 = common::shared_s3();
    let remote = format!("s3:{}/team/bkp/{key}", s.bucket());
    let mut bytes = s3.rclone(&["cat", &remote]).stdout;
    assert_eq!(bytes.len() as u64, size);
    bytes.extend(common::pattern(64 << 20, 3));
    assert!(s3.rclone_stdin(&["rcat", &remote], &bytes).status.success());

    // `cat` spools what it reads from S3 before decrypting a byte: no file it
    // writes may pass the recorded size.
    let limits = Limits {
        file_size: Some(size + (1 << 20)),
        ..Limits::default()
    };
    let (out, _) = bkp_limited(&s.config, &["cat", key, "--compressed"], &s.env, limits);
    refused(&out, 5, "longer than the");
    assert!(text(&out).contains(key), "{}", text(&out));
    assert!(out.stdout.is_empty(), "nothing of it was written out");
}

#[test]
fn a_compression_bomb_encrypted_to_the_recipient_fills_no_staging() {
    let d = tempfile::tempdir().unwrap();
    let root = d.path();
    let data_file = formatted_data_file(root);
    let tb = format!(
        "[tigerbeetle]\ndata_file = \"{}\"\nbinary = \"{}\"\n{}",
        data_file.display(),
        tool("tigerbeetle").display(),
        common::ARCHIVE
    );
    let (host, admin, recipient) = write_only(root, &tb);
    let out = run_bkp(
        &["--config", host.to_str().unwrap(), "--json", "snapshot"],
        &[],
    );
    assert_exit(&out, 0);
    let m = json(&out)["manifest"].clone();
    let object = &m["objects"][0];
    let content = object["content_bytes"].as_u64().unwrap();

    // A tar holding the data file's name with 64 MiB more zeros than the
    // whole recorded archive: a few KiB compressed, and it authenticates.
    let mut header = tar::Header::new_gnu();
    header.set_path("0_0.tigerbeetle").unwrap();
    header.set_size(content + (64 << 20));
    header.set_mode(0o600);
    header.set_cksum();
    let bomb = encrypted_zstd(
        &recipient,
        (&header.as_bytes()[..]).chain(io::repeat(0).take(content + (65 << 20))),
    );
    // Smaller than the recorded object: the decoder, not the stored size,
    // must stop it.
    assert!(bomb.len() as u64 <= object["size"].as_u64().unwrap());
    let stored = root.join("store").join(object["key"].as_str().unwrap());
    fs::write(&stored, &bomb).unwrap();

    let target = root.join("admin/restored");
    let limits = Limits {
        file_size: Some(content),
        ..Limits::default()
    };
    let id = m["id"].as_str().unwrap();
    let (out, _) = bkp_limited(
        &admin,
        &["restore", id, "--target", target.to_str().unwrap()],
        &[],
        limits,
    );
    // Decoding stopped at the recorded content size (else SIGXFSZ), and the
    // stored bytes, which do not match, are what is reported.
    refused(&out, 5, "failed verification");
    assert!(!target.join("0_0.tigerbeetle").exists());
}

#[test]
fn planted_multi_mib_documents_are_refused_without_being_read() {
    let d = tempfile::tempdir().unwrap();
    fs::create_dir_all(d.path().join("cold")).unwrap();
    parquet(&d.path().join("cold/a.parquet"));
    let config = keyed(d.path(), "[replicate]\nsource = \"cold\"\n");
    let store = d.path().join("store");

    // A store marker: every run that writes reads it first.
    plant(&store.join("bkp-store.json"), PLANTED);
    let (out, peak) = bkp_limited(&config, &["replicate"], &[], Limits::default());
    refused(&out, 5, "bkp-store.json");
    assert!(text(&out).contains("larger than 1 MiB"), "{}", text(&out));
    assert!(
        peak < PEAK_KIB,
        "peak memory {peak} KiB: the marker was read whole"
    );
    fs::remove_file(store.join("bkp-store.json")).unwrap();

    // A manifest (a sparse 300 MiB file): listed larger than any manifest,
    // refused unread, the others still listed.
    let out = run_bkp(&["--config", config.to_str().unwrap(), "replicate"], &[]);
    assert_exit(&out, 0);
    let id = bkp::id::BackupId::new_v7(time::OffsetDateTime::now_utc());
    let planted = format!("manifests/tigerbeetle/{id}.json");
    fs::create_dir_all(store.join("manifests/tigerbeetle")).unwrap();
    let huge = fs::File::create(store.join(&planted)).unwrap();
    huge.set_len(300 << 20).unwrap();
    let (out, peak) = bkp_limited(&config, &["--json", "list"], &[], Limits::default());
    refused(&out, 5, &planted);
    let l = json(&out);
    assert_eq!(l["backups"].as_array().unwrap().len(), 1, "{l:#}");
    let why = l["unreadable"][0]["reason"].as_str().unwrap();
    assert!(why.contains("larger than 256 MiB"), "{why}");
    assert!(
        peak < PEAK_KIB,
        "peak memory {peak} KiB: the manifest was read whole"
    );
}

#[test]
fn planted_lease_claims_neither_wrap_the_epochs_nor_are_read_whole() {
    let tb = TigerBeetle::start();
    let d = tempfile::tempdir().unwrap();
    let config = keyed(
        d.path(),
        &format!("[tigerbeetle]\naddresses = \"{}\"\n", tb.address()),
    );
    repl(
        &tb.address(),
        "create_accounts id=1 code=10 ledger=700, id=2 code=10 ledger=700;",
    );
    // Junk claims older than any lease: one at the last epoch but one (the
    // next claim would be u64::MAX, and the one after it wrap), one of
    // 128 MiB.
    let scope = d
        .path()
        .join(format!("store/leases/tigerbeetle-logs-{:032x}", 0));
    let top = scope.join(format!("{:020}.json", u64::MAX - 1));
    let huge = scope.join(format!("{:020}.json", 5));
    plant(&top, 100);
    plant(&huge, PLANTED);
    age(&top);
    age(&huge);

    let (out, peak) = bkp_limited(&config, &["logs"], &[], Limits::default());
    assert_exit(&out, 0);
    let t = text(&out);
    for planted in [&top, &huge] {
        let name = planted.file_name().unwrap().to_str().unwrap();
        assert!(
            t.contains("ignoring the lease object") && t.contains(name),
            "{name}: {t}"
        );
    }
    assert!(t.contains("larger than 1 MiB"), "{t}");
    assert!(
        peak < PEAK_KIB,
        "peak memory {peak} KiB: the claim was read whole"
    );
    // And again: the planted claims still block nothing.
    repl(
        &tb.address(),
        "create_transfers id=11 debit_account_id=1 credit_account_id=2 amount=5 ledger=700 code=10;",
    );
    let (out, _) = bkp_limited(&config, &["logs"], &[], Limits::default());
    assert_exit(&out, 0);
}

/// A `pg_control` with system identifier `system` and WAL segments of
/// `segment` bytes, laid out as PostgreSQL 15 does on x86-64
/// (`floatFormat` at 208).
fn fake_pgdata(root: &Path, system: u64, segment: u32) -> PathBuf {
    let data = root.join("pgdata");
    fs::create_dir_all(data.join("global")).unwrap();
    fs::create_dir_all(data.join("pg_wal")).unwrap();
    let mut c = vec![0u8; 8192];
    c[..8].copy_from_slice(&system.to_ne_bytes());
    c[208..216].copy_from_slice(&1234567.0f64.to_ne_bytes());
    for (i, v) in [8192u32, 131072, 8192, segment].iter().enumerate() {
        c[216 + 4 * i..220 + 4 * i].copy_from_slice(&v.to_ne_bytes());
    }
    fs::write(data.join("global/pg_control"), c).unwrap();
    data
}

#[test]
fn wal_fetch_writes_no_more_than_a_segment_of_a_planted_object() {
    let d = tempfile::tempdir().unwrap();
    let root = d.path();
    let (_, admin, recipient) = write_only(root, "[postgres]\ndatabase = \"app\"\n");
    let system = 7_301_234_567_890_123_456u64;
    let pgdata = fake_pgdata(root, system, 16 << 20);

    // 64 MiB of zeros under the name of the next segment, with a tag of the
    // right shape: a few KiB stored, encrypted to the recipient.
    let name = "000000010000000000000002";
    let bomb = encrypted_zstd(&recipient, io::repeat(0).take(64 << 20));
    let key = format!("wal/{system}/{name}.{}.zst.enc", "ab".repeat(32));
    fs::create_dir_all(root.join("store").join(&key).parent().unwrap()).unwrap();
    fs::write(root.join("store").join(&key), &bomb).unwrap();

    let limits = Limits {
        file_size: Some(17 << 20),
        ..Limits::default()
    };
    let dest = format!("pg_wal/{name}");
    let args = [
        "wal",
        "fetch",
        name,
        dest.as_str(),
        "--pgdata",
        pgdata.to_str().unwrap(),
    ];
    let (out, _) = bkp_limited(&admin, &args, &[], limits);
    // Damage, which stops recovery (above 125), never "not in the archive".
    refused(&out, 205, "larger than 16 MiB");
    assert_eq!(
        fs::read_dir(pgdata.join("pg_wal")).unwrap().count(),
        0,
        "nothing is left in pg_wal"
    );
}

#[test]
fn keys_with_terminal_escapes_are_printed_harmlessly() {
    let d = tempfile::tempdir().unwrap();
    fs::create_dir_all(d.path().join("cold")).unwrap();
    let config = keyed(d.path(), "[replicate]\nsource = \"cold\"\n");
    let store = d.path().join("store");
    let key = "manifests/tigerbeetle/\x1b[31mred\x1b]0;pwned\x07.json";
    plant(&store.join(key), 10);
    for args in [
        &["list"][..],
        &["verify"][..],
        &["cleanup", "--dry-run"][..],
    ] {
        let out = run_bkp(
            &[&["--config", config.to_str().unwrap()][..], args].concat(),
            &[],
        );
        let all = [&out.stdout[..], &out.stderr[..]].concat();
        assert!(
            !all.iter().any(|&b| b == 0x1b || b == 0x07),
            "{args:?} printed a raw escape: {:?}",
            String::from_utf8_lossy(&all)
        );
        assert!(
            text(&out).contains("manifests/tigerbeetle/?[31mred?]0;pwned?.json"),
            "{args:?} names the key: {}",
            text(&out)
        );
    }
}

#[test]
fn a_local_store_is_its_users_alone_under_umask_022() {
    use std::os::unix::fs::PermissionsExt;
    let d = tempfile::tempdir().unwrap();
    fs::create_dir_all(d.path().join("cold")).unwrap();
    parquet(&d.path().join("cold/a.parquet"));
    let config = keyed(d.path(), "[replicate]\nsource = \"cold\"\n");
    let limits = Limits {
        umask: Some(0o022),
        ..Limits::default()
    };
    let (out, _) = bkp_limited(&config, &["init"], &[], limits);
    assert_exit(&out, 0);
    let (out, _) = bkp_limited(&config, &["replicate"], &[], limits);
    assert_exit(&out, 0);
    let store = d.path().join("store");
    let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&store), 0o700);
    let mut files = 0;
    for e in walkdir::WalkDir::new(&store).min_depth(1) {
        let e = e.unwrap();
        let want = if e.file_type().is_dir() { 0o700 } else { 0o600 };
        assert_eq!(mode(e.path()), want, "{}", e.path().display());
        files += usize::from(e.file_type().is_file());
    }
    assert!(files >= 3, "a marker, a manifest and an object at least");
}

/// A manifest sealed by a holder of the key (a stolen host signs as well):
/// `edit` changes it, and it is sealed again.
fn forge(path: &Path, edit: impl FnOnce(&mut serde_json::Value)) {
    let mut v: serde_json::Value = serde_json::from_slice(&fs::read(path).unwrap()).unwrap();
    edit(&mut v);
    fs::write(path, serde_json::to_vec(&v).unwrap()).unwrap();
    common::reseal(path);
}

#[test]
fn a_sequence_put_far_past_its_schema_is_refused_not_spun_on() {
    let d = tempfile::tempdir().unwrap();
    let config = keyed(d.path(), "[duckdb]\ndatabase = \"hot.duckdb\"\n");
    duckdb::Connection::open(d.path().join("hot.duckdb"))
        .unwrap()
        .execute_batch(
            "CREATE SEQUENCE s START 1;
             CREATE TABLE t (id BIGINT DEFAULT nextval('s'), v INTEGER);
             INSERT INTO t (v) VALUES (1), (2);",
        )
        .unwrap();
    let out = run_bkp(
        &[
            "--config",
            config.to_str().unwrap(),
            "--json",
            "export",
            "--full",
        ],
        &[],
    );
    assert_exit(&out, 0);
    let id = json(&out)["manifest"]["id"].as_str().unwrap().to_string();
    let path = d.path().join(format!("store/manifests/duckdb/{id}.json"));
    forge(&path, |m| {
        m["source"]["sequences"][0]["last_value"] = i64::MAX.into();
    });
    let target = d.path().join("restored.duckdb");
    let args = [
        "restore",
        "latest",
        "--kind",
        "duckdb",
        "--target",
        target.to_str().unwrap(),
    ];
    // A restore that spun towards the forged value would be killed after
    // BKP_TIMEOUT (see `bkp_limited`), and `refused` would fail.
    let (out, _) = bkp_limited(&config, &args, &[], Limits::default());
    refused(&out, 12, "sequence main.s");
    assert!(!target.exists(), "nothing was restored");
}

#[test]
fn a_chunk_count_no_memory_can_hold_is_refused_not_allocated() {
    let d = tempfile::tempdir().unwrap();
    let s = common::setup(&formatted_data_file(d.path()), common::StoreKind::Local, "");
    let out = s.bkp(&["--json", "snapshot"]);
    assert_exit(&out, 0);
    let id = json(&out)["manifest"]["id"].as_str().unwrap().to_string();
    let path = s.path(&format!("store/manifests/tigerbeetle/{id}.json"));
    // 2^40 chunks, and a file that size: consistent, so the manifest is
    // admitted; its list (a few hundred entries) must be read within its own
    // bytes, not into room reserved for 2^40 of them.
    forge(&path, |m| {
        let count: u64 = 1 << 40;
        let size = count * m["chunks"]["chunk_size"].as_u64().unwrap();
        let file = m["chunks"]["file"].clone();
        m["chunks"]["count"] = count.into();
        for f in m["files"].as_array_mut().unwrap() {
            if f["name"] == file {
                f["size"] = size.into();
            }
        }
    });
    let (out, _) = bkp_limited(&s.config, &["verify"], &[], Limits::default());
    refused(&out, 5, "chunk list");
}

/// A write-only host cannot check the store marker's seal, so a marker a
/// bucket writer planted must not name its WAL tags: the key holder could
/// then verify none of them, and recovery would refuse genuine WAL. Without
/// `[encryption] store_id`, a write-only host's tags name no store.
#[test]
fn a_planted_marker_does_not_make_a_write_only_hosts_wal_unreadable() {
    let d = tempfile::tempdir().unwrap();
    let root = d.path();
    let (host, admin, _) = write_only(root, "[postgres]\ndatabase = \"app\"\n");
    let out = run_bkp(&["--config", admin.to_str().unwrap(), "init"], &[]);
    assert_exit(&out, 0);
    let marker = root.join("store/bkp-store.json");
    let genuine = fs::read(&marker).unwrap();
    // The writer swaps the id (the seal no longer verifies, which only the
    // key holder can tell).
    let mut v: serde_json::Value = serde_json::from_slice(&genuine).unwrap();
    v["store_id"] = format!("st-{}", "0".repeat(32)).into();
    fs::write(&marker, serde_json::to_vec(&v).unwrap()).unwrap();

    let system = 7_301_234_567_890_123_456u64;
    let pgdata = common::postgres::fake_pgdata(&root.join("pg"), system);
    let name = "000000010000000000000001";
    let content: Vec<u8> = (0..1u32 << 20).map(|i| (i % 251) as u8).collect();
    fs::write(pgdata.join("pg_wal").join(name), &content).unwrap();
    let at = format!("pg_wal/{name}");
    let out = run_bkp(
        &[
            "--config",
            host.to_str().unwrap(),
            "wal",
            "push",
            &at,
            "--pgdata",
            pgdata.to_str().unwrap(),
        ],
        &[],
    );
    assert_exit(&out, 0);

    // The key holder refuses the planted marker as a whole, not object by
    // object; with its own marker back, the segment is fetched.
    let fetch = || {
        run_bkp(
            &[
                "--config",
                admin.to_str().unwrap(),
                "wal",
                "fetch",
                name,
                "restored",
                "--pgdata",
                pgdata.to_str().unwrap(),
            ],
            &[],
        )
    };
    let out = fetch();
    assert_ne!(out.status.code(), Some(0), "{}", text(&out));
    assert!(text(&out).contains("bkp-store.json"), "{}", text(&out));
    assert!(!pgdata.join("restored").exists());
    fs::write(&marker, &genuine).unwrap();
    let out = fetch();
    assert_exit(&out, 0);
    assert_eq!(fs::read(pgdata.join("restored")).unwrap(), content);
}
