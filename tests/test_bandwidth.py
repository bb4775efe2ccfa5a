"""The memory bandwidth probe behind `tinyllm bench`'s "of read BW" column: its kernel reads
every element exactly once (the sum equals NumPy's), its figure is cached per CPU and thread
count, a damaged cache file is measured again, and a tg row's fraction is weight GB/s over it."""
import json
import subprocess
import sys

import numpy as np

from tinyllm import bandwidth
from tinyllm.bench import BenchResult, markdown_row


def test_probe_reads_every_element_once():
    rng = np.random.default_rng(3)
    buf = rng.integers(0, 2**40, 100_003, dtype=np.uint64)
    for chunks in (1, 3, 8, 100_003, 200_000):
        assert bandwidth._read_all(buf, chunks) == buf.sum()


def test_a_new_process_measures_a_positive_figure():
    out = subprocess.run([sys.executable, "-m", "tinyllm.bandwidth", "1"], capture_output=True, text=True, check=True)
    assert float(out.stdout) > 0.1


def test_figure_is_cached_per_thread_count_and_a_bad_cache_is_remeasured(tmp_path, monkeypatch):
    monkeypatch.setattr(bandwidth, "cache_dir", lambda: tmp_path)
    calls = []
    monkeypatch.setattr(bandwidth, "_measure_in_a_new_process", lambda n: calls.append(n) or 10.0 * n)
    assert bandwidth.cached_read_gbs(1) is None
    assert bandwidth.read_gbs(1) == 10.0 and bandwidth.read_gbs(2) == 20.0 and bandwidth.read_gbs(1) == 10.0
    assert calls == [1, 2] and bandwidth.cached_read_gbs(2) == 20.0
    (tmp_path / "bandwidth.json").write_text('["not", "a dict"]')
    assert bandwidth.read_gbs(1) == 10.0 and calls == [1, 2, 1]
    data = json.loads((tmp_path / "bandwidth.json").read_text())
    data[next(iter(data))] = "fast"
    (tmp_path / "bandwidth.json").write_text(json.dumps(data))
    assert bandwidth.read_gbs(1) == 10.0 and calls == [1, 2, 1, 1]


def test_tg_rows_report_their_fraction_of_the_read_bandwidth():
    r = BenchResult("m", 1, 1, 2, 0, 10, 0, samples_s=[0.5], weight_bytes_per_token=10**9, read_gbs=40.0)
    assert r.weight_gbs == 20.0 and r.bandwidth_fraction == 0.5
    assert markdown_row(r)[-1] == "50% of 40.0"
    pp = BenchResult("m", 1, 1, 2, 64, 0, 0, samples_s=[0.5], weight_bytes_per_token=10**9, read_gbs=40.0)
    assert pp.bandwidth_fraction is None and markdown_row(pp)[-1] == ""


def test_probe_buffer_is_twice_the_last_level_cache(monkeypatch):
    """A buffer that fits in the cache measures the cache: on a server with a ~500 MiB L3 a
    256 MiB probe read 185% "of the bandwidth" for a decode that streamed from memory."""
    monkeypatch.setattr(bandwidth, "last_level_cache_bytes", lambda: 480 << 20)
    assert bandwidth.probe_bytes() == 960 << 20
    monkeypatch.setattr(bandwidth, "last_level_cache_bytes", lambda: 32 << 20)
    assert bandwidth.probe_bytes() == bandwidth.MIN_PROBE_BYTES
    monkeypatch.setattr(bandwidth, "last_level_cache_bytes", lambda: 8 << 30)
    assert bandwidth.probe_bytes() == bandwidth.MAX_PROBE_BYTES


def test_last_level_cache_is_read_from_sysfs():
    import pathlib

    sizes = []
    for f in pathlib.Path("/sys/devices/system/cpu/cpu0/cache").glob("index*/size"):
        t = f.read_text().strip()
        sizes.append(int(t[:-1]) << {"K": 10, "M": 20, "G": 30}[t[-1]] if t[-1] in "KMG" else int(t))
    assert bandwidth.last_level_cache_bytes() == max(sizes, default=0)
