//! The one TigerBeetle client of bkp: connect, bounded calls, one error mapping.
//!
//! The client library is async, retries forever while a cluster is down, and joins
//! its I/O thread when dropped. A [`Client`] pairs it with a small private runtime
//! for synchronous callers and applies one policy to every request:
//!
//! - **Timeout.** Each request is bounded by [`ClientSpec::timeout`], counted from
//!   its submission (the first request of a client also registers its session).
//!   No answer in time is a [`Code::Transient`] error naming the cluster's
//!   addresses: retrying later may succeed. There is no overall deadline on top:
//!   callers that page through many requests get one full timeout per request, so
//!   a slow but live cluster is never cut off mid-read.
//! - **Send errors** map to `anyhow` errors carrying bkp's exit codes: an evicted
//!   or shut-down session is [`Code::Transient`]; a client release the cluster
//!   refuses, a request over the cluster's size limit and anything else are plain
//!   failures that say what to fix.
//! - **Configuration.** Empty addresses, a zero timeout or addresses the library
//!   cannot parse are [`Code::Config`] errors; connecting touches no network.
//!
//! Closing drops the library's client outside the runtime (cancelling requests
//! still in flight, milliseconds) before shutting the runtime down.

use std::cell::Cell;
use std::future::Future;
use std::time::Duration;

use anyhow::{anyhow, Context, Result};
use tigerbeetle_unofficial as tb;
use tigerbeetle_unofficial::core::OperationKind;
use tigerbeetle_unofficial::error::{
    CreateAccountErrorKind, CreateAccountsApiError, CreateAccountsError, CreateTransferErrorKind,
    CreateTransfersApiError, CreateTransfersError, RawCreateAccountsIndividualApiResult,
    RawCreateTransfersIndividualApiResult, SendError, SendErrorKind,
};
use tigerbeetle_unofficial::{Account, QueryFilter, Transfer};

use super::change_events::{self, ChangeEvent, EventsClient};
use crate::exit::{coded, Code};

use super::CLIENT_RELEASE;

/// Where and how to reach a cluster. The ledger's and the log's configurations
/// each produce one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientSpec {
    pub cluster_id: u128,
    /// Replica addresses as TigerBeetle takes them, e.g. `127.0.0.1:3000,10.0.0.2:3000`.
    pub addresses: String,
    /// Bound on every request; the client itself never gives up.
    pub timeout: Duration,
}

/// How messages name the cluster and the setting that lists its addresses.
#[derive(Debug, Clone, Copy)]
pub struct Names {
    /// E.g. "ledger cluster": messages say "the ledger cluster at ADDRESSES".
    pub cluster: &'static str,
    /// E.g. "[ledger] addresses": the hint for an unreachable cluster says "fix it".
    pub setting: &'static str,
}

/// One event of a create request that TigerBeetle did not create (`exists` included).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection<K> {
    /// The event's index in the request.
    pub index: usize,
    pub kind: K,
    /// The event exists already (TigerBeetle's `exists`): created by an earlier
    /// request, not a rejection of its contents.
    pub exists: bool,
    /// TigerBeetle's snake_case name of the result (see [`transfer_result_name`]).
    pub name: String,
}

/// A connected client with its own runtime; counts the requests it sends.
pub struct Client {
    /// The library's session, for creates and reads when it is open: opened
    /// by [`Client::connect`], never by a [`Client::connect_reader`] client.
    /// Dropped before the runtime.
    client: std::cell::OnceCell<tb::Client>,
    /// `Some` until dropped.
    rt: Option<tokio::runtime::Runtime>,
    addresses: String,
    timeout: Duration,
    names: Names,
    requests: Cell<u64>,
    cluster_id: u128,
    /// The session for `get_change_events`, and for reads and creates while
    /// `client` is not open; opened on first use.
    events: std::cell::OnceCell<EventsClient>,
}

/// Checks what TigerBeetle's client would accept blindly: empty addresses and a
/// zero timeout are configuration errors.
pub fn check_spec(spec: &ClientSpec, names: Names) -> Result<()> {
    if spec.addresses.trim().is_empty() {
        return Err(coded(
            Code::Config,
            format!("{} is empty: name the replicas", names.setting),
        ));
    }
    if spec.timeout.is_zero() {
        return Err(coded(
            Code::Config,
            format!(
                "the timeout for the {} must be longer than zero",
                names.cluster
            ),
        ));
    }
    Ok(())
}

/// Connects, runs `f`, and closes the client whatever `f` returned.
pub fn with_client<T>(
    spec: &ClientSpec,
    names: Names,
    f: impl FnOnce(&Client) -> Result<T>,
) -> Result<T> {
    let client = Client::connect(spec, names)?;
    let out = f(&client);
    client.close();
    out
}

/// Whether any replica of `spec` accepts a TCP connection within `within`
/// (each address tried in turn). The client library retries forever and only
/// the request timeout ends its wait; a caller that can do without the cluster
/// asks this first, so that a cluster with nothing listening (connection
/// refused, milliseconds) or an address that drops packets (`within`) costs
/// that, not a full timeout per request. `Ok` also when no address could be
/// resolved here: then the client decides. A refused probe is [`Code::Transient`].
pub fn probe(spec: &ClientSpec, names: Names, within: Duration) -> Result<()> {
    use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
    let mut tried = Vec::new();
    for a in spec
        .addresses
        .split(',')
        .map(str::trim)
        .filter(|a| !a.is_empty())
    {
        // TigerBeetle takes a bare port (on 127.0.0.1), an address with a port, or
        // an address alone (port 3001).
        let addrs: Vec<SocketAddr> = if a.bytes().all(|b| b.is_ascii_digit()) {
            format!("127.0.0.1:{a}")
                .to_socket_addrs()
                .map(Vec::from_iter)
                .unwrap_or_default()
        } else if let Ok(ip) = a.parse::<std::net::IpAddr>() {
            vec![SocketAddr::new(ip, 3001)]
        } else {
            a.to_socket_addrs().map(Vec::from_iter).unwrap_or_default()
        };
        for addr in addrs {
            match TcpStream::connect_timeout(&addr, within) {
                Ok(_) => return Ok(()),
                Err(e) => tried.push(format!("{addr}: {e}")),
            }
        }
    }
    if tried.is_empty() {
        return Ok(());
    }
    Err(coded(
        Code::Transient,
        format!(
            "the {} at {} accepts no connection ({}): start the cluster or fix {}",
            names.cluster,
            spec.addresses,
            tried.join("; "),
            names.setting
        ),
    ))
}

impl Client {
    /// A client for `spec` after [`check_spec`]. Returns at once: the library
    /// registers the session in the background (see [`Client::open_events`]).
    pub fn connect(spec: &ClientSpec, names: Names) -> Result<Client> {
        let c = Client::connect_reader(spec, names)?;
        c.tb()?;
        Ok(c)
    }

    /// A client for `spec` that never opens the library's session: its
    /// reads, creates and change events go through one session of bkp's own
    /// ([`EventsClient`]), their replies decoded and checked here. Every
    /// session holds about 21 MiB of message buffers, so a run that reads
    /// and records (a `bkp logs` run, the ledger) holds one rather than two.
    pub fn connect_reader(spec: &ClientSpec, names: Names) -> Result<Client> {
        check_spec(spec, names)?;
        quiet_client_logs();
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .context("cannot start the runtime for the TigerBeetle client")?;
        Ok(Client {
            client: std::cell::OnceCell::new(),
            rt: Some(rt),
            addresses: spec.addresses.clone(),
            timeout: spec.timeout,
            names,
            requests: Cell::new(0),
            cluster_id: spec.cluster_id,
            events: std::cell::OnceCell::new(),
        })
    }

    /// Drops the library's client outside the runtime, then stops the runtime.
    pub fn close(self) {
        drop(self);
    }

    /// The same session, its messages naming the cluster as `names` does.
    pub fn renamed(mut self, names: Names) -> Client {
        self.names = names;
        self
    }

    /// Requests sent so far (counting those that timed out).
    pub fn requests(&self) -> u64 {
        self.requests.get()
    }

    /// Sessions open with the cluster (each holds its message buffers).
    pub fn sessions(&self) -> usize {
        usize::from(self.client.get().is_some()) + usize::from(self.events.get().is_some())
    }

    /// The cluster's id.
    pub fn cluster_id(&self) -> u128 {
        self.cluster_id
    }

    /// The cluster's addresses, for messages.
    pub fn addresses(&self) -> &str {
        &self.addresses
    }

    /// The library's session, opened now if it is not yet.
    fn tb(&self) -> Result<&tb::Client> {
        if let Some(c) = self.client.get() {
            return Ok(c);
        }
        let c = tb::Client::new(self.cluster_id, self.addresses.as_bytes()).map_err(|e| {
            coded(
                Code::Config,
                format!(
                    "{} {:?} are not usable: {e}",
                    self.names.setting, self.addresses
                ),
            )
        })?;
        Ok(self.client.get_or_init(|| c))
    }

    /// A read through bkp's own session: `data` is the request's body, the
    /// reply whole rows of `T` (checked: bytes from the network).
    fn read_raw<T: bytemuck::Pod>(
        &self,
        what: &str,
        operation: OperationKind,
        data: Vec<u8>,
    ) -> Result<Vec<T>> {
        let session = self.events_session()?;
        let reply = self
            .call(what, session.submit_op(operation, data))?
            .ok_or_else(|| self.failed(what, &"the client dropped the request"))?
            .map_err(|e| self.send_error(what, e))?;
        self.rows(what, &reply)
    }

    /// `reply` as whole rows of `T` (checked: bytes from the network).
    fn rows<T: bytemuck::Pod>(&self, what: &str, reply: &[u8]) -> Result<Vec<T>> {
        let size = std::mem::size_of::<T>();
        if !reply.len().is_multiple_of(size) {
            return Err(change_events::unexpected(format!(
                "{what} to the {} at {} returned {} bytes, not whole {size}-byte rows",
                self.names.cluster,
                self.addresses,
                reply.len()
            )));
        }
        let mut rows = vec![T::zeroed(); reply.len() / size];
        bytemuck::cast_slice_mut::<T, u8>(&mut rows).copy_from_slice(reply);
        Ok(rows)
    }

    /// Runs one request, bounded by the timeout; `what` names it in errors.
    pub fn call<F: Future>(&self, what: &str, fut: F) -> Result<F::Output> {
        self.requests.set(self.requests.get() + 1);
        self.block(what, self.timeout, fut)
    }

    /// Waits for `fut` at most `within`; `what` names it in errors.
    fn block<F: Future>(&self, what: &str, within: Duration, fut: F) -> Result<F::Output> {
        let rt = self.rt.as_ref().expect("the runtime lives until dropped");
        rt.block_on(async { tokio::time::timeout(within, fut).await })
            .map_err(|_| {
                coded(
                    Code::Transient,
                    format!(
                        "the {} at {} did not answer {what} within {:?}: start the cluster or \
                         fix {}",
                        self.names.cluster, self.addresses, self.timeout, self.names.setting
                    ),
                )
            })
    }

    /// Hands the request `fut` to the library's thread now and returns without
    /// waiting: its first poll submits the packet (the library queues requests of
    /// one session and sends them in order). The caller prepares its next request
    /// meanwhile, and [`InFlight::wait`] takes the answer, bounded by the timeout
    /// counted from here.
    fn begin<'c, T>(
        &'c self,
        what: &'static str,
        fut: impl Future<Output = Result<T>> + 'c,
    ) -> InFlight<'c, T> {
        use std::task::{Context as TaskContext, Poll, Waker};
        self.requests.set(self.requests.get() + 1);
        let mut fut: std::pin::Pin<Box<dyn Future<Output = Result<T>> + 'c>> = Box::pin(fut);
        let rt = self.rt.as_ref().expect("the runtime lives until dropped");
        let _inside = rt.enter();
        let state = match fut
            .as_mut()
            .poll(&mut TaskContext::from_waker(Waker::noop()))
        {
            Poll::Ready(answer) => Flight::Answered(answer),
            Poll::Pending => Flight::Waiting(fut),
        };
        InFlight {
            client: self,
            what,
            sent: std::time::Instant::now(),
            state,
        }
    }

    /// The error for a request `what` that could not be sent or answered.
    pub fn send_error(&self, what: &str, e: SendError) -> anyhow::Error {
        let (cluster, addresses) = (self.names.cluster, &self.addresses);
        match e.kind() {
            SendErrorKind::ClientEvicted | SendErrorKind::ClientShutdown => coded(
                Code::Transient,
                format!(
                    "the {cluster} at {addresses} ended this client's session during {what} \
                     ({e}); retry"
                ),
            ),
            SendErrorKind::ClientReleaseTooLow | SendErrorKind::ClientReleaseTooHigh => anyhow!(
                "the {cluster} at {addresses} refused this client ({e}): bkp's TigerBeetle \
                 client is release {CLIENT_RELEASE}; run a cluster release that accepts it"
            ),
            SendErrorKind::TooMuchData => {
                // Refused before it was sent: not a request of this client's.
                self.requests.set(self.requests.get().saturating_sub(1));
                anyhow::Error::new(TooMuchData).context(format!(
                    "{what} to the {cluster} at {addresses} is larger than the cluster's request \
                 limit ({e}); it runs with a smaller --limit-request than the requests bkp \
                 sends need (for a replay: than the cluster the rows came from)"
                ))
            }
            _ => anyhow!("{what} to the {cluster} at {addresses} failed: {e}"),
        }
    }

    fn send<T>(&self, what: &str, fut: impl Future<Output = Result<T, SendError>>) -> Result<T> {
        self.call(what, fut)?.map_err(|e| self.send_error(what, e))
    }

    /// A read: through the library's session when it is open (`library`),
    /// otherwise through bkp's own with `body` as the request (see
    /// [`Client::connect_reader`]).
    fn read<'c, T: bytemuck::Pod, F>(
        &'c self,
        what: &str,
        operation: OperationKind,
        body: Vec<u8>,
        library: impl FnOnce(&'c tb::Client) -> F,
    ) -> Result<Vec<T>>
    where
        F: Future<Output = Result<Vec<T>, SendError>>,
    {
        match self.client.get() {
            Some(tb) => self.send(what, library(tb)),
            None => self.read_raw(what, operation, body),
        }
    }

    pub fn lookup_accounts(&self, ids: Vec<u128>) -> Result<Vec<Account>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let body = bytemuck::cast_slice(&ids).to_vec();
        self.read(
            "lookup_accounts",
            OperationKind::LookupAccounts,
            body,
            |tb| tb.lookup_accounts(ids),
        )
    }

    pub fn lookup_transfers(&self, ids: Vec<u128>) -> Result<Vec<Transfer>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let body = bytemuck::cast_slice(&ids).to_vec();
        self.read(
            "lookup_transfers",
            OperationKind::LookupTransfers,
            body,
            |tb| tb.lookup_transfers(ids),
        )
    }

    pub fn query_accounts(&self, filter: QueryFilter) -> Result<Vec<Account>> {
        let body = bytemuck::bytes_of(&filter).to_vec();
        self.read("query_accounts", OperationKind::QueryAccounts, body, |tb| {
            tb.query_accounts(Box::new(filter))
        })
    }

    pub fn query_transfers(&self, filter: QueryFilter) -> Result<Vec<Transfer>> {
        let body = bytemuck::bytes_of(&filter).to_vec();
        self.read(
            "query_transfers",
            OperationKind::QueryTransfers,
            body,
            |tb| tb.query_transfers(Box::new(filter)),
        )
    }

    pub fn get_account_transfers(&self, filter: tb::account::Filter) -> Result<Vec<Transfer>> {
        let body = bytemuck::bytes_of(&filter).to_vec();
        let op = OperationKind::GetAccountTransfers;
        self.read("get_account_transfers", op, body, |tb| {
            tb.get_account_transfers(Box::new(filter))
        })
    }

    /// Opens the session for [`Client::get_change_events`] now rather than on
    /// first use. TigerBeetle's client sends a new session's registration before
    /// it has connected and sends it again only after its request timeout (about
    /// 0.6 s), so every session costs that before its first answer: a caller
    /// that will need change events opens this session as early as it can (with
    /// the library's at once, where it has one), so that the waits overlap each
    /// other and its other work.
    pub fn open_events(&self) -> Result<()> {
        self.events_session().map(|_| ())
    }

    fn events_session(&self) -> Result<&EventsClient> {
        if let Some(e) = self.events.get() {
            return Ok(e);
        }
        let e = EventsClient::new(self.cluster_id, &self.addresses)
            .map_err(|e| coded(Code::Config, format!("{}: {e:#}", self.names.setting)))?;
        Ok(self.events.get_or_init(|| e))
    }

    /// One page of change events with timestamps in `[min, max]` (`max` 0: no upper
    /// bound), ascending and checked (see [`change_events`](super::change_events)).
    pub fn get_change_events(&self, min: u64, max: u64, limit: u32) -> Result<Vec<ChangeEvent>> {
        const WHAT: &str = "get_change_events";
        let events = self.events_session()?;
        let reply = self
            .call(WHAT, events.submit(min, max, limit))?
            .ok_or_else(|| self.failed(WHAT, &"the client dropped the request"))?
            .map_err(|e| self.send_error(WHAT, e))?;
        self.change_events(&reply, min, max, limit)
    }

    /// `reply` to [`Client::get_change_events`] decoded and checked; a reply
    /// refused names this cluster and its addresses, as every other does.
    fn change_events(
        &self,
        reply: &[u8],
        min: u64,
        max: u64,
        limit: u32,
    ) -> Result<Vec<ChangeEvent>> {
        change_events::decode_reply(reply, min, max, limit)
            .with_context(|| format!("from the {} at {}", self.names.cluster, self.addresses))
    }

    /// Creates `rows`; the answer lists the events not created (`exists` included).
    pub fn create_accounts(
        &self,
        rows: Vec<Account>,
    ) -> Result<Vec<Rejection<CreateAccountErrorKind>>> {
        self.submit_accounts(rows).wait()
    }

    /// [`Client::create_accounts`], answered by [`InFlight::wait`].
    pub fn submit_accounts(
        &self,
        rows: Vec<Account>,
    ) -> InFlight<'_, Vec<Rejection<CreateAccountErrorKind>>> {
        const WHAT: &str = "create_accounts";
        if self.client.get().is_none() {
            // Nothing to send, as the library sends nothing (counted as it counts).
            if rows.is_empty() {
                return self.begin(WHAT, async { Ok(Vec::new()) });
            }
            let n = rows.len();
            let sent = self.submit_raw(OperationKind::CreateAccounts, bytemuck::cast_slice(&rows));
            return self.begin(WHAT, async move {
                let results = self.created(WHAT, n, sent?.await)?;
                Ok(CreateAccountsApiError::from_raw_results(results)
                    .map(|errs| account_rejections(&errs))
                    .unwrap_or_default())
            });
        }
        let fut = self.tb().map(|tb| tb.create_accounts(rows));
        self.begin(WHAT, async move {
            match fut?.await {
                Ok(()) => Ok(Vec::new()),
                Err(CreateAccountsError::Send(e)) => Err(self.send_error(WHAT, e)),
                Err(CreateAccountsError::Api(errs)) => Ok(account_rejections(&errs)),
                Err(e) => Err(self.failed(WHAT, &e)),
            }
        })
    }

    /// Creates `rows`; the answer lists the events not created (`exists` included).
    pub fn create_transfers(
        &self,
        rows: Vec<Transfer>,
    ) -> Result<Vec<Rejection<CreateTransferErrorKind>>> {
        self.submit_transfers(rows).wait()
    }

    /// [`Client::create_transfers`], answered by [`InFlight::wait`].
    pub fn submit_transfers(
        &self,
        rows: Vec<Transfer>,
    ) -> InFlight<'_, Vec<Rejection<CreateTransferErrorKind>>> {
        const WHAT: &str = "create_transfers";
        if self.client.get().is_none() {
            // Nothing to send, as the library sends nothing (counted as it counts).
            if rows.is_empty() {
                return self.begin(WHAT, async { Ok(Vec::new()) });
            }
            let n = rows.len();
            let sent = self.submit_raw(OperationKind::CreateTransfers, bytemuck::cast_slice(&rows));
            return self.begin(WHAT, async move {
                let results = self.created(WHAT, n, sent?.await)?;
                Ok(CreateTransfersApiError::from_raw_results(results)
                    .map(|errs| transfer_rejections(&errs))
                    .unwrap_or_default())
            });
        }
        let fut = self.tb().map(|tb| tb.create_transfers(rows));
        self.begin(WHAT, async move {
            match fut?.await {
                Ok(()) => Ok(Vec::new()),
                Err(CreateTransfersError::Send(e)) => Err(self.send_error(WHAT, e)),
                Err(CreateTransfersError::Api(errs)) => Ok(transfer_rejections(&errs)),
                Err(e) => Err(self.failed(WHAT, &e)),
            }
        })
    }

    /// Sends a create through bkp's own session (the library's is not open:
    /// a reader creates without opening a second one).
    fn submit_raw(
        &self,
        operation: OperationKind,
        body: &[u8],
    ) -> Result<impl Future<Output = Option<change_events::Reply>> + use<>> {
        Ok(self.events_session()?.submit_op(operation, body.to_vec()))
    }

    /// The results of a create of `n` rows sent by [`Client::submit_raw`]:
    /// whole results, each naming a row sent, in ascending order, as the
    /// library's decoding expects (checked: bytes from the network).
    fn created<R: bytemuck::Pod + RawResult>(
        &self,
        what: &str,
        n: usize,
        reply: Option<change_events::Reply>,
    ) -> Result<Vec<R>> {
        let reply = reply
            .ok_or_else(|| self.failed(what, &"the client dropped the request"))?
            .map_err(|e| self.send_error(what, e))?;
        let results: Vec<R> = self.rows(what, &reply)?;
        let ascending = results.windows(2).all(|w| w[0].index() < w[1].index());
        if !ascending || results.last().is_some_and(|r| r.index() as usize >= n) {
            return Err(change_events::unexpected(format!(
                "{what} to the {} at {} answered for rows it was not sent ({} results for {n} \
                 rows)",
                self.names.cluster,
                self.addresses,
                results.len()
            )));
        }
        Ok(results)
    }

    fn failed(&self, what: &str, e: &dyn std::fmt::Display) -> anyhow::Error {
        anyhow!(
            "{what} to the {} at {} failed: {e}",
            self.names.cluster,
            self.addresses
        )
    }
}

/// A request handed to the client ([`Client::submit_accounts`],
/// [`Client::submit_transfers`]) and not yet answered. Dropped unanswered, the
/// request is abandoned here; the cluster may still carry it out.
pub struct InFlight<'c, T> {
    client: &'c Client,
    what: &'static str,
    sent: std::time::Instant,
    state: Flight<'c, T>,
}

enum Flight<'c, T> {
    Waiting(std::pin::Pin<Box<dyn Future<Output = Result<T>> + 'c>>),
    Answered(Result<T>),
}

impl<T> InFlight<'_, T> {
    /// When the request was handed to the client.
    pub fn sent_at(&self) -> std::time::Instant {
        self.sent
    }

    /// The answer, waited for until the client's timeout since the request was sent.
    pub fn wait(self) -> Result<T> {
        match self.state {
            Flight::Answered(answer) => answer,
            Flight::Waiting(fut) => {
                let left = self.client.timeout.saturating_sub(self.sent.elapsed());
                self.client.block(self.what, left, fut)?
            }
        }
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        drop(self.events.take());
        drop(self.client.take());
        if let Some(rt) = self.rt.take() {
            rt.shutdown_timeout(Duration::from_secs(1));
        }
    }
}

/// The accounts a create did not create, by row, as bkp reports them.
fn account_rejections(errs: &CreateAccountsApiError) -> Vec<Rejection<CreateAccountErrorKind>> {
    let row = |e: &tb::error::CreateAccountsIndividualApiError| Rejection {
        index: e.index() as usize,
        kind: e.kind(),
        exists: matches!(e.kind(), CreateAccountErrorKind::Exists),
        name: account_result_name(e.kind(), e.inner().code().get()),
    };
    errs.as_slice().iter().map(row).collect()
}

/// The transfers a create did not create, by row, as bkp reports them.
fn transfer_rejections(errs: &CreateTransfersApiError) -> Vec<Rejection<CreateTransferErrorKind>> {
    let row = |e: &tb::error::CreateTransfersIndividualApiError| Rejection {
        index: e.index() as usize,
        kind: e.kind(),
        exists: matches!(e.kind(), CreateTransferErrorKind::Exists),
        name: transfer_result_name(e.kind(), e.inner().code().get()),
    };
    errs.as_slice().iter().map(row).collect()
}

/// A create's result as the cluster sends it: the row it is for.
trait RawResult {
    fn index(&self) -> u32;
}

impl RawResult for RawCreateAccountsIndividualApiResult {
    fn index(&self) -> u32 {
        self.index
    }
}

impl RawResult for RawCreateTransfersIndividualApiResult {
    fn index(&self) -> u32 {
        self.index
    }
}

/// A create result's snake_case name as in TigerBeetle's docs. The crate panics when
/// asked for the name of a code it does not know, so those are shown by number.
pub fn transfer_result_name(kind: CreateTransferErrorKind, code: u32) -> String {
    match kind {
        CreateTransferErrorKind::UnstableUncategorized => format!("result code {code}"),
        kind => kind.into_snake_case_str().to_owned(),
    }
}

/// As [`transfer_result_name`], for accounts.
pub fn account_result_name(kind: CreateAccountErrorKind, code: u32) -> String {
    match kind {
        CreateAccountErrorKind::UnstableUncategorized => format!("result code {code}"),
        kind => kind.into_snake_case_str().to_owned(),
    }
}

/// Routes the TigerBeetle client library's own log lines. Without a callback it
/// prints a warning line to stderr several times a second while a cluster is
/// unreachable, which would flood cron mail and the journal; bkp reports an
/// unreachable cluster itself, once, with what to do. Errors are kept.
pub fn quiet_client_logs() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    unsafe extern "C" fn on_log(level: u32, msg: *const u8, len: u32) {
        if level != tigerbeetle_unofficial_sys::TB_LOG_LEVEL::TB_LOG_ERR || msg.is_null() {
            return;
        }
        // SAFETY: the library passes a valid buffer of `len` bytes for the call.
        let bytes = unsafe { std::slice::from_raw_parts(msg, len as usize) };
        crate::ui::log(
            crate::ui::Priority::Warning,
            &format!(
                "bkp: warning: tigerbeetle client: {}",
                String::from_utf8_lossy(bytes)
            ),
        );
    }
    ONCE.call_once(|| {
        // SAFETY: registers a function that lives for the whole process.
        unsafe {
            let _ =
                tigerbeetle_unofficial_sys::tb_client_register_log_callback(Some(on_log), false);
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytemuck::Zeroable;

    const NAMES: Names = Names {
        cluster: "test cluster",
        setting: "[test] addresses",
    };

    fn spec(addresses: &str, timeout: Duration) -> ClientSpec {
        ClientSpec {
            cluster_id: 0,
            addresses: addresses.into(),
            timeout,
        }
    }

    #[test]
    fn bad_specs_are_config_errors() {
        let classify = |r: Result<Client>| crate::exit::classify(&r.err().expect("an error"));
        for s in [
            spec(" ", Duration::from_secs(1)),
            spec("127.0.0.1:3000", Duration::ZERO),
            spec("not an address", Duration::from_secs(1)),
        ] {
            assert_eq!(
                classify(Client::connect(&s, NAMES)),
                Some(Code::Config),
                "{s:?}"
            );
        }
        let e = Client::connect(&spec("", Duration::from_secs(1)), NAMES)
            .err()
            .unwrap();
        assert!(e.to_string().contains("[test] addresses"), "{e}");
    }

    #[test]
    fn no_answer_in_time_is_transient_and_names_the_cluster() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let s = spec(&format!("127.0.0.1:{port}"), Duration::from_millis(300));
        let c = Client::connect(&s, NAMES).unwrap();
        let t0 = std::time::Instant::now();
        let e = c.lookup_accounts(vec![1]).unwrap_err();
        assert!(t0.elapsed() < Duration::from_secs(3), "{:?}", t0.elapsed());
        assert_eq!(crate::exit::classify(&e), Some(Code::Transient), "{e:#}");
        let msg = e.to_string();
        for part in [
            "test cluster",
            &s.addresses,
            "lookup_accounts",
            "[test] addresses",
        ] {
            assert!(msg.contains(part), "{msg}");
        }
        assert_eq!(c.requests(), 1);
        c.close();
    }

    #[test]
    fn a_reply_that_is_not_whole_rows_or_names_rows_not_sent_is_an_integrity_failure() {
        // Nothing is sent: the checks take the reply's bytes as given.
        let c =
            Client::connect_reader(&spec("127.0.0.1:1", Duration::from_secs(1)), NAMES).unwrap();
        let result = |index: u32| {
            let mut r = RawCreateAccountsIndividualApiResult::zeroed();
            r.index = index;
            r.result = 21;
            r
        };
        let bytes = |rs: &[RawCreateAccountsIndividualApiResult]| -> Vec<u8> {
            bytemuck::cast_slice(rs).to_vec()
        };
        let created = |n, reply: Vec<u8>| {
            c.created::<RawCreateAccountsIndividualApiResult>("create_accounts", n, Some(Ok(reply)))
        };
        assert_eq!(created(3, bytes(&[result(0), result(2)])).unwrap().len(), 2);
        assert!(created(3, Vec::new()).unwrap().is_empty());
        // Each names the request, the cluster and what to do ({:#}: the
        // cluster of a change-events reply is the context around it).
        let refused_as = |e: anyhow::Error, op: &str, why: &str| {
            assert_eq!(
                crate::exit::classify(&e),
                Some(Code::Integrity),
                "{why}: {e:#}"
            );
            let msg = format!("{e:#}");
            for part in [
                op,
                "test cluster",
                "127.0.0.1:1",
                "does not answer",
                &format!("run TigerBeetle {CLIENT_RELEASE}"),
            ] {
                assert!(msg.contains(part), "{why}: {msg}");
            }
        };
        let refused = |e, why| refused_as(e, "create_accounts", why);
        refused(
            created(3, bytes(&[result(3)])).unwrap_err(),
            "a row not sent",
        );
        // A change-events reply refused too (its own checks are
        // `change_events`' tests).
        refused_as(
            c.change_events(&[0u8; 7], 1, 0, 10).unwrap_err(),
            "get_change_events",
            "change events",
        );
        refused(
            created(3, bytes(&[result(2), result(1)])).unwrap_err(),
            "out of order",
        );
        refused(
            created(3, bytes(&[result(1), result(1)])).unwrap_err(),
            "twice",
        );
        let mut torn = bytes(&[result(0)]);
        torn.pop();
        refused(created(3, torn).unwrap_err(), "torn");
        refused(
            c.rows::<Account>("create_accounts", &[0; 127]).unwrap_err(),
            "not whole rows",
        );
        c.close();
    }

    #[test]
    fn a_probe_is_refused_at_once_where_nothing_listens() {
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let names = Names {
            cluster: "ledger cluster",
            setting: "[ledger] addresses",
        };
        let started = std::time::Instant::now();
        let err = probe(
            &spec(&port.to_string(), Duration::from_secs(60)),
            names,
            Duration::from_secs(5),
        )
        .unwrap_err();
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "{:?}",
            started.elapsed()
        );
        assert_eq!(crate::exit::classify(&err), Some(Code::Transient));
        assert!(err.to_string().contains("accepts no connection"), "{err:#}");
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let live = format!("127.0.0.1:{}", l.local_addr().unwrap().port());
        probe(
            &spec(&format!("{port},{live}"), Duration::from_secs(60)),
            names,
            Duration::from_secs(5),
        )
        .unwrap();
    }

    #[test]
    fn result_names_are_tigerbeetles() {
        assert_eq!(
            transfer_result_name(CreateTransferErrorKind::Exists, 46),
            "exists"
        );
        assert_eq!(
            account_result_name(CreateAccountErrorKind::UnstableUncategorized, 999),
            "result code 999"
        );
    }
}

/// A request larger than the cluster takes (`--limit-request`): the client
/// refuses it before sending anything, so a smaller one may follow.
#[derive(Debug)]
pub struct TooMuchData;

impl std::fmt::Display for TooMuchData {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the request is larger than the cluster takes")
    }
}

impl std::error::Error for TooMuchData {}

/// Whether `e` is a request the client refused as larger than the cluster takes.
pub fn is_too_much_data(e: &anyhow::Error) -> bool {
    e.chain().any(|c| c.is::<TooMuchData>())
}
