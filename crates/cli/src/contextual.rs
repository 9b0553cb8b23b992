//! The safety stack's contextual stage at the command line: the in-process sentence model
//! (all-MiniLM-L6-v2 from the models directory) behind `enclave_safety::Embed`, embeddings of
//! the training data's windows (cached in a file by text, since they take minutes), and the engine with
//! the committed contextual heads.

use std::collections::HashMap;
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
    let bytes = crate::safety::weight_bytes(file, enclave_safety::BUILTIN_CONTEXTUAL_MODEL)?;
    ContextualModel::from_bytes(&bytes).map_err(|e| Failure::machinery(e.to_string()))
}

/// The cache file's first bytes: entries keyed by text, so a retraining on data with a few new
/// texts embeds only those.
const CACHE_MAGIC: &[u8; 8] = b"ENCEMB02";

/// FNV-1a over what is embedded for one text: a tag for how it is cut (windows, then clause
/// pairs; a cache of windows alone is stale) and the text.
fn text_key(text: &str) -> u64 {
    let tag = b"segments-2".iter().copied();
    tag.chain([0xff])
        .chain(text.bytes())
        .fold(0xcbf2_9ce4_8422_2325, |h: u64, b| {
            (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
        })
}

/// The embeddings of every example's windows (at most [`MAX_WINDOWS`]: the first and last
/// halves). Those of texts found in `cache` are read from it; the rest are computed, and the
/// cache is rewritten with every example's.
pub(crate) fn embed_examples(
    embed: &LocalEmbed,
    examples: &[Example],
    cache: Option<&Path>,
) -> Result<WindowEmbeddings, Failure> {
    let mut known = cache
        .and_then(|path| std::fs::read(path).ok())
        .and_then(|bytes| read_cache(&bytes))
        .unwrap_or_default();
    let keys: Vec<u64> = examples.iter().map(|e| text_key(&e.text)).collect();
    let missing: Vec<usize> = (0..examples.len())
        .filter(|&i| keys.get(i).is_none_or(|k| !known.contains_key(k)))
        .collect();
    if !missing.is_empty() {
        eprintln!(
            "embedding {} of {} texts ({} from the cache)",
            missing.len(),
            examples.len(),
            examples.len() - missing.len()
        );
    }
    let started = std::time::Instant::now();
    let mut pieces = 0usize;
    let mut done = 0usize;
    for (n, chunk) in missing.chunks(64).enumerate() {
        let mut texts: Vec<&str> = Vec::new();
        let mut counts = Vec::new();
        for &i in chunk {
            let Some(e) = examples.get(i) else { continue };
            // Windows and clause pairs as the engine embeds them; a text with more than
            // MAX_WINDOWS of those, its windows alone (the heads train on windows first).
            let mut ws = segments(&e.text);
            if ws.len() > MAX_WINDOWS {
                ws = windows(&e.text);
            }
            let keep = enclave_safety::contextual::training_windows(ws.len(), MAX_WINDOWS);
            counts.push((i, keep.len()));
            texts.extend(keep.iter().filter_map(|&w| ws.get(w).copied()));
        }
        pieces += texts.len();
        let mut vectors = embed.embed(&texts).map_err(Failure::machinery)?.into_iter();
        for (i, c) in counts {
            let ws: Vec<Vec<f32>> = vectors.by_ref().take(c).collect();
            if let Some(&k) = keys.get(i) {
                known.insert(k, ws);
            }
            done += 1;
        }
        if n % 20 == 0 {
            eprintln!(
                "embedded {done} of {} texts ({pieces} windows, {:.0} s)",
                missing.len(),
                started.elapsed().as_secs_f64()
            );
        }
    }
    let out: WindowEmbeddings = keys
        .iter()
        .map(|k| known.get(k).cloned().unwrap_or_default())
        .collect();
    if let Some(path) = cache
        && !missing.is_empty()
    {
        let mut bytes = CACHE_MAGIC.to_vec();
        for (k, ws) in keys.iter().zip(&out) {
            bytes.extend_from_slice(&k.to_le_bytes());
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

/// The entries of a cache file by text key; `None` for a file of another format or a
/// truncated one (then everything is embedded afresh).
fn read_cache(bytes: &[u8]) -> Option<HashMap<u64, Vec<Vec<f32>>>> {
    fn take<'a>(rest: &mut &'a [u8], n: usize) -> Option<&'a [u8]> {
        if rest.len() < n {
            return None;
        }
        let (head, tail) = rest.split_at(n);
        *rest = tail;
        Some(head)
    }
    fn u32_of(rest: &mut &[u8]) -> Option<usize> {
        Some(u32::from_le_bytes(take(rest, 4)?.try_into().ok()?) as usize)
    }
    let mut rest = bytes;
    if take(&mut rest, CACHE_MAGIC.len())? != CACHE_MAGIC {
        return None;
    }
    let mut out = HashMap::new();
    while !rest.is_empty() {
        let key = u64::from_le_bytes(take(&mut rest, 8)?.try_into().ok()?);
        let nw = u32_of(&mut rest)?;
        let mut ws = Vec::with_capacity(nw.min(MAX_WINDOWS));
        for _ in 0..nw {
            let d = u32_of(&mut rest)?;
            let raw = take(&mut rest, d.checked_mul(4)?)?;
            ws.push(
                raw.chunks_exact(4)
                    .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                    .collect(),
            );
        }
        out.insert(key, ws);
    }
    Some(out)
}
