//! The Control service: the supervisor's calls (layouts, progress, checkpoints).

use anyk_proto::v1::{
    CheckpointRequest, CheckpointResponse, Progress, ProgressRequest, SetLayoutRequest, SetLayoutResponse,
    WorkerEvent, control_server::Control, worker_event::Event,
};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use super::{ControlService, MAX_WATCHERS, ProgressStream, lock};

#[tonic::async_trait]
impl Control for ControlService {
    async fn set_layout(
        &self,
        req: Request<SetLayoutRequest>,
    ) -> Result<Response<SetLayoutResponse>, Status> {
        self.0.authorize_operator(&req)?;
        let wire = req
            .into_inner()
            .layout
            .ok_or_else(|| Status::invalid_argument("layout is missing"))?;
        let layout =
            anyk_proto::layout_from_wire(&wire).map_err(|e| Status::invalid_argument(e.to_string()))?;
        let epoch = layout.epoch;
        let assignments = {
            let mut trainer = self.0.trainer();
            let assignments = trainer.set_layout(layout)?;
            self.0.publish_holding(&trainer);
            for (worker, assignment) in assignments.iter().cloned() {
                self.0.send_to(
                    worker,
                    WorkerEvent {
                        event: Some(Event::Assignment(assignment)),
                    },
                );
            }
            assignments
        };
        tracing::info!(epoch, workers = assignments.len(), "layout installed");
        self.0.publish_progress();
        Ok(Response::new(SetLayoutResponse { epoch }))
    }

    async fn get_progress(&self, req: Request<ProgressRequest>) -> Result<Response<Progress>, Status> {
        self.0.authorize_operator(&req)?;
        Ok(Response::new(self.0.progress()))
    }

    type WatchProgressStream = ProgressStream;

    async fn watch_progress(
        &self,
        req: Request<ProgressRequest>,
    ) -> Result<Response<ProgressStream>, Status> {
        self.0.authorize_operator(&req)?;
        let progress = self.0.progress();
        let mut watchers = lock(&self.0.watchers);
        watchers.retain(|tx| !tx.is_closed());
        if watchers.len() >= MAX_WATCHERS {
            return Err(Status::resource_exhausted(format!(
                "too many progress watchers: {MAX_WATCHERS} streams are open; close one or use GetProgress"
            )));
        }
        let (tx, rx) = mpsc::channel(1024);
        let _ = tx.try_send(Ok(progress));
        watchers.push(tx);
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn checkpoint(
        &self,
        req: Request<CheckpointRequest>,
    ) -> Result<Response<CheckpointResponse>, Status> {
        self.0.authorize_operator(&req)?;
        let (step, path) = self.0.save_checkpoint().await?;
        Ok(Response::new(CheckpointResponse { step, path }))
    }
}
