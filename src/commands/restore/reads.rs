//! What a restore reads: the manifests whose objects it needs, in order
//! (for `--dry-run`, and for finding archived objects before a restore).

use anyhow::Result;

use super::RestorePlan;
use crate::config::Plan;
use crate::manifest::{Kind, Manifest, Trust};
use crate::store::Store;

/// The manifests whose objects restore `rp` reads, in order.
pub fn read_by(
    plan: &Plan,
    store: &dyn Store,
    trust: &Trust,
    rp: &RestorePlan,
) -> Result<Vec<Manifest>> {
    let all = match rp.kind {
        Kind::Duckdb => crate::manifest::duckdb::export_manifests(store, trust)?,
        Kind::Tigerbeetle if rp.at.is_some() => {
            crate::manifest::list(store, trust, Some(Kind::Tigerbeetle))?.0
        }
        _ => rp.backup.clone().into_iter().collect(),
    };
    Ok(reads(plan, rp, &all)?.into_iter().cloned().collect())
}

/// The manifests whose objects the restore reads, in order.
fn reads<'m>(plan: &Plan, rp: &RestorePlan, all: &'m [Manifest]) -> Result<Vec<&'m Manifest>> {
    let backup = rp
        .backup
        .as_ref()
        .and_then(|b| all.iter().find(|m| m.id == b.id));
    Ok(match rp.kind {
        Kind::Duckdb => match backup {
            Some(m) => crate::chain::Index::new(all).ancestry(m).map_err(|b| {
                crate::exit::coded(
                    crate::exit::Code::Integrity,
                    format!("export {}: {b}", m.id),
                )
            })?,
            None => Vec::new(),
        },
        Kind::Tigerbeetle if rp.at.is_some() => {
            let cluster = super::cluster_id(plan);
            // The snapshot's own end when it was counted, else its start time.
            let from = backup
                .map(|m| {
                    crate::manifest::tigerbeetle::snapshot_newest(m)
                        .unwrap_or(m.started_at.unix_timestamp_nanos().max(0) as u64)
                })
                .unwrap_or(0);
            let to = rp
                .at
                .map_or(u64::MAX, |t| t.unix_timestamp_nanos().max(0) as u64);
            backup
                .into_iter()
                .chain(all.iter().filter(|m| {
                    crate::manifest::tigerbeetle::is_log_of(m, cluster)
                        && crate::manifest::tigerbeetle::interval(m).is_some_and(
                            |(after, until)| crate::chain::log_needed(after, until, from, to),
                        )
                }))
                .collect()
        }
        _ => backup.into_iter().collect(),
    })
}
