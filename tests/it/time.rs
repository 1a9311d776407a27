//! Time: appointment reminders (created, moved, canceled, sent on time), quiet hours in the
//! recipient's zone, and daily delivery at each contact's local hour (exactly once however
//! many schedulers run, caught up after downtime, static or AI-written).

use std::time::Duration;

use chrono::{DateTime, NaiveDate, NaiveTime, SecondsFormat, TimeZone, Timelike, Utc};
use chrono_tz::Tz;
use herald_core::Config;
use herald_tests::{
    Tenant, TestApp,
    app::test_config,
    eventually,
    process::Proc,
    providers::{ModelMock, ModelReply, TwilioMock},
    views::{AppointmentView, ContactView, MessageView, SubscriptionView, api_error, time, view},
};
use reqwest::StatusCode;
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(20);
const TEMPLATE: &str = "Hi {{name}}, see you at {{time}} on {{date}}.";

// ---------------------------------------------------------------------------------------
// Time helpers, written independently of herald-core's own scheduling functions.
// ---------------------------------------------------------------------------------------

fn rfc(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// `t` cut to whole milliseconds, as the API reads it back.
fn millis(t: DateTime<Utc>) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(t.timestamp_millis()).unwrap()
}

/// The reminder text the API promises for an appointment at `starts` seen from `tz`.
fn rendered(name: &str, starts: DateTime<Utc>, tz: Tz) -> String {
    let local = starts.with_timezone(&tz);
    format!(
        "Hi {name}, see you at {} on {}.",
        local.format("%-I:%M %p"),
        local.format("%A, %B %-d")
    )
}

/// A fixed-offset IANA zone `offset_hours` east of UTC (`Etc/GMT` signs are inverted).
fn fixed_zone(offset_hours: i32) -> Tz {
    let name = match offset_hours {
        0 => "Etc/GMT".to_owned(),
        o if o > 0 => format!("Etc/GMT-{o}"),
        o => format!("Etc/GMT+{}", -o),
    };
    name.parse().unwrap()
}

/// A zone where the local hour is `hour` right now.
fn zone_at_local_hour(hour: i32) -> Tz {
    let utc = i32::try_from(Utc::now().hour()).unwrap();
    let mut offset = (hour - utc).rem_euclid(24);
    if offset > 14 {
        offset -= 24;
    }
    fixed_zone(offset)
}

fn local_today(tz: Tz) -> NaiveDate {
    Utc::now().with_timezone(&tz).date_naive()
}

/// The local time of day now in `tz`, cut to the minute, moved by `minutes`.
fn local_minute(tz: Tz, minutes: i64) -> NaiveTime {
    let local = (Utc::now() + chrono::Duration::minutes(minutes)).with_timezone(&tz);
    NaiveTime::from_hms_opt(local.hour(), local.minute(), 0).unwrap()
}

/// The instant a local wall-clock time names in `tz` (the zones used here have no gap there).
fn instant(tz: Tz, date: NaiveDate, time: NaiveTime) -> DateTime<Utc> {
    tz.from_local_datetime(&date.and_time(time))
        .earliest()
        .unwrap_or_else(|| panic!("{date} {time} does not exist in {}", tz.name()))
        .with_timezone(&Utc)
}

/// Local midnight at the end of `date` in `tz`: when a daily message for that date expires.
fn end_of_local_day(tz: Tz, date: NaiveDate) -> DateTime<Utc> {
    instant(tz, date.succ_opt().unwrap(), NaiveTime::MIN)
}

/// Minutes between now and the nearest local midnight in `tz`.
fn minutes_from_midnight(tz: Tz) -> i64 {
    let local = Utc::now().with_timezone(&tz);
    let m = i64::from(local.hour() * 60 + local.minute());
    m.min(24 * 60 - m)
}

/// The candidate zones whose local midnight is more than `margin` minutes away, so a test
/// that runs a few minutes sees one local date in each.
fn zones_away_from_midnight(candidates: &[&str], margin: i64) -> Vec<Tz> {
    candidates
        .iter()
        .map(|z| z.parse::<Tz>().unwrap())
        .filter(|tz| minutes_from_midnight(*tz) > margin)
        .collect()
}

/// One zone (of a few real ones) where local midnight is more than `margin` minutes away.
fn zone_away_from_midnight(margin: i64) -> Tz {
    zones_away_from_midnight(&["America/New_York", "Asia/Tokyo", "Europe/Berlin"], margin)[0]
}

// ---------------------------------------------------------------------------------------
// API and database helpers.
// ---------------------------------------------------------------------------------------

/// The API (not yet the worker or scheduler), sending SMS through `twilio`.
async fn app_with(twilio: &TwilioMock, model: Option<&ModelMock>) -> TestApp {
    let mut config = test_config().await;
    twilio.configure(&mut config);
    if let Some(model) = model {
        config.llm = Some(model.endpoint());
    }
    TestApp::start_with(config).await
}

/// A tenant in `zone` with its own `sms_from` and these quiet hours (`null`: none).
async fn tenant_in(app: &TestApp, zone: &str, quiet_hours: Value) -> Tenant {
    let n: u64 = rand::random::<u64>() % 1_000_000_000;
    app.create_tenant(json!({
        "name": "Acme Dental",
        "timezone": zone,
        "sms_from": format!("+1500{n:09}"),
        "quiet_hours": quiet_hours,
    }))
    .await
}

/// `POST /v1/contacts` (asserting 201); returns the id.
async fn contact(
    app: &TestApp,
    tenant: &Tenant,
    phone: &str,
    name: Option<&str>,
    zone: Option<&str>,
) -> String {
    let mut body = json!({"phone": phone});
    if let Some(name) = name {
        body["name"] = json!(name);
    }
    if let Some(zone) = zone {
        body["timezone"] = json!(zone);
    }
    let c: ContactView = app
        .post_as("/v1/contacts", &tenant.api_key, &body, StatusCode::CREATED)
        .await;
    c.id
}

/// `POST /v1/messages` (asserting 202); returns the message.
async fn send(app: &TestApp, tenant: &Tenant, body: Value) -> MessageView {
    let (status, m) = app.post("/v1/messages", &tenant.api_key, &body).await;
    assert_eq!(status, StatusCode::ACCEPTED, "send {body}: {m}");
    view(&m)
}

/// `POST /v1/subscriptions` (asserting 201); returns the subscription.
async fn subscribe(app: &TestApp, tenant: &Tenant, body: &Value) -> Value {
    let (status, s) = app.post("/v1/subscriptions", &tenant.api_key, body).await;
    assert_eq!(status, StatusCode::CREATED, "subscribe {body}: {s}");
    s
}

/// A static daily SMS for a contact (asserting 201); returns its id.
async fn subscribe_static(app: &TestApp, tenant: &Tenant, contact_id: &str, body: &str) -> String {
    let s = subscribe(
        app,
        tenant,
        &json!({
            "contact_id": contact_id,
            "send_at_local": "07:30",
            "content": {"kind": "static", "body": body},
        }),
    )
    .await;
    view::<SubscriptionView>(&s).id
}

/// Moves a subscription's local time and first date with SQL, to make it due without waiting
/// for a wall-clock time.
async fn set_due(app: &TestApp, id: &str, send_at_local: NaiveTime, first_date: NaiveDate) {
    let done =
        sqlx::query("UPDATE subscriptions SET send_at_local = $1, first_date = $2 WHERE id = $3")
            .bind(send_at_local)
            .bind(first_date)
            .bind(id)
            .execute(&app.db)
            .await
            .unwrap();
    assert_eq!(done.rows_affected(), 1, "subscription {id} exists");
}

/// A daily message as stored.
#[derive(Debug, Clone)]
struct Daily {
    id: String,
    local_date: Option<NaiveDate>,
    created_at: DateTime<Utc>,
}

/// The messages a subscription produced, oldest first.
async fn daily_messages(app: &TestApp, subscription_id: &str) -> Vec<Daily> {
    let rows: Vec<(String, Option<NaiveDate>, DateTime<Utc>)> = sqlx::query_as(
        "SELECT id, local_date, created_at FROM messages WHERE subscription_id = $1
         ORDER BY created_at, id",
    )
    .bind(subscription_id)
    .fetch_all(&app.db)
    .await
    .unwrap();
    rows.into_iter()
        .map(|(id, local_date, created_at)| Daily {
            id,
            local_date,
            created_at,
        })
        .collect()
}

/// The `daily_runs` rows of a subscription.
async fn daily_runs(app: &TestApp, subscription_id: &str) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM daily_runs WHERE subscription_id = $1")
        .bind(subscription_id)
        .fetch_one(&app.db)
        .await
        .unwrap()
}

/// Waits until a subscription has produced a message; returns it.
async fn wait_for_daily(app: &TestApp, subscription_id: &str, within: Duration) -> Daily {
    eventually(
        within,
        &format!("subscription {subscription_id} creates its daily message"),
        || async {
            daily_messages(app, subscription_id)
                .await
                .into_iter()
                .next()
        },
    )
    .await
}

/// The `deliveries` queue's scheduled jobs (id, due in ms), read from Redis.
async fn scheduled_jobs(app: &TestApp) -> Vec<(String, i64)> {
    let key = format!("{{{}:deliveries}}:scheduled", app.config.queue_prefix);
    let mut conn = app.redis.clone();
    let jobs: Vec<(String, f64)> = redis::cmd("ZRANGE")
        .arg(&key)
        .arg(0)
        .arg(-1)
        .arg("WITHSCORES")
        .query_async(&mut conn)
        .await
        .unwrap();
    let mut jobs: Vec<(String, i64)> = jobs.into_iter().map(|(id, due)| (id, due as i64)).collect();
    jobs.sort();
    jobs
}

// ---------------------------------------------------------------------------------------
// Appointments and their reminders.
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn reminders_are_created_moved_and_canceled_with_their_appointment() {
    // The API alone: the reminders wait in the queue, nothing takes them.
    let app = TestApp::start().await;
    let tenant = app.tenant().await; // its zone is UTC; the contact's must win
    let ny: Tz = "America/New_York".parse().unwrap();
    let phone = "+15550101010";
    let pat = contact(&app, &tenant, phone, Some("Pat"), Some(ny.name())).await;

    let starts = millis(Utc::now() + chrono::Duration::hours(3));
    let (status, a) = app
        .post(
            "/v1/appointments",
            &tenant.api_key,
            &json!({
                "contact_id": pat,
                "starts_at": rfc(starts),
                "reminders": [{"before": "24h"}, {"before": "2h"}, {"before": "30m"}],
                "channel": "sms",
                "body_template": TEMPLATE,
            }),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{a}");
    let a: AppointmentView = view(&a);
    let apt = a.id.clone();
    assert!(apt.starts_with("apt_"), "{apt}");
    assert_eq!(a.contact_id, pat.as_str());
    assert_eq!(time(&a.starts_at), starts);
    assert_eq!(a.channel, "sms");
    assert_eq!(a.body_template, TEMPLATE);
    assert!(a.canceled_at.is_none(), "{a}");

    // The 24h reminder's time has passed: not created. The 2h and 30m ones are, in NY time.
    let reminders = &a.reminders;
    assert_eq!(reminders.len(), 2, "only the 2h and 30m reminders: {a}");
    let two_h = reminders[0].id.clone();
    let thirty_m = reminders[1].id.clone();
    for (r, before) in [(&reminders[0], 120), (&reminders[1], 30)] {
        assert!(r.id.starts_with("msg_"), "{r}");
        assert_eq!(r.status, "scheduled", "{r}");
        assert_eq!(r.channel, "sms");
        assert_eq!(r.to, phone);
        assert_eq!(r.contact_id.as_deref(), Some(pat.as_str()));
        assert_eq!(
            time(&r.send_at),
            starts - chrono::Duration::minutes(before),
            "{r}"
        );
        assert_eq!(
            time(&r.expires_at),
            starts,
            "a reminder expires when it starts"
        );
        assert_eq!(r.body, rendered("Pat", starts, ny), "rendered in NY: {r}");
    }
    let (status, got) = app
        .get(&format!("/v1/appointments/{apt}"), &tenant.api_key)
        .await;
    assert_eq!(status, StatusCode::OK, "{got}");
    let got: AppointmentView = view(&got);
    assert_eq!(got.reminders.len(), 2, "{got}");
    assert_eq!(got.reminder(&two_h).status, "scheduled");
    let mut expected = vec![
        (
            two_h.clone(),
            (starts - chrono::Duration::hours(2)).timestamp_millis(),
        ),
        (
            thirty_m.clone(),
            (starts - chrono::Duration::minutes(30)).timestamp_millis(),
        ),
    ];
    expected.sort();
    assert_eq!(
        scheduled_jobs(&app).await,
        expected,
        "one job per reminder, due at its send_at"
    );
    assert_eq!(app.deliveries_stats().await.scheduled, 2);

    // Moved 1h17m later: same ids, new times and texts, one job each at the new time.
    let moved = starts + chrono::Duration::minutes(77);
    let (status, a) = app
        .patch(
            &format!("/v1/appointments/{apt}"),
            &tenant.api_key,
            &json!({"starts_at": rfc(moved)}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{a}");
    let a: AppointmentView = view(&a);
    assert_eq!(time(&a.starts_at), moved);
    assert_eq!(
        a.reminders.len(),
        2,
        "moved reminders keep their ids and the 24h one is still past: {a}"
    );
    let new_body = rendered("Pat", moved, ny);
    assert_ne!(new_body, rendered("Pat", starts, ny));
    for (id, before) in [(&two_h, 120), (&thirty_m, 30)] {
        let r = a.reminder(id);
        assert_eq!(r.status, "scheduled", "{r}");
        assert_eq!(
            time(&r.send_at),
            moved - chrono::Duration::minutes(before),
            "{r}"
        );
        assert_eq!(time(&r.expires_at), moved, "{r}");
        assert_eq!(r.body, new_body.as_str(), "re-rendered: {r}");
    }
    let m = app.message(&tenant, &two_h).await;
    assert_eq!(time(&m.send_at), moved - chrono::Duration::hours(2));
    assert_eq!(
        m.events_with("scheduled", "moved").len(),
        1,
        "an event says the appointment moved: {m}"
    );
    let mut expected = vec![
        (
            two_h.clone(),
            (moved - chrono::Duration::hours(2)).timestamp_millis(),
        ),
        (
            thirty_m.clone(),
            (moved - chrono::Duration::minutes(30)).timestamp_millis(),
        ),
    ];
    expected.sort();
    assert_eq!(
        scheduled_jobs(&app).await,
        expected,
        "still exactly one job per reminder, now due at the new send_at"
    );
    assert_eq!(app.deliveries_stats().await.scheduled, 2);

    // Moved so close that the 2h reminder's time has passed: it is canceled, its job goes.
    let close = millis(Utc::now() + chrono::Duration::minutes(90));
    let (status, a) = app
        .patch(
            &format!("/v1/appointments/{apt}"),
            &tenant.api_key,
            &json!({"starts_at": rfc(close)}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{a}");
    let a: AppointmentView = view(&a);
    assert_eq!(a.reminder(&two_h).status, "canceled", "{a}");
    let r = a.reminder(&thirty_m);
    assert_eq!(r.status, "scheduled", "{r}");
    assert_eq!(time(&r.send_at), close - chrono::Duration::minutes(30));
    assert_eq!(r.body, rendered("Pat", close, ny));
    assert_eq!(app.message(&tenant, &two_h).await.status, "canceled");
    assert_eq!(
        scheduled_jobs(&app).await,
        vec![(
            thirty_m.clone(),
            (close - chrono::Duration::minutes(30)).timestamp_millis()
        )],
        "the canceled reminder's job is gone"
    );

    // Deleted: 204, every reminder canceled, no job left.
    let (status, body) = app
        .delete(&format!("/v1/appointments/{apt}"), &tenant.api_key)
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
    let (status, a) = app
        .get(&format!("/v1/appointments/{apt}"), &tenant.api_key)
        .await;
    assert_eq!(status, StatusCode::OK, "{a}");
    let a: AppointmentView = view(&a);
    assert!(a.canceled_at.is_some(), "canceled_at is set: {a}");
    for r in &a.reminders {
        assert_eq!(r.status, "canceled", "{r}");
    }
    assert_eq!(a.reminders.len(), 2, "{a}");
    let m = app.message(&tenant, &thirty_m).await;
    assert_eq!(m.status, "canceled", "{m}");
    assert_eq!(scheduled_jobs(&app).await, vec![], "no job is left");
    assert_eq!(app.deliveries_stats().await.scheduled, 0);

    let (status, _) = app
        .get("/v1/appointments/apt_doesnotexist", &tenant.api_key)
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn a_reminder_that_comes_due_goes_out_after_its_time_never_before() {
    let twilio = TwilioMock::start().await;
    let mut app = app_with(&twilio, None).await;
    app.start_worker();
    let tenant = app.tenant().await;
    let tokyo: Tz = "Asia/Tokyo".parse().unwrap();
    let phone = "+15550102020";
    let sam = contact(&app, &tenant, phone, Some("Sam"), Some(tokyo.name())).await;

    let starts = millis(Utc::now() + chrono::Duration::hours(2) + chrono::Duration::seconds(4));
    let (status, a) = app
        .post(
            "/v1/appointments",
            &tenant.api_key,
            &json!({
                "contact_id": sam,
                "starts_at": rfc(starts),
                "reminders": [{"before": "2h"}],
                "body_template": TEMPLATE,
            }),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{a}");
    let a: AppointmentView = view(&a);
    let r = &a.reminders[0];
    let id = r.id.clone();
    let send_at = starts - chrono::Duration::hours(2);
    assert_eq!(time(&r.send_at), send_at);
    assert_eq!(r.status, "scheduled");
    assert!(send_at > Utc::now(), "the reminder is still ahead");

    let sent = app
        .wait_for_status(&tenant, &id, "sent", Duration::from_secs(30))
        .await;
    let calls = twilio.received();
    assert_eq!(calls.len(), 1, "exactly one provider call");
    assert_eq!(calls[0].form["To"], phone);
    assert_eq!(calls[0].form["Body"], rendered("Sam", starts, tokyo));
    assert!(
        calls[0].at >= send_at,
        "sent {} ms before its time",
        (send_at - calls[0].at).num_milliseconds()
    );
    assert!(time(sent.sent_at.as_deref().unwrap()) >= send_at, "{sent}");
}

// ---------------------------------------------------------------------------------------
// Quiet hours.
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn quiet_hours_defer_or_expire_an_sms_in_the_recipients_zone() {
    let twilio = TwilioMock::start().await;
    let mut app = app_with(&twilio, None).await;
    app.start_worker();
    // 2 AM where the night zone is, noon where the day zone is; quiet 21:00-08:00.
    let night = zone_at_local_hour(2);
    let day = zone_at_local_hour(12);
    let window_ends = instant(
        night,
        local_today(night),
        NaiveTime::from_hms_opt(8, 0, 0).unwrap(),
    );
    let quiet = json!({"start": "21:00", "end": "08:00"});
    let day_tenant = tenant_in(&app, day.name(), quiet.clone()).await;
    let night_tenant = tenant_in(&app, night.name(), quiet).await;

    // The day tenant's contacts who sleep in the night zone (their own zone wins).
    let owl = "+15550103001";
    let owl_soon = "+15550103002";
    let owl_anyway = "+15550103003";
    // The day tenant's contact with no zone (the tenant's: day).
    let local = "+15550103004";
    // The night tenant's contacts: one living in the day zone, one with no zone (night).
    let abroad = "+15550103005";
    let sleeper = "+15550103006";
    let mut ids = std::collections::HashMap::new();
    for (tenant, phone, zone) in [
        (&day_tenant, owl, Some(night.name())),
        (&day_tenant, owl_soon, Some(night.name())),
        (&day_tenant, owl_anyway, Some(night.name())),
        (&day_tenant, local, None),
        (&night_tenant, abroad, Some(day.name())),
        (&night_tenant, sleeper, None),
    ] {
        ids.insert(phone, contact(&app, tenant, phone, None, zone).await);
    }
    let sms = |phone: &str| json!({"channel": "sms", "to": phone, "contact_id": ids[phone], "body": "Your results are ready."});

    let deferred = send(&app, &day_tenant, sms(owl)).await;
    let mut soon = sms(owl_soon);
    soon["expires_at"] = json!(rfc(Utc::now() + chrono::Duration::hours(1)));
    let expiring = send(&app, &day_tenant, soon).await;
    let mut anyway = sms(owl_anyway);
    anyway["respect_quiet_hours"] = json!(false);
    let urgent = send(&app, &day_tenant, anyway).await;
    let awake_abroad = send(&app, &night_tenant, sms(abroad)).await;
    let asleep = send(&app, &night_tenant, sms(sleeper)).await;

    // Deferred to 08:00 in the night zone, still `scheduled`, with an event saying why.
    for (tenant, m) in [(&day_tenant, &deferred), (&night_tenant, &asleep)] {
        let id = m.id.clone();
        let m = eventually(
            WAIT,
            &format!("{id} is deferred by quiet hours"),
            || async {
                // The message and its events are read in two statements: wait for both.
                let m = app.message(tenant, &id).await;
                (m.status == "scheduled" && !m.events_with("scheduled", "quiet hours").is_empty())
                    .then_some(m)
            },
        )
        .await;
        assert_eq!(
            time(&m.send_at),
            window_ends,
            "send_at moves to the end of the window in {}: {m}",
            night.name()
        );
        assert_eq!(m.attempts, 0, "{m}");
    }
    // The one that would outlive its expires_at expires, and says why.
    let m = app
        .wait_for_status(&day_tenant, &expiring.id, "expired", WAIT)
        .await;
    assert_eq!(
        m.events_with("expired", "quiet hours").len(),
        1,
        "the expiry names quiet hours: {m}"
    );
    // Not respecting quiet hours, or awake where they live: sent now.
    app.wait_for_status(&day_tenant, &urgent.id, "sent", WAIT)
        .await;
    app.wait_for_status(&night_tenant, &awake_abroad.id, "sent", WAIT)
        .await;
    // The deferred jobs wait in the queue for the window's end.
    let jobs = scheduled_jobs(&app).await;
    for m in [&deferred, &asleep] {
        assert!(
            jobs.contains(&(m.id.clone(), window_ends.timestamp_millis())),
            "{} waits in the queue until {window_ends}: {jobs:?}",
            m.id.clone()
        );
    }

    // A later message to a day-time contact goes out while the deferred ones still wait.
    let witness = send(&app, &day_tenant, sms(local)).await;
    app.wait_for_status(&day_tenant, &witness.id, "sent", WAIT)
        .await;
    for (phone, calls) in [
        (owl, 0),
        (owl_soon, 0),
        (sleeper, 0),
        (owl_anyway, 1),
        (abroad, 1),
        (local, 1),
    ] {
        assert_eq!(twilio.calls_to(phone), calls, "provider calls to {phone}");
    }
    for (tenant, m) in [(&day_tenant, &deferred), (&night_tenant, &asleep)] {
        let m = app.message(tenant, &m.id).await;
        assert_eq!(m.status, "scheduled", "still waiting: {m}");
        assert_eq!(time(&m.send_at), window_ends, "{m}");
    }
}

// ---------------------------------------------------------------------------------------
// Daily delivery.
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn two_scheduler_processes_create_exactly_one_daily_message_per_subscription() {
    two_schedulers_make_one_daily_message_each(test_config().await).await;
}

#[tokio::test]
async fn two_scheduler_processes_on_a_redis_cluster_create_exactly_one_daily_message_each() {
    two_schedulers_make_one_daily_message_each(herald_tests::cluster::cluster_config().await).await;
}

async fn two_schedulers_make_one_daily_message_each(mut config: Config) {
    let twilio = TwilioMock::start().await;
    twilio.configure(&mut config);
    let mut app = TestApp::start_with(config).await;
    app.start_worker();
    let tenant = tenant_in(&app, "UTC", Value::Null).await;

    // Contacts in many zones (whole, half and quarter hours; both hemispheres), none near
    // its local midnight, so each sees one local date during the run.
    let zones = zones_away_from_midnight(
        &[
            "America/New_York",
            "America/Los_Angeles",
            "America/Chicago",
            "America/Sao_Paulo",
            "America/St_Johns",
            "Pacific/Honolulu",
            "Europe/London",
            "Europe/Berlin",
            "Africa/Nairobi",
            "Asia/Dubai",
            "Asia/Kolkata",
            "Asia/Kathmandu",
            "Asia/Shanghai",
            "Asia/Tokyo",
            "Australia/Adelaide",
            "Australia/Sydney",
            "Pacific/Auckland",
            "UTC",
        ],
        20,
    );
    assert!(zones.len() >= 12, "enough zones away from midnight");

    struct Sub {
        id: String,
        phone: String,
        zone: Tz,
        date: NaiveDate,
        /// When it becomes due (for the ones made due during the run).
        due: Option<DateTime<Utc>>,
    }
    let mut subs = Vec::new();
    for (i, zone) in zones.iter().take(12).enumerate() {
        let phone = format!("+1555010{:04}", 4000 + i);
        let c = contact(&app, &tenant, &phone, Some("Kim"), Some(zone.name())).await;
        let id = subscribe_static(&app, &tenant, &c, &format!("Daily tip {i}")).await;
        let date = local_today(*zone);
        // Ten are due at once (their local time passed two minutes ago); two come due during
        // the run, at the next local minute in their zones.
        let (send_at_local, due) = match i {
            10 | 11 => (local_minute(*zone, 1), true),
            _ => (local_minute(*zone, -2), false),
        };
        set_due(&app, &id, send_at_local, date).await;
        subs.push(Sub {
            id,
            phone,
            zone: *zone,
            date,
            due: due.then(|| instant(*zone, date, send_at_local)),
        });
    }

    // The daily tick every 5 s instead of every minute: the two schedulers race a dozen
    // times a minute, not once.
    let mut env = herald_tests::process::herald_env(&app.config);
    env.push(("HERALD_DAILY_TICK_SECONDS".to_owned(), "5".to_owned()));
    let mut schedulers = [
        Proc::start("herald-scheduler", &env),
        Proc::start("herald-scheduler", &env),
    ];

    // The ones already due are caught up at start.
    for s in subs.iter().filter(|s| s.due.is_none()) {
        wait_for_daily(&app, &s.id, Duration::from_secs(30)).await;
    }
    // Until the ones due during the run are due, and 20 s (four ticks of each scheduler,
    // racing each other) past that.
    let last_due = subs.iter().filter_map(|s| s.due).max().unwrap();
    eventually(
        Duration::from_secs(120),
        "the schedulers race past the last due time",
        || async { (Utc::now() >= last_due + chrono::Duration::seconds(20)).then_some(()) },
    )
    .await;
    for p in &mut schedulers {
        assert!(
            p.child.try_wait().unwrap().is_none(),
            "both schedulers ran the whole time"
        );
    }

    for s in &subs {
        let found = daily_messages(&app, &s.id).await;
        assert_eq!(
            found.len(),
            1,
            "exactly one message for {} ({}): {found:?}",
            s.id,
            s.zone.name()
        );
        let d = &found[0];
        assert_eq!(
            d.local_date,
            Some(s.date),
            "its local date in {}",
            s.zone.name()
        );
        assert_eq!(daily_runs(&app, &s.id).await, 1, "one run for {}", s.id);
        if let Some(due) = s.due {
            assert!(
                d.created_at >= due,
                "{} created {} ms before its local time",
                s.id,
                (due - d.created_at).num_milliseconds()
            );
        }
        let m = app.message(&tenant, &d.id).await;
        assert_eq!(m.author, "system", "{m}");
        assert_eq!(m.to, s.phone.as_str());
        assert_eq!(time(&m.expires_at), end_of_local_day(s.zone, s.date), "{m}");
    }
    // And each went out once.
    for s in &subs {
        let id = daily_messages(&app, &s.id).await[0].id.clone();
        app.wait_for_status(&tenant, &id, "sent", WAIT).await;
        assert_eq!(twilio.calls_to(&s.phone), 1, "one SMS to {}", s.phone);
    }

    for p in &schedulers {
        p.signal("TERM").await;
    }
    for p in &mut schedulers {
        let exit = tokio::time::timeout(Duration::from_secs(20), p.wait())
            .await
            .expect("herald-scheduler exits after SIGTERM");
        assert_eq!(exit, Some(0));
    }
}

#[tokio::test]
async fn a_scheduler_that_was_down_over_the_minute_catches_up_when_it_returns() {
    let twilio = TwilioMock::start().await;
    let mut app = app_with(&twilio, None).await;
    let tenant = tenant_in(&app, "UTC", Value::Null).await;
    let zone = zone_away_from_midnight(10);
    let c = contact(&app, &tenant, "+15550105001", None, Some(zone.name())).await;

    // The next whole minute in the contact's zone (the one after, if this one is nearly up).
    let ahead = if Utc::now().second() < 50 { 1 } else { 2 };
    let send_at_local = local_minute(zone, ahead);
    let today = local_today(zone);
    let s = subscribe(
        &app,
        &tenant,
        &json!({
            "contact_id": c,
            "send_at_local": send_at_local.format("%H:%M").to_string(),
            "content": {"kind": "static", "body": "Good morning!"},
        }),
    )
    .await;
    let s: SubscriptionView = view(&s);
    let id = s.id.clone();
    assert_eq!(s.first_delivery_date, today.to_string(), "{s}");
    let due = instant(zone, today, send_at_local);

    // No scheduler runs while its time passes.
    eventually(
        Duration::from_secs(150),
        "the subscription's local time passes",
        || async { (Utc::now() >= due + chrono::Duration::seconds(2)).then_some(()) },
    )
    .await;
    assert!(
        daily_messages(&app, &id).await.is_empty(),
        "nothing creates it without a scheduler"
    );

    // A scheduler comes back: the message appears within seconds, before its next minute tick.
    app.start_scheduler();
    let d = wait_for_daily(&app, &id, Duration::from_secs(15)).await;
    assert!(
        d.created_at < due + chrono::Duration::seconds(60),
        "created by the catch-up at start, not the next minute tick"
    );
    assert_eq!(d.local_date, Some(today));
    let m = app.message(&tenant, &d.id).await;
    assert_eq!(m.body, "Good morning!");
    assert_eq!(m.contact_id.as_deref(), Some(c.as_str()));
    assert_eq!(m.author, "system");
    assert_eq!(m.priority, "bulk", "a daily message is bulk");
    assert_eq!(
        time(&m.expires_at),
        end_of_local_day(zone, today),
        "it expires at local midnight in {}: {m}",
        zone.name()
    );
    assert_eq!(daily_messages(&app, &id).await.len(), 1);
}

#[tokio::test]
async fn a_daily_ai_subscription_gets_the_models_text() {
    const TEXT: &str = "Floss tonight, Pat: your gums will thank you tomorrow.";
    const PROMPT: &str = "a one-line dental hygiene tip";
    let twilio = TwilioMock::start().await;
    let model = ModelMock::start("daily-model", ModelReply::Text(TEXT.to_owned())).await;
    let mut app = app_with(&twilio, Some(&model)).await;
    app.start_worker();
    let tenant = tenant_in(&app, "UTC", Value::Null).await;
    let zone = zone_away_from_midnight(10);
    let phone = "+15550106001";
    let c = contact(&app, &tenant, phone, Some("Pat"), Some(zone.name())).await;
    let s = subscribe(
        &app,
        &tenant,
        &json!({
            "contact_id": c,
            "send_at_local": "07:30",
            "channel": "sms",
            "content": {"kind": "ai", "prompt": PROMPT},
        }),
    )
    .await;
    let s: SubscriptionView = view(&s);
    assert_eq!(s.content, json!({"kind": "ai", "prompt": PROMPT}), "{s}");
    let id = s.id.clone();
    let today = local_today(zone);
    set_due(&app, &id, local_minute(zone, -1), today).await;
    app.start_scheduler();

    let d = wait_for_daily(&app, &id, WAIT).await;
    assert_eq!(d.local_date, Some(today));
    let m = app.wait_for_status(&tenant, &d.id, "sent", WAIT).await;
    assert_eq!(m.body, TEXT, "{m}");
    assert_eq!(m.author, "ai", "{m}");
    assert_eq!(m.priority, "bulk", "{m}");
    assert_eq!(m.model.as_deref(), Some("daily-model"), "{m}");
    assert_eq!(m.contact_id.as_deref(), Some(c.as_str()));
    assert_eq!(time(&m.expires_at), end_of_local_day(zone, today), "{m}");
    let calls = twilio.received();
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0].form["To"], phone);
    assert_eq!(calls[0].form["Body"], TEXT);
    let asked = model.received();
    assert_eq!(asked.len(), 1, "one model call");
    assert_eq!(asked[0]["model"], "daily-model");
    assert!(
        asked[0]["messages"]
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t["content"].as_str().is_some_and(|c| c.contains(PROMPT))),
        "the prompt reaches the model: {}",
        asked[0]
    );
    assert_eq!(daily_messages(&app, &id).await.len(), 1);
}

#[tokio::test]
async fn the_subscriptions_api_validates_reads_and_deletes() {
    let twilio = TwilioMock::start().await;
    let mut app = app_with(&twilio, None).await;
    // 10 AM for the contact, 2 PM for its tenant: noon is ahead for one and past for the other.
    let morning = zone_at_local_hour(10);
    let afternoon = zone_at_local_hour(14);
    let tenant = tenant_in(&app, afternoon.name(), Value::Null).await;
    let early = contact(&app, &tenant, "+15550107001", None, Some(morning.name())).await;
    let late = contact(&app, &tenant, "+15550107002", None, None).await;

    let base = |contact: &str| {
        json!({
            "contact_id": contact,
            "send_at_local": "12:00",
            "content": {"kind": "static", "body": "Lunch special today."},
        })
    };
    let mut rejected = Vec::new();
    for bad in ["7:30", "25:00", "12:60", "0730", "noon", "12:00:00"] {
        let mut body = base(&early);
        body["send_at_local"] = json!(bad);
        rejected.push((body, "invalid_value", "send_at_local"));
    }
    let mut body = base(&early);
    body["contact_id"] = json!("ct_doesnotexist");
    rejected.push((body, "unknown_contact", "contact_id"));
    let mut body = base(&early);
    body["content"] = json!({"kind": "video", "body": "x"});
    rejected.push((body, "invalid_value", "content.kind"));
    let mut body = base(&early);
    body["content"] = json!({"kind": "static"});
    rejected.push((body, "missing_field", "content.body"));
    for (body, code, field) in rejected {
        let (status, e) = app.post("/v1/subscriptions", &tenant.api_key, &body).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}: {e}");
        assert_eq!(api_error(&e).field.as_deref(), Some(field), "{body}: {e}");
        assert_eq!(api_error(&e).code, code, "{body}: {e}");
    }
    let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM subscriptions")
        .fetch_one(&app.db)
        .await
        .unwrap();
    assert_eq!(rows, 0, "a rejected request creates nothing");

    // Noon is still ahead at 10 AM: today. It has passed at 2 PM: tomorrow.
    let ahead = subscribe(&app, &tenant, &base(&early)).await;
    let created: SubscriptionView = view(&ahead);
    assert_eq!(
        created.first_delivery_date,
        local_today(morning).to_string(),
        "{ahead}"
    );
    let passed = subscribe(&app, &tenant, &base(&late)).await;
    assert_eq!(
        view::<SubscriptionView>(&passed).first_delivery_date,
        local_today(afternoon).succ_opt().unwrap().to_string(),
        "the tenant's zone when the contact has none: {passed}"
    );
    let id = created.id.clone();
    assert!(id.starts_with("sub_"), "{id}");
    assert_eq!(created.contact_id, early.as_str());
    assert_eq!(created.send_at_local, "12:00");
    assert_eq!(created.channel, "sms");
    assert_eq!(
        created.content,
        json!({"kind": "static", "body": "Lunch special today."})
    );
    assert!(!created.created_at.is_empty(), "{ahead}");

    let (status, got) = app
        .get(&format!("/v1/subscriptions/{id}"), &tenant.api_key)
        .await;
    assert_eq!(status, StatusCode::OK, "{got}");
    assert_eq!(got, ahead);
    let other = app.tenant().await;
    let (status, _) = app
        .get(&format!("/v1/subscriptions/{id}"), &other.api_key)
        .await;
    assert_eq!(
        status,
        StatusCode::NOT_FOUND,
        "another tenant's is not found"
    );

    let (status, body) = app
        .delete(&format!("/v1/subscriptions/{id}"), &tenant.api_key)
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
    let (status, _) = app
        .get(&format!("/v1/subscriptions/{id}"), &tenant.api_key)
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = app
        .delete(&format!("/v1/subscriptions/{id}"), &tenant.api_key)
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "deleting twice");

    // A deleted subscription creates nothing, even when due; a live one due alongside it
    // shows the tick ran.
    let zone = zone_away_from_midnight(10);
    let today = local_today(zone);
    let a = contact(&app, &tenant, "+15550107003", None, Some(zone.name())).await;
    let b = contact(&app, &tenant, "+15550107004", None, Some(zone.name())).await;
    let gone = subscribe_static(&app, &tenant, &a, "never").await;
    let live = subscribe_static(&app, &tenant, &b, "every day").await;
    for s in [&gone, &live] {
        set_due(&app, s, local_minute(zone, -1), today).await;
    }
    let (status, _) = app
        .delete(&format!("/v1/subscriptions/{gone}"), &tenant.api_key)
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    app.start_scheduler();
    wait_for_daily(&app, &live, WAIT).await;
    assert!(
        daily_messages(&app, &gone).await.is_empty(),
        "the deleted subscription created a message"
    );
    assert_eq!(
        daily_runs(&app, &gone).await,
        0,
        "no run for the deleted one"
    );
}
