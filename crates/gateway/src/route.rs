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
    // --- long-term memory (issue 14) ---
    /// `POST /v1/memories`: store a memory.
    Memories,
    /// `GET` or `DELETE /v1/memories/{id}`: one memory (the id is read from the path again).
    Memory,
    /// `POST /v1/memories/search`: search the caller's memories.
    MemorySearch,
    /// `GET /readyz`: the database is reachable.
    Ready,
    /// A known path with the wrong method; the method it accepts.
    MethodNotAllowed(&'static str),
    /// No such path.
    NotFound,
}

impl Route {
    /// The route of `method` and `path` (the path without its query).
    pub fn parse(method: &Method, path: &str) -> Route {
        let (route, allowed) = match path {
            "/v1/chat/completions" => (Route::ChatCompletions, Method::POST),
            "/v1/embeddings" => (Route::Embeddings, Method::POST),
            "/healthz" => (Route::Health, Method::GET),
            "/metrics" => (Route::Metrics, Method::GET),
            "/v1/models" => (Route::Models, Method::GET),
            "/readyz" => (Route::Ready, Method::GET),
            "/v1/audit/checkpoint" => (Route::AuditCheckpoint, Method::GET),
            "/v1/audit/entries" => (Route::AuditEntries, Method::GET),
            "/v1/audit/proof/consistency" => (Route::AuditConsistency, Method::GET),
            "/v1/audit/proof/inclusion" => (Route::AuditInclusion, Method::GET),
            "/v1/memories" => (Route::Memories, Method::POST),
            "/v1/memories/search" => (Route::MemorySearch, Method::POST),
            _ => return Route::parse_memory(method, path),
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
            Route::Ready => "readyz",
            Route::MethodNotAllowed(_) | Route::NotFound => "other",
        }
    }

    /// Whether the route serves a model (and so passes every stage of the pipeline).
    pub fn is_model(self) -> bool {
        matches!(self, Route::ChatCompletions | Route::Embeddings)
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
}
