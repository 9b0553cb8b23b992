//! Prompt-injection phrases, in user turns and in retrieved or tool content alike.
//!
//! The text is folded first (look-alike letters to ASCII, invisible characters dropped) so that
//! "іgnоrе\u{200B} previous instructions" matches; spans are mapped back to the original text.
//! Patterns are case-insensitive and allow any run of spaces between words.

use std::sync::LazyLock;

use regex::Regex;

use super::{Finding, Kind, compile};
use enclave_label::fold;

/// The rules, compiled into one regex with one capture group per rule (`r0`, `r1`, …): one
/// pass over the text instead of one per rule. At any position the first rule in the list that
/// matches wins, and matches do not overlap, so two phrases that share words are one finding.
struct Rules {
    regex: Regex,
    rules: Vec<(Kind, f32)>,
}

static RULES: LazyLock<Rules> = LazyLock::new(|| {
    let rule = |kind, confidence, pattern: &'static str| (kind, confidence, pattern);
    let list: [(Kind, f32, &str); 10] = [
        rule(
            Kind::InjectionIgnoreInstructions,
            0.9,
            r"(?i)(?-u:\b)(?:ignore|disregard|forget|override|bypass|skip|discard|abandon)\s+(?:(?:all|any|every|each|the|your|my|of|these|those|previous|prior|above|earlier|preceding|former|original|initial|system|developer|safety|existing)\s+){1,4}(?:instructions?|prompts?|rules|directions?|directives?|guidelines|guidance|messages|context|commands|constraints|restrictions|programming|policies)(?-u:\b)",
        ),
        rule(
            Kind::InjectionIgnoreInstructions,
            0.8,
            r"(?i)(?-u:\b)(?:ignore|disregard|forget)\s+(?:everything|anything|all)\s+(?:(?:you\s+were\s+told|you\s+have\s+been\s+told)|(?:above|before|previously|so\s+far))(?-u:\b)",
        ),
        rule(
            Kind::InjectionNewSystemPrompt,
            0.85,
            r"(?i)(?-u:\b)(?:(?:new|updated|revised|real|actual|override)\s+system\s+(?:prompt|instructions?|message)|your\s+(?:new|real|true)\s+(?:instructions|directives|rules)\s+(?:are|is)|from\s+now\s+on,?\s+your\s+(?:instructions|rules|system\s+prompt))(?-u:\b)",
        ),
        rule(
            Kind::InjectionNewSystemPrompt,
            0.75,
            r"(?i)(?:^|\n)[ \t]*(?:\[\s*system\s*\]|<\|?\s*system\s*\|?>|###\s*system\s*(?:prompt)?\s*:|system\s+override\s*:)",
        ),
        rule(
            Kind::InjectionJailbreakRoleplay,
            0.9,
            r"(?i)(?-u:\b)(?:you\s+are\s+(?:now\s+)?(?:going\s+to\s+(?:act|pretend)\s+(?:as|to\s+be)\s+)?(?:DAN|STAN|DUDE|AIM|an?\s+(?:unfiltered|uncensored|unrestricted|jailbroken)\s+(?:AI|assistant|model|chatbot))|do\s+anything\s+now|(?:developer|dev|god|jailbreak)\s+mode\s+(?:enabled|activated|output)|(?:enable|enter|activate|simulate)\s+(?:developer|dev|god|jailbreak)\s+mode\s+(?:for|as|in)\s+(?:you|yourself|chatgpt|this\s+(?:chat|conversation|ai|assistant))|pretend\s+(?:that\s+)?you\s+(?:are|have)\s+(?:no|free\s+of|without)\s+(?:any\s+)?(?:restrictions|rules|filters|guidelines|limits|content\s+polic(?:y|ies)))(?-u:\b)",
        ),
        rule(
            Kind::InjectionPromptLeak,
            0.85,
            r"(?i)(?-u:\b)(?:print|reveal|show|repeat|output|display|dump|leak|disclose|recite|tell\s+me|give\s+me|what\s+(?:is|are|was|were))\s+(?:me\s+)?(?:your|the)\s+(?:(?:full|entire|complete|exact|original|initial|hidden|secret|verbatim)\s+)*(?:system\s+(?:prompt|message|instructions)|initial\s+instructions|hidden\s+instructions|developer\s+(?:prompt|message))(?-u:\b)",
        ),
        rule(
            Kind::InjectionPromptLeak,
            0.8,
            r"(?i)(?-u:\b)repeat\s+(?:the\s+)?(?:words|text|everything)\s+above(?-u:\b)",
        ),
        rule(
            Kind::InjectionHiddenInstruction,
            0.9,
            r"(?i)<!--\s*(?:AI|assistant|LLM|model|GPT|ChatGPT|Claude|Gemini|Copilot|agent|system|instructions?)\s*:",
        ),
        rule(
            Kind::InjectionHiddenInstruction,
            0.85,
            r"(?i)(?-u:\b)(?:IMPORTANT|NOTE|ATTENTION|INSTRUCTION)S?\s*[:!]\s*(?:the\s+|any\s+|all\s+)?(?:AI|assistant|LLM|language\s+model|model|chatbot|agent|GPT|ChatGPT)s?\s+(?:must|should|shall|will|is\s+required\s+to|needs\s+to)(?-u:\b)",
        ),
        rule(
            Kind::InjectionHiddenInstruction,
            0.8,
            r"(?i)(?-u:\b)(?:note|message|instructions?)\s+(?:to|for)\s+(?:the\s+|any\s+)?(?:AI|assistant|LLM|language\s+model|chatbot|agent)s?\s*(?:reading|processing|summari[sz]ing)?\s*(?:this)?\s*[:\-]",
        ),
    ];
    let combined: Vec<String> = list
        .iter()
        .enumerate()
        .map(|(i, (_, _, p))| format!("(?P<r{i}>{p})"))
        .collect();
    Rules {
        regex: compile(&combined.join("|")),
        rules: list.iter().map(|&(k, c, _)| (k, c)).collect(),
    }
});

/// Runs the injection rules on the folded text.
pub(super) fn detect(text: &str, out: &mut Vec<Finding>) {
    if text.is_ascii() {
        matches(text, |s, e, kind, confidence| {
            out.push(Finding {
                kind,
                span: trim(text, s, e),
                confidence,
            });
        });
        return;
    }
    let folded = fold(text);
    matches(&folded.text, |s, e, kind, confidence| {
        let (s, e) = folded.original_span(s, e, text);
        out.push(Finding {
            kind,
            span: trim(text, s, e),
            confidence,
        });
    });
}

/// Calls `found(start, end, kind, confidence)` for each rule match in `hay`.
fn matches(hay: &str, mut found: impl FnMut(usize, usize, Kind, f32)) {
    let r = &*RULES;
    for c in r.regex.captures_iter(hay) {
        let Some(m) = c.get(0) else { continue };
        // The rule patterns have no capture groups of their own, so group `i + 1` is rule `i`.
        let Some(&(kind, confidence)) = (0..r.rules.len())
            .find(|&i| c.get(i + 1).is_some())
            .and_then(|i| r.rules.get(i))
        else {
            continue;
        };
        found(m.start(), m.end(), kind, confidence);
    }
}

/// Trims leading line breaks and spaces off a span (the line-start rules match them).
fn trim(text: &str, start: usize, end: usize) -> std::ops::Range<usize> {
    let lead = text.get(start..end).map_or(0, |s| {
        s.len() - s.trim_start_matches([' ', '\t', '\n', '\r']).len()
    });
    start + lead..end
}
