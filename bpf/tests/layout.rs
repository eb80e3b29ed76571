// SPDX-License-Identifier: Apache-2.0
//! The Rust mirror in `src/abi.rs` must match `include/kldnet/abi.h` byte for
//! byte: size, alignment, and every field's offset and size, with no implicit
//! padding on either side. The C numbers come from the header itself: a tiny
//! C program generated from the Rust field list is compiled with `cc` and
//! prints them, so a field that moves, grows or disappears in C fails here.

use std::mem::{align_of, offset_of, size_of, size_of_val};
use std::path::Path;
use std::process::Command;

use kldnet_bpf::abi;

struct Layout {
    c_name: &'static str,
    size: usize,
    align: usize,
    /// (name, offset, size)
    fields: Vec<(&'static str, usize, usize)>,
}

macro_rules! layout {
    ($t:ident => $c:literal { $($f:ident $(= $cf:literal)?),* $(,)? }) => {{
        let v = abi::$t::default();
        Layout {
            c_name: $c,
            size: size_of::<abi::$t>(),
            align: align_of::<abi::$t>(),
            fields: vec![$( (layout!(@name $f $($cf)?), offset_of!(abi::$t, $f), size_of_val(&v.$f)) ),*],
        }
    }};
    (@name $f:ident $cf:literal) => { $cf };
    (@name $f:ident) => { stringify!($f) };
}

fn rust_layouts() -> Vec<Layout> {
    vec![
        layout!(Lb4Key => "lb4_key" { address, dport, proto, scope, backend_slot, pad }),
        layout!(Lb4Service => "lb4_service" {
            backend_id, count, rev_nat_index, flags, algorithm, total, affinity_timeout_sec
        }),
        layout!(Lb4Backend => "lb4_backend" { address, port, proto, state }),
        layout!(Lb4AffinityKey => "lb4_affinity_key" { client, rev_nat_index, pad }),
        layout!(Lb4AffinityValue => "lb4_affinity_value" { last_used_ns, backend_id, pad }),
        layout!(Lb4ReverseNat => "lb4_reverse_nat" { address, port, pad }),
        layout!(SockRnatKey => "sock_rnat_key" { cookie, address, port, pad }),
        layout!(SockRnatValue => "sock_rnat_value" { address, port, rev_nat_index }),
        layout!(IpcacheKey => "ipcache_key" { prefixlen, family, pad, addr }),
        layout!(IpcacheValue => "ipcache_value" { identity, tunnel_endpoint, flags, pad }),
        layout!(EndpointKey => "endpoint_key" { addr, family, pad }),
        layout!(EndpointInfo => "endpoint_info" { ifindex, identity, policy_set, flags }),
        layout!(PolicyKey => "policy_key" { prefixlen, policy_set, identity, direction, proto, dport }),
        layout!(PolicyEntry => "policy_entry" { rule_id, action, flags, proxy_port }),
        layout!(Ct4Key => "ct4_key" { saddr, daddr, sport, dport, proto, flags, pad }),
        layout!(CtEntry => "ct_entry" {
            expires_ns, last_report_ns, backend_id, src_identity, rev_nat_index,
            tx_tcp_flags, rx_tcp_flags, flags, pad, policy_set, policy_peer
        }),
        layout!(FlowEvent => "flow_event" {
            timestamp_ns, ifindex, src_identity, dst_identity, rule_id, r#type = "type", reason,
            direction, family, proto, tcp_flags, rev_nat_index, src_addr, dst_addr, src_port,
            dst_port, pkt_len, flags, pad
        }),
        layout!(MetricsKey => "metrics_key" { reason, direction, pad }),
        layout!(MetricsValue => "metrics_value" { packets, bytes }),
        layout!(PolicyHitsKey => "policy_hits_key" { rule_id, direction, reason, pad }),
    ]
}

fn include_dir() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/include"))
}

/// Every `struct x {` defined in abi.h.
fn c_struct_names() -> Vec<String> {
    let h = std::fs::read_to_string(include_dir().join("kldnet/abi.h")).unwrap();
    h.lines()
        .filter_map(|l| {
            l.strip_prefix("struct ")?
                .strip_suffix(" {")
                .map(str::to_owned)
        })
        .collect()
}

#[test]
fn rust_mirror_covers_every_c_struct() {
    let rust: Vec<&str> = rust_layouts().iter().map(|l| l.c_name).collect();
    let c = c_struct_names();
    assert!(!c.is_empty());
    for name in &c {
        assert!(
            rust.contains(&name.as_str()),
            "abi.h struct {name} has no Rust mirror in src/abi.rs"
        );
    }
    for name in &rust {
        assert!(
            c.iter().any(|c| c == name),
            "src/abi.rs mirrors {name}, which abi.h does not define"
        );
    }
}

#[test]
fn rust_structs_have_no_implicit_padding() {
    for l in rust_layouts() {
        let sum: usize = l.fields.iter().map(|f| f.2).sum();
        assert_eq!(
            sum, l.size,
            "{}: fields sum to {sum} bytes but size is {}",
            l.c_name, l.size
        );
    }
}

#[test]
fn rust_layout_matches_c_header() {
    if !have_cc() {
        eprintln!("skipping: `cc` not found, cannot compute the C layout of abi.h");
        return;
    }
    let layouts = rust_layouts();
    let mut src = String::from(
        "#include <stddef.h>\n#include <stdio.h>\n#include \"kldnet/abi.h\"\nint main(void) {\n",
    );
    let mut expected = String::new();
    for l in &layouts {
        let s = l.c_name;
        src += &format!(
            "  printf(\"{s} size=%zu align=%zu\\n\", sizeof(struct {s}), _Alignof(struct {s}));\n"
        );
        expected += &format!("{s} size={} align={}\n", l.size, l.align);
        for (f, off, sz) in &l.fields {
            src += &format!(
                "  printf(\"{s}.{f} offset=%zu size=%zu\\n\", offsetof(struct {s}, {f}), \
                 sizeof(((struct {s} *)0)->{f}));\n"
            );
            expected += &format!("{s}.{f} offset={off} size={sz}\n");
        }
    }
    src += "  return 0;\n}\n";

    let got = run_c(&src);
    let diffs: Vec<String> = expected
        .lines()
        .zip(got.lines())
        .filter(|(e, g)| e != g)
        .map(|(e, g)| format!("  rust: {e}\n  C:    {g}"))
        .collect();
    assert!(
        diffs.is_empty() && expected.lines().count() == got.lines().count(),
        "abi.rs and abi.h disagree:\n{}",
        diffs.join("\n")
    );
}

fn have_cc() -> bool {
    Command::new("cc").arg("--version").output().is_ok()
}

/// Compile a C program against include/ with `cc` and return its stdout.
fn run_c(src: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    let c_file = dir.path().join("probe.c");
    let exe = dir.path().join("probe");
    std::fs::write(&c_file, src).unwrap();
    let out = Command::new("cc")
        .arg("-Wall")
        .arg("-Werror")
        .arg("-I")
        .arg(include_dir())
        .arg("-o")
        .arg(&exe)
        .arg(&c_file)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "cc failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let run = Command::new(&exe).output().unwrap();
    assert!(run.status.success());
    String::from_utf8(run.stdout).unwrap()
}

/// `(C macro name, Rust value)`: Rust `abi::X` mirrors C `KLD_X`.
fn rust_constants() -> Vec<(&'static str, u64)> {
    macro_rules! c {
        ($n:ident) => {
            (concat!("KLD_", stringify!($n)), u64::from(abi::$n))
        };
    }
    vec![
        c!(ABI_VERSION),
        c!(MAX_LB4_SVC),
        c!(MAX_LB4_BE),
        c!(MAX_LB4_RNAT),
        c!(MAX_SOCK_RNAT),
        c!(MAX_IPCACHE),
        c!(MAX_ENDPOINTS),
        c!(MAX_POLICY),
        c!(MAX_CT4),
        c!(EVENTS_BYTES),
        c!(MAX_METRICS),
        c!(MAX_COUNTERS),
        c!(MAX_LB4_AFFIN),
        c!(MAX_POLICY_HITS),
        c!(MAX_LB4_MAGLEV),
        c!(MAGLEV_M_DEFAULT),
        c!(ID_UNKNOWN),
        c!(ID_HOST),
        c!(ID_WORLD),
        c!(ID_UNMANAGED),
        c!(ID_REMOTE_NODE),
        c!(ID_CIDR_BASE),
        c!(FAMILY_V4),
        c!(FAMILY_V6),
        c!(DIR_INGRESS),
        c!(DIR_EGRESS),
        c!(SCOPE_EXTERNAL),
        c!(SCOPE_INTERNAL),
        c!(SVC_F_NODEPORT),
        c!(SVC_F_EXTERNAL_IP),
        c!(SVC_F_LOADBALANCER),
        c!(SVC_F_LOCAL_ONLY),
        c!(SVC_F_AFFINITY),
        c!(SVC_F_HOSTPORT),
        c!(LB_ALG_RANDOM),
        c!(LB_ALG_ROUND_ROBIN),
        c!(LB_ALG_MAGLEV),
        c!(BE_ACTIVE),
        c!(BE_TERMINATING),
        c!(BE_MAINTENANCE),
        c!(IPCACHE_PREFIX_BASE),
        c!(IPC_F_REMOTE_NODE),
        c!(EP_F_INGRESS_ENFORCE),
        c!(EP_F_EGRESS_ENFORCE),
        c!(EP_F_HOST),
        c!(POLICY_PREFIX_MIN),
        c!(POLICY_PREFIX_PROTO),
        c!(POLICY_PREFIX_FULL),
        c!(POLICY_ALLOW),
        c!(POLICY_DENY),
        c!(POLICY_F_AUDIT),
        c!(CT_DIR_INGRESS),
        c!(CT_DIR_EGRESS),
        c!(CT_DIR_SERVICE),
        c!(CT_F_SEEN_REPLY),
        c!(CT_F_CLOSING),
        c!(CT_F_NORTH_SOUTH),
        c!(CT_F_HAIRPIN),
        c!(CT_F_MIDSTREAM),
        c!(MARK_HAIRPIN),
        c!(EVENT_TRACE),
        c!(EVENT_DROP),
        c!(EVENT_POLICY_VERDICT),
        c!(EVENT_SOCK_LB),
        c!(TRACE_TO_EP),
        c!(TRACE_TO_STACK),
        c!(TRACE_FROM_EP),
        c!(TRACE_FROM_NETWORK),
        c!(REASON_FORWARDED),
        c!(DROP_POLICY_DENIED),
        c!(DROP_INVALID),
        c!(DROP_INVALID_SOURCE),
        c!(DROP_NO_SERVICE),
        c!(DROP_POLICY_DENY),
        c!(EVF_REPLY),
        c!(EVF_NEW_FLOW),
        c!(EVF_FRAGMENT),
        c!(CTR_EVENTS_LOST),
        c!(CTR_CT_CREATE_FAIL),
        c!(CTR_SOCK_LB_MISS),
        c!(CTR_SOCK_LB_NO_BE),
        c!(CTR_SOCK_RNAT_FAIL),
        c!(CTR_PARSE_ERROR),
        c!(CTR_METRICS_FAIL),
        c!(CTR_LB_NEW_FLOW),
        c!(CTR_LB_XLATE),
        c!(CTR_LB_RNAT),
        c!(CTR_LB_NO_BE),
        c!(CTR_LB_MISS),
        c!(CTR_NAT_FAIL),
        c!(CTR_LB_RNAT_MISS),
        c!(CTR_COUNT),
    ]
}

#[test]
fn rust_constants_match_c_defines() {
    let consts = rust_constants();
    let h = std::fs::read_to_string(include_dir().join("kldnet/abi.h")).unwrap();
    for line in h.lines() {
        let Some(name) = line
            .strip_prefix("#define KLD_")
            .and_then(|r| r.split_whitespace().next())
        else {
            continue;
        };
        let name = format!("KLD_{name}");
        assert!(
            consts.iter().any(|(c, _)| *c == name),
            "abi.h defines {name} but src/abi.rs has no mirror"
        );
    }
    if !have_cc() {
        eprintln!("skipping value check: `cc` not found");
        return;
    }
    let mut src = String::from("#include <stdio.h>\n#include \"kldnet/abi.h\"\nint main(void) {\n");
    let mut expected = String::new();
    for (name, v) in &consts {
        src += &format!("  printf(\"{name}=%llu\\n\", (unsigned long long)({name}));\n");
        expected += &format!("{name}={v}\n");
    }
    src += "  return 0;\n}\n";
    assert_eq!(run_c(&src), expected, "abi.rs constants differ from abi.h");
}

/// Every `volatile const` knob in common.h is listed in `abi::KNOBS` and back.
#[test]
fn knobs_match_common_h() {
    let h = std::fs::read_to_string(include_dir().join("kldnet/common.h")).unwrap();
    let c: Vec<&str> = h
        .lines()
        .filter_map(|l| {
            l.strip_prefix("volatile const __u32 ")?
                .split_whitespace()
                .next()
        })
        .collect();
    assert!(!c.is_empty());
    let mut c_sorted = c.clone();
    c_sorted.sort_unstable();
    let mut rust = abi::KNOBS.to_vec();
    rust.sort_unstable();
    assert_eq!(rust, c_sorted, "abi::KNOBS differs from common.h knobs");
}
