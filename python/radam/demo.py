"""``python -m radam demo``: Adam against SGD on real data, as the paper's Figure 1.

Trains multinomial logistic regression and a small MLP (one hidden ReLU layer)
on scikit-learn's handwritten digits (1797 8x8 images that ship inside
scikit-learn: no download), each with radam.Adam, plain SGD and SGD with
momentum, on the same mini-batches. Prints a table of the final train/test
loss and accuracy and writes a PNG of the training-loss curves.

Needs the ``demo`` extra: ``pip install "radam[demo]"`` (scikit-learn,
matplotlib, tqdm).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

import radam

EXTRA_COMMAND = 'pip install "radam[demo]"  (from a source checkout: pip install ".[demo]")'
DTYPE = np.float32
L2 = 1e-4  # weight decay in the loss, on the weights (not the biases)


def _missing_extras() -> list[str]:
    missing = []
    for module, package in (
        ("sklearn", "scikit-learn"),
        ("matplotlib", "matplotlib"),
        ("tqdm", "tqdm"),
    ):
        try:
            __import__(module)
        except ImportError:
            missing.append(package)
    return missing


# -- data ---------------------------------------------------------------------------------


@dataclass
class Data:
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray


def load_data(seed: int) -> Data:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    x_train, x_test, y_train, y_test = train_test_split(
        digits.data / 16.0, digits.target, test_size=0.25, stratify=digits.target, random_state=seed
    )
    # Standardize with the training set's statistics; a floor on the spread keeps the
    # border pixels (nearly constant in training) from blowing up on test images.
    mean, std = x_train.mean(axis=0), np.maximum(x_train.std(axis=0), 0.1)
    x_train, x_test = (x_train - mean) / std, (x_test - mean) / std
    return Data(
        x_train.astype(DTYPE),
        y_train.astype(np.int64),
        x_test.astype(DTYPE),
        y_test.astype(np.int64),
    )


# -- models: params dicts, a forward pass, and the gradient of the mean cross-entropy ------


def _softmax_xent(logits: np.ndarray, y: np.ndarray) -> tuple[float, np.ndarray]:
    """Mean cross-entropy and its gradient with respect to the logits."""
    z = logits - logits.max(axis=1, keepdims=True)
    log_p = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    n = len(y)
    loss = -float(log_p[np.arange(n), y].mean())
    d = np.exp(log_p)
    d[np.arange(n), y] -= 1
    return loss, (d / n).astype(logits.dtype)


@dataclass
class Model:
    name: str
    init: Callable[[np.random.Generator, int, int], dict[str, np.ndarray]]
    logits: Callable[[dict[str, np.ndarray], np.ndarray], np.ndarray]
    loss_and_grads: Callable[..., tuple[float, dict[str, np.ndarray]]]


def _logreg_init(rng: np.random.Generator, d: int, k: int) -> dict[str, np.ndarray]:
    return {"W": np.zeros((d, k), DTYPE), "b": np.zeros(k, DTYPE)}


def _logreg_logits(p: dict[str, np.ndarray], x: np.ndarray) -> np.ndarray:
    return x @ p["W"] + p["b"]


def _logreg_loss(p, x, y):
    loss, d = _softmax_xent(_logreg_logits(p, x), y)
    loss += 0.5 * L2 * float((p["W"] ** 2).sum())
    return loss, {"W": x.T @ d + L2 * p["W"], "b": d.sum(axis=0)}


HIDDEN = 128


def _mlp_init(rng: np.random.Generator, d: int, k: int) -> dict[str, np.ndarray]:
    return {
        "W1": (rng.standard_normal((d, HIDDEN)) * np.sqrt(2.0 / d)).astype(DTYPE),
        "b1": np.zeros(HIDDEN, DTYPE),
        "W2": (rng.standard_normal((HIDDEN, k)) * np.sqrt(1.0 / HIDDEN)).astype(DTYPE),
        "b2": np.zeros(k, DTYPE),
    }


def _mlp_logits(p: dict[str, np.ndarray], x: np.ndarray) -> np.ndarray:
    return np.maximum(x @ p["W1"] + p["b1"], 0) @ p["W2"] + p["b2"]


def _mlp_loss(p, x, y):
    h = np.maximum(x @ p["W1"] + p["b1"], 0)
    loss, d = _softmax_xent(h @ p["W2"] + p["b2"], y)
    loss += 0.5 * L2 * float((p["W1"] ** 2).sum() + (p["W2"] ** 2).sum())
    dh = (d @ p["W2"].T) * (h > 0)
    return loss, {
        "W1": x.T @ dh + L2 * p["W1"],
        "b1": dh.sum(axis=0),
        "W2": h.T @ d + L2 * p["W2"],
        "b2": d.sum(axis=0),
    }


MODELS = [
    Model("logistic regression", _logreg_init, _logreg_logits, _logreg_loss),
    Model(f"MLP (64-{HIDDEN}-10, ReLU)", _mlp_init, _mlp_logits, _mlp_loss),
]


# -- optimizers: radam.Adam, and the two baselines of the paper's Figure 1 ----------------


class SGD:
    """Plain SGD, or with classical momentum: ``v = mu*v - lr*g; p += v``."""

    def __init__(self, params: dict[str, np.ndarray], lr: float, momentum: float = 0.0):
        self.params, self.lr, self.momentum = params, lr, momentum
        self.velocity = {k: np.zeros_like(p) for k, p in params.items()}

    def step(self, grads: dict[str, np.ndarray]) -> None:
        for k, p in self.params.items():
            if self.momentum:
                v = self.velocity[k]
                v *= self.momentum
                v -= self.lr * grads[k]
                p += v
            else:
                p -= self.lr * grads[k]


# Each learning rate is the best final training cost of a grid of steps of about 3x
# (Adam 1e-3..1e-2, SGD 0.03..0.3, momentum 0.003..0.03) on this data, as the
# paper tunes each optimizer for its comparison.
OPTIMIZERS: list[tuple[str, Callable[[dict[str, np.ndarray]], Any]]] = [
    ("Adam", lambda p: radam.Adam(p, lr=1e-2)),
    ("SGD", lambda p: SGD(p, lr=0.3)),
    ("SGD + momentum 0.9", lambda p: SGD(p, lr=0.03, momentum=0.9)),
]


# -- training -----------------------------------------------------------------------------


@dataclass
class Run:
    model: str
    optimizer: str
    train_loss: list[float] = field(default_factory=list)  # after each epoch, full train set
    test_loss: float = float("nan")
    train_acc: float = float("nan")
    test_acc: float = float("nan")
    seconds: float = 0.0


def _evaluate(model: Model, params: dict[str, np.ndarray], x: np.ndarray, y: np.ndarray):
    loss, _ = model.loss_and_grads(params, x, y)
    acc = float((model.logits(params, x).argmax(axis=1) == y).mean())
    return loss, acc


def epochs_of_batches(n: int, epochs: int, batch_size: int, seed: int) -> Iterator[list[Any]]:
    """Each epoch's mini-batches of ``n`` samples (their indices), in an order
    shuffled anew every epoch: the same for every model and optimizer."""
    order_rng = np.random.default_rng(seed + 1)
    for _ in range(epochs):
        order = order_rng.permutation(n)
        yield [order[i : i + batch_size] for i in range(0, n, batch_size)]


def train(data: Data, epochs: int, batch_size: int, seed: int, progress: Any = None) -> list[Run]:
    """Every model with every optimizer, on the same shuffled mini-batches."""
    n, d = data.x_train.shape
    k = int(data.y_train.max()) + 1
    runs = []
    for model in MODELS:
        init = model.init(np.random.default_rng(seed), d, k)
        for opt_name, make in OPTIMIZERS:
            params = {name: a.copy() for name, a in init.items()}
            opt = make(params)
            run = Run(model.name, opt_name)
            start = time.perf_counter()
            for batches in epochs_of_batches(n, epochs, batch_size, seed):
                for idx in batches:
                    _, grads = model.loss_and_grads(params, data.x_train[idx], data.y_train[idx])
                    opt.step(grads)
                run.train_loss.append(model.loss_and_grads(params, data.x_train, data.y_train)[0])
                if progress is not None:
                    progress.set_postfix_str(f"{model.name.split()[0]} {opt_name}", refresh=False)
                    progress.update(1)
            run.seconds = time.perf_counter() - start
            _, run.train_acc = _evaluate(model, params, data.x_train, data.y_train)
            run.test_loss, run.test_acc = _evaluate(model, params, data.x_test, data.y_test)
            runs.append(run)
    return runs


def table(runs: list[Run]) -> str:
    header = ("model", "optimizer", "train loss", "test loss", "train acc", "test acc")
    rows = [
        (
            r.model,
            r.optimizer,
            f"{r.train_loss[-1]:.4f}",
            f"{r.test_loss:.4f}",
            f"{100 * r.train_acc:.1f}%",
            f"{100 * r.test_acc:.1f}%",
        )
        for r in runs
    ]
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows)]
    lines = [
        "  ".join(
            str(x).ljust(w) if i < 2 else str(x).rjust(w)
            for i, (x, w) in enumerate(zip(row, widths))
        )
        for row in (header, *rows)
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def plot(runs: list[Run], path: str, batches_per_epoch: int) -> None:
    """Training-loss curves, one panel per model (matplotlib's Agg canvas, no pyplot)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    models = list(dict.fromkeys(r.model for r in runs))
    fig = Figure(figsize=(5.5 * len(models), 4.2), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, len(models), squeeze=False)[0]
    for ax, model in zip(axes, models):
        for r in runs:
            if r.model == model:
                epochs = np.arange(1, len(r.train_loss) + 1)
                ax.plot(epochs, r.train_loss, label=r.optimizer)
        ax.set_yscale("log")
        ax.set_title(f"{model}, digits")
        ax.set_xlabel(f"epochs ({batches_per_epoch} mini-batches each)")
        ax.set_ylabel("training cost (full training set)")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend()
    fig.savefig(path, dpi=110)


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    """The demo's arguments (``python -m radam demo ...``)."""
    parser = argparse.ArgumentParser(
        prog="python -m radam demo",
        description="Adam vs SGD and SGD with momentum on scikit-learn's digits "
        "(logistic regression and an MLP), as in Kingma & Ba's Figure 1.",
    )
    parser.add_argument("--epochs", type=int, default=60, help="passes over the data (60)")
    parser.add_argument("--batch-size", type=int, default=128, help="mini-batch size (128)")
    parser.add_argument(
        "--quick", action="store_true", help="reduced budget for CI: 12 epochs unless --epochs"
    )
    parser.add_argument(
        "--plot", default="radam-demo.png", help="PNG to write (radam-demo.png, in this folder)"
    )
    parser.add_argument("--no-plot", action="store_true", help="do not write the PNG")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("--seed", type=int, default=0, help="data split and init seed (0)")
    parser.add_argument(
        "--data-parallel",
        action="store_true",
        help=(
            "the MLP with radam.distributed.ShardedAdam (radam[mpi]), launched as "
            "mpiexec -n 3 python -m mpi4py -m radam demo --data-parallel"
        ),
    )
    args = parser.parse_args(argv)
    if args.quick and "--epochs" not in (argv if argv is not None else sys.argv[1:]):
        args.epochs = 12
    if args.epochs < 1 or args.batch_size < 1:
        parser.error("--epochs and --batch-size must be >= 1")
    return args


def main(argv: list[str] | None = None) -> int:
    """The demo on one process (``--data-parallel`` is routed to
    ``radam.demo_mpi`` by ``python -m radam``)."""
    return run(parse(argv))


def run(args: argparse.Namespace) -> int:
    missing = _missing_extras()
    if missing:
        print(
            f"python -m radam demo needs {', '.join(missing)}, which are not installed.\n"
            f"Install the demo extra: {EXTRA_COMMAND}",
            file=sys.stderr,
        )
        return 1
    from tqdm import tqdm

    data = load_data(args.seed)
    n = len(data.x_train)
    batches = -(-n // args.batch_size)
    print(
        f"radam {radam.__version__} ({radam.simd_level()}, {radam.num_threads()} threads): "
        f"digits, {n} train / {len(data.x_test)} test images, {args.epochs} epochs of "
        f"{batches} mini-batches of {args.batch_size}"
    )
    total = len(MODELS) * len(OPTIMIZERS) * args.epochs
    with tqdm(total=total, unit="epoch", disable=args.no_progress, file=sys.stderr) as bar:
        runs = train(data, args.epochs, args.batch_size, args.seed, bar)
    print(table(runs))
    if not args.no_plot:
        plot(runs, args.plot, batches)
        print(f"training curves: {args.plot}")
    return 0
