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
import jaxir  # applies jaxir.host_memory unless JAXIR_SYSTEM_MALLOC=1
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


def _second_round_faults(system_malloc: bool) -> int:
    env = {**os.environ, jaxir.host_memory.OPT_OUT: "1" if system_malloc else "0"}
    out = subprocess.run(
        [sys.executable, "-c", _REALLOCATE], env=env, capture_output=True, text=True, check=True
    )
    return int(out.stdout)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc allocator settings")
def test_a_freed_block_is_reused_without_page_faults_unless_opted_out():
    pages = (256 << 20) // os.sysconf("SC_PAGE_SIZE")
    assert _second_round_faults(system_malloc=True) > pages // 2  # glibc default: mmap again
    assert _second_round_faults(system_malloc=False) < pages // 100
