//! Kubernetes resource quantities (`500m`, `1.5Gi`, `2e3`) with exact integer math.
//!
//! A quantity is held as a whole number of nano-units, the finest precision Kubernetes keeps:
//! anything finer rounds up, as `resource.ParseQuantity` does.

use std::fmt;
use std::str::FromStr;

/// Why a quantity string is not a Kubernetes quantity.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QuantityError {
    /// The text does not follow `<sign><digits>.<digits><suffix>` (e.g. `12x`, `1.2.3`, ` 1`).
    #[error("quantities must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$': {0:?}")]
    Format(String),
    /// The value is too large to be represented exactly.
    #[error("quantity {0:?} is too large")]
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
