"""The model-card templates ship in the wheel and render every section from a config (no model)."""

from __future__ import annotations

import ast
import fnmatch
from pathlib import Path

from ir3de.artifacts.model_card import TEMPLATES, render_model_card, render_stat_pack_card

ROOT = Path(__file__).resolve().parents[2]


def test_every_template_is_package_data() -> None:
    section = (ROOT / "pyproject.toml").read_text().split("[tool.setuptools.package-data]")[1]
    line = next(x for x in section.splitlines() if x.startswith("ir3de = "))  # no tomllib on Python 3.10
    patterns = ast.literal_eval(line.split("=", 1)[1].strip())
    package = ROOT / "core" / "ir3de"
    templates = sorted(p.relative_to(package).as_posix() for p in TEMPLATES.iterdir())
    assert templates == ["artifacts/templates/router_card.md", "artifacts/templates/stat_pack_card.md"]
    missing = [t for t in templates if not any(fnmatch.fnmatch(t, p) for p in patterns)]
    assert not missing, f"not shipped in the wheel (add to [tool.setuptools.package-data]): {missing}"


def test_router_card_sections_come_from_the_config() -> None:
    config = {
        "experts": [
            {
                "name": "math",
                "description": "a | b",
                "num_texts": 1200,
                "num_tokens": 5,
                "num_distinct_tokens": 3,
            },
            {"name": "code", "num_texts": 2, "num_tokens": 7, "num_distinct_tokens": 1},
        ],
        "settings": {"lam": 0.01, "selector": "topk", "k": 10, "fallback": "math", "threshold": 0.5},
        "evaluation": {
            "accuracy": 0.75,
            "recall[code]": 0.5,
            "seed": 3,
            "lam_sweep": [{"lam": 0.001, "accuracy": 0.5, "macro_recall": 0.25}],
        },
    }
    card = render_model_card(config, repo_id="org/r")
    assert "| math | a \\| b | 1,200 | 5 | 3 |" in card
    assert "Fitted on 1,202 texts (12 tokens) in all." in card
    assert "- fallback = math below confidence 0.5" in card
    assert "| routing accuracy | 0.7500 |\n" in card and "| code | 0.5000 |" in card and "- seed: 3" in card
    assert (
        "λ sweep:\n\n| λ | accuracy | macro recall |\n|---:|---:|---:|\n| 0.001 | 0.5000 | 0.2500 |" in card
    )
    assert '"math": math_llm,' in card and 'Router.from_pretrained("org/r")' in card
    assert "Not evaluated" in render_model_card({**config, "evaluation": None})


def test_stat_pack_card_names_the_expert_and_the_repo() -> None:
    card = render_stat_pack_card({"expert": {"name": "math", "num_texts": 3, "num_tokens": 40}}, "org/p")
    assert "# org/p: expert `math`" in card and "ir3de merge org/p org/other-pack" in card
    assert "ir3de-stat-pack" in card.split("---")[1]
