"""``ir3de.errors.require``: the one lazy import of an optional dependency."""

from __future__ import annotations

import sys

import pytest

from ir3de.errors import Ir3deError, MissingDependencyError, require


def test_require_returns_the_module():
    import json.decoder

    assert require("json.decoder", "reading JSON", "nothing") is json.decoder


def test_require_names_purpose_module_and_command(monkeypatch):
    monkeypatch.setitem(sys.modules, "ir3de_test_absent", None)  # import of it raises ImportError
    with pytest.raises(MissingDependencyError) as info:
        require("ir3de_test_absent.sub", "the demo feature", "pip install 'ir3de[demo]'")
    message = str(info.value)
    assert message.startswith("the demo feature needs ir3de_test_absent.sub, which is not installed (")
    assert message.endswith("install it with: pip install 'ir3de[demo]'")
    assert isinstance(info.value, ImportError) and isinstance(info.value, Ir3deError)
    assert isinstance(info.value.__cause__, ImportError)


def test_require_passes_a_missing_dependency_of_the_module_through(tmp_path, monkeypatch):
    """A module that itself says what to install keeps its own message (not wrapped twice)."""
    (tmp_path / "ir3de_test_guarded.py").write_text(
        "from ir3de.errors import MissingDependencyError\n"
        "raise MissingDependencyError('the guarded module needs X: pip install x')\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(MissingDependencyError, match=r"^the guarded module needs X: pip install x$"):
        require("ir3de_test_guarded", "the outer feature", "pip install outer")
