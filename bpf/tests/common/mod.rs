// SPDX-License-Identifier: Apache-2.0
//! Shared by the root-only tests: a private bpffs and an object loader that
//! sets every knob and verifies every program.
#![allow(dead_code)]

use std::ffi::CString;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use aya::programs::Program;
use aya::{Ebpf, EbpfLoader};
use kldnet_bpf::abi::*;
use kldnet_bpf::pin_dir;

pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

#[macro_export]
macro_rules! need_root {
    () => {
        if !$crate::common::is_root() {
            eprintln!("skipping: needs root");
            return;
        }
    };
}

/// A private bpffs mounted on a temp dir; unmounted on drop.
pub struct BpfFs {
    pub dir: tempfile::TempDir,
}

impl BpfFs {
    pub fn new() -> Self {
        let dir = tempfile::tempdir().expect("create temp dir for bpffs");
        let target = CString::new(dir.path().as_os_str().as_encoded_bytes()).unwrap();
        let fstype = CString::new("bpf").unwrap();
        // SAFETY: valid NUL-terminated strings; no data argument.
        let rc = unsafe {
            libc::mount(
                fstype.as_ptr(),
                target.as_ptr(),
                fstype.as_ptr(),
                0,
                std::ptr::null(),
            )
        };
        assert_eq!(
            rc,
            0,
            "mount bpffs at {}: {}",
            dir.path().display(),
            std::io::Error::last_os_error()
        );
        let fs = Self { dir };
        std::fs::create_dir_all(fs.pins()).expect("create pin dir");
        fs
    }

    pub fn pins(&self) -> PathBuf {
        pin_dir(self.dir.path())
    }
}

impl Drop for BpfFs {
    fn drop(&mut self) {
        let target = CString::new(self.dir.path().as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: valid NUL-terminated path.
        unsafe { libc::umount2(target.as_ptr(), libc::MNT_DETACH) };
    }
}

/// Knob values for [`load_object_with`].
#[derive(Clone, Copy, Debug)]
pub struct Knobs {
    pub events_enabled: u32,
    pub ct_lifetime_tcp_sec: u32,
    pub ct_lifetime_nontcp_sec: u32,
    pub maglev_m: u32,
}

impl Default for Knobs {
    fn default() -> Self {
        Self {
            events_enabled: 1,
            ct_lifetime_tcp_sec: 21600,
            ct_lifetime_nontcp_sec: 60,
            maglev_m: MAGLEV_M_DEFAULT,
        }
    }
}

pub fn load_object(pins: &Path, name: &str, bytes: &[u8]) -> Ebpf {
    load_object_with(pins, name, bytes, Knobs::default())
}

pub fn load_object_with(pins: &Path, name: &str, bytes: &[u8], knobs: Knobs) -> Ebpf {
    // must_exist = true: every knob mirrored in abi.rs exists in every object.
    let mut ebpf = EbpfLoader::new()
        .default_map_pin_directory(pins)
        .override_global(KNOB_NODE_IDENTITY, &ID_HOST, true)
        .override_global(KNOB_EVENTS_ENABLED, &knobs.events_enabled, true)
        .override_global(KNOB_EVENT_INTERVAL_SEC, &5u32, true)
        .override_global(KNOB_CT_LIFETIME_TCP_SEC, &knobs.ct_lifetime_tcp_sec, true)
        .override_global(
            KNOB_CT_LIFETIME_NONTCP_SEC,
            &knobs.ct_lifetime_nontcp_sec,
            true,
        )
        .override_global(KNOB_CT_CLOSE_TIMEOUT_SEC, &10u32, true)
        .override_global(KNOB_MAGLEV_M, &knobs.maglev_m, true)
        .override_global(
            KNOB_HAIRPIN_IP,
            &u32::from(Ipv4Addr::new(169, 254, 42, 1)).to_be(),
            true,
        )
        .override_global(KNOB_SOCK_ECONNREFUSED, &1u32, true)
        .load(bytes)
        .unwrap_or_else(|e| panic!("load {name}: {e:?}"));
    for (prog_name, prog) in ebpf.programs_mut() {
        let res = match prog {
            Program::SchedClassifier(p) => p.load(),
            Program::CgroupSockAddr(p) => p.load(),
            Program::CgroupSock(p) => p.load(),
            other => panic!(
                "{name}: unexpected program type for {prog_name}: {:?}",
                other.prog_type()
            ),
        };
        res.unwrap_or_else(|e| panic!("verifier rejected {prog_name} in {name}: {e:?}"));
    }
    ebpf
}

pub mod packet;
