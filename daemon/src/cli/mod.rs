// SPDX-License-Identifier: Apache-2.0
//! The `kldnet` command line: offline commands (`check`) and clients of the daemon.

mod bench;
mod bench_flows;
pub(crate) mod bench_services;
mod check;
mod connectivity;
mod demo;
pub mod observe;
pub mod policy;
mod show;

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// Exit codes (CONTRACT §3).
pub const EXIT_OK: i32 = 0;
pub const EXIT_FAILURE: i32 = 1;
pub const EXIT_USAGE: i32 = 2;
pub const EXIT_UNREACHABLE: i32 = 3;

#[derive(Debug, Parser)]
#[command(
    name = "kldnet",
    version,
    about = "Control and inspect the kldnet host dataplane"
)]
pub struct Cli {
    /// Directory of the daemon's API socket (kldnet.sock).
    #[arg(long, global = true, default_value = crate::paths::DEFAULT_RUN_DIR)]
    pub run_dir: PathBuf,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum)]
pub enum Output {
    #[default]
    Table,
    Json,
}

#[derive(Debug, Args)]
pub struct OutputArg {
    /// Output format.
    #[arg(short = 'o', long = "output", value_enum, default_value_t = Output::Table)]
    pub output: Output,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Validate the configuration and print every problem (no daemon needed).
    Check {
        /// Config dir (repeatable; earlier dirs win). Default: /etc/kldnet then /run/kldnet.
        #[arg(long = "config-dir")]
        config_dirs: Vec<PathBuf>,
        /// Also print the compiled map contents.
        #[arg(long)]
        dump: bool,
    },
    /// Show the daemon's state.
    Status {
        #[arg(long)]
        json: bool,
    },
    /// Ask the daemon to reload its configuration now.
    Reload,
    /// Workloads known to the daemon.
    #[command(subcommand)]
    Endpoint(ListOnly),
    /// Security identities.
    #[command(subcommand)]
    Identity(ListOnly),
    /// Services and their backends.
    #[command(subcommand)]
    Service(ListOnly),
    /// Dump BPF maps.
    #[command(subcommand)]
    Bpf(BpfCommand),
    /// Network policy: trace a connection's verdict.
    #[command(subcommand)]
    Policy(PolicyCommand),
    /// Run an isolated sandbox with the example configuration, real traffic and status.
    Demo(demo::DemoArgs),
    /// Flows: Hubble-style records of what the datapath forwarded and dropped.
    Observe(Box<observe::ObserveArgs>),
    /// Check every service path in a throwaway sandbox (see docs/connectivity.md).
    #[command(subcommand)]
    Connectivity(ConnectivityCommand),
    /// Benchmarks (see docs/benchmarks.md).
    #[command(subcommand)]
    Bench(BenchCommand),
    /// Traffic probe used by tests and the demo (serve / connect).
    #[command(hide = true)]
    Probe {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
}

#[derive(Debug, Subcommand)]
pub enum ConnectivityCommand {
    /// Build throwaway endpoints and check each traffic path; `N passed, N failed`.
    Test(connectivity::ConnectivityArgs),
}

#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// Parse, validate, compile and apply a large generated configuration.
    Reload(bench::ReloadBenchArgs),
    /// Service LB side by side with kube-proxy's iptables and nftables rules.
    Services(bench_services::ServicesBenchArgs),
    /// Flow events decoded per second on one core (synthetic ring buffer records).
    Flows(bench_flows::FlowsBenchArgs),
}

#[derive(Debug, Subcommand)]
pub enum PolicyCommand {
    /// Verdict for a connection and the rule that decided it (exit 1 when denied).
    Trace(policy::TraceArgs),
}

#[derive(Debug, Subcommand)]
pub enum PolicyMapCommand {
    /// The compiled policy entries of a local endpoint (NAMESPACE/NAME or IP).
    Get {
        endpoint: String,
        #[command(flatten)]
        output: OutputArg,
    },
}

#[derive(Debug, Subcommand)]
pub enum ListOnly {
    /// List them.
    List(OutputArg),
}

#[derive(Debug, Subcommand)]
pub enum BpfCommand {
    /// Load-balancer maps: services, backends, reverse NAT.
    #[command(subcommand)]
    Lb(ListOnly),
    /// The ipcache: IP/CIDR → identity, tunnel endpoint.
    #[command(subcommand)]
    Ipcache(ListOnly),
    /// Local endpoints map.
    #[command(subcommand)]
    Endpoints(ListOnly),
    /// Connection tracking entries (live ones).
    #[command(subcommand)]
    Ct(ListOnly),
    /// Address translations: per-packet LB flows and connect()-translated sockets.
    #[command(subcommand)]
    Nat(ListOnly),
    /// Policy map of an endpoint.
    #[command(subcommand)]
    Policy(PolicyMapCommand),
}

/// Runs the CLI; returns the process exit code.
pub fn run(cli: Cli) -> i32 {
    let socket = cli.run_dir.join(crate::paths::SOCKET_NAME);
    match cli.command {
        Command::Check { config_dirs, dump } => check::run(config_dirs, dump),
        Command::Status { json } => show::status(&socket, json),
        Command::Reload => show::reload(&socket),
        Command::Endpoint(ListOnly::List(o)) => show::endpoints(&socket, o.output),
        Command::Identity(ListOnly::List(o)) => show::identities(&socket, o.output),
        Command::Service(ListOnly::List(o)) => show::services(&socket, o.output),
        Command::Bpf(BpfCommand::Lb(ListOnly::List(o))) => show::map_dump(&socket, "lb", o.output),
        Command::Bpf(BpfCommand::Ipcache(ListOnly::List(o))) => {
            show::map_dump(&socket, "ipcache", o.output)
        }
        Command::Bpf(BpfCommand::Ct(ListOnly::List(o))) => show::map_dump(&socket, "ct", o.output),
        Command::Bpf(BpfCommand::Nat(ListOnly::List(o))) => {
            show::map_dump(&socket, "nat", o.output)
        }
        Command::Bpf(BpfCommand::Endpoints(ListOnly::List(o))) => {
            show::map_dump(&socket, "endpoints", o.output)
        }
        Command::Policy(PolicyCommand::Trace(a)) => policy::run_trace(&socket, a),
        Command::Bpf(BpfCommand::Policy(PolicyMapCommand::Get { endpoint, output })) => {
            policy::run_get(&socket, &endpoint, output.output)
        }
        Command::Demo(args) => demo::run(args),
        Command::Observe(args) => observe::run(&socket, *args),
        Command::Connectivity(ConnectivityCommand::Test(args)) => connectivity::run(args),
        Command::Bench(BenchCommand::Reload(args)) => bench::run(args),
        Command::Bench(BenchCommand::Flows(args)) => bench_flows::run(args),
        Command::Bench(BenchCommand::Services(args)) => bench_services::run(args),
        Command::Probe { args } => kldnet_testkit::probe_cli::cli_main(&args),
    }
}
