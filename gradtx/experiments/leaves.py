"""Reading and replacing an optimizer's hyperparameter leaves by dotted path.

Paths are the config paths: ``learning_rate``, ``learning_rate.init_value``,
``transforms.1.b2``. Replacing a leaf rebuilds the pytree without running
validation, so the new value may be a tracer (e.g. under ``jax.grad``).
"""

from typing import Any

import jax

from gradtx.tree_paths import path_string


def leaf_paths(tx: Any) -> list[str]:
    """The dotted paths of every numeric hyperparameter leaf of ``tx``."""
    keyed, _ = jax.tree_util.tree_flatten_with_path(tx)
    return [path_string(path, ".") for path, _ in keyed]


def _index(tx: Any, path: str) -> int:
    paths = leaf_paths(tx)
    if path not in paths:
        raise ValueError(
            f"{type(tx).__name__} has no numeric hyperparameter {path!r}; "
            f"its hyperparameters are: {', '.join(paths) or '(none)'}"
        )
    return paths.index(path)


def get_leaf(tx: Any, path: str) -> Any:
    """The value of the hyperparameter at ``path``.

    Raises:
      ValueError: naming the valid paths if ``path`` is not one.
    """
    return jax.tree.leaves(tx)[_index(tx, path)]


def set_leaf(tx: Any, path: str, value: Any) -> Any:
    """A copy of ``tx`` with the hyperparameter at ``path`` set to ``value``.

    Raises:
      ValueError: naming the valid paths if ``path`` is not one.
    """
    index = _index(tx, path)
    leaves, treedef = jax.tree.flatten(tx)
    leaves[index] = value
    return jax.tree.unflatten(treedef, leaves)
