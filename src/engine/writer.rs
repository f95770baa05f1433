//! Group commit: lead tasks hand their writes (attempts, values with their
//! charges, spend, statuses) to one writer task, which applies everything
//! queued at that moment in a single transaction and answers each sender.
//! One transaction per burst instead of one per lead keeps SQLite's single
//! writer fast; a sender waits for its commit, so nothing is reported before
//! it is durable.

use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};

use crate::core::lead::WorkspaceId;
use crate::store::{Applied, Store, StoreError, WriteOp};

/// Most ops folded into one transaction.
const MAX_OPS_PER_TX: usize = 2_000;

struct Request {
    ws: WorkspaceId,
    ops: Vec<WriteOp>,
    reply: oneshot::Sender<Result<Vec<Applied>, String>>,
}

#[derive(Clone)]
pub struct Writer {
    tx: mpsc::Sender<Request>,
}

#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    #[error("{0}")]
    Store(String),
    #[error("the writer stopped")]
    Stopped,
}

impl From<StoreError> for WriteError {
    fn from(e: StoreError) -> Self {
        WriteError::Store(e.to_string())
    }
}

impl Writer {
    /// Starts the writer task; it ends when every `Writer` clone is dropped.
    pub fn start(store: Arc<dyn Store>) -> Writer {
        let (tx, rx) = mpsc::channel(4096);
        tokio::spawn(run(store, rx));
        Writer { tx }
    }

    /// Applies `ops` durably (batched with other senders' ops).
    pub async fn write(
        &self,
        ws: &WorkspaceId,
        ops: Vec<WriteOp>,
    ) -> Result<Vec<Applied>, WriteError> {
        if ops.is_empty() {
            return Ok(Vec::new());
        }
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Request {
                ws: ws.clone(),
                ops,
                reply,
            })
            .await
            .map_err(|_| WriteError::Stopped)?;
        rx.await
            .map_err(|_| WriteError::Stopped)?
            .map_err(WriteError::Store)
    }
}

async fn run(store: Arc<dyn Store>, mut rx: mpsc::Receiver<Request>) {
    let mut pending: Vec<Request> = Vec::new();
    while let Some(first) = rx.recv().await {
        pending.push(first);
        let mut n = pending[0].ops.len();
        while n < MAX_OPS_PER_TX {
            match rx.try_recv() {
                Ok(r) => {
                    n += r.ops.len();
                    pending.push(r);
                }
                Err(_) => break,
            }
        }
        // One transaction per workspace present in the burst.
        while !pending.is_empty() {
            let ws = pending[0].ws.clone();
            let (batch, rest): (Vec<Request>, Vec<Request>) =
                pending.into_iter().partition(|r| r.ws == ws);
            pending = rest;
            commit(&*store, &ws, batch).await;
        }
    }
}

async fn commit(store: &dyn Store, ws: &WorkspaceId, mut batch: Vec<Request>) {
    let lens: Vec<usize> = batch.iter().map(|r| r.ops.len()).collect();
    let ops: Vec<WriteOp> = batch
        .iter_mut()
        .flat_map(|r| std::mem::take(&mut r.ops))
        .collect();
    match store.apply(ws, &ops).await {
        Ok(applied) => {
            let mut it = applied.into_iter();
            for (r, n) in batch.into_iter().zip(lens) {
                let mine: Vec<Applied> = it.by_ref().take(n).collect();
                let _ = r.reply.send(Ok(mine));
            }
        }
        Err(e) if batch.len() > 1 => {
            // One sender's bad op must not fail the others: apply each alone.
            tracing::warn!(workspace = %ws, error = %e, "group commit failed; applying requests one by one");
            let mut ops = ops.into_iter();
            for (r, n) in batch.into_iter().zip(lens) {
                let mine: Vec<WriteOp> = ops.by_ref().take(n).collect();
                let res = store.apply(ws, &mine).await.map_err(|e| e.to_string());
                let _ = r.reply.send(res);
            }
        }
        Err(e) => {
            tracing::error!(workspace = %ws, error = %e, "write failed");
            for r in batch {
                let _ = r.reply.send(Err(e.to_string()));
            }
        }
    }
}
