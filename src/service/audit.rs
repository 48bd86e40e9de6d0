//! The audit writer: notable verdicts from streams, written in batches by one task.
//!
//! A stream decides messages one after another; a database transaction per notable message
//! would cap a stream at one commit per notable message. Instead a stream hands records to
//! this writer through a bounded queue (a full queue makes the stream wait: backpressure,
//! never unbounded memory), and the writer commits whatever has queued up, from every stream,
//! in one transaction (group commit). A record may carry the action that carries its verdict
//! out; it is written in the same transaction, and the dispatcher is woken to deliver it.
//!
//! A verdict that names an action must not leave the server before the action is durable, or
//! a bridge could be told of an action that is then lost. So a stream [`AuditWriter::commit`]s
//! such a record and sends the verdict once the batch that holds it is committed (one commit,
//! shared with every other record of the batch), deciding the next messages meanwhile; plain
//! audit records are [`AuditWriter::submit`]ted without waiting. `Classify` writes its own records synchronously with [`write_records`].
//!
//! A batch the database refuses for a permanent reason (a constraint, a value it cannot hold)
//! is split in halves until the offending record stands alone, so one poison record never
//! sinks the others; its action is then stored without it. A transient failure (unreachable,
//! stalled past the store's call timeout) is not split: every half would wait as long again.
//! What was not stored is counted (`modbot_audit_write_failures_total`) and marks the waiting
//! verdicts degraded ([`Outcome::mark`]).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use crate::domain::{Degraded, Verdict};
use crate::infra::store::{AuditRecord, Recorded, Store};
use crate::service::actions::dispatch::Dispatcher;

/// Most records committed in one transaction.
const MAX_BATCH: usize = 512;

/// What became of one audit record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The record and its action (if any) are stored.
    Stored,
    /// The database refused the record itself for a permanent reason; its action is stored
    /// without it and will be carried out. The audit row is lost.
    ActionOnly,
    /// Nothing was stored: the database is unavailable, or refused the action too.
    Lost,
}

impl Outcome {
    /// Marks the verdict the record was made for: degraded (component `store`) unless all of
    /// it was stored, naming no action unless its action is stored, and no review item unless
    /// the whole record was (the item is written with its audit row).
    pub fn mark(self, verdict: &mut Verdict) {
        if self != Outcome::Stored && !verdict.degraded.contains(&Degraded::Store) {
            verdict.degraded.push(Degraded::Store);
        }
        if self != Outcome::Stored {
            verdict.review_id = None;
        }
        if self == Outcome::Lost {
            verdict.action_id = None;
        }
    }
}

/// A record on its way to the writer, with the stream waiting for it, if one is.
#[derive(Debug)]
struct Queued {
    record: AuditRecord,
    done_tx: Option<oneshot::Sender<Outcome>>,
}

/// The sending side; cheap to clone, one per stream.
#[derive(Debug, Clone)]
pub struct AuditWriter {
    records_tx: mpsc::Sender<Queued>,
    /// Whether the last batch lost records: streams mark the verdicts they do not wait for
    /// while it is set, since their records are likely to be lost too.
    failing: Arc<AtomicBool>,
}

impl AuditWriter {
    /// Starts the writer task over `store` with a queue of `capacity` records; after a batch
    /// with actions is committed it wakes `dispatcher` to deliver them. The task ends once
    /// every `AuditWriter` is dropped and the queue is drained.
    pub fn spawn(store: Store, capacity: usize, dispatcher: Dispatcher) -> (Self, JoinHandle<()>) {
        let (records_tx, records_rx) = mpsc::channel(capacity.max(1));
        let failing = Arc::new(AtomicBool::new(false));
        let task = tokio::spawn(audit_writer_task(
            store,
            records_rx,
            dispatcher,
            Arc::clone(&failing),
        ));
        (
            Self {
                records_tx,
                failing,
            },
            task,
        )
    }

    /// Queues a record without waiting for it to be written (waiting while the queue is
    /// full).
    pub async fn submit(&self, record: AuditRecord) {
        let queued = Queued {
            record,
            done_tx: None,
        };
        if self.records_tx.send(queued).await.is_err() {
            // Only after shutdown has dropped the task: nothing is left to write with.
            tracing::error!("audit writer stopped; a verdict was not written");
            metrics::counter!("modbot_audit_write_failures_total").increment(1);
        }
    }

    /// Queues a record (waiting while the queue is full); the receiver gets its outcome once
    /// the batch that holds it is written or has failed. A closed receiver means
    /// [`Outcome::Lost`].
    pub async fn commit(&self, record: AuditRecord) -> oneshot::Receiver<Outcome> {
        let (done_tx, done_rx) = oneshot::channel();
        let queued = Queued {
            record,
            done_tx: Some(done_tx),
        };
        if self.records_tx.send(queued).await.is_err() {
            // The record, and with it the sender, is dropped: the receiver reads as lost.
            tracing::error!("audit writer stopped; a verdict and its action were not written");
            metrics::counter!("modbot_audit_write_failures_total").increment(1);
        }
        done_rx
    }

    /// Whether the last batch lost records (the database is failing).
    pub fn failing(&self) -> bool {
        self.failing.load(Ordering::Relaxed)
    }
}

async fn audit_writer_task(
    store: Store,
    mut records_rx: mpsc::Receiver<Queued>,
    dispatcher: Dispatcher,
    failing: Arc<AtomicBool>,
) {
    let mut queued = Vec::with_capacity(MAX_BATCH);
    while records_rx.recv_many(&mut queued, MAX_BATCH).await > 0 {
        let (records, waiting): (Vec<_>, Vec<_>) =
            queued.drain(..).map(|q| (q.record, q.done_tx)).unzip();
        let outcomes = write_records(&store, &records).await;
        let lost = outcomes.iter().filter(|o| **o != Outcome::Stored).count();
        if lost > 0 {
            metrics::counter!("modbot_audit_write_failures_total").increment(lost as u64);
        }
        failing.store(lost > 0, Ordering::Relaxed);
        crate::telemetry::set_degraded(Degraded::Store, lost > 0);
        let actions_stored = records
            .iter()
            .zip(&outcomes)
            .any(|(r, o)| r.action.is_some() && *o != Outcome::Lost);
        if actions_stored {
            dispatcher.wake();
        }
        for (done_tx, outcome) in waiting.into_iter().zip(outcomes) {
            if let Some(done_tx) = done_tx {
                // The stream may have gone; its verdict then goes nowhere anyway.
                let _ = done_tx.send(outcome);
            }
        }
    }
}

/// Writes audit records and their actions, in as few transactions as the database allows:
/// all in one, or (when it refuses them for a permanent reason) split in halves until each
/// refused record stands alone, then that record's action alone. One outcome per record, in
/// order.
pub async fn write_records(store: &Store, records: &[AuditRecord]) -> Vec<Outcome> {
    let mut outcomes = vec![Outcome::Lost; records.len()];
    write_split(store, records, &mut outcomes).await;
    outcomes
}

fn write_split<'a>(
    store: &'a Store,
    records: &'a [AuditRecord],
    outcomes: &'a mut [Outcome],
) -> Pin<Box<dyn Future<Output = ()> + Send + 'a>> {
    Box::pin(async move {
        let error = match store.record_verdicts(records).await {
            Ok(inserted) => {
                // Counted once committed: a batch the database refuses is written again in
                // parts.
                for (record, _) in records.iter().zip(inserted).filter(|(_, new)| *new) {
                    if let Some(action) = &record.action {
                        crate::service::actions::dispatch::count_recorded(action);
                    }
                }
                outcomes.fill(Outcome::Stored);
                return;
            }
            Err(error) => error,
        };
        if error.is_transient() {
            tracing::error!(%error, count = records.len(), "audit write failed; records lost");
            outcomes.fill(Outcome::Lost);
            return;
        }
        if records.len() > 1 {
            tracing::warn!(%error, count = records.len(), "the database refused an audit batch; splitting it");
            let middle = records.len() / 2;
            let (left, right) = outcomes.split_at_mut(middle);
            write_split(store, &records[..middle], left).await;
            write_split(store, &records[middle..], right).await;
            return;
        }
        let record = &records[0];
        tracing::error!(
            %error,
            record = %record.id,
            channel = %record.message.channel,
            message_id = %record.message.message_id,
            "the database refuses an audit record; its row is lost",
        );
        outcomes[0] = match &record.action {
            None => Outcome::Lost,
            Some(action) => match store.record_action(action).await {
                Ok(recorded) => {
                    if let Recorded::New(action) = recorded {
                        crate::service::actions::dispatch::count_recorded(&action);
                    }
                    Outcome::ActionOnly
                }
                Err(error) => {
                    tracing::error!(%error, action = %action.id, "the action of a refused audit record cannot be stored either");
                    Outcome::Lost
                }
            },
        };
    })
}
