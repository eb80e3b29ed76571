// SPDX-License-Identifier: Apache-2.0
//! The committed `bpf/obj/*.bpf.o` must be exactly what `make -C bpf` builds
//! from the current sources (the build is reproducible: -ffile-prefix-map).
//! Skipped, with a message, when clang-19 or make is missing.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

fn have(tool: &str) -> bool {
    Command::new(tool)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

fn objects(dir: &Path) -> BTreeSet<String> {
    std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok()?.file_name().into_string().ok())
                .filter(|n| n.ends_with(".bpf.o"))
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn committed_objects_match_sources() {
    if !have("clang-19") || !have("make") {
        eprintln!("skipping: clang-19 or make not found; cannot check bpf/obj/*.bpf.o freshness");
        return;
    }
    let bpf = Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = tempfile::tempdir().unwrap();
    let status = Command::new("make")
        .arg("-s")
        .arg("-C")
        .arg(bpf)
        .arg(format!("OUT={}", out.path().display()))
        .status()
        .expect("run make");
    assert!(status.success(), "make -C bpf OUT=... failed");

    let built = objects(out.path());
    let committed = objects(&bpf.join("obj"));
    assert!(!built.is_empty(), "make built no objects");
    let mut problems: Vec<String> = built
        .difference(&committed)
        .map(|n| format!("bpf/obj/{n} is missing: run `make -C bpf` and commit it"))
        .chain(
            committed
                .difference(&built)
                .map(|n| format!("bpf/obj/{n} has no source in bpf/src: delete it")),
        )
        .collect();
    problems.extend(
        built
            .iter()
            .filter(|n| committed.contains(*n))
            .filter(|n| {
                std::fs::read(out.path().join(n)).unwrap()
                    != std::fs::read(bpf.join("obj").join(n)).unwrap()
            })
            .map(|n| format!("bpf/obj/{n} is stale: run `make -C bpf`")),
    );
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}
