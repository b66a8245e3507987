//! Capture: every row a cluster created in a timestamp interval, into one segment.
//!
//! # Capture, and why the cursor is sound
//!
//! A segment covers the interval `(after, until]`; the next one starts at this one's
//! `until`. [`capture`] makes these requests (all bounded by the configured timeout;
//! no answer in time is a [`Code::Transient`] error naming the addresses):
//!
//! 1. `query_transfers` `REVERSED` with limit 1 and every other filter field zero:
//!    the newest transfer `X`; then `get_change_events` after it, paged until a
//!    page is empty: expiries of pending transfers (an expiry creates no row but
//!    takes a timestamp of its own), and transfers committed meanwhile (which
//!    raise `X`); then `query_accounts` the same way: the newest account `A`, read
//!    last so that every account a transfer up to `X` uses is at or below `A`.
//!    When `A` is newer than the last event read, the events up to `A` are paged
//!    once more, raising `X` to the last transfer among them: an expiry committed
//!    meanwhile lies below `A` and is captured now, and so must every transfer
//!    below it be (replay applies an expiry as a transfer, see
//!    [`newest_marks`](super::newest_marks)). `until` = the newest timestamp seen.
//! 2. Accounts in `[a + 1, A]` and transfers in `[x + 1, X]`, where `a` and `x` are
//!    the newest account and transfer the chain has captured (the watermark's marks
//!    per kind, ≤ `after`; see Imported rows below), ascending, paged by timestamp
//!    (next page from the last row's timestamp + 1) until a page is empty or
//!    reaches its bound; and the change events of `(after, until]`, paged the same
//!    way, keeping only the
//!    expiries (one event per transfer besides them: this pass reads about three
//!    times the bytes of the transfers). The three cursors are merged by timestamp
//!    into the segment, one page of each in memory at a time (at most 2 × 8189 rows
//!    of 128 bytes and 2730 events of 384 bytes, about 3 MiB).
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
//! are skipped: 3 requests (the change events on a second client session), 4 when
//! the newest row is an account (the events up to it are paged once more).
//!
//! Expiries belong in the log because replay cannot infer them: the cluster expires
//! a pending transfer at the first pulse after its timeout, at a timestamp only the
//! cluster knows, and between the timeout and that pulse the source still shows it
//! pending. Replay applies each expiry at its own timestamp (see
//! [`replay`](mod@super::replay)). (Choosing `until` first also makes the merge simple: both
//! cursors read immutable sets, so neither has to be re-read.)
//!
//! Imported rows: TigerBeetle lets an `imported` row carry a client-chosen
//! timestamp that need only be newer than the newest row *of its own kind* (and
//! older than the cluster's clock). So an account imported after this capture may
//! lie below `until` when a transfer set it (or a transfer below an account's or
//! an expiry's). Hence the marks per kind: this capture reads accounts only up to
//! `A` and transfers only up to `X` (an import from now on lies above them, even
//! below `until`), and the next one reads each kind from there, below its own
//! `after` when an import landed there (segment format version 3 records these
//! floors). Expiries are never imported and keep the interval. Replay applies
//! each kind in timestamp order, which is the order TigerBeetle accepts imports
//! in; the one thing it cannot replay is a transfer imported below the timestamp
//! of an *expiry* it already replayed (it replays an expiry as a transfer): it
//! stops there naming the transfer, and a restore from an older state cannot pass
//! that point.
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

use std::collections::VecDeque;
use std::io::Write;

use anyhow::{bail, Context, Result};
use tigerbeetle_unofficial as tb;
use tigerbeetle_unofficial::{Account, Transfer};

use super::segment::{Expiry, SegmentStats, SegmentWriter};
use super::{
    newest_marks, newest_rows, query_accounts, query_transfers, with_client, ClusterConfig, Row,
    Watermark, ACCOUNT_CLOSED, QUERY_LIMIT, TRANSFER_PENDING,
};
use crate::exit::{coded, Code};
use crate::tigerbeetle::change_events::{unexpected, ChangeEvent, EventType, PAGE_LIMIT};
use crate::tigerbeetle::client::Client;

/// What [`capture`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CaptureStats {
    pub segment: SegmentStats,
    /// Where the next capture starts.
    pub next: Watermark,
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

/// The expiries among the change events of `(after, until]`, one page of events at a
/// time.
pub(super) struct ExpiryCursor {
    pub(super) page: VecDeque<Expiry>,
    next_min: u64,
    until: u64,
    exhausted: bool,
}

impl ExpiryCursor {
    /// `until` 0: no upper bound.
    pub(super) fn new(after: u64, until: u64) -> Self {
        ExpiryCursor {
            page: VecDeque::new(),
            next_min: after + 1,
            until,
            exhausted: until != 0 && after >= until,
        }
    }

    /// The next expiry's timestamp, reading pages of events until one holds an
    /// expiry or the range is exhausted.
    pub(super) fn peek(&mut self, c: &Client) -> Result<Option<u64>> {
        while self.page.is_empty() && !self.exhausted {
            let events = c.get_change_events(self.next_min, self.until, PAGE_LIMIT)?;
            match events.last().map(|e| e.timestamp) {
                None => self.exhausted = true,
                Some(last) if self.until != 0 && last >= self.until => self.exhausted = true,
                Some(last) => self.next_min = last + 1,
            }
            for e in events.iter().filter(|e| e.kind == EventType::Expired) {
                self.page.push_back(expiry_of(c.addresses(), e)?);
            }
        }
        Ok(self.page.front().map(|x| x.timestamp))
    }
}

/// Expiry event `e` from the cluster at `addresses`, checked: an expiry of
/// anything but a pending transfer with a timeout, before its own time, is
/// not an answer bkp takes (it would release amounts that were never held).
fn expiry_of(addresses: &str, e: &ChangeEvent) -> Result<Expiry> {
    if e.transfer_flags & TRANSFER_PENDING == 0
        || e.transfer_timeout == 0
        || e.transfer_timestamp >= e.timestamp
    {
        return Err(unexpected(format!(
            "the cluster at {addresses} reports an expiry at {} of transfer {:#x} (timestamp {}, \
             timeout {}, flags {:#x}), which is not a pending transfer with a timeout",
            e.timestamp, e.transfer_id, e.transfer_timestamp, e.transfer_timeout, e.transfer_flags
        )));
    }
    Ok(Expiry {
        pending_id: e.transfer_id,
        amount: e.transfer_amount,
        debit_account_id: e.debit_account_id,
        credit_account_id: e.credit_account_id,
        pending_timestamp: e.transfer_timestamp,
        ledger: e.ledger,
        code: e.transfer_code,
        flags: e.transfer_flags,
        timestamp: e.timestamp,
    })
}

/// Writes one segment with every account and transfer created since watermark
/// `from` (each kind after its own mark), and every expiry of a pending transfer
/// after `from.after`, up to the newest timestamp at the time of the call (the
/// segment's `until`); the returned stats' `next` is the next call's `from`. On
/// error `out` holds a partial segment that must be discarded.
pub fn capture(cfg: &ClusterConfig, from: Watermark, out: &mut dyn Write) -> Result<CaptureStats> {
    with_client(cfg, |c| {
        let now = newest_marks(c)?;
        let mut stats = capture_on(c, from, now, out)?;
        stats.requests = c.requests();
        Ok(stats)
    })
}

/// [`capture`] through a session the caller holds (see [`super::session`]), up
/// to `now`, the cluster's [`newest_marks`] as the caller read them.
pub fn capture_on(
    c: &Client,
    from: Watermark,
    now: Watermark,
    out: &mut dyn Write,
) -> Result<CaptureStats> {
    capture_with(c, from, now, out, true)
}

/// Like [`capture_on`] from the beginning, but rows only, up to the newest row:
/// for a private replica of a restored data file, whose own expiries (at its own
/// clock's timestamps) are not the source's.
pub fn capture_rows_on(c: &Client, out: &mut dyn Write) -> Result<CaptureStats> {
    let requests_before = c.requests();
    let now = newest_rows(c)?;
    let mut stats = capture_with(c, Watermark::default(), now, out, false)?;
    stats.requests = c.requests() - requests_before;
    Ok(stats)
}

fn capture_with(
    c: &Client,
    from: Watermark,
    now: Watermark,
    out: &mut dyn Write,
    with_expiries: bool,
) -> Result<CaptureStats> {
    let requests_before = c.requests();
    let after = from.after;
    if after >= 1 << 63 {
        bail!("watermark {after} is not a TigerBeetle timestamp (they are below 2^63)");
    }
    // A kind's mark above `after` is no mark this bkp wrote: read from `after`.
    let floor_accounts = from.accounts.min(after);
    let floor_transfers = from.transfers.min(after);
    let newest = now.after;
    if newest < after {
        return Err(coded(
            Code::Integrity,
            format!(
                "the TigerBeetle cluster at {} holds nothing newer than timestamp {newest}, \
                 but the log chain already covers up to {after}: this is not the cluster the \
                 chain was captured from, or it was restored to an earlier state. Start a new \
                 chain with a snapshot",
                c.addresses()
            ),
        ));
    }
    let until = newest;
    // Each kind up to its own newest row as of now: an account imported from
    // now on lies above `now.accounts` (a transfer likewise), so the next
    // capture, starting there, finds it even below `until`.
    let next = Watermark {
        after: until,
        accounts: now.accounts.max(floor_accounts),
        transfers: now.transfers.max(floor_transfers),
    };
    let mut w = SegmentWriter::with_floors(
        out,
        c.cluster_id(),
        after,
        until,
        floor_accounts,
        floor_transfers,
    )
    .context("cannot write the log segment")?;
    let mut accounts = Cursor::<Account>::new(floor_accounts, next.accounts);
    let mut transfers = Cursor::<Transfer>::new(floor_transfers, next.transfers);
    let mut expiries = ExpiryCursor::new(after, until);
    expiries.exhausted |= !with_expiries || after >= until;
    let mut closed = 0;
    loop {
        let a = accounts.peek(|min, max| query_accounts(c, min, max, QUERY_LIMIT, false))?;
        let t = transfers.peek(|min, max| query_transfers(c, min, max, QUERY_LIMIT, false))?;
        let x = expiries.peek(c)?;
        let seen = [a, t, x];
        let Some(first) = seen.iter().flatten().min().copied() else {
            break;
        };
        if seen.iter().flatten().filter(|&&ts| ts == first).count() > 1 {
            bail!(
                "the cluster at {} returned two rows or events with the same timestamp \
                 {first}",
                c.addresses()
            );
        }
        match (a, t) {
            _ if x == Some(first) => {
                let Some(e) = expiries.page.pop_front() else {
                    unreachable!("peek returned a timestamp")
                };
                w.push_expiry(&e).context("cannot write the log segment")?;
            }
            (Some(a), _) if a == first => {
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
        next,
        requests: c.requests() - requests_before,
        closed_accounts: closed,
    })
}

/// Whether a closed account was closed by a transfer (it has at least one transfer)
/// rather than created closed (it can never have one).
fn closed_by_transfer(c: &Client, a: &Account) -> Result<bool> {
    let filter = tb::account::Filter::new(a.as_raw().id, 1)
        .with_flags(tb::account::FilterFlags::DEBITS | tb::account::FilterFlags::CREDITS);
    let rows = c.get_account_transfers(filter)?;
    first_transfer_of(c.addresses(), a, rows.first())
}

/// Whether `first`, the first transfer the cluster at `addresses` answers for
/// account `a`, is one: checked, since a transfer of another account, or one
/// older than the account, is not an answer bkp takes (it would record a
/// closed account as closed by a transfer it never had).
fn first_transfer_of(addresses: &str, a: &Account, first: Option<&Transfer>) -> Result<bool> {
    let (id, Some(t)) = (a.as_raw().id, first) else {
        return Ok(false);
    };
    let r = t.as_raw();
    if (r.debit_account_id != id && r.credit_account_id != id)
        || r.timestamp <= a.as_raw().timestamp
    {
        return Err(unexpected(format!(
            "get_account_transfers to the cluster at {addresses} for account {id:#x} returned \
             transfer {:#x}, which does not belong to it",
            r.id
        )));
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exit::classify;

    #[test]
    fn an_expiry_of_what_could_not_expire_is_an_integrity_failure() {
        let expired = ChangeEvent {
            kind: EventType::Expired,
            timestamp: 200,
            transfer_id: 7,
            transfer_amount: 5,
            transfer_timestamp: 100,
            transfer_timeout: 1,
            transfer_code: 1,
            transfer_flags: TRANSFER_PENDING,
            ledger: 700,
            debit_account_id: 1,
            credit_account_id: 2,
        };
        let x = expiry_of("127.0.0.1:1", &expired).unwrap();
        assert_eq!((x.pending_id, x.amount, x.timestamp), (7, 5, 200));
        for (why, e) in [
            (
                "not pending",
                ChangeEvent {
                    transfer_flags: 0,
                    ..expired
                },
            ),
            (
                "no timeout",
                ChangeEvent {
                    transfer_timeout: 0,
                    ..expired
                },
            ),
            (
                "after its expiry",
                ChangeEvent {
                    transfer_timestamp: 200,
                    ..expired
                },
            ),
        ] {
            refused(why, expiry_of("127.0.0.1:1", &e).map(|_| ()));
        }
    }

    /// `r` is refused as a reply bkp does not take from the cluster at
    /// 127.0.0.1:1, saying what to check.
    fn refused(why: &str, r: Result<()>) {
        let err = r.map(|()| panic!("{why}: taken")).unwrap_err();
        assert_eq!(classify(&err), Some(Code::Integrity), "{why}: {err:#}");
        let msg = format!("{err:#}");
        assert!(
            msg.contains("127.0.0.1:1") && msg.contains("run TigerBeetle"),
            "{why}: {msg}"
        );
    }

    #[test]
    fn a_first_transfer_that_is_not_the_accounts_is_an_integrity_failure() {
        use crate::tigerbeetle::tblog::segment::tests::{account, transfer};
        // `transfer` debits u128::MAX - 1 and credits 2.
        let a = account(2, 100, 0);
        let at = "127.0.0.1:1";
        assert!(!first_transfer_of(at, &a, None).unwrap());
        assert!(first_transfer_of(at, &a, Some(&transfer(9, 150))).unwrap());
        let debited = account(u128::MAX - 1, 100, 0);
        assert!(first_transfer_of(at, &debited, Some(&transfer(9, 150))).unwrap());
        for (why, a, t) in [
            ("another account's", account(3, 100, 0), transfer(9, 150)),
            (
                "older than the account",
                account(2, 100, 0),
                transfer(9, 50),
            ),
            (
                "as old as the account",
                account(2, 100, 0),
                transfer(9, 100),
            ),
        ] {
            refused(why, first_transfer_of(at, &a, Some(&t)).map(|_| ()));
        }
    }
}
