//! banger's SSH key pair, the pinned `known_hosts`, the OpenSSH command
//! line used by `vm ssh`, `vm run` and `vm cp`, and the `Host` blocks of
//! `vm ssh-config`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use ssh_key::rand_core::OsRng;
use ssh_key::{Algorithm, LineEnding, PrivateKey};

use crate::state::lock::{self, LockGuard};
use crate::state::{StateError, atomic};

/// How long a command waits for another to finish updating the key or
/// `known_hosts` (each holds the lock for milliseconds).
const LOCK_TIMEOUT: Duration = lock::DEFAULT_TIMEOUT;

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
    /// Writing a file, or waiting for the lock beside it, failed.
    #[error(transparent)]
    State(#[from] StateError),
}

fn io(path: &Path) -> impl Fn(std::io::Error) -> SshError + '_ {
    move |source| SshError::Io {
        path: path.to_owned(),
        source,
    }
}

/// A fresh Ed25519 SSH host key for a VM: (OpenSSH private key, public
/// key line). Made on the host, so its public half is pinned before the
/// VM first boots.
pub fn new_host_key(vm: &str) -> Result<(String, String), ssh_key::Error> {
    let mut private = PrivateKey::random(&mut OsRng, Algorithm::Ed25519)?;
    private.set_comment(format!("root@{vm}"));
    let pem = private.to_openssh(LineEnding::LF)?;
    let line = private.public_key().to_openssh()?;
    Ok((pem.to_string(), line))
}

/// Whether two public key lines name the same key (type and key, whatever
/// the comments).
pub fn same_key(a: &str, b: &str) -> bool {
    let fields = |line: &str| {
        line.split_whitespace()
            .take(2)
            .map(str::to_owned)
            .collect::<Vec<_>>()
    };
    let (a, b) = (fields(a), fields(b));
    a.len() == 2 && a == b
}

/// Makes the ed25519 key pair at `key` (and `key.pub`) if missing; returns the
/// public key line (`ssh-ed25519 AAAA... banger`).
pub fn ensure_key(key: &Path) -> Result<String, SshError> {
    let public = key.with_extension("pub");
    // Concurrent first creates must agree on one key: make it under a lock.
    let _lock = lock_beside(key, "the SSH key", LOCK_TIMEOUT)?;
    if key.exists() {
        let text = read_small(&public).map_err(io(&public))?;
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
    atomic::write(&public, format!("{line}\n").as_bytes(), 0o644)?;
    atomic::write(key, pem.as_bytes(), 0o600)?;
    Ok(line)
}

/// Replaces every `known_hosts` entry for `hosts` with one line pinning `key`
/// (`ssh-ed25519 AAAA...`). The file is written atomically with mode 0600.
pub fn pin_host_key(known_hosts: &Path, hosts: &[String], key: &str) -> Result<(), SshError> {
    let _lock = lock_beside(known_hosts, "known_hosts", LOCK_TIMEOUT)?;
    let mut text = entries_without(known_hosts, hosts)?;
    let key_part: Vec<&str> = key.split_whitespace().take(2).collect();
    text.push_str(&format!("{} {}\n", hosts.join(","), key_part.join(" ")));
    Ok(atomic::write(known_hosts, text.as_bytes(), 0o600)?)
}

/// Removes every `known_hosts` entry naming any of `hosts`.
pub fn forget_hosts(known_hosts: &Path, hosts: &[String]) -> Result<(), SshError> {
    if !known_hosts.exists() {
        return Ok(());
    }
    let _lock = lock_beside(known_hosts, "known_hosts", LOCK_TIMEOUT)?;
    let text = entries_without(known_hosts, hosts)?;
    Ok(atomic::write(known_hosts, text.as_bytes(), 0o600)?)
}

/// The largest key or `known_hosts` file read (a host key line is under a
/// kilobyte; this is thousands of VMs' worth).
const MAX_SSH_FILE: u64 = 16 << 20;

/// A key or `known_hosts` file: a regular file, read without blocking, bounded.
fn read_small(path: &Path) -> std::io::Result<String> {
    crate::state::files::read_text_bounded(path, MAX_SSH_FILE)
}

/// Whether `known_hosts` pins a key for `host`.
pub fn is_pinned(known_hosts: &Path, host: &str) -> bool {
    read_small(known_hosts).is_ok_and(|text| {
        text.lines().any(|line| {
            line.split_whitespace()
                .next()
                .is_some_and(|names| names.split(',').any(|n| n == host))
        })
    })
}

/// The lines of `known_hosts` (empty if missing) that name none of `hosts`.
fn entries_without(known_hosts: &Path, hosts: &[String]) -> Result<String, SshError> {
    let existing = match read_small(known_hosts) {
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

/// Holds an exclusive lock on `<path>.lock` until dropped, so that
/// read-modify-write updates of `path` from concurrent commands do not race.
/// Waiting longer than `timeout` is [`StateError::LockTimeout`], naming
/// `resource` and the lock file.
fn lock_beside(path: &Path, resource: &str, timeout: Duration) -> Result<LockGuard, SshError> {
    Ok(lock::acquire(
        &path.with_extension("lock"),
        resource,
        timeout,
        &|_, _| {},
    )?)
}

/// Arguments for OpenSSH (`ssh ARGS`) to reach root@`host` with banger's key
/// and pinned `known_hosts`, giving up on a connection (TCP and the server's
/// banner) after `connect_timeout`. `tty` asks for a terminal.
pub fn ssh_args(
    key: &Path,
    known_hosts: &Path,
    host: &str,
    connect_timeout: std::time::Duration,
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
        format!("ConnectTimeout={}", connect_timeout.as_secs().max(1)),
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

/// Options that send `ssh` through the connection master listening at
/// `control`, without ever making one: a session over it costs no new
/// connection, key exchange or authentication.
pub fn mux_args(control: &Path) -> Vec<String> {
    vec![
        "-o".into(),
        "ControlMaster=no".into(),
        "-o".into(),
        format!("ControlPath={}", control.display()),
    ]
}

/// Options (before [`ssh_args`]) that make `ssh` authenticate, then go to
/// the background as a connection master at `control` running no command,
/// until told to exit ([`close_master`]) or the server stops answering.
pub fn master_args(control: &Path) -> Vec<String> {
    [
        "ControlMaster=yes".to_owned(),
        format!("ControlPath={}", control.display()),
        "ControlPersist=yes".to_owned(),
        "ServerAliveInterval=10".to_owned(),
        "ServerAliveCountMax=3".to_owned(),
    ]
    .into_iter()
    .flat_map(|option| ["-o".to_owned(), option])
    .chain(["-N".to_owned(), "-f".to_owned()])
    .collect()
}

/// Whether a connection master's socket is at `control`.
pub fn has_master(control: &Path) -> bool {
    use std::os::unix::fs::FileTypeExt;
    std::fs::symlink_metadata(control).is_ok_and(|m| m.file_type().is_socket())
}

/// Tells the connection master at `control`, if one listens there, to exit.
pub fn close_master(control: &Path) {
    if !has_master(control) {
        return;
    }
    let _ = std::process::Command::new("ssh")
        .args(["-o", &format!("ControlPath={}", control.display())])
        .args(["-O", "exit", "banger-master"])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status();
}

/// An OpenSSH `Host` block (for `ssh -F`, `Include`, scp, rsync, IDEs)
/// reaching root@`ip` as `names` with the same trust as `vm ssh`: banger's
/// key only, and banger's pinned `known_hosts` with strict checking.
pub fn config_block(names: &[String], ip: &str, key: &Path, known_hosts: &Path) -> String {
    let quote = |p: &Path| {
        let text = p.display().to_string();
        if text.contains(char::is_whitespace) {
            format!("\"{text}\"")
        } else {
            text
        }
    };
    format!(
        "Host {}\n  HostName {ip}\n  User root\n  IdentityFile {}\n  IdentitiesOnly yes\n  \
         UserKnownHostsFile {}\n  GlobalKnownHostsFile /dev/null\n  StrictHostKeyChecking yes\n",
        names.join(" "),
        quote(key),
        quote(known_hosts),
    )
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
    use std::fs;
    use std::os::unix::fs::PermissionsExt;

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
    fn host_keys_are_fresh_ed25519_and_compare_without_comments() {
        let (private, public) = new_host_key("web").unwrap();
        assert!(private.starts_with("-----BEGIN OPENSSH PRIVATE KEY-----"));
        assert!(public.starts_with("ssh-ed25519 ") && public.ends_with(" root@web"));
        let (_, other) = new_host_key("web").unwrap();
        assert!(!same_key(&public, &other));
        let bare: Vec<&str> = public.split_whitespace().take(2).collect();
        assert!(same_key(
            &public,
            &format!("{} {} elsewhere\n", bare[0], bare[1])
        ));
        assert!(!same_key("", ""));
        assert!(!same_key("ssh-ed25519", "ssh-ed25519"));
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
    fn concurrent_first_calls_agree_on_one_key() {
        let tmp = tempfile::tempdir().unwrap();
        let key = tmp.path().join("id_ed25519");
        let lines: Vec<String> = std::thread::scope(|scope| {
            let calls: Vec<_> = (0..4).map(|_| scope.spawn(|| ensure_key(&key))).collect();
            calls
                .into_iter()
                .map(|c| c.join().unwrap().unwrap())
                .collect()
        });
        assert!(lines.iter().all(|l| *l == lines[0]), "{lines:?}");
        let public = fs::read_to_string(key.with_extension("pub")).unwrap();
        assert_eq!(public.trim(), lines[0]);
        let mut names: Vec<String> = fs::read_dir(tmp.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(names, ["id_ed25519", "id_ed25519.lock", "id_ed25519.pub"]);
    }

    #[test]
    fn a_held_lock_times_out_naming_the_file() {
        let tmp = tempfile::tempdir().unwrap();
        let kh = tmp.path().join("known_hosts");
        let _held = lock_beside(&kh, "known_hosts", LOCK_TIMEOUT).unwrap();
        let err = lock_beside(&kh, "known_hosts", Duration::from_millis(100)).unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("waiting for lock on known_hosts") && text.contains("known_hosts.lock"),
            "{text}"
        );
    }

    #[test]
    fn config_blocks_pin_the_host_key_and_the_identity() {
        let block = config_block(
            &["dev1".into(), "dev1.vm".into()],
            "172.30.0.2",
            Path::new("/var/lib/banger/ssh/id_ed25519"),
            Path::new("/var/lib/my state/known_hosts"),
        );
        assert_eq!(
            block,
            "Host dev1 dev1.vm\n  HostName 172.30.0.2\n  User root\n  \
             IdentityFile /var/lib/banger/ssh/id_ed25519\n  IdentitiesOnly yes\n  \
             UserKnownHostsFile \"/var/lib/my state/known_hosts\"\n  \
             GlobalKnownHostsFile /dev/null\n  StrictHostKeyChecking yes\n"
        );
    }

    #[test]
    fn remote_command_words_are_quoted() {
        let args = ssh_args(
            Path::new("/k"),
            Path::new("/kh"),
            "10.0.0.2",
            std::time::Duration::from_secs(10),
            false,
            &["sh".into(), "-c".into(), "exit 7".into()],
        );
        assert!(args.contains(&"ConnectTimeout=10".to_string()));
        assert_eq!(args.last().unwrap(), "sh -c 'exit 7'");
        assert!(args.contains(&"StrictHostKeyChecking=yes".to_string()));
        assert_eq!(shell_quote("it's"), "'it'\\''s'");
    }
}
