//! Contacts: the people a tenant messages.

use chrono::{DateTime, Utc};
use sqlx::PgExecutor;

#[derive(Debug, Clone, sqlx::FromRow, serde::Deserialize)]
pub struct ContactRow {
    pub id: String,
    pub tenant_id: String,
    pub phone: Option<String>,
    pub email: Option<String>,
    pub name: Option<String>,
    pub timezone: Option<String>,
    pub opted_out: bool,
    pub opted_out_at: Option<DateTime<Utc>>,
    pub mode: String,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub last_text_back_at: Option<DateTime<Utc>>,
    /// `ok`, or `unreachable` once a carrier said this phone cannot receive texts.
    pub phone_status: String,
    /// `opted_in`, `opted_out` or `unknown`, and when, how, where and in what words.
    pub consent_status: String,
    pub consent_at: Option<DateTime<Utc>>,
    pub consent_method: Option<String>,
    pub consent_source: Option<String>,
    pub consent_text: Option<String>,
}

/// A contact's consent as given (or withdrawn).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Consent {
    pub status: String,
    pub at: DateTime<Utc>,
    pub method: String,
    pub source: Option<String>,
    pub text: Option<String>,
}

/// One change of a contact's consent.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ConsentEventRow {
    pub id: i64,
    pub at: DateTime<Utc>,
    pub status: String,
    pub method: Option<String>,
    pub source: Option<String>,
    pub text: Option<String>,
}

/// Sets a contact's consent and keeps the change as a consent event, in one statement;
/// `opted_out` follows it. `None` when the tenant has no such contact.
pub async fn set_consent(
    db: impl PgExecutor<'_>,
    tenant_id: &str,
    id: &str,
    c: &Consent,
) -> Result<Option<ContactRow>, sqlx::Error> {
    sqlx::query_as::<_, ContactRow>(
        "WITH c AS (
            UPDATE contacts SET consent_status = $3, consent_at = $4, consent_method = $5,
                consent_source = $6, consent_text = $7,
                opted_out = ($3 = 'opted_out'),
                opted_out_at = CASE WHEN $3 = 'opted_out' THEN COALESCE(opted_out_at, $4) END,
                updated_at = now()
            WHERE id = $1 AND tenant_id = $2
            RETURNING *
         ), e AS (
            INSERT INTO consent_events (tenant_id, contact_id, at, status, method, source, text)
            SELECT tenant_id, id, $4, $3, $5, $6, $7 FROM c
         )
         SELECT * FROM c",
    )
    .bind(id)
    .bind(tenant_id)
    .bind(&c.status)
    .bind(c.at)
    .bind(&c.method)
    .bind(&c.source)
    .bind(&c.text)
    .fetch_optional(db)
    .await
}

/// A contact's consent events, oldest first, after the event `after` (an id), at most
/// `limit` + 1 (the extra one says there is another page).
pub async fn consent_events(
    db: impl PgExecutor<'_>,
    contact_id: &str,
    after: Option<i64>,
    limit: i64,
) -> Result<Vec<ConsentEventRow>, sqlx::Error> {
    sqlx::query_as::<_, ConsentEventRow>(
        "SELECT id, at, status, method, source, text FROM consent_events
         WHERE contact_id = $1 AND id > $2 ORDER BY id LIMIT $3",
    )
    .bind(contact_id)
    .bind(after.unwrap_or(0))
    .bind(limit + 1)
    .fetch_all(db)
    .await
}

pub async fn get(
    db: impl PgExecutor<'_>,
    tenant_id: &str,
    id: &str,
) -> Result<Option<ContactRow>, sqlx::Error> {
    sqlx::query_as::<_, ContactRow>("SELECT * FROM contacts WHERE id = $1 AND tenant_id = $2")
        .bind(id)
        .bind(tenant_id)
        .fetch_optional(db)
        .await
}

/// Opts a phone number out (creating its contact if needed), as Twilio error 21610 or a STOP
/// text asks.
pub async fn opt_out_phone(
    db: impl PgExecutor<'_>,
    id_if_new: &str,
    tenant_id: &str,
    phone: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "WITH c AS (
            INSERT INTO contacts (id, tenant_id, phone, opted_out, opted_out_at, consent_status,
                                  consent_at, consent_method, consent_source)
            VALUES ($1, $2, $3, true, now(), 'opted_out', now(), 'sms_keyword', 'the carrier (twilio 21610)')
            ON CONFLICT (tenant_id, phone) WHERE phone IS NOT NULL
            DO UPDATE SET opted_out = true, opted_out_at = now(), consent_status = 'opted_out',
                consent_at = now(), consent_method = 'sms_keyword',
                consent_source = 'the carrier (twilio 21610)', consent_text = NULL, updated_at = now()
            RETURNING *
         )
         INSERT INTO consent_events (tenant_id, contact_id, at, status, method, source)
         SELECT tenant_id, id, consent_at, 'opted_out', 'sms_keyword', consent_source FROM c",
    )
    .bind(id_if_new)
    .bind(tenant_id)
    .bind(phone)
    .execute(db)
    .await?;
    Ok(())
}

/// Marks the tenant's contact for `phone` unreachable (creating it if needed): a carrier said
/// the number cannot receive texts, so SMS to it are suppressed until the phone is changed.
pub async fn mark_phone_unreachable(
    db: impl PgExecutor<'_>,
    id_if_new: &str,
    tenant_id: &str,
    phone: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO contacts (id, tenant_id, phone, phone_status) VALUES ($1, $2, $3, 'unreachable')
         ON CONFLICT (tenant_id, phone) WHERE phone IS NOT NULL
         DO UPDATE SET phone_status = 'unreachable', updated_at = now()",
    )
    .bind(id_if_new)
    .bind(tenant_id)
    .bind(phone)
    .execute(db)
    .await?;
    Ok(())
}

#[derive(Debug, Clone, Default)]
pub struct NewContact {
    pub id: String,
    pub tenant_id: String,
    pub phone: Option<String>,
    pub email: Option<String>,
    pub name: Option<String>,
    pub timezone: Option<String>,
}

/// Inserts a contact; `Ok(None)` when the tenant has a contact with that phone already.
pub async fn insert(
    db: impl PgExecutor<'_>,
    c: &NewContact,
) -> Result<Option<ContactRow>, sqlx::Error> {
    sqlx::query_as::<_, ContactRow>(
        "INSERT INTO contacts (id, tenant_id, phone, email, name, timezone) VALUES ($1, $2, $3, $4, $5, $6)
         ON CONFLICT (tenant_id, phone) WHERE phone IS NOT NULL DO NOTHING
         RETURNING *",
    )
    .bind(&c.id)
    .bind(&c.tenant_id)
    .bind(&c.phone)
    .bind(&c.email)
    .bind(&c.name)
    .bind(&c.timezone)
    .fetch_optional(db)
    .await
}

/// What a PATCH changes; `None` leaves a field as it is.
#[derive(Debug, Clone, Default)]
pub struct ContactChanges {
    pub phone: Option<String>,
    pub email: Option<Option<String>>,
    pub name: Option<Option<String>>,
    pub timezone: Option<String>,
}

/// Applies changes; `Ok(None)` when there is no such contact. A phone another contact of the
/// tenant has is a unique violation (the caller answers 409).
pub async fn update(
    db: impl PgExecutor<'_>,
    tenant_id: &str,
    id: &str,
    ch: &ContactChanges,
) -> Result<Option<ContactRow>, sqlx::Error> {
    sqlx::query_as::<_, ContactRow>(
        "UPDATE contacts SET
            phone = COALESCE($3, phone),
            phone_status = CASE WHEN $3 IS NOT NULL AND $3 IS DISTINCT FROM phone THEN 'ok'
                                ELSE phone_status END,
            email = CASE WHEN $4 THEN $5 ELSE email END,
            name = CASE WHEN $6 THEN $7 ELSE name END,
            timezone = COALESCE($8, timezone),
            updated_at = now()
         WHERE id = $1 AND tenant_id = $2
         RETURNING *",
    )
    .bind(id)
    .bind(tenant_id)
    .bind(&ch.phone)
    .bind(ch.email.is_some())
    .bind(ch.email.clone().flatten())
    .bind(ch.name.is_some())
    .bind(ch.name.clone().flatten())
    .bind(&ch.timezone)
    .fetch_optional(db)
    .await
}

/// The tenant's contact for a phone number, created (in the tenant's time zone) if it is new.
pub async fn find_or_create_by_phone(
    db: impl PgExecutor<'_>,
    id_if_new: &str,
    tenant_id: &str,
    phone: &str,
    timezone: &str,
) -> Result<ContactRow, sqlx::Error> {
    sqlx::query_as::<_, ContactRow>(
        "INSERT INTO contacts (id, tenant_id, phone, timezone) VALUES ($1, $2, $3, $4)
         ON CONFLICT (tenant_id, phone) WHERE phone IS NOT NULL DO UPDATE SET updated_at = contacts.updated_at
         RETURNING *",
    )
    .bind(id_if_new)
    .bind(tenant_id)
    .bind(phone)
    .bind(timezone)
    .fetch_one(db)
    .await
}

/// Opts a contact in or out of texts by the keyword it texted (STOP, START and the like), kept
/// as its consent and a consent event.
pub async fn set_opted_out(
    db: impl PgExecutor<'_>,
    id: &str,
    opted_out: bool,
    keyword: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "WITH c AS (
            UPDATE contacts SET opted_out = $2,
                opted_out_at = CASE WHEN $2 THEN now() ELSE NULL END,
                consent_status = CASE WHEN $2 THEN 'opted_out' ELSE 'opted_in' END,
                consent_at = now(), consent_method = 'sms_keyword', consent_source = 'inbound sms',
                consent_text = $3, updated_at = now()
            WHERE id = $1
            RETURNING *
         )
         INSERT INTO consent_events (tenant_id, contact_id, at, status, method, source, text)
         SELECT tenant_id, id, consent_at, consent_status, 'sms_keyword', 'inbound sms', $3 FROM c",
    )
    .bind(id)
    .bind(opted_out)
    .bind(keyword)
    .execute(db)
    .await?;
    Ok(())
}

/// Who answers the contact's conversation: `ai` or `human`. `None` when there is no such
/// contact.
pub async fn set_mode(
    db: impl PgExecutor<'_>,
    tenant_id: &str,
    id: &str,
    mode: &str,
) -> Result<Option<ContactRow>, sqlx::Error> {
    sqlx::query_as::<_, ContactRow>(
        "UPDATE contacts SET mode = $3, updated_at = now() WHERE id = $1 AND tenant_id = $2 RETURNING *",
    )
    .bind(id)
    .bind(tenant_id)
    .bind(mode)
    .fetch_optional(db)
    .await
}

/// Claims the contact's missed-call text-back if none was sent within `cooldown_minutes`;
/// false when one was (a second call inside the cooldown, or a concurrent callback).
pub async fn claim_text_back(
    db: impl PgExecutor<'_>,
    id: &str,
    cooldown_minutes: i32,
) -> Result<bool, sqlx::Error> {
    let done = sqlx::query(
        "UPDATE contacts SET last_text_back_at = now(), updated_at = now()
         WHERE id = $1 AND (last_text_back_at IS NULL OR last_text_back_at <= now() - make_interval(mins => $2))",
    )
    .bind(id)
    .bind(cooldown_minutes)
    .execute(db)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// What the AI path does with one inbound text under its contact's reply budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AiSpend {
    /// Ask a model.
    Model,
    /// The budget is spent: send the short notice (once per hour).
    Notice,
    /// The budget is spent and the notice went out: store the text, answer nothing.
    Nothing,
}

impl AiSpend {
    fn as_str(self) -> &'static str {
        match self {
            AiSpend::Model => "model",
            AiSpend::Notice => "notice",
            AiSpend::Nothing => "none",
        }
    }

    fn parse(s: &str) -> Self {
        match s {
            "model" => AiSpend::Model,
            "notice" => AiSpend::Notice,
            _ => AiSpend::Nothing,
        }
    }
}

/// Decides, once per inbound text, whether its contact's budget of `per_hour` model calls
/// in the last hour allows one more; if not, whether the hour's one notice is still due.
/// Runs under a lock on the contact, so concurrent reply jobs for one texter cannot both
/// take the last call; a job that runs again gets the decision made the first time.
pub async fn decide_ai_spend(
    db: &sqlx::PgPool,
    contact_id: &str,
    inbound_id: &str,
    per_hour: u32,
) -> Result<AiSpend, sqlx::Error> {
    let mut tx = db.begin().await?;
    sqlx::query("SELECT 1 FROM contacts WHERE id = $1 FOR UPDATE")
        .bind(contact_id)
        .execute(&mut *tx)
        .await?;
    let decided: Option<String> =
        sqlx::query_scalar("SELECT kind FROM ai_reply_spends WHERE inbound_id = $1")
            .bind(inbound_id)
            .fetch_optional(&mut *tx)
            .await?;
    if let Some(kind) = decided {
        tx.commit().await?;
        return Ok(AiSpend::parse(&kind));
    }
    let (models, notices): (i64, i64) = sqlx::query_as(
        "SELECT count(*) FILTER (WHERE kind = 'model'), count(*) FILTER (WHERE kind = 'notice')
         FROM ai_reply_spends WHERE contact_id = $1 AND at > now() - interval '1 hour'",
    )
    .bind(contact_id)
    .fetch_one(&mut *tx)
    .await?;
    let spend = if models < i64::from(per_hour) {
        AiSpend::Model
    } else if notices == 0 {
        AiSpend::Notice
    } else {
        AiSpend::Nothing
    };
    sqlx::query("INSERT INTO ai_reply_spends (inbound_id, contact_id, kind) VALUES ($1, $2, $3)")
        .bind(inbound_id)
        .bind(contact_id)
        .bind(spend.as_str())
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(spend)
}

/// One row of a bulk import, checked already.
#[derive(Debug, Clone)]
pub struct ImportRow {
    /// The id it gets if its phone is new to the tenant.
    pub id: String,
    pub phone: String,
    /// `None` leaves an existing contact's value as it is.
    pub email: Option<String>,
    pub name: Option<String>,
    pub timezone: Option<String>,
    pub consent: Option<Consent>,
}

/// The rows as the column arrays `unnest` reads (id, phone, email, name, timezone, then the
/// consent's status, at, method, source and text).
#[allow(clippy::type_complexity)]
fn import_columns<'a>(
    rows: &[&'a ImportRow],
) -> (
    Vec<&'a str>,
    Vec<&'a str>,
    Vec<Option<&'a str>>,
    Vec<Option<&'a str>>,
    Vec<Option<&'a str>>,
    Vec<Option<&'a str>>,
    Vec<Option<DateTime<Utc>>>,
    Vec<Option<&'a str>>,
    Vec<Option<&'a str>>,
    Vec<Option<&'a str>>,
) {
    let consent = |r: &&'a ImportRow| r.consent.as_ref();
    (
        rows.iter().map(|r| r.id.as_str()).collect(),
        rows.iter().map(|r| r.phone.as_str()).collect(),
        rows.iter().map(|r| r.email.as_deref()).collect(),
        rows.iter().map(|r| r.name.as_deref()).collect(),
        rows.iter().map(|r| r.timezone.as_deref()).collect(),
        rows.iter()
            .map(|r| consent(r).map(|c| c.status.as_str()))
            .collect(),
        rows.iter().map(|r| consent(r).map(|c| c.at)).collect(),
        rows.iter()
            .map(|r| consent(r).map(|c| c.method.as_str()))
            .collect(),
        rows.iter()
            .map(|r| consent(r).and_then(|c| c.source.as_deref()))
            .collect(),
        rows.iter()
            .map(|r| consent(r).and_then(|c| c.text.as_deref()))
            .collect(),
    )
}

const IMPORT_INPUT: &str = "unnest($2::text[], $3::text[], $4::text[], $5::text[], $6::text[],
                                   $7::text[], $8::timestamptz[], $9::text[], $10::text[], $11::text[])
        AS i(id, phone, email, name, timezone, status, at, method, source, text)";

/// Inserts the rows whose phone the tenant has no contact for (a new contact's zone defaults
/// to `default_timezone`); returns `(id, phone)` of each inserted.
pub async fn import_insert(
    conn: &mut sqlx::PgConnection,
    tenant_id: &str,
    default_timezone: &str,
    rows: &[&ImportRow],
) -> Result<Vec<(String, String)>, sqlx::Error> {
    let c = import_columns(rows);
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "INSERT INTO contacts (id, tenant_id, phone, email, name, timezone, consent_status,
                               consent_at, consent_method, consent_source, consent_text,
                               opted_out, opted_out_at)
         SELECT i.id, $1, i.phone, i.email, i.name, COALESCE(i.timezone, $12),
                COALESCE(i.status, 'unknown'), i.at, i.method, i.source, i.text,
                COALESCE(i.status = 'opted_out', false),
                CASE WHEN i.status = 'opted_out' THEN i.at END
         FROM {IMPORT_INPUT}
         ORDER BY i.phone
         ON CONFLICT (tenant_id, phone) WHERE phone IS NOT NULL DO NOTHING
         RETURNING id, phone"
    )))
    .bind(tenant_id)
    .bind(c.0)
    .bind(c.1)
    .bind(c.2)
    .bind(c.3)
    .bind(c.4)
    .bind(c.5)
    .bind(c.6)
    .bind(c.7)
    .bind(c.8)
    .bind(c.9)
    .bind(default_timezone)
    .fetch_all(conn)
    .await
}

/// Updates the tenant's contacts with these rows' phones: what a row gives replaces the
/// contact's value, what it leaves out stays (a consent given replaces the whole consent, and
/// `opted_out` follows it). Returns `(id, phone)` of each updated.
pub async fn import_update(
    conn: &mut sqlx::PgConnection,
    tenant_id: &str,
    rows: &[&ImportRow],
) -> Result<Vec<(String, String)>, sqlx::Error> {
    let c = import_columns(rows);
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "UPDATE contacts c SET
            email = COALESCE(i.email, c.email),
            name = COALESCE(i.name, c.name),
            timezone = COALESCE(i.timezone, c.timezone),
            consent_status = COALESCE(i.status, c.consent_status),
            consent_at = CASE WHEN i.status IS NULL THEN c.consent_at ELSE i.at END,
            consent_method = CASE WHEN i.status IS NULL THEN c.consent_method ELSE i.method END,
            consent_source = CASE WHEN i.status IS NULL THEN c.consent_source ELSE i.source END,
            consent_text = CASE WHEN i.status IS NULL THEN c.consent_text ELSE i.text END,
            opted_out = CASE WHEN i.status IS NULL THEN c.opted_out ELSE i.status = 'opted_out' END,
            opted_out_at = CASE WHEN i.status IS NULL THEN c.opted_out_at
                                WHEN i.status = 'opted_out' THEN COALESCE(c.opted_out_at, i.at) END,
            updated_at = now()
         FROM {IMPORT_INPUT}
         WHERE c.tenant_id = $1 AND c.phone = i.phone
         RETURNING c.id, c.phone"
    )))
    .bind(tenant_id)
    .bind(c.0)
    .bind(c.1)
    .bind(c.2)
    .bind(c.3)
    .bind(c.4)
    .bind(c.5)
    .bind(c.6)
    .bind(c.7)
    .bind(c.8)
    .bind(c.9)
    .fetch_all(conn)
    .await
}

/// Keeps the consents an import gave as consent events: `(contact id, consent)`.
pub async fn insert_consent_events(
    conn: &mut sqlx::PgConnection,
    tenant_id: &str,
    given: &[(&str, &Consent)],
) -> Result<(), sqlx::Error> {
    if given.is_empty() {
        return Ok(());
    }
    let col = |f: fn(&Consent) -> Option<&str>| -> Vec<Option<&str>> {
        given.iter().map(|(_, c)| f(c)).collect()
    };
    sqlx::query(
        "INSERT INTO consent_events (tenant_id, contact_id, at, status, method, source, text)
         SELECT $1, e.contact_id, e.at, e.status, e.method, e.source, e.text
         FROM unnest($2::text[], $3::timestamptz[], $4::text[], $5::text[], $6::text[], $7::text[])
              AS e(contact_id, at, status, method, source, text)",
    )
    .bind(tenant_id)
    .bind(given.iter().map(|(id, _)| *id).collect::<Vec<_>>())
    .bind(given.iter().map(|(_, c)| c.at).collect::<Vec<_>>())
    .bind(col(|c| Some(c.status.as_str())))
    .bind(col(|c| Some(c.method.as_str())))
    .bind(col(|c| c.source.as_deref()))
    .bind(col(|c| c.text.as_deref()))
    .execute(conn)
    .await?;
    Ok(())
}

/// What `GET /v1/contacts` filters by; `None` does not filter.
#[derive(Debug, Clone, Default)]
pub struct ContactFilter<'a> {
    /// E.164, exactly.
    pub phone: Option<&'a str>,
    /// The address, whatever its case.
    pub email: Option<&'a str>,
    /// Members of this group (one of the tenant's, not deleted).
    pub group_id: Option<&'a str>,
    pub opted_out: Option<bool>,
    /// Part of the name, case-insensitive, as typed (`%` and `_` match themselves).
    pub name_part: Option<&'a str>,
    /// Only ids older than this one (the cursor).
    pub before_id: Option<&'a str>,
}

/// `s` for a LIKE pattern: its `\`, `%` and `_` match themselves.
fn like_literal(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if matches!(c, '\\' | '%' | '_') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// A tenant's contacts, newest first; up to `limit + 1` so the caller knows whether another
/// page follows.
pub async fn list(
    db: impl PgExecutor<'_>,
    tenant_id: &str,
    filter: &ContactFilter<'_>,
    limit: i64,
) -> Result<Vec<ContactRow>, sqlx::Error> {
    sqlx::query_as::<_, ContactRow>(
        "SELECT c.* FROM contacts c
         WHERE c.tenant_id = $1
           AND ($2::text IS NULL OR c.phone = $2)
           AND ($3::text IS NULL OR lower(c.email) = lower($3))
           AND ($4::text IS NULL OR EXISTS (
                SELECT 1 FROM group_members gm JOIN groups g ON g.id = gm.group_id
                WHERE gm.group_id = $4 AND gm.contact_id = c.id
                  AND g.tenant_id = $1 AND g.deleted_at IS NULL))
           AND ($5::bool IS NULL OR c.opted_out = $5)
           AND ($6::text IS NULL OR c.name ILIKE '%' || $6 || '%')
           AND ($7::text IS NULL OR c.id < $7)
         ORDER BY c.id DESC
         LIMIT $8",
    )
    .bind(tenant_id)
    .bind(filter.phone)
    .bind(filter.email)
    .bind(filter.group_id)
    .bind(filter.opted_out)
    .bind(filter.name_part.map(like_literal))
    .bind(filter.before_id)
    .bind(limit + 1)
    .fetch_all(db)
    .await
}

#[cfg(test)]
mod tests {
    use super::like_literal;

    #[test]
    fn a_name_part_matches_its_wildcards_literally() {
        assert_eq!(like_literal("ann"), "ann");
        assert_eq!(like_literal("100%_a\\b"), "100\\%\\_a\\\\b");
    }
}
