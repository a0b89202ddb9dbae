//! DNS: the sidecar's name server answering `<vm>.vm` with no upstreams.

use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream, UdpSocket};
use std::sync::Arc;
use std::time::Duration;

use banger::host::dns::{DnsConfig, DnsServer, NameLookup, reply_without_upstreams};
use proptest::prelude::*;
use proptest::sample::select;
use simple_dns::rdata::RData;
use simple_dns::{CLASS, Name, Packet, PacketFlag, QCLASS, QTYPE, Question, RCODE, TYPE};

use crate::{cases, corpus, inputs, replay};

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
