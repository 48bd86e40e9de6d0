//! What is known of a user and a channel: a user's recent messages, times, offence heat and
//! remembered strikes ([`UserHistory`]), a channel's recent messages ([`ChannelWindow`]), and an
//! offence to record (or pardon). Plain data with the arithmetic that defines it (decay,
//! reputation); the user-state backends store it, the engines read it.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

/// Heat below which a user has cooled down: their next offence is a first offence again (the
/// escalation ladder starts over), and user state resets the ladder's step when it records an
/// offence. With a timeout's heat of 2.0 it is reached four half-lives after one timeout.
pub const COOLED_HEAT: f64 = 0.125;

/// Strikes below which none is remembered: the escalation ladder counts a user's decayed
/// strikes to the nearest whole offence, so one strike is remembered for one memory half-life
/// (it decays to exactly one half then). User state forgets an idle user only once their
/// strikes are below this too.
pub const REMEMBERED_STRIKE: f64 = 0.5;

/// Most bytes of a message's normalised text that user state remembers (a user's recent
/// messages, a channel's history, on both backends): longer texts are cut on a character
/// boundary. Chat lines are far shorter (destiny.gg allows 512 characters), so only floods
/// are cut, and the similarity rules compare the same prefix of the new message
/// ([`remembered_text`]), so a repeated long message still matches itself exactly. `Nuke`
/// sees only this prefix of each message.
pub const REMEMBERED_TEXT_BYTES: usize = 1024;

/// The part of `text` that user state remembers: its first [`REMEMBERED_TEXT_BYTES`] bytes,
/// cut back to a character boundary.
pub fn remembered_text(text: &str) -> &str {
    if text.len() <= REMEMBERED_TEXT_BYTES {
        return text;
    }
    let mut end = REMEMBERED_TEXT_BYTES;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// One chat message as the state sees it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Observation<'a> {
    /// The channel it was said in.
    pub channel: &'a str,
    /// Who said it.
    pub user_id: &'a str,
    /// Its id (kept so evidence can point at an earlier message).
    pub message_id: &'a str,
    /// The normalised text (the backends remember its [`remembered_text`]).
    pub text: &'a str,
    /// When it was sent, Unix milliseconds. This is the state's only clock (expiry included),
    /// so it should be one the server trusts: its own receive time, or the message's time
    /// clamped to it. A time far in the future would make every user look idle.
    pub at_ms: i64,
}

/// One of a user's own recent messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecentMessage {
    /// Its id.
    pub message_id: String,
    /// The normalised text.
    pub text: String,
    /// When it was sent, Unix milliseconds.
    pub at_ms: i64,
}

/// One of a channel's recent messages, from anyone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChannelMessage {
    /// Who said it.
    pub user_id: String,
    /// Its id.
    pub message_id: String,
    /// The normalised text.
    pub text: String,
    /// When it was sent, Unix milliseconds.
    pub at_ms: i64,
}

/// A block of a channel's messages, shared between the in-process backend's ring and the
/// windows handed out. Slots are written once, under the channel's lock, before any window
/// that reaches them is made; windows only read slots they were made after.
pub(crate) type MessageBlock = Arc<[OnceLock<ChannelMessage>]>;

/// A channel's recent messages from users other than the observer, oldest first, as
/// the user state's `observe` and `peek` return them.
///
/// It is a view, not a copy: the in-process backend keeps a channel's messages in append-only
/// blocks of 16, and a window holds the few blocks it spans (6 reference counts for 75
/// messages). Copying 75 messages' strings, or even cloning 75 `Arc`s, on every chat message
/// cost more than everything else `observe` does together. Iterate with [`Self::iter`] (double
/// ended, so `.iter().rev()` gives the newest first) or `for message in &window`.
#[derive(Clone, Default)]
pub struct ChannelWindow {
    /// The blocks spanning the window; `blocks[0]`'s first slot is message `first_index`.
    pub(crate) blocks: Vec<MessageBlock>,
    /// Slots per block (the last block of a window made from a list may be shorter).
    pub(crate) block_size: u64,
    pub(crate) first_index: u64,
    /// The window's messages are `start..end`.
    pub(crate) start: u64,
    pub(crate) end: u64,
    /// Whose messages are skipped.
    pub(crate) observer: Observer,
}

/// Whose messages a [`ChannelWindow`] skips.
#[derive(Debug, Clone, Default)]
pub(crate) enum Observer {
    /// Nobody's.
    #[default]
    Nobody,
    /// Those of the author of message `end`, the observed message itself (which the window's
    /// last block holds): no copy of the user id is needed.
    AuthorOfEnd,
    /// This user's.
    User(Box<str>),
}

impl ChannelWindow {
    /// A window of exactly these messages, oldest first (for tests, and for callers that build
    /// one): nothing is skipped.
    pub fn from_messages(messages: Vec<ChannelMessage>) -> Self {
        Self::from_list(messages, Observer::Nobody)
    }

    /// A window of one block holding `messages`, all of them in the window.
    pub(crate) fn from_list(messages: Vec<ChannelMessage>, observer: Observer) -> Self {
        let end = messages.len() as u64;
        let block: MessageBlock = messages.into_iter().map(OnceLock::from).collect();
        Self {
            block_size: (block.len() as u64).max(1),
            blocks: vec![block],
            first_index: 0,
            start: 0,
            end,
            observer,
        }
    }

    /// Message `index` of the channel, if this window's blocks hold it.
    fn get(&self, index: u64) -> Option<&ChannelMessage> {
        let offset = index.checked_sub(self.first_index)?;
        let block = self
            .blocks
            .get(usize::try_from(offset.checked_div(self.block_size)?).ok()?)?;
        block.get((offset % self.block_size) as usize)?.get()
    }

    /// The messages from other users, oldest first.
    pub fn iter(&self) -> ChannelWindowIter<'_> {
        let observer = match &self.observer {
            Observer::Nobody => None,
            Observer::AuthorOfEnd => self.get(self.end).map(|own| own.user_id.as_str()),
            Observer::User(user_id) => Some(&**user_id),
        };
        ChannelWindowIter {
            window: self,
            observer,
            front: self.start,
            back: self.end,
        }
    }

    /// How many messages [`Self::iter`] yields (counted, not stored).
    pub fn len(&self) -> usize {
        self.iter().count()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.iter().next().is_none()
    }

    /// The messages as owned copies.
    pub fn to_vec(&self) -> Vec<ChannelMessage> {
        self.iter().cloned().collect()
    }
}

/// Iterator over a [`ChannelWindow`]'s messages from other users.
#[derive(Debug, Clone)]
pub struct ChannelWindowIter<'a> {
    window: &'a ChannelWindow,
    observer: Option<&'a str>,
    /// Next index from the front, and one past the next from the back.
    front: u64,
    back: u64,
}

impl ChannelWindowIter<'_> {
    fn skips(&self, message: &ChannelMessage) -> bool {
        self.observer == Some(message.user_id.as_str())
    }
}

impl<'a> Iterator for ChannelWindowIter<'a> {
    type Item = &'a ChannelMessage;

    fn next(&mut self) -> Option<Self::Item> {
        while self.front < self.back {
            let index = self.front;
            self.front += 1;
            match self.window.get(index) {
                Some(message) if !self.skips(message) => return Some(message),
                _ => {}
            }
        }
        None
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (0, usize::try_from(self.back - self.front).ok())
    }
}

impl DoubleEndedIterator for ChannelWindowIter<'_> {
    fn next_back(&mut self) -> Option<Self::Item> {
        while self.front < self.back {
            self.back -= 1;
            match self.window.get(self.back) {
                Some(message) if !self.skips(message) => return Some(message),
                _ => {}
            }
        }
        None
    }
}

impl<'a> IntoIterator for &'a ChannelWindow {
    type Item = &'a ChannelMessage;
    type IntoIter = ChannelWindowIter<'a>;

    fn into_iter(self) -> Self::IntoIter {
        self.iter()
    }
}

impl std::fmt::Debug for ChannelWindow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

/// What is known about one user in one channel.
///
/// The user state's `observe` returns it as it was *before* the observed message;
/// `record_offence` as it is after the offence. A user never seen is
/// [`UserHistory::default`].
///
/// Messages are shared behind [`Arc`]s: the in-process backend hands out its own stored
/// messages instead of copying their strings on every chat message.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct UserHistory {
    /// Time of the user's first message still remembered.
    pub first_seen_ms: Option<i64>,
    /// Time of the user's latest message.
    pub last_seen_ms: Option<i64>,
    /// Messages seen (offending ones included) since the user was first seen.
    pub messages: u64,
    /// The user's last `state.recent_per_user` messages, oldest first.
    pub recent: Vec<Arc<RecentMessage>>,
    /// Times of the user's last `state.times_per_user` messages, oldest first (in
    /// arrival order, which is time order unless callers send out-of-order timestamps).
    pub message_times_ms: Vec<i64>,
    /// Heat as stored at [`Self::heat_at_ms`]; use [`Self::heat_at`] for its value now.
    pub heat: f64,
    /// When [`Self::heat`] and [`Self::strikes`] were last updated (0 if never).
    pub heat_at_ms: i64,
    /// Strikes as stored at [`Self::heat_at_ms`]: the ladder's long memory, a count of the
    /// user's offences that decays with the channel's (long) memory half-life, where heat decays
    /// with its (short) heat half-life. Use [`Self::strikes_at`] for its value now.
    pub strikes: f64,
    /// Offences recorded since the user was first seen (less those pardoned).
    pub offences: u32,
    /// The rung of the escalation ladder the user stands on: escalating actions (time-outs,
    /// bans) in the current heat episode, counted from the rung the episode started on.
    pub escalation_step: u32,
    /// Time of the latest offence.
    pub last_offence_ms: Option<i64>,
}

/// Clean messages at which [`UserHistory::reputation`]'s trust term reaches one half.
const REPUTATION_HALF_TRUST_MESSAGES: f64 = 200.0;
/// Offences at which [`UserHistory::reputation`]'s distrust term reaches one half.
const REPUTATION_HALF_DISTRUST_OFFENCES: f64 = 2.0;

impl UserHistory {
    /// The heat decayed to `now_ms`: `heat × 0.5^(elapsed / half_life)`. Time never runs
    /// backwards here: a `now_ms` before [`Self::heat_at_ms`] gives the stored heat.
    pub fn heat_at(&self, now_ms: i64, half_life: Duration) -> f64 {
        decay(self.heat, self.heat_at_ms, now_ms, duration_ms(half_life))
    }

    /// The strikes decayed to `now_ms` with the memory half-life, as [`Self::heat_at`] decays
    /// heat.
    pub fn strikes_at(&self, now_ms: i64, memory_half_life: Duration) -> f64 {
        decay(
            self.strikes,
            self.heat_at_ms,
            now_ms,
            duration_ms(memory_half_life),
        )
    }

    /// How far the user is trusted, in `(-1, 1)`; 0 for a user never seen.
    ///
    /// `reputation = c / (c + 200) − o / (o + 2)`, where `o` is [`Self::offences`] and `c` the
    /// clean messages (`messages − o`, at least 0). Clean messages raise it slowly and with
    /// diminishing returns (200 clean messages give +0.5, 1,000 give +0.83); offences lower it
    /// fast (one offence −0.33, two −0.5, ten −0.83). It rises with every clean message and
    /// falls with every offence. Offences are never forgiven here, only by expiry of the whole
    /// history: the short-term memory of misbehaviour is [`Self::heat`].
    pub fn reputation(&self) -> f64 {
        let offences = f64::from(self.offences);
        let clean = self.messages.saturating_sub(u64::from(self.offences)) as f64;
        let trust = clean / (clean + REPUTATION_HALF_TRUST_MESSAGES);
        let distrust = offences / (offences + REPUTATION_HALF_DISTRUST_OFFENCES);
        trust - distrust
    }

    /// Whether any message or offence is recorded.
    pub(crate) fn is_known(&self) -> bool {
        self.messages > 0 || self.offences > 0 || self.first_seen_ms.is_some()
    }
}

/// One offence to record, or to pardon (an overturned appeal takes it back).
///
/// [`Default`] is no offence at all: no heat, no strike, zero half-lives (which forget at
/// once), at time 0.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Offence {
    /// Heat added (after decaying the stored heat to [`Self::at_ms`]); a negative or non-finite
    /// value adds nothing.
    pub heat: f64,
    /// Half-life of the heat's decay. The latest offence's half-life is remembered to decide
    /// when the user's heat is forgotten (expiry).
    pub half_life: Duration,
    /// Strikes added (after decaying the stored strikes to [`Self::at_ms`]): 1 for an offence
    /// the ladder counts, 0 for one it does not; a negative or non-finite value adds nothing.
    pub strikes: f64,
    /// Half-life of the strikes' decay, remembered like [`Self::half_life`].
    pub memory_half_life: Duration,
    /// A time-out or ban that advances [`UserHistory::escalation_step`].
    pub escalates: bool,
    /// The rung the ladder stood on when it decided this offence: recording leaves the user's
    /// [`UserHistory::escalation_step`] at least here (plus one if it escalates), so a ladder
    /// that resumed from remembered strikes after a cool-down climbs on from where it resumed.
    pub ladder_step: u32,
    /// When it happened, Unix milliseconds.
    pub at_ms: i64,
}

impl Offence {
    /// [`Self::heat`], or 0 if it is negative or not finite (heat never goes below 0, and a NaN
    /// would poison it for good).
    pub(crate) fn added_heat(&self) -> f64 {
        non_negative(self.heat)
    }

    /// [`Self::strikes`], or 0 if it is negative or not finite.
    pub(crate) fn added_strikes(&self) -> f64 {
        non_negative(self.strikes)
    }
}

/// `value`, or 0 if it is negative or not finite.
fn non_negative(value: f64) -> f64 {
    if value.is_finite() && value > 0.0 {
        value
    } else {
        0.0
    }
}

/// What pardoning `offence` leaves of a stored amount (heat or strikes) `stored` at
/// `stored_at_ms`: the stored amount less the offence's `added`, decayed from the offence's time
/// to `stored_at_ms` with `half_life_ms`, never below 0.
///
/// Subtracting at the stored time rather than now gives the same value at any later time
/// (decay multiplies everything stored by the same factor), and leaves the stored time, and so
/// the user's expiry, as it was. An offence later than the stored time (recorded elsewhere,
/// say by a degraded replica) is subtracted undecayed. The Redis scripts compute the same
/// (`pardoned` in `common.lua`).
pub(crate) fn pardoned(
    stored: f64,
    stored_at_ms: i64,
    added: f64,
    offence_at_ms: i64,
    half_life_ms: i64,
) -> f64 {
    let taken = decay(added, offence_at_ms, stored_at_ms, half_life_ms);
    let left = stored - taken;
    // Rounding leaves a few ulps where the offence was all there was.
    if left > 1e-12 { left } else { 0.0 }
}

/// A duration in whole milliseconds, saturated to `i64`.
pub(crate) fn duration_ms(duration: Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}

/// `heat` stored at `at_ms`, decayed to `now_ms` with a half-life of `half_life_ms`. The Redis
/// scripts compute the same (`decay` in `redis.rs`'s Lua).
pub(crate) fn decay(heat: f64, at_ms: i64, now_ms: i64, half_life_ms: i64) -> f64 {
    if heat == 0.0 || now_ms <= at_ms {
        return heat;
    }
    if half_life_ms <= 0 {
        return 0.0;
    }
    let elapsed = now_ms.saturating_sub(at_ms) as f64;
    heat * 0.5_f64.powf(elapsed / half_life_ms as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remembered_text_is_cut_on_a_character_boundary() {
        assert_eq!(remembered_text("short"), "short");
        let exact = "a".repeat(REMEMBERED_TEXT_BYTES);
        assert_eq!(remembered_text(&exact), exact);
        // Three-byte characters do not divide 1024: the cut falls back to the last whole one.
        let wide = "\u{20AC}".repeat(REMEMBERED_TEXT_BYTES);
        let cut = remembered_text(&wide);
        assert_eq!(cut.len(), REMEMBERED_TEXT_BYTES / 3 * 3);
        assert!(wide.starts_with(cut));
    }

    #[test]
    fn decay_halves_per_half_life() {
        let minute = 60_000;
        for (heat, at, now, half_life, expected) in [
            (1.0, 0, 0, minute, 1.0),
            (1.0, 0, minute, minute, 0.5),
            (1.0, 0, 2 * minute, minute, 0.25),
            (4.0, 1_000, 1_000 + 3 * minute, minute, 0.5),
            (1.0, minute, 0, minute, 1.0), // the clock ran backwards: no decay
            (1.0, 0, 1, 0, 0.0),           // zero half-life: gone at once
            (0.0, 0, minute, minute, 0.0),
        ] {
            assert_eq!(
                decay(heat, at, now, half_life),
                expected,
                "decay({heat}, {at}, {now}, {half_life})"
            );
        }
    }

    #[test]
    fn a_pardon_takes_back_the_decayed_offence_never_below_zero() {
        let minute = 60_000;
        for (stored, stored_at, added, offence_at, half_life, expected) in [
            // 2.0 added at 0 is 1.0 of what was stored a half-life later.
            (3.0, minute, 2.0, 0, minute, 2.0),
            (2.0, 0, 2.0, 0, minute, 0.0),
            // Never below 0 (more pardoned than recorded, or recorded elsewhere).
            (1.0, 0, 2.0, 0, minute, 0.0),
            // An offence after the stored time is taken back undecayed.
            (3.0, 0, 2.0, minute, minute, 1.0),
            (0.5, 0, 0.0, 0, minute, 0.5),
        ] {
            assert_eq!(
                pardoned(stored, stored_at, added, offence_at, half_life),
                expected,
                "pardoned({stored}, {stored_at}, {added}, {offence_at}, {half_life})"
            );
        }
        // What rounding leaves of an offence that was all there was is nothing.
        let stored = decay(0.3, 0, 7 * minute, 10 * minute) + 1.0;
        let left = pardoned(stored, 7 * minute, 1.0, 7 * minute, 10 * minute);
        let expected = decay(0.3, 0, 7 * minute, 10 * minute);
        assert!((left - expected).abs() < 1e-15);
        assert_eq!(pardoned(left, 7 * minute, 0.3, 0, 10 * minute), 0.0);
    }

    #[test]
    fn reputation_is_zero_for_a_stranger_and_bounded() {
        assert_eq!(UserHistory::default().reputation(), 0.0);
        let saint = UserHistory {
            messages: u64::MAX,
            ..UserHistory::default()
        };
        let sinner = UserHistory {
            offences: u32::MAX,
            ..UserHistory::default()
        };
        assert!(saint.reputation() <= 1.0 && saint.reputation() > 0.99);
        assert!(sinner.reputation() >= -1.0 && sinner.reputation() < -0.99);
    }

    #[test]
    fn reputation_rises_with_clean_messages_and_falls_with_offences() {
        let at = |messages, offences| {
            UserHistory {
                messages,
                offences,
                ..UserHistory::default()
            }
            .reputation()
        };
        for offences in [0, 1, 5] {
            let mut previous = f64::NEG_INFINITY;
            for messages in [5, 10, 100, 1_000, 100_000] {
                let reputation = at(messages, offences);
                assert!(
                    reputation > previous,
                    "{messages} messages, {offences} offences"
                );
                previous = reputation;
            }
        }
        for messages in [0, 10, 1_000] {
            let mut previous = f64::INFINITY;
            for offences in [0, 1, 2, 10, 100] {
                let reputation = at(messages, offences);
                assert!(
                    reputation < previous,
                    "{messages} messages, {offences} offences"
                );
                previous = reputation;
            }
        }
        // Diminishing returns: the first hundred clean messages count more than the next.
        assert!(at(100, 0) - at(0, 0) > at(200, 0) - at(100, 0));
    }
}
