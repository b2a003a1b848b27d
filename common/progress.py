"""Progress reporting that reads well both on a terminal and in a log file.

On a terminal a tqdm bar redraws itself in place with carriage returns; written to a file (``> run.log``,
a cluster's job log, CI) those redraws become fragments such as ``dev-de:   0%|  | 0/1``. Every progress
display of the project goes through ``report_progress()``: a tqdm bar when the stream is a terminal, otherwise
plain lines, one every 30 seconds (``MGLM_PROGRESS_SECONDS``) while the work lasts, and a last one when it
ends if any was written, so a short job writes nothing and a long one shows that it advances::

    tokenizing: 120000/480000 doc (25%), 31s elapsed, ~93s left

Only the standard library is imported here; tqdm is imported when a bar is shown.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterable, Iterator
from typing import Any, TextIO

PLAIN_EVERY_S = 30.0  # default seconds between plain lines; MGLM_PROGRESS_SECONDS overrides it


def plain_interval() -> float:
    """Seconds between plain progress lines: ``MGLM_PROGRESS_SECONDS`` if set (0 = a line per update)."""
    value = os.environ.get("MGLM_PROGRESS_SECONDS")
    if value is None:
        return PLAIN_EVERY_S
    try:
        seconds = float(value)
    except ValueError:
        seconds = -1.0
    if seconds < 0:
        raise ValueError(f"MGLM_PROGRESS_SECONDS={value!r}: expected a number of seconds >= 0")
    return seconds


class _Off:
    """Progress disabled: every call is a no-op; iterating passes the items through."""

    def __init__(self, iterable: Iterable | None = None) -> None:
        self._iterable = iterable

    def __iter__(self) -> Iterator:
        return iter(self._iterable if self._iterable is not None else ())

    def update(self, n: int = 1) -> None:
        pass

    def set_postfix(self, refresh: bool = False, **values: Any) -> None:
        pass

    def set_postfix_str(self, text: str = "", refresh: bool = False) -> None:
        pass

    def clear(self) -> None:
        pass

    def close(self) -> None:
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class PlainProgress(_Off):
    """Plain progress lines for a stream that is not a terminal (no carriage returns, no redraws).

    A line is written when ``every_s`` seconds have passed since the start or the previous line; ``close``
    writes a final line only if an earlier one was written and the count moved since the last line.
    ``clock`` is injectable for tests."""

    def __init__(self, iterable: Iterable | None = None, *, total: int | None = None, desc: str = "",
                 unit: str = "it", initial: int = 0, stream: TextIO | None = None,
                 every_s: float | None = None, clock=time.monotonic) -> None:
        super().__init__(iterable)
        if total is None and iterable is not None and hasattr(iterable, "__len__"):
            total = len(iterable)  # type: ignore[arg-type]
        self.total, self.desc, self.unit, self.n = total, desc, unit.strip(), initial
        self._initial, self._stream, self._clock = initial, stream, clock
        self._every = plain_interval() if every_s is None else every_s
        self._t0 = self._last = clock()
        self._postfix = ""
        self._written = 0
        self._told = True  # the last line written (ours or the caller's, see clear) shows the current count
        self._closed = False

    def __iter__(self) -> Iterator:
        for item in super().__iter__():
            yield item
            self.update(1)
        self.close()

    def update(self, n: int = 1) -> None:
        self.n += n
        self._told = False
        now = self._clock()
        if now - self._last >= self._every:
            self._write(now)

    def set_postfix(self, refresh: bool = False, **values: Any) -> None:
        self._postfix = ", ".join(f"{k}={v}" for k, v in values.items())

    def set_postfix_str(self, text: str = "", refresh: bool = False) -> None:
        self._postfix = text

    def clear(self) -> None:
        """The caller prints a line of its own now (tqdm erases its bar for it); that line says how far the
        work is, so the next plain line is due ``every_s`` after it, not after the previous plain one, and
        ``close`` right after it adds none."""
        self._last = self._clock()
        self._told = True

    def close(self) -> None:
        if not self._closed and self._written and not self._told:
            self._write(self._clock())
        self._closed = True

    def line(self, now: float) -> str:
        elapsed = now - self._t0
        text = f"{self.desc}: {self.n}" if self.desc else f"{self.n}"
        if self.total:
            text += f"/{self.total} {self.unit} ({100.0 * self.n / self.total:.0f}%), {elapsed:.0f}s elapsed"
            done = self.n - self._initial
            if 0 < done and self.n < self.total:
                text += f", ~{elapsed / done * (self.total - self.n):.0f}s left"
        else:
            text += f" {self.unit}, {elapsed:.0f}s elapsed"
        return text + (f", {self._postfix}" if self._postfix else "")

    def _write(self, now: float) -> None:
        stream = self._stream if self._stream is not None else sys.stderr
        print(self.line(now), file=stream, flush=True)
        self._last = now
        self._written += 1
        self._told = True


def report_progress(iterable: Iterable | None = None, *, total: int | None = None, desc: str = "", unit: str = "it",
             initial: int = 0, enabled: bool = True, stream: TextIO | None = None, plain: bool = True,
             **tqdm_kwargs: Any):
    """A progress display over ``iterable`` (or driven by ``update(n)``): a tqdm bar on a terminal, plain
    periodic lines otherwise (``plain=False``: nothing when not on a terminal, for loops whose log lines
    already say how far they are). ``stream`` defaults to stderr at call time; ``tqdm_kwargs`` go to tqdm
    only (``leave``, ``mininterval``, ``smoothing`` ...)."""
    if not enabled:
        return _Off(iterable)
    out = stream if stream is not None else sys.stderr
    isatty = getattr(out, "isatty", None)
    if isatty is not None and isatty():
        from tqdm import tqdm

        return tqdm(iterable, total=total, desc=desc, unit=unit, initial=initial, file=out, dynamic_ncols=True,
                    **tqdm_kwargs)
    if not plain:
        return _Off(iterable)
    return PlainProgress(iterable, total=total, desc=desc, unit=unit, initial=initial, stream=stream)
