"""``Closing``: the one way gpuroute's objects work as context managers. Leaving the ``with``
block calls ``close()``, also on an error, which is never swallowed."""

from __future__ import annotations

from types import TracebackType
from typing import TypeVar

__all__ = ["Closing"]

_T = TypeVar("_T", bound="Closing")


class Closing:
    """A mixin: ``with obj:`` gives ``obj`` (a subclass whose ``__enter__`` starts something
    returns what it started) and calls ``obj.close()`` at the end."""

    def close(self) -> None:
        raise NotImplementedError

    def __enter__(self: _T) -> _T:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
