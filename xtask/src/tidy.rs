//! Source hygiene: every source file says what it is, and nothing unfinished ships.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};

/// Macros and attributes that mean unfinished work or a test that proves nothing.
/// Spelled in pieces so that this file does not match itself.
const FORBIDDEN: &[&str] =
    &[concat!("to", "do!("), concat!("unimple", "mented!("), concat!("#[", "ignore"), concat!("db", "g!(")];

/// Checks every `.rs` file under `crates/` and `xtask/`.
pub(crate) fn check(root: &Path) -> anyhow::Result<()> {
    let mut files = Vec::new();
    for dir in ["crates", "xtask"] {
        collect_rust_files(&root.join(dir), &mut files)?;
    }
    let mut problems = Vec::new();
    for file in &files {
        let text =
            std::fs::read_to_string(file).with_context(|| format!("cannot read {}", file.display()))?;
        let shown = file.strip_prefix(root).unwrap_or(file).display().to_string();
        problems.extend(problems_in(&shown, &text, needs_header(file)));
    }
    if !problems.is_empty() {
        bail!("tidy found {} problem(s):\n  {}", problems.len(), problems.join("\n  "));
    }
    eprintln!("tidy: {} files clean", files.len());
    Ok(())
}

/// Whether a file must open with a `//!` doc: every file but unit-test modules and
/// files under `tests/`, which are named for what they test.
fn needs_header(file: &Path) -> bool {
    let is_test_module = file.file_name().is_some_and(|name| name == "tests.rs");
    let under_tests = file.components().any(|part| part.as_os_str() == "tests");
    (!is_test_module && !under_tests) || file.file_name().is_some_and(|name| name == "main.rs")
}

fn problems_in(shown: &str, text: &str, needs_header: bool) -> Vec<String> {
    let mut problems = Vec::new();
    if needs_header && !text.trim_start().starts_with("//!") {
        problems.push(format!("{shown}: does not open with a `//!` doc saying what it is"));
    }
    for (number, line) in text.lines().enumerate() {
        for needle in FORBIDDEN {
            if line.contains(needle) {
                problems.push(format!("{shown}:{}: contains `{needle}`", number + 1));
            }
        }
    }
    problems
}

fn collect_rust_files(dir: &Path, files: &mut Vec<PathBuf>) -> anyhow::Result<()> {
    let entries = std::fs::read_dir(dir).with_context(|| format!("cannot list {}", dir.display()))?;
    for entry in entries {
        let path = entry?.path();
        if path.is_dir() {
            if path.file_name().is_some_and(|name| name == "target") {
                continue;
            }
            collect_rust_files(&path, files)?;
        } else if path.extension().is_some_and(|ext| ext == "rs") {
            files.push(path);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_workspace_is_tidy() {
        check(&crate::project_root()).unwrap();
    }

    #[test]
    fn a_missing_header_is_reported() {
        let problems = problems_in("crates/x/src/lib.rs", "pub fn f() {}\n", true);
        assert_eq!(problems, ["crates/x/src/lib.rs: does not open with a `//!` doc saying what it is"]);
        assert!(problems_in("crates/x/src/lib.rs", "//! X.\npub fn f() {}\n", true).is_empty());
    }

    #[test]
    fn stubs_and_ignored_tests_are_reported_with_their_line() {
        let text = format!("//! X.\nfn f() {{ {}) }}\n{}]\nfn t() {{}}\n", FORBIDDEN[0], FORBIDDEN[2]);
        let problems = problems_in("a.rs", &text, true);
        assert_eq!(problems.len(), 2);
        assert!(problems[0].starts_with("a.rs:2: contains"));
        assert!(problems[1].starts_with("a.rs:3: contains"));
    }

    #[test]
    fn headers_are_required_outside_tests_and_in_test_binaries() {
        assert!(needs_header(Path::new("crates/wait/src/lib.rs")));
        assert!(needs_header(Path::new("crates/wait/benches/next.rs")));
        assert!(!needs_header(Path::new("crates/wait/src/tests.rs")));
        assert!(!needs_header(Path::new("crates/wait/tests/it/t10_wait.rs")));
        assert!(needs_header(Path::new("crates/wait/tests/it/main.rs")));
    }
}
