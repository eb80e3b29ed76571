// SPDX-License-Identifier: Apache-2.0
//! Applies a desired state to the maps: only the delta, in a safe order, all or nothing.
//!
//! Order: attach new interfaces; write backends, reverse NAT, ipcache, policy and
//! endpoints; then service slots; then service master entries (which publish the new slot
//! count). Deletes run the other way round: masters first, so no lookup ever reaches a
//! slot or backend that is already gone. If any write fails, every write done so far is
//! undone (the previous state is re-applied) and the error names the map and entry.

use std::collections::BTreeMap;
use std::io;

use kldnet_bpf::abi::*;

use super::MapIo;
use super::bytes::as_bytes;
use crate::compile::diff::{StateDelta, diff, diff_map};
use crate::compile::{Attachment, DesiredState, dump};

#[derive(Debug, thiserror::Error)]
#[error("{op} {map} entry {key}: {source}{hint}")]
pub struct ApplyError {
    pub op: &'static str,
    pub map: String,
    pub key: String,
    pub source: io::Error,
    pub hint: &'static str,
}

fn hint(e: &io::Error) -> &'static str {
    match e.raw_os_error() {
        Some(libc::E2BIG) | Some(libc::ENOMEM) => {
            " (the map is full: reduce the configuration or raise KLD_MAX_* capacities)"
        }
        Some(libc::EPERM) => " (needs CAP_BPF and CAP_NET_ADMIN)",
        _ => "",
    }
}

/// Applies `desired` over `current` (what the maps hold now). On success `current`
/// becomes `desired` and the applied delta is returned; on failure the maps and
/// `current` are back to what they were.
pub fn apply(
    io: &mut dyn MapIo,
    current: &mut DesiredState,
    desired: &DesiredState,
) -> Result<StateDelta, ApplyError> {
    let delta = diff(current, desired);
    if delta.is_empty() {
        return Ok(delta);
    }
    match write_delta(io, current, &delta) {
        Ok(()) => Ok(delta),
        Err(e) => {
            // `current` holds exactly what was written; the inverse of the part of the
            // delta that landed brings the maps back.
            let undo = delta.undo(current);
            if let Err(again) = write_delta(io, current, &undo) {
                tracing::error!(
                    "rollback after failed apply also failed: {again}; the datapath may be inconsistent until the next successful reload"
                );
            }
            Err(e)
        }
    }
}

/// Writes one delta; `mirror` tracks exactly what has been written so far.
fn write_delta(
    io: &mut dyn MapIo,
    mirror: &mut DesiredState,
    d: &StateDelta,
) -> Result<(), ApplyError> {
    for a in &d.attach {
        io.attach(a).map_err(|e| attach_error("attach", a, e))?;
        mirror.attachments.insert(a.clone());
    }
    upserts(
        io,
        MAP_LB4_BE,
        &d.lb4_backends.upserts,
        &mut mirror.lb4_backends,
        |k| k.to_string(),
    )?;
    upserts(
        io,
        MAP_LB4_RNAT,
        &d.lb4_rev_nat.upserts,
        &mut mirror.lb4_rev_nat,
        |k| k.to_string(),
    )?;
    upserts(
        io,
        MAP_IPCACHE,
        &d.ipcache.upserts,
        &mut mirror.ipcache,
        dump::ipcache_key,
    )?;
    // A changed policy set gets a new id: its entries must exist before an endpoint
    // points at it (else established flows would be re-checked against nothing).
    upserts(
        io,
        MAP_POLICY,
        &d.policy.upserts,
        &mut mirror.policy,
        dump::policy_key,
    )?;
    upserts(
        io,
        MAP_ENDPOINTS,
        &d.endpoints.upserts,
        &mut mirror.endpoints,
        dump::endpoint_key,
    )?;
    for (k, table) in &d.maglev.upserts {
        io.set_maglev(*k, table).map_err(|source| ApplyError {
            op: "write",
            map: MAP_LB4_MAGLEV.to_string(),
            key: format!("table of rev_nat {k}"),
            hint: hint(&source),
            source,
        })?;
        mirror.maglev.insert(*k, table.clone());
    }
    let (masters, slots): (Vec<_>, Vec<_>) = d
        .lb4_services
        .upserts
        .iter()
        .cloned()
        .partition(|(k, _)| k.backend_slot == 0);
    upserts(
        io,
        MAP_LB4_SVC,
        &slots,
        &mut mirror.lb4_services,
        dump::lb4_key,
    )?;
    upserts(
        io,
        MAP_LB4_SVC,
        &masters,
        &mut mirror.lb4_services,
        dump::lb4_key,
    )?;

    let (masters, slots): (Vec<_>, Vec<_>) = d
        .lb4_services
        .deletes
        .iter()
        .cloned()
        .partition(|k| k.backend_slot == 0);
    deletes(
        io,
        MAP_LB4_SVC,
        &masters,
        &mut mirror.lb4_services,
        dump::lb4_key,
    )?;
    deletes(
        io,
        MAP_LB4_SVC,
        &slots,
        &mut mirror.lb4_services,
        dump::lb4_key,
    )?;
    for k in &d.maglev.deletes {
        io.delete_maglev(*k).map_err(|source| ApplyError {
            op: "delete",
            map: MAP_LB4_MAGLEV.to_string(),
            key: format!("table of rev_nat {k}"),
            hint: hint(&source),
            source,
        })?;
        mirror.maglev.remove(k);
    }
    deletes(
        io,
        MAP_POLICY,
        &d.policy.deletes,
        &mut mirror.policy,
        dump::policy_key,
    )?;
    deletes(
        io,
        MAP_ENDPOINTS,
        &d.endpoints.deletes,
        &mut mirror.endpoints,
        dump::endpoint_key,
    )?;
    deletes(
        io,
        MAP_IPCACHE,
        &d.ipcache.deletes,
        &mut mirror.ipcache,
        dump::ipcache_key,
    )?;
    deletes(
        io,
        MAP_LB4_RNAT,
        &d.lb4_rev_nat.deletes,
        &mut mirror.lb4_rev_nat,
        |k| k.to_string(),
    )?;
    deletes(
        io,
        MAP_LB4_BE,
        &d.lb4_backends.deletes,
        &mut mirror.lb4_backends,
        |k| k.to_string(),
    )?;
    for a in &d.detach {
        io.detach(a).map_err(|e| attach_error("detach", a, e))?;
        mirror.attachments.remove(a);
    }
    Ok(())
}

fn attach_error(op: &'static str, a: &Attachment, source: io::Error) -> ApplyError {
    let (map, key) = match a {
        Attachment::Endpoint { ifname, ifindex } => (
            "endpoint interface",
            format!("{ifname} (ifindex {ifindex})"),
        ),
        Attachment::Uplink { ifname, ifindex } => {
            ("uplink", format!("{ifname} (ifindex {ifindex})"))
        }
    };
    let hint = hint(&source);
    ApplyError {
        op,
        map: map.to_string(),
        key,
        source,
        hint,
    }
}

fn upserts<K: aya::Pod + Ord, V: aya::Pod>(
    io: &mut dyn MapIo,
    map: &str,
    entries: &[(K, V)],
    mirror: &mut BTreeMap<K, V>,
    name: impl Fn(&K) -> String,
) -> Result<(), ApplyError> {
    // Many entries go in batches (one syscall each); the kernel reports how many of a
    // batch landed, so the mirror stays exact even when a batch fails half-way.
    for chunk in entries.chunks(BATCH) {
        let mut keys = Vec::with_capacity(chunk.len() * size_of::<K>());
        let mut values = Vec::with_capacity(chunk.len() * size_of::<V>());
        for (k, v) in chunk {
            keys.extend_from_slice(as_bytes(k));
            values.extend_from_slice(as_bytes(v));
        }
        let (done, result) = io.update_batch(map, &keys, &values, chunk.len());
        for (k, v) in &chunk[..done] {
            mirror.insert(*k, *v);
        }
        if let Err(source) = result {
            let k = &chunk[done.min(chunk.len() - 1)].0;
            return Err(ApplyError {
                op: "write",
                map: map.to_string(),
                key: name(k),
                hint: hint(&source),
                source,
            });
        }
    }
    Ok(())
}

/// Entries per batch syscall.
const BATCH: usize = 4096;

fn deletes<K: aya::Pod + Ord, V>(
    io: &mut dyn MapIo,
    map: &str,
    keys: &[K],
    mirror: &mut BTreeMap<K, V>,
    name: impl Fn(&K) -> String,
) -> Result<(), ApplyError> {
    for k in keys {
        io.delete(map, as_bytes(k)).map_err(|source| ApplyError {
            op: "delete",
            map: map.to_string(),
            key: name(k),
            hint: hint(&source),
            source,
        })?;
        mirror.remove(k);
    }
    Ok(())
}

/// Entries a map holds that the state does not know (for tests and adoption checks).
pub fn unknown_entries<K: Ord + Clone, V: PartialEq + Clone>(
    state: &BTreeMap<K, V>,
    actual: &BTreeMap<K, V>,
) -> usize {
    diff_map(state, actual).len()
}
