"""One Adam step inside a training loop: after the caller's own work, not back to back.

    python benchmarks/bench_trainloop.py                  # about 4 minutes on 2 cores
    python benchmarks/bench_trainloop.py --quick          # 1e6 only, fewer repeats
    python benchmarks/bench_trainloop.py --sizes 1e6 --libs radam-f32 --work spin
    python benchmarks/bench_trainloop.py --compare A B    # two builds of radam side by side

Run it with a Python that has radam (and, for their columns, torch and DeepSpeed)
installed. A training loop computes its gradients and then steps, so the step
starts after milliseconds of work on the calling thread: the optimizer's helper
threads have gone to sleep and that work has pushed the optimizer's data out of
the caches. ``bench_cpu.py`` times steps back to back; this times each step
after a gap of 0 ms (back to back, for reference), 2 ms and 20 ms of such work,
and the first steps after an idle pause (``time.sleep``, 50 ms by default).

The work in a gap (``--work numpy``, the default) stands in for a gradient
computation on one thread: "layers" of a 64x256 by 256x256 float32 matmul on
the next slice of a 16 MiB activation buffer, a ReLU, and a product written to
a second 16 MiB buffer, repeated until the gap's time is up. Like a backward
pass it is mostly arithmetic, on one core, while it streams through memory (the
slices go round the two buffers, 32 MiB: the size of the L3 here, so 20 ms of
it evicts much of a 1e6-parameter optimizer's 16 MiB). NumPy's BLAS is held to
one thread so the work never wakes threads of its own. ``--work spin`` (a busy
loop on the clock, no memory touched) and ``--work sleep`` (an idle gap) are
there to tell cold caches from sleeping threads.

Method. Every library runs in its own process (radam float32 and bfloat16
state, radam 8-bit state when radam has it, torch's fused Adam, DeepSpeed's
``DeepSpeedCPUAdam``), so no library's idle worker threads (OpenMP's spin
after a parallel region) take a core from the next; ``--rounds`` processes per
library run in turn with the others', and their samples are pooled. Inside a
process the gaps take turns in blocks: a few untimed (work, step) cycles to
reach the loop's steady state, then timed ones. Figures are medians with the
interquartile range (IQR). The recovery table gives, for each of the first
steps after the pause, the median over ``--pauses`` pauses.

``--compare A B`` takes two folders that each hold a built ``radam`` package
(as ``bench_overhead.py --compare`` takes them) and runs every radam column
once per build, in processes that import radam from that folder (the two
builds' processes take turns), then tabulates B / A: the ratio of the pooled
medians.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

LR = 1e-3
# Library columns, in table order: name -> how a worker builds its step.
RADAM_F32 = "radam-f32"
RADAM_BF16 = "radam-bf16"
RADAM_8BIT = "radam-8bit"
TORCH_FUSED = "torch-fused"
DEEPSPEED = "deepspeed"
LIBS = [RADAM_F32, RADAM_BF16, RADAM_8BIT, TORCH_FUSED, DEEPSPEED]
RADAM_STATE = {RADAM_F32: None, RADAM_BF16: "bfloat16", RADAM_8BIT: "8bit"}

WORK_MIB = 16  # each of the two activation buffers of the "numpy" work
UNIT_ROWS, UNIT_WIDTH = 64, 256  # one layer: (64 x 256) @ (256 x 256)


# ----------------------------------------------------------------------------- worker


class Skip(Exception):
    """The library is not available here; the message says why."""


def radam_origin() -> str:
    """The folder this process imports radam from (its package's parent)."""
    import radam

    return str(Path(radam.__file__).resolve().parent.parent)


def make_step(lib: str, n: int) -> Callable[[], None]:
    """One step of ``lib`` on its own n float32 params (raises Skip)."""
    import numpy as np

    rng = np.random.default_rng(0)
    param = rng.standard_normal(n, dtype=np.float32)
    grad = rng.standard_normal(n, dtype=np.float32)
    if lib in RADAM_STATE:
        import radam

        try:
            opt = radam.Adam([param], lr=LR, state_dtype=RADAM_STATE[lib])
            opt.step([grad])  # the state is made at the first step
        except (ValueError, TypeError, NotImplementedError) as err:
            raise Skip(f"{type(err).__name__}: {str(err).splitlines()[0][:100]}") from None
        return lambda: opt.step([grad])
    try:
        import torch
    except ImportError as err:
        raise Skip(f"torch absent ({err})") from None
    p = torch.from_numpy(param).requires_grad_(True)
    p.grad = torch.from_numpy(grad)
    if lib == TORCH_FUSED:
        return torch.optim.Adam([p], lr=LR, fused=True).step
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import report  # DeepSpeed's import and op build, as the full report does them

    cls, why = report.deepspeed_adam()
    if cls is None:
        raise Skip(f"DeepSpeed unavailable ({why})")
    return cls([p], lr=LR, adamw_mode=False).step


def make_work(kind: str) -> Callable[[float], None]:
    """work(seconds): keep the calling thread busy that long, as ``kind`` says."""
    clock = time.perf_counter
    if kind == "sleep":
        return time.sleep
    if kind == "spin":

        def spin(seconds: float) -> None:
            end = clock() + seconds
            while clock() < end:
                pass

        return spin
    import numpy as np

    rng = np.random.default_rng(1)
    slices = WORK_MIB * 2**20 // (4 * UNIT_ROWS * UNIT_WIDTH)
    acts = rng.standard_normal((slices, UNIT_ROWS, UNIT_WIDTH), dtype=np.float32)
    outs = np.zeros_like(acts)
    weight = rng.standard_normal((UNIT_WIDTH, UNIT_WIDTH), dtype=np.float32) / UNIT_WIDTH**0.5
    y = np.empty((UNIT_ROWS, UNIT_WIDTH), np.float32)
    at = [0]  # the next slice: each gap goes on where the last one stopped

    def layers(seconds: float) -> None:
        end = clock() + seconds
        while True:
            i = at[0] = (at[0] + 1) % slices
            np.matmul(acts[i], weight, out=y)
            np.maximum(y, 0.0, out=y)
            np.multiply(acts[i], y, out=outs[i])
            if clock() >= end:
                break

    return layers


def run_worker(lib: str, sizes: list[int], args: argparse.Namespace) -> dict[str, Any]:
    work = make_work(args.work)
    clock = time.perf_counter
    out: dict[str, Any] = {"lib": lib, "sizes": {}}
    if lib in RADAM_STATE:
        out["radam_from"] = radam_origin()
    for n in sizes:
        try:
            step = make_step(lib, n)
        except Skip as why:
            return {"lib": lib, "skipped": str(why)}
        for _ in range(args.warmup):
            step()
        gaps = {g: [] for g in args.gaps}
        order = list(args.gaps)
        gc.collect()
        gc.disable()
        try:
            for block in range(max(1, args.repeats // args.block)):
                k = block % len(order)
                for g in order[k:] + order[:k]:
                    for timed in [False] * args.steady + [True] * args.block:
                        if g:
                            work(g / 1e3)
                        t0 = clock()
                        step()
                        if timed:
                            gaps[g].append(clock() - t0)
            recovery = []
            for _ in range(args.pauses):
                end = clock() + 0.02  # back to back first: the tight loop's state
                while clock() < end:
                    step()
                time.sleep(args.pause_ms / 1e3)
                times = []
                for _ in range(args.recovery_steps):
                    t0 = clock()
                    step()
                    times.append(clock() - t0)
                recovery.append(times)
        finally:
            gc.enable()
        out["sizes"][str(n)] = {
            "gaps": {str(g): xs for g, xs in gaps.items()},
            "recovery": recovery,
        }
        del step
        gc.collect()
    return out


# ----------------------------------------------------------------------------- parent


def quartiles(xs: list[float]) -> tuple[float, float, float]:
    q = statistics.quantiles(xs, n=4, method="inclusive") if len(xs) > 1 else [xs[0]] * 3
    return q[0], statistics.median(xs), q[2]


def worker_env(work: str, build: str | None) -> dict[str, str]:
    env = dict(os.environ)
    # The gap's work stands for one thread's gradient computation: NumPy's
    # BLAS must not start threads of its own.
    if work == "numpy":
        env["OPENBLAS_NUM_THREADS"] = "1"
    if build is not None:
        env["PYTHONPATH"] = os.pathsep.join([build] + env.get("PYTHONPATH", "").split(os.pathsep))
    return env


def columns(libs: list[str], builds: dict[str, str]) -> list[tuple[str, str, str | None]]:
    """(column, library, build folder or None): one radam column per build. The
    other columns' processes import radam too (DeepSpeed's loader lives in
    ``report.py``, which does): from the first build."""
    out: list[tuple[str, str, str | None]] = []
    for lib in libs:
        if lib in RADAM_STATE and builds:
            out += [(f"{lib} {label}", lib, folder) for label, folder in builds.items()]
        else:
            out.append((lib, lib, next(iter(builds.values()), None)))
    return out


def busy_seconds() -> float:
    """CPU seconds spent by everything on the machine so far (from /proc/stat)."""
    try:
        with open("/proc/stat") as f:
            v = [int(x) for x in f.readline().split()[1:9]]
    except OSError:
        return float("nan")
    return (sum(v) - v[3] - v[4]) / os.sysconf("SC_CLK_TCK")  # all but idle and iowait


def children_seconds() -> float:
    try:
        import resource
    except ImportError:  # not POSIX
        return float("nan")
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def run_worker_process(cmd: list[str], env: dict[str, str]) -> tuple[Any, float]:
    """Run one worker; returns its completed process and the other work on the
    machine meanwhile, in cores (busy CPU time not spent by the worker, over
    its wall time): other programs skew every timing here."""
    busy0, own0, t0 = busy_seconds(), children_seconds(), time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    others = (busy_seconds() - busy0 - (children_seconds() - own0)) / wall
    return proc, others


def run_all(args: argparse.Namespace) -> dict[str, dict[str, Any]]:
    pooled: dict[str, dict[str, Any]] = {}
    cols = columns(args.libs, args.builds)
    for r in range(args.rounds):
        k = r % len(cols)
        for col, lib, build in cols[k:] + cols[:k]:
            if pooled.get(col, {}).get("skipped"):
                continue
            cmd = [sys.executable, __file__, "--_worker", lib] + args.worker_argv
            proc, others = run_worker_process(cmd, worker_env(args.work, build))
            if proc.returncode != 0:
                tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
                pooled[col] = {"skipped": f"worker failed: {tail[:120]}"}
                continue
            res = json.loads(proc.stdout.strip().splitlines()[-1])
            if "skipped" in res:
                pooled[col] = {"skipped": res["skipped"]}
                continue
            if build is not None and res.get("radam_from", build) != build:
                sys.exit(f"{col}: radam came from {res['radam_from']}, not {build}")
            into = pooled.setdefault(col, {})
            into.setdefault("others_cores", []).append(others)
            for n, s in res["sizes"].items():
                dst = into.setdefault(n, {"gaps": {}, "recovery": []})
                for g, xs in s["gaps"].items():
                    dst["gaps"].setdefault(g, []).extend(xs)
                dst["recovery"].extend(s["recovery"])
            print(f"done: {col}, round {r + 1} (others: {others:.2f} cores)", file=sys.stderr)
    return pooled


def fmt_us(s: float) -> str:
    return f"{s * 1e6:.0f}" if s >= 1e-4 else f"{s * 1e6:.1f}"


def gap_table(pooled: dict[str, Any], sizes: list[int], gaps: list[float]) -> str:
    head = ["params", "library"] + [f"after {g:g} ms: us (IQR)" for g in gaps]
    head += [f"{g:g} ms / 0 ms" for g in gaps if g]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for n in sizes:
        for lib, res in pooled.items():
            if "skipped" in res or str(n) not in res:
                continue
            row = [f"{n:.0e}".replace("e+0", "e"), lib]
            med = {}
            for g in gaps:
                q1, m, q3 = quartiles(res[str(n)]["gaps"][str(g)])
                med[g] = m
                row.append(f"{fmt_us(m)} ({fmt_us(q3 - q1)})")
            row += [f"{med[g] / med[0]:.2f}" if 0 in med else "-" for g in gaps if g]
            lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


RECOVERY_AT = [1, 2, 3, 5, 10, 20, 40]


def recovered_after(per_step: list[float], tight: float, within: float = 1.25) -> int:
    """The first step k after which every step's median is within ``within`` x the tight loop's."""
    k = len(per_step)
    while k > 0 and per_step[k - 1] <= within * tight:
        k -= 1
    return k + 1


def recovery_table(pooled: dict[str, Any], sizes: list[int], pause_ms: float) -> str:
    at = RECOVERY_AT
    head = ["params", "library"] + [f"step {a}" for a in at]
    head += ["back to back", "steps to within 1.25x"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for n in sizes:
        for lib, res in pooled.items():
            if "skipped" in res or str(n) not in res:
                continue
            rec = res[str(n)]["recovery"]
            per_step = [statistics.median(col) for col in zip(*rec)]
            tight = statistics.median(res[str(n)]["gaps"]["0"])
            row = [f"{n:.0e}".replace("e+0", "e"), lib]
            row += [fmt_us(per_step[a - 1]) if a <= len(per_step) else "-" for a in at]
            row += [fmt_us(tight), str(recovered_after(per_step, tight))]
            lines.append("| " + " | ".join(row) + " |")
    return f"First steps after a {pause_ms:g} ms pause, us (median over pauses)\n\n" + "\n".join(
        lines
    )


def compare_table(
    pooled: dict[str, Any], libs: list[str], sizes: list[int], gaps: list[float]
) -> str:
    """Build B against build A for each radam column: medians and B / A."""
    head = ["params", "state"] + [f"after {g:g} ms: A / B us (B / A)" for g in gaps]
    head += ["recovery steps A / B"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for n in sizes:
        for lib in libs:
            a, b = pooled.get(f"{lib} A", {}), pooled.get(f"{lib} B", {})
            if str(n) not in a or str(n) not in b:
                continue
            row = [f"{n:.0e}".replace("e+0", "e"), lib]
            for g in gaps:
                ma, mb = (statistics.median(r[str(n)]["gaps"][str(g)]) for r in (a, b))
                row.append(f"{fmt_us(ma)} / {fmt_us(mb)} ({mb / ma:.2f})")
            steps = []
            for r in (a, b):
                per_step = [statistics.median(col) for col in zip(*r[str(n)]["recovery"])]
                steps.append(
                    str(recovered_after(per_step, statistics.median(r[str(n)]["gaps"]["0"])))
                )
            row.append(" / ".join(steps))
            lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def parse_size(text: str) -> int:
    return int(float(text))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--sizes", default="1e5,1e6,1e7", help="params, comma-separated")
    ap.add_argument("--gaps", default="0,2,20", help="ms of work before each step")
    ap.add_argument("--libs", default=",".join(LIBS), help="comma-separated: " + ", ".join(LIBS))
    ap.add_argument("--work", choices=["numpy", "spin", "sleep"], default="numpy")
    ap.add_argument("--repeats", type=int, default=48, help="timed steps per gap and process")
    ap.add_argument("--block", type=int, default=8, help="timed steps per block of one gap")
    ap.add_argument("--steady", type=int, default=2, help="untimed cycles before a block")
    ap.add_argument("--warmup", type=int, default=20, help="untimed steps first")
    ap.add_argument("--rounds", type=int, default=2, help="processes per library, in turn")
    ap.add_argument("--pause-ms", type=float, default=50.0)
    ap.add_argument("--pauses", type=int, default=15, help="pauses per process")
    ap.add_argument("--recovery-steps", type=int, default=60)
    ap.add_argument("--quick", action="store_true", help="1e6 only, one round, fewer repeats")
    ap.add_argument("--json", default=None, help="also write the samples as JSON")
    ap.add_argument(
        "--compare",
        nargs=2,
        metavar=("A", "B"),
        help="run the radam columns from two builds (folders that each hold a built radam package)",
    )
    ap.add_argument("--_worker", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.quick:
        args.sizes, args.rounds, args.repeats, args.pauses = "1e6", 1, 24, 8
    sizes = [parse_size(s) for s in args.sizes.split(",")]
    args.gaps = [float(g) if "." in g else int(g) for g in args.gaps.split(",")]
    if args._worker:
        print(json.dumps(run_worker(args._worker, sizes, args)))
        return 0
    args.libs = [x for x in args.libs.split(",") if x]
    unknown = set(args.libs) - set(LIBS)
    if unknown:
        ap.error(f"unknown --libs {sorted(unknown)}; choose from {LIBS}")
    args.builds = {}
    for label, folder in zip("AB", args.compare or []):
        if not (Path(folder) / "radam" / "__init__.py").is_file():
            ap.error(f"--compare: {folder} holds no radam package (no radam/__init__.py)")
        args.builds[label] = str(Path(folder).resolve())
    args.worker_argv = [
        "--sizes", args.sizes, "--gaps", ",".join(map(str, args.gaps)), "--work", args.work,
        "--repeats", str(args.repeats), "--block", str(args.block),
        "--steady", str(args.steady), "--warmup", str(args.warmup),
        "--pause-ms", str(args.pause_ms), "--pauses", str(args.pauses),
        "--recovery-steps", str(args.recovery_steps),
    ]  # fmt: skip

    load0 = os.getloadavg()[0]
    print(
        f"## Steps in a training loop ({args.work} work in the gaps; each library in its own "
        f"process, {args.rounds} round(s); load average at start {load0:.2f})\n"
    )
    sys.stdout.flush()
    t0 = time.time()
    pooled = run_all(args)
    print(gap_table(pooled, sizes, args.gaps))
    print()
    print(recovery_table(pooled, sizes, args.pause_ms))
    print()
    if args.builds:
        print("\n".join(f"{label} = {folder}" for label, folder in args.builds.items()))
        print()
        print(compare_table(pooled, args.libs, sizes, args.gaps))
        print()
    for lib, res in pooled.items():
        if "skipped" in res:
            print(f"- {lib} skipped: {res['skipped']}")
        else:
            cores = ", ".join(f"{c:.2f}" for c in res["others_cores"])
            print(f"- {lib}: other programs used {cores} cores during its processes")
    print(f"\nload average at end {os.getloadavg()[0]:.2f}; took {time.time() - t0:.0f} s")
    if args.json:
        from bench_overhead import write_json

        write_json(args.json, load_start=load0, results=pooled)
    return 0


if __name__ == "__main__":
    sys.exit(main())
