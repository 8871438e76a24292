"""What the benchmark scripts share: the machine they ran on, tables, JSON results, processes.

Benchmarks measure and report; they never assert on timing (the machine is shared, so a slow
run is a figure to explain, not a failure). Each script prints a table, states its targets and
whether they were met, and writes `bench/results/<name>.json` with the raw figures and the
machine (CPU, cores, RAM, load average before and after) so numbers can be compared over time.

The scripts run from a fresh clone as `python bench/<name>.py`: this module puts the clone's
root first on `sys.path`, so they measure this tree's bot even if another copy is installed.
"""

from __future__ import annotations

import json
import math
import os
import platform
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

RESULTS = ROOT / "bench" / "results"
T = TypeVar("T")


# --------------------------------------------------------------------------- the machine


def machine() -> dict[str, Any]:
    """Cores, CPU model, RAM and the load average now (other engineers share the machine)."""
    model = "unknown"
    with open("/proc/cpuinfo") as cpuinfo:
        for line in cpuinfo:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    ram_kb = 0
    with open("/proc/meminfo") as meminfo:
        for line in meminfo:
            if line.startswith("MemTotal:"):
                ram_kb = int(line.split()[1])
                break
    return {
        "nproc": os.cpu_count(),
        "cpu_model": model,
        "ram_gib": round(ram_kb / 2**20, 1),
        "python": platform.python_version(),
        "load_average": [round(x, 2) for x in os.getloadavg()],
    }


def load_average() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


# --------------------------------------------------------------------------- figures


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile: the smallest value with at least q% of the values at or below."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


@dataclass(frozen=True)
class Target:
    """A figure next to its limit; `met` when the figure is at or below the limit."""

    name: str
    value: float
    limit: float
    unit: str

    @property
    def met(self) -> bool:
        return self.value <= self.limit

    def line(self) -> str:
        verdict = "MET" if self.met else "MISSED"
        return f"  {self.name}: {self.value:g} {self.unit} (target <= {self.limit:g}) -> {verdict}"

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "met": self.met}


def table(headers: Sequence[str], rows: Iterable[Sequence[object]]) -> str:
    """A plain-text table; numeric columns right-aligned, the others left-aligned."""
    raw = [list(row) for row in rows]
    cells = [[_cell(value) for value in row] for row in raw]
    widths = [len(h) for h in headers]
    for row in cells:
        widths = [max(w, len(c)) for w, c in zip(widths, row, strict=True)]
    numeric = [
        bool(raw) and all(isinstance(row[i], int | float) for row in raw)
        for i in range(len(headers))
    ]

    def fmt(row: Sequence[str]) -> str:
        return "  ".join(
            c.rjust(w) if num else c.ljust(w)
            for c, w, num in zip(row, widths, numeric, strict=True)
        ).rstrip()

    rule = "  ".join("-" * w for w in widths)
    return "\n".join([fmt(list(headers)), rule, *(fmt(row) for row in cells)])


def _cell(value: object) -> str:
    if isinstance(value, float):
        if math.isnan(value):
            return "-"
        digits = 1 if abs(value) >= 100 else 2 if abs(value) >= 1 else 3
        return f"{value:.{digits}f}"
    return str(value)


def report(
    name: str,
    *,
    started: dict[str, Any],
    targets: Sequence[Target],
    figures: Mapping[str, Any],
    notes: Sequence[str] = (),
) -> Path:
    """Print the targets and write `bench/results/<name>.json`; returns the file's path."""
    print("\nTargets:")
    for target in targets:
        print(target.line())
    for note in notes:
        print(f"  note: {note}")
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    document = {
        "benchmark": name,
        "finished_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {**started, "load_average_after": load_average()},
        "targets": [target.to_json() for target in targets],
        "figures": figures,
        "notes": list(notes),
    }
    path.write_text(json.dumps(document, indent=2, sort_keys=False) + "\n")
    print(f"\nwrote {path.relative_to(ROOT)}")
    return path


def header(title: str, started: Mapping[str, Any]) -> None:
    load = ", ".join(f"{x:g}" for x in started["load_average"])
    print(title)
    print(
        f"machine: {started['nproc']} cores ({started['cpu_model']}), {started['ram_gib']} GiB RAM,"
        f" Python {started['python']}; load average {load} (1, 5, 15 min)"
    )


# --------------------------------------------------------------------------- emulators


# --------------------------------------------------------------------------- waiting


def wait_until(probe: Callable[[], T], *, timeout: float, what: str, every: float = 0.05) -> T:
    """Poll `probe` until it returns something truthy; TimeoutError naming `what` otherwise."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(every)


def wait_quiet(counts: Callable[[], object], *, quiet: float, timeout: float, what: str) -> None:
    """Wait until `counts()` stays the same for `quiet` seconds (background work finished)."""
    deadline = time.monotonic() + timeout
    last, since = counts(), time.monotonic()
    while time.monotonic() - since < quiet:
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:g}s waiting for {what} to settle")
        time.sleep(0.05)
        now = counts()
        if now != last:
            last, since = now, time.monotonic()


# --------------------------------------------------------------------------- processes


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks


def peak_rss_mib(pid: int | str = "self") -> float:
    """The process's peak resident set size (VmHWM), in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return math.nan


def stop_process(process: subprocess.Popen[bytes], *, timeout: float = 10.0) -> None:
    """SIGTERM, then SIGKILL if it lingers: only the process this script started."""
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=timeout)
