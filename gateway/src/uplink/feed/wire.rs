//! An event as the uplinks send it: its JSON form, kept as bytes from the journal row.
//!
//! The feed used to parse every row into an [`Event`] (a `serde_json::Value` tree for the
//! payload) and the transport serialized it again. A `sensor.readings` batch of 1,000
//! points is ~12 KB of JSON and ~90 KB as a tree, so at 100,000 points/s that parse and
//! re-serialization were most of the uplink's CPU and memory (bench/README.md, issue 9).
//! Now a row is decoded with its payload borrowed as raw JSON (still checked to be valid
//! JSON and every other field to be well formed, so a corrupt row is still skipped and
//! quarantined), and written out once with its journal seq: the bytes a transport sends.
//!
//! [`Stored`] mirrors [`Event`]'s fields and order; the test
//! `a_wire_event_is_byte_for_byte_the_serialized_event` fails if they drift apart.

use campusgw_sdk::{Class, Event, EventId, Kind, Location, Source};
use chrono::{DateTime, Utc};
use rusqlite::types::ValueRef;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::journal::JournalError;

/// An event ready to send: the few fields the transports route by, and its JSON form.
#[derive(Debug, Clone, PartialEq)]
pub struct WireEvent {
    /// The event id (idempotency key downstream).
    pub id: EventId,
    /// Its journal seq.
    pub seq: u64,
    /// Its class.
    pub class: Class,
    /// Its kind.
    pub kind: Kind,
    /// The event's JSON form (docs/event-schema.md), seq included: what is published.
    pub json: Box<[u8]>,
}

/// [`Event`] with the payload left as raw JSON: the same fields, in the same order.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Stored<'a> {
    schema: u32,
    id: EventId,
    seq: u64,
    occurred_at: Option<DateTime<Utc>>,
    received_at: DateTime<Utc>,
    source: Source,
    kind: Kind,
    class: Class,
    location: Location,
    #[serde(borrow)]
    payload: &'a RawValue,
    origin_ref: Option<String>,
}

impl WireEvent {
    /// Decodes a stored journal body (TEXT, or BLOB after a raw edit) of the row at `seq`.
    ///
    /// # Errors
    /// [`JournalError::Corrupt`] when the body is not an event's JSON form.
    pub fn from_row(seq: u64, body: ValueRef<'_>) -> Result<WireEvent, JournalError> {
        let corrupt = |reason: String| JournalError::Corrupt { seq, reason };
        let bytes = match body {
            ValueRef::Text(b) | ValueRef::Blob(b) => b,
            other => {
                return Err(corrupt(format!(
                    "body is {:?}, not JSON text",
                    other.data_type()
                )));
            }
        };
        let mut stored: Stored<'_> =
            serde_json::from_slice(bytes).map_err(|e| corrupt(e.to_string()))?;
        stored.seq = seq;
        let json = serde_json::to_vec(&stored).map_err(|e| corrupt(e.to_string()))?;
        Ok(WireEvent {
            id: stored.id,
            seq,
            class: stored.class,
            kind: stored.kind,
            json: json.into_boxed_slice(),
        })
    }

    /// The wire form of an event at hand (an operator-requested resend).
    pub fn from_event(e: &Event) -> WireEvent {
        WireEvent {
            id: e.id,
            seq: e.seq,
            class: e.class,
            kind: e.kind.clone(),
            // An Event always serializes (string keys, finite numbers); an empty body is
            // refused by any destination and listed as rejected, never silently lost.
            json: serde_json::to_vec(e).unwrap_or_default().into_boxed_slice(),
        }
    }
}
