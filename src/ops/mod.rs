//! The flows commands share, below the CLI and above the VM type: create a
//! VM, wait for it (and explain why it did not answer), run a command in it
//! over SSH, install and build images, sweep leaks, measure. Commands call these and print; these never print
//! results (only progress and warnings on stderr) and never parse arguments.

pub mod bench;
pub mod copy;
pub mod create;
pub mod diagnose;
pub mod gc;
pub mod images;
pub mod interrupt;
pub mod pool;
pub mod ready;
pub mod ssh;

use anyhow::{Result, bail};

/// An error in what the user asked for, found after parsing (exit code 2).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);

/// Runs `action` for each name, reporting each failure and going on; fails
/// at the end if any did.
pub fn for_each<N: AsRef<str>>(
    names: &[N],
    mut action: impl FnMut(&str) -> Result<()>,
) -> Result<()> {
    let mut failed = Vec::new();
    for name in names {
        let name = name.as_ref();
        if let Err(err) = action(name) {
            if names.len() == 1 {
                return Err(err);
            }
            eprintln!("error: {name}: {err:#}");
            failed.push(name);
        }
    }
    if !failed.is_empty() {
        bail!("failed for {}", failed.join(", "));
    }
    Ok(())
}
