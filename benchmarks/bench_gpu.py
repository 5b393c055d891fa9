"""One Adam step on the GPU (WGSL through wgpu-py), float32 and 8-bit state, on whatever
adapter is found.

    python benchmarks/bench_gpu.py                       # 1e6, 1e7 and 1e8 params
    python benchmarks/bench_gpu.py --sizes 1e7 --repeats 5
    LP_NUM_THREADS=1 python benchmarks/bench_gpu.py --sizes 1e6 --cpu-time   # lavapipe

Needs ``pip install "radam[gpu]"`` and a WebGPU adapter (on a machine without a
GPU: ``apt-get install mesa-vulkan-drivers`` gives Mesa's lavapipe).

For each size it prints, in one run:

* ``gpu step``: ``opt.step`` with the grads already on the GPU (a
  ``radam.gpu.DeviceArray``), timed as a batch of steps ended by a wait for the
  queue: the kernel's own speed. Effective GB/s counts 28 bytes per parameter
  (reads param, grad, m, v; writes param, m, v), although the GPU path moves a
  little more (the device grad is first copied into the optimizer's packed grads
  buffer, 8 bytes per parameter);
* ``8-bit step``: the same with ``state_dtype="8bit"`` (bitsandbytes' blockwise format:
  a byte per moment and a float32 absmax per 256 elements), 16.0625 bytes per
  parameter (param 4 + 4, grad 4, m and v 1 + 1 each, absmax 2 x 8 / 256);
* ``copy``: a WGSL copy kernel (``copy`` in shaders/adam.wgsl, 8 bytes per
  element: one read, one write) over the same number of elements, bound in the
  same chunks, measured in the same run: the adapter's practical bandwidth. The
  ratio ``step GB/s / copy GB/s`` is what the issue's target (at least 0.8 on a
  real GPU at 1e8 params) is about;
* ``numpy step``: ``opt.step`` with NumPy grads: the grads are uploaded (one
  queue write) and the params read back into the host arrays every step;
* ``cpu step``: the Rust CPU kernel (``device="cpu"``) on the same machine.

On Mesa's lavapipe (a "CPU" adapter) WebGPU runs on the CPU cores through
LLVM-compiled shaders, with extra copies between "host" and "device" memory
that are really the same RAM: it is a correctness path, and it is slower than
the Rust CPU path. The figures only mean something for GPU speed on a real GPU. There,
``--cpu-time`` times each batch by the CPU time of the whole process (lavapipe's
threads included) instead of the wall clock: steadier on a shared machine, and with
``LP_NUM_THREADS=1`` the cost of the shader's own instructions.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time

import numpy as np
import radam
from radam import _core, gpu

if not os.environ.get("XDG_RUNTIME_DIR"):
    os.environ["XDG_RUNTIME_DIR"] = tempfile.mkdtemp(prefix="radam-xdg-")

BYTES_PER_PARAM = 28
BYTES_PER_PARAM_8BIT = 4 + 4 + 4 + 2 * (1 + 1) + 2 * 8 / 256


# What a batch is timed by: the wall clock, or (--cpu-time) the process's CPU time.
clock = time.perf_counter


def timed(fn, repeats: int, batch: int) -> float:
    """Median seconds per call over ``repeats`` batches of ``batch`` calls."""
    fn()  # warm-up (pipelines, first-touch of memory)
    times = []
    for _ in range(repeats):
        start = clock()
        for _ in range(batch):
            fn()
        times.append((clock() - start) / batch)
    return statistics.median(times)


class CopyKernel:
    """The shader's ``copy`` entry point over ``n`` float32, in binding-sized chunks."""

    def __init__(self, n: int) -> None:
        import wgpu

        ctx = gpu._get_context()
        self.ctx, dev = ctx, ctx.device
        usage = wgpu.BufferUsage
        self.src = dev.create_buffer_with_data(
            data=np.ones(n, np.float32), usage=usage.STORAGE | usage.COPY_SRC
        )
        self.dst = dev.create_buffer(size=4 * n, usage=usage.STORAGE | usage.COPY_SRC)
        self.pipeline = dev.create_compute_pipeline(
            layout="auto",
            compute={
                # The copy kernel is a probe (shaders/probes.wgsl), composed after the
                # kernel's source as the tests compose it.
                "module": dev.create_shader_module(
                    label="radam probes.wgsl", code=_core.ADAM_WGSL + _core.PROBES_WGSL
                ),
                "entry_point": "copy",
                "constants": {"WORKGROUP_SIZE": gpu.WORKGROUP_SIZE},
            },
        )
        align = ctx.limits["min-storage-buffer-offset-alignment"] // 4
        chunk = ctx.limits["max-storage-buffer-binding-size"] // 4 // align * align
        layout = self.pipeline.get_bind_group_layout(0)
        self.chunks = []
        for start in range(0, n, chunk):
            length = min(chunk, n - start)
            entries = [
                {
                    "binding": b,
                    "resource": {"buffer": buf, "offset": 4 * start, "size": 4 * length},
                }
                for b, buf in ((0, self.src), (1, self.dst))
            ]
            self.chunks.append((dev.create_bind_group(layout=layout, entries=entries), length))

    def run(self) -> None:
        dev = self.ctx.device
        encoder = dev.create_command_encoder()
        compute = encoder.begin_compute_pass()
        compute.set_pipeline(self.pipeline)
        for bind_group, length in self.chunks:
            compute.set_bind_group(0, bind_group)
            compute.dispatch_workgroups(*self.ctx.grid(length), 1)
        compute.end()
        dev.queue.submit([encoder.finish()])


def bench_gpu(n: int, grad: np.ndarray, repeats: int, batch: int) -> dict[str, float]:
    device_grad = gpu.asarray(grad)
    opts = {
        kind: radam.Adam(
            [np.random.default_rng(1).standard_normal(n, dtype=np.float32)],
            device="gpu",
            state_dtype=state,
        )
        for kind, state in (("gpu", "float32"), ("q8", "8bit"))
    }
    copy = CopyKernel(n)

    def step_batch(kind: str) -> None:
        for _ in range(batch):
            opts[kind].step([device_grad])
        gpu.wait()

    def copy_batch() -> None:
        for _ in range(batch):
            copy.run()
        gpu.wait()

    runs = {"gpu": lambda: step_batch("gpu"), "q8": lambda: step_batch("q8"), "copy": copy_batch}
    # Interleaved repeats, so machine noise hits all alike.
    times: dict[str, list[float]] = {k: [] for k in runs}
    for repeat in range(repeats + 1):
        for kind, run in runs.items():
            start = clock()
            run()
            if repeat:  # the first round warms up
                times[kind].append((clock() - start) / batch)
    result = {k: statistics.median(t) for k, t in times.items()}
    result["numpy"] = timed(lambda: opts["gpu"].step([grad]), repeats, max(1, batch // 5))
    return result


def bench(n: int, repeats: int) -> dict[str, float]:
    grad = np.random.default_rng(0).standard_normal(n, dtype=np.float32)
    batch = max(1, min(50, int(2e8 // n)))
    result = bench_gpu(n, grad, repeats, batch)  # its buffers are freed on return
    cpu_params = np.random.default_rng(1).standard_normal(n, dtype=np.float32)
    cpu_opt = radam.Adam([cpu_params], device="cpu")
    result["cpu"] = timed(lambda: cpu_opt.step([grad]), repeats, batch)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", nargs="*", type=float, default=[1e6, 1e7, 1e8])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument(
        "--cpu-time",
        action="store_true",
        help="time by the process's CPU time (for a CPU adapter such as lavapipe)",
    )
    args = parser.parse_args()
    if args.cpu_time:
        global clock
        clock = time.process_time

    name = gpu.adapter_name()
    ctx = gpu._get_context()
    print(f"radam {radam.__version__}, adapter: {name}")
    print(
        f"limits: max_storage_buffer_binding_size {ctx.limits['max-storage-buffer-binding-size']}"
        f" B, max_buffer_size {ctx.limits['max-buffer-size']} B; CPU path: "
        f"{radam.simd_level()} x {radam.num_threads()} threads"
    )
    if ctx.is_cpu:
        print(
            "NOTE: this is a CPU adapter (e.g. Mesa's lavapipe): a correctness path, slower "
            "than the Rust CPU path (device='cpu'); its figures say nothing about GPU speed."
        )
    print(
        f"{'params':>9}  {'gpu step':>10} {'GB/s':>7} {'ratio':>5}  {'8-bit step':>10} "
        f"{'GB/s':>7} {'ratio':>5}  {'copy':>10} {'GB/s':>7}  {'numpy step':>10}  "
        f"{'cpu step':>10} {'GB/s':>7}"
    )
    for size in args.sizes:
        n = int(size)
        r = bench(n, args.repeats)
        gbs = BYTES_PER_PARAM * n / r["gpu"] / 1e9
        q8_gbs = BYTES_PER_PARAM_8BIT * n / r["q8"] / 1e9
        copy_gbs = 8 * n / r["copy"] / 1e9
        cpu_gbs = BYTES_PER_PARAM * n / r["cpu"] / 1e9
        print(
            f"{n:>9.0e}  {r['gpu'] * 1e3:>8.2f}ms {gbs:>7.1f} {gbs / copy_gbs:>5.2f}  "
            f"{r['q8'] * 1e3:>8.2f}ms {q8_gbs:>7.1f} {q8_gbs / copy_gbs:>5.2f}  "
            f"{r['copy'] * 1e3:>8.2f}ms {copy_gbs:>7.1f}  {r['numpy'] * 1e3:>8.2f}ms  "
            f"{r['cpu'] * 1e3:>8.2f}ms {cpu_gbs:>7.1f}"
        )


if __name__ == "__main__":
    main()
