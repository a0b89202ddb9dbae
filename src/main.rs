//! The `banger` binary: parse, set up logging, dispatch, map errors to exit codes.

fn main() {}
