//! Bulk contact import: JSON or CSV, each row checked on its own, upserted by phone within
//! the tenant, optionally into a group.

use herald_tests::{
    Tenant, TestApp,
    views::{ContactView, GroupView, api_error, view},
};
use reqwest::StatusCode;
use serde_json::{Value, json};

/// `POST /v1/contacts/import` with a JSON body; returns the status and the answer.
async fn import_json(app: &TestApp, tenant: &Tenant, body: &Value) -> (StatusCode, Value) {
    app.post("/v1/contacts/import", &tenant.api_key, body).await
}

/// `POST /v1/contacts/import` with a CSV body (`query` is `?group_id=...` or empty).
async fn import_csv(app: &TestApp, tenant: &Tenant, csv: &str, query: &str) -> (StatusCode, Value) {
    let r = app
        .http
        .post(app.url(&format!("/v1/contacts/import{query}")))
        .bearer_auth(&tenant.api_key)
        .header("content-type", "text/csv; charset=utf-8")
        .body(csv.to_owned())
        .send()
        .await
        .unwrap();
    let status = r.status();
    (status, r.json().await.unwrap())
}

/// The answer's `rejected` as `(index, field, code)`.
fn rejected(answer: &Value) -> Vec<(u64, Option<String>, String)> {
    answer["rejected"]
        .as_array()
        .unwrap_or_else(|| panic!("no rejected in {answer}"))
        .iter()
        .map(|r| {
            (
                r["index"].as_u64().unwrap(),
                r["field"].as_str().map(str::to_owned),
                r["code"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

/// The tenant's contact with this phone, read through the API (`None`: it has none).
async fn contact_by_phone(app: &TestApp, tenant: &Tenant, phone: &str) -> Option<ContactView> {
    let id: Option<String> =
        sqlx::query_scalar("SELECT id FROM contacts WHERE tenant_id = $1 AND phone = $2")
            .bind(&tenant.id)
            .bind(phone)
            .fetch_optional(&app.db)
            .await
            .unwrap();
    match id {
        Some(id) => Some(app.contact(tenant, &id).await),
        None => None,
    }
}

async fn contacts_of(app: &TestApp, tenant: &Tenant) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM contacts WHERE tenant_id = $1")
        .bind(&tenant.id)
        .fetch_one(&app.db)
        .await
        .unwrap()
}

#[tokio::test]
async fn ten_thousand_rows_with_ten_bad_ones_keep_the_rest_and_name_each_refusal() {
    let app = TestApp::start().await;
    let t = app.tenant().await;
    // One bad row in every thousand, each bad in its own way.
    let faults: [(Value, &str, &str); 10] = [
        (json!({"phone": "555-0100"}), "phone", "invalid_value"),
        (json!({"name": "No Phone"}), "phone", "missing_field"),
        (
            json!({"phone": "+1777000001", "email": "nope"}),
            "email",
            "invalid_value",
        ),
        (
            json!({"phone": "+1777000002", "timezone": "Mars/Olympus"}),
            "timezone",
            "invalid_value",
        ),
        (
            json!({"phone": "+1777000003", "consent": {"status": "maybe"}}),
            "consent.status",
            "invalid_value",
        ),
        (
            json!({"phone": "+1777000004", "colour": "blue"}),
            "colour",
            "unknown_field",
        ),
        (
            json!({"phone": "+1777000005", "name": ""}),
            "name",
            "invalid_value",
        ),
        (
            json!({"phone": "+1777000006", "name": "a\u{0}b"}),
            "name",
            "invalid_text",
        ),
        (json!({"phone": 17770000007u64}), "phone", "invalid_type"),
        (
            json!({"phone": "+1777000008", "consent": {"status": "opted_in", "at": "2999-01-01T00:00:00Z"}}),
            "consent.at",
            "invalid_value",
        ),
    ];
    let mut rows = Vec::with_capacity(10_000);
    let mut expected = Vec::new();
    for i in 0..10_000u64 {
        if i % 1000 == 7 {
            let (row, field, code) = &faults[(i / 1000) as usize];
            rows.push(row.clone());
            expected.push((i, Some((*field).to_owned()), (*code).to_owned()));
        } else {
            rows.push(json!({
                "phone": format!("+1555{i:07}"),
                "name": format!("Contact {i}"),
                "email": format!("c{i}@example.com"),
            }));
        }
    }
    let body = json!({"contacts": rows});
    assert!(
        body.to_string().len() > 64 * 1024,
        "past the usual body limit"
    );
    let (status, answer) = import_json(&app, &t, &body).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(answer["created"], 9990, "{}", answer["rejected"]);
    assert_eq!(answer["updated"], 0);
    assert_eq!(rejected(&answer), expected);
    assert_eq!(contacts_of(&app, &t).await, 9990);
    let c = contact_by_phone(&app, &t, "+15550004321").await.unwrap();
    assert_eq!(c.name.as_deref(), Some("Contact 4321"));
    assert_eq!(c.email.as_deref(), Some("c4321@example.com"));
    assert_eq!(c.timezone, "UTC", "the tenant's zone");
    for phone in ["+1777000001", "+1777000004"] {
        assert!(
            contact_by_phone(&app, &t, phone).await.is_none(),
            "a rejected row changed nothing"
        );
    }

    // Over 10,000 rows is refused whole; so is a body other routes would take.
    let too_many: Vec<Value> = (0..10_001u64)
        .map(|i| json!({"phone": format!("+1666{i:07}")}))
        .collect();
    let (status, error) = import_json(&app, &t, &json!({"contacts": too_many})).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{error}");
    assert_eq!(api_error(&error).code, "too_many_rows");
    assert_eq!(
        contacts_of(&app, &t).await,
        9990,
        "nothing of it was imported"
    );
    let big_name = "x".repeat(70 * 1024);
    let (status, error) = app
        .post(
            "/v1/contacts",
            &t.api_key,
            &json!({"phone": "+15559990000", "name": big_name}),
        )
        .await;
    assert_eq!(
        status,
        StatusCode::PAYLOAD_TOO_LARGE,
        "other routes keep 64 KiB: {error}"
    );
}

#[tokio::test]
async fn a_csv_with_a_bom_quoted_commas_and_crlf_is_read_like_json() {
    let app = TestApp::start().await;
    let t = app.tenant().await;
    let csv = "\u{feff}Phone,name,email,consent_status,consent_source\r\n\
               +15550200001,\"Smith, Ann\",ann@example.com,opted_in,\"the \"\"spring\"\" form\"\r\n\
               +15550200002,Bob,,,\r\n\
               not-a-phone,Eve,,,\r\n\
               +15550200003,Carl,,maybe,\r\n\
               +15550200004,Dora\r\n\
               \r\n\
               +15550200005,\"Line\r\nBreak\",,opted_out,\r\n";
    let (status, answer) = import_csv(&app, &t, csv, "").await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(answer["created"], 3, "{answer}");
    assert_eq!(
        rejected(&answer),
        vec![
            (2, Some("phone".to_owned()), "invalid_value".to_owned()),
            (
                3,
                Some("consent_status".to_owned()),
                "invalid_value".to_owned()
            ),
            (4, None, "invalid_row".to_owned()),
        ]
    );
    let ann = contact_by_phone(&app, &t, "+15550200001").await.unwrap();
    assert_eq!(ann.name.as_deref(), Some("Smith, Ann"));
    assert_eq!(ann.email.as_deref(), Some("ann@example.com"));
    assert_eq!(ann.consent.status, "opted_in");
    assert_eq!(
        ann.consent.method.as_deref(),
        Some("import"),
        "the default method"
    );
    assert_eq!(ann.consent.source.as_deref(), Some("the \"spring\" form"));
    let events: Value = app
        .get_as(
            &format!("/v1/contacts/{}/consent-events", ann.id),
            &t.api_key,
        )
        .await;
    assert_eq!(events["data"].as_array().unwrap().len(), 1, "{events}");
    assert_eq!(events["data"][0]["method"], "import");
    let bob = contact_by_phone(&app, &t, "+15550200002").await.unwrap();
    assert_eq!((bob.email, bob.consent.status.as_str()), (None, "unknown"));
    let broken = contact_by_phone(&app, &t, "+15550200005").await.unwrap();
    assert_eq!(broken.name.as_deref(), Some("Line\r\nBreak"));
    assert!(broken.opted_out, "opted_out follows the consent");

    for (csv, code, field) in [
        (
            "phone,shoe_size\n+15550200009,42\n",
            "unknown_field",
            Some("shoe_size"),
        ),
        ("name\nAnn\n", "missing_field", Some("phone")),
        ("phone,name\n+15550200009,\"open\n", "invalid_csv", None),
    ] {
        let (status, error) = import_csv(&app, &t, csv, "").await;
        assert!(status.is_client_error(), "{csv:?}: {status} {error}");
        let error = api_error(&error);
        assert_eq!(
            (error.code.as_str(), error.field.as_deref()),
            (code, field),
            "{csv:?}"
        );
    }
    assert_eq!(
        contacts_of(&app, &t).await,
        3,
        "refused files changed nothing"
    );
}

#[tokio::test]
async fn importing_again_updates_instead_of_duplicating() {
    let app = TestApp::start().await;
    let t = app.tenant().await;
    let first = json!({"contacts": [
        {"phone": "+15550210001", "name": "Ann", "email": "ann@example.com"},
        {"phone": "+15550210002", "name": "Bob"},
        {"phone": "+15550210003", "name": "Cy", "timezone": "Asia/Tokyo"},
    ]});
    let (status, answer) = import_json(&app, &t, &first).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(
        (&answer["created"], &answer["updated"]),
        (&json!(3), &json!(0))
    );
    let ann_before = contact_by_phone(&app, &t, "+15550210001").await.unwrap();

    let again = json!({"contacts": [
        {"phone": "+15550210001", "name": "Ann Smith", "consent": {"status": "opted_in", "method": "paper"}},
        {"phone": "+15550210002", "timezone": "Europe/Berlin"},
        {"phone": "+15550210003"},
        {"phone": "+15550210004", "name": "Dee"},
        {"phone": "+15550210004", "name": "Dee again"},
    ]});
    let (status, answer) = import_json(&app, &t, &again).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(
        (&answer["created"], &answer["updated"]),
        (&json!(1), &json!(3)),
        "{answer}"
    );
    assert_eq!(
        rejected(&answer),
        vec![(4, Some("phone".to_owned()), "duplicate_phone".to_owned())]
    );
    assert_eq!(contacts_of(&app, &t).await, 4);

    let ann = contact_by_phone(&app, &t, "+15550210001").await.unwrap();
    assert_eq!(ann.id, ann_before.id, "the same contact");
    assert_eq!(ann.name.as_deref(), Some("Ann Smith"));
    assert_eq!(
        ann.email.as_deref(),
        Some("ann@example.com"),
        "left out: kept"
    );
    assert_eq!(
        (ann.consent.status.as_str(), ann.consent.method.as_deref()),
        ("opted_in", Some("paper"))
    );
    let bob = contact_by_phone(&app, &t, "+15550210002").await.unwrap();
    assert_eq!(
        (bob.name.as_deref(), bob.timezone.as_str()),
        (Some("Bob"), "Europe/Berlin")
    );
    let cy = contact_by_phone(&app, &t, "+15550210003").await.unwrap();
    assert_eq!(cy.timezone, "Asia/Tokyo", "left out: kept");
    let dee = contact_by_phone(&app, &t, "+15550210004").await.unwrap();
    assert_eq!(
        dee.name.as_deref(),
        Some("Dee"),
        "the first of two rows with one phone"
    );
}

#[tokio::test]
async fn group_id_adds_every_imported_contact_and_an_unknown_group_imports_nothing() {
    let app = TestApp::start().await;
    let t = app.tenant().await;
    let group: GroupView = app
        .post_as(
            "/v1/groups",
            &t.api_key,
            &json!({"name": "Spring campaign"}),
            StatusCode::CREATED,
        )
        .await;
    // One of them exists already: updated, it joins too.
    let (status, _) = app
        .post(
            "/v1/contacts",
            &t.api_key,
            &json!({"phone": "+15550220001"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);

    let body = json!({"group_id": group.id, "contacts": [
        {"phone": "+15550220001"}, {"phone": "+15550220002"}, {"phone": "bad"},
    ]});
    let (status, answer) = import_json(&app, &t, &body).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(
        (&answer["created"], &answer["updated"]),
        (&json!(1), &json!(1))
    );
    let read: GroupView = app
        .get_as(&format!("/v1/groups/{}", group.id), &t.api_key)
        .await;
    assert_eq!(read.members, 2, "{read}");

    let csv = "phone\n+15550220003\n+15550220001\n";
    let (status, answer) = import_csv(&app, &t, csv, &format!("?group_id={}", group.id)).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    let read: GroupView = app
        .get_as(&format!("/v1/groups/{}", group.id), &t.api_key)
        .await;
    assert_eq!(read.members, 3, "{read}");

    let before = contacts_of(&app, &t).await;
    let other = app.tenant().await;
    let theirs: GroupView = app
        .post_as(
            "/v1/groups",
            &other.api_key,
            &json!({"name": "Theirs"}),
            StatusCode::CREATED,
        )
        .await;
    for group_id in [
        "grp_01ARZ3NDEKTSV4RRFFQ69G5FAV",
        "nonsense",
        theirs.id.as_str(),
    ] {
        let body = json!({"group_id": group_id, "contacts": [{"phone": "+15550220009"}]});
        let (status, error) = import_json(&app, &t, &body).await;
        assert_eq!(
            status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{group_id}: {error}"
        );
        let error = api_error(&error);
        assert_eq!(
            (error.code.as_str(), error.field.as_deref()),
            ("unknown_group", Some("group_id"))
        );
    }
    assert_eq!(contacts_of(&app, &t).await, before, "nothing imported");
}

#[tokio::test]
async fn an_import_touches_only_its_own_tenants_contacts() {
    let app = TestApp::start().await;
    let a = app.tenant().await;
    let b = app.tenant().await;
    let (status, theirs) = app
        .post(
            "/v1/contacts",
            &b.api_key,
            &json!({"phone": "+15550230001", "name": "B's"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{theirs}");
    let theirs: ContactView = view(&theirs);

    let body = json!({"contacts": [{"phone": "+15550230001", "name": "A's", "consent": {"status": "opted_out"}}]});
    let (status, answer) = import_json(&app, &a, &body).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(
        (&answer["created"], &answer["updated"]),
        (&json!(1), &json!(0))
    );
    let ours = contact_by_phone(&app, &a, "+15550230001").await.unwrap();
    assert_ne!(ours.id, theirs.id);
    assert!(ours.opted_out);

    let after = app.contact(&b, &theirs.id).await;
    assert_eq!(after.name.as_deref(), Some("B's"));
    assert!(!after.opted_out, "B's contact is untouched");
    assert_eq!(after.consent.status, "unknown");
    let (status, _) = app
        .get(&format!("/v1/contacts/{}", ours.id), &b.api_key)
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}
