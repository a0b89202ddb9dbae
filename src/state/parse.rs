//! Strict parsers for user input: VM/image names, sizes and durations.

use std::time::Duration;

/// Why a value the user typed was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {what} {value:?}: {reason}")]
pub struct ParseError {
    pub what: &'static str,
    pub value: String,
    pub reason: String,
}

fn refuse(what: &'static str, value: &str, reason: impl Into<String>) -> ParseError {
    let shown: String = value.chars().take(80).collect();
    ParseError {
        what,
        value: shown,
        reason: reason.into(),
    }
}

/// A name is a DNS label: 1–63 of `[a-z0-9-]`, not starting or ending with `-`.
pub fn name(what: &'static str, value: &str) -> Result<String, ParseError> {
    if value.is_empty() {
        return Err(refuse(what, value, "it is empty"));
    }
    if value.len() > 63 {
        return Err(refuse(
            what,
            value,
            format!("it is {} characters long; the limit is 63", value.len()),
        ));
    }
    if let Some(bad) = value
        .chars()
        .find(|c| !matches!(c, 'a'..='z' | '0'..='9' | '-'))
    {
        return Err(refuse(
            what,
            value,
            format!("{bad:?} is not allowed; use lowercase letters, digits and '-'"),
        ));
    }
    if value.starts_with('-') || value.ends_with('-') {
        return Err(refuse(what, value, "it must not start or end with '-'"));
    }
    Ok(value.to_owned())
}

/// Clap value parser for VM names.
pub fn vm_name(value: &str) -> Result<String, ParseError> {
    name("VM name", value)
}

/// Clap value parser for image names.
pub fn image_name(value: &str) -> Result<String, ParseError> {
    name("image name", value)
}

/// A size: plain bytes, or a number with `K`, `M`, `G`, `T` (binary units,
/// optional trailing `B` or `iB`).
pub fn size(value: &str) -> Result<u64, ParseError> {
    let err = |reason: &str| refuse("size", value, reason);
    let trimmed = value.trim();
    let digits_end = trimmed
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(trimmed.len());
    let (digits, unit) = trimmed.split_at(digits_end);
    if digits.is_empty() {
        return Err(err("expected a number such as 512M, 8G or 1048576"));
    }
    let number: u64 = digits.parse().map_err(|_| err("the number is too large"))?;
    let shift = match unit.to_ascii_uppercase().as_str() {
        "" | "B" => 0,
        "K" | "KB" | "KIB" => 10,
        "M" | "MB" | "MIB" => 20,
        "G" | "GB" | "GIB" => 30,
        "T" | "TB" | "TIB" => 40,
        _ => return Err(err("unknown unit; use K, M, G or T")),
    };
    let bytes = number
        .checked_mul(1u64 << shift)
        .ok_or_else(|| err("the size is too large"))?;
    if bytes == 0 {
        return Err(err("the size must be greater than zero"));
    }
    Ok(bytes)
}

/// The smallest work disk banger can make: the work seed every image
/// carries is a 64 MiB ext4 file, and a work disk is that seed grown
/// (resize2fs only grows it here; it never shrinks below the seed).
pub const MIN_WORK_SIZE: u64 = 64 << 20;

/// A work disk size (`--work-size`): a size of at least [`MIN_WORK_SIZE`].
pub fn work_size(value: &str) -> Result<u64, ParseError> {
    let bytes = size(value)?;
    if bytes < MIN_WORK_SIZE {
        return Err(refuse(
            "work disk size",
            value,
            format!("the minimum is {}", format_size(MIN_WORK_SIZE)),
        ));
    }
    Ok(bytes)
}

/// Memory in MiB: a plain number means MiB; a number with a unit is a size.
pub fn memory_mib(value: &str) -> Result<u32, ParseError> {
    let mib = if value.chars().all(|c| c.is_ascii_digit()) && !value.is_empty() {
        value
            .parse::<u64>()
            .map_err(|_| refuse("memory", value, "the number is too large"))?
    } else {
        let bytes = size(value).map_err(|e| refuse("memory", value, e.reason))?;
        if bytes % (1 << 20) != 0 {
            return Err(refuse("memory", value, "it must be a whole number of MiB"));
        }
        bytes >> 20
    };
    if mib < 128 {
        return Err(refuse("memory", value, "at least 128 MiB is needed"));
    }
    u32::try_from(mib)
        .ok()
        .filter(|m| *m <= 1 << 20)
        .ok_or_else(|| refuse("memory", value, "at most 1 TiB (1048576 MiB) is supported"))
}

/// vCPU count, 1–32.
pub fn vcpus(value: &str) -> Result<u8, ParseError> {
    match value.parse::<u8>() {
        Ok(n) if (1..=32).contains(&n) => Ok(n),
        _ => Err(refuse(
            "vCPU count",
            value,
            "expected a whole number from 1 to 32",
        )),
    }
}

/// A duration: a number with `s`, `m`, `h` or `d`; several may be joined (`1h30m`).
pub fn duration(value: &str) -> Result<Duration, ParseError> {
    let err = |reason: &str| refuse("duration", value, reason);
    if value.is_empty() {
        return Err(err("expected a duration such as 30s, 10m or 2h"));
    }
    let mut total: u64 = 0;
    let mut rest = value;
    while !rest.is_empty() {
        let digits_end = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        if digits_end == 0 {
            return Err(err("expected a duration such as 30s, 10m or 2h"));
        }
        let number: u64 = rest[..digits_end]
            .parse()
            .map_err(|_| err("the number is too large"))?;
        let unit = rest[digits_end..]
            .chars()
            .next()
            .ok_or_else(|| err("missing unit; use s, m, h or d"))?;
        let seconds = match unit {
            's' => 1,
            'm' => 60,
            'h' => 3600,
            'd' => 86400,
            _ => return Err(err("unknown unit; use s, m, h or d")),
        };
        total = number
            .checked_mul(seconds)
            .and_then(|s| total.checked_add(s))
            .filter(|s| *s <= 100 * 365 * 86400)
            .ok_or_else(|| err("the duration is too long"))?;
        rest = &rest[digits_end + unit.len_utf8()..];
    }
    if total == 0 {
        return Err(err("the duration must be greater than zero"));
    }
    Ok(Duration::from_secs(total))
}

/// Human-readable bytes (`8G`, `512M`, `1.5G`).
pub fn format_size(bytes: u64) -> String {
    const UNITS: [(&str, u32); 4] = [("T", 40), ("G", 30), ("M", 20), ("K", 10)];
    for (unit, shift) in UNITS {
        let scale = 1u64 << shift;
        if bytes >= scale {
            return if bytes.is_multiple_of(scale) {
                format!("{}{unit}", bytes / scale)
            } else {
                format!("{:.1}{unit}", bytes as f64 / scale as f64)
            };
        }
    }
    format!("{bytes}B")
}

/// A duration as a user would type it: `45s`, `5m`, `1m30s`, `2h`.
pub fn format_duration(duration: Duration) -> String {
    let total = duration.as_secs();
    let (h, m, s) = (total / 3600, total / 60 % 60, total % 60);
    let mut text = String::new();
    for (n, unit) in [(h, "h"), (m, "m"), (s, "s")] {
        if n > 0 {
            text.push_str(&format!("{n}{unit}"));
        }
    }
    if text.is_empty() {
        text.push_str("0s");
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_dns_labels() {
        assert_eq!(vm_name("dev-1").unwrap(), "dev-1");
        for bad in [
            "", "-a", "a-", "Dev", "a_b", "a.b", "../x", "é", "a b", "$(x)",
        ] {
            assert!(vm_name(bad).is_err(), "{bad:?} accepted");
        }
        assert!(vm_name(&"a".repeat(63)).is_ok());
        let long = vm_name(&"a".repeat(300)).unwrap_err();
        assert!(long.to_string().contains("limit is 63"), "{long}");
    }

    #[test]
    fn sizes() {
        assert_eq!(size("512M").unwrap(), 512 << 20);
        assert_eq!(size("8G").unwrap(), 8 << 30);
        assert_eq!(size("8GiB").unwrap(), 8 << 30);
        assert_eq!(size("4096").unwrap(), 4096);
        for bad in [
            "",
            "G",
            "-1G",
            "1.5G",
            "8X",
            "0",
            "99999999999999999999",
            "17179869184T",
            " 8 G",
        ] {
            assert!(size(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn memory_and_vcpus() {
        assert_eq!(memory_mib("1024").unwrap(), 1024);
        assert_eq!(memory_mib("2G").unwrap(), 2048);
        assert!(memory_mib("64").is_err());
        assert!(memory_mib("1500K").is_err());
        assert!(memory_mib("-5").is_err());
        assert_eq!(vcpus("2").unwrap(), 2);
        for bad in ["0", "33", "-1", "x", "300"] {
            assert!(vcpus(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn durations() {
        assert_eq!(duration("30s").unwrap(), Duration::from_secs(30));
        assert_eq!(duration("10m").unwrap(), Duration::from_secs(600));
        assert_eq!(duration("2h").unwrap(), Duration::from_secs(7200));
        assert_eq!(duration("1h30m").unwrap(), Duration::from_secs(5400));
        for bad in [
            "",
            "30",
            "s",
            "-5s",
            "5x",
            "0s",
            "99999999999999999999s",
            "1.5h",
            "5 s",
        ] {
            assert!(duration(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn work_sizes_below_the_seed_are_refused_in_human_units() {
        assert_eq!(work_size("64M").unwrap(), 64 << 20);
        assert_eq!(work_size("8G").unwrap(), 8 << 30);
        for bad in ["1k", "10M", "67108863"] {
            let err = work_size(bad).unwrap_err().to_string();
            assert!(err.ends_with("the minimum is 64M"), "{bad}: {err}");
        }
        assert!(
            work_size("8X")
                .unwrap_err()
                .to_string()
                .contains("unknown unit")
        );
    }

    #[test]
    fn formats_durations() {
        assert_eq!(format_duration(Duration::from_secs(45)), "45s");
        assert_eq!(format_duration(Duration::from_secs(300)), "5m");
        assert_eq!(format_duration(Duration::from_secs(90)), "1m30s");
        assert_eq!(format_duration(Duration::from_secs(7200)), "2h");
        assert_eq!(format_duration(Duration::from_millis(400)), "0s");
        for text in ["30s", "10m", "1h30m", "2h"] {
            assert_eq!(format_duration(duration(text).unwrap()), text);
        }
    }

    #[test]
    fn formats_sizes() {
        assert_eq!(format_size(8 << 30), "8G");
        assert_eq!(format_size(512 << 20), "512M");
        assert_eq!(format_size(3 << 29), "1.5G");
        assert_eq!(format_size(12), "12B");
    }
}
