// SPDX-License-Identifier: Apache-2.0
//! The command line of `kldnet-kube-adapter`, in the library so the man page and the shell
//! completions are generated from it (`cargo xtask man`).

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::Options;

#[derive(Parser)]
#[command(
    name = "kldnet-kube-adapter",
    version,
    about = "Translates Kubernetes objects into kldnet configuration files"
)]
pub struct Cli {
    #[command(subcommand)]
    pub cmd: Cmd,
}

#[derive(Args, Clone)]
pub struct Common {
    /// This node's name (Kubernetes nodeName): its pods get no `node`, its Node is [node].
    #[arg(long)]
    pub node: Option<String>,
    /// The cluster name Cilium selectors compare io.cilium.k8s.policy.cluster with.
    #[arg(long, default_value = "default")]
    pub cluster_name: String,
    /// Do not write [node] (when /etc/kldnet has its own).
    #[arg(long)]
    pub no_node_section: bool,
    /// Do not write [bgp] (when /etc/kldnet has its own).
    #[arg(long)]
    pub no_bgp_section: bool,
}

impl Common {
    pub fn options(&self) -> Options {
        Options {
            node: self.node.clone(),
            cluster_name: self.cluster_name.clone(),
            node_section: !self.no_node_section,
            bgp_section: !self.no_bgp_section,
        }
    }
}

#[derive(Subcommand)]
pub enum Cmd {
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
        /// Validate together with the configuration in these dirs (kldnetd's, e.g.
        /// /etc/kldnet): objects that clash with it are skipped with the reason.
        #[arg(long = "check-with", value_name = "DIR")]
        check_with: Vec<PathBuf>,
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
        /// kldnetd's config dirs: the file is validated together with them, and objects
        /// that clash with them (duplicate names, a VIP taken) are skipped with the reason,
        /// so the daemon never gets a set it must refuse.
        #[arg(
            long = "check-with",
            value_name = "DIR",
            default_values = ["/etc/kldnet", "/run/kldnet"]
        )]
        check_with: Vec<PathBuf>,
        #[command(flatten)]
        common: Common,
    },
}

fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    s.parse::<kldnet_config::types::Duration>().map(|d| d.0)
}
