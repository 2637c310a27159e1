//! The server's listeners: Training (workers), Control (the supervisor only) and a plaintext
//! health port for Kubernetes' gRPC probe, with mutual TLS on the first two (docs/design.md,
//! invariant 11) and the transport's limits.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use anyk_proto::tls::Credentials;
use anyk_proto::transport::CONNECTION_WINDOW_BYTES;
use anyk_proto::v1::{control_server::ControlServer, training_server::TrainingServer};
use tokio::net::TcpListener;
use tonic::transport::Server;
use tonic::transport::server::TcpIncoming;

use crate::ServeError;
use crate::message_limit::Limited;
use crate::service::{ControlService, ServerState, TrainingService};

/// Control messages are layouts and small requests: a layout of the CRD's largest job (131,072
/// block copies) is under 2 MiB.
pub const MAX_CONTROL_MESSAGE_BYTES: usize = 16 << 20;
/// Requests in flight on one connection: a worker has a few (its event stream, a push, a join);
/// the operator one or two.
const CONCURRENCY_PER_CONNECTION: usize = 32;
/// HTTP/2 streams one connection may open at once.
const MAX_CONCURRENT_STREAMS: u32 = 64;
/// A unary call that takes longer than this is cancelled (a push waits for nothing but the
/// lock); streams are not cut by it (it bounds the time to the response's headers).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);
/// Pings that find a dead peer (a node gone without a FIN) within about a minute.
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(30);
const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(20);

/// Where the server listens, and with what identity.
pub struct Endpoints {
    pub training: TcpListener,
    pub control: TcpListener,
    /// Plaintext, the health service only.
    pub health: Option<TcpListener>,
    /// Mutual TLS on Training and Control; None: plaintext (tests and development only).
    pub tls: Option<Credentials>,
}

/// Serves until `shutdown` resolves, then ends every stream and stops all listeners.
pub async fn serve_endpoints(
    endpoints: Endpoints,
    state: Arc<ServerState>,
    max_message_bytes: usize,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ServeError> {
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let on_stop = || {
        let mut stopped = stopped.clone();
        async move {
            let _ = stopped.wait_for(|s| *s).await;
        }
    };
    let health_service = health_service().await;
    let training = builder(endpoints.tls.as_ref())?
        .add_service(health_service.clone())
        .add_service(training_service(&state, max_message_bytes))
        .serve_with_incoming_shutdown(incoming(endpoints.training), on_stop());
    let control = builder(endpoints.tls.as_ref())?
        .add_service(control_service(&state, MAX_CONTROL_MESSAGE_BYTES))
        .serve_with_incoming_shutdown(incoming(endpoints.control), on_stop());
    let health = async {
        match endpoints.health {
            Some(listener) => {
                Server::builder()
                    .add_service(health_service)
                    .serve_with_incoming_shutdown(incoming(listener), on_stop())
                    .await
            }
            None => Ok(()),
        }
    };
    let signal = async {
        shutdown.await;
        state.close_streams();
        let _ = stop.send(true);
    };
    let ((), training, control, health) = tokio::join!(signal, training, control, health);
    training?;
    control?;
    health?;
    Ok(())
}

/// Both services on one plaintext listener: the in-process tests' server.
pub async fn serve_plaintext(
    listener: TcpListener,
    state: Arc<ServerState>,
    max_message_bytes: usize,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ServeError> {
    builder(None)?
        .add_service(health_service().await)
        .add_service(training_service(&state, max_message_bytes))
        .add_service(control_service(&state, max_message_bytes))
        .serve_with_incoming_shutdown(incoming(listener), async {
            shutdown.await;
            state.close_streams();
        })
        .await?;
    Ok(())
}

/// What a client may send on one stream before the server reads it. Pushes waiting for their
/// turn (crate::admission) each keep this much in the server; at 4 MiB instead of the shared
/// 16 MiB, 8 workers' waiting pushes hold 28 MiB instead of 112.
pub const RECEIVE_STREAM_WINDOW_BYTES: u32 = 4 << 20;

fn builder(tls: Option<&Credentials>) -> Result<Server, ServeError> {
    let mut builder = Server::builder()
        .initial_stream_window_size(RECEIVE_STREAM_WINDOW_BYTES)
        .initial_connection_window_size(CONNECTION_WINDOW_BYTES)
        .concurrency_limit_per_connection(CONCURRENCY_PER_CONNECTION)
        .max_concurrent_streams(MAX_CONCURRENT_STREAMS)
        .timeout(REQUEST_TIMEOUT)
        .http2_keepalive_interval(Some(KEEPALIVE_INTERVAL))
        .http2_keepalive_timeout(Some(KEEPALIVE_TIMEOUT));
    if let Some(credentials) = tls {
        builder = builder.tls_config(credentials.server_config())?;
    }
    Ok(builder)
}

fn incoming(listener: TcpListener) -> TcpIncoming {
    TcpIncoming::from(listener).with_nodelay(Some(true))
}

/// The Training service with tonic's static limit (before the model exists) and the limit
/// fitted to the model afterwards.
fn training_service(
    state: &Arc<ServerState>,
    max_message_bytes: usize,
) -> Limited<TrainingServer<TrainingService>> {
    let service = TrainingServer::new(TrainingService(state.clone()))
        .max_decoding_message_size(max_message_bytes)
        .max_encoding_message_size(max_message_bytes);
    Limited::new(service, state.message_limit(), state.admission())
}

fn control_service(state: &Arc<ServerState>, max_message_bytes: usize) -> ControlServer<ControlService> {
    ControlServer::new(ControlService(state.clone()))
        .max_decoding_message_size(max_message_bytes)
        .max_encoding_message_size(max_message_bytes)
}

/// The standard gRPC health service: Kubernetes' native gRPC probe (and any gRPC client) asks
/// it. The server as a whole ("") and each service are SERVING from the moment it listens.
async fn health_service()
-> tonic_health::pb::health_server::HealthServer<impl tonic_health::pb::health_server::Health> {
    let (health, service) = tonic_health::server::health_reporter();
    health.set_serving::<TrainingServer<TrainingService>>().await;
    health.set_serving::<ControlServer<ControlService>>().await;
    service
}
