// SPDX-License-Identifier: Apache-2.0
//! kldnet's host dataplane: the `kldnetd` daemon and the `kldnet` CLI.
//!
//! Three layers with one direction of dependency:
//! [`kldnet_config`] (parse + validate, pure) → [`compile`] (Spec → desired map state,
//! pure) → [`datapath`] (the only code that touches the kernel, behind a trait).

pub mod api;
pub mod cli;
pub mod compile;
pub mod daemon;
pub mod datapath;
pub mod dbus;
pub mod flows;
pub mod metrics;
pub mod paths;
pub mod ui;
