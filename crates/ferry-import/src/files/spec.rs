//! The `--files` value: a password in it redacted for messages, user info
//! decoded, path components percent-encoded for URLs.

use url::Url;

use super::{FileTargetOptions, FilesError};

/// `spec` with the password of a URL's user info replaced by `***`.
pub(super) fn redact_spec(spec: &str) -> String {
    let Some((scheme, rest)) = spec.split_once("://") else {
        return spec.to_string();
    };
    let auth_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(auth_end);
    match authority.rsplit_once('@') {
        Some((userinfo, host)) => {
            let user = userinfo.split(':').next().unwrap_or("");
            let shown = if userinfo.contains(':') {
                format!("{user}:***")
            } else {
                user.to_string()
            };
            format!("{scheme}://{shown}@{host}{tail}")
        }
        None => spec.to_string(),
    }
}

/// Everything but RFC 3986's unreserved characters (`A-Za-z0-9-._~`).
pub(super) const NOT_UNRESERVED: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// Percent-encodes everything but RFC 3986's unreserved characters.
pub(super) fn encode_component(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, NOT_UNRESERVED).to_string()
}

/// Decodes `%XX` sequences (user info taken from a URL).
pub(super) fn decode_percent(s: &str) -> String {
    percent_encoding::percent_decode_str(s)
        .decode_utf8_lossy()
        .into_owned()
}

/// An HTTP target as `--files` names it.
pub(super) struct HttpSpec {
    /// The URL without user info (query and fragment refused).
    pub(super) base: Url,
    /// The user: `FileTargetOptions::username`, else the URL's.
    pub(super) username: Option<String>,
    /// The password: `FileTargetOptions::password`, else the URL's.
    pub(super) password: Option<String>,
}

/// Parses an `http://` / `https://` `--files` value (`HOST[:PORT]/PATH`, a
/// `user:password@` accepted and taken out of the URL; the options' user
/// and password win). An error never shows the password.
pub(super) fn parse_http(spec: &str, opts: &FileTargetOptions) -> Result<HttpSpec, FilesError> {
    let invalid = |reason: &str| FilesError::InvalidSpec {
        spec: redact_spec(spec),
        reason: reason.to_string(),
    };
    let mut url = Url::parse(spec).map_err(|e| invalid(&e.to_string()))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(invalid("only http:// and https:// are supported"));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(invalid("no host"));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(invalid("a query or fragment is not supported"));
    }
    let url_user = (!url.username().is_empty()).then(|| decode_percent(url.username()));
    let url_password = url.password().map(decode_percent);
    let username = opts.username.clone().or(url_user);
    let password = opts.password.clone().or(url_password);
    if password.is_some() && username.is_none() {
        return Err(invalid("a password needs a username"));
    }
    url.set_username("")
        .map_err(|()| invalid("cannot remove the user from the URL"))?;
    url.set_password(None)
        .map_err(|()| invalid("cannot remove the password from the URL"))?;
    Ok(HttpSpec {
        base: url,
        username,
        password,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn components_are_percent_encoded_except_unreserved() {
        assert_eq!(encode_component("7.0.0+driver"), "7.0.0%2Bdriver");
        assert_eq!(encode_component("a b%c/ü"), "a%20b%25c%2F%C3%BC");
        assert_eq!(encode_component("A-z_0.9~"), "A-z_0.9~");
    }

    #[test]
    fn user_info_is_percent_decoded_to_the_last_escape() {
        // An escape at the very end is decoded too; a broken one stays as it is.
        assert_eq!(decode_percent("p%40ss%3A%41"), "p@ss:A");
        assert_eq!(decode_percent("100%"), "100%");
        assert_eq!(decode_percent("%zz%C3%BC"), "%zzü");
    }

    #[test]
    fn user_info_is_decoded_and_redacted() {
        assert_eq!(decode_percent("p%40ss%3Aw"), "p@ss:w");
        assert_eq!(decode_percent("100%"), "100%");
        assert_eq!(decode_percent("%zz%4"), "%zz%4");
        assert_eq!(
            redact_spec("https://u:s3cret@h:8443/x?y"),
            "https://u:***@h:8443/x?y"
        );
        assert_eq!(redact_spec("https://h/x@y"), "https://h/x@y");
        assert_eq!(redact_spec("/srv/files"), "/srv/files");
    }
}
