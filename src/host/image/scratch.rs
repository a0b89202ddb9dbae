//! Scratch directories removed on every exit path, and swept when a killed build left them.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use super::ImageError;
use crate::host::procs;

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
            && !procs::is_alive(pid)
        {
            // Best effort: what cannot be removed now is retried by the next build.
            let _ = fs::remove_dir_all(entry.path());
        }
    }
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
}
