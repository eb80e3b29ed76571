// SPDX-License-Identifier: Apache-2.0
//! kldnet's eBPF datapath as data: the prebuilt BPF objects (compiled from the
//! C in `bpf/src/*.bpf.c` and committed under `bpf/obj/`, so building needs no
//! clang), the Rust mirror of their ABI ([`abi`], from
//! `bpf/include/kldnet/abi.h`), program and object names, and a
//! `BPF_PROG_TEST_RUN` helper ([`test_run`]) for packet tests and benchmarks.
//!
//! This crate makes no bpf(2) calls of its own except in [`test_run`]; loading,
//! pinning and attaching belong to the daemon's datapath layer. Rebuild the
//! objects with `make -C bpf`; `tests/objects_fresh.rs` fails when they are stale.

pub mod abi;
pub mod test_run;

use std::path::{Path, PathBuf};

pub use abi::ABI_VERSION;

/// tc ingress of an endpoint's host-side interface: packets the workload sends.
pub const PROG_FROM_EP: &str = "kld_from_ep";
/// tc egress of an endpoint's host-side interface: packets to the workload.
pub const PROG_TO_EP: &str = "kld_to_ep";
/// tc ingress of an uplink (north-south): NodePort / LB IP / external IP DNAT.
pub const PROG_FROM_NETDEV: &str = "kld_from_netdev";
/// tc egress of an uplink: reverse NAT of north-south replies from remote backends.
pub const PROG_TO_NETDEV: &str = "kld_to_netdev";
/// cgroup/connect4: socket LB for connect().
pub const PROG_SOCK4_CONNECT: &str = "kld_sock4_connect";
/// cgroup/sendmsg4: socket LB for unconnected UDP sendmsg().
pub const PROG_SOCK4_SENDMSG: &str = "kld_sock4_sendmsg";
/// cgroup/recvmsg4: backend → VIP for recvmsg().
pub const PROG_SOCK4_RECVMSG: &str = "kld_sock4_recvmsg";
/// cgroup/getpeername4: backend → VIP for getpeername().
pub const PROG_SOCK4_GETPEER: &str = "kld_sock4_getpeer";
/// cgroup/connect6, sendmsg6, recvmsg6, getpeername6: the same for v4-mapped addresses
/// (`::ffff:VIP`) of dual-stack AF_INET6 sockets.
pub const PROG_SOCK6_CONNECT: &str = "kld_sock6_connect";
pub const PROG_SOCK6_SENDMSG: &str = "kld_sock6_sendmsg";
pub const PROG_SOCK6_RECVMSG: &str = "kld_sock6_recvmsg";
pub const PROG_SOCK6_GETPEER: &str = "kld_sock6_getpeer";

/// Object holding the tc programs ([`TC_PROGRAMS`]).
pub const OBJ_DATAPATH: &str = "datapath.bpf.o";
/// Object holding the cgroup sock_addr programs (`PROG_SOCK4_*`).
pub const OBJ_SOCK: &str = "sock.bpf.o";

/// tc programs (load as `aya::programs::SchedClassifier`).
pub const TC_PROGRAMS: &[&str] = &[PROG_FROM_EP, PROG_TO_EP, PROG_FROM_NETDEV, PROG_TO_NETDEV];
/// cgroup/post_bind4: refuses bind() to a service frontend (load as `aya::programs::CgroupSock`).
pub const PROG_SOCK4_POST_BIND: &str = "kld_sock4_postbind";

/// cgroup sock_addr programs (load as `aya::programs::CgroupSockAddr`).
pub const SOCK_PROGRAMS: &[&str] = &[
    PROG_SOCK4_CONNECT,
    PROG_SOCK4_SENDMSG,
    PROG_SOCK4_RECVMSG,
    PROG_SOCK4_GETPEER,
    PROG_SOCK6_CONNECT,
    PROG_SOCK6_SENDMSG,
    PROG_SOCK6_RECVMSG,
    PROG_SOCK6_GETPEER,
];

/// Bytes with 8-byte alignment: ELF parsers (aya needs ≥ 4) read the object
/// in place, and `include_bytes!` alone only guarantees alignment 1.
#[repr(C, align(8))]
struct Align8<T: ?Sized>(T);

static DATAPATH: &Align8<[u8]> = &Align8(*include_bytes!("../obj/datapath.bpf.o"));
static SOCK: &Align8<[u8]> = &Align8(*include_bytes!("../obj/sock.bpf.o"));

static OBJECTS: [(&str, &[u8]); 2] = [(OBJ_DATAPATH, &DATAPATH.0), (OBJ_SOCK, &SOCK.0)];

/// The tc datapath object (`datapath.bpf.o`), 8-byte aligned.
pub fn datapath_object() -> &'static [u8] {
    &DATAPATH.0
}

/// The socket LB object (`sock.bpf.o`), 8-byte aligned.
pub fn sock_object() -> &'static [u8] {
    &SOCK.0
}

/// Every embedded object as `(file name, bytes)`. All of them define the
/// same pinned maps, so loading them with one pin directory shares the maps.
pub fn object_files() -> &'static [(&'static str, &'static [u8])] {
    &OBJECTS
}

/// Versioned pin directory for maps under a bpffs root: `<bpf_root>/v1`.
pub fn pin_dir(bpf_root: &Path) -> PathBuf {
    bpf_root.join(format!("v{ABI_VERSION}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_objects_are_aligned_elf() {
        assert_eq!(object_files().len(), 2);
        for (name, bytes) in object_files() {
            assert_eq!(bytes.as_ptr() as usize % 8, 0, "{name} not 8-byte aligned");
            assert_eq!(&bytes[..4], b"\x7fELF", "{name} is not ELF");
        }
        assert_eq!(datapath_object().as_ptr(), object_files()[0].1.as_ptr());
        assert_eq!(sock_object().as_ptr(), object_files()[1].1.as_ptr());
    }

    #[test]
    fn pin_dir_is_versioned() {
        assert_eq!(
            pin_dir(Path::new("/sys/fs/bpf/kldnet")),
            Path::new("/sys/fs/bpf/kldnet/v1")
        );
    }
}
