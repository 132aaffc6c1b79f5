"""Sharded forward passes equal the single-device forward; parameter shardings are pinned."""

import json
import os
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jaxir import sharding
from jaxir.models.bert import PRESETS, Model

GOLDEN = pathlib.Path(__file__).parent / "golden" / "param_shardings.json"
MESHES = {"data8": (8, 1, 1), "data2_fsdp2_tensor2": (2, 2, 2), "fsdp4_tensor2": (1, 4, 2)}


def _model():
    return Model(PRESETS["tiny"].replace(pooler=True), rngs=nnx.Rngs(0))


def _batch():
    rng = np.random.default_rng(0)
    ids = rng.integers(3, 128, (8, 24)).astype(np.int32)
    mask = (np.arange(24)[None] < rng.integers(4, 25, (8, 1))).astype(np.int32)
    return ids * mask, mask


def _forward(model, ids, mask):
    hidden = model(ids, mask)
    return hidden, model.mlm_logits(hidden), model.pooler_output(hidden)


def _spec_table(shardings) -> dict[str, str]:
    return {
        "/".join(map(str, path)): str(tuple(v.get_value().spec))
        for path, v in nnx.to_flat_state(shardings)
    }


@pytest.mark.parametrize("name", sorted(MESHES))
def test_sharded_forward_equals_single_device(name):
    ids, mask = _batch()
    model = _model()
    want = jax.jit(_forward)(model, ids, mask)

    mesh = sharding.make_mesh(*MESHES[name])
    sharded = sharding.shard_model(_model(), mesh)
    batch = sharding.shard_batch((ids, mask), mesh)
    got = jax.jit(_forward)(sharded, *batch)
    for a, b in zip(got, want):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-5, rtol=1e-5)
    # The parameters really are distributed: the word embedding lives in 1/tensor slices.
    word = sharded.embeddings.word.embedding[...]
    assert word.sharding.shard_shape(word.shape)[0] == 128 // mesh.shape["tensor"]


def test_param_shardings_match_golden_file():
    table = {
        name: _spec_table(sharding.param_shardings(nnx.state(_model()), sharding.make_mesh(*shape)))
        for name, shape in MESHES.items()
    }
    if os.environ.get("JAXIR_UPDATE_GOLDEN"):
        GOLDEN.write_text(json.dumps(table, indent=1, sort_keys=True) + "\n")
    assert table == json.loads(GOLDEN.read_text()), (
        "parameter shardings changed; if intended, rerun with JAXIR_UPDATE_GOLDEN=1"
    )


def test_make_mesh_errors_are_explicit():
    with pytest.raises(ValueError, match="needs 6 devices"):
        sharding.make_mesh(3, 2, 1)
    with pytest.raises(ValueError, match="At most one"):
        sharding.make_mesh(-1, -1, 1)
    with pytest.raises(ValueError, match="not divisible"):
        sharding.shard_batch(jnp.ones((6, 2)), sharding.make_mesh(8, 1, 1))


def test_explicit_devices_keep_their_order_unless_a_physical_layout_is_asked_for():
    devices = jax.devices()[::-1]
    mesh = sharding.make_mesh(data=2, fsdp=4, devices=devices)
    assert list(mesh.devices.reshape(-1)) == devices
    laid_out = sharding.make_mesh(data=2, fsdp=4, devices=devices, physical_layout=True)
    assert sorted(d.id for d in laid_out.devices.reshape(-1)) == sorted(d.id for d in devices)
    assert sharding.slice_count(jax.devices()) == 1  # CPU devices have no slices
