//! Twilio's request signature (`X-Twilio-Signature`): HMAC-SHA1 keyed by the auth token over
//! the URL Twilio called, followed by every form parameter sorted by name as name+value,
//! base64. Checked on inbound texts and status callbacks; a request that fails it changes
//! nothing.

use base64::{Engine, engine::general_purpose::STANDARD};
use hmac::{Hmac, KeyInit, Mac};
use sha1::Sha1;

/// The signature Twilio would send for `url` and these form parameters.
pub fn compute(auth_token: &str, url: &str, params: &[(String, String)]) -> String {
    let mut sorted: Vec<&(String, String)> = params.iter().collect();
    sorted.sort();
    let mut mac = Hmac::<Sha1>::new_from_slice(auth_token.as_bytes())
        .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
    mac.update(url.as_bytes());
    for (name, value) in sorted {
        mac.update(name.as_bytes());
        mac.update(value.as_bytes());
    }
    STANDARD.encode(mac.finalize().into_bytes())
}

/// Whether `signature` is Twilio's for this request. Like Twilio's own SDKs, it accepts the
/// URL with the scheme's default port made explicit and with any port removed, since Twilio
/// signs the URL exactly as it was configured.
pub fn validate(auth_token: &str, url: &str, params: &[(String, String)], signature: &str) -> bool {
    let Ok(given) = STANDARD.decode(signature.trim()) else {
        return false;
    };
    [with_default_port(url), without_port(url)]
        .into_iter()
        .flatten()
        .any(|candidate| {
            let expected = STANDARD
                .decode(compute(auth_token, &candidate, params))
                .unwrap_or_default();
            crate::domain::constant_time_eq(&expected, &given)
        })
}

/// `(scheme, authority, rest)` of an absolute URL.
fn split(url: &str) -> Option<(&str, &str, &str)> {
    let (scheme, after) = url.split_once("://")?;
    let end = after.find(['/', '?', '#']).unwrap_or(after.len());
    Some((scheme, &after[..end], &after[end..]))
}

/// The host part of an authority and its port, if any (IPv6 literals keep their brackets).
fn host_port(authority: &str) -> (&str, Option<&str>) {
    let host_start = authority.rfind('@').map_or(0, |i| i + 1);
    let hostport = &authority[host_start..];
    match hostport.rfind(':') {
        Some(i) if !hostport[i..].contains(']') => {
            (&authority[..host_start + i], Some(&hostport[i + 1..]))
        }
        _ => (authority, None),
    }
}

fn with_default_port(url: &str) -> Option<String> {
    let (scheme, authority, rest) = split(url)?;
    let (host, port) = host_port(authority);
    let port = match (port, scheme) {
        (Some(p), _) => p.to_owned(),
        (None, "https") => "443".to_owned(),
        (None, "http") => "80".to_owned(),
        (None, _) => return Some(url.to_owned()),
    };
    Some(format!("{scheme}://{host}:{port}{rest}"))
}

fn without_port(url: &str) -> Option<String> {
    let (scheme, authority, rest) = split(url)?;
    let (host, _) = host_port(authority);
    Some(format!("{scheme}://{host}{rest}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The vectors of Twilio's own SDK tests (twilio-python's test_request_validator.py).
    const TOKEN: &str = "12345";
    const URL: &str = "https://mycompany.com/myapp.php?foo=1&bar=2";

    fn params() -> Vec<(String, String)> {
        [
            ("CallSid", "CA1234567890ABCDE"),
            ("Digits", "1234"),
            ("From", "+14158675309"),
            ("To", "+18005551212"),
            ("Caller", "+14158675309"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
    }

    #[test]
    fn computes_twilios_published_signature() {
        assert_eq!(
            compute(TOKEN, URL, &params()),
            "RSOYDt4T1cUTdK1PDd93/VVr8B8="
        );
        assert!(validate(
            TOKEN,
            URL,
            &params(),
            "RSOYDt4T1cUTdK1PDd93/VVr8B8="
        ));
    }

    #[test]
    fn repeated_parameters_sort_by_value_too() {
        let params: Vec<(String, String)> = [
            ("Sid", "CA123"),
            ("SidAccount", "AC123"),
            ("Digits", "5678"),
            ("Digits", "1234"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        assert_eq!(compute(TOKEN, URL, &params), "IK+Dwps556ElfBT0I3Rgjkr1wJU=");
    }

    #[test]
    fn accepts_the_port_variants_twilios_sdks_accept() {
        // A signature over the URL without a port validates a URL with one.
        assert!(validate(
            TOKEN,
            &URL.replace(".com", ".com:1234"),
            &params(),
            "RSOYDt4T1cUTdK1PDd93/VVr8B8="
        ));
        // A signature over http with port 1234.
        let http_1234 = URL.replace(".com", ".com:1234").replace("https", "http");
        assert!(validate(
            TOKEN,
            &http_1234,
            &params(),
            "Zmvh+3yNM1Phv2jhDCwEM3q5ebU="
        ));
        // Signatures over the default ports made explicit.
        assert!(validate(
            TOKEN,
            URL,
            &params(),
            "kvajT1Ptam85bY51eRf/AJRuM3w="
        ));
        assert!(validate(
            TOKEN,
            &URL.replace("https", "http"),
            &params(),
            "0ZXoZLH/DfblKGATFgpif+LLRf4="
        ));
    }

    #[test]
    fn tampering_is_caught() {
        let good = compute(TOKEN, URL, &params());
        let mut changed = params();
        changed[3].1 = "+18005551213".to_owned();
        assert!(
            !validate(TOKEN, URL, &changed, &good),
            "a changed parameter"
        );
        let mut added = params();
        added.push(("Body".to_owned(), "STOP".to_owned()));
        assert!(!validate(TOKEN, URL, &added, &good), "an added parameter");
        assert!(
            !validate(
                TOKEN,
                "https://mycompany.com/myapp.php?foo=1&bar=3",
                &params(),
                &good
            ),
            "another URL"
        );
        assert!(!validate("54321", URL, &params(), &good), "another token");
        assert!(!validate(TOKEN, URL, &params(), ""), "no signature");
        assert!(!validate(TOKEN, URL, &params(), "not base64!"), "garbage");
    }

    #[test]
    fn a_round_trip_validates() {
        let url = "http://127.0.0.1:8080/v1/inbound/twilio/status";
        let p = vec![
            ("MessageSid".to_owned(), "SM1".to_owned()),
            ("MessageStatus".to_owned(), "delivered".to_owned()),
        ];
        assert!(validate("secret", url, &p, &compute("secret", url, &p)));
    }
}
