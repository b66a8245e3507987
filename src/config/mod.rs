//! The TOML configuration and its validation into a [`Plan`].
//!
//! Parsing is strict (`deny_unknown_fields`): a misspelt key is an error, not a
//! silently ignored setting. Validation happens before anything touches disk or
//! network, and every error names the file, the key and what is expected.
//!
//! Each section lives in its own file: its serde `…File` struct as written and its
//! validation into plan values, through the one [`Validator`] that knows the
//! config's path and builds every error the same way. The plan types of the
//! domain modules (`retention`, `schedule`, `replicate`) stay there: those modules
//! know nothing of the file format.
//!
//! Precedence: command-line flags > environment (`BKP_*`) > file > defaults.

use std::fmt::Display;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result};
use serde::Deserialize;

use crate::crypto::Keyring;
use crate::exit::{coded, Code};
use crate::ledger::LedgerConfig;
use crate::stages::compress::Compression;
use crate::units::{parse_duration, parse_size};

pub mod compression;
pub mod copies;
pub mod duckdb;
pub mod encryption;
pub mod freshness;
pub mod ledger;
pub mod metrics;
pub mod notify;
pub mod postgres;
pub mod replicate;
pub mod retention;
pub mod sqlite;
pub mod store;
pub mod tigerbeetle;

pub use copies::CopyPlan;
pub use duckdb::{DuckdbPlan, WithoutWatermark};
pub use encryption::{EncryptionPlan, KeyPlan, KeySpec};
pub use postgres::PostgresPlan;
pub use replicate::ReplicateOverrides;
pub use sqlite::SqlitePlan;
pub use store::StorePlan;
pub use tigerbeetle::{ClusterPlan, SnapshotMode, TigerBeetlePlan};

/// Where the configuration is looked for when neither `--config` nor `BKP_CONFIG`
/// names one.
pub const DEFAULT_CONFIG: &str = "/etc/bkp/bkp.toml";

/// The file as written: one field per section.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct File {
    pub work_dir: Option<PathBuf>,
    pub store: Option<store::StoreFile>,
    #[serde(default)]
    pub compression: compression::CompressionFile,
    pub encryption: Option<encryption::EncryptionFile>,
    pub tigerbeetle: Option<tigerbeetle::TigerBeetleFile>,
    pub ledger: Option<ledger::LedgerFile>,
    pub retention: Option<retention::RetentionFile>,
    pub freshness: Option<freshness::FreshnessFile>,
    pub metrics: Option<metrics::MetricsFile>,
    pub replicate: Option<replicate::ReplicateFile>,
    pub duckdb: Option<duckdb::DuckdbFile>,
    pub postgres: Option<postgres::PostgresFile>,
    pub sqlite: Option<sqlite::SqliteFile>,
    pub notify: Option<notify::NotifyFile>,
    /// `[[copies]]`: each a `[store]` table with a name (see [`copies`]).
    pub copies: Option<Vec<toml::Table>>,
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
    pub replicate: Option<crate::replicate::ReplicatePlan>,
    pub duckdb: Option<DuckdbPlan>,
    /// The PostgreSQL database `bkp export --kind pgdump` dumps.
    pub postgres: Option<PostgresPlan>,
    /// The SQLite database `bkp snapshot --kind sqlite` copies.
    pub sqlite: Option<SqlitePlan>,
    /// The command run on failures, recoveries and breached RPOs.
    pub notify: Option<crate::notify::NotifyPlan>,
    /// Further stores `bkp copy` keeps up to date with `store` (3-2-1).
    pub copies: Vec<CopyPlan>,
    /// The primary store, when `--store NAME` made a copy this run's
    /// `store` (see [`Plan::reading`]).
    pub primary: Option<StorePlan>,
    /// The name of the copy this run reads (`--store NAME`), if any.
    pub copy: Option<String>,
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
    /// `BKP_S3_PATH_STYLE` as written; the store section checks it.
    pub s3_path_style: Option<String>,
    /// The endpoint the AWS SDK takes from the environment when the config names
    /// none (`AWS_ENDPOINT_URL_S3`, else `AWS_ENDPOINT_URL`, unless
    /// `AWS_IGNORE_CONFIGURED_ENDPOINT_URLS=true`). The SDK reads these itself;
    /// bkp only needs to know, to default to path-style addressing.
    pub aws_endpoint_url: Option<String>,
    pub ledger_addresses: Option<String>,
    pub metrics_dir: Option<PathBuf>,
    pub replicate: ReplicateOverrides,
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
            s3_path_style: var("BKP_S3_PATH_STYLE"),
            aws_endpoint_url: if var("AWS_IGNORE_CONFIGURED_ENDPOINT_URLS")
                .is_some_and(|v| v.eq_ignore_ascii_case("true"))
            {
                None
            } else {
                var("AWS_ENDPOINT_URL_S3").or_else(|| var("AWS_ENDPOINT_URL"))
            },
            ledger_addresses: var("BKP_LEDGER_ADDRESSES"),
            metrics_dir: var("BKP_METRICS_DIR").map(PathBuf::from),
            replicate: ReplicateOverrides::from_env(),
        }
    }
}

/// What every section validates with: it knows the config file, resolves the
/// paths written in it, parses sizes and durations, and builds every error as
/// `invalid config {path}: {key}: {message}` with the config exit code.
pub struct Validator<'a> {
    file: &'a Path,
}

impl<'a> Validator<'a> {
    /// Validates the config at `file` (named in every error).
    pub fn new(file: &'a Path) -> Self {
        Validator { file }
    }

    /// The error for `key` (`section.key`, or `[section]` for the section as a
    /// whole).
    pub fn error(&self, key: &str, msg: impl Display) -> anyhow::Error {
        coded(
            Code::Config,
            format!("invalid config {}: {key}: {msg}", self.file.display()),
        )
    }

    /// The error for a value that is none of the accepted words.
    pub fn not_one_of(&self, key: &str, value: &str, accepted: &[&str]) -> anyhow::Error {
        let list: Vec<String> = accepted.iter().map(|a| format!("{a:?}")).collect();
        self.error(key, format!("{value:?} is not one of {}", list.join(", ")))
    }

    /// A path as written, relative to the config file's directory.
    pub fn path(&self, p: PathBuf) -> PathBuf {
        if p.is_relative() {
            self.file.parent().unwrap_or(Path::new(".")).join(p)
        } else {
            p
        }
    }

    /// A duration (`30s`, `15m`, `6h`, `1h30m`).
    pub fn duration(&self, key: &str, text: &str) -> Result<Duration> {
        parse_duration(text).map_err(|e| self.error(key, format!("{e:#}")))
    }

    /// A `pass_env` list: environment variable names, nothing else.
    pub fn env_names(&self, key: &str, names: &[String]) -> Result<()> {
        match names
            .iter()
            .find(|n| n.is_empty() || n.contains('=') || n.contains('\0'))
        {
            Some(bad) => {
                Err(self.error(key, format!("{bad:?} is not an environment variable name")))
            }
            None => Ok(()),
        }
    }

    /// A duration that must be longer than zero.
    pub fn positive_duration(&self, key: &str, text: &str) -> Result<Duration> {
        let d = self.duration(key, text)?;
        if d.is_zero() {
            return Err(self.error(key, "must be longer than zero"));
        }
        Ok(d)
    }

    /// A size (`16MiB`, `1GiB`, `1048576`).
    pub fn size(&self, key: &str, text: &str) -> Result<u64> {
        parse_size(text).map_err(|e| self.error(key, format!("{e:#}")))
    }

    /// `value` if it lies in `range`, else the error `msg`.
    pub fn within<T: PartialOrd>(
        &self,
        key: &str,
        value: T,
        range: std::ops::RangeInclusive<T>,
        msg: &str,
    ) -> Result<T> {
        if range.contains(&value) {
            Ok(value)
        } else {
            Err(self.error(key, msg))
        }
    }
}

/// Reads and validates `path`. A config file that another user may change
/// is refused before it is read ([`unsafe_config`]): it names the commands
/// bkp runs (`stop_command`, `key_command`, the TigerBeetle binary) and the
/// keys it uses.
pub fn load(path: &Path, ov: &Overrides) -> Result<Plan> {
    use std::io::Read;
    use std::os::unix::fs::MetadataExt;
    let unreadable = |e: std::io::Error| {
        coded(
            Code::Config,
            format!(
                "cannot read config {}: {e}; pass --config FILE or set BKP_CONFIG (examples/ has complete configs)",
                path.display()
            ),
        )
    };
    // The file opened is the file checked; a named pipe is opened without
    // waiting for its writer, and checked before it is waited on.
    let mut f = {
        use std::os::unix::fs::OpenOptionsExt;
        std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(path)
            .map_err(unreadable)?
    };
    let meta = f.metadata().map_err(unreadable)?;
    // SAFETY: geteuid has no preconditions.
    let me = unsafe { libc::geteuid() };
    if let Some(problem) = unsafe_config(meta.mode(), meta.uid(), me) {
        let p = path.display();
        let fix = if !meta.file_type().is_file() {
            "pass a file (or a pipe of your own) instead".to_string()
        } else if meta.uid() != me && meta.uid() != 0 {
            format!("make root its owner, and let the users that run bkp read it through its group: chown root:GROUP {p} && chmod 0640 {p}")
        } else {
            format!("run: chmod go-w {p}")
        };
        return Err(coded(
            Code::Config,
            format!(
                "config {p} {problem} (mode {:04o}, owner uid {}): a config names the commands bkp runs and the keys it uses, so only root or the user bkp runs as (uid {me}) may change it; {fix}",
                meta.mode() & 0o7777,
                meta.uid(),
            ),
        ));
    }
    crate::direct::blocking(&f).map_err(unreadable)?;
    let mut text = String::new();
    f.read_to_string(&mut text).map_err(unreadable)?;
    parse(&text, path, ov)
}

/// Why a config file of `mode`, owned by `uid`, may not be used by a bkp
/// running as user `me`; `None` when it may. Another user who may change it
/// could make bkp run any command as `me`: a file others or its group may
/// write, or one another user (not root) owns, is refused, whatever its type
/// (a named pipe another user feeds is that user's config; a pipe of the
/// caller's own, `--config <(…)`, is the caller's).
pub fn unsafe_config(mode: u32, uid: u32, me: u32) -> Option<&'static str> {
    if mode & 0o002 != 0 {
        Some("may be changed by every user")
    } else if mode & 0o020 != 0 {
        Some("may be changed by its group (or a user its ACL names)")
    } else if uid != me && uid != 0 {
        Some("belongs to another user")
    } else {
        None
    }
}

/// The variables that describe a whole config, with `BKP_STORE_PATH`, when
/// there is no config file (a first try).
pub const FIRST_TRY_VARS: &[&str] = &[
    "BKP_KEY_FILE",
    "BKP_TIGERBEETLE_DATA_FILE",
    "BKP_TIGERBEETLE_BINARY",
    "BKP_SQLITE_DATABASE",
];

/// Refuses the variables of a first try ([`FIRST_TRY_VARS`]) beside the config
/// file `path`: they describe a config of their own, and the file's (its data
/// file, its snapshot mode, its store) would be used instead, silently.
pub fn no_first_try_vars(path: &Path) -> Result<()> {
    let set: Vec<&str> = FIRST_TRY_VARS
        .iter()
        .copied()
        .filter(|v| std::env::var_os(v).is_some_and(|x| !x.is_empty()))
        .collect();
    if set.is_empty() {
        return Ok(());
    }
    Err(coded(
        Code::Config,
        format!(
            "{} set, but the config file {} is used: these variables describe a first try \
             without a config file and are never mixed with one; unset them, or move what \
             they say into the file",
            set.join(", "),
            path.display()
        ),
    ))
}

/// The config a first try describes in the environment, when no config file is
/// named (`--config`, `BKP_CONFIG`) and the default one does not exist:
/// `BKP_STORE_PATH` (required) with [`FIRST_TRY_VARS`], the work directory
/// `BKP_WORK_DIR` or `.bkp-work` in the current directory, against which
/// relative paths resolve; a `BKP_TIGERBEETLE_BINARY` without a `/` is looked
/// up on the `PATH`. Returns the config text and the path that stands for it in
/// messages; `None` when the environment names no store.
pub fn from_environment() -> Option<(String, PathBuf)> {
    let var = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
    let store = var("BKP_STORE_PATH")?;
    let q = |v: String| toml::Value::String(v).to_string();
    let mut text = format!(
        "work_dir = {}\n[store]\ntype = \"local\"\npath = {}\n",
        q(var("BKP_WORK_DIR").unwrap_or_else(|| ".bkp-work".into())),
        q(store)
    );
    if let Some(key) = var("BKP_KEY_FILE") {
        text.push_str(&format!("[encryption]\nkey_file = {}\n", q(key)));
    }
    let data_file = var("BKP_TIGERBEETLE_DATA_FILE");
    let binary = var("BKP_TIGERBEETLE_BINARY");
    if data_file.is_some() || binary.is_some() {
        text.push_str("[tigerbeetle]\n");
        if let Some(f) = data_file {
            text.push_str(&format!("data_file = {}\n", q(f)));
        }
        if let Some(b) = binary {
            text.push_str(&format!("binary = {}\n", q(on_path(b))));
        }
    }
    if let Some(db) = var("BKP_SQLITE_DATABASE") {
        text.push_str(&format!("[sqlite]\ndatabase = {}\n", q(db)));
    }
    let here = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("."));
    Some((text, here.join("(environment)")))
}

/// `name` as found on the `PATH` when it is a bare command name (no `/`).
fn on_path(name: String) -> String {
    if name.contains('/') {
        return name;
    }
    std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .map(|d| d.join(&name))
        .find(|p| p.is_file())
        .map_or(name, |p| p.display().to_string())
}

/// Parses and validates config text; `path` is only used in messages (and to
/// resolve relative paths).
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
    validate(file, &Validator::new(path), ov)
}

fn validate(f: File, v: &Validator, ov: &Overrides) -> Result<Plan> {
    let work_dir = ov
        .work_dir
        .clone()
        .or(f.work_dir.map(|p| v.path(p)))
        .ok_or_else(|| {
            v.error(
                "work_dir",
                "missing: a directory for lock, spool and temporary files (e.g. work_dir = \"/var/lib/bkp\")",
            )
        })?;
    let store = store::validate(f.store, v, ov)?;
    let compression = compression::validate(f.compression, v)?;
    let encryption = encryption::validate(f.encryption, v)?;
    let tigerbeetle = f
        .tigerbeetle
        .map(|t| tigerbeetle::validate(t, v))
        .transpose()?;
    let ledger = ledger::validate(f.ledger, v, ov, &work_dir)?;
    let retention_file = f.retention.unwrap_or_default();
    let retention = retention::validate(retention_file.clone(), v)?;
    let freshness = freshness::validate(f.freshness.unwrap_or_default(), v)?;
    let metrics_dir = metrics::dir(f.metrics, ov.metrics_dir.clone(), v);
    let replicate = f
        .replicate
        .map(|r| replicate::validate(r, v, ov, compression))
        .transpose()?;
    let duckdb = f.duckdb.map(|d| duckdb::validate(d, v)).transpose()?;
    let postgres = f.postgres.map(|p| postgres::validate(p, v)).transpose()?;
    let sqlite = f.sqlite.map(|s| sqlite::validate(s, v)).transpose()?;
    let notify = f.notify.map(|n| notify::validate(n, v)).transpose()?;
    let copies = copies::validate(f.copies.unwrap_or_default(), v, ov, &store, &retention_file)?;
    Ok(Plan {
        source: v.file.to_path_buf(),
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
        postgres,
        sqlite,
        notify,
        copies,
        primary: None,
        copy: None,
    })
}

impl Plan {
    /// What this config's source of `kind` records in the manifest fact that
    /// tells sources apart ([`crate::kinds::SourceIs::Fact`]), where the
    /// config names it: `[tigerbeetle] cluster_id`, when `addresses` is set.
    /// `None` where only the source itself knows (a PostgreSQL system).
    pub fn own_source(&self, kind: crate::kinds::Kind) -> Option<u128> {
        match kind.describe().source_is {
            crate::kinds::SourceIs::Fact {
                name: "cluster_id", ..
            } => Some(self.tigerbeetle.as_ref()?.cluster.as_ref()?.cluster_id),
            _ => None,
        }
    }

    /// Whether this config sets up a source of `kind` (its section is there;
    /// for TigerBeetle, a data file to snapshot or a cluster whose log is
    /// captured). Each source section plugs in here once.
    pub fn has_source(&self, kind: crate::kinds::Kind) -> bool {
        use crate::kinds::Kind;
        match kind {
            Kind::Tigerbeetle => self
                .tigerbeetle
                .as_ref()
                .is_some_and(|t| t.data_file.is_some() || t.cluster.is_some()),
            Kind::Duckdb => self.duckdb.is_some(),
            Kind::Parquet => self.replicate.is_some(),
            Kind::Pgdump | Kind::Postgres => self.postgres.is_some(),
            Kind::Sqlite => self.sqlite.is_some(),
            Kind::Kms => false,
        }
    }

    /// The files the configured sources are read from, and what each is: a
    /// restore never replaces one.
    pub fn source_files(&self) -> Vec<(&'static str, PathBuf)> {
        let mut files = Vec::new();
        if let Some(df) = self.tigerbeetle.as_ref().and_then(|t| t.data_file.clone()) {
            files.push(("the configured TigerBeetle data file", df));
        }
        if let Some(d) = &self.duckdb {
            files.push((
                "the configured DuckDB database (duckdb.database)",
                d.database.clone(),
            ));
        }
        if let Some(s) = &self.sqlite {
            files.push((
                "the configured SQLite database (sqlite.database)",
                s.database.clone(),
            ));
        }
        files
    }

    /// This plan reading store `name` (`--store NAME`): a copy becomes the
    /// run's `store`, its policy the run's `retention`, and the primary is
    /// kept in `primary`; `primary` (or no
    /// name) leaves the plan as it is. An unknown name is a config error
    /// naming the configured ones.
    pub fn reading(mut self, name: Option<&str>) -> Result<Plan> {
        let Some(name) = name.filter(|n| *n != copies::PRIMARY) else {
            return Ok(self);
        };
        let Some(copy) = self.copies.iter().find(|c| c.name == name) else {
            let mut names: Vec<&str> = vec![copies::PRIMARY];
            names.extend(self.copies.iter().map(|c| c.name.as_str()));
            return Err(coded(
                Code::Config,
                format!(
                    "{}: no store named {name:?}: --store takes one of {} ([[copies]] entries name the copies)",
                    self.source.display(),
                    names.join(", ")
                ),
            ));
        };
        let (copy, retention) = (copy.store.clone(), copy.retention.clone());
        self.primary = Some(std::mem::replace(&mut self.store, copy));
        self.retention = retention;
        self.copy = Some(name.to_string());
        Ok(self)
    }

    /// The copies `--to NAME` selects (every copy without a name), or the
    /// config error naming what is configured.
    pub fn copies_to(&self, name: Option<&str>) -> Result<Vec<&CopyPlan>> {
        if self.copies.is_empty() {
            return Err(coded(
                Code::Config,
                format!(
                    "{}: no [[copies]] configured: add one (a name and a store, as [store] is written) for bkp copy to bring up to date",
                    self.source.display()
                ),
            ));
        }
        let chosen: Vec<&CopyPlan> = self
            .copies
            .iter()
            .filter(|c| name.is_none_or(|n| c.name == n))
            .collect();
        if chosen.is_empty() {
            let names: Vec<&str> = self.copies.iter().map(|c| c.name.as_str()).collect();
            return Err(coded(
                Code::Config,
                format!(
                    "{}: no copy named {:?}: --to takes one of {}",
                    self.source.display(),
                    name.unwrap_or_default(),
                    names.join(", ")
                ),
            ));
        }
        Ok(chosen)
    }

    /// Loads the configured keys (current first). Only runs that encrypt or
    /// decrypt call this, so `list` works without access to the key.
    pub fn keyring(&self) -> Result<Option<Keyring>> {
        let Some(e) = &self.encryption else {
            return Ok(None);
        };
        encryption::load_keyring(e)
            .map(Some)
            .with_context(|| format!("config {}: [encryption]", self.source.display()))
    }
}

/// The `[postgres]` section, or the config error naming the file and what
/// `needs_it` (a verb) needs it for.
pub fn postgres_section<'a>(
    plan: &'a crate::config::Plan,
    needs_it: &str,
) -> Result<&'a crate::config::PostgresPlan> {
    plan.postgres.as_ref().ok_or_else(|| {
        crate::exit::coded(
            crate::exit::Code::Config,
            format!(
                "{}: {needs_it} needs a [postgres] section naming the server (database, and host, port, user, passfile as needed)",
                plan.source.display()
            ),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(super) const MINIMAL: &str = r#"
work_dir = "/var/lib/bkp"
[store]
type = "local"
path = "/srv/backups"
[encryption]
enabled = false
"#;

    /// Parses [`MINIMAL`] followed by `extra`, as `/etc/bkp/test.toml`.
    pub(super) fn with(extra: &str) -> Result<Plan> {
        p(&format!("{MINIMAL}{extra}"))
    }

    pub(super) fn p(text: &str) -> Result<Plan> {
        parse(text, Path::new("/etc/bkp/test.toml"), &Overrides::default())
    }

    #[test]
    fn a_config_only_its_owner_or_root_may_change_is_used() {
        // (mode, owner) as user 1000 reads it: a file, or a pipe of its own.
        for (mode, uid) in [
            (0o100644, 1000),
            (0o100600, 0),
            (0o100640, 0),
            (0o100444, 0),
            (0o010600, 1000),
        ] {
            assert_eq!(unsafe_config(mode, uid, 1000), None, "{mode:o} {uid}");
        }
        for (mode, uid, why) in [
            (0o646, 1000, "every user"),
            (0o602, 0, "every user"),
            (0o664, 1000, "its group"),
            (0o620, 0, "its group"),
            (0o644, 4242, "another user"),
            (0o600, 4242, "another user"),
            // A named pipe another user feeds.
            (0o010600, 4242, "another user"),
            (0o010620, 1000, "its group"),
        ] {
            let problem = unsafe_config(mode, uid, 1000);
            assert!(
                problem.is_some_and(|p| p.contains(why)),
                "{mode:o} {uid}: {problem:?}"
            );
        }
    }

    /// Asserts that `text` fails with a config error naming the file and `needle`.
    pub(super) fn fails_naming(text: &str, needle: &str) {
        let err = p(text).unwrap_err();
        let msg = format!("{err:#}");
        assert!(msg.contains(needle), "expected {needle:?} in: {msg}");
        assert!(msg.contains("/etc/bkp/test.toml"), "file not named: {msg}");
        assert_eq!(crate::exit::exit_code(&err), crate::exit::CONFIG, "{msg}");
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
        assert!(plan.metrics_dir.is_none());
        assert_eq!(plan.source, Path::new("/etc/bkp/test.toml"));
    }

    #[test]
    fn overrides_beat_the_file() {
        let ov = Overrides {
            work_dir: Some("/tmp/w".into()),
            store_path: Some("/tmp/s".into()),
            metrics_dir: Some("/tmp/m".into()),
            ..Default::default()
        };
        let text = format!("{MINIMAL}[metrics]\ndir = \"/var/metrics\"\n");
        let plan = parse(&text, Path::new("x.toml"), &ov).unwrap();
        assert_eq!(plan.work_dir, Path::new("/tmp/w"));
        assert!(matches!(plan.store, StorePlan::Local(ref x) if x == Path::new("/tmp/s")));
        assert_eq!(plan.metrics_dir.as_deref(), Some(Path::new("/tmp/m")));
    }

    #[test]
    fn relative_paths_are_relative_to_the_config_file() {
        let plan = p(&MINIMAL.replace("/srv/backups", "store")).unwrap();
        assert!(matches!(plan.store, StorePlan::Local(ref x) if x == Path::new("/etc/bkp/store")));
        let plan = with("[metrics]\ndir = \"prom\"\n").unwrap();
        assert_eq!(
            plan.metrics_dir.as_deref(),
            Some(Path::new("/etc/bkp/prom"))
        );
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
                format!("{MINIMAL}[metrics]\ndirectory = \"m\"\n"),
                "directory",
            ),
            (
                format!("{MINIMAL}[notify]\ncommand = [\"true\"]\non = []\n"),
                "notify.on: is empty",
            ),
            (
                format!("{MINIMAL}[notify]\ncommand = [\"true\"]\ntimeout = \"0s\"\n"),
                "notify.timeout: must be longer than zero",
            ),
            (
                format!("{MINIMAL}[notify]\ncommand = [\"true\"]\npass_env = [\"A=B\"]\n"),
                "notify.pass_env",
            ),
            (format!("{MINIMAL}[notify]\non = [\"failure\"]\n"), "notify"),
        ];
        for (text, needle) in cases {
            fails_naming(&text, needle);
        }
    }

    #[test]
    fn the_validator_words_every_error_alike() {
        let v = Validator::new(Path::new("/etc/bkp/x.toml"));
        let e = v.not_one_of("a.b", "lz4", &["zstd", "none"]);
        assert_eq!(
            e.to_string(),
            "invalid config /etc/bkp/x.toml: a.b: \"lz4\" is not one of \"zstd\", \"none\""
        );
        assert_eq!(crate::exit::exit_code(&e), crate::exit::CONFIG);
        let e = v.positive_duration("f.rpo", "0s").unwrap_err();
        assert!(
            e.to_string().ends_with("f.rpo: must be longer than zero"),
            "{e}"
        );
        let e = v.size("s.part", "huge").unwrap_err();
        assert!(
            e.to_string().contains("s.part: \"huge\" is not a size"),
            "{e}"
        );
        assert_eq!(v.within("k", 5, 1..=9, "1 to 9").unwrap(), 5);
        assert!(v.within("k", 0, 1..=9, "1 to 9").is_err());
        assert_eq!(v.path("k".into()), Path::new("/etc/bkp/k"));
        assert_eq!(v.path("/k".into()), Path::new("/k"));
    }
}
