// SPDX-License-Identifier: Apache-2.0
//! Client commands: ask the daemon, print tables or JSON.

use std::path::Path;
use std::time::Duration;

use crate::api::{self, Request, Response, Status};

use super::{EXIT_FAILURE, EXIT_OK, EXIT_UNREACHABLE, Output};

fn ask(socket: &Path, req: Request) -> Result<Response, i32> {
    match api::call(socket, &req, Duration::from_secs(30)) {
        Ok(Response::Error { message }) => {
            eprintln!("error: {message}");
            Err(EXIT_FAILURE)
        }
        Ok(r) => Ok(r),
        Err(e @ api::ClientError::Unreachable { .. }) => {
            eprintln!("error: {e}");
            Err(EXIT_UNREACHABLE)
        }
        Err(e) => {
            eprintln!("error: {e}");
            Err(EXIT_FAILURE)
        }
    }
}

fn unexpected(r: Response) -> i32 {
    eprintln!("error: unexpected answer from kldnetd: {r:?}");
    EXIT_FAILURE
}

fn print_json<T: serde::Serialize>(v: &T) {
    println!("{}", serde_json::to_string_pretty(v).expect("serializable"));
}

/// Left-aligned columns, two spaces apart.
fn table(header: &[&str], rows: Vec<Vec<String>>) {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for r in &rows {
        for (i, c) in r.iter().enumerate() {
            widths[i] = widths[i].max(c.len());
        }
    }
    let line = |cells: Vec<String>| {
        let s: Vec<String> = cells
            .iter()
            .enumerate()
            .map(|(i, c)| format!("{c:<w$}", w = widths[i]))
            .collect();
        println!("{}", s.join("  ").trim_end());
    };
    line(header.iter().map(|s| s.to_string()).collect());
    for r in rows {
        line(r);
    }
}

pub fn status(socket: &Path, json: bool) -> i32 {
    match ask(socket, Request::Status) {
        Ok(Response::Status(s)) => {
            if json {
                print_json(&s);
            } else {
                print_status(&s);
            }
            if s.state == "running" {
                EXIT_OK
            } else {
                EXIT_FAILURE
            }
        }
        Ok(r) => unexpected(r),
        Err(code) => code,
    }
}

fn print_status(s: &Status) {
    println!("kldnetd {} on node {} (pid {})", s.version, s.node, s.pid);
    println!("State:          {}", s.state);
    println!(
        "Generation:     {} ({} reloads, {} failed)",
        s.generation, s.reloads, s.reload_failures
    );
    if let Some(r) = &s.last_reload {
        println!(
            "Last reload:    {} — {} in {:.1} ms",
            if r.ok { "ok" } else { "FAILED" },
            r.summary,
            r.duration_us as f64 / 1000.0
        );
        for d in &r.diagnostics {
            for line in d.lines() {
                println!("                {line}");
            }
        }
    }
    println!("Config dirs:    {}", s.config_dirs.join(", "));
    println!("BPF pins:       {}", s.bpf_pin_dir);
    println!(
        "Socket LB:      {}",
        s.cgroup
            .as_deref()
            .map_or("off".to_string(), |c| format!("cgroup {c}"))
    );
    let k = &s.kernel;
    println!(
        "Kernel:         {} (BTF {}, TCX {}, cgroup2 {}, bpffs {})",
        k.release,
        yes(k.btf),
        yes(k.tcx),
        yes(k.cgroup2),
        yes(k.bpffs)
    );
    for m in &k.missing {
        println!("                missing: {m}");
    }
    println!(
        "Objects:        {} endpoints local, {} remote; {} identities; {} services; {} policies",
        s.endpoints_local, s.endpoints_remote, s.identities, s.services, s.policies
    );
    println!("Encryption:     {}", s.encryption);
    println!("BGP:            {}", s.bgp);
    if let Some(f) = &s.flows {
        let listen = |a: &str| {
            if a.is_empty() {
                "off".to_string()
            } else {
                a.to_string()
            }
        };
        println!(
            "Flows:          {} ({} buffered of {}, {} decoded, {} lost); metrics {}, UI {}",
            if f.running { "running" } else { "NOT running" },
            f.buffered,
            f.capacity,
            f.events_decoded,
            f.events_lost,
            listen(&f.metrics),
            listen(&f.ui)
        );
        for e in &f.errors {
            println!("                {e}");
        }
    }
    println!("Programs:");
    if s.programs.is_empty() {
        println!("  (none attached)");
    }
    for p in &s.programs {
        println!("  {:<20} {:<28} {}", p.program, p.target, p.mode);
    }
    println!("Maps:");
    for m in &s.maps {
        let pct = if m.capacity == 0 {
            0.0
        } else {
            m.entries as f64 * 100.0 / m.capacity as f64
        };
        println!(
            "  {:<14} {:>8} / {:<8} ({pct:.1}%)",
            m.name, m.entries, m.capacity
        );
    }
}

fn yes(b: bool) -> &'static str {
    if b { "yes" } else { "no" }
}

pub fn reload(socket: &Path) -> i32 {
    match ask(socket, Request::Reload) {
        Ok(Response::Reload(r)) => {
            for d in &r.diagnostics {
                println!("{d}");
            }
            if r.ok {
                println!(
                    "reloaded: generation {}: {} ({:.1} ms)",
                    r.generation,
                    r.summary,
                    r.duration_us as f64 / 1000.0
                );
                EXIT_OK
            } else {
                println!(
                    "reload failed: {} (generation {} keeps serving)",
                    r.summary, r.generation
                );
                EXIT_FAILURE
            }
        }
        Ok(r) => unexpected(r),
        Err(code) => code,
    }
}

pub fn endpoints(socket: &Path, out: Output) -> i32 {
    match ask(socket, Request::Endpoints) {
        Ok(Response::Endpoints { endpoints }) => {
            if out == Output::Json {
                print_json(&endpoints);
            } else {
                let rows = endpoints
                    .iter()
                    .map(|e| {
                        vec![
                            format!("{}/{}", e.namespace, e.name),
                            e.node.clone(),
                            e.identity.to_string(),
                            e.addresses
                                .iter()
                                .map(|a| a.to_string())
                                .collect::<Vec<_>>()
                                .join(","),
                            match (&e.interface, e.ifindex) {
                                (Some(i), Some(x)) => format!("{i} ({x})"),
                                (Some(i), None) => format!("{i} (missing)"),
                                _ => "-".into(),
                            },
                            enforcement(e.local, e.ingress_enforced),
                            enforcement(e.local, e.egress_enforced),
                            if e.policies.is_empty() {
                                "-".into()
                            } else {
                                e.policies.join(",")
                            },
                            e.labels.join(","),
                        ]
                    })
                    .collect();
                table(
                    &[
                        "ENDPOINT",
                        "NODE",
                        "IDENTITY",
                        "ADDRESSES",
                        "INTERFACE",
                        "POLICY (ingress)",
                        "POLICY (egress)",
                        "POLICIES",
                        "LABELS",
                    ],
                    rows,
                );
            }
            EXIT_OK
        }
        Ok(r) => unexpected(r),
        Err(code) => code,
    }
}

/// Cilium's wording for an endpoint's policy enforcement; remote endpoints are enforced
/// on their own node.
fn enforcement(local: bool, enforced: bool) -> String {
    match (local, enforced) {
        (false, _) => "-".into(),
        (true, true) => "Enabled".into(),
        (true, false) => "Disabled".into(),
    }
}

pub fn identities(socket: &Path, out: Output) -> i32 {
    match ask(socket, Request::Identities) {
        Ok(Response::Identities { identities }) => {
            if out == Output::Json {
                print_json(&identities);
            } else {
                let rows = identities
                    .iter()
                    .map(|i| {
                        let labels: Vec<String> =
                            i.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
                        vec![
                            i.id.to_string(),
                            if i.namespace.is_empty() {
                                "-".into()
                            } else {
                                i.namespace.clone()
                            },
                            labels.join(","),
                            format!("{:?}", i.source).to_lowercase(),
                        ]
                    })
                    .collect();
                table(&["ID", "NAMESPACE", "LABELS", "SOURCE"], rows);
            }
            EXIT_OK
        }
        Ok(r) => unexpected(r),
        Err(code) => code,
    }
}

pub fn services(socket: &Path, out: Output) -> i32 {
    match ask(socket, Request::Services) {
        Ok(Response::Services { services }) => {
            if out == Output::Json {
                print_json(&services);
            } else {
                let rows = services
                    .iter()
                    .map(|s| {
                        let bes: Vec<String> = s
                            .backends
                            .iter()
                            .map(|b| format!("{} ({}, w={})", b.address, b.state, b.weight))
                            .collect();
                        vec![
                            format!("{}/{}", s.namespace, s.name),
                            s.service_type.clone(),
                            s.frontends.join(","),
                            if bes.is_empty() {
                                "(none)".into()
                            } else {
                                bes.join(", ")
                            },
                            s.balancing.clone(),
                        ]
                    })
                    .collect();
                table(
                    &["SERVICE", "TYPE", "FRONTENDS", "BACKENDS", "BALANCING"],
                    rows,
                );
            }
            EXIT_OK
        }
        Ok(r) => unexpected(r),
        Err(code) => code,
    }
}

pub fn map_dump(socket: &Path, map: &str, out: Output) -> i32 {
    match ask(
        socket,
        Request::MapDump {
            map: map.to_string(),
        },
    ) {
        Ok(Response::MapDump { entries }) => {
            if out == Output::Json {
                print_json(&entries);
            } else {
                table(
                    &["KEY", "VALUE"],
                    entries.into_iter().map(|e| vec![e.key, e.value]).collect(),
                );
            }
            EXIT_OK
        }
        Ok(r) => unexpected(r),
        Err(code) => code,
    }
}
