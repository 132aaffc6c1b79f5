"""ScaNN approximate search behind the :class:`~jaxir.index.base.Searcher` contract.

(The module is ``scann_index``, not ``scann``, so it can never shadow the ``scann``
package for tools that put ``jaxir/index`` on ``sys.path``.)

:meth:`ScannSearcher.build` fills unset parameters from the corpus size ``N``:

=================  ==========================================  ===========================
``N``              partitioning (``tree``)                     scoring
=================  ==========================================  ===========================
``< 20_000``       none                                        ``score_brute_force`` (exact)
``>= 20_000``      ``num_leaves = round(2 * sqrt(N), -1)``,    ``score_ah`` (2 dims/block,
                   search ``max(5% of leaves, 20)``,           threshold 0.2) +
                   train on ``min(N, 250_000)`` rows           ``reorder(100)``
=================  ==========================================  ===========================

e.g. ``N = 1M`` gives 2,000 leaves with 100 searched, the ScaNN authors' setting for
glove-100 (1.2M vectors). ``search`` is one ``search_batched_parallel`` call plus
O(Q*k) array conversions: no per-query Python.

``save(dir)`` writes ScaNN's ``serialize`` output, ``searcher.json`` (with SHA-256 of
every ScaNN file) and ``probes.npz`` (a few corpus rows as queries and the results
they gave). ``load(dir)`` checks the files and checksums, loads with
``scann.scann_ops_pybind.load_searcher``, checks ``num_docs``/``dim`` and re-runs the
probes; any mismatch raises a ``ValueError`` naming the file.

Example:
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> docs_nd = rng.standard_normal((200, 8)).astype(np.float32)
    >>> searcher = ScannSearcher.build(docs_nd)  # N < 20k: brute force, exact
    >>> scores_qk, indices_qk = searcher.search(docs_nd[:2], k=3)
    >>> reference = np.argsort(-(docs_nd[:2] @ docs_nd.T), axis=1)[:, :3]
    >>> bool((indices_qk == reference).all())
    True
"""

from __future__ import annotations

import dataclasses
import math
import pathlib
from typing import Any

import jax
import numpy as np
import scann

from jaxir.index import base

KIND = "scann"
VERSION = 1
PROBES = "probes.npz"
BRUTE_FORCE_BELOW = 20_000
NUM_PROBES = 4
NUM_PROBE_NEIGHBOURS = 10
PICKLED_DOCIDS = "scann_docids.pkl"


@dataclasses.dataclass(frozen=True)
class ScannParams:
    """Resolved ScaNN build parameters (``num_leaves == 0`` means brute force)."""

    num_leaves: int
    num_leaves_to_search: int
    reorder: int
    dims_per_block: int
    anisotropic_quantization_threshold: float
    training_sample_size: int
    seed: int

    @property
    def brute_force(self) -> bool:
        return self.num_leaves == 0


def default_params(
    num_docs: int,
    *,
    num_leaves: int | None = None,
    num_leaves_to_search: int | None = None,
    reorder: int | None = None,
    dims_per_block: int = 2,
    anisotropic_quantization_threshold: float = 0.2,
    training_sample_size: int | None = None,
    seed: int = 0,
) -> ScannParams:
    """Fills unset ScaNN parameters from the corpus size (table in the module doc).

    Example:
      >>> p = default_params(1_000_000)
      >>> p.num_leaves, p.num_leaves_to_search, p.reorder, p.training_sample_size
      (2000, 100, 100, 250000)
      >>> default_params(5_000).brute_force
      True
    """
    if num_leaves is None:
        num_leaves = 0 if num_docs < BRUTE_FORCE_BELOW else int(round(2 * math.sqrt(num_docs), -1))
    if num_leaves > num_docs:
        raise ValueError(
            f"ScannSearcher.build: num_leaves={num_leaves} exceeds the {num_docs} documents."
        )
    if num_leaves_to_search is None:
        num_leaves_to_search = min(num_leaves, max(math.ceil(0.05 * num_leaves), 20))
    if num_leaves and not 1 <= num_leaves_to_search <= num_leaves:
        raise ValueError(
            f"ScannSearcher.build: num_leaves_to_search={num_leaves_to_search} must be in "
            f"[1, num_leaves={num_leaves}]."
        )
    return ScannParams(
        num_leaves=num_leaves,
        num_leaves_to_search=num_leaves_to_search if num_leaves else 0,
        reorder=100 if reorder is None else reorder,
        dims_per_block=dims_per_block,
        anisotropic_quantization_threshold=anisotropic_quantization_threshold,
        training_sample_size=min(num_docs, 250_000)
        if training_sample_size is None
        else training_sample_size,
        seed=seed,
    )


class ScannSearcher(base.CorpusShape):
    """A built or loaded ScaNN searcher answering ``search(queries_qd, k)``.

    Construct with :meth:`build` or :meth:`load`; ``raw`` is the underlying
    ``scann_ops_pybind.ScannSearcher``.
    """

    def __init__(
        self, raw: Any, *, num_docs: int, dim: int, params: ScannParams, probes_qd: np.ndarray
    ):
        self.raw = raw
        self.params = params
        self.probes_qd = probes_qd
        self._num_docs, self._dim = num_docs, dim

    @classmethod
    def build(
        cls,
        docs_nd: np.ndarray | jax.Array,
        *,
        num_leaves: int | None = None,
        num_leaves_to_search: int | None = None,
        reorder: int | None = None,
        dims_per_block: int = 2,
        anisotropic_quantization_threshold: float = 0.2,
        training_sample_size: int | None = None,
        seed: int = 0,
    ) -> ScannSearcher:
        """Builds a dot-product ScaNN index over ``docs_nd [N, D]``; unset knobs follow the module table.

        The index is configured with ScaNN's builder
        (``builder(db, k, "dot_product").tree(...).score_ah(...).reorder(...)``);
        ``seed`` is written into the generated config as the partitioner's
        ``clustering_seed`` and the asymmetric hasher's ``clustering_seed`` /
        ``sampling_seed`` before ``create_searcher`` trains it, so builds are
        reproducible and the seed actually varies the k-means training.

        Args:
          docs_nd: ``[N, D]`` corpus.
          num_leaves: k-means partitions (0 = brute force); default from ``N``.
          num_leaves_to_search: partitions probed per query; default 5% (>= 20).
          reorder: candidates re-scored exactly after AH scoring (default 100).
          dims_per_block, anisotropic_quantization_threshold: AH quantizer settings.
          training_sample_size: rows sampled for k-means (default ``min(N, 250k)``).
          seed: seed of ScaNN's k-means and AH training samples.
        """
        docs_nd = np.ascontiguousarray(np.asarray(docs_nd, dtype=np.float32))
        if docs_nd.ndim != 2 or docs_nd.shape[0] == 0:
            raise ValueError(
                f"ScannSearcher.build: docs_nd must be a non-empty [N, D] array, got {docs_nd.shape}."
            )
        num_docs, dim = docs_nd.shape
        params = default_params(
            num_docs,
            num_leaves=num_leaves,
            num_leaves_to_search=num_leaves_to_search,
            reorder=reorder,
            dims_per_block=dims_per_block,
            anisotropic_quantization_threshold=anisotropic_quantization_threshold,
            training_sample_size=training_sample_size,
            seed=seed,
        )
        builder = scann.scann_ops_pybind.builder(docs_nd, 10, base.METRIC)
        if params.brute_force:
            builder = builder.score_brute_force()
        else:
            builder = (
                builder.tree(
                    num_leaves=params.num_leaves,
                    num_leaves_to_search=params.num_leaves_to_search,
                    training_sample_size=params.training_sample_size,
                )
                .score_ah(
                    params.dims_per_block,
                    anisotropic_quantization_threshold=params.anisotropic_quantization_threshold,
                )
                .reorder(params.reorder)
            )
        config = _seeded(builder.create_config(), params.seed)
        raw = scann.scann_ops_pybind.create_searcher(docs_nd, config)
        probes_qd = docs_nd[np.linspace(0, num_docs - 1, NUM_PROBES).astype(np.int64)].copy()
        return cls(raw, num_docs=num_docs, dim=dim, params=params, probes_qd=probes_qd)

    def search(self, queries_qd: np.ndarray | jax.Array, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Approximate top-``k`` by inner product (one ``search_batched_parallel`` call).

        Args:
          queries_qd: ``[Q, D]`` queries.
          k: neighbours per query; missing slots (``k > N``, or fewer found) get
            index ``-1`` and score ``-inf``.

        Returns:
          ``(scores_qk float32 [Q, k], indices_qk int32 [Q, k])``, best first.
        """
        queries_qd = np.ascontiguousarray(np.asarray(queries_qd, dtype=np.float32))
        if queries_qd.ndim != 2 or queries_qd.shape[1] != self._dim:
            raise ValueError(
                f"ScannSearcher.search: queries_qd must be [Q, {self._dim}], got {queries_qd.shape}."
            )
        if k < 1:
            raise ValueError(f"ScannSearcher.search: k must be >= 1, got {k}.")
        pre_reorder = None if self.params.brute_force else max(k, self.params.reorder)
        idx, scores = self.raw.search_batched_parallel(
            queries_qd, final_num_neighbors=k, pre_reorder_num_neighbors=pre_reorder
        )
        indices_qk = idx.astype(np.int32)
        scores_qk = scores.astype(np.float32, copy=False)
        missing = np.isnan(scores_qk)
        if missing.any():
            indices_qk[missing] = -1
            scores_qk[missing] = -np.inf
        return scores_qk, indices_qk

    def save(self, directory: str | pathlib.Path) -> None:
        """Writes ScaNN's serialized files, ``probes.npz`` and ``searcher.json`` (with checksums)."""
        directory = pathlib.Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        self.raw.serialize(str(directory), relative_path=True)
        scann_files = sorted(
            p.name for p in directory.iterdir() if p.name not in (base.MANIFEST, PROBES)
        )
        scores_qk, indices_qk = self.search(self.probes_qd, NUM_PROBE_NEIGHBOURS)
        with open(directory / PROBES, "wb") as f:
            np.savez(f, queries_qd=self.probes_qd, scores_qk=scores_qk, indices_qk=indices_qk)
        base.write_manifest(
            directory,
            kind=KIND,
            version=VERSION,
            num_docs=self._num_docs,
            dim=self._dim,
            params=dataclasses.asdict(self.params),
            sha256={name: base.file_sha256(directory / name) for name in [*scann_files, PROBES]},
        )

    @classmethod
    def load(cls, directory: str | pathlib.Path) -> ScannSearcher:
        """Loads a searcher written by :meth:`save` and verifies it.

        Checks every file's SHA-256 against ``searcher.json``, loads with
        ``scann.scann_ops_pybind.load_searcher``, compares ``num_docs``/``dim`` with the
        manifest and re-runs the stored probe queries: indices must be identical and
        scores equal to 1e-5.

        Raises:
          FileNotFoundError: the manifest or a file it lists is missing.
          ValueError: corrupted manifest, checksum / size / probe mismatch, or a pickle
            file (``scann_docids.pkl``) that jaxir never writes and will not unpickle.
        """
        directory = pathlib.Path(directory)
        manifest = base.read_manifest(directory)
        base.check_manifest(manifest, directory, kind=KIND, version=VERSION)
        where = directory / base.MANIFEST
        if (directory / PICKLED_DOCIDS).exists():
            raise ValueError(
                f"{directory / PICKLED_DOCIDS}: jaxir never writes this pickle and refuses to "
                "unpickle it; delete it (jaxir indices are corpus row numbers)."
            )
        checksums = manifest.get("sha256")
        if not isinstance(checksums, dict) or PROBES not in checksums:
            raise ValueError(
                f"{where}: corrupted manifest, field 'sha256' must map every file to its SHA-256."
            )
        for name, expected in checksums.items():
            path = directory / name
            if not path.is_file():
                raise FileNotFoundError(f"{path}: missing; listed in field 'sha256' of {where}.")
            if base.file_sha256(path) != expected:
                raise ValueError(
                    f"{path}: SHA-256 does not match field 'sha256' of {where}; the file was "
                    "modified or truncated, re-save the searcher."
                )
        try:
            params = ScannParams(**manifest["params"])
        except (KeyError, TypeError) as err:
            raise ValueError(
                f"{where}: corrupted manifest, field 'params' is invalid ({err})."
            ) from err
        raw = scann.scann_ops_pybind.load_searcher(str(directory), assets_backcompat_shim=False)
        if raw.size() != manifest["num_docs"]:
            raise ValueError(
                f"{directory}: the ScaNN index holds {raw.size()} documents but field "
                f"'num_docs' of {where} says {manifest['num_docs']}."
            )
        with np.load(directory / PROBES, allow_pickle=False) as probes:
            probes_qd, scores_qk, indices_qk = (
                probes[n] for n in ("queries_qd", "scores_qk", "indices_qk")
            )
        if probes_qd.ndim != 2 or probes_qd.shape[1] != manifest["dim"]:
            raise ValueError(
                f"{directory / PROBES}: probe queries have shape {probes_qd.shape}, expected "
                f"[*, {manifest['dim']}] from field 'dim' of {where}."
            )
        searcher = cls(
            raw,
            num_docs=manifest["num_docs"],
            dim=manifest["dim"],
            params=params,
            probes_qd=probes_qd,
        )
        got_scores, got_indices = searcher.search(probes_qd, indices_qk.shape[1])
        if not (
            np.array_equal(got_indices, indices_qk)
            and np.allclose(got_scores, scores_qk, atol=1e-5)
        ):
            raise ValueError(
                f"{directory}: the loaded ScaNN index answers the probe queries in "
                f"{directory / PROBES} differently from when it was saved; the index files do "
                "not belong together or ScaNN changed, rebuild the searcher."
            )
        return searcher


def _seeded(config: str, seed: int) -> str:
    """Adds ``seed`` to the partitioning and asymmetric-hashing blocks of a ScaNN text config."""
    config = config.replace("partitioning {", f"partitioning {{\n clustering_seed: {seed}", 1)
    return config.replace(
        "asymmetric_hash {",
        f"asymmetric_hash {{\n clustering_seed: {seed}\n sampling_seed: {seed}",
        1,
    )
