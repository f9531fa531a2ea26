//! Test peers for the notifier tests, each on 127.0.0.1 with a port the OS picks:
//! [`HttpReceiver`] (a test receiver for `webhook` and `ntfy`), [`SilentListener`] (accepts and
//! never answers) and [`FakeSmtpSink`] (a minimal SMTP server that keeps what it is sent).
//! Every wait has a time limit; dropping a peer stops it.

#![allow(dead_code, clippy::unwrap_used)] // each test file uses a part of this

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use hecate_core::BuildContext;
use hecate_core::notify::{Event, EventKind, Notifier, NotifierConfig};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// How long a test waits for a peer to see something.
pub const WAIT: Duration = Duration::from_secs(10);

/// Aborts a background task when dropped.
pub struct Task(JoinHandle<()>);

impl Drop for Task {
    fn drop(&mut self) {
        self.0.abort();
    }
}

pub fn ctx() -> BuildContext {
    BuildContext { host: "titan-db".into(), state_dir: std::env::temp_dir() }
}

/// Parses one notifier entry as YAML, the way the config loader does.
pub fn parse(yaml: &str) -> Box<dyn NotifierConfig> {
    hecate_backends::link();
    serde_saphyr::from_str::<Box<dyn NotifierConfig>>(yaml).unwrap_or_else(|e| panic!("{yaml}: {e}"))
}

/// Parses, checks it validates, builds.
pub fn build(yaml: &str) -> Box<dyn Notifier> {
    let cfg = parse(yaml);
    assert!(cfg.validate().is_empty(), "{:?}", cfg.validate());
    cfg.build(&ctx()).unwrap()
}

pub fn event(kind: EventKind) -> Event {
    Event::now(kind, "titan-db", "shutdown started: ups atlas: estimated runtime 120 s < 1.1 × budget 150 s")
        .with("estimate_s", 120.0)
        .with("node", "titan-0a")
}

/// One request the receiver got.
#[derive(Debug, Clone)]
pub struct Request {
    pub method: Method,
    pub path: String,
    pub headers: HeaderMap,
    pub body: Vec<u8>,
}

impl Request {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| panic!("body is not json ({e}): {:?}", self.body))
    }
}

struct ReceiverState {
    tx: mpsc::UnboundedSender<Request>,
    answers: Mutex<VecDeque<(u16, String)>>,
}

/// A test receiver: an HTTP server that records every request and answers 200, or the
/// answers queued with [`HttpReceiver::answer_next`] and [`HttpReceiver::answer_next_with`] first.
pub struct HttpReceiver {
    pub addr: SocketAddr,
    rx: mpsc::UnboundedReceiver<Request>,
    state: Arc<ReceiverState>,
    _task: Task,
}

async fn record(
    State(st): State<Arc<ReceiverState>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> (StatusCode, String) {
    let _ = st.tx.send(Request { method, path: uri.path().to_string(), headers, body: body.to_vec() });
    let (code, body) = st.answers.lock().unwrap().pop_front().unwrap_or((200, String::new()));
    (StatusCode::from_u16(code).unwrap(), body)
}

impl HttpReceiver {
    pub async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = mpsc::unbounded_channel();
        let state = Arc::new(ReceiverState { tx, answers: Mutex::new(VecDeque::new()) });
        let app = axum::Router::new().fallback(record).with_state(state.clone());
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self { addr, rx, state, _task: Task(task) }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// The next requests get these statuses, then 200 again.
    pub fn answer_next(&self, statuses: &[u16]) {
        self.state.answers.lock().unwrap().extend(statuses.iter().map(|s| (*s, String::new())));
    }

    /// The next request gets this status and body, then 200 again.
    pub fn answer_next_with(&self, status: u16, body: &str) {
        self.state.answers.lock().unwrap().push_back((status, body.to_string()));
    }

    /// The next request, waiting at most [`WAIT`].
    pub async fn next(&mut self) -> Request {
        tokio::time::timeout(WAIT, self.rx.recv())
            .await
            .expect("no request reached the receiver in time")
            .expect("receiver stopped")
    }

    /// Every request received so far, without waiting.
    pub fn received(&mut self) -> Vec<Request> {
        std::iter::from_fn(|| self.rx.try_recv().ok()).collect()
    }
}

/// Accepts connections and never reads or answers: a receiver that hangs.
pub struct SilentListener {
    pub addr: SocketAddr,
    accepted: mpsc::UnboundedReceiver<()>,
    _task: Task,
}

impl SilentListener {
    pub async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, accepted) = mpsc::unbounded_channel();
        let task = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((sock, _)) = listener.accept().await {
                held.push(sock);
                let _ = tx.send(());
            }
        });
        Self { addr, accepted, _task: Task(task) }
    }

    /// Waits at most [`WAIT`] for a connection.
    pub async fn wait_accepted(&mut self) {
        tokio::time::timeout(WAIT, self.accepted.recv()).await.expect("nobody connected in time");
    }
}
