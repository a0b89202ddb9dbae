//! Fuzzing the parsers of bytes that come from outside banger: the agent
//! protocol, vsock replies, DNS queries, `handles.json`, Firecracker API
//! responses, user-typed sizes/durations/names and the config file.
//!
//! Each target replays its checked-in corpus, `tests/fuzz-corpus/<target>/`,
//! where a file named `ok-*` must be accepted and `err-*` refused, then runs
//! a bounded proptest over arbitrary bytes and mutations of that corpus: no
//! input may panic, and round trips must hold. `PROPTEST_CASES=N` overrides
//! every case count for a longer session.

use std::io::{self, BufReader, Read, Write};
use std::net::{Ipv4Addr, Shutdown, SocketAddr, TcpStream, UdpSocket};
use std::os::unix::net::UnixListener;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use banger::agent_protocol::{
    PingReply, ReplyError, Request, error_line, ok_line, parse_reply, parse_request, request_line,
};
use banger::host::dns::{DnsConfig, DnsServer, NameLookup, reply_without_upstreams};
use banger::host::firecracker::http::{ReadError, Response, read_response};
use banger::host::vsock::{self, VsockError};
use banger::state::config::Config;
use banger::state::handles::{Handles, Loaded};
use banger::state::model::CowStrategy;
use banger::state::parse;
use proptest::collection::vec;
use proptest::prelude::*;
use proptest::sample::{Index, select};
use simple_dns::rdata::RData;
use simple_dns::{CLASS, Name, Packet, PacketFlag, QCLASS, QTYPE, Question, RCODE, TYPE};

// ---------------------------------------------------------------------------
// Corpus replay and input generation shared by every target.

fn corpus_dir(target: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fuzz-corpus")
        .join(target)
}

/// Every corpus file of `target`, by name.
fn corpus(target: &str) -> Vec<(String, Vec<u8>)> {
    let dir = corpus_dir(target);
    let mut files: Vec<(String, Vec<u8>)> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
        .map(|entry| {
            let path = entry.expect("corpus entry").path();
            let name = path
                .file_name()
                .expect("file name")
                .to_string_lossy()
                .into_owned();
            let bytes = std::fs::read(&path).expect("corpus file");
            (name, bytes)
        })
        .collect();
    files.sort();
    assert!(!files.is_empty(), "{} has no seeds", dir.display());
    files
}

/// Feeds every corpus file of `target` to `accepts`: `ok-*` files must be
/// accepted, `err-*` refused, and none may panic.
fn replay(target: &str, accepts: impl Fn(&[u8]) -> bool) {
    let mut wrong = Vec::new();
    for (name, bytes) in corpus(target) {
        let expected = match name.split('-').next() {
            Some("ok") => true,
            Some("err") => false,
            _ => panic!("{target}/{name}: corpus files are named ok-* or err-*"),
        };
        match catch_unwind(AssertUnwindSafe(|| accepts(&bytes))) {
            Ok(accepted) if accepted == expected => {}
            Ok(accepted) => wrong.push(format!("{name} (accepted: {accepted})")),
            Err(_) => wrong.push(format!("{name} (panicked)")),
        }
    }
    assert!(wrong.is_empty(), "{target}: {wrong:#?}");
}

/// Case count: `PROPTEST_CASES` when set, else `default`.
fn cases(default: u32) -> ProptestConfig {
    let mut config = ProptestConfig::default();
    if std::env::var_os("PROPTEST_CASES").is_none() {
        config.cases = default;
    }
    config
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// One edit of a seed input.
#[derive(Debug, Clone)]
enum Mutation {
    Set(Index, u8),
    Truncate(Index),
    Insert(Index, Vec<u8>),
    Remove(Index, usize),
    Repeat(Index, usize, usize),
}

/// Bytes that tend to matter to the parsers under test.
fn interesting_byte() -> impl Strategy<Value = u8> {
    prop_oneof![
        any::<u8>(),
        select(b"\0\x7f\x80\xc0\xff\n\r\t \"\\{}[]:,.;/+-0159aAfFkKgGsmhdT#=".to_vec()),
    ]
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<Index>(), interesting_byte()).prop_map(|(at, byte)| Mutation::Set(at, byte)),
        any::<Index>().prop_map(Mutation::Truncate),
        (any::<Index>(), vec(interesting_byte(), 1..16))
            .prop_map(|(at, bytes)| Mutation::Insert(at, bytes)),
        (any::<Index>(), 1..32usize).prop_map(|(at, len)| Mutation::Remove(at, len)),
        (any::<Index>(), 1..16usize, 1..64usize)
            .prop_map(|(at, len, times)| Mutation::Repeat(at, len, times)),
    ]
}

fn apply(mut data: Vec<u8>, mutations: &[Mutation]) -> Vec<u8> {
    for mutation in mutations {
        let len = data.len();
        match mutation {
            Mutation::Truncate(at) => data.truncate(at.index(len + 1)),
            Mutation::Insert(at, bytes) => {
                let at = at.index(len + 1);
                data.splice(at..at, bytes.iter().copied());
            }
            _ if len == 0 => {}
            Mutation::Set(at, byte) => data[at.index(len)] = *byte,
            Mutation::Remove(at, n) => {
                let at = at.index(len);
                data.drain(at..(at + n).min(len));
            }
            Mutation::Repeat(at, n, times) => {
                let at = at.index(len);
                let piece = data[at..(at + n).min(len)].to_vec();
                let copies = piece.repeat(*times);
                data.splice(at..at, copies);
            }
        }
    }
    data
}

/// Arbitrary bytes, or a corpus seed of `target` with a few mutations.
fn inputs(target: &str) -> impl Strategy<Value = Vec<u8>> + use<> {
    let seeds: Vec<Vec<u8>> = corpus(target).into_iter().map(|(_, bytes)| bytes).collect();
    prop_oneof![
        vec(any::<u8>(), 0..512),
        (select(seeds), vec(mutation(), 1..8)).prop_map(|(seed, edits)| apply(seed, &edits)),
    ]
}

// ---------------------------------------------------------------------------
// Agent protocol: request lines (parsed by the agent) and reply lines (by banger).

fn ping_reply() -> impl Strategy<Value = PingReply> {
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
fn agent_request_corpus() {
    replay("agent-request", |bytes| parse_request(&text(bytes)).is_ok());
    assert_eq!(
        parse_request(&request_line(&Request::Ping)),
        Ok(Request::Ping)
    );
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
    fn agent_requests_parse_or_explain(bytes in inputs("agent-request")) {
        match parse_request(&text(&bytes)) {
            Ok(request) => prop_assert_eq!(request, Request::Ping),
            Err(message) => prop_assert!(!message.is_empty()),
        }
    }

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

// ---------------------------------------------------------------------------
// host::vsock: the handshake reply and the agent's reply line, from a socket.

/// Pings through a Unix socket whose other end sends `script` (the handshake
/// reply, then whatever the "guest" answers), closes its side and drains the
/// request until the client hangs up.
fn ping_through(script: &[u8]) -> Result<PingReply, VsockError> {
    let dir = tempfile::tempdir().expect("tempdir");
    let uds = dir.path().join("vsock.sock");
    let listener = UnixListener::bind(&uds).expect("bind");
    let script = script.to_vec();
    let guest = thread::spawn(move || {
        let Ok((mut stream, _)) = listener.accept() else {
            return;
        };
        let _ = stream.write_all(&script);
        let _ = stream.shutdown(Shutdown::Write);
        let _ = io::copy(&mut stream, &mut io::sink());
    });
    let result = vsock::ping(&uds, Duration::from_secs(5));
    guest.join().expect("fake guest thread");
    result
}

#[test]
fn vsock_reply_corpus() {
    replay("vsock-reply", |bytes| ping_through(bytes).is_ok());
}

/// What the socket says to `CONNECT 52`.
fn handshake() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        any::<u32>().prop_map(|port| format!("OK {port}\n").into_bytes()),
        "[A-Z ]{0,12}\n?".prop_map(String::into_bytes),
        vec(any::<u8>(), 0..80),
    ]
}

proptest! {
    #![proptest_config(cases(256))]

    #[test]
    fn vsock_replies_are_refused_or_parsed(
        handshake in handshake(),
        reply in ping_reply(),
        guest in prop_oneof![
            Just(None),
            inputs("vsock-reply").prop_map(Some),
        ],
    ) {
        let valid_line = ok_line(&reply).into_bytes();
        let mut script = handshake;
        let handshake_len = script.len();
        script.extend_from_slice(guest.as_deref().unwrap_or(&valid_line));
        let result = ping_through(&script);
        // The client reads the handshake up to its newline, at most 64 bytes.
        let read = script
            .iter()
            .take(64)
            .position(|b| *b == b'\n')
            .map_or(script.len().min(64), |at| at + 1);
        let first_line = &script[..read];
        if !first_line.starts_with(b"OK ") || !first_line.ends_with(b"\n") {
            prop_assert!(matches!(result, Err(VsockError::Refused { .. })), "{:?}", result);
        } else {
            prop_assert!(!matches!(result, Err(VsockError::Refused { .. })), "{:?}", result);
            if guest.is_none() && read == handshake_len {
                prop_assert_eq!(result.ok(), Some(reply));
            }
        }
    }
}

// ---------------------------------------------------------------------------
// DNS: the sidecar's name server answering `<vm>.vm` with no upstreams.

const DOMAIN: &str = "vm";
const WEB: Ipv4Addr = Ipv4Addr::new(172, 30, 0, 5);

/// One live VM, `web`.
struct Vms;

impl NameLookup for Vms {
    fn lookup(&self, name: &str) -> Option<Ipv4Addr> {
        (name == "web").then_some(WEB)
    }
}

fn dns_reply(message: &[u8]) -> Option<Vec<u8>> {
    reply_without_upstreams(message, DOMAIN, Arc::new(Vms))
}

/// Whatever a reply's query was, the reply carries its id and is a response.
fn check_reply(query: &[u8], reply: &[u8]) -> Result<(), String> {
    if reply.len() < 12 || reply[..2] != query[..2] {
        return Err(format!("reply {reply:02x?} does not carry the query's id"));
    }
    let packet = Packet::parse(reply).map_err(|e| format!("reply does not parse: {e}"))?;
    if !packet.has_flags(PacketFlag::RESPONSE) {
        return Err("reply is not flagged as a response".to_owned());
    }
    Ok(())
}

#[test]
fn dns_corpus() {
    replay("dns", |bytes| match dns_reply(bytes) {
        Some(reply) => {
            if let Err(problem) = check_reply(bytes, &reply) {
                panic!("{problem}");
            }
            true
        }
        None => false,
    });
}

/// Sends `query` over UDP and waits for the reply with its id.
fn ask_udp(server: SocketAddr, query: &[u8]) -> Vec<u8> {
    let socket = UdpSocket::bind("127.0.0.1:0").expect("bind");
    socket
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    socket.send_to(query, server).expect("send");
    let mut buf = vec![0u8; 65535];
    loop {
        let len = socket.recv(&mut buf).expect("the server answers over UDP");
        if buf[..2] == query[..2] {
            return buf[..len].to_vec();
        }
    }
}

fn ask_tcp(server: SocketAddr, query: &[u8]) -> Vec<u8> {
    let mut stream = TcpStream::connect(server).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    send_tcp(&mut stream, query).expect("send");
    let mut len = [0u8; 2];
    stream
        .read_exact(&mut len)
        .expect("the server answers over TCP");
    let mut reply = vec![0u8; usize::from(u16::from_be_bytes(len))];
    stream.read_exact(&mut reply).expect("reply");
    reply
}

fn send_tcp(stream: &mut TcpStream, message: &[u8]) -> io::Result<()> {
    let len = u16::try_from(message.len()).map_err(io::Error::other)?;
    stream.write_all(&len.to_be_bytes())?;
    stream.write_all(message)
}

fn query(id: u16, name: &str, qtype: TYPE) -> Vec<u8> {
    let mut packet = Packet::new_query(id);
    packet.set_flags(PacketFlag::RECURSION_DESIRED);
    packet.questions.push(Question::new(
        Name::new_unchecked(name),
        QTYPE::TYPE(qtype),
        QCLASS::CLASS(CLASS::IN),
        false,
    ));
    packet.build_bytes_vec().expect("query builds")
}

/// Each question's name, type, class and unicast bit, as text.
fn questions(packet: &Packet) -> Vec<String> {
    packet
        .questions
        .iter()
        .map(|q| {
            format!(
                "{} {:?} {:?} {}",
                q.qname, q.qtype, q.qclass, q.unicast_response
            )
        })
        .collect()
}

fn answered_address(reply: &[u8]) -> Option<Ipv4Addr> {
    let packet = Packet::parse(reply).ok()?;
    match &packet.answers.first()?.rdata {
        RData::A(a) => Some(Ipv4Addr::from(a.address)),
        _ => None,
    }
}

/// The running server, fed the whole corpus over UDP and TCP, still answers.
#[test]
fn dns_server_survives_the_corpus() {
    let server = DnsServer::start(
        DnsConfig {
            listen: SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
            domain: DOMAIN.to_owned(),
            upstreams: Vec::new(),
            upstream_timeout: Duration::from_millis(100),
        },
        Arc::new(Vms),
    )
    .expect("server starts");
    let addr = server.local_addr();
    let udp = UdpSocket::bind("127.0.0.1:0").expect("bind");
    for (_, bytes) in corpus("dns") {
        let _ = udp.send_to(&bytes, addr);
        if let Ok(mut stream) = TcpStream::connect(addr) {
            let _ = send_tcp(&mut stream, &bytes);
        }
    }
    let probe = query(0x5a5a, "web.vm", TYPE::A);
    assert_eq!(answered_address(&ask_udp(addr, &probe)), Some(WEB));
    assert_eq!(answered_address(&ask_tcp(addr, &probe)), Some(WEB));
    server.stop();
}

/// A well-formed query for `name`: a VM, the domain, deeper or outside names.
fn dns_name() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("web.vm".to_owned()),
        Just("WEB.Vm".to_owned()),
        "[a-z0-9-]{1,20}\\.vm",
        "[a-z0-9]{1,10}\\.web\\.vm",
        "[a-z0-9-]{1,20}(\\.[a-z]{1,10}){0,3}",
        Just("vm".to_owned()),
    ]
}

fn qtype() -> impl Strategy<Value = TYPE> {
    select(vec![
        TYPE::A,
        TYPE::AAAA,
        TYPE::MX,
        TYPE::TXT,
        TYPE::CNAME,
        TYPE::NS,
        TYPE::SOA,
        TYPE::PTR,
    ])
}

proptest! {
    #![proptest_config(cases(4096))]

    #[test]
    fn dns_replies_keep_the_query_id(bytes in inputs("dns")) {
        if let Some(reply) = dns_reply(&bytes) {
            check_reply(&bytes, &reply).map_err(TestCaseError::fail)?;
            if let Ok(query) = Packet::parse(&bytes) {
                let reply = Packet::parse(&reply).expect("checked");
                prop_assert_eq!(questions(&reply), questions(&query));
            }
        }
    }

    #[test]
    fn dns_queries_get_the_right_answer(id in any::<u16>(), name in dns_name(), qtype in qtype()) {
        let query = query(id, &name, qtype);
        let reply = dns_reply(&query).expect("a query gets a reply");
        check_reply(&query, &reply).map_err(TestCaseError::fail)?;
        let packet = Packet::parse(&reply).expect("checked");
        prop_assert_eq!(packet.questions.len(), 1);
        prop_assert_eq!(packet.questions[0].qname.to_string(), name.clone());
        let lower = name.to_ascii_lowercase();
        let (rcode, answer) = if lower == "web.vm" {
            (RCODE::NoError, (qtype == TYPE::A).then_some(WEB))
        } else if lower == "vm" {
            (RCODE::NoError, None)
        } else if lower.ends_with(".vm") {
            (RCODE::NameError, None)
        } else {
            (RCODE::ServerFailure, None)
        };
        prop_assert_eq!(packet.rcode(), rcode);
        prop_assert_eq!(answered_address(&reply), answer);
    }
}

// ---------------------------------------------------------------------------
// handles.json

fn load_bytes(dir: &Path, bytes: &[u8]) -> Loaded {
    std::fs::write(Handles::path(dir), bytes).expect("write handles.json");
    Handles::load(dir)
}

#[test]
fn handles_corpus() {
    let dir = tempfile::tempdir().expect("tempdir");
    replay("handles", |bytes| {
        matches!(load_bytes(dir.path(), bytes), Loaded::Found(_))
    });
}

fn handles() -> impl Strategy<Value = Handles> {
    let path = || any::<Option<String>>().prop_map(|p| p.map(PathBuf::from));
    (
        any::<Option<u32>>(),
        any::<Option<String>>(),
        path(),
        path(),
        any::<Option<String>>(),
        path(),
        proptest::option::of(proptest::sample::select(vec![
            CowStrategy::DmSnapshot,
            CowStrategy::Reflink,
            CowStrategy::Copy,
        ])),
        any::<bool>(),
    )
        .prop_map(
            |(pid, tap, base_loop, cow_loop, dm_name, dm_dev, cow_strategy, nat)| Handles {
                pid,
                tap,
                base_loop,
                cow_loop,
                dm_name,
                dm_dev,
                cow_strategy,
                nat,
            },
        )
}

proptest! {
    #![proptest_config(cases(256))]

    #[test]
    fn handles_load_or_report_corrupt(bytes in inputs("handles")) {
        let dir = tempfile::tempdir().expect("tempdir");
        match load_bytes(dir.path(), &bytes) {
            Loaded::Found(handles) => {
                prop_assert!(bytes.trim_ascii_start().starts_with(b"{"), "only an object is trusted");
                handles.save(dir.path()).expect("save");
                prop_assert!(matches!(Handles::load(dir.path()), Loaded::Found(again) if again == handles));
            }
            Loaded::Corrupt(reason) => prop_assert!(!reason.is_empty()),
            Loaded::Missing => prop_assert!(false, "the file was written"),
        }
    }

    #[test]
    fn handles_round_trip(handles in handles()) {
        let dir = tempfile::tempdir().expect("tempdir");
        handles.save(dir.path()).expect("save");
        prop_assert!(matches!(Handles::load(dir.path()), Loaded::Found(read) if read == handles));
    }
}

// ---------------------------------------------------------------------------
// Firecracker API responses

fn http(bytes: &[u8]) -> Result<Response, ReadError> {
    read_response(&mut &bytes[..])
}

/// Outcomes compared across buffer sizes; I/O errors cannot happen in memory.
fn outcome(result: Result<Response, ReadError>) -> Result<(u16, Vec<u8>), String> {
    match result {
        Ok(response) => Ok((response.status, response.body)),
        Err(ReadError::Malformed(reason)) => Err(reason),
        Err(ReadError::Io(e)) => Err(format!("I/O error from memory: {e}")),
    }
}

#[test]
fn firecracker_http_corpus() {
    replay("firecracker-http", |bytes| http(bytes).is_ok());
}

/// How a generated response frames its body.
#[derive(Debug, Clone)]
enum Framing {
    Length,
    Chunked(Vec<Index>),
    Close,
}

fn framing() -> impl Strategy<Value = Framing> {
    prop_oneof![
        Just(Framing::Length),
        vec(any::<Index>(), 0..6).prop_map(Framing::Chunked),
        Just(Framing::Close),
    ]
}

fn encode_response(
    interim: usize,
    status: u16,
    headers: &[(String, String)],
    body: &[u8],
    framing: &Framing,
) -> Vec<u8> {
    let mut raw = b"HTTP/1.1 100 Continue\r\n\r\n".repeat(interim);
    raw.extend_from_slice(format!("HTTP/1.1 {status} \r\n").as_bytes());
    for (name, value) in headers {
        raw.extend_from_slice(format!("{name}: {value}\r\n").as_bytes());
    }
    match framing {
        Framing::Length => {
            raw.extend_from_slice(format!("Content-Length: {}\r\n\r\n", body.len()).as_bytes());
            raw.extend_from_slice(body);
        }
        Framing::Chunked(cuts) => {
            raw.extend_from_slice(b"Transfer-Encoding: chunked\r\n\r\n");
            let mut cuts: Vec<usize> = cuts.iter().map(|cut| cut.index(body.len() + 1)).collect();
            cuts.push(body.len());
            cuts.sort_unstable();
            let mut start = 0;
            for end in cuts {
                if end > start {
                    raw.extend_from_slice(format!("{:x}\r\n", end - start).as_bytes());
                    raw.extend_from_slice(&body[start..end]);
                    raw.extend_from_slice(b"\r\n");
                    start = end;
                }
            }
            raw.extend_from_slice(b"0\r\n\r\n");
        }
        Framing::Close => {
            raw.extend_from_slice(b"\r\n");
            raw.extend_from_slice(body);
        }
    }
    raw
}

proptest! {
    #![proptest_config(cases(2048))]

    #[test]
    fn firecracker_responses_read_the_same_in_any_buffer(
        bytes in inputs("firecracker-http"),
        capacity in 1..16usize,
    ) {
        let whole = outcome(http(&bytes));
        let pieces = outcome(read_response(&mut BufReader::with_capacity(capacity, &bytes[..])));
        prop_assert_eq!(&whole, &pieces);
        if let Ok((status, _)) = whole {
            prop_assert!((200..1000).contains(&status), "status {}", status);
        }
    }

    #[test]
    fn firecracker_responses_round_trip(
        interim in 0..3usize,
        status in 200..600u16,
        headers in vec(("[A-Za-z][A-Za-z-]{0,15}", "[ -~]{0,40}"), 0..5),
        body in vec(any::<u8>(), 0..300),
        framing in framing(),
    ) {
        let headers: Vec<(String, String)> = headers
            .into_iter()
            .filter(|(name, _)| {
                !["content-length", "transfer-encoding"].contains(&name.to_ascii_lowercase().as_str())
            })
            .collect();
        let raw = encode_response(interim, status, &headers, &body, &framing);
        let expected = if status == 204 || status == 304 { Vec::new() } else { body };
        prop_assert_eq!(outcome(http(&raw)), Ok((status, expected)));
    }
}

// ---------------------------------------------------------------------------
// User-typed values: names, sizes, memory, vCPUs, durations.

#[test]
fn parse_corpus() {
    replay("parse-name", |bytes| parse::vm_name(&text(bytes)).is_ok());
    replay("parse-size", |bytes| parse::size(&text(bytes)).is_ok());
    replay("parse-memory", |bytes| {
        parse::memory_mib(&text(bytes)).is_ok()
    });
    replay("parse-vcpus", |bytes| parse::vcpus(&text(bytes)).is_ok());
    replay("parse-duration", |bytes| {
        parse::duration(&text(bytes)).is_ok()
    });
}

/// Any user text: arbitrary Unicode, or a mutated seed of any parse target.
fn user_text() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>(),
        "[0-9a-zA-Z .+-]{0,24}",
        inputs("parse-size").prop_map(|b| text(&b)),
        inputs("parse-duration").prop_map(|b| text(&b)),
        inputs("parse-name").prop_map(|b| text(&b)),
    ]
}

fn is_dns_label(value: &str) -> bool {
    (1..=63).contains(&value.len())
        && value
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !value.starts_with('-')
        && !value.ends_with('-')
}

const HUNDRED_YEARS: Duration = Duration::from_secs(100 * 365 * 86400);

proptest! {
    #![proptest_config(cases(2048))]

    #[test]
    fn user_values_parse_within_bounds(value in user_text()) {
        match parse::vm_name(&value) {
            Ok(name) => prop_assert!(is_dns_label(&name) && name == value),
            Err(e) => {
                prop_assert!(!is_dns_label(&value));
                prop_assert!(e.value.chars().count() <= 80);
            }
        }
        if let Ok(bytes) = parse::size(&value) {
            prop_assert!(bytes > 0);
        }
        if let Ok(mib) = parse::memory_mib(&value) {
            prop_assert!((128..=1 << 20).contains(&mib));
        }
        if let Ok(n) = parse::vcpus(&value) {
            prop_assert!((1..=32).contains(&n));
        }
        if let Ok(d) = parse::duration(&value) {
            prop_assert!(!d.is_zero() && d <= HUNDRED_YEARS);
        }
    }

    #[test]
    fn sizes_with_units_are_exact(
        number in prop_oneof![1..4096u64, any::<u64>()],
        (unit, shift) in select(vec![("", 0), ("K", 10), ("M", 20), ("G", 30), ("T", 40)]),
        suffix in select(vec!["", "B", "iB"]),
        lower in any::<bool>(),
    ) {
        let suffix = if unit.is_empty() { if suffix.is_empty() { "" } else { "B" } } else { suffix };
        let mut value = format!("{number}{unit}{suffix}");
        if lower {
            value = value.to_ascii_lowercase();
        }
        let expected = number.checked_mul(1 << shift).filter(|b| *b > 0);
        prop_assert_eq!(parse::size(&value).ok(), expected);
    }

    #[test]
    fn formatted_sizes_read_back(bytes in prop_oneof![1..1u64 << 20, any::<u64>().prop_filter("non-zero", |b| *b > 0)], exact_shift in 0..41u32) {
        for bytes in [bytes, (bytes >> exact_shift).max(1) << exact_shift] {
            let shown = parse::format_size(bytes);
            match parse::size(&shown) {
                Ok(read) => prop_assert_eq!(read, bytes, "{}", shown),
                Err(_) => {
                    // Inexact sizes show one decimal: within 5% of the truth.
                    let (number, unit) = shown.split_at(shown.len() - 1);
                    let scale = parse::size(&format!("1{unit}")).expect("unit") as f64;
                    let shown_bytes = number.parse::<f64>().expect("number") * scale;
                    prop_assert!((shown_bytes - bytes as f64).abs() <= bytes as f64 * 0.05, "{} for {}", shown, bytes);
                }
            }
        }
    }

    #[test]
    fn compound_durations_add_up(parts in vec((0..100_000u64, select(vec![('s', 1u64), ('m', 60), ('h', 3600), ('d', 86400)])), 1..5)) {
        let value: String = parts.iter().map(|(n, (unit, _))| format!("{n}{unit}")).collect();
        let total: u64 = parts.iter().map(|(n, (_, secs))| n * secs).sum();
        let expected = (total > 0 && total <= HUNDRED_YEARS.as_secs()).then(|| Duration::from_secs(total));
        prop_assert_eq!(parse::duration(&value).ok(), expected);
    }

    #[test]
    fn memory_in_mib_or_units(mib in 0..(1u64 << 21), unit in select(vec!["", "M", "MiB", "G"])) {
        let (value, expected_mib) = match unit {
            "G" => (format!("{}G", mib >> 10), (mib >> 10) << 10),
            _ => (format!("{mib}{unit}"), mib),
        };
        let expected = (128..=1 << 20).contains(&expected_mib).then(|| u32::try_from(expected_mib).expect("bounded"));
        prop_assert_eq!(parse::memory_mib(&value).ok(), expected);
    }
}

// ---------------------------------------------------------------------------
// The config file

const CONFIG_PATH: &str = "/etc/banger/fuzz.toml";

fn parse_config(text: &str) -> Result<Config, String> {
    Config::parse(Path::new(CONFIG_PATH), text).map_err(|e| e.to_string())
}

#[test]
fn config_corpus() {
    replay("config", |bytes| parse_config(&text(bytes)).is_ok());
}

/// One value of each key, as a config file author would write them.
#[derive(Debug, Clone)]
struct ConfigFile {
    bridge: Option<String>,
    subnet: Option<(Ipv4Addr, u8)>,
    domain: Option<String>,
    vcpus: Option<u8>,
    memory_mib: Option<u32>,
    stop_timeout_s: Option<u64>,
    tap_pool_size: Option<usize>,
    dns_port: Option<u16>,
}

fn config_file() -> impl Strategy<Value = ConfigFile> {
    (
        proptest::option::of("[A-Za-z0-9-]{1,15}"),
        proptest::option::of((any::<u32>(), 16..=29u8).prop_map(|(ip, len)| {
            (
                Ipv4Addr::from(ip & (u32::MAX << (32 - u32::from(len)))),
                len,
            )
        })),
        proptest::option::of("[a-z0-9]([a-z0-9-]{0,20}[a-z0-9])?"),
        proptest::option::of(1..=32u8),
        proptest::option::of(128..=(1u32 << 20)),
        proptest::option::of(1..1_000_000u64),
        proptest::option::of(0..1000usize),
        proptest::option::of(any::<u16>()),
    )
        .prop_map(
            |(
                bridge,
                subnet,
                domain,
                vcpus,
                memory_mib,
                stop_timeout_s,
                tap_pool_size,
                dns_port,
            )| {
                ConfigFile {
                    bridge,
                    subnet,
                    domain,
                    vcpus,
                    memory_mib,
                    stop_timeout_s,
                    tap_pool_size,
                    dns_port,
                }
            },
        )
}

impl ConfigFile {
    fn toml(&self) -> String {
        let mut text = String::from("# generated\n");
        let mut line = |key: &str, value: String| text.push_str(&format!("{key} = {value}\n"));
        if let Some(bridge) = &self.bridge {
            line("bridge", format!("\"{bridge}\""));
        }
        if let Some((network, len)) = self.subnet {
            line("subnet", format!("\"{network}/{len}\""));
        }
        if let Some(domain) = &self.domain {
            line("domain", format!("\"{domain}\""));
        }
        if let Some(vcpus) = self.vcpus {
            line("vcpus", vcpus.to_string());
        }
        if let Some(mib) = self.memory_mib {
            line("memory", format!("\"{mib}M\""));
        }
        if let Some(secs) = self.stop_timeout_s {
            line("stop_timeout", format!("\"{secs}s\""));
        }
        if let Some(n) = self.tap_pool_size {
            line("tap_pool_size", n.to_string());
        }
        if let Some(port) = self.dns_port {
            line("dns_port", port.to_string());
        }
        text
    }
}

proptest! {
    #![proptest_config(cases(1024))]

    #[test]
    fn config_files_parse_within_bounds_or_name_the_file(bytes in inputs("config")) {
        match parse_config(&text(&bytes)) {
            Ok(config) => {
                prop_assert!((1..=15).contains(&config.bridge.len()));
                prop_assert!((16..=29).contains(&config.subnet.prefix_len));
                prop_assert!(config.subnet.contains(config.subnet.gateway()));
                prop_assert!(is_dns_label(&config.domain));
                prop_assert!((1..=32).contains(&config.vcpus));
                prop_assert!(config.memory_mib >= 128);
                prop_assert!(config.work_size > 0);
                prop_assert!(config.tap_pool_size <= 64);
            }
            Err(message) => prop_assert!(message.contains(CONFIG_PATH), "{}", message),
        }
    }

    #[test]
    fn config_files_round_trip(file in config_file()) {
        let config = parse_config(&file.toml()).map_err(TestCaseError::fail)?;
        let defaults = Config::default();
        prop_assert_eq!(config.bridge, file.bridge.unwrap_or(defaults.bridge));
        let subnet = file.subnet.map_or(defaults.subnet.to_string(), |(network, len)| format!("{network}/{len}"));
        prop_assert_eq!(config.subnet.to_string(), subnet);
        prop_assert_eq!(config.domain, file.domain.unwrap_or(defaults.domain));
        prop_assert_eq!(config.vcpus, file.vcpus.unwrap_or(defaults.vcpus));
        prop_assert_eq!(config.memory_mib, file.memory_mib.unwrap_or(defaults.memory_mib));
        prop_assert_eq!(config.stop_timeout, file.stop_timeout_s.map_or(defaults.stop_timeout, Duration::from_secs));
        prop_assert_eq!(config.tap_pool_size, file.tap_pool_size.map_or(defaults.tap_pool_size, |n| n.min(64)));
        prop_assert_eq!(config.dns_port, file.dns_port.unwrap_or(defaults.dns_port));
    }
}
