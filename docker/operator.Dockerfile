# syntax=docker/dockerfile:1
# anyk-operator: the Kubernetes controller (the only anyk component that talks to the API).
# Build from the repository root:
#   docker build -f docker/operator.Dockerfile -t ghcr.io/anyk-dev/anyk-operator:0.1.0 .
# protoc comes from the protoc-bin-vendored crate and TLS from rustls: the Rust image suffices.
# hack/images builds the same contents offline (docker/local/operator.Dockerfile): keep the final
# stages in step.

FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target,id=anyk-target-operator \
    cargo build --locked --release -p anyk-operator \
 && install -m 0755 target/release/anyk-operator /usr/local/bin/anyk-operator

FROM debian:bookworm-slim
COPY --from=build /usr/local/bin/anyk-operator /usr/local/bin/anyk-operator
# Non-root, matching the chart's securityContext (restricted Pod Security Standard).
USER 65532:65532
# /metrics and /healthz (ANYK_METRICS_ADDR).
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/anyk-operator"]
