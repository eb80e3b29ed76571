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
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use kldnet_testkit::{NetnsGuard, command_in};

use super::rules::{self, BenchService};
use crate::compile::{self, Allocations, DesiredState, Environment};
use crate::daemon::Engine;
use crate::datapath::{apply, kernel::KernelDatapath};

/// Runs `cmd` to completion; its wall time, or an error with its stderr.
pub fn timed(mut cmd: Command) -> Result<Duration> {
    let what = format!("{:?}", cmd.get_program());
    let t = Instant::now();
    let out = cmd.output().with_context(|| format!("run {what}"))?;
    let d = t.elapsed();
    ensure!(
        out.status.success(),
        "{what} failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr).trim()
    );
    Ok(d)
}

/// Runs `program args` inside namespace `ns`, timed.
pub fn timed_in(ns: &str, program: &str, args: &[&str]) -> Result<Duration> {
    timed(command_in(ns, program, args, None))
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
    pub fn load(self, ns: &str, file: &Path) -> Result<Duration> {
        let f = file.to_str().context("non-UTF-8 temp path")?;
        match self {
            Netfilter::Nftables => timed_in(ns, "nft", &["-f", f]),
            _ => timed_in(ns, self.restore(), &["--noflush", f]),
        }
    }

    /// Replaces the namespace's nat rules with `file` (plus the built-in chain jumps).
    pub fn replace(self, ns: &str, file: &Path, jumps: &Path) -> Result<()> {
        let f = file.to_str().context("non-UTF-8 temp path")?;
        match self {
            Netfilter::Nftables => {
                timed_in(ns, "nft", &["flush", "ruleset"])?;
                timed_in(ns, "nft", &["-f", f])?;
            }
            _ => {
                timed_in(ns, self.restore(), &[f])?;
                self.load(ns, jumps)?;
            }
        }
        Ok(())
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
#[derive(Clone, Debug, Default)]
pub struct NetfilterTimes {
    /// (a) the whole ruleset into an empty namespace.
    pub program: Duration,
    /// (b) kube-proxy's way: the whole ruleset again, with one more service (iptables only).
    pub add_full: Option<Duration>,
    /// (b) only the new service's chains and rules (nft: chains + one map element).
    pub add_one: Duration,
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

/// Measures one netfilter back end at `n = svcs.len()` services.
pub fn netfilter(
    nf: Netfilter,
    svcs: &[BenchService],
    backends: u32,
    runs: u32,
    tmp: &Path,
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
    for run in 0..runs.max(1) {
        let ns = NetnsGuard::create(&format!(
            "kldbench-{}-{}-{run}",
            std::process::id(),
            nf.short()
        ))?;
        program.push(nf.load(ns.name(), &full)?);
        if nf != Netfilter::Nftables {
            nf.load(ns.name(), &jumps)?;
            add_full.push(nf.load(ns.name(), &full_plus)?);
        }
        add_one.push(nf.load(ns.name(), &one)?);
    }
    Ok(NetfilterTimes {
        program: median(program),
        add_full: (!add_full.is_empty()).then(|| median(add_full)),
        add_one: median(add_one),
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
