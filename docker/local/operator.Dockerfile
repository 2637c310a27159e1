# anyk-operator built offline by hack/images (no network, no Rust toolchain): the binary already
# built by cargo, on a local Debian base. The final stage of docker/operator.Dockerfile (the online
# way, what users build) is the same: keep the two in step.
ARG BASE=localhost/anyk-base:bookworm
FROM ${BASE}
COPY anyk-operator /usr/local/bin/anyk-operator
# Non-root, matching the chart's securityContext (restricted Pod Security Standard).
USER 65532:65532
# /metrics and /healthz (ANYK_METRICS_ADDR).
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/anyk-operator"]
