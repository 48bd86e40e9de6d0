//! The score cache: normalised text -> label probabilities, least recently used out first.
//!
//! Chat repeats itself (emote walls, copypastas, "LUL"), and a repeat costs a hash lookup
//! instead of a model pass. Keys are the normalised text the model saw, so evasions that
//! normalise alike share an entry. The hit ratio is exported as
//! `modbot_model_cache_hit_ratio`, with the raw `modbot_model_cache_lookups_total{result}`.

use std::num::NonZeroUsize;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use lru::LruCache;

/// A bounded, shared LRU of scores.
#[derive(Debug)]
pub struct ScoreCache {
    entries: Mutex<LruCache<Box<str>, Arc<[f32]>>>,
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

    /// The scores of `text`, if known; counts the lookup.
    pub fn get(&self, text: &str) -> Option<Arc<[f32]>> {
        let found = self
            .entries
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(text)
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

    /// Remembers the scores of `text`.
    pub fn insert(&self, text: Box<str>, scores: Arc<[f32]>) {
        let mut entries = self
            .entries
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        entries.put(text, scores);
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
        cache.insert("a".into(), Arc::from([0.1f32]));
        cache.insert("b".into(), Arc::from([0.2f32]));
        assert!(cache.get("a").is_some()); // a is now the most recent
        cache.insert("c".into(), Arc::from([0.3f32]));
        assert_eq!(cache.len(), 2);
        assert!(cache.get("b").is_none(), "b was the least recently used");
        assert_eq!(cache.get("a").as_deref(), Some(&[0.1f32][..]));
        assert_eq!(cache.get("c").as_deref(), Some(&[0.3f32][..]));
        // 3 hits (a, a, c) of 4 lookups.
        assert!((cache.hit_ratio() - 0.75).abs() < 1e-9);
    }
}
