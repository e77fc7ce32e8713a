//! The console's tables (migration 6) and the statements on them.
//!
//! ```sql
//! CREATE TABLE console_users (name TEXT PRIMARY KEY,
//!     hash TEXT NOT NULL,                  -- argon2id PHC string (never the password)
//!     role TEXT NOT NULL,                  -- admin | operator | viewer
//!     failed_logins INTEGER NOT NULL,      -- consecutive failures since the last success
//!     locked_until INTEGER NOT NULL,       -- unix µs; 0 = not locked
//!     created_at INTEGER NOT NULL, password_set_at INTEGER NOT NULL) WITHOUT ROWID;
//! CREATE TABLE console_sessions (token_hash TEXT PRIMARY KEY,   -- hex SHA-256 of the cookie value
//!     csrf TEXT NOT NULL, user TEXT NOT NULL, created_at INTEGER NOT NULL,
//!     expires_at INTEGER NOT NULL) WITHOUT ROWID;
//! CREATE TABLE console_tokens (token_hash TEXT PRIMARY KEY,     -- hex SHA-256 of the bearer token
//!     name TEXT NOT NULL UNIQUE, role TEXT NOT NULL, created_by TEXT NOT NULL,
//!     created_at INTEGER NOT NULL) WITHOUT ROWID;
//! ```
//! Reads use a read-only connection ([`crate::journal::Journal::read_connection`]); every
//! write is an [`ExecOp`] run by the journal's single writer in its own transaction, so
//! `campusgw admin set-password` on a running gateway is refused by the journal lock like
//! any second writer. Audit records are not here: they are journaled events (`audit.*`).

use rusqlite::{Connection, OptionalExtension, params};

use crate::journal::ExecOp;

/// Migration 6 (see the module doc).
pub const MIGRATION: &str = "CREATE TABLE console_users (
         name TEXT PRIMARY KEY,
         hash TEXT NOT NULL,
         role TEXT NOT NULL,
         failed_logins INTEGER NOT NULL DEFAULT 0,
         locked_until INTEGER NOT NULL DEFAULT 0,
         created_at INTEGER NOT NULL,
         password_set_at INTEGER NOT NULL) WITHOUT ROWID;
     CREATE TABLE console_sessions (
         token_hash TEXT PRIMARY KEY,
         csrf TEXT NOT NULL,
         user TEXT NOT NULL,
         created_at INTEGER NOT NULL,
         expires_at INTEGER NOT NULL) WITHOUT ROWID;
     CREATE INDEX console_sessions_by_user ON console_sessions (user);
     CREATE TABLE console_tokens (
         token_hash TEXT PRIMARY KEY,
         name TEXT NOT NULL UNIQUE,
         role TEXT NOT NULL,
         created_by TEXT NOT NULL,
         created_at INTEGER NOT NULL) WITHOUT ROWID;";

/// A stored user.
#[derive(Debug, Clone)]
pub struct UserRow {
    /// Login name.
    pub name: String,
    /// argon2id PHC string.
    pub hash: String,
    /// `admin`, `operator` or `viewer`.
    pub role: String,
    /// Consecutive failed logins.
    pub failed_logins: u32,
    /// Locked until this unix µs (0: not locked).
    pub locked_until_us: i64,
}

/// The user named `name`.
///
/// # Errors
/// SQLite errors.
pub fn user(conn: &Connection, name: &str) -> rusqlite::Result<Option<UserRow>> {
    conn.prepare_cached(
        "SELECT name, hash, role, failed_logins, locked_until FROM console_users WHERE name = ?1",
    )?
    .query_row([name], |r| {
        Ok(UserRow {
            name: r.get(0)?,
            hash: r.get(1)?,
            role: r.get(2)?,
            failed_logins: r.get(3)?,
            locked_until_us: r.get(4)?,
        })
    })
    .optional()
}

/// Whether any admin exists (no admin: the setup token is offered).
///
/// # Errors
/// SQLite errors.
pub fn has_admin(conn: &Connection) -> rusqlite::Result<bool> {
    conn.query_row(
        "SELECT EXISTS (SELECT 1 FROM console_users WHERE role = 'admin')",
        [],
        |r| r.get(0),
    )
}

/// The unexpired session with this token hash: (user, role, csrf).
///
/// # Errors
/// SQLite errors.
pub fn session(
    conn: &Connection,
    token_hash: &str,
    now_us: i64,
) -> rusqlite::Result<Option<(String, String, String)>> {
    conn.prepare_cached(
        "SELECT s.user, u.role, s.csrf FROM console_sessions s JOIN console_users u ON u.name = s.user
         WHERE s.token_hash = ?1 AND s.expires_at > ?2",
    )?
    .query_row(params![token_hash, now_us], |r| {
        Ok((r.get(0)?, r.get(1)?, r.get(2)?))
    })
    .optional()
}

/// The API token with this hash: (name, role).
///
/// # Errors
/// SQLite errors.
pub fn token(conn: &Connection, token_hash: &str) -> rusqlite::Result<Option<(String, String)>> {
    conn.prepare_cached("SELECT name, role FROM console_tokens WHERE token_hash = ?1")?
        .query_row([token_hash], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()
}

/// Creates the user or replaces its hash and role; clears failures and lock; ends its
/// sessions (a new password logs everyone out).
pub fn set_password(name: String, hash: String, role: String, now_us: i64) -> ExecOp {
    Box::new(move |tx| {
        tx.execute(
            "INSERT INTO console_users (name, hash, role, failed_logins, locked_until, created_at, password_set_at)
             VALUES (?1, ?2, ?3, 0, 0, ?4, ?4)
             ON CONFLICT (name) DO UPDATE SET hash = excluded.hash, role = excluded.role,
                 failed_logins = 0, locked_until = 0, password_set_at = excluded.password_set_at",
            params![name, hash, role, now_us],
        )?;
        tx.execute("DELETE FROM console_sessions WHERE user = ?1", [&name])?;
        Ok(())
    })
}

/// Counts a failed login; at `lock_after` consecutive failures the user is locked until
/// `lock_until_us` (and the count starts again).
pub fn login_failed(name: String, lock_after: u32, lock_until_us: i64) -> ExecOp {
    Box::new(move |tx| {
        tx.execute(
            "UPDATE console_users SET failed_logins = failed_logins + 1 WHERE name = ?1",
            [&name],
        )?;
        tx.execute(
            "UPDATE console_users SET failed_logins = 0, locked_until = ?2
             WHERE name = ?1 AND failed_logins >= ?3",
            params![name, lock_until_us, lock_after],
        )?;
        Ok(())
    })
}

/// A successful login: clears the failure count and opens a session (expired sessions are
/// deleted on the way).
pub fn login_ok(
    name: String,
    token_hash: String,
    csrf: String,
    now_us: i64,
    expires_us: i64,
) -> ExecOp {
    Box::new(move |tx| {
        tx.execute(
            "UPDATE console_users SET failed_logins = 0, locked_until = 0 WHERE name = ?1",
            [&name],
        )?;
        tx.execute(
            "DELETE FROM console_sessions WHERE expires_at <= ?1",
            [now_us],
        )?;
        tx.execute(
            "INSERT INTO console_sessions (token_hash, csrf, user, created_at, expires_at)
             VALUES (?1, ?2, ?3, ?4, ?5)",
            params![token_hash, csrf, name, now_us, expires_us],
        )?;
        Ok(())
    })
}

/// Ends one session.
pub fn logout(token_hash: String) -> ExecOp {
    Box::new(move |tx| {
        tx.execute(
            "DELETE FROM console_sessions WHERE token_hash = ?1",
            [token_hash],
        )?;
        Ok(())
    })
}

/// Stores an API token (its hash) under a unique name.
pub fn create_token(
    name: String,
    token_hash: String,
    role: String,
    by: String,
    now_us: i64,
) -> ExecOp {
    Box::new(move |tx| {
        tx.execute(
            "INSERT INTO console_tokens (token_hash, name, role, created_by, created_at)
             VALUES (?1, ?2, ?3, ?4, ?5)",
            params![token_hash, name, role, by, now_us],
        )?;
        Ok(())
    })
}
