# anyk-server built offline by hack/images (no network, no Rust toolchain): the binaries already
# built by cargo, on a local Debian base. The final stage of docker/server.Dockerfile (the online
# way, what users build) is the same: keep the two in step.
ARG BASE=localhost/anyk-base:bookworm
FROM ${BASE}
COPY anyk-server anyk /usr/local/bin/
# The bundled demo data set and its attribution, for an in-cluster
# `anyk data split --input /usr/share/anyk/digits.csv.gz ...` step.
COPY digits.csv.gz README.md /usr/share/anyk/
# Non-root, as the operator's pods run it (runAsUser/runAsGroup 65532, restricted PSS).
USER 65532:65532
# gRPC (Training service for workers, Control service for the operator).
EXPOSE 50051
# glibc malloc: model-sized buffers reuse mapped memory (proto/src/launch.rs, MALLOC_TUNABLES).
ENV GLIBC_TUNABLES=glibc.malloc.mmap_max=0:glibc.malloc.trim_threshold=4294967295:glibc.malloc.arena_max=1
ENTRYPOINT ["/usr/local/bin/anyk-server"]
