// SPDX-License-Identifier: Apache-2.0
//! Flow observability: the `kld_events` ring buffer → decoder and enrichment → a bounded
//! store of recent flows → `kldnet observe` streams, Prometheus metrics and the web UI.
//!
//! The pipeline runs on its own thread with its own tokio runtime, so decoding a burst of
//! events never delays a reload or an API answer, and a slow reload never stalls the ring
//! buffer. The main loop talks to it through [`Flows`]: a new name [`enrich::Snapshot`]
//! after every reload, `observe` connections handed over whole, and status.

pub mod enrich;
pub mod filter;
pub mod hubble;
pub mod model;
pub mod reader;
pub mod store;

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{broadcast, mpsc, watch};

pub use filter::{Filter, FlowQuery};

use crate::daemon::{ApiCall, Engine};
use crate::metrics::FlowMetrics;
use enrich::Snapshot;
use model::Flow;
use store::Store;

/// The flow pipeline's state for `kldnet status` and metrics.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FlowsStatus {
    /// The ring buffer reader is running.
    pub running: bool,
    /// Why flows are degraded (ring buffer or counters not readable, listen failures).
    pub errors: Vec<String>,
    /// Events decoded since the daemon started.
    pub events_decoded: u64,
    /// Events the datapath could not queue because the ring buffer was full
    /// (`kld_counters[CTR_EVENTS_LOST]`, since the maps were created).
    pub events_lost: u64,
    /// Records too short to be a flow event.
    pub decode_errors: u64,
    pub buffered: u64,
    pub capacity: u64,
    /// Open `kldnet observe --follow` streams.
    pub followers: u64,
    /// The reader is paused (tests only: lets the ring fill up).
    pub reader_paused: bool,
    /// Addresses the metrics endpoint and the UI listen on ("" = off).
    pub metrics: String,
    pub ui: String,
}

/// What followers receive.
#[derive(Debug)]
pub enum Msg {
    Flow(Flow),
    /// The datapath lost this many more events (ring buffer full).
    Lost(u64),
}

/// `[flows]` as the pipeline applies it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct Settings {
    buffer: usize,
    metrics: String,
    ui: String,
}

/// State shared by the pipeline's tasks and the main loop.
pub struct Shared {
    snapshot: RwLock<Arc<Snapshot>>,
    pub store: Mutex<Store>,
    pub metrics: Mutex<FlowMetrics>,
    tx: broadcast::Sender<Arc<Msg>>,
    pub paused: AtomicBool,
    pub seq: AtomicU64,
    pub decoded: AtomicU64,
    pub decode_errors: AtomicU64,
    pub lost: AtomicU64,
    pub error: Mutex<Option<String>>,
    listen: Mutex<(String, String, Vec<String>)>,
    counters: Option<reader::Counters>,
    /// Requests to the main loop (status for the `kldnet_*` metrics).
    pub calls: Option<mpsc::Sender<ApiCall>>,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared").finish_non_exhaustive()
    }
}

impl Shared {
    /// A pipeline state without a datapath (tests, benches).
    pub fn detached(snapshot: Snapshot, buffer: usize) -> Shared {
        Shared {
            snapshot: RwLock::new(Arc::new(snapshot)),
            store: Mutex::new(Store::new(buffer)),
            metrics: Mutex::new(FlowMetrics::default()),
            tx: broadcast::channel(8192).0,
            paused: AtomicBool::new(false),
            seq: AtomicU64::new(0),
            decoded: AtomicU64::new(0),
            decode_errors: AtomicU64::new(0),
            lost: AtomicU64::new(0),
            error: Mutex::new(None),
            listen: Mutex::new(Default::default()),
            counters: None,
            calls: None,
        }
    }

    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.snapshot.read().expect("lock").clone()
    }

    /// Counts, stores and publishes a batch of decoded flows (emptying `batch`).
    pub fn ingest(&self, batch: &mut Vec<Flow>) {
        {
            let mut m = self.metrics.lock().expect("lock");
            for f in batch.iter() {
                m.observe(f);
            }
        }
        self.decoded
            .fetch_add(batch.len() as u64, Ordering::Relaxed);
        // Publish under the store lock: a follower subscribing under the same lock sees
        // every flow exactly once, either in its history or in its stream.
        let mut store = self.store.lock().expect("lock");
        let followers = self.tx.receiver_count() > 0;
        for f in batch.drain(..) {
            if followers {
                let _ = self.tx.send(Arc::new(Msg::Flow(f.clone())));
            }
            store.push(f);
        }
    }

    /// Datapath counters (`kld_counters`), when the map is readable.
    pub fn counters(&self) -> std::collections::BTreeMap<u32, u64> {
        self.counters
            .as_ref()
            .map(reader::Counters::all)
            .unwrap_or_default()
    }

    pub fn status(&self) -> FlowsStatus {
        let (buffered, capacity) = {
            let s = self.store.lock().expect("lock");
            (s.len() as u64, s.capacity() as u64)
        };
        let listen = self.listen.lock().expect("lock").clone();
        let mut errors = listen.2;
        if let Some(e) = self.error.lock().expect("lock").clone() {
            errors.insert(0, e);
        }
        FlowsStatus {
            running: self.counters.is_some() && self.error.lock().expect("lock").is_none(),
            errors,
            events_decoded: self.decoded.load(Ordering::Relaxed),
            events_lost: self.lost.load(Ordering::Relaxed),
            decode_errors: self.decode_errors.load(Ordering::Relaxed),
            buffered,
            capacity,
            followers: self.tx.receiver_count() as u64,
            reader_paused: self.paused.load(Ordering::Relaxed),
            metrics: listen.0,
            ui: listen.1,
        }
    }

    /// The daemon's status from the main loop (None when it does not answer in time).
    pub async fn daemon_status(&self) -> Option<crate::api::Status> {
        let calls = self.calls.as_ref()?;
        let (tx, rx) = tokio::sync::oneshot::channel();
        calls.send((crate::api::Request::Status, tx)).await.ok()?;
        match tokio::time::timeout(Duration::from_secs(5), rx).await {
            Ok(Ok(crate::api::Response::Status(s))) => Some(*s),
            _ => None,
        }
    }
}

/// The main loop's handle on the flow pipeline.
pub struct Flows {
    shared: Arc<Shared>,
    rt: tokio::runtime::Handle,
    settings: watch::Sender<Settings>,
}

impl std::fmt::Debug for Flows {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Flows").finish_non_exhaustive()
    }
}

fn settings_of(engine: &Engine) -> Settings {
    let f = engine.spec.flows();
    Settings {
        buffer: f.buffer.max(1) as usize,
        metrics: f.metrics.trim().to_string(),
        ui: f.ui.trim().to_string(),
    }
}

/// Names for flows from what the engine compiled last.
pub fn snapshot_of(engine: &Engine) -> Snapshot {
    let interfaces = (engine.interfaces)()
        .into_iter()
        .map(|(name, idx)| (idx, name))
        .collect();
    Snapshot::build(enrich::SnapshotInput {
        node: engine.spec.node_name(&engine.hostname),
        generation: engine.generation,
        endpoints: &engine.compiled.endpoints,
        identities: &engine.compiled.identities.identities,
        services: enrich::services_by_rev_nat(&engine.spec, &engine.current.lb4_rev_nat),
        rules: enrich::policy_rules(&engine.spec, &engine.compiled),
        interfaces,
        endpoint_policies: enrich::endpoint_policies(&engine.compiled),
    })
}

impl Flows {
    /// Starts the pipeline on its own thread: ring buffer reader, lost-event watcher,
    /// metrics and UI servers. A ring buffer that cannot be opened leaves the daemon
    /// running without flows (the error shows in `kldnet status`).
    pub fn start(engine: &Engine, pin_dir: &Path, calls: mpsc::Sender<ApiCall>) -> Flows {
        let settings = settings_of(engine);
        let mut shared = Shared::detached(snapshot_of(engine), settings.buffer);
        shared.calls = Some(calls);
        let ring = match reader::open_ring(pin_dir) {
            Ok(r) => Some(r),
            Err(e) => {
                tracing::error!("flows: {e:#}");
                *shared.error.lock().expect("lock") = Some(format!("{e:#}"));
                None
            }
        };
        match reader::Counters::open(pin_dir) {
            Ok(c) => shared.counters = Some(c),
            Err(e) => tracing::error!("flows: lost events cannot be counted: {e:#}"),
        }
        let shared = Arc::new(shared);
        let (settings_tx, settings_rx) = watch::channel(settings);
        let (handle_tx, handle_rx) = std::sync::mpsc::channel();
        let s = shared.clone();
        std::thread::Builder::new()
            .name("kldnet-flows".into())
            .spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("tokio runtime for flows");
                let _ = handle_tx.send(rt.handle().clone());
                rt.block_on(async move {
                    if let Some(ring) = ring {
                        tokio::spawn(reader::run(s.clone(), ring));
                    }
                    tokio::spawn(watch_lost(s.clone()));
                    supervise(s, settings_rx).await;
                });
            })
            .expect("spawn the flows thread");
        let rt = handle_rx.recv().expect("flows runtime handle");
        Flows {
            shared,
            rt,
            settings: settings_tx,
        }
    }

    /// After a reload: new names, new `[flows]` settings, metrics of removed endpoints go.
    pub fn update(&self, engine: &Engine) {
        let snap = snapshot_of(engine);
        self.shared
            .metrics
            .lock()
            .expect("lock")
            .retain_workloads(&snap.workloads);
        *self.shared.snapshot.write().expect("lock") = Arc::new(snap);
        let s = settings_of(engine);
        self.settings.send_if_modified(|cur| {
            let changed = *cur != s;
            *cur = s;
            changed
        });
    }

    pub fn status(&self) -> FlowsStatus {
        self.shared.status()
    }

    /// Pauses or resumes the ring buffer reader (tests: lets the ring overflow).
    pub fn set_paused(&self, paused: bool) -> FlowsStatus {
        self.shared.paused.store(paused, Ordering::Relaxed);
        self.shared.status()
    }

    /// Serves one `observe` request on `stream` from the pipeline's thread.
    pub fn observe(&self, q: FlowQuery, stream: std::os::unix::net::UnixStream) {
        let shared = self.shared.clone();
        self.rt.spawn(async move {
            if let Err(e) = serve_observe(shared, q, stream).await {
                tracing::debug!("observe stream ended: {e}");
            }
        });
    }

    pub fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }
}

/// Answers an observe request: history lines, then (following) new flows until the
/// client hangs up. Every line is one JSON object; an error is `{"result":"error",…}`.
pub async fn serve_observe(
    shared: Arc<Shared>,
    q: FlowQuery,
    stream: std::os::unix::net::UnixStream,
) -> std::io::Result<()> {
    stream.set_nonblocking(true)?;
    let stream = tokio::net::UnixStream::from_std(stream)?;
    let (mut rd, wr) = stream.into_split();
    let mut wr = tokio::io::BufWriter::new(wr);
    let filter = match Filter::new(q) {
        Ok(f) => f,
        Err(message) => {
            let line = serde_json::to_string(&crate::api::Response::Error { message })?;
            wr.write_all(line.as_bytes()).await?;
            wr.write_all(b"\n").await?;
            return wr.flush().await;
        }
    };
    let q = filter.query();
    let history = match (q.last, q.since_unix_ns, q.follow) {
        (Some(n), _, _) => Some(n as usize),
        (None, Some(_), _) => None,
        (None, None, true) => Some(0),
        (None, None, false) => Some(20),
    };
    let (flows, mut rx) = {
        let store = shared.store.lock().expect("lock");
        let rx = q.follow.then(|| shared.tx.subscribe());
        (
            if history == Some(0) {
                Vec::new()
            } else {
                store.matching(&filter, history)
            },
            rx,
        )
    };
    let mut buf = Vec::with_capacity(1024);
    for f in &flows {
        write_line(&mut buf, &f.to_hubble());
        if buf.len() > 64 * 1024 {
            wr.write_all(&buf).await?;
            buf.clear();
        }
    }
    wr.write_all(&buf).await?;
    wr.flush().await?;
    drop(flows);
    let Some(rx) = rx.as_mut() else {
        return Ok(());
    };
    let node = shared.snapshot().node.to_string();
    let mut probe = [0u8; 64];
    loop {
        tokio::select! {
            msg = rx.recv() => {
                buf.clear();
                match msg {
                    Ok(m) => match &*m {
                        Msg::Flow(f) if filter.matches(f) => write_line(&mut buf, &f.to_hubble()),
                        Msg::Flow(_) => continue,
                        Msg::Lost(n) => write_line(&mut buf, &lost_line(&node, "PERF_EVENT_RING_BUFFER", *n)),
                    },
                    Err(broadcast::error::RecvError::Lagged(n)) => {
                        write_line(&mut buf, &lost_line(&node, "OBSERVER_EVENTS_QUEUE", n));
                    }
                    Err(broadcast::error::RecvError::Closed) => return Ok(()),
                }
                wr.write_all(&buf).await?;
                // Flush when nothing else is queued: batches under load, prompt when idle.
                if rx.is_empty() {
                    wr.flush().await?;
                }
            }
            n = rd.read(&mut probe) => {
                if matches!(n, Ok(0) | Err(_)) {
                    return Ok(()); // the client hung up
                }
            }
        }
    }
}

fn lost_line(node: &str, source: &str, n: u64) -> hubble::Line {
    let unix_ns = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    hubble::Line {
        flow: None,
        lost_events: Some(hubble::LostEvents {
            source: source.into(),
            num_events_lost: n,
        }),
        node_name: node.into(),
        time: hubble::rfc3339(unix_ns),
    }
}

fn write_line(buf: &mut Vec<u8>, line: &hubble::Line) {
    if serde_json::to_writer(&mut *buf, line).is_ok() {
        buf.push(b'\n');
    }
}

/// Polls `kld_counters[CTR_EVENTS_LOST]` every 500 ms; growth is logged (rate limited),
/// published to followers and kept for status and metrics. Never silent.
async fn watch_lost(shared: Arc<Shared>) {
    let Some(c) = shared.counters.as_ref() else {
        return;
    };
    let mut last = c.get(kldnet_bpf::abi::CTR_EVENTS_LOST);
    shared.lost.store(last, Ordering::Relaxed);
    let mut logged = std::time::Instant::now() - Duration::from_secs(60);
    let mut unlogged = 0u64;
    loop {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let Some(c) = shared.counters.as_ref() else {
            return;
        };
        let now = c.get(kldnet_bpf::abi::CTR_EVENTS_LOST);
        if now > last {
            let n = now - last;
            shared.lost.store(now, Ordering::Relaxed);
            let _ = shared.tx.send(Arc::new(Msg::Lost(n)));
            unlogged += n;
            if logged.elapsed() >= Duration::from_secs(10) {
                tracing::warn!(
                    "flows: {unlogged} events lost (ring buffer {} full; {now} since start): the reader falls behind",
                    kldnet_bpf::abi::MAP_EVENTS
                );
                logged = std::time::Instant::now();
                unlogged = 0;
            }
            last = now;
        }
    }
}

/// Applies `[flows]`: the buffer size, and (re)binds the metrics and UI servers when their
/// addresses change.
async fn supervise(shared: Arc<Shared>, mut rx: watch::Receiver<Settings>) {
    let mut metrics_task: Option<(String, tokio::task::JoinHandle<()>)> = None;
    let mut ui_task: Option<(String, tokio::task::JoinHandle<()>)> = None;
    loop {
        let s = rx.borrow_and_update().clone();
        shared.store.lock().expect("lock").resize(s.buffer);
        let mut errors = Vec::new();
        for (which, want, task) in [
            ("metrics", &s.metrics, &mut metrics_task),
            ("ui", &s.ui, &mut ui_task),
        ] {
            if task.as_ref().is_some_and(|(addr, _)| addr == want) {
                continue;
            }
            if let Some((_, t)) = task.take() {
                t.abort();
                // Let the aborted task drop its listener before a rebind of the same port.
                tokio::task::yield_now().await;
            }
            if want.is_empty() {
                continue;
            }
            match crate::metrics::http::bind(want).await {
                Ok(listener) => {
                    let handler = if which == "metrics" {
                        crate::metrics::handler(shared.clone())
                    } else {
                        crate::ui::handler(shared.clone())
                    };
                    tracing::info!("flows: {which} on http://{want}/");
                    *task = Some((
                        want.clone(),
                        tokio::spawn(crate::metrics::http::serve(listener, handler)),
                    ));
                }
                Err(e) => {
                    let msg = format!("{which}: cannot listen on {want}: {e}");
                    tracing::error!("flows: {msg}");
                    errors.push(msg);
                }
            }
        }
        *shared.listen.lock().expect("lock") = (
            metrics_task.as_ref().map_or(String::new(), |t| t.0.clone()),
            ui_task.as_ref().map_or(String::new(), |t| t.0.clone()),
            errors,
        );
        if rx.changed().await.is_err() {
            // The daemon dropped its handle: keep serving what we have.
            std::future::pending::<()>().await;
        }
    }
}
