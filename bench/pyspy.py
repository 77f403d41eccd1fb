"""py-spy profiles of running processes, summarized: where a benchmark's CPU goes (`--profile` of the benches)."""
from __future__ import annotations

import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path


class Profiler:
    """Samples each pid with py-spy until stop(); then prints the functions that use the most CPU."""

    def __init__(self, pids: dict[str, int], out_dir: Path, rate: int = 100) -> None:
        spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
        self.files = {name: out_dir / f"profile-{name.split()[0]}.txt" for name in pids}
        self.procs = [subprocess.Popen([spy, "record", "--pid", str(pid), "-r", str(rate), "-f", "raw",
                                        "-o", str(self.files[name]), "--nonblocking"],
                                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                      for name, pid in pids.items()]

    def stop(self, top: int = 12) -> None:
        for p in self.procs:
            p.send_signal(2)  # SIGINT: py-spy writes its file and exits
        for p in self.procs:
            p.wait(30)
        for name, path in self.files.items():
            if path.exists():
                print(summarize(path, name, top))


def summarize(path: Path, name: str, top: int) -> str:
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = 0
    for line in path.read_text().splitlines():
        stack, _, n = line.rpartition(" ")
        frames = stack.split(";")
        if not n.isdigit() or "select (selectors.py" in frames[-1]:
            continue  # idle in the event loop
        total += int(n)
        own[frames[-1]] += int(n)
        for f in set(frames):
            if "/papertape/" in f or "agents/" in f or "streams/" in f or "schemas/" in f:
                inclusive[f] += int(n)
    lines = [f"profile of the {name} ({total} busy samples; raw stacks in {path}):",
             "  most time in (self):"]
    lines += [f"    {100 * n / max(total, 1):5.1f}%  {f}" for f, n in own.most_common(top)]
    lines.append("  project functions (inclusive):")
    lines += [f"    {100 * n / max(total, 1):5.1f}%  {f}" for f, n in inclusive.most_common(top)]
    return "\n".join(lines)
