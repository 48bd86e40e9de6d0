//! The score cache: normalised text -> label probabilities, least recently used out first.
//!
//! Chat repeats itself (emote walls, copypastas, "LUL"), and a repeat costs a hash lookup
//! instead of a model pass. Keys are a digest of the normalised text the model saw
//! ([`TextKey`]), so evasions that normalise alike share an entry, and an entry costs the same
//! few dozen bytes whatever the text: `model.cache_entries` bounds the cache's memory, not
//! only its entry count, and a flood of long texts cannot make it grow. The hit ratio is exported as
//! `modbot_model_cache_hit_ratio`, with the raw `modbot_model_cache_lookups_total{result}`.

use std::num::NonZeroUsize;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use lru::LruCache;
use sha2::{Digest, Sha256};

/// A cache key: the first 128 bits of the SHA-256 of a normalised text. A cryptographic digest,
/// not a fast keyed hash, because a collision would hand one text's scores to another: chat
/// users cannot search for one (2^64 work for any pair), and no secret seed has to be kept
/// alike across replicas or restarts. Hashing happens only for texts bound for the model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TextKey([u8; 16]);

impl TextKey {
    /// The key of `text` scored by the lineup of `generation` (a swapped lineup's scores are
    /// never served for the next one's; its entries age out).
    pub fn of(generation: u64, text: &str) -> Self {
        let mut hasher = Sha256::new();
        hasher.update(generation.to_le_bytes());
        hasher.update(text.as_bytes());
        let digest = hasher.finalize();
        let mut key = [0; 16];
        key.copy_from_slice(&digest[..16]);
        Self(key)
    }
}

/// What one entry costs at most beyond its scores, in bytes: the key, the `Arc`'s pointer,
/// length and counts, and the LRU's node and table slot (two pointers, a hash table entry
/// with its control byte). Documented so the cache's budget can be stated in bytes.
pub const ENTRY_OVERHEAD_BYTES: usize = 16 + 16 + 16 + 16 + 2 * 8 + 16;

/// A bounded, shared LRU of scores.
#[derive(Debug)]
pub struct ScoreCache {
    entries: Mutex<LruCache<TextKey, Arc<[f32]>>>,
    hits: AtomicU64,
    misses: AtomicU64,
}

impl ScoreCache {
    /// A cache of at most `capacity` texts (at least one).
    pub fn new(capacity: usize) -> Self {
        let capacity = NonZeroUsize::new(capacity).unwrap_or(NonZeroUsize::MIN);
        Self {
            entries: Mutex::new(LruCache::new(capacity)),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
        }
    }

    /// The scores of the text with `key`, if known; counts the lookup.
    pub fn get(&self, key: &TextKey) -> Option<Arc<[f32]>> {
        let found = self
            .entries
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(key)
            .cloned();
        let (counter, result) = if found.is_some() {
            (&self.hits, "hit")
        } else {
            (&self.misses, "miss")
        };
        counter.fetch_add(1, Ordering::Relaxed);
        metrics::counter!("modbot_model_cache_lookups_total", "result" => result).increment(1);
        metrics::gauge!("modbot_model_cache_hit_ratio").set(self.hit_ratio());
        found
    }

    /// Remembers the scores of the text with `key`.
    pub fn insert(&self, key: TextKey, scores: Arc<[f32]>) {
        let mut entries = self
            .entries
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        entries.put(key, scores);
        metrics::gauge!("modbot_model_cache_entries").set(entries.len() as f64);
    }

    /// Texts held.
    pub fn len(&self) -> usize {
        self.entries
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .len()
    }

    /// Whether nothing is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The bytes its entries hold: [`ENTRY_OVERHEAD_BYTES`] each plus their scores. At most
    /// `model.cache_entries × (ENTRY_OVERHEAD_BYTES + 4 × labels)`, whatever the texts were.
    pub fn bytes(&self) -> usize {
        self.entries
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .iter()
            .map(|(_, scores)| ENTRY_OVERHEAD_BYTES + std::mem::size_of_val(&**scores))
            .sum()
    }

    /// Hits over lookups since start (0 before the first lookup).
    pub fn hit_ratio(&self) -> f64 {
        let hits = self.hits.load(Ordering::Relaxed) as f64;
        let total = hits + self.misses.load(Ordering::Relaxed) as f64;
        if total == 0.0 { 0.0 } else { hits / total }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn it_is_bounded_and_forgets_the_least_recently_used() {
        let cache = ScoreCache::new(2);
        let key = |text: &str| TextKey::of(0, text);
        cache.insert(key("a"), Arc::from([0.1f32]));
        cache.insert(key("b"), Arc::from([0.2f32]));
        assert!(cache.get(&key("a")).is_some()); // a is now the most recent
        cache.insert(key("c"), Arc::from([0.3f32]));
        assert_eq!(cache.len(), 2);
        assert!(
            cache.get(&key("b")).is_none(),
            "b was the least recently used"
        );
        assert_eq!(cache.get(&key("a")).as_deref(), Some(&[0.1f32][..]));
        assert_eq!(cache.get(&key("c")).as_deref(), Some(&[0.3f32][..]));
        // 3 hits (a, a, c) of 4 lookups.
        assert!((cache.hit_ratio() - 0.75).abs() < 1e-9);
    }

    #[test]
    fn worst_case_texts_cost_no_more_than_short_ones() {
        // The longest text a message can normalise to (64 KiB, the largest
        // `grpc.max_text_bytes`, at the normaliser's largest expansion, 4), each different.
        let capacity = 64;
        let cache = ScoreCache::new(capacity);
        let labels = 8;
        let long = "\u{FDFA}".repeat(64 * 1024 * 4 / 3);
        for i in 0..capacity * 3 {
            let text = format!("{i} {long}");
            cache.insert(TextKey::of(0, &text), Arc::from(vec![0.5f32; labels]));
        }
        assert_eq!(cache.len(), capacity);
        assert_eq!(std::mem::size_of::<TextKey>(), 16, "a key holds no text");
        assert!(
            cache.bytes() <= capacity * (ENTRY_OVERHEAD_BYTES + labels * 4),
            "{} bytes",
            cache.bytes()
        );
        assert!(
            cache
                .get(&TextKey::of(0, &format!("{} {long}", capacity * 3 - 1)))
                .is_some()
        );
        assert!(cache.get(&TextKey::of(0, &format!("0 {long}"))).is_none());
    }
}
