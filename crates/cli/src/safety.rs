//! `enclave safety train|eval`: trains the n-gram model from `data/safety` and prints the
//! evaluation table of `docs/SAFETY.md`.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use clap::Subcommand;
use enclave_safety::train::{self, Example, Split, TrainConfig};
use enclave_safety::{Engine, NgramModel};

use crate::screen::load_pack;
use crate::{Failure, Outcome};

#[derive(Debug, Subcommand)]
pub(crate) enum SafetyCommand {
    /// Train the n-gram model (deterministic) and write its weights.
    Train {
        /// The data folder: every `*/examples.jsonl` below it.
        #[arg(long, value_name = "DIR", default_value = "data/safety")]
        data: PathBuf,
        /// Where to write the weights.
        #[arg(
            long,
            value_name = "FILE",
            default_value = "crates/safety/models/ngram.bin"
        )]
        out: PathBuf,
    },
    /// Evaluate the engine on the test split and the held-out benign texts; prints a Markdown
    /// table.
    Eval {
        /// The data folder.
        #[arg(long, value_name = "DIR", default_value = "data/safety")]
        data: PathBuf,
        /// Weights to evaluate instead of the ones compiled in.
        #[arg(long, value_name = "FILE")]
        model: Option<PathBuf>,
        /// A built-in policy pack (thresholds).
        #[arg(long, value_name = "NAME", conflicts_with = "pack_file")]
        pack: Option<String>,
        /// A policy pack in a TOML file.
        #[arg(long, value_name = "PATH")]
        pack_file: Option<PathBuf>,
    },
}

/// Every example under `dir` (`<source>/examples.jsonl`, sources in name order).
pub(crate) fn load(dir: &Path) -> Result<Vec<Example>, Failure> {
    let entries = std::fs::read_dir(dir)
        .map_err(|e| Failure::machinery(format!("reading {}: {e}", dir.display())))?;
    let mut sources: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.join("examples.jsonl").is_file())
        .collect();
    sources.sort();
    if sources.is_empty() {
        return Err(Failure::machinery(format!(
            "{}: no <source>/examples.jsonl below it",
            dir.display()
        )));
    }
    let mut all = Vec::new();
    for s in sources {
        let file = s.join("examples.jsonl");
        let text = std::fs::read_to_string(&file)
            .map_err(|e| Failure::machinery(format!("reading {}: {e}", file.display())))?;
        let name = s
            .file_name()
            .map_or_else(String::new, |n| n.to_string_lossy().into_owned());
        all.extend(train::parse_examples(&name, &text).map_err(Failure::invalid)?);
    }
    Ok(all)
}

pub(crate) fn run(cmd: SafetyCommand) -> Outcome {
    match cmd {
        SafetyCommand::Train { data, out } => {
            let examples = load(&data)?;
            let model = train::train(&examples, &TrainConfig::default());
            let bytes = model.to_bytes();
            std::fs::write(&out, &bytes)
                .map_err(|e| Failure::machinery(format!("writing {}: {e}", out.display())))?;
            let count = |s: Split| {
                examples
                    .iter()
                    .filter(|e| e.split == s && !e.is_heldout())
                    .count()
            };
            let mut s = format!(
                "trained {} heads on {} texts (calibration {}, test {}, held-out benign {}); wrote {} bytes to {}\n",
                model.heads().len(),
                count(Split::Train),
                count(Split::Calibration),
                count(Split::Test),
                examples.iter().filter(|e| e.is_heldout()).count(),
                bytes.len(),
                out.display()
            );
            for h in model.heads() {
                let _ = writeln!(
                    s,
                    "  {}: bias {:.3}, scale {:.5}, platt a {:.3} b {:.3}",
                    h.category, h.bias, h.scale, h.platt_a, h.platt_b
                );
            }
            Ok(s)
        }
        SafetyCommand::Eval {
            data,
            model,
            pack,
            pack_file,
        } => {
            let examples = load(&data)?;
            let pack = load_pack(pack.as_deref(), pack_file.as_ref())?;
            let engine = match model {
                Some(path) => {
                    let bytes = std::fs::read(&path).map_err(|e| {
                        Failure::machinery(format!("reading {}: {e}", path.display()))
                    })?;
                    let m = NgramModel::from_bytes(&bytes)
                        .map_err(|e| Failure::machinery(e.to_string()))?;
                    Engine::new(pack, vec![Box::new(m)])
                }
                None => Engine::with_pack(pack).map_err(|e| Failure::machinery(e.to_string()))?,
            };
            Ok(train::evaluate(&engine, &examples).to_markdown())
        }
    }
}
