//! `[[copies]]`: further stores that `bkp copy` keeps up to date with the
//! primary `[store]` (3-2-1: another region, another provider, another
//! account), and that `list`, `show`, `verify`, `restore` and `status` read
//! with `--store NAME`.
//!
//! Each entry is a `[store]` section with a `name`, validated as `[store]`
//! is (its errors name `copies.NAME.KEY`); an S3 copy may name the
//! environment variables of another identity's keys (`access_key_env`,
//! `secret_key_env`), else it uses the standard AWS chain as `[store]` does.
//! The environment's `BKP_S3_*` and `BKP_STORE_PATH` overrides apply to the
//! primary only. Names are unique, and no two stores lie in one place or one
//! inside another: a copy that is the primary is no copy, and one nested in
//! the primary would be swept as leftovers by the primary's cleanup.

use std::path::Path;

use anyhow::Result;
use serde::Deserialize;

use super::store::{plan_of, StoreFile};
use super::{Overrides, StorePlan, Validator};

/// The name `--store` gives the primary `[store]`; no copy may take it.
pub const PRIMARY: &str = "primary";

/// One validated copy.
#[derive(Debug, Clone)]
pub struct CopyPlan {
    pub name: String,
    pub store: StorePlan,
    /// How long a backup may be on the primary without being in this copy
    /// before `bkp status` raises the alarm.
    pub max_lag: std::time::Duration,
    /// Whether each backup run also writes its backup here, as soon as it
    /// is stored on the primary (`bkp copy` brings the rest).
    pub in_backup_runs: bool,
    /// With `in_backup_runs`, how long `wal push` waits for this copy to
    /// take a WAL file before it leaves the file to `bkp copy` (PostgreSQL
    /// waits for the push, and keeps its WAL while it does).
    pub wal_push_timeout: std::time::Duration,
    /// The policy `bkp cleanup --store NAME` applies here, and by which
    /// `bkp copy` leaves out what this copy would delete: the primary's
    /// `[retention]`, with the groups the copy's `retention` table names
    /// replaced.
    pub retention: crate::retention::RetentionPlan,
}

/// `wal_push_timeout` when a copy does not set it.
pub const DEFAULT_WAL_PUSH_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// `max_lag` when a copy does not set it: a day, so that a copy whose
/// `bkp copy` timer stopped is noticed the next morning.
pub const DEFAULT_MAX_LAG: std::time::Duration = std::time::Duration::from_secs(24 * 3600);

/// The members of an entry that are not `[store]`'s.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CopyOwnFile {
    pub name: String,
    pub access_key_env: Option<String>,
    pub secret_key_env: Option<String>,
    pub max_lag: Option<String>,
    #[serde(default)]
    pub in_backup_runs: bool,
    pub wal_push_timeout: Option<String>,
    pub retention: Option<super::retention::RetentionFile>,
}

const OWN: [&str; 7] = [
    "name",
    "access_key_env",
    "secret_key_env",
    "max_lag",
    "in_backup_runs",
    "wal_push_timeout",
    "retention",
];

pub(super) fn validate(
    entries: Vec<toml::Table>,
    v: &Validator,
    ov: &Overrides,
    primary: &StorePlan,
    retention: &super::retention::RetentionFile,
) -> Result<Vec<CopyPlan>> {
    // Only what the AWS SDK itself reads applies to a copy.
    let ov = Overrides {
        aws_endpoint_url: ov.aws_endpoint_url.clone(),
        ..Overrides::default()
    };
    let mut out: Vec<CopyPlan> = Vec::new();
    for (i, mut table) in entries.into_iter().enumerate() {
        let own: toml::Table = OWN
            .iter()
            .filter_map(|k| table.remove(*k).map(|value| (k.to_string(), value)))
            .collect();
        let own = CopyOwnFile::deserialize(own)
            .map_err(|e| v.error(&format!("copies[{i}]"), e.message().trim_end()))?;
        let section = format!("copies.{}", own.name);
        check_name(v, &section, &own.name, &out)?;
        let file =
            StoreFile::deserialize(table).map_err(|e| v.error(&section, e.message().trim_end()))?;
        let mut store = plan_of(file, v, &section, &ov)?;
        match (&mut store, own.access_key_env, own.secret_key_env) {
            (_, None, None) => {}
            (StorePlan::S3(s), Some(a), Some(k)) => {
                v.env_names(&format!("{section}.access_key_env"), &[a.clone(), k.clone()])?;
                s.credentials_env = Some((a, k));
            }
            (StorePlan::S3(_), _, _) => {
                return Err(v.error(
                    &format!("{section}.access_key_env"),
                    "set both access_key_env and secret_key_env (names of environment variables), or neither to use the standard AWS credentials",
                ))
            }
            (StorePlan::Local(_), _, _) => {
                return Err(v.error(
                    &format!("{section}.access_key_env"),
                    "credentials apply only to an S3 copy",
                ))
            }
        }
        if let Some(why) = overlap(&store, primary) {
            return Err(v.error(&section, format!("{why} the primary [store]: a copy must be another place (another bucket, prefix or directory, not one inside the other)")));
        }
        if let Some(other) = out.iter().find(|c| overlap(&store, &c.store).is_some()) {
            return Err(v.error(
                &section,
                format!(
                    "is the same place as copy {:?}, or one lies inside the other",
                    other.name
                ),
            ));
        }
        let max_lag = match &own.max_lag {
            Some(text) => v.positive_duration(&format!("{section}.max_lag"), text)?,
            None => DEFAULT_MAX_LAG,
        };
        let wal_push_timeout = match &own.wal_push_timeout {
            Some(text) => v.positive_duration(&format!("{section}.wal_push_timeout"), text)?,
            None => DEFAULT_WAL_PUSH_TIMEOUT,
        };
        let retention = super::retention::validate_copy(
            retention,
            own.retention.unwrap_or_default(),
            v,
            &format!("{section}.retention"),
        )?;
        out.push(CopyPlan {
            name: own.name,
            store,
            max_lag,
            in_backup_runs: own.in_backup_runs,
            wal_push_timeout,
            retention,
        });
    }
    Ok(out)
}

/// Refuses an empty, odd or taken copy name.
fn check_name(v: &Validator, section: &str, name: &str, taken: &[CopyPlan]) -> Result<()> {
    let fine = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if !fine {
        return Err(v.error(
            &format!("{section}.name"),
            "must be 1 to 64 letters, digits, '-' or '_' (it is what --store and --to take)",
        ));
    }
    if name == PRIMARY {
        return Err(v.error(
            &format!("{section}.name"),
            "\"primary\" names the [store] itself (--store primary): choose another name",
        ));
    }
    if taken.iter().any(|c| c.name == name) {
        return Err(v.error(
            &format!("{section}.name"),
            "is the name of another copy: names must be unique",
        ));
    }
    Ok(())
}

/// Why stores `a` and `b` are not two places, if they are not: the words
/// before what `a` is compared with.
fn overlap(a: &StorePlan, b: &StorePlan) -> Option<&'static str> {
    match (a, b) {
        (StorePlan::Local(x), StorePlan::Local(y)) => {
            let (x, y) = (super::store::resolved(x), super::store::resolved(y));
            nested_paths(&x, &y)
        }
        (StorePlan::S3(x), StorePlan::S3(y)) => {
            let endpoint = |e: &Option<String>| {
                e.as_deref()
                    .map(|e| e.trim_end_matches('/').to_ascii_lowercase())
            };
            if x.bucket != y.bucket || endpoint(&x.endpoint) != endpoint(&y.endpoint) {
                return None;
            }
            nested_prefixes(&x.prefix, &y.prefix)
        }
        _ => None,
    }
}

fn nested_paths(x: &Path, y: &Path) -> Option<&'static str> {
    if x == y {
        Some("is the same directory as")
    } else if x.starts_with(y) {
        Some("lies inside")
    } else if y.starts_with(x) {
        Some("holds")
    } else {
        None
    }
}

/// Prefixes compared folder by folder (`a/b` is not inside `a/bc`).
fn nested_prefixes(x: &str, y: &str) -> Option<&'static str> {
    let inside = |inner: &str, outer: &str| {
        outer.is_empty()
            || inner
                .strip_prefix(outer)
                .is_some_and(|rest| rest.starts_with('/'))
    };
    if x == y {
        Some("is the same bucket and prefix as")
    } else if inside(x, y) {
        Some("lies inside")
    } else if inside(y, x) {
        Some("holds")
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{fails_naming, p};
    use super::*;

    const BASE: &str = "work_dir = \"/w\"\n[encryption]\nenabled = false\n[store]\ntype = \"s3\"\nbucket = \"main\"\nprefix = \"bkp\"\nendpoint = \"http://a:9000\"\n";

    #[test]
    fn copies_are_validated_like_the_store() {
        let plan = p(&format!(
            "{BASE}[[copies]]\nname = \"eu\"\ntype = \"s3\"\nbucket = \"dr\"\nendpoint = \"http://b:9000\"\naccess_key_env = \"DR_KEY\"\nsecret_key_env = \"DR_SECRET\"\nobject_lock_mode = \"compliance\"\nobject_lock_days = 30\n[[copies]]\nname = \"nas\"\ntype = \"local\"\npath = \"/mnt/nas/bkp\"\nmax_lag = \"2h\"\n"
        ))
        .unwrap();
        assert_eq!(plan.copies[1].max_lag.as_secs(), 7200);
        assert_eq!(plan.copies.len(), 2);
        let StorePlan::S3(s) = &plan.copies[0].store else {
            panic!("{:?}", plan.copies[0])
        };
        assert_eq!((s.bucket.as_str(), s.path_style), ("dr", true));
        assert_eq!(
            s.credentials_env,
            Some(("DR_KEY".into(), "DR_SECRET".into()))
        );
        assert!(s.object_lock.is_some());
        assert_eq!(plan.copies[0].max_lag, DEFAULT_MAX_LAG);
        assert!(
            matches!(&plan.copies[1].store, StorePlan::Local(p) if p == Path::new("/mnt/nas/bkp"))
        );
        let s3 = "type = \"s3\"\nendpoint = \"http://b:9000\"\n";
        for (entry, needle) in [
            (format!("name = \"x\"\n{s3}"), "copies.x"),
            (
                format!("name = \"x\"\n{s3}bucket = \"b\"\nbogus = 1\n"),
                "bogus",
            ),
            (format!("{s3}bucket = \"b\"\n"), "name"),
            (
                format!("name = \"x\"\n{s3}bucket = \"b\"\nmax_lag = \"0s\"\n"),
                "copies.x.max_lag",
            ),
            (
                format!("name = \"a b\"\n{s3}bucket = \"b\"\n"),
                "copies.a b.name",
            ),
            (
                format!("name = \"primary\"\n{s3}bucket = \"b\"\n"),
                "primary",
            ),
            (
                format!("name = \"x\"\n{s3}bucket = \"b\"\nobject_lock_days = 3\n"),
                "copies.x.object_lock_mode",
            ),
            (
                format!("name = \"x\"\n{s3}bucket = \"b\"\nprefix = \"postgres\"\n"),
                "copies.x.prefix",
            ),
            (
                format!("name = \"x\"\n{s3}bucket = \"b\"\naccess_key_env = \"A\"\n"),
                "copies.x.access_key_env",
            ),
            (
                "name = \"x\"\ntype = \"local\"\npath = \"/n\"\naccess_key_env = \"A\"\nsecret_key_env = \"B\"\n".into(),
                "copies.x.access_key_env",
            ),
            (
                format!("name = \"x\"\n{s3}bucket = \"b\"\nwal_push_timeout = \"0s\"\n"),
                "copies.x.wal_push_timeout",
            ),
            (
                format!("name = \"x\"\n{s3}bucket = \"b\"\n[copies.retention.snapshot]\npreset = \"weekly\"\n"),
                "copies.x.retention.snapshot.preset",
            ),
            (
                format!("name = \"x\"\n{s3}bucket = \"b\"\n[copies.retention.snapshots]\ndaily = 3\n"),
                "snapshots",
            ),
        ] {
            fails_naming(&format!("{BASE}[[copies]]\n{entry}"), needle);
        }
    }

    #[test]
    fn a_copys_retention_replaces_the_groups_it_names() {
        use crate::retention::{Kind, Policy, Scope};
        let plan = p(&format!(
            "{BASE}[retention]\ngrace = \"2h\"\n[retention.snapshot]\npreset = \"none\"\nkeep_last = 2\n[retention.pgdump]\nkeep_last = 9\n\
             [[copies]]\nname = \"c\"\ntype = \"local\"\npath = \"/c\"\n[copies.retention.snapshot]\nmonthly = 84\n\
             [[copies]]\nname = \"d\"\ntype = \"local\"\npath = \"/d\"\nwal_push_timeout = \"1m\"\n"
        ))
        .unwrap();
        let (c, d) = (&plan.copies[0], &plan.copies[1]);
        let snapshot =
            |r: &crate::retention::RetentionPlan| *r.policies.get(Kind::Tigerbeetle, Scope::Full);
        // The group the copy names is its own, from the kind's default up.
        assert_eq!(snapshot(&c.retention).monthly, Some(84));
        assert_eq!(snapshot(&c.retention).keep_last, Policy::gfs().keep_last);
        // The others, and the grace, are the primary's.
        assert_eq!(
            c.retention
                .policies
                .get(Kind::Pgdump, Scope::Full)
                .keep_last,
            Some(9)
        );
        assert_eq!(c.retention.grace, time::Duration::hours(2));
        assert_eq!(d.retention, plan.retention);
        assert_eq!(snapshot(&plan.retention).keep_last, Some(2));
        assert_eq!(
            (c.wal_push_timeout, d.wal_push_timeout.as_secs()),
            (DEFAULT_WAL_PUSH_TIMEOUT, 60)
        );
    }

    #[test]
    fn a_copy_is_another_place() {
        let copy = |extra: &str| format!("{BASE}[[copies]]\nname = \"c\"\ntype = \"s3\"\n{extra}");
        let same = "endpoint = \"http://A:9000/\"\nbucket = \"main\"\n";
        for prefix in ["bkp", "bkp/inner", ""] {
            fails_naming(&copy(&format!("{same}prefix = \"{prefix}\"\n")), "copies.c");
        }
        for fine in [
            "endpoint = \"http://a:9000\"\nbucket = \"main\"\nprefix = \"bkp2\"\n",
            "endpoint = \"http://a:9000\"\nbucket = \"other\"\nprefix = \"bkp\"\n",
            "endpoint = \"http://b:9000\"\nbucket = \"main\"\nprefix = \"bkp\"\n",
        ] {
            p(&copy(fine)).unwrap();
        }
        let two = format!(
            "{}[[copies]]\nname = \"d\"\ntype = \"s3\"\nendpoint = \"http://b:9000\"\nbucket = \"x\"\nprefix = \"p/q\"\n",
            copy("endpoint = \"http://b:9000\"\nbucket = \"x\"\nprefix = \"p\"\n")
        );
        fails_naming(&two, "copies.d");
        let dup = format!(
            "{}[[copies]]\nname = \"c\"\ntype = \"local\"\npath = \"/n\"\n",
            copy("endpoint = \"http://b:9000\"\nbucket = \"x\"\n")
        );
        fails_naming(&dup, "copies.c.name");

        let local = "work_dir = \"/w\"\n[encryption]\nenabled = false\n[store]\ntype = \"local\"\npath = \"/srv/bkp\"\n[[copies]]\nname = \"n\"\ntype = \"local\"\n";
        for path in ["/srv/bkp", "/srv/bkp/copy", "/srv", "/srv/bkp/"] {
            fails_naming(&format!("{local}path = \"{path}\"\n"), "copies.n");
        }
        p(&format!("{local}path = \"/srv/bkp2\"\n")).unwrap();
    }

    #[test]
    fn prefixes_nest_by_folder() {
        assert_eq!(nested_prefixes("a/bc", "a/b"), None);
        assert!(nested_prefixes("a/b/c", "a/b").is_some());
        assert!(nested_prefixes("a", "a/b").is_some());
        assert!(nested_prefixes("x", "").is_some());
    }
}
