//! The one way Hecate serves HTTP: `/metrics` and the coordinator's forwarding endpoint, plain or
//! over TLS, guarded so that nothing on the network can starve the daemon.
//!
//! Both listeners face the LAN without authentication before the request (a forwarded
//! request's signature is checked only once the whole request is in). Before this module, 1,100
//! idle half-sent connections to `/metrics` used up the daemon's 1,024 descriptors and the
//! triggered shutdown failed with `opening run.lock: Too many open files` (issue 12). Each
//! listener now has:
//!
//! - **a connection cap** ([`Limits::max_connections`]): a slot is taken *before* `accept`, so
//!   the descriptors one listener holds (TLS handshakes included) never exceed it, and the rest
//!   of the process limit stays for runs (run lock, journal, SSH to every node);
//! - **room for a real client at the cap**: refusing to accept would make a real forwarded
//!   trigger wait behind the attacker's connections, so instead the listener closes one
//!   connection to keep a slot free for the next one: from the peer (IPv4 address, IPv6 /64)
//!   that holds the most connections, the one quiet longest. A real client sends its request
//!   right after connecting and is answered within milliseconds, so it is the freshest
//!   connection and never the one closed; a single host holding many connections loses its own,
//!   never another host's. See [`choose_victim`];
//! - **a header-read timeout** ([`Limits::header_read_timeout`], hyper's own, which also runs
//!   while a keep-alive connection waits for its next request);
//! - **an idle timeout** ([`Limits::idle_timeout`]): a connection on which no byte moved either
//!   way for that long, with no request being handled, is closed (a keep-alive connection, a
//!   client that never reads its response);
//! - **a bound on each request** ([`Limits::request_timeout`]: from the complete head to the
//!   response, so a body sent slowly; [`Limits::max_request_body`]) and **on each response**
//!   ([`Limits::max_response_body`]);
//! - **a bound on a connection's life** ([`Limits::max_connection_age`]), so even a connection
//!   that keeps trickling bytes ends;
//! - for TLS, the handshake under [`Limits::tls_handshake_timeout`], in the connection's own task.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::body::{Body, HttpBody as _};
use axum::extract::ConnectInfo;
use axum::http::{Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};
use tokio_rustls::TlsAcceptor;
use tower_service::Service as _;

/// What one listener allows. The numbers are chosen for a homelab: one or two Prometheus
/// servers and a handful of forwarders, each holding at most one connection at a time, on a LAN.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Open connections (accepted sockets, TLS handshakes included) this listener holds at most.
    pub max_connections: usize,
    /// From when the listener waits for a request (a new connection, or a keep-alive one after
    /// its last response) until the request's whole head is in.
    pub header_read_timeout: Duration,
    /// A connection on which no byte moved either way for this long, with no request being
    /// handled, is closed.
    pub idle_timeout: Duration,
    /// From a request's complete head until its response is ready (reading the body included).
    /// A request that takes longer ends its connection.
    pub request_timeout: Duration,
    /// A connection this old finishes the request it is on and is closed.
    pub max_connection_age: Duration,
    /// The TLS handshake of a connection to an https listener.
    pub tls_handshake_timeout: Duration,
    /// Largest request body, bytes (more is refused with 413).
    pub max_request_body: usize,
    /// Largest response body, bytes. Responses are Hecate's own; a larger one is a bug, answered
    /// with 500 rather than held in memory for a client that reads slowly.
    pub max_response_body: u64,
}

/// The defaults of both listeners; each changes only what its requests need.
///
/// - 64 connections: far above what a homelab's scrapers and forwarders hold, and the two
///   listeners' 128 stay far below the 1,024 descriptors systemd gives a process by default,
///   so a run always finds descriptors (the unit raises `LimitNOFILE` on top of that). Eviction
///   keeps a real client's slot, so a small cap costs nothing.
/// - 5 s for the head: a client sends it in one packet right after connecting; 5 s allows a
///   few lost packets and a loaded host, and keeps a quiet connection from sitting on a slot.
/// - 5 s idle: what Apache uses for keep-alive. Prometheus scrapes every 15 s or more and
///   simply reconnects; a forwarder sends one request per connection.
/// - 10 s per request: bodies are at most a few KiB; a client that cannot send them in 10 s is
///   not a forwarder whose UPS is failing but something holding a slot.
/// - 60 s of life: a scraper that keeps a connection busy still reconnects once a minute.
/// - 10 s for a TLS handshake: the limit it always had.
const BASE: Limits = Limits {
    max_connections: 64,
    header_read_timeout: Duration::from_secs(5),
    idle_timeout: Duration::from_secs(5),
    request_timeout: Duration::from_secs(10),
    max_connection_age: Duration::from_secs(60),
    tls_handshake_timeout: Duration::from_secs(10),
    max_request_body: 1024,
    max_response_body: 4 * 1024,
};

impl Limits {
    /// `/metrics`: bodiless GETs; the exposition is a few KiB per UPS, so 1 MiB leaves room
    /// for far more UPSes and forwarders than a homelab has.
    pub const METRICS: Limits = Limits { max_request_body: 0, max_response_body: 1024 * 1024, ..BASE };
    /// The forwarding endpoint: JSON bodies of two short fields (each kept to 512 characters),
    /// answers of one short JSON line.
    pub const FORWARDING: Limits = Limits { max_request_body: 16 * 1024, max_response_body: 4 * 1024, ..BASE };
}

/// Largest request head hyper buffers (its minimum is 8 KiB): a scrape or a forward has a few
/// short headers; this bounds what a connection costs in memory before its request is in.
const MAX_HEAD_BUFFER: usize = 16 * 1024;

/// Headers a request may have: clients send five or so; proxies add a few.
const MAX_HEADERS: usize = 32;

/// How often at most the listener says it is closing connections to make room.
const EVICTION_REPORT_EVERY: Duration = Duration::from_secs(60);

/// Serves `app` on `listener` (over TLS with `tls`) within `limits`, until the task is dropped.
/// `what` names the listener in logs. Handlers can extract `ConnectInfo<SocketAddr>`.
pub async fn serve(
    listener: TcpListener,
    what: &'static str,
    app: axum::Router,
    tls: Option<TlsAcceptor>,
    limits: Limits,
) {
    serve_in(listener, what, app, tls, limits, Arc::new(Pool::new(limits.max_connections))).await;
}

async fn serve_in(
    listener: TcpListener,
    what: &'static str,
    app: axum::Router,
    tls: Option<TlsAcceptor>,
    limits: Limits,
    pool: Arc<Pool>,
) {
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_buf_size(MAX_HEAD_BUFFER)
        .max_headers(MAX_HEADERS);
    let shared = Arc::new(Shared { what, app, tls, limits, http });
    loop {
        // The slot first, then the socket: a listener never holds more descriptors than its cap.
        let slot = pool.slot(what).await;
        let (stream, peer) = match listener.accept().await {
            Ok(conn) => conn,
            Err(e) => {
                // Out of descriptors and the like: do not spin.
                tracing::warn!(listener = what, error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let (io, close) = slot.fill(stream, peer.ip());
        tokio::spawn(connection(io, close, peer, shared.clone()));
    }
}

/// What every connection of a listener shares.
struct Shared {
    what: &'static str,
    app: axum::Router,
    tls: Option<TlsAcceptor>,
    limits: Limits,
    http: hyper::server::conn::http1::Builder,
}

/// One connection, from accept to close. It ends when HTTP is done with it, when it is quiet
/// for `idle_timeout`, or when the listener closes it to make room.
async fn connection(io: Tracked<TcpStream>, close: Arc<Notify>, peer: SocketAddr, shared: Arc<Shared>) {
    let activity = io.activity.clone();
    let limits = shared.limits;
    let work = async {
        match &shared.tls {
            None => http(io, peer, &shared, activity.clone()).await,
            Some(acceptor) => match tokio::time::timeout(limits.tls_handshake_timeout, acceptor.accept(io)).await {
                Ok(Ok(tls)) => http(tls, peer, &shared, activity.clone()).await,
                Ok(Err(e)) => tracing::warn!(listener = shared.what, %peer, error = %e, "tls handshake failed"),
                Err(_) => tracing::warn!(listener = shared.what, %peer, "tls handshake timed out"),
            },
        }
    };
    tokio::select! {
        () = work => {}
        () = close.notified() => tracing::debug!(listener = shared.what, %peer, "closed to make room"),
        () = activity.quiet_for(limits.idle_timeout) => tracing::debug!(listener = shared.what, %peer, "closed: idle"),
    }
}

/// HTTP/1 on an established (and maybe TLS) connection, within the request and age limits.
async fn http<S>(io: S, peer: SocketAddr, shared: &Shared, activity: Arc<Activity>)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let limits = shared.limits;
    let app = shared.app.clone();
    let service = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
        let mut app = app.clone();
        // The idle timeout does not run while a request is being handled.
        let busy = activity.busy();
        async move {
            let _busy = busy;
            let mut req = req.map(|b| Body::new(http_body_util::Limited::new(b, limits.max_request_body)));
            req.extensions_mut().insert(ConnectInfo(peer));
            // The router is always ready and never fails.
            let answer = tokio::time::timeout(limits.request_timeout, app.call(req)).await;
            match answer {
                Ok(Ok(response)) => Ok(bounded(response, limits.max_response_body)),
                Ok(Err(never)) => match never {},
                // An error ends the connection: a client this slow is not read any further.
                Err(_) => Err(std::io::Error::new(std::io::ErrorKind::TimedOut, "request not complete in time")),
            }
        }
    });
    let conn = shared.http.serve_connection(TokioIo::new(io), service);
    tokio::pin!(conn);
    let result = tokio::select! {
        r = conn.as_mut() => r,
        () = tokio::time::sleep(limits.max_connection_age) => {
            conn.as_mut().graceful_shutdown();
            // The request in progress is bounded by request_timeout; its answer by idle_timeout.
            match tokio::time::timeout(limits.request_timeout, conn.as_mut()).await {
                Ok(r) => r,
                Err(_) => Ok(()),
            }
        }
    };
    if let Err(e) = result {
        // Timeouts and clients that went away: routine on a LAN, not worth a warning.
        tracing::debug!(listener = shared.what, %peer, error = %e, "connection ended");
    }
}

/// `response` if its body is known to fit in `max` bytes, else a 500.
fn bounded(response: Response<Body>, max: u64) -> Response<Body> {
    match response.body().size_hint().upper() {
        Some(n) if n <= max => response,
        n => {
            tracing::error!(size = ?n, max, "response larger than its listener allows: not sent");
            let mut r = Response::new(Body::from("response too large\n"));
            *r.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
            r
        }
    }
}

/// When a connection last moved a byte, and whether a request on it is being handled.
#[derive(Debug)]
struct Activity {
    /// The pool's clock start, so the last activity fits in an atomic.
    epoch: Instant,
    /// Milliseconds since `epoch` of the last byte read or written.
    last_ms: AtomicU64,
    /// Requests being handled (hyper handles one at a time; a count is simplest).
    in_flight: AtomicUsize,
}

impl Activity {
    fn new(epoch: Instant) -> Self {
        let a = Activity { epoch, last_ms: AtomicU64::new(0), in_flight: AtomicUsize::new(0) };
        a.touch();
        a
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    fn touch(&self) {
        self.last_ms.store(self.now_ms(), Ordering::Relaxed);
    }

    fn last_ms(&self) -> u64 {
        self.last_ms.load(Ordering::Relaxed)
    }

    fn busy(self: &Arc<Self>) -> Busy {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        Busy(self.clone())
    }

    /// Returns once no byte has moved for `idle` while no request was being handled.
    async fn quiet_for(&self, idle: Duration) {
        let idle_ms = u64::try_from(idle.as_millis()).unwrap_or(u64::MAX);
        loop {
            let quiet_ms = self.now_ms().saturating_sub(self.last_ms());
            if quiet_ms >= idle_ms && self.in_flight.load(Ordering::Relaxed) == 0 {
                return;
            }
            // Check again when the connection would next be quiet long enough (at least soon:
            // a request in flight ends within request_timeout).
            let wait = Duration::from_millis(idle_ms.saturating_sub(quiet_ms)).max(Duration::from_millis(100));
            tokio::time::sleep(wait).await;
        }
    }
}

/// A request being handled; it counts as activity while it lasts and when it ends.
struct Busy(Arc<Activity>);

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.touch();
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A socket that records when it last moved a byte, and holds its listener's slot: the slot is
/// given back after the socket is closed (fields drop in order), so the cap counts descriptors.
struct Tracked<S> {
    io: S,
    activity: Arc<Activity>,
    _slot: Slot,
}

impl<S: AsyncRead + Unpin> AsyncRead for Tracked<S> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.io).poll_read(cx, buf);
        if matches!(r, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.activity.touch();
        }
        r
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Tracked<S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.io).poll_write(cx, data);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        r
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.io).poll_write_vectored(cx, bufs);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        r
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}

/// The open connections of one listener.
#[derive(Debug)]
struct Pool {
    cap: usize,
    permits: Arc<Semaphore>,
    epoch: Instant,
    table: Mutex<Table>,
}

#[derive(Debug, Default)]
struct Table {
    next_id: u64,
    conns: HashMap<u64, Entry>,
    /// Connections closed to make room since the last report, and when that was.
    evicted: u64,
    reported: Option<Instant>,
}

#[derive(Debug)]
struct Entry {
    peer: IpAddr,
    activity: Arc<Activity>,
    close: Arc<Notify>,
    /// Told to close; its slot comes back when its task has dropped the socket.
    closing: bool,
}

/// A listener's slot, taken before `accept`.
#[derive(Debug)]
struct Slot {
    pool: Arc<Pool>,
    id: Option<u64>,
    _permit: OwnedSemaphorePermit,
}

impl Drop for Slot {
    fn drop(&mut self) {
        if let Some(id) = self.id {
            self.pool.table().conns.remove(&id);
        }
        // The permit goes back after this, once the entry is gone.
    }
}

impl Pool {
    fn new(max_connections: usize) -> Self {
        let cap = max_connections.max(1);
        Pool { cap, permits: Arc::new(Semaphore::new(cap)), epoch: Instant::now(), table: Mutex::new(Table::default()) }
    }

    fn table(&self) -> std::sync::MutexGuard<'_, Table> {
        // The table holds plain data; a panic elsewhere leaves it usable.
        self.table.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A free slot; at the cap, closes a connection to make one (see [`choose_victim`]).
    async fn slot(self: &Arc<Self>, what: &'static str) -> Slot {
        loop {
            if let Ok(permit) = self.permits.clone().try_acquire_owned() {
                return Slot { pool: self.clone(), id: None, _permit: permit };
            }
            self.evict_one(what);
            // The closed connection's task drops its socket at its next poll. Bounded anyway,
            // so a connection that does not let go is not waited on forever: another is chosen.
            if let Ok(Ok(permit)) =
                tokio::time::timeout(Duration::from_secs(1), self.permits.clone().acquire_owned()).await
            {
                return Slot { pool: self.clone(), id: None, _permit: permit };
            }
        }
    }

    fn evict_one(&self, what: &'static str) {
        let mut table = self.table();
        let candidates = table.conns.iter().filter(|(_, e)| !e.closing).map(|(id, e)| Candidate {
            id: *id,
            peer: e.peer,
            last_ms: e.activity.last_ms(),
        });
        let Some(victim) = choose_victim(candidates) else { return };
        let peer = match table.conns.get_mut(&victim) {
            Some(e) => {
                e.closing = true;
                // A stored permit: the task sees it even if it is not waiting yet.
                e.close.notify_one();
                e.peer
            }
            None => return,
        };
        table.evicted += 1;
        let due = table.reported.is_none_or(|at| at.elapsed() >= EVICTION_REPORT_EVERY);
        if due {
            tracing::warn!(
                listener = what,
                cap = self.cap,
                closed = table.evicted,
                last_from = %peer,
                "at its connection cap: closing the connections quiet longest to make room"
            );
            table.evicted = 0;
            table.reported = Some(Instant::now());
        }
    }

    #[cfg(test)]
    fn open(&self) -> usize {
        self.table().conns.len()
    }
}

impl Slot {
    /// Records the accepted connection in the slot.
    fn fill(mut self, stream: TcpStream, peer: IpAddr) -> (Tracked<TcpStream>, Arc<Notify>) {
        let activity = Arc::new(Activity::new(self.pool.epoch));
        let close = Arc::new(Notify::new());
        {
            let mut table = self.pool.table();
            let id = table.next_id;
            table.next_id += 1;
            table.conns.insert(id, Entry { peer, activity: activity.clone(), close: close.clone(), closing: false });
            self.id = Some(id);
        }
        (Tracked { io: stream, activity, _slot: self }, close)
    }
}

/// A connection that may be closed to make room.
#[derive(Debug, Clone, Copy)]
struct Candidate {
    id: u64,
    peer: IpAddr,
    /// When it last moved a byte (milliseconds on the pool's clock).
    last_ms: u64,
}

/// Which connection to close when a listener is at its cap: of the peer holding the most
/// connections, the one quiet longest (the oldest on a tie).
///
/// Why: a real client (Prometheus, a forwarder whose UPS is failing) holds one connection and
/// sends its request as soon as it is connected, so at any moment it is either the freshest
/// connection or already answered. An attacker holding connections to deny service must keep
/// them quiet (idle, half-sent) or keep paying to look busy, and the header-read, idle and age
/// limits end those anyway. Counting by peer first means a host holding many connections loses
/// its own before anyone else's, however busy they look; IPv6 peers count by /64, since one host
/// commonly has a whole /64 to pick addresses from.
fn choose_victim(candidates: impl Iterator<Item = Candidate>) -> Option<u64> {
    let candidates: Vec<Candidate> = candidates.collect();
    let mut per_peer: HashMap<IpAddr, usize> = HashMap::new();
    for c in &candidates {
        *per_peer.entry(peer_group(c.peer)).or_default() += 1;
    }
    candidates
        .iter()
        .max_by_key(|c| {
            let held = per_peer.get(&peer_group(c.peer)).copied().unwrap_or(0);
            (held, std::cmp::Reverse(c.last_ms), std::cmp::Reverse(c.id))
        })
        .map(|c| c.id)
}

/// The address a peer is counted under: IPv4 as it is, IPv6 by its /64.
fn peer_group(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V6(v6) => IpAddr::V6((u128::from(v6) & !u128::from(u64::MAX)).into()),
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::net::{Ipv4Addr, Ipv6Addr};

    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    use tokio::net::TcpSocket;

    use super::*;

    fn c(id: u64, peer: &str, last_ms: u64) -> Candidate {
        Candidate { id, peer: peer.parse().unwrap(), last_ms }
    }

    #[test]
    fn the_victim_is_the_quietest_connection_of_the_peer_holding_most() {
        // 10.0.0.9 holds three, one of them busy just now; 10.0.0.1 holds one, quiet longest.
        let all = [c(1, "10.0.0.1", 0), c(2, "10.0.0.9", 50), c(3, "10.0.0.9", 10), c(4, "10.0.0.9", 900)];
        assert_eq!(choose_victim(all.into_iter()), Some(3));
        // One peer: the one quiet longest; on a tie, the oldest.
        let one = [c(5, "10.0.0.9", 30), c(6, "10.0.0.9", 20), c(7, "10.0.0.9", 20)];
        assert_eq!(choose_victim(one.into_iter()), Some(6));
        assert_eq!(choose_victim(std::iter::empty()), None);
    }

    #[test]
    fn ipv6_peers_count_by_their_64_and_mapped_ipv4_as_ipv4() {
        let a: IpAddr = "2001:db8:1:2::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:ffff::7".parse().unwrap();
        let other: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(peer_group(a), peer_group(b));
        assert_ne!(peer_group(a), peer_group(other));
        let mapped = IpAddr::V6(Ipv4Addr::new(10, 0, 0, 1).to_ipv6_mapped());
        assert_eq!(peer_group(mapped), IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)));
        // Two addresses of one /64 outnumber a single other host.
        let all = [
            Candidate { id: 1, peer: IpAddr::V6(Ipv6Addr::LOCALHOST), last_ms: 0 },
            Candidate { id: 2, peer: a, last_ms: 10 },
            Candidate { id: 3, peer: b, last_ms: 20 },
        ];
        assert_eq!(choose_victim(all.into_iter()), Some(2));
    }

    /// Limits under which only the one being tested can end a connection.
    fn patient() -> Limits {
        Limits {
            max_connections: 4,
            header_read_timeout: Duration::from_secs(600),
            idle_timeout: Duration::from_secs(600),
            request_timeout: Duration::from_secs(600),
            max_connection_age: Duration::from_secs(600),
            tls_handshake_timeout: Duration::from_secs(600),
            max_request_body: 64,
            max_response_body: 1024,
        }
    }

    fn app() -> axum::Router {
        axum::Router::new()
            .route(
                "/hello",
                axum::routing::get(|ConnectInfo(peer): ConnectInfo<SocketAddr>| async move { format!("hello {peer}") }),
            )
            .route("/echo", axum::routing::post(|body: axum::body::Bytes| async move { body }))
            .route("/big", axum::routing::get(|| async { "x".repeat(2048) }))
    }

    /// A listener on a free loopback port serving [`app`] within `limits`, and its pool.
    async fn start(limits: Limits, tls: Option<TlsAcceptor>) -> (SocketAddr, Arc<Pool>) {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let pool = Arc::new(Pool::new(limits.max_connections));
        tokio::spawn(serve_in(listener, "test", app(), tls, limits, pool.clone()));
        (addr, pool)
    }

    /// A connection from `from` (any 127/8 address) that has sent `data`.
    async fn connect_from(from: Ipv4Addr, to: SocketAddr, data: &[u8]) -> TcpStream {
        let socket = TcpSocket::new_v4().unwrap();
        socket.bind((from, 0).into()).unwrap();
        let mut s = tokio::time::timeout(Duration::from_secs(10), socket.connect(to)).await.unwrap().unwrap();
        s.write_all(data).await.unwrap();
        s
    }

    /// What the server sent until it closed the connection (bounded).
    async fn until_closed(s: &mut TcpStream) -> String {
        let mut out = Vec::new();
        match tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut out)).await {
            Ok(_) => String::from_utf8_lossy(&out).into_owned(),
            Err(_) => panic!("the server did not close the connection; it sent {:?}", String::from_utf8_lossy(&out)),
        }
    }

    /// Whether the server has closed `s` (it sends nothing to a connection without a request).
    async fn closed(s: &mut TcpStream) -> bool {
        let mut b = [0u8; 1];
        matches!(tokio::time::timeout(Duration::from_millis(1), s.read(&mut b)).await, Ok(Ok(0) | Err(_)))
    }

    async fn get(addr: SocketAddr, path: &str) -> String {
        let mut s = connect_from(
            Ipv4Addr::LOCALHOST,
            addr,
            format!("GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await;
        until_closed(&mut s).await
    }

    const HALF_SENT: &[u8] = b"GET /hello HTTP/1.1\r\nHost: t\r\n";

    async fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
        tokio::time::timeout(Duration::from_secs(10), async {
            while !cond() {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await
        .unwrap_or_else(|_| panic!("timed out waiting for {what}"));
    }

    #[tokio::test]
    async fn at_the_cap_a_real_client_is_answered_and_the_quiet_ones_make_room() {
        let (addr, pool) = start(patient(), None).await;
        let mut quiet = Vec::new();
        for _ in 0..20 {
            quiet.push(connect_from(Ipv4Addr::LOCALHOST, addr, HALF_SENT).await);
            assert!(pool.open() <= 4, "{} connections held, the cap is 4", pool.open());
        }
        wait_for("the listener to settle at its cap", || pool.open() == 3).await;
        let answer = get(addr, "/hello").await;
        assert!(answer.starts_with("HTTP/1.1 200") && answer.contains("hello 127.0.0.1:"), "{answer}");
        // The oldest quiet connections went first; the newest are still held.
        assert!(closed(&mut quiet[0]).await);
        assert!(!closed(&mut quiet[19]).await);
        assert!(pool.open() <= 4);
    }

    #[tokio::test]
    async fn a_host_holding_many_connections_loses_its_own_first() {
        let (addr, pool) = start(patient(), None).await;
        // Another host's connection, quiet longest of all (an idle scraper, say).
        let mut other = connect_from(Ipv4Addr::new(127, 0, 0, 1), addr, HALF_SENT).await;
        let attacker = Ipv4Addr::new(127, 0, 0, 2);
        let mut held = Vec::new();
        for _ in 0..10 {
            held.push(connect_from(attacker, addr, HALF_SENT).await);
        }
        wait_for("the listener to settle at its cap", || pool.open() == 3).await;
        assert!(!closed(&mut other).await, "the other host's one connection is kept");
        assert!(closed(&mut held[0]).await);
    }

    #[tokio::test]
    async fn a_half_sent_head_is_closed_after_the_header_read_timeout() {
        let (addr, _) = start(Limits { header_read_timeout: Duration::from_millis(200), ..patient() }, None).await;
        let mut s = connect_from(Ipv4Addr::LOCALHOST, addr, HALF_SENT).await;
        until_closed(&mut s).await;
        // Nothing at all is the same.
        let mut s = connect_from(Ipv4Addr::LOCALHOST, addr, b"").await;
        until_closed(&mut s).await;
    }

    #[tokio::test]
    async fn an_idle_keep_alive_connection_is_closed() {
        let (addr, _) = start(Limits { idle_timeout: Duration::from_millis(200), ..patient() }, None).await;
        let mut s = connect_from(Ipv4Addr::LOCALHOST, addr, b"GET /hello HTTP/1.1\r\nHost: t\r\n\r\n").await;
        let answer = until_closed(&mut s).await;
        assert!(answer.starts_with("HTTP/1.1 200"), "answered, then closed once idle: {answer}");
    }

    /// What the module doc says of hyper (1.12); the idle timeout does not depend on it.
    #[tokio::test]
    async fn hypers_header_read_timeout_also_ends_a_keep_alive_wait() {
        let (addr, _) = start(Limits { header_read_timeout: Duration::from_millis(200), ..patient() }, None).await;
        let mut s = connect_from(Ipv4Addr::LOCALHOST, addr, b"GET /hello HTTP/1.1\r\nHost: t\r\n\r\n").await;
        let answer = until_closed(&mut s).await;
        assert!(answer.starts_with("HTTP/1.1 200"), "answered, then closed once idle: {answer}");
    }

    #[tokio::test]
    async fn a_body_that_never_comes_ends_the_connection() {
        let (addr, _) = start(Limits { request_timeout: Duration::from_millis(200), ..patient() }, None).await;
        let mut s =
            connect_from(Ipv4Addr::LOCALHOST, addr, b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 50\r\n\r\nabc")
                .await;
        let answer = until_closed(&mut s).await;
        assert!(answer.is_empty(), "no answer to a request that was not complete in time: {answer}");
    }

    #[tokio::test]
    async fn bodies_and_responses_are_bounded() {
        let (addr, _) = start(patient(), None).await;
        let big = "y".repeat(100);
        let request =
            format!("POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 100\r\nConnection: close\r\n\r\n{big}");
        let mut s = connect_from(Ipv4Addr::LOCALHOST, addr, request.as_bytes()).await;
        let answer = until_closed(&mut s).await;
        assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
        let answer = get(addr, "/big").await;
        assert!(answer.starts_with("HTTP/1.1 500"), "{answer}");
    }

    #[tokio::test]
    async fn over_tls_handshakes_count_against_the_cap_and_a_real_client_gets_through() {
        crate::init_process();
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().to_path_buf();
        tokio::task::spawn_blocking(move || hecate_test_support::make_certificates(&d)).await.unwrap();
        let acceptor = crate::forward::tls_acceptor(&dir.path().join("cert.pem"), &dir.path().join("key.pem")).unwrap();
        let (addr, pool) = start(patient(), Some(acceptor)).await;
        // Connections that never start their handshake.
        let mut stalled = Vec::new();
        for _ in 0..10 {
            stalled.push(connect_from(Ipv4Addr::LOCALHOST, addr, b"").await);
            assert!(pool.open() <= 4);
        }
        let client = crate::forward::client(Some(&dir.path().join("ca.pem"))).unwrap();
        let r = client
            .get(format!("https://127.0.0.1:{}/hello", addr.port()))
            .timeout(Duration::from_secs(10))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        assert!(r.text().await.unwrap().starts_with("hello 127.0.0.1:"));
        assert!(closed(&mut stalled[0]).await);
        assert!(pool.open() <= 4);
    }
}
