//! `enclave serve`: run the gateway (or, with `--check`, validate the configuration and exit).

use std::path::Path;

use enclave_gateway::config::Config;

use crate::{Failure, Outcome};

/// How to run the gateway.
#[derive(Debug, clap::Args)]
pub(crate) struct ServeArgs {
    /// Validate the configuration, print a summary and exit (0 = valid, 1 = invalid).
    #[arg(long)]
    check: bool,

    /// Log line format on stderr.
    #[arg(long, value_enum, default_value_t = LogFormat::Text, env = "ENCLAVE_LOG_FORMAT")]
    log_format: LogFormat,
}

/// Log line formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// Runs `enclave serve`.
pub(crate) fn run(args: ServeArgs, config_path: Option<&Path>) -> Outcome {
    let config = Config::load(config_path).map_err(|e| Failure::invalid(e.to_string()))?;
    if args.check {
        return Ok(summary(&config));
    }
    init_logging(args.log_format);
    let threads = config.limits.worker_threads;
    enclave_gateway::server::serve(config, threads)
        .map_err(|e| Failure::invalid(format!("cannot start: {e}")))?;
    Ok(String::new())
}

fn summary(config: &Config) -> String {
    let mut out = String::new();
    let source = config.source.as_ref().map_or_else(
        || "embedded defaults".to_owned(),
        |p| p.display().to_string(),
    );
    out.push_str(&format!("configuration OK: {source}\n"));
    out.push_str(&format!("listen: {}\n", config.listen));
    out.push_str(&format!("data_dir: {}\n", config.data_dir.display()));
    // The URL's Display hides any password.
    out.push_str(&format!("storage: {}\n", config.storage.url));
    if config.backends.is_empty() {
        out.push_str("backends: none\n");
    }
    for b in &config.backends {
        let ops: Vec<&str> = b
            .accreditation
            .operators()
            .iter()
            .map(|c| c.code())
            .collect();
        let models: Vec<&str> = b.models.iter().map(|m| m.name.as_str()).collect();
        out.push_str(&format!(
            "backend {}: {:?} accredited {} operators {} models {}\n",
            b.name,
            b.kind,
            b.accreditation.label().banner(),
            ops.join(","),
            models.join(", ")
        ));
    }
    out
}

fn init_logging(format: LogFormat) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_env("ENCLAVE_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .try_init(),
        LogFormat::Text => builder.with_ansi(false).try_init(),
    };
}
