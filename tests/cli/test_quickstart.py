"""`jaxir quickstart` end to end (tiny settings) and `--help` of every subcommand."""

import pytest

from jaxir.cli.main import SUBCOMMANDS, main
from jaxir.export import load_bundle


@pytest.mark.parametrize("command", [[], *([name] for name in SUBCOMMANDS)])
def test_help_explains_every_subcommand(command, capsys):
    with pytest.raises(SystemExit) as exit_:
        main([*command, "--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    assert "usage: jaxir" in out and len(out) > 300
    if not command:
        assert all(name in out for name in SUBCOMMANDS)


def test_quickstart_runs_train_to_bundle(tmp_path, capsys):
    workdir = tmp_path / "qs"
    code = main(
        [
            "quickstart",
            "--config",
            "configs/dense_tiny.py",
            "--workdir",
            str(workdir),
            "--set",
            "index.kind=scann",
            "--no-progress",
        ]
    )
    assert code == 0
    out = capsys.readouterr().out
    assert "BM25 (bm25s)" in out and "jaxir dense (scann)" in out and "ScaNN recall@10" in out
    bundle = load_bundle(workdir / "bundle")
    assert set(bundle.metrics) >= {"nDCG@10", "R@100"}
    hits = bundle.search(["a town with a harbour"], k=5)[0]
    assert len(hits) == 5 and hits[0][1] >= hits[-1][1]


def test_train_cli_rejects_unknown_override(tmp_path, capsys):
    code = main(
        [
            "train",
            "--config",
            "configs/dense_tiny.py",
            "--workdir",
            str(tmp_path),
            "--set",
            "train.stepz=3",
        ]
    )
    assert code == 1
    assert "did you mean: train.steps" in capsys.readouterr().err
