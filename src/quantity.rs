//! Kubernetes resource quantities (`500m`, `1.5Gi`, `2e3`) with exact integer math: the one
//! parser that validation, admission, eviction, the runtime spec and volumes share, so a value
//! validation accepts is one they all compute. A leaf: imports nothing from the crate.
//!
//! A quantity is held as a whole number of nano-units, the finest precision Kubernetes keeps:
//! anything finer rounds up, as `resource.ParseQuantity` does. Two deliberate departures, both
//! typos in a manifest: magnitudes past 2^63-1 units are refused (Go caps them silently), and
//! so is a quantity without digits (`Mi`, `.`, `-`), which Go reads as 0.

use std::fmt;
use std::str::FromStr;

/// Why a quantity string is not a Kubernetes quantity.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QuantityError {
    /// The text does not follow `<sign><digits>.<digits><suffix>` (e.g. `12x`, `1.2.3`, ` 1`).
    #[error("quantities must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$': {0:?}")]
    Format(String),
    /// The value is past 2^63-1 units.
    #[error("quantity {0:?} is too large: the largest is 9223372036854775807 (2^63-1) units")]
    Overflow(String),
}

const NANO: i128 = 1_000_000_000;

/// An exact Kubernetes quantity.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Quantity {
    nanos: i128,
}

impl Quantity {
    pub const ZERO: Quantity = Quantity { nanos: 0 };

    /// A whole number of units (bytes, cores).
    pub fn from_units(units: i64) -> Self {
        Self { nanos: units as i128 * NANO }
    }

    /// Billionths of a unit (nanocores).
    pub fn from_nanos(nanos: i128) -> Self {
        Self { nanos }
    }

    /// Thousandths of a unit (millicores).
    pub fn from_millis(millis: i64) -> Self {
        Self { nanos: millis as i128 * 1_000_000 }
    }

    /// Parses `k8s_openapi`'s quantity newtype.
    pub fn parse(
        q: &k8s_openapi::apimachinery::pkg::api::resource::Quantity,
    ) -> Result<Self, QuantityError> {
        q.0.parse()
    }

    /// `Quantity.Value()`: whole units, rounded up.
    pub fn value(&self) -> i64 {
        clamp(div_ceil(self.nanos, NANO))
    }

    /// `Quantity.MilliValue()`: thousandths, rounded up.
    pub fn milli_value(&self) -> i64 {
        clamp(div_ceil(self.nanos, 1_000_000))
    }

    /// Thousandths, rounded up, never clamped: millicores and milli-bytes for admission sums.
    pub fn millis(&self) -> i128 {
        div_ceil(self.nanos, 1_000_000)
    }

    /// Billionths of a unit (nanocores), exact: the precision a quantity is held in.
    pub fn nano_value(&self) -> i128 {
        self.nanos
    }

    pub fn is_zero(&self) -> bool {
        self.nanos == 0
    }

    pub fn is_positive(&self) -> bool {
        self.nanos > 0
    }

    pub fn is_negative(&self) -> bool {
        self.nanos < 0
    }

    pub fn checked_add(self, other: Quantity) -> Option<Quantity> {
        self.nanos.checked_add(other.nanos).map(|nanos| Quantity { nanos })
    }
}

fn div_ceil(a: i128, b: i128) -> i128 {
    let q = a / b;
    if a % b != 0 && (a > 0) == (b > 0) {
        q + 1
    } else {
        q
    }
}

fn clamp(v: i128) -> i64 {
    v.clamp(i64::MIN as i128, i64::MAX as i128) as i64
}

impl fmt::Display for Quantity {
    /// Plain decimal units (`1.5`, `0.001`): for messages, not the canonical Kubernetes form.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sign = if self.nanos < 0 { "-" } else { "" };
        let abs = self.nanos.unsigned_abs();
        let (whole, frac) = (abs / NANO as u128, abs % NANO as u128);
        if frac == 0 {
            write!(f, "{sign}{whole}")
        } else {
            let frac = format!("{frac:09}");
            write!(f, "{sign}{whole}.{}", frac.trim_end_matches('0'))
        }
    }
}

/// How Go's `resource.Quantity` prints an amount: `BinarySI` (Ki, Mi...) for quantities
/// written with a binary suffix and for byte counts the kubelet measures, `DecimalSI`
/// otherwise.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    BinarySI,
    DecimalSI,
}

impl Format {
    /// The format `ParseQuantity` keeps for a quantity as written.
    pub fn of(s: &str) -> Format {
        if ["Ki", "Mi", "Gi", "Ti", "Pi", "Ei"].iter().any(|x| s.ends_with(x)) {
            Format::BinarySI
        } else {
            Format::DecimalSI
        }
    }
}

impl Quantity {
    /// Printed like Go's `Quantity.String()` in `format`: canonical, so `2048Ki` prints `2Mi`,
    /// `1000` as `DecimalSI` prints `1k`, `0.5` prints `500m`.
    pub fn canonical(self, format: Format) -> Canonical {
        Canonical(self, format)
    }
}

/// A quantity with the format it prints in (see [`Quantity::canonical`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Canonical(Quantity, Format);

impl fmt::Display for Canonical {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let nanos = self.0.nanos;
        // `CanonicalizeBytes`: small and fractional binary amounts print as decimal.
        if self.1 == Format::BinarySI && nanos.abs() >= 1024 * NANO && nanos % NANO == 0 {
            let (mut n, mut exp) = (nanos / NANO, 0);
            while exp < 6 && n % 1024 == 0 {
                n /= 1024;
                exp += 1;
            }
            let suffix = ["", "Ki", "Mi", "Gi", "Ti", "Pi", "Ei"][exp];
            return write!(f, "{n}{suffix}");
        }
        if nanos == 0 {
            return write!(f, "0");
        }
        let (mut n, mut exp) = (nanos, 0usize);
        while exp < 9 && n % 1000 == 0 {
            n /= 1000;
            exp += 1;
        }
        let suffix = ["n", "u", "m", "", "k", "M", "G", "T", "P", "E"][exp];
        write!(f, "{n}{suffix}")
    }
}

impl FromStr for Quantity {
    type Err = QuantityError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || QuantityError::Format(s.to_string());
        let overflow = || QuantityError::Overflow(s.to_string());
        let (negative, rest) = match s.as_bytes().first() {
            Some(b'-') => (true, &s[1..]),
            Some(b'+') => (false, &s[1..]),
            _ => (false, s),
        };
        let num_len = rest.bytes().take_while(|b| b.is_ascii_digit() || *b == b'.').count();
        let (number, suffix) = rest.split_at(num_len);
        let (int_part, frac_part) = number.split_once('.').unwrap_or((number, ""));
        if (int_part.is_empty() && frac_part.is_empty()) || frac_part.contains('.') {
            return Err(bad());
        }
        let (exp2, mut exp10): (u32, i64) = match suffix {
            "" => (0, 0),
            "n" => (0, -9),
            "u" => (0, -6),
            "m" => (0, -3),
            "k" => (0, 3),
            "M" => (0, 6),
            "G" => (0, 9),
            "T" => (0, 12),
            "P" => (0, 15),
            "E" => (0, 18),
            "Ki" => (10, 0),
            "Mi" => (20, 0),
            "Gi" => (30, 0),
            "Ti" => (40, 0),
            "Pi" => (50, 0),
            "Ei" => (60, 0),
            _ => {
                let exp = suffix.strip_prefix(['e', 'E']).ok_or_else(bad)?;
                let digits = exp.strip_prefix(['+', '-']).unwrap_or(exp);
                if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(bad());
                }
                (0, exp.parse::<i64>().map_err(|_| overflow())?)
            }
        };
        // value = digits × 10^(exp10 − fraction digits) × 2^exp2, in nanos: × 10^9.
        let digits: String = int_part.chars().chain(frac_part.chars()).collect();
        let digits = digits.trim_start_matches('0');
        exp10 = exp10 - frac_part.len() as i64 + 9;
        let mut mantissa: i128 = 0;
        // Trailing digits beyond i128 precision only matter for rounding up.
        let mut dropped_nonzero = false;
        for (i, b) in digits.bytes().enumerate() {
            if i >= 36 {
                exp10 += 1;
                dropped_nonzero |= b != b'0';
                continue;
            }
            mantissa = mantissa * 10 + (b - b'0') as i128;
        }
        mantissa =
            mantissa.checked_shl(exp2).filter(|m| m >> exp2 == mantissa).ok_or_else(overflow)?;
        let nanos = if mantissa == 0 {
            0
        } else if exp10 >= 0 {
            let scale = 10i128
                .checked_pow(u32::try_from(exp10).map_err(|_| overflow())?)
                .ok_or_else(overflow)?;
            mantissa.checked_mul(scale).ok_or_else(overflow)?
        } else if exp10 < -38 {
            1 // below a nano: rounds up to the smallest quantity
        } else {
            let scale = 10i128.pow((-exp10) as u32);
            let q = mantissa / scale;
            if mantissa % scale != 0 || dropped_nonzero {
                q + 1
            } else {
                q
            }
        };
        if nanos > i64::MAX as i128 * NANO {
            return Err(overflow());
        }
        Ok(Quantity { nanos: if negative { -nanos } else { nanos } })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(s: &str) -> Result<Quantity, QuantityError> {
        s.parse()
    }

    /// `resource.ParseQuantity` then `MilliValue()`, as admission sums cpu: suffixes,
    /// exponents, fractions, and rounding up to the next milli-unit.
    #[test]
    fn parses_like_parse_quantity() {
        let table: &[(&str, i128)] = &[
            ("100m", 100),
            ("0.1", 100),
            ("0.5", 500),
            (".5", 500),
            ("1.", 1000),
            ("1", 1000),
            ("1.5", 1500),
            ("+2", 2000),
            ("-1", -1000),
            ("0", 0),
            ("-0", 0),
            ("2Ki", 2048 * 1000),
            ("64Mi", 64 * 1024 * 1024 * 1000),
            ("1.5Gi", 1_610_612_736 * 1000),
            ("0.5Gi", 512 * 1024 * 1024 * 1000),
            ("1Ei", 1000 * (1i128 << 60)),
            ("1e3", 1_000_000),
            ("1E3", 1_000_000),
            ("1e+3", 1_000_000),
            ("1e-3", 1),
            ("1k", 1_000_000),
            ("128M", 128_000_000_000),
            ("1G", 1_000_000_000_000),
            ("250u", 1), // rounded up, like MilliValue
            ("1n", 1),
            ("1e-1000", 1), // below a nano: the smallest quantity, not zero
        ];
        for (s, want) in table {
            assert_eq!(q(s).map(|q| q.millis()), Ok(*want), "{s:?}");
        }
        // Memory is whole bytes, rounded up as the kubelet's `Value()` does.
        assert_eq!(q("1.5Gi").unwrap().value(), 1_610_612_736);
        assert_eq!(q("100m").unwrap().value(), 1);
        assert_eq!(q("1.0001k").unwrap().value(), 1001);
        assert_eq!(q("1n").unwrap().nano_value(), 1);
    }

    #[test]
    fn refuses_what_parse_quantity_refuses() {
        for bad in ["", "Mi", "m", ".", "1.5.5", "1..2", "1KB", "1ki", "1gi", "1e", "1e+", "one"] {
            assert_eq!(q(bad), Err(QuantityError::Format(bad.into())), "{bad:?}");
        }
        for bad in [" 1", "1 ", "1 Mi", "--1", "1Mi5"] {
            assert!(matches!(q(bad), Err(QuantityError::Format(_))), "{bad:?}");
        }
    }

    /// 2^63-1 units is the most a quantity holds (Go's `maxAllowed`).
    #[test]
    fn refuses_magnitudes_past_2_63_units() {
        assert_eq!(q("9223372036854775807").unwrap().value(), i64::MAX);
        assert_eq!(q("7Ei").unwrap().value(), 7 << 60);
        assert_eq!(q("-9223372036854775807").unwrap().value(), -i64::MAX);
        for big in [
            "9223372036854775808",
            "8Ei",
            "1e19",
            "10E",
            "99999999999999999999999999999999999999999Ei",
            "1e99999999999999999999",
        ] {
            assert_eq!(q(big), Err(QuantityError::Overflow(big.into())), "{big:?}");
        }
    }

    /// What `resource.NewQuantity(n, BinarySI).String()` and `MustParse(s).String()` print.
    #[test]
    fn prints_like_go_quantities() {
        let bytes = |n: i64| Quantity::from_units(n).canonical(Format::BinarySI);
        let parsed = |s: &str| q(s).unwrap().canonical(Format::of(s));
        let table = [
            (bytes(80 << 20), "80Mi"),
            (bytes((80 << 20) + 1), "83886081"),
            (bytes(2048), "2Ki"),
            (bytes(1536), "1536"),
            (bytes(1000), "1k"),
            (bytes(0), "0"),
            (bytes(512), "512"),
            (Quantity::from_units(1_000_000).canonical(Format::DecimalSI), "1M"),
            (Quantity::from_nanos(1_234_567).canonical(Format::DecimalSI), "1234567n"),
            (Quantity::from_nanos(1_500_000).canonical(Format::DecimalSI), "1500u"),
            (parsed("2048Ki"), "2Mi"),
            (parsed("1.5Gi"), "1536Mi"),
            (parsed("100Mi"), "100Mi"),
            (parsed("100M"), "100M"),
            (parsed("100m"), "100m"),
            (parsed("1.5"), "1500m"),
            (parsed("1e3"), "1k"),
        ];
        for (c, want) in table {
            assert_eq!(c.to_string(), want, "{c:?}");
        }
    }
}
