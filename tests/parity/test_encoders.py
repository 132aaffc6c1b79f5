"""jaxir encoders reproduce ``transformers`` PyTorch on the same checkpoint (f32, 1e-4)."""

import jax.numpy as jnp
import numpy as np
import torch
import transformers

from jaxir.models import hf
from jaxir.reps.pooling import pool

from .conftest import VOCAB, hf_config, perturbed

ATOL = 1e-4


def padded_batch(family: str, seed: int = 0):
    """Ids [3, 17] with rows of lengths 17, 9 and 4, padded with the family's pad id."""
    rng = np.random.default_rng(seed)
    pad = 1 if family in ("roberta", "xlm-roberta") else 0
    lengths = [17, 9, 4]
    ids = np.full((len(lengths), max(lengths)), pad, np.int64)
    mask = np.zeros_like(ids)
    for row, n in enumerate(lengths):
        ids[row, :n] = rng.integers(3, VOCAB, n)
        mask[row, :n] = 1
    return ids, mask


def torch_outputs(model, ids, mask):
    with torch.no_grad():
        out = model(
            input_ids=torch.from_numpy(ids),
            attention_mask=torch.from_numpy(mask),
            output_hidden_states=True,
        )
    return out.hidden_states[-1].numpy(), out.logits.numpy()


def test_hidden_states_and_mlm_logits_match(saved_mlm):
    family, path, torch_model = saved_mlm
    ids, mask = padded_batch(family)
    want_hidden, want_logits = torch_outputs(torch_model, ids, mask)

    model = hf.load_pretrained(path)
    hidden = model(jnp.asarray(ids), jnp.asarray(mask))
    logits = model.mlm_logits(hidden)

    real = mask.astype(bool)  # padded positions are not part of the contract
    np.testing.assert_allclose(np.asarray(hidden)[real], want_hidden[real], atol=ATOL, rtol=0)
    np.testing.assert_allclose(np.asarray(logits)[real], want_logits[real], atol=ATOL, rtol=0)
    for how in ("cls", "mean"):
        want = torch.from_numpy(want_hidden)
        m = torch.from_numpy(mask).float()
        ref = want[:, 0] if how == "cls" else (want * m[..., None]).sum(1) / m.sum(1, keepdim=True)
        got = pool(hidden, jnp.asarray(mask), how)
        np.testing.assert_allclose(np.asarray(got), ref.numpy(), atol=ATOL, rtol=0)


def test_batch_composition_does_not_change_a_row(saved_mlm):
    """A sequence's vectors do not depend on how much padding its batch carries."""
    family, path, _ = saved_mlm
    ids, mask = padded_batch(family)
    model = hf.load_pretrained(path)
    full = np.asarray(model(jnp.asarray(ids), jnp.asarray(mask)))
    alone = np.asarray(model(jnp.asarray(ids[2:, :4]), jnp.asarray(mask[2:, :4])))
    np.testing.assert_allclose(full[2, :4], alone[0], atol=ATOL, rtol=0)


def test_bert_pooler_matches(tmp_path):
    torch.manual_seed(0)
    model = perturbed(transformers.BertModel(hf_config("bert")), seed=2)
    model.save_pretrained(tmp_path)
    ids, mask = padded_batch("bert", seed=3)
    with torch.no_grad():
        want = model(input_ids=torch.from_numpy(ids), attention_mask=torch.from_numpy(mask))
    ours = hf.load_pretrained(tmp_path)
    assert ours.mlm is None and ours.pooler is not None
    hidden = ours(jnp.asarray(ids), jnp.asarray(mask))
    np.testing.assert_allclose(
        np.asarray(ours.pooler_output(hidden)), want.pooler_output.numpy(), atol=ATOL, rtol=0
    )


def test_bfloat16_compute_is_close(saved_mlm):
    family, path, torch_model = saved_mlm
    ids, mask = padded_batch(family)
    want_hidden, _ = torch_outputs(torch_model, ids, mask)
    model = hf.load_pretrained(path, dtype="bfloat16")
    hidden = np.asarray(model(jnp.asarray(ids), jnp.asarray(mask)).astype(jnp.float32))
    real = mask.astype(bool)
    assert np.abs(hidden[real] - want_hidden[real]).max() < 0.1


def test_saved_checkpoint_loads_in_transformers(saved_mlm, tmp_path):
    family, path, torch_model = saved_mlm
    hf.save_pretrained(hf.load_pretrained(path), tmp_path)
    reloaded = transformers.AutoModelForMaskedLM.from_pretrained(tmp_path).eval()
    ids, mask = padded_batch(family)
    a, _ = torch_outputs(torch_model, ids, mask)
    b, _ = torch_outputs(reloaded, ids, mask)
    np.testing.assert_array_equal(a, b)
