//! The line-delimited JSON protocol between banger and `banger-agent`.
