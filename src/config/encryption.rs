//! The `[encryption]` section: where the key comes from (a key file, an
//! environment variable holding the key, one holding a passphrase, or a command
//! that prints the key), the id it is recorded under, and the older keys kept for
//! restores after a rotation.
//!
//! A `key_file` may start with `${CREDENTIALS_DIRECTORY}`, expanded when the key
//! is read, so that systemd's `LoadCredential=` hands bkp its key.
//!
//! Validation only checks the settings; [`load_keyring`] reads the keys, and only
//! runs that encrypt or decrypt call it.
//!
//! A trusted signer (a write-only host's public key) comes with its scope, one
//! `[[encryption.signer]]` table each: the hosts and kinds it backs up, and the
//! PostgreSQL systems and TigerBeetle clusters where those kinds are among
//! them. Nothing in a scope means "any": a stolen host must not be able to
//! sign another host's backups. Today's bare `signers = ["…"]` is a config
//! error that shows the table to write instead.

use std::path::{Path, PathBuf};

use anyhow::Result;
use serde::Deserialize;
use zeroize::Zeroizing;

use super::tigerbeetle::ClusterId;
use super::Validator;
use crate::credentials::{expand_credentials, CREDENTIALS};
use crate::crypto::{Keyring, MasterKey, SignerScope};
use crate::exit::{coded, Code};
use crate::kinds::Kind;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EncryptionFile {
    #[serde(default = "yes")]
    pub enabled: bool,
    pub key_file: Option<PathBuf>,
    pub key_env: Option<String>,
    pub passphrase_env: Option<String>,
    pub key_command: Option<Vec<String>>,
    pub key_id: Option<String>,
    /// Keys of older backups, for restores after a rotation.
    #[serde(default)]
    pub old_keys: Vec<OldKeyFile>,
    /// `bkp trust-legacy` records only unsealed manifests whose id's time is
    /// before this instant (RFC 3339): backups written before the store was
    /// sealed. By itself it admits nothing (see `manifest/legacy.rs`).
    pub unsealed_before: Option<String>,
    /// The store's id, as `bkp init` printed it: a store whose marker names
    /// another (a marker replaced by another store's) is refused.
    pub store_id: Option<String>,
    /// Write-only host: encrypt to this X25519 public key (`bkp-x25519:…`);
    /// this host can then read none of its backups.
    pub recipient: Option<String>,
    /// X25519 private keys (files), to decrypt what was encrypted to them.
    #[serde(default)]
    pub identity_files: Vec<PathBuf>,
    /// This host's Ed25519 signing key (a file): it seals what the host writes.
    pub signing_key_file: Option<PathBuf>,
    /// Escrow files (`bkp key generate --type escrow`): every new stream is
    /// also decryptable, and every seal also verifiable, by each escrow's
    /// identity, kept offline.
    #[serde(default)]
    pub escrow_files: Vec<PathBuf>,
    /// The old, unscoped form of `signer`: refused, with the table to write.
    #[serde(default)]
    pub signers: Vec<String>,
    /// The hosts whose seals are trusted, each within its scope.
    #[serde(default)]
    pub signer: Vec<SignerFile>,
}

/// One `[[encryption.signer]]` table.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignerFile {
    /// The host's Ed25519 public key, `bkp-ed25519:…`.
    pub key: Option<String>,
    #[serde(default)]
    pub hosts: Vec<String>,
    #[serde(default)]
    pub kinds: Vec<String>,
    /// System identifiers (integers, or strings beyond TOML's integers).
    #[serde(default)]
    pub postgres_systems: Vec<ClusterId>,
    #[serde(default)]
    pub tigerbeetle_clusters: Vec<ClusterId>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OldKeyFile {
    pub key_file: Option<PathBuf>,
    pub key_env: Option<String>,
    pub passphrase_env: Option<String>,
    pub key_command: Option<Vec<String>>,
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
    /// A program and its arguments (no shell) that print the key on stdout.
    Command(Vec<String>),
    /// An X25519 public key, in its text form.
    Recipient(String),
    /// A file holding an X25519 private key.
    Identity(PathBuf),
}

#[derive(Debug, Clone)]
pub struct EncryptionPlan {
    /// The key new backups are encrypted with.
    pub current: KeyPlan,
    /// Older keys, tried by id when restoring; they seal nothing new.
    pub old: Vec<KeyPlan>,
    /// The cut-off of what `bkp trust-legacy` records as from before sealing.
    pub unsealed_before: Option<time::OffsetDateTime>,
    /// The store id the marker must name (`st-` and 32 hex digits).
    pub store_id: Option<String>,
    /// This host's signing key file.
    pub signing_key: Option<PathBuf>,
    /// Trusted signers, in their text form, and what each may seal.
    pub signers: Vec<(String, SignerScope)>,
    /// Escrow files.
    pub escrow: Vec<PathBuf>,
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
            "missing: configure a key (key_file, key_env, passphrase_env or key_command), or set enabled = false to store backups unencrypted",
        )),
        Some(e) if !e.enabled => return Ok(None),
        Some(e) => e,
    };
    let unsealed_before = match &e.unsealed_before {
        None => None,
        Some(t) => Some(
            time::OffsetDateTime::parse(t, &time::format_description::well_known::Rfc3339)
                .map_err(|_| {
                    v.error(
                        "encryption.unsealed_before",
                        format!(
                            "{t:?} is not an RFC 3339 time: write it like \"2026-11-23T00:00:00Z\""
                        ),
                    )
                })?,
        ),
    };
    if let Some(id) = &e.store_id {
        let hex = id.strip_prefix("st-").unwrap_or_default();
        if hex.len() != 32 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(v.error(
                "encryption.store_id",
                format!(
                    "{:?} is not a store id: copy the one `bkp init` or `bkp check` prints (st- and 32 hex digits)",
                    id.chars().take(80).collect::<String>()
                ),
            ));
        }
    }
    let current = OldKeyFile {
        key_file: e.key_file,
        key_env: e.key_env,
        passphrase_env: e.passphrase_env,
        key_command: e.key_command,
        key_id: e.key_id,
    };
    let symmetric = current.key_file.is_some()
        || current.key_env.is_some()
        || current.passphrase_env.is_some()
        || current.key_command.is_some();
    let mut identities = e.identity_files.into_iter().map(|p| KeyPlan {
        spec: KeySpec::Identity(secret_path(p, v)),
        id: None,
    });
    let escrow = escrow_files(e.recipient.is_some(), e.escrow_files, v)?;
    let current = match (e.recipient, symmetric) {
        (Some(_), true) => {
            return Err(v.error(
                "[encryption]",
                "set either recipient (a write-only host) or one of key_file, key_env, passphrase_env, key_command, not both",
            ))
        }
        // The recipient is checked when keys are loaded (`bkp check` does).
        (Some(r), false) => {
            if e.signing_key_file.is_none() {
                return Err(v.error(
                    "encryption.signing_key_file",
                    "is required with recipient: a write-only host seals its manifests with a signing key of its own (make one with `bkp key generate --type ed25519 PATH`)",
                ));
            }
            KeyPlan {
                spec: KeySpec::Recipient(r),
                id: None,
            }
        }
        // A host that holds a key seals with it: a signature of its own would
        // make the other key holders take it for a write-only host (whose
        // tombstones, catalogs and lists they do not believe).
        (None, _) if e.signing_key_file.is_some() => {
            return Err(v.error(
                "encryption.signing_key_file",
                "only applies with recipient (a write-only host): a host with a key or identity seals with it; remove signing_key_file",
            ))
        }
        // Where only identities are configured, the first is also the key new
        // backups are encrypted to.
        (None, false) => match identities.next() {
            Some(first) => first,
            None => key_plan(current, "encryption", v)?,
        },
        (None, true) => key_plan(current, "encryption", v)?,
    };
    let old = e
        .old_keys
        .into_iter()
        .enumerate()
        .map(|(i, k)| key_plan(k, &format!("encryption.old_keys[{i}]"), v))
        .chain(identities.map(Ok))
        .collect::<Result<Vec<_>>>()?;
    if let Some(bare) = e.signers.first() {
        return Err(v.error("encryption.signers", unscoped(bare)));
    }
    let signers = signers(e.signer, v)?;
    let signing_key = e.signing_key_file.map(|p| secret_path(p, v));
    Ok(Some(EncryptionPlan {
        current,
        old,
        unsealed_before,
        store_id: e.store_id.map(|id| id.to_ascii_lowercase()),
        signing_key,
        signers,
        escrow,
    }))
}

/// Checks `escrow_files`: none on a write-only host, at most 7.
fn escrow_files(write_only: bool, files: Vec<PathBuf>, v: &Validator) -> Result<Vec<PathBuf>> {
    if write_only && !files.is_empty() {
        return Err(v.error(
            "encryption.escrow_files",
            "does not apply with recipient: a write-only host's backups are read with the identity configured where restores run; keep a copy of that identity file offline, in another place, instead",
        ));
    }
    if files.len() > 7 {
        return Err(v.error("encryption.escrow_files", "lists more than 7 escrows"));
    }
    Ok(files.into_iter().map(|p| secret_path(p, v)).collect())
}

/// The error for today's `signers = ["…"]`: a signer without a scope would
/// be trusted for every host and kind, so the table to write is shown.
fn unscoped(key: &str) -> String {
    let key = crate::crypto::pubkey::Verifier::parse(key)
        .map_or_else(|_| "bkp-ed25519:…".to_string(), |v| v.text());
    format!(
        "a signer is trusted only for the hosts and kinds it backs up: replace `signers = [...]` with one table per signing host, e.g.\n\
         [[encryption.signer]]\n\
         key = \"{key}\"\n\
         hosts = [\"db1\"]                 # the host names its manifests record (`bkp list` shows them)\n\
         kinds = [\"postgres\"]            # the kinds it backs up: {}\n\
         postgres_systems = [\"7301…\"]    # with \"postgres\": its clusters' system identifiers\n\
         tigerbeetle_clusters = [0]       # with \"tigerbeetle\": its cluster ids ([tigerbeetle] cluster_id there)",
        kind_names()
    )
}

fn kind_names() -> String {
    Kind::ALL
        .iter()
        .map(|k| format!("{:?}", k.as_str()))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Checks each `[[encryption.signer]]`: its key, and a scope that says which
/// hosts, kinds, systems and clusters it may seal (none may be left out
/// where it applies, and none may be given where it does not).
fn signers(tables: Vec<SignerFile>, v: &Validator) -> Result<Vec<(String, SignerScope)>> {
    let mut out: Vec<(String, SignerScope)> = Vec::new();
    let mut ids: Vec<String> = Vec::new();
    for (i, t) in tables.into_iter().enumerate() {
        let (key, id, scope) = signer(i, t, v)?;
        if let Some(j) = ids.iter().position(|x| *x == id) {
            return Err(v.error(
                &format!("encryption.signer[{i}].key"),
                format!("signer {id} is also encryption.signer[{j}]: one table per signer; merge their scopes"),
            ));
        }
        ids.push(id);
        out.push((key, scope));
    }
    Ok(out)
}

/// Checks `[[encryption.signer]]` number `i`: its key, id and scope.
fn signer(i: usize, t: SignerFile, v: &Validator) -> Result<(String, String, SignerScope)> {
    let field = |name: &str| format!("encryption.signer[{i}].{name}");
    let key = t.key.ok_or_else(|| {
        v.error(
            &field("key"),
            "is required: the host's public key, the `key = \"bkp-ed25519:…\"` line `bkp key generate --type ed25519` printed there",
        )
    })?;
    let id = crate::crypto::pubkey::Verifier::parse(&key)
        .map_err(|err| v.error(&field("key"), format!("{err:#}")))?
        .id;
    if t.hosts.is_empty() {
        return Err(v.error(
            &field("hosts"),
            "is required: list the host names this signer's host backs up as, as its manifests record them (its hostname, or BKP_HOSTNAME there; `bkp list` shows them)",
        ));
    }
    if let Some(h) = t
        .hosts
        .iter()
        .find(|h| h.is_empty() || h.chars().any(char::is_control))
    {
        return Err(v.error(
            &field("hosts"),
            format!("{:?} is not a host name", crate::ui::printable(h)),
        ));
    }
    if t.kinds.is_empty() {
        return Err(v.error(
            &field("kinds"),
            format!(
                "is required: list the kinds this signer's host backs up, of {}",
                kind_names()
            ),
        ));
    }
    let mut kinds = Vec::new();
    for name in &t.kinds {
        let k = Kind::parse(name).ok_or_else(|| {
            v.error(
                &field("kinds"),
                format!(
                    "{:?} is not a kind: use {}",
                    crate::ui::printable(name),
                    kind_names()
                ),
            )
        })?;
        kinds.push(k);
    }
    let postgres_systems = systems(t.postgres_systems, &field("postgres_systems"), v)?;
    let tigerbeetle_clusters = t
        .tigerbeetle_clusters
        .into_iter()
        .map(|c| c.value(v, &field("tigerbeetle_clusters")))
        .collect::<Result<Vec<u128>>>()?;
    for (kind, list, empty, what) in [
        (
            Kind::Postgres,
            "postgres_systems",
            postgres_systems.is_empty(),
            "the system identifiers of the PostgreSQL clusters it backs up (`SELECT system_identifier FROM pg_control_system()` there, or `pg_controldata`)",
        ),
        (
            Kind::Tigerbeetle,
            "tigerbeetle_clusters",
            tigerbeetle_clusters.is_empty(),
            "the ids of the TigerBeetle clusters it backs up ([tigerbeetle] cluster_id in its config, 0 when not set)",
        ),
    ] {
        match (kinds.contains(&kind), empty) {
            (true, true) => {
                return Err(v.error(
                    &field(list),
                    format!("is required with kind {:?}: list {what}", kind.as_str()),
                ))
            }
            (false, false) => {
                return Err(v.error(
                    &field(list),
                    format!("is set, but kinds does not include {:?}: add it to kinds, or remove {list}", kind.as_str()),
                ))
            }
            _ => {}
        }
    }
    let scope = SignerScope {
        hosts: t.hosts,
        kinds,
        postgres_systems,
        tigerbeetle_clusters,
    };
    Ok((key, id, scope))
}

/// PostgreSQL system identifiers as written (integers, or strings beyond
/// TOML's integers): 1 to 2^64-1.
fn systems(list: Vec<ClusterId>, field: &str, v: &Validator) -> Result<Vec<u64>> {
    list.into_iter()
        .map(|s| {
            let n = match &s {
                ClusterId::Int(n) => Some(*n),
                ClusterId::Text(t) => t.trim().parse().ok(),
            };
            n.filter(|n| *n != 0).ok_or_else(|| {
                let text = match s {
                    ClusterId::Int(n) => n.to_string(),
                    ClusterId::Text(t) => format!("{:?}", crate::ui::printable(&t)),
                };
                v.error(
                    field,
                    format!("{text} is not a PostgreSQL system identifier (a decimal integer from 1 to 2^64-1, as a string beyond TOML's integers)"),
                )
            })
        })
        .collect()
}

/// A secret file's path: relative to the config, or under the credentials
/// directory, which is expanded when read (it exists only in the run).
pub(super) fn secret_path(p: PathBuf, v: &Validator) -> PathBuf {
    if p.starts_with(CREDENTIALS) {
        p
    } else {
        v.path(p)
    }
}

fn key_plan(k: OldKeyFile, section: &str, v: &Validator) -> Result<KeyPlan> {
    let file = |p: PathBuf| KeySpec::File(secret_path(p, v));
    if k.key_command
        .as_ref()
        .is_some_and(|c| c.is_empty() || c[0].is_empty())
    {
        return Err(v.error(
            &format!("{section}.key_command"),
            "is empty: name the program and its arguments, e.g. [\"systemd-creds\", \"cat\", \"bkp-key\"]",
        ));
    }
    let mut sources: Vec<KeySpec> = k
        .key_file
        .map(file)
        .into_iter()
        .chain(k.key_env.map(KeySpec::Env))
        .chain(k.passphrase_env.map(KeySpec::PassphraseEnv))
        .chain(k.key_command.map(KeySpec::Command))
        .collect();
    if sources.len() != 1 {
        return Err(v.error(
            &format!("[{section}]"),
            "set exactly one of key_file, key_env, passphrase_env, key_command",
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

/// Loads the configured keys, the current one first. Two keys with one id are
/// refused: a backup names its key by id, so one of them could never be found
/// again (two passphrases without `key_id` both take the default id).
pub fn load_keyring(e: &EncryptionPlan) -> Result<Keyring> {
    let current = load_key(&e.current)?;
    let others = e.old.iter().map(load_key).collect::<Result<Vec<_>>>()?;
    let sections = std::iter::once("[encryption]".to_string())
        .chain((0..others.len()).map(|i| format!("[encryption.old_keys[{i}]]")));
    let mut seen: Vec<(&str, String)> = Vec::new();
    for (key, section) in std::iter::once(&current).chain(&others).zip(sections) {
        if let Some((_, first)) = seen.iter().find(|(id, _)| *id == key.id()) {
            return Err(coded(
                Code::Config,
                format!(
                    "{first} and {section} both have key id {:?}: backups name their key by id, so one of the two could never be used; give each its own key_id (or remove the duplicate)",
                    key.id()
                ),
            ));
        }
        seen.push((key.id(), section));
    }
    let signing = match &e.signing_key {
        None => None,
        Some(p) => {
            let (text, origin) = read_secret(p, "signing key file", "--type ed25519 ")?;
            Some(crate::crypto::pubkey::SigningKey::from_text(
                &text, &origin,
            )?)
        }
    };
    let signers = e
        .signers
        .iter()
        .map(|(s, scope)| Ok((crate::crypto::pubkey::Verifier::parse(s)?, scope.clone())))
        .collect::<Result<Vec<_>>>()?;
    let escrow = e
        .escrow
        .iter()
        .map(|p| {
            let (text, origin) = read_secret(p, "escrow file", "--type escrow ")?;
            crate::crypto::Escrow::from_text(&text, &origin)
        })
        .collect::<Result<Vec<_>>>()?;
    for (i, a) in escrow.iter().enumerate() {
        if escrow[..i].iter().any(|b| b.id() == a.id()) {
            return Err(coded(
                Code::Config,
                format!(
                    "escrow {} is listed twice in [encryption] escrow_files: list each escrow once",
                    a.id()
                ),
            ));
        }
    }
    Ok(Keyring::new(current, others)
        .with_scoped_signers(signing, signers)
        .with_escrow(escrow))
}

fn load_key(k: &KeyPlan) -> Result<MasterKey> {
    let key = match &k.spec {
        KeySpec::File(p) => {
            let (text, origin) = read_secret(p, "key file", "")?;
            MasterKey::from_key_text(&text, &origin)?
        }
        KeySpec::Recipient(text) => MasterKey::recipient(text)?,
        KeySpec::Identity(p) => {
            let (text, origin) = read_secret(p, "identity file", "--type x25519 ")?;
            MasterKey::identity(&text, &origin)?
        }
        KeySpec::Command(argv) => run_key_command(argv)?,
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

/// Runs a key command (scrubbed environment, no shell) and reads the key it
/// prints. Its stderr goes to bkp's; its stdout, the key, nowhere else.
fn run_key_command(argv: &[String]) -> Result<MasterKey> {
    let program = &argv[0];
    let out = crate::child::command(program, &[])
        .args(&argv[1..])
        .stdin(std::process::Stdio::null())
        .stderr(std::process::Stdio::inherit())
        .output()
        .map_err(|e| {
            coded(
                Code::Config,
                format!("key_command: cannot run {program}: {e}; check the program's path"),
            )
        })?;
    let text = zeroize::Zeroizing::new(out.stdout);
    if !out.status.success() {
        return Err(coded(
            Code::Config,
            format!(
                "key_command {program} failed ({}); run it by hand to see why",
                out.status
            ),
        ));
    }
    MasterKey::from_key_text(&text, &format!("the output of key_command {program}"))
}

/// Reads a secret file (`what`, e.g. "key file"), its credentials directory
/// expanded; the text is wiped once dropped. Returns the text and its name for
/// errors. A file that cannot be read is a Config error saying how to make
/// one (`bkp key generate {generate}PATH`); so is one that other users may
/// read or replace ([`loose_mode`]), before a byte of it is read.
fn read_secret(p: &Path, what: &str, generate: &str) -> Result<(Zeroizing<Vec<u8>>, String)> {
    use std::io::Read;
    use std::os::unix::fs::MetadataExt;
    let p = expand_credentials(p)?;
    let unreadable = |e: std::io::Error| {
        coded(
            Code::Config,
            format!(
                "cannot read {what} {}: {e}; create one with: bkp key generate {generate}{0}",
                p.display()
            ),
        )
    };
    // The mode is that of the file opened, not of whatever the path names later.
    let mut f = std::fs::File::open(&p).map_err(unreadable)?;
    let meta = f.metadata().map_err(unreadable)?;
    if let Some(problem) = loose_mode(meta.mode(), meta.uid()) {
        return Err(coded(
            Code::Config,
            format!(
                "{what} {0} {problem} (mode {1:04o}, owner uid {2}): a key must be readable by its owner only; run: chmod 600 {0}",
                p.display(),
                meta.mode() & 0o7777,
                meta.uid(),
            ),
        ));
    }
    let mut text = Zeroizing::new(Vec::new());
    f.read_to_end(&mut text).map_err(unreadable)?;
    Ok((text, format!("{what} {}", p.display())))
}

/// Why a secret file of `mode`, owned by user `uid`, may not be used; `None`
/// when it may. PostgreSQL's rule for its server key: no access for others,
/// no write for the group, and group read only on a file root owns (root
/// decided who is in the group: `root:bkp 0640`, or the file systemd's
/// `LoadCredential=` hands a service user, which shows its ACL as 0440).
fn loose_mode(mode: u32, uid: u32) -> Option<&'static str> {
    if mode & 0o007 != 0 {
        Some("may be read or replaced by every user")
    } else if mode & 0o030 != 0 {
        Some("may be replaced by its group")
    } else if mode & 0o040 != 0 && uid != 0 {
        Some("may be read by its group, and root does not own it")
    } else {
        None
    }
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

    #[test]
    fn a_key_command_prints_the_key_and_its_failures_are_config_errors() {
        let with = |argv: &str| {
            p(&MINIMAL.replace("enabled = false", &format!("key_command = {argv}\n")))
                .unwrap()
                .keyring()
        };
        let ring = with("[\"printf\", \"%064d\", \"7\"]").unwrap().unwrap();
        let mut want = [0u8; 32];
        want[31] = 7;
        assert_eq!(ring.current().id(), crate::crypto::key_id_of(&want));
        for argv in [
            "[\"false\"]",
            "[\"/nonexistent/keytool\"]",
            "[\"printf\", \"short\"]",
        ] {
            let e = with(argv).unwrap_err();
            assert_eq!(
                crate::exit::classify(&e),
                Some(Code::Config),
                "{argv}: {e:#}"
            );
        }
        fails_naming(
            &MINIMAL.replace("enabled = false", "key_command = []\n"),
            "encryption.key_command",
        );
    }

    #[test]
    fn a_key_file_others_may_read_or_replace_is_refused() {
        for (mode, uid) in [
            (0o600, 1000),
            (0o400, 0),
            (0o640, 0),
            (0o440, 0),
            (0o400, 1000),
        ] {
            assert_eq!(
                loose_mode(0o100_000 | mode, uid),
                None,
                "{mode:o} uid {uid}"
            );
        }
        for (mode, uid, why) in [
            (0o644, 0, "every user"),
            (0o604, 1000, "every user"),
            (0o602, 0, "every user"),
            (0o660, 0, "its group"),
            (0o620, 1000, "its group"),
            (0o640, 1000, "root does not own it"),
        ] {
            let problem = loose_mode(0o100_000 | mode, uid);
            assert!(
                problem.is_some_and(|p| p.contains(why)),
                "{mode:o} uid {uid}: {problem:?}"
            );
        }
    }

    #[test]
    fn a_key_file_in_the_credentials_directory_is_found_when_read() {
        let plan = p(&MINIMAL.replace(
            "enabled = false",
            "key_file = \"${CREDENTIALS_DIRECTORY}/bkp.key\"\n",
        ))
        .unwrap();
        let e = plan.encryption.as_ref().unwrap();
        assert!(
            matches!(e.current.spec, KeySpec::File(ref f) if f == Path::new("${CREDENTIALS_DIRECTORY}/bkp.key")),
            "not made relative to the config's directory"
        );
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("bkp.key"), [3u8; 32]).unwrap();
        std::fs::set_permissions(
            d.path().join("bkp.key"),
            std::os::unix::fs::PermissionsExt::from_mode(0o600),
        )
        .unwrap();
        std::env::remove_var("CREDENTIALS_DIRECTORY");
        let err = plan.keyring().unwrap_err();
        assert!(format!("{err:#}").contains("LoadCredential"), "{err:#}");
        std::env::set_var("CREDENTIALS_DIRECTORY", d.path());
        let ring = plan.keyring().unwrap().unwrap();
        std::env::remove_var("CREDENTIALS_DIRECTORY");
        assert_eq!(ring.current().id(), crate::crypto::key_id_of(&[3u8; 32]));
    }

    #[test]
    fn a_signer_comes_with_its_scope_and_a_bare_one_is_refused() {
        let (_, signer) = crate::crypto::pubkey::generate_signing_key().unwrap();
        let text =
            |body: &str| MINIMAL.replace("enabled = false", &format!("key_file = \"k\"\n{body}"));
        let table = |rest: &str| format!("[[encryption.signer]]\nkey = \"{signer}\"\n{rest}\n");
        let plan = p(&text(&table(
            "hosts = [\"db1\"]\nkinds = [\"tigerbeetle\", \"postgres\"]\ntigerbeetle_clusters = [0, \"340282366920938463463374607431768211455\"]\npostgres_systems = [\"18446744073709551615\"]",
        )))
        .unwrap();
        let (key, scope) = &plan.encryption.unwrap().signers[0];
        assert_eq!(key, &signer);
        assert_eq!(scope.hosts, vec!["db1".to_string()]);
        assert_eq!(scope.kinds, vec![Kind::Tigerbeetle, Kind::Postgres]);
        assert_eq!(scope.tigerbeetle_clusters, vec![0, u128::MAX]);
        assert_eq!(scope.postgres_systems, vec![u64::MAX]);

        fails_naming(
            &text(&format!("signers = [\"{signer}\"]\n")),
            "[[encryption.signer]]",
        );
        fails_naming(
            &text(&table("kinds = [\"duckdb\"]")),
            "encryption.signer[0].hosts",
        );
        fails_naming(
            &text(&table("hosts = [\"\"]\nkinds = [\"duckdb\"]")),
            "not a host name",
        );
        fails_naming(
            &text("[[encryption.signer]]\nhosts = [\"a\"]\n"),
            "encryption.signer[0].key",
        );
        // An empty list of bare signers trusts nobody, as before.
        assert!(p(&text("signers = []\n")).is_ok());
    }

    #[test]
    fn two_keys_with_one_id_are_refused() {
        std::env::set_var("BKP_TEST_DUP_PASS_A", "correct horse battery staple");
        std::env::set_var("BKP_TEST_DUP_PASS_B", "another passphrase entirely");
        let body = "passphrase_env = \"BKP_TEST_DUP_PASS_A\"\n[[encryption.old_keys]]\npassphrase_env = \"BKP_TEST_DUP_PASS_B\"\n";
        let plan = p(&MINIMAL.replace("enabled = false", body)).unwrap();
        let err = plan.keyring().unwrap_err();
        let text = format!("{err:#}");
        assert!(
            text.contains("[encryption] and [encryption.old_keys[0]] both have key id"),
            "{text}"
        );
        assert!(!text.contains("horse"), "{text}");
        assert_eq!(crate::exit::classify(&err), Some(Code::Config));

        let body = "passphrase_env = \"BKP_TEST_DUP_PASS_A\"\nkey_id = \"new\"\n[[encryption.old_keys]]\npassphrase_env = \"BKP_TEST_DUP_PASS_B\"\nkey_id = \"old\"\n";
        let plan = p(&MINIMAL.replace("enabled = false", body)).unwrap();
        assert!(plan.keyring().unwrap().is_some());
    }
}
