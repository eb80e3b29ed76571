// SPDX-License-Identifier: Apache-2.0
//! The consumer of the pinned `kld_events` ring buffer and the reader of the datapath's
//! `kld_counters` (lost events).
//!
//! The datapath never waits for us: `bpf_ringbuf_reserve()` fails when the ring is full
//! and the program counts the loss in `kld_counters[CTR_EVENTS_LOST]` and goes on. This
//! side drains the ring in batches every 50 ms, or sooner on an epoll wakeup (tokio
//! `AsyncFd`) when 64 KiB are waiting, so a slow consumer costs events, never forwarding,
//! and a busy datapath does not pay a wakeup per record.

use std::collections::BTreeMap;
use std::os::fd::AsRawFd;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::{Context, Result};
use aya::maps::{Map, MapData, PerCpuArray, RingBuf};
use kldnet_bpf::abi::*;
use tokio::io::Interest;
use tokio::io::unix::AsyncFd;

use super::Shared;

/// Records decoded per wakeup before the task yields to the other tasks of the runtime.
const BATCH: usize = 4096;
/// How often the ring is drained. The datapath submits records without waking us
/// (`BPF_RB_NO_WAKEUP`) until 64 KiB are waiting, so this bounds how late a flow shows up
/// in `kldnet observe --follow`.
const POLL: Duration = Duration::from_millis(50);

/// Opens the pinned ring buffer.
pub fn open_ring(pin_dir: &Path) -> Result<RingBuf<MapData>> {
    let path = pin_dir.join(MAP_EVENTS);
    let data =
        MapData::from_pin(&path).with_context(|| format!("open pinned map {}", path.display()))?;
    RingBuf::try_from(Map::RingBuf(data)).with_context(|| format!("map {MAP_EVENTS} as ringbuf"))
}

/// Datapath health counters, summed over CPUs.
pub struct Counters {
    map: PerCpuArray<MapData, u64>,
}

impl Counters {
    pub fn open(pin_dir: &Path) -> Result<Counters> {
        let path = pin_dir.join(MAP_COUNTERS);
        let data = MapData::from_pin(&path)
            .with_context(|| format!("open pinned map {}", path.display()))?;
        Ok(Counters {
            map: PerCpuArray::try_from(Map::PerCpuArray(data))
                .with_context(|| format!("map {MAP_COUNTERS} as per-CPU array"))?,
        })
    }

    pub fn get(&self, idx: u32) -> u64 {
        self.map
            .get(&idx, 0)
            .map(|v| v.iter().copied().fold(0u64, u64::wrapping_add))
            .unwrap_or(0)
    }

    pub fn all(&self) -> BTreeMap<u32, u64> {
        (0..CTR_COUNT).map(|i| (i, self.get(i))).collect()
    }
}

/// CLOCK_REALTIME − CLOCK_MONOTONIC in ns: turns bpf_ktime_get_ns() into wall time.
pub fn unix_offset_ns() -> i64 {
    let now = |clock| {
        let mut ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: clock_gettime writes one timespec into ts.
        unsafe { libc::clock_gettime(clock, &mut ts) };
        ts.tv_sec * 1_000_000_000 + ts.tv_nsec
    };
    now(libc::CLOCK_REALTIME) - now(libc::CLOCK_MONOTONIC)
}

/// Drains the ring until the runtime stops. Paused (tests): leaves the ring alone, so the
/// kernel side fills it and counts losses.
pub async fn run(shared: Arc<Shared>, ring: RingBuf<MapData>) {
    let fd = ring.as_raw_fd();
    // SAFETY: the fd is the ring buffer map's, owned by `ring`, which the AsyncFd owns for
    // its whole life; RingBuf::as_raw_fd always returns that same fd.
    let mut afd = match unsafe { AsyncFd::register_with_interest(ring, Interest::READABLE) } {
        Ok(a) => a,
        Err(e) => {
            tracing::error!(
                "flows: cannot poll {MAP_EVENTS} (fd {fd}): {e}; no flows will be shown"
            );
            *shared.error.lock().expect("lock") = Some(format!("cannot poll {MAP_EVENTS}: {e}"));
            return;
        }
    };
    let mut offset = unix_offset_ns();
    let mut offset_at = std::time::Instant::now();
    let mut batch = Vec::with_capacity(BATCH);
    // True while the last pass stopped at BATCH: records are waiting and the ring will not
    // signal again (its adaptive wakeup fires only when the consumer had caught up).
    let mut pending = false;
    loop {
        if shared.paused.load(Ordering::Relaxed) {
            tokio::time::sleep(Duration::from_millis(20)).await;
            continue;
        }
        if !pending {
            // The ring wakes us only when a batch is waiting; poll for the rest.
            tokio::select! {
                g = afd.readable_mut() => match g {
                    Ok(mut g) => g.clear_ready(),
                    Err(e) => {
                        tracing::error!("flows: polling {MAP_EVENTS} failed: {e}");
                        return;
                    }
                },
                _ = tokio::time::sleep(POLL) => {}
            }
        }
        if offset_at.elapsed() > Duration::from_secs(1) {
            offset = unix_offset_ns();
            offset_at = std::time::Instant::now();
        }
        let snapshot = shared.snapshot();
        let ring = afd.get_mut();
        let mut seq = shared.seq.load(Ordering::Relaxed);
        let mut errors = 0u64;
        pending = true;
        while batch.len() < BATCH {
            let Some(item) = ring.next() else {
                pending = false;
                break;
            };
            match snapshot.decode(&item, seq + 1, offset) {
                Some(f) => {
                    seq += 1;
                    batch.push(f);
                }
                None => errors += 1,
            }
        }
        shared.seq.store(seq, Ordering::Relaxed);
        if errors > 0 {
            shared.decode_errors.fetch_add(errors, Ordering::Relaxed);
        }
        if !batch.is_empty() {
            shared.ingest(&mut batch);
        }
        if pending {
            tokio::task::yield_now().await;
        }
    }
}
