//! What a message's links show, as numbers a model can read.

/// The evidence in a message's links that the spam head takes as inputs (a head entry with
/// `"links": "links-1"` in `heads.json`). The engine finds it in the normalised text with the
/// built-in lists of the default `link` rules (look-alike brands, shorteners, risky top-level
/// domains), so a model is trained and served on the same definition whatever an admin does
/// to the rules.
///
/// Whether the author is new is not here: no labelled dataset records how long its authors
/// had been around, so a head could not learn from it. The `link` rule's `min_user_age` is
/// where a first link from a new user counts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LinkSignals {
    /// How many links the message has.
    pub links: u32,
    /// A link's host poses as a brand scammers imitate (`dlscord-gift.com`).
    pub lookalike: bool,
    /// A link goes to a top-level domain mostly registered for spam (`.xyz`, `.gift`).
    pub risky_tld: bool,
    /// A link goes through a URL shortener, which hides where it leads.
    pub shortener: bool,
}

impl LinkSignals {
    /// The feature set's name in a head's manifest entry: a head trained on one definition
    /// refuses to load under another.
    pub const VERSION: &'static str = "links-1";
    /// How many inputs [`LinkSignals::inputs`] gives.
    pub const INPUTS: usize = 5;

    /// The head's inputs: any link, two or more, look-alike host, risky top-level domain,
    /// shortener; each 0 or 1.
    pub fn inputs(&self) -> [f32; Self::INPUTS] {
        let flag = |b: bool| if b { 1.0 } else { 0.0 };
        [
            flag(self.links > 0),
            flag(self.links > 1),
            flag(self.lookalike),
            flag(self.risky_tld),
            flag(self.shortener),
        ]
    }
}
