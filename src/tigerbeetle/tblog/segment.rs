//! The log segment format: [`SegmentWriter`], [`SegmentReader`] and
//! [`verify_segment`], with their round-trip and damage tests.
//!
//! # Segment format, versions 2 and 3
//!
//! All integers little-endian. Offsets in bytes. Version 2 adds expiry records (tag
//! 4) and their count in the trailer; version 1 segments (written by earlier bkp
//! releases, without expiries) are still read. Version 3 adds a floor per row kind
//! (below), and is written whenever a floor lies below `after`: that is nearly
//! every segment. The floors are the chain's marks per kind (the newest account
//! and the newest transfer captured before), and those two rows have different
//! timestamps, so at most one of them is `after`. Version 2 is written for a
//! chain's first segment (`after` 0) and for one that continues a manifest
//! without marks per kind (an earlier release's: both floors are then `after`).
//!
//! Header, 42 bytes (version 3: 58):
//! - 0..8: magic `BKPTBLG1` (ASCII);
//! - 8..10: format version, u16 = 3, 2 or 1;
//! - 10..26: source cluster id, u128;
//! - 26..34: `after`, u64: interval start, exclusive (0 = from the beginning);
//! - 34..42: `until`, u64: interval end, inclusive (`until` ≥ `after`);
//! - version 3 only: 42..50 `accounts_after`, 50..58 `transfers_after`, u64, each
//!   ≤ `after`: the floors of the two row kinds (in versions 1 and 2, `after`).
//!
//! Records, 129 bytes each, in strictly increasing timestamp order, every timestamp
//! in `(floor, until]`, where the floor is `accounts_after` for accounts,
//! `transfers_after` for transfers and `after` for expiries. Why floors: TigerBeetle
//! lets an *imported* row's timestamp lie anywhere after the newest row of its own
//! kind, so an account imported after a capture may carry a timestamp below that
//! capture's `until` (which a newer transfer set); the next capture reads each kind
//! after its own newest timestamp, and such a row lands below `after`. One tag byte, then the 128-byte TigerBeetle struct with every
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
//! - tag 4 (version 2), expiry: the cluster expired a pending transfer (its timeout
//!   ran out). An expiry is no row: it comes from TigerBeetle's change events and
//!   has a timestamp of its own. Body: 0 `pending_id` u128 (the expired transfer),
//!   16 `amount` u128, 32 `debit_account_id` u128, 48 `credit_account_id` u128,
//!   64 the pending transfer's `timestamp` u64, 72..112 zero, 112 `ledger` u32,
//!   116 `code` u16, 118 the pending transfer's `flags` u16, 120 the expiry's
//!   `timestamp` u64.
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
//! Trailer, 73 bytes (version 1: 65): tag 0xFF; account count u64; transfer count
//! u64; expiry count u64 (not in version 1); first record timestamp u64; last record
//! timestamp u64 (both 0 when empty); SHA-256 (32 bytes) of every byte before the
//! hash (header, records, and the trailer's bytes before it). [`SegmentReader`] checks the magic, version, range, tags, ordering,
//! counts, timestamps and hash and that nothing follows the trailer; any violation,
//! including a truncated stream, is a [`Code::Integrity`] error naming what is wrong.
//! The hash covers the stream independently of bkp's outer compression/encryption.

use std::io::{self, BufReader, BufWriter, Read, Write};

use sha2::{Digest, Sha256};
use tigerbeetle_unofficial as tb;
use tigerbeetle_unofficial::{Account, Transfer};

use super::{ACCOUNT_CLOSED, ACCOUNT_LINKED, TRANSFER_LINKED, TRANSFER_PENDING};
use crate::exit::{Code, Coded};

/// First bytes of every segment.
pub const MAGIC: &[u8; 8] = b"BKPTBLG1";
/// The segment format this module writes when both floors are `after` (a chain's
/// first segment; see the module documentation), [`FLOORS_VERSION`] otherwise,
/// which is nearly always. It also reads version 1.
pub const FORMAT_VERSION: u16 = 2;
/// The format of a segment with floors of its own per row kind.
pub const FLOORS_VERSION: u16 = 3;
/// Header length in bytes (version 3: [`HEADER_LEN`] + 16).
pub const HEADER_LEN: usize = 42;
const FLOORS_LEN: usize = 16;
/// Record length in bytes (tag + body).
pub const RECORD_LEN: usize = 129;
/// Trailer length in bytes (version 1: 65).
pub const TRAILER_LEN: usize = 73;

const TAG_ACCOUNT: u8 = 1;
const TAG_TRANSFER: u8 = 2;
const TAG_ACCOUNT_CLOSED_BY_TRANSFER: u8 = 3;
const TAG_EXPIRY: u8 = 4;
const TAG_TRAILER: u8 = 0xFF;
const BODY_LEN: usize = 128;

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
    /// Accounts lie in `(accounts_after, until]` (≤ `after`; `after` before
    /// version 3).
    pub accounts_after: u64,
    /// Transfers lie in `(transfers_after, until]` (likewise).
    pub transfers_after: u64,
}

impl SegmentHeader {
    /// The exclusive lower bound of an event's timestamp.
    pub fn floor(&self, e: &Event) -> u64 {
        match e {
            Event::Account(_) => self.accounts_after,
            Event::Transfer(_) => self.transfers_after,
            Event::Expiry(_) => self.after,
        }
    }
}

/// What a finished (or fully read) segment holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SegmentStats {
    pub cluster_id: u128,
    pub after: u64,
    pub until: u64,
    pub accounts: u64,
    pub transfers: u64,
    /// Expiries of pending transfers (always 0 in version 1 segments).
    pub expiries: u64,
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

/// A pending transfer the cluster expired (its timeout ran out), as captured from
/// its change event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Expiry {
    /// The pending transfer that expired.
    pub pending_id: u128,
    pub amount: u128,
    pub debit_account_id: u128,
    pub credit_account_id: u128,
    /// The pending transfer's own timestamp.
    pub pending_timestamp: u64,
    pub ledger: u32,
    pub code: u16,
    /// The pending transfer's flags.
    pub flags: u16,
    /// The expiry's timestamp (a timestamp of its own in the cluster's sequence).
    pub timestamp: u64,
}

/// One record of a segment.
#[derive(Debug, Clone, Copy)]
pub enum Event {
    Account(AccountRecord),
    Transfer(Transfer),
    Expiry(Expiry),
}

impl Event {
    /// The row's cluster timestamp.
    pub fn timestamp(&self) -> u64 {
        match self {
            Event::Account(a) => a.account.as_raw().timestamp,
            Event::Transfer(t) => t.as_raw().timestamp,
            Event::Expiry(x) => x.timestamp,
        }
    }

    /// The row's id.
    pub fn id(&self) -> u128 {
        match self {
            Event::Account(a) => a.account.as_raw().id,
            Event::Transfer(t) => t.as_raw().id,
            Event::Expiry(x) => x.pending_id,
        }
    }

    pub(super) fn linked(&self) -> bool {
        match self {
            Event::Account(a) => a.account.as_raw().flags & ACCOUNT_LINKED != 0,
            Event::Transfer(t) => t.as_raw().flags & TRANSFER_LINKED != 0,
            Event::Expiry(_) => false,
        }
    }

    /// Replay sends expiries with the transfers (each as a void).
    pub(super) fn kind(&self) -> Kind {
        match self {
            Event::Account(_) => Kind::Account,
            Event::Transfer(_) | Event::Expiry(_) => Kind::Transfer,
        }
    }

    fn what(&self) -> &'static str {
        match self {
            Event::Account(_) => "account",
            Event::Transfer(_) => "transfer",
            Event::Expiry(_) => "expiry of pending transfer",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    Account,
    Transfer,
}

impl Kind {
    pub(super) fn name(self) -> &'static str {
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

fn encode_expiry(x: &Expiry, buf: &mut [u8; BODY_LEN]) {
    let mut e = Enc { buf, at: 0 };
    e.put(&x.pending_id.to_le_bytes());
    e.put(&x.amount.to_le_bytes());
    e.put(&x.debit_account_id.to_le_bytes());
    e.put(&x.credit_account_id.to_le_bytes());
    e.put(&x.pending_timestamp.to_le_bytes());
    e.put(&[0u8; 40]);
    e.put(&x.ledger.to_le_bytes());
    e.put(&x.code.to_le_bytes());
    e.put(&x.flags.to_le_bytes());
    e.put(&x.timestamp.to_le_bytes());
}

/// Decodes an expiry; `None` when its reserved bytes are not zero.
fn decode_expiry(buf: &[u8; BODY_LEN]) -> Option<Expiry> {
    let mut d = Dec { buf, at: 0 };
    let pending_id = d.u128();
    let amount = d.u128();
    let debit_account_id = d.u128();
    let credit_account_id = d.u128();
    let pending_timestamp = d.u64();
    let reserved: [u8; 40] = d.take();
    let x = Expiry {
        pending_id,
        amount,
        debit_account_id,
        credit_account_id,
        pending_timestamp,
        ledger: d.u32(),
        code: d.u16(),
        flags: d.u16(),
        timestamp: d.u64(),
    };
    reserved.iter().all(|&b| b == 0).then_some(x)
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
    expiries: u64,
    first: u64,
    last: u64,
    bytes: u64,
}

impl<W: Write> SegmentWriter<W> {
    /// Writes the header.
    pub fn new(w: W, cluster_id: u128, after: u64, until: u64) -> io::Result<Self> {
        Self::with_floors(w, cluster_id, after, until, after, after)
    }

    /// Writes the header of a segment whose accounts lie in
    /// `(accounts_after, until]` and transfers in `(transfers_after, until]`,
    /// each floor ≤ `after` (version 3 when one is below).
    pub fn with_floors(
        w: W,
        cluster_id: u128,
        after: u64,
        until: u64,
        accounts_after: u64,
        transfers_after: u64,
    ) -> io::Result<Self> {
        if until < after {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("segment interval ({after}, {until}] ends before it starts"),
            ));
        }
        if accounts_after > after || transfers_after > after {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "segment floors (accounts after {accounts_after}, transfers after \
                     {transfers_after}) lie above its interval's start {after}"
                ),
            ));
        }
        let version = if accounts_after < after || transfers_after < after {
            FLOORS_VERSION
        } else {
            FORMAT_VERSION
        };
        let mut s = SegmentWriter {
            w: BufWriter::with_capacity(64 * 1024, w),
            hasher: Sha256::new(),
            header: SegmentHeader {
                version,
                cluster_id,
                after,
                until,
                accounts_after,
                transfers_after,
            },
            accounts: 0,
            transfers: 0,
            expiries: 0,
            first: 0,
            last: 0,
            bytes: 0,
        };
        let mut h = [0u8; HEADER_LEN + FLOORS_LEN];
        h[0..8].copy_from_slice(MAGIC);
        h[8..10].copy_from_slice(&version.to_le_bytes());
        h[10..26].copy_from_slice(&cluster_id.to_le_bytes());
        h[26..34].copy_from_slice(&after.to_le_bytes());
        h[34..42].copy_from_slice(&until.to_le_bytes());
        h[42..50].copy_from_slice(&accounts_after.to_le_bytes());
        h[50..58].copy_from_slice(&transfers_after.to_le_bytes());
        let len = if version == FLOORS_VERSION {
            HEADER_LEN + FLOORS_LEN
        } else {
            HEADER_LEN
        };
        s.emit(&h[..len])?;
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

    fn check_order(&self, what: &str, id: u128, ts: u64, floor: u64) -> io::Result<()> {
        let h = &self.header;
        if ts <= floor || ts > h.until {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "{what} {id:#x} has timestamp {ts}, outside the segment's interval ({floor}, {}]",
                    h.until
                ),
            ));
        }
        if self.accounts + self.transfers + self.expiries > 0 && ts <= self.last {
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
        if self.accounts + self.transfers + self.expiries == 0 {
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
        self.check_order("account", r.id, r.timestamp, self.header.accounts_after)?;
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
        self.check_order("transfer", r.id, r.timestamp, self.header.transfers_after)?;
        let mut body = [0u8; BODY_LEN];
        encode_transfer(t, &mut body);
        self.record(TAG_TRANSFER, &body, r.timestamp)?;
        self.transfers += 1;
        Ok(())
    }

    /// Appends the expiry of a pending transfer.
    pub fn push_expiry(&mut self, x: &Expiry) -> io::Result<()> {
        self.check_order(
            "expiry of pending transfer",
            x.pending_id,
            x.timestamp,
            self.header.after,
        )?;
        if x.pending_timestamp >= x.timestamp || x.flags & TRANSFER_PENDING == 0 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "the expiry at {} of transfer {:#x} (timestamp {}, flags {:#x}) is not the \
                     expiry of an earlier pending transfer",
                    x.timestamp, x.pending_id, x.pending_timestamp, x.flags
                ),
            ));
        }
        let mut body = [0u8; BODY_LEN];
        encode_expiry(x, &mut body);
        self.record(TAG_EXPIRY, &body, x.timestamp)?;
        self.expiries += 1;
        Ok(())
    }

    /// Appends any event.
    pub fn push(&mut self, e: &Event) -> io::Result<()> {
        match e {
            Event::Account(a) => self.push_account_tagged(&a.account, a.closed_by_transfer),
            Event::Transfer(t) => self.push_transfer(t),
            Event::Expiry(x) => self.push_expiry(x),
        }
    }

    /// Writes the trailer and flushes; returns the inner writer.
    pub fn finish(mut self) -> io::Result<(W, SegmentStats)> {
        let mut t = [0u8; TRAILER_LEN - 32];
        t[0] = TAG_TRAILER;
        t[1..9].copy_from_slice(&self.accounts.to_le_bytes());
        t[9..17].copy_from_slice(&self.transfers.to_le_bytes());
        t[17..25].copy_from_slice(&self.expiries.to_le_bytes());
        t[25..33].copy_from_slice(&self.first.to_le_bytes());
        t[33..41].copy_from_slice(&self.last.to_le_bytes());
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
            expiries: self.expiries,
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
    expiries: u64,
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
        if !(1..=FLOORS_VERSION).contains(&version) {
            return Err(integrity(format!(
                "log segment format version {version} is not supported (this bkp reads \
                 versions 1 to {FLOORS_VERSION}); use the bkp release that wrote it"
            )));
        }
        let mut hasher = Sha256::new();
        hasher.update(h);
        let mut id = [0u8; 16];
        id.copy_from_slice(&h[10..26]);
        let after = le64(&h[26..34]);
        let (accounts_after, transfers_after, len) = if version == FLOORS_VERSION {
            let mut f = [0u8; FLOORS_LEN];
            read_exact_or(&mut r, &mut f, || {
                "the segment is truncated: it ends inside its header".to_owned()
            })?;
            hasher.update(f);
            (le64(&f[0..8]), le64(&f[8..16]), HEADER_LEN + FLOORS_LEN)
        } else {
            (after, after, HEADER_LEN)
        };
        let header = SegmentHeader {
            version,
            cluster_id: u128::from_le_bytes(id),
            after,
            until: le64(&h[34..42]),
            accounts_after,
            transfers_after,
        };
        if header.until < header.after
            || header.accounts_after > header.after
            || header.transfers_after > header.after
        {
            return Err(integrity(format!(
                "log segment header is corrupt: interval ({}, {}] (floors {}, {})",
                header.after, header.until, header.accounts_after, header.transfers_after
            )));
        }
        Ok(SegmentReader {
            r,
            hasher,
            header,
            accounts: 0,
            transfers: 0,
            expiries: 0,
            first: 0,
            last: 0,
            bytes: len as u64,
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
        self.accounts + self.transfers + self.expiries
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
            TAG_EXPIRY if self.header.version >= 2 => {
                let x = decode_expiry(&body)
                    .filter(|x| x.pending_timestamp < x.timestamp)
                    .filter(|x| x.flags & TRANSFER_PENDING != 0)
                    .ok_or_else(|| {
                        integrity(format!(
                            "log segment record {} is not the expiry of an earlier pending \
                             transfer",
                            n + 1
                        ))
                    })?;
                Event::Expiry(x)
            }
            other => {
                return Err(integrity(format!(
                    "log segment record {} has unknown tag {other:#04x}",
                    n + 1
                )))
            }
        };
        let ts = event.timestamp();
        let h = self.header;
        let floor = h.floor(&event);
        if ts <= floor || ts > h.until {
            return Err(integrity(format!(
                "log segment record {} ({} {:#x}) has timestamp {ts}, outside the segment's \
                 interval ({floor}, {}]",
                n + 1,
                event.what(),
                event.id(),
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
            Event::Expiry(_) => self.expiries += 1,
        }
        Ok(Some(event))
    }

    fn read_trailer(&mut self) -> io::Result<()> {
        // Version 1 has no expiry count: 8 bytes less.
        let len = if self.header.version == 1 {
            TRAILER_LEN - 9
        } else {
            TRAILER_LEN - 1
        };
        let mut buf = [0u8; TRAILER_LEN - 1];
        let t = &mut buf[..len];
        read_exact_or(&mut self.r, t, || {
            "the log segment is truncated: it ends inside its trailer".to_owned()
        })?;
        let counted = len - 32;
        self.hasher.update(&t[..counted]);
        self.bytes += len as u64;
        let le64 = |i: usize| {
            let mut b = [0u8; 8];
            b.copy_from_slice(&t[i..i + 8]);
            u64::from_le_bytes(b)
        };
        let (accounts, transfers, expiries, first, last) = if self.header.version == 1 {
            (le64(0), le64(8), 0, le64(16), le64(24))
        } else {
            (le64(0), le64(8), le64(16), le64(24), le64(32))
        };
        let digest: [u8; 32] = self.hasher.clone().finalize().into();
        if digest[..] != t[counted..] {
            return Err(integrity(
                "the log segment's SHA-256 does not match its content: the segment is \
                 corrupt or was altered"
                    .to_owned(),
            ));
        }
        let checks = [
            (accounts, self.accounts, "account count"),
            (transfers, self.transfers, "transfer count"),
            (expiries, self.expiries, "expiry count"),
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
        sha256.copy_from_slice(&t[counted..]);
        self.stats = Some(SegmentStats {
            cluster_id: self.header.cluster_id,
            after: self.header.after,
            until: self.header.until,
            accounts,
            transfers,
            expiries,
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

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use crate::exit::classify;

    pub(crate) fn account(id: u128, ts: u64, flags: u16) -> Account {
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

    pub(crate) fn transfer(id: u128, ts: u64) -> Transfer {
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

    pub(crate) fn expiry(pending_id: u128, pending_ts: u64, ts: u64) -> Expiry {
        Expiry {
            pending_id,
            amount: u128::MAX - 9,
            debit_account_id: 3,
            credit_account_id: u128::MAX - 2,
            pending_timestamp: pending_ts,
            ledger: 7,
            code: 9,
            flags: TRANSFER_PENDING,
            timestamp: ts,
        }
    }

    fn sample() -> Vec<u8> {
        let mut w = SegmentWriter::new(Vec::new(), 0xabc, 100, 200).unwrap();
        w.push_account(&account(1, 101, 0)).unwrap();
        w.push_transfer(&transfer(10, 102)).unwrap();
        w.push_account_closed_by_transfer(&account(2, 150, ACCOUNT_CLOSED))
            .unwrap();
        w.push_expiry(&expiry(10, 102, 160)).unwrap();
        w.push_transfer(&transfer(11, 200)).unwrap();
        let (bytes, stats) = w.finish().unwrap();
        assert_eq!(stats.bytes as usize, bytes.len());
        assert_eq!(
            bytes.len(),
            HEADER_LEN + 5 * RECORD_LEN + TRAILER_LEN,
            "documented sizes"
        );
        bytes
    }

    /// The same records as a version 1 segment (no expiries), as earlier
    /// releases wrote it.
    fn version_1(records: &[Event]) -> Vec<u8> {
        let mut w = SegmentWriter::new(Vec::new(), 0xabc, 100, 200).unwrap();
        for e in records {
            w.push(e).unwrap();
        }
        let (mut b, _) = w.finish().unwrap();
        b[8..10].copy_from_slice(&1u16.to_le_bytes());
        let trailer = b.len() - TRAILER_LEN;
        // Version 1 has no expiry count (with an expiry record, it is simply lost).
        b.drain(trailer + 17..trailer + 25);
        b.truncate(b.len() - 32);
        let digest: [u8; 32] = Sha256::digest(&b).into();
        b.extend_from_slice(&digest);
        b
    }

    #[test]
    fn version_1_segments_are_still_read_and_cannot_hold_expiries() {
        let records = [
            Event::Transfer(transfer(10, 102)),
            Event::Transfer(transfer(11, 200)),
        ];
        let v1 = version_1(&records);
        assert_eq!(v1.len(), HEADER_LEN + 2 * RECORD_LEN + 65);
        let stats = verify_segment(&v1[..]).unwrap();
        assert_eq!((stats.transfers, stats.expiries), (2, 0));
        assert_eq!(SegmentReader::new(&v1[..]).unwrap().header().version, 1);
        // A version 1 segment with an expiry record is damage, not an expiry.
        let with = version_1(&[records[0], Event::Expiry(expiry(10, 102, 160))]);
        let e = verify_segment(&with[..]).unwrap_err();
        assert!(e.to_string().contains("unknown tag 0x04"), "{e}");
    }

    #[test]
    fn an_expiry_must_follow_its_pending_transfer() {
        let mut w = SegmentWriter::new(Vec::new(), 1, 100, 200).unwrap();
        assert!(w.push_expiry(&expiry(10, 160, 160)).is_err());
        let mut not_pending = expiry(10, 102, 160);
        not_pending.flags = 0;
        assert!(w.push_expiry(&not_pending).is_err());
        // Damage to the reserved bytes is refused by the reader.
        let mut b = sample();
        let at = HEADER_LEN + 3 * RECORD_LEN;
        assert_eq!(b[at], TAG_EXPIRY);
        b[at + 1 + 80] ^= 1;
        let tail = b.len() - 32;
        let digest: [u8; 32] = Sha256::digest(&b[..tail]).into();
        b[tail..].copy_from_slice(&digest);
        let e = verify_segment(&b[..]).unwrap_err();
        assert!(e.to_string().contains("not the expiry"), "{e}");
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
        assert_eq!(&bytes[8..10], &[2, 0]);
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
                version: 2,
                cluster_id: 0xabc,
                after: 100,
                until: 200,
                accounts_after: 100,
                transfers_after: 100,
            }
        );
        let events: Vec<Event> = r.by_ref().collect::<io::Result<_>>().unwrap();
        assert_eq!(events.len(), 5);
        match &events[3] {
            Event::Expiry(x) => assert_eq!(*x, expiry(10, 102, 160)),
            other => panic!("unexpected event {other:?}"),
        }
        let x = &bytes[HEADER_LEN + 3 * RECORD_LEN + 1..HEADER_LEN + 4 * RECORD_LEN];
        assert_eq!(&x[0..16], &10u128.to_le_bytes());
        assert_eq!(&x[64..72], &102u64.to_le_bytes());
        assert_eq!(&x[118..120], &TRANSFER_PENDING.to_le_bytes());
        assert_eq!(&x[120..128], &160u64.to_le_bytes());
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
                stats.expiries,
                stats.first_timestamp,
                stats.last_timestamp
            ),
            (2, 2, 1, 101, 200)
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

    /// Rows imported below `after` (each kind after its own floor) are kept in a
    /// version 3 segment, read back with their floors, and refused under a floor.
    #[test]
    fn floors_below_after_make_a_version_3_segment() {
        let mut w = SegmentWriter::with_floors(Vec::new(), 9, 100, 200, 40, 90).unwrap();
        assert_eq!(w.header().version, FLOORS_VERSION);
        assert!(
            w.push_account(&account(1, 40, 0)).is_err(),
            "at the account floor"
        );
        w.push_account(&account(1, 41, 0)).unwrap();
        assert!(
            w.push_transfer(&transfer(2, 90)).is_err(),
            "at the transfer floor"
        );
        w.push_transfer(&transfer(2, 95)).unwrap();
        assert!(
            w.push_expiry(&expiry(3, 95, 100)).is_err(),
            "expiries keep `after` as their floor"
        );
        w.push_expiry(&expiry(3, 95, 150)).unwrap();
        let (bytes, stats) = w.finish().unwrap();
        assert_eq!((stats.first_timestamp, stats.last_timestamp), (41, 150));
        assert_eq!(
            bytes.len(),
            HEADER_LEN + FLOORS_LEN + 3 * RECORD_LEN + TRAILER_LEN
        );
        let mut r = SegmentReader::new(&bytes[..]).unwrap();
        assert_eq!(
            (r.header().accounts_after, r.header().transfers_after),
            (40, 90)
        );
        let events: Vec<Event> = r.by_ref().collect::<io::Result<_>>().unwrap();
        assert_eq!(
            events.iter().map(Event::timestamp).collect::<Vec<_>>(),
            [41, 95, 150]
        );
        // Any byte flipped, the floors included, is refused.
        for i in 0..bytes.len() {
            let mut bad = bytes.clone();
            bad[i] ^= 0x01;
            let e = verify_segment(&bad[..]).unwrap_err();
            assert_eq!(code_of(e), Some(Code::Integrity), "byte {i}");
        }
        // Floors equal to `after`: version 2, as before.
        let w = SegmentWriter::with_floors(Vec::new(), 9, 100, 200, 100, 100).unwrap();
        assert_eq!(w.header().version, FORMAT_VERSION);
        assert!(SegmentWriter::with_floors(Vec::new(), 9, 100, 200, 101, 100).is_err());
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
        bad[8] = 4;
        assert!(verify_segment(&bad[..])
            .unwrap_err()
            .to_string()
            .contains("version 4"));
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
}
