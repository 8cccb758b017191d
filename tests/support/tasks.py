"""Small picklable tasks for the executors' tests (a spawned worker imports them by name)."""

from __future__ import annotations

import os
import time


def pid_after(item: tuple[int, float]) -> tuple[int, int]:
    """(the item's number, the process that ran it), after ``item[1]`` seconds of sleep."""
    number, seconds = item
    time.sleep(seconds)
    return number, os.getpid()


def fails_at(item: int) -> int:
    """The item itself; item 3 raises, as a bad input found by a worker would, naming the process
    that ran it."""
    if item == 3:
        raise ValueError(f"item {item} is bad (process {os.getpid()})")
    return item
