"""``RoutingChatModel``: a LangChain chat model that answers with the chat model the router picks."""

from __future__ import annotations

import builtins
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from langchain_core.callbacks import AsyncCallbackManagerForLLMRun, CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel, LanguageModelInput
from langchain_core.language_models.base import LangSmithParams
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
from langchain_core.runnables import Runnable, RunnableConfig
from langchain_core.tools import BaseTool
from pydantic import BaseModel, Field, PrivateAttr

from ir3de.errors import ExpertError
from ir3de.serving.ownership import own_copy
from ir3de.serving.registry import fitted_router

from .._conversation import ConversationOptions
from ._conversation import session_id_from
from ._mixin import ExpertsMixin
from ._registry import ExpertRegistry, RouteOn
from .errors import ExpertInvocationError
from .runnable import RouterRunnable

if TYPE_CHECKING:
    from ir3de import Router

__all__ = ["RoutingChatModel"]

_TOOLS_KEY = "ir3de_tools"


def _as_message(output: Any) -> AIMessage:
    if isinstance(output, AIMessage):
        return output
    if isinstance(output, str):  # an LLM (text completion) expert
        return AIMessage(content=output)
    if isinstance(output, BaseMessage):
        return AIMessage(content=output.content)
    raise ExpertError(f"an expert of a RoutingChatModel returned a {type(output).__name__}, not a message")


def _as_chunk(output: Any) -> AIMessageChunk:
    if isinstance(output, AIMessageChunk):
        return output
    if isinstance(output, str):
        return AIMessageChunk(content=output)
    if isinstance(output, BaseMessage):
        return AIMessageChunk(content=output.content)
    raise ExpertError(
        f"an expert of a RoutingChatModel streamed a {type(output).__name__}, not a message chunk"
    )


class _Call:
    """One routed call: who answers, with which kwargs, and what goes into ``response_metadata``."""

    __slots__ = ("config", "expert", "info", "kwargs", "name")

    def __init__(
        self, name: str, expert: Runnable[Any, Any], info: dict[str, Any], kwargs: dict[str, Any]
    ) -> None:
        self.name, self.expert, self.info, self.kwargs = name, expert, info, kwargs
        self.config: RunnableConfig = {}

    def annotate(self, metadata: dict[str, Any], *, model_name: bool = True) -> dict[str, Any]:
        out = {**metadata, "ir3de": self.info}
        if model_name and not out.get("model_name"):
            out["model_name"] = self.name
        return out

    def error(self, e: Exception) -> ExpertInvocationError:
        return ExpertsMixin._expert_error(self.name, e, self.info)


class RoutingChatModel(ExpertsMixin, BaseChatModel):
    """A chat model that routes each conversation to one of several expert chat models with IR3DE.

    The conversation is routed with :meth:`ir3de.Router.route_conversation` (``conversation``
    settings: decayed earlier turns, role weights, stickiness); the chosen expert gets the full message
    list. The session's previous expert comes from ``session_store`` by the session id (a
    ``session_id=`` call keyword, or ``configurable={"session_id": ...}`` as ``RunnableWithMessageHistory``
    passes it), else from the route written into the history's last answer. The answer's ``response_metadata["ir3de"]`` holds the
    decision (expert, confidence, scores, deciding tokens) and the call's ``run_id``; streamed, it is
    on the first chunk. ``feedback(reply, expert="math")`` (or by run id / prompt) learns the correct
    expert of a call.
    ``response_metadata["model_name"]`` is the expert's own model name, else the expert name.
    ``invoke(..., model="<expert>")`` forces an expert. ``bind_tools`` and ``with_structured_output``
    are forwarded to the chosen expert when it supports them (an expert without tool support answers
    unbound, with ``ir3de["tools_bound"] = False``). ``stop`` is forwarded; ``temperature``,
    ``max_tokens``, ``timeout`` and ``max_retries`` are only reported (set them on the experts).

    Args:
        router: a fitted :class:`ir3de.Router`.
        experts: expert name → chat model (or any runnable returning a message or a string).
        conversation: a :class:`ir3de.routing.conversation.ConversationSettings` (or a dict of its fields);
            default: the measured defaults.
        session_store: a :class:`ir3de.serving.sessions.SessionStore` (default: one per chat model).
        route_on: legacy: ``"last_user"`` (= ``ConversationSettings.last_message()``) or
            ``"conversation"`` (= ``ConversationSettings.whole()``); other values raise an error
            naming ``conversation``.

    Example:
        >>> from ir3de_integrations.langchain import RoutingChatModel          # doctest: +SKIP
        >>> chat = RoutingChatModel(router, {"math": math_chat, "code": code_chat})  # doctest: +SKIP
        >>> reply = chat.invoke("Write a Python function that reverses a list")  # doctest: +SKIP
        >>> reply.response_metadata["ir3de"]["expert"]  # doctest: +SKIP
        'code'
    """

    router: Any = Field(exclude=True)
    route_on: RouteOn | None = None
    conversation: Any = None
    session_store: Any = Field(default=None, exclude=True)
    temperature: float | None = None
    max_tokens: int | None = None
    stop: list[str] | None = None
    timeout: float | None = None
    max_retries: int | None = None

    _registry: ExpertRegistry = PrivateAttr()
    _conversation: ConversationOptions = PrivateAttr()

    def __init__(
        self,
        router: Router | None = None,
        experts: Mapping[str, Runnable[Any, Any]] | ExpertRegistry | None = None,
        **kwargs: Any,
    ) -> None:
        if router is None or experts is None:
            raise ExpertError("RoutingChatModel needs a fitted router and experts={name: chat model}")
        options = self._conversation_options(
            kwargs.get("conversation"), kwargs.get("route_on"), kwargs.get("session_store")
        )
        kwargs["conversation"], kwargs["session_store"] = options.settings, options.store
        if not isinstance(experts, ExpertRegistry):
            router = own_copy(fitted_router(router))  # expert changes here never reach the caller's router
        super().__init__(router=router, **kwargs)
        self._conversation = options
        self._registry = experts if isinstance(experts, ExpertRegistry) else ExpertRegistry(router, experts)

    @property
    def _llm_type(self) -> str:
        return "ir3de-routing-chat-model"

    @property
    def _identifying_params(self) -> dict[str, Any]:
        return {
            "experts": sorted(self._registry.experts),
            "conversation": self._conversation.settings.to_dict(),
        }

    def _get_ls_params(self, stop: list[str] | None = None, **kwargs: Any) -> LangSmithParams:
        model = kwargs.get("model")
        params = LangSmithParams(
            ls_provider="ir3de",
            ls_model_name=model if isinstance(model, str) else "ir3de-router",
            ls_model_type="chat",
        )
        temperature = kwargs.get("temperature", self.temperature)
        if isinstance(temperature, (int, float)):
            params["ls_temperature"] = temperature
        max_tokens = kwargs.get("max_tokens", self.max_tokens)
        if isinstance(max_tokens, int):
            params["ls_max_tokens"] = max_tokens
        if stop or self.stop:
            params["ls_stop"] = stop or self.stop
        return params

    # ------------------------------------------------------------------ routing
    def _prepare(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None,
        run_manager: CallbackManagerForLLMRun | AsyncCallbackManagerForLLMRun | None,
        kwargs: dict[str, Any],
    ) -> _Call:
        kwargs = dict(kwargs)
        forced = kwargs.pop("model", None)
        session_id = session_id_from(None, kwargs)
        tools = kwargs.pop(_TOOLS_KEY, None)
        stop = stop if stop is not None else self.stop
        if stop:
            kwargs["stop"] = stop
        if forced is not None:
            name, expert = str(forced), self._registry.get(str(forced))
            info: dict[str, Any] = {"expert": name, "confidence": None, "forced": True, "tokens": []}
        else:
            decision, expert = self._route_messages(messages, session_id)
            name, info = decision.expert, decision.to_dict()
        if tools is not None:
            try:
                expert = expert.bind_tools(tools["tools"], **tools["kwargs"])  # type: ignore[attr-defined]
                info["tools_bound"] = True
            except (NotImplementedError, AttributeError):
                info["tools_bound"] = False
        info["run_id"] = self._record_call(run_manager, messages, name, info["confidence"]).call_id
        call = _Call(name, expert, info, kwargs)
        call.config = self._expert_config(None, run_manager, name, info["confidence"])
        return call

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        call = self._prepare(messages, stop, run_manager, kwargs)
        try:
            message = _as_message(call.expert.invoke(messages, call.config, **call.kwargs))
        except Exception as e:
            raise call.error(e) from e
        message = message.model_copy(update={"response_metadata": call.annotate(message.response_metadata)})
        return ChatResult(generations=[ChatGeneration(message=message)])

    async def _agenerate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        call = self._prepare(messages, stop, run_manager, kwargs)
        try:
            message = _as_message(await call.expert.ainvoke(messages, call.config, **call.kwargs))
        except Exception as e:
            raise call.error(e) from e
        message = message.model_copy(update={"response_metadata": call.annotate(message.response_metadata)})
        return ChatResult(generations=[ChatGeneration(message=message)])

    class _Relay:
        """Annotates a chunk stream: the decision on the first chunk (sent at once); the expert's name
        as ``model_name`` on the last one when the expert reported none (so one chunk is held back)."""

        def __init__(self, call: _Call) -> None:
            self.call = call
            self.count = 0
            self.pending: AIMessageChunk | None = None
            self.has_model_name = False

        def push(self, raw: Any) -> Iterator[ChatGenerationChunk]:
            chunk = _as_chunk(raw)
            self.has_model_name = self.has_model_name or bool(chunk.response_metadata.get("model_name"))
            self.count += 1
            if self.count == 1:
                chunk = chunk.model_copy(
                    update={
                        "response_metadata": self.call.annotate(chunk.response_metadata, model_name=False)
                    }
                )
                yield ChatGenerationChunk(message=chunk)
                return
            if self.pending is not None:
                yield ChatGenerationChunk(message=self.pending)
            self.pending = chunk

        def close(self) -> Iterator[ChatGenerationChunk]:
            if self.has_model_name:
                if self.pending is not None:
                    yield ChatGenerationChunk(message=self.pending)
                return
            name = {"model_name": self.call.name}
            if self.pending is not None:
                meta = {**self.pending.response_metadata, **name}
                yield ChatGenerationChunk(message=self.pending.model_copy(update={"response_metadata": meta}))
            elif self.count:  # a one-chunk stream: its chunk is gone, add the name in an empty last chunk
                yield ChatGenerationChunk(
                    message=AIMessageChunk(content="", response_metadata=name, chunk_position="last")
                )

    def _stream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> Iterator[ChatGenerationChunk]:
        call = self._prepare(messages, stop, run_manager, kwargs)
        relay = self._Relay(call)
        try:
            for raw in call.expert.stream(messages, call.config, **call.kwargs):
                yield from relay.push(raw)
        except Exception as e:
            raise call.error(e) from e
        yield from relay.close()

    async def _astream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> AsyncIterator[ChatGenerationChunk]:
        call = self._prepare(messages, stop, run_manager, kwargs)
        relay = self._Relay(call)
        try:
            async for raw in call.expert.astream(messages, call.config, **call.kwargs):
                for chunk in relay.push(raw):
                    yield chunk
        except Exception as e:
            raise call.error(e) from e
        for chunk in relay.close():
            yield chunk

    def route(self, input: LanguageModelInput) -> Any:
        """The :class:`ir3de.RouteDecision` for ``input`` without calling any expert.

        Example:
            >>> chat.route("Translate 'good morning' into German").expert   # doctest: +SKIP
        """
        messages = self._convert_input(input).to_messages()
        return self._route_messages(messages, session_id_from(None, None), remember=False).decision

    # ------------------------------------------------------------------ tools / structured output
    def bind_tools(
        self,
        tools: Sequence[builtins.dict[str, Any] | type | Callable[..., Any] | BaseTool],
        *,
        tool_choice: str | None = None,
        **kwargs: Any,
    ) -> Runnable[LanguageModelInput, AIMessage]:
        """Bind ``tools``; at each call they are bound to the chosen expert (``expert.bind_tools``).

        Example:
            >>> agent_model = chat.bind_tools([get_weather])   # doctest: +SKIP
        """
        options = dict(kwargs)
        if tool_choice is not None:
            options["tool_choice"] = tool_choice
        return self.bind(**{_TOOLS_KEY: {"tools": list(tools), "kwargs": options}})

    def with_structured_output(
        self,
        schema: builtins.dict[str, Any] | type,
        *,
        include_raw: bool = False,
        **kwargs: Any,
    ) -> Runnable[LanguageModelInput, builtins.dict[str, Any] | BaseModel]:
        """Route, then answer with ``expert.with_structured_output(schema, ...)`` of the chosen expert.

        Experts without structured-output support raise :class:`ir3de.errors.ExpertError` when chosen.

        Example:
            >>> extractor = chat.with_structured_output(Answer)   # doctest: +SKIP
        """

        def transform(name: str, expert: Runnable[Any, Any]) -> Runnable[Any, Any]:
            try:
                # chat models have it; Runnable does not declare it
                structured: Runnable[Any, Any] = expert.with_structured_output(  # type: ignore[attr-defined]
                    schema, include_raw=include_raw, **kwargs
                )
                return structured
            except (NotImplementedError, AttributeError) as e:
                raise ExpertError(
                    f"expert {name!r} ({type(expert).__name__}) does not support with_structured_output; "
                    "use experts that implement it (or bind_tools) for structured output"
                ) from e

        return RouterRunnable._view(
            self._registry,
            transform,
            conversation=self._conversation.settings,
            session_store=self._conversation.store,
            name="RoutingChatModelStructuredOutput",
        )
