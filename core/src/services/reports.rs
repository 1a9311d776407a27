//! Delivery reports from providers (Twilio's status callbacks): the message moves forward to
//! `sent`, `delivered`, `undelivered` or `failed`, and never backwards.

use sqlx::PgPool;
use tracing::{debug, info};

use crate::{
    domain::{MessageStatus, new_id},
    providers::{
        Refusal,
        twilio_codes::{self, CodeClass},
    },
    queue::DELIVERIES,
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

/// Applies one Twilio status callback. Returns whether the message moved. A report for a sid
/// Herald never heard of (the attempt's answer was lost with its worker) is matched by the
/// message and run its URL names, if that message is still waiting to learn how it went.
pub async fn twilio_status(
    db: &PgPool,
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
    let refusal = match class {
        Some(CodeClass::OptedOut) => Refusal::OptedOut,
        Some(CodeClass::Unreachable) => Refusal::Unreachable,
        _ => Refusal::Refused,
    };
    crate::services::delivery::contact_refused(db, &m, refusal).await?;
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
