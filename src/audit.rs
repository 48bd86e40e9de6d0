//! The audit writer: notable verdicts from streams, written in batches by one task.
//!
//! A stream decides messages one after another; awaiting a database write for each would cap a
//! stream at one transaction per notable message. Instead a stream hands records to this
//! writer through a bounded queue (a full queue makes the stream wait: backpressure, never
//! unbounded memory), and the writer commits whatever has queued up in one transaction.
//! `Classify` writes its own batch synchronously instead, so its verdicts can say when the
//! write failed. A record may carry the action that carries its verdict out; it is written in
//! the same transaction, and the dispatcher is woken to deliver it.

use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::actions::dispatch::Dispatcher;
use crate::decision::Degraded;
use crate::store::{AuditRecord, Store};

/// Most records committed in one transaction.
const MAX_BATCH: usize = 512;

/// The sending side; cheap to clone, one per stream.
#[derive(Debug, Clone)]
pub struct AuditWriter {
    records_tx: mpsc::Sender<AuditRecord>,
}

impl AuditWriter {
    /// Starts the writer task over `store` with a queue of `capacity` records; after a batch
    /// with actions is committed it wakes `dispatcher` to deliver them. The task ends once
    /// every `AuditWriter` is dropped and the queue is drained.
    pub fn spawn(store: Store, capacity: usize, dispatcher: Dispatcher) -> (Self, JoinHandle<()>) {
        let (records_tx, records_rx) = mpsc::channel(capacity.max(1));
        let task = tokio::spawn(audit_writer_task(store, records_rx, dispatcher));
        (Self { records_tx }, task)
    }

    /// Queues a record, waiting while the queue is full.
    pub async fn submit(&self, record: AuditRecord) {
        if self.records_tx.send(record).await.is_err() {
            // Only after shutdown has dropped the task: nothing is left to write with.
            tracing::error!("audit writer stopped; a verdict was not written");
            metrics::counter!("modbot_audit_write_failures_total").increment(1);
        }
    }
}

async fn audit_writer_task(
    store: Store,
    mut records_rx: mpsc::Receiver<AuditRecord>,
    dispatcher: Dispatcher,
) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while records_rx.recv_many(&mut batch, MAX_BATCH).await > 0 {
        let mut attempt = 0;
        loop {
            match store.record_verdicts(&batch).await {
                Ok(()) => {
                    crate::telemetry::set_degraded(Degraded::Store, false);
                    if batch.iter().any(|r| r.action.is_some()) {
                        dispatcher.wake();
                    }
                    break;
                }
                Err(error) if attempt < 3 => {
                    attempt += 1;
                    tracing::warn!(%error, attempt, count = batch.len(), "audit write failed; retrying");
                    tokio::time::sleep(Duration::from_millis(100 << attempt)).await;
                }
                Err(error) => {
                    tracing::error!(%error, count = batch.len(), "audit write failed; records dropped");
                    metrics::counter!("modbot_audit_write_failures_total")
                        .increment(batch.len() as u64);
                    crate::telemetry::set_degraded(Degraded::Store, true);
                    break;
                }
            }
        }
        batch.clear();
    }
}
