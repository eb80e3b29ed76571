// SPDX-License-Identifier: Apache-2.0
//! kldnet: the command line of the kldnet host dataplane.

use clap::Parser;

fn main() {
    // Die quietly on a closed pipe (`kldnet bpf ct list | head`) like other Unix tools.
    // SAFETY: restoring the default disposition of SIGPIPE before any thread starts.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    let cli = match kldnet::cli::Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let code = if e.use_stderr() {
                kldnet::cli::EXIT_USAGE
            } else {
                kldnet::cli::EXIT_OK
            };
            let _ = e.print();
            std::process::exit(code);
        }
    };
    std::process::exit(kldnet::cli::run(cli));
}
