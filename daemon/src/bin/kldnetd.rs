// SPDX-License-Identifier: Apache-2.0
//! kldnetd: the kldnet host dataplane daemon.

use clap::Parser;

fn main() {
    std::process::exit(kldnet::daemon::main(kldnet::daemon::DaemonArgs::parse()));
}
