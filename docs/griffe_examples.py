"""A griffe extension for the API reference: read ``Example:`` sections as doctest examples.

The code base writes ``Example:`` (singular) above its ``>>>`` lines; griffe's Google-style parser only
knows ``Examples:``, and renders the singular as a prose admonition, where ``d["a"]["b"]`` reads as a
Markdown reference link. Renaming the heading in the parsed docstring (never in the source) makes those
lines code blocks. Enabled in mkdocs.yml (``extensions`` of the python handler).

Example:
    >>> import re
    >>> re.sub(r"(?m)^(\\s*)Example:$", r"\\1Examples:", "Args:\\n    x: 1\\nExample:\\n    >>> f()")
    'Args:\\n    x: 1\\nExamples:\\n    >>> f()'
"""

from __future__ import annotations

import re
from typing import Any

import griffe

_SINGULAR = re.compile(r"(?m)^(\s*)Example:$")


class ExampleSections(griffe.Extension):
    """Rename ``Example:`` to ``Examples:`` in every docstring griffe loads."""

    def on_instance(self, *, obj: griffe.Object, **kwargs: Any) -> None:
        if obj.docstring is not None:
            obj.docstring.value = _SINGULAR.sub(r"\1Examples:", obj.docstring.value)
