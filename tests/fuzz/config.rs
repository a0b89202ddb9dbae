//! The config file.

use std::net::Ipv4Addr;
use std::path::Path;
use std::time::Duration;

use banger::state::config::Config;
use proptest::prelude::*;

use crate::parse::is_dns_label;
use crate::{cases, inputs, replay, text};

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
