//! `enclave marking …`: the marking tools over `enclave-label`.

use clap::Subcommand;
use enclave_label::{
    Form, Label, MarkingError, Mode, Placement, country_codes, parse_marking, rollup, scan,
};
use serde::Serialize;

use crate::{Failure, Outcome, read_stdin};

#[derive(Debug, Subcommand)]
pub(crate) enum MarkingCommand {
    /// Parse a banner or portion marking and print its fields as JSON.
    Parse {
        /// Accept only the canonical form.
        #[arg(long)]
        strict: bool,
        /// The banner a portion sits under (resolves a bare `REL`).
        #[arg(long, value_name = "BANNER")]
        context: Option<String>,
        /// The marking, e.g. `SECRET//NOFORN` or `(S//NF)`.
        marking: String,
    },
    /// Print the canonical form of a marking (banner for a banner, portion for a portion).
    Normalize {
        /// Accept only the canonical form.
        #[arg(long)]
        strict: bool,
        /// The marking.
        marking: String,
    },
    /// Read portion marks, one per line, on stdin and print the rolled-up banner.
    Rollup {
        /// Accept only canonical portion marks.
        #[arg(long)]
        strict: bool,
    },
    /// Read a document on stdin and print the markings found in it as JSON: each marking with
    /// its placement (`asserted` when it marks the text, `mentioned` when a sentence talks about
    /// it), the banner of the asserted ones and the banner of the mentioned ones.
    Scan,
    /// List the registered country and organization codes.
    List,
}

pub(crate) fn run(cmd: MarkingCommand) -> Outcome {
    match cmd {
        MarkingCommand::Parse {
            strict,
            context,
            marking,
        } => {
            let context = match context {
                Some(c) => Some(
                    parse(&c, strict, None)
                        .map_err(|e| invalid(&e, "--context"))?
                        .label,
                ),
                None => None,
            };
            let m = parse(&marking, strict, context.as_ref()).map_err(|e| invalid(&e, ""))?;
            json(&m.label.fields().with_form(m.form))
        }
        MarkingCommand::Normalize { strict, marking } => {
            let m = parse(&marking, strict, None).map_err(|e| invalid(&e, ""))?;
            Ok(match m.form {
                Form::Banner => format!("{}\n", m.label.banner()),
                Form::Portion => format!("{}\n", m.label.portion()),
            })
        }
        MarkingCommand::Rollup { strict } => {
            let input = read_stdin()?;
            let mut labels: Vec<Label> = Vec::new();
            let mut context: Option<Label> = None;
            for (n, line) in input.lines().enumerate() {
                if line.trim().is_empty() {
                    continue;
                }
                let m = parse(line, strict, context.as_ref())
                    .map_err(|e| invalid(&e, &format!("line {}", n + 1)))?;
                if m.form == Form::Banner {
                    context = Some(m.label.clone());
                }
                labels.push(m.label);
            }
            if labels.is_empty() {
                return Err(Failure::invalid(
                    "EMPTY_MARKING: no portion marks on stdin: give one portion mark per line",
                ));
            }
            Ok(format!("{}\n", rollup(&labels).banner()))
        }
        MarkingCommand::Scan => {
            let input = read_stdin()?;
            let result = scan(&input);
            let out = ScanOutput {
                banner: result.label.banner(),
                mentioned: result.mentioned.as_ref().map(Label::banner),
                disguised: result.any_disguised(),
                markings: result
                    .markings
                    .iter()
                    .map(|m| FoundOutput {
                        text: input.get(m.span.clone()).unwrap_or_default(),
                        start: m.span.start,
                        end: m.span.end,
                        disguised: m.disguised,
                        form: match m.form {
                            Form::Banner => "banner",
                            Form::Portion => "portion",
                        },
                        placement: match m.placement {
                            Placement::Asserted => "asserted",
                            Placement::Mentioned => "mentioned",
                        },
                        label: m.label.banner(),
                    })
                    .collect(),
            };
            json(&out)
        }
        MarkingCommand::List => {
            let mut out = String::new();
            for c in country_codes() {
                let kind = if c.is_tetragraph() {
                    "group"
                } else {
                    "country"
                };
                out.push_str(&format!("{}\t{kind}\t{}\n", c.code(), c.name()));
            }
            Ok(out)
        }
    }
}

fn parse(
    marking: &str,
    strict: bool,
    context: Option<&Label>,
) -> Result<enclave_label::Marking, MarkingError> {
    let mode = if strict { Mode::Strict } else { Mode::Lenient };
    parse_marking(marking, mode, context)
}

/// `<CODE>: [where: ]<message>`, the one-line error format.
fn invalid(e: &MarkingError, place: &str) -> Failure {
    if place.is_empty() {
        Failure::invalid(format!("{}: {}", e.code(), e.message()))
    } else {
        Failure::invalid(format!("{}: {place}: {}", e.code(), e.message()))
    }
}

fn json(value: &impl Serialize) -> Outcome {
    let mut s = serde_json::to_string(value).map_err(|e| Failure::io("writing JSON", e))?;
    s.push('\n');
    Ok(s)
}

/// `enclave marking scan`'s JSON: `banner` is the roll-up of the asserted markings (the label of
/// the text), `mentioned` the roll-up of the markings talked about inside sentences, or null.
#[derive(Serialize)]
struct ScanOutput<'a> {
    banner: String,
    mentioned: Option<String>,
    disguised: bool,
    markings: Vec<FoundOutput<'a>>,
}

#[derive(Serialize)]
struct FoundOutput<'a> {
    text: &'a str,
    start: usize,
    end: usize,
    disguised: bool,
    form: &'static str,
    /// `asserted` (it marks the text) or `mentioned` (talked about inside a sentence).
    placement: &'static str,
    label: String,
}
