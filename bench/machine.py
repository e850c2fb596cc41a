"""What the machine is doing, read from /proc and the load average: a
process's workers, CPU and memory; the cores other processes use; waiting
for a quiet box before a measurement (other benchmarks gone, load down).
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import time
from pathlib import Path


# --- /proc ------------------------------------------------------------------

def worker_pids(server_pid: int) -> list[int]:
    """The server's model worker processes: its spawned children, or (since
    workers fork from a preloaded helper) the helper's children; never
    multiprocess's resource tracker or the helper itself."""
    def children(pid: int | str, pattern: str | None = None) -> list[int]:
        found = subprocess.run(["pgrep", "-P", str(pid), *(["-f", pattern] if pattern else [])],
                               capture_output=True, text=True)
        return [int(child) for child in found.stdout.split()]

    spawned = children(server_pid, "spawn_main")
    return spawned + [worker for helper in children(server_pid, "forkserver") for worker in children(helper)]


def serving_worker_pids(server_log: str, workers: int = 1) -> list[int]:
    """The pids of the workers taking traffic, read from the server's log:
    each worker's latest start, and the spares that took a dead worker's
    place (``--spare-workers``); workers 0..workers-1 serve at first."""
    pids: dict[int, int] = {}
    serving = set(range(workers))
    for line in server_log.splitlines():
        started = re.search(r"worker (\d+): process (\d+) started", line)
        if started:
            pids[int(started[1])] = int(started[2])
        swapped = re.search(r"worker (\d+) is not ready: spare .*worker (\d+) takes its place", line)
        if swapped:
            serving.discard(int(swapped[1]))
            serving.add(int(swapped[2]))
    return [pids[index] for index in sorted(serving) if index in pids]


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


def rss_mb(pid: int) -> float:
    """Resident memory of one process (the front-end: it must not load torch)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


# --- other people's CPU -----------------------------------------------------

def _process_ticks(pid: int | str) -> int:
    """utime + stime + cutime + cstime: a process's CPU and its reaped children's."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return sum(int(f) for f in fields[11:15])


def _our_ticks() -> int:
    """CPU of this process and every live descendant (raw helpers, servers,
    their workers, load generators); a reaped child's moves into its
    parent's cutime, so the sum carries on across exits."""
    parents: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                parents[int(entry)] = int(Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
    ours, frontier = {os.getpid()}, [os.getpid()]
    while frontier:
        parent = frontier.pop()
        children = [pid for pid, ppid in parents.items() if ppid == parent and pid not in ours]
        ours.update(children)
        frontier += children
    total = 0
    for pid in ours:
        try:
            total += _process_ticks(pid)
        except (OSError, IndexError, ValueError):
            continue  # exited and reaped since the listing: counted in its parent's cutime
    return total


def _busy_ticks() -> int:
    """The machine's busy CPU ticks (all but idle and iowait; guest time is in user already)."""
    user, nice, system, idle, iowait, irq, softirq, steal = map(int, Path("/proc/stat").read_text().split()[1:9])
    return user + nice + system + irq + softirq + steal


class ForeignCpu:
    """Cores used by processes outside this run since ``start()``: on a box
    whose cores other people's test suites share, a figure taken while they
    ran is not this code's (2 torch threads on 2 cores lose whole time
    slices to one busy neighbour). Linux only."""

    def __init__(self) -> None:
        self.start()

    def start(self) -> ForeignCpu:
        self._at, self._busy, self._ours = time.monotonic(), _busy_ticks(), _our_ticks()
        return self

    def cores(self) -> float:
        elapsed = time.monotonic() - self._at
        foreign = (_busy_ticks() - self._busy) - (_our_ticks() - self._ours)
        return round(max(0.0, foreign / os.sysconf("SC_CLK_TCK") / max(elapsed, 1e-3)), 3)


def foreign_cores(seconds: float = 2.0) -> float:
    """Cores others use, sampled over ``seconds`` while this run is idle."""
    meter = ForeignCpu()
    time.sleep(seconds)
    return meter.cores()


def wait_for_quiet(limit: float, longest: float, sample: float = 2.0) -> dict:
    """Sample others' CPU until it is under ``limit`` cores or ``longest``
    seconds have passed; what was seen."""
    started = time.monotonic()
    seen = [foreign_cores(sample)]
    while seen[-1] >= limit and time.monotonic() - started < longest:
        time.sleep(3)
        seen.append(foreign_cores(sample))
    return {"foreign_cores": seen[-1], "waited_s": round(time.monotonic() - started, 1), "quiet": seen[-1] < limit}


# --- a quiet box: before a run, wait for other benchmarks and load to go ---

def add_quiet_arguments(p: argparse.ArgumentParser, threshold: float) -> None:
    p.add_argument("--wait-quiet", type=float, default=threshold, metavar="LOAD",
                   help="wait until no other `python -m bench` runs and the 1-minute load average is under LOAD "
                        "(0: no wait)")
    p.add_argument("--wait-max", type=float, default=900.0, help="longest wait, seconds; then measure anyway")


def load_average() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def _ancestors(pid: int) -> set[int]:
    chain = set()
    while pid > 1:
        chain.add(pid)
        try:
            pid = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            break
    return chain


def other_benchmarks() -> list[str]:
    """Command lines of `python -m bench ...` processes other than this one
    and whatever started it (a shell, timeout)."""
    found = subprocess.run(["pgrep", "-af", "python -m bench"], capture_output=True, text=True).stdout
    mine = _ancestors(os.getpid())
    return [line for line in found.splitlines() if line.split()[0].isdigit() and int(line.split()[0]) not in mine]


def wait_quiet(threshold: float, longest: float) -> dict:
    started = time.monotonic()
    polls = [{"load_average": load_average(), "other_benchmarks": other_benchmarks()}]

    def busy(poll: dict) -> bool:
        return bool(threshold) and (poll["load_average"][0] >= threshold or bool(poll["other_benchmarks"]))

    while busy(polls[-1]) and time.monotonic() - started < longest:
        print(f"load average {polls[-1]['load_average']}, {len(polls[-1]['other_benchmarks'])} other benchmark "
              f"process(es): waiting (1-minute figure under {threshold:g}, no other `python -m bench`) ...",
              flush=True)
        time.sleep(60)
        polls.append({"load_average": load_average(), "other_benchmarks": other_benchmarks()})
    return {"threshold": threshold, "waited_s": round(time.monotonic() - started), "polls": polls,
            "quiet": not busy(polls[-1])}


def cpu_name() -> str | None:
    """The CPU's model name and the flags that decide precision choices (results
    name the machine they were measured on: this one changes between sessions)."""
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as f:
            lines = [line for line in f if line.startswith(("model name", "flags"))][:2]
    except OSError:
        return None
    fields = {key.strip(): value.strip() for key, _, value in (line.partition(":") for line in lines)}
    name = fields.get("model name")
    notable = [flag for flag in ("avx512_bf16", "amx_bf16") if flag in fields.get("flags", "").split()]
    return f"{name} ({', '.join(notable)})" if name and notable else name
