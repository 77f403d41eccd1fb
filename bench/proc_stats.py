"""CPU time and resident memory of processes by pid, from /proc (Linux), for the benchmarks."""
from __future__ import annotations

import os
import threading
import time

_TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process, its threads included."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICK


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def group_cpu_seconds(pids: int | list[int]) -> float:
    """cpu_seconds of one pid, or the sum over a group of them (a broker of several nodes)."""
    return sum(cpu_seconds(p) for p in ([pids] if isinstance(pids, int) else pids))


def group_rss_mb(pids: int | list[int]) -> float:
    return sum(rss_mb(p) for p in ([pids] if isinstance(pids, int) else pids))


class ProcStats:
    """CPU used by each process since construction, and its peak RSS sampled every `every_s`. A name may stand for
    a list of pids (the nodes of a broker): their CPU and RSS are summed."""

    def __init__(self, pids: dict[str, int | list[int]], every_s: float = 0.5) -> None:
        self.pids = pids
        self.cpu0 = {name: group_cpu_seconds(pid) for name, pid in pids.items()}
        self.peak = {name: group_rss_mb(pid) for name, pid in pids.items()}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, args=(every_s,), daemon=True)
        self._thread.start()

    def _sample(self, every_s: float) -> None:
        while not self._stop.wait(every_s):
            for name, pid in self.pids.items():
                try:
                    self.peak[name] = max(self.peak[name], group_rss_mb(pid))
                except OSError:
                    pass

    def since_start(self) -> dict[str, dict[str, float]]:
        self._stop.set()
        self._thread.join()
        return {name: {"cpu_s": group_cpu_seconds(pid) - self.cpu0[name], "rss_mb": self.peak[name]}
                for name, pid in self.pids.items()}


def machine_busy(seconds: float) -> float:
    """Share of all cores busy over `seconds` (from /proc/stat)."""
    def sample():
        with open("/proc/stat") as f:
            vals = list(map(int, f.readline().split()[1:]))
        idle = vals[3] + vals[4]
        return sum(vals), idle
    t0, i0 = sample()
    time.sleep(seconds)
    t1, i1 = sample()
    return 1 - (i1 - i0) / max(t1 - t0, 1)
