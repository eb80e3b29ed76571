// SPDX-License-Identifier: Apache-2.0
//! Answers API requests from the engine's state.

use kldnet_bpf::abi::*;

use super::Daemon;
use crate::api::{MapEntry, MapOccupancy, ProgramAttachment, Request, Response, Status};
use crate::compile::{dump, policy};
use crate::datapath::bytes;

impl Daemon {
    pub fn handle(&mut self, req: Request) -> Response {
        match req {
            Request::Status => Response::Status(Box::new(self.status())),
            Request::Reload => Response::Reload(self.reload("kldnet reload")),
            Request::Endpoints => Response::Endpoints {
                endpoints: self.engine.compiled.endpoints.clone(),
            },
            Request::Identities => Response::Identities {
                identities: self.engine.compiled.identities.identities.clone(),
            },
            Request::Services => Response::Services {
                services: self.engine.service_views(),
            },
            Request::MapDump { map } => match self.map_dump(&map) {
                Ok(entries) => Response::MapDump { entries },
                Err(message) => Response::Error { message },
            },
            Request::PolicyTrace(req) => {
                match policy::trace::trace(&self.engine.compiled, &self.engine.current, &req) {
                    Ok(trace) => Response::PolicyTrace { trace },
                    Err(message) => Response::Error { message },
                }
            }
            Request::PolicyGet { endpoint } => {
                // The maps themselves, named with the last compile.
                let got = crate::datapath::read_state(self.engine.io.as_ref())
                    .map_err(|e| format!("read maps: {e}"))
                    .and_then(|state| {
                        policy::trace::policy_get(&self.engine.compiled, &state, &endpoint)
                    });
                match got {
                    Ok(policy) => Response::PolicyGet { policy },
                    Err(message) => Response::Error { message },
                }
            }
            Request::FlowsReader { paused } => match &self.flows {
                Some(f) => Response::Flows(f.set_paused(paused)),
                None => Response::Error {
                    message: "the flow pipeline is not running".into(),
                },
            },
            // serve_one hands observe streams to the flow pipeline before they get here.
            Request::Observe(_) => Response::Error {
                message: "observe needs a stream connection (kldnet observe)".into(),
            },
        }
    }

    /// Reads the maps themselves (not the daemon's idea of them).
    fn map_dump(&self, map: &str) -> Result<Vec<MapEntry>, String> {
        let state = crate::datapath::read_state(self.engine.io.as_ref())
            .map_err(|e| format!("read maps: {e}"))?;
        let e = |key: String, value: String| MapEntry { key, value };
        Ok(match map {
            "lb" => state
                .lb4_services
                .iter()
                .map(|(k, v)| e(dump::lb4_key(k), dump::lb4_service(k, v)))
                .chain(
                    state
                        .lb4_backends
                        .iter()
                        .map(|(k, v)| e(format!("backend {k}"), dump::lb4_backend(v))),
                )
                .chain(state.lb4_rev_nat.iter().map(|(k, v)| {
                    e(
                        format!("rev_nat {k}"),
                        format!("{}:{}", dump::ip4(v.address), u16::from_be(v.port)),
                    )
                }))
                .collect(),
            "ipcache" => state
                .ipcache
                .iter()
                .map(|(k, v)| e(dump::ipcache_key(k), dump::ipcache_value(v)))
                .collect(),
            "endpoints" => state
                .endpoints
                .iter()
                .map(|(k, v)| e(dump::endpoint_key(k), dump::endpoint_info(v)))
                .collect(),
            "ct" | "nat" => self.ct_dump(map == "nat", &state)?,
            other => {
                return Err(format!(
                    "unknown map group `{other}` (lb, ipcache, endpoints, ct, nat)"
                ));
            }
        })
    }

    /// Live conntrack entries, or (`nat_only`) the translated flows and sockets.
    fn ct_dump(
        &self,
        nat_only: bool,
        state: &crate::compile::DesiredState,
    ) -> Result<Vec<MapEntry>, String> {
        let e = |key: String, value: String| MapEntry { key, value };
        let io = self.engine.io.as_ref();
        let now = dump::monotonic_ns();
        let ct: std::collections::BTreeMap<Ct4Key, CtEntry> = bytes::decode_map(
            io.dump(MAP_CT4)
                .map_err(|err| format!("read {MAP_CT4}: {err}"))?,
        );
        let live = ct.iter().filter(|(_, v)| v.expires_ns > now);
        if !nat_only {
            return Ok(live
                .map(|(k, v)| e(dump::ct4_key(k), dump::ct_entry(v, now)))
                .collect());
        }
        let socks: std::collections::BTreeMap<SockRnatKey, SockRnatValue> = bytes::decode_map(
            io.dump(MAP_SOCK_RNAT)
                .map_err(|err| format!("read {MAP_SOCK_RNAT}: {err}"))?,
        );
        Ok(live
            .filter(|(_, v)| v.rev_nat_index != 0)
            .map(|(k, v)| {
                let vip = state
                    .lb4_rev_nat
                    .get(&v.rev_nat_index)
                    .map_or("?".to_string(), |r| {
                        format!("{}:{}", dump::ip4(r.address), u16::from_be(r.port))
                    });
                e(
                    dump::ct4_key(k),
                    format!(
                        "via {vip} backend={} {}",
                        v.backend_id,
                        dump::ct_entry(v, now)
                    ),
                )
            })
            .chain(socks.iter().map(|(k, v)| {
                let (key, value) = dump::sock_rnat(k, v);
                e(key, value)
            }))
            .collect())
    }

    pub fn status(&self) -> Status {
        let eng = &self.engine;
        let spec = &eng.spec;
        let programs = self
            .engine
            .io
            .pinned_links()
            .into_iter()
            .map(|l| {
                let (program, target) = match l.split_once('-') {
                    Some(("sock", prog)) => (
                        prog.to_string(),
                        format!(
                            "cgroup {}",
                            self.cgroup
                                .as_ref()
                                .map_or(String::new(), |c| c.display().to_string())
                        ),
                    ),
                    Some(("ep", rest)) => (
                        if rest.ends_with("egress") {
                            kldnet_bpf::PROG_TO_EP
                        } else {
                            kldnet_bpf::PROG_FROM_EP
                        }
                        .to_string(),
                        format!("tc {rest}"),
                    ),
                    Some(("up", rest)) => ("kld_from_netdev".to_string(), format!("tc {rest}")),
                    _ => (l.clone(), String::new()),
                };
                ProgramAttachment {
                    program,
                    target,
                    mode: "pinned link".into(),
                }
            })
            .collect();
        Status {
            version: env!("CARGO_PKG_VERSION").to_string(),
            node: spec.node_name(&eng.hostname),
            state: eng.state_name().to_string(),
            pid: std::process::id(),
            generation: eng.generation,
            reloads: eng.reloads,
            reload_failures: eng.failures,
            last_reload: eng.last.clone(),
            config_dirs: eng
                .config_dirs
                .iter()
                .map(|d| d.display().to_string())
                .collect(),
            bpf_pin_dir: self.paths.pin_dir().display().to_string(),
            cgroup: self.cgroup.as_ref().map(|c| c.display().to_string()),
            kernel: self.features.clone(),
            programs,
            maps: self
                .engine
                .io
                .occupancy()
                .into_iter()
                .map(|(name, entries, capacity)| MapOccupancy {
                    entries: eng.current.entries_of(&name).map_or(entries, |n| n as u64),
                    name,
                    capacity,
                })
                .collect(),
            endpoints_local: eng.compiled.endpoints.iter().filter(|e| e.local).count(),
            endpoints_remote: eng.compiled.endpoints.iter().filter(|e| !e.local).count(),
            identities: eng.compiled.identities.identities.len(),
            services: spec.services.len(),
            policies: spec.policies.len(),
            encryption: spec.encryption.as_ref().map_or("none".into(), |e| {
                format!("{:?} (not enforced yet)", e.mode).to_lowercase()
            }),
            bgp: spec.bgp.as_ref().map_or("off".into(), |b| {
                format!(
                    "AS{} with {} neighbors (not enforced yet)",
                    b.local_asn,
                    b.neighbor.len()
                )
            }),
            flows: self.flows.as_ref().map(|f| f.status()),
        }
    }
}
