//! The `[store]` section: where backups are kept, a local directory or an S3
//! bucket. Environment overrides: `BKP_STORE_PATH` (a local store, whatever the
//! file says), `BKP_S3_BUCKET`, `BKP_S3_PREFIX`, `BKP_S3_ENDPOINT`, `BKP_S3_REGION`.

use std::path::PathBuf;

use anyhow::Result;
use serde::Deserialize;

use super::{Overrides, Validator};
use crate::store::s3::{LockMode, ObjectLock, S3Settings, Sse, MAX_PART_SIZE, MIN_PART_SIZE};

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
        object_lock_mode: Option<String>,
        object_lock_days: Option<u32>,
        sse: Option<String>,
        sse_kms_key_id: Option<String>,
    },
}

#[derive(Debug, Clone)]
pub enum StorePlan {
    Local(PathBuf),
    S3(S3Settings),
}

pub(super) fn validate(f: Option<StoreFile>, v: &Validator, ov: &Overrides) -> Result<StorePlan> {
    let f =
        match (f, &ov.store_path) {
            (_, Some(p)) => return Ok(StorePlan::Local(p.clone())),
            (None, None) => return Err(v.error(
                "[store]",
                "missing: add [store] with type = \"local\" and path, or type = \"s3\" and bucket",
            )),
            (Some(f), None) => f,
        };
    match f {
        StoreFile::Local { path } => Ok(StorePlan::Local(v.path(path))),
        StoreFile::S3 {
            bucket,
            prefix,
            region,
            endpoint,
            path_style,
            part_size,
            concurrency,
            object_lock_mode,
            object_lock_days,
            sse,
            sse_kms_key_id,
        } => {
            let object_lock = match (object_lock_mode, object_lock_days) {
                (None, None) => None,
                (Some(mode), Some(days)) => Some(ObjectLock {
                    mode: match mode.as_str() {
                        "governance" => LockMode::Governance,
                        "compliance" => LockMode::Compliance,
                        _ => {
                            return Err(v.error(
                                "store.object_lock_mode",
                                "must be \"governance\" or \"compliance\"",
                            ))
                        }
                    },
                    days: v.within(
                        "store.object_lock_days",
                        days,
                        1..=36500,
                        "must be between 1 and 36500 (days each object is retained)",
                    )?,
                }),
                (Some(_), None) => {
                    return Err(v.error(
                        "store.object_lock_days",
                        "missing: object_lock_mode needs object_lock_days (how long each object is retained)",
                    ))
                }
                (None, Some(_)) => {
                    return Err(v.error(
                        "store.object_lock_mode",
                        "missing: object_lock_days needs object_lock_mode (\"governance\" or \"compliance\")",
                    ))
                }
            };
            let sse = match (sse.as_deref(), sse_kms_key_id) {
                (None, None) => None,
                (Some("AES256"), None) => Some(Sse::Aes256),
                (Some("aws:kms"), key_id) => Some(Sse::Kms { key_id }),
                (Some("AES256") | None, Some(_)) => {
                    return Err(v.error(
                        "store.sse_kms_key_id",
                        "only applies with sse = \"aws:kms\"",
                    ))
                }
                (Some(_), _) => {
                    return Err(v.error("store.sse", "must be \"AES256\" or \"aws:kms\""))
                }
            };
            let bucket = ov.s3_bucket.clone().unwrap_or(bucket);
            if bucket.is_empty() {
                return Err(v.error("store.bucket", "must not be empty"));
            }
            let prefix = ov
                .s3_prefix
                .clone()
                .unwrap_or(prefix)
                .trim_matches('/')
                .to_string();
            let part_size = match part_size {
                Some(s) => v.size("store.part_size", &s)? as usize,
                None => 16 << 20,
            };
            let part_size = v.within(
                "store.part_size",
                part_size,
                MIN_PART_SIZE..=MAX_PART_SIZE,
                "must be between 5MiB and 5GiB (S3's part size limits)",
            )?;
            let concurrency = v.within(
                "store.concurrency",
                concurrency.unwrap_or(4),
                1..=64,
                "must be between 1 and 64",
            )?;
            let endpoint = ov.s3_endpoint.clone().or(endpoint);
            Ok(StorePlan::S3(S3Settings {
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
                object_lock,
                sse,
            }))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{fails_naming, p};
    use super::*;

    const S3: &str = "work_dir = \"/w\"\n[encryption]\nenabled = false\n[store]\ntype = \"s3\"\n";

    #[test]
    fn s3_settings_get_defaults_and_checks() {
        let plan = p(&format!("{S3}bucket = \"b\"\nprefix = \"/x/y/\"\n")).unwrap();
        let StorePlan::S3(s) = plan.store else {
            panic!("{:?}", plan.store)
        };
        assert_eq!((s.bucket.as_str(), s.prefix.as_str()), ("b", "x/y"));
        assert_eq!((s.part_size, s.concurrency), (16 << 20, 4));
        assert_eq!(s.region, "us-east-1");
        assert!(!s.path_style);
        let plan = p(&format!(
            "{S3}bucket = \"b\"\nendpoint = \"http://h:9000\"\n"
        ))
        .unwrap();
        assert!(matches!(plan.store, StorePlan::S3(ref s) if s.path_style));

        for (extra, needle) in [
            ("bucket = \"\"\n", "store.bucket: must not be empty"),
            ("bucket = \"b\"\npart_size = \"1MiB\"\n", "store.part_size"),
            ("bucket = \"b\"\npart_size = \"huge\"\n", "store.part_size"),
            ("bucket = \"b\"\nconcurrency = 0\n", "store.concurrency"),
            ("prefix = \"p\"\n", "bucket"),
        ] {
            fails_naming(&format!("{S3}{extra}"), needle);
        }
    }

    #[test]
    fn object_lock_and_sse_are_checked() {
        let plan = p(&format!(
            "{S3}bucket = \"b\"\nobject_lock_mode = \"compliance\"\nobject_lock_days = 30\nsse = \"aws:kms\"\nsse_kms_key_id = \"k\"\n"
        ))
        .unwrap();
        let StorePlan::S3(s) = plan.store else {
            panic!("{:?}", plan.store)
        };
        assert_eq!(
            s.object_lock,
            Some(ObjectLock {
                mode: LockMode::Compliance,
                days: 30
            })
        );
        assert_eq!(
            s.sse,
            Some(Sse::Kms {
                key_id: Some("k".into())
            })
        );
        let plan = p(&format!("{S3}bucket = \"b\"\nsse = \"AES256\"\n")).unwrap();
        assert!(
            matches!(plan.store, StorePlan::S3(ref s) if s.sse == Some(Sse::Aes256) && s.object_lock.is_none())
        );

        let lock = "bucket = \"b\"\nobject_lock_mode = ";
        for (extra, needle) in [
            (format!("{lock}\"governance\"\n"), "store.object_lock_days"),
            (
                "bucket = \"b\"\nobject_lock_days = 3\n".into(),
                "store.object_lock_mode",
            ),
            (
                format!("{lock}\"legal\"\nobject_lock_days = 3\n"),
                "store.object_lock_mode",
            ),
            (
                format!("{lock}\"governance\"\nobject_lock_days = 0\n"),
                "store.object_lock_days",
            ),
            (
                format!("{lock}\"governance\"\nobject_lock_days = 36501\n"),
                "store.object_lock_days",
            ),
            ("bucket = \"b\"\nsse = \"aes256\"\n".into(), "store.sse"),
            (
                "bucket = \"b\"\nsse_kms_key_id = \"k\"\n".into(),
                "store.sse_kms_key_id",
            ),
            (
                "bucket = \"b\"\nsse = \"AES256\"\nsse_kms_key_id = \"k\"\n".into(),
                "store.sse_kms_key_id",
            ),
        ] {
            fails_naming(&format!("{S3}{extra}"), needle);
        }
        // Local stores have no such settings.
        let local = "work_dir = \"/w\"\n[encryption]\nenabled = false\n[store]\ntype = \"local\"\npath = \"/s\"\n";
        fails_naming(
            &format!("{local}object_lock_mode = \"governance\"\n"),
            "object_lock_mode",
        );
        fails_naming(&format!("{local}sse = \"AES256\"\n"), "sse");
    }
}
