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
//! `imported` flag accepts rows with their original timestamps. So [`capture()`] copies
//! every row created in a timestamp interval into a segment, and [`replay()`] recreates
//! the rows of a chain of segments, in timestamp order, in another cluster.
//!
//! The parts: [`segment`] is the file format (writer, reader, [`verify_segment`]),
//! [`capture`](mod@capture) reads a cluster into a segment, [`replay`](mod@replay)
//! writes segments into another cluster. Both talk to TigerBeetle through the one
//! client of [`crate::tigerbeetle::client`], which bounds every request by the
//! configured timeout (no answer in time is a [`Code::Transient`] error naming the
//! addresses).
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

use anyhow::{bail, Result};
use tigerbeetle_unofficial as tb;
use tigerbeetle_unofficial::{Account, QueryFilter, Transfer};

use super::change_events::PAGE_LIMIT;
use super::client::{self, Client, ClientSpec, Names};
#[cfg(doc)]
use crate::exit::Code;

pub mod capture;
pub mod replay;
pub mod segment;

pub use capture::{capture, capture_on, capture_rows_on, CaptureStats};
pub use replay::{
    batch_limit, expiry_void_id, replay, replay_on, LiveTimeout, PendingTimeout, Replay,
    ReplayStats, BATCH,
};
pub use segment::{
    verify_segment, AccountRecord, Event, Expiry, SegmentHeader, SegmentReader, SegmentStats,
    SegmentWriter, FORMAT_VERSION, HEADER_LEN, MAGIC, RECORD_LEN, TRAILER_LEN,
};

/// Where and how to reach the cluster a capture reads or a replay writes.
pub type ClusterConfig = ClientSpec;

/// How this module's messages name the cluster.
const NAMES: Names = Names {
    cluster: "TigerBeetle cluster",
    setting: "the TigerBeetle addresses",
};

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

/// Connects to `cfg`, runs `f`, and closes the client.
pub fn with_client<T>(cfg: &ClusterConfig, f: impl FnOnce(&Client) -> Result<T>) -> Result<T> {
    client::with_client(cfg, NAMES, f)
}

/// Where a log chain stands: the end of its last interval and, per row kind, the
/// newest timestamp of that kind it has captured (≤ `after`).
///
/// Each kind needs its own: TigerBeetle accepts an *imported* account with any
/// timestamp after the newest account (below the cluster's clock), and an imported
/// transfer after the newest transfer, so a row imported after a capture may lie
/// below that capture's `until` when the other kind set it. Capturing each kind
/// after its own newest timestamp misses none; the interval (`after`) still orders
/// segments into a chain and bounds expiries, which only the cluster's clock makes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Watermark {
    /// Everything up to here is captured, but rows imported later below it.
    pub after: u64,
    /// The newest account captured (every account created later is newer).
    pub accounts: u64,
    /// The newest transfer captured (likewise).
    pub transfers: u64,
}

impl Watermark {
    /// Whether `now` (the cluster's [`newest_marks`]) holds anything this
    /// watermark has not captured.
    pub fn behind(&self, now: &Watermark) -> bool {
        now.after > self.after || now.accounts > self.accounts || now.transfers > self.transfers
    }
}

/// A session with the cluster for a run that captures, its change-events
/// session opened at once (see [`Client::open_events`]): open it before the
/// run's other work, so that the cluster's registration of both overlaps it.
pub fn session(cfg: &ClusterConfig) -> Result<Client> {
    let c = connect(cfg)?;
    c.open_events()?;
    Ok(c)
}

/// [`session`] for a run that only reads (captures, counts): its reads and
/// change events go through one session, not two (see
/// [`Client::connect_reader`]).
pub fn reader(cfg: &ClusterConfig) -> Result<Client> {
    let c = Client::connect_reader(cfg, NAMES)?;
    c.open_events()?;
    Ok(c)
}

/// [`session`] on a client already open to the cluster (the ledger's, where
/// `[ledger]` is this cluster): its messages now name the cluster as a source.
pub fn session_with(c: Client) -> Result<Client> {
    let c = c.renamed(NAMES);
    c.open_events()?;
    Ok(c)
}

/// A session with the cluster for a run that reads no change events (a replay
/// into a fresh cluster). Returns at once; the session registers with the first
/// request.
pub fn connect(cfg: &ClusterConfig) -> Result<Client> {
    Client::connect(cfg, NAMES)
}

/// Where a restored data file's history ends, for a private replica started at
/// `started` (ns): its newest row, or the source's newest expiry after that row
/// (a data file copied after an expiry holds it, and the segment that captured it
/// may end there). The replica's own expiries, by its clock, come after `started`
/// and do not count. The log that continues the file starts after this point.
pub fn newest_before_on(c: &Client, started: u64) -> Result<u64> {
    let row = newest_row(c)?;
    if started <= row + 1 {
        return Ok(row);
    }
    let mut cursor = capture::ExpiryCursor::new(row, started - 1);
    let mut last = row;
    while cursor.peek(c)?.is_some() {
        last = cursor.page.back().map_or(last, |x| last.max(x.timestamp));
        cursor.page.clear();
    }
    Ok(last)
}

/// The expiries of pending transfers in `[min, max]` (`max` 0: unbounded), read
/// from the cluster's change events.
pub fn expiries_on(c: &Client, min: u64, max: u64) -> Result<Vec<Expiry>> {
    let mut out = Vec::new();
    let mut cursor = capture::ExpiryCursor::new(min.saturating_sub(1), max);
    while cursor.peek(c)?.is_some() {
        out.extend(cursor.page.drain(..));
    }
    Ok(out)
}

/// Whether the rows between watermarks `from` and `to` (each kind after its own
/// mark) are at most `limit` of each kind, all pass `own_transfer`/`own_account`
/// (bkp's own audit records, when the audit ledger is the captured cluster), and
/// no pending transfer expired in `(from.after, to.after]`: three requests or a
/// few more.
pub fn only_rows_of(
    c: &Client,
    from: &Watermark,
    to: &Watermark,
    limit: u32,
    own_transfer: &dyn Fn(&Transfer) -> bool,
    own_account: &dyn Fn(&Account) -> bool,
) -> Result<bool> {
    if !from.behind(to) {
        return Ok(true);
    }
    if to.transfers > from.transfers {
        let t = query_transfers(c, from.transfers + 1, to.transfers, limit, false)?;
        if t.len() >= limit as usize || !t.iter().all(own_transfer) {
            return Ok(false);
        }
    }
    if to.accounts > from.accounts {
        let a = query_accounts(c, from.accounts + 1, to.accounts, limit, false)?;
        if a.len() >= limit as usize || !a.iter().all(own_account) {
            return Ok(false);
        }
    }
    // An expiry is the cluster's own change, never bkp's. (The events of the
    // interval are those of the few rows above: a page or a few.)
    let mut expiries = capture::ExpiryCursor::new(from.after, to.after);
    Ok(expiries.peek(c)?.is_none())
}

/// Rows per query page: the most a 1 MiB reply holds (replies may hold fewer).
const QUERY_LIMIT: u32 = 8189;

/// How many accounts the cluster holds newer than `mark.accounts`, and how many
/// transfers newer than `mark.transfers`: every one of them, a page at a time
/// (one request per [`QUERY_LIMIT`] rows, and one more to see the end).
pub fn rows_after(c: &Client, mark: &Watermark) -> Result<(u64, u64)> {
    Ok((
        count_after(c, mark.accounts, query_accounts)?,
        count_after(c, mark.transfers, query_transfers)?,
    ))
}

/// Rows a query holds after timestamp `after`, paged to an empty page (a page may
/// hold fewer than asked for before the end).
fn count_after<T: Row>(
    c: &Client,
    after: u64,
    query: fn(&Client, u64, u64, u32, bool) -> Result<Vec<T>>,
) -> Result<u64> {
    let (mut n, mut min) = (0, after + 1);
    loop {
        let page = query(c, min, 0, QUERY_LIMIT, false)?;
        let Some(last) = page.last() else {
            return Ok(n);
        };
        n += page.len() as u64;
        min = last.ts() + 1;
    }
}

/// One page of accounts with timestamps in `[min, max]` (0: unbounded), checked.
fn query_accounts(c: &Client, min: u64, max: u64, limit: u32, rev: bool) -> Result<Vec<Account>> {
    let rows = c.query_accounts(query_filter(min, max, limit, rev))?;
    check_page("query_accounts", &rows, min, max, limit, rev)?;
    Ok(rows)
}

/// One page of transfers with timestamps in `[min, max]` (0: unbounded), checked.
fn query_transfers(c: &Client, min: u64, max: u64, limit: u32, rev: bool) -> Result<Vec<Transfer>> {
    let rows = c.query_transfers(query_filter(min, max, limit, rev))?;
    check_page("query_transfers", &rows, min, max, limit, rev)?;
    Ok(rows)
}

/// The newest timestamp the cluster has used (0 when empty): that of its newest
/// row, or of a change event after it (an expiry of a pending transfer takes a
/// timestamp of its own and creates no row; a row committed since the first
/// query: every timestamp seen is committed, which is all a capture's `until`
/// needs); with the newest account's and the newest transfer's. Three requests
/// when nothing is written meanwhile (four when the newest row is an account).
/// A capture from a watermark that is not [`Watermark::behind`] them would be
/// empty.
///
/// The transfers first, then the change events after the newest transfer (a
/// transfer's event raises the newest transfer: no transfer committed later,
/// imported or not, can lie below a committed one), then the newest account: so
/// every account a transfer up to that mark uses (created before it) is at or
/// below the account mark, and a capture never holds a transfer whose account it
/// left to the next one.
///
/// An account newer than the last event read makes `after` an account's
/// timestamp, and events may have committed between the two reads: a transfer
/// `T`, then an expiry `E`. `E` then lies in `(…, after]` and is captured now,
/// so `T` must be too (replay applies an expiry as a transfer at its timestamp,
/// and takes no transfer below it afterwards). So the events up to that account
/// are paged once more and raise the transfer mark: timestamps follow commit
/// order, so once the account is visible every event below it is too, and the
/// range is bounded, so this ends (and holds whole linked chains: a chain is one
/// request's, never split by an account's timestamp).
///
/// Expiries after the newest transfer are few (one per pending transfer that timed
/// out since); the first paging stops at the first empty page, or after
/// [`NEWEST_PAGES`] pages of rows committed meanwhile (a busy cluster: the next
/// capture takes the rest).
pub fn newest_marks(c: &Client) -> Result<Watermark> {
    let mut transfers = newest_transfer(c)?;
    let mut newest = transfers;
    for _ in 0..NEWEST_PAGES {
        let page = c.get_change_events(newest + 1, 0, PAGE_LIMIT)?;
        let Some(last) = page.last() else { break };
        newest = last.timestamp;
        if let Some(t) = page.iter().rev().find(|e| e.kind.is_transfer()) {
            transfers = transfers.max(t.timestamp);
        }
    }
    let accounts = newest_account(c)?;
    // `get_change_events` checks that a page lies inside the range and ascends,
    // so each page starts past the last: the loop ends.
    while accounts > newest {
        let page = c.get_change_events(newest + 1, accounts, PAGE_LIMIT)?;
        let Some(last) = page.last() else { break };
        newest = last.timestamp;
        if let Some(t) = page.iter().rev().find(|e| e.kind.is_transfer()) {
            transfers = transfers.max(t.timestamp);
        }
    }
    Ok(Watermark {
        after: newest.max(accounts),
        accounts,
        transfers,
    })
}

/// Pages of change events after the newest transfer that [`newest_marks`] reads
/// at most before it reads the newest account.
const NEWEST_PAGES: usize = 64;

/// The newest timestamp of any account or transfer; 0 for an empty cluster.
fn newest_row(c: &Client) -> Result<u64> {
    Ok(newest_rows(c)?.after)
}

/// The newest account's and the newest transfer's timestamps (0: none), and
/// the newer of the two as `after` (no expiries: see [`newest_marks`]): two
/// requests. Where a restored data file's rows end (the replica that runs it may
/// expire pending transfers of its own at later timestamps, which
/// [`newest_marks`] would count), and where a replay into it starts
/// ([`Replay::with_newest`]). Transfers first, as there: an account a transfer
/// uses is then never newer than the account mark, also on a cluster that is
/// written meanwhile.
pub fn newest_rows(c: &Client) -> Result<Watermark> {
    let transfers = newest_transfer(c)?;
    let accounts = newest_account(c)?;
    Ok(Watermark {
        after: accounts.max(transfers),
        accounts,
        transfers,
    })
}

/// The newest transfer's timestamp (0: none): one request.
fn newest_transfer(c: &Client) -> Result<u64> {
    Ok(query_transfers(c, 0, 0, 1, true)?
        .first()
        .map_or(0, Row::ts))
}

/// The newest account's timestamp (0: none): one request.
fn newest_account(c: &Client) -> Result<u64> {
    Ok(query_accounts(c, 0, 0, 1, true)?.first().map_or(0, Row::ts))
}

fn query_filter(min: u64, max: u64, limit: u32, reversed: bool) -> QueryFilter {
    // `limit` is one of this module's nonzero constants.
    let mut f = QueryFilter::new(limit);
    let raw = f.as_raw_mut();
    raw.timestamp_min = min;
    raw.timestamp_max = max;
    if reversed {
        raw.flags = tb::core::query_filter::Flags::REVERSED.bits();
    }
    f
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
