# anyk-worker for CPU nodes, built offline by hack/images (no network, no Rust toolchain, no pip):
# the release binary with its CUDA-only NEEDED entries removed and its RUNPATH set to
# /opt/libtorch/lib, and the libraries it still loads from the cached PyTorch venv (libtorch_cpu,
# libc10, libgomp, and the two CUDA runtime libraries libtorch_cpu itself needs; their static
# symbol tables stripped). hack/images prepares all of it. GPU nodes use docker/worker.Dockerfile (the online way, with CUDA).
ARG BASE=localhost/anyk-base:bookworm
FROM ${BASE}
COPY lib/ /opt/libtorch/lib/
COPY anyk-worker /usr/local/bin/anyk-worker
# Non-root, as the operator's pods run it (runAsUser/runAsGroup 65532, restricted PSS).
USER 65532:65532
# glibc malloc: model-sized buffers reuse mapped memory (proto/src/launch.rs, MALLOC_TUNABLES).
ENV GLIBC_TUNABLES=glibc.malloc.mmap_max=0:glibc.malloc.trim_threshold=4294967295:glibc.malloc.arena_max=1
ENTRYPOINT ["/usr/local/bin/anyk-worker"]
