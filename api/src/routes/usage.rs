//! `GET /v1/usage` (a tenant's own, by day) and `GET /v1/admin/usage` (every tenant's): what
//! the texts, emails, webhooks and AI replies used, per day in each tenant's zone.

use std::collections::HashMap;

use axum::{
    Json,
    extract::{Query, State},
};
use chrono::{Duration, NaiveDate, Utc};
use chrono_tz::Tz;
use herald_core::{
    domain::is_id,
    store::{
        tenants::{self, TenantRow},
        usage::{self, MAX_DAYS, UsageDay},
    },
};
use serde::Serialize;
use utoipa::ToSchema;

use crate::{
    auth::{Ops, Tenant},
    body::{known_params, query_param},
    error::{ApiError, ApiResult, ErrorBody},
    state::AppState,
};

/// Days shown when `from` is left out: the last 30, today included.
const DEFAULT_DAYS: i64 = 30;

#[derive(Debug, Serialize, ToSchema)]
pub struct Usage {
    /// Every day asked for, oldest first.
    pub data: Vec<UsageDay>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct TenantUsage {
    pub tenant_id: String,
    /// The zone its days are in.
    pub timezone: String,
    pub days: Vec<UsageDay>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AdminUsage {
    /// Every tenant (or the one asked for), oldest first.
    pub data: Vec<TenantUsage>,
}

/// The range asked for, in the tenant's days: `to` defaults to today, `from` to 29 days
/// before `to`. `from` after `to`, or more than 366 days, is 422 naming the field.
fn range(q: &HashMap<String, String>, today: NaiveDate) -> ApiResult<(NaiveDate, NaiveDate)> {
    let date = |raw: &str| NaiveDate::parse_from_str(raw, "%Y-%m-%d").ok();
    let from = query_param(q, "from", "a date `YYYY-MM-DD`", date)?;
    let to = query_param(q, "to", "a date `YYYY-MM-DD`", date)?.unwrap_or(today);
    let from = from.unwrap_or(to - Duration::days(DEFAULT_DAYS - 1));
    if from > to {
        return Err(ApiError::invalid(
            "invalid_value",
            "from",
            "`from` must not be after `to`",
        ));
    }
    if (to - from).num_days() >= MAX_DAYS {
        return Err(ApiError::invalid(
            "invalid_value",
            "to",
            format!("at most {MAX_DAYS} days at a time"),
        ));
    }
    Ok((from, to))
}

fn zone(t: &TenantRow) -> Tz {
    t.timezone.parse().unwrap_or(chrono_tz::UTC)
}

/// The tenant's usage per day in its zone: messages by channel and status (each counted on
/// the day it was accepted, with the status it has now), SMS segments billed, model calls
/// and the tokens each model reported, and canned replies sent instead of a model's.
#[utoipa::path(
    get, path = "/v1/usage", tag = "usage",
    params(
        ("from" = Option<String>, Query, description = "`YYYY-MM-DD` in the tenant's zone; default 29 days before `to`"),
        ("to" = Option<String>, Query, description = "`YYYY-MM-DD` in the tenant's zone; default today; at most 366 days after `from`"),
    ),
    responses((status = 200, body = Usage), (status = 422, body = ErrorBody)),
    security(("api_key" = []))
)]
pub async fn get(
    auth: Tenant,
    State(state): State<AppState>,
    Query(q): Query<HashMap<String, String>>,
) -> ApiResult<Json<Usage>> {
    known_params(&q, &["from", "to"])?;
    let zone = zone(&auth.tenant);
    let (from, to) = range(&q, usage::today(zone, Utc::now()))?;
    let data = usage::days(&state.db, &auth.tenant.id, zone, from, to).await?;
    Ok(Json(Usage { data }))
}

/// Every tenant's usage per day, each in its own zone (or one tenant's, with `tenant_id`).
/// `from` and `to` default as for `/v1/usage`, from the UTC date.
#[utoipa::path(
    get, path = "/v1/admin/usage", tag = "admin",
    params(
        ("from" = Option<String>, Query, description = "`YYYY-MM-DD`; default 29 days before `to`"),
        ("to" = Option<String>, Query, description = "`YYYY-MM-DD`; default today (UTC); at most 366 days after `from`"),
        ("tenant_id" = Option<String>, Query, description = "`ten_...`: only this tenant"),
    ),
    responses((status = 200, body = AdminUsage), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)),
    security(("ops_token" = []))
)]
pub async fn admin(
    _ops: Ops,
    State(state): State<AppState>,
    Query(q): Query<HashMap<String, String>>,
) -> ApiResult<Json<AdminUsage>> {
    known_params(&q, &["from", "to", "tenant_id"])?;
    let tenant_id = query_param(&q, "tenant_id", "a tenant id (`ten_...`)", |t| {
        is_id("ten", t).then(|| t.to_owned())
    })?;
    let (from, to) = range(&q, Utc::now().date_naive())?;
    let tenants = match tenant_id {
        Some(id) => vec![
            tenants::get(&state.db, &id)
                .await?
                .ok_or_else(|| ApiError::not_found("tenant"))?,
        ],
        None => tenants::all(&state.db).await?,
    };
    let mut data = Vec::with_capacity(tenants.len());
    for t in tenants {
        let days = usage::days(&state.db, &t.id, zone(&t), from, to).await?;
        data.push(TenantUsage {
            tenant_id: t.id,
            timezone: t.timezone,
            days,
        });
    }
    Ok(Json(AdminUsage { data }))
}
