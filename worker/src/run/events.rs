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

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use anyk_proto::v1::training_server::{Training, TrainingServer};
    use anyk_proto::v1::{
        Assignment, GradientRequest, GradientResponse, InitializeRequest, InitializeResponse, JoinRequest,
        JoinResponse, StepReady, worker_event::Event,
    };
    use tonic::codegen::tokio_stream::{self, Stream, StreamExt};
    use tonic::transport::server::TcpIncoming;
    use tonic::{Request, Response};

    use super::*;

    type EventStream = std::pin::Pin<Box<dyn Stream<Item = Result<WorkerEvent, Status>> + Send>>;

    /// A server whose first subscription ends with `first_end` after one assignment (epoch 1);
    /// later ones send the current assignment (epoch 2) and step 5, then stay open.
    struct Fake {
        subscriptions: AtomicU32,
        first_end: Code,
    }

    fn assignment(epoch: u64) -> Result<WorkerEvent, Status> {
        let event = Event::Assignment(Assignment {
            epoch,
            ..Assignment::default()
        });
        Ok(WorkerEvent { event: Some(event) })
    }

    #[tonic::async_trait]
    impl Training for Fake {
        type SubscribeStream = EventStream;

        async fn subscribe(&self, _: Request<SubscribeRequest>) -> Result<Response<EventStream>, Status> {
            let events: Vec<Result<WorkerEvent, Status>> =
                if self.subscriptions.fetch_add(1, Ordering::SeqCst) == 0 {
                    vec![assignment(1), Err(Status::new(self.first_end, "closed"))]
                } else {
                    let step = Event::Step(StepReady {
                        step: 5,
                        params: None,
                        late_blocks: Vec::new(),
                        late_backups: Vec::new(),
                        params_offset: 0,
                        params_total: 0,
                    });
                    vec![assignment(2), Ok(WorkerEvent { event: Some(step) })]
                };
            let stream = tokio_stream::iter(events).chain(tokio_stream::pending());
            Ok(Response::new(Box::pin(stream)))
        }

        async fn join(&self, _: Request<JoinRequest>) -> Result<Response<JoinResponse>, Status> {
            Err(Status::unimplemented("not in this test"))
        }

        async fn initialize(
            &self,
            _: Request<InitializeRequest>,
        ) -> Result<Response<InitializeResponse>, Status> {
            Err(Status::unimplemented("not in this test"))
        }

        async fn push_gradient(
            &self,
            _: Request<GradientRequest>,
        ) -> Result<Response<GradientResponse>, Status> {
            Err(Status::unimplemented("not in this test"))
        }
    }

    async fn events_from(first_end: Code) -> Events {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let fake = Fake {
            subscriptions: AtomicU32::new(0),
            first_end,
        };
        let server = tonic::transport::Server::builder()
            .add_service(TrainingServer::new(fake))
            .serve_with_incoming(TcpIncoming::from(listener));
        tokio::spawn(server);
        let mut client = TrainingClient::new(anyk_proto::transport::channel(&url).unwrap());
        subscribe(&mut client, 1).await.unwrap()
    }

    fn describe(item: Option<Result<WorkerEvent, Status>>) -> String {
        match item {
            Some(Ok(WorkerEvent {
                event: Some(Event::Assignment(a)),
            })) => format!("assignment {}", a.epoch),
            Some(Ok(WorkerEvent {
                event: Some(Event::Step(s)),
            })) => format!("step {}", s.step),
            Some(Ok(other)) => format!("{other:?}"),
            Some(Err(status)) => format!("error {:?}", status.code()),
            None => "end".into(),
        }
    }

    #[tokio::test]
    async fn a_stream_closed_for_falling_behind_is_opened_again() {
        let mut events = events_from(Code::Aborted).await;
        let mut seen = Vec::new();
        for _ in 0..3 {
            seen.push(describe(events.recv().await));
        }
        assert_eq!(seen, ["assignment 1", "assignment 2", "step 5"]);
    }

    #[tokio::test]
    async fn any_other_end_goes_to_the_run_loop() {
        let mut events = events_from(Code::Internal).await;
        let mut seen = Vec::new();
        for _ in 0..3 {
            seen.push(describe(events.recv().await));
        }
        assert_eq!(seen, ["assignment 1", "error Internal", "end"]);
    }
}
