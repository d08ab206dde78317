"""The public API: every name exported, documented and typed."""

import inspect
import pathlib

import pytest

import gradtx


def test_all_is_sorted_and_complete():
    assert list(gradtx.__all__) == sorted(gradtx.__all__)
    for name in gradtx.__all__:
        assert hasattr(gradtx, name), name
    public_values = {
        name
        for name, obj in vars(gradtx).items()
        if inspect.isclass(obj) and issubclass(obj, gradtx.Value) and not name.startswith("_")
    }
    assert public_values <= set(gradtx.__all__)


@pytest.mark.parametrize("name", sorted(gradtx.__all__))
def test_every_public_name_has_a_docstring(name):
    obj = getattr(gradtx, name)
    doc = inspect.getdoc(obj)
    assert doc and len(doc.splitlines()[0]) > 10, f"{name} needs a summary line"


def _has_arguments(cls) -> bool:
    fields = getattr(cls, "__dataclass_fields__", {})
    return any(field.init for field in fields.values())


@pytest.mark.parametrize(
    "name",
    sorted(
        n
        for n in gradtx.__all__
        if inspect.isclass(getattr(gradtx, n))
        and issubclass(getattr(gradtx, n), gradtx.Value)
        and _has_arguments(getattr(gradtx, n))
    ),
)
def test_value_classes_document_their_arguments(name):
    cls = getattr(gradtx, name)
    doc = inspect.getdoc(cls)
    assert "Args:" in doc, f"{name} docstring lacks an Args: section"
    for field in cls.__dataclass_fields__.values():
        if field.init:
            assert f"{field.name}:" in doc or f"*{field.name}:" in doc, (
                f"{name} does not document argument {field.name}"
            )


@pytest.mark.parametrize(
    "name",
    sorted(n for n in gradtx.__all__ if inspect.isfunction(getattr(gradtx, n))),
)
def test_functions_are_typed_and_documented(name):
    function = getattr(gradtx, name)
    signature = inspect.signature(function)
    assert signature.return_annotation is not inspect.Signature.empty, name
    for parameter in signature.parameters.values():
        assert parameter.annotation is not inspect.Parameter.empty, (name, parameter.name)
    doc = inspect.getdoc(function)
    if signature.parameters:
        assert "Args:" in doc, name
    assert "Returns:" in doc, name


def _readme_box() -> str:
    readme = (pathlib.Path(__file__).parent.parent / "README.md").read_text()
    start = readme.index("## What is in the box")
    return readme[start : readme.index("\n## ", start + 1)]


# Names of the contract itself and of Python types, not things a user looks up.
_NOT_LISTED = {"Alias", "Schedule", "ScheduleLike", "Transformation", "Value"}


@pytest.mark.parametrize("name", sorted(set(gradtx.__all__) - _NOT_LISTED))
def test_readme_lists_every_public_name(name):
    assert f"`{name}`" in _readme_box() or f"`{name}(" in _readme_box(), (
        f"README's 'What is in the box' does not list gradtx.{name}"
    )


def test_signatures_carry_real_annotations_not_strings():
    # Tools that inspect signatures (Flax, fiddle, optax.inject_hyperparams'
    # users) skip string annotations.
    for name in gradtx.__all__:
        obj = getattr(gradtx, name)
        if not callable(obj):
            continue
        try:
            signature = inspect.signature(obj)
        except (TypeError, ValueError):
            continue
        for parameter in signature.parameters.values():
            assert not isinstance(parameter.annotation, str), (name, parameter.name)


def test_contrib_holds_optax_contrib_names_as_the_top_level_objects():
    import optax.contrib

    assert list(gradtx.contrib.__all__) == sorted(gradtx.contrib.__all__)
    for name in gradtx.contrib.__all__:
        assert hasattr(optax.contrib, name), f"optax.contrib has no {name}"
        assert getattr(gradtx.contrib, name) is getattr(gradtx, name), name
    # Every optax.contrib name gradtx has at the top level is in gradtx.contrib too.
    shared = {n for n in dir(optax.contrib) if not n.startswith("_") and hasattr(gradtx, n)}
    assert shared == set(gradtx.contrib.__all__)
