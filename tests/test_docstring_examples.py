"""Every ``>>>`` example in the docstrings of ``ir3de`` and ``ir3de_integrations`` runs as written, the
way ``pytest --doctest-modules`` runs it (the module's namespace, ``ELLIPSIS``).

Illustrative examples that need a file, a server or an LLM mark each of their lines
``# doctest: +SKIP``; a directive covers only the line it is on, so an example that marks only its
first line would run the rest and fail here. ``__main__`` modules are not imported (they would run).
"""

from __future__ import annotations

import doctest
import importlib
import os
import pkgutil

import pytest

# importing ir3de_integrations.litellm imports litellm, which downloads its model-price map unless told
# to use the bundled one: the suite runs offline
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

PACKAGES = ("ir3de", "ir3de_integrations")


def _modules() -> list[str]:
    names = []
    for package in PACKAGES:
        root = importlib.import_module(package)
        names.append(package)
        for info in pkgutil.walk_packages(root.__path__, prefix=f"{package}.", onerror=lambda _: None):
            if info.name.rsplit(".", 1)[-1] != "__main__":
                names.append(info.name)
    return sorted(names)


@pytest.mark.parametrize("name", _modules())
def test_docstring_examples_run(name: str) -> None:
    module = importlib.import_module(name)
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
    failures: list[str] = []
    for test in doctest.DocTestFinder().find(module, name):
        runner.run(test, out=failures.append)  # written to only for a failing example
    result = runner.summarize(verbose=False)
    assert not result.failed, f"{result.failed} of {result.attempted} examples in {name} fail:\n" + "".join(
        failures
    )
