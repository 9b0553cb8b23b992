//! The audit log's receipts API: the latest signed checkpoint, inclusion and consistency
//! proofs, and the entries themselves for auditors.
//!
//! | route | who | answers |
//! | --- | --- | --- |
//! | `GET /v1/audit/checkpoint` | any authenticated caller | the latest signed checkpoint note (`text/plain`) |
//! | `GET /v1/audit/proof/inclusion?index=N[&size=M]` | the entry's own principal (same tenant and principal), or an `auditor` | [`inclusion_json`] |
//! | `GET /v1/audit/proof/consistency?from=A[&to=B]` | any authenticated caller | `{"from", "to", "from_root", "to_root", "hashes"}` |
//! | `GET /v1/audit/entries?from=N[&limit=L]` | `auditor` only | `{"object": "list", "size", "data": [{"index", "entry"}]}` |
//!
//! Hashes are standard base64; an entry is its exact canonical bytes as a JSON string. `size`
//! and `to` default to the latest checkpoint's size, so a proof verifies against a signed root.
//! An inclusion proof of someone else's entry is 404 `not_found`, exactly as for an index that
//! does not exist. Proofs come from the in-memory tree, extended first with entries other
//! replicas appended when the size asked for is beyond it.

use bytes::Bytes;
use enclave_audit::{AuditEntry, Event, ProofError, Tree, hash_leaf};
use enclave_policy::Role;
use http::{Request, StatusCode};
use serde_json::{Value, json};

use crate::ctx::RequestCtx;
use crate::error::ApiError;
use crate::identity::PeerCert;
use crate::route::Route;
use crate::stage;

/// Most entries one `GET /v1/audit/entries` returns.
pub const MAX_ENTRIES_PER_PAGE: u64 = 1000;

/// Appends the audit writer's metrics to `out` in the text exposition format: commits and the
/// entries in them (their ratio is the group commit's batch size), failed commits, time spent
/// committing, the log's size, and requests whose entries are announced but not yet queued.
pub(crate) fn render_metrics(log: &enclave_store::AuditLog, out: &mut String) {
    use std::fmt::Write as _;
    let st = log.stats();
    let _ = writeln!(
        out,
        "# HELP enclave_audit_commits_total Audit log transactions committed (each one disk flush).\n\
         # TYPE enclave_audit_commits_total counter\n\
         enclave_audit_commits_total {}\n\
         # HELP enclave_audit_committed_entries_total Audit entries in those transactions.\n\
         # TYPE enclave_audit_committed_entries_total counter\n\
         enclave_audit_committed_entries_total {}\n\
         # HELP enclave_audit_failed_commits_total Audit log transactions that failed (their requests were refused).\n\
         # TYPE enclave_audit_failed_commits_total counter\n\
         enclave_audit_failed_commits_total {}\n\
         # HELP enclave_audit_commit_seconds_total Time the audit writer spent committing.\n\
         # TYPE enclave_audit_commit_seconds_total counter\n\
         enclave_audit_commit_seconds_total {:.6}\n\
         # HELP enclave_audit_entries Entries in the audit log's tree.\n\
         # TYPE enclave_audit_entries gauge\n\
         enclave_audit_entries {}\n\
         # HELP enclave_audit_expected_entries Requests past admission whose audit entries are not yet queued.\n\
         # TYPE enclave_audit_expected_entries gauge\n\
         enclave_audit_expected_entries {}",
        st.commits,
        st.entries,
        st.failed_commits,
        st.commit_time.as_secs_f64(),
        log.tree().len(),
        st.expected,
    );
}

/// Serves an audit route: authenticates, opens the session, and answers (content type, body).
///
/// # Errors
///
/// The authenticate and label stages' refusals; 400 `invalid_request` for a bad query; 403
/// `permission_denied` for entries without the `auditor` role; 404 `not_found` for an entry
/// that is not the caller's or a checkpoint not yet made; 500 when the store fails.
pub(crate) async fn run<B>(
    ctx: &mut RequestCtx,
    req: &Request<B>,
    peer: &PeerCert,
) -> Result<(&'static str, Bytes), ApiError> {
    stage::authenticate::run(ctx, req.headers(), peer).await?;
    stage::label::session(ctx, req.headers())?;
    let query = Query::parse(req.uri().query().unwrap_or(""))?;
    match ctx.route {
        Route::AuditCheckpoint => checkpoint(ctx).await,
        Route::AuditInclusion => inclusion(ctx, &query).await,
        Route::AuditConsistency => consistency(ctx, &query).await,
        Route::AuditEntries => entries(ctx, &query).await,
        _ => {
            tracing::error!("an audit handler was called for another route");
            Err(ApiError::internal())
        }
    }
}

/// The inclusion proof of entry `index` (bytes `entry`) in the tree of the first `size` leaves
/// of `tree`, as the API and `enclave audit prove` write it:
/// `{"index", "size", "entry", "leaf_hash", "hashes", "root", "checkpoint"}` (`checkpoint`: the
/// signed note of that size, when one is given).
///
/// # Errors
///
/// [`ProofError`] when `size` is beyond the tree or `index` not below `size`.
pub fn inclusion_json(
    tree: &Tree,
    index: u64,
    size: u64,
    entry: &str,
    checkpoint: Option<&str>,
) -> Result<Value, ProofError> {
    let hashes = tree.inclusion_proof(index, size)?;
    let root = tree.root_at(size)?;
    Ok(json!({
        "index": index,
        "size": size,
        "entry": entry,
        "leaf_hash": hash_leaf(entry.as_bytes()).to_base64(),
        "hashes": hashes.iter().map(|h| h.to_base64()).collect::<Vec<_>>(),
        "root": root.to_base64(),
        "checkpoint": checkpoint,
    }))
}

async fn checkpoint(ctx: &RequestCtx) -> Result<(&'static str, Bytes), ApiError> {
    let latest = ctx
        .app
        .store
        .latest_audit_checkpoint()
        .await
        .map_err(store_failed)?
        .ok_or_else(no_checkpoint)?;
    Ok(("text/plain; charset=utf-8", Bytes::from(latest.note)))
}

async fn inclusion(ctx: &RequestCtx, query: &Query) -> Result<(&'static str, Bytes), ApiError> {
    let index = query.required("index")?;
    let not_yours = || {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!(
                "No audit entry {index} of yours exists; the X-Enclave-Audit-Index header of each response names your entries."
            ),
        )
    };
    let store = &ctx.app.store;
    let entry = store
        .audit_entry(index)
        .await
        .map_err(store_failed)?
        .ok_or_else(not_yours)?;
    let parsed = AuditEntry::from_canonical_bytes(entry.as_bytes()).map_err(|e| {
        tracing::error!(index, error = %e, "a stored audit entry does not parse: run `enclave audit verify`");
        ApiError::internal()
    })?;
    // SECURITY: a principal sees proofs (and so the entries) of its own requests only; anything
    // else is indistinguishable from an index that does not exist.
    if !may_read(ctx, &parsed) {
        return Err(not_yours());
    }
    let size = match query.optional("size")? {
        Some(size) => size,
        None => {
            store
                .latest_audit_checkpoint()
                .await
                .map_err(store_failed)?
                .ok_or_else(no_checkpoint)?
                .size
        }
    };
    if index >= size {
        return Err(ApiError::bad_request(
            "invalid_request",
            format!("Entry {index} is not in the log's first {size} entries: ask for a larger size, or wait for the next checkpoint."),
        )
        .param("size"));
    }
    let tree = covering(ctx, size).await?;
    let checkpoint = store
        .audit_checkpoint_of_size(size)
        .await
        .map_err(store_failed)?;
    let answer = tree.with(|t| {
        if t.leaf(index) != Some(hash_leaf(entry.as_bytes())) {
            tracing::error!(
                index,
                "a stored audit entry differs from the one in the tree: run `enclave audit verify`"
            );
            return Err(ApiError::internal());
        }
        inclusion_json(
            t,
            index,
            size,
            &entry,
            checkpoint.as_ref().map(|c| c.note.as_str()),
        )
        .map_err(|e| proof_refused(&e))
    })?;
    Ok(("application/json", json_bytes(&answer)))
}

async fn consistency(ctx: &RequestCtx, query: &Query) -> Result<(&'static str, Bytes), ApiError> {
    let from = query.required("from")?;
    let to = match query.optional("to")? {
        Some(to) => to,
        None => {
            ctx.app
                .store
                .latest_audit_checkpoint()
                .await
                .map_err(store_failed)?
                .ok_or_else(no_checkpoint)?
                .size
        }
    };
    if from == 0 || from > to {
        return Err(ApiError::bad_request(
            "invalid_request",
            format!("A consistency proof goes from a size of at least 1 to a size at least as large; got from={from}, to={to}."),
        )
        .param("from"));
    }
    let tree = covering(ctx, to).await?;
    let answer = tree
        .with(|t| -> Result<Value, ProofError> {
            Ok(json!({
                "from": from,
                "to": to,
                "from_root": t.root_at(from)?.to_base64(),
                "to_root": t.root_at(to)?.to_base64(),
                "hashes": t.consistency_proof(from, to)?.iter().map(|h| h.to_base64()).collect::<Vec<_>>(),
            }))
        })
        .map_err(|e| proof_refused(&e))?;
    Ok(("application/json", json_bytes(&answer)))
}

async fn entries(ctx: &RequestCtx, query: &Query) -> Result<(&'static str, Bytes), ApiError> {
    // SECURITY: entries name every tenant's principals and labels; only auditors read them.
    if ctx.caller().map(|c| c.principal.role) != Some(Role::Auditor) {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "permission_denied",
            "Reading audit entries needs the `auditor` role; fetch proofs of your own entries from /v1/audit/proof/inclusion.",
        ));
    }
    let from = query.optional("from")?.unwrap_or(0);
    let limit = query.optional("limit")?.unwrap_or(100);
    if !(1..=MAX_ENTRIES_PER_PAGE).contains(&limit) {
        return Err(ApiError::bad_request(
            "invalid_request",
            format!("limit must be from 1 to {MAX_ENTRIES_PER_PAGE}."),
        )
        .param("limit"));
    }
    let store = &ctx.app.store;
    let size = store.audit_size().await.map_err(store_failed)?;
    let rows = store.audit_rows(from, limit).await.map_err(store_failed)?;
    let data: Vec<Value> = rows
        .iter()
        .map(|r| json!({"index": r.index, "entry": r.entry}))
        .collect();
    let answer = json!({"object": "list", "size": size, "data": data});
    Ok(("application/json", json_bytes(&answer)))
}

/// Whether the caller may read `entry`: an auditor any, a principal its own request entries.
fn may_read(ctx: &RequestCtx, entry: &AuditEntry) -> bool {
    let Some(caller) = ctx.caller() else {
        return false;
    };
    if caller.principal.role == Role::Auditor {
        return true;
    }
    match &entry.event {
        Event::Request(r) => {
            r.tenant.as_deref() == Some(caller.principal.tenant.as_str())
                && r.principal.as_deref() == Some(caller.principal.id.as_str())
        }
        Event::Admin(_) => false,
    }
}

/// The tree, holding at least `size` leaves (read from the database if other replicas appended
/// them).
async fn covering(ctx: &RequestCtx, size: u64) -> Result<&enclave_store::LeafTree, ApiError> {
    let log = &ctx.app.audit;
    if log.tree().len() < size {
        log.sync().await.map_err(store_failed)?;
    }
    let len = log.tree().len();
    if len < size {
        return Err(ApiError::bad_request(
            "invalid_request",
            format!("The log has {len} entries; ask for a size up to that."),
        )
        .param("size"));
    }
    Ok(log.tree())
}

fn proof_refused(e: &ProofError) -> ApiError {
    ApiError::bad_request("invalid_request", format!("No such proof: {e}."))
}

fn no_checkpoint() -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "not_found",
        "No audit checkpoint has been signed yet; one is made every [audit] checkpoint_interval_secs while the log grows. Retry later, or give an explicit size.",
    )
}

fn store_failed(e: enclave_store::StoreError) -> ApiError {
    tracing::error!(error = %e, "reading the audit log");
    ApiError::internal()
}

fn json_bytes(v: &Value) -> Bytes {
    Bytes::from(serde_json::to_vec(v).unwrap_or_default())
}

/// The query string's numeric parameters. A parameter given twice is refused: two readers of
/// the URL could pick different ones.
struct Query {
    pairs: Vec<(String, String)>,
}

impl Query {
    fn parse(query: &str) -> Result<Query, ApiError> {
        let mut pairs: Vec<(String, String)> = Vec::new();
        for part in query.split('&').filter(|p| !p.is_empty()) {
            let (k, v) = part.split_once('=').unwrap_or((part, ""));
            if pairs.iter().any(|(seen, _)| seen == k) {
                return Err(ApiError::bad_request(
                    "invalid_request",
                    "A query parameter is given twice; give each once.",
                )
                .param(k.chars().take(64).collect::<String>()));
            }
            pairs.push((k.to_owned(), v.to_owned()));
        }
        Ok(Query { pairs })
    }

    fn optional(&self, name: &'static str) -> Result<Option<u64>, ApiError> {
        let Some((_, v)) = self.pairs.iter().find(|(k, _)| k == name) else {
            return Ok(None);
        };
        if v.is_empty() || v.len() > 20 || !v.bytes().all(|b| b.is_ascii_digit()) {
            return Err(ApiError::bad_request(
                "invalid_request",
                format!("{name} must be a non-negative integer."),
            )
            .param(name));
        }
        v.parse().map(Some).map_err(|_| {
            ApiError::bad_request("invalid_request", format!("{name} is too large.")).param(name)
        })
    }

    fn required(&self, name: &'static str) -> Result<u64, ApiError> {
        self.optional(name)?.ok_or_else(|| {
            ApiError::bad_request("invalid_request", format!("The query needs {name}=N."))
                .param(name)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queries_are_numbers_given_once() {
        let q = Query::parse("index=5&size=10&x").unwrap();
        assert_eq!(q.required("index").unwrap(), 5);
        assert_eq!(q.optional("size").unwrap(), Some(10));
        assert_eq!(q.optional("limit").unwrap(), None);
        assert!(q.required("limit").is_err());
        assert!(Query::parse("index=1&index=2").is_err());
        for bad in [
            "index=-1",
            "index=1e3",
            "index=",
            "index=99999999999999999999",
        ] {
            assert!(
                Query::parse(bad).unwrap().required("index").is_err(),
                "{bad}"
            );
        }
    }

    #[test]
    fn inclusion_json_verifies_against_its_root() {
        let entries: Vec<String> = (0..5).map(|i| format!("{{\"e\":{i}}}")).collect();
        let tree = Tree::from_leaves(entries.iter().map(|e| hash_leaf(e.as_bytes())));
        let v = inclusion_json(&tree, 3, 5, &entries[3], None).unwrap();
        let hashes: Vec<enclave_audit::Hash> = v["hashes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|h| enclave_audit::Hash::from_base64(h.as_str().unwrap()).unwrap())
            .collect();
        let root = enclave_audit::Hash::from_base64(v["root"].as_str().unwrap()).unwrap();
        let leaf = hash_leaf(v["entry"].as_str().unwrap().as_bytes());
        enclave_audit::verify_inclusion(3, 5, &leaf, &hashes, &root).unwrap();
        assert!(inclusion_json(&tree, 5, 5, &entries[0], None).is_err());
    }
}
