//! `${CREDENTIALS_DIRECTORY}` in a secret's path (a key file, a webhook URL
//! file): systemd's `LoadCredential=` hands a service a root-only file in a
//! directory of its own, named by that variable when the service runs.

use std::path::{Path, PathBuf};

use anyhow::Result;

use crate::exit::{coded, Code};

/// The prefix a path may start with.
pub const CREDENTIALS: &str = "${CREDENTIALS_DIRECTORY}";

/// `p` with a leading `${CREDENTIALS_DIRECTORY}` replaced by its value.
pub fn expand_credentials(p: &Path) -> Result<PathBuf> {
    let Ok(rest) = p.strip_prefix(CREDENTIALS) else {
        return Ok(p.to_path_buf());
    };
    match std::env::var_os("CREDENTIALS_DIRECTORY") {
        Some(dir) => Ok(PathBuf::from(dir).join(rest)),
        None => Err(coded(
            Code::Config,
            format!(
                "{} names the credentials directory, but CREDENTIALS_DIRECTORY is not set: run bkp from a systemd unit with LoadCredential= (or name the file by its path)",
                p.display()
            ),
        )),
    }
}
