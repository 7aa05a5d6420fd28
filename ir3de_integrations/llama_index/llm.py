"""A LlamaIndex ``LLM`` that routes every call to one of several registered LLMs with an ir3de router.

Use it anywhere LlamaIndex takes an LLM (chat engines, query engines, agents' plain-chat steps): each
call — ``chat``/``complete`` × sync/async × streaming — is routed on its prompt's tokens (microseconds,
no LLM call) and answered by the chosen expert's LLM. The route is reported in the response's
``additional_kwargs["ir3de_route"]`` and as an :class:`~.events.Ir3deRouteEvent`.

Experts can be added, removed or updated while calls are in flight: the expert → LLM mapping is the
core :class:`ir3de.serving.registry.ExpertRegistry`, an immutable pairing swapped together with each router
change under a lock, so every call is answered by the LLM of an expert that existed when it was
routed.

Example:
    >>> from llama_index.core.chat_engine import SimpleChatEngine
    >>> llm = RoutingLLM(router, {"math": math_llm, "code": code_llm})          # doctest: +SKIP
    >>> chat = SimpleChatEngine.from_defaults(llm=llm)                         # doctest: +SKIP
    >>> chat.chat("What is 17 * 23?")                                          # doctest: +SKIP
    >>> llm.add_expert("legal", legal_llm, legal_texts)                        # doctest: +SKIP
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncGenerator, Generator, Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, TypeVar

from llama_index.core.base.llms.types import (
    ChatMessage,
    ChatResponse,
    ChatResponseAsyncGen,
    ChatResponseGen,
    CompletionResponse,
    CompletionResponseAsyncGen,
    CompletionResponseGen,
    LLMMetadata,
    MessageRole,
)
from llama_index.core.callbacks import CallbackManager
from llama_index.core.llms.callbacks import llm_chat_callback, llm_completion_callback
from llama_index.core.llms.llm import LLM, default_completion_to_prompt
from pydantic import Field, PrivateAttr

from ir3de.decision import RouteDecision
from ir3de.errors import InvalidInputError
from ir3de.router import Router
from ir3de.routing.conversation import ConversationSettings
from ir3de.serving.feedback import Feedback, RecentRoutes, user_text
from ir3de.serving.ownership import own_copy
from ir3de.serving.registry import ExpertRegistry, Routed, fitted_router
from ir3de.serving.sessions import SessionStore

from .._conversation import ConversationOptions, route_chat, settings_for
from ._common import DEFAULT_TOP_TOKENS, load_router, route_payload
from .events import Ir3deRouteEvent, dispatcher

if TYPE_CHECKING:
    from ir3de.fitting.adaptation import AdaptationReport

__all__ = ["ROUTE_KEY", "RoutingLLM"]

#: The ``additional_kwargs`` key under which every response reports its route.
ROUTE_KEY = "ir3de_route"


class RoutingLLM(LLM):
    """An LLM that sends each call to the LLM of the expert an ir3de router picks for its prompt.

    Args:
        router: a fitted :class:`ir3de.Router`. Mutate it through this object's :meth:`add_expert`,
            :meth:`remove_expert` and :meth:`update_expert` so the LLM mapping stays in step.
        llms: ``{expert: LLM}`` — exactly the router's experts (plus its ``fallback`` name when
            one is configured and is not an expert). A mismatch raises one
            :class:`~ir3de.errors.ExpertMismatchError` (an ``ExpertError``) listing both sides.
        conversation: how chat calls are routed: a :class:`ir3de.routing.conversation.ConversationSettings` (or
            a dict of its fields; default: the measured defaults) for
            :meth:`ir3de.Router.route_conversation` (decayed earlier turns, role weights, stickiness).
        session_store: a :class:`ir3de.serving.sessions.SessionStore` (default: one per routing LLM). The
            previous expert of a chat comes from it by a ``session_id=`` call keyword, else by the
            conversation's earlier user messages (so a chat engine's memory keeps its expert).
        route_on: legacy: ``"last_user"`` (= ``ConversationSettings.last_message()``), ``"user"`` or
            ``"all"`` (= ``ConversationSettings.whole(assistant_weight=0 or 1)``); other values raise an
            error naming ``conversation``.
        top_tokens: deciding tokens named in the route report.

    Example:
        >>> llm = RoutingLLM(router, {"math": math_llm, "code": code_llm})          # doctest: +SKIP
        >>> r = llm.complete("def fib(n):")                                       # doctest: +SKIP
        >>> r.additional_kwargs["ir3de_route"]["expert"]                           # doctest: +SKIP
        'code'
    """

    route_on: Literal["last_user", "user", "all"] | None = Field(
        default=None, description="Legacy: last_user, user or all (mapped to conversation settings)."
    )
    conversation: Any = Field(default=None, description="ConversationSettings for chat calls.")
    top_tokens: int = Field(default=DEFAULT_TOP_TOKENS, description="Deciding tokens in the route report.")

    _registry: ExpertRegistry[LLM] = PrivateAttr()
    _conversation: ConversationOptions = PrivateAttr()

    def __init__(
        self,
        router: Router,
        llms: Mapping[str, LLM],
        *,
        route_on: Literal["last_user", "user", "all"] | None = None,
        conversation: ConversationSettings | Mapping[str, Any] | None = None,
        session_store: SessionStore | None = None,
        top_tokens: int = DEFAULT_TOP_TOKENS,
        callback_manager: CallbackManager | None = None,
        **kwargs: Any,
    ) -> None:
        options = ConversationOptions(
            settings_for(conversation, route_on, adapter="llama_index"), session_store
        )
        super().__init__(
            route_on=route_on,
            conversation=options.settings,
            top_tokens=top_tokens,
            callback_manager=callback_manager or CallbackManager([]),
            **kwargs,
        )
        self._conversation = options
        # a router of its own: add_expert/remove_expert here never change the caller's router
        self._registry = ExpertRegistry(
            own_copy(fitted_router(router)), llms, kind="LLM", check_handler=_check_llm
        )

    @classmethod
    def from_pretrained(
        cls,
        folder_or_repo: str | Path,
        llms: Mapping[str, LLM],
        *,
        route_on: Literal["last_user", "user", "all"] | None = None,
        conversation: ConversationSettings | Mapping[str, Any] | None = None,
        top_tokens: int = DEFAULT_TOP_TOKENS,
        callback_manager: CallbackManager | None = None,
        **kwargs: Any,
    ) -> RoutingLLM:
        """Load the router with ``ir3de.Router.from_pretrained(folder_or_repo, **kwargs)`` (a saved folder
        or a Hub repo id) and register ``llms`` for its experts.

        Example:
            >>> llm = RoutingLLM.from_pretrained("my-router", {"math": a, "code": b})   # doctest: +SKIP
        """
        return cls(
            load_router(folder_or_repo, **kwargs),
            llms,
            route_on=route_on,
            conversation=conversation,
            top_tokens=top_tokens,
            callback_manager=callback_manager,
        )

    @classmethod
    def class_name(cls) -> str:
        """Class name used in payloads and serialisation."""
        return "Ir3deRoutingLLM"

    # ------------------------------------------------------------------ introspection
    @property
    def router(self) -> Router:
        """The wrapped router (mutate it through this object so the LLM mapping follows)."""
        return self._registry.router

    @property
    def llms(self) -> Mapping[str, LLM]:
        """A read-only view of the current ``{expert: LLM}`` mapping."""
        return self._registry.handlers

    @property
    def registry(self) -> ExpertRegistry[LLM]:
        """The router + expert LLMs (the core :class:`ir3de.serving.registry.ExpertRegistry`)."""
        return self._registry

    @property
    def experts(self) -> list[str]:
        """The router's experts."""
        return list(self._registry.router.experts)

    @property
    def metadata(self) -> LLMMetadata:
        """Conservative merged metadata: what every registered LLM supports.

        ``context_window`` and ``num_output`` are the smallest among the experts, ``is_chat_model`` holds
        only when all are chat models, and ``is_function_calling_model`` is False (a routed call may
        land on any expert; function calling goes through one LLM's tool API).
        """
        metas = [llm.metadata for llm in self._registry.handlers.values()]
        roles = {m.system_role for m in metas}
        return LLMMetadata(
            context_window=min(m.context_window for m in metas),
            num_output=min(m.num_output for m in metas),
            is_chat_model=all(m.is_chat_model for m in metas),
            is_function_calling_model=False,
            model_name="ir3de-routing(" + ",".join(self._registry.handlers) + ")",
            system_role=roles.pop() if len(roles) == 1 else MessageRole.SYSTEM,
        )

    # ------------------------------------------------------------------ runtime experts
    def add_expert(self, name: str, llm: LLM, texts: Iterable[str], description: str = "") -> RoutingLLM:
        """Fit a new expert on ``texts`` and register ``llm`` for it; safe while calls are in flight.

        Example:
            >>> routing_llm.add_expert("legal", legal_llm, legal_texts, "contracts")   # doctest: +SKIP
        """
        self._registry.add(name, llm, texts, description)
        return self

    def remove_expert(self, name: str) -> RoutingLLM:
        """Remove an expert from the router and unregister its LLM; safe while calls are in flight."""
        self._registry.remove(name)
        return self

    def update_expert(
        self, name: str, more_texts: Iterable[str] | None = None, *, llm: LLM | None = None
    ) -> RoutingLLM:
        """Add text to an expert (re-solving the router) and/or replace its LLM; safe while calls are in flight.

        Example:
            >>> routing_llm.update_expert("math", more_math_texts, llm=bigger_math_llm)  # doctest: +SKIP
        """
        self._registry.update(name, more_texts, handler=llm)
        return self

    # ------------------------------------------------------------------ routing
    def route(self, text: str) -> RouteDecision:
        """The router's decision for ``text`` (no LLM call)."""
        return self._registry.router.route(text)

    @property
    def session_store(self) -> SessionStore:
        """Where the expert of each chat session (and conversation so far) is remembered."""
        return self._conversation.store

    def routing_text(self, messages: Sequence[ChatMessage]) -> str:
        """The last user message of ``messages`` (what route events report as the routed text)."""
        users = [m for m in messages if m.role == MessageRole.USER]
        return (users[-1].content or "") if users else ""

    def route_chat(self, messages: Sequence[ChatMessage], *, session_id: Any = None) -> RouteDecision:
        """The conversation decision for ``messages`` (no LLM call, nothing remembered).

        Example:
            >>> routing_llm.route_chat(chat_history).reason   # doctest: +SKIP
            "kept 'math': it is the top expert"
        """
        return self._route_chat(messages, session_id, remember=False).decision

    def _route_chat(
        self, messages: Sequence[ChatMessage], session_id: Any, *, remember: bool = True
    ) -> Routed[LLM]:
        """The conversation decision and its expert's LLM, from one registry pairing (``registry.current``) (the session's
        store written once, after the decision is final)."""
        turns = [(m.role, m.content or "") for m in messages]
        return route_chat(self._registry, self._conversation, turns, session_id=session_id, remember=remember)

    def _chat_payload(self, decision: RouteDecision) -> dict[str, Any]:
        payload = route_payload(decision, self.top_tokens)
        for key in ("previous_expert", "switched", "margin", "reason"):
            payload[key] = getattr(decision, key, None)
        return payload

    def _chat_event(
        self, messages: Sequence[ChatMessage], kwargs: dict[str, Any]
    ) -> tuple[LLM, dict[str, Any], Ir3deRouteEvent]:
        """Route a chat; remember it for :meth:`feedback` (its last user turn) under a new routing id,
        which the route report (``call_id``) and the event (``id_``) carry."""
        decision, llm = self._route_chat(messages, kwargs.pop("session_id", None))
        turns = [(m.role, m.content or "") for m in messages]
        call = self._registry.calls.record(
            uuid.uuid4(), user_text(turns), decision.expert, confidence=decision.confidence, turns=turns
        )
        payload = {**self._chat_payload(decision), "call_id": call.call_id}
        event = Ir3deRouteEvent.from_payload(
            "llm", self.routing_text(messages), payload, selected=[decision.expert], id_=call.call_id
        )
        return llm, payload, event

    def _resolve_chat_sync(
        self, messages: Sequence[ChatMessage], kwargs: dict[str, Any]
    ) -> tuple[LLM, dict[str, Any]]:
        llm, payload, event = self._chat_event(messages, kwargs)
        dispatcher.event(event)
        return llm, payload

    async def _resolve_chat_async(
        self, messages: Sequence[ChatMessage], kwargs: dict[str, Any]
    ) -> tuple[LLM, dict[str, Any]]:
        llm, payload, event = self._chat_event(messages, kwargs)
        await dispatcher.aevent(event)
        return llm, payload

    def _prompt_event(self, text: str) -> tuple[RouteDecision, LLM, dict[str, Any], Ir3deRouteEvent]:
        """Route a prompt; remember it for :meth:`feedback` under a new routing id (see :meth:`_chat_event`)."""
        decision, llm = self._registry.route(text)  # a table lookup: microseconds, no I/O to await
        call = self._registry.calls.record(
            uuid.uuid4(), text, decision.expert, confidence=decision.confidence
        )
        payload = {**route_payload(decision, self.top_tokens), "call_id": call.call_id}
        event = Ir3deRouteEvent.from_payload(
            "llm", text, payload, selected=[decision.expert], id_=call.call_id
        )
        return decision, llm, payload, event

    @dispatcher.span
    def _resolve(self, text: str) -> tuple[RouteDecision, LLM, dict[str, Any]]:
        decision, llm, payload, event = self._prompt_event(text)
        dispatcher.event(event)
        return decision, llm, payload

    @dispatcher.span
    async def _aresolve(self, text: str) -> tuple[RouteDecision, LLM, dict[str, Any]]:
        decision, llm, payload, event = self._prompt_event(text)
        await dispatcher.aevent(event)
        return decision, llm, payload

    # ------------------------------------------------------------------ feedback
    @property
    def recent_calls(self) -> RecentRoutes:
        """The routed calls remembered for :meth:`feedback` (bounded: ``recent_calls.maxsize``)."""
        return self._registry.calls

    def feedback(
        self,
        call_id: str | ChatResponse | CompletionResponse | None = None,
        *,
        prompt: str | None = None,
        expert: str,
        create_experts: bool = False,
        llm: LLM | None = None,
    ) -> Feedback:
        """Report the correct ``expert`` of a routed call and learn it (through the registry: the next
        call sees it).

        Name the call by its routing id — ``response.additional_kwargs["ir3de_route"]["call_id"]``,
        the response itself, or the ``id_`` of its :class:`~.events.Ir3deRouteEvent` — or pass the
        ``prompt``. A routed chat teaches its last user message. With ``create_experts`` an unknown
        ``expert`` becomes a new expert answered by ``llm``.

        Raises:
            UnknownCallError: the id is not among the recent routed calls (``recent_calls``).
            UnknownExpertError: ``expert`` is not an expert and ``create_experts`` is false.

        Example:
            >>> response = routing_llm.complete("What is 17 * 23?")   # doctest: +SKIP
            >>> routing_llm.feedback(response, expert="math").fixed     # doctest: +SKIP
            True
        """
        key: Any = call_id
        if isinstance(call_id, (ChatResponse, CompletionResponse)):
            route = (call_id.additional_kwargs or {}).get(ROUTE_KEY) or {}
            key = route.get("call_id")
            if key is None:
                raise InvalidInputError(
                    f"this response carries no routing id (additional_kwargs[{ROUTE_KEY!r}]['call_id']); pass "
                    "a response of this RoutingLLM, its routing id, or prompt=..."
                )
        return self._registry.feedback(
            call_id=key, prompt=prompt, expert=expert, create_experts=create_experts, handler=llm
        )

    def forget_traffic(self, expert: str | None = None) -> RoutingLLM:
        """Forget what feedback taught expert ``expert`` (all experts with ``None``): exact.

        Example:
            >>> routing_llm.forget_traffic("math")   # doctest: +SKIP
        """
        self._registry.forget_traffic(expert)
        return self

    # ------------------------------------------------------------------ adaptation
    def adapt(self, prompts: Iterable[str] | None = None, **options: Any) -> AdaptationReport:
        """Adapt the router to unlabelled prompts (:meth:`ir3de.Router.adapt`, through the registry:
        the next call sees it) — by default to the calls this LLM routed recently
        (:attr:`recent_calls`: a prompt, or a chat's last user message) that no earlier ``adapt()``
        used. ``options`` go to :meth:`ir3de.Router.adapt`. Undo with :meth:`forget_adaptation`.

        Raises:
            InvalidInputError: no routed call is left to adapt on (and no ``prompts`` given).

        Example:
            >>> for q in questions: routing_llm.complete(q)        # doctest: +SKIP
            >>> routing_llm.adapt().to_dict()["prompts"]           # doctest: +SKIP
            200
        """
        return self._registry.adapt(prompts, **options)

    def forget_adaptation(self) -> RoutingLLM:
        """Forget what :meth:`adapt` taught (exact; feedback learned as traffic is kept).

        Example:
            >>> routing_llm.forget_adaptation()   # doctest: +SKIP
        """
        self._registry.forget_adaptation()
        return self

    # ------------------------------------------------------------------ LLM API
    @llm_chat_callback()
    def chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponse:
        """Route the conversation (see ``conversation``) and chat with the chosen expert's LLM."""
        llm, payload = self._resolve_chat_sync(messages, kwargs)
        return _annotate(llm.chat(messages, **kwargs), payload)

    def _expert_formatted(self, formatted: bool) -> bool:
        """Whether the expert should take the prompt as already formatted.

        ``formatted=True`` means "formatted with *this* LLM's ``completion_to_prompt``" (LlamaIndex's
        ``predict`` always passes it). With the default, identity ``completion_to_prompt`` the prompt is
        not in any expert's format yet, so each expert applies its own (e.g. a chat template).
        """
        return formatted and self.completion_to_prompt is not default_completion_to_prompt

    @llm_completion_callback()
    def complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponse:
        """Route on the prompt and complete it with the chosen expert's LLM (which formats it itself)."""
        _, llm, payload = self._resolve(prompt)
        return _annotate(llm.complete(prompt, formatted=self._expert_formatted(formatted), **kwargs), payload)

    @llm_chat_callback()
    def stream_chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponseGen:
        """Route once (at call time), then stream the chosen LLM's chat chunks, each carrying the route."""
        llm, payload = self._resolve_chat_sync(messages, kwargs)
        return _annotate_stream(llm.stream_chat(messages, **kwargs), payload)

    @llm_completion_callback()
    def stream_complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponseGen:
        """Route once (at call time), then stream the chosen LLM's completion chunks, each carrying the route."""
        _, llm, payload = self._resolve(prompt)
        return _annotate_stream(
            llm.stream_complete(prompt, formatted=self._expert_formatted(formatted), **kwargs), payload
        )

    @llm_chat_callback()
    async def achat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponse:
        """Async :meth:`chat`."""
        llm, payload = await self._resolve_chat_async(messages, kwargs)
        return _annotate(await llm.achat(messages, **kwargs), payload)

    @llm_completion_callback()
    async def acomplete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponse:
        """Async :meth:`complete`."""
        _, llm, payload = await self._aresolve(prompt)
        return _annotate(
            await llm.acomplete(prompt, formatted=self._expert_formatted(formatted), **kwargs), payload
        )

    @llm_chat_callback()
    async def astream_chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponseAsyncGen:
        """Async :meth:`stream_chat`."""
        llm, payload = await self._resolve_chat_async(messages, kwargs)
        return _annotate_astream(await llm.astream_chat(messages, **kwargs), payload)

    @llm_completion_callback()
    async def astream_complete(
        self, prompt: str, formatted: bool = False, **kwargs: Any
    ) -> CompletionResponseAsyncGen:
        """Async :meth:`stream_complete`."""
        _, llm, payload = await self._aresolve(prompt)
        return _annotate_astream(
            await llm.astream_complete(prompt, formatted=self._expert_formatted(formatted), **kwargs), payload
        )

    def __repr__(self) -> str:
        llms = ", ".join(f"{n}: {type(m).__name__}" for n, m in self._registry.handlers.items())
        return f"RoutingLLM({{{llms}}}, conversation={self._conversation.settings})"


def _check_llm(name: str, llm: object) -> None:
    if not isinstance(llm, LLM):
        raise InvalidInputError(
            f"the LLM of expert {name!r} is a {type(llm).__name__}; pass a llama_index.core.llms.LLM "
            "(e.g. OpenAI(...), Ollama(...), HuggingFaceLLM(...) or a CustomLLM subclass)"
        )


#: An expert's chat or completion response (or stream chunk): annotated in place, returned as it came.
_Response = TypeVar("_Response", ChatResponse, CompletionResponse)


def _annotate(response: _Response, payload: dict[str, Any]) -> _Response:
    response.additional_kwargs = {**(response.additional_kwargs or {}), ROUTE_KEY: payload}
    return response


def _annotate_stream(
    chunks: Generator[_Response, None, None], payload: dict[str, Any]
) -> Generator[_Response, None, None]:
    for chunk in chunks:
        yield _annotate(chunk, payload)


async def _annotate_astream(
    chunks: AsyncGenerator[_Response, None], payload: dict[str, Any]
) -> AsyncGenerator[_Response, None]:
    async for chunk in chunks:
        yield _annotate(chunk, payload)
