// SPDX-License-Identifier: Apache-2.0
//! Golden translation tests: `golden/NAME.yaml` (manifests; first line `# node: NAME`) →
//! `golden/NAME.out` (every file written, then the report). `BLESS=1` rewrites the outputs.

use std::path::{Path, PathBuf};

use kldnet_kube_adapter::Options;
use kldnet_kube_adapter::checked::{Layout, translate_checked};
use kldnet_kube_adapter::manifest::{Manifests, parse};

fn render(input: &Path) -> String {
    let text = std::fs::read_to_string(input).unwrap();
    let node = text
        .lines()
        .next()
        .and_then(|l| l.strip_prefix("# node: "))
        .map(str::to_string);
    let mut m = Manifests::default();
    parse(&text, Path::new("input.yaml"), "default", &mut m);
    let opts = Options {
        node,
        ..Options::default()
    };
    let checked = translate_checked(&m.objects, &opts, Layout::Split(Path::new("/out")), &[])
        .unwrap_or_else(|(d, r)| panic!("{}: does not validate:\n{d}\n{r}", input.display()));
    let mut out = String::new();
    for (path, text) in &checked.files {
        out.push_str(&format!("==> {} <==\n{text}", path.display()));
    }
    out.push_str("==> report <==\n");
    for (o, s) in &m.unreadable {
        out.push_str(&format!("{o}: {s:?}\n"));
    }
    for l in checked.report.lines(true) {
        out.push_str(&l);
        out.push('\n');
    }
    out
}

#[test]
fn golden_translations() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/golden");
    let mut inputs: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    inputs.sort();
    assert!(inputs.len() >= 4);
    let bless = std::env::var_os("BLESS").is_some();
    let mut failed = Vec::new();
    for input in inputs {
        let got = render(&input);
        let expected_path = input.with_extension("out");
        if bless {
            std::fs::write(&expected_path, &got).unwrap();
            continue;
        }
        let expected = std::fs::read_to_string(&expected_path).unwrap_or_default();
        if got != expected {
            eprintln!(
                "--- {} expected\n{expected}\n+++ got\n{got}",
                expected_path.display()
            );
            failed.push(expected_path);
        }
    }
    assert!(
        failed.is_empty(),
        "golden mismatch (re-run with BLESS=1 after checking): {failed:?}"
    );
}
