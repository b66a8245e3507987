//! The man page sections clap does not know about: EXIT STATUS (from the
//! constants in `src/exit.rs`), ENVIRONMENT (every variable bkp reads; a test
//! checks the source against it), FILES and SEE ALSO, as roff.

use bkp::exit;

/// Variables bkp reads only so that its tests can steer it; they are never
/// documented for operators.
pub const TEST_HOOKS: &[&str] = &["BKP_NOW", "BKP_FAILPOINT", "BKP_PAUSEPOINT"];

/// Every variable bkp reads or sets, with one line each. An item may name
/// several variables; the scan in `docs.rs` looks for each name in the
/// rendered section.
pub const ENVIRONMENT: &[(&str, &str)] = &[
    ("BKP_CONFIG", "The configuration file, when --config is not given (default /etc/bkp/bkp.toml)."),
    ("BKP_WORK_DIR", "Overrides work_dir."),
    ("BKP_STORE_PATH", "Replaces the whole [store] section with a local store at this path. With no config file (no --config, no BKP_CONFIG, no /etc/bkp/bkp.toml) it starts the config of a first try, with the next four variables."),
    ("BKP_KEY_FILE, BKP_TIGERBEETLE_DATA_FILE, BKP_TIGERBEETLE_BINARY, BKP_SQLITE_DATABASE", "With BKP_STORE_PATH and no config file: encryption.key_file, tigerbeetle.data_file, tigerbeetle.binary and sqlite.database of a first try's config, relative to the current directory, whose .bkp-work is the work directory unless BKP_WORK_DIR names one. Beside a config file they are refused (exit 3)."),
    ("BKP_S3_BUCKET, BKP_S3_PREFIX, BKP_S3_ENDPOINT, BKP_S3_REGION", "Override store.bucket, store.prefix, store.endpoint and store.region."),
    ("PGHOST, PGPORT, PGUSER, PGDATABASE, PGPASSFILE, PGAPPNAME, PGCONNECT_TIMEOUT", "Not read: bkp sets them from [postgres] for the pg_dump, pg_restore and psql it runs, whose environment is otherwise scrubbed like every child's. PGPASSWORD is never passed on: the password belongs in postgres.passfile."),
    ("BKP_S3_PATH_STYLE", "Overrides store.path_style: true or false; anything else is a config error (exit 3)."),
    ("BKP_LEDGER_ADDRESSES", "Overrides ledger.addresses."),
    ("BKP_METRICS_DIR", "Overrides metrics.dir."),
    ("BKP_REPLICATE_SOURCE, BKP_REPLICATE_ENDPOINT, BKP_REPLICATE_REGION", "Override replicate.source, replicate.endpoint and replicate.region."),
    ("the variables named by encryption.key_env and encryption.passphrase_env (for example BKP_KEY, BKP_PASSPHRASE)", "The master key (64 hex characters) or a passphrase; also in [[encryption.old_keys]]."),
    ("the variables named by replicate.access_key_env and replicate.secret_key_env", "The replication source's own S3 credentials."),
    ("AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN", "S3 credentials, read by the AWS SDK's default chain; the config file never holds one."),
    ("AWS_PROFILE, AWS_CONFIG_FILE, AWS_SHARED_CREDENTIALS_FILE", "The AWS profile and its files, read by the SDK (region, credentials, retries)."),
    ("AWS_WEB_IDENTITY_TOKEN_FILE, AWS_ROLE_ARN", "Web identity credentials, read by the SDK."),
    ("AWS_REGION, AWS_DEFAULT_REGION", "The region when neither store.region nor BKP_S3_REGION names one (else us-east-1)."),
    ("AWS_EC2_METADATA_DISABLED", "true stops the SDK from asking EC2 instance metadata for a region or credentials."),
    ("AWS_ENDPOINT_URL_S3, AWS_ENDPOINT_URL", "The S3 endpoint when the config names none; makes path-style addressing the default."),
    ("AWS_IGNORE_CONFIGURED_ENDPOINT_URLS", "true makes the SDK, and bkp, ignore AWS_ENDPOINT_URL_S3 and AWS_ENDPOINT_URL."),
    ("AWS_MAX_ATTEMPTS, AWS_RETRY_MODE", "Attempts per S3 request (default 3) and the retry mode (standard or adaptive), read by the SDK."),
    ("CREDENTIALS_DIRECTORY", "Set by systemd for LoadCredential=; a key_file written ${CREDENTIALS_DIRECTORY}/NAME is read from it."),
    ("BKP_HOSTNAME", "The host name bkp records in manifests, reports and store leases (default: the kernel's); host names must be unique among the hosts that share a store."),
    ("BKP_LOG", "Debug output without -vv: a RUST_LOG-style filter (debug, trace, aws_smithy_runtime=trace, bkp=debug). Credentials are never printed."),
    ("JOURNAL_STREAM", "Set by systemd; when stderr is the journal, each line starts with its syslog priority (<3> error to <7> detail)."),
    ("HOSTNAME", "The host name recorded in manifests when /proc/sys/kernel/hostname cannot be read."),
    ("MONITOR_SERVICE_RESULT, MONITOR_EXIT_CODE, MONITOR_EXIT_STATUS, MONITOR_INVOCATION_ID", "Set by systemd for OnFailure= units; bkp notify --failed-unit reports the failed unit's result with them, unless that run (same invocation) delivered its own failure."),
    ("INVOCATION_ID", "Set by systemd: a run that delivers its failure notification records it in the work_dir, so the OnFailure= unit does not send it twice."),
    ("BKP_EVENT, BKP_OPERATION, BKP_EXIT_CODE", "Set by bkp for notify.command: the event, the operation and its exit code."),
];

/// The files an operator meets, with one line each.
const FILES: &[(&str, &str)] = &[
    ("/etc/bkp/bkp.toml", "The configuration (see bkp.toml(5)); --config or BKP_CONFIG name another. It belongs to root or to the user bkp runs as, and only its owner may write it: one others or its group may write, or another user owns, is refused (exit 3)."),
    ("/etc/bkp/bkp.env", "Secrets that are not files (the key_env variable, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY), one NAME=value a line, root only, mode 0600; read by the systemd units and the crontab."),
    ("/etc/bkp/key", "The master key, as bkp key generate writes it (mode 0400; one that others may read is refused), named by encryption.key_file; under systemd also ${CREDENTIALS_DIRECTORY}/NAME with LoadCredential=."),
    ("WORK_DIR/OPERATION.lock", "The lock of each operation (flock; the kernel drops it when the process dies)."),
    ("WORK_DIR/ledger-spool/", "Audit-ledger records not yet delivered; sent by the next run."),
    ("WORK_DIR/notify/", "The last outcome of each operation, for recovery notifications."),
    ("WORK_DIR/commands.log, WORK_DIR/replica.log", "Output of the stop and start commands and of private TigerBeetle replicas."),
    ("WORK_DIR/replica-stopped.json", "Present while a snapshot in stop mode has the replica stopped; one its run no longer holds means that run was killed there, and the next bkp run runs the start command."),
    ("WORK_DIR/tmp/", "Scratch: data-file copies, restore spools, DuckDB rebuilds, drills; swept by the next run once their owner is dead."),
    ("/var/lib/bkp", "The work_dir the systemd units expect (StateDirectory=bkp)."),
    ("STORE/manifests/KIND/ID.json", "One manifest per backup, written last; KIND is tigerbeetle, duckdb or parquet."),
    ("STORE/tigerbeetle/, STORE/duckdb/, STORE/parquet/", "The data objects, by date; each manifest names its own."),
    ("STORE/reports/OPERATION/YYYY/MM/DD/ID.json", "Reports of cleanup and verify runs."),
    ("STORE/trash/KIND/ID.json", "Tombstones: deletions in progress, finished by the next cleanup."),
    ("STORE/bkp-store.json", "The store marker bkp init writes (optional)."),
    ("METRICS_DIR/bkp_OPERATION_SCOPE.prom", "Run metrics for node_exporter's textfile collector."),
    ("/etc/systemd/system/bkp-*.service, bkp-*.timer", "The units shipped in systemd/: one service and timer per schedule."),
    ("/etc/cron.d/bkp", "The crontab shipped as examples/crontab, for hosts without systemd."),
];

/// The documented exit codes, from the constants the code uses.
fn exit_codes() -> Vec<(String, &'static str)> {
    vec![
        (exit::SUCCESS.to_string(), "Success."),
        (exit::FAILURE.to_string(), "Failure: the message names what failed."),
        (exit::USAGE.to_string(), "Usage error (unknown flag, missing argument)."),
        (exit::CONFIG.to_string(), "Config error: the message names the file and key. Also a store another installation marked, or a manifest of a newer major schema."),
        (exit::LOCKED.to_string(), "Another run of this operation and config holds the lock (see --wait)."),
        (exit::INTEGRITY.to_string(), "Verification failed: checksum, authentication, wrong key, corrupt or unsupported object; nothing was restored."),
        (exit::TRANSIENT.to_string(), "Transient: the store or the ledger could not be reached; retry later."),
        (exit::UNSAFE_SOURCE.to_string(), "Unsafe source: a live data file without a safe snapshot mode, a DuckDB database held for writing, a locked file in a restore target; from bkp status, a replica a killed snapshot left stopped that bkp could not start."),
        (exit::TARGET_EXISTS.to_string(), "The restore target exists and is not empty (or holds the store, work directory, config or data file)."),
        (exit::NOT_FOUND.to_string(), "No such backup (see bkp list). Also a PostgreSQL restore --at TIME whose WAL archive ends before TIME (no commit after it archived yet) or has a gap before it: nothing was restored; restore to an earlier time, and run bkp verify, which names the gaps."),
        (exit::PARTIAL.to_string(), "The run finished but skipped some items; its report names them."),
        (exit::STALE.to_string(), "(status) A watched schedule's newest good backup is older than its RPO, or there is none; or a copy has lacked a backup longer than its max_lag, or cannot be read."),
        (exit::UNSUPPORTED.to_string(), "Unsupported source: it holds something a restore could not recreate exactly (a view over outside files, a type this build cannot read back); everything else was stored, and the message names what was left out."),
        (exit::ROLLBACK.to_string(), "Rollback: the store no longer shows a backup bkp recorded as stored (heads/): its manifest was deleted or hidden behind a delete marker; from restore latest, status and verify."),
        (exit::ARCHIVED.to_string(), "Archived: an object the run must read is in an archive storage class (S3 Glacier Flexible Retrieval, Deep Archive) and not restored; restore --request-restore asks for what a restore needs."),
        ("201-214".to_string(), "(wal fetch) Any failure but \"not in the archive\" (9): 200 + the code above, so that PostgreSQL stops recovery instead of taking it for the end of the archive."),
        (format!("{}, 143, 129", exit::INTERRUPTED), "Interrupted by SIGINT, SIGTERM or SIGHUP (128 + signal): the run stopped cleanly and stored no backup."),
    ]
}

/// Escapes text for roff: backslashes, hyphens (so they stay ASCII) and a
/// leading control character.
pub fn escape(s: &str) -> String {
    let s = s.replace('\\', "\\\\").replace('-', "\\-");
    match s.chars().next() {
        Some('.') | Some('\'') => format!("\\&{s}"),
        _ => s,
    }
}

fn tagged(out: &mut String, items: impl IntoIterator<Item = (String, String)>) {
    for (tag, text) in items {
        out.push_str(&format!(
            ".TP\n\\fB{}\\fR\n{}\n",
            escape(&tag),
            escape(&text)
        ));
    }
}

/// The sections added to every page: `page` is `bkp` or `bkp-SUBCOMMAND`.
pub fn render(page: &str) -> String {
    let mut out = String::from(".SH \"EXIT STATUS\"\n");
    tagged(
        &mut out,
        exit_codes().into_iter().map(|(c, t)| (c, t.to_string())),
    );
    out.push_str(".PP\nUnder \\-\\-json, a failure is one JSON object on stderr (schema bkp.error/1) with the exit code and its class.\n");
    out.push_str(".SH ENVIRONMENT\n.PP\nPrecedence: command\\-line flags, then the environment, then the config file, then defaults.\n");
    tagged(
        &mut out,
        ENVIRONMENT
            .iter()
            .map(|(v, t)| (v.to_string(), t.to_string())),
    );
    out.push_str(".SH FILES\n.PP\nWORK_DIR is work_dir, STORE the store's directory or s3://BUCKET/PREFIX, METRICS_DIR metrics.dir.\n");
    tagged(
        &mut out,
        FILES.iter().map(|(f, t)| (f.to_string(), t.to_string())),
    );
    out.push_str(".SH \"SEE ALSO\"\n");
    let mut also = vec!["bkp.toml(5)".to_string()];
    if page != "bkp" {
        also.insert(0, "bkp(1)".into());
    }
    out.push_str(&escape(&also.join(", ")));
    out.push_str("\n.PP\nThe manual (docs/ in the source, an mdBook) describes each subcommand, the schedules, the restore runbooks, the security model and the compatibility of stored formats; CHANGELOG.md lists the changes of each version.\n");
    out
}
