//! The worker's event stream from the server, kept open: a stream the server closed because
//! this worker fell behind is opened again, and the new one starts with the current assignment
//! and step, so nothing missed in between matters.

use anyk_proto::v1::{SubscribeRequest, WorkerEvent, training_client::TrainingClient};
use tokio::sync::mpsc;
use tonic::transport::Channel;
use tonic::{Code, Status, Streaming};

use super::{Events, RunError};

/// Subscribes `worker` to its events, forwarded into a queue the run loop reads.
pub(super) async fn subscribe(client: &mut TrainingClient<Channel>, worker: u32) -> Result<Events, RunError> {
    let stream = open(client, worker).await.map_err(|source| RunError::Refused {
        action: "the subscription",
        source,
    })?;
    let (tx, rx) = mpsc::channel(256);
    tokio::spawn(forward(client.clone(), worker, stream, tx));
    Ok(rx)
}

async fn open(client: &mut TrainingClient<Channel>, worker: u32) -> Result<Streaming<WorkerEvent>, Status> {
    Ok(client.subscribe(SubscribeRequest { worker }).await?.into_inner())
}

/// Forwards events until the stream or the run ends. The server ends a subscriber's stream with
/// ABORTED when its queue is full (server/src/service.rs, `deliver`) instead of dropping an
/// event: this worker then subscribes again. Any other end goes to the run loop, which decides.
async fn forward(
    mut client: TrainingClient<Channel>,
    worker: u32,
    mut stream: Streaming<WorkerEvent>,
    tx: mpsc::Sender<Result<WorkerEvent, Status>>,
) {
    loop {
        let item = match stream.message().await {
            Ok(Some(event)) => Ok(event),
            // The queue closes: the run loop sees the stream end.
            Ok(None) => return,
            Err(status) if status.code() == Code::Aborted => {
                tracing::warn!(%status, "event stream closed for falling behind; subscribing again");
                match open(&mut client, worker).await {
                    Ok(fresh) => {
                        stream = fresh;
                        continue;
                    }
                    Err(refused) => Err(refused),
                }
            }
            Err(status) => Err(status),
        };
        let last = item.is_err();
        if tx.send(item).await.is_err() || last {
            return;
        }
    }
}
