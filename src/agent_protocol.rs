//! The line-delimited JSON protocol between banger and `banger-agent`.
//!
//! The host opens a stream to the guest's vsock port [`AGENT_PORT`] and
//! writes one request per line, `{"op":"ping"}`; the agent answers each
//! request with one line, either `{"ok":true, ...fields of the op's reply}`
//! or `{"ok":false,"error":"..."}`. Lines are at most [`MAX_LINE`] bytes.
//!
//! This file is compiled into both the banger library and the agent binary,
//! so it depends on nothing but std and serde.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// The guest vsock port the agent listens on.
pub const AGENT_PORT: u32 = 52;

/// The longest request or reply line either side accepts, newline excluded.
pub const MAX_LINE: usize = 64 * 1024;

/// A request from the host, tagged by `op`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Request {
    /// Is the guest up, and who is it?
    Ping,
    /// Set the kernel's hostname (and `/etc/hostname`) to `name`: a VM
    /// claimed from a warm pool takes the name its claimer gave it.
    SetHostname { name: String },
}

/// What the agent answers to [`Request::SetHostname`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostnameReply {
    /// The kernel's hostname after the change.
    pub hostname: String,
}

/// Whether `name` is a hostname the agent sets: a DNS label (what a VM
/// name is), 1-63 lowercase letters, digits and inner hyphens.
pub fn is_valid_hostname(name: &str) -> bool {
    (1..=63).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-')
        && !name.ends_with('-')
}

/// What the agent answers to [`Request::Ping`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PingReply {
    /// The guest's hostname (the kernel's, as `hostname` prints it).
    pub hostname: String,
    /// `/proc/sys/kernel/random/boot_id`: changes on every boot.
    pub boot_id: String,
    /// Time since the guest kernel booted.
    pub uptime_ms: u64,
    /// The guest's SSH host public key, `ssh-ed25519 AAAA...`, or `None` while
    /// sshd has not generated it yet (first boot): a host waiting for the
    /// guest to be ready keeps pinging until it is present.
    pub ssh_host_key: Option<String>,
    /// The agent's version, from its Cargo package.
    pub agent_version: String,
}

/// Why a reply line did not yield the expected reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReplyError {
    /// The agent understood the request and answered with an error.
    Agent(String),
    /// The line is not a reply of the expected shape.
    Malformed(String),
}

impl std::fmt::Display for ReplyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Agent(message) => write!(f, "agent error: {message}"),
            Self::Malformed(reason) => write!(f, "malformed agent reply: {reason}"),
        }
    }
}

impl std::error::Error for ReplyError {}

/// The line (newline included) that carries `request`.
pub fn request_line(request: &Request) -> String {
    let mut line = serde_json::to_string(request).unwrap_or_default();
    line.push('\n');
    line
}

/// Parses one request line (with or without its newline). The error is the
/// message to send back in an error reply.
pub fn parse_request(line: &str) -> Result<Request, String> {
    let value: serde_json::Value =
        serde_json::from_str(line).map_err(|e| format!("malformed request: {e}"))?;
    let op = match value.get("op") {
        Some(serde_json::Value::String(op)) => op.clone(),
        Some(_) => return Err("malformed request: \"op\" is not a string".to_owned()),
        None => return Err("malformed request: no \"op\" field".to_owned()),
    };
    Request::deserialize(value).map_err(|e| {
        if e.to_string().starts_with("unknown variant") {
            format!("unknown op {op:?}")
        } else {
            format!("malformed {op:?} request: {e}")
        }
    })
}

/// The success line (newline included) for a reply body: the body's fields
/// with `"ok":true` added.
pub fn ok_line<T: Serialize>(reply: &T) -> String {
    let mut object = match serde_json::to_value(reply) {
        Ok(serde_json::Value::Object(object)) => object,
        Ok(_) | Err(_) => serde_json::Map::new(),
    };
    object.insert("ok".to_owned(), serde_json::Value::Bool(true));
    let mut line = serde_json::Value::Object(object).to_string();
    line.push('\n');
    line
}

/// The error line (newline included) carrying `message`.
pub fn error_line(message: &str) -> String {
    let mut line = serde_json::json!({ "ok": false, "error": message }).to_string();
    line.push('\n');
    line
}

/// Parses one reply line into the reply `T` of the request that was sent.
pub fn parse_reply<T: DeserializeOwned>(line: &str) -> Result<T, ReplyError> {
    let value: serde_json::Value =
        serde_json::from_str(line).map_err(|e| ReplyError::Malformed(e.to_string()))?;
    match value.get("ok") {
        Some(serde_json::Value::Bool(true)) => {
            T::deserialize(value).map_err(|e| ReplyError::Malformed(e.to_string()))
        }
        Some(serde_json::Value::Bool(false)) => Err(ReplyError::Agent(
            value
                .get("error")
                .and_then(serde_json::Value::as_str)
                .unwrap_or("(no error message)")
                .to_owned(),
        )),
        _ => Err(ReplyError::Malformed("no boolean \"ok\" field".to_owned())),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn sample() -> PingReply {
        PingReply {
            hostname: "scratch".to_owned(),
            boot_id: "189f2de3-1531-4846-9600-93e706482825".to_owned(),
            uptime_ms: 1234,
            ssh_host_key: Some("ssh-ed25519 AAAAC3Nza root@scratch".to_owned()),
            agent_version: "0.1.0".to_owned(),
        }
    }

    #[test]
    fn ping_request_is_one_json_line() {
        assert_eq!(request_line(&Request::Ping), "{\"op\":\"ping\"}\n");
        assert_eq!(parse_request("{\"op\":\"ping\"}\n"), Ok(Request::Ping));
    }

    #[test]
    fn set_hostname_request_carries_the_name() {
        let request = Request::SetHostname {
            name: "p1".to_owned(),
        };
        let line = request_line(&request);
        assert_eq!(line, "{\"op\":\"set_hostname\",\"name\":\"p1\"}\n");
        assert_eq!(parse_request(&line), Ok(request));
        assert_eq!(
            parse_request("{\"op\":\"set_hostname\"}").unwrap_err(),
            "malformed \"set_hostname\" request: missing field `name`"
        );
        for good in ["p1", "brave-otter", "a"] {
            assert!(is_valid_hostname(good), "{good}");
        }
        for bad in ["", "-a", "a-", "A", "a.b", "a b", &"x".repeat(64)] {
            assert!(!is_valid_hostname(bad), "{bad}");
        }
    }

    #[test]
    fn bad_requests_say_what_is_wrong() {
        assert!(
            parse_request("{nope")
                .unwrap_err()
                .starts_with("malformed request")
        );
        assert_eq!(
            parse_request("{\"op\":\"reboot\"}").unwrap_err(),
            "unknown op \"reboot\""
        );
        assert_eq!(
            parse_request("{\"cmd\":\"ping\"}").unwrap_err(),
            "malformed request: no \"op\" field"
        );
        assert_eq!(
            parse_request("{\"op\":7}").unwrap_err(),
            "malformed request: \"op\" is not a string"
        );
    }

    #[test]
    fn ok_reply_round_trips_with_ok_field() {
        let line = ok_line(&sample());
        assert!(line.ends_with('\n'));
        let value: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(value["ok"], true);
        assert_eq!(value["hostname"], "scratch");
        assert_eq!(value["ssh_host_key"], "ssh-ed25519 AAAAC3Nza root@scratch");
        assert_eq!(parse_reply::<PingReply>(&line).unwrap(), sample());
    }

    #[test]
    fn absent_host_key_is_null() {
        let reply = PingReply {
            ssh_host_key: None,
            ..sample()
        };
        let line = ok_line(&reply);
        let value: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert!(value["ssh_host_key"].is_null());
        assert_eq!(parse_reply::<PingReply>(&line).unwrap(), reply);
    }

    #[test]
    fn error_reply_surfaces_the_agent_message() {
        let line = error_line("unknown op \"x\"");
        assert_eq!(line, "{\"error\":\"unknown op \\\"x\\\"\",\"ok\":false}\n");
        match parse_reply::<PingReply>(&line) {
            Err(ReplyError::Agent(message)) => assert_eq!(message, "unknown op \"x\""),
            other => panic!("expected an agent error, got {other:?}"),
        }
    }

    #[test]
    fn malformed_replies_are_rejected() {
        for line in ["", "not json", "{\"hostname\":\"x\"}", "{\"ok\":true}"] {
            assert!(
                matches!(
                    parse_reply::<PingReply>(line),
                    Err(ReplyError::Malformed(_))
                ),
                "{line:?}"
            );
        }
    }
}
