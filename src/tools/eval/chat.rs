//! `modbot eval --chat`: the team's chat set (`models/chatset`) through the whole decision
//! path — normalising, the rules, the heads, the channel policy and the ladder, as
//! `Moderation.Classify` decides with the configured rules and model — and how much of each
//! category of harm it acts on, how much benign chat it touches, and how much recall survives
//! each evasion.
//!
//! Every line is sent by a user modbot has never seen, in a channel of its own (so lines never
//! meet: evasion variants of one line would otherwise look like a raid). A copypasta line is
//! first posted by two other users in its channel and the third copy is the one judged: that is
//! what a copypasta is. "Acted" is any decision but `allow`. The set's `validation` split is
//! for choosing thresholds; its `test` split is for reporting (see `models/chatset/README.md`).
//!
//! `--peer FILE` adds a column for a peer a user could pick instead (`alt-profanity-check`,
//! whose decisions `scripts/peer_profanity_check.py` writes, one `{"id", "acted"}` per line):
//! its decisions are summarised by the same code as modbot's, line for line.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, UNIX_EPOCH};

use futures_util::StreamExt as _;
use serde::{Deserialize, Serialize};

use super::peer::{PeerDecision, PeerFile};
use crate::domain::{ChatMessage, Decision, ReasonSource};
use crate::engine::decision::{DecideOptions, Engine};
use crate::engine::rules::RuleSet;
use crate::infra::inference::{ModelStatus, Scorer};
use crate::infra::users::{SharedState, StateOptions};
use crate::service::moderate::Moderator;
use crate::tools::datasets::TrainError;
use crate::tools::datasets::data::{each_jsonl, read_bytes};

/// The harm categories, in report order, and the benign one last.
pub const CATEGORIES: &[&str] = &[
    "insult",
    "threat",
    "sexual",
    "identity_attack",
    "spam",
    "flood",
    "copypasta",
    "benign",
];

/// Categories counted as toxic in the targets.
const TOXIC: &[&str] = &["insult", "threat", "sexual", "identity_attack"];

/// Benign kinds that must stay clean above all (issue 21's ≤ 2% target).
const PROTECTED_KINDS: &[&str] = &["identity-mention", "scunthorpe"];

/// Lines decided at once (the model batches them).
const IN_FLIGHT: usize = 32;

/// One line of `lines.jsonl` or `evasions.jsonl`.
#[derive(Debug, Clone, Deserialize)]
pub struct ChatLine {
    /// `category/NNN`, or `category/NNN~technique` for an evasion variant.
    pub id: String,
    /// What the user typed.
    pub text: String,
    /// One of [`CATEGORIES`].
    pub category: String,
    /// The sub-category.
    pub kind: String,
    /// `validation` or `test`.
    pub split: String,
    /// The evasion technique, for a variant.
    #[serde(default)]
    pub evasion: Option<String>,
    /// The original line's id, for a variant.
    #[serde(default)]
    pub of: Option<String>,
}

/// What the whole path decided for one line.
#[derive(Debug, Clone, Serialize)]
pub struct LineOutcome {
    /// The line's id.
    pub id: String,
    /// Its category.
    pub category: String,
    /// Its kind.
    pub kind: String,
    /// Its split.
    pub split: String,
    /// The evasion technique, for a variant.
    pub evasion: Option<String>,
    /// The original line's id, for a variant.
    pub of: Option<String>,
    /// The text.
    pub text: String,
    /// The decision.
    pub decision: String,
    /// The enforced reasons: rule ids, and model labels as `model:head/label`.
    pub reasons: Vec<String>,
    /// Whether a model label was among the enforced reasons.
    pub by_model: bool,
    /// Whether the verdict was degraded (the model did not answer in time).
    pub degraded: bool,
}

impl LineOutcome {
    /// The outcome of `line` decided `decision`, with no reason yet.
    fn of_line(line: &ChatLine, decision: Decision) -> Self {
        Self {
            id: line.id.clone(),
            category: line.category.clone(),
            kind: line.kind.clone(),
            split: line.split.clone(),
            evasion: line.evasion.clone(),
            of: line.of.clone(),
            text: line.text.clone(),
            decision: decision.as_str().to_owned(),
            reasons: Vec::new(),
            by_model: false,
            degraded: false,
        }
    }

    /// Anything but allow.
    pub fn acted(&self) -> bool {
        self.decision != Decision::Allow.as_str()
    }
}

/// Counts of one group of lines.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct Tally {
    /// Lines.
    pub n: usize,
    /// Lines acted on.
    pub acted: usize,
    /// Of those, with a model label among the reasons.
    pub by_model: usize,
}

impl Tally {
    fn add(&mut self, outcome: &LineOutcome) {
        self.n += 1;
        if outcome.acted() {
            self.acted += 1;
            if outcome.by_model {
                self.by_model += 1;
            }
        }
    }

    /// Share acted on (0 for no lines).
    pub fn rate(&self) -> f64 {
        if self.n == 0 {
            0.0
        } else {
            self.acted as f64 / self.n as f64
        }
    }
}

/// How one evasion technique did: its variants against their own originals.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct EvasionTally {
    /// The variants.
    pub variants: Tally,
    /// The originals the variants were made from.
    pub originals: Tally,
}

impl EvasionTally {
    /// The variants' recall as a share of their originals' (1 when the originals were never
    /// caught either).
    pub fn kept(&self) -> f64 {
        if self.originals.acted == 0 {
            1.0
        } else {
            self.variants.rate() / self.originals.rate()
        }
    }
}

/// One split's summary.
#[derive(Debug, Clone, Default, Serialize)]
pub struct SplitSummary {
    /// By category.
    pub categories: BTreeMap<String, Tally>,
    /// By `category/kind`.
    pub kinds: BTreeMap<String, Tally>,
    /// insult, threat, sexual and identity attack together.
    pub toxic: Tally,
    /// Toxic and spam together.
    pub toxic_and_spam: Tally,
    /// Identity mentions and Scunthorpe traps together.
    pub protected_benign: Tally,
    /// By evasion technique.
    pub evasions: BTreeMap<String, EvasionTally>,
    /// Every technique together.
    pub all_evasions: EvasionTally,
    /// Verdicts marked degraded.
    pub degraded: usize,
}

/// A target of issue 21, met or missed.
#[derive(Debug, Clone, Serialize)]
pub struct Target {
    /// What is measured.
    pub what: String,
    /// The value on the split.
    pub value: f64,
    /// The bound.
    pub bound: f64,
    /// `>=` or `<=`.
    pub direction: &'static str,
    /// Whether the value is within the bound.
    pub met: bool,
}

/// The whole report.
#[derive(Debug, Clone, Serialize)]
pub struct ChatReport {
    /// The set's directory.
    pub set: String,
    /// The heads' version, or what the model's status was.
    pub model: String,
    /// By split (`validation`, `test`).
    pub splits: BTreeMap<String, SplitSummary>,
    /// The targets on the test split.
    pub targets: Vec<Target>,
    /// The peer's decisions on the same lines, when given (`--peer`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub peer: Option<PeerReport>,
}

/// A peer's decisions on the chat set, summarised as modbot's are.
#[derive(Debug, Clone, Serialize)]
pub struct PeerReport {
    /// Its name, from the file (`"peer"` lines), or the file's name.
    pub name: String,
    /// By split.
    pub splits: BTreeMap<String, SplitSummary>,
    /// The same targets on the test split.
    pub targets: Vec<Target>,
}

/// A peer's decisions (`{"id", "acted"[, "peer"]}` per line) as outcomes of `lines`: every
/// line must have exactly one decision, and every decision a line.
pub fn peer_outcomes(
    path: &Path,
    lines: &[ChatLine],
) -> Result<(String, Vec<LineOutcome>), TrainError> {
    let mut file = PeerFile::read(path)?;
    let mut outcomes = Vec::with_capacity(lines.len());
    for line in lines {
        let Some(PeerDecision { acted, .. }) = file.take("", &line.id) else {
            return Err(TrainError::Missing(format!(
                "{}: no decision for the chat line `{}`",
                path.display(),
                line.id
            )));
        };
        let decision = if acted {
            Decision::Hide
        } else {
            Decision::Allow
        };
        outcomes.push(LineOutcome::of_line(line, decision));
    }
    if let Some(stray) = file.left_in("") {
        return Err(TrainError::Missing(format!(
            "{}: `{stray}` is not a line of the chat set",
            path.display()
        )));
    }
    Ok((file.name, outcomes))
}

/// Reads a JSONL file of chat lines, checking each line's category and split.
pub fn read_lines(path: &Path) -> Result<Vec<ChatLine>, TrainError> {
    let bytes = read_bytes(path)?;
    let mut lines = Vec::new();
    each_jsonl(path, &bytes, |line: ChatLine| {
        if !CATEGORIES.contains(&line.category.as_str()) {
            return Err(format!(
                "category: `{}` is not one of {CATEGORIES:?}",
                line.category
            ));
        }
        if line.split != "validation" && line.split != "test" {
            return Err(format!(
                "split: `{}` is neither validation nor test",
                line.split
            ));
        }
        if line.evasion.is_some() != line.of.is_some() {
            return Err("an evasion variant names both `evasion` and `of`".into());
        }
        lines.push(line);
        Ok(())
    })?;
    Ok(lines)
}

/// Summarises outcomes by split.
pub fn summarise(outcomes: &[LineOutcome]) -> BTreeMap<String, SplitSummary> {
    let by_id: BTreeMap<&str, &LineOutcome> = outcomes
        .iter()
        .filter(|o| o.evasion.is_none())
        .map(|o| (o.id.as_str(), o))
        .collect();
    let mut splits: BTreeMap<String, SplitSummary> = BTreeMap::new();
    for outcome in outcomes {
        let summary = splits.entry(outcome.split.clone()).or_default();
        if outcome.degraded {
            summary.degraded += 1;
        }
        if let (Some(technique), Some(of)) = (&outcome.evasion, &outcome.of) {
            let Some(original) = by_id.get(of.as_str()) else {
                continue;
            };
            for tally in [
                summary.evasions.entry(technique.clone()).or_default(),
                &mut summary.all_evasions,
            ] {
                tally.variants.add(outcome);
                tally.originals.add(original);
            }
            continue;
        }
        summary
            .categories
            .entry(outcome.category.clone())
            .or_default()
            .add(outcome);
        summary
            .kinds
            .entry(format!("{}/{}", outcome.category, outcome.kind))
            .or_default()
            .add(outcome);
        let category = outcome.category.as_str();
        if TOXIC.contains(&category) {
            summary.toxic.add(outcome);
        }
        if TOXIC.contains(&category) || category == "spam" {
            summary.toxic_and_spam.add(outcome);
        }
        if category == "benign" && PROTECTED_KINDS.contains(&outcome.kind.as_str()) {
            summary.protected_benign.add(outcome);
        }
    }
    splits
}

/// Issue 21's targets for the chat set, on one split.
pub fn targets(summary: &SplitSummary) -> Vec<Target> {
    let benign = summary
        .categories
        .get("benign")
        .cloned()
        .unwrap_or_default();
    let threat = summary
        .categories
        .get("threat")
        .cloned()
        .unwrap_or_default();
    let at_least = |what: &str, value: f64, bound: f64| Target {
        what: what.to_owned(),
        value,
        bound,
        direction: ">=",
        met: value >= bound,
    };
    let at_most = |what: &str, value: f64, bound: f64| Target {
        what: what.to_owned(),
        value,
        bound,
        direction: "<=",
        met: value <= bound,
    };
    vec![
        at_least("toxic + spam recall", summary.toxic_and_spam.rate(), 0.90),
        at_most("benign lines acted on", benign.rate(), 0.03),
        at_least("threat recall", threat.rate(), 0.90),
        at_least(
            "evasions keep plain recall",
            summary.all_evasions.kept(),
            0.95,
        ),
        at_most(
            "identity mentions + Scunthorpe acted on",
            summary.protected_benign.rate(),
            0.02,
        ),
    ]
}

/// Decides every line (and every evasion variant) through a moderator built like the server's
/// — the configured rules file, policy and model — and returns the outcomes in input order.
pub async fn decide_all(
    rules: RuleSet,
    scorer: Scorer,
    lines: &[ChatLine],
) -> Result<Vec<LineOutcome>, TrainError> {
    let moderator = Moderator::new(
        Engine::new(rules),
        SharedState::memory(StateOptions::default()),
        scorer,
    );
    let moderator = &moderator;
    let start = UNIX_EPOCH + Duration::from_secs(1_800_000_000);
    let outcomes: Vec<Result<LineOutcome, TrainError>> =
        futures_util::stream::iter(lines.iter().enumerate())
            .map(|(index, line)| async move {
                let channel = format!("chatset-{index}");
                // A copypasta is judged on its third copy, each from a different user.
                let copies = if line.category == "copypasta" { 3 } else { 1 };
                let mut verdict = None;
                for copy in 0..copies {
                    let user = format!("chatset-{index}-{copy}");
                    let message = ChatMessage {
                        channel: channel.clone(),
                        message_id: format!("{}#{copy}", line.id),
                        user_id: user.clone(),
                        nick: user,
                        roles: Vec::new(),
                        text: line.text.clone(),
                        sent_at: start + Duration::from_secs(copy * 5),
                    };
                    verdict = Some(
                        moderator
                            .moderate(&message, DecideOptions::default(), Instant::now())
                            .await
                            .map_err(|overloaded| {
                                TrainError::Other(format!(
                                    "{}: the model's queue refused the line: {overloaded}",
                                    line.id
                                ))
                            })?,
                    );
                }
                let verdict = verdict.expect("at least one copy");
                let mut outcome = LineOutcome::of_line(line, verdict.decision);
                outcome.degraded = !verdict.degraded.is_empty();
                for reason in verdict.reasons.iter().filter(|r| !r.shadow) {
                    match reason.source {
                        ReasonSource::Rule => outcome.reasons.push(reason.rule_id.clone()),
                        ReasonSource::Model => {
                            outcome.by_model = true;
                            outcome.reasons.push(format!("model:{}", reason.label));
                        }
                        other => outcome.reasons.push(other.as_str().to_owned()),
                    }
                }
                Ok(outcome)
            })
            .buffered(IN_FLIGHT)
            .collect()
            .await;
    outcomes.into_iter().collect()
}

/// The set in `dir`: `lines.jsonl` and, when present, `evasions.jsonl`.
pub fn read_set(dir: &Path) -> Result<Vec<ChatLine>, TrainError> {
    let mut lines = read_lines(&dir.join("lines.jsonl"))?;
    let evasions = dir.join("evasions.jsonl");
    if evasions.exists() {
        lines.extend(read_lines(&evasions)?);
    }
    if lines.is_empty() {
        return Err(TrainError::Missing(format!(
            "no chat lines in {}",
            dir.display()
        )));
    }
    Ok(lines)
}

/// What `modbot eval --chat` runs: the set, the moderator's parts, and where to write each
/// line's outcome.
pub struct ChatEvalOptions {
    /// The set's directory.
    pub dir: PathBuf,
    /// The compiled rules (the configured rules file, or the built-in set).
    pub rules: RuleSet,
    /// The model, loaded as the server loads it.
    pub scorer: Scorer,
    /// Print JSON instead of tables.
    pub json: bool,
    /// Write every line's outcome here (JSONL).
    pub scores_out: Option<PathBuf>,
    /// A peer's decisions on the same lines, for a column beside modbot's.
    pub peer: Option<PathBuf>,
}

/// Runs the chat evaluation and prints it; the report is returned for tests.
pub async fn run(options: ChatEvalOptions) -> Result<ChatReport, TrainError> {
    let lines = read_set(&options.dir)?;
    // Read before the lines are decided: a bad peer file is refused at once.
    let peer = match &options.peer {
        Some(path) => {
            let (name, outcomes) = peer_outcomes(path, &lines)?;
            let splits = summarise(&outcomes);
            let targets = splits.get("test").map(targets).unwrap_or_default();
            Some(PeerReport {
                name,
                splits,
                targets,
            })
        }
        None => None,
    };
    let model = match &*options.scorer.status().borrow() {
        ModelStatus::Ready => format!("heads@{}", options.scorer.version()),
        other => format!("no model scoring ({other:?}): rules only"),
    };
    eprintln!(
        "chat set {}: {} lines through the whole path ({model})",
        options.dir.display(),
        lines.len()
    );
    let started = Instant::now();
    let outcomes = decide_all(options.rules, options.scorer, &lines).await?;
    eprintln!("decided in {:.1} s", started.elapsed().as_secs_f64());
    if let Some(path) = &options.scores_out {
        let mut out = String::new();
        for outcome in &outcomes {
            out.push_str(&serde_json::to_string(outcome).expect("outcomes serialise"));
            out.push('\n');
        }
        std::fs::write(path, out).map_err(|source| TrainError::Io {
            what: "writing",
            path: path.clone(),
            source,
        })?;
        eprintln!("wrote every line's outcome to {}", path.display());
    }
    let splits = summarise(&outcomes);
    let targets = splits.get("test").map(targets).unwrap_or_default();
    let report = ChatReport {
        set: options.dir.display().to_string(),
        model,
        splits,
        targets,
        peer,
    };
    if options.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&report).expect("the report serialises")
        );
    } else {
        print!("{}", tables(&report));
    }
    Ok(report)
}

fn percent(tally: &Tally) -> String {
    format!("{}/{} ({:.1}%)", tally.acted, tally.n, 100.0 * tally.rate())
}

/// The report as Markdown tables: by category, benign by kind, evasions, targets.
pub fn tables(report: &ChatReport) -> String {
    let mut out = String::new();
    let splits: Vec<&str> = ["validation", "test"]
        .into_iter()
        .filter(|s| report.splits.contains_key(*s))
        .collect();
    let get = |split: &str| &report.splits[split];
    let _ = writeln!(
        out,
        "\nChat set {} through the whole path ({}); acted = any decision but allow\n",
        report.set, report.model
    );
    // The peer's test split, when there is a peer: one more column in each table.
    let peer_test = report
        .peer
        .as_ref()
        .and_then(|p| p.splits.get("test").map(|s| (p.name.as_str(), s)));
    let peer_header = peer_test.map_or(String::new(), |(name, _)| format!(" {name} (test) |"));
    let _ = writeln!(
        out,
        "| category | {} | of which by the model (test) |{peer_header}",
        splits.join(" | ")
    );
    let _ = writeln!(
        out,
        "| --- |{} --- |{}",
        " --- |".repeat(splits.len()),
        if peer_test.is_some() { " --- |" } else { "" }
    );
    let mut row = |name: &str, pick: &dyn Fn(&SplitSummary) -> Tally| {
        let cells: Vec<String> = splits.iter().map(|s| percent(&pick(get(s)))).collect();
        let by_model = splits
            .last()
            .map(|s| pick(get(s)).by_model.to_string())
            .unwrap_or_default();
        let peer = peer_test.map_or(String::new(), |(_, s)| format!(" {} |", percent(&pick(s))));
        let _ = writeln!(out, "| {name} | {} | {by_model} |{peer}", cells.join(" | "));
    };
    for category in CATEGORIES {
        row(category, &|s: &SplitSummary| {
            s.categories.get(*category).cloned().unwrap_or_default()
        });
    }
    row("**toxic** (insult, threat, sexual, identity)", &|s| {
        s.toxic.clone()
    });
    row("**toxic + spam**", &|s| s.toxic_and_spam.clone());
    row("identity mentions + Scunthorpe", &|s| {
        s.protected_benign.clone()
    });

    let _ = writeln!(out, "\n| kind | {} |", splits.join(" | "));
    let _ = writeln!(out, "| --- |{}", " --- |".repeat(splits.len()));
    let kinds: std::collections::BTreeSet<&String> = report
        .splits
        .values()
        .flat_map(|s| s.kinds.keys())
        .collect();
    for kind in kinds {
        let cells: Vec<String> = splits
            .iter()
            .map(|s| percent(&get(s).kinds.get(kind).cloned().unwrap_or_default()))
            .collect();
        let _ = writeln!(out, "| {kind} | {} |", cells.join(" | "));
    }

    let _ = writeln!(
        out,
        "\n| evasion | {} |{peer_header}",
        splits
            .iter()
            .map(|s| format!("{s}: variants acted / kept of plain recall"))
            .collect::<Vec<_>>()
            .join(" | ")
    );
    let _ = writeln!(
        out,
        "| --- |{}{}",
        " --- |".repeat(splits.len()),
        if peer_test.is_some() { " --- |" } else { "" }
    );
    let techniques: std::collections::BTreeSet<&String> = report
        .splits
        .values()
        .flat_map(|s| s.evasions.keys())
        .collect();
    let evasion_cells = |pick: &dyn Fn(&SplitSummary) -> EvasionTally| -> String {
        let cell = |tally: EvasionTally| {
            format!(
                "{} / {:.1}%",
                percent(&tally.variants),
                100.0 * tally.kept()
            )
        };
        let mut cells: Vec<String> = splits.iter().map(|s| cell(pick(get(s)))).collect();
        if let Some((_, s)) = peer_test {
            cells.push(cell(pick(s)));
        }
        cells.join(" | ")
    };
    for technique in techniques {
        let cells = evasion_cells(&|s: &SplitSummary| {
            s.evasions.get(technique).cloned().unwrap_or_default()
        });
        let _ = writeln!(out, "| {technique} | {cells} |");
    }
    let cells = evasion_cells(&|s: &SplitSummary| s.all_evasions.clone());
    let _ = writeln!(out, "| **all** | {cells} |");

    if !report.targets.is_empty() {
        let peer = report.peer.as_ref().filter(|p| !p.targets.is_empty());
        let _ = writeln!(
            out,
            "\n| target (test split) | value | bound | |{}",
            peer.map_or(String::new(), |p| format!(" {} |", p.name))
        );
        let _ = writeln!(
            out,
            "| --- | --- | --- | --- |{}",
            if peer.is_some() { " --- |" } else { "" }
        );
        for (i, target) in report.targets.iter().enumerate() {
            let peer_cell = peer
                .and_then(|p| p.targets.get(i))
                .map_or(String::new(), |t| {
                    format!(
                        " {:.3} ({}) |",
                        t.value,
                        if t.met { "met" } else { "missed" }
                    )
                });
            let _ = writeln!(
                out,
                "| {} | {:.3} | {} {:.2} | {} |{peer_cell}",
                target.what,
                target.value,
                target.direction,
                target.bound,
                if target.met { "met" } else { "**missed**" }
            );
        }
    }
    let degraded: usize = report.splits.values().map(|s| s.degraded).sum();
    if degraded > 0 {
        let _ = writeln!(
            out,
            "\nwarning: {degraded} verdicts were degraded (the model did not answer in time): \
             their lines were decided by the rules alone"
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outcome(id: &str, category: &str, kind: &str, split: &str, acted: bool) -> LineOutcome {
        LineOutcome {
            id: id.into(),
            category: category.into(),
            kind: kind.into(),
            split: split.into(),
            evasion: None,
            of: None,
            text: String::new(),
            decision: if acted { "hide" } else { "allow" }.into(),
            reasons: Vec::new(),
            by_model: acted,
            degraded: false,
        }
    }

    fn variant(of: &str, technique: &str, split: &str, acted: bool) -> LineOutcome {
        LineOutcome {
            id: format!("{of}~{technique}"),
            evasion: Some(technique.into()),
            of: Some(of.into()),
            ..outcome("", "insult", "direct", split, acted)
        }
    }

    #[test]
    fn summaries_count_categories_kinds_targets_and_evasions_by_split() {
        let outcomes = vec![
            outcome("insult/1", "insult", "direct", "test", true),
            outcome("insult/2", "insult", "direct", "test", false),
            outcome("threat/1", "threat", "to-person", "test", true),
            outcome("spam/1", "spam", "dating", "test", true),
            outcome("benign/1", "benign", "scunthorpe", "test", true),
            outcome("benign/2", "benign", "gaming", "test", false),
            outcome(
                "benign/3",
                "benign",
                "identity-mention",
                "validation",
                false,
            ),
            variant("insult/1", "spaced", "test", true),
            variant("insult/1", "dotted", "test", false),
            variant("insult/2", "spaced", "test", false),
            variant("threat/9", "spaced", "test", true),
        ];
        let splits = summarise(&outcomes);
        let test = &splits["test"];
        assert_eq!(
            test.categories["insult"],
            Tally {
                n: 2,
                acted: 1,
                by_model: 1
            }
        );
        assert_eq!(test.toxic.n, 3);
        assert_eq!(test.toxic_and_spam.acted, 3);
        assert_eq!(
            test.protected_benign,
            Tally {
                n: 1,
                acted: 1,
                by_model: 1
            }
        );
        assert_eq!(test.kinds["benign/gaming"].n, 1);
        // Variants of a line the set does not have are not counted.
        let spaced = &test.evasions["spaced"];
        assert_eq!(
            spaced.variants,
            Tally {
                n: 2,
                acted: 1,
                by_model: 1
            }
        );
        assert_eq!(
            spaced.originals,
            Tally {
                n: 2,
                acted: 1,
                by_model: 1
            }
        );
        assert!((spaced.kept() - 1.0).abs() < 1e-12);
        assert!((test.evasions["dotted"].kept() - 0.0).abs() < 1e-12);
        assert!((test.all_evasions.kept() - (1.0 / 3.0) / (2.0 / 3.0)).abs() < 1e-12);
        assert_eq!(splits["validation"].categories["benign"].n, 1);

        let targets = targets(test);
        let by_name = |what: &str| targets.iter().find(|t| t.what == what).unwrap();
        assert!(!by_name("toxic + spam recall").met, "3 of 4");
        assert!(by_name("threat recall").met);
        assert!(!by_name("benign lines acted on").met, "1 of 2");
        assert!(!by_name("identity mentions + Scunthorpe acted on").met);
        let printed = tables(&ChatReport {
            set: "x".into(),
            model: "heads@test".into(),
            splits,
            targets,
            peer: None,
        });
        assert!(
            printed.contains("| insult | 0/0 (0.0%) | 1/2 (50.0%) | 1 |"),
            "{printed}"
        );
        assert!(printed.contains("**missed**"), "{printed}");
    }

    fn chat_line(id: &str, category: &str, split: &str, of: Option<&str>) -> ChatLine {
        ChatLine {
            id: id.into(),
            text: "t".into(),
            category: category.into(),
            kind: "k".into(),
            split: split.into(),
            evasion: of.map(|_| "spaced".to_owned()),
            of: of.map(str::to_owned),
        }
    }

    /// A peer's decisions are summarised by the same code, line for line, and printed as one
    /// more column; a file that misses a line, names one twice or one the set lacks is refused.
    #[test]
    fn a_peer_is_a_column_beside_modbot_and_its_file_must_match_the_set() {
        let dir = tempfile::tempdir().unwrap();
        let lines = [
            chat_line("insult/1", "insult", "test", None),
            chat_line("insult/2", "insult", "test", None),
            chat_line("benign/1", "benign", "test", None),
            chat_line("insult/1~spaced", "insult", "test", Some("insult/1")),
        ];
        let write = |name: &str, rows: &[(&str, bool)]| {
            let path = dir.path().join(name);
            let text: String = rows
                .iter()
                .enumerate()
                .map(|(i, (id, acted))| {
                    let peer = if i == 0 {
                        ",\"peer\":\"alt-profanity-check\""
                    } else {
                        ""
                    };
                    format!("{{\"id\":\"{id}\",\"acted\":{acted}{peer}}}\n")
                })
                .collect();
            std::fs::write(&path, text).unwrap();
            path
        };
        let good = write(
            "peer.jsonl",
            &[
                ("insult/1", true),
                ("insult/2", false),
                ("benign/1", true),
                ("insult/1~spaced", false),
            ],
        );
        let (name, outcomes) = peer_outcomes(&good, &lines).unwrap();
        assert_eq!(name, "alt-profanity-check");
        let splits = summarise(&outcomes);
        let test = &splits["test"];
        assert_eq!((test.toxic.n, test.toxic.acted), (2, 1));
        assert_eq!(test.categories["benign"].acted, 1);
        assert!((test.all_evasions.kept() - 0.0).abs() < 1e-12);

        let ours = summarise(&[
            outcome("insult/1", "insult", "direct", "test", true),
            outcome("insult/2", "insult", "direct", "test", true),
            outcome("benign/1", "benign", "gaming", "test", false),
        ]);
        let printed = tables(&ChatReport {
            set: "x".into(),
            model: "heads@test".into(),
            targets: targets(&ours["test"]),
            splits: ours,
            peer: Some(PeerReport {
                name,
                targets: targets(test),
                splits,
            }),
        });
        assert!(
            printed.contains("| of which by the model (test) | alt-profanity-check (test) |"),
            "{printed}"
        );
        assert!(
            printed.contains("| insult | 2/2 (100.0%) | 2 | 1/2 (50.0%) |"),
            "{printed}"
        );
        assert!(
            printed.contains("| benign lines acted on | 0.000 | <= 0.03 | met | 1.000 (missed) |"),
            "{printed}"
        );

        for (rows, expected) in [
            (
                &[("insult/1", true), ("insult/2", false), ("benign/1", true)][..],
                "no decision for the chat line `insult/1~spaced`",
            ),
            (
                &[
                    ("insult/1", true),
                    ("insult/2", false),
                    ("benign/1", true),
                    ("insult/1~spaced", false),
                    ("spam/9", true),
                ][..],
                "`spam/9` is not a line of the chat set",
            ),
            (
                &[("insult/1", true), ("insult/1", false)][..],
                "peer.jsonl:2: id: `insult/1` is decided twice",
            ),
        ] {
            let path = write("peer.jsonl", rows);
            let error = peer_outcomes(&path, &lines).unwrap_err().to_string();
            assert!(error.contains(expected), "{error}");
        }
        std::fs::write(&good, "{\"id\":\"insult/1\",\"flagged\":true}\n").unwrap();
        let error = peer_outcomes(&good, &lines).unwrap_err().to_string();
        assert!(error.contains("peer.jsonl:1:"), "{error}");
    }

    #[test]
    fn bad_lines_are_refused_with_their_place() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("lines.jsonl");
        std::fs::write(
            &path,
            "{\"id\":\"a/1\",\"text\":\"hi\",\"category\":\"benign\",\"kind\":\"k\",\"split\":\"test\"}\n\
             {\"id\":\"a/2\",\"text\":\"hi\",\"category\":\"rude\",\"kind\":\"k\",\"split\":\"test\"}\n",
        )
        .unwrap();
        let error = read_lines(&path).unwrap_err().to_string();
        assert!(error.contains("lines.jsonl:2: category: `rude`"), "{error}");
    }

    #[tokio::test]
    async fn the_committed_set_reads_and_the_rules_alone_catch_its_floods() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("models/chatset");
        let lines = read_set(&dir).unwrap();
        assert!(lines.len() > 600, "{}", lines.len());
        let flood_and_pasta: Vec<ChatLine> = lines
            .into_iter()
            .filter(|l| l.category == "flood" || l.category == "copypasta" || l.id == "benign/001")
            .collect();
        let rules = RuleSet::parse(crate::engine::rules::DEFAULT_RULES, "built-in").unwrap();
        let scorer = Scorer::idle(
            ModelStatus::Off,
            crate::infra::inference::Description::default(),
        );
        let outcomes = decide_all(rules, scorer, &flood_and_pasta).await.unwrap();
        let summary = summarise(&outcomes);
        let all = |category: &str| {
            summary
                .values()
                .map(|s| s.categories.get(category).cloned().unwrap_or_default())
                .fold(Tally::default(), |a, b| Tally {
                    n: a.n + b.n,
                    acted: a.acted + b.acted,
                    by_model: a.by_model + b.by_model,
                })
        };
        // The built-in rules alone: most floods, and copypasta on the third copy.
        assert!(all("flood").rate() >= 0.7, "{:?}", all("flood"));
        assert!(all("copypasta").rate() >= 0.5, "{:?}", all("copypasta"));
        assert_eq!(all("benign").acted, 0, "benign/001 is plain chat");
    }
}
