"""The PyTorch DDP side of bench/vs-ddp: the job `anyk local` runs, done the usual way.

8 processes (torch.multiprocessing), gloo backend, CPU, one intra-op thread each; the TorchScript
model file that anyk trains (same architecture, same initial weights); Adam; rank r trains on the
blocks r*B .. r*B+B-1 of the data directory `anyk data split` wrote (the blocks anyk trains on),
drawing `--batch` samples from each block per step, so the global batch equals anyk's (m blocks x
batch). DDP averages the ranks' gradients: the mean loss over the global batch, as anyk's.

Stragglers (`--straggle RANK:FACTOR`, repeatable) are slowed by anyk's rule (worker/src/straggle.rs:
a slow machine takes FACTOR times as long for its compute and its sends): each step the rank sleeps
(FACTOR - 1) x its own time before its forward pass. With `--delay-of step` (the default, anyk's
rule) that time is the median of the rank's straggler-free warm-up steps after the first (its
forward, backward with the all-reduce, and Adam); with `--delay-of compute` it is the median of
`--calibrate` forward+backward passes under `no_sync()` (no communication), timed after the
warm-up (TorchScript's first runs are slow: it profiles and optimizes the graph) while every rank
does the same, i.e. under the same CPU sharing as a step.

Timing: `--warmup` steps run first and are not timed; then rank 0 times `--steps` steps between
two barriers. Writes a JSON summary (mean_step_ms, per-step times, final loss, test accuracy).
"""
import argparse
import json
import os
import socket
import statistics
import struct
import sys
import time
import warnings

warnings.filterwarnings("ignore")
import torch  # noqa: E402
import torch.distributed as dist  # noqa: E402
import torch.multiprocessing as mp  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch.distributed.algorithms.ddp_comm_hooks import default_hooks  # noqa: E402
from torch.nn.parallel import DistributedDataParallel as DDP  # noqa: E402

DTYPES = {"F32": torch.float32, "I64": torch.int64}


def read_safetensors(path):
    """The tensors of a safetensors file (the format is an 8-byte header length, a JSON header
    and the raw little-endian data; read by hand because the venv has no safetensors package)."""
    with open(path, "rb") as f:
        raw = f.read()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8 : 8 + n])
    body = bytearray(raw[8 + n :])
    out = {}
    for name, meta in header.items():
        if name == "__metadata__":
            continue
        start, end = meta["data_offsets"]
        t = torch.frombuffer(body[start:end], dtype=DTYPES[meta["dtype"]]) if end > start else torch.empty(0, dtype=DTYPES[meta["dtype"]])
        out[name] = t.reshape(meta["shape"]).clone()
    return out


def block_path(data, b):
    return os.path.join(data, f"block-{b:05d}.safetensors")


def train(rank, a, port, result_path):
    torch.set_num_threads(1)
    os.environ["MASTER_ADDR"] = "127.0.0.1"
    os.environ["MASTER_PORT"] = str(port)
    dist.init_process_group("gloo", rank=rank, world_size=a.workers)
    per = a.blocks // a.workers
    blocks = [read_safetensors(block_path(a.data, b)) for b in range(rank * per, (rank + 1) * per)]
    model = torch.jit.load(a.model)
    ddp = DDP(model)
    if a.bf16_compress:
        # PyTorch's own counterpart of anyk's --gradient-precision bf16: gradients all-reduced
        # in bfloat16 (half the bytes), decompressed to f32 before the optimizer.
        ddp.register_comm_hook(None, default_hooks.bf16_compress_hook)
    opt = torch.optim.Adam(ddp.parameters(), lr=a.lr)
    gen = torch.Generator().manual_seed(a.seed * 1000 + rank)
    factor = dict(a.straggle).get(rank, 1.0)

    def batch():
        xs, ys = [], []
        for blk in blocks:
            idx = torch.randint(0, blk["y"].shape[0], (a.batch,), generator=gen)
            xs.append(blk["x"][idx])
            ys.append(blk["y"][idx])
        return torch.cat(xs), torch.cat(ys)

    def step():
        x, y = batch()
        if delay:
            time.sleep(delay)
        opt.zero_grad(set_to_none=True)
        loss = F.cross_entropy(ddp(x), y)
        loss.backward()
        opt.step()
        return loss.item()

    delay = 0.0
    warm = []
    for _ in range(a.warmup):
        t = time.perf_counter()
        step()
        warm.append(time.perf_counter() - t)
    own_step = statistics.median(warm[1:] or warm or [0.0])
    # Compute time, for the straggler rule: forward + backward without communication.
    samples = []
    for _ in range(a.calibrate):
        x, y = batch()
        t = time.perf_counter()
        with ddp.no_sync():
            F.cross_entropy(ddp(x), y).backward()
        samples.append(time.perf_counter() - t)
        opt.zero_grad(set_to_none=True)
    compute = statistics.median(samples) if samples else 0.0
    delay = max(factor - 1.0, 0.0) * (own_step if a.delay_of == "step" else compute)
    dist.barrier()
    times = []
    start = time.perf_counter()
    for _ in range(a.steps):
        t = time.perf_counter()
        loss = step()
        times.append(time.perf_counter() - t)
    dist.barrier()
    total = time.perf_counter() - start
    gathered = [torch.zeros(3, dtype=torch.float64) for _ in range(a.workers)]
    dist.all_gather(gathered, torch.tensor([compute, own_step, delay], dtype=torch.float64))
    computes, own_steps, delays = ([g[i].item() for g in gathered] for i in range(3))
    if rank == 0:
        test = read_safetensors(os.path.join(a.data, "test.safetensors"))
        with torch.no_grad():
            acc = (model(test["x"]).argmax(1) == test["y"]).float().mean().item()
        params = sum(p.numel() for p in model.parameters())
        with open(result_path, "w") as f:
            json.dump(
                {
                    "workers": a.workers,
                    "global_batch": a.blocks * a.batch,
                    "params": params,
                    "steps": a.steps,
                    "warmup": a.warmup,
                    "mean_step_ms": 1000 * total / a.steps,
                    "step_ms": [1000 * t for t in times],
                    "compute_ms_per_rank": [1000 * c for c in computes],
                    "warmup_step_ms_per_rank": [1000 * c for c in own_steps],
                    "delay_ms_per_rank": [1000 * c for c in delays],
                    "delay_of": a.delay_of,
                    "straggle": {str(r): f for r, f in a.straggle},
                    "bf16_compress": a.bf16_compress,
                    "final_loss": loss,
                    "final_test_accuracy": acc,
                },
                f,
            )
    dist.destroy_process_group()


def straggle(s):
    r, f = s.split(":")
    return int(r), float(f)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--model", required=True)
    p.add_argument("--data", required=True, help="a directory written by `anyk data split`")
    p.add_argument("--workers", type=int, default=8)
    p.add_argument("--blocks", type=int, default=24)
    p.add_argument("--batch", type=int, default=32, help="samples drawn from each block per step")
    p.add_argument("--lr", type=float, default=0.01)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--delay-of", choices=["step", "compute"], default="step")
    p.add_argument("--calibrate", type=int, default=5)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--straggle", type=straggle, action="append", default=[])
    p.add_argument("--bf16-compress", action="store_true", help="all-reduce gradients in bfloat16")
    p.add_argument("--out", required=True)
    a = p.parse_args()
    if a.blocks % a.workers:
        sys.exit("--blocks must be a multiple of --workers")
    mp.spawn(train, args=(a, free_port(), a.out), nprocs=a.workers, join=True)


if __name__ == "__main__":
    main()
