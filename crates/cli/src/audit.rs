//! `enclave audit …`: verify the tamper-evident log offline, export it, and prove single
//! entries.
//!
//! - `verify <data dir | database url | export dir> [--key KEY]...`: recomputes every leaf and
//!   the tree, checks every checkpoint's signature and that each is consistent with the next,
//!   and (for a database) that the head counts exactly the stored entries. Exit 0 printing the
//!   size and root; 1 naming the first bad index and what is wrong; 2 on usage errors or when
//!   the log cannot be read.
//! - `export [--format jsonl|ocsf] [--from N] [--out DIR]`: JSON Lines with the checkpoints
//!   beside them (`DIR/entries.jsonl`, `DIR/checkpoints/<seq>.note`), verifiable by `verify`
//!   with no database; or OCSF API Activity events for a SIEM.
//! - `prove <index> [--size M]` prints an inclusion proof as JSON (the shape of
//!   `GET /v1/audit/proof/inclusion`); `verify-proof` checks one against a signed checkpoint.
//! - `checkpoint [--sign]` prints the latest signed checkpoint; `key` prints the verifier key.
//!
//! Trust: `--key` (verifier key text `name+keyid+base64`, or a file holding it) names the keys
//! whose signatures count. Without it, the install's own signing key is used (from the data
//! directory being verified, else the configured one), under every key name the checkpoints
//! use, plus `[audit] previous_verifier_keys`. An auditor who does not trust the operator's
//! files passes `--key` with a key obtained beforehand: a log re-signed with another key is then
//! rejected.

use std::collections::BTreeSet;
use std::fs;
use std::io::{BufRead, BufReader, Read, Write as _};
use std::path::{Path, PathBuf};

use clap::{Subcommand, ValueEnum};
use enclave_audit::{
    AuditEntry, CHECKPOINTS_DIR, Checkpoint, ENTRIES_FILE, Hash, LogVerifier, Note, Signer,
    Tampered, Tree, Verified, VerifierKey, Verifiers, checkpoint_file_name, hash_leaf, to_ocsf,
    verify_inclusion,
};
use enclave_gateway::config::Config;
use enclave_store::install::{self, KeySources};
use enclave_store::{AuditReader, LeafTree, READ_PAGE, StoreError};

use crate::admin::{load_config, runtime, store_failure, with_store};
use crate::{Failure, Outcome};

/// `enclave audit …`
#[derive(Debug, Subcommand)]
pub(crate) enum AuditCommand {
    /// Verify the whole log: every entry, the tree, every checkpoint's signature and their
    /// consistency. Exit 0 prints the size and root; 1 names the first bad entry; 2: usage or
    /// unreadable log.
    Verify {
        /// A data directory, a database url (sqlite://PATH or postgres://USER@HOST/DB) or an
        /// export directory (from `enclave audit export --out`).
        source: String,
        /// A trusted verifier key (`name+keyid+base64`) or a file holding one; repeat for
        /// several (key rotation). Default: the install's own signing key.
        #[arg(long = "key", value_name = "KEY")]
        keys: Vec<String>,
    },
    /// Export the log: JSON Lines with the checkpoints beside them (verifiable by `verify`
    /// without the database), or OCSF API Activity events for a SIEM.
    Export {
        /// jsonl: the entries' exact bytes; ocsf: one OCSF event per line.
        #[arg(long, value_enum, default_value_t = ExportFormat::Jsonl)]
        format: ExportFormat,
        /// The first entry to export (a partial export cannot be verified on its own).
        #[arg(long, default_value_t = 0, value_name = "N")]
        from: u64,
        /// A directory to write to (created; must be empty); without it, lines go to stdout.
        #[arg(long, value_name = "DIR")]
        out: Option<PathBuf>,
    },
    /// Print the inclusion proof of the entry at INDEX as JSON.
    Prove {
        /// The entry's index (the X-Enclave-Audit-Index receipt).
        index: u64,
        /// The tree size to prove against. Default: the latest checkpoint's.
        #[arg(long, value_name = "M")]
        size: Option<u64>,
    },
    /// Check an inclusion proof (from `prove` or /v1/audit/proof/inclusion) against a signed
    /// checkpoint. Exit 0: the entry is in the log; 1: it is not shown to be.
    VerifyProof {
        /// The proof's JSON file, or `-` for stdin.
        proof: PathBuf,
        /// The signed checkpoint file. Default: the one inside the proof.
        #[arg(long, value_name = "FILE")]
        checkpoint: Option<PathBuf>,
        /// A trusted verifier key or a file holding one; repeat for several. Default: the
        /// install's own signing key.
        #[arg(long = "key", value_name = "KEY")]
        keys: Vec<String>,
    },
    /// Print the latest signed checkpoint.
    Checkpoint {
        /// Sign a checkpoint of the current log first, if it grew since the last one.
        #[arg(long)]
        sign: bool,
    },
    /// Print the verifier key of the install's signing key: give it to auditors (`--key`).
    Key,
}

/// Export formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum ExportFormat {
    /// The entries' exact bytes, one per line.
    Jsonl,
    /// OCSF 1.3 API Activity events, one per line.
    Ocsf,
}

/// Runs `enclave audit …`.
pub(crate) fn run(cmd: AuditCommand, config_path: Option<&Path>) -> Outcome {
    match cmd {
        AuditCommand::Verify { source, keys } => verify(&source, &keys, config_path),
        AuditCommand::Export { format, from, out } => export(format, from, out, config_path),
        AuditCommand::Prove { index, size } => prove(index, size, config_path),
        AuditCommand::VerifyProof {
            proof,
            checkpoint,
            keys,
        } => verify_proof(&proof, checkpoint.as_deref(), &keys, config_path),
        AuditCommand::Checkpoint { sign } => checkpoint(sign, config_path),
        AuditCommand::Key => key(config_path),
    }
}

// === verify ===

/// What `verify` reads.
enum Source {
    /// A database, and the data directory it came from (for the default key).
    Database {
        url: String,
        data_dir: Option<PathBuf>,
    },
    /// An export directory.
    Export(PathBuf),
}

fn verify(source: &str, keys: &[String], config_path: Option<&Path>) -> Outcome {
    let config = load_config(config_path)?;
    let source = resolve(source)?;
    let verified = match &source {
        Source::Export(dir) => verify_export(dir, keys, &config)?,
        Source::Database { url, data_dir } => {
            runtime()?.block_on(verify_database(url, data_dir.as_deref(), keys, &config))?
        }
    };
    let mut out = format!(
        "size {}\nroot {}\ncheckpoints {} (signed size {})\n",
        verified.size, verified.root, verified.checkpoints, verified.signed_size
    );
    if verified.signed_size < verified.size {
        out.push_str(&format!(
            "note: entries from {} on are not covered by a checkpoint yet\n",
            verified.signed_size
        ));
    }
    Ok(out)
}

fn resolve(source: &str) -> Result<Source, Failure> {
    if source.starts_with("sqlite:")
        || source.starts_with("postgres://")
        || source.starts_with("postgresql://")
    {
        return Ok(Source::Database {
            url: source.to_owned(),
            data_dir: None,
        });
    }
    let path = Path::new(source);
    if path.join(ENTRIES_FILE).is_file() {
        return Ok(Source::Export(path.to_path_buf()));
    }
    if path.join("enclave.db").is_file() {
        return Ok(Source::Database {
            url: format!("sqlite://{}", path.join("enclave.db").display()),
            data_dir: Some(path.to_path_buf()),
        });
    }
    if path.is_file() {
        return Ok(Source::Database {
            url: format!("sqlite://{}", path.display()),
            data_dir: path.parent().map(Path::to_path_buf),
        });
    }
    Err(Failure::machinery(format!(
        "`{source}` is neither a data directory (with enclave.db), an export directory (with \
         {ENTRIES_FILE}) nor a database url (sqlite://PATH or postgres://USER@HOST/DB)"
    )))
}

async fn verify_database(
    url: &str,
    data_dir: Option<&Path>,
    keys: &[String],
    config: &Config,
) -> Result<Verified, Failure> {
    let reader = AuditReader::connect(url).await.map_err(store_failure)?;
    let result = verify_rows(&reader, data_dir, keys, config).await;
    reader.close().await;
    result
}

async fn verify_rows(
    reader: &AuditReader,
    data_dir: Option<&Path>,
    keys: &[String],
    config: &Config,
) -> Result<Verified, Failure> {
    let notes: Vec<String> = reader
        .checkpoints()
        .await
        .map_err(store_failure)?
        .into_iter()
        .map(|c| c.note)
        .collect();
    let trusted = trusted_keys(keys, &notes, data_dir, config)?;
    let mut verifier = LogVerifier::new(&trusted, None, &notes).map_err(tampered)?;
    let head = reader.size().await.map_err(store_failure)?;
    let mut from = 0;
    loop {
        let page = reader.rows(from, READ_PAGE).await.map_err(store_failure)?;
        for row in &page {
            verifier
                .push(row.index, row.entry.as_bytes())
                .map_err(tampered)?;
        }
        match page.last() {
            Some(last) if page.len() as u64 == READ_PAGE => from = last.index + 1,
            _ => break,
        }
    }
    let size = verifier.size();
    let verified = verifier.finish().map_err(tampered)?;
    // SECURITY: the head row counts every entry ever appended; rows removed from the end (or
    // added past it) after the last checkpoint show here.
    if head > size {
        return Err(tampered(Tampered {
            index: Some(size),
            what: format!(
                "the log's head counts {head} entries but only {size} are stored: the entries \
                 from {size} on were removed"
            ),
        }));
    }
    if head < size {
        return Err(tampered(Tampered {
            index: Some(head),
            what: format!(
                "{size} entries are stored but the log's head counts {head}: the entries from \
                 {head} on were added outside Enclave"
            ),
        }));
    }
    Ok(verified)
}

fn verify_export(dir: &Path, keys: &[String], config: &Config) -> Result<Verified, Failure> {
    let notes = read_export_checkpoints(dir)?;
    let trusted = trusted_keys(keys, &notes, None, config)?;
    let mut verifier = LogVerifier::new(&trusted, None, &notes).map_err(tampered)?;
    let path = dir.join(ENTRIES_FILE);
    let file = fs::File::open(&path).map_err(|e| Failure::io(&path.display().to_string(), e))?;
    let mut lines = BufReader::with_capacity(1 << 20, file);
    let mut line = Vec::with_capacity(2048);
    let mut n: u64 = 0;
    loop {
        line.clear();
        let read = lines
            .read_until(b'\n', &mut line)
            .map_err(|e| Failure::io(&path.display().to_string(), e))?;
        if read == 0 {
            break;
        }
        if line.pop() != Some(b'\n') {
            return Err(tampered(Tampered {
                index: Some(n),
                what: format!("line {} has no final newline: the file is cut short", n + 1),
            }));
        }
        if line.is_empty() {
            return Err(tampered(Tampered {
                index: Some(n),
                what: format!("line {} is empty", n + 1),
            }));
        }
        verifier.push(n, &line).map_err(tampered)?;
        n += 1;
    }
    verifier.finish().map_err(tampered)
}

/// The checkpoint notes of an export directory, in file name (creation) order.
fn read_export_checkpoints(dir: &Path) -> Result<Vec<String>, Failure> {
    let cp_dir = dir.join(CHECKPOINTS_DIR);
    let mut names = Vec::new();
    match fs::read_dir(&cp_dir) {
        Ok(entries) => {
            for entry in entries {
                let entry = entry.map_err(|e| Failure::io(&cp_dir.display().to_string(), e))?;
                names.push(entry.path());
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(Failure::io(&cp_dir.display().to_string(), e)),
    }
    names.sort();
    names
        .iter()
        .map(|p| {
            let bytes = fs::read(p).map_err(|e| Failure::io(&p.display().to_string(), e))?;
            String::from_utf8(bytes).map_err(|_| {
                tampered(Tampered {
                    index: None,
                    what: format!("checkpoint file {} is not UTF-8", p.display()),
                })
            })
        })
        .collect()
}

/// The trusted verifier keys: `--key` values, or the install's signing key under every name
/// the checkpoints use, plus the configured previous keys.
fn trusted_keys(
    keys: &[String],
    notes: &[String],
    data_dir: Option<&Path>,
    config: &Config,
) -> Result<Verifiers, Failure> {
    let mut list: Vec<VerifierKey> = Vec::new();
    if keys.is_empty() {
        let pkcs8 = signing_key(data_dir, config)?.ok_or_else(|| {
            Failure::machinery(
                "no trusted key: give --key with the log's verifier key (`enclave audit key` \
                 prints it on the install)",
            )
        })?;
        let mut names: BTreeSet<String> = notes
            .iter()
            .filter_map(|n| Note::parse(n.as_bytes()).ok())
            .flat_map(|n| {
                n.signatures()
                    .iter()
                    .map(|s| s.name().to_owned())
                    .collect::<Vec<_>>()
            })
            .collect();
        names.insert(config.audit.origin.clone());
        for name in names {
            if let Ok(signer) = Signer::from_pkcs8(&name, &pkcs8) {
                list.push(signer.verifier_key());
            }
        }
        list.extend(config.audit.previous_verifier_keys.iter().cloned());
    } else {
        for k in keys {
            list.push(parse_key(k)?);
        }
    }
    let mut seen = BTreeSet::new();
    list.retain(|k| seen.insert(k.to_string()));
    Verifiers::new(list).map_err(|e| Failure::machinery(format!("--key: {e}")))
}

/// The install's signing key: from `data_dir` if it has one, else from the configured sources.
fn signing_key(data_dir: Option<&Path>, config: &Config) -> Result<Option<Vec<u8>>, Failure> {
    if let Some(dir) = data_dir
        && let Some((key, _)) =
            install::read_signing_key(dir, &KeySources::default()).map_err(store_failure)?
    {
        return Ok(Some(key));
    }
    let sources = config.keys.sources(|name| std::env::var(name).ok());
    Ok(install::read_signing_key(&config.data_dir, &sources)
        .map_err(store_failure)?
        .map(|(key, _)| key))
}

/// A verifier key given as text or as a file holding it.
fn parse_key(given: &str) -> Result<VerifierKey, Failure> {
    let path = Path::new(given);
    let text = if !given.contains('+') && path.is_file() {
        fs::read_to_string(path).map_err(|e| Failure::io(&format!("--key {given}"), e))?
    } else {
        given.to_owned()
    };
    text.trim().parse().map_err(|e| {
        Failure::machinery(format!(
            "--key: not a verifier key `name+keyid+base64` nor a file holding one ({e})"
        ))
    })
}

/// A tampered log: exit 1 with the first bad index and what is wrong.
fn tampered(t: Tampered) -> Failure {
    Failure::invalid(format!("audit log tampered: {t}"))
}

// === export ===

fn export(
    format: ExportFormat,
    from: u64,
    out: Option<PathBuf>,
    config_path: Option<&Path>,
) -> Outcome {
    let config = load_config(config_path)?;
    if let Some(dir) = &out {
        prepare_out_dir(dir)?;
    }
    runtime()?.block_on(async {
        let reader = AuditReader::connect(config.storage.url.expose())
            .await
            .map_err(store_failure)?;
        let result = export_rows(&reader, format, from, out.as_deref()).await;
        reader.close().await;
        result
    })
}

async fn export_rows(
    reader: &AuditReader,
    format: ExportFormat,
    from: u64,
    out: Option<&Path>,
) -> Outcome {
    let file_name = match format {
        ExportFormat::Jsonl => ENTRIES_FILE,
        ExportFormat::Ocsf => "ocsf.jsonl",
    };
    let mut sink: Box<dyn std::io::Write> = match out {
        Some(dir) => Box::new(std::io::BufWriter::new(
            fs::File::create(dir.join(file_name))
                .map_err(|e| Failure::io(&dir.join(file_name).display().to_string(), e))?,
        )),
        None => Box::new(std::io::BufWriter::new(std::io::stdout().lock())),
    };
    let write_err = |e| Failure::io("writing the export", e);
    let mut next = from;
    let mut count: u64 = 0;
    loop {
        let page = reader.rows(next, READ_PAGE).await.map_err(store_failure)?;
        for row in &page {
            match format {
                ExportFormat::Jsonl => {
                    if row.entry.contains('\n') {
                        return Err(Failure::invalid(format!(
                            "entry {} contains a newline: the log is not canonical; run `enclave audit verify`",
                            row.index
                        )));
                    }
                    sink.write_all(row.entry.as_bytes()).map_err(write_err)?;
                }
                ExportFormat::Ocsf => {
                    let entry =
                        AuditEntry::from_canonical_bytes(row.entry.as_bytes()).map_err(|e| {
                            Failure::invalid(format!(
                                "entry {} does not read ({e}): run `enclave audit verify`",
                                row.index
                            ))
                        })?;
                    let line = serde_json::to_vec(&to_ocsf(&entry))
                        .map_err(|e| Failure::io("encoding an OCSF event", e))?;
                    sink.write_all(&line).map_err(write_err)?;
                }
            }
            sink.write_all(b"\n").map_err(write_err)?;
            count += 1;
        }
        match page.last() {
            Some(last) if page.len() as u64 == READ_PAGE => next = last.index + 1,
            _ => break,
        }
    }
    sink.flush().map_err(write_err)?;
    drop(sink);
    let Some(dir) = out else {
        return Ok(String::new());
    };
    let mut checkpoints = 0;
    if format == ExportFormat::Jsonl {
        let cp_dir = dir.join(CHECKPOINTS_DIR);
        fs::create_dir_all(&cp_dir).map_err(|e| Failure::io(&cp_dir.display().to_string(), e))?;
        for c in reader.checkpoints().await.map_err(store_failure)? {
            let path = cp_dir.join(checkpoint_file_name(c.seq));
            fs::write(&path, c.note.as_bytes())
                .map_err(|e| Failure::io(&path.display().to_string(), e))?;
            checkpoints += 1;
        }
    }
    Ok(format!(
        "exported {count} entries from {from} and {checkpoints} checkpoints to {}\n",
        dir.display()
    ))
}

/// Creates `dir`, or accepts it if it exists and is empty.
fn prepare_out_dir(dir: &Path) -> Result<(), Failure> {
    let shown = dir.display().to_string();
    match fs::read_dir(dir) {
        Ok(mut entries) => {
            if entries.next().is_some() {
                return Err(Failure::machinery(format!(
                    "`{shown}` is not empty: export into a new directory"
                )));
            }
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            fs::create_dir_all(dir).map_err(|e| Failure::io(&shown, e))
        }
        Err(e) => Err(Failure::io(&shown, e)),
    }
}

// === prove and verify-proof ===

fn prove(index: u64, size: Option<u64>, config_path: Option<&Path>) -> Outcome {
    let config = load_config(config_path)?;
    runtime()?.block_on(async {
        let reader = AuditReader::connect(config.storage.url.expose())
            .await
            .map_err(store_failure)?;
        let result = prove_with(&reader, index, size).await;
        reader.close().await;
        result
    })
}

async fn prove_with(reader: &AuditReader, index: u64, size: Option<u64>) -> Outcome {
    let checkpoints = reader.checkpoints().await.map_err(store_failure)?;
    let size = match size {
        Some(size) => size,
        None => checkpoints.last().map(|c| c.size).ok_or_else(|| {
            Failure::invalid("no checkpoint has been signed yet: give --size or run `enclave audit checkpoint --sign`")
        })?,
    };
    if index >= size {
        return Err(Failure::invalid(format!(
            "entry {index} is not in the log's first {size} entries: wait for the next checkpoint or give a larger --size"
        )));
    }
    let mut tree = Tree::new();
    let mut entry = None;
    while tree.len() < size {
        let from = tree.len();
        let page = reader
            .rows(from, READ_PAGE.min(size - from))
            .await
            .map_err(store_failure)?;
        if page.is_empty() {
            return Err(Failure::invalid(format!(
                "the log has {from} entries, fewer than --size {size}"
            )));
        }
        for row in page {
            if row.index != tree.len() {
                return Err(Failure::invalid(format!(
                    "entry {} is missing: run `enclave audit verify`",
                    tree.len()
                )));
            }
            tree.push(hash_leaf(row.entry.as_bytes()));
            if row.index == index {
                entry = Some(row.entry);
            }
        }
    }
    let entry = entry.ok_or_else(|| Failure::invalid(format!("entry {index} is missing")))?;
    let note = checkpoints
        .iter()
        .rev()
        .find(|c| c.size == size)
        .map(|c| c.note.as_str());
    let proof = enclave_gateway::audit_api::inclusion_json(&tree, index, size, &entry, note)
        .map_err(|e| Failure::invalid(e.to_string()))?;
    let mut out =
        serde_json::to_string_pretty(&proof).map_err(|e| Failure::io("encoding the proof", e))?;
    out.push('\n');
    Ok(out)
}

fn verify_proof(
    proof_path: &Path,
    checkpoint_path: Option<&Path>,
    keys: &[String],
    config_path: Option<&Path>,
) -> Outcome {
    let config = load_config(config_path)?;
    let text = if proof_path == Path::new("-") {
        let mut s = String::new();
        std::io::stdin()
            .read_to_string(&mut s)
            .map_err(|e| Failure::io("reading the proof from stdin", e))?;
        s
    } else {
        fs::read_to_string(proof_path)
            .map_err(|e| Failure::io(&proof_path.display().to_string(), e))?
    };
    let bad = |what: &str| Failure::invalid(format!("not a valid inclusion proof: {what}"));
    let proof: serde_json::Value =
        serde_json::from_str(&text).map_err(|_| bad("the file is not JSON"))?;
    let index = proof["index"].as_u64().ok_or_else(|| bad("no `index`"))?;
    let size = proof["size"].as_u64().ok_or_else(|| bad("no `size`"))?;
    let entry = proof["entry"].as_str().ok_or_else(|| bad("no `entry`"))?;
    let hashes = proof["hashes"]
        .as_array()
        .ok_or_else(|| bad("no `hashes`"))?
        .iter()
        .map(|h| h.as_str().and_then(|h| Hash::from_base64(h).ok()))
        .collect::<Option<Vec<Hash>>>()
        .ok_or_else(|| bad("a hash is not base64 of 32 bytes"))?;
    let note = match checkpoint_path {
        Some(p) => fs::read_to_string(p).map_err(|e| Failure::io(&p.display().to_string(), e))?,
        None => proof["checkpoint"]
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| {
                Failure::machinery(
                    "the proof carries no checkpoint: give --checkpoint FILE (GET /v1/audit/checkpoint or `enclave audit checkpoint`)",
                )
            })?,
    };
    let trusted = trusted_keys(keys, std::slice::from_ref(&note), None, &config)?;
    let checkpoint = Checkpoint::open(note.as_bytes(), &trusted)
        .map_err(|e| Failure::invalid(format!("the checkpoint is not trusted: {e}")))?;
    if checkpoint.size() != size {
        return Err(Failure::invalid(format!(
            "the proof is for size {size} but the checkpoint signs size {}",
            checkpoint.size()
        )));
    }
    let leaf = hash_leaf(entry.as_bytes());
    if let Some(given) = proof["leaf_hash"].as_str()
        && Hash::from_base64(given).ok() != Some(leaf)
    {
        return Err(bad("`leaf_hash` is not the hash of `entry`"));
    }
    verify_inclusion(index, size, &leaf, &hashes, checkpoint.root()).map_err(|e| {
        Failure::invalid(format!(
            "entry {index} is not shown to be in the log of size {size}: {e}"
        ))
    })?;
    let parsed = AuditEntry::from_canonical_bytes(entry.as_bytes())
        .map_err(|e| Failure::invalid(format!("the entry does not read: {e}")))?;
    if parsed.index != index {
        return Err(Failure::invalid(format!(
            "the entry says it is entry {}, not {index}",
            parsed.index
        )));
    }
    Ok(format!(
        "ok: entry {index} is in log {} of size {size}\n",
        checkpoint.origin()
    ))
}

// === checkpoint and key ===

fn checkpoint(sign: bool, config_path: Option<&Path>) -> Outcome {
    let config = load_config(config_path)?;
    let origin = config.audit.origin.clone();
    let latest = with_store(config_path, async |store, install| {
        if sign {
            let signer = Signer::from_pkcs8(&origin, install.signing_key_pkcs8())
                .map_err(|e| StoreError::AuditLog(format!("the audit signing key: {e}")))?;
            let tree = LeafTree::new();
            store
                .write_audit_checkpoint(&tree, &origin, &[&signer])
                .await?;
        }
        store.latest_audit_checkpoint().await
    })?;
    match latest {
        Some(c) => Ok(c.note),
        None => Err(Failure::invalid(
            "no checkpoint has been signed yet: `enclave audit checkpoint --sign` signs one",
        )),
    }
}

fn key(config_path: Option<&Path>) -> Outcome {
    let config = load_config(config_path)?;
    let pkcs8 = signing_key(None, &config)?.ok_or_else(|| {
        Failure::invalid(format!(
            "`{}` does not exist: run `enclave init` first",
            config.data_dir.join(install::SIGNING_KEY_FILE).display()
        ))
    })?;
    let signer = Signer::from_pkcs8(&config.audit.origin, &pkcs8)
        .map_err(|e| Failure::machinery(format!("the audit signing key: {e}")))?;
    Ok(format!("{}\n", signer.verifier_key()))
}
