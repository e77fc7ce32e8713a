//! Simulated canteen terminals: the protocol's client side, at lunch-rush rates, with the
//! retries and duplicate sends real terminals make, and misbehaviour (garbage, half
//! requests, wrong tokens, replays, absurd amounts).
//!
//! Plain HTTP/1.1 over TCP with `Connection: close`, written by hand: the simulator runs
//! against a loopback listener (where the driver allows HTTP) and must be able to send
//! bytes no HTTP client library would (half requests, junk).

pub mod platform;

use std::net::SocketAddr;
use std::time::Duration;

use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::proto::{CardKey, SaleAnswer};

/// The hex SHA-256 of a token, as `token_sha256` in the config wants it.
pub fn token_hash(token: &str) -> String {
    Sha256::digest(token.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The raw SHA-256 of a token.
pub fn token_hash_bytes(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// Sends raw bytes, half-closes, reads the whole answer (empty if the server closed).
///
/// # Errors
/// Connection errors.
pub async fn send_raw(addr: SocketAddr, bytes: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut s = TcpStream::connect(addr).await?;
    s.write_all(bytes).await?;
    s.shutdown().await?;
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(30), s.read_to_end(&mut out)).await;
    Ok(out)
}

/// POSTs `body` to `path`; returns the status and body.
///
/// # Errors
/// Connection errors or an answer that is not HTTP.
pub async fn post(
    addr: SocketAddr,
    path: &str,
    token: Option<&str>,
    body: &[u8],
) -> std::io::Result<(u16, String)> {
    let req = request_bytes(addr, path, token, body);
    // No half-close: the server answers, then closes (`Connection: close`).
    let mut s = TcpStream::connect(addr).await?;
    s.write_all(&req).await?;
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(30), s.read_to_end(&mut out))
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "no answer in 30 s"))??;
    parse_answer(&out)
}

/// The bytes of a `POST` with `Connection: close` (also for tests that bring their own
/// transport, e.g. TLS).
pub fn request_bytes(addr: SocketAddr, path: &str, token: Option<&str>, body: &[u8]) -> Vec<u8> {
    let auth = token.map_or_else(String::new, |t| format!("Authorization: Bearer {t}\r\n"));
    let mut req = format!(
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\n{auth}Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    req.extend_from_slice(body);
    req
}

/// Splits an HTTP/1.1 answer into status and body.
///
/// # Errors
/// `InvalidData` when it is not one.
pub fn parse_answer(out: &[u8]) -> std::io::Result<(u16, String)> {
    let text = String::from_utf8_lossy(out);
    let bad = || std::io::Error::new(std::io::ErrorKind::InvalidData, "not an HTTP answer");
    let status = text
        .strip_prefix("HTTP/1.1 ")
        .and_then(|r| r.get(..3))
        .and_then(|c| c.parse().ok())
        .ok_or_else(bad)?;
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    Ok((status, body))
}

/// The body of a sale request.
pub fn sale_body(terminal: &str, txn: u64, card: &CardKey, amount_cents: i64) -> Vec<u8> {
    let (k, v) = match card {
        CardKey::Uid(h) => ("card_uid", h),
        CardKey::Number(n) => ("card_no", n),
    };
    serde_json::json!({ "terminal": terminal, "txn": txn, k: v, "amount_cents": amount_cents })
        .to_string()
        .into_bytes()
}

/// A simulated terminal.
#[derive(Debug, Clone)]
pub struct SimTerminal {
    /// The gateway.
    pub addr: SocketAddr,
    /// Its id.
    pub id: String,
    /// Its token.
    pub token: String,
    /// The next transaction number.
    pub next_txn: u64,
    /// Send every n-th sale twice (0: never), as a terminal does that lost an answer.
    pub duplicate_every: u64,
    /// How long to keep resending one sale before giving up.
    pub give_up_after: Duration,
}

/// What one sale came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sold {
    /// The final answer.
    pub answer: SaleAnswer,
    /// Requests sent for it (resends and duplicates included).
    pub sends: u32,
    /// Whether it was deliberately sent twice.
    pub duplicated: bool,
}

/// Why a sale got no final answer.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    /// No final answer before `give_up_after`.
    #[error("no final answer for txn {txn}: last {last}")]
    GaveUp {
        /// The transaction.
        txn: u64,
        /// The last thing seen.
        last: String,
    },
    /// The gateway refused the request (4xx): a bug in the caller or the gateway.
    #[error("refused {status}: {body}")]
    Refused {
        /// Status.
        status: u16,
        /// Body.
        body: String,
    },
}

impl SimTerminal {
    /// A terminal starting at transaction 1.
    pub fn new(addr: SocketAddr, id: &str, token: &str) -> SimTerminal {
        SimTerminal {
            addr,
            id: id.into(),
            token: token.into(),
            next_txn: 1,
            duplicate_every: 0,
            give_up_after: Duration::from_secs(120),
        }
    }

    /// Sells one meal: resends the same request on 503 or a broken connection until a
    /// final answer comes (a terminal never reuses or skips a number it was not answered).
    ///
    /// # Errors
    /// [`SimError`].
    pub async fn sell(&mut self, card: &CardKey, amount_cents: i64) -> Result<Sold, SimError> {
        let txn = self.next_txn;
        let body = sale_body(&self.id, txn, card, amount_cents);
        let duplicated = self.duplicate_every > 0 && txn.is_multiple_of(self.duplicate_every);
        let deadline = tokio::time::Instant::now() + self.give_up_after;
        let mut sends = 0;
        let mut last;
        let mut delay = Duration::from_millis(20);
        loop {
            sends += 1;
            match post(self.addr, "/v1/sale", Some(&self.token), &body).await {
                Ok((200, b)) => {
                    let answer: SaleAnswer =
                        serde_json::from_str(&b).map_err(|e| SimError::Refused {
                            status: 200,
                            body: format!("{e}: {b}"),
                        })?;
                    if duplicated && sends == 1 {
                        // The answer "got lost": send the very same request again.
                        continue;
                    }
                    self.next_txn += 1;
                    return Ok(Sold {
                        answer,
                        sends,
                        duplicated,
                    });
                }
                Ok((503, b)) => last = b,
                Ok((status, body)) => return Err(SimError::Refused { status, body }),
                Err(e) => last = e.to_string(),
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(SimError::GaveUp { txn, last });
            }
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(Duration::from_secs(2));
        }
    }
}

/// A lunch rush: every terminal sells `meals` meals, one after the other, to cards taken
/// round-robin from `cards` (each terminal from its own offset).
///
/// # Errors
/// The first sale that got no final answer.
pub async fn rush(
    terminals: Vec<SimTerminal>,
    cards: Vec<CardKey>,
    meals: u64,
    amount_cents: i64,
) -> Result<Vec<Sold>, SimError> {
    let cards = std::sync::Arc::new(cards);
    let mut tasks = Vec::new();
    for (n, mut t) in terminals.into_iter().enumerate() {
        let cards = cards.clone();
        tasks.push(tokio::spawn(async move {
            let mut out = Vec::new();
            for i in 0..meals {
                let idx = (n as u64 * 7919 + i) as usize % cards.len().max(1);
                out.push(t.sell(&cards[idx], amount_cents).await?);
            }
            Ok::<_, SimError>(out)
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        match t.await {
            Ok(r) => all.extend(r?),
            Err(e) => {
                return Err(SimError::GaveUp {
                    txn: 0,
                    last: e.to_string(),
                });
            }
        }
    }
    Ok(all)
}

/// The i-th card (from 1) of [`cards`].
pub fn card(i: usize) -> CardKey {
    CardKey::Uid(format!("04{i:012X}"))
}

/// `GET /v1/status`: the number of cards the gateway holds.
///
/// # Errors
/// Connection errors or an answer that is not a status.
pub async fn get_status(addr: SocketAddr) -> std::io::Result<u64> {
    let mut s = TcpStream::connect(addr).await?;
    s.write_all(
        format!("GET /v1/status HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await?;
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(30), s.read_to_end(&mut out))
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "no answer in 30 s"))??;
    let (status, body) = parse_answer(&out)?;
    let v: serde_json::Value = serde_json::from_str(&body)
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))?;
    match (status, v["cards"].as_u64()) {
        (200, Some(n)) => Ok(n),
        _ => Err(std::io::Error::new(std::io::ErrorKind::InvalidData, body)),
    }
}

/// Cards `S00001`.. with UIDs `0400000001`.. (7-byte UIDs), for card lists and rushes.
pub fn cards(n: usize) -> Vec<CardKey> {
    (1..=n).map(card).collect()
}

/// A card list giving each of `cards(n)` its own account `S<i>` with `balance_cents`.
pub fn card_list(n: usize, balance_cents: i64) -> Vec<crate::ledger::Change> {
    use crate::ledger::Change;
    let mut out = Vec::with_capacity(2 * n);
    for (i, c) in cards(n).into_iter().enumerate() {
        let account = format!("S{:05}", i + 1);
        out.push(Change::Account {
            id: format!("a-{account}"),
            account: account.clone(),
            status: "active".into(),
            balance_cents,
            daily_limit_cents: None,
            meal_limit_cents: None,
        });
        let CardKey::Uid(uid) = c else { continue };
        out.push(Change::Card {
            id: format!("c-{uid}"),
            card_uid: Some(uid),
            card_no: None,
            account,
            status: "active".into(),
            lost_at: None,
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_are_read_and_junk_is_not_taken_for_one() {
        let (s, b) = parse_answer(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}").unwrap();
        assert_eq!((s, b.as_str()), (200, "{}"));
        assert!(parse_answer(b"").is_err());
        assert!(parse_answer(b"SSH-2.0").is_err());
        assert_eq!(cards(2)[1], CardKey::Uid("04000000000002".into()));
        assert_eq!(token_hash("test").len(), 64);
    }
}
