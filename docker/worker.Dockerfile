# syntax=docker/dockerfile:1
# anyk-worker: the tch (libtorch) training worker, for CPU and NVIDIA GPU nodes. The operator
# starts it with its arguments (so the image's entrypoint is the binary).
# Build from the repository root:
#   docker build -f docker/worker.Dockerfile -t ghcr.io/anyk-dev/anyk-worker:0.1.0 .
# libtorch comes from the PyPI torch wheel (as in hack/torch-env), whose default Linux build
# brings its CUDA libraries (CUDA 13 for torch 2.11: GPU nodes need an NVIDIA driver >= 580 and
# the NVIDIA container runtime / device plugin). The image is large (about 4-5 GB).
# A CPU-only image (no CUDA libraries, a fraction of the size) takes PyTorch's CPU wheel:
#   docker build -f docker/worker.Dockerfile \
#     --build-arg TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu \
#     -t ghcr.io/anyk-dev/anyk-worker:0.1.0-cpu .
# (hack/images builds a CPU image offline from the cached CUDA wheel instead, dropping the CUDA
# half of libtorch with patchelf: docker/local/worker.Dockerfile.)
ARG TORCH_VERSION=2.11.0
# Empty: PyPI (the CUDA build). The CPU index's 2.11.0+cpu satisfies torch==2.11.0.
ARG TORCH_INDEX_URL=

FROM rust:1.95-bookworm AS build
ARG TORCH_VERSION
ARG TORCH_INDEX_URL
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3-venv \
 && rm -rf /var/lib/apt/lists/*
# torch-sys (tch 0.24) asks the active Python for libtorch: VIRTUAL_ENV makes it run "python".
ENV VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH \
    LIBTORCH_USE_PYTORCH=1
RUN python3 -m venv /opt/venv \
 && pip install --no-cache-dir --disable-pip-version-check \
      ${TORCH_INDEX_URL:+--index-url "$TORCH_INDEX_URL"} "torch==${TORCH_VERSION}"
WORKDIR /src
COPY . .
# worker/build.rs links libtorch without --as-needed, so libtorch_cuda.so stays loaded and the
# worker sees the node's GPUs (on a node without one it loads fine and CUDA is unavailable).
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target,id=anyk-target-worker \
    cargo build --locked --release -p anyk-worker --bin anyk-worker \
 && install -m 0755 target/release/anyk-worker /usr/local/bin/anyk-worker
# At run time the worker needs only the shared libraries of the wheels (torch/lib, and the
# nvidia/* CUDA libraries that torch/lib finds through its $ORIGIN-relative RPATH), not Python:
# drop what only Python or compiling uses (triton is torch.compile's GPU compiler, not linked).
RUN site=/opt/venv/lib/python3.11/site-packages \
 && rm -rf "$site/triton" "$site/torch/include" \
 && find "$site" -name __pycache__ -prune -exec rm -rf {} +

FROM debian:bookworm-slim
# The venv's site-packages at the same path, so the relative RPATHs between torch/lib and the
# nvidia/* libraries hold (the venv's bin/ is left out: there is no Python in this image).
COPY --from=build /opt/venv/lib/python3.11/site-packages /opt/venv/lib/python3.11/site-packages
COPY --from=build /usr/local/bin/anyk-worker /usr/local/bin/anyk-worker
ENV LD_LIBRARY_PATH=/opt/venv/lib/python3.11/site-packages/torch/lib \
    NVIDIA_DRIVER_CAPABILITIES=compute,utility
# Non-root, as the operator's pods run it (runAsUser/runAsGroup 65532, restricted PSS).
USER 65532:65532
# glibc malloc: model-sized buffers reuse mapped memory (proto/src/launch.rs, MALLOC_TUNABLES).
ENV GLIBC_TUNABLES=glibc.malloc.mmap_max=0:glibc.malloc.trim_threshold=4294967295:glibc.malloc.arena_max=1
ENTRYPOINT ["/usr/local/bin/anyk-worker"]
