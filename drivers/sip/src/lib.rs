//! The SIP pieces campusgw's SIP speakers (`campusgw-paging`) and the GB/T 28181 police
//! video platform uplink (`campusgw-gb28181`) share: a pure message codec ([`msg`], RFC 3261
//! §7) and digest authentication ([`digest`], RFC 3261 §22, RFC 2617 with MD5).
//!
//! # Why hand-written and not `rsipstack`
//! `rsipstack` 0.7 (PROTOCOLS §5) is a full stack whose default features pull in rustls,
//! WebSocket and DNS SRV crates this workspace does not use. Both users here talk UDP to a
//! configured peer and need a handful of methods; the codec is small enough to read in
//! one sitting, is tested against `sipp` (paging's and gb28181's tests) and fuzzed
//! (`fuzz/fuzz_targets/sip_parse.rs`, `gb28181_parse.rs`). The transaction logic stays
//! with each user, because it differs (INVITE client for paging, REGISTER/MESSAGE client
//! and MESSAGE server for GB/T 28181).
//!
//! Bodies are bytes: GB/T 28181 platforms send MANSCDP XML in GB2312; the start line and
//! headers must be UTF-8 (they are ASCII in practice).

pub mod digest;
pub mod msg;
