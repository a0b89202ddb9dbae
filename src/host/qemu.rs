//! banger's QEMU-backed VMM, `banger-vmm-qemu` (the workspace crate
//! `src/vmm-qemu`), and the two programs it runs: finding them all.

use std::ffi::OsString;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// The VMM's binary name.
pub const BINARY: &str = "banger-vmm-qemu";
/// What it runs the guest with, and its Debian package.
pub const QEMU: (&str, &str) = ("qemu-system-x86_64", "qemu-system-x86");
/// The vsock backend it runs, and how to get it.
pub const VSOCK_BACKEND: (&str, &str) = (
    "vhost-device-vsock",
    "cargo install --locked vhost-device-vsock --version 0.3.0",
);

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum QemuError {
    #[error("{BINARY} not found: {looked}; scripts/install.sh installs it beside banger")]
    NotFound { looked: String },
    #[error("{program} not found on PATH, which {BINARY} needs to run guests; install it ({how})")]
    Missing {
        program: &'static str,
        how: &'static str,
    },
}

/// `banger-vmm-qemu` and the programs it needs: `configured` (banger's
/// config) if given, else `$BANGER_VMM_QEMU`, else the one beside the
/// running `banger`, else `PATH`; then `qemu-system-x86_64` and
/// `vhost-device-vsock` on `PATH`.
pub fn find_binary(configured: Option<&Path>) -> Result<PathBuf, QemuError> {
    let path_var = std::env::var_os("PATH");
    let beside = std::env::current_exe()
        .ok()
        .and_then(|exe| Some(exe.parent()?.join(BINARY)));
    let bin = locate(
        configured,
        crate::env::Env::get().vmm_qemu.clone(),
        beside,
        path_var.clone(),
    )?;
    for (program, how) in [QEMU, VSOCK_BACKEND] {
        if on_path(program, path_var.clone()).is_none() {
            return Err(QemuError::Missing { program, how });
        }
    }
    Ok(bin)
}

fn is_executable(path: &Path) -> bool {
    std::fs::metadata(path)
        .is_ok_and(|meta| meta.is_file() && meta.permissions().mode() & 0o111 != 0)
}

fn on_path(program: &str, path_var: Option<OsString>) -> Option<PathBuf> {
    let path_var = path_var.unwrap_or_default();
    std::env::split_paths(&path_var)
        .map(|dir| dir.join(program))
        .find(|candidate| is_executable(candidate))
}

fn locate(
    configured: Option<&Path>,
    env: Option<PathBuf>,
    beside: Option<PathBuf>,
    path_var: Option<OsString>,
) -> Result<PathBuf, QemuError> {
    let explicit = |path: &Path, source: &str| {
        if is_executable(path) {
            Ok(path.to_owned())
        } else {
            Err(QemuError::NotFound {
                looked: format!("{source} {} is not an executable file", path.display()),
            })
        }
    };
    if let Some(path) = configured {
        return explicit(path, "the configured qemu_vmm");
    }
    if let Some(path) = env {
        return explicit(&path, crate::env::VMM_QEMU);
    }
    if let Some(path) = beside.filter(|p| is_executable(p)) {
        return Ok(path);
    }
    on_path(BINARY, path_var.clone()).ok_or_else(|| QemuError::NotFound {
        looked: format!(
            "none beside banger, and none in PATH ({})",
            path_var.unwrap_or_default().to_string_lossy()
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn explicit_paths_win_and_must_be_executable() {
        let dir = tempfile::tempdir().unwrap();
        let bin = dir.path().join(BINARY);
        std::fs::write(&bin, "#!/bin/sh\n").unwrap();
        std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).unwrap();
        let path = Some(OsString::from(dir.path()));
        assert_eq!(locate(Some(&bin), None, None, None), Ok(bin.clone()));
        assert_eq!(locate(None, None, None, path.clone()), Ok(bin.clone()));
        assert_eq!(locate(None, None, Some(bin.clone()), None), Ok(bin.clone()));
        let missing = dir.path().join("nope");
        let err = locate(None, Some(missing), None, path).unwrap_err();
        assert!(err.to_string().contains(crate::env::VMM_QEMU), "{err}");
        let err = locate(None, None, None, Some(OsString::from("/nowhere"))).unwrap_err();
        assert!(err.to_string().contains("/nowhere"), "{err}");
    }
}
