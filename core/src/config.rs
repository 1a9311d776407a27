//! Configuration: one struct, read from the environment once at start and validated,
//! with every problem reported by the name of the variable at fault.

use std::{collections::HashMap, fmt, net::SocketAddr, time::Duration};

/// A value that must never reach a log: `Debug` and `Display` print `[redacted]`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret<T>(T);

impl<T> Secret<T> {
    pub fn new(value: T) -> Self {
        Self(value)
    }

    /// The secret itself, for the one place that needs it (a connection, a signature).
    pub fn expose(&self) -> &T {
        &self.0
    }
}

impl<T> fmt::Debug for Secret<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

impl<T> fmt::Display for Secret<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SmsProviderKind {
    Log,
    Twilio,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EmailProviderKind {
    Log,
    Resend,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Json,
    Pretty,
}

#[derive(Debug, Clone)]
pub struct TwilioConfig {
    pub account_sid: Option<String>,
    pub auth_token: Option<Secret<String>>,
    pub base_url: String,
}

#[derive(Debug, Clone)]
pub struct ResendConfig {
    pub api_key: Option<Secret<String>>,
    pub base_url: String,
}

/// One OpenAI-compatible chat endpoint (OpenAI, Ollama, vLLM).
#[derive(Debug, Clone)]
pub struct LlmEndpoint {
    pub base_url: String,
    pub api_key: Option<Secret<String>>,
    pub model: String,
}

#[derive(Debug, Clone)]
pub struct Config {
    pub database_url: Secret<String>,
    pub redis_url: Secret<String>,
    pub listen: SocketAddr,
    /// How providers reach the API: status callbacks and webhook signatures use it.
    pub public_url: String,
    pub ops_token: Option<Secret<String>>,
    pub sms_provider: SmsProviderKind,
    pub twilio: TwilioConfig,
    pub email_provider: EmailProviderKind,
    pub resend: ResendConfig,
    pub llm: Option<LlmEndpoint>,
    pub llm_fallback: Option<LlmEndpoint>,
    pub max_attempts: u32,
    pub retry_base: Duration,
    pub retry_max: Duration,
    pub provider_timeout: Duration,
    pub llm_timeout: Duration,
    pub worker_concurrency: usize,
    pub lease: Duration,
    pub tenant_send_rate: u32,
    pub api_rate: u32,
    pub webhook_allow_private: bool,
    pub log_format: LogFormat,
    pub log_filter: String,
    /// Prefix of every Redis key, so one Redis can host several deployments (and every test
    /// its own namespace).
    pub queue_prefix: String,
    /// `HERALD_QUEUE_PARTITIONS`: partitions per queue, each under its own hash tag (`None`:
    /// one on a single Redis, sixteen on a cluster).
    pub queue_partitions: Option<usize>,
    /// How long SIGTERM waits for in-flight jobs and requests before giving up.
    pub shutdown_timeout: Duration,
    /// Postgres connections per process.
    pub database_pool_size: u32,
    /// When a provider's (or a tenant's webhook origin's) circuit opens, and for how long.
    pub circuit: crate::services::breaker::BreakerSettings,
    /// Failed authentications per second per client address (burst twice that); past it,
    /// 429 without a database lookup.
    pub auth_failure_rate: u32,
    /// Take the client address from the last `X-Forwarded-For` entry (behind a proxy).
    pub trust_forwarded_for: bool,
    /// Model calls per contact per hour for AI replies; past it, texts are stored but not
    /// answered by a model (one short notice per hour).
    pub ai_replies_per_hour: u32,
    /// How often the scheduler's daily tick looks for subscriptions due (every minute in
    /// production; tests race schedulers more often).
    pub daily_tick_seconds: u32,
    /// How long after a carrier reports an SMS `undelivered` with a transient code (the
    /// handset was off, the carrier busy) it is sent once more, while `expires_at` allows.
    pub redeliver_after: Duration,
    /// An event endpoint with no successful delivery for this long is disabled.
    pub endpoint_disable_after: Duration,
    /// The waits between attempts of one event delivery (each ±20 %); when they are spent,
    /// the delivery has failed.
    pub event_retry_schedule: Vec<Duration>,
    /// Where herald-worker and herald-scheduler serve `/metrics` (`None`: off).
    pub worker_metrics_listen: Option<SocketAddr>,
    pub scheduler_metrics_listen: Option<SocketAddr>,
    /// `HERALD_OTLP_ENDPOINT`: where spans go over OTLP/HTTP (the collector's base URL, such
    /// as `http://127.0.0.1:4318`, or its full `.../v1/traces`); none: no traces at all.
    pub otlp_endpoint: Option<String>,
}

/// The waits between an event delivery's attempts: 5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 10 h.
pub const EVENT_RETRY_SCHEDULE: [Duration; 7] = [
    Duration::from_secs(5),
    Duration::from_secs(300),
    Duration::from_secs(1_800),
    Duration::from_secs(7_200),
    Duration::from_secs(18_000),
    Duration::from_secs(36_000),
    Duration::from_secs(36_000),
];

/// A span such as `250ms`, `90s`, `15m`, `2h` or `5d`: more than nothing, at most 366 days.
fn parse_span(s: &str) -> Result<Duration, String> {
    let bad = || "must be a span such as 90s, 15m, 2h or 5d".to_owned();
    let (digits, unit_ms) = if let Some(d) = s.strip_suffix("ms") {
        (d, 1)
    } else {
        let (digits, unit) = s.split_at(s.len().saturating_sub(1));
        let unit_ms = match unit {
            "s" => 1_000,
            "m" => 60_000,
            "h" => 3_600_000,
            "d" => 86_400_000,
            _ => return Err(bad()),
        };
        (digits, unit_ms)
    };
    let n: u64 = digits.parse().map_err(|_| bad())?;
    n.checked_mul(unit_ms)
        .filter(|ms| (1..=366 * 86_400_000).contains(ms))
        .map(Duration::from_millis)
        .ok_or_else(bad)
}

/// Everything wrong with the environment, one line per variable.
#[derive(Debug, thiserror::Error)]
#[error("invalid configuration:\n{}", .problems.iter().map(|p| format!("  - {p}")).collect::<Vec<_>>().join("\n"))]
pub struct ConfigError {
    pub problems: Vec<String>,
}

impl Config {
    /// How long one delivery job may run before the worker abandons it: the provider call's
    /// own timeout plus room for the database work around it.
    pub fn delivery_job_timeout(&self) -> Duration {
        self.provider_timeout + Duration::from_secs(30)
    }

    /// A `sending` claim older than this belongs to an attempt that can no longer report
    /// back: its job ran out of time, and a dead worker's lease has expired too. Only a job
    /// lost with Redis's data leaves a message like that; the next job for it takes over.
    pub fn stale_claim_after(&self) -> Duration {
        self.delivery_job_timeout() + self.lease + Duration::from_secs(10)
    }

    /// Reads the process environment.
    pub fn from_env() -> Result<Self, ConfigError> {
        let vars: HashMap<String, String> = std::env::vars().collect();
        Self::from_lookup(|name| vars.get(name).cloned())
    }

    /// Reads configuration from any lookup (tests pass a map; production the environment).
    /// Every problem is collected, so one run names every bad variable.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let mut r = Reader {
            lookup: &lookup,
            problems: Vec::new(),
        };
        // A value that is missing or malformed has pushed a problem; the fallbacks below
        // only fill the struct that is then thrown away.
        let (database_url, redis_url) = r.urls();
        let (listen, public_url, ops_token) = r.http();
        let (sms_provider, twilio) = r.sms();
        let (email_provider, resend) = r.email();
        let (max_attempts, retry_base, retry_max) = r.retries();
        let (log_format, log_filter, queue_prefix) = r.logging();
        let config = Config {
            database_url: Secret::new(database_url.unwrap_or_default()),
            redis_url: Secret::new(redis_url.unwrap_or_default()),
            listen,
            public_url,
            ops_token,
            sms_provider: sms_provider.unwrap_or(SmsProviderKind::Log),
            twilio,
            email_provider: email_provider.unwrap_or(EmailProviderKind::Log),
            resend,
            llm: r.llm("HERALD_LLM"),
            llm_fallback: r.llm("HERALD_LLM_FALLBACK"),
            max_attempts,
            retry_base,
            retry_max,
            provider_timeout: r.millis("HERALD_PROVIDER_TIMEOUT_MS", 10_000, 1, 600_000),
            llm_timeout: r.millis("HERALD_LLM_TIMEOUT_MS", 10_000, 1, 600_000),
            worker_concurrency: r.number("HERALD_WORKER_CONCURRENCY", 100, 1, 10_000) as usize,
            lease: r.millis("HERALD_LEASE_MS", 10_000, 100, 3_600_000),
            tenant_send_rate: r.number("HERALD_TENANT_SEND_RATE", 100, 1, 1_000_000),
            api_rate: r.number("HERALD_API_RATE", 200, 1, 1_000_000),
            webhook_allow_private: r.boolean("HERALD_WEBHOOK_ALLOW_PRIVATE", false),
            log_format: log_format.unwrap_or(LogFormat::Json),
            log_filter,
            queue_prefix,
            queue_partitions: r.parsed("HERALD_QUEUE_PARTITIONS", None, |s| {
                match s.parse::<usize>() {
                    Ok(n) if (1..=256).contains(&n) => Ok(n),
                    _ => Err("must be a whole number from 1 to 256".to_owned()),
                }
            }),
            shutdown_timeout: r.millis("HERALD_SHUTDOWN_TIMEOUT_MS", 30_000, 0, 3_600_000),
            database_pool_size: r.number("HERALD_DATABASE_POOL_SIZE", 20, 1, 1_000),
            circuit: r.circuit(),
            auth_failure_rate: r.number("HERALD_AUTH_FAILURE_RATE", 10, 1, 1_000_000),
            trust_forwarded_for: r.boolean("HERALD_TRUST_FORWARDED_FOR", false),
            ai_replies_per_hour: r.number("HERALD_AI_REPLIES_PER_HOUR", 10, 0, 10_000),
            daily_tick_seconds: r.number("HERALD_DAILY_TICK_SECONDS", 60, 1, 60),
            redeliver_after: r.span("HERALD_REDELIVER_AFTER", Duration::from_secs(15 * 60)),
            endpoint_disable_after: r.span(
                "HERALD_ENDPOINT_DISABLE_AFTER",
                Duration::from_secs(5 * 86_400),
            ),
            event_retry_schedule: r.spans("HERALD_EVENT_RETRY_SCHEDULE", &EVENT_RETRY_SCHEDULE),
            worker_metrics_listen: r
                .listen_or_off("HERALD_WORKER_METRICS_LISTEN", "127.0.0.1:9101"),
            scheduler_metrics_listen: r
                .listen_or_off("HERALD_SCHEDULER_METRICS_LISTEN", "127.0.0.1:9102"),
            otlp_endpoint: r.get("HERALD_OTLP_ENDPOINT").map(|_| {
                let url = r.url("HERALD_OTLP_ENDPOINT", "");
                if url.ends_with("/v1/traces") {
                    url
                } else {
                    format!("{url}/v1/traces")
                }
            }),
        };
        if r.problems.is_empty() {
            Ok(config)
        } else {
            Err(ConfigError {
                problems: r.problems,
            })
        }
    }

    /// A configuration for tests and tools: defaults everywhere but the two URLs.
    pub fn for_urls(database_url: &str, redis_url: &str) -> Self {
        let db = database_url.to_owned();
        let redis = redis_url.to_owned();
        Self::from_lookup(move |name| match name {
            "HERALD_DATABASE_URL" => Some(db.clone()),
            "HERALD_REDIS_URL" => Some(redis.clone()),
            _ => None,
        })
        .unwrap_or_else(|e| panic!("default configuration is invalid: {e}"))
    }
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 8080))
}

struct Reader<'a> {
    lookup: &'a dyn Fn(&str) -> Option<String>,
    problems: Vec<String>,
}

impl Reader<'_> {
    /// `HERALD_DATABASE_URL` and `HERALD_REDIS_URL`, both required.
    fn urls(&mut self) -> (Option<String>, Option<String>) {
        let r = self;
        let database_url = r.required(
            "HERALD_DATABASE_URL",
            "the Postgres URL, e.g. postgres://user:pass@127.0.0.1:5432/herald",
        );
        let redis_url = r.required(
            "HERALD_REDIS_URL",
            "the Redis URL, e.g. redis://127.0.0.1:6379",
        );
        if let Some(url) = &database_url
            && !(url.starts_with("postgres://") || url.starts_with("postgresql://"))
        {
            r.problem(
                "HERALD_DATABASE_URL",
                "must start with postgres:// or postgresql://",
            );
        }
        if let Some(url) = &redis_url
            && !(url.starts_with("redis://")
                || url.starts_with("rediss://")
                || url.starts_with("redis+cluster://")
                || url.starts_with("redis+sentinel://")
                || url.starts_with("redis+unix://")
                || url.starts_with("unix://"))
        {
            r.problem(
                "HERALD_REDIS_URL",
                "must start with redis://, rediss://, redis+cluster://, redis+sentinel:// or unix://",
            );
        } else if let Some(why) = redis_url
            .as_deref()
            .and_then(crate::queue::conn::url_problem)
        {
            r.problem("HERALD_REDIS_URL", why);
        }
        (database_url, redis_url)
    }

    /// Where the API listens, the URL providers reach it at, and the ops token.
    fn http(&mut self) -> (SocketAddr, String, Option<Secret<String>>) {
        let r = self;
        let listen = r
            .parsed("HERALD_LISTEN", "127.0.0.1:8080".parse().ok(), |s| {
                s.parse::<SocketAddr>()
                    .map_err(|_| "must be an address like 127.0.0.1:8080".to_owned())
            })
            .unwrap_or_else(default_listen);
        let public_url = match r.get("HERALD_PUBLIC_URL") {
            Some(url) => {
                if !(url.starts_with("http://") || url.starts_with("https://")) {
                    r.problem("HERALD_PUBLIC_URL", "must be an http:// or https:// URL");
                }
                url.trim_end_matches('/').to_owned()
            }
            None => format!("http://{listen}"),
        };
        let ops_token = r.get("HERALD_OPS_TOKEN").map(Secret::new);
        if let Some(token) = &ops_token
            && token.expose().len() < 16
        {
            r.problem("HERALD_OPS_TOKEN", "must be at least 16 characters");
        }
        (listen, public_url, ops_token)
    }

    /// Attempts per message and the back-off between them.
    fn retries(&mut self) -> (u32, Duration, Duration) {
        let r = self;
        let max_attempts = r.number("HERALD_MAX_ATTEMPTS", 8, 1, 100);
        let retry_base = r.millis("HERALD_RETRY_BASE_MS", 2_000, 1, 86_400_000);
        let retry_max = r.millis("HERALD_RETRY_MAX_MS", 3_600_000, 1, 7 * 86_400_000);
        if retry_base > retry_max {
            r.problem(
                "HERALD_RETRY_BASE_MS",
                "must not be greater than HERALD_RETRY_MAX_MS",
            );
        }
        (max_attempts, retry_base, retry_max)
    }

    /// Log format and filter, and the Redis key prefix.
    fn logging(&mut self) -> (Option<LogFormat>, String, String) {
        let r = self;
        let log_format = r.parsed("HERALD_LOG_FORMAT", Some(LogFormat::Json), |s| match s {
            "json" => Ok(LogFormat::Json),
            "pretty" => Ok(LogFormat::Pretty),
            _ => Err("must be `json` or `pretty`".to_owned()),
        });
        let log_filter = r
            .get("RUST_LOG")
            .unwrap_or_else(|| "info,sqlx=warn".to_owned());
        let queue_prefix = r
            .get("HERALD_QUEUE_PREFIX")
            .unwrap_or_else(|| "herald".to_owned());
        if queue_prefix.is_empty() || queue_prefix.contains(['{', '}', ' ']) {
            r.problem(
                "HERALD_QUEUE_PREFIX",
                "must be non-empty, without spaces or braces",
            );
        }
        (log_format, log_filter, queue_prefix)
    }

    /// The SMS provider and Twilio's settings (required when it is Twilio).
    fn sms(&mut self) -> (Option<SmsProviderKind>, TwilioConfig) {
        let r = self;
        let sms_provider = r.parsed(
            "HERALD_SMS_PROVIDER",
            Some(SmsProviderKind::Log),
            |s| match s {
                "log" => Ok(SmsProviderKind::Log),
                "twilio" => Ok(SmsProviderKind::Twilio),
                _ => Err("must be `twilio` or `log`".to_owned()),
            },
        );
        let twilio = TwilioConfig {
            account_sid: r.get("HERALD_TWILIO_ACCOUNT_SID"),
            auth_token: r.get("HERALD_TWILIO_AUTH_TOKEN").map(Secret::new),
            base_url: r.url("HERALD_TWILIO_BASE_URL", "https://api.twilio.com"),
        };
        if sms_provider == Some(SmsProviderKind::Twilio) {
            if twilio.account_sid.is_none() {
                r.problem(
                    "HERALD_TWILIO_ACCOUNT_SID",
                    "is required when HERALD_SMS_PROVIDER=twilio",
                );
            }
            if twilio.auth_token.is_none() {
                r.problem(
                    "HERALD_TWILIO_AUTH_TOKEN",
                    "is required when HERALD_SMS_PROVIDER=twilio",
                );
            }
        }
        (sms_provider, twilio)
    }

    /// The email provider and Resend's settings (required when it is Resend).
    fn email(&mut self) -> (Option<EmailProviderKind>, ResendConfig) {
        let r = self;
        let email_provider =
            r.parsed(
                "HERALD_EMAIL_PROVIDER",
                Some(EmailProviderKind::Log),
                |s| match s {
                    "log" => Ok(EmailProviderKind::Log),
                    "resend" => Ok(EmailProviderKind::Resend),
                    _ => Err("must be `resend` or `log`".to_owned()),
                },
            );
        let resend = ResendConfig {
            api_key: r.get("HERALD_RESEND_API_KEY").map(Secret::new),
            base_url: r.url("HERALD_RESEND_BASE_URL", "https://api.resend.com"),
        };
        if email_provider == Some(EmailProviderKind::Resend) && resend.api_key.is_none() {
            r.problem(
                "HERALD_RESEND_API_KEY",
                "is required when HERALD_EMAIL_PROVIDER=resend",
            );
        }
        (email_provider, resend)
    }

    /// When a circuit opens and for how long (`HERALD_CIRCUIT_*`).
    fn circuit(&mut self) -> crate::services::breaker::BreakerSettings {
        let r = self;
        let circuit = crate::services::breaker::BreakerSettings {
            window: r.millis("HERALD_CIRCUIT_WINDOW_MS", 30_000, 100, 3_600_000),
            min_calls: r.number("HERALD_CIRCUIT_MIN_CALLS", 10, 1, 100_000),
            failure_rate: f64::from(r.number("HERALD_CIRCUIT_FAILURE_PERCENT", 50, 1, 100)) / 100.0,
            min_recipients: r.number("HERALD_CIRCUIT_RECIPIENTS", 3, 1, 1_000),
            cooldown: r.millis("HERALD_CIRCUIT_COOLDOWN_MS", 5_000, 100, 3_600_000),
            max_cooldown: r.millis("HERALD_CIRCUIT_COOLDOWN_MAX_MS", 300_000, 100, 86_400_000),
            max_circuits: 10_000,
        };
        if circuit.cooldown > circuit.max_cooldown {
            r.problem(
                "HERALD_CIRCUIT_COOLDOWN_MS",
                "must not be greater than HERALD_CIRCUIT_COOLDOWN_MAX_MS",
            );
        }
        if circuit.min_recipients > circuit.min_calls {
            r.problem(
                "HERALD_CIRCUIT_RECIPIENTS",
                "must not be greater than HERALD_CIRCUIT_MIN_CALLS",
            );
        }
        circuit
    }

    /// The trimmed value; an empty variable counts as unset.
    fn get(&self, name: &str) -> Option<String> {
        (self.lookup)(name)
            .map(|v| v.trim().to_owned())
            .filter(|v| !v.is_empty())
    }

    fn problem(&mut self, name: &str, what: &str) {
        self.problems.push(format!("{name} {what}"));
    }

    fn required(&mut self, name: &str, hint: &str) -> Option<String> {
        let value = self.get(name);
        if value.is_none() {
            self.problem(name, &format!("is not set: {hint}"));
        }
        value
    }

    fn parsed<T>(
        &mut self,
        name: &str,
        default: Option<T>,
        parse: impl Fn(&str) -> Result<T, String>,
    ) -> Option<T> {
        match self.get(name) {
            None => default,
            Some(raw) => match parse(&raw) {
                Ok(v) => Some(v),
                Err(why) => {
                    self.problem(name, &format!("{why} (got `{raw}`)"));
                    None
                }
            },
        }
    }

    fn number(&mut self, name: &str, default: u32, min: u32, max: u32) -> u32 {
        self.parsed(name, Some(default), |s| match s.parse::<u32>() {
            Ok(n) if (min..=max).contains(&n) => Ok(n),
            _ => Err(format!("must be a whole number from {min} to {max}")),
        })
        .unwrap_or(default)
    }

    fn millis(&mut self, name: &str, default: u64, min: u64, max: u64) -> Duration {
        let ms = self
            .parsed(name, Some(default), |s| match s.parse::<u64>() {
                Ok(n) if (min..=max).contains(&n) => Ok(n),
                _ => Err(format!(
                    "must be a number of milliseconds from {min} to {max}"
                )),
            })
            .unwrap_or(default);
        Duration::from_millis(ms)
    }

    /// A span such as `90s`, `15m`, `2h` or `5d` (more than nothing, at most 366 days).
    fn span(&mut self, name: &str, default: Duration) -> Duration {
        self.parsed(name, Some(default), parse_span)
            .unwrap_or(default)
    }

    /// Spans separated by commas (`5s,5m,30m`), at least one.
    fn spans(&mut self, name: &str, default: &[Duration]) -> Vec<Duration> {
        self.parsed(name, None, |s| {
            s.split(',').map(|p| parse_span(p.trim())).collect()
        })
        .unwrap_or_else(|| default.to_vec())
    }

    fn boolean(&mut self, name: &str, default: bool) -> bool {
        self.parsed(name, Some(default), |s| {
            match s.to_ascii_lowercase().as_str() {
                "true" | "1" | "yes" => Ok(true),
                "false" | "0" | "no" => Ok(false),
                _ => Err("must be `true` or `false`".to_owned()),
            }
        })
        .unwrap_or(default)
    }

    /// An address to listen on, or `off`.
    fn listen_or_off(&mut self, name: &str, default: &str) -> Option<SocketAddr> {
        let raw = self.get(name).unwrap_or_else(|| default.to_owned());
        if raw == "off" {
            return None;
        }
        match raw.parse() {
            Ok(addr) => Some(addr),
            Err(_) => {
                self.problem(
                    name,
                    &format!("must be an address like 127.0.0.1:9101, or `off` (got `{raw}`)"),
                );
                None
            }
        }
    }

    fn url(&mut self, name: &str, default: &str) -> String {
        let value = self.get(name).unwrap_or_else(|| default.to_owned());
        if !(value.starts_with("http://") || value.starts_with("https://")) {
            self.problem(name, "must be an http:// or https:// URL");
        }
        value.trim_end_matches('/').to_owned()
    }

    fn llm(&mut self, prefix: &str) -> Option<LlmEndpoint> {
        let base = format!("{prefix}_BASE_URL");
        let model = format!("{prefix}_MODEL");
        let key = format!("{prefix}_API_KEY");
        let base_url = self.get(&base);
        let model_name = self.get(&model);
        match (base_url, model_name) {
            (None, None) => None,
            (Some(_), None) => {
                self.problem(&model, &format!("is required when {base} is set"));
                None
            }
            (None, Some(_)) => {
                self.problem(&base, &format!("is required when {model} is set"));
                None
            }
            (Some(base_url), Some(model)) => {
                if !(base_url.starts_with("http://") || base_url.starts_with("https://")) {
                    self.problem(&base, "must be an http:// or https:// URL");
                }
                Some(LlmEndpoint {
                    base_url: base_url.trim_end_matches('/').to_owned(),
                    api_key: self.get(&key).map(Secret::new),
                    model,
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(vars: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        Config::from_lookup(|k| map.get(k).cloned())
    }

    const BASE: [(&str, &str); 2] = [
        (
            "HERALD_DATABASE_URL",
            "postgres://herald:hunter2@127.0.0.1/herald",
        ),
        ("HERALD_REDIS_URL", "redis://127.0.0.1:6379"),
    ];

    #[test]
    fn defaults_follow_the_contract() {
        let c = config(&BASE).unwrap();
        assert_eq!(c.listen.to_string(), "127.0.0.1:8080");
        assert_eq!(c.public_url, "http://127.0.0.1:8080");
        assert_eq!(c.max_attempts, 8);
        assert_eq!(c.retry_base, Duration::from_millis(2000));
        assert_eq!(c.retry_max, Duration::from_millis(3_600_000));
        assert_eq!(c.worker_concurrency, 100);
        assert_eq!(c.lease, Duration::from_millis(10_000));
        assert_eq!(c.sms_provider, SmsProviderKind::Log);
        assert_eq!(c.email_provider, EmailProviderKind::Log);
        assert_eq!(c.log_format, LogFormat::Json);
        assert!(c.ops_token.is_none());
        assert_eq!(c.redeliver_after, Duration::from_secs(900));
    }

    #[test]
    fn the_event_retry_schedule_is_the_contracts_unless_told_otherwise() {
        let c = config(&BASE).unwrap();
        assert_eq!(c.event_retry_schedule, EVENT_RETRY_SCHEDULE.to_vec());
        assert_eq!(c.endpoint_disable_after, Duration::from_secs(5 * 86_400));
        let mut vars = BASE.to_vec();
        vars.push(("HERALD_EVENT_RETRY_SCHEDULE", "250ms, 5s,1m"));
        vars.push(("HERALD_ENDPOINT_DISABLE_AFTER", "90s"));
        let c = config(&vars).unwrap();
        assert_eq!(
            c.event_retry_schedule,
            [
                Duration::from_millis(250),
                Duration::from_secs(5),
                Duration::from_secs(60)
            ]
        );
        assert_eq!(c.endpoint_disable_after, Duration::from_secs(90));
        for bad in ["5s,", "5s,never", "0ms", "1w"] {
            let mut vars = BASE.to_vec();
            vars.push(("HERALD_EVENT_RETRY_SCHEDULE", bad));
            let err = config(&vars).unwrap_err().to_string();
            assert!(
                err.contains("HERALD_EVENT_RETRY_SCHEDULE"),
                "{bad:?}: {err}"
            );
        }
    }

    #[test]
    fn spans_take_a_unit_and_refuse_nonsense() {
        let with = |v: &'static str| {
            let mut vars = BASE.to_vec();
            vars.push(("HERALD_REDELIVER_AFTER", v));
            config(&vars)
        };
        assert_eq!(
            with("90s").unwrap().redeliver_after,
            Duration::from_secs(90)
        );
        assert_eq!(
            with("2h").unwrap().redeliver_after,
            Duration::from_secs(7200)
        );
        for bad in [
            "15",
            "0m",
            "m",
            "1w",
            "-1h",
            "400d",
            "99999999999999999999d",
        ] {
            let err = with(bad).unwrap_err().to_string();
            assert!(err.contains("HERALD_REDELIVER_AFTER"), "{bad}: {err}");
        }
    }

    #[test]
    fn redis_may_be_a_cluster_or_a_sentinel_watched_primary_with_partitions() {
        let with = |pairs: &[(&'static str, &'static str)]| {
            let mut vars = vec![BASE[0]];
            vars.extend_from_slice(pairs);
            config(&vars)
        };
        let c = with(&[(
            "HERALD_REDIS_URL",
            "redis+cluster://10.0.0.1:7000,10.0.0.2:7000",
        )])
        .unwrap();
        assert_eq!(
            c.queue_partitions, None,
            "the default is the kind of Redis's"
        );
        with(&[("HERALD_REDIS_URL", "redis+sentinel://10.0.0.1:26379/herald")]).unwrap();
        let c = with(&[
            ("HERALD_REDIS_URL", "redis://127.0.0.1:6379"),
            ("HERALD_QUEUE_PARTITIONS", "4"),
        ])
        .unwrap();
        assert_eq!(c.queue_partitions, Some(4));
        for (url, partitions) in [
            ("redis+cluster://", "16"),
            ("redis+sentinel://10.0.0.1:26379", "16"),
            ("redis://127.0.0.1:6379", "0"),
            ("redis://127.0.0.1:6379", "many"),
        ] {
            let err = with(&[
                ("HERALD_REDIS_URL", url),
                ("HERALD_QUEUE_PARTITIONS", partitions),
            ])
            .unwrap_err();
            assert_eq!(err.problems.len(), 1, "{url} {partitions}: {err}");
            let text = err.to_string();
            assert!(
                text.contains("HERALD_REDIS_URL") || text.contains("HERALD_QUEUE_PARTITIONS"),
                "{text}"
            );
        }
    }

    #[test]
    fn missing_urls_are_named() {
        let err = config(&[]).unwrap_err().to_string();
        assert!(err.contains("HERALD_DATABASE_URL is not set"), "{err}");
        assert!(err.contains("HERALD_REDIS_URL is not set"), "{err}");
    }

    #[test]
    fn every_bad_variable_is_reported_by_name() {
        let mut vars = BASE.to_vec();
        vars.extend([
            ("HERALD_MAX_ATTEMPTS", "zero"),
            ("HERALD_SMS_PROVIDER", "carrier-pigeon"),
            ("HERALD_LISTEN", "nowhere"),
        ]);
        let err = config(&vars).unwrap_err();
        let text = err.to_string();
        assert_eq!(err.problems.len(), 3, "{text}");
        assert!(text.contains("HERALD_MAX_ATTEMPTS"));
        assert!(text.contains("HERALD_SMS_PROVIDER"));
        assert!(text.contains("HERALD_LISTEN"));
    }

    #[test]
    fn twilio_needs_its_credentials() {
        let mut vars = BASE.to_vec();
        vars.push(("HERALD_SMS_PROVIDER", "twilio"));
        let text = config(&vars).unwrap_err().to_string();
        assert!(text.contains("HERALD_TWILIO_ACCOUNT_SID"), "{text}");
        assert!(text.contains("HERALD_TWILIO_AUTH_TOKEN"), "{text}");
    }

    #[test]
    fn secrets_are_redacted_in_debug() {
        let mut vars = BASE.to_vec();
        vars.extend([
            ("HERALD_OPS_TOKEN", "ops-token-that-is-long-enough"),
            ("HERALD_SMS_PROVIDER", "twilio"),
            ("HERALD_TWILIO_ACCOUNT_SID", "AC123"),
            ("HERALD_TWILIO_AUTH_TOKEN", "twilio-secret-token"),
        ]);
        let c = config(&vars).unwrap();
        let debug = format!("{c:?}");
        assert!(!debug.contains("hunter2"), "{debug}");
        assert!(!debug.contains("ops-token-that-is-long-enough"), "{debug}");
        assert!(!debug.contains("twilio-secret-token"), "{debug}");
        assert!(debug.contains("[redacted]"));
    }

    #[test]
    fn retry_base_cannot_exceed_max() {
        let mut vars = BASE.to_vec();
        vars.extend([
            ("HERALD_RETRY_BASE_MS", "5000"),
            ("HERALD_RETRY_MAX_MS", "1000"),
        ]);
        let text = config(&vars).unwrap_err().to_string();
        assert!(
            text.contains("HERALD_RETRY_BASE_MS must not be greater"),
            "{text}"
        );
    }
}
