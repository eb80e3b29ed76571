// SPDX-License-Identifier: Apache-2.0
//! The real datapath: loads the embedded BPF objects, pins maps and links under
//! `<bpf-root>/v1/`, and reads/writes maps with raw bpf(2) calls.
//!
//! Restart survival: maps and links are pinned, so traffic keeps flowing while kldnetd is
//! down. On start the daemon adopts the pinned maps as they are and replaces each pinned
//! link make-before-break: the new program is attached first, its link pinned over the
//! old path, then the old link is released.

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::os::fd::{AsFd, AsRawFd};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use aya::maps::MapData;
use aya::programs::links::{FdLink, LinkOrder, PinnedLink};
use aya::programs::tc::TcAttachOptions;
use aya::programs::{CgroupAttachMode, CgroupSock, CgroupSockAddr, SchedClassifier, TcAttachType};
use aya::{Ebpf, EbpfLoader};
use kldnet_bpf::abi::*;
use kldnet_bpf::*;

use super::{MapIo, sys};
use crate::compile::Attachment;

struct PinnedMap {
    data: MapData,
    key_size: usize,
    value_size: usize,
    capacity: u32,
}

/// The loaded datapath of one kldnetd instance.
pub struct KernelDatapath {
    pin_dir: PathBuf,
    tc: Ebpf,
    /// The socket-LB object; `None` when socket LB is off.
    sock: Option<Ebpf>,
    maps: BTreeMap<&'static str, PinnedMap>,
    /// Slots of every Maglev table (the `KLD_MAGLEV_M` knob the programs were loaded with).
    maglev_m: u32,
}

impl std::fmt::Debug for KernelDatapath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KernelDatapath")
            .field("pin_dir", &self.pin_dir)
            .finish_non_exhaustive()
    }
}

/// Maps only the BPF programs write.
const BPF_OWNED_MAPS: &[&str] = &[MAP_CT4, MAP_SOCK_RNAT];
/// Entries walked at most per map for `status`.
pub const OCCUPANCY_WALK_LIMIT: usize = 1_000_000;

/// Maps the daemon reads and writes as a whole (the rest belong to the BPF side).
const STATE_MAPS: &[&str] = &[
    MAP_LB4_MAGLEV,
    MAP_LB4_SVC,
    MAP_LB4_BE,
    MAP_LB4_RNAT,
    MAP_IPCACHE,
    MAP_ENDPOINTS,
    MAP_POLICY,
    MAP_CT4,
    MAP_SOCK_RNAT,
];

/// `KLDNET_DATAPATH_EVENTS=0` loads the programs with flow events off (for measuring
/// what events cost; flows and metrics then see nothing).
fn events_enabled() -> u32 {
    u32::from(std::env::var("KLDNET_DATAPATH_EVENTS").map_or(true, |v| v != "0"))
}

fn load(pin_dir: &Path, name: &str, bytes: &[u8], maglev_m: u32) -> Result<Ebpf> {
    let events = events_enabled();
    EbpfLoader::new()
        .default_map_pin_directory(pin_dir)
        .override_global(KNOB_MAGLEV_M, &maglev_m, false)
        .override_global(KNOB_EVENTS_ENABLED, &events, false)
        .load(bytes)
        .with_context(|| {
            format!(
                "load BPF object {name} (maps pinned in {})",
                pin_dir.display()
            )
        })
}

impl KernelDatapath {
    /// Loads the objects (adopting pinned maps) and verifies every program.
    pub fn open(pin_dir: &Path, socket_lb: bool, maglev_m: u32) -> Result<KernelDatapath> {
        fs::create_dir_all(pin_dir.join("links"))
            .with_context(|| format!("create pin dir {}", pin_dir.display()))?;
        let mut tc = load(pin_dir, OBJ_DATAPATH, datapath_object(), maglev_m)?;
        for name in TC_PROGRAMS {
            let prog: &mut SchedClassifier = tc
                .program_mut(name)
                .with_context(|| format!("program {name} missing"))?
                .try_into()?;
            prog.load()
                .with_context(|| format!("verify program {name}"))?;
        }
        let sock = if socket_lb {
            let mut sock = load(pin_dir, OBJ_SOCK, sock_object(), maglev_m)?;
            for name in SOCK_PROGRAMS {
                let prog: &mut CgroupSockAddr = sock
                    .program_mut(name)
                    .with_context(|| format!("program {name} missing"))?
                    .try_into()?;
                prog.load()
                    .with_context(|| format!("verify program {name}"))?;
            }
            let bind: &mut CgroupSock = sock
                .program_mut(PROG_SOCK4_POST_BIND)
                .with_context(|| format!("program {PROG_SOCK4_POST_BIND} missing"))?
                .try_into()?;
            bind.load()
                .with_context(|| format!("verify program {PROG_SOCK4_POST_BIND}"))?;
            Some(sock)
        } else {
            None
        };
        let mut maps = BTreeMap::new();
        for name in STATE_MAPS {
            let path = pin_dir.join(name);
            let data = MapData::from_pin(&path)
                .with_context(|| format!("open pinned map {}", path.display()))?;
            let info = data.info().with_context(|| format!("inspect map {name}"))?;
            maps.insert(
                *name,
                PinnedMap {
                    key_size: info.key_size() as usize,
                    value_size: info.value_size() as usize,
                    capacity: info.max_entries(),
                    data,
                },
            );
        }
        Ok(KernelDatapath {
            pin_dir: pin_dir.to_path_buf(),
            tc,
            sock,
            maps,
            maglev_m,
        })
    }

    fn map(&self, name: &str) -> io::Result<&PinnedMap> {
        self.maps.get(name).ok_or_else(|| {
            io::Error::new(io::ErrorKind::NotFound, format!("map {name} not loaded"))
        })
    }

    fn link_path(&self, id: &str) -> PathBuf {
        self.pin_dir.join("links").join(id)
    }

    /// Entries and capacity of every state map.
    ///
    /// Maps the daemon writes are counted from its own mirror by the caller; only the
    /// maps the BPF side fills (conntrack, socket reverse NAT) are walked here, and at
    /// most [`OCCUPANCY_WALK_LIMIT`] entries each, so `status` stays fast.
    pub fn map_occupancy(&self) -> Vec<(String, u64, u64)> {
        self.maps
            .iter()
            .map(|(name, m)| {
                let n = if BPF_OWNED_MAPS.contains(name) {
                    sys::count(m.data.fd().as_fd(), m.key_size, OCCUPANCY_WALK_LIMIT).unwrap_or(0)
                } else {
                    0
                };
                (name.to_string(), n as u64, u64::from(m.capacity))
            })
            .collect()
    }

    /// Attaches the socket-LB programs to `cgroup` (pinned links `sock-<prog>`).
    pub fn attach_cgroup(&mut self, cgroup: &Path) -> Result<()> {
        let Some(sock) = self.sock.as_mut() else {
            bail!("socket LB is off")
        };
        let file =
            fs::File::open(cgroup).with_context(|| format!("open cgroup {}", cgroup.display()))?;
        for name in SOCK_PROGRAMS {
            let prog: &mut CgroupSockAddr =
                sock.program_mut(name).expect("loaded above").try_into()?;
            // bpf_link attachments to a cgroup always stack; `Single` means "no legacy
            // flags" (BPF_F_ALLOW_MULTI makes link_create fail with EINVAL).
            let id = prog
                .attach(&file, CgroupAttachMode::Single)
                .with_context(|| format!("attach {name} to cgroup {}", cgroup.display()))?;
            let link: FdLink = prog
                .take_link(id)?
                .try_into()
                .context("cgroup link as fd link")?;
            let path = self.pin_dir.join("links").join(format!("sock-{name}"));
            replace_pin(link, &path)?;
        }
        let bind: &mut CgroupSock = sock
            .program_mut(PROG_SOCK4_POST_BIND)
            .expect("loaded above")
            .try_into()?;
        let id = bind
            .attach(&file, CgroupAttachMode::Single)
            .with_context(|| {
                format!(
                    "attach {PROG_SOCK4_POST_BIND} to cgroup {}",
                    cgroup.display()
                )
            })?;
        let link: FdLink = bind
            .take_link(id)?
            .try_into()
            .context("cgroup link as fd link")?;
        replace_pin(
            link,
            &self
                .pin_dir
                .join("links")
                .join(format!("sock-{PROG_SOCK4_POST_BIND}")),
        )?;
        Ok(())
    }

    /// Names of pinned links, for status.
    pub fn link_names(&self) -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(self.pin_dir.join("links"))
            .map(|d| {
                d.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        v.sort();
        v
    }

    /// Re-attaches every pinned tc link with this binary's programs (after a restart).
    pub fn refresh_tc_links(&mut self) -> Result<()> {
        for at in self.attachments()? {
            self.attach(&at)
                .with_context(|| format!("re-attach {at:?}"))?;
        }
        Ok(())
    }
}

/// Pins `link` at `path`, atomically replacing (and so releasing) a link pinned there.
fn replace_pin(link: FdLink, path: &Path) -> Result<()> {
    // bpffs refuses names with '.', so no "x.new".
    let tmp = path.with_file_name(format!(
        "{}_new",
        path.file_name()
            .map(|n| n.to_string_lossy())
            .unwrap_or_default()
    ));
    let _ = fs::remove_file(&tmp);
    let pinned: PinnedLink = link
        .pin(&tmp)
        .with_context(|| format!("pin link {}", tmp.display()))?;
    fs::rename(&tmp, path).with_context(|| format!("move pinned link to {}", path.display()))?;
    // The pin now holds the link; our fd may go.
    drop(FdLink::from(pinned));
    Ok(())
}

/// Pin names for an interface: bpffs refuses '.', which VLAN names (eth0.100) contain.
fn pin_name(ifname: &str) -> String {
    ifname.replace('.', "%")
}

fn tc_link_ids(at: &Attachment) -> Vec<(String, &'static str, TcAttachType, String)> {
    match at {
        Attachment::Endpoint { ifname, .. } => vec![
            (
                format!("ep-{}-ingress", pin_name(ifname)),
                PROG_FROM_EP,
                TcAttachType::Ingress,
                ifname.clone(),
            ),
            (
                format!("ep-{}-egress", pin_name(ifname)),
                PROG_TO_EP,
                TcAttachType::Egress,
                ifname.clone(),
            ),
        ],
        Attachment::Uplink { ifname, .. } => vec![
            (
                format!("up-{}-ingress", pin_name(ifname)),
                PROG_FROM_NETDEV,
                TcAttachType::Ingress,
                ifname.clone(),
            ),
            (
                format!("up-{}-egress", pin_name(ifname)),
                PROG_TO_NETDEV,
                TcAttachType::Egress,
                ifname.clone(),
            ),
        ],
    }
}

fn to_io(e: impl std::fmt::Display) -> io::Error {
    io::Error::other(e.to_string())
}

impl MapIo for KernelDatapath {
    fn update(&mut self, map: &str, key: &[u8], value: &[u8]) -> io::Result<()> {
        let m = self.map(map)?;
        sys::update(m.data.fd().as_fd(), key, value)
    }

    fn update_batch(
        &mut self,
        map: &str,
        keys: &[u8],
        values: &[u8],
        count: usize,
    ) -> (usize, io::Result<()>) {
        let m = match self.map(map) {
            Ok(m) => m,
            Err(e) => return (0, Err(e)),
        };
        match sys::update_batch(m.data.fd().as_fd(), keys, values, count) {
            // LPM tries have no batch operations (EINVAL, or the kernel-internal
            // ENOTSUPP = 524): one syscall per entry there.
            Err((0, e))
                if matches!(
                    e.raw_os_error(),
                    Some(libc::EINVAL) | Some(524) | Some(libc::EOPNOTSUPP)
                ) =>
            {
                let (ks, vs) = (keys.len() / count.max(1), values.len() / count.max(1));
                for i in 0..count {
                    if let Err(e) = sys::update(
                        m.data.fd().as_fd(),
                        &keys[i * ks..(i + 1) * ks],
                        &values[i * vs..(i + 1) * vs],
                    ) {
                        return (i, Err(e));
                    }
                }
                (count, Ok(()))
            }
            Err((done, e)) => (done, Err(e)),
            Ok(()) => (count, Ok(())),
        }
    }

    fn delete(&mut self, map: &str, key: &[u8]) -> io::Result<()> {
        let m = self.map(map)?;
        sys::delete(m.data.fd().as_fd(), key)
    }

    fn dump(&self, map: &str) -> io::Result<Vec<(Vec<u8>, Vec<u8>)>> {
        let m = self.map(map)?;
        sys::dump(m.data.fd().as_fd(), m.key_size, m.value_size)
    }

    fn set_maglev(&mut self, rev_nat_index: u16, table: &[u32]) -> io::Result<()> {
        if table.len() != self.maglev_m as usize {
            return Err(io::Error::other(format!(
                "Maglev table of {} slots, datapath expects {}",
                table.len(),
                self.maglev_m
            )));
        }
        // A fresh inner array, filled, then swapped into the outer slot in one update:
        // lookups see the old table or the new one, never a half-written one.
        let inner = sys::create_inner_array("kld_maglev_in", self.maglev_m)?;
        sys::fill_array(inner.as_fd(), table)?;
        let outer = self.map(MAP_LB4_MAGLEV)?;
        let key = u32::from(rev_nat_index);
        let fd = inner.as_raw_fd() as u32;
        sys::update(
            outer.data.fd().as_fd(),
            &key.to_ne_bytes(),
            &fd.to_ne_bytes(),
        )
    }

    fn delete_maglev(&mut self, rev_nat_index: u16) -> io::Result<()> {
        let outer = self.map(MAP_LB4_MAGLEV)?;
        sys::delete(
            outer.data.fd().as_fd(),
            &u32::from(rev_nat_index).to_ne_bytes(),
        )
    }

    fn maglev_tables(&self) -> io::Result<BTreeMap<u16, Vec<u32>>> {
        let outer = self.map(MAP_LB4_MAGLEV)?;
        let mut out = BTreeMap::new();
        // From user space a map-in-map slot reads as the inner map's id.
        for (k, v) in sys::dump(outer.data.fd().as_fd(), 4, 4)? {
            let key = u32::from_ne_bytes(k[..4].try_into().expect("4-byte key"));
            let id = u32::from_ne_bytes(v[..4].try_into().expect("4-byte value"));
            // Opening a map by id needs CAP_SYS_ADMIN; without it the table's content is
            // unknown (empty here), so the next reload rewrites it — an atomic swap that
            // installs the same table, harmless to traffic.
            let table = match sys::map_fd_by_id(id) {
                Ok(inner) => sys::read_array(inner.as_fd(), self.maglev_m)?,
                Err(e) if e.raw_os_error() == Some(libc::EPERM) => Vec::new(),
                Err(e) => return Err(e),
            };
            out.insert(key as u16, table);
        }
        Ok(out)
    }

    fn attach(&mut self, at: &Attachment) -> io::Result<()> {
        for (id, prog_name, attach_type, ifname) in tc_link_ids(at) {
            let path = self.link_path(&id);
            let prog: &mut SchedClassifier = self
                .tc
                .program_mut(prog_name)
                .ok_or_else(|| to_io(format!("program {prog_name} missing")))?
                .try_into()
                .map_err(to_io)?;
            // TCX (kernel ≥ 6.6): a link we can pin; first in the chain so it sees packets
            // before anything else attached to the interface.
            let link_id = prog
                .attach_with_options(
                    &ifname,
                    attach_type,
                    TcAttachOptions::TcxOrder(LinkOrder::first()),
                )
                .map_err(|e| {
                    io::Error::other(format!(
                        "attach {prog_name} to {ifname} ({attach_type:?}): {e}"
                    ))
                })?;
            let link: FdLink = prog
                .take_link(link_id)
                .map_err(to_io)?
                .try_into()
                .map_err(to_io)?;
            replace_pin(link, &path).map_err(to_io)?;
        }
        Ok(())
    }

    fn detach(&mut self, at: &Attachment) -> io::Result<()> {
        for (id, ..) in tc_link_ids(at) {
            match fs::remove_file(self.link_path(&id)) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
                _ => {}
            }
        }
        Ok(())
    }

    fn occupancy(&self) -> Vec<(String, u64, u64)> {
        self.map_occupancy()
    }

    fn pinned_links(&self) -> Vec<String> {
        self.link_names()
    }

    fn attachments(&self) -> io::Result<Vec<Attachment>> {
        let mut out = Vec::new();
        let dir = match fs::read_dir(self.pin_dir.join("links")) {
            Ok(d) => d,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(out),
            Err(e) => return Err(e),
        };
        for entry in dir.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let (kind, rest) = match name.split_once('-') {
                Some(x) => x,
                None => continue,
            };
            let Some(pinned) = rest.strip_suffix("-ingress") else {
                continue;
            };
            let ifname = pinned.replace('%', ".");
            let ifname = ifname.as_str();
            let ifindex = super::features::ifindex(ifname).unwrap_or(0);
            match kind {
                "ep" => out.push(Attachment::Endpoint {
                    ifname: ifname.to_string(),
                    ifindex,
                }),
                "up" => out.push(Attachment::Uplink {
                    ifname: ifname.to_string(),
                    ifindex,
                }),
                _ => {}
            }
        }
        out.sort();
        Ok(out)
    }
}

/// `kldnetd cleanup`: unpins every link and map under the pin dir (links first, so
/// programs detach), then removes the dir.
pub fn cleanup(pin_dir: &Path) -> Result<Vec<String>> {
    let mut removed = Vec::new();
    let links = pin_dir.join("links");
    if let Ok(d) = fs::read_dir(&links) {
        for e in d.flatten() {
            fs::remove_file(e.path()).with_context(|| format!("unpin {}", e.path().display()))?;
            removed.push(e.path().display().to_string());
        }
        fs::remove_dir(&links).ok();
    }
    if let Ok(d) = fs::read_dir(pin_dir) {
        for e in d.flatten() {
            fs::remove_file(e.path()).with_context(|| format!("unpin {}", e.path().display()))?;
            removed.push(e.path().display().to_string());
        }
    }
    if pin_dir.exists() {
        fs::remove_dir(pin_dir).with_context(|| format!("remove {}", pin_dir.display()))?;
    }
    Ok(removed)
}
