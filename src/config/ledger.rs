//! The `[ledger]` section: the TigerBeetle cluster each run is recorded in as a
//! code-12 transfer. Environment override: `BKP_LEDGER_ADDRESSES`.

use std::path::Path;
use std::time::Duration;

use anyhow::Result;
use serde::Deserialize;

use super::tigerbeetle::ClusterId;
use super::{Overrides, Validator};
use crate::ledger::LedgerConfig;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LedgerFile {
    #[serde(default = "yes")]
    pub enabled: bool,
    /// An integer, or a string for ids beyond TOML's 64-bit integers.
    #[serde(default)]
    pub cluster_id: ClusterId,
    /// Required while the ledger is enabled.
    pub addresses: Option<String>,
    #[serde(default = "default_ledger")]
    pub ledger: u32,
    pub timeout: Option<String>,
}

fn yes() -> bool {
    true
}

fn default_ledger() -> u32 {
    12
}

/// `None` when the section is absent or switched off. The spool of records not
/// yet accepted lives in `work_dir`.
pub(super) fn validate(
    f: Option<LedgerFile>,
    v: &Validator,
    ov: &Overrides,
    work_dir: &Path,
) -> Result<Option<LedgerConfig>> {
    let l = match f {
        Some(l) if l.enabled => l,
        _ => return Ok(None),
    };
    let addresses = ov
        .ledger_addresses
        .clone()
        .or(l.addresses)
        .unwrap_or_default();
    if addresses.trim().is_empty() {
        return Err(v.error(
            "ledger.addresses",
            "must list the cluster's addresses, e.g. \"127.0.0.1:3000\" (or set ledger.enabled = false, or leave [ledger] out, to run without the audit ledger)",
        ));
    }
    if l.ledger == 0 {
        return Err(v.error("ledger.ledger", "must be a nonzero ledger number"));
    }
    let timeout = match &l.timeout {
        Some(s) => v.duration("ledger.timeout", s)?,
        None => Duration::from_secs(10),
    };
    let cluster_id = l.cluster_id.value(v, "ledger.cluster_id")?;
    Ok(Some(LedgerConfig {
        cluster_id,
        addresses,
        ledger: l.ledger,
        timeout,
        spool_dir: crate::workdir::WorkDir::new(work_dir).ledger_spool(),
    }))
}

#[cfg(test)]
mod tests {
    use super::super::tests::{fails_naming, with, MINIMAL};

    #[test]
    fn cluster_ids_beyond_64_bits_are_strings() {
        let big = with("[ledger]\naddresses = \"3000\"\ncluster_id = \"340282366920938463463374607431768211455\"\n");
        assert_eq!(big.unwrap().ledger.unwrap().cluster_id, u128::MAX);
        let small = with("[ledger]\naddresses = \"3000\"\ncluster_id = 7\n").unwrap();
        let l = small.ledger.unwrap();
        assert_eq!((l.cluster_id, l.ledger), (7, 12));
        assert_eq!(
            l.spool_dir,
            std::path::Path::new("/var/lib/bkp/ledger-spool")
        );
        let off = with("[ledger]\nenabled = false\naddresses = \"3000\"\n").unwrap();
        assert!(off.ledger.is_none());
        // Switched off, the section needs nothing else.
        let off = with("[ledger]\nenabled = false\n").unwrap();
        assert!(off.ledger.is_none());
    }

    #[test]
    fn bad_ledger_settings_name_the_key() {
        for (extra, needle) in [
            ("addresses = \"3000\"\nledger = 0\n", "ledger.ledger"),
            (
                "addresses = \"3000\"\ntimeout = \"soon\"\n",
                "ledger.timeout",
            ),
            ("addresses = \"\"\n", "ledger.addresses"),
            ("ledger = 12\n", "ledger.enabled = false"),
            (
                "addresses = \"3000\"\ncluster_id = \"-1\"\n",
                "ledger.cluster_id",
            ),
        ] {
            fails_naming(&format!("{MINIMAL}[ledger]\n{extra}"), needle);
        }
    }
}
