//! Embedding labelled texts with the encoder, the way the service does, with an on-disk cache.
//!
//! Every text is normalised as a chat message is (no channel emotes) and the encoder embeds the
//! normalised text: the heads learn from exactly what the scorer hands them when serving.
//! Embedding the training data is most of `modbot train`'s time, and the same files are
//! embedded again by `modbot eval`, so results are cached under the data directory, keyed by
//! the encoder's weights, the normaliser's version and the texts themselves: any change to
//! one of them is a cache miss, never a stale embedding.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

use super::TrainError;
use crate::engine::normalize::{EmoteSet, normalize};
use crate::infra::model::Encoder;

/// Bumped whenever normalisation changes what the model sees, so cached embeddings of the old
/// normal form are not reused.
pub const NORMALIZE_VERSION: &str = "normalize-2";

/// Most texts in one encoder batch.
const BATCH_TEXTS: usize = 64;
/// Most tokens in one encoder batch.
const BATCH_TOKENS: usize = 8192;
/// How often progress is reported.
const PROGRESS_EVERY: Duration = Duration::from_secs(5);

/// The encoder with its identity and cache.
pub struct Embedder<'a> {
    encoder: &'a Encoder,
    /// `name@sha256-of-weights`: what the cache key and the manifest record.
    encoder_id: String,
    cache_dir: Option<PathBuf>,
}

impl<'a> Embedder<'a> {
    /// An embedder for `encoder` (identified by `encoder_id`), caching in `cache_dir` when
    /// given.
    pub fn new(encoder: &'a Encoder, encoder_id: String, cache_dir: Option<PathBuf>) -> Self {
        Self {
            encoder,
            encoder_id,
            cache_dir,
        }
    }

    /// The encoder's identity.
    pub fn encoder_id(&self) -> &str {
        &self.encoder_id
    }

    /// The embedding size.
    pub fn dim(&self) -> usize {
        self.encoder.dim()
    }

    /// Embeddings of `texts` (normalised first), from the cache when it has them. `what`
    /// names the texts in progress lines.
    pub fn embed(&self, what: &str, texts: &[&str]) -> Result<Vec<Vec<f32>>, TrainError> {
        self.embed_normalized(what, &normalized(texts))
    }

    /// Embeddings of texts already normalised ([`normalized`]).
    pub fn embed_normalized(
        &self,
        what: &str,
        normalized: &[String],
    ) -> Result<Vec<Vec<f32>>, TrainError> {
        let key = self.cache_key(normalized);
        let cache_path = self
            .cache_dir
            .as_ref()
            .map(|dir| dir.join(format!("{}.emb", &key[..24])));
        if let Some(path) = &cache_path
            && let Some(rows) = read_cache(path, normalized.len(), self.dim())
        {
            eprintln!("  {what}: {} embeddings from the cache", rows.len());
            return Ok(rows);
        }
        let rows = self.compute(what, normalized)?;
        if let Some(path) = &cache_path
            && let Err(error) = write_cache(path, &rows)
        {
            eprintln!(
                "  warning: cannot cache embeddings in {}: {error}",
                path.display()
            );
        }
        Ok(rows)
    }

    fn cache_key(&self, normalized: &[String]) -> String {
        let mut hasher = Sha256::new();
        hasher.update(self.encoder_id.as_bytes());
        hasher.update(b"\n");
        hasher.update(NORMALIZE_VERSION.as_bytes());
        hasher.update(b"\n");
        for text in normalized {
            hasher.update((text.len() as u64).to_le_bytes());
            hasher.update(text.as_bytes());
        }
        hasher
            .finalize()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }

    fn compute(&self, what: &str, normalized: &[String]) -> Result<Vec<Vec<f32>>, TrainError> {
        let started = Instant::now();
        let tokens = normalized
            .iter()
            .map(|t| self.encoder.tokenize(t))
            .collect::<Result<Vec<_>, _>>()?;
        // Similar lengths together: attention's cost follows each sequence's own length, and
        // batches of like sizes share the work evenly between threads.
        let mut order: Vec<usize> = (0..tokens.len()).collect();
        order.sort_by_key(|&i| (tokens[i].len(), i));
        let total_tokens: usize = tokens.iter().map(Vec::len).sum();
        let mut rows: Vec<Vec<f32>> = vec![Vec::new(); tokens.len()];
        let mut done = 0;
        let mut last_report = Instant::now();
        let mut start = 0;
        while start < order.len() {
            let mut end = start;
            let mut budget = 0;
            while end < order.len()
                && end - start < BATCH_TEXTS
                && (end == start || budget + tokens[order[end]].len() <= BATCH_TOKENS)
            {
                budget += tokens[order[end]].len();
                end += 1;
            }
            let batch: Vec<Vec<u32>> = order[start..end]
                .iter()
                .map(|&i| tokens[i].clone())
                .collect();
            let embedded = self.encoder.embed_tokens(&batch)?;
            for (&i, row) in order[start..end].iter().zip(embedded) {
                rows[i] = row;
            }
            done += end - start;
            start = end;
            if last_report.elapsed() >= PROGRESS_EVERY {
                last_report = Instant::now();
                let rate = done as f64 / started.elapsed().as_secs_f64();
                eprintln!(
                    "  {what}: embedded {done}/{} texts ({rate:.0}/s)",
                    tokens.len()
                );
            }
        }
        let seconds = started.elapsed().as_secs_f64();
        eprintln!(
            "  {what}: embedded {} texts ({total_tokens} tokens) in {seconds:.1} s ({:.0} texts/s)",
            rows.len(),
            rows.len() as f64 / seconds.max(1e-9)
        );
        Ok(rows)
    }
}

/// Texts as the model sees them: normalised as a chat message is, with no channel emotes.
pub fn normalized(texts: &[&str]) -> Vec<String> {
    texts
        .iter()
        .map(|t| normalize(t, &EmoteSet::default()).text)
        .collect()
}

/// The cache file's first bytes.
const MAGIC: &[u8; 8] = b"MBEMB001";

/// Reads cached rows if the file is there and has the expected shape; anything else is a miss.
fn read_cache(path: &Path, rows: usize, dim: usize) -> Option<Vec<Vec<f32>>> {
    let mut file = std::fs::File::open(path).ok()?;
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes).ok()?;
    let header = 8 + 16;
    if bytes.len() != header + rows * dim * 4 || &bytes[..8] != MAGIC {
        return None;
    }
    let stored_rows = u64::from_le_bytes(bytes[8..16].try_into().ok()?) as usize;
    let stored_dim = u64::from_le_bytes(bytes[16..24].try_into().ok()?) as usize;
    if (stored_rows, stored_dim) != (rows, dim) {
        return None;
    }
    let values: Vec<f32> = bytes[header..]
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    Some(
        values
            .chunks_exact(dim.max(1))
            .map(<[f32]>::to_vec)
            .collect(),
    )
}

/// Writes rows to the cache: to a temporary file first, renamed into place, so a crash never
/// leaves a torn file that looks whole.
fn write_cache(path: &Path, rows: &[Vec<f32>]) -> std::io::Result<()> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    let dim = rows.first().map_or(0, Vec::len);
    let mut bytes = Vec::with_capacity(24 + rows.len() * dim * 4);
    bytes.extend_from_slice(MAGIC);
    bytes.extend_from_slice(&(rows.len() as u64).to_le_bytes());
    bytes.extend_from_slice(&(dim as u64).to_le_bytes());
    for value in rows.iter().flatten() {
        bytes.extend_from_slice(&value.to_le_bytes());
    }
    let temporary = path.with_extension(format!("tmp{}", std::process::id()));
    let mut file = std::fs::File::create(&temporary)?;
    file.write_all(&bytes)?;
    file.sync_all()?;
    std::fs::rename(&temporary, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cache_round_trips_and_refuses_the_wrong_shape() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub").join("x.emb");
        let rows = vec![vec![1.0, -2.5, 3.25], vec![0.0, f32::MIN_POSITIVE, 7.0]];
        write_cache(&path, &rows).unwrap();
        assert_eq!(read_cache(&path, 2, 3), Some(rows));
        assert_eq!(read_cache(&path, 3, 3), None);
        assert_eq!(read_cache(&path, 2, 4), None);
        std::fs::write(&path, b"MBEMB001 torn").unwrap();
        assert_eq!(read_cache(&path, 2, 3), None);
        assert_eq!(read_cache(&dir.path().join("none.emb"), 2, 3), None);
    }
}
