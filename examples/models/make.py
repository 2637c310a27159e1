"""Makes the example models (and the regression example's data) with real PyTorch.

    python3 examples/models/make.py OUT_DIR

writes, deterministically:
- classifier.pt   forward(x) -> logits: an MLP for the digits data (64 features, 10 classes);
                  train it with `--contract logits` (the default).
- regression.pt   forward(x, y) -> loss: a small MLP regressor that returns its own mean squared
                  error; train it with `--contract loss` on data split with `--labels value`.
- regression.csv  8 features and a real-valued `target` column, with a header: 2,000 samples of
                  a smooth function plus a little noise.
"""

import sys
from pathlib import Path

import torch


class Regressor(torch.nn.Module):
    """Any model that computes its own loss fits the `loss` contract."""

    def __init__(self, features: int, hidden: int):
        super().__init__()
        self.net = torch.nn.Sequential(
            torch.nn.Linear(features, hidden), torch.nn.Tanh(), torch.nn.Linear(hidden, 1)
        )

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.mse_loss(self.net(x).squeeze(-1), y)

    @torch.jit.export
    def predict(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).squeeze(-1)


def regression_data(path: Path, samples: int = 2000, features: int = 8) -> None:
    g = torch.Generator().manual_seed(7)
    x = torch.rand(samples, features, generator=g) * 2 - 1
    w = torch.linspace(-1.0, 1.0, features)
    y = x @ w + 0.5 * torch.sin(3 * x[:, 0]) + 0.05 * torch.randn(samples, generator=g)
    header = ",".join([f"f{i}" for i in range(features)] + ["target"])
    rows = [",".join(f"{v:.6f}" for v in (*x[i].tolist(), y[i].item())) for i in range(samples)]
    path.write_text(header + "\n" + "\n".join(rows) + "\n")


def main() -> None:
    out = Path(sys.argv[1])
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    classifier = torch.nn.Sequential(
        torch.nn.Linear(64, 48), torch.nn.Tanh(), torch.nn.Linear(48, 10)
    )
    torch.jit.script(classifier).save(str(out / "classifier.pt"))
    torch.manual_seed(0)
    torch.jit.script(Regressor(8, 32)).save(str(out / "regression.pt"))
    regression_data(out / "regression.csv")


if __name__ == "__main__":
    main()
