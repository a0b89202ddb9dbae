//! Snapshots of what a user sees from one command: exit code, stdout and
//! stderr together (as uv's tests do), with what changes from run to run —
//! VM ids, addresses, times, temp paths, pids — filtered out.

use std::path::{Path, PathBuf};
use std::process::Output;

use crate::TestContext;
use crate::context::Sandbox;

/// One command's output as a snapshot body.
pub fn render(out: &Output) -> String {
    let code = out
        .status
        .code()
        .map_or_else(|| format!("signal ({})", out.status), |c| c.to_string());
    format!(
        "success: {}\nexit_code: {code}\n----- stdout -----\n{}\n----- stderr -----\n{}",
        out.status.success(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Where a test keeps its state: those paths are filtered by name.
pub trait StatePaths {
    fn state_paths(&self) -> Vec<(PathBuf, &'static str)>;
}

/// The state paths of a test, under their names in snapshots.
fn named_state(
    home: &Path,
    run_dir: &Path,
    config: &Path,
    dir: &Path,
) -> Vec<(PathBuf, &'static str)> {
    vec![
        (home.to_owned(), "[HOME]"),
        (run_dir.to_owned(), "[RUN]"),
        (config.to_owned(), "[CONFIG]"),
        (dir.to_owned(), "[TEMP]"),
    ]
}

impl StatePaths for TestContext {
    fn state_paths(&self) -> Vec<(PathBuf, &'static str)> {
        named_state(&self.home, &self.run_dir, &self.config, self.dir.path())
    }
}

impl StatePaths for Sandbox {
    fn state_paths(&self) -> Vec<(PathBuf, &'static str)> {
        named_state(&self.home, &self.run_dir, &self.config, self.dir.path())
    }
}

/// The filters, most specific first: the test's own paths and the fixtures,
/// then temp paths, MACs, RFC 3339 times, IPv4 addresses (with a prefix
/// length), VM ids (10 hex digits), SHA-256 sums, Debian kernel releases,
/// measured durations (`0.1s`, `12.3 ms`; a typed `30s` stays) and pids.
pub fn filters(paths: &[(PathBuf, &'static str)]) -> Vec<(String, String)> {
    let fixtures = [(crate::deps(), "[DEPS]"), (crate::bin_dir(), "[BIN]")];
    let mut filters: Vec<(String, String)> = paths
        .iter()
        .chain(&fixtures)
        .map(|(path, name)| {
            (
                regex_escape(&path.display().to_string()),
                (*name).to_owned(),
            )
        })
        .collect();
    for (regex, replacement) in [
        (r"/tmp/[A-Za-z0-9._-]+", "[TEMP]"),
        (r"\b(?:[0-9a-f]{2}:){5}[0-9a-f]{2}\b", "[MAC]"),
        (
            r"\b\d{4}-\d\d-\d\d[T ]\d\d:\d\d:\d\d(?:\.\d+)?(?:Z|[+-]\d\d:?\d\d)?",
            "[TIME]",
        ),
        (r"\b\d{1,3}(?:\.\d{1,3}){3}(?:/\d{1,2})?\b", "[IP]"),
        (r"\b[0-9a-f]{10}\b", "[ID]"),
        (r"\b[0-9a-f]{64}\b", "[SHA256]"),
        (r"\b\d+\.\d+\.\d+-\d+-cloud-amd64\b", "[KERNEL]"),
        (r"\b\d+\.\d+\s?(?:ms|µs|us|s)\b", "[DURATION]"),
        (r"(?i)\b(pids?:?\s+)\d+", "${1}[PID]"),
    ] {
        filters.push((regex.to_owned(), replacement.to_owned()));
    }
    filters
}

/// insta settings with [`filters`] applied.
pub fn settings(paths: &[(PathBuf, &'static str)]) -> insta::Settings {
    let mut settings = insta::Settings::clone_current();
    for (regex, replacement) in filters(paths) {
        settings.add_filter(&regex, replacement);
    }
    settings
}

fn regex_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if "\\.+*?()|[]{}^$".contains(c) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// Snapshots one command's output under `name`: `assert_cmd_snapshot!(name,
/// output)` with the generic filters, `assert_cmd_snapshot!(name, output,
/// &ctx)` with the paths of `ctx` (a [`TestContext`] or [`Sandbox`]) too.
#[macro_export]
macro_rules! assert_cmd_snapshot {
    ($name:expr, $output:expr $(,)?) => {
        $crate::snapshot::settings(&[])
            .bind(|| $crate::insta::assert_snapshot!($name, $crate::snapshot::render(&$output)))
    };
    ($name:expr, $output:expr, $ctx:expr $(,)?) => {
        $crate::snapshot::settings(&$crate::snapshot::StatePaths::state_paths($ctx))
            .bind(|| $crate::insta::assert_snapshot!($name, $crate::snapshot::render(&$output)))
    };
}
