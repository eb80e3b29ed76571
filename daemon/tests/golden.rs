// SPDX-License-Identifier: Apache-2.0
//! Golden state tests: config dir in → sorted dump of the desired maps out, and
//! sequences of configs → the deltas between them. No root needed.
//!
//! Regenerate the expected files after an intended change with `KLDNET_BLESS=1 cargo test
//! -p kldnet --test golden`, then review the diff.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use kldnet::compile::{self, Allocations, Environment, diff, dump};
use kldnet::datapath::{self, apply, fake::FakeMaps};

fn golden_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden")
}

fn env() -> Environment {
    let interfaces: BTreeMap<String, u32> =
        [("vnet1", 11), ("vnet2", 12), ("vnet3", 13), ("vnet4", 14)]
            .into_iter()
            .map(|(n, i)| (n.to_string(), i))
            .collect();
    Environment {
        hostname: "golden-host".into(),
        interfaces,
        offline: false,
        views: true,
        routes: Default::default(),
    }
}

fn load(dirs: &[PathBuf]) -> kldnet_config::Spec {
    let (spec, diags) = kldnet_config::load_dirs(dirs);
    assert!(!diags.has_errors(), "config errors:\n{diags}");
    spec
}

/// Compares with the expected file, or writes it when blessing.
fn check_golden(path: &Path, got: &str) {
    if std::env::var_os("KLDNET_BLESS").is_some() {
        std::fs::write(path, got).unwrap();
        return;
    }
    let want = std::fs::read_to_string(path).unwrap_or_else(|e| {
        panic!(
            "{}: {e} (run with KLDNET_BLESS=1 to create it)",
            path.display()
        )
    });
    if want != got {
        panic!(
            "{} differs.\n--- expected\n{want}\n--- got\n{got}\n(KLDNET_BLESS=1 regenerates after an intended change)",
            path.display()
        );
    }
}

#[test]
fn examples_compile_to_the_expected_maps() {
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/etc/kldnet");
    let spec = load(&[examples]);
    let compiled = compile::compile(&spec, &env(), &Allocations::default());
    assert!(!compiled.has_errors(), "{:?}", compiled.diagnostics);
    check_golden(
        &golden_dir().join("examples/expected.txt"),
        &dump::dump(&compiled.state),
    );
}

#[test]
fn compile_is_deterministic() {
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/etc/kldnet");
    let spec = load(&[examples]);
    let a = compile::compile(&spec, &env(), &Allocations::default());
    let b = compile::compile(&spec, &env(), &Allocations::default());
    assert_eq!(a.state, b.state);
    // Recompiling against the previous allocations changes nothing either.
    let c = compile::compile(&spec, &env(), &a.alloc);
    assert!(diff::diff(&a.state, &c.state).is_empty());
}

/// Each step's config dir is applied in turn to an in-memory datapath; the expected file
/// holds the delta summary of each transition and the final dump.
#[test]
fn config_sequence_produces_minimal_deltas() {
    let dir = golden_dir().join("sequence");
    let mut steps: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.is_dir())
        .collect();
    steps.sort();
    let mut maps = FakeMaps::default();
    let mut current = datapath::read_state(&maps).unwrap();
    let mut alloc = Allocations::default();
    let mut out = String::new();
    for step in &steps {
        let spec = load(std::slice::from_ref(step));
        let compiled = compile::compile(&spec, &env(), &alloc);
        let writes_before = maps.writes;
        let delta = apply::apply(&mut maps, &mut current, &compiled.state).unwrap();
        alloc = compiled.alloc;
        out.push_str(&format!(
            "# {}: {} ({} syscalls)\n",
            step.file_name().unwrap().to_string_lossy(),
            delta.summary(),
            maps.writes - writes_before
        ));
        for (k, v) in &delta.lb4_services.upserts {
            out.push_str(&format!(
                "  write {} -> {}\n",
                dump::lb4_key(k),
                dump::lb4_service(k, v)
            ));
        }
        for k in &delta.lb4_services.deletes {
            out.push_str(&format!("  delete {}\n", dump::lb4_key(k)));
        }
        for (k, v) in &delta.lb4_backends.upserts {
            out.push_str(&format!(
                "  write backend {k} -> {}\n",
                dump::lb4_backend(v)
            ));
        }
        for k in &delta.lb4_backends.deletes {
            out.push_str(&format!("  delete backend {k}\n"));
        }
        // What the fake maps hold is exactly what was compiled.
        assert_eq!(
            datapath::read_state(&maps).unwrap(),
            compiled.state,
            "maps after {}",
            step.display()
        );
    }
    out.push_str("# final maps\n");
    out.push_str(&dump::dump(&current));
    check_golden(&dir.join("expected.txt"), &out);
}

/// A write that fails half-way (a full map) leaves the maps exactly as before.
#[test]
fn failed_apply_rolls_back_every_write() {
    let dir = golden_dir().join("sequence");
    let first = load(&[dir.join("1-initial")]);
    let second = load(&[dir.join("2-add-backend")]);
    let mut maps = FakeMaps::default();
    let mut current = datapath::read_state(&maps).unwrap();
    let c1 = compile::compile(&first, &env(), &Allocations::default());
    apply::apply(&mut maps, &mut current, &c1.state).unwrap();
    let before = maps.maps.clone();
    let c2 = compile::compile(&second, &env(), &c1.alloc);
    let needed = diff::diff(&current, &c2.state).entries();
    assert!(needed > 2);
    for fail_at in 0..needed {
        maps.fail_after_writes = Some(fail_at);
        let err = apply::apply(&mut maps, &mut current, &c2.state).expect_err("must fail");
        assert!(err.to_string().contains("map is full"), "{err}");
        assert_eq!(
            maps.maps, before,
            "maps changed after a failure at write {fail_at}"
        );
        assert_eq!(current, c1.state);
    }
}
