//! Command-line flags: the Firecracker flags that shape a run; the others are skipped.

use std::path::PathBuf;

/// Firecracker's flags that take no value; every other flag takes one.
const SWITCHES: &[&str] = &[
    "--boot-timer",
    "--no-api",
    "--no-seccomp",
    "--show-level",
    "--show-log-origin",
    "--snapshot-version",
    "--enable-pci",
];

/// What the VMM was asked to do.
#[derive(Debug, PartialEq)]
pub enum Command {
    Run(Args),
    Version,
}

/// The flags that shape a run.
#[derive(Debug, PartialEq)]
pub struct Args {
    pub api_sock: PathBuf,
    pub id: String,
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ArgsError {
    #[error("flag {0} needs a value")]
    MissingValue(String),
    #[error("unexpected argument {0}")]
    Unexpected(String),
}

/// Parses Firecracker's command line (`--flag value` or `--flag=value`).
pub fn parse(argv: impl IntoIterator<Item = String>) -> Result<Command, ArgsError> {
    let mut args = Args {
        api_sock: PathBuf::from("/run/firecracker.socket"),
        id: "anonymous-instance".to_owned(),
    };
    let mut argv = argv.into_iter();
    while let Some(arg) = argv.next() {
        if !arg.starts_with("--") {
            return Err(ArgsError::Unexpected(arg));
        }
        if arg == "--version" {
            return Ok(Command::Version);
        }
        if SWITCHES.contains(&arg.as_str()) {
            continue;
        }
        let (flag, value) = match arg.split_once('=') {
            Some((flag, value)) => (flag.to_owned(), value.to_owned()),
            None => {
                let value = argv
                    .next()
                    .ok_or_else(|| ArgsError::MissingValue(arg.clone()))?;
                (arg, value)
            }
        };
        match flag.as_str() {
            "--api-sock" => args.api_sock = PathBuf::from(value),
            "--id" => args.id = value,
            _ => {}
        }
    }
    Ok(Command::Run(args))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_strs(argv: &[&str]) -> Result<Command, ArgsError> {
        parse(argv.iter().map(|s| (*s).to_owned()))
    }

    #[test]
    fn takes_api_sock_and_id_and_skips_other_flags() {
        let parsed = parse_strs(&[
            "--no-seccomp",
            "--api-sock",
            "/run/x.sock",
            "--level",
            "Debug",
            "--id=vm1",
            "--show-level",
        ]);
        assert_eq!(
            parsed,
            Ok(Command::Run(Args {
                api_sock: "/run/x.sock".into(),
                id: "vm1".to_owned()
            }))
        );
    }

    #[test]
    fn reports_a_flag_without_its_value() {
        assert_eq!(
            parse_strs(&["--api-sock"]),
            Err(ArgsError::MissingValue("--api-sock".to_owned()))
        );
    }

    #[test]
    fn version_wins() {
        assert_eq!(
            parse_strs(&["--api-sock", "/x", "--version"]),
            Ok(Command::Version)
        );
    }
}
