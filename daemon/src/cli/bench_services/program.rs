// SPDX-License-Identifier: Apache-2.0
//! (a) time to program N services and (b) time to add one more, for kube-proxy-style
//! iptables (legacy and nft back ends), kube-proxy-style nftables and kldnet.
//!
//! Every netfilter command runs inside a network namespace created for the run (a fresh
//! one per run, deleted on drop), so the host's firewall is never touched. Timings are
//! wall clock around the whole command, process start included (kube-proxy execs
//! `iptables-restore` too). kldnet runs in-process on a private bpffs: compile and apply
//! through the daemon's own code, no program attached.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use kldnet_testkit::{NetnsGuard, command_in};

use super::rules::{self, BenchService};
use crate::compile::{self, Allocations, DesiredState, Environment};
use crate::daemon::Engine;
use crate::datapath::{apply, kernel::KernelDatapath};

/// One timed step.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    /// Finished in this long.
    Took(Duration),
    /// Killed after this long (the limit).
    TimedOut(Duration),
    /// Not run: an earlier step or a smaller size timed out.
    Skipped,
}

impl Step {
    pub fn took(self) -> Option<Duration> {
        match self {
            Step::Took(d) => Some(d),
            _ => None,
        }
    }
}

/// Runs `cmd` to completion, killing it after `limit`; its wall time, or an error with
/// its stderr.
pub fn timed(mut cmd: Command, limit: Duration) -> Result<Step> {
    let what = format!("{:?}", cmd.get_program());
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let t = Instant::now();
    let child = cmd.spawn().with_context(|| format!("run {what}"))?;
    let pid = child.id() as i32;
    let (tx, rx) = std::sync::mpsc::channel();
    // The waiter takes the end time as soon as the child exits.
    let waiter = std::thread::spawn(move || {
        let out = child.wait_with_output();
        let _ = tx.send((t.elapsed(), out));
    });
    let (d, out) = match rx.recv_timeout(limit) {
        Ok(r) => r,
        Err(_) => {
            // SAFETY: pid is our child, not reaped until the waiter's wait returns.
            unsafe { libc::kill(pid, libc::SIGKILL) };
            let _ = waiter.join();
            return Ok(Step::TimedOut(limit));
        }
    };
    let _ = waiter.join();
    let out = out.with_context(|| format!("wait for {what}"))?;
    ensure!(
        out.status.success(),
        "{what} failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr).trim()
    );
    Ok(Step::Took(d))
}

/// Runs `program args` inside namespace `ns`, timed, killed after `limit`.
pub fn timed_in(ns: &str, program: &str, args: &[&str], limit: Duration) -> Result<Step> {
    timed(command_in(ns, program, args, None), limit)
}

/// Like [`timed_in`] for set-up steps: a time-out is an error.
fn run_in(ns: &str, program: &str, args: &[&str], limit: Duration) -> Result<()> {
    match timed_in(ns, program, args, limit)? {
        Step::Took(_) => Ok(()),
        _ => anyhow::bail!(
            "`{program} {}` in {ns} took longer than {limit:?}",
            args.join(" ")
        ),
    }
}

/// The kube-proxy back ends measured.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Netfilter {
    IptablesLegacy,
    IptablesNft,
    Nftables,
}

impl Netfilter {
    pub const ALL: [Netfilter; 3] = [
        Netfilter::IptablesLegacy,
        Netfilter::IptablesNft,
        Netfilter::Nftables,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Netfilter::IptablesLegacy => "iptables-legacy",
            Netfilter::IptablesNft => "iptables-nft",
            Netfilter::Nftables => "nftables vmap",
        }
    }

    /// A token for namespace names.
    pub fn short(self) -> &'static str {
        match self {
            Netfilter::IptablesLegacy => "legacy",
            Netfilter::IptablesNft => "iptnft",
            Netfilter::Nftables => "nft",
        }
    }

    fn restore(self) -> &'static str {
        match self {
            Netfilter::IptablesLegacy => "iptables-legacy-restore",
            Netfilter::IptablesNft => "iptables-nft-restore",
            Netfilter::Nftables => "nft",
        }
    }

    /// Loads `file` on top of what the namespace holds.
    pub fn load(self, ns: &str, file: &Path, limit: Duration) -> Result<Step> {
        let f = file.to_str().context("non-UTF-8 temp path")?;
        match self {
            Netfilter::Nftables => timed_in(ns, "nft", &["-f", f], limit),
            _ => timed_in(ns, self.restore(), &["--noflush", f], limit),
        }
    }

    /// Replaces the namespace's nat rules with `file` (plus the built-in chain jumps).
    pub fn replace(self, ns: &str, file: &Path, jumps: &Path, limit: Duration) -> Result<()> {
        let f = file.to_str().context("non-UTF-8 temp path")?;
        let j = jumps.to_str().context("non-UTF-8 temp path")?;
        match self {
            Netfilter::Nftables => {
                run_in(ns, "nft", &["flush", "ruleset"], limit)?;
                run_in(ns, "nft", &["-f", f], limit)
            }
            _ => {
                run_in(ns, self.restore(), &[f], limit)?;
                run_in(ns, self.restore(), &["--noflush", j], limit)
            }
        }
    }

    /// The full ruleset for `svcs`.
    pub fn full_text(self, svcs: &[BenchService]) -> String {
        match self {
            Netfilter::Nftables => rules::nft_full(svcs),
            _ => rules::iptables_full(svcs),
        }
    }

    /// The text adding one service to a loaded ruleset, incrementally.
    fn one_text(self, s: &BenchService) -> String {
        match self {
            Netfilter::Nftables => rules::nft_one(s),
            _ => rules::iptables_one(s),
        }
    }
}

/// (a) and (b) for one back end at one size: medians over the runs.
#[derive(Clone, Debug)]
pub struct NetfilterTimes {
    /// (a) the whole ruleset into an empty namespace.
    pub program: Step,
    /// (b) kube-proxy's way: the whole ruleset again, with one more service (iptables only).
    pub add_full: Step,
    /// (b) only the new service's chains and rules (nft: chains + one map element).
    pub add_one: Step,
    /// Runs the medians are over (fewer than asked when a run is slow).
    pub runs: u32,
}

impl NetfilterTimes {
    /// Every step skipped (a smaller size already timed out).
    pub fn skipped() -> NetfilterTimes {
        NetfilterTimes {
            program: Step::Skipped,
            add_full: Step::Skipped,
            add_one: Step::Skipped,
            runs: 0,
        }
    }
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn median_step(v: Vec<Step>) -> Step {
    if let Some(t) = v.iter().find(|s| !matches!(s, Step::Took(_))) {
        return *t;
    }
    match v.is_empty() {
        true => Step::Skipped,
        false => Step::Took(median(v.into_iter().filter_map(Step::took).collect())),
    }
}

/// A run slower than this is not repeated.
const REPEAT_BELOW: Duration = Duration::from_secs(10);

/// Measures one netfilter back end at `n = svcs.len()` services; every command is killed
/// after `limit`.
pub fn netfilter(
    nf: Netfilter,
    svcs: &[BenchService],
    backends: u32,
    runs: u32,
    tmp: &Path,
    limit: Duration,
) -> Result<NetfilterTimes> {
    let n = svcs.len() as u32;
    let write = |name: &str, text: String| -> Result<PathBuf> {
        let p = tmp.join(name);
        std::fs::write(&p, text).with_context(|| format!("write {}", p.display()))?;
        Ok(p)
    };
    let full = write("full.rules", nf.full_text(svcs))?;
    let mut plus = svcs.to_vec();
    plus.push(rules::service(n, backends));
    let full_plus = write("full-plus-one.rules", nf.full_text(&plus))?;
    let one = write("one.rules", nf.one_text(&rules::service(n + 1, backends)))?;
    let jumps = write("jumps.rules", rules::iptables_jumps())?;
    let (mut program, mut add_full, mut add_one) = (Vec::new(), Vec::new(), Vec::new());
    let mut done = 0;
    for run in 0..runs.max(1) {
        let ns = NetnsGuard::create(&format!(
            "kldbench-{}-{}-{run}",
            std::process::id(),
            nf.short()
        ))?;
        let t = Instant::now();
        let p = nf.load(ns.name(), &full, limit)?;
        program.push(p);
        done += 1;
        if p.took().is_none() {
            break;
        }
        if nf != Netfilter::Nftables {
            run_in(
                ns.name(),
                nf.restore(),
                &["--noflush", jumps.to_str().unwrap_or_default()],
                limit,
            )?;
            add_full.push(nf.load(ns.name(), &full_plus, limit)?);
        }
        add_one.push(nf.load(ns.name(), &one, limit)?);
        if t.elapsed() > REPEAT_BELOW {
            break;
        }
    }
    Ok(NetfilterTimes {
        add_full: median_step(add_full),
        add_one: median_step(add_one),
        program: median_step(program),
        runs: done,
    })
}

/// kldnet's (a) and (b) at one size: medians over the runs.
#[derive(Clone, Debug, Default)]
pub struct KldnetTimes {
    /// Reading and parsing the TOML (not in `program`: the spec is the input, as
    /// kube-proxy's informer cache is).
    pub parse: Duration,
    pub compile: Duration,
    /// Full apply of the compiled state into empty pinned maps.
    pub apply: Duration,
    /// (b) the daemon's path: one more service in its own file, `Engine::reload` (read
    /// every file, parse what changed, validate, compile everything, diff, apply).
    pub reload: Duration,
    /// (b) compile + diff + apply of the state with one more service (no file I/O).
    pub compile_apply: Duration,
    /// (b) the map writes alone (diff + apply of the delta).
    pub apply_delta: Duration,
}

/// kldnet measured in-process on the pinned maps of one private bpffs.
pub struct Kldnet {
    engine: Engine,
    dir: PathBuf,
}

fn env() -> Environment {
    Environment {
        hostname: "bench".into(),
        ..Environment::default()
    }
}

impl Kldnet {
    /// Loads the datapath objects with maps pinned under `pin_dir` (no program attached).
    pub fn open(pin_dir: &Path, dir: &Path) -> Result<Kldnet> {
        std::fs::create_dir_all(dir)?;
        let kernel =
            KernelDatapath::open(pin_dir, false, crate::compile::maglev::DEFAULT_TABLE_SIZE)?;
        let mut engine = Engine::adopt(Box::new(kernel), vec![dir.to_path_buf()], "bench".into())?;
        engine.interfaces = Box::new(Default::default);
        Ok(Kldnet {
            engine,
            dir: dir.to_path_buf(),
        })
    }

    fn clear(&mut self) -> Result<()> {
        let e = &mut self.engine;
        apply::apply(e.io.as_mut(), &mut e.current, &DesiredState::default())?;
        e.alloc = Allocations::default();
        Ok(())
    }

    fn write_extra(&self, s: Option<&BenchService>) -> Result<()> {
        let p = self.dir.join("zz-extra.toml");
        match s {
            Some(s) => std::fs::write(&p, rules::kldnet_toml(std::slice::from_ref(s)))?,
            None => {
                let _ = std::fs::remove_file(&p);
            }
        }
        Ok(())
    }

    fn reload_ok(&mut self) -> Result<String> {
        let r = self.engine.reload();
        ensure!(r.ok, "reload failed: {} {:?}", r.summary, r.diagnostics);
        Ok(r.summary)
    }

    /// Measures (a) and (b) for `svcs`.
    pub fn measure(
        &mut self,
        svcs: &[BenchService],
        backends: u32,
        runs: u32,
    ) -> Result<KldnetTimes> {
        let n = svcs.len() as u32;
        std::fs::write(
            self.dir.join("node.toml"),
            "[node]\nname = \"bench\"\naddress = \"192.0.2.10\"\n",
        )?;
        std::fs::write(self.dir.join("services.toml"), rules::kldnet_toml(svcs))?;
        self.write_extra(None)?;
        let dirs = [self.dir.clone()];
        let (mut parse, mut comp, mut app) = (Vec::new(), Vec::new(), Vec::new());
        for _ in 0..runs.max(1) {
            self.clear()?;
            let t = Instant::now();
            let (spec, diags) = kldnet_config::load_dirs(&dirs);
            parse.push(t.elapsed());
            ensure!(!diags.has_errors(), "generated config has errors:\n{diags}");
            let t = Instant::now();
            let c = compile::compile(&spec, &env(), &Allocations::default());
            comp.push(t.elapsed());
            ensure!(!c.has_errors(), "compile errors: {:?}", c.diagnostics);
            let e = &mut self.engine;
            let t = Instant::now();
            apply::apply(e.io.as_mut(), &mut e.current, &c.state)?;
            app.push(t.elapsed());
            ensure!(
                e.current.lb4_services.len() == svcs.len() * (1 + backends as usize),
                "expected {} service entries, maps hold {}",
                svcs.len() * (1 + backends as usize),
                e.current.lb4_services.len()
            );
            e.alloc = c.alloc;
        }
        // The engine adopts the state (its first reload finds no changes) and caches the parse.
        self.reload_ok()?;
        let extra = rules::service(n, backends);
        let (mut reload, mut ca, mut ad) = (Vec::new(), Vec::new(), Vec::new());
        for _ in 0..runs.max(1) {
            self.write_extra(Some(&extra))?;
            let t = Instant::now();
            let summary = self.reload_ok()?;
            reload.push(t.elapsed());
            ensure!(summary != "no changes", "the added service was not applied");
            self.write_extra(None)?;
            self.reload_ok()?;

            self.write_extra(Some(&extra))?;
            let (spec, _) = kldnet_config::load_dirs(&dirs);
            let e = &mut self.engine;
            let t = Instant::now();
            let c = compile::compile(&spec, &env(), &e.alloc);
            let t2 = Instant::now();
            apply::apply(e.io.as_mut(), &mut e.current, &c.state)?;
            ad.push(t2.elapsed());
            ca.push(t.elapsed());
            e.alloc = c.alloc;
            self.write_extra(None)?;
            self.reload_ok()?;
        }
        Ok(KldnetTimes {
            parse: median(parse),
            compile: median(comp),
            apply: median(app),
            reload: median(reload),
            compile_apply: median(ca),
            apply_delta: median(ad),
        })
    }

    /// Empties the maps (at the end, before the bpffs goes).
    pub fn close(mut self) -> Result<()> {
        self.clear()
    }
}
