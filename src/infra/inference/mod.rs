//! Model scoring for the decision pipeline: one dynamic batching queue, a score cache, and the
//! model's health.
//!
//! Every caller (`Classify`, every `StreamModerate` session) hands a normalised text to the
//! one [`Scorer`]. The scorer answers from its LRU cache when it can (chat repeats itself:
//! emote spam, copypastas), else tokenises the text on the caller's task, takes a queue slot
//! (admission control: a full queue is an immediate, explicit answer, never an unbounded
//! wait) and sends a job to the model thread. The model thread ([`queue`]) gathers jobs into
//! batches bounded by a request count and a token budget, lingers briefly for company when
//! the queue is short, skips jobs whose caller has gone, runs the encoder and the heads once
//! per distinct text, fills the cache and answers.
//!
//! Learned from text-embeddings-inference (`core/src/queue.rs`, `infer.rs`): admission by
//! semaphore before queueing, token-budgeted batches, the model on its own thread.
//!
//! Architecture Invariant: the scorer never decides anything. It returns scores, or says why
//! it has none ([`Scores::Unavailable`]), and the decision engine turns that into model
//! reasons or a rules-only verdict marked degraded. A model that fails never fails a call.

mod cache;
mod lineup;
mod load;
mod queue;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use tokio::sync::{Semaphore, TryAcquireError, oneshot, watch};

pub use self::cache::{ScoreCache, TextKey};
pub use self::lineup::{HeadSet, Lineup, SplitUnit, Trial, TrialMode, split_point};
use self::queue::Job;
use crate::domain::LinkSignals;
use crate::infra::model::{Encoder, ModelError};
pub use load::open_model;

/// One text as the model thread sees it, prepared on its caller's task.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Input<'a> {
    /// Its token ids ([`BatchModel::tokenize`]).
    pub tokens: &'a [u32],
    /// Its lexical inputs for every head set of the lineup ([`Lineup::lexical`]).
    pub lexical: &'a [f32],
}

/// What runs the model: tokenises on callers' tasks, scores batches on the model thread.
pub trait BatchModel: Send + Sync + 'static {
    /// Token ids of a text, special tokens included, truncated as the model needs.
    fn tokenize(&self, text: &str) -> Result<Vec<u32>, String>;
    /// Label probabilities for each input, in order: every set of `lineup` on one encoder
    /// pass, the active set's labels first ([`Lineup::split`]).
    fn score(&self, batch: &[Input<'_>], lineup: &Lineup) -> Result<Vec<Vec<f32>>, String>;
}

/// The real backend: the encoder, then every head of the lineup on its embedding.
pub struct ModelBackend {
    encoder: Encoder,
}

impl ModelBackend {
    /// An encoder, to serve whatever heads the scorer's lineup holds.
    pub fn new(encoder: Encoder) -> Self {
        Self { encoder }
    }
}

impl BatchModel for ModelBackend {
    fn tokenize(&self, text: &str) -> Result<Vec<u32>, String> {
        self.encoder.tokenize(text).map_err(|e| e.to_string())
    }

    fn score(&self, batch: &[Input<'_>], lineup: &Lineup) -> Result<Vec<Vec<f32>>, String> {
        let mut scores = vec![Vec::new(); batch.len()];
        // The packed CPU forward does no padding and takes the batch whole; a padded forward
        // (candle, e.g. on a GPU) runs length buckets, so one long message does not make the
        // whole batch as long as itself.
        let buckets = if self.encoder.pads_batches() {
            let tokens: Vec<&[u32]> = batch.iter().map(|input| input.tokens).collect();
            length_buckets(&tokens)
        } else {
            vec![(0..batch.len()).collect()]
        };
        for bucket in buckets {
            let owned: Vec<Vec<u32>> = bucket.iter().map(|&i| batch[i].tokens.to_vec()).collect();
            let embeddings = self
                .encoder
                .embed_tokens(&owned)
                .map_err(|e: ModelError| e.to_string())?;
            let rows: Vec<&[f32]> = embeddings.iter().map(Vec::as_slice).collect();
            for (set, inputs) in lineup.sets() {
                let lexicals: Vec<&[f32]> = bucket
                    .iter()
                    .map(|&i| batch[i].lexical.get(inputs.clone()).unwrap_or_default())
                    .collect();
                for (&i, row) in bucket.iter().zip(set.heads.score_batch(&rows, &lexicals)) {
                    scores[i].extend(row);
                }
            }
        }
        Ok(scores)
    }
}

/// Most padding a bucket may add, as a share of its real tokens.
const MAX_PADDING: f64 = 0.25;

/// Indices of `batch` grouped by length (shortest first) so that padding each group to its
/// longest member adds at most [`MAX_PADDING`] of its real tokens.
fn length_buckets(batch: &[&[u32]]) -> Vec<Vec<usize>> {
    let mut order: Vec<usize> = (0..batch.len()).collect();
    order.sort_by_key(|&i| batch[i].len());
    let mut buckets: Vec<Vec<usize>> = Vec::new();
    let mut real = 0usize;
    for i in order {
        let len = batch[i].len();
        let fits = buckets.last().is_some_and(|b| {
            let padded = (b.len() + 1) * len;
            padded as f64 <= (1.0 + MAX_PADDING) * (real + len) as f64
        });
        if fits {
            real += len;
            buckets.last_mut().expect("checked").push(i);
        } else {
            real = len;
            buckets.push(vec![i]);
        }
    }
    buckets
}

/// Batching limits and waits (from `[model]`).
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Most messages per batch.
    pub max_batch_messages: usize,
    /// Most tokens per batch.
    pub max_batch_tokens: usize,
    /// How long a batch waits for company after its first message.
    pub linger: Duration,
    /// Most messages waiting.
    pub max_queue: usize,
    /// Longest wait for scores.
    pub max_wait: Duration,
    /// Cache entries (0: none).
    pub cache_entries: usize,
}

impl Limits {
    /// The limits configured in `[model]`.
    pub fn from_config(config: &crate::config::ModelConfig) -> Self {
        Self {
            max_batch_messages: config.max_batch_messages as usize,
            max_batch_tokens: config.max_batch_tokens as usize,
            linger: Duration::from_micros(config.linger_us),
            max_queue: config.max_queue as usize,
            max_wait: Duration::from_millis(config.max_wait_ms),
            cache_entries: config.cache_entries as usize,
        }
    }
}

/// The model's state, as health and `GetModelInfo` report it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModelStatus {
    /// No model is configured: rules only, by choice (not degraded).
    Off,
    /// The encoder is loaded but there are no heads: nothing to score, rules only (not
    /// degraded).
    NoHeads,
    /// Scoring.
    Ready,
    /// Configured but not answering: every message it would score is decided by the rules
    /// alone and marked degraded.
    Failed(ModelFailure),
}

/// Why a configured model is not scoring at all.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ModelFailure {
    /// No model in its directory, and fetching it is turned off.
    #[error(
        "no model in {dir} (run `modbot fetch-model`, or set model.dir = \"\" to decide by the \
         rules alone)"
    )]
    Missing {
        /// `model.dir`.
        dir: String,
    },
    /// No model in its directory, and fetching the default one failed.
    #[error("no model in {dir} and fetching it failed: {error}")]
    Fetch {
        /// `model.dir`.
        dir: String,
        /// Why.
        error: String,
    },
    /// Loading panicked.
    #[error("loading the model panicked: {0}")]
    LoadPanicked(String),
    /// The device could not be opened.
    #[error("device {device}: {error}")]
    Device {
        /// `cpu` or `cuda:N`.
        device: String,
        /// Why.
        error: String,
    },
    /// The encoder's files could not be loaded.
    #[error("loading the encoder from {dir}: {error}")]
    Encoder {
        /// `model.dir`.
        dir: String,
        /// Why.
        error: String,
    },
    /// The encoder failed its warm-up batch.
    #[error("the encoder failed its first pass: {0}")]
    FirstPass(String),
    /// The weights' digest could not be computed.
    #[error("{0}")]
    Weights(String),
    /// The heads could not be loaded.
    #[error("loading the heads: {0}")]
    Heads(String),
    /// Batches kept failing.
    #[error("inference failed {failures} times in a row: {last}")]
    Failing {
        /// Failed batches in a row.
        failures: u32,
        /// The last batch's error.
        last: String,
    },
}

/// Why the model did not score one text: the message is decided by the rules alone, marked
/// degraded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Unavailable {
    /// The model is not scoring at all.
    #[error(transparent)]
    Failed(ModelFailure),
    /// No answer within `model.max_wait_ms`.
    #[error("the model did not answer within model.max_wait_ms")]
    TimedOut,
    /// The queue stayed full for `model.max_wait_ms`.
    #[error("the model queue stayed full ({waiting} waiting) for model.max_wait_ms")]
    QueueFull {
        /// `model.max_queue`.
        waiting: usize,
    },
    /// The queue refused the text at once ([`Overloaded`]).
    #[error("{0}")]
    Overloaded(Overloaded),
    /// The model thread has stopped.
    #[error("the model thread stopped")]
    Stopped,
    /// The text could not be tokenised.
    #[error("tokenising: {0}")]
    Tokenize(String),
    /// The batch that held the text failed.
    #[error("{0}")]
    Batch(String),
}

impl ModelStatus {
    /// Why the model is not scoring, for `GetModelInfo.status_detail`; empty when it is.
    pub fn detail(&self) -> String {
        match self {
            ModelStatus::Off => "no model configured (model.dir is empty): rules only".to_owned(),
            ModelStatus::NoHeads => "the encoder is loaded without classification heads (none in \
                                model.heads_dir; `modbot train` makes them): rules only"
                .to_owned(),
            ModelStatus::Ready => String::new(),
            ModelStatus::Failed(failure) => failure.to_string(),
        }
    }
}

/// What the scorer says about one text.
#[derive(Debug, Clone)]
pub enum Scores {
    /// The model has nothing to say by design (no model, no heads, or not asked).
    NotScored,
    /// Probabilities: the active set's labels, then the candidate's ([`Lineup::split`]).
    Scored {
        /// The lineup that scored the text.
        lineup: Arc<Lineup>,
        /// Its scores.
        scores: Arc<[f32]>,
    },
    /// The model should have scored it but could not; why.
    Unavailable(Unavailable),
}

/// How a caller takes a queue slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// A full queue is an error at once ([`Overloaded`]): for `Classify`, whose caller can
    /// retry.
    FailFast,
    /// Wait for a slot up to the scorer's `max_wait`, then go without scores: for streams,
    /// which push back on their bridge instead.
    Wait,
}

/// The queue was full.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the model queue is full ({queued} messages waiting); retry after {retry_after:?}")]
pub struct Overloaded {
    /// Messages waiting.
    pub queued: usize,
    /// When a retry is likely to find room.
    pub retry_after: Duration,
}

/// A text on its way through the model.
#[derive(Debug)]
pub enum Pending {
    /// Known already.
    Done(Scores),
    /// Queued.
    Queued {
        /// The model thread's answer.
        reply: oneshot::Receiver<Result<Arc<[f32]>, Unavailable>>,
        /// When to give up.
        deadline: Instant,
        /// The lineup it is scored by.
        lineup: Arc<Lineup>,
    },
}

impl Pending {
    /// The scores, once the model thread has them, or `Unavailable` after the deadline.
    pub async fn wait(self) -> Scores {
        match self {
            Pending::Done(scores) => scores,
            Pending::Queued {
                reply,
                deadline,
                lineup,
            } => match tokio::time::timeout_at(deadline.into(), reply).await {
                Ok(Ok(Ok(scores))) => Scores::Scored { lineup, scores },
                Ok(Ok(Err(error))) => Scores::Unavailable(error),
                Ok(Err(_)) => Scores::Unavailable(Unavailable::Stopped),
                Err(_) => {
                    metrics::counter!("modbot_model_timeouts_total").increment(1);
                    Scores::Unavailable(Unavailable::TimedOut)
                }
            },
        }
    }
}

/// What `GetModelInfo` shows of the loaded encoder (the heads are the [`Lineup`]'s).
#[derive(Debug, Clone, Default)]
pub struct Description {
    /// The encoder's name.
    pub encoder: String,
    /// `encoder@hash[/int8]`: the encoder's part of every head set's version.
    pub version: String,
    /// `cpu` or `cuda:N`.
    pub device: String,
    /// Size of an embedding.
    pub embedding_dim: usize,
    /// Longest input in tokens.
    pub max_tokens: usize,
}

struct Running {
    backend: Arc<dyn BatchModel>,
    jobs: std::sync::mpsc::Sender<Job>,
    slots: Arc<Semaphore>,
    cache: Option<Arc<ScoreCache>>,
    /// Recent model time per message, in nanoseconds (for retry hints).
    nanos_per_message: Arc<AtomicU64>,
}

/// The shared scorer. Cheap to share behind the `Services`; the model thread stops when the last
/// scorer is dropped.
pub struct Scorer {
    running: Option<Running>,
    status: watch::Sender<ModelStatus>,
    description: Description,
    /// The heads in service, swapped whole ([`Scorer::set_lineup`]).
    lineup: ArcSwap<Lineup>,
    limits: Limits,
}

impl std::fmt::Debug for Scorer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Scorer")
            .field("status", &*self.status.borrow())
            .field("version", &self.lineup.load().active.version)
            .field("limits", &self.limits)
            .finish_non_exhaustive()
    }
}

impl Scorer {
    /// A scorer that never scores: no model configured (`ModelStatus::Off`) or a model that
    /// failed to load (`ModelStatus::Failed`, so every message it would have scored is marked
    /// degraded).
    pub fn idle(status: ModelStatus, description: Description) -> Self {
        debug_assert!(status != ModelStatus::Ready);
        let (status, _) = watch::channel(status);
        let active = HeadSet::new(&description.version, Default::default());
        Self {
            running: None,
            status,
            lineup: ArcSwap::from_pointee(Lineup {
                generation: 0,
                active: Arc::new(active),
                trial: None,
            }),
            description,
            limits: Limits {
                max_batch_messages: 1,
                max_batch_tokens: 1,
                linger: Duration::ZERO,
                max_queue: 1,
                max_wait: Duration::ZERO,
                cache_entries: 0,
            },
        }
    }

    /// Starts the model thread over `backend`, serving `active` (which may have no heads yet:
    /// the scorer then says [`ModelStatus::NoHeads`] until a lineup with heads is set).
    pub fn start(
        backend: Arc<dyn BatchModel>,
        description: Description,
        active: HeadSet,
        limits: Limits,
    ) -> Self {
        let lineup = Lineup {
            generation: 0,
            active: Arc::new(active),
            trial: None,
        };
        let (status, _) = watch::channel(if lineup.is_empty() {
            ModelStatus::NoHeads
        } else {
            ModelStatus::Ready
        });
        let (jobs, receiver) = std::sync::mpsc::channel();
        let cache =
            (limits.cache_entries > 0).then(|| Arc::new(ScoreCache::new(limits.cache_entries)));
        let nanos_per_message = Arc::new(AtomicU64::new(0));
        let worker = queue::Worker {
            backend: Arc::clone(&backend),
            jobs: receiver,
            limits,
            cache: cache.clone(),
            status: status.clone(),
            nanos_per_message: Arc::clone(&nanos_per_message),
        };
        std::thread::Builder::new()
            .name("modbot-model".to_owned())
            .spawn(move || worker.run())
            .expect("the model thread can be started");
        metrics::gauge!("modbot_model_up").set(1.0);
        Self {
            running: Some(Running {
                backend,
                jobs,
                slots: Arc::new(Semaphore::new(limits.max_queue)),
                cache,
                nanos_per_message,
            }),
            status,
            description,
            lineup: ArcSwap::from_pointee(lineup),
            limits,
        }
    }

    /// The model's state, and a way to watch it change.
    pub fn status(&self) -> watch::Receiver<ModelStatus> {
        self.status.subscribe()
    }

    /// What is loaded.
    pub fn description(&self) -> &Description {
        &self.description
    }

    /// The heads in service now (a snapshot).
    pub fn lineup(&self) -> Arc<Lineup> {
        self.lineup.load_full()
    }

    /// Serves `active`, and `trial`'s candidate beside it, from the next submitted text on,
    /// in one atomic swap: texts already queued finish with the lineup they were queued with,
    /// and no score of an older lineup is served from the cache. `false` (nothing changed)
    /// when the scorer runs no model.
    pub fn set_lineup(&self, active: Arc<HeadSet>, trial: Option<Trial>) -> bool {
        if self.running.is_none() {
            return false;
        }
        let generation = self.lineup.load().generation + 1;
        let lineup = Lineup {
            generation,
            active,
            trial,
        };
        let empty = lineup.is_empty();
        self.lineup.store(Arc::new(lineup));
        self.status.send_if_modified(|status| match status {
            ModelStatus::NoHeads if !empty => {
                *status = ModelStatus::Ready;
                true
            }
            ModelStatus::Ready if empty => {
                *status = ModelStatus::NoHeads;
                true
            }
            _ => false,
        });
        true
    }

    /// The version verdicts carry when the active set decides.
    pub fn version(&self) -> String {
        self.lineup.load().active.version.clone()
    }

    /// Whether messages should be handed to the scorer at all: true when it scores, and when
    /// it should but cannot (so the verdict says it is degraded).
    pub fn wanted(&self) -> bool {
        matches!(
            *self.status.borrow(),
            ModelStatus::Ready | ModelStatus::Failed(_)
        )
    }

    /// Messages queued or being scored now.
    pub fn queued(&self) -> usize {
        self.running
            .as_ref()
            .map_or(0, |r| self.limits.max_queue - r.slots.available_permits())
    }

    /// Share of lookups answered from the score cache since start, in `[0, 1]`: 0 without a
    /// running model or with the cache turned off (`model.cache_entries = 0`), and before the
    /// first lookup.
    pub fn cache_hit_ratio(&self) -> f64 {
        self.running
            .as_ref()
            .and_then(|r| r.cache.as_ref())
            .map_or(0.0, |cache| cache.hit_ratio())
    }

    /// Sends `text` (normalised) and the evidence of its links towards the model. Returns at
    /// once with cached scores, or a [`Pending`] to await; `Err` only for
    /// [`Admission::FailFast`] on a full queue. The cache is keyed by the text alone: the
    /// links' evidence is a function of it.
    pub async fn submit(
        &self,
        text: &str,
        links: LinkSignals,
        admission: Admission,
    ) -> Result<Pending, Overloaded> {
        let Some(running) = &self.running else {
            return Ok(Pending::Done(match &*self.status.borrow() {
                ModelStatus::Failed(failure) => {
                    Scores::Unavailable(Unavailable::Failed(failure.clone()))
                }
                _ => Scores::NotScored,
            }));
        };
        let lineup = self.lineup.load_full();
        let key = running
            .cache
            .as_ref()
            .map(|_| TextKey::of(lineup.generation, text));
        if let (Some(cache), Some(key)) = (&running.cache, &key)
            && let Some(scores) = cache.get(key)
        {
            return Ok(Pending::Done(Scores::Scored { lineup, scores }));
        }
        let deadline = Instant::now() + self.limits.max_wait;
        // A caller that can retry is refused when the model could not get through the queue
        // ahead of it within max_wait at its recent pace, however many slots are free: it
        // would only wait out max_wait and be decided without scores.
        if admission == Admission::FailFast && self.drain_time(running) >= self.limits.max_wait {
            metrics::counter!("modbot_model_rejected_total").increment(1);
            return Err(self.overloaded(running));
        }
        let permit = match Arc::clone(&running.slots).try_acquire_owned() {
            Ok(permit) => permit,
            Err(TryAcquireError::Closed) => unreachable!("the slots are never closed"),
            Err(TryAcquireError::NoPermits) => {
                metrics::counter!("modbot_model_rejected_total").increment(1);
                match admission {
                    Admission::FailFast => return Err(self.overloaded(running)),
                    Admission::Wait => {
                        let acquire = Arc::clone(&running.slots).acquire_owned();
                        match tokio::time::timeout_at(deadline.into(), acquire).await {
                            Ok(Ok(permit)) => permit,
                            _ => {
                                return Ok(Pending::Done(Scores::Unavailable(
                                    Unavailable::QueueFull {
                                        waiting: self.limits.max_queue,
                                    },
                                )));
                            }
                        }
                    }
                }
            }
        };
        let tokens = match running.backend.tokenize(text) {
            Ok(tokens) => tokens,
            Err(error) => {
                return Ok(Pending::Done(Scores::Unavailable(Unavailable::Tokenize(
                    error,
                ))));
            }
        };
        let lexical = lineup.lexical(text, &links);
        let (reply_tx, reply) = oneshot::channel();
        let job = Job {
            key,
            tokens,
            lexical,
            reply: reply_tx,
            enqueued: Instant::now(),
            deadline,
            _slot: permit,
            span: tracing::Span::current(),
            lineup: Arc::clone(&lineup),
        };
        if running.jobs.send(job).is_err() {
            return Ok(Pending::Done(Scores::Unavailable(Unavailable::Stopped)));
        }
        Ok(Pending::Queued {
            reply,
            deadline,
            lineup,
        })
    }

    /// Scores one text: [`Scorer::submit`], then [`Pending::wait`].
    pub async fn score(
        &self,
        text: &str,
        links: LinkSignals,
        admission: Admission,
    ) -> Result<Scores, Overloaded> {
        Ok(self.submit(text, links, admission).await?.wait().await)
    }

    /// The time the model needs for the queue ahead, at its recent pace.
    fn drain_time(&self, running: &Running) -> Duration {
        let queued = self.limits.max_queue - running.slots.available_permits();
        let per_message = running.nanos_per_message.load(Ordering::Relaxed);
        Duration::from_nanos(per_message.saturating_mul(queued as u64))
    }

    fn overloaded(&self, running: &Running) -> Overloaded {
        let queued = self.limits.max_queue - running.slots.available_permits();
        Overloaded {
            queued,
            // At least 10 ms.
            retry_after: self
                .drain_time(running)
                .clamp(Duration::from_millis(10), Duration::from_secs(5)),
        }
    }
}

#[cfg(test)]
mod tests;
