//! One conformance suite for every store: the local directory store and S3 on a
//! real SeaweedFS server run exactly the same checks.

mod common;

use std::io::{Read, Write};

use bkp::store::local::LocalStore;
use bkp::store::s3::{S3Settings, S3Store};
use bkp::store::Store;

fn read_all(store: &dyn Store, key: &str) -> Vec<u8> {
    let mut buf = Vec::new();
    store.open(key).unwrap().read_to_end(&mut buf).unwrap();
    buf
}

/// The keys under `prefix`, sorted.
fn keys(store: &dyn Store, prefix: &str) -> Vec<String> {
    store
        .list(prefix)
        .unwrap()
        .into_iter()
        .map(|o| o.key)
        .collect()
}

fn conformance(store: &dyn Store) {
    let meta = vec![("backup-id".to_string(), "x".to_string())];

    // Small objects: put, get, head, list.
    let written = store.put_new("a/one.json", b"{}", &meta).unwrap();
    assert_eq!(store.get("a/one.json").unwrap(), b"{}");
    assert_eq!(store.head("a/one.json").unwrap().unwrap().size, 2);
    // What a write answers is what a listing shows (the catalog knows a run's
    // own manifest by it): the entity tag where the backend has one, else the
    // time.
    let listed = store.list("a/").unwrap();
    let listed = listed.iter().find(|o| o.key == "a/one.json").unwrap();
    assert_eq!(written.size, listed.size);
    match (&written.etag, &listed.etag) {
        (Some(w), Some(l)) => assert_eq!(w, l),
        (None, None) => assert_eq!(written.modified, listed.modified),
        (w, l) => panic!("a write answered entity tag {w:?}, a listing {l:?}"),
    }
    store.put_new("a/empty", b"", &meta).unwrap();
    assert_eq!(store.get("a/empty").unwrap(), b"");

    // Create-only: an existing key is never replaced.
    let err = store.put_new("a/one.json", b"other", &meta).unwrap_err();
    assert!(
        format!("{err:#}").contains("refusing to overwrite"),
        "{err:#}"
    );
    assert_eq!(store.get("a/one.json").unwrap(), b"{}");

    // Missing keys.
    assert!(store.head("a/missing").unwrap().is_none());
    let err = store.open("a/missing").err().unwrap();
    assert_eq!(bkp::exit::exit_code(&err), bkp::exit::NOT_FOUND, "{err:#}");
    store.delete("a/missing").unwrap();

    // Invalid keys are refused before any I/O.
    for bad in ["../x", "/abs", "a//b", ""] {
        assert!(store.put_new(bad, b"x", &meta).is_err(), "{bad:?}");
    }

    // A large object streamed in odd-sized writes: more than two 5 MiB parts and a
    // short last part.
    let big = common::pattern(11 * 1024 * 1024 + 7, 3);
    let mut w = store.create("b/big.bin", &meta).unwrap();
    for chunk in big.chunks(999_983) {
        w.write_all(chunk).unwrap();
    }
    let info = w.finish().unwrap();
    assert_eq!(info.size, big.len() as u64);
    assert_eq!(
        store.head("b/big.bin").unwrap().unwrap().size,
        big.len() as u64
    );
    assert!(
        read_all(store, "b/big.bin") == big,
        "large object corrupted"
    );
    // Read as parallel ranges (several parts on S3), in order, whole.
    let mut parallel = Vec::new();
    store
        .open_parallel("b/big.bin")
        .unwrap()
        .read_to_end(&mut parallel)
        .unwrap();
    assert!(parallel == big, "large object corrupted by a parallel read");
    let err = store.open_parallel("a/missing").err().unwrap();
    assert_eq!(bkp::exit::exit_code(&err), bkp::exit::NOT_FOUND, "{err:#}");

    // An object exactly one part long.
    let exact = common::pattern(5 * 1024 * 1024, 4);
    store.put_new("b/exact.bin", &exact, &meta).unwrap();
    assert!(read_all(store, "b/exact.bin") == exact);

    // Two writers racing for one key: exactly one wins, the winner's bytes stay.
    let first = common::pattern(6 * 1024 * 1024, 5);
    let second = common::pattern(6 * 1024 * 1024, 6);
    let mut w1 = store.create("b/race.bin", &meta).unwrap();
    let mut w2 = store.create("b/race.bin", &meta).unwrap();
    w1.write_all(&first).unwrap();
    w2.write_all(&second).unwrap();
    w1.finish().unwrap();
    assert!(
        w2.finish().is_err(),
        "second writer replaced a finished object"
    );
    assert!(read_all(store, "b/race.bin") == first);

    // Small objects race too: one conditional PUT each decides.
    let mut w1 = store.create("d/small-race", &meta).unwrap();
    let mut w2 = store.create("d/small-race", &meta).unwrap();
    w1.write_all(b"one").unwrap();
    w2.write_all(b"two").unwrap();
    w1.finish().unwrap();
    assert!(w2.finish().is_err(), "second small writer replaced it");
    assert!(store.put_new("d/small-race", b"three", &meta).is_err());
    assert!(read_all(store, "d/small-race") == b"one");

    // Aborted and abandoned writes leave nothing visible.
    let mut w = store.create("c/aborted", &meta).unwrap();
    w.write_all(&common::pattern(6 * 1024 * 1024, 7)).unwrap();
    w.abort().unwrap();
    let mut w = store.create("c/dropped", &meta).unwrap();
    w.write_all(&common::pattern(6 * 1024 * 1024, 8)).unwrap();
    drop(w);
    assert!(store.head("c/aborted").unwrap().is_none());
    assert!(store.head("c/dropped").unwrap().is_none());
    assert!(store.list("c/").unwrap().is_empty());

    // Listing: prefix filtering, sorted, sizes.
    assert_eq!(
        keys(store, ""),
        [
            "a/empty",
            "a/one.json",
            "b/big.bin",
            "b/exact.bin",
            "b/race.bin",
            "d/small-race"
        ]
    );
    // Listing from after a key: what sorts after it, under the prefix only.
    let after = |prefix: &str, after: &str| -> Vec<String> {
        store
            .list_after(prefix, after)
            .unwrap()
            .into_iter()
            .map(|o| o.key)
            .collect()
    };
    assert_eq!(after("a/", "a/empty"), ["a/one.json"]);
    assert_eq!(after("a/", "a/"), ["a/empty", "a/one.json"]);
    assert_eq!(after("b/", "b/z"), Vec::<String>::new());
    assert_eq!(after("", "b/exact.bin"), ["b/race.bin", "d/small-race"]);
    // Listing each as it comes: the same objects, in any order.
    let mut each: Vec<(String, u64)> = Vec::new();
    store
        .list_each("b/", &mut |o| each.push((o.key, o.size)))
        .unwrap();
    each.sort();
    let listed: Vec<(String, u64)> = store
        .list("b/")
        .unwrap()
        .into_iter()
        .map(|o| (o.key, o.size))
        .collect();
    assert_eq!(each, listed);
    assert_eq!(each.len(), 3);
    let a: Vec<String> = keys(store, "a/");
    assert_eq!(a, ["a/empty", "a/one.json"]);
    let partial: Vec<String> = keys(store, "a/o");
    assert_eq!(partial, ["a/one.json"]);

    // Delete.
    store.delete("b/big.bin").unwrap();
    assert!(store.head("b/big.bin").unwrap().is_none());
    assert_eq!(store.list("b/").unwrap().len(), 2);

    // Delete many (one request on S3): a missing key counts as deleted, as
    // with one delete; what was not named stays.
    for k in ["e/1", "e/2", "e/3"] {
        store.put_new(k, b"x", &meta).unwrap();
    }
    let named: Vec<String> = ["e/1", "e/3", "e/missing"].map(String::from).to_vec();
    assert_eq!(store.delete_many(&named).unwrap(), named);
    let left: Vec<String> = keys(store, "e/");
    assert_eq!(left, ["e/2"]);
    assert_eq!(store.delete_many(&[]).unwrap(), Vec::<String>::new());
}

#[test]
fn local_store_conforms() {
    let dir = tempfile::tempdir().unwrap();
    let store = LocalStore::new(dir.path().join("store")).unwrap();
    conformance(&store);
}

#[test]
fn memory_store_conforms() {
    conformance(&bkp::store::memory::MemoryStore::new());
}

#[test]
fn s3_store_conforms_on_a_real_server() {
    let s3 = common::shared_s3();
    let bucket = common::unique_name("conf");
    s3.create_bucket(&bucket);
    for (k, v) in s3.env() {
        // Set once per process before any client exists; every test uses the same values.
        std::env::set_var(k, v);
    }
    let store = S3Store::new(S3Settings {
        bucket,
        prefix: "some/prefix".into(),
        region: Some(s3.region.clone()),
        endpoint: Some(s3.endpoint.clone()),
        path_style: true,
        part_size: 5 * 1024 * 1024,
        concurrency: 3,
        object_lock: None,
        sse: None,
        storage_class: None,
        credentials_env: None,
        ca_file: None,
    })
    .unwrap();
    assert!(store.deletes_in_batches());
    conformance(&store);

    // A write that was never finished nor aborted (its process was killed) leaves
    // a multipart upload behind; sweeping discards it, and only older ones.
    let mut w = store.create("c/killed", &Vec::new()).unwrap();
    w.write_all(&vec![7u8; 6 * 1024 * 1024]).unwrap();
    std::mem::forget(w);
    let before = time::OffsetDateTime::now_utc() - time::Duration::hours(1);
    assert!(store.sweep_unfinished(before, false).unwrap().is_empty());
    let later = time::OffsetDateTime::now_utc() + time::Duration::minutes(1);
    // A dry run names the upload and leaves it; the real sweep discards it.
    let seen = store.sweep_unfinished(later, true).unwrap();
    assert!(seen.iter().any(|u| u.key == "c/killed"), "{seen:?}");
    assert_eq!(
        store.sweep_unfinished(later, true).unwrap().len(),
        seen.len()
    );
    assert!(!store.sweep_unfinished(later, false).unwrap().is_empty());
    assert!(store.sweep_unfinished(later, false).unwrap().is_empty());
    assert!(store.head("c/killed").unwrap().is_none());
    // No multipart upload is left behind by the aborted and dropped writes.
    let out = s3.rclone(&[
        "backend",
        "list-multipart-uploads",
        &format!("s3:{}", store_bucket(&store)),
    ]);
    if out.status.success() {
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            !text.contains("c/aborted") && !text.contains("c/dropped"),
            "{text}"
        );
    }
}

fn store_bucket(s: &S3Store) -> String {
    s.identity()
        .trim_start_matches("s3://")
        .split('/')
        .next()
        .unwrap()
        .to_string()
}
