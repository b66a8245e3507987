//! `bkp key generate PATH`: a new master key file, 32 random bytes, mode 0400.
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

use crate::exit::{coded, Code};
use crate::ui::{self, Ui};

/// Writes a new key to `path` and prints its id.
pub fn generate(ui: &Ui, path: &Path) -> Result<()> {
    let mut key = Zeroizing::new([0u8; 32]);
    crate::id::fill_random(&mut key[..]);
    let id = crate::crypto::key_id_of(&key);
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o400)
        .open(path)
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::AlreadyExists => coded(
                Code::TargetExists,
                format!(
                    "{} exists: bkp never replaces a key file (the backups written with it need it); choose a new path",
                    path.display()
                ),
            ),
            _ => anyhow::Error::new(e).context(format!("cannot create key file {}", path.display())),
        })?;
    if let Err(e) = f.write_all(&key[..]).and_then(|()| f.sync_all()) {
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
    ui.info(&format!(
        "key {id} written to {} (mode 0400): keep a copy where this host's disks are not; without it no backup made with it can be restored",
        path.display()
    ));
    if ui.json {
        ui::out(&serde_json::to_string_pretty(&json!({
            "key_id": id,
            "path": path,
        }))?)?;
    } else {
        ui::out(&id)?;
    }
    Ok(())
}
