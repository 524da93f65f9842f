"""Segment arrays as memory maps: read like the file, released pages stop counting as resident, still readable."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tracinwe.index.manifest import SegmentRecord
from tracinwe.index.storage import SEGMENTS, open_array, release_pages


def resident_file_kb() -> int:
    """This process's resident file-backed memory, in kB: Linux ``RssFile`` plus ``RssShmem`` (where the temporary
    folder is a tmpfs, its files' pages count as shared memory)."""
    fields = dict(line.split(":", 1) for line in Path("/proc/self/status").read_text().splitlines() if ":" in line)
    if "RssFile" not in fields:
        pytest.skip("no RssFile in /proc/self/status")
    return sum(int(fields[key].split()[0]) for key in ("RssFile", "RssShmem") if key in fields)


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="Linux /proc")
def test_released_pages_are_no_longer_resident_and_read_again_the_same(tmp_path):
    record = SegmentRecord("seg-000000", 0, 1, 1, 1.0, {})
    folder = tmp_path / SEGMENTS / record.name
    folder.mkdir(parents=True)
    values = np.random.default_rng(0).standard_normal((4096, 512)).astype(np.float32)  # 8 MB
    np.save(folder / "rows.npy", values)
    rows = open_array(tmp_path, record, "rows")
    assert type(rows) is np.ndarray and rows.flags.writeable  # a plain array over a copy-on-write map
    before = resident_file_kb()
    assert float(rows.sum(dtype=np.float64)) == pytest.approx(float(values.sum(dtype=np.float64)), rel=1e-12)
    touched = resident_file_kb()
    assert touched - before > 6_000  # every page was read: ~8 MB now resident
    release_pages(rows[::2])  # found through a view as well
    assert resident_file_kb() < touched - 6_000
    np.testing.assert_array_equal(rows[4000:4010], values[4000:4010])  # mapped again on reading
    release_pages(np.load(folder / "rows.npy"))  # an array read into memory: nothing to release, no error
