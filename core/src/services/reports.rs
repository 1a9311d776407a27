//! Delivery reports from providers (Twilio's status callbacks): the message moves forward to
//! `sent`, `delivered`, `undelivered` or `failed`, and never backwards.

use chrono::Utc;
use sqlx::PgPool;
use tracing::{debug, info, warn};

use crate::{
    domain::jobs::DeliveryJob,
    domain::{MessageStatus, new_id},
    providers::{
        Refusal,
        twilio_codes::{self, CodeClass},
    },
    queue::{DELIVERIES, Queue},
    store::messages::MessageRow,
};

/// What a Twilio `MessageStatus` means for Herald, if anything.
fn herald_status(twilio: &str) -> Option<MessageStatus> {
    match twilio {
        "sent" => Some(MessageStatus::Sent),
        "delivered" | "read" => Some(MessageStatus::Delivered),
        "undelivered" => Some(MessageStatus::Undelivered),
        "failed" => Some(MessageStatus::Failed),
        // queued, sending, accepted, scheduled, canceled, receiving, received: nothing to record.
        _ => None,
    }
}

/// The message and run a status callback's URL names (Herald puts them there when it sends).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallbackFor {
    pub message_id: String,
    pub run: i32,
}

/// Where an SMS a carrier could not deliver for a passing reason is sent once more, and when.
pub struct Redelivery<'a> {
    pub queue: &'a Queue,
    /// `HERALD_REDELIVER_AFTER`.
    pub after: std::time::Duration,
}

/// Schedules `m` (just reported `undelivered` for a passing reason) to be sent once more,
/// in a fresh run, if it has not been already and will not have expired by then. The job is
/// queued inside the transaction: if Redis refuses it, nothing changes and the message stays
/// `undelivered` (logged).
async fn redeliver(
    db: &PgPool,
    redelivery: &Redelivery<'_>,
    m: &MessageRow,
    why: &str,
) -> Result<(), sqlx::Error> {
    let at = Utc::now()
        + chrono::Duration::from_std(redelivery.after).unwrap_or(chrono::Duration::minutes(15));
    let detail = format!(
        "to be sent once more at {}: {why}",
        at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
    );
    let mut tx = db.begin().await?;
    let Some(again) = crate::store::lifecycle::redeliver(&mut *tx, &m.id, at, &detail).await?
    else {
        return Ok(());
    };
    let job = DeliveryJob::for_message(&again);
    match redelivery
        .queue
        .push(&again.id, &job, again.send_at.timestamp_millis())
        .await
    {
        Ok(_) => {
            tx.commit().await?;
            info!(message_id = %m.id, tenant_id = %m.tenant_id, at = %at, "undelivered SMS to be sent once more");
        }
        Err(e) => {
            warn!(message_id = %m.id, tenant_id = %m.tenant_id, error = %e, "undelivered SMS not sent again: its job could not be queued");
        }
    }
    Ok(())
}

/// Applies one Twilio status callback. Returns whether the message moved. A report for a sid
/// Herald never heard of (the attempt's answer was lost with its worker) is matched by the
/// message and run its URL names, if that message is still waiting to learn how it went.
pub async fn twilio_status(
    db: &PgPool,
    redelivery: &Redelivery<'_>,
    sid: &str,
    twilio_status: &str,
    error_code: Option<&str>,
    callback_for: Option<&CallbackFor>,
) -> Result<bool, sqlx::Error> {
    let Some(status) = herald_status(twilio_status) else {
        debug!(sid, twilio_status, "status callback with nothing to record");
        return Ok(false);
    };
    let error_code = error_code.filter(|c| !c.is_empty() && *c != "0");
    let class = error_code
        .and_then(|c| c.parse::<u32>().ok())
        .map(twilio_codes::class);
    let error = error_code.map(|c| {
        let filtered = if class == Some(CodeClass::Filtered) {
            "filtered: "
        } else {
            ""
        };
        format!("{filtered}twilio {c}: reported by the status callback ({twilio_status})")
    });
    let detail = match &error {
        Some(e) => format!("status callback: {twilio_status}; {e}"),
        None => format!("status callback: {twilio_status}"),
    };
    let mut moved =
        crate::store::lifecycle::apply_delivery_report(db, sid, status, error.as_deref(), &detail)
            .await?;
    if moved.is_none()
        && let Some(hint) = callback_for
        && crate::store::lifecycle::adopt_provider_ref(db, sid, &hint.message_id, hint.run).await?
    {
        let detail =
            format!("{detail} (the attempt's own answer was lost; this report settles it)");
        moved = crate::store::lifecycle::apply_delivery_report(
            db,
            sid,
            status,
            error.as_deref(),
            &detail,
        )
        .await?;
    }
    let Some(m) = moved else {
        debug!(
            sid,
            twilio_status,
            "status callback does not move any message (unknown sid, or it would go backwards)"
        );
        return Ok(false);
    };
    info!(message_id = %m.id, tenant_id = %m.tenant_id, status = status.as_str(), "delivery report applied");
    ::metrics::counter!("herald_messages_finished_total", "channel" => m.channel.as_str(), "status" => status.as_str())
        .increment(1);
    let refusal = match class {
        Some(CodeClass::OptedOut) => Refusal::OptedOut,
        Some(CodeClass::Unreachable) => Refusal::Unreachable,
        _ => Refusal::Refused,
    };
    crate::services::delivery::contact_refused(db, &m, refusal).await?;
    if status == MessageStatus::Undelivered && class == Some(CodeClass::Transient) {
        redeliver(
            db,
            redelivery,
            &m,
            error.as_deref().unwrap_or(twilio_status),
        )
        .await?;
    }
    if status == MessageStatus::Failed {
        let errors = crate::store::dead_letters::attempt_errors(db, &m.id).await?;
        crate::store::dead_letters::insert_dead_letter(
            db,
            &new_id("dl"),
            DELIVERIES,
            &m,
            "rejected",
            &errors,
        )
        .await?;
    }
    Ok(true)
}
