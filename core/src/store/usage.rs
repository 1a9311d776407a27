//! What a tenant's messages and AI replies used, per day in the tenant's zone, read from the
//! messages themselves: retention and erasure keep a message's channel, status, times,
//! segments, model and token usage for exactly this. A message counts on the day Herald
//! accepted it (an AI reply: the day its model was asked), with the status it has now.

use std::collections::BTreeMap;

use chrono::{DateTime, Duration, NaiveDate, Utc};
use chrono_tz::Tz;
use serde::Serialize;
use sqlx::PgExecutor;

use crate::{
    domain::{Channel, MessageStatus, id_floor},
    schedule::end_of_local_day,
};

/// The longest range one question may cover, in days.
pub const MAX_DAYS: i64 = 366;

/// How far a message's `created_at` (Postgres's clock) may be from the time in its id (the
/// process's clock that made it): the id range read is this much wider on each side.
const CLOCK_SLACK: Duration = Duration::days(1);

/// One day's usage of one tenant.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct UsageDay {
    /// `YYYY-MM-DD`, in the tenant's zone.
    #[schema(value_type = String)]
    pub date: NaiveDate,
    /// channel (`sms`, `email`, `webhook`) -> status -> messages, every status of the
    /// channel listed (zeros too).
    #[schema(value_type = Object)]
    pub messages: BTreeMap<&'static str, BTreeMap<&'static str, i64>>,
    /// Segments of the SMS their provider took (`sent`, `delivered`, `undelivered`, and
    /// `failed` after the provider had it): what the carrier bills.
    pub sms_segments: i64,
    /// By model, in the order of their names.
    pub model_calls: Vec<ModelUsage>,
    /// AI replies and daily AI messages that got the tenant's canned text instead of a model's.
    pub canned_replies: i64,
}

/// The calls of one model on one day, and the tokens it reported (its `usage`).
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct ModelUsage {
    pub model: String,
    pub calls: i64,
    pub prompt_tokens: i64,
    pub completion_tokens: i64,
}

/// The statuses a message of `channel` can have (an SMS may also be an inbound text).
fn statuses(channel: Channel) -> impl Iterator<Item = MessageStatus> {
    MessageStatus::ALL
        .into_iter()
        .filter(move |s| *s != MessageStatus::Received || channel == Channel::Sms)
}

impl UsageDay {
    fn zero(date: NaiveDate) -> Self {
        let messages = [Channel::Sms, Channel::Email, Channel::Webhook]
            .into_iter()
            .map(|c| (c.as_str(), statuses(c).map(|s| (s.as_str(), 0)).collect()))
            .collect();
        Self {
            date,
            messages,
            sms_segments: 0,
            model_calls: Vec::new(),
            canned_replies: 0,
        }
    }

    /// Model tokens, prompt and completion.
    pub fn model_tokens(&self) -> i64 {
        self.model_calls
            .iter()
            .map(|m| m.prompt_tokens + m.completion_tokens)
            .sum()
    }
}

#[derive(sqlx::FromRow)]
struct Group {
    day: NaiveDate,
    channel: String,
    status: String,
    model: Option<String>,
    canned: bool,
    messages: i64,
    segments: i64,
    prompt_tokens: i64,
    completion_tokens: i64,
}

/// Every day from `from` to `to` (both included, days in `zone`) of `tenant_id`'s usage,
/// oldest first; a day with nothing is there with zeros. The tenant's messages are read in
/// the id range of those days (ids sort by creation), so the question costs what the tenant
/// sent in them.
pub async fn days(
    db: impl PgExecutor<'_>,
    tenant_id: &str,
    zone: Tz,
    from: NaiveDate,
    to: NaiveDate,
) -> Result<Vec<UsageDay>, sqlx::Error> {
    let start = end_of_local_day(zone, from.pred_opt().unwrap_or(from));
    let end = end_of_local_day(zone, to);
    // A model's `usage` is whatever its endpoint sent: only whole numbers of tokens count.
    let groups: Vec<Group> = sqlx::query_as(
        "SELECT (m.created_at AT TIME ZONE $2)::date AS day, m.channel, m.status, m.model,
                (m.author = 'ai' AND m.direction = 'outbound' AND m.model IS NULL) AS canned,
                count(*) AS messages,
                coalesce(sum(m.segments) FILTER (
                    WHERE m.channel = 'sms' AND m.direction = 'outbound'
                      AND (m.status IN ('sent', 'delivered', 'undelivered')
                           OR (m.status = 'failed' AND m.provider_message_id IS NOT NULL))), 0)::bigint
                    AS segments,
                coalesce(sum(herald_tokens(m.usage -> 'prompt_tokens'))
                    FILTER (WHERE m.model IS NOT NULL), 0)::bigint AS prompt_tokens,
                coalesce(sum(herald_tokens(m.usage -> 'completion_tokens'))
                    FILTER (WHERE m.model IS NOT NULL), 0)::bigint AS completion_tokens
           FROM messages m
          WHERE m.tenant_id = $1 AND m.id >= $3 AND m.id < $4
            AND m.created_at >= $5 AND m.created_at < $6
          GROUP BY 1, 2, 3, 4, 5",
    )
        .bind(tenant_id)
        .bind(zone.name())
        .bind(id_floor("msg", (start - CLOCK_SLACK).timestamp_millis()))
        .bind(id_floor("msg", (end + CLOCK_SLACK).timestamp_millis()))
        .bind(start)
        .bind(end)
        .fetch_all(db)
        .await?;
    Ok(fold(from, to, groups))
}

fn fold(from: NaiveDate, to: NaiveDate, groups: Vec<Group>) -> Vec<UsageDay> {
    let mut days: Vec<UsageDay> = from
        .iter_days()
        .take_while(|d| *d <= to)
        .map(UsageDay::zero)
        .collect();
    for g in groups {
        let Some(day) = days.get_mut((g.day - from).num_days() as usize) else {
            continue;
        };
        let channel = Channel::parse(&g.channel);
        let status = MessageStatus::parse(&g.status);
        if let (Some(c), Some(s)) = (channel, status)
            && let Some(count) = day
                .messages
                .get_mut(c.as_str())
                .and_then(|by| by.get_mut(s.as_str()))
        {
            *count += g.messages;
        }
        day.sms_segments += g.segments;
        if g.canned {
            day.canned_replies += g.messages;
        }
        if let Some(model) = g.model {
            match day.model_calls.iter_mut().find(|m| m.model == model) {
                Some(m) => {
                    m.calls += g.messages;
                    m.prompt_tokens += g.prompt_tokens;
                    m.completion_tokens += g.completion_tokens;
                }
                None => day.model_calls.push(ModelUsage {
                    model,
                    calls: g.messages,
                    prompt_tokens: g.prompt_tokens,
                    completion_tokens: g.completion_tokens,
                }),
            }
        }
    }
    for day in &mut days {
        day.model_calls.sort_by(|a, b| a.model.cmp(&b.model));
    }
    days
}

/// Today's date in `zone` at `now`.
pub fn today(zone: Tz, now: DateTime<Utc>) -> NaiveDate {
    now.with_timezone(&zone).date_naive()
}
