//! Webhooks: the outbox's loop events POSTed to HTTP endpoints, per queue or team, signed.
//!
//! Each configured webhook is a sink of the outbox relay ([`crate::relay`]) with its own cursor, so
//! a slow or failing endpoint holds back only itself. An event is one POST of its JSON (with the
//! outbox `id`); any 2xx answer delivers it, anything else (or no answer within the timeout) stops
//! the round, and the relay retries from that event with exponential backoff, so events arrive in
//! order and at least once. With a secret, every request carries `X-Sigloop-Timestamp` (Unix
//! seconds) and `X-Sigloop-Signature: sha256=HEX`, the HMAC-SHA256 of `TIMESTAMP.BODY` under the
//! secret, so that a receiver can check both origin and freshness.

use std::collections::BTreeSet;
use std::time::Duration;

use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::config::routes::RoutesConfig;
use crate::config::settings::WebhookSettings;
use crate::pipeline::core::DEAD_LETTER;
use crate::relay::{with_outbox_id, Sink};
use crate::storage::OutboxRow;

/// The signature scheme's name, the prefix of the signature header's value.
const SCHEME: &str = "sha256";

pub struct WebhookSink {
    sink: String,
    url: String,
    /// Queues whose loop events this webhook wants; `None` wants them all.
    queues: Option<BTreeSet<String>>,
    secret: Option<Vec<u8>>,
    client: reqwest::Client,
}

impl WebhookSink {
    /// The sink of `settings`; `secret` is the value of its `secret_env` variable, read by the
    /// caller. Teams are resolved to their queues with `routes`.
    pub fn new(
        settings: &WebhookSettings,
        routes: &RoutesConfig,
        secret: Option<String>,
    ) -> anyhow::Result<WebhookSink> {
        let queues = (!settings.queues.is_empty() || !settings.teams.is_empty()).then(|| {
            let mut queues: BTreeSet<String> = settings.queues.iter().cloned().collect();
            for queue in &routes.queues {
                if settings.teams.contains(&queue.team) {
                    queues.insert(queue.name.clone());
                }
            }
            queues
        });
        Ok(WebhookSink {
            sink: format!("webhook:{}", settings.name),
            url: settings.url.clone(),
            queues,
            secret: secret.map(String::into_bytes),
            client: reqwest::Client::builder()
                .timeout(Duration::from_secs(settings.timeout_secs.max(1)))
                .build()?,
        })
    }

    fn wants(&self, row: &OutboxRow) -> bool {
        if row.event.event == DEAD_LETTER {
            return false;
        }
        let Some(queues) = &self.queues else {
            return true;
        };
        serde_json::from_str::<serde_json::Value>(&row.event.payload)
            .ok()
            .and_then(|payload| {
                payload["queue"]
                    .as_str()
                    .map(|queue| queues.contains(queue))
            })
            .unwrap_or(false)
    }

    async fn post(&self, row: &OutboxRow) -> Result<(), String> {
        let body = with_outbox_id(&row.event.payload, row.id);
        let mut request = self
            .client
            .post(&self.url)
            .header("content-type", "application/json")
            .header("x-sigloop-event", &row.event.event)
            .header("x-sigloop-delivery", row.id.to_string());
        if let Some(secret) = &self.secret {
            let timestamp = chrono::Utc::now().timestamp().to_string();
            request = request
                .header("x-sigloop-timestamp", &timestamp)
                .header("x-sigloop-signature", signature(secret, &timestamp, &body));
        }
        let response = request
            .body(body)
            .send()
            .await
            .map_err(|error| format!("{}: {error}", self.url))?;
        if response.status().is_success() {
            Ok(())
        } else {
            Err(format!("{} answered {}", self.url, response.status()))
        }
    }
}

/// `sha256=HEX` of the HMAC-SHA256 of `TIMESTAMP.BODY` under `secret`.
pub fn signature(secret: &[u8], timestamp: &str, body: &str) -> String {
    // hmac: the RustCrypto HMAC over sha2, which sigloop already uses for the config version.
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes a key of any length");
    mac.update(timestamp.as_bytes());
    mac.update(b".");
    mac.update(body.as_bytes());
    format!("{SCHEME}={}", hex::encode(mac.finalize().into_bytes()))
}

#[async_trait::async_trait]
impl Sink for WebhookSink {
    fn name(&self) -> &str {
        &self.sink
    }

    async fn deliver(&self, rows: &[OutboxRow]) -> (usize, Result<(), String>) {
        for (index, row) in rows.iter().enumerate() {
            if !self.wants(row) {
                continue;
            }
            if let Err(error) = self.post(row).await {
                return (index, Err(error));
            }
        }
        (rows.len(), Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_signature_is_the_hmac_sha256_of_timestamp_dot_body_in_hex() {
        let signed = signature(b"Jefe", "what do ya want for nothing?", "");
        let expected = {
            let mut mac = Hmac::<Sha256>::new_from_slice(b"Jefe").unwrap();
            mac.update(b"what do ya want for nothing?.");
            hex::encode(mac.finalize().into_bytes())
        };
        assert_eq!(signed, format!("sha256={expected}"));
        assert_ne!(
            signature(b"Jefe", "1", "{}"),
            signature(b"other", "1", "{}"),
            "the key matters"
        );
    }
}
