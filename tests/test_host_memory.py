"""jaxir.host_memory: a large block freed and allocated again is reused, not page-faulted in again."""

import os
import subprocess
import sys

import pytest

import jaxir.host_memory

# A thread (as XLA:CPU's workers are) allocates, writes and frees a 256 MiB block twice
# and prints the minor page faults of the second round.
_REALLOCATE = """
import ctypes, resource, threading
import sys
import jaxir, jaxir.host_memory  # importing alone changes nothing
if sys.argv[1] == "call":
    jaxir.host_memory.keep_freed_memory()  # no-op with JAXIR_SYSTEM_MALLOC=1
libc = ctypes.CDLL("libc.so.6")
libc.malloc.restype = ctypes.c_void_p
libc.free.argtypes = [ctypes.c_void_p]
size = 256 << 20
def touch():
    block = libc.malloc(size)
    ctypes.memset(block, 1, size)
    libc.free(block)
def run():
    touch()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    touch()
    print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
worker = threading.Thread(target=run)
worker.start()
worker.join()
"""


def _second_round_faults(*, call: bool, system_malloc: bool = False) -> int:
    env = {**os.environ, jaxir.host_memory.OPT_OUT: "1" if system_malloc else "0"}
    out = subprocess.run(
        [sys.executable, "-c", _REALLOCATE, "call" if call else "import"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    return int(out.stdout)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc allocator settings")
def test_a_freed_block_is_reused_without_page_faults_only_when_asked():
    pages = (256 << 20) // os.sysconf("SC_PAGE_SIZE")
    assert _second_round_faults(call=False) > pages // 2  # import alone: glibc default, mmap
    assert _second_round_faults(call=True, system_malloc=True) > pages // 2  # opted out
    assert _second_round_faults(call=True) < pages // 100


def test_the_jaxir_command_applies_it(monkeypatch):
    from jaxir.cli import main

    calls = []
    monkeypatch.setattr(main.host_memory, "keep_freed_memory", lambda: calls.append(1))
    assert main.main([]) == 2  # no subcommand: help
    assert calls == [1]
