"""An HTTP service over a serving bundle (dense or sparse): ``jaxir serve BUNDLE``.

Built on starlette (the ASGI app, :func:`create_app`) and uvicorn (the server,
:func:`serve`). JSON in, JSON out:

=================  ===========================================================================
``GET /healthz``   ``{"status": "ok", "kind", "num_docs", "dim", "index", "jaxir_version",
                   "metrics"}``
``GET /search``    ``?q=TEXT&k=10`` -> ``{"k": 10, "results": [{"query": TEXT, "hits": [...]}]}``
``POST /search``   ``{"queries": [TEXT, ...], "k": 10}`` -> the same, one result per query
``POST /encode``   ``{"texts": [TEXT, ...]}`` (or ``GET ?q=TEXT``) -> ``{"kind", "dim",
                   "vectors": [...]}``
=================  ===========================================================================

A hit is ``{"id", "score"}`` plus, when the bundle holds a corpus, ``"title"`` and
``"snippet"`` (the first :data:`SNIPPET_CHARS` characters of the text). ``/encode``
returns dense vectors as lists of ``dim`` floats; sparse (SPLADE) vectors as
``{"indices": [...], "values": [...], "terms": {token: weight}}`` over the active terms,
heaviest first: ``indices``/``values`` are exactly the vector the index is searched with,
``terms`` the readable view of the same entries.

**Batching.** Requests do not call the bundle themselves: each hands its texts to a
:class:`MicroBatcher`, which waits up to ``batch_window_ms`` after the first pending
request (or until ``max_batch`` texts are pending), then searches every pending text in
one ``bundle.search_run`` call per distinct ``k`` (so the jitted encoder sees one batch),
in a worker thread so the event loop keeps accepting requests. While a batch runs, new
requests queue up and form the next batch, so under load batches grow by themselves.

**Errors** are JSON ``{"error": message, "field": name}`` and never a 500 for bad input:

* 400: the body is not JSON, or a required field is missing (``q``, ``queries``, ``texts``);
* 422: a field has the wrong type or value (``k`` not an integer in ``1..max_k``, an
  empty list, a text that is not a non-empty string, a body that is not an object);
* 413: too large (more than ``max_queries`` texts, a text over ``max_text_chars``
  characters, a body over ``max_body_bytes``).

Shutdown (SIGINT/SIGTERM under uvicorn) stops accepting, lets in-flight requests finish
their batch, then stops the batcher and its thread.

Example:
    >>> import tempfile
    >>> from flax import nnx
    >>> from starlette.testclient import TestClient
    >>> from tokenizers import Tokenizer, models, pre_tokenizers, processors
    >>> from transformers import PreTrainedTokenizerFast
    >>> from jaxir.encode import encode_corpus
    >>> from jaxir.export import export_bundle, load_bundle
    >>> from jaxir.models.bert import PRESETS
    >>> from jaxir.models.dual_encoder import DualEncoder, DualEncoderSpec
    >>> from jaxir.search import tower_encoders
    >>> vocab = {"[PAD]": 0, "[UNK]": 1, "[CLS]": 2, "[SEP]": 3, "cats": 4, "purr": 5, "dogs": 6}
    >>> core = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    >>> core.pre_tokenizer = pre_tokenizers.Whitespace()
    >>> core.post_processor = processors.TemplateProcessing(
    ...     single="[CLS] $A [SEP]", special_tokens=[("[CLS]", 2), ("[SEP]", 3)])
    >>> tok = PreTrainedTokenizerFast(tokenizer_object=core, pad_token="[PAD]",
    ...                               cls_token="[CLS]", sep_token="[SEP]", unk_token="[UNK]")
    >>> spec = DualEncoderSpec(query_max_length=8, passage_max_length=16)
    >>> model = DualEncoder.create(PRESETS["tiny"], spec, rngs=nnx.Rngs(0))
    >>> _, passages = tower_encoders(model, tok)
    >>> store = encode_corpus(passages, [("d1", "cats purr"), ("d2", "dogs")],
    ...                       tempfile.mkdtemp(), progress=False)
    >>> bundle = load_bundle(export_bundle(model, store, tempfile.mkdtemp() + "/b",
    ...                                    index="exact", tokenizer=tok))
    >>> with TestClient(create_app(bundle)) as client:
    ...     hits = client.get("/search", params={"q": "cats purr", "k": 2}).json()
    ...     bad = client.get("/search", params={"q": "cats", "k": 0})
    >>> [hit["id"] for hit in hits["results"][0]["hits"]]
    ['d1', 'd2']
    >>> bad.status_code, bad.json()["field"]
    (422, 'k')
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import dataclasses
import json
import pathlib
import time
from collections.abc import AsyncIterator, Callable, Hashable, Sequence
from typing import Any

import numpy as np
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

import jaxir

__all__ = ["MicroBatcher", "ServeLimits", "create_app", "serve"]

#: Characters of a document's text returned as its snippet.
SNIPPET_CHARS = 200


@dataclasses.dataclass(frozen=True)
class ServeLimits:
    """What one request may ask for (larger requests get 413, bad values 422).

    Attributes:
      max_k: the largest ``k`` (``1..max_k`` accepted).
      max_queries: texts per request.
      max_text_chars: characters per text.
      max_body_bytes: bytes of a request body.
    """

    max_k: int = 1000
    max_queries: int = 256
    max_text_chars: int = 4096
    max_body_bytes: int = 1 << 20


class RequestError(Exception):
    """A bad request: HTTP ``status``, a message, and the offending ``field``."""

    def __init__(self, status: int, message: str, field: str | None = None):
        super().__init__(message)
        self.status, self.message, self.field = status, message, field


@dataclasses.dataclass
class _Pending:
    key: Hashable
    texts: list[str]
    future: asyncio.Future
    arrived: float


class MicroBatcher:
    """Collects texts from concurrent requests and runs them through ``fn`` in batches.

    ``fn(key, texts) -> results`` (one result per text, in order) runs in one worker
    thread, once per distinct ``key`` among the pending requests of a batch. A batch
    closes ``window_s`` after its oldest request arrived or when ``max_batch`` texts are
    pending, whichever comes first; a request larger than ``max_batch`` is a batch alone.

    Example:
        >>> calls = []
        >>> def upper(key, texts):
        ...     calls.append(len(texts))
        ...     return [t.upper() for t in texts]
        >>> async def main():
        ...     batcher = MicroBatcher(upper, max_batch=64, window_s=0.01)
        ...     out = await asyncio.gather(*(batcher.submit("k", [t]) for t in "abc"))
        ...     await batcher.close()
        ...     return out
        >>> asyncio.run(main()), calls
        ([['A'], ['B'], ['C']], [3])
    """

    def __init__(
        self,
        fn: Callable[[Hashable, list[str]], Sequence[Any]],
        *,
        max_batch: int = 64,
        window_s: float = 0.003,
    ):
        if max_batch < 1 or window_s < 0:
            raise ValueError(
                f"max_batch must be >= 1 and window_s >= 0, got {max_batch}, {window_s}"
            )
        self.fn, self.max_batch, self.window_s = fn, max_batch, window_s
        self._queue: list[_Pending] = []
        self._wakeup: asyncio.Event | None = None
        self._task: asyncio.Task | None = None
        self._closing = False
        # One thread: the bundle is called by one batch at a time (JAX dispatch is
        # thread-safe, but two interleaved batches would only split the device).
        self._executor = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="jaxir-batch")
        #: Texts per ``fn`` call so far (for logs and tests).
        self.batch_sizes: list[int] = []

    async def submit(self, key: Hashable, texts: list[str]) -> list[Any]:
        """The results of ``texts`` (computed with those of concurrent requests)."""
        if self._closing:
            raise RequestError(503, "the server is shutting down")
        loop = asyncio.get_running_loop()
        if self._task is None:
            self._wakeup = asyncio.Event()
            self._task = loop.create_task(self._loop())
        item = _Pending(key, list(texts), loop.create_future(), time.perf_counter())
        self._queue.append(item)
        self._wakeup.set()
        return await item.future

    def _take(self) -> list[_Pending]:
        batch, size = [], 0
        while self._queue and (not batch or size + len(self._queue[0].texts) <= self.max_batch):
            item = self._queue.pop(0)
            batch.append(item)
            size += len(item.texts)
        return batch

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            if not self._queue:
                if self._closing:
                    return
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            # Wait for more requests until the oldest has waited window_s, or the batch is full.
            while not self._closing:
                pending = sum(len(item.texts) for item in self._queue)
                left = self._queue[0].arrived + self.window_s - time.perf_counter()
                if pending >= self.max_batch or left <= 0:
                    break
                self._wakeup.clear()
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self._wakeup.wait(), left)
            batch = self._take()
            groups: dict[Hashable, list[_Pending]] = {}
            for item in batch:
                groups.setdefault(item.key, []).append(item)
            for key, items in groups.items():
                texts = [t for item in items for t in item.texts]
                self.batch_sizes.append(len(texts))
                try:
                    results = await loop.run_in_executor(self._executor, self.fn, key, texts)
                except Exception as e:  # handed to the requests, never kills the loop
                    for item in items:
                        if not item.future.done():
                            item.future.set_exception(e)
                    continue
                start = 0
                for item in items:
                    if not item.future.done():  # a disconnected client's request is dropped
                        item.future.set_result(list(results[start : start + len(item.texts)]))
                    start += len(item.texts)

    async def close(self) -> None:
        """Finishes the pending requests, then stops the loop and the worker thread."""
        self._closing = True
        if self._task is not None:
            self._wakeup.set()
            await self._task
        self._executor.shutdown(wait=True)


# --------------------------------------------------------------------------- request parsing


def _check_k(value: Any, limits: ServeLimits) -> int:
    if isinstance(value, str):
        try:
            value = int(value)
        except ValueError:
            raise RequestError(
                422, f"field 'k' must be an integer in 1..{limits.max_k}, got {value!r}", "k"
            ) from None
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= limits.max_k:
        raise RequestError(
            422, f"field 'k' must be an integer in 1..{limits.max_k}, got {value!r}", "k"
        )
    return value


def _check_texts(field: str, value: Any, limits: ServeLimits) -> list[str]:
    if not isinstance(value, list):
        raise RequestError(
            422, f"field '{field}' must be a list of strings, got {type(value).__name__}", field
        )
    if not value:
        raise RequestError(422, f"field '{field}' is an empty list; give at least one text", field)
    if len(value) > limits.max_queries:
        raise RequestError(
            413,
            f"field '{field}' holds {len(value)} texts; at most {limits.max_queries} per request",
            field,
        )
    for i, text in enumerate(value):
        _check_text(f"{field}[{i}]", text, limits)
    return value


def _check_text(field: str, text: Any, limits: ServeLimits) -> str:
    if not isinstance(text, str) or not text.strip():
        raise RequestError(422, f"field '{field}' must be a non-empty string, got {text!r}", field)
    if len(text) > limits.max_text_chars:
        raise RequestError(
            413,
            f"field '{field}' has {len(text)} characters; at most {limits.max_text_chars}",
            field,
        )
    return text


def _query_param(request: Request, limits: ServeLimits) -> list[str]:
    if "q" not in request.query_params:
        raise RequestError(400, "query parameter 'q' is missing (e.g. /search?q=text&k=10)", "q")
    return [_check_text("q", request.query_params["q"], limits)]


async def _json_body(request: Request, limits: ServeLimits) -> dict[str, Any]:
    length = request.headers.get("content-length")
    if length is not None and length.isdigit() and int(length) > limits.max_body_bytes:
        raise RequestError(
            413, f"the body has {length} bytes; at most {limits.max_body_bytes}", "body"
        )
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limits.max_body_bytes:
            raise RequestError(
                413, f"the body is over {limits.max_body_bytes} bytes; send less", "body"
            )
    try:
        data = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise RequestError(400, f"the body is not valid JSON ({e})", "body") from None
    if not isinstance(data, dict):
        raise RequestError(
            422, f"the body must be a JSON object, got {type(data).__name__}", "body"
        )
    return data


def _load_snippets(corpus: pathlib.Path | None) -> dict[str, tuple[str, str]]:
    if corpus is None:
        return {}
    from jaxir.data.records import iter_corpus

    return {
        doc.id: (doc.title, " ".join(doc.text.split())[:SNIPPET_CHARS])
        for doc in iter_corpus(corpus, allow_empty_docs=True)
    }


# --------------------------------------------------------------------------- the app


def create_app(
    bundle: Any,
    *,
    max_batch: int = 64,
    batch_window_ms: float = 3.0,
    limits: ServeLimits | None = None,
    corpus: pathlib.Path | None = None,
    warmup: bool = True,
) -> Starlette:
    """The starlette app serving ``bundle`` (a :class:`jaxir.export.Bundle`; module docstring).

    Args:
      bundle: the loaded bundle (anything with ``search_run``, ``encoder``, ``kind``,
        ``manifest``, ``doc_ids`` and ``corpus_path`` works).
      max_batch: the most texts searched in one ``bundle.search_run`` call.
      batch_window_ms: how long the first request of a batch waits for others.
      limits: request size limits (default :class:`ServeLimits`).
      corpus: corpus file for titles and snippets (default: the bundle's, if any).
      warmup: search one query at startup, so the first request does not compile.
    """
    limits = limits or ServeLimits()
    snippets = _load_snippets(corpus if corpus is not None else bundle.corpus_path)
    sparse = bundle.kind == "sparse"

    def run_batch(key: Hashable, texts: list[str]) -> list[Any]:
        op, k = key
        if op == "search":
            run = bundle.search_run(texts, k, batch_size=max_batch)
            return [list(run[str(i)].items()) for i in range(len(texts))]
        vectors = bundle.encoder.encode(texts, batch_size=max_batch)
        if not sparse:
            return [row.tolist() for row in np.asarray(vectors)]
        terms = bundle.encoder.terms
        out = []
        for i in range(vectors.shape[0]):
            row = vectors[i]
            order = np.argsort(-row.data, kind="stable")
            indices, values = row.indices[order].tolist(), row.data[order].tolist()
            out.append(
                {
                    "indices": indices,
                    "values": values,
                    "terms": {terms[j]: v for j, v in zip(indices, values)},
                }
            )
        return out

    batcher = MicroBatcher(run_batch, max_batch=max_batch, window_s=batch_window_ms / 1000)

    def hit(doc_id: str, score: float) -> dict[str, Any]:
        out: dict[str, Any] = {"id": doc_id, "score": float(score)}
        if doc_id in snippets:
            out["title"], out["snippet"] = snippets[doc_id]
        return out

    async def healthz(request: Request) -> JSONResponse:
        return JSONResponse(
            {
                "status": "ok",
                "kind": bundle.kind,
                "num_docs": len(bundle.doc_ids),
                "dim": bundle.manifest.get("dim"),
                "index": bundle.manifest.get("index", {}).get("kind"),
                "jaxir_version": jaxir.__version__,
                "metrics": dict(bundle.manifest.get("metrics", {})),
            }
        )

    async def search(request: Request) -> JSONResponse:
        if request.method == "GET":
            texts = _query_param(request, limits)
            k = _check_k(request.query_params.get("k", "10"), limits)
        else:
            body = await _json_body(request, limits)
            if "queries" not in body:
                raise RequestError(
                    400,
                    'field \'queries\' is missing (e.g. {"queries": ["text"], "k": 10})',
                    "queries",
                )
            texts = _check_texts("queries", body["queries"], limits)
            k = _check_k(body.get("k", 10), limits)
        ranked = await batcher.submit(("search", k), texts)
        results = [
            {"query": text, "hits": [hit(d, s) for d, s in pairs]}
            for text, pairs in zip(texts, ranked)
        ]
        return JSONResponse({"k": k, "results": results})

    async def encode(request: Request) -> JSONResponse:
        if request.method == "GET":
            texts = _query_param(request, limits)
        else:
            body = await _json_body(request, limits)
            if "texts" not in body:
                raise RequestError(
                    400, 'field \'texts\' is missing (e.g. {"texts": ["text"]})', "texts"
                )
            texts = _check_texts("texts", body["texts"], limits)
        vectors = await batcher.submit(("encode", None), texts)
        return JSONResponse({"kind": bundle.kind, "dim": bundle.encoder.dim, "vectors": vectors})

    async def request_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestError)
        return JSONResponse({"error": exc.message, "field": exc.field}, status_code=exc.status)

    async def http_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, HTTPException)
        return JSONResponse({"error": exc.detail, "field": None}, status_code=exc.status_code)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        if warmup:
            await batcher.submit(("search", 10), ["warm up"])
        yield
        await batcher.close()

    app = Starlette(
        routes=[
            Route("/healthz", healthz, methods=["GET"]),
            Route("/search", search, methods=["GET", "POST"]),
            Route("/encode", encode, methods=["GET", "POST"]),
        ],
        exception_handlers={RequestError: request_error, HTTPException: http_error},
        lifespan=lifespan,
    )
    app.state.batcher = batcher
    return app


def serve(
    bundle_path: str | pathlib.Path,
    *,
    host: str = "127.0.0.1",
    port: int = 8080,
    max_batch: int = 64,
    batch_window_ms: float = 3.0,
    limits: ServeLimits | None = None,
    verify: bool = True,
    log_level: str = "info",
) -> None:
    """Loads the bundle at ``bundle_path`` and serves it with uvicorn until SIGINT/SIGTERM."""
    import uvicorn

    from jaxir.export import load_bundle

    bundle = load_bundle(bundle_path, verify=verify)
    app = create_app(bundle, max_batch=max_batch, batch_window_ms=batch_window_ms, limits=limits)
    print(
        f"jaxir serve: {bundle_path} ({bundle.kind}, {len(bundle.doc_ids)} documents) on "
        f"http://{host}:{port}",
        flush=True,
    )
    uvicorn.run(app, host=host, port=port, log_level=log_level, timeout_graceful_shutdown=30)
