"""Drift detectors for the model's error stream.

Public API:

- :class:`DriftDetector`: the protocol every detector implements.
- :class:`ADWIN`, :class:`PageHinkley`: the implementations.
- :func:`make_drift_detector`: build one by name; :data:`DRIFT_DETECTORS` maps names to classes.
"""

from cl.drift.adwin import ADWIN
from cl.drift.base import DriftDetector
from cl.drift.factory import DRIFT_DETECTORS, make_drift_detector
from cl.drift.page_hinkley import PageHinkley

__all__ = ["ADWIN", "DRIFT_DETECTORS", "DriftDetector", "PageHinkley", "make_drift_detector"]
