"""``fsar.registry.Registry`` and the automatic discovery of method modules."""

from __future__ import annotations

import sys

import pytest

import fsar.methods
from fsar.registry import Registry


def test_register_build_names_and_errors():
    things: Registry[object] = Registry("thing")

    @things.register("b")
    def make_b(**kwargs):
        return ("b", kwargs)

    @things.register("a")
    class A:
        def __init__(self, size=1):
            self.size = size

    assert things.names() == ["a", "b"] and "a" in things and "c" not in things
    assert things.build("b", x=1) == ("b", {"x": 1})
    assert things.build("a", size=3).size == 3 and things.get("a") is A
    with pytest.raises(ValueError, match="thing 'a' is already registered"):
        things.register("a")(A)
    with pytest.raises(ValueError, match="unknown thing 'c'; available: a, b"):
        things.get("c")
    with pytest.raises(ValueError, match="non-empty string"):
        things.register("")
    assert "(none)" in str(pytest.raises(ValueError, Registry("empty").get, "x").value)


@pytest.fixture
def extra_method_package(tmp_path, monkeypatch):
    """A folder added to ``fsar.methods``' package path, and a fresh discovery afterwards."""
    fsar.list_methods()  # the package's own modules are imported (and stay registered) first
    monkeypatch.setattr(fsar.methods, "__path__", [*fsar.methods.__path__, str(tmp_path)])
    monkeypatch.setattr(fsar.methods, "_loaded", False)
    names_before = set(fsar.methods.METHODS.names())
    yield tmp_path
    for name in set(fsar.methods.METHODS.names()) - names_before:
        del fsar.methods.METHODS._factories[name]  # noqa: SLF001 - undo the test's registration
    for module in [m for m in sys.modules if m.startswith("fsar.methods.extra_")]:
        del sys.modules[module]


def test_a_new_method_module_is_discovered_without_touching_anything(extra_method_package):
    (extra_method_package / "extra_toy.py").write_text(
        "from fsar.methods import METHODS\n"
        "from fsar.methods.baselines import FrozenMetricBaseline\n"
        "@METHODS.register('extra-toy')\n"
        "class ExtraToy(FrozenMetricBaseline):\n"
        "    name = 'proto'\n"
    )
    assert "extra-toy" in fsar.list_methods()
    assert fsar.methods.method_class("extra-toy").__module__ == "fsar.methods.extra_toy"


def test_a_method_module_with_a_missing_dependency_is_an_error(extra_method_package):
    (extra_method_package / "extra_broken.py").write_text("import surely_not_an_installed_package\n")
    with pytest.raises(ModuleNotFoundError, match="surely_not_an_installed_package"):
        fsar.list_methods()


def test_private_modules_are_not_imported(extra_method_package):
    (extra_method_package / "_extra_private.py").write_text("raise RuntimeError('imported')\n")
    assert "ma-fsar" in fsar.list_methods()
