"""``jaxir.serve``: results equal ``bundle.search``, batching, bad requests, /healthz."""

import concurrent.futures
import threading
import time

import pytest

pytest.importorskip("starlette")
pytest.importorskip("httpx")

from flax import nnx
from starlette.testclient import TestClient

from jaxir.cli.main import main
from jaxir.data.synthetic import write_collection
from jaxir.export import load_bundle
from jaxir.models.bert import PRESETS
from jaxir.models.splade import Splade, SpladeSpec, save_splade
from jaxir.serve import ServeLimits, create_app
from tests.fixtures import VOCAB_SIZE, vocab_tokenizer
from tests.search.tiny import save_tiny_dual_encoder

TEXTS = ["who was born in a fishing village", "cats and dogs", "a fishing village"]


@pytest.fixture(scope="module")
def bundles(tmp_path_factory):
    """``{"dense": Bundle, "sparse": Bundle}``, both exact, with the corpus."""
    root = tmp_path_factory.mktemp("serve")
    tokenizer = vocab_tokenizer(root / "vocab")
    beir = write_collection(root / "beir", num_topics=4, num_train_queries=1, num_test_queries=2)
    corpus = str(beir / "corpus.jsonl")
    dense = save_tiny_dual_encoder(root / "dense", tokenizer)
    flags = ["--pooling", "mean", "--normalize", "--max-length", "32"]
    assert main(["encode", "--model", str(dense / "query"), "--data", str(beir), *flags,
                 "--out", str(root / "emb")]) == 0  # fmt: skip
    assert main(["export", str(dense), "--embeddings", str(root / "emb"), "--index", "exact",
                 "--corpus", corpus, "--out", str(root / "bd")]) == 0  # fmt: skip
    spec = SpladeSpec(query_max_length=8, passage_max_length=24, max_active_dims=12)
    config = PRESETS["tiny"].replace(vocab_size=VOCAB_SIZE, num_layers=1)
    model = Splade.create(config, spec, rngs=nnx.Rngs(0))
    save_splade(model, root / "splade", tokenizer=tokenizer)
    assert main(["encode", "--model", str(root / "splade"), "--data", str(beir),
                 "--out", str(root / "store")]) == 0  # fmt: skip
    assert main(["export", str(root / "splade"), "--embeddings", str(root / "store"),
                 "--corpus", corpus, "--out", str(root / "bs")]) == 0  # fmt: skip
    return {"dense": load_bundle(root / "bd"), "sparse": load_bundle(root / "bs")}


class CountingBundle:
    """Delegates to a bundle, counting (and slowing) ``search_run`` calls."""

    def __init__(self, bundle, delay=0.0):
        self._bundle, self.delay, self.calls = bundle, delay, []
        self._lock = threading.Lock()

    def __getattr__(self, name):
        return getattr(self._bundle, name)

    def search_run(self, queries, k, *, batch_size=1024):
        with self._lock:
            self.calls.append(len(queries))
        time.sleep(self.delay)
        return self._bundle.search_run(queries, k, batch_size=batch_size)


@pytest.mark.parametrize("kind", ["dense", "sparse"])
def test_search_equals_bundle_search(bundles, kind):
    bundle = bundles[kind]
    want = bundle.search(TEXTS, k=5)
    with TestClient(create_app(bundle)) as client:
        post = client.post("/search", json={"queries": TEXTS, "k": 5}).json()
        gets = [client.get("/search", params={"q": t, "k": 5}).json() for t in TEXTS]
        health = client.get("/healthz").json()
        enc = client.post("/encode", json={"texts": TEXTS[:2]}).json()
    for i, result in enumerate(post["results"]):
        assert result["query"] == TEXTS[i]
        got = [(h["id"], h["score"]) for h in result["hits"]]
        assert [d for d, _ in got] == [d for d, _ in want[i]]
        assert [s for _, s in got] == pytest.approx([s for _, s in want[i]], rel=1e-5)
        assert gets[i]["results"][0]["hits"] == result["hits"]
        assert all("title" in h and "snippet" in h for h in result["hits"])
    assert health["kind"] == kind and health["num_docs"] == len(bundle.doc_ids)
    assert health["status"] == "ok" and "jaxir_version" in health
    assert enc["kind"] == kind and len(enc["vectors"]) == 2
    if kind == "dense":
        assert len(enc["vectors"][0]) == enc["dim"]
    else:
        vec = enc["vectors"][0]
        assert len(vec["indices"]) == len(vec["values"]) == len(vec["terms"]) > 0
        assert vec["values"] == sorted(vec["values"], reverse=True)


def test_concurrent_requests_are_batched(bundles):
    bundle = CountingBundle(bundles["dense"], delay=0.2)
    app = create_app(bundle, batch_window_ms=50, warmup=False)
    queries = [f"{TEXTS[i % 3]} {i}" for i in range(8)]
    with TestClient(app) as client, concurrent.futures.ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda q: client.get("/search", params={"q": q, "k": 3}), queries))
    assert all(a.status_code == 200 for a in answers)
    assert 1 <= len(bundle.calls) < 8 and sum(bundle.calls) == 8
    want = bundles["dense"].search(queries, k=3)
    for q, answer, ranked in zip(queries, answers, want):
        result = answer.json()["results"][0]
        assert result["query"] == q and [h["id"] for h in result["hits"]] == [d for d, _ in ranked]


@pytest.mark.parametrize(
    ("method", "path", "kwargs", "status", "field"),
    [
        ("get", "/search", {}, 400, "q"),
        ("get", "/search", {"params": {"q": "x", "k": "ten"}}, 422, "k"),
        ("get", "/search", {"params": {"q": "x", "k": "0"}}, 422, "k"),
        ("get", "/search", {"params": {"q": "x", "k": "1001"}}, 422, "k"),
        ("get", "/search", {"params": {"q": " "}}, 422, "q"),
        ("get", "/search", {"params": {"q": "x" * 101}}, 413, "q"),
        ("post", "/search", {"content": b"{not json"}, 400, "body"),
        ("post", "/search", {"json": [1, 2]}, 422, "body"),
        ("post", "/search", {"json": {"k": 3}}, 400, "queries"),
        ("post", "/search", {"json": {"queries": []}}, 422, "queries"),
        ("post", "/search", {"json": {"queries": "x"}}, 422, "queries"),
        ("post", "/search", {"json": {"queries": ["x", 3]}}, 422, "queries[1]"),
        ("post", "/search", {"json": {"queries": ["x"], "k": 2.5}}, 422, "k"),
        ("post", "/search", {"json": {"queries": ["x"], "k": True}}, 422, "k"),
        ("post", "/search", {"json": {"queries": ["x"] * 5}}, 413, "queries"),
        ("post", "/search", {"content": b'{"queries": ["' + b"x" * 600 + b'"]}'}, 413, "body"),
        ("post", "/encode", {"json": {}}, 400, "texts"),
        ("post", "/encode", {"json": {"texts": []}}, 422, "texts"),
    ],
)
def test_bad_requests_get_a_4xx_naming_the_field(bundles, method, path, kwargs, status, field):
    limits = ServeLimits(max_queries=4, max_text_chars=100, max_body_bytes=500)
    with TestClient(create_app(bundles["dense"], limits=limits, warmup=False)) as client:
        response = getattr(client, method)(path, **kwargs)
        assert response.status_code == status, response.text
        body = response.json()
        assert body["field"] == field and field.split("[")[0] in body["error"]
        assert client.get("/healthz").status_code == 200  # still serving
        assert client.get("/nope").status_code == 404


def test_uvicorn_serves_and_shuts_down(bundles):
    import socket

    import httpx
    import uvicorn

    app = create_app(bundles["sparse"])
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]})
    thread.start()
    try:
        for _ in range(200):
            if server.started:
                break
            time.sleep(0.05)
        got = httpx.get(f"http://127.0.0.1:{port}/search", params={"q": "cats", "k": 2}).json()
        assert len(got["results"][0]["hits"]) == 2
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        sock.close()
    assert not thread.is_alive() and app.state.batcher._closing


def test_help_explains_serve(capsys):
    with pytest.raises(SystemExit):
        main(["serve", "--help"])
    text = capsys.readouterr().out
    assert "Example" in text and "usage: jaxir serve" in text and "--batch-window-ms" in text
