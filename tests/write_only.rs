//! A write-only host: it holds only an X25519 recipient (a public key) and an
//! Ed25519 signing key of its own, runs snapshot, logs, export and replicate
//! repeatedly against a real S3 server (SeaweedFS), and can read none of its
//! backups. A second config, with the identity (the private key) and the
//! host's signer, lists, verifies and restores them.

mod common;

use std::fs;
use std::path::Path;
use std::process::Output;

use common::{assert_exit, formatted_data_file, json, repl, run_bkp, tool, TigerBeetle};

fn bkp(cfg: &Path, args: &[&str], env: &[(String, String)]) -> Output {
    let mut all = vec!["--config", cfg.to_str().unwrap()];
    all.extend_from_slice(args);
    run_bkp(&all, env)
}

/// Runs `bkp key generate --type KIND PATH` and returns the config lines it
/// printed (a recipient's line; a signer's table: header, key, this host).
fn generate(kind: &str, path: &Path) -> String {
    let out = run_bkp(
        &["key", "generate", "--type", kind, path.to_str().unwrap()],
        &[],
    );
    assert_exit(&out, 0);
    let text = String::from_utf8(out.stdout).unwrap();
    text.lines().skip(1).take(3).collect::<Vec<_>>().join("\n")
}

fn ids(out: &Output) -> Vec<String> {
    json(out)["backups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["id"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn a_write_only_host_backs_up_and_only_the_identity_restores() {
    let d = tempfile::tempdir().unwrap();
    let root = d.path();
    let s3 = common::shared_s3();
    let bucket = s3.new_bucket("wo");
    let env = s3.env();
    let store = format!(
        "[store]\ntype = \"s3\"\nbucket = \"{bucket}\"\nprefix = \"bkp\"\nendpoint = \"{}\"\npath_style = true\nregion = \"{}\"\n",
        s3.endpoint, s3.region
    );

    // Keys: the identity stays with the operator, the signing key with the host.
    fs::create_dir_all(root.join("admin")).unwrap();
    fs::create_dir_all(root.join("host")).unwrap();
    let recipient = generate("x25519", &root.join("admin/identity"));
    let signer = generate("ed25519", &root.join("host/signing.key"));
    assert!(
        recipient.starts_with("recipient = \"bkp-x25519:"),
        "{recipient}"
    );
    assert!(
        signer.starts_with("[[encryption.signer]]\nkey = \"bkp-ed25519:"),
        "{signer}"
    );
    // What the host backs up, the operator knows: the scope it is trusted for.
    let signers = format!(
        "{signer}\nkinds = [\"tigerbeetle\", \"duckdb\", \"parquet\"]\ntigerbeetle_clusters = [0]"
    );

    // What the host backs up: a data file, a running cluster, a DuckDB
    // database and a Parquet cold tier.
    let data_file = formatted_data_file(&root.join("host"));
    let tb = TigerBeetle::start();
    repl(
        &tb.address(),
        "create_accounts id=1 code=10 ledger=700, id=2 code=10 ledger=700;",
    );
    let db = root.join("host/hot.duckdb");
    let conn = duckdb::Connection::open(&db).unwrap();
    conn.execute_batch(
        "CREATE TABLE events (id INTEGER PRIMARY KEY, seen TIMESTAMP, what VARCHAR);
         INSERT INTO events VALUES (1, '2026-01-01', 'a'), (2, '2026-01-02', 'b');",
    )
    .unwrap();
    drop(conn);
    let cold = root.join("host/cold");
    fs::create_dir_all(&cold).unwrap();
    let parquet = |name: &str| {
        let c = duckdb::Connection::open_in_memory().unwrap();
        c.execute_batch(&format!(
            "COPY (SELECT range AS n FROM range(100)) TO '{}' (FORMAT parquet)",
            cold.join(name).display()
        ))
        .unwrap();
    };
    parquet("a.parquet");

    let host = root.join("host/bkp.toml");
    fs::write(
        &host,
        format!(
            "work_dir = \"work\"\n{store}[encryption]\n{recipient}\nsigning_key_file = \"signing.key\"\n\
             [tigerbeetle]\ndata_file = \"{}\"\nbinary = \"{}\"\naddresses = \"{}\"\n\
             [duckdb]\ndatabase = \"hot.duckdb\"\n[replicate]\nsource = \"cold\"\n",
            data_file.display(),
            tool("tigerbeetle").display(),
            tb.address()
        ),
    )
    .unwrap();

    let run = |args: &[&str]| {
        let out = bkp(&host, args, &env);
        assert_exit(&out, 0);
        out
    };
    // The operator marks the store first, as the guide says: the host takes
    // that marker (sealed with the key it only encrypts to) for its own.
    let admin = root.join("admin/bkp.toml");
    let admin_text = |signers: &str| {
        format!("work_dir = \"work\"\n{store}[encryption]\nidentity_files = [\"identity\"]\n{signers}\n")
    };
    fs::write(&admin, admin_text(&signers)).unwrap();
    assert_exit(&bkp(&admin, &["init"], &env), 0);
    run(&["snapshot"]);
    run(&["logs"]);
    run(&["export", "--full"]);
    run(&["replicate"]);
    // Again, with something new each time: each run reads back only its own
    // (signed) manifests for its watermark, bounds or replicated set.
    repl(&tb.address(), "create_accounts id=3 code=10 ledger=700;");
    duckdb::Connection::open(&db)
        .unwrap()
        .execute_batch("INSERT INTO events VALUES (3, '2026-01-03', 'c');")
        .unwrap();
    parquet("b.parquet");
    run(&["snapshot"]);
    run(&["logs"]);
    run(&["export"]);
    run(&["replicate"]);
    let listed = ids(&run(&["--json", "list"]));
    assert_eq!(listed.len(), 8, "{listed:?}");

    // The host can read none of it: a config error that says why.
    let out = bkp(
        &host,
        &[
            "restore",
            "latest",
            "--target",
            root.join("host/t").to_str().unwrap(),
        ],
        &env,
    );
    assert_exit(&out, 3);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("write-only host"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!root.join("host/t").exists());

    // The operator's side: the identity, and the host's signer.
    let out = bkp(&admin, &["--json", "list"], &env);
    assert_exit(&out, 0);
    assert_eq!(ids(&out), listed);
    assert_exit(&bkp(&admin, &["verify"], &env), 0);
    let target = root.join("admin/ledger");
    let out = bkp(
        &admin,
        &["restore", "latest", "--target", target.to_str().unwrap()],
        &env,
    );
    assert_exit(&out, 0);
    assert_eq!(
        fs::read(target.join("0_0.tigerbeetle")).unwrap(),
        fs::read(&data_file).unwrap()
    );
    let restored = root.join("admin/hot.duckdb");
    let out = bkp(
        &admin,
        &[
            "restore",
            "latest",
            "--kind",
            "duckdb",
            "--target",
            restored.to_str().unwrap(),
        ],
        &env,
    );
    assert_exit(&out, 0);
    let n: i64 = duckdb::Connection::open(&restored)
        .unwrap()
        .query_row("SELECT count(*) FROM events", [], |r| r.get(0))
        .unwrap();
    assert_eq!(n, 3);
    let tier = root.join("admin/cold");
    let out = bkp(
        &admin,
        &[
            "restore",
            "latest",
            "--kind",
            "parquet",
            "--target",
            tier.to_str().unwrap(),
        ],
        &env,
    );
    assert_exit(&out, 0);
    assert_eq!(
        fs::read(tier.join("b.parquet")).unwrap(),
        fs::read(cold.join("b.parquet")).unwrap()
    );

    // Without the host's signer, nothing the host wrote is trusted (and the
    // host's runs wrote no store marker that would lock this config out).
    fs::write(&admin, admin_text("")).unwrap();
    let out = bkp(&admin, &["list"], &env);
    assert_exit(&out, 5);
    assert!(String::from_utf8_lossy(&out.stderr).contains("signer"));
}

/// A dump a write-only host made restores on the key holder's host, with a
/// warning that names the host's signer: a thief of that host can seal any
/// dump of its scope, and pg_restore runs a dump's SQL.
#[test]
fn a_dump_a_host_signed_restores_with_a_warning_naming_its_signer() {
    let pg = &common::postgres::Postgres::start();
    let db = common::unique_name("signed");
    pg.create_db(
        &db,
        "CREATE TABLE t (id int PRIMARY KEY); INSERT INTO t SELECT generate_series(1, 3);",
    );
    let d = tempfile::tempdir().unwrap();
    let root = d.path();
    fs::create_dir_all(root.join("admin")).unwrap();
    fs::create_dir_all(root.join("host")).unwrap();
    let recipient = generate("x25519", &root.join("admin/identity"));
    let signer = generate("ed25519", &root.join("host/signing.key"));
    let store = format!(
        "[store]\ntype = \"local\"\npath = \"{}\"\n",
        root.join("store").display()
    );
    let admin = root.join("admin/bkp.toml");
    fs::write(
        &admin,
        format!(
            "work_dir = \"work\"\n{store}[encryption]\nidentity_files = [\"identity\"]\n{signer}\nkinds = [\"pgdump\"]\n{}",
            pg.toml(&db)
        ),
    )
    .unwrap();
    let host = root.join("host/bkp.toml");
    fs::write(
        &host,
        format!(
            "work_dir = \"work\"\n{store}[encryption]\n{recipient}\nsigning_key_file = \"signing.key\"\n{}",
            pg.toml(&db)
        ),
    )
    .unwrap();
    assert_exit(&bkp(&admin, &["init"], &[]), 0);
    let out = bkp(&host, &["export", "--kind", "pgdump"], &[]);
    assert_exit(&out, 0);
    let id = String::from_utf8(out.stdout).unwrap().trim().to_string();

    let target = common::unique_name("from_signed");
    let out = bkp(&admin, &["restore", &id, "--target", &target], &[]);
    assert_exit(&out, 0);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let warning = stderr
        .lines()
        .find(|l| l.contains("was sealed by"))
        .unwrap_or_else(|| panic!("no warning naming the signer: {stderr}"));
    assert!(
        warning.contains("sealed by ed25519:s-") && warning.contains("not a superuser"),
        "{warning}"
    );
    assert_eq!(pg.psql(&target, "SELECT count(*) FROM t"), "3");
}

/// A host that signs cannot tell the cluster of a file that is no TigerBeetle
/// data file (no `addresses`, no superblock): it stores nothing (exit 3,
/// naming the file), where every reader would refuse a signer's snapshot that
/// names no cluster. Of a real data file it records the file's cluster.
#[test]
fn a_signing_host_stores_no_snapshot_whose_cluster_it_cannot_tell() {
    let d = tempfile::tempdir().unwrap();
    let root = d.path().join("host");
    fs::create_dir_all(&root).unwrap();
    let recipient = generate("x25519", &d.path().join("identity"));
    generate("ed25519", &root.join("signing.key"));
    let plain = root.join("plain.tigerbeetle");
    fs::write(&plain, common::pattern(256 * 1024, 5)).unwrap();
    let config = |data: &Path| {
        let cfg = root.join("bkp.toml");
        fs::write(
            &cfg,
            format!(
                "work_dir = \"work\"\n[store]\ntype = \"local\"\npath = \"store\"\n\
                 [encryption]\n{recipient}\nsigning_key_file = \"signing.key\"\n\
                 [tigerbeetle]\ndata_file = \"{}\"\nsnapshot_format = \"archive\"\n",
                data.display()
            ),
        )
        .unwrap();
        cfg
    };
    let cfg = config(&plain);
    let out = bkp(&cfg, &["snapshot"], &[]);
    assert_exit(&out, 3);
    let text = common::text(&out);
    assert!(
        text.contains(plain.to_str().unwrap()) && text.contains("must name its cluster"),
        "{text}"
    );
    assert!(
        !root.join("store/manifests").exists()
            || fs::read_dir(root.join("store/manifests/tigerbeetle"))
                .map_or(true, |mut e| e.next().is_none()),
        "a snapshot was stored"
    );

    let data = formatted_data_file(&root);
    let cfg = config(&data);
    let out = bkp(&cfg, &["--json", "snapshot"], &[]);
    assert_exit(&out, 0);
    assert_eq!(json(&out)["manifest"]["source"]["cluster_id"], "0");
}
