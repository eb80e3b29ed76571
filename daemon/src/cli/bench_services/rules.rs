// SPDX-License-Identifier: Apache-2.0
//! The same generated services as kube-proxy would program them (iptables mode and
//! nftables mode, nat part) and as kldnet reads them (TOML). Pure text generation.
//!
//! The iptables text follows kube-proxy's `syncProxyRules` (pkg/proxy/iptables/proxier.go):
//! `KUBE-SERVICES` holds one rule per service port, in order, jumping to a `KUBE-SVC-<hash>`
//! chain that marks off-cluster sources for masquerade and picks an endpoint with
//! `-m statistic --mode random --probability 1/(n-i)`; each `KUBE-SEP-<hash>` chain DNATs.
//! The nftables text follows kube-proxy's nftables mode (pkg/proxy/nftables/proxier.go):
//! one verdict map `service-ips` keyed by `ip daddr . meta l4proto . th dport`, a
//! `service-<hash>` chain per service port choosing with `numgen random mod n vmap`, an
//! `endpoint-<hash>` chain per endpoint.

use std::fmt::Write as _;
use std::net::{Ipv4Addr, SocketAddrV4};

/// Cluster CIDR the masquerade rules exempt (kube-proxy's `--cluster-cidr`).
pub const CLUSTER_CIDR: &str = "10.244.0.0/16";
/// Namespace of every generated service.
pub const NAMESPACE: &str = "bench";

/// One generated service with one TCP port.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BenchService {
    pub name: String,
    pub vip: Ipv4Addr,
    pub port: u16,
    pub backends: Vec<SocketAddrV4>,
}

fn offset(base: Ipv4Addr, n: u32) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(base) + n)
}

/// Service `i`: VIP 10.96.0.0 + 1 + i, port 80, `backends` distinct backends
/// 10.128.0.0 + 1 + i·backends + j, port 8080 (addresses nobody answers on).
pub fn service(i: u32, backends: u32) -> BenchService {
    BenchService {
        name: format!("svc-{i}"),
        vip: offset(Ipv4Addr::new(10, 96, 0, 0), 1 + i),
        port: 80,
        backends: (0..backends)
            .map(|j| {
                SocketAddrV4::new(
                    offset(Ipv4Addr::new(10, 128, 0, 0), 1 + i * backends + j),
                    8080,
                )
            })
            .collect(),
    }
}

/// Services `0..n`; the last one's backends are `last` (real servers) when given.
pub fn services(n: u32, backends: u32, last: &[SocketAddrV4]) -> Vec<BenchService> {
    let mut v: Vec<BenchService> = (0..n).map(|i| service(i, backends)).collect();
    if let Some(l) = v.last_mut()
        && !last.is_empty()
    {
        l.backends = last.to_vec();
    }
    v
}

/// kube-proxy's chain-name hash: 16 base32 characters of a hash of the name.
fn chain_hash(text: &str) -> String {
    const ALPHABET: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    let fnv = |seed: u64| {
        text.bytes().fold(seed, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
        })
    };
    let bits = (u128::from(fnv(0xcbf2_9ce4_8422_2325)) << 64) | u128::from(fnv(0x84222325cbf29ce4));
    (0..16)
        .map(|k| ALPHABET[((bits >> (k * 5)) & 31) as usize] as char)
        .collect()
}

fn port_name(s: &BenchService) -> String {
    format!("{NAMESPACE}/{}:http", s.name)
}

fn svc_chain(s: &BenchService) -> String {
    format!("KUBE-SVC-{}", chain_hash(&format!("{}tcp", port_name(s))))
}

fn sep_chain(s: &BenchService, be: &SocketAddrV4) -> String {
    format!(
        "KUBE-SEP-{}",
        chain_hash(&format!("{}tcp{be}", port_name(s)))
    )
}

/// Declarations and rules of one service (kube-proxy's per-service output).
fn iptables_service(s: &BenchService, chains: &mut String, rules: &mut String) {
    let pn = port_name(s);
    let svc = svc_chain(s);
    let _ = writeln!(chains, ":{svc} - [0:0]");
    let _ = writeln!(
        rules,
        "-A KUBE-SERVICES -d {}/32 -p tcp -m comment --comment \"{pn} cluster IP\" -m tcp --dport {} -j {svc}",
        s.vip, s.port
    );
    let _ = writeln!(
        rules,
        "-A {svc} ! -s {CLUSTER_CIDR} -d {}/32 -p tcp -m comment --comment \"{pn} cluster IP\" -m tcp --dport {} -j KUBE-MARK-MASQ",
        s.vip, s.port
    );
    let n = s.backends.len();
    for (i, be) in s.backends.iter().enumerate() {
        let sep = sep_chain(s, be);
        let _ = writeln!(chains, ":{sep} - [0:0]");
        if i + 1 < n {
            let _ = writeln!(
                rules,
                "-A {svc} -m comment --comment \"{pn} -> {be}\" -m statistic --mode random --probability {:.10} -j {sep}",
                1.0 / (n - i) as f64
            );
        } else {
            let _ = writeln!(
                rules,
                "-A {svc} -m comment --comment \"{pn} -> {be}\" -j {sep}"
            );
        }
    }
    for be in &s.backends {
        let sep = sep_chain(s, be);
        let _ = writeln!(
            rules,
            "-A {sep} -s {}/32 -m comment --comment \"{pn}\" -j KUBE-MARK-MASQ",
            be.ip()
        );
        let _ = writeln!(
            rules,
            "-A {sep} -p tcp -m comment --comment \"{pn}\" -m tcp -j DNAT --to-destination {be}"
        );
    }
}

/// The full nat ruleset for `iptables-restore --noflush`: every kube-proxy chain declared
/// (so flushed and rewritten), the services in order, the NodePort rule last.
pub fn iptables_full(svcs: &[BenchService]) -> String {
    let mut chains = String::from(
        "*nat\n:KUBE-SERVICES - [0:0]\n:KUBE-NODEPORTS - [0:0]\n:KUBE-POSTROUTING - [0:0]\n:KUBE-MARK-MASQ - [0:0]\n",
    );
    let mut rules = String::from(
        "-A KUBE-POSTROUTING -m mark ! --mark 0x4000/0x4000 -j RETURN\n\
         -A KUBE-POSTROUTING -j MARK --set-xmark 0x4000/0x0\n\
         -A KUBE-POSTROUTING -m comment --comment \"kubernetes service traffic requiring SNAT\" -j MASQUERADE --random-fully\n\
         -A KUBE-MARK-MASQ -j MARK --set-xmark 0x4000/0x4000\n",
    );
    for s in svcs {
        iptables_service(s, &mut chains, &mut rules);
    }
    rules.push_str(
        "-A KUBE-SERVICES -m comment --comment \"kubernetes service nodeports; NOTE: this must be the last rule in this chain\" -m addrtype --dst-type LOCAL -j KUBE-NODEPORTS\n",
    );
    chains + &rules + "COMMIT\n"
}

/// The jumps from the built-in chains, installed once (kube-proxy ensures them with
/// `iptables -C`/`-I` outside its restore).
pub fn iptables_jumps() -> String {
    "*nat\n\
     -I OUTPUT -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES\n\
     -I PREROUTING -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES\n\
     -I POSTROUTING -m comment --comment \"kubernetes postrouting rules\" -j KUBE-POSTROUTING\n\
     COMMIT\n"
        .to_string()
}

/// Only one new service: its chains and its `KUBE-SERVICES` rule appended (the optimistic
/// incremental update; kube-proxy itself rewrites `KUBE-SERVICES` whole).
pub fn iptables_one(s: &BenchService) -> String {
    let (mut chains, mut rules) = (String::from("*nat\n"), String::new());
    iptables_service(s, &mut chains, &mut rules);
    chains + &rules + "COMMIT\n"
}

fn nft_hash(s: &BenchService) -> String {
    chain_hash(&format!("{}tcp", port_name(s)))[..8].to_string()
}

fn nft_service(s: &BenchService, out: &mut String) {
    let h = nft_hash(s);
    let t = "ip kube-proxy";
    let mut vmap = Vec::new();
    for (j, be) in s.backends.iter().enumerate() {
        let ep = format!(
            "endpoint-{h}-{}-{}",
            be.ip().to_string().replace('.', "-"),
            be.port()
        );
        let _ = writeln!(out, "add chain {t} {ep}");
        let _ = writeln!(
            out,
            "add rule {t} {ep} ip saddr {} jump mark-for-masquerade",
            be.ip()
        );
        let _ = writeln!(out, "add rule {t} {ep} meta l4proto tcp dnat to {be}");
        vmap.push(format!("{j} : goto {ep}"));
    }
    let svc = format!("service-{h}-{}-{}-tcp-http", NAMESPACE, s.name);
    let _ = writeln!(out, "add chain {t} {svc}");
    let _ = writeln!(
        out,
        "add rule {t} {svc} ip daddr {} tcp dport {} ip saddr != {CLUSTER_CIDR} jump mark-for-masquerade",
        s.vip, s.port
    );
    if !vmap.is_empty() {
        let _ = writeln!(
            out,
            "add rule {t} {svc} numgen random mod {} vmap {{ {} }}",
            vmap.len(),
            vmap.join(" , ")
        );
    }
    let _ = writeln!(
        out,
        "add element {t} service-ips {{ {} . tcp . {} : goto {svc} }}",
        s.vip, s.port
    );
}

/// The full kube-proxy nftables-mode ruleset (nat part) for `nft -f`.
pub fn nft_full(svcs: &[BenchService]) -> String {
    let mut out = String::from(
        "add table ip kube-proxy { comment \"rules for kube-proxy\" ; }\n\
         add chain ip kube-proxy mark-for-masquerade\n\
         add rule ip kube-proxy mark-for-masquerade mark set mark or 0x4000\n\
         add chain ip kube-proxy masquerading\n\
         add rule ip kube-proxy masquerading mark and 0x4000 == 0 return\n\
         add rule ip kube-proxy masquerading mark set mark xor 0x4000\n\
         add rule ip kube-proxy masquerading masquerade fully-random\n\
         add map ip kube-proxy service-ips { type ipv4_addr . inet_proto . inet_service : verdict ; }\n\
         add chain ip kube-proxy services\n\
         add rule ip kube-proxy services ip daddr . meta l4proto . th dport vmap @service-ips\n\
         add chain ip kube-proxy nat-prerouting { type nat hook prerouting priority -100 ; }\n\
         add rule ip kube-proxy nat-prerouting jump services\n\
         add chain ip kube-proxy nat-output { type nat hook output priority -100 ; }\n\
         add rule ip kube-proxy nat-output jump services\n\
         add chain ip kube-proxy nat-postrouting { type nat hook postrouting priority 100 ; }\n\
         add rule ip kube-proxy nat-postrouting jump masquerading\n",
    );
    for s in svcs {
        nft_service(s, &mut out);
    }
    out
}

/// One new service as kube-proxy's nftables mode adds it: its chains and one map element,
/// in one transaction.
pub fn nft_one(s: &BenchService) -> String {
    let mut out = String::new();
    nft_service(s, &mut out);
    out
}

/// The services as kldnet configuration.
pub fn kldnet_toml(svcs: &[BenchService]) -> String {
    let mut out = String::new();
    for s in svcs {
        let backends: Vec<String> = s
            .backends
            .iter()
            .map(|b| format!("{{ address = \"{}\", port = {} }}", b.ip(), b.port()))
            .collect();
        let _ = writeln!(
            out,
            "[[service]]\nname = \"{}\"\nnamespace = \"{NAMESPACE}\"\naddresses = [\"{}\"]\nports = [{{ name = \"http\", port = {} }}]\nbackends = [{}]\n",
            s.name,
            s.vip,
            s.port,
            backends.join(", ")
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_distinct_and_last_is_real() {
        let real = [SocketAddrV4::new(Ipv4Addr::new(10, 1, 0, 1), 8080)];
        let v = services(3, 2, &real);
        assert_eq!(v[0].vip, Ipv4Addr::new(10, 96, 0, 1));
        assert_eq!(v[2].vip, Ipv4Addr::new(10, 96, 0, 3));
        assert_eq!(v[1].backends[1].ip(), &Ipv4Addr::new(10, 128, 0, 4));
        assert_eq!(v[2].backends, real);
        assert_eq!(service(29_999, 2).vip, Ipv4Addr::new(10, 96, 117, 48));
    }

    #[test]
    fn iptables_text_is_kube_proxy_shaped() {
        let s = service(0, 2);
        let t = iptables_full(std::slice::from_ref(&s));
        assert!(t.starts_with("*nat\n:KUBE-SERVICES - [0:0]\n"), "{t}");
        assert!(t.ends_with("COMMIT\n"));
        assert_eq!(t.matches("-j DNAT --to-destination").count(), 2);
        assert!(t.contains("--probability 0.5000000000 -j KUBE-SEP-"), "{t}");
        // The NodePort rule stays the last rule of KUBE-SERVICES.
        let last = t.lines().rfind(|l| l.starts_with("-A KUBE-SERVICES"));
        assert!(last.is_some_and(|l| l.contains("KUBE-NODEPORTS")));
        let svc = svc_chain(&s);
        assert_eq!(svc.len(), "KUBE-SVC-".len() + 16);
        assert!(iptables_one(&s).contains(&format!(":{svc} - [0:0]")));
    }

    #[test]
    fn nft_text_has_one_map_element_per_service() {
        let v = services(2, 3, &[]);
        let t = nft_full(&v);
        assert_eq!(
            t.matches("add element ip kube-proxy service-ips").count(),
            2
        );
        assert!(
            t.contains("numgen random mod 3 vmap { 0 : goto endpoint-"),
            "{t}"
        );
        // Endpoint chains exist before the service chain that jumps to them.
        let ep = t.find("add chain ip kube-proxy endpoint-").unwrap();
        let svc = t.find("add chain ip kube-proxy service-").unwrap();
        assert!(ep < svc);
    }

    #[test]
    fn kldnet_toml_lists_backends() {
        let t = kldnet_toml(&[service(0, 2)]);
        assert!(t.contains("addresses = [\"10.96.0.1\"]"));
        assert!(t.contains(
            "{ address = \"10.128.0.1\", port = 8080 }, { address = \"10.128.0.2\", port = 8080 }"
        ));
    }
}
