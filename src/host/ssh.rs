//! banger's SSH key pair, the pinned `known_hosts`, and the OpenSSH command
//! line used by `vm ssh` and `vm run`.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use ssh_key::rand_core::OsRng;
use ssh_key::{Algorithm, LineEnding, PrivateKey};

#[derive(Debug, thiserror::Error)]
pub enum SshError {
    #[error("cannot access {}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("SSH key {}", path.display())]
    Key {
        path: PathBuf,
        #[source]
        source: ssh_key::Error,
    },
}

fn io(path: &Path) -> impl Fn(std::io::Error) -> SshError + '_ {
    move |source| SshError::Io {
        path: path.to_owned(),
        source,
    }
}

/// Makes the ed25519 key pair at `key` (and `key.pub`) if missing; returns the
/// public key line (`ssh-ed25519 AAAA... banger`).
pub fn ensure_key(key: &Path) -> Result<String, SshError> {
    let public = key.with_extension("pub");
    // Concurrent first creates must agree on one key: make it under a lock.
    let _lock = lock_beside(key)?;
    if key.exists() {
        let text = fs::read_to_string(&public).map_err(io(&public))?;
        return Ok(text.trim().to_owned());
    }
    let mut private =
        PrivateKey::random(&mut OsRng, Algorithm::Ed25519).map_err(|source| SshError::Key {
            path: key.to_owned(),
            source,
        })?;
    private.set_comment("banger");
    let pem = private
        .to_openssh(LineEnding::LF)
        .map_err(|source| SshError::Key {
            path: key.to_owned(),
            source,
        })?;
    let line = private
        .public_key()
        .to_openssh()
        .map_err(|source| SshError::Key {
            path: key.to_owned(),
            source,
        })?;
    fs::write(&public, format!("{line}\n")).map_err(io(&public))?;
    fs::set_permissions(&public, fs::Permissions::from_mode(0o644)).map_err(io(&public))?;
    write_private(key, pem.as_bytes())?;
    Ok(line)
}

/// Replaces every `known_hosts` entry for `hosts` with one line pinning `key`
/// (`ssh-ed25519 AAAA...`). The file is written atomically with mode 0600.
pub fn pin_host_key(known_hosts: &Path, hosts: &[String], key: &str) -> Result<(), SshError> {
    let _lock = lock_beside(known_hosts)?;
    let mut text = entries_without(known_hosts, hosts)?;
    let key_part: Vec<&str> = key.split_whitespace().take(2).collect();
    text.push_str(&format!("{} {}\n", hosts.join(","), key_part.join(" ")));
    write_private(known_hosts, text.as_bytes())
}

/// Removes every `known_hosts` entry naming any of `hosts`.
pub fn forget_hosts(known_hosts: &Path, hosts: &[String]) -> Result<(), SshError> {
    if !known_hosts.exists() {
        return Ok(());
    }
    let _lock = lock_beside(known_hosts)?;
    let text = entries_without(known_hosts, hosts)?;
    write_private(known_hosts, text.as_bytes())
}

/// Whether `known_hosts` pins a key for `host`.
pub fn is_pinned(known_hosts: &Path, host: &str) -> bool {
    fs::read_to_string(known_hosts).is_ok_and(|text| {
        text.lines().any(|line| {
            line.split_whitespace()
                .next()
                .is_some_and(|names| names.split(',').any(|n| n == host))
        })
    })
}

/// The lines of `known_hosts` (empty if missing) that name none of `hosts`.
fn entries_without(known_hosts: &Path, hosts: &[String]) -> Result<String, SshError> {
    let existing = match fs::read_to_string(known_hosts) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(io(known_hosts)(e)),
    };
    Ok(existing
        .lines()
        .filter(|line| {
            let names = line.split_whitespace().next().unwrap_or("");
            !names.split(',').any(|n| hosts.iter().any(|h| h == n))
        })
        .map(|line| format!("{line}\n"))
        .collect())
}

/// Holds an exclusive flock on `<path>.lock` until dropped, so that
/// read-modify-write updates of `path` from concurrent commands do not race.
fn lock_beside(path: &Path) -> Result<fs::File, SshError> {
    let lock_path = path.with_extension("lock");
    let file = fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o600)
        .open(&lock_path)
        .map_err(io(&lock_path))?;
    file.lock().map_err(io(&lock_path))?;
    Ok(file)
}

/// Writes `bytes` to `path` with mode 0600 through a synced temp file and a
/// rename, so a crash never leaves half a file.
fn write_private(path: &Path, bytes: &[u8]) -> Result<(), SshError> {
    let tmp = path.with_extension("tmp");
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(io(&tmp))?;
    file.write_all(bytes)
        .and_then(|()| file.sync_all())
        .map_err(io(&tmp))?;
    fs::rename(&tmp, path).map_err(io(path))
}

/// Arguments for OpenSSH (`ssh ARGS`) to reach root@`host` with banger's key
/// and pinned `known_hosts`. `tty` asks for a terminal.
pub fn ssh_args(
    key: &Path,
    known_hosts: &Path,
    host: &str,
    tty: bool,
    command: &[String],
) -> Vec<String> {
    let mut args = vec![
        "-i".into(),
        key.display().to_string(),
        "-o".into(),
        format!("UserKnownHostsFile={}", known_hosts.display()),
        "-o".into(),
        "StrictHostKeyChecking=yes".into(),
        "-o".into(),
        "IdentitiesOnly=yes".into(),
        "-o".into(),
        "GlobalKnownHostsFile=/dev/null".into(),
        "-o".into(),
        "BatchMode=yes".into(),
        "-o".into(),
        "ConnectTimeout=10".into(),
        "-o".into(),
        "LogLevel=ERROR".into(),
    ];
    args.push(if tty { "-t".into() } else { "-T".into() });
    args.push(format!("root@{host}"));
    if !command.is_empty() {
        // ssh joins its arguments with spaces for the remote shell; quote each
        // so that `banger vm ssh x -- printf '%s\n' 'a b'` means what it says.
        args.push("--".into());
        args.push(
            command
                .iter()
                .map(|a| shell_quote(a))
                .collect::<Vec<_>>()
                .join(" "),
        );
    }
    args
}

/// Quotes a word for a POSIX shell.
pub fn shell_quote(word: &str) -> String {
    if !word.is_empty()
        && word
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./=:,+@%".contains(c))
    {
        word.to_owned()
    } else {
        format!("'{}'", word.replace('\'', "'\\''"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_is_made_once_with_private_modes() {
        let tmp = tempfile::tempdir().unwrap();
        let key = tmp.path().join("id_ed25519");
        let line = ensure_key(&key).unwrap();
        assert!(line.starts_with("ssh-ed25519 "), "{line}");
        assert_eq!(
            fs::metadata(&key).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert_eq!(ensure_key(&key).unwrap(), line);
        assert!(
            fs::read_to_string(&key)
                .unwrap()
                .contains("OPENSSH PRIVATE KEY")
        );
    }

    #[test]
    fn pinning_replaces_old_entries_for_the_same_hosts() {
        let tmp = tempfile::tempdir().unwrap();
        let kh = tmp.path().join("known_hosts");
        fs::write(
            &kh,
            "other ssh-ed25519 AAAAother\n10.0.0.2,a.vm ssh-ed25519 AAAAold\n",
        )
        .unwrap();
        pin_host_key(
            &kh,
            &["10.0.0.2".into(), "a.vm".into()],
            "ssh-ed25519 AAAAnew root@a",
        )
        .unwrap();
        let text = fs::read_to_string(&kh).unwrap();
        assert_eq!(
            text,
            "other ssh-ed25519 AAAAother\n10.0.0.2,a.vm ssh-ed25519 AAAAnew\n"
        );
        assert!(
            is_pinned(&kh, "a.vm") && is_pinned(&kh, "10.0.0.2") && !is_pinned(&kh, "10.0.0.3")
        );
        forget_hosts(&kh, &["a.vm".into()]).unwrap();
        assert_eq!(
            fs::read_to_string(&kh).unwrap(),
            "other ssh-ed25519 AAAAother\n"
        );
    }

    #[test]
    fn remote_command_words_are_quoted() {
        let args = ssh_args(
            Path::new("/k"),
            Path::new("/kh"),
            "10.0.0.2",
            false,
            &["sh".into(), "-c".into(), "exit 7".into()],
        );
        assert_eq!(args.last().unwrap(), "sh -c 'exit 7'");
        assert!(args.contains(&"StrictHostKeyChecking=yes".to_string()));
        assert_eq!(shell_quote("it's"), "'it'\\''s'");
    }
}
