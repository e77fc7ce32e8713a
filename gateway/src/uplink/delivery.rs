//! The one outcome type every uplink maps its destination's answers to (DESIGN §4
//! "Outcomes", STYLE "Uplinks have a contract too"), and the pure rules that do the mapping.
//!
//! - [`Delivery::Delivered`]: the destination confirmed; the cursor may move.
//! - [`Delivery::Retry`]: link, auth, configuration or capacity trouble. The event is kept,
//!   the cursor does not move, the uplink backs off, raises `uplink.down` (class `security`,
//!   once per outage, with the [`RetryReason`]) and sends it again. A refused credential is
//!   *never* a verdict on the event: a rotated token must not discard the alarms raised
//!   until someone notices.
//! - [`Delivery::Rejected`]: the destination's explicit verdict that this one event is
//!   malformed. Only then may the cursor move past it, and only after the verdict is
//!   recorded durably (journal table `rejected`); a rejected `life_safety` or `security`
//!   event is kept, raised as `uplink.rejected` and listed for `campusgw uplink
//!   retry-rejected`.
//!
//! The rules are pure functions ([`http_answer`], [`puback_answer`], [`connack_reason`]) so
//! the retry loop of every uplink kind (webhook, MQTT, and later SIA DC-09) uses the same
//! ones.

use std::fmt;

/// What a destination said about one event or batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Delivery {
    /// The destination confirmed it: the cursor may move.
    Delivered,
    /// Link, auth or config trouble (timeouts, 401/403, not-authorized): keep it, retry,
    /// raise.
    Retry {
        /// Why, coarse enough for a metric label.
        reason: RetryReason,
    },
    /// The destination judged this one event malformed. Alarms stay kept and are raised.
    Rejected {
        /// The destination's words.
        reason: String,
    },
}

/// Why a delivery is retried: the `reason` label of `campusgw_uplink_failures_total` and
/// of `uplink.down` events.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RetryReason {
    /// TCP, DNS, dropped connections.
    Network,
    /// No answer in time (request timeout, no CONNACK).
    Timeout,
    /// The server's certificate failed verification (never accepted).
    Certificate,
    /// Other TLS failures (handshake, client certificate refused).
    Tls,
    /// Credentials or permissions refused (HTTP 401/403/407, MQTT not authorized).
    Auth,
    /// Our own configuration: an unreadable secret or certificate file, a wrong endpoint
    /// (HTTP 404), a topic the broker calls invalid, an answer we cannot interpret.
    Config,
    /// The destination asks us to slow down (HTTP 429, MQTT quota exceeded).
    Throttled,
    /// The destination failed (HTTP 5xx, MQTT unspecified or implementation error).
    Server,
    /// Connected, but the destination stopped confirming (no PUBACK within `ack_timeout`).
    Stalled,
    /// The broker refused the session for another reason (CONNACK code named in the detail).
    Refused,
    /// The journal could not be read.
    Journal,
    /// The uplink task panicked or returned unexpectedly and was restarted.
    Crashed,
}

impl RetryReason {
    /// Metric and event label.
    pub fn as_str(self) -> &'static str {
        match self {
            RetryReason::Network => "network",
            RetryReason::Timeout => "timeout",
            RetryReason::Certificate => "certificate",
            RetryReason::Tls => "tls",
            RetryReason::Auth => "auth",
            RetryReason::Config => "config",
            RetryReason::Throttled => "throttled",
            RetryReason::Server => "server",
            RetryReason::Stalled => "stalled",
            RetryReason::Refused => "refused",
            RetryReason::Journal => "journal",
            RetryReason::Crashed => "crashed",
        }
    }
}

impl fmt::Display for RetryReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An HTTP answer to a batch POST, before the batch size is taken into account.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HttpAnswer {
    /// 2xx: the whole batch is delivered.
    Delivered,
    /// Keep the batch and retry it whole.
    Retry(RetryReason),
    /// The destination refuses something in the batch as malformed (400, 422) or the
    /// batch as too large (413): split it, down to single events; only a single event
    /// still refused is [`Delivery::Rejected`].
    Split,
}

/// Maps an HTTP status to an answer. Only 400, 413 and 422 speak about the content; every
/// other non-2xx status is about the link, the credentials or the endpoint, so it is
/// retried (unknown statuses too: a wrong guess retries, it never drops).
pub fn http_answer(status: u16) -> HttpAnswer {
    match status {
        200..=299 => HttpAnswer::Delivered,
        400 | 413 | 422 => HttpAnswer::Split,
        401 | 403 | 407 => HttpAnswer::Retry(RetryReason::Auth),
        408 | 504 => HttpAnswer::Retry(RetryReason::Timeout),
        429 => HttpAnswer::Retry(RetryReason::Throttled),
        500..=599 => HttpAnswer::Retry(RetryReason::Server),
        // 404 on the endpoint itself, 405, 410, 3xx left unfollowed, ...: configuration.
        _ => HttpAnswer::Retry(RetryReason::Config),
    }
}

/// The outcome of a single event's POST (a batch of one).
pub fn http_single(status: u16, body: &str) -> Delivery {
    match http_answer(status) {
        HttpAnswer::Delivered => Delivery::Delivered,
        HttpAnswer::Retry(reason) => Delivery::Retry { reason },
        HttpAnswer::Split => Delivery::Rejected {
            reason: format!("http {status}: {body}"),
        },
    }
}

/// MQTT 5 §3.4.2.1: maps a PUBACK reason code. 0x00 success and 0x10 no matching
/// subscribers are delivered (the broker took the message); 0x99 payload format invalid is
/// the one code that judges the message itself; every other failure code (0x80
/// unspecified, 0x83 implementation specific, 0x87 not authorized, 0x90 topic name
/// invalid, 0x91 packet identifier in use, 0x97 quota exceeded, unknown codes) is link,
/// auth or configuration trouble and is retried.
pub fn puback_answer(code: u8) -> Delivery {
    let reason = match code {
        0x00 | 0x10 => return Delivery::Delivered,
        0x99 => {
            return Delivery::Rejected {
                reason: "PUBACK reason 0x99 payload format invalid".to_owned(),
            };
        }
        0x87 => RetryReason::Auth,
        0x90 => RetryReason::Config,
        0x97 => RetryReason::Throttled,
        0x91 => RetryReason::Network,
        // Codes below 0x80 other than the two successes are not defined for PUBACK:
        // treat like 0x80 rather than guess a success.
        _ => RetryReason::Server,
    };
    Delivery::Retry { reason }
}

/// MQTT 3.1.1 §3.2.2.3 and MQTT 5 §3.2.2.2: the retry reason of a CONNACK refusal. Bad
/// credentials, not authorized, banned and a bad authentication method are
/// [`RetryReason::Auth`]; the rest are [`RetryReason::Refused`]. Every refusal is retried.
pub fn connack_reason(code: u8, v5: bool) -> RetryReason {
    let auth = if v5 {
        matches!(code, 0x86 | 0x87 | 0x8A | 0x8C)
    } else {
        matches!(code, 4 | 5)
    };
    if auth {
        RetryReason::Auth
    } else {
        RetryReason::Refused
    }
}

/// Whether a rejected event of this class is kept, listed and raised (`life_safety` and
/// `security`), rather than only counted and logged.
pub fn kept_when_rejected(class: campusgw_sdk::Class) -> bool {
    class.rank() <= campusgw_sdk::Class::Security.rank()
}

/// What to do with a part of a batch after its answer ([`Bisect::answer`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Settle {
    /// These events (indices into the batch) are delivered.
    Delivered(std::ops::Range<usize>),
    /// This one event is rejected.
    Rejected(usize),
    /// The part was split; post the next part.
    Split,
    /// Retry the remaining parts after back-off.
    Retry(RetryReason),
}

/// Bisection of a refused batch: a 400/413/422 on several events splits the part in
/// halves until every refused part is a single event, so the good events of a batch are
/// delivered and only the event the destination refuses on its own is rejected. Parts are
/// posted in batch order.
#[derive(Debug, Clone)]
pub struct Bisect {
    parts: std::collections::VecDeque<std::ops::Range<usize>>,
}

impl Bisect {
    /// A batch of `len` events, posted whole first.
    pub fn new(len: usize) -> Bisect {
        let mut parts = std::collections::VecDeque::new();
        if len > 0 {
            parts.push_back(0..len);
        }
        Bisect { parts }
    }

    /// The part to post next; `None` when the batch is settled.
    pub fn next(&self) -> Option<std::ops::Range<usize>> {
        self.parts.front().cloned()
    }

    /// Records the answer to the part returned by [`Bisect::next`].
    pub fn answer(&mut self, a: HttpAnswer) -> Settle {
        let Some(part) = self.parts.front().cloned() else {
            return Settle::Split;
        };
        match a {
            HttpAnswer::Delivered => {
                self.parts.pop_front();
                Settle::Delivered(part)
            }
            HttpAnswer::Retry(r) => Settle::Retry(r),
            HttpAnswer::Split if part.len() == 1 => {
                self.parts.pop_front();
                Settle::Rejected(part.start)
            }
            HttpAnswer::Split => {
                self.parts.pop_front();
                let mid = part.start + part.len() / 2;
                self.parts.push_front(mid..part.end);
                self.parts.push_front(part.start..mid);
                Settle::Split
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_statuses_map_to_delivered_retry_or_split() {
        use HttpAnswer::*;
        use RetryReason::*;
        let table: &[(u16, HttpAnswer)] = &[
            (200, Delivered),
            (201, Delivered),
            (204, Delivered),
            (400, Split),
            (413, Split),
            (422, Split),
            (401, Retry(Auth)),
            (403, Retry(Auth)),
            (407, Retry(Auth)),
            (404, Retry(Config)),
            (405, Retry(Config)),
            (410, Retry(Config)),
            (302, Retry(Config)),
            (408, Retry(Timeout)),
            (429, Retry(Throttled)),
            (500, Retry(Server)),
            (502, Retry(Server)),
            (503, Retry(Server)),
            (504, Retry(Timeout)),
            (999, Retry(Config)),
        ];
        for (status, want) in table {
            assert_eq!(http_answer(*status), *want, "status {status}");
        }
    }

    #[test]
    fn a_single_event_is_rejected_only_for_400_413_and_422() {
        for s in [400, 413, 422] {
            assert!(
                matches!(http_single(s, "bad"), Delivery::Rejected { reason } if reason.contains(&s.to_string())),
                "{s}"
            );
        }
        for s in [401, 403, 404, 407, 408, 429, 500, 503] {
            assert!(matches!(http_single(s, ""), Delivery::Retry { .. }), "{s}");
        }
        assert_eq!(http_single(200, ""), Delivery::Delivered);
    }

    #[test]
    fn puback_codes_reject_only_payload_format_invalid() {
        use RetryReason::*;
        let retry = |reason| Delivery::Retry { reason };
        let table: &[(u8, Delivery)] = &[
            (0x00, Delivery::Delivered),
            (0x10, Delivery::Delivered),
            (0x80, retry(Server)),
            (0x83, retry(Server)),
            (0x87, retry(Auth)),
            (0x90, retry(Config)),
            (0x91, retry(Network)),
            (0x97, retry(Throttled)),
            (0x05, retry(Server)),
            (0xFE, retry(Server)),
        ];
        for (code, want) in table {
            assert_eq!(puback_answer(*code), *want, "code 0x{code:02x}");
        }
        assert!(matches!(puback_answer(0x99), Delivery::Rejected { .. }));
    }

    #[test]
    fn connack_credential_refusals_are_auth_and_the_rest_refused() {
        let table: &[(u8, bool, RetryReason)] = &[
            (4, false, RetryReason::Auth),
            (5, false, RetryReason::Auth),
            (2, false, RetryReason::Refused),
            (3, false, RetryReason::Refused),
            (0x86, true, RetryReason::Auth),
            (0x87, true, RetryReason::Auth),
            (0x8A, true, RetryReason::Auth),
            (0x8C, true, RetryReason::Auth),
            (0x85, true, RetryReason::Refused),
            (0x88, true, RetryReason::Refused),
        ];
        for (code, v5, want) in table {
            assert_eq!(connack_reason(*code, *v5), *want, "code {code} v5 {v5}");
        }
    }

    #[test]
    fn only_life_safety_and_security_rejections_are_kept() {
        use campusgw_sdk::Class;
        assert!(kept_when_rejected(Class::LifeSafety));
        assert!(kept_when_rejected(Class::Security));
        assert!(!kept_when_rejected(Class::Operations));
        assert!(!kept_when_rejected(Class::Business));
        assert!(!kept_when_rejected(Class::Telemetry));
    }

    /// Plays a destination that refuses (400) any part containing a bad index.
    fn bisect_against(len: usize, bad: &[usize]) -> (Vec<usize>, Vec<usize>, usize) {
        let mut b = Bisect::new(len);
        let (mut delivered, mut rejected, mut posts) = (Vec::new(), Vec::new(), 0);
        while let Some(part) = b.next() {
            posts += 1;
            let a = if part.clone().any(|i| bad.contains(&i)) {
                http_answer(400)
            } else {
                http_answer(200)
            };
            match b.answer(a) {
                Settle::Delivered(r) => delivered.extend(r),
                Settle::Rejected(i) => rejected.push(i),
                Settle::Split => {}
                Settle::Retry(r) => panic!("unexpected retry {r}"),
            }
        }
        (delivered, rejected, posts)
    }

    #[test]
    fn bisecting_a_refused_batch_delivers_the_good_events_and_rejects_only_the_bad_one() {
        let (d, r, posts) = bisect_against(5, &[3]);
        assert_eq!(d, vec![0, 1, 2, 4]);
        assert_eq!(r, vec![3]);
        // [0..5] [0..2] [2..5] [2..3] [3..5] [3..4] [4..5]
        assert_eq!(posts, 7);
        let (d, r, _) = bisect_against(8, &[0, 7]);
        assert_eq!(d, (1..7).collect::<Vec<_>>());
        assert_eq!(r, vec![0, 7]);
        let (d, r, posts) = bisect_against(1, &[0]);
        assert_eq!((d, r, posts), (vec![], vec![0], 1));
        let (d, r, posts) = bisect_against(4, &[]);
        assert_eq!((d, r, posts), (vec![0, 1, 2, 3], vec![], 1));
    }

    #[test]
    fn a_retry_during_bisection_keeps_the_part() {
        let mut b = Bisect::new(4);
        assert_eq!(b.answer(http_answer(400)), Settle::Split);
        assert_eq!(b.next(), Some(0..2));
        assert_eq!(b.answer(http_answer(401)), Settle::Retry(RetryReason::Auth));
        assert_eq!(b.next(), Some(0..2));
        assert_eq!(b.answer(http_answer(200)), Settle::Delivered(0..2));
        assert_eq!(b.next(), Some(2..4));
    }
}
