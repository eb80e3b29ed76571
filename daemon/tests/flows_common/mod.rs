// SPDX-License-Identifier: Apache-2.0
//! Helpers for the flow tests (`flows.rs`, `ui.rs`): a sandbox with services that forward
//! and drop, `kldnet observe` as JSON, and HTTP GETs inside the node namespace (where the
//! daemon's metrics and UI listen).

#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use kldnet_testkit::{DaemonGuard, Sandbox};
use serde_json::Value;

use crate::common::lb::{Servers, lb_sandbox};
use crate::common::{cli, kldnetd};

pub const TCP_PORT: u16 = 8080;
pub const UDP_PORT: u16 = 5353;
pub const WEB_VIP: &str = "10.96.0.10";
pub const EMPTY_VIP: &str = "10.96.0.40";
pub const METRICS: &str = "127.0.0.1:9965";
pub const UI: &str = "127.0.0.1:12000";

/// `web` (TCP 80 → 8080, UDP 53 → 5353 on app=web) and `empty` (no backends).
pub fn services() -> String {
    format!(
        "[[service]]\nname = \"web\"\naddresses = [\"{WEB_VIP}\"]\n\
         ports = [{{ name = \"http\", port = 80, target_port = {TCP_PORT}, protocol = \"tcp\" }}, \
         {{ name = \"dns\", port = 53, target_port = {UDP_PORT}, protocol = \"udp\" }}]\n\
         selector = {{ app = \"web\" }}\n\n\
         [[service]]\nname = \"empty\"\naddresses = [\"{EMPTY_VIP}\"]\n\
         ports = [{{ name = \"http\", port = 80, target_port = 8080, protocol = \"tcp\" }}, \
         {{ name = \"dns\", port = 53, target_port = 5353, protocol = \"udp\" }}]\n\
         selector = {{ app = \"nobody\" }}\n\n\
         [flows]\nbuffer = 4096\nmetrics = \"{METRICS}\"\nui = \"{UI}\"\n"
    )
}

/// The LB sandbox with [`services`], servers on b1..b3, and the daemon.
pub fn flows_sandbox(label: &str) -> Result<(Sandbox, Servers, DaemonGuard)> {
    let sbx = lb_sandbox(label, &services())?;
    let srv = Servers::both(&sbx, &["b1", "b2", "b3"], TCP_PORT, UDP_PORT)?;
    let daemon = sbx.start_daemon(kldnetd(), &[])?;
    Ok((sbx, srv, daemon))
}

pub fn netns(sbx: &Sandbox, name: &str) -> String {
    sbx.workload(name).expect("workload").netns.clone()
}

/// Sends `n` UDP datagrams from workload `from` (in-process: per-packet path) to
/// `target`, one per source socket so every one is a new flow; waits `wait` for replies.
pub fn udp_shots(sbx: &Sandbox, from: &str, target: &str, n: usize) -> Result<usize> {
    let target: SocketAddr = target.parse()?;
    sbx.run_in_netns(&netns(sbx, from), move || -> Result<usize> {
        let mut replies = 0;
        for _ in 0..n {
            let s = UdpSocket::bind("0.0.0.0:0")?;
            s.set_read_timeout(Some(Duration::from_millis(300)))?;
            s.send_to(b"hello\n", target)?;
            let mut buf = [0u8; 64];
            if s.recv_from(&mut buf).is_ok() {
                replies += 1;
            }
        }
        Ok(replies)
    })?
}

/// TCP connects from workload `from` (in-process); returns how many succeeded.
pub fn tcp_shots(
    sbx: &Sandbox,
    from: &str,
    target: &str,
    n: usize,
    timeout: Duration,
) -> Result<usize> {
    let target: SocketAddr = target.parse()?;
    sbx.run_in_netns(&netns(sbx, from), move || {
        let mut ok = 0;
        for _ in 0..n {
            if let Ok(mut s) = TcpStream::connect_timeout(&target, timeout) {
                let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
                let mut b = [0u8; 32];
                if s.read(&mut b).unwrap_or(0) > 0 {
                    ok += 1;
                }
            }
        }
        ok
    })
}

/// `kldnet observe ARGS -o json`: every line parsed (panics with the output otherwise).
pub fn observe(sbx: &Sandbox, args: &[&str]) -> Vec<Value> {
    let mut a = vec!["observe"];
    a.extend_from_slice(args);
    a.extend_from_slice(&["-o", "json"]);
    let out = cli(sbx, &a);
    assert_eq!(out.code, 0, "kldnet {a:?}: {out}");
    out.stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("line is not JSON ({e}): {l}")))
        .collect()
}

/// `namespace/pod_name` of a flow side ("" when not an endpoint).
pub fn pod(f: &Value, side: &str) -> String {
    let e = &f["flow"][side];
    match e["pod_name"].as_str() {
        Some(p) => format!("{}/{p}", e["namespace"].as_str().unwrap_or("")),
        None => String::new(),
    }
}

/// One line per flow for failure messages.
pub fn brief(flows: &[Value]) -> String {
    flows
        .iter()
        .map(|v| {
            let f = &v["flow"];
            format!(
                "  {} {} -> {} {} {} {} reply={} svc={}",
                f["IP"]["source"].as_str().unwrap_or(""),
                pod(v, "source"),
                f["IP"]["destination"].as_str().unwrap_or(""),
                pod(v, "destination"),
                f["verdict"].as_str().unwrap_or(""),
                f["drop_reason_desc"].as_str().unwrap_or(""),
                f["is_reply"],
                f["destination_service"]["name"].as_str().unwrap_or("")
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// `GET http://addr/path` from inside the node namespace: (status, body).
pub fn http_get(sbx: &Sandbox, addr: &str, path: &str) -> Result<(u16, String)> {
    let addr: SocketAddr = addr.parse()?;
    let path = path.to_string();
    sbx.run_in_netns(sbx.node_netns(), move || -> Result<(u16, String)> {
        let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))
            .with_context(|| format!("connect {addr}"))?;
        s.set_read_timeout(Some(Duration::from_secs(10)))?;
        write!(
            s,
            "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
        )?;
        let mut raw = Vec::new();
        s.read_to_end(&mut raw)?;
        let text = String::from_utf8_lossy(&raw).into_owned();
        let Some((head, body)) = text.split_once("\r\n\r\n") else {
            bail!("no HTTP header in {text:?}");
        };
        let status = head
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        Ok((status, body.to_string()))
    })?
}

/// Samples of a Prometheus text exposition: (name, sorted labels) → value.
/// One sample: name, sorted labels, value.
pub type Sample = (String, Vec<(String, String)>, f64);

pub fn parse_metrics(text: &str) -> Vec<Sample> {
    let mut out = Vec::new();
    for line in text.lines() {
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        let (series, value) = line.rsplit_once(' ').expect("sample");
        let (name, labels) = match series.split_once('{') {
            Some((n, rest)) => {
                let rest = rest.trim_end_matches('}');
                let mut labels: Vec<(String, String)> = Vec::new();
                for kv in split_labels(rest) {
                    let (k, v) = kv.split_once('=').expect("label");
                    labels.push((k.to_string(), v.trim_matches('"').to_string()));
                }
                labels.sort();
                (n.to_string(), labels)
            }
            None => (series.to_string(), Vec::new()),
        };
        out.push((name, labels, value.parse().unwrap_or(f64::NAN)));
    }
    out
}

fn split_labels(s: &str) -> Vec<String> {
    let mut parts = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    for c in s.chars() {
        match c {
            '"' => {
                quoted = !quoted;
                cur.push(c);
            }
            ',' if !quoted => parts.push(std::mem::take(&mut cur)),
            _ => cur.push(c),
        }
    }
    if !cur.is_empty() {
        parts.push(cur);
    }
    parts
}

/// Sum of the samples of `name` whose labels include every `want` pair.
pub fn metric_sum(text: &str, name: &str, want: &[(&str, &str)]) -> f64 {
    parse_metrics(text)
        .into_iter()
        .filter(|(n, labels, _)| {
            n == name
                && want
                    .iter()
                    .all(|(k, v)| labels.iter().any(|(lk, lv)| lk == k && lv == v))
        })
        .map(|(_, _, v)| v)
        .sum()
}

/// Scrapes the metrics endpoint (panics on failure with the daemon log).
pub fn scrape(sbx: &Sandbox, daemon: &DaemonGuard) -> String {
    // The servers start a moment after the API socket: wait for the first answer.
    let mut got = http_get(sbx, METRICS, "/metrics");
    for _ in 0..50 {
        if got.is_ok() {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
        got = http_get(sbx, METRICS, "/metrics");
    }
    match got {
        Ok((200, body)) => body,
        other => panic!(
            "GET /metrics: {other:?}\n--- kldnetd log\n{}",
            kldnet_testkit::tail(&daemon.log(), 30)
        ),
    }
}

/// Polls `kldnet observe` until `pred` holds for its flows (the ring is read
/// asynchronously), up to 5 s; returns the last flows.
pub fn observe_until(sbx: &Sandbox, args: &[&str], pred: impl Fn(&[Value]) -> bool) -> Vec<Value> {
    let mut last = Vec::new();
    for _ in 0..50 {
        last = observe(sbx, args);
        if pred(&last) {
            return last;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    last
}
