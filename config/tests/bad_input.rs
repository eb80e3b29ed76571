// SPDX-License-Identifier: Apache-2.0
//! The bad-input corpus: every directory under `tests/corpus/` is a config dir that must be
//! rejected with exactly the errors its `expected.txt` lists.
//!
//! `expected.txt` holds one `FILE:LINE:COL: error: MESSAGE-PREFIX` line per expected error,
//! in the order `kldnet check` prints them (sorted by place), FILE relative to the case dir.
//! A following `  help: HELP-PREFIX` line also checks that error's help. Blank lines and
//! lines starting with `#` are comments. Warnings and notes are not compared.
//!
//! `KLDNET_BLESS=1 cargo test -p kldnet-config --test bad_input` rewrites every
//! `expected.txt` from what the loader reports now (review the diff before committing).

use std::fs;
use std::path::{Path, PathBuf};

use kldnet_config::{Diagnostic, Diagnostics, Severity, load_dirs};

fn corpus_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/corpus")
}

fn cases() -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = fs::read_dir(corpus_dir())
        .expect("read tests/corpus")
        .map(|e| e.expect("corpus entry").path())
        .filter(|p| p.is_dir())
        .collect();
    v.sort();
    v
}

/// One error line, as written in `expected.txt` or as reported (paths relative).
#[derive(Debug, PartialEq)]
struct Line {
    file: String,
    line: usize,
    column: usize,
    message: String,
    help: Option<String>,
}

impl std::fmt::Display for Line {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}:{}:{}: error: {}",
            self.file, self.line, self.column, self.message
        )?;
        if let Some(h) = &self.help {
            write!(f, "\n  help: {h}")?;
        }
        Ok(())
    }
}

fn parse_expected(path: &Path) -> Vec<Line> {
    let text = fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("{}: {e} (run with KLDNET_BLESS=1)", path.display()));
    let mut out: Vec<Line> = Vec::new();
    for (n, raw) in text.lines().enumerate() {
        let bad = || -> ! { panic!("{}:{}: cannot parse `{raw}`", path.display(), n + 1) };
        if raw.trim().is_empty() || raw.starts_with('#') {
            continue;
        }
        if let Some(help) = raw.strip_prefix("  help: ") {
            match out.last_mut() {
                Some(l) if l.help.is_none() => l.help = Some(help.to_string()),
                _ => bad(),
            }
            continue;
        }
        let mut parts = raw.splitn(4, ':');
        let (Some(file), Some(line), Some(column), Some(rest)) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            bad()
        };
        let Some(message) = rest.strip_prefix(" error: ") else {
            bad()
        };
        out.push(Line {
            file: file.to_string(),
            line: line.parse().unwrap_or_else(|_| bad()),
            column: column.parse().unwrap_or_else(|_| bad()),
            message: message.to_string(),
            help: None,
        });
    }
    out
}

/// The diagnostic with every path (its place, and places named in the message) made
/// relative to the case dir.
fn relative(case: &Path, d: &Diagnostic) -> Line {
    let loc = d
        .location
        .as_ref()
        .unwrap_or_else(|| panic!("error without a place: {d}"));
    let file = loc.file.strip_prefix(case).unwrap_or(&loc.file);
    let prefix = format!("{}/", case.display());
    Line {
        file: file.display().to_string(),
        line: loc.line,
        column: loc.column,
        message: d.message.replace(&prefix, ""),
        help: d.help.as_ref().map(|h| h.replace(&prefix, "")),
    }
}

/// Whether `got` matches `want`: same place, message and help (if given) start with `want`'s.
fn matches(want: &Line, got: &Line) -> bool {
    (&want.file, want.line, want.column) == (&got.file, got.line, got.column)
        && got.message.starts_with(&want.message)
        && want
            .help
            .as_ref()
            .is_none_or(|h| got.help.as_ref().is_some_and(|g| g.starts_with(h.as_str())))
}

fn is_sorted_by_place(diags: &Diagnostics) -> bool {
    diags.0.windows(2).all(|w| w[0].location <= w[1].location)
}

fn join(lines: &[Line]) -> String {
    lines.iter().map(|l| format!("{l}\n")).collect()
}

#[test]
fn corpus_cases_report_exactly_the_expected_errors() {
    let bless = std::env::var_os("KLDNET_BLESS").is_some();
    let cases = cases();
    assert!(cases.len() >= 35, "corpus has only {} cases", cases.len());
    let mut failures = Vec::new();
    for case in &cases {
        let name = case.file_name().unwrap().to_string_lossy().into_owned();
        let (_spec, diags) = load_dirs(std::slice::from_ref(case));
        if !is_sorted_by_place(&diags) {
            failures.push(format!("{name}: diagnostics not sorted by place:\n{diags}"));
        }
        let got: Vec<Line> = diags
            .0
            .iter()
            .filter(|d| d.severity == Severity::Error)
            .map(|d| relative(case, d))
            .collect();
        assert_eq!(got.len(), diags.errors());
        let expected_path = case.join("expected.txt");
        if bless {
            fs::write(&expected_path, join(&got)).expect("write expected.txt");
            continue;
        }
        let want = parse_expected(&expected_path);
        assert!(!want.is_empty(), "{name}: expected.txt lists no error");
        let ok = want.len() == got.len() && want.iter().zip(&got).all(|(w, g)| matches(w, g));
        if !ok {
            failures.push(format!(
                "{name}: expected {} errors:\n{}got {}:\n{}",
                want.len(),
                join(&want),
                got.len(),
                join(&got)
            ));
        }
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}

/// Every case dir holds a config file and an `expected.txt`, and nothing else.
#[test]
fn corpus_cases_are_well_formed() {
    for case in cases() {
        let mut tomls = 0;
        for entry in fs::read_dir(&case).unwrap() {
            let name = entry.unwrap().file_name().to_string_lossy().into_owned();
            if name.ends_with(".toml") {
                tomls += 1;
            } else {
                assert_eq!(name, "expected.txt", "{}: stray file", case.display());
            }
        }
        assert!(tomls > 0, "{}: no .toml file", case.display());
    }
}

#[test]
fn the_example_config_is_clean() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/etc/kldnet");
    let (spec, diags) = load_dirs(&[dir]);
    assert_eq!(
        (diags.errors(), diags.warnings()),
        (0, 0),
        "examples/etc/kldnet:\n{diags}"
    );
    assert_eq!(diags.summary(), "0 errors, 0 warnings");
    assert!(!spec.endpoints.is_empty() && !spec.services.is_empty() && !spec.policies.is_empty());
    assert!(is_sorted_by_place(&diags));
}

/// The masking rules of CONTRACT §2: an earlier dir's file masks the same-named file of a
/// later dir, even when it is empty or a symlink to /dev/null.
#[test]
fn empty_files_and_dev_null_links_mask_later_dirs() {
    let etc = tempfile::tempdir().unwrap();
    let run = tempfile::tempdir().unwrap();
    // Each of these would be an error if read.
    fs::write(run.path().join("10-empty.toml"), "[nodes]\n").unwrap();
    fs::write(run.path().join("20-null.toml"), "[flowz]\n").unwrap();
    fs::write(run.path().join("30-shadowed.toml"), "[bgpp]\n").unwrap();
    fs::write(etc.path().join("10-empty.toml"), "").unwrap();
    std::os::unix::fs::symlink("/dev/null", etc.path().join("20-null.toml")).unwrap();
    fs::write(
        etc.path().join("30-shadowed.toml"),
        "[[endpoint]]\nname = \"web\"\naddresses = [\"10.0.0.2\"]\n",
    )
    .unwrap();
    // Not masked: only in the later dir.
    fs::write(
        run.path().join("40-run-only.toml"),
        "[[endpoint]]\nname = \"db\"\naddresses = [\"10.0.0.3\"]\n",
    )
    .unwrap();
    let dirs = [etc.path().to_path_buf(), run.path().to_path_buf()];
    let (spec, diags) = load_dirs(&dirs);
    assert_eq!(diags.errors(), 0, "{diags}");
    let names: Vec<&str> = spec.endpoints.iter().map(|e| e.name.as_str()).collect();
    assert_eq!(names, ["web", "db"]);
    let files: Vec<&Path> = spec.files.iter().map(|f| f.path.as_path()).collect();
    assert_eq!(
        files,
        [
            etc.path().join("30-shadowed.toml").as_path(),
            run.path().join("40-run-only.toml").as_path()
        ]
    );

    // The same later dir alone is rejected, so the masks above did the work.
    let (_, diags) = load_dirs(&[run.path().to_path_buf()]);
    assert_eq!(diags.errors(), 3, "{diags}");
}

/// Lexical order of file names across dirs decides which of two duplicates is "first".
#[test]
fn duplicates_name_the_lexically_first_file() {
    let etc = tempfile::tempdir().unwrap();
    let run = tempfile::tempdir().unwrap();
    let ep = "[[endpoint]]\nname = \"web\"\naddresses = [\"10.0.0.1\"]\n";
    fs::write(run.path().join("10-a.toml"), ep).unwrap();
    fs::write(
        etc.path().join("20-b.toml"),
        ep.replace("10.0.0.1", "10.0.0.2"),
    )
    .unwrap();
    let (_, diags) = load_dirs(&[etc.path().to_path_buf(), run.path().to_path_buf()]);
    assert_eq!(diags.errors(), 1, "{diags}");
    let d = &diags.0[0];
    assert_eq!(
        d.location.as_ref().unwrap().file,
        etc.path().join("20-b.toml")
    );
    assert!(
        d.message.contains(&format!(
            "first defined at {}",
            run.path().join("10-a.toml").display()
        )),
        "{d}"
    );
}
