//! A contact's export: everything Herald holds about one person, read as a stream of pages
//! in the document's order, so that a person with 100,000 messages never needs them all in
//! memory. The stream is pulled: a page is read only when the one before it has been taken
//! (written to the client), and each read takes a connection for its own statements only, so
//! a slow client holds no connection and no transaction between pages.

use std::{collections::HashMap, sync::Arc};

use chrono::{DateTime, Utc};
use futures_util::{Stream, stream};
use sqlx::PgPool;

use super::{appointments::with_reminders, audit};
use crate::{
    domain::audit::AuditOrigin,
    store::{
        appointments::{self, AppointmentFilter, AppointmentRow},
        contacts::{self, ConsentEventRow, ContactRow},
        conversations, cut,
        export::{self, Person},
        groups::{self, Membership},
        messages::{self, EventRow, MessageRow},
        snapshot,
        subscriptions::{self, SubscriptionFilter, SubscriptionRow},
    },
};

/// Rows of one section in one page.
const PAGE: i64 = 500;
/// The tenant's messages one page of the message walk looks through (by index) for the
/// person's: with few of theirs among many, a page covers this many at a time.
const WINDOW: i64 = 5000;

/// One page of the export. The sections come in the document's order, each as one page or
/// more (an empty one when the person has none of it).
#[derive(Debug)]
pub enum Page {
    /// Oldest first.
    ConsentEvents(Vec<ConsentEventRow>),
    /// Newest first, each with its events, oldest first.
    Messages(Vec<(MessageRow, Vec<EventRow>)>),
    /// The SMS conversation, oldest first.
    Conversation(Vec<MessageRow>),
    /// Soonest first, each with its reminders.
    Appointments(Vec<(AppointmentRow, Vec<MessageRow>)>),
    /// Newest first.
    Subscriptions(Vec<SubscriptionRow>),
    /// Newest group first.
    Groups(Vec<Membership>),
}

/// Opens a contact's export: the contact, once `contact.exported` is recorded (an export
/// that cannot be audited is not given). `None` when the tenant has no such contact.
pub async fn open(
    db: &PgPool,
    origin: &AuditOrigin,
    tenant_id: &str,
    contact_id: &str,
) -> Result<Option<ContactRow>, sqlx::Error> {
    let Some(contact) = contacts::get(db, tenant_id, contact_id).await? else {
        return Ok(None);
    };
    audit::contact_exported(db, origin, tenant_id, contact_id).await?;
    Ok(Some(contact))
}

/// Every page of the contact's export, in order.
pub fn pages(
    db: PgPool,
    contact: ContactRow,
) -> impl Stream<Item = Result<Page, sqlx::Error>> + Send + 'static {
    let walk = Arc::new(Walk { db, contact });
    stream::try_unfold(Some(Next::ConsentEvents(None)), move |next| {
        let walk = walk.clone();
        async move {
            match next {
                Some(next) => walk.page(next).await.map(|(page, next)| Some((page, next))),
                None => Ok(None),
            }
        }
    })
}

/// The section whose page is read next, and that page's cursor (`None`: its first page).
#[derive(Debug)]
enum Next {
    ConsentEvents(Option<i64>),
    Messages(Option<String>),
    Conversation(Option<String>),
    Appointments(Option<(DateTime<Utc>, String)>),
    Subscriptions(Option<String>),
    Groups(Option<String>),
}

struct Walk {
    db: PgPool,
    contact: ContactRow,
}

impl Walk {
    /// Reads the page `next` names; returns it and what comes after it (`None`: the end).
    async fn page(&self, next: Next) -> Result<(Page, Option<Next>), sqlx::Error> {
        let db = &self.db;
        let c = &self.contact;
        Ok(match next {
            Next::ConsentEvents(after) => {
                let rows = contacts::consent_events(db, &c.id, after, PAGE).await?;
                let (rows, more) = cut(rows, PAGE, |e| e.id);
                let next = more.map_or(Next::Messages(None), |m| Next::ConsentEvents(Some(m)));
                (Page::ConsentEvents(rows), Some(next))
            }
            Next::Messages(before) => {
                let (rows, more) = self.messages(before.as_deref()).await?;
                let next = more.map_or(Next::Conversation(None), |m| Next::Messages(Some(m)));
                (Page::Messages(rows), Some(next))
            }
            Next::Conversation(after) => {
                let rows =
                    conversations::conversation(db, &c.tenant_id, &c.id, after.as_deref(), PAGE)
                        .await?;
                let (rows, more) = cut(rows, PAGE, |m| m.id.clone());
                let next = more.map_or(Next::Appointments(None), |m| Next::Conversation(Some(m)));
                (Page::Conversation(rows), Some(next))
            }
            Next::Appointments(after) => {
                let filter = AppointmentFilter {
                    contact_id: Some(&c.id),
                    after: after.as_ref().map(|(at, id)| (*at, id.as_str())),
                    ..AppointmentFilter::default()
                };
                let rows = appointments::list(db, &c.tenant_id, &filter, PAGE).await?;
                let (rows, more) = cut(rows, PAGE, |a| (a.starts_at, a.id.clone()));
                let next = more.map_or(Next::Subscriptions(None), |m| Next::Appointments(Some(m)));
                (
                    Page::Appointments(with_reminders(db, rows).await?),
                    Some(next),
                )
            }
            Next::Subscriptions(before) => {
                let filter = SubscriptionFilter {
                    contact_id: Some(&c.id),
                    paused: None,
                    before_id: before.as_deref(),
                };
                let rows = subscriptions::list(db, &c.tenant_id, &filter, PAGE).await?;
                let (rows, more) = cut(rows, PAGE, |s| s.id.clone());
                let next = more.map_or(Next::Groups(None), |m| Next::Subscriptions(Some(m)));
                (Page::Subscriptions(rows), Some(next))
            }
            Next::Groups(before) => {
                let rows =
                    groups::memberships(db, &c.tenant_id, &c.id, before.as_deref(), PAGE).await?;
                let (rows, more) = cut(rows, PAGE, |m| m.group.group.id.clone());
                (Page::Groups(rows), more.map(|m| Next::Groups(Some(m))))
            }
        })
    }

    /// A page of the messages about the person older than `before`, with their events, and
    /// the cursor of the next page (`None`: the tenant has no older message). The page comes
    /// from one window of the tenant's messages, read in one snapshot so that no event runs
    /// ahead of its message's status.
    async fn messages(
        &self,
        before: Option<&str>,
    ) -> Result<(Vec<(MessageRow, Vec<EventRow>)>, Option<String>), sqlx::Error> {
        let c = &self.contact;
        let person = Person {
            contact_id: &c.id,
            phone: c.phone.as_deref(),
            email: c.email.as_deref(),
        };
        let mut tx = snapshot(&self.db).await?;
        let Some(window) = export::window(&mut *tx, &c.tenant_id, before, WINDOW).await? else {
            return Ok((Vec::new(), None));
        };
        let rows = export::messages_about(&mut *tx, &c.tenant_id, &person, &window, PAGE).await?;
        let (rows, more) = cut(rows, PAGE, |m| m.id.clone());
        let ids: Vec<String> = rows.iter().map(|m| m.id.clone()).collect();
        let mut events: HashMap<String, Vec<EventRow>> = HashMap::new();
        for e in messages::events_of(&mut *tx, &ids).await? {
            events.entry(e.message_id).or_default().push(e.event);
        }
        tx.commit().await?;
        // More of the person's in this window, else the next window, unless this was the last.
        let next = more.or_else(|| (!window.last).then_some(window.floor));
        let rows = rows
            .into_iter()
            .map(|m| {
                let own = events.remove(&m.id).unwrap_or_default();
                (m, own)
            })
            .collect();
        Ok((rows, next))
    }
}
