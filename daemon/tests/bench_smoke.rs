// SPDX-License-Identifier: Apache-2.0
//! `kldnet bench services --quick` runs end to end (root only): every load balancer gets
//! programmed, traffic flows through each, and every table is printed.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

fn have(tool: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(tool).is_file()))
}

#[test]
fn bench_services_quick_prints_every_table() {
    if kldnet_testkit::skip_unless_root("bench_services_quick_prints_every_table") {
        return;
    }
    let missing: Vec<&str> = [
        "iptables-legacy-restore",
        "iptables-nft-restore",
        "nft",
        "iperf3",
    ]
    .into_iter()
    .filter(|t| !have(t))
    .collect();
    if !missing.is_empty() {
        eprintln!(
            "skipping: missing {} (apt-get install iptables nftables iperf3)",
            missing.join(", ")
        );
        return;
    }
    let started = Instant::now();
    let out = Command::new(Path::new(env!("CARGO_BIN_EXE_kldnet")))
        .args(["bench", "services", "--quick"])
        .output()
        .expect("run kldnet bench services --quick");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "exit {}\nstdout:\n{stdout}\nstderr:\n{stderr}",
        out.status
    );
    for header in [
        "- machine: ",
        "### (a) Program all services",
        "### (a) Ratios",
        "### (b) Add one service on top of N",
        "### (b) Ratios",
        "### (c) connect() to the last service vs direct to its backend",
        "### (d) tc per-packet LB cost",
        "### (e) TCP throughput",
        "| services | iptables-legacy |",
    ] {
        assert!(stdout.contains(header), "missing {header:?} in:\n{stdout}");
    }
    // Every path of (c) at both quick sizes.
    for path in [
        "iptables-legacy",
        "iptables-nft",
        "nftables vmap",
        "kldnet socket LB",
        "kldnet tc per-packet LB",
    ] {
        let rows = stdout
            .lines()
            .filter(|l| l.starts_with("| 100 ") || l.starts_with("| 1000 "))
            .filter(|l| l.contains(path))
            .count();
        assert_eq!(
            rows, 2,
            "expected a (c) row for {path} at 100 and 1000:\n{stdout}"
        );
    }
    assert!(
        started.elapsed() < Duration::from_secs(120),
        "took {:?}",
        started.elapsed()
    );
}

/// `kldnet bench flows --connections`: both settings run through a real daemon, events on
/// are decoded (3 per connection: the client's new flow, the translated flow at the
/// server, the policy verdict) and events off really are off.
#[test]
fn bench_flows_connections_measures_events_on_and_off() {
    if kldnet_testkit::skip_unless_root("bench_flows_connections_measures_events_on_and_off") {
        return;
    }
    let out = Command::new(Path::new(env!("CARGO_BIN_EXE_kldnet")))
        .args([
            "bench",
            "flows",
            "--events",
            "20000",
            "--connections",
            "300",
            "--connection-rounds",
            "1",
        ])
        .output()
        .expect("run kldnet bench flows");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "exit {}\nstdout:\n{stdout}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let decoded = |setting: &str| -> u64 {
        let line = stdout
            .lines()
            .find(|l| l.trim_start().starts_with(&format!("events {setting} ")))
            .unwrap_or_else(|| panic!("no events {setting} row:\n{stdout}"));
        // "events on   19779 conn/s   9060 events decoded  0 timeouts"
        let words: Vec<&str> = line.split_whitespace().collect();
        let at = words
            .iter()
            .position(|w| *w == "decoded")
            .expect("decoded column");
        words[at - 2].parse().expect("decoded count")
    };
    let (on, off) = (decoded("on"), decoded("off"));
    assert!(
        on >= 320,
        "events on: {on} decoded for 320 connections\n{stdout}"
    );
    assert_eq!(off, 0, "events off still decoded events\n{stdout}");
    assert!(stdout.contains("median: events on"), "{stdout}");
}
