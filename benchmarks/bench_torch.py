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
NumPy views of radam.torch's params and grads, with its own state); the grads are set once,
so radam.torch's grad views stay cached, as after ``zero_grad(set_to_none=False)``.
In each repeat the optimizers run one after the other in a rotating order; figures
are medians over the repeats, ratios the medians of per-repeat ratios.
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Any, Callable

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
    # The same memory: radam.torch's own params and grads (each steps them in turn).
    views = [p.detach().numpy() for p in ours_params]
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


def adapter_ratio(steps: dict[str, Callable[[], None]], repeats: int, batch: int) -> float:
    """radam.torch's time over radam.AdamW's on the same memory, timed in pairs in
    alternating order (whichever runs second finds the params and grads in cache)."""
    ours, numpy_step = steps["radam.torch"], steps["radam.AdamW (NumPy)"]
    ratios = []
    for r in range(repeats):
        pair = {}
        for name, step in (("o", ours), ("n", numpy_step))[:: 1 if r % 2 else -1]:
            start = time.perf_counter()
            for _ in range(batch):
                step()
            pair[name] = time.perf_counter() - start
        ratios.append(pair["o"] / pair["n"])
    return statistics.median(ratios)


def report(case: str, times: dict[str, list[float]], adapter: float | None) -> None:
    base = times["torch fused"]
    print(f"\n{case}")
    print(f"  {'optimizer':22s} {'median':>12s} {'vs torch fused':>15s}")
    for name, t in times.items():
        ratio = statistics.median(a / b for a, b in zip(t, base))
        print(f"  {name:22s} {_fmt(statistics.median(t)):>12s} {ratio:>14.2f}x")
    if adapter is not None:
        print(f"  radam.torch / radam.AdamW (NumPy) on the same memory, paired: {adapter:.3f}x")


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

    def run(title: str, shapes: list[tuple[int, ...]], batch: int, **kw: Any) -> None:
        steps = optimizers(shapes, kw.pop("eight_bit", False))
        gap_s = kw.pop("gap_s", 0.0)
        times = measure(steps, args.repeats, batch, gap_s)
        # (the pairing runs without gaps: with them it would repeat the 1e6 case)
        report(title, times, None if gap_s else adapter_ratio(steps, args.repeats, batch))

    if "1e6" in cases:
        run("one tensor of 1e6", [(10**6,)], 20, eight_bit=True)
    if "gpt2" in cases:
        shapes = gpt2_shapes(args.layers)
        n = sum(int(np.prod(s)) for s in shapes)
        run(f"GPT-2 shapes, {args.layers} layers: {len(shapes)} tensors, {n / 1e6:.1f}M", shapes, 1)
    if "1000x1000" in cases:
        run("1000 tensors of 1000", [(1000,)] * 1000, 5)
    if "gaps" in cases:
        for gap in (0.002, 0.020):
            run(f"training loop, 1e6 params, {gap * 1e3:.0f} ms gaps", [(10**6,)], 5, gap_s=gap)


if __name__ == "__main__":
    main()
