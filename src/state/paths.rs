//! Where banger keeps things: durable files under `BANGER_HOME`, sockets and
//! locks under `BANGER_RUN_DIR`.

use std::fs;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};

use super::StateError;
use super::ids::VmId;
use super::layout;

/// Default durable state directory.
pub const DEFAULT_HOME: &str = "/var/lib/banger";
/// Default runtime directory (sockets, locks).
pub const DEFAULT_RUN_DIR: &str = "/run/banger";

/// Every path banger uses, derived from two roots.
#[derive(Debug, Clone)]
pub struct Paths {
    pub home: PathBuf,
    pub run_dir: PathBuf,
}

impl Paths {
    /// Roots from `BANGER_HOME` and `BANGER_RUN_DIR`, else the defaults,
    /// made canonical: every spelling of one directory (relative, through a
    /// symlink such as `/var/run` → `/run`) is the same state, and the
    /// socket paths given to VMMs are the same whichever one a command used.
    pub fn from_env() -> Self {
        let env = crate::env::Env::get();
        let home = env.home.clone().unwrap_or_else(|| DEFAULT_HOME.into());
        let run_dir = env
            .run_dir
            .clone()
            .unwrap_or_else(|| DEFAULT_RUN_DIR.into());
        Self {
            home: canonical(&home),
            run_dir: canonical(&run_dir),
        }
    }

    pub fn new(home: impl Into<PathBuf>, run_dir: impl Into<PathBuf>) -> Self {
        Self {
            home: home.into(),
            run_dir: run_dir.into(),
        }
    }

    /// Creates the directory skeleton with its modes (0700 throughout).
    pub fn ensure(&self) -> Result<(), StateError> {
        for dir in [
            &self.home,
            &self.images_dir(),
            &self.vms_dir(),
            &self.ssh_dir(),
            &self.run_dir,
            &self.locks_dir(),
            &self.vm_run_dirs(),
        ] {
            ensure_private_dir(dir)?;
        }
        Ok(())
    }

    pub fn db(&self) -> PathBuf {
        self.home.join("banger.db")
    }
    pub fn images_dir(&self) -> PathBuf {
        self.home.join("images")
    }
    pub fn image_dir(&self, name: &str) -> PathBuf {
        self.images_dir().join(name)
    }
    pub fn vms_dir(&self) -> PathBuf {
        self.home.join("vms")
    }
    /// Durable per-VM files: COW file, work disk, logs, `handles.json`.
    pub fn vm_dir(&self, id: &VmId) -> PathBuf {
        self.vms_dir().join(id.as_str())
    }
    /// Where every VM's socket directory lives.
    pub fn vm_run_dirs(&self) -> PathBuf {
        self.run_dir.join("vms")
    }
    /// Per-VM sockets.
    pub fn vm_run_dir(&self, id: &VmId) -> PathBuf {
        self.vm_run_dirs().join(id.as_str())
    }
    pub fn api_sock(&self, id: &VmId) -> PathBuf {
        self.vm_run_dir(id).join("api.sock")
    }
    /// The control socket of the SSH connection a pool VM keeps open.
    pub fn ssh_control(&self, id: &VmId) -> PathBuf {
        self.vm_run_dir(id).join("ssh.sock")
    }
    pub fn vsock_uds(&self, id: &VmId) -> PathBuf {
        self.vm_run_dir(id).join("vsock.sock")
    }
    pub fn ssh_dir(&self) -> PathBuf {
        self.home.join("ssh")
    }
    pub fn ssh_key(&self) -> PathBuf {
        self.ssh_dir().join("id_ed25519")
    }
    pub fn known_hosts(&self) -> PathBuf {
        self.ssh_dir().join("known_hosts")
    }
    pub fn cache_dir(&self) -> PathBuf {
        self.home.join("cache")
    }
    pub fn locks_dir(&self) -> PathBuf {
        self.run_dir.join("locks")
    }
    pub fn vm_lock(&self, id: &VmId) -> PathBuf {
        self.locks_dir().join(layout::vm_lock(id))
    }
    pub fn image_lock(&self, name: &str) -> PathBuf {
        self.locks_dir().join(layout::image_lock(name))
    }
    /// A staging directory for an image being built or imported by `pid`.
    pub fn image_staging(&self, name: &str, pid: u32) -> PathBuf {
        self.images_dir().join(layout::staging(name, pid))
    }
    /// Held exclusively by `gc` while it sweeps, shared by a create until
    /// its VM's row exists.
    pub fn gc_lock(&self) -> PathBuf {
        self.locks_dir().join("gc.lock")
    }
    pub fn net_lock(&self) -> PathBuf {
        self.locks_dir().join("net.lock")
    }
    pub fn sidecar_lock(&self) -> PathBuf {
        self.run_dir.join("sidecar.lock")
    }
    pub fn sidecar_log(&self) -> PathBuf {
        self.home.join("sidecar.log")
    }
    /// Held by the one `pool fill` at work; a second waits for it.
    pub fn pool_fill_lock(&self) -> PathBuf {
        self.locks_dir().join("pool-fill.lock")
    }
    /// Where the detached `pool fill` writes what it did and what failed.
    pub fn pool_fill_log(&self) -> PathBuf {
        self.home.join("pool-fill.log")
    }
}

/// `path` made absolute with every symlink resolved: its longest existing
/// ancestor canonicalised, the rest (not made yet) appended as written.
pub fn canonical(path: &Path) -> PathBuf {
    let absolute = std::path::absolute(path).unwrap_or_else(|_| path.to_owned());
    let mut rest = Vec::new();
    let mut head = absolute.as_path();
    loop {
        if let Ok(real) = fs::canonicalize(head) {
            return rest.iter().rev().fold(real, |dir, part| dir.join(part));
        }
        match (head.parent(), head.file_name()) {
            (Some(parent), Some(name)) => {
                rest.push(name.to_owned());
                head = parent;
            }
            _ => return absolute,
        }
    }
}

/// Creates `dir` (and parents) if missing, each new one 0700 whatever the
/// umask. A directory that exists is left as it is: looking at state never
/// changes its modes.
pub fn ensure_private_dir(dir: &Path) -> Result<(), StateError> {
    let io = |source| StateError::Io {
        path: dir.to_owned(),
        source,
    };
    let missing: Vec<&Path> = dir
        .ancestors()
        .take_while(|d| !d.as_os_str().is_empty() && fs::symlink_metadata(d).is_err())
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(io)?;
    for made in missing.iter().rev() {
        fs::set_permissions(made, fs::Permissions::from_mode(0o700)).map_err(|source| {
            StateError::Io {
                path: made.to_path_buf(),
                source,
            }
        })?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ensure_makes_private_dirs() {
        let tmp = tempfile::tempdir().unwrap();
        let paths = Paths::new(tmp.path().join("home"), tmp.path().join("run"));
        paths.ensure().unwrap();
        for dir in [&paths.home, &paths.ssh_dir(), &paths.locks_dir()] {
            let mode = fs::metadata(dir).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o700, "{}", dir.display());
        }
        fs::set_permissions(&paths.home, fs::Permissions::from_mode(0o750)).unwrap();
        paths.ensure().unwrap();
        let mode = fs::metadata(&paths.home).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o750, "an existing directory keeps its mode");
    }

    #[test]
    fn every_spelling_of_a_directory_is_one_path() {
        let tmp = tempfile::tempdir().unwrap();
        let real = fs::canonicalize(tmp.path()).unwrap().join("state");
        fs::create_dir(&real).unwrap();
        let alias = tmp.path().join("alias");
        std::os::unix::fs::symlink(&real, &alias).unwrap();
        assert_eq!(canonical(&alias), real);
        assert_eq!(canonical(&alias.join("../alias/.")), real);
        assert_eq!(canonical(&alias.join("new/run")), real.join("new/run"));
        let cwd = std::env::current_dir().unwrap();
        assert_eq!(
            canonical(Path::new("some-dir")),
            fs::canonicalize(&cwd).unwrap().join("some-dir")
        );
    }

    #[test]
    fn sockets_fit_sun_path_with_default_roots() {
        let paths = Paths::new(DEFAULT_HOME, DEFAULT_RUN_DIR);
        let id = VmId::parse("0123456789").unwrap();
        assert!(paths.vsock_uds(&id).as_os_str().len() < 108);
    }
}
