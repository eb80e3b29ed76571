// SPDX-License-Identifier: Apache-2.0
//! Endpoints, the ipcache and attachment points.

use std::net::IpAddr;

use kldnet_bpf::abi::*;
use kldnet_config::types::Cidr;
use kldnet_config::{Diagnostic, Spec};

use super::{Attachment, Compiled, EndpointView, Environment, addr16, be32, identity};

fn ipcache_key(cidr: Cidr) -> IpcacheKey {
    let (addr, family) = addr16(cidr.addr);
    IpcacheKey {
        prefixlen: IPCACHE_PREFIX_BASE + u32::from(cidr.prefix_len),
        family,
        addr,
        ..IpcacheKey::default()
    }
}

fn tunnel(addr: Option<IpAddr>) -> u32 {
    match addr {
        Some(IpAddr::V4(a)) => be32(a),
        _ => 0,
    }
}

pub(super) fn compile_network(spec: &Spec, env: &Environment, out: &mut Compiled) {
    let node = spec.node();
    let this_node = spec.node_name(&env.hostname);
    let state = &mut out.state;

    // The world: everything not known more precisely.
    for default in ["0.0.0.0/0", "::/0"] {
        let cidr: Cidr = default.parse().expect("static CIDR");
        state.ipcache.insert(
            ipcache_key(cidr),
            IpcacheValue {
                identity: identity::WORLD,
                ..IpcacheValue::default()
            },
        );
    }
    // This node and the other nodes.
    if let Some(addr) = node.address {
        state.ipcache.insert(
            ipcache_key(Cidr::host(addr)),
            IpcacheValue {
                identity: identity::HOST,
                ..IpcacheValue::default()
            },
        );
    }
    for peer in &spec.peers {
        state.ipcache.insert(
            ipcache_key(Cidr::host(peer.address)),
            IpcacheValue {
                identity: identity::REMOTE_NODE,
                flags: IPC_F_REMOTE_NODE,
                ..IpcacheValue::default()
            },
        );
        // Addresses a peer routes but the config does not name: world, tunnelled there.
        for cidr in &peer.endpoint_cidrs {
            state.ipcache.insert(
                ipcache_key(*cidr),
                IpcacheValue {
                    identity: identity::WORLD,
                    tunnel_endpoint: tunnel(Some(peer.address)),
                    ..IpcacheValue::default()
                },
            );
        }
    }

    for ep in &spec.endpoints {
        let id = out
            .identities
            .of(&ep.namespace, &ep.labels)
            .expect("every endpoint label set has an identity");
        let node_name = ep.node.clone().unwrap_or_else(|| this_node.clone());
        let local = node_name == this_node;
        let peer_addr = spec
            .peers
            .iter()
            .find(|p| p.name == node_name)
            .map(|p| p.address);
        for addr in &ep.addresses {
            state.ipcache.insert(
                ipcache_key(Cidr::host(*addr)),
                IpcacheValue {
                    identity: id,
                    tunnel_endpoint: if local { 0 } else { tunnel(peer_addr) },
                    ..IpcacheValue::default()
                },
            );
        }
        let mut view = EndpointView {
            namespace: ep.namespace.clone(),
            name: ep.name.clone(),
            node: node_name,
            local,
            identity: id,
            addresses: ep.addresses.clone(),
            interface: None,
            ifindex: None,
            labels: ep.labels.iter().map(|(k, v)| format!("{k}={v}")).collect(),
            ingress_enforced: false,
            egress_enforced: false,
            policies: Vec::new(),
        };
        if local {
            let ifname = ep
                .interface
                .clone()
                .or_else(|| route_lookup(env, &ep.addresses));
            let ifindex = ifname.as_ref().and_then(|n| env.interfaces.get(n).copied());
            match (&ifname, ifindex) {
                (Some(name), Some(ifindex)) => {
                    state.attachments.insert(Attachment::Endpoint { ifname: name.clone(), ifindex });
                }
                _ if env.offline => {}
                (Some(name), None) => out.diagnostics.push(
                    Diagnostic::warning(
                        Some(spec.locate_field(&ep.meta, "interface")),
                        format!("interface {name} of endpoint {}/{} does not exist (yet)", ep.namespace, ep.name),
                    )
                    .with_help("the endpoint is programmed but not attached; reload once the VM or container has created it"),
                ),
                (None, _) => out.diagnostics.push(
                    Diagnostic::warning(Some(spec.locate(&ep.meta)), format!("no interface found for endpoint {}/{}", ep.namespace, ep.name))
                        .with_help("set `interface` to the host-side tap or veth"),
                ),
            }
            for addr in &ep.addresses {
                let (a, family) = addr16(*addr);
                state.endpoints.insert(
                    EndpointKey {
                        addr: a,
                        family,
                        ..EndpointKey::default()
                    },
                    EndpointInfo {
                        ifindex: ifindex.unwrap_or(0),
                        identity: id,
                        policy_set: 0,
                        flags: 0,
                    },
                );
            }
            view.interface = ifname;
            view.ifindex = ifindex;
        }
        out.endpoints.push(view);
    }

    for uplink in &node.uplinks {
        match env.interfaces.get(uplink) {
            Some(ifindex) => {
                state.attachments.insert(Attachment::Uplink {
                    ifname: uplink.clone(),
                    ifindex: *ifindex,
                });
            }
            None => {
                let at = spec
                    .node
                    .as_ref()
                    .map(|n| spec.locate_field(&n.meta, "uplinks"));
                out.diagnostics.push(Diagnostic::warning(
                    at,
                    format!("uplink {uplink} does not exist (yet)"),
                ));
            }
        }
    }
}

/// The interface the node routes the endpoint's first address to (the host side of its
/// veth or tap), from [`Environment::routes`].
fn route_lookup(env: &Environment, addrs: &[IpAddr]) -> Option<String> {
    env.routes.get(addrs.first()?).cloned()
}
