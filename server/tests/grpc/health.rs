//! The standard gRPC health service, which Kubernetes' native gRPC readiness probe asks.

use tonic_health::ServingStatus;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;

use super::start;

#[tokio::test]
async fn health_says_serving_for_the_server_and_each_service() {
    let server = start(None, 1 << 20).await;
    let mut health = HealthClient::new(server.channel.clone());
    for service in ["", "anyk.v1.Training", "anyk.v1.Control"] {
        let status = health
            .check(HealthCheckRequest {
                service: service.into(),
            })
            .await
            .unwrap()
            .into_inner()
            .status;
        assert_eq!(status, ServingStatus::Serving as i32, "service {service:?}");
    }
    let unknown = health
        .check(HealthCheckRequest {
            service: "anyk.v1.Nothing".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(unknown.code(), tonic::Code::NotFound);
    server.stop().await;
}
