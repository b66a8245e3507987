//! `bkp show ID`: one backup's manifest, proven (see `manifest/seal.rs`), as
//! a summary for people or as the manifest itself under `--json`.

use anyhow::Result;
use serde_json::json;

use super::{open_store, Ctx};
use crate::cli::ShowArgs;
use crate::manifest;
use crate::ui;

pub fn run(ctx: &Ctx, args: &ShowArgs) -> Result<()> {
    let store = open_store(&ctx.plan)?;
    let trust = super::reading_trust(&ctx.plan, args.trust.trust.clone())?;
    let m = manifest::find(store.as_ref(), &trust, &args.backup, None)?;
    if ctx.ui.json {
        ui::document(json!({
            "schema": "bkp.show/1",
            "authenticated": trust.checks(),
            "manifest": m,
        }))?;
        return Ok(());
    }
    let rfc = |t: time::OffsetDateTime| {
        t.format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_default()
    };
    let mut lines = vec![
        format!("backup      {}", m.id),
        format!(
            "kind        {} {} ({})",
            m.kind.as_str(),
            m.scope.as_str(),
            m.operation
        ),
        format!("started     {}", rfc(m.started_at)),
        format!("finished    {}", rfc(m.finished_at)),
        format!("host        {} (bkp {})", m.host, m.bkp_version),
        format!("retention   {} days", m.retention_days),
        format!(
            "encryption  {}",
            m.encryption
                .as_ref()
                .map_or("none".to_string(), |e| format!(
                    "{} (key {})",
                    e.format, e.key_id
                ))
        ),
        format!(
            "manifest    {} ({})",
            m.key(),
            match trust.excused_why(&m) {
                Some(why) => format!("not sealed by the current key: used because {why}"),
                None if trust.checks() => "seal verified".to_string(),
                None => "not authenticated: no [encryption] key configured".to_string(),
            }
        ),
    ];
    if let Some(p) = m.parent {
        lines.push(format!("parent      {p}"));
    }
    // What a restore reads: with chunks, the chunk list and every chunk too
    // (those stored by earlier backups included), as `verify` checks them.
    let (count, bytes) = m.restore_reads();
    lines.push(match &m.chunks {
        None => format!("objects     {count} ({})", ui::size(bytes)),
        Some(c) => format!(
            "objects     {count} ({}): {}the chunk list and {} chunks (below)",
            ui::size(bytes),
            match m.objects.len() {
                0 => String::new(),
                n => format!("{n} listed here, "),
            },
            c.stored
        ),
    });
    for o in &m.objects {
        lines.push(format!(
            "  {}  {}  sha256 {}",
            o.key,
            ui::size(o.size),
            o.sha256
        ));
    }
    if !m.files.is_empty() {
        lines.push(format!("files       {}", m.files.len()));
        for f in &m.files {
            lines.push(format!(
                "  {}  {}  sha256 {}",
                f.name,
                ui::size(f.size),
                f.sha256
            ));
        }
    }
    if !m.uses.is_empty() {
        lines.push(format!(
            "uses        {} objects of earlier backups",
            m.uses.len()
        ));
    }
    if let Some(c) = &m.chunks {
        lines.push(format!(
            "chunks      {} of {} (zeros stored as nothing) in {} distinct objects ({}); {} stored by this backup ({}), the others shared",
            c.count,
            ui::size(c.chunk_size),
            c.stored,
            ui::size(c.stored_bytes),
            c.added,
            ui::size(c.added_bytes),
        ));
        lines.push(format!(
            "  list      {}  {}  sha256 {}",
            c.list.key,
            ui::size(c.list.size),
            c.list.sha256
        ));
        lines.push(format!("  named by  {}", c.naming));
    }
    ui::out(&lines.join("\n"))?;
    Ok(())
}
