"""A small progress line for long runs: on a terminal it redraws in place; in a
log it prints a line every 10%; with quiet=True it prints nothing."""
from __future__ import annotations

import sys
import time


class Progress:
    def __init__(self, total, desc="", quiet=False, stream=None):
        self.total, self.desc, self.quiet = int(total), desc, quiet
        self.stream = stream or sys.stderr
        self.tty = hasattr(self.stream, "isatty") and self.stream.isatty()
        self.t0 = time.perf_counter()
        self._last_draw = 0.0
        self._last_decile = -1

    def update(self, done: int, **stats: float) -> None:
        if self.quiet:
            return
        now = time.perf_counter()
        decile = (10 * done) // max(self.total, 1)
        if self.tty:
            if now - self._last_draw < 0.2 and done < self.total:
                return
        elif decile == self._last_decile and done < self.total:
            return
        self._last_draw, self._last_decile = now, decile
        el = now - self.t0
        eta = el / done * (self.total - done) if done else float("nan")
        extra = " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in stats.items())
        line = f"{self.desc} {done}/{self.total} [{el:.0f}s elapsed, {eta:.0f}s left] {extra}"
        if self.tty:
            self.stream.write("\r" + line[:150].ljust(150))
            if done >= self.total:
                self.stream.write("\n")
        else:
            self.stream.write(line + "\n")
        self.stream.flush()

    def close(self) -> None:
        if self.tty and not self.quiet:
            self.stream.write("\n")
            self.stream.flush()
