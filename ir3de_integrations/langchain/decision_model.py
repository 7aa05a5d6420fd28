"""``Ir3deDecisionModel``: the router as a LangChain decision model (``BaseDecisionModel``).

LangChain's decision models answer typed questions about a state; ``ModelRouterMiddleware`` takes one
as its ``classifier`` to pick an agent's model. This one answers from the router's route table: no
LLM call, no tokens, a fraction of a millisecond. No routing math lives here; every answer is read
off :meth:`ir3de.Router.route` (text, one message) or :meth:`ir3de.Router.route_conversation` (a list
of messages).

How questions are answered:

* ``Choice``: its criteria keys must be expert names of the router. The answer's ``probabilities``
  are the decision's ``scores`` restricted to those labels and renormalised to sum to 1 (with every
  expert as a label they are the scores themselves); ``choice`` is the most probable label (ties go
  to the expert added first, as in the router); ``confidence`` is its probability. The router's
  ``fallback``/``threshold`` is not applied: a decision model returns the distribution and the caller
  picks its own threshold on ``confidence``.
* ``Noul``: a yes/no question about *one* expert, named by the question id (``{"math": Noul(...)}``)
  or, when the id is not an expert, by ``instructions`` being exactly an expert name. ``noul`` is that
  expert's score over all experts: the probability that the state belongs to it.
* ``Score`` and ``Box`` questions raise :class:`~ir3de.errors.InvalidInputError`.

A state with no countable token (``""``, only special tokens) raises
:class:`~ir3de.errors.EmptyPromptError` unless the router has a ``fallback``; then every label gets the
same probability.

Example:
    >>> from langchain_core.decisions import Choice                                   # doctest: +SKIP
    >>> model = Ir3deDecisionModel(router)  # doctest: +SKIP
    >>> answer = model.invoke({"state": "Solve 3x + 5 = 11", "questions": {  # doctest: +SKIP
    ...     "route": Choice(instructions="Which expert?", criteria={"math": "", "code": ""})}})
    >>> answer.choices["route"].choice, answer.usage["total_tokens"]  # doctest: +SKIP
    ('math', 0)
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from langchain_core.decisions import (
    BaseDecisionModel,
    Choice,
    ChoiceAnswer,
    ClassifierResponse,
    Noul,
    NoulAnswer,
    Question,
    State,
)
from langchain_core.messages import BaseMessage, convert_to_messages
from pydantic import ConfigDict, Field, PrivateAttr

from ir3de.errors import InvalidInputError, UnknownExpertError
from ir3de.serving.registry import fitted_router

from .._conversation import settings_for
from ._conversation import chat_turns

if TYPE_CHECKING:
    from ir3de import Router
    from ir3de.decision import RouteDecision
    from ir3de.routing.conversation import ConversationSettings

__all__ = ["Ir3deDecisionModel"]

#: ``usage`` of every answer: the router reads a table, it spends no LLM token.
NO_TOKENS = {"input_tokens": 0, "output_tokens": 0, "total_tokens": 0}


def _state_messages(state: Any) -> str | BaseMessage | list[BaseMessage]:
    """The text, the message or the chat messages a decision model state holds."""
    if isinstance(state, (str, BaseMessage)):
        return state
    if isinstance(state, Mapping):
        if "messages" in state:
            return _state_messages(state["messages"])
        raise InvalidInputError(
            f"a dict state needs a 'messages' key (keys: {sorted(map(str, state))}); pass the text, a "
            "message, a list of messages or {'messages': [...]}"
        )
    if isinstance(state, Sequence) and not isinstance(state, (bytes, bytearray)):
        if not state:
            raise InvalidInputError("the state is an empty list: pass at least one message")
        try:
            return convert_to_messages(state)
        except (ValueError, TypeError, NotImplementedError) as e:
            raise InvalidInputError(
                f"cannot read the state list as chat messages ({e}); pass the text, a message or a list "
                "of messages"
            ) from e
    raise InvalidInputError(
        f"cannot route a state of type {type(state).__name__}: pass the text, a message, a list of "
        "messages or {'messages': [...]}"
    )


def _label_probabilities(decision: RouteDecision, labels: Sequence[str]) -> dict[str, float]:
    """The decision's scores over ``labels`` (expert names), renormalised; uniform without evidence."""
    scores = decision.scores
    mass = sum(scores[label] for label in labels)
    if mass <= 0.0:
        return dict.fromkeys(labels, 1.0 / len(labels))
    return {label: scores[label] / mass for label in labels}


class Ir3deDecisionModel(BaseDecisionModel):
    """A LangChain decision model answering ``Choice`` and ``Noul`` questions with an ir3de router.

    Answers equal the router's own decision: for a ``Choice`` over all its experts, ``choice`` is
    ``router.route(text).top_expert`` and ``probabilities`` are its ``scores``; a subset of experts is
    renormalised over the subset. The state may be a text, a message, a list of messages (routed as a
    conversation with ``conversation`` settings; the expert in the last answer's
    ``response_metadata["ir3de"]`` is the previous one) or a dict with ``messages``. Runs are traced
    with ``ls_provider="ir3de"``; ``usage`` is 0 tokens. Sync, async and batch (``Runnable.batch``).

    Args:
        router: a fitted :class:`ir3de.Router`.
        conversation: :class:`ir3de.routing.conversation.ConversationSettings` (or a dict of its fields)
            for message lists; default: the library's measured defaults.
        model: the name reported as ``ls_model_name`` and in every answer (default ``"ir3de"``).

    Example:
        >>> from langchain.agents.middleware import ModelChoice, ModelRouterMiddleware   # doctest: +SKIP
        >>> middleware = ModelRouterMiddleware(  # doctest: +SKIP
        ...     choices={"math": ModelChoice(model=math_llm, criteria="math"),
        ...              "code": ModelChoice(model=code_llm, criteria="code")},
        ...     instructions="Pick the expert", classifier=Ir3deDecisionModel(router))
    """

    model_config = ConfigDict(arbitrary_types_allowed=True)

    router: Any = Field(exclude=True)
    conversation: Any = None
    model: str = "ir3de"
    _settings: ConversationSettings = PrivateAttr()

    def __init__(self, router: Router | None = None, **kwargs: Any) -> None:
        if router is not None:
            kwargs["router"] = router
        super().__init__(**kwargs)
        fitted_router(self.router)
        self._settings = settings_for(self.conversation, None, adapter="langchain")

    @property
    def _provider(self) -> str:
        return "ir3de"

    @property
    def _llm_type(self) -> str:
        return "ir3de-decision-model"

    def route(self, state: State) -> RouteDecision:
        """The router's decision for ``state`` (a text, a message, messages or ``{"messages": ...}``).

        Example:
            >>> Ir3deDecisionModel(router).route("def add(a, b):").expert   # doctest: +SKIP
            'code'
        """
        got = _state_messages(state)
        router: Router = self.router
        if isinstance(got, str):
            return router.route(got)
        if isinstance(got, BaseMessage):
            return router.route(str(got.text))
        turns, previous = chat_turns(got)
        return router.route_conversation(turns, previous_expert=previous, settings=self._settings)

    def _classify(self, state: State, questions: dict[str, Question]) -> ClassifierResponse:
        if not questions:
            raise InvalidInputError("questions is empty: ask at least one Choice or Noul question")
        experts = list(self.router.experts)
        for key, question in questions.items():  # check every question before routing anything
            self._check_question(key, question, experts)
        decision = self.route(state)
        names = list(decision.scores)
        answers: dict[str, ChoiceAnswer | NoulAnswer] = {}
        for key, question in questions.items():
            if isinstance(question, Choice):
                labels = [name for name in names if name in question.criteria]
                probabilities = _label_probabilities(decision, labels)
                best = max(labels, key=lambda label: probabilities[label])  # first maximum: router order
                answers[key] = ChoiceAnswer(
                    type="choice",
                    choice=best,
                    probabilities=probabilities,
                    confidence=min(1.0, max(0.0, probabilities[best])),
                )
            elif isinstance(question, Noul):  # other types were refused by _check_question
                expert = self._noul_expert(key, question, experts)
                probability = _label_probabilities(decision, names)[expert]
                answers[key] = NoulAnswer(type="noul", noul=min(1.0, max(0.0, probability)))
        return ClassifierResponse(
            model=self.model, answers=answers, usage=dict(NO_TOKENS), request_id=str(uuid.uuid4())
        )

    async def _aclassify(self, state: State, questions: dict[str, Question]) -> ClassifierResponse:
        return self._classify(state, questions)  # a table lookup: no executor hop needed

    @staticmethod
    def _check_question(key: str, question: Question, experts: list[str]) -> None:
        if isinstance(question, Choice):
            unknown = [label for label in question.criteria if label not in experts]
            if unknown:
                raise UnknownExpertError(
                    f"Choice question {key!r} has labels {unknown} that are not experts of the router; its "
                    f"criteria keys must be among the router's experts {experts}"
                )
        elif isinstance(question, Noul):
            Ir3deDecisionModel._noul_expert(key, question, experts)
        else:
            raise InvalidInputError(
                f"question {key!r} is a {type(question).__name__}; an ir3de decision model answers Choice "
                f"questions over its experts {experts} and Noul questions about one of them"
            )

    @staticmethod
    def _noul_expert(key: str, question: Noul, experts: list[str]) -> str:
        if key in experts:
            return key
        if isinstance(question.instructions, str) and question.instructions in experts:
            return question.instructions
        raise UnknownExpertError(
            f"Noul question {key!r} names no expert: use an expert name as its question id or as its "
            f"instructions; the router's experts are {experts}"
        )
