"""Progress for long fits, measured in characters rather than texts (used by the ``ir3de`` command).

Counting is tokenizer-bound and its cost grows with the characters of a text, not the number of
texts: a bar in texts sits at 0/1 for the whole count of one 5 MB file. :func:`fit_with_progress`
fits a router with one bar over every expert's characters, updated after each counted batch, and
refreshed twice a second so the elapsed time keeps moving during a single huge text.

Example:
    >>> from ir3de import Router                                            # doctest: +SKIP
    >>> fit_with_progress(Router(), {"math": math_texts, "code": code_texts})  # doctest: +SKIP
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ir3de.router import Router

__all__ = ["fit_with_progress"]


class _Tracker:
    """Characters handed to the router; a batch is done when the router asks for the next one."""

    def __init__(self, bar: Any) -> None:
        self.bar = bar
        self.pending = 0
        self.lock = threading.Lock()

    def flush(self, *, redraw: bool = True) -> None:
        """Move the bar by the characters of the batches handed out; ``redraw=False`` for the last
        move (closing the bar then draws its final line, once, rather than twice)."""
        with self.lock:
            if self.pending:
                if redraw:
                    self.bar.update(self.pending)
                else:
                    self.bar.n += self.pending
                self.pending = 0

    def feed(self, name: str, texts: Sequence[str], batch_size: int) -> Iterator[str]:
        for j, text in enumerate(texts):
            if j % batch_size == 0:
                self.flush()  # the router pulls a batch only after counting the previous one
                if j == 0:
                    self.bar.set_description(f"counting {name}", refresh=True)
            self.pending += len(text)
            yield text


def fit_with_progress(
    router: Router,
    experts: Mapping[str, Sequence[str]],
    descriptions: Mapping[str, str] | None = None,
    *,
    quiet: bool = False,
    batch_size: int = 512,
) -> Router:
    """``router.fit(experts, descriptions)`` with one progress bar in characters (on stderr). Build
    the router with ``progress=False``: this bar replaces its per-expert bars; ``batch_size``: the
    router's, so the bar moves as the router pulls each batch."""
    from tqdm.auto import tqdm

    total = sum(len(t) for texts in experts.values() for t in texts)
    stop = threading.Event()
    with tqdm(
        total=total, unit="char", unit_scale=True, desc="counting", disable=True if quiet else None
    ) as bar:
        tracker = _Tracker(bar)

        def tick() -> None:
            while not stop.wait(0.5):
                bar.refresh()

        ticker = threading.Thread(target=tick, daemon=True)
        if not bar.disable:
            ticker.start()
        try:
            batch = max(1, int(batch_size))
            feeds = {name: tracker.feed(name, texts, batch) for name, texts in experts.items()}
            router.fit(feeds, descriptions=descriptions)
        finally:
            stop.set()
            if ticker.is_alive():
                ticker.join()
        tracker.flush(redraw=False)  # the ticker is stopped: only closing the bar draws 100 %
    return router
