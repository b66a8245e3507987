//! Change capture and replay against real development-mode TigerBeetle replicas.

mod common;

use std::io::Cursor;
use std::path::Path;
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use bkp::exit::{classify, Code};
use bkp::tigerbeetle::tblog::*;
use tigerbeetle_unofficial as tb;
use tigerbeetle_unofficial::account::Flags as AF;
use tigerbeetle_unofficial::transfer::Flags as TF;
use tigerbeetle_unofficial::{Account, QueryFilter, Transfer};

const TIMEOUT: Duration = Duration::from_secs(10);

// ----------------------------------------------------------------------------------
// Replicas and a small synchronous client
// ----------------------------------------------------------------------------------

/// A replica on a free loopback port (the shared harness), killed when dropped.
struct Replica(common::TigerBeetle);

impl Replica {
    /// A fresh replica.
    fn fresh() -> Replica {
        Replica(common::TigerBeetle::start())
    }

    /// A replica on an existing data file.
    fn on(file: &Path) -> Replica {
        Replica(common::TigerBeetle::start_on(file))
    }

    fn cfg(&self) -> ClusterConfig {
        ClusterConfig {
            cluster_id: 0,
            addresses: self.0.address(),
            timeout: TIMEOUT,
        }
    }

    fn client(&self) -> Tb {
        Tb::new(self.0.port)
    }
}

/// The async client driven from synchronous test code.
struct Tb {
    rt: tokio::runtime::Runtime,
    c: Option<tb::Client>,
}

impl Drop for Tb {
    fn drop(&mut self) {
        // Drop the client outside the runtime (it joins its I/O thread).
        drop(self.c.take());
    }
}

impl Tb {
    fn new(port: u16) -> Tb {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let c = tb::Client::new(0, format!("127.0.0.1:{port}")).unwrap();
        Tb { rt, c: Some(c) }
    }

    fn c(&self) -> &tb::Client {
        self.c.as_ref().unwrap()
    }

    /// Creates accounts; panics on any failure.
    fn accounts(&self, a: Vec<Account>) {
        self.rt
            .block_on(self.c().create_accounts(a))
            .expect("create_accounts");
    }

    /// Creates transfers; returns the failures as (index, name).
    fn try_transfers(&self, t: Vec<Transfer>) -> Vec<(u32, String)> {
        match self.rt.block_on(self.c().create_transfers(t)) {
            Ok(()) => Vec::new(),
            Err(tb::error::CreateTransfersError::Api(e)) => e
                .as_slice()
                .iter()
                .map(|e| (e.index(), e.kind().into_snake_case_str().to_owned()))
                .collect(),
            Err(e) => panic!("create_transfers: {e}"),
        }
    }

    fn transfers(&self, t: Vec<Transfer>) {
        let failed = self.try_transfers(t);
        assert!(failed.is_empty(), "transfers failed: {failed:?}");
    }

    fn all_accounts(&self, max: u64) -> Vec<Account> {
        let mut out: Vec<Account> = Vec::new();
        loop {
            let mut f = QueryFilter::new(8189);
            f.as_raw_mut().timestamp_min = out.last().map_or(0, |a| a.as_raw().timestamp + 1);
            f.as_raw_mut().timestamp_max = max;
            let page = self
                .rt
                .block_on(self.c().query_accounts(Box::new(f)))
                .unwrap();
            if page.is_empty() {
                return out;
            }
            out.extend(page);
        }
    }

    fn all_transfers(&self, max: u64) -> Vec<Transfer> {
        let mut out: Vec<Transfer> = Vec::new();
        loop {
            let mut f = QueryFilter::new(8189);
            f.as_raw_mut().timestamp_min = out.last().map_or(0, |a| a.as_raw().timestamp + 1);
            f.as_raw_mut().timestamp_max = max;
            let page = self
                .rt
                .block_on(self.c().query_transfers(Box::new(f)))
                .unwrap();
            if page.is_empty() {
                return out;
            }
            out.extend(page);
        }
    }

    fn lookup_accounts(&self, ids: Vec<u128>) -> Vec<Account> {
        self.rt.block_on(self.c().lookup_accounts(ids)).unwrap()
    }

    fn lookup_transfers(&self, ids: &[u128]) -> Vec<Transfer> {
        let mut out = Vec::new();
        for chunk in ids.chunks(250) {
            out.extend(
                self.rt
                    .block_on(self.c().lookup_transfers(chunk.to_vec()))
                    .unwrap(),
            );
        }
        out
    }

    /// Balance history (accounts with `flags.history`) up to `max`.
    fn history(&self, id: u128, max: u64) -> Vec<[u128; 5]> {
        let mut f = tb::account::Filter::new(id, 8189)
            .with_flags(tb::account::FilterFlags::DEBITS | tb::account::FilterFlags::CREDITS);
        f.as_raw_mut().timestamp_max = max;
        self.rt
            .block_on(self.c().get_account_balances(Box::new(f)))
            .unwrap()
            .iter()
            .map(|b| {
                let r = b.as_raw();
                [
                    r.debits_pending,
                    r.debits_posted,
                    r.credits_pending,
                    r.credits_posted,
                    u128::from(r.timestamp),
                ]
            })
            .collect()
    }
}

// ----------------------------------------------------------------------------------
// Building rows
// ----------------------------------------------------------------------------------

fn acct(id: u128, ledger: u32, flags: AF) -> Account {
    Account::new(id, ledger, 10)
        .with_flags(flags)
        .with_user_data_128(id ^ 0xffff)
        .with_user_data_64(id as u64 ^ 0xabcd)
        .with_user_data_32(id as u32)
}

fn xfer(id: u128, dr: u128, cr: u128, amount: u128) -> Transfer {
    Transfer::new(id)
        .with_debit_account_id(dr)
        .with_credit_account_id(cr)
        .with_amount(amount)
        .with_ledger(1)
        .with_code(20)
        .with_user_data_64(id as u64)
}

fn flagged(t: Transfer, flags: TF) -> Transfer {
    t.with_flags(flags)
}

fn resolve(id: u128, pending: u128, amount: u128, flags: TF) -> Transfer {
    Transfer::new(id)
        .with_pending_id(pending)
        .with_amount(amount)
        .with_flags(flags)
}

// Account ids.
const A1: u128 = 1; // history
const A2: u128 = 2;
const A3: u128 = 3; // debits_must_not_exceed_credits | history
const A4: u128 = 4; // credits_must_not_exceed_debits
const A5: u128 = u128::MAX - 1; // ledger 2, huge amounts
const A6: u128 = u128::MAX - 2; // ledger 2
const A7: u128 = 7; // created closed
const A8: u128 = 8; // linked account chain with A9
const A9: u128 = 9;
const A10: u128 = 10; // closed by a closing transfer in the same segment
const A11: u128 = 11; // closed, then reopened by a void
const A12: u128 = 12; // history; closed by a transfer two segments later
const A13: u128 = 13; // closed by a transfer in the same segment (tag 3)
const A14: u128 = 0x8000_0000_0000_0000_0000_0000_0000_0001; // ledger 3
const A15: u128 = 15; // expiring pending transfer
const A16: u128 = 16;

const T_EXPIRES: u128 = 160;
const T_LONG_TIMEOUT: u128 = 136;
const T_CHAIN_FIRST: u128 = 10_000;
const CHAIN_LEN: u128 = 252;

fn phase1(a: &Tb) {
    a.accounts(vec![
        acct(A1, 1, AF::HISTORY),
        acct(A2, 1, AF::empty()),
        acct(A3, 1, AF::DEBITS_MUST_NOT_EXCEED_CREDITS | AF::HISTORY),
        acct(A4, 1, AF::CREDITS_MUST_NOT_EXCEED_DEBITS),
        acct(A5, 2, AF::empty()),
        acct(A6, 2, AF::empty()),
        acct(A7, 1, AF::CLOSED),
        acct(A8, 1, AF::LINKED),
        acct(A9, 1, AF::empty()),
        acct(A10, 1, AF::empty()),
        acct(A11, 1, AF::empty()),
        acct(A15, 1, AF::HISTORY),
        acct(A16, 1, AF::empty()),
    ]);
    // Plain, and huge 128-bit amounts and ids.
    a.transfers(vec![
        xfer(100, A2, A3, 1000),
        xfer(101, A5, A6, u128::MAX - 10)
            .with_ledger(2)
            .with_user_data_128(u128::MAX - 1),
        xfer(u128::MAX - 5, A6, A5, u128::MAX - 20).with_ledger(2),
    ]);
    // A linked chain that succeeds.
    a.transfers(vec![
        flagged(xfer(110, A1, A2, 10), TF::LINKED),
        flagged(xfer(111, A2, A1, 5), TF::LINKED),
        xfer(112, A1, A2, 1),
    ]);
    // A linked chain that fails (A3 may not go below zero): no rows at all.
    let failed = a.try_transfers(vec![
        flagged(xfer(120, A1, A2, 10), TF::LINKED),
        flagged(xfer(121, A3, A2, 1_000_000), TF::LINKED),
        xfer(122, A1, A2, 1),
    ]);
    assert_eq!(failed.len(), 3, "{failed:?}");
    assert!(
        failed.iter().any(|(_, n)| n == "exceeds_credits"),
        "{failed:?}"
    );
    // Two-phase: partial post, post with AMOUNT_MAX, void, long timeout.
    a.transfers(vec![
        flagged(xfer(130, A2, A3, 500), TF::PENDING),
        resolve(131, 130, 300, TF::POST_PENDING_TRANSFER),
        flagged(xfer(132, A1, A2, 77), TF::PENDING),
        resolve(133, 132, u128::MAX, TF::POST_PENDING_TRANSFER),
        flagged(xfer(134, A2, A1, 40), TF::PENDING),
        resolve(135, 134, 0, TF::VOID_PENDING_TRANSFER),
        flagged(xfer(T_LONG_TIMEOUT, A1, A2, 9), TF::PENDING).with_timeout(3600),
    ]);
    // Balancing: A3 holds 1300 in credits; A4 may not be credited beyond its debits.
    a.transfers(vec![
        flagged(xfer(140, A3, A2, 1_000_000), TF::BALANCING_DEBIT),
        xfer(142, A4, A2, 250),
        flagged(xfer(141, A2, A4, 1_000_000), TF::BALANCING_CREDIT),
    ]);
    // Closing: A10 closed for good, A11 closed and reopened.
    a.transfers(vec![
        xfer(150, A2, A10, 5),
        flagged(xfer(151, A10, A2, 0), TF::PENDING | TF::CLOSING_DEBIT),
        flagged(xfer(152, A2, A11, 1), TF::PENDING | TF::CLOSING_CREDIT),
        resolve(153, 152, 0, TF::VOID_PENDING_TRANSFER),
    ]);
    // A pending transfer that expires before the first capture.
    a.transfers(vec![
        flagged(xfer(T_EXPIRES, A15, A16, 33), TF::PENDING).with_timeout(1)
    ]);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let rows = a.lookup_accounts(vec![A15]);
        if rows[0].debits_pending() == 0 {
            break;
        }
        assert!(Instant::now() < deadline, "pending transfer did not expire");
        std::thread::sleep(Duration::from_millis(250));
    }
}

fn phase2(a: &Tb) {
    a.accounts(vec![acct(A12, 1, AF::HISTORY), acct(A13, 1, AF::empty())]);
    // Enough rows for several query pages (a development replica answers ~1952 a page).
    let mut id = 1_000u128;
    for _ in 0..12 {
        let batch: Vec<Transfer> = (0..250)
            .map(|i| {
                id += 1;
                let (dr, cr) = if i % 2 == 0 { (A1, A12) } else { (A12, A2) };
                xfer(id, dr, cr, id)
            })
            .collect();
        a.transfers(batch);
    }
    // Singles, then a linked chain of 252 in one request: replay must send the
    // singles and the chain in separate requests and the chain whole.
    a.transfers((0..3).map(|i| xfer(9_000 + i, A1, A2, 1)).collect());
    a.transfers(
        (0..CHAIN_LEN)
            .map(|i| {
                let t = xfer(T_CHAIN_FIRST + i, A2, A1, 1);
                if i + 1 < CHAIN_LEN {
                    flagged(t, TF::LINKED)
                } else {
                    t
                }
            })
            .collect(),
    );
    a.transfers(vec![
        flagged(xfer(170, A1, A13, 70), TF::PENDING),
        flagged(xfer(171, A2, A13, 0), TF::PENDING | TF::CLOSING_CREDIT),
    ]);
}

fn phase3(a: &Tb) {
    a.accounts(vec![
        Account::new(A14, 3, u16::MAX).with_user_data_32(u32::MAX)
    ]);
    a.transfers(vec![
        resolve(172, 170, 0, TF::VOID_PENDING_TRANSFER),
        flagged(xfer(180, A12, A1, 0), TF::PENDING | TF::CLOSING_DEBIT),
        xfer(181, A1, A2, 3),
    ]);
}

// ----------------------------------------------------------------------------------
// State comparison
// ----------------------------------------------------------------------------------

/// The source's rows at one moment.
struct State {
    until: u64,
    /// Wall-clock time of the capture (the replica runs on this machine's clock).
    captured_at: u64,
    accounts: Vec<Account>,
    transfers: Vec<Transfer>,
    history: Vec<(u128, Vec<[u128; 5]>)>,
}

fn now_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
}

fn record_state(a: &Tb, until: u64) -> State {
    let accounts = a.all_accounts(until);
    let transfers = a.all_transfers(until);
    // The same rows by id (lookup), to be sure the queries missed nothing.
    let ids: Vec<u128> = transfers.iter().map(Transfer::id).collect();
    assert_eq!(a.lookup_transfers(&ids).len(), transfers.len());
    let history = [A1, A3, A12, A15]
        .iter()
        .map(|&id| (id, a.history(id, until)))
        .collect();
    State {
        until,
        captured_at: now_ns(),
        accounts,
        transfers,
        history,
    }
}

/// Compares the target with the source state, allowing exactly the documented
/// differences: the imported bit on every row, cleared timeouts, and one void per
/// expiry at the expiry's timestamp. Every balance is the source's; the balance
/// history holds one more entry per expiry (the void's).
fn assert_replica_matches(b: &Tb, s: &State, stats: &ReplayStats, expiries: &[Expiry]) {
    let expiries: Vec<&Expiry> = expiries.iter().filter(|x| x.timestamp <= s.until).collect();
    let all_t = b.all_transfers(0);
    let (voids, got_t): (Vec<Transfer>, Vec<Transfer>) = all_t.iter().partition(|t| {
        expiries
            .iter()
            .any(|x| expiry_void_id(x.pending_id) == t.id())
    });
    assert_eq!(got_t.len(), s.transfers.len(), "transfer count");
    assert_eq!(voids.len(), expiries.len(), "one void per expiry");
    for (x, v) in expiries.iter().zip(&voids) {
        let r = v.as_raw();
        assert_eq!(
            (
                r.id,
                r.pending_id,
                r.timestamp,
                r.amount,
                r.debit_account_id,
                r.credit_account_id,
                r.flags
            ),
            (
                expiry_void_id(x.pending_id),
                x.pending_id,
                x.timestamp,
                x.amount,
                x.debit_account_id,
                x.credit_account_id,
                (TF::VOID_PENDING_TRANSFER | TF::IMPORTED).bits()
            ),
            "the void of expiry {x:?}"
        );
    }
    let mut cleared = 0;
    for (want, got) in s.transfers.iter().zip(&got_t) {
        let (w, g) = (want.as_raw(), got.as_raw());
        assert_eq!(
            w.flags & TF::IMPORTED.bits(),
            0,
            "source rows are not imported"
        );
        assert_eq!(
            g.flags,
            w.flags | TF::IMPORTED.bits(),
            "flags of {:#x}",
            w.id
        );
        assert_eq!(g.timeout, 0, "replayed timeout of {:#x}", w.id);
        if w.timeout != 0 {
            assert!(w.flags & TF::PENDING.bits() != 0);
            cleared += 1;
        }
        assert_eq!(
            (
                g.id,
                g.debit_account_id,
                g.credit_account_id,
                g.amount,
                g.pending_id,
                g.user_data_128,
                g.user_data_64,
                g.user_data_32,
                g.ledger,
                g.code,
                g.timestamp
            ),
            (
                w.id,
                w.debit_account_id,
                w.credit_account_id,
                w.amount,
                w.pending_id,
                w.user_data_128,
                w.user_data_64,
                w.user_data_32,
                w.ledger,
                w.code,
                w.timestamp
            ),
            "transfer {:#x}",
            w.id
        );
    }
    assert!(
        stats.expired_by(s.captured_at).is_empty(),
        "the segments hold every expiry"
    );
    assert!(cleared >= 1);

    let got_a = b.all_accounts(0);
    assert_eq!(got_a.len(), s.accounts.len(), "account count");
    for (want, got) in s.accounts.iter().zip(&got_a) {
        let (w, g) = (want.as_raw(), got.as_raw());
        assert_eq!(
            g.flags,
            w.flags | AF::IMPORTED.bits(),
            "flags of account {:#x}",
            w.id
        );
        let (debits_pending, credits_pending) = (w.debits_pending, w.credits_pending);
        assert_eq!(
            (
                g.id,
                g.debits_pending,
                g.debits_posted,
                g.credits_pending,
                g.credits_posted,
                g.user_data_128,
                g.user_data_64,
                g.user_data_32,
                g.ledger,
                g.code,
                g.timestamp
            ),
            (
                w.id,
                debits_pending,
                w.debits_posted,
                credits_pending,
                w.credits_posted,
                w.user_data_128,
                w.user_data_64,
                w.user_data_32,
                w.ledger,
                w.code,
                w.timestamp
            ),
            "account {:#x}",
            w.id
        );
    }
    // TigerBeetle records no historical balance for an expiry; the void that replays
    // one does: exactly one more entry per expiry, releasing its amount.
    for (id, want) in &s.history {
        let got = b.history(*id, s.until);
        let mut rest = Vec::new();
        let mut extra = 0;
        for (i, e) in got.iter().enumerate() {
            match expiries.iter().find(|x| u128::from(x.timestamp) == e[4]) {
                Some(x) if x.debit_account_id == *id || x.credit_account_id == *id => {
                    let before = if i == 0 { [0; 5] } else { got[i - 1] };
                    let (side, other) = if x.debit_account_id == *id {
                        (0, 2)
                    } else {
                        (2, 0)
                    };
                    assert_eq!(e[side], before[side] - x.amount, "release by {x:?}");
                    assert_eq!(
                        (e[1], e[other], e[3]),
                        (before[1], before[other], before[3])
                    );
                    extra += 1;
                }
                _ => rest.push(*e),
            }
        }
        let touching = expiries
            .iter()
            .filter(|x| x.debit_account_id == *id || x.credit_account_id == *id)
            .count();
        assert_eq!(
            extra, touching,
            "one balance per replayed expiry of {id:#x}"
        );
        assert_eq!(&rest, want, "balance history of {id:#x}");
    }
}

fn capture_to_vec(cfg: &ClusterConfig, from: Watermark) -> (Vec<u8>, CaptureStats) {
    let mut out = Vec::new();
    let stats = capture(cfg, from, &mut out).expect("capture");
    assert_eq!(stats.segment.bytes as usize, out.len());
    (out, stats)
}

fn readers(segs: &[&Vec<u8>]) -> Vec<anyhow::Result<SegmentReader<Cursor<Vec<u8>>>>> {
    segs.iter()
        .map(|s| SegmentReader::new(Cursor::new((*s).clone())).map_err(Into::into))
        .collect()
}

fn events(seg: &[u8]) -> Vec<Event> {
    SegmentReader::new(seg)
        .unwrap()
        .collect::<std::io::Result<Vec<_>>>()
        .unwrap()
}

// ----------------------------------------------------------------------------------
// Tests
// ----------------------------------------------------------------------------------

/// Account `a` as replay writes it: imported, with no balance yet.
fn as_replayed(mut a: Account) -> Account {
    let r = a.as_raw_mut();
    r.debits_pending = 0;
    r.debits_posted = 0;
    r.credits_pending = 0;
    r.credits_posted = 0;
    r.flags |= AF::IMPORTED.bits();
    a
}

/// A reader (a `bkp logs` run) holds one session, not two: its reads go through the
/// session its change events use, and answer row for row as the library's do.
#[test]
fn a_readers_reads_answer_as_the_librarys_through_one_session() {
    use bkp::tigerbeetle::client::{Client, Names};
    let replica = Replica::fresh();
    let tb = replica.client();
    tb.accounts(vec![acct(1, 1, AF::empty()), acct(2, 1, AF::empty())]);
    tb.transfers(vec![
        xfer(11, 1, 2, 5),
        xfer(12, 2, 1, 3),
        xfer(13, 1, 2, 9),
    ]);
    let names = Names {
        cluster: "TigerBeetle cluster",
        setting: "the TigerBeetle addresses",
    };
    let library = Client::connect(&replica.cfg(), names).unwrap();
    let reader = Client::connect_reader(&replica.cfg(), names).unwrap();
    fn bytes<T: bytemuck::Pod>(rows: &[T]) -> Vec<u8> {
        bytemuck::cast_slice(rows).to_vec()
    }
    let mut reversed = QueryFilter::new(2);
    reversed.as_raw_mut().flags = tb::core::query_filter::Flags::REVERSED.bits();
    let by_account = || {
        tb::account::Filter::new(1, 10)
            .with_flags(tb::account::FilterFlags::DEBITS | tb::account::FilterFlags::CREDITS)
    };
    for c in [&reader, &library] {
        assert_eq!(c.lookup_accounts(Vec::new()).unwrap().len(), 0);
    }
    let accounts = |c: &Client| {
        let mut out = bytes(&c.lookup_accounts(vec![2, 99, 1]).unwrap());
        out.extend(bytes(&c.query_accounts(QueryFilter::new(10)).unwrap()));
        out
    };
    let transfers = |c: &Client| {
        let mut out = bytes(&c.lookup_transfers(vec![13, 11]).unwrap());
        out.extend(bytes(&c.query_transfers(reversed).unwrap()));
        out.extend(bytes(&c.get_account_transfers(by_account()).unwrap()));
        out
    };
    let (a, t) = (accounts(&reader), transfers(&reader));
    assert_eq!(a.len(), 4 * 128, "2 looked up, 2 queried");
    assert_eq!(
        t.len(),
        (2 + 2 + 3) * 128,
        "2 looked up, 2 queried, 3 of account 1"
    );
    assert_eq!(a, accounts(&library));
    assert_eq!(t, transfers(&library));
    assert_eq!(
        reader.sessions(),
        1,
        "the reader read through its one session"
    );
    assert_eq!(library.sessions(), 1);
    // Creates go through the same session and are answered as the library's:
    // a new row, one that exists, two the cluster refuses (a batch each, the
    // new ids differing).
    fn answers<K>(r: Vec<bkp::tigerbeetle::client::Rejection<K>>) -> Vec<(usize, String, bool)> {
        r.into_iter().map(|r| (r.index, r.name, r.exists)).collect()
    }
    let batch = |new: u128| {
        vec![
            xfer(new, 1, 2, 2),
            xfer(11, 1, 2, 5),
            xfer(new + 1, 1, 1, 1),
            xfer(new + 2, 1, 99, 1),
        ]
    };
    let by_reader = answers(reader.create_transfers(batch(20)).unwrap());
    let by_library = answers(library.create_transfers(batch(30)).unwrap());
    assert_eq!(by_reader, by_library);
    assert_eq!(
        by_reader
            .iter()
            .map(|(i, _, exists)| (*i, *exists))
            .collect::<Vec<_>>(),
        [(1, true), (2, false), (3, false)],
        "{by_reader:?}"
    );
    let accounts_by_reader = answers(
        reader
            .create_accounts(vec![acct(3, 1, AF::empty()), acct(1, 1, AF::empty())])
            .unwrap(),
    );
    let accounts_by_library = answers(
        library
            .create_accounts(vec![acct(4, 1, AF::empty()), acct(1, 1, AF::empty())])
            .unwrap(),
    );
    assert_eq!(accounts_by_reader, accounts_by_library);
    assert_eq!(accounts_by_reader.len(), 1, "{accounts_by_reader:?}");
    assert!(accounts_by_reader[0].2, "{accounts_by_reader:?}");
    assert!(reader.create_transfers(Vec::new()).unwrap().is_empty());
    // What the reader created is there, as the library's is.
    assert_eq!(reader.lookup_transfers(vec![20, 30]).unwrap().len(), 2);
    assert_eq!(library.lookup_accounts(vec![3, 4]).unwrap().len(), 2);
    assert_eq!(
        reader.sessions(),
        1,
        "the reader created through its one session"
    );
    assert_eq!(transfers(&reader), transfers(&library));
}

#[test]
fn capture_and_replay_reproduce_the_source() {
    let a_replica = Replica::fresh();
    let a = a_replica.client();
    let cfg_a = a_replica.cfg();

    // An empty cluster: an empty segment, three requests (rows, then change events).
    let (seg0, st0) = capture_to_vec(&cfg_a, Watermark::default());
    assert_eq!((st0.segment.until, st0.segment.accounts), (0, 0));
    assert_eq!(st0.requests, 3);
    assert!(events(&seg0).is_empty());

    phase1(&a);
    let (seg1, st1) = capture_to_vec(&cfg_a, Watermark::default());
    let state1 = record_state(&a, st1.segment.until);
    // The failed chain left no rows; balancing transfers store the amount moved.
    assert!(a.lookup_transfers(&[120, 121, 122]).is_empty());
    let amount = |id: u128| {
        state1
            .transfers
            .iter()
            .find(|t| t.id() == id)
            .map(Transfer::amount)
    };
    assert_eq!((amount(140), amount(141)), (Some(1300), Some(250)));
    assert_eq!(
        (amount(131), amount(133), amount(135)),
        (Some(300), Some(77), Some(40))
    );
    phase2(&a);
    let (seg2, st2) = capture_to_vec(&cfg_a, st1.next);
    let state2 = record_state(&a, st2.segment.until);
    phase3(&a);
    let (seg3, st3) = capture_to_vec(&cfg_a, st2.next);
    let state3 = record_state(&a, st3.segment.until);

    // Nothing new: an empty segment with until = after, in three requests.
    let (seg4, st4) = capture_to_vec(&cfg_a, st3.next);
    assert_eq!(
        (
            st4.segment.after,
            st4.segment.until,
            st4.segment.accounts,
            st4.segment.transfers
        ),
        (st3.segment.until, st3.segment.until, 0, 0)
    );
    assert_eq!(st4.requests, 3, "a capture with nothing new");
    println!(
        "requests: segment 1 {} ({} rows), segment 2 {} ({} rows), segment 3 {}, empty {}",
        st1.requests,
        st1.segment.accounts + st1.segment.transfers,
        st2.requests,
        st2.segment.accounts + st2.segment.transfers,
        st3.requests,
        st4.requests
    );

    // Every row is in exactly one segment, in timestamp order, with every field.
    let all: Vec<Event> = [&seg1, &seg2, &seg3]
        .iter()
        .flat_map(|s| events(s))
        .collect();
    let expiries: Vec<Expiry> = all
        .iter()
        .filter_map(|e| match e {
            Event::Expiry(x) => Some(*x),
            _ => None,
        })
        .collect();
    assert_eq!(
        expiries.iter().map(|x| x.pending_id).collect::<Vec<_>>(),
        vec![T_EXPIRES],
        "the expiry is captured"
    );
    assert_eq!(st1.segment.expiries, 1);
    // It happened after phase 1's last row: segment 1 reaches it.
    assert_eq!(expiries[0].timestamp, st1.segment.until);
    assert_eq!(
        all.len(),
        state3.accounts.len() + state3.transfers.len() + expiries.len()
    );
    assert!(all.windows(2).all(|w| w[0].timestamp() < w[1].timestamp()));
    let seg_transfers: Vec<&Transfer> = all
        .iter()
        .filter_map(|e| match e {
            Event::Transfer(t) => Some(t),
            _ => None,
        })
        .collect();
    assert_eq!(seg_transfers.len(), state3.transfers.len());
    for (s, t) in seg_transfers.iter().zip(&state3.transfers) {
        assert_eq!(format!("{s:?}"), format!("{t:?}"));
    }
    // Pages: segment 2 holds more rows than one query answer.
    assert!(st2.segment.transfers > 3000, "{:?}", st2.segment);
    assert!(st2.requests > 4, "segment 2 needed several pages");
    // Closed accounts: created closed (tag 1), closed by a transfer (tag 3).
    let closed: Vec<(u128, bool)> = all
        .iter()
        .filter_map(|e| match e {
            Event::Account(r) if r.account.flags().contains(AF::CLOSED) => {
                Some((r.account.id(), r.closed_by_transfer))
            }
            _ => None,
        })
        .collect();
    assert_eq!(closed, vec![(A7, false), (A10, true), (A13, true)]);
    assert_eq!(st1.closed_accounts, 2);

    let expired_source = expiries.clone();

    // Replay into a fresh target moment by moment; each run resumes the previous.
    {
        let b_replica = Replica::fresh();
        let b = b_replica.client();
        let cfg_b = b_replica.cfg();

        let r1 = replay(&cfg_b, readers(&[&seg1]), state1.until).expect("replay 1");
        assert_eq!(r1.newest_before, 0);
        assert_eq!(
            (r1.accounts, r1.transfers),
            (st1.segment.accounts, st1.segment.transfers)
        );
        assert_eq!(
            (r1.last_timestamp, r1.covered_until),
            (state1.until, state1.until)
        );
        assert_eq!(r1.timeouts_cleared, 2);
        // The expiry is replayed as a void; the long timeout stays cleared.
        assert_eq!(r1.expiries, 1);
        assert!(r1.expired_in_source.is_empty());
        assert_eq!(
            r1.timeout_cleared.iter().map(|p| p.id).collect::<Vec<_>>(),
            vec![T_LONG_TIMEOUT]
        );
        assert_eq!(b.lookup_accounts(vec![A15])[0].debits_pending(), 0);
        assert_replica_matches(&b, &state1, &r1, &expired_source);
        assert_eq!(
            b.lookup_accounts(vec![A7, A10, A11])
                .iter()
                .map(|x| x.flags().contains(AF::CLOSED))
                .collect::<Vec<_>>(),
            vec![true, true, false]
        );

        // Resume with the whole chain so far: segment 1 is checked, not replayed.
        let r2 = replay(&cfg_b, readers(&[&seg1, &seg2]), state2.until).expect("replay 2");
        assert_eq!(r2.newest_before, state1.until);
        assert_eq!(
            r2.skipped_verified,
            st1.segment.accounts + st1.segment.transfers + st1.segment.expiries
        );
        assert_eq!(r2.transfers, st2.segment.transfers);
        assert_replica_matches(&b, &state2, &r2, &expired_source);

        // Only the newest segment: the void of a pending transfer replayed by the
        // previous run is checked against the target by lookup.
        let r3 = replay(&cfg_b, readers(&[&seg3]), state3.until).expect("replay 3");
        assert_eq!((r3.accounts, r3.transfers), (1, 3));
        // Two newest-row queries, the batch size asked (one request: this
        // development replica refuses a full-size batch before it is sent), one
        // lookup of pending transfer 170, two creates, and the count of what the
        // target holds after them (for each kind, a page and the empty page
        // that ends it).
        assert_eq!((r3.requests, r3.batches), (10, 2));
        // The expiry report needs the pending transfer's row: only a replay that
        // reads segment 1 knows about it.
        assert_eq!(r3.expired_in_source, vec![]);
        let all_again = replay(&cfg_b, readers(&[&seg1, &seg2, &seg3, &seg4]), state3.until)
            .expect("replay of everything again");
        assert_eq!((all_again.accounts, all_again.transfers), (0, 0));
        assert_eq!(all_again.skipped_verified as usize, all.len());
        assert_replica_matches(&b, &state3, &all_again, &expired_source);
        assert!(b.lookup_accounts(vec![A12])[0].flags().contains(AF::CLOSED));
        assert!(b.lookup_accounts(vec![A13])[0].flags().contains(AF::CLOSED));
        // The cleared timeout: the pending transfer can still be posted here.
        b.transfers(vec![resolve(
            999,
            T_LONG_TIMEOUT,
            u128::MAX,
            TF::POST_PENDING_TRANSFER,
        )]);

        // A target past the requested point is refused.
        let e = replay(&cfg_b, readers(&[&seg1]), state1.until).unwrap_err();
        assert!(e.to_string().contains("past the requested point"), "{e:#}");
    }

    // A point inside the 252-event linked chain: the chain is left out as a whole,
    // and A13 (closed later by a transfer) is open; then resume to the end.
    {
        let b_replica = Replica::fresh();
        let b = b_replica.client();
        let cfg_b = b_replica.cfg();
        let chain: Vec<u64> = events(&seg2)
            .iter()
            .filter(|e| (T_CHAIN_FIRST..T_CHAIN_FIRST + CHAIN_LEN).contains(&e.id()))
            .map(Event::timestamp)
            .collect();
        assert_eq!(chain.len() as u128, CHAIN_LEN);
        let up_to = chain[100];
        let r =
            replay(&cfg_b, readers(&[&seg1, &seg2, &seg3]), up_to).expect("replay to mid-chain");
        assert_eq!(r.chain_events_dropped, 101);
        assert_eq!(r.covered_until, up_to);
        assert!(r.last_timestamp < chain[0]);
        let held = b.all_transfers(0);
        let want: Vec<u128> = state3
            .transfers
            .iter()
            .filter(|t| t.as_raw().timestamp < chain[0])
            .map(Transfer::id)
            .collect();
        let voids: Vec<u128> = expired_source
            .iter()
            .map(|x| expiry_void_id(x.pending_id))
            .collect();
        let (held_voids, held): (Vec<u128>, Vec<u128>) = held
            .iter()
            .map(Transfer::id)
            .partition(|id| voids.contains(id));
        assert_eq!(held, want);
        assert_eq!(held_voids, voids, "the expiry before the chain is replayed");
        let a13 = b.lookup_accounts(vec![A13]);
        assert_eq!(a13.len(), 1);
        assert!(
            !a13[0].flags().contains(AF::CLOSED),
            "A13 is still open at that point"
        );
        // The expiry falls before this point: replayed, not reported.
        assert!(r.expired_in_source.is_empty());
        assert_eq!(r.expiries, 1);
        assert_eq!(
            r.timeout_cleared.iter().map(|p| p.id).collect::<Vec<_>>(),
            vec![T_LONG_TIMEOUT]
        );

        let r = replay(&cfg_b, readers(&[&seg1, &seg2, &seg3]), state3.until).expect("resume");
        assert_eq!(r.chain_events_dropped, 0);
        assert_replica_matches(&b, &state3, &r, &expired_source);
    }

    // Rejections name the event; a target holding other rows is refused.
    {
        let b_replica = Replica::fresh();
        let b = b_replica.client();
        let cfg_b = b_replica.cfg();
        // An imported account A2 with another code, older than every segment row:
        // the target's newest row is one the log does not hold.
        let mut fake = acct(A2, 1, AF::IMPORTED);
        fake.set_code(99);
        fake.as_raw_mut().timestamp = 1;
        b.accounts(vec![fake]);
        let e = replay(&cfg_b, readers(&[&seg1]), state1.until).unwrap_err();
        let msg = format!("{e:#}");
        assert!(msg.contains("row at timestamp 1 (its newest)"), "{msg}");
        assert_eq!(classify(&e), Some(Code::Integrity));
        assert_eq!(b.all_accounts(0).len(), 1, "nothing was written: {msg}");
        // With A1 as the log wrote it on top, the newest row is the log's, and
        // the replay meets A2 and names it.
        b.accounts(vec![as_replayed(state1.accounts[0])]);
        let e = replay(&cfg_b, readers(&[&seg1]), state1.until).unwrap_err();
        let msg = format!("{e:#}");
        let a2_ts = state1.accounts[1].as_raw().timestamp;
        assert!(msg.contains("account 0x2 "), "{msg}");
        assert!(msg.contains(&format!("timestamp {a2_ts}")), "{msg}");
        assert!(msg.contains("exists_with_different_code"), "{msg}");

        // A gap (segment 2 without segment 1) in the chain.
        let e = replay(&cfg_b, readers(&[&seg2]), u64::MAX >> 2).unwrap_err();
        assert!(format!("{e:#}").contains("missing"), "{e:#}");
        assert_eq!(classify(&e), Some(Code::Integrity));

        // A plain (non-imported) account makes the target newer than every segment:
        // every segment row must then already be there, and A2 differs.
        b.accounts(vec![acct(77, 1, AF::empty())]);
        let e = replay(&cfg_b, readers(&[&seg1]), u64::MAX >> 2).unwrap_err();
        let msg = format!("{e:#}");
        assert!(msg.contains("should already hold account 0x2"), "{msg}");
        assert!(msg.contains("code differs"), "{msg}");
    }

    // A row with the same fields at another timestamp is not the log's row:
    // TigerBeetle's `exists` does not compare the timestamp, replay does.
    {
        let b_replica = Replica::fresh();
        let b = b_replica.client();
        let mut same = as_replayed(state1.accounts[0]);
        same.as_raw_mut().timestamp = 1;
        b.accounts(vec![same]);
        // Its newest row is A1 at timestamp 1, which the log does not hold.
        let e = replay(&b_replica.cfg(), readers(&[&seg1]), state1.until).unwrap_err();
        let msg = format!("{e:#}");
        assert!(msg.contains("row at timestamp 1 (its newest)"), "{msg}");
        // Newer than every segment, it must hold each segment row as it is, and
        // A1's timestamp differs.
        b.accounts(vec![acct(77, 1, AF::empty())]);
        let e = replay(&b_replica.cfg(), readers(&[&seg1]), u64::MAX >> 2).unwrap_err();
        let msg = format!("{e:#}");
        assert!(
            msg.contains("account 0x1 (timestamp") && msg.contains("its timestamp differs"),
            "{msg}"
        );
    }

    // Corrupt segments are Integrity errors, for the reader and for replay.
    let mut truncated = seg2.clone();
    truncated.truncate(seg2.len() / 2);
    let e = verify_segment(&truncated[..]).unwrap_err();
    assert_eq!(classify(&anyhow::Error::new(e)), Some(Code::Integrity));
    let mut flipped = seg2.clone();
    flipped[seg2.len() / 2] ^= 0x10;
    let e = verify_segment(&flipped[..]).unwrap_err();
    assert_eq!(classify(&anyhow::Error::new(e)), Some(Code::Integrity));
    {
        let b_replica = Replica::fresh();
        let cfg_b = b_replica.cfg();
        // A watermark ahead of the cluster is not "nothing new".
        let e = capture(&cfg_b, st3.next, &mut Vec::new()).unwrap_err();
        assert_eq!(classify(&e), Some(Code::Integrity), "{e:#}");
        let e = replay(&cfg_b, readers(&[&seg1, &truncated]), u64::MAX >> 2).unwrap_err();
        assert_eq!(classify(&e), Some(Code::Integrity), "{e:#}");
        assert!(format!("{e:#}").contains("truncated"), "{e:#}");
    }
    drop(a);
}

#[test]
fn unreachable_cluster_is_transient() {
    let cfg = ClusterConfig {
        cluster_id: 0,
        addresses: format!("127.0.0.1:{}", common::free_port()),
        timeout: Duration::from_secs(1),
    };
    let t0 = Instant::now();
    let e = capture(&cfg, Watermark::default(), &mut Vec::new()).unwrap_err();
    assert!(t0.elapsed() < Duration::from_secs(5));
    assert_eq!(classify(&e), Some(Code::Transient));
    assert!(e.to_string().contains(&cfg.addresses), "{e}");
    let e = replay(&cfg, readers(&[]), 1).unwrap_err();
    assert_eq!(classify(&e), Some(Code::Transient));
}

/// A snapshot (a copy of the data file) holds a pending transfer with a timeout that a
/// later segment posts. The restored replica expires it by its own clock; sending the
/// imported post was seen to crash TigerBeetle 0.16.78, so replay refuses first.
#[test]
fn replay_refuses_posts_of_expired_snapshot_pendings() {
    let mut a_replica = Replica::fresh();
    let cfg_a = a_replica.cfg();
    let a_file = a_replica.0.data_file.clone();
    {
        let a = a_replica.client();
        a.accounts(vec![acct(A1, 1, AF::empty()), acct(A2, 1, AF::empty())]);
        a.transfers(vec![
            flagged(xfer(20, A1, A2, 9), TF::PENDING).with_timeout(30)
        ]);
    }
    let (seg1, st1) = capture_to_vec(&cfg_a, Watermark::default());
    // Snapshot: stop, copy, start again.
    a_replica.0.stop();
    let dir = tempfile::tempdir().unwrap();
    let snap = dir.path().join("snapshot.tigerbeetle");
    std::fs::copy(&a_file, &snap).unwrap();
    let a_again = Replica::on(&a_file);
    let cfg_a = a_again.cfg();
    a_again
        .client()
        .transfers(vec![resolve(21, 20, u128::MAX, TF::POST_PENDING_TRANSFER)]);
    let (seg2, _) = capture_to_vec(&cfg_a, st1.next);

    let b_replica = Replica::on(&snap);
    let e = replay(&b_replica.cfg(), readers(&[&seg1, &seg2]), u64::MAX >> 2).unwrap_err();
    let msg = format!("{e:#}");
    assert!(msg.contains("restored snapshot"), "{msg}");
    assert!(msg.contains("0x14"), "{msg}");
    // The replica is alive and the post was not sent.
    let b = b_replica.client();
    assert!(b.lookup_transfers(&[21]).is_empty());
    assert_eq!(b.lookup_transfers(&[20]).len(), 1);
    // A fresh target replays both exactly (the timeout cleared).
    let fresh = Replica::fresh();
    let r = replay(&fresh.cfg(), readers(&[&seg1, &seg2]), u64::MAX >> 2).expect("fresh replay");
    assert_eq!((r.accounts, r.transfers, r.timeouts_cleared), (2, 2, 1));
    assert!(r.timeout_cleared.is_empty() && r.expired_in_source.is_empty());
}

/// A source that imports. TigerBeetle accepts an imported transfer anywhere after
/// the newest transfer and an imported account anywhere after the newest account,
/// so rows imported after a capture can lie below its `until` when the other kind
/// set it. One cursor shared by both kinds skipped them; each kind after its own
/// mark captures them in the next segment, and replay, all at once or a segment at
/// a time (as `restore --at` does), reproduces every row and balance.
#[test]
fn rows_imported_below_the_last_capture_are_captured_and_replayed() {
    let a_replica = Replica::fresh();
    let a = a_replica.client();
    let cfg_a = a_replica.cfg();
    let ts_of = |rows: &[Transfer], id: u128| {
        rows.iter()
            .find(|t| t.as_raw().id == id)
            .map(|t| t.as_raw().timestamp)
            .unwrap()
    };
    a.accounts(vec![acct(1, 1, AF::empty()), acct(2, 1, AF::empty())]);
    a.transfers(vec![xfer(100, 1, 2, 5)]);
    // An account after the newest transfer: this capture's `until` is an account's.
    a.accounts(vec![acct(3, 1, AF::empty())]);
    let (seg1, st1) = capture_to_vec(&cfg_a, Watermark::default());
    let t100 = ts_of(&a.all_transfers(0), 100);
    let a3 = a.lookup_accounts(vec![3])[0].as_raw().timestamp;
    assert_eq!((st1.segment.until, st1.next.transfers), (a3, t100));
    assert!(a3 - t100 >= 2, "no room between {t100} and {a3}");

    // A transfer imported below that `until`, then a plain one.
    let mut t101 = flagged(xfer(101, 2, 1, 3), TF::IMPORTED);
    t101.as_raw_mut().timestamp = t100 + (a3 - t100) / 2;
    a.transfers(vec![t101]);
    a.transfers(vec![xfer(102, 1, 3, 7)]);
    let (seg2, st2) = capture_to_vec(&cfg_a, st1.next);
    let ids: Vec<u128> = events(&seg2).iter().map(Event::id).collect();
    assert_eq!(ids, [101, 102], "the imported transfer is captured");
    let t102 = ts_of(&a.all_transfers(0), 102);
    assert_eq!((st2.segment.until, st2.next.accounts), (t102, a3));
    assert!(t102 - a3 >= 2, "no room between {a3} and {t102}");

    // An account imported below the newest transfer: nothing else is new, and the
    // next capture still takes it, below its own `after`.
    let mut a4 = acct(4, 1, AF::IMPORTED);
    a4.as_raw_mut().timestamp = a3 + (t102 - a3) / 2;
    a.accounts(vec![a4]);
    a.transfers(vec![xfer(103, 4, 1, 11)]);
    let (seg3, st3) = capture_to_vec(&cfg_a, st2.next);
    let r = SegmentReader::new(&seg3[..]).unwrap();
    assert_eq!(r.header().version, 3, "{:?}", r.header());
    assert_eq!(r.header().accounts_after, a3);
    let ids: Vec<u128> = events(&seg3).iter().map(Event::id).collect();
    assert_eq!(ids, [4, 103], "the imported account is captured");
    // Nothing new: an empty segment, marks unchanged.
    let (_, st4) = capture_to_vec(&cfg_a, st3.next);
    assert_eq!((st4.segment.accounts, st4.segment.transfers), (0, 0));
    assert_eq!(st4.next, st3.next);

    let source_accounts = a.all_accounts(0);
    let source_transfers = a.all_transfers(0);
    let same = |b: &Tb| {
        let accounts = b.all_accounts(0);
        assert_eq!(accounts.len(), source_accounts.len());
        for (have, want) in accounts.iter().zip(&source_accounts) {
            let (h, w) = (have.as_raw(), want.as_raw());
            assert_eq!(
                (h.id, h.timestamp, h.debits_posted, h.credits_posted),
                (w.id, w.timestamp, w.debits_posted, w.credits_posted)
            );
            assert_eq!((h.debits_pending, h.credits_pending), (0, 0));
        }
        let transfers = b.all_transfers(0);
        let key = |t: &Transfer| (t.as_raw().id, t.as_raw().timestamp, t.as_raw().amount);
        assert_eq!(
            transfers.iter().map(key).collect::<Vec<_>>(),
            source_transfers.iter().map(key).collect::<Vec<_>>()
        );
    };
    // All segments in one replay.
    let b_replica = Replica::fresh();
    replay(
        &b_replica.cfg(),
        readers(&[&seg1, &seg2, &seg3]),
        u64::MAX >> 2,
    )
    .unwrap();
    same(&b_replica.client());
    // A segment at a time: the target's newest row is then the other kind's.
    let c_replica = Replica::fresh();
    for seg in [&seg1, &seg2, &seg3] {
        replay(&c_replica.cfg(), readers(&[seg]), u64::MAX >> 2).unwrap();
    }
    same(&c_replica.client());
}

/// A TCP proxy to the replica on `upstream`: it holds the first `query_accounts`
/// request that any client sends through it, says so on the first channel, and
/// sends it on when told on the second. TigerBeetle 0.16's messages: a 256-byte
/// header with the message's size (header included) at 96 and the command at 114
/// (5: request); a request's operation at 196 (144: `query_accounts`).
fn holding_proxy(upstream: u16) -> (u16, mpsc::Receiver<()>, mpsc::Sender<()>) {
    use std::io::{Read, Write};
    use std::net::{TcpListener, TcpStream};
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let (held_tx, held_rx) = mpsc::channel();
    let (go_tx, go_rx) = mpsc::channel::<()>();
    let gate = Arc::new(Mutex::new(Some((held_tx, go_rx))));
    std::thread::spawn(move || {
        for down in listener.incoming() {
            let Ok(down) = down else { return };
            let Ok(up) = TcpStream::connect(("127.0.0.1", upstream)) else {
                return;
            };
            let (mut down_r, mut up_w) = (down.try_clone().unwrap(), up.try_clone().unwrap());
            let (mut up_r, mut down_w) = (up, down);
            std::thread::spawn(move || std::io::copy(&mut up_r, &mut down_w));
            let gate = Arc::clone(&gate);
            std::thread::spawn(move || {
                let mut header = [0u8; 256];
                while down_r.read_exact(&mut header).is_ok() {
                    let size = u32::from_le_bytes(header[96..100].try_into().unwrap()) as usize;
                    let mut body = vec![0u8; size.saturating_sub(header.len())];
                    if down_r.read_exact(&mut body).is_err() {
                        return;
                    }
                    if header[114] == 5 && header[196] == 144 {
                        let taken = gate.lock().unwrap().take();
                        if let Some((held, go)) = taken {
                            held.send(()).unwrap();
                            go.recv().unwrap();
                        }
                    }
                    if up_w.write_all(&header).is_err() || up_w.write_all(&body).is_err() {
                        return;
                    }
                }
            });
        }
    });
    (port, held_rx, go_tx)
}

/// A capture reads the newest transfer, then the change events after it, then the
/// newest account. A transfer, then an expiry, then an account committed between
/// the last two reads put the expiry below the capture's `until` (the account's)
/// and the transfer above its transfer mark: that segment held the expiry, the
/// next one the transfer below it, and replay (which applies an expiry as a
/// transfer at its timestamp) could not import that transfer. The capture now
/// reads the events up to the account once more: the transfer is in the same
/// segment as the expiry, and the chain replays.
#[test]
fn a_transfer_and_an_expiry_during_a_capture_stay_in_timestamp_order() {
    let a_replica = Replica::fresh();
    let a = a_replica.client();
    a.accounts(vec![acct(1, 1, AF::empty()), acct(2, 1, AF::empty())]);
    // P expires in 5 s: after the capture below has read the change events.
    a.transfers(vec![flagged(xfer(10, 1, 2, 9), TF::PENDING).with_timeout(5)]);
    let created = Instant::now();
    let (port, held, go) = holding_proxy(a_replica.0.port);
    let through_proxy = ClusterConfig {
        addresses: format!("127.0.0.1:{port}"),
        ..a_replica.cfg()
    };
    let capturing = std::thread::spawn(move || {
        let mut out = Vec::new();
        let stats = capture(&through_proxy, Watermark::default(), &mut out).expect("capture");
        (out, stats)
    });
    held.recv_timeout(Duration::from_secs(30))
        .expect("the capture reads the newest account");
    // While the capture waits for the newest account: T, P's expiry, an account.
    a.transfers(vec![xfer(11, 1, 2, 1)]);
    let deadline = Instant::now() + Duration::from_secs(60);
    while a.lookup_accounts(vec![1])[0].debits_pending() != 0 {
        assert!(Instant::now() < deadline, "P did not expire");
        std::thread::sleep(Duration::from_millis(100));
    }
    a.accounts(vec![acct(3, 1, AF::empty())]);
    go.send(()).unwrap();
    let (seg1, st1) = capturing.join().unwrap();
    let (seg2, _) = capture_to_vec(&a_replica.cfg(), st1.next);

    let ts_of = |id: u128| {
        a.all_transfers(0)
            .iter()
            .find(|t| t.id() == id)
            .map(|t| t.as_raw().timestamp)
            .unwrap()
    };
    let (t11, a3) = (ts_of(11), a.lookup_accounts(vec![3])[0].as_raw().timestamp);
    let all: Vec<Event> = [&seg1, &seg2].iter().flat_map(|s| events(s)).collect();
    let expired: Vec<u64> = all
        .iter()
        .filter_map(|e| match e {
            Event::Expiry(x) => Some(x.timestamp),
            _ => None,
        })
        .collect();
    assert_eq!(expired.len(), 1, "{all:?}");
    assert!(
        t11 < expired[0] && expired[0] < a3,
        "P expired at {} , not between T ({t11}) and the account ({a3}) (after {:?}): \
         the machine is too slow for this test",
        expired[0],
        created.elapsed()
    );
    assert_eq!(st1.segment.until, a3);
    assert_eq!(
        st1.next.transfers, t11,
        "the capture's transfer mark reaches T"
    );
    let ids: Vec<u128> = events(&seg1).iter().map(Event::id).collect();
    assert_eq!(
        ids,
        [1, 2, 10, 11, 10, 3],
        "T is in the segment of the expiry"
    );

    let b_replica = Replica::fresh();
    let r = replay(&b_replica.cfg(), readers(&[&seg1, &seg2]), u64::MAX >> 2).expect("replay");
    assert_eq!((r.accounts, r.transfers, r.expiries), (3, 2, 1));
    let b = b_replica.client();
    assert_eq!(
        b.lookup_accounts(vec![1, 2])
            .iter()
            .map(|x| (x.debits_pending(), x.debits_posted(), x.credits_posted()))
            .collect::<Vec<_>>(),
        vec![(0, 1, 0), (0, 0, 1)]
    );
}

/// Replay sends batches as large as the target takes: a `--development`
/// replica's 32 KiB requests hold 253 transfers, which the client finds out
/// without a request per try (a refused batch is never sent), and nothing the
/// probe sends is created.
#[test]
fn replay_asks_the_target_how_large_a_batch_it_takes() {
    let r = Replica::fresh();
    let (n, requests) = with_client(&r.cfg(), |c| {
        let n = batch_limit(c)?;
        Ok((n, c.requests()))
    })
    .unwrap();
    assert_eq!(n, 253);
    assert_eq!(requests, 1, "only the batch that fits is sent");
    let t = r.client();
    assert!(
        t.all_transfers(u64::MAX >> 1).is_empty(),
        "the probe created transfers"
    );
}

/// One create request is in flight while replay reads the next batch: a
/// rejection in it stops the replay before another request goes, and names the
/// event. Batches of 253 (a development replica's): the second holds the
/// rejected transfer, the third and fourth are never sent.
#[test]
fn a_rejection_stops_the_replay_before_the_next_request() {
    let r = Replica::fresh();
    let t0: u64 = 1_000_000_000;
    let mut w = SegmentWriter::new(Vec::new(), 0, 0, t0 + 10_000).unwrap();
    for (n, id) in [A1, A2].into_iter().enumerate() {
        let mut a = acct(id, 1, AF::empty());
        a.as_raw_mut().timestamp = t0 + n as u64;
        w.push_account(&a).unwrap();
    }
    let missing = 0x9999;
    for n in 0..800u64 {
        let dr = if n == 400 { missing } else { A1 };
        let mut t = xfer(1000 + u128::from(n), dr, A2, 1);
        t.as_raw_mut().timestamp = t0 + 10 + n;
        w.push_transfer(&t).unwrap();
    }
    let (seg, _) = w.finish().unwrap();
    let e = replay(&r.cfg(), readers(&[&seg]), u64::MAX >> 2).unwrap_err();
    let msg = format!("{e:#}");
    assert!(
        msg.contains("debit_account_not_found") && msg.contains(&format!("{:#x}", 1400)),
        "{msg}"
    );
    let held = r.client().all_transfers(u64::MAX >> 1);
    assert_eq!(
        held.len(),
        253 + 252,
        "the first two requests, but for the rejected transfer"
    );
    assert!(
        held.iter().all(|t| t.id() < 1000 + 2 * 253),
        "a request after the rejection went"
    );
    assert_eq!(r.client().all_accounts(u64::MAX >> 1).len(), 2);
}

/// A segment's last request is still in flight while the next segment is
/// read: an error there (here a segment of another cluster) waits for its
/// answer, and the rejection in it, which came first, is reported with it.
#[test]
fn a_rejection_in_flight_outranks_the_next_segments_error() {
    let r = Replica::fresh();
    let t0: u64 = 1_000_000_000;
    let until = t0 + 10_000;
    let mut w = SegmentWriter::new(Vec::new(), 0, 0, until).unwrap();
    for (n, id) in [A1, A2].into_iter().enumerate() {
        let mut a = acct(id, 1, AF::empty());
        a.as_raw_mut().timestamp = t0 + n as u64;
        w.push_account(&a).unwrap();
    }
    for n in 0..300u64 {
        let dr = if n == 280 { 0x9999 } else { A1 };
        let mut t = xfer(1000 + u128::from(n), dr, A2, 1);
        t.as_raw_mut().timestamp = t0 + 10 + n;
        w.push_transfer(&t).unwrap();
    }
    let (first, _) = w.finish().unwrap();
    let (other, _) = SegmentWriter::new(Vec::new(), 7, until, until + 100)
        .unwrap()
        .finish()
        .unwrap();
    let e = replay(&r.cfg(), readers(&[&first, &other]), u64::MAX >> 2).unwrap_err();
    let msg = format!("{e:#}");
    assert!(
        msg.contains("debit_account_not_found") && msg.contains(&format!("{:#x}", 1280)),
        "{msg}"
    );
    assert!(
        msg.contains("segments of different clusters")
            && msg.contains("and the request sent before failed"),
        "{msg}"
    );
}
