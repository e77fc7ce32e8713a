//! `campusgw admin set-password`: creates a console user or sets its password, on the box,
//! through the journal's writer like every write. On a running gateway the journal's lock
//! refuses it (one writer at a time); the one-time setup token is the way in then.

use std::io::{BufRead as _, IsTerminal as _, Write as _};
use std::path::Path;

use super::auth::{Auth, AuthError, Role};
use crate::journal::{Journal, JournalError, JournalOptions};

/// Why the password was not set.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    /// The gateway runs (or another tool holds the journal).
    #[error(
        "the gateway is running on {0} (the journal is locked): stop it first, or use the one-time setup token in data_dir/setup-token on the console's /setup page"
    )]
    Running(String),
    /// The journal could not be opened.
    #[error("{0}")]
    Journal(#[from] JournalError),
    /// No password was typed, or the two differ.
    #[error("{0}")]
    Input(String),
    /// Name or password refused.
    #[error("{0}")]
    Auth(#[from] AuthError),
}

/// Reads the new password: from the terminal without echo (twice), or the first line of
/// standard input when it is a pipe.
///
/// # Errors
/// [`AdminError::Input`].
pub fn read_password() -> Result<String, AdminError> {
    let input = |e: std::io::Error| AdminError::Input(format!("cannot read the password: {e}"));
    if std::io::stdin().is_terminal() {
        let a = rpassword::prompt_password("new password: ").map_err(input)?;
        let b = rpassword::prompt_password("again: ").map_err(input)?;
        if a != b {
            return Err(AdminError::Input("the two passwords differ".into()));
        }
        return Ok(a);
    }
    let mut line = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut line)
        .map_err(input)?;
    let p = line.trim_end_matches(['\r', '\n']).to_owned();
    if p.is_empty() {
        return Err(AdminError::Input("no password on standard input".into()));
    }
    Ok(p)
}

/// Sets `user`'s password and role in the journal under `data_dir`; journals
/// `audit.password_set`.
///
/// # Errors
/// [`AdminError`].
pub async fn set_password(
    data_dir: &Path,
    user: &str,
    role: Role,
    password: &str,
) -> Result<(), AdminError> {
    super::auth::check_new(user, password)?;
    let path = data_dir.join("journal.db");
    let mut opts = JournalOptions::new(&path);
    opts.quick_check = false;
    let (journal, writer) = match Journal::open(opts) {
        Ok(j) => j,
        Err(JournalError::InUse { path }) => {
            return Err(AdminError::Running(path.display().to_string()));
        }
        Err(e) => return Err(e.into()),
    };
    let result = async {
        let auth = Auth::new(journal.clone())?;
        auth.set_password(user, password, role).await?;
        let by = campusgw_sdk::DeviceId::new("gateway").expect("static id is valid");
        let payload = serde_json::json!({ "by": "cli", "detail": { "user": user, "role": role } });
        let event = campusgw_sdk::Event::stamp(
            campusgw_sdk::NewEvent::new(
                campusgw_sdk::Kind::from_static("audit.password_set"),
                campusgw_sdk::Class::Operations,
            )
            .payload(payload),
            &by,
            "cli",
            &campusgw_sdk::Location::default(),
        );
        journal
            .append(vec![event])
            .await
            .map_err(|e| AdminError::Input(format!("audit event not journaled: {e}")))?;
        Ok::<(), AdminError>(())
    }
    .await;
    journal.close().await;
    let _ = tokio::task::spawn_blocking(move || writer.join()).await;
    result?;
    let _ = writeln!(
        std::io::stderr(),
        "password of {user:?} ({}) set",
        role.as_str()
    );
    Ok(())
}
