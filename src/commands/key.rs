//! `bkp key generate PATH`: a new key file, mode 0400: a master key (32
//! random bytes), or for write-only hosts an X25519 identity or an Ed25519
//! signing key (see `crypto/pubkey.rs`), whose public half it prints (for a
//! signing key, as the `[[encryption.signer]]` table that trusts it, scoped to
//! this host).
//!
//! It needs no config: a key is made before the config that names it. The file
//! is created, never replaced (a key that backups were written with must not be
//! lost to a typo), and made durable before its id is printed.

use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use anyhow::Result;
use serde_json::json;
use zeroize::Zeroizing;

use crate::cli::KeyType;
use crate::crypto::pubkey;
use crate::exit::{coded, Code};
use crate::ui::{self, Ui};

/// `bkp init`: writes the store marker (see `manifest/marker.rs`). A store
/// this installation marked already is left as it is (a second `init` is not
/// an error); one another installation marked is refused.
pub fn init(ctx: &crate::commands::Ctx) -> Result<()> {
    let store = crate::commands::open_store(&ctx.plan)?;
    let trust = crate::commands::trust(&ctx.plan, Vec::new())?;
    let (marker, new) = match crate::manifest::marker::check(store.as_ref(), &trust)? {
        // Its id against [encryption] store_id, when pinned.
        Some(m) => {
            trust.binding()?;
            // A marker older than an escrow: a statement that vouches for it.
            if let Err(e) = crate::manifest::marker::vouch_for_escrows(store.as_ref(), &trust) {
                ctx.ui.warn(&format!("{e:#}"));
            }
            (m, false)
        }
        None => {
            let m = crate::manifest::marker::Marker::new(&trust);
            crate::manifest::marker::write(store.as_ref(), &m, &trust)?;
            (m, true)
        }
    };
    let at = crate::units::rfc3339(marker.created_at);
    let host: String = marker.host.chars().filter(|c| !c.is_control()).collect();
    if ctx.ui.json {
        return crate::ui::document(serde_json::json!({
            "schema": "bkp.init/1",
            "store": store.identity(),
            "marker": crate::manifest::marker::KEY,
            "marked_now": new,
            "marked_at": at,
            "marked_by": host,
            "sealed": trust.checks(),
            "store_id": marker.store_id,
        }));
    }
    let pin = match &marker.store_id {
        Some(id) if trust.checks() => format!(
            "; its id is {id}: set `store_id = \"{id}\"` in [encryption] so that a marker replaced by another store's is refused"
        ),
        _ => String::new(),
    };
    if !new {
        ctx.ui.info(&format!(
            "{} is this installation's store already (marked {at} by {host}): nothing to do{pin}",
            store.identity(),
        ));
        return Ok(());
    }
    ctx.ui.info(&format!(
        "marked {} as this installation's store ({}){}{pin}",
        store.identity(),
        crate::manifest::marker::KEY,
        if trust.checks() {
            ""
        } else {
            ": without [encryption] the marker is not sealed, so it names the store but cannot prove whose it is"
        }
    ));
    Ok(())
}

/// The `[[encryption.signer]]` table to add where restores run, for the
/// signer `public` of this host: the host's name filled in, the kinds (and
/// their systems or clusters) left for the operator, who knows what this host
/// backs up. Until `kinds` is filled in, the config is refused and says how.
fn signer_table(public: &str) -> String {
    let host = crate::commands::run::hostname();
    let kinds = crate::kinds::Kind::ALL
        .iter()
        .map(|k| format!("{:?}", k.as_str()))
        .collect::<Vec<_>>()
        .join(", ");
    format!(
        "[[encryption.signer]]\n\
         key = \"{public}\"\n\
         hosts = [{host:?}]\n\
         kinds = []  # the kinds this host backs up, of {kinds}\n\
         # tigerbeetle_clusters = [0]  # with \"tigerbeetle\": its [tigerbeetle] cluster_id (0 when not set)\n\
         # postgres_systems = [\"…\"]  # with \"postgres\": SELECT system_identifier FROM pg_control_system()"
    )
}

/// The refusal of a key file's path that is taken.
fn taken(path: &Path) -> anyhow::Error {
    coded(
        Code::TargetExists,
        format!(
            "{} exists: bkp never replaces a key file (the backups written with it need it); choose a new path",
            path.display()
        ),
    )
}

/// Creates `path` (mode 0400, never replacing a file) holding `bytes`, made
/// durable; nothing is left of a failed write.
fn write_key_file(path: &Path, bytes: &[u8]) -> Result<()> {
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o400)
        .open(path)
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::AlreadyExists => taken(path),
            _ => {
                anyhow::Error::new(e).context(format!("cannot create key file {}", path.display()))
            }
        })?;
    if let Err(e) = f.write_all(bytes).and_then(|()| f.sync_all()) {
        // A half-written key file would block the next attempt ("exists") and
        // hold no usable key: remove it.
        drop(f);
        let _ = std::fs::remove_file(path);
        return Err(anyhow::Error::new(e).context(format!(
            "failed to write key file {}; nothing was kept: check the file system and run again",
            path.display()
        )));
    }
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::File::open(dir).and_then(|d| d.sync_all()).ok();
    }
    Ok(())
}

/// `bkp key generate --type escrow PATH`: an escrow identity at
/// `PATH.identity`, to be moved offline, and its escrow file at `PATH`, for
/// the hosts that back up (see `crypto/escrow.rs`).
fn generate_escrow(ui: &Ui, path: &Path) -> Result<()> {
    let (text, recipient) = pubkey::generate_identity()?;
    let identity = crate::crypto::MasterKey::identity(text.as_bytes(), "the new identity")?;
    let escrow = identity
        .escrow_text()
        .expect("an identity has an escrow file");
    let mut offline = path.as_os_str().to_owned();
    offline.push(".identity");
    let offline = std::path::PathBuf::from(offline);
    // Neither may exist: an identity left beside another escrow file would
    // not match it.
    for p in [path, offline.as_path()] {
        if p.symlink_metadata().is_ok() {
            return Err(taken(p));
        }
    }
    write_key_file(&offline, text.as_bytes())?;
    if let Err(e) = write_key_file(path, escrow.as_bytes()) {
        let _ = std::fs::remove_file(&offline);
        return Err(e);
    }
    let id = identity.id().to_string();
    ui.info(&format!(
        "escrow {id}: its identity is in {} and its escrow file in {} (both mode 0400). Move the identity offline now, to another place (a safe, another region's vault): it decrypts every backup written with the escrow, and must not stay on this host. Give the hosts that back up the escrow file (`escrow_files` in [encryption]): their next run (or `bkp init`) vouches for the store marker for the escrow. Verify the escrow with a drill from a config whose only key is the identity",
        offline.display(),
        path.display()
    ));
    if ui.json {
        ui::out(&serde_json::to_string_pretty(&json!({
            "schema": "bkp.key/1",
            "key_id": id,
            "path": path,
            "identity_path": offline,
            "public": recipient,
        }))?)?;
        return Ok(());
    }
    ui::out(&format!(
        "{id}\nescrow_files = [{:?}]",
        path.display().to_string()
    ))?;
    Ok(())
}

/// Writes a new key to `path` and prints its id (and public half).
pub fn generate(ui: &Ui, path: &Path, kind: KeyType) -> Result<()> {
    let (bytes, id, public): (Zeroizing<Vec<u8>>, String, Option<String>) = match kind {
        KeyType::Raw => {
            let mut key = Zeroizing::new([0u8; 32]);
            crate::id::fill_random(&mut key[..]);
            (
                Zeroizing::new(key.to_vec()),
                crate::crypto::key_id_of(&key),
                None,
            )
        }
        KeyType::X25519 => {
            let (text, recipient) = pubkey::generate_identity()?;
            let id = pubkey::x25519_id(&pubkey::parse_recipient(&recipient)?);
            (
                Zeroizing::new(text.as_bytes().to_vec()),
                id,
                Some(recipient),
            )
        }
        KeyType::Ed25519 => {
            let (text, signer) = pubkey::generate_signing_key()?;
            let id = pubkey::Verifier::parse(&signer)?.id;
            (Zeroizing::new(text.as_bytes().to_vec()), id, Some(signer))
        }
        KeyType::Escrow => return generate_escrow(ui, path),
    };
    write_key_file(path, &bytes)?;
    ui.info(&format!(
        "key {id} written to {} (mode 0400): keep a copy where this host's disks are not; without it no backup made with it can be restored",
        path.display()
    ));
    if ui.json {
        ui::out(&serde_json::to_string_pretty(&json!({
            "schema": "bkp.key/1",
            "key_id": id,
            "path": path,
            "public": public,
        }))?)?;
    } else {
        match (kind, &public) {
            (KeyType::X25519, Some(p)) => ui::out(&format!("{id}\nrecipient = \"{p}\""))?,
            (KeyType::Ed25519, Some(p)) => ui::out(&format!("{id}\n{}", signer_table(p)))?,
            _ => ui::out(&id)?,
        }
    }
    Ok(())
}
