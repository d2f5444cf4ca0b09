//! `--split SIZE`: sizes with decimal and binary units, and the part size bounds.

use super::{FAT32_MAX_FILE, MIN_PART_SIZE};

/// A size that `--split` does not accept.
#[derive(Debug, thiserror::Error)]
pub enum SizeError {
    /// Not a size.
    #[error("invalid size `{text}`: {reason} (examples: 700MiB, 4GiB, 4.7G, 1000000, fat32)")]
    Invalid {
        /// What was given.
        text: String,
        /// Why it was refused.
        reason: String,
    },
    /// Below [`MIN_PART_SIZE`].
    #[error("part size `{text}` ({size} bytes) is below the minimum of {min} bytes (64KiB)")]
    TooSmall {
        /// What was given.
        text: String,
        /// Its value.
        size: u64,
        /// The minimum.
        min: u64,
    },
}

/// Parses a byte size: a whole or decimal number with an optional unit,
/// `K`/`M`/`G`/`T` (also `KB`…) decimal (powers of 1000) and
/// `KiB`/`MiB`/`GiB`/`TiB` binary (powers of 1024), case-insensitive, or
/// `fat32` ([`FAT32_MAX_FILE`]). A bare number is bytes. A fraction is
/// rounded down to whole bytes.
pub fn parse_size(text: &str) -> Result<u64, SizeError> {
    let invalid = |reason: &str| SizeError::Invalid {
        text: text.to_string(),
        reason: reason.to_string(),
    };
    let t = text.trim();
    if t.eq_ignore_ascii_case("fat32") {
        return Ok(FAT32_MAX_FILE);
    }
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let unit = unit.trim();
    let multiplier: u64 = match unit.to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" => 1000,
        "m" | "mb" => 1000u64.pow(2),
        "g" | "gb" => 1000u64.pow(3),
        "t" | "tb" => 1000u64.pow(4),
        "ki" | "kib" => 1024,
        "mi" | "mib" => 1024u64.pow(2),
        "gi" | "gib" => 1024u64.pow(3),
        "ti" | "tib" => 1024u64.pow(4),
        _ => return Err(invalid(&format!("unknown unit `{unit}`"))),
    };
    let (whole, fraction) = match number.split_once('.') {
        Some((w, f)) => (w, f),
        None => (number, ""),
    };
    if whole.is_empty() || !whole.bytes().all(|b| b.is_ascii_digit()) {
        return Err(invalid("expected a number"));
    }
    if !fraction.bytes().all(|b| b.is_ascii_digit())
        || (number.contains('.') && fraction.is_empty())
    {
        return Err(invalid("expected a number"));
    }
    if fraction.len() > 9 {
        return Err(invalid("too many decimal places"));
    }
    let overflow = || invalid("too large");
    let whole: u64 = whole.parse().map_err(|_| overflow())?;
    let mut size = whole.checked_mul(multiplier).ok_or_else(overflow)?;
    if !fraction.is_empty() {
        if multiplier == 1 {
            return Err(invalid("a byte count must be a whole number"));
        }
        let digits: u64 = fraction.parse().map_err(|_| overflow())?;
        let scale = 10u64.pow(fraction.len() as u32);
        let extra = (digits as u128 * multiplier as u128 / scale as u128) as u64;
        size = size.checked_add(extra).ok_or_else(overflow)?;
    }
    if size == 0 {
        return Err(invalid("the size must be above zero"));
    }
    Ok(size)
}

/// [`parse_size`] for `--split`: also refuses parts below [`MIN_PART_SIZE`].
pub fn parse_part_size(text: &str) -> Result<u64, SizeError> {
    let size = parse_size(text)?;
    if size < MIN_PART_SIZE {
        return Err(SizeError::TooSmall {
            text: text.to_string(),
            size,
            min: MIN_PART_SIZE,
        });
    }
    Ok(size)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_with_decimal_and_binary_units() {
        assert_eq!(parse_size("1000000").unwrap(), 1_000_000);
        assert_eq!(parse_size("700MiB").unwrap(), 700 * 1024 * 1024);
        assert_eq!(parse_size("4GiB").unwrap(), 4 * 1024 * 1024 * 1024);
        assert_eq!(parse_size("4G").unwrap(), 4_000_000_000);
        assert_eq!(parse_size("64KiB").unwrap(), 65536);
        assert_eq!(parse_size("64k").unwrap(), 64_000);
        assert_eq!(parse_size("2 MB").unwrap(), 2_000_000);
        assert_eq!(parse_size("1.5GiB").unwrap(), 1536 * 1024 * 1024);
        assert_eq!(parse_size("4.7G").unwrap(), 4_700_000_000);
        assert_eq!(parse_size("1TiB").unwrap(), 1 << 40);
        assert_eq!(parse_size(" 10b ").unwrap(), 10);
    }

    #[test]
    fn fat32_is_the_largest_file_fat32_holds() {
        assert_eq!(parse_size("fat32").unwrap(), 4_294_967_295);
        assert_eq!(parse_size("FAT32").unwrap(), u32::MAX as u64);
    }

    #[test]
    fn bad_sizes_are_refused_naming_the_text() {
        for bad in [
            "",
            "MiB",
            "4XB",
            "-1",
            "1.5",
            "0",
            "0KiB",
            "1..5G",
            "4.G",
            "99999999999999999999",
            "18446744073709551615KiB",
        ] {
            let err = parse_size(bad).unwrap_err();
            assert!(
                err.to_string().contains(&format!("`{bad}`")),
                "{bad}: {err}"
            );
        }
        let err = parse_part_size("1000").unwrap_err();
        assert!(
            matches!(err, SizeError::TooSmall { size: 1000, .. }),
            "{err}"
        );
        assert_eq!(parse_part_size("64KiB").unwrap(), MIN_PART_SIZE);
    }
}
