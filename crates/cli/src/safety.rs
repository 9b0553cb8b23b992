//! `enclave safety train|eval`: trains the n-gram model from `data/safety` and prints the
//! evaluation table of `docs/SAFETY.md`.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use clap::Subcommand;
use enclave_safety::train::{self, Example, Split, TrainConfig};
use enclave_safety::{Category, Engine, NgramModel};

use enclave_safety::contextual::{ContextualConfig, train_contextual};

use crate::contextual;
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
        /// Also train the contextual heads over the sentence model in this models directory
        /// (`-` for where `ENCLAVE_MODELS_DIR` or the default data directory say).
        #[arg(long, value_name = "DIR")]
        models: Option<PathBuf>,
        /// Where to write the contextual heads.
        #[arg(
            long,
            value_name = "FILE",
            default_value = "crates/safety/models/contextual.bin"
        )]
        contextual_out: PathBuf,
        /// A file to keep the training texts' embeddings in between runs (they take minutes).
        #[arg(long, value_name = "FILE")]
        embed_cache: Option<PathBuf>,
        /// The lowest lower end of a category's uncertainty band (each is fitted on the
        /// calibration split, at or above this).
        #[arg(long, default_value_t = ContextualConfig::default().band_lo)]
        band_lo: f32,
        /// The contextual stage's uncertainty band, upper end.
        #[arg(long, default_value_t = ContextualConfig::default().band_hi)]
        band_hi: f32,
        /// A category's band also starts at or above this quantile of the calibration split's
        /// benign texts' inline scores (a budget on the share of benign prompts the stage sees).
        #[arg(long, default_value_t = ContextualConfig::default().benign_quantile)]
        benign_quantile: f32,
        /// Units of the hidden layer the contextual heads share (0: logistic heads over the
        /// embedding).
        #[arg(long, default_value_t = ContextualConfig::default().hidden)]
        hidden: usize,
        /// Members of the contextual ensemble (each its own hidden layer and heads; the
        /// logits are averaged), 1 to 16.
        #[arg(
            long,
            default_value_t = u16::try_from(ContextualConfig::default().members).unwrap_or(1),
            value_parser = clap::value_parser!(u16).range(1..=16)
        )]
        members: u16,
        /// Seed of the contextual heads' initialization and shuffle (to see how much a figure
        /// moves with it).
        #[arg(long, default_value_t = ContextualConfig::default().seed)]
        seed: u64,
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
        /// Evaluate with the contextual stage over the sentence model in this models directory
        /// (`-` for where `ENCLAVE_MODELS_DIR` or the default data directory say).
        #[arg(long, value_name = "DIR")]
        models: Option<PathBuf>,
        /// Contextual heads to evaluate instead of the ones compiled in.
        #[arg(long, value_name = "FILE", requires = "models")]
        contextual: Option<PathBuf>,
        /// Also list the split's misses and false positives for this category (on stderr:
        /// score and text).
        #[arg(long, value_name = "CATEGORY", value_parser = parse_category)]
        errors: Option<Category>,
        /// The split to evaluate: `test` (the figures to report), or `calibration` (where a
        /// pack's thresholds may be chosen without reading the test split).
        #[arg(long, value_name = "SPLIT", default_value = "test", value_parser = parse_split)]
        split: Split,
    },
}

fn parse_split(name: &str) -> Result<Split, String> {
    [Split::Test, Split::Calibration]
        .into_iter()
        .find(|s| s.as_str() == name)
        .ok_or_else(|| {
            format!(
                "unknown split `{name}` (expected test or calibration; the train split is not evaluated)"
            )
        })
}

fn parse_category(name: &str) -> Result<Category, String> {
    Category::parse(name).ok_or_else(|| format!("unknown category `{name}`"))
}

/// `--models -` means "locate it as the gateway does".
fn models_arg(dir: Option<&PathBuf>) -> Option<Option<&Path>> {
    dir.map(|d| (d.as_os_str() != "-").then_some(d.as_path()))
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
        SafetyCommand::Train {
            data,
            out,
            models,
            contextual_out,
            embed_cache,
            band_lo,
            band_hi,
            benign_quantile,
            hidden,
            members,
            seed,
        } => {
            let examples = load(&data)?;
            let model = train::train(&examples, &TrainConfig::default());
            let mut report = String::new();
            if let Some(dir) = models_arg(models.as_ref()) {
                let embed = contextual::load_embedder(dir)?;
                let vectors =
                    contextual::embed_examples(&embed, &examples, embed_cache.as_deref())?;
                let inline = Engine::new(load_pack(None, None)?, vec![Box::new(model.clone())]);
                let inline_scores: Vec<_> = examples
                    .iter()
                    .map(|e| inline.inline(&e.text).scores)
                    .collect();
                let config = ContextualConfig {
                    band_lo,
                    band_hi,
                    benign_quantile,
                    hidden,
                    members: usize::from(members),
                    seed,
                    ..ContextualConfig::default()
                };
                let ctx = train_contextual(&examples, &vectors, &inline_scores, &config);
                let bytes = ctx.to_bytes();
                std::fs::write(&contextual_out, &bytes).map_err(|e| {
                    Failure::machinery(format!("writing {}: {e}", contextual_out.display()))
                })?;
                let _ = writeln!(
                    report,
                    "trained {} contextual heads, {} members (band {band_lo}..{band_hi}); wrote {} bytes to {}",
                    ctx.heads().len(),
                    ctx.member_count(),
                    bytes.len(),
                    contextual_out.display()
                );
                for h in ctx.heads() {
                    let _ = writeln!(
                        report,
                        "  {}: fusion inline {:.3}, context {:.3}, bias {:.3}; band from {:.3}",
                        h.category, h.fuse_inline, h.fuse_context, h.fuse_bias, h.band_lo
                    );
                }
            }
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
            s.push_str(&report);
            Ok(s)
        }
        SafetyCommand::Eval {
            data,
            model,
            pack,
            pack_file,
            models,
            contextual,
            errors,
            split,
        } => {
            let examples = load(&data)?;
            let pack = load_pack(pack.as_deref(), pack_file.as_ref())?;
            let ngram = load_ngram(model.as_ref())?;
            let engine = match models_arg(models.as_ref()) {
                Some(dir) => Engine::with_contextual(
                    pack,
                    vec![Box::new(ngram)],
                    contextual::load_model(contextual.as_ref())?,
                    contextual::load_embedder(dir)?,
                )
                .map_err(|e| Failure::machinery(e.to_string()))?,
                None => Engine::new(pack, vec![Box::new(ngram)]),
            };
            if let Some(c) = errors {
                for (missed, p, text) in train::errors(&engine, &examples, c, split) {
                    let kind = if missed { "missed" } else { "false positive" };
                    eprintln!("{kind} {p:.3}: {}", text.replace('\n', " "));
                }
            }
            Ok(train::evaluate_split(&engine, &examples, split).to_markdown())
        }
    }
}

/// The bytes of `file`, or `builtin` (weights compiled in) when there is none.
pub(crate) fn weight_bytes(file: Option<&PathBuf>, builtin: &[u8]) -> Result<Vec<u8>, Failure> {
    match file {
        Some(path) => std::fs::read(path)
            .map_err(|e| Failure::machinery(format!("reading {}: {e}", path.display()))),
        None => Ok(builtin.to_vec()),
    }
}

/// The n-gram weights in `file`, or the committed ones.
pub(crate) fn load_ngram(file: Option<&PathBuf>) -> Result<NgramModel, Failure> {
    let bytes = weight_bytes(file, enclave_safety::BUILTIN_NGRAM_MODEL)?;
    NgramModel::from_bytes(&bytes).map_err(|e| Failure::machinery(e.to_string()))
}
