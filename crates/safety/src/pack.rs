//! Policy packs: per category, a threshold and what to do when a score reaches it, separately
//! for inputs and outputs; and denied topics, defined by a name, a definition and examples.
//!
//! A pack is TOML (the format is in `docs/SAFETY.md`); [`Pack::from_toml`] rejects unknown keys,
//! unknown categories and actions, thresholds outside `0.0..=1.0` and `redact` on categories
//! that have no spans, naming the key path of the mistake.

use std::collections::BTreeMap;
use std::fmt;

use serde::Deserialize;

use crate::action::{Action, Direction};
use crate::category::Category;

/// The packs compiled into the binary: `(name, TOML text)`.
const BUILTIN: &[(&str, &str)] = &[("us-federal", include_str!("../packs/us-federal.toml"))];

/// Why a pack was rejected: the pack's name and a message that names the key path.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("policy pack {pack:?}: {message}")]
pub struct PackError {
    /// The pack's name.
    pub pack: String,
    /// What is wrong, naming the key path (`categories."hate".threshold`).
    pub message: String,
}

/// What a pack does with one category in one direction.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Rule {
    /// The score at which the category fires (`score >= threshold`).
    pub threshold: f32,
    /// What happens when it fires.
    pub action: Action,
}

/// A topic a tenant forbids, defined by a name, a definition and examples. The contextual stage
/// embeds them once when the engine is built and fires the topic when some window of a text
/// has a cosine similarity at or over `threshold` to one of them; no retraining. Without the
/// sentence model a topic cannot be scored (the gateway then runs with `contextual = "on"` or
/// says at start that topics are off).
#[derive(Clone, Debug, PartialEq)]
pub struct DeniedTopic {
    /// The topic's name (shown in verdicts and logs).
    pub name: String,
    /// A sentence or two saying what the topic covers.
    pub definition: String,
    /// Example requests on the topic (at least one).
    pub examples: Vec<String>,
    /// The similarity at which the topic fires.
    pub threshold: f32,
    /// What happens when it fires (never `redact`: a topic has no span).
    pub action: Action,
}

/// A parsed, validated policy pack.
#[derive(Clone, Debug, PartialEq)]
pub struct Pack {
    name: String,
    description: String,
    input: [Rule; Category::COUNT],
    output: [Rule; Category::COUNT],
    denied_topics: Vec<DeniedTopic>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPack {
    #[serde(default)]
    description: String,
    #[serde(default)]
    defaults: Option<RawRule>,
    #[serde(default)]
    categories: BTreeMap<String, RawRule>,
    #[serde(default)]
    denied_topics: Vec<RawTopic>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRule {
    threshold: Option<f64>,
    action: Option<String>,
    input: Option<String>,
    output: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTopic {
    name: String,
    definition: String,
    examples: Vec<String>,
    threshold: Option<f64>,
    action: String,
}

/// Threshold of a category whose rule (and the pack's `[defaults]`) gives none.
pub const DEFAULT_THRESHOLD: f32 = 0.5;

/// Similarity threshold of a denied topic that gives none (all-MiniLM-L6-v2 cosine: unrelated
/// sentences score 0.1–0.4, paraphrases of one request 0.5–0.8).
pub const DEFAULT_TOPIC_THRESHOLD: f32 = 0.5;

/// Whether deterministic detectors find this category by span (so `redact` can apply).
fn has_spans(c: Category) -> bool {
    matches!(
        c,
        Category::Pii | Category::Secrets | Category::PromptInjection | Category::ClassifiedMarking
    )
}

impl Pack {
    /// Parses and validates a pack from its TOML text.
    ///
    /// # Errors
    ///
    /// [`PackError`] naming the key path: TOML syntax, an unknown key, an unknown category or
    /// action, a threshold outside `0.0..=1.0`, `redact` for a category without spans, a rule
    /// with neither `action` nor both `input` and `output`, a denied topic without a name,
    /// definition or examples, or two topics with one name.
    pub fn from_toml(name: &str, text: &str) -> Result<Pack, PackError> {
        let err = |message: String| PackError {
            pack: name.to_owned(),
            message,
        };
        let raw: RawPack = toml::from_str(text).map_err(|e| err(one_line(&e.to_string())))?;
        let fallback = Rule {
            threshold: DEFAULT_THRESHOLD,
            action: Action::Allow,
        };
        let (def_in, def_out) = match &raw.defaults {
            Some(d) => resolve(d, "defaults", None, fallback).map_err(err)?,
            None => (fallback, fallback),
        };
        let mut input = [def_in; Category::COUNT];
        let mut output = [def_out; Category::COUNT];
        // `[defaults]` never redacts: a category without spans cannot be redacted.
        for c in Category::ALL {
            for (rules, _) in [(&mut input, "input"), (&mut output, "output")] {
                if let Some(r) = rules.get_mut(c.index())
                    && r.action == Action::Redact
                    && !has_spans(c)
                {
                    return Err(err(format!(
                        "defaults: action \"redact\" applies to every category, but only {} have spans to redact; name them under [categories] instead",
                        span_names()
                    )));
                }
            }
        }
        for (key, rule) in &raw.categories {
            let Some(c) = Category::parse(key) else {
                return Err(err(format!(
                    "categories.{key:?}: unknown category (expected one of {})",
                    Category::ALL.map(Category::as_str).join(", ")
                )));
            };
            let path = format!("categories.{key:?}");
            let base = *input.get(c.index()).unwrap_or(&fallback);
            let (i, o) = resolve(rule, &path, Some(c), base).map_err(err)?;
            if let Some(slot) = input.get_mut(c.index()) {
                *slot = i;
            }
            if let Some(slot) = output.get_mut(c.index()) {
                *slot = o;
            }
        }
        let mut denied_topics: Vec<DeniedTopic> = Vec::new();
        for (n, t) in raw.denied_topics.iter().enumerate() {
            let path = format!("denied_topics[{n}]");
            if t.name.trim().is_empty() {
                return Err(err(format!("{path}.name: must not be empty")));
            }
            if denied_topics.iter().any(|d| d.name == t.name) {
                return Err(err(format!(
                    "{path}.name: a topic named {:?} is defined twice",
                    t.name
                )));
            }
            if t.definition.trim().is_empty() {
                return Err(err(format!("{path}.definition: must not be empty")));
            }
            if t.examples.is_empty() || t.examples.iter().any(|e| e.trim().is_empty()) {
                return Err(err(format!(
                    "{path}.examples: give at least one example, none empty"
                )));
            }
            let threshold = match t.threshold {
                Some(v) => threshold(v, &format!("{path}.threshold")).map_err(err)?,
                None => DEFAULT_TOPIC_THRESHOLD,
            };
            let action = action(&t.action, &format!("{path}.action")).map_err(err)?;
            if action == Action::Redact {
                return Err(err(format!(
                    "{path}.action: a denied topic has no span to redact (use flag, review or block)"
                )));
            }
            denied_topics.push(DeniedTopic {
                name: t.name.clone(),
                definition: t.definition.clone(),
                examples: t.examples.clone(),
                threshold,
                action,
            });
        }
        Ok(Pack {
            name: name.to_owned(),
            description: raw.description,
            input,
            output,
            denied_topics,
        })
    }

    /// A pack compiled into the binary (`us-federal`).
    ///
    /// # Errors
    ///
    /// [`PackError`] when no built-in pack has that name (a built-in pack that fails to parse
    /// is caught by the crate's tests).
    pub fn builtin(name: &str) -> Result<Pack, PackError> {
        match BUILTIN.iter().find(|(n, _)| *n == name) {
            Some((n, text)) => Pack::from_toml(n, text),
            None => Err(PackError {
                pack: name.to_owned(),
                message: format!(
                    "no built-in pack has this name (built in: {})",
                    Pack::builtin_names().join(", ")
                ),
            }),
        }
    }

    /// The names of the built-in packs.
    pub fn builtin_names() -> Vec<&'static str> {
        BUILTIN.iter().map(|(n, _)| *n).collect()
    }

    /// The pack's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The pack's description.
    pub fn description(&self) -> &str {
        &self.description
    }

    /// The rule for `category` in `direction`.
    pub fn rule(&self, direction: Direction, category: Category) -> Rule {
        let rules = match direction {
            Direction::Input => &self.input,
            Direction::Output => &self.output,
        };
        rules.get(category.index()).copied().unwrap_or(Rule {
            threshold: DEFAULT_THRESHOLD,
            action: Action::Allow,
        })
    }

    /// The categories this pack redacts in `direction`.
    pub fn redacted(&self, direction: Direction) -> Vec<Category> {
        Category::ALL
            .into_iter()
            .filter(|c| self.rule(direction, *c).action == Action::Redact)
            .collect()
    }

    /// The denied topics.
    pub fn denied_topics(&self) -> &[DeniedTopic] {
        &self.denied_topics
    }
}

impl fmt::Display for Pack {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name)
    }
}

fn span_names() -> String {
    Category::ALL
        .into_iter()
        .filter(|c| has_spans(*c))
        .map(Category::as_str)
        .collect::<Vec<_>>()
        .join(", ")
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn threshold(v: f64, path: &str) -> Result<f32, String> {
    if !(0.0..=1.0).contains(&v) {
        return Err(format!(
            "{path}: {v} is not a probability (expected 0.0 to 1.0)"
        ));
    }
    #[expect(
        clippy::cast_possible_truncation,
        reason = "a probability in 0..=1 fits f32"
    )]
    Ok(v as f32)
}

fn action(name: &str, path: &str) -> Result<Action, String> {
    Action::parse(name).ok_or_else(|| {
        format!(
            "{path}: unknown action {name:?} (expected one of {})",
            Action::ALL.map(Action::as_str).join(", ")
        )
    })
}

/// The input and output rules a raw rule gives, starting from `base` for a missing threshold.
fn resolve(
    raw: &RawRule,
    path: &str,
    category: Option<Category>,
    base: Rule,
) -> Result<(Rule, Rule), String> {
    let t = match raw.threshold {
        Some(v) => threshold(v, &format!("{path}.threshold"))?,
        None => base.threshold,
    };
    let both = raw
        .action
        .as_deref()
        .map(|a| action(a, &format!("{path}.action")))
        .transpose()?;
    let inp = raw
        .input
        .as_deref()
        .map(|a| action(a, &format!("{path}.input")))
        .transpose()?;
    let out = raw
        .output
        .as_deref()
        .map(|a| action(a, &format!("{path}.output")))
        .transpose()?;
    let (Some(i), Some(o)) = (inp.or(both), out.or(both)) else {
        return Err(format!(
            "{path}: give `action` (both directions) or both `input` and `output`"
        ));
    };
    for (a, key) in [(i, "input"), (o, "output")] {
        if a == Action::Redact
            && let Some(c) = category
            && !has_spans(c)
        {
            return Err(format!(
                "{path}.{key}: \"redact\" needs spans, which only {} have; {c} is scored over the whole text (use flag, review or block)",
                span_names()
            ));
        }
    }
    Ok((
        Rule {
            threshold: t,
            action: i,
        },
        Rule {
            threshold: t,
            action: o,
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_pack_does_what_the_contract_says() {
        let p = Pack::builtin("us-federal").unwrap();
        for c in [
            Category::SurveillanceUsPersons,
            Category::WeaponsAutonomousTargeting,
            Category::WeaponsCbrn,
            Category::SexualMinors,
        ] {
            assert_eq!(p.rule(Direction::Input, c).action, Action::Block, "{c}");
            assert_eq!(p.rule(Direction::Output, c).action, Action::Block, "{c}");
        }
        for c in [Category::Pii, Category::Secrets] {
            assert_eq!(p.rule(Direction::Input, c).action, Action::Flag, "{c}");
            assert_eq!(p.rule(Direction::Output, c).action, Action::Redact, "{c}");
        }
        for c in Category::ALL {
            let a = p.rule(Direction::Input, c).action;
            assert_ne!(a, Action::Allow, "{c} must at least be flagged");
        }
        assert_eq!(
            p.rule(Direction::Output, Category::ClassifiedMarking)
                .action,
            Action::Flag
        );
        assert_eq!(
            p.redacted(Direction::Output),
            [Category::Pii, Category::Secrets]
        );
        assert!(p.redacted(Direction::Input).is_empty());
        assert!(
            Pack::builtin("nope")
                .unwrap_err()
                .message
                .contains("us-federal")
        );
    }

    fn bad(text: &str) -> String {
        Pack::from_toml("t", text).unwrap_err().to_string()
    }

    #[test]
    fn mistakes_name_their_key_path() {
        assert!(
            bad("[categories.hatee]\naction = \"block\"")
                .contains("categories.\"hatee\": unknown category")
        );
        assert!(
            bad("[categories.hate]\naction = \"deny\"")
                .contains("categories.\"hate\".action: unknown action \"deny\"")
        );
        assert!(
            bad("[categories.hate]\nthreshold = 1.5\naction = \"flag\"")
                .contains("categories.\"hate\".threshold: 1.5")
        );
        assert!(
            bad("[categories.hate]\naction = \"redact\"")
                .contains("categories.\"hate\".input: \"redact\" needs spans")
        );
        assert!(bad("[categories.hate]\ninput = \"flag\"").contains("both `input` and `output`"));
        assert!(
            bad("[categories.hate]\naction = \"flag\"\ncolour = 1")
                .contains("unknown field `colour`")
        );
        assert!(bad("colour = 1").contains("unknown field `colour`"));
        assert!(bad("[defaults]\naction = \"redact\"").contains("defaults"));
        assert!(bad("[[denied_topics]]\nname = \"x\"\ndefinition = \"d\"\nexamples = []\naction = \"block\"").contains("denied_topics[0].examples"));
        assert!(bad("[[denied_topics]]\nname = \"x\"\ndefinition = \"d\"\nexamples = [\"e\"]\naction = \"redact\"").contains("denied_topics[0].action"));
        assert!(bad("[[denied_topics]]\nname = \"x\"\ndefinition = \"d\"\nexamples = [\"e\"]\naction = \"block\"\n[[denied_topics]]\nname = \"x\"\ndefinition = \"d\"\nexamples = [\"e\"]\naction = \"block\"").contains("denied_topics[1].name"));
        assert!(bad("[categories").contains("TOML parse error"));
    }

    #[test]
    fn per_direction_rules_and_defaults() {
        let p = Pack::from_toml(
            "t",
            "[defaults]\nthreshold = 0.7\naction = \"flag\"\n[categories.pii]\ninput = \"allow\"\noutput = \"redact\"\n[categories.hate]\nthreshold = 0.2\naction = \"block\"\n[[denied_topics]]\nname = \"elections\"\ndefinition = \"Predictions about elections.\"\nexamples = [\"Who will win the election?\"]\naction = \"review\"\n",
        )
        .unwrap();
        assert_eq!(
            p.rule(Direction::Input, Category::Violence),
            Rule {
                threshold: 0.7,
                action: Action::Flag
            }
        );
        assert_eq!(
            p.rule(Direction::Input, Category::Pii).action,
            Action::Allow
        );
        assert_eq!(
            p.rule(Direction::Output, Category::Pii),
            Rule {
                threshold: 0.7,
                action: Action::Redact
            }
        );
        assert_eq!(
            p.rule(Direction::Output, Category::Hate),
            Rule {
                threshold: 0.2,
                action: Action::Block
            }
        );
        assert_eq!(p.denied_topics()[0].threshold, DEFAULT_TOPIC_THRESHOLD);
        let empty = Pack::from_toml("empty", "").unwrap();
        assert_eq!(
            empty.rule(Direction::Input, Category::Hate).action,
            Action::Allow
        );
    }
}
