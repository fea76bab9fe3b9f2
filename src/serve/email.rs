//! The email alert sink: each alert mailed over SMTP (lettre), STARTTLS or TLS with a login, from a
//! thread of its own, with the webhook's rate limit, retries, grace period and counters
//! (`lobsentry_email_*_total`). Transient SMTP errors (4xx answers, connection problems, timeouts)
//! are retried; permanent ones (5xx: a bad address, a refused login) are not.

use super::delivery::{Attempt, Delivery, DeliveryCounters, Policy};
use crate::alert::{Alert, AlertSink};
use crate::config::{fill_plain, EmailConfig, EmailSecurity};
use crate::metrics::Counters;
use lettre::message::header::ContentType;
use lettre::message::Mailbox;
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Tls, TlsParameters};
use lettre::{Message, SmtpTransport, Transport};
use std::sync::Arc;
use std::time::Duration;

/// A running email sink.
#[derive(Debug)]
pub struct Email {
    config: EmailConfig,
    delivery: Delivery,
}

/// Separates the subject from the body in a queued message.
const SUBJECT_END: char = '\u{0}';

fn fill(template: &str, alert: &Alert) -> String {
    fill_plain(template, &alert.to_json(), &crate::alert::placeholders(alert))
}

impl Email {
    /// Checks the addresses, builds the SMTP transport and starts the delivery thread.
    pub fn start(config: EmailConfig, counters: Arc<Counters>) -> Result<Email, crate::Error> {
        let bad = |what: &str, e: &dyn std::fmt::Display| crate::Error::Config(vec![format!("email.{what}: {e}")]);
        let from: Mailbox = config.from.parse().map_err(|e| bad("from", &e))?;
        let to: Vec<Mailbox> =
            config.to.iter().map(|t| t.parse::<Mailbox>()).collect::<Result<_, _>>().map_err(|e| bad("to", &e))?;
        let tls = || {
            TlsParameters::builder(config.server.clone())
                .dangerous_accept_invalid_certs(config.accept_invalid_certs)
                .dangerous_accept_invalid_hostnames(config.accept_invalid_certs)
                .build()
                .map_err(|e| bad("security", &e))
        };
        let mut builder = SmtpTransport::builder_dangerous(&config.server)
            .port(config.port)
            .timeout(Some(config.timeout))
            .tls(match config.security {
                EmailSecurity::Starttls => Tls::Required(tls()?),
                EmailSecurity::Tls => Tls::Wrapper(tls()?),
                EmailSecurity::None => Tls::None,
            });
        if let Some((user, password)) = &config.credentials {
            builder = builder.credentials(Credentials::new(user.clone(), password.expose().to_string()));
        }
        let transport = builder.build();
        let m = &counters.metrics;
        let tallies = DeliveryCounters {
            sent: m.email_sent.clone(),
            failed: m.email_failed.clone(),
            retries: m.email_retries.clone(),
            suppressed: m.email_suppressed.clone(),
            dropped: m.email_dropped.clone(),
        };
        let policy = Policy {
            interval_ns: config.interval_ns,
            max_attempts: config.max_attempts,
            backoff: config.backoff,
            queue: config.queue,
        };
        let send = move |queued: &str| {
            let (subject, body) = queued.split_once(SUBJECT_END).unwrap_or(("lobsentry alert", queued));
            let mut message = Message::builder().from(from.clone()).subject(subject).header(ContentType::TEXT_PLAIN);
            for t in &to {
                message = message.to(t.clone());
            }
            let message = match message.body(body.to_string()) {
                Ok(m) => m,
                Err(e) => return Attempt::Permanent(e.to_string()),
            };
            match transport.send(&message) {
                Ok(_) => Attempt::Sent,
                Err(e) if e.is_permanent() => Attempt::Permanent(e.to_string()),
                Err(e) => Attempt::Transient(e.to_string()),
            }
        };
        let delivery = Delivery::start("lobsentry-email", policy, tallies, send)
            .map_err(|e| crate::Error::Io(format!("email: cannot start its thread: {e}")))?;
        Ok(Email { config, delivery })
    }
}

impl AlertSink for Email {
    fn name(&self) -> &str {
        "email"
    }

    fn send(&self, alert: &Alert) {
        self.delivery.offer(alert, || {
            let subject = fill(&self.config.subject, alert).replace(['\r', '\n', SUBJECT_END], " ");
            format!("{subject}{SUBJECT_END}{}", fill(&self.config.template, alert))
        });
    }

    fn finish(&self, grace: Duration) -> Result<Option<String>, String> {
        let done = self.delivery.finish(grace);
        Ok((done.failed > 0).then(|| {
            format!(
                "email: {} alerts not delivered via {}:{} ({} given up, {} left when the {grace:?} grace period ended); last error: {}",
                done.failed,
                self.config.server,
                self.config.port,
                done.failed.saturating_sub(done.left),
                done.left,
                done.last_error.as_deref().unwrap_or("none")
            )
        }))
    }
}
