"""Test-wide JAX setup: a fake 8-device CPU mesh and a persistent compilation cache.

This file sits at the repository root so it also applies to the doctests collected
from ``jaxir/`` (every public docstring example is run by ``pytest jaxir``).
"""

import os
import pathlib

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("TQDM_DISABLE", "1")

import jax
import pytest

_CACHE = pathlib.Path(__file__).parent / ".jax_cache"
jax.config.update("jax_compilation_cache_dir", str(_CACHE))
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)
jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)


# --- CI skip guard -------------------------------------------------------------------
# A clean checkout has everything the unit tests need (tests/fixtures). The only skips
# allowed are tests on data or packages outside the repository, and their reasons say so.
# With JAXIR_FAIL_ON_SKIP=1 (set by .ci/run; also on when $CI is set, unless
# JAXIR_FAIL_ON_SKIP=0) any other skip makes the run fail. The check runs in the
# controlling process, so it sees the reports of every pytest-xdist worker.
ALLOWED_SKIP_PREFIXES = ("needs shared data:", "needs pretrained extra:")


def _fail_on_skip() -> bool:
    flag = os.environ.get("JAXIR_FAIL_ON_SKIP")
    if flag is None:
        flag = os.environ.get("CI", "")
    return flag.strip().lower() not in ("", "0", "false", "no")


def _skip_reason(report) -> str:
    longrepr = report.longrepr
    reason = longrepr[2] if isinstance(longrepr, tuple) and len(longrepr) == 3 else str(longrepr)
    return reason.removeprefix("Skipped: ")


def _disallowed_skips(config) -> list[tuple[str, str]]:
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    if reporter is None:
        return []
    skips = ((report.nodeid, _skip_reason(report)) for report in reporter.stats.get("skipped", []))
    # dict.fromkeys: a module skipped at import is reported for its tests and its doctests.
    return list(dict.fromkeys(s for s in skips if not s[1].startswith(ALLOWED_SKIP_PREFIXES)))


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    if not _fail_on_skip() or hasattr(config, "workerinput"):
        return
    bad = _disallowed_skips(config)
    if bad:
        allowed = " / ".join(repr(p) for p in ALLOWED_SKIP_PREFIXES)
        terminalreporter.section("skips not allowed (JAXIR_FAIL_ON_SKIP)", sep="=", red=True)
        terminalreporter.line(f"{len(bad)} skip(s) whose reason starts with neither {allowed}:")
        for nodeid, reason in bad:
            terminalreporter.line(f"  {nodeid}: {reason}", red=True)


def pytest_sessionfinish(session, exitstatus):
    if not _fail_on_skip() or hasattr(session.config, "workerinput"):
        return
    if exitstatus == 0 and _disallowed_skips(session.config):
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
