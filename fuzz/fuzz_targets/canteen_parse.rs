//! Feeds arbitrary bytes to the canteen terminal protocol's parsers of `drivers/canteen`
//! (the sale request, the card keys, the card platform's change sets); nothing may panic,
//! an accepted sale has a positive amount, a transaction number in range and a card key that
//! parses again from its stored form.
#![no_main]

use campusgw_canteen::proto::{self, CardKey};
use campusgw_canteen::sync::ChangeSet;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(s) = proto::parse_sale(data) {
        assert!(s.amount_cents > 0);
        assert!(s.txn >= 1 && s.txn <= proto::MAX_TXN);
        let again = match &s.card {
            CardKey::Uid(h) => CardKey::uid(h),
            CardKey::Number(n) => CardKey::number(n),
        };
        assert_eq!(again.as_ref(), Ok(&s.card));
    }
    let _ = serde_json::from_slice::<ChangeSet>(data);
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = CardKey::uid(text);
        let _ = CardKey::number(text);
        let _ = proto::terminal_id(text);
    }
});
