"""The parts of DESIGN principle 8 that every speed benchmark shares.

* **Configuration.** :func:`machine` (CPU, cores, load), :func:`jax_config` (jax version,
  ``XLA_FLAGS``, :data:`jaxir.xla.CPU_COMPILER_OPTIONS`) and :func:`torch_config` (the
  BLAS / oneDNN / OpenMP lines of ``torch.__config__.show()``, threads, allocator
  environment), each called in the process whose configuration it describes.
* **Processes.** :class:`Worker` runs a benchmark script again as a server
  (``script --worker NAME``, :func:`serve`), one process per framework or configuration.
  The parent sends one request per timed pass, so passes of competing processes can
  alternate (load from other jobs hits both alike) while neither process ever holds the
  other's threads, allocator state or freed memory.
* **The physical limit.** :func:`gemm_roofline` times the benchmark's GEMM shapes in
  its precision under every dense-matmul backend either side can use, each framework in
  its own process: XLA:CPU's default dots (YNNPACK) and its Eigen emitter (what
  :func:`jaxir.xla.jit` selects for float32), PyTorch (MKL sgemm / oneDNN bf16) and
  NumPy's BLAS. The best rate of all is the roofline; a RESULT line's
  ``roofline_fraction`` is jaxir's achieved model FLOP rate over it. Model FLOPs are
  the matmul FLOPs of the computation asked for (:func:`bert_forward_flops`; padding the
  implementation adds is not counted), so the fraction also charges wasted work.
* **The record.** :func:`result` prints ``RESULT {"name", "unit", "jaxir", "peer",
  "peer_value", "ratio", "roofline_fraction", ...}``.

Run alone, it prints the GEMM table for the shapes given::

    python benchmarks/protocol.py --shapes 4096x384x1536,4096x1536x384 --dtype bfloat16
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import pathlib
import platform
import subprocess
import sys
import tempfile
import traceback
from collections.abc import Callable, Sequence
from typing import Any

REPO = pathlib.Path(__file__).resolve().parents[1]

Shape = tuple[int, int, int]  # (M, K, N): [M, K] x [K, N]

# --------------------------------------------------------------------------- configuration


def machine() -> str:
    """CPU model, core count and 1-minute load average (read from ``/proc`` where present)."""
    model = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            model = next(
                (line.split(":", 1)[1].strip() for line in f if line.startswith("model name")),
                model,
            )
    except OSError:
        pass
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return f"{model}, {os.cpu_count()} cores, load average (1 min) {load:.2f}"


def jax_config() -> str:
    """jax / jaxlib versions, devices, ``XLA_FLAGS`` and jaxir's per-program CPU options."""
    import jax
    import jaxlib

    from jaxir.xla import CPU_COMPILER_OPTIONS

    devices = jax.devices()
    return (
        f"jax {jax.__version__} (jaxlib {jaxlib.__version__}) on {len(devices)} "
        f"{devices[0].platform} device(s); XLA_FLAGS={os.environ.get('XLA_FLAGS', '')!r}; "
        f"jaxir.xla.CPU_COMPILER_OPTIONS (per GEMM dtype)={CPU_COMPILER_OPTIONS}"
    )


def torch_config() -> str:
    """torch version, threads, and the BLAS / oneDNN / OpenMP lines of its build configuration."""
    import torch

    lines = torch.__config__.show().splitlines()
    keep = ("Math Kernel Library", "MKL-DNN", "oneDNN", "OpenMP", "CPU capability")
    build = [line.strip(" -") for line in lines if any(key in line for key in keep)]
    settings = next((line for line in lines if "Build settings" in line), "")
    parts = [part.strip() for part in settings.split(":", 1)[-1].split(",")]
    build += [part for part in parts if part.startswith(("BLAS_INFO", "USE_MKLDNN"))]
    env = {k: os.environ[k] for k in ("GLIBC_TUNABLES", "OMP_NUM_THREADS") if k in os.environ}
    return (
        f"torch {torch.__version__}: {torch.get_num_threads()} threads (interop "
        f"{torch.get_num_interop_threads()}); {'; '.join(build)}; env {env or '{}'}"
    )


# --------------------------------------------------------------------------- worker processes


class WorkerError(RuntimeError):
    """A request failed in a worker process (the message holds its traceback)."""


class Worker:
    """``script --worker NAME ARGS...`` in a process of its own, answering requests.

    ``call(op, **kwargs)`` sends one JSON request and returns the JSON reply of the
    worker's ``op`` method (see :func:`serve`). The worker's stderr (and everything its
    libraries print) goes to a temporary file, shown when a request fails.
    """

    def __init__(
        self,
        script: str | os.PathLike[str],
        name: str,
        args: Sequence[str] = (),
        env: dict[str, str] | None = None,
    ):
        self.name = name
        self._log = tempfile.TemporaryFile(mode="w+")  # noqa: SIM115 (closed in close())
        self._proc = subprocess.Popen(
            [sys.executable, str(script), "--worker", name, *args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._log,
            text=True,
            env={**os.environ, **(env or {})},
        )

    def call(self, op: str, **kwargs: Any) -> Any:
        assert self._proc.stdin is not None and self._proc.stdout is not None
        try:
            self._proc.stdin.write(json.dumps({"op": op, **kwargs}) + "\n")
            self._proc.stdin.flush()
        except BrokenPipeError:
            pass  # it died; the read below reports why
        line = self._proc.stdout.readline()
        if not line:
            raise WorkerError(f"worker {self.name!r} exited during {op!r}:\n{self._stderr()}")
        reply = json.loads(line)
        if "error" in reply:
            raise WorkerError(f"worker {self.name!r}, {op!r}:\n{reply['error']}")
        return reply["value"]

    def _stderr(self, chars: int = 4000) -> str:
        self._log.seek(0)
        return self._log.read()[-chars:]

    def close(self) -> None:
        if self._proc.poll() is None:
            assert self._proc.stdin is not None
            self._proc.stdin.close()
            try:
                self._proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        self._log.close()

    def __enter__(self) -> Worker:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def serve(server: object) -> None:
    """Worker side of :class:`Worker`: answers ``{"op": name, **kwargs}`` lines on stdin.

    Each request calls ``server.<op>(**kwargs)``; its (JSON-serializable) return value is
    the reply. Replies go to the original stdout; everything else printed in the process
    (Python or C) is sent to stderr, so no library output can corrupt the protocol.
    """
    replies = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    for line in sys.stdin:
        request = json.loads(line)
        op = request.pop("op")
        try:
            reply = {"value": getattr(server, op)(**request)}
        except Exception:  # the parent re-raises it with the traceback
            reply = {"error": traceback.format_exc()}
        replies.write(json.dumps(reply) + "\n")


class VariantServer:
    """Worker state holding named variants: callables timed one call per request.

    A subclass fills ``self.variants`` (name -> callable) in its own set-up methods.
    """

    def __init__(self) -> None:
        self.variants: dict[str, Callable[..., Any]] = {}

    def names(self) -> list[str]:
        return list(self.variants)

    def time(self, variant: str, save: str | None = None, **kwargs: Any) -> float:
        """Wall seconds of one call of ``variant``; with ``save``, its output goes to that .npy."""
        import time

        import numpy as np

        start = time.perf_counter()
        out = self.variants[variant](**kwargs)
        seconds = time.perf_counter() - start
        if save is not None:
            if hasattr(out, "detach"):  # a torch tensor
                out = out.detach().float().numpy()
            np.save(save, np.asarray(getattr(out, "vectors", out), dtype=np.float32))
        return seconds


def alternate(
    plan: Sequence[tuple[Worker, str]],
    iters: int,
    save: dict[tuple[str, str], str] | None = None,
    **kwargs: Any,
) -> dict[tuple[str, str], list[float]]:
    """Seconds of ``iters`` passes of each ``(worker, variant)``, passes interleaved.

    Pass ``i`` of every entry runs before pass ``i + 1`` of any, so a load spike from
    other jobs on the machine hits every entry alike. ``save`` maps an entry to the .npy
    file its last pass's output is written to.
    """
    times: dict[tuple[str, str], list[float]] = {(w.name, v): [] for w, v in plan}
    for i in range(iters):
        for worker, variant in plan:
            path = (save or {}).get((worker.name, variant)) if i == iters - 1 else None
            seconds = worker.call("time", variant=variant, save=path, **kwargs)
            times[worker.name, variant].append(seconds)
    return times


def median(values: Sequence[float]) -> float:
    ordered = sorted(values)
    mid = len(ordered) // 2
    return ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2


# --------------------------------------------------------------------------- model FLOPs


def bert_gemm_shapes(tokens: int, hidden: int, intermediate: int) -> list[Shape]:
    """The dense layers of a BERT layer on ``tokens`` rows: q/k/v/output, MLP up, MLP down."""
    return [
        (tokens, hidden, hidden),
        (tokens, hidden, intermediate),
        (tokens, intermediate, hidden),
    ]


def random_dual_encoder_batch(
    seed: int, queries: int, group: int, query_len: int, passage_len: int, vocab: int = 30522
) -> dict[str, Any]:
    """A jaxir training batch (:mod:`jaxir.data.pipeline`'s layout) of random token ids.

    ``queries`` queries of ``query_len`` tokens, each with ``group`` passages of
    ``passage_len`` tokens; ids drawn from ``[1000, vocab)`` (no special or padding
    tokens, so no padding).
    """
    import numpy as np

    rng = np.random.default_rng(seed)
    q_ids = rng.integers(1000, vocab, (queries, query_len), dtype=np.int32)
    p_ids = rng.integers(1000, vocab, (queries, group, passage_len), dtype=np.int32)
    return {
        "query_ids": q_ids,
        "query_mask": np.ones_like(q_ids),
        "passage_ids": p_ids,
        "passage_mask": np.ones_like(p_ids),
        "passage_key": np.arange(queries * group, dtype=np.int32).reshape(queries, group),
        "query_key": np.arange(queries, dtype=np.int32),
    }


def bert_forward_flops(
    lengths: Sequence[int], *, hidden: int, layers: int, intermediate: int, rows: int = 1
) -> float:
    """Matmul FLOPs of a BERT encoder forward over sequences of the given lengths.

    Per layer and sequence of ``l`` tokens: ``2 l (4 H^2 + 2 H I)`` for the dense layers
    plus ``4 l^2 H`` for attention scores and their product with the values. Embeddings,
    norms, softmax and activations are not counted (the usual model-FLOPs convention).
    ``rows`` multiplies each length (e.g. a batch of equal-length rows).
    """
    per_token = 2 * (4 * hidden * hidden + 2 * hidden * intermediate)
    return float(layers * rows * sum(per_token * n + 4 * n * n * hidden for n in map(int, lengths)))


# --------------------------------------------------------------------------- GEMM roofline

#: Backend -> framework (the process it runs in).
BACKENDS = {"xla": "jax", "xla-eigen": "jax", "torch": "torch", "numpy": "numpy"}
BACKEND_LABELS = {
    "xla": "XLA default (YNNPACK)",
    "xla-eigen": "XLA Eigen",
    "torch": "PyTorch",
    "numpy": "NumPy BLAS",
}


@dataclasses.dataclass
class Roofline:
    """Best GFLOP/s per backend and shape (``None``: backend lacks the dtype)."""

    dtype: str
    shapes: list[Shape]
    gflops: dict[str, list[float | None]]
    configs: dict[str, str]

    @property
    def best_gflops(self) -> float:
        return max(r for rates in self.gflops.values() for r in rates if r is not None)

    @property
    def best_at(self) -> str:
        """Which backend and shape reached :attr:`best_gflops`."""
        for backend, rates in self.gflops.items():
            for shape, rate in zip(self.shapes, rates, strict=True):
                if rate == self.best_gflops:
                    return f"{BACKEND_LABELS[backend]}, {'x'.join(map(str, shape))}"
        raise AssertionError

    def fraction(self, flops_per_s: float) -> float:
        """``flops_per_s`` as a fraction of the best GEMM rate."""
        return flops_per_s / (self.best_gflops * 1e9)

    def table(self) -> str:
        backends = list(self.gflops)
        head = f"{'M x K x N':<20}" + "".join(f"{BACKEND_LABELS[b]:>24}" for b in backends)
        rows = [head]
        for i, shape in enumerate(self.shapes):
            cells = [self.gflops[b][i] for b in backends]
            rows.append(
                f"{'x'.join(map(str, shape)):<20}"
                + "".join(f"{'-' if c is None else f'{c:.0f}':>24}" for c in cells)
            )
        rows.append(f"roofline: {self.best_gflops:.0f} GFLOP/s ({self.best_at})")
        return "\n".join(rows)

    def report(self) -> str:
        """The table with its title and each GEMM process's configuration."""
        configs = "\n".join(f"  {fw}: {text}" for fw, text in self.configs.items())
        return (
            f"GEMM roofline, {self.dtype} ([M, K] x [K, N], best GFLOP/s of the timed passes; "
            f"each framework in its own process):\n{configs}\n{self.table()}"
        )


def gemm_roofline(
    shapes: Sequence[Shape],
    dtype: str,
    backends: Sequence[str] = ("xla", "xla-eigen", "torch"),
    iters: int = 5,
) -> Roofline:
    """Best rate of each backend on ``shapes`` in ``dtype`` (``"float32"`` or ``"bfloat16"``).

    One process per framework; after one untimed pass, ``iters`` timed passes over all
    shapes alternate between the processes and the fastest of each is kept. bfloat16:
    XLA multiplies bf16 operands with float32 accumulation (as :mod:`jaxir.layers.dot`),
    PyTorch returns bf16 (oneDNN); NumPy has no bf16 GEMM.
    """
    shapes = [tuple(int(v) for v in s) for s in shapes]
    frameworks: dict[str, list[str]] = {}
    for backend in backends:
        frameworks.setdefault(BACKENDS[backend], []).append(backend)
    workers = {fw: Worker(__file__, f"gemm-{fw}") for fw in frameworks}
    try:
        configs = {fw: w.call("prepare", shapes=shapes, dtype=dtype) for fw, w in workers.items()}
        best: dict[str, list[float]] = {b: [float("inf")] * len(shapes) for b in backends}
        for fw, w in workers.items():
            w.call("run", backends=frameworks[fw])  # warm-up
        for _ in range(iters):
            for fw, w in workers.items():
                for backend, seconds in w.call("run", backends=frameworks[fw]).items():
                    best[backend] = [
                        min(a, b) if b is not None else None
                        for a, b in zip(best[backend], seconds, strict=True)
                    ]
    finally:
        for w in workers.values():
            w.close()
    gflops = {
        b: [
            None if t is None else 2 * m * k * n / t / 1e9
            for (m, k, n), t in zip(shapes, ts, strict=True)
        ]
        for b, ts in best.items()
    }
    return Roofline(dtype, list(shapes), gflops, configs)


class GemmServer:
    """One framework's GEMMs (the worker side of :func:`gemm_roofline`)."""

    def __init__(self, framework: str):
        self.framework = framework

    def prepare(self, shapes: list[Shape], dtype: str) -> str:
        """Builds the operands (and programs) of every shape; returns the configuration."""
        import numpy as np

        rng = np.random.default_rng(0)
        pairs = [
            (rng.random((m, k), np.float32), rng.random((k, n), np.float32)) for m, k, n in shapes
        ]
        #: backend -> (product function, its operand pairs, one per shape; None: no such dtype)
        self.gemms: dict[str, tuple[Any, list]] = {}
        if self.framework == "jax":
            import jax
            import jax.numpy as jnp

            from jaxir.xla import CPU_COMPILER_OPTIONS

            jdt = jnp.float32 if dtype == "float32" else jnp.bfloat16
            operands = [(jnp.asarray(a, jdt), jnp.asarray(b, jdt)) for a, b in pairs]

            def product(a, b):
                return jax.lax.dot(a, b, preferred_element_type=jnp.float32)

            for backend, options in (("xla", {}), ("xla-eigen", CPU_COMPILER_OPTIONS["float32"])):
                jitted = jax.jit(product, compiler_options=options)
                self.gemms[backend] = (
                    lambda a, b, f=jitted: f(a, b).block_until_ready(),
                    operands,
                )
            return jax_config()
        if self.framework == "torch":
            import torch

            tdt = torch.float32 if dtype == "float32" else torch.bfloat16
            operands = [
                (torch.from_numpy(a).to(tdt), torch.from_numpy(b).to(tdt)) for a, b in pairs
            ]
            self.gemms["torch"] = (torch.matmul, operands)
            return torch_config()
        from threadpoolctl import threadpool_info

        self.gemms["numpy"] = (np.matmul, pairs if dtype == "float32" else [None] * len(pairs))
        blas = "; ".join(
            f"{i.get('internal_api')} {i.get('version')} ({i.get('num_threads')} threads, "
            f"{i.get('architecture', '-')})"
            for i in threadpool_info()
        )
        return f"numpy {np.__version__}: {blas}"

    def run(self, backends: list[str]) -> dict[str, list[float | None]]:
        """Seconds of one product per shape, per backend (``None`` where not supported)."""
        import time

        out: dict[str, list[float | None]] = {}
        for backend in backends:
            product, operands = self.gemms[backend]
            out[backend] = []
            for pair in operands:
                if pair is None:
                    out[backend].append(None)
                    continue
                start = time.perf_counter()
                product(*pair)
                out[backend].append(time.perf_counter() - start)
        return out


# --------------------------------------------------------------------------- RESULT lines


def result(
    name: str,
    unit: str,
    jaxir: float,
    peer: str,
    peer_value: float,
    roofline_fraction: float | None,
    **extra: Any,
) -> dict[str, Any]:
    """Prints (and returns) the RESULT line of one headline figure (DESIGN principle 8)."""

    def rounded(v: Any) -> Any:
        if isinstance(v, float):
            return round(v, 4)
        if isinstance(v, dict):
            return {k: rounded(x) for k, x in v.items()}
        return v

    record = {
        "name": name,
        "unit": unit,
        "jaxir": jaxir,
        "peer": peer,
        "peer_value": peer_value,
        "ratio": jaxir / peer_value,
        "roofline_fraction": roofline_fraction,
        **extra,
    }
    record = {k: rounded(v) for k, v in record.items()}
    print("RESULT " + json.dumps(record), flush=True)
    return record


def parse_shapes(text: str) -> list[Shape]:
    """``"4096x384x1536,4096x1536x384"`` -> ``[(4096, 384, 1536), (4096, 1536, 384)]``."""
    return [tuple(int(v) for v in item.split("x")) for item in text.split(",")]  # type: ignore[misc]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shapes", type=parse_shapes, default="4096x384x1536,4096x1536x384")
    parser.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32")
    parser.add_argument("--backends", default="xla,xla-eigen,torch,numpy")
    parser.add_argument("--iters", type=int, default=5)
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        os.environ.setdefault("JAX_PLATFORMS", "cpu")
        sys.path.insert(0, str(REPO))
        serve(GemmServer(args.worker.removeprefix("gemm-")))
        return
    print(machine())
    print(gemm_roofline(args.shapes, args.dtype, args.backends.split(","), args.iters).report())


if __name__ == "__main__":
    main()
