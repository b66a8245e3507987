//! S3 Object Lock and server-side encryption, through the real binary and the S3
//! store, against moto's server (SeaweedFS implements neither).

mod common;

use std::io::Write;

use bkp::store::s3::{LockMode, ObjectLock, S3Settings, S3Store, Sse};
use bkp::store::Store;
use common::{assert_exit, formatted_data_file, setup_moto, shared_moto, Moto};
use time::format_description::well_known::Rfc3339;
use time::{Duration, OffsetDateTime};

const GOVERNANCE: &str = "object_lock_mode = \"governance\"\nobject_lock_days = 1\n";
/// Keeps only the newest snapshot: every older one is due for deletion.
const KEEP_NOTHING: &str = "[retention]\ngrace = \"1h\"\n[retention.snapshot]\npreset = \"none\"\n";

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Asserts that `bucket/key` is retained in governance mode for about a day.
fn assert_retained(moto: &Moto, bucket: &str, key: &str) {
    let head = moto.head(bucket, key);
    assert_eq!(head.status, 200, "HEAD {key}");
    assert_eq!(
        head.header("x-amz-object-lock-mode"),
        Some("GOVERNANCE"),
        "{key}"
    );
    let until = head
        .header("x-amz-object-lock-retain-until-date")
        .unwrap_or_else(|| panic!("{key} has no retain-until date"));
    let until = OffsetDateTime::parse(until, &Rfc3339).unwrap();
    let expected = OffsetDateTime::now_utc() + Duration::days(1);
    assert!(
        (until - expected).abs() < Duration::minutes(10),
        "{key} retained until {until}, expected about {expected}"
    );
}

#[test]
fn locked_backups_carry_retention_and_cleanup_keeps_them() {
    let moto = shared_moto();
    let bucket = moto.new_bucket("locked", true);
    let dir = tempfile::tempdir().unwrap();
    let data = formatted_data_file(dir.path());
    let mut s = setup_moto(&data, &bucket, GOVERNANCE, KEEP_NOTHING);
    for _ in 0..2 {
        assert_exit(&s.bkp(&["snapshot"]), 0);
    }
    let before = moto.keys(&bucket);
    assert!(
        before.iter().filter(|k| k.contains("/manifests/")).count() == 2,
        "{before:?}"
    );
    for key in &before {
        assert_retained(moto, &bucket, key);
    }
    let ids = s.listed(&[]);
    assert_eq!(ids.len(), 2);

    // Retention would delete the older snapshot; Object Lock keeps it, and that is
    // no failure.
    let out = s.bkp(&["cleanup"]);
    assert_exit(&out, 0);
    let err = stderr(&out);
    assert!(
        err.contains(&format!("kept tigerbeetle {} until", ids[0]))
            && err.contains("by Object Lock"),
        "{err}"
    );
    let after = moto.keys(&bucket);
    for key in &before {
        assert!(
            after.contains(key),
            "{key} is gone after cleanup: {after:?}"
        );
    }
    assert!(
        !after.iter().any(|k| k.contains("/trash/")),
        "a retained backup was tombstoned: {after:?}"
    );
    // The cleanup report is written, retained like everything else.
    let report = after.iter().find(|k| k.contains("/reports/cleanup/"));
    assert_retained(moto, &bucket, report.expect("a cleanup report"));
    assert_eq!(s.listed(&[]), ids);
    assert_exit(&s.bkp(&["verify"]), 0);
    let target = s.path("restored");
    let out = s.bkp(&[
        "restore",
        ids[0].as_str(),
        "--target",
        target.to_str().unwrap(),
    ]);
    assert_exit(&out, 0);

    // Once the retention has passed, the next cleanup deletes the backup, every
    // version of it (a plain delete would leave the bytes behind a delete marker).
    // (Its head stays: bkp never deletes the record that a backup was stored.)
    let old: Vec<&String> = before
        .iter()
        .filter(|k| k.contains(&ids[0]) && !k.contains("/heads/"))
        .collect();
    assert_eq!(old.len(), 2, "{before:?}");
    let soon = OffsetDateTime::now_utc() + Duration::seconds(2);
    for key in &old {
        moto.shorten_retention(&bucket, key, soon);
    }
    std::thread::sleep(std::time::Duration::from_secs(3));
    // A dry run sends no request for the tombstone a real run writes and then
    // deletes (here a delete Object Lock would be asked about), and shows the
    // deletion.
    s.env.push((
        "BKP_LOG".into(),
        "aws_smithy_runtime::client::orchestrator=trace".into(),
    ));
    let dry = s.bkp(&["cleanup", "--dry-run"]);
    s.env.pop();
    assert_exit(&dry, 0);
    let log = stderr(&dry);
    let trash: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("transmitting request") && l.contains("/trash/"))
        .collect();
    assert!(trash.is_empty(), "{trash:?}");
    let plan = String::from_utf8_lossy(&dry.stdout).into_owned();
    assert!(
        plan.lines()
            .any(|l| l.starts_with("delete") && l.contains(ids[0].as_str())),
        "{plan}"
    );
    let out = s.bkp(&["cleanup"]);
    assert_exit(&out, 0);
    assert_eq!(s.listed(&[]), ids[1..]);
    // Its tombstone is retained for a day: it stays, and the next run finishes
    // the (finished) deletion again without failing.
    let err = stderr(&out);
    assert!(
        err.contains("trash/tigerbeetle/") && err.contains("by Object Lock"),
        "{err}"
    );
    assert_exit(&s.bkp(&["cleanup"]), 0);
    let versions = moto.versions(&bucket);
    for key in &old {
        assert!(
            !versions.contains(key),
            "{key} is still stored: {versions:?}"
        );
    }
    assert!(versions.iter().any(|k| k.contains(&ids[1])), "{versions:?}");

    // `bkp check` sees the lock: its probe cannot be deleted, which is expected.
    let out = s.bkp(&["check"]);
    assert_exit(&out, 0);
    assert!(
        stderr(&out).contains("Object Lock")
            || String::from_utf8_lossy(&out.stdout).contains("Object Lock")
    );
}

#[test]
fn object_lock_on_a_bucket_without_it_is_a_config_error() {
    let moto = shared_moto();
    let bucket = moto.new_bucket("unlocked", false);
    let dir = tempfile::tempdir().unwrap();
    let data = formatted_data_file(dir.path());
    let s = setup_moto(&data, &bucket, GOVERNANCE, "");
    for args in [&["snapshot"][..], &["check"], &["cleanup"]] {
        let out = s.bkp(args);
        assert_exit(&out, 3);
        let all = format!("{}{}", stderr(&out), String::from_utf8_lossy(&out.stdout));
        assert!(
            all.contains(&format!(
                "bucket {bucket} does not have Object Lock enabled"
            )),
            "{args:?}: {all}"
        );
    }
    assert!(moto.keys(&bucket).is_empty(), "nothing may be written");
}

#[test]
fn sse_kms_objects_are_encrypted_under_the_key_and_restore() {
    let moto = shared_moto();
    let bucket = moto.new_bucket("kms", false);
    let key_id = moto.create_kms_key();
    let dir = tempfile::tempdir().unwrap();
    let data = formatted_data_file(dir.path());
    let sse = format!("sse = \"aws:kms\"\nsse_kms_key_id = \"{key_id}\"\n");
    let s = setup_moto(&data, &bucket, &sse, "");
    assert_exit(&s.bkp(&["snapshot"]), 0);
    let keys = moto.keys(&bucket);
    assert!(keys.len() >= 2, "{keys:?}");
    for key in &keys {
        let head = moto.head(&bucket, key);
        assert_eq!(
            head.header("x-amz-server-side-encryption"),
            Some("aws:kms"),
            "{key}"
        );
        let used = head
            .header("x-amz-server-side-encryption-aws-kms-key-id")
            .unwrap_or_default();
        assert!(used.ends_with(&key_id), "{key} encrypted under {used:?}");
    }
    let target = s.path("restored");
    let out = s.bkp(&["restore", "latest", "--target", target.to_str().unwrap()]);
    assert_exit(&out, 0);
}

/// Multipart uploads and single puts through the store itself, with both
/// retention and SSE-S3.
#[test]
fn multipart_and_single_writes_carry_retention_and_encryption() {
    let moto = shared_moto();
    let bucket = moto.new_bucket("parts", true);
    // moto takes any credentials.
    let settings = S3Settings {
        bucket: bucket.clone(),
        prefix: "p".into(),
        region: Some("us-east-1".into()),
        endpoint: Some(moto.endpoint.clone()),
        path_style: true,
        part_size: 5 << 20,
        concurrency: 2,
        object_lock: Some(ObjectLock {
            mode: LockMode::Governance,
            days: 1,
        }),
        sse: Some(Sse::Aes256),
        storage_class: None,
        credentials_env: None,
        ca_file: None,
    };
    let store = S3Store::with_credentials(settings, "test", "test").unwrap();
    let mut w = store.create("big.bin", &Vec::new()).unwrap();
    let chunk: Vec<u8> = (0..1 << 20).map(|i| (i * 7 % 251) as u8).collect();
    for _ in 0..11 {
        w.write_all(&chunk).unwrap();
    }
    w.finish().unwrap();
    store.put_new("small.json", b"{}", &Vec::new()).unwrap();
    // moto keeps SSE but drops Object Lock headers of CreateMultipartUpload (moto
    // 5.2.5 applies them on PutObject only), so retention is checked on the
    // single put and encryption on both.
    assert_retained(moto, &bucket, "p/small.json");
    for key in ["p/big.bin", "p/small.json"] {
        let head = moto.head(&bucket, key);
        assert_eq!(
            head.header("x-amz-server-side-encryption"),
            Some("AES256"),
            "{key}"
        );
    }
    assert_eq!(store.head("big.bin").unwrap().unwrap().size, 11 << 20);
    assert!(store.retained_until("small.json").unwrap().is_some());
    // Deleting under retention is refused, as a Retained error.
    let err = store.delete("small.json").unwrap_err();
    assert!(
        err.downcast_ref::<bkp::store::s3::Retained>().is_some(),
        "{err:#}"
    );
    assert!(store.head("small.json").unwrap().is_some());
}

/// A local primary with a copy on S3 whose data objects go to an archive
/// class. The configuration of a copy kept for years.
fn cold_copy(moto: &Moto, bucket: &str, data: &std::path::Path) -> common::Setup {
    let dir = tempfile::tempdir().unwrap();
    common::write_key(dir.path().join("key"), [7u8; 32]);
    let copy = moto
        .store_toml(
            bucket,
            "storage_class = \"glacier\"\nin_backup_runs = true\n",
        )
        .replace("[store]\n", "[[copies]]\nname = \"cold\"\n");
    let config = dir.path().join("bkp.toml");
    std::fs::write(
        &config,
        format!(
            "work_dir = \"work\"\n[store]\ntype = \"local\"\npath = \"store\"\n[encryption]\nkey_file = \"key\"\n[tigerbeetle]\ndata_file = \"{}\"\nbinary = \"{}\"\n{copy}",
            data.display(),
            common::tool("tigerbeetle").display()
        ),
    )
    .unwrap();
    common::Setup {
        dir,
        config,
        env: moto.env(),
    }
}

/// `storage_class` puts a copy's data objects (chunks) in an archive class
/// and leaves what every run reads (manifests, the chunk list, the marker,
/// heads) in the default one. A restore from the copy that meets archived
/// objects stops with exit 14 and counts them; `--dry-run` names them;
/// `--request-restore` asks for each and stops until they are readable; run
/// again, it restores exactly. The primary refuses an archive class.
#[test]
fn archived_objects_are_named_requested_and_then_restored() {
    let moto = shared_moto();
    let bucket = moto.new_bucket("cold", false);
    let dir = tempfile::tempdir().unwrap();
    let data = formatted_data_file(dir.path());
    let s = cold_copy(moto, &bucket, &data);
    assert_exit(&s.bkp(&["snapshot"]), 0);
    let class = |key: &str| {
        moto.head(&bucket, key)
            .header("x-amz-storage-class")
            .unwrap_or("STANDARD")
            .to_string()
    };
    let keys = moto.keys(&bucket);
    let chunks: Vec<&String> = keys.iter().filter(|k| k.contains("/chunks/")).collect();
    assert!(!chunks.is_empty(), "{keys:?}");
    for k in &keys {
        let cold = k.contains("/chunks/");
        assert_eq!(class(k) == "GLACIER", cold, "{k}: {}", class(k));
    }

    // `restore latest` from the copy into `target`, with `more` arguments.
    let restore = |target: &std::path::Path, more: &[&str]| {
        let t = target.to_str().unwrap();
        let mut args = vec!["restore", "--store", "cold", "latest", "--target", t];
        args.extend_from_slice(more);
        s.bkp(&args)
    };
    let target = s.path("restored");
    let out = restore(&target, &[]);
    assert_exit(&out, 14);
    let err = stderr(&out);
    assert!(
        err.contains(&format!("{} are archived (", chunks.len()))
            && err.contains("--request-restore"),
        "{err}"
    );
    assert!(!target.exists(), "nothing restored");
    // What cannot be read is not damage.
    let out = s.bkp(&["verify", "--store", "cold"]);
    assert_exit(&out, 14);
    let out = restore(&target, &["--dry-run"]);
    assert_exit(&out, 0);
    let said = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        said.contains(&format!("archived: {} objects", chunks.len())),
        "{said}"
    );
    let out = restore(&target, &["--request-restore=2,bulk"]);
    assert_exit(&out, 14);
    let err = stderr(&out);
    assert!(
        err.contains(&format!("restores requested now for {}", chunks.len()))
            && err.contains("Bulk tier, readable for 2 days"),
        "{err}"
    );
    assert!(!target.exists(), "nothing restored");
    // The store made them readable: the same command restores.
    let out = restore(&target, &["--request-restore=2,bulk"]);
    assert_exit(&out, 0);
    let restored = common::walk(&target)
        .into_iter()
        .find(|p| p.to_string_lossy().ends_with(".tigerbeetle"))
        .unwrap();
    assert_eq!(
        std::fs::read(restored).unwrap(),
        std::fs::read(&data).unwrap()
    );
    for k in &chunks {
        assert_eq!(class(k), "GLACIER", "{k} keeps its class");
    }

    // A lifecycle rule by prefix moved the chunk list too: it is asked for
    // first (the chunks it names are readable from the request above).
    let list = keys
        .iter()
        .find(|k| k.ends_with(".chunks.json.zst"))
        .unwrap();
    let path = format!("/{bucket}/{list}");
    let moved = moto.request(
        "s3",
        "PUT",
        &path,
        &[
            ("x-amz-copy-source", path.as_str()),
            ("x-amz-storage-class", "GLACIER"),
        ],
        "",
    );
    assert_eq!(moved.status, 200, "{}", moved.body);
    assert_eq!(class(list), "GLACIER");
    let target = s.path("again");
    let out = restore(&target, &["--request-restore"]);
    assert_exit(&out, 14);
    assert!(
        stderr(&out).contains("restores requested now for 1 "),
        "{}",
        stderr(&out)
    );
    let out = restore(&target, &["--request-restore"]);
    assert_exit(&out, 0);
}

#[test]
fn a_storage_class_s3_does_not_know_or_an_archive_class_on_the_primary_is_refused() {
    let moto = shared_moto();
    let bucket = moto.new_bucket("class", false);
    let dir = tempfile::tempdir().unwrap();
    let data = formatted_data_file(dir.path());
    for (class, needle) in [
        ("icy", "is not one of"),
        ("DEEP_ARCHIVE", "put it on a [[copies]] entry"),
    ] {
        let extra = format!("storage_class = \"{class}\"\n");
        let s = setup_moto(&data, &bucket, &extra, "");
        let out = s.bkp(&["snapshot"]);
        assert_exit(&out, 3);
        let err = stderr(&out);
        assert!(
            err.contains("store.storage_class") && err.contains(needle),
            "{err}"
        );
    }
    // Readable classes are the primary's to choose.
    let s = setup_moto(&data, &bucket, "storage_class = \"STANDARD_IA\"\n", "");
    assert_exit(&s.bkp(&["snapshot"]), 0);
}
