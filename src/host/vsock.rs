//! Host-initiated vsock through Firecracker's Unix socket: connecting to a
//! guest port and asking the guest agent (a ping, a new hostname).
//!
//! Firecracker (and `vhost-device-vsock`) expose the guest's vsock as a Unix
//! socket: the host connects, writes `CONNECT <port>\n`, reads `OK <n>\n`,
//! and from then on the stream is a connection to that guest port.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::agent_protocol::{
    self, AGENT_PORT, HostnameReply, MAX_LINE, PingReply, ReplyError, Request,
};
use crate::host::deadline::DeadlineStream;

/// The longest handshake reply accepted (`OK 4294967295\n` is 14 bytes).
const MAX_HANDSHAKE: usize = 64;

#[derive(Debug, thiserror::Error)]
pub enum VsockError {
    #[error("cannot connect to the vsock socket {}", uds.display())]
    Connect {
        uds: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("talking to guest vsock port {port} through {} failed", uds.display())]
    Io {
        uds: PathBuf,
        port: u32,
        #[source]
        source: io::Error,
    },
    #[error("guest vsock port {port} through {} did not answer within {timeout:?}", uds.display())]
    Timeout {
        uds: PathBuf,
        port: u32,
        timeout: Duration,
    },
    #[error("nothing accepted guest vsock port {port} through {}: {reply}", uds.display())]
    Refused {
        uds: PathBuf,
        port: u32,
        reply: String,
    },
    #[error("the guest agent behind {} answered badly", uds.display())]
    Reply {
        uds: PathBuf,
        #[source]
        source: ReplyError,
    },
}

fn io_error(uds: &Path, port: u32, timeout: Duration, source: io::Error) -> VsockError {
    if matches!(
        source.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    ) {
        VsockError::Timeout {
            uds: uds.to_owned(),
            port,
            timeout,
        }
    } else {
        VsockError::Io {
            uds: uds.to_owned(),
            port,
            source,
        }
    }
}

/// A stream to guest vsock `port` through the Unix socket `uds`, the
/// handshake bounded by `timeout` as a whole. Reads and writes on it then
/// time out after `timeout` each.
pub fn connect(uds: &Path, port: u32, timeout: Duration) -> Result<UnixStream, VsockError> {
    let stream = handshake(uds, port, timeout)?.into_inner();
    let fail = |source| io_error(uds, port, timeout, source);
    stream.set_read_timeout(Some(timeout)).map_err(fail)?;
    stream.set_write_timeout(Some(timeout)).map_err(fail)?;
    Ok(stream)
}

/// Connects and says `CONNECT <port>`; everything on the returned stream
/// must end by the same deadline, `timeout` from now.
fn handshake(uds: &Path, port: u32, timeout: Duration) -> Result<DeadlineStream, VsockError> {
    let fail = |source| io_error(uds, port, timeout, source);
    let mut stream =
        DeadlineStream::connect(uds, timeout).map_err(|source| match source.kind() {
            io::ErrorKind::TimedOut => fail(source),
            _ => VsockError::Connect {
                uds: uds.to_owned(),
                source,
            },
        })?;
    stream
        .write_all(format!("CONNECT {port}\n").as_bytes())
        .map_err(fail)?;
    // Byte by byte: whatever follows the newline belongs to the guest.
    let mut reply = Vec::new();
    let mut byte = [0u8; 1];
    while reply.last() != Some(&b'\n') && reply.len() < MAX_HANDSHAKE {
        if stream.read(&mut byte).map_err(fail)? == 0 {
            break;
        }
        reply.push(byte[0]);
    }
    let reply = String::from_utf8_lossy(&reply);
    if reply.ends_with('\n') && reply.starts_with("OK ") {
        Ok(stream)
    } else {
        Err(VsockError::Refused {
            uds: uds.to_owned(),
            port,
            reply: if reply.is_empty() {
                "connection closed".to_owned()
            } else {
                format!("{:?}", reply.trim_end())
            },
        })
    }
}

/// Pings the guest agent on [`AGENT_PORT`]: connect, handshake, one
/// request and one reply, all within `timeout` (an agent that drips its
/// reply is cut off all the same).
pub fn ping(uds: &Path, timeout: Duration) -> Result<PingReply, VsockError> {
    request(uds, &Request::Ping, timeout)
}

/// Sets the guest's hostname to `name` through the agent.
pub fn set_hostname(
    uds: &Path,
    name: &str,
    timeout: Duration,
) -> Result<HostnameReply, VsockError> {
    request(
        uds,
        &Request::SetHostname {
            name: name.to_owned(),
        },
        timeout,
    )
}

/// One request to the guest agent and its reply `T`, bounded by `timeout`.
fn request<T: serde::de::DeserializeOwned>(
    uds: &Path,
    request: &Request,
    timeout: Duration,
) -> Result<T, VsockError> {
    let mut stream = handshake(uds, AGENT_PORT, timeout)?;
    let fail = |source| io_error(uds, AGENT_PORT, timeout, source);
    stream
        .write_all(agent_protocol::request_line(request).as_bytes())
        .map_err(fail)?;
    let mut line = Vec::new();
    let limit = u64::try_from(MAX_LINE).unwrap_or(u64::MAX) + 1;
    BufReader::new(stream)
        .take(limit)
        .read_until(b'\n', &mut line)
        .map_err(fail)?;
    let reply_error = |source| VsockError::Reply {
        uds: uds.to_owned(),
        source,
    };
    if line.last() != Some(&b'\n') {
        return Err(reply_error(ReplyError::Malformed(if line.is_empty() {
            "the agent closed the connection without replying".to_owned()
        } else {
            format!("reply line unterminated or longer than {MAX_LINE} bytes")
        })));
    }
    agent_protocol::parse_reply(&String::from_utf8_lossy(&line)).map_err(reply_error)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::time::Instant;

    #[test]
    fn an_agent_that_drips_its_reply_is_cut_off_at_the_timeout() {
        let dir = tempfile::tempdir().unwrap();
        let uds = dir.path().join("vsock.sock");
        crate::host::deadline::tests::drip(
            &uds,
            b"OK 1\n{\"ok\":true,\"version\":\"1\"................................}\n",
            Duration::from_millis(25),
        );
        let started = Instant::now();
        let err = ping(&uds, Duration::from_millis(400)).unwrap_err();
        assert!(matches!(err, VsockError::Timeout { .. }), "{err:?}");
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "{:?}",
            started.elapsed()
        );
    }

    #[test]
    fn a_dripping_handshake_is_cut_off_too() {
        let dir = tempfile::tempdir().unwrap();
        let uds = dir.path().join("vsock.sock");
        crate::host::deadline::tests::drip(&uds, b"OK 1234567890123\n", Duration::from_millis(50));
        let started = Instant::now();
        let err = connect(&uds, 52, Duration::from_millis(300)).unwrap_err();
        assert!(matches!(err, VsockError::Timeout { .. }), "{err:?}");
        assert!(started.elapsed() < Duration::from_millis(800));
    }
}
