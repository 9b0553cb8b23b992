//! The engine's security laws, checked against a tiny obvious model under random operations:
//! whatever the query, a search returns only memories of the searched tenant, of the viewer's
//! scope, whose label the session label dominates; `get` agrees; deletes take effect at once.

#![allow(
    clippy::unwrap_used,
    reason = "test code: a failed unwrap is a failed test"
)]

use enclave_label::Label;
use enclave_memory::{Fusion, Memories, Memory, Params, Query, Retrieval, Viewer, text};
use proptest::prelude::*;

const DIMS: usize = 8;

const LABELS: &[&str] = &[
    "UNCLASSIFIED",
    "CUI",
    "CONFIDENTIAL",
    "SECRET",
    "SECRET//NOFORN",
    "TOP SECRET//SI",
    "TOP SECRET//SI/TK//NOFORN",
];
const TENANTS: &[&str] = &["agency-a", "agency-b", "agency-c"];
const PRINCIPALS: &[&str] = &["alice", "bob"];
const NAMESPACES: &[Option<&str>] = &[None, None, Some("team")];
const WORDS: &[&str] = &[
    "deadline",
    "supervisor",
    "briefing",
    "harbor",
    "lantern",
    "august",
    "memo",
    "source",
    "canary",
    "report",
    "thursday",
    "office",
];

fn label(i: usize) -> Label {
    LABELS[i % LABELS.len()].parse().unwrap()
}

fn memory(id: usize, t: usize, p: usize, ns: usize, l: usize, words: &[usize]) -> Memory {
    Memory {
        id: format!("mem_{id}"),
        tenant: TENANTS[t % TENANTS.len()].into(),
        principal: PRINCIPALS[p % PRINCIPALS.len()].into(),
        namespace: NAMESPACES[ns % NAMESPACES.len()].map(str::to_owned),
        label: label(l),
        created_at: id as i64,
        supersedes: None,
        content: words
            .iter()
            .map(|w| WORDS[w % WORDS.len()])
            .collect::<Vec<_>>()
            .join(" "),
        metadata: None,
    }
}

fn vector(seed: usize) -> Vec<f32> {
    (0..DIMS)
        .map(|i| ((seed * 7 + i * 13) % 11) as f32 - 4.5)
        .collect()
}

fn visible(m: &Memory, tenant: &str, viewer: &Viewer<'_>) -> bool {
    m.tenant == tenant
        && viewer.label.dominates(&m.label)
        && match viewer.namespace {
            None => m.principal == viewer.principal,
            Some(ns) => m.namespace.as_deref() == Some(ns),
        }
}

#[derive(Debug, Clone)]
enum Op {
    Insert {
        t: usize,
        p: usize,
        ns: usize,
        l: usize,
        words: Vec<usize>,
        vec: bool,
    },
    Delete(usize),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0..3usize, 0..2usize, 0..3usize, 0..7usize, prop::collection::vec(0..12usize, 1..6), any::<bool>())
            .prop_map(|(t, p, ns, l, words, vec)| Op::Insert { t, p, ns, l, words, vec }),
        1 => (0..40usize).prop_map(Op::Delete),
    ]
}

fn all_params() -> Vec<Params> {
    let base = Params::default();
    vec![
        base,
        Params {
            retrieval: Retrieval::Lexical,
            ..base
        },
        Params {
            retrieval: Retrieval::Dense,
            ..base
        },
        Params {
            fusion: Fusion::Rrf { k: 60.0 },
            ..base
        },
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn search_and_get_return_only_what_the_viewer_may_see(
        ops in prop::collection::vec(op(), 1..40),
        queries in prop::collection::vec((0..3usize, 0..2usize, 0..7usize, any::<bool>(), prop::collection::vec(0..12usize, 0..4), 0..20usize), 1..6),
    ) {
        let mut index = Memories::new(DIMS);
        let mut model: Vec<Memory> = Vec::new();
        for (n, op) in ops.iter().enumerate() {
            match op {
                Op::Insert { t, p, ns, l, words, vec } => {
                    let m = memory(n, *t, *p, *ns, *l, words);
                    let v = vector(n);
                    index.insert(m.clone(), vec.then_some(v.as_slice())).unwrap();
                    model.push(m);
                }
                Op::Delete(i) => {
                    let id = format!("mem_{i}");
                    let Some(pos) = model.iter().position(|m| m.id == id) else { continue };
                    let m = model.remove(pos);
                    prop_assert!(index.remove(&m.tenant, &m.id).is_some());
                }
            }
        }
        for (t, p, l, shared, words, seed) in queries {
            let tenant = TENANTS[t];
            let session = label(l);
            let viewer = Viewer {
                principal: PRINCIPALS[p],
                label: &session,
                namespace: shared.then_some("team"),
            };
            let text: String = words.iter().map(|w| WORDS[*w]).collect::<Vec<_>>().join(" ");
            let v = vector(seed);
            for params in all_params() {
                let q = Query { text: &text, embedding: Some(&v), limit: 100 };
                let hits = index.search(tenant, &viewer, &q, &params);
                for h in &hits {
                    prop_assert!(visible(&h.memory, tenant, &viewer),
                        "{} returned to {:?} in {tenant}", h.memory.id, viewer);
                }
                // Lexical completeness: every visible memory sharing a query term is found.
                if params.retrieval != Retrieval::Dense {
                    let q_terms = text::terms(&text);
                    for m in model.iter().filter(|m| visible(m, tenant, &viewer)) {
                        let shares = text::terms(&m.content).iter().any(|t| q_terms.contains(t));
                        if shares {
                            prop_assert!(hits.iter().any(|h| h.memory.id == m.id), "{} not found", m.id);
                        }
                    }
                }
            }
            for m in &model {
                let got = index.get(tenant, &m.id, &viewer);
                let may = m.tenant == tenant
                    && session.dominates(&m.label)
                    && (m.principal == viewer.principal || m.namespace.is_some());
                prop_assert_eq!(got.is_some(), may, "get {}", m.id);
            }
        }
    }
}

fn simple(id: &str, tenant: &str, label: &str, at: i64, content: &str) -> Memory {
    Memory {
        id: id.into(),
        tenant: tenant.into(),
        principal: "alice".into(),
        namespace: None,
        label: label.parse().unwrap(),
        created_at: at,
        supersedes: None,
        content: content.into(),
        metadata: Some(r#"{"k": [1, 2]}"#.into()),
    }
}

#[test]
fn secret_session_cannot_read_top_secret_memory() {
    let mut index = Memories::new(DIMS);
    index
        .insert(
            simple("m1", "a", "TOP SECRET//SI", 1, "canary launch codes"),
            Some(&vector(1)),
        )
        .unwrap();
    let secret: Label = "SECRET".parse().unwrap();
    let viewer = Viewer {
        principal: "alice",
        label: &secret,
        namespace: None,
    };
    for params in all_params() {
        let q = Query {
            text: "canary launch codes",
            embedding: Some(&vector(1)),
            limit: 10,
        };
        assert!(index.search("a", &viewer, &q, &params).is_empty());
    }
    assert!(index.get("a", "m1", &viewer).is_none());
    let ts: Label = "TOP SECRET//SI".parse().unwrap();
    let up = Viewer {
        principal: "alice",
        label: &ts,
        namespace: None,
    };
    assert!(index.get("a", "m1", &up).is_some());
    // Another tenant with the same principal name and a dominating label sees nothing.
    assert!(index.get("b", "m1", &up).is_none());
}

#[test]
fn found_lexically_as_soon_as_added_and_gone_once_deleted() {
    let mut index = Memories::new(DIMS);
    let u = Label::unclassified();
    let viewer = Viewer {
        principal: "alice",
        label: &u,
        namespace: None,
    };
    index
        .insert(
            simple(
                "m1",
                "a",
                "UNCLASSIFIED",
                1,
                "the port export reports local time",
            ),
            None,
        )
        .unwrap();
    let q = Query {
        text: "port export",
        embedding: Some(&vector(3)),
        limit: 5,
    };
    let hits = index.search("a", &viewer, &q, &Params::default());
    assert_eq!(hits.len(), 1);
    assert_eq!(hits[0].memory.metadata.as_deref(), Some(r#"{"k": [1, 2]}"#));
    assert!(index.set_embedding("a", "m1", &vector(3)).unwrap());
    assert_eq!(
        index
            .search(
                "a",
                &viewer,
                &q,
                &Params {
                    retrieval: Retrieval::Dense,
                    ..Params::default()
                }
            )
            .len(),
        1
    );
    assert!(index.remove("a", "m1").is_some());
    assert!(
        index
            .search("a", &viewer, &q, &Params::default())
            .is_empty()
    );
    assert!(index.remove("a", "m1").is_none());
}

#[test]
fn a_newer_statement_ranks_above_the_one_it_restates() {
    let mut index = Memories::new(DIMS);
    let u = Label::unclassified();
    let viewer = Viewer {
        principal: "alice",
        label: &u,
        namespace: None,
    };
    index
        .insert(
            simple(
                "old",
                "a",
                "UNCLASSIFIED",
                1,
                "The quarterly assessment is due 9 August.",
            ),
            None,
        )
        .unwrap();
    index
        .insert(
            simple(
                "new",
                "a",
                "UNCLASSIFIED",
                2,
                "The quarterly assessment deadline slipped: now due 16 August.",
            ),
            None,
        )
        .unwrap();
    let q = Query {
        text: "when is the quarterly assessment due",
        embedding: None,
        limit: 5,
    };
    let hits = index.search("a", &viewer, &q, &Params::default());
    assert_eq!(hits[0].memory.id, "new", "{hits:?}");
    // Explicit supersession works whatever the similarity.
    let mut explicit = simple(
        "newer",
        "a",
        "UNCLASSIFIED",
        3,
        "Report to Mei from now on.",
    );
    explicit.supersedes = Some("boss".into());
    index
        .insert(
            simple(
                "boss",
                "a",
                "UNCLASSIFIED",
                0,
                "My supervisor Colin reviews every report.",
            ),
            None,
        )
        .unwrap();
    index.insert(explicit, None).unwrap();
    let q = Query {
        text: "who reviews my report",
        embedding: None,
        limit: 5,
    };
    let ids: Vec<String> = index
        .search("a", &viewer, &q, &Params::default())
        .into_iter()
        .map(|h| h.memory.id.clone())
        .collect();
    let pos = |id: &str| ids.iter().position(|x| x == id).unwrap();
    assert!(pos("newer") < pos("boss"), "{ids:?}");
}

#[test]
fn a_memory_marked_superseded_ranks_below_and_stays_readable_by_id() {
    let mut index = Memories::new(DIMS);
    let u = Label::unclassified();
    let viewer = Viewer {
        principal: "alice",
        label: &u,
        namespace: None,
    };
    // The old fact matches the query better than its replacement does.
    index
        .insert(
            simple(
                "denver",
                "a",
                "UNCLASSIFIED",
                1,
                "The user lives in Denver, Colorado.",
            ),
            None,
        )
        .unwrap();
    index
        .insert(
            simple("boston", "a", "UNCLASSIFIED", 2, "Home is Boston now."),
            None,
        )
        .unwrap();
    let q = Query {
        text: "where does the user live: Denver?",
        embedding: None,
        limit: 5,
    };
    let ids = |index: &Memories, q: &Query<'_>| -> Vec<String> {
        index
            .search("a", &viewer, q, &Params::default())
            .into_iter()
            .map(|h| h.memory.id.clone())
            .collect()
    };
    assert_eq!(ids(&index, &q)[0], "denver");
    assert!(index.supersede("a", "denver", "boston"));
    assert!(!index.supersede("b", "denver", "boston"), "another tenant");
    assert!(!index.supersede("a", "nowhere", "boston"));
    // Now first only when its successor is not found at all; otherwise below it.
    let q2 = Query {
        text: "where does the user live now: Denver or Boston?",
        embedding: None,
        limit: 5,
    };
    assert_eq!(ids(&index, &q2), ["boston", "denver"]);
    // History: still readable by id, and says what replaced it.
    assert!(index.get("a", "denver", &viewer).is_some());
    assert_eq!(
        index.superseded_by("a", "denver", &viewer).as_deref(),
        Some("boston")
    );
    assert_eq!(index.superseded_by("a", "boston", &viewer), None);

    // An update above the session neither demotes what it replaced nor is named.
    let mut index = Memories::new(DIMS);
    index
        .insert(
            simple(
                "denver",
                "a",
                "UNCLASSIFIED",
                1,
                "The user lives in Denver, Colorado.",
            ),
            None,
        )
        .unwrap();
    index
        .insert(
            simple("boston", "a", "SECRET", 2, "Home is Boston now."),
            None,
        )
        .unwrap();
    assert!(index.supersede("a", "denver", "boston"));
    let low = index.search("a", &viewer, &q2, &Params::default());
    assert_eq!(low.len(), 1);
    let plain = Params {
        superseded_weight: 1.0,
        ..Params::default()
    };
    let unmarked = index.search("a", &viewer, &q2, &plain);
    assert_eq!(low[0].score, unmarked[0].score, "the score is not lowered");
    assert_eq!(index.superseded_by("a", "denver", &viewer), None);
}

#[test]
fn hostile_inputs_are_refused_or_harmless() {
    let mut index = Memories::new(DIMS);
    let too_long = simple(
        "m",
        "a",
        "UNCLASSIFIED",
        1,
        &"x".repeat(enclave_memory::MAX_CONTENT_BYTES + 1),
    );
    assert!(index.insert(too_long, None).is_err());
    assert!(
        index
            .insert(simple("m", "a", "UNCLASSIFIED", 1, "ok"), Some(&[1.0; 3]))
            .is_err()
    );
    assert!(
        index
            .insert(
                simple("m", "a", "UNCLASSIFIED", 1, "ok"),
                Some(&[f32::NAN; DIMS])
            )
            .is_err()
    );
    assert!(
        index
            .insert(
                simple("m", "a", "UNCLASSIFIED", 1, "ok"),
                Some(&[0.0; DIMS])
            )
            .is_err()
    );
    assert_eq!(index.len("a"), 0, "a refused record leaves nothing behind");
    index
        .insert(simple("m", "a", "UNCLASSIFIED", 1, "ok then"), None)
        .unwrap();
    let u = Label::unclassified();
    let viewer = Viewer {
        principal: "alice",
        label: &u,
        namespace: None,
    };
    for text in ["", "   ", "!!!", &"ok ".repeat(10_000)] {
        for v in [None, Some(&[f32::NAN; DIMS][..]), Some(&[1.0; 2][..])] {
            let q = Query {
                text,
                embedding: v,
                limit: usize::MAX,
            };
            let hits = index.search("a", &viewer, &q, &Params::default());
            assert!(hits.len() <= 1);
        }
    }
    // Re-inserting an id replaces it; no duplicate appears.
    index
        .insert(simple("m", "a", "UNCLASSIFIED", 2, "ok again"), None)
        .unwrap();
    assert_eq!(index.len("a"), 1);
}

#[test]
fn the_dense_prefilter_of_a_large_tenant_filters_before_ranking_too() {
    // Above 8,192 memories dense search narrows by sign codes first: that path must filter
    // by label and scope as the exact one does.
    let mut index = Memories::new(DIMS);
    for i in 0..9000usize {
        let mut m = memory(i, 0, i % 2, 0, if i % 3 == 0 { 3 } else { 0 }, &[i % 12]);
        m.id = format!("big_{i}");
        index.insert(m, Some(&vector(i))).unwrap();
    }
    let u = Label::unclassified();
    let viewer = Viewer {
        principal: "alice",
        label: &u,
        namespace: None,
    };
    let dense = Params {
        retrieval: Retrieval::Dense,
        ..Params::default()
    };
    for seed in 0..20 {
        let v = vector(seed);
        for params in [dense, Params::default()] {
            let q = Query {
                text: "deadline report",
                embedding: Some(&v),
                limit: 100,
            };
            let hits = index.search("agency-a", &viewer, &q, &params);
            assert_eq!(hits.len(), 100);
            for h in &hits {
                assert!(visible(&h.memory, "agency-a", &viewer), "{}", h.memory.id);
            }
        }
    }
}
