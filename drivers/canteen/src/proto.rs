//! The canteen terminal protocol (docs/canteen-protocol.md): JSON bodies, pure and bounded.
//!
//! Hand-written validation on top of `serde_json`: the shapes are ours, so serde does the
//! parsing and this module only turns the parsed shape into values that cannot be wrong
//! (a card key, a positive amount in integer cents, a transaction number from 1).
//! Nothing here does I/O, and no input can make it panic (fuzzed: `fuzz/canteen_parse`).

use serde::{Deserialize, Serialize};

/// Largest request body the server reads (protocol §2); larger is refused with 413.
pub const MAX_BODY: usize = 4096;

/// Largest terminal transaction number: JSON integers are exact up to 2^53 in every
/// terminal's JSON library, so the protocol stops there (§3).
pub const MAX_TXN: u64 = (1 << 53) - 1;

/// A card as the terminal read it: the ISO/IEC 14443 UID, or the printed card number.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum CardKey {
    /// ISO/IEC 14443-3 UID: 4, 7 or 10 bytes, stored as uppercase hex.
    Uid(String),
    /// The card number printed on the card (digits, 1-20).
    Number(String),
}

impl CardKey {
    /// Parses a UID given as hex (4, 7 or 10 bytes; `:` / `-` / space separators allowed).
    ///
    /// # Errors
    /// A message naming what is wrong.
    pub fn uid(s: &str) -> Result<CardKey, String> {
        let hex: String = s
            .chars()
            .filter(|c| !matches!(c, ':' | '-' | ' '))
            .map(|c| c.to_ascii_uppercase())
            .collect();
        if !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err("card_uid must be hexadecimal".into());
        }
        // ISO/IEC 14443-3 §6.5.4: single, double or triple size UIDs.
        if !matches!(hex.len(), 8 | 14 | 20) {
            return Err("card_uid must be 4, 7 or 10 bytes (8, 14 or 20 hex digits)".into());
        }
        Ok(CardKey::Uid(hex))
    }

    /// Parses a printed card number.
    ///
    /// # Errors
    /// A message naming what is wrong.
    pub fn number(s: &str) -> Result<CardKey, String> {
        if s.is_empty() || s.len() > 20 || !s.bytes().all(|b| b.is_ascii_digit()) {
            return Err("card_no must be 1-20 digits".into());
        }
        Ok(CardKey::Number(s.to_owned()))
    }

    /// The key as stored in the ledger: `uid:04A1B2C3` or `no:20230001`.
    pub fn stored(&self) -> String {
        match self {
            CardKey::Uid(h) => format!("uid:{h}"),
            CardKey::Number(n) => format!("no:{n}"),
        }
    }

    /// Reads a card from the `card_uid` / `card_no` pair: exactly one must be given.
    ///
    /// # Errors
    /// A message naming what is wrong.
    pub fn from_pair(uid: Option<&str>, no: Option<&str>) -> Result<CardKey, String> {
        match (uid, no) {
            (Some(u), None) => CardKey::uid(u),
            (None, Some(n)) => CardKey::number(n),
            (Some(_), Some(_)) => Err("give card_uid or card_no, not both".into()),
            (None, None) => Err("card_uid or card_no is required".into()),
        }
    }
}

/// A terminal id: 1-64 of `A-Z a-z 0-9 _ - .` (the gateway's device id alphabet).
///
/// # Errors
/// A message naming what is wrong.
pub fn terminal_id(s: &str) -> Result<String, String> {
    let ok = !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'));
    if ok {
        Ok(s.to_owned())
    } else {
        Err("terminal must be 1-64 of A-Z a-z 0-9 _ - .".into())
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSale {
    terminal: String,
    txn: u64,
    card_uid: Option<String>,
    card_no: Option<String>,
    amount_cents: i64,
    #[serde(default)]
    terminal_time: Option<chrono::DateTime<chrono::Utc>>,
}

/// `POST /v1/sale`, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SaleRequest {
    /// The terminal id.
    pub terminal: String,
    /// The terminal's transaction number (1..=[`MAX_TXN`], increasing per terminal).
    pub txn: u64,
    /// The card presented.
    pub card: CardKey,
    /// The price, in cents (fen). Checked against the configured maximum by the server.
    pub amount_cents: i64,
    /// The terminal's clock, informational.
    pub terminal_time: Option<chrono::DateTime<chrono::Utc>>,
}

/// Why a request body was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProtoError {
    /// Not JSON, wrong shape, unknown field, bad card or terminal id (`bad_request`).
    #[error("bad request: {0}")]
    BadRequest(String),
    /// Zero, negative or not a whole number of cents (`amount_invalid`).
    #[error("amount_cents must be a positive integer, got {0}")]
    Amount(i64),
}

/// Parses and validates a sale request body.
///
/// # Errors
/// [`ProtoError`] naming the problem.
pub fn parse_sale(body: &[u8]) -> Result<SaleRequest, ProtoError> {
    if body.len() > MAX_BODY {
        return Err(ProtoError::BadRequest(format!(
            "body over {MAX_BODY} bytes"
        )));
    }
    let raw: RawSale = serde_json::from_slice(body).map_err(|e| {
        // serde's message may quote input: cut it so a log line stays short.
        let mut m = e.to_string();
        m.truncate(160);
        ProtoError::BadRequest(m)
    })?;
    let terminal = terminal_id(&raw.terminal).map_err(ProtoError::BadRequest)?;
    if raw.txn == 0 || raw.txn > MAX_TXN {
        return Err(ProtoError::BadRequest(format!("txn must be 1..={MAX_TXN}")));
    }
    let card = CardKey::from_pair(raw.card_uid.as_deref(), raw.card_no.as_deref())
        .map_err(ProtoError::BadRequest)?;
    if raw.amount_cents <= 0 {
        return Err(ProtoError::Amount(raw.amount_cents));
    }
    Ok(SaleRequest {
        terminal,
        txn: raw.txn,
        card,
        amount_cents: raw.amount_cents,
        terminal_time: raw.terminal_time,
    })
}

/// Why a sale was declined (a final answer, like an approval).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeclineReason {
    /// No such card in the synced list.
    CardUnknown,
    /// The card is on the lost-card blacklist.
    CardLost,
    /// The account is frozen or closed.
    AccountBlocked,
    /// Not within a configured meal period.
    OutsideMealPeriod,
    /// The balance does not cover the amount.
    InsufficientFunds,
    /// The account's daily limit would be exceeded.
    DailyLimit,
    /// The meal period's limit would be exceeded.
    MealLimit,
}

impl DeclineReason {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            DeclineReason::CardUnknown => "card_unknown",
            DeclineReason::CardLost => "card_lost",
            DeclineReason::AccountBlocked => "account_blocked",
            DeclineReason::OutsideMealPeriod => "outside_meal_period",
            DeclineReason::InsufficientFunds => "insufficient_funds",
            DeclineReason::DailyLimit => "daily_limit",
            DeclineReason::MealLimit => "meal_limit",
        }
    }

    /// Parses the wire name.
    pub fn parse(s: &str) -> Option<DeclineReason> {
        serde_json::from_value(serde_json::Value::String(s.to_owned())).ok()
    }
}

/// The final answer to a sale, the same for every resend of it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SaleAnswer {
    /// `approved` or `declined`.
    pub result: String,
    /// Echo of the terminal.
    pub terminal: String,
    /// Echo of the transaction number.
    pub txn: u64,
    /// Why, when declined.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub reason: Option<DeclineReason>,
    /// The account charged (approved) or looked at.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub account: Option<String>,
    /// The balance after this sale, in cents.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub balance_cents: Option<i64>,
    /// The journal event id of the record (the platform's de-duplication key).
    pub record_id: String,
    /// The meal period the sale fell in.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub meal: Option<String>,
}

impl SaleAnswer {
    /// Whether the sale was approved.
    pub fn approved(&self) -> bool {
        self.result == "approved"
    }
}

/// The protocol's error codes (§5), each with its HTTP status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    /// 400: not JSON / wrong shape.
    BadRequest,
    /// 400: zero, negative or over the configured maximum.
    AmountInvalid,
    /// 401: missing or wrong token.
    Unauthorized,
    /// 403: the terminal is not configured.
    UnknownTerminal,
    /// 409: a transaction number at or below one already used, not a resend of it.
    TxnReplayed,
    /// 409: the transaction number was used for a different card or amount.
    TxnConflict,
    /// 413: body too large.
    TooLarge,
    /// 503: the ledger or journal cannot store the sale now; resend the same request.
    Unavailable,
}

impl ErrorCode {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::BadRequest => "bad_request",
            ErrorCode::AmountInvalid => "amount_invalid",
            ErrorCode::Unauthorized => "unauthorized",
            ErrorCode::UnknownTerminal => "unknown_terminal",
            ErrorCode::TxnReplayed => "txn_replayed",
            ErrorCode::TxnConflict => "txn_conflict",
            ErrorCode::TooLarge => "too_large",
            ErrorCode::Unavailable => "unavailable",
        }
    }

    /// The HTTP status.
    pub fn status(self) -> u16 {
        match self {
            ErrorCode::BadRequest | ErrorCode::AmountInvalid => 400,
            ErrorCode::Unauthorized => 401,
            ErrorCode::UnknownTerminal => 403,
            ErrorCode::TxnReplayed | ErrorCode::TxnConflict => 409,
            ErrorCode::TooLarge => 413,
            ErrorCode::Unavailable => 503,
        }
    }

    /// Whether a refusal with this code is a security event (someone is sending what no
    /// correct terminal sends); `unavailable` is the gateway's own trouble.
    pub fn is_security(self) -> bool {
        !matches!(self, ErrorCode::Unavailable)
    }
}

/// The error body: `{"error": "<code>", "message": "..."}`.
pub fn error_body(code: ErrorCode, message: &str) -> String {
    serde_json::json!({ "error": code.as_str(), "message": message }).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sale_by_uid_parses_and_the_uid_is_normalised() {
        let s = parse_sale(
            br#"{"terminal":"t01","txn":7,"card_uid":"04:a1:b2:c3:d4:e5:f6","amount_cents":850}"#,
        )
        .unwrap();
        assert_eq!(s.card, CardKey::Uid("04A1B2C3D4E5F6".into()));
        assert_eq!(s.card.stored(), "uid:04A1B2C3D4E5F6");
        assert_eq!((s.txn, s.amount_cents), (7, 850));
    }

    #[test]
    fn bad_requests_are_refused_with_their_code() {
        for (body, amount) in [
            (&br#"{"terminal":"t01","txn":1,"card_no":"1","amount_cents":-5}"#[..], true),
            (br#"{"terminal":"t01","txn":1,"card_no":"1","amount_cents":0}"#, true),
            (br#"{"terminal":"t01","txn":1,"card_no":"1","amount_cents":1.5}"#, false),
            (br#"{"terminal":"t01","txn":0,"card_no":"1","amount_cents":5}"#, false),
            (br#"{"terminal":"t 1","txn":1,"card_no":"1","amount_cents":5}"#, false),
            (br#"{"terminal":"t01","txn":1,"amount_cents":5}"#, false),
            (br#"{"terminal":"t01","txn":1,"card_no":"1","card_uid":"01020304","amount_cents":5}"#, false),
            (br#"{"terminal":"t01","txn":1,"card_uid":"010203","amount_cents":5}"#, false),
            (br#"{"terminal":"t01","txn":1,"card_no":"12a","amount_cents":5}"#, false),
            (br#"{"terminal":"t01","txn":1,"card_no":"1","amount_cents":5,"x":1}"#, false),
            (br#"{"terminal":"t01","#, false),
            (b"\xff\xfe", false),
        ] {
            let e = parse_sale(body).unwrap_err();
            assert_eq!(matches!(e, ProtoError::Amount(_)), amount, "{e:?}");
        }
    }

    #[test]
    fn answers_round_trip_and_declines_carry_their_reason() {
        let a = SaleAnswer {
            result: "declined".into(),
            terminal: "t01".into(),
            txn: 3,
            reason: Some(DeclineReason::MealLimit),
            account: Some("S1".into()),
            balance_cents: Some(120),
            record_id: "x".into(),
            meal: Some("lunch".into()),
        };
        let j = serde_json::to_string(&a).unwrap();
        assert!(j.contains(r#""reason":"meal_limit""#), "{j}");
        assert_eq!(serde_json::from_str::<SaleAnswer>(&j).unwrap(), a);
        assert_eq!(
            DeclineReason::parse("card_lost"),
            Some(DeclineReason::CardLost)
        );
    }

    proptest::proptest! {
        #[test]
        fn no_input_panics_the_parser(b in proptest::collection::vec(proptest::num::u8::ANY, 0..256)) {
            let _ = parse_sale(&b);
        }
    }
}
