//! The command line, as clap definitions. `main.rs` parses it; the man pages and
//! shell completions under `man/` and `completions/` are generated from it.

use std::path::PathBuf;

use std::sync::LazyLock;

use clap::builder::PossibleValue;
use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::id::BackupId;
use crate::kinds::{Descriptor, Kind, Maker, ALL};

#[derive(Debug, Parser)]
#[command(
    name = "bkp",
    version,
    long_version = LONG_VERSION.as_str(),
    about = "Backups of a TigerBeetle ledger, a DuckDB hot tier and a Parquet cold tier",
    long_about = "bkp takes compressed, encrypted, checksummed backups of a TigerBeetle ledger, \
a DuckDB hot tier and a Parquet cold tier, stores them in S3 or a local directory, \
and restores them. Every run reads one TOML config, writes a JSON manifest next to \
the data it stored, and records a code-12 transfer in a TigerBeetle audit ledger.",
    after_help = "Exit codes: 0 success, 1 failure, 2 usage, 3 config error, 4 another run holds the lock, \
5 verification failed, 6 transient (retry later), 7 unsafe source, 8 restore target exists, 9 not found, 10 partial (items skipped), 11 stale (RPO breached), 12 unsupported (stored, but something could not be recreated exactly), 13 rollback (backups bkp recorded are gone from the store), 14 archived (an object is in an archive storage class: request its restore), 130/143/129 interrupted by SIGINT/SIGTERM/SIGHUP."
)]
pub struct Cli {
    #[command(flatten)]
    pub global: Global,
    #[command(subcommand)]
    pub command: Command,
}

/// What `bkp --version` prints: the version and the commit it was built from.
static LONG_VERSION: std::sync::LazyLock<String> =
    std::sync::LazyLock::new(|| match env!("BKP_COMMIT") {
        "" => env!("CARGO_PKG_VERSION").to_string(),
        commit => format!("{} (commit {commit})", env!("CARGO_PKG_VERSION")),
    });

#[derive(Debug, Args)]
pub struct Global {
    /// Configuration file.
    #[arg(
        long,
        short = 'c',
        global = true,
        env = "BKP_CONFIG",
        value_name = "FILE"
    )]
    pub config: Option<PathBuf>,

    /// Print results as JSON on stdout (exact byte counts, RFC 3339 times).
    #[arg(long, global = true)]
    pub json: bool,

    /// Print only warnings and errors on stderr.
    #[arg(long, short = 'q', global = true, conflicts_with = "verbose")]
    pub quiet: bool,

    /// Print each step on stderr; twice (-vv) also debug output, the S3 client's
    /// included; three times (-vvv) trace output. Credentials and keys are never
    /// printed (the S3 client redacts them even at trace level). BKP_LOG=FILTER
    /// gives the same without flags (like RUST_LOG: debug, trace,
    /// aws_smithy_runtime=trace, bkp=debug).
    #[arg(long, short = 'v', global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,

    /// No progress bars, even on a terminal.
    #[arg(long, global = true)]
    pub no_progress: bool,

    /// Wait up to DURATION (e.g. 30s, 10m) for another run of this config to finish
    /// instead of exiting with code 4.
    #[arg(long, global = true, value_name = "DURATION", value_parser = parse_duration)]
    pub wait: Option<std::time::Duration>,

    /// Read from the copy NAME (a [[copies]] entry) instead of the primary
    /// [store], as after losing the primary: for list, show, cat, verify,
    /// restore, status and wal fetch; cleanup applies the copy's own
    /// retention there. `primary` names the [store] itself. Without it, a
    /// restore whose primary does not answer (or refuses the credentials)
    /// reads the first copy that does, and says so.
    #[arg(long, global = true, value_name = "NAME")]
    pub store: Option<String>,
}

fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    crate::units::parse_duration(s).map_err(|e| format!("{e:#}"))
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Back up the TigerBeetle data file: consistent copy, tar, compress, encrypt,
    /// checksum, upload, manifest, ledger record. With --kind postgres: a base
    /// backup of the PostgreSQL server (pg_basebackup, tar, with the WAL it
    /// needs), streamed through the same chain.
    Snapshot(SnapshotArgs),

    /// Capture the TigerBeetle accounts and transfers created since the previous
    /// log segment: segment, compress, encrypt, checksum, upload, manifest, ledger.
    Logs,

    /// Export the DuckDB hot tier to Parquet: every table with --full, else the rows
    /// changed since the previous export (per-table watermark column), or since the
    /// last full export with --differential; encrypt, checksum, upload, manifest,
    /// ledger. With --kind pgdump: dump the PostgreSQL database with pg_dump
    /// (custom format, streamed) through the same chain.
    Export(ExportArgs),

    /// List the backups in the store.
    List(ListArgs),

    /// Show one backup: its manifest (times, host, retention, key, every object and
    /// file with its size and SHA-256), after checking its seal.
    Show(ShowArgs),

    /// Restore a backup into a new directory.
    Restore(RestoreArgs),

    /// Break glass: write one backed-up file (`bkp cat ID FILE`) or one stored
    /// object (`bkp cat OBJECT`), verified and decrypted, to standard output.
    ///
    /// Everything is trusted through the backup's sealed manifest (`bkp show ID`
    /// lists its files and objects). An object's size and SHA-256 are checked
    /// before anything is written. A chunked snapshot's file (the default
    /// TigerBeetle format) is rebuilt from its chunks, each checked before a
    /// byte of it is written, and the whole file's SHA-256 is compared with the
    /// manifest's at the end: `bkp cat ID 0_0.tigerbeetle > 0_0.tigerbeetle`.
    /// Output may begin before the end is checked, so write to a file and trust
    /// it only if the exit code is 0: should the end fail to verify (a damaged
    /// chunk further on, a digest that differs), the exit code is 5, the message
    /// says so, and what was written must be discarded.
    Cat(CatArgs),

    /// Copy the Parquet cold tier's new and changed files to the store (each
    /// checked to be Parquet first) and record the whole set in a manifest.
    /// Skipped files make the exit code 10.
    Replicate(ReplicateArgs),

    /// Apply the retention policy: delete expired backups (never one a kept
    /// backup's chain needs, never the newest of a kind), objects of crashed runs
    /// and local leftovers. Each deletion records a reverse code-12 transfer.
    /// With --store NAME: the copy's own retention, in that copy only, and
    /// nothing recorded in the ledger.
    Cleanup(CleanupArgs),

    /// Check backups: every object present with its size and SHA-256, every
    /// encrypted chunk authentic, chains complete, and the ledger in agreement
    /// with the store; --drill also restores each and proves the data loads.
    Verify(VerifyArgs),

    /// Check everything a backup run needs, one line per check: the config, every
    /// key, the work directory, the store (PUT, HEAD, LIST, GET, DELETE, and that a
    /// create-only write is never allowed to replace an object), the ledger, the
    /// TigerBeetle binary and data file, the DuckDB database and the replication
    /// source. Exits with the code of the first failure.
    Check,

    /// Mark the store (or prefix) as this installation's: writes `bkp-store.json`,
    /// sealed with the key, naming the key id and formats. Runs then refuse a
    /// store whose marker another installation's key sealed. Optional; never
    /// replaces a marker, and does nothing on a store this installation marked.
    Init,

    /// Record what in the store is this installation's although the current
    /// key did not seal it: manifests from before the store was sealed (no
    /// seal; with [encryption] unsealed_before, only backups started before
    /// it) and manifests and tombstones sealed by keys rotated out since. Each
    /// is recorded by its key and the SHA-256 of its exact bytes in new
    /// sealed, create-only lists (legacy/ID.json) that name this store;
    /// readers then use it, and refuse an edited copy, while nothing else
    /// unsealed or sealed by an old key is used. With old keys configured, it
    /// also records the WAL archive's objects by name (the tag in a name
    /// commits to the content), so that `wal fetch` believes an old key's tag
    /// only on them. Run it once when upgrading a store from before sealing,
    /// and after each key rotation; check what it shows first (--dry-run).
    TrustLegacy(TrustLegacyArgs),

    /// Manage master keys.
    #[command(subcommand)]
    Key(KeyCommand),

    /// PostgreSQL's continuous WAL archive: `wal push` is the server's
    /// `archive_command`, `wal fetch` its `restore_command`. One file per run,
    /// compressed, encrypted, and named so that the store cannot swap or alter
    /// it unnoticed.
    #[command(subcommand)]
    Wal(WalCommand),

    /// Bring each copy ([[copies]], or the one --to names) up to date with
    /// the primary store: copy what it lacks (the store marker, each backup's
    /// objects and then its sealed manifest, heads, the WAL archive),
    /// create-only, each object's size and SHA-256 checked against its
    /// manifest on the way; nothing is decrypted, so a write-only host can
    /// run it. A backup whose manifest or objects do not verify on the
    /// primary is not copied and is named (exit 5).
    Copy(CopyArgs),

    /// Show, per schedule, the newest good backup, its age, the next due time and
    /// whether its RPO is breached; exit 11 if any watched schedule is breached or
    /// never ran. Reads only the manifests it needs.
    Status,

    /// Send a notification through `[notify]` (webhook and command) by hand:
    /// `--test` proves delivery; `--failed-unit UNIT` reports a systemd unit
    /// that failed in a way bkp could not report itself (killed at its runtime
    /// cap, crashed, never started), as `bkp-failure@.service` does from
    /// `OnFailure=`. Exit 6 when a delivery fails.
    Notify(NotifyArgs),
}

#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("what").required(true).args(["test", "failed_unit"])))]
pub struct NotifyArgs {
    /// Send a test event and report whether each channel took it.
    #[arg(long)]
    pub test: bool,
    /// Report that this systemd unit failed (reads systemd's MONITOR_SERVICE_RESULT,
    /// MONITOR_EXIT_CODE, MONITOR_EXIT_STATUS and MONITOR_INVOCATION_ID). A failure
    /// the run delivered itself (same invocation) is not sent twice.
    #[arg(long, value_name = "UNIT")]
    pub failed_unit: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum KeyCommand {
    /// Write a new key to a new file with mode 0400 and print its id. Never
    /// replaces an existing file. `raw` (default): 32 random bytes, for
    /// `[encryption] key_file`. `x25519`: an identity for `identity_files` where
    /// restores run; prints the `recipient` for write-only hosts. `ed25519`: a
    /// host's `signing_key_file`; prints the `[[encryption.signer]]` table to
    /// add where restores run (this host's name filled in; list its kinds).
    Generate {
        /// The key file to create.
        #[arg(value_name = "PATH")]
        path: PathBuf,
        /// The kind of key.
        #[arg(long = "type", value_enum, default_value = "raw")]
        kind: KeyType,
    },
}

#[derive(Debug, Subcommand)]
pub enum WalCommand {
    /// Archive one WAL file: archive_command = 'bkp --config /etc/bkp/bkp.toml
    /// wal push %p'. Create-only: a file archived already with the same content
    /// is a success, with other content a failure (exit 5). Writes no manifest
    /// and no ledger record.
    Push {
        /// The file, relative to the data directory (PostgreSQL's %p).
        #[arg(value_name = "PATH")]
        path: PathBuf,
        /// The server's data directory (default: the current directory, where
        /// PostgreSQL runs the command); its system identifier names the archive.
        #[arg(long, value_name = "DIR", default_value = ".")]
        pgdata: PathBuf,
    },
    /// Fetch one WAL file: restore_command = 'bkp --config /etc/bkp/bkp.toml
    /// wal fetch %f %p'. Exit 9 when the archive has no such file; any other
    /// failure exits above 125 (200 + the code), so that PostgreSQL stops
    /// recovery instead of ending it early (a standby retries an unreachable
    /// store instead: exit 6).
    Fetch {
        /// The file name PostgreSQL asks for (%f).
        #[arg(value_name = "NAME")]
        name: String,
        /// Where to write it, relative to the data directory (%p).
        #[arg(value_name = "DEST")]
        dest: PathBuf,
        /// The server's data directory (default: the current directory).
        #[arg(long, value_name = "DIR", default_value = ".")]
        pgdata: PathBuf,
        /// The system identifier whose archive to read (default: the data
        /// directory's).
        #[arg(long, value_name = "ID")]
        system: Option<u64>,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum KeyType {
    Raw,
    X25519,
    Ed25519,
    /// An escrow: its identity at PATH.identity (keep it offline) and the
    /// escrow file at PATH, for `escrow_files`.
    Escrow,
}

#[derive(Debug, Args)]
pub struct CopyArgs {
    /// Only the copy of this name (default: every copy).
    #[arg(long, value_name = "NAME")]
    pub to: Option<String>,

    /// Say what each copy lacks (what a run would copy); copy nothing.
    #[arg(long, short = 'n')]
    pub dry_run: bool,

    #[command(flatten)]
    pub trust: TrustArgs,
}

#[derive(Debug, Args)]
pub struct CleanupArgs {
    /// Print the plan (keep or delete, with the reasons) and change nothing.
    #[arg(long, short = 'n')]
    pub dry_run: bool,

    /// Only backups of this kind.
    #[arg(long, value_enum)]
    pub kind: Option<KindArg>,
}

#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// A backup id to verify, or a unique prefix of one (default: every backup, or
    /// those of --kind/--since).
    #[arg(value_name = "ID")]
    pub backup: Option<String>,

    /// Only backups of this kind.
    #[arg(long, value_enum)]
    pub kind: Option<KindArg>,

    /// Only backups started at or after TIME (RFC 3339) or within DURATION (e.g. 7d).
    #[arg(long, value_name = "TIME|DURATION")]
    pub since: Option<String>,

    /// Restore the newest selected backup of each kind into a scratch directory and
    /// prove the data loads (a TigerBeetle replica starts and passes its integrity
    /// check; DuckDB tables have their recorded row counts; Parquet files parse).
    #[arg(long)]
    pub drill: bool,

    /// Also write the JSON report to FILE. The report always goes to the store
    /// too; when the store refuses it (read-only credentials), it is kept here,
    /// else on stdout under --json, else in a local file a warning names.
    #[arg(long, value_name = "FILE")]
    pub report: Option<PathBuf>,

    /// Write a JUnit XML test report to FILE, one test case per check (backup,
    /// object, ledger audit, drill; what could not be checked as an error), for
    /// CI systems to show. Written when checks fail too.
    #[arg(long, value_name = "FILE")]
    pub junit: Option<PathBuf>,

    #[command(flatten)]
    pub trust: TrustArgs,
}

#[derive(Debug, Args)]
pub struct ReplicateArgs {
    /// Say what a run would copy (new and changed files, with their sizes), what
    /// it would find unchanged or gone, and what it would skip; copy nothing,
    /// write nothing.
    #[arg(long, short = 'n')]
    pub dry_run: bool,
}

#[derive(Debug, Args)]
pub struct SnapshotArgs {
    /// What to snapshot (default: the TigerBeetle data file when the config names
    /// one, else the [postgres] server, else the [sqlite] database).
    #[arg(long, value_enum)]
    pub kind: Option<SnapshotKind>,
    /// TigerBeetle: build a base of the whole cluster (tigerbeetle.addresses) from
    /// its log instead of copying a data file: the newest base (or fresh replicas)
    /// is started on loopback, the log since it replayed, and the N data files
    /// stored. `restore --at TIME --replicas N` starts from the newest base at or
    /// before TIME. Runs where the key is; needs tigerbeetle.binary.
    #[arg(long, conflicts_with = "kind")]
    pub from_log: bool,
}

#[derive(Debug, Args)]
pub struct ExportArgs {
    /// What to export, when the config describes both a [duckdb] and a
    /// [postgres] database (default: the one it describes).
    #[arg(long, value_enum)]
    pub kind: Option<ExportKind>,
    /// Copy every table whole (the base of later incremental exports).
    #[arg(long, conflicts_with = "differential")]
    pub full: bool,
    /// Copy the rows changed since the last full export, not since the previous
    /// export: a restore then needs the full export and this one only.
    #[arg(long)]
    pub differential: bool,
}

#[derive(Debug, Args)]
pub struct ListArgs {
    /// Only backups of this kind.
    #[arg(long, value_enum)]
    pub kind: Option<KindArg>,

    /// Only backups made by this operation (snapshot, logs, export, replicate).
    #[arg(long, value_name = "OPERATION")]
    pub operation: Option<String>,

    /// Only backups started at or after TIME (RFC 3339) or within DURATION (e.g. 7d).
    #[arg(long, value_name = "TIME|DURATION")]
    pub since: Option<String>,

    /// Only the newest N of what the other filters select.
    #[arg(long, value_name = "N")]
    pub last: Option<usize>,
}

#[derive(Debug, Args)]
pub struct ShowArgs {
    /// Backup id (from `bkp list`), or a unique prefix of one; or `latest`,
    /// the newest backup of any kind.
    #[arg(value_name = "ID")]
    pub backup: String,

    #[command(flatten)]
    pub trust: TrustArgs,
}

#[derive(Debug, Args)]
pub struct CatArgs {
    /// A backup id (from `bkp list`, or a unique prefix of one) whose file to
    /// write, or `latest`: the newest backup that holds FILE (or any file);
    /// or an object's key in the store, as `bkp show ID` prints it
    /// (e.g. tigerbeetle/2026/11/23/tigerbeetle-snapshot-ID.tar.zst), or a
    /// chunk's (tigerbeetle/chunks/…).
    #[arg(value_name = "ID|OBJECT")]
    pub object: String,

    /// With a backup id: the name of the file to write, as `bkp show ID` lists
    /// it (e.g. 0_0.tigerbeetle); needed only when the backup has more than
    /// one.
    #[arg(value_name = "FILE")]
    pub file: Option<String>,

    /// With OBJECT: write the decrypted bytes still compressed (zstd or gzip,
    /// as the backup stored them) instead of the bytes the backup read (a tar
    /// stream for a snapshot).
    #[arg(long)]
    pub compressed: bool,

    /// Write binary data even when standard output is a terminal.
    #[arg(long)]
    pub force: bool,

    #[command(flatten)]
    pub trust: TrustArgs,
}

#[derive(Debug, Args)]
pub struct RestoreArgs {
    /// Backup id (from `bkp list`) or a unique prefix of one, or `latest` for the
    /// newest backup (of --kind; with --at, the newest snapshot at or before that
    /// time).
    #[arg(value_name = "ID|latest", default_value = "latest")]
    pub backup: String,

    /// Point-in-time restore (TigerBeetle): restore the snapshot, then replay the log
    /// segments up to TIME (RFC 3339, e.g. 2026-11-22T13:05:00Z). Without any
    /// snapshot at or before TIME, the log is replayed from the beginning. With
    /// --kind duckdb: the newest export at or before TIME. With --kind postgres:
    /// the newest base backup that finished by TIME, replayed from the WAL archive
    /// to TIME by PostgreSQL itself on a private socket, and proven there (run as
    /// the server's user).
    #[arg(long, value_name = "TIME")]
    pub at: Option<String>,

    /// Directory to restore into (for --kind duckdb: the new database file; for a
    /// PostgreSQL dump: the name of the new database on the [postgres] server). It
    /// must not exist or be empty, unless --force.
    #[arg(
        long,
        short = 't',
        value_name = "DIR",
        required_unless_present = "into"
    )]
    pub target: Option<PathBuf>,

    /// TigerBeetle, with --at: replay the log up to TIME into a cluster you formatted
    /// and started (any number of replicas, the cluster id of tigerbeetle.cluster_id)
    /// instead of a data file. It must hold nothing newer than TIME and must not be
    /// the cluster in tigerbeetle.addresses.
    #[arg(
        long,
        value_name = "ADDRESSES",
        requires = "at",
        conflicts_with_all = ["target", "force", "dry_run"]
    )]
    pub into: Option<String>,

    /// TigerBeetle, with --at and --target: deliver a whole cluster of N replicas
    /// (1 to 6): starting from the newest base of N replicas (`bkp snapshot
    /// --from-log`) at or before TIME, or without one from the log's first
    /// segment, the log after it is replayed into a private cluster of N
    /// replicas on loopback, and its N data files (CLUSTER_0.tigerbeetle …,
    /// CLUSTER being tigerbeetle.cluster_id) land in DIR, ready to copy to the N
    /// machines of a new cluster. --dry-run first names the base and the segments.
    #[arg(
        long,
        value_name = "N",
        default_value_t = 1,
        value_parser = clap::value_parser!(u8).range(1..=i64::from(crate::tigerbeetle::replica::MAX_REPLICAS)),
        conflicts_with = "into"
    )]
    pub replicas: u8,

    /// Kind of backup `latest` refers to.
    #[arg(long, value_enum, default_value = "tigerbeetle")]
    pub kind: KindArg,

    /// Replace a non-empty target directory (it is swapped out only after the
    /// restore completed and verified). From a terminal, a 5-second countdown
    /// on stderr comes first, which Ctrl-C cancels (exit 130, target untouched);
    /// without a terminal (cron, CI) there is none.
    #[arg(long)]
    pub force: bool,

    /// With --force: no countdown, even on a terminal.
    #[arg(long, short = 'y')]
    pub yes: bool,

    /// Say what the restore would read (backups, objects, bytes), where it would
    /// stage and whether the target would be accepted; download nothing, change
    /// nothing.
    #[arg(long, short = 'n')]
    pub dry_run: bool,

    /// Objects in an archive storage class (S3 Glacier Flexible Retrieval,
    /// Deep Archive): ask for a readable copy of every one this restore needs,
    /// kept DAYS days (1-30, default 7), retrieved at TIER (expedited, standard
    /// or bulk; default standard), and stop (exit 14) until they are readable;
    /// run the same command again then. Nothing archived: restores at once.
    #[arg(long, value_name = "DAYS,TIER", num_args = 0..=1, require_equals = true, default_missing_value = "")]
    pub request_restore: Option<String>,

    /// DuckDB: restore even when a table's rows differ from the content
    /// fingerprint its export recorded (an export missed a change); each such
    /// table is named in a warning. Without it such a restore is refused (exit 5).
    #[arg(long)]
    pub accept_content_mismatch: bool,

    /// PostgreSQL dump: restore only the objects of this schema (pg_restore
    /// --schema). Repeatable; not with --force.
    #[arg(long, value_name = "SCHEMA")]
    pub schema: Vec<String>,

    /// PostgreSQL dump: restore only this table (SCHEMA.NAME, or NAME when one
    /// schema has it), its definition and data, without its indexes or
    /// constraints (pg_restore --table). Repeatable; not with --schema or --force.
    #[arg(long, value_name = "TABLE")]
    pub table: Vec<String>,

    /// PostgreSQL dump: make the restoring role (postgres.user) the owner of
    /// every object and leave out the dump's grants (pg_restore --no-owner
    /// --no-privileges), for a server without the dump's roles.
    #[arg(long)]
    pub no_owner: bool,

    #[command(flatten)]
    pub trust: TrustArgs,
}

impl RestoreArgs {
    /// The target (empty with `--into`, which no target-taking engine sees).
    pub fn target(&self) -> &std::path::Path {
        self.target.as_deref().unwrap_or(std::path::Path::new(""))
    }
}

#[derive(Debug, Args)]
pub struct TrustLegacyArgs {
    /// Show what would be recorded; write nothing.
    #[arg(long)]
    pub dry_run: bool,
}

/// `--trust ID`, shared by the commands that read backups.
#[derive(Debug, Args)]
pub struct TrustArgs {
    /// Accept backup ID although its manifest has no seal or it is not encrypted
    /// while [encryption] is configured (a backup from before the store was
    /// sealed or encrypted). Check where it came from first. Repeatable.
    #[arg(long = "trust", value_name = "ID", value_parser = parse_id)]
    pub trust: Vec<BackupId>,
}

fn parse_id(s: &str) -> Result<BackupId, String> {
    s.parse().map_err(|e| format!("{e:#}"))
}

/// A `--kind` value: the kinds of [`crate::kinds::ALL`] a subcommand takes,
/// named and described by their descriptors.
macro_rules! kind_arg {
    ($(#[$doc:meta])* $name:ident, $takes:expr) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub struct $name(pub Kind);

        impl ValueEnum for $name {
            fn value_variants<'a>() -> &'a [Self] {
                static VALUES: LazyLock<Vec<$name>> = LazyLock::new(|| {
                    let takes: fn(&Descriptor) -> bool = $takes;
                    ALL.iter().filter(|d| takes(d)).map(|d| $name(d.kind)).collect()
                });
                &VALUES
            }

            fn to_possible_value(&self) -> Option<PossibleValue> {
                let d = self.0.describe();
                Some(PossibleValue::new(d.name).help(d.about))
            }
        }

        impl From<$name> for Kind {
            fn from(k: $name) -> Kind {
                k.0
            }
        }
    };
}

kind_arg!(
    /// Any kind bkp makes backups of.
    KindArg,
    |d| d.maker != Maker::None
);
kind_arg!(
    /// What `bkp snapshot` copies.
    SnapshotKind,
    |d| d.maker == Maker::Snapshot
);
kind_arg!(
    /// What `bkp export` exports.
    ExportKind,
    |d| d.maker == Maker::Export
);

/// The clap command, for generating man pages and completions.
pub fn command() -> clap::Command {
    // Without the commit: the generated pages must not change with every commit.
    <Cli as clap::CommandFactory>::command().long_version(None::<&'static str>)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names<T: ValueEnum>() -> Vec<String> {
        T::value_variants()
            .iter()
            .filter_map(|v| v.to_possible_value())
            .map(|p| p.get_name().to_string())
            .collect()
    }

    #[test]
    fn kind_values_are_the_descriptors() {
        assert_eq!(
            names::<KindArg>(),
            [
                "tigerbeetle",
                "duckdb",
                "parquet",
                "pgdump",
                "postgres",
                "sqlite"
            ]
        );
        assert_eq!(
            names::<SnapshotKind>(),
            ["tigerbeetle", "postgres", "sqlite"]
        );
        assert_eq!(names::<ExportKind>(), ["duckdb", "pgdump"]);
        // Each parses back to its kind.
        for k in KindArg::value_variants() {
            let name = k.0.as_str();
            assert_eq!(KindArg::from_str(name, false).unwrap(), *k);
        }
        assert!(SnapshotKind::from_str("duckdb", false).is_err());
    }
}
