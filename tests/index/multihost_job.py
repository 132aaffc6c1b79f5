"""One process of the multi-host encode + search jobs of ``test_multihost_search.py``.

Run by :class:`jaxir.distributed.LocalJob` as ``python multihost_job.py SPEC.json``; the
job topology comes from the ``JAXIR_*`` environment. SPEC holds:

* ``model``, ``corpus``, ``store``, ``results``: the encoder directory, the corpus
  ``.jsonl``, the store to write and a directory for this process's results;
* ``encode_args``: extra ``jaxir encode`` flags. The store is written by the ``jaxir
  encode`` command (which joins the job), unless ``die_at`` is set: then this process
  joins the job itself and calls :func:`jaxir.encode.encode_corpus`, and process 1
  kills itself (SIGKILL) when it reads document ``die_at`` (-1: never), as a preempted
  host would; each id file a process writes (the mark of a finished shard) is then
  logged to ``results/written-<rank>.txt``;
* ``duplicates``: optional corpus ``.jsonl`` with a repeated id: encoding it must fail
  on every process; the message goes to ``results/duplicate-<rank>.txt``;
* ``queries``, ``ks``: optional ``.npy`` queries, searched over the store with the
  per-host merge for each ``k``; results go to ``results/search-<rank>.npz``.
"""

from __future__ import annotations

import json
import os
import pathlib
import signal
import sys


def _encode_with_the_library(spec: dict) -> None:
    from jaxir import distributed

    distributed.initialize()
    import jax

    from jaxir import sharding, store_files
    from jaxir.data.records import iter_corpus
    from jaxir.encode import encode_corpus, load_encoder

    log = pathlib.Path(spec["results"]) / f"written-{jax.process_index()}.txt"
    log.parent.mkdir(parents=True, exist_ok=True)
    write_ids = store_files.write_ids

    def logged_write_ids(file, ids):
        write_ids(file, ids)
        with log.open("a") as f:
            f.write(f"{file.name}\n")

    store_files.write_ids = logged_write_ids

    def documents():
        for position, doc in enumerate(iter_corpus(spec["corpus"])):
            if position == spec["die_at"] and jax.process_index() == 1:
                os.kill(os.getpid(), signal.SIGKILL)
            yield doc

    mesh = sharding.make_mesh(data=-1, devices=jax.local_devices())
    encoder = load_encoder(spec["model"], pooling="mean", max_length=16, mesh=mesh)
    encode_corpus(encoder, documents(), spec["store"], progress=False, **spec["encode_kwargs"])


def main(spec: dict) -> int:
    if spec.get("die_at") is None:
        from jaxir.cli.main import main as jaxir

        command = ["encode", "--model", spec["model"], "--data", spec["corpus"]]
        code = jaxir([*command, "--out", spec["store"], *spec["encode_args"]])
        if code:
            return code
    else:
        _encode_with_the_library(spec)
    import jax
    import numpy as np

    from jaxir.data.passages import DuplicateIdError
    from jaxir.data.records import iter_corpus
    from jaxir.encode import encode_corpus, load_encoder
    from jaxir.index.distributed_exact import DistributedExactSearcher

    rank, results = jax.process_index(), pathlib.Path(spec["results"])
    results.mkdir(parents=True, exist_ok=True)
    if spec.get("duplicates"):
        encoder = load_encoder(spec["model"], pooling="mean", max_length=16)
        try:
            encode_corpus(
                encoder,
                iter_corpus(spec["duplicates"]),
                pathlib.Path(spec["store"]).with_name("duplicates"),
                shard_size=2,
                batch_size=4,
                progress=False,
            )
        except DuplicateIdError as e:
            (results / f"duplicate-{rank}.txt").write_text(str(e))
    if spec.get("queries"):
        searcher = DistributedExactSearcher.from_store(spec["store"])
        queries_qd = np.load(spec["queries"])
        found = {}
        for k in spec["ks"]:
            found[f"scores_{k}"], found[f"indices_{k}"] = searcher.search(queries_qd, k)
        np.savez(results / f"search-{rank}.npz", **found)
    return 0


if __name__ == "__main__":
    sys.exit(main(json.loads(pathlib.Path(sys.argv[1]).read_text())))
