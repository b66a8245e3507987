//! What a read of a catalog does with each entry of its base, as the base is
//! parsed ([`super::doc`]).
//!
//! A run that adds to the catalog ([`Pass::holding`]) holds every entry; one
//! that writes a new base from the entries a read handed out
//! ([`Pass::feeding`]) gives each to the base being written as it is
//! parsed, and holds none. A [`super::fold`] ([`Pass::reading`]) hands the caller at once each entry
//! that nothing later in the read can change, and holds only the others:
//! those the listing checks (younger than the catalog's time minus
//! [`super::WINDOW`]), which are handed out at the end. A complete read
//! lists every key before the base is read, and holds only the entries that
//! listing does not show as they were cached. Entries a delta removes or replaces are passed
//! over (the delta's versions are used), and entries to read again from
//! their keys are named for [`super::fold`] to read. The caller gets each
//! manifest once, with the same trust applied as to one read from its key
//! ([`crate::manifest::admit`]).
//!
//! A base that fails part way (damaged, or not bkp's) is dropped: the pass
//! starts again on the next object tried, and tells the caller to forget
//! what it was handed (`None`).

use std::collections::BTreeSet;

use time::OffsetDateTime;

use super::ids::Ids;
use super::listing::Listing;
use super::{minor_of, window_after, Depth, Entry, Tagger, SCHEMA, SCHEMA_MINOR, SCHEMA_V1};
use crate::exit::classify;
use crate::id::BackupId;
use crate::manifest::{admit, seal, Kind, Manifest, Trust, Unreadable};

/// What a document says it is: the members before its entries.
#[derive(Debug, Default, Clone)]
pub(super) struct Head {
    pub schema: Option<String>,
    pub kind: Option<Kind>,
    pub seq: Option<u64>,
    pub base: Option<u64>,
    pub written_at: Option<OffsetDateTime>,
    pub understands: u32,
}

/// Where a caller of [`super::fold`] takes each manifest, oldest id first as
/// far as the base goes (then those the read held, in no order); `None`:
/// forget every manifest taken so far. When the fold returns an error, what
/// it handed out is not a picture of the store: the caller drops it.
pub type Sink<'a> = dyn FnMut(Option<Manifest>) + 'a;

/// See [`Pass::feeding`].
pub(super) type Feed<'a> = dyn FnMut(Option<Entry>) + 'a;

/// See the module documentation.
pub(super) struct Pass<'a> {
    kind: Kind,
    reader: Option<Reader<'a>>,
    /// The object being read: its number, and for a base read under a
    /// delta, the ids that delta removes or carries, its time and whether
    /// another host's signer tagged it.
    seq: u64,
    skip: BTreeSet<BackupId>,
    delta: Option<(OffsetDateTime, bool)>,
    /// What the base held: every id in it (not for a feeding pass), and
    /// those cached by a bkp that understood less of their schema than this
    /// one.
    pub base_ids: Ids,
    pub recheck: BTreeSet<BackupId>,
    /// The entries the state holds, in order of id.
    pub held: Vec<Entry>,
    /// Which entries a holding or feeding pass takes (all, without it).
    only: Option<&'a dyn Fn(BackupId) -> bool>,
    /// Where a feeding pass puts what it would hold, as it is parsed
    /// (`None`: forget what was fed, the object failed part way).
    feed: Option<&'a mut Feed<'a>>,
    /// The key after which the listing checks manifests, once the base's
    /// head was read (`Some(None)`: every key).
    after: Option<Option<String>>,
    understands: u32,
    last: Option<BackupId>,
    /// Why the base was refused, for the warning.
    pub failed: Option<String>,
}

struct Reader<'a> {
    trust: &'a Trust,
    depth: Depth,
    /// Every manifest key, listed before the base was read (a complete
    /// read): an entry the listing shows as it was cached is handed out at
    /// once. With the key after which the keys are listed again once the
    /// base is read: an entry before it that the listing does not show was
    /// deleted, and is dropped at once (a cleanup of years of history reads
    /// hundreds of thousands of them).
    listing: Option<(&'a Listing, &'a str)>,
    /// Whether any entry was so dropped: the catalog is written again.
    dropped: bool,
    handed: Ids,
    again: Vec<String>,
    bad: Vec<Unreadable>,
    sink: &'a mut Sink<'a>,
}

/// What a reading pass handed out and named, for [`super::fold`].
pub(super) struct Read {
    /// See [`Pass::after`]; `None`: no base entries were read.
    pub after: Option<Option<String>>,
    pub handed: Ids,
    pub again: Vec<String>,
    pub bad: Vec<Unreadable>,
    /// See [`Reader::dropped`].
    pub dropped: bool,
}

impl<'a> Pass<'a> {
    /// A pass that holds every entry.
    pub fn holding(kind: Kind) -> Pass<'a> {
        Pass {
            kind,
            reader: None,
            seq: 0,
            skip: BTreeSet::new(),
            delta: None,
            base_ids: Ids::default(),
            recheck: BTreeSet::new(),
            held: Vec::new(),
            only: None,
            feed: None,
            after: None,
            understands: 0,
            last: None,
            failed: None,
        }
    }

    /// A pass that gives `feed` each entry `only` picks as it is parsed,
    /// holding none: a base read back to be written again as it is read.
    pub fn feeding(
        kind: Kind,
        only: &'a dyn Fn(BackupId) -> bool,
        feed: &'a mut Feed<'a>,
    ) -> Pass<'a> {
        Pass {
            only: Some(only),
            feed: Some(feed),
            ..Pass::holding(kind)
        }
    }

    /// A pass that hands what it can to `sink` (see the module documentation),
    /// checking entries against `listing` where every key was listed first
    /// (see [`Reader::listing`]).
    pub fn reading(
        kind: Kind,
        trust: &'a Trust,
        depth: Depth,
        listing: Option<(&'a Listing, &'a str)>,
        sink: &'a mut Sink<'a>,
    ) -> Pass<'a> {
        Pass {
            reader: Some(Reader {
                trust,
                depth,
                listing,
                dropped: false,
                handed: Ids::default(),
                again: Vec::new(),
                bad: Vec::new(),
                sink,
            }),
            ..Pass::holding(kind)
        }
    }

    /// Before object number `seq` is read: a base read under a delta is
    /// read with the delta's removals, entries, time and tagger.
    pub fn prepare(&mut self, seq: u64, delta: Option<(&super::Doc, &Tagger)>) {
        self.reset();
        self.seq = seq;
        self.skip = delta
            .map(|(d, _)| {
                d.removed
                    .iter()
                    .copied()
                    .chain(d.entries.iter().map(|e| e.manifest.id))
                    .collect()
            })
            .unwrap_or_default();
        self.delta = delta.map(|(d, t)| (d.written_at, matches!(t, Tagger::Signer(_))));
    }

    /// Forgets what the object read so far gave (it failed), and tells the
    /// caller to forget what it was handed.
    pub fn reset(&mut self) {
        self.base_ids.clear();
        self.recheck.clear();
        self.held.clear();
        self.after = None;
        self.understands = 0;
        if self.last.is_some() {
            if let Some(feed) = &mut self.feed {
                feed(None);
            }
        }
        self.last = None;
        if let Some(r) = &mut self.reader {
            let handed = !r.handed.is_empty() || !r.bad.is_empty();
            // What the next object tried drops is what changes the catalog.
            r.dropped = false;
            r.handed.clear();
            r.again.clear();
            r.bad.clear();
            if handed {
                (r.sink)(None);
            }
        }
    }

    /// The base's head was read (`tagger` tagged it): it must be the object
    /// asked for, and says from where the listing checks manifests.
    pub fn begin(&mut self, head: &Head, tagger: &Tagger) -> Result<(), String> {
        let fail = |p: &mut Pass, detail: &str| {
            p.failed = Some(detail.to_string());
            Err(detail.to_string())
        };
        let schema_ok = matches!(head.schema.as_deref(), Some(SCHEMA) | Some(SCHEMA_V1));
        if !schema_ok || head.kind != Some(self.kind) || head.seq != Some(self.seq) {
            return fail(self, "it names another schema, kind or number than its key");
        }
        let Some(base_at) = head.written_at else {
            return fail(self, "its entries come before its time");
        };
        self.understands = head.understands;
        let (written_at, delta_signed) = match self.delta {
            Some((t, signed)) => (t, signed),
            None => (base_at, false),
        };
        let unchecked = delta_signed || matches!(tagger, Tagger::Signer(_));
        let written_at = written_at.min(OffsetDateTime::now_utc());
        self.after = Some(match &self.reader {
            Some(r) => window_after(self.kind, r.depth, Some(written_at), unchecked),
            None => None,
        });
        Ok(())
    }

    /// Entry `e` of the base, which `tagger` tagged.
    pub fn entry(&mut self, tagger: &Tagger, e: Entry) -> Result<(), String> {
        let id = e.manifest.id;
        if self.last.is_some_and(|l| l >= id) {
            self.failed = Some("its entries are not in order of id".into());
            return Err("its entries are not in order of id".into());
        }
        self.last = Some(id);
        // A feeding pass's base is being written again: its ids are known.
        if self.feed.is_none() {
            self.base_ids.insert(id);
        }
        // Cached by a bkp that understood less of the entry's schema.
        #[allow(clippy::absurd_extreme_comparisons)]
        // SCHEMA_MINOR is 0 until the first minor bump
        let outdated = minor_of(&e.manifest) > self.understands && SCHEMA_MINOR > self.understands;
        if outdated {
            self.recheck.insert(id);
        }
        // Only what its tagger vouches for (the rest is read again), and not
        // what the delta removed or carries a version of.
        if !tagger.vouches_for(self.kind, &e) || self.skip.contains(&id) {
            return Ok(());
        }
        let Some(r) = &mut self.reader else {
            if self.only.is_none_or(|only| only(id)) {
                match &mut self.feed {
                    Some(feed) => feed(Some(e)),
                    None => self.held.push(e),
                }
            }
            return Ok(());
        };
        let key = e.manifest.key();
        if let Some((listing, relisted)) = r.listing {
            if key.as_str() <= relisted && listing.get(&key).is_none() {
                r.dropped = true;
                return Ok(());
            }
        }
        if stale(r.trust, &e, outdated) {
            r.again.push(key);
            return Ok(());
        }
        let checked = match &self.after {
            Some(Some(a)) => key > *a,
            _ => true,
        };
        // Listed already, as it was cached: nothing later changes it.
        let confirmed = r.listing.is_some_and(|(l, _)| {
            l.get(&key)
                .is_some_and(|now| e.stored.as_ref().is_some_and(|s| s.is(&now)))
        });
        if checked && !confirmed {
            self.held.push(e);
            return Ok(());
        }
        r.handed.insert(id);
        match admit(
            &e.manifest,
            e.sealer.as_deref().filter(|_| e.sealed),
            r.trust,
        ) {
            Ok(()) => (r.sink)(Some(e.manifest)),
            Err(err) => r.bad.push(Unreadable {
                key: e.manifest.key(),
                error: format!("{err:#}"),
                code: classify(&err),
            }),
        }
        Ok(())
    }

    /// What a reading pass handed out and named.
    pub fn finish(self) -> Read {
        match self.reader {
            Some(r) => Read {
                after: self.after,
                handed: r.handed,
                again: r.again,
                bad: r.bad,
                dropped: r.dropped,
            },
            None => Read {
                after: None,
                handed: Ids::default(),
                again: Vec::new(),
                bad: Vec::new(),
                dropped: false,
            },
        }
    }
}

/// Whether entry `e` is read again from its key whatever the listing says:
/// sealed by a key or signer no longer configured (it is then refused as the
/// manifest itself is), cached by a bkp that understood less of it
/// (`outdated`), cached unsealed (used only if a sealed list records it), or
/// chunked without its chunks (a catalog an older bkp rewrote).
pub(super) fn stale(trust: &Trust, e: &Entry, outdated: bool) -> bool {
    outdated
        || (e.sealed && !seal::sealer_known(trust, e.sealer.as_deref()))
        || (trust.checks() && !e.sealed)
        || crate::manifest::lacks_chunks(&e.manifest)
}
