"""Conversation routing: does a chat stay with its expert on follow-ups and follow real topic switches?

Run: ``python -m benchmarks.conversations [--out benchmarks/results] [--img docs/img] [--quick]``

* Router: the library defaults fitted on the train side of the ``five`` suite (math, code,
  instructions, multilingual, medical). Every conversation below comes from the test side only.
* Synthetic conversations (seeded): 3–8 user turns in one to three segments, each segment on one
  domain; the first turn of a segment is a real test prompt of its domain, later turns are either
  another test prompt of that domain or a domain-neutral follow-up from ``benchmarks/data/
  follow_ups.txt`` (58 lines written for this benchmark). After every user turn comes an assistant
  turn; the public data has no replies for these prompts, so it stands in with another test text of
  the segment's domain (cut to 400 characters). A segment starts with a real topic switch.
* HealthBench: its real multi-turn conversations (user and assistant turns, 3–15 messages) whose last
  user turn is on the test side of the ``medical`` domain; the gold expert of every turn is medical.
* The test side (and the HealthBench conversations) is split in two halves: the defaults
  (half-life, margin, assistant weight) are chosen on the tuning half; the table reports the other.
* Methods, each routing every user turn with the conversation so far and, when sticky, the expert
  it chose at the previous turn: last-message routing, whole-conversation routing (the joined text
  of every non-system message as one prompt: what ``route_on="conversation"`` did), decayed turns
  without stickiness, and ``Router.route_conversation`` with the chosen defaults.
* Metrics: per-turn accuracy (a follow-up's gold expert is its segment's domain); bounce rate
  (expert changes between consecutive turns inside one segment, per such pair); switch latency (turns
  from a real switch until the router picks the new domain; a switch never followed inside its
  segment counts as the segment's length).
* Time: routing a 20-message conversation (10 user + 10 assistant turns) with
  ``route_conversation`` against routing its joined text as one prompt with ``route``.

Writes ``conversations.json`` and ``conversations.md`` under ``--out`` and the plot
``conversations.png`` under ``--img``.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import time
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np

from ir3de.routing.prompts import encode_prompts

ROOT = Path(__file__).resolve().parent
FOLLOW_UPS_FILE = ROOT / "data" / "follow_ups.txt"
REPLY_CHARS = 400
HALF_LIVES = (0.25, 0.5, 1.0, 2.0, 3.0)
MARGINS = (0.0, 0.1, 0.2, 0.3, 0.5, 0.7)
ASSISTANT_WEIGHTS = (0.0, 0.25, 0.5, 1.0)


def load_follow_ups(path: Path = FOLLOW_UPS_FILE) -> list[str]:
    """The domain-neutral follow-ups (comment lines start with ``#``)."""
    lines = path.read_text(encoding="utf-8").splitlines()
    return [line.strip() for line in lines if line.strip() and not line.startswith("#")]


@dataclass
class Conversation:
    """User turns with their gold domain and segment, and the assistant turn after each."""

    users: list[str]
    gold: list[str]
    segment: list[int]
    replies: list[str | None] = field(default_factory=list)
    system: str | None = None

    def messages(self, upto: int) -> list[tuple[str, str]]:
        """Messages up to and including user turn ``upto`` (its reply not yet given)."""
        out: list[tuple[str, str]] = [("system", self.system)] if self.system else []
        for i in range(upto + 1):
            out.append(("user", self.users[i]))
            if i < upto and self.replies and self.replies[i] is not None:
                out.append(("assistant", self.replies[i]))  # type: ignore[arg-type]
        return out


def _halves(texts: Sequence[str], key: str) -> tuple[list[str], list[str]]:
    """A seeded split of one domain's test texts: (tuning half, reported half)."""
    order = np.random.default_rng([7, zlib.crc32(key.encode())]).permutation(len(texts))
    half = len(texts) // 2
    return [texts[i] for i in order[:half]], [texts[i] for i in order[half:]]


def synthetic(
    tests: dict[str, list[str]], follow_ups: list[str], count: int, seed: int
) -> list[Conversation]:
    """``count`` seeded conversations of 3–8 user turns in 1–3 single-domain segments."""
    rng = np.random.default_rng(seed)
    domains = sorted(tests)
    out = []
    for _ in range(count):
        turns = int(rng.integers(3, 9))
        segments = int(rng.integers(1, min(3, turns - 1) + 1))
        cuts = sorted(rng.choice(np.arange(1, turns), size=segments - 1, replace=False).tolist())
        bounds = [0, *cuts, turns]
        users, gold, seg, replies = [], [], [], []
        domain = None
        for s in range(segments):
            domain = str(rng.choice([d for d in domains if d != domain]))
            pool = tests[domain]
            for t in range(bounds[s], bounds[s + 1]):
                first = t == bounds[s]
                if first or rng.random() >= 0.6:
                    users.append(pool[int(rng.integers(len(pool)))])
                else:
                    users.append(follow_ups[int(rng.integers(len(follow_ups)))])
                gold.append(domain)
                seg.append(s)
                replies.append(pool[int(rng.integers(len(pool)))][:REPLY_CHARS])
        out.append(Conversation(users, gold, seg, replies))
    return out


def healthbench(medical_test: set[str]) -> list[Conversation]:
    """HealthBench's multi-turn conversations whose last user turn is a test text of ``medical``."""
    from ir3de.data.datasets import _package_file, _source

    path = _package_file(_source("medical"))
    out = []
    for line in path.read_text(encoding="utf-8").split("\n"):
        if not line.strip():
            continue
        prompt = json.loads(line)["prompt"]
        if len(prompt) < 3 or (
            prompt[-1]["content"] not in medical_test and prompt[-1]["content"].strip() not in medical_test
        ):
            continue
        users, replies, system = [], [], None
        for message in prompt:
            if message["role"] == "system":
                system = message["content"]
            elif message["role"] == "user":
                users.append(message["content"])
                replies.append(None)
            else:
                replies[-1] = message["content"]
        out.append(Conversation(users, ["medical"] * len(users), [0] * len(users), replies, system))
    return out


# ---------------------------------------------------------------------------------------------- methods


def route_turns(router: Any, conv: Conversation, method: dict[str, Any]) -> list[str]:
    """The expert of every user turn of ``conv`` under ``method``."""
    out: list[str] = []
    previous = None
    for t in range(len(conv.users)):
        messages = conv.messages(t)
        if method["kind"] == "whole":
            text = "\n".join(c for r, c in messages if r != "system")
            expert = router.route(text).expert
        else:
            d = router.route_conversation(
                messages,
                previous_expert=previous if method.get("sticky") else None,
                settings=method["settings"],
            )
            expert = d.expert
        out.append(expert)
        previous = expert
    return out


def metrics(convs: list[Conversation], routes: list[list[str]]) -> dict[str, Any]:
    correct = turns = bounces = pairs = 0
    latencies: list[int] = []
    followed = switches = 0
    for conv, pred in zip(convs, routes):
        n = len(pred)
        correct += sum(p == g for p, g in zip(pred, conv.gold))
        turns += n
        for t in range(1, n):
            if conv.segment[t] == conv.segment[t - 1]:
                pairs += 1
                bounces += pred[t] != pred[t - 1]
            else:  # a real switch at turn t
                switches += 1
                end = t
                while end < n and conv.segment[end] == conv.segment[t]:
                    end += 1
                hit = next((u for u in range(t, end) if pred[u] == conv.gold[t]), None)
                latencies.append((hit - t) if hit is not None else end - t)
                followed += hit is not None
    return {
        "turns": turns,
        "accuracy": correct / turns if turns else float("nan"),
        "bounce_rate": bounces / pairs if pairs else float("nan"),
        "within_segment_pairs": pairs,
        "switches": switches,
        "median_switch_latency": float(np.median(latencies)) if latencies else float("nan"),
        "mean_switch_latency": float(np.mean(latencies)) if latencies else float("nan"),
        "switches_followed": followed / switches if switches else float("nan"),
    }


def evaluate(router: Any, convs: list[Conversation], method: dict[str, Any]) -> tuple[dict[str, Any], list]:
    routes = [route_turns(router, c, method) for c in convs]
    return metrics(convs, routes), routes


def tune(router: Any, synth: list[Conversation], health: list[Conversation]) -> tuple[dict[str, float], list]:
    """Grid search on the tuning half: best mean of (synthetic, HealthBench) per-turn accuracy among
    settings whose median switch latency is at most 1 turn; ties go to the lower bounce rate."""
    return _grid(router, synth, health)


def _grid(
    router: Any, synth: list[Conversation], health: list[Conversation]
) -> tuple[dict[str, float], list]:
    from ir3de.routing.conversation import ConversationSettings

    rows = []
    for half_life, margin, assistant_weight in itertools.product(HALF_LIVES, MARGINS, ASSISTANT_WEIGHTS):
        settings = ConversationSettings(half_life=half_life, margin=margin, assistant_weight=assistant_weight)
        method = {"kind": "conversation", "sticky": True, "settings": settings}
        s, _ = evaluate(router, synth, method)
        h, _ = evaluate(router, health, method)
        print(
            f"tune half_life={half_life} margin={margin} assistant_weight={assistant_weight}: "
            f"acc {s['accuracy']:.3f}/{h['accuracy']:.3f} bounce {s['bounce_rate']:.3f}",
            flush=True,
        )
        rows.append(
            {
                "half_life": half_life,
                "margin": margin,
                "assistant_weight": assistant_weight,
                "synthetic_accuracy": s["accuracy"],
                "healthbench_accuracy": h["accuracy"],
                "bounce_rate": s["bounce_rate"],
                "median_switch_latency": s["median_switch_latency"],
                "objective": (s["accuracy"] + h["accuracy"]) / 2,
            }
        )
    ok = [r for r in rows if r["median_switch_latency"] <= 1] or rows
    best = max(ok, key=lambda r: (round(r["objective"], 4), -r["bounce_rate"]))
    return {k: best[k] for k in ("half_life", "margin", "assistant_weight")}, rows


def time_long_conversation(
    router: Any, tests: dict[str, list[str]], follow_ups: list[str], repeats: int
) -> dict:
    """Best-of-repeats time to route a 20-message conversation, against its joined text as one prompt."""
    rng = np.random.default_rng(3)
    domains = sorted(tests)
    convs = []
    for _ in range(20):
        messages = []
        for i in range(10):
            domain = domains[int(rng.integers(len(domains)))]
            user = (
                follow_ups[int(rng.integers(len(follow_ups)))]
                if i % 2
                else tests[domain][int(rng.integers(len(tests[domain])))]
            )
            messages += [
                ("user", user),
                ("assistant", tests[domain][int(rng.integers(len(tests[domain])))][:REPLY_CHARS]),
            ]
        convs.append(messages)
    joined = ["\n".join(c for _, c in m) for m in convs]

    def best_time(fn: Any, items: list[Any]) -> float:
        """The fastest of ``repeats`` passes (the machine is shared: the minimum is the least disturbed)."""
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            for item in items:
                fn(item)
            times.append((time.perf_counter() - start) / len(items))
        return float(np.min(times))

    for m, j in zip(convs, joined):  # warm up
        router.route_conversation(m, previous_expert="math")
        router.route(j)
    conv_s = best_time(lambda m: router.route_conversation(m, previous_expert="math"), convs)
    prompt_s = best_time(router.route, joined)
    tokens_conv = int(
        encode_prompts(router.state.tokenizer, [c for m in convs for _, c in m], router.config.max_tokens)[
            1
        ].sum()
    ) / len(convs)
    tokens_prompt = int(
        encode_prompts(router.state.tokenizer, joined, router.config.max_tokens)[1].sum()
    ) / len(convs)
    return {
        "messages": 20,
        "conversation_us": conv_s * 1e6,
        "one_prompt_us": prompt_s * 1e6,
        "ratio": conv_s / prompt_s,
        "tokens_per_conversation": tokens_conv,
        "tokens_per_prompt_after_cap": tokens_prompt,
    }


# ---------------------------------------------------------------------------------------------- output


def plot(router: Any, conv: Conversation, methods: dict[str, dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(router.experts)
    y = {n: i for i, n in enumerate(names)}
    x = np.arange(1, len(conv.users) + 1)
    fig, ax = plt.subplots(figsize=(8, 3.6))
    ax.step(
        x,
        [y[g] for g in conv.gold],
        where="mid",
        color="black",
        lw=6,
        alpha=0.15,
        label="gold (segment domain)",
    )
    styles = {
        "last message": ("o", -0.15),
        "whole conversation": ("s", 0.0),
        "route_conversation": ("D", 0.15),
    }
    for label, (marker, dy) in styles.items():
        pred = route_turns(router, conv, methods[label])
        ax.plot(x, [y[p] + dy for p in pred], marker=marker, lw=1, label=label)
    for t in range(1, len(conv.users)):
        if conv.segment[t] != conv.segment[t - 1]:
            ax.axvline(t + 0.5, color="grey", ls=":", lw=1)
    ax.set_yticks(range(len(names)), names)
    ax.set_xticks(x, [f"{i}\n{'follow-up' if u in FOLLOW_SET else 'topic'}" for i, u in zip(x, conv.users)])
    ax.set_xlabel("user turn")
    ax.set_title("Expert chosen at each user turn of one test conversation")
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.32), ncol=4, fontsize=8, frameon=False)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


FOLLOW_SET: set[str] = set()


def markdown(result: dict[str, Any]) -> str:
    lines = [
        "| method | synthetic accuracy | bounce rate | median switch latency (turns) | switches followed "
        "| HealthBench accuracy | HealthBench bounce rate |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, row in result["methods"].items():
        s, h = row["synthetic"], row["healthbench"]
        lines.append(
            f"| {name} | {s['accuracy']:.3f} | {s['bounce_rate']:.3f} | {s['median_switch_latency']:.1f} "
            f"(mean {s['mean_switch_latency']:.2f}) | {s['switches_followed']:.1%} | {h['accuracy']:.3f} "
            f"| {h['bounce_rate']:.3f} |"
        )
    t = result["timing"]
    d = result["defaults"]
    lines += [
        "",
        f"Defaults chosen on the tuning half: half_life={d['half_life']}, margin={d['margin']}, "
        f"assistant_weight={d['assistant_weight']}.",
        f"Reported half: {result['sizes']['synthetic_conversations']} synthetic conversations "
        f"({result['methods']['last message']['synthetic']['turns']} user turns, "
        f"{result['methods']['last message']['synthetic']['switches']} switches), "
        f"{result['sizes']['healthbench_conversations']} HealthBench conversations "
        f"({result['methods']['last message']['healthbench']['turns']} user turns).",
        f"20-message conversation: {t['conversation_us']:.0f} µs with route_conversation vs "
        f"{t['one_prompt_us']:.0f} µs routing its joined text as one prompt (ratio {t['ratio']:.2f}; "
        f"{t['tokens_per_conversation']:.0f} tokens in the messages, {t['tokens_per_prompt_after_cap']:.0f} "
        "in the prompt after the 1024-token cap).",
    ]
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "results")
    parser.add_argument("--img", type=Path, default=ROOT.parent / "docs" / "img")
    parser.add_argument(
        "--quick", action="store_true", help="small corpus and few conversations (a smoke test)"
    )
    parser.add_argument("--conversations", type=int, default=300, help="synthetic conversations per half")
    args = parser.parse_args(argv)

    from ir3de import Router
    from ir3de.data.datasets import load_suite
    from ir3de.routing.conversation import ConversationSettings

    quick = args.quick
    suite = load_suite("five", seed=0, max_per_side=80 if quick else 1000)
    count = 20 if quick else args.conversations
    follow_ups = load_follow_ups()
    FOLLOW_SET.update(follow_ups)
    start = time.perf_counter()
    router = Router(device="cpu", progress=False).fit(suite.train)
    fit_s = time.perf_counter() - start
    tune_tests, report_tests = {}, {}
    for domain, texts in suite.test.items():
        tune_tests[domain], report_tests[domain] = _halves(texts, domain)
    health_tune = healthbench(set(tune_tests["medical"]))
    health_report = healthbench(set(report_tests["medical"]))
    synth_tune = synthetic(tune_tests, follow_ups, count, seed=1)
    synth_report = synthetic(report_tests, follow_ups, count, seed=2)

    if quick:
        defaults = {"half_life": 2.0, "margin": 0.2, "assistant_weight": 0.5}
        grid: list = []
    else:
        defaults, grid = tune(router, synth_tune, health_tune)
    chosen = ConversationSettings(**defaults)
    methods = {
        "last message": {
            "kind": "conversation",
            "sticky": False,
            "settings": ConversationSettings.last_message(),
        },
        "whole conversation": {"kind": "whole"},
        "decayed turns, no stickiness": {
            "kind": "conversation",
            "sticky": False,
            "settings": ConversationSettings(**{**defaults, "margin": 0.0}),
        },
        "route_conversation": {"kind": "conversation", "sticky": True, "settings": chosen},
    }
    result: dict[str, Any] = {
        "router": "library defaults fitted on the train side of five (seed 0)",
        "fit_seconds": fit_s,
        "sizes": {
            "synthetic_conversations": len(synth_report),
            "healthbench_conversations": len(health_report),
            "tuning_synthetic_conversations": len(synth_tune),
            "tuning_healthbench_conversations": len(health_tune),
            "follow_ups": len(follow_ups),
        },
        "defaults": defaults,
        "methods": {},
    }
    for name, method in methods.items():
        s, _ = evaluate(router, synth_report, method)
        h, _ = evaluate(router, health_report, method)
        result["methods"][name] = {"synthetic": s, "healthbench": h}
    result["timing"] = time_long_conversation(router, report_tests, follow_ups, repeats=3 if quick else 15)
    last = result["methods"]["last message"]["synthetic"]
    whole = result["methods"]["whole conversation"]["synthetic"]
    ours = result["methods"]["route_conversation"]["synthetic"]
    result["targets"] = {
        "bounce_rate_at_most_a_fifth_of_last_message": ours["bounce_rate"] <= last["bounce_rate"] / 5,
        "accuracy_at_least_the_better_baseline": ours["accuracy"] >= max(last["accuracy"], whole["accuracy"]),
        "median_switch_latency_at_most_1": ours["median_switch_latency"] <= 1,
        "twenty_messages_within_2x_one_prompt": result["timing"]["ratio"] <= 2,
    }
    result["tuning_grid"] = grid
    # the plot: the first reported conversation with three segments and a follow-up
    shown = next(
        (c for c in synth_report if len(set(c.segment)) == 3 and any(u in FOLLOW_SET for u in c.users)),
        synth_report[0],
    )
    plot(router, shown, methods, args.img / "conversations.png")
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "conversations.json").write_text(json.dumps(result, indent=2, default=float) + "\n")
    (args.out / "conversations.md").write_text(markdown(result))
    print(markdown(result))
    print(json.dumps(result["targets"], indent=2))
    return result


if __name__ == "__main__":
    main()
