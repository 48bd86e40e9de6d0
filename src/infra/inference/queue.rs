//! The model thread: gathers queued jobs into batches and runs them.
//!
//! A batch starts with the oldest waiting job and takes the ones behind it while it stays
//! within `max_batch_messages` and `max_batch_tokens` (a job too long for the budget on its own
//! still runs, alone). If the queue holds less than a full batch, the thread lingers for more
//! until `linger` has passed since the oldest job arrived; a job that waited through the
//! previous batch has already lingered, so a busy model never idles. Jobs whose caller has
//! gone (a cancelled RPC, a closed stream) are dropped unrun. Identical texts in one batch are
//! run once. The thread runs the backend under `catch_unwind`: a panic or an error answers the
//! batch's callers with the reason, and three failures in a row mark the model failed (health
//! turns `NOT_SERVING` for `modbot.model`) until a batch succeeds again.

use std::collections::{HashMap, VecDeque};
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use tokio::sync::{OwnedSemaphorePermit, oneshot, watch};

use super::{
    BatchModel, Input, Limits, Lineup, ModelFailure, ModelStatus, ScoreCache, Unavailable,
};

/// Failures in a row that mark the model failed.
const FAILURES_TO_FAIL: u32 = 3;

/// One text waiting for the model.
pub struct Job {
    /// Its cache key (a digest of the normalised text), when there is a cache.
    pub key: Option<super::cache::TextKey>,
    /// Its tokens.
    pub tokens: Vec<u32>,
    /// Its lexical inputs.
    pub lexical: Vec<f32>,
    /// Where the answer goes.
    pub reply: oneshot::Sender<Result<Arc<[f32]>, Unavailable>>,
    /// When it was queued.
    pub enqueued: Instant,
    /// When its caller stops waiting for it.
    pub deadline: Instant,
    /// Its queue slot, given back when the job is answered or dropped.
    pub _slot: OwnedSemaphorePermit,
    /// The span it was queued in (the message's), so the batch that scores it can point back.
    pub span: tracing::Span,
    /// The heads it is scored by: the lineup in service when it was queued.
    pub lineup: Arc<Lineup>,
}

/// The model thread's state.
pub struct Worker {
    pub backend: Arc<dyn BatchModel>,
    pub jobs: Receiver<Job>,
    pub limits: Limits,
    pub cache: Option<Arc<ScoreCache>>,
    pub status: watch::Sender<ModelStatus>,
    pub nanos_per_message: Arc<AtomicU64>,
}

impl Worker {
    /// Runs until every sender is gone.
    pub fn run(self) {
        let mut waiting: VecDeque<Job> = VecDeque::new();
        let mut failures = 0u32;
        loop {
            if waiting.is_empty() {
                match self.jobs.recv() {
                    Ok(job) => waiting.push_back(job),
                    Err(_) => break,
                }
            }
            self.gather(&mut waiting);
            let batch = self.take_batch(&mut waiting);
            metrics::gauge!("modbot_model_queue_depth").set(waiting.len() as f64);
            if batch.is_empty() {
                continue;
            }
            match self.run_batch(batch) {
                Ok(()) => {
                    if failures >= FAILURES_TO_FAIL {
                        tracing::info!("the model answers again");
                        self.status.send_replace(ModelStatus::Ready);
                        metrics::gauge!("modbot_model_up").set(1.0);
                    }
                    failures = 0;
                }
                Err(error) => {
                    failures += 1;
                    metrics::counter!("modbot_model_failures_total").increment(1);
                    tracing::error!(%error, failures, "model batch failed");
                    if failures == FAILURES_TO_FAIL {
                        self.status
                            .send_replace(ModelStatus::Failed(ModelFailure::Failing {
                                failures,
                                last: error.clone(),
                            }));
                        metrics::gauge!("modbot_model_up").set(0.0);
                    }
                }
            }
        }
        metrics::gauge!("modbot_model_up").set(0.0);
    }

    /// Takes what has arrived, and lingers for more while the batch is not full.
    fn gather(&self, waiting: &mut VecDeque<Job>) {
        let deadline = waiting
            .front()
            .map_or_else(Instant::now, |j| j.enqueued + self.limits.linger);
        loop {
            while let Ok(job) = self.jobs.try_recv() {
                waiting.push_back(job);
            }
            if self.full(waiting) {
                return;
            }
            let now = Instant::now();
            if now >= deadline {
                return;
            }
            match self.jobs.recv_timeout(deadline - now) {
                Ok(job) => waiting.push_back(job),
                Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => return,
            }
        }
    }

    /// Whether the waiting jobs already fill a batch.
    fn full(&self, waiting: &VecDeque<Job>) -> bool {
        if waiting.len() >= self.limits.max_batch_messages {
            return true;
        }
        let tokens: usize = waiting.iter().map(|j| j.tokens.len()).sum();
        tokens >= self.limits.max_batch_tokens
    }

    /// The next batch, oldest first, within the limits. Jobs whose caller has gone, or will
    /// have stopped waiting before the batch could finish, are dropped: under overload the
    /// model spends itself on answers someone still awaits, not on a backlog of stale ones.
    fn take_batch(&self, waiting: &mut VecDeque<Job>) -> Vec<Job> {
        let mut batch = Vec::new();
        let mut tokens = 0;
        let now = Instant::now();
        // How long this batch will take, at the pace of the last one. A job with less time
        // left would be answered after its caller stopped waiting: under sustained overload
        // the head of the queue is always that close to its deadline, and running such jobs
        // spent the model on answers nobody awaited (`cargo bench --bench soak -- load`).
        let per_message = Duration::from_nanos(self.nanos_per_message.load(Ordering::Relaxed));
        let expected =
            per_message.saturating_mul(waiting.len().min(self.limits.max_batch_messages) as u32);
        let cutoff = now + expected;
        while let Some(job) = waiting.front() {
            if job.reply.is_closed() {
                metrics::counter!("modbot_model_cancelled_total").increment(1);
                waiting.pop_front();
                continue;
            }
            // The last job waiting always gets its chance (unless it is already late): the
            // estimate may come from a stalled batch, and a batch must run to correct it.
            if job.deadline <= now || (job.deadline <= cutoff && waiting.len() > 1) {
                metrics::counter!("modbot_model_expired_total").increment(1);
                if let Some(job) = waiting.pop_front() {
                    tracing::debug!(parent: &job.span, "dropped unrun: past model.max_wait_ms");
                    let _ = job.reply.send(Err(Unavailable::TimedOut));
                }
                continue;
            }
            let len = job.tokens.len();
            // A batch is scored by one lineup: a swap ends the batch before it.
            let other_lineup = batch
                .first()
                .is_some_and(|first: &Job| first.lineup.generation != job.lineup.generation);
            if !batch.is_empty()
                && (batch.len() >= self.limits.max_batch_messages
                    || tokens + len > self.limits.max_batch_tokens
                    || other_lineup)
            {
                break;
            }
            tokens += len;
            batch.extend(waiting.pop_front());
        }
        batch
    }

    fn run_batch(&self, batch: Vec<Job>) -> Result<(), String> {
        let started = Instant::now();
        let lineup = Arc::clone(&batch[0].lineup);
        // One model pass per distinct input. Equal tokens nearly always mean equal lexical
        // inputs; when they do not (texts that differ only in what the tokenizer drops), the
        // inputs are scored apart.
        let mut distinct: Vec<Input<'_>> = Vec::with_capacity(batch.len());
        let mut index: HashMap<&[u32], usize> = HashMap::with_capacity(batch.len());
        let slots: Vec<usize> = batch
            .iter()
            .map(|job| {
                let input = Input {
                    tokens: &job.tokens,
                    lexical: &job.lexical,
                };
                match index.get(job.tokens.as_slice()) {
                    Some(&slot) if distinct[slot] == input => slot,
                    found => {
                        distinct.push(input);
                        if found.is_none() {
                            index.insert(&job.tokens, distinct.len() - 1);
                        }
                        distinct.len() - 1
                    }
                }
            })
            .collect();
        let tokens: usize = distinct.iter().map(|t| t.tokens.len()).sum();
        let span = tracing::debug_span!("model_batch", messages = batch.len(), tokens);
        if !span.is_disabled() {
            for job in &batch {
                span.follows_from(&job.span);
            }
        }
        let _entered = span.enter();
        for job in &batch {
            metrics::histogram!("modbot_model_queue_wait_seconds")
                .record(started.duration_since(job.enqueued).as_secs_f64());
        }
        let outcome =
            std::panic::catch_unwind(AssertUnwindSafe(|| self.backend.score(&distinct, &lineup)))
                .unwrap_or_else(|panic| {
                    let what = panic
                        .downcast_ref::<&str>()
                        .map(|s| (*s).to_owned())
                        .or_else(|| panic.downcast_ref::<String>().cloned())
                        .unwrap_or_else(|| "unknown panic".to_owned());
                    Err(format!("the model panicked: {what}"))
                })
                .and_then(|scores| {
                    if scores.len() == distinct.len() {
                        Ok(scores)
                    } else {
                        Err(format!(
                            "the model returned {} results for {} inputs",
                            scores.len(),
                            distinct.len()
                        ))
                    }
                });
        let elapsed = started.elapsed();
        metrics::histogram!("modbot_model_inference_seconds").record(elapsed.as_secs_f64());
        metrics::histogram!("modbot_model_batch_messages").record(batch.len() as f64);
        metrics::histogram!("modbot_model_batch_tokens").record(tokens as f64);
        match outcome {
            Ok(scores) => {
                let per_message = elapsed.as_nanos() / distinct.len().max(1) as u128;
                self.nanos_per_message.store(
                    u64::try_from(per_message).unwrap_or(u64::MAX),
                    Ordering::Relaxed,
                );
                let scores: Vec<Arc<[f32]>> = scores.into_iter().map(Arc::from).collect();
                for (job, slot) in batch.into_iter().zip(slots) {
                    let scores = Arc::clone(&scores[slot]);
                    if let (Some(cache), Some(key)) = (&self.cache, job.key) {
                        cache.insert(key, Arc::clone(&scores));
                    }
                    let _ = job.reply.send(Ok(scores));
                }
                Ok(())
            }
            Err(error) => {
                for job in batch {
                    let _ = job.reply.send(Err(Unavailable::Batch(format!(
                        "model unavailable: {error}"
                    ))));
                }
                Err(error)
            }
        }
    }
}
