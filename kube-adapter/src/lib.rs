// SPDX-License-Identifier: Apache-2.0
//! kldnet-kube-adapter: Kubernetes objects (Pods, Services, EndpointSlices, NetworkPolicies,
//! Cilium policies, Nodes, LB pools, BGP) → kldnet TOML files.
//!
//! [`translate`] is pure and shared by both modes: [`render`] reads YAML manifests offline,
//! [`watch`] follows an API server. Both validate what they write with `kldnet-config`
//! before writing, and write atomically.

pub mod checked;
pub mod cli;
pub mod manifest;
pub mod model;
pub mod render;
pub mod report;
pub mod toml_out;
pub mod translate;
pub mod watch;
pub mod write;

pub use model::{ObjRef, Object};
pub use report::{Report, Status};
pub use translate::{Options, Output, translate};
