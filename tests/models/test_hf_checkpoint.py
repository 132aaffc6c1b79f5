"""Checkpoint IO: exact round trips, strict key checking, sharded safetensors."""

import json

import numpy as np
import pytest
import safetensors.numpy
from flax import nnx

from jaxir.models import hf
from jaxir.models.bert import PRESETS, Model


@pytest.fixture
def saved(tmp_path):
    model = Model(PRESETS["tiny"].replace(pooler=True), rngs=nnx.Rngs(0))
    hf.save_pretrained(model, tmp_path)
    return model, tmp_path


def test_round_trip_is_exact(saved, tmp_path_factory):
    model, path = saved
    again = tmp_path_factory.mktemp("again")
    hf.save_pretrained(hf.load_pretrained(path), again)
    first = safetensors.numpy.load_file(str(path / "model.safetensors"))
    second = safetensors.numpy.load_file(str(again / "model.safetensors"))
    assert first.keys() == second.keys()
    for key in first:
        assert first[key].tobytes() == second[key].tobytes(), key
    original = nnx.to_flat_state(nnx.state(model))
    loaded = dict(nnx.to_flat_state(nnx.state(hf.load_pretrained(path))))
    for p, v in original:
        np.testing.assert_array_equal(np.asarray(v.get_value()), np.asarray(loaded[p].get_value()))


def test_missing_and_unexpected_keys_are_listed(saved):
    _, path = saved
    file = path / "model.safetensors"
    tensors = safetensors.numpy.load_file(str(file))
    del tensors["bert.encoder.layer.1.output.dense.bias"]
    tensors["bert.encoder.layer.7.extra.weight"] = np.zeros(3, np.float32)
    safetensors.numpy.save_file(tensors, str(file))
    with pytest.raises(hf.CheckpointError) as err:
        hf.load_pretrained(path)
    assert "bert.encoder.layer.1.output.dense.bias" in str(err.value)
    assert "bert.encoder.layer.7.extra.weight" in str(err.value)


def test_wrong_shape_names_the_tensor(saved):
    _, path = saved
    file = path / "model.safetensors"
    tensors = safetensors.numpy.load_file(str(file))
    tensors["bert.embeddings.position_embeddings.weight"] = np.zeros((10, 32), np.float32)
    safetensors.numpy.save_file(tensors, str(file))
    with pytest.raises(hf.CheckpointError, match="position_embeddings"):
        hf.load_pretrained(path)


def test_sharded_safetensors_with_index(saved):
    model, path = saved
    file = path / "model.safetensors"
    tensors = safetensors.numpy.load_file(str(file))
    file.unlink()
    names = sorted(tensors)
    halves = {
        "model-00001-of-00002.safetensors": names[::2],
        "model-00002-of-00002.safetensors": names[1::2],
    }
    weight_map = {}
    for shard, keys in halves.items():
        safetensors.numpy.save_file({k: tensors[k] for k in keys}, str(path / shard))
        weight_map |= dict.fromkeys(keys, shard)
    (path / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
    loaded = hf.load_pretrained(path)
    np.testing.assert_array_equal(
        np.asarray(loaded.embeddings.word.embedding[...]),
        np.asarray(model.embeddings.word.embedding[...]),
    )


def test_pytorch_bin_fallback(saved):
    torch = pytest.importorskip("torch")
    model, path = saved
    file = path / "model.safetensors"
    tensors = safetensors.numpy.load_file(str(file))
    torch.save({k: torch.from_numpy(v) for k, v in tensors.items()}, path / "pytorch_model.bin")
    file.unlink()
    loaded = hf.load_pretrained(path)
    np.testing.assert_array_equal(
        np.asarray(loaded.pooler.kernel[...]), np.asarray(model.pooler.kernel[...])
    )


def test_missing_directory_contents_are_explained(tmp_path):
    with pytest.raises(hf.CheckpointError, match=r"config\.json"):
        hf.load_pretrained(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "gpt2"}))
    with pytest.raises(hf.CheckpointError, match="model_type"):
        hf.load_pretrained(tmp_path)
