//! The categories the safety stack scores: OpenAI's moderation categories and Enclave's own.

use std::fmt;

/// A safety category. The names are the wire names of `/v1/moderations` and policy packs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Category {
    /// `harassment`.
    Harassment,
    /// `harassment/threatening`.
    HarassmentThreatening,
    /// `hate`.
    Hate,
    /// `hate/threatening`.
    HateThreatening,
    /// `illicit`.
    Illicit,
    /// `illicit/violent`.
    IllicitViolent,
    /// `self-harm`.
    SelfHarm,
    /// `self-harm/intent`.
    SelfHarmIntent,
    /// `self-harm/instructions`.
    SelfHarmInstructions,
    /// `sexual`.
    Sexual,
    /// `sexual/minors`.
    SexualMinors,
    /// `violence`.
    Violence,
    /// `violence/graphic`.
    ViolenceGraphic,
    /// `surveillance/us-persons`: a contract restriction (domestic surveillance of U.S. persons).
    SurveillanceUsPersons,
    /// `weapons/autonomous-targeting`: a contract restriction (engagement without human
    /// judgment).
    WeaponsAutonomousTargeting,
    /// `weapons/cbrn`.
    WeaponsCbrn,
    /// `cyber/offensive`.
    CyberOffensive,
    /// `prompt-injection`.
    PromptInjection,
    /// `pii`.
    Pii,
    /// `secrets`.
    Secrets,
    /// `classified-marking`: a classification marking discussed in prose (spillage itself is
    /// the label stage's refusal, not a safety verdict).
    ClassifiedMarking,
}

impl Category {
    /// Every category, in wire order (OpenAI's first).
    pub const ALL: [Category; 21] = [
        Category::Harassment,
        Category::HarassmentThreatening,
        Category::Hate,
        Category::HateThreatening,
        Category::Illicit,
        Category::IllicitViolent,
        Category::SelfHarm,
        Category::SelfHarmIntent,
        Category::SelfHarmInstructions,
        Category::Sexual,
        Category::SexualMinors,
        Category::Violence,
        Category::ViolenceGraphic,
        Category::SurveillanceUsPersons,
        Category::WeaponsAutonomousTargeting,
        Category::WeaponsCbrn,
        Category::CyberOffensive,
        Category::PromptInjection,
        Category::Pii,
        Category::Secrets,
        Category::ClassifiedMarking,
    ];

    /// The number of categories.
    pub const COUNT: usize = Category::ALL.len();

    /// The wire name (`harassment/threatening`).
    pub fn as_str(self) -> &'static str {
        match self {
            Category::Harassment => "harassment",
            Category::HarassmentThreatening => "harassment/threatening",
            Category::Hate => "hate",
            Category::HateThreatening => "hate/threatening",
            Category::Illicit => "illicit",
            Category::IllicitViolent => "illicit/violent",
            Category::SelfHarm => "self-harm",
            Category::SelfHarmIntent => "self-harm/intent",
            Category::SelfHarmInstructions => "self-harm/instructions",
            Category::Sexual => "sexual",
            Category::SexualMinors => "sexual/minors",
            Category::Violence => "violence",
            Category::ViolenceGraphic => "violence/graphic",
            Category::SurveillanceUsPersons => "surveillance/us-persons",
            Category::WeaponsAutonomousTargeting => "weapons/autonomous-targeting",
            Category::WeaponsCbrn => "weapons/cbrn",
            Category::CyberOffensive => "cyber/offensive",
            Category::PromptInjection => "prompt-injection",
            Category::Pii => "pii",
            Category::Secrets => "secrets",
            Category::ClassifiedMarking => "classified-marking",
        }
    }

    /// The category a wire name names.
    pub fn parse(name: &str) -> Option<Category> {
        Category::ALL.into_iter().find(|c| c.as_str() == name)
    }

    /// This category's position in [`Category::ALL`] (and in [`crate::Scores`]).
    pub fn index(self) -> usize {
        self as usize
    }

    /// Whether OpenAI's moderation endpoint names this category.
    pub fn is_openai(self) -> bool {
        self.index() <= Category::ViolenceGraphic.index()
    }
}

impl fmt::Display for Category {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A score per category: calibrated probabilities in `0.0..=1.0`, indexed by
/// [`Category::index`].
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Scores(pub [f32; Category::COUNT]);

impl Scores {
    /// The score of `c`.
    pub fn get(&self, c: Category) -> f32 {
        self.0.get(c.index()).copied().unwrap_or(0.0)
    }

    /// Sets the score of `c`.
    pub fn set(&mut self, c: Category, p: f32) {
        if let Some(slot) = self.0.get_mut(c.index()) {
            *slot = p.clamp(0.0, 1.0);
        }
    }

    /// The larger of each pair of scores (how stages and windows combine).
    pub fn max(&self, other: &Scores) -> Scores {
        let mut out = *self;
        for (a, b) in out.0.iter_mut().zip(other.0.iter()) {
            *a = a.max(*b);
        }
        out
    }

    /// `(category, score)` pairs in wire order.
    pub fn iter(&self) -> impl Iterator<Item = (Category, f32)> + '_ {
        Category::ALL.into_iter().zip(self.0.iter().copied())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_indices_follow_the_list() {
        for (i, c) in Category::ALL.into_iter().enumerate() {
            assert_eq!(c.index(), i);
            assert_eq!(Category::parse(c.as_str()), Some(c));
        }
        assert_eq!(Category::ALL.iter().filter(|c| c.is_openai()).count(), 13);
        assert_eq!(Category::parse("violence/graphic "), None);
    }
}
