//! `GET /v1/contacts/{id}/export`: everything Herald holds about one person, as one JSON
//! document written to the client a page at a time (see [`herald_core::services::export`]).

use std::{convert::Infallible, pin::Pin};

use anyhow::Context;
use axum::{
    body::{Body, Bytes},
    extract::{Path, State},
    http::header,
    response::Response,
};
use futures_util::{Stream, StreamExt, stream};
use herald_core::{
    domain::is_id,
    queue::Queue,
    services::export::{self as service, Page},
};
use serde::Serialize;
use tracing::Instrument;

use crate::{
    auth::{Origin, Tenant},
    error::{ApiError, ApiResult, ErrorBody},
    state::AppState,
    views,
};

/// The document's lists after `contact`, in order (the fields of [`views::ContactExport`]).
const LISTS: [&str; 6] = [
    "consent_events",
    "messages",
    "conversation",
    "appointments",
    "subscriptions",
    "groups",
];

/// Everything Herald holds about a contact, as one JSON document to download. It is written
/// as it is read, so a body cut short (invalid JSON) means the export failed part way.
#[utoipa::path(
    get, path = "/v1/contacts/{id}/export", tag = "contacts",
    params(("id" = String, Path, description = "`ct_...`")),
    responses(
        (status = 200, body = views::ContactExport,
         headers(("Content-Disposition" = String, description = "`attachment; filename=\"contact-<id>.json\"`"))),
        (status = 404, body = ErrorBody),
    ),
    security(("api_key" = []))
)]
pub async fn export(
    auth: Tenant,
    origin: Origin,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    if !is_id("ct", &id) {
        return Err(ApiError::not_found("contact"));
    }
    let origin = origin.by_key(&auth.key_prefix);
    let contact = service::open(&state.db, &origin, &auth.tenant.id, &id)
        .await?
        .ok_or_else(|| ApiError::not_found("contact"))?;
    let head = views::Contact::new(contact.clone(), &auth.tenant.timezone);
    let mut export = Export {
        doc: Document::new(&head).context("writing the contact")?,
        pages: Box::pin(service::pages(state.db.clone(), contact)),
        queue: state.queue.clone(),
    };
    // The first chunk is read before the answer starts, so that what fails this early is
    // answered as an error rather than as a document cut short.
    let first = export.next_chunk().await.transpose()?;
    // The rest is written after the handler returns: its logs keep the request's span.
    let span = tracing::info_span!("export", contact_id = %head.id);
    let rest = stream::unfold(export, move |mut export| {
        async move {
            match export.next_chunk().await {
                Some(Ok(chunk)) => Some((Ok::<_, Infallible>(chunk), export)),
                Some(Err(e)) => {
                    tracing::error!(
                        error = format!("{e:#}"),
                        "the export failed after its answer began; the client got a document cut short"
                    );
                    None
                }
                None => None,
            }
        }
        .instrument(span.clone())
    });
    let chunks = stream::iter(first.map(Ok)).chain(rest);
    Response::builder()
        .header(header::CONTENT_TYPE, "application/json")
        .header(
            header::CONTENT_DISPOSITION,
            format!("attachment; filename=\"contact-{}.json\"", head.id),
        )
        .body(Body::from_stream(chunks))
        .map_err(|e| ApiError::internal(&e))
}

/// The export being written: the pages still to read, and the document they go into.
struct Export {
    doc: Document,
    pages: Pin<Box<dyn Stream<Item = Result<Page, sqlx::Error>> + Send>>,
    /// For the messages' `expected_at`, as `GET /v1/messages/{id}` shows it.
    queue: Queue,
}

impl Export {
    /// The document's next chunk: what the next page with anything in it adds (every page
    /// but the first may be empty), or the end of the document; `None` once that is written.
    async fn next_chunk(&mut self) -> Option<anyhow::Result<Bytes>> {
        loop {
            if self.doc.done {
                return None;
            }
            match self.pages.next().await {
                Some(Ok(page)) => {
                    if let Err(e) = self.write(page).await {
                        return Some(Err(e));
                    }
                }
                Some(Err(e)) => {
                    return Some(Err(e).context("reading a page of the export"));
                }
                None => self.doc.finish(),
            }
            if !self.doc.out.is_empty() {
                return Some(Ok(Bytes::from(std::mem::take(&mut self.doc.out))));
            }
        }
    }

    /// Adds a page to the document, each object as its own route shows it, in its list (an
    /// index of [`LISTS`]).
    async fn write(&mut self, page: Page) -> anyhow::Result<()> {
        let doc = &mut self.doc;
        match page {
            Page::ConsentEvents(rows) => doc.items(0, rows.into_iter().map(views::Consent::from)),
            Page::Messages(rows) => {
                let (rows, events): (Vec<_>, Vec<_>) = rows.into_iter().unzip();
                let messages = views::Message::with_expected(&self.queue, rows).await;
                doc.items(
                    1,
                    messages.into_iter().zip(events).map(|(message, events)| {
                        views::MessageWithEvents {
                            message,
                            events: events.into_iter().map(Into::into).collect(),
                            tenant_id: None,
                        }
                    }),
                )
            }
            Page::Conversation(rows) => {
                doc.items(2, rows.into_iter().map(views::ConversationEntry::from))
            }
            Page::Appointments(rows) => doc.items(
                3,
                rows.into_iter()
                    .map(|(a, reminders)| views::Appointment::new(a, reminders)),
            ),
            Page::Subscriptions(rows) => {
                doc.items(4, rows.into_iter().map(views::Subscription::from))
            }
            Page::Groups(rows) => doc.items(5, rows.into_iter().map(views::Membership::from)),
        }
        .context("writing a page of the export")
    }
}

/// The JSON document as it is written: `{"contact": {...}`, then each of [`LISTS`] in
/// order, each opened when its first page comes and closed when the next list opens.
struct Document {
    /// Written and not yet handed to the client.
    out: Vec<u8>,
    /// How many of [`LISTS`] have been opened (the last of them is open).
    opened: usize,
    /// No item is in the open list yet.
    empty: bool,
    /// The document is closed.
    done: bool,
}

impl Document {
    fn new(contact: &impl Serialize) -> serde_json::Result<Self> {
        let mut out = br#"{"contact":"#.to_vec();
        serde_json::to_writer(&mut out, contact)?;
        Ok(Self {
            out,
            opened: 0,
            empty: true,
            done: false,
        })
    }

    /// Opens [`LISTS`] up to `list`, closing the open one first; a list skipped is written
    /// empty, so the document has every field whatever pages come. Pages come in the lists'
    /// order ([`service::pages`] keeps it): once a list is closed, nothing goes back to it.
    fn reach(&mut self, list: usize) {
        while self.opened <= list {
            if self.opened > 0 {
                self.out.push(b']');
            }
            self.out.extend_from_slice(b",\"");
            self.out.extend_from_slice(LISTS[self.opened].as_bytes());
            self.out.extend_from_slice(b"\":[");
            self.opened += 1;
            self.empty = true;
        }
    }

    /// Adds `items` to the list `list` (an index of [`LISTS`]).
    fn items<T: Serialize>(
        &mut self,
        list: usize,
        items: impl IntoIterator<Item = T>,
    ) -> serde_json::Result<()> {
        self.reach(list);
        for item in items {
            if !self.empty {
                self.out.push(b',');
            }
            serde_json::to_writer(&mut self.out, &item)?;
            self.empty = false;
        }
        Ok(())
    }

    /// Closes the last list and the document.
    fn finish(&mut self) {
        self.reach(LISTS.len() - 1);
        self.out.extend_from_slice(b"]}");
        self.done = true;
    }
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::*;

    #[test]
    fn the_document_has_every_list_in_order_whatever_pages_come() {
        let mut doc = Document::new(&json!({"id": "ct_1"})).unwrap();
        doc.items(1, [1, 2]).unwrap();
        doc.items(1, Vec::<i32>::new()).unwrap();
        doc.items(1, [3]).unwrap();
        doc.items(4, [json!({"id": "sub_1"})]).unwrap();
        doc.finish();
        let text = String::from_utf8(doc.out).unwrap();
        assert_eq!(
            serde_json::from_str::<Value>(&text).unwrap(),
            json!({
                "contact": {"id": "ct_1"},
                "consent_events": [],
                "messages": [1, 2, 3],
                "conversation": [],
                "appointments": [],
                "subscriptions": [{"id": "sub_1"}],
                "groups": [],
            })
        );
        let order: Vec<usize> = [
            "\"contact\"",
            "\"consent_events\"",
            "\"messages\"",
            "\"groups\"",
        ]
        .iter()
        .map(|k| text.find(k).unwrap())
        .collect();
        assert!(order.is_sorted(), "{text}");
    }
}
