//! Escrow: every backup stays readable after the working key is lost. A host
//! with a key and an escrow file backs up a TigerBeetle data file (chunked),
//! a DuckDB database and a Parquet tier to a real S3 server (SeaweedFS); the
//! key file is then deleted, and a config whose only key is the escrow's
//! identity (kept offline until then) lists, verifies, drills and restores
//! them, every seal believed as its own key's.

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

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
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
fn the_escrow_identity_alone_restores_verifies_and_drills_after_the_key_is_lost() {
    let d = tempfile::tempdir().unwrap();
    let root = d.path();
    let s3 = common::shared_s3();
    let bucket = s3.new_bucket("escrow");
    let env = s3.env();
    let store = format!(
        "[store]\ntype = \"s3\"\nbucket = \"{bucket}\"\nprefix = \"bkp\"\nendpoint = \"{}\"\npath_style = true\nregion = \"{}\"\n",
        s3.endpoint, s3.region
    );
    let host_dir = root.join("host");
    let vault = root.join("vault");
    fs::create_dir_all(&host_dir).unwrap();
    fs::create_dir_all(&vault).unwrap();

    // The working key, and an escrow: its identity goes to the vault.
    assert_exit(
        &run_bkp(
            &["key", "generate", host_dir.join("key").to_str().unwrap()],
            &[],
        ),
        0,
    );
    let out = run_bkp(
        &[
            "key",
            "generate",
            "--type",
            "escrow",
            host_dir.join("escrow").to_str().unwrap(),
        ],
        &[],
    );
    assert_exit(&out, 0);
    let printed = String::from_utf8(out.stdout).unwrap();
    assert!(printed.contains("escrow_files = ["), "{printed}");
    fs::rename(
        host_dir.join("escrow.identity"),
        vault.join("escrow.identity"),
    )
    .unwrap();

    let data_file = formatted_data_file(&host_dir);
    let tb = TigerBeetle::start();
    repl(
        &tb.address(),
        "create_accounts id=1 code=10 ledger=700, id=2 code=10 ledger=700;",
    );
    let db = host_dir.join("hot.duckdb");
    duckdb::Connection::open(&db)
        .unwrap()
        .execute_batch(
            "CREATE TABLE events (id INTEGER PRIMARY KEY, what VARCHAR);
             INSERT INTO events VALUES (1, 'a'), (2, 'b');",
        )
        .unwrap();
    let cold = host_dir.join("cold");
    fs::create_dir_all(&cold).unwrap();
    duckdb::Connection::open_in_memory()
        .unwrap()
        .execute_batch(&format!(
            "COPY (SELECT range AS n FROM range(100)) TO '{}' (FORMAT parquet)",
            cold.join("a.parquet").display()
        ))
        .unwrap();

    let sources = format!(
        "[tigerbeetle]\ndata_file = \"{}\"\nbinary = \"{}\"\naddresses = \"{}\"\n\
         [duckdb]\ndatabase = \"hot.duckdb\"\n[replicate]\nsource = \"cold\"\n",
        data_file.display(),
        tool("tigerbeetle").display(),
        tb.address()
    );
    let host = host_dir.join("bkp.toml");
    let host_text = |escrow: &str| {
        format!("work_dir = \"work\"\n{store}[encryption]\nkey_file = \"key\"\n{escrow}\n{sources}")
    };
    // The store is marked before the escrow is configured: the marker
    // carries no seal of it, and the first run with the escrow vouches for it.
    fs::write(&host, host_text("")).unwrap();
    let out = bkp(&host, &["check"], &env);
    assert!(
        stderr(&out).contains("no escrow is configured"),
        "{}",
        stderr(&out)
    );
    assert_exit(&bkp(&host, &["init"], &env), 0);

    fs::write(&host, host_text("escrow_files = [\"escrow\"]")).unwrap();
    let out = bkp(&host, &["check"], &env);
    assert!(
        !stderr(&out).contains("no escrow is configured"),
        "{}",
        stderr(&out)
    );
    for args in [
        &["snapshot"][..],
        &["logs"],
        &["export", "--full"],
        &["replicate"],
    ] {
        assert_exit(&bkp(&host, args, &env), 0);
    }
    repl(&tb.address(), "create_accounts id=3 code=10 ledger=700;");
    duckdb::Connection::open(&db)
        .unwrap()
        .execute_batch("INSERT INTO events VALUES (3, 'c');")
        .unwrap();
    for args in [&["snapshot"][..], &["logs"], &["export"]] {
        assert_exit(&bkp(&host, args, &env), 0);
    }
    let out = bkp(&host, &["--json", "list"], &env);
    assert_exit(&out, 0);
    let listed = ids(&out);
    assert_eq!(listed.len(), 7, "{listed:?}");
    let out = bkp(&host, &["--json", "init"], &env);
    assert_exit(&out, 0);
    let store_id = json(&out)["store_id"].as_str().unwrap().to_string();

    // The working key is lost. The escrow identity comes out of the vault.
    fs::remove_file(host_dir.join("key")).unwrap();
    let admin = vault.join("bkp.toml");
    let vault_text = |pin: &str| {
        format!(
            "work_dir = \"work\"\n{store}[encryption]\nidentity_files = [\"escrow.identity\"]\n{pin}\n{sources}"
        )
    };
    fs::write(&admin, vault_text("")).unwrap();
    let out = bkp(&admin, &["--json", "list"], &env);
    assert_exit(&out, 0);
    assert_eq!(
        ids(&out),
        listed,
        "every backup is listed, its seal believed"
    );

    // Without the statement that vouches for the marker (deleted), the
    // vault says to pin the store id; pinned, it reads the store again.
    let listing = s3.rclone(&["lsf", "-R", &format!("s3:{bucket}/bkp/escrow")]);
    let statement = String::from_utf8(listing.stdout).unwrap();
    let statement = statement
        .lines()
        .next()
        .expect("an escrow statement")
        .to_string();
    let gone = s3.rclone(&["deletefile", &format!("s3:{bucket}/bkp/escrow/{statement}")]);
    assert!(gone.status.success());
    let out = bkp(&admin, &["list"], &env);
    assert_exit(&out, 3);
    assert!(stderr(&out).contains("store_id"), "{}", stderr(&out));
    fs::write(&admin, vault_text(&format!("store_id = \"{store_id}\""))).unwrap();
    let out = bkp(&admin, &["--json", "list"], &env);
    assert_exit(&out, 0);
    assert_eq!(ids(&out), listed);

    // `verify` reads every object, chunks by the file's digest, and drills.
    assert_exit(&bkp(&admin, &["verify", "--drill"], &env), 0);
    let target = vault.join("ledger");
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
    // Each kind's latest, restored with the escrow's identity alone.
    let restore_kind = |kind: &str, target: &Path| {
        let args = [
            "restore",
            "latest",
            "--kind",
            kind,
            "--target",
            target.to_str().unwrap(),
        ];
        assert_exit(&bkp(&admin, &args, &env), 0);
    };
    let restored = vault.join("hot.duckdb");
    restore_kind("duckdb", &restored);
    let n: i64 = duckdb::Connection::open(&restored)
        .unwrap()
        .query_row("SELECT count(*) FROM events", [], |r| r.get(0))
        .unwrap();
    assert_eq!(n, 3);
    let tier = vault.join("cold");
    restore_kind("parquet", &tier);
    assert_eq!(
        fs::read(tier.join("a.parquet")).unwrap(),
        fs::read(cold.join("a.parquet")).unwrap()
    );
}
