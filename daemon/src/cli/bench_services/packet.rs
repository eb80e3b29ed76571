// SPDX-License-Identifier: Apache-2.0
//! (d) per-packet LB cost of the tc program, in ns/packet, from BPF_PROG_TEST_RUN.
//!
//! Same method as `bpf/tests/lb_packets.rs` `bench_ns_per_packet`: the kernel runs the
//! program `repeat` times on one skb, so a rewrite persists into the next run. To keep every
//! run a translation, VIP:80 → B1:8080 and B1:8080 is itself a frontend → VIP:80. "New
//! flow" runs load the object with conntrack lifetimes of 0, so every run finds its entry
//! expired and selects a backend again. The maps live in a private bpffs.

use std::net::Ipv4Addr;
use std::os::fd::{AsFd, AsRawFd};
use std::path::Path;

use anyhow::{Context, Result, ensure};
use aya::maps::HashMap;
use aya::programs::SchedClassifier;
use aya::{Ebpf, EbpfLoader};
use kldnet_bpf::abi::*;
use kldnet_bpf::test_run::test_run;
use kldnet_bpf::{PROG_FROM_EP, PROG_TO_EP, TC_PROGRAMS, datapath_object};

const TC_ACT_OK: u32 = 0;
const TCP: u8 = 6;
const ACK: u8 = 0x10;
const CLIENT: Ipv4Addr = Ipv4Addr::new(10, 0, 1, 1);
const VIP: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 10);
const B1: Ipv4Addr = Ipv4Addr::new(10, 0, 2, 1);
const B2: Ipv4Addr = Ipv4Addr::new(10, 0, 2, 2);

/// One measured row: what ran, mean ns per packet.
pub type Row = (&'static str, u32);

fn be32(a: Ipv4Addr) -> u32 {
    u32::from(a).to_be()
}

/// Flow events off (as in the BPF bench): the cost of the LB path itself.
fn load(pins: &Path, ct_secs: u32) -> Result<Ebpf> {
    let mut ebpf = EbpfLoader::new()
        .default_map_pin_directory(pins)
        .override_global(KNOB_EVENTS_ENABLED, &0u32, true)
        .override_global(KNOB_CT_LIFETIME_TCP_SEC, &ct_secs, true)
        .override_global(KNOB_CT_LIFETIME_NONTCP_SEC, &ct_secs, true)
        .load(datapath_object())
        .context("load datapath.bpf.o")?;
    for name in TC_PROGRAMS {
        let prog: &mut SchedClassifier = ebpf
            .program_mut(name)
            .with_context(|| format!("program {name} missing"))?
            .try_into()?;
        prog.load().with_context(|| format!("verify {name}"))?;
    }
    Ok(ebpf)
}

/// VIP:80 → B1:8080 (rev NAT 7) and B1:8080 → VIP:80 (rev NAT 8), random selection.
fn program(ebpf: &mut Ebpf) -> Result<()> {
    let mut be: HashMap<_, u32, Lb4Backend> =
        HashMap::try_from(ebpf.map_mut(MAP_LB4_BE).context("map kld_lb4_be missing")?)?;
    for (id, addr, port) in [(1u32, B1, 8080u16), (9, VIP, 80)] {
        let v = Lb4Backend {
            address: be32(addr),
            port: port.to_be(),
            proto: TCP,
            state: BE_ACTIVE,
        };
        be.insert(id, v, 0)?;
    }
    for (fe, port, rnat, backend) in [(VIP, 80u16, 7u16, 1u32), (B1, 8080, 8, 9)] {
        let key = |slot: u16| Lb4Key {
            address: be32(fe),
            dport: port.to_be(),
            proto: TCP,
            scope: SCOPE_EXTERNAL,
            backend_slot: slot,
            pad: [0; 2],
        };
        let mut svc: HashMap<_, Lb4Key, Lb4Service> = HashMap::try_from(
            ebpf.map_mut(MAP_LB4_SVC)
                .context("map kld_lb4_svc missing")?,
        )?;
        let master = Lb4Service {
            count: 1,
            total: 1,
            rev_nat_index: rnat,
            algorithm: LB_ALG_RANDOM,
            ..Default::default()
        };
        svc.insert(key(0), master, 0)?;
        let slot = Lb4Service {
            backend_id: backend,
            rev_nat_index: rnat,
            ..Default::default()
        };
        svc.insert(key(1), slot, 0)?;
        let mut rn: HashMap<_, u16, Lb4ReverseNat> = HashMap::try_from(
            ebpf.map_mut(MAP_LB4_RNAT)
                .context("map kld_lb4_rnat missing")?,
        )?;
        let v = Lb4ReverseNat {
            address: be32(fe),
            port: port.to_be(),
            pad: [0; 2],
        };
        rn.insert(rnat, v, 0)?;
    }
    Ok(())
}

fn csum(data: &[u8], mut acc: u32) -> u16 {
    let mut chunks = data.chunks_exact(2);
    for c in &mut chunks {
        acc += u32::from(u16::from_be_bytes([c[0], c[1]]));
    }
    if let [last] = chunks.remainder() {
        acc += u32::from(*last) << 8;
    }
    while acc > 0xffff {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    !(acc as u16)
}

/// An Ethernet/IPv4/TCP frame with valid checksums and a 6-byte payload.
pub fn tcp_frame(src: (Ipv4Addr, u16), dst: (Ipv4Addr, u16), flags: u8) -> Vec<u8> {
    let mut f = vec![0x02, 0, 0, 0, 0, 0xfe, 0x02, 0, 0, 0, 0, 0x01, 0x08, 0x00];
    let payload = b"kldnet";
    let l4_len = 20 + payload.len();
    let mut ip = [0u8; 20];
    ip[0] = 0x45;
    ip[2..4].copy_from_slice(&((20 + l4_len) as u16).to_be_bytes());
    ip[6] = 0x40;
    ip[8] = 64;
    ip[9] = TCP;
    ip[12..16].copy_from_slice(&src.0.octets());
    ip[16..20].copy_from_slice(&dst.0.octets());
    let c = csum(&ip, 0);
    ip[10..12].copy_from_slice(&c.to_be_bytes());
    let mut l4 = Vec::with_capacity(l4_len);
    l4.extend_from_slice(&src.1.to_be_bytes());
    l4.extend_from_slice(&dst.1.to_be_bytes());
    l4.extend_from_slice(&1000u32.to_be_bytes());
    l4.extend_from_slice(&0u32.to_be_bytes());
    l4.extend_from_slice(&[5 << 4, flags, 0xff, 0xff, 0, 0, 0, 0]);
    l4.extend_from_slice(payload);
    let mut pseudo = Vec::with_capacity(12);
    pseudo.extend_from_slice(&src.0.octets());
    pseudo.extend_from_slice(&dst.0.octets());
    pseudo.extend_from_slice(&[0, TCP]);
    pseudo.extend_from_slice(&(l4_len as u16).to_be_bytes());
    let acc = pseudo
        .chunks_exact(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], c[1]])))
        .sum();
    let c = csum(&l4, acc);
    l4[16..18].copy_from_slice(&c.to_be_bytes());
    f.extend_from_slice(&ip);
    f.extend_from_slice(&l4);
    f
}

fn run(ebpf: &Ebpf, prog: &str, frame: &[u8], repeat: u32) -> Result<u32> {
    let p: &SchedClassifier = ebpf
        .program(prog)
        .with_context(|| format!("program {prog} missing"))?
        .try_into()?;
    let fd = p.fd()?.as_fd().as_raw_fd();
    let out = test_run(fd, frame, repeat).context("BPF_PROG_TEST_RUN")?;
    ensure!(
        out.retval == TC_ACT_OK,
        "{prog} returned {} (expected TC_ACT_OK)",
        out.retval
    );
    Ok(out.duration_ns)
}

/// Measures the rows; `bpf_root` is a private bpffs mount.
pub fn measure(bpf_root: &Path, repeat: u32) -> Result<Vec<Row>> {
    let plain = tcp_frame((CLIENT, 40000), (B2, 8080), ACK);
    let to_vip = tcp_frame((CLIENT, 40000), (VIP, 80), ACK);
    let to_b1 = tcp_frame((CLIENT, 40000), (B1, 8080), ACK);
    let reply = tcp_frame((B1, 8080), (CLIENT, 40000), ACK);
    let mut rows = Vec::new();
    for (sub, ct_secs) in [("est", 21600u32), ("new", 0)] {
        let pins = kldnet_bpf::pin_dir(&bpf_root.join(sub));
        std::fs::create_dir_all(&pins).with_context(|| format!("create {}", pins.display()))?;
        let mut ebpf = load(&pins, ct_secs)?;
        program(&mut ebpf)?;
        match sub {
            "est" => {
                run(&ebpf, PROG_FROM_EP, &plain, 1)?;
                rows.push((
                    "plain forward, established (no service)",
                    run(&ebpf, PROG_FROM_EP, &plain, repeat)?,
                ));
                run(&ebpf, PROG_FROM_EP, &to_vip, 1)?;
                run(&ebpf, PROG_FROM_EP, &to_b1, 1)?;
                rows.push((
                    "DNAT, established flow",
                    run(&ebpf, PROG_FROM_EP, &to_vip, repeat)?,
                ));
                rows.push((
                    "reverse NAT of a reply, established flow",
                    run(&ebpf, PROG_TO_EP, &reply, repeat)?,
                ));
            }
            _ => {
                rows.push((
                    "plain forward, new flow",
                    run(&ebpf, PROG_FROM_EP, &plain, repeat)?,
                ));
                rows.push((
                    "DNAT, new flow (backend selection + 2 CT entries)",
                    run(&ebpf, PROG_FROM_EP, &to_vip, repeat)?,
                ));
            }
        }
    }
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frame_checksums_verify() {
        let f = tcp_frame((CLIENT, 40000), (VIP, 80), ACK);
        assert_eq!(f.len(), 14 + 20 + 26);
        assert_eq!(csum(&f[14..34], 0), 0, "IP header checksum");
        let mut pseudo = Vec::new();
        pseudo.extend_from_slice(&f[26..34]);
        pseudo.extend_from_slice(&[0, TCP, 0, 26]);
        let acc = pseudo
            .chunks_exact(2)
            .map(|c| u32::from(u16::from_be_bytes([c[0], c[1]])))
            .sum();
        assert_eq!(csum(&f[34..], acc), 0, "TCP checksum");
    }
}
