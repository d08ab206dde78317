"""Search expressions of ``gradtx sweep``: ``--grid`` and ``--random`` values.

Grammar::

    --grid   PATH=V1,V2,...                 e.g. learning_rate=1e-4,3e-4,1e-3
    --random PATH=loguniform(LOW,HIGH)      log-uniform on [LOW, HIGH], 0 < LOW < HIGH
    --random PATH=uniform(LOW,HIGH)         uniform on [LOW, HIGH], LOW < HIGH
    --random PATH=choice(V1,V2,...)         one of the values, uniformly

``PATH`` is a dotted config path (``learning_rate``, ``transforms.0.b2``,
``learning_rate.init_value``). Values are numbers; nothing is evaluated.
"""

import dataclasses
import itertools
import math
import re

import numpy as np

from gradtx.checks import capped_repr

GRID_FORM = "PATH=V1,V2,... (e.g. learning_rate=1e-4,3e-4,1e-3)"
RANDOM_FORM = (
    "PATH=loguniform(LOW,HIGH), PATH=uniform(LOW,HIGH) or PATH=choice(V1,V2,...) "
    "(e.g. learning_rate=loguniform(1e-5,1e-1))"
)
DISTRIBUTIONS = ("loguniform", "uniform", "choice")
_PATH = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z0-9_]+)*$")
_CALL = re.compile(r"^([a-z_]+)\((.*)\)$")


@dataclasses.dataclass(frozen=True)
class GridAxis:
    """One ``--grid`` axis: a hyperparameter path and the values it takes."""

    path: str
    values: tuple[float, ...]


@dataclasses.dataclass(frozen=True)
class RandomAxis:
    """One ``--random`` axis: a path and the distribution it is drawn from."""

    path: str
    distribution: str
    arguments: tuple[float, ...]

    def sample(self, rng: np.random.Generator, count: int) -> list[float]:
        """Draws ``count`` values with ``rng``."""
        if self.distribution == "loguniform":
            low, high = self.arguments
            return [float(v) for v in np.exp(rng.uniform(math.log(low), math.log(high), count))]
        if self.distribution == "uniform":
            low, high = self.arguments
            return [float(v) for v in rng.uniform(low, high, count)]
        return [float(self.arguments[i]) for i in rng.integers(0, len(self.arguments), count)]


def _number(text: str, expression: str, form: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise ValueError(
            f"{capped_repr(expression)}: {capped_repr(text.strip())} is not a number; "
            f"expected {form}"
        ) from None
    if not math.isfinite(value):
        raise ValueError(
            f"{capped_repr(expression)}: {capped_repr(text.strip())} is not finite; expected {form}"
        )
    return value


def _split_path(expression: str, form: str) -> tuple[str, str]:
    path, separator, rest = expression.partition("=")
    path = path.strip()
    if not separator or not rest.strip():
        raise ValueError(f"{capped_repr(expression)} is not of the form {form}")
    if not _PATH.match(path):
        raise ValueError(
            f"{capped_repr(expression)}: {capped_repr(path)} is not a dotted hyperparameter "
            f"path; expected {form}"
        )
    return path, rest.strip()


def parse_grid(expression: str) -> GridAxis:
    """Parses ``PATH=V1,V2,...``.

    Args:
      expression: the text after ``--grid``.

    Returns:
      The axis.

    Raises:
      ValueError: naming the expression and the accepted form.
    """
    path, rest = _split_path(expression, GRID_FORM)
    values = tuple(_number(part, expression, GRID_FORM) for part in rest.split(","))
    if len(set(values)) != len(values):
        raise ValueError(f"{capped_repr(expression)}: repeated values; expected {GRID_FORM}")
    return GridAxis(path, values)


def parse_random(expression: str) -> RandomAxis:
    """Parses ``PATH=loguniform(LOW,HIGH)`` and the other distributions.

    Args:
      expression: the text after ``--random``.

    Returns:
      The axis.

    Raises:
      ValueError: naming the expression and the accepted forms.
    """
    path, rest = _split_path(expression, RANDOM_FORM)
    call = _CALL.match(rest)
    if not call or call.group(1) not in DISTRIBUTIONS:
        raise ValueError(
            f"{capped_repr(expression)}: expected one of {', '.join(DISTRIBUTIONS)}: {RANDOM_FORM}"
        )
    name = call.group(1)
    arguments = tuple(_number(part, expression, RANDOM_FORM) for part in call.group(2).split(","))
    if name in ("loguniform", "uniform"):
        if len(arguments) != 2 or not arguments[0] < arguments[1]:
            raise ValueError(f"{capped_repr(expression)}: {name} takes LOW,HIGH with LOW < HIGH")
        if name == "loguniform" and arguments[0] <= 0:
            raise ValueError(f"{capped_repr(expression)}: loguniform needs 0 < LOW < HIGH")
    return RandomAxis(path, name, arguments)


def grid_trials(axes: list[GridAxis]) -> list[dict[str, float]]:
    """Every combination of the grid axes, as ``{path: value}`` dicts."""
    paths = [axis.path for axis in axes]
    if len(set(paths)) != len(paths):
        raise ValueError(f"a path appears in more than one --grid: {capped_repr(paths)}")
    return [dict(zip(paths, combo)) for combo in itertools.product(*(a.values for a in axes))]


def random_trials(axes: list[RandomAxis], trials: int, seed: int = 0) -> list[dict[str, float]]:
    """``trials`` random draws of every axis, as ``{path: value}`` dicts."""
    if trials < 1:
        raise ValueError(f"--trials must be >= 1, got {trials}")
    rng = np.random.default_rng(seed)
    columns = {axis.path: axis.sample(rng, trials) for axis in axes}
    return [{path: values[i] for path, values in columns.items()} for i in range(trials)]
