// SPDX-License-Identifier: Apache-2.0
//! `kldnet bench reload`: how long parse, validate, compile and apply take for a large
//! generated configuration, and how much memory it costs.
//!
//! Everything runs in a private temp dir; the apply part (root only) uses a private bpffs
//! mount and never attaches a program, so it touches nothing of the machine.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use clap::Args;

use crate::compile::{self, Allocations, Environment};
use crate::daemon::Engine;
use crate::datapath::{apply, kernel::KernelDatapath};

use super::{EXIT_FAILURE, EXIT_OK};

#[derive(Debug, Args)]
pub struct ReloadBenchArgs {
    #[arg(long, default_value_t = 10_000)]
    pub services: u32,
    #[arg(long, default_value_t = 10)]
    pub backends: u32,
    #[arg(long, default_value_t = 1_000)]
    pub endpoints: u32,
    #[arg(long, default_value_t = 1_000)]
    pub policies: u32,
    /// Repetitions of each timed step (the median is reported).
    #[arg(long, default_value_t = 5)]
    pub runs: u32,
}

pub fn run(args: ReloadBenchArgs) -> i32 {
    match bench(&args) {
        Ok(()) => EXIT_OK,
        Err(e) => {
            eprintln!("kldnet bench: {e:#}");
            EXIT_FAILURE
        }
    }
}

fn ep_addr(i: u32) -> String {
    format!("10.{}.{}.{}", 200 + i / 65536, (i / 256) % 256, i % 256)
}

/// Writes `endpoints.toml`, `services.toml`, `policies.toml` and a one-service
/// `zz-extra.toml` (the file the single-change step edits).
pub fn generate(dir: &Path, a: &ReloadBenchArgs) -> Result<()> {
    let mut eps = String::from("[node]\nname = \"bench\"\naddress = \"192.0.2.10\"\n\n");
    for i in 0..a.endpoints {
        let _ = writeln!(
            eps,
            "[[endpoint]]\nname = \"ep-{i}\"\nnamespace = \"ns-{}\"\naddresses = [\"{}\"]\nlabels = {{ app = \"app-{}\", tier = \"t{}\" }}\nports = [{{ name = \"http\", port = 8080 }}]\n",
            i % 20,
            ep_addr(i),
            i % 100,
            i % 3
        );
    }
    std::fs::write(dir.join("endpoints.toml"), eps)?;
    let mut svcs = String::new();
    for s in 0..a.services {
        let vip = format!("10.{}.{}.{}", 96 + s / 65536, (s / 256) % 256, s % 256);
        let backends: Vec<String> = (0..a.backends)
            .map(|b| {
                format!(
                    "{{ address = \"{}\", port = {} }}",
                    ep_addr((s * 7 + b) % a.endpoints.max(1)),
                    8080 + (s % 16)
                )
            })
            .collect();
        let _ = writeln!(
            svcs,
            "[[service]]\nname = \"svc-{s}\"\nnamespace = \"ns-{}\"\naddresses = [\"{vip}\"]\nports = [{{ port = 80 }}]\nbackends = [{}]\n",
            s % 20,
            backends.join(", ")
        );
    }
    std::fs::write(dir.join("services.toml"), svcs)?;
    let mut pols = String::new();
    for p in 0..a.policies {
        let _ = writeln!(
            pols,
            "[[policy]]\nname = \"pol-{p}\"\nnamespace = \"ns-{}\"\nselector = {{ app = \"app-{}\" }}\n[[policy.ingress]]\nfrom = [{{ selector = {{ app = \"app-{}\" }} }}, {{ cidr = \"192.0.2.0/24\" }}]\nports = [{{ port = {} }}, {{ name = \"http\" }}]\n",
            p % 20,
            p % 100,
            (p + 1) % 100,
            1000 + p % 5000
        );
    }
    std::fs::write(dir.join("policies.toml"), pols)?;
    write_extra(dir, 1)?;
    Ok(())
}

fn write_extra(dir: &Path, backends: u32) -> Result<()> {
    let list: Vec<String> = (0..backends)
        .map(|b| format!("{{ address = \"{}\", port = 9000 }}", ep_addr(b)))
        .collect();
    let text = format!(
        "[[service]]\nname = \"extra\"\naddresses = [\"10.95.0.1\"]\nports = [{{ port = 80 }}]\nbackends = [{}]\n",
        list.join(", ")
    );
    let tmp = dir.join(".zz-extra.toml.tmp");
    std::fs::write(&tmp, text)?;
    std::fs::rename(tmp, dir.join("zz-extra.toml"))?;
    Ok(())
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1000.0)
}

/// Peak resident set of this process so far, in MiB.
fn peak_rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .unwrap_or(0.0)
        / 1024.0
}

fn bench(a: &ReloadBenchArgs) -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let dir = tmp.path().join("config");
    std::fs::create_dir_all(&dir)?;
    let t = Instant::now();
    generate(&dir, a)?;
    let size: u64 = std::fs::read_dir(&dir)?
        .flatten()
        .filter_map(|e| e.metadata().ok())
        .map(|m| m.len())
        .sum();
    println!(
        "config: {} services × {} backends, {} endpoints, {} policies ({:.1} MiB of TOML, generated in {})",
        a.services,
        a.backends,
        a.endpoints,
        a.policies,
        size as f64 / 1048576.0,
        ms(t.elapsed())
    );
    let dirs = vec![dir.clone()];
    let runs = a.runs.max(1);
    let mut parse = Vec::new();
    let mut comp = Vec::new();
    let mut compiled = None;
    for _ in 0..runs {
        let t = Instant::now();
        let (spec, diags) = kldnet_config::load_dirs(&dirs);
        parse.push(t.elapsed());
        anyhow::ensure!(!diags.has_errors(), "generated config has errors:\n{diags}");
        let env = Environment {
            hostname: "bench".into(),
            offline: true,
            ..Environment::default()
        };
        let t = Instant::now();
        let c = compile::compile(&spec, &env, &Allocations::default());
        comp.push(t.elapsed());
        anyhow::ensure!(!c.has_errors(), "compile errors: {:?}", c.diagnostics);
        compiled = Some(c);
    }
    let c = compiled.expect("runs ≥ 1");
    let (p, k) = (median(parse), median(comp));
    println!(
        "parse + validate: {}   compile: {}   total: {}   (median of {runs})",
        ms(p),
        ms(k),
        ms(p + k)
    );
    println!(
        "desired state: {} lb4_svc, {} lb4_be, {} rnat, {} ipcache, {} endpoints, {} policy entries",
        c.state.lb4_services.len(),
        c.state.lb4_backends.len(),
        c.state.lb4_rev_nat.len(),
        c.state.ipcache.len(),
        c.state.endpoints.len(),
        c.state.policy.len()
    );
    println!("peak RSS so far: {:.1} MiB", peak_rss_mib());

    if !kldnet_testkit::is_root() {
        println!("apply: skipped (needs root for a private bpffs)");
        return Ok(());
    }
    let bpffs = kldnet_testkit::BpffsMount::mount(&tmp.path().join("bpf"))
        .context("mount private bpffs")?;
    let pin_dir = kldnet_bpf::pin_dir(bpffs.path());
    let result = apply_steps(&pin_dir, &dirs, &dir, runs);
    drop(bpffs);
    result?;
    daemon_steps(tmp.path(), &dir, runs)
}

/// Runs the real kldnetd on the generated config (private bpffs, throwaway cgroup, no
/// D-Bus): its memory, and the time from writing a one-service change to the daemon
/// reporting it applied.
fn daemon_steps(tmp: &Path, dir: &Path, runs: u32) -> Result<()> {
    let kldnetd = std::env::current_exe()?.with_file_name("kldnetd");
    anyhow::ensure!(kldnetd.exists(), "{} not found", kldnetd.display());
    let bpf = kldnet_testkit::BpffsMount::mount(&tmp.join("bpf2"))?;
    let cgroup =
        kldnet_testkit::CgroupGuard::create(&format!("kldnet-bench-{}", std::process::id()))?;
    let run_dir = tmp.join("run");
    let mut child = std::process::Command::new(&kldnetd)
        .arg("--config-dir")
        .arg(dir)
        .arg("--state-dir")
        .arg(tmp.join("state"))
        .arg("--run-dir")
        .arg(&run_dir)
        .arg("--bpf-root")
        .arg(bpf.path())
        .arg("--cgroup-root")
        .arg(cgroup.dir())
        .args(["--dbus", "none"])
        .env("KLDNET_LOG", "warn")
        .stderr(std::process::Stdio::null())
        .spawn()
        .context("start kldnetd")?;
    let socket = run_dir.join(crate::paths::SOCKET_NAME);
    let result = (|| -> Result<()> {
        let started = Instant::now();
        let generation = loop {
            if let Ok(crate::api::Response::Status(s)) = crate::api::call(
                &socket,
                &crate::api::Request::Status,
                Duration::from_secs(30),
            ) {
                break s.generation;
            }
            anyhow::ensure!(
                started.elapsed() < Duration::from_secs(60),
                "kldnetd did not come up"
            );
            std::thread::sleep(Duration::from_millis(20));
        };
        println!(
            "kldnetd start to serving (load, adopt, first full apply): {}",
            ms(started.elapsed())
        );
        let rss = |field: &str| -> f64 {
            let status =
                std::fs::read_to_string(format!("/proc/{}/status", child.id())).unwrap_or_default();
            status
                .lines()
                .find_map(|l| l.strip_prefix(field))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
                .unwrap_or(0.0)
                / 1024.0
        };
        // kldnetd returns freed heap a second after a reload, when idle.
        std::thread::sleep(Duration::from_millis(1500));
        println!(
            "kldnetd memory after start: RSS {:.1} MiB (peak {:.1} MiB)",
            rss("VmRSS:"),
            rss("VmHWM:")
        );
        let mut latencies = Vec::new();
        let mut gen_now = generation;
        for i in 0..runs {
            write_extra(dir, 4 + i % 2)?;
            let t = Instant::now();
            loop {
                if let Ok(crate::api::Response::Status(s)) = crate::api::call(
                    &socket,
                    &crate::api::Request::Status,
                    Duration::from_secs(30),
                ) && s.generation > gen_now
                {
                    gen_now = s.generation;
                    latencies.push((t.elapsed(), s.last_reload.map_or(0, |r| r.duration_us)));
                    break;
                }
                anyhow::ensure!(
                    t.elapsed() < Duration::from_secs(10),
                    "change not applied within 10 s"
                );
                std::thread::sleep(Duration::from_millis(1));
            }
        }
        latencies.sort();
        let (wall, inner) = latencies[latencies.len() / 2];
        println!(
            "one-service change, file write → applied (daemon, incl. 20 ms debounce): {} (reload itself {:.2} ms; median of {runs})",
            ms(wall),
            inner as f64 / 1000.0
        );
        std::thread::sleep(Duration::from_millis(1500));
        println!(
            "kldnetd memory after reloads: RSS {:.1} MiB (peak {:.1} MiB)",
            rss("VmRSS:"),
            rss("VmHWM:")
        );
        Ok(())
    })();
    // SAFETY: signalling the child we spawned, by its pid, which we have not reaped yet.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let _ = child.wait();
    let _ = std::process::Command::new(&kldnetd)
        .arg("--bpf-root")
        .arg(bpf.path())
        .arg("cleanup")
        .stdout(std::process::Stdio::null())
        .status();
    drop(cgroup);
    drop(bpf);
    result
}

fn apply_steps(pin_dir: &Path, dirs: &[PathBuf], dir: &Path, runs: u32) -> Result<()> {
    let t = Instant::now();
    let kernel = KernelDatapath::open(pin_dir, false, crate::compile::maglev::DEFAULT_TABLE_SIZE)?;
    println!("load + verify BPF objects: {}", ms(t.elapsed()));
    let mut engine = Engine::adopt(Box::new(kernel), dirs.to_vec(), "bench".into())?;
    engine.interfaces = Box::new(Default::default);
    let (spec, _) = kldnet_config::load_dirs(dirs);
    let env = Environment {
        hostname: "bench".into(),
        ..Environment::default()
    };
    let c = compile::compile(&spec, &env, &Allocations::default());
    let t = Instant::now();
    let delta = apply::apply(engine.io.as_mut(), &mut engine.current, &c.state)?;
    println!(
        "full apply to pinned maps: {} ({})",
        ms(t.elapsed()),
        delta.summary()
    );
    // Re-apply of the same state: the diff finds nothing to write.
    let t = Instant::now();
    let again = apply::apply(engine.io.as_mut(), &mut engine.current, &c.state)?;
    println!(
        "re-apply, no changes: {} ({})",
        ms(t.elapsed()),
        again.summary()
    );
    engine.alloc = c.alloc;

    // One service changes in its own file: full reload through the engine (read every file,
    // parse, validate, compile, diff, apply the delta).
    let first = engine.reload();
    anyhow::ensure!(first.ok, "reload failed: {:?}", first.diagnostics);
    let mut one = Vec::new();
    for i in 0..runs {
        write_extra(dir, 2 + i % 2)?;
        let t = Instant::now();
        let r = engine.reload();
        one.push(t.elapsed());
        anyhow::ensure!(r.ok, "reload failed: {:?}", r.diagnostics);
    }
    let phases: Vec<String> = engine
        .phases
        .iter()
        .map(|(n, us)| format!("{n} {:.1} ms", *us as f64 / 1000.0))
        .collect();
    println!("  last reload's phases: {}", phases.join(", "));
    println!(
        "one-service change, full reload: {} (median of {runs}; {})",
        ms(median(one)),
        engine
            .last
            .as_ref()
            .map_or(String::new(), |r| r.summary.clone())
    );
    println!("peak RSS: {:.1} MiB", peak_rss_mib());
    Ok(())
}
