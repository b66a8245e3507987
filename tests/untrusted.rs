//! Property tests over the parsers of bytes read back from a store, which bkp
//! treats as untrusted input: manifests, the encrypted stream (header and
//! chunks), head records, TigerBeetle log segments, tar archives and Parquet
//! footers.
//!
//! Each parser gets valid samples, every file in `tests/corpus/{format}/`, and
//! many random and mutated variants of them. Properties: no input makes a parser
//! panic, and no mutation of an authenticated format (the encrypted stream, a
//! log segment) passes as valid.
//!
//! Runs are reproducible: the seed is printed on failure and taken from
//! `BKP_FUZZ_SEED` when set; `BKP_FUZZ_ROUNDS` sets the number of variants per
//! format. A failing input is written under the cargo target's temporary
//! directory; once fixed, copy it into `tests/corpus/{format}/` so it stays a
//! case.

use std::io::{Cursor, Read, Write};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::PathBuf;

use bkp::crypto::{DecryptReader, EncryptWriter, Keyring, MasterKey};
use bkp::tigerbeetle::tblog::{verify_segment, SegmentWriter};
use tigerbeetle_unofficial as tb;

/// splitmix64: small, fast, and the same everywhere.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

fn seed() -> u64 {
    std::env::var("BKP_FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x6b70_0001)
}

fn rounds() -> usize {
    std::env::var("BKP_FUZZ_ROUNDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1500)
}

/// The checked-in cases for `format`.
fn corpus(format: &str) -> Vec<Vec<u8>> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/corpus")
        .join(format);
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = entries.map(|e| e.unwrap().path()).collect();
    files.sort();
    files.iter().map(|p| std::fs::read(p).unwrap()).collect()
}

/// One mutation of `input`: flipped bits, changed, inserted or removed bytes,
/// a truncation, a duplicated slice, or random bytes.
fn mutate(rng: &mut Rng, input: &[u8]) -> Vec<u8> {
    let mut out = input.to_vec();
    let steps = 1 + rng.below(3);
    for _ in 0..steps {
        let len = out.len();
        match rng.below(7) {
            0 if len > 0 => {
                let i = rng.below(len);
                out[i] ^= 1 << rng.below(8);
            }
            1 if len > 0 => {
                let i = rng.below(len);
                out[i] = rng.next() as u8;
            }
            2 => {
                let i = rng.below(len + 1);
                out.insert(i, rng.next() as u8);
            }
            3 if len > 0 => {
                out.remove(rng.below(len));
            }
            4 if len > 0 => out.truncate(rng.below(len)),
            5 if len > 1 => {
                let a = rng.below(len);
                let b = a + rng.below(len - a).min(64);
                let slice = out[a..b].to_vec();
                let at = rng.below(out.len() + 1);
                out.splice(at..at, slice);
            }
            _ => {
                let n = rng.below(64);
                out = (0..n).map(|_| rng.next() as u8).collect();
            }
        }
    }
    out
}

/// Runs `check` on every sample and `rounds()` variants, failing on a panic,
/// or (when `authenticated`) on a changed input that `check` accepts.
fn fuzz(format: &str, samples: Vec<Vec<u8>>, authenticated: bool, check: impl Fn(&[u8]) -> bool) {
    let seed = seed();
    let mut rng = Rng(seed);
    let samples: Vec<Vec<u8>> = samples.into_iter().chain(corpus(format)).collect();
    assert!(!samples.is_empty());
    for s in &samples {
        let ok = catch_unwind(AssertUnwindSafe(|| check(s)));
        assert!(ok.is_ok(), "{format}: a sample made the parser panic");
    }
    for round in 0..rounds() {
        let base = &samples[rng.below(samples.len())];
        let input = mutate(&mut rng, base);
        let result = catch_unwind(AssertUnwindSafe(|| check(&input)));
        let bad = match result {
            Err(_) => Some("panicked"),
            Ok(true) if authenticated && &input != base && !samples.contains(&input) => {
                Some("accepted a changed input")
            }
            Ok(_) => None,
        };
        if let Some(what) = bad {
            let path = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
                .join(format!("untrusted-{format}-{seed}-{round}.bin"));
            std::fs::write(&path, &input).unwrap();
            panic!(
                "{format}: the parser {what} (BKP_FUZZ_SEED={seed}, round {round}); input saved to {}",
                path.display()
            );
        }
    }
}

fn keyring() -> Keyring {
    Keyring::new(MasterKey::from_bytes([7u8; 32]), Vec::new())
}

#[test]
fn encrypted_streams_refuse_every_change() {
    let keys = keyring();
    let mut samples = Vec::new();
    for size in [0usize, 1, 100, 70_000] {
        let plain: Vec<u8> = (0..size).map(|i| (i * 31 % 251) as u8).collect();
        let mut w = EncryptWriter::with_chunk_log2(Vec::new(), keys.current(), 12).unwrap();
        w.write_all(&plain).unwrap();
        samples.push(w.finish().unwrap());
    }
    fuzz("stream", samples, true, |bytes| {
        let Ok(mut r) = DecryptReader::new(Cursor::new(bytes), &keys) else {
            return false;
        };
        let mut out = Vec::new();
        r.read_to_end(&mut out).is_ok()
    });

    // Streams to a public-key recipient (method 3), opened with its identity.
    let (identity, recipient) = bkp::crypto::pubkey::generate_identity().unwrap();
    let to = MasterKey::recipient(&recipient).unwrap();
    let keys = Keyring::new(
        MasterKey::identity(identity.as_bytes(), "t").unwrap(),
        Vec::new(),
    );
    let samples: Vec<Vec<u8>> = [0usize, 100, 70_000]
        .iter()
        .map(|&size| {
            let mut w = EncryptWriter::with_chunk_log2(Vec::new(), &to, 12).unwrap();
            w.write_all(&vec![3u8; size]).unwrap();
            w.finish().unwrap()
        })
        .collect();
    fuzz("stream-x25519", samples, true, |bytes| {
        let Ok(mut r) = DecryptReader::new(Cursor::new(bytes), &keys) else {
            return false;
        };
        let mut out = Vec::new();
        r.read_to_end(&mut out).is_ok()
    });
}

fn account(id: u128, ts: u64) -> tb::Account {
    let mut a = tb::Account::new(id, 7, 1);
    a.as_raw_mut().timestamp = ts;
    a
}

fn transfer(id: u128, ts: u64) -> tb::Transfer {
    let mut t = tb::Transfer::new(id)
        .with_debit_account_id(1)
        .with_credit_account_id(2)
        .with_amount(99)
        .with_ledger(7)
        .with_code(9);
    t.as_raw_mut().timestamp = ts;
    t
}

#[test]
fn log_segments_refuse_every_change() {
    let mut samples = Vec::new();
    for n in [0u64, 1, 5] {
        let mut w = SegmentWriter::new(Vec::new(), 0xabc, 100, 300).unwrap();
        for i in 0..n {
            w.push_account(&account(u128::from(i) + 1, 101 + 2 * i))
                .unwrap();
            w.push_transfer(&transfer(u128::from(i) + 100, 102 + 2 * i))
                .unwrap();
        }
        samples.push(w.finish().unwrap().0);
    }
    fuzz("segment", samples, true, |bytes| {
        verify_segment(Cursor::new(bytes)).is_ok()
    });
}

#[test]
fn manifests_never_panic_the_parser() {
    let sample = br#"{
  "schema": "bkp.manifest/1.0",
  "id": "0199d091-3000-7000-8000-000000000001",
  "kind": "tigerbeetle",
  "scope": "full",
  "operation": "snapshot",
  "status": "completed",
  "started_at": "2025-10-11T00:00:00Z",
  "finished_at": "2025-10-11T00:00:01Z",
  "host": "h",
  "bkp_version": "0",
  "retention_days": 365,
  "compression": {"algorithm": "zstd", "level": 3, "threads": 1},
  "encryption": {"format": "aes-256-gcm-stream-v1", "key_id": "k1"},
  "objects": [{"key": "tigerbeetle/2025/10/11/x.tar.zst.enc", "size": 10,
    "sha256": "00", "content_bytes": 20, "content_sha256": "11"}],
  "files": [{"name": "0_0.tigerbeetle", "size": 20, "sha256": "22"}],
  "parent": null,
  "source": {"data_file": "/var/lib/tigerbeetle/0_0.tigerbeetle", "rows": 1.5}
}"#;
    let key = "manifests/tigerbeetle/0199d091-3000-7000-8000-000000000001.json";
    let none = bkp::manifest::Trust::none();
    fuzz("manifest", vec![sample.to_vec()], false, |bytes| {
        bkp::manifest::parse(bytes, key, &none).is_ok()
    });

    // Sealed, no change of any field passes: a mutation is either refused or
    // reads as the very same manifest (a change of white space).
    let original = bkp::manifest::parse(sample, key, &none).unwrap();
    let sealed = bkp::manifest::seal::encode(&original, Some(&keyring())).unwrap();
    let trust = bkp::manifest::Trust::new(Some(keyring()), None, Vec::new());
    assert_eq!(
        bkp::manifest::parse(&sealed, key, &trust).unwrap(),
        original
    );
    fuzz("sealed-manifest", vec![sealed], true, |bytes| {
        bkp::manifest::parse(bytes, key, &trust).is_ok_and(|m| m != original)
    });
}

#[test]
fn sealed_lists_refuse_every_change() {
    use bkp::manifest::legacy::{self, List, Listed};
    let at = time::OffsetDateTime::from_unix_timestamp(1_760_140_800).unwrap();
    let trust = bkp::manifest::Trust::new(Some(keyring()), None, Vec::new());
    let mut samples = Vec::new();
    let mut lists = Vec::new();
    for n in [0usize, 1, 7] {
        let list = List {
            schema: legacy::SCHEMA.into(),
            id: bkp::id::BackupId::new_v7(at),
            created_at: at,
            host: "h".into(),
            bkp_version: "0".into(),
            unsealed_before: (n == 1).then_some(at),
            store: None,
            documents: (0..n)
                .map(|i| Listed {
                    key: format!("manifests/tigerbeetle/{i}.json"),
                    sha256: format!("{i:064x}"),
                })
                .collect(),
        };
        samples.push(bkp::manifest::seal::encode(&list, Some(&keyring())).unwrap());
        lists.push(list);
    }
    // Each sample at its own key; a mutation is refused or reads as the same list.
    fuzz("legacy-list", samples, true, |bytes| {
        lists
            .iter()
            .any(|l| legacy::parse(bytes, &legacy::key(l.id), &trust).is_ok_and(|got| &got != l))
    });
}

#[test]
fn tar_archives_never_panic_or_escape_the_target() {
    let d = tempfile::tempdir().unwrap();
    let src = d.path().join("src");
    std::fs::create_dir(&src).unwrap();
    std::fs::write(src.join("a"), b"alpha").unwrap();
    std::fs::write(src.join("b"), vec![0u8; 3000]).unwrap();
    let mut tar = Vec::new();
    let files = bkp::archive::write_files(
        &mut tar,
        &[("a".into(), src.join("a")), ("dir/b".into(), src.join("b"))],
    )
    .unwrap();
    let counter = std::cell::Cell::new(0u64);
    fuzz("tar", vec![tar], false, |bytes| {
        counter.set(counter.get() + 1);
        let dest = d.path().join(format!("t{}", counter.get()));
        std::fs::create_dir(&dest).unwrap();
        let ok = bkp::archive::unpack(&mut Cursor::new(bytes), &dest, &files).is_ok();
        std::fs::remove_dir_all(&dest).unwrap();
        ok
    });
    // The corpus's hostile archives (`..`, absolute paths, a symlink to walk
    // through) are refused outright.
    for (i, hostile) in corpus("tar").iter().enumerate() {
        let dest = d.path().join(format!("hostile{i}"));
        std::fs::create_dir(&dest).unwrap();
        let r = bkp::archive::unpack(&mut Cursor::new(hostile), &dest, &files);
        assert!(r.is_err(), "hostile archive {i} was unpacked");
        std::fs::remove_dir_all(&dest).unwrap();
    }
    assert!(!std::path::Path::new("/tmp/bkp-corpus-escape").exists());
    // Nothing was written beside the targets.
    let names: Vec<_> = std::fs::read_dir(d.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(names, vec!["src".to_string()], "{names:?}");
}

#[test]
fn parquet_footers_never_panic_the_checker() {
    let d = tempfile::tempdir().unwrap();
    let file = d.path().join("t.parquet");
    let conn = duckdb::Connection::open_in_memory().unwrap();
    conn.execute_batch(&format!(
        "COPY (SELECT range AS id, 'row ' || range AS name FROM range(50)) TO '{}' (FORMAT parquet)",
        file.display()
    ))
    .unwrap();
    let sample = std::fs::read(&file).unwrap();
    fuzz("parquet", vec![sample], false, |bytes| {
        bkp::parquet::check_bytes(bytes).is_ok()
    });
}

/// Scoped signers: mutated `[[encryption.signer]]` tables never panic the
/// config parser, and a manifest a signer sealed is used only when every
/// fact its scope limits (host, kind, PostgreSQL system, TigerBeetle
/// cluster) lies inside the scope.
#[test]
fn signer_scopes_hold_for_every_config_and_manifest() {
    use bkp::crypto::pubkey::{generate_signing_key, SigningKey, Verifier};
    use bkp::crypto::SignerScope;
    use bkp::kinds::Kind;
    let (secret, public) = generate_signing_key().unwrap();
    let config = format!(
        "work_dir = \"/w\"\n[store]\ntype = \"local\"\npath = \"/s\"\n[encryption]\nkey_file = \"k\"\n\
         [[encryption.signer]]\nkey = \"{public}\"\nhosts = [\"db1\", \"db2\"]\n\
         kinds = [\"postgres\", \"tigerbeetle\"]\npostgres_systems = [7301234567890123456, \"18446744073709551615\"]\n\
         tigerbeetle_clusters = [0, \"340282366920938463463374607431768211455\"]\n"
    );
    let path = std::path::Path::new("/etc/bkp/t.toml");
    let ov = bkp::config::Overrides::default();
    bkp::config::parse(&config, path, &ov).unwrap();
    fuzz("signer-config", vec![config.into_bytes()], false, |bytes| {
        std::str::from_utf8(bytes).is_ok_and(|t| bkp::config::parse(t, path, &ov).is_ok())
    });

    let scope = SignerScope {
        hosts: vec!["db1".into()],
        kinds: vec![Kind::Postgres, Kind::Tigerbeetle],
        postgres_systems: vec![11],
        tigerbeetle_clusters: vec![7],
    };
    let reader = Keyring::new(MasterKey::from_bytes([3; 32]), Vec::new())
        .with_scoped_signers(None, vec![(Verifier::parse(&public).unwrap(), scope)]);
    let trust = bkp::manifest::Trust::new(Some(reader), None, Vec::new());
    let thief = Keyring::new(MasterKey::from_bytes([9; 32]), Vec::new()).with_signing(
        Some(SigningKey::from_text(secret.as_bytes(), "t").unwrap()),
        vec![],
    );
    let mut rng = Rng(seed());
    let at = time::OffsetDateTime::from_unix_timestamp(1_760_140_800).unwrap();
    for round in 0..rounds().min(2000) {
        let host = ["db1", "db2", ""][rng.below(3)];
        let kind = [Kind::Postgres, Kind::Tigerbeetle, Kind::Duckdb][rng.below(3)];
        let system: Option<serde_json::Value> = [
            None,
            Some(11.into()),
            Some("11".into()),
            Some("12".into()),
            Some("x".into()),
        ][rng.below(5)]
        .clone();
        let cluster: Option<serde_json::Value> = [
            None,
            Some("7".into()),
            Some(7.into()),
            Some("8".into()),
            Some(true.into()),
        ][rng.below(5)]
        .clone();
        let id = bkp::id::BackupId::new_v7(at);
        let mut m = serde_json::json!({
            "schema": "bkp.manifest/1.0", "id": id, "kind": kind, "scope": "full",
            "operation": "snapshot", "status": "completed",
            "started_at": "2025-10-11T00:00:00Z", "finished_at": "2025-10-11T00:00:01Z",
            "host": host, "bkp_version": "0", "retention_days": 365,
            "compression": {"algorithm": "zstd", "level": 3, "threads": 1},
            "encryption": {"format": "aes-256-gcm-stream-v1", "key_id": "k1"},
            "objects": [], "source": {},
        });
        if let Some(s) = &system {
            m["source"]["system_identifier"] = s.clone();
        }
        if let Some(c) = &cluster {
            m["source"]["cluster_id"] = c.clone();
        }
        let key = format!("manifests/{}/{id}.json", kind.as_str());
        let bytes = bkp::manifest::seal::encode(&m, Some(&thief)).unwrap();
        let inside = host == "db1"
            && kind != Kind::Duckdb
            && system
                .as_ref()
                .is_none_or(|s| s == &serde_json::json!(11) || s == "11")
            && cluster
                .as_ref()
                .is_none_or(|c| c == &serde_json::json!(7) || c == "7")
            // A TigerBeetle backup that names no cluster, or a PostgreSQL one
            // that names no system, would be every cluster's or system's:
            // outside a scope that names them.
            && !(kind == Kind::Tigerbeetle && cluster.is_none())
            && !(kind == Kind::Postgres && system.is_none());
        let got = bkp::manifest::parse(&bytes, &key, &trust);
        assert_eq!(
            got.is_ok(),
            inside,
            "round {round}: host {host:?} kind {kind:?} system {system:?} cluster {cluster:?}: {:?}",
            got.err().map(|e| format!("{e:#}"))
        );
    }
}

#[test]
fn head_records_refuse_every_change() {
    use bkp::manifest::head::{self, Head};
    let at = time::OffsetDateTime::from_unix_timestamp(1_760_140_800).unwrap();
    let trust = bkp::manifest::Trust::new(Some(keyring()), None, Vec::new());
    let id = bkp::id::BackupId::new_v7(at).to_string();
    let heads = [
        (
            "tigerbeetle".to_string(),
            id.clone(),
            format!("heads/tigerbeetle/{id}.json"),
        ),
        (
            "wal/42".to_string(),
            "000000010000000000000040".to_string(),
            "heads/wal/42/000000010000000000000040.json".to_string(),
        ),
    ];
    let mut samples = Vec::new();
    let mut docs = Vec::new();
    for (of, name, key) in &heads {
        let h = Head {
            schema: head::SCHEMA.into(),
            of: of.clone(),
            head: name.clone(),
            host: "h".into(),
            recorded_at: at,
            store: None,
        };
        let bytes = bkp::manifest::seal::encode(&h, Some(&keyring())).unwrap();
        assert_eq!(head::parse(&bytes, key, of, &trust, "head").unwrap(), h);
        // At another key, or as the head of something else, it is refused.
        assert!(head::parse(&bytes, "heads/tigerbeetle/x.json", of, &trust, "head").is_err());
        assert!(head::parse(&bytes, key, "duckdb", &trust, "head").is_err());
        samples.push(bytes);
        docs.push((h, key.clone()));
    }
    // A mutation is refused or reads as the same head.
    fuzz("head", samples, true, |bytes| {
        docs.iter().any(|(h, key)| {
            head::parse(bytes, key, &h.of, &trust, "head").is_ok_and(|got| &got != h)
        })
    });
}
