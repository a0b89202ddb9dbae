//! `banger-agent`: runs inside the guest and answers banger over vsock.
//!
//! It listens on vsock port [`agent_protocol::AGENT_PORT`] (any CID) and
//! answers the line-delimited JSON protocol of `src/agent_protocol.rs`, one
//! thread per connection (at most [`MAX_CONNECTIONS`] at once; further
//! connections wait in the listen backlog). A bad request line (malformed
//! JSON, unknown op, longer than [`agent_protocol::MAX_LINE`]) gets an error
//! reply and the connection stays usable.
//!
//! `ping` reports the kernel's hostname, boot id, uptime and the SSH host
//! key from `/etc/ssh/ssh_host_ed25519_key.pub`. While that file does not
//! exist (sshd generates it on first boot) `ssh_host_key` is `null` and the
//! ping still succeeds, so the host can tell "up, sshd not ready" from
//! "down"; any other failure to read it is an error reply.
//!
//! Usage: `banger-agent [--unix PATH] [--ssh-host-key PATH]`. `--unix`
//! listens on a Unix socket instead of vsock (for tests on the host).
//!
//! The agent is copied into guest images, so it is built static and depends
//! on nothing but std, libc/nix and serde, never on the banger library:
//!
//! ```text
//! RUSTFLAGS='-C target-feature=+crt-static' \
//!   cargo build --release -p banger-agent --target x86_64-unknown-linux-gnu
//! ```
//!
//! (`--target` keeps the flag off build scripts and proc macros, which cannot
//! be static.) The binary lands in
//! `target/x86_64-unknown-linux-gnu/release/banger-agent`. It is a package of
//! its own so that this build compiles only its three dependencies.

#[path = "../agent_protocol.rs"]
#[allow(
    dead_code,
    reason = "the host half of the protocol (request_line, parse_reply) is shared source, unused here"
)]
mod agent_protocol;

use std::io::{BufRead, BufReader, Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use agent_protocol::{HostnameReply, MAX_LINE, PingReply, Request};
use nix::sys::socket::{self, AddressFamily, Backlog, SockFlag, SockType, VsockAddr};

/// At most this many connections are served at once.
const MAX_CONNECTIONS: usize = 64;

/// A connection that sends nothing for this long is closed, so a stuck peer
/// cannot hold a connection slot forever.
const IDLE_TIMEOUT: Duration = Duration::from_secs(600);

const DEFAULT_SSH_HOST_KEY: &str = "/etc/ssh/ssh_host_ed25519_key.pub";

const USAGE: &str = "usage: banger-agent [--unix PATH] [--ssh-host-key PATH]";

struct Options {
    unix: Option<PathBuf>,
    ssh_host_key: PathBuf,
}

fn main() -> ExitCode {
    let options = match parse_args(std::env::args().skip(1)) {
        Ok(Some(options)) => options,
        Ok(None) => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(message) => {
            eprintln!("banger-agent: {message}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let listener = match &options.unix {
        Some(path) => Listener::unix(path),
        None => Listener::vsock(agent_protocol::AGENT_PORT),
    };
    match listener {
        Ok(listener) => serve(&listener, Arc::new(options.ssh_host_key)),
        Err(message) => {
            eprintln!("banger-agent: {message}");
            ExitCode::FAILURE
        }
    }
}

/// `Ok(None)` means `--help`.
fn parse_args(mut args: impl Iterator<Item = String>) -> Result<Option<Options>, String> {
    let mut options = Options {
        unix: None,
        ssh_host_key: PathBuf::from(DEFAULT_SSH_HOST_KEY),
    };
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--unix" => {
                options.unix = Some(args.next().ok_or("--unix needs a path")?.into());
            }
            "--ssh-host-key" => {
                options.ssh_host_key = args.next().ok_or("--ssh-host-key needs a path")?.into();
            }
            "-h" | "--help" => return Ok(None),
            other => return Err(format!("unexpected argument {other:?}")),
        }
    }
    Ok(Some(options))
}

enum Listener {
    Unix(UnixListener),
    Vsock(OwnedFd),
}

/// One accepted connection, readable and writable through a shared reference.
enum Stream {
    Unix(std::os::unix::net::UnixStream),
    Vsock(OwnedFd),
}

impl Listener {
    fn unix(path: &Path) -> Result<Self, String> {
        match std::fs::remove_file(path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(format!("removing stale socket {}: {e}", path.display())),
        }
        UnixListener::bind(path)
            .map(Self::Unix)
            .map_err(|e| format!("listening on {}: {e}", path.display()))
    }

    fn vsock(port: u32) -> Result<Self, String> {
        let fd = socket::socket(
            AddressFamily::Vsock,
            SockType::Stream,
            SockFlag::SOCK_CLOEXEC,
            None,
        )
        .map_err(|e| format!("creating a vsock socket: {e}"))?;
        socket::bind(fd.as_raw_fd(), &VsockAddr::new(libc::VMADDR_CID_ANY, port))
            .map_err(|e| format!("binding vsock port {port}: {e}"))?;
        socket::listen(&fd, Backlog::MAXCONN)
            .map_err(|e| format!("listening on vsock port {port}: {e}"))?;
        Ok(Self::Vsock(fd))
    }

    fn accept(&self) -> std::io::Result<Stream> {
        match self {
            Self::Unix(listener) => listener.accept().map(|(stream, _)| Stream::Unix(stream)),
            Self::Vsock(fd) => socket::accept4(fd, SockFlag::SOCK_CLOEXEC)
                .map(Stream::Vsock)
                .map_err(std::io::Error::from),
        }
    }
}

impl Stream {
    fn set_idle_timeout(&self, timeout: Duration) -> std::io::Result<()> {
        match self {
            Self::Unix(stream) => stream.set_read_timeout(Some(timeout)),
            Self::Vsock(fd) => {
                let timeval = nix::sys::time::TimeVal::new(
                    i64::try_from(timeout.as_secs()).unwrap_or(i64::MAX),
                    0,
                );
                socket::setsockopt(fd, socket::sockopt::ReceiveTimeout, &timeval)
                    .map_err(std::io::Error::from)
            }
        }
    }
}

impl Read for &Stream {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            Stream::Unix(stream) => (&*stream).read(buf),
            Stream::Vsock(fd) => nix::unistd::read(fd, buf).map_err(std::io::Error::from),
        }
    }
}

impl Write for &Stream {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self {
            Stream::Unix(stream) => (&*stream).write(buf),
            Stream::Vsock(fd) => nix::unistd::write(fd, buf).map_err(std::io::Error::from),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Counts connection slots; `acquire` blocks while all are taken.
struct Slots {
    in_use: Mutex<usize>,
    freed: Condvar,
}

impl Slots {
    fn acquire(&self) {
        let mut in_use = self.in_use.lock().unwrap_or_else(|e| e.into_inner());
        while *in_use >= MAX_CONNECTIONS {
            in_use = self.freed.wait(in_use).unwrap_or_else(|e| e.into_inner());
        }
        *in_use += 1;
    }

    fn release(&self) {
        let mut in_use = self.in_use.lock().unwrap_or_else(|e| e.into_inner());
        *in_use -= 1;
        self.freed.notify_one();
    }
}

/// Accepts connections forever.
fn serve(listener: &Listener, ssh_host_key: Arc<PathBuf>) -> ! {
    let slots = Arc::new(Slots {
        in_use: Mutex::new(0),
        freed: Condvar::new(),
    });
    loop {
        slots.acquire();
        let stream = match listener.accept() {
            Ok(stream) => stream,
            Err(e) => {
                eprintln!("banger-agent: accept: {e}");
                slots.release();
                std::thread::sleep(Duration::from_millis(100));
                continue;
            }
        };
        let (slots_for_thread, key) = (Arc::clone(&slots), Arc::clone(&ssh_host_key));
        let spawned = std::thread::Builder::new()
            .name("connection".to_owned())
            .spawn(move || {
                match serve_connection(&stream, &key) {
                    Ok(()) => {}
                    Err(e)
                        if matches!(
                            e.kind(),
                            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                        ) => {}
                    Err(e) => eprintln!("banger-agent: connection: {e}"),
                }
                slots_for_thread.release();
            });
        if let Err(e) = spawned {
            eprintln!("banger-agent: spawning a connection thread: {e}");
            slots.release();
        }
    }
}

/// Answers each request line until the peer closes the connection (or sends
/// nothing for [`IDLE_TIMEOUT`], which surfaces as a `WouldBlock` error).
fn serve_connection(stream: &Stream, ssh_host_key: &Path) -> std::io::Result<()> {
    stream.set_idle_timeout(IDLE_TIMEOUT)?;
    let mut reader = BufReader::new(stream);
    let mut writer = stream;
    let mut line = Vec::new();
    loop {
        line.clear();
        let limit = u64::try_from(MAX_LINE).unwrap_or(u64::MAX) + 1;
        let read = (&mut reader).take(limit).read_until(b'\n', &mut line)?;
        if read == 0 {
            return Ok(());
        }
        if line.last() != Some(&b'\n') && line.len() > MAX_LINE {
            let reply = format!("request line longer than {MAX_LINE} bytes");
            writer.write_all(agent_protocol::error_line(&reply).as_bytes())?;
            skip_rest_of_line(&mut reader)?;
            continue;
        }
        let reply = match std::str::from_utf8(&line) {
            Ok(text) if text.trim().is_empty() => continue,
            Ok(text) => answer(text, ssh_host_key),
            Err(_) => agent_protocol::error_line("malformed request: not UTF-8"),
        };
        writer.write_all(reply.as_bytes())?;
    }
}

/// Discards input up to and including the next newline (or end of stream).
fn skip_rest_of_line(reader: &mut impl BufRead) -> std::io::Result<()> {
    loop {
        let buffer = reader.fill_buf()?;
        if buffer.is_empty() {
            return Ok(());
        }
        match buffer.iter().position(|&b| b == b'\n') {
            Some(newline) => {
                reader.consume(newline + 1);
                return Ok(());
            }
            None => {
                let all = buffer.len();
                reader.consume(all);
            }
        }
    }
}

/// The reply line for one request line.
fn answer(line: &str, ssh_host_key: &Path) -> String {
    match agent_protocol::parse_request(line) {
        Ok(Request::Ping) => match ping(ssh_host_key) {
            Ok(reply) => agent_protocol::ok_line(&reply),
            Err(message) => agent_protocol::error_line(&message),
        },
        Ok(Request::SetHostname { name }) => match set_hostname(&name) {
            Ok(reply) => agent_protocol::ok_line(&reply),
            Err(message) => agent_protocol::error_line(&message),
        },
        Err(message) => agent_protocol::error_line(&message),
    }
}

fn ping(ssh_host_key: &Path) -> Result<PingReply, String> {
    let boot_id = read_trimmed(Path::new("/proc/sys/kernel/random/boot_id"))?;
    let uptime = read_trimmed(Path::new("/proc/uptime"))?;
    let uptime_ms = parse_uptime_ms(&uptime)
        .ok_or_else(|| format!("unexpected /proc/uptime contents {uptime:?}"))?;
    let ssh_host_key = match std::fs::read_to_string(ssh_host_key) {
        Ok(key) => Some(key.trim().to_owned()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(format!("reading {}: {e}", ssh_host_key.display())),
    };
    Ok(PingReply {
        hostname: hostname()?,
        boot_id,
        uptime_ms,
        ssh_host_key,
        agent_version: env!("CARGO_PKG_VERSION").to_owned(),
    })
}

/// Sets the kernel's hostname to `name` and writes it to `/etc/hostname`
/// (replaced atomically), so that what reads either agrees. The kernel
/// command line names the VM at each boot; this renames a running one.
fn set_hostname(name: &str) -> Result<HostnameReply, String> {
    if !agent_protocol::is_valid_hostname(name) {
        return Err(format!(
            "{name:?} is not a hostname (1-63 lowercase letters, digits and inner hyphens)"
        ));
    }
    std::fs::write("/proc/sys/kernel/hostname", name)
        .map_err(|e| format!("setting the hostname: {e}"))?;
    let etc = Path::new("/etc/hostname");
    let staged = Path::new("/etc/.hostname.banger");
    std::fs::write(staged, format!("{name}\n"))
        .and_then(|()| std::fs::rename(staged, etc))
        .map_err(|e| format!("writing {}: {e}", etc.display()))?;
    Ok(HostnameReply {
        hostname: hostname()?,
    })
}

/// The kernel's hostname, which the guest sets at boot; `/etc/hostname` if
/// the kernel's cannot be read.
fn hostname() -> Result<String, String> {
    read_trimmed(Path::new("/proc/sys/kernel/hostname"))
        .or_else(|_| read_trimmed(Path::new("/etc/hostname")))
}

fn read_trimmed(path: &Path) -> Result<String, String> {
    std::fs::read_to_string(path)
        .map(|text| text.trim().to_owned())
        .map_err(|e| format!("reading {}: {e}", path.display()))
}

/// Milliseconds from `/proc/uptime`'s first field, `"<seconds>.<hundredths> <idle>"`.
fn parse_uptime_ms(uptime: &str) -> Option<u64> {
    let seconds = uptime.split_whitespace().next()?;
    let (whole, fraction) = seconds.split_once('.').unwrap_or((seconds, "0"));
    let whole: u64 = whole.parse().ok()?;
    let fraction_ms = format!("{fraction:0<3}");
    let fraction_ms: u64 = fraction_ms.get(..3)?.parse().ok()?;
    whole.checked_mul(1000)?.checked_add(fraction_ms)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn uptime_parses_to_milliseconds() {
        assert_eq!(parse_uptime_ms("350735.47 234388.90\n"), Some(350_735_470));
        assert_eq!(parse_uptime_ms("0.05 0.00"), Some(50));
        assert_eq!(parse_uptime_ms("12 0"), Some(12_000));
        assert_eq!(parse_uptime_ms("1.23456 0"), Some(1_234));
        assert_eq!(parse_uptime_ms(""), None);
        assert_eq!(parse_uptime_ms("x.1 0"), None);
    }

    #[test]
    fn arguments_parse() {
        let args = |list: &[&str]| list.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let options = parse_args(args(&["--unix", "/tmp/a.sock"]).into_iter())
            .unwrap()
            .unwrap();
        assert_eq!(options.unix, Some(PathBuf::from("/tmp/a.sock")));
        assert_eq!(options.ssh_host_key, PathBuf::from(DEFAULT_SSH_HOST_KEY));
        assert!(parse_args(args(&["--help"]).into_iter()).unwrap().is_none());
        assert!(parse_args(args(&["--unix"]).into_iter()).is_err());
        assert!(parse_args(args(&["--bogus"]).into_iter()).is_err());
    }
}
