"""What every family of checks shares: the subject, the runner and the probes (internal).

Nothing here imports pytest: the suite is part of the installed package, so a user can run it
from their own tests or a notebook, and a failure is a plain ``AssertionError``.
"""

from __future__ import annotations

import itertools
import json
import pickle
import time
import traceback
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from types import ModuleType
from typing import Any, Callable, Iterable, Iterator, Mapping
from unittest import mock


@dataclass(frozen=True)
class Subject:
    """One implementation under test: how to build it, and what the checks may expect of it.

    Attributes:
        name: How failures name it, e.g. ``"reservoir"`` or ``"adwin[clock=1]"``.
        make: ``make(seed)`` builds a fresh instance; ignore the seed if it has no randomness.
        uses_seed: Whether two seeds must behave differently (a check that the seed is used).
        key: Its name in a registry (``REPLAY_BUFFERS``, ``DRIFT_DETECTORS``), if it has one.
    """

    name: str
    make: Callable[[int], Any]
    uses_seed: bool = False
    key: str | None = None


Check = Callable[[Subject], None]


def as_subject(factory: Callable[[int], Any] | Subject, *, name: str | None, uses_seed: bool) -> Subject:
    """``factory`` as a :class:`Subject`, named after the class it builds unless ``name`` is given."""
    if isinstance(factory, Subject):
        return factory
    if not callable(factory):
        raise TypeError(
            f"factory must be a callable seed -> fresh instance, e.g. `lambda seed: MyBuffer(50, seed)`; "
            f"got {factory!r}"
        )
    if name is None:
        name = factory.__name__ if isinstance(factory, type) else type(factory(0)).__name__
    return Subject(name, factory, uses_seed)


def run_checks(family: str, checks: Mapping[str, Check], subject: Subject, only: Iterable[str] | None) -> None:
    """Run ``checks`` (or the ones named in ``only``) on ``subject``; raise once, naming every failure.

    Raises:
        AssertionError: Naming each check that failed (a crash counts as a failure) and why.
        ValueError: If ``only`` names a check that does not exist.
    """
    names = list(checks) if only is None else [only] if isinstance(only, str) else list(only)
    unknown = [n for n in names if n not in checks]
    if unknown:
        raise ValueError(f"unknown {family} check(s) {unknown}; the checks are {list(checks)}")
    failures: list[str] = []
    first: Exception | None = None
    for name in names:
        try:
            checks[name](subject)
        except Exception as err:  # a crash in the implementation fails the check too
            failures.append(f"  {name}: {describe(err)}")
            first = first or err
    if failures:
        raise AssertionError(
            f"{subject.name} failed {len(failures)} of {len(names)} {family} check(s):\n" + "\n".join(failures)
        ) from first


def describe(err: Exception) -> str:
    """One line for a failure: the message, and where a crash happened."""
    if isinstance(err, AssertionError):
        return str(err) or "assertion failed"
    where = traceback.extract_tb(err.__traceback__)[-1] if err.__traceback__ else None
    at = f" (raised at {where.filename}:{where.lineno})" if where else ""
    return f"{type(err).__name__}: {err}{at}"


# ---- probes -----------------------------------------------------------------------------


def assert_same(a: Any, b: Any, what: str) -> None:
    """Raise saying where ``a`` and ``b`` first differ, unless they are equal."""
    if a != b:
        raise AssertionError(f"{what}: {first_difference(a, b)}")


def first_difference(a: Any, b: Any) -> str:
    if isinstance(a, list) and isinstance(b, list):
        for i, (x, y) in enumerate(zip(a, b)):
            if x != y:
                return f"they part at step {i}: {short(x)} != {short(y)}"
        return f"one stops early: {len(a)} vs {len(b)} steps"
    if isinstance(a, dict) and isinstance(b, dict):
        missing = object()
        keys = [k for k in sorted(set(a) | set(b), key=str) if a.get(k, missing) != b.get(k, missing)]
        return f"they differ at {keys}"
    return f"{short(a)} != {short(b)}"


def short(value: Any, limit: int = 160) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def json_round_trip(value: Any, what: str) -> Any:
    """``value`` through ``json.dumps`` and back, as a snapshot to a file or MLflow would be."""
    try:
        text = json.dumps(value)
    except (TypeError, ValueError) as err:
        raise AssertionError(f"{what} is not JSON-serialisable ({err}); keep it to plain lists, dicts and numbers")
    return json.loads(text)


def pickle_round_trip(obj: Any) -> Any:
    try:
        return pickle.loads(pickle.dumps(obj))
    except Exception as err:
        raise AssertionError(f"{type(obj).__name__} does not pickle ({type(err).__name__}: {err})") from err


def scribble(value: Any) -> None:
    """Empty every dict and list inside ``value`` in place: what a careless caller may do to a snapshot."""
    if isinstance(value, dict):
        for v in list(value.values()):
            scribble(v)
        value.clear()
    elif isinstance(value, list):
        for v in value:
            scribble(v)
        value.clear()


_CLOCKS = ("time", "monotonic", "perf_counter")


@contextmanager
def wall_clock_elsewhere(offset: float = 1e9, step: float = 3600.0) -> Iterator[None]:
    """While inside, ``time.time()`` and its kin read a clock far off that jumps an hour per call.

    Code that takes its time only from a ``now`` argument behaves the same inside as outside;
    code that reads the wall clock (``time.time()`` and the like, looked up at call time) does not.
    """
    calls = itertools.count(1)

    def far(real: Callable[[], float]) -> Callable[[], float]:
        return lambda: real() + offset + step * next(calls)

    def far_ns(real: Callable[[], int]) -> Callable[[], int]:
        return lambda: real() + int((offset + step * next(calls)) * 1e9)

    with ExitStack() as stack:
        for name in _CLOCKS:
            stack.enter_context(mock.patch.object(time, name, far(getattr(time, name))))
            stack.enter_context(mock.patch.object(time, f"{name}_ns", far_ns(getattr(time, f"{name}_ns"))))
        yield


# ---- which classes implement an interface ----------------------------------------------------

_NOT_MEMBERS = {
    "__abstractmethods__",
    "__annotations__",
    "__class_getitem__",
    "__dict__",
    "__doc__",
    "__init__",
    "__init_subclass__",
    "__module__",
    "__new__",
    "__non_callable_proto_members__",
    "__orig_bases__",
    "__parameters__",
    "__protocol_attrs__",
    "__qualname__",
    "__slots__",
    "__subclasshook__",
    "__type_params__",
    "__weakref__",
    "__firstlineno__",
    "__static_attributes__",
}


def protocol_members(protocol: type) -> list[str]:
    """The attributes a ``typing.Protocol`` asks for (methods, properties, annotated fields)."""
    names: set[str] = set()
    for base in protocol.__mro__:
        if base.__name__ in ("Protocol", "Generic", "object") or not getattr(base, "_is_protocol", False):
            continue
        for name in [*vars(base), *getattr(base, "__annotations__", {})]:
            if name in _NOT_MEMBERS or (name.startswith("_") and not name.startswith("__")):
                continue
            names.add(name)
    return sorted(names)


def missing_members(obj: Any, protocol: type) -> list[str]:
    """What ``obj`` (an instance or a class) lacks of ``protocol``."""
    return [name for name in protocol_members(protocol) if not hasattr(obj, name)]


def implementations(module: ModuleType, protocol: type) -> list[type]:
    """The classes ``module`` exports (its ``__all__``) that have everything ``protocol`` asks for.

    For the test that every implementation of an interface runs the shared checks.

    Example:
        >>> import cl.rollout
        >>> [c.__name__ for c in implementations(cl.rollout, cl.rollout.RolloutPolicy)]
        ['CanaryPolicy', 'FixedIntervalPolicy']
    """
    names = getattr(module, "__all__", [n for n in vars(module) if not n.startswith("_")])
    found = []
    for name in names:
        obj = getattr(module, name)
        if isinstance(obj, type) and not getattr(obj, "_is_protocol", False) and not missing_members(obj, protocol):
            found.append(obj)
    return found
