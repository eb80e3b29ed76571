// SPDX-License-Identifier: Apache-2.0
//! `kldnetd`: load the datapath, reload on file changes and SIGHUP, serve the API.

mod engine;
mod sdnotify;
mod server;
mod watch;

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::signal::unix::{SignalKind, signal};

pub use engine::{Engine, release_freed_memory};

use crate::api::{KernelFeatures, ReloadResult, Request, Response};
use crate::datapath::{features, kernel};
use crate::paths::{self, Paths};

/// Exit code when the datapath cannot start (missing kernel feature, no privileges).
pub const EXIT_DATAPATH: i32 = 4;

#[derive(Debug, Parser)]
#[command(name = "kldnetd", version, about = "kldnet host dataplane daemon")]
pub struct DaemonArgs {
    /// Config dir (repeatable; earlier dirs win). Default: /etc/kldnet then /run/kldnet.
    #[arg(long = "config-dir")]
    pub config_dirs: Vec<PathBuf>,
    #[arg(long, default_value = paths::DEFAULT_STATE_DIR)]
    pub state_dir: PathBuf,
    /// Holds the API socket kldnet.sock.
    #[arg(long, default_value = paths::DEFAULT_RUN_DIR)]
    pub run_dir: PathBuf,
    /// bpffs dir; maps and links are pinned under <bpf-root>/v1.
    #[arg(long, default_value = paths::DEFAULT_BPF_ROOT)]
    pub bpf_root: PathBuf,
    /// cgroup v2 dir for socket LB. Default: the cgroup2 mount from /proc/mounts.
    #[arg(long)]
    pub cgroup_root: Option<PathBuf>,
    /// D-Bus to serve org.kldload.Kldnet1 on: "system" (when present), "none", or a bus
    /// address such as unix:path=/tmp/bus.
    #[arg(long, default_value = "system")]
    pub dbus: String,
    #[command(subcommand)]
    pub command: Option<DaemonCommand>,
}

#[derive(Debug, Subcommand)]
pub enum DaemonCommand {
    /// Detach and unpin everything this instance owns, then exit.
    Cleanup,
}

impl DaemonArgs {
    pub fn paths(&self) -> Paths {
        let config_dirs = if self.config_dirs.is_empty() {
            kldnet_config::DEFAULT_CONFIG_DIRS
                .iter()
                .map(PathBuf::from)
                .collect()
        } else {
            self.config_dirs.clone()
        };
        Paths {
            config_dirs,
            state_dir: self.state_dir.clone(),
            run_dir: self.run_dir.clone(),
            bpf_root: self.bpf_root.clone(),
            cgroup_root: self.cgroup_root.clone().or_else(paths::find_cgroup2_mount),
        }
    }
}

pub fn hostname() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: gethostname writes at most buf.len() bytes into buf.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc != 0 {
        return "localhost".into();
    }
    let end = buf.iter().position(|b| *b == 0).unwrap_or(buf.len());
    String::from_utf8_lossy(&buf[..end]).into_owned()
}

/// A request from another front end (D-Bus) for the main loop, with where to answer.
pub type ApiCall = (Request, tokio::sync::oneshot::Sender<Response>);

/// Channels through which other front ends reach the main loop: they send requests and
/// hear about every reload.
#[derive(Clone, Debug)]
pub struct Frontends {
    pub calls: tokio::sync::mpsc::Sender<ApiCall>,
    pub reloaded: tokio::sync::broadcast::Sender<ReloadResult>,
}

/// A running daemon.
pub struct Daemon {
    pub engine: Engine,
    pub paths: Paths,
    pub cgroup: Option<PathBuf>,
    pub features: KernelFeatures,
    /// When to hand freed heap back to the kernel (a moment after the last reload).
    pub trim_due: Option<tokio::time::Instant>,
    /// The flow pipeline (ring buffer reader, store, metrics, UI); started once serving.
    pub flows: Option<crate::flows::Flows>,
}

impl Daemon {
    fn reload(&mut self, why: &str) -> ReloadResult {
        sdnotify::reloading();
        let r = self.engine.reload();
        if let Some(f) = &self.flows {
            f.update(&self.engine);
        }
        self.trim_due = Some(tokio::time::Instant::now() + Duration::from_secs(1));
        for d in &r.diagnostics {
            if r.ok {
                tracing::warn!("{d}");
            } else {
                tracing::error!("{d}");
            }
        }
        if r.ok {
            tracing::info!(
                generation = r.generation,
                "reload ({why}): {} in {} µs",
                r.summary,
                r.duration_us
            );
        } else {
            tracing::error!(
                generation = r.generation,
                "reload ({why}) failed, generation {} keeps serving: {}",
                r.generation,
                r.summary
            );
        }
        sdnotify::ready(&status_line(&r));
        r
    }
}

fn status_line(r: &ReloadResult) -> String {
    if r.ok {
        format!("generation {}: {}", r.generation, r.summary)
    } else {
        let first = r
            .diagnostics
            .first()
            .map(|d| d.lines().next().unwrap_or("").to_string())
            .unwrap_or_default();
        format!(
            "reload FAILED, generation {} serving: {} {}",
            r.generation, r.summary, first
        )
    }
}

fn init_logging() {
    use tracing_subscriber::prelude::*;
    let filter =
        tracing_subscriber::EnvFilter::try_from_env("KLDNET_LOG").unwrap_or_else(|_| "info".into());
    if std::env::var_os("JOURNAL_STREAM").is_some()
        && let Ok(journald) = tracing_journald::layer()
    {
        tracing_subscriber::registry()
            .with(filter)
            .with(journald.with_syslog_identifier("kldnetd".into()))
            .init();
        return;
    }
    tracing_subscriber::registry()
        .with(filter)
        .with(tracing_subscriber::fmt::layer().with_writer(std::io::stderr))
        .init();
}

/// Runs kldnetd; returns the exit code.
pub fn main(args: DaemonArgs) -> i32 {
    init_logging();
    let paths = args.paths();
    if let Some(DaemonCommand::Cleanup) = args.command {
        return match cleanup(&paths) {
            Ok(()) => 0,
            Err(e) => {
                eprintln!("kldnetd cleanup: {e:#}");
                1
            }
        };
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    match runtime.block_on(run(paths, args.dbus.clone())) {
        Ok(()) => 0,
        Err(e) => {
            tracing::error!("{e:#}");
            sdnotify::stopping();
            EXIT_DATAPATH
        }
    }
}

fn cleanup(paths: &Paths) -> Result<()> {
    let removed = kernel::cleanup(&paths.pin_dir())?;
    let _ = std::fs::remove_file(paths.socket());
    println!(
        "removed {} pins under {}",
        removed.len(),
        paths.pin_dir().display()
    );
    Ok(())
}

fn start_datapath(paths: &Paths) -> Result<Daemon> {
    let features = features::probe(&paths.bpf_root, paths.cgroup_root.as_deref());
    if !features.bpffs {
        bail!(
            "{} is not on a bpf filesystem: mount one (`mount -t bpf bpf /sys/fs/bpf`) or pass --bpf-root DIR on bpffs",
            paths.bpf_root.display()
        );
    }
    for m in &features.missing {
        tracing::warn!("kernel feature missing: {m}");
    }
    let socket_lb = features.cgroup2;
    // The Maglev table size is a load-time constant of the programs: take it from the
    // configuration as it is now (the default if it does not parse yet).
    let (spec, _) = kldnet_config::load_dirs(&paths.config_dirs);
    let maglev_m = spec
        .node
        .as_ref()
        .and_then(|n| n.maglev_table_size)
        .filter(|m| crate::compile::maglev::is_valid_table_size(*m))
        .unwrap_or(crate::compile::maglev::DEFAULT_TABLE_SIZE);
    let mut kernel = kernel::KernelDatapath::open(&paths.pin_dir(), socket_lb, maglev_m)
        .context("start the BPF datapath")?;
    kernel.refresh_tc_links().context("adopt pinned tc links")?;
    let cgroup = if socket_lb {
        paths.cgroup_root.clone()
    } else {
        None
    };
    if let Some(cg) = &cgroup {
        kernel.attach_cgroup(cg).context("attach socket LB")?;
    }
    let engine = Engine::adopt(Box::new(kernel), paths.config_dirs.clone(), hostname())
        .context("read pinned maps")?;
    Ok(Daemon {
        trim_due: None,
        engine,
        paths: paths.clone(),
        cgroup,
        features,
        flows: None,
    })
}

async fn run(paths: Paths, dbus: String) -> Result<()> {
    std::fs::create_dir_all(&paths.run_dir)
        .with_context(|| format!("create run dir {}", paths.run_dir.display()))?;
    std::fs::create_dir_all(&paths.state_dir)
        .with_context(|| format!("create state dir {}", paths.state_dir.display()))?;
    let mut daemon = start_datapath(&paths)?;
    let adopted = daemon.engine.current.lb4_services.len() + daemon.engine.current.ipcache.len();
    tracing::info!(
        "datapath loaded, pins in {} ({adopted} entries adopted)",
        paths.pin_dir().display()
    );
    daemon.reload("start");

    let socket = paths.socket();
    let _ = std::fs::remove_file(&socket);
    let listener =
        UnixListener::bind(&socket).with_context(|| format!("listen on {}", socket.display()))?;
    let (_watcher, mut changes) = watch::watch(&paths.config_dirs)?;
    let mut hup = signal(SignalKind::hangup())?;
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let (calls_tx, mut calls) = tokio::sync::mpsc::channel::<ApiCall>(16);
    let (reloaded, _) = tokio::sync::broadcast::channel::<ReloadResult>(16);
    let frontends = Frontends {
        calls: calls_tx,
        reloaded: reloaded.clone(),
    };
    daemon.flows = Some(crate::flows::Flows::start(
        &daemon.engine,
        &paths.pin_dir(),
        frontends.calls.clone(),
    ));
    let _dbus = crate::dbus::start(&dbus, frontends).await;
    let mut watchdog =
        tokio::time::interval(sdnotify::watchdog_interval().unwrap_or(Duration::from_secs(3600)));
    loop {
        let trim_due = daemon.trim_due;
        tokio::select! {
            // A second after a reload, when nothing else happens, return freed heap.
            _ = async { tokio::time::sleep_until(trim_due.expect("guarded")).await }, if trim_due.is_some() => {
                release_freed_memory();
                daemon.trim_due = None;
            }
            conn = listener.accept() => {
                if let Ok((stream, _)) = conn {
                    serve_one(&mut daemon, stream).await;
                }
            }
            Some((req, answer)) = calls.recv() => {
                let was_reload = req == Request::Reload;
                let response = daemon.handle(req);
                if was_reload && let Response::Reload(r) = &response {
                    let _ = reloaded.send(r.clone());
                }
                let _ = answer.send(response);
            }
            _ = hup.recv() => { let _ = reloaded.send(daemon.reload("SIGHUP")); }
            Some(()) = changes.recv() => {
                // Debounce: editors write several times; take the quiet moment after.
                watch::settle(&mut changes, Duration::from_millis(20)).await;
                let _ = reloaded.send(daemon.reload("config change"));
            }
            _ = watchdog.tick() => sdnotify::watchdog(),
            _ = term.recv() => break,
            _ = int.recv() => break,
        }
    }
    sdnotify::stopping();
    let _ = std::fs::remove_file(&socket);
    tracing::info!(
        "stopping; maps and links stay pinned in {} so traffic keeps flowing (`kldnetd cleanup` removes them)",
        paths.pin_dir().display()
    );
    Ok(())
}

async fn serve_one(daemon: &mut Daemon, stream: UnixStream) {
    let (read, mut write) = stream.into_split();
    let mut line = String::new();
    let mut reader = BufReader::new(read);
    let read_result =
        tokio::time::timeout(Duration::from_secs(5), reader.read_line(&mut line)).await;
    let response = match read_result {
        Ok(Ok(_)) => match serde_json::from_str::<Request>(&line) {
            Ok(Request::Observe(q)) if daemon.flows.is_some() => {
                // A stream: the flow pipeline's thread serves it from here on.
                if let Ok(s) = reader.into_inner().reunite(write)
                    && let Ok(s) = s.into_std()
                    && let Some(f) = &daemon.flows
                {
                    f.observe(*q, s);
                }
                return;
            }
            Ok(req) => daemon.handle(req),
            Err(e) => Response::Error {
                message: format!("bad request: {e}"),
            },
        },
        _ => return,
    };
    let mut out = serde_json::to_string(&response)
        .unwrap_or_else(|e| format!("{{\"result\":\"error\",\"message\":\"{e}\"}}"));
    out.push('\n');
    let _ = write.write_all(out.as_bytes()).await;
}
