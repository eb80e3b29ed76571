// SPDX-License-Identifier: Apache-2.0
//! What flow events cost end to end: TCP connections per second from a VM-like client
//! through a ClusterIP service (per-packet LB at tc) to a VM-like server, with an ingress
//! policy on the server, in a sandbox whose kldnetd loads the programs with events on
//! (`KLDNET_DATAPATH_EVENTS=1`, the default) or off (`=0`). Rounds alternate the order so
//! the machine's drift falls on both sides.
//!
//! ```text
//!  client (10.3.0.1, outside the LB cgroup) --tc LB--> 10.96.3.1:80 --> server (10.3.0.2:8080)
//! ```

use std::net::{Ipv4Addr, SocketAddrV4, TcpListener};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use kldnet_testkit::{Sandbox, WorkloadSpec};

use crate::cli::bench_services::traffic::{WARMUP, accept_loop, connect_loop};

const CLIENT: Ipv4Addr = Ipv4Addr::new(10, 3, 0, 1);
const SERVER: Ipv4Addr = Ipv4Addr::new(10, 3, 0, 2);
const VIP: Ipv4Addr = Ipv4Addr::new(10, 96, 3, 1);
const PORT: u16 = 8080;

/// One measurement: connections/s and what the daemon decoded meanwhile.
#[derive(Clone, Copy, Debug)]
pub struct Run {
    pub events: bool,
    pub conns_per_sec: f64,
    pub timeouts: u32,
    /// Flow events the daemon decoded during the run (0 with events off).
    pub events_decoded: u64,
}

fn config(sbx: &Sandbox, client_if: &str, server_if: &str) -> String {
    format!(
        r#"[node]
name = "bench"
address = "{node}"

[[endpoint]]
name = "client"
namespace = "bench"
interface = "{client_if}"
addresses = ["{CLIENT}"]
labels = {{ app = "client" }}

[[endpoint]]
name = "server"
namespace = "bench"
interface = "{server_if}"
addresses = ["{SERVER}"]
labels = {{ app = "server" }}
ports = [{{ name = "http", port = {PORT} }}]

[[service]]
name = "server"
namespace = "bench"
addresses = ["{VIP}"]
ports = [{{ port = 80, target_port = "http" }}]
selector = {{ app = "server" }}

[[policy]]
name = "server-ingress"
namespace = "bench"
selector = {{ app = "server" }}
policy_types = ["ingress"]

[[policy.ingress]]
from = [{{ selector = {{ app = "client" }} }}]
ports = [{{ name = "http" }}]
"#,
        node = sbx.node_addr()
    )
}

fn events_decoded(sbx: &Sandbox) -> Result<u64> {
    match crate::api::call(
        &sbx.socket_path(),
        &crate::api::Request::Status,
        Duration::from_secs(10),
    )? {
        crate::api::Response::Status(s) => Ok(s.flows.map_or(0, |f| f.events_decoded)),
        other => bail!("status: {other:?}"),
    }
}

/// One sandbox, one daemon, `connects` timed connections.
fn measure(kldnetd: &Path, events: bool, connects: u32) -> Result<Run> {
    let mut b = Sandbox::builder("bench-flows-conn");
    if !events {
        b.daemon_env
            .push(("KLDNET_DATAPATH_EVENTS".into(), "0".into()));
    }
    let mut sbx = b.build()?;
    let client = sbx.add_workload(WorkloadSpec::new("client", "kfclient", &[CLIENT]).vm())?;
    let server = sbx.add_workload(WorkloadSpec::new("server", "kfserver", &[SERVER]).vm())?;
    sbx.write_config(
        "bench.toml",
        &config(&sbx, &client.host_ifname, &server.host_ifname),
    )?;
    let stop = Arc::new(AtomicBool::new(false));
    let listener = sbx
        .run_in_netns(&server.netns, || {
            TcpListener::bind(SocketAddrV4::new(SERVER, PORT))
        })?
        .context("listen")?;
    let accept = {
        let stop = stop.clone();
        std::thread::spawn(move || accept_loop(listener, stop))
    };
    let result = (|| {
        let _daemon = sbx.start_daemon(kldnetd, &["--dbus", "none"])?;
        let before = events_decoded(&sbx)?;
        let target = SocketAddrV4::new(VIP, 80);
        let t = Instant::now();
        let (samples, timeouts) =
            sbx.run_in_netns(&client.netns, || connect_loop(target, connects))??;
        let secs = t.elapsed().as_secs_f64();
        ensure!(
            samples.len() as u32 + timeouts >= connects,
            "only {} connects completed",
            samples.len()
        );
        // Let the reader drain the ring before counting.
        std::thread::sleep(Duration::from_millis(300));
        Ok(Run {
            events,
            // The untimed warm-up connects are inside the wall time too.
            conns_per_sec: (samples.len() as u32 + WARMUP) as f64 / secs,
            timeouts,
            events_decoded: events_decoded(&sbx)?.saturating_sub(before),
        })
    })();
    stop.store(true, Ordering::Relaxed);
    let _ = accept.join();
    result
}

/// `rounds` × (events on, events off), alternating which goes first.
pub fn run(kldnetd: &Path, connects: u32, rounds: u32) -> Result<Vec<Run>> {
    let mut out = Vec::new();
    for r in 0..rounds {
        let order = if r % 2 == 0 {
            [true, false]
        } else {
            [false, true]
        };
        for events in order {
            out.push(measure(kldnetd, events, connects)?);
        }
    }
    Ok(out)
}

/// Median connections/s of the runs with `events`.
pub fn median(runs: &[Run], events: bool) -> f64 {
    let mut v: Vec<f64> = runs
        .iter()
        .filter(|r| r.events == events)
        .map(|r| r.conns_per_sec)
        .collect();
    v.sort_by(f64::total_cmp);
    if v.is_empty() { 0.0 } else { v[v.len() / 2] }
}
