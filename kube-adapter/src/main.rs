// SPDX-License-Identifier: Apache-2.0
//! `kldnet-kube-adapter`: `render` (offline manifests → TOML files) and `watch` (API server →
//! `/run/kldnet/50-kube.toml`). See docs/kube-adapter.md.

use std::process::ExitCode;

use clap::Parser;
use kldnet_kube_adapter::cli::{Cli, Cmd};
use kldnet_kube_adapter::render::{RenderError, render};
use kldnet_kube_adapter::watch;

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.cmd {
        Cmd::Render {
            inputs,
            out,
            namespace,
            verbose,
            check_with,
            common,
        } => match render(&inputs, &out, &common.options(), &namespace, &check_with) {
            Ok(r) => {
                for l in r.report.lines(verbose) {
                    eprintln!("{l}");
                }
                for d in &r.diagnostics.0 {
                    eprintln!("{d}");
                }
                for f in &r.files {
                    println!("{}", f.display());
                }
                let (t, p, s, i) = r.report.counts();
                eprintln!("{t} translated, {p} partially translated, {s} skipped, {i} ignored");
                if r.report.lossy() {
                    ExitCode::from(3)
                } else {
                    ExitCode::SUCCESS
                }
            }
            Err(RenderError::Io(e)) => {
                eprintln!("error: {e:#}");
                ExitCode::from(1)
            }
            Err(RenderError::Invalid(d, report)) => {
                for l in report.lines(verbose) {
                    eprintln!("{l}");
                }
                eprint!("{d}");
                eprintln!(
                    "error: the translated configuration does not validate ({}); nothing written",
                    d.summary()
                );
                ExitCode::from(1)
            }
        },
        Cmd::Watch {
            kubeconfig,
            out,
            debounce,
            no_cilium,
            check_with,
            common,
        } => {
            tracing_subscriber::fmt()
                .with_env_filter(
                    tracing_subscriber::EnvFilter::try_from_default_env()
                        .unwrap_or_else(|_| "info".into()),
                )
                .with_writer(std::io::stderr)
                .init();
            let cfg = watch::WatchConfig {
                kubeconfig,
                out,
                debounce,
                cilium: !no_cilium,
                options: common.options(),
                check_with,
            };
            let rt = match tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    eprintln!("error: start runtime: {e}");
                    return ExitCode::from(1);
                }
            };
            match rt.block_on(watch::run(cfg, std::future::pending())) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("error: {e:#}");
                    ExitCode::from(1)
                }
            }
        }
    }
}
