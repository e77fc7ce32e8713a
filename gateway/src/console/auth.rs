//! Who is asking: users with argon2id hashes, sessions (cookie + CSRF token), API tokens
//! (Bearer), login rate limit and lockout, and the one-time setup token.
//!
//! - Passwords are hashed with argon2id (RustCrypto `argon2`; 7 MiB, 5 passes, OWASP's
//!   equivalent of 19 MiB / 2 passes), in one reused working buffer; at most
//!   [`HASHES_AT_ONCE`] hash runs at once so a login flood cannot take the gateway's memory.
//! - A session is a random 256-bit cookie value; the database keeps its SHA-256 only. The
//!   cookie is `HttpOnly; Secure; SameSite=Strict`. Every state-changing request made with a
//!   session carries the session's CSRF token in `X-CSRF-Token`.
//! - API tokens (`Authorization: Bearer …`) are for machines; stored as SHA-256 too; no CSRF
//!   (a browser never sends them by itself).
//! - A client address gets [`LOGIN_ATTEMPTS_PER_MINUTE`] login attempts a minute (then 429);
//!   a user is locked for [`LOCK_FOR`] after [`LOCK_AFTER`] consecutive failures (423).
//! - With no admin at start, a one-time setup token is written to `data_dir/setup-token`
//!   (mode 0600: root, or the service user, can read it) and the log says where, never the
//!   token; `POST /api/v1/setup` with it creates the admin and deletes the file.

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use argon2::password_hash::{PasswordHash, SaltString};
use rand::RngCore;
use rusqlite::Connection;
use serde::{Deserialize, Serialize};
use sha2::Digest;
use subtle::ConstantTimeEq;
use tokio::sync::Semaphore;

use super::store;
use crate::journal::{Journal, JournalError};

/// Argon2 hashes computed at once (each takes [`ARGON2_MEMORY_KIB`] while it runs).
pub const HASHES_AT_ONCE: usize = 1;
/// argon2id memory per hash: OWASP's m=7 MiB, t=5, p=1 row, equivalent in strength to its
/// 19 MiB / t=2 row with a third of the memory, which the allocator keeps once touched
/// (issue 12: 20 sessions within 5 MiB RSS). Hashes store their parameters, so older
/// hashes still verify.
pub const ARGON2_MEMORY_KIB: u32 = 7 * 1024;
/// argon2id passes.
pub const ARGON2_PASSES: u32 = 5;

fn argon2() -> argon2::Argon2<'static> {
    let params = argon2::Params::new(ARGON2_MEMORY_KIB, ARGON2_PASSES, 1, None)
        .expect("constant argon2 parameters are valid");
    argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params)
}
/// Login attempts per client address per minute.
pub const LOGIN_ATTEMPTS_PER_MINUTE: usize = 10;
/// Consecutive failures that lock a user.
pub const LOCK_AFTER: u32 = 5;
/// How long a locked user stays locked.
pub const LOCK_FOR: Duration = Duration::from_secs(15 * 60);
/// How long a session lives.
pub const SESSION_FOR: Duration = Duration::from_secs(12 * 3600);
/// Shortest password accepted.
pub const MIN_PASSWORD_LEN: usize = 10;
/// The session cookie's name.
pub const SESSION_COOKIE: &str = "campusgw_session";

/// A console role; each includes the ones below it.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Serialize,
    Deserialize,
    utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Reads everything.
    Viewer,
    /// Also acknowledges and resolves alarms and sends commands.
    Operator,
    /// Also manages users, tokens and rules.
    Admin,
}

impl Role {
    /// Every role, lowest first.
    pub const ALL: [Role; 3] = [Role::Viewer, Role::Operator, Role::Admin];

    /// Its stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Operator => "operator",
            Role::Admin => "admin",
        }
    }

    /// Parses a stored or typed name.
    pub fn parse(s: &str) -> Option<Role> {
        Role::ALL.into_iter().find(|r| r.as_str() == s)
    }
}

/// How a caller proved who it is.
#[derive(Debug, Clone)]
pub enum Credential {
    /// A browser session, with its CSRF token.
    Session {
        /// SHA-256 of the cookie value.
        token_hash: String,
        /// The token every state-changing request must echo.
        csrf: String,
    },
    /// An API token.
    Token,
}

/// An authenticated caller.
#[derive(Debug, Clone)]
pub struct Principal {
    /// User or token name.
    pub name: String,
    /// Its role.
    pub role: Role,
    /// How it logged in.
    pub credential: Credential,
}

impl Principal {
    /// The `by` of journaled operator events: `operator:NAME` or `token:NAME`.
    pub fn actor(&self) -> String {
        match self.credential {
            Credential::Session { .. } => format!("user:{}", self.name),
            Credential::Token => format!("token:{}", self.name),
        }
    }
}

/// Why a login or setup failed.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// Unknown user or wrong password (the same answer for both).
    #[error("wrong user name or password")]
    BadCredentials,
    /// Too many failures: locked for a while.
    #[error("account locked after {LOCK_AFTER} failed logins; try again in {minutes} minutes")]
    Locked {
        /// Minutes left.
        minutes: u64,
    },
    /// Too many attempts from this address.
    #[error("too many login attempts from this address; wait a minute")]
    RateLimited,
    /// The setup token is wrong, used or absent.
    #[error("setup token wrong or already used")]
    BadSetupToken,
    /// A password too weak to store.
    #[error("password must be at least {MIN_PASSWORD_LEN} characters")]
    WeakPassword,
    /// A name that is not a valid user name.
    #[error("user name must be 1-64 characters of a-z, 0-9, '.', '_' or '-'")]
    BadName,
    /// Storage trouble.
    #[error("{0}")]
    Journal(#[from] JournalError),
    /// Hashing failed (never expected).
    #[error("password hashing failed: {0}")]
    Hash(String),
}

/// Auth state shared by every request.
pub struct Auth {
    journal: Journal,
    reads: Mutex<Connection>,
    hashing: Semaphore,
    attempts: Mutex<HashMap<IpAddr, Vec<Instant>>>,
    setup: Mutex<Option<SetupToken>>,
}

/// The hash verified for an unknown user, so that answer takes as long as a wrong password:
/// a hash of random bytes nobody kept, with the current parameters (a unit test holds them
/// equal). A constant rather than one computed at start: hashing costs the 7 MiB argon2
/// block, which a gateway whose console nobody uses then never allocates
/// (bench/README.md, "Release profile and memory, session 8").
const DUMMY_HASH: &str = "$argon2id$v=19$m=7168,t=5,p=1$c+D6UeWpwa3rZAmYCqg+KQ$Az8KgfdvJlf8GSATg0Efw/Nqso0taMqXz1ltbftvPH8";

struct SetupToken {
    hash: [u8; 32],
    file: PathBuf,
}

/// A fresh random token: 256 bits, base64url.
pub fn random_token() -> String {
    use base64::Engine as _;
    let mut b = [0u8; 32];
    rand::rng().fill_bytes(&mut b);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b)
}

/// Hex SHA-256 of a token (what is stored).
pub fn token_hash(token: &str) -> String {
    let d = sha2::Sha256::digest(token.as_bytes());
    d.iter().map(|b| format!("{b:02x}")).collect()
}

/// The argon2 working memory, reused by every hash: one hash runs at a time (behind
/// [`Auth`]'s semaphore; the lock serialises the CLI and tests too). A fresh 7 MiB block
/// per hash on whichever blocking thread ran it was kept by glibc in that thread's arena
/// (its mmap threshold rises after the first free), so each login thread could pin its own
/// 7 MiB (bench/README.md, "Where a session's memory goes"). One buffer costs 7 MiB once.
static BLOCKS: Mutex<Vec<argon2::Block>> = Mutex::new(Vec::new());

/// Runs argon2 with `a`'s parameters into `out`, in the shared working memory (grown on
/// first use, wiped after each hash: it holds material derived from the password).
fn argon2_into(
    a: &argon2::Argon2<'_>,
    params: &argon2::Params,
    password: &[u8],
    salt: &[u8],
    out: &mut [u8],
) -> Result<(), AuthError> {
    let mut blocks = BLOCKS.lock().unwrap_or_else(|p| p.into_inner());
    let n = params.block_count();
    if blocks.len() < n {
        blocks.resize(n, argon2::Block::default());
    }
    let r = a.hash_password_into_with_memory(password, salt, out, &mut blocks[..n]);
    blocks[..n].fill(argon2::Block::default());
    r.map_err(|e| AuthError::Hash(e.to_string()))
}

/// An argon2id PHC hash of `password` (`$argon2id$v=19$m=7168,t=5,p=1$salt$hash`).
///
/// # Errors
/// [`AuthError::Hash`] (never expected with the default parameters).
pub fn hash_password(password: &str) -> Result<String, AuthError> {
    let bad = |e: argon2::password_hash::Error| AuthError::Hash(e.to_string());
    let mut salt = [0u8; 16];
    rand::rng().fill_bytes(&mut salt);
    let a = argon2();
    let params = a.params().clone();
    let mut out = [0u8; argon2::Params::DEFAULT_OUTPUT_LEN];
    argon2_into(&a, &params, password.as_bytes(), &salt, &mut out)?;
    let salt = SaltString::encode_b64(&salt).map_err(bad)?;
    let phc = PasswordHash {
        algorithm: argon2::Algorithm::Argon2id.ident(),
        version: Some(argon2::Version::V0x13.into()),
        params: argon2::password_hash::ParamsString::try_from(&params).map_err(bad)?,
        salt: Some(salt.as_salt()),
        hash: Some(argon2::password_hash::Output::new(&out).map_err(bad)?),
    };
    Ok(phc.to_string())
}

/// Whether `password` matches the PHC `hash` (any argon2 variant and parameters it names,
/// so hashes made with older parameters still verify); compared in constant time.
fn verify_password(password: &str, hash: &str) -> bool {
    let check = || -> Option<bool> {
        let h = PasswordHash::new(hash).ok()?;
        let algorithm = argon2::Algorithm::try_from(h.algorithm).ok()?;
        let version = match h.version {
            Some(v) => argon2::Version::try_from(v).ok()?,
            None => argon2::Version::default(),
        };
        let expected = h.hash?;
        let mut salt = [0u8; 64];
        let salt = h.salt?.decode_b64(&mut salt).ok()?;
        let params = argon2::Params::try_from(&h).ok()?;
        let a = argon2::Argon2::new(algorithm, version, params.clone());
        let mut out = vec![0u8; expected.len()];
        argon2_into(&a, &params, password.as_bytes(), salt, &mut out).ok()?;
        Some(bool::from(out.as_slice().ct_eq(expected.as_bytes())))
    };
    check().unwrap_or(false)
}

/// Checks a user name and a new password.
///
/// # Errors
/// [`AuthError::BadName`] or [`AuthError::WeakPassword`].
pub fn check_new(name: &str, password: &str) -> Result<(), AuthError> {
    let ok_name = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b));
    if !ok_name {
        return Err(AuthError::BadName);
    }
    if password.chars().count() < MIN_PASSWORD_LEN {
        return Err(AuthError::WeakPassword);
    }
    Ok(())
}

fn now_us() -> i64 {
    chrono::Utc::now().timestamp_micros()
}

/// A new session: the cookie value and its CSRF token.
#[derive(Debug, Clone)]
pub struct NewSession {
    /// The cookie value (shown to the browser once, stored hashed).
    pub token: String,
    /// The CSRF token.
    pub csrf: String,
    /// The user's role.
    pub role: Role,
}

impl Auth {
    /// Auth over the journal's console tables.
    ///
    /// # Errors
    /// The journal file cannot be opened for reading.
    pub fn new(journal: Journal) -> Result<Auth, AuthError> {
        let reads = journal.read_connection()?;
        Ok(Auth {
            journal,
            reads: Mutex::new(reads),
            hashing: Semaphore::new(HASHES_AT_ONCE),
            attempts: Mutex::new(HashMap::new()),
            setup: Mutex::new(None),
        })
    }

    fn read<T>(&self, f: impl FnOnce(&Connection) -> rusqlite::Result<T>) -> Option<T> {
        let conn = self.reads.lock().unwrap_or_else(|p| p.into_inner());
        match f(&conn) {
            Ok(v) => Some(v),
            Err(e) => {
                tracing::warn!(error = %e, "console auth read failed");
                None
            }
        }
    }

    /// The caller of a request with these credentials, if they are valid.
    pub fn authenticate(&self, bearer: Option<&str>, cookie: Option<&str>) -> Option<Principal> {
        if let Some(t) = bearer {
            let (name, role) = self.read(|c| store::token(c, &token_hash(t)))??;
            return Some(Principal {
                name,
                role: Role::parse(&role)?,
                credential: Credential::Token,
            });
        }
        let token_hash = token_hash(cookie?);
        let (name, role, csrf) = self.read(|c| store::session(c, &token_hash, now_us()))??;
        Some(Principal {
            name,
            role: Role::parse(&role)?,
            credential: Credential::Session { token_hash, csrf },
        })
    }

    /// Counts a login attempt from `ip`; false beyond the per-minute limit.
    fn allow_attempt(&self, ip: IpAddr) -> bool {
        let mut map = self.attempts.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        // Keep the table small: forget addresses idle for a minute.
        map.retain(|_, v| {
            v.last()
                .is_some_and(|t| now.duration_since(*t) < Duration::from_secs(60))
        });
        let v = map.entry(ip).or_default();
        v.retain(|t| now.duration_since(*t) < Duration::from_secs(60));
        if v.len() >= LOGIN_ATTEMPTS_PER_MINUTE {
            return false;
        }
        v.push(now);
        true
    }

    /// Checks a password and opens a session.
    ///
    /// # Errors
    /// [`AuthError`]: rate limited, locked, bad credentials, storage.
    pub async fn login(
        &self,
        ip: IpAddr,
        name: &str,
        password: &str,
    ) -> Result<NewSession, AuthError> {
        if !self.allow_attempt(ip) {
            return Err(AuthError::RateLimited);
        }
        let row = self.read(|c| store::user(c, name)).flatten();
        let now = now_us();
        if let Some(r) = &row
            && r.locked_until_us > now
        {
            let minutes = ((r.locked_until_us - now) / 60_000_000 + 1) as u64;
            return Err(AuthError::Locked { minutes });
        }
        let hash = row
            .as_ref()
            .map_or_else(|| DUMMY_HASH.to_owned(), |r| r.hash.clone());
        let exists = row.is_some();
        let ok = self.verify(password, hash).await && exists;
        let Some(row) = row.filter(|_| ok) else {
            if exists {
                let until = now + LOCK_FOR.as_micros() as i64;
                self.journal
                    .exec(store::login_failed(name.to_owned(), LOCK_AFTER, until))
                    .await?;
            }
            return Err(AuthError::BadCredentials);
        };
        let role = Role::parse(&row.role).ok_or(AuthError::BadCredentials)?;
        let s = NewSession {
            token: random_token(),
            csrf: random_token(),
            role,
        };
        let expires = now + SESSION_FOR.as_micros() as i64;
        self.journal
            .exec(store::login_ok(
                row.name,
                token_hash(&s.token),
                s.csrf.clone(),
                now,
                expires,
            ))
            .await?;
        Ok(s)
    }

    async fn verify(&self, password: &str, hash: String) -> bool {
        let Ok(_permit) = self.hashing.acquire().await else {
            return false;
        };
        let password = password.to_owned();
        tokio::task::spawn_blocking(move || verify_password(&password, &hash))
            .await
            .unwrap_or(false)
    }

    /// Hashes off the async threads, within the hashing limit.
    ///
    /// # Errors
    /// [`AuthError::Hash`].
    pub async fn hash(&self, password: &str) -> Result<String, AuthError> {
        let _permit = self
            .hashing
            .acquire()
            .await
            .map_err(|e| AuthError::Hash(e.to_string()))?;
        let password = password.to_owned();
        tokio::task::spawn_blocking(move || hash_password(&password))
            .await
            .map_err(|e| AuthError::Hash(e.to_string()))?
    }

    /// Ends a session.
    ///
    /// # Errors
    /// Storage errors.
    pub async fn logout(&self, token_hash: &str) -> Result<(), AuthError> {
        self.journal
            .exec(store::logout(token_hash.to_owned()))
            .await?;
        Ok(())
    }

    /// Creates or updates a user.
    ///
    /// # Errors
    /// Bad name, weak password, storage.
    pub async fn set_password(
        &self,
        name: &str,
        password: &str,
        role: Role,
    ) -> Result<(), AuthError> {
        check_new(name, password)?;
        let hash = self.hash(password).await?;
        self.journal
            .exec(store::set_password(
                name.to_owned(),
                hash,
                role.as_str().to_owned(),
                now_us(),
            ))
            .await?;
        if role == Role::Admin {
            self.close_setup();
        }
        Ok(())
    }

    /// Creates an API token; returns it (shown once).
    ///
    /// # Errors
    /// Bad name, storage (a name in use).
    pub async fn create_token(
        &self,
        name: &str,
        role: Role,
        by: &str,
    ) -> Result<String, AuthError> {
        check_new(name, "long enough placeholder")?;
        let token = random_token();
        self.journal
            .exec(store::create_token(
                name.to_owned(),
                token_hash(&token),
                role.as_str().to_owned(),
                by.to_owned(),
                now_us(),
            ))
            .await?;
        Ok(token)
    }

    /// Whether an admin exists.
    pub fn has_admin(&self) -> bool {
        self.read(store::has_admin).unwrap_or(false)
    }

    /// With no admin yet: writes a fresh one-time setup token to `data_dir/setup-token`
    /// (mode 0600) and logs where it is. Returns the file, or None when an admin exists.
    ///
    /// # Errors
    /// The file cannot be written.
    pub fn offer_setup(&self, data_dir: &Path) -> std::io::Result<Option<PathBuf>> {
        if self.has_admin() {
            return Ok(None);
        }
        let token = random_token();
        let file = data_dir.join("setup-token");
        write_private(&file, &format!("{token}\n"))?;
        let hash: [u8; 32] = sha2::Sha256::digest(token.as_bytes()).into();
        *self.setup.lock().unwrap_or_else(|p| p.into_inner()) = Some(SetupToken {
            hash,
            file: file.clone(),
        });
        tracing::warn!(file = %file.display(), "console: no admin yet; a one-time setup token is in this file (readable by the service user only): open the console's /setup page with it, or run `campusgw admin set-password` while the gateway is stopped");
        Ok(Some(file))
    }

    /// Creates the first admin with the setup token (which is then spent and its file
    /// deleted).
    ///
    /// # Errors
    /// [`AuthError::BadSetupToken`], bad name or password, storage.
    pub async fn setup(
        &self,
        ip: IpAddr,
        token: &str,
        name: &str,
        password: &str,
    ) -> Result<(), AuthError> {
        if !self.allow_attempt(ip) {
            return Err(AuthError::RateLimited);
        }
        let given: [u8; 32] = sha2::Sha256::digest(token.as_bytes()).into();
        let file = {
            let slot = self.setup.lock().unwrap_or_else(|p| p.into_inner());
            match slot.as_ref() {
                Some(s) if bool::from(s.hash.ct_eq(&given)) => s.file.clone(),
                _ => return Err(AuthError::BadSetupToken),
            }
        };
        check_new(name, password)?;
        self.set_password(name, password, Role::Admin).await?;
        let _ = std::fs::remove_file(&file);
        Ok(())
    }

    /// An admin exists now: the setup token is spent and its file deleted.
    fn close_setup(&self) {
        if let Some(s) = self.setup.lock().unwrap_or_else(|p| p.into_inner()).take() {
            let _ = std::fs::remove_file(&s.file);
        }
    }

    /// Whether the setup token is still on offer.
    pub fn setup_open(&self) -> bool {
        self.setup.lock().map(|s| s.is_some()).unwrap_or(false)
    }
}

/// Writes `text` to a new file only its owner can read (0600), replacing any old one.
///
/// # Errors
/// I/O errors.
pub fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let _ = std::fs::remove_file(path);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(text.as_bytes())?;
    f.sync_all()
}

/// Arc alias used by the router state.
pub type SharedAuth = Arc<Auth>;

#[cfg(test)]
mod tests {
    use super::*;
    use argon2::password_hash::{PasswordHasher, PasswordVerifier};

    /// The unknown-user hash has the parameters new hashes get, so verifying it costs the
    /// same as verifying a real user's: a parameter change must come with a new constant.
    #[test]
    fn the_unknown_users_hash_has_the_current_parameters() {
        let fresh = hash_password("anything").unwrap();
        let params = |h: &str| h.rsplitn(3, '$').nth(2).unwrap().to_owned();
        assert_eq!(params(DUMMY_HASH), params(&fresh));
        assert!(DUMMY_HASH.starts_with("$argon2id$v=19$"), "{DUMMY_HASH}");
        assert!(
            PasswordHash::new(DUMMY_HASH).is_ok(),
            "the constant is a valid PHC string"
        );
    }

    #[test]
    fn a_hash_made_in_the_shared_buffer_verifies_with_the_argon2_crate_and_only_for_its_password() {
        let h = hash_password("correct horse battery").expect("hash");
        assert!(h.starts_with("$argon2id$v=19$m=7168,t=5,p=1$"), "{h}");
        let parsed = PasswordHash::new(&h).expect("PHC");
        assert!(
            argon2()
                .verify_password(b"correct horse battery", &parsed)
                .is_ok()
        );
        assert!(verify_password("correct horse battery", &h));
        assert!(!verify_password("correct horse batterx", &h));
        assert!(!verify_password("correct horse battery", "not a hash"));
    }

    #[test]
    fn hashes_made_with_other_parameters_by_the_argon2_crate_still_verify() {
        // The first console version hashed with 19 MiB and 2 passes; argon2i as well.
        for (alg, m, t) in [
            (argon2::Algorithm::Argon2id, 19 * 1024, 2),
            (argon2::Algorithm::Argon2i, 1024, 3),
        ] {
            let params = argon2::Params::new(m, t, 1, None).expect("params");
            let a = argon2::Argon2::new(alg, argon2::Version::V0x13, params);
            let salt = SaltString::encode_b64(b"0123456789abcdef").expect("salt");
            let h = a
                .hash_password(b"an older password", &salt)
                .expect("hash")
                .to_string();
            assert!(verify_password("an older password", &h), "{h}");
            assert!(!verify_password("an older passwore", &h), "{h}");
        }
    }
}
