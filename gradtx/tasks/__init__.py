"""Built-in tasks for ``gradtx compare``, ``sweep`` and ``tune-lr``.

Add your own by building a :class:`~gradtx.tasks.base.Task` and passing it to
the functions in :mod:`gradtx.experiments`.
"""

from collections.abc import Callable

from gradtx.tasks.base import Task


def _digits() -> Task:
    from gradtx.tasks import digits

    return digits.make_task()


def _text() -> Task:
    from gradtx.tasks import text

    return text.make_task()


def _cartpole() -> Task:
    from gradtx.tasks import cartpole

    return cartpole.make_task()


TASKS: dict[str, Callable[[], Task]] = {"digits": _digits, "text": _text, "cartpole": _cartpole}


def get_task(name: str) -> Task:
    """Builds the built-in task called ``name``.

    Raises:
      ValueError: listing the task names if ``name`` is not one.
    """
    if name not in TASKS:
        raise ValueError(f"unknown task {name!r}; choose from: {', '.join(TASKS)}")
    return TASKS[name]()
