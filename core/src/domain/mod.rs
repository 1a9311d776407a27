//! Domain types: prefixed ids, and values parsed once at the edge ("parse, don't validate")
//! so the rest of Herald never sees an unchecked phone number, address or time zone.

pub mod audit;
pub mod events;
pub mod jobs;
mod segments;

pub use segments::{Segments, SmsEncoding};

use std::{
    fmt,
    net::IpAddr,
    str::FromStr,
    sync::atomic::{AtomicU64, Ordering},
};

use rand::RngExt;
use serde::{Deserialize, Serialize};

/// The newest id's time and sequence, `(milliseconds << 16) | sequence`: what makes ids
/// monotonic within a process without a lock.
static LAST_STAMP: AtomicU64 = AtomicU64::new(0);

/// A new prefixed id such as `msg_01JD3Z8K6T3V4W5X6Y7Z8A9B0C`: a ULID (48 bits of milliseconds,
/// then 80 bits in Crockford base32), so ids sort by creation time and list pages can use them
/// as cursors.
///
/// Monotonic within a process, across threads: the first 16 of the 80 bits count the ids made
/// in that millisecond, the other 64 are random. Things made one after the other (a missed
/// call, then its text-back) sort one after the other even within one millisecond; past 65,536
/// ids in one millisecond the count borrows the next millisecond, still in order.
pub fn new_id(prefix: &str) -> String {
    let now = u64::try_from(chrono::Utc::now().timestamp_millis()).unwrap_or(0);
    let next = |last: u64| {
        if last >> 16 >= now {
            last + 1
        } else {
            now << 16
        }
    };
    let stamp = match LAST_STAMP.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |last| {
        Some(next(last))
    }) {
        Ok(last) | Err(last) => next(last),
    };
    let random = (u128::from(stamp & 0xFFFF) << 64) | u128::from(rand::rng().random::<u64>());
    prefixed(prefix, ulid::Ulid::from_parts(stamp >> 16, random))
}

/// The smallest id [`new_id`] could make at `millis` (ms since the epoch): every id made
/// earlier sorts before it, every id made later after it.
pub fn id_floor(prefix: &str, millis: i64) -> String {
    let millis = u64::try_from(millis).unwrap_or(0);
    prefixed(prefix, ulid::Ulid::from_parts(millis, 0))
}

fn prefixed(prefix: &str, ulid: ulid::Ulid) -> String {
    let mut buf = [0u8; ulid::ULID_LEN];
    let mut id = String::with_capacity(prefix.len() + 1 + ulid::ULID_LEN);
    id.push_str(prefix);
    id.push('_');
    id.push_str(ulid.array_to_str(&mut buf));
    id
}

/// `true` when `id` has the given prefix and the shape [`new_id`] makes.
pub fn is_id(prefix: &str, id: &str) -> bool {
    id.strip_prefix(prefix)
        .and_then(|rest| rest.strip_prefix('_'))
        .is_some_and(|tail| {
            tail.len() == 26
                && tail
                    .bytes()
                    .all(|b| b.is_ascii_digit() || b.is_ascii_uppercase())
        })
}

/// A request field that breaks a rule only a service can check (an unknown contact, a tenant
/// without a sender): the API answers 422 naming it. The one field-error type of every service.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct FieldError {
    pub field: &'static str,
    /// A stable snake_case code, e.g. `unknown_contact`.
    pub code: &'static str,
    /// A sentence a person can act on.
    pub message: String,
}

impl FieldError {
    pub fn new(field: &'static str, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            field,
            code,
            message: message.into(),
        }
    }
}

/// Why a value was refused; the API turns it into a 422 naming the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Invalid(pub String);

/// The text of an SMS, or what becomes one (a template, a prompt's answer): not blank, at
/// most [`SmsText::MAX_CHARS`] characters (ten segments, as Twilio takes them).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SmsText(String);

impl SmsText {
    pub const MAX_CHARS: usize = 1600;

    /// The text, or why not: `Err(Some(n))` when it has `n` characters, too many;
    /// `Err(None)` when it is blank.
    pub fn parse(raw: String) -> Result<Self, Option<usize>> {
        if raw.trim().is_empty() {
            return Err(None);
        }
        let chars = raw.chars().count();
        if chars > Self::MAX_CHARS {
            return Err(Some(chars));
        }
        Ok(Self(raw))
    }

    pub fn into_string(self) -> String {
        self.0
    }
}

/// An email's subject: not blank, at most [`EmailSubject::MAX_CHARS`] characters (RFC 5322's
/// line limit).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EmailSubject(String);

impl EmailSubject {
    pub const MAX_CHARS: usize = 998;

    pub fn parse(raw: String) -> Option<Self> {
        (!raw.trim().is_empty() && raw.chars().count() <= Self::MAX_CHARS).then_some(Self(raw))
    }

    pub fn into_string(self) -> String {
        self.0
    }
}

/// An E.164 phone number: `+`, a non-zero digit, then 1 to 14 digits.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct PhoneNumber(String);

impl PhoneNumber {
    pub fn parse(raw: &str) -> Result<Self, Invalid> {
        let digits = raw.strip_prefix('+');
        let ok = digits.is_some_and(|d| {
            (2..=15).contains(&d.len())
                && d.bytes().all(|b| b.is_ascii_digit())
                && !d.starts_with('0')
        });
        if ok {
            Ok(Self(raw.to_owned()))
        } else {
            Err(Invalid(format!(
                "`{}` is not a phone number in E.164 form, such as +15551234567",
                truncate(raw, 40)
            )))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for PhoneNumber {
    type Error = Invalid;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::parse(&value)
    }
}

impl From<PhoneNumber> for String {
    fn from(value: PhoneNumber) -> Self {
        value.0
    }
}

impl fmt::Display for PhoneNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// An email address as senders use them: `local@domain.tld`, no spaces, at most 254 bytes.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct EmailAddress(String);

impl EmailAddress {
    pub fn parse(raw: &str) -> Result<Self, Invalid> {
        let bad = || {
            Invalid(format!(
                "`{}` is not an email address such as name@example.com",
                truncate(raw, 60)
            ))
        };
        if raw.len() > 254
            || raw
                .chars()
                .any(|c| c.is_whitespace() || c.is_control() || c == '<' || c == '>')
        {
            return Err(bad());
        }
        let (local, domain) = raw.rsplit_once('@').ok_or_else(bad)?;
        let domain_ok = domain.len() >= 3
            && domain.contains('.')
            && !domain.starts_with('.')
            && !domain.ends_with('.')
            && !domain.contains("..")
            && domain.split('.').all(|label| {
                !label.is_empty()
                    && !label.starts_with('-')
                    && !label.ends_with('-')
                    && label.chars().all(|c| c.is_alphanumeric() || c == '-')
            });
        if local.is_empty() || local.len() > 64 || local.contains('@') || !domain_ok {
            return Err(bad());
        }
        Ok(Self(raw.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A sender as email providers take it: `name@example.com` or `Name <name@example.com>`.
pub fn parse_email_sender(raw: &str) -> Result<String, Invalid> {
    let raw = raw.trim();
    if let Some(open) = raw.find('<') {
        let Some(inner) = raw[open + 1..].strip_suffix('>') else {
            return Err(Invalid(
                "a sender with a name must look like `Name <name@example.com>`".to_owned(),
            ));
        };
        EmailAddress::parse(inner)?;
        if raw[..open].trim().is_empty() {
            return Err(Invalid(
                "a sender with angle brackets needs a name before them".to_owned(),
            ));
        }
        Ok(raw.to_owned())
    } else {
        Ok(EmailAddress::parse(raw)?.0)
    }
}

/// A webhook target: `https` on a public host, unless private targets are allowed (development
/// and tests). Hosts given by name are checked again when the call is made, after DNS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookUrl(String);

impl WebhookUrl {
    pub fn parse(raw: &str, allow_private: bool) -> Result<Self, Invalid> {
        let url = reqwest::Url::parse(raw)
            .map_err(|_| Invalid(format!("`{}` is not an absolute URL", truncate(raw, 80))))?;
        match url.scheme() {
            "https" => {}
            "http" if allow_private => {}
            "http" => {
                return Err(Invalid(
                    "webhook targets must use https (for local development, set HERALD_WEBHOOK_ALLOW_PRIVATE=true on the server)".to_owned(),
                ));
            }
            other => {
                return Err(Invalid(format!(
                    "webhook targets must use https, not {other}"
                )));
            }
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(Invalid(
                "webhook URLs must not carry credentials".to_owned(),
            ));
        }
        let Some(host) = url.host() else {
            return Err(Invalid("the webhook URL has no host".to_owned()));
        };
        if !allow_private {
            let private = match host {
                url::Host::Ipv4(ip) => is_private_ip(IpAddr::V4(ip)),
                url::Host::Ipv6(ip) => is_private_ip(IpAddr::V6(ip)),
                url::Host::Domain(name) => {
                    let name = name.trim_end_matches('.').to_ascii_lowercase();
                    name == "localhost"
                        || name.ends_with(".localhost")
                        || name.ends_with(".internal")
                        || name.ends_with(".local")
                }
            };
            if private {
                return Err(Invalid(
                    "webhook targets must be public addresses (private, loopback and link-local hosts are refused; for local development, set HERALD_WEBHOOK_ALLOW_PRIVATE=true on the server)".to_owned(),
                ));
            }
        }
        Ok(Self(url.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Private, loopback, link-local, unspecified, multicast and similar addresses that a tenant
/// must not aim Herald at, including IPv6 addresses that embed or translate to such an IPv4
/// address: on an IPv6-only host with NAT64, `[64:ff9b::7f00:1]` reaches 127.0.0.1.
pub fn is_private_ip(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_private_v4(v4),
        IpAddr::V6(v6) => is_private_v6(v6),
    }
}

fn is_private_v4(v4: std::net::Ipv4Addr) -> bool {
    let o = v4.octets();
    v4.is_private()
        || v4.is_loopback()
        || v4.is_link_local()
        || v4.is_unspecified()
        || v4.is_broadcast()
        || v4.is_multicast()
        || v4.is_documentation()
        || o[0] == 0
        || (o[0] == 100 && (o[1] & 0xC0) == 64) // 100.64.0.0/10, carrier-grade NAT
        || (o[0] == 192 && o[1] == 0 && o[2] == 0) // 192.0.0.0/24
        || (o[0] == 198 && (o[1] & 0xFE) == 18) // 198.18.0.0/15
        || o[0] >= 240
}

fn is_private_v6(v6: std::net::Ipv6Addr) -> bool {
    let s = v6.segments();
    let embedded = |hi: u16, lo: u16| {
        is_private_v4(std::net::Ipv4Addr::new(
            (hi >> 8) as u8,
            hi as u8,
            (lo >> 8) as u8,
            lo as u8,
        ))
    };
    // IPv4-mapped (::ffff:a.b.c.d) and IPv4-compatible (::a.b.c.d, deprecated).
    if s[..5] == [0; 5] && (s[5] == 0xffff || s[5] == 0) {
        return embedded(s[6], s[7]) || (s[5] == 0 && s[6] == 0);
    }
    // NAT64: the well-known prefix 64:ff9b::/96 embeds the IPv4 address; the rest of
    // 64:ff9b::/32, the local-use 64:ff9b:1::/48 among it, translates to whatever its operator
    // chose, so all of it is refused.
    if s[0] == 0x64 && s[1] == 0xff9b {
        return s[2..6] != [0; 4] || embedded(s[6], s[7]);
    }
    // 6to4 (2002::/16) embeds an IPv4 address in its next 32 bits.
    if s[0] == 0x2002 {
        return embedded(s[1], s[2]);
    }
    v6.is_loopback()
        || v6.is_unspecified()
        || v6.is_multicast()
        || (s[0] == 0x2001 && s[1] == 0) // Teredo 2001::/32: a tunnel to an IPv4 address
        || (s[0] == 0x2001 && s[1] == 0x0db8) // documentation
        || (s[0] == 0x2001 && s[1] == 0x0002 && s[2] == 0) // benchmarking 2001:2::/48
        || (s[0] == 0x2001 && (s[1] & 0xfff0) == 0x0010) // ORCHID 2001:10::/28
        || (s[0] == 0x0100 && s[1..4] == [0; 3]) // discard-only 100::/64
        || (s[0] & 0xfe00) == 0xfc00 // unique local fc00::/7
        || (s[0] & 0xffc0) == 0xfe80 // link local fe80::/10
        || (s[0] & 0xffc0) == 0xfec0 // site local fec0::/10 (deprecated)
}

/// An IANA time zone name such as `America/New_York`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimeZone(pub chrono_tz::Tz);

impl TimeZone {
    pub fn parse(raw: &str) -> Result<Self, Invalid> {
        chrono_tz::Tz::from_str(raw).map(Self).map_err(|_| {
            Invalid(format!(
                "`{}` is not an IANA time zone such as America/New_York",
                truncate(raw, 60)
            ))
        })
    }

    pub fn name(&self) -> &'static str {
        self.0.name()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Channel {
    Sms,
    Email,
    Webhook,
}

impl Channel {
    pub const ALL: [Channel; 3] = [Channel::Sms, Channel::Email, Channel::Webhook];

    pub fn as_str(self) -> &'static str {
        match self {
            Channel::Sms => "sms",
            Channel::Email => "email",
            Channel::Webhook => "webhook",
        }
    }

    pub fn parse(raw: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|c| c.as_str() == raw)
    }
}

impl fmt::Display for Channel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Whether a message is one a person waits for (`transactional`: single messages, reminders,
/// AI and human replies) or one of many (`bulk`: group sends and daily messages by default).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Priority {
    Transactional,
    Bulk,
}

impl Priority {
    pub fn as_str(self) -> &'static str {
        match self {
            Priority::Transactional => "transactional",
            Priority::Bulk => "bulk",
        }
    }

    pub fn parse(raw: &str) -> Option<Self> {
        [Priority::Transactional, Priority::Bulk]
            .into_iter()
            .find(|p| p.as_str() == raw)
    }
}

/// Where a message is in its life. See the contract for the allowed moves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MessageStatus {
    Scheduled,
    Queued,
    Sending,
    Retrying,
    Sent,
    Delivered,
    Failed,
    Undelivered,
    Canceled,
    Suppressed,
    Expired,
    Dead,
    /// An inbound message, stored on its conversation.
    Received,
}

impl MessageStatus {
    pub const ALL: [MessageStatus; 13] = [
        MessageStatus::Scheduled,
        MessageStatus::Queued,
        MessageStatus::Sending,
        MessageStatus::Retrying,
        MessageStatus::Sent,
        MessageStatus::Delivered,
        MessageStatus::Failed,
        MessageStatus::Undelivered,
        MessageStatus::Canceled,
        MessageStatus::Suppressed,
        MessageStatus::Expired,
        MessageStatus::Dead,
        MessageStatus::Received,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            MessageStatus::Scheduled => "scheduled",
            MessageStatus::Queued => "queued",
            MessageStatus::Sending => "sending",
            MessageStatus::Retrying => "retrying",
            MessageStatus::Sent => "sent",
            MessageStatus::Delivered => "delivered",
            MessageStatus::Failed => "failed",
            MessageStatus::Undelivered => "undelivered",
            MessageStatus::Canceled => "canceled",
            MessageStatus::Suppressed => "suppressed",
            MessageStatus::Expired => "expired",
            MessageStatus::Dead => "dead",
            MessageStatus::Received => "received",
        }
    }

    pub fn parse(raw: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.as_str() == raw)
    }

    /// An outcome of a run: sent on its way, or ended. (A sent SMS or email may still become
    /// `delivered` or `undelivered` on its provider's callback.)
    pub fn is_outcome(self) -> bool {
        !matches!(
            self,
            MessageStatus::Scheduled
                | MessageStatus::Queued
                | MessageStatus::Sending
                | MessageStatus::Retrying
                | MessageStatus::Received
        )
    }
}

impl fmt::Display for MessageStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A local wall-clock time `HH:MM`, as used by quiet hours and daily delivery.
pub fn parse_local_time(raw: &str) -> Result<chrono::NaiveTime, Invalid> {
    let bad = || {
        Invalid(format!(
            "`{}` is not a time of day such as 21:00",
            truncate(raw, 20)
        ))
    };
    if raw.len() != 5 || raw.as_bytes()[2] != b':' {
        return Err(bad());
    }
    chrono::NaiveTime::parse_from_str(raw, "%H:%M").map_err(|_| bad())
}

/// Compares secrets in time independent of where they differ.
/// Whether a secret someone presented is the configured one, in the same time whatever
/// either's length or content: both are hashed to 32 bytes first, so not even the length of
/// the secret leaks.
pub fn secrets_match(expected: &str, given: &str) -> bool {
    use sha2::{Digest, Sha256};
    constant_time_eq(
        &Sha256::digest(expected.as_bytes()),
        &Sha256::digest(given.as_bytes()),
    )
}

pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The most bytes of provider or receiver error text Herald stores or shows.
pub const MAX_ERROR_TEXT: usize = 1024;

/// Text from outside (a provider's error, a receiver's body, a model's answer) made safe to
/// store and show: control characters (U+0000 among them, which Postgres cannot store) are
/// removed, line breaks and tabs become spaces, runs of spaces collapse, and the result is cut
/// to at most `max_bytes` bytes at a character boundary, ending in `…` when cut.
pub fn clean_text(s: &str, max_bytes: usize) -> String {
    let mut out = String::with_capacity(s.len().min(max_bytes));
    let mut space = false;
    for c in s.chars() {
        let c = if c.is_whitespace() { ' ' } else { c };
        if c.is_control()
            || matches!(c, '\u{200B}'..='\u{200F}' | '\u{2028}'..='\u{202E}' | '\u{FEFF}')
        {
            continue;
        }
        if c == ' ' {
            if space || out.is_empty() {
                continue;
            }
            space = true;
        } else {
            space = false;
        }
        if out.len() + c.len_utf8() > max_bytes {
            // Room for the ellipsis (3 bytes) at a character boundary.
            while out.len() + '…'.len_utf8() > max_bytes {
                out.pop();
            }
            let trimmed = out.trim_end().len();
            out.truncate(trimmed);
            out.push('…');
            return out;
        }
        out.push(c);
    }
    let trimmed = out.trim_end().len();
    out.truncate(trimmed);
    out
}

/// Whether a string holds U+0000, which Postgres cannot store in `text` or `jsonb`.
pub fn has_nul(s: &str) -> bool {
    s.contains('\0')
}

/// At most `max` characters of `s`, for error messages that echo input.
pub fn truncate(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_owned()
    } else {
        let mut out: String = s.chars().take(max).collect();
        out.push('…');
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_compared_by_their_hashes_whatever_their_lengths() {
        assert!(secrets_match(
            "ops-token-0123456789",
            "ops-token-0123456789"
        ));
        assert!(!secrets_match(
            "ops-token-0123456789",
            "ops-token-012345678"
        ));
        assert!(!secrets_match("ops-token-0123456789", ""));
        assert!(!secrets_match("short", &"x".repeat(10_000)));
    }

    #[test]
    fn sms_texts_and_subjects_own_their_limits() {
        assert!(SmsText::parse("hi".into()).is_ok());
        assert_eq!(SmsText::parse("   ".into()), Err(None));
        assert!(
            SmsText::parse("é".repeat(1600)).is_ok(),
            "characters, not bytes"
        );
        assert_eq!(SmsText::parse("x".repeat(1601)), Err(Some(1601)));
        assert!(EmailSubject::parse("Your visit".into()).is_some());
        assert!(EmailSubject::parse(" ".into()).is_none());
        assert!(EmailSubject::parse("s".repeat(999)).is_none());
    }

    #[test]
    fn outside_text_is_cleaned_and_capped() {
        assert_eq!(
            clean_text("  bad\0 gate\r\n\tway \u{7}  ", 100),
            "bad gate way"
        );
        assert_eq!(clean_text("a\u{202E}b\u{FEFF}c", 100), "abc");
        let long = "é".repeat(2000);
        let cut = clean_text(&long, MAX_ERROR_TEXT);
        assert!(cut.len() <= MAX_ERROR_TEXT, "{}", cut.len());
        assert!(cut.ends_with('…'));
        assert_eq!(clean_text("short", 3), "…");
        assert!(clean_text(&"x".repeat(10), 4).len() <= 4);
        assert!(!clean_text("\0\0\0", 10).contains('\0'));
    }

    #[test]
    fn ids_have_their_prefix_and_sort_by_time() {
        let a = new_id("msg");
        std::thread::sleep(std::time::Duration::from_millis(2));
        let b = new_id("msg");
        assert!(is_id("msg", &a), "{a}");
        assert!(!is_id("ten", &a));
        assert!(a < b, "{a} should sort before {b}");
        assert_eq!(a.len(), 30);
    }

    #[test]
    fn an_id_floor_sorts_between_earlier_and_later_ids() {
        let before = new_id("msg");
        std::thread::sleep(std::time::Duration::from_millis(3));
        let floor = id_floor("msg", chrono::Utc::now().timestamp_millis() - 1);
        std::thread::sleep(std::time::Duration::from_millis(3));
        let after = new_id("msg");
        assert!(
            before < floor && floor < after,
            "{before} < {floor} < {after}"
        );
        assert_eq!(floor.len(), before.len());
    }

    #[test]
    fn ids_made_in_one_millisecond_still_sort_in_order() {
        let ids: Vec<String> = (0..1000).map(|_| new_id("msg")).collect();
        let mut sorted = ids.clone();
        sorted.sort();
        assert_eq!(ids, sorted);
    }

    #[test]
    fn ids_made_on_many_threads_are_unique_and_each_threads_sort_in_order() {
        let threads: Vec<_> = (0..4)
            .map(|_| std::thread::spawn(|| (0..2000).map(|_| new_id("msg")).collect::<Vec<_>>()))
            .collect();
        let mut all = std::collections::BTreeSet::new();
        let mut last_of_threads = Vec::new();
        for thread in threads {
            let ids = thread.join().expect("no panic");
            assert!(
                ids.windows(2).all(|w| w[0] < w[1]),
                "one thread's ids in order"
            );
            last_of_threads.push(ids.last().cloned().expect("ids"));
            all.extend(ids);
        }
        assert_eq!(all.len(), 8000, "no id made twice");
        let after = new_id("msg");
        assert!(
            last_of_threads.iter().all(|id| *id < after),
            "made later, sorts later"
        );
    }

    #[test]
    fn an_id_is_a_ulid_carrying_its_time() {
        let before = chrono::Utc::now().timestamp_millis();
        let id = new_id("ten");
        let after = chrono::Utc::now().timestamp_millis();
        let ulid = ulid::Ulid::from_string(&id["ten_".len()..]).expect("a ULID");
        let millis = i64::try_from(ulid.timestamp_ms()).expect("fits");
        assert!(
            (before..=after + 1).contains(&millis),
            "{before} <= {millis} <= {after}"
        );
    }

    #[test]
    fn phone_numbers_must_be_e164() {
        assert!(PhoneNumber::parse("+15551234567").is_ok());
        assert!(PhoneNumber::parse("+44").is_ok());
        for bad in [
            "15551234567",
            "+0555",
            "+1",
            "+1555123456789012",
            "+1 555 123",
            "",
            "+",
            "+1555abc",
        ] {
            assert!(PhoneNumber::parse(bad).is_err(), "{bad} should be refused");
        }
    }

    #[test]
    fn email_addresses_are_checked() {
        assert!(EmailAddress::parse("a@example.com").is_ok());
        assert!(EmailAddress::parse("first.last+tag@sub.example.co.uk").is_ok());
        for bad in [
            "",
            "a",
            "a@",
            "@example.com",
            "a@example",
            "a b@example.com",
            "a@exa mple.com",
            "a@.com",
            "a@example..com",
        ] {
            assert!(EmailAddress::parse(bad).is_err(), "{bad} should be refused");
        }
        assert!(parse_email_sender("Acme <hi@acme.test>").is_ok());
        assert!(parse_email_sender("hi@acme.test").is_ok());
        assert!(parse_email_sender("<hi@acme.test>").is_err());
    }

    #[test]
    fn webhook_targets_must_be_public_https() {
        assert!(WebhookUrl::parse("https://hooks.example.com/x", false).is_ok());
        assert!(WebhookUrl::parse("http://hooks.example.com/x", false).is_err());
        assert!(WebhookUrl::parse("https://127.0.0.1/x", false).is_err());
        assert!(WebhookUrl::parse("https://10.1.2.3/x", false).is_err());
        assert!(WebhookUrl::parse("https://[::1]/x", false).is_err());
        assert!(WebhookUrl::parse("https://169.254.169.254/latest", false).is_err());
        assert!(WebhookUrl::parse("https://localhost/x", false).is_err());
        assert!(WebhookUrl::parse("ftp://example.com/x", false).is_err());
        assert!(WebhookUrl::parse("http://127.0.0.1:9000/x", true).is_ok());
        assert!(WebhookUrl::parse("https://user:pw@example.com/", false).is_err());
    }

    #[test]
    fn ipv6_forms_of_private_ipv4_addresses_are_private() {
        for private in [
            "::127.0.0.1",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
            "64:ff9b::7f00:1",
            "64:ff9b::a9fe:a9fe",
            "64:ff9b:1::808:808",
            "2002:7f00:1::1",
            "2002:a00:1::",
            "2001:0:4136:e378:8000:63bf:3fff:fdd2",
            "fec0::1",
            "fd00::1",
            "fe80::1",
            "ff02::1",
            "::",
            "::1",
            "100::1",
        ] {
            let ip: IpAddr = private.parse().unwrap();
            assert!(is_private_ip(ip), "{private} must be refused");
        }
        for public in [
            "2606:4700:4700::1111",
            "64:ff9b::808:808",
            "2002:808:808::1",
            "::ffff:8.8.8.8",
            "2a00:1450:4001:82a::200e",
        ] {
            let ip: IpAddr = public.parse().unwrap();
            assert!(!is_private_ip(ip), "{public} is public");
        }
    }

    #[test]
    fn time_zones_are_iana_names() {
        assert_eq!(
            TimeZone::parse("America/New_York").unwrap().name(),
            "America/New_York"
        );
        assert!(TimeZone::parse("Mars/Olympus").is_err());
    }

    #[test]
    fn local_times_are_hh_mm() {
        assert_eq!(
            parse_local_time("21:00").unwrap(),
            chrono::NaiveTime::from_hms_opt(21, 0, 0).unwrap()
        );
        assert!(parse_local_time("9:00").is_err());
        assert!(parse_local_time("24:00").is_err());
    }
}
