// SPDX-License-Identifier: Apache-2.0
//! `kldnet bench flows`: flow events decoded per second on one core, in process, from
//! synthetic `kld_events` records (no kernel, no daemon): decode + enrichment alone, then
//! the daemon's whole ingest (decode, Hubble metrics, store) and Hubble JSON rendering.
//! `--datapath` adds the kernel side's cost per event (BPF_PROG_TEST_RUN), `--connections`
//! TCP connections/s in a sandbox with events on vs off ([`connections`]).

mod connections;

use std::time::Instant;

use clap::Args;
use kldnet_bpf::abi::*;

use crate::compile::{EndpointView, Identity, IdentitySource};
use crate::flows::Shared;
use crate::flows::enrich::{Snapshot, SnapshotInput};
use crate::flows::model::ServiceName;

#[derive(Debug, Args)]
pub struct FlowsBenchArgs {
    /// Events per run.
    #[arg(long, default_value_t = 2_000_000)]
    pub events: usize,
    /// Endpoints in the synthetic configuration.
    #[arg(long, default_value_t = 1000)]
    pub endpoints: usize,
    /// Flow store capacity ([flows].buffer).
    #[arg(long, default_value_t = 65536)]
    pub buffer: usize,
    /// Also measure the datapath's cost of emitting events (root: BPF_PROG_TEST_RUN).
    #[arg(long)]
    pub datapath: bool,
    /// Packets per BPF_PROG_TEST_RUN batch (below the ring's ~11.9k records).
    #[arg(long, default_value_t = 10_000)]
    pub repeat: u32,
    /// Batches per measurement.
    #[arg(long, default_value_t = 20)]
    pub rounds: u32,
    /// Also measure TCP connections/s through a service and a policy with events on vs
    /// off (root: sandboxes with kldnetd); N connections per run, 0 = skip.
    #[arg(long, default_value_t = 0, value_name = "N")]
    pub connections: u32,
    /// Runs per setting for --connections (alternating on/off).
    #[arg(long, default_value_t = 3)]
    pub connection_rounds: u32,
}

fn snapshot(n: usize) -> Snapshot {
    let endpoints: Vec<EndpointView> = (0..n)
        .map(|i| EndpointView {
            namespace: format!("ns{}", i % 10),
            name: format!("web-{i}"),
            node: "bench".into(),
            local: true,
            identity: 256 + (i % 500) as u32,
            addresses: vec![std::net::Ipv4Addr::from(0x0a00_0000 + i as u32).into()],
            interface: Some(format!("vnet{i}")),
            ifindex: Some(10 + i as u32),
            labels: vec![format!("app=web{}", i % 50), "tier=api".into()],
            ingress_enforced: false,
            egress_enforced: false,
            policies: Vec::new(),
        })
        .collect();
    let identities: Vec<Identity> = (0..500)
        .map(|i| Identity {
            id: 256 + i,
            namespace: format!("ns{}", i % 10),
            labels: kldnet_config::types::Labels(
                [("app".to_string(), format!("web{}", i % 50))].into(),
            ),
            source: IdentitySource::Derived,
        })
        .collect();
    let services = (1..=100u16)
        .map(|i| {
            (
                i,
                ServiceName {
                    namespace: "ns0".into(),
                    name: format!("svc{i}"),
                },
            )
        })
        .collect();
    Snapshot::build(SnapshotInput {
        node: "bench".into(),
        generation: 1,
        endpoints: &endpoints,
        identities: &identities,
        services,
        ..Default::default()
    })
}

/// Realistic records: TCP/UDP between endpoints, some translated, some dropped.
fn records(count: usize, endpoints: usize) -> Vec<[u8; 80]> {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut rnd = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    (0..count.min(1 << 16))
        .map(|_| {
            let r = rnd();
            let s = (r % endpoints as u64) as u32;
            let d = ((r >> 20) % endpoints as u64) as u32;
            let drop = r % 10 == 0;
            let mut ev = FlowEvent {
                timestamp_ns: r >> 8,
                ifindex: 10 + s,
                src_identity: 256 + s % 500,
                dst_identity: 256 + d % 500,
                r#type: if drop { EVENT_DROP } else { EVENT_TRACE },
                reason: if drop { DROP_NO_SERVICE } else { TRACE_FROM_EP },
                direction: (r >> 40) as u8 & 1,
                family: FAMILY_V4,
                proto: if r % 3 == 0 { 17 } else { 6 },
                tcp_flags: 0x02,
                rev_nat_index: if r % 4 == 0 { (1 + r % 100) as u16 } else { 0 },
                src_port: ((r >> 32) as u16 | 1024).to_be(),
                dst_port: 8080u16.to_be(),
                pkt_len: 60,
                flags: EVF_NEW_FLOW,
                ..Default::default()
            };
            ev.src_addr[..4].copy_from_slice(&(0x0a00_0000 + s).to_be_bytes());
            ev.dst_addr[..4].copy_from_slice(&(0x0a00_0000 + d).to_be_bytes());
            // SAFETY: FlowEvent is 80 bytes of plain integers (layout checked in bpf/tests).
            unsafe { std::mem::transmute::<FlowEvent, [u8; 80]>(ev) }
        })
        .collect()
}

pub fn run(args: FlowsBenchArgs) -> i32 {
    let n = args.events.max(1);
    let recs = records(n, args.endpoints.max(1));
    let snap = snapshot(args.endpoints.max(1));
    println!(
        "kldnet bench flows: {n} events, {} endpoints, buffer {}, one core",
        args.endpoints, args.buffer
    );

    // 1. Decode + enrichment.
    let t = Instant::now();
    let mut named = 0usize;
    for i in 0..n {
        if let Some(f) = snap.decode(&recs[i % recs.len()], i as u64, 0) {
            named += usize::from(f.src.is_some());
        }
    }
    let decode = t.elapsed();
    std::hint::black_box(named);

    // 2. The daemon's ingest: decode, metrics, store (batches of 4096 like the reader).
    let shared = Shared::detached(snapshot(args.endpoints.max(1)), args.buffer);
    let t = Instant::now();
    let mut batch = Vec::with_capacity(4096);
    let s = shared.snapshot();
    for i in 0..n {
        if let Some(f) = s.decode(&recs[i % recs.len()], i as u64, 0) {
            batch.push(f);
        }
        if batch.len() == 4096 {
            shared.ingest(&mut batch);
        }
    }
    shared.ingest(&mut batch);
    let ingest = t.elapsed();

    // 3. Hubble JSON for a reader (`observe -o json`): what following costs per flow.
    let flows: Vec<_> = shared.store.lock().expect("lock").iter().cloned().collect();
    let t = Instant::now();
    let mut bytes = 0usize;
    let mut buf = Vec::with_capacity(1 << 20);
    for f in &flows {
        buf.clear();
        serde_json::to_writer(&mut buf, &f.to_hubble()).expect("json");
        bytes += buf.len();
    }
    let json = t.elapsed();

    let rate = |count: usize, d: std::time::Duration| count as f64 / d.as_secs_f64();
    println!(
        "  decode + enrich        {:>12.0} events/s  ({:.0} ns/event)",
        rate(n, decode),
        decode.as_nanos() as f64 / n as f64
    );
    println!(
        "  ingest (+metrics+store){:>12.0} events/s  ({:.0} ns/event)",
        rate(n, ingest),
        ingest.as_nanos() as f64 / n as f64
    );
    println!(
        "  Hubble JSON            {:>12.0} flows/s   ({} bytes/flow)",
        rate(flows.len(), json),
        bytes / flows.len().max(1)
    );
    println!(
        "  metric series: {}, stored flows: {}",
        shared.metrics.lock().expect("lock").series(),
        flows.len()
    );
    if args.datapath {
        match datapath_cost(args.repeat, args.rounds) {
            Ok(rows) => {
                println!("  datapath, kld_from_ep on a new TCP flow (every packet reports):");
                for (what, ns) in rows {
                    println!("    {what:<44} {ns:>6.1} ns/packet");
                }
            }
            Err(e) => {
                eprintln!("  datapath cost: {e:#}");
                return super::EXIT_FAILURE;
            }
        }
    }
    if args.connections > 0
        && let Err(e) = connection_rate(args.connections, args.connection_rounds.max(1))
    {
        eprintln!("  connections/s: {e:#}");
        return super::EXIT_FAILURE;
    }
    super::EXIT_OK
}

fn connection_rate(connects: u32, rounds: u32) -> anyhow::Result<()> {
    anyhow::ensure!(
        kldnet_testkit::is_root(),
        "--connections needs root: it creates network namespaces, a cgroup and bpffs mounts"
    );
    let exe = std::env::current_exe()?;
    let kldnetd = exe.with_file_name("kldnetd");
    anyhow::ensure!(
        kldnetd.exists(),
        "{} not found (cargo build --release --bins)",
        kldnetd.display()
    );
    println!(
        "  TCP connections/s, VM client -> ClusterIP (tc LB) -> VM server with ingress policy, {connects} per run:"
    );
    let runs = connections::run(&kldnetd, connects, rounds)?;
    for r in &runs {
        println!(
            "    events {:<3}  {:>8.0} conn/s  {:>7} events decoded  {} timeouts",
            if r.events { "on" } else { "off" },
            r.conns_per_sec,
            r.events_decoded,
            r.timeouts
        );
    }
    let (on, off) = (
        connections::median(&runs, true),
        connections::median(&runs, false),
    );
    println!(
        "    median: events on {on:.0} conn/s, off {off:.0} conn/s: on/off = {:.3} ({:+.1} %)",
        on / off,
        (on / off - 1.0) * 100.0
    );
    Ok(())
}

fn csum(data: &[u8], mut acc: u32) -> u16 {
    for c in data.chunks(2) {
        acc += u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]));
    }
    while acc > 0xffff {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    !(acc as u16)
}

/// Ethernet + IPv4 + TCP SYN, checksums filled.
fn syn_frame(src: [u8; 4], dst: [u8; 4], sport: u16, dport: u16) -> Vec<u8> {
    let mut f = vec![0u8; 14 + 20 + 20];
    f[12..14].copy_from_slice(&0x0800u16.to_be_bytes());
    let ip = &mut f[14..34];
    ip[0] = 0x45;
    ip[2..4].copy_from_slice(&40u16.to_be_bytes());
    ip[8] = 64;
    ip[9] = 6;
    ip[12..16].copy_from_slice(&src);
    ip[16..20].copy_from_slice(&dst);
    let c = csum(ip, 0);
    ip[10..12].copy_from_slice(&c.to_be_bytes());
    let tcp = &mut f[34..54];
    tcp[0..2].copy_from_slice(&sport.to_be_bytes());
    tcp[2..4].copy_from_slice(&dport.to_be_bytes());
    tcp[12] = 5 << 4;
    tcp[13] = 0x02;
    let mut pseudo = Vec::new();
    pseudo.extend_from_slice(&src);
    pseudo.extend_from_slice(&dst);
    pseudo.extend_from_slice(&[0, 6, 0, 20]);
    let acc = pseudo
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], c[1]])))
        .sum();
    let c = csum(tcp, acc);
    tcp[16..18].copy_from_slice(&c.to_be_bytes());
    f
}

/// kld_from_ep on a packet that is a new flow every run (conntrack lifetime 0), with flow
/// events off, and on with the ring drained between batches (every packet emits a record).
fn datapath_cost(repeat: u32, rounds: u32) -> anyhow::Result<Vec<(&'static str, f64)>> {
    use std::os::fd::{AsFd, AsRawFd};

    use anyhow::Context;
    use aya::programs::SchedClassifier;

    anyhow::ensure!(
        kldnet_testkit::is_root(),
        "needs root (bpffs, BPF_PROG_TEST_RUN)"
    );
    let tmp = tempfile::tempdir()?;
    let frame = syn_frame([10, 0, 1, 1], [10, 0, 2, 1], 40000, 8080);
    let mut rows = Vec::new();
    for (what, enabled) in [
        ("events off (KLD_EVENTS_ENABLED=0)", 0u32),
        ("events on, ring drained", 1),
    ] {
        let bpf = kldnet_testkit::BpffsMount::mount(&tmp.path().join(format!("bpf{enabled}")))?;
        let pins = kldnet_bpf::pin_dir(bpf.path());
        std::fs::create_dir_all(&pins)?;
        let zero = 0u32;
        let mut ebpf = aya::EbpfLoader::new()
            .default_map_pin_directory(&pins)
            .override_global(KNOB_EVENTS_ENABLED, &enabled, true)
            .override_global(KNOB_CT_LIFETIME_TCP_SEC, &zero, true)
            .override_global(KNOB_CT_LIFETIME_NONTCP_SEC, &zero, true)
            .load(kldnet_bpf::datapath_object())
            .context("load datapath.bpf.o")?;
        for name in kldnet_bpf::TC_PROGRAMS {
            let p: &mut SchedClassifier = ebpf
                .program_mut(name)
                .with_context(|| format!("program {name}"))?
                .try_into()?;
            p.load().with_context(|| format!("verify {name}"))?;
        }
        let mut ring = crate::flows::reader::open_ring(&pins)?;
        let p: &SchedClassifier = ebpf
            .program(kldnet_bpf::PROG_FROM_EP)
            .context("kld_from_ep")?
            .try_into()?;
        let fd = p.fd()?.as_fd().as_raw_fd();
        let (mut total, mut drained) = (0u64, 0u64);
        for _ in 0..rounds {
            let out =
                kldnet_bpf::test_run::test_run(fd, &frame, repeat).context("BPF_PROG_TEST_RUN")?;
            total += u64::from(out.duration_ns);
            while ring.next().is_some() {
                drained += 1;
            }
        }
        if enabled == 1 {
            anyhow::ensure!(
                drained >= u64::from(repeat) * u64::from(rounds) * 9 / 10,
                "only {drained} events for {} packets: not every packet reported",
                u64::from(repeat) * u64::from(rounds)
            );
        }
        rows.push((what, total as f64 / f64::from(rounds)));
        drop(ebpf);
        drop(bpf);
    }
    Ok(rows)
}
