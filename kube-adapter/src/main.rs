// SPDX-License-Identifier: Apache-2.0
//! `kldnet-kube-adapter`: `render` (offline manifests → TOML files) and `watch` (API server →
//! `/run/kldnet/50-kube.toml`). See docs/kube-adapter.md.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use kldnet_kube_adapter::render::{RenderError, render};
use kldnet_kube_adapter::{Options, watch};

#[derive(Parser)]
#[command(
    name = "kldnet-kube-adapter",
    version,
    about = "Translates Kubernetes objects into kldnet configuration files"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Args, Clone)]
struct Common {
    /// This node's name (Kubernetes nodeName): its pods get no `node`, its Node is [node].
    #[arg(long)]
    node: Option<String>,
    /// The cluster name Cilium selectors compare io.cilium.k8s.policy.cluster with.
    #[arg(long, default_value = "default")]
    cluster_name: String,
    /// Do not write [node] (when /etc/kldnet has its own).
    #[arg(long)]
    no_node_section: bool,
    /// Do not write [bgp] (when /etc/kldnet has its own).
    #[arg(long)]
    no_bgp_section: bool,
}

impl Common {
    fn options(&self) -> Options {
        Options {
            node: self.node.clone(),
            cluster_name: self.cluster_name.clone(),
            node_section: !self.no_node_section,
            bgp_section: !self.no_bgp_section,
        }
    }
}

#[derive(Subcommand)]
enum Cmd {
    /// Translate YAML manifests into 50-kube-*.toml files. Exit 0: everything translated;
    /// 3: files written, but some objects were skipped or translated in part (listed on
    /// stderr); 1: nothing written (unreadable input, or the result does not validate).
    Render {
        /// Manifest files or directories (*.yaml, *.yml, *.json), multi-document YAML.
        #[arg(short = 'f', long = "filename", required = true, num_args = 1..)]
        inputs: Vec<PathBuf>,
        /// Output directory.
        #[arg(short = 'o', long = "output-dir")]
        out: PathBuf,
        /// Namespace of namespaced objects that name none (as kubectl's default).
        #[arg(short = 'n', long, default_value = "default")]
        namespace: String,
        /// Also list translated and ignored objects.
        #[arg(short, long)]
        verbose: bool,
        #[command(flatten)]
        common: Common,
    },
    /// Follow an API server and keep one TOML file up to date.
    Watch {
        /// Kubeconfig file; default: $KUBECONFIG, ~/.kube/config, then in-cluster config.
        #[arg(long)]
        kubeconfig: Option<PathBuf>,
        /// The file to keep up to date.
        #[arg(long, default_value = "/run/kldnet/50-kube.toml")]
        out: PathBuf,
        /// Quiet time after a change before the file is rewritten.
        #[arg(long, default_value = "500ms", value_parser = parse_duration)]
        debounce: std::time::Duration,
        /// Skip the Cilium kinds (for clusters without Cilium's CRDs).
        #[arg(long)]
        no_cilium: bool,
        #[command(flatten)]
        common: Common,
    },
}

fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    s.parse::<kldnet_config::types::Duration>().map(|d| d.0)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.cmd {
        Cmd::Render {
            inputs,
            out,
            namespace,
            verbose,
            common,
        } => match render(&inputs, &out, &common.options(), &namespace) {
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
