// SPDX-License-Identifier: Apache-2.0
//! Helper binary for end-to-end tests: the probe tool and a fake daemon.
//!
//! ```text
//! kldnet-testkit probe serve|connect …       (see kldnet_testkit::probe_cli)
//! kldnet-testkit … --run-dir DIR … fake-daemon … (binds DIR/kldnet.sock, answers "ok", ignores the rest)
//! ```

use std::io::Write;
use std::os::unix::net::UnixListener;
use std::path::PathBuf;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let code = match args.first().map(String::as_str) {
        Some("probe") => kldnet_testkit::probe_cli::cli_main(&args[1..]),
        // The sandbox puts the daemon flags first, so the mode word may come anywhere.
        _ if args.iter().any(|a| a == "fake-daemon") => fake_daemon(&args),
        _ => {
            eprintln!("usage: kldnet-testkit probe …| fake-daemon --run-dir DIR …");
            2
        }
    };
    std::process::exit(code);
}

/// Stands in for kldnetd in testkit's own tests: serves the control socket and logs its args.
fn fake_daemon(args: &[String]) -> i32 {
    let Some(run) = args
        .iter()
        .position(|a| a == "--run-dir")
        .and_then(|i| args.get(i + 1))
    else {
        eprintln!("fake-daemon: --run-dir required");
        return 2;
    };
    let sock = PathBuf::from(run).join("kldnet.sock");
    let _ = std::fs::remove_file(&sock);
    let listener = match UnixListener::bind(&sock) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("fake-daemon: bind {}: {e}", sock.display());
            return 1;
        }
    };
    println!(
        "fake kldnetd pid={} args={}",
        std::process::id(),
        args.join(" ")
    );
    let _ = std::io::stdout().flush();
    for mut conn in listener.incoming().flatten() {
        let _ = conn.write_all(b"ok\n");
    }
    0
}
