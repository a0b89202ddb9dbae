//! The agent's reply lines, as banger parses them.

use banger::agent_protocol::{PingReply, ReplyError, error_line, ok_line, parse_reply};
use proptest::prelude::*;

use crate::{cases, inputs, replay, text};

pub fn ping_reply() -> impl Strategy<Value = PingReply> {
    (
        any::<String>(),
        any::<String>(),
        any::<u64>(),
        any::<Option<String>>(),
        any::<String>(),
    )
        .prop_map(
            |(hostname, boot_id, uptime_ms, ssh_host_key, agent_version)| PingReply {
                hostname,
                boot_id,
                uptime_ms,
                ssh_host_key,
                agent_version,
            },
        )
}

#[test]
fn agent_reply_corpus() {
    replay("agent-reply", |bytes| {
        parse_reply::<PingReply>(&text(bytes)).is_ok()
    });
}

proptest! {
    #![proptest_config(cases(2048))]

    #[test]
    fn agent_replies_parse_or_explain(bytes in inputs("agent-reply")) {
        match parse_reply::<PingReply>(&text(&bytes)) {
            Ok(_) | Err(ReplyError::Agent(_)) => {}
            Err(ReplyError::Malformed(reason)) => prop_assert!(!reason.is_empty()),
        }
    }

    #[test]
    fn agent_replies_round_trip_on_one_line(reply in ping_reply(), message in any::<String>()) {
        let line = ok_line(&reply);
        prop_assert_eq!(line.find('\n'), Some(line.len() - 1));
        prop_assert_eq!(parse_reply::<PingReply>(&line), Ok(reply));
        let line = error_line(&message);
        prop_assert_eq!(line.find('\n'), Some(line.len() - 1));
        prop_assert_eq!(parse_reply::<PingReply>(&line), Err(ReplyError::Agent(message)));
    }
}
