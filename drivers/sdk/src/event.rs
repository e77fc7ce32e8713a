//! The event model (DESIGN §3), defined in `campusgw-model` and re-exported here under its
//! historical path so drivers and the gateway keep writing `campusgw_sdk::event::…`.

pub use campusgw_model::event::*;
