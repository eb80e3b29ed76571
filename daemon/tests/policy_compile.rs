// SPDX-License-Identifier: Apache-2.0
//! Compile-level policy tests (no root): sharing of compiled sets between endpoints,
//! the capacity diagnostic, and (ignored) the compile+apply time of 1,000 policies ×
//! 1,000 endpoints: `cargo test --release -p kldnet --test policy_compile -- --ignored
//! --nocapture`.

use std::fmt::Write as _;
use std::path::Path;
use std::time::Instant;

use kldnet::compile::{self, Allocations, Environment};
use kldnet::datapath::{self, apply, fake::FakeMaps};

fn compile_dir(dir: &Path) -> compile::Compiled {
    let (spec, diags) = kldnet_config::load_dirs(&[dir.to_path_buf()]);
    assert!(!diags.has_errors(), "{diags}");
    let env = Environment {
        hostname: "bench".into(),
        offline: true,
        ..Environment::default()
    };
    compile::compile(&spec, &env, &Allocations::default())
}

/// `n` endpoints in namespace `prod`, labels app=a{i % apps}.
fn endpoints(n: usize, apps: usize) -> String {
    let mut s = String::from(
        "[node]\nname = \"bench\"\n\n[[namespace]]\nname = \"prod\"\nlabels = { env = \"prod\" }\n\n",
    );
    for i in 0..n {
        let _ = writeln!(
            s,
            "[[endpoint]]\nname = \"ep-{i}\"\nnamespace = \"prod\"\ninterface = \"veth{i}\"\naddresses = [\"10.{}.{}.{}\"]\nlabels = {{ app = \"a{}\" }}\nports = [{{ name = \"http\", port = {} }}]\n",
            10 + i / 65536,
            (i / 256) % 256,
            i % 256,
            i % apps,
            8000 + i % 7
        );
    }
    s
}

#[test]
fn endpoints_with_equal_policy_share_one_set() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("ep.toml"), endpoints(200, 2)).unwrap();
    std::fs::write(
        dir.path().join("pol.toml"),
        "[[policy]]\nname = \"p\"\nnamespace = \"prod\"\nselector = { app = \"a0\" }\n[[policy.ingress]]\nfrom = [{ selector = { app = \"a1\" } }]\nports = [{ port = 80 }, { port = 9000, end_port = 9100 }]\n",
    )
    .unwrap();
    let c = compile_dir(dir.path());
    let sets: Vec<_> = c.policy.sets.values().collect();
    assert_eq!(
        sets.len(),
        1,
        "one set for the 100 selected endpoints: {sets:?}"
    );
    assert_eq!(sets[0].endpoints.len(), 100);
    // 1 identity × (port 80 + 6 prefixes of 9000-9100) entries, whatever the endpoint count.
    assert_eq!(c.state.policy.len(), 7, "{}", compile::dump::dump(&c.state));
    let unselected = c
        .state
        .endpoints
        .values()
        .filter(|e| e.policy_set == 0)
        .count();
    assert_eq!(unselected, 100);
}

#[test]
fn named_ingress_ports_split_sets_per_port_number() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("ep.toml"), endpoints(14, 1)).unwrap();
    std::fs::write(
        dir.path().join("pol.toml"),
        "[[policy]]\nname = \"p\"\nnamespace = \"prod\"\nselector = {}\n[[policy.ingress]]\nports = [{ name = \"http\" }]\n",
    )
    .unwrap();
    let c = compile_dir(dir.path());
    // http is 8000..8006 depending on the endpoint: 7 sets of 2 endpoints.
    assert_eq!(c.policy.sets.len(), 7);
    assert!(c.policy.sets.values().all(|s| s.endpoints.len() == 2));
}

#[test]
fn policy_map_overflow_is_reported_before_apply() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("ep.toml"), endpoints(300, 300)).unwrap();
    // Every endpoint allows every other identity on 500 single ports: 300 × 300 × 500.
    let ports: Vec<String> = (0..500)
        .map(|i| format!("{{ port = {} }}", 1000 + 2 * i))
        .collect();
    std::fs::write(
        dir.path().join("pol.toml"),
        format!("[[policy]]\nname = \"huge\"\nnamespace = \"prod\"\nselector = {{}}\n[[policy.ingress]]\nfrom = [{{ selector = {{}} }}]\nports = [{}]\n", ports.join(", ")),
    )
    .unwrap();
    let c = compile_dir(dir.path());
    let errors: Vec<String> = c.diagnostics.iter().map(|d| d.to_string()).collect();
    assert!(
        errors
            .iter()
            .any(|e| e.contains("kld_policy") && e.contains("capacity") && e.contains("prod/huge")),
        "expected a capacity error naming the map and the policy, got {errors:#?}"
    );
    assert!(c.has_errors());
}

#[test]
#[ignore = "benchmark: prints compile and apply time"]
fn bench_compile_apply_1000_policies_1000_endpoints() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("ep.toml"), endpoints(1000, 250)).unwrap();
    let mut pol = String::new();
    for j in 0..1000 {
        let _ = writeln!(
            pol,
            "[[policy]]\nname = \"p{j}\"\nnamespace = \"prod\"\nselector = {{ app = \"a{}\" }}\n[[policy.ingress]]\nfrom = [{{ selector = {{ app = \"a{}\" }} }}, {{ cidr = \"198.51.{}.0/24\" }}]\nports = [{{ port = {} }}, {{ port = 9000, end_port = 9015 }}]\n[[policy.egress]]\nto = [{{ selector = {{ app = \"a{}\" }} }}]\nports = [{{ name = \"http\" }}]\n",
            j % 250,
            (j + 1) % 250,
            j % 256,
            8000 + j % 50,
            (j + 2) % 250
        );
    }
    std::fs::write(dir.path().join("pol.toml"), pol).unwrap();
    let t = Instant::now();
    let (spec, diags) = kldnet_config::load_dirs(&[dir.path().to_path_buf()]);
    assert!(!diags.has_errors(), "{diags}");
    let parse = t.elapsed();
    let env = Environment {
        hostname: "bench".into(),
        offline: true,
        ..Environment::default()
    };
    let t = Instant::now();
    let c = compile::compile(&spec, &env, &Allocations::default());
    let compile_time = t.elapsed();
    assert!(!c.has_errors(), "{:?}", c.diagnostics);
    let mut maps = FakeMaps::default();
    let mut current = datapath::read_state(&maps).unwrap();
    let t = Instant::now();
    apply::apply(&mut maps, &mut current, &c.state).unwrap();
    let apply_time = t.elapsed();
    println!(
        "| 1,000 policies × 1,000 endpoints | {} policy entries, {} sets, {} ipcache entries | parse+validate {:.0} ms | compile {:.0} ms | apply (in-memory maps) {:.0} ms |",
        c.state.policy.len(),
        c.policy.sets.len(),
        c.state.ipcache.len(),
        parse.as_secs_f64() * 1e3,
        compile_time.as_secs_f64() * 1e3,
        apply_time.as_secs_f64() * 1e3
    );
}
