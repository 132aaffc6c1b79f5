"""Every config file loads, is a typed frozen dataclass, and accepts dotted overrides."""

import dataclasses
import pathlib

import pytest

from jaxir.config import RunConfig, from_dict, load_config, override, to_dict

CONFIGS = sorted((pathlib.Path(__file__).parents[1] / "configs").glob("*.py"))


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.stem)
def test_config_loads_and_round_trips(path):
    config = load_config(path)
    assert isinstance(config, RunConfig)
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.name = "x"
    assert from_dict(RunConfig, to_dict(config)) == config
    assert override(config, ["train.steps=3"]).train.steps == 3


def test_config_arg_after_colon():
    assert load_config(f"{CONFIGS[0]}:7").train.steps == 7


def test_overrides_parse_types_and_reject_unknown_keys():
    config = override(
        RunConfig(),
        [
            "model.normalize=false",
            "data.path=none",
            "data.bm25_rank_window=5,50",
            "train.learning_rate=2e-4",
        ],
    )
    assert config.model.normalize is False and config.data.path is None
    assert config.data.bm25_rank_window == (5, 50) and config.train.learning_rate == 2e-4
    with pytest.raises(ValueError, match="did you mean: model.pooling"):
        override(config, ["model.poling=cls"])
    with pytest.raises(ValueError, match="cannot parse"):
        override(config, ["train.steps=many"])
    with pytest.raises(ValueError, match="key.sub=value"):
        override(config, ["train.steps"])


def test_missing_config_file_is_explained(tmp_path):
    with pytest.raises(FileNotFoundError, match="get_config"):
        load_config(tmp_path / "nope.py")
    (tmp_path / "bad.py").write_text("x = 1\n")
    with pytest.raises(ValueError, match="get_config"):
        load_config(tmp_path / "bad.py")


def test_encoder_compute_choices_reach_the_dense_towers_and_bad_ones_are_named():
    from jaxir.families.dense import DenseFamily

    config = override(RunConfig(), ["model.dropout_mask=hash", "model.attention=dot_product"])
    encoder = DenseFamily.from_config(config).encoder_config(vocab_size=64)
    assert (encoder.dropout_mask, encoder.attention) == ("hash", "dot_product")
    with pytest.raises(ValueError, match=r"model.dropout_mask must be one of \('stored'"):
        override(config, ["model.dropout_mask=bits"])
    with pytest.raises(ValueError, match="model.attention must be one of"):
        override(config, ["model.attention=flash"])
