//! Scratch directories removed on every exit path, and running build tools.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{SystemTime, UNIX_EPOCH};

use super::ImageError;

/// A directory that is removed, with everything in it, when dropped.
#[derive(Debug)]
pub(crate) struct ScratchDir {
    path: PathBuf,
}

impl ScratchDir {
    /// Creates a fresh directory `<parent>/<prefix>-<pid>-<nanos>`.
    pub(crate) fn new(parent: &Path, prefix: &str) -> Result<Self, ImageError> {
        fs::create_dir_all(parent).map_err(ImageError::io("create directory", parent))?;
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default();
        let path = parent.join(format!("{prefix}-{}-{nanos}", std::process::id()));
        fs::create_dir(&path).map_err(ImageError::io("create directory", &path))?;
        Ok(Self { path })
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        // Already gone is fine; anything else cannot be reported from drop.
        let _ = fs::remove_dir_all(&self.path);
    }
}

/// Runs `cmd` to completion, capturing its output; a non-zero exit becomes
/// [`ImageError::Command`] carrying the tail of what it printed.
pub(crate) fn run(cmd: &mut Command) -> Result<Output, ImageError> {
    let program = cmd.get_program().to_string_lossy().into_owned();
    let output = cmd.output().map_err(|source| ImageError::Spawn {
        program: program.clone(),
        source,
    })?;
    if output.status.success() {
        return Ok(output);
    }
    let mut text = String::from_utf8_lossy(&output.stderr).into_owned();
    text.push_str(&String::from_utf8_lossy(&output.stdout));
    Err(ImageError::Command {
        program,
        status: output.status.to_string(),
        output: tail(&text, 15),
    })
}

/// The last `n` non-empty lines of `text`, joined with "; ".
fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    lines[lines.len().saturating_sub(n)..].join("; ")
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn scratch_dir_is_removed_on_drop() {
        let parent =
            std::env::temp_dir().join(format!("banger-scratch-test-{}", std::process::id()));
        let path = {
            let dir = ScratchDir::new(&parent, "t").unwrap();
            fs::write(dir.path().join("f"), b"x").unwrap();
            dir.path().to_path_buf()
        };
        assert!(!path.exists());
        fs::remove_dir_all(&parent).unwrap();
    }

    #[test]
    fn failed_command_reports_its_output() {
        let err = run(Command::new("sh").args(["-c", "echo boom >&2; exit 3"])).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("sh failed"), "{msg}");
        assert!(msg.contains("boom"), "{msg}");
    }

    #[test]
    fn missing_program_is_a_spawn_error() {
        let err = run(&mut Command::new("/nonexistent/banger-tool")).unwrap_err();
        assert!(matches!(err, ImageError::Spawn { .. }), "{err}");
    }
}
