// SPDX-License-Identifier: Apache-2.0
//! The reload transaction: files → spec → compile → apply, all or nothing.
//!
//! A reload that fails validation, compilation or apply leaves the maps exactly as they
//! were (the previous generation keeps serving) and records the error for `status`.

use std::path::PathBuf;
use std::time::Instant;

use kldnet_config::{Diagnostics, Severity, Spec};

use crate::api::ReloadResult;
use crate::compile::{self, Allocations, Compiled, DesiredState, Environment};
use crate::datapath::{MapIo, apply};

/// The daemon's dataplane state, independent of how requests arrive.
pub struct Engine {
    pub io: Box<dyn MapIo + Send>,
    pub config_dirs: Vec<PathBuf>,
    pub hostname: String,
    /// Interfaces of the daemon's network namespace (re-read on every reload).
    pub interfaces: Box<dyn Fn() -> std::collections::BTreeMap<String, u32> + Send>,
    /// What the maps hold (mirrors every successful write).
    pub current: DesiredState,
    pub alloc: Allocations,
    /// The last successfully applied spec and compile.
    pub spec: Spec,
    pub compiled: Compiled,
    pub generation: u64,
    pub reloads: u64,
    pub failures: u64,
    pub last: Option<ReloadResult>,
    /// Microseconds each phase of the last reload took (for benchmarks and debugging).
    pub phases: Vec<(&'static str, u64)>,
    /// Parsed files by content: a reload re-parses only files that changed.
    pub parse_cache: kldnet_config::ParseCache,
}

impl Engine {
    /// Adopts whatever the maps hold now (after a restart: the previous daemon's state).
    pub fn adopt(
        io: Box<dyn MapIo + Send>,
        config_dirs: Vec<PathBuf>,
        hostname: String,
    ) -> std::io::Result<Engine> {
        let current = crate::datapath::read_state(io.as_ref())?;
        let alloc = Allocations::from_state(&current);
        Ok(Engine {
            io,
            config_dirs,
            hostname,
            interfaces: Box::new(crate::datapath::features::interfaces),
            current,
            alloc,
            spec: Spec::default(),
            compiled: Compiled::default(),
            generation: 0,
            reloads: 0,
            failures: 0,
            last: None,
            parse_cache: kldnet_config::ParseCache::default(),
            phases: Vec::new(),
        })
    }

    /// Reloads from the config dirs.
    pub fn reload(&mut self) -> ReloadResult {
        let started = Instant::now();
        self.reloads += 1;
        self.phases.clear();
        let (spec, mut diags) =
            kldnet_config::load_dirs_cached(&self.config_dirs, &mut self.parse_cache);
        self.phase("read+parse+validate", started);
        let outcome = if diags.has_errors() {
            Err(format!("configuration has {}", diags.summary()))
        } else {
            self.compile_and_apply(spec, &mut diags)
        };
        let rendered = render(&diags);
        let result = match outcome {
            Ok(summary) => {
                if summary != "no changes" || self.generation == 0 {
                    self.generation += 1;
                }
                ReloadResult {
                    ok: true,
                    generation: self.generation,
                    summary,
                    diagnostics: rendered,
                    duration_us: started.elapsed().as_micros() as u64,
                }
            }
            Err(summary) => {
                self.failures += 1;
                ReloadResult {
                    ok: false,
                    generation: self.generation,
                    summary,
                    diagnostics: rendered,
                    duration_us: started.elapsed().as_micros() as u64,
                }
            }
        };
        self.last = Some(result.clone());
        result
    }

    fn compile_and_apply(&mut self, spec: Spec, diags: &mut Diagnostics) -> Result<String, String> {
        let env = Environment {
            hostname: self.hostname.clone(),
            interfaces: (self.interfaces)(),
            routes: endpoint_routes(&spec, &spec.node_name(&self.hostname)),
            offline: false,
            views: false,
        };
        let t = Instant::now();
        let mut compiled = compile::compile(&spec, &env, &self.alloc);
        self.phase("compile", t);
        let t = Instant::now();
        diags.0.extend(compiled.diagnostics.iter().cloned());
        diags.sort();
        if compiled.has_errors() {
            return Err(format!("compile failed: {}", diags.summary()));
        }
        match apply::apply(self.io.as_mut(), &mut self.current, &compiled.state) {
            Ok(delta) => {
                self.alloc = std::mem::take(&mut compiled.alloc);
                self.spec = spec;
                self.compiled = compiled;
                // `current` now equals the compiled state: keep one copy.
                self.compiled.state = Default::default();
                self.phase("diff+apply+swap", t);
                Ok(delta.summary())
            }
            Err(e) => Err(format!("apply failed, previous state restored: {e}")),
        }
    }

    /// Services as compiled (frontends, backends), built on request: reloads skip them.
    pub fn service_views(&self) -> Vec<crate::compile::ServiceView> {
        let env = Environment {
            hostname: self.hostname.clone(),
            views: true,
            ..Environment::default()
        };
        compile::compile(&self.spec, &env, &self.alloc).services
    }

    fn phase(&mut self, name: &'static str, since: Instant) {
        self.phases.push((name, since.elapsed().as_micros() as u64));
    }

    pub fn state_name(&self) -> &'static str {
        match &self.last {
            Some(r) if !r.ok => "degraded",
            None => "starting",
            _ => "running",
        }
    }
}

/// Where the node routes the addresses of endpoints that name no interface.
fn endpoint_routes(
    spec: &Spec,
    this_node: &str,
) -> std::collections::BTreeMap<std::net::IpAddr, String> {
    spec.endpoints
        .iter()
        .filter(|e| e.interface.is_none() && e.node.as_deref().is_none_or(|n| n == this_node))
        .filter_map(|e| match e.addresses.first()? {
            std::net::IpAddr::V4(a) => Some((
                std::net::IpAddr::V4(*a),
                crate::datapath::features::route_device(*a)?,
            )),
            std::net::IpAddr::V6(_) => None,
        })
        .collect()
}

fn render(diags: &Diagnostics) -> Vec<String> {
    diags
        .0
        .iter()
        .filter(|d| d.severity != Severity::Note)
        .map(|d| d.to_string())
        .collect()
}

/// Parsing a large config peaks far above what the daemon keeps; hand the freed heap back
/// to the kernel so the resident size reflects the steady state. Walks the whole heap
/// (milliseconds on a large config), so the daemon calls it when idle, not in a reload.
pub fn release_freed_memory() {
    #[cfg(target_env = "gnu")]
    // SAFETY: malloc_trim only releases free heap pages; no pointers are invalidated.
    unsafe {
        libc::malloc_trim(0);
    }
}
