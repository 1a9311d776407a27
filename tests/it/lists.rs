//! Lists: every collection pages with `limit` and `cursor` (keyset, stable while rows are
//! added), filters as the contract says, and never shows another tenant's objects; the
//! PATCH routes for subscriptions (paused ones create no daily message) and groups; adding
//! 10,000 members in one request; and the conversations inbox.

use std::{collections::HashSet, time::Duration};

use chrono::{NaiveDate, NaiveTime, Timelike, Utc};
use chrono_tz::Tz;
use herald_core::domain::new_id;
use herald_tests::{
    Tenant, TestApp,
    app::test_config,
    eventually,
    providers::TwilioMock,
    views::{
        AppointmentView, ContactView, GroupView, InboxRowView, MembersAddedView, Page,
        SubscriptionView, api_error, view,
    },
};
use reqwest::StatusCode;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(20);

// ---------------------------------------------------------------------------------------
// Helpers.
// ---------------------------------------------------------------------------------------

/// Every page of `path` (with its own query, if any) at `limit` a page, following
/// `next_cursor` to the end; asserts no page is longer than `limit` and only the last has no
/// cursor.
async fn pages<T: DeserializeOwned>(
    app: &TestApp,
    key: &str,
    path: &str,
    limit: usize,
) -> Vec<Vec<T>> {
    let sep = if path.contains('?') { '&' } else { '?' };
    let mut cursor: Option<String> = None;
    let mut out = Vec::new();
    loop {
        let mut url = format!("{path}{sep}limit={limit}");
        if let Some(c) = &cursor {
            url.push_str(&format!("&cursor={}", urlencode(c)));
        }
        let (status, body) = app.get(&url, key).await;
        assert_eq!(status, StatusCode::OK, "GET {url}: {body}");
        let page: Page<Value> = view(&body);
        assert!(page.data.len() <= limit, "GET {url}: {body}");
        out.push(page.data.iter().map(view).collect());
        match page.next_cursor {
            Some(c) => {
                assert!(
                    !page.data.is_empty(),
                    "a cursor after an empty page: {body}"
                );
                cursor = Some(c);
            }
            None => return out,
        }
        assert!(out.len() < 100, "paging {path} does not end");
    }
}

/// Every row of `path`, one page of 100.
async fn all<T: DeserializeOwned>(app: &TestApp, key: &str, path: &str) -> Vec<T> {
    let sep = if path.contains('?') { '&' } else { '?' };
    let page: Page<T> = app.get_as(&format!("{path}{sep}limit=100"), key).await;
    assert!(page.next_cursor.is_none(), "{path} fits in one page");
    page.data
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Asserts `GET path` is 422 naming `field`.
async fn refused(app: &TestApp, key: &str, path: &str, field: &str) {
    let (status, body) = app.get(path, key).await;
    assert_eq!(
        status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "GET {path}: {body}"
    );
    assert_eq!(
        api_error(&body).field.as_deref(),
        Some(field),
        "GET {path}: {body}"
    );
}

/// `POST /v1/contacts` (asserting 201).
async fn new_contact(app: &TestApp, tenant: &Tenant, body: Value) -> ContactView {
    app.post_as("/v1/contacts", &tenant.api_key, &body, StatusCode::CREATED)
        .await
}

fn phone(n: u32) -> String {
    format!("+1555{n:07}")
}

fn ids<T>(rows: &[T], id: impl Fn(&T) -> &str) -> Vec<String> {
    rows.iter().map(|r| id(r).to_owned()).collect()
}

/// Asserts the pages hold exactly `expected`, in that order, once each.
fn assert_paged(pages: &[Vec<String>], expected: &[String], what: &str) {
    let flat: Vec<String> = pages.concat();
    assert_eq!(flat, expected, "{what}: the pages in order");
    let unique: HashSet<&String> = flat.iter().collect();
    assert_eq!(unique.len(), flat.len(), "{what}: no row twice");
}

/// A fixed-offset zone where the local hour is `hour` now (`Etc/GMT` signs are inverted).
fn zone_at_local_hour(hour: i32) -> Tz {
    let utc = i32::try_from(Utc::now().hour()).unwrap();
    let mut offset = (hour - utc).rem_euclid(24);
    if offset > 14 {
        offset -= 24;
    }
    let name = match offset {
        0 => "Etc/GMT".to_owned(),
        o if o > 0 => format!("Etc/GMT-{o}"),
        o => format!("Etc/GMT+{}", -o),
    };
    name.parse().unwrap()
}

fn local_today(tz: Tz) -> NaiveDate {
    Utc::now().with_timezone(&tz).date_naive()
}

/// The local time of day now in `tz`, to the minute, moved by `minutes`.
fn local_minute(tz: Tz, minutes: i64) -> NaiveTime {
    let local = (Utc::now() + chrono::Duration::minutes(minutes)).with_timezone(&tz);
    NaiveTime::from_hms_opt(local.hour(), local.minute(), 0).unwrap()
}

// ---------------------------------------------------------------------------------------
// Contacts.
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn contacts_page_newest_first_filter_and_stay_within_the_tenant() {
    let app = TestApp::start().await;
    let a = app.tenant().await;
    let b = app.tenant().await;
    let names = [
        "Ann Smith",
        "Bob Jones",
        "Annabel Lee",
        "Carl 100%",
        "Dana Brown",
        "Eve Green",
        "Hannah Ng",
    ];
    let mut made = Vec::new();
    for (i, name) in names.iter().enumerate() {
        let mut body = json!({"phone": phone(i as u32), "name": name});
        if i == 1 {
            body["email"] = json!("Bob.Jones@Example.com");
        }
        made.push(new_contact(&app, &a, body).await);
    }
    // Tenant B has a contact with A's first number, another Ann, and a group of its own.
    let b_contact = new_contact(&app, &b, json!({"phone": phone(0), "name": "Ann Other"})).await;
    let b_group: GroupView = app
        .post_as(
            "/v1/groups",
            &b.api_key,
            &json!({"name": "B's"}),
            StatusCode::CREATED,
        )
        .await;
    let (status, _) = app
        .http
        .put(app.url(&format!(
            "/v1/groups/{}/members/{}",
            b_group.id, b_contact.id
        )))
        .bearer_auth(&b.api_key)
        .send()
        .await
        .map(|r| (r.status(), ()))
        .unwrap();
    assert_eq!(status, StatusCode::NO_CONTENT);

    // 7 contacts, 3 a page: 3 pages, newest first, each once.
    let newest_first: Vec<String> = made.iter().rev().map(|c| c.id.clone()).collect();
    let got: Vec<Vec<ContactView>> = pages(&app, &a.api_key, "/v1/contacts", 3).await;
    assert_eq!(
        got.iter().map(Vec::len).collect::<Vec<_>>(),
        [3, 3, 1],
        "7 contacts at 3 a page"
    );
    let got: Vec<Vec<String>> = got.iter().map(|p| ids(p, |c| &c.id)).collect();
    assert_paged(&got, &newest_first, "contacts");

    // A contact added while a client pages shows up neither twice nor in place of another.
    let first: Page<ContactView> = app.get_as("/v1/contacts?limit=3", &a.api_key).await;
    let late = new_contact(&app, &a, json!({"phone": phone(99), "name": "Late Comer"})).await;
    let cursor = first.next_cursor.clone().unwrap();
    let rest: Page<ContactView> = app
        .get_as(
            &format!("/v1/contacts?limit=100&cursor={cursor}"),
            &a.api_key,
        )
        .await;
    let mut seen = ids(&first.data, |c| &c.id);
    seen.extend(ids(&rest.data, |c| &c.id));
    assert_eq!(seen, newest_first, "paging went on as if nothing was added");
    let now_first: Page<ContactView> = app.get_as("/v1/contacts?limit=1", &a.api_key).await;
    assert_eq!(
        now_first.data[0].id, late.id,
        "the newcomer leads a new listing"
    );

    // Filters.
    let by = |query: &'static str| {
        let app = &app;
        let key = a.api_key.clone();
        async move {
            ids(
                &all::<ContactView>(app, &key, &format!("/v1/contacts?{query}")).await,
                |c| &c.id,
            )
        }
    };
    assert_eq!(by("phone=%2B15550000000").await, [made[0].id.clone()]);
    assert_eq!(
        by("email=bob.jones%40example.COM").await,
        [made[1].id.clone()],
        "email matches whatever its case"
    );
    assert_eq!(
        by("q=ANN").await,
        [made[6].id.clone(), made[2].id.clone(), made[0].id.clone()],
        "part of the name, any case, newest first (Hannah, Annabel, Ann)"
    );
    assert_eq!(
        by("q=100%25").await,
        [made[3].id.clone()],
        "% in q is a percent sign"
    );
    assert!(by("q=_").await.is_empty(), "_ in q is an underscore");
    assert!(
        by("q=a%25e").await.is_empty(),
        "% in q matches no run of letters"
    );
    assert_eq!(by("q=").await.len(), 8, "an empty filter is no filter");

    let (status, body) = app
        .patch(
            &format!("/v1/contacts/{}", made[4].id),
            &a.api_key,
            &json!({"consent": {"status": "opted_out", "method": "verbal"}}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(by("opted_out=true").await, [made[4].id.clone()]);
    let not_out = by("opted_out=false").await;
    assert_eq!(not_out.len(), 7, "the six others and the late one");
    assert!(!not_out.contains(&made[4].id));

    let group: GroupView = app
        .post_as(
            "/v1/groups",
            &a.api_key,
            &json!({"name": "Regulars"}),
            StatusCode::CREATED,
        )
        .await;
    let added: MembersAddedView = app
        .post_as(
            &format!("/v1/groups/{}/members", group.id),
            &a.api_key,
            &json!({"contact_ids": [made[1].id, made[5].id]}),
            StatusCode::OK,
        )
        .await;
    assert_eq!(added.added, 2, "{added}");
    let members = ids(
        &all::<ContactView>(
            &app,
            &a.api_key,
            &format!("/v1/contacts?group_id={}", group.id),
        )
        .await,
        |c| &c.id,
    );
    assert_eq!(members, [made[5].id.clone(), made[1].id.clone()]);
    let combined = ids(
        &all::<ContactView>(
            &app,
            &a.api_key,
            &format!("/v1/contacts?group_id={}&q=bob", group.id),
        )
        .await,
        |c| &c.id,
    );
    assert_eq!(
        combined,
        std::slice::from_ref(&made[1].id),
        "filters combine"
    );
    // Another tenant's group, or none at all, has no members here (as an unknown
    // contact_id filters messages to none).
    for g in [b_group.id.as_str(), "grp_01J00000000000000000000000", "x"] {
        let rows: Vec<ContactView> =
            all(&app, &a.api_key, &format!("/v1/contacts?group_id={g}")).await;
        assert!(rows.is_empty(), "group_id={g}: {rows:?}");
    }

    // Tenant B sees only its own, whatever the filter.
    let b_all: Vec<ContactView> = all(&app, &b.api_key, "/v1/contacts").await;
    assert_eq!(ids(&b_all, |c| &c.id), std::slice::from_ref(&b_contact.id));
    let b_phone: Vec<ContactView> =
        all(&app, &b.api_key, "/v1/contacts?phone=%2B15550000000").await;
    assert_eq!(
        ids(&b_phone, |c| &c.id),
        std::slice::from_ref(&b_contact.id)
    );
    let b_ann: Vec<ContactView> = all(&app, &b.api_key, "/v1/contacts?q=ann").await;
    assert_eq!(ids(&b_ann, |c| &c.id), std::slice::from_ref(&b_contact.id));
    let a_ids: HashSet<String> = made.iter().map(|c| c.id.clone()).collect();
    assert!(
        !all::<ContactView>(&app, &a.api_key, "/v1/contacts")
            .await
            .iter()
            .any(|c| c.id == b_contact.id),
        "B's contact is never in A's list"
    );
    assert!(!a_ids.contains(&b_contact.id));

    // Bad filters.
    for (query, field) in [
        ("phone=5551234", "phone"),
        ("phone=%2B0123", "phone"),
        ("email=not-an-address", "email"),
        ("opted_out=yes", "opted_out"),
        ("colour=red", "colour"),
    ] {
        refused(&app, &a.api_key, &format!("/v1/contacts?{query}"), field).await;
    }
    let long = "n".repeat(201);
    refused(&app, &a.api_key, &format!("/v1/contacts?q={long}"), "q").await;
}

// ---------------------------------------------------------------------------------------
// Appointments.
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn appointments_page_soonest_first_by_start_and_filter_by_contact_and_time() {
    let app = TestApp::start().await;
    let a = app.tenant().await;
    let b = app.tenant().await;
    let ann = new_contact(&app, &a, json!({"phone": phone(1), "name": "Ann"})).await;
    let bob = new_contact(&app, &a, json!({"phone": phone(2), "name": "Bob"})).await;
    let stranger = new_contact(&app, &b, json!({"phone": phone(1), "name": "Ann"})).await;

    // Created out of order of their starts, two at the same start: the list is by start,
    // then id, not by creation.
    let base = Utc::now() + chrono::Duration::days(2);
    let base = base - chrono::Duration::nanoseconds(i64::from(base.timestamp_subsec_nanos()));
    let days = [5, 1, 3, 3, 7, 2, 6];
    let mut made = Vec::new();
    for (i, d) in days.iter().enumerate() {
        let who = if i % 2 == 0 { &ann } else { &bob };
        let starts = base + chrono::Duration::days(*d);
        let apt: AppointmentView = app
            .post_as(
                "/v1/appointments",
                &a.api_key,
                &json!({
                    "contact_id": who.id,
                    "starts_at": starts.to_rfc3339(),
                    "reminders": [{"before": "24h"}],
                    "body_template": "See you at {{time}}.",
                }),
                StatusCode::CREATED,
            )
            .await;
        made.push((starts, apt.id.clone(), who.id.clone()));
    }
    let theirs: AppointmentView = app
        .post_as(
            "/v1/appointments",
            &b.api_key,
            &json!({
                "contact_id": stranger.id,
                "starts_at": (base + chrono::Duration::days(1)).to_rfc3339(),
                "reminders": [{"before": "1h"}],
                "body_template": "B's",
            }),
            StatusCode::CREATED,
        )
        .await;
    let mut soonest = made.clone();
    soonest.sort_by(|x, y| (x.0, &x.1).cmp(&(y.0, &y.1)));
    let soonest_ids: Vec<String> = soonest.iter().map(|m| m.1.clone()).collect();

    let got: Vec<Vec<AppointmentView>> = pages(&app, &a.api_key, "/v1/appointments", 3).await;
    assert_eq!(got.iter().map(Vec::len).collect::<Vec<_>>(), [3, 3, 1]);
    for apt in got.iter().flatten() {
        assert_eq!(apt.reminders.len(), 1, "each with its reminder: {apt}");
        assert!(
            apt.reminders[0]
                .body
                .as_str()
                .is_some_and(|b| b.starts_with("See you at ")),
            "{apt}"
        );
    }
    let got: Vec<Vec<String>> = got.iter().map(|p| ids(p, |x| &x.id)).collect();
    assert_paged(&got, &soonest_ids, "appointments");
    // The two at the same start page apart without loss (the cursor holds start and id).
    let two: Vec<Vec<AppointmentView>> = pages(&app, &a.api_key, "/v1/appointments", 1).await;
    assert_eq!(two.len(), 7);
    assert_paged(
        &two.iter().map(|p| ids(p, |x| &x.id)).collect::<Vec<_>>(),
        &soonest_ids,
        "appointments one a page",
    );

    // By contact, and by time: from is inclusive, to exclusive.
    let of_bob: Vec<AppointmentView> = all(
        &app,
        &a.api_key,
        &format!("/v1/appointments?contact_id={}", bob.id),
    )
    .await;
    let bobs: Vec<String> = soonest
        .iter()
        .filter(|m| m.2 == bob.id)
        .map(|m| m.1.clone())
        .collect();
    assert_eq!(ids(&of_bob, |x| &x.id), bobs);
    let from = base + chrono::Duration::days(3);
    let to = base + chrono::Duration::days(6);
    let window: Vec<AppointmentView> = all(
        &app,
        &a.api_key,
        &format!(
            "/v1/appointments?from={}&to={}",
            urlencode(&from.to_rfc3339()),
            urlencode(&to.to_rfc3339())
        ),
    )
    .await;
    let expected: Vec<String> = soonest
        .iter()
        .filter(|m| m.0 >= from && m.0 < to)
        .map(|m| m.1.clone())
        .collect();
    assert_eq!(expected.len(), 3, "days 3, 3 and 5");
    assert_eq!(ids(&window, |x| &x.id), expected);
    // A zone offset in the query is honoured.
    let from_ny = from
        .with_timezone(&chrono_tz::America::New_York)
        .to_rfc3339();
    let same: Vec<AppointmentView> = all(
        &app,
        &a.api_key,
        &format!(
            "/v1/appointments?from={}&to={}",
            urlencode(&from_ny),
            urlencode(&to.to_rfc3339())
        ),
    )
    .await;
    assert_eq!(ids(&same, |x| &x.id), expected);

    // Tenant isolation.
    let b_all: Vec<AppointmentView> = all(&app, &b.api_key, "/v1/appointments").await;
    assert_eq!(ids(&b_all, |x| &x.id), std::slice::from_ref(&theirs.id));
    let a_of_stranger: Vec<AppointmentView> = all(
        &app,
        &a.api_key,
        &format!("/v1/appointments?contact_id={}", stranger.id),
    )
    .await;
    assert!(a_of_stranger.is_empty(), "{a_of_stranger:?}");

    for (query, field) in [
        ("from=tomorrow", "from"),
        ("to=2026-03-03T10:00:00", "to"),
        ("from=2026-03-04T00:00:00Z&to=2026-03-03T00:00:00Z", "to"),
        ("cursor=apt_01J00000000000000000000000", "cursor"),
        ("cursor=17.apt_nope", "cursor"),
        ("status=canceled", "status"),
    ] {
        refused(
            &app,
            &a.api_key,
            &format!("/v1/appointments?{query}"),
            field,
        )
        .await;
    }
}

// ---------------------------------------------------------------------------------------
// Subscriptions.
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn subscriptions_page_filter_by_contact_and_paused_and_patch_checks_every_field() {
    let app = TestApp::start().await;
    let a = app.tenant().await;
    let b = app.tenant().await;
    // Noon for the contact, so a later hour is ahead today and an earlier one has passed.
    let zone = zone_at_local_hour(12);
    let ann = new_contact(
        &app,
        &a,
        json!({"phone": phone(1), "timezone": zone.name()}),
    )
    .await;
    let bob = new_contact(&app, &a, json!({"phone": phone(2)})).await;
    let stranger = new_contact(&app, &b, json!({"phone": phone(1)})).await;
    let mut made = Vec::new();
    for i in 0..7 {
        let who = if i < 4 { &ann } else { &bob };
        made.push(app.subscribe(&a, &who.id, "07:30").await);
    }
    let theirs = app.subscribe(&b, &stranger.id, "07:30").await;
    assert!(!made[0].paused, "a new subscription is not paused");

    let newest_first: Vec<String> = made.iter().rev().map(|s| s.id.clone()).collect();
    let got: Vec<Vec<SubscriptionView>> = pages(&app, &a.api_key, "/v1/subscriptions", 3).await;
    assert_eq!(got.iter().map(Vec::len).collect::<Vec<_>>(), [3, 3, 1]);
    assert_paged(
        &got.iter().map(|p| ids(p, |s| &s.id)).collect::<Vec<_>>(),
        &newest_first,
        "subscriptions",
    );

    // Pausing two.
    for s in [&made[1], &made[5]] {
        let (status, body) = app
            .patch(
                &format!("/v1/subscriptions/{}", s.id),
                &a.api_key,
                &json!({"paused": true}),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let patched: SubscriptionView = view(&body);
        assert!(patched.paused, "{patched}");
        assert_eq!(patched.send_at_local, "07:30", "the rest stays: {patched}");
        assert_eq!(patched.content, s.content);
    }
    let paused: Vec<SubscriptionView> =
        all(&app, &a.api_key, "/v1/subscriptions?paused=true").await;
    assert_eq!(
        ids(&paused, |s| &s.id),
        [made[5].id.clone(), made[1].id.clone()]
    );
    let active: Vec<SubscriptionView> =
        all(&app, &a.api_key, "/v1/subscriptions?paused=false").await;
    assert_eq!(active.len(), 5);
    assert!(active.iter().all(|s| !s.paused));
    let of_bob: Vec<SubscriptionView> = all(
        &app,
        &a.api_key,
        &format!("/v1/subscriptions?contact_id={}&paused=false", bob.id),
    )
    .await;
    assert_eq!(
        ids(&of_bob, |s| &s.id),
        [made[6].id.clone(), made[4].id.clone()]
    );
    // A deleted subscription is not listed.
    let (status, _) = app
        .delete(&format!("/v1/subscriptions/{}", made[6].id), &a.api_key)
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let left: Vec<SubscriptionView> = all(&app, &a.api_key, "/v1/subscriptions").await;
    assert_eq!(left.len(), 6);
    assert!(!left.iter().any(|s| s.id == made[6].id));

    // Tenant isolation: lists, and PATCH of another tenant's is 404 and changes nothing.
    let b_all: Vec<SubscriptionView> = all(&app, &b.api_key, "/v1/subscriptions").await;
    assert_eq!(ids(&b_all, |s| &s.id), std::slice::from_ref(&theirs.id));
    let (status, body) = app
        .patch(
            &format!("/v1/subscriptions/{}", theirs.id),
            &a.api_key,
            &json!({"paused": true}),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    let (status, body) = app
        .patch(
            "/v1/subscriptions/sub_01J00000000000000000000000",
            &a.api_key,
            &json!({"paused": true}),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    let still: SubscriptionView = app
        .get_as(&format!("/v1/subscriptions/{}", theirs.id), &b.api_key)
        .await;
    assert!(!still.paused, "{still}");

    // PATCH content and time. At noon, 18:00 is still ahead today; 06:00 is tomorrow.
    let target = format!("/v1/subscriptions/{}", made[0].id);
    let (status, body) = app
        .patch(
            &target,
            &a.api_key,
            &json!({"send_at_local": "18:00", "content": {"kind": "ai", "prompt": "A thought for the day."}}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let s: SubscriptionView = view(&body);
    assert_eq!(s.send_at_local, "18:00");
    assert_eq!(
        s.content,
        json!({"kind": "ai", "prompt": "A thought for the day."})
    );
    assert_eq!(s.first_delivery_date, local_today(zone).to_string());
    let (status, body) = app
        .patch(&target, &a.api_key, &json!({"send_at_local": "06:00"}))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let s: SubscriptionView = view(&body);
    assert_eq!(
        s.first_delivery_date,
        local_today(zone).succ_opt().unwrap().to_string(),
        "06:00 has passed today: {s}"
    );
    let before: Value = app.get_as(&target, &a.api_key).await;

    // Every bad field is 422 naming it, and changes nothing.
    for (body, code, field) in [
        (
            json!({"send_at_local": "25:00"}),
            "invalid_value",
            "send_at_local",
        ),
        (
            json!({"send_at_local": 730}),
            "invalid_type",
            "send_at_local",
        ),
        (json!({"paused": "yes"}), "invalid_type", "paused"),
        (
            json!({"content": {"kind": "video", "body": "x"}}),
            "invalid_value",
            "content.kind",
        ),
        (
            json!({"content": {"kind": "static"}}),
            "missing_field",
            "content.body",
        ),
        (
            json!({"content": {"kind": "static", "body": ""}}),
            "invalid_value",
            "content.body",
        ),
        (
            json!({"paused": true, "channel": "email"}),
            "unknown_field",
            "channel",
        ),
    ] {
        let (status, e) = app.patch(&target, &a.api_key, &body).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}: {e}");
        assert_eq!(api_error(&e).code, code, "{body}: {e}");
        assert_eq!(api_error(&e).field.as_deref(), Some(field), "{body}: {e}");
    }
    let after: Value = app.get_as(&target, &a.api_key).await;
    assert_eq!(after, before, "rejected changes changed nothing");

    for (query, field) in [
        ("paused=1", "paused"),
        ("cursor=ct_01J00000000000000000000000", "cursor"),
        ("contact=x", "contact"),
    ] {
        refused(
            &app,
            &a.api_key,
            &format!("/v1/subscriptions?{query}"),
            field,
        )
        .await;
    }
}

/// Sets a subscription due a minute ago today, with SQL, so the scheduler's next tick
/// creates its message without waiting for a wall-clock time.
async fn set_due(app: &TestApp, id: &str, zone: Tz) {
    let done =
        sqlx::query("UPDATE subscriptions SET send_at_local = $1, first_date = $2 WHERE id = $3")
            .bind(local_minute(zone, -1))
            .bind(local_today(zone))
            .bind(id)
            .execute(&app.db)
            .await
            .unwrap();
    assert_eq!(done.rows_affected(), 1, "subscription {id} exists");
}

/// `(message id, local date)` of every message a subscription made.
async fn daily_messages(app: &TestApp, subscription_id: &str) -> Vec<(String, Option<NaiveDate>)> {
    sqlx::query_as("SELECT id, local_date FROM messages WHERE subscription_id = $1 ORDER BY id")
        .bind(subscription_id)
        .fetch_all(&app.db)
        .await
        .unwrap()
}

async fn daily_runs(app: &TestApp, subscription_id: &str) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM daily_runs WHERE subscription_id = $1")
        .bind(subscription_id)
        .fetch_one(&app.db)
        .await
        .unwrap()
}

/// Waits until the scheduler has made the subscription's message.
async fn wait_for_daily(app: &TestApp, id: &str) {
    eventually(
        WAIT,
        &format!("subscription {id} makes its message"),
        || async { (!daily_messages(app, id).await.is_empty()).then_some(()) },
    )
    .await;
}

#[tokio::test]
async fn a_paused_subscription_creates_no_daily_message_and_a_resume_sends_nothing_late() {
    let mut config = test_config().await;
    config.daily_tick_seconds = 1;
    let mut app = TestApp::start_with(config).await;
    let tenant = app.tenant().await;
    // A zone whose local midnight is hours away, so the whole test sees one local date.
    let zone = zone_at_local_hour(12);
    let contact = new_contact(
        &app,
        &tenant,
        json!({"phone": phone(7), "timezone": zone.name()}),
    )
    .await;
    let paused = app.subscribe(&tenant, &contact.id, "07:30").await;
    let live = app.subscribe(&tenant, &contact.id, "07:30").await;
    for s in [&paused, &live] {
        set_due(&app, &s.id, zone).await;
    }
    let (status, body) = app
        .patch(
            &format!("/v1/subscriptions/{}", paused.id),
            &tenant.api_key,
            &json!({"paused": true}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");

    // The live one, due alongside it, shows the scheduler ran.
    app.start_scheduler();
    wait_for_daily(&app, &live.id).await;
    assert!(
        daily_messages(&app, &paused.id).await.is_empty(),
        "the paused subscription made a message"
    );
    assert_eq!(daily_runs(&app, &paused.id).await, 0, "and took no run");

    // Resumed after its time passed: nothing late today; tomorrow it goes on.
    let (status, body) = app
        .patch(
            &format!("/v1/subscriptions/{}", paused.id),
            &tenant.api_key,
            &json!({"paused": false}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let resumed: SubscriptionView = view(&body);
    assert!(!resumed.paused);
    let tomorrow = local_today(zone).succ_opt().unwrap().to_string();
    assert_eq!(resumed.first_delivery_date, tomorrow, "{resumed}");

    // The live one, delivered today, moved to a time still ahead today: not a second
    // message today; it starts tomorrow.
    let later = local_minute(zone, 2).format("%H:%M").to_string();
    let (status, body) = app
        .patch(
            &format!("/v1/subscriptions/{}", live.id),
            &tenant.api_key,
            &json!({"send_at_local": later}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        view::<SubscriptionView>(&body).first_delivery_date,
        tomorrow
    );

    // A witness made due after both changes: once it has its message, a tick has run since.
    let witness = app.subscribe(&tenant, &contact.id, "07:30").await;
    set_due(&app, &witness.id, zone).await;
    wait_for_daily(&app, &witness.id).await;
    assert!(
        daily_messages(&app, &paused.id).await.is_empty(),
        "the resumed subscription sent today's message late"
    );
    assert_eq!(
        daily_messages(&app, &live.id).await.len(),
        1,
        "one message per subscription and local date"
    );
}

// ---------------------------------------------------------------------------------------
// Groups.
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn groups_page_newest_first_with_counts_and_rename_within_the_tenant() {
    let app = TestApp::start().await;
    let a = app.tenant().await;
    let b = app.tenant().await;
    let mut made = Vec::new();
    for i in 0..7 {
        made.push(app.new_group(&a, &format!("Group {i}")).await);
    }
    let theirs = app.new_group(&b, "Theirs").await;
    let c = new_contact(&app, &a, json!({"phone": phone(1)})).await;
    let added: MembersAddedView = app
        .post_as(
            &format!("/v1/groups/{}/members", made[3].id),
            &a.api_key,
            &json!({"contact_ids": [c.id]}),
            StatusCode::OK,
        )
        .await;
    assert_eq!((added.added, added.already), (1, 0));

    let newest_first: Vec<String> = made.iter().rev().map(|g| g.id.clone()).collect();
    let got: Vec<Vec<GroupView>> = pages(&app, &a.api_key, "/v1/groups", 3).await;
    assert_eq!(got.iter().map(Vec::len).collect::<Vec<_>>(), [3, 3, 1]);
    for g in got.iter().flatten() {
        let expected = if g.id == made[3].id { 1 } else { 0 };
        assert_eq!(g.members, expected, "{g}");
    }
    assert_paged(
        &got.iter().map(|p| ids(p, |g| &g.id)).collect::<Vec<_>>(),
        &newest_first,
        "groups",
    );
    let b_all: Vec<GroupView> = all(&app, &b.api_key, "/v1/groups").await;
    assert_eq!(ids(&b_all, |g| &g.id), std::slice::from_ref(&theirs.id));
    // A deleted group is not listed.
    let (status, _) = app
        .delete(&format!("/v1/groups/{}", made[0].id), &a.api_key)
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert_eq!(
        all::<GroupView>(&app, &a.api_key, "/v1/groups").await.len(),
        6
    );

    // Rename.
    let path = format!("/v1/groups/{}", made[3].id);
    let (status, body) = app
        .patch(&path, &a.api_key, &json!({"name": "  VIPs  "}))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let renamed: GroupView = view(&body);
    assert_eq!(renamed.name, "VIPs");
    assert_eq!(renamed.members, 1);
    let read: GroupView = app.get_as(&path, &a.api_key).await;
    assert_eq!(read.name, "VIPs");
    for (body, code) in [
        (json!({}), "missing_field"),
        (json!({"name": "   "}), "invalid_value"),
        (json!({"name": "x".repeat(201)}), "invalid_value"),
        (json!({"name": 7}), "invalid_type"),
    ] {
        let (status, e) = app.patch(&path, &a.api_key, &body).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}: {e}");
        assert_eq!(api_error(&e).code, code, "{body}: {e}");
        assert_eq!(api_error(&e).field.as_deref(), Some("name"), "{body}: {e}");
    }
    let (status, e) = app
        .patch(&path, &a.api_key, &json!({"name": "ok", "colour": "red"}))
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{e}");
    assert_eq!(api_error(&e).field.as_deref(), Some("colour"));
    assert_eq!(
        app.get_as::<GroupView>(&path, &a.api_key).await.name,
        "VIPs"
    );

    // Another tenant's group is 404 on every route, and changes nothing.
    let (status, _) = app
        .patch(&path, &b.api_key, &json!({"name": "Hijacked"}))
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = app.get(&format!("{path}/members"), &b.api_key).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let stranger = new_contact(&app, &b, json!({"phone": phone(2)})).await;
    let (status, _) = app
        .post(
            &format!("{path}/members"),
            &b.api_key,
            &json!({"contact_ids": [stranger.id]}),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let read: GroupView = app.get_as(&path, &a.api_key).await;
    assert_eq!((read.name.as_str(), read.members), ("VIPs", 1));
    let (status, _) = app
        .patch(
            "/v1/groups/grp_01J00000000000000000000000",
            &a.api_key,
            &json!({"name": "x"}),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    refused(
        &app,
        &a.api_key,
        "/v1/groups?cursor=ct_01J00000000000000000000000",
        "cursor",
    )
    .await;
    refused(&app, &a.api_key, "/v1/groups?name=x", "name").await;
}

/// Inserts `n` contacts for a tenant straight into Postgres (the API would take 9,000
/// requests); returns their ids, oldest first.
async fn insert_contacts(
    app: &TestApp,
    tenant: &Tenant,
    n: usize,
    first_phone: u32,
) -> Vec<String> {
    let ids: Vec<String> = (0..n).map(|_| new_id("ct")).collect();
    let phones: Vec<String> = (0..n).map(|i| phone(first_phone + i as u32)).collect();
    sqlx::query(
        "INSERT INTO contacts (id, tenant_id, phone) SELECT id, $1, phone FROM unnest($2::text[], $3::text[]) AS v(id, phone)",
    )
    .bind(&tenant.id)
    .bind(&ids)
    .bind(&phones)
    .execute(&app.db)
    .await
    .unwrap();
    ids
}

#[tokio::test]
async fn ten_thousand_contacts_join_a_group_in_one_request_with_exact_counts() {
    let app = TestApp::start().await;
    let a = app.tenant().await;
    let b = app.tenant().await;
    let group = app.new_group(&a, "Everyone").await;
    let members = format!("/v1/groups/{}/members", group.id);
    let known = insert_contacts(&app, &a, 9_000, 0).await;
    let strangers = insert_contacts(&app, &b, 300, 0).await;

    // 100 of them are members already.
    let first: MembersAddedView = app
        .post_as(
            &members,
            &a.api_key,
            &json!({"contact_ids": known[..100]}),
            StatusCode::OK,
        )
        .await;
    assert_eq!((first.added, first.already), (100, 0), "{first}");
    assert!(first.unknown.is_empty());

    // 9,000 of A's, 300 of B's, 400 well-formed ids of nobody, 300 malformed: 10,000.
    let nobody: Vec<String> = (0..400).map(|_| new_id("ct")).collect();
    let malformed: Vec<String> = (0..300).map(|i| format!("not-a-contact-{i}")).collect();
    let mut all_ids = known.clone();
    all_ids.extend(strangers.iter().cloned());
    all_ids.extend(nobody.iter().cloned());
    all_ids.extend(malformed.iter().cloned());
    assert_eq!(all_ids.len(), 10_000);
    let body = json!({"contact_ids": all_ids});
    assert!(
        serde_json::to_vec(&body).unwrap().len() > 64 * 1024,
        "the body is past the 64 KiB other routes take"
    );
    let (status, answer) = app.post(&members, &a.api_key, &body).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    let done: MembersAddedView = view(&answer);
    assert_eq!(done.added, 8_900);
    assert_eq!(done.already, 100);
    let mut unknown_expected = strangers.clone();
    unknown_expected.extend(nobody);
    unknown_expected.extend(malformed);
    assert_eq!(
        done.unknown, unknown_expected,
        "every unknown id, in the order given"
    );
    let read: GroupView = app
        .get_as(&format!("/v1/groups/{}", group.id), &a.api_key)
        .await;
    assert_eq!(read.members, 9_000);
    let b_rows: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM group_members gm JOIN contacts c ON c.id = gm.contact_id WHERE c.tenant_id = $1",
    )
    .bind(&b.id)
    .fetch_one(&app.db)
    .await
    .unwrap();
    assert_eq!(b_rows, 0, "another tenant's contacts never join");

    // Again, with a repeat: everything is already there, counted once.
    let again: MembersAddedView = app
        .post_as(
            &members,
            &a.api_key,
            &json!({"contact_ids": [known[0], known[0], known[1]]}),
            StatusCode::OK,
        )
        .await;
    assert_eq!((again.added, again.already, again.unknown.len()), (0, 2, 0));

    // The members list pages newest contact first, through all 9,000.
    let page: Page<herald_tests::views::ContactView> = app
        .get_as(&format!("{members}?limit=100"), &a.api_key)
        .await;
    let expected: Vec<String> = {
        let mut k = known.clone();
        k.sort();
        k.reverse();
        k.truncate(100);
        k
    };
    assert_eq!(ids(&page.data, |c| &c.id), expected);
    assert!(page.next_cursor.is_some());

    // Bad bodies are refused and add nothing.
    let mut eleven: Vec<String> = known.clone();
    eleven.extend((0..1_001).map(|_| new_id("ct")));
    for (body, code, field) in [
        (
            json!({"contact_ids": eleven}),
            "invalid_value",
            "contact_ids",
        ),
        (json!({"contact_ids": []}), "invalid_value", "contact_ids"),
        (json!({}), "missing_field", "contact_ids"),
        (
            json!({"contact_ids": "ct_x"}),
            "invalid_type",
            "contact_ids",
        ),
        (
            json!({"contact_ids": ["ct_x", 7]}),
            "invalid_type",
            "contact_ids[1]",
        ),
        (
            json!({"contact_ids": ["ct_x"], "more": 1}),
            "unknown_field",
            "more",
        ),
    ] {
        let (status, e) = app.post(&members, &a.api_key, &body).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{field}: {e}");
        assert_eq!(api_error(&e).code, code, "{e}");
        assert_eq!(api_error(&e).field.as_deref(), Some(field), "{e}");
    }
    // Past 1 MiB is 413 here; past 64 KiB is still 413 on every other route.
    let huge =
        json!({"contact_ids": (0..40_000).map(|i| format!("ct_{i:026}")).collect::<Vec<_>>()});
    let (status, e) = app.post(&members, &a.api_key, &huge).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{e}");
    let big_name = json!({"name": "x".repeat(70 * 1024)});
    let (status, e) = app
        .patch(&format!("/v1/groups/{}", group.id), &a.api_key, &big_name)
        .await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{e}");
    let (status, e) = app
        .post(
            &format!("/v1/groups/{}/messages", group.id),
            &a.api_key,
            &json!({"channel": "sms", "body": "hi", "metadata": {"pad": "x".repeat(70 * 1024)}}),
        )
        .await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{e}");
    let read: GroupView = app
        .get_as(&format!("/v1/groups/{}", group.id), &a.api_key)
        .await;
    assert_eq!(
        read.members, 9_000,
        "nothing was added by a refused request"
    );

    // Another tenant's group, or no group: 404, nothing added.
    let theirs = app.new_group(&b, "Theirs").await;
    let (status, _) = app
        .post(
            &format!("/v1/groups/{}/members", theirs.id),
            &a.api_key,
            &json!({"contact_ids": known[..10]}),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let theirs_now: GroupView = app
        .get_as(&format!("/v1/groups/{}", theirs.id), &b.api_key)
        .await;
    assert_eq!(theirs_now.members, 0);
}

// ---------------------------------------------------------------------------------------
// The conversations inbox.
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn the_inbox_lists_conversations_by_newest_activity_with_their_last_entry() {
    let twilio = TwilioMock::start().await;
    let mut config = test_config().await;
    twilio.configure(&mut config);
    // The API alone: texts are stored, nothing answers them, outbound SMS wait in the queue.
    let app = TestApp::start_with(config).await;
    let a = app.tenant().await;
    let b = app.tenant().await;

    // Seven texters, one after the other.
    let numbers: Vec<String> = (0..7).map(|i| phone(100 + i)).collect();
    for (i, n) in numbers.iter().enumerate() {
        app.text(&twilio, &a, n, &format!("hello {i}")).await;
    }
    app.text(&twilio, &b, &numbers[0], "hello B").await;
    let contact_of = |rows: &[ContactView], n: &str| {
        rows.iter()
            .find(|c| c.phone.as_deref() == Some(n))
            .unwrap_or_else(|| panic!("no contact for {n}"))
            .id
            .clone()
    };
    let a_contacts: Vec<ContactView> = all(&app, &a.api_key, "/v1/contacts").await;
    let cid: Vec<String> = numbers.iter().map(|n| contact_of(&a_contacts, n)).collect();

    // Then the tenant texts #2 back, and #4 texts again: activity reorders them.
    let (status, body) = app
        .post(
            "/v1/messages",
            &a.api_key,
            &json!({"channel": "sms", "to": numbers[2], "body": "We open at 9."}),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    app.text(&twilio, &a, &numbers[4], "still there?").await;
    // A person takes #5 over.
    let (status, body) = app
        .post(
            &format!("/v1/conversations/{}/takeover", cid[5]),
            &a.api_key,
            &json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");

    let newest_activity: Vec<String> = [4, 2, 6, 5, 3, 1, 0]
        .iter()
        .map(|i| cid[*i].clone())
        .collect();
    let got: Vec<Vec<InboxRowView>> = pages(&app, &a.api_key, "/v1/conversations", 3).await;
    assert_eq!(got.iter().map(Vec::len).collect::<Vec<_>>(), [3, 3, 1]);
    assert_paged(
        &got.iter()
            .map(|p| ids(p, |r| &r.contact_id))
            .collect::<Vec<_>>(),
        &newest_activity,
        "inbox",
    );
    let rows: Vec<InboxRowView> = got.concat();
    let row = |i: usize| rows.iter().find(|r| r.contact_id == cid[i]).unwrap();
    assert_eq!(row(4).last_entry.body, "still there?");
    assert_eq!(row(4).last_entry.direction, "inbound");
    assert_eq!(row(4).last_entry.author, "contact");
    assert!(row(4).needs_reply);
    assert_eq!(row(4).phone.as_deref(), Some(numbers[4].as_str()));
    assert_eq!(row(2).last_entry.body, "We open at 9.");
    assert_eq!(row(2).last_entry.direction, "outbound");
    assert!(!row(2).needs_reply, "answered: {}", row(2));
    assert_eq!(row(5).mode, "human");
    assert_eq!(row(0).mode, "ai");
    // The last entry is the conversation's own last entry, in its shape.
    let conversation = app.conversation(&a, &cid[2]).await;
    let last = conversation.data.last().unwrap();
    assert_eq!(row(2).last_entry.id, last.id);
    assert_eq!(row(2).last_entry.at, last.at);
    assert_eq!(row(2).last_entry.status, last.status);

    // Filters.
    let waiting: Vec<InboxRowView> =
        all(&app, &a.api_key, "/v1/conversations?needs_reply=true").await;
    let expected: Vec<String> = [4, 6, 5, 3, 1, 0].iter().map(|i| cid[*i].clone()).collect();
    assert_eq!(ids(&waiting, |r| &r.contact_id), expected);
    let answered: Vec<InboxRowView> =
        all(&app, &a.api_key, "/v1/conversations?needs_reply=false").await;
    assert_eq!(ids(&answered, |r| &r.contact_id), [cid[2].clone()]);
    let human: Vec<InboxRowView> = all(&app, &a.api_key, "/v1/conversations?mode=human").await;
    assert_eq!(ids(&human, |r| &r.contact_id), [cid[5].clone()]);
    let ai_waiting: Vec<InboxRowView> = all(
        &app,
        &a.api_key,
        "/v1/conversations?mode=ai&needs_reply=true",
    )
    .await;
    assert_eq!(ai_waiting.len(), 5);

    // A contact with no conversation is not in the inbox; tenant B sees only its own.
    new_contact(&app, &a, json!({"phone": phone(999)})).await;
    assert_eq!(
        all::<InboxRowView>(&app, &a.api_key, "/v1/conversations")
            .await
            .len(),
        7
    );
    let b_rows: Vec<InboxRowView> = all(&app, &b.api_key, "/v1/conversations").await;
    assert_eq!(b_rows.len(), 1);
    assert_eq!(b_rows[0].last_entry.body, "hello B");
    assert!(!cid.contains(&b_rows[0].contact_id));

    for (query, field) in [
        ("mode=robot", "mode"),
        ("needs_reply=maybe", "needs_reply"),
        ("cursor=ct_01J00000000000000000000000", "cursor"),
        ("status=open", "status"),
    ] {
        refused(
            &app,
            &a.api_key,
            &format!("/v1/conversations?{query}"),
            field,
        )
        .await;
    }
}

// ---------------------------------------------------------------------------------------
// Every list.
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn every_list_refuses_a_bad_limit_or_cursor_and_answers_an_empty_page() {
    let app = TestApp::start().await;
    let tenant = app.tenant().await;
    let group = app.new_group(&tenant, "Nobody").await;
    let lists = [
        "/v1/contacts".to_owned(),
        "/v1/appointments".to_owned(),
        "/v1/subscriptions".to_owned(),
        "/v1/groups".to_owned(),
        format!("/v1/groups/{}/members", group.id),
        "/v1/conversations".to_owned(),
    ];
    for path in &lists {
        for limit in ["0", "101", "-1", "ten", "2.5"] {
            refused(
                &app,
                &tenant.api_key,
                &format!("{path}?limit={limit}"),
                "limit",
            )
            .await;
        }
        for cursor in ["forged", "msg_", "%20"] {
            refused(
                &app,
                &tenant.api_key,
                &format!("{path}?cursor={cursor}"),
                "cursor",
            )
            .await;
        }
        for limit in ["1", "100"] {
            let (status, body) = app
                .get(&format!("{path}?limit={limit}"), &tenant.api_key)
                .await;
            assert_eq!(status, StatusCode::OK, "{path}: {body}");
            if path.starts_with("/v1/groups") && !path.contains("members") {
                continue;
            }
            assert_eq!(body, json!({"data": [], "next_cursor": null}), "{path}");
        }
        let (status, _) = app.get(path, "hk_not-a-key").await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{path}");
    }
}
