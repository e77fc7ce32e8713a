//! The data identifiers this driver reads: one table, each row with its BCD format and
//! its source.
//!
//! DL/T 645-2007 Appendix A gives every identifier as DI3 DI2 DI1 DI0 with a format such
//! as `XXXXXX.XX` (8 BCD digits, 2 after the point, 4 bytes, low byte first). For the
//! quantities that can flow either way (current, power, power factor) the highest bit of
//! the most significant byte is the sign (1 = negative, reverse direction) and the other
//! digits are the magnitude.
//!
//! Sources (read with the search tool; no code or text copied), named per row in
//! [`QUANTITIES`] by key:
//! - `A.1`: DL/T 645-2007 Table A.1 (电能量数据标识编码表), as transcribed on
//!   hwhale.com/article/138066 ("DLT645-2007 规约 电表 报文解析", worked frames for
//!   00010000 and 00020000 in kWh, `XXXXXX.XX`) and 553668.com/manong/786292.html
//!   (00010000 read and answered as 1206.42 kWh);
//! - `A.3`: DL/T 645-2007 Table A.3 (变量数据标识编码表): the same formats (`XXX.X` V,
//!   `XXX.XXX` A, `XX.XXXX` kW/kvar/kVA, `X.XXX` power factor) are those Table A.4 lists
//!   for the values captured in an event record, transcribed at
//!   toolkit.eoiot.cn/documentation/appendix-A-4; worked frames for 02010100 (100.1 V) on
//!   hwhale.com/article/138066; the 0201FF00 voltage block on mbb.eet-china.com
//!   (forum topic 114707); every A.3 row's format (02800002 `XX.XX` Hz and 02050000
//!   `XX.XXXX` kVA included) also matches the table of the open-source `dlt645` package
//!   (PyPI 3.2.0, `config/variable_types.py`), the interop peer of `tests/pydlt645.rs`.
//!
//! Identifiers outside this table are not read: a wrong format would turn a meter's
//! answer into a plausible but wrong number, which is worse than none.

/// One readable quantity.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Quantity {
    /// The point name used in config and payloads.
    pub name: &'static str,
    /// DI3 DI2 DI1 DI0 as one number.
    pub id: u32,
    /// Value bytes in the answer.
    pub bytes: usize,
    /// Digits after the decimal point.
    pub decimals: u32,
    /// Whether the top bit is a sign.
    pub signed: bool,
    /// Engineering unit, `""` for none.
    pub unit: &'static str,
    /// Where the row comes from (see the module doc).
    pub source: &'static str,
}

const fn q(
    name: &'static str,
    id: u32,
    bytes: usize,
    decimals: u32,
    signed: bool,
    unit: &'static str,
    source: &'static str,
) -> Quantity {
    Quantity {
        name,
        id,
        bytes,
        decimals,
        signed,
        unit,
        source,
    }
}

/// Every quantity the driver can read.
pub const QUANTITIES: &[Quantity] = &[
    q(
        "energy_active_forward_total",
        0x0001_0000,
        4,
        2,
        false,
        "kWh",
        "A.1",
    ),
    q(
        "energy_active_reverse_total",
        0x0002_0000,
        4,
        2,
        false,
        "kWh",
        "A.1",
    ),
    q("voltage_a", 0x0201_0100, 2, 1, false, "V", "A.3"),
    q("voltage_b", 0x0201_0200, 2, 1, false, "V", "A.3"),
    q("voltage_c", 0x0201_0300, 2, 1, false, "V", "A.3"),
    q("current_a", 0x0202_0100, 3, 3, true, "A", "A.3"),
    q("current_b", 0x0202_0200, 3, 3, true, "A", "A.3"),
    q("current_c", 0x0202_0300, 3, 3, true, "A", "A.3"),
    q("power_active_total", 0x0203_0000, 3, 4, true, "kW", "A.3"),
    q("power_active_a", 0x0203_0100, 3, 4, true, "kW", "A.3"),
    q("power_active_b", 0x0203_0200, 3, 4, true, "kW", "A.3"),
    q("power_active_c", 0x0203_0300, 3, 4, true, "kW", "A.3"),
    q(
        "power_reactive_total",
        0x0204_0000,
        3,
        4,
        true,
        "kvar",
        "A.3",
    ),
    q(
        "power_apparent_total",
        0x0205_0000,
        3,
        4,
        true,
        "kVA",
        "A.3",
    ),
    q("power_factor_total", 0x0206_0000, 2, 3, true, "", "A.3"),
    q("power_factor_a", 0x0206_0100, 2, 3, true, "", "A.3"),
    q("power_factor_b", 0x0206_0200, 2, 3, true, "", "A.3"),
    q("power_factor_c", 0x0206_0300, 2, 3, true, "", "A.3"),
    q("frequency", 0x0280_0002, 2, 2, false, "Hz", "A.3"),
];

/// What a meter is read for when its config names no points: energy and power.
pub const DEFAULT_POINTS: [&str; 2] = ["energy_active_forward_total", "power_active_total"];

/// The quantity called `name`.
pub fn by_name(name: &str) -> Option<&'static Quantity> {
    QUANTITIES.iter().find(|q| q.name == name)
}

/// The quantity with identifier `id`.
pub fn by_id(id: u32) -> Option<&'static Quantity> {
    QUANTITIES.iter().find(|q| q.id == id)
}

/// Why value bytes are not a number of the quantity's format.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ValueError {
    /// Wrong number of bytes.
    #[error("{found} value bytes, the format has {expected}")]
    Length {
        /// Bytes received.
        found: usize,
        /// Bytes of the format.
        expected: usize,
    },
    /// A nibble above 9.
    #[error("value bytes {0:02x?} are not BCD")]
    NotBcd(Vec<u8>),
}

impl Quantity {
    /// Decodes the value bytes of an answer (offset already removed, low byte first).
    ///
    /// # Errors
    /// [`ValueError`] for a wrong length or a digit that is not BCD.
    pub fn decode(&self, bytes: &[u8]) -> Result<f64, ValueError> {
        if bytes.len() != self.bytes {
            return Err(ValueError::Length {
                found: bytes.len(),
                expected: self.bytes,
            });
        }
        let mut negative = false;
        let mut magnitude: u64 = 0;
        for (i, b) in bytes.iter().enumerate().rev() {
            let mut b = *b;
            if self.signed && i + 1 == bytes.len() {
                negative = b & 0x80 != 0;
                b &= 0x7F;
            }
            let (hi, lo) = (b >> 4, b & 0x0F);
            if hi > 9 || lo > 9 {
                return Err(ValueError::NotBcd(bytes.to_vec()));
            }
            magnitude = magnitude * 100 + u64::from(hi) * 10 + u64::from(lo);
        }
        #[allow(clippy::cast_precision_loss)] // at most 8 digits: exact in f64
        let v = magnitude as f64 / 10f64.powi(self.decimals as i32);
        Ok(if negative { -v } else { v })
    }

    /// Encodes `value` in the quantity's format (for the simulator); `None` when it does
    /// not fit.
    pub fn encode(&self, value: f64) -> Option<Vec<u8>> {
        let scaled = (value.abs() * 10f64.powi(self.decimals as i32)).round();
        let digits = 2 * self.bytes as i32;
        // with a sign bit the top digit can only be 0-7
        let limit = if self.signed {
            8.0 * 10f64.powi(digits - 1)
        } else {
            10f64.powi(digits)
        };
        if !scaled.is_finite() || scaled >= limit {
            return None;
        }
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)] // range checked
        let mut n = scaled as u64;
        let mut out = Vec::with_capacity(self.bytes);
        for _ in 0..self.bytes {
            let two = (n % 100) as u8;
            out.push(((two / 10) << 4) | (two % 10));
            n /= 100;
        }
        if self.signed
            && value < 0.0
            && let Some(top) = out.last_mut()
        {
            *top |= 0x80;
        }
        Some(out)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn names_and_ids_are_unique_and_every_row_names_a_source() {
        for (i, a) in QUANTITIES.iter().enumerate() {
            assert!(a.source == "A.1" || a.source == "A.3", "{}", a.name);
            for b in &QUANTITIES[i + 1..] {
                assert_ne!(a.name, b.name);
                assert_ne!(a.id, b.id);
            }
        }
        for p in DEFAULT_POINTS {
            assert!(by_name(p).is_some());
        }
    }

    #[test]
    fn signed_values_use_the_top_bit_and_round_trip() {
        let p = by_name("power_active_total").unwrap();
        assert_eq!(p.decode(&[0x56, 0x34, 0x92]).unwrap(), -12.3456);
        assert_eq!(p.encode(-12.3456).unwrap(), vec![0x56, 0x34, 0x92]);
        let v = by_name("voltage_a").unwrap();
        assert_eq!(v.decode(&[0x01, 0x10]).unwrap(), 100.1);
        assert!(v.decode(&[0x0A, 0x10]).is_err(), "nibble A is not BCD");
        assert!(v.decode(&[0x01]).is_err(), "short");
        assert!(v.encode(10_000.0).is_none(), "does not fit XXX.X");
    }

    proptest::proptest! {
        #[test]
        fn every_encodable_value_decodes_to_itself(i in 0usize..19, raw in -99_999_999i64..99_999_999) {
            let q = &QUANTITIES[i % QUANTITIES.len()];
            #[allow(clippy::cast_precision_loss)]
            let v = raw as f64 / 10f64.powi(q.decimals as i32);
            if let Some(bytes) = q.encode(v) {
                let back = q.decode(&bytes).unwrap();
                let expect = if q.signed { v } else { v.abs() };
                proptest::prop_assert!((back - expect).abs() < 1e-9, "{} {v} -> {back}", q.name);
            }
        }
    }
}
