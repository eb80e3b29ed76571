// SPDX-License-Identifier: Apache-2.0
//! `kldnet observe`: Hubble's `hubble observe` for kldnet. Filters go to the daemon (only
//! matching flows cross the socket); this side prints them as compact lines, a table, or
//! Hubble's JSON (one object per line, exactly as the daemon sent it).

use std::io::Write;
use std::path::Path;

use clap::{Args, ValueEnum};

use super::{EXIT_FAILURE, EXIT_OK, EXIT_UNREACHABLE, EXIT_USAGE};
use crate::api::{self, ClientError};
use crate::flows::hubble::{self, Line};
use crate::flows::{Filter, FlowQuery};

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum)]
pub enum ObserveOutput {
    /// One readable line per flow.
    #[default]
    Compact,
    /// Hubble's JSON, one object per line.
    Json,
    /// Aligned columns.
    Table,
}

#[derive(Debug, Args)]
pub struct ObserveArgs {
    /// Show the last N matching flows (default 20; with --follow: none).
    #[arg(long)]
    pub last: Option<u64>,
    /// Keep running and show new flows as they happen.
    #[arg(short = 'f', long)]
    pub follow: bool,
    /// Only flows since a time: a duration ago (`30s`, `5m`, `2h`) or RFC 3339.
    #[arg(long)]
    pub since: Option<String>,
    /// Flows from or to this namespace (repeatable).
    #[arg(short = 'n', long)]
    pub namespace: Vec<String>,
    /// Flows from or to `[namespace/]name` (name prefix; namespace `default` if omitted).
    #[arg(long)]
    pub pod: Vec<String>,
    #[arg(long)]
    pub from_pod: Vec<String>,
    #[arg(long)]
    pub to_pod: Vec<String>,
    /// Flows from or to endpoints with these labels (`k=v[,k2=v2]`, `k` = key present).
    #[arg(short = 'l', long)]
    pub label: Vec<String>,
    #[arg(long)]
    pub from_label: Vec<String>,
    #[arg(long)]
    pub to_label: Vec<String>,
    /// Flows from or to this IP or CIDR.
    #[arg(long)]
    pub ip: Vec<String>,
    #[arg(long)]
    pub from_ip: Vec<String>,
    #[arg(long)]
    pub to_ip: Vec<String>,
    /// Flows with this source or destination port.
    #[arg(long)]
    pub port: Vec<u16>,
    #[arg(long)]
    pub to_port: Vec<u16>,
    /// tcp, udp, sctp, icmp.
    #[arg(long)]
    pub protocol: Vec<String>,
    /// FORWARDED, DROPPED, TRANSLATED, …
    #[arg(long)]
    pub verdict: Vec<String>,
    /// Drop reason (Hubble names: POLICY_DENIED, POLICY_DENY, SERVICE_BACKEND_NOT_FOUND, …).
    #[arg(long)]
    pub drop_reason_desc: Vec<String>,
    /// trace, drop, policy-verdict, l7, sock (`trace:to-endpoint` for a trace point).
    #[arg(short = 't', long = "type")]
    pub event_type: Vec<String>,
    /// Flows through this service (`namespace/name` or `name`).
    #[arg(long)]
    pub service: Vec<String>,
    /// Output format.
    #[arg(short = 'o', long = "output", value_enum, default_value_t = ObserveOutput::Compact)]
    pub output: ObserveOutput,
}

/// Parses `--since`: `90s`, `5m`, `2h`, `1d` ago, or an RFC 3339 time → ns since the epoch.
pub fn parse_since(s: &str, now_ns: u64) -> Result<u64, String> {
    if let Some(t) = hubble::parse_rfc3339(s) {
        return Ok(t);
    }
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("bad --since `{s}`: use 30s, 5m, 2h, 1d or an RFC 3339 time"))?;
    let secs = match unit {
        "s" | "" => n,
        "m" => n * 60,
        "h" => n * 3600,
        "d" => n * 86_400,
        "ms" => return Ok(now_ns.saturating_sub(n * 1_000_000)),
        _ => return Err(format!("bad unit in --since `{s}` (s, m, h, d)")),
    };
    Ok(now_ns.saturating_sub(secs * 1_000_000_000))
}

fn now_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

impl ObserveArgs {
    pub fn query(&self) -> Result<FlowQuery, String> {
        let since_unix_ns = self
            .since
            .as_deref()
            .map(|s| parse_since(s, now_ns()))
            .transpose()?;
        let q = FlowQuery {
            last: self.last,
            follow: self.follow,
            since_unix_ns,
            namespace: self.namespace.clone(),
            pod: self.pod.clone(),
            from_pod: self.from_pod.clone(),
            to_pod: self.to_pod.clone(),
            label: self.label.clone(),
            from_label: self.from_label.clone(),
            to_label: self.to_label.clone(),
            ip: self.ip.clone(),
            from_ip: self.from_ip.clone(),
            to_ip: self.to_ip.clone(),
            port: self.port.clone(),
            to_port: self.to_port.clone(),
            protocol: self.protocol.clone(),
            verdict: self.verdict.clone(),
            drop_reason_desc: self.drop_reason_desc.clone(),
            event_type: self.event_type.clone(),
            service: self.service.clone(),
        };
        // Same checks as the daemon, so a typo is a usage error before any connection.
        Filter::new(q.clone())?;
        Ok(q)
    }
}

pub fn run(socket: &Path, args: ObserveArgs) -> i32 {
    let q = match args.query() {
        Ok(q) => q,
        Err(e) => {
            eprintln!("error: {e}");
            return EXIT_USAGE;
        }
    };
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    let mut rows: Vec<Vec<String>> = Vec::new();
    let table = args.output == ObserveOutput::Table && !args.follow;
    let mut closed = false;
    let result = api::observe(socket, &q, |raw| {
        let ok = match args.output {
            ObserveOutput::Json => writeln!(out, "{raw}").is_ok(),
            _ => match serde_json::from_str::<Line>(raw) {
                Ok(line) if table => {
                    if let Some(r) = row(&line) {
                        rows.push(r);
                    }
                    true
                }
                Ok(line) => match &args.output {
                    ObserveOutput::Table => row(&line)
                        .map(|r| writeln!(out, "{}", r.join("  ")).is_ok())
                        .unwrap_or(true),
                    _ => writeln!(out, "{}", compact(&line)).is_ok(),
                },
                Err(_) => writeln!(out, "{raw}").is_ok(),
            },
        };
        let ok = ok && (!args.follow || out.flush().is_ok());
        closed = !ok;
        ok
    });
    if table {
        print_table(&mut out, rows);
    }
    let _ = out.flush();
    match result {
        Ok(()) => EXIT_OK,
        Err(_) if closed => EXIT_OK,
        Err(e @ ClientError::Unreachable { .. }) => {
            eprintln!("error: {e}");
            EXIT_UNREACHABLE
        }
        Err(e) => {
            eprintln!("error: {e}");
            EXIT_FAILURE
        }
    }
}

/// Prints the last `n` flows, compact (the demo's closing step).
pub fn print_last(socket: &Path, n: u64) -> i32 {
    let q = FlowQuery {
        last: Some(n),
        ..Default::default()
    };
    let r = api::observe(socket, &q, |raw| {
        if let Ok(line) = serde_json::from_str::<Line>(raw) {
            println!("{}", compact(&line));
        }
        true
    });
    match r {
        Ok(()) => EXIT_OK,
        Err(e) => {
            eprintln!("error: {e}");
            EXIT_FAILURE
        }
    }
}

fn who(ep: &hubble::Endpoint, ip: &str) -> String {
    if !ep.pod_name.is_empty() {
        format!("{}/{}", ep.namespace, ep.pod_name)
    } else if let Some(l) = ep.labels.iter().find(|l| l.starts_with("reserved:")) {
        format!("{ip} ({l})")
    } else {
        ip.to_string()
    }
}

fn ports(f: &hubble::Flow) -> (Option<u16>, Option<u16>) {
    match &f.l4 {
        Some(l4) => {
            if let Some(t) = &l4.tcp {
                (Some(t.source_port), Some(t.destination_port))
            } else if let Some(p) = l4.udp.as_ref().or(l4.sctp.as_ref()) {
                (Some(p.source_port), Some(p.destination_port))
            } else {
                (None, None)
            }
        }
        None => (None, None),
    }
}

fn with_port(s: String, p: Option<u16>) -> String {
    match p {
        Some(p) => format!("{s}:{p}"),
        None => s,
    }
}

/// `time: src:port -> dst:port (svc) point VERDICT (reason, summary) [policy]`.
pub fn compact(line: &Line) -> String {
    if let Some(l) = &line.lost_events {
        return format!(
            "{}: EVENTS LOST: {} events from {}",
            short_time(&line.time),
            l.num_events_lost,
            l.source
        );
    }
    let Some(f) = &line.flow else {
        return String::new();
    };
    let (sp, dp) = ports(f);
    let src = with_port(who(&f.source, &f.ip.source), sp);
    let dst = with_port(who(&f.destination, &f.ip.destination), dp);
    let id = |e: &hubble::Endpoint| format!("(ID:{})", e.identity);
    let arrow = if f.verdict == "DROPPED" {
        "-x"
    } else if f.is_reply {
        "<-"
    } else {
        "->"
    };
    let (a, b) = if f.is_reply && f.verdict != "DROPPED" {
        ((dst, id(&f.destination)), (src, id(&f.source)))
    } else {
        ((src, id(&f.source)), (dst, id(&f.destination)))
    };
    let svc = f
        .destination_service
        .as_ref()
        .or(f.source_service.as_ref())
        .map(|s| format!(" (svc {}/{})", s.namespace, s.name))
        .unwrap_or_default();
    let point = if f.trace_observation_point.is_empty() {
        match f.event_type.event_type {
            hubble::MSG_DROP => "drop".to_string(),
            hubble::MSG_POLICY_VERDICT => "policy-verdict".to_string(),
            _ => f.flow_type.to_lowercase(),
        }
    } else {
        f.trace_observation_point.to_lowercase().replace('_', "-")
    };
    let mut detail = Vec::new();
    if !f.drop_reason_desc.is_empty() {
        detail.push(f.drop_reason_desc.clone());
    }
    detail.push(f.summary.clone());
    let policies: Vec<String> = f
        .ingress_denied_by
        .iter()
        .chain(&f.egress_denied_by)
        .map(|p| format!(" [denied by policy {}/{}]", p.namespace, p.name))
        .chain(
            f.ingress_allowed_by
                .iter()
                .chain(&f.egress_allowed_by)
                .map(|p| format!(" [allowed by policy {}/{}]", p.namespace, p.name)),
        )
        .collect();
    format!(
        "{}: {} {} {} {} {}{} {} {} ({}){}",
        short_time(&f.time),
        a.0,
        a.1,
        arrow,
        b.0,
        b.1,
        svc,
        point,
        f.verdict,
        detail.join(", "),
        policies.concat()
    )
}

/// `2024-01-02T15:04:05.123456789Z` → `2024-01-02T15:04:05.123Z`.
fn short_time(t: &str) -> String {
    match t.split_once('.') {
        Some((a, b)) => format!("{a}.{}Z", &b[..b.len().min(3)]),
        None => t.to_string(),
    }
}

const HEADER: [&str; 6] = [
    "TIMESTAMP",
    "SOURCE",
    "DESTINATION",
    "TYPE",
    "VERDICT",
    "SUMMARY",
];

fn row(line: &Line) -> Option<Vec<String>> {
    let f = line.flow.as_ref()?;
    let (sp, dp) = ports(f);
    Some(vec![
        short_time(&f.time),
        with_port(who(&f.source, &f.ip.source), sp),
        with_port(who(&f.destination, &f.ip.destination), dp),
        if f.trace_observation_point.is_empty() {
            if f.event_type.event_type == hubble::MSG_DROP {
                "drop".into()
            } else {
                f.flow_type.to_lowercase()
            }
        } else {
            f.trace_observation_point.to_lowercase().replace('_', "-")
        },
        if f.drop_reason_desc.is_empty() {
            f.verdict.clone()
        } else {
            format!("{} {}", f.verdict, f.drop_reason_desc)
        },
        f.summary.clone(),
    ])
}

fn print_table(out: &mut impl Write, rows: Vec<Vec<String>>) {
    let mut widths: Vec<usize> = HEADER.iter().map(|h| h.len()).collect();
    for r in &rows {
        for (i, c) in r.iter().enumerate() {
            widths[i] = widths[i].max(c.len());
        }
    }
    let mut line = |cells: Vec<String>| {
        let s: Vec<String> = cells
            .iter()
            .enumerate()
            .map(|(i, c)| format!("{c:<w$}", w = widths[i]))
            .collect();
        writeln!(out, "{}", s.join("  ").trim_end()).is_ok()
    };
    if !line(HEADER.iter().map(|s| s.to_string()).collect()) {
        return;
    }
    for r in rows {
        if !line(r) {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn since_accepts_durations_and_times() {
        let now = 10_000 * 1_000_000_000;
        assert_eq!(parse_since("5m", now), Ok(now - 300 * 1_000_000_000));
        assert_eq!(parse_since("90s", now), Ok(now - 90 * 1_000_000_000));
        assert_eq!(parse_since("1970-01-01T00:00:01Z", now), Ok(1_000_000_000));
        assert!(parse_since("5 parsecs", now).is_err());
    }
}
