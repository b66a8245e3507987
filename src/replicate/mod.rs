//! Replication of the Parquet cold tier: what a replication copies and how
//! ([`ReplicatePlan`], built by the config's `[replicate]` section), where the
//! files come from, the glob filter, and the record each run keeps of the
//! replicated set.
//!
//! The recipes themselves live in `commands::replicate` (backup) and
//! `commands::replicate_restore` (restore).

use std::path::PathBuf;

use self::glob::Glob;
use crate::stages::compress::Compression;

pub mod copy;
pub mod glob;
pub mod record;
pub mod source;

// old path, kept until callers move
pub mod config {
    //! The replication plan types under their old path.
    pub use super::{ReplicatePlan, S3Source, SourcePlan};
}

/// Where the cold tier is: a local directory or `s3://bucket/prefix`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SourcePlan {
    Local(PathBuf),
    S3(S3Source),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct S3Source {
    pub bucket: String,
    /// Without leading or trailing `/`; empty for the whole bucket.
    pub prefix: String,
    /// `None` leaves it to the SDK's region chain, as for the store.
    pub region: Option<String>,
    pub endpoint: Option<String>,
    pub path_style: bool,
    /// Names of the environment variables holding this source's own keys.
    pub credentials_env: Option<(String, String)>,
}

impl SourcePlan {
    /// `file:///dir` or `s3://bucket/prefix`, for manifests and messages.
    pub fn identity(&self) -> String {
        match self {
            SourcePlan::Local(p) => format!("file://{}", p.display()),
            SourcePlan::S3(s) => format!("s3://{}/{}", s.bucket, s.prefix),
        }
    }
}

/// What a replication copies and how its copies are stored.
#[derive(Debug, Clone)]
pub struct ReplicatePlan {
    pub source: SourcePlan,
    pub include: Vec<Glob>,
    pub exclude: Vec<Glob>,
    pub concurrency: usize,
    pub retention_days: u16,
    pub encrypt: bool,
    pub compression: Compression,
    pub server_side_copy: bool,
}

impl ReplicatePlan {
    /// Whether a relative path belongs to the replicated set.
    pub fn selects(&self, rel: &str) -> bool {
        self.include.iter().any(|g| g.matches(rel)) && !self.exclude.iter().any(|g| g.matches(rel))
    }

    /// Whether a file below the directory `dir` could belong to the
    /// replicated set (so that failing to read `dir` matters).
    pub fn may_select_under(&self, dir: &str) -> bool {
        self.include.iter().any(|g| g.may_match_below(dir))
            && !self.exclude.iter().any(|g| g.matches_all_below(dir))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_path_is_selected_when_included_and_not_excluded() {
        let plan = ReplicatePlan {
            source: SourcePlan::Local("/cold".into()),
            include: vec![Glob::new("**/*.parquet").unwrap()],
            exclude: vec![Glob::new("tmp/**").unwrap()],
            concurrency: 1,
            retention_days: 1,
            encrypt: false,
            compression: Compression::None,
            server_side_copy: false,
        };
        assert!(plan.selects("a/b.parquet"));
        assert!(!plan.selects("a/b.csv"));
        assert!(!plan.selects("tmp/b.parquet"));
        assert_eq!(plan.source.identity(), "file:///cold");
        assert!(plan.may_select_under("a"));
        assert!(!plan.may_select_under("tmp") && !plan.may_select_under("tmp/x"));
    }
}
