//! The one way a test skips: [`require`] checks what a tier needs, says why it
//! cannot run, and appends the skip to the file named by `BANGER_TEST_SKIPS`
//! (scripts/test.sh prints those at the end, since cargo hides them).

use std::io::Write;
use std::path::Path;

/// Something a test needs from the host.
#[derive(Debug, Clone, Copy)]
pub enum Need<'a> {
    /// Running as root.
    Root,
    /// `/dev/kvm`.
    Kvm,
    /// A fixture file (scripts/test-deps.sh makes those under `target/test-deps`).
    File(&'a Path),
    /// A program on `PATH`.
    Program(&'a str),
    /// An environment variable scripts/test.sh sets.
    Env(&'a str),
    /// A condition the test checked itself, with what is missing when it is false.
    That(bool, &'a str),
}

impl Need<'_> {
    /// Why the test cannot run, or `None` when this need is met.
    fn unmet(&self) -> Option<String> {
        match self {
            Need::Root => (!nix::unistd::geteuid().is_root()).then(|| "needs root".to_owned()),
            Need::Kvm => (!Path::new("/dev/kvm").exists()).then(|| "no /dev/kvm".to_owned()),
            Need::File(path) => (!path.exists())
                .then(|| format!("{} is missing (run scripts/test-deps.sh)", path.display())),
            Need::Program(name) => {
                (!crate::on_path(name)).then(|| format!("{name} is not on PATH"))
            }
            Need::Env(var) => std::env::var_os(var)
                .is_none()
                .then(|| format!("{var} is not set (scripts/test.sh sets it)")),
            Need::That(met, missing) => (!met).then(|| (*missing).to_owned()),
        }
    }
}

/// A test that did not run, and why.
#[derive(Debug, Clone)]
pub struct Skip {
    /// `<test file>::<test name>`.
    pub test: String,
    /// `<tier> — <what is missing>`.
    pub reason: String,
}

/// Checks `needs` in order. When one is unmet, prints why the `tier` test
/// skips, records it in `BANGER_TEST_SKIPS`, and returns the [`Skip`]; the
/// test then returns. `None` means the test runs.
///
/// Call it on the test's own thread: the test's name is that thread's name.
#[track_caller]
pub fn require(tier: &str, needs: &[Need]) -> Option<Skip> {
    let why = needs.iter().find_map(Need::unmet)?;
    let skip = Skip {
        test: format!("{}::{}", std::panic::Location::caller().file(), test_name()),
        reason: format!("{tier} — {why}"),
    };
    eprintln!("skipping {}: {}", skip.test, skip.reason);
    record(&skip);
    Some(skip)
}

/// Returns from the calling test when [`require`] says it must skip.
#[macro_export]
macro_rules! require {
    ($tier:expr $(, $need:expr)* $(,)?) => {
        if $crate::require($tier, &[$($need),*]).is_some() {
            return;
        }
    };
}

/// The running test's name: libtest names each test's thread after it.
fn test_name() -> String {
    std::thread::current()
        .name()
        .filter(|name| *name != "main")
        .unwrap_or("(unknown test)")
        .to_owned()
}

/// Appends one line for `skip`, in one write to a file opened with O_APPEND,
/// so lines of tests running in parallel never interleave.
fn record(skip: &Skip) {
    let Some(path) = std::env::var_os("BANGER_TEST_SKIPS") else {
        return;
    };
    let line = format!("{} — {}\n", skip.test, skip.reason);
    let written = std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .open(&path)
        .and_then(|mut file| file.write_all(line.as_bytes()));
    if let Err(err) = written {
        eprintln!(
            "cannot record the skip in {}: {err}",
            Path::new(&path).display()
        );
    }
}
