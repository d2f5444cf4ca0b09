//! `ferry key`: bundle signing keys, and the key loading shared by
//! `export --sign-key`, `verify --key` and `import --key`.

use std::path::Path;
use std::sync::Arc;

use anyhow::anyhow;
use serde_json::json;

use ferry_bundle::sign::{self, SignError, SigningKey, TrustedKey};

use crate::cli::{KeyArgs, KeyCommand};
use crate::ui::Ui;
use crate::{CmdResult, Failure};

/// The environment variable holding the secret key's password.
pub const PASSWORD_ENV: &str = "FERRY_KEY_PASSWORD";

/// The password from [`PASSWORD_ENV`]; an empty value counts as unset.
fn password() -> Option<String> {
    std::env::var(PASSWORD_ENV).ok().filter(|p| !p.is_empty())
}

fn key_failure(e: SignError) -> Failure {
    let hint = match &e {
        SignError::PasswordRequired { .. } => Some(format!(
            "export {PASSWORD_ENV} with the key's password (it is never prompted for)"
        )),
        SignError::BadKeyFile { kind: "public", .. } => {
            Some("--key takes the public key (NAME.pub) that `ferry key generate` wrote".into())
        }
        SignError::BadKeyFile { kind: "secret", .. } => Some(
            "--sign-key takes the secret key (NAME.key) that `ferry key generate` wrote".into(),
        ),
        _ => None,
    };
    let f = Failure::input(e);
    match hint {
        Some(h) => f.hint(h),
        None => f,
    }
}

/// Loads (and decrypts) the secret key for `export --sign-key`, before any
/// work is done, so a wrong password costs nothing.
pub fn signing_key(path: &Path) -> Result<SigningKey, Failure> {
    SigningKey::load(path, password().as_deref()).map_err(key_failure)
}

/// Loads the public key for `verify --key` / `import --key`, before the
/// bundle is opened.
pub fn trusted_key(path: &Path) -> Result<TrustedKey, Failure> {
    TrustedKey::load(path).map_err(key_failure)
}

/// How a signature present without `--key` is described:
/// `signed by key id …, not checked: pass --key`.
pub fn unchecked(signature: &[u8]) -> String {
    match sign::signature_key_id(signature) {
        Ok(id) => format!("signed by key id {id}, not checked: pass --key"),
        Err(e) => {
            format!("carries a signature that is not valid minisign ({e}); not checked: pass --key")
        }
    }
}

pub async fn key(a: KeyArgs, ui: &Arc<Ui>) -> CmdResult {
    match a.command {
        KeyCommand::Generate { out, no_password } => generate(&out, no_password, ui),
    }
}

fn generate(out: &Path, no_password: bool, ui: &Arc<Ui>) -> CmdResult {
    let password = match (password(), no_password) {
        (Some(_), true) => {
            return Err(Failure::input(anyhow!(
                "--no-password given while {PASSWORD_ENV} is set"
            ))
            .hint(format!(
                "unset {PASSWORD_ENV} for an unencrypted key, or drop --no-password for an encrypted one"
            )))
        }
        (Some(p), false) => Some(p),
        (None, true) => None,
        (None, false) => {
            return Err(Failure::input(anyhow!(
                "no password for the secret key `{}.key`",
                out.display()
            ))
            .hint(format!(
                "set {PASSWORD_ENV} to encrypt it (e.g. `read -rs {PASSWORD_ENV}; export {PASSWORD_ENV}`), or pass --no-password for an unencrypted key (scheduled jobs)"
            )))
        }
    };
    let g = sign::generate(out, password.as_deref()).map_err(|e| match e {
        SignError::Io { .. } => Failure::env(e),
        _ => Failure::input(e),
    })?;
    let encrypted = password.is_some();
    ui.json(json!({
        "event": "key-generated",
        "secret": g.secret,
        "public": g.public,
        "keyId": g.key_id.to_string(),
        "encrypted": encrypted,
    }));
    ui.result(&format!(
        "key id {}\n  secret key {} (mode 0600, {}): keep it on the export side only\n  public key {}: give it to whoever verifies and imports\n\
         sign:   ferry export ... --sign-key {}\n\
         check:  ferry verify BUNDLE --key {}   (or: ferry import BUNDLE --key {} ...)",
        g.key_id,
        g.secret.display(),
        if encrypted {
            format!("encrypted with {PASSWORD_ENV}")
        } else {
            "NOT encrypted".to_string()
        },
        g.public.display(),
        g.secret.display(),
        g.public.display(),
        g.public.display(),
    ));
    Ok(0)
}
