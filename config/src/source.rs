// SPDX-License-Identifier: Apache-2.0
//! Config directories: which files are read, in which order, and masking.
//!
//! Like systemd's drop-in directories: every `*.toml` of every dir, ordered by file name
//! across dirs; a file in an earlier dir masks a same-named file in a later dir; an empty
//! file or a symlink to `/dev/null` masks without contributing anything.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use crate::diag::{Diagnostic, Location};

/// One configuration file's text, with a line index for turning byte offsets into places.
#[derive(Clone, Debug)]
pub struct SourceFile {
    pub path: PathBuf,
    /// Shared: a parsed file and the spec built from it refer to one copy.
    pub text: std::sync::Arc<str>,
    line_starts: Vec<usize>,
    /// Span of every value by path (`service[3].addresses[0]`), built on first use.
    field_spans: std::sync::OnceLock<std::collections::HashMap<String, std::ops::Range<usize>>>,
}

impl SourceFile {
    pub fn new(path: impl Into<PathBuf>, text: impl Into<String>) -> Self {
        let text: String = text.into();
        let line_starts = std::iter::once(0)
            .chain(text.match_indices('\n').map(|(i, _)| i + 1))
            .collect();
        SourceFile {
            path: path.into(),
            text: text.into(),
            line_starts,
            field_spans: std::sync::OnceLock::new(),
        }
    }

    /// The span of the value at `path` (`service[3].ports[0].name`), if the file parses.
    pub fn field_span(&self, path: &str) -> Option<std::ops::Range<usize>> {
        self.field_spans
            .get_or_init(|| {
                let mut out = Vec::new();
                if let Ok(root) = toml::de::DeTable::parse(&self.text) {
                    let root = toml::Spanned::new(
                        root.span(),
                        toml::de::DeValue::Table(root.into_inner()),
                    );
                    crate::load::collect_spans(String::new(), &root, &mut out);
                }
                out.into_iter().map(|(p, s)| (p.into_string(), s)).collect()
            })
            .get(path)
            .cloned()
    }

    /// The 1-based line and column (in characters) of a byte offset.
    pub fn location(&self, offset: usize) -> Location {
        let offset = offset.min(self.text.len());
        let line = self.line_starts.partition_point(|&s| s <= offset) - 1;
        let start = self.line_starts[line];
        let column = self
            .text
            .get(start..offset)
            .map_or(offset - start, |s| s.chars().count())
            + 1;
        Location {
            file: self.path.clone(),
            line: line + 1,
            column,
        }
    }
}

/// Reads the config files of `dirs` (earlier dirs win), in lexical order of file name.
///
/// A missing directory is not an error (the daemon's default dirs may not exist); an
/// unreadable file is.
pub fn read_config_dirs(dirs: &[PathBuf]) -> (Vec<SourceFile>, Vec<Diagnostic>) {
    let mut chosen: BTreeMap<String, PathBuf> = BTreeMap::new();
    let mut diags = Vec::new();
    for dir in dirs {
        let entries = match fs::read_dir(dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => {
                diags.push(Diagnostic::error(
                    None,
                    format!("cannot read config dir {}: {e}", dir.display()),
                ));
                continue;
            }
        };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            // Editors' and `mv`'s temporary files (".x.toml.swp", ".#x.toml") never count.
            if !name.ends_with(".toml") || name.starts_with('.') {
                continue;
            }
            chosen.entry(name).or_insert_with(|| entry.path());
        }
    }
    let mut files = Vec::new();
    for path in chosen.into_values() {
        if is_mask(&path) {
            continue;
        }
        match fs::read_to_string(&path) {
            Ok(text) if text.trim().is_empty() => {}
            Ok(text) => files.push(SourceFile::new(path, text)),
            Err(e) => diags.push(Diagnostic::error(
                Some(Location {
                    file: path.clone(),
                    line: 1,
                    column: 1,
                }),
                format!("cannot read file: {e}"),
            )),
        }
    }
    (files, diags)
}

fn is_mask(path: &Path) -> bool {
    fs::read_link(path).is_ok_and(|target| target == Path::new("/dev/null"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_become_lines_and_columns() {
        let f = SourceFile::new("x.toml", "a = 1\nbé = 2\n");
        assert_eq!((f.location(0).line, f.location(0).column), (1, 1));
        assert_eq!((f.location(6).line, f.location(6).column), (2, 1));
        // Columns count characters, not bytes.
        assert_eq!(f.location(10).column, 4);
    }

    #[test]
    fn earlier_dirs_mask_later_ones_and_empty_files_mask() {
        let etc = tempfile::tempdir().unwrap();
        let run = tempfile::tempdir().unwrap();
        fs::write(etc.path().join("b.toml"), "x = 1").unwrap();
        fs::write(run.path().join("b.toml"), "x = 2").unwrap();
        fs::write(run.path().join("a.toml"), "a = 1").unwrap();
        fs::write(etc.path().join("c.toml"), "").unwrap();
        fs::write(run.path().join("c.toml"), "c = 1").unwrap();
        std::os::unix::fs::symlink("/dev/null", etc.path().join("d.toml")).unwrap();
        fs::write(run.path().join("d.toml"), "d = 1").unwrap();
        fs::write(run.path().join(".e.toml.swp"), "junk").unwrap();
        let (files, diags) =
            read_config_dirs(&[etc.path().to_path_buf(), run.path().to_path_buf()]);
        assert!(diags.is_empty());
        let got: Vec<_> = files
            .iter()
            .map(|f| (f.path.clone(), f.text.to_string()))
            .collect();
        assert_eq!(
            got,
            vec![
                (run.path().join("a.toml"), "a = 1".to_string()),
                (etc.path().join("b.toml"), "x = 1".to_string()),
            ]
        );
    }
}
