//! What a policy pack does with a category that fired, and which way the text flows.

use std::fmt;

use serde::{Deserialize, Serialize};

/// What the screen does with a text whose category fired. Ordered from the mildest to the
/// strictest: the verdict's action is the strictest over every fired category.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    /// Serve the text; the category is scored but nothing is recorded as fired.
    #[default]
    Allow,
    /// Serve the text; the verdict is `flagged`, the decision is logged and counted.
    Flag,
    /// Serve the text with the spans of the category's findings replaced by
    /// `[REDACTED:<kind>]` (only categories that deterministic detectors find by span).
    Redact,
    /// Hold the text for a human reviewer (until the review queue exists, the gateway refuses
    /// with `pending_review`).
    Review,
    /// Refuse (`policy_violation`).
    Block,
}

impl Action {
    /// Every action, mildest first.
    pub const ALL: [Action; 5] = [
        Action::Allow,
        Action::Flag,
        Action::Redact,
        Action::Review,
        Action::Block,
    ];

    /// The wire name (`block`).
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Allow => "allow",
            Action::Flag => "flag",
            Action::Redact => "redact",
            Action::Review => "review",
            Action::Block => "block",
        }
    }

    /// The action a wire name names.
    pub fn parse(name: &str) -> Option<Action> {
        Action::ALL.into_iter().find(|a| a.as_str() == name)
    }

    /// Whether the text must not be served (`block` or `review`).
    pub fn stops(self) -> bool {
        matches!(self, Action::Block | Action::Review)
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Which way a text flows through the gateway: packs may treat the two differently (the
/// default pack flags PII in prompts and redacts it in answers).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    /// What the caller sends: prompts, and the retrieved and tool content they carry.
    Input,
    /// What the model answers.
    Output,
}

impl Direction {
    /// The wire name (`input`, `output`).
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::Input => "input",
            Direction::Output => "output",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn actions_are_ordered_mildest_first_and_round_trip() {
        for w in Action::ALL.windows(2) {
            assert!(w[0] < w[1]);
        }
        for a in Action::ALL {
            assert_eq!(Action::parse(a.as_str()), Some(a));
            assert_eq!(serde_json::to_string(&a).unwrap(), format!("\"{a}\""));
        }
        assert!(Action::Block.stops() && Action::Review.stops() && !Action::Redact.stops());
    }
}
