"""Final evaluation with ``ir_measures`` (trec_eval semantics) and a results table.

:func:`evaluate` is the reference every number in jaxir's reports comes from; the
on-device metrics of :mod:`jaxir.eval.metrics` are tested against it.

Two choices differ from calling ``ir_measures`` (or BEIR's ``pytrec_eval``) directly:

* **Missing queries count as zero** (``missing_queries="zero"``, the default, which is
  also what ``ir_measures`` does): a query of the qrels that the run does not answer
  scores 0 in every measure. BEIR's ``EvaluateRetrieval`` averages only over the
  queries present in the run; ``missing_queries="ignore"`` reproduces that.
* **One tie order for every measure.** ``ir_measures`` computes ``RR@k`` with the MS MARCO
  script, which breaks equal scores by docid *ascending*, while its ``pytrec_eval``
  measures (nDCG, AP, P, R, RR) break them by docid *descending* (trec_eval). The run is
  re-scored once with its trec_eval rank (score descending, then docid descending)
  before measuring, so all measures see the same ranking.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence

__all__ = ["DEFAULT_METRICS", "evaluate", "format_table"]

DEFAULT_METRICS: tuple[str, ...] = ("nDCG@10", "RR@10", "R@100", "AP")

Run = Mapping[str, Mapping[str, float]]
Qrels = Mapping[str, Mapping[str, int]]


def _load_run(run: Run | str | os.PathLike) -> Run:
    if isinstance(run, (str, os.PathLike)):
        from jaxir.data.runs import read_trec_run

        return read_trec_run(run)
    return run


def _load_qrels(qrels: Qrels | str | os.PathLike) -> Qrels:
    if isinstance(qrels, (str, os.PathLike)):
        from jaxir.data.records import load_qrels

        return load_qrels(qrels)
    return qrels


def _trec_ranks(run: Run) -> dict[str, dict[str, float]]:
    """Replaces scores by ``len - rank`` in trec_eval order (score desc, docid desc)."""
    ranked = {}
    for qid, docs in run.items():
        order = sorted(((float(s), str(d)) for d, s in docs.items()), reverse=True)
        ranked[str(qid)] = {doc: float(len(order) - i) for i, (_, doc) in enumerate(order)}
    return ranked


def evaluate(
    run: Run | str | os.PathLike,
    qrels: Qrels | str | os.PathLike,
    metrics: Sequence[str] = DEFAULT_METRICS,
    *,
    missing_queries: str = "zero",
) -> dict[str, float]:
    """Mean of each ir_measures measure over the queries of ``qrels``.

    Args:
      run: ``{qid: {docid: score}}`` or the path of a TREC run file
        (read by :func:`jaxir.data.runs.read_trec_run`).
      qrels: ``{qid: {docid: grade}}`` or the path of a BEIR qrels TSV
        (read by :func:`jaxir.data.records.load_qrels`).
      metrics: ir_measures names, e.g. ``"nDCG@10"``, ``"RR@10"``, ``"R@100"``, ``"AP"``,
        ``"P@5"``, ``"AP(rel=2)"``.
      missing_queries: ``"zero"`` scores queries of the qrels absent from the run as 0;
        ``"ignore"`` averages over the queries present in both (BEIR / pytrec_eval).

    Returns:
      ``{str(measure): mean}`` with ir_measures' canonical names.

    Raises:
      ValueError: on an unknown measure name, an unknown ``missing_queries`` or when no
        query is left to evaluate.

    Example:
      >>> run = {"q1": {"d1": 2.0, "d2": 1.0}, "q2": {"d3": 1.0}}
      >>> qrels = {"q1": {"d2": 1}, "q2": {"d3": 1}, "q3": {"d9": 1}}
      >>> evaluate(run, qrels, ["RR@10", "P@1"])
      {'RR@10': 0.5, 'P@1': 0.3333333333333333}
      >>> evaluate(run, qrels, ["RR@10"], missing_queries="ignore")
      {'RR@10': 0.75}
    """
    try:
        import ir_measures
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError(
            "jaxir/eval/evaluate.py: evaluate() needs ir_measures; install it with "
            "`pip install ir-measures` (or `pip install -e '.[test]'`)."
        ) from err

    measures = []
    for name in metrics:
        try:
            measures.append(ir_measures.parse_measure(name))
        except (ValueError, NameError, SyntaxError, TypeError) as err:
            raise ValueError(
                f"jaxir/eval/evaluate.py: metrics entry {name!r} is not an ir_measures "
                "measure; expected names like 'nDCG@10', 'RR@10', 'R@100', 'AP', 'P@5'."
            ) from err
    if missing_queries not in ("zero", "ignore"):
        raise ValueError(
            "jaxir/eval/evaluate.py: missing_queries must be 'zero' or 'ignore', "
            f"got {missing_queries!r}."
        )

    run = _trec_ranks(_load_run(run))
    qrels = {
        str(q): {str(d): int(g) for d, g in docs.items()} for q, docs in _load_qrels(qrels).items()
    }
    if missing_queries == "ignore":
        qrels = {q: docs for q, docs in qrels.items() if q in run}
    if not qrels:
        raise ValueError(
            "jaxir/eval/evaluate.py: no query to evaluate: the qrels are empty"
            + (" or share no query id with the run." if missing_queries == "ignore" else ".")
        )
    aggregate = ir_measures.calc_aggregate(measures, qrels, run)
    return {str(m): float(aggregate[m]) for m in measures}


def format_table(rows: Mapping[str, Mapping[str, float]], *, digits: int = 4) -> str:
    """An aligned plain-text table: one row per system, one column per metric.

    Metric columns appear in first-seen order; a metric a system lacks prints ``-``.

    Args:
      rows: ``{system: {metric: value}}``, e.g. the outputs of :func:`evaluate`.
      digits: decimals printed per value.

    Returns:
      The table, lines joined by ``\\n`` (no trailing newline).

    Example:
      >>> print(format_table({"bm25": {"nDCG@10": 0.665, "R@100": 0.9}, "dense": {"nDCG@10": 0.7}}))
      system  nDCG@10   R@100
      bm25     0.6650  0.9000
      dense    0.7000       -
    """
    columns = list(dict.fromkeys(name for metrics in rows.values() for name in metrics))
    body = [
        [str(system)] + [f"{m[c]:.{digits}f}" if c in m else "-" for c in columns]
        for system, m in rows.items()
    ]
    table = [["system", *columns], *body]
    widths = [max(len(line[i]) for line in table) for i in range(len(table[0]))]
    return "\n".join(
        "  ".join(
            cell.ljust(widths[0]) if i == 0 else cell.rjust(widths[i])
            for i, cell in enumerate(line)
        ).rstrip()
        for line in table
    )
