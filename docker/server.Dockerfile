# syntax=docker/dockerfile:1
# anyk-server: the parameter server of a TrainingJob. The operator starts it with its arguments
# (so the image's entrypoint is the binary) and mounts a writable volume at /checkpoints.
# It also carries the `anyk` CLI and the bundled digits data set, for an in-cluster data step:
#   anyk data split --input /usr/share/anyk/digits.csv.gz --blocks 24 --out /data
# (entrypoint /usr/local/bin/anyk). hack/images builds the same contents offline
# (docker/local/server.Dockerfile): keep the final stages in step.
# Build from the repository root:
#   docker build -f docker/server.Dockerfile -t ghcr.io/anyk-dev/anyk-server:0.1.0 .
# protoc comes from the protoc-bin-vendored crate: the Rust image suffices.

FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target,id=anyk-target-server \
    cargo build --locked --release -p anyk-server -p anyk \
 && install -m 0755 target/release/anyk-server target/release/anyk /usr/local/bin/

FROM debian:bookworm-slim
# Root certificates: `anyk data split` (the operator's staging Job) fetches data over https.
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/*
COPY --from=build /usr/local/bin/anyk-server /usr/local/bin/anyk /usr/local/bin/
# The bundled demo data set and its attribution (CC BY 4.0).
COPY data/digits.csv.gz data/README.md /usr/share/anyk/
# Non-root, as the operator's pods run it (runAsUser/runAsGroup 65532, restricted PSS).
USER 65532:65532
# gRPC (Training service for workers, Control service for the operator).
EXPOSE 50051
# glibc malloc: model-sized buffers reuse mapped memory (proto/src/launch.rs, MALLOC_TUNABLES).
ENV GLIBC_TUNABLES=glibc.malloc.mmap_max=0:glibc.malloc.trim_threshold=4294967295:glibc.malloc.arena_max=1
ENTRYPOINT ["/usr/local/bin/anyk-server"]
