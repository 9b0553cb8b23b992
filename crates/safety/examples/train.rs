//! Trains the n-gram model and prints the evaluation table, without building the whole CLI:
//! the same code as `enclave safety train` and `enclave safety eval`, in one command that
//! compiles only this crate (useful in release mode, where training takes seconds).
//!
//! ```sh
//! cargo run --release -p enclave-safety --example train -- data/safety crates/safety/models/ngram.bin
//! ```

#![expect(
    clippy::print_stdout,
    reason = "a command-line example prints its report"
)]

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use enclave_safety::train::{self, Example, TrainConfig};
use enclave_safety::{Engine, Pack};

fn load(dir: &Path) -> Result<Vec<Example>, String> {
    let mut sources: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| format!("{}: {e}", dir.display()))?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.join("examples.jsonl").is_file())
        .collect();
    sources.sort();
    let mut all = Vec::new();
    for s in sources {
        let text = std::fs::read_to_string(s.join("examples.jsonl")).map_err(|e| e.to_string())?;
        let name = s
            .file_name()
            .map_or_else(String::new, |n| n.to_string_lossy().into_owned());
        all.extend(train::parse_examples(&name, &text)?);
    }
    Ok(all)
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let data = args.first().map_or("data/safety", String::as_str);
    let out = args
        .get(1)
        .map_or("crates/safety/models/ngram.bin", String::as_str);
    let examples = match load(Path::new(data)) {
        Ok(e) => e,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    let started = std::time::Instant::now();
    // Experiments only: ENCLAVE_TRAIN_{EPOCHS,LR,L2,MAXPW,BITS} override the defaults.
    let mut config = TrainConfig::default();
    let env = |k: &str| std::env::var(format!("ENCLAVE_TRAIN_{k}")).ok();
    if let Some(v) = env("EPOCHS").and_then(|v| v.parse().ok()) {
        config.epochs = v;
    }
    if let Some(v) = env("LR").and_then(|v| v.parse().ok()) {
        config.learning_rate = v;
    }
    if let Some(v) = env("L2").and_then(|v| v.parse().ok()) {
        config.l2 = v;
    }
    if let Some(v) = env("MAXPW").and_then(|v| v.parse().ok()) {
        config.max_positive_weight = v;
    }
    if let Some(v) = env("BITS").and_then(|v| v.parse().ok()) {
        config.buckets_log2 = v;
    }
    let model = train::train(&examples, &config);
    println!(
        "trained {} heads on {} examples in {:.1} s",
        model.heads().len(),
        examples.len(),
        started.elapsed().as_secs_f64()
    );
    if let Err(e) = std::fs::write(out, model.to_bytes()) {
        eprintln!("writing {out}: {e}");
        return ExitCode::from(2);
    }
    let pack = match Pack::builtin("us-federal") {
        Ok(p) => p,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    for (c, t, f1) in train::suggest_thresholds(&model, &examples) {
        println!("  {c}: F1-best threshold on the calibration split {t:.2} (F1 {f1:.3})");
    }
    let engine = Engine::new(pack, vec![Box::new(model)]);
    if env("SHOW").is_some() {
        for e in examples.iter().filter(|e| e.is_heldout()) {
            let v = engine.screen(&e.text, enclave_safety::Direction::Input);
            if v.flagged {
                println!("  fired {:?} on {:?}", v.category_names(), e.text);
            }
        }
    }
    print!("{}", train::evaluate(&engine, &examples).to_markdown());
    ExitCode::SUCCESS
}
