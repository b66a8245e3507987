//! The `[encryption]` section: where the key comes from (a key file, an
//! environment variable holding the key, or one holding a passphrase), the id it
//! is recorded under, and the older keys kept for restores after a rotation.
//!
//! Validation only checks the settings; [`load_keyring`] reads the keys, and only
//! runs that encrypt or decrypt call it.

use std::path::{Path, PathBuf};

use anyhow::Result;
use serde::Deserialize;
use zeroize::Zeroizing;

use super::Validator;
use crate::crypto::{Keyring, MasterKey};
use crate::exit::{coded, Code};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EncryptionFile {
    #[serde(default = "yes")]
    pub enabled: bool,
    pub key_file: Option<PathBuf>,
    pub key_env: Option<String>,
    pub passphrase_env: Option<String>,
    pub key_id: Option<String>,
    /// Keys of older backups, for restores after a rotation.
    #[serde(default)]
    pub old_keys: Vec<OldKeyFile>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OldKeyFile {
    pub key_file: Option<PathBuf>,
    pub key_env: Option<String>,
    pub passphrase_env: Option<String>,
    pub key_id: Option<String>,
}

fn yes() -> bool {
    true
}

#[derive(Debug, Clone)]
pub enum KeySpec {
    File(PathBuf),
    Env(String),
    PassphraseEnv(String),
}

#[derive(Debug, Clone)]
pub struct EncryptionPlan {
    /// The key new backups are encrypted with.
    pub current: KeyPlan,
    /// Older keys, tried by id when restoring.
    pub old: Vec<KeyPlan>,
}

/// Where one key comes from, and the id it is recorded under (default: the key's
/// fingerprint, or `passphrase`).
#[derive(Debug, Clone)]
pub struct KeyPlan {
    pub spec: KeySpec,
    pub id: Option<String>,
}

/// `None` when encryption is switched off; a missing section is an error, so
/// that backups are never unencrypted by omission.
pub(super) fn validate(f: Option<EncryptionFile>, v: &Validator) -> Result<Option<EncryptionPlan>> {
    let e = match f {
        None => return Err(v.error(
            "[encryption]",
            "missing: configure a key (key_file, key_env or passphrase_env), or set enabled = false to store backups unencrypted",
        )),
        Some(e) if !e.enabled => return Ok(None),
        Some(e) => e,
    };
    let current = OldKeyFile {
        key_file: e.key_file,
        key_env: e.key_env,
        passphrase_env: e.passphrase_env,
        key_id: e.key_id,
    };
    let current = key_plan(current, "encryption", v)?;
    let old = e
        .old_keys
        .into_iter()
        .enumerate()
        .map(|(i, k)| key_plan(k, &format!("encryption.old_keys[{i}]"), v))
        .collect::<Result<Vec<_>>>()?;
    Ok(Some(EncryptionPlan { current, old }))
}

fn key_plan(k: OldKeyFile, section: &str, v: &Validator) -> Result<KeyPlan> {
    let mut sources: Vec<KeySpec> = k
        .key_file
        .map(|p| KeySpec::File(v.path(p)))
        .into_iter()
        .chain(k.key_env.map(KeySpec::Env))
        .chain(k.passphrase_env.map(KeySpec::PassphraseEnv))
        .collect();
    if sources.len() != 1 {
        return Err(v.error(
            &format!("[{section}]"),
            "set exactly one of key_file, key_env, passphrase_env",
        ));
    }
    if let Some(id) = &k.key_id {
        crate::crypto::validate_key_id(id)
            .map_err(|err| v.error(&format!("{section}.key_id"), format!("{err:#}")))?;
    }
    Ok(KeyPlan {
        spec: sources.remove(0),
        id: k.key_id,
    })
}

/// Loads the configured keys, the current one first.
pub fn load_keyring(e: &EncryptionPlan) -> Result<Keyring> {
    let current = load_key(&e.current)?;
    let others = e.old.iter().map(load_key).collect::<Result<Vec<_>>>()?;
    Ok(Keyring::new(current, others))
}

fn load_key(k: &KeyPlan) -> Result<MasterKey> {
    let key = match &k.spec {
        KeySpec::File(p) => read_key_file(p)?,
        KeySpec::Env(v) => {
            let text = Zeroizing::new(std::env::var(v).map_err(|_| {
                coded(Code::Config, format!("key_env names {v}, which is not set: export the key (64 hex characters) in {v}"))
            })?);
            MasterKey::from_key_text(text.as_bytes(), &format!("environment variable {v}"))?
        }
        KeySpec::PassphraseEnv(v) => {
            let text = std::env::var(v).map_err(|_| {
                coded(
                    Code::Config,
                    format!(
                        "passphrase_env names {v}, which is not set: export the passphrase in {v}"
                    ),
                )
            })?;
            MasterKey::from_passphrase(text, k.id.clone())?
        }
    };
    Ok(match &k.id {
        Some(id) => key.with_id(id.clone()),
        None => key,
    })
}

fn read_key_file(p: &Path) -> Result<MasterKey> {
    // The key text is wiped once parsed.
    let bytes = Zeroizing::new(std::fs::read(p).map_err(|e| {
        coded(
            Code::Config,
            format!("cannot read key file {}: {e}; create one with: head -c 32 /dev/urandom > {0} && chmod 400 {0}", p.display()),
        )
    })?);
    MasterKey::from_key_text(&bytes, &format!("key file {}", p.display()))
}

#[cfg(test)]
mod tests {
    use super::super::tests::{fails_naming, p, MINIMAL};
    use super::*;

    #[test]
    fn one_key_source_per_key() {
        let text = |body: &str| MINIMAL.replace("enabled = false", body);
        let plan = p(&text(
            "key_file = \"k\"\n[[encryption.old_keys]]\nkey_env = \"OLD\"\nkey_id = \"old-1\"\n",
        ))
        .unwrap();
        let e = plan.encryption.unwrap();
        assert!(matches!(e.current.spec, KeySpec::File(ref f) if f == Path::new("/etc/bkp/k")));
        assert!(matches!(e.old[0].spec, KeySpec::Env(ref n) if n == "OLD"));
        assert_eq!(e.old[0].id.as_deref(), Some("old-1"));

        for (body, needle) in [
            ("", "[encryption]: set exactly one"),
            ("key_file = \"k\"\nkey_env = \"K\"", "exactly one"),
            (
                "key_env = \"K\"\n[[encryption.old_keys]]\nkey_id = \"x\"\n",
                "[encryption.old_keys[0]]",
            ),
        ] {
            fails_naming(&text(body), needle);
        }
        fails_naming(
            &MINIMAL.replace("[encryption]\nenabled = false", ""),
            "[encryption]: missing",
        );
    }
}
