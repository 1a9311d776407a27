//! The command line, parsed with clap into an [`Invocation`]. Global flags may come anywhere
//! (`--json` before or after the command), as `--flag value` or `--flag=value`; every command
//! and subcommand has `--help`; a flag given to the wrong command is an error, never silently
//! ignored. What clap cannot check (a `--since` relative to now, bulk replay said out loud) is
//! checked here, before any call.

use chrono::{DateTime, Duration, SecondsFormat, Utc};
use clap::{
    Args, CommandFactory, Parser, Subcommand, ValueEnum, builder::PossibleValuesParser,
    error::ErrorKind,
};
use herald_core::domain::audit::AuditAction;

use crate::failure::Failure;

/// Printed under `heraldctl --help`: every command line in one screen, the filter, the exit codes.
const OVERVIEW: &str = "\
commands in full:
  tenants create --name NAME [--timezone TZ] [--sms-from +1...] [--email-from ADDR] [--no-quiet-hours]
  keys create TENANT_ID         another API key for a tenant
  keys revoke KEY_PREFIX        revoke a key; it stops working at once
  queues                        each queue's pending, scheduled, running and dead jobs, and throughput
  dlq list [FILTER] [--limit N] dead letters, newest first (every page, up to N; default 100)
  dlq show ID                   one dead letter with its error history
  dlq replay ID                 send a dead letter's message again, in a fresh run
  dlq replay --filter FILTER    replay every not yet replayed dead letter the filter selects
  dlq replay --all              replay every not yet replayed dead letter
  dlq delete ID                 delete a dead letter
  messages show ID              any tenant's message with its events
  endpoints list [--tenant TENANT_ID] [--limit N]
                                event endpoints, newest first (every tenant's, or one's)
  endpoints attempts EP_ID [--status succeeded|failed] [--since TIME] [--limit N]
                                the calls made to an endpoint, newest first
  events redeliver EVT_ID       send an event again to each endpoint that had it
  inbox --tenant TENANT_ID [--needs-reply] [--mode ai|human] [--limit N]
                                a tenant's conversations, newest activity first
  audit [--tenant TENANT_ID] [--action ACTION] [--actor ACTOR] [--since TIME] [--limit N]
                                the audit log, newest first: who changed what, from where

Lists print every page up to --limit (default 100).

FILTER: --queue QUEUE  --tenant TENANT_ID  --reason exhausted|rejected
        --since TIME (RFC 3339, or a duration ago: 30m, 1h, 2d)

`heraldctl COMMAND --help` describes one command.
exit codes: 0 done; 1 the API refused or failed; 2 usage error; 3 the API could not be reached";

/// The most rows a list (`dlq list`, `endpoints list`, ...) prints unless told otherwise.
const DEFAULT_LIST_LIMIT: u32 = 100;

/// What to do, and how to reach and talk to the API.
#[derive(Debug)]
pub struct Invocation {
    pub command: Command,
    /// `--url`, which wins over `HERALD_URL`.
    pub url: Option<String>,
    /// `--token`, which wins over `HERALD_OPS_TOKEN`.
    pub token: Option<String>,
    pub json: bool,
}

#[derive(Debug, PartialEq)]
pub enum Command {
    /// Help text to print, and nothing to call.
    Help(String),
    TenantsCreate(NewTenant),
    KeysCreate {
        tenant_id: String,
    },
    KeysRevoke {
        key_prefix: String,
    },
    Queues,
    DlqList {
        filter: DlqFilter,
        limit: usize,
    },
    DlqShow {
        id: String,
    },
    DlqReplay {
        id: String,
    },
    /// `all` is `--all`; the API wants an empty filter said out loud as `{"all": true}`.
    DlqReplayMatching {
        filter: DlqFilter,
        all: bool,
    },
    DlqDelete {
        id: String,
    },
    MessagesShow {
        id: String,
    },
    EndpointsList {
        tenant_id: Option<String>,
        limit: usize,
    },
    EndpointsAttempts {
        id: String,
        /// `succeeded` or `failed`.
        status: Option<String>,
        /// RFC 3339, as `--since` is read.
        since: Option<String>,
        limit: usize,
    },
    EventsRedeliver {
        id: String,
    },
    Inbox {
        tenant_id: String,
        /// `ai` or `human`.
        mode: Option<String>,
        needs_reply: bool,
        limit: usize,
    },
    Audit {
        tenant_id: Option<String>,
        /// One of the audit actions (`key.created`, ...).
        action: Option<String>,
        /// `ops` or a key prefix.
        actor: Option<String>,
        /// RFC 3339, as `--since` is read.
        since: Option<String>,
        limit: usize,
    },
}

#[derive(Debug, PartialEq, Args)]
pub struct NewTenant {
    /// The tenant's name
    #[arg(long)]
    pub name: String,
    /// IANA time zone for quiet hours and daily messages (default UTC)
    #[arg(long, value_name = "TZ")]
    pub timezone: Option<String>,
    /// The Twilio number SMS are sent from
    #[arg(long, value_name = "+1...")]
    pub sms_from: Option<String>,
    /// The address email is sent from
    #[arg(long, value_name = "ADDR")]
    pub email_from: Option<String>,
    /// Send SMS at any hour
    #[arg(long)]
    pub no_quiet_hours: bool,
}

/// The dead letter filter, with `since` already an RFC 3339 time.
#[derive(Debug, Default, PartialEq)]
pub struct DlqFilter {
    pub queue: Option<String>,
    pub tenant_id: Option<String>,
    pub reason: Option<String>,
    pub since: Option<String>,
}

impl DlqFilter {
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }
}

/// The command line as clap reads it.
#[derive(Debug, Parser)]
#[command(
    name = "heraldctl",
    about = "operate a Herald deployment through its HTTP API",
    after_help = OVERVIEW
)]
struct Line {
    /// The API's address (env HERALD_URL; default http://127.0.0.1:8080)
    #[arg(long, global = true, value_name = "URL")]
    url: Option<String>,
    /// The ops token (env HERALD_OPS_TOKEN; required)
    #[arg(long, global = true, value_name = "TOKEN")]
    token: Option<String>,
    /// Print the API's JSON answer instead of tables (`dlq list`: its pages joined)
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Option<Group>,
}

#[derive(Debug, Subcommand)]
enum Group {
    /// Tenants
    #[command(subcommand)]
    Tenants(Tenants),
    /// API keys
    #[command(subcommand)]
    Keys(Keys),
    /// Each queue's pending, scheduled, running and dead jobs, and throughput
    Queues,
    /// The dead-letter queue
    #[command(subcommand)]
    Dlq(Dlq),
    /// Messages of any tenant
    #[command(subcommand)]
    Messages(Messages),
    /// Event webhook endpoints of every tenant, and the calls made to them
    #[command(subcommand)]
    Endpoints(Endpoints),
    /// Events sent to endpoints
    #[command(subcommand)]
    Events(Events),
    /// A tenant's conversations, newest activity first (every page, up to --limit)
    Inbox {
        /// Whose inbox
        #[arg(long, value_name = "TENANT_ID")]
        tenant: String,
        /// Only conversations whose newest entry is the contact's text
        #[arg(long)]
        needs_reply: bool,
        /// Only conversations the AI answers, or a person does
        #[arg(long, value_enum)]
        mode: Option<Mode>,
        #[command(flatten)]
        limit: Limit,
    },
    /// The audit log, newest first: who changed what, from where (every page, up to --limit)
    Audit {
        /// Only entries about this tenant
        #[arg(long, value_name = "TENANT_ID")]
        tenant: Option<String>,
        /// Only this action
        #[arg(long, value_name = "ACTION",
              value_parser = PossibleValuesParser::new(AuditAction::ALL.map(AuditAction::as_str)))]
        action: Option<String>,
        /// Only changes made by `ops` (ops token or dashboard) or by one key (its prefix)
        #[arg(long, value_name = "ACTOR")]
        actor: Option<String>,
        /// Made at or after TIME (RFC 3339, or a duration ago: 30m, 1h, 2d)
        #[arg(long, value_name = "TIME")]
        since: Option<String>,
        #[command(flatten)]
        limit: Limit,
    },
}

#[derive(Debug, Subcommand)]
enum Tenants {
    /// Create a tenant and its first API key (the key is shown once)
    Create(NewTenant),
}

#[derive(Debug, Subcommand)]
enum Keys {
    /// Another API key for a tenant
    Create {
        #[arg(value_name = "TENANT_ID")]
        tenant_id: String,
    },
    /// Revoke a key; it stops working at once
    Revoke {
        #[arg(value_name = "KEY_PREFIX")]
        key_prefix: String,
    },
}

#[derive(Debug, Subcommand)]
enum Dlq {
    /// Dead letters, newest first (every page, up to --limit)
    List {
        #[command(flatten)]
        filter: FilterArgs,
        /// The most dead letters to print
        #[arg(long, value_name = "N", default_value_t = DEFAULT_LIST_LIMIT,
              value_parser = clap::value_parser!(u32).range(1..))]
        limit: u32,
    },
    /// One dead letter with its error history
    Show {
        #[arg(value_name = "ID")]
        id: String,
    },
    /// Send a dead letter's message again in a fresh run: one ID, or in bulk with --filter
    /// FILTER or --all
    Replay {
        #[arg(value_name = "ID")]
        id: Option<String>,
        /// Replay every not yet replayed dead letter the filter selects
        #[arg(long)]
        filter: bool,
        /// Replay every not yet replayed dead letter
        #[arg(long)]
        all: bool,
        #[command(flatten)]
        matching: FilterArgs,
    },
    /// Delete a dead letter
    Delete {
        #[arg(value_name = "ID")]
        id: String,
    },
}

#[derive(Debug, Subcommand)]
enum Messages {
    /// Any tenant's message with its events
    Show {
        #[arg(value_name = "ID")]
        id: String,
    },
}

#[derive(Debug, Subcommand)]
enum Endpoints {
    /// Event endpoints, newest first, each with its tenant (every page, up to --limit)
    List {
        /// Only this tenant's endpoints
        #[arg(long, value_name = "TENANT_ID")]
        tenant: Option<String>,
        #[command(flatten)]
        limit: Limit,
    },
    /// The calls made to an endpoint, newest first (every page, up to --limit)
    Attempts {
        #[arg(value_name = "EP_ID")]
        id: String,
        /// Only attempts that succeeded, or failed
        #[arg(long, value_enum)]
        status: Option<AttemptStatus>,
        /// Made at or after TIME (RFC 3339, or a duration ago: 30m, 1h, 2d)
        #[arg(long, value_name = "TIME")]
        since: Option<String>,
        #[command(flatten)]
        limit: Limit,
    },
}

#[derive(Debug, Subcommand)]
enum Events {
    /// Send an event again, from a first attempt, to each enabled endpoint that had it
    Redeliver {
        #[arg(value_name = "EVT_ID")]
        id: String,
    },
}

/// `--limit` of a list.
#[derive(Debug, Args)]
struct Limit {
    /// The most rows to print
    #[arg(long, value_name = "N", default_value_t = DEFAULT_LIST_LIMIT,
          value_parser = clap::value_parser!(u32).range(1..))]
    limit: u32,
}

impl Limit {
    fn rows(&self) -> usize {
        usize::try_from(self.limit).unwrap_or(usize::MAX)
    }
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum AttemptStatus {
    Succeeded,
    Failed,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Mode {
    Ai,
    Human,
}

#[derive(Debug, Args)]
struct FilterArgs {
    /// Only this queue's dead letters
    #[arg(long, value_name = "QUEUE")]
    queue: Option<String>,
    /// Only this tenant's dead letters
    #[arg(long, value_name = "TENANT_ID")]
    tenant: Option<String>,
    /// Why they died: retries exhausted, or rejected by the provider
    #[arg(long, value_enum)]
    reason: Option<Reason>,
    /// Died at or after TIME (RFC 3339, or a duration ago: 30m, 1h, 2d)
    #[arg(long, value_name = "TIME")]
    since: Option<String>,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Reason {
    Exhausted,
    Rejected,
}

impl FilterArgs {
    fn into_filter(self, now: DateTime<Utc>) -> Result<DlqFilter, Failure> {
        Ok(DlqFilter {
            queue: self.queue,
            tenant_id: self.tenant,
            reason: self.reason.map(|r| {
                match r {
                    Reason::Exhausted => "exhausted",
                    Reason::Rejected => "rejected",
                }
                .to_owned()
            }),
            since: self.since.map(|s| parse_since(&s, now)).transpose()?,
        })
    }
}

/// Parses the arguments after the program name. `now` anchors `--since 1h`.
pub fn parse(
    args: impl IntoIterator<Item = String>,
    now: DateTime<Utc>,
) -> Result<Invocation, Failure> {
    let argv = std::iter::once("heraldctl".to_owned()).chain(args);
    let line = match Line::try_parse_from(argv) {
        Ok(line) => line,
        Err(e) if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) => {
            return Ok(help(e.render().to_string()));
        }
        Err(e) => return Err(Failure::Cli(e.render().to_string())),
    };
    let command = match line.command {
        None => Command::Help(Line::command().render_help().to_string()),
        Some(group) => command(group, now)?,
    };
    Ok(Invocation {
        command,
        url: line.url,
        token: line.token,
        json: line.json,
    })
}

fn help(text: String) -> Invocation {
    Invocation {
        command: Command::Help(text),
        url: None,
        token: None,
        json: false,
    }
}

fn command(group: Group, now: DateTime<Utc>) -> Result<Command, Failure> {
    Ok(match group {
        Group::Tenants(Tenants::Create(new)) => Command::TenantsCreate(new),
        Group::Keys(Keys::Create { tenant_id }) => Command::KeysCreate { tenant_id },
        Group::Keys(Keys::Revoke { key_prefix }) => Command::KeysRevoke { key_prefix },
        Group::Queues => Command::Queues,
        Group::Dlq(Dlq::List { filter, limit }) => Command::DlqList {
            filter: filter.into_filter(now)?,
            limit: usize::try_from(limit).unwrap_or(usize::MAX),
        },
        Group::Dlq(Dlq::Show { id }) => Command::DlqShow { id },
        Group::Dlq(Dlq::Replay {
            id,
            filter,
            all,
            matching,
        }) => dlq_replay(id, filter, all, matching.into_filter(now)?)?,
        Group::Dlq(Dlq::Delete { id }) => Command::DlqDelete { id },
        Group::Messages(Messages::Show { id }) => Command::MessagesShow { id },
        Group::Endpoints(Endpoints::List { tenant, limit }) => Command::EndpointsList {
            tenant_id: tenant,
            limit: limit.rows(),
        },
        Group::Endpoints(Endpoints::Attempts {
            id,
            status,
            since,
            limit,
        }) => Command::EndpointsAttempts {
            id,
            status: status.map(|s| {
                match s {
                    AttemptStatus::Succeeded => "succeeded",
                    AttemptStatus::Failed => "failed",
                }
                .to_owned()
            }),
            since: since.map(|s| parse_since(&s, now)).transpose()?,
            limit: limit.rows(),
        },
        Group::Events(Events::Redeliver { id }) => Command::EventsRedeliver { id },
        Group::Inbox {
            tenant,
            needs_reply,
            mode,
            limit,
        } => Command::Inbox {
            tenant_id: tenant,
            mode: mode.map(|m| {
                match m {
                    Mode::Ai => "ai",
                    Mode::Human => "human",
                }
                .to_owned()
            }),
            needs_reply,
            limit: limit.rows(),
        },
        Group::Audit {
            tenant,
            action,
            actor,
            since,
            limit,
        } => Command::Audit {
            tenant_id: tenant,
            action,
            actor,
            since: since.map(|s| parse_since(&s, now)).transpose()?,
            limit: limit.rows(),
        },
    })
}

/// `dlq replay ID`, or in bulk with `--filter ...` or `--all`. Bulk replay is refused here,
/// before any call, unless it is explicit: a bare `--filter` would otherwise read as "replay
/// everything" to a person and as nothing to the API.
fn dlq_replay(
    id: Option<String>,
    filter_flag: bool,
    all: bool,
    filter: DlqFilter,
) -> Result<Command, Failure> {
    match id {
        Some(id) if !filter_flag && !all && filter.is_empty() => Ok(Command::DlqReplay { id }),
        Some(_) => Err(Failure::usage(
            "`dlq replay` takes either one ID or `--filter`/`--all`, not both",
        )),
        None if all || (filter_flag && !filter.is_empty()) => {
            Ok(Command::DlqReplayMatching { filter, all })
        }
        None if filter_flag => Err(Failure::usage(
            "`dlq replay --filter` needs a filter: add --queue, --tenant, --reason or --since, \
             or say --all to replay every dead letter",
        )),
        None if !filter.is_empty() => Err(Failure::usage(
            "to replay every dead letter matching a filter, add --filter",
        )),
        None => Err(Failure::usage(
            "`dlq replay` needs a dead letter ID, `--filter` with a filter, or `--all`",
        )),
    }
}

/// `--since`: an RFC 3339 time, or a duration back from `now` (`90s`, `30m`, `1h`, `2d`).
/// Either way the API gets an RFC 3339 time in UTC.
fn parse_since(raw: &str, now: DateTime<Utc>) -> Result<String, Failure> {
    if let Ok(t) = DateTime::parse_from_rfc3339(raw) {
        return Ok(t
            .with_timezone(&Utc)
            .to_rfc3339_opts(SecondsFormat::AutoSi, true));
    }
    let ago = raw
        .char_indices()
        .last()
        .and_then(|(i, unit)| {
            let n: i64 = raw[..i].parse().ok().filter(|n| *n >= 0)?;
            match unit {
                's' => Duration::try_seconds(n),
                'm' => Duration::try_minutes(n),
                'h' => Duration::try_hours(n),
                'd' => Duration::try_days(n),
                _ => None,
            }
        })
        .and_then(|d| now.checked_sub_signed(d));
    ago.map(|t| t.to_rfc3339_opts(SecondsFormat::Secs, true))
        .ok_or_else(|| {
            Failure::usage(format!(
                "`--since` is an RFC 3339 time (2026-03-01T09:00:00Z) or a duration like 30m, 1h, 2d; not `{raw}`"
            ))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-03-01T12:00:00Z")
            .unwrap()
            .with_timezone(&Utc)
    }

    fn parse_line(line: &str) -> Result<Invocation, Failure> {
        parse(line.split_whitespace().map(str::to_owned), now())
    }

    /// What a mistaken line prints after `heraldctl: `, exit code 2 either way.
    fn usage_error(line: &str) -> String {
        match parse_line(line) {
            Err(f @ (Failure::Usage(_) | Failure::Cli(_))) => {
                assert_eq!(f.exit_code(), 2, "{line}");
                f.to_string()
            }
            other => panic!("`{line}` should be a usage error, got {other:?}"),
        }
    }

    fn help_text(line: &str) -> String {
        match parse_line(line) {
            Ok(Invocation {
                command: Command::Help(text),
                ..
            }) => text,
            other => panic!("`{line}` should print help, got {other:?}"),
        }
    }

    #[test]
    fn no_arguments_help_and_help_flags_print_help() {
        for line in ["", "help", "--help", "-h"] {
            let text = help_text(line);
            assert!(
                text.contains("dlq replay --filter FILTER"),
                "{line}: {text}"
            );
            assert!(text.contains("exit codes"), "{line}: {text}");
        }
    }

    #[test]
    fn every_command_has_its_own_help() {
        let list = help_text("dlq list --help");
        assert!(list.contains("--since <TIME>"), "{list}");
        assert!(list.contains("--limit <N>"), "{list}");
        let replay = help_text("help dlq replay");
        assert!(replay.contains("--all"), "{replay}");
        let create = help_text("tenants create -h");
        assert!(create.contains("--no-quiet-hours"), "{create}");
    }

    #[test]
    fn global_flags_may_come_before_or_after_the_command() {
        let inv = parse_line("--json dlq show dl_1 --url=http://x:1 --token t").unwrap();
        assert!(inv.json);
        assert_eq!(inv.url.as_deref(), Some("http://x:1"));
        assert_eq!(inv.token.as_deref(), Some("t"));
        assert_eq!(inv.command, Command::DlqShow { id: "dl_1".into() });
    }

    #[test]
    fn a_list_filter_reads_durations_back_from_now() {
        let inv = parse_line(
            "dlq list --queue deliveries --tenant ten_1 --reason rejected --since 2h --limit 5",
        )
        .unwrap();
        assert_eq!(
            inv.command,
            Command::DlqList {
                filter: DlqFilter {
                    queue: Some("deliveries".into()),
                    tenant_id: Some("ten_1".into()),
                    reason: Some("rejected".into()),
                    since: Some("2026-03-01T10:00:00Z".into()),
                },
                limit: 5,
            }
        );
    }

    #[test]
    fn the_endpoint_event_and_inbox_commands_read_their_filters() {
        assert_eq!(
            parse_line("endpoints list --tenant ten_1").unwrap().command,
            Command::EndpointsList {
                tenant_id: Some("ten_1".into()),
                limit: 100,
            }
        );
        assert_eq!(
            parse_line("endpoints attempts ep_1 --status failed --since 30m --limit 7")
                .unwrap()
                .command,
            Command::EndpointsAttempts {
                id: "ep_1".into(),
                status: Some("failed".into()),
                since: Some("2026-03-01T11:30:00Z".into()),
                limit: 7,
            }
        );
        assert_eq!(
            parse_line("events redeliver evt_1").unwrap().command,
            Command::EventsRedeliver { id: "evt_1".into() }
        );
        assert_eq!(
            parse_line("inbox --tenant ten_1 --needs-reply --mode human")
                .unwrap()
                .command,
            Command::Inbox {
                tenant_id: "ten_1".into(),
                mode: Some("human".into()),
                needs_reply: true,
                limit: 100,
            }
        );
        assert!(usage_error("inbox").contains("--tenant <TENANT_ID>"));
        assert!(usage_error("inbox --tenant ten_1 --mode robot").contains("human"));
        assert!(usage_error("endpoints attempts").contains("<EP_ID>"));
        assert!(usage_error("endpoints attempts ep_1 --status lost").contains("succeeded"));
        assert!(usage_error("endpoints attempts ep_1 --since soon").contains("`--since`"));
        assert!(usage_error("endpoints list --reason rejected").contains("'--reason'"));
        assert!(usage_error("events redeliver").contains("<EVT_ID>"));
    }

    #[test]
    fn the_audit_command_reads_its_filters() {
        assert_eq!(
            parse_line("audit --tenant ten_1 --action key.created --actor ops --since 1h")
                .unwrap()
                .command,
            Command::Audit {
                tenant_id: Some("ten_1".into()),
                action: Some("key.created".into()),
                actor: Some("ops".into()),
                since: Some("2026-03-01T11:00:00Z".into()),
                limit: 100,
            }
        );
        assert_eq!(
            parse_line("audit --limit 3").unwrap().command,
            Command::Audit {
                tenant_id: None,
                action: None,
                actor: None,
                since: None,
                limit: 3,
            }
        );
        assert!(usage_error("audit --action key.stolen").contains("key.revoked"));
        assert!(usage_error("audit --since soon").contains("`--since`"));
        assert!(usage_error("audit --reason rejected").contains("'--reason'"));
        assert!(help_text("audit --help").contains("--actor <ACTOR>"));
    }

    #[test]
    fn since_accepts_rfc3339_with_an_offset() {
        assert_eq!(
            parse_since("2026-03-01T09:00:00+01:00", now()).unwrap(),
            "2026-03-01T08:00:00Z"
        );
        assert_eq!(parse_since("2d", now()).unwrap(), "2026-02-27T12:00:00Z");
        assert!(parse_since("yesterday", now()).is_err());
        assert!(parse_since("h", now()).is_err());
        assert!(parse_since("-1h", now()).is_err());
    }

    #[test]
    fn bulk_replay_must_be_explicit() {
        assert!(usage_error("dlq replay --filter").contains("--all"));
        assert!(usage_error("dlq replay").contains("--filter"));
        assert!(usage_error("dlq replay --queue deliveries").contains("--filter"));
        assert!(usage_error("dlq replay dl_1 --all").contains("not both"));
        assert_eq!(
            parse_line("dlq replay --all").unwrap().command,
            Command::DlqReplayMatching {
                filter: DlqFilter::default(),
                all: true
            }
        );
        assert_eq!(
            parse_line("dlq replay --filter --reason exhausted")
                .unwrap()
                .command,
            Command::DlqReplayMatching {
                filter: DlqFilter {
                    reason: Some("exhausted".into()),
                    ..DlqFilter::default()
                },
                all: false
            }
        );
    }

    #[test]
    fn mistakes_are_usage_errors_that_say_what_is_wrong() {
        assert!(usage_error("frobnicate").contains("unrecognized subcommand 'frobnicate'"));
        assert!(usage_error("dlq frobnicate").contains("unrecognized subcommand 'frobnicate'"));
        assert!(usage_error("queues --verbose").contains("unexpected argument '--verbose'"));
        assert!(usage_error("queues --queue x").contains("unexpected argument '--queue'"));
        assert!(usage_error("dlq show").contains("<ID>"));
        assert!(usage_error("dlq show a b").contains("unexpected argument 'b'"));
        assert!(usage_error("dlq list --limit 0").contains("--limit"));
        let reason = usage_error("dlq list --reason tired");
        assert!(
            reason.contains("exhausted") && reason.contains("rejected"),
            "{reason}"
        );
        assert!(usage_error("dlq list --queue").contains("a value is required"));
        assert!(usage_error("dlq list --queue --json").contains("a value is required"));
        assert!(usage_error("dlq list --json=yes").contains("--json"));
        assert!(
            usage_error("dlq list --limit 1 --limit 2").contains("cannot be used multiple times")
        );
        assert!(usage_error("tenants create").contains("--name <NAME>"));
        assert!(usage_error("keys").contains("Usage: heraldctl keys"));
        assert!(usage_error("dlq list --since yesterday").contains("`--since`"));
        assert!(
            usage_error("dlq lst").contains("similar"),
            "a near miss is named"
        );
    }
}
