//! Taking `sslmode` and `sslrootcert` out of a connection string. tokio-postgres knows `sslmode`
//! only as `disable`, `prefer` or `require`, and refuses keys it does not know, so these two are
//! read here and the rest is left, unchanged, for it to parse.

use std::path::PathBuf;

use decider_core::StoreError;
use percent_encoding::percent_decode_str;

use super::SslMode;

/// The TLS parameters of a connection string; the last of a repeated key wins, as in libpq.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct TlsParams {
    /// `sslmode`; `None` when absent.
    pub(crate) mode: Option<SslMode>,
    /// `sslrootcert`: a PEM file of trusted roots.
    pub(crate) root_cert: Option<PathBuf>,
}

impl TlsParams {
    fn set(&mut self, key: &str, value: String) -> Result<bool, StoreError> {
        match key {
            "sslmode" => self.mode = Some(value.parse()?),
            "sslrootcert" => self.root_cert = Some(PathBuf::from(value)),
            _ => return Ok(false),
        }
        Ok(true)
    }
}

/// Splits `url` (`postgres://…?…` or libpq's `key=value …`) into the rest of it and its TLS
/// parameters.
pub(crate) fn take_tls_params(url: &str) -> Result<(String, TlsParams), StoreError> {
    let scheme = ["postgres://", "postgresql://"]
        .into_iter()
        .find(|scheme| url.starts_with(scheme));
    match scheme {
        Some(scheme) => from_url(url, scheme.len()),
        None => from_key_values(url),
    }
}

/// The URL form. The query starts at the first `?` after the credentials (whose password may
/// hold a `?`), where tokio-postgres starts it too.
fn from_url(url: &str, scheme_len: usize) -> Result<(String, TlsParams), StoreError> {
    let after_scheme = &url[scheme_len..];
    let host_start = after_scheme.find('@').map_or(0, |at| at + 1);
    let Some(question) = after_scheme[host_start..].find('?') else {
        return Ok((url.to_owned(), TlsParams::default()));
    };
    let query_start = scheme_len + host_start + question;
    let (head, query) = (&url[..query_start], &url[query_start + 1..]);
    let mut params = TlsParams::default();
    let mut kept = Vec::new();
    for pair in query.split('&') {
        let taken = match pair.split_once('=') {
            Some((key, value)) => params.set(&decode(key)?, decode(value)?)?,
            // Not a parameter: left for tokio-postgres to refuse.
            None => false,
        };
        if !taken {
            kept.push(pair);
        }
    }
    let rest = if kept.is_empty() {
        head.to_owned()
    } else {
        format!("{head}?{}", kept.join("&"))
    };
    Ok((rest, params))
}

fn decode(text: &str) -> Result<String, StoreError> {
    percent_decode_str(text)
        .decode_utf8()
        .map(|decoded| decoded.into_owned())
        .map_err(|e| {
            StoreError::InvalidInput(format!("bad PostgreSQL URL: {text:?} is not UTF-8: {e}"))
        })
}

/// The `key=value` form, split the way libpq and tokio-postgres split it: values may be quoted
/// with `'`, and `\` escapes the next character.
fn from_key_values(text: &str) -> Result<(String, TlsParams), StoreError> {
    let mut params = TlsParams::default();
    let mut kept: Vec<&str> = Vec::new();
    let mut rest = text.trim_start();
    while !rest.is_empty() {
        let (key, value, length) = key_value(rest)?;
        if !params.set(key, value)? {
            kept.push(&rest[..length]);
        }
        rest = rest[length..].trim_start();
    }
    Ok((kept.join(" "), params))
}

/// The parameter at the start of `text`: its key, its value unquoted and unescaped, and its
/// length in `text`.
fn key_value(text: &str) -> Result<(&str, String, usize), StoreError> {
    let bad =
        |what: &str| StoreError::InvalidInput(format!("bad PostgreSQL connection string: {what}"));
    let key_end = text
        .find(|c: char| c == '=' || c.is_whitespace())
        .unwrap_or(text.len());
    let key = &text[..key_end];
    if key.is_empty() {
        return Err(bad("a parameter without a key"));
    }
    let after_key = text[key_end..].trim_start();
    let Some(after_equals) = after_key.strip_prefix('=') else {
        return Err(bad(&format!("expected `=` after {key:?}")));
    };
    let value_text = after_equals.trim_start();
    let mut value = String::new();
    let mut chars = value_text.char_indices();
    let quoted = value_text.starts_with('\'');
    if quoted {
        chars.next();
    }
    let mut value_end = None;
    while let Some((at, c)) = chars.next() {
        match c {
            '\\' => {
                if let Some((_, escaped)) = chars.next() {
                    value.push(escaped);
                }
            }
            '\'' if quoted => {
                value_end = Some(at + 1);
                break;
            }
            c if c.is_whitespace() && !quoted => {
                value_end = Some(at);
                break;
            }
            c => value.push(c),
        }
    }
    let value_end = match value_end {
        Some(end) => end,
        None if quoted => return Err(bad(&format!("the value of {key:?} has no closing quote"))),
        None => value_text.len(),
    };
    if !quoted && value.is_empty() {
        return Err(bad(&format!("{key:?} has no value")));
    }
    let length = text.len() - value_text.len() + value_end;
    Ok((key, value, length))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(url: &str) -> (String, TlsParams) {
        take_tls_params(url).unwrap_or_else(|e| panic!("{url}: {e}"))
    }

    fn params(mode: Option<SslMode>, root_cert: Option<&str>) -> TlsParams {
        TlsParams {
            mode,
            root_cert: root_cert.map(PathBuf::from),
        }
    }

    #[test]
    fn a_url_without_tls_parameters_is_left_as_it_is() {
        for url in [
            "postgres://postgres@127.0.0.1:5432/app",
            "postgresql://u:p@h/db?application_name=x&connect_timeout=3",
            "postgres://h",
        ] {
            assert_eq!(split(url), (url.to_owned(), TlsParams::default()));
        }
    }

    #[test]
    fn url_tls_parameters_are_taken_out_and_the_rest_kept_in_order() {
        assert_eq!(
            split(
                "postgres://u@h/db?application_name=x&sslmode=verify-full&sslrootcert=/ca.pem&connect_timeout=3"
            ),
            (
                "postgres://u@h/db?application_name=x&connect_timeout=3".to_owned(),
                params(Some(SslMode::VerifyFull), Some("/ca.pem"))
            )
        );
        assert_eq!(
            split("postgres://u@h/db?sslmode=verify-ca"),
            (
                "postgres://u@h/db".to_owned(),
                params(Some(SslMode::VerifyCa), None)
            )
        );
    }

    #[test]
    fn url_tls_parameters_are_percent_decoded() {
        assert_eq!(
            split("postgres://h/db?sslrootcert=%2Fetc%2Fmy%20ca.pem&ssl%6Dode=require"),
            (
                "postgres://h/db".to_owned(),
                params(Some(SslMode::Require), Some("/etc/my ca.pem"))
            )
        );
    }

    #[test]
    fn a_question_mark_in_the_password_does_not_start_the_query() {
        assert_eq!(
            split("postgres://u:pa?ss@h/db?sslmode=disable"),
            (
                "postgres://u:pa?ss@h/db".to_owned(),
                params(Some(SslMode::Disable), None)
            )
        );
    }

    #[test]
    fn the_last_of_a_repeated_parameter_wins() {
        assert_eq!(
            split("postgres://h/db?sslmode=disable&sslmode=verify-full").1,
            params(Some(SslMode::VerifyFull), None)
        );
        assert_eq!(
            split("sslmode=require host=h sslmode=prefer").1,
            params(Some(SslMode::Prefer), None)
        );
    }

    #[test]
    fn key_value_tls_parameters_are_taken_out_and_the_rest_kept() {
        assert_eq!(
            split("host=h  sslmode = verify-ca user=u sslrootcert='/my ca.pem' dbname=d"),
            (
                "host=h user=u dbname=d".to_owned(),
                params(Some(SslMode::VerifyCa), Some("/my ca.pem"))
            )
        );
    }

    #[test]
    fn key_value_values_keep_their_quotes_and_escapes_in_what_is_left() {
        assert_eq!(
            split(r"password='it\'s secret' sslrootcert=/a\ b.pem application_name=a\ b"),
            (
                r"password='it\'s secret' application_name=a\ b".to_owned(),
                params(None, Some("/a b.pem"))
            )
        );
    }

    #[test]
    fn what_is_left_still_parses_the_same() {
        let (rest, _) = split(r"host=h password='it\'s' sslmode=verify-full port=6543");
        let config: tokio_postgres::Config = rest.parse().unwrap();
        assert_eq!(config.get_password(), Some(&b"it's"[..]));
        assert_eq!(config.get_ports(), [6543]);
    }

    #[test]
    fn a_bad_sslmode_is_invalid_input_in_either_form() {
        for url in [
            "postgres://h/db?sslmode=bogus",
            "host=h sslmode=bogus",
            "sslmode=allow",
        ] {
            match take_tls_params(url) {
                Err(StoreError::InvalidInput(message)) => {
                    assert!(message.contains("sslmode"), "{url}: {message}");
                }
                other => panic!("{url}: expected InvalidInput, got {other:?}"),
            }
        }
    }

    #[test]
    fn a_malformed_key_value_string_is_invalid_input() {
        for text in ["host", "host=", "password='open", "sslmode", "=x"] {
            assert!(
                matches!(take_tls_params(text), Err(StoreError::InvalidInput(_))),
                "{text:?} accepted"
            );
        }
    }

    #[test]
    fn an_empty_string_has_no_parameters() {
        assert_eq!(split(""), (String::new(), TlsParams::default()));
    }
}
