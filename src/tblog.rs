//! Change capture and replay of a TigerBeetle cluster: the engine of point-in-time
//! recovery (`bkp logs` writes segments, `bkp restore --at` replays them).
//!
//! # Why
//!
//! TigerBeetle has no log shipping and no incremental backup: its write-ahead log is
//! internal, a data-file copy is all or nothing, and its change-data-capture job
//! (`tigerbeetle amqp`) needs an AMQP broker and publishes transfer events, not the
//! account rows a restore must recreate. What it does offer is enough to build one:
//! every account and transfer carries a `timestamp` assigned by the cluster, unique
//! across both kinds and strictly increasing in commit order; rows are never
//! deleted; `query_accounts`/`query_transfers` select by an inclusive timestamp range
//! in ascending (or, with `REVERSED`, descending) order; and `create_*` with the
//! `imported` flag accepts rows with their original timestamps. So [`capture`] copies
//! every row created in a timestamp interval into a segment, and [`replay`] recreates
//! the rows of a chain of segments, in timestamp order, in another cluster.
//!
//! # Capture, and why the cursor is sound
//!
//! A segment covers the interval `(after, until]`; the next one starts at this one's
//! `until`. [`capture`] makes these requests (all bounded by the configured timeout;
//! no answer in time is a [`Code::Transient`] error naming the addresses):
//!
//! 1. `query_accounts` and `query_transfers`, each `REVERSED` with limit 1 and every
//!    other filter field zero: the newest account and the newest transfer.
//!    `until` = the larger of their timestamps (or `after` when both are ≤ `after`).
//! 2. Both kinds in `[after + 1, until]`, ascending, paged by timestamp (next page
//!    from the last row's timestamp + 1) until a page is empty or reaches `until`.
//!    The two cursors are merged by timestamp into the segment, one page of each in
//!    memory at a time (at most 2 × 8189 rows of 128 bytes, about 2 MiB).
//! 3. For each account whose row has `flags.closed`, one `get_account_transfers`
//!    (limit 1, `DEBITS | CREDITS`) to learn how it was closed (see the format).
//!
//! Soundness: TigerBeetle's timestamps are unique across accounts and transfers and
//! totally ordered: the cluster assigns each operation a timestamp greater than every
//! earlier one (also across view changes), the rows of a batch get consecutive
//! timestamps ending at the operation's, and operations commit in that order. Reads
//! go through consensus like writes and are strictly serializable (TigerBeetle's
//! `concepts/safety.md`, `coding/time.md`): a reply reflects every operation committed
//! before it. So when step 1 sees a row with timestamp `T`, every row with a timestamp
//! ≤ `T` is already committed, and any row committed later gets a timestamp > `T`.
//! Hence the set of rows in `(after, until]` is final once `until` is chosen: step 2
//! reads a fixed set, each page is the next slice of one sorted sequence, and no row
//! with a timestamp ≤ `until` can appear after this capture. The next capture, with
//! `after` = this `until`, loses and repeats nothing. With nothing new, steps 2 and 3
//! are skipped: 2 requests. (Choosing `until` first also makes the merge simple: both
//! cursors read immutable sets, so neither has to be re-read.)
//!
//! One exception, documented by TigerBeetle: `imported` rows carry client-chosen
//! timestamps, which need only be newer than the last row *of their own kind*. An
//! import into the source cluster while `bkp logs` runs could therefore place an
//! account below a transfer-defined `until` (or vice versa). TigerBeetle recommends
//! imports only into fresh clusters or maintenance windows; do not run imports into
//! a cluster that `bkp logs` captures (a restored cluster starts a new chain).
//!
//! Every query's answer is checked (ascending, inside the requested range, at most
//! one row for limit 1): TigerBeetle answers an invalid filter with an empty list
//! rather than an error, so a silently wrong query must not pass for "nothing new".
//! The cluster's newest timestamp below `after` means the watermark belongs to
//! another cluster or to a state the cluster was rolled back from: an error
//! ([`Code::Integrity`]), never an empty segment.
//!
//! Account rows are the one mutable kind: balances and `flags.closed` change after
//! creation. A segment stores the row as read (balances as of the read, which may
//! include transfers newer than `until`); replay never uses the balances, it rebuilds
//! them by replaying the transfers.
//!
//! # Segment format, version 1
//!
//! All integers little-endian. Offsets in bytes.
//!
//! Header, 42 bytes:
//! - 0..8: magic `BKPTBLG1` (ASCII);
//! - 8..10: format version, u16 = 1;
//! - 10..26: source cluster id, u128;
//! - 26..34: `after`, u64: interval start, exclusive (0 = from the beginning);
//! - 34..42: `until`, u64: interval end, inclusive (`until` ≥ `after`).
//!
//! Records, 129 bytes each, in strictly increasing timestamp order, every timestamp
//! in `(after, until]`: one tag byte, then the 128-byte TigerBeetle struct with every
//! field exactly as the cluster returned it, in the order of TigerBeetle's
//! `extern struct` layout (`src/tigerbeetle.zig`):
//! - tag 1, account; tag 3, account whose `closed` flag was set by a closing
//!   transfer (the row must have `flags.closed`). Body:
//!   0 `id` u128, 16 `debits_pending` u128, 32 `debits_posted` u128,
//!   48 `credits_pending` u128, 64 `credits_posted` u128, 80 `user_data_128` u128,
//!   96 `user_data_64` u64, 104 `user_data_32` u32, 108 `reserved` u32,
//!   112 `ledger` u32, 116 `code` u16, 118 `flags` u16, 120 `timestamp` u64.
//! - tag 2, transfer. Body:
//!   0 `id` u128, 16 `debit_account_id` u128, 32 `credit_account_id` u128,
//!   48 `amount` u128, 64 `pending_id` u128, 80 `user_data_128` u128,
//!   96 `user_data_64` u64, 104 `user_data_32` u32, 108 `timeout` u32,
//!   112 `ledger` u32, 116 `code` u16, 118 `flags` u16, 120 `timestamp` u64.
//!
//! Why tag 3: `flags.closed` is set either at creation or by a pending transfer with
//! `closing_debit`/`closing_credit` (undone by voiding it). Replay must create the
//! first kind closed and the second open (the closing transfer, replayed later,
//! closes it). The row alone cannot tell them apart, but an account created closed
//! can never have a transfer (a closed account rejects all but voids of its pending
//! transfers, and it has none), while one closed by a transfer has that transfer. So
//! capture asks for one transfer of each closed account; the answer cannot change
//! between the reads because a closed-at-creation account stays closed forever.
//!
//! Trailer, 65 bytes: tag 0xFF; account count u64; transfer count u64; first
//! record timestamp u64; last record timestamp u64 (both 0 when empty); SHA-256 (32
//! bytes) of every byte before the hash (header, records, and the trailer's first 33
//! bytes). [`SegmentReader`] checks the magic, version, range, tags, ordering,
//! counts, timestamps and hash and that nothing follows the trailer; any violation,
//! including a truncated stream, is a [`Code::Integrity`] error naming what is wrong.
//! The hash covers the stream independently of bkp's outer compression/encryption.
//!
//! # Replay
//!
//! [`replay`] targets a fresh cluster, or a just-restored quiescent one (nothing else
//! may write to it meanwhile). It first asks for the target's newest timestamp (the
//! same two `REVERSED` queries), then reads the segments in order and:
//! - requires them to chain without gaps from the target's newest timestamp (a
//!   segment's `after` must not exceed what is already covered);
//! - for events the target already holds (timestamp ≤ its newest), looks them up in
//!   batches and requires them present with the same fields (modulo the `imported` bit,
//!   `timeout` and an account's `closed` flag and balances): so replaying the same
//!   segments again, or resuming after an interruption, is harmless and checked, and a
//!   target that is not a restore of this source is refused;
//! - replays events with timestamp ≤ `up_to` in timestamp order with `flags.imported`
//!   and the original timestamp, accounts and transfers in separate requests of at
//!   most [`BATCH`] events, never splitting a linked chain (a chain longer than that is
//!   sent whole: it fit into one request of the source);
//! - treats `exists` as success only after checking the existing row's timestamp
//!   (TigerBeetle's `exists` compares the fields but not the timestamp);
//! - stops at the first other result with an error naming the event's id, timestamp
//!   and TigerBeetle's result code. Events after it in the same request (not linked to
//!   it) may have been created, so after such an error restore again into a fresh
//!   cluster; a resume would detect the gap through the lookups above.
//!
//! A linked chain is atomic in the source, so a chain that straddles `up_to` is not
//! replayed at all ([`ReplayStats::chain_events_dropped`]). Events are applied as they
//! are read, before a segment's trailer is checked: a corrupt segment stops the
//! replay with an Integrity error after earlier events were created. Check segments
//! with [`verify_segment`] first when that matters.
//!
//! # What replay cannot reproduce, and what happens instead
//!
//! - **The `imported` bit.** Every replayed account and transfer has
//!   `flags.imported` set (TigerBeetle requires it to accept a timestamp); all other
//!   fields, including the timestamp, are the source's.
//! - **Timeouts.** Imported pending transfers must have `timeout = 0`, so replay
//!   clears it ([`ReplayStats::timeouts_cleared`]). Such a transfer never expires in
//!   the target; it stays pending until posted or voided by hand.
//! - **Expiry.** An expiry in the source creates no row, so segments do not record it.
//!   A pending transfer that expired in the source is replayed as pending: in the
//!   target its amount stays in `debits_pending`/`credits_pending` of both accounts
//!   (released in the source), it can still be posted or voided (not in the source),
//!   and an expired closing transfer leaves its account closed (reopened in the
//!   source). Replay tracks every pending transfer it sees and reports those whose
//!   `timestamp + timeout` ≤ the newest replayed point in
//!   [`ReplayStats::expired_in_source`] and the others in
//!   [`ReplayStats::timeout_cleared`]; [`ReplayStats::expired_by`] answers for a later
//!   restore point (the segments certify the source up to the time of their last
//!   capture, which may be later than their newest row). Void them to reach the
//!   source's balances (that adds void rows the source does not have).
//!   Later events that relied on the released amount cannot be replayed exactly: a
//!   transfer checked against a balance limit fails (`exceeds_credits`/
//!   `exceeds_debits`), a transfer to an account reopened by expiry fails
//!   (`*_already_closed`) — both stop the replay with an error that names the expired
//!   pending transfers — and a balancing transfer would move less, which replay
//!   detects by looking up every replayed balancing transfer and comparing amounts.
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
//!   the original timestamps; expiries are missing from it as above.
//!
//! Memory: replay keeps one batch, one lookup batch, and the id, timestamp and
//! timeout of every pending transfer not yet posted or voided (about 50 bytes each).
//!
//! # Measured
//!
//! Two development-mode replicas (32 KiB requests) on 2 cores shared with a
//! compiler (load average 8-17), client crate at opt-level 1, segments in memory,
//! 100 accounts and 100,000 transfers (`measure_rates` in the tests, three runs):
//! - capture: 0.79-0.82 s for 100,100 rows (12.9 MB, 17 requests), about 120,000
//!   rows/s end to end; about 0.6 s of it is the client's first request (session
//!   registration), the pages of ~8,000 rows then take ~5 ms each. A capture with
//!   nothing new: 2 requests, 0.64-0.65 s, nearly all of it that first request.
//! - replay: 2.4-3.0 s (403 requests of up to 250 events), 33,000-41,000 events/s.
//!
//! Imported batches are not submitted as linked chains (TigerBeetle's suggestion to
//! keep the last timestamp unchanged on failure): that would change the rows' stored
//! `linked` flag, and a rejection stops the replay anyway.

use std::cell::Cell;
use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::time::{Duration, SystemTime};

use anyhow::{anyhow, bail, Context, Result};
use sha2::{Digest, Sha256};
use tigerbeetle_unofficial as tb;
use tigerbeetle_unofficial::error::{
    CreateAccountErrorKind, CreateAccountsError, CreateTransferErrorKind, CreateTransfersError,
    SendError, SendErrorKind,
};
use tigerbeetle_unofficial::{Account, QueryFilter, Transfer};

use crate::exit::{coded, Code, Coded};

/// First bytes of every segment.
pub const MAGIC: &[u8; 8] = b"BKPTBLG1";
/// The segment format this module writes and reads.
pub const FORMAT_VERSION: u16 = 1;
/// Header length in bytes.
pub const HEADER_LEN: usize = 42;
/// Record length in bytes (tag + body).
pub const RECORD_LEN: usize = 129;
/// Trailer length in bytes.
pub const TRAILER_LEN: usize = 65;
/// Maximum events per replay request: below the 253 that fit into the 32 KiB request
/// of a development-mode replica (a production replica takes 8189).
pub const BATCH: usize = 250;

const TAG_ACCOUNT: u8 = 1;
const TAG_TRANSFER: u8 = 2;
const TAG_ACCOUNT_CLOSED_BY_TRANSFER: u8 = 3;
const TAG_TRAILER: u8 = 0xFF;
const BODY_LEN: usize = 128;
/// Rows per query page: the most a 1 MiB reply holds (replies may hold fewer).
const QUERY_LIMIT: u32 = 8189;
/// Ids per lookup when checking rows the target already holds.
const LOOKUP_BATCH: usize = 250;
/// A pending transfer whose live timeout falls due within this margin counts as due.
const EXPIRY_MARGIN_NS: u64 = 60_000_000_000;
const NS_PER_S: u64 = 1_000_000_000;

const ACCOUNT_IMPORTED: u16 = tb::account::Flags::IMPORTED.bits();
const ACCOUNT_CLOSED: u16 = tb::account::Flags::CLOSED.bits();
const ACCOUNT_LINKED: u16 = tb::account::Flags::LINKED.bits();
const TRANSFER_IMPORTED: u16 = tb::transfer::Flags::IMPORTED.bits();
const TRANSFER_LINKED: u16 = tb::transfer::Flags::LINKED.bits();
const TRANSFER_PENDING: u16 = tb::transfer::Flags::PENDING.bits();
const TRANSFER_POST: u16 = tb::transfer::Flags::POST_PENDING_TRANSFER.bits();
const TRANSFER_VOID: u16 = tb::transfer::Flags::VOID_PENDING_TRANSFER.bits();
const TRANSFER_BALANCING: u16 =
    tb::transfer::Flags::BALANCING_DEBIT.bits() | tb::transfer::Flags::BALANCING_CREDIT.bits();

/// Where and how to reach a cluster.
#[derive(Debug, Clone)]
pub struct ClusterConfig {
    pub cluster_id: u128,
    /// Replica addresses as TigerBeetle takes them, e.g. `127.0.0.1:3000,10.0.0.2:3000`.
    pub addresses: String,
    /// Bound on every request; the client itself never gives up.
    pub timeout: Duration,
}

// ---------------------------------------------------------------------------------
// Segment format
// ---------------------------------------------------------------------------------

/// The header of a segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SegmentHeader {
    pub version: u16,
    /// The cluster the rows were read from.
    pub cluster_id: u128,
    /// Interval start, exclusive.
    pub after: u64,
    /// Interval end, inclusive.
    pub until: u64,
}

/// What a finished (or fully read) segment holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SegmentStats {
    pub cluster_id: u128,
    pub after: u64,
    pub until: u64,
    pub accounts: u64,
    pub transfers: u64,
    /// Timestamp of the first record, 0 when empty.
    pub first_timestamp: u64,
    /// Timestamp of the last record, 0 when empty.
    pub last_timestamp: u64,
    /// Length of the segment in bytes.
    pub bytes: u64,
    /// The trailer's SHA-256.
    pub sha256: [u8; 32],
}

/// An account row as captured.
#[derive(Debug, Clone, Copy)]
pub struct AccountRecord {
    /// The row exactly as the cluster returned it (balances and `closed` as of the read).
    pub account: Account,
    /// `flags.closed` was set by a closing transfer rather than at creation: replay
    /// creates the account open and the closing transfer closes it.
    pub closed_by_transfer: bool,
}

/// One record of a segment.
#[derive(Debug, Clone, Copy)]
pub enum Event {
    Account(AccountRecord),
    Transfer(Transfer),
}

impl Event {
    /// The row's cluster timestamp.
    pub fn timestamp(&self) -> u64 {
        match self {
            Event::Account(a) => a.account.as_raw().timestamp,
            Event::Transfer(t) => t.as_raw().timestamp,
        }
    }

    /// The row's id.
    pub fn id(&self) -> u128 {
        match self {
            Event::Account(a) => a.account.as_raw().id,
            Event::Transfer(t) => t.as_raw().id,
        }
    }

    fn linked(&self) -> bool {
        match self {
            Event::Account(a) => a.account.as_raw().flags & ACCOUNT_LINKED != 0,
            Event::Transfer(t) => t.as_raw().flags & TRANSFER_LINKED != 0,
        }
    }

    fn kind(&self) -> Kind {
        match self {
            Event::Account(_) => Kind::Account,
            Event::Transfer(_) => Kind::Transfer,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Account,
    Transfer,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Account => "account",
            Kind::Transfer => "transfer",
        }
    }
}

fn integrity(message: String) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        Coded {
            code: Code::Integrity,
            message,
        },
    )
}

struct Enc<'a> {
    buf: &'a mut [u8; BODY_LEN],
    at: usize,
}

impl Enc<'_> {
    fn put(&mut self, bytes: &[u8]) {
        self.buf[self.at..self.at + bytes.len()].copy_from_slice(bytes);
        self.at += bytes.len();
    }
}

struct Dec<'a> {
    buf: &'a [u8; BODY_LEN],
    at: usize,
}

impl Dec<'_> {
    fn take<const N: usize>(&mut self) -> [u8; N] {
        let mut out = [0u8; N];
        out.copy_from_slice(&self.buf[self.at..self.at + N]);
        self.at += N;
        out
    }
    fn u128(&mut self) -> u128 {
        u128::from_le_bytes(self.take())
    }
    fn u64(&mut self) -> u64 {
        u64::from_le_bytes(self.take())
    }
    fn u32(&mut self) -> u32 {
        u32::from_le_bytes(self.take())
    }
    fn u16(&mut self) -> u16 {
        u16::from_le_bytes(self.take())
    }
}

fn encode_account(a: &Account, buf: &mut [u8; BODY_LEN]) {
    let r = a.as_raw();
    let mut e = Enc { buf, at: 0 };
    e.put(&r.id.to_le_bytes());
    e.put(&r.debits_pending.to_le_bytes());
    e.put(&r.debits_posted.to_le_bytes());
    e.put(&r.credits_pending.to_le_bytes());
    e.put(&r.credits_posted.to_le_bytes());
    e.put(&r.user_data_128.to_le_bytes());
    e.put(&r.user_data_64.to_le_bytes());
    e.put(&r.user_data_32.to_le_bytes());
    e.put(&r.reserved.to_le_bytes());
    e.put(&r.ledger.to_le_bytes());
    e.put(&r.code.to_le_bytes());
    e.put(&r.flags.to_le_bytes());
    e.put(&r.timestamp.to_le_bytes());
}

fn decode_account(buf: &[u8; BODY_LEN]) -> Account {
    let mut d = Dec { buf, at: 0 };
    // Struct expression fields are evaluated in the order written: the layout order.
    Account::from_raw(tb::account::Raw {
        id: d.u128(),
        debits_pending: d.u128(),
        debits_posted: d.u128(),
        credits_pending: d.u128(),
        credits_posted: d.u128(),
        user_data_128: d.u128(),
        user_data_64: d.u64(),
        user_data_32: d.u32(),
        reserved: d.u32(),
        ledger: d.u32(),
        code: d.u16(),
        flags: d.u16(),
        timestamp: d.u64(),
    })
}

fn encode_transfer(t: &Transfer, buf: &mut [u8; BODY_LEN]) {
    let r = t.as_raw();
    let mut e = Enc { buf, at: 0 };
    e.put(&r.id.to_le_bytes());
    e.put(&r.debit_account_id.to_le_bytes());
    e.put(&r.credit_account_id.to_le_bytes());
    e.put(&r.amount.to_le_bytes());
    e.put(&r.pending_id.to_le_bytes());
    e.put(&r.user_data_128.to_le_bytes());
    e.put(&r.user_data_64.to_le_bytes());
    e.put(&r.user_data_32.to_le_bytes());
    e.put(&r.timeout.to_le_bytes());
    e.put(&r.ledger.to_le_bytes());
    e.put(&r.code.to_le_bytes());
    e.put(&r.flags.to_le_bytes());
    e.put(&r.timestamp.to_le_bytes());
}

fn decode_transfer(buf: &[u8; BODY_LEN]) -> Transfer {
    let mut d = Dec { buf, at: 0 };
    Transfer::from_raw(tb::transfer::Raw {
        id: d.u128(),
        debit_account_id: d.u128(),
        credit_account_id: d.u128(),
        amount: d.u128(),
        pending_id: d.u128(),
        user_data_128: d.u128(),
        user_data_64: d.u64(),
        user_data_32: d.u32(),
        timeout: d.u32(),
        ledger: d.u32(),
        code: d.u16(),
        flags: d.u16(),
        timestamp: d.u64(),
    })
}

/// Writes one segment. Records must come in strictly increasing timestamp order
/// within `(after, until]`; anything else is an `InvalidInput` error and the segment
/// must be discarded.
pub struct SegmentWriter<W: Write> {
    w: BufWriter<W>,
    hasher: Sha256,
    header: SegmentHeader,
    accounts: u64,
    transfers: u64,
    first: u64,
    last: u64,
    bytes: u64,
}

impl<W: Write> SegmentWriter<W> {
    /// Writes the header.
    pub fn new(w: W, cluster_id: u128, after: u64, until: u64) -> io::Result<Self> {
        if until < after {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("segment interval ({after}, {until}] ends before it starts"),
            ));
        }
        let mut s = SegmentWriter {
            w: BufWriter::with_capacity(64 * 1024, w),
            hasher: Sha256::new(),
            header: SegmentHeader {
                version: FORMAT_VERSION,
                cluster_id,
                after,
                until,
            },
            accounts: 0,
            transfers: 0,
            first: 0,
            last: 0,
            bytes: 0,
        };
        let mut h = [0u8; HEADER_LEN];
        h[0..8].copy_from_slice(MAGIC);
        h[8..10].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
        h[10..26].copy_from_slice(&cluster_id.to_le_bytes());
        h[26..34].copy_from_slice(&after.to_le_bytes());
        h[34..42].copy_from_slice(&until.to_le_bytes());
        s.emit(&h)?;
        Ok(s)
    }

    /// The header this writer wrote.
    pub fn header(&self) -> &SegmentHeader {
        &self.header
    }

    fn emit(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.w.write_all(bytes)?;
        self.hasher.update(bytes);
        self.bytes += bytes.len() as u64;
        Ok(())
    }

    fn check_order(&self, what: &str, id: u128, ts: u64) -> io::Result<()> {
        let h = &self.header;
        if ts <= h.after || ts > h.until {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "{what} {id:#x} has timestamp {ts}, outside the segment's interval ({}, {}]",
                    h.after, h.until
                ),
            ));
        }
        if self.accounts + self.transfers > 0 && ts <= self.last {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "{what} {id:#x} has timestamp {ts}, not after the previous record's {}",
                    self.last
                ),
            ));
        }
        Ok(())
    }

    fn record(&mut self, tag: u8, body: &[u8; BODY_LEN], ts: u64) -> io::Result<()> {
        let mut rec = [0u8; RECORD_LEN];
        rec[0] = tag;
        rec[1..].copy_from_slice(body);
        self.emit(&rec)?;
        if self.accounts + self.transfers == 0 {
            self.first = ts;
        }
        self.last = ts;
        Ok(())
    }

    /// Appends an account, recreated by replay with its flags as they are (an account
    /// with `flags.closed` is recreated closed).
    pub fn push_account(&mut self, a: &Account) -> io::Result<()> {
        self.push_account_tagged(a, false)
    }

    /// Appends an account whose `flags.closed` was set by a closing transfer: replay
    /// creates it open. The row must have `flags.closed`.
    pub fn push_account_closed_by_transfer(&mut self, a: &Account) -> io::Result<()> {
        self.push_account_tagged(a, true)
    }

    fn push_account_tagged(&mut self, a: &Account, closed_by_transfer: bool) -> io::Result<()> {
        let r = a.as_raw();
        self.check_order("account", r.id, r.timestamp)?;
        let tag = if closed_by_transfer {
            if r.flags & ACCOUNT_CLOSED == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("account {:#x} is not closed", r.id),
                ));
            }
            TAG_ACCOUNT_CLOSED_BY_TRANSFER
        } else {
            TAG_ACCOUNT
        };
        let mut body = [0u8; BODY_LEN];
        encode_account(a, &mut body);
        self.record(tag, &body, r.timestamp)?;
        self.accounts += 1;
        Ok(())
    }

    /// Appends a transfer.
    pub fn push_transfer(&mut self, t: &Transfer) -> io::Result<()> {
        let r = t.as_raw();
        self.check_order("transfer", r.id, r.timestamp)?;
        let mut body = [0u8; BODY_LEN];
        encode_transfer(t, &mut body);
        self.record(TAG_TRANSFER, &body, r.timestamp)?;
        self.transfers += 1;
        Ok(())
    }

    /// Appends any event.
    pub fn push(&mut self, e: &Event) -> io::Result<()> {
        match e {
            Event::Account(a) => self.push_account_tagged(&a.account, a.closed_by_transfer),
            Event::Transfer(t) => self.push_transfer(t),
        }
    }

    /// Writes the trailer and flushes; returns the inner writer.
    pub fn finish(mut self) -> io::Result<(W, SegmentStats)> {
        let mut t = [0u8; TRAILER_LEN - 32];
        t[0] = TAG_TRAILER;
        t[1..9].copy_from_slice(&self.accounts.to_le_bytes());
        t[9..17].copy_from_slice(&self.transfers.to_le_bytes());
        t[17..25].copy_from_slice(&self.first.to_le_bytes());
        t[25..33].copy_from_slice(&self.last.to_le_bytes());
        self.emit(&t)?;
        let sha256: [u8; 32] = self.hasher.clone().finalize().into();
        self.w.write_all(&sha256)?;
        self.bytes += 32;
        let stats = SegmentStats {
            cluster_id: self.header.cluster_id,
            after: self.header.after,
            until: self.header.until,
            accounts: self.accounts,
            transfers: self.transfers,
            first_timestamp: self.first,
            last_timestamp: self.last,
            bytes: self.bytes,
            sha256,
        };
        let w = self.w.into_inner().map_err(|e| e.into_error())?;
        Ok((w, stats))
    }
}

/// Reads one segment, validating as it goes; at the end it checks the trailer
/// (counts, timestamps, SHA-256) and that nothing follows. Errors in the data are
/// `InvalidData` I/O errors carrying [`Code::Integrity`]; other I/O errors pass through.
pub struct SegmentReader<R: Read> {
    r: BufReader<R>,
    hasher: Sha256,
    header: SegmentHeader,
    accounts: u64,
    transfers: u64,
    first: u64,
    last: u64,
    bytes: u64,
    stats: Option<SegmentStats>,
    failed: bool,
}

impl<R: Read> SegmentReader<R> {
    /// Reads and checks the header.
    pub fn new(r: R) -> io::Result<Self> {
        let mut r = BufReader::with_capacity(64 * 1024, r);
        let mut h = [0u8; HEADER_LEN];
        read_exact_or(&mut r, &mut h, || {
            "the segment is truncated: it ends inside its header".to_owned()
        })?;
        if &h[0..8] != MAGIC {
            return Err(integrity(format!(
                "not a bkp TigerBeetle log segment: it starts with {:02x?}, not {:?}",
                &h[0..8],
                std::str::from_utf8(MAGIC).unwrap_or("BKPTBLG1")
            )));
        }
        let le64 = |s: &[u8]| {
            let mut b = [0u8; 8];
            b.copy_from_slice(s);
            u64::from_le_bytes(b)
        };
        let version = u16::from_le_bytes([h[8], h[9]]);
        if version != FORMAT_VERSION {
            return Err(integrity(format!(
                "log segment format version {version} is not supported (this bkp reads \
                 version {FORMAT_VERSION}); use the bkp release that wrote it"
            )));
        }
        let mut id = [0u8; 16];
        id.copy_from_slice(&h[10..26]);
        let header = SegmentHeader {
            version,
            cluster_id: u128::from_le_bytes(id),
            after: le64(&h[26..34]),
            until: le64(&h[34..42]),
        };
        if header.until < header.after {
            return Err(integrity(format!(
                "log segment header is corrupt: interval ({}, {}] ends before it starts",
                header.after, header.until
            )));
        }
        let mut hasher = Sha256::new();
        hasher.update(h);
        Ok(SegmentReader {
            r,
            hasher,
            header,
            accounts: 0,
            transfers: 0,
            first: 0,
            last: 0,
            bytes: HEADER_LEN as u64,
            stats: None,
            failed: false,
        })
    }

    pub fn header(&self) -> &SegmentHeader {
        &self.header
    }

    /// The trailer's figures, once the last event has been read and checked.
    pub fn stats(&self) -> Option<&SegmentStats> {
        self.stats.as_ref()
    }

    fn records(&self) -> u64 {
        self.accounts + self.transfers
    }

    /// The next event; `None` after the trailer has been read and checked.
    pub fn next_event(&mut self) -> io::Result<Option<Event>> {
        if self.stats.is_some() {
            return Ok(None);
        }
        if self.failed {
            return Err(integrity(
                "the log segment already failed verification".to_owned(),
            ));
        }
        let out = self.read_one();
        if out.is_err() {
            self.failed = true;
        }
        out
    }

    fn read_one(&mut self) -> io::Result<Option<Event>> {
        let n = self.records();
        let mut tag = [0u8; 1];
        read_exact_or(&mut self.r, &mut tag, || {
            format!("the log segment is truncated: it ends after {n} records without its trailer")
        })?;
        self.hasher.update(tag);
        self.bytes += 1;
        if tag[0] == TAG_TRAILER {
            self.read_trailer()?;
            return Ok(None);
        }
        let mut body = [0u8; BODY_LEN];
        read_exact_or(&mut self.r, &mut body, || {
            format!(
                "the log segment is truncated: it ends inside record {}",
                n + 1
            )
        })?;
        self.hasher.update(body);
        self.bytes += BODY_LEN as u64;
        let event = match tag[0] {
            TAG_ACCOUNT | TAG_ACCOUNT_CLOSED_BY_TRANSFER => {
                let account = decode_account(&body);
                let closed_by_transfer = tag[0] == TAG_ACCOUNT_CLOSED_BY_TRANSFER;
                if closed_by_transfer && account.as_raw().flags & ACCOUNT_CLOSED == 0 {
                    return Err(integrity(format!(
                        "log segment record {} says account {:#x} was closed by a transfer, \
                         but the account is not closed",
                        n + 1,
                        account.as_raw().id
                    )));
                }
                Event::Account(AccountRecord {
                    account,
                    closed_by_transfer,
                })
            }
            TAG_TRANSFER => Event::Transfer(decode_transfer(&body)),
            other => {
                return Err(integrity(format!(
                    "log segment record {} has unknown tag {other:#04x}",
                    n + 1
                )))
            }
        };
        let ts = event.timestamp();
        let h = self.header;
        if ts <= h.after || ts > h.until {
            return Err(integrity(format!(
                "log segment record {} ({} {:#x}) has timestamp {ts}, outside the segment's \
                 interval ({}, {}]",
                n + 1,
                event.kind().name(),
                event.id(),
                h.after,
                h.until
            )));
        }
        if n > 0 && ts <= self.last {
            return Err(integrity(format!(
                "log segment record {} has timestamp {ts}, not after the previous record's {}",
                n + 1,
                self.last
            )));
        }
        if n == 0 {
            self.first = ts;
        }
        self.last = ts;
        match event {
            Event::Account(_) => self.accounts += 1,
            Event::Transfer(_) => self.transfers += 1,
        }
        Ok(Some(event))
    }

    fn read_trailer(&mut self) -> io::Result<()> {
        let mut t = [0u8; TRAILER_LEN - 1];
        read_exact_or(&mut self.r, &mut t, || {
            "the log segment is truncated: it ends inside its trailer".to_owned()
        })?;
        self.hasher.update(&t[..32]);
        self.bytes += (TRAILER_LEN - 1) as u64;
        let le64 = |i: usize| {
            let mut b = [0u8; 8];
            b.copy_from_slice(&t[i..i + 8]);
            u64::from_le_bytes(b)
        };
        let (accounts, transfers, first, last) = (le64(0), le64(8), le64(16), le64(24));
        let digest: [u8; 32] = self.hasher.clone().finalize().into();
        if digest[..] != t[32..] {
            return Err(integrity(
                "the log segment's SHA-256 does not match its content: the segment is \
                 corrupt or was altered"
                    .to_owned(),
            ));
        }
        let checks = [
            (accounts, self.accounts, "account count"),
            (transfers, self.transfers, "transfer count"),
            (first, self.first, "first timestamp"),
            (last, self.last, "last timestamp"),
        ];
        for (said, seen, what) in checks {
            if said != seen {
                return Err(integrity(format!(
                    "the log segment's trailer gives {what} {said}, but the records give {seen}"
                )));
            }
        }
        let mut extra = [0u8; 1];
        loop {
            match self.r.read(&mut extra) {
                Ok(0) => break,
                Ok(_) => {
                    return Err(integrity(
                        "the log segment has data after its trailer".to_owned(),
                    ))
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        }
        let mut sha256 = [0u8; 32];
        sha256.copy_from_slice(&t[32..]);
        self.stats = Some(SegmentStats {
            cluster_id: self.header.cluster_id,
            after: self.header.after,
            until: self.header.until,
            accounts,
            transfers,
            first_timestamp: first,
            last_timestamp: last,
            bytes: self.bytes,
            sha256,
        });
        Ok(())
    }
}

impl<R: Read> Iterator for SegmentReader<R> {
    type Item = io::Result<Event>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed {
            return None;
        }
        self.next_event().transpose()
    }
}

fn read_exact_or<R: Read>(
    r: &mut R,
    buf: &mut [u8],
    truncated: impl FnOnce() -> String,
) -> io::Result<()> {
    r.read_exact(buf).map_err(|e| match e.kind() {
        io::ErrorKind::UnexpectedEof => integrity(truncated()),
        _ => e,
    })
}

/// Reads a whole segment and checks it, without keeping its events.
pub fn verify_segment<R: Read>(r: R) -> io::Result<SegmentStats> {
    let mut s = SegmentReader::new(r)?;
    while s.next_event()?.is_some() {}
    s.stats
        .ok_or_else(|| integrity("the log segment has no trailer".to_owned()))
}

// ---------------------------------------------------------------------------------
// Client plumbing
// ---------------------------------------------------------------------------------

/// A client with its own runtime, for synchronous callers; counts requests.
struct Conn<'a> {
    cfg: &'a ClusterConfig,
    rt: tokio::runtime::Runtime,
    client: tb::Client,
    requests: Cell<u64>,
}

impl Conn<'_> {
    /// Runs one request, bounded by the configured timeout.
    fn call<F: Future>(&self, what: &str, fut: F) -> Result<F::Output> {
        self.requests.set(self.requests.get() + 1);
        self.rt
            .block_on(async { tokio::time::timeout(self.cfg.timeout, fut).await })
            .map_err(|_| {
                coded(
                    Code::Transient,
                    format!(
                        "the TigerBeetle cluster at {} did not answer {what} within {:?}: check \
                         that it is running and that the addresses are right",
                        self.cfg.addresses, self.cfg.timeout
                    ),
                )
            })
    }

    fn send_error(&self, what: &str, e: SendError) -> anyhow::Error {
        let addresses = &self.cfg.addresses;
        match e.kind() {
            SendErrorKind::ClientEvicted | SendErrorKind::ClientShutdown => coded(
                Code::Transient,
                format!("the TigerBeetle cluster at {addresses} ended this client's session during {what} ({e}); retry"),
            ),
            SendErrorKind::ClientReleaseTooLow | SendErrorKind::ClientReleaseTooHigh => anyhow!(
                "the TigerBeetle cluster at {addresses} refused this client ({e}): bkp's client \
                 is release 0.16.78; run a cluster release that accepts it"
            ),
            SendErrorKind::TooMuchData => anyhow!(
                "{what} to the TigerBeetle cluster at {addresses} is larger than the cluster's \
                 request limit ({e}); the cluster runs with a smaller --limit-request than the \
                 source cluster"
            ),
            _ => anyhow!("{what} to the TigerBeetle cluster at {addresses} failed: {e}"),
        }
    }

    fn query_accounts(&self, min: u64, max: u64, limit: u32, rev: bool) -> Result<Vec<Account>> {
        let rows = self
            .call(
                "query_accounts",
                self.client
                    .query_accounts(query_filter(min, max, limit, rev)),
            )?
            .map_err(|e| self.send_error("query_accounts", e))?;
        check_page("query_accounts", &rows, min, max, limit, rev)?;
        Ok(rows)
    }

    fn query_transfers(&self, min: u64, max: u64, limit: u32, rev: bool) -> Result<Vec<Transfer>> {
        let rows = self
            .call(
                "query_transfers",
                self.client
                    .query_transfers(query_filter(min, max, limit, rev)),
            )?
            .map_err(|e| self.send_error("query_transfers", e))?;
        check_page("query_transfers", &rows, min, max, limit, rev)?;
        Ok(rows)
    }

    /// The newest timestamp of any account or transfer; 0 for an empty cluster.
    fn newest(&self) -> Result<u64> {
        let a = self.query_accounts(0, 0, 1, true)?;
        let t = self.query_transfers(0, 0, 1, true)?;
        Ok(a.first()
            .map(Row::ts)
            .max(t.first().map(Row::ts))
            .unwrap_or(0))
    }

    fn lookup_accounts(&self, ids: Vec<u128>) -> Result<HashMap<u128, Account>> {
        let rows = self
            .call("lookup_accounts", self.client.lookup_accounts(ids))?
            .map_err(|e| self.send_error("lookup_accounts", e))?;
        Ok(rows.into_iter().map(|a| (a.as_raw().id, a)).collect())
    }

    fn lookup_transfers(&self, ids: Vec<u128>) -> Result<HashMap<u128, Transfer>> {
        let rows = self
            .call("lookup_transfers", self.client.lookup_transfers(ids))?
            .map_err(|e| self.send_error("lookup_transfers", e))?;
        Ok(rows.into_iter().map(|t| (t.as_raw().id, t)).collect())
    }
}

fn query_filter(min: u64, max: u64, limit: u32, reversed: bool) -> Box<QueryFilter> {
    // `limit` is one of this module's nonzero constants.
    let mut f = QueryFilter::new(limit);
    let raw = f.as_raw_mut();
    raw.timestamp_min = min;
    raw.timestamp_max = max;
    if reversed {
        raw.flags = tb::core::query_filter::Flags::REVERSED.bits();
    }
    Box::new(f)
}

trait Row {
    fn ts(&self) -> u64;
}

impl Row for Account {
    fn ts(&self) -> u64 {
        self.as_raw().timestamp
    }
}

impl Row for Transfer {
    fn ts(&self) -> u64 {
        self.as_raw().timestamp
    }
}

/// A query answer must be ordered as asked, inside the range, and within the limit;
/// anything else means the query does not do what capture relies on.
fn check_page<T: Row>(
    what: &str,
    rows: &[T],
    min: u64,
    max: u64,
    limit: u32,
    rev: bool,
) -> Result<()> {
    let in_range = |ts: u64| ts >= min.max(1) && (max == 0 || ts <= max);
    let ordered = rows.windows(2).all(|w| {
        if rev {
            w[0].ts() > w[1].ts()
        } else {
            w[0].ts() < w[1].ts()
        }
    });
    if rows.len() > limit as usize || !ordered || !rows.iter().all(|r| in_range(r.ts())) {
        bail!(
            "{what} for timestamps [{min}, {max}] (limit {limit}, reversed {rev}) returned {} \
             rows that are out of order, out of range or over the limit: the cluster does not \
             answer queries as this bkp expects; no segment was written from it",
            rows.len()
        );
    }
    Ok(())
}

fn check_config(cfg: &ClusterConfig) -> Result<()> {
    if cfg.addresses.trim().is_empty() {
        return Err(coded(
            Code::Config,
            "the TigerBeetle addresses are empty: name the replicas",
        ));
    }
    if cfg.timeout.is_zero() {
        return Err(coded(
            Code::Config,
            "the TigerBeetle timeout must be longer than zero",
        ));
    }
    Ok(())
}

fn with_client<T>(cfg: &ClusterConfig, f: impl FnOnce(&Conn) -> Result<T>) -> Result<T> {
    check_config(cfg)?;
    let session =
        crate::tbclient::Session::open(cfg.cluster_id, &cfg.addresses, "TigerBeetle addresses")?;
    let conn = Conn {
        cfg,
        rt: session.rt,
        client: session.client,
        requests: Cell::new(0),
    };
    let out = f(&conn);
    let Conn { rt, client, .. } = conn;
    crate::tbclient::Session { rt, client }.close();
    out
}

/// A result's snake_case name as in TigerBeetle's docs (the crate panics on codes it
/// does not know, so those are shown by number).
fn transfer_result_name(kind: CreateTransferErrorKind, code: u32) -> String {
    match kind {
        CreateTransferErrorKind::UnstableUncategorized => format!("result code {code}"),
        kind => kind.into_snake_case_str().to_owned(),
    }
}

fn account_result_name(kind: CreateAccountErrorKind, code: u32) -> String {
    match kind {
        CreateAccountErrorKind::UnstableUncategorized => format!("result code {code}"),
        kind => kind.into_snake_case_str().to_owned(),
    }
}

// ---------------------------------------------------------------------------------
// Capture
// ---------------------------------------------------------------------------------

/// What [`capture`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CaptureStats {
    pub segment: SegmentStats,
    /// Requests sent to the cluster.
    pub requests: u64,
    /// Closed accounts whose closing was looked up (one request each).
    pub closed_accounts: u64,
}

/// One ascending, bounded cursor over one kind.
struct Cursor<T> {
    page: VecDeque<T>,
    next_min: u64,
    until: u64,
    exhausted: bool,
}

impl<T: Row> Cursor<T> {
    fn new(after: u64, until: u64) -> Self {
        Cursor {
            page: VecDeque::new(),
            next_min: after + 1,
            until,
            exhausted: after >= until,
        }
    }

    /// The next row's timestamp, fetching a page when needed.
    fn peek(&mut self, fetch: impl FnOnce(u64, u64) -> Result<Vec<T>>) -> Result<Option<u64>> {
        if self.page.is_empty() && !self.exhausted {
            let rows = fetch(self.next_min, self.until)?;
            match rows.last().map(Row::ts) {
                None => self.exhausted = true,
                Some(last) if last >= self.until => self.exhausted = true,
                Some(last) => self.next_min = last + 1,
            }
            self.page = rows.into();
        }
        Ok(self.page.front().map(Row::ts))
    }
}

/// The newest timestamp the cluster holds (0 when empty): two requests. A capture
/// after a watermark at or beyond it would be empty.
pub fn newest_timestamp(cfg: &ClusterConfig) -> Result<u64> {
    with_client(cfg, |c| c.newest())
}

/// Writes one segment with every account and transfer created after `after`, up to
/// the newest row at the time of the call (the segment's `until`, in the returned
/// stats; pass it as the next call's `after`). On error `out` holds a partial
/// segment that must be discarded.
pub fn capture(cfg: &ClusterConfig, after: u64, out: &mut dyn Write) -> Result<CaptureStats> {
    if after >= 1 << 63 {
        bail!("watermark {after} is not a TigerBeetle timestamp (they are below 2^63)");
    }
    with_client(cfg, |c| {
        let newest = c.newest()?;
        if newest < after {
            return Err(coded(
                Code::Integrity,
                format!(
                    "the TigerBeetle cluster at {} holds nothing newer than timestamp {newest}, \
                     but the log chain already covers up to {after}: this is not the cluster the \
                     chain was captured from, or it was restored to an earlier state. Start a new \
                     chain with a snapshot",
                    cfg.addresses
                ),
            ));
        }
        let until = newest;
        let mut w = SegmentWriter::new(out, cfg.cluster_id, after, until)
            .context("cannot write the log segment")?;
        let mut accounts = Cursor::<Account>::new(after, until);
        let mut transfers = Cursor::<Transfer>::new(after, until);
        let mut closed = 0;
        loop {
            let a = accounts.peek(|min, max| c.query_accounts(min, max, QUERY_LIMIT, false))?;
            let t = transfers.peek(|min, max| c.query_transfers(min, max, QUERY_LIMIT, false))?;
            match (a, t) {
                (None, None) => break,
                (Some(a), Some(t)) if a == t => bail!(
                    "the cluster at {} returned an account and a transfer with the same \
                     timestamp {a}",
                    cfg.addresses
                ),
                (Some(a), t) if t.is_none_or(|t| a < t) => {
                    let Some(row) = accounts.page.pop_front() else {
                        unreachable!("peek returned a timestamp")
                    };
                    if row.as_raw().flags & ACCOUNT_CLOSED != 0 {
                        closed += 1;
                        if closed_by_transfer(c, &row)? {
                            w.push_account_closed_by_transfer(&row)
                        } else {
                            w.push_account(&row)
                        }
                    } else {
                        w.push_account(&row)
                    }
                    .context("cannot write the log segment")?;
                }
                _ => {
                    let Some(row) = transfers.page.pop_front() else {
                        unreachable!("peek returned a timestamp")
                    };
                    w.push_transfer(&row)
                        .context("cannot write the log segment")?;
                }
            }
        }
        let (_, segment) = w.finish().context("cannot write the log segment")?;
        Ok(CaptureStats {
            segment,
            requests: c.requests.get(),
            closed_accounts: closed,
        })
    })
}

/// Whether a closed account was closed by a transfer (it has at least one transfer)
/// rather than created closed (it can never have one).
fn closed_by_transfer(c: &Conn, a: &Account) -> Result<bool> {
    let id = a.as_raw().id;
    let filter = tb::account::Filter::new(id, 1)
        .with_flags(tb::account::FilterFlags::DEBITS | tb::account::FilterFlags::CREDITS);
    let rows = c
        .call(
            "get_account_transfers",
            c.client.get_account_transfers(Box::new(filter)),
        )?
        .map_err(|e| c.send_error("get_account_transfers", e))?;
    match rows.first() {
        None => Ok(false),
        Some(t) => {
            let r = t.as_raw();
            if (r.debit_account_id != id && r.credit_account_id != id)
                || r.timestamp <= a.as_raw().timestamp
            {
                bail!(
                    "get_account_transfers for account {id:#x} returned transfer {:#x}, which \
                     does not belong to it: the cluster does not answer as this bkp expects",
                    r.id
                );
            }
            Ok(true)
        }
    }
}

// ---------------------------------------------------------------------------------
// Replay
// ---------------------------------------------------------------------------------

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
#[derive(Debug, Clone, Default, PartialEq, Eq)]
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
    pub requests: u64,
    /// Pending transfers replayed with `timeout` cleared to 0.
    pub timeouts_cleared: u64,
    /// Pending transfers still pending here that the source expired by
    /// `covered_until`: their amounts are still reserved here.
    pub expired_in_source: Vec<PendingTimeout>,
    /// Pending transfers still pending here whose source timeout was cleared and falls
    /// after `covered_until`: they will not expire here. `covered_until` is the newest
    /// row's timestamp; when the segments are known to reach a later point (the last
    /// capture ran later), use [`ReplayStats::expired_by`] with that point.
    pub timeout_cleared: Vec<PendingTimeout>,
}

impl ReplayStats {
    /// The pending transfers still pending here that the source had expired by
    /// timestamp `t` (pass the restore point when the segments reach it).
    pub fn expired_by(&self, t: u64) -> Vec<PendingTimeout> {
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

struct Replayer<'c, 'a> {
    c: &'c Conn<'a>,
    newest: u64,
    stats: ReplayStats,
    batch: Vec<Event>,
    kind: Kind,
    chain_open: bool,
    chain_start: usize,
    verify: Vec<Event>,
    pending: HashMap<u128, Pending>,
}

/// Replays `segments` (in chain order) into the cluster `cfg`, up to and including
/// timestamp `up_to`. See the module documentation for what is checked and what
/// cannot be reproduced.
pub fn replay<R, I>(cfg: &ClusterConfig, segments: I, up_to: u64) -> Result<ReplayStats>
where
    R: Read,
    I: IntoIterator<Item = Result<SegmentReader<R>>>,
{
    with_client(cfg, |c| {
        let newest = c.newest()?;
        if newest > up_to {
            bail!(
                "the TigerBeetle cluster at {} already holds rows up to timestamp {newest}, \
                 past the requested point {up_to}: restore into a fresh cluster or from an \
                 older snapshot",
                cfg.addresses
            );
        }
        let mut r = Replayer {
            c,
            newest,
            stats: ReplayStats {
                newest_before: newest,
                last_timestamp: newest,
                ..ReplayStats::default()
            },
            batch: Vec::new(),
            kind: Kind::Account,
            chain_open: false,
            chain_start: 0,
            verify: Vec::new(),
            pending: HashMap::new(),
        };
        let mut covered = newest;
        let mut last_seen = 0u64;
        let mut past_up_to = false;
        for (n, seg) in segments.into_iter().enumerate() {
            let mut seg = seg.with_context(|| format!("cannot open log segment {}", n + 1))?;
            let h = *seg.header();
            if h.after >= up_to {
                // Nothing in it or after it is wanted.
                break;
            }
            let name = format!("log segment {} ({}, {}]", n + 1, h.after, h.until);
            if r.stats.segments == 0 {
                r.stats.source_cluster_id = h.cluster_id;
            } else if h.cluster_id != r.stats.source_cluster_id {
                return Err(coded(
                    Code::Integrity,
                    format!(
                        "{name} comes from cluster {:#x}, the previous ones from {:#x}: \
                         segments of different clusters cannot be replayed together",
                        h.cluster_id, r.stats.source_cluster_id
                    ),
                ));
            }
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
            r.stats.segments += 1;
            while let Some(ev) = seg
                .next_event()
                .with_context(|| format!("cannot read {name}"))?
            {
                let ts = ev.timestamp();
                if ts <= last_seen {
                    r.stats.duplicates += 1;
                    continue;
                }
                last_seen = ts;
                if ts <= newest {
                    r.verify.push(ev);
                    if r.verify.len() >= LOOKUP_BATCH {
                        r.verify_held()?;
                    }
                } else if ts <= up_to {
                    r.push(ev)?;
                } else {
                    // Keep reading: the trailer vouches for what was replayed.
                    past_up_to = true;
                }
            }
            covered = covered.max(h.until);
            if past_up_to {
                break;
            }
        }
        r.verify_held()?;
        if r.chain_open {
            if !past_up_to {
                return Err(coded(
                    Code::Integrity,
                    format!(
                        "the last log segment ends inside a linked chain (at timestamp {}): a \
                         segment is missing or was not captured by bkp",
                        last_seen
                    ),
                ));
            }
            let dropped = r.batch.len() - r.chain_start;
            r.batch.truncate(r.chain_start);
            r.stats.chain_events_dropped = dropped as u64;
            r.chain_open = false;
        }
        r.flush(r.batch.len())?;
        r.stats.covered_until = covered.min(up_to);
        let covered_until = r.stats.covered_until;
        let mut expired = Vec::new();
        let mut cleared = Vec::new();
        for (&id, p) in &r.pending {
            if p.source_timeout == 0 || p.target_timeout != 0 {
                continue;
            }
            let info = PendingTimeout {
                id,
                timestamp: p.timestamp,
                timeout: p.source_timeout,
                expires_at: p.expires_at(p.source_timeout),
            };
            if info.expires_at <= covered_until {
                expired.push(info);
            } else {
                cleared.push(info);
            }
        }
        expired.sort_by_key(|p| p.timestamp);
        cleared.sort_by_key(|p| p.timestamp);
        r.stats.expired_in_source = expired;
        r.stats.timeout_cleared = cleared;
        r.stats.requests = c.requests.get();
        Ok(r.stats)
    })
}

impl Replayer<'_, '_> {
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
            if self.batch.len() >= BATCH && self.chain_start > 0 {
                self.flush(self.chain_start)?;
            }
        } else if !self.batch.is_empty() && (kind != self.kind || self.batch.len() >= BATCH) {
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

    /// Sends the first `n` events of the batch (complete chains only).
    fn flush(&mut self, n: usize) -> Result<()> {
        if n == 0 {
            return Ok(());
        }
        let events: Vec<Event> = self.batch.drain(..n).collect();
        self.chain_start = self.chain_start.saturating_sub(n);
        self.stats.batches += 1;
        match self.kind {
            Kind::Account => self.send_accounts(&events),
            Kind::Transfer => self.send_transfers(&events),
        }?;
        if let Some(last) = events.last() {
            self.stats.last_timestamp = last.timestamp();
        }
        Ok(())
    }

    fn send_accounts(&mut self, events: &[Event]) -> Result<()> {
        let records: Vec<&AccountRecord> = events
            .iter()
            .filter_map(|e| match e {
                Event::Account(a) => Some(a),
                Event::Transfer(_) => None,
            })
            .collect();
        let rows: Vec<Account> = records.iter().map(|a| import_account(a)).collect();
        let failures = match self.c.call(
            "create_accounts",
            self.c.client.create_accounts(rows.clone()),
        )? {
            Ok(()) => Vec::new(),
            Err(CreateAccountsError::Send(e)) => {
                return Err(self.c.send_error("create_accounts", e))
            }
            Err(CreateAccountsError::Api(errs)) => errs
                .as_slice()
                .iter()
                .map(|e| {
                    let exists = matches!(e.kind(), CreateAccountErrorKind::Exists);
                    let name = account_result_name(e.kind(), e.inner().code().get());
                    (e.index() as usize, exists, name)
                })
                .collect(),
            Err(e) => bail!("create_accounts failed: {e}"),
        };
        self.check_failures(events, &failures)?;
        let exists: Vec<u128> = failures
            .iter()
            .filter(|(_, exists, _)| *exists)
            .filter_map(|(i, _, _)| rows.get(*i).map(|a| a.as_raw().id))
            .collect();
        if !exists.is_empty() {
            let found = self.c.lookup_accounts(exists.clone())?;
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
        self.stats.accounts += records.len() as u64;
        Ok(())
    }

    fn send_transfers(&mut self, events: &[Event]) -> Result<()> {
        let transfers: Vec<&Transfer> = events
            .iter()
            .filter_map(|e| match e {
                Event::Transfer(t) => Some(t),
                Event::Account(_) => None,
            })
            .collect();
        // Track pending transfers; find posts/voids of pending transfers not created
        // by this replay, which need a look at the target first.
        let mut unknown = Vec::new();
        for t in &transfers {
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
                    None => unknown.push(**t),
                }
            }
        }
        if !unknown.is_empty() {
            let found = self
                .c
                .lookup_transfers(unknown.iter().map(|t| t.as_raw().pending_id).collect())?;
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
        let rows: Vec<Transfer> = transfers.iter().map(|t| import_transfer(t)).collect();
        let failures = match self.c.call(
            "create_transfers",
            self.c.client.create_transfers(rows.clone()),
        )? {
            Ok(()) => Vec::new(),
            Err(CreateTransfersError::Send(e)) => {
                return Err(self.c.send_error("create_transfers", e))
            }
            Err(CreateTransfersError::Api(errs)) => errs
                .as_slice()
                .iter()
                .map(|e| {
                    let exists = matches!(e.kind(), CreateTransferErrorKind::Exists);
                    let name = transfer_result_name(e.kind(), e.inner().code().get());
                    (e.index() as usize, exists, name)
                })
                .collect(),
            Err(e) => bail!("create_transfers failed: {e}"),
        };
        self.check_failures(events, &failures)?;
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
            let found = self.c.lookup_transfers(check.clone())?;
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
        self.stats.transfers += transfers.len() as u64;
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
            bail!(
                "transfer {:#x} (timestamp {}) posts or voids pending transfer {pid:#x}, which \
                 the target holds from a restored snapshot with a timeout of {} s (due at \
                 timestamp {expires_at}): the target cluster expires it by its own clock, so \
                 TigerBeetle cannot accept this post or void (TigerBeetle 0.16.78 was seen to \
                 crash on it). Restore from a snapshot taken before pending transfer {pid:#x} \
                 was created, or replay all segments into a fresh cluster",
                r.id,
                r.timestamp,
                p.target_timeout
            );
        }
        Ok(())
    }

    /// Stops at the first rejection (other than `exists`), naming the event.
    fn check_failures(&self, events: &[Event], failures: &[(usize, bool, String)]) -> Result<()> {
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

    /// Names pending transfers that the source had expired before `ts`.
    fn expiry_hint(&self, ts: u64) -> String {
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
            "; {} pending transfer(s) had expired in the source before this event ({}{}), but \
             TigerBeetle cannot import an expiry, so their amounts are still reserved (and \
             accounts they closed still closed) in the target",
            expired.len(),
            list.join(", "),
            if expired.len() > 5 { ", ..." } else { "" }
        )
    }

    /// Checks that the target holds the buffered events it is said to hold.
    fn verify_held(&mut self) -> Result<()> {
        if self.verify.is_empty() {
            return Ok(());
        }
        let events = std::mem::take(&mut self.verify);
        let account_ids: Vec<u128> = events
            .iter()
            .filter(|e| e.kind() == Kind::Account)
            .map(Event::id)
            .collect();
        let transfer_ids: Vec<u128> = events
            .iter()
            .filter(|e| e.kind() == Kind::Transfer)
            .map(Event::id)
            .collect();
        let accounts = if account_ids.is_empty() {
            HashMap::new()
        } else {
            self.c.lookup_accounts(account_ids)?
        };
        let transfers = if transfer_ids.is_empty() {
            HashMap::new()
        } else {
            self.c.lookup_transfers(transfer_ids)?
        };
        for ev in &events {
            let diff = match ev {
                Event::Account(a) => match accounts.get(&ev.id()) {
                    None => Some("it is missing".to_owned()),
                    Some(have) => account_difference(&a.account, have),
                },
                Event::Transfer(t) => match transfers.get(&ev.id()) {
                    None => Some("it is missing".to_owned()),
                    Some(have) => {
                        let d = transfer_difference(t, have);
                        if d.is_none() {
                            self.track_held(t, have);
                        }
                        d
                    }
                },
            };
            if let Some(diff) = diff {
                bail!(
                    "the target cluster's newest row has timestamp {}, so it should already \
                     hold {} {:#x} (timestamp {}) from the segments, but {diff}: the target is \
                     not a restore of this source, or an earlier replay stopped midway; restore \
                     into a fresh cluster",
                    self.newest,
                    ev.kind().name(),
                    ev.id(),
                    ev.timestamp()
                );
            }
        }
        self.stats.skipped_verified += events.len() as u64;
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
    use crate::exit::classify;

    fn account(id: u128, ts: u64, flags: u16) -> Account {
        let mut a = Account::new(id, 7, 1);
        let r = a.as_raw_mut();
        r.timestamp = ts;
        r.flags = flags;
        r.debits_posted = u128::MAX - 3;
        r.credits_pending = 0x0102_0304_0506_0708_090a_0b0c_0d0e_0f10;
        r.user_data_128 = u128::MAX - 1;
        r.user_data_64 = u64::MAX;
        r.user_data_32 = 0xdead_beef;
        a
    }

    fn transfer(id: u128, ts: u64) -> Transfer {
        let mut t = Transfer::new(id)
            .with_debit_account_id(u128::MAX - 1)
            .with_credit_account_id(2)
            .with_amount(u128::MAX - 7)
            .with_ledger(7)
            .with_code(9)
            .with_user_data_64(42)
            .with_timeout(30)
            .with_flags(tb::transfer::Flags::PENDING);
        t.as_raw_mut().timestamp = ts;
        t.as_raw_mut().pending_id = 5;
        t
    }

    fn sample() -> Vec<u8> {
        let mut w = SegmentWriter::new(Vec::new(), 0xabc, 100, 200).unwrap();
        w.push_account(&account(1, 101, 0)).unwrap();
        w.push_transfer(&transfer(10, 102)).unwrap();
        w.push_account_closed_by_transfer(&account(2, 150, ACCOUNT_CLOSED))
            .unwrap();
        w.push_transfer(&transfer(11, 200)).unwrap();
        let (bytes, stats) = w.finish().unwrap();
        assert_eq!(stats.bytes as usize, bytes.len());
        assert_eq!(
            bytes.len(),
            HEADER_LEN + 4 * RECORD_LEN + TRAILER_LEN,
            "documented sizes"
        );
        bytes
    }

    fn account_bytes(a: &Account) -> [u8; BODY_LEN] {
        let mut b = [0u8; BODY_LEN];
        encode_account(a, &mut b);
        b
    }

    fn transfer_bytes(t: &Transfer) -> [u8; BODY_LEN] {
        let mut b = [0u8; BODY_LEN];
        encode_transfer(t, &mut b);
        b
    }

    fn code_of(e: io::Error) -> Option<Code> {
        classify(&anyhow::Error::new(e))
    }

    #[test]
    fn round_trip_keeps_every_field() {
        let bytes = sample();
        assert_eq!(&bytes[..8], b"BKPTBLG1");
        assert_eq!(&bytes[8..10], &[1, 0]);
        assert_eq!(bytes[HEADER_LEN], TAG_ACCOUNT);
        // Account 1 body: id at 0, debits_posted at 32, flags at 118, timestamp at 120.
        let body = &bytes[HEADER_LEN + 1..HEADER_LEN + RECORD_LEN];
        assert_eq!(&body[0..16], &1u128.to_le_bytes());
        assert_eq!(&body[32..48], &(u128::MAX - 3).to_le_bytes());
        assert_eq!(&body[120..128], &101u64.to_le_bytes());
        let t = &bytes[HEADER_LEN + RECORD_LEN + 1..HEADER_LEN + 2 * RECORD_LEN];
        assert_eq!(&t[48..64], &(u128::MAX - 7).to_le_bytes());
        assert_eq!(&t[108..112], &30u32.to_le_bytes());
        let mut r = SegmentReader::new(&bytes[..]).unwrap();
        assert_eq!(
            *r.header(),
            SegmentHeader {
                version: 1,
                cluster_id: 0xabc,
                after: 100,
                until: 200
            }
        );
        let events: Vec<Event> = r.by_ref().collect::<io::Result<_>>().unwrap();
        assert_eq!(events.len(), 4);
        match (&events[0], &events[1], &events[2]) {
            (Event::Account(a), Event::Transfer(t), Event::Account(c)) => {
                assert_eq!(
                    account_bytes(&a.account),
                    account_bytes(&account(1, 101, 0))
                );
                assert!(!a.closed_by_transfer);
                assert_eq!(transfer_bytes(t), transfer_bytes(&transfer(10, 102)));
                assert!(c.closed_by_transfer);
            }
            other => panic!("unexpected events {other:?}"),
        }
        let stats = *r.stats().unwrap();
        assert_eq!(
            (
                stats.accounts,
                stats.transfers,
                stats.first_timestamp,
                stats.last_timestamp
            ),
            (2, 2, 101, 200)
        );
        assert_eq!(verify_segment(&bytes[..]).unwrap(), stats);
    }

    /// The documented byte layout is TigerBeetle's own `extern struct` layout.
    #[cfg(target_endian = "little")]
    #[test]
    fn body_layout_matches_tigerbeetle_structs() {
        let a = account(
            u128::MAX - 1,
            0x0102_0304_0506_0708,
            ACCOUNT_CLOSED | ACCOUNT_LINKED,
        );
        let t = transfer(u128::MAX - 2, 0x1112_1314_1516_1718);
        // SAFETY: both are 128-byte `repr(C)` plain-old-data structs without padding.
        let (ra, rt) = unsafe {
            (
                std::slice::from_raw_parts((&a as *const Account).cast::<u8>(), BODY_LEN),
                std::slice::from_raw_parts((&t as *const Transfer).cast::<u8>(), BODY_LEN),
            )
        };
        assert_eq!(&account_bytes(&a)[..], ra);
        assert_eq!(&transfer_bytes(&t)[..], rt);
        let back = decode_transfer(&transfer_bytes(&t));
        assert_eq!(transfer_bytes(&back), transfer_bytes(&t));
        let back = decode_account(&account_bytes(&a));
        assert_eq!(account_bytes(&back), account_bytes(&a));
    }

    #[test]
    fn writer_enforces_order_and_interval() {
        let mut w = SegmentWriter::new(Vec::new(), 1, 100, 200).unwrap();
        assert!(w.push_account(&account(1, 100, 0)).is_err(), "at after");
        assert!(w.push_account(&account(1, 201, 0)).is_err(), "past until");
        w.push_account(&account(1, 150, 0)).unwrap();
        assert!(
            w.push_transfer(&transfer(2, 150)).is_err(),
            "same timestamp"
        );
        assert!(w.push_transfer(&transfer(2, 149)).is_err(), "regress");
        assert!(w
            .push_account_closed_by_transfer(&account(3, 160, 0))
            .is_err());
        assert!(SegmentWriter::new(Vec::new(), 1, 5, 4).is_err());
        let (bytes, stats) = SegmentWriter::new(Vec::new(), 1, 7, 7)
            .unwrap()
            .finish()
            .unwrap();
        assert_eq!((stats.first_timestamp, stats.last_timestamp), (0, 0));
        assert_eq!(verify_segment(&bytes[..]).unwrap().accounts, 0);
    }

    #[test]
    fn every_truncation_is_an_integrity_error() {
        let bytes = sample();
        for len in 0..bytes.len() {
            let e = verify_segment(&bytes[..len]).unwrap_err();
            assert_eq!(code_of(e), Some(Code::Integrity), "length {len}");
        }
        let mut longer = bytes.clone();
        longer.push(0);
        let e = verify_segment(&longer[..]).unwrap_err();
        assert!(e.to_string().contains("after its trailer"), "{e}");
        assert_eq!(code_of(e), Some(Code::Integrity));
    }

    #[test]
    fn every_flipped_byte_is_an_integrity_error() {
        let bytes = sample();
        for i in 0..bytes.len() {
            for bit in [0x01u8, 0x80] {
                let mut bad = bytes.clone();
                bad[i] ^= bit;
                let e = verify_segment(&bad[..]).unwrap_err();
                assert_eq!(code_of(e), Some(Code::Integrity), "byte {i} bit {bit:#x}");
            }
        }
    }

    #[test]
    fn reader_names_what_is_wrong() {
        let bytes = sample();
        let mut bad = bytes.clone();
        bad[0] = b'X';
        assert!(verify_segment(&bad[..])
            .unwrap_err()
            .to_string()
            .contains("not a bkp TigerBeetle log segment"));
        let mut bad = bytes.clone();
        bad[8] = 2;
        assert!(verify_segment(&bad[..])
            .unwrap_err()
            .to_string()
            .contains("version 2"));
        let mut bad = bytes.clone();
        bad[HEADER_LEN] = 9;
        assert!(verify_segment(&bad[..])
            .unwrap_err()
            .to_string()
            .contains("unknown tag"));
        let mut bad = bytes.clone();
        let last = bad.len() - 1;
        bad[last] ^= 1;
        assert!(verify_segment(&bad[..])
            .unwrap_err()
            .to_string()
            .contains("SHA-256"));
        let e = verify_segment(&bytes[..bytes.len() - 40]).unwrap_err();
        assert!(e.to_string().contains("truncated"), "{e}");
    }

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
