"""radam.torch.AdamW against torch's CPU AdamW (fused, foreach), DeepSpeedCPUAdam and
bitsandbytes' AdamW8bit (where installed), and against radam.AdamW through NumPy on
the same memory (what the adapter costs).

    python benchmarks/bench_torch.py                  # every case (GPT-2 shapes, 12 layers)
    python benchmarks/bench_torch.py --layers 2 --repeats 11   # a smaller GPT-2-shaped set

Cases: one tensor of 1e6 params; a GPT-2-small-shaped set (124M params, 148 tensors
with 12 layers; ``--layers`` keeps the same shapes with fewer blocks); 1000 tensors
of 1000 params; and a training loop with gaps (1e6 params, 2 ms and 20 ms of other
work between steps, as a forward and backward pass would leave; only the step is
timed). Every optimizer steps its own params, allocated by torch (radam.AdamW steps
NumPy views of radam.torch's tensors, its state its own); the grads are set once,
so radam.torch's grad views stay cached, as after ``zero_grad(set_to_none=False)``.
In each repeat the optimizers run one after the other in a rotating order; figures
are medians over the repeats, ratios the medians of per-repeat ratios.
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Callable

import numpy as np
import radam
import radam.torch as rt
import torch


def gpt2_shapes(layers: int) -> list[tuple[int, ...]]:
    """GPT-2 small's parameter shapes (d=768, vocab 50257, context 1024)."""
    d, shapes = 768, [(50257, 768), (1024, 768)]
    for _ in range(layers):
        shapes += [(d,), (d,), (d, 3 * d), (3 * d,), (d, d), (d,), (d,), (d,)]
        shapes += [(d, 4 * d), (4 * d,), (4 * d, d), (d,)]
    return shapes + [(d,), (d,)]


def make_params(shapes: list[tuple[int, ...]], seed: int = 0) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    params = []
    for s in shapes:
        p = torch.nn.Parameter(torch.randn(s, generator=gen) * 0.02)
        p.grad = torch.randn(s, generator=gen) * 1e-3
        params.append(p)
    return params


def optimizers(shapes: list[tuple[int, ...]], eight_bit: bool) -> dict[str, Callable[[], None]]:
    """name -> one step, each over its own params."""
    steps: dict[str, Callable[[], None]] = {}
    ours_params = make_params(shapes)
    ours = rt.AdamW(ours_params, lr=1e-3)
    steps["radam.torch"] = ours.step
    views = [p.detach().numpy() for p in make_params(shapes)]
    grads = [p.grad.numpy() for p in ours_params]
    numpy_opt = radam.AdamW(views, lr=1e-3)
    steps["radam.AdamW (NumPy)"] = lambda: numpy_opt.step(grads)
    for kind in ("fused", "foreach"):
        opt = torch.optim.AdamW(make_params(shapes), lr=1e-3, **{kind: True})
        steps[f"torch {kind}"] = opt.step
    try:
        from deepspeed.ops.adam import DeepSpeedCPUAdam

        ds = DeepSpeedCPUAdam(make_params(shapes), lr=1e-3, adamw_mode=True)
        steps["DeepSpeedCPUAdam"] = ds.step
    except Exception as err:  # not installed, or its ops do not build here
        print(f"(DeepSpeedCPUAdam skipped: {type(err).__name__}: {str(err)[:80]})")
    if eight_bit:
        q8 = rt.AdamW(make_params(shapes), lr=1e-3, state_dtype="8bit")
        steps["radam.torch 8-bit"] = q8.step
        try:
            import bitsandbytes as bnb

            bnb_opt = bnb.optim.AdamW8bit(make_params(shapes), lr=1e-3)
            steps["bnb AdamW8bit"] = bnb_opt.step
        except Exception as err:
            print(f"(bitsandbytes AdamW8bit skipped: {type(err).__name__}: {str(err)[:80]})")
    return steps


def measure(
    steps: dict[str, Callable[[], None]], repeats: int, batch: int, gap_s: float = 0.0
) -> dict[str, list[float]]:
    """Seconds per step of each, per repeat (a batch of steps each), rotating the order."""
    for step in steps.values():
        step()  # warm-up: state allocated
    names = list(steps)
    times: dict[str, list[float]] = {n: [] for n in names}
    for r in range(repeats):
        for n in names[r % len(names) :] + names[: r % len(names)]:
            total = 0.0
            for _ in range(batch):
                if gap_s:
                    time.sleep(gap_s)
                start = time.perf_counter()
                steps[n]()
                total += time.perf_counter() - start
            times[n].append(total / batch)
    return times


def report(case: str, times: dict[str, list[float]]) -> None:
    base = times["torch fused"]
    ours = times["radam.torch"]
    print(f"\n{case}")
    print(f"  {'optimizer':22s} {'median':>12s} {'vs torch fused':>15s}")
    for name, t in times.items():
        ratio = statistics.median(a / b for a, b in zip(t, base))
        print(f"  {name:22s} {_fmt(statistics.median(t)):>12s} {ratio:>14.2f}x")
    adapter = statistics.median(a / b for a, b in zip(ours, times["radam.AdamW (NumPy)"]))
    print(f"  radam.torch / radam.AdamW (NumPy): {adapter:.3f}x")


def _fmt(seconds: float) -> str:
    return f"{seconds * 1e3:.3f} ms" if seconds >= 1e-3 else f"{seconds * 1e6:.1f} us"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeats", type=int, default=15)
    ap.add_argument("--layers", type=int, default=12, help="GPT-2 blocks (12: 124M params)")
    ap.add_argument("--cases", default="1e6,gpt2,1000x1000,gaps")
    args = ap.parse_args()
    cases = args.cases.split(",")
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads; radam threads: "
        f"{radam._core.num_threads() if hasattr(radam._core, 'num_threads') else '?'}"
    )
    if "1e6" in cases:
        report("one tensor of 1e6", measure(optimizers([(10**6,)], True), args.repeats, 20))
    if "gpt2" in cases:
        shapes = gpt2_shapes(args.layers)
        n = sum(int(np.prod(s)) for s in shapes)
        times = measure(optimizers(shapes, False), args.repeats, 1)
        report(f"GPT-2 shapes, {args.layers} layers: {len(shapes)} tensors, {n / 1e6:.1f}M", times)
    if "1000x1000" in cases:
        times = measure(optimizers([(1000,)] * 1000, False), args.repeats, 5)
        report("1000 tensors of 1000", times)
    if "gaps" in cases:
        for gap in (0.002, 0.020):
            times = measure(optimizers([(10**6,)], False), args.repeats, 5, gap)
            report(f"training loop, 1e6 params, {gap * 1e3:.0f} ms gaps", times)


if __name__ == "__main__":
    main()
