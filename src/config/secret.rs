//! A value that never appears in logs, `Debug` output or printed configurations.

/// A secret (a password, a webhook token). `Debug` and `Serialize` print `"<redacted>"`; the value is
/// read with [`Secret::expose`] only where it is used.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

/// What a redacted value prints as.
pub const REDACTED: &str = "<redacted>";

impl Secret {
    /// Wraps a value.
    pub fn new(value: impl Into<String>) -> Secret {
        Secret(value.into())
    }

    /// The value, for the one place that sends it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(REDACTED)
    }
}

impl serde::Serialize for Secret {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(REDACTED)
    }
}

/// Whether a configuration key holds a secret (`password`, `token`, `sasl.password`, `*.key` ...).
pub fn is_secret_key(key: &str) -> bool {
    let k = key.to_ascii_lowercase();
    ["password", "passwd", "secret", "token", "api-key", "apikey", "private-key", "ssl.key.pem"]
        .iter()
        .any(|s| k.contains(s))
        && !k.ends_with("-env")
        && !k.ends_with("-header")
}

/// Redacts a URL's password (`scheme://user:PASSWORD@host`), path and query string (webhook tokens
/// live there: `https://hooks.example.com/services/T0/B0/TOKEN`).
pub fn redact_url(url: &str) -> String {
    let Some(scheme_end) = url.find("://") else { return url.to_string() };
    let (scheme, rest) = url.split_at(scheme_end + 3);
    let host_end = rest.find('/').unwrap_or(rest.len());
    let (authority, path) = rest.split_at(host_end);
    let authority = match authority.rfind('@') {
        Some(at) => {
            let user = authority[..at].split(':').next().unwrap_or("");
            format!("{user}:{REDACTED}@{}", &authority[at + 1..])
        }
        None => authority.to_string(),
    };
    let path = if path.is_empty() || path == "/" { path.to_string() } else { format!("/{REDACTED}") };
    format!("{scheme}{authority}{path}")
}

/// Redacts every secret of a configuration tree in place: values under secret keys, and passwords
/// and query strings of URLs.
pub fn redact(value: &mut toml::Value) {
    match value {
        toml::Value::Table(t) => {
            for (k, v) in t.iter_mut() {
                if is_secret_key(k) && !matches!(v, toml::Value::Table(_)) {
                    *v = toml::Value::String(REDACTED.into());
                } else {
                    redact(v);
                }
            }
        }
        toml::Value::Array(a) => a.iter_mut().for_each(redact),
        toml::Value::String(s) if s.contains("://") => *s = redact_url(s),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_do_not_print() {
        let s = Secret::new("hunter2");
        assert_eq!(format!("{s:?}"), REDACTED);
        assert_eq!(serde_json::to_string(&s).unwrap(), format!("\"{REDACTED}\""));
        assert_eq!(s.expose(), "hunter2");
        assert_eq!(redact_url("https://u:pw@h:1/p?token=x"), format!("https://u:{REDACTED}@h:1/{REDACTED}"));
        assert_eq!(redact_url("http://h:9/"), "http://h:9/");
        let mut v: toml::Value = toml::from_str(
            "[kafka.properties]\n\"sasl.password\" = \"pw\"\n[webhook]\nsecret-env = \"E\"\nurl = \"https://h/x?k=1\"",
        )
        .unwrap();
        redact(&mut v);
        let text = toml::to_string(&v).unwrap();
        assert!(!text.contains("pw\"") && !text.contains("k=1"), "{text}");
        assert!(text.contains("secret-env = \"E\""), "{text}");
    }
}
