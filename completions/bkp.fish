# Print an optspec for argparse to handle cmd's options that are independent of any subcommand.
function __fish_bkp_global_optspecs
    string join \n c/config= json q/quiet v/verbose no-progress wait= store= h/help V/version
end

function __fish_bkp_needs_command
    # Figure out if the current invocation already has a command.
    set -l cmd (commandline -opc)
    set -e cmd[1]
    argparse -s (__fish_bkp_global_optspecs) -- $cmd 2>/dev/null
    or return
    if set -q argv[1]
        # Also print the command, so this can be used to figure out what it is.
        echo $argv[1]
        return 1
    end
    return 0
end

function __fish_bkp_using_subcommand
    set -l cmd (__fish_bkp_needs_command)
    test -z "$cmd"
    and return 1
    contains -- $cmd[1] $argv
end

complete -c bkp -n "__fish_bkp_needs_command" -s c -l config -d 'Configuration file' -r -F
complete -c bkp -n "__fish_bkp_needs_command" -l wait -d 'Wait up to DURATION (e.g. 30s, 10m) for another run of this config to finish instead of exiting with code 4' -r
complete -c bkp -n "__fish_bkp_needs_command" -l store -d 'Read from the copy NAME (a [[copies]] entry) instead of the primary [store], as after losing the primary: for list, show, cat, verify, restore and status. `primary` names the [store] itself' -r
complete -c bkp -n "__fish_bkp_needs_command" -l json -d 'Print results as JSON on stdout (exact byte counts, RFC 3339 times)'
complete -c bkp -n "__fish_bkp_needs_command" -s q -l quiet -d 'Print only warnings and errors on stderr'
complete -c bkp -n "__fish_bkp_needs_command" -s v -l verbose -d 'Print each step on stderr; twice (-vv) also debug output, the S3 client\'s included; three times (-vvv) trace output. Credentials and keys are never printed (the S3 client redacts them even at trace level). BKP_LOG=FILTER gives the same without flags (like RUST_LOG: debug, trace, aws_smithy_runtime=trace, bkp=debug)'
complete -c bkp -n "__fish_bkp_needs_command" -l no-progress -d 'No progress bars, even on a terminal'
complete -c bkp -n "__fish_bkp_needs_command" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c bkp -n "__fish_bkp_needs_command" -s V -l version -d 'Print version'
complete -c bkp -n "__fish_bkp_needs_command" -f -a "snapshot" -d 'Back up the TigerBeetle data file: consistent copy, tar, compress, encrypt, checksum, upload, manifest, ledger record. With --kind postgres: a base backup of the PostgreSQL server (pg_basebackup, tar, with the WAL it needs), streamed through the same chain'
complete -c bkp -n "__fish_bkp_needs_command" -f -a "logs" -d 'Capture the TigerBeetle accounts and transfers created since the previous log segment: segment, compress, encrypt, checksum, upload, manifest, ledger'
complete -c bkp -n "__fish_bkp_needs_command" -f -a "export" -d 'Export the DuckDB hot tier to Parquet: every table with --full, else the rows changed since the previous export (per-table watermark column), or since the last full export with --differential; encrypt, checksum, upload, manifest, ledger. With --kind pgdump: dump the PostgreSQL database with pg_dump (custom format, streamed) through the same chain'
complete -c bkp -n "__fish_bkp_needs_command" -f -a "list" -d 'List the backups in the store'
complete -c bkp -n "__fish_bkp_needs_command" -f -a "show" -d 'Show one backup: its manifest (times, host, retention, key, every object and file with its size and SHA-256), after checking its seal'
complete -c bkp -n "__fish_bkp_needs_command" -f -a "restore" -d 'Restore a backup into a new directory'
complete -c bkp -n "__fish_bkp_needs_command" -f -a "cat" -d 'Break glass: write one backed-up file (`bkp cat ID FILE`) or one stored object (`bkp cat OBJECT`), verified and decrypted, to standard output'
complete -c bkp -n "__fish_bkp_needs_command" -f -a "replicate" -d 'Copy the Parquet cold tier\'s new and changed files to the store (each checked to be Parquet first) and record the whole set in a manifest. Skipped files make the exit code 10'
complete -c bkp -n "__fish_bkp_needs_command" -f -a "cleanup" -d 'Apply the retention policy: delete expired backups (never one a kept backup\'s chain needs, never the newest of a kind), objects of crashed runs and local leftovers. Each deletion records a reverse code-12 transfer'
complete -c bkp -n "__fish_bkp_needs_command" -f -a "verify" -d 'Check backups: every object present with its size and SHA-256, every encrypted chunk authentic, chains complete, and the ledger in agreement with the store; --drill also restores each and proves the data loads'
complete -c bkp -n "__fish_bkp_needs_command" -f -a "check" -d 'Check everything a backup run needs, one line per check: the config, every key, the work directory, the store (PUT, HEAD, LIST, GET, DELETE, and that a create-only write is never allowed to replace an object), the ledger, the TigerBeetle binary and data file, the DuckDB database and the replication source. Exits with the code of the first failure'
complete -c bkp -n "__fish_bkp_needs_command" -f -a "init" -d 'Mark the store (or prefix) as this installation\'s: writes `bkp-store.json`, sealed with the key, naming the key id and formats. Runs then refuse a store whose marker another installation\'s key sealed. Optional; never replaces a marker, and does nothing on a store this installation marked'
complete -c bkp -n "__fish_bkp_needs_command" -f -a "trust-legacy" -d 'Record what in the store is this installation\'s although the current key did not seal it: manifests from before the store was sealed (no seal; with [encryption] unsealed_before, only backups started before it) and manifests and tombstones sealed by keys rotated out since. Each is recorded by its key and the SHA-256 of its exact bytes in one new sealed, create-only list (legacy/ID.json); readers then use it, and refuse an edited copy, while nothing else unsealed or sealed by an old key is used. Run it once when upgrading a store from before sealing, and after each key rotation; check what it shows first (--dry-run)'
complete -c bkp -n "__fish_bkp_needs_command" -f -a "key" -d 'Manage master keys'
complete -c bkp -n "__fish_bkp_needs_command" -f -a "wal" -d 'PostgreSQL\'s continuous WAL archive: `wal push` is the server\'s `archive_command`, `wal fetch` its `restore_command`. One file per run, compressed, encrypted, and named so that the store cannot swap or alter it unnoticed'
complete -c bkp -n "__fish_bkp_needs_command" -f -a "copy" -d 'Bring each copy ([[copies]], or the one --to names) up to date with the primary store: copy what it lacks (the store marker, each backup\'s objects and then its sealed manifest, heads, the WAL archive), create-only, each object\'s size and SHA-256 checked against its manifest on the way; nothing is decrypted, so a write-only host can run it. A backup whose manifest or objects do not verify on the primary is not copied and is named (exit 5)'
complete -c bkp -n "__fish_bkp_needs_command" -f -a "status" -d 'Show, per schedule, the newest good backup, its age, the next due time and whether its RPO is breached; exit 11 if any watched schedule is breached or never ran. Reads only the manifests it needs'
complete -c bkp -n "__fish_bkp_needs_command" -f -a "notify" -d 'Send a notification through `[notify]` (webhook and command) by hand: `--test` proves delivery; `--failed-unit UNIT` reports a systemd unit that failed in a way bkp could not report itself (killed at its runtime cap, crashed, never started), as `bkp-failure@.service` does from `OnFailure=`. Exit 6 when a delivery fails'
complete -c bkp -n "__fish_bkp_needs_command" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c bkp -n "__fish_bkp_using_subcommand snapshot" -l kind -d 'What to snapshot (default: the TigerBeetle data file when the config names one, else the [postgres] server)' -r -f -a "tigerbeetle\t'A TigerBeetle ledger: its data file (snapshots) and its log.'
postgres\t'A PostgreSQL base backup (`pg_basebackup`).'"
complete -c bkp -n "__fish_bkp_using_subcommand snapshot" -s c -l config -d 'Configuration file' -r -F
complete -c bkp -n "__fish_bkp_using_subcommand snapshot" -l wait -d 'Wait up to DURATION (e.g. 30s, 10m) for another run of this config to finish instead of exiting with code 4' -r
complete -c bkp -n "__fish_bkp_using_subcommand snapshot" -l store -d 'Read from the copy NAME (a [[copies]] entry) instead of the primary [store], as after losing the primary: for list, show, cat, verify, restore and status. `primary` names the [store] itself' -r
complete -c bkp -n "__fish_bkp_using_subcommand snapshot" -l from-log -d 'TigerBeetle: build a base of the whole cluster (tigerbeetle.addresses) from its log instead of copying a data file: the newest base (or fresh replicas) is started on loopback, the log since it replayed, and the N data files stored. `restore --at TIME --replicas N` starts from the newest base at or before TIME. Runs where the key is; needs tigerbeetle.binary'
complete -c bkp -n "__fish_bkp_using_subcommand snapshot" -l json -d 'Print results as JSON on stdout (exact byte counts, RFC 3339 times)'
complete -c bkp -n "__fish_bkp_using_subcommand snapshot" -s q -l quiet -d 'Print only warnings and errors on stderr'
complete -c bkp -n "__fish_bkp_using_subcommand snapshot" -s v -l verbose -d 'Print each step on stderr; twice (-vv) also debug output, the S3 client\'s included; three times (-vvv) trace output. Credentials and keys are never printed (the S3 client redacts them even at trace level). BKP_LOG=FILTER gives the same without flags (like RUST_LOG: debug, trace, aws_smithy_runtime=trace, bkp=debug)'
complete -c bkp -n "__fish_bkp_using_subcommand snapshot" -l no-progress -d 'No progress bars, even on a terminal'
complete -c bkp -n "__fish_bkp_using_subcommand snapshot" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c bkp -n "__fish_bkp_using_subcommand logs" -s c -l config -d 'Configuration file' -r -F
complete -c bkp -n "__fish_bkp_using_subcommand logs" -l wait -d 'Wait up to DURATION (e.g. 30s, 10m) for another run of this config to finish instead of exiting with code 4' -r
complete -c bkp -n "__fish_bkp_using_subcommand logs" -l store -d 'Read from the copy NAME (a [[copies]] entry) instead of the primary [store], as after losing the primary: for list, show, cat, verify, restore and status. `primary` names the [store] itself' -r
complete -c bkp -n "__fish_bkp_using_subcommand logs" -l json -d 'Print results as JSON on stdout (exact byte counts, RFC 3339 times)'
complete -c bkp -n "__fish_bkp_using_subcommand logs" -s q -l quiet -d 'Print only warnings and errors on stderr'
complete -c bkp -n "__fish_bkp_using_subcommand logs" -s v -l verbose -d 'Print each step on stderr; twice (-vv) also debug output, the S3 client\'s included; three times (-vvv) trace output. Credentials and keys are never printed (the S3 client redacts them even at trace level). BKP_LOG=FILTER gives the same without flags (like RUST_LOG: debug, trace, aws_smithy_runtime=trace, bkp=debug)'
complete -c bkp -n "__fish_bkp_using_subcommand logs" -l no-progress -d 'No progress bars, even on a terminal'
complete -c bkp -n "__fish_bkp_using_subcommand logs" -s h -l help -d 'Print help'
complete -c bkp -n "__fish_bkp_using_subcommand export" -l kind -d 'What to export, when the config describes both a [duckdb] and a [postgres] database (default: the one it describes)' -r -f -a "duckdb\t'The DuckDB hot tier, as Parquet.'
pgdump\t'A PostgreSQL dump (`pg_dump`).'"
complete -c bkp -n "__fish_bkp_using_subcommand export" -s c -l config -d 'Configuration file' -r -F
complete -c bkp -n "__fish_bkp_using_subcommand export" -l wait -d 'Wait up to DURATION (e.g. 30s, 10m) for another run of this config to finish instead of exiting with code 4' -r
complete -c bkp -n "__fish_bkp_using_subcommand export" -l store -d 'Read from the copy NAME (a [[copies]] entry) instead of the primary [store], as after losing the primary: for list, show, cat, verify, restore and status. `primary` names the [store] itself' -r
complete -c bkp -n "__fish_bkp_using_subcommand export" -l full -d 'Copy every table whole (the base of later incremental exports)'
complete -c bkp -n "__fish_bkp_using_subcommand export" -l differential -d 'Copy the rows changed since the last full export, not since the previous export: a restore then needs the full export and this one only'
complete -c bkp -n "__fish_bkp_using_subcommand export" -l json -d 'Print results as JSON on stdout (exact byte counts, RFC 3339 times)'
complete -c bkp -n "__fish_bkp_using_subcommand export" -s q -l quiet -d 'Print only warnings and errors on stderr'
complete -c bkp -n "__fish_bkp_using_subcommand export" -s v -l verbose -d 'Print each step on stderr; twice (-vv) also debug output, the S3 client\'s included; three times (-vvv) trace output. Credentials and keys are never printed (the S3 client redacts them even at trace level). BKP_LOG=FILTER gives the same without flags (like RUST_LOG: debug, trace, aws_smithy_runtime=trace, bkp=debug)'
complete -c bkp -n "__fish_bkp_using_subcommand export" -l no-progress -d 'No progress bars, even on a terminal'
complete -c bkp -n "__fish_bkp_using_subcommand export" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c bkp -n "__fish_bkp_using_subcommand list" -l kind -d 'Only backups of this kind' -r -f -a "tigerbeetle\t'A TigerBeetle ledger: its data file (snapshots) and its log.'
duckdb\t'The DuckDB hot tier, as Parquet.'
parquet\t'The Parquet cold tier, as replicated.'
pgdump\t'A PostgreSQL dump (`pg_dump`).'
postgres\t'A PostgreSQL base backup (`pg_basebackup`).'"
complete -c bkp -n "__fish_bkp_using_subcommand list" -l operation -d 'Only backups made by this operation (snapshot, logs, export, replicate)' -r
complete -c bkp -n "__fish_bkp_using_subcommand list" -l since -d 'Only backups started at or after TIME (RFC 3339) or within DURATION (e.g. 7d)' -r
complete -c bkp -n "__fish_bkp_using_subcommand list" -l last -d 'Only the newest N of what the other filters select' -r
complete -c bkp -n "__fish_bkp_using_subcommand list" -s c -l config -d 'Configuration file' -r -F
complete -c bkp -n "__fish_bkp_using_subcommand list" -l wait -d 'Wait up to DURATION (e.g. 30s, 10m) for another run of this config to finish instead of exiting with code 4' -r
complete -c bkp -n "__fish_bkp_using_subcommand list" -l store -d 'Read from the copy NAME (a [[copies]] entry) instead of the primary [store], as after losing the primary: for list, show, cat, verify, restore and status. `primary` names the [store] itself' -r
complete -c bkp -n "__fish_bkp_using_subcommand list" -l json -d 'Print results as JSON on stdout (exact byte counts, RFC 3339 times)'
complete -c bkp -n "__fish_bkp_using_subcommand list" -s q -l quiet -d 'Print only warnings and errors on stderr'
complete -c bkp -n "__fish_bkp_using_subcommand list" -s v -l verbose -d 'Print each step on stderr; twice (-vv) also debug output, the S3 client\'s included; three times (-vvv) trace output. Credentials and keys are never printed (the S3 client redacts them even at trace level). BKP_LOG=FILTER gives the same without flags (like RUST_LOG: debug, trace, aws_smithy_runtime=trace, bkp=debug)'
complete -c bkp -n "__fish_bkp_using_subcommand list" -l no-progress -d 'No progress bars, even on a terminal'
complete -c bkp -n "__fish_bkp_using_subcommand list" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c bkp -n "__fish_bkp_using_subcommand show" -l trust -d 'Accept backup ID although its manifest has no seal or it is not encrypted while [encryption] is configured (a backup from before the store was sealed or encrypted). Check where it came from first. Repeatable' -r
complete -c bkp -n "__fish_bkp_using_subcommand show" -s c -l config -d 'Configuration file' -r -F
complete -c bkp -n "__fish_bkp_using_subcommand show" -l wait -d 'Wait up to DURATION (e.g. 30s, 10m) for another run of this config to finish instead of exiting with code 4' -r
complete -c bkp -n "__fish_bkp_using_subcommand show" -l store -d 'Read from the copy NAME (a [[copies]] entry) instead of the primary [store], as after losing the primary: for list, show, cat, verify, restore and status. `primary` names the [store] itself' -r
complete -c bkp -n "__fish_bkp_using_subcommand show" -l json -d 'Print results as JSON on stdout (exact byte counts, RFC 3339 times)'
complete -c bkp -n "__fish_bkp_using_subcommand show" -s q -l quiet -d 'Print only warnings and errors on stderr'
complete -c bkp -n "__fish_bkp_using_subcommand show" -s v -l verbose -d 'Print each step on stderr; twice (-vv) also debug output, the S3 client\'s included; three times (-vvv) trace output. Credentials and keys are never printed (the S3 client redacts them even at trace level). BKP_LOG=FILTER gives the same without flags (like RUST_LOG: debug, trace, aws_smithy_runtime=trace, bkp=debug)'
complete -c bkp -n "__fish_bkp_using_subcommand show" -l no-progress -d 'No progress bars, even on a terminal'
complete -c bkp -n "__fish_bkp_using_subcommand show" -s h -l help -d 'Print help'
complete -c bkp -n "__fish_bkp_using_subcommand restore" -l at -d 'Point-in-time restore (TigerBeetle): restore the snapshot, then replay the log segments up to TIME (RFC 3339, e.g. 2026-11-22T13:05:00Z). Without any snapshot at or before TIME, the log is replayed from the beginning. With --kind duckdb: the newest export at or before TIME. With --kind postgres: the newest base backup that finished by TIME, replayed from the WAL archive to TIME by PostgreSQL itself on a private socket, and proven there (run as the server\'s user)' -r
complete -c bkp -n "__fish_bkp_using_subcommand restore" -s t -l target -d 'Directory to restore into (for --kind duckdb: the new database file; for a PostgreSQL dump: the name of the new database on the [postgres] server). It must not exist or be empty, unless --force' -r -F
complete -c bkp -n "__fish_bkp_using_subcommand restore" -l into -d 'TigerBeetle, with --at: replay the log up to TIME into a cluster you formatted and started (any number of replicas, the cluster id of tigerbeetle.cluster_id) instead of a data file. It must hold nothing newer than TIME and must not be the cluster in tigerbeetle.addresses' -r
complete -c bkp -n "__fish_bkp_using_subcommand restore" -l replicas -d 'TigerBeetle, with --at and --target: deliver a whole cluster of N replicas (1 to 6): the log is replayed from the beginning into a private cluster of N fresh replicas on loopback, and its N data files (CLUSTER_0.tigerbeetle …, CLUSTER being tigerbeetle.cluster_id) land in DIR, ready to copy to the N machines of a new cluster. The log must reach back to the cluster\'s first segment' -r
complete -c bkp -n "__fish_bkp_using_subcommand restore" -l kind -d 'Kind of backup `latest` refers to' -r -f -a "tigerbeetle\t'A TigerBeetle ledger: its data file (snapshots) and its log.'
duckdb\t'The DuckDB hot tier, as Parquet.'
parquet\t'The Parquet cold tier, as replicated.'
pgdump\t'A PostgreSQL dump (`pg_dump`).'
postgres\t'A PostgreSQL base backup (`pg_basebackup`).'"
complete -c bkp -n "__fish_bkp_using_subcommand restore" -l schema -d 'PostgreSQL dump: restore only the objects of this schema (pg_restore --schema). Repeatable; not with --force' -r
complete -c bkp -n "__fish_bkp_using_subcommand restore" -l table -d 'PostgreSQL dump: restore only this table (SCHEMA.NAME, or NAME when one schema has it), its definition and data, without its indexes or constraints (pg_restore --table). Repeatable; not with --schema or --force' -r
complete -c bkp -n "__fish_bkp_using_subcommand restore" -l trust -d 'Accept backup ID although its manifest has no seal or it is not encrypted while [encryption] is configured (a backup from before the store was sealed or encrypted). Check where it came from first. Repeatable' -r
complete -c bkp -n "__fish_bkp_using_subcommand restore" -s c -l config -d 'Configuration file' -r -F
complete -c bkp -n "__fish_bkp_using_subcommand restore" -l wait -d 'Wait up to DURATION (e.g. 30s, 10m) for another run of this config to finish instead of exiting with code 4' -r
complete -c bkp -n "__fish_bkp_using_subcommand restore" -l store -d 'Read from the copy NAME (a [[copies]] entry) instead of the primary [store], as after losing the primary: for list, show, cat, verify, restore and status. `primary` names the [store] itself' -r
complete -c bkp -n "__fish_bkp_using_subcommand restore" -l force -d 'Replace a non-empty target directory (it is swapped out only after the restore completed and verified). From a terminal, a 5-second countdown on stderr comes first, which Ctrl-C cancels (exit 130, target untouched); without a terminal (cron, CI) there is none'
complete -c bkp -n "__fish_bkp_using_subcommand restore" -s y -l yes -d 'With --force: no countdown, even on a terminal'
complete -c bkp -n "__fish_bkp_using_subcommand restore" -s n -l dry-run -d 'Say what the restore would read (backups, objects, bytes), where it would stage and whether the target would be accepted; download nothing, change nothing'
complete -c bkp -n "__fish_bkp_using_subcommand restore" -l accept-content-mismatch -d 'DuckDB: restore even when a table\'s rows differ from the content fingerprint its export recorded (an export missed a change); each such table is named in a warning. Without it such a restore is refused (exit 5)'
complete -c bkp -n "__fish_bkp_using_subcommand restore" -l no-owner -d 'PostgreSQL dump: make the restoring role (postgres.user) the owner of every object and leave out the dump\'s grants (pg_restore --no-owner --no-privileges), for a server without the dump\'s roles'
complete -c bkp -n "__fish_bkp_using_subcommand restore" -l json -d 'Print results as JSON on stdout (exact byte counts, RFC 3339 times)'
complete -c bkp -n "__fish_bkp_using_subcommand restore" -s q -l quiet -d 'Print only warnings and errors on stderr'
complete -c bkp -n "__fish_bkp_using_subcommand restore" -s v -l verbose -d 'Print each step on stderr; twice (-vv) also debug output, the S3 client\'s included; three times (-vvv) trace output. Credentials and keys are never printed (the S3 client redacts them even at trace level). BKP_LOG=FILTER gives the same without flags (like RUST_LOG: debug, trace, aws_smithy_runtime=trace, bkp=debug)'
complete -c bkp -n "__fish_bkp_using_subcommand restore" -l no-progress -d 'No progress bars, even on a terminal'
complete -c bkp -n "__fish_bkp_using_subcommand restore" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c bkp -n "__fish_bkp_using_subcommand cat" -l trust -d 'Accept backup ID although its manifest has no seal or it is not encrypted while [encryption] is configured (a backup from before the store was sealed or encrypted). Check where it came from first. Repeatable' -r
complete -c bkp -n "__fish_bkp_using_subcommand cat" -s c -l config -d 'Configuration file' -r -F
complete -c bkp -n "__fish_bkp_using_subcommand cat" -l wait -d 'Wait up to DURATION (e.g. 30s, 10m) for another run of this config to finish instead of exiting with code 4' -r
complete -c bkp -n "__fish_bkp_using_subcommand cat" -l store -d 'Read from the copy NAME (a [[copies]] entry) instead of the primary [store], as after losing the primary: for list, show, cat, verify, restore and status. `primary` names the [store] itself' -r
complete -c bkp -n "__fish_bkp_using_subcommand cat" -l compressed -d 'With OBJECT: write the decrypted bytes still compressed (zstd or gzip, as the backup stored them) instead of the bytes the backup read (a tar stream for a snapshot)'
complete -c bkp -n "__fish_bkp_using_subcommand cat" -l force -d 'Write binary data even when standard output is a terminal'
complete -c bkp -n "__fish_bkp_using_subcommand cat" -l json -d 'Print results as JSON on stdout (exact byte counts, RFC 3339 times)'
complete -c bkp -n "__fish_bkp_using_subcommand cat" -s q -l quiet -d 'Print only warnings and errors on stderr'
complete -c bkp -n "__fish_bkp_using_subcommand cat" -s v -l verbose -d 'Print each step on stderr; twice (-vv) also debug output, the S3 client\'s included; three times (-vvv) trace output. Credentials and keys are never printed (the S3 client redacts them even at trace level). BKP_LOG=FILTER gives the same without flags (like RUST_LOG: debug, trace, aws_smithy_runtime=trace, bkp=debug)'
complete -c bkp -n "__fish_bkp_using_subcommand cat" -l no-progress -d 'No progress bars, even on a terminal'
complete -c bkp -n "__fish_bkp_using_subcommand cat" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c bkp -n "__fish_bkp_using_subcommand replicate" -s c -l config -d 'Configuration file' -r -F
complete -c bkp -n "__fish_bkp_using_subcommand replicate" -l wait -d 'Wait up to DURATION (e.g. 30s, 10m) for another run of this config to finish instead of exiting with code 4' -r
complete -c bkp -n "__fish_bkp_using_subcommand replicate" -l store -d 'Read from the copy NAME (a [[copies]] entry) instead of the primary [store], as after losing the primary: for list, show, cat, verify, restore and status. `primary` names the [store] itself' -r
complete -c bkp -n "__fish_bkp_using_subcommand replicate" -s n -l dry-run -d 'Say what a run would copy (new and changed files, with their sizes), what it would find unchanged or gone, and what it would skip; copy nothing, write nothing'
complete -c bkp -n "__fish_bkp_using_subcommand replicate" -l json -d 'Print results as JSON on stdout (exact byte counts, RFC 3339 times)'
complete -c bkp -n "__fish_bkp_using_subcommand replicate" -s q -l quiet -d 'Print only warnings and errors on stderr'
complete -c bkp -n "__fish_bkp_using_subcommand replicate" -s v -l verbose -d 'Print each step on stderr; twice (-vv) also debug output, the S3 client\'s included; three times (-vvv) trace output. Credentials and keys are never printed (the S3 client redacts them even at trace level). BKP_LOG=FILTER gives the same without flags (like RUST_LOG: debug, trace, aws_smithy_runtime=trace, bkp=debug)'
complete -c bkp -n "__fish_bkp_using_subcommand replicate" -l no-progress -d 'No progress bars, even on a terminal'
complete -c bkp -n "__fish_bkp_using_subcommand replicate" -s h -l help -d 'Print help'
complete -c bkp -n "__fish_bkp_using_subcommand cleanup" -l kind -d 'Only backups of this kind' -r -f -a "tigerbeetle\t'A TigerBeetle ledger: its data file (snapshots) and its log.'
duckdb\t'The DuckDB hot tier, as Parquet.'
parquet\t'The Parquet cold tier, as replicated.'
pgdump\t'A PostgreSQL dump (`pg_dump`).'
postgres\t'A PostgreSQL base backup (`pg_basebackup`).'"
complete -c bkp -n "__fish_bkp_using_subcommand cleanup" -s c -l config -d 'Configuration file' -r -F
complete -c bkp -n "__fish_bkp_using_subcommand cleanup" -l wait -d 'Wait up to DURATION (e.g. 30s, 10m) for another run of this config to finish instead of exiting with code 4' -r
complete -c bkp -n "__fish_bkp_using_subcommand cleanup" -l store -d 'Read from the copy NAME (a [[copies]] entry) instead of the primary [store], as after losing the primary: for list, show, cat, verify, restore and status. `primary` names the [store] itself' -r
complete -c bkp -n "__fish_bkp_using_subcommand cleanup" -s n -l dry-run -d 'Print the plan (keep or delete, with the reasons) and change nothing'
complete -c bkp -n "__fish_bkp_using_subcommand cleanup" -l json -d 'Print results as JSON on stdout (exact byte counts, RFC 3339 times)'
complete -c bkp -n "__fish_bkp_using_subcommand cleanup" -s q -l quiet -d 'Print only warnings and errors on stderr'
complete -c bkp -n "__fish_bkp_using_subcommand cleanup" -s v -l verbose -d 'Print each step on stderr; twice (-vv) also debug output, the S3 client\'s included; three times (-vvv) trace output. Credentials and keys are never printed (the S3 client redacts them even at trace level). BKP_LOG=FILTER gives the same without flags (like RUST_LOG: debug, trace, aws_smithy_runtime=trace, bkp=debug)'
complete -c bkp -n "__fish_bkp_using_subcommand cleanup" -l no-progress -d 'No progress bars, even on a terminal'
complete -c bkp -n "__fish_bkp_using_subcommand cleanup" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c bkp -n "__fish_bkp_using_subcommand verify" -l kind -d 'Only backups of this kind' -r -f -a "tigerbeetle\t'A TigerBeetle ledger: its data file (snapshots) and its log.'
duckdb\t'The DuckDB hot tier, as Parquet.'
parquet\t'The Parquet cold tier, as replicated.'
pgdump\t'A PostgreSQL dump (`pg_dump`).'
postgres\t'A PostgreSQL base backup (`pg_basebackup`).'"
complete -c bkp -n "__fish_bkp_using_subcommand verify" -l since -d 'Only backups started at or after TIME (RFC 3339) or within DURATION (e.g. 7d)' -r
complete -c bkp -n "__fish_bkp_using_subcommand verify" -l report -d 'Also write the JSON report to FILE. The report always goes to the store too; when the store refuses it (read-only credentials), it is kept here, else on stdout under --json, else in a local file a warning names' -r -F
complete -c bkp -n "__fish_bkp_using_subcommand verify" -l junit -d 'Write a JUnit XML test report to FILE, one test case per check (backup, object, ledger audit, drill; what could not be checked as an error), for CI systems to show. Written when checks fail too' -r -F
complete -c bkp -n "__fish_bkp_using_subcommand verify" -l trust -d 'Accept backup ID although its manifest has no seal or it is not encrypted while [encryption] is configured (a backup from before the store was sealed or encrypted). Check where it came from first. Repeatable' -r
complete -c bkp -n "__fish_bkp_using_subcommand verify" -s c -l config -d 'Configuration file' -r -F
complete -c bkp -n "__fish_bkp_using_subcommand verify" -l wait -d 'Wait up to DURATION (e.g. 30s, 10m) for another run of this config to finish instead of exiting with code 4' -r
complete -c bkp -n "__fish_bkp_using_subcommand verify" -l store -d 'Read from the copy NAME (a [[copies]] entry) instead of the primary [store], as after losing the primary: for list, show, cat, verify, restore and status. `primary` names the [store] itself' -r
complete -c bkp -n "__fish_bkp_using_subcommand verify" -l drill -d 'Restore the newest selected backup of each kind into a scratch directory and prove the data loads (a TigerBeetle replica starts and passes its integrity check; DuckDB tables have their recorded row counts; Parquet files parse)'
complete -c bkp -n "__fish_bkp_using_subcommand verify" -l json -d 'Print results as JSON on stdout (exact byte counts, RFC 3339 times)'
complete -c bkp -n "__fish_bkp_using_subcommand verify" -s q -l quiet -d 'Print only warnings and errors on stderr'
complete -c bkp -n "__fish_bkp_using_subcommand verify" -s v -l verbose -d 'Print each step on stderr; twice (-vv) also debug output, the S3 client\'s included; three times (-vvv) trace output. Credentials and keys are never printed (the S3 client redacts them even at trace level). BKP_LOG=FILTER gives the same without flags (like RUST_LOG: debug, trace, aws_smithy_runtime=trace, bkp=debug)'
complete -c bkp -n "__fish_bkp_using_subcommand verify" -l no-progress -d 'No progress bars, even on a terminal'
complete -c bkp -n "__fish_bkp_using_subcommand verify" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c bkp -n "__fish_bkp_using_subcommand check" -s c -l config -d 'Configuration file' -r -F
complete -c bkp -n "__fish_bkp_using_subcommand check" -l wait -d 'Wait up to DURATION (e.g. 30s, 10m) for another run of this config to finish instead of exiting with code 4' -r
complete -c bkp -n "__fish_bkp_using_subcommand check" -l store -d 'Read from the copy NAME (a [[copies]] entry) instead of the primary [store], as after losing the primary: for list, show, cat, verify, restore and status. `primary` names the [store] itself' -r
complete -c bkp -n "__fish_bkp_using_subcommand check" -l json -d 'Print results as JSON on stdout (exact byte counts, RFC 3339 times)'
complete -c bkp -n "__fish_bkp_using_subcommand check" -s q -l quiet -d 'Print only warnings and errors on stderr'
complete -c bkp -n "__fish_bkp_using_subcommand check" -s v -l verbose -d 'Print each step on stderr; twice (-vv) also debug output, the S3 client\'s included; three times (-vvv) trace output. Credentials and keys are never printed (the S3 client redacts them even at trace level). BKP_LOG=FILTER gives the same without flags (like RUST_LOG: debug, trace, aws_smithy_runtime=trace, bkp=debug)'
complete -c bkp -n "__fish_bkp_using_subcommand check" -l no-progress -d 'No progress bars, even on a terminal'
complete -c bkp -n "__fish_bkp_using_subcommand check" -s h -l help -d 'Print help'
complete -c bkp -n "__fish_bkp_using_subcommand init" -s c -l config -d 'Configuration file' -r -F
complete -c bkp -n "__fish_bkp_using_subcommand init" -l wait -d 'Wait up to DURATION (e.g. 30s, 10m) for another run of this config to finish instead of exiting with code 4' -r
complete -c bkp -n "__fish_bkp_using_subcommand init" -l store -d 'Read from the copy NAME (a [[copies]] entry) instead of the primary [store], as after losing the primary: for list, show, cat, verify, restore and status. `primary` names the [store] itself' -r
complete -c bkp -n "__fish_bkp_using_subcommand init" -l json -d 'Print results as JSON on stdout (exact byte counts, RFC 3339 times)'
complete -c bkp -n "__fish_bkp_using_subcommand init" -s q -l quiet -d 'Print only warnings and errors on stderr'
complete -c bkp -n "__fish_bkp_using_subcommand init" -s v -l verbose -d 'Print each step on stderr; twice (-vv) also debug output, the S3 client\'s included; three times (-vvv) trace output. Credentials and keys are never printed (the S3 client redacts them even at trace level). BKP_LOG=FILTER gives the same without flags (like RUST_LOG: debug, trace, aws_smithy_runtime=trace, bkp=debug)'
complete -c bkp -n "__fish_bkp_using_subcommand init" -l no-progress -d 'No progress bars, even on a terminal'
complete -c bkp -n "__fish_bkp_using_subcommand init" -s h -l help -d 'Print help'
complete -c bkp -n "__fish_bkp_using_subcommand trust-legacy" -s c -l config -d 'Configuration file' -r -F
complete -c bkp -n "__fish_bkp_using_subcommand trust-legacy" -l wait -d 'Wait up to DURATION (e.g. 30s, 10m) for another run of this config to finish instead of exiting with code 4' -r
complete -c bkp -n "__fish_bkp_using_subcommand trust-legacy" -l store -d 'Read from the copy NAME (a [[copies]] entry) instead of the primary [store], as after losing the primary: for list, show, cat, verify, restore and status. `primary` names the [store] itself' -r
complete -c bkp -n "__fish_bkp_using_subcommand trust-legacy" -l dry-run -d 'Show what would be recorded; write nothing'
complete -c bkp -n "__fish_bkp_using_subcommand trust-legacy" -l json -d 'Print results as JSON on stdout (exact byte counts, RFC 3339 times)'
complete -c bkp -n "__fish_bkp_using_subcommand trust-legacy" -s q -l quiet -d 'Print only warnings and errors on stderr'
complete -c bkp -n "__fish_bkp_using_subcommand trust-legacy" -s v -l verbose -d 'Print each step on stderr; twice (-vv) also debug output, the S3 client\'s included; three times (-vvv) trace output. Credentials and keys are never printed (the S3 client redacts them even at trace level). BKP_LOG=FILTER gives the same without flags (like RUST_LOG: debug, trace, aws_smithy_runtime=trace, bkp=debug)'
complete -c bkp -n "__fish_bkp_using_subcommand trust-legacy" -l no-progress -d 'No progress bars, even on a terminal'
complete -c bkp -n "__fish_bkp_using_subcommand trust-legacy" -s h -l help -d 'Print help'
complete -c bkp -n "__fish_bkp_using_subcommand key; and not __fish_seen_subcommand_from generate help" -s c -l config -d 'Configuration file' -r -F
complete -c bkp -n "__fish_bkp_using_subcommand key; and not __fish_seen_subcommand_from generate help" -l wait -d 'Wait up to DURATION (e.g. 30s, 10m) for another run of this config to finish instead of exiting with code 4' -r
complete -c bkp -n "__fish_bkp_using_subcommand key; and not __fish_seen_subcommand_from generate help" -l store -d 'Read from the copy NAME (a [[copies]] entry) instead of the primary [store], as after losing the primary: for list, show, cat, verify, restore and status. `primary` names the [store] itself' -r
complete -c bkp -n "__fish_bkp_using_subcommand key; and not __fish_seen_subcommand_from generate help" -l json -d 'Print results as JSON on stdout (exact byte counts, RFC 3339 times)'
complete -c bkp -n "__fish_bkp_using_subcommand key; and not __fish_seen_subcommand_from generate help" -s q -l quiet -d 'Print only warnings and errors on stderr'
complete -c bkp -n "__fish_bkp_using_subcommand key; and not __fish_seen_subcommand_from generate help" -s v -l verbose -d 'Print each step on stderr; twice (-vv) also debug output, the S3 client\'s included; three times (-vvv) trace output. Credentials and keys are never printed (the S3 client redacts them even at trace level). BKP_LOG=FILTER gives the same without flags (like RUST_LOG: debug, trace, aws_smithy_runtime=trace, bkp=debug)'
complete -c bkp -n "__fish_bkp_using_subcommand key; and not __fish_seen_subcommand_from generate help" -l no-progress -d 'No progress bars, even on a terminal'
complete -c bkp -n "__fish_bkp_using_subcommand key; and not __fish_seen_subcommand_from generate help" -s h -l help -d 'Print help'
complete -c bkp -n "__fish_bkp_using_subcommand key; and not __fish_seen_subcommand_from generate help" -f -a "generate" -d 'Write a new key to a new file with mode 0400 and print its id. Never replaces an existing file. `raw` (default): 32 random bytes, for `[encryption] key_file`. `x25519`: an identity for `identity_files` where restores run; prints the `recipient` for write-only hosts. `ed25519`: a host\'s `signing_key_file`; prints the `[[encryption.signer]]` table to add where restores run (this host\'s name filled in; list its kinds)'
complete -c bkp -n "__fish_bkp_using_subcommand key; and not __fish_seen_subcommand_from generate help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c bkp -n "__fish_bkp_using_subcommand key; and __fish_seen_subcommand_from generate" -l type -d 'The kind of key' -r -f -a "raw\t''
x25519\t''
ed25519\t''"
complete -c bkp -n "__fish_bkp_using_subcommand key; and __fish_seen_subcommand_from generate" -s c -l config -d 'Configuration file' -r -F
complete -c bkp -n "__fish_bkp_using_subcommand key; and __fish_seen_subcommand_from generate" -l wait -d 'Wait up to DURATION (e.g. 30s, 10m) for another run of this config to finish instead of exiting with code 4' -r
complete -c bkp -n "__fish_bkp_using_subcommand key; and __fish_seen_subcommand_from generate" -l store -d 'Read from the copy NAME (a [[copies]] entry) instead of the primary [store], as after losing the primary: for list, show, cat, verify, restore and status. `primary` names the [store] itself' -r
complete -c bkp -n "__fish_bkp_using_subcommand key; and __fish_seen_subcommand_from generate" -l json -d 'Print results as JSON on stdout (exact byte counts, RFC 3339 times)'
complete -c bkp -n "__fish_bkp_using_subcommand key; and __fish_seen_subcommand_from generate" -s q -l quiet -d 'Print only warnings and errors on stderr'
complete -c bkp -n "__fish_bkp_using_subcommand key; and __fish_seen_subcommand_from generate" -s v -l verbose -d 'Print each step on stderr; twice (-vv) also debug output, the S3 client\'s included; three times (-vvv) trace output. Credentials and keys are never printed (the S3 client redacts them even at trace level). BKP_LOG=FILTER gives the same without flags (like RUST_LOG: debug, trace, aws_smithy_runtime=trace, bkp=debug)'
complete -c bkp -n "__fish_bkp_using_subcommand key; and __fish_seen_subcommand_from generate" -l no-progress -d 'No progress bars, even on a terminal'
complete -c bkp -n "__fish_bkp_using_subcommand key; and __fish_seen_subcommand_from generate" -s h -l help -d 'Print help'
complete -c bkp -n "__fish_bkp_using_subcommand key; and __fish_seen_subcommand_from help" -f -a "generate" -d 'Write a new key to a new file with mode 0400 and print its id. Never replaces an existing file. `raw` (default): 32 random bytes, for `[encryption] key_file`. `x25519`: an identity for `identity_files` where restores run; prints the `recipient` for write-only hosts. `ed25519`: a host\'s `signing_key_file`; prints the `[[encryption.signer]]` table to add where restores run (this host\'s name filled in; list its kinds)'
complete -c bkp -n "__fish_bkp_using_subcommand key; and __fish_seen_subcommand_from help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c bkp -n "__fish_bkp_using_subcommand wal; and not __fish_seen_subcommand_from push fetch help" -s c -l config -d 'Configuration file' -r -F
complete -c bkp -n "__fish_bkp_using_subcommand wal; and not __fish_seen_subcommand_from push fetch help" -l wait -d 'Wait up to DURATION (e.g. 30s, 10m) for another run of this config to finish instead of exiting with code 4' -r
complete -c bkp -n "__fish_bkp_using_subcommand wal; and not __fish_seen_subcommand_from push fetch help" -l store -d 'Read from the copy NAME (a [[copies]] entry) instead of the primary [store], as after losing the primary: for list, show, cat, verify, restore and status. `primary` names the [store] itself' -r
complete -c bkp -n "__fish_bkp_using_subcommand wal; and not __fish_seen_subcommand_from push fetch help" -l json -d 'Print results as JSON on stdout (exact byte counts, RFC 3339 times)'
complete -c bkp -n "__fish_bkp_using_subcommand wal; and not __fish_seen_subcommand_from push fetch help" -s q -l quiet -d 'Print only warnings and errors on stderr'
complete -c bkp -n "__fish_bkp_using_subcommand wal; and not __fish_seen_subcommand_from push fetch help" -s v -l verbose -d 'Print each step on stderr; twice (-vv) also debug output, the S3 client\'s included; three times (-vvv) trace output. Credentials and keys are never printed (the S3 client redacts them even at trace level). BKP_LOG=FILTER gives the same without flags (like RUST_LOG: debug, trace, aws_smithy_runtime=trace, bkp=debug)'
complete -c bkp -n "__fish_bkp_using_subcommand wal; and not __fish_seen_subcommand_from push fetch help" -l no-progress -d 'No progress bars, even on a terminal'
complete -c bkp -n "__fish_bkp_using_subcommand wal; and not __fish_seen_subcommand_from push fetch help" -s h -l help -d 'Print help'
complete -c bkp -n "__fish_bkp_using_subcommand wal; and not __fish_seen_subcommand_from push fetch help" -f -a "push" -d 'Archive one WAL file: archive_command = \'bkp --config /etc/bkp/bkp.toml wal push %p\'. Create-only: a file archived already with the same content is a success, with other content a failure (exit 5). Writes no manifest and no ledger record'
complete -c bkp -n "__fish_bkp_using_subcommand wal; and not __fish_seen_subcommand_from push fetch help" -f -a "fetch" -d 'Fetch one WAL file: restore_command = \'bkp --config /etc/bkp/bkp.toml wal fetch %f %p\'. Exit 9 when the archive has no such file; any other failure exits above 125 (200 + the code), so that PostgreSQL stops recovery instead of ending it early (a standby retries an unreachable store instead: exit 6)'
complete -c bkp -n "__fish_bkp_using_subcommand wal; and not __fish_seen_subcommand_from push fetch help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c bkp -n "__fish_bkp_using_subcommand wal; and __fish_seen_subcommand_from push" -l pgdata -d 'The server\'s data directory (default: the current directory, where PostgreSQL runs the command); its system identifier names the archive' -r -F
complete -c bkp -n "__fish_bkp_using_subcommand wal; and __fish_seen_subcommand_from push" -s c -l config -d 'Configuration file' -r -F
complete -c bkp -n "__fish_bkp_using_subcommand wal; and __fish_seen_subcommand_from push" -l wait -d 'Wait up to DURATION (e.g. 30s, 10m) for another run of this config to finish instead of exiting with code 4' -r
complete -c bkp -n "__fish_bkp_using_subcommand wal; and __fish_seen_subcommand_from push" -l store -d 'Read from the copy NAME (a [[copies]] entry) instead of the primary [store], as after losing the primary: for list, show, cat, verify, restore and status. `primary` names the [store] itself' -r
complete -c bkp -n "__fish_bkp_using_subcommand wal; and __fish_seen_subcommand_from push" -l json -d 'Print results as JSON on stdout (exact byte counts, RFC 3339 times)'
complete -c bkp -n "__fish_bkp_using_subcommand wal; and __fish_seen_subcommand_from push" -s q -l quiet -d 'Print only warnings and errors on stderr'
complete -c bkp -n "__fish_bkp_using_subcommand wal; and __fish_seen_subcommand_from push" -s v -l verbose -d 'Print each step on stderr; twice (-vv) also debug output, the S3 client\'s included; three times (-vvv) trace output. Credentials and keys are never printed (the S3 client redacts them even at trace level). BKP_LOG=FILTER gives the same without flags (like RUST_LOG: debug, trace, aws_smithy_runtime=trace, bkp=debug)'
complete -c bkp -n "__fish_bkp_using_subcommand wal; and __fish_seen_subcommand_from push" -l no-progress -d 'No progress bars, even on a terminal'
complete -c bkp -n "__fish_bkp_using_subcommand wal; and __fish_seen_subcommand_from push" -s h -l help -d 'Print help'
complete -c bkp -n "__fish_bkp_using_subcommand wal; and __fish_seen_subcommand_from fetch" -l pgdata -d 'The server\'s data directory (default: the current directory)' -r -F
complete -c bkp -n "__fish_bkp_using_subcommand wal; and __fish_seen_subcommand_from fetch" -l system -d 'The system identifier whose archive to read (default: the data directory\'s)' -r
complete -c bkp -n "__fish_bkp_using_subcommand wal; and __fish_seen_subcommand_from fetch" -s c -l config -d 'Configuration file' -r -F
complete -c bkp -n "__fish_bkp_using_subcommand wal; and __fish_seen_subcommand_from fetch" -l wait -d 'Wait up to DURATION (e.g. 30s, 10m) for another run of this config to finish instead of exiting with code 4' -r
complete -c bkp -n "__fish_bkp_using_subcommand wal; and __fish_seen_subcommand_from fetch" -l store -d 'Read from the copy NAME (a [[copies]] entry) instead of the primary [store], as after losing the primary: for list, show, cat, verify, restore and status. `primary` names the [store] itself' -r
complete -c bkp -n "__fish_bkp_using_subcommand wal; and __fish_seen_subcommand_from fetch" -l json -d 'Print results as JSON on stdout (exact byte counts, RFC 3339 times)'
complete -c bkp -n "__fish_bkp_using_subcommand wal; and __fish_seen_subcommand_from fetch" -s q -l quiet -d 'Print only warnings and errors on stderr'
complete -c bkp -n "__fish_bkp_using_subcommand wal; and __fish_seen_subcommand_from fetch" -s v -l verbose -d 'Print each step on stderr; twice (-vv) also debug output, the S3 client\'s included; three times (-vvv) trace output. Credentials and keys are never printed (the S3 client redacts them even at trace level). BKP_LOG=FILTER gives the same without flags (like RUST_LOG: debug, trace, aws_smithy_runtime=trace, bkp=debug)'
complete -c bkp -n "__fish_bkp_using_subcommand wal; and __fish_seen_subcommand_from fetch" -l no-progress -d 'No progress bars, even on a terminal'
complete -c bkp -n "__fish_bkp_using_subcommand wal; and __fish_seen_subcommand_from fetch" -s h -l help -d 'Print help'
complete -c bkp -n "__fish_bkp_using_subcommand wal; and __fish_seen_subcommand_from help" -f -a "push" -d 'Archive one WAL file: archive_command = \'bkp --config /etc/bkp/bkp.toml wal push %p\'. Create-only: a file archived already with the same content is a success, with other content a failure (exit 5). Writes no manifest and no ledger record'
complete -c bkp -n "__fish_bkp_using_subcommand wal; and __fish_seen_subcommand_from help" -f -a "fetch" -d 'Fetch one WAL file: restore_command = \'bkp --config /etc/bkp/bkp.toml wal fetch %f %p\'. Exit 9 when the archive has no such file; any other failure exits above 125 (200 + the code), so that PostgreSQL stops recovery instead of ending it early (a standby retries an unreachable store instead: exit 6)'
complete -c bkp -n "__fish_bkp_using_subcommand wal; and __fish_seen_subcommand_from help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c bkp -n "__fish_bkp_using_subcommand copy" -l to -d 'Only the copy of this name (default: every copy)' -r
complete -c bkp -n "__fish_bkp_using_subcommand copy" -l trust -d 'Accept backup ID although its manifest has no seal or it is not encrypted while [encryption] is configured (a backup from before the store was sealed or encrypted). Check where it came from first. Repeatable' -r
complete -c bkp -n "__fish_bkp_using_subcommand copy" -s c -l config -d 'Configuration file' -r -F
complete -c bkp -n "__fish_bkp_using_subcommand copy" -l wait -d 'Wait up to DURATION (e.g. 30s, 10m) for another run of this config to finish instead of exiting with code 4' -r
complete -c bkp -n "__fish_bkp_using_subcommand copy" -l store -d 'Read from the copy NAME (a [[copies]] entry) instead of the primary [store], as after losing the primary: for list, show, cat, verify, restore and status. `primary` names the [store] itself' -r
complete -c bkp -n "__fish_bkp_using_subcommand copy" -s n -l dry-run -d 'Say what each copy lacks (what a run would copy); copy nothing'
complete -c bkp -n "__fish_bkp_using_subcommand copy" -l json -d 'Print results as JSON on stdout (exact byte counts, RFC 3339 times)'
complete -c bkp -n "__fish_bkp_using_subcommand copy" -s q -l quiet -d 'Print only warnings and errors on stderr'
complete -c bkp -n "__fish_bkp_using_subcommand copy" -s v -l verbose -d 'Print each step on stderr; twice (-vv) also debug output, the S3 client\'s included; three times (-vvv) trace output. Credentials and keys are never printed (the S3 client redacts them even at trace level). BKP_LOG=FILTER gives the same without flags (like RUST_LOG: debug, trace, aws_smithy_runtime=trace, bkp=debug)'
complete -c bkp -n "__fish_bkp_using_subcommand copy" -l no-progress -d 'No progress bars, even on a terminal'
complete -c bkp -n "__fish_bkp_using_subcommand copy" -s h -l help -d 'Print help'
complete -c bkp -n "__fish_bkp_using_subcommand status" -s c -l config -d 'Configuration file' -r -F
complete -c bkp -n "__fish_bkp_using_subcommand status" -l wait -d 'Wait up to DURATION (e.g. 30s, 10m) for another run of this config to finish instead of exiting with code 4' -r
complete -c bkp -n "__fish_bkp_using_subcommand status" -l store -d 'Read from the copy NAME (a [[copies]] entry) instead of the primary [store], as after losing the primary: for list, show, cat, verify, restore and status. `primary` names the [store] itself' -r
complete -c bkp -n "__fish_bkp_using_subcommand status" -l json -d 'Print results as JSON on stdout (exact byte counts, RFC 3339 times)'
complete -c bkp -n "__fish_bkp_using_subcommand status" -s q -l quiet -d 'Print only warnings and errors on stderr'
complete -c bkp -n "__fish_bkp_using_subcommand status" -s v -l verbose -d 'Print each step on stderr; twice (-vv) also debug output, the S3 client\'s included; three times (-vvv) trace output. Credentials and keys are never printed (the S3 client redacts them even at trace level). BKP_LOG=FILTER gives the same without flags (like RUST_LOG: debug, trace, aws_smithy_runtime=trace, bkp=debug)'
complete -c bkp -n "__fish_bkp_using_subcommand status" -l no-progress -d 'No progress bars, even on a terminal'
complete -c bkp -n "__fish_bkp_using_subcommand status" -s h -l help -d 'Print help'
complete -c bkp -n "__fish_bkp_using_subcommand notify" -l failed-unit -d 'Report that this systemd unit failed (reads systemd\'s MONITOR_SERVICE_RESULT, MONITOR_EXIT_CODE, MONITOR_EXIT_STATUS and MONITOR_INVOCATION_ID). A failure the run delivered itself (same invocation) is not sent twice' -r
complete -c bkp -n "__fish_bkp_using_subcommand notify" -s c -l config -d 'Configuration file' -r -F
complete -c bkp -n "__fish_bkp_using_subcommand notify" -l wait -d 'Wait up to DURATION (e.g. 30s, 10m) for another run of this config to finish instead of exiting with code 4' -r
complete -c bkp -n "__fish_bkp_using_subcommand notify" -l store -d 'Read from the copy NAME (a [[copies]] entry) instead of the primary [store], as after losing the primary: for list, show, cat, verify, restore and status. `primary` names the [store] itself' -r
complete -c bkp -n "__fish_bkp_using_subcommand notify" -l test -d 'Send a test event and report whether each channel took it'
complete -c bkp -n "__fish_bkp_using_subcommand notify" -l json -d 'Print results as JSON on stdout (exact byte counts, RFC 3339 times)'
complete -c bkp -n "__fish_bkp_using_subcommand notify" -s q -l quiet -d 'Print only warnings and errors on stderr'
complete -c bkp -n "__fish_bkp_using_subcommand notify" -s v -l verbose -d 'Print each step on stderr; twice (-vv) also debug output, the S3 client\'s included; three times (-vvv) trace output. Credentials and keys are never printed (the S3 client redacts them even at trace level). BKP_LOG=FILTER gives the same without flags (like RUST_LOG: debug, trace, aws_smithy_runtime=trace, bkp=debug)'
complete -c bkp -n "__fish_bkp_using_subcommand notify" -l no-progress -d 'No progress bars, even on a terminal'
complete -c bkp -n "__fish_bkp_using_subcommand notify" -s h -l help -d 'Print help'
complete -c bkp -n "__fish_bkp_using_subcommand help; and not __fish_seen_subcommand_from snapshot logs export list show restore cat replicate cleanup verify check init trust-legacy key wal copy status notify help" -f -a "snapshot" -d 'Back up the TigerBeetle data file: consistent copy, tar, compress, encrypt, checksum, upload, manifest, ledger record. With --kind postgres: a base backup of the PostgreSQL server (pg_basebackup, tar, with the WAL it needs), streamed through the same chain'
complete -c bkp -n "__fish_bkp_using_subcommand help; and not __fish_seen_subcommand_from snapshot logs export list show restore cat replicate cleanup verify check init trust-legacy key wal copy status notify help" -f -a "logs" -d 'Capture the TigerBeetle accounts and transfers created since the previous log segment: segment, compress, encrypt, checksum, upload, manifest, ledger'
complete -c bkp -n "__fish_bkp_using_subcommand help; and not __fish_seen_subcommand_from snapshot logs export list show restore cat replicate cleanup verify check init trust-legacy key wal copy status notify help" -f -a "export" -d 'Export the DuckDB hot tier to Parquet: every table with --full, else the rows changed since the previous export (per-table watermark column), or since the last full export with --differential; encrypt, checksum, upload, manifest, ledger. With --kind pgdump: dump the PostgreSQL database with pg_dump (custom format, streamed) through the same chain'
complete -c bkp -n "__fish_bkp_using_subcommand help; and not __fish_seen_subcommand_from snapshot logs export list show restore cat replicate cleanup verify check init trust-legacy key wal copy status notify help" -f -a "list" -d 'List the backups in the store'
complete -c bkp -n "__fish_bkp_using_subcommand help; and not __fish_seen_subcommand_from snapshot logs export list show restore cat replicate cleanup verify check init trust-legacy key wal copy status notify help" -f -a "show" -d 'Show one backup: its manifest (times, host, retention, key, every object and file with its size and SHA-256), after checking its seal'
complete -c bkp -n "__fish_bkp_using_subcommand help; and not __fish_seen_subcommand_from snapshot logs export list show restore cat replicate cleanup verify check init trust-legacy key wal copy status notify help" -f -a "restore" -d 'Restore a backup into a new directory'
complete -c bkp -n "__fish_bkp_using_subcommand help; and not __fish_seen_subcommand_from snapshot logs export list show restore cat replicate cleanup verify check init trust-legacy key wal copy status notify help" -f -a "cat" -d 'Break glass: write one backed-up file (`bkp cat ID FILE`) or one stored object (`bkp cat OBJECT`), verified and decrypted, to standard output'
complete -c bkp -n "__fish_bkp_using_subcommand help; and not __fish_seen_subcommand_from snapshot logs export list show restore cat replicate cleanup verify check init trust-legacy key wal copy status notify help" -f -a "replicate" -d 'Copy the Parquet cold tier\'s new and changed files to the store (each checked to be Parquet first) and record the whole set in a manifest. Skipped files make the exit code 10'
complete -c bkp -n "__fish_bkp_using_subcommand help; and not __fish_seen_subcommand_from snapshot logs export list show restore cat replicate cleanup verify check init trust-legacy key wal copy status notify help" -f -a "cleanup" -d 'Apply the retention policy: delete expired backups (never one a kept backup\'s chain needs, never the newest of a kind), objects of crashed runs and local leftovers. Each deletion records a reverse code-12 transfer'
complete -c bkp -n "__fish_bkp_using_subcommand help; and not __fish_seen_subcommand_from snapshot logs export list show restore cat replicate cleanup verify check init trust-legacy key wal copy status notify help" -f -a "verify" -d 'Check backups: every object present with its size and SHA-256, every encrypted chunk authentic, chains complete, and the ledger in agreement with the store; --drill also restores each and proves the data loads'
complete -c bkp -n "__fish_bkp_using_subcommand help; and not __fish_seen_subcommand_from snapshot logs export list show restore cat replicate cleanup verify check init trust-legacy key wal copy status notify help" -f -a "check" -d 'Check everything a backup run needs, one line per check: the config, every key, the work directory, the store (PUT, HEAD, LIST, GET, DELETE, and that a create-only write is never allowed to replace an object), the ledger, the TigerBeetle binary and data file, the DuckDB database and the replication source. Exits with the code of the first failure'
complete -c bkp -n "__fish_bkp_using_subcommand help; and not __fish_seen_subcommand_from snapshot logs export list show restore cat replicate cleanup verify check init trust-legacy key wal copy status notify help" -f -a "init" -d 'Mark the store (or prefix) as this installation\'s: writes `bkp-store.json`, sealed with the key, naming the key id and formats. Runs then refuse a store whose marker another installation\'s key sealed. Optional; never replaces a marker, and does nothing on a store this installation marked'
complete -c bkp -n "__fish_bkp_using_subcommand help; and not __fish_seen_subcommand_from snapshot logs export list show restore cat replicate cleanup verify check init trust-legacy key wal copy status notify help" -f -a "trust-legacy" -d 'Record what in the store is this installation\'s although the current key did not seal it: manifests from before the store was sealed (no seal; with [encryption] unsealed_before, only backups started before it) and manifests and tombstones sealed by keys rotated out since. Each is recorded by its key and the SHA-256 of its exact bytes in one new sealed, create-only list (legacy/ID.json); readers then use it, and refuse an edited copy, while nothing else unsealed or sealed by an old key is used. Run it once when upgrading a store from before sealing, and after each key rotation; check what it shows first (--dry-run)'
complete -c bkp -n "__fish_bkp_using_subcommand help; and not __fish_seen_subcommand_from snapshot logs export list show restore cat replicate cleanup verify check init trust-legacy key wal copy status notify help" -f -a "key" -d 'Manage master keys'
complete -c bkp -n "__fish_bkp_using_subcommand help; and not __fish_seen_subcommand_from snapshot logs export list show restore cat replicate cleanup verify check init trust-legacy key wal copy status notify help" -f -a "wal" -d 'PostgreSQL\'s continuous WAL archive: `wal push` is the server\'s `archive_command`, `wal fetch` its `restore_command`. One file per run, compressed, encrypted, and named so that the store cannot swap or alter it unnoticed'
complete -c bkp -n "__fish_bkp_using_subcommand help; and not __fish_seen_subcommand_from snapshot logs export list show restore cat replicate cleanup verify check init trust-legacy key wal copy status notify help" -f -a "copy" -d 'Bring each copy ([[copies]], or the one --to names) up to date with the primary store: copy what it lacks (the store marker, each backup\'s objects and then its sealed manifest, heads, the WAL archive), create-only, each object\'s size and SHA-256 checked against its manifest on the way; nothing is decrypted, so a write-only host can run it. A backup whose manifest or objects do not verify on the primary is not copied and is named (exit 5)'
complete -c bkp -n "__fish_bkp_using_subcommand help; and not __fish_seen_subcommand_from snapshot logs export list show restore cat replicate cleanup verify check init trust-legacy key wal copy status notify help" -f -a "status" -d 'Show, per schedule, the newest good backup, its age, the next due time and whether its RPO is breached; exit 11 if any watched schedule is breached or never ran. Reads only the manifests it needs'
complete -c bkp -n "__fish_bkp_using_subcommand help; and not __fish_seen_subcommand_from snapshot logs export list show restore cat replicate cleanup verify check init trust-legacy key wal copy status notify help" -f -a "notify" -d 'Send a notification through `[notify]` (webhook and command) by hand: `--test` proves delivery; `--failed-unit UNIT` reports a systemd unit that failed in a way bkp could not report itself (killed at its runtime cap, crashed, never started), as `bkp-failure@.service` does from `OnFailure=`. Exit 6 when a delivery fails'
complete -c bkp -n "__fish_bkp_using_subcommand help; and not __fish_seen_subcommand_from snapshot logs export list show restore cat replicate cleanup verify check init trust-legacy key wal copy status notify help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c bkp -n "__fish_bkp_using_subcommand help; and __fish_seen_subcommand_from key" -f -a "generate" -d 'Write a new key to a new file with mode 0400 and print its id. Never replaces an existing file. `raw` (default): 32 random bytes, for `[encryption] key_file`. `x25519`: an identity for `identity_files` where restores run; prints the `recipient` for write-only hosts. `ed25519`: a host\'s `signing_key_file`; prints the `[[encryption.signer]]` table to add where restores run (this host\'s name filled in; list its kinds)'
complete -c bkp -n "__fish_bkp_using_subcommand help; and __fish_seen_subcommand_from wal" -f -a "push" -d 'Archive one WAL file: archive_command = \'bkp --config /etc/bkp/bkp.toml wal push %p\'. Create-only: a file archived already with the same content is a success, with other content a failure (exit 5). Writes no manifest and no ledger record'
complete -c bkp -n "__fish_bkp_using_subcommand help; and __fish_seen_subcommand_from wal" -f -a "fetch" -d 'Fetch one WAL file: restore_command = \'bkp --config /etc/bkp/bkp.toml wal fetch %f %p\'. Exit 9 when the archive has no such file; any other failure exits above 125 (200 + the code), so that PostgreSQL stops recovery instead of ending it early (a standby retries an unreachable store instead: exit 6)'
