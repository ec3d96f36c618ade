"""Warm cells: the next run's cell is made while this run's program runs.

A cell's init builds everything that does not depend on the run (namespaces,
id maps, the root, loopback) and then waits for the run's launch (cell.py). So
a cell can be made ahead of time: `refill` makes one while the supervisor
would otherwise sit idle waiting for a program, and the next `take` with the
same birth (image, tmpfs size, id map) uses it. A run then costs sending its
launch instead of cloning a process and building a root.

Each warm cell serves exactly one run, unless cells are recycled (below);
nothing of one run is ever seen by another. Automatic by default: a process's
second run turns warm cells on (a process that runs cells again will likely
run more: a harness, a judge, a benchmark), so a one-cell process (`cellblock
run`) never starts what it would throw away, and a long-lived one pays a cold
cell once. Being on costs a waiting process and mount namespace until exit,
and no CPU (a warm cell is made as a cold one would be, only earlier). The
cell maker is a fixed cost (~90 ms of CPU to start, ~16 MiB) that saves ~1 ms
per run, so automatically it starts only at a process's MAKER_FROM_RUN-th run;
until then the caller makes its warm cells itself. `sandbox.keep_warm()` turns
both on at once, `sandbox.keep_warm(False)` off, `keep_warm(None)` back to
automatic; from outside, CELLBLOCK_WARM=1 / CELLBLOCK_WARM=0 (unset:
automatic). One cell is kept per birth, for the last BIRTHS births used (a
judge alternates between the program's cells and the checker's); an older
birth's cell is ended. Warm cells are made by the cell maker (maker.py) once
it is up, so the caller does not wait for their namespaces; it stops with them.

Recycled cells: a cell whose run ended cleanly is not ended but renewed by
its init (init.c, renew: every process of the run gone; new mount, network, IPC
and UTS namespaces; a new root with a fresh tmpfs; the PID counter reset) and
comes back here for the next run of the same birth. A run then costs no spawn,
no id maps, no new user and PID namespaces and no init start-up: about half a
cell's CPU (bench/README.md). What consecutive runs of a recycled cell share
is its user namespace (the same ids), its emptied PID namespace and its
read-only view of the host's directories, nothing a program can write to
(SECURITY.md); it serves runs for RECYCLED_LIFETIME after its first.
Automatic by default, like warm cells: on once a process has run
RECYCLE_AFTER_RUNS cells (the cell maker is up by then), so a process that
runs cell after cell gets them without asking; `sandbox.recycle_cells()`
turns them on from the next run, `recycle_cells(False)` off, `None` back to
automatic; from outside, CELLBLOCK_RECYCLE=1 / CELLBLOCK_RECYCLE=0.
"""

from __future__ import annotations

import contextlib
import os
import select
import threading
import time
from collections.abc import Callable
from typing import Any, Protocol

from . import maker


class _Cell(Protocol):
    owner: int
    host: Any
    first_launch: float | None
    renewing: bool

    def confirm(self) -> None: ...

    def discard(self) -> None: ...

    def finished(self) -> None: ...


BIRTHS = 2
AUTOMATIC_FROM_RUN = 2  # the run that turns warm cells on when nobody chose
MAKER_FROM_RUN = 10  # and the run that starts the cell maker then
RECYCLE_AFTER_RUNS = MAKER_FROM_RUN  # and after that many runs, cells are recycled
_lock = threading.Lock()
_ready: dict[Any, _Cell] = {}  # birth -> a cell waiting for its launch
# Recycled cells beyond the one in _ready, for a caller that runs several
# cells of a birth at once (the run server's threads): up to SPARES per birth.
_spares: dict[Any, list[_Cell]] = {}
SPARES = max((os.cpu_count() or 1) - 1, 1)
# A recycled cell serves runs for this long after its first, then is ended and
# a new one made (a few ms of CPU). Its view of the host's directories is one
# overlay for its whole life (mounts.c, cb_hold), which keeps the names its runs
# looked up: a file the host replaces later (a package upgrade) reaches the
# cell's runs only with a new cell, so no cell's view is older than this.
RECYCLED_LIFETIME = 5.0
_runs = 0  # runs of this process so far (take() counts them)


def _setting_from_environment(name: str) -> bool | None:
    value = os.environ.get(name, "")
    return None if value == "" else value != "0"


_chosen: bool | None = _setting_from_environment("CELLBLOCK_WARM")  # None: automatic
_recycle: bool | None = _setting_from_environment("CELLBLOCK_RECYCLE")  # None: automatic


def recycle_cells(choice: bool | None = True) -> None:
    """Recycle cells (see the module's doc): on also turns warm cells on;
    None: automatic (on once this process has run RECYCLE_AFTER_RUNS cells)."""
    global _recycle
    _recycle = choice
    if choice and not enabled():
        keep_warm(True)


def recycle_setting() -> bool | None:
    """What was chosen (recycle_cells, CELLBLOCK_RECYCLE): None for automatic."""
    return _recycle


def recycling() -> bool:
    """Whether this run's cell is to be renewed and kept after it."""
    if not enabled():
        return False
    return _recycle if _recycle is not None else _runs >= RECYCLE_AFTER_RUNS


def keep_warm(choice: bool | None = True) -> None:
    """Keep one cell made ahead of time, and start the cell maker that makes
    them (False: stop, and end the cell kept and the maker; None: automatic,
    on from this process's second run, the maker from its MAKER_FROM_RUN-th)."""
    global _chosen
    _chosen = choice
    if not enabled():
        release()
    elif _wants_maker():
        maker.start()


def setting() -> bool | None:
    """What was chosen (keep_warm, CELLBLOCK_WARM): True, False, or None for automatic."""
    return _chosen


def enabled() -> bool:
    return _chosen if _chosen is not None else _runs >= AUTOMATIC_FROM_RUN


def _wants_maker() -> bool:
    return _chosen is True or _runs >= MAKER_FROM_RUN


def take(birth: Any) -> _Cell | None:
    """A warm cell for `birth`, or None (then the caller makes one). Called
    once per run: it counts them for the automatic setting."""
    global _runs
    with _lock:
        _runs += 1
    if not enabled():
        return None
    with _lock:
        cell = _ready.pop(birth, None)
        if cell is None and _spares.get(birth):
            cell = _spares[birth].pop()
    if cell is None:
        return None
    if _outlived(cell):  # recycled, then left waiting: a new cell instead
        _drop(cell)
        return None
    if cell.renewing and cell.owner == os.getpid():
        # A recycled cell: its init renews it while the caller prepares the
        # run, and then reads the launch (the caller reads its "ready" after
        # sending it: cell.py).
        return cell
    try:
        if cell.owner == os.getpid():
            cell.confirm()  # a maker's cell: its answer (CellError if it failed)
            if not _has_news(cell):
                return cell
    except (RuntimeError, OSError, ValueError, EOFError):
        pass
    # Inherited across fork (its init is another process's child), or its
    # maker or init reported an error, or the init died while waiting.
    _drop(cell)
    return None


def refill(birth: Any, make: Callable[[Any], _Cell]) -> None:
    """Make a cell for `birth` if none is waiting (called while a program runs)."""
    if not enabled():
        return
    with _lock:
        if birth in _ready:
            return
        stale = _evict_births()
    for cell in stale:
        _drop(cell)
    if _wants_maker():  # turned on automatically or by CELLBLOCK_WARM, not keep_warm()
        maker.start()
    try:
        cell = make(birth)
    except (OSError, ValueError, RuntimeError):
        return  # the next run makes its own cell, and reports what fails
    with _lock:
        if birth not in _ready:
            _ready[birth] = cell
            return
    _drop(cell)  # another thread was quicker


def give_back(birth: Any, cell: _Cell) -> bool:
    """Keep a recycled cell (its init is renewing it) for the next run of
    `birth`; False if it cannot be kept (then the caller ends it)."""
    if not recycling() or cell.owner != os.getpid() or _outlived(cell):
        return False
    with _lock:
        stale = []
        if birth not in _ready:
            stale = _evict_births()
            _ready[birth] = cell
        elif len(_spares.setdefault(birth, [])) < SPARES:
            _spares[birth].append(cell)
        else:
            return False
    for old in stale:
        _drop(old)
    return True


def _outlived(cell: _Cell) -> bool:
    """Whether a cell has served runs for longer than RECYCLED_LIFETIME."""
    first = cell.first_launch
    return first is not None and time.monotonic() - first > RECYCLED_LIFETIME


def _evict_births() -> list[_Cell]:
    """(Under _lock) make room for one more birth: the oldest births' cells
    (dicts keep insertion order), to be dropped by the caller."""
    stale = []
    while len(_ready) >= BIRTHS:
        birth = next(iter(_ready))
        stale.append(_ready.pop(birth))
        stale.extend(_spares.pop(birth, []))
    for birth in [b for b in _spares if b not in _ready]:
        stale.extend(_spares.pop(birth))
    return stale


def release() -> None:
    """End every warm cell and the maker (cell.py calls it at exit; also when
    turned off)."""
    with _lock:
        cells = list(_ready.values()) + [c for spare in _spares.values() for c in spare]
        _ready.clear()
        _spares.clear()
    for cell in cells:
        _drop(cell)
    maker.stop()


def _has_news(cell: _Cell) -> bool:
    """A waiting init says nothing; anything readable is an error or EOF."""
    try:
        return bool(select.select([cell.host], [], [], 0)[0])
    except (OSError, ValueError):  # closed
        return True


def _drop(cell: _Cell) -> None:
    if cell.owner == os.getpid():
        cell.discard()
    else:
        _forget(cell)


def _forget(cell: _Cell) -> None:
    """Close our copies only: the cell is our parent's."""
    with contextlib.suppress(OSError):
        cell.host.close()
        cell.finished()


def _forget_after_fork() -> None:
    # A forked child must never launch into its parent's cell (both would).
    global _lock
    _lock = threading.Lock()
    for cell in [*_ready.values(), *(c for spare in _spares.values() for c in spare)]:
        _forget(cell)
    _ready.clear()
    _spares.clear()


os.register_at_fork(after_in_child=_forget_after_fork)
