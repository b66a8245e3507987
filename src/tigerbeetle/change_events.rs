//! TigerBeetle's change events: `get_change_events` (operation 137 of the C client).
//!
//! The cluster records one event per committed transfer, and one per pending transfer
//! that *expired*: an expiry creates no transfer row, so it is visible nowhere else.
//! Each event has its own timestamp from the cluster's one timestamp sequence (an
//! expiry takes a timestamp of its own, between the rows committed around it), and
//! the events come in ascending timestamp order, selected by an inclusive range.
//! Point-in-time recovery needs the expiries: a pending transfer that expired
//! releases its amounts, and replay must release them at the same timestamp.
//!
//! The Rust client crate does not wrap this operation, so [`EventsClient`] submits it
//! through the crate's lower-level interface (its own session with the cluster,
//! opened on first use) and decodes the reply here. Layouts, from TigerBeetle's
//! `src/tigerbeetle.zig` (`ChangeEventsFilter`, `ChangeEvent`), all little-endian:
//!
//! - filter, 64 bytes: 0 `timestamp_min` u64, 8 `timestamp_max` u64 (0: unbounded),
//!   16 `limit` u32, 20..64 reserved (zero);
//! - event, 384 bytes: 0 `transfer_id` u128, 16 `transfer_amount` u128,
//!   32 `transfer_pending_id` u128, 48..76 the transfer's user data, 76 `transfer_timeout`
//!   u32, 80 `transfer_code` u16, 82 `transfer_flags` u16, 84 `ledger` u32, 88 `type` u8
//!   (0 single phase, 1 pending, 2 posted, 3 voided, 4 expired), 128 the debit account
//!   (id first, 112 bytes), 240 the credit account (id first, 112 bytes), 352 `timestamp`
//!   u64 (the event's), 360 `transfer_timestamp` u64, 368 and 376 the accounts'
//!   timestamps.
//!
//! For an expiry, the `transfer_*` fields are the pending transfer that expired and
//! `timestamp` is the expiry's own. Clusters record change events for transfers
//! committed on TigerBeetle 0.16.29 or later.

use anyhow::{anyhow, Result};
use tigerbeetle_unofficial::core as tbc;
use tokio::sync::oneshot;

/// Length of one event in a reply.
pub const EVENT_LEN: usize = 384;
/// Length of the filter.
pub const FILTER_LEN: usize = 64;
/// Events per page: the most a 1 MiB reply holds (the cluster caps it to what its
/// reply size allows, so pages may hold fewer).
pub const PAGE_LIMIT: u32 = 2730;

/// What an event records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventType {
    SinglePhase,
    Pending,
    Posted,
    Voided,
    Expired,
    /// A type this bkp does not know.
    Other(u8),
}

impl EventType {
    fn from_u8(b: u8) -> Self {
        match b {
            0 => EventType::SinglePhase,
            1 => EventType::Pending,
            2 => EventType::Posted,
            3 => EventType::Voided,
            4 => EventType::Expired,
            b => EventType::Other(b),
        }
    }
    /// Whether the event is a transfer's creation (its timestamp is the
    /// transfer's): not an expiry, nor a type this bkp does not know.
    pub fn is_transfer(self) -> bool {
        matches!(
            self,
            EventType::SinglePhase | EventType::Pending | EventType::Posted | EventType::Voided
        )
    }
}

/// The fields of a change event that bkp uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChangeEvent {
    pub kind: EventType,
    /// The event's own timestamp.
    pub timestamp: u64,
    /// The transfer's id (for an expiry: the pending transfer that expired).
    pub transfer_id: u128,
    pub transfer_amount: u128,
    pub transfer_timestamp: u64,
    pub transfer_timeout: u32,
    pub transfer_code: u16,
    pub transfer_flags: u16,
    pub ledger: u32,
    pub debit_account_id: u128,
    pub credit_account_id: u128,
}

fn u128_at(b: &[u8], at: usize) -> u128 {
    let mut a = [0u8; 16];
    a.copy_from_slice(&b[at..at + 16]);
    u128::from_le_bytes(a)
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(a)
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[at..at + 4]);
    u32::from_le_bytes(a)
}

fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}

impl ChangeEvent {
    /// Decodes one event (exactly [`EVENT_LEN`] bytes).
    pub fn decode(b: &[u8]) -> Result<ChangeEvent> {
        if b.len() != EVENT_LEN {
            return Err(unexpected(format!(
                "a change event is {EVENT_LEN} bytes, got {}",
                b.len()
            )));
        }
        Ok(ChangeEvent {
            kind: EventType::from_u8(b[88]),
            timestamp: u64_at(b, 352),
            transfer_id: u128_at(b, 0),
            transfer_amount: u128_at(b, 16),
            transfer_timestamp: u64_at(b, 360),
            transfer_timeout: u32_at(b, 76),
            transfer_code: u16_at(b, 80),
            transfer_flags: u16_at(b, 82),
            ledger: u32_at(b, 84),
            debit_account_id: u128_at(b, 128),
            credit_account_id: u128_at(b, 240),
        })
    }
}

/// The filter's bytes: events with timestamps in `[min, max]` (`max` 0: no bound).
pub fn encode_filter(min: u64, max: u64, limit: u32) -> [u8; FILTER_LEN] {
    let mut f = [0u8; FILTER_LEN];
    f[0..8].copy_from_slice(&min.to_le_bytes());
    f[8..16].copy_from_slice(&max.to_le_bytes());
    f[16..20].copy_from_slice(&limit.to_le_bytes());
    f
}

/// Decodes a reply and checks it: whole events, at most `limit`, strictly ascending,
/// inside `[min, max]`. TigerBeetle answers an invalid filter with an empty reply, so
/// a wrong answer must not pass for "no events".
pub fn decode_reply(reply: &[u8], min: u64, max: u64, limit: u32) -> Result<Vec<ChangeEvent>> {
    if !reply.len().is_multiple_of(EVENT_LEN) {
        return Err(unexpected(format!(
            "get_change_events returned {} bytes, not a whole number of {EVENT_LEN}-byte events",
            reply.len()
        )));
    }
    let events = reply
        .chunks_exact(EVENT_LEN)
        .map(ChangeEvent::decode)
        .collect::<Result<Vec<_>>>()?;
    let in_range = |ts: u64| ts >= min.max(1) && (max == 0 || ts <= max);
    let ordered = events.windows(2).all(|w| w[0].timestamp < w[1].timestamp);
    if events.len() > limit as usize || !ordered || !events.iter().all(|e| in_range(e.timestamp)) {
        return Err(unexpected(format!(
            "get_change_events for timestamps [{min}, {max}] (limit {limit}) returned {} events \
             that are out of order, out of range or over the limit",
            events.len()
        )));
    }
    Ok(events)
}

/// A reply that is not what the request asks of a TigerBeetle cluster (bytes
/// from the network): an integrity failure, never taken for an answer.
pub fn unexpected(what: String) -> anyhow::Error {
    crate::exit::coded(
        crate::exit::Code::Integrity,
        format!(
            "{what}: the cluster does not answer as this bkp expects; check that its replicas \
             run TigerBeetle {}, the release this bkp is built for",
            super::CLIENT_RELEASE
        ),
    )
}

pub type Reply = std::result::Result<Vec<u8>, tbc::error::SendError>;

/// One request in flight: the body it sends and where its answer goes.
pub struct Request {
    data: Vec<u8>,
    answer: Option<oneshot::Sender<Reply>>,
}

impl tbc::UserData for Request {
    fn data(&self) -> &[u8] {
        &self.data
    }
}

/// Completes requests by sending the reply's bytes back to the waiting caller.
pub struct Completion;

impl tbc::Callbacks for Completion {
    type UserDataPtr = Box<Request>;

    fn completion(&self, packet: tbc::Packet<Self::UserDataPtr>, reply: Option<tbc::Reply<'_>>) {
        let status = packet.status();
        let mut request = packet.into_user_data();
        let answer = match (status, reply) {
            (Ok(()), Some(r)) => Ok(r.payload.to_vec()),
            (Ok(()), None) => Ok(Vec::new()),
            (Err(e), _) => Err(e),
        };
        if let Some(tx) = request.answer.take() {
            // The caller may have given up (timeout): nothing to tell then.
            let _ = tx.send(answer);
        }
    }
}

static COMPLETION: Completion = Completion;

/// A client session whose requests and replies are bytes: `get_change_events`
/// (which the library's client does not offer), and the reads of a run that
/// needs no other session (see [`super::client::Client::connect_reader`]).
pub struct EventsClient {
    inner: tbc::Client<&'static Completion>,
}

impl EventsClient {
    /// Opens a session to `addresses` (does not touch the network yet).
    pub fn new(cluster_id: u128, addresses: &str) -> Result<EventsClient> {
        let inner = tbc::Client::with_callback(cluster_id, addresses.as_bytes(), &COMPLETION)
            .map_err(|e| anyhow!("cannot open a TigerBeetle client for {addresses}: {e}"))?;
        Ok(EventsClient { inner })
    }

    /// Submits one request; the future resolves to the reply's bytes.
    pub fn submit(
        &self,
        min: u64,
        max: u64,
        limit: u32,
    ) -> impl std::future::Future<Output = Option<Reply>> {
        let data = encode_filter(min, max, limit).to_vec();
        self.submit_op(tbc::OperationKind::GetChangeEvents, data)
    }

    /// Submits one request of `operation` with `data` as its body; the future
    /// resolves to the reply's bytes.
    pub fn submit_op(
        &self,
        operation: tbc::OperationKind,
        data: Vec<u8>,
    ) -> impl std::future::Future<Output = Option<Reply>> {
        let (tx, rx) = oneshot::channel();
        let request = Box::new(Request {
            data,
            answer: Some(tx),
        });
        self.inner.submit(tbc::Packet::new(request, operation));
        async move { rx.await.ok() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(kind: u8, ts: u64, id: u128) -> Vec<u8> {
        let mut b = vec![0u8; EVENT_LEN];
        b[0..16].copy_from_slice(&id.to_le_bytes());
        b[16..32].copy_from_slice(&7u128.to_le_bytes());
        b[76..80].copy_from_slice(&30u32.to_le_bytes());
        b[80..82].copy_from_slice(&9u16.to_le_bytes());
        b[82..84].copy_from_slice(&2u16.to_le_bytes());
        b[84..88].copy_from_slice(&5u32.to_le_bytes());
        b[88] = kind;
        b[128..144].copy_from_slice(&11u128.to_le_bytes());
        b[240..256].copy_from_slice(&12u128.to_le_bytes());
        b[352..360].copy_from_slice(&ts.to_le_bytes());
        b[360..368].copy_from_slice(&(ts - 1).to_le_bytes());
        b
    }

    #[test]
    fn events_decode_at_tigerbeetles_offsets() {
        let e = ChangeEvent::decode(&event(4, 100, 0xabc)).unwrap();
        assert_eq!(e.kind, EventType::Expired);
        assert_eq!(e.timestamp, 100);
        assert_eq!(e.transfer_id, 0xabc);
        assert_eq!(e.transfer_amount, 7);
        assert_eq!(e.transfer_timestamp, 99);
        assert_eq!(e.transfer_timeout, 30);
        assert_eq!(e.transfer_code, 9);
        assert_eq!(e.transfer_flags, 2);
        assert_eq!(e.ledger, 5);
        assert_eq!(e.debit_account_id, 11);
        assert_eq!(e.credit_account_id, 12);
        assert_eq!(EventType::from_u8(9), EventType::Other(9));
    }

    #[test]
    fn a_reply_out_of_order_range_or_shape_is_refused() {
        let mut r = event(0, 10, 1);
        r.extend(event(4, 12, 2));
        assert_eq!(decode_reply(&r, 10, 12, 5).unwrap().len(), 2);
        assert_eq!(decode_reply(&r, 10, 0, 5).unwrap().len(), 2);
        // Refused with the integrity exit code, never as "no events" nor as a
        // generic failure.
        let refused = |reply: &[u8], min, max, limit, why: &str| {
            let e = decode_reply(reply, min, max, limit).expect_err(why);
            assert_eq!(
                crate::exit::classify(&e),
                Some(crate::exit::Code::Integrity),
                "{why}: {e:#}"
            );
            assert!(e.to_string().contains("does not answer"), "{why}: {e:#}");
        };
        refused(&r, 11, 12, 5, "below the range");
        refused(&r, 10, 11, 5, "above the range");
        refused(&r, 10, 12, 1, "over the limit");
        refused(&r[..EVENT_LEN + 3], 10, 12, 5, "torn");
        let mut back = event(0, 12, 1);
        back.extend(event(4, 10, 2));
        refused(&back, 10, 12, 5, "descending");
        let f = encode_filter(3, 4, 5);
        assert_eq!(&f[0..8], &3u64.to_le_bytes());
        assert_eq!(&f[8..16], &4u64.to_le_bytes());
        assert_eq!(&f[16..20], &5u32.to_le_bytes());
        assert!(f[20..].iter().all(|&b| b == 0));
    }
}
