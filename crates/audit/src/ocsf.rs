//! Audit entries as OCSF "API Activity" events (class 6003, category 6 "Application Activity",
//! OCSF 1.3), for a SIEM. One entry gives one event; the mapping is lossless in that whatever has
//! no OCSF attribute goes under `unmapped.enclave`.
//!
//! | OCSF attribute | from |
//! | --- | --- |
//! | `time` | the entry's time, Unix epoch milliseconds |
//! | `activity_id`, `activity_name`, `type_uid` | request: 99 Other, named after the route; admin: the action's verb (`add`/`create` → 1 Create, `update`/`change`/`reload`/`set`/`rotate` → 3 Update, `revoke`/`remove`/`delete`/`shred` → 4 Delete, else 99 Other) |
//! | `status_id`, `status`, `status_code` | request: HTTP status below 400 → 1 Success, else 2 Failure; admin: 1 Success |
//! | `severity_id` | 1 Informational; 3 Medium for 401 and 403 (access denied); 2 Low for other failures |
//! | `actor.user.name`, `actor.user.org.uid` | principal (or the admin actor), tenant |
//! | `api.operation`, `api.request.uid`, `api.response.code`, `api.response.error` | route or action, request id, HTTP status, error code |
//! | `duration` | latency in milliseconds |
//! | `resources` | the admin action's target |
//! | `metadata.product`, `metadata.version`, `metadata.sequence`, `metadata.log_name` | `Enclave`, `1.3.0`, the entry's index, `audit` |
//! | `unmapped.enclave` | labels, decisions, model, backend, tokens, digests, phase, details |
//!
//! `src_endpoint`, which OCSF marks required for API Activity, is left out: entries do not record
//! client addresses.

use serde_json::{Map, Value, json};

use crate::entry::{AdminEvent, AuditEntry, Event, RequestEvent};

/// The OCSF schema version the events follow.
pub const OCSF_VERSION: &str = "1.3.0";

const CLASS_UID: u64 = 6003;

/// The OCSF API Activity event of an entry.
pub fn to_ocsf(entry: &AuditEntry) -> Value {
    let mut event = match &entry.event {
        Event::Request(request) => request_event(request),
        Event::Admin(admin) => admin_event(admin),
    };
    let fields = [
        ("class_uid", json!(CLASS_UID)),
        ("class_name", json!("API Activity")),
        ("category_uid", json!(6)),
        ("category_name", json!("Application Activity")),
        ("time", json!(entry.time.unix_millis())),
        (
            "metadata",
            json!({
                "product": {"name": "Enclave", "vendor_name": "Enclave"},
                "version": OCSF_VERSION,
                "sequence": entry.index,
                "log_name": "audit",
            }),
        ),
    ];
    for (key, value) in fields {
        event.insert(key.to_owned(), value);
    }
    if let (Some(Value::Number(activity)), Some(Value::Object(unmapped))) =
        (event.get("activity_id").cloned(), event.get_mut("unmapped"))
    {
        if let Some(Value::Object(enclave)) = unmapped.get_mut("enclave") {
            enclave.insert("index".to_owned(), json!(entry.index));
            enclave.insert("kind".to_owned(), json!(entry.kind_name()));
        }
        let activity = activity.as_u64().unwrap_or(99);
        event.insert("type_uid".to_owned(), json!(CLASS_UID * 100 + activity));
        event.insert(
            "type_name".to_owned(),
            json!(format!("API Activity: {}", activity_label(activity))),
        );
    }
    Value::Object(event)
}

fn request_event(r: &RequestEvent) -> Map<String, Value> {
    let success = r.status < 400;
    let severity = match r.status {
        s if s < 400 => 1,
        401 | 403 => 3,
        _ => 2,
    };
    let mut user = Map::new();
    if let Some(principal) = &r.principal {
        user.insert("name".to_owned(), json!(principal));
    }
    if let Some(tenant) = &r.tenant {
        user.insert("org".to_owned(), json!({ "uid": tenant }));
    }
    let mut response = Map::new();
    response.insert("code".to_owned(), json!(r.status));
    if let Some(error) = &r.error {
        response.insert("error".to_owned(), json!(error));
    }
    let mut enclave = Map::new();
    let optional = [
        ("auth_method", r.auth_method.as_ref().map(|v| json!(v))),
        ("backend", r.backend.as_ref().map(|v| json!(v))),
        ("content_label", r.content_label.as_ref().map(|v| json!(v))),
        ("model", r.model.as_ref().map(|v| json!(v))),
        ("output_hmac", r.output_hmac.as_ref().map(|v| json!(v))),
        ("phase", r.phase.map(|v| json!(v))),
        ("prompt_hmac", r.prompt_hmac.as_ref().map(|v| json!(v))),
        ("session_label", r.session_label.as_ref().map(|v| json!(v))),
        ("tokens", r.tokens.map(|v| json!(v))),
    ];
    for (key, value) in optional {
        if let Some(value) = value {
            enclave.insert(key.to_owned(), value);
        }
    }
    if !r.decisions.is_empty() {
        enclave.insert("decisions".to_owned(), json!(r.decisions));
    }
    let mut event = Map::new();
    event.insert("activity_id".to_owned(), json!(99));
    event.insert("activity_name".to_owned(), json!(r.route));
    event.insert("severity_id".to_owned(), json!(severity));
    event.insert("status_id".to_owned(), json!(if success { 1 } else { 2 }));
    event.insert(
        "status".to_owned(),
        json!(if success { "Success" } else { "Failure" }),
    );
    event.insert("status_code".to_owned(), json!(r.status.to_string()));
    event.insert("duration".to_owned(), json!(r.latency_ms));
    event.insert("actor".to_owned(), json!({ "user": user }));
    event.insert(
        "api".to_owned(),
        json!({
            "operation": r.route,
            "request": {"uid": r.request_id},
            "response": response,
        }),
    );
    event.insert("unmapped".to_owned(), json!({ "enclave": enclave }));
    event
}

fn admin_event(a: &AdminEvent) -> Map<String, Value> {
    let activity = admin_activity(&a.action);
    let mut user = Map::new();
    user.insert("name".to_owned(), json!(a.actor));
    if let Some(tenant) = &a.tenant {
        user.insert("org".to_owned(), json!({ "uid": tenant }));
    }
    let mut api = Map::new();
    api.insert("operation".to_owned(), json!(a.action));
    if let Some(request_id) = &a.request_id {
        api.insert("request".to_owned(), json!({ "uid": request_id }));
    }
    let mut enclave = Map::new();
    if !a.details.is_empty() {
        enclave.insert("details".to_owned(), json!(a.details));
    }
    let mut event = Map::new();
    event.insert("activity_id".to_owned(), json!(activity));
    let name = if activity == 99 {
        a.action.clone()
    } else {
        activity_label(activity).to_owned()
    };
    event.insert("activity_name".to_owned(), json!(name));
    event.insert("severity_id".to_owned(), json!(1));
    event.insert("status_id".to_owned(), json!(1));
    event.insert("status".to_owned(), json!("Success"));
    event.insert("actor".to_owned(), json!({ "user": user }));
    event.insert("api".to_owned(), Value::Object(api));
    if let Some(target) = &a.target {
        event.insert("resources".to_owned(), json!([{ "uid": target }]));
    }
    event.insert("unmapped".to_owned(), json!({ "enclave": enclave }));
    event
}

/// The OCSF activity of an admin action `noun.verb`, from its verb.
fn admin_activity(action: &str) -> u64 {
    let verb = action.rsplit('.').next().unwrap_or(action);
    match verb {
        "add" | "create" => 1,
        "update" | "change" | "reload" | "set" | "rotate" => 3,
        "revoke" | "remove" | "delete" | "shred" => 4,
        _ => 99,
    }
}

fn activity_label(activity: u64) -> &'static str {
    match activity {
        1 => "Create",
        2 => "Read",
        3 => "Update",
        4 => "Delete",
        _ => "Other",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::entry::tests::{sample_admin, sample_request};

    #[test]
    fn a_request_maps_to_api_activity() {
        let event = to_ocsf(&sample_request(5));
        assert_eq!(event["class_uid"], 6003);
        assert_eq!(event["category_uid"], 6);
        assert_eq!(event["activity_id"], 99);
        assert_eq!(event["type_uid"], 600_399);
        assert_eq!(event["time"], 1_795_512_600_130_u64);
        assert_eq!(event["actor"]["user"]["name"], "alice");
        assert_eq!(event["actor"]["user"]["org"]["uid"], "acme");
        assert_eq!(event["api"]["operation"], "chat.completions");
        assert_eq!(event["api"]["request"]["uid"], "req_00000005");
        assert_eq!(event["api"]["response"]["code"], 200);
        assert_eq!(event["status_id"], 1);
        assert_eq!(event["duration"], 812);
        assert_eq!(event["metadata"]["product"]["name"], "Enclave");
        assert_eq!(event["metadata"]["sequence"], 5);
        let enclave = &event["unmapped"]["enclave"];
        assert_eq!(enclave["session_label"], "SECRET//NOFORN");
        assert_eq!(enclave["decisions"][1]["code"], "violence");
        assert_eq!(enclave["tokens"]["output"], 80);
        assert_eq!(enclave["index"], 5);
    }

    #[test]
    fn a_denied_request_is_a_failure_of_medium_severity() {
        let mut entry = sample_request(1);
        let Event::Request(request) = &mut entry.event else {
            unreachable!()
        };
        request.status = 403;
        request.error = Some("classification_exceeds_clearance".into());
        let event = to_ocsf(&entry);
        assert_eq!(event["status_id"], 2);
        assert_eq!(event["status"], "Failure");
        assert_eq!(event["severity_id"], 3);
        assert_eq!(
            event["api"]["response"]["error"],
            "classification_exceeds_clearance"
        );
    }

    #[test]
    fn an_admin_action_maps_its_verb() {
        let event = to_ocsf(&sample_admin(2));
        assert_eq!(event["activity_id"], 4);
        assert_eq!(event["activity_name"], "Delete");
        assert_eq!(event["type_uid"], 600_304);
        assert_eq!(event["actor"]["user"]["name"], "cli:root");
        assert_eq!(event["api"]["operation"], "key.revoke");
        assert_eq!(event["resources"][0]["uid"], "key_7");
        assert_eq!(event["unmapped"]["enclave"]["kind"], "admin");
        assert_eq!(admin_activity("principal.add"), 1);
        assert_eq!(admin_activity("config.reload"), 3);
        assert_eq!(admin_activity("tenant.shred"), 4);
        assert_eq!(admin_activity("review.decide"), 99);
    }
}
