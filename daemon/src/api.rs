// SPDX-License-Identifier: Apache-2.0
//! The control API between `kldnet` and `kldnetd`: one JSON request line, one JSON
//! response line, over the Unix socket `<run-dir>/kldnet.sock`.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::compile::policy::trace::{PolicyMapView, TraceRequest, TraceResult};
use crate::compile::{EndpointView, Identity, ServiceView};

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "command", rename_all = "kebab-case")]
pub enum Request {
    Status,
    Reload,
    Endpoints,
    Identities,
    Services,
    /// Map contents as text lines, for `kldnet bpf … list`.
    MapDump {
        map: String,
    },
    /// `kldnet policy trace`: verdict of the live maps for one connection.
    PolicyTrace(TraceRequest),
    /// `kldnet bpf policy get ENDPOINT`: the endpoint's compiled policy entries.
    PolicyGet {
        endpoint: String,
    },
    /// Flows (`kldnet observe`). Answered as a stream of JSON lines, one Hubble
    /// `{"flow":…}` (or `{"lost_events":…}`) object each, until the history is sent or,
    /// with `follow`, until the client hangs up. See [`observe`].
    Observe(Box<crate::flows::FlowQuery>),
    /// Pause or resume the flow ring buffer reader (tests: make the ring overflow).
    FlowsReader {
        paused: bool,
    },
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(tag = "result", rename_all = "kebab-case")]
pub enum Response {
    Status(Box<Status>),
    Reload(ReloadResult),
    Endpoints { endpoints: Vec<EndpointView> },
    Identities { identities: Vec<Identity> },
    Services { services: Vec<ServiceView> },
    MapDump { entries: Vec<MapEntry> },
    PolicyTrace { trace: TraceResult },
    PolicyGet { policy: PolicyMapView },
    Flows(crate::flows::FlowsStatus),
    Error { message: String },
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MapEntry {
    pub key: String,
    pub value: String,
}

/// The outcome of one reload.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReloadResult {
    pub ok: bool,
    /// Config generation serving after this reload.
    pub generation: u64,
    /// "no changes", "12 map entries written, 0 deleted", or the error.
    pub summary: String,
    /// Every diagnostic, rendered `FILE:LINE:COL: severity: message`.
    pub diagnostics: Vec<String>,
    pub duration_us: u64,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MapOccupancy {
    pub name: String,
    pub entries: u64,
    pub capacity: u64,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Status {
    pub version: String,
    pub node: String,
    /// "running", or "degraded" when the last reload failed (the previous state serves).
    pub state: String,
    pub pid: u32,
    pub generation: u64,
    pub reloads: u64,
    pub reload_failures: u64,
    pub last_reload: Option<ReloadResult>,
    pub config_dirs: Vec<String>,
    pub bpf_pin_dir: String,
    pub cgroup: Option<String>,
    pub kernel: KernelFeatures,
    pub programs: Vec<ProgramAttachment>,
    pub maps: Vec<MapOccupancy>,
    pub endpoints_local: usize,
    pub endpoints_remote: usize,
    pub identities: usize,
    pub services: usize,
    pub policies: usize,
    pub encryption: String,
    pub bgp: String,
    /// The flow pipeline (events decoded and lost, buffer, metrics/UI addresses).
    #[serde(default)]
    pub flows: Option<crate::flows::FlowsStatus>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KernelFeatures {
    pub release: String,
    pub btf: bool,
    pub tcx: bool,
    pub cgroup2: bool,
    pub bpffs: bool,
    pub missing: Vec<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProgramAttachment {
    pub program: String,
    pub target: String,
    pub mode: String,
}

/// Why the CLI could not get an answer.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error(
        "cannot reach kldnetd at {path}: {source} (is the daemon running? see `systemctl status kldnetd`)"
    )]
    Unreachable {
        path: String,
        source: std::io::Error,
    },
    #[error("bad answer from kldnetd: {0}")]
    Protocol(String),
}

/// Sends one request and reads the answer.
pub fn call(socket: &Path, req: &Request, timeout: Duration) -> Result<Response, ClientError> {
    let unreachable = |source| ClientError::Unreachable {
        path: socket.display().to_string(),
        source,
    };
    let mut stream = UnixStream::connect(socket).map_err(unreachable)?;
    stream
        .set_read_timeout(Some(timeout))
        .map_err(unreachable)?;
    let mut line = serde_json::to_string(req).map_err(|e| ClientError::Protocol(e.to_string()))?;
    line.push('\n');
    stream.write_all(line.as_bytes()).map_err(unreachable)?;
    let mut answer = String::new();
    BufReader::new(stream)
        .read_line(&mut answer)
        .map_err(unreachable)?;
    serde_json::from_str(&answer).map_err(|e| ClientError::Protocol(format!("{e}: {answer:?}")))
}

/// Sends an observe request and calls `on_line` with each JSON line until the daemon
/// closes the stream (or `on_line` returns false). An error line ends with `Err`.
pub fn observe(
    socket: &Path,
    query: &crate::flows::FlowQuery,
    mut on_line: impl FnMut(&str) -> bool,
) -> Result<(), ClientError> {
    let unreachable = |source| ClientError::Unreachable {
        path: socket.display().to_string(),
        source,
    };
    let mut stream = UnixStream::connect(socket).map_err(unreachable)?;
    if !query.follow {
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .map_err(unreachable)?;
    }
    let mut line = serde_json::to_string(&Request::Observe(Box::new(query.clone())))
        .map_err(|e| ClientError::Protocol(e.to_string()))?;
    line.push('\n');
    stream.write_all(line.as_bytes()).map_err(unreachable)?;
    for l in BufReader::new(stream).lines() {
        let l = l.map_err(|e| ClientError::Protocol(format!("read flows: {e}")))?;
        if l.starts_with("{\"result\":\"error\"") {
            return match serde_json::from_str::<Response>(&l) {
                Ok(Response::Error { message }) => Err(ClientError::Protocol(message)),
                _ => Err(ClientError::Protocol(l)),
            };
        }
        if !on_line(&l) {
            break;
        }
    }
    Ok(())
}
