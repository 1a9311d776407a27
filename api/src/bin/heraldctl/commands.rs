//! Running a parsed command: one API call (or one per page) and its answer as text, either
//! the JSON as is for scripts or tables for people.

use serde_json::{Map, Value, json};

use crate::{
    cli::{Command, DlqFilter, NewTenant},
    client::Client,
    failure::Failure,
    render::{Align, Table, fields, text, time, truncate},
};

/// The API's largest page.
const MAX_PAGE: usize = 100;

/// How much of a dead letter's last error (an attempt's error, an inbox's last text) fits in
/// a list before the line gets unreadable; `dlq show` and `--json` have all of it.
const LAST_ERROR_WIDTH: usize = 60;

/// How much of an audit entry's detail (compact JSON) fits in the list; `--json` has all of it.
const DETAIL_WIDTH: usize = 60;

/// How much of an endpoint's event types fits in the list; `--json` has them all.
const EVENTS_WIDTH: usize = 50;

/// What to print on success: the JSON (pretty) with `--json`, otherwise the plain-text form.
pub async fn run(client: &Client, command: &Command, json: bool) -> Result<String, Failure> {
    let (answer, human) = match command {
        // Handled before a client exists; here for completeness.
        Command::Help(text) => return Ok(text.clone()),
        Command::TenantsCreate(new) => {
            let t = client
                .post(&["v1", "admin", "tenants"], Some(&tenant_body(new)))
                .await?;
            let human = created_tenant(&t);
            (t, human)
        }
        Command::KeysCreate { tenant_id } => {
            let k = client
                .post(&["v1", "admin", "tenants", tenant_id, "keys"], None)
                .await?;
            let human = fields(&[
                (
                    "api_key",
                    format!("{}  (shown once: store it now)", text(&k["api_key"])),
                ),
                ("key_prefix", text(&k["key_prefix"])),
            ]);
            (k, human)
        }
        Command::KeysRevoke { key_prefix } => {
            let answer = client.delete(&["v1", "admin", "keys", key_prefix]).await?;
            (answer, format!("revoked key {key_prefix}\n"))
        }
        Command::Queues => {
            let q = client.get(&["v1", "admin", "queues"], &[]).await?;
            let human = queues(&q);
            (q, human)
        }
        Command::DlqList { filter, limit } => {
            let page = pages(
                client,
                &["v1", "dead-letters"],
                filter_fields(filter),
                *limit,
            )
            .await?;
            let human = dead_letter_list(&page);
            (page, human)
        }
        Command::DlqShow { id } => {
            let d = client.get(&["v1", "dead-letters", id], &[]).await?;
            let human = dead_letter(&d);
            (d, human)
        }
        Command::DlqReplay { id } => {
            let r = client
                .post(&["v1", "dead-letters", id, "replay"], None)
                .await?;
            let human = format!(
                "replayed {id}: message {} is {} again\n",
                text(&r["message_id"]),
                text(&r["status"])
            );
            (r, human)
        }
        Command::DlqReplayMatching { filter, all } => {
            let mut body: Map<String, Value> = filter_fields(filter)
                .into_iter()
                .map(|(k, v)| (k.to_owned(), Value::String(v)))
                .collect();
            if *all {
                body.insert("all".into(), Value::Bool(true));
            }
            let r = client
                .post(
                    &["v1", "dead-letters", "replay"],
                    Some(&Value::Object(body)),
                )
                .await?;
            let human = format!("replayed {} dead letters\n", text(&r["replayed"]));
            (r, human)
        }
        Command::DlqDelete { id } => {
            let answer = client.delete(&["v1", "dead-letters", id]).await?;
            (answer, format!("deleted {id}\n"))
        }
        Command::MessagesShow { id } => {
            let m = client.get(&["v1", "admin", "messages", id], &[]).await?;
            let human = message(&m);
            (m, human)
        }
        Command::EndpointsList { tenant_id, limit } => {
            let query = optional(&[("tenant_id", tenant_id)]);
            let page = pages(client, &["v1", "admin", "endpoints"], query, *limit).await?;
            let human = endpoint_list(&page);
            (page, human)
        }
        Command::EndpointsAttempts {
            id,
            status,
            since,
            limit,
        } => {
            let query = optional(&[("status", status), ("since", since)]);
            let path = ["v1", "admin", "endpoints", id, "attempts"];
            let page = pages(client, &path, query, *limit).await?;
            let human = attempt_list(&page);
            (page, human)
        }
        Command::EventsRedeliver { id } => {
            let r = client
                .post(&["v1", "admin", "events", id, "redeliver"], None)
                .await?;
            let human = format!(
                "redelivered {id} to {} endpoints\n",
                text(&r["redelivered"])
            );
            (r, human)
        }
        Command::Inbox {
            tenant_id,
            mode,
            needs_reply,
            limit,
        } => {
            let mut query = vec![("tenant_id", tenant_id.clone())];
            query.extend(optional(&[("mode", mode)]));
            if *needs_reply {
                query.push(("needs_reply", "true".to_owned()));
            }
            let page = pages(client, &["v1", "admin", "conversations"], query, *limit).await?;
            let human = inbox(&page);
            (page, human)
        }
        Command::Audit {
            tenant_id,
            action,
            actor,
            since,
            limit,
        } => {
            let query = optional(&[
                ("tenant_id", tenant_id),
                ("action", action),
                ("actor", actor),
                ("since", since),
            ]);
            let page = pages(client, &["v1", "admin", "audit"], query, *limit).await?;
            let human = audit_list(&page);
            (page, human)
        }
    };
    if !json {
        return Ok(human);
    }
    if answer.is_null() {
        return Ok(String::new());
    }
    serde_json::to_string_pretty(&answer)
        .map(|s| s + "\n")
        .map_err(|e| Failure::Unexpected(format!("could not print the answer as JSON: {e}")))
}

fn tenant_body(new: &NewTenant) -> Value {
    let mut body = json!({ "name": new.name });
    for (key, value) in [
        ("timezone", &new.timezone),
        ("sms_from", &new.sms_from),
        ("email_from", &new.email_from),
    ] {
        if let Some(v) = value {
            body[key] = json!(v);
        }
    }
    // Left out, the API applies its default window; `null` turns quiet hours off.
    if new.no_quiet_hours {
        body["quiet_hours"] = Value::Null;
    }
    body
}

/// The filter as the API names its fields, for the query string and the bulk replay body.
fn filter_fields(filter: &DlqFilter) -> Vec<(&'static str, String)> {
    [
        ("queue", &filter.queue),
        ("tenant_id", &filter.tenant_id),
        ("reason", &filter.reason),
        ("since", &filter.since),
    ]
    .into_iter()
    .filter_map(|(k, v)| Some((k, v.clone()?)))
    .collect()
}

/// The query parameters that are set.
fn optional(params: &[(&'static str, &Option<String>)]) -> Vec<(&'static str, String)> {
    params
        .iter()
        .filter_map(|(k, v)| Some((*k, (*v).clone()?)))
        .collect()
}

/// Every page of a list up to `limit`, joined into one `{"data", "next_cursor"}`. Pages are
/// asked for at most the rows still wanted, so the last page's `next_cursor` is exactly
/// where the next run would continue.
async fn pages(
    client: &Client,
    path: &[&str],
    base: Vec<(&'static str, String)>,
    limit: usize,
) -> Result<Value, Failure> {
    let mut data = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let want = (limit - data.len()).min(MAX_PAGE);
        let mut query = base.clone();
        query.push(("limit", want.to_string()));
        if let Some(c) = &cursor {
            query.push(("cursor", c.clone()));
        }
        let page = client.get(path, &query).await?;
        let rows = page["data"]
            .as_array()
            .ok_or_else(|| Failure::Unexpected("the API's page has no `data` list".into()))?;
        data.extend(rows.iter().cloned());
        cursor = page["next_cursor"].as_str().map(str::to_owned);
        if cursor.is_none() || data.len() >= limit {
            return Ok(json!({ "data": data, "next_cursor": cursor }));
        }
    }
}

/// The rows of a joined page.
fn rows_of(page: &Value) -> &[Value] {
    page["data"].as_array().map_or(&[][..], Vec::as_slice)
}

/// The note under a list cut short by `--limit`.
fn more_note(page: &Value, what: &str) -> String {
    if page["next_cursor"].is_null() {
        String::new()
    } else {
        format!(
            "(more {what} than the {} shown: raise --limit to see them)\n",
            rows_of(page).len()
        )
    }
}

fn yes_no(v: &Value) -> String {
    match v.as_bool() {
        Some(true) => "yes".to_owned(),
        Some(false) => "no".to_owned(),
        None => text(v),
    }
}

fn created_tenant(t: &Value) -> String {
    fields(&[
        ("id", text(&t["id"])),
        ("name", text(&t["name"])),
        (
            "api_key",
            format!("{}  (shown once: store it now)", text(&t["api_key"])),
        ),
        ("key_prefix", text(&t["key_prefix"])),
        ("webhook_secret", text(&t["webhook_secret"])),
        ("timezone", text(&t["timezone"])),
        ("sms_from", text(&t["sms_from"])),
        ("email_from", text(&t["email_from"])),
        ("quiet_hours", quiet_hours(&t["quiet_hours"])),
    ])
}

fn quiet_hours(q: &Value) -> String {
    match (q["start"].as_str(), q["end"].as_str()) {
        (Some(start), Some(end)) => format!("{start}-{end}"),
        _ => "off".to_owned(),
    }
}

fn queues(list: &Value) -> String {
    let mut table = Table::new(&[
        ("NAME", Align::Left),
        ("PENDING", Align::Right),
        ("SCHEDULED", Align::Right),
        ("RUNNING", Align::Right),
        ("DEAD", Align::Right),
        ("COMPLETED/MIN", Align::Right),
        ("FAILED/MIN", Align::Right),
    ]);
    for q in list.as_array().into_iter().flatten() {
        table.row(
            [
                "name",
                "pending",
                "scheduled",
                "running",
                "dead",
                "completed_last_minute",
                "failed_last_minute",
            ]
            .iter()
            .map(|k| text(&q[*k]))
            .collect(),
        );
    }
    table.render()
}

fn dead_letter_list(page: &Value) -> String {
    let rows = rows_of(page);
    if rows.is_empty() {
        return "no dead letters\n".to_owned();
    }
    let mut table = Table::new(&[
        ("ID", Align::Left),
        ("QUEUE", Align::Left),
        ("TENANT", Align::Left),
        ("MESSAGE", Align::Left),
        ("REASON", Align::Left),
        ("ATTEMPTS", Align::Right),
        ("DEAD_AT", Align::Left),
        ("REPLAYED_AT", Align::Left),
        ("LAST_ERROR", Align::Left),
    ]);
    for d in rows {
        let last_error = d["errors"]
            .as_array()
            .and_then(|e| e.last())
            .map_or_else(|| "-".to_owned(), |e| text(&e["error"]));
        table.row(vec![
            text(&d["id"]),
            text(&d["queue"]),
            text(&d["tenant_id"]),
            text(&d["message_id"]),
            text(&d["reason"]),
            text(&d["attempts"]),
            time(&d["dead_at"]),
            time(&d["replayed_at"]),
            truncate(&last_error, LAST_ERROR_WIDTH),
        ]);
    }
    table.render() + &more_note(page, "dead letters")
}

fn endpoint_list(page: &Value) -> String {
    let rows = rows_of(page);
    if rows.is_empty() {
        return "no endpoints\n".to_owned();
    }
    let mut table = Table::new(&[
        ("ID", Align::Left),
        ("TENANT", Align::Left),
        ("ENABLED", Align::Left),
        ("URL", Align::Left),
        ("EVENTS", Align::Left),
        ("DISABLED_REASON", Align::Left),
    ]);
    for e in rows {
        let events: Vec<String> = e["events"]
            .as_array()
            .into_iter()
            .flatten()
            .map(text)
            .collect();
        table.row(vec![
            text(&e["id"]),
            text(&e["tenant_id"]),
            yes_no(&e["enabled"]),
            text(&e["url"]),
            truncate(&events.join(","), EVENTS_WIDTH),
            truncate(&text(&e["disabled_reason"]), LAST_ERROR_WIDTH),
        ]);
    }
    table.render() + &more_note(page, "endpoints")
}

fn attempt_list(page: &Value) -> String {
    let rows = rows_of(page);
    if rows.is_empty() {
        return "no attempts\n".to_owned();
    }
    let mut table = Table::new(&[
        ("ID", Align::Left),
        ("EVENT", Align::Left),
        ("TYPE", Align::Left),
        ("AT", Align::Left),
        ("STATUS", Align::Left),
        ("CODE", Align::Right),
        ("MS", Align::Right),
        ("ERROR", Align::Left),
    ]);
    for a in rows {
        table.row(vec![
            text(&a["id"]),
            text(&a["event_id"]),
            text(&a["type"]),
            time(&a["at"]),
            text(&a["status"]),
            text(&a["status_code"]),
            text(&a["duration_ms"]),
            truncate(&text(&a["error"]), LAST_ERROR_WIDTH),
        ]);
    }
    table.render() + &more_note(page, "attempts")
}

fn inbox(page: &Value) -> String {
    let rows = rows_of(page);
    if rows.is_empty() {
        return "no conversations\n".to_owned();
    }
    let mut table = Table::new(&[
        ("CONTACT", Align::Left),
        ("NAME", Align::Left),
        ("PHONE", Align::Left),
        ("MODE", Align::Left),
        ("NEEDS_REPLY", Align::Left),
        ("LAST_AT", Align::Left),
        ("LAST_ENTRY", Align::Left),
    ]);
    for c in rows {
        let last = &c["last_entry"];
        let entry = if last.is_null() {
            "-".to_owned()
        } else {
            format!("{}: {}", text(&last["author"]), text(&last["body"]))
        };
        table.row(vec![
            text(&c["contact_id"]),
            text(&c["name"]),
            text(&c["phone"]),
            text(&c["mode"]),
            yes_no(&c["needs_reply"]),
            time(&last["at"]),
            truncate(&entry, LAST_ERROR_WIDTH),
        ]);
    }
    table.render() + &more_note(page, "conversations")
}

fn audit_list(page: &Value) -> String {
    let rows = rows_of(page);
    if rows.is_empty() {
        return "no audit entries\n".to_owned();
    }
    let mut table = Table::new(&[
        ("AT", Align::Left),
        ("ACTOR", Align::Left),
        ("ACTION", Align::Left),
        ("TARGET", Align::Left),
        ("TENANT", Align::Left),
        ("CLIENT_IP", Align::Left),
        ("REQUEST_ID", Align::Left),
        ("DETAIL", Align::Left),
    ]);
    for e in rows {
        table.row(vec![
            time(&e["at"]),
            text(&e["actor"]),
            text(&e["action"]),
            text(&e["target"]),
            text(&e["tenant_id"]),
            text(&e["client_ip"]),
            text(&e["request_id"]),
            truncate(&text(&e["detail"]), DETAIL_WIDTH),
        ]);
    }
    table.render() + &more_note(page, "audit entries")
}

fn dead_letter(d: &Value) -> String {
    let mut out = fields(&[
        ("id", text(&d["id"])),
        ("queue", text(&d["queue"])),
        ("tenant_id", text(&d["tenant_id"])),
        ("message_id", text(&d["message_id"])),
        ("reason", text(&d["reason"])),
        ("attempts", text(&d["attempts"])),
        ("dead_at", text(&d["dead_at"])),
        ("replayed_at", text(&d["replayed_at"])),
        ("payload", text(&d["payload"])),
    ]);
    out.push_str("errors:\n");
    let errors = d["errors"].as_array().map_or(&[][..], Vec::as_slice);
    if errors.is_empty() {
        out.push_str("  (none)\n");
    }
    for e in errors {
        out.push_str(&format!("  {}  {}\n", text(&e["at"]), text(&e["error"])));
    }
    out
}

fn message(m: &Value) -> String {
    let mut out = fields(&[
        ("id", text(&m["id"])),
        ("tenant_id", text(&m["tenant_id"])),
        ("channel", text(&m["channel"])),
        ("to", text(&m["to"])),
        ("subject", text(&m["subject"])),
        ("body", text(&m["body"])),
        ("status", text(&m["status"])),
        ("attempts", text(&m["attempts"])),
        ("last_error", text(&m["last_error"])),
        ("send_at", text(&m["send_at"])),
        ("expires_at", text(&m["expires_at"])),
        ("created_at", text(&m["created_at"])),
        ("sent_at", text(&m["sent_at"])),
        ("delivered_at", text(&m["delivered_at"])),
        ("provider_message_id", text(&m["provider_message_id"])),
        ("contact_id", text(&m["contact_id"])),
        ("metadata", text(&m["metadata"])),
    ]);
    out.push_str("\nevents:\n");
    let mut table = Table::new(&[
        ("AT", Align::Left),
        ("STATUS", Align::Left),
        ("DETAIL", Align::Left),
    ]);
    for e in m["events"].as_array().into_iter().flatten() {
        // Full precision here: several events often share a second.
        table.row(vec![text(&e["at"]), text(&e["status"]), text(&e["detail"])]);
    }
    out.push_str(&table.render());
    out
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use axum::{Json, Router, extract::Query, routing::get};

    use super::*;

    /// A dead letter API on loopback with three dead letters, one per page whatever the
    /// `limit`, so following `next_cursor` is what `dlq list` has to do.
    async fn three_single_pages() -> Client {
        async fn page(Query(q): Query<HashMap<String, String>>) -> Json<Value> {
            let n = match q.get("cursor").map(String::as_str) {
                None => 1,
                Some("dl_1") => 2,
                Some(_) => 3,
            };
            Json(json!({
                "data": [{"id": format!("dl_{n}"), "queue": q.get("queue")}],
                "next_cursor": (n < 3).then(|| format!("dl_{n}")),
            }))
        }
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let app = Router::new().route("/v1/dead-letters", get(page));
        tokio::spawn(async move { axum::serve(listener, app).await });
        Client::new(&base, "HERALD_URL", "t".into()).unwrap()
    }

    #[tokio::test]
    async fn dlq_list_follows_next_cursor_up_to_the_limit() {
        let client = three_single_pages().await;
        let filter = DlqFilter {
            queue: Some("deliveries".into()),
            ..DlqFilter::default()
        };
        let path = ["v1", "dead-letters"];
        let two = pages(&client, &path, filter_fields(&filter), 2)
            .await
            .unwrap();
        assert_eq!(
            two,
            json!({"data": [{"id": "dl_1", "queue": "deliveries"}, {"id": "dl_2", "queue": "deliveries"}],
                   "next_cursor": "dl_2"})
        );
        let all = pages(&client, &path, filter_fields(&filter), 100)
            .await
            .unwrap();
        assert_eq!(all["data"].as_array().unwrap().len(), 3, "{all}");
        assert!(all["next_cursor"].is_null(), "{all}");
    }

    #[test]
    fn the_inbox_shows_who_wrote_the_last_entry_and_whether_it_waits_for_a_reply() {
        let page = json!({"data": [{
            "contact_id": "ct_1", "name": null, "phone": "+15550001111", "mode": "human",
            "needs_reply": true,
            "last_entry": {"id": "msg_1", "direction": "inbound", "author": "contact",
                           "body": "are you\nopen?", "at": "2026-03-01T10:00:00.25Z", "status": "received"},
        }], "next_cursor": null});
        let out = inbox(&page);
        let row = out.lines().nth(1).unwrap();
        assert_eq!(
            row.split_whitespace().collect::<Vec<_>>(),
            [
                "ct_1",
                "-",
                "+15550001111",
                "human",
                "yes",
                "2026-03-01T10:00:00Z",
                "contact:",
                "are",
                "you",
                "open?"
            ],
            "{out}"
        );
        assert!(!out.contains("raise --limit"), "{out}");
    }

    #[test]
    fn an_endpoint_row_says_whether_it_is_enabled_and_why_not() {
        let page = json!({"data": [{
            "id": "ep_1", "tenant_id": "ten_1", "url": "https://example.com/h", "enabled": false,
            "events": ["message.sent", "message.failed"],
            "disabled_reason": "no successful delivery since 2026-03-01T00:00:00Z: disabled after 5 days",
        }], "next_cursor": "ep_1"});
        let out = endpoint_list(&page);
        let row = out.lines().nth(1).unwrap();
        assert!(
            row.starts_with("ep_1  ten_1   no       https://example.com/h  message.sent,message.failed  no successful"),
            "{out}"
        );
        assert!(out.contains("more endpoints than the 1 shown"), "{out}");
    }

    #[test]
    fn an_audit_row_shows_who_did_what_and_its_detail_as_compact_json() {
        let page = json!({"data": [{
            "id": "aud_1", "at": "2026-03-01T10:00:00.25Z", "actor": "ops",
            "action": "key.created", "target": "hk_abcdefghi", "tenant_id": "ten_1",
            "client_ip": "127.0.0.1", "request_id": null,
            "detail": {"fields": ["name", "timezone"]},
        }], "next_cursor": "aud_1"});
        let out = audit_list(&page);
        assert!(out.starts_with("AT "), "{out}");
        let row = out.lines().nth(1).unwrap();
        assert_eq!(
            row.split_whitespace().collect::<Vec<_>>(),
            [
                "2026-03-01T10:00:00Z",
                "ops",
                "key.created",
                "hk_abcdefghi",
                "ten_1",
                "127.0.0.1",
                "-",
                r#"{"fields":["name","timezone"]}"#,
            ],
            "{out}"
        );
        assert!(out.contains("more audit entries than the 1 shown"), "{out}");
        assert_eq!(
            audit_list(&json!({"data": [], "next_cursor": null})),
            "no audit entries\n"
        );
    }

    #[test]
    fn no_quiet_hours_is_sent_as_null_and_absent_fields_are_left_out() {
        let body = tenant_body(&NewTenant {
            name: "Acme".into(),
            timezone: Some("Europe/Paris".into()),
            sms_from: None,
            email_from: None,
            no_quiet_hours: true,
        });
        assert_eq!(
            body,
            json!({"name": "Acme", "timezone": "Europe/Paris", "quiet_hours": null})
        );
    }

    #[test]
    fn the_dead_letter_list_shows_the_last_error_shortened() {
        let page = json!({"data": [{
            "id": "dl_1", "queue": "deliveries", "tenant_id": "ten_1", "message_id": "msg_1",
            "reason": "rejected", "attempts": 1, "dead_at": "2026-03-01T10:00:00.5Z",
            "replayed_at": null,
            "errors": [{"at": "2026-03-01T10:00:00Z", "error": "x".repeat(100)}],
        }], "next_cursor": "dl_1"});
        let out = dead_letter_list(&page);
        let row = out.lines().nth(1).unwrap();
        assert!(row.starts_with("dl_1  deliveries  ten_1"), "{out}");
        assert!(row.contains("2026-03-01T10:00:00Z  -  "), "{out}");
        assert!(row.ends_with(&format!("{}…", "x".repeat(59))), "{out}");
        assert!(out.contains("raise --limit"), "{out}");
    }
}
