"""``RouterRunnable``: an LCEL step that sends each input to the expert runnable the router picks."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from langchain_core.callbacks import AsyncCallbackManagerForChainRun, CallbackManagerForChainRun
from langchain_core.runnables import Runnable, RunnableConfig, RunnableSerializable
from langchain_core.runnables.config import get_executor_for_config
from langchain_core.runnables.utils import AddableDict
from pydantic import ConfigDict, Field, PrivateAttr

from ir3de.serving.ownership import own_copy
from ir3de.serving.registry import fitted_router

from .._conversation import ConversationOptions
from ._conversation import input_messages, session_id_from
from ._mixin import ExpertsMixin
from ._registry import ExpertRegistry, RouteOn
from .errors import ExpertInvocationError

if TYPE_CHECKING:
    from ir3de import RouteDecision, Router
    from ir3de.serving.registry import Routed

__all__ = ["RouterRunnable"]

Transform = Callable[[str, Runnable[Any, Any]], Runnable[Any, Any]]
ChainRunManager = CallbackManagerForChainRun | AsyncCallbackManagerForChainRun


class RouterRunnable(ExpertsMixin, RunnableSerializable[Any, Any]):
    """Route each input to one of several expert runnables (chat models, LLMs, chains) with IR3DE.

    A string input is routed as one prompt; messages / a ``PromptValue`` / a ``dict`` holding them (its
    ``input_key``) are routed as a conversation with :meth:`ir3de.Router.route_conversation`
    (``conversation`` settings; the session's previous expert from ``session_store`` by the
    ``configurable`` ``session_id`` of the config, as ``RunnableWithMessageHistory`` passes it, else from
    the route in the history's last answer). The input itself goes to the chosen expert
    unchanged, as a nested run tagged ``route:<expert>`` with ``ir3de_expert`` and
    ``ir3de_confidence`` in its metadata. ``batch``/``abatch`` group inputs by expert so each expert
    gets one batched call (order preserved). With ``return_decision=True`` the output is
    ``{"output": ..., "decision": RouteDecision}`` (streamed: the decision first, then the output).

    Experts can be added, updated and removed while other threads and coroutines invoke it.

    Args:
        router: a fitted :class:`ir3de.Router`.
        experts: expert name → runnable, exactly the router's experts (plus its ``fallback``).
        input_key: for ``dict`` inputs, the key that holds the text (or messages).
        conversation: a :class:`ir3de.routing.conversation.ConversationSettings` (or a dict of its fields).
        session_store: a :class:`ir3de.serving.sessions.SessionStore` (default: one per runnable).
        route_on: legacy: ``"last_user"`` or ``"conversation"`` map to equivalent ``conversation``
            settings; other values raise an error naming ``conversation``.
        return_decision: return the decision alongside the output.

    Example:
        >>> from ir3de_integrations.langchain import RouterRunnable              # doctest: +SKIP
        >>> chain = prompt | RouterRunnable(router, {"math": math_llm, "code": code_llm}) | parser  # doctest: +SKIP
        >>> chain.invoke({"input": "Solve 2x + 3 = 7"})  # doctest: +SKIP
    """

    model_config = ConfigDict(arbitrary_types_allowed=True)

    router: Any = Field(exclude=True)
    input_key: str = "input"
    route_on: RouteOn | None = None
    conversation: Any = None
    session_store: Any = Field(default=None, exclude=True)
    return_decision: bool = False

    _conversation: ConversationOptions = PrivateAttr()
    _registry: ExpertRegistry = PrivateAttr()
    _transform: Transform | None = PrivateAttr(default=None)
    _transformed: dict[str, tuple[Runnable[Any, Any], Runnable[Any, Any]]] = PrivateAttr(default_factory=dict)

    def __init__(
        self,
        router: Router,
        experts: Mapping[str, Runnable[Any, Any]] | ExpertRegistry,
        *,
        input_key: str = "input",
        route_on: RouteOn | None = None,
        conversation: Any = None,
        session_store: Any = None,
        return_decision: bool = False,
        **kwargs: Any,
    ) -> None:
        options = self._conversation_options(conversation, route_on, session_store)
        if not isinstance(experts, ExpertRegistry):
            router = own_copy(fitted_router(router))  # expert changes here never reach the caller's router
        super().__init__(
            router=router,
            input_key=input_key,
            route_on=route_on,
            conversation=options.settings,
            session_store=options.store,
            return_decision=return_decision,
            **kwargs,
        )
        self._conversation = options
        # a registry passed in is shared on purpose (live expert changes across faces)
        self._registry = experts if isinstance(experts, ExpertRegistry) else ExpertRegistry(router, experts)

    @classmethod
    def from_pretrained(
        cls,
        folder_or_repo: str | Path,
        experts: Mapping[str, Runnable[Any, Any]],
        *,
        input_key: str = "input",
        route_on: RouteOn | None = None,
        conversation: Any = None,
        return_decision: bool = False,
        **kwargs: Any,
    ) -> RouterRunnable:
        """Load a saved router (a folder, or a Hub repo id) with ``ir3de.Router.from_pretrained(folder_or_repo,
        **kwargs)`` and attach the expert runnables.

        Example:
            >>> RouterRunnable.from_pretrained("my-router", experts={"math": m, "code": c})  # doctest: +SKIP
        """
        from ir3de import Router

        router = Router.from_pretrained(folder_or_repo, **kwargs)
        return cls(
            router,
            experts,
            input_key=input_key,
            route_on=route_on,
            conversation=conversation,
            return_decision=return_decision,
        )

    @classmethod
    def _view(
        cls, registry: ExpertRegistry, transform: Transform | None, *, name: str | None = None, **options: Any
    ) -> RouterRunnable:
        """A runnable that shares ``registry`` (live expert changes) and maps each expert with ``transform``."""
        view = cls(registry.router, registry, **options)
        view._transform = transform
        if name is not None:
            view.name = name
        return view

    # ------------------------------------------------------------------ routing
    def route(self, input: Any) -> RouteDecision:
        """The decision for ``input`` without invoking any expert.

        Example:
            >>> routed.route("def add(a, b):").expert   # doctest: +SKIP
            'code'
        """
        messages = input_messages(input, input_key=self.input_key)
        if isinstance(messages, str):
            return self._registry.route(messages).decision
        return self._route_messages(messages, None, remember=False).decision

    def _route_input(self, input: Any, config: RunnableConfig | None) -> Routed[Runnable[Any, Any]] | str:
        """The conversation decision and its expert for a chat input (routed through the registry, the
        session remembered), or the text to route for a plain string."""
        messages = input_messages(input, input_key=self.input_key)
        if isinstance(messages, str):
            return messages
        session_id = session_id_from(config) if config is not None else None
        return self._route_messages(messages, session_id)

    def _apply(self, name: str, runnable: Runnable[Any, Any]) -> Runnable[Any, Any]:
        if self._transform is None:
            return runnable
        cached = self._transformed.get(name)
        if cached is not None and cached[0] is runnable:
            return cached[1]
        out = self._transform(name, runnable)
        self._transformed[name] = (runnable, out)
        return out

    def _decide(
        self, input: Any, config: RunnableConfig | None = None
    ) -> tuple[RouteDecision, Runnable[Any, Any]]:
        routed = self._route_input(input, config)
        decision, runnable = self._registry.route(routed) if isinstance(routed, str) else routed
        return decision, self._apply(decision.expert, runnable)

    def _child_config(
        self, config: RunnableConfig, run_manager: ChainRunManager, decision: RouteDecision, input: Any
    ) -> RunnableConfig:
        """The expert's run config; the call is remembered for :meth:`feedback` by its run id."""
        self._record_call(run_manager, input, decision.expert, decision.confidence, input_key=self.input_key)
        return self._expert_config(config, run_manager, decision.expert, decision.confidence)

    def _wrap(self, decision: RouteDecision, error: Exception) -> ExpertInvocationError:
        return self._expert_error(decision.expert, error, decision.to_dict(with_tokens=False))

    def _output(self, output: Any, decision: RouteDecision) -> Any:
        return {"output": output, "decision": decision} if self.return_decision else output

    # ------------------------------------------------------------------ invoke
    def _invoke(
        self, input: Any, run_manager: CallbackManagerForChainRun, config: RunnableConfig, **kwargs: Any
    ) -> Any:
        decision, expert = self._decide(input, config)
        try:
            output = expert.invoke(input, self._child_config(config, run_manager, decision, input), **kwargs)
        except Exception as e:
            raise self._wrap(decision, e) from e
        return self._output(output, decision)

    async def _ainvoke(
        self, input: Any, run_manager: AsyncCallbackManagerForChainRun, config: RunnableConfig, **kwargs: Any
    ) -> Any:
        decision, expert = self._decide(input, config)
        try:
            output = await expert.ainvoke(
                input, self._child_config(config, run_manager, decision, input), **kwargs
            )
        except Exception as e:
            raise self._wrap(decision, e) from e
        return self._output(output, decision)

    def invoke(self, input: Any, config: RunnableConfig | None = None, **kwargs: Any) -> Any:
        """Route ``input`` and invoke the chosen expert with it."""
        return self._call_with_config(self._invoke, input, config, **kwargs)

    async def ainvoke(self, input: Any, config: RunnableConfig | None = None, **kwargs: Any) -> Any:
        """Async :meth:`invoke` (routing itself is a microsecond table lookup, done inline)."""
        return await self._acall_with_config(self._ainvoke, input, config, **kwargs)

    # ------------------------------------------------------------------ batch
    def _plan(
        self, inputs: Sequence[Any], configs: Sequence[RunnableConfig | None] | None = None
    ) -> tuple[list[Any], dict[str, tuple[Runnable[Any, Any], list[int]]], list[RouteDecision | None]]:
        """Route all inputs (the plain strings with one router state; each conversation with its own
        history): results (errors filled in), groups by expert."""
        results: list[Any] = [None] * len(inputs)
        texts: list[str] = []
        positions: list[int] = []
        chats: list[tuple[int, Routed[Runnable[Any, Any]]]] = []
        for i, item in enumerate(inputs):
            try:
                routed = self._route_input(item, configs[i] if configs is not None else None)
            except Exception as e:
                results[i] = e
                continue
            if isinstance(routed, str):
                texts.append(routed)
                positions.append(i)
            else:
                chats.append((i, routed))
        decisions: list[RouteDecision | None] = [None] * len(inputs)
        groups: dict[str, tuple[Runnable[Any, Any], list[int]]] = {}
        outcomes: list[tuple[int, Routed[Runnable[Any, Any]] | Exception]] = [
            *zip(positions, self._registry.route_batch(texts) if texts else []),
            *chats,
        ]
        for i, outcome in outcomes:
            if isinstance(outcome, Exception):
                results[i] = outcome
                continue
            decision, runnable = outcome
            decisions[i] = decision
            try:
                runnable = self._apply(decision.expert, runnable)
            except Exception as e:
                results[i] = e
                continue
            groups.setdefault(decision.expert, (runnable, []))[1].append(i)
        return results, groups, decisions

    def _finish(
        self,
        results: list[Any],
        indices: list[int],
        outputs: list[Any],
        decisions: list[RouteDecision | None],
    ) -> None:
        for i, out in zip(indices, outputs):
            decision = _decided(decisions, i)
            results[i] = (
                self._wrap(decision, out) if isinstance(out, Exception) else self._output(out, decision)
            )

    def _batch(
        self,
        inputs: list[Any],
        run_manager: list[CallbackManagerForChainRun],
        config: list[RunnableConfig],
        **kwargs: Any,
    ) -> list[Any]:
        results, groups, decisions = self._plan(inputs, config)

        def run_group(item: tuple[str, tuple[Runnable[Any, Any], list[int]]]) -> None:
            _, (expert, indices) = item
            configs = [
                self._child_config(config[i], run_manager[i], _decided(decisions, i), inputs[i])
                for i in indices
            ]
            try:
                outputs = expert.batch(
                    [inputs[i] for i in indices], configs, return_exceptions=True, **kwargs
                )
            except Exception as e:  # an expert whose batch itself fails
                outputs = [e] * len(indices)
            self._finish(results, indices, outputs, decisions)

        if len(groups) == 1:
            run_group(next(iter(groups.items())))
        elif groups:
            with get_executor_for_config(config[0]) as executor:
                list(executor.map(run_group, groups.items()))
        return results

    async def _abatch(
        self,
        inputs: list[Any],
        run_manager: list[AsyncCallbackManagerForChainRun],
        config: list[RunnableConfig],
        **kwargs: Any,
    ) -> list[Any]:
        results, groups, decisions = self._plan(inputs, config)

        async def run_group(expert: Runnable[Any, Any], indices: list[int]) -> None:
            configs = [
                self._child_config(config[i], run_manager[i], _decided(decisions, i), inputs[i])
                for i in indices
            ]
            try:
                outputs = await expert.abatch(
                    [inputs[i] for i in indices], configs, return_exceptions=True, **kwargs
                )
            except Exception as e:
                outputs = [e] * len(indices)
            self._finish(results, indices, outputs, decisions)

        await asyncio.gather(*(run_group(expert, indices) for expert, indices in groups.values()))
        return results

    def batch(
        self,
        inputs: list[Any],
        config: RunnableConfig | list[RunnableConfig] | None = None,
        *,
        return_exceptions: bool = False,
        **kwargs: Any,
    ) -> list[Any]:
        """Route all inputs at once, then call each chosen expert once with its share (order kept)."""
        if not inputs:
            return []
        return self._batch_with_config(
            self._batch, inputs, config, return_exceptions=return_exceptions, **kwargs
        )

    async def abatch(
        self,
        inputs: list[Any],
        config: RunnableConfig | list[RunnableConfig] | None = None,
        *,
        return_exceptions: bool = False,
        **kwargs: Any,
    ) -> list[Any]:
        """Async :meth:`batch`: the experts' batched calls run concurrently."""
        if not inputs:
            return []
        return await self._abatch_with_config(
            self._abatch, inputs, config, return_exceptions=return_exceptions, **kwargs
        )

    # ------------------------------------------------------------------ stream
    def _stream_one(
        self,
        inputs: Iterator[Any],
        run_manager: CallbackManagerForChainRun,
        config: RunnableConfig,
        **kwargs: Any,
    ) -> Iterator[Any]:
        input = next(inputs)
        decision, expert = self._decide(input, config)
        if self.return_decision:
            yield AddableDict(decision=decision)
        try:
            for chunk in expert.stream(
                input, self._child_config(config, run_manager, decision, input), **kwargs
            ):
                yield AddableDict(output=chunk) if self.return_decision else chunk
        except Exception as e:
            raise self._wrap(decision, e) from e

    async def _astream_one(
        self,
        inputs: AsyncIterator[Any],
        run_manager: AsyncCallbackManagerForChainRun,
        config: RunnableConfig,
        **kwargs: Any,
    ) -> AsyncIterator[Any]:
        input = await inputs.__anext__()
        decision, expert = self._decide(input, config)
        if self.return_decision:
            yield AddableDict(decision=decision)
        try:
            async for chunk in expert.astream(
                input, self._child_config(config, run_manager, decision, input), **kwargs
            ):
                yield AddableDict(output=chunk) if self.return_decision else chunk
        except Exception as e:
            raise self._wrap(decision, e) from e

    def stream(self, input: Any, config: RunnableConfig | None = None, **kwargs: Any) -> Iterator[Any]:
        """Route ``input`` and stream the chosen expert's output."""
        yield from self._transform_stream_with_config(iter([input]), self._stream_one, config, **kwargs)

    async def astream(
        self, input: Any, config: RunnableConfig | None = None, **kwargs: Any
    ) -> AsyncIterator[Any]:
        """Async :meth:`stream` (``astream_events`` builds on it and shows the expert's events)."""

        async def one() -> AsyncIterator[Any]:
            yield input

        async for chunk in self._atransform_stream_with_config(one(), self._astream_one, config, **kwargs):
            yield chunk


def _decided(decisions: list[RouteDecision | None], i: int) -> RouteDecision:
    """The decision of input ``i``, which _plan grouped under an expert (so it was routed)."""
    decision = decisions[i]
    assert decision is not None, f"input {i} was grouped under an expert without a decision"
    return decision
