//! Host-initiated vsock through Firecracker's Unix socket: connecting to a
//! guest port and pinging the guest agent.
//!
//! Firecracker (and `vhost-device-vsock`) expose the guest's vsock as a Unix
//! socket: the host connects, writes `CONNECT <port>\n`, reads `OK <n>\n`,
//! and from then on the stream is a connection to that guest port.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::agent_protocol::{self, AGENT_PORT, MAX_LINE, PingReply, ReplyError, Request};

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

/// A stream to guest vsock `port` through the Unix socket `uds`. Reads and
/// writes on it time out after `timeout`, as the handshake does.
pub fn connect(uds: &Path, port: u32, timeout: Duration) -> Result<UnixStream, VsockError> {
    let mut stream = UnixStream::connect(uds).map_err(|source| VsockError::Connect {
        uds: uds.to_owned(),
        source,
    })?;
    let fail = |source| io_error(uds, port, timeout, source);
    stream.set_read_timeout(Some(timeout)).map_err(fail)?;
    stream.set_write_timeout(Some(timeout)).map_err(fail)?;
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

/// Pings the guest agent on [`AGENT_PORT`]: one request, one reply, each
/// step within `timeout`.
pub fn ping(uds: &Path, timeout: Duration) -> Result<PingReply, VsockError> {
    let mut stream = connect(uds, AGENT_PORT, timeout)?;
    let fail = |source| io_error(uds, AGENT_PORT, timeout, source);
    stream
        .write_all(agent_protocol::request_line(&Request::Ping).as_bytes())
        .map_err(fail)?;
    let mut line = Vec::new();
    let limit = u64::try_from(MAX_LINE).unwrap_or(u64::MAX) + 1;
    BufReader::new(&stream)
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
