//! Pure value conversions and read planning: no I/O, never panics.
//!
//! Wire notes (Modbus Application Protocol V1.1b3):
//! - a register is a 16-bit big-endian word (§4.2); tokio-modbus hands us `u16`s already;
//! - 32-bit values span two consecutive registers; the standard leaves the word order to the
//!   device, so [`WordOrder::Big`] means "high word at the lower address" (the common
//!   Modicon layout) and [`WordOrder::Little`] the swapped one;
//! - an engineering value is `raw * scale + offset`, and writing inverts it.

use serde::{Deserialize, Serialize};

/// Modbus Application Protocol V1.1b3 §6.1/§6.2: at most 2000 coils or discrete inputs per read.
pub const MAX_READ_BITS: u16 = 2000;
/// Modbus Application Protocol V1.1b3 §6.3/§6.4: at most 125 registers per read.
pub const MAX_READ_REGISTERS: u16 = 125;

/// One of the four Modbus data tables.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Table {
    /// Read/write bits (function codes 0x01, 0x05, 0x0F).
    Coil,
    /// Read-only bits (0x02).
    DiscreteInput,
    /// Read/write 16-bit registers (0x03, 0x06, 0x10).
    HoldingRegister,
    /// Read-only 16-bit registers (0x04).
    InputRegister,
}

impl Table {
    /// Whether entries are single bits (coils, discrete inputs).
    pub fn is_bit(self) -> bool {
        matches!(self, Table::Coil | Table::DiscreteInput)
    }

    /// Whether the master may write this table (coils, holding registers).
    pub fn is_writable(self) -> bool {
        matches!(self, Table::Coil | Table::HoldingRegister)
    }

    /// The largest count one read request may ask for.
    pub fn max_read(self) -> u16 {
        if self.is_bit() {
            MAX_READ_BITS
        } else {
            MAX_READ_REGISTERS
        }
    }

    /// The snake_case name used in config and payloads.
    pub fn as_str(self) -> &'static str {
        match self {
            Table::Coil => "coil",
            Table::DiscreteInput => "discrete_input",
            Table::HoldingRegister => "holding_register",
            Table::InputRegister => "input_register",
        }
    }
}

/// How a register point's words are interpreted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ValueType {
    /// One register, unsigned.
    #[default]
    U16,
    /// One register, two's complement.
    I16,
    /// Two registers, unsigned.
    U32,
    /// Two registers, two's complement.
    I32,
    /// Two registers, IEEE 754 single precision.
    F32,
}

impl ValueType {
    /// How many registers the value occupies.
    pub fn width(self) -> u16 {
        match self {
            ValueType::U16 | ValueType::I16 => 1,
            ValueType::U32 | ValueType::I32 | ValueType::F32 => 2,
        }
    }
}

/// Order of the two words of a 32-bit value.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WordOrder {
    /// High word first (at the lower address).
    #[default]
    Big,
    /// Low word first.
    Little,
}

/// Everything needed to turn register words into an engineering value and back.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RegisterFormat {
    /// Interpretation of the words.
    pub value_type: ValueType,
    /// Word order for 32-bit types.
    pub word_order: WordOrder,
    /// Multiplier applied to the raw value.
    pub scale: f64,
    /// Added after scaling.
    pub offset: f64,
}

impl Default for RegisterFormat {
    fn default() -> Self {
        RegisterFormat {
            value_type: ValueType::U16,
            word_order: WordOrder::Big,
            scale: 1.0,
            offset: 0.0,
        }
    }
}

/// A decoded register value.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Reading {
    /// The raw number the device holds (integer types exactly, `f32` widened).
    pub raw: f64,
    /// `raw * scale + offset`.
    pub value: f64,
}

/// Why a value cannot be written in a register format.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum EncodeError {
    /// NaN or infinite.
    #[error("value {0} is not a finite number")]
    NotFinite(f64),
    /// After scaling the value does not fit the register type.
    #[error("value {value} is raw {raw} after scale/offset, outside the {ty:?} range")]
    OutOfRange {
        /// The engineering value asked for.
        value: f64,
        /// `(value - offset) / scale`.
        raw: f64,
        /// The register type.
        ty: ValueType,
    },
}

impl RegisterFormat {
    /// Decodes `words` (exactly [`ValueType::width`] of them). `None` for a wrong word count
    /// or a non-finite float, which has no JSON form.
    pub fn decode(&self, words: &[u16]) -> Option<Reading> {
        let raw = match (self.value_type, words) {
            (ValueType::U16, [w]) => f64::from(*w),
            (ValueType::I16, [w]) => f64::from(i16::from_ne_bytes(w.to_ne_bytes())),
            (ValueType::U32, [a, b]) => f64::from(self.join(*a, *b)),
            (ValueType::I32, [a, b]) => {
                f64::from(i32::from_ne_bytes(self.join(*a, *b).to_ne_bytes()))
            }
            (ValueType::F32, [a, b]) => f64::from(f32::from_bits(self.join(*a, *b))),
            _ => return None,
        };
        let value = tidy(raw * self.scale + self.offset);
        (raw.is_finite() && value.is_finite()).then_some(Reading { raw, value })
    }

    /// Encodes an engineering value into register words, inverting scale and offset;
    /// integer types round to the nearest raw value.
    ///
    /// # Errors
    /// [`EncodeError`] when the value is not finite or does not fit the type.
    pub fn encode(&self, value: f64) -> Result<Vec<u16>, EncodeError> {
        if !value.is_finite() {
            return Err(EncodeError::NotFinite(value));
        }
        let raw = (value - self.offset) / self.scale;
        let ty = self.value_type;
        let range = EncodeError::OutOfRange { value, raw, ty };
        let fits = |lo: f64, hi: f64| raw.is_finite() && raw.round() >= lo && raw.round() <= hi;
        // The casts below are exact: each is guarded by `fits` for its type's range.
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        let words = match ty {
            ValueType::U16 if fits(0.0, 65535.0) => vec![raw.round() as u16],
            ValueType::I16 if fits(-32768.0, 32767.0) => vec![(raw.round() as i16).cast_unsigned()],
            ValueType::U32 if fits(0.0, 4_294_967_295.0) => self.split(raw.round() as u32),
            ValueType::I32 if fits(-2_147_483_648.0, 2_147_483_647.0) => {
                self.split((raw.round() as i32).cast_unsigned())
            }
            ValueType::F32 if raw.is_finite() && raw.abs() <= f64::from(f32::MAX) => {
                self.split((raw as f32).to_bits())
            }
            _ => return Err(range),
        };
        Ok(words)
    }

    fn join(&self, first: u16, second: u16) -> u32 {
        let (hi, lo) = match self.word_order {
            WordOrder::Big => (first, second),
            WordOrder::Little => (second, first),
        };
        (u32::from(hi) << 16) | u32::from(lo)
    }

    fn split(&self, v: u32) -> Vec<u16> {
        let hi = (v >> 16) as u16;
        let lo = (v & 0xFFFF) as u16;
        match self.word_order {
            WordOrder::Big => vec![hi, lo],
            WordOrder::Little => vec![lo, hi],
        }
    }
}

/// Drops the binary noise of decimal scales (`215 * 0.1` is `21.500000000000004`) so
/// readings print as people expect; values beyond 1e9 are left alone.
fn tidy(v: f64) -> f64 {
    if v.abs() < 1e9 {
        let t = (v * 1e6).round() / 1e6;
        if (t - v).abs() < 1e-9 * v.abs().max(1.0) {
            return t;
        }
    }
    v
}

/// Where one point sits, for read planning.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Span {
    /// Its table.
    pub table: Table,
    /// First address.
    pub address: u16,
    /// Number of bits or registers (1 or 2).
    pub width: u16,
}

/// One read request covering several points.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadBlock {
    /// Table to read.
    pub table: Table,
    /// First address.
    pub start: u16,
    /// Number of bits or registers, at most [`Table::max_read`].
    pub count: u16,
    /// Indices (into the planned spans) of the points inside this block.
    pub members: Vec<usize>,
}

/// Coalesces spans of the same table whose addresses touch or overlap into as few reads
/// as the protocol's maximum counts allow. Gaps are never bridged: reading an unmapped
/// address makes many devices answer "illegal data address" for the whole block.
/// Spans must not run past address 65535 (validation guarantees it); any that do are
/// left out.
pub fn plan_reads(spans: &[Span]) -> Vec<ReadBlock> {
    let mut order: Vec<usize> = (0..spans.len())
        .filter(|&i| u32::from(spans[i].address) + u32::from(spans[i].width) <= 65536)
        .collect();
    order.sort_by_key(|&i| (spans[i].table, spans[i].address, spans[i].width));
    let mut blocks: Vec<ReadBlock> = Vec::new();
    for i in order {
        let s = spans[i];
        let end = u32::from(s.address) + u32::from(s.width);
        if let Some(b) = blocks.last_mut().filter(|b| b.table == s.table) {
            let b_end = u32::from(b.start) + u32::from(b.count);
            let new_end = end.max(b_end);
            if u32::from(s.address) <= b_end
                && new_end - u32::from(b.start) <= u32::from(s.table.max_read())
            {
                b.count = u16::try_from(new_end - u32::from(b.start)).unwrap_or(b.count);
                b.members.push(i);
                continue;
            }
        }
        blocks.push(ReadBlock {
            table: s.table,
            start: s.address,
            count: s.width,
            members: vec![i],
        });
    }
    blocks
}

#[cfg(test)]
mod tests;
