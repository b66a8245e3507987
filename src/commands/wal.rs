//! `bkp wal push` and `bkp wal fetch`: PostgreSQL's `archive_command` and
//! `restore_command`, one file per run, through the usual stream format (see
//! `manifest/wal.rs` for the layout and why no manifest is written).
//!
//! `push` is create-only and idempotent: PostgreSQL retries a failed command
//! with the same file, and a file already archived with the same content is a
//! success, with other content a failure (PostgreSQL then keeps the file and
//! retries, and the server's log says why). `fetch` writes nothing to the
//! destination until the whole file was decrypted and its content matched the
//! tag of its name.
//!
//! Exit codes follow PostgreSQL's rules for these commands: `fetch` exits 9
//! when the archive has no such file and nothing after it (the normal end of
//! an archive), and otherwise above 125 (200 + bkp's code), which makes
//! PostgreSQL stop recovery instead of taking a gap, a damaged or unreachable
//! archive for its end; a standby (`standby.signal`) gets the plain code for
//! every failure, and retries.

use std::fs;
use std::io::{self, Read};
use std::path::Path;

use anyhow::{Context, Result};

use super::{open_store, Ctx};
use crate::crypto::Keyring;
use crate::exit::{coded, Code};
use crate::manifest::wal::{self, archive};
use crate::stages::hash::digest_reader;
use crate::store::Store;
use crate::{exit, pipeline};

/// The system identifier of the cluster whose data directory is `pgdata`:
/// the first field of `global/pg_control`.
pub fn system_identifier(pgdata: &Path) -> Result<u64> {
    let path = pgdata.join("global/pg_control");
    let mut first = [0u8; 8];
    fs::File::open(&path)
        .and_then(|mut f| f.read_exact(&mut first))
        .map_err(|e| {
            coded(
                Code::Config,
                format!(
                    "cannot read the system identifier from {} ({e}): run in the server's data directory (PostgreSQL runs archive_command and restore_command there) or pass --pgdata",
                    path.display()
                ),
            )
        })?;
    let id = u64::from_ne_bytes(first);
    if id == 0 {
        return Err(coded(
            Code::Config,
            format!("{} holds no system identifier", path.display()),
        ));
    }
    Ok(id)
}

fn file_name(name: &str) -> Result<wal::WalName> {
    wal::parse_name(name).ok_or_else(|| {
        coded(
            Code::Config,
            format!(
                "{:?} is not the name of a file PostgreSQL archives (a WAL segment, a .history, .backup or .partial file)",
                name.chars().take(100).collect::<String>()
            ),
        )
    })
}

/// `bkp wal push PATH`: archives the file at `path` (relative to the data
/// directory `pgdata`, as PostgreSQL's `%p`).
pub fn push(ctx: &Ctx, path: &Path, pgdata: &Path) -> Result<()> {
    let plan = &ctx.plan;
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or_default()
        .to_string();
    file_name(&name)?;
    let system = system_identifier(pgdata)?;
    let full = if path.is_absolute() {
        path.to_path_buf()
    } else {
        pgdata.join(path)
    };
    let keys = plan.keyring()?;
    let keys = keys.as_ref();
    let digest = fs::File::open(&full)
        .and_then(digest_reader)
        .with_context(|| format!("failed to read {}", full.display()))?;
    let store = open_store(plan)?;
    let store = store.as_ref();
    let tag = crate::manifest::seal::tag(keys, &wal::message(system, &name, &digest.sha256))?;
    if already_archived(ctx, store, keys, system, &name, &digest.sha256)? {
        return Ok(());
    }
    let key = wal::key(system, &name, &tag, plan.compression, keys.is_some());
    let uploaded = pipeline::upload(
        store,
        &key,
        &Vec::new(),
        plan.compression,
        keys,
        std::sync::Arc::new(crate::stages::progress::Silent),
        |w| {
            let mut f = fs::File::open(&full)
                .with_context(|| format!("failed to read {}", full.display()))?;
            io::copy(&mut f, w)?;
            Ok(())
        },
    );
    let entry = match uploaded {
        Ok(e) => e,
        // Another push of the same file won the race: fine if it is this content.
        Err(e) => {
            if already_archived(ctx, store, keys, system, &name, &digest.sha256)? {
                return Ok(());
            }
            return Err(e);
        }
    };
    if entry.content_sha256 != digest.sha256 {
        let _ = store.delete(&key);
        return Err(anyhow::anyhow!(
            "{} changed while it was archived (SHA-256 {} before, {} while uploading): nothing was archived; PostgreSQL retries",
            full.display(),
            digest.sha256,
            entry.content_sha256
        ));
    }
    crate::failpoint::hit("wal-push-stored");
    ctx.ui.detail(&format!(
        "archived {name} of system {system} as {key} ({} of {})",
        crate::ui::size(entry.size),
        crate::ui::size(entry.content_bytes)
    ));
    Ok(())
}

/// Whether file `name` with content `sha256` is archived already; an error
/// when another content is archived under that name.
fn already_archived(
    ctx: &Ctx,
    store: &dyn Store,
    keys: Option<&Keyring>,
    system: u64,
    name: &str,
    sha256: &str,
) -> Result<bool> {
    let found = archive::candidates(store, system, name)?;
    if found.iter().any(|s| wal::verifies(keys, system, s, sha256)) {
        ctx.ui.detail(&format!(
            "{name} of system {system} is archived already, with this content"
        ));
        return Ok(true);
    }
    // Another content under the name blocks this one only when it is
    // authentic: an object planted or damaged in the store must not stop
    // archiving (PostgreSQL would keep the WAL until its disk fills).
    let mut authentic = None;
    for s in &found {
        match archive::check(store, keys, system, s) {
            Ok(_) => {
                authentic = Some(s);
                break;
            }
            Err(e) if exit::exit_code(&e) == exit::INTEGRITY => ctx.ui.warn(&format!(
                "{e:#}; ignored: this push stores the file under its own name"
            )),
            Err(e) => return Err(e),
        }
    }
    if let Some(other) = authentic {
        return Err(coded(
            Code::Integrity,
            format!(
                "the archive in {} already holds {name} of system {system} ({}) with other content, or sealed by a key this host does not hold: it is never replaced. Two servers with one system identifier may be archiving into one place (a restored copy, a promoted standby without a new timeline); stop the one that should not archive, then compare both files",
                store.identity(),
                other.key
            ),
        ));
    }
    Ok(false)
}

/// `bkp wal fetch NAME DEST`: writes archived file `name` to `dest` (relative
/// to `pgdata`, as PostgreSQL's `%p`), verified.
pub fn fetch(ctx: &Ctx, name: &str, dest: &Path, pgdata: &Path, system: Option<u64>) -> Result<()> {
    file_name(name)?;
    let system = match system {
        Some(s) => s,
        None => system_identifier(pgdata)?,
    };
    let dest = if dest.is_absolute() {
        dest.to_path_buf()
    } else {
        pgdata.join(dest)
    };
    let keys = ctx.plan.keyring()?;
    let store = open_store(&ctx.plan)?;
    archive::fetch_into(store.as_ref(), keys.as_ref(), system, name, &dest)?;
    ctx.ui.detail(&format!(
        "restored {name} of system {system} to {}",
        dest.display()
    ));
    Ok(())
}

/// The exit code of a failed `wal fetch` (see the module's documentation). A
/// standby gets bkp's own codes (all below 126): it falls back to streaming
/// and asks again, where a code above 125 would shut it down.
pub fn fetch_exit_code(code: i32, pgdata: &Path) -> i32 {
    match code {
        exit::NOT_FOUND => code,
        c if c > 125 => c,
        c if pgdata.join("standby.signal").exists() => c,
        c => 200 + c,
    }
}
