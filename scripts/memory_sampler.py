"""Memory and CPU time of a notebook's kernel, sampled from outside while it runs."""
from __future__ import annotations

import threading


class ProcessTreeSampler:
    """Polls the resident memory and CPU time of this process's children (a kernel and its workers)."""

    def __init__(self, interval_s: float = 0.2):
        import psutil

        self._psutil = psutil
        self.interval_s = interval_s
        self.peak_rss_bytes = 0
        self.cpu_seconds = 0.0
        self._cpu_by_pid: dict[int, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _sample(self) -> None:
        rss = 0
        for child in self._psutil.Process().children(recursive=True):
            try:
                rss += child.memory_info().rss
                times = child.cpu_times()
                self._cpu_by_pid[child.pid] = times.user + times.system
            except (self._psutil.NoSuchProcess, self._psutil.AccessDenied):
                continue
        self.peak_rss_bytes = max(self.peak_rss_bytes, rss)
        self.cpu_seconds = sum(self._cpu_by_pid.values())

    def _run(self) -> None:
        while not self._stop.is_set():
            self._sample()
            self._stop.wait(self.interval_s)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
