//! The command line, parsed by hand into an [`Invocation`]: a handful of commands and flags
//! do not need a parser crate. Flags may come anywhere (`--json` before or after the
//! command), as `--flag value` or `--flag=value`. Each command takes the flags it knows and
//! refuses the rest, so a flag given to the wrong command is an error, never silently ignored.

use std::collections::{BTreeMap, VecDeque};

use chrono::{DateTime, Duration, SecondsFormat, Utc};

use crate::failure::Failure;

pub const USAGE: &str = "\
heraldctl: operate a Herald deployment through its HTTP API

usage: heraldctl [--url URL] [--token TOKEN] [--json] COMMAND

commands:
  tenants create --name NAME [--timezone TZ] [--sms-from +1...] [--email-from ADDR] [--no-quiet-hours]
                                create a tenant and its first API key (the key is shown once)
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
  help                          this text

FILTER: --queue QUEUE  --tenant TENANT_ID  --reason exhausted|rejected
        --since TIME (RFC 3339, or a duration ago: 30m, 1h, 2d)

options:
  --url URL      the API's address (env HERALD_URL; default http://127.0.0.1:8080)
  --token TOKEN  the ops token (env HERALD_OPS_TOKEN; required)
  --json         print the API's JSON answer, pretty, instead of tables
                 (dlq list joins its pages into one {\"data\", \"next_cursor\"};
                 commands the API answers with no body print nothing)

exit codes: 0 done; 1 the API refused or failed; 2 usage error; 3 the API could not be reached
";

/// The most dead letters `dlq list` prints unless told otherwise.
const DEFAULT_LIST_LIMIT: usize = 100;

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
    Help,
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
}

#[derive(Debug, PartialEq)]
pub struct NewTenant {
    pub name: String,
    pub timezone: Option<String>,
    pub sms_from: Option<String>,
    pub email_from: Option<String>,
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

/// Every flag, and whether it takes a value. One table for all commands, so the command line
/// can be split into words and flags before the command is known.
const FLAGS: &[(&str, bool)] = &[
    ("url", true),
    ("token", true),
    ("json", false),
    ("help", false),
    ("name", true),
    ("timezone", true),
    ("sms-from", true),
    ("email-from", true),
    ("no-quiet-hours", false),
    ("queue", true),
    ("tenant", true),
    ("reason", true),
    ("since", true),
    ("limit", true),
    ("filter", false),
    ("all", false),
];

/// The command line split into positional words and flags; commands take from it what they
/// accept, and [`Args::finish`] refuses whatever is left.
#[derive(Debug)]
struct Args {
    words: VecDeque<String>,
    /// Flag name → its value (`None` for a switch).
    flags: BTreeMap<&'static str, Option<String>>,
}

impl Args {
    fn split(args: impl IntoIterator<Item = String>) -> Result<Self, Failure> {
        let mut words = VecDeque::new();
        let mut flags = BTreeMap::new();
        let mut args = args.into_iter();
        while let Some(arg) = args.next() {
            if arg == "--" {
                words.extend(args.by_ref());
                break;
            }
            if arg == "-h" {
                flags.insert("help", None);
                continue;
            }
            let Some(flag) = arg.strip_prefix("--") else {
                if arg.starts_with('-') && arg.len() > 1 {
                    return Err(Failure::usage(format!("unknown flag `{arg}`")));
                }
                words.push_back(arg);
                continue;
            };
            let (name, inline) = match flag.split_once('=') {
                Some((n, v)) => (n, Some(v.to_owned())),
                None => (flag, None),
            };
            let Some(&(name, takes_value)) = FLAGS.iter().find(|(n, _)| *n == name) else {
                return Err(Failure::usage(format!("unknown flag `--{name}`")));
            };
            let value = match (takes_value, inline) {
                (true, Some(v)) => Some(v),
                // A value that looks like a flag is almost always a forgotten value.
                (true, None) => match args.next() {
                    Some(v) if !v.starts_with("--") => Some(v),
                    _ => return Err(Failure::usage(format!("`--{name}` needs a value"))),
                },
                (false, Some(_)) => {
                    return Err(Failure::usage(format!("`--{name}` takes no value")));
                }
                (false, None) => None,
            };
            if flags.insert(name, value).is_some() {
                return Err(Failure::usage(format!("`--{name}` is given twice")));
            }
        }
        Ok(Self { words, flags })
    }

    fn value(&mut self, name: &str) -> Option<String> {
        self.flags.remove(name).flatten()
    }

    fn switch(&mut self, name: &str) -> bool {
        self.flags.remove(name).is_some()
    }

    fn next_word(&mut self) -> Option<String> {
        self.words.pop_front()
    }

    /// The next positional argument, which `command` requires.
    fn word(&mut self, command: &str, what: &str) -> Result<String, Failure> {
        self.next_word()
            .ok_or_else(|| Failure::usage(format!("`{command}` needs {what}")))
    }

    /// Refuses anything the command did not take.
    fn finish(self, command: &str) -> Result<(), Failure> {
        if let Some(word) = self.words.front() {
            return Err(Failure::usage(format!(
                "unexpected argument `{word}` after `{command}`"
            )));
        }
        if let Some(flag) = self.flags.keys().next() {
            return Err(Failure::usage(format!(
                "`{command}` does not take `--{flag}`"
            )));
        }
        Ok(())
    }

    fn dlq_filter(&mut self, now: DateTime<Utc>) -> Result<DlqFilter, Failure> {
        let reason = self.value("reason");
        if let Some(r) = &reason
            && r != "exhausted"
            && r != "rejected"
        {
            return Err(Failure::usage(format!(
                "`--reason` is `exhausted` or `rejected`, not `{r}`"
            )));
        }
        Ok(DlqFilter {
            queue: self.value("queue"),
            tenant_id: self.value("tenant"),
            reason,
            since: self
                .value("since")
                .map(|s| parse_since(&s, now))
                .transpose()?,
        })
    }
}

/// Parses the arguments after the program name. `now` anchors `--since 1h`.
pub fn parse(
    args: impl IntoIterator<Item = String>,
    now: DateTime<Utc>,
) -> Result<Invocation, Failure> {
    let mut args = Args::split(args)?;
    let url = args.value("url");
    let token = args.value("token");
    let json = args.switch("json");
    let command = if args.switch("help") {
        Command::Help
    } else {
        command(args, now)?
    };
    Ok(Invocation {
        command,
        url,
        token,
        json,
    })
}

fn command(mut args: Args, now: DateTime<Utc>) -> Result<Command, Failure> {
    let Some(group) = args.next_word() else {
        return Ok(Command::Help);
    };
    let (name, command) = match group.as_str() {
        "help" => return Ok(Command::Help),
        "queues" => ("queues".to_owned(), Command::Queues),
        "tenants" | "keys" | "dlq" | "messages" => {
            let sub = args.word(&group, "a subcommand")?;
            let name = format!("{group} {sub}");
            let command = match (group.as_str(), sub.as_str()) {
                ("tenants", "create") => Command::TenantsCreate(NewTenant {
                    name: args
                        .value("name")
                        .ok_or_else(|| Failure::usage("`tenants create` needs `--name NAME`"))?,
                    timezone: args.value("timezone"),
                    sms_from: args.value("sms-from"),
                    email_from: args.value("email-from"),
                    no_quiet_hours: args.switch("no-quiet-hours"),
                }),
                ("keys", "create") => Command::KeysCreate {
                    tenant_id: args.word(&name, "a TENANT_ID")?,
                },
                ("keys", "revoke") => Command::KeysRevoke {
                    key_prefix: args.word(&name, "a KEY_PREFIX")?,
                },
                ("dlq", "list") => Command::DlqList {
                    filter: args.dlq_filter(now)?,
                    limit: match args.value("limit") {
                        None => DEFAULT_LIST_LIMIT,
                        Some(raw) => parse_limit(&raw)?,
                    },
                },
                ("dlq", "show") => Command::DlqShow {
                    id: args.word(&name, "a dead letter ID")?,
                },
                ("dlq", "replay") => dlq_replay(&mut args, now)?,
                ("dlq", "delete") => Command::DlqDelete {
                    id: args.word(&name, "a dead letter ID")?,
                },
                ("messages", "show") => Command::MessagesShow {
                    id: args.word(&name, "a message ID")?,
                },
                _ => return Err(Failure::usage(format!("unknown command `{name}`"))),
            };
            (name, command)
        }
        other => return Err(Failure::usage(format!("unknown command `{other}`"))),
    };
    args.finish(&name)?;
    Ok(command)
}

/// `dlq replay ID`, or in bulk with `--filter ...` or `--all`. Bulk replay is refused here,
/// before any call, unless it is explicit: a bare `--filter` would otherwise read as "replay
/// everything" to a person and as nothing to the API.
fn dlq_replay(args: &mut Args, now: DateTime<Utc>) -> Result<Command, Failure> {
    let filter_flag = args.switch("filter");
    let all = args.switch("all");
    let filter = args.dlq_filter(now)?;
    match args.next_word() {
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

fn parse_limit(raw: &str) -> Result<usize, Failure> {
    match raw.parse::<usize>() {
        Ok(n) if n > 0 => Ok(n),
        _ => Err(Failure::usage(format!(
            "`--limit` is a whole number above 0, not `{raw}`"
        ))),
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

    fn usage_error(line: &str) -> String {
        match parse_line(line) {
            Err(Failure::Usage(m)) => m,
            other => panic!("`{line}` should be a usage error, got {other:?}"),
        }
    }

    #[test]
    fn no_arguments_and_help_flags_mean_help() {
        for line in ["", "help", "--help", "-h", "dlq list --help"] {
            assert_eq!(parse_line(line).unwrap().command, Command::Help, "{line}");
        }
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
        assert!(usage_error("frobnicate").contains("unknown command `frobnicate`"));
        assert!(usage_error("dlq frobnicate").contains("unknown command `dlq frobnicate`"));
        assert!(usage_error("queues --verbose").contains("unknown flag `--verbose`"));
        assert!(usage_error("queues --queue x").contains("`queues` does not take `--queue`"));
        assert!(usage_error("dlq show").contains("needs a dead letter ID"));
        assert!(usage_error("dlq show a b").contains("unexpected argument `b`"));
        assert!(usage_error("dlq list --limit 0").contains("--limit"));
        assert!(usage_error("dlq list --reason tired").contains("exhausted"));
        assert!(usage_error("dlq list --queue").contains("needs a value"));
        assert!(usage_error("dlq list --queue --json").contains("needs a value"));
        assert!(usage_error("dlq list --json=yes").contains("takes no value"));
        assert!(usage_error("dlq list --limit 1 --limit 2").contains("twice"));
        assert!(usage_error("tenants create").contains("--name"));
        assert!(usage_error("keys").contains("subcommand"));
    }
}
