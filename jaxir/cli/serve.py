"""Serve a bundle (dense or sparse) over HTTP: JSON search and encode endpoints.

Loads BUNDLE (written by `jaxir export`) and answers on http://HOST:PORT:
  GET  /healthz                          bundle kind, num_docs, dim, jaxir version
  GET  /search?q=TEXT&k=10               top-k ids, scores (+ title/snippet with a corpus)
  POST /search  {"queries": [...], "k": 10}
  POST /encode  {"texts": [...]}         dense vectors, or sparse indices/values/terms

Concurrent requests are batched: requests arriving within --batch-window-ms of the
first pending one (up to --max-batch texts) are searched in one call of the jitted
encoder and index. Bad requests get a 4xx JSON error naming the field; oversized ones
(--max-queries, --max-text-chars, --max-body-bytes) get 413. SIGINT/SIGTERM shut down
gracefully (in-flight requests finish). jaxir.serve documents the JSON formats.

Example:
  jaxir serve runs/quickstart/bundle --port 8080 &
  curl 'localhost:8080/search?q=what+causes+cramps&k=5'
"""

from __future__ import annotations

import argparse
import pathlib

HELP = "serve a bundle over HTTP (/search, /encode, /healthz) with request batching"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of ``jaxir serve``."""
    parser.add_argument("bundle", type=pathlib.Path, metavar="BUNDLE", help="bundle directory")
    parser.add_argument("--host", default="127.0.0.1", help="address (default: %(default)s)")
    parser.add_argument("--port", type=int, default=8080, help="port (default: %(default)s)")
    parser.add_argument(
        "--max-batch", type=int, default=64, help="most texts per batch (default: %(default)s)"
    )
    parser.add_argument(
        "--batch-window-ms",
        type=float,
        default=3.0,
        help="how long a batch waits for more requests (default: %(default)s)",
    )
    parser.add_argument("--max-k", type=int, default=1000, help="largest k (default: %(default)s)")
    parser.add_argument(
        "--max-queries", type=int, default=256, help="texts per request (default: %(default)s)"
    )
    parser.add_argument(
        "--max-text-chars",
        type=int,
        default=4096,
        help="characters per text (default: %(default)s)",
    )
    parser.add_argument(
        "--max-body-bytes",
        type=int,
        default=1 << 20,
        help="request body bytes (default: %(default)s)",
    )
    parser.add_argument(
        "--no-verify", action="store_true", help="skip the SHA-256 check of the bundle's files"
    )
    parser.add_argument(
        "--log-level", default="info", help="uvicorn log level (default: %(default)s)"
    )


def run(args: argparse.Namespace) -> int:
    """Serves until interrupted (see the module docstring)."""
    from jaxir.serve import ServeLimits, serve

    if args.max_batch < 1 or args.batch_window_ms < 0:
        raise ValueError("--max-batch must be >= 1 and --batch-window-ms >= 0")
    limits = ServeLimits(
        max_k=args.max_k,
        max_queries=args.max_queries,
        max_text_chars=args.max_text_chars,
        max_body_bytes=args.max_body_bytes,
    )
    serve(
        args.bundle,
        host=args.host,
        port=args.port,
        max_batch=args.max_batch,
        batch_window_ms=args.batch_window_ms,
        limits=limits,
        verify=not args.no_verify,
        log_level=args.log_level,
    )
    return 0
