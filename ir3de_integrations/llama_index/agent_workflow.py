"""``RoutedAgentWorkflow``: a LlamaIndex ``AgentWorkflow`` whose starting agent the router picks per run,
and :func:`route_event`, the router inside any ``Workflow`` step.

``AgentWorkflow`` starts every run with a fixed ``root_agent``; agents then hand off to each other
with the ``handoff`` tool. :class:`RoutedAgentWorkflow` keeps all of that and only replaces the
start: each run routes the conversation in the workflow's memory (the new user message and the
chat history) with :meth:`ir3de.Router.route_conversation` and starts at the agent named like the
chosen expert. The previous run's expert (kept in the run's ``Context``) is the conversation's
previous expert, so a follow-up in the same context keeps its agent unless another expert leads by
the conversation ``margin``. No routing math lives here.

Example:
    >>> from llama_index.core.agent.workflow import FunctionAgent                       # doctest: +SKIP
    >>> workflow = RoutedAgentWorkflow(  # doctest: +SKIP
    ...     [FunctionAgent(name="math", description="math", llm=math_llm, tools=[calc]),
    ...      FunctionAgent(name="code", description="code", llm=code_llm)], router=router)
    >>> handler = workflow.run(user_msg="Solve 2x = 4")  # doctest: +SKIP
    >>> (await handler).current_agent_name  # doctest: +SKIP
    'math'
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from llama_index.core.agent.workflow import AgentWorkflow
from llama_index.core.agent.workflow.workflow_events import AgentInput, AgentWorkflowStartEvent
from llama_index.core.workflow import Context, Event, step

from ir3de.errors import ExpertMismatchError, InvalidInputError
from ir3de.serving.registry import fitted_router, handler_names

from .._conversation import settings_for
from ._common import route_payload
from .events import Ir3deRouteEvent, dispatcher

if TYPE_CHECKING:
    from llama_index.core.agent.workflow.base_agent import BaseWorkflowAgent
    from llama_index.core.llms import ChatMessage

    from ir3de import Router
    from ir3de.decision import RouteDecision
    from ir3de.routing.conversation import ConversationSettings

__all__ = ["ROUTE_STORE_KEY", "RoutedAgentWorkflow", "RoutedEvent", "route_event"]

#: The ``Context.store`` key holding the latest decision (JSON) of a workflow run.
ROUTE_STORE_KEY = "ir3de"


def _turns(messages: Any) -> list[tuple[Any, str]] | str:
    """A text as is; LlamaIndex ``ChatMessage`` objects (or ``(role, text)`` pairs) as turns."""
    if isinstance(messages, str):
        return messages
    if hasattr(messages, "role") and hasattr(messages, "content"):
        messages = [messages]
    turns: list[tuple[Any, str]] = []
    for m in messages:
        if hasattr(m, "role") and hasattr(m, "content"):
            turns.append((m.role, m.content or ""))
        else:
            role, text = m
            turns.append((role, str(text)))
    return turns


async def _decide(
    router: Router, messages: Any, ctx: Context | None, settings: ConversationSettings, component: str
) -> tuple[RouteDecision, dict[str, Any]]:
    """Route ``messages`` (the previous expert from ``ctx``), store the decision in ``ctx``, emit it."""
    got = _turns(messages)
    previous = None
    if ctx is not None:
        kept = await ctx.store.get(ROUTE_STORE_KEY, default=None)
        previous = kept.get("expert") if isinstance(kept, Mapping) else None
    if isinstance(got, str):
        decision = router.route(got)
        query = got
    else:
        decision = router.route_conversation(got, previous_expert=previous, settings=settings)
        query = next(
            (text for role, text in reversed(got) if str(getattr(role, "value", role)) == "user"), ""
        )
    payload = route_payload(decision)
    payload["switched"] = bool(getattr(decision, "switched", False))
    payload["reason"] = str(getattr(decision, "reason", ""))
    if ctx is not None:
        await ctx.store.set(ROUTE_STORE_KEY, payload)
    dispatcher.event(Ir3deRouteEvent.from_payload(component, query, payload, selected=[decision.expert]))
    return decision, payload


class RoutedEvent(Event):
    """A routing decision inside a workflow: ``expert``, ``confidence``, ``scores`` and the routed
    ``input`` (what :func:`route_event` returns; subclass it to carry more)."""

    expert: str
    confidence: float
    scores: dict[str, float]
    input: Any = None


async def route_event(
    router: Router,
    input: Any,
    *,
    ctx: Context | None = None,
    conversation: ConversationSettings | Mapping[str, Any] | None = None,
    event_cls: type[RoutedEvent] = RoutedEvent,
) -> RoutedEvent:
    """Route ``input`` (a text, a ``ChatMessage`` or a list of them) inside a ``Workflow`` step and
    return a :class:`RoutedEvent` for the next step. With ``ctx`` the decision is kept in
    ``ctx.store["ir3de"]`` and a conversation routed later in the same context keeps its expert
    (stickiness ``margin``). Emits an :class:`Ir3deRouteEvent` (component ``"workflow"``).

    Example:
        >>> class Answer(Workflow):                                                     # doctest: +SKIP
        ...     @step
        ...     async def route(self, ctx: Context, ev: StartEvent) -> RoutedEvent:
        ...         return await route_event(router, ev.query, ctx=ctx)
        ...     @step
        ...     async def answer(self, ev: RoutedEvent) -> StopEvent:
        ...         return StopEvent(result=await llms[ev.expert].acomplete(ev.input))
    """
    settings = settings_for(conversation, None, adapter="llama_index")
    decision, payload = await _decide(fitted_router(router), input, ctx, settings, "workflow")
    return event_cls(
        expert=decision.expert, confidence=payload["confidence"], scores=payload["scores"], input=input
    )


class RoutedAgentWorkflow(AgentWorkflow):
    """An ``AgentWorkflow`` whose starting agent is chosen per run by routing the user message.

    Agents are named like the router's experts (one per expert and per fallback name). Each run
    routes the memory's conversation (chat history + the new user message) and starts at the chosen
    agent; tools, handoffs, memory and state work as in ``AgentWorkflow``. The decision is in
    ``ctx.store["ir3de"]`` and emitted as an :class:`Ir3deRouteEvent` (component ``"agent_workflow"``).

    Args:
        agents: the workflow agents (``FunctionAgent``, ``ReActAgent``…), named like the experts.
        router: a fitted :class:`ir3de.Router`.
        conversation: :class:`ir3de.routing.conversation.ConversationSettings` (or a dict of its fields).
        **kwargs: any ``AgentWorkflow`` argument (``initial_state``, ``timeout``…); ``root_agent``
            (default: the first expert) only matters for the memory's tokenizer.

    Raises:
        ExpertMismatchError: the agents' names are not exactly the router's experts (plus fallback).

    Example:
        >>> workflow = RoutedAgentWorkflow([math_agent, code_agent], router=router)   # doctest: +SKIP
        >>> ctx = Context(workflow)                                                    # doctest: +SKIP
        >>> await workflow.run(user_msg="def add(a, b):", ctx=ctx)                      # doctest: +SKIP
    """

    def __init__(
        self,
        agents: list[BaseWorkflowAgent],
        *,
        router: Router,
        conversation: ConversationSettings | Mapping[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        router = fitted_router(router)
        if not agents:
            raise InvalidInputError("agents is empty: pass one workflow agent per expert of the router")
        names = handler_names(router)
        given = [agent.name for agent in agents]
        missing = [n for n in names if n not in given]
        extra = [n for n in given if n not in names]
        if missing or extra:
            raise ExpertMismatchError(
                missing=missing,
                extra=extra,
                router_experts=router.experts,
                kind="agent",
                fix="Name one workflow agent after each router expert (FunctionAgent(name='<expert>', ...))",
            )
        kwargs.setdefault("root_agent", router.experts[0])
        super().__init__(agents=agents, **kwargs)
        self.router = router
        self.conversation_settings = settings_for(conversation, None, adapter="llama_index")

    async def route(self, ctx: Context | None, messages: list[ChatMessage]) -> RouteDecision:
        """Route ``messages`` (previous expert from ``ctx``) and keep the decision in ``ctx``."""
        decision, _ = await _decide(self.router, messages, ctx, self.conversation_settings, "agent_workflow")
        return decision

    @step
    async def init_run(self, ctx: Context, ev: AgentWorkflowStartEvent) -> AgentInput:
        """``AgentWorkflow.init_run``, then the starting agent is the routed expert's."""
        started = await super().init_run(ctx, ev)
        decision = await self.route(ctx, started.input)
        await ctx.store.set("current_agent_name", decision.expert)
        return AgentInput(input=started.input, current_agent_name=decision.expert)
