//! The `[store]` section: where backups are kept, a local directory or an S3
//! bucket. Environment overrides: `BKP_STORE_PATH` (a local store, whatever the
//! file says), `BKP_S3_BUCKET`, `BKP_S3_PREFIX`, `BKP_S3_ENDPOINT`, `BKP_S3_REGION`,
//! `BKP_S3_PATH_STYLE`.
//!
//! A store never lies in one of another store's own folders (`postgres/`,
//! `manifests/`, … see [`bkp_folders`]): that store's cleanup would take its
//! objects for leftovers of crashed runs and delete them. A prefix whose first
//! folder is one of them is refused, and so is a local path inside such a
//! folder of a store found above it (one with a store marker or a manifest).
//! A store nested deeper (a prefix below another installation's prefix) is
//! left alone by that cleanup: see `commands/cleanup.rs`.
//!
//! Where nothing here names a region, the AWS SDK's region chain decides when the
//! client is built (see [`crate::store::s3`]); an endpoint from `AWS_ENDPOINT_URL_S3`
//! / `AWS_ENDPOINT_URL` is the SDK's too, but makes path-style the default here as
//! `store.endpoint` does.

use std::path::{Path, PathBuf};

use anyhow::Result;
use serde::Deserialize;

use super::{Overrides, Validator};
use crate::store::s3::{
    DataClass, LockMode, ObjectLock, S3Settings, Sse, MAX_PART_SIZE, MIN_PART_SIZE,
};

// Parsed once per run and consumed by validation: the S3 variant's size is no cost.
#[allow(clippy::large_enum_variant)]
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
        ca_file: Option<PathBuf>,
        storage_class: Option<String>,
    },
}

// Validated once per run; the S3 variant's size is no cost.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone)]
pub enum StorePlan {
    Local(PathBuf),
    S3(S3Settings),
}

/// `{section}.object_lock_mode` and `{section}.object_lock_days`: both or neither.
fn object_lock_of(
    v: &Validator,
    section: &str,
    object_lock_mode: Option<String>,
    object_lock_days: Option<u32>,
) -> Result<Option<ObjectLock>> {
    let (mode_key, days_key) = (
        format!("{section}.object_lock_mode"),
        format!("{section}.object_lock_days"),
    );
    Ok(match (object_lock_mode, object_lock_days) {
        (None, None) => None,
        (Some(mode), Some(days)) => Some(ObjectLock {
            mode: match mode.as_str() {
                "governance" => LockMode::Governance,
                "compliance" => LockMode::Compliance,
                _ => return Err(v.error(&mode_key, "must be \"governance\" or \"compliance\"")),
            },
            days: v.within(
                &days_key,
                days,
                1..=36500,
                "must be between 1 and 36500 (days each object is retained)",
            )?,
        }),
        (Some(_), None) => return Err(v.error(
            &days_key,
            "missing: object_lock_mode needs object_lock_days (how long each object is retained)",
        )),
        (None, Some(_)) => return Err(v.error(
            &mode_key,
            "missing: object_lock_days needs object_lock_mode (\"governance\" or \"compliance\")",
        )),
    })
}

/// `{section}.sse` and `{section}.sse_kms_key_id`.
fn sse_of(
    v: &Validator,
    section: &str,
    sse: Option<String>,
    sse_kms_key_id: Option<String>,
) -> Result<Option<Sse>> {
    Ok(match (sse.as_deref(), sse_kms_key_id) {
        (None, None) => None,
        (Some("AES256"), None) => Some(Sse::Aes256),
        (Some("aws:kms"), key_id) => Some(Sse::Kms { key_id }),
        (Some("AES256") | None, Some(_)) => {
            return Err(v.error(
                &format!("{section}.sse_kms_key_id"),
                "only applies with sse = \"aws:kms\"",
            ))
        }
        (Some(_), _) => {
            return Err(v.error(
                &format!("{section}.sse"),
                "must be \"AES256\" or \"aws:kms\"",
            ))
        }
    })
}

pub(super) fn validate(f: Option<StoreFile>, v: &Validator, ov: &Overrides) -> Result<StorePlan> {
    let f =
        match (f, &ov.store_path) {
            (_, Some(p)) => {
                check_local(v, "BKP_STORE_PATH", p)?;
                return Ok(StorePlan::Local(p.clone()));
            }
            (None, None) => return Err(v.error(
                "[store]",
                "missing: add [store] with type = \"local\" and path, or type = \"s3\" and bucket",
            )),
            (Some(f), None) => f,
        };
    let plan = plan_of(f, v, "store", ov)?;
    // The primary is read back by backup runs (chunks a snapshot reuses, the
    // base of a snapshot built from the log, `bkp copy`, `wal push` into
    // copies): nothing in it may need a restore before it can be read.
    if let StorePlan::S3(S3Settings {
        storage_class: Some(c),
        ..
    }) = &plan
    {
        if ARCHIVE_CLASSES.contains(&c.class.as_str()) {
            return Err(v.error(
                "store.storage_class",
                format!("{:?} is an archive class, whose objects cannot be read until restored, and backup runs read the primary back (chunks a snapshot reuses, bases built from the log, bkp copy): put it on a [[copies]] entry (a copy kept for years), and keep the primary in STANDARD, STANDARD_IA, ONEZONE_IA, INTELLIGENT_TIERING or GLACIER_IR", c.class),
            ));
        }
    }
    Ok(plan)
}

/// The classes whose objects cannot be read until restored.
const ARCHIVE_CLASSES: [&str; 2] = ["GLACIER", "DEEP_ARCHIVE"];

/// The plan of store section `section` (`store`, or a copy's) as written,
/// with the environment's overrides `ov` (the primary store's; a copy's
/// carry only what the AWS SDK itself reads).
pub(super) fn plan_of(
    f: StoreFile,
    v: &Validator,
    section: &str,
    ov: &Overrides,
) -> Result<StorePlan> {
    let key = |name: &str| format!("{section}.{name}");
    match f {
        StoreFile::Local { path } => {
            let path = v.path(path);
            check_local(v, &key("path"), &path)?;
            Ok(StorePlan::Local(path))
        }
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
            ca_file,
            storage_class,
        } => {
            let object_lock = object_lock_of(v, section, object_lock_mode, object_lock_days)?;
            let storage_class = storage_class
                .map(|c| data_class(v, &key("storage_class"), &c))
                .transpose()?;
            let sse = sse_of(v, section, sse, sse_kms_key_id)?;
            let bucket = ov.s3_bucket.clone().unwrap_or(bucket);
            if bucket.is_empty() {
                return Err(v.error(&key("bucket"), "must not be empty"));
            }
            let named = if ov.s3_prefix.is_some() {
                "BKP_S3_PREFIX".to_string()
            } else {
                key("prefix")
            };
            let prefix = ov
                .s3_prefix
                .clone()
                .unwrap_or(prefix)
                .trim_matches('/')
                .to_string();
            check_prefix(v, &named, &prefix)?;
            let part_size = match part_size {
                Some(s) => v.size(&key("part_size"), &s)? as usize,
                None => 16 << 20,
            };
            let part_size = v.within(
                &key("part_size"),
                part_size,
                MIN_PART_SIZE..=MAX_PART_SIZE,
                "must be between 5MiB and 5GiB (S3's part size limits)",
            )?;
            let concurrency = v.within(
                &key("concurrency"),
                concurrency.unwrap_or(4),
                1..=64,
                "must be between 1 and 64",
            )?;
            let endpoint = ov.s3_endpoint.clone().or(endpoint);
            let path_style = s3_path_style(v, ov, path_style, endpoint.is_some())?;
            Ok(StorePlan::S3(S3Settings {
                bucket,
                prefix,
                // None: the SDK's region chain decides when the client is built.
                region: ov.s3_region.clone().or(region),
                path_style,
                endpoint,
                ca_file: ca_file.map(|p| v.path(p)),
                part_size,
                concurrency,
                object_lock,
                sse,
                storage_class,
                credentials_env: None,
            }))
        }
    }
}

/// S3's storage classes a data object may be written in.
const CLASSES: [&str; 7] = [
    "STANDARD",
    "STANDARD_IA",
    "ONEZONE_IA",
    "INTELLIGENT_TIERING",
    "GLACIER_IR",
    "GLACIER",
    "DEEP_ARCHIVE",
];

/// `{section}.storage_class`: one of S3's classes, for the data objects
/// (the kinds' folders and the WAL archive) only.
fn data_class(v: &Validator, key: &str, class: &str) -> Result<DataClass> {
    let Some(class) = CLASSES.iter().find(|c| c.eq_ignore_ascii_case(class)) else {
        return Err(v.not_one_of(key, class, &CLASSES));
    };
    use crate::manifest;
    let mut prefixes: Vec<String> = manifest::Kind::ALL
        .iter()
        .map(|k| format!("{}/", k.as_str()))
        .collect();
    prefixes.push(manifest::wal::PREFIX.to_string());
    Ok(DataClass {
        class: class.to_string(),
        prefixes,
        standard_suffixes: vec![manifest::chunks::LIST_SUFFIX.to_string()],
    })
}

/// The folders bkp keeps its own objects in at the top of a store: one per
/// kind, and those of manifests, catalogs, tombstones, archived WAL, legacy
/// lists, heads, escrow statements, leases, run reports, `bkp check`'s probes and a local store's partial writes.
pub fn bkp_folders() -> Vec<&'static str> {
    use crate::manifest;
    let mut out: Vec<&'static str> = manifest::Kind::ALL.iter().map(|k| k.as_str()).collect();
    out.extend([
        manifest::MANIFEST_DIR,
        manifest::CATALOG_DIR,
        manifest::tombstone::TRASH_DIR,
        manifest::wal::PREFIX.trim_end_matches('/'),
        manifest::legacy::DIR,
        manifest::head::DIR,
        manifest::marker::ESCROW_DIR,
        "leases",
        "reports",
        "check",
        crate::store::local::PARTIAL_DIR,
    ]);
    out
}

/// Refuses a prefix whose first folder is one of [`bkp_folders`].
fn check_prefix(v: &Validator, key: &str, prefix: &str) -> Result<()> {
    let first = prefix.split('/').next().unwrap_or_default();
    if !bkp_folders().contains(&first) {
        return Ok(());
    }
    Err(v.error(
        key,
        format!(
            "{prefix:?} starts with {first}/, a folder bkp keeps its own objects in: the cleanup of an installation at the bucket's root takes what it finds there for leftovers of crashed runs and deletes it. Choose a prefix whose first folder is none of {} (e.g. \"bkp/{prefix}\"), and move this store's objects there first: they keep their names below it",
            bkp_folders().join(", ")
        ),
    ))
}

/// Refuses a local store path that lies in one of [`bkp_folders`] of a store
/// above it (a directory holding a store marker or a manifest).
fn check_local(v: &Validator, key: &str, path: &Path) -> Result<()> {
    let Some((outer, first)) = enclosing_store(path) else {
        return Ok(());
    };
    Err(v.error(
        key,
        format!(
            "{} lies in {first}/ of the bkp store at {}: that store's cleanup takes what it finds in its own folders for leftovers of crashed runs and deletes it. Choose a path outside {}, or in a folder of it that bkp does not use (none of {})",
            path.display(),
            outer.display(),
            outer.display(),
            bkp_folders().join(", ")
        ),
    ))
}

/// The store above `path` in whose folder `path` lies, with that folder's
/// name: a directory above `path` that [`is_store`], when `path`'s first
/// folder below it is one of bkp's.
fn enclosing_store(path: &Path) -> Option<(PathBuf, String)> {
    let path = resolved(path);
    for above in path.ancestors().skip(1) {
        if !is_store(above) {
            continue;
        }
        let first = path
            .strip_prefix(above)
            .ok()?
            .components()
            .next()?
            .as_os_str()
            .to_str()?
            .to_string();
        if bkp_folders().contains(&first.as_str()) {
            return Some((above.to_path_buf(), first));
        }
    }
    None
}

/// Whether directory `dir` is a local store: it holds a store marker, or a
/// manifest (`manifests/{kind}/{id}.json`).
fn is_store(dir: &Path) -> bool {
    use crate::manifest::{marker, Kind, MANIFEST_DIR};
    if dir.join(marker::KEY).is_file() {
        return true;
    }
    Kind::ALL.iter().any(|k| {
        let Ok(entries) = std::fs::read_dir(dir.join(MANIFEST_DIR).join(k.as_str())) else {
            return false;
        };
        entries.flatten().any(|e| {
            e.file_name().to_str().is_some_and(|n| {
                n.strip_suffix(".json")
                    .is_some_and(|id| id.parse::<crate::id::BackupId>().is_ok())
            })
        })
    })
}

/// `path` with its longest existing ancestor resolved (symbolic links, `..`),
/// the rest as written: a store directory may not exist yet.
pub(super) fn resolved(path: &Path) -> PathBuf {
    let mut rest = Vec::new();
    let mut at = path;
    loop {
        if let Ok(real) = std::fs::canonicalize(at) {
            return rest.iter().rev().fold(real, |p, name| p.join(name));
        }
        match (at.parent(), at.file_name()) {
            (Some(parent), Some(name)) => {
                rest.push(name.to_owned());
                at = parent;
            }
            _ => return path.to_path_buf(),
        }
    }
}

/// Path-style addressing for an S3 client (the store, or replicate's S3
/// source): `BKP_S3_PATH_STYLE`, else the file's `path_style`, else on behind any
/// endpoint. S3-compatible services behind an endpoint almost always need it;
/// AWS itself prefers virtual hosts. An endpoint the SDK takes from
/// `AWS_ENDPOINT_URL(_S3)` counts as one.
pub(super) fn s3_path_style(
    v: &Validator,
    ov: &Overrides,
    configured: Option<bool>,
    endpoint_named: bool,
) -> Result<bool> {
    let env = match ov.s3_path_style.as_deref() {
        None => None,
        Some("true") => Some(true),
        Some("false") => Some(false),
        Some(other) => {
            return Err(v.error(
                "BKP_S3_PATH_STYLE",
                format!("{other:?} is not one of \"true\", \"false\" (unset it to use the file's path_style)"),
            ))
        }
    };
    Ok(env
        .or(configured)
        .unwrap_or(endpoint_named || ov.aws_endpoint_url.is_some()))
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
        assert_eq!(s.region, None, "left to the SDK's region chain");
        assert!(!s.path_style);
        assert_eq!(s.ca_file, None);
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

    /// The S3 settings of `extra` under an s3 [store], with these overrides.
    fn s3_with(extra: &str, ov: &Overrides) -> Result<S3Settings> {
        let text = format!("{S3}bucket = \"b\"\n{extra}");
        match super::super::parse(&text, std::path::Path::new("/etc/bkp/test.toml"), ov)?.store {
            StorePlan::S3(s) => Ok(s),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn region_comes_from_env_then_config_else_the_sdk() {
        let none = Overrides::default();
        let env = Overrides {
            s3_region: Some("eu-west-1".into()),
            ..Default::default()
        };
        let r = |extra: &str, ov: &Overrides| s3_with(extra, ov).unwrap().region;
        assert_eq!(r("", &none), None);
        assert_eq!(r("", &env).as_deref(), Some("eu-west-1"));
        let conf = "region = \"ap-south-1\"\n";
        assert_eq!(r(conf, &none).as_deref(), Some("ap-south-1"));
        assert_eq!(r(conf, &env).as_deref(), Some("eu-west-1"));
    }

    #[test]
    fn path_style_follows_env_then_config_then_any_endpoint() {
        let ps = |extra: &str, ov: &Overrides| s3_with(extra, ov).unwrap().path_style;
        let env = |v: &str| Overrides {
            s3_path_style: Some(v.into()),
            ..Default::default()
        };
        let aws_ep = Overrides {
            aws_endpoint_url: Some("http://minio:9000".into()),
            ..Default::default()
        };
        let none = Overrides::default();
        // Defaults: virtual hosts on AWS, path style behind any endpoint,
        // including one the SDK takes from AWS_ENDPOINT_URL(_S3).
        assert!(!ps("", &none));
        assert!(ps("endpoint = \"http://h:9000\"\n", &none));
        assert!(ps("", &aws_ep));
        let s = s3_with("", &aws_ep).unwrap();
        assert_eq!(s.endpoint, None, "the SDK reads AWS_ENDPOINT_URL itself");
        assert!(!ps("path_style = false\n", &aws_ep));
        // BKP_S3_PATH_STYLE beats the file and the endpoint default.
        assert!(ps("path_style = false\n", &env("true")));
        assert!(!ps(
            "endpoint = \"http://h:9000\"\npath_style = true\n",
            &env("false")
        ));
        assert!(!ps(
            "",
            &Overrides {
                s3_path_style: Some("false".into()),
                ..aws_ep.clone()
            }
        ));
        for bad in ["yes", "1", "TRUE", " true"] {
            let err = s3_with("", &env(bad)).unwrap_err();
            let msg = format!("{err:#}");
            assert!(msg.contains("BKP_S3_PATH_STYLE"), "{msg}");
            assert!(msg.contains("/etc/bkp/test.toml"), "{msg}");
            assert_eq!(crate::exit::exit_code(&err), crate::exit::CONFIG, "{msg}");
        }
    }

    #[test]
    fn a_store_in_a_folder_of_bkp_is_refused() {
        for prefix in [
            "postgres",
            "/postgres/",
            "manifests/team",
            "wal",
            "trash/x",
            "catalog",
            "leases",
            "reports",
            "check",
            "tigerbeetle/inner",
        ] {
            fails_naming(
                &format!("{S3}bucket = \"b\"\nprefix = \"{prefix}\"\n"),
                "store.prefix",
            );
        }
        for fine in ["team/postgres", "bkp", "postgresql", "x/manifests"] {
            s3_with(&format!("prefix = \"{fine}\"\n"), &Overrides::default()).unwrap();
        }
        let env = Overrides {
            s3_prefix: Some("pgdump/".into()),
            ..Default::default()
        };
        let err = s3_with("prefix = \"team\"\n", &env).unwrap_err();
        assert!(format!("{err:#}").contains("BKP_S3_PREFIX"), "{err:#}");
        assert_eq!(crate::exit::exit_code(&err), crate::exit::CONFIG);
    }

    #[test]
    fn every_folder_bkp_writes_is_one_of_its_folders() {
        use crate::manifest::{self, Kind};
        let id = crate::id::BackupId::new_v7(time::OffsetDateTime::now_utc());
        let folders = bkp_folders();
        let first = |key: String| key.split('/').next().unwrap().to_string();
        let mut keys = vec![
            manifest::tombstone::key(Kind::Postgres, id),
            manifest::chunks::chunk_key(Kind::Tigerbeetle, &"a".repeat(64)),
            manifest::wal::key(
                7,
                "000000010000000000000001",
                &"ab".repeat(32),
                crate::stages::compress::Compression::None,
                false,
            ),
        ];
        keys.extend(Kind::ALL.iter().map(|k| format!("{}/x", k.as_str())));
        for key in keys {
            assert!(folders.contains(&first(key.clone()).as_str()), "{key}");
        }
    }

    #[test]
    fn a_local_store_inside_a_folder_of_another_store_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let outer = dir.path().join("outer");
        let v = Validator::new(Path::new("/etc/bkp/test.toml"));
        // A folder called manifests is not a store; one with a manifest is.
        std::fs::create_dir_all(outer.join("manifests/postgres")).unwrap();
        std::fs::create_dir_all(outer.join("x")).unwrap();
        check_local(&v, "store.path", &outer.join("postgres")).unwrap();
        let id = crate::id::BackupId::new_v7(time::OffsetDateTime::now_utc());
        std::fs::write(outer.join(format!("manifests/postgres/{id}.json")), "{}").unwrap();
        for inside in ["postgres", "postgres/inner", "tigerbeetle/a/b", "wal"] {
            let err = check_local(&v, "store.path", &outer.join(inside)).unwrap_err();
            let msg = format!("{err:#}");
            assert!(msg.contains("store.path") && msg.contains("outer"), "{msg}");
            assert_eq!(crate::exit::exit_code(&err), crate::exit::CONFIG);
        }
        // Through `..`, the same place.
        let err = check_local(&v, "store.path", &outer.join("x/../postgres/y")).unwrap_err();
        assert!(format!("{err:#}").contains("postgres/"), "{err:#}");
        for beside in ["other", "other/postgres"] {
            check_local(&v, "store.path", &outer.join(beside)).unwrap();
        }
        check_local(&v, "store.path", &dir.path().join("postgres")).unwrap();
        check_local(&v, "store.path", &outer).unwrap();
    }

    #[test]
    fn ca_file_is_relative_to_the_config() {
        let none = Overrides::default();
        let s = s3_with("ca_file = \"certs/ca.pem\"\n", &none).unwrap();
        assert_eq!(
            s.ca_file.as_deref(),
            Some(std::path::Path::new("/etc/bkp/certs/ca.pem"))
        );
        let s = s3_with("ca_file = \"/srv/ca.pem\"\n", &none).unwrap();
        assert_eq!(
            s.ca_file.as_deref(),
            Some(std::path::Path::new("/srv/ca.pem"))
        );
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
