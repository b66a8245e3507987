//! `[notify] webhook_url_file`: the event POSTed as JSON, either bkp's own
//! document (`bkp.notify/1`) or a Slack-compatible `{"text": …}`.
//!
//! The URL is a secret (a Slack webhook's path is its token), so it lives in a
//! file (or a systemd credential), is read only when there is something to
//! send, and never appears in a message: errors name the host only. TLS trusts
//! the system's roots (corporate CAs included), else Mozilla's bundle. No
//! redirects are followed, so the body never goes anywhere but the URL.

use std::path::Path;
use std::time::Duration;

use anyhow::{anyhow, bail, Result};

/// The body a webhook gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// The event document itself (`bkp.notify/1`).
    Json,
    /// `{"text": "…"}`: Slack, Mattermost, Rocket.Chat and the like.
    Slack,
}

impl Format {
    pub fn parse(s: &str) -> Option<Format> {
        match s {
            "json" => Some(Format::Json),
            "slack" => Some(Format::Slack),
            _ => None,
        }
    }
}

/// A configured webhook: where its URL is kept and what it is sent.
#[derive(Debug, Clone)]
pub struct Webhook {
    pub url_file: std::path::PathBuf,
    pub format: Format,
}

/// The body for `doc` in `format`.
pub fn body(format: Format, doc: &serde_json::Value) -> serde_json::Value {
    match format {
        Format::Json => doc.clone(),
        Format::Slack => serde_json::json!({ "text": slack_escape(&summary(doc)) }),
    }
}

/// Slack's three control characters, escaped as its API asks, so that a store
/// key or a message cannot become a mention (`<!channel>`) or a link.
fn slack_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// One line a person reads in a chat channel.
pub fn summary(doc: &serde_json::Value) -> String {
    let s = |k: &str| doc[k].as_str().unwrap_or("?").to_string();
    let code = match doc["exit_code"].as_i64() {
        Some(c) => format!(" (exit {c} {})", s("code")),
        None => String::new(),
    };
    format!(
        "bkp {} on {}: {}{code}: {}",
        s("operation"),
        s("host"),
        s("event"),
        s("message")
    )
}

/// Reads the URL from its file and checks it is one bkp will POST to.
fn read_url(file: &Path) -> Result<String> {
    let path = crate::credentials::expand_credentials(file)?;
    let text = std::fs::read_to_string(&path)
        .map_err(|e| anyhow!("cannot read the webhook URL file {}: {e}", path.display()))?;
    let url = text.trim().to_string();
    if !(url.starts_with("https://") || url.starts_with("http://"))
        || url.contains(char::is_whitespace)
    {
        bail!(
            "the webhook URL file {} does not hold one http(s):// URL",
            path.display()
        );
    }
    Ok(url)
}

/// The host of `url`, the only part of it a message may show.
fn host(url: &str) -> &str {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    // Credentials in the URL (`user:pass@host`) stay out of messages too.
    authority.rsplit('@').next().unwrap_or("")
}

fn agent(timeout: Duration) -> ureq::Agent {
    use ureq::tls::{Certificate, RootCerts, TlsConfig};
    let native = rustls_native_certs::load_native_certs();
    let certs: Vec<Certificate<'static>> = native
        .certs
        .iter()
        .map(|c| Certificate::from_der(c.as_ref()).to_owned())
        .collect();
    let roots = if certs.is_empty() {
        RootCerts::WebPki
    } else {
        RootCerts::new_with_certs(&certs)
    };
    ureq::Agent::config_builder()
        .timeout_global(Some(timeout))
        .max_redirects(0)
        .http_status_as_error(false)
        .tls_config(TlsConfig::builder().root_certs(roots).build())
        .build()
        .new_agent()
}

/// POSTs the event. The error names the host and what went wrong, never the URL.
pub fn send(hook: &Webhook, doc: &serde_json::Value, timeout: Duration) -> Result<()> {
    let url = read_url(&hook.url_file)?;
    let host = host(&url).to_string();
    let payload = serde_json::to_vec(&body(hook.format, doc))?;
    let response = agent(timeout)
        .post(url.as_str())
        .header("Content-Type", "application/json")
        .header("User-Agent", concat!("bkp/", env!("CARGO_PKG_VERSION")))
        .send(&payload[..])
        .map_err(|e| anyhow!("the webhook at {host} was not reached: {}", reason(&e)))?;
    let status = response.status();
    if !status.is_success() {
        bail!("the webhook at {host} answered HTTP {}", status.as_u16());
    }
    Ok(())
}

/// What went wrong, in words that cannot carry the URL.
fn reason(e: &ureq::Error) -> String {
    match e {
        ureq::Error::Timeout(_) => "timed out".into(),
        ureq::Error::Io(io) => format!("{}", io.kind()),
        ureq::Error::HostNotFound => "host not found".into(),
        ureq::Error::ConnectionFailed => "connection failed".into(),
        ureq::Error::Tls(_) | ureq::Error::Rustls(_) => {
            "TLS failed (certificate or handshake)".into()
        }
        ureq::Error::StatusCode(c) => format!("HTTP {c}"),
        _ => "request failed".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_show_the_host_and_never_the_token() {
        assert_eq!(
            host("https://hooks.slack.com/services/T000/B000/SECRET"),
            "hooks.slack.com"
        );
        assert_eq!(
            host("http://u:SECRET@127.0.0.1:8080/x?t=SECRET"),
            "127.0.0.1:8080"
        );
        assert_eq!(host("https://h.example?token=SECRET"), "h.example");
    }

    #[test]
    fn slack_gets_one_line_and_json_gets_the_document() {
        let doc = serde_json::json!({
            "schema": "bkp.notify/1", "event": "failure", "operation": "logs",
            "exit_code": 6, "code": "transient", "message": "the ledger is down",
            "host": "db1",
        });
        assert_eq!(
            body(Format::Slack, &doc),
            serde_json::json!({"text": "bkp logs on db1: failure (exit 6 transient): the ledger is down"})
        );
        assert_eq!(body(Format::Json, &doc), doc);
        let hostile = serde_json::json!({"message": "<!channel> & <https://x|y>"});
        assert_eq!(
            body(Format::Slack, &hostile)["text"],
            "bkp ? on ?: ?: &lt;!channel&gt; &amp; &lt;https://x|y&gt;"
        );
    }
}
