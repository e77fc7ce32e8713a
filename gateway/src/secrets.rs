//! Keeping secrets out of sight: URL redaction, scrubbing of config errors, and the mode
//! check of files that hold a secret (docs/security.md).
//!
//! - [`redact_url`] replaces a URL's userinfo password and every query and fragment value
//!   with `***`; [`redact_urls_in`] does so for every URL inside a free text (an error
//!   message from an HTTP client, say). Every place that shows an uplink URL or an
//!   uplink's failure (`/healthz`, the log, `uplink.down` events, config errors) goes
//!   through one of the two.
//! - [`is_secret_key`] names the config keys whose values never appear in an error.
//! - [`check_private_file`] refuses a key, password or token file that others may read or
//!   write, or its group may write; group read stays allowed so `root:campusgw 0640` works.

use std::path::Path;

/// What replaces a hidden value.
pub const MASK: &str = "***";

/// `url` with the userinfo password and every query and fragment value replaced by
/// [`MASK`]; the scheme, user name, host, port and path stay readable. Works on text that
/// is not a valid URL too (it is only split at `://`, `@`, `?`, `&`, `=` and `#`).
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let auth_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(auth_end);
    let authority = match authority.rsplit_once('@') {
        Some((userinfo, host)) => match userinfo.split_once(':') {
            Some((user, _password)) => format!("{user}:{MASK}@{host}"),
            None => format!("{userinfo}@{host}"),
        },
        None => authority.to_owned(),
    };
    let (before_fragment, fragment) = match tail.split_once('#') {
        Some((b, _)) => (b, Some(MASK)),
        None => (tail, None),
    };
    let mut out = format!("{scheme}://{authority}");
    match before_fragment.split_once('?') {
        Some((path, query)) => {
            out.push_str(path);
            out.push('?');
            let pairs: Vec<String> = query
                .split('&')
                .map(|pair| match pair.split_once('=') {
                    Some((k, _)) => format!("{k}={MASK}"),
                    None if pair.is_empty() => String::new(),
                    None => MASK.to_owned(),
                })
                .collect();
            out.push_str(&pairs.join("&"));
        }
        None => out.push_str(before_fragment),
    }
    if let Some(f) = fragment {
        out.push('#');
        out.push_str(f);
    }
    out
}

/// `text` with every URL in it (a `scheme://` run up to whitespace, a quote, `<`, `>` or
/// `)`) passed through [`redact_url`].
pub fn redact_urls_in(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find("://") {
        let scheme_start = rest[..i]
            .rfind(|c: char| !(c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.')))
            .map_or(0, |j| j + 1);
        let after = &rest[i + 3..];
        let end = after
            .find(|c: char| c.is_whitespace() || matches!(c, '"' | '\'' | '`' | '<' | '>' | ')'))
            .map_or(rest.len(), |j| i + 3 + j);
        out.push_str(&rest[..scheme_start]);
        out.push_str(&redact_url(&rest[scheme_start..end]));
        rest = &rest[end..];
    }
    out.push_str(rest);
    out
}

/// Whether a config key holds a secret (or names one): its value is never echoed in an
/// error. Matches `password`, `password_file`, `token`, `token_file`, `client_key`,
/// `secret`, `passphrase`, `credentials`, `private_key`, `auth...` and the like.
pub fn is_secret_key(key: &str) -> bool {
    let k = key.to_ascii_lowercase();
    ["pass", "token", "secret", "key", "credential", "auth"]
        .iter()
        .any(|w| k.contains(w))
}

/// Why a serde message for a secret key must lose its values: `invalid type: integer
/// `123456789`, expected a string` keeps `invalid type: integer, expected a string`.
/// Backtick- and double-quoted spans before the `expected` part are removed.
pub fn scrub_values(message: &str) -> String {
    let (head, tail) = match message.find(", expected") {
        Some(i) => message.split_at(i),
        None => (message, ""),
    };
    let mut out = String::with_capacity(message.len());
    let mut chars = head.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '`' || c == '"' {
            for d in chars.by_ref() {
                if d == c {
                    break;
                }
            }
            // "integer `1`" -> "integer", not "integer ".
            if out.ends_with(' ') {
                out.pop();
            }
        } else {
            out.push(c);
        }
    }
    out.push_str(tail);
    out
}

/// Refuses a file holding a key, password or token that is readable or writable by
/// others, or writable by its group (group read is allowed: `root:campusgw 0640`).
///
/// # Errors
/// A message naming the file, its mode and the exact `chmod` to run; or why its mode
/// could not be read.
#[cfg(unix)]
pub fn check_private_file(path: &Path) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt;
    let meta =
        std::fs::metadata(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let mode = meta.permissions().mode() & 0o7777;
    let world = mode & 0o007 != 0;
    let group_write = mode & 0o020 != 0;
    if !world && !group_write {
        return Ok(());
    }
    let who = match (world, group_write) {
        (true, true) => "others and its group can write or read it",
        (true, false) => "others can read or write it",
        _ => "its group can write it",
    };
    // Keep the owner's bits and group read; drop group write/execute and everything for others.
    let fixed = mode & 0o740;
    Err(format!(
        "{} holds a secret but has mode {mode:04o} ({who}); run `chmod {fixed:04o} {}`",
        path.display(),
        path.display()
    ))
}

/// On systems without Unix modes there is nothing to check here.
///
/// # Errors
/// Never.
#[cfg(not(unix))]
pub fn check_private_file(_path: &Path) -> Result<(), String> {
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_passwords_and_query_values_are_masked_and_the_rest_kept() {
        assert_eq!(
            redact_url("https://127.0.0.1:8443/ingest?token=SECRET&x=1"),
            "https://127.0.0.1:8443/ingest?token=***&x=***"
        );
        assert_eq!(
            redact_url("https://user:pw@archive.example/p?SECRET#frag"),
            "https://user:***@archive.example/p?***#***"
        );
        assert_eq!(
            redact_url("mqtts://platform.example:8883"),
            "mqtts://platform.example:8883"
        );
        assert_eq!(redact_url("not a url"), "not a url");
    }

    #[test]
    fn urls_inside_error_text_are_masked() {
        let e = "network: error sending request for url (https://h/ingest?token=SECRET): refused";
        let r = redact_urls_in(e);
        assert!(!r.contains("SECRET"), "{r}");
        assert_eq!(
            r,
            "network: error sending request for url (https://h/ingest?token=***): refused"
        );
        assert_eq!(redact_urls_in("no url here"), "no url here");
    }

    #[test]
    fn secret_key_messages_lose_their_values_but_keep_the_expected_type() {
        assert_eq!(
            scrub_values("invalid type: integer `123456789`, expected a string"),
            "invalid type: integer, expected a string"
        );
        assert_eq!(
            scrub_values("invalid value: string \"hunter2\", expected `a`"),
            "invalid value: string, expected `a`"
        );
        assert!(is_secret_key("password") && is_secret_key("token_file"));
        assert!(is_secret_key("client_key") && !is_secret_key("url"));
    }

    #[cfg(unix)]
    #[test]
    fn a_secret_file_is_refused_when_others_read_it_or_its_group_writes_it() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("county.pass");
        std::fs::write(&p, "pw").expect("write");
        let set = |m: u32| {
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(m)).expect("chmod")
        };
        for ok in [0o600, 0o640, 0o400, 0o440] {
            set(ok);
            assert!(check_private_file(&p).is_ok(), "{ok:o}");
        }
        set(0o644);
        let e = check_private_file(&p).expect_err("0644");
        assert!(e.contains(&format!("chmod 0640 {}", p.display())), "{e}");
        set(0o620);
        let e = check_private_file(&p).expect_err("0620");
        assert!(e.contains(&format!("chmod 0600 {}", p.display())), "{e}");
        set(0o666);
        let e = check_private_file(&p).expect_err("0666");
        assert!(e.contains("chmod 0640"), "{e}");
    }
}
