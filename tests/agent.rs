//! The guest agent as the host sees it, run on the host with `--unix`, and
//! `host::vsock` against a stand-in for Firecracker's vsock socket.
#![allow(clippy::unwrap_used)]

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use banger::agent_protocol::{self, PingReply};
use banger::host::vsock::{self, VsockError};
use banger_testkit::eventually;
use serde_json::Value;

const KEY: &str =
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIDx4wP1Rg0zCHIqpPHbMl5mXFIh1lhC4b1Bd5kZyK2Ne root@scratch";

/// A running agent listening on a Unix socket in its own temp dir; killed on drop.
struct Agent {
    child: Child,
    sock: PathBuf,
    dir: tempfile::TempDir,
}

/// The agent is a workspace package of its own, built beside banger
/// (`cargo build --workspace`, as scripts/test.sh does).
fn agent_binary() -> PathBuf {
    let path = banger_testkit::banger_agent_bin();
    assert!(
        path.exists(),
        "{} is missing: run `cargo build --workspace` first",
        path.display()
    );
    path
}

impl Agent {
    /// Starts the agent; `host_key` is written where it reads the SSH host key.
    fn start(host_key: Option<&str>) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("agent.sock");
        let key_path = dir.path().join("ssh_host_ed25519_key.pub");
        if let Some(key) = host_key {
            std::fs::write(&key_path, format!("{key}\n")).unwrap();
        }
        let child = Command::new(agent_binary())
            .arg("--unix")
            .arg(&sock)
            .arg("--ssh-host-key")
            .arg(&key_path)
            .stdin(Stdio::null())
            .spawn()
            .unwrap();
        let agent = Self { child, sock, dir };
        assert!(
            eventually(Duration::from_secs(10), || UnixStream::connect(&agent.sock)
                .is_ok()),
            "the agent never listened"
        );
        agent
    }

    fn connect(&self) -> Connection {
        let stream = UnixStream::connect(&self.sock).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        Connection {
            reader: BufReader::new(stream.try_clone().unwrap()),
            stream,
        }
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

struct Connection {
    stream: UnixStream,
    reader: BufReader<UnixStream>,
}

impl Connection {
    /// Sends raw bytes, then reads one reply line.
    fn send(&mut self, bytes: &[u8]) -> String {
        self.stream.write_all(bytes).unwrap();
        let mut line = String::new();
        self.reader.read_line(&mut line).unwrap();
        assert!(line.ends_with('\n'), "reply {line:?} is not a whole line");
        line
    }

    fn ping(&mut self) -> PingReply {
        let line = self.send(b"{\"op\":\"ping\"}\n");
        agent_protocol::parse_reply(&line).unwrap()
    }

    /// Sends a bad line and returns the error message of the reply.
    fn error_for(&mut self, bytes: &[u8]) -> String {
        let reply: Value = serde_json::from_str(&self.send(bytes)).unwrap();
        assert_eq!(reply["ok"], false, "{reply}");
        reply["error"].as_str().unwrap().to_owned()
    }
}

fn read_trimmed(path: &str) -> String {
    std::fs::read_to_string(path).unwrap().trim().to_owned()
}

#[test]
fn ping_reports_hostname_boot_id_uptime_and_host_key() {
    let agent = Agent::start(Some(KEY));
    let line = agent.connect().send(b"{\"op\":\"ping\"}\n");
    let raw: Value = serde_json::from_str(&line).unwrap();
    assert_eq!(raw["ok"], true, "{raw}");

    let reply: PingReply = agent_protocol::parse_reply(&line).unwrap();
    assert_eq!(reply.hostname, read_trimmed("/proc/sys/kernel/hostname"));
    assert_eq!(
        reply.boot_id,
        read_trimmed("/proc/sys/kernel/random/boot_id")
    );
    assert!(reply.uptime_ms > 0);
    assert_eq!(reply.ssh_host_key.as_deref(), Some(KEY));
    assert_eq!(reply.agent_version, env!("CARGO_PKG_VERSION"));
}

#[test]
fn ping_before_sshd_made_its_key_reports_null_key() {
    let agent = Agent::start(None);
    let line = agent.connect().send(b"{\"op\":\"ping\"}\n");
    let raw: Value = serde_json::from_str(&line).unwrap();
    assert_eq!(raw["ok"], true, "{raw}");
    assert!(raw["ssh_host_key"].is_null(), "{raw}");
}

#[test]
fn twenty_connections_are_served_at_once() {
    let agent = Agent::start(Some(KEY));
    let mut connections: Vec<Connection> = (0..20).map(|_| agent.connect()).collect();
    // With every connection open, the last-opened is answered first: no
    // connection waits for another to close.
    let boot_ids: Vec<String> = connections
        .iter_mut()
        .rev()
        .map(|connection| connection.ping().boot_id)
        .collect();
    assert_eq!(boot_ids.len(), 20);
    assert!(boot_ids.iter().all(|id| *id == boot_ids[0]));

    let threads: Vec<_> = connections
        .into_iter()
        .map(|mut connection| std::thread::spawn(move || connection.ping()))
        .collect();
    for thread in threads {
        assert_eq!(
            thread.join().unwrap().agent_version,
            env!("CARGO_PKG_VERSION")
        );
    }
}

#[test]
fn connections_beyond_64_wait_for_a_free_slot() {
    let agent = Agent::start(Some(KEY));
    let mut held: Vec<Connection> = (0..64).map(|_| agent.connect()).collect();
    for connection in &mut held {
        connection.ping();
    }
    let mut waiting = agent.connect();
    waiting.stream.write_all(b"{\"op\":\"ping\"}\n").unwrap();
    waiting
        .stream
        .set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    let mut line = String::new();
    let error = waiting.reader.read_line(&mut line).unwrap_err();
    assert_eq!(error.kind(), std::io::ErrorKind::WouldBlock, "{line:?}");

    drop(held.pop());
    waiting
        .stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    waiting.reader.read_line(&mut line).unwrap();
    let reply: PingReply = agent_protocol::parse_reply(&line).unwrap();
    assert_eq!(reply.ssh_host_key.as_deref(), Some(KEY));
}

#[test]
fn bad_requests_get_error_replies_and_the_agent_keeps_answering() {
    let agent = Agent::start(Some(KEY));
    let mut connection = agent.connect();

    let error = connection.error_for(b"{\"op\": \"ping\"\n");
    assert!(error.starts_with("malformed request"), "{error}");
    assert_eq!(
        connection.error_for(b"{\"op\":\"reboot\"}\n"),
        "unknown op \"reboot\""
    );
    assert_eq!(
        connection.error_for(b"[1,2]\n"),
        "malformed request: no \"op\" field"
    );
    assert_eq!(
        connection.error_for(b"\xff\xfe\n"),
        "malformed request: not UTF-8"
    );
    let mut long = vec![b'x'; 200 * 1024];
    long.push(b'\n');
    let error = connection.error_for(&long);
    assert_eq!(error, "request line longer than 65536 bytes");
    // The error comes as soon as the limit is passed, not at the newline;
    // the rest of that line is then skipped.
    let error = connection.error_for(&vec![b'y'; 70 * 1024]);
    assert_eq!(error, "request line longer than 65536 bytes");
    let rest_then_ping = connection.send(b"yyy\n{\"op\":\"ping\"}\n");
    let reply: PingReply = agent_protocol::parse_reply(&rest_then_ping).unwrap();
    assert_eq!(reply.ssh_host_key.as_deref(), Some(KEY));

    assert_eq!(connection.ping().ssh_host_key.as_deref(), Some(KEY));
    assert_eq!(agent.connect().ping().ssh_host_key.as_deref(), Some(KEY));
}

#[test]
fn a_hostname_that_is_no_dns_label_is_refused_before_anything_changes() {
    let agent = Agent::start(Some(KEY));
    let mut connection = agent.connect();
    let before = read_trimmed("/proc/sys/kernel/hostname");
    for bad in ["Bad Name", "-x", "a.b", "", "x/../../etc"] {
        let line = format!("{{\"op\":\"set_hostname\",\"name\":{bad:?}}}\n");
        assert_eq!(
            connection.error_for(line.as_bytes()),
            format!("{bad:?} is not a hostname (1-63 lowercase letters, digits and inner hyphens)")
        );
    }
    assert_eq!(
        connection.error_for(b"{\"op\":\"set_hostname\"}\n"),
        "malformed \"set_hostname\" request: missing field `name`"
    );
    assert_eq!(read_trimmed("/proc/sys/kernel/hostname"), before);
    assert_eq!(connection.ping().ssh_host_key.as_deref(), Some(KEY));
}

#[test]
fn agent_rejects_unknown_arguments_with_usage() {
    let output = Command::new(agent_binary())
        .arg("--bogus")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("unexpected argument \"--bogus\""),
        "{stderr}"
    );
    assert!(stderr.contains("usage: banger-agent"), "{stderr}");
}

/// How the stand-in for Firecracker's vsock socket treats a connection after
/// reading its `CONNECT <port>` line.
#[derive(Clone)]
enum Mux {
    /// Answers `OK 1`, then echoes what it reads.
    Echo,
    /// Closes the connection, as Firecracker does when the guest port is closed.
    Refuse,
    /// Answers nothing.
    Silent,
    /// Answers `OK 1`, then relays to the Unix socket at this path.
    Relay(PathBuf),
}

/// Serves `mux` on `uds` for every connection; returns the `CONNECT` lines
/// it read through the channel.
fn fake_vsock(uds: &Path, mux: Mux) -> std::sync::mpsc::Receiver<String> {
    let listener = UnixListener::bind(uds).unwrap();
    let (sent, received) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            let mut line = Vec::new();
            let mut byte = [0u8; 1];
            while line.last() != Some(&b'\n') && stream.read(&mut byte).unwrap_or(0) == 1 {
                line.push(byte[0]);
            }
            let _ = sent.send(String::from_utf8_lossy(&line).into_owned());
            match &mux {
                Mux::Refuse => drop(stream),
                Mux::Silent => std::thread::sleep(Duration::from_secs(2)),
                Mux::Echo => {
                    stream.write_all(b"OK 1\n").unwrap();
                    let mut reader = stream.try_clone().unwrap();
                    let _ = std::io::copy(&mut reader, &mut stream);
                }
                Mux::Relay(target) => {
                    stream.write_all(b"OK 1073741824\n").unwrap();
                    let mut guest = UnixStream::connect(target).unwrap();
                    let mut guest_reader = guest.try_clone().unwrap();
                    let mut host_writer = stream.try_clone().unwrap();
                    std::thread::spawn(move || std::io::copy(&mut guest_reader, &mut host_writer));
                    let _ = std::io::copy(&mut stream, &mut guest);
                }
            }
        }
    });
    received
}

#[test]
fn vsock_connect_sends_the_port_and_returns_the_guest_stream() {
    let dir = tempfile::tempdir().unwrap();
    let uds = dir.path().join("vsock.sock");
    let connects = fake_vsock(&uds, Mux::Echo);

    let mut stream = vsock::connect(&uds, 1024, Duration::from_secs(5)).unwrap();
    assert_eq!(connects.recv().unwrap(), "CONNECT 1024\n");
    stream.write_all(b"hello guest\n").unwrap();
    let mut echoed = [0u8; 12];
    stream.read_exact(&mut echoed).unwrap();
    assert_eq!(&echoed, b"hello guest\n");
}

#[test]
fn vsock_connect_to_a_closed_port_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let uds = dir.path().join("vsock.sock");
    let _connects = fake_vsock(&uds, Mux::Refuse);

    let error = vsock::connect(&uds, 52, Duration::from_secs(5)).unwrap_err();
    assert!(
        matches!(&error, VsockError::Refused { port: 52, .. }),
        "{error:?}"
    );
    assert!(error.to_string().contains("connection closed"), "{error}");
}

#[test]
fn vsock_connect_times_out_when_nothing_answers() {
    let dir = tempfile::tempdir().unwrap();
    let uds = dir.path().join("vsock.sock");
    let _connects = fake_vsock(&uds, Mux::Silent);

    let started = Instant::now();
    let error = vsock::connect(&uds, 52, Duration::from_millis(200)).unwrap_err();
    assert!(
        matches!(&error, VsockError::Timeout { port: 52, .. }),
        "{error:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(2));
}

#[test]
fn vsock_connect_without_a_socket_names_it() {
    let dir = tempfile::tempdir().unwrap();
    let uds = dir.path().join("vsock.sock");
    let error = vsock::connect(&uds, 52, Duration::from_secs(1)).unwrap_err();
    assert!(matches!(&error, VsockError::Connect { .. }), "{error:?}");
    assert!(error.to_string().contains(&uds.display().to_string()));
}

#[test]
fn vsock_ping_reaches_the_agent_through_the_socket() {
    let agent = Agent::start(Some(KEY));
    let uds = agent.dir.path().join("vsock.sock");
    let connects = fake_vsock(&uds, Mux::Relay(agent.sock.clone()));

    let reply = vsock::ping(&uds, Duration::from_secs(5)).unwrap();
    assert_eq!(
        connects.recv().unwrap(),
        format!("CONNECT {}\n", agent_protocol::AGENT_PORT)
    );
    assert_eq!(reply.ssh_host_key.as_deref(), Some(KEY));
    assert_eq!(
        reply.boot_id,
        read_trimmed("/proc/sys/kernel/random/boot_id")
    );
}
