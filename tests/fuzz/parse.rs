//! User-typed values: names, sizes, memory, vCPUs, durations.

use std::time::Duration;

use banger::state::parse;
use proptest::collection::vec;
use proptest::prelude::*;
use proptest::sample::select;

use crate::{cases, inputs, replay, text};

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

pub fn is_dns_label(value: &str) -> bool {
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
