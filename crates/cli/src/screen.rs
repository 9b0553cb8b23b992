//! `enclave screen`: JSON lines `{"id", "text"}` on stdin, one verdict line each on stdout, with
//! the same engine and categories as `/v1/moderations`.
//!
//! Works with no configuration and no `init`: the pack is built in (or a TOML file) and the
//! n-gram weights are compiled into the binary. A line that is not a JSON object with a string
//! `text` is answered with `{"id", "error": {"message", "code"}}` (the `id` when one could be
//! read, else `null`) and the run goes on; blank lines are skipped. Exit 0 when every line was
//! answered, 1 when stdin cannot be read, 2 on usage errors (including a pack that does not
//! validate).

use std::io::{self, BufRead, Write};
use std::path::PathBuf;
use std::sync::Arc;

use clap::{Args, ValueEnum};

use enclave_safety::{Direction, Embed, Engine, Pack};
use serde_json::{Map, Value, json};

use crate::{Failure, Outcome};

/// Arguments of `enclave screen`.
#[derive(Debug, Args)]
pub(crate) struct ScreenArgs {
    /// A built-in policy pack (`us-federal`).
    #[arg(long, value_name = "NAME", conflicts_with = "pack_file")]
    pack: Option<String>,
    /// A policy pack in a TOML file.
    #[arg(long, value_name = "PATH")]
    pack_file: Option<PathBuf>,
    /// Which way the texts flow: prompts (`input`, the default) or answers (`output`).
    #[arg(long, value_enum, default_value = "input")]
    direction: DirectionArg,
    /// The models directory holding the sentence model of the contextual stage (default: where
    /// `ENCLAVE_MODELS_DIR` or `enclave-data/models` say). Without the model the inline stages
    /// screen alone, and a note on stderr says so.
    #[arg(long, value_name = "DIR", conflicts_with = "no_contextual")]
    models: Option<PathBuf>,
    /// Screen with the inline stages only (no sentence model).
    #[arg(long)]
    no_contextual: bool,
    /// n-gram weights to screen with instead of the committed ones (as `enclave safety train
    /// --out` writes them), to try retrained weights before building them in.
    #[arg(long, value_name = "FILE")]
    model: Option<PathBuf>,
    /// Contextual heads to screen with instead of the committed ones (as `enclave safety train
    /// --contextual-out` writes them).
    #[arg(long, value_name = "FILE", conflicts_with = "no_contextual")]
    contextual: Option<PathBuf>,
}

/// `--direction`.
#[derive(Clone, Copy, Debug, ValueEnum)]
pub(crate) enum DirectionArg {
    /// Prompts and the content they carry.
    Input,
    /// Model answers.
    Output,
}

impl From<DirectionArg> for Direction {
    fn from(d: DirectionArg) -> Direction {
        match d {
            DirectionArg::Input => Direction::Input,
            DirectionArg::Output => Direction::Output,
        }
    }
}

/// The pack `--pack` / `--pack-file` choose (default `us-federal`); errors are usage errors.
pub(crate) fn load_pack(name: Option<&str>, file: Option<&PathBuf>) -> Result<Pack, Failure> {
    match (name, file) {
        (_, Some(path)) => {
            let text = std::fs::read_to_string(path).map_err(|e| {
                Failure::machinery(format!("reading pack file {}: {e}", path.display()))
            })?;
            let stem = path
                .file_stem()
                .map_or_else(|| "pack".to_owned(), |s| s.to_string_lossy().into_owned());
            Pack::from_toml(&stem, &text).map_err(|e| Failure::machinery(e.to_string()))
        }
        (name, None) => Pack::builtin(name.unwrap_or("us-federal"))
            .map_err(|e| Failure::machinery(e.to_string())),
    }
}

pub(crate) fn run(args: &ScreenArgs) -> Outcome {
    let pack = load_pack(args.pack.as_deref(), args.pack_file.as_ref())?;
    let embed: Option<Arc<dyn Embed>> = if args.no_contextual {
        None
    } else {
        match crate::contextual::load_embedder(args.models.as_deref()) {
            Ok(embed) => Some(embed),
            // An explicit directory without the model is a usage error, and so are contextual
            // weights that would go unused; the default directory is optional (a pack that
            // denies topics then fails below).
            Err(e) if args.models.is_some() || args.contextual.is_some() => return Err(e),
            Err(e) => {
                eprintln!("enclave screen: contextual stage off: {}", e.message());
                None
            }
        }
    };
    // The committed weights unless files are given (`load_*` fall back to them).
    let engine = Engine::with_weights(
        pack,
        crate::safety::load_ngram(args.model.as_ref())?,
        crate::contextual::load_model(args.contextual.as_ref())?,
        embed,
    )
    .map_err(|e| Failure::machinery(e.to_string()))?;
    let direction = Direction::from(args.direction);
    let stdin = io::stdin();
    let mut input = stdin.lock();
    let stdout = io::stdout();
    let mut out = io::BufWriter::new(stdout.lock());
    let mut buf = Vec::new();
    let mut line_no = 0usize;
    loop {
        buf.clear();
        let n = input
            .read_until(b'\n', &mut buf)
            .map_err(|e| Failure::invalid(format!("reading stdin: {e}")))?;
        if n == 0 {
            break;
        }
        line_no += 1;
        let answer = match std::str::from_utf8(&buf) {
            Ok(line) if line.trim().is_empty() => continue,
            Ok(line) => answer_line(&engine, direction, line, line_no),
            Err(e) => error_line(
                &Value::Null,
                &format!(
                    "line {line_no}: not valid UTF-8 (first bad byte at offset {})",
                    e.valid_up_to()
                ),
                "invalid_utf8",
            ),
        };
        let written = serde_json::to_writer(&mut out, &answer)
            .map_err(io::Error::from)
            .and_then(|()| out.write_all(b"\n"));
        if let Err(e) = written {
            if e.kind() == io::ErrorKind::BrokenPipe {
                return Ok(String::new());
            }
            return Err(Failure::io("writing stdout", e));
        }
    }
    match out.flush() {
        Err(e) if e.kind() != io::ErrorKind::BrokenPipe => Err(Failure::io("writing stdout", e)),
        _ => Ok(String::new()),
    }
}

fn error_line(id: &Value, message: &str, code: &str) -> Value {
    json!({"id": id, "error": {"message": message, "code": code}})
}

/// The answer to one line.
fn answer_line(engine: &Engine, direction: Direction, line: &str, line_no: usize) -> Value {
    let parsed: Value = match serde_json::from_str(line) {
        Ok(v) => v,
        Err(e) => {
            return error_line(
                &Value::Null,
                &format!("line {line_no}: not JSON: {e}"),
                "invalid_json",
            );
        }
    };
    let Value::Object(obj) = parsed else {
        return error_line(
            &Value::Null,
            &format!("line {line_no}: expected a JSON object {{\"id\", \"text\"}}"),
            "invalid_line",
        );
    };
    let id = obj.get("id").cloned().unwrap_or(Value::Null);
    let Some(text) = obj.get("text").and_then(Value::as_str) else {
        return error_line(
            &id,
            &format!("line {line_no}: `text` must be a string"),
            "invalid_line",
        );
    };
    let v = engine.screen(text, direction);
    let mut m = Map::new();
    m.insert("id".into(), id);
    m.insert("flagged".into(), Value::Bool(v.flagged));
    m.insert("action".into(), Value::from(v.action.as_str()));
    m.insert("categories".into(), Value::Object(v.categories_json()));
    m.insert(
        "category_scores".into(),
        Value::Object(v.category_scores_json()),
    );
    if !v.topics.is_empty() {
        m.insert(
            "denied_topics".into(),
            Value::Array(
                v.topics
                    .iter()
                    .map(|(name, sim)| {
                        json!({"name": name, "similarity": (f64::from(*sim) * 1e4).round() / 1e4})
                    })
                    .collect(),
            ),
        );
    }
    Value::Object(m)
}
