//! Snapshots of what a user sees from one command: exit code, stdout and
//! stderr together (as uv's tests do), with what changes from run to run —
//! VM ids, addresses, times, temp paths, pids — filtered out.

use std::process::Output;

use crate::TestContext;

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

/// The filters, most specific first: `ctx`'s own paths, then temp paths,
/// MACs, RFC 3339 times, IPv4 addresses (with a prefix length), VM ids (10
/// hex digits), durations (`0.1s`, `12.3 ms`) and pids.
pub fn filters(ctx: Option<&TestContext>) -> Vec<(String, String)> {
    let mut filters = Vec::new();
    if let Some(ctx) = ctx {
        for (path, name) in [
            (&ctx.home, "[HOME]"),
            (&ctx.run_dir, "[RUN]"),
            (&ctx.config, "[CONFIG]"),
        ] {
            filters.push((regex_escape(&path.display().to_string()), name.to_owned()));
        }
        filters.push((
            regex_escape(&ctx.dir.path().display().to_string()),
            "[TEMP]".to_owned(),
        ));
        filters.push((
            regex_escape(&crate::vmlinux().display().to_string()),
            "[VMLINUX]".to_owned(),
        ));
    }
    for (regex, replacement) in [
        (r"/tmp/[A-Za-z0-9._-]+", "[TEMP]"),
        (r"\b(?:[0-9a-f]{2}:){5}[0-9a-f]{2}\b", "[MAC]"),
        (
            r"\b\d{4}-\d\d-\d\d[T ]\d\d:\d\d:\d\d(?:\.\d+)?(?:Z|[+-]\d\d:?\d\d)?",
            "[TIME]",
        ),
        (r"\b\d{1,3}(?:\.\d{1,3}){3}(?:/\d{1,2})?\b", "[IP]"),
        (r"\b[0-9a-f]{10}\b", "[ID]"),
        (r"\b\d+(?:\.\d+)?\s?(?:ms|µs|us|s)\b", "[DURATION]"),
        (r"(?i)\b(pids?:?\s+)\d+", "${1}[PID]"),
    ] {
        filters.push((regex.to_owned(), replacement.to_owned()));
    }
    filters
}

/// insta settings with [`filters`] applied.
pub fn settings(ctx: Option<&TestContext>) -> insta::Settings {
    let mut settings = insta::Settings::clone_current();
    for (regex, replacement) in filters(ctx) {
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
/// &ctx)` with `ctx`'s paths filtered too.
#[macro_export]
macro_rules! assert_cmd_snapshot {
    ($name:expr, $output:expr $(,)?) => {
        $crate::snapshot::settings(None)
            .bind(|| $crate::insta::assert_snapshot!($name, $crate::snapshot::render(&$output)))
    };
    ($name:expr, $output:expr, $ctx:expr $(,)?) => {
        $crate::snapshot::settings(Some($ctx))
            .bind(|| $crate::insta::assert_snapshot!($name, $crate::snapshot::render(&$output)))
    };
}
