//! Byte quantities as a type, so that a value is never a bare `u64` that might be bytes or MiB.
//!
//! llama.cpp logs and tables use MiB = 2^20 bytes; its `--fit-target` and splitplan's `--free`/`--gpu`
//! take plain numbers as MiB. [`Bytes::parse_mib_default`] implements that convention, while
//! [`Bytes::from_str`](std::str::FromStr) treats a plain number as bytes.

use std::fmt;
use std::iter::Sum;
use std::ops::{Add, AddAssign};
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// One kibibyte, 2^10 bytes.
pub const KIB: u64 = 1 << 10;
/// One mebibyte, 2^20 bytes: the unit of every llama.cpp memory log line.
pub const MIB: u64 = 1 << 20;
/// One gibibyte, 2^30 bytes.
pub const GIB: u64 = 1 << 30;

/// A non-negative number of bytes.
///
/// Addition saturates instead of overflowing: every byte count splitplan adds up is bounded by file
/// and device sizes, so saturation can only be reached by hostile input, which must not panic.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
#[must_use]
pub struct Bytes(pub u64);

impl Bytes {
    /// Zero bytes.
    pub const ZERO: Bytes = Bytes(0);

    /// `n` bytes.
    pub const fn new(n: u64) -> Bytes {
        Bytes(n)
    }

    /// The number of bytes.
    pub const fn get(self) -> u64 {
        self.0
    }

    /// `n` KiB.
    pub const fn from_kib(n: u64) -> Bytes {
        Bytes(n.saturating_mul(KIB))
    }

    /// `n` MiB.
    pub const fn from_mib(n: u64) -> Bytes {
        Bytes(n.saturating_mul(MIB))
    }

    /// `n` GiB.
    pub const fn from_gib(n: u64) -> Bytes {
        Bytes(n.saturating_mul(GIB))
    }

    /// Whole MiB, rounded down: how llama.cpp's memory breakdown and `llama-fit-params --fit-print`
    /// print sizes (`bytes/1024/1024`, common/fit.cpp:1102-1111 in build 11434).
    pub const fn mib_floor(self) -> u64 {
        self.0 / MIB
    }

    /// Whole MiB, rounded up: a budget that must cover this many bytes.
    pub const fn mib_ceil(self) -> u64 {
        self.0.div_ceil(MIB)
    }

    /// MiB as a float, for `%.2f MiB` style output and ratios.
    pub fn mib(self) -> f64 {
        self.0 as f64 / MIB as f64
    }

    /// GiB as a float.
    pub fn gib(self) -> f64 {
        self.0 as f64 / GIB as f64
    }

    /// `self + rhs`, or `None` on overflow.
    pub const fn checked_add(self, rhs: Bytes) -> Option<Bytes> {
        match self.0.checked_add(rhs.0) {
            Some(n) => Some(Bytes(n)),
            None => None,
        }
    }

    /// `self - rhs`, or `None` if `rhs` is larger.
    pub const fn checked_sub(self, rhs: Bytes) -> Option<Bytes> {
        match self.0.checked_sub(rhs.0) {
            Some(n) => Some(Bytes(n)),
            None => None,
        }
    }

    /// `self - rhs`, or zero if `rhs` is larger.
    pub const fn saturating_sub(self, rhs: Bytes) -> Bytes {
        Bytes(self.0.saturating_sub(rhs.0))
    }

    /// `self * n`, or `None` on overflow.
    pub const fn checked_mul(self, n: u64) -> Option<Bytes> {
        match self.0.checked_mul(n) {
            Some(n) => Some(Bytes(n)),
            None => None,
        }
    }

    /// `self * n`, saturating.
    pub const fn saturating_mul(self, n: u64) -> Bytes {
        Bytes(self.0.saturating_mul(n))
    }

    /// Rounded up to a multiple of `align` (a power of two or any non-zero value); `None` on overflow.
    /// llama.cpp's `GGML_PAD`.
    pub const fn checked_align_up(self, align: u64) -> Option<Bytes> {
        if align == 0 {
            return Some(self);
        }
        let rem = self.0 % align;
        if rem == 0 {
            Some(self)
        } else {
            match self.0.checked_add(align - rem) {
                Some(n) => Some(Bytes(n)),
                None => None,
            }
        }
    }

    /// Rounded up to a multiple of `align`, saturating.
    pub const fn align_up(self, align: u64) -> Bytes {
        match self.checked_align_up(align) {
            Some(b) => b,
            None => Bytes(u64::MAX),
        }
    }

    /// `self - rhs` as a signed number of bytes (negative when `rhs` is larger), saturating at the
    /// bounds of `i64`.
    pub fn signed_sub(self, rhs: Bytes) -> i64 {
        let d = i128::from(self.0) - i128::from(rhs.0);
        i64::try_from(d).unwrap_or(if d < 0 { i64::MIN } else { i64::MAX })
    }

    /// Parses a size where a plain number means MiB, the unit llama.cpp's `--fit-target` and
    /// splitplan's `--free` and `--gpu` use: `"24564"` is 24,564 MiB; `"24G"`, `"24GiB"`,
    /// `"512MiB"`, `"1.5G"` carry their own unit.
    pub fn parse_mib_default(s: &str) -> Result<Bytes, ParseBytesError> {
        parse(s, MIB)
    }
}

impl Add for Bytes {
    type Output = Bytes;
    fn add(self, rhs: Bytes) -> Bytes {
        Bytes(self.0.saturating_add(rhs.0))
    }
}

impl AddAssign for Bytes {
    fn add_assign(&mut self, rhs: Bytes) {
        *self = *self + rhs;
    }
}

impl Sum for Bytes {
    fn sum<I: Iterator<Item = Bytes>>(iter: I) -> Bytes {
        iter.fold(Bytes::ZERO, Add::add)
    }
}

impl<'a> Sum<&'a Bytes> for Bytes {
    fn sum<I: Iterator<Item = &'a Bytes>>(iter: I) -> Bytes {
        iter.copied().sum()
    }
}

/// Human-readable, binary units: `0 B`, `512 B`, `1.50 KiB`, `23.40 MiB`, `7.30 GiB`.
/// `{:#}` prints whole MiB instead (`23,670 MiB`), the form llama.cpp users read in `nvidia-smi`.
impl fmt::Display for Bytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if f.alternate() {
            return write!(f, "{} MiB", group_thousands(self.mib_floor()));
        }
        let n = self.0;
        if n < KIB {
            write!(f, "{n} B")
        } else if n < MIB {
            write!(f, "{:.2} KiB", n as f64 / KIB as f64)
        } else if n < GIB {
            write!(f, "{:.2} MiB", n as f64 / MIB as f64)
        } else {
            write!(f, "{:.2} GiB", n as f64 / GIB as f64)
        }
    }
}

/// `12345678` → `"12,345,678"`.
pub fn group_thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// Parses a size where a plain number means bytes: `"4096"`, `"24G"`, `"24GiB"`, `"24GB"`
/// (decimal), `"512MiB"`, `"1.5 GiB"`.
impl FromStr for Bytes {
    type Err = ParseBytesError;
    fn from_str(s: &str) -> Result<Bytes, ParseBytesError> {
        parse(s, 1)
    }
}

/// A size that could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "invalid size '{input}', expected a number with an optional unit such as 24564, 24G, 512MiB or 1.5GiB"
)]
pub struct ParseBytesError {
    /// The text that was given.
    pub input: String,
}

fn parse(s: &str, plain_unit: u64) -> Result<Bytes, ParseBytesError> {
    let err = || ParseBytesError { input: s.to_string() };
    let t = s.trim().replace('_', "");
    let split = t.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    if num.is_empty() {
        return Err(err());
    }
    let mult = match unit.trim().to_ascii_lowercase().as_str() {
        "" => plain_unit,
        "b" => 1,
        "k" | "kib" => KIB,
        "kb" => 1_000,
        "m" | "mib" => MIB,
        "mb" => 1_000_000,
        "g" | "gib" => GIB,
        "gb" => 1_000_000_000,
        "t" | "tib" => 1 << 40,
        "tb" => 1_000_000_000_000,
        _ => return Err(err()),
    };
    if let Some((int, frac)) = num.split_once('.') {
        if frac.contains('.') || (int.is_empty() && frac.is_empty()) {
            return Err(err());
        }
        let v: f64 = num.parse().map_err(|_| err())?;
        let bytes = v * mult as f64;
        if !bytes.is_finite() || bytes >= u64::MAX as f64 {
            return Err(err());
        }
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)] // finite, non-negative, in range
        Ok(Bytes(bytes.round() as u64))
    } else {
        let v: u64 = num.parse().map_err(|_| err())?;
        v.checked_mul(mult).map(Bytes).ok_or_else(err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_boundaries() {
        assert_eq!(Bytes(0).to_string(), "0 B");
        assert_eq!(Bytes(1023).to_string(), "1023 B");
        assert_eq!(Bytes(1024).to_string(), "1.00 KiB");
        assert_eq!(Bytes(MIB - 1).to_string(), "1024.00 KiB");
        assert_eq!(Bytes(MIB).to_string(), "1.00 MiB");
        assert_eq!(Bytes(GIB).to_string(), "1.00 GiB");
        assert_eq!(Bytes(56_922_670_080).to_string(), "53.01 GiB");
        assert_eq!(format!("{:#}", Bytes::from_mib(23_670)), "23,670 MiB");
    }

    #[test]
    fn mib_rounding_matches_llama_cpp_tables() {
        assert_eq!(Bytes(MIB - 1).mib_floor(), 0);
        assert_eq!(Bytes(MIB).mib_floor(), 1);
        assert_eq!(Bytes(MIB + 1).mib_ceil(), 2);
    }

    #[test]
    fn parse_units() {
        assert_eq!("4096".parse::<Bytes>(), Ok(Bytes(4096)));
        assert_eq!("24G".parse::<Bytes>(), Ok(Bytes::from_gib(24)));
        assert_eq!("24 GiB".parse::<Bytes>(), Ok(Bytes::from_gib(24)));
        assert_eq!("24GB".parse::<Bytes>(), Ok(Bytes(24_000_000_000)));
        assert_eq!("512MiB".parse::<Bytes>(), Ok(Bytes::from_mib(512)));
        assert_eq!("1.5G".parse::<Bytes>(), Ok(Bytes(3 * GIB / 2)));
        assert_eq!(Bytes::parse_mib_default("24564"), Ok(Bytes::from_mib(24_564)));
        assert_eq!(Bytes::parse_mib_default("1G"), Ok(Bytes::from_gib(1)));
        for bad in ["", "G", "1.2.3", "12X", "-5", "99999999999999999999", ".", "1e9"] {
            assert!(bad.parse::<Bytes>().is_err(), "{bad:?} parsed");
        }
        assert_eq!(
            "12X".parse::<Bytes>().unwrap_err().to_string(),
            "invalid size '12X', expected a number with an optional unit such as 24564, 24G, 512MiB or 1.5GiB"
        );
    }

    #[test]
    fn arithmetic_never_panics() {
        assert_eq!(Bytes(u64::MAX) + Bytes(1), Bytes(u64::MAX));
        assert_eq!(Bytes(1).checked_sub(Bytes(2)), None);
        assert_eq!(Bytes(1).signed_sub(Bytes(3)), -2);
        assert_eq!(Bytes(130).align_up(128), Bytes(256));
        assert_eq!(Bytes(256).align_up(128), Bytes(256));
        assert_eq!(Bytes(u64::MAX).checked_align_up(128), None);
        assert_eq!(group_thousands(1_234_567), "1,234,567");
        assert_eq!(group_thousands(999), "999");
    }
}
