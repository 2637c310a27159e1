"""Loads the files `anyk export` (or a finished TrainingJob) wrote, with plain PyTorch, and prints
the test metrics they give, as JSON ({"accuracy": ..., "loss": ...}), to compare with anyk's own
evaluation. This is also how to use them:

    python3 examples/models/check_export.py --safetensors model.safetensors \
        --test DATA/test.safetensors [--torchscript model.pt] [--module untrained.pt] \
        [--contract logits|loss] [--hidden 128]

- model.safetensors holds the parameters under the model's own names: load it into the module
  they came from (`--module`, the TorchScript file the job was given) or, for the built-in MLP,
  into the equivalent `torch.nn` module below (fc1 -> ReLU -> fc2).
- model.pt (TorchScript models only) is that module with the trained weights: `torch.jit.load`.
"""

import argparse
import json

import torch
from safetensors.torch import load_file


class BuiltinMlp(torch.nn.Module):
    """anyk's built-in model, with the same parameter names."""

    def __init__(self, features: int, hidden: int, classes: int):
        super().__init__()
        self.fc1 = torch.nn.Linear(features, hidden)
        self.fc2 = torch.nn.Linear(hidden, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(torch.relu(self.fc1(x)))


def metrics(model, x, y, contract: str) -> dict:
    with torch.no_grad():
        if contract == "loss":
            return {"loss": float(model(x, y))}
        logits = model(x)
        return {
            "accuracy": float((logits.argmax(-1) == y).double().mean()),
            "loss": float(torch.nn.functional.cross_entropy(logits, y)),
        }


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--safetensors", required=True)
    p.add_argument("--test", required=True)
    p.add_argument("--torchscript")
    p.add_argument("--module")
    p.add_argument("--contract", default="logits")
    p.add_argument("--hidden", type=int, default=128)
    a = p.parse_args()
    torch.set_num_threads(1)
    test = load_file(a.test)
    x, y = test["x"], test["y"]
    state = load_file(a.safetensors)
    if a.module:
        model = torch.jit.load(a.module)
    else:
        classes = state["fc2.weight"].shape[0]
        model = BuiltinMlp(x.shape[1], a.hidden, classes)
    model.load_state_dict(state, strict=True)
    out = {"safetensors": metrics(model.eval(), x, y, a.contract)}
    if a.torchscript:
        out["torchscript"] = metrics(torch.jit.load(a.torchscript).eval(), x, y, a.contract)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
