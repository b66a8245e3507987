//! Heads: bkp's own record of what it stored, so that a store rolled back
//! under it (the newest manifests deleted, or hidden behind S3 delete
//! markers) is noticed instead of taken for the truth.
//!
//! Every backup run that stores a manifest then writes one small sealed
//! document, create-only, `heads/{kind}/{id}.json`: "backup `id` of `kind`
//! was stored". A WAL archive gets `heads/wal/{system}/{segment}.json` from
//! `wal push` now and then (see [`wal_due`]): "the archive held this segment".
//! Heads are never rewritten or deleted by bkp, and under Object Lock they are
//! retained like every other object, so a bucket writer who deletes backups
//! cannot take back the record that they were made.
//!
//! Why one document per backup, keyed by its id: several hosts may write one
//! store, and a key nobody else can write needs no coordination (no counter to
//! race for, no read before the write: one PUT per run). Reading stays cheap
//! because ids sort by time: a reader that lists the kind's newest backup `M`
//! asks for the heads after `heads/{kind}/{M}.json` (one listing with
//! `start-after`), which is empty unless something newer than `M` was
//! recorded, however long the history. The folder itself is the growing
//! count: one head per backup ever stored.
//!
//! A head is untrusted input like any document the store hands back: read to
//! at most [`crate::limits::HEAD`] bytes, believed only when sealed by the
//! current key or a trusted signer (without `[encryption]` nothing can be
//! checked, as for manifests), and only where its key says it belongs. One
//! that is not believed is reported and ignored: a planted one must not stop
//! restores.

use anyhow::Result;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use super::{seal, Kind, Manifest, Trust};
use crate::exit::{coded, Code};
use crate::id::BackupId;
use crate::store::Store;

pub const DIR: &str = "heads";
pub const SCHEMA: &str = "bkp.head/1";
/// How many heads newer than the newest listed backup one check reads at
/// most: more than that many that are not believed is reported as such.
const MAX_READ: usize = 16;
/// `wal push` records a head at every segment whose number is a multiple of
/// this (every 1 GiB of 16 MiB segments): one PUT per 64 segments.
pub const WAL_EVERY: u64 = 64;

/// One recorded head.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Head {
    pub schema: String,
    /// What it is the head of: a kind (`tigerbeetle`), or `wal/{system}`.
    pub of: String,
    /// The backup id, or the WAL segment name.
    pub head: String,
    pub host: String,
    #[serde(with = "time::serde::rfc3339")]
    pub recorded_at: OffsetDateTime,
    /// The id of the store it was recorded in (its marker's): a head copied
    /// from another store of the same key raises no alarm here. `None` in
    /// heads recorded before heads named their store, or in a store whose
    /// marker has no id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub store: Option<String>,
}

/// `heads/{kind}/`.
pub fn kind_prefix(kind: Kind) -> String {
    format!("{DIR}/{}/", kind.as_str())
}

/// `heads/wal/{system}/`.
pub fn wal_prefix(system: u64) -> String {
    format!("{DIR}/wal/{system}/")
}

/// The key of backup `m`'s head.
pub fn key_of(m: &Manifest) -> String {
    format!("{}{}.json", kind_prefix(m.kind), m.id)
}

/// Records that backup `m` is stored: create-only, sealed with `trust`'s keys.
pub fn advance(store: &dyn Store, trust: &Trust, m: &Manifest) -> Result<()> {
    let key = key_of(m);
    write(
        store,
        trust,
        &key,
        m.kind.as_str().to_string(),
        m.id.to_string(),
    )
}

/// Whether `wal push` records a head for file `name`: a segment whose number
/// is a multiple of [`WAL_EVERY`], or a backup history file (the end of a
/// base backup), which names the segment it started in.
pub fn wal_due(name: &str) -> Option<String> {
    use super::wal::{parse_name, FileKind};
    let w = parse_name(name)?;
    match w.kind {
        FileKind::Segment if w.position % WAL_EVERY == 0 => Some(name.to_string()),
        FileKind::BackupHistory => Some(name.get(..24)?.to_string()),
        _ => None,
    }
}

/// The key of the head recording that the WAL archive of `system` holds
/// `segment`.
pub fn wal_key(system: u64, segment: &str) -> String {
    format!("{}{segment}.json", wal_prefix(system))
}

/// Records that the WAL archive of `system` holds `segment`.
pub fn advance_wal(store: &dyn Store, trust: &Trust, system: u64, segment: &str) -> Result<()> {
    let key = wal_key(system, segment);
    // The store the push's tags name (the pin, without reading the marker):
    // a marker deleted or replaced must not stop heads from advancing.
    let doc = head_of(
        format!("wal/{system}"),
        segment.into(),
        trust.wal_store_id()?,
    );
    put(store, trust, &key, &doc)
}

fn head_of(of: String, head: String, store: Option<String>) -> Head {
    Head {
        schema: SCHEMA.into(),
        of,
        head,
        host: super::hostname(),
        recorded_at: OffsetDateTime::now_utc(),
        store,
    }
}

fn write(store: &dyn Store, trust: &Trust, key: &str, of: String, head: String) -> Result<()> {
    let doc = head_of(of, head, trust.binding()?.map(|b| b.id.clone()));
    put(store, trust, key, &doc)
}

fn put(store: &dyn Store, trust: &Trust, key: &str, doc: &Head) -> Result<()> {
    match store.put_new(key, &seal::encode(doc, trust.keys())?, &Vec::new()) {
        // A retried push records the same head: it is there already.
        Err(e) if crate::store::is_already_exists(&e) => Ok(()),
        other => other
            .map(drop)
            .map_err(|e| e.context(format!("failed to record {key}"))),
    }
}

/// What a look past the newest listed backup found.
#[derive(Debug, Default)]
pub struct Beyond {
    /// The newest believed head whose backup the store no longer shows.
    pub lost: Option<(String, Head)>,
    /// Heads that were not believed, each with why (reported, ignored).
    pub ignored: Vec<String>,
}

/// Parses `bytes`, stored at `key`, as a head of `of` (`what` in errors):
/// sealed by the current key or a trusted signer (when keys are configured)
/// and recording what its key names, else a data error.
pub fn parse(bytes: &[u8], key: &str, of: &str, trust: &Trust, what: &str) -> Result<Head> {
    let opened = seal::open(bytes, what, trust)?;
    let by = trust.vouch(opened.sealer.as_deref(), key, bytes, what)?;
    if trust.checks() && by.as_deref().is_none_or(|s| s.starts_with(seal::LEGACY)) {
        return Err(coded(
            Code::Integrity,
            format!("{what} is not sealed by the current key or a trusted signer"),
        ));
    }
    let h: Head = serde_json::from_value(opened.value)
        .map_err(|_| coded(Code::Integrity, format!("{what} is malformed")))?;
    let at = key.rsplit('/').next().unwrap_or_default();
    if h.schema != SCHEMA || h.of != of || at != format!("{}.json", h.head) {
        return Err(coded(
            Code::Integrity,
            format!("{what} records another head than its key names"),
        ));
    }
    trust.check_scope(by.as_deref(), &claim(&h), what)?;
    let here = trust.binding()?.map(|b| b.id.as_str());
    if let (Some(theirs), Some(here)) = (h.store.as_deref(), here) {
        if theirs != here {
            return Err(coded(
                Code::Integrity,
                format!(
                    "{what} was recorded in store {}, and this is store {}: it was copied from another store",
                    crate::ui::printable(theirs),
                    crate::ui::printable(here)
                ),
            ));
        }
    }
    Ok(h)
}

/// What a head claims, for a signer's scope: its host, and its kind or WAL
/// system. A kind's head names no TigerBeetle cluster: a signer of any
/// cluster of the kind may record one (at worst, `restore latest` refuses).
fn claim(h: &Head) -> crate::crypto::Claim<'_> {
    let mut c = crate::crypto::Claim {
        host: Some(&h.host),
        ..crate::crypto::Claim::default()
    };
    match h.of.strip_prefix("wal/") {
        Some(system) => {
            c.kind = Some(Kind::Postgres);
            match system.parse() {
                Ok(s) => c.postgres_system = Some(s),
                Err(_) => c.unreadable = Some("PostgreSQL system identifier"),
            }
        }
        None => match Kind::parse(&h.of) {
            Some(k) => c.kind = Some(k),
            None => c.unreadable = Some("kind"),
        },
    }
    c
}

/// Reads `key` as a head of `of`: `Ok(None)` when it is not believed, with
/// the reason in `ignored`.
fn read(
    store: &dyn Store,
    trust: &Trust,
    key: &str,
    of: &str,
    ignored: &mut Vec<String>,
) -> Result<Option<Head>> {
    let what = format!("head {} in {}", crate::ui::printable(key), store.identity());
    // A marker that cannot be read is the store's problem, not this head's:
    // it must not turn a rollback's alarm into a warning.
    trust.binding()?;
    let opened = store
        .get_at_most(key, crate::limits::HEAD)
        .and_then(|bytes| parse(&bytes, key, of, trust, &what));
    match opened {
        Ok(h) => Ok(Some(h)),
        Err(e) if crate::exit::classify(&e) == Some(Code::Transient) => Err(e),
        Err(e) => {
            ignored.push(format!("{e:#}; it is ignored"));
            Ok(None)
        }
    }
}

/// The heads of `kind` recorded after `newest` (the newest backup of the kind
/// a listing shows; `None`: none), up to `until` when given: one listing,
/// empty when nothing was lost. A believed head whose manifest the store
/// still holds (stored after the listing) is no loss.
pub fn beyond(
    store: &dyn Store,
    trust: &Trust,
    kind: Kind,
    newest: Option<BackupId>,
    until: Option<OffsetDateTime>,
) -> Result<Beyond> {
    let prefix = kind_prefix(kind);
    let after = match newest {
        Some(id) => format!("{prefix}{id}.json"),
        None => prefix.clone(),
    };
    let mut listed: Vec<(BackupId, String)> = store
        .list_after(&prefix, &after)?
        .into_iter()
        .filter_map(|o| {
            let id: BackupId = o
                .key
                .strip_prefix(&prefix)?
                .strip_suffix(".json")?
                .parse()
                .ok()?;
            let t = id.timestamp()?;
            until.is_none_or(|u| t <= u).then_some((id, o.key))
        })
        .collect();
    listed.sort();
    let mut found = Beyond::default();
    let skipped = listed.len().saturating_sub(MAX_READ);
    for (id, key) in listed.into_iter().rev().take(MAX_READ) {
        let Some(h) = read(store, trust, &key, kind.as_str(), &mut found.ignored)? else {
            continue;
        };
        if store.head(&super::manifest_key(kind, id))?.is_none() {
            found.lost = Some((key, h));
            return Ok(found);
        }
    }
    if skipped > 0 {
        found.ignored.push(format!(
            "{skipped} more heads of {} newer than its newest backup were not read",
            kind.as_str()
        ));
    }
    Ok(found)
}

/// [`beyond`] as a refusal: a [`Code::Rollback`] error naming the lost head,
/// the newest listed backup and what to do; heads not believed are warned
/// about.
pub fn refuse_lost(
    store: &dyn Store,
    trust: &Trust,
    kind: Kind,
    newest: Option<&Manifest>,
    until: Option<OffsetDateTime>,
) -> Result<()> {
    let found = beyond(store, trust, kind, newest.map(|m| m.id), until)?;
    for w in &found.ignored {
        crate::ui::log(crate::ui::Priority::Warning, &format!("bkp: warning: {w}"));
    }
    match found.lost {
        None => Ok(()),
        Some((key, h)) => Err(lost_error(store, kind, newest, &key, &h)),
    }
}

/// For `status` and `verify`: whether the store lost backups of `kind`
/// beyond `newest` (the newest it lists), as the error [`refuse_lost`]
/// gives. The newest listed is checked to be still stored (a catalog may
/// hold a manifest deleted behind it): one HEAD, and one LIST.
pub fn lost(
    store: &dyn Store,
    trust: &Trust,
    kind: Kind,
    newest: Option<&Manifest>,
) -> Result<Option<anyhow::Error>> {
    let gone = match newest {
        Some(m) => store.head(&m.key())?.is_none(),
        None => false,
    };
    let complete;
    let newest = if gone {
        complete = super::list_complete(store, trust, Some(kind))?.0;
        complete.last()
    } else {
        newest
    };
    Ok(refuse_lost(store, trust, kind, newest, None).err())
}

/// With a `[ledger]`: whether the newest backup of `kind` the ledger records
/// as stored in `store` (its code-12 transfer) is newer than `newest` (the
/// newest the store shows) and gone, not deleted by `cleanup` (no reversal).
/// A ledger that does not answer is no finding: the caller warns. One ledger
/// request, and a HEAD and a lookup only when the ledger knows a newer one.
pub fn ledger_lost(
    cfg: &crate::ledger::LedgerConfig,
    store: &dyn Store,
    kind: Kind,
    newest: Option<&Manifest>,
) -> Result<Option<anyhow::Error>> {
    use crate::ledger;
    let account = ledger::store_account_id(&store.identity());
    let Some(t) = ledger::newest_stored(cfg, ledger::source_account_id(kind), account)? else {
        return Ok(None);
    };
    let id = BackupId::from_u128(t.id);
    if newest.is_some_and(|m| m.id >= id) || store.head(&super::manifest_key(kind, id))?.is_some() {
        return Ok(None);
    }
    if ledger::lookup(cfg, ledger::cleanup_transfer_id(t.id))?.is_some() {
        return Ok(None);
    }
    let h = Head {
        schema: SCHEMA.into(),
        of: kind.as_str().into(),
        head: id.to_string(),
        host: "the ledger".into(),
        recorded_at: OffsetDateTime::from_unix_timestamp_nanos(i128::from(t.timestamp))
            .unwrap_or(OffsetDateTime::UNIX_EPOCH),
        store: None,
    };
    let key = format!("code-12 transfer {:032x}", t.id);
    Ok(Some(lost_error(store, kind, newest, &key, &h)))
}

/// The error for a store that lost backup `h` of `kind`, recorded at `key`.
pub fn lost_error(
    store: &dyn Store,
    kind: Kind,
    newest: Option<&Manifest>,
    key: &str,
    h: &Head,
) -> anyhow::Error {
    let at = crate::units::rfc3339;
    let listed = match newest {
        Some(m) => format!(
            "the newest {} backup it shows is {} (started {})",
            kind.as_str(),
            m.id,
            at(m.started_at)
        ),
        None => format!("it shows no {} backup at all", kind.as_str()),
    };
    coded(
        Code::Rollback,
        format!(
            "{} has lost backups: bkp recorded {} backup {} as stored ({key}, by {} at {}), but {listed}. Its manifests were deleted or hidden (a rolled-back bucket, S3 delete markers: `bkp verify` names them under Object Lock). Find out who deleted them before trusting the store; to use an older backup anyway, name it (`bkp restore ID`) or pass --at TIME",
            store.identity(),
            kind.as_str(),
            crate::ui::printable(&h.head),
            crate::ui::printable(&h.host),
            at(h.recorded_at)
        ),
    )
}

/// For WAL file `name` of `system`, which the archive does not hold: the
/// newest believed head at or after it on its timeline, which makes its
/// absence a gap. One listing, and usually nothing after it to read.
pub fn wal_beyond(
    store: &dyn Store,
    trust: &Trust,
    system: u64,
    name: &str,
) -> Result<(Option<Head>, Vec<String>)> {
    use super::wal::{parse_name, FileKind};
    let mut ignored = Vec::new();
    let Some(w) = parse_name(name).filter(|w| w.kind == FileKind::Segment) else {
        return Ok((None, ignored));
    };
    let prefix = wal_prefix(system);
    let mut later: Vec<String> = store
        .list_after(&prefix, &format!("{prefix}{name}"))?
        .into_iter()
        .map(|o| o.key)
        .filter(|k| {
            k.strip_prefix(&prefix)
                .and_then(|r| r.strip_suffix(".json"))
                .and_then(parse_name)
                .is_some_and(|h| {
                    h.kind == FileKind::Segment
                        && h.timeline == w.timeline
                        && h.position >= w.position
                })
        })
        .collect();
    later.sort();
    let of = format!("wal/{system}");
    for key in later.iter().rev().take(MAX_READ) {
        if let Some(h) = read(store, trust, key, &of, &mut ignored)? {
            return Ok((Some(h), ignored));
        }
    }
    Ok((None, ignored))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::tests::sample;
    use crate::store::memory::MemoryStore;

    fn keys(byte: u8) -> crate::crypto::Keyring {
        crate::crypto::Keyring::new(crate::crypto::MasterKey::from_bytes([byte; 32]), Vec::new())
    }

    #[test]
    fn a_lost_backup_is_found_by_one_listing_past_the_newest() {
        let store = MemoryStore::new();
        let trust = Trust::new(Some(keys(7)), None, Vec::new());
        let t0 = OffsetDateTime::now_utc() - time::Duration::hours(3);
        let ms: Vec<Manifest> = (0..3)
            .map(|i| sample(Kind::Tigerbeetle, t0 + time::Duration::hours(i)))
            .collect();
        for m in &ms {
            crate::manifest::write(&store, m, trust.keys()).unwrap();
            advance(&store, &trust, m).unwrap();
        }
        let none = beyond(&store, &trust, Kind::Tigerbeetle, Some(ms[2].id), None).unwrap();
        assert!(none.lost.is_none() && none.ignored.is_empty());
        // Still stored: newer than a stale listing, not lost.
        let stale = beyond(&store, &trust, Kind::Tigerbeetle, Some(ms[0].id), None).unwrap();
        assert!(stale.lost.is_none());
        store.delete(&ms[2].key()).unwrap();
        let lost = beyond(&store, &trust, Kind::Tigerbeetle, Some(ms[1].id), None).unwrap();
        assert_eq!(lost.lost.unwrap().1.head, ms[2].id.to_string());
        // Up to a time before it, nothing is lost.
        let until = Some(ms[1].started_at + time::Duration::minutes(1));
        let early = beyond(&store, &trust, Kind::Tigerbeetle, Some(ms[1].id), until).unwrap();
        assert!(early.lost.is_none());
        let e = refuse_lost(&store, &trust, Kind::Tigerbeetle, Some(&ms[1]), None).unwrap_err();
        assert_eq!(crate::exit::classify(&e), Some(Code::Rollback));
        // Another key's heads, or none, are not believed.
        let other = Trust::new(Some(keys(8)), None, Vec::new());
        let found = beyond(&store, &other, Kind::Tigerbeetle, Some(ms[1].id), None).unwrap();
        assert!(
            found.lost.is_none() && found.ignored.len() == 1,
            "{found:?}"
        );
    }

    #[test]
    fn wal_heads_are_recorded_now_and_then_and_found_on_their_timeline() {
        assert_eq!(
            wal_due("000000010000000000000040").as_deref(),
            Some("000000010000000000000040")
        );
        assert_eq!(wal_due("000000010000000000000041"), None);
        assert_eq!(
            wal_due("000000010000000000000003.00000028.backup").as_deref(),
            Some("000000010000000000000003")
        );
        assert_eq!(wal_due("00000002.history"), None);
        let store = MemoryStore::new();
        let trust = Trust::new(Some(keys(7)), None, Vec::new());
        advance_wal(&store, &trust, 42, "000000010000000000000040").unwrap();
        advance_wal(&store, &trust, 42, "000000010000000000000040").unwrap();
        let at = |n: &str| wal_beyond(&store, &trust, 42, n).unwrap().0;
        assert!(at("00000001000000000000003F").is_some());
        assert!(at("000000010000000000000040").is_some());
        assert!(at("000000010000000000000041").is_none());
        assert!(at("00000002000000000000003F").is_none());
        assert!(wal_beyond(&store, &trust, 43, "00000001000000000000003F")
            .unwrap()
            .0
            .is_none());
    }

    #[test]
    fn a_signers_head_counts_only_within_its_scope() {
        let (host, reader, _) = crate::manifest::seal::tests::host_and_scoped_reader();
        let trust = Trust::new(Some(reader), None, Vec::new());
        let at = OffsetDateTime::now_utc();
        let id = BackupId::new_v7(at).to_string();
        let segment = "000000010000000000000040";
        let cases = [
            ("wal/11".to_string(), segment, "pg2", true),
            ("wal/12".to_string(), segment, "pg2", false),
            ("wal/11".to_string(), segment, "pg3", false),
            ("postgres".to_string(), id.as_str(), "pg2", true),
            ("tigerbeetle".to_string(), id.as_str(), "pg2", false),
        ];
        for (of, head, by, inside) in cases {
            let h = Head {
                schema: SCHEMA.into(),
                of: of.clone(),
                head: head.into(),
                host: by.into(),
                recorded_at: at,
                store: None,
            };
            let bytes = seal::encode(&h, Some(&host)).unwrap();
            let key = match of.strip_prefix("wal/") {
                Some(system) => format!("{}{head}.json", wal_prefix(system.parse().unwrap())),
                None => format!("{}{head}.json", kind_prefix(Kind::parse(&of).unwrap())),
            };
            let got = parse(&bytes, &key, &of, &trust, "head");
            assert_eq!(got.is_ok(), inside, "{of} by {by}: {got:?}");
            if !inside {
                let e = got.unwrap_err();
                assert_eq!(crate::exit::classify(&e), Some(Code::Integrity));
            }
        }
    }
}
