"""``Ir3deModelMiddleware``: an agent middleware for ``create_agent`` that picks each run's expert model.

``create_agent`` (LangChain 1.x, on LangGraph) calls the model in a loop (model → tools → model …).
This middleware routes the conversation once per human turn, before the agent loop starts
(``before_agent``), and sends every model call of that turn to the chosen expert's chat model
(``wrap_model_call``), so a tool loop never switches model. No routing math lives here: the decision
is :meth:`ir3de.Router.route_conversation` run through the core
:class:`~ir3de.serving.registry.ExpertRegistry` (decision and model from one consistent snapshot) and
:func:`ir3de_integrations._conversation.route_chat` (stickiness per session):

* **sticky per thread**: the session is the run's LangGraph ``thread_id`` (``config={"configurable":
  {"thread_id": ...}}``); the thread's previous expert comes from the session store, else from the
  decision kept in agent state (restored by the checkpointer), and a new turn switches only when
  another expert leads by the conversation ``margin``;
* **the decision** is in agent state (``state["ir3de"]``) and in every answer's
  ``response_metadata["ir3de"]`` (expert, confidence, scores, switched, reason, ``route_id``);
* **experts at run time**: :meth:`~Ir3deModelMiddleware.add_expert`, ``remove_expert`` and
  ``update_expert`` change the router and the models together; a run routed before a removal
  finishes on the model it was routed to;
* **feedback** by thread id (its latest routed turn), run id (``config={"run_id": ...}``), answer
  message or prompt: :meth:`~Ir3deModelMiddleware.feedback`.

Example:
    >>> from langchain.agents import create_agent                                       # doctest: +SKIP
    >>> from langgraph.checkpoint.memory import InMemorySaver  # doctest: +SKIP
    >>> middleware = Ir3deModelMiddleware(router, {"math": math_llm, "code": "openai:gpt-5-mini"})  # doctest: +SKIP
    >>> agent = create_agent(math_llm, tools=[calculator], middleware=[middleware],  # doctest: +SKIP
    ...                      checkpointer=InMemorySaver())
    >>> out = agent.invoke({"messages": [("user", "Solve 2x = 4")]},  # doctest: +SKIP
    ...                    {"configurable": {"thread_id": "alice"}})
    >>> out["ir3de"]["expert"], out["messages"][-1].response_metadata["ir3de"]["expert"]  # doctest: +SKIP
    ('math', 'math')
"""

from __future__ import annotations

import threading
import uuid
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Hashable, Iterable, Mapping
from typing import TYPE_CHECKING, Any

from langchain.agents.middleware.types import (
    AgentMiddleware,
    AgentState,
    ExtendedModelResponse,
    ModelRequest,
    ModelResponse,
)
from langchain.chat_models import init_chat_model
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage
from typing_extensions import NotRequired

from ir3de.errors import InvalidInputError, UnknownCallError
from ir3de.serving.feedback import DEFAULT_MAXSIZE, Feedback, user_text
from ir3de.serving.registry import ExpertRegistry

from .._conversation import ConversationOptions, route_chat, settings_for
from ._conversation import METADATA_KEY, chat_turns

if TYPE_CHECKING:
    from langgraph.runtime import Runtime

    from ir3de import Router
    from ir3de.routing.conversation import ConversationSettings
    from ir3de.serving.sessions import SessionStore

__all__ = ["Ir3deAgentState", "Ir3deModelMiddleware"]

ModelSpec = BaseChatModel | str
"""A chat model, or a model string for ``langchain.chat_models.init_chat_model``."""


class Ir3deAgentState(AgentState[Any]):
    """Agent state with the turn's routing decision under ``ir3de`` (a JSON-serialisable dict)."""

    ir3de: NotRequired[dict[str, Any]]


def _chat_model(name: str, model: object) -> BaseChatModel:
    if isinstance(model, str):
        return init_chat_model(model)
    if not isinstance(model, BaseChatModel):
        raise InvalidInputError(
            f"expert {name!r} is a {type(model).__name__}; an agent's expert must be a LangChain "
            "BaseChatModel or an init_chat_model string such as 'openai:gpt-5-mini'"
        )
    return model


def _check_model(name: str, model: object) -> None:
    _chat_model(name, model)


def _human_turns(messages: Iterable[BaseMessage]) -> int:
    return sum(1 for m in messages if m.type == "human")


class _Bounded:
    """A small thread-safe LRU map (route id → model, thread id → route id)."""

    def __init__(self, maxsize: int) -> None:
        self._lock = threading.Lock()
        self._items: OrderedDict[Hashable, Any] = OrderedDict()
        self.maxsize = maxsize

    def put(self, key: Hashable, value: Any) -> None:
        with self._lock:
            self._items[key] = value
            self._items.move_to_end(key)
            while len(self._items) > self.maxsize:
                self._items.popitem(last=False)

    def get(self, key: Hashable) -> Any:
        with self._lock:
            return self._items.get(key)


class Ir3deModelMiddleware(AgentMiddleware[Ir3deAgentState]):
    """Route each human turn of a ``create_agent`` agent to one expert chat model with IR3DE.

    Args:
        router: a fitted :class:`ir3de.Router`.
        models: expert name → ``BaseChatModel`` or ``init_chat_model`` string, one per router expert
            (and its ``fallback`` name, if any); otherwise :class:`~ir3de.errors.ExpertMismatchError`.
        conversation: :class:`ir3de.routing.conversation.ConversationSettings` (or a dict of its
            fields): decay of earlier turns, role weights, the switching ``margin``.
        session_store: a :class:`ir3de.serving.sessions.SessionStore` (thread id → last expert);
            default: one per middleware. Share one to share stickiness between agents.

    The model passed to ``create_agent`` is replaced on every call; any of the experts will do.

    Example:
        >>> middleware = Ir3deModelMiddleware(router, {"math": math_llm, "code": code_llm})   # doctest: +SKIP
        >>> agent = create_agent(math_llm, tools=[calculator], middleware=[middleware])     # doctest: +SKIP
    """

    state_schema = Ir3deAgentState

    def __init__(
        self,
        router: Router,
        models: Mapping[str, ModelSpec],
        *,
        conversation: ConversationSettings | Mapping[str, Any] | None = None,
        session_store: SessionStore | None = None,
    ) -> None:
        if not isinstance(models, Mapping):
            raise InvalidInputError(
                f"models must be a mapping expert name → chat model, got {type(models).__name__}"
            )
        handlers = {name: _chat_model(name, model) for name, model in models.items()}
        self._registry: ExpertRegistry[BaseChatModel] = ExpertRegistry(
            router, handlers, kind="chat model", check_handler=_check_model
        )
        self._conversation = ConversationOptions(
            settings_for(conversation, None, adapter="langchain"), session_store
        )
        self._routed = _Bounded(DEFAULT_MAXSIZE)  # route id → the model its turn was routed to
        self._threads = _Bounded(DEFAULT_MAXSIZE)  # thread id → route id of its latest turn

    # ------------------------------------------------------------------ experts
    @property
    def registry(self) -> ExpertRegistry[BaseChatModel]:
        """The router and the expert chat models (the core registry; consistent under change)."""
        return self._registry

    @property
    def router(self) -> Router:
        return self._registry.router

    @property
    def models(self) -> dict[str, BaseChatModel]:
        """The current expert name → chat model mapping (a copy)."""
        return dict(self._registry.handlers)

    def add_expert(self, name: str, model: ModelSpec, texts: Iterable[str], description: str = "") -> None:
        """Add expert ``name`` answered by ``model``, its statistics counted from ``texts``; safe while
        agents run (the next turn routed sees it).

        Example:
            >>> middleware.add_expert("legal", legal_llm, legal_texts)   # doctest: +SKIP
        """
        self._registry.add(name, _chat_model(name, model), texts, description)

    def remove_expert(self, name: str) -> None:
        """Remove expert ``name``; runs already routed to it finish on its model."""
        self._registry.remove(name)

    def update_expert(
        self, name: str, more_texts: Iterable[str] | None = None, *, model: ModelSpec | None = None
    ) -> None:
        """Add text to expert ``name``'s statistics and/or replace its chat model."""
        self._registry.update(name, more_texts, handler=None if model is None else _chat_model(name, model))

    # ------------------------------------------------------------------ routing
    @staticmethod
    def _ids(runtime: Runtime[Any] | None) -> tuple[Hashable | None, Hashable | None]:
        """The run's LangGraph thread id and run id (``None`` when absent)."""
        info = getattr(runtime, "execution_info", None)
        thread_id = getattr(info, "thread_id", None)
        run_id = getattr(info, "run_id", None)
        if thread_id is None or run_id is None:
            from langgraph.config import get_config

            try:
                config = get_config()
            except RuntimeError:  # called outside a graph run
                config = {}
            thread_id = thread_id or (config.get("configurable") or {}).get("thread_id")
            run_id = run_id or config.get("run_id")
        return thread_id, None if run_id is None else str(run_id)

    def route(self, state: Mapping[str, Any], runtime: Runtime[Any] | None = None) -> dict[str, Any]:
        """The routing decision for the agent state's latest human turn (as stored in ``state["ir3de"]``).

        A turn already routed (same number of human messages) keeps its decision.
        """
        messages = list(state.get("messages") or [])
        turn = _human_turns(messages)
        kept = state.get(METADATA_KEY)
        if isinstance(kept, Mapping) and kept.get("turn") == turn and turn > 0:
            return dict(kept)
        if turn == 0:
            raise InvalidInputError(
                "Ir3deModelMiddleware routes on the conversation's human messages and the agent state has "
                "none: invoke the agent with {'messages': [('user', ...)]}"
            )
        thread_id, run_id = self._ids(runtime)
        turns, history = chat_turns(messages)
        previous = kept.get("expert") if isinstance(kept, Mapping) else None
        routed = route_chat(
            self._registry,
            self._conversation,
            turns,
            session_id=thread_id,
            history_expert=previous if isinstance(previous, str) else history,
        )
        decision = routed.decision
        route_id = str(uuid.uuid4())
        self._routed.put(route_id, routed.handler)
        self._registry.calls.record(
            route_id,
            user_text(turns),
            decision.expert,
            confidence=decision.confidence,
            turns=turns,
            aliases=[run_id],
        )
        if thread_id is not None:
            self._threads.put(thread_id, route_id)
        return {
            "expert": decision.expert,
            "confidence": float(decision.confidence),
            "scores": {k: float(v) for k, v in decision.scores.items()},
            "top_expert": decision.top_expert,
            "fallback_used": bool(decision.fallback_used),
            "switched": bool(getattr(decision, "switched", False)),
            "reason": str(getattr(decision, "reason", "")),
            "route_id": route_id,
            "run_id": run_id,
            "turn": turn,
        }

    def before_agent(self, state: Ir3deAgentState, runtime: Runtime[Any]) -> dict[str, Any] | None:
        """Route the latest human turn once, before the agent loop (a table lookup: microseconds)."""
        return {METADATA_KEY: self.route(state, runtime)}

    async def abefore_agent(self, state: Ir3deAgentState, runtime: Runtime[Any]) -> dict[str, Any] | None:
        return self.before_agent(state, runtime)

    def _model_for(self, request: ModelRequest[Any]) -> tuple[BaseChatModel, dict[str, Any]]:
        info = request.state.get(METADATA_KEY)
        if not isinstance(info, Mapping):  # a model call with no routed turn (another entry point)
            info = self.route(request.state, request.runtime)
        model = self._routed.get(info.get("route_id"))
        if model is None:  # routed in another process (state restored by a checkpointer)
            model = self._registry.handlers.get(info["expert"])
        if model is None:  # its expert was removed meanwhile: route the turn again
            info = self.route({**request.state, METADATA_KEY: None}, request.runtime)
            model = self._routed.get(info["route_id"])
        return model, dict(info)

    @staticmethod
    def _annotate(response: Any, info: dict[str, Any]) -> Any:
        """``response`` with the decision in every AI message's ``response_metadata["ir3de"]``."""

        def tag(message: BaseMessage) -> BaseMessage:
            if not isinstance(message, AIMessage):
                return message
            metadata = {**(message.response_metadata or {}), METADATA_KEY: dict(info)}
            return message.model_copy(update={"response_metadata": metadata})

        if isinstance(response, AIMessage):
            return tag(response)
        if isinstance(response, ExtendedModelResponse):
            inner = Ir3deModelMiddleware._annotate(response.model_response, info)
            return ExtendedModelResponse(model_response=inner, command=response.command)
        if isinstance(response, ModelResponse):
            return ModelResponse(
                result=[tag(m) for m in response.result], structured_response=response.structured_response
            )
        return response

    def wrap_model_call(
        self,
        request: ModelRequest[Any],
        handler: Callable[[ModelRequest[Any]], ModelResponse[Any]],
    ) -> Any:
        """Send the model call to the turn's expert model; put the decision in the answer's metadata."""
        model, info = self._model_for(request)
        return self._annotate(handler(request.override(model=model)), info)

    async def awrap_model_call(
        self,
        request: ModelRequest[Any],
        handler: Callable[[ModelRequest[Any]], Awaitable[ModelResponse[Any]]],
    ) -> Any:
        model, info = self._model_for(request)
        return self._annotate(await handler(request.override(model=model)), info)

    # ------------------------------------------------------------------ feedback
    def feedback(
        self,
        *,
        expert: str,
        thread_id: Hashable | None = None,
        run_id: uuid.UUID | str | None = None,
        message: BaseMessage | None = None,
        prompt: str | None = None,
        create_experts: bool = False,
        model: ModelSpec | None = None,
    ) -> Feedback:
        """Learn the correct ``expert`` of a routed turn, named by exactly one of: ``thread_id`` (the
        thread's latest routed turn), ``run_id`` (the ``config["run_id"]`` of the agent run), ``message``
        (an answer carrying ``response_metadata["ir3de"]["route_id"]``) or ``prompt``. The turn's last
        user message is learned (:meth:`ir3de.Router.learn`, through the registry). With
        ``create_experts`` an unknown ``expert`` becomes one, answered by ``model``.

        Raises:
            UnknownCallError: the thread, run or message is not among the recent routed turns.
            UnknownExpertError: ``expert`` is not an expert and ``create_experts`` is false.

        Example:
            >>> middleware.feedback(thread_id="alice", expert="math").fixed   # doctest: +SKIP
            True
        """
        given = [x is not None for x in (thread_id, run_id, message, prompt)]
        if sum(given) != 1:
            raise InvalidInputError(
                "name one routed turn: pass exactly one of thread_id=, run_id=, message= or prompt="
            )
        call_id: Any = run_id
        if thread_id is not None:
            call_id = self._threads.get(thread_id)
            if call_id is None:
                raise UnknownCallError(
                    f"no routed turn of thread {thread_id!r} is remembered; pass the run_id, the answer "
                    "message or prompt=..."
                )
        elif message is not None:
            route = (message.response_metadata or {}).get(METADATA_KEY)
            call_id = route.get("route_id") if isinstance(route, Mapping) else None
            if call_id is None:
                raise InvalidInputError(
                    "this message carries no route id (response_metadata['ir3de']['route_id']); pass an "
                    "answer of an agent using this middleware, a thread_id, a run_id or prompt=..."
                )
        handler = None if model is None else _chat_model(expert, model)
        return self._registry.feedback(
            call_id=call_id, prompt=prompt, expert=expert, create_experts=create_experts, handler=handler
        )
