//! A store inside another store's folders is never taken for that store's
//! leftovers. A prefix or local path in one of bkp's own folders is a config
//! error (exit 3); a store nested deeper (below another installation's prefix,
//! or made before the store around it) is left alone by that store's cleanup,
//! which deletes unnamed objects past `grace` in its folders otherwise. Through
//! the real binary on TigerBeetle snapshots, with local stores and S3 on SeaweedFS.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::{Duration, SystemTime};

use common::{
    assert_exit, formatted_data_file, run_bkp, setup, shared_s3, tool, unique_name, StoreKind,
};

/// Retention that deletes all but the newest snapshot, and no grace: every
/// unnamed object is a leftover at once.
const SWEEP: &str = "[retention]\ngrace = \"0s\"\n[retention.snapshot]\npreset = \"none\"\n";

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// A config `{name}.toml` in `dir` of another installation (its own key and
/// work directory), snapshotting `data` into the store `store_toml`.
fn installation(dir: &Path, name: &str, store_toml: &str, data: &Path) -> PathBuf {
    common::write_key(dir.join(format!("{name}.key")), [8u8; 32]);
    let config = dir.join(format!("{name}.toml"));
    fs::write(
        &config,
        format!(
            "work_dir = \"work-{name}\"\n{store_toml}[encryption]\nkey_file = \"{name}.key\"\n\
             [tigerbeetle]\ndata_file = \"{}\"\nbinary = \"{}\"\n",
            data.display(),
            tool("tigerbeetle").display()
        ),
    )
    .unwrap();
    config
}

fn bkp(config: &Path, env: &[(String, String)], args: &[&str]) -> Output {
    let mut all = vec!["--config", config.to_str().unwrap()];
    all.extend_from_slice(args);
    run_bkp(&all, env)
}

fn age(p: &Path, by: Duration) {
    let f = fs::File::options().write(true).open(p).unwrap();
    f.set_modified(SystemTime::now() - by).unwrap();
}

#[test]
fn a_store_in_a_folder_of_bkp_is_a_config_error() {
    let d = tempfile::tempdir().unwrap();
    let data = formatted_data_file(d.path());
    let s3 = shared_s3();
    let s3_store = |bucket: &str, prefix: &str| {
        format!(
            "[store]\ntype = \"s3\"\nbucket = \"{bucket}\"\nprefix = \"{prefix}\"\nendpoint = \"{}\"\npath_style = true\nregion = \"{}\"\n",
            s3.endpoint, s3.region
        )
    };
    // Refused before any request: the bucket need not exist.
    for prefix in [
        "postgres",
        "/manifests/team/",
        "tigerbeetle/inner",
        "wal",
        "trash",
        "leases",
    ] {
        let config = installation(d.path(), "bad", &s3_store("nowhere", prefix), &data);
        let out = bkp(&config, &s3.env(), &["list"]);
        assert_exit(&out, 3);
        let err = text(&out.stderr);
        assert!(
            err.contains("store.prefix") && err.contains("a folder bkp keeps its own objects in"),
            "{prefix}: {err}"
        );
    }
    let config = installation(d.path(), "env", &s3_store("nowhere", "team"), &data);
    let mut env = s3.env();
    env.push(("BKP_S3_PREFIX".into(), "pgdump".into()));
    let out = bkp(&config, &env, &["list"]);
    assert_exit(&out, 3);
    assert!(
        text(&out.stderr).contains("BKP_S3_PREFIX"),
        "{}",
        text(&out.stderr)
    );
    // A kind's name further down is a folder of this installation's own.
    let bucket = unique_name("nest");
    s3.create_bucket(&bucket);
    let config = installation(d.path(), "fine", &s3_store(&bucket, "team/postgres"), &data);
    assert_exit(&bkp(&config, &s3.env(), &["list"]), 0);

    // A local store inside a kind folder of a store found above it.
    let outer = setup(&data, StoreKind::Local, "");
    assert_exit(&outer.bkp(&["init"]), 0);
    let inside = format!(
        "[store]\ntype = \"local\"\npath = \"{}\"\n",
        outer.path("store/postgres/inner").display()
    );
    let config = installation(d.path(), "inside", &inside, &data);
    let out = bkp(&config, &[], &["list"]);
    assert_exit(&out, 3);
    let err = text(&out.stderr);
    assert!(
        err.contains("store.path") && err.contains("lies in postgres/ of the bkp store at"),
        "{err}"
    );
    let mut env = vec![(
        "BKP_STORE_PATH".to_string(),
        outer.path("store/tigerbeetle").display().to_string(),
    )];
    let out = bkp(&config, &env, &["list"]);
    assert_exit(&out, 3);
    assert!(
        text(&out.stderr).contains("BKP_STORE_PATH"),
        "{}",
        text(&out.stderr)
    );
    // Beside bkp's folders, it is a store of its own.
    env[0].1 = outer.path("store/elsewhere").display().to_string();
    assert_exit(&bkp(&config, &env, &["list"]), 0);
}

/// Two stores nested in the outer store's `tigerbeetle/` folder (one with a
/// marker, one with only manifests), the outer store's own leftover beside
/// them, and the outer store's cleanup: the leftover goes, the nested stores
/// stay whole.
#[test]
fn cleanup_never_sweeps_a_local_store_nested_in_its_folders() {
    let d = tempfile::tempdir().unwrap();
    let data = formatted_data_file(d.path());
    let outer = setup(&data, StoreKind::Local, SWEEP);
    // Made before the outer store exists: once it does, their configs are
    // refused (see above), but their objects are still there.
    for (name, rel, init) in [
        ("marked", "store/tigerbeetle/inner", true),
        ("unmarked", "store/tigerbeetle/2020/01/02/unmarked", false),
    ] {
        let store = format!(
            "[store]\ntype = \"local\"\npath = \"{}\"\n",
            outer.path(rel).display()
        );
        let config = installation(d.path(), name, &store, &data);
        if init {
            assert_exit(&bkp(&config, &[], &["init"]), 0);
        }
        assert_exit(&bkp(&config, &[], &["snapshot"]), 0);
    }
    let nested = common::walk(&outer.path("store/tigerbeetle"));
    assert!(
        nested.iter().any(|p| p.ends_with("inner/bkp-store.json"))
            && nested.iter().any(|p| p
                .to_string_lossy()
                .contains("unmarked/manifests/tigerbeetle/")),
        "{nested:?}"
    );

    assert_exit(&outer.bkp(&["snapshot"]), 0);
    assert_exit(&outer.bkp(&["snapshot"]), 0);
    let orphan = outer.path("store/tigerbeetle/2020/01/01/tigerbeetle-snapshot-orphan.tar.zst.enc");
    fs::create_dir_all(orphan.parent().unwrap()).unwrap();
    fs::write(&orphan, b"half an upload").unwrap();
    age(&orphan, Duration::from_secs(7200));
    let out = outer.bkp(&["cleanup"]);
    assert_exit(&out, 0);
    let gone: Vec<&PathBuf> = nested.iter().filter(|p| !p.exists()).collect();
    assert!(
        gone.is_empty(),
        "the outer store's cleanup deleted a nested store's objects: {gone:?}\n{}",
        text(&out.stderr)
    );
    assert!(
        !orphan.exists(),
        "the outer store's own leftover is removed"
    );
    let err = text(&out.stderr);
    assert!(
        err.contains("tigerbeetle/inner/ in") && err.contains("holds another bkp store"),
        "{err}"
    );
    assert_eq!(outer.listed(&[]).len(), 1);
}

/// The same on S3: the nested stores live below the outer installation's
/// prefix (`outer/tigerbeetle/…`), where no config rule can see them.
#[test]
fn cleanup_never_sweeps_an_s3_store_nested_in_its_folders() {
    let d = tempfile::tempdir().unwrap();
    let data = formatted_data_file(d.path());
    let s3 = shared_s3();
    let bucket = unique_name("nest");
    s3.create_bucket(&bucket);
    let store = |prefix: &str| {
        format!(
            "[store]\ntype = \"s3\"\nbucket = \"{bucket}\"\nprefix = \"{prefix}\"\nendpoint = \"{}\"\npath_style = true\nregion = \"{}\"\n",
            s3.endpoint, s3.region
        )
    };
    let env = s3.env();
    for (name, prefix, init) in [
        ("marked", "outer/tigerbeetle/inner", true),
        ("unmarked", "outer/tigerbeetle/2020/01/02/unmarked", false),
    ] {
        let config = installation(d.path(), name, &store(prefix), &data);
        if init {
            assert_exit(&bkp(&config, &env, &["init"]), 0);
        }
        assert_exit(&bkp(&config, &env, &["snapshot"]), 0);
    }
    let keys = || -> Vec<String> {
        let out = s3.rclone(&["lsf", "-R", &format!("s3:{bucket}/outer/tigerbeetle")]);
        assert!(out.status.success(), "{}", text(&out.stderr));
        text(&out.stdout)
            .lines()
            .filter(|k| !k.ends_with('/'))
            .map(String::from)
            .collect()
    };
    let nested = keys();
    assert!(
        nested.iter().any(|k| k == "inner/bkp-store.json")
            && nested
                .iter()
                .any(|k| k.starts_with("2020/01/02/unmarked/manifests/tigerbeetle/")),
        "{nested:?}"
    );

    let outer = installation(
        d.path(),
        "outer",
        &format!("{}{SWEEP}", store("outer")),
        &data,
    );
    assert_exit(&bkp(&outer, &env, &["snapshot"]), 0);
    assert_exit(&bkp(&outer, &env, &["snapshot"]), 0);
    let orphan = format!("s3:{bucket}/outer/tigerbeetle/2020/01/01/orphan.tar.zst.enc");
    let up = s3.rclone_stdin(&["rcat", &orphan], b"left by a crash");
    assert!(up.status.success(), "{}", text(&up.stderr));
    std::thread::sleep(Duration::from_millis(1100));
    let out = bkp(&outer, &env, &["cleanup"]);
    assert_exit(&out, 0);
    let after = keys();
    let gone: Vec<&String> = nested.iter().filter(|k| !after.contains(k)).collect();
    assert!(
        gone.is_empty(),
        "the outer store's cleanup deleted a nested store's objects: {gone:?}\n{}",
        text(&out.stderr)
    );
    assert!(
        !after.iter().any(|k| k.contains("orphan")),
        "the outer store's own leftover is removed: {after:?}"
    );
    // The nested installations still list their backups.
    for name in ["marked", "unmarked"] {
        let out = bkp(
            &d.path().join(format!("{name}.toml")),
            &env,
            &["--json", "list"],
        );
        assert_exit(&out, 0);
        let listed = common::json(&out);
        assert_eq!(listed["backups"].as_array().unwrap().len(), 1, "{listed}");
    }
}
