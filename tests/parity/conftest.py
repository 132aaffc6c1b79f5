"""Fixtures for parity tests: tiny random ``transformers`` PyTorch models saved to disk."""

import pytest

torch = pytest.importorskip("torch", reason="parity tests need PyTorch (pip install torch==2.13.0)")
transformers = pytest.importorskip("transformers")

VOCAB = 120
FAMILIES = ("bert", "roberta", "xlm-roberta", "distilbert")


def hf_config(family: str, **overrides):
    """A tiny random config of ``family`` (``overrides``: e.g. ``vocab_size``, ``pad_token_id``)."""
    common = dict(vocab_size=VOCAB, max_position_embeddings=40) | overrides
    if family == "distilbert":
        return transformers.DistilBertConfig(dim=32, n_layers=2, n_heads=4, hidden_dim=48, **common)
    cls = {
        "bert": transformers.BertConfig,
        "roberta": transformers.RobertaConfig,
        "xlm-roberta": transformers.XLMRobertaConfig,
    }[family]
    return cls(
        hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=48, **common
    )


def perturbed(model, seed: int):
    """Adds noise to every parameter so LayerNorm/bias parameters are not at their init values."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1 * torch.randn(p.shape, generator=gen))
    return model.eval()


@pytest.fixture(scope="session", params=FAMILIES)
def saved_mlm(request, tmp_path_factory):
    """(family, directory, torch model) for a tiny random *ForMaskedLM checkpoint."""
    family = request.param
    torch.manual_seed(0)
    model = perturbed(transformers.AutoModelForMaskedLM.from_config(hf_config(family)), seed=1)
    path = tmp_path_factory.mktemp(f"hf-{family}")
    model.save_pretrained(path)
    return family, path, model
