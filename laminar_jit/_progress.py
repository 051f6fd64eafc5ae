"""Saying what a long compile is doing: a log message and, on a terminal or in a notebook, an indicator.

A cold plan compile takes seconds (Numba typing and LLVM code generation of
the generated step); a warm one loads machine code from the disk cache in
milliseconds. :func:`compiling` wraps such a piece of work:

* it logs ``<what> …`` and ``<what>: done in 12.30 s`` at INFO on
  the ``laminar_jit`` logger (silent unless the application configures
  logging);
* when standard error is a terminal or the code runs in a notebook kernel,
  and the work is still running after :data:`INDICATOR_DELAY` seconds, a tqdm
  line counts the seconds (``compiling plan for source 'bids' … 4.1 s``)
  and is left showing the total; :func:`show_compile_progress` switches it off
  (as does ``LAMINAR_JIT_PROGRESS=0``).

Nested calls (a query's compile containing its sources' plans) show one
indicator, the outermost, and log every level.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import threading
import time

__all__ = ["INDICATOR_DELAY", "compiling", "show_compile_progress"]

log = logging.getLogger("laminar_jit")

#: Seconds of work before the indicator appears: a plan loaded from the disk
#: cache (tens of milliseconds) never flashes one.
INDICATOR_DELAY = 0.5

_enabled: bool | None = None  # None: decided by LAMINAR_JIT_PROGRESS and the terminal
_depth = threading.local()


def show_compile_progress(enabled: bool | None = True) -> bool | None:
    """Switch the compile indicator on or off for this process.

    Parameters
    ----------
    enabled : bool or None
        True: show it whenever a compile takes longer than half a second, even
        when standard error is not a terminal. False: never show it (log
        messages at INFO on the ``laminar_jit`` logger remain). None: the
        default — show it on a terminal or in a notebook unless the environment
        variable ``LAMINAR_JIT_PROGRESS`` is ``0``.

    Returns
    -------
    bool or None
        The previous setting, so a caller can restore it.

    Examples
    --------
    >>> import laminar_jit as lj
    >>> previous = lj.show_compile_progress(False)   # e.g. in a batch job's log
    >>> _ = lj.show_compile_progress(previous)
    """
    global _enabled
    previous, _enabled = _enabled, enabled
    return previous


def _interactive() -> bool:
    try:
        if sys.stderr is not None and sys.stderr.isatty():
            return True
    except (AttributeError, ValueError):  # replaced or closed stream
        return False
    shell = sys.modules.get("IPython")
    if shell is None:
        return False
    try:
        ip = shell.get_ipython()
    except AttributeError:
        return False
    return ip is not None and type(ip).__name__ == "ZMQInteractiveShell"  # a notebook kernel


def _indicator_wanted() -> bool:
    if _enabled is not None:
        return _enabled
    if os.environ.get("LAMINAR_JIT_PROGRESS", "").strip().lower() in ("0", "false", "no", "off"):
        return False
    return _interactive()


class _Indicator:
    """A tqdm line updated by a background thread while the caller's thread compiles."""

    def __init__(self, what: str, delay: float):
        self.what = what
        self.delay = delay
        self.t0 = time.perf_counter()
        self._stop = threading.Event()
        self._bar = None
        self._plain = False  # True: the start of a plain line was written (not a terminal)
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name="laminar_jit-compile-indicator", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        if self._stop.wait(self.delay):
            return
        with self._lock:
            if self._stop.is_set():
                return
            if not _interactive():
                # Not a terminal (a pipe, a log file) but asked for: no carriage-return
                # redraws, just the start of the line now and its end in close().
                sys.stderr.write(f"{self.what} … ")
                sys.stderr.flush()
                self._plain = True
                return
            from tqdm import tqdm

            self._bar = tqdm(total=None, bar_format="{desc}", desc=self._text(), file=sys.stderr, leave=True)
            # a notebook keeps every redraw as a message: redraw it less often than a terminal
            interval = 0.2 if sys.stderr.isatty() else 1.0
        while not self._stop.wait(interval):
            with self._lock:
                self._bar.set_description_str(self._text())

    def _text(self) -> str:
        return f"{self.what} … {time.perf_counter() - self.t0:.1f} s"

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        if self._plain:
            sys.stderr.write(f"{time.perf_counter() - self.t0:.1f} s\n")
            sys.stderr.flush()
        elif self._bar is not None:
            self._bar.set_description_str(self._text())
            self._bar.close()


@contextlib.contextmanager
def compiling(what: str, indicator: bool | None = None):
    """Log ``what`` at INFO before and after the block and show an indicator while it runs.

    Parameters
    ----------
    what : str
        The activity, e.g. ``"compiling plan for source 'bids' (first run; cached afterwards)"``.
    indicator : bool, optional
        Override the process-wide setting (:func:`show_compile_progress`).

    Yields
    ------
    dict
        Filled with ``seconds`` when the block ends.
    """
    depth = getattr(_depth, "value", 0)
    show = (_indicator_wanted() if indicator is None else indicator) and depth == 0
    log.info("%s …", what)
    t0 = time.perf_counter()
    bar = _Indicator(what, INDICATOR_DELAY) if show else None
    result: dict = {}
    _depth.value = depth + 1
    try:
        yield result
    finally:
        _depth.value = depth
        if bar is not None:
            bar.close()
        result["seconds"] = time.perf_counter() - t0
        log.info("%s: done in %.2f s", what, result["seconds"])
