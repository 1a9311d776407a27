//! `POST /v1/contacts/import`: up to 10,000 contacts at once, as JSON or CSV, upserted by
//! phone. Each row is checked on its own, with the checks of `POST /v1/contacts`; a refused
//! row is reported and changes nothing, the others are kept.

use std::collections::HashMap;

use axum::{
    Json,
    extract::{Query, State},
    http::StatusCode,
};
use herald_core::{
    domain::{has_nul, is_id, new_id},
    services::contacts::{self as service, ImportError, MAX_IMPORT_ROWS},
    store::contacts::ImportRow,
};
use serde_json::{Map, Value};

use super::contacts::{consent_with, email, name, phone, timezone};
use crate::{
    auth::Tenant,
    body::{Fields, ImportBody, known_params, parse_json, refuse_nul},
    error::{ApiError, ApiResult, ErrorBody},
    state::AppState,
    views::{self, ImportResult, RejectedRow},
};

/// The columns a CSV header may name; `consent_*` are the fields of `consent`.
const CSV_COLUMNS: [&str; 9] = [
    "phone",
    "email",
    "name",
    "timezone",
    "consent_status",
    "consent_method",
    "consent_at",
    "consent_source",
    "consent_text",
];

/// Import contacts: `application/json` `{"contacts": [{"phone", "email"?, "name"?,
/// "timezone"?, "consent"?}], "group_id"?}`, or `text/csv` with a header row naming its
/// columns (`phone`, `email`, `name`, `timezone`, and for consent `consent_status`,
/// `consent_method`, `consent_at`, `consent_source`, `consent_text`; any order, names
/// case-insensitive, cells trimmed, an empty cell is a value left out) and `?group_id=`.
/// Quoted CSV fields may hold commas, line breaks and doubled quotes; CRLF or LF; a UTF-8 BOM
/// is skipped. Up to 10,000 rows and 5 MiB.
///
/// Rows are upserted by `phone` within the tenant: a new phone creates a contact (its time
/// zone defaults to the tenant's), a known one updates the fields the row gives and keeps the
/// rest. A consent given (`method` defaults to `import`, `at` to now) is kept as a consent
/// event, as `PATCH /v1/contacts/{id}` keeps it. A phone that appears again later in the same
/// import is refused at that later row (`duplicate_phone`); the first stands. With
/// `group_id`, every contact created or updated joins that group; an unknown group is 422
/// `unknown_group` and nothing is imported. `index` is the 0-based row (the item of
/// `contacts`, or the CSV data row, header not counted, blank lines skipped); `field` names
/// the field (for CSV, the column) at fault.
#[utoipa::path(
    post, path = "/v1/contacts/import", tag = "contacts",
    params(("group_id" = Option<String>, Query, description = "CSV: `grp_...`, the group every imported contact joins")),
    request_body(
        description = "`application/json` (`ContactImportIn`) or `text/csv` with a header row (`ContactImportCsv` names its columns)",
        content(
            (crate::requests::ContactImportIn = "application/json"),
            (crate::requests::ContactImportCsv = "text/csv"),
        ),
    ),
    responses(
        (status = 200, body = views::ImportResult),
        (status = 400, description = "not JSON, or not CSV", body = ErrorBody),
        (status = 413, description = "over 5 MiB (`payload_too_large`) or over 10,000 rows (`too_many_rows`)", body = ErrorBody),
        (status = 415, body = ErrorBody),
        (status = 422, description = "the request's shape, a CSV header, or `unknown_group`", body = ErrorBody),
    ),
    security(("api_key" = []))
)]
pub async fn import(
    auth: Tenant,
    State(state): State<AppState>,
    Query(q): Query<HashMap<String, String>>,
    body: ImportBody,
) -> ApiResult<Json<ImportResult>> {
    known_params(&q, &["group_id"])?;
    let csv = is_csv(body.content_type.as_deref())?;
    let (items, body_group) = if csv {
        (csv_items(&body.bytes)?, None)
    } else {
        json_items(&body.bytes)?
    };
    let group_id = match (body_group, q.get("group_id").filter(|g| !g.is_empty())) {
        (Some(_), Some(_)) => {
            return Err(ApiError::invalid(
                "invalid_value",
                "group_id",
                "give `group_id` in the body or in the query, not both",
            ));
        }
        (from_body, from_query) => from_body.or_else(|| from_query.cloned()),
    };
    if group_id.as_deref().is_some_and(|g| !is_id("grp", g)) {
        return Err(unknown_group());
    }
    let (rows, rejected) = check_rows(items, csv);
    let imported = service::import(
        &state.db,
        &auth.tenant.id,
        &auth.tenant.timezone,
        &rows,
        group_id.as_deref(),
    )
    .await
    .map_err(|e| match e {
        ImportError::UnknownGroup => unknown_group(),
        ImportError::Unexpected(e) => e.into(),
    })?;
    Ok(Json(ImportResult {
        created: imported.created,
        updated: imported.updated,
        rejected,
    }))
}

fn unknown_group() -> ApiError {
    ApiError::invalid(
        "unknown_group",
        "group_id",
        "this tenant has no such group; nothing was imported",
    )
}

/// Whether the body is CSV (`text/csv`) rather than JSON (`application/json`, or no type).
fn is_csv(content_type: Option<&str>) -> ApiResult<bool> {
    let essence = content_type.map(|t| {
        t.split(';')
            .next()
            .unwrap_or_default()
            .trim()
            .to_ascii_lowercase()
    });
    match essence.as_deref() {
        None | Some("application/json") => Ok(false),
        Some("text/csv") => Ok(true),
        Some(other) => Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            format!("an import is application/json or text/csv, not {other}"),
        )),
    }
}

fn too_many_rows(field: &str) -> ApiError {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "too_many_rows",
        format!("an import takes at most {MAX_IMPORT_ROWS} rows; split it into several requests"),
    )
    .field(field)
}

/// A row as sent, or why it cannot be read at all.
type Item = Result<Value, ApiError>;

/// `{"contacts": [...], "group_id"?}`: the rows and the group.
fn json_items(bytes: &[u8]) -> ApiResult<(Vec<Item>, Option<String>)> {
    let mut f = Fields::new(parse_json(bytes)?)?;
    let contacts = match f.take("contacts") {
        None => return Err(f.missing("contacts")),
        Some(Value::Array(items)) => items,
        Some(_) => {
            return Err(ApiError::invalid(
                "invalid_type",
                "contacts",
                "`contacts` must be an array of contacts",
            ));
        }
    };
    let group_id = f.opt_str("group_id")?;
    if group_id.as_deref().is_some_and(has_nul) {
        return Err(unknown_group());
    }
    f.finish()?;
    if contacts.len() > MAX_IMPORT_ROWS {
        return Err(too_many_rows("contacts"));
    }
    Ok((contacts.into_iter().map(Ok).collect(), group_id))
}

/// A CSV body: its data rows as objects of the fields they give (the consent columns
/// gathered into `consent`).
fn csv_items(bytes: &[u8]) -> ApiResult<Vec<Item>> {
    let text = std::str::from_utf8(bytes).map_err(|_| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_csv",
            "the CSV is not UTF-8 text",
        )
    })?;
    let mut records = crate::csv::records(text)
        .map_err(|e| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_csv",
                format!("line {}: {}", e.line, e.message),
            )
        })?
        .into_iter();
    let header = records.next().ok_or_else(|| {
        ApiError::invalid(
            "missing_field",
            "phone",
            "the CSV is empty: send a header row naming its columns (at least `phone`)",
        )
    })?;
    let columns = csv_header(&header)?;
    if records.len() > MAX_IMPORT_ROWS {
        return Err(too_many_rows("body"));
    }
    Ok(records.map(|cells| csv_row(&columns, cells)).collect())
}

/// The header's column names, checked: known, each once, `phone` among them.
fn csv_header(header: &[String]) -> ApiResult<Vec<&'static str>> {
    let mut columns = Vec::with_capacity(header.len());
    for raw in header {
        let name = raw.trim().to_ascii_lowercase();
        let Some(known) = CSV_COLUMNS.iter().find(|c| **c == name) else {
            return Err(ApiError::invalid(
                "unknown_field",
                raw.trim(),
                format!(
                    "`{}` is not a column of an import (known: {})",
                    raw.trim(),
                    CSV_COLUMNS.join(", ")
                ),
            ));
        };
        if columns.contains(known) {
            return Err(ApiError::invalid(
                "invalid_value",
                *known,
                format!("the header names `{known}` twice"),
            ));
        }
        columns.push(*known);
    }
    if !columns.contains(&"phone") {
        return Err(ApiError::invalid(
            "missing_field",
            "phone",
            "the header must name a `phone` column: contacts are matched by phone",
        ));
    }
    Ok(columns)
}

/// One CSV data row as the JSON object the checks read.
fn csv_row(columns: &[&'static str], cells: Vec<String>) -> Item {
    if cells.len() != columns.len() {
        let mut e = ApiError::invalid(
            "invalid_row",
            "",
            format!(
                "the row has {} cells where the header names {} columns",
                cells.len(),
                columns.len()
            ),
        );
        e.field = None;
        return Err(e);
    }
    let mut row = Map::new();
    let mut consent = Map::new();
    for (column, cell) in columns.iter().zip(cells) {
        let cell = cell.trim();
        if cell.is_empty() {
            continue;
        }
        match column.strip_prefix("consent_") {
            Some(part) => consent.insert(part.to_owned(), Value::String(cell.to_owned())),
            None => row.insert((*column).to_owned(), Value::String(cell.to_owned())),
        };
    }
    if !consent.is_empty() {
        row.insert("consent".to_owned(), Value::Object(consent));
    }
    Ok(Value::Object(row))
}

/// Checks every row on its own: the rows to import, one per phone, and the refusals.
fn check_rows(items: Vec<Item>, csv: bool) -> (Vec<ImportRow>, Vec<RejectedRow>) {
    let mut rows: Vec<ImportRow> = Vec::with_capacity(items.len());
    let mut rejected = Vec::new();
    let mut first_at: HashMap<String, usize> = HashMap::with_capacity(items.len());
    for (index, item) in items.into_iter().enumerate() {
        let row = item
            .and_then(import_row)
            .and_then(|row| match first_at.get(&row.phone) {
                Some(first) => Err(ApiError::invalid(
                    "duplicate_phone",
                    "phone",
                    format!("this phone is already imported by row {first} of this import"),
                )),
                None => Ok(row),
            });
        match row {
            Ok(row) => {
                first_at.insert(row.phone.clone(), index);
                rows.push(row);
            }
            Err(e) => rejected.push(RejectedRow {
                index,
                // In CSV, the column at fault: `consent_status` for `consent.status`.
                field: e.field.map(|f| {
                    if csv {
                        f.replacen("consent.", "consent_", 1)
                    } else {
                        f
                    }
                }),
                code: e.code.to_owned(),
                message: e.message,
            }),
        }
    }
    (rows, rejected)
}

/// One row, with the checks of `POST /v1/contacts` (and `phone` required).
fn import_row(value: Value) -> ApiResult<ImportRow> {
    refuse_nul(&value)?;
    let mut f = Fields::new(value)?;
    let phone = phone(&mut f)?.ok_or_else(|| f.missing("phone"))?;
    let row = ImportRow {
        id: new_id("ct"),
        phone,
        email: email(&mut f)?,
        name: name(&mut f)?,
        timezone: timezone(&mut f)?,
        consent: consent_with(&mut f, Some("import"))?,
    };
    f.finish()?;
    Ok(row)
}
