//! The routes Enclave serves, parsed once from a request's method and path.

use http::Method;

/// What a request asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Route {
    /// `GET /v1/audit/proof/consistency`: a consistency proof between two log sizes.
    AuditConsistency,
    /// `GET /v1/audit/checkpoint`: the latest signed checkpoint.
    AuditCheckpoint,
    /// `GET /v1/audit/entries`: entries, for auditors.
    AuditEntries,
    /// `GET /v1/audit/proof/inclusion`: an inclusion proof of one of the caller's entries.
    AuditInclusion,
    /// `POST /v1/chat/completions`.
    ChatCompletions,
    /// `POST /v1/embeddings`.
    Embeddings,
    /// `GET /healthz`: the process is up.
    Health,
    /// `GET /metrics`: Prometheus metrics.
    Metrics,
    /// `GET /v1/models`: the models the caller may use at its session label.
    Models,
    /// `POST /v1/moderations`: the safety screen's verdict on texts.
    Moderations,
    // --- long-term memory (issue 14) ---
    /// `POST /v1/memories`: store a memory.
    Memories,
    /// `GET` or `DELETE /v1/memories/{id}`: one memory (the id is read from the path again).
    Memory,
    /// `POST /v1/memories/search`: search the caller's memories.
    MemorySearch,
    /// `GET /readyz`: the database is reachable.
    Ready,
    // --- Stored state (Responses and Conversations) ---
    /// `POST /v1/responses`: a turn, stored unless `store` is false.
    CreateResponse,
    /// `GET /v1/responses/{id}`.
    GetResponse(PathId),
    /// `DELETE /v1/responses/{id}`.
    DeleteResponse(PathId),
    /// `GET /v1/responses/{id}/input_items`: the items a stored response was generated from.
    ListInputItems(PathId),
    /// `POST /v1/conversations`.
    CreateConversation,
    /// `GET /v1/conversations/{id}`.
    GetConversation(PathId),
    /// `POST /v1/conversations/{id}`: replace its metadata.
    UpdateConversation(PathId),
    /// `DELETE /v1/conversations/{id}`.
    DeleteConversation(PathId),
    /// `GET /v1/conversations/{id}/items`.
    ListItems(PathId),
    /// `POST /v1/conversations/{id}/items`.
    AddItems(PathId),
    /// `GET /v1/conversations/{id}/items/{item_id}`.
    GetItem(PathId, PathId),
    /// `DELETE /v1/conversations/{id}/items/{item_id}`.
    DeleteItem(PathId, PathId),
    // --- end of stored state ---
    /// A known path with the wrong method; the methods it accepts.
    MethodNotAllowed(&'static str),
    /// No such path.
    NotFound,
}

/// Where an id sits in the request path (byte offsets), so that routes stay `Copy` and parsing
/// a path allocates nothing. Read it back with [`PathId::of`] on the same path.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PathId {
    start: u16,
    end: u16,
}

/// The longest id segment a path may carry; longer ones are no route (Enclave's ids are far
/// shorter).
pub const MAX_ID_BYTES: usize = 128;

impl PathId {
    /// The id in `path` (the path this was parsed from).
    pub fn of(self, path: &str) -> &str {
        path.get(usize::from(self.start)..usize::from(self.end))
            .unwrap_or_default()
    }

    /// The segment of `path` from byte `start` up to the next `/` or the end, if it is a
    /// plausible id (1 to [`MAX_ID_BYTES`] bytes of ASCII letters, digits, `_` and `-`), and
    /// the rest of the path after it.
    fn segment(path: &str, start: usize) -> Option<(PathId, &str)> {
        let rest = path.get(start..)?;
        let len = rest.find('/').unwrap_or(rest.len());
        let id = rest.get(..len)?;
        if id.is_empty()
            || id.len() > MAX_ID_BYTES
            || !id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        {
            return None;
        }
        let pid = PathId {
            start: u16::try_from(start).ok()?,
            end: u16::try_from(start + len).ok()?,
        };
        Some((pid, rest.get(len..).unwrap_or_default()))
    }
}

/// The stored-state routes: `None` when `path` is not one of theirs, else the route for
/// `method` (or which methods the path accepts).
fn state_route(method: &Method, path: &str) -> Option<Route> {
    const RESPONSES: &str = "/v1/responses/";
    const CONVERSATIONS: &str = "/v1/conversations/";
    let get_or_delete = |get: Route, delete: Route| match *method {
        Method::GET | Method::HEAD => get,
        Method::DELETE => delete,
        _ => Route::MethodNotAllowed("GET, DELETE"),
    };
    if path.starts_with(RESPONSES) {
        let (id, rest) = PathId::segment(path, RESPONSES.len())?;
        return match rest {
            "" => Some(get_or_delete(
                Route::GetResponse(id),
                Route::DeleteResponse(id),
            )),
            "/input_items" => Some(match *method {
                Method::GET | Method::HEAD => Route::ListInputItems(id),
                _ => Route::MethodNotAllowed("GET"),
            }),
            _ => None,
        };
    }
    if path.starts_with(CONVERSATIONS) {
        let (id, rest) = PathId::segment(path, CONVERSATIONS.len())?;
        if rest.is_empty() {
            return Some(match *method {
                Method::GET | Method::HEAD => Route::GetConversation(id),
                Method::POST => Route::UpdateConversation(id),
                Method::DELETE => Route::DeleteConversation(id),
                _ => Route::MethodNotAllowed("GET, POST, DELETE"),
            });
        }
        let items = rest.strip_prefix("/items")?;
        if items.is_empty() {
            return Some(match *method {
                Method::GET | Method::HEAD => Route::ListItems(id),
                Method::POST => Route::AddItems(id),
                _ => Route::MethodNotAllowed("GET, POST"),
            });
        }
        let start = path.len() - items.len() + 1;
        if !items.starts_with('/') {
            return None;
        }
        let (item, rest) = PathId::segment(path, start)?;
        return rest
            .is_empty()
            .then(|| get_or_delete(Route::GetItem(id, item), Route::DeleteItem(id, item)));
    }
    None
}

impl Route {
    /// The route of `method` and `path` (the path without its query).
    pub fn parse(method: &Method, path: &str) -> Route {
        let (route, allowed) = match path {
            "/v1/responses" => (Route::CreateResponse, Method::POST),
            "/v1/conversations" => (Route::CreateConversation, Method::POST),
            "/v1/chat/completions" => (Route::ChatCompletions, Method::POST),
            "/v1/embeddings" => (Route::Embeddings, Method::POST),
            "/healthz" => (Route::Health, Method::GET),
            "/metrics" => (Route::Metrics, Method::GET),
            "/v1/models" => (Route::Models, Method::GET),
            "/v1/moderations" => (Route::Moderations, Method::POST),
            "/readyz" => (Route::Ready, Method::GET),
            "/v1/audit/checkpoint" => (Route::AuditCheckpoint, Method::GET),
            "/v1/audit/entries" => (Route::AuditEntries, Method::GET),
            "/v1/audit/proof/consistency" => (Route::AuditConsistency, Method::GET),
            "/v1/audit/proof/inclusion" => (Route::AuditInclusion, Method::GET),
            "/v1/memories" => (Route::Memories, Method::POST),
            "/v1/memories/search" => (Route::MemorySearch, Method::POST),
            _ => {
                return state_route(method, path)
                    .unwrap_or_else(|| Route::parse_memory(method, path));
            }
        };
        if *method == allowed || (allowed == Method::GET && *method == Method::HEAD) {
            route
        } else {
            Route::MethodNotAllowed(if allowed == Method::POST {
                "POST"
            } else {
                "GET"
            })
        }
    }

    /// `/v1/memories/{id}`: one non-empty path segment of at most 128 bytes.
    fn parse_memory(method: &Method, path: &str) -> Route {
        let Some(id) = path.strip_prefix("/v1/memories/") else {
            return Route::NotFound;
        };
        if id.is_empty() || id.len() > 128 || id.contains('/') {
            return Route::NotFound;
        }
        if *method == Method::GET || *method == Method::HEAD || *method == Method::DELETE {
            Route::Memory
        } else {
            Route::MethodNotAllowed("GET, DELETE")
        }
    }

    /// The route's name in metrics and logs.
    pub fn name(self) -> &'static str {
        match self {
            Route::AuditCheckpoint => "audit_checkpoint",
            Route::AuditConsistency => "audit_consistency",
            Route::AuditEntries => "audit_entries",
            Route::AuditInclusion => "audit_inclusion",
            Route::ChatCompletions => "chat_completions",
            Route::Embeddings => "embeddings",
            Route::Health => "healthz",
            Route::Memories => "memories",
            Route::Memory => "memory",
            Route::MemorySearch => "memory_search",
            Route::Metrics => "metrics",
            Route::Models => "models",
            Route::Moderations => "moderations",
            Route::Ready => "readyz",
            Route::CreateResponse => "responses_create",
            Route::GetResponse(_) => "responses_get",
            Route::DeleteResponse(_) => "responses_delete",
            Route::ListInputItems(_) => "responses_input_items",
            Route::CreateConversation => "conversations_create",
            Route::GetConversation(_) => "conversations_get",
            Route::UpdateConversation(_) => "conversations_update",
            Route::DeleteConversation(_) => "conversations_delete",
            Route::ListItems(_) => "conversation_items_list",
            Route::AddItems(_) => "conversation_items_add",
            Route::GetItem(..) => "conversation_items_get",
            Route::DeleteItem(..) => "conversation_items_delete",
            Route::MethodNotAllowed(_) | Route::NotFound => "other",
        }
    }

    /// Whether the route reads content into a model or the safety screen (and so passes the
    /// content stages of the pipeline: label, authorize, screen).
    pub fn is_model(self) -> bool {
        matches!(
            self,
            Route::ChatCompletions | Route::Embeddings | Route::Moderations | Route::CreateResponse
        )
    }

    /// Whether the route reads or writes stored state (responses, conversations): its answers
    /// carry stored text, so their bytes are digested into the audit entry like a model's.
    pub fn is_state(self) -> bool {
        matches!(
            self,
            Route::CreateResponse
                | Route::GetResponse(_)
                | Route::DeleteResponse(_)
                | Route::ListInputItems(_)
                | Route::CreateConversation
                | Route::GetConversation(_)
                | Route::UpdateConversation(_)
                | Route::DeleteConversation(_)
                | Route::ListItems(_)
                | Route::AddItems(_)
                | Route::GetItem(..)
                | Route::DeleteItem(..)
        )
    }

    /// Whether a request to this route is recorded in the audit log: every route but the
    /// operator's probes (`/healthz`, `/readyz`, `/metrics`), unknown paths and wrong methods
    /// included.
    pub fn is_audited(self) -> bool {
        !matches!(self, Route::Health | Route::Ready | Route::Metrics)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn methods_and_paths() {
        assert_eq!(
            Route::parse(&Method::POST, "/v1/chat/completions"),
            Route::ChatCompletions
        );
        assert_eq!(
            Route::parse(&Method::GET, "/v1/chat/completions"),
            Route::MethodNotAllowed("POST")
        );
        assert_eq!(
            Route::parse(&Method::DELETE, "/v1/models"),
            Route::MethodNotAllowed("GET")
        );
        assert_eq!(Route::parse(&Method::HEAD, "/healthz"), Route::Health);
        assert_eq!(
            Route::parse(&Method::GET, "/v1/chat/completions/"),
            Route::NotFound
        );
        assert_eq!(Route::parse(&Method::GET, "/V1/models"), Route::NotFound);
        assert_eq!(
            Route::parse(&Method::GET, "/v1/audit/proof/inclusion"),
            Route::AuditInclusion
        );
        assert_eq!(
            Route::parse(&Method::POST, "/v1/audit/checkpoint"),
            Route::MethodNotAllowed("GET")
        );
        assert!(Route::NotFound.is_audited() && !Route::Metrics.is_audited());
        assert_eq!(Route::parse(&Method::POST, "/v1/memories"), Route::Memories);
        assert_eq!(
            Route::parse(&Method::POST, "/v1/memories/search"),
            Route::MemorySearch
        );
        assert_eq!(
            Route::parse(&Method::GET, "/v1/memories/search"),
            Route::MethodNotAllowed("POST")
        );
        assert_eq!(
            Route::parse(&Method::GET, "/v1/memories/mem_1"),
            Route::Memory
        );
        assert_eq!(
            Route::parse(&Method::DELETE, "/v1/memories/mem_1"),
            Route::Memory
        );
        assert_eq!(
            Route::parse(&Method::POST, "/v1/memories/mem_1"),
            Route::MethodNotAllowed("GET, DELETE")
        );
        assert_eq!(
            Route::parse(&Method::GET, "/v1/memories/a/b"),
            Route::NotFound
        );
        assert_eq!(Route::parse(&Method::GET, "/v1/memories/"), Route::NotFound);
        let long = format!("/v1/memories/{}", "a".repeat(129));
        assert_eq!(Route::parse(&Method::GET, &long), Route::NotFound);
        assert!(Route::Memory.is_audited() && !Route::Memory.is_model());
    }

    #[test]
    fn state_routes_carry_their_ids_without_allocating() {
        let path = "/v1/responses/resp_0123abc";
        let Route::GetResponse(id) = Route::parse(&Method::GET, path) else {
            panic!("not a response route");
        };
        assert_eq!(id.of(path), "resp_0123abc");
        assert!(matches!(
            Route::parse(&Method::DELETE, path),
            Route::DeleteResponse(_)
        ));
        assert_eq!(
            Route::parse(&Method::POST, path),
            Route::MethodNotAllowed("GET, DELETE")
        );
        assert_eq!(
            Route::parse(&Method::POST, "/v1/responses"),
            Route::CreateResponse
        );
        assert_eq!(
            Route::parse(&Method::POST, "/v1/conversations"),
            Route::CreateConversation
        );
        let path = "/v1/conversations/conv_1/items/msg_2";
        let Route::DeleteItem(c, i) = Route::parse(&Method::DELETE, path) else {
            panic!("not an item route");
        };
        assert_eq!((c.of(path), i.of(path)), ("conv_1", "msg_2"));
        let path = "/v1/conversations/conv_1/items";
        assert!(matches!(
            Route::parse(&Method::GET, path),
            Route::ListItems(_)
        ));
        assert!(matches!(
            Route::parse(&Method::POST, path),
            Route::AddItems(_)
        ));
        assert_eq!(
            Route::parse(&Method::DELETE, path),
            Route::MethodNotAllowed("GET, POST")
        );
        assert!(matches!(
            Route::parse(&Method::GET, "/v1/conversations/conv_1"),
            Route::GetConversation(_)
        ));
        let path = "/v1/conversations/conv_1";
        let Route::UpdateConversation(c) = Route::parse(&Method::POST, path) else {
            panic!("not a conversation update");
        };
        assert_eq!(c.of(path), "conv_1");
        assert_eq!(
            Route::parse(&Method::PUT, path),
            Route::MethodNotAllowed("GET, POST, DELETE")
        );
        let path = "/v1/responses/resp_1/input_items";
        let Route::ListInputItems(r) = Route::parse(&Method::GET, path) else {
            panic!("not an input items route");
        };
        assert_eq!(r.of(path), "resp_1");
        assert_eq!(
            Route::parse(&Method::POST, path),
            Route::MethodNotAllowed("GET")
        );
        let long = format!("/v1/responses/{}", "a".repeat(MAX_ID_BYTES + 1));
        for hostile in [
            "/v1/responses/",
            "/v1/responses//",
            "/v1/responses/a/",
            "/v1/responses/a/b",
            "/v1/responses/..",
            "/v1/responses/a%2Fb",
            "/v1/responses/a.b",
            "/v1/responses/a/input_items/",
            "/v1/responses/a/input_itemsx",
            "/v1/responses/a/items",
            "/v1/conversations/",
            "/v1/conversations/c/",
            "/v1/conversations/c/itemsx",
            "/v1/conversations/c/items/",
            "/v1/conversations/c/items/i/",
            "/v1/conversations/c/other",
            long.as_str(),
        ] {
            assert_eq!(
                Route::parse(&Method::GET, hostile),
                Route::NotFound,
                "{hostile}"
            );
        }
        assert!(Route::CreateResponse.is_model() && Route::CreateResponse.is_state());
        assert!(!Route::ChatCompletions.is_state());
        assert!(Route::parse(&Method::GET, "/v1/responses/r/input_items").is_state());
        assert!(Route::parse(&Method::POST, "/v1/conversations/c").is_state());
    }
}
