// SPDX-License-Identifier: Apache-2.0
//! `kldnet policy trace` (live through the daemon, or `--offline` from config dirs) and
//! `kldnet bpf policy get ENDPOINT`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Args;
use kldnet_config::DEFAULT_CONFIG_DIRS;

use super::{EXIT_FAILURE, EXIT_OK, EXIT_UNREACHABLE, EXIT_USAGE, Output};
use crate::api::{self, Request, Response};
use crate::compile::policy::trace::{self, PolicyMapView, TraceRequest, TraceResult};

#[derive(Debug, Args)]
pub struct TraceArgs {
    /// Source: NAMESPACE/NAME of an endpoint, or an IP address.
    #[arg(long, conflicts_with = "from_labels")]
    pub from: Option<String>,
    /// Source by labels (KEY=VALUE, repeatable): the identity with exactly these labels.
    #[arg(long = "from-labels", num_args = 1..)]
    pub from_labels: Vec<String>,
    /// Namespace of --from-labels.
    #[arg(long = "from-namespace", default_value = "default")]
    pub from_namespace: String,
    /// Destination: NAMESPACE/NAME of an endpoint.
    #[arg(long, conflicts_with = "to_ip", required_unless_present = "to_ip")]
    pub to: Option<String>,
    /// Destination IP address.
    #[arg(long = "to-ip")]
    pub to_ip: Option<String>,
    /// Destination port and protocol: 8080/tcp, 53/udp, 9/sctp, icmp.
    #[arg(long, default_value = "80/tcp")]
    pub port: String,
    /// Evaluate a fresh compile of the config dirs instead of the daemon's maps.
    #[arg(long)]
    pub offline: bool,
    /// Config dir for --offline (repeatable). Default: /etc/kldnet then /run/kldnet.
    #[arg(long = "config-dir")]
    pub config_dirs: Vec<PathBuf>,
    /// Output format.
    #[arg(short = 'o', long = "output", value_enum, default_value_t = Output::Table)]
    pub output: Output,
}

/// Offline trace of a config: compile the dirs, trace on the compiled maps.
pub fn trace_offline(dirs: &[PathBuf], req: &TraceRequest) -> Result<TraceResult, String> {
    let (diags, compiled) = super::check::check_dirs(dirs);
    let compiled = match compiled {
        Some(c) if !diags.has_errors() => c,
        _ => return Err(format!("the configuration does not compile:\n{diags}")),
    };
    trace::trace(&compiled, &compiled.state, req)
}

pub fn run_trace(socket: &Path, a: TraceArgs) -> i32 {
    let (proto, port) = match trace::parse_port(&a.port) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("error: --port: {e}");
            return EXIT_USAGE;
        }
    };
    let req = TraceRequest {
        from: a.from.clone(),
        from_labels: a.from_labels.clone(),
        from_namespace: Some(a.from_namespace.clone()),
        to: a.to.clone().or(a.to_ip.clone()).unwrap_or_default(),
        proto,
        port,
    };
    let result = if a.offline {
        let dirs = if a.config_dirs.is_empty() {
            DEFAULT_CONFIG_DIRS.iter().map(PathBuf::from).collect()
        } else {
            a.config_dirs.clone()
        };
        trace_offline(&dirs, &req).map_err(|e| (e, EXIT_FAILURE))
    } else {
        match api::call(socket, &Request::PolicyTrace(req), Duration::from_secs(30)) {
            Ok(Response::PolicyTrace { trace }) => Ok(trace),
            Ok(Response::Error { message }) => Err((message, EXIT_FAILURE)),
            Ok(other) => Err((format!("unexpected answer: {other:?}"), EXIT_FAILURE)),
            Err(e @ api::ClientError::Unreachable { .. }) => Err((e.to_string(), EXIT_UNREACHABLE)),
            Err(e) => Err((e.to_string(), EXIT_FAILURE)),
        }
    };
    match result {
        Ok(t) => {
            match a.output {
                Output::Json => println!("{}", serde_json::to_string_pretty(&t).expect("json")),
                Output::Table => print_trace(&t),
            }
            if t.allowed { EXIT_OK } else { EXIT_FAILURE }
        }
        Err((e, code)) => {
            eprintln!("error: {e}");
            code
        }
    }
}

fn print_trace(t: &TraceResult) {
    println!(
        "{} (identity {} {}) -> {} (identity {} {}) {}/{}",
        t.from,
        t.from_identity,
        t.from_identity_labels,
        t.to,
        t.to_identity,
        t.to_identity_labels,
        t.port,
        t.protocol
    );
    for s in &t.steps {
        let verdict = match (&s.enforced, s.allowed) {
            (false, _) => "not enforced".to_string(),
            (true, true) => "ALLOWED".to_string(),
            (true, false) => format!("DENIED ({})", s.drop_reason.as_deref().unwrap_or("?")),
        };
        let rule = s
            .rule
            .as_ref()
            .map(|r| format!(" by {r} (rule {})", s.rule_id))
            .unwrap_or_default();
        println!(
            "  {:<7} at {}: {verdict}{rule}; {}",
            s.direction, s.endpoint, s.note
        );
        if let Some(e) = &s.entry {
            println!("          entry: {e} (policy set {})", s.policy_set);
        }
    }
    println!("verdict: {}", if t.allowed { "ALLOWED" } else { "DENIED" });
}

pub fn run_get(socket: &Path, endpoint: &str, output: Output) -> i32 {
    let req = Request::PolicyGet {
        endpoint: endpoint.to_string(),
    };
    match api::call(socket, &req, Duration::from_secs(30)) {
        Ok(Response::PolicyGet { policy }) => {
            match output {
                Output::Json => {
                    println!("{}", serde_json::to_string_pretty(&policy).expect("json"))
                }
                Output::Table => print_get(&policy),
            }
            EXIT_OK
        }
        Ok(Response::Error { message }) => {
            eprintln!("error: {message}");
            EXIT_FAILURE
        }
        Ok(other) => {
            eprintln!("error: unexpected answer from kldnetd: {other:?}");
            EXIT_FAILURE
        }
        Err(e @ api::ClientError::Unreachable { .. }) => {
            eprintln!("error: {e}");
            EXIT_UNREACHABLE
        }
        Err(e) => {
            eprintln!("error: {e}");
            EXIT_FAILURE
        }
    }
}

fn print_get(p: &PolicyMapView) {
    let dirs = match (p.ingress_enforced, p.egress_enforced) {
        (true, true) => "ingress+egress",
        (true, false) => "ingress",
        (false, true) => "egress",
        (false, false) => "none",
    };
    println!(
        "endpoint {} identity {} policy set {} enforcing {dirs}",
        p.endpoint, p.identity, p.policy_set
    );
    if !p.policies.is_empty() {
        println!("policies: {}", p.policies.join(", "));
    }
    if !p.shared_with.is_empty() {
        println!("set shared with: {}", p.shared_with.join(", "));
    }
    let mut rows = vec![[
        "DIRECTION".to_string(),
        "IDENTITY".into(),
        "PEER".into(),
        "PROTO".into(),
        "PORTS".into(),
        "ACTION".into(),
        "RULE".into(),
    ]];
    for e in &p.entries {
        rows.push([
            e.direction.clone(),
            e.identity.to_string(),
            e.peer.clone(),
            e.protocol.clone(),
            e.ports.clone(),
            e.action.clone(),
            e.rule
                .clone()
                .map_or(e.rule_id.to_string(), |r| format!("{r} ({})", e.rule_id)),
        ]);
    }
    let widths: Vec<usize> = (0..7)
        .map(|i| rows.iter().map(|r| r[i].len()).max().unwrap_or(0))
        .collect();
    for r in rows {
        let cells: Vec<String> = r
            .iter()
            .enumerate()
            .map(|(i, c)| format!("{c:<w$}", w = widths[i]))
            .collect();
        println!("{}", cells.join("  ").trim_end());
    }
}
