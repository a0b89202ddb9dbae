//! Fuzzing the parsers of bytes that come from outside banger: the agent
//! protocol, vsock replies, DNS queries, `handles.json`, Firecracker API
//! responses, user-typed sizes/durations/names and the config file, one
//! module per target.
//!
//! Each target replays its checked-in corpus, `tests/fuzz-corpus/<target>/`,
//! where a file named `ok-*` must be accepted and `err-*` refused, then runs
//! a bounded proptest over arbitrary bytes and mutations of that corpus: no
//! input may panic, and round trips must hold. `PROPTEST_CASES=N` overrides
//! every case count for a longer session. Failures proptest finds are kept
//! beside each module, in `<module>.proptest-regressions`, and replayed first.

mod agent_reply;
mod agent_request;
mod config;
mod dns;
mod firecracker_http;
mod handles;
mod parse;
mod vsock_reply;

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};

use proptest::collection::vec;
use proptest::prelude::*;
use proptest::sample::{Index, select};
use proptest::test_runner::FileFailurePersistence;

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

/// Case count: `PROPTEST_CASES` when set, else `default`. Failures are kept
/// in a file beside the module's source (proptest would otherwise put them
/// under `tests/proptest-regressions/`, named after the module alone).
fn cases(default: u32) -> ProptestConfig {
    let mut config = ProptestConfig {
        failure_persistence: Some(Box::new(FileFailurePersistence::WithSource(
            "proptest-regressions",
        ))),
        ..ProptestConfig::default()
    };
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
