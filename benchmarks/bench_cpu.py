"""One float32 Adam step on the CPU: radam vs a careful NumPy Adam vs PyTorch.

    python benchmarks/bench_cpu.py                 # full run (about 3 minutes on 2 cores)
    python benchmarks/bench_cpu.py --quick         # fewer repeats, smaller transformer
    python benchmarks/bench_cpu.py --repeats 61 --json benchmarks/results/run.json
    python benchmarks/bench_cpu.py --compare A B   # two builds of radam against each other

Run it with a Python that has radam (and, for the PyTorch columns, torch)
installed. PyTorch is a comparison only: without it those columns are skipped
with a note.

Method. Every implementation steps its own copy of the params (the grads are
shared and read-only). Within each repeat the implementations run one after
the other in a rotating order, so machine noise hits all of them alike; each
figure is the median over the repeats, with the interquartile range (IQR) as
the spread, after warm-up steps. Ratios are medians of the per-repeat ratios
(radam and the reference timed in the same repeat). Tiny tensors are timed
as a batch of back-to-back ``step`` calls (Python call included) divided by
the batch size.

Effective bandwidth is 28 bytes per parameter (32 with AMSGrad) over the step
time: an fp32 Adam step reads param, grad, m, v and writes param, m, v. The
bandwidth probe runs in the same loop as the 2e7 case over the same four
buffers, doing the same 4 reads + 3 writes per element with trivial arithmetic
(radam's multi-threaded ``_core._rmw_probe``, in an extension built with
``maturin develop --release --features bench``; the wheel has no probe, and
the row is then left out); PyTorch's multi-threaded
``a.add_(b)`` (12 bytes/element) and NumPy's single-threaded ``a += b`` are
shown beside it for reference.
"""

from __future__ import annotations

import argparse
import gc
import os
import platform
import statistics
import sys
import time
from typing import Any, Callable

# Thread counts must be fixed before radam (rayon) and torch start their pools.
_pre = argparse.ArgumentParser(add_help=False)
_pre.add_argument("--threads", type=int, default=None)
_threads = _pre.parse_known_args()[0].threads
if _threads:
    os.environ["RAYON_NUM_THREADS"] = str(_threads)
    os.environ["OMP_NUM_THREADS"] = str(_threads)

import numpy as np  # noqa: E402
import radam  # noqa: E402
from radam import _core  # noqa: E402
from radam.numpy_adam import NumpyAdam  # noqa: E402

try:
    import torch

    if _threads:
        torch.set_num_threads(_threads)
    TORCH_ERROR = None
except Exception as err:  # any import failure means "no torch column"
    torch = None
    TORCH_ERROR = f"{type(err).__name__}: {err}"

LR = 1e-3
BYTES_PER_PARAM = 28  # fp32: read p, g, m, v; write p, m, v
STATE_BYTES: dict[str, float] = {}  # bytes of optimizer state per parameter, by runner

RADAM = "radam"
NUMPY = "numpy"
FUSED = "torch fused"
FOREACH = "torch foreach"
BF16_STATE = "radam, bfloat16 state"
Q8_STATE = "radam, 8-bit state"
BNB_8BIT = "bitsandbytes Adam8bit"
STATE_KINDS = {BF16_STATE: "bfloat16", Q8_STATE: "8bit"}
PROBE_RADAM = "probe: rmw 4R+3W (radam, MT)"
PROBE_TORCH = "probe: a.add_(b) (torch, MT)"
PROBE_NUMPY = "probe: a += b (NumPy, 1 thread)"


# ----------------------------------------------------------------------------- cases


def transformer_shapes(blocks: int = 24, width: int = 384) -> list[tuple[int, ...]]:
    """12 tensors per block: fused qkv and output projections (+ biases),
    the MLP (width -> 4 width -> width, + biases) and two LayerNorms (weight + bias)."""
    w, h = width, 4 * width
    per_block = [
        (3 * w, w), (3 * w,),  # qkv
        (w, w), (w,),  # attention output
        (h, w), (h,),  # MLP up
        (w, h), (w,),  # MLP down
        (w,), (w,),  # LayerNorm 1
        (w,), (w,),  # LayerNorm 2
    ]  # fmt: skip
    return per_block * blocks


def cases(quick: bool) -> list[dict[str, Any]]:
    blocks = 6 if quick else 24
    return [
        {"name": "1 x 2e7", "shapes": [(20_000_000,)], "probe": True, "states": True},
        {"name": "1 x 1e6", "shapes": [(1_000_000,)], "warm": True, "states": True},
        {"name": f"{12 * blocks} tensors (transformer)", "shapes": transformer_shapes(blocks)},
        {"name": "1 x 1000", "shapes": [(1000,)], "tiny": True},
    ]


# ----------------------------------------------------------------------------- runners


def make_runners(
    shapes, seed: int, probe: bool, states: bool = False, bnb: bool = False
) -> dict[str, Callable[[], None]]:
    """name -> a callable doing one step. Each optimizer owns its params. With
    ``states``, radam with bfloat16 and 8-bit state too (and bitsandbytes' CPU
    Adam8bit with ``bnb``); their state bytes per parameter go in STATE_BYTES."""
    rng = np.random.default_rng(seed)
    grads = [rng.standard_normal(s, dtype=np.float32) for s in shapes]
    init = [rng.standard_normal(s, dtype=np.float32) for s in shapes]

    def fresh():
        return [a.copy() for a in init]

    runners: dict[str, Callable[[], None]] = {}

    opt = radam.Adam(fresh(), lr=LR)
    runners[RADAM] = lambda opt=opt, g=grads: opt.step(g)

    np_opt = NumpyAdam(fresh(), lr=LR)
    runners[NUMPY] = lambda opt=np_opt, g=grads: opt.step(g)

    if states:
        n = sum(int(np.prod(s)) for s in shapes)
        opt.step(grads)
        STATE_BYTES[RADAM] = sum(a.nbytes for e in opt.state.values() for a in e.values()) / n
        for name, dtype in STATE_KINDS.items():
            kind = radam.Adam(fresh(), lr=LR, state_dtype=dtype)
            kind.step(grads)
            STATE_BYTES[name] = sum(a.nbytes for e in kind.state.values() for a in e.values()) / n
            runners[name] = lambda opt=kind, g=grads: opt.step(g)
    if states and bnb and torch is not None:
        try:
            import bitsandbytes
        except Exception as err:  # any import failure means "no bitsandbytes row"
            print(f"> bitsandbytes is not importable ({type(err).__name__}): no row\n")
        else:
            ps = [torch.nn.Parameter(torch.from_numpy(a)) for a in fresh()]
            for p, g in zip(ps, grads):
                p.grad = torch.from_numpy(g)
            b_opt = bitsandbytes.optim.Adam8bit(ps, lr=LR)
            runners[BNB_8BIT] = b_opt.step

    if torch is not None:
        for name, kw in ((FUSED, {"fused": True}), (FOREACH, {"foreach": True})):
            ps = [torch.from_numpy(a) for a in fresh()]
            for p, g in zip(ps, grads):
                p.requires_grad_(True)
                p.grad = torch.from_numpy(g)
            t_opt = torch.optim.Adam(ps, lr=LR, **kw)
            runners[name] = t_opt.step

    if probe:
        p, m, v = fresh()[0], np.zeros(shapes[0], np.float32), np.zeros(shapes[0], np.float32)
        g = grads[0]
        if hasattr(_core, "_rmw_probe"):
            runners[PROBE_RADAM] = lambda: _core._rmw_probe(p, g, m, v)
        if torch is not None:
            ta, tb = torch.from_numpy(m), torch.from_numpy(g)
            runners[PROBE_TORCH] = lambda: ta.add_(tb)
        runners[PROBE_NUMPY] = lambda: np.add(v, g, out=v)
    return runners


def probe_bytes(name: str) -> int:
    return {PROBE_TORCH: 12, PROBE_NUMPY: 12}.get(name, BYTES_PER_PARAM)


def calibrate(fn: Callable[[], None], target_s: float) -> int:
    """Back-to-back calls per sample so a sample lasts about target_s."""
    fn()
    t0 = time.perf_counter()
    fn()
    once = time.perf_counter() - t0
    return max(1, min(100_000, int(target_s / max(once, 1e-9))))


def measure(
    runners, repeats: int, warmup: int, tiny: bool, warm: bool, settle: float, budget: float
) -> dict[str, list[float]]:
    """Per-step seconds of each runner, ``repeats`` samples each, interleaved.

    Before each sample the runner takes untimed steps for ``settle`` seconds
    (at least one when ``warm``). That lets the previous implementation's
    worker threads go idle first (libgomp's spin after a parallel region: 8-10
    ms of CPU measured after a torch step, so up to about 20 ms of wall time
    while it shares a core; it would steal a core on this 2-core machine) while
    keeping the CPUs busy (idle gaps make this VM's next milliseconds slow),
    and it leaves a case that fits in the caches cache-resident, as it is in
    a loop of steps. After ``budget`` seconds (and at least 5 repeats) the
    case stops early, so a loaded machine cannot stall the run.
    """
    names = list(runners)
    for name in names:
        for _ in range(warmup):
            runners[name]()
    batch = {n: calibrate(runners[n], 0.02) if tiny else 1 for n in names}
    samples: dict[str, list[float]] = {n: [] for n in names}
    clock = time.perf_counter
    gc.collect()
    gc.disable()
    deadline = clock() + budget
    try:
        for r in range(repeats):
            if r >= 5 and clock() > deadline:
                break
            k = r % len(names)
            for name in names[k:] + names[:k]:  # rotate the order every repeat
                fn, b = runners[name], batch[name]
                if warm or settle:
                    fn()
                    end = clock() + settle
                    while clock() < end:
                        fn()
                if b == 1:
                    t0 = clock()
                    fn()
                    samples[name].append(clock() - t0)
                else:
                    t0 = clock()
                    for _ in range(b):
                        fn()
                    samples[name].append((clock() - t0) / b)
    finally:
        gc.enable()
    return samples


def measure_case(
    runners: dict[str, Any], case: dict[str, Any], repeats: int, args: argparse.Namespace
) -> dict[str, list[float]]:
    """:func:`measure` with the case's and the command line's settings."""
    return measure(
        runners,
        repeats,
        args.warmup,
        tiny=case.get("tiny", False),
        warm=case.get("warm", False),
        settle=args.settle_ms / 1e3,
        budget=args.budget_s,
    )


# ----------------------------------------------------------------------------- stats


def quartiles(xs: list[float]) -> tuple[float, float, float]:
    q = statistics.quantiles(xs, n=4, method="inclusive") if len(xs) > 1 else [xs[0]] * 3
    return q[0], statistics.median(xs), q[2]


def summarize(samples: dict[str, list[float]], n_params: int) -> dict[str, dict[str, float]]:
    out = {}
    for name, xs in samples.items():
        q1, med, q3 = quartiles(xs)
        bytes_per = probe_bytes(name) if name.startswith("probe") else BYTES_PER_PARAM
        out[name] = {
            "median_s": med,
            "q1_s": q1,
            "q3_s": q3,
            "iqr_s": q3 - q1,
            "min_s": min(xs),
            "gbps": bytes_per * n_params / med / 1e9,
            "samples": len(xs),
        }
    return out


def ratio(samples, a: str, b: str) -> tuple[float, float] | None:
    """Median and IQR of the per-repeat ratio a/b."""
    if a not in samples or b not in samples:
        return None
    rs = [x / y for x, y in zip(samples[a], samples[b])]
    q1, med, q3 = quartiles(rs)
    return med, q3 - q1


# ----------------------------------------------------------------------------- report


def fmt_time(s: float, unit: str) -> str:
    scale = {"ms": 1e3, "us": 1e6}[unit]
    return f"{s * scale:.3f}" if s * scale < 10 else f"{s * scale:.2f}"


def machine() -> dict[str, Any]:
    model = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    info = {
        "cpu": model,
        "logical_cpus": os.cpu_count(),
        "simd_level": radam.simd_level(),
        "radam_threads": radam.num_threads(),
        "radam": radam.__version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
        "torch": torch.__version__ if torch is not None else None,
        "torch_threads": torch.get_num_threads() if torch is not None else None,
    }
    try:
        info["loadavg_start"] = os.getloadavg()[0]
    except OSError:
        pass
    return info


def table(results: list[dict[str, Any]], have_torch: bool) -> str:
    cols = [RADAM, NUMPY] + ([FUSED, FOREACH] if have_torch else [])
    head = ["case", "params", "repeats", "unit"] + [f"{c} median (IQR)" for c in cols]
    head += ["radam GB/s", "NumPy / radam"]
    if have_torch:
        head += ["radam / fused (IQR)", "radam / fused, best of each", "fused GB/s"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for res in results:
        s, unit = res["summary"], "us" if res["n_params"] < 100_000 else "ms"
        row = [res["name"], f"{res['n_params']:,}", str(s[RADAM]["samples"]), unit]
        for c in cols:
            row.append(f"{fmt_time(s[c]['median_s'], unit)} ({fmt_time(s[c]['iqr_s'], unit)})")
        row.append(f"{s[RADAM]['gbps']:.1f}")
        med, iqr = res["ratios"]["numpy/radam"]
        row.append(f"{med:.2f}x")
        if have_torch:
            med, iqr = res["ratios"]["radam/fused"]
            row.append(f"{med:.3f} ({iqr:.3f})")
            row.append(f"{s[RADAM]['min_s'] / s[FUSED]['min_s']:.3f}")
            row.append(f"{s[FUSED]['gbps']:.1f}")
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def states_table(results: list[dict[str, Any]]) -> str:
    """The state kinds side by side: medians, per-repeat ratios to float32 state."""
    lines = [
        "| case | state | median (IQR) | ratio to float32 state: median (best of each) "
        "| state bytes / param |",
        "|---|---|---|---|---|",
    ]
    for res in results:
        s, samples = res["summary"], res["samples"]
        if Q8_STATE not in s:
            continue
        unit = "ms"
        for name in (RADAM, BF16_STATE, Q8_STATE, BNB_8BIT):
            if name not in s:
                continue
            med = (
                f"{fmt_time(s[name]['median_s'], unit)} {unit} ({fmt_time(s[name]['iqr_s'], unit)})"
            )
            r = ratio(samples, name, RADAM)
            best = s[name]["min_s"] / s[RADAM]["min_s"]
            label = "radam, float32 state" if name == RADAM else name
            nbytes = f"{STATE_BYTES[name]:.3f}" if name in STATE_BYTES else ""
            lines.append(
                f"| {res['name']} | {label} | {med} | {r[0]:.3f} ({best:.3f}) | {nbytes} |"
            )
        if BNB_8BIT in s:
            r = ratio(samples, BNB_8BIT, Q8_STATE)
            lines.append(f"| {res['name']} | bitsandbytes / radam 8-bit | | {r[0]:.1f}x | |")
    return "\n".join(lines)


def probe_table(res: dict[str, Any]) -> str:
    lines = [
        f"| bandwidth probe (same loop as {res['name']}) | bytes/elem | median ms (IQR) | GB/s |",
        "|---|---|---|---|",
    ]
    for name, s in res["summary"].items():
        if not name.startswith("probe"):
            continue
        lines.append(
            f"| {name} | {probe_bytes(name)} | {fmt_time(s['median_s'], 'ms')} "
            f"({fmt_time(s['iqr_s'], 'ms')}) | {s['gbps']:.1f} |"
        )
    return "\n".join(lines)


TARGETS = {
    # case index -> (description, check(summary, ratios) -> (ok, text))
    0: "2e7: radam/fused <= 1.0 and NumPy/radam >= 6",
    1: "1e6: radam/fused <= 0.7",
    2: "288 tensors: radam/fused <= 1.0",
    3: "1000: radam/fused <= 0.25 (about 5 us)",
}


def verdicts(results: list[dict[str, Any]]) -> list[str]:
    out = []
    for i, res in enumerate(results):
        r = res["ratios"].get("radam/fused")
        if r is None:
            out.append(f"- {TARGETS[i]}: no torch, not checked")
            continue
        rf = r[0]
        if i == 0:
            npr = res["ratios"]["numpy/radam"][0]
            ok = rf <= 1.0 and npr >= 6
            text = f"radam/fused {rf:.3f}, NumPy/radam {npr:.2f}x"
        else:
            limit = {1: 0.7, 2: 1.0, 3: 0.25}[i]
            ok = rf <= limit
            text = f"radam/fused {rf:.3f}"
            if i == 3:
                text += f" (radam {res['summary'][RADAM]['median_s'] * 1e6:.2f} us)"
        out.append(f"- {'MET   ' if ok else 'MISSED'} {TARGETS[i]}: {text}")
    return out


# ----------------------------------------------------------------------------- two builds


def compare_builds(a: str, b: str, args: argparse.Namespace, repeats: int) -> int:
    """Each case's radam step from two builds (folders holding a built ``radam``
    package, as ``bench_overhead.py --compare`` takes them), interleaved in one
    process: each build's median and the median of the per-repeat ratios B / A."""
    import tempfile

    from bench_overhead import _import_as

    with tempfile.TemporaryDirectory() as tmp:
        sys.path.insert(0, tmp)
        builds = {
            "A": _import_as(a, "radam_build_a", tmp),
            "B": _import_as(b, "radam_build_b", tmp),
        }
        print(f"A = {a}\nB = {b}\n{repeats} repeats, interleaved; one float32 Adam step:\n")
        print("| case | params | A median (IQR) | B median (IQR) | B / A (IQR) |")
        print("|---|---|---|---|---|")
        for ci, case in enumerate(cases(args.quick)):
            n = sum(int(np.prod(s)) for s in case["shapes"])
            rng = np.random.default_rng(ci)
            grads = [rng.standard_normal(s, dtype=np.float32) for s in case["shapes"]]
            init = [rng.standard_normal(s, dtype=np.float32) for s in case["shapes"]]
            runners = {}
            for label, module in builds.items():
                opt = module.Adam([x.copy() for x in init], lr=LR)
                runners[label] = lambda opt=opt, g=grads: opt.step(g)
            samples = measure_case(runners, case, repeats, args)
            s, unit = summarize(samples, n), "us" if n < 100_000 else "ms"
            med, iqr = ratio(samples, "B", "A")
            cells = [
                f"{fmt_time(s[k]['median_s'], unit)} ({fmt_time(s[k]['iqr_s'], unit)}) {unit}"
                for k in "AB"
            ]
            print(f"| {case['name']} | {n:,} | {cells[0]} | {cells[1]} | {med:.3f} ({iqr:.3f}) |")
            sys.stdout.flush()
    return 0


# ----------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument(
        "--repeats", type=int, default=None, help="timed repeats (default 41, quick 11)"
    )
    ap.add_argument("--warmup", type=int, default=3, help="untimed steps first (default 3)")
    ap.add_argument("--quick", action="store_true", help="few repeats; 6-block transformer")
    ap.add_argument("--threads", type=int, default=None, help="threads for radam and torch")
    ap.add_argument(
        "--settle-ms",
        type=float,
        default=40.0,
        help="untimed steps of the same implementation for this long before each sample "
        "(default 40; 0 = none, except one warm step for the 1e6 case)",
    )
    ap.add_argument(
        "--budget-s",
        type=float,
        default=90.0,
        help="stop a case's repeats after this many seconds (at least 5 repeats; default 90)",
    )
    ap.add_argument("--cases", default=None, help="comma-separated case indices, e.g. 0,2")
    ap.add_argument(
        "--no-states", action="store_true", help="leave out the bfloat16 and 8-bit state rows"
    )
    ap.add_argument(
        "--bnb",
        action="store_true",
        help="time bitsandbytes' CPU Adam8bit at 2e7 too (about 1 s a step; needs torch and "
        "bitsandbytes)",
    )
    ap.add_argument(
        "--json", default=None, help="also write JSON results, e.g. benchmarks/results/x.json"
    )
    ap.add_argument(
        "--compare",
        nargs=2,
        metavar=("A", "B"),
        help="time radam's step from two builds against each other (folders that each "
        "hold a built radam package)",
    )
    args = ap.parse_args(argv)
    repeats = args.repeats or (11 if args.quick else 41)
    if args.compare:
        return compare_builds(*args.compare, args, repeats)

    info = machine()
    print("## Machine\n")
    print(
        f"- CPU: {info['cpu']}, {info['logical_cpus']} logical CPUs; radam SIMD level "
        f"`{info['simd_level']}`, radam threads {info['radam_threads']}"
        + (f", torch threads {info['torch_threads']}" if torch is not None else "")
    )
    print(
        f"- Python {info['python']}, NumPy {info['numpy']}, radam {info['radam']}, "
        + (f"torch {info['torch']}" if torch is not None else f"torch absent ({TORCH_ERROR})")
    )
    print(f"- load average at start: {info.get('loadavg_start', float('nan')):.2f}")
    print(
        f"- float32, lr={LR}, betas=(0.9, 0.999); {repeats} repeats, {args.warmup} warm-up steps, "
        f"each sample preceded by {args.settle_ms:g} ms of untimed steps of the same "
        "implementation\n"
    )
    if torch is None:
        print("> torch is not importable here: the torch columns are skipped.\n")
    sys.stdout.flush()

    selected = cases(args.quick)
    if args.cases:
        keep = {int(i) for i in args.cases.split(",")}
        selected = [c for i, c in enumerate(selected) if i in keep]
    results = []
    for ci, case in enumerate(selected):
        n = sum(int(np.prod(s)) for s in case["shapes"])
        runners = make_runners(
            case["shapes"],
            seed=ci,
            probe=case.get("probe", False),
            states=case.get("states", False) and not args.no_states,
            bnb=args.bnb and case.get("probe", False),
        )
        samples = measure_case(runners, case, repeats, args)
        del runners
        gc.collect()
        res = {
            "name": case["name"],
            "n_params": n,
            "n_tensors": len(case["shapes"]),
            "summary": summarize(samples, n),
            "ratios": {"numpy/radam": ratio(samples, NUMPY, RADAM)},
        }
        if torch is not None:
            res["ratios"]["radam/fused"] = ratio(samples, RADAM, FUSED)
            res["ratios"]["radam/foreach"] = ratio(samples, RADAM, FOREACH)
        res["samples"] = samples
        results.append(res)
        print(f"done: {case['name']} ({n:,} params)", file=sys.stderr, flush=True)

    print(
        "## One float32 Adam step (median over repeats; spread = IQR; "
        "'best of each' = ratio of the fastest samples, robust to a busy machine)\n"
    )
    print(table(results, torch is not None))
    print()
    if any(Q8_STATE in res["summary"] for res in results):
        print("## State kinds (same repeats as above)\n")
        print(states_table(results))
        print()
    for res in results:
        if any(k.startswith("probe") for k in res["summary"]):
            print(probe_table(res))
            s = res["summary"]
            if PROBE_RADAM in s:
                frac = s[RADAM]["gbps"] / s[PROBE_RADAM]["gbps"]
                line = f"\nradam reaches {frac:.0%} of the 28-byte RMW probe"
                if FUSED in s:
                    line += f"; torch fused {s[FUSED]['gbps'] / s[PROBE_RADAM]['gbps']:.0%}"
                print(line + ".")
            print()
    if len(results) == 4 and not args.quick:
        print("## Targets (issue 2)\n")
        print("\n".join(verdicts(results)))
        print()
    try:
        print(f"load average at end: {os.getloadavg()[0]:.2f}")
    except OSError:
        pass

    if args.json:
        from bench_overhead import write_json

        write_json(args.json, machine=info, repeats=repeats, results=results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
