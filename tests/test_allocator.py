"""`retain_freed_memory`: a large block freed and allocated again is reused, not page-faulted in again."""

from __future__ import annotations

import platform
import subprocess
import sys

import pytest

PROBE = """
import ctypes, resource, sys
libc = ctypes.CDLL("libc.so.6")
libc.malloc.restype, libc.malloc.argtypes, libc.free.argtypes = ctypes.c_void_p, [ctypes.c_size_t], [ctypes.c_void_p]
if sys.argv[1] == "retain":
    from tracinwe.capture.allocator import retain_freed_memory
    assert retain_freed_memory()
def faults_of_a_64mb_block():
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    block = libc.malloc(64 << 20)
    ctypes.memset(block, 1, 64 << 20)  # every page written
    libc.free(block)
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
faults_of_a_64mb_block()
print(faults_of_a_64mb_block())
"""


def faults(mode: str) -> int:
    out = subprocess.run([sys.executable, "-c", PROBE, mode], capture_output=True, text=True, check=True)
    return int(out.stdout.split()[-1])


@pytest.mark.skipif(platform.system() != "Linux" or platform.libc_ver()[0] != "glibc", reason="glibc's mallopt")
def test_a_freed_block_is_reused_instead_of_faulted_in_again():
    pages = (64 << 20) // 4096
    default = faults("default")  # glibc maps a 64 MB block afresh each time (above its largest threshold)
    if default < 16:
        pytest.skip(f"the probe sees {default} faults for a fresh 64 MB block here (huge pages?): nothing to compare")
    retained = faults("retain")  # kept in the heap: its pages are already there
    assert retained < pages // 20 and retained * 10 < default, (default, retained)


def test_elsewhere_it_changes_nothing(monkeypatch):
    from tracinwe.capture import allocator

    monkeypatch.setattr(allocator.platform, "libc_ver", lambda: ("", ""))
    assert allocator.retain_freed_memory() is False
