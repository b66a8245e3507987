//! The `[replicate]` section: where the cold tier is, which files belong to it, and
//! how its copies are stored.
//!
//! The source is a local directory or `s3://bucket/prefix`. An S3 source uses the
//! standard AWS credential chain, like `[store]`, unless `access_key_env` and
//! `secret_key_env` name environment variables holding another identity's keys:
//! the keys themselves never sit in the file. Environment overrides:
//! `BKP_REPLICATE_SOURCE`, `BKP_REPLICATE_ENDPOINT`, `BKP_REPLICATE_REGION`.
//! Region and path style follow the store's rules: without a region the SDK's
//! chain decides (`AWS_REGION`, the profile); path style is `BKP_S3_PATH_STYLE`,
//! else `path_style`, else on behind any endpoint, `AWS_ENDPOINT_URL` included.

use std::path::PathBuf;

use anyhow::Result;
use serde::Deserialize;

use super::store::s3_path_style;
use super::{Overrides, Validator};
use crate::replicate::glob::Glob;
use crate::replicate::{ReplicatePlan, S3Source, SourcePlan};
use crate::stages::compress::Compression;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReplicateFile {
    pub source: String,
    pub endpoint: Option<String>,
    pub region: Option<String>,
    pub path_style: Option<bool>,
    pub access_key_env: Option<String>,
    pub secret_key_env: Option<String>,
    pub include: Option<Vec<String>>,
    #[serde(default)]
    pub exclude: Vec<String>,
    pub concurrency: Option<usize>,
    pub retention_days: Option<u16>,
    /// Encrypt the copies (default true; needs `[encryption]`).
    pub encryption: Option<bool>,
    /// `none` (default: Parquet is compressed already), `zstd` or `gzip`.
    pub compression: Option<String>,
    /// Copy inside the object store when it can (default true).
    pub server_side_copy: Option<bool>,
}

/// Values from the environment that override the file.
#[derive(Debug, Default, Clone)]
pub struct ReplicateOverrides {
    pub source: Option<String>,
    pub endpoint: Option<String>,
    pub region: Option<String>,
}

impl ReplicateOverrides {
    pub fn from_env() -> Self {
        let var = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        ReplicateOverrides {
            source: var("BKP_REPLICATE_SOURCE"),
            endpoint: var("BKP_REPLICATE_ENDPOINT"),
            region: var("BKP_REPLICATE_REGION"),
        }
    }
}

/// `global` is the `[compression]` setting, whose level a compressed
/// replication reuses when it names the same algorithm.
pub(super) fn validate(
    r: ReplicateFile,
    v: &Validator,
    overrides: &Overrides,
    global: Compression,
) -> Result<ReplicatePlan> {
    let ov = &overrides.replicate;
    let text = ov.source.clone().unwrap_or(r.source);
    let source = if let Some(rest) = text.strip_prefix("s3://") {
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        if bucket.is_empty() {
            return Err(v.error(
                "replicate.source",
                "an S3 source needs a bucket: s3://bucket/prefix",
            ));
        }
        let endpoint = ov.endpoint.clone().or(r.endpoint);
        let credentials_env = match (r.access_key_env, r.secret_key_env) {
            (None, None) => None,
            (Some(a), Some(s)) if !a.is_empty() && !s.is_empty() => Some((a, s)),
            _ => {
                return Err(v.error(
                    "replicate.access_key_env",
                    "set both access_key_env and secret_key_env (names of environment variables), or neither to use the standard AWS credentials",
                ))
            }
        };
        SourcePlan::S3(S3Source {
            bucket: bucket.to_string(),
            prefix: prefix.trim_matches('/').to_string(),
            // None: the SDK's region chain decides, as for the store.
            region: ov.region.clone().or(r.region),
            path_style: s3_path_style(v, overrides, r.path_style, endpoint.is_some())?,
            endpoint,
            credentials_env,
        })
    } else {
        if text.contains("://") {
            return Err(v.error(
                "replicate.source",
                format!("{text:?}: use a local directory or s3://bucket/prefix"),
            ));
        }
        if text.is_empty() {
            return Err(v.error("replicate.source", "must not be empty"));
        }
        if r.endpoint.is_some() || r.access_key_env.is_some() {
            return Err(v.error(
                "replicate.endpoint",
                "endpoint and credentials apply only to an s3:// source",
            ));
        }
        let p = v.path(PathBuf::from(text));
        // Absolute, so that the source's identity (which finds the previous run)
        // does not depend on the directory bkp was started from.
        SourcePlan::Local(std::path::absolute(&p).unwrap_or(p))
    };
    let globs = |key: &str, list: Vec<String>| -> Result<Vec<Glob>> {
        list.iter()
            .map(|g| Glob::new(g).map_err(|e| v.error(key, format!("{e:#}"))))
            .collect()
    };
    let include = globs(
        "replicate.include",
        r.include.unwrap_or_else(|| vec!["**/*.parquet".into()]),
    )?;
    let exclude = globs("replicate.exclude", r.exclude)?;
    let concurrency = v.within(
        "replicate.concurrency",
        r.concurrency.unwrap_or(4),
        1..=64,
        "must be between 1 and 64",
    )?;
    let compression = match r.compression.as_deref().unwrap_or("none") {
        "none" => Compression::None,
        "zstd" => match global {
            c @ Compression::Zstd { .. } => c,
            _ => Compression::Zstd {
                level: 3,
                threads: 1,
            },
        },
        "gzip" => match global {
            c @ Compression::Gzip { .. } => c,
            _ => Compression::Gzip { level: 6 },
        },
        other => {
            return Err(v.not_one_of("replicate.compression", other, &["none", "zstd", "gzip"]))
        }
    };
    Ok(ReplicatePlan {
        source,
        include,
        exclude,
        concurrency,
        retention_days: r.retention_days.unwrap_or(365),
        encrypt: r.encryption.unwrap_or(true),
        compression,
        server_side_copy: r.server_side_copy.unwrap_or(true),
    })
}

#[cfg(test)]
mod tests {
    use super::super::tests::{fails_naming, with, MINIMAL};
    use super::*;

    #[test]
    fn sources_parse_with_defaults() {
        let p = |t: &str| with(&format!("[replicate]\n{t}"));
        let r = p("source = \"cold\"\n").unwrap().replicate.unwrap();
        assert_eq!(r.source, SourcePlan::Local("/etc/bkp/cold".into()));
        assert!(r.encrypt && r.server_side_copy);
        assert_eq!(r.compression, Compression::None);
        assert!(r.selects("a/b.parquet") && !r.selects("a/b.csv"));
        let r = p("source = \"s3://bk/x/y/\"\nendpoint = \"http://h:1\"\nexclude = [\"tmp/**\"]\n")
            .unwrap()
            .replicate
            .unwrap();
        match &r.source {
            SourcePlan::S3(s) => {
                assert_eq!((s.bucket.as_str(), s.prefix.as_str()), ("bk", "x/y"));
                assert!(s.path_style);
            }
            other => panic!("{other:?}"),
        }
        assert!(!r.selects("tmp/a.parquet") && r.selects("t/a.parquet"));
        // A compressed replication takes the level of [compression] when it
        // names the same algorithm.
        let r =
            with("[compression]\nlevel = 7\n[replicate]\nsource = \"d\"\ncompression = \"zstd\"\n")
                .unwrap()
                .replicate
                .unwrap();
        assert!(matches!(r.compression, Compression::Zstd { level: 7, .. }));
    }

    /// The S3 source of `[replicate]` with `extra`, under these overrides.
    fn s3_source(extra: &str, ov: &Overrides) -> Result<S3Source> {
        let text = format!("{MINIMAL}[replicate]\nsource = \"s3://b/p\"\n{extra}");
        let plan = super::super::parse(&text, std::path::Path::new("/etc/bkp/test.toml"), ov)?;
        match plan.replicate.map(|r| r.source) {
            Some(SourcePlan::S3(s)) => Ok(s),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn an_s3_source_follows_the_store_rules_for_region_and_path_style() {
        let none = Overrides::default();
        let s = s3_source("", &none).unwrap();
        assert_eq!(s.region, None, "left to the SDK's region chain");
        assert!(!s.path_style);
        let env_region = Overrides {
            replicate: ReplicateOverrides {
                region: Some("eu-west-1".into()),
                ..Default::default()
            },
            ..Default::default()
        };
        let r = |extra: &str, ov: &Overrides| s3_source(extra, ov).unwrap().region;
        assert_eq!(
            r("region = \"ap-south-1\"\n", &none).as_deref(),
            Some("ap-south-1")
        );
        assert_eq!(
            r("region = \"ap-south-1\"\n", &env_region).as_deref(),
            Some("eu-west-1")
        );

        let ps = |extra: &str, ov: &Overrides| s3_source(extra, ov).unwrap().path_style;
        let aws_ep = Overrides {
            aws_endpoint_url: Some("http://minio:9000".into()),
            ..Default::default()
        };
        let env = |v: &str| Overrides {
            s3_path_style: Some(v.into()),
            ..Default::default()
        };
        assert!(ps("endpoint = \"http://h:1\"\n", &none));
        assert!(ps("", &aws_ep), "an endpoint from AWS_ENDPOINT_URL counts");
        assert!(!ps("path_style = false\n", &aws_ep));
        assert!(ps("path_style = false\n", &env("true")));
        assert!(!ps("endpoint = \"http://h:1\"\n", &env("false")));
        let err = s3_source("", &env("yes")).unwrap_err();
        assert!(format!("{err:#}").contains("BKP_S3_PATH_STYLE"), "{err:#}");
    }

    #[test]
    fn bad_replicate_settings_name_the_key() {
        for (bad, key) in [
            ("source = \"ftp://x\"\n", "replicate.source"),
            (
                "source = \"s3:///p\"\n",
                "replicate.source: an S3 source needs a bucket",
            ),
            ("source = \"\"\n", "replicate.source: must not be empty"),
            (
                "source = \"s3://b\"\naccess_key_env = \"A\"\n",
                "replicate.access_key_env",
            ),
            (
                "source = \"d\"\nendpoint = \"http://h:1\"\n",
                "replicate.endpoint",
            ),
            ("source = \"d\"\nconcurrency = 0\n", "replicate.concurrency"),
            (
                "source = \"d\"\ncompression = \"lz4\"\n",
                "replicate.compression: \"lz4\" is not one of",
            ),
            ("source = \"d\"\ninclude = [\"[\"]\n", "replicate.include"),
            ("source = \"d\"\nsecret = \"x\"\n", "secret"),
        ] {
            fails_naming(&format!("{MINIMAL}[replicate]\n{bad}"), key);
        }
    }
}
