//! Replay: the rows of a chain of segments, recreated in timestamp order in
//! another cluster.
//!
//! # Replay
//!
//! [`replay`] (or [`replay_on`], or a [`Replay`] handed one segment at a time, all
//! through one client session) targets a fresh cluster, or a just-restored
//! quiescent one (nothing else may write to it meanwhile). It first asks for the
//! target's newest account and newest transfer (the same two `REVERSED` queries),
//! once for the whole chain, then reads the segments in order and:
//! - requires them to chain without gaps from the target's newest timestamp (a
//!   segment's `after` must not exceed what is already covered);
//! - for events the target already holds (timestamp ≤ its newest of the event's kind,
//!   or its newest row for an expiry: an imported row may lie below the other kind's
//!   newest), looks them up in
//!   batches and requires them present with the same fields (modulo the `imported` bit,
//!   `timeout` and an account's `closed` flag and balances): so replaying the same
//!   segments again, or resuming after an interruption, is harmless and checked, and a
//!   target that is not a restore of this source is refused;
//! - replays events with timestamp ≤ `up_to` in timestamp order with `flags.imported`
//!   and the original timestamp, accounts and transfers in separate requests as
//!   large as the target takes (8189 events at TigerBeetle's default request limit,
//!   253 on a `--development` replica: [`batch_limit`] asks the client), never
//!   splitting a linked chain (a chain longer than that is sent whole: it fit into
//!   one request of the source);
//! - treats `exists` as success only after checking the existing row's timestamp
//!   (TigerBeetle's `exists` compares the fields but not the timestamp);
//! - stops at the first other result with an error naming the event's id, timestamp
//!   and TigerBeetle's result code. Events after it in the same request (not linked to
//!   it) may have been created, so after such an error restore again into a fresh
//!   cluster; a resume would detect the gap through the lookups above.
//!
//! Each segment's events are sent (and the ones the target holds checked) before
//! the next segment is read, but for the head of a linked chain that continues in
//! it.
//!
//! One create request is in flight while the next batch is read and decoded (a
//! session carries one request at a time, so the cluster applies them in order):
//! its answer is checked before any other request is sent, and [`Replay::finish`]
//! checks the last one. Reading thus overlaps the cluster's work on the request
//! before. A rejected event therefore stops the replay one batch later than it
//! was sent, with nothing more sent; an error met meanwhile (the next segment
//! damaged or missing, say) waits for that answer, and a rejection in it is
//! reported with it ([`Replay::first_error`]).
//!
//! A linked chain is atomic in the source, so a chain that straddles `up_to` is not
//! replayed at all ([`ReplayStats::chain_events_dropped`]). Events are applied as they
//! are read, before a segment's trailer is checked: a corrupt segment stops the
//! replay with an Integrity error after earlier events were created. Check segments
//! with [`verify_segment`](super::verify_segment) first when that matters.
//!
//! # What replay cannot reproduce, and what happens instead
//!
//! - **The `imported` bit.** Every replayed account and transfer has
//!   `flags.imported` set (TigerBeetle requires it to accept a timestamp); all other
//!   fields, including the timestamp, are the source's.
//! - **Timeouts.** Imported pending transfers must have `timeout = 0`, so replay
//!   clears it ([`ReplayStats::timeouts_cleared`]). Such a transfer never expires in
//!   the target; it stays pending until posted or voided by hand.
//! - **Expiry.** An expiry in the source creates no row; version 2 segments record it
//!   from the cluster's change events, with its own timestamp. TigerBeetle cannot
//!   import an expiry, so replay creates, at exactly that timestamp, an imported
//!   *void* of the pending transfer: it releases the same amounts from the same two
//!   accounts and reopens an account a closing pending transfer had closed, as the
//!   expiry did, so every balance at every timestamp is the source's. What differs:
//!   the target holds one more transfer, with the id [`expiry_void_id`] derives from
//!   the pending transfer's id, `flags.void_pending_transfer | flags.imported`, and
//!   ledger, code, accounts, amount and user data (TigerBeetle copies it) taken from
//!   the pending transfer; the pending transfer's status is `voided`, not `expired`;
//!   and a `flags.history` account has one more historical balance, the void's
//!   (TigerBeetle keeps none for an expiry). A pending transfer the target holds from
//!   a restored snapshot with a
//!   live timeout is expired by the target's own clock; TigerBeetle then answers the
//!   void with `pending_transfer_expired`, which for an expiry means the target has
//!   released the same amounts ([`ReplayStats::expiries_by_target`]).
//!   Segments of format version 1 (earlier releases) hold no expiries: a pending
//!   transfer that expired in the source within them is replayed as pending (its
//!   amount stays reserved). Replay reports those whose `timestamp + timeout` ≤ the
//!   newest replayed point in [`ReplayStats::expired_in_source`] and the others in
//!   [`ReplayStats::timeout_cleared`]; [`ReplayStats::expired_by`] answers for a later
//!   restore point. Later events that relied on the released amount cannot be
//!   replayed exactly: a transfer checked against a balance limit fails
//!   (`exceeds_credits`/`exceeds_debits`), a transfer to an account reopened by expiry
//!   fails (`*_already_closed`) — both stop the replay with an error that names the
//!   expired pending transfers — and a balancing transfer would move less, which
//!   replay detects by looking up every replayed balancing transfer and comparing
//!   amounts.
//! - **Balancing transfers** are stored with the amount actually moved; replayed
//!   with that amount as the maximum and the same prior state, TigerBeetle moves
//!   exactly it (checked, see above). Posts with `amount = AMOUNT_MAX` are stored with
//!   the resolved amount and replay as such.
//! - **Closed accounts**: created closed → replayed closed (imported accounts may be
//!   created closed); closed by a closing transfer → created open and closed by
//!   replaying that transfer (imported pending transfers may carry `closing_*`), and
//!   reopened by replaying its void. A point in time before the closing transfer
//!   therefore shows the account open, as the source did.
//! - **Snapshots holding pending transfers with a timeout.** A restored data file
//!   keeps such rows non-imported with their timeout. The restored replica's clock is
//!   past their expiry, so it expires them as soon as it runs, including those the
//!   source posted or voided in time (those posts are in later segments), and at
//!   points before their expiry the target shows them released. TigerBeetle 0.16.78
//!   cannot accept the imported post or void of such a transfer: sending one was seen
//!   to crash the replica (`panic: reached unreachable code`, from an assertion that
//!   an expired transfer's expiry precedes the post). Replay therefore checks each
//!   post/void whose pending transfer it did not create in this run (from the rows it
//!   verified, or by lookup) and refuses, before sending anything of that request,
//!   when the target holds the pending transfer with a live timeout that is due or
//!   due within a minute. Restore from a snapshot older than that pending transfer,
//!   or replay all segments into a fresh cluster.
//! - **Balances history** (`flags.history`) is rebuilt by the replayed transfers with
//!   the original timestamps, expiries included (as voids, see above).
//!
//! Memory: replay keeps two batches (the one in flight, as events and as rows, and
//! the one being read), one lookup batch, and the id, timestamp and timeout of
//! every pending transfer not yet posted or voided (about 50 bytes each).
//!
//! Imported batches are not submitted as linked chains (TigerBeetle's suggestion to
//! keep the last timestamp unchanged on failure): that would change the rows' stored
//! `linked` flag, and a rejection stops the replay anyway.

use std::collections::HashMap;
use std::io::Read;
use std::time::SystemTime;

use anyhow::{bail, Context, Result};
use tigerbeetle_unofficial::{Account, Transfer};

use super::segment::{AccountRecord, Event, Expiry, Kind, SegmentReader};
use super::{newest_rows, with_client, ClusterConfig, Watermark};
use super::{
    ACCOUNT_CLOSED, ACCOUNT_IMPORTED, TRANSFER_BALANCING, TRANSFER_IMPORTED, TRANSFER_PENDING,
    TRANSFER_POST, TRANSFER_VOID,
};
use crate::exit::{coded, Code};
use crate::tigerbeetle::client::{Client, InFlight, Rejection};
use crate::units::count;
use tigerbeetle_unofficial::error::{CreateAccountErrorKind, CreateTransferErrorKind};

/// The most events one request carries at TigerBeetle's default request limit
/// (1 MiB), the largest it allows.
pub const BATCH: usize = 8189;

/// The most events one request carries at a `--development` replica's default
/// request limit (32 KiB).
const DEVELOPMENT_BATCH: usize = 253;

/// The most accounts or transfers one request to `c`'s cluster takes. The
/// client knows the cluster's request limit (`--limit-request`: 1 MiB by
/// default, 32 KiB on a `--development` replica) and refuses a larger batch
/// before sending anything, so batches of all-zero transfers are tried,
/// [`BATCH`] first (one request where the limit is the default), then a
/// development replica's 253, then bisecting: a refused one is not sent, and one
/// sent creates
/// nothing (TigerBeetle refuses every event of it, `id_must_not_be_zero`).
/// Lookups are no probe: their bound counts 16-byte ids against the request
/// and 128-byte rows against the reply, which allows as many (at 1 MiB) or more.
pub fn batch_limit(c: &Client) -> Result<usize> {
    let fits = |n: usize| -> Result<bool> {
        let refused = Transfer::from_raw(tigerbeetle_unofficial::transfer::Raw {
            id: 0,
            debit_account_id: 0,
            credit_account_id: 0,
            amount: 0,
            pending_id: 0,
            user_data_128: 0,
            user_data_64: 0,
            user_data_32: 0,
            timeout: 0,
            ledger: 0,
            code: 0,
            flags: 0,
            timestamp: 0,
        });
        let rows = vec![refused; n];
        match c.create_transfers(rows) {
            Ok(refused) if refused.len() == n => Ok(true),
            Ok(refused) => bail!(
                "the cluster at {} created {} of {n} transfers with id 0 that it must refuse: \
                 it is not a TigerBeetle cluster bkp can replay into",
                c.addresses(),
                n - refused.len()
            ),
            Err(e) if crate::tigerbeetle::client::is_too_much_data(&e) => Ok(false),
            Err(e) => Err(e),
        }
    };
    if fits(BATCH)? {
        return Ok(BATCH);
    }
    // A `--development` replica's default next; a refused batch is not sent,
    // so bisecting above it costs no request.
    let (mut lo, mut hi) = match fits(DEVELOPMENT_BATCH)? {
        true => (DEVELOPMENT_BATCH, BATCH),
        false => (1, DEVELOPMENT_BATCH),
    };
    while hi - lo > 1 {
        let mid = lo + (hi - lo) / 2;
        if fits(mid)? {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    Ok(lo)
}
/// A pending transfer whose live timeout falls due within this margin counts as due.
const EXPIRY_MARGIN_NS: u64 = 60_000_000_000;
const NS_PER_S: u64 = 1_000_000_000;

/// Replay met a post or void of a pending transfer that the target holds from a
/// restored snapshot with a live timeout, due by the target's clock: the target
/// expires it, so the source's state cannot be reproduced from that snapshot.
#[derive(Debug)]
pub struct LiveTimeout {
    pub pending_id: u128,
    message: String,
}

impl std::fmt::Display for LiveTimeout {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for LiveTimeout {}

/// A pending transfer whose timeout replay had to clear.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PendingTimeout {
    pub id: u128,
    pub timestamp: u64,
    /// Seconds, as in the source.
    pub timeout: u32,
    /// `timestamp + timeout`: when the source expires it.
    pub expires_at: u64,
}

/// What [`replay`] did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ReplayStats {
    /// The target's newest timestamp before the replay (0: it was empty).
    pub newest_before: u64,
    /// The source cluster of the segments (0 when none was read).
    pub source_cluster_id: u128,
    pub segments: u64,
    pub accounts: u64,
    pub transfers: u64,
    /// Events the target already held, looked up and found equal.
    pub skipped_verified: u64,
    /// Events seen again in overlapping segments, ignored.
    pub duplicates: u64,
    /// Events of a linked chain that straddles `up_to`, not replayed.
    pub chain_events_dropped: u64,
    /// Timestamp of the last replayed event (`newest_before` when none).
    pub last_timestamp: u64,
    /// The target now reflects the source at this timestamp: `up_to`, or less when the
    /// segments end earlier.
    pub covered_until: u64,
    pub batches: u64,
    /// Seconds during which a create request was at the cluster: from each
    /// one sent until its answer was taken (the cluster's time, or a little
    /// more where an answer waited for the reading of the next batch).
    pub in_flight_seconds: f64,
    /// Seconds spent, once every request was answered, making sure the target
    /// holds no row but the replay's.
    pub checked_seconds: f64,
    /// Requests this replay sent (with [`Replay::start`], its reads of the
    /// target's newest rows too).
    pub requests: u64,
    /// Pending transfers replayed with `timeout` cleared to 0.
    pub timeouts_cleared: u64,
    /// Expiries replayed as voids at their own timestamps.
    pub expiries: u64,
    /// Expiries of pending transfers the target holds from a restored snapshot with
    /// a live timeout and had already expired by its own clock (no void needed): their
    /// ids. The target did so at a later timestamp than the source.
    pub expiries_by_target: Vec<u128>,
    /// Some segments were of format version 1, which holds no expiries.
    pub without_expiries: bool,
    /// The target held rows before the replay and the segments reach back to its
    /// newest one, which was found in them with the same fields. False when the
    /// target was empty, or the segments begin at or after its newest row (the log
    /// that held it was trimmed): then nothing vouched for that row.
    pub newest_row_in_log: bool,
    /// Pending transfers still pending here that the source expired by
    /// `covered_until`: their amounts are still reserved here.
    pub expired_in_source: Vec<PendingTimeout>,
    /// Pending transfers still pending here whose source timeout was cleared (with
    /// version 1 segments: only those due after `covered_until`): they will not
    /// expire here. `covered_until` is the newest
    /// row's timestamp; when the segments are known to reach a later point (the last
    /// capture ran later), use [`ReplayStats::expired_by`] with that point.
    pub timeout_cleared: Vec<PendingTimeout>,
}

impl ReplayStats {
    /// The pending transfers still pending here that the source had expired by
    /// timestamp `t` (pass the restore point when the segments reach it); empty
    /// when the segments record expiries (version 2).
    pub fn expired_by(&self, t: u64) -> Vec<PendingTimeout> {
        if !self.without_expiries {
            // The segments hold every expiry, replayed as such.
            return Vec::new();
        }
        self.expired_in_source
            .iter()
            .chain(&self.timeout_cleared)
            .filter(|p| p.expires_at <= t)
            .copied()
            .collect()
    }
}

/// A pending transfer seen during replay and not yet posted or voided.
#[derive(Debug, Clone, Copy)]
struct Pending {
    timestamp: u64,
    /// Seconds, as in the source.
    source_timeout: u32,
    /// Seconds, as the target holds it (nonzero only for rows of a restored snapshot).
    target_timeout: u32,
}

impl Pending {
    fn expires_at(&self, timeout: u32) -> u64 {
        self.timestamp
            .saturating_add(u64::from(timeout).saturating_mul(NS_PER_S))
    }
}

/// A replay in progress into one cluster, through a session the caller holds.
///
/// The segments come one at a time ([`Replay::segment`], in chain order), as a
/// restore downloads them, and [`Replay::finish`] sends what is left and reports:
/// one session and one read of the target's newest rows for a whole chain
/// (TigerBeetle's client spends about 0.6 s on a new session before its first
/// answer, so a session per segment would cost that per segment). After each
/// segment everything it holds has been sent, except the head of a linked chain
/// that continues in the next one.
pub struct Replay<'c> {
    c: &'c Client,
    up_to: u64,
    /// The target's newest account, transfer and row before the replay.
    newest: Watermark,
    stats: ReplayStats,
    requests_before: u64,
    batch: Vec<Event>,
    /// Events per request ([`batch_limit`]), asked of the target on first use.
    batch_max: Option<usize>,
    kind: Kind,
    chain_open: bool,
    chain_start: usize,
    verify: Vec<Event>,
    pending: HashMap<u128, Pending>,
    /// Everything up to here is accounted for (the target's rows, the segments).
    covered: u64,
    /// The last timestamp of each kind (account, transfer, expiry) seen.
    last_seen: [u64; 3],
    /// The newest expiry seen (replayed as a void, or found in the target) and
    /// its pending transfer: no transfer below it can be replayed any more.
    newest_expiry: Option<(u64, u128)>,
    /// Segments offered so far, for messages.
    offered: usize,
    /// Where the first segment read begins (`after`).
    first_after: Option<u64>,
    /// [`Replay::newest_row_held`] passed.
    newest_checked: bool,
    /// An event past `up_to` was read.
    past_up_to: bool,
    /// No later segment can hold anything wanted.
    done: bool,
    /// The create request in flight, checked before anything else is sent.
    sent: Option<Sent<'c>>,
}

/// A create request sent and not yet answered, with what its answer is
/// checked against.
struct Sent<'c> {
    events: Vec<Event>,
    answer: Answer<'c>,
    /// [`Replay::newest_expiry`] when it was sent.
    newest_expiry: Option<(u64, u128)>,
}

/// The answer to a create request: each event not created, as (index in the
/// request, `exists`, TigerBeetle's name of the result).
fn failures<K>(answer: InFlight<'_, Vec<Rejection<K>>>) -> Result<Vec<(usize, bool, String)>> {
    Ok(answer
        .wait()?
        .into_iter()
        .map(|r| (r.index, r.exists, r.name))
        .collect())
}

/// The rows of a request in flight, and its answer to come.
enum Answer<'c> {
    Accounts(
        Vec<Account>,
        InFlight<'c, Vec<Rejection<CreateAccountErrorKind>>>,
    ),
    Transfers(
        Vec<Transfer>,
        InFlight<'c, Vec<Rejection<CreateTransferErrorKind>>>,
    ),
}

/// Replays `segments` (in chain order) into the cluster `cfg`, up to and including
/// timestamp `up_to`, through a session of its own ([`replay_on`]).
pub fn replay<R, I>(cfg: &ClusterConfig, segments: I, up_to: u64) -> Result<ReplayStats>
where
    R: Read,
    I: IntoIterator<Item = Result<SegmentReader<R>>>,
{
    with_client(cfg, |c| replay_on(c, segments, up_to))
}

/// Replays `segments` (in chain order) through the session `c`, up to and
/// including timestamp `up_to`. See the module documentation for what is checked
/// and what cannot be reproduced, and [`Replay`] to hand segments over one at a
/// time.
pub fn replay_on<R, I>(c: &Client, segments: I, up_to: u64) -> Result<ReplayStats>
where
    R: Read,
    I: IntoIterator<Item = Result<SegmentReader<R>>>,
{
    let mut r = Replay::start(c, up_to)?;
    for (n, seg) in segments.into_iter().enumerate() {
        if !r.wants_more() {
            break;
        }
        match seg.with_context(|| format!("cannot open log segment {}", n + 1)) {
            Ok(seg) => r.segment(seg)?,
            Err(e) => return Err(r.first_error(e)),
        }
    }
    r.finish()
}

impl<'c> Replay<'c> {
    /// Starts a replay through the session `c` up to and including timestamp
    /// `up_to`: reads the target's newest account and transfer (two requests).
    pub fn start(c: &'c Client, up_to: u64) -> Result<Replay<'c>> {
        let before = c.requests();
        // Per kind: an imported row may lie below the other kind's newest.
        let mut r = Replay::with_newest(c, newest_rows(c)?, up_to)?;
        // The two queries count as the replay's.
        r.requests_before = before;
        Ok(r)
    }

    /// As [`Replay::start`], with the target's newest rows already read
    /// ([`newest_rows`](super::newest_rows)) through `c`, on a target nothing has
    /// written rows to since.
    pub fn with_newest(c: &'c Client, target: Watermark, up_to: u64) -> Result<Replay<'c>> {
        let newest = target.after;
        if newest > up_to {
            bail!(
                "the TigerBeetle cluster at {} already holds rows up to timestamp {newest}, \
                 past the requested point {up_to}: restore into a fresh cluster or from an \
                 older snapshot",
                c.addresses()
            );
        }
        Ok(Replay {
            c,
            up_to,
            newest: target,
            stats: ReplayStats {
                newest_before: newest,
                last_timestamp: newest,
                ..ReplayStats::default()
            },
            requests_before: c.requests(),
            batch: Vec::new(),
            batch_max: None,
            kind: Kind::Account,
            chain_open: false,
            chain_start: 0,
            verify: Vec::new(),
            pending: HashMap::new(),
            covered: newest,
            last_seen: [0; 3],
            newest_expiry: None,
            offered: 0,
            first_after: None,
            newest_checked: false,
            past_up_to: false,
            done: false,
            sent: None,
        })
    }

    /// Whether a later segment may still hold events up to `up_to`: false once
    /// a segment reached past it or began at or after it.
    pub fn wants_more(&self) -> bool {
        !self.done
    }

    /// Replays the next segment of the chain (which must continue what is
    /// covered so far), reading it to its trailer.
    pub fn segment<R: Read>(&mut self, seg: SegmentReader<R>) -> Result<()> {
        match self.read_segment(seg) {
            Ok(()) => Ok(()),
            Err(e) => Err(self.first_error(e)),
        }
    }

    /// `e`, met while a request may be in flight, with that request's own
    /// failure, which came first: the answer is waited for either way, so that
    /// a rejection is never hidden by what went wrong after it was sent. The
    /// request's failure decides the exit code; both are said. A caller whose
    /// own step failed between segments passes its error here too.
    pub fn first_error(&mut self, e: anyhow::Error) -> anyhow::Error {
        match self.settle() {
            Ok(()) => e,
            Err(earlier) => earlier.context(format!("{e:#}; and the request sent before failed")),
        }
    }

    fn read_segment<R: Read>(&mut self, mut seg: SegmentReader<R>) -> Result<()> {
        self.offered += 1;
        let h = *seg.header();
        if self.done || h.after >= self.up_to {
            // Nothing in it or after it is wanted.
            self.done = true;
            return Ok(());
        }
        let name = format!("log segment {} ({}, {}]", self.offered, h.after, h.until);
        if self.stats.segments == 0 {
            self.stats.source_cluster_id = h.cluster_id;
        } else if h.cluster_id != self.stats.source_cluster_id {
            return Err(coded(
                Code::Integrity,
                format!(
                    "{name} comes from cluster {:#x}, the previous ones from {:#x}: \
                     segments of different clusters cannot be replayed together",
                    h.cluster_id, self.stats.source_cluster_id
                ),
            ));
        }
        let covered = self.covered;
        if h.after > covered {
            return Err(coded(
                Code::Integrity,
                format!(
                    "{name} does not continue the chain: everything up to timestamp \
                     {covered} is accounted for, so the segments for ({covered}, {}] are \
                     missing",
                    h.after
                ),
            ));
        }
        self.stats.segments += 1;
        self.first_after.get_or_insert(h.after);
        self.stats.without_expiries |= h.version < 2;
        let target = self.newest;
        while let Some(ev) = seg
            .next_event()
            .with_context(|| format!("cannot read {name}"))?
        {
            let ts = ev.timestamp();
            let (seen, held) = match ev {
                Event::Account(_) => (&mut self.last_seen[0], target.accounts),
                Event::Transfer(_) => (&mut self.last_seen[1], target.transfers),
                Event::Expiry(_) => (&mut self.last_seen[2], target.after),
            };
            if ts <= *seen {
                self.stats.duplicates += 1;
                continue;
            }
            *seen = ts;
            if let Event::Expiry(x) = &ev {
                if ts <= self.up_to {
                    self.newest_expiry = Some((ts, x.pending_id));
                }
            }
            if ts <= held {
                self.verify.push(ev);
                // An expiry looks up two transfers: the next one must fit too.
                if 2 * self.verify.len() + 2 > self.batch_max()? {
                    self.verify_held()?;
                }
            } else if ts <= self.up_to {
                if ts > target.after && !self.newest_checked {
                    // Nothing newer than the target's newest row goes in before
                    // that row was found in the log.
                    self.verify_held()?;
                    self.newest_row_held()?;
                    self.newest_checked = true;
                }
                self.push(ev)?;
            } else {
                // Keep reading: the trailer vouches for what was replayed.
                self.past_up_to = true;
            }
        }
        self.covered = covered.max(h.until);
        // What this segment holds is sent before the next one is read (an open
        // linked chain's head waits for its tail); the last request may still be
        // in flight, and is checked before anything else is sent.
        self.verify_held()?;
        let complete = if self.chain_open {
            self.chain_start
        } else {
            self.batch.len()
        };
        self.flush(complete)?;
        self.done |= self.past_up_to;
        Ok(())
    }

    /// Sends what is left and reports. A linked chain that straddles `up_to` is
    /// left out; one the segments end inside is an error.
    pub fn finish(mut self) -> Result<ReplayStats> {
        match self.conclude() {
            Ok(()) => Ok(self.stats),
            Err(e) => Err(self.first_error(e)),
        }
    }

    fn conclude(&mut self) -> Result<()> {
        self.verify_held()?;
        if self.chain_open {
            if !self.past_up_to {
                return Err(coded(
                    Code::Integrity,
                    format!(
                        "the last log segment ends inside a linked chain (at timestamp {}): a \
                         segment is missing or was not captured by bkp",
                        self.last_seen.iter().max().copied().unwrap_or(0)
                    ),
                ));
            }
            let dropped = self.batch.len() - self.chain_start;
            self.batch.truncate(self.chain_start);
            self.stats.chain_events_dropped = dropped as u64;
            self.chain_open = false;
        }
        self.flush(self.batch.len())?;
        self.settle()?;
        crate::failpoint::pause("replay-sent");
        self.newest_row_held()?;
        self.only_replayed_rows()?;
        self.stats.covered_until = self.covered.min(self.up_to);
        let covered_until = self.stats.covered_until;
        let mut expired = Vec::new();
        let mut cleared = Vec::new();
        for (&id, p) in &self.pending {
            if p.source_timeout == 0 || p.target_timeout != 0 {
                continue;
            }
            let info = PendingTimeout {
                id,
                timestamp: p.timestamp,
                timeout: p.source_timeout,
                expires_at: p.expires_at(p.source_timeout),
            };
            // With expiries in the segments, a pending transfer still pending here was
            // still pending in the source (its expiry would be in the segments).
            if info.expires_at <= covered_until && self.stats.without_expiries {
                expired.push(info);
            } else {
                cleared.push(info);
            }
        }
        expired.sort_by_key(|p| p.timestamp);
        cleared.sort_by_key(|p| p.timestamp);
        self.stats.expired_in_source = expired;
        self.stats.timeout_cleared = cleared;
        self.stats.requests = self.c.requests() - self.requests_before;
        Ok(())
    }

    /// The target's newest row before the replay must be one the log holds,
    /// where the segments reach back to it: a base or snapshot whose newest row
    /// the source never committed (a prepare a replica held that the cluster
    /// did not), or a target someone wrote to, is not the source's state at any
    /// instant, and replaying on top of it would deliver a ledger that never
    /// was. [`Replay::verify_held`] found it with the same fields, or not.
    fn newest_row_held(&self) -> Result<()> {
        let newest = self.newest.after;
        let reaches = self.first_after.is_some_and(|a| a < newest);
        if newest == 0 || !reaches || self.stats.newest_row_in_log {
            return Ok(());
        }
        Err(coded(
            Code::Integrity,
            format!(
                "the cluster at {} holds a row at timestamp {newest} (its newest) that the log \
                 does not hold, although the log covers that instant: it is not a state the \
                 source ever had (a base or snapshot with a row the cluster never committed, \
                 or a target someone else wrote to); nothing is delivered from it. Restore \
                 from another base, or replay the log into a fresh cluster",
                self.c.addresses()
            ),
        ))
    }

    /// The target must hold, above the rows it held before, exactly what this
    /// replay wrote: its accounts, its transfers, and a void for each expiry it
    /// sent that the target had not applied by its own clock. A row more was
    /// written by someone else meanwhile (a private replica listens on loopback,
    /// where any local user reaches it; `--into` names a cluster others may
    /// write): such a target is not the log's, and nothing is delivered from it.
    ///
    /// It reads every row the replay wrote (a page of 8189 a request): counting
    /// them on a second session during the replay was measured slower, as the
    /// cluster then serves the pages between the writes.
    fn only_replayed_rows(&mut self) -> Result<()> {
        let clock = std::time::Instant::now();
        let (accounts, transfers) = super::rows_after(self.c, &self.newest)?;
        self.stats.checked_seconds = clock.elapsed().as_secs_f64();
        let s = &self.stats;
        let voids = s.expiries.saturating_sub(s.expiries_by_target.len() as u64);
        if accounts == s.accounts && transfers == s.transfers + voids {
            return Ok(());
        }
        Err(coded(
            Code::Integrity,
            format!(
                "after the replay the cluster at {} holds {} and {} newer than its rows \
                 before, but the replay wrote {} and {}: another client wrote to it while the \
                 log was replayed, so it is not the log's state; a restore or a drill \
                 delivers nothing from it. Restore again (on a host where no other user runs \
                 programs, or into a cluster nothing else writes to)",
                self.c.addresses(),
                count(accounts, "account"),
                count(transfers, "transfer"),
                count(s.accounts, "account"),
                count(s.transfers + voids, "transfer"),
            ),
        ))
    }

    /// Adds an event to the batch, sending what is complete when the batch is full or
    /// changes kind, never splitting a linked chain.
    fn push(&mut self, ev: Event) -> Result<()> {
        let kind = ev.kind();
        if self.chain_open {
            if kind != self.kind {
                return Err(coded(
                    Code::Integrity,
                    format!(
                        "a linked chain of {}s is interrupted by {} {:#x} at timestamp {}: the \
                         segments were not captured by bkp",
                        self.kind.name(),
                        kind.name(),
                        ev.id(),
                        ev.timestamp()
                    ),
                ));
            }
            if self.batch.len() >= self.batch_max()? && self.chain_start > 0 {
                self.flush(self.chain_start)?;
            }
        } else if !self.batch.is_empty()
            && (kind != self.kind || self.batch.len() >= self.batch_max()?)
        {
            self.flush(self.batch.len())?;
        }
        if !self.chain_open && ev.linked() {
            self.chain_start = self.batch.len();
        }
        self.kind = kind;
        self.chain_open = ev.linked();
        self.batch.push(ev);
        Ok(())
    }

    /// Events per request to the target, asked once ([`batch_limit`]).
    fn batch_max(&mut self) -> Result<usize> {
        match self.batch_max {
            Some(n) => Ok(n),
            None => {
                self.settle()?;
                let n = batch_limit(self.c)?;
                self.batch_max = Some(n);
                Ok(n)
            }
        }
    }

    /// Sends the first `n` events of the batch (complete chains only), once the
    /// answer to the request before has been checked. The request is left in
    /// flight: the next batch is read meanwhile, and [`Replay::settle`] checks
    /// its answer before anything else is sent.
    fn flush(&mut self, n: usize) -> Result<()> {
        if n == 0 {
            return Ok(());
        }
        self.settle()?;
        let events: Vec<Event> = self.batch.drain(..n).collect();
        self.chain_start = self.chain_start.saturating_sub(n);
        self.stats.batches += 1;
        let answer = match self.kind {
            Kind::Account => self.send_accounts(&events),
            Kind::Transfer => self.send_transfers(&events)?,
        };
        self.sent = Some(Sent {
            events,
            answer,
            newest_expiry: self.newest_expiry,
        });
        Ok(())
    }

    /// Waits for the answer to the request in flight, if any, and checks it.
    fn settle(&mut self) -> Result<()> {
        let Some(sent) = self.sent.take() else {
            return Ok(());
        };
        let since = match &sent.answer {
            Answer::Accounts(_, answer) => answer.sent_at(),
            Answer::Transfers(_, answer) => answer.sent_at(),
        };
        match sent.answer {
            Answer::Accounts(rows, answer) => {
                let failures = failures(answer)?;
                self.stats.in_flight_seconds += since.elapsed().as_secs_f64();
                self.accounts_answered(&sent.events, &rows, failures, sent.newest_expiry)?;
            }
            Answer::Transfers(rows, answer) => {
                let failures = failures(answer)?;
                self.stats.in_flight_seconds += since.elapsed().as_secs_f64();
                self.transfers_answered(&sent.events, &rows, failures, sent.newest_expiry)?;
            }
        }
        if let Some(last) = sent.events.last() {
            self.stats.last_timestamp = last.timestamp();
        }
        Ok(())
    }

    fn send_accounts(&mut self, events: &[Event]) -> Answer<'c> {
        let rows: Vec<Account> = events
            .iter()
            .filter_map(|e| match e {
                Event::Account(a) => Some(import_account(a)),
                Event::Transfer(_) | Event::Expiry(_) => None,
            })
            .collect();
        let answer = self.c.submit_accounts(rows.clone());
        Answer::Accounts(rows, answer)
    }

    fn accounts_answered(
        &mut self,
        events: &[Event],
        rows: &[Account],
        failures: Vec<(usize, bool, String)>,
        newest_expiry: Option<(u64, u128)>,
    ) -> Result<()> {
        self.check_failures(events, &failures, newest_expiry)?;
        let exists: Vec<u128> = failures
            .iter()
            .filter(|(_, exists, _)| *exists)
            .filter_map(|(i, _, _)| rows.get(*i).map(|a| a.as_raw().id))
            .collect();
        if !exists.is_empty() {
            let found = lookup_accounts(self.c, exists.clone())?;
            for id in &exists {
                let want = rows
                    .iter()
                    .find(|a| a.as_raw().id == *id)
                    .map_or(0, |a| a.as_raw().timestamp);
                let have = found.get(id).map_or(0, |a| a.as_raw().timestamp);
                if have != want {
                    bail!(
                        "account {id:#x} (timestamp {want}) already exists in the target with \
                         timestamp {have}: the target holds a different account with this id; \
                         restore into a fresh cluster"
                    );
                }
            }
        }
        self.stats.accounts += rows.len() as u64;
        Ok(())
    }

    /// Tracks pending transfers, checks posts and voids of pending transfers
    /// this replay did not create, and sends the transfers.
    fn send_transfers(&mut self, events: &[Event]) -> Result<Answer<'c>> {
        let transfers: Vec<Transfer> = events
            .iter()
            .filter_map(|e| match e {
                Event::Transfer(t) => Some(*t),
                Event::Expiry(x) => Some(expiry_void(x)),
                Event::Account(_) => None,
            })
            .collect();
        // Track pending transfers; find posts/voids of pending transfers not created
        // by this replay, which need a look at the target first. An expiry's void needs
        // no look: it is due by the target's clock too (see the module documentation).
        let mut unknown = Vec::new();
        for (t, ev) in transfers.iter().zip(events) {
            if let Event::Expiry(x) = ev {
                self.pending.remove(&x.pending_id);
                continue;
            }
            let r = t.as_raw();
            if r.flags & TRANSFER_PENDING != 0 {
                self.pending.insert(
                    r.id,
                    Pending {
                        timestamp: r.timestamp,
                        source_timeout: r.timeout,
                        target_timeout: 0,
                    },
                );
                if r.timeout != 0 {
                    self.stats.timeouts_cleared += 1;
                }
            } else if r.flags & (TRANSFER_POST | TRANSFER_VOID) != 0 {
                match self.pending.remove(&r.pending_id) {
                    Some(p) if p.target_timeout == 0 => {}
                    Some(p) => self.check_live_timeout(t, r.pending_id, p)?,
                    None => unknown.push(*t),
                }
            }
        }
        if !unknown.is_empty() {
            let found = lookup_transfers(
                self.c,
                unknown.iter().map(|t| t.as_raw().pending_id).collect(),
            )?;
            for t in &unknown {
                let pid = t.as_raw().pending_id;
                if let Some(p) = found.get(&pid) {
                    let p = p.as_raw();
                    let info = Pending {
                        timestamp: p.timestamp,
                        source_timeout: p.timeout,
                        target_timeout: p.timeout,
                    };
                    if p.timeout != 0 {
                        self.check_live_timeout(t, pid, info)?;
                    }
                }
                // Not found: TigerBeetle answers pending_transfer_not_found below.
            }
        }
        let rows: Vec<Transfer> = transfers.iter().map(import_transfer).collect();
        let answer = self.c.submit_transfers(rows.clone());
        Ok(Answer::Transfers(rows, answer))
    }

    fn transfers_answered(
        &mut self,
        events: &[Event],
        rows: &[Transfer],
        mut failures: Vec<(usize, bool, String)>,
        newest_expiry: Option<(u64, u128)>,
    ) -> Result<()> {
        // An expiry the target already applied by its own clock.
        failures.retain(|(i, _, name)| match events.get(*i) {
            Some(Event::Expiry(x)) if name == "pending_transfer_expired" => {
                self.stats.expiries_by_target.push(x.pending_id);
                false
            }
            _ => true,
        });
        self.check_failures(events, &failures, newest_expiry)?;
        self.stats.expiries += events
            .iter()
            .filter(|e| matches!(e, Event::Expiry(_)))
            .count() as u64;
        // `exists` does not compare timestamps, and a balancing transfer's amount is
        // decided by the target's balances: look both up and compare.
        let mut check: Vec<u128> = failures
            .iter()
            .filter(|(_, exists, _)| *exists)
            .filter_map(|(i, _, _)| rows.get(*i).map(|t| t.as_raw().id))
            .collect();
        check.extend(
            rows.iter()
                .filter(|t| t.as_raw().flags & TRANSFER_BALANCING != 0)
                .map(|t| t.as_raw().id),
        );
        if !check.is_empty() {
            let found = lookup_transfers(self.c, check.clone())?;
            for id in check {
                let Some(want) = rows.iter().find(|t| t.as_raw().id == id) else {
                    continue;
                };
                let want = want.as_raw();
                let Some(have) = found.get(&id) else {
                    bail!(
                        "transfer {id:#x} (timestamp {}) was accepted but is missing",
                        want.timestamp
                    );
                };
                let have = have.as_raw();
                if have.timestamp != want.timestamp {
                    bail!(
                        "transfer {id:#x} (timestamp {}) already exists in the target with \
                         timestamp {}: the target holds a different transfer with this id; \
                         restore into a fresh cluster",
                        want.timestamp,
                        have.timestamp
                    );
                }
                if have.amount != want.amount {
                    bail!(
                        "balancing transfer {id:#x} (timestamp {}) moved {} in the target but {} \
                         in the source: the accounts' balances differ from the source's at that \
                         point{}",
                        want.timestamp,
                        have.amount,
                        want.amount,
                        self.expiry_hint(want.timestamp)
                    );
                }
            }
        }
        self.stats.transfers += events
            .iter()
            .filter(|e| matches!(e, Event::Transfer(_)))
            .count() as u64;
        Ok(())
    }

    /// A post/void of pending transfer `pid` that the target holds with a live timeout:
    /// refuse when that timeout is due, since the target has expired (or is about to
    /// expire) it by its own clock.
    fn check_live_timeout(&self, t: &Transfer, pid: u128, p: Pending) -> Result<()> {
        let expires_at = p.expires_at(p.target_timeout);
        let now = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(u64::MAX, |d| {
                u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
            });
        if expires_at <= now.saturating_add(EXPIRY_MARGIN_NS) {
            let r = t.as_raw();
            return Err(anyhow::Error::new(LiveTimeout {
                pending_id: pid,
                message: format!(
                    "transfer {:#x} (timestamp {}) posts or voids pending transfer {pid:#x}, \
                     which the target holds from a restored snapshot with a timeout of {} s \
                     (due at timestamp {expires_at}): the target cluster expires it by its own \
                     clock, so TigerBeetle cannot accept this post or void (TigerBeetle 0.16.78 \
                     was seen to crash on it). Restore from a snapshot taken before pending \
                     transfer {pid:#x} was created, or replay all segments into a fresh cluster",
                    r.id, r.timestamp, p.target_timeout
                ),
            }));
        }
        Ok(())
    }

    /// Stops at the first rejection (other than `exists`), naming the event.
    /// `newest_expiry` is the newest expiry read when the request was sent.
    fn check_failures(
        &self,
        events: &[Event],
        failures: &[(usize, bool, String)],
        newest_expiry: Option<(u64, u128)>,
    ) -> Result<()> {
        let rejected: Vec<&(usize, bool, String)> =
            failures.iter().filter(|(_, exists, _)| !*exists).collect();
        // In a failed chain every other event reports linked_event_failed: name the cause.
        let Some((i, _, name)) = rejected
            .iter()
            .find(|(_, _, name)| name != "linked_event_failed")
            .or(rejected.first())
            .copied()
        else {
            return Ok(());
        };
        let Some(ev) = events.get(*i) else {
            bail!(
                "TigerBeetle rejected event {i} of a batch of {}: {name}",
                events.len()
            );
        };
        // TigerBeetle takes replay's transfers in timestamp order but for one: a
        // transfer below an expiry that replay applied as a void before it.
        if name == "imported_event_timestamp_must_not_regress" {
            if let (Event::Transfer(_), Some(expiry)) = (ev, newest_expiry) {
                if ev.timestamp() < expiry.0 {
                    return Err(below_expiry(ev, expiry));
                }
            }
        }
        bail!(
            "replay stopped: TigerBeetle rejected {} {:#x} (timestamp {}) with {name}{}{}. \
             Events after it in the same request may have been created, so restore again \
             into a fresh cluster once the cause is fixed",
            ev.kind().name(),
            ev.id(),
            ev.timestamp(),
            if rejected.len() > 1 {
                format!(" ({} events of the request were rejected)", rejected.len())
            } else {
                String::new()
            },
            self.expiry_hint(ev.timestamp())
        )
    }

    /// Names pending transfers that the source had expired before `ts` (only when a
    /// segment of format version 1, which holds no expiries, was replayed).
    fn expiry_hint(&self, ts: u64) -> String {
        if !self.stats.without_expiries {
            return String::new();
        }
        let mut expired: Vec<(u128, u64)> = self
            .pending
            .iter()
            .filter(|(_, p)| p.source_timeout != 0 && p.expires_at(p.source_timeout) <= ts)
            .map(|(&id, p)| (id, p.expires_at(p.source_timeout)))
            .collect();
        if expired.is_empty() {
            return String::new();
        }
        expired.sort_by_key(|&(_, at)| at);
        let list: Vec<String> = expired
            .iter()
            .take(5)
            .map(|(id, at)| format!("{id:#x} at {at}"))
            .collect();
        format!(
            "; {} had expired in the source before this event ({}{}), but \
             TigerBeetle cannot import an expiry, so their amounts are still reserved (and \
             accounts they closed still closed) in the target",
            crate::units::count(expired.len() as u64, "pending transfer"),
            list.join(", "),
            if expired.len() > 5 { ", ..." } else { "" }
        )
    }

    /// Checks that the target holds the buffered events it is said to hold.
    fn verify_held(&mut self) -> Result<()> {
        if self.verify.is_empty() {
            return Ok(());
        }
        self.settle()?;
        let events = std::mem::take(&mut self.verify);
        let account_ids: Vec<u128> = events
            .iter()
            .filter(|e| e.kind() == Kind::Account)
            .map(Event::id)
            .collect();
        let transfer_ids: Vec<u128> = events
            .iter()
            .flat_map(|e| match e {
                Event::Account(_) => vec![],
                Event::Transfer(t) => vec![t.as_raw().id],
                Event::Expiry(x) => vec![expiry_void_id(x.pending_id), x.pending_id],
            })
            .collect();
        let accounts = if account_ids.is_empty() {
            HashMap::new()
        } else {
            lookup_accounts(self.c, account_ids)?
        };
        let transfers = if transfer_ids.is_empty() {
            HashMap::new()
        } else {
            lookup_transfers(self.c, transfer_ids)?
        };
        for ev in &events {
            let diff = match ev {
                Event::Account(a) => match accounts.get(&ev.id()) {
                    None => Some(MISSING.to_owned()),
                    Some(have) => account_difference(&a.account, have),
                },
                Event::Transfer(t) => match transfers.get(&ev.id()) {
                    None => Some(MISSING.to_owned()),
                    Some(have) => {
                        let d = transfer_difference(t, have);
                        if d.is_none() {
                            self.track_held(t, have);
                        }
                        d
                    }
                },
                // Either replay voided it (resuming), or the target holds the pending
                // transfer with its live timeout and expired it itself (a snapshot).
                Event::Expiry(x) => {
                    self.pending.remove(&x.pending_id);
                    match (
                        transfers.get(&expiry_void_id(x.pending_id)),
                        transfers.get(&x.pending_id),
                    ) {
                        // TigerBeetle gives a void that leaves user data zero the
                        // pending transfer's user data.
                        (Some(v), p) => {
                            let mut want = expiry_void(x);
                            let from = p.unwrap_or(v).as_raw();
                            let w = want.as_raw_mut();
                            w.user_data_128 = from.user_data_128;
                            w.user_data_64 = from.user_data_64;
                            w.user_data_32 = from.user_data_32;
                            transfer_difference(&want, v)
                        }
                        (None, Some(p)) if p.as_raw().timeout != 0 => None,
                        (None, Some(_)) => Some(
                            "the target holds the pending transfer without a timeout and \
                             without its void"
                                .to_owned(),
                        ),
                        (None, None) => Some("the pending transfer is missing".to_owned()),
                    }
                }
            };
            if let Some(diff) = diff {
                // A transfer the target lacks below an expiry it holds as a void:
                // an earlier replay met it after that void (see `below_expiry`).
                if let (Event::Transfer(_), Some(expiry)) = (ev, self.newest_expiry) {
                    if diff == MISSING && ev.timestamp() < expiry.0 {
                        return Err(below_expiry(ev, expiry));
                    }
                }
                // What the event was checked against (see `Replay::segment`).
                let (newest, held) = match ev {
                    Event::Account(_) => ("account", self.newest.accounts),
                    Event::Transfer(_) => ("transfer", self.newest.transfers),
                    Event::Expiry(_) => ("row", self.newest.after),
                };
                return Err(coded(
                    Code::Integrity,
                    format!(
                        "the target cluster's newest {newest} has timestamp {held}, so it should \
                         already hold {} {:#x} (timestamp {}) from the segments, but {diff}: \
                         the target is not a restore of this source, or an earlier replay \
                         stopped midway; restore into a fresh cluster",
                        ev.kind().name(),
                        ev.id(),
                        ev.timestamp()
                    ),
                ));
            }
        }
        self.stats.skipped_verified += events.len() as u64;
        let newest = self.newest.after;
        self.stats.newest_row_in_log |= events.iter().any(|e| e.timestamp() == newest);
        Ok(())
    }

    /// Keeps track of pending transfers among the rows the target already holds.
    fn track_held(&mut self, t: &Transfer, have: &Transfer) {
        let r = t.as_raw();
        if r.flags & TRANSFER_PENDING != 0 {
            self.pending.insert(
                r.id,
                Pending {
                    timestamp: r.timestamp,
                    source_timeout: r.timeout,
                    target_timeout: have.as_raw().timeout,
                },
            );
        } else if r.flags & (TRANSFER_POST | TRANSFER_VOID) != 0 {
            self.pending.remove(&r.pending_id);
        }
    }
}

/// How [`Replay::verify_held`] says that the target lacks an event.
const MISSING: &str = "it is missing";

/// The error for transfer `ev`, which lies below `expiry` (its timestamp and
/// pending transfer), an expiry replay has already applied as a void. The source
/// imported the transfer there after the expiry (an imported transfer need only
/// be newer than the newest *transfer*, and an expiry is none in the source), or
/// a capture of an earlier bkp release put the expiry into an earlier segment
/// than the transfer (see `tblog::newest_marks`). In the target the void is a
/// transfer, and TigerBeetle takes none below the newest one. The data are
/// sound; only a point before the expiry can be restored.
fn below_expiry(ev: &Event, expiry: (u64, u128)) -> anyhow::Error {
    let (at, pending) = expiry;
    coded(
        Code::Integrity,
        format!(
            "replay cannot apply transfer {:#x} (timestamp {}): it lies below timestamp {at}, \
             where pending transfer {pending:#x} expired, and replay has already applied that \
             expiry as a void, a transfer, below which TigerBeetle takes none (the source \
             imported this transfer after the expiry, or an earlier bkp release captured the \
             two into segments in the wrong order). Restore to a point before timestamp {at}, \
             into a fresh cluster",
            ev.id(),
            ev.timestamp()
        ),
    )
}

fn lookup_accounts(c: &Client, ids: Vec<u128>) -> Result<HashMap<u128, Account>> {
    let rows = c.lookup_accounts(ids)?;
    Ok(rows.into_iter().map(|a| (a.as_raw().id, a)).collect())
}

fn lookup_transfers(c: &Client, ids: Vec<u128>) -> Result<HashMap<u128, Transfer>> {
    let rows = c.lookup_transfers(ids)?;
    Ok(rows.into_iter().map(|t| (t.as_raw().id, t)).collect())
}

/// The account as replay creates it: imported, original timestamp, zero balances, and
/// open when a closing transfer closed it.
fn import_account(a: &AccountRecord) -> Account {
    let mut raw = *a.account.as_raw();
    raw.debits_pending = 0;
    raw.debits_posted = 0;
    raw.credits_pending = 0;
    raw.credits_posted = 0;
    raw.flags |= ACCOUNT_IMPORTED;
    if a.closed_by_transfer {
        raw.flags &= !ACCOUNT_CLOSED;
    }
    Account::from_raw(raw)
}

/// The id of the void that replays the expiry of pending transfer `pending_id`: the
/// first 16 bytes (little-endian) of SHA-256(`"bkp tigerbeetle expiry v1\0"` ‖
/// `pending_id` as 16 little-endian bytes), never 0 or 2^128 − 1 (TigerBeetle's
/// reserved ids; those two would become 1 and 2^128 − 2). Deterministic, so a replay
/// repeated or resumed finds its own voids.
pub fn expiry_void_id(pending_id: u128) -> u128 {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    h.update(b"bkp tigerbeetle expiry v1\0");
    h.update(pending_id.to_le_bytes());
    let d = h.finalize();
    let mut b = [0u8; 16];
    b.copy_from_slice(&d[..16]);
    match u128::from_le_bytes(b) {
        0 => 1,
        u128::MAX => u128::MAX - 1,
        id => id,
    }
}

/// The void that replays an expiry (before [`import_transfer`]): at the expiry's
/// timestamp, with the pending transfer's accounts, amount, ledger and code.
fn expiry_void(x: &Expiry) -> Transfer {
    let mut t = Transfer::new(expiry_void_id(x.pending_id))
        .with_debit_account_id(x.debit_account_id)
        .with_credit_account_id(x.credit_account_id)
        .with_amount(x.amount)
        .with_ledger(x.ledger)
        .with_code(x.code)
        .with_flags(tigerbeetle_unofficial::transfer::Flags::VOID_PENDING_TRANSFER);
    let r = t.as_raw_mut();
    r.pending_id = x.pending_id;
    r.timestamp = x.timestamp;
    t
}

/// The transfer as replay creates it: imported, original timestamp, no timeout.
fn import_transfer(t: &Transfer) -> Transfer {
    let mut raw = *t.as_raw();
    raw.flags |= TRANSFER_IMPORTED;
    raw.timeout = 0;
    Transfer::from_raw(raw)
}

/// How an account the target holds differs from the captured row in what replay
/// reproduces (balances and `closed` change later; `imported` is replay's own).
fn account_difference(want: &Account, have: &Account) -> Option<String> {
    let (w, h) = (want.as_raw(), have.as_raw());
    let mask = !(ACCOUNT_IMPORTED | ACCOUNT_CLOSED);
    let fields = [
        ("user_data_128", w.user_data_128 == h.user_data_128),
        ("user_data_64", w.user_data_64 == h.user_data_64),
        ("user_data_32", w.user_data_32 == h.user_data_32),
        ("ledger", w.ledger == h.ledger),
        ("code", w.code == h.code),
        ("flags", w.flags & mask == h.flags & mask),
        ("timestamp", w.timestamp == h.timestamp),
    ];
    fields
        .iter()
        .find(|(_, same)| !same)
        .map(|(name, _)| format!("its {name} differs"))
}

/// How a transfer the target holds differs from the captured row, allowing for the
/// `imported` bit and a cleared timeout.
fn transfer_difference(want: &Transfer, have: &Transfer) -> Option<String> {
    let (w, h) = (want.as_raw(), have.as_raw());
    let fields = [
        ("debit_account_id", w.debit_account_id == h.debit_account_id),
        (
            "credit_account_id",
            w.credit_account_id == h.credit_account_id,
        ),
        ("amount", w.amount == h.amount),
        ("pending_id", w.pending_id == h.pending_id),
        ("user_data_128", w.user_data_128 == h.user_data_128),
        ("user_data_64", w.user_data_64 == h.user_data_64),
        ("user_data_32", w.user_data_32 == h.user_data_32),
        ("timeout", h.timeout == w.timeout || h.timeout == 0),
        ("ledger", w.ledger == h.ledger),
        ("code", w.code == h.code),
        (
            "flags",
            w.flags & !TRANSFER_IMPORTED == h.flags & !TRANSFER_IMPORTED,
        ),
        ("timestamp", w.timestamp == h.timestamp),
    ];
    fields
        .iter()
        .find(|(_, same)| !same)
        .map(|(name, _)| format!("its {name} differs"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tigerbeetle::tblog::segment::tests::{account, transfer};
    use crate::tigerbeetle::tblog::ACCOUNT_LINKED;

    #[test]
    fn import_rows_follow_the_rules() {
        let rec = AccountRecord {
            account: account(3, 99, ACCOUNT_CLOSED | ACCOUNT_LINKED),
            closed_by_transfer: true,
        };
        let a = import_account(&rec);
        let r = a.as_raw();
        assert_eq!(
            (r.debits_posted, r.credits_pending, r.flags),
            (0, 0, ACCOUNT_LINKED | ACCOUNT_IMPORTED)
        );
        assert_eq!(r.timestamp, 99);
        let created_closed = import_account(&AccountRecord {
            closed_by_transfer: false,
            ..rec
        });
        assert_eq!(
            created_closed.as_raw().flags,
            ACCOUNT_CLOSED | ACCOUNT_LINKED | ACCOUNT_IMPORTED
        );
        let t = import_transfer(&transfer(4, 77));
        assert_eq!(
            (t.as_raw().timeout, t.as_raw().flags, t.as_raw().timestamp),
            (0, TRANSFER_PENDING | TRANSFER_IMPORTED, 77)
        );
        assert_eq!(transfer_difference(&transfer(4, 77), &t), None);
        let mut other = t;
        other.as_raw_mut().amount = 1;
        assert_eq!(
            transfer_difference(&transfer(4, 77), &other).as_deref(),
            Some("its amount differs")
        );
        assert_eq!(account_difference(&rec.account, &a), None);
    }
}
