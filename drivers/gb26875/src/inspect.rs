//! Human-readable decoding for the `campusgw decode gb26875 HEX` command.

use serde_json::{Value, json};

use crate::codec::{Frame, FrameError};
use crate::mapping;

/// Why a hex string could not be decoded.
#[derive(Debug, thiserror::Error)]
pub enum InspectError {
    /// Not hex: an odd number of digits or a character that is not a hex digit.
    #[error("not a hex string: {0}")]
    Hex(String),
    /// The bytes are not one valid frame.
    #[error(transparent)]
    Frame(#[from] FrameError),
}

/// Parses hex (whitespace, `:` and `-` separators and a `0x` prefix allowed).
///
/// # Errors
/// [`InspectError::Hex`] naming the offending input.
pub fn parse_hex(hex: &str) -> Result<Vec<u8>, InspectError> {
    let digits: String = hex
        .trim()
        .trim_start_matches("0x")
        .chars()
        .filter(|c| !c.is_whitespace() && *c != ':' && *c != '-')
        .collect();
    if !digits.len().is_multiple_of(2) {
        return Err(InspectError::Hex(format!(
            "odd number of digits ({})",
            digits.len()
        )));
    }
    (0..digits.len())
        .step_by(2)
        .map(|i| {
            digits
                .get(i..i + 2)
                .and_then(|p| u8::from_str_radix(p, 16).ok())
                .ok_or_else(|| InspectError::Hex(format!("bad digits at offset {i}")))
        })
        .collect()
}

/// Decodes one frame given as hex into JSON: header fields, the ADU (or the reason it does
/// not decode) and the events campusgw would journal for it.
///
/// # Errors
/// [`InspectError`] when the input is not hex or not one frame passing every check.
pub fn decode_hex_to_json(hex: &str) -> Result<Value, InspectError> {
    let bytes = parse_hex(hex)?;
    let frame = Frame::decode(&bytes)?;
    Ok(frame_to_json(&frame))
}

/// A frame as JSON (the same shape command results carry).
pub fn frame_to_json(frame: &Frame) -> Value {
    let mut v = json!({
        "serial": frame.serial,
        "version": frame.version.to_string(),
        "time": frame.time,
        "source": frame.source,
        "destination": frame.destination,
        "command": frame.command,
        "command_byte": frame.command.as_u8(),
        "adu_length": frame.data.len(),
    });
    match frame.adu() {
        Ok(Some(adu)) => {
            v["type_flag"] = json!(adu.type_flag());
            v["adu"] = serde_json::to_value(&adu).unwrap_or(Value::Null);
            v["events"] = json!(
                mapping::preview(frame, &adu)
                    .into_iter()
                    .map(|e| json!({"kind": e.kind.as_str(), "class": e.class.as_str(), "payload": e.payload}))
                    .collect::<Vec<_>>()
            );
        }
        Ok(None) => v["adu"] = Value::Null,
        Err(e) => v["adu_error"] = json!(e.to_string()),
    }
    v
}
