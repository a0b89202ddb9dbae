//! The agent's request lines, as the agent parses them.

use banger::agent_protocol::{Request, parse_request, request_line};
use proptest::prelude::*;

use crate::{cases, inputs, replay, text};

#[test]
fn agent_request_corpus() {
    replay("agent-request", |bytes| parse_request(&text(bytes)).is_ok());
    assert_eq!(
        parse_request(&request_line(&Request::Ping)),
        Ok(Request::Ping)
    );
}

proptest! {
    #![proptest_config(cases(2048))]

    #[test]
    fn agent_requests_parse_or_explain(bytes in inputs("agent-request")) {
        match parse_request(&text(&bytes)) {
            Ok(request) => prop_assert_eq!(request, Request::Ping),
            Err(message) => prop_assert!(!message.is_empty()),
        }
    }
}
