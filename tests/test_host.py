"""seqjax.host: glibc's malloc keeps freed memory, so large buffers stop faulting in anew."""

import platform
import subprocess
import sys

import pytest

# In a process of its own: the setting lasts for the life of the process.
CHURN = r"""
import re, resource, numpy as np
from seqjax import host

def churn():
    start = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(8):
        a = np.ones(1 << 24, np.float32)  # 64 MiB, above glibc's largest mmap threshold
        del a
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - start

before = churn()
assert not host.freed_memory_kept()
assert host.keep_freed_memory() and host.freed_memory_kept()
churn()  # the heap grows to the block once
print(before, churn())
# A block above 2^31 - 1 bytes, the largest finite trim threshold: freed at the heap's
# top, glibc gives it back to the kernel unless trimming is off. Left untouched, it
# costs no page; the heap's size (the kernel's VmData) says whether it is kept.
def heap():
    return int(re.search(r"VmData:\s+(\d+) kB", open("/proc/self/status").read()).group(1)) << 10

start = heap()
a = np.empty(9 << 28 >> 2, np.float32)  # 2.25 GiB
del a
print(heap() - start)
"""


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt is glibc's")
def test_kept_memory_stops_the_page_faults_of_reallocated_blocks():
    out = subprocess.run([sys.executable, "-c", CHURN], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    before, after, large = map(int, out.stdout.split())
    # The OS's own count: glibc maps and unmaps each block (a fault per page, or per huge
    # page), and once memory is kept the same block is reused without any.
    assert before >= 8 * 32 and after < before / 8, (before, after)
    assert large > 2**31 - 1, large  # still mapped, for the next step to reuse
