//! Text similarity for the repetition and copypasta rules.
//!
//! Sørensen–Dice over character bigrams (as multisets): 1.0 for identical texts, near 1.0 for
//! a copy with a few characters changed, low for unrelated texts. It is linear in the texts'
//! lengths (sort and merge), where an edit distance would be quadratic: the copypasta rule
//! compares a long message with up to 75 others on every message.

/// Similarity of two texts in [0, 1].
pub fn similarity(a: &str, b: &str) -> f64 {
    Profile::new(a).similarity(b)
}

/// A text's sorted bigrams, computed once to compare it with many others.
#[derive(Debug, Clone)]
pub struct Profile<'a> {
    text: &'a str,
    chars: usize,
    bigrams: Vec<u64>,
}

impl<'a> Profile<'a> {
    /// The profile of a text.
    pub fn new(text: &'a str) -> Self {
        let mut bigrams = bigrams(text);
        bigrams.sort_unstable();
        Self {
            text,
            chars: text.chars().count(),
            bigrams,
        }
    }

    /// The text's length in characters.
    pub fn chars(&self) -> usize {
        self.chars
    }

    /// Similarity of this text and `other` in [0, 1].
    pub fn similarity(&self, other: &str) -> f64 {
        if self.text == other {
            return 1.0;
        }
        let mut y = bigrams(other);
        y.sort_unstable();
        dice(&self.bigrams, &y)
    }

    /// The sorted bigrams, owned: to keep and compare with later texts ([`dice`]).
    pub fn into_bigrams(self) -> Vec<u64> {
        self.bigrams
    }

    /// The sorted bigrams.
    pub fn bigrams(&self) -> &[u64] {
        &self.bigrams
    }

    /// Whether `other` can reach `threshold` at all, judging by lengths alone (cheap).
    pub fn may_reach(&self, other: &str, threshold: f64) -> bool {
        // Byte length bounds character length from above; only count characters when the
        // quick test cannot decide.
        similarity_bound(self.chars, other.len()) >= threshold
            || similarity_bound(self.chars, other.chars().count()) >= threshold
    }
}

/// The highest similarity two texts of these lengths (in characters) can have: a cheap test
/// that skips comparisons that cannot reach a threshold.
pub fn similarity_bound(a_chars: usize, b_chars: usize) -> f64 {
    let (a, b) = (a_chars.saturating_sub(1), b_chars.saturating_sub(1));
    if a + b == 0 {
        return 1.0;
    }
    (2 * a.min(b)) as f64 / (a + b) as f64
}

/// Sørensen–Dice similarity of two texts' sorted bigrams ([`Profile::bigrams`]), in [0, 1]; 0
/// when either has none.
pub fn dice(x: &[u64], y: &[u64]) -> f64 {
    if x.is_empty() || y.is_empty() {
        return 0.0;
    }
    let (mut i, mut j, mut shared) = (0, 0, 0usize);
    while i < x.len() && j < y.len() {
        match x[i].cmp(&y[j]) {
            std::cmp::Ordering::Less => i += 1,
            std::cmp::Ordering::Greater => j += 1,
            std::cmp::Ordering::Equal => {
                shared += 1;
                i += 1;
                j += 1;
            }
        }
    }
    (2 * shared) as f64 / (x.len() + y.len()) as f64
}

fn bigrams(text: &str) -> Vec<u64> {
    let mut chars = text.chars();
    let Some(mut previous) = chars.next() else {
        return Vec::new();
    };
    let mut out = Vec::with_capacity(text.len());
    for c in chars {
        out.push((u64::from(previous) << 32) | u64::from(c));
        previous = c;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn similarity_table() {
        let cases: &[(&str, &str, f64, f64)] = &[
            ("same text", "same text", 1.0, 1.0),
            ("", "", 1.0, 1.0),
            ("a", "b", 0.0, 0.0),
            ("", "abc", 0.0, 0.0),
            ("night", "nacht", 0.25, 0.25),
            (
                "this is a long copypasta about the stream",
                "this is a long copypasta about the stream!",
                0.97,
                1.0,
            ),
            ("hello there chat", "completely unrelated words", 0.0, 0.2),
        ];
        for &(a, b, low, high) in cases {
            let s = similarity(a, b);
            assert!((low..=high).contains(&s), "{a:?} vs {b:?}: {s}");
            assert_eq!(s, similarity(b, a), "symmetric");
            assert!(
                s <= similarity_bound(a.chars().count(), b.chars().count()) + 1e-9,
                "bound holds"
            );
        }
    }
}
