"""Errors users see: one line that names the file, frame or key and what is wrong."""

from __future__ import annotations


class NnpesError(Exception):
    """Base class of every error nnpes raises on purpose (the CLI prints these as one line)."""


class DataError(NnpesError, ValueError):
    """A data file or frame is unusable (missing label, NaN, bad shape, overlapping atoms...)."""


class ConfigError(NnpesError, ValueError):
    """A configuration key is unknown, has the wrong type or an impossible value."""


class ModelError(NnpesError, ValueError):
    """A model directory or a structure does not fit the model (unknown element, bad format)."""


class TrainingError(NnpesError, RuntimeError):
    """Training went wrong while it ran (the loss became NaN or infinite)."""


class SimulationError(NnpesError, RuntimeError):
    """An MD run became unstable (non-finite numbers, or a temperature far above the run's):
    ``result`` holds the frames recorded before it did (an ``MDResult``, or None if none were)."""

    def __init__(self, message: str, result=None):
        super().__init__(message)
        self.result = result


class Interrupted(KeyboardInterrupt):
    """Ctrl-C during a run that keeps what it did: ``result`` holds it (for MD, an ``MDResult`` of
    the steps completed, which continues the run from its last frame)."""

    def __init__(self, message: str, result=None):
        super().__init__(message)
        self.result = result


class LabelWarning(UserWarning):
    """Labels look suspicious but usable: likely wrong units, or a label absent from a file
    (one line naming the file), e.g. stress that looks like kbar (:mod:`nnpes.data.sanity`)."""


def where(source: str | None, index: int | None) -> str:
    """Prefix naming the file and frame an error is about."""
    parts = [source or "<in memory>"]
    if index is not None:
        parts.append(f"frame {index}")
    return ": ".join(parts)
