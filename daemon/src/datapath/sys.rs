// SPDX-License-Identifier: Apache-2.0
//! Raw bpf(2) map operations on a file descriptor: element update, delete, lookup and
//! iteration for any map type (LPM keys included), with no per-type wrappers.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

const BPF_MAP_LOOKUP_ELEM: libc::c_long = 1;
const BPF_MAP_UPDATE_ELEM: libc::c_long = 2;
const BPF_MAP_DELETE_ELEM: libc::c_long = 3;
const BPF_MAP_GET_NEXT_KEY: libc::c_long = 4;

/// `union bpf_attr` for the element commands (kernel `include/uapi/linux/bpf.h`).
#[repr(C)]
#[derive(Default)]
struct ElemAttr {
    map_fd: u32,
    _pad: u32,
    key: u64,
    value_or_next_key: u64,
    flags: u64,
}

fn bpf(cmd: libc::c_long, attr: &mut ElemAttr) -> io::Result<()> {
    // SAFETY: attr is a valid, initialised bpf_attr prefix for the element commands and
    // outlives the call; the kernel reads at most size_of::<ElemAttr>() bytes.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            attr as *mut ElemAttr,
            size_of::<ElemAttr>() as u32,
        )
    };
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

pub fn update(fd: BorrowedFd<'_>, key: &[u8], value: &[u8]) -> io::Result<()> {
    let mut attr = ElemAttr {
        map_fd: fd.as_raw_fd() as u32,
        key: key.as_ptr() as u64,
        value_or_next_key: value.as_ptr() as u64,
        ..ElemAttr::default()
    };
    bpf(BPF_MAP_UPDATE_ELEM, &mut attr)
}

/// Deletes a key; a key that is already gone is not an error.
pub fn delete(fd: BorrowedFd<'_>, key: &[u8]) -> io::Result<()> {
    let mut attr = ElemAttr {
        map_fd: fd.as_raw_fd() as u32,
        key: key.as_ptr() as u64,
        ..ElemAttr::default()
    };
    match bpf(BPF_MAP_DELETE_ELEM, &mut attr) {
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(()),
        r => r,
    }
}

pub fn lookup(fd: BorrowedFd<'_>, key: &[u8], value: &mut [u8]) -> io::Result<bool> {
    let mut attr = ElemAttr {
        map_fd: fd.as_raw_fd() as u32,
        key: key.as_ptr() as u64,
        value_or_next_key: value.as_mut_ptr() as u64,
        ..ElemAttr::default()
    };
    match bpf(BPF_MAP_LOOKUP_ELEM, &mut attr) {
        Ok(()) => Ok(true),
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(false),
        Err(e) => Err(e),
    }
}

/// Every entry of a (non-per-CPU) map. Entries deleted while iterating are skipped.
pub fn dump(
    fd: BorrowedFd<'_>,
    key_size: usize,
    value_size: usize,
) -> io::Result<Vec<(Vec<u8>, Vec<u8>)>> {
    let mut out = Vec::new();
    let mut key: Option<Vec<u8>> = None;
    loop {
        let mut next = vec![0u8; key_size];
        let mut attr = ElemAttr {
            map_fd: fd.as_raw_fd() as u32,
            key: key.as_ref().map_or(0, |k| k.as_ptr() as u64),
            value_or_next_key: next.as_mut_ptr() as u64,
            ..ElemAttr::default()
        };
        match bpf(BPF_MAP_GET_NEXT_KEY, &mut attr) {
            Ok(()) => {}
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => break,
            Err(e) => return Err(e),
        }
        let mut value = vec![0u8; value_size];
        if lookup(fd, &next, &mut value)? {
            out.push((next.clone(), value));
        }
        key = Some(next);
    }
    Ok(out)
}

/// Number of keys in a map (walking at most `limit`), without reading values.
pub fn count(fd: BorrowedFd<'_>, key_size: usize, limit: usize) -> io::Result<usize> {
    let mut n = 0;
    let mut key: Option<Vec<u8>> = None;
    while n < limit {
        let mut next = vec![0u8; key_size];
        let mut attr = ElemAttr {
            map_fd: fd.as_raw_fd() as u32,
            key: key.as_ref().map_or(0, |k| k.as_ptr() as u64),
            value_or_next_key: next.as_mut_ptr() as u64,
            ..ElemAttr::default()
        };
        match bpf(BPF_MAP_GET_NEXT_KEY, &mut attr) {
            Ok(()) => n += 1,
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => break,
            Err(e) => return Err(e),
        }
        key = Some(next);
    }
    Ok(n)
}

const BPF_MAP_CREATE: libc::c_long = 0;
const BPF_MAP_GET_FD_BY_ID: libc::c_long = 14;
const BPF_MAP_LOOKUP_BATCH: libc::c_long = 24;
const BPF_MAP_UPDATE_BATCH: libc::c_long = 26;
const BPF_MAP_TYPE_ARRAY: u32 = 2;
/// Lets an inner map differ in size from the outer map's template (kernel 5.10).
pub const BPF_F_INNER_MAP: u32 = 1 << 12;

/// The first fields of `union bpf_attr` for BPF_MAP_CREATE.
#[repr(C)]
#[derive(Default)]
struct CreateAttr {
    map_type: u32,
    key_size: u32,
    value_size: u32,
    max_entries: u32,
    map_flags: u32,
    inner_map_fd: u32,
    numa_node: u32,
    map_name: [u8; 16],
}

/// `union bpf_attr` for the batch commands.
#[repr(C)]
#[derive(Default)]
struct BatchAttr {
    in_batch: u64,
    out_batch: u64,
    keys: u64,
    values: u64,
    count: u32,
    map_fd: u32,
    elem_flags: u64,
    flags: u64,
}

fn bpf_raw<T>(cmd: libc::c_long, attr: &mut T) -> io::Result<i64> {
    // SAFETY: attr is a valid, initialised prefix of bpf_attr for `cmd`, alive for the call.
    let rc = unsafe { libc::syscall(libc::SYS_bpf, cmd, attr as *mut T, size_of::<T>() as u32) };
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(rc)
    }
}

fn owned(fd: i64) -> OwnedFd {
    // SAFETY: the kernel just returned this new fd to us; nobody else owns it.
    unsafe { OwnedFd::from_raw_fd(fd as i32) }
}

/// A new `u32 → u32` array map of `entries` entries, usable as a map-in-map inner map.
pub fn create_inner_array(name: &str, entries: u32) -> io::Result<OwnedFd> {
    let mut attr = CreateAttr {
        map_type: BPF_MAP_TYPE_ARRAY,
        key_size: 4,
        value_size: 4,
        max_entries: entries,
        map_flags: BPF_F_INNER_MAP,
        ..CreateAttr::default()
    };
    for (dst, src) in attr.map_name.iter_mut().zip(name.bytes().take(15)) {
        *dst = src;
    }
    bpf_raw(BPF_MAP_CREATE, &mut attr).map(owned)
}

/// Writes `values[i]` at index `i` of an array map, in one syscall.
pub fn fill_array(fd: BorrowedFd<'_>, values: &[u32]) -> io::Result<()> {
    let keys: Vec<u32> = (0..values.len() as u32).collect();
    let mut attr = BatchAttr {
        keys: keys.as_ptr() as u64,
        values: values.as_ptr() as u64,
        count: values.len() as u32,
        map_fd: fd.as_raw_fd() as u32,
        ..BatchAttr::default()
    };
    bpf_raw(BPF_MAP_UPDATE_BATCH, &mut attr)?;
    if attr.count as usize != values.len() {
        return Err(io::Error::other(format!(
            "batch update wrote {} of {} entries",
            attr.count,
            values.len()
        )));
    }
    Ok(())
}

/// Reads the first `entries` values of an array map, in one syscall.
pub fn read_array(fd: BorrowedFd<'_>, entries: u32) -> io::Result<Vec<u32>> {
    let mut keys = vec![0u32; entries as usize];
    let mut values = vec![0u32; entries as usize];
    let mut out_batch = 0u32;
    let mut attr = BatchAttr {
        out_batch: &mut out_batch as *mut u32 as u64,
        keys: keys.as_mut_ptr() as u64,
        values: values.as_mut_ptr() as u64,
        count: entries,
        map_fd: fd.as_raw_fd() as u32,
        ..BatchAttr::default()
    };
    match bpf_raw(BPF_MAP_LOOKUP_BATCH, &mut attr) {
        // ENOENT: the batch reached the end of the map, which is fine.
        Ok(_) => {}
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {}
        Err(e) => return Err(e),
    }
    values.truncate(attr.count as usize);
    Ok(values)
}

/// An fd for the map with kernel id `id` (what map-in-map lookups from user space return).
pub fn map_fd_by_id(id: u32) -> io::Result<OwnedFd> {
    #[repr(C)]
    #[derive(Default)]
    struct IdAttr {
        id: u32,
        next_id: u32,
        open_flags: u32,
    }
    bpf_raw(
        BPF_MAP_GET_FD_BY_ID,
        &mut IdAttr {
            id,
            ..IdAttr::default()
        },
    )
    .map(owned)
}

/// BPF_MAP_UPDATE_BATCH of `count` entries laid end to end. On failure: how many landed.
pub fn update_batch(
    fd: BorrowedFd<'_>,
    keys: &[u8],
    values: &[u8],
    count: usize,
) -> Result<(), (usize, io::Error)> {
    let mut attr = BatchAttr {
        keys: keys.as_ptr() as u64,
        values: values.as_ptr() as u64,
        count: count as u32,
        map_fd: fd.as_raw_fd() as u32,
        ..BatchAttr::default()
    };
    match bpf_raw(BPF_MAP_UPDATE_BATCH, &mut attr) {
        Ok(_) if attr.count as usize == count => Ok(()),
        Ok(_) => Err((attr.count as usize, io::Error::other("short batch update"))),
        Err(e) => Err((attr.count as usize, e)),
    }
}
