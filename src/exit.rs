//! Exit codes and the typed errors that select them.
//!
//! Operators and alerting rules branch on the exit code, so every code has one
//! meaning and lives here, in one place. Code that must pick an exit code raises a
//! [`Coded`] error (usually through [`coded`]); everything else is a plain
//! `anyhow` error with context and exits with [`FAILURE`].

use std::fmt;

/// The run did what was asked.
pub const SUCCESS: i32 = 0;
/// Unexpected failure: read the message, it names what failed.
pub const FAILURE: i32 = 1;
/// Command-line usage error (unknown flag, missing argument).
pub const USAGE: i32 = 2;
/// The configuration file is missing, unreadable or invalid.
pub const CONFIG: i32 = 3;
/// Another run of the same configuration holds the lock.
pub const LOCKED: i32 = 4;
/// Data failed verification: checksum mismatch, failed authentication,
/// truncated or corrupt object, wrong key. Nothing was restored.
pub const INTEGRITY: i32 = 5;
/// A service (object store, ledger cluster) could not be reached or answered
/// with a transient error: retrying later may succeed.
pub const TRANSIENT: i32 = 6;
/// The source cannot be read safely as configured (for example a data file that
/// a running replica holds open, with no safe snapshot mode configured); from
/// `bkp status`, a replica a killed snapshot left stopped and bkp could not start.
pub const UNSAFE_SOURCE: i32 = 7;
/// A restore target exists and is not empty, and `--force` was not given.
pub const TARGET_EXISTS: i32 = 8;
/// The named backup (or any backup of the kind) does not exist.
pub const NOT_FOUND: i32 = 9;
/// The run finished, but some items were skipped (for example a corrupt source
/// file): everything else was backed up; the report names what was skipped.
pub const PARTIAL: i32 = 10;
/// A kind's newest good backup is older than its recovery point objective, or
/// there is none: back up now and find out why the schedule did not.
pub const STALE: i32 = 11;
/// The source holds something a restore could not recreate exactly (a column
/// type this build cannot read back, a view over files outside the database):
/// everything else was stored, and the message names what was left out.
pub const UNSUPPORTED: i32 = 12;
/// The store no longer shows backups bkp recorded as stored (their manifests
/// were deleted or hidden): `restore latest` refuses to take an older backup
/// for the newest, and `status` and `verify` alarm. Name the backup or pass
/// `--at` to restore an older one on purpose.
pub const ROLLBACK: i32 = 13;
/// An object the run must read is in an archive storage class (S3 Glacier
/// Flexible Retrieval, Deep Archive) and not restored: ask for its restore
/// (`bkp restore … --request-restore`, or the provider's console), and run
/// again once it is readable.
pub const ARCHIVED: i32 = 14;

/// The stable name of an exit code, as JSON errors carry it.
pub fn name(code: i32) -> &'static str {
    match code {
        SUCCESS => "success",
        USAGE => "usage",
        CONFIG => "config",
        LOCKED => "locked",
        INTEGRITY => "integrity",
        TRANSIENT => "transient",
        UNSAFE_SOURCE => "unsafe-source",
        TARGET_EXISTS => "target-exists",
        NOT_FOUND => "not-found",
        PARTIAL => "partial",
        STALE => "stale",
        UNSUPPORTED => "unsupported",
        ROLLBACK => "rollback",
        ARCHIVED => "archived",
        129 | 130 | 143 => "interrupted",
        _ => "failure",
    }
}

/// The run was interrupted (SIGINT); SIGTERM gives 143 and SIGHUP 129, see
/// `crate::interrupt`.
pub const INTERRUPTED: i32 = 130;

/// The class of a failure that the caller (ultimately `main`) must branch on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Code {
    Config,
    Locked,
    Integrity,
    Transient,
    UnsafeSource,
    TargetExists,
    NotFound,
    Partial,
    Stale,
    Unsupported,
    Rollback,
    Archived,
    /// SIGINT, SIGTERM or SIGHUP ended the run (exit `128 + signal`).
    Interrupted,
}

impl Code {
    /// The process exit code for this class.
    pub fn exit_code(self) -> i32 {
        match self {
            Code::Config => CONFIG,
            Code::Locked => LOCKED,
            Code::Integrity => INTEGRITY,
            Code::Transient => TRANSIENT,
            Code::UnsafeSource => UNSAFE_SOURCE,
            Code::TargetExists => TARGET_EXISTS,
            Code::NotFound => NOT_FOUND,
            Code::Partial => PARTIAL,
            Code::Stale => STALE,
            Code::Unsupported => UNSUPPORTED,
            Code::Rollback => ROLLBACK,
            Code::Archived => ARCHIVED,
            // 128 + SIGINT; `main` turns it into 128 + the signal received.
            Code::Interrupted => INTERRUPTED,
        }
    }
}

/// An error that carries its exit-code class. Its message names what failed and
/// what to do next.
#[derive(Debug)]
pub struct Coded {
    pub code: Code,
    pub message: String,
}

impl fmt::Display for Coded {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Coded {}

/// Builds an `anyhow::Error` carrying `code`.
pub fn coded(code: Code, message: impl Into<String>) -> anyhow::Error {
    anyhow::Error::new(Coded {
        code,
        message: message.into(),
    })
}

/// Finds the class of `err`: the first [`Coded`] in its chain, or an
/// [`std::io::Error`] whose inner error is [`Coded`] (stages report through
/// `io::Error`), or `None` for an unclassified failure.
pub fn classify(err: &anyhow::Error) -> Option<Code> {
    for cause in err.chain() {
        if let Some(c) = cause.downcast_ref::<Coded>() {
            return Some(c.code);
        }
        if let Some(io) = cause.downcast_ref::<std::io::Error>() {
            if let Some(c) = io.get_ref().and_then(|e| e.downcast_ref::<Coded>()) {
                return Some(c.code);
            }
        }
    }
    None
}

/// An error of `e`'s class (unclassified: exit 1) that says `message`.
pub fn like(e: &anyhow::Error, message: String) -> anyhow::Error {
    of_class(classify(e), message)
}

/// An error of class `code` (`None`: unclassified, exit 1) that says `message`.
fn of_class(code: Option<Code>, message: String) -> anyhow::Error {
    match code {
        Some(code) => coded(code, message),
        None => anyhow::anyhow!(message),
    }
}

/// Carries `err` through an `io::Error` (a stage's `Write` or `Read`) without
/// losing its class: the result still classifies like `err`.
pub fn to_io(err: anyhow::Error) -> std::io::Error {
    match classify(&err) {
        Some(code) => std::io::Error::other(Coded {
            code,
            message: format!("{err:#}"),
        }),
        None => std::io::Error::other(format!("{err:#}")),
    }
}

/// The most specific class among `codes`: the one an operator must act on
/// first. Damage outranks configuration, which outranks what a rerun may fix;
/// `None` only when none is classified.
pub fn most_specific(codes: impl IntoIterator<Item = Option<Code>>) -> Option<Code> {
    const ORDER: [Code; 13] = [
        Code::Interrupted,
        Code::Rollback,
        Code::Integrity,
        Code::UnsafeSource,
        Code::Unsupported,
        Code::Config,
        Code::Locked,
        Code::TargetExists,
        Code::NotFound,
        Code::Archived,
        Code::Partial,
        Code::Stale,
        Code::Transient,
    ];
    codes
        .into_iter()
        .flatten()
        .min_by_key(|c| ORDER.iter().position(|o| o == c))
}

/// Several problems of one run as one error: `what` says what still happened
/// (e.g. "snapshot X is stored, but"), each problem follows, and the error
/// carries the [`most_specific`] class among them.
pub fn combine(what: &str, problems: Vec<anyhow::Error>) -> anyhow::Error {
    let code = most_specific(problems.iter().map(classify));
    let text: Vec<String> = problems.iter().map(|e| format!("{e:#}")).collect();
    of_class(code, format!("{what} {}", text.join("; and ")))
}

/// Whether an error met while checking stored data means the data is damaged
/// (a finding to report, exit [`INTEGRITY`]), rather than that the check could
/// not look: a store or ledger that did not answer, a configuration mistake, a
/// lock, an interruption. Those stop the check with their own code, so that
/// nobody is paged for damage that is not there.
pub fn is_damage(err: &anyhow::Error) -> bool {
    !matches!(
        classify(err),
        Some(
            Code::Transient
                | Code::Config
                | Code::Locked
                | Code::UnsafeSource
                | Code::TargetExists
                | Code::Stale
                | Code::Unsupported
                | Code::Partial
                | Code::Interrupted
                | Code::Archived
        )
    )
}

/// The exit code for `err`.
pub fn exit_code(err: &anyhow::Error) -> i32 {
    classify(err).map_or(FAILURE, Code::exit_code)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classify_finds_code_through_context_and_io() {
        let e = coded(Code::Locked, "busy").context("failed to start run");
        assert_eq!(exit_code(&e), LOCKED);

        let io = std::io::Error::other(Coded {
            code: Code::Integrity,
            message: "chunk 3 failed authentication".into(),
        });
        let e = anyhow::Error::new(io).context("failed to restore");
        assert_eq!(exit_code(&e), INTEGRITY);

        let through = anyhow::Error::new(to_io(coded(Code::Transient, "down").context("part 3")));
        assert_eq!(exit_code(&through), TRANSIENT);
        assert!(format!("{through:#}").contains("part 3: down"));

        let plain = anyhow::anyhow!("boom");
        assert_eq!(exit_code(&plain), FAILURE);
    }

    #[test]
    fn combined_problems_exit_with_the_most_specific_code() {
        let skipped = || coded(Code::Partial, "skipped 2 files");
        let ledger = || anyhow::anyhow!("the ledger rejected the record");
        let down = || coded(Code::Transient, "the ledger did not answer");
        let bad = || coded(Code::Integrity, "digest mismatch");
        let cold = || coded(Code::Archived, "in Deep Archive");
        let gone = || coded(Code::NotFound, "object missing");
        for (problems, want) in [
            (vec![cold(), gone()], NOT_FOUND),
            (vec![down(), cold()], ARCHIVED),
            (vec![ledger(), skipped()], PARTIAL),
            (vec![skipped(), ledger()], PARTIAL),
            (vec![down(), skipped()], PARTIAL),
            (vec![down(), ledger()], TRANSIENT),
            (vec![skipped(), bad(), down()], INTEGRITY),
            (vec![ledger()], FAILURE),
        ] {
            let e = combine("replicate X is stored, but", problems);
            assert_eq!(exit_code(&e), want, "{e:#}");
            assert!(format!("{e:#}").starts_with("replicate X is stored, but "));
        }
        let e = combine("x", vec![skipped(), ledger()]);
        assert!(format!("{e}").contains("skipped 2 files; and the ledger rejected"));
    }

    #[test]
    fn trouble_is_not_damage() {
        assert!(!is_damage(&coded(Code::Archived, "in Deep Archive")));
        assert!(is_damage(&coded(Code::Integrity, "bad chunk")));
        assert!(is_damage(&coded(Code::NotFound, "object missing")));
        assert!(is_damage(&anyhow::anyhow!("DuckDB cannot read the file")));
        assert!(!is_damage(
            &coded(Code::Transient, "timeout").context("drill")
        ));
        assert!(!is_damage(&coded(Code::Config, "no key")));
    }
}
