"""CPU time and resident memory of a process tree, and machine-wide CPU use, from /proc."""

from __future__ import annotations

import os

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def tree_pids(root: int) -> list[int]:
    """`root` and all its descendants (bounded)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as file:
                stat = file.read()
        except OSError:
            continue
        ppid = int(stat[stat.rfind(b")") + 2 :].split()[1])
        children.setdefault(ppid, []).append(int(entry))
    pids, todo = [], [root]
    while todo and len(pids) < 1000:
        pid = todo.pop()
        pids.append(pid)
        todo.extend(children.get(pid, ()))
    return pids


def tree_cpu_seconds(root: int) -> float:
    """User plus system CPU seconds used so far by `root` and its descendants."""
    ticks = 0
    for pid in tree_pids(root):
        try:
            with open(f"/proc/{pid}/stat", "rb") as file:
                fields = file.read().rsplit(b")", 1)[1].split()
        except OSError:
            continue
        ticks += int(fields[11]) + int(fields[12])  # utime, stime (all threads)
    return ticks / CLOCK_TICKS


def tree_rss_kib(root: int) -> int:
    """Sum of VmRSS over `root` and its descendants, in KiB."""
    total = 0
    for pid in tree_pids(root):
        try:
            with open(f"/proc/{pid}/status") as file:
                for line in file:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
                        break
        except OSError:
            continue
    return total


def machine_ticks() -> tuple[int, int, int]:
    """(process-time busy, total, steal) jiffies summed over all CPUs since boot.

    "Busy" is user + nice + system: the time that processes and kernel threads account
    for. Interrupt and softirq time (loopback networking lands there) is left out, so
    that busy minus the CPU of the processes we know is the CPU of processes we do not.
    """
    with open("/proc/stat") as file:
        fields = [int(v) for v in file.readline().split()[1:]]
    user, nice, system = fields[0], fields[1], fields[2]
    total = sum(fields[:8])  # guest time is already counted in user
    steal = fields[7] if len(fields) > 7 else 0
    return user + nice + system, total, steal


def thread_cpu_seconds(pid: int) -> dict[str, float]:
    """CPU seconds per thread of `pid`, keyed by `name:tid` (names from /proc/.../comm)."""
    result: dict[str, float] = {}
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return result
    for tid in tids:
        try:
            with open(f"/proc/{pid}/task/{tid}/comm") as file:
                name = file.read().strip()
            with open(f"/proc/{pid}/task/{tid}/stat", "rb") as file:
                fields = file.read().rsplit(b")", 1)[1].split()
        except OSError:
            continue
        result[f"{name}:{tid}"] = (int(fields[11]) + int(fields[12])) / CLOCK_TICKS
    return result
