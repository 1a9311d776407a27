//! Daily fan-out: 100,000 subscriptions due in the same minute, timed from the start of a
//! scheduler tick until every message is created in Postgres and queued in Redis.

use std::time::Instant;

use anyhow::bail;
use herald_core::{queue, services::daily};

use crate::{Figures, servers::Stack};

pub async fn run(figures: &mut Figures, subscriptions: usize) -> anyhow::Result<()> {
    let stack = Stack::start().await?;
    let (pg, redis, pool) = (&stack.pg, &stack.redis, &stack.pool);
    let tenant = stack.tenant("Fan-out Gym", "+15005550006").await?.tenant;
    // Contacts in four zones, each with a subscription due at local midnight: all due now.
    sqlx::query(
        "INSERT INTO contacts (id, tenant_id, phone, name, timezone)
         SELECT 'ct_fan' || g, $1, '+1555' || lpad(g::text, 7, '0'), 'Member ' || g,
                (ARRAY['UTC', 'Europe/Paris', 'America/New_York', 'Asia/Tokyo'])[1 + g % 4]
         FROM generate_series(1, $2) AS g",
    )
    .bind(&tenant.id)
    .bind(subscriptions as i64)
    .execute(pool)
    .await?;
    sqlx::query(
        "INSERT INTO subscriptions (id, tenant_id, contact_id, send_at_local, channel, content_kind, content, first_date)
         SELECT 'sub_fan' || g, $1, 'ct_fan' || g, '00:00', 'sms', 'static',
                'Good morning {{name}}! Today''s class starts at 7.', DATE '2000-01-01'
         FROM generate_series(1, $2) AS g",
    )
    .bind(&tenant.id)
    .bind(subscriptions as i64)
    .execute(pool)
    .await?;
    sqlx::query("ANALYZE").execute(pool).await?;

    let mut config = herald_core::Config::for_urls(&pg.url, &redis.url);
    config.queue_prefix = "fanout".to_owned();
    let rconn = queue::connect(&redis.url)?;
    let deliveries = queue::deliveries(&config, rconn.clone());
    let ai = queue::ai_replies(&config, rconn.clone());

    let started = Instant::now();
    let report = daily::tick(pool, &deliveries, &ai).await?;
    let took = started.elapsed();
    let stats = deliveries.stats().await?;
    let queued = stats.pending + stats.scheduled;
    if report.created != subscriptions || queued as usize != subscriptions {
        bail!(
            "created {} messages and queued {queued} jobs for {subscriptions} subscriptions",
            report.created
        );
    }
    // A second tick in the same minute creates nothing.
    let again = daily::tick(pool, &deliveries, &ai).await?;
    if again.created != 0 {
        bail!("a second tick created {} more messages", again.created);
    }
    let daily_took = took;

    // Redis loses those 100,000 jobs (a failover to an empty replica): the scheduler's
    // reconcile reads the unfinished messages back from Postgres and queues them again.
    let mut conn = redis::Client::open(redis.url.as_str())?
        .get_multiplexed_async_connection()
        .await?;
    let _: () = redis::cmd("FLUSHALL").query_async(&mut conn).await?;
    let started = Instant::now();
    let restored =
        herald_scheduler::reconcile::deliveries(pool, &deliveries, config.stale_claim_after())
            .await?;
    let reconcile_took = started.elapsed();
    let stats = deliveries.stats().await?;
    if restored != Some(subscriptions)
        || (stats.pending + stats.scheduled) as usize != subscriptions
    {
        bail!(
            "reconcile queued {restored:?} jobs ({} in the queue) for {subscriptions} messages",
            stats.pending + stats.scheduled
        );
    }
    figures.add(
        &format!("reconcile after Redis lost {subscriptions} queued jobs: all queued again"),
        format!(
            "{:.1} s ({:.0} jobs/s)",
            reconcile_took.as_secs_f64(),
            subscriptions as f64 / reconcile_took.as_secs_f64().max(0.001)
        ),
        "-",
        "-",
    );

    // A group send to every one of those contacts, through the service the API calls.
    sqlx::query("INSERT INTO groups (id, tenant_id, name) VALUES ('grp_fan', $1, 'Everyone')")
        .bind(&tenant.id)
        .execute(pool)
        .await?;
    sqlx::query("INSERT INTO group_members (group_id, contact_id) SELECT 'grp_fan', 'ct_fan' || g FROM generate_series(1, $1) AS g")
        .bind(subscriptions as i64)
        .execute(pool)
        .await?;
    let group_queue = {
        let mut c = config.clone();
        c.queue_prefix = "groupsend".to_owned();
        let rconn = queue::connect(&redis.url)?;
        queue::deliveries(&c, rconn.clone())
    };
    let send = herald_core::services::groups::GroupSend {
        priority: herald_core::domain::Priority::Bulk,
        channel: herald_core::domain::Channel::Sms,
        subject: None,
        body: "The gym is closed tomorrow for maintenance.".to_owned(),
        send_at: chrono::Utc::now(),
        expires_at: chrono::Utc::now() + chrono::Duration::hours(24),
        respect_quiet_hours: true,
        metadata: serde_json::json!({}),
    };
    let started = Instant::now();
    let sent =
        herald_core::services::groups::send(pool, &group_queue, &tenant, "grp_fan", &send, None)
            .await?;
    let group_took = started.elapsed();
    let herald_core::services::groups::Sent::New(sent) = sent else {
        bail!("the group send was not new")
    };
    let stats = group_queue.stats().await?;
    if sent.recipients as usize != subscriptions
        || (stats.pending + stats.scheduled) as usize != subscriptions
    {
        bail!(
            "group send: {} recipients, {} jobs queued",
            sent.recipients,
            stats.pending + stats.scheduled
        );
    }
    figures.add(
        &format!("group send to {subscriptions} members, all created and queued"),
        format!(
            "{:.1} s ({:.0} messages/s)",
            group_took.as_secs_f64(),
            subscriptions as f64 / group_took.as_secs_f64().max(0.001)
        ),
        "-",
        "-",
    );
    let took = daily_took;
    figures.add(
        &format!("daily fan-out: {subscriptions} subscriptions due in the same minute, all created and queued"),
        format!("{:.1} s ({:.0} messages/s)", took.as_secs_f64(), subscriptions as f64 / took.as_secs_f64().max(0.001)),
        "10 s",
        "30 s",
    );
    Ok(())
}
