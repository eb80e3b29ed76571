// SPDX-License-Identifier: Apache-2.0
//! Golden packet tests of per-packet service load balancing through
//! BPF_PROG_TEST_RUN (root only): each case is a table of steps {description,
//! hook, input packet, expected verdict, expected output addresses/ports,
//! checksums recomputed and verified}, interleaved with map updates (what
//! the daemon does between packets) and checks of conntrack, events and
//! counters. Every case gets a private bpffs, so maps start empty.

use std::net::Ipv4Addr;
use std::os::fd::{AsFd, AsRawFd, RawFd};

use aya::Ebpf;
use aya::maps::{Array, HashMap, HashOfMaps, MapData, PerCpuArray, RingBuf};
use aya::programs::SchedClassifier;
use common::packet::{self, ACK, FIN, HOST_MAC, Pkt, RST, SYN, TCP, UDP, WORKLOAD_MAC};
use common::{BpfFs, Knobs, load_object_with};
use kldnet_bpf::abi::*;
use kldnet_bpf::test_run::{TestRunOutput, test_run};
use kldnet_bpf::{
    PROG_FROM_EP, PROG_FROM_NETDEV, PROG_TO_EP, PROG_TO_NETDEV, TC_PROGRAMS, datapath_object,
};

mod common;

const TC_ACT_OK: u32 = 0;
const TC_ACT_REDIRECT: u32 = 7;

const CLIENT: Ipv4Addr = Ipv4Addr::new(10, 0, 1, 1);
const CLIENT2: Ipv4Addr = Ipv4Addr::new(10, 0, 1, 2);
const VIP: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 10);
const B1: Ipv4Addr = Ipv4Addr::new(10, 0, 2, 1);
const B2: Ipv4Addr = Ipv4Addr::new(10, 0, 2, 2);
const B3: Ipv4Addr = Ipv4Addr::new(10, 0, 2, 3);
const NODE: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 10);
const OUTSIDE: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 5);
const REMOTE_BE: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 7);
const HAIRPIN: Ipv4Addr = Ipv4Addr::new(169, 254, 42, 1);
const RNAT: u16 = 7;

#[derive(Clone, Copy, Debug)]
enum Hook {
    FromEp,
    ToEp,
    FromNetdev,
    ToNetdev,
}

impl Hook {
    fn prog(self) -> &'static str {
        match self {
            Hook::FromEp => PROG_FROM_EP,
            Hook::ToEp => PROG_TO_EP,
            Hook::FromNetdev => PROG_FROM_NETDEV,
            Hook::ToNetdev => PROG_TO_NETDEV,
        }
    }
}

fn be32(a: Ipv4Addr) -> u32 {
    u32::from(a).to_be()
}

/// One loaded datapath object with private maps.
struct Env {
    ebpf: Ebpf,
    fds: Vec<(&'static str, RawFd)>,
    _fs: BpfFs,
}

impl Env {
    fn new() -> Self {
        Self::with_knobs(Knobs::default())
    }

    fn with_knobs(knobs: Knobs) -> Self {
        let fs = BpfFs::new();
        let mut ebpf = load_object_with(&fs.pins(), "datapath.bpf.o", datapath_object(), knobs);
        let mut fds = Vec::new();
        for name in TC_PROGRAMS {
            let prog: &mut SchedClassifier = ebpf.program_mut(name).unwrap().try_into().unwrap();
            fds.push((*name, prog.fd().unwrap().as_fd().as_raw_fd()));
        }
        Self { ebpf, fds, _fs: fs }
    }

    fn run(&self, hook: Hook, frame: &[u8], repeat: u32) -> TestRunOutput {
        let fd = self.fds.iter().find(|(n, _)| *n == hook.prog()).unwrap().1;
        test_run(fd, frame, repeat).expect("BPF_PROG_TEST_RUN")
    }

    fn backend(&mut self, id: u32, addr: Ipv4Addr, port: u16, proto: u8, state: u8) {
        let mut be: HashMap<_, u32, Lb4Backend> =
            HashMap::try_from(self.ebpf.map_mut(MAP_LB4_BE).unwrap()).unwrap();
        let v = Lb4Backend {
            address: be32(addr),
            port: port.to_be(),
            proto,
            state,
        };
        be.insert(id, v, 0).unwrap();
    }

    /// Program a frontend like the daemon does: master entry in slot 0,
    /// `active` backend ids in slots 1..=count, `terminating` after them.
    fn service(
        &mut self,
        fe: (Ipv4Addr, u16),
        proto: u8,
        svc: Svc,
        active: &[u32],
        terminating: &[u32],
    ) {
        let key = |slot: u16| Lb4Key {
            address: be32(fe.0),
            dport: fe.1.to_be(),
            proto,
            scope: SCOPE_EXTERNAL,
            backend_slot: slot,
            pad: [0; 2],
        };
        let mut map: HashMap<_, Lb4Key, Lb4Service> =
            HashMap::try_from(self.ebpf.map_mut(MAP_LB4_SVC).unwrap()).unwrap();
        let master = Lb4Service {
            backend_id: 0,
            count: active.len() as u16,
            rev_nat_index: svc.rev_nat,
            flags: svc.flags,
            algorithm: svc.algorithm,
            total: (active.len() + terminating.len()) as u16,
            affinity_timeout_sec: svc.affinity_sec,
        };
        map.insert(key(0), master, 0).unwrap();
        for (i, id) in active.iter().chain(terminating).enumerate() {
            let slot = Lb4Service {
                backend_id: *id,
                rev_nat_index: svc.rev_nat,
                ..Default::default()
            };
            map.insert(key(i as u16 + 1), slot, 0).unwrap();
        }
        let mut rnat: HashMap<_, u16, Lb4ReverseNat> =
            HashMap::try_from(self.ebpf.map_mut(MAP_LB4_RNAT).unwrap()).unwrap();
        let v = Lb4ReverseNat {
            address: be32(fe.0),
            port: fe.1.to_be(),
            pad: [0; 2],
        };
        rnat.insert(svc.rev_nat, v, 0).unwrap();
    }

    fn ct(&self, key: Ct4Key) -> Option<CtEntry> {
        let ct: HashMap<_, Ct4Key, CtEntry> =
            HashMap::try_from(self.ebpf.map(MAP_CT4).unwrap()).unwrap();
        ct.get(&key, 0).ok()
    }

    fn counter(&self, idx: u32) -> u64 {
        let c: PerCpuArray<_, u64> =
            PerCpuArray::try_from(self.ebpf.map(MAP_COUNTERS).unwrap()).unwrap();
        c.get(&idx, 0).unwrap().iter().sum()
    }

    fn events(&mut self) -> Vec<FlowEvent> {
        let mut rb = RingBuf::try_from(self.ebpf.map_mut(MAP_EVENTS).unwrap()).unwrap();
        let mut out = Vec::new();
        while let Some(item) = rb.next() {
            out.push(FlowEvent::from_bytes(&item).expect("full flow_event"));
        }
        out
    }
}

/// Master-entry knobs of a test service.
#[derive(Clone, Copy)]
struct Svc {
    rev_nat: u16,
    flags: u8,
    algorithm: u8,
    affinity_sec: u32,
}

const RANDOM: Svc = Svc {
    rev_nat: RNAT,
    flags: 0,
    algorithm: LB_ALG_RANDOM,
    affinity_sec: 0,
};

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

/// Expected output of one step.
#[derive(Clone, Copy, Debug)]
struct Want {
    src: (Ipv4Addr, u16),
    dst: (Ipv4Addr, u16),
    /// Frame sent back where it came from (hairpin).
    macs_swapped: bool,
}

fn want(src: (Ipv4Addr, u16), dst: (Ipv4Addr, u16)) -> Option<Want> {
    Some(Want {
        src,
        dst,
        macs_swapped: false,
    })
}

fn want_back(src: (Ipv4Addr, u16), dst: (Ipv4Addr, u16)) -> Option<Want> {
    Some(Want {
        src,
        dst,
        macs_swapped: true,
    })
}

type Action = Box<dyn Fn(&mut Env)>;

/// One row of a golden table.
enum Step {
    /// Run `hook` on `pkt`; the verdict must be one of `ret`; `want` (if
    /// any) describes the output packet, whose checksums must verify.
    Run {
        desc: &'static str,
        hook: Hook,
        pkt: Pkt,
        ret: &'static [u32],
        want: Option<Want>,
    },
    /// Change maps or check state between packets.
    Do(&'static str, Action),
}

fn run(desc: &'static str, hook: Hook, pkt: Pkt, ret: &'static [u32], want: Option<Want>) -> Step {
    Step::Run {
        desc,
        hook,
        pkt,
        ret,
        want,
    }
}

fn act(desc: &'static str, f: impl Fn(&mut Env) + 'static) -> Step {
    Step::Do(desc, Box::new(f))
}

/// Run a table of steps against `env` (maps already programmed).
fn run_case(env: &mut Env, steps: Vec<Step>) {
    for (i, step) in steps.into_iter().enumerate() {
        match step {
            Step::Do(desc, f) => {
                eprintln!("step {i}: {desc}");
                f(env);
            }
            Step::Run {
                desc,
                hook,
                pkt,
                ret,
                want,
            } => {
                eprintln!("step {i}: {desc}");
                let frame = pkt.build();
                let out = env.run(hook, &frame, 1);
                assert!(
                    ret.contains(&out.retval),
                    "step {i} ({desc}): verdict: expected one of {ret:?}, got {}",
                    out.retval
                );
                let Some(w) = want else { continue };
                let got = packet::parse(&out.data_out);
                let expect = (w.src, w.dst);
                let have = ((got.src, got.sport), (got.dst, got.dport));
                assert_eq!(
                    have, expect,
                    "step {i} ({desc}): (src, dst): expected {expect:?}, got {have:?}"
                );
                assert_eq!(got.proto, pkt.proto, "step {i} ({desc}): protocol");
                assert!(
                    got.ip_csum_ok,
                    "step {i} ({desc}): bad IP checksum: {got:?}"
                );
                assert!(
                    got.l4_csum_ok,
                    "step {i} ({desc}): bad L4 checksum: {got:?}"
                );
                if pkt.proto == UDP && pkt.udp_zero_csum {
                    assert_eq!(
                        got.l4_csum, 0,
                        "step {i} ({desc}): zero UDP checksum must stay 0"
                    );
                }
                let macs = if w.macs_swapped {
                    (WORKLOAD_MAC, HOST_MAC)
                } else {
                    (HOST_MAC, WORKLOAD_MAC)
                };
                assert_eq!(
                    (got.dmac, got.smac),
                    macs,
                    "step {i} ({desc}): MACs (dst, src)"
                );
                assert_eq!(
                    out.data_out.len(),
                    frame.len(),
                    "step {i} ({desc}): length changed"
                );
            }
        }
    }
}

#[test]
fn plain_traffic_passes_unchanged() {
    need_root!();
    let mut env = Env::new();
    env.backend(1, B1, 8080, TCP, BE_ACTIVE);
    env.service((VIP, 80), TCP, RANDOM, &[1], &[]);
    let other = Pkt::tcp((CLIENT, 40000), (B2, 80), SYN);
    let other_port = Pkt::tcp((CLIENT, 40000), (VIP, 81), SYN);
    let udp = Pkt::udp((CLIENT, 5353), (B2, 53));
    run_case(
        &mut env,
        vec![
            run(
                "non-service TCP at from_ep",
                Hook::FromEp,
                other,
                &[TC_ACT_OK],
                want((CLIENT, 40000), (B2, 80)),
            ),
            run(
                "VIP, other port",
                Hook::FromEp,
                other_port,
                &[TC_ACT_OK],
                want((CLIENT, 40000), (VIP, 81)),
            ),
            run(
                "non-service UDP at to_ep",
                Hook::ToEp,
                udp.clone(),
                &[TC_ACT_OK],
                want((CLIENT, 5353), (B2, 53)),
            ),
            run(
                "uplink ingress",
                Hook::FromNetdev,
                udp.clone(),
                &[TC_ACT_OK],
                want((CLIENT, 5353), (B2, 53)),
            ),
            run(
                "uplink egress",
                Hook::ToNetdev,
                udp,
                &[TC_ACT_OK],
                want((CLIENT, 5353), (B2, 53)),
            ),
        ],
    );
    assert_eq!(env.counter(CTR_LB_XLATE), 0);
}

#[test]
fn tcp_dnat_sticks_and_reverse_nat_at_to_ep() {
    need_root!();
    let mut env = Env::new();
    env.backend(1, B1, 8080, TCP, BE_ACTIVE);
    env.backend(2, B2, 8080, TCP, BE_ACTIVE);
    env.service((VIP, 80), TCP, RANDOM, &[1], &[]);
    run_case(
        &mut env,
        vec![
            run(
                "SYN to the VIP is DNATed to the only backend",
                Hook::FromEp,
                Pkt::tcp((CLIENT, 40000), (VIP, 80), SYN),
                &[TC_ACT_OK],
                want((CLIENT, 40000), (B1, 8080)),
            ),
            act(
                "service entry under the original tuple; translated entry carries rev_nat",
                |env| {
                    let s = env
                        .ct(ct_key((CLIENT, 40000), (VIP, 80), TCP, CT_DIR_SERVICE))
                        .expect("service conntrack entry");
                    assert_eq!((s.backend_id, s.rev_nat_index), (1, RNAT));
                    let e = env
                        .ct(ct_key((CLIENT, 40000), (B1, 8080), TCP, CT_DIR_EGRESS))
                        .expect("translated conntrack entry");
                    assert_eq!((e.backend_id, e.rev_nat_index), (1, RNAT));
                    let ev = env.events();
                    assert_eq!(ev.len(), 1, "{ev:?}");
                    assert_eq!((ev[0].r#type, ev[0].rev_nat_index), (EVENT_TRACE, RNAT));
                    assert_eq!(ev[0].flags & EVF_NEW_FLOW, EVF_NEW_FLOW);
                    assert_eq!(&ev[0].dst_addr[..4], &B1.octets());
                    assert_eq!(u16::from_be(ev[0].dst_port), 8080);
                },
            ),
            act("daemon swaps slot 1 to backend 2", |env| {
                env.service((VIP, 80), TCP, RANDOM, &[2], &[]);
            }),
            run(
                "second packet of the flow sticks to backend 1",
                Hook::FromEp,
                Pkt::tcp((CLIENT, 40000), (VIP, 80), ACK),
                &[TC_ACT_OK],
                want((CLIENT, 40000), (B1, 8080)),
            ),
            run(
                "a new flow gets backend 2",
                Hook::FromEp,
                Pkt::tcp((CLIENT, 40001), (VIP, 80), SYN),
                &[TC_ACT_OK],
                want((CLIENT, 40001), (B2, 8080)),
            ),
            run(
                "SYN-ACK from backend 1 is reverse-NATed to the VIP at to_ep",
                Hook::ToEp,
                Pkt::tcp((B1, 8080), (CLIENT, 40000), SYN | ACK),
                &[TC_ACT_OK],
                want((VIP, 80), (CLIENT, 40000)),
            ),
            run(
                "reply from backend 2 to its flow",
                Hook::ToEp,
                Pkt::tcp((B2, 8080), (CLIENT, 40001), SYN | ACK),
                &[TC_ACT_OK],
                want((VIP, 80), (CLIENT, 40001)),
            ),
            run(
                "unrelated packet from backend 1 is not rewritten",
                Hook::ToEp,
                Pkt::tcp((B1, 8080), (CLIENT2, 40000), SYN | ACK),
                &[TC_ACT_OK],
                want((B1, 8080), (CLIENT2, 40000)),
            ),
            act("counters", |env| {
                assert_eq!(env.counter(CTR_LB_NEW_FLOW), 2);
                assert_eq!(env.counter(CTR_LB_XLATE), 3);
                assert_eq!(env.counter(CTR_LB_RNAT), 2);
                assert_eq!(env.counter(CTR_NAT_FAIL), 0);
            }),
        ],
    );
}

#[test]
fn udp_dnat_and_reverse_keep_checksums() {
    need_root!();
    let mut env = Env::new();
    env.backend(1, B1, 5353, UDP, BE_ACTIVE);
    env.service((VIP, 53), UDP, RANDOM, &[1], &[]);
    run_case(
        &mut env,
        vec![
            run(
                "UDP query DNATed",
                Hook::FromEp,
                Pkt::udp((CLIENT, 33333), (VIP, 53)),
                &[TC_ACT_OK],
                want((CLIENT, 33333), (B1, 5353)),
            ),
            run(
                "UDP answer reverse-NATed",
                Hook::ToEp,
                Pkt::udp((B1, 5353), (CLIENT, 33333)),
                &[TC_ACT_OK],
                want((VIP, 53), (CLIENT, 33333)),
            ),
            run(
                "UDP without checksum DNATed, checksum stays 0",
                Hook::FromEp,
                Pkt::udp((CLIENT, 33334), (VIP, 53)).zero_csum(),
                &[TC_ACT_OK],
                want((CLIENT, 33334), (B1, 5353)),
            ),
            run(
                "UDP answer without checksum reverse-NATed, checksum stays 0",
                Hook::ToEp,
                Pkt::udp((B1, 5353), (CLIENT, 33334)).zero_csum(),
                &[TC_ACT_OK],
                want((VIP, 53), (CLIENT, 33334)),
            ),
            run(
                "TCP to the UDP frontend is not translated",
                Hook::FromEp,
                Pkt::tcp((CLIENT, 33335), (VIP, 53), SYN),
                &[TC_ACT_OK],
                want((CLIENT, 33335), (VIP, 53)),
            ),
        ],
    );
}

#[test]
fn hairpin_both_directions() {
    need_root!();
    let mut env = Env::new();
    env.backend(1, CLIENT, 8080, TCP, BE_ACTIVE);
    env.service((VIP, 80), TCP, RANDOM, &[1], &[]);
    run_case(
        &mut env,
        vec![
            run(
                "client is the backend: DNAT + SNAT to the hairpin address, sent back out",
                Hook::FromEp,
                Pkt::tcp((CLIENT, 40000), (VIP, 80), SYN),
                &[TC_ACT_REDIRECT],
                want_back((HAIRPIN, 40000), (CLIENT, 8080)),
            ),
            act("translated entry is flagged hairpin", |env| {
                let e = env
                    .ct(ct_key((HAIRPIN, 40000), (CLIENT, 8080), TCP, CT_DIR_EGRESS))
                    .expect("hairpin conntrack entry");
                assert_eq!(e.flags & CT_F_HAIRPIN, CT_F_HAIRPIN);
                assert_eq!(e.rev_nat_index, RNAT);
            }),
            run(
                "reply to the hairpin address: VIP -> client, sent back out",
                Hook::FromEp,
                Pkt::tcp((CLIENT, 8080), (HAIRPIN, 40000), SYN | ACK),
                &[TC_ACT_REDIRECT],
                want_back((VIP, 80), (CLIENT, 40000)),
            ),
            run(
                "next packet of the flow",
                Hook::FromEp,
                Pkt::tcp((CLIENT, 40000), (VIP, 80), ACK),
                &[TC_ACT_REDIRECT],
                want_back((HAIRPIN, 40000), (CLIENT, 8080)),
            ),
            run(
                "packet to the hairpin address without a flow passes",
                Hook::FromEp,
                Pkt::tcp((CLIENT, 9999), (HAIRPIN, 1), SYN | ACK),
                &[TC_ACT_OK],
                want((CLIENT, 9999), (HAIRPIN, 1)),
            ),
        ],
    );
}

#[test]
fn terminating_backend_keeps_flow_gets_no_new_one() {
    need_root!();
    let mut env = Env::new();
    env.backend(1, B1, 8080, TCP, BE_ACTIVE);
    env.backend(2, B2, 8080, TCP, BE_ACTIVE);
    env.service((VIP, 80), TCP, RANDOM, &[1], &[]);
    let mut steps = vec![
        run(
            "flow opened while backend 1 is active",
            Hook::FromEp,
            Pkt::tcp((CLIENT, 40000), (VIP, 80), SYN),
            &[TC_ACT_OK],
            want((CLIENT, 40000), (B1, 8080)),
        ),
        act(
            "backend 1 terminating: slot 1 = backend 2, slot 2 (terminating) = backend 1",
            |env| {
                env.backend(1, B1, 8080, TCP, BE_TERMINATING);
                env.service((VIP, 80), TCP, RANDOM, &[2], &[1]);
            },
        ),
        run(
            "existing flow still reaches backend 1",
            Hook::FromEp,
            Pkt::tcp((CLIENT, 40000), (VIP, 80), ACK),
            &[TC_ACT_OK],
            want((CLIENT, 40000), (B1, 8080)),
        ),
        run(
            "its FIN too",
            Hook::FromEp,
            Pkt::tcp((CLIENT, 40000), (VIP, 80), FIN | ACK),
            &[TC_ACT_OK],
            want((CLIENT, 40000), (B1, 8080)),
        ),
    ];
    for sport in 41000..41020 {
        steps.push(run(
            "new flows only go to the active backend",
            Hook::FromEp,
            Pkt::tcp((CLIENT, sport), (VIP, 80), SYN),
            &[TC_ACT_OK],
            want((CLIENT, sport), (B2, 8080)),
        ));
    }
    steps.push(act(
        "no active backend left: terminating one keeps its flow",
        |env| {
            env.backend(2, B2, 8080, TCP, BE_TERMINATING);
            env.service((VIP, 80), TCP, RANDOM, &[], &[2, 1]);
        },
    ));
    steps.push(run(
        "existing flow of backend 2 continues",
        Hook::FromEp,
        Pkt::tcp((CLIENT, 41000), (VIP, 80), ACK),
        &[TC_ACT_OK],
        want((CLIENT, 41000), (B2, 8080)),
    ));
    steps.push(run(
        "new flow is rejected (ICMP back to the client)",
        Hook::FromEp,
        Pkt::tcp((CLIENT, 42000), (VIP, 80), SYN),
        &[TC_ACT_REDIRECT],
        None,
    ));
    run_case(&mut env, steps);
}

/// A client reuses a source port: first for a connection through the VIP, then straight
/// to the backend. The second connection must not inherit the first one's reverse NAT
/// (its SYN-ACK would come back from the VIP and the connect would hang), and a new
/// connection through the VIP on a reused port chooses its backend again.
#[test]
fn reused_source_port_starts_a_new_flow() {
    need_root!();
    let mut env = Env::new();
    env.backend(1, B1, 8080, TCP, BE_ACTIVE);
    env.backend(2, B2, 8080, TCP, BE_ACTIVE);
    env.backend(3, B1, 53, UDP, BE_ACTIVE);
    env.service((VIP, 80), TCP, RANDOM, &[1], &[]);
    env.service((VIP, 53), UDP, RANDOM, &[3], &[]);
    run_case(
        &mut env,
        vec![
            run(
                "connection through the VIP",
                Hook::FromEp,
                Pkt::tcp((CLIENT, 40000), (VIP, 80), SYN),
                &[TC_ACT_OK],
                want((CLIENT, 40000), (B1, 8080)),
            ),
            run(
                "closed with an RST (SO_LINGER 0)",
                Hook::FromEp,
                Pkt::tcp((CLIENT, 40000), (VIP, 80), RST | ACK),
                &[TC_ACT_OK],
                want((CLIENT, 40000), (B1, 8080)),
            ),
            run(
                "same source port, straight to the backend",
                Hook::FromEp,
                Pkt::tcp((CLIENT, 40000), (B1, 8080), SYN),
                &[TC_ACT_OK],
                want((CLIENT, 40000), (B1, 8080)),
            ),
            act("the reused entry carries no reverse NAT", |env| {
                let e = env
                    .ct(ct_key((CLIENT, 40000), (B1, 8080), TCP, CT_DIR_EGRESS))
                    .expect("conntrack entry");
                assert_eq!((e.rev_nat_index, e.backend_id), (0, 0));
            }),
            run(
                "the backend's SYN-ACK reaches the client unchanged",
                Hook::ToEp,
                Pkt::tcp((B1, 8080), (CLIENT, 40000), SYN | ACK),
                &[TC_ACT_OK],
                want((B1, 8080), (CLIENT, 40000)),
            ),
            run(
                "direct connection closed",
                Hook::FromEp,
                Pkt::tcp((CLIENT, 40000), (B1, 8080), RST | ACK),
                &[TC_ACT_OK],
                want((CLIENT, 40000), (B1, 8080)),
            ),
            act("backend 1 terminating, backend 2 takes slot 1", |env| {
                env.backend(1, B1, 8080, TCP, BE_TERMINATING);
                env.service((VIP, 80), TCP, RANDOM, &[2], &[1]);
            }),
            run(
                "a new connection through the VIP on the port chooses again",
                Hook::FromEp,
                Pkt::tcp((CLIENT, 40000), (VIP, 80), SYN),
                &[TC_ACT_OK],
                want((CLIENT, 40000), (B2, 8080)),
            ),
            run(
                "and its reply is reverse-NATed",
                Hook::ToEp,
                Pkt::tcp((B2, 8080), (CLIENT, 40000), SYN | ACK),
                &[TC_ACT_OK],
                want((VIP, 80), (CLIENT, 40000)),
            ),
            run(
                "UDP query through the VIP",
                Hook::FromEp,
                Pkt::udp((CLIENT, 5353), (VIP, 53)),
                &[TC_ACT_OK],
                want((CLIENT, 5353), (B1, 53)),
            ),
            run(
                "same socket, now straight to the backend",
                Hook::FromEp,
                Pkt::udp((CLIENT, 5353), (B1, 53)),
                &[TC_ACT_OK],
                want((CLIENT, 5353), (B1, 53)),
            ),
            run(
                "the backend's answer keeps its own address",
                Hook::ToEp,
                Pkt::udp((B1, 53), (CLIENT, 5353)),
                &[TC_ACT_OK],
                want((B1, 53), (CLIENT, 5353)),
            ),
        ],
    );
}

/// Ones' complement sum over big-endian 16-bit words is 0xffff for valid data.
fn csum_ok(data: &[u8]) -> bool {
    let mut sum: u32 = data
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    sum == 0xffff
}

/// `out` must be the ICMP port unreachable answering `orig` from the frontend.
fn assert_icmp_reject(out: &[u8], orig: &[u8], frontend: Ipv4Addr, client: Ipv4Addr) {
    assert_eq!(out.len(), 14 + 20 + 8 + 28, "reply length: {out:02x?}");
    assert_eq!(&out[0..6], &orig[6..12], "back to the sender's MAC");
    assert_eq!(&out[6..12], &orig[0..6], "from the MAC it was sent to");
    assert_eq!(&out[12..14], &[0x08, 0x00]);
    let ip = &out[14..34];
    assert_eq!(ip[0], 0x45);
    assert_eq!(u16::from_be_bytes([ip[2], ip[3]]), 56, "IP total length");
    assert_eq!(ip[9], 1, "protocol ICMP");
    assert_eq!(&ip[12..16], &frontend.octets(), "from the frontend");
    assert_eq!(&ip[16..20], &client.octets(), "to the client");
    assert!(csum_ok(ip), "IP checksum: {ip:02x?}");
    let icmp = &out[34..];
    assert_eq!(
        (icmp[0], icmp[1]),
        (3, 3),
        "destination unreachable, port unreachable"
    );
    assert!(csum_ok(icmp), "ICMP checksum: {icmp:02x?}");
    assert_eq!(
        &icmp[8..],
        &orig[14..42],
        "quotes the IP header and 8 bytes of L4"
    );
}

#[test]
fn no_backend_rejects_with_icmp_and_reports_the_drop() {
    need_root!();
    let mut env = Env::new();
    env.service((VIP, 80), TCP, RANDOM, &[], &[]);
    env.service((VIP, 53), UDP, RANDOM, &[], &[]);
    let mut syn = Pkt::tcp((CLIENT, 40000), (VIP, 80), SYN);
    syn.payload = vec![0xaa; 12]; // like the options of a real SYN
    let frame = syn.build();
    let out = env.run(Hook::FromEp, &frame, 1);
    assert_eq!(
        out.retval, TC_ACT_REDIRECT,
        "sent back out of the interface"
    );
    assert_icmp_reject(&out.data_out, &frame, VIP, CLIENT);

    let frame = Pkt::udp((CLIENT, 5353), (VIP, 53)).build();
    let out = env.run(Hook::FromEp, &frame, 1);
    assert_eq!(out.retval, TC_ACT_REDIRECT);
    assert_icmp_reject(&out.data_out, &frame, VIP, CLIENT);

    run_case(
        &mut env,
        vec![
            run(
                "UDP to the TCP-only port is not a service",
                Hook::FromEp,
                Pkt::udp((CLIENT, 40000), (VIP, 80)),
                &[TC_ACT_OK],
                want((CLIENT, 40000), (VIP, 80)),
            ),
            act("drop events, counter", |env| {
                let ev = env.events();
                let drops: Vec<_> = ev.iter().filter(|e| e.r#type == EVENT_DROP).collect();
                assert_eq!(drops.len(), 2, "{ev:?}");
                let d = drops[0];
                assert_eq!(d.reason, DROP_NO_SERVICE);
                assert_eq!(d.rev_nat_index, RNAT);
                assert_eq!(d.direction, DIR_EGRESS);
                assert_eq!(&d.dst_addr[..4], &VIP.octets());
                assert_eq!(u16::from_be(d.dst_port), 80);
                assert_eq!(env.counter(CTR_LB_NO_BE), 2);
            }),
        ],
    );
}

/// A flood at a frontend without backends gets at most 1000 ICMP replies a second; the
/// rest is only dropped (and still reported).
#[test]
fn no_backend_rejects_are_rate_limited() {
    need_root!();
    let mut env = Env::new();
    env.service((VIP, 80), TCP, RANDOM, &[], &[]);
    let mut verdicts = Vec::new();
    for sport in 0..1200u16 {
        let frame = Pkt::tcp((CLIENT, 20000 + sport), (VIP, 80), SYN).build();
        verdicts.push(env.run(Hook::FromEp, &frame, 1).retval);
    }
    let first_drop = verdicts
        .iter()
        .position(|v| *v != TC_ACT_REDIRECT)
        .expect("some packets are dropped once the budget is spent");
    assert_eq!(first_drop, 1000, "1000 replies before the first drop");
    assert!(
        verdicts[first_drop..].iter().all(|v| *v == 2),
        "the rest dropped (TC_ACT_SHOT)"
    );
    assert_eq!(env.counter(CTR_LB_NO_BE), 1200, "every packet counted");
}

#[test]
fn round_robin_cycles_through_backends() {
    need_root!();
    let mut env = Env::new();
    for (id, b) in [(1, B1), (2, B2), (3, B3)] {
        env.backend(id, b, 8080, TCP, BE_ACTIVE);
    }
    let rr = Svc {
        algorithm: LB_ALG_ROUND_ROBIN,
        ..RANDOM
    };
    env.service((VIP, 80), TCP, rr, &[1, 2, 3], &[]);
    let order = [B1, B2, B3, B1, B2, B3, B1];
    let steps = order
        .iter()
        .enumerate()
        .map(|(i, b)| {
            let sport = 40000 + i as u16;
            run(
                "new flow takes the next slot",
                Hook::FromEp,
                Pkt::tcp((CLIENT, sport), (VIP, 80), SYN),
                &[TC_ACT_OK],
                want((CLIENT, sport), (*b, 8080)),
            )
        })
        .collect();
    run_case(&mut env, steps);
}

#[test]
fn maglev_picks_the_table_entry() {
    need_root!();
    let mut env = Env::new();
    for (id, b) in [(1, B1), (2, B2), (3, B3)] {
        env.backend(id, b, 8080, TCP, BE_ACTIVE);
    }
    let maglev = Svc {
        algorithm: LB_ALG_MAGLEV,
        ..RANDOM
    };
    // Slots only hold backend 2: any fallback to slot selection shows.
    env.service((VIP, 80), TCP, maglev, &[2], &[]);

    // The daemon's job: an inner array of KLD_MAGLEV_M backend ids with
    // BPF_F_INNER_MAP, inserted under the service's rev_nat_index.
    let m = MAGLEV_M_DEFAULT;
    let mut table: Array<MapData, u32> =
        Array::create(m, MAGLEV_INNER_FLAGS).expect("create inner Maglev array");
    for i in 0..m {
        table.set(i, 1u32, 0).unwrap();
    }
    let idx = packet::flow_hash(CLIENT, 40000, VIP, 80, TCP) % m;
    table.set(idx, 3u32, 0).unwrap();
    {
        let mut outer: HashOfMaps<_, u32, Array<MapData, u32>> =
            HashOfMaps::try_from(env.ebpf.map_mut(MAP_LB4_MAGLEV).unwrap()).unwrap();
        outer
            .insert(u32::from(RNAT), &table, 0)
            .expect("insert Maglev table");
    }
    drop(table); // the outer map holds a reference
    run_case(
        &mut env,
        vec![
            run(
                "the flow's table index holds backend 3",
                Hook::FromEp,
                Pkt::tcp((CLIENT, 40000), (VIP, 80), SYN),
                &[TC_ACT_OK],
                want((CLIENT, 40000), (B3, 8080)),
            ),
            run(
                "another flow lands on a backend-1 entry",
                Hook::FromEp,
                Pkt::tcp((CLIENT, 40001), (VIP, 80), SYN),
                &[TC_ACT_OK],
                want((CLIENT, 40001), (B1, 8080)),
            ),
            act("table removed", |env| {
                let mut outer: HashOfMaps<_, u32, Array<MapData, u32>> =
                    HashOfMaps::try_from(env.ebpf.map_mut(MAP_LB4_MAGLEV).unwrap()).unwrap();
                outer.remove(&u32::from(RNAT)).unwrap();
            }),
            run(
                "without a table: random over the active slots",
                Hook::FromEp,
                Pkt::tcp((CLIENT, 40002), (VIP, 80), SYN),
                &[TC_ACT_OK],
                want((CLIENT, 40002), (B2, 8080)),
            ),
            run(
                "established flow unaffected",
                Hook::FromEp,
                Pkt::tcp((CLIENT, 40000), (VIP, 80), ACK),
                &[TC_ACT_OK],
                want((CLIENT, 40000), (B3, 8080)),
            ),
        ],
    );
}

#[test]
fn client_ip_affinity_sticks_across_source_ports() {
    need_root!();
    let mut env = Env::new();
    for (id, b) in [(1, B1), (2, B2), (3, B3)] {
        env.backend(id, b, 8080, TCP, BE_ACTIVE);
    }
    let affinity = Svc {
        flags: SVC_F_AFFINITY,
        affinity_sec: 60,
        algorithm: LB_ALG_ROUND_ROBIN, // without affinity every flow would move
        ..RANDOM
    };
    env.service((VIP, 80), TCP, affinity, &[1, 2, 3], &[]);
    let mut steps = Vec::new();
    for sport in 40000..40010 {
        steps.push(run(
            "every flow of the client goes to the first backend",
            Hook::FromEp,
            Pkt::tcp((CLIENT, sport), (VIP, 80), SYN),
            &[TC_ACT_OK],
            want((CLIENT, sport), (B1, 8080)),
        ));
    }
    steps.push(run(
        "another client gets the next backend",
        Hook::FromEp,
        Pkt::tcp((CLIENT2, 40000), (VIP, 80), SYN),
        &[TC_ACT_OK],
        want((CLIENT2, 40000), (B2, 8080)),
    ));
    steps.push(act("affinity entry", |env| {
        let map: HashMap<_, Lb4AffinityKey, Lb4AffinityValue> =
            HashMap::try_from(env.ebpf.map(MAP_LB4_AFFIN).unwrap()).unwrap();
        let key = Lb4AffinityKey {
            client: be32(CLIENT),
            rev_nat_index: RNAT,
            pad: [0; 2],
        };
        assert_eq!(map.get(&key, 0).expect("affinity entry").backend_id, 1);
    }));
    steps.push(act("remembered backend terminating", move |env| {
        env.backend(1, B1, 8080, TCP, BE_TERMINATING);
        env.service((VIP, 80), TCP, affinity, &[2, 3], &[1]);
    }));
    steps.push(run(
        "new flow of the client moves to an active backend (round robin: slot 3 % 2 + 1)",
        Hook::FromEp,
        Pkt::tcp((CLIENT, 41000), (VIP, 80), SYN),
        &[TC_ACT_OK],
        want((CLIENT, 41000), (B2, 8080)),
    ));
    steps.push(run(
        "and sticks there",
        Hook::FromEp,
        Pkt::tcp((CLIENT, 41001), (VIP, 80), SYN),
        &[TC_ACT_OK],
        want((CLIENT, 41001), (B2, 8080)),
    ));
    run_case(&mut env, steps);
}

#[test]
fn nodeport_dnat_at_uplink_and_reverse_at_backend() {
    need_root!();
    let mut env = Env::new();
    env.backend(1, B1, 8080, TCP, BE_ACTIVE);
    env.backend(2, REMOTE_BE, 8080, TCP, BE_ACTIVE);
    let nodeport = Svc {
        flags: SVC_F_NODEPORT | SVC_F_LOCAL_ONLY,
        ..RANDOM
    };
    env.service((NODE, 30080), TCP, nodeport, &[1], &[]);
    env.service(
        (VIP, 80),
        TCP,
        Svc {
            rev_nat: 8,
            ..RANDOM
        },
        &[1],
        &[],
    );
    let lb = Svc {
        rev_nat: 9,
        flags: SVC_F_LOADBALANCER,
        ..RANDOM
    };
    let lb_ip = Ipv4Addr::new(192, 0, 2, 100);
    env.service((lb_ip, 443), TCP, lb, &[2], &[]);
    run_case(
        &mut env,
        vec![
            run(
                "outside -> node:30080 DNATed to the local backend",
                Hook::FromNetdev,
                Pkt::tcp((OUTSIDE, 50000), (NODE, 30080), SYN),
                &[TC_ACT_OK],
                want((OUTSIDE, 50000), (B1, 8080)),
            ),
            act("translated entry is north-south", |env| {
                let e = env
                    .ct(ct_key((OUTSIDE, 50000), (B1, 8080), TCP, CT_DIR_INGRESS))
                    .expect("north-south conntrack entry");
                assert_eq!(e.flags & CT_F_NORTH_SOUTH, CT_F_NORTH_SOUTH);
                assert_eq!(e.rev_nat_index, RNAT);
            }),
            run(
                "to_ep of the backend passes the translated packet",
                Hook::ToEp,
                Pkt::tcp((OUTSIDE, 50000), (B1, 8080), SYN),
                &[TC_ACT_OK],
                want((OUTSIDE, 50000), (B1, 8080)),
            ),
            run(
                "reply enters at from_ep of the backend: source back to node:30080 (routed out or passed)",
                Hook::FromEp,
                Pkt::tcp((B1, 8080), (OUTSIDE, 50000), SYN | ACK),
                &[TC_ACT_OK, TC_ACT_REDIRECT],
                want((NODE, 30080), (OUTSIDE, 50000)),
            ),
            run(
                "the rewritten reply passes to_netdev untouched",
                Hook::ToNetdev,
                Pkt::tcp((NODE, 30080), (OUTSIDE, 50000), SYN | ACK),
                &[TC_ACT_OK],
                want((NODE, 30080), (OUTSIDE, 50000)),
            ),
            run(
                "ClusterIP is not reachable from the uplink",
                Hook::FromNetdev,
                Pkt::tcp((OUTSIDE, 50001), (VIP, 80), SYN),
                &[TC_ACT_OK],
                want((OUTSIDE, 50001), (VIP, 80)),
            ),
            run(
                "LoadBalancer IP DNATed to a remote backend",
                Hook::FromNetdev,
                Pkt::tcp((OUTSIDE, 50002), (lb_ip, 443), SYN),
                &[TC_ACT_OK],
                want((OUTSIDE, 50002), (REMOTE_BE, 8080)),
            ),
            run(
                "remote backend's reply routed back through the node: rewritten at to_netdev",
                Hook::ToNetdev,
                Pkt::tcp((REMOTE_BE, 8080), (OUTSIDE, 50002), SYN | ACK),
                &[TC_ACT_OK],
                want((lb_ip, 443), (OUTSIDE, 50002)),
            ),
        ],
    );
}

#[test]
fn nodeport_without_backend_rejects_at_uplink() {
    need_root!();
    let mut env = Env::new();
    let nodeport = Svc {
        flags: SVC_F_NODEPORT,
        ..RANDOM
    };
    env.service((NODE, 30080), TCP, nodeport, &[], &[]);
    let frame = Pkt::tcp((OUTSIDE, 50000), (NODE, 30080), SYN).build();
    let out = env.run(Hook::FromNetdev, &frame, 1);
    assert_eq!(out.retval, TC_ACT_REDIRECT, "sent back out of the uplink");
    assert_icmp_reject(&out.data_out, &frame, NODE, OUTSIDE);
    run_case(
        &mut env,
        vec![act("drop event", |env| {
            let ev = env.events();
            assert_eq!(ev.len(), 1, "{ev:?}");
            assert_eq!((ev[0].r#type, ev[0].reason), (EVENT_DROP, DROP_NO_SERVICE));
            assert_eq!(ev[0].direction, DIR_INGRESS);
        })],
    );
}

/// ns/packet from BPF_PROG_TEST_RUN (kernel-measured mean over `repeat`
/// runs), events off. Run: `cargo test -p kldnet-bpf --test lb_packets --
/// --ignored --nocapture bench`.
///
/// The kernel runs the program `repeat` times on the SAME skb, so a rewrite
/// persists into the next run. To keep every run a DNAT, the backend of
/// VIP:80 is B1:8080 and B1:8080 is itself a frontend whose backend is
/// VIP:80: runs alternate VIP -> B1 -> VIP, each one a full translation
/// (and the reply at to_ep alternates between the two reverse NATs).
#[test]
#[ignore = "benchmark: prints ns/packet"]
fn bench_ns_per_packet() {
    need_root!();
    const REPEAT: u32 = 100_000;
    let quiet = Knobs {
        events_enabled: 0,
        ..Knobs::default()
    };
    // Lifetime 0: every run finds its entries expired, i.e. a new flow.
    let churn = Knobs {
        events_enabled: 0,
        ct_lifetime_tcp_sec: 0,
        ct_lifetime_nontcp_sec: 0,
        ..Knobs::default()
    };
    let setup = |env: &mut Env| {
        env.backend(1, B1, 8080, TCP, BE_ACTIVE);
        env.backend(9, VIP, 80, TCP, BE_ACTIVE);
        env.service((VIP, 80), TCP, RANDOM, &[1], &[]);
        env.service(
            (B1, 8080),
            TCP,
            Svc {
                rev_nat: 8,
                ..RANDOM
            },
            &[9],
            &[],
        );
    };
    let plain = Pkt::tcp((CLIENT, 40000), (B2, 8080), ACK).build();
    let to_vip = Pkt::tcp((CLIENT, 40000), (VIP, 80), ACK).build();
    let to_b1 = Pkt::tcp((CLIENT, 40000), (B1, 8080), ACK).build();
    let reply = Pkt::tcp((B1, 8080), (CLIENT, 40000), ACK).build();

    let mut rows = Vec::new();
    let mut env = Env::with_knobs(quiet);
    setup(&mut env);
    env.run(Hook::FromEp, &plain, 1);
    rows.push((
        "from_ep plain forward, established (no service)",
        env.run(Hook::FromEp, &plain, REPEAT),
    ));
    env.run(Hook::FromEp, &to_vip, 1);
    env.run(Hook::FromEp, &to_b1, 1);
    let before = env.counter(CTR_LB_XLATE);
    rows.push((
        "from_ep DNAT, established flow",
        env.run(Hook::FromEp, &to_vip, REPEAT),
    ));
    let xlated = env.counter(CTR_LB_XLATE) - before;
    assert_eq!(xlated, u64::from(REPEAT), "every run must translate");
    assert_eq!(
        env.counter(CTR_LB_NEW_FLOW),
        2,
        "established runs must not reselect"
    );
    let before = env.counter(CTR_LB_RNAT);
    rows.push((
        "to_ep reverse NAT, established flow",
        env.run(Hook::ToEp, &reply, REPEAT),
    ));
    assert_eq!(env.counter(CTR_LB_RNAT) - before, u64::from(REPEAT));
    drop(env);

    let mut env = Env::with_knobs(churn);
    setup(&mut env);
    rows.push((
        "from_ep plain forward, new flow",
        env.run(Hook::FromEp, &plain, REPEAT),
    ));
    rows.push((
        "from_ep DNAT, new flow",
        env.run(Hook::FromEp, &to_vip, REPEAT),
    ));
    assert_eq!(
        env.counter(CTR_LB_NEW_FLOW),
        u64::from(REPEAT),
        "new-flow bench did not churn"
    );
    drop(env);

    println!("kld tc per-packet cost, BPF_PROG_TEST_RUN repeat={REPEAT}, events off:");
    for (name, out) in &rows {
        assert_eq!(out.retval, TC_ACT_OK, "{name}");
        println!("  {name:<50} {:>6} ns/packet", out.duration_ns);
    }
}
