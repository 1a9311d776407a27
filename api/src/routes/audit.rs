//! `GET /v1/audit` (a tenant's own entries) and `GET /v1/admin/audit` (every entry): the
//! append-only audit log, newest first. Nothing here, or anywhere, changes or deletes an entry.

use std::collections::HashMap;

use axum::{
    Json,
    extract::{Query, State},
};
use herald_core::{
    domain::{
        audit::{AuditAction, OPS_ACTOR},
        is_id,
    },
    services::{audit, tenants::KEY_PREFIX_LEN},
    store::audit::AuditFilter,
};

use crate::{
    auth::{Ops, Tenant},
    body::{Page, known_params, query_param, rfc3339},
    error::{ApiResult, ErrorBody},
    state::AppState,
    views,
};

/// The filters both routes take, checked: each bad one is 422 naming it.
pub fn filter(q: &HashMap<String, String>) -> ApiResult<AuditFilter> {
    let action = query_param(
        q,
        "action",
        "one of the audit actions (`tenant.created`, ...)",
        AuditAction::parse,
    )?;
    let actor = query_param(
        q,
        "actor",
        "`ops` or a key prefix (`hk_` and 9 characters)",
        |a| is_actor(a).then(|| a.to_owned()),
    )?;
    let since = query_param(q, "since", "an RFC 3339 time with an offset", rfc3339)?;
    let until = query_param(q, "until", "an RFC 3339 time with an offset", rfc3339)?;
    Ok(AuditFilter {
        tenant_id: None,
        action: action.map(|a| a.as_str().to_owned()),
        actor,
        since,
        until,
    })
}

/// `ops`, or what a key's prefix looks like.
pub fn is_actor(a: &str) -> bool {
    a == OPS_ACTOR
        || (a.len() == KEY_PREFIX_LEN
            && a.starts_with("hk_")
            && a.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_'))
}

async fn page(
    state: &AppState,
    q: &HashMap<String, String>,
    filter: AuditFilter,
) -> ApiResult<Json<views::AuditPage>> {
    let page = Page::from_query(q, |c| is_id("aud", c))?;
    let (rows, next_cursor) =
        audit::list(&state.db, &filter, page.cursor.as_deref(), page.limit).await?;
    Ok(Json(views::AuditPage {
        data: rows.into_iter().map(Into::into).collect(),
        next_cursor,
    }))
}

/// The tenant's own audit log, newest first: what its keys, and the operator, changed in it.
#[utoipa::path(
    get, path = "/v1/audit", tag = "audit",
    params(
        ("action" = Option<String>, Query, description = "only this action (`endpoint.updated`, ...)"),
        ("actor" = Option<String>, Query, description = "`ops` or a key prefix"),
        ("since" = Option<String>, Query, description = "RFC 3339: entries from then on"),
        ("until" = Option<String>, Query, description = "RFC 3339: entries before then"),
        ("limit" = Option<i64>, Query, description = "1..100, default 50"),
        ("cursor" = Option<String>, Query, description = "`next_cursor` of the previous page"),
    ),
    responses((status = 200, body = views::AuditPage), (status = 422, body = ErrorBody)),
    security(("api_key" = []))
)]
pub async fn list(
    auth: Tenant,
    State(state): State<AppState>,
    Query(q): Query<HashMap<String, String>>,
) -> ApiResult<Json<views::AuditPage>> {
    known_params(
        &q,
        &["action", "actor", "since", "until", "limit", "cursor"],
    )?;
    let mut filter = filter(&q)?;
    filter.tenant_id = Some(auth.tenant.id);
    page(&state, &q, filter).await
}

/// Every audit entry (every tenant's and the operator's own, such as logins), newest first.
#[utoipa::path(
    get, path = "/v1/admin/audit", tag = "admin",
    params(
        ("tenant_id" = Option<String>, Query, description = "`ten_...`: only entries about this tenant"),
        ("action" = Option<String>, Query, description = "only this action (`endpoint.updated`, ...)"),
        ("actor" = Option<String>, Query, description = "`ops` or a key prefix"),
        ("since" = Option<String>, Query, description = "RFC 3339: entries from then on"),
        ("until" = Option<String>, Query, description = "RFC 3339: entries before then"),
        ("limit" = Option<i64>, Query, description = "1..100, default 50"),
        ("cursor" = Option<String>, Query, description = "`next_cursor` of the previous page"),
    ),
    responses((status = 200, body = views::AuditPage), (status = 422, body = ErrorBody)),
    security(("ops_token" = []))
)]
pub async fn admin_list(
    _ops: Ops,
    State(state): State<AppState>,
    Query(q): Query<HashMap<String, String>>,
) -> ApiResult<Json<views::AuditPage>> {
    known_params(
        &q,
        &[
            "tenant_id",
            "action",
            "actor",
            "since",
            "until",
            "limit",
            "cursor",
        ],
    )?;
    let mut filter = filter(&q)?;
    filter.tenant_id = query_param(&q, "tenant_id", "a tenant id (`ten_...`)", |t| {
        is_id("ten", t).then(|| t.to_owned())
    })?;
    page(&state, &q, filter).await
}
