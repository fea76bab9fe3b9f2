//! `[email]`: the validated settings of the email alert sink (SMTP with STARTTLS or TLS and a login).

use super::{parse_duration, RawEmail, Secret};
use std::time::Duration;

/// How the SMTP connection is secured.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum EmailSecurity {
    /// Plain connection upgraded with STARTTLS (port 587); refused when the server cannot upgrade.
    Starttls,
    /// TLS from the start (port 465).
    Tls,
    /// No encryption (local relays and tests only; a login is then sent in clear).
    None,
}

impl EmailSecurity {
    /// The usual port.
    pub fn default_port(self) -> u16 {
        match self {
            EmailSecurity::Starttls => 587,
            EmailSecurity::Tls => 465,
            EmailSecurity::None => 25,
        }
    }
}

/// A validated `[email]`.
#[derive(Clone, Debug, serde::Serialize)]
pub struct EmailConfig {
    /// SMTP server host.
    pub server: String,
    /// Port.
    pub port: u16,
    /// Connection security.
    pub security: EmailSecurity,
    /// Login and password.
    pub credentials: Option<(String, Secret)>,
    /// Sender.
    pub from: String,
    /// Recipients.
    pub to: Vec<String>,
    /// Subject template.
    pub subject: String,
    /// Body template.
    pub template: String,
    /// Per-instrument rate limit in event time (0 = none).
    pub interval_ns: u64,
    /// Attempts per alert.
    pub max_attempts: u32,
    /// First retry pause.
    pub backoff: Duration,
    /// Timeout of one SMTP exchange.
    pub timeout: Duration,
    /// Queue capacity.
    pub queue: usize,
    /// Accept certificates that do not verify.
    pub accept_invalid_certs: bool,
}

/// Whether `text` looks like a mailbox (`name@domain` or `Name <name@domain>`).
fn mailbox(text: &str) -> bool {
    let addr = match (text.find('<'), text.rfind('>')) {
        (Some(a), Some(b)) if a < b => &text[a + 1..b],
        _ => text,
    };
    let mut parts = addr.trim().split('@');
    matches!((parts.next(), parts.next(), parts.next()), (Some(l), Some(d), None) if !l.is_empty() && !d.is_empty())
}

impl EmailConfig {
    /// Validates `raw`, adding problems to `errors`; `None` when email is off (or invalid).
    pub fn from_raw(raw: &RawEmail, errors: &mut Vec<String>) -> Option<EmailConfig> {
        if raw.server.is_empty() {
            return None;
        }
        let before = errors.len();
        let security = match raw.security.as_str() {
            "starttls" => EmailSecurity::Starttls,
            "tls" => EmailSecurity::Tls,
            "none" => EmailSecurity::None,
            other => {
                errors.push(format!("email.security: {other:?} is not \"starttls\", \"tls\" or \"none\""));
                EmailSecurity::Starttls
            }
        };
        let port = match raw.port {
            0 => security.default_port(),
            p if (1..=65535).contains(&p) => p as u16,
            p => {
                errors.push(format!("email.port: {p} is not a port"));
                0
            }
        };
        if !mailbox(&raw.from) {
            errors.push(format!("email.from: {:?} is not an address", raw.from));
        }
        if raw.to.is_empty() {
            errors.push("email.to: no recipients".into());
        }
        for t in raw.to.iter().filter(|t| !mailbox(t)) {
            errors.push(format!("email.to: {t:?} is not an address"));
        }
        let mut duration = |key: &str, text: &str| {
            parse_duration(text).map_err(|e| errors.push(format!("email.{key}: {e}"))).unwrap_or_default()
        };
        let interval = duration("per-instrument-interval", &raw.per_instrument_interval);
        let backoff = duration("backoff", &raw.backoff);
        let timeout = duration("timeout", &raw.timeout);
        if raw.max_attempts < 1 {
            errors.push(format!("email.max-attempts: {} is not positive", raw.max_attempts));
        }
        if raw.queue < 1 {
            errors.push(format!("email.queue: {} is not positive", raw.queue));
        }
        let credentials = if raw.username.is_empty() {
            None
        } else {
            match std::env::var(&raw.password_env) {
                Ok(v) if !raw.password_env.is_empty() && !v.is_empty() => Some((raw.username.clone(), Secret::new(v))),
                _ => {
                    errors.push(format!(
                        "email.password-env: a login needs its password in an environment variable ({:?} is not set)",
                        raw.password_env
                    ));
                    None
                }
            }
        };
        (errors.len() == before).then(|| EmailConfig {
            server: raw.server.clone(),
            port,
            security,
            credentials,
            from: raw.from.clone(),
            to: raw.to.clone(),
            subject: raw.subject.clone(),
            template: raw.template.clone(),
            interval_ns: interval.as_nanos() as u64,
            max_attempts: raw.max_attempts.max(1) as u32,
            backoff: backoff.max(Duration::from_millis(1)),
            timeout: timeout.max(Duration::from_millis(10)),
            queue: raw.queue.max(1) as usize,
            accept_invalid_certs: raw.accept_invalid_certs,
        })
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn mailboxes() {
        assert!(super::mailbox("a@b.c"));
        assert!(super::mailbox("Desk <desk@example.com>"));
        assert!(!super::mailbox("desk"));
        assert!(!super::mailbox("a@b@c"));
    }
}
