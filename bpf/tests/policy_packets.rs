// SPDX-License-Identifier: Apache-2.0
//! Golden packet tests of policy enforcement through BPF_PROG_TEST_RUN (root only):
//! a table of {description, hook, packet, expected verdict} rows against maps
//! programmed as the daemon would (endpoints, ipcache, kld_policy entries), with
//! checks of conntrack, drop events (reason + rule id), kld_metrics and
//! kld_policy_hits in between. Every case gets a private bpffs.
//!
//! `bench_policy_ns_per_packet` (ignored; `--ignored --nocapture`) prints the
//! per-packet cost with 10 and 10,000 rules over 1,000 identities.

use std::net::Ipv4Addr;
use std::os::fd::{AsFd, AsRawFd, RawFd};

use aya::Ebpf;
use aya::maps::lpm_trie::{Key, LpmTrie};
use aya::maps::{HashMap, PerCpuHashMap, RingBuf};
use aya::programs::SchedClassifier;
use common::packet::{ACK, Pkt, SYN, TCP, UDP};
use common::{BpfFs, Knobs};
use kldnet_bpf::abi::*;
use kldnet_bpf::test_run::test_run;
use kldnet_bpf::{PROG_FROM_EP, PROG_TO_EP, TC_PROGRAMS, datapath_object};

mod common;

const OK: u32 = 0;
const SHOT: u32 = 2;
const SCTP: u8 = 132;
const ICMP: u8 = 1;

/// Endpoint A: enforced both ways (set SET_A). Endpoint B: not enforced.
const A: Ipv4Addr = Ipv4Addr::new(10, 0, 1, 1);
const B: Ipv4Addr = Ipv4Addr::new(10, 0, 1, 2);
const ID_A: u32 = 1000;
const ID_B: u32 = 2000;
const SET_A: u32 = 0x5e7a;
const SET_EMPTY: u32 = 0x5e7b;
/// Outside addresses: plain world, and a policy CIDR with its own identity.
const OUT: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 1);
const BAD: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 9);
const ID_BAD_CIDR: u32 = ID_CIDR_BASE + 77;

#[derive(Clone, Copy, Debug)]
enum Hook {
    FromEp,
    ToEp,
}

struct Env {
    ebpf: Ebpf,
    fds: Vec<(&'static str, RawFd)>,
    _fs: BpfFs,
}

fn be32(a: Ipv4Addr) -> u32 {
    u32::from(a).to_be()
}

impl Env {
    fn new(knobs: Knobs, cache: bool) -> Self {
        let fs = BpfFs::new();
        let mut ebpf = aya::EbpfLoader::new()
            .default_map_pin_directory(fs.pins())
            .override_global(KNOB_EVENTS_ENABLED, &knobs.events_enabled, true)
            .override_global(KNOB_POLICY_VERDICT_CACHE, &u32::from(cache), true)
            .load(datapath_object())
            .expect("load datapath object");
        let mut fds = Vec::new();
        for name in TC_PROGRAMS {
            let prog: &mut SchedClassifier = ebpf.program_mut(name).unwrap().try_into().unwrap();
            prog.load().expect("verifier");
            fds.push((*name, prog.fd().unwrap().as_fd().as_raw_fd()));
        }
        Self { ebpf, fds, _fs: fs }
    }

    fn run(&self, hook: Hook, frame: &[u8], repeat: u32) -> (u32, u32) {
        let name = match hook {
            Hook::FromEp => PROG_FROM_EP,
            Hook::ToEp => PROG_TO_EP,
        };
        let fd = self.fds.iter().find(|(n, _)| *n == name).unwrap().1;
        let out = test_run(fd, frame, repeat).expect("BPF_PROG_TEST_RUN");
        (out.retval, out.duration_ns)
    }

    fn endpoint(&mut self, addr: Ipv4Addr, identity: u32, set: u32, flags: u32) {
        let mut m: HashMap<_, EndpointKey, EndpointInfo> =
            HashMap::try_from(self.ebpf.map_mut(MAP_ENDPOINTS).unwrap()).unwrap();
        let v = EndpointInfo {
            ifindex: 1,
            identity,
            policy_set: set,
            flags,
        };
        m.insert(EndpointKey::v4(addr), v, 0).unwrap();
    }

    /// An endpoint attached to another interface than the one BPF_PROG_TEST_RUN uses (1).
    fn endpoint_elsewhere(&mut self, addr: Ipv4Addr, identity: u32) {
        let mut m: HashMap<_, EndpointKey, EndpointInfo> =
            HashMap::try_from(self.ebpf.map_mut(MAP_ENDPOINTS).unwrap()).unwrap();
        let v = EndpointInfo {
            ifindex: 2,
            identity,
            policy_set: 0,
            flags: 0,
        };
        m.insert(EndpointKey::v4(addr), v, 0).unwrap();
    }

    fn ipcache(&mut self, addr: Ipv4Addr, len: u32, identity: u32) {
        let mut m: LpmTrie<_, [u8; 20], IpcacheValue> =
            LpmTrie::try_from(self.ebpf.map_mut(MAP_IPCACHE).unwrap()).unwrap();
        let mut k = IpcacheKey {
            prefixlen: IPCACHE_PREFIX_BASE + len,
            family: FAMILY_V4,
            ..IpcacheKey::default()
        };
        k.addr[..4].copy_from_slice(&addr.octets());
        let v = IpcacheValue {
            identity,
            ..IpcacheValue::default()
        };
        m.insert(&Key::new(k.prefixlen, k.lpm_data()), v, 0)
            .unwrap();
    }

    /// One kld_policy entry; `port` None = any port of `proto`, proto 0 = anything.
    #[allow(clippy::too_many_arguments)]
    fn rule(
        &mut self,
        set: u32,
        identity: u32,
        dir: u8,
        proto: u8,
        port: Option<(u16, u32)>,
        action: u8,
        rule_id: u32,
    ) {
        let mut m: LpmTrie<_, [u8; 12], PolicyEntry> =
            LpmTrie::try_from(self.ebpf.map_mut(MAP_POLICY).unwrap()).unwrap();
        let (prefixlen, dport) = match (proto, port) {
            (0, _) => (POLICY_PREFIX_MIN, 0),
            (_, None) => (POLICY_PREFIX_PROTO, 0),
            (_, Some((p, bits))) => (POLICY_PREFIX_PROTO + bits, p),
        };
        let k = PolicyKey {
            prefixlen,
            policy_set: set,
            identity,
            direction: dir,
            proto,
            dport: dport.to_be(),
        };
        let v = PolicyEntry {
            rule_id,
            action,
            ..PolicyEntry::default()
        };
        m.insert(&Key::new(prefixlen, k.lpm_data()), v, 0).unwrap();
    }

    fn ct(&self, key: Ct4Key) -> Option<CtEntry> {
        let ct: HashMap<_, Ct4Key, CtEntry> =
            HashMap::try_from(self.ebpf.map(MAP_CT4).unwrap()).unwrap();
        ct.get(&key, 0).ok()
    }

    fn metric(&self, reason: u8, dir: u8) -> u64 {
        let m: PerCpuHashMap<_, MetricsKey, MetricsValue> =
            PerCpuHashMap::try_from(self.ebpf.map(MAP_METRICS).unwrap()).unwrap();
        let k = MetricsKey {
            reason,
            direction: dir,
            pad: [0; 2],
        };
        m.get(&k, 0)
            .map(|v| v.iter().map(|x| x.packets).sum())
            .unwrap_or(0)
    }

    fn hits(&self, rule_id: u32, dir: u8, reason: u8) -> u64 {
        let m: PerCpuHashMap<_, PolicyHitsKey, MetricsValue> =
            PerCpuHashMap::try_from(self.ebpf.map(MAP_POLICY_HITS).unwrap()).unwrap();
        let k = PolicyHitsKey {
            rule_id,
            direction: dir,
            reason,
            pad: [0; 2],
        };
        m.get(&k, 0)
            .map(|v| v.iter().map(|x| x.packets).sum())
            .unwrap_or(0)
    }

    fn events(&mut self) -> Vec<FlowEvent> {
        let mut rb = RingBuf::try_from(self.ebpf.map_mut(MAP_EVENTS).unwrap()).unwrap();
        let mut out = Vec::new();
        while let Some(item) = rb.next() {
            out.push(FlowEvent::from_bytes(&item).expect("flow_event"));
        }
        out
    }
}

/// A frame with an L4 header the policy parser understands (SCTP common header,
/// ICMP echo); checksums are not looked at by the policy path.
fn raw(proto: u8, src: Ipv4Addr, dst: Ipv4Addr, sport: u16, dport: u16) -> Vec<u8> {
    let mut f = Pkt::udp((src, sport), (dst, dport)).build();
    f[14 + 9] = proto;
    let l4 = 14 + 20;
    match proto {
        SCTP => {} // the ports sit where UDP's do
        ICMP => {
            f[l4] = 8; // echo request
            f[l4 + 1] = 0;
            f[l4 + 4..l4 + 6].copy_from_slice(&sport.to_be_bytes()); // echo id
        }
        _ => {}
    }
    f
}

fn tcp(src: (Ipv4Addr, u16), dst: (Ipv4Addr, u16), flags: u8) -> Vec<u8> {
    Pkt::tcp(src, dst, flags).build()
}

fn udp(src: (Ipv4Addr, u16), dst: (Ipv4Addr, u16)) -> Vec<u8> {
    Pkt::udp(src, dst).build()
}

/// The maps of the golden cases.
fn programmed() -> Env {
    let mut env = Env::new(Knobs::default(), true);
    let both = EP_F_INGRESS_ENFORCE | EP_F_EGRESS_ENFORCE;
    env.endpoint(A, ID_A, SET_A, both);
    env.endpoint(B, ID_B, 0, 0);
    env.ipcache(Ipv4Addr::UNSPECIFIED, 0, ID_WORLD);
    env.ipcache(Ipv4Addr::new(203, 0, 113, 0), 24, ID_BAD_CIDR);
    // Ingress of A.
    env.rule(
        SET_A,
        ID_B,
        DIR_INGRESS,
        TCP,
        Some((80, 16)),
        POLICY_ALLOW,
        11,
    );
    env.rule(
        SET_A,
        ID_B,
        DIR_INGRESS,
        TCP,
        Some((9000, 13)),
        POLICY_ALLOW,
        12,
    ); // 9000-9007
    env.rule(SET_A, 0, DIR_INGRESS, UDP, Some((53, 16)), POLICY_ALLOW, 13); // any peer
    env.rule(
        SET_A,
        ID_B,
        DIR_INGRESS,
        UDP,
        Some((53, 16)),
        POLICY_ALLOW,
        13,
    ); // (compiler copies any-peer rules)
    env.rule(
        SET_A,
        ID_B,
        DIR_INGRESS,
        SCTP,
        Some((7777, 16)),
        POLICY_ALLOW,
        14,
    );
    env.rule(SET_A, ID_B, DIR_INGRESS, ICMP, None, POLICY_ALLOW, 15);
    env.rule(SET_A, ID_BAD_CIDR, DIR_INGRESS, 0, None, POLICY_DENY, 16);
    // Egress of A.
    env.rule(SET_A, ID_WORLD, DIR_EGRESS, 0, None, POLICY_ALLOW, 17);
    env.rule(
        SET_A,
        ID_BAD_CIDR,
        DIR_EGRESS,
        TCP,
        Some((443, 16)),
        POLICY_DENY,
        18,
    );
    env.rule(SET_A, ID_BAD_CIDR, DIR_EGRESS, 0, None, POLICY_ALLOW, 17);
    env
}

fn ct_key(src: (Ipv4Addr, u16), dst: (Ipv4Addr, u16), proto: u8, dir: u8) -> Ct4Key {
    Ct4Key {
        saddr: be32(src.0),
        daddr: be32(dst.0),
        sport: src.1.to_be(),
        dport: dst.1.to_be(),
        proto,
        flags: dir,
        pad: [0; 2],
    }
}

/// Runs a table of (description, hook, frame, expected verdict); prints it and fails
/// with every wrong row.
fn table(env: &Env, rows: &[(&str, Hook, Vec<u8>, u32)]) {
    let mut out = String::new();
    let mut bad = 0;
    for (desc, hook, frame, want) in rows {
        let (got, _) = env.run(*hook, frame, 1);
        let name = |v: u32| {
            if v == OK {
                "PASS"
            } else if v == SHOT {
                "DROP"
            } else {
                "?"
            }
        };
        let mark = if got == *want { "ok " } else { "BAD" };
        if got != *want {
            bad += 1;
        }
        out.push_str(&format!(
            "{mark} {:<7} {desc:<62} expect {:<4} got {}\n",
            format!("{hook:?}"),
            name(*want),
            name(got)
        ));
    }
    println!("{out}");
    assert_eq!(bad, 0, "policy verdicts differ:\n{out}");
}

#[test]
fn verdicts_by_identity_port_range_protocol_and_cidr() {
    need_root!();
    let env = programmed();
    table(
        &env,
        &[
            (
                "B -> A tcp/80: identity rule",
                Hook::ToEp,
                tcp((B, 40000), (A, 80), SYN),
                OK,
            ),
            (
                "B -> A tcp/81: no rule, default deny",
                Hook::ToEp,
                tcp((B, 40001), (A, 81), SYN),
                SHOT,
            ),
            (
                "B -> A tcp/9005: inside the 9000-9007 prefix",
                Hook::ToEp,
                tcp((B, 40002), (A, 9005), SYN),
                OK,
            ),
            (
                "B -> A tcp/9008: just outside it",
                Hook::ToEp,
                tcp((B, 40003), (A, 9008), SYN),
                SHOT,
            ),
            (
                "B -> A udp/53: copied any-peer rule",
                Hook::ToEp,
                udp((B, 40004), (A, 53)),
                OK,
            ),
            (
                "world -> A udp/53: any-peer rule (second lookup)",
                Hook::ToEp,
                udp((OUT, 40005), (A, 53)),
                OK,
            ),
            (
                "world -> A tcp/80: rule is for B only",
                Hook::ToEp,
                tcp((OUT, 40006), (A, 80), SYN),
                SHOT,
            ),
            (
                "B -> A sctp/7777",
                Hook::ToEp,
                raw(SCTP, B, A, 40007, 7777),
                OK,
            ),
            (
                "B -> A sctp/7778",
                Hook::ToEp,
                raw(SCTP, B, A, 40008, 7778),
                SHOT,
            ),
            ("B -> A icmp echo", Hook::ToEp, raw(ICMP, B, A, 99, 0), OK),
            (
                "world -> A icmp echo",
                Hook::ToEp,
                raw(ICMP, OUT, A, 98, 0),
                SHOT,
            ),
            (
                "203.0.113.9 (CIDR identity) -> A tcp/80: deny rule",
                Hook::ToEp,
                tcp((BAD, 40009), (A, 80), SYN),
                SHOT,
            ),
            (
                "A -> world tcp/443: egress allow",
                Hook::FromEp,
                tcp((A, 40010), (OUT, 443), SYN),
                OK,
            ),
            (
                "A -> CIDR tcp/443: egress deny beats allow-all",
                Hook::FromEp,
                tcp((A, 40011), (BAD, 443), SYN),
                SHOT,
            ),
            (
                "A -> CIDR tcp/444: allow-all",
                Hook::FromEp,
                tcp((A, 40012), (BAD, 444), SYN),
                OK,
            ),
            (
                "A -> B tcp/80: no egress rule for B",
                Hook::FromEp,
                tcp((A, 40013), (B, 80), SYN),
                SHOT,
            ),
            (
                "B -> B' not enforced: B's egress passes",
                Hook::FromEp,
                tcp((B, 40014), (OUT, 80), SYN),
                OK,
            ),
        ],
    );
}

#[test]
fn drops_carry_reason_and_rule_in_events_metrics_and_hits() {
    need_root!();
    let mut env = programmed();
    let _ = env.events();
    assert_eq!(
        env.run(Hook::ToEp, &tcp((B, 41000), (A, 81), SYN), 1).0,
        SHOT
    );
    assert_eq!(
        env.run(Hook::ToEp, &tcp((BAD, 41001), (A, 80), SYN), 1).0,
        SHOT
    );
    assert_eq!(env.run(Hook::ToEp, &tcp((B, 41002), (A, 80), SYN), 1).0, OK);
    let ev = env.events();
    let drops: Vec<(u8, u32, u32, u32)> = ev
        .iter()
        .filter(|e| e.r#type == EVENT_DROP)
        .map(|e| (e.reason, e.rule_id, e.src_identity, e.dst_identity))
        .collect();
    assert_eq!(
        drops,
        vec![
            (DROP_POLICY_DENIED, 0, ID_B, ID_A),
            (DROP_POLICY_DENY, 16, ID_BAD_CIDR, ID_A)
        ],
        "drop events (reason, rule, src identity, dst identity)"
    );
    let verdicts: Vec<u32> = ev
        .iter()
        .filter(|e| e.r#type == EVENT_POLICY_VERDICT)
        .map(|e| e.rule_id)
        .collect();
    assert_eq!(
        verdicts,
        vec![11],
        "policy-verdict event of the allowed new flow"
    );
    assert_eq!(env.metric(DROP_POLICY_DENIED, DIR_INGRESS), 1);
    assert_eq!(env.metric(DROP_POLICY_DENY, DIR_INGRESS), 1);
    assert_eq!(
        env.metric(REASON_FORWARDED, DIR_INGRESS),
        1,
        "dropped packets are not counted as forwarded"
    );
    assert_eq!(env.hits(0, DIR_INGRESS, DROP_POLICY_DENIED), 1);
    assert_eq!(env.hits(16, DIR_INGRESS, DROP_POLICY_DENY), 1);
    assert_eq!(env.hits(11, DIR_INGRESS, REASON_FORWARDED), 1);
    // A denied flow leaves no conntrack entry behind (nothing can pass as its reply).
    assert!(
        env.ct(ct_key((B, 41000), (A, 81), TCP, CT_DIR_INGRESS))
            .is_none()
    );
}

#[test]
fn replies_pass_and_a_policy_change_cuts_established_flows() {
    need_root!();
    let mut env = programmed();
    let fwd = tcp((B, 42000), (A, 80), SYN);
    let reply = tcp((A, 80), (B, 42000), SYN | ACK);
    let ack = tcp((B, 42000), (A, 80), ACK);
    let key = ct_key((B, 42000), (A, 80), TCP, CT_DIR_INGRESS);
    table(
        &env,
        &[
            (
                "B -> A tcp/80 SYN: allowed, tracked",
                Hook::ToEp,
                fwd.clone(),
                OK,
            ),
            (
                "A -> B SYN|ACK: reply passes though A has no egress rule for B",
                Hook::FromEp,
                reply.clone(),
                OK,
            ),
            ("B -> A ACK: established", Hook::ToEp, ack.clone(), OK),
        ],
    );
    let e = env.ct(key).expect("conntrack entry of the allowed flow");
    assert_eq!(
        (e.policy_set, e.policy_peer),
        (SET_A, ID_B),
        "verdict cached for (set, peer)"
    );

    // The policy changes: A now uses a set without any entry (default deny both ways).
    let both = EP_F_INGRESS_ENFORCE | EP_F_EGRESS_ENFORCE;
    env.endpoint(A, ID_A, SET_EMPTY, both);
    table(
        &env,
        &[
            (
                "B -> A ACK after the change: re-checked, cut",
                Hook::ToEp,
                ack.clone(),
                SHOT,
            ),
            (
                "A -> B: no longer a reply, egress denied",
                Hook::FromEp,
                reply.clone(),
                SHOT,
            ),
        ],
    );
    assert!(env.ct(key).is_none(), "cut flow's conntrack entry removed");

    // Allowed again (back to SET_A): a new connection works.
    env.endpoint(A, ID_A, SET_A, both);
    table(&env, &[("B -> A tcp/80 SYN again", Hook::ToEp, fwd, OK)]);

    // The peer's identity changes (labels changed): re-checked against the new identity.
    env.endpoint(B, ID_B + 1, 0, 0);
    table(
        &env,
        &[(
            "B (new identity) -> A ACK: no rule for it, cut",
            Hook::ToEp,
            ack,
            SHOT,
        )],
    );
}

#[test]
fn not_enforced_endpoints_pass_everything() {
    need_root!();
    let mut env = programmed();
    env.endpoint(A, ID_A, SET_A, EP_F_EGRESS_ENFORCE); // ingress not enforced
    table(
        &env,
        &[
            (
                "B -> A tcp/81: ingress not enforced",
                Hook::ToEp,
                tcp((B, 43000), (A, 81), SYN),
                OK,
            ),
            (
                "A -> B tcp/80: egress still enforced",
                Hook::FromEp,
                tcp((A, 43001), (B, 80), SYN),
                SHOT,
            ),
        ],
    );
}

/// ns/packet at kld_to_ep: no policy, policy with the verdict cached (established
/// flows), and a policy lookup on every packet, with 10 and 10,000 rules spread over
/// 1,000 identities; the peer's rule is identity-specific (one lookup) or an any-peer
/// rule (two lookups).
#[test]
#[ignore = "benchmark: prints ns/packet"]
fn bench_policy_ns_per_packet() {
    need_root!();
    const REPEAT: u32 = 2_000_000;
    let quiet = Knobs {
        events_enabled: 0,
        ..Knobs::default()
    };
    println!("| rules | identities | path | ns/packet |");
    println!("|---|---|---|---|");
    for rules in [10u32, 10_000] {
        for (cache, label) in [
            (true, "verdict cached (established flow)"),
            (false, "lookup every packet"),
        ] {
            let mut env = Env::new(quiet, cache);
            env.endpoint(A, ID_A, SET_A, EP_F_INGRESS_ENFORCE);
            env.ipcache(Ipv4Addr::UNSPECIFIED, 0, ID_WORLD);
            // 1,000 peer identities 5000.., each with rules/1000 (at least 1) port rules.
            for i in 0..rules {
                let id = 5000 + i % 1000;
                let port = 1000 + (i / 1000) as u16 * 7;
                env.rule(
                    SET_A,
                    id,
                    DIR_INGRESS,
                    TCP,
                    Some((port, 16)),
                    POLICY_ALLOW,
                    i + 1,
                );
            }
            env.rule(
                SET_A,
                0,
                DIR_INGRESS,
                UDP,
                Some((53, 16)),
                POLICY_ALLOW,
                99_999,
            );
            let peer = Ipv4Addr::new(10, 0, 2, 7);
            env.endpoint(peer, 5007, 0, 0);
            let one = tcp((peer, 45000), (A, 1000), ACK);
            let two = udp((peer, 45001), (A, 53));
            assert_eq!(env.run(Hook::ToEp, &one, 1).0, OK);
            assert_eq!(env.run(Hook::ToEp, &two, 1).0, OK);
            let (_, ns1) = env.run(Hook::ToEp, &one, REPEAT);
            let (_, ns2) = env.run(Hook::ToEp, &two, REPEAT);
            println!("| {rules} | 1000 | {label}, identity rule (1 lookup) | {ns1} |");
            println!("| {rules} | 1000 | {label}, any-peer rule (2 lookups) | {ns2} |");
        }
    }
    let mut env = Env::new(quiet, true);
    env.endpoint(A, ID_A, 0, 0);
    let peer = Ipv4Addr::new(10, 0, 2, 7);
    env.endpoint(peer, 5777, 0, 0);
    let one = tcp((peer, 45000), (A, 1000), ACK);
    env.run(Hook::ToEp, &one, 1);
    let (_, ns) = env.run(Hook::ToEp, &one, REPEAT);
    println!("| 0 | - | no policy (endpoint not enforced), same packet | {ns} |");
}

/// Source address verification at `from_ep`: a workload may send from its own addresses,
/// from addresses kldnet knows nothing of and from 0.0.0.0 (DHCP), never from an address
/// that carries another identity. Each row: (source, verdict, why).
#[test]
fn spoofed_sources_are_dropped_at_from_ep() {
    need_root!();
    let mut env = Env::new(Knobs::default(), true);
    let (node, remote, other_if) = (
        Ipv4Addr::new(192, 0, 2, 10),
        Ipv4Addr::new(10, 0, 9, 9),
        Ipv4Addr::new(10, 0, 1, 3),
    );
    env.endpoint(A, ID_A, 0, 0); // attached here (ifindex 1)
    env.endpoint_elsewhere(other_if, ID_B);
    env.ipcache(node, 32, ID_HOST);
    env.ipcache(remote, 32, 7007); // an endpoint of another node
    env.ipcache(OUT, 24, ID_CIDR_BASE + 5);
    let _ = env.events();
    let table = [
        (A, OK, "its own address"),
        (BAD, OK, "unknown address: world, grants nothing"),
        (
            OUT,
            OK,
            "a policy CIDR's identity: grants nothing more than world",
        ),
        (Ipv4Addr::UNSPECIFIED, OK, "0.0.0.0 (DHCP)"),
        (other_if, SHOT, "a local endpoint of another interface"),
        (node, SHOT, "the node's address (host identity)"),
        (remote, SHOT, "a remote endpoint's address"),
    ];
    for (i, (src, want, why)) in table.iter().enumerate() {
        let got = env
            .run(Hook::FromEp, &udp((*src, 40000 + i as u16), (B, 53)), 1)
            .0;
        assert_eq!(got, *want, "from {src} ({why})");
    }
    let drops: Vec<FlowEvent> = env
        .events()
        .into_iter()
        .filter(|e| e.r#type == EVENT_DROP)
        .collect();
    assert_eq!(drops.len(), 3, "{drops:?}");
    assert!(drops.iter().all(|d| d.reason == DROP_INVALID_SOURCE));
}
