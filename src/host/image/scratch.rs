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

/// Removes scratch directories under `parent` left by builds that were killed
/// (their `<prefix>-<pid>-<nanos>` names a process that no longer exists).
pub(crate) fn sweep_stale(parent: &Path) {
    let Ok(entries) = fs::read_dir(parent) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let pid = name
            .to_str()
            .and_then(|n| n.split('-').nth(1))
            .and_then(|p| p.parse::<u32>().ok());
        if let Some(pid) = pid
            && !Path::new("/proc").join(pid.to_string()).exists()
        {
            // Best effort: what cannot be removed now is retried by the next build.
            let _ = fs::remove_dir_all(entry.path());
        }
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
    fn stale_scratch_dirs_of_dead_builds_are_swept() {
        let parent = std::env::temp_dir().join(format!("banger-sweep-test-{}", std::process::id()));
        // Above the kernel's PID limit (4194304): no such process can exist.
        let dead = parent.join("build-99999999-1");
        fs::create_dir_all(dead.join("rootfs/etc")).unwrap();
        let live = ScratchDir::new(&parent, "build").unwrap();
        sweep_stale(&parent);
        assert!(!dead.exists());
        assert!(live.path().exists());
        drop(live);
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
