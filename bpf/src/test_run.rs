// SPDX-License-Identifier: Apache-2.0
//! `BPF_PROG_TEST_RUN` for classifier/XDP programs: run a loaded program on a
//! hand-built packet without attaching it. aya 0.14 keeps its own wrapper
//! private, so this issues the bpf(2) command directly.
//!
//! The kernel builds one skb from the input, runs the program `repeat` times
//! on that same skb and reports the last return value, the packet as the
//! last run left it and the mean run time (`net/bpf/test_run.c`,
//! `bpf_prog_test_run_skb` / `bpf_test_run`). A program that rewrites the
//! packet therefore sees its own output from the second run on: benchmarks
//! of rewriting paths must make the rewrite idempotent or cyclic.

use std::io;
use std::os::fd::RawFd;

const BPF_PROG_TEST_RUN: libc::c_long = 10;

/// Extra room for programs that grow the packet (encapsulation).
const OUT_HEADROOM: usize = 512;

/// `union bpf_attr`, test member, up to `batch_size` (Linux 5.x+ layout).
#[repr(C)]
#[derive(Default)]
struct TestRunAttr {
    prog_fd: u32,
    retval: u32,
    data_size_in: u32,
    data_size_out: u32,
    data_in: u64,
    data_out: u64,
    repeat: u32,
    duration: u32,
    ctx_size_in: u32,
    ctx_size_out: u32,
    ctx_in: u64,
    ctx_out: u64,
    flags: u32,
    cpu: u32,
    batch_size: u32,
    _pad: u32,
}

/// Result of one [`test_run`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TestRunOutput {
    /// Program return value (tc: `TC_ACT_*`; XDP: `XDP_*`).
    pub retval: u32,
    /// Packet after the program ran.
    pub data_out: Vec<u8>,
    /// Mean nanoseconds per run, as measured by the kernel.
    pub duration_ns: u32,
}

/// Run the program behind `prog_fd` on `data_in` (a full Ethernet frame for
/// tc/XDP) `repeat` times (0 counts as 1).
pub fn test_run(prog_fd: RawFd, data_in: &[u8], repeat: u32) -> io::Result<TestRunOutput> {
    let prog_fd = u32::try_from(prog_fd)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "negative program fd"))?;
    let size_in = u32::try_from(data_in.len())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "packet too large"))?;
    let mut out = vec![0u8; data_in.len() + OUT_HEADROOM];
    let mut attr = TestRunAttr {
        prog_fd,
        data_size_in: size_in,
        data_size_out: u32::try_from(out.len()).unwrap_or(u32::MAX),
        data_in: data_in.as_ptr() as u64,
        data_out: out.as_mut_ptr() as u64,
        repeat,
        ..TestRunAttr::default()
    };
    // SAFETY: attr is a valid, fully initialised bpf_attr prefix of the size
    // passed; data_in/data_out point to live buffers of the sizes given, and
    // the kernel writes at most data_size_out bytes to data_out.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_PROG_TEST_RUN,
            &mut attr as *mut TestRunAttr,
            size_of::<TestRunAttr>() as libc::c_uint,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    out.truncate(attr.data_size_out as usize);
    Ok(TestRunOutput {
        retval: attr.retval,
        data_out: out,
        duration_ns: attr.duration,
    })
}
