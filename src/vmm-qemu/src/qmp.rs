//! A minimal QMP client: the handshake and one command at a time.

use std::io::{self, BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;

use serde_json::{Value, json};

/// A QMP connection past its capabilities handshake.
pub struct Qmp {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
}

impl Qmp {
    /// Connects and negotiates; QEMU answers only once its machine is built.
    pub fn connect(stream: UnixStream) -> io::Result<Self> {
        let writer = stream.try_clone()?;
        let mut qmp = Self {
            reader: BufReader::new(stream),
            writer,
        };
        qmp.read_message()?;
        qmp.execute("qmp_capabilities", json!({}))?;
        Ok(qmp)
    }

    /// Runs `command`, skipping asynchronous events, and returns its result.
    pub fn execute(&mut self, command: &str, arguments: Value) -> io::Result<Value> {
        let request = json!({ "execute": command, "arguments": arguments });
        self.writer.write_all(format!("{request}\n").as_bytes())?;
        loop {
            let mut reply = self.read_message()?;
            if let Some(result) = reply.get_mut("return") {
                return Ok(result.take());
            }
            if let Some(error) = reply.get("error") {
                return Err(io::Error::other(format!("QMP {command} failed: {error}")));
            }
        }
    }

    fn read_message(&mut self) -> io::Result<Value> {
        let mut line = String::new();
        if self.reader.read_line(&mut line)? == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "QMP connection closed",
            ));
        }
        serde_json::from_str(&line).map_err(|err| io::Error::new(io::ErrorKind::InvalidData, err))
    }
}
