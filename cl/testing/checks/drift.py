"""The checks every drift detector passes (the contract is :mod:`cl.drift.base`).

Example:
    >>> from cl.drift import PageHinkley
    >>> check_drift_detector(lambda seed: PageHinkley(threshold=20.0))
"""

from __future__ import annotations

import inspect
from typing import Any, Callable, Iterable

import numpy as np

from cl.drift import DriftDetector
from cl.testing.checks import _stateful
from cl.testing.checks._common import Check, Subject, as_subject, missing_members, run_checks
from cl.testing.checks._stateful import Driver

__all__ = ["DRIFT_DETECTOR_CHECKS", "N_ERRORS", "check_drift_detector", "drive_detector", "make_error_stream"]

N_ERRORS = 3000


def make_error_stream(n: int = N_ERRORS, seed: int = 99) -> np.ndarray:
    """A 0/1 error stream whose rate moves 0.2 -> 0.6 -> 0.3, so detectors fire mid-stream."""
    gen = np.random.default_rng(seed)
    rates = np.repeat([0.2, 0.6, 0.3], n // 3)
    return (gen.random(rates.size) < rates).astype(float)


def drive_detector(det: Any, xs: np.ndarray, gen: np.random.Generator | None = None) -> list:
    """Feed ``xs``; the trace is the steps that detected and the final count."""
    detected = []
    for t, x in enumerate(xs):
        det.update(float(x))
        if det.drift_detected:
            detected.append(t)
    return [detected, det.n_detections]


DRIVER = Driver(
    drive=drive_detector,
    first_half=lambda: make_error_stream()[: N_ERRORS // 2],
    second_half=lambda: make_error_stream()[N_ERRORS // 2 :],
    whole=make_error_stream,
)


# ---- the checks ----------------------------------------------------------------------------


def implements_the_protocol(subject: Subject) -> None:
    det = subject.make(0)
    assert isinstance(det, DriftDetector), f"{type(det).__name__} lacks {missing_members(det, DriftDetector)}"


def drives_observable_behaviour(subject: Subject) -> None:
    """Guard for the other checks: the traces they compare must not be trivial."""
    detected, count = drive_detector(subject.make(0), make_error_stream())
    assert count >= 1, "it never fired on the check stream (0.2 -> 0.6 -> 0.3 errors); the checks would be vacuous"


def pickle_round_trip_continues_identically(subject: Subject) -> None:
    _stateful.pickle_round_trip_continues_identically(subject, DRIVER)


def state_round_trip_through_json_continues_identically(subject: Subject) -> None:
    _stateful.state_round_trip_through_json_continues_identically(subject, DRIVER)


def same_seed_same_result(subject: Subject) -> None:
    _stateful.same_seed_same_result(subject, DRIVER)


def inputs_are_not_mutated(subject: Subject) -> None:
    xs = make_error_stream()
    before = xs.copy()
    drive_detector(subject.make(0), xs)
    assert np.array_equal(xs, before), "update() changed the stream it was fed"


def state_dict_does_not_alias_internal_state(subject: Subject) -> None:
    _stateful.state_dict_does_not_alias_internal_state(subject, DRIVER)


def load_state_dict_refuses_other_kinds_and_configs(subject: Subject) -> None:
    _stateful.load_state_dict_refuses_other_kinds_and_configs(subject, DRIVER)


def constructor_arguments_are_stored_as_given(subject: Subject) -> None:
    det = subject.make(0)
    params = inspect.signature(type(det)).parameters
    missing = [name for name in params if not hasattr(det, name)]
    assert not missing, f"{type(det).__name__} does not keep its arguments {missing} as attributes"
    kwargs = {name: getattr(det, name) for name in params}
    twin = type(det)(**kwargs)
    changed = [name for name in params if getattr(twin, name) != kwargs[name]]
    assert not changed, f"arguments {changed} are not stored as given"
    assert repr(twin) == repr(det), f"a twin built from its attributes reprs as {twin!r}, not {det!r}"


def drift_detected_is_read_only_and_counted(subject: Subject) -> None:
    det = subject.make(0)
    for name in ("drift_detected", "n_detections"):
        try:
            setattr(det, name, 3)
        except AttributeError:
            continue
        raise AssertionError(f"{name} can be assigned; make it a read-only property")
    flags = []
    for x in make_error_stream():
        det.update(float(x))
        flags.append(det.drift_detected)
    assert sum(flags) == det.n_detections >= 1, f"{sum(flags)} updates detected but n_detections is {det.n_detections}"


def reset_forgets_the_statistics_but_keeps_the_count(subject: Subject) -> None:
    xs = make_error_stream()
    used = subject.make(0)
    drive_detector(used, xs)
    count = used.n_detections
    used.reset()
    assert not used.drift_detected, "drift_detected is still True after reset()"
    assert used.n_detections == count, f"reset() changed n_detections from {count} to {used.n_detections}"
    again, fresh = drive_detector(used, xs)[0], drive_detector(subject.make(0), xs)[0]
    assert again == fresh, f"after reset() it detects at {again[:5]}..., a fresh one at {fresh[:5]}..."


def rejects_values_that_are_not_finite_numbers(subject: Subject) -> None:
    det = subject.make(0)
    for bad in [float("nan"), float("inf"), "high", None]:
        try:
            det.update(bad)
        except ValueError as err:
            assert repr(bad) in str(err), f"update({bad!r}) raised without naming the value: {err}"
        else:
            raise AssertionError(f"update({bad!r}) did not raise ValueError")
    det.update(np.float32(0.5))
    det.update(True)  # a 0/1 error as a bool is fine


DRIFT_DETECTOR_CHECKS: dict[str, Check] = {
    check.__name__: check
    for check in (
        implements_the_protocol,
        drives_observable_behaviour,
        pickle_round_trip_continues_identically,
        state_round_trip_through_json_continues_identically,
        same_seed_same_result,
        inputs_are_not_mutated,
        state_dict_does_not_alias_internal_state,
        load_state_dict_refuses_other_kinds_and_configs,
        constructor_arguments_are_stored_as_given,
        drift_detected_is_read_only_and_counted,
        reset_forgets_the_statistics_but_keeps_the_count,
        rejects_values_that_are_not_finite_numbers,
    )
}


def check_drift_detector(
    factory: Callable[[int], DriftDetector] | Subject,
    *,
    uses_seed: bool = False,
    name: str | None = None,
    only: Iterable[str] | None = None,
) -> None:
    """Run every drift detector check on the detectors ``factory`` builds.

    Args:
        factory: ``factory(seed)`` returns a fresh detector that fires at least once on
            :func:`make_error_stream`, e.g. ``lambda seed: PageHinkley(threshold=20.0)``; or a
            :class:`Subject`.
        uses_seed: Whether different seeds must detect differently (for randomised detectors).
        name: How failures name it (default: the class it builds). A :class:`Subject` brings
            its own name and ``uses_seed``.
        only: Run just these checks (names from :data:`DRIFT_DETECTOR_CHECKS`).

    Raises:
        AssertionError: Naming every check that failed, and why.
    """
    subject = as_subject(factory, name=name, uses_seed=uses_seed)
    run_checks("drift detector", DRIFT_DETECTOR_CHECKS, subject, only)
