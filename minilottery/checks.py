"""The rules every setting obeys, in one place: Config, the optimizers and the
learning-rate schedules all check their numbers with these functions.

Each check takes the value and the name to report it under, returns the value
in its plain Python form (an int for an integer, a float for a real number)
and otherwise raises ValueError with one line naming the setting, what was
expected and what came instead:

    integer(value, name, low=1)      an int (never a bool, never 3.0) in [low, INT64_MAX]
    seed(value, name)                an integer >= 0: what numpy.random.SeedSequence accepts
    real(value, name, low, high)     a finite float (never a bool, never NaN or inf)
    learning_rate(value, name)       a real > 0 that stays finite and > 0 in float32
    choice(value, name, options)     one of the options (strings, and None if listed)
    boolean(value, name)             True or False (never 0 or 1)

Two details:

* Integers stop at 2**63 - 1, the largest int64: iteration counts and seeds
  end up in NumPy arrays and CSV files, which hold int64.
* ``float32=True``: the optimizers hand their scalars to the kernels as
  float32 (see minilottery.optim), where 1e39 becomes inf, 1e-46 becomes 0 and
  0.99999999999 becomes 1.0. The range is then checked on the float32 value
  too, so ``betas[1] = 0.99999999999`` is refused (beta2 = 1 makes Adam's bias
  correction 1 - beta2^t zero) instead of turning the weights into NaN.
"""

from __future__ import annotations

import math
import numbers

import numpy as np

__all__ = ["INT64_MAX", "integer", "seed", "real", "learning_rate", "choice", "boolean"]

INT64_MAX = 2**63 - 1


def integer(value, name, *, low=0, high=INT64_MAX):
    """An int in [low, high]; a bool, a float (even 3.0) or a string is refused."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral):
        raise ValueError(f"{name} must be an integer, got {value!r}")
    value = int(value)
    if value < low:
        raise ValueError(f"{name} must be at least {low}, got {value}")
    if value > high:
        raise ValueError(f"{name} must be at most {high}, got {value}")
    return value


def seed(value, name):
    """A seed: an integer >= 0, as numpy.random.SeedSequence needs (the lottery
    derives every stream from SeedSequence([seed, trial, level, ...]))."""
    if isinstance(value, numbers.Integral) and not isinstance(value, (bool, np.bool_)) and value < 0:
        raise ValueError(f"{name} must be an integer >= 0 (numpy.random.SeedSequence takes no "
                         f"negative seeds), got {value}")
    return integer(value, name, low=0)


def real(value, name, *, low=None, high=None, low_open=False, high_open=False, float32=False):
    """A finite number in the interval from low to high (closed unless *_open), as a float.

    Ints are accepted (lr 1 is lr 1.0); bools, strings, NaN and inf are not.
    With float32=True the value must also lie in the interval once rounded to
    float32, the precision the optimizer kernels compute in.
    """
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise ValueError(f"{name} must be a number, got {value!r}")
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    interval = _interval(low, high, low_open, high_open)
    if not _inside(value, low, high, low_open, high_open):
        raise ValueError(f"{name} must be {interval}, got {value!r}")
    if float32:
        rounded = float(np.float32(value)) if abs(value) <= float(np.finfo(np.float32).max) else math.inf
        if not math.isfinite(rounded) or not _inside(rounded, low, high, low_open, high_open):
            raise ValueError(f"{name} must be {interval} and finite in float32 (the optimizers' "
                             f"precision), got {value!r}, which float32 rounds to {rounded!r}")
    return value


def learning_rate(value, name="lr"):
    """A learning rate: a finite number > 0, also in float32. (A schedule may give 0
    at some iteration, e.g. warmup at t = 0, but its base rate may not be 0.)"""
    return real(value, name, low=0.0, low_open=True, float32=True)


def choice(value, name, options):
    """One of ``options`` (a collection of strings, or of None and strings)."""
    if not isinstance(value, (str, type(None))) or value not in options:
        shown = ", ".join(option for option in options if option is not None)
        shown += " (or None)" if None in options else ""
        raise ValueError(f"unknown {name} {value!r}; choose from {shown}")
    return value


def boolean(value, name):
    """True or False; 0, 1 and "true" are refused."""
    if not isinstance(value, (bool, np.bool_)):
        raise ValueError(f"{name} must be true or false, got {value!r}")
    return bool(value)


def _inside(value, low, high, low_open, high_open):
    above = low is None or (value > low if low_open else value >= low)
    below = high is None or (value < high if high_open else value <= high)
    return above and below


def _interval(low, high, low_open, high_open):
    """The interval in words: '> 0', '>= 0', 'in [0, 1)'."""
    if low is not None and high is not None:
        return f"in {'(' if low_open else '['}{_number(low)}, {_number(high)}{')' if high_open else ']'}"
    if low is not None:
        return f"{'>' if low_open else '>='} {_number(low)}"
    if high is not None:
        return f"{'<' if high_open else '<='} {_number(high)}"
    return "a number"


def _number(bound):
    return str(int(bound)) if float(bound).is_integer() else repr(bound)
