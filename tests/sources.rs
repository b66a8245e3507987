//! One conformance suite for every source bkp backs up: each kind goes through the
//! same steps, through the real binary, against a local store and the real S3 server
//! (SeaweedFS), with the audit ledger on a real TigerBeetle cluster.
//!
//! The steps: back up; `list --json` shows it; `show ID` works; `verify` passes;
//! `restore` into a new target gives back exactly the source
//! (file bytes or every row); a restore onto a non-empty target without `--force`
//! exits 8 and leaves it untouched; `restore --dry-run` and `cleanup --dry-run` write
//! nothing, neither in the store nor where targets go; a damaged stored object is
//! refused by `restore` and `verify` (exit 5) with nothing left where targets go, and
//! the repaired store verifies again; an incremental backup (where the kind has one)
//! restores as `latest` to exactly the changed source; `verify --drill` passes on the
//! newest backup (with its chain); a run killed in the middle of its upload, and one
//! killed after its manifest is stored but before the audit ledger records it, are
//! each followed by a good run and a clean `verify` (the ledger audit included), and
//! the last restores exactly; `bkp copy` then brings a second store up to date, and
//! the last backup restores exactly from it; and once the key file is gone, a
//! config whose only key is the escrow's identity verifies every backup and
//! restores the last exactly, from the store and from the copy.
//!
//! A kind is one [`Source`] (in `sources/`) and one line in [`kinds!`], which
//! makes one `#[test]` per kind and store (`duckdb::s3`, `pgdump::local`, …), so that
//! a failure names both.

mod common;

#[path = "sources/mod.rs"]
mod kinds;

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::Output;

use common::{assert_exit, json, run_bkp, shared_s3, Setup};
use kinds::duckdb::DuckDbExport;
use kinds::parquet::ParquetTier;
use kinds::postgres::{PgBase, PgDump};
use kinds::sqlite::SqliteDb;
use kinds::tigerbeetle::{TigerBeetleLogs, TigerBeetleSnapshot};

// ---- What a kind provides -----------------------------------------------------------------

/// One source kind, as the suite drives it. `dir` is the test's directory, where the
/// config lives (relative paths in the config are relative to it).
pub trait Source {
    /// The kind, as `--kind` names it and manifests record it.
    fn kind(&self) -> &'static str;
    /// Makes real content to back up (and starts the servers it needs).
    fn populate(&mut self, dir: &Path);
    /// The config's section(s) for this source, once it is populated.
    fn config_section(&self, dir: &Path) -> String;
    /// The `bkp` arguments of a full backup.
    fn back_up(&self) -> Vec<String>;
    /// Changes the source (differently at each call) and gives the `bkp` arguments
    /// of a backup that builds on the previous one; `None` when the kind has no
    /// such backup.
    fn incremental(&mut self, _dir: &Path) -> Option<Vec<String>> {
        None
    }
    /// Whether `verify --drill` restores and proves this kind.
    fn drill(&self) -> bool {
        true
    }
    /// A new restore target named `name`: a path under `dir/targets` by default.
    fn target(&self, dir: &Path, name: &str) -> String {
        dir.join("targets").join(name).display().to_string()
    }
    /// The `bkp` arguments that restore `backup` (an id or `latest`) into `target`.
    fn restore_args(&self, backup: &str, target: &str) -> Vec<String> {
        let args = ["restore", backup, "--kind", self.kind(), "--target", target];
        args.map(String::from).to_vec()
    }
    /// Whether what was restored at `target` is exactly the source as it is now.
    fn compare(&self, dir: &Path, target: &str) -> Result<(), String>;
    /// Everything where targets go, to tell that a refused or dry run changed
    /// nothing there: every file under `dir/targets` by default.
    fn targets(&self, dir: &Path) -> BTreeMap<String, String> {
        fingerprints(&dir.join("targets"))
    }
}

/// Makes one `#[test]` per kind and store, and [`kinds`]: a new kind gets the whole
/// suite from one line here.
macro_rules! kinds {
    ($($name:ident => $make:expr,)*) => {
        /// Every kind the suite runs.
        fn kinds() -> Vec<Box<dyn Source>> {
            vec![$(Box::new($make)),*]
        }
        $(mod $name {
            use super::*;
            #[test]
            fn local() {
                conformance(stringify!($name), Box::new($make), Store::Local);
            }
            #[test]
            fn s3() {
                conformance(stringify!($name), Box::new($make), Store::S3);
            }
        })*
    };
}

kinds! {
    tigerbeetle => TigerBeetleSnapshot::default(),
    tblogs => TigerBeetleLogs::default(),
    duckdb => DuckDbExport::default(),
    parquet => ParquetTier::default(),
    pgdump => PgDump::default(),
    postgres => PgBase::default(),
    sqlite => SqliteDb::default(),
}

/// `bkp restore --kind` accepts exactly the kinds this suite runs: a kind added to
/// bkp without an entry here fails this test.
#[test]
fn every_restorable_kind_is_in_the_suite() {
    let cmd = bkp::cli::command();
    let restore = cmd
        .find_subcommand("restore")
        .expect("a restore subcommand");
    let kind = restore.get_arguments().find(|a| a.get_id() == "kind");
    let mut cli: Vec<String> = kind
        .expect("restore takes --kind")
        .get_possible_values()
        .iter()
        .map(|v| v.get_name().to_string())
        .collect();
    let mut suite: Vec<String> = kinds().iter().map(|k| k.kind().to_string()).collect();
    cli.sort();
    suite.sort();
    suite.dedup();
    assert_eq!(
        cli, suite,
        "every kind `bkp restore` knows needs a Source here"
    );
}

// ---- The steps --------------------------------------------------------------------------

#[derive(Clone, Copy, Debug)]
enum Store {
    Local,
    S3,
}

/// Runs every step for one kind (`name` in the list) against one store.
fn conformance(name: &str, mut source: Box<dyn Source>, store: Store) {
    let kind = source.kind();
    let dir = tempfile::tempdir().unwrap();
    fs::create_dir(dir.path().join("targets")).unwrap();
    source.populate(dir.path());
    let section = source.config_section(dir.path());
    let c = Case::new(dir, store, &section, name);

    c.step("back up");
    let id = c.back_up(&source.back_up());

    c.step("list --json shows it");
    assert_eq!(c.s.listed(&["--kind", kind]), std::slice::from_ref(&id));
    assert!(c.s.listed(&[]).contains(&id));

    c.step("show ID");
    let out = c.s.bkp(&["--json", "show", &id]);
    assert_exit(&out, 0);
    let shown = &json(&out)["manifest"];
    assert_eq!(
        (shown["id"].as_str(), shown["kind"].as_str()),
        (Some(&*id), Some(kind))
    );
    let out = c.s.bkp(&["show", &id]);
    assert_exit(&out, 0);
    assert!(text(&out.stdout).contains(&id), "{}", text(&out.stdout));

    c.step("verify");
    assert_exit(&c.s.bkp(&["verify"]), 0);

    c.step("restore ID into a new target");
    let first = source.target(c.dir(), "first");
    assert_exit(&c.run(&source.restore_args(&id, &first)), 0);
    c.exact(&*source, &first);

    c.step("restore onto a non-empty target without --force");
    let before = source.targets(c.dir());
    let out = c.run(&source.restore_args(&id, &first));
    assert_exit(&out, 8);
    assert_eq!(source.targets(c.dir()), before, "the target was touched");

    c.step("restore --dry-run");
    let listing = c.listing();
    let dry = source.target(c.dir(), "dry");
    let mut args = source.restore_args(&id, &dry);
    args.push("--dry-run".into());
    assert_exit(&c.run(&args), 0);
    assert_eq!(source.targets(c.dir()), before, "a dry run wrote a target");
    assert_eq!(c.listing(), listing, "a restore dry run wrote to the store");

    c.step("cleanup --dry-run");
    assert_exit(&c.s.bkp(&["cleanup", "--dry-run"]), 0);
    assert_exit(&c.s.bkp(&["--json", "cleanup", "--dry-run"]), 0);
    assert_eq!(c.listing(), listing, "a cleanup dry run wrote to the store");
    assert_eq!(c.s.listed(&["--kind", kind]), std::slice::from_ref(&id));

    c.step("a damaged object is refused");
    let damaged = c.damage();
    let refused = source.target(c.dir(), "damaged");
    let out = c.run(&source.restore_args("latest", &refused));
    assert_exit(&out, 5);
    assert_eq!(
        source.targets(c.dir()),
        before,
        "a refused restore left something"
    );
    let out = c.s.bkp(&["verify"]);
    assert_exit(&out, 5);
    let said = text(&[out.stdout, out.stderr].concat());
    let name = damaged.key.rsplit('/').next().unwrap();
    assert!(
        said.contains(name),
        "verify does not name {}: {said}",
        damaged.key
    );
    c.repair(damaged);
    assert_exit(&c.s.bkp(&["verify"]), 0);

    // The drill restores the newest backup: after the incremental, its chain.
    let mut newest = id.clone();
    if let Some(args) = source.incremental(c.dir()) {
        c.step("incremental backup");
        newest = c.back_up(&args);
        assert_eq!(c.s.listed(&["--kind", kind]), [id.clone(), newest.clone()]);
        assert_exit(&c.s.bkp(&["verify"]), 0);
        c.step("restore latest after the incremental");
        let latest = source.target(c.dir(), "latest");
        assert_exit(&c.run(&source.restore_args("latest", &latest)), 0);
        c.exact(&*source, &latest);
    }
    if source.drill() {
        c.step("verify --drill");
        c.drill(&newest);
    }

    // Killed while its first object is on its way (a partial upload is left), and
    // killed once its manifest is stored but before the audit ledger records it:
    // each time the next run completes, and `verify` (the ledger audit with it)
    // finds nothing wrong.
    let mut last = newest;
    for point in ["store-write", "manifest-stored"] {
        c.step(&format!("a backup killed at {point}, then the next one"));
        let listed = c.s.listed(&["--kind", kind]);
        let args = source
            .incremental(c.dir())
            .unwrap_or_else(|| source.back_up());
        let killed = c.killed(&args, point);
        if killed && point == "store-write" {
            let now = c.s.listed(&["--kind", kind]);
            assert_eq!(now, listed, "a run killed mid-upload is listed");
        }
        last = c.back_up(&args);
        assert_exit(&c.s.bkp(&["verify"]), 0);
    }
    let after = source.target(c.dir(), "after-kill");
    assert_exit(&c.run(&source.restore_args(&last, &after)), 0);
    c.exact(&*source, &after);

    // 3-2-1: `bkp copy` brings the configured copy (a local directory) up to
    // date, and the last backup restores from it exactly, the primary unread.
    c.step("bkp copy, then restore from the copy");
    let out = c.s.bkp(&["copy"]);
    assert_exit(&out, 0);
    assert!(c.s.listed(&["--store", "dr"]).contains(&last));
    let copied = source.target(c.dir(), "from-copy");
    let mut args = source.restore_args(&last, &copied);
    args.extend(["--store".to_string(), "dr".to_string()]);
    assert_exit(&c.run(&args), 0);
    c.exact(&*source, &copied);

    // A real cleanup plans on each backup in brief, reads what it deletes
    // again and reads the store afresh after: it does what its dry run
    // showed (the default policy of some kinds deletes older backups even
    // this young), keeps the last backup, and leaves a store that verifies.
    c.step("cleanup, as its dry run planned");
    let before = c.s.listed(&["--kind", kind]);
    let dry = c.s.bkp(&["--json", "cleanup", "--dry-run"]);
    assert_exit(&dry, 0);
    let real = c.s.bkp(&["--json", "cleanup"]);
    assert_exit(&real, 0);
    let (dry, real) = (json(&dry), json(&real));
    assert_eq!(real["backups"], dry["backups"]);
    let planned = |action: &str| -> Vec<String> {
        let rows = real["backups"].as_array().unwrap().iter();
        let mut ids: Vec<String> = rows
            .filter(|r| r["kind"] == kind && r["action"] == action)
            .map(|r| r["id"].as_str().unwrap().to_string())
            .collect();
        ids.sort();
        ids
    };
    let mut both = [planned("keep"), planned("delete")].concat();
    both.sort();
    assert_eq!(both, before);
    assert_eq!(c.s.listed(&["--kind", kind]), planned("keep"));
    assert!(planned("keep").contains(&last));
    assert_exit(&c.s.bkp(&["verify"]), 0);

    // The key is lost: the escrow's identity, the only key of a new config,
    // verifies every backup (every one was written with the escrow) and
    // restores the last exactly, from the primary and from the copy.
    c.step("the key is lost: the escrow alone verifies and restores");
    let listed = c.s.listed(&["--kind", kind]);
    fs::rename(c.dir().join("key"), c.dir().join("key.lost")).unwrap();
    let vault = c.vault();
    assert_exit(&vault.bkp(&["verify"]), 0);
    assert_eq!(vault.listed(&["--kind", kind]), listed);
    for (name, from) in [("by-escrow", None), ("by-escrow-from-copy", Some("dr"))] {
        let target = source.target(c.dir(), name);
        let mut args = source.restore_args(&last, &target);
        if let Some(copy) = from {
            args.extend(["--store".to_string(), copy.to_string()]);
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        assert_exit(&vault.bkp(&args), 0);
        c.exact(&*source, &target);
    }
}

/// One kind's test: its directory, config and store.
struct Case {
    s: Setup,
    store: Store,
    bucket: Option<String>,
    what: String,
    started: std::time::Instant,
}

/// A config beside a case's ([`Case::vault`]).
struct VaultConfig<'a> {
    case: &'a Case,
    config: std::path::PathBuf,
}

impl VaultConfig<'_> {
    fn bkp(&self, args: &[&str]) -> Output {
        let mut all = vec!["--config", self.config.to_str().unwrap()];
        all.extend_from_slice(args);
        run_bkp(&all, &self.case.s.env)
    }

    fn listed(&self, args: &[&str]) -> Vec<String> {
        common::listed_by(|a| self.bkp(a), args)
    }
}

/// An object [`Case::damage`] changed, with its original bytes.
struct Damaged {
    key: String,
    original: Vec<u8>,
}

/// The S3 key prefix of the suite's stores.
const PREFIX: &str = "team/bkp";

/// The copy every case keeps (3-2-1), in a local directory.
const COPY: &str = "[[copies]]\nname = \"dr\"\ntype = \"local\"\npath = \"copy\"\n";

impl Case {
    /// A config with a store, a key, the shared audit ledger and `section`.
    fn new(dir: tempfile::TempDir, store: Store, section: &str, name: &str) -> Case {
        common::write_key(dir.path().join("key"), [7u8; 32]);
        let (store_toml, env, bucket) = match store {
            Store::Local => (
                "[store]\ntype = \"local\"\npath = \"store\"\n".to_string(),
                vec![],
                None,
            ),
            Store::S3 => {
                let s3 = shared_s3();
                let bucket = s3.new_bucket(name);
                let toml = format!(
                    "[store]\ntype = \"s3\"\nbucket = \"{bucket}\"\nprefix = \"{PREFIX}\"\nendpoint = \"{}\"\npath_style = true\nregion = \"{}\"\npart_size = \"5MiB\"\nconcurrency = 3\n",
                    s3.endpoint, s3.region
                );
                (toml, s3.env(), Some(bucket))
            }
        };
        let ledger = format!(
            "[ledger]\naddresses = \"{}\"\nledger = 12\ntimeout = \"5s\"\n",
            common::shared_ledger().address()
        );
        // An escrow, whose identity a config of its own uses once the key
        // is lost (see `Case::vault`).
        let escrow = dir.path().join("escrow");
        assert_exit(
            &run_bkp(
                &[
                    "key",
                    "generate",
                    "--type",
                    "escrow",
                    escrow.to_str().unwrap(),
                ],
                &[],
            ),
            0,
        );
        let config = dir.path().join("bkp.toml");
        let toml = format!(
            "work_dir = \"work\"\n{store_toml}[encryption]\nkey_file = \"key\"\nescrow_files = [\"escrow\"]\n{ledger}{section}{COPY}"
        );
        fs::write(&config, toml).unwrap();
        Case {
            s: Setup { dir, config, env },
            store,
            bucket,
            what: format!("{name}/{store:?}"),
            started: std::time::Instant::now(),
        }
    }

    fn dir(&self) -> &Path {
        self.s.dir.path()
    }

    /// The case's config with the escrow's identity as its only key (and a
    /// work directory of its own), beside it.
    fn vault(&self) -> VaultConfig<'_> {
        let toml = fs::read_to_string(&self.s.config).unwrap();
        let toml = toml
            .replace(
                "key_file = \"key\"\nescrow_files = [\"escrow\"]\n",
                "identity_files = [\"escrow.identity\"]\n",
            )
            .replacen("work_dir = \"work\"", "work_dir = \"vault-work\"", 1);
        assert!(toml.contains("escrow.identity"), "{toml}");
        let config = self.dir().join("vault.toml");
        fs::write(&config, toml).unwrap();
        VaultConfig { case: self, config }
    }

    /// Says which step runs: a failing test's output then names it.
    fn step(&self, name: &str) {
        let t = self.started.elapsed().as_secs_f32();
        eprintln!("[{} {t:6.1}s] {name}", self.what);
    }

    fn run(&self, args: &[String]) -> Output {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        self.s.bkp(&args)
    }

    /// Runs a backup; its id.
    fn back_up(&self, args: &[String]) -> String {
        let mut all = vec!["--json".to_string()];
        all.extend_from_slice(args);
        let out = self.run(&all);
        assert_exit(&out, 0);
        let id = json(&out)["manifest"]["id"].as_str().map(String::from);
        id.unwrap_or_else(|| panic!("no manifest id in {}", text(&out.stdout)))
    }

    /// `verify --drill` passes, and drilled backup `id`.
    fn drill(&self, id: &str) {
        let out = self.s.bkp(&["--json", "verify", "--drill"]);
        assert_exit(&out, 0);
        let report = json(&out);
        let drills = report["drills"].as_array().cloned().unwrap_or_default();
        let ok = drills.iter().all(|d| d["ok"] == true);
        assert!(ok && drills.iter().any(|d| d["id"] == id), "{report:#}");
    }

    /// The restored content is exactly the source's, and nothing else is left
    /// beside the restore targets (no staging).
    #[track_caller]
    fn exact(&self, source: &dyn Source, target: &str) {
        if let Err(e) = source.compare(self.dir(), target) {
            panic!(
                "[{}] restored content differs from the source: {e}",
                self.what
            );
        }
        let beside: Vec<String> = fs::read_dir(self.dir().join("targets"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with('.') || n.contains("bkp"))
            .collect();
        assert!(beside.is_empty(), "left beside the targets: {beside:?}");
    }

    /// Every object in the store: key → size and a fingerprint of its bytes (local:
    /// SHA-256; S3: size, time and the hashes rclone sees, so a rewrite shows).
    fn listing(&self) -> BTreeMap<String, (u64, String)> {
        match self.store {
            Store::Local => {
                let root = self.dir().join("store");
                common::walk(&root)
                    .into_iter()
                    .map(|p| {
                        let key = p.strip_prefix(&root).unwrap().display().to_string();
                        (key, (fs::metadata(&p).unwrap().len(), digest(&p)))
                    })
                    .collect()
            }
            Store::S3 => {
                let remote = self.remote("");
                let out = shared_s3().rclone(&[
                    "lsjson",
                    "-R",
                    "--files-only",
                    "--hash",
                    "--use-server-modtime",
                    &remote,
                ]);
                assert!(out.status.success(), "rclone lsjson: {}", text(&out.stderr));
                let items: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
                items
                    .into_iter()
                    .map(|o| {
                        let key = o["Path"].as_str().unwrap().to_string();
                        let size = o["Size"].as_u64().unwrap();
                        (key, (size, format!("{} {}", o["ModTime"], o["Hashes"])))
                    })
                    .collect()
            }
        }
    }

    /// `s3:BUCKET/PREFIX/key`.
    fn remote(&self, key: &str) -> String {
        let bucket = self.bucket.as_deref().unwrap();
        format!("s3:{bucket}/{PREFIX}/{key}")
            .trim_end_matches('/')
            .to_string()
    }

    /// Flips one byte in the middle of the largest data object (not a manifest, a
    /// catalog or a report): with one backup in the store, a restore reads it.
    fn damage(&self) -> Damaged {
        let bookkeeping = [
            "manifests/",
            "catalog/",
            "reports/",
            "trash/",
            "leases/",
            "heads/",
            "legacy/",
            ".bkp-",
        ];
        let (key, _) = self
            .listing()
            .into_iter()
            .filter(|(k, _)| !bookkeeping.iter().any(|b| k.starts_with(b)))
            .filter(|(k, _)| k != "bkp-store.json")
            .max_by_key(|(_, (size, _))| *size)
            .expect("a data object in the store");
        let original = self.read_object(&key);
        let mut bytes = original.clone();
        let mid = bytes.len() / 2;
        bytes[mid] ^= 0x01;
        self.write_object(&key, &bytes);
        eprintln!("[{}] damaged {key} ({} bytes)", self.what, bytes.len());
        Damaged { key, original }
    }

    /// Puts the damaged object's original bytes back.
    fn repair(&self, d: Damaged) {
        self.write_object(&d.key, &d.original);
    }

    fn read_object(&self, key: &str) -> Vec<u8> {
        match self.store {
            Store::Local => fs::read(self.dir().join("store").join(key)).unwrap(),
            Store::S3 => {
                let out = shared_s3().rclone(&["cat", &self.remote(key)]);
                assert!(out.status.success(), "rclone cat: {}", text(&out.stderr));
                out.stdout
            }
        }
    }

    fn write_object(&self, key: &str, bytes: &[u8]) {
        match self.store {
            Store::Local => fs::write(self.dir().join("store").join(key), bytes).unwrap(),
            Store::S3 => {
                let out = shared_s3().rclone_stdin(&["rcat", &self.remote(key)], bytes);
                assert!(out.status.success(), "rclone rcat: {}", text(&out.stderr));
            }
        }
    }

    /// Runs a backup that SIGKILLs itself at failpoint `point` (`BKP_FAILPOINT`, see
    /// `src/failpoint.rs`). On S3, `store-write` is in multipart uploads only, which
    /// small objects do not need: such a run may finish. Whether it was killed.
    fn killed(&self, args: &[String], point: &str) -> bool {
        let mut env = self.s.env.clone();
        env.push(("BKP_FAILPOINT".into(), point.into()));
        let mut all = vec!["--config", self.s.config.to_str().unwrap()];
        all.extend(args.iter().map(String::as_str));
        let out = run_bkp(&all, &env);
        let killed = out.status.signal() == Some(9);
        let may_finish = point == "store-write" && matches!(self.store, Store::S3);
        assert!(
            killed || (may_finish && out.status.success()),
            "`bkp {}` was not SIGKILLed at {point}: {}\n{}",
            args.join(" "),
            out.status,
            text(&out.stderr)
        );
        eprintln!("[{}] killed at {point}: {killed}", self.what);
        killed
    }
}

// ---- Helpers ----------------------------------------------------------------------------

/// Waits until no process runs in `dir` (a killed server's last children).
pub fn wait_until_unused(dir: &Path) {
    let dir = fs::canonicalize(dir).unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let inside = || {
        fs::read_dir("/proc")
            .unwrap()
            .flatten()
            .any(|e| fs::read_link(e.path().join("cwd")).is_ok_and(|cwd| cwd.starts_with(&dir)))
    };
    while inside() {
        assert!(
            std::time::Instant::now() < deadline,
            "processes still run in {}",
            dir.display()
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

pub fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

pub fn digest(p: &Path) -> String {
    let f = fs::File::open(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    bkp::stages::hash::digest_reader(std::io::BufReader::new(f))
        .unwrap()
        .sha256
}

/// Relative path → SHA-256 of every file under `root` (or of `root` itself when it
/// is a file), and `dir` for every directory: empty ones show too.
pub fn tree(root: &Path) -> BTreeMap<String, String> {
    walk_with(root, |p, _| digest(p))
}

/// Like [`tree`], but a file over 16 MiB (a restored TigerBeetle data file) is
/// told by its inode, size, modification and change times instead of read whole:
/// any write changes its change time.
pub fn fingerprints(root: &Path) -> BTreeMap<String, String> {
    use std::os::unix::fs::MetadataExt;
    walk_with(root, |p, m| {
        if m.len() <= 16 << 20 {
            return digest(p);
        }
        let (ino, len) = (m.ino(), m.len());
        let (mtime, ctime) = ((m.mtime(), m.mtime_nsec()), (m.ctime(), m.ctime_nsec()));
        format!("{ino} {len} {mtime:?} {ctime:?}")
    })
}

fn walk_with(
    root: &Path,
    file: impl Fn(&Path, &fs::Metadata) -> String,
) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(p) = stack.pop() {
        let Ok(meta) = fs::symlink_metadata(&p) else {
            continue;
        };
        let rel = p.strip_prefix(root).unwrap().display().to_string();
        if meta.is_dir() {
            if p != root {
                out.insert(rel, "dir".into());
            }
            stack.extend(fs::read_dir(&p).unwrap().map(|e| e.unwrap().path()));
        } else if meta.is_file() {
            out.insert(rel, file(&p, &meta));
        } else {
            out.insert(rel, format!("{:?}", meta.file_type()));
        }
    }
    out
}
