//! The TOML configuration and its validation into a [`Plan`].
//!
//! Parsing is strict (`deny_unknown_fields`): a misspelt key is an error, not a
//! silently ignored setting. Validation happens before anything touches disk or
//! network, and every error names the file, the key and what is expected.
//!
//! Precedence: command-line flags > environment (`BKP_*`) > file > defaults.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result};
use serde::Deserialize;

use crate::crypto::{Keyring, MasterKey};
use crate::exit::{coded, Code};
use crate::ledger::LedgerConfig;
use crate::stages::compress::Compression;
use crate::store::s3::{S3Settings, MAX_PART_SIZE, MIN_PART_SIZE};
use crate::units::{parse_duration, parse_size};

pub mod export;
pub use export::{DuckdbPlan, WithoutWatermark};

/// Where the configuration is looked for when neither `--config` nor `BKP_CONFIG`
/// names one.
pub const DEFAULT_CONFIG: &str = "/etc/bkp/bkp.toml";

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct File {
    pub work_dir: Option<PathBuf>,
    pub store: Option<StoreFile>,
    #[serde(default)]
    pub compression: CompressionFile,
    pub encryption: Option<EncryptionFile>,
    pub tigerbeetle: Option<TigerBeetleFile>,
    pub ledger: Option<LedgerFile>,
    pub retention: Option<crate::retention::RetentionFile>,
    pub freshness: Option<crate::schedule::FreshnessFile>,
    pub metrics: Option<crate::metrics::MetricsFile>,
    pub replicate: Option<crate::replicate::config::ReplicateFile>,
    pub duckdb: Option<export::DuckdbFile>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, tag = "type", rename_all = "lowercase")]
pub enum StoreFile {
    Local {
        path: PathBuf,
    },
    S3 {
        bucket: String,
        #[serde(default)]
        prefix: String,
        region: Option<String>,
        endpoint: Option<String>,
        path_style: Option<bool>,
        part_size: Option<String>,
        concurrency: Option<usize>,
    },
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CompressionFile {
    #[serde(default = "default_algorithm")]
    pub algorithm: String,
    pub level: Option<i32>,
    pub threads: Option<u32>,
}

fn default_algorithm() -> String {
    "zstd".into()
}

impl Default for CompressionFile {
    fn default() -> Self {
        CompressionFile {
            algorithm: default_algorithm(),
            level: None,
            threads: None,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EncryptionFile {
    #[serde(default = "yes")]
    pub enabled: bool,
    pub key_file: Option<PathBuf>,
    pub key_env: Option<String>,
    pub passphrase_env: Option<String>,
    pub key_id: Option<String>,
    /// Keys of older backups, for restores after a rotation.
    #[serde(default)]
    pub old_keys: Vec<OldKeyFile>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OldKeyFile {
    pub key_file: Option<PathBuf>,
    pub key_env: Option<String>,
    pub passphrase_env: Option<String>,
    pub key_id: Option<String>,
}

fn yes() -> bool {
    true
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TigerBeetleFile {
    pub data_file: Option<PathBuf>,
    /// The production cluster, for `bkp logs`.
    pub addresses: Option<String>,
    #[serde(default)]
    pub cluster_id: ClusterId,
    #[serde(default = "default_mode")]
    pub snapshot_mode: String,
    pub stop_command: Option<Vec<String>>,
    pub start_command: Option<Vec<String>>,
    pub stop_timeout: Option<String>,
    pub binary: Option<PathBuf>,
    /// Flags for replicas bkp starts itself (point-in-time restore), as the
    /// production cluster runs them, e.g. ["--development"] or ["--limit-request=1MiB"].
    #[serde(default)]
    pub replica_args: Vec<String>,
    pub retention_days: Option<u16>,
    /// Count the accounts and transfers of each snapshot (stop and reflink modes)
    /// by starting a private replica on the copy after the upload.
    #[serde(default)]
    pub count_rows: bool,
}

fn default_mode() -> String {
    "offline".into()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LedgerFile {
    #[serde(default = "yes")]
    pub enabled: bool,
    /// An integer, or a string for ids beyond TOML's 64-bit integers.
    #[serde(default)]
    pub cluster_id: ClusterId,
    pub addresses: String,
    #[serde(default = "default_ledger")]
    pub ledger: u32,
    pub timeout: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum ClusterId {
    Int(u64),
    Text(String),
}

impl ClusterId {
    fn value(self, path: &Path, key: &str) -> Result<u128> {
        match self {
            ClusterId::Int(n) => Ok(u128::from(n)),
            ClusterId::Text(t) => t.trim().parse::<u128>().map_err(|_| {
                invalid(
                    path,
                    key,
                    format!("{t:?} is not a cluster id (a decimal integer below 2^128)"),
                )
            }),
        }
    }
}

impl Default for ClusterId {
    fn default() -> Self {
        ClusterId::Int(0)
    }
}

fn default_ledger() -> u32 {
    12
}

/// How a live TigerBeetle data file is copied consistently.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SnapshotMode {
    /// Only when no replica holds the file; bkp holds the file's lock while reading
    /// it, so no replica can start mid-copy.
    Offline,
    /// Run `stop`, copy, run `start`: downtime is the local copy only.
    Stop {
        stop: Vec<String>,
        start: Vec<String>,
        timeout: Duration,
    },
    /// An atomic copy-on-write clone (btrfs, xfs) of the live file.
    Reflink,
}

#[derive(Debug, Clone)]
pub struct TigerBeetlePlan {
    /// The replica's data file, for `bkp snapshot`.
    pub data_file: Option<PathBuf>,
    /// The cluster to capture logs from, for `bkp logs`.
    pub cluster: Option<ClusterPlan>,
    pub mode: SnapshotMode,
    pub binary: Option<PathBuf>,
    pub replica_args: Vec<String>,
    pub retention_days: u16,
    pub count_rows: bool,
}

#[derive(Debug, Clone)]
pub struct ClusterPlan {
    pub cluster_id: u128,
    pub addresses: String,
}

#[derive(Debug, Clone)]
pub enum StorePlan {
    Local(PathBuf),
    S3(S3Settings),
}

#[derive(Debug, Clone)]
pub enum KeySpec {
    File(PathBuf),
    Env(String),
    PassphraseEnv(String),
}

#[derive(Debug, Clone)]
pub struct EncryptionPlan {
    /// The key new backups are encrypted with.
    pub current: KeyPlan,
    /// Older keys, tried by id when restoring.
    pub old: Vec<KeyPlan>,
}

/// Where one key comes from, and the id it is recorded under (default: the key's
/// fingerprint, or `passphrase`).
#[derive(Debug, Clone)]
pub struct KeyPlan {
    pub spec: KeySpec,
    pub id: Option<String>,
}

/// A validated configuration: everything a run needs, nothing loaded yet.
#[derive(Debug, Clone)]
pub struct Plan {
    pub source: PathBuf,
    pub work_dir: PathBuf,
    pub store: StorePlan,
    pub compression: Compression,
    pub encryption: Option<EncryptionPlan>,
    pub tigerbeetle: Option<TigerBeetlePlan>,
    pub ledger: Option<LedgerConfig>,
    pub retention: crate::retention::RetentionPlan,
    /// RPOs and watched schedules for `bkp status`.
    pub freshness: crate::schedule::FreshnessPlan,
    /// Where run metrics go (Prometheus textfile), if anywhere.
    pub metrics_dir: Option<PathBuf>,
    pub replicate: Option<crate::replicate::config::ReplicatePlan>,
    pub duckdb: Option<DuckdbPlan>,
}

/// Values from the environment that override the file (`BKP_*`).
#[derive(Debug, Default, Clone)]
pub struct Overrides {
    pub work_dir: Option<PathBuf>,
    pub store_path: Option<PathBuf>,
    pub s3_bucket: Option<String>,
    pub s3_prefix: Option<String>,
    pub s3_endpoint: Option<String>,
    pub s3_region: Option<String>,
    pub ledger_addresses: Option<String>,
    pub metrics_dir: Option<PathBuf>,
    pub replicate: crate::replicate::config::ReplicateOverrides,
}

impl Overrides {
    pub fn from_env() -> Self {
        let var = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        Overrides {
            work_dir: var("BKP_WORK_DIR").map(PathBuf::from),
            store_path: var("BKP_STORE_PATH").map(PathBuf::from),
            s3_bucket: var("BKP_S3_BUCKET"),
            s3_prefix: var("BKP_S3_PREFIX"),
            s3_endpoint: var("BKP_S3_ENDPOINT"),
            s3_region: var("BKP_S3_REGION"),
            ledger_addresses: var("BKP_LEDGER_ADDRESSES"),
            metrics_dir: var("BKP_METRICS_DIR").map(PathBuf::from),
            replicate: crate::replicate::config::ReplicateOverrides::from_env(),
        }
    }
}

pub(crate) fn invalid(path: &Path, key: &str, msg: impl std::fmt::Display) -> anyhow::Error {
    coded(
        Code::Config,
        format!("invalid config {}: {key}: {msg}", path.display()),
    )
}

/// Reads and validates `path`.
pub fn load(path: &Path, ov: &Overrides) -> Result<Plan> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        coded(
            Code::Config,
            format!(
                "cannot read config {}: {e}; pass --config FILE or set BKP_CONFIG (examples/ has complete configs)",
                path.display()
            ),
        )
    })?;
    parse(&text, path, ov)
}

/// Parses and validates config text; `path` is only used in messages.
pub fn parse(text: &str, path: &Path, ov: &Overrides) -> Result<Plan> {
    let file: File = toml::from_str(text).map_err(|e| {
        coded(
            Code::Config,
            format!(
                "invalid config {}: {}",
                path.display(),
                e.to_string().trim_end()
            ),
        )
    })?;
    validate(file, path, ov)
}

fn key_plan(
    path: &Path,
    section: &str,
    file: Option<PathBuf>,
    env: Option<String>,
    passphrase_env: Option<String>,
    id: Option<String>,
) -> Result<KeyPlan> {
    let mut sources: Vec<KeySpec> = file
        .map(KeySpec::File)
        .into_iter()
        .chain(env.map(KeySpec::Env))
        .chain(passphrase_env.map(KeySpec::PassphraseEnv))
        .collect();
    if sources.len() != 1 {
        return Err(invalid(
            path,
            &format!("[{section}]"),
            "set exactly one of key_file, key_env, passphrase_env",
        ));
    }
    if let Some(id) = &id {
        crate::crypto::validate_key_id(id)
            .map_err(|err| invalid(path, &format!("{section}.key_id"), format!("{err:#}")))?;
    }
    Ok(KeyPlan {
        spec: sources.remove(0),
        id,
    })
}

fn validate(f: File, path: &Path, ov: &Overrides) -> Result<Plan> {
    let base = path.parent().unwrap_or(Path::new("."));
    let abs = |p: PathBuf| if p.is_relative() { base.join(p) } else { p };

    let work_dir = ov
        .work_dir
        .clone()
        .or(f.work_dir.map(abs))
        .ok_or_else(|| invalid(path, "work_dir", "missing: a directory for lock, spool and temporary files (e.g. work_dir = \"/var/lib/bkp\")"))?;

    let store =
        match (f.store, &ov.store_path) {
            (_, Some(p)) => StorePlan::Local(p.clone()),
            (None, None) => return Err(invalid(
                path,
                "[store]",
                "missing: add [store] with type = \"local\" and path, or type = \"s3\" and bucket",
            )),
            (Some(StoreFile::Local { path: p }), None) => StorePlan::Local(abs(p)),
            (
                Some(StoreFile::S3 {
                    bucket,
                    prefix,
                    region,
                    endpoint,
                    path_style,
                    part_size,
                    concurrency,
                }),
                None,
            ) => {
                let bucket = ov.s3_bucket.clone().unwrap_or(bucket);
                if bucket.is_empty() {
                    return Err(invalid(path, "store.bucket", "must not be empty"));
                }
                let prefix = ov
                    .s3_prefix
                    .clone()
                    .unwrap_or(prefix)
                    .trim_matches('/')
                    .to_string();
                let part_size = match part_size {
                    Some(s) => {
                        parse_size(&s).map_err(|e| invalid(path, "store.part_size", e))? as usize
                    }
                    None => 16 << 20,
                };
                if !(MIN_PART_SIZE..=MAX_PART_SIZE).contains(&part_size) {
                    return Err(invalid(
                        path,
                        "store.part_size",
                        "must be between 5MiB and 5GiB (S3's part size limits)",
                    ));
                }
                let concurrency = concurrency.unwrap_or(4);
                if !(1..=64).contains(&concurrency) {
                    return Err(invalid(
                        path,
                        "store.concurrency",
                        "must be between 1 and 64",
                    ));
                }
                let endpoint = ov.s3_endpoint.clone().or(endpoint);
                StorePlan::S3(S3Settings {
                    bucket,
                    prefix,
                    region: ov
                        .s3_region
                        .clone()
                        .or(region)
                        .unwrap_or_else(|| "us-east-1".into()),
                    // S3-compatible services behind an endpoint almost always need
                    // path-style addressing; AWS itself prefers virtual hosts.
                    path_style: path_style.unwrap_or(endpoint.is_some()),
                    endpoint,
                    part_size,
                    concurrency,
                })
            }
        };

    let c = f.compression;
    let compression = match c.algorithm.as_str() {
        "none" => Compression::None,
        "gzip" => {
            let level = c.level.unwrap_or(6);
            if !(0..=9).contains(&level) {
                return Err(invalid(path, "compression.level", "gzip levels are 0 to 9"));
            }
            Compression::Gzip {
                level: level as u32,
            }
        }
        "zstd" => {
            let level = c.level.unwrap_or(3);
            if !(1..=19).contains(&level) {
                return Err(invalid(
                    path,
                    "compression.level",
                    "zstd levels are 1 to 19",
                ));
            }
            let threads = match c.threads.unwrap_or(0) {
                0 => std::thread::available_parallelism().map_or(1, |n| n.get() as u32),
                n => n,
            };
            Compression::Zstd { level, threads }
        }
        other => {
            return Err(invalid(
                path,
                "compression.algorithm",
                format!("{other:?} is not one of \"zstd\", \"gzip\", \"none\""),
            ))
        }
    };

    let encryption = match f.encryption {
        None => return Err(invalid(path, "[encryption]", "missing: configure a key (key_file, key_env or passphrase_env), or set enabled = false to store backups unencrypted")),
        Some(e) if !e.enabled => None,
        Some(e) => {
            let current = key_plan(path, "encryption", e.key_file.map(&abs), e.key_env, e.passphrase_env, e.key_id)?;
            let old = e
                .old_keys
                .into_iter()
                .enumerate()
                .map(|(i, k)| {
                    key_plan(path, &format!("encryption.old_keys[{i}]"), k.key_file.map(&abs), k.key_env, k.passphrase_env, k.key_id)
                })
                .collect::<Result<Vec<_>>>()?;
            Some(EncryptionPlan { current, old })
        }
    };

    let tigerbeetle = match f.tigerbeetle {
        None => None,
        Some(t) => {
            let timeout = match t.stop_timeout {
                Some(s) => {
                    parse_duration(&s).map_err(|e| invalid(path, "tigerbeetle.stop_timeout", e))?
                }
                None => Duration::from_secs(60),
            };
            let mode = match t.snapshot_mode.as_str() {
                "offline" => SnapshotMode::Offline,
                "reflink" => SnapshotMode::Reflink,
                "stop" => match (t.stop_command, t.start_command) {
                    (Some(stop), Some(start)) if !stop.is_empty() && !start.is_empty() => {
                        SnapshotMode::Stop { stop, start, timeout }
                    }
                    _ => return Err(invalid(path, "tigerbeetle.snapshot_mode", "\"stop\" needs stop_command and start_command (argument lists, e.g. [\"systemctl\", \"stop\", \"tigerbeetle\"])")),
                },
                other => return Err(invalid(path, "tigerbeetle.snapshot_mode", format!("{other:?} is not one of \"offline\", \"stop\", \"reflink\""))),
            };
            if t.data_file.is_none() && t.addresses.is_none() {
                return Err(invalid(path, "[tigerbeetle]", "set data_file (for `bkp snapshot`) and/or addresses (the cluster `bkp logs` captures from)"));
            }
            let cluster =
                match t.addresses {
                    Some(a) if a.trim().is_empty() => return Err(invalid(
                        path,
                        "tigerbeetle.addresses",
                        "must list the cluster's addresses, e.g. \"10.0.0.1:3000,10.0.0.2:3000\"",
                    )),
                    Some(addresses) => Some(ClusterPlan {
                        cluster_id: t.cluster_id.value(path, "tigerbeetle.cluster_id")?,
                        addresses,
                    }),
                    None => None,
                };
            Some(TigerBeetlePlan {
                data_file: t.data_file.map(&abs),
                cluster,
                mode,
                binary: t.binary.map(abs),
                replica_args: t.replica_args,
                count_rows: t.count_rows,
                retention_days: t.retention_days.unwrap_or(365),
            })
        }
    };

    let ledger = match f.ledger {
        None => None,
        Some(l) if !l.enabled => None,
        Some(l) => {
            let addresses = ov.ledger_addresses.clone().unwrap_or(l.addresses);
            if addresses.trim().is_empty() {
                return Err(invalid(
                    path,
                    "ledger.addresses",
                    "must list the cluster's addresses, e.g. \"127.0.0.1:3000\"",
                ));
            }
            if l.ledger == 0 {
                return Err(invalid(
                    path,
                    "ledger.ledger",
                    "must be a nonzero ledger number",
                ));
            }
            let timeout = match l.timeout {
                Some(s) => parse_duration(&s).map_err(|e| invalid(path, "ledger.timeout", e))?,
                None => Duration::from_secs(10),
            };
            let cluster_id = l.cluster_id.value(path, "ledger.cluster_id")?;
            Some(LedgerConfig {
                cluster_id,
                addresses,
                ledger: l.ledger,
                timeout,
                spool_dir: work_dir.join("ledger-spool"),
            })
        }
    };

    let retention = f
        .retention
        .unwrap_or_default()
        .plan()
        .map_err(|(key, msg)| invalid(path, &key, msg))?;
    let freshness = crate::schedule::FreshnessPlan::from_file(f.freshness, path)?;
    let metrics_dir = crate::metrics::dir(f.metrics, ov.metrics_dir.clone(), &abs);
    let replicate = match f.replicate {
        Some(r) => Some(crate::replicate::config::validate(
            r,
            path,
            &ov.replicate,
            compression,
        )?),
        None => None,
    };
    let duckdb = match f.duckdb {
        None => None,
        Some(d) => Some(export::validate(d, abs, |k, m| invalid(path, k, m))?),
    };

    Ok(Plan {
        source: path.to_path_buf(),
        work_dir,
        store,
        compression,
        encryption,
        tigerbeetle,
        ledger,
        retention,
        freshness,
        metrics_dir,
        replicate,
        duckdb,
    })
}

impl Plan {
    /// Loads the configured keys (current first). Only runs that encrypt or
    /// decrypt call this, so `list` works without access to the key.
    pub fn keyring(&self) -> Result<Option<Keyring>> {
        let Some(e) = &self.encryption else {
            return Ok(None);
        };
        self.load_keys(e)
            .map(Some)
            .with_context(|| format!("config {}: [encryption]", self.source.display()))
    }

    fn load_keys(&self, e: &EncryptionPlan) -> Result<Keyring> {
        let current = load_key(&e.current)?;
        let others = e.old.iter().map(load_key).collect::<Result<Vec<_>>>()?;
        Ok(Keyring::new(current, others))
    }
}

fn load_key(k: &KeyPlan) -> Result<MasterKey> {
    let key = match &k.spec {
        KeySpec::File(p) => read_key_file(p)?,
        KeySpec::Env(v) => {
            let text = std::env::var(v).map_err(|_| {
                coded(Code::Config, format!("key_env names {v}, which is not set: export the key (64 hex characters) in {v}"))
            })?;
            MasterKey::from_key_text(text.as_bytes(), &format!("environment variable {v}"))?
        }
        KeySpec::PassphraseEnv(v) => {
            let text = std::env::var(v).map_err(|_| {
                coded(
                    Code::Config,
                    format!(
                        "passphrase_env names {v}, which is not set: export the passphrase in {v}"
                    ),
                )
            })?;
            MasterKey::from_passphrase(text, k.id.clone())?
        }
    };
    Ok(match &k.id {
        Some(id) => key.with_id(id.clone()),
        None => key,
    })
}

fn read_key_file(p: &Path) -> Result<MasterKey> {
    let bytes = std::fs::read(p).map_err(|e| {
        coded(
            Code::Config,
            format!("cannot read key file {}: {e}; create one with: head -c 32 /dev/urandom > {0} && chmod 400 {0}", p.display()),
        )
    })?;
    MasterKey::from_key_text(&bytes, &format!("key file {}", p.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"
work_dir = "/var/lib/bkp"
[store]
type = "local"
path = "/srv/backups"
[encryption]
enabled = false
"#;

    fn p(text: &str) -> Result<Plan> {
        parse(text, Path::new("/etc/bkp/test.toml"), &Overrides::default())
    }

    #[test]
    fn minimal_config_gets_defaults() {
        let plan = p(MINIMAL).unwrap();
        assert!(matches!(plan.store, StorePlan::Local(ref x) if x == Path::new("/srv/backups")));
        assert!(matches!(
            plan.compression,
            Compression::Zstd { level: 3, .. }
        ));
        assert!(plan.encryption.is_none());
        assert!(plan.ledger.is_none());
    }

    #[test]
    fn cluster_ids_beyond_64_bits_are_strings() {
        let big = format!("{MINIMAL}[ledger]\naddresses = \"3000\"\ncluster_id = \"340282366920938463463374607431768211455\"\n");
        assert_eq!(p(&big).unwrap().ledger.unwrap().cluster_id, u128::MAX);
        let small = format!("{MINIMAL}[ledger]\naddresses = \"3000\"\ncluster_id = 7\n");
        assert_eq!(p(&small).unwrap().ledger.unwrap().cluster_id, 7);
    }

    #[test]
    fn overrides_beat_the_file() {
        let ov = Overrides {
            work_dir: Some("/tmp/w".into()),
            store_path: Some("/tmp/s".into()),
            ..Default::default()
        };
        let plan = parse(MINIMAL, Path::new("x.toml"), &ov).unwrap();
        assert_eq!(plan.work_dir, Path::new("/tmp/w"));
        assert!(matches!(plan.store, StorePlan::Local(ref x) if x == Path::new("/tmp/s")));
    }

    #[test]
    fn relative_paths_are_relative_to_the_config_file() {
        let plan = p(&MINIMAL.replace("/srv/backups", "store")).unwrap();
        assert!(matches!(plan.store, StorePlan::Local(ref x) if x == Path::new("/etc/bkp/store")));
    }

    #[test]
    fn errors_name_the_key_and_are_config_errors() {
        let cases = [
            (MINIMAL.replace("type = \"local\"", "type = \"ftp\""), "ftp"),
            (format!("{MINIMAL}\nbogus = 1\n"), "bogus"),
            (
                MINIMAL.replace("work_dir = \"/var/lib/bkp\"", ""),
                "work_dir",
            ),
            (
                format!("{MINIMAL}[compression]\nalgorithm = \"lz4\"\n"),
                "compression.algorithm",
            ),
            (
                format!("{MINIMAL}[compression]\nlevel = 40\n"),
                "compression.level",
            ),
            (MINIMAL.replace("enabled = false", ""), "[encryption]"),
            (
                MINIMAL.replace("enabled = false", "key_file = \"k\"\nkey_env = \"K\""),
                "exactly one",
            ),
            (
                format!("{MINIMAL}[tigerbeetle]\ndata_file = \"/x\"\nsnapshot_mode = \"stop\"\n"),
                "stop_command",
            ),
            (
                format!("{MINIMAL}[tigerbeetle]\ndata_file = \"/x\"\nsnapshot_mode = \"yolo\"\n"),
                "snapshot_mode",
            ),
            (
                format!("{MINIMAL}[ledger]\naddresses = \"3000\"\nledger = 0\n"),
                "ledger.ledger",
            ),
            (
                format!("{MINIMAL}[ledger]\naddresses = \"3000\"\ntimeout = \"soon\"\n"),
                "ledger.timeout",
            ),
        ];
        for (text, needle) in cases {
            let err = p(&text).unwrap_err();
            let msg = format!("{err:#}");
            assert!(msg.contains(needle), "expected {needle:?} in: {msg}");
            assert!(msg.contains("/etc/bkp/test.toml"), "file not named: {msg}");
            assert_eq!(crate::exit::exit_code(&err), crate::exit::CONFIG, "{msg}");
        }
    }
}
