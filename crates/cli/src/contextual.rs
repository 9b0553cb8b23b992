//! The safety stack's contextual stage at the command line: the in-process sentence model
//! (all-MiniLM-L6-v2 from the models directory) behind `enclave_safety::Embed`, embeddings of
//! the training data's windows (cached in a file, since they take minutes), and the engine with
//! the committed contextual heads.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use enclave_local::embed::Embedder;
use enclave_local::weights::ModelsDir;
use enclave_safety::contextual::{MAX_WINDOWS, WindowEmbeddings, segments, windows};
use enclave_safety::train::Example;
use enclave_safety::{ContextualModel, Embed};

use crate::Failure;

/// The sentence model behind [`Embed`].
pub(crate) struct LocalEmbed(Embedder);

impl Embed for LocalEmbed {
    fn embed(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, String> {
        self.0.embed(texts).map_err(|e| e.to_string())
    }
}

/// Loads the sentence model from `dir` (or where `ENCLAVE_MODELS_DIR` and the default data
/// directory say).
pub(crate) fn load_embedder(dir: Option<&Path>) -> Result<Arc<LocalEmbed>, Failure> {
    let models = ModelsDir::locate(dir, Path::new("enclave-data"));
    let files = models.minilm().map_err(|e| {
        Failure::machinery(format!(
            "the sentence model (all-MiniLM-L6-v2) is not in {}: {e} (run scripts/fetch-models)",
            models.path().display()
        ))
    })?;
    let embedder = Embedder::load(&files).map_err(|e| Failure::machinery(e.to_string()))?;
    Ok(Arc::new(LocalEmbed(embedder)))
}

/// The contextual weights: `file`, or the committed ones.
pub(crate) fn load_model(file: Option<&PathBuf>) -> Result<ContextualModel, Failure> {
    let bytes = match file {
        Some(path) => std::fs::read(path)
            .map_err(|e| Failure::machinery(format!("reading {}: {e}", path.display())))?,
        None => enclave_safety::BUILTIN_CONTEXTUAL_MODEL.to_vec(),
    };
    ContextualModel::from_bytes(&bytes).map_err(|e| Failure::machinery(e.to_string()))
}

/// FNV-1a over every text, so a cache made for other data is not read.
fn fingerprint(examples: &[Example]) -> u64 {
    // A tag for what is embedded per text (windows, then clause pairs): a cache of windows
    // alone is stale.
    let tag = b"segments-2".iter().copied();
    let texts = examples.iter().flat_map(|e| e.text.bytes().chain([0xff]));
    tag.chain(texts).fold(0xcbf2_9ce4_8422_2325, |h: u64, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// The embeddings of every example's windows (at most [`MAX_WINDOWS`]: the first and last
/// halves), read from `cache` when it was made for the same texts, else computed (and written to
/// `cache`).
pub(crate) fn embed_examples(
    embed: &LocalEmbed,
    examples: &[Example],
    cache: Option<&Path>,
) -> Result<WindowEmbeddings, Failure> {
    let fp = fingerprint(examples);
    if let Some(path) = cache
        && let Ok(bytes) = std::fs::read(path)
        && let Some(found) = read_cache(&bytes, fp, examples.len())
    {
        return Ok(found);
    }
    let mut out: WindowEmbeddings = Vec::with_capacity(examples.len());
    let started = std::time::Instant::now();
    let mut pieces = 0usize;
    for (n, chunk) in examples.chunks(64).enumerate() {
        let mut texts: Vec<&str> = Vec::new();
        let mut counts = Vec::new();
        for e in chunk {
            // Windows and clause pairs as the engine embeds them; a text with more than
            // MAX_WINDOWS of those, its windows alone (the heads train on windows first).
            let mut ws = segments(&e.text);
            if ws.len() > MAX_WINDOWS {
                ws = windows(&e.text);
            }
            let keep = enclave_safety::contextual::training_windows(ws.len(), MAX_WINDOWS);
            counts.push(keep.len());
            texts.extend(keep.iter().filter_map(|&i| ws.get(i).copied()));
        }
        pieces += texts.len();
        let mut vectors = embed.embed(&texts).map_err(Failure::machinery)?.into_iter();
        for c in counts {
            out.push(vectors.by_ref().take(c).collect());
        }
        if n % 20 == 0 {
            eprintln!(
                "embedded {} of {} texts ({pieces} windows, {:.0} s)",
                out.len(),
                examples.len(),
                started.elapsed().as_secs_f64()
            );
        }
    }
    if let Some(path) = cache {
        let mut bytes = Vec::new();
        bytes.extend_from_slice(&fp.to_le_bytes());
        for ws in &out {
            bytes.extend_from_slice(&u32::try_from(ws.len()).unwrap_or(0).to_le_bytes());
            for w in ws {
                bytes.extend_from_slice(&u32::try_from(w.len()).unwrap_or(0).to_le_bytes());
                for x in w {
                    bytes.extend_from_slice(&x.to_le_bytes());
                }
            }
        }
        std::fs::File::create(path)
            .and_then(|mut f| f.write_all(&bytes))
            .map_err(|e| Failure::machinery(format!("writing {}: {e}", path.display())))?;
    }
    Ok(out)
}

fn read_cache(bytes: &[u8], fp: u64, count: usize) -> Option<WindowEmbeddings> {
    let mut at = 0usize;
    let mut take = |n: usize| -> Option<&[u8]> {
        let s = bytes.get(at..at + n)?;
        at += n;
        Some(s)
    };
    let u32_of = |s: &[u8]| Some(u32::from_le_bytes(s.try_into().ok()?) as usize);
    if u64::from_le_bytes(take(8)?.try_into().ok()?) != fp {
        return None;
    }
    let mut out = Vec::with_capacity(count);
    for _ in 0..count {
        let nw = u32_of(take(4)?)?;
        let mut ws = Vec::with_capacity(nw);
        for _ in 0..nw {
            let d = u32_of(take(4)?)?;
            let raw = take(d * 4)?;
            ws.push(
                raw.chunks_exact(4)
                    .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                    .collect(),
            );
        }
        out.push(ws);
    }
    Some(out)
}
