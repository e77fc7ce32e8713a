//! The card list and the sale ledger: one SQLite file per canteen driver instance
//! (`<data_dir>/canteen-<device>.db`).
//!
//! Schema (created on open, `user_version` 1):
//! - `accounts(account PK, status, balance_cents, daily_limit_cents, meal_limit_cents)`
//! - `cards(card PK 'uid:HEX' | 'no:DIGITS', account, status, lost_at)`
//! - `sales(terminal, txn, card, amount_cents, account, decision, reason, balance_after,
//!   meal, day, decided_at, event_id, journaled; PK (terminal, txn))`
//! - `terminals(terminal PK, last_txn)`: the highest transaction number decided
//! - `changes(change_id PK)`: card-list changes already applied (each applies once)
//! - `conflicts(id PK, kind, account, card, terminal, txn, amount_cents, balance_cents, day,
//!   at, event_id, journaled)`
//! - `meta(key PK, value)`: the card platform cursor
//!
//! Money is integer cents everywhere; no float touches a balance.
//!
//! Crash guarantees (WAL, `synchronous=FULL`): a decision, its sale row, the balance debit
//! and the terminal's last transaction number are one transaction, so after `kill -9` either
//! all are there or none. The journal event is written after that commit and before the
//! terminal is answered; a row whose event is not yet journaled has `journaled = 0` and is
//! journaled again at start and on every resend (the journal drops the copy by its
//! lifetime `origin_ref`), so a sale reaches the journal exactly once.

use std::path::Path;

use chrono::{DateTime, FixedOffset, NaiveTime, Utc};
use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};
use serde::{Deserialize, Serialize};

use crate::proto::{CardKey, DeclineReason, SaleRequest};

/// Ledger errors (SQLite).
#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    /// SQLite failed.
    #[error("canteen ledger: {0}")]
    Sql(#[from] rusqlite::Error),
}

/// A meal period: sales are accepted only inside one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MealPeriod {
    /// Its name (`breakfast`, `lunch`, ...).
    pub name: String,
    /// Local start time, inclusive.
    pub start: NaiveTime,
    /// Local end time, exclusive.
    pub end: NaiveTime,
    /// Per-meal limit for accounts without their own.
    pub limit_cents: Option<i64>,
}

/// How sales are authorised.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rules {
    /// The school's UTC offset: days and meal periods are local.
    pub offset: FixedOffset,
    /// Meal periods; empty means sales at any time, meal `all_day`.
    pub meals: Vec<MealPeriod>,
    /// Daily limit for accounts without their own.
    pub daily_limit_cents: Option<i64>,
}

impl Rules {
    /// The meal period at `now`, by name.
    pub fn meal_at(&self, now: DateTime<Utc>) -> Option<String> {
        if self.meals.is_empty() {
            return Some("all_day".into());
        }
        let t = now.with_timezone(&self.offset).time();
        self.meals
            .iter()
            .find(|m| m.start <= t && t < m.end)
            .map(|m| m.name.clone())
    }

    /// The local day of `now`, `YYYY-MM-DD`.
    pub fn day(&self, now: DateTime<Utc>) -> String {
        now.with_timezone(&self.offset)
            .date_naive()
            .format("%Y-%m-%d")
            .to_string()
    }

    fn meal_limit(&self, meal: &str) -> Option<i64> {
        self.meals
            .iter()
            .find(|m| m.name == meal)
            .and_then(|m| m.limit_cents)
    }
}

/// A stored decision: what the terminal is (or was) told.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// Terminal.
    pub terminal: String,
    /// Its transaction number.
    pub txn: u64,
    /// Card key as stored.
    pub card: String,
    /// Amount asked.
    pub amount_cents: i64,
    /// The account, when the card is known.
    pub account: Option<String>,
    /// `None` when approved.
    pub declined: Option<DeclineReason>,
    /// Balance after the decision.
    pub balance_after: Option<i64>,
    /// The meal period.
    pub meal: Option<String>,
    /// Local day.
    pub day: String,
    /// When decided (gateway clock).
    pub decided_at: DateTime<Utc>,
    /// The journal event id once journaled.
    pub event_id: Option<String>,
    /// This call made the decision (false: an earlier call did, this is a resend).
    pub fresh: bool,
}

/// Why a request is not decided at all.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// The number is at or below the terminal's last one and no sale of it is stored.
    Replayed {
        /// The terminal's last number.
        last: u64,
    },
    /// The number was used for another card or amount.
    Conflict,
}

/// A change to the card list, from the card platform or a card-list file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum Change {
    /// An account: created with its opening balance; later changes set status and limits
    /// only (the balance moves by `credit` / `debit`, never by overwrite, so offline sales
    /// are not undone).
    Account {
        /// Change id (applied once).
        id: String,
        /// Account id.
        account: String,
        /// `active`, `frozen` or `closed`.
        status: String,
        /// Opening balance.
        #[serde(default)]
        balance_cents: i64,
        /// Own daily limit.
        #[serde(default)]
        daily_limit_cents: Option<i64>,
        /// Own per-meal limit.
        #[serde(default)]
        meal_limit_cents: Option<i64>,
    },
    /// A card: issued, or reported lost.
    Card {
        /// Change id.
        id: String,
        /// ISO 14443 UID (hex).
        #[serde(default)]
        card_uid: Option<String>,
        /// Printed number.
        #[serde(default)]
        card_no: Option<String>,
        /// Account.
        account: String,
        /// `active` or `lost`.
        status: String,
        /// When the card was reported lost (platform clock); sales approved after it are
        /// conflicts.
        #[serde(default)]
        lost_at: Option<DateTime<Utc>>,
    },
    /// Money added (top-up at the platform).
    Credit {
        /// Change id.
        id: String,
        /// Account.
        account: String,
        /// Amount.
        amount_cents: i64,
    },
    /// Money taken elsewhere (another canteen, the shop).
    Debit {
        /// Change id.
        id: String,
        /// Account.
        account: String,
        /// Amount.
        amount_cents: i64,
    },
}

impl Change {
    fn id(&self) -> &str {
        match self {
            Change::Account { id, .. }
            | Change::Card { id, .. }
            | Change::Credit { id, .. }
            | Change::Debit { id, .. } => id,
        }
    }
}

/// A conflict found while applying changes: never corrected, journaled and reported.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Conflict {
    /// Row id.
    pub id: i64,
    /// `card_lost_after_sale` or `balance_negative`.
    pub kind: String,
    /// The account.
    pub account: String,
    /// The card (lost-card conflicts).
    pub card: Option<String>,
    /// The sale's terminal (lost-card conflicts).
    pub terminal: Option<String>,
    /// The sale's number.
    pub txn: Option<u64>,
    /// The sale's amount.
    pub amount_cents: Option<i64>,
    /// The account balance when found.
    pub balance_cents: i64,
    /// Local day it belongs to: the sale's day (lost card), the day found (balance).
    pub day: String,
}

/// One day's reconciliation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DayReport {
    /// The day.
    pub day: String,
    /// Approved sales.
    pub approved: u64,
    /// Their total, cents.
    pub approved_cents: i64,
    /// Declined sales.
    pub declined: u64,
    /// Per terminal: (terminal, approved, cents).
    pub terminals: Vec<(String, u64, i64)>,
    /// Approved sales not yet journaled (should be 0 outside a crash window).
    pub unjournaled: u64,
    /// Conflicts found that day.
    pub conflicts: Vec<Conflict>,
}

/// The ledger.
pub struct Ledger {
    conn: Connection,
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS accounts(account TEXT PRIMARY KEY, status TEXT NOT NULL,
  balance_cents INTEGER NOT NULL, daily_limit_cents INTEGER, meal_limit_cents INTEGER);
CREATE TABLE IF NOT EXISTS cards(card TEXT PRIMARY KEY, account TEXT NOT NULL,
  status TEXT NOT NULL, lost_at TEXT);
CREATE TABLE IF NOT EXISTS sales(terminal TEXT NOT NULL, txn INTEGER NOT NULL,
  card TEXT NOT NULL, amount_cents INTEGER NOT NULL, account TEXT, decision TEXT NOT NULL,
  reason TEXT, balance_after INTEGER, meal TEXT, day TEXT NOT NULL, decided_at TEXT NOT NULL,
  event_id TEXT, journaled INTEGER NOT NULL DEFAULT 0, PRIMARY KEY(terminal, txn));
CREATE INDEX IF NOT EXISTS sales_spent ON sales(account, day, meal) WHERE decision = 'approved';
CREATE INDEX IF NOT EXISTS sales_card ON sales(card) WHERE decision = 'approved';
CREATE INDEX IF NOT EXISTS sales_unjournaled ON sales(journaled) WHERE journaled = 0;
CREATE TABLE IF NOT EXISTS terminals(terminal TEXT PRIMARY KEY, last_txn INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS changes(change_id TEXT PRIMARY KEY);
CREATE TABLE IF NOT EXISTS conflicts(id INTEGER PRIMARY KEY, kind TEXT NOT NULL,
  account TEXT NOT NULL, card TEXT, terminal TEXT, txn INTEGER, amount_cents INTEGER,
  balance_cents INTEGER NOT NULL, day TEXT NOT NULL, at TEXT NOT NULL, event_id TEXT,
  journaled INTEGER NOT NULL DEFAULT 0);
CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value TEXT NOT NULL);
PRAGMA user_version = 1;
";

impl Ledger {
    /// Opens (creating) the ledger at `path`.
    ///
    /// # Errors
    /// SQLite errors.
    pub fn open(path: &Path) -> Result<Ledger, LedgerError> {
        let conn = Connection::open(path)?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        conn.execute_batch(SCHEMA)?;
        Ok(Ledger { conn })
    }

    /// Decides a sale, or returns the stored decision of a resend. The decision, its row,
    /// the debit and the terminal's last number commit together.
    ///
    /// # Errors
    /// SQLite errors; `Ok(Err(_))` for a replayed or conflicting transaction number.
    pub fn decide(
        &mut self,
        req: &SaleRequest,
        rules: &Rules,
        now: DateTime<Utc>,
    ) -> Result<Result<Decision, Refusal>, LedgerError> {
        let card = req.card.stored();
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        if let Some(d) = stored(&tx, &req.terminal, req.txn)? {
            return Ok(if d.card == card && d.amount_cents == req.amount_cents {
                Ok(d)
            } else {
                Err(Refusal::Conflict)
            });
        }
        let last: Option<i64> = tx
            .query_row(
                "SELECT last_txn FROM terminals WHERE terminal = ?1",
                [&req.terminal],
                |r| r.get(0),
            )
            .optional()?;
        if let Some(last) = last.filter(|l| u64::try_from(*l).unwrap_or(0) >= req.txn) {
            return Ok(Err(Refusal::Replayed {
                last: u64::try_from(last).unwrap_or(0),
            }));
        }
        let day = rules.day(now);
        let meal = rules.meal_at(now);
        let (account, outcome) = judge(&tx, &card, req.amount_cents, rules, &day, meal.as_deref())?;
        let balance_after = match (&account, outcome) {
            (Some(a), None) => {
                tx.execute(
                    "UPDATE accounts SET balance_cents = balance_cents - ?2 WHERE account = ?1",
                    params![a, req.amount_cents],
                )?;
                balance(&tx, a)?
            }
            (Some(a), Some(_)) => balance(&tx, a)?,
            (None, _) => None,
        };
        let txn = i64::try_from(req.txn).unwrap_or(i64::MAX);
        tx.execute(
            "INSERT INTO sales(terminal, txn, card, amount_cents, account, decision, reason,
               balance_after, meal, day, decided_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
            params![
                req.terminal,
                txn,
                card,
                req.amount_cents,
                account,
                if outcome.is_none() {
                    "approved"
                } else {
                    "declined"
                },
                outcome.map(DeclineReason::as_str),
                balance_after,
                meal,
                day,
                now.to_rfc3339(),
            ],
        )?;
        tx.execute(
            "INSERT INTO terminals(terminal, last_txn) VALUES (?1, ?2)
             ON CONFLICT(terminal) DO UPDATE SET last_txn = excluded.last_txn",
            params![req.terminal, txn],
        )?;
        tx.commit()?;
        Ok(Ok(Decision {
            terminal: req.terminal.clone(),
            txn: req.txn,
            card,
            amount_cents: req.amount_cents,
            account,
            declined: outcome,
            balance_after,
            meal,
            day,
            decided_at: now,
            event_id: None,
            fresh: true,
        }))
    }

    /// Records that a decision's event is in the journal.
    ///
    /// # Errors
    /// SQLite errors.
    pub fn mark_journaled(
        &self,
        terminal: &str,
        txn: u64,
        event_id: &str,
    ) -> Result<(), LedgerError> {
        self.conn.execute(
            "UPDATE sales SET journaled = 1, event_id = ?3 WHERE terminal = ?1 AND txn = ?2",
            params![terminal, i64::try_from(txn).unwrap_or(i64::MAX), event_id],
        )?;
        Ok(())
    }

    /// Decisions whose events are not yet journaled, oldest first.
    ///
    /// # Errors
    /// SQLite errors.
    pub fn unjournaled(&self) -> Result<Vec<Decision>, LedgerError> {
        let mut st = self.conn.prepare(&format!(
            "{SELECT_SALE} WHERE journaled = 0 ORDER BY decided_at, terminal, txn"
        ))?;
        let rows = st.query_map([], sale_row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Applies card-list changes in one transaction (each change id once); returns the
    /// conflicts they revealed. `now` dates the conflicts.
    ///
    /// # Errors
    /// SQLite errors; a change naming an unknown account is skipped and counted.
    pub fn apply(
        &mut self,
        changes: &[Change],
        cursor: Option<&str>,
        rules: &Rules,
        now: DateTime<Utc>,
    ) -> Result<Vec<Conflict>, LedgerError> {
        let tx = self.conn.transaction()?;
        let mut found = Vec::new();
        let day = rules.day(now);
        for c in changes {
            let fresh = tx.execute(
                "INSERT OR IGNORE INTO changes(change_id) VALUES (?1)",
                [c.id()],
            )? == 1;
            if fresh {
                apply_one(&tx, c, &day, now, &mut found)?;
            }
        }
        if let Some(cur) = cursor {
            tx.execute(
                "INSERT INTO meta(key, value) VALUES ('platform_cursor', ?1)
                 ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                [cur],
            )?;
        }
        tx.commit()?;
        Ok(found)
    }

    /// The card platform cursor stored with the last applied changes.
    ///
    /// # Errors
    /// SQLite errors.
    pub fn cursor(&self) -> Result<Option<String>, LedgerError> {
        Ok(self
            .conn
            .query_row(
                "SELECT value FROM meta WHERE key = 'platform_cursor'",
                [],
                |r| r.get(0),
            )
            .optional()?)
    }

    /// Conflicts not yet journaled.
    ///
    /// # Errors
    /// SQLite errors.
    pub fn unjournaled_conflicts(&self) -> Result<Vec<Conflict>, LedgerError> {
        let mut st = self.conn.prepare(&format!(
            "{SELECT_CONFLICT} WHERE journaled = 0 ORDER BY id"
        ))?;
        let rows = st.query_map([], conflict_row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Records that a conflict's event is in the journal.
    ///
    /// # Errors
    /// SQLite errors.
    pub fn mark_conflict_journaled(&self, id: i64, event_id: &str) -> Result<(), LedgerError> {
        self.conn.execute(
            "UPDATE conflicts SET journaled = 1, event_id = ?2 WHERE id = ?1",
            params![id, event_id],
        )?;
        Ok(())
    }

    /// An account's balance.
    ///
    /// # Errors
    /// SQLite errors.
    pub fn balance(&self, account: &str) -> Result<Option<i64>, LedgerError> {
        balance(&self.conn, account)
    }

    /// Cards in the list.
    ///
    /// # Errors
    /// SQLite errors.
    pub fn card_count(&self) -> Result<u64, LedgerError> {
        let n: i64 = self
            .conn
            .query_row("SELECT count(*) FROM cards", [], |r| r.get(0))?;
        Ok(u64::try_from(n).unwrap_or(0))
    }

    /// The reconciliation of one local day (`YYYY-MM-DD`).
    ///
    /// # Errors
    /// SQLite errors.
    pub fn report(&self, day: &str) -> Result<DayReport, LedgerError> {
        let c = &self.conn;
        let (approved, approved_cents, unjournaled): (i64, i64, i64) = c.query_row(
            "SELECT count(*), coalesce(sum(amount_cents), 0), coalesce(sum(journaled = 0), 0)
             FROM sales WHERE day = ?1 AND decision = 'approved'",
            [day],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )?;
        let declined: i64 = c.query_row(
            "SELECT count(*) FROM sales WHERE day = ?1 AND decision = 'declined'",
            [day],
            |r| r.get(0),
        )?;
        let mut st = c.prepare(
            "SELECT terminal, count(*), sum(amount_cents) FROM sales
             WHERE day = ?1 AND decision = 'approved' GROUP BY terminal ORDER BY terminal",
        )?;
        let terminals = st
            .query_map([day], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    u64::try_from(r.get::<_, i64>(1)?).unwrap_or(0),
                    r.get::<_, i64>(2)?,
                ))
            })?
            .collect::<Result<_, _>>()?;
        let mut st = c.prepare(&format!("{SELECT_CONFLICT} WHERE day = ?1 ORDER BY id"))?;
        let conflicts = st
            .query_map([day], conflict_row)?
            .collect::<Result<_, _>>()?;
        Ok(DayReport {
            day: day.to_owned(),
            approved: u64::try_from(approved).unwrap_or(0),
            approved_cents,
            declined: u64::try_from(declined).unwrap_or(0),
            terminals,
            unjournaled: u64::try_from(unjournaled).unwrap_or(0),
            conflicts,
        })
    }
}

const SELECT_SALE: &str = "SELECT terminal, txn, card, amount_cents, account, reason,
  balance_after, meal, day, decided_at, event_id FROM sales";

const SELECT_CONFLICT: &str = "SELECT id, kind, account, card, terminal, txn, amount_cents,
  balance_cents, day FROM conflicts";

fn sale_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Decision> {
    let reason: Option<String> = r.get(5)?;
    let at: String = r.get(9)?;
    Ok(Decision {
        terminal: r.get(0)?,
        txn: u64::try_from(r.get::<_, i64>(1)?).unwrap_or(0),
        card: r.get(2)?,
        amount_cents: r.get(3)?,
        account: r.get(4)?,
        declined: reason.as_deref().and_then(DeclineReason::parse),
        balance_after: r.get(6)?,
        meal: r.get(7)?,
        day: r.get(8)?,
        decided_at: DateTime::parse_from_rfc3339(&at)
            .map(|t| t.with_timezone(&Utc))
            .unwrap_or_default(),
        event_id: r.get(10)?,
        fresh: false,
    })
}

fn conflict_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Conflict> {
    Ok(Conflict {
        id: r.get(0)?,
        kind: r.get(1)?,
        account: r.get(2)?,
        card: r.get(3)?,
        terminal: r.get(4)?,
        txn: r
            .get::<_, Option<i64>>(5)?
            .map(|t| u64::try_from(t).unwrap_or(0)),
        amount_cents: r.get(6)?,
        balance_cents: r.get(7)?,
        day: r.get(8)?,
    })
}

fn stored(c: &Connection, terminal: &str, txn: u64) -> rusqlite::Result<Option<Decision>> {
    c.query_row(
        &format!("{SELECT_SALE} WHERE terminal = ?1 AND txn = ?2"),
        params![terminal, i64::try_from(txn).unwrap_or(i64::MAX)],
        sale_row,
    )
    .optional()
}

fn balance(c: &Connection, account: &str) -> Result<Option<i64>, LedgerError> {
    Ok(c.query_row(
        "SELECT balance_cents FROM accounts WHERE account = ?1",
        [account],
        |r| r.get(0),
    )
    .optional()?)
}

struct AccountRow {
    status: String,
    balance: i64,
    daily: Option<i64>,
    meal: Option<i64>,
}

/// The authorisation rules, in order: card known, card not lost, account active, inside a
/// meal period, balance, daily limit, meal limit.
fn judge(
    c: &Connection,
    card: &str,
    amount: i64,
    rules: &Rules,
    day: &str,
    meal: Option<&str>,
) -> rusqlite::Result<(Option<String>, Option<DeclineReason>)> {
    let Some((account, status)) = c
        .query_row(
            "SELECT account, status FROM cards WHERE card = ?1",
            [card],
            |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)),
        )
        .optional()?
    else {
        return Ok((None, Some(DeclineReason::CardUnknown)));
    };
    if status != "active" {
        return Ok((Some(account), Some(DeclineReason::CardLost)));
    }
    let Some(a) = c
        .query_row(
            "SELECT status, balance_cents, daily_limit_cents, meal_limit_cents
             FROM accounts WHERE account = ?1",
            [&account],
            |r| {
                Ok(AccountRow {
                    status: r.get(0)?,
                    balance: r.get(1)?,
                    daily: r.get(2)?,
                    meal: r.get(3)?,
                })
            },
        )
        .optional()?
    else {
        return Ok((Some(account), Some(DeclineReason::AccountBlocked)));
    };
    if a.status != "active" {
        return Ok((Some(account), Some(DeclineReason::AccountBlocked)));
    }
    let Some(meal) = meal else {
        return Ok((Some(account), Some(DeclineReason::OutsideMealPeriod)));
    };
    if a.balance < amount {
        return Ok((Some(account), Some(DeclineReason::InsufficientFunds)));
    }
    let spent = |extra: &str, args: &[&dyn rusqlite::ToSql]| -> rusqlite::Result<i64> {
        c.query_row(
            &format!(
                "SELECT coalesce(sum(amount_cents), 0) FROM sales
                 WHERE decision = 'approved' AND account = ?1 AND day = ?2 {extra}"
            ),
            args,
            |r| r.get(0),
        )
    };
    if let Some(limit) = a.daily.or(rules.daily_limit_cents)
        && spent("", &[&account, &day])?.saturating_add(amount) > limit
    {
        return Ok((Some(account), Some(DeclineReason::DailyLimit)));
    }
    if let Some(limit) = a.meal.or(rules.meal_limit(meal))
        && spent("AND meal = ?3", &[&account, &day, &meal])?.saturating_add(amount) > limit
    {
        return Ok((Some(account), Some(DeclineReason::MealLimit)));
    }
    Ok((Some(account), None))
}

fn apply_one(
    tx: &Connection,
    c: &Change,
    day: &str,
    now: DateTime<Utc>,
    found: &mut Vec<Conflict>,
) -> Result<(), LedgerError> {
    match c {
        Change::Account {
            account,
            status,
            balance_cents,
            daily_limit_cents,
            meal_limit_cents,
            ..
        } => {
            tx.execute(
                "INSERT INTO accounts(account, status, balance_cents, daily_limit_cents,
                   meal_limit_cents) VALUES (?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT(account) DO UPDATE SET status = excluded.status,
                   daily_limit_cents = excluded.daily_limit_cents,
                   meal_limit_cents = excluded.meal_limit_cents",
                params![
                    account,
                    status,
                    balance_cents,
                    daily_limit_cents,
                    meal_limit_cents
                ],
            )?;
        }
        Change::Card {
            card_uid,
            card_no,
            account,
            status,
            lost_at,
            ..
        } => {
            let Ok(key) = CardKey::from_pair(card_uid.as_deref(), card_no.as_deref()) else {
                metrics::counter!("campusgw_canteen_bad_changes_total").increment(1);
                return Ok(());
            };
            let key = key.stored();
            tx.execute(
                "INSERT INTO cards(card, account, status, lost_at) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT(card) DO UPDATE SET account = excluded.account,
                   status = excluded.status, lost_at = excluded.lost_at",
                params![key, account, status, lost_at.map(|t| t.to_rfc3339())],
            )?;
            if status != "active" {
                // Sales approved offline on this card after it was reported lost.
                let since = lost_at.map_or_else(String::new, |t| t.to_rfc3339());
                let mut st = tx.prepare(
                    "SELECT terminal, txn, amount_cents, day FROM sales WHERE card = ?1
                     AND decision = 'approved' AND decided_at >= ?2 ORDER BY decided_at",
                )?;
                let sales: Vec<(String, i64, i64, String)> = st
                    .query_map(params![key, since], |r| {
                        Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
                    })?
                    .collect::<Result<_, _>>()?;
                let bal = balance(tx, account)?.unwrap_or(0);
                // Dated by the sale's day: it is that day's reconciliation that is wrong.
                for (terminal, txn, amount, sale_day) in sales {
                    found.push(conflict(
                        tx,
                        "card_lost_after_sale",
                        account,
                        Some((&key, &terminal, txn, amount)),
                        bal,
                        &sale_day,
                        now,
                    )?);
                }
            }
        }
        Change::Credit {
            account,
            amount_cents,
            ..
        }
        | Change::Debit {
            account,
            amount_cents,
            ..
        } => {
            let delta = if matches!(c, Change::Credit { .. }) {
                *amount_cents
            } else {
                amount_cents.saturating_neg()
            };
            let n = tx.execute(
                "UPDATE accounts SET balance_cents = balance_cents + ?2 WHERE account = ?1",
                params![account, delta],
            )?;
            if n == 0 {
                metrics::counter!("campusgw_canteen_bad_changes_total").increment(1);
                return Ok(());
            }
            let bal = balance(tx, account)?.unwrap_or(0);
            if bal < 0 && delta < 0 {
                found.push(conflict(
                    tx,
                    "balance_negative",
                    account,
                    None,
                    bal,
                    day,
                    now,
                )?);
            }
        }
    }
    Ok(())
}

fn conflict(
    tx: &Connection,
    kind: &str,
    account: &str,
    sale: Option<(&str, &str, i64, i64)>,
    balance_cents: i64,
    day: &str,
    now: DateTime<Utc>,
) -> rusqlite::Result<Conflict> {
    tx.execute(
        "INSERT INTO conflicts(kind, account, card, terminal, txn, amount_cents, balance_cents,
           day, at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
        params![
            kind,
            account,
            sale.map(|s| s.0),
            sale.map(|s| s.1),
            sale.map(|s| s.2),
            sale.map(|s| s.3),
            balance_cents,
            day,
            now.to_rfc3339()
        ],
    )?;
    Ok(Conflict {
        id: tx.last_insert_rowid(),
        kind: kind.to_owned(),
        account: account.to_owned(),
        card: sale.map(|s| s.0.to_owned()),
        terminal: sale.map(|s| s.1.to_owned()),
        txn: sale.map(|s| u64::try_from(s.2).unwrap_or(0)),
        amount_cents: sale.map(|s| s.3),
        balance_cents,
        day: day.to_owned(),
    })
}

#[cfg(test)]
mod tests;
