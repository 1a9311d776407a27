//! The Standard Webhooks verification algorithm, written here from the specification (not
//! with Herald's signing code), as a client's receiver runs it: the signed content is
//! `{webhook-id}.{webhook-timestamp}.{body}`, the key is the base64 after `whsec_`, the
//! signature HMAC-SHA256 in base64 under `v1,`; `webhook-signature` holds one or more such
//! signatures separated by spaces and any one that verifies will do; a timestamp more than
//! five minutes from now is refused.

use axum::http::HeaderMap;
use base64::{Engine, engine::general_purpose::STANDARD};
use sha2::{Digest, Sha256};

const TOLERANCE_SECS: i64 = 300;

/// HMAC-SHA256 (RFC 2104).
fn hmac_sha256(key: &[u8], message: &[u8]) -> [u8; 32] {
    const BLOCK: usize = 64;
    let mut k = [0u8; BLOCK];
    if key.len() > BLOCK {
        k[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        k[..key.len()].copy_from_slice(key);
    }
    let pad = |byte: u8| k.map(|b| b ^ byte);
    let inner = Sha256::new()
        .chain_update(pad(0x36))
        .chain_update(message)
        .finalize();
    Sha256::new()
        .chain_update(pad(0x5c))
        .chain_update(inner)
        .finalize()
        .into()
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Result<&'a str, String> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| format!("no {name} header"))
}

/// The `v1` signatures in `webhook-signature` that `secret` made over this delivery.
pub fn signatures_by(secret: &str, headers: &HeaderMap, body: &[u8]) -> Result<usize, String> {
    let id = header(headers, "webhook-id")?;
    let timestamp = header(headers, "webhook-timestamp")?;
    let key = STANDARD
        .decode(secret.strip_prefix("whsec_").unwrap_or(secret))
        .map_err(|e| format!("the secret is not base64: {e}"))?;
    let mut content = format!("{id}.{timestamp}.").into_bytes();
    content.extend_from_slice(body);
    let expected = STANDARD.encode(hmac_sha256(&key, &content));
    Ok(header(headers, "webhook-signature")?
        .split(' ')
        .filter_map(|s| s.strip_prefix("v1,"))
        .filter(|s| *s == expected)
        .count())
}

/// Verifies a delivery as a receiver holding `secret` would; returns why not.
pub fn verify(secret: &str, headers: &HeaderMap, body: &[u8]) -> Result<(), String> {
    let timestamp: i64 = header(headers, "webhook-timestamp")?
        .parse()
        .map_err(|_| "webhook-timestamp is not a number".to_owned())?;
    if (chrono::Utc::now().timestamp() - timestamp).abs() > TOLERANCE_SECS {
        return Err(format!("timestamp {timestamp} is outside the tolerance"));
    }
    match signatures_by(secret, headers, body)? {
        0 => Err("no signature verifies with the secret".to_owned()),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_specification_example_verifies() {
        let mut headers = HeaderMap::new();
        headers.insert(
            "webhook-id",
            "msg_p5jXN8AQM9LWM0D4loKWxJek".parse().unwrap(),
        );
        headers.insert("webhook-timestamp", "1614265330".parse().unwrap());
        headers.insert(
            "webhook-signature",
            "v1,bm9ldmVy v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
                .parse()
                .unwrap(),
        );
        let n = signatures_by(
            "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
            &headers,
            br#"{"test": 2432232314}"#,
        )
        .unwrap();
        assert_eq!(n, 1);
    }
}
