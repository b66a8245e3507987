//! The manifest of a PostgreSQL dump (kind `pgdump`): the custom-format archive
//! `pg_dump` wrote, and unless `postgres.globals` is off the cluster's roles and
//! tablespaces as SQL (`….globals.sql…`); in `source` the database, the server's
//! and `pg_dump`'s versions and each table's rows.

use anyhow::Result;

use super::{Manifest, ObjectEntry};
use crate::exit::{coded, Code};

/// The operation that makes a dump, in manifests and object keys.
pub const OPERATION: &str = "export";

/// How the globals object's key ends before compression and encryption.
pub const GLOBALS_SUFFIX: &str = ".globals.sql";

/// Whether `o` is a dump's globals object.
pub fn is_globals(o: &ObjectEntry) -> bool {
    o.key.contains(GLOBALS_SUFFIX)
}

/// The one object of dump `m` that is the archive itself.
pub fn dump_object(m: &Manifest) -> Result<&ObjectEntry> {
    let dumps: Vec<&ObjectEntry> = m.objects.iter().filter(|o| !is_globals(o)).collect();
    match dumps.as_slice() {
        [one] => Ok(one),
        _ => Err(coded(
            Code::Integrity,
            format!(
                "dump {} lists {} archives; a dump has exactly one",
                m.id,
                dumps.len()
            ),
        )),
    }
}
