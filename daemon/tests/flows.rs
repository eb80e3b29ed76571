// SPDX-License-Identifier: Apache-2.0
//! End-to-end tests of flow observability (issue 6): `kldnet observe` shows forwarded and
//! dropped connections with names, verdicts and drop reasons; its filters select exactly
//! the right flows; Prometheus metrics move by the right amounts and pass `promtool check
//! metrics`; series of deleted endpoints go; a flooded ring buffer reports lost events.
//!
//! The sandbox (see `flows_common`): VM clients `vm1`, container `c1`, VM backends
//! `b1..b3` behind the `web` service, and `empty`, a service without backends (its packets
//! are dropped with SERVICE_BACKEND_NOT_FOUND, Cilium's DROP_NO_SERVICE). Needs root;
//! skips otherwise. Run: `cargo test -p kldnet --test flows -- --test-threads=2`.

mod common;
mod flows_common;

use std::collections::BTreeSet;
use std::time::Duration;

use anyhow::Result;
use common::*;
use flows_common::*;
use kldnet_testkit::skip_unless_root;
use serde_json::Value;

fn uuids(flows: &[Value]) -> BTreeSet<String> {
    flows
        .iter()
        .map(|f| f["flow"]["uuid"].as_str().unwrap_or("").to_string())
        .collect()
}

/// Checks that `kldnet observe ARGS` returns exactly the flows of `all` that `pred` picks.
fn check_filter(
    sbx: &kldnet_testkit::Sandbox,
    all: &[Value],
    args: &[&str],
    pred: impl Fn(&Value) -> bool,
    failures: &mut Vec<String>,
) -> usize {
    let mut a = vec!["--last", "100000"];
    a.extend_from_slice(args);
    let got = observe(sbx, &a);
    let want: Vec<Value> = all.iter().filter(|f| pred(f)).cloned().collect();
    // Flows that arrived after `all` was taken are not in `all`: compare on its uuids.
    let known = uuids(all);
    let got_known: Vec<Value> = got
        .into_iter()
        .filter(|f| known.contains(f["flow"]["uuid"].as_str().unwrap_or("")))
        .collect();
    if uuids(&got_known) != uuids(&want) {
        failures.push(format!(
            "observe {args:?}: expected {} flows, got {}\n expected:\n{}\n got:\n{}",
            want.len(),
            got_known.len(),
            brief(&want),
            brief(&got_known)
        ));
    }
    want.len()
}

#[test]
fn observe_names_verdicts_and_filters() -> Result<()> {
    if skip_unless_root("observe_names_verdicts_and_filters") {
        return Ok(());
    }
    let (sbx, _srv, daemon) = flows_sandbox("flows-observe")?;
    let started_ns = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_nanos() as u64;
    // Allowed: vm1 → web over TCP and UDP (per-packet LB), denied: vm1 → empty.
    let tcp_ok = tcp_shots(
        &sbx,
        "vm1",
        &format!("{WEB_VIP}:80"),
        6,
        Duration::from_secs(2),
    )?;
    let udp_ok = udp_shots(&sbx, "vm1", &format!("{WEB_VIP}:53"), 3)?;
    let udp_drops = 4;
    udp_shots(&sbx, "vm1", &format!("{EMPTY_VIP}:53"), udp_drops)?;
    tcp_shots(
        &sbx,
        "vm1",
        &format!("{EMPTY_VIP}:80"),
        1,
        Duration::from_millis(300),
    )?;
    assert_eq!(
        (tcp_ok, udp_ok),
        (6, 3),
        "traffic to web must work\n{}\n{}",
        common::lb::lb_dump(&sbx),
        kldnet_testkit::tail(&daemon.log(), 30)
    );

    let all = observe_until(&sbx, &["--last", "100000"], |f| {
        f.iter()
            .filter(|f| f["flow"]["verdict"] == "DROPPED")
            .count()
            > udp_drops
            && f.iter()
                .any(|f| f["flow"]["l4"]["UDP"].is_object() && f["flow"]["verdict"] == "FORWARDED")
    });
    let show = || brief(&all);

    // Forwarded: vm1 → a web backend through the service, named on both sides.
    let fwd = all
        .iter()
        .find(|f| {
            let fl = &f["flow"];
            fl["verdict"] == "FORWARDED"
                && pod(f, "source") == "default/vm1"
                && pod(f, "destination").starts_with("default/b")
                && fl["destination_service"]["name"] == "web"
                && fl["l4"]["TCP"]["destination_port"] == TCP_PORT
                && fl["is_reply"] == false
        })
        .unwrap_or_else(|| {
            panic!(
                "no FORWARDED vm1 → web backend flow with destination_service web:\n{}\n--- log\n{}",
                show(),
                kldnet_testkit::tail(&daemon.log(), 20)
            )
        });
    let fl = &fwd["flow"];
    assert_eq!(fl["Type"], "L3_L4", "{fwd}");
    assert_eq!(fl["node_name"], "node-a", "{fwd}");
    assert!(
        fl["source"]["labels"]
            .as_array()
            .is_some_and(|l| l.iter().any(|l| l == "k8s:app=vmclient")),
        "source labels: {fwd}"
    );
    assert!(
        fl["destination"]["labels"]
            .as_array()
            .is_some_and(|l| l.iter().any(|l| l == "k8s:app=web")),
        "destination labels: {fwd}"
    );
    assert!(
        fl["source"]["identity"].as_u64().unwrap_or(0) >= 256,
        "{fwd}"
    );
    assert!(
        fl["time"].as_str().is_some_and(|t| t.ends_with('Z')),
        "{fwd}"
    );
    assert!(
        ["EGRESS", "INGRESS"].contains(&fl["traffic_direction"].as_str().unwrap_or("")),
        "{fwd}"
    );
    // The new connection's first packet carries SYN.
    assert!(
        all.iter()
            .any(|f| pod(f, "source") == "default/vm1"
                && f["flow"]["l4"]["TCP"]["flags"]["SYN"] == true),
        "a SYN from vm1:\n{}",
        show()
    );
    // Replies share their connection's conntrack entry and its report interval, so the
    // datapath reports them only after KLD_EVENT_INTERVAL_SEC; when one is there, it is
    // marked and names the service it comes from.
    for r in all.iter().filter(|f| f["flow"]["is_reply"] == true) {
        assert!(
            pod(r, "destination") == "default/vm1" || pod(r, "source") == "default/vm1",
            "{r}"
        );
    }

    // Dropped: no backend, Hubble's reason name and number, the service named.
    let drops: Vec<&Value> = all
        .iter()
        .filter(|f| f["flow"]["verdict"] == "DROPPED")
        .collect();
    assert!(
        drops.len() > udp_drops,
        "expected ≥ {} drops:\n{}",
        udp_drops + 1,
        show()
    );
    for d in &drops {
        let fl = &d["flow"];
        assert_eq!(fl["drop_reason_desc"], "SERVICE_BACKEND_NOT_FOUND", "{d}");
        assert_eq!(fl["drop_reason"], 158, "{d}");
        assert_eq!(pod(d, "source"), "default/vm1", "{d}");
        assert_eq!(fl["destination_service"]["name"], "empty", "{d}");
        assert_eq!(fl["IP"]["destination"], EMPTY_VIP, "{d}");
        assert_eq!(fl["event_type"]["type"], 1, "{d}");
    }

    // Filters select exactly the right flows.
    let mut failures = Vec::new();
    let s = &sbx;
    let n = check_filter(
        s,
        &all,
        &["--verdict", "DROPPED"],
        |f| f["flow"]["verdict"] == "DROPPED",
        &mut failures,
    );
    assert!(n > 0);
    check_filter(
        s,
        &all,
        &["--verdict", "FORWARDED"],
        |f| f["flow"]["verdict"] == "FORWARDED",
        &mut failures,
    );
    check_filter(
        s,
        &all,
        &["--drop-reason-desc", "NO_SERVICE"],
        |f| f["flow"]["drop_reason"] == 158,
        &mut failures,
    );
    check_filter(
        s,
        &all,
        &["--type", "drop"],
        |f| f["flow"]["event_type"]["type"] == 1,
        &mut failures,
    );
    check_filter(
        s,
        &all,
        &["--protocol", "udp"],
        |f| f["flow"]["l4"]["UDP"].is_object(),
        &mut failures,
    );
    check_filter(
        s,
        &all,
        &["--protocol", "tcp", "--verdict", "DROPPED"],
        |f| f["flow"]["l4"]["TCP"].is_object() && f["flow"]["verdict"] == "DROPPED",
        &mut failures,
    );
    check_filter(
        s,
        &all,
        &["--from-pod", "default/vm1"],
        |f| pod(f, "source") == "default/vm1",
        &mut failures,
    );
    check_filter(
        s,
        &all,
        &["--to-pod", "default/b1"],
        |f| pod(f, "destination") == "default/b1",
        &mut failures,
    );
    check_filter(
        s,
        &all,
        &["--pod", "default/b2"],
        |f| pod(f, "source") == "default/b2" || pod(f, "destination") == "default/b2",
        &mut failures,
    );
    check_filter(
        s,
        &all,
        &["--namespace", "default"],
        |f| {
            f["flow"]["source"]["namespace"] == "default"
                || f["flow"]["destination"]["namespace"] == "default"
        },
        &mut failures,
    );
    check_filter(s, &all, &["-n", "production"], |_| false, &mut failures);
    check_filter(
        s,
        &all,
        &["--label", "app=web"],
        |f| {
            let has = |side: &str| {
                f["flow"][side]["labels"]
                    .as_array()
                    .is_some_and(|l| l.iter().any(|l| l == "k8s:app=web"))
            };
            has("source") || has("destination")
        },
        &mut failures,
    );
    check_filter(
        s,
        &all,
        &["--to-ip", EMPTY_VIP],
        |f| f["flow"]["IP"]["destination"] == EMPTY_VIP,
        &mut failures,
    );
    check_filter(
        s,
        &all,
        &["--ip", "10.244.1.21/32"],
        |f| {
            f["flow"]["IP"]["source"] == "10.244.1.21"
                || f["flow"]["IP"]["destination"] == "10.244.1.21"
        },
        &mut failures,
    );
    check_filter(
        s,
        &all,
        &["--to-port", "5353"],
        |f| f["flow"]["l4"]["UDP"]["destination_port"] == 5353,
        &mut failures,
    );
    check_filter(
        s,
        &all,
        &["--service", "default/empty"],
        |f| {
            f["flow"]["destination_service"]["name"] == "empty"
                || f["flow"]["source_service"]["name"] == "empty"
        },
        &mut failures,
    );
    check_filter(
        s,
        &all,
        &["--from-label", "app=vmclient", "--to-port", "8080"],
        |f| pod(f, "source") == "default/vm1" && f["flow"]["l4"]["TCP"]["destination_port"] == 8080,
        &mut failures,
    );
    let since = hubble_time(started_ns);
    check_filter(s, &all, &["--since", &since], |_| true, &mut failures);
    check_filter(
        s,
        &all,
        &["--since", "2099-01-01T00:00:00Z"],
        |_| false,
        &mut failures,
    );
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));

    // --last N: the newest N, oldest first.
    let last3 = observe(&sbx, &["--last", "3"]);
    assert_eq!(last3.len(), 3, "--last 3:\n{}", brief(&last3));
    let newest = observe(&sbx, &["--last", "100000"]);
    let tail: Vec<Value> = newest[newest.len() - 3..].to_vec();
    assert_eq!(
        uuids(&last3),
        uuids(&tail),
        "--last 3 must be the newest three"
    );
    // Default: the last 20.
    assert_eq!(observe(&sbx, &[]).len(), 20.min(newest.len()));

    // Bad filter values are usage errors.
    let bad = cli(&sbx, &["observe", "--verdict", "SMILED"]);
    assert_eq!(bad.code, 2, "{bad}");
    assert!(bad.stderr.contains("SMILED"), "{bad}");

    // Compact and table output name the flows too.
    let compact = cli(&sbx, &["observe", "--last", "1000", "--verdict", "DROPPED"]);
    assert!(
        compact.stdout.contains("default/vm1")
            && compact.stdout.contains("SERVICE_BACKEND_NOT_FOUND")
            && compact.stdout.contains("DROPPED"),
        "{compact}"
    );
    let table = cli(&sbx, &["observe", "--last", "5", "-o", "table"]);
    assert!(table.stdout.starts_with("TIMESTAMP"), "{table}");
    assert_eq!(table.stdout.lines().count(), 6, "{table}");
    println!(
        "{}",
        compact
            .stdout
            .lines()
            .take(5)
            .collect::<Vec<_>>()
            .join("\n")
    );
    Ok(())
}

fn hubble_time(unix_ns: u64) -> String {
    kldnet::flows::hubble::rfc3339(unix_ns)
}

#[test]
fn follow_streams_new_flows_with_daemon_side_filters() -> Result<()> {
    if skip_unless_root("follow_streams_new_flows_with_daemon_side_filters") {
        return Ok(());
    }
    let (sbx, _srv, _daemon) = flows_sandbox("flows-follow")?;
    let mut child = sbx.spawn({
        let mut c = std::process::Command::new(kldnet());
        c.arg("--run-dir").arg(sbx.run_dir()).args([
            "observe",
            "-f",
            "--verdict",
            "DROPPED",
            "-o",
            "json",
        ]);
        c
    })?;
    std::thread::sleep(Duration::from_millis(300));
    udp_shots(&sbx, "vm1", &format!("{WEB_VIP}:53"), 2)?;
    udp_shots(&sbx, "vm1", &format!("{EMPTY_VIP}:53"), 3)?;
    let got = poll(Duration::from_secs(5), || {
        let lines: Vec<String> = child.stdout().lines().map(String::from).collect();
        (lines.len() >= 3).then_some(lines)
    });
    std::thread::sleep(Duration::from_millis(300));
    let lines: Vec<String> = child.stdout().lines().map(String::from).collect();
    let _ = child.terminate();
    assert!(got.is_some(), "follow printed {lines:?}");
    assert_eq!(lines.len(), 3, "exactly the three drops: {lines:?}");
    for l in &lines {
        let v: Value = serde_json::from_str(l)?;
        assert_eq!(v["flow"]["verdict"], "DROPPED", "{l}");
    }
    Ok(())
}

#[test]
fn metrics_count_flows_and_pass_promtool() -> Result<()> {
    if skip_unless_root("metrics_count_flows_and_pass_promtool") {
        return Ok(());
    }
    let (sbx, _srv, daemon) = flows_sandbox("flows-metrics")?;
    udp_shots(&sbx, "vm1", &format!("{WEB_VIP}:53"), 1)?;
    let before = scrape(&sbx, &daemon);
    let drops = |t: &str| {
        metric_sum(
            t,
            "hubble_drop_total",
            &[("reason", "SERVICE_BACKEND_NOT_FOUND"), ("protocol", "UDP")],
        )
    };
    let processed_drop = |t: &str| {
        metric_sum(
            t,
            "hubble_flows_processed_total",
            &[("type", "Drop"), ("verdict", "DROPPED")],
        )
    };
    // Exactly 5 datagrams to a service without backends: 5 drop events.
    udp_shots(&sbx, "vm1", &format!("{EMPTY_VIP}:53"), 5)?;
    let after = poll(Duration::from_secs(5), || {
        let t = scrape(&sbx, &daemon);
        (drops(&t) >= drops(&before) + 5.0).then_some(t)
    })
    .map(|(t, _)| t)
    .unwrap_or_else(|| scrape(&sbx, &daemon));
    assert_eq!(
        drops(&after) - drops(&before),
        5.0,
        "hubble_drop_total delta\n{after}"
    );
    assert_eq!(
        processed_drop(&after) - processed_drop(&before),
        5.0,
        "hubble_flows_processed_total{{type=Drop}} delta"
    );
    // One new TCP connection: one SYN counted, one port-distribution sample for 8080.
    let syn = |t: &str| metric_sum(t, "hubble_tcp_flags_total", &[("flag", "SYN")]);
    let port = |t: &str| {
        metric_sum(
            t,
            "hubble_port_distribution_total",
            &[("protocol", "TCP"), ("port", "8080")],
        )
    };
    let base = scrape(&sbx, &daemon);
    assert_eq!(
        tcp_shots(
            &sbx,
            "vm1",
            &format!("{WEB_VIP}:80"),
            1,
            Duration::from_secs(2)
        )?,
        1
    );
    let t = poll(Duration::from_secs(5), || {
        let t = scrape(&sbx, &daemon);
        (syn(&t) > syn(&base)).then_some(t)
    })
    .map(|(t, _)| t)
    .unwrap_or_default();
    // The SYN is seen leaving vm1 and arriving at the backend: one event at each hook.
    assert!(syn(&t) - syn(&base) >= 1.0, "SYN counted\n{t}");
    assert!(port(&t) - port(&base) >= 1.0, "port 8080 counted\n{t}");
    assert!(
        t.contains("source=\"default/vm1\""),
        "flows carry the source context\n{t}"
    );

    // kldnet_* from status.
    let st = status(&sbx);
    assert_eq!(
        metric_sum(&t, "kldnet_config_generation", &[]),
        st["generation"].as_f64().unwrap_or(-1.0)
    );
    assert!(metric_sum(&t, "kldnet_reloads_total", &[]) >= 1.0, "{t}");
    assert!(
        metric_sum(&t, "kldnet_map_capacity", &[("map", "kld_lb4_svc")]) > 0.0,
        "{t}"
    );
    assert!(
        t.contains("kldnet_flow_events_lost_total{source=\"ringbuf\"}"),
        "{t}"
    );
    assert!(metric_sum(&t, "kldnet_flow_events_total", &[]) > 0.0, "{t}");

    // promtool accepts the exposition.
    promtool_check(&t);

    // Deleting an endpoint removes its series at the next reload.
    let eps: String = common::lb::EPS
        .iter()
        .filter(|e| e.name != "vm1")
        .map(|e| {
            format!(
                "[[endpoint]]\nname = \"{}\"\ninterface = \"{}\"\naddresses = [\"{}\"]\nlabels = {}\n\n",
                e.name, e.ifname, e.addr, e.labels
            )
        })
        .collect();
    sbx.write_config("endpoints.toml", &eps)?;
    let r = reload(&sbx);
    assert_eq!(r.code, 0, "{r}");
    let gone = scrape(&sbx, &daemon);
    assert!(
        !gone.contains("\"default/vm1\""),
        "series of the deleted endpoint default/vm1 must go:\n{gone}"
    );
    Ok(())
}

fn promtool_check(text: &str) {
    use std::io::Write;
    let Ok(mut child) = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
    else {
        assert!(
            std::env::var_os("CI").is_none(),
            "promtool missing in CI (Debian package prometheus; .ci/run installs it)"
        );
        eprintln!("skipping promtool check: promtool not installed (apt-get install prometheus)");
        return;
    };
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(text.as_bytes())
        .expect("write to promtool");
    let out = child.wait_with_output().expect("promtool");
    assert!(
        out.status.success(),
        "promtool check metrics failed:\n{}{}\n--- exposition\n{text}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn flooded_ring_buffer_reports_lost_events() -> Result<()> {
    if skip_unless_root("flooded_ring_buffer_reports_lost_events") {
        return Ok(());
    }
    let (sbx, _srv, daemon) = flows_sandbox("flows-lost")?;
    let socket = sbx.socket_path();
    // A follower sees the loss as Hubble's lost_events record.
    let mut follower = sbx.spawn({
        let mut c = std::process::Command::new(kldnet());
        c.arg("--run-dir").arg(sbx.run_dir()).args([
            "observe",
            "-f",
            "--verdict",
            "DROPPED",
            "-o",
            "json",
        ]);
        c
    })?;
    let pause = |paused: bool| {
        kldnet::api::call(
            &socket,
            &kldnet::api::Request::FlowsReader { paused },
            Duration::from_secs(5),
        )
    };
    match pause(true)? {
        kldnet::api::Response::Flows(s) => assert!(s.reader_paused),
        other => panic!("pause: {other:?}"),
    }
    let lost_before = status(&sbx)["flows"]["events_lost"].as_u64().unwrap_or(0);
    // 1 MiB ring, 88 bytes per record: ~11.9k events fit. 16k new UDP flows make ≥ 32k.
    let b1 = "10.244.1.21";
    sbx.run_in_netns(&netns(&sbx, "vm1"), move || -> Result<()> {
        let s = std::net::UdpSocket::bind("0.0.0.0:0")?;
        for port in 0..16_000u16 {
            s.send_to(b"x", (b1, 10_000 + port))?;
        }
        Ok(())
    })??;
    let lost = poll(Duration::from_secs(5), || {
        let n = status(&sbx)["flows"]["events_lost"].as_u64().unwrap_or(0);
        (n > lost_before).then_some(n)
    });
    let counters = lb_counter_lost(&sbx);
    pause(false)?;
    let Some((lost, _)) = lost else {
        panic!(
            "events_lost stayed at {lost_before} (kld_counters lost = {counters})\n{}",
            kldnet_testkit::tail(&daemon.log(), 20)
        );
    };
    println!("flooded: {lost} events lost (kld_counters[EVENTS_LOST] = {counters})");
    assert!(lost - lost_before >= 10_000, "lost {lost} of ≥ 32k events");
    let t = scrape(&sbx, &daemon);
    assert!(
        metric_sum(
            &t,
            "kldnet_flow_events_lost_total",
            &[("source", "ringbuf")]
        ) >= lost as f64,
        "lost events metric\n{t}"
    );
    assert!(
        metric_sum(
            &t,
            "kldnet_datapath_events_total",
            &[("counter", "events_lost")]
        ) >= lost as f64
    );
    let saw = poll(Duration::from_secs(3), || {
        follower
            .stdout()
            .lines()
            .any(|l| l.contains("\"lost_events\"") && l.contains("PERF_EVENT_RING_BUFFER"))
            .then_some(())
    });
    let out = follower.stdout();
    let _ = follower.terminate();
    assert!(
        saw.is_some(),
        "the follower must hear about the loss: {out}"
    );
    // The reader resumed: new flows show up again.
    udp_shots(&sbx, "vm1", &format!("{EMPTY_VIP}:53"), 1)?;
    let again = observe_until(&sbx, &["--last", "5", "--verdict", "DROPPED"], |f| {
        !f.is_empty()
    });
    assert!(!again.is_empty(), "flows after resume");
    Ok(())
}

/// kld_counters[CTR_EVENTS_LOST] read straight from the pinned map.
fn lb_counter_lost(sbx: &kldnet_testkit::Sandbox) -> u64 {
    common::lb::counter(sbx, kldnet_bpf::abi::CTR_EVENTS_LOST).unwrap_or(0)
}

/// Policy drops carry Hubble's reasons and, for a deny rule, the policy's name. Skips
/// (with a message) while the datapath reports no policy drops.
#[test]
fn policy_drops_name_the_policy() -> Result<()> {
    if skip_unless_root("policy_drops_name_the_policy") {
        return Ok(());
    }
    let (sbx, _srv, daemon) = flows_sandbox("flows-policy")?;
    sbx.write_config(
        "policies.toml",
        "[[policy]]\nname = \"web-ingress\"\nselector = { app = \"web\" }\n\
         [[policy.ingress]]\nfrom = [{ selector = { app = \"client\" } }]\nports = [{ port = 8080 }]\n\
         [[policy.ingress_deny]]\nfrom = [{ selector = { app = \"vmclient\" } }]\n\
         ports = [{ port = 5353, protocol = \"udp\" }]\n",
    )?;
    let r = reload(&sbx);
    assert_eq!(r.code, 0, "{r}");
    let b1 = common::lb::addr_of("b1");
    tcp_shots(
        &sbx,
        "vm1",
        &format!("{b1}:{TCP_PORT}"),
        1,
        Duration::from_millis(500),
    )?;
    udp_shots(&sbx, "vm1", &format!("{b1}:{UDP_PORT}"), 2)?;
    let policy_drops = |f: &[Value]| -> Vec<Value> {
        f.iter()
            .filter(|f| {
                ["POLICY_DENIED", "POLICY_DENY"]
                    .contains(&f["flow"]["drop_reason_desc"].as_str().unwrap_or(""))
            })
            .cloned()
            .collect()
    };
    let all = observe_until(&sbx, &["--last", "10000"], |f| {
        policy_drops(f)
            .iter()
            .any(|d| d["flow"]["drop_reason_desc"] == "POLICY_DENY")
    });
    let drops = policy_drops(&all);
    if drops.is_empty() {
        eprintln!(
            "skipping policy_drops_name_the_policy: the datapath reported no policy drop yet \
             (policy enforcement not in the BPF objects)\n{}",
            brief(&all)
        );
        return Ok(());
    }
    for d in &drops {
        let f = &d["flow"];
        assert_eq!(pod(d, "source"), "default/vm1", "{d}");
        assert_eq!(pod(d, "destination"), "default/b1", "{d}");
        assert_eq!(f["verdict"], "DROPPED", "{d}");
        assert_eq!(f["traffic_direction"], "INGRESS", "{d}");
        if f["drop_reason_desc"] == "POLICY_DENY" {
            assert_eq!(f["drop_reason"], 181, "{d}");
            assert_eq!(f["ingress_denied_by"][0]["name"], "web-ingress", "{d}");
            assert_eq!(f["ingress_denied_by"][0]["namespace"], "default", "{d}");
        } else {
            // Default deny: no rule matched; the policies selecting b1 are named.
            assert_eq!(f["drop_reason"], 133, "{d}");
            assert_eq!(f["ingress_denied_by"][0]["name"], "web-ingress", "{d}");
        }
    }
    let only = observe(
        &sbx,
        &["--last", "10000", "--drop-reason-desc", "POLICY_DENY"],
    );
    assert!(
        only.iter()
            .all(|f| f["flow"]["drop_reason_desc"] == "POLICY_DENY"),
        "{}",
        brief(&only)
    );
    let t = scrape(&sbx, &daemon);
    assert!(
        metric_sum(
            &t,
            "hubble_policy_verdicts_total",
            &[("direction", "ingress"), ("action", "dropped")]
        ) >= drops.len() as f64,
        "policy verdict metrics\n{t}"
    );
    let compact = cli(&sbx, &["observe", "--last", "100", "--verdict", "DROPPED"]);
    println!("{}", compact.stdout);
    Ok(())
}

/// Source address verification: vm1 puts b2's address on its own interface and sends from
/// it. Identity comes from the source address, so the packet must not leave vm1's
/// interface: it is dropped at `from_ep` and reported as `INVALID_SOURCE_IP` (Hubble 132).
/// vm1's traffic from its own address still flows.
#[test]
fn spoofed_source_is_dropped_and_reported() -> Result<()> {
    if skip_unless_root("spoofed_source_is_dropped_and_reported") {
        return Ok(());
    }
    let (sbx, _srv, _daemon) = flows_sandbox("flows-spoof")?;
    let (b1, b2) = (common::lb::addr_of("b1"), common::lb::addr_of("b2"));
    let vm1 = netns(&sbx, "vm1");
    let out = sbx.exec_in(
        &vm1,
        "ip",
        &["addr", "add", &format!("{b2}/32"), "dev", "eth0"],
    )?;
    assert!(out.status.success(), "ip addr add: {out:?}");

    let target = std::net::SocketAddr::from((b1, UDP_PORT));
    let spoofed_replies = sbx.run_in_netns(&vm1, move || -> Result<usize> {
        let s = std::net::UdpSocket::bind((b2, 0))?;
        s.set_read_timeout(Some(Duration::from_millis(300)))?;
        let mut replies = 0;
        for _ in 0..3 {
            s.send_to(b"spoof\n", target)?;
            let mut buf = [0u8; 64];
            replies += usize::from(s.recv_from(&mut buf).is_ok());
        }
        Ok(replies)
    })??;
    assert_eq!(
        spoofed_replies, 0,
        "b1 must not answer a packet sent as b2 by vm1"
    );
    let own = udp_shots(&sbx, "vm1", &format!("{b1}:{UDP_PORT}"), 2)?;
    assert_eq!(own, 2, "vm1's own address still works");

    let flows = observe_until(&sbx, &["--last", "1000"], |f| {
        f.iter()
            .any(|f| f["flow"]["drop_reason_desc"] == "INVALID_SOURCE_IP")
    });
    let spoofed: Vec<&Value> = flows
        .iter()
        .filter(|f| f["flow"]["drop_reason_desc"] == "INVALID_SOURCE_IP")
        .collect();
    assert!(
        !spoofed.is_empty(),
        "no INVALID_SOURCE_IP drop:\n{}",
        brief(&flows)
    );
    for f in &spoofed {
        assert_eq!(f["flow"]["IP"]["source"], b2.to_string(), "{f}");
        assert_eq!(f["flow"]["verdict"], "DROPPED", "{f}");
    }
    Ok(())
}
