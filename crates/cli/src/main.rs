//! The `enclave` command line.
//!
//! `serve` runs the gateway; `init`, `principal` and `key` prepare an install and manage who may
//! call it; `marking` holds the marking tools; `audit` verifies, exports and proves the audit
//! log. `screen` runs the safety engine over JSON lines and `safety` trains and evaluates its model. Errors are one line on stderr and exit code 1 (invalid input) or 2
//! (usage, I/O, database).

use std::io::{self, Read, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod admin;
mod audit;
mod contextual;
mod marking;
mod safety;
mod screen;
mod serve;

/// Enclave: a classification-aware gateway for language models.
#[derive(Debug, Parser)]
#[command(name = "enclave", version, about, long_about = None)]
struct Cli {
    /// The configuration file (TOML). Also `ENCLAVE_CONFIG`.
    #[arg(long, global = true, value_name = "FILE", env = "ENCLAVE_CONFIG")]
    config: Option<PathBuf>,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the gateway.
    Serve(serve::ServeArgs),
    /// Write a starter configuration (if none exists) and prepare the data directory, keys and
    /// database. Never overwrites a file.
    Init,
    /// Add and list principals: who may call the gateway.
    #[command(subcommand)]
    Principal(admin::PrincipalCommand),
    /// Create, list and revoke API keys.
    #[command(subcommand)]
    Key(admin::KeyCommand),
    /// Crypto-shred a tenant's stored data.
    #[command(subcommand)]
    Tenant(admin::TenantCommand),
    /// Parse, normalize, roll up and find security markings.
    #[command(subcommand)]
    Marking(marking::MarkingCommand),
    /// Verify, export and prove the tamper-evident audit log.
    #[command(subcommand)]
    Audit(audit::AuditCommand),
    /// Screen JSON lines `{"id", "text"}` from stdin with the safety engine; one verdict line
    /// each on stdout (`id`, `flagged`, `action`, `categories`, `category_scores`).
    Screen(screen::ScreenArgs),
    /// Train and evaluate the safety stack's n-gram model.
    #[command(subcommand)]
    Safety(safety::SafetyCommand),
}

/// How a command failed: the exit code and the one line for stderr.
#[derive(Debug)]
pub(crate) struct Failure {
    code: u8,
    line: String,
}

impl Failure {
    /// Invalid input (exit 1).
    pub(crate) fn invalid(line: impl Into<String>) -> Failure {
        Failure {
            code: 1,
            line: line.into(),
        }
    }

    /// Broken machinery whose message is already complete: database, key files (exit 2).
    pub(crate) fn machinery(line: impl Into<String>) -> Failure {
        Failure {
            code: 2,
            line: line.into(),
        }
    }

    /// The line for stderr.
    pub(crate) fn message(&self) -> &str {
        &self.line
    }

    /// Broken machinery: I/O, serialization (exit 2).
    pub(crate) fn io(context: &str, err: impl std::fmt::Display) -> Failure {
        Failure {
            code: 2,
            line: format!("{context}: {err}"),
        }
    }
}

/// Output of a command: what to print on stdout.
pub(crate) type Outcome = Result<String, Failure>;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let config = cli.config.as_deref();
    let result = match cli.command {
        Command::Serve(args) => serve::run(args, config),
        Command::Init => admin::init(config),
        Command::Principal(cmd) => admin::principal(cmd, config),
        Command::Key(cmd) => admin::key(cmd, config),
        Command::Tenant(cmd) => admin::tenant(cmd, config),
        Command::Marking(cmd) => marking::run(cmd),
        Command::Audit(cmd) => audit::run(cmd, config),
        Command::Screen(args) => screen::run(&args),
        Command::Safety(cmd) => safety::run(cmd),
    };
    match result {
        Ok(out) => {
            let mut stdout = io::stdout().lock();
            if let Err(e) = stdout
                .write_all(out.as_bytes())
                .and_then(|()| stdout.flush())
                && e.kind() != io::ErrorKind::BrokenPipe
            {
                let _ = writeln!(io::stderr(), "writing output: {e}");
                return ExitCode::from(2);
            }
            ExitCode::SUCCESS
        }
        Err(f) => {
            let _ = writeln!(io::stderr(), "{}", f.line);
            ExitCode::from(f.code)
        }
    }
}

/// Reads all of stdin as UTF-8; invalid UTF-8 is invalid input, named by its byte offset.
pub(crate) fn read_stdin() -> Result<String, Failure> {
    let mut bytes = Vec::new();
    io::stdin()
        .lock()
        .read_to_end(&mut bytes)
        .map_err(|e| Failure::io("reading stdin", e))?;
    String::from_utf8(bytes).map_err(|e| {
        Failure::invalid(format!(
            "MALFORMED_MARKING: stdin is not valid UTF-8 (first bad byte at offset {}): convert the input to UTF-8",
            e.utf8_error().valid_up_to()
        ))
    })
}
