//! Policies, operator policies, runtime parameters and global parameters
//! (`/api/policies`, `/api/operator-policies`, `/api/parameters`,
//! `/api/global-parameters`). Each write is one engine operation
//! ([`warren_broker::Broker::put_policy`] and friends), which applies a policy to
//! existing queues and exchanges at once.

use std::collections::HashMap;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{json, Map, Value};
use warren_broker::access::AdminError;
use warren_broker::policy::{erlang_term, PolicyKind, PolicyRecord};

use crate::auth::Caller;
use crate::error::{ApiError, ApiResult};
use crate::{json, AppState};

type Q = Query<HashMap<String, String>>;

pub(crate) fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/policies", get(list_all_regular))
        .route("/api/policies/{vhost}", get(list_regular_in))
        .route(
            "/api/policies/{vhost}/{name}",
            get(get_regular).put(put_regular).delete(delete_regular),
        )
        .route("/api/operator-policies", get(list_all_operator))
        .route("/api/operator-policies/{vhost}", get(list_operator_in))
        .route(
            "/api/operator-policies/{vhost}/{name}",
            get(get_operator).put(put_operator).delete(delete_operator),
        )
        .route("/api/parameters", get(list_parameters))
        .route("/api/parameters/{component}", get(list_component))
        .route(
            "/api/parameters/{component}/{vhost}",
            get(list_component_in),
        )
        .route(
            "/api/parameters/{component}/{vhost}/{name}",
            get(get_parameter)
                .put(put_parameter)
                .delete(delete_parameter),
        )
        .route("/api/global-parameters", get(list_global))
        .route(
            "/api/global-parameters/{name}",
            get(get_global).put(put_global).delete(delete_global),
        )
}

fn policy_json(p: &PolicyRecord) -> Value {
    json!({
        "vhost": p.vhost,
        "name": p.name,
        "pattern": p.pattern,
        "apply-to": p.apply_to,
        "definition": p.definition,
        "priority": p.priority,
    })
}

/// Regular policies need the policymaker tag (and access to the vhost unless the caller
/// is an administrator); operator policies need administrator, as in RabbitMQ.
fn authorize(caller: &Caller, kind: PolicyKind, vhost: Option<&str>) -> ApiResult<()> {
    match kind {
        PolicyKind::Operator => caller.require_admin(),
        PolicyKind::Regular => {
            if !caller.is_policymaker() {
                return Err(ApiError::not_authorised("Not policymaker user"));
            }
            match vhost {
                Some(v) if !caller.is_admin() && caller.grant(v).is_none() => {
                    Err(ApiError::not_authorised("Access refused."))
                }
                _ => Ok(()),
            }
        }
    }
}

fn list(
    state: &AppState,
    caller: &Caller,
    kind: PolicyKind,
    vhost: Option<&str>,
    q: &HashMap<String, String>,
) -> ApiResult<Json<Value>> {
    authorize(caller, kind, vhost)?;
    if let Some(v) = vhost {
        if state.admin.broker().vhost(v).is_none() {
            return Err(ApiError::vhost_not_found());
        }
    }
    let items = state
        .admin
        .access()
        .policies(kind, vhost)
        .iter()
        .filter(|p| caller.is_admin() || caller.grant(&p.vhost).is_some())
        .map(policy_json)
        .collect();
    Ok(Json(json::list(items, q)?))
}

fn get_one(
    state: &AppState,
    caller: &Caller,
    kind: PolicyKind,
    vh: &str,
    name: &str,
) -> ApiResult<Json<Value>> {
    authorize(caller, kind, Some(vh))?;
    state
        .admin
        .access()
        .policies(kind, Some(vh))
        .iter()
        .find(|p| p.name == name)
        .map(|p| Json(policy_json(p)))
        .ok_or_else(ApiError::not_found)
}

/// RabbitMQ escapes `<` and `>` in a regular policy's validation message (the Erlang
/// binaries it prints), not in an operator policy's.
fn validation(kind: PolicyKind, why: &str) -> ApiError {
    let text = format!("Validation failed\n\n{why}\n");
    ApiError::bad_request(match kind {
        PolicyKind::Regular => text.replace('<', "&lt;").replace('>', "&gt;"),
        PolicyKind::Operator => text,
    })
}

fn record_from_body(
    kind: PolicyKind,
    vhost: &str,
    name: &str,
    body: &[u8],
) -> ApiResult<PolicyRecord> {
    let b = json::body(body)?;
    let pattern = match b.get("pattern") {
        Some(Value::String(s)) => s.clone(),
        Some(other) => {
            return Err(validation(
                kind,
                &format!(
                    "pattern should be a string, actually was {}",
                    erlang_term(other)
                ),
            ))
        }
        None => return Err(ApiError::bad_request("[{key_missing,pattern}]")),
    };
    let definition = match b.get("definition") {
        Some(Value::Object(m)) => m.clone(),
        Some(other) => {
            return Err(validation(
                kind,
                &format!(
                    "definition should be an object, actually was {}",
                    erlang_term(other)
                ),
            ))
        }
        None => return Err(ApiError::bad_request("[{key_missing,definition}]")),
    };
    let priority = match b.get("priority") {
        None | Some(Value::Null) => 0,
        Some(Value::Number(n)) if n.as_i64().is_some() => n.as_i64().unwrap_or(0),
        Some(other) => {
            return Err(validation(
                kind,
                &format!(
                    "priority should be a number, actually was {}",
                    erlang_term(other)
                ),
            ))
        }
    };
    let apply_to = match b.get("apply-to") {
        None | Some(Value::Null) => "all".to_string(),
        Some(Value::String(s)) => s.clone(),
        Some(other) => erlang_term(other),
    };
    Ok(PolicyRecord {
        vhost: vhost.to_string(),
        name: name.to_string(),
        pattern,
        apply_to,
        priority,
        definition,
    })
}

fn put(
    state: &AppState,
    caller: &Caller,
    kind: PolicyKind,
    vh: &str,
    name: &str,
    body: &[u8],
) -> ApiResult<StatusCode> {
    authorize(caller, kind, Some(vh))?;
    if state.admin.broker().vhost(vh).is_none() {
        return Err(ApiError::vhost_not_found());
    }
    let record = record_from_body(kind, vh, name, body)?;
    match state.admin.broker().put_policy(kind, record) {
        Ok(true) => Ok(StatusCode::NO_CONTENT),
        Ok(false) => Ok(StatusCode::CREATED),
        Err(AdminError::Validation(why)) => Err(validation(kind, &why)),
        Err(AdminError::NoSuchVHost(_)) => Err(ApiError::vhost_not_found()),
        Err(e) => Err(ApiError::admin(e)),
    }
}

fn delete(
    state: &AppState,
    caller: &Caller,
    kind: PolicyKind,
    vh: &str,
    name: &str,
) -> ApiResult<StatusCode> {
    authorize(caller, kind, Some(vh))?;
    match state.admin.broker().delete_policy(kind, vh, name) {
        Ok(()) => Ok(StatusCode::NO_CONTENT),
        Err(AdminError::NotFound(_)) => Err(ApiError::not_found()),
        Err(e) => Err(ApiError::admin(e)),
    }
}

async fn list_all_regular(
    State(s): State<AppState>,
    c: Caller,
    Query(q): Q,
) -> ApiResult<Json<Value>> {
    list(&s, &c, PolicyKind::Regular, None, &q)
}
async fn list_regular_in(
    State(s): State<AppState>,
    c: Caller,
    Path(vh): Path<String>,
    Query(q): Q,
) -> ApiResult<Json<Value>> {
    list(&s, &c, PolicyKind::Regular, Some(&vh), &q)
}
async fn get_regular(
    State(s): State<AppState>,
    c: Caller,
    Path((vh, name)): Path<(String, String)>,
) -> ApiResult<Json<Value>> {
    get_one(&s, &c, PolicyKind::Regular, &vh, &name)
}
async fn put_regular(
    State(s): State<AppState>,
    c: Caller,
    Path((vh, name)): Path<(String, String)>,
    body: Bytes,
) -> ApiResult<StatusCode> {
    put(&s, &c, PolicyKind::Regular, &vh, &name, &body)
}
async fn delete_regular(
    State(s): State<AppState>,
    c: Caller,
    Path((vh, name)): Path<(String, String)>,
) -> ApiResult<StatusCode> {
    delete(&s, &c, PolicyKind::Regular, &vh, &name)
}
async fn list_all_operator(
    State(s): State<AppState>,
    c: Caller,
    Query(q): Q,
) -> ApiResult<Json<Value>> {
    list(&s, &c, PolicyKind::Operator, None, &q)
}
async fn list_operator_in(
    State(s): State<AppState>,
    c: Caller,
    Path(vh): Path<String>,
    Query(q): Q,
) -> ApiResult<Json<Value>> {
    list(&s, &c, PolicyKind::Operator, Some(&vh), &q)
}
async fn get_operator(
    State(s): State<AppState>,
    c: Caller,
    Path((vh, name)): Path<(String, String)>,
) -> ApiResult<Json<Value>> {
    get_one(&s, &c, PolicyKind::Operator, &vh, &name)
}
async fn put_operator(
    State(s): State<AppState>,
    c: Caller,
    Path((vh, name)): Path<(String, String)>,
    body: Bytes,
) -> ApiResult<StatusCode> {
    put(&s, &c, PolicyKind::Operator, &vh, &name, &body)
}
async fn delete_operator(
    State(s): State<AppState>,
    c: Caller,
    Path((vh, name)): Path<(String, String)>,
) -> ApiResult<StatusCode> {
    delete(&s, &c, PolicyKind::Operator, &vh, &name)
}

// ----- runtime parameters -----

/// The parameters RabbitMQ lists under `/api/parameters`: operator policies (component
/// `operator_policy`) and vhost limits (`vhost-limits`). Components of plugins Warren
/// does not have (federation, shovel) hold nothing.
fn parameters(state: &AppState, caller: &Caller) -> Vec<Value> {
    let access = state.admin.access();
    let mut out: Vec<Value> = access
        .policies(PolicyKind::Operator, None)
        .iter()
        .filter(|p| caller.is_admin() || caller.grant(&p.vhost).is_some())
        .map(|p| {
            json!({
                "value": {"pattern": p.pattern, "definition": p.definition,
                          "priority": p.priority, "apply-to": p.apply_to},
                "vhost": p.vhost, "component": "operator_policy", "name": p.name,
            })
        })
        .collect();
    for v in access.vhosts() {
        if v.limits == Default::default() || !(caller.is_admin() || caller.grant(&v.name).is_some())
        {
            continue;
        }
        let mut value = Map::new();
        if let Some(n) = v.limits.max_connections {
            value.insert("max-connections".into(), json!(n));
        }
        if let Some(n) = v.limits.max_queues {
            value.insert("max-queues".into(), json!(n));
        }
        out.push(
            json!({"value": value, "vhost": v.name, "component": "vhost-limits", "name": "limits"}),
        );
    }
    out
}

fn policymaker(caller: &Caller) -> ApiResult<()> {
    if caller.is_policymaker() {
        Ok(())
    } else {
        Err(ApiError::not_authorised("Not policymaker user"))
    }
}

async fn list_parameters(
    State(s): State<AppState>,
    c: Caller,
    Query(q): Q,
) -> ApiResult<Json<Value>> {
    policymaker(&c)?;
    Ok(Json(json::list(parameters(&s, &c), &q)?))
}

async fn list_component(
    State(s): State<AppState>,
    c: Caller,
    Path(component): Path<String>,
    Query(q): Q,
) -> ApiResult<Json<Value>> {
    policymaker(&c)?;
    let items = parameters(&s, &c)
        .into_iter()
        .filter(|p| p["component"] == component.as_str())
        .collect();
    Ok(Json(json::list(items, &q)?))
}

async fn list_component_in(
    State(s): State<AppState>,
    c: Caller,
    Path((component, vh)): Path<(String, String)>,
    Query(q): Q,
) -> ApiResult<Json<Value>> {
    policymaker(&c)?;
    if s.admin.broker().vhost(&vh).is_none() {
        return Err(ApiError::vhost_not_found());
    }
    let items = parameters(&s, &c)
        .into_iter()
        .filter(|p| p["component"] == component.as_str() && p["vhost"] == vh.as_str())
        .collect();
    Ok(Json(json::list(items, &q)?))
}

async fn get_parameter(
    State(s): State<AppState>,
    c: Caller,
    Path((component, vh, name)): Path<(String, String, String)>,
) -> ApiResult<Json<Value>> {
    policymaker(&c)?;
    parameters(&s, &c)
        .into_iter()
        .find(|p| {
            p["component"] == component.as_str()
                && p["vhost"] == vh.as_str()
                && p["name"] == name.as_str()
        })
        .map(Json)
        .ok_or_else(ApiError::not_found)
}

/// Writing a parameter of a component Warren does not implement (federation, shovel,
/// ...) is refused as RabbitMQ refuses a component whose plugin is not enabled.
/// Operator policies and vhost limits have their own endpoints.
async fn put_parameter(
    State(s): State<AppState>,
    c: Caller,
    Path((component, vh, _name)): Path<(String, String, String)>,
) -> ApiResult<StatusCode> {
    policymaker(&c)?;
    if s.admin.broker().vhost(&vh).is_none() {
        return Err(ApiError::vhost_not_found());
    }
    Err(ApiError::bad_request(format!(
        "Validation failed\n\ncomponent {component} not found\n"
    )))
}

async fn delete_parameter(
    State(s): State<AppState>,
    c: Caller,
    Path((component, vh, name)): Path<(String, String, String)>,
) -> ApiResult<StatusCode> {
    policymaker(&c)?;
    match component.as_str() {
        "operator_policy" => delete(&s, &c, PolicyKind::Operator, &vh, &name),
        _ => Err(ApiError::not_found()),
    }
}

// ----- global parameters -----

async fn list_global(State(s): State<AppState>, c: Caller, Query(q): Q) -> ApiResult<Json<Value>> {
    c.require_admin()?;
    let items = s
        .admin
        .access()
        .global_parameters()
        .into_iter()
        .map(|(name, value)| json!({"name": name, "value": value}))
        .collect();
    Ok(Json(json::list(items, &q)?))
}

async fn get_global(
    State(s): State<AppState>,
    c: Caller,
    Path(name): Path<String>,
) -> ApiResult<Json<Value>> {
    c.require_admin()?;
    s.admin
        .access()
        .global_parameters()
        .into_iter()
        .find(|(n, _)| *n == name)
        .map(|(name, value)| Json(json!({"value": value, "name": name})))
        .ok_or_else(ApiError::not_found)
}

async fn put_global(
    State(s): State<AppState>,
    c: Caller,
    Path(name): Path<String>,
    body: Bytes,
) -> ApiResult<StatusCode> {
    c.require_admin()?;
    let b = json::body(&body)?;
    let Some(value) = b.get("value") else {
        return Err(ApiError::bad_request("[{key_missing,value}]"));
    };
    match s.admin.access().put_global_parameter(&name, value) {
        Ok(true) => Ok(StatusCode::NO_CONTENT),
        Ok(false) => Ok(StatusCode::CREATED),
        Err(e) => Err(ApiError::admin(e)),
    }
}

async fn delete_global(
    State(s): State<AppState>,
    c: Caller,
    Path(name): Path<String>,
) -> ApiResult<StatusCode> {
    c.require_admin()?;
    match s.admin.access().delete_global_parameter(&name) {
        Ok(()) => Ok(StatusCode::NO_CONTENT),
        Err(AdminError::NotFound(_)) => Err(ApiError::not_found()),
        Err(e) => Err(ApiError::admin(e)),
    }
}
