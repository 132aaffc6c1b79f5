"""The training run: exact resume after SIGKILL, corrupted checkpoints, non-finite loss, distillation."""

import dataclasses
import json
import os
import pathlib
import signal
import subprocess
import sys
import time

import jax.numpy as jnp
import pytest

from jaxir.config import load_config, override
from jaxir.data import load_corpus, load_qrels, load_tokenizer, read_groups, write_groups
from jaxir.training.checkpoint import Checkpointer
from jaxir.training.loop import (
    DEV_QRELS,
    NonFiniteLossError,
    collection_dir,
    losses_by_step,
    train,
)

ROOT = pathlib.Path(__file__).parents[2]
CONFIG = ROOT / "configs" / "dense_tiny.py"
STEPS = 12


def _launch(workdir: pathlib.Path) -> subprocess.Popen:
    code = (
        "import sys; from jaxir.config import load_config; from jaxir.training.loop import train; "
        f"train(load_config({str(CONFIG)!r}, '{STEPS}'), sys.argv[1], progress=False)"
    )
    env = os.environ | {"JAX_COMPILATION_CACHE_DIR": str(ROOT / ".jax_cache")}
    return subprocess.Popen([sys.executable, "-c", code, str(workdir)], env=env, cwd=ROOT)


def _logged_steps(workdir: pathlib.Path) -> int:
    try:
        return max(losses_by_step(workdir), default=0)
    except (FileNotFoundError, ValueError):
        return 0


def test_sigkill_and_resume_reproduces_uninterrupted_losses(tmp_path):
    reference, interrupted = tmp_path / "reference", tmp_path / "interrupted"
    proc = _launch(reference)
    victim = _launch(interrupted)
    deadline = time.time() + 400
    while _logged_steps(interrupted) < 7 and victim.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    assert victim.poll() is None, "run finished before it could be killed; raise STEPS"
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    killed_at = _logged_steps(interrupted)
    assert killed_at < STEPS
    resumed = _launch(interrupted)
    assert resumed.wait(timeout=400) == 0
    assert proc.wait(timeout=400) == 0

    want, got = losses_by_step(reference), losses_by_step(interrupted)
    assert sorted(got) == list(range(1, STEPS + 1))
    assert got == want  # bit-identical floats for every step, including those after the kill
    assert (interrupted / "model" / "query" / "model.safetensors").exists()


def test_corrupted_latest_checkpoint_falls_back_to_previous(tmp_path, caplog):
    ckpt = Checkpointer(tmp_path, keep=3, async_save=False)
    for step in (1, 2):
        ckpt.save(step, {"w": jnp.full(4, float(step))}, data_state={"i": step}, config={})
    ckpt.wait()
    for file in (tmp_path / "2" / "state").rglob("*"):
        if file.is_file():
            file.write_bytes(b"\0garbage")
    restored = Checkpointer(tmp_path, keep=3).restore_latest({"w": jnp.zeros(4)})
    assert restored.step == 1 and restored.data_state == {"i": 1}
    assert float(restored.state["w"][0]) == 1.0
    assert "falling back" in caplog.text and str(tmp_path) in caplog.text


def test_non_finite_loss_stops_with_step_and_checkpoint(tmp_path):
    config = override(load_config(CONFIG), ["model.temperature=1e-38", "train.steps=3"])
    with pytest.raises(NonFiniteLossError, match=r"at step 1\. Last good checkpoint: none"):
        train(config, tmp_path, progress=False)


def test_init_from_hugging_face_directory_loads_trained_weights(tmp_path):
    first = train(load_config(CONFIG, "6"), tmp_path / "a", progress=False)
    config = override(load_config(CONFIG, "1"), [f"model.init={first.model_dir / 'query'}"])
    second = train(config, tmp_path / "b", progress=False)
    # Starts from the trained tower (and its tokenizer), not from a random init.
    assert losses_by_step(second.workdir)[1] < losses_by_step(first.workdir)[1]
    assert (tmp_path / "b" / "tokenizer").exists() is False


def test_no_validation_queries_trains_on_every_query(tmp_path):
    config = override(load_config(CONFIG, "2"), ["data.validation_queries=0"])
    result = train(config, tmp_path, progress=False)
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert records and not any(k.startswith("dev/") for r in records for k in r)
    held_out = train(load_config(CONFIG, "2"), tmp_path / "dev", progress=False)
    groups, fewer = (
        {json.loads(line)["query"] for line in (r.workdir / "groups.jsonl").open()}
        for r in (result, held_out)
    )
    assert fewer < groups
    # The held-out queries' qrels are written for tuning on them (jaxir evaluate --split).
    assert not (tmp_path / DEV_QRELS).exists()
    dev = load_qrels(held_out.workdir / DEV_QRELS)
    assert len(dev) == len(groups - fewer) > 0


def test_best_passage_groups_hold_windows_that_fit(tmp_path):
    settings = ["data.validation_queries=0", "data.max_passage_length=16"]
    with pytest.raises(ValueError, match=r"data.train_passages must be one of \('first', 'best'\)"):
        train(override(load_config(CONFIG, "1"), [*settings, "data.train_passages=last"]), tmp_path)
    config = override(load_config(CONFIG, "1"), [*settings, "data.train_passages=best"])
    result = train(config, tmp_path / "best", progress=False)
    tokenizer = load_tokenizer(result.model_dir / "query")
    groups = read_groups(result.workdir / "groups.jsonl")
    texts = [t for g in groups for t in (*g.positives, *g.negatives)]
    assert all(len(tokenizer(t)["input_ids"]) <= 16 for t in texts)
    corpus = load_corpus(collection_dir(config, result.workdir))
    assert sum(len(tokenizer(d.full_text)["input_ids"]) > 16 for d in corpus.values()) > 100


def test_distillation_trains_on_the_groups_teacher_scores(tmp_path):
    """train.distill adds a KL term (so step 1's loss grows) and needs scores in every group."""
    plain = train(
        override(load_config(CONFIG, "1"), ["data.validation_queries=0"]),
        tmp_path / "a",
        progress=False,
    )
    groups = read_groups(plain.workdir / "groups.jsonl")
    scored = [
        dataclasses.replace(
            g,
            positive_scores=(3.0,) * len(g.positives),
            negative_scores=tuple(-float(i) for i in range(len(g.negatives))),
        )
        for g in groups
    ]
    write_groups(scored, tmp_path / "scored.jsonl")
    settings = ["data.validation_queries=0", "train.distill=kl", "train.distill_weight=2.0"]
    with pytest.raises(ValueError, match="has no teacher scores"):
        train(override(load_config(CONFIG, "1"), settings), tmp_path / "b", progress=False)
    config = override(load_config(CONFIG, "1"), [*settings, f"data.groups={tmp_path}/scored.jsonl"])
    distilled = train(config, tmp_path / "c", progress=False)
    assert losses_by_step(distilled.workdir)[1] > losses_by_step(plain.workdir)[1] + 0.01


def test_ict_mix_repeats_the_qrels_groups_and_adds_inverse_cloze_groups(tmp_path):
    settings = ["data.validation_queries=0"]
    with pytest.raises(ValueError, match="data.ict_mix must be >= 0"):
        train(override(load_config(CONFIG, "1"), [*settings, "data.ict_mix=-1"]), tmp_path / "x")
    plain = train(override(load_config(CONFIG, "1"), settings), tmp_path / "a", progress=False)
    config = override(load_config(CONFIG, "1"), [*settings, "data.ict_mix=3"])
    mixed = train(config, tmp_path / "b", progress=False)
    qrels_groups = read_groups(plain.workdir / "groups.jsonl")
    groups = read_groups(mixed.workdir / "groups.jsonl")
    assert groups[: 3 * len(qrels_groups)] == qrels_groups * 3
    ict = groups[3 * len(qrels_groups) :]
    corpus = load_corpus(collection_dir(config, mixed.workdir))
    assert len(ict) > len(corpus) // 2
    # Each query is a sentence of the document its positive holds the rest of.
    texts = {d.text for d in corpus.values()}
    for g in ict[:20]:
        assert not g.negatives
        assert any(g.query in t and t != g.query for t in texts)
