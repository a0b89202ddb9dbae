//! A Unix stream bounded by one deadline from connect to its last byte: a
//! peer that drips bytes, or never accepts, cannot stretch an exchange past
//! the time it was given (a per-read timeout would restart at every byte).

use std::io::{self, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::socket::{AddressFamily, SockFlag, SockType, UnixAddr, connect, socket};

/// How often a connect to a listener whose backlog is full is retried.
const CONNECT_RETRY: Duration = Duration::from_millis(10);

/// A connected stream whose every read and write must end by `deadline`.
#[derive(Debug)]
pub struct DeadlineStream {
    stream: UnixStream,
    deadline: Instant,
}

impl DeadlineStream {
    /// Connects to `path`; the whole exchange, this connect included, must
    /// end within `timeout`. A listener that does not accept (its backlog
    /// full) times out like a peer that does not answer.
    pub fn connect(path: &Path, timeout: Duration) -> io::Result<Self> {
        let deadline = Instant::now() + timeout;
        let addr = UnixAddr::new(path).map_err(io::Error::from)?;
        let fd = socket(
            AddressFamily::Unix,
            SockType::Stream,
            SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC,
            None,
        )?;
        loop {
            match connect(std::os::fd::AsRawFd::as_raw_fd(&fd), &addr) {
                Ok(()) => break,
                // A Unix listener with a full backlog says EAGAIN, not
                // EINPROGRESS: nothing is under way, so try again.
                Err(Errno::EAGAIN) if Instant::now() < deadline => {
                    std::thread::sleep(CONNECT_RETRY);
                }
                Err(Errno::EAGAIN) => return Err(timed_out()),
                Err(Errno::EINTR) => {}
                Err(errno) => return Err(errno.into()),
            }
        }
        let stream = UnixStream::from(fd);
        stream.set_nonblocking(false)?;
        Ok(Self { stream, deadline })
    }

    /// The time left, or a `TimedOut` error once there is none.
    fn remaining(&self) -> io::Result<Duration> {
        match self.deadline.checked_duration_since(Instant::now()) {
            Some(left) if !left.is_zero() => Ok(left),
            _ => Err(timed_out()),
        }
    }

    /// The stream itself, for what follows the bounded exchange (its own
    /// timeouts are left as the last read or write set them).
    pub fn into_inner(self) -> UnixStream {
        self.stream
    }
}

fn timed_out() -> io::Error {
    io::Error::from(io::ErrorKind::TimedOut)
}

/// `WouldBlock` from a socket timeout, said as what it is.
fn timeout_kind(error: io::Error) -> io::Error {
    if error.kind() == io::ErrorKind::WouldBlock {
        timed_out()
    } else {
        error
    }
}

impl Read for DeadlineStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.stream.set_read_timeout(Some(self.remaining()?))?;
        self.stream.read(buf).map_err(timeout_kind)
    }
}

impl Write for DeadlineStream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.stream.set_write_timeout(Some(self.remaining()?))?;
        self.stream.write(buf).map_err(timeout_kind)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.stream.flush()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
pub(crate) mod tests {
    use super::*;
    use std::os::unix::net::UnixListener;

    /// A peer on `sock` that accepts every connection and writes `reply`
    /// one byte every `every`, whatever it is sent.
    pub(crate) fn drip(sock: &Path, reply: &'static [u8], every: Duration) {
        let listener = UnixListener::bind(sock).unwrap();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { return };
                std::thread::spawn(move || {
                    for byte in reply {
                        std::thread::sleep(every);
                        if stream.write_all(&[*byte]).is_err() {
                            return;
                        }
                    }
                });
            }
        });
    }

    #[test]
    fn a_dripping_peer_is_cut_off_at_the_deadline() {
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("drip.sock");
        drip(&sock, &[b'x'; 1000], Duration::from_millis(20));
        let started = Instant::now();
        let mut stream = DeadlineStream::connect(&sock, Duration::from_millis(300)).unwrap();
        let mut got = Vec::new();
        let err = stream.read_to_end(&mut got).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        assert!(!got.is_empty(), "bytes kept coming until the deadline");
        assert!(
            started.elapsed() < Duration::from_millis(800),
            "{:?}",
            started.elapsed()
        );
    }

    #[test]
    fn a_listener_that_never_accepts_times_out_on_connect() {
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("full.sock");
        let _listener = UnixListener::bind(&sock).unwrap();
        let started = Instant::now();
        // Fill the backlog: connects then fail with EAGAIN until the deadline.
        let mut held = Vec::new();
        let err = loop {
            match DeadlineStream::connect(&sock, Duration::from_millis(200)) {
                Ok(stream) => held.push(stream),
                Err(e) => break e,
            }
            assert!(held.len() < 10_000, "the backlog never filled");
        };
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        assert!(started.elapsed() < Duration::from_secs(5));
    }

    #[test]
    fn no_listener_is_an_error_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let err =
            DeadlineStream::connect(&dir.path().join("none"), Duration::from_secs(5)).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::NotFound);
    }
}
