//! What arrives from the provider on a tenant's number: inbound texts, with the keywords that
//! must always work (STOP, START, HELP), and missed calls, texted back. Each is stored on the
//! contact's conversation once, however often the provider retries its webhook.

use sqlx::PgPool;
use tracing::{debug, info, warn};

use super::{messages::Intake, replies::unwrap_arc};
use crate::{
    domain::{Channel, MessageStatus, events::EventType, jobs::AiJob, new_id},
    queue::{Queue, now_ms},
    store::{
        contacts::{self, ContactRow},
        events, lifecycle,
        messages::{self, MessageRow, NewMessageRow},
        tenants::{self, TenantRow},
    },
};

/// The words that must always work, as the whole message in any case.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Keyword {
    /// STOP, STOPALL, UNSUBSCRIBE, CANCEL, END, QUIT: opt the number out.
    Stop,
    /// START, YES, UNSTOP: opt it back in.
    Start,
    /// HELP, INFO: the tenant's help text.
    Help,
}

pub fn keyword(body: &str) -> Option<Keyword> {
    match body.trim().to_ascii_uppercase().as_str() {
        "STOP" | "STOPALL" | "UNSUBSCRIBE" | "CANCEL" | "END" | "QUIT" => Some(Keyword::Stop),
        "START" | "YES" | "UNSTOP" => Some(Keyword::Start),
        "HELP" | "INFO" => Some(Keyword::Help),
        _ => None,
    }
}

pub fn help_text(tenant: &TenantRow) -> String {
    tenant.help_text.clone().unwrap_or_else(|| {
        format!(
            "{}: reply to this message and we will help. Msg&data rates may apply. Reply STOP to unsubscribe.",
            tenant.name
        )
    })
}

/// An inbound text as Twilio delivered it.
#[derive(Debug, Clone)]
pub struct Inbound {
    pub from: String,
    pub to: String,
    pub body: String,
    /// Twilio's `MessageSid`: a retried webhook carries the same one.
    pub sid: String,
}

#[derive(Debug)]
pub enum Received {
    Stored {
        message: Box<MessageRow>,
        keyword: Option<Keyword>,
    },
    /// Twilio sent this one before.
    Duplicate,
    /// No tenant sends from the `To` number.
    UnknownNumber,
}

/// Stores an inbound text on its conversation and acts on it: keywords at once (an opt-out
/// holds from this moment), a HELP reply and an AI reply through jobs.
pub async fn receive(
    db: &PgPool,
    intake: &Intake,
    replies: &Queue,
    inbound: &Inbound,
) -> Result<Received, sqlx::Error> {
    let Some(tenant) = tenants::by_sms_from(db, &inbound.to).await? else {
        return Ok(Received::UnknownNumber);
    };
    let kw = keyword(&inbound.body);
    let detail = match kw {
        Some(Keyword::Stop) => "received; STOP keyword: the number is opted out",
        Some(Keyword::Start) => "received; START keyword: the number is opted back in",
        Some(Keyword::Help) => "received; HELP keyword: help text sent",
        None => "received",
    };
    let mut tx = db.begin().await?;
    let entry = Entry {
        from: &inbound.from,
        to: &inbound.to,
        provider_id: &inbound.sid,
        body: &inbound.body,
        author: "contact",
        detail,
    };
    // A keyword is not a question; a person's conversation gets no AI reply, and neither
    // does a suspended tenant's (the text is kept; its inbox shows it unanswered).
    let ai = !tenant.suspended;
    let Some((contact, message)) = record_inbound(&mut tx, &tenant, &entry, |c| {
        ai && kw.is_none() && c.mode == "ai"
    })
    .await?
    else {
        tx.rollback().await?;
        return Ok(Received::Duplicate);
    };
    match kw {
        Some(Keyword::Stop) => {
            contacts::set_opted_out(&mut *tx, &contact.id, true, inbound.body.trim()).await?
        }
        Some(Keyword::Start) => {
            contacts::set_opted_out(&mut *tx, &contact.id, false, inbound.body.trim()).await?
        }
        // A text on a conversation a person took over waits for that person.
        None if contact.mode == "human" => {
            events::emit_for_message(
                &mut *tx,
                &tenant.id,
                EventType::ConversationHumanNeeded,
                &message.id,
            )
            .await?
        }
        _ => {}
    }
    tx.commit().await?;
    info!(message_id = %message.id, tenant_id = %tenant.id, contact_id = %contact.id, keyword = ?kw, "inbound text stored");

    if kw == Some(Keyword::Help) {
        let mut help = NewMessageRow::outbound(
            &tenant.id,
            Channel::Sms,
            &inbound.from,
            tenant.sms_sender().as_deref(),
            &help_text(&tenant),
            "system",
        );
        help.contact_id = Some(contact.id.clone());
        help.in_reply_to = Some(message.id.clone());
        // HELP answers at once, whatever the hour.
        help.respect_quiet_hours = false;
        help.event_detail = "help text for a HELP keyword".to_owned();
        intake.send(help).await.map_err(unwrap_arc)?;
    }
    if message.needs_reply {
        let job = AiJob::Reply {
            inbound_id: message.id.clone(),
        };
        if let Err(e) = replies.push(&message.id, &job, now_ms()).await {
            // The reply outbox sweep queues it when Redis is back.
            warn!(message_id = %message.id, error = %e, "could not queue the AI reply job");
        }
    }
    Ok(Received::Stored {
        message: Box::new(message),
        keyword: kw,
    })
}

/// One entry arriving on a contact's conversation from the provider.
struct Entry<'a> {
    /// The contact's number and the tenant's.
    from: &'a str,
    to: &'a str,
    /// The provider's id for it (Twilio's `MessageSid` or `CallSid`): a retried webhook
    /// carries the same one, and is stored once.
    provider_id: &'a str,
    body: &'a str,
    /// `contact` for a text, `system` for what Herald notes (a missed call).
    author: &'a str,
    detail: &'a str,
}

/// Stores an inbound entry on its contact's conversation (the contact is created for an
/// unknown number, in the tenant's zone), inside `tx`. `None` when the provider sent it
/// before. `needs_reply` says, given the contact, whether it wants an AI reply job.
async fn record_inbound(
    tx: &mut sqlx::PgConnection,
    tenant: &TenantRow,
    entry: &Entry<'_>,
    needs_reply: impl FnOnce(&ContactRow) -> bool,
) -> Result<Option<(ContactRow, MessageRow)>, sqlx::Error> {
    let contact = contacts::find_or_create_by_phone(
        &mut *tx,
        &new_id("ct"),
        &tenant.id,
        entry.from,
        &tenant.timezone,
    )
    .await?;
    let id = new_id("msg");
    if !lifecycle::insert_provider_ref(&mut *tx, entry.provider_id, &id).await? {
        return Ok(None);
    }
    let mut row = NewMessageRow::outbound(
        &tenant.id,
        Channel::Sms,
        entry.to,
        Some(entry.from),
        entry.body,
        entry.author,
    );
    row.id = id;
    row.direction = "inbound".to_owned();
    row.status = MessageStatus::Received;
    row.contact_id = Some(contact.id.clone());
    row.event_detail = entry.detail.to_owned();
    row.needs_reply = needs_reply(&contact);
    let message = messages::insert(&mut *tx, &row)
        .await?
        .ok_or(sqlx::Error::RowNotFound)?;
    Ok(Some((contact, message)))
}

/// A call status callback from Twilio.
#[derive(Debug, Clone)]
pub struct CallStatus {
    pub call_sid: String,
    pub status: String,
    pub from: String,
    pub to: String,
}

#[derive(Debug)]
pub enum MissedCall {
    /// The caller was texted (the message is queued).
    TextedBack(Box<MessageRow>),
    /// Texted already within the tenant's cooldown.
    CoolingDown,
    /// The caller opted out of texts: nothing is sent.
    OptedOut,
    /// Twilio sent this call's callback before.
    Duplicate,
    /// The call was answered (or is still going).
    NotMissed,
    /// No tenant sends from the called number.
    UnknownNumber,
}

pub fn missed_call_text(tenant: &TenantRow) -> String {
    tenant.missed_call_text.clone().unwrap_or_else(|| {
        format!(
            "Sorry we missed your call! This is {}. How can we help? Reply here and we'll get right back to you.",
            tenant.name
        )
    })
}

/// A missed call (`no-answer`, `busy` or `failed`) to a tenant's number: the missed call goes
/// on the caller's conversation as a `system` entry, and the caller is texted the tenant's
/// missed-call message through the ordinary delivery path, once per cooldown however many
/// times they call or Twilio retries. Their answer is an ordinary inbound text, answered by
/// the AI unless a person has the conversation.
pub async fn missed_call(
    db: &PgPool,
    intake: &Intake,
    call: &CallStatus,
) -> Result<MissedCall, sqlx::Error> {
    if !matches!(call.status.as_str(), "no-answer" | "busy" | "failed") {
        return Ok(MissedCall::NotMissed);
    }
    let Some(tenant) = tenants::by_sms_from(db, &call.to).await? else {
        return Ok(MissedCall::UnknownNumber);
    };
    let mut tx = db.begin().await?;
    let body = format!("Missed call ({})", call.status);
    let detail = format!("missed call {} ({})", call.call_sid, call.status);
    let entry = Entry {
        from: &call.from,
        to: &call.to,
        provider_id: &call.call_sid,
        body: &body,
        author: "system",
        detail: &detail,
    };
    let Some((contact, _)) = record_inbound(&mut tx, &tenant, &entry, |_| false).await? else {
        tx.rollback().await?;
        return Ok(MissedCall::Duplicate);
    };
    if contact.opted_out {
        tx.commit().await?;
        info!(tenant_id = %tenant.id, contact_id = %contact.id, "missed call from an opted-out number: no text-back");
        return Ok(MissedCall::OptedOut);
    }
    if !contacts::claim_text_back(&mut *tx, &contact.id, tenant.missed_call_cooldown_minutes)
        .await?
    {
        tx.commit().await?;
        debug!(tenant_id = %tenant.id, contact_id = %contact.id, "missed call inside the cooldown: no second text-back");
        return Ok(MissedCall::CoolingDown);
    }
    let mut text = NewMessageRow::outbound(
        &tenant.id,
        Channel::Sms,
        &call.from,
        tenant.sms_sender().as_deref(),
        &missed_call_text(&tenant),
        "system",
    );
    text.contact_id = Some(contact.id.clone());
    text.event_detail = format!("text-back for missed call {}", call.call_sid);
    let message = messages::insert(&mut *tx, &text)
        .await?
        .ok_or(sqlx::Error::RowNotFound)?;
    tx.commit().await?;
    intake.submit(&message);
    info!(message_id = %message.id, tenant_id = %tenant.id, contact_id = %contact.id, "missed call texted back");
    Ok(MissedCall::TextedBack(Box::new(message)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keywords_are_the_whole_message_in_any_case() {
        for stop in [
            "STOP",
            "stop",
            " Stop ",
            "STOPALL",
            "unsubscribe",
            "Cancel",
            "end",
            "QUIT",
        ] {
            assert_eq!(keyword(stop), Some(Keyword::Stop), "{stop}");
        }
        for start in ["START", "yes", "Unstop"] {
            assert_eq!(keyword(start), Some(Keyword::Start), "{start}");
        }
        assert_eq!(keyword("help"), Some(Keyword::Help));
        assert_eq!(keyword("INFO"), Some(Keyword::Help));
        for not in ["please stop", "STOP!", "yes please", "I need help", ""] {
            assert_eq!(keyword(not), None, "{not}");
        }
    }
}
