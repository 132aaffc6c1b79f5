"""Execute notebooks top to bottom (``make notebooks``), or strip their outputs.

Each notebook runs in a fresh ``python3`` kernel (nbclient) started in its own directory,
every cell under a time limit; the first failing cell stops the run with an error naming
the notebook, the cell (its number and first line) and the exception. The executed copies
are not written back: the notebooks committed here carry no outputs (``--strip`` removes
them after editing in Jupyter; ``tests/test_notebooks.py`` checks it).

Usage:
  python notebooks/execute.py [--timeout SECONDS] [--out DIR] [NOTEBOOK.ipynb ...]   # default: notebooks/*.ipynb
  python notebooks/execute.py --strip [NOTEBOOK.ipynb ...]
"""

from __future__ import annotations

import argparse
import pathlib
import sys
import time
from collections.abc import Mapping

import nbformat

HERE = pathlib.Path(__file__).resolve().parent


class NotebookError(RuntimeError):
    """A notebook cell failed or timed out; the message names the notebook and the cell."""


def _describe(nb: nbformat.NotebookNode, index: int) -> str:
    source = nb.cells[index].source.strip().splitlines()
    code_number = sum(c.cell_type == "code" for c in nb.cells[: index + 1])
    return f"cell {index} (code cell {code_number}: {source[0][:60] if source else ''!r})"


def execute_notebook(
    path: pathlib.Path,
    *,
    timeout: int = 300,
    out_dir: pathlib.Path | None = None,
    env: Mapping[str, str] | None = None,
) -> float:
    """Runs ``path`` top to bottom in a fresh kernel; returns the wall-clock seconds.

    ``env``: the kernel's environment (default: this process's).

    ``out_dir``: also write the executed notebook (with its outputs) there, under the
    same name (written when a cell fails too, up to the failure).

    Raises:
      NotebookError: a cell raised or ran longer than ``timeout`` seconds.
    """
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError, CellTimeoutError

    nb = nbformat.read(path, as_version=4)
    client = NotebookClient(
        nb,
        timeout=timeout,
        kernel_name="python3",
        resources={"metadata": {"path": str(path.parent)}},
    )
    tick = time.perf_counter()
    try:
        client.execute(**({} if env is None else {"env": dict(env)}))
    except (CellExecutionError, CellTimeoutError) as e:
        _write(nb, path, out_dir)
        failed = next(
            (
                i
                for i, cell in enumerate(nb.cells)
                if any(o.get("output_type") == "error" for o in cell.get("outputs", []))
            ),
            None,
        )
        if failed is None:  # a timeout leaves no error output: the last cell that started
            started = [i for i, c in enumerate(nb.cells) if c.get("execution_count")]
            failed = started[-1] if started else 0
        what = (
            f"ran longer than {timeout} s"
            if isinstance(e, CellTimeoutError)
            else f"raised {getattr(e, 'ename', type(e).__name__)}: {getattr(e, 'evalue', e)}"
        )
        raise NotebookError(f"{path}: {_describe(nb, failed)} {what}\n\n{e}") from None
    seconds = time.perf_counter() - tick
    _write(nb, path, out_dir)
    return seconds


def _write(nb: nbformat.NotebookNode, path: pathlib.Path, out_dir: pathlib.Path | None) -> None:
    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
        nbformat.write(nb, out_dir / path.name)


def strip_outputs(path: pathlib.Path) -> bool:
    """Removes outputs and execution counts from ``path`` in place; True when it changed."""
    nb = nbformat.read(path, as_version=4)
    changed = False
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        changed |= bool(cell.outputs) or cell.execution_count is not None
        cell.outputs, cell.execution_count = [], None
    if changed:
        nbformat.write(nb, path)
    return changed


def main(argv: list[str] | None = None) -> int:
    """Command line (module docstring)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("notebooks", nargs="*", type=pathlib.Path)
    parser.add_argument("--timeout", type=int, default=300, help="seconds per cell (default: 300)")
    parser.add_argument(
        "--out", type=pathlib.Path, help="also write the executed notebooks (with outputs) here"
    )
    parser.add_argument("--strip", action="store_true", help="only strip outputs, run nothing")
    args = parser.parse_args(argv)
    paths = args.notebooks or sorted(HERE.glob("*.ipynb"))
    missing = [p for p in paths if not p.is_file()]
    if missing:
        parser.error(f"no such notebook: {', '.join(map(str, missing))}")
    for path in paths:
        if args.strip:
            print(f"{path}: {'stripped' if strip_outputs(path) else 'already clean'}")
            continue
        print(f"{path}: running ...", flush=True)
        try:
            seconds = execute_notebook(path, timeout=args.timeout, out_dir=args.out)
        except NotebookError as e:
            print(f"FAILED {e}", file=sys.stderr)
            return 1
        print(f"{path}: ok in {seconds:.0f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
