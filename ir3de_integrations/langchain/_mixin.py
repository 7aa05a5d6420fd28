"""What the LangChain faces share: runtime experts, conversation routing, the expert's nested run, and
error wrapping."""

from __future__ import annotations

import uuid
from collections.abc import Hashable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from langchain_core.callbacks import AsyncCallbackManager, CallbackManager
from langchain_core.callbacks.manager import AsyncRunManager, BaseRunManager
from langchain_core.messages import BaseMessage
from langchain_core.runnables import Runnable, RunnableConfig
from langchain_core.runnables.config import patch_config
from typing_extensions import Self

from ir3de.errors import InvalidInputError
from ir3de.serving.feedback import Feedback, RecentRoutes, RoutedCall, user_text

from .._conversation import ConversationOptions, route_chat, settings_for
from ._conversation import METADATA_KEY, chat_turns, input_messages
from .errors import ExpertInvocationError

if TYPE_CHECKING:
    from ir3de.fitting.adaptation import AdaptationReport
    from ir3de.serving.registry import Routed

    from ._registry import ExpertRegistry


class ExpertsMixin:
    """``add_expert``/``remove_expert``/``update_expert``, conversation routing, the expert's run config
    and error wrapping of :class:`RouterRunnable` and :class:`RoutingChatModel` (both keep their registry
    in ``_registry`` and their conversation settings and session store in ``_conversation``).

    Example:
        >>> chat.add_expert("legal", legal_chat, legal_texts).remove_expert("code")   # doctest: +SKIP
    """

    _registry: ExpertRegistry
    _conversation: ConversationOptions

    @property
    def registry(self) -> ExpertRegistry:
        """The router + expert runnables (shared with the ``bind_tools``/``with_structured_output`` views)."""
        return self._registry

    @property
    def experts(self) -> dict[str, Runnable[Any, Any]]:
        """The current expert name → runnable mapping (a copy)."""
        return dict(self._registry.handlers)

    def add_expert(
        self, name: str, llm: Runnable[Any, Any], texts: Iterable[str], description: str = ""
    ) -> Self:
        """Register ``llm`` as expert ``name`` and add its statistics (from ``texts``) to the router.

        Safe while other threads/coroutines call this object; if the router refuses, nothing changes.

        Example:
            >>> routed.add_expert("medical", medical_llm, medical_texts)   # doctest: +SKIP
        """
        self._registry.add(name, llm, texts, description)
        return self

    def remove_expert(self, name: str) -> Self:
        """Remove expert ``name``; calls already routed to it are still answered by it."""
        self._registry.remove(name)
        return self

    def update_expert(
        self, name: str, more_texts: Iterable[str] | None = None, *, llm: Runnable[Any, Any] | None = None
    ) -> Self:
        """Add more text to expert ``name``'s statistics and/or replace its runnable with ``llm``.

        Example:
            >>> routed.update_expert("math", more_math_texts, llm=bigger_math_llm)   # doctest: +SKIP
        """
        self._registry.update(name, more_texts, handler=llm)
        return self

    # ------------------------------------------------------------------ feedback
    @property
    def recent_calls(self) -> RecentRoutes:
        """The routed calls remembered for :meth:`feedback` (bounded: ``recent_calls.maxsize``;
        shared with the ``bind_tools``/``with_structured_output`` views)."""
        return self._registry.calls

    def feedback(
        self,
        run_id: uuid.UUID | str | BaseMessage | None = None,
        *,
        prompt: str | None = None,
        expert: str,
        create_experts: bool = False,
        llm: Runnable[Any, Any] | None = None,
    ) -> Feedback:
        """Report the correct ``expert`` of a routed call and learn it (:meth:`ir3de.Router.learn`,
        through the registry: the next call sees it).

        Name the call by its ``run_id`` — the run id of the routed call (``config={"run_id": ...}``,
        a callback's ``run_id``, ``collect_runs``), the run id of the chain run that directly contains
        it, or the answer ``AIMessage`` itself (its ``response_metadata["ir3de"]["run_id"]``) — or pass
        the ``prompt``. A routed chat teaches its last user turn. With ``create_experts`` an unknown
        ``expert`` becomes a new expert answered by ``llm``.

        Raises:
            UnknownCallError: the run id is not among the recent routed calls (``recent_calls``).
            UnknownExpertError: ``expert`` is not an expert and ``create_experts`` is false.

        Example:
            >>> reply = chat.invoke("What is the derivative of x**2?")      # doctest: +SKIP
            >>> chat.feedback(reply, expert="math").fixed                  # doctest: +SKIP
            True
        """
        call_id: Any = run_id
        if isinstance(run_id, BaseMessage):
            route = (run_id.response_metadata or {}).get(METADATA_KEY) or {}
            call_id = route.get("run_id") if isinstance(route, Mapping) else None
            if call_id is None:
                raise InvalidInputError(
                    "this message carries no routed run id (response_metadata['ir3de']['run_id']); pass an "
                    "answer of this routing chat model, its run id, or prompt=..."
                )
        return self._registry.feedback(
            call_id=call_id, prompt=prompt, expert=expert, create_experts=create_experts, handler=llm
        )

    def forget_traffic(self, expert: str | None = None) -> Self:
        """Forget what feedback taught expert ``expert`` (all experts with ``None``): exact.

        Example:
            >>> chat.forget_traffic()   # doctest: +SKIP
        """
        self._registry.forget_traffic(expert)
        return self

    # ------------------------------------------------------------------ adaptation
    def adapt(self, prompts: Iterable[str] | None = None, **options: Any) -> AdaptationReport:
        """Adapt the router to unlabelled prompts (:meth:`ir3de.Router.adapt`, through the registry:
        the next call sees it) — by default to the calls this object routed recently
        (:attr:`recent_calls`: a prompt, or a chat's last user turn) that no earlier ``adapt()`` used.
        ``options`` go to :meth:`ir3de.Router.adapt`. Undo with :meth:`forget_adaptation`.

        Raises:
            InvalidInputError: no routed call is left to adapt on (and no ``prompts`` given).

        Example:
            >>> for question in questions: chat.invoke(question)     # doctest: +SKIP
            >>> chat.adapt().to_dict()["prompts"]                   # doctest: +SKIP
            200
        """
        return self._registry.adapt(prompts, **options)

    def forget_adaptation(self) -> Self:
        """Forget what :meth:`adapt` taught (exact; feedback learned as traffic is kept).

        Example:
            >>> chat.forget_adaptation()   # doctest: +SKIP
        """
        self._registry.forget_adaptation()
        return self

    def _record_call(
        self,
        run_manager: BaseRunManager | None,
        input: Any,
        expert: str,
        confidence: float | None,
        *,
        input_key: str = "input",
    ) -> RoutedCall:
        """Remember a routed call for :meth:`feedback`: under its run id (a new id without a run
        manager) and its parent run id; a chat is remembered with its last user turn as the text."""
        messages = input_messages(input, input_key=input_key)
        turns: list[tuple[str, str]]
        if isinstance(messages, str):
            text, turns = messages, []
        else:
            turns, _ = chat_turns(messages)
            text = user_text(turns)
        run_id = run_manager.run_id if run_manager is not None else uuid.uuid4()
        parent = run_manager.parent_run_id if run_manager is not None else None
        return self._registry.calls.record(
            run_id, text, expert, confidence=confidence, turns=turns, aliases=[parent]
        )

    # ------------------------------------------------------------------ conversations
    @staticmethod
    def _conversation_options(conversation: Any, route_on: Any, session_store: Any) -> ConversationOptions:
        """The settings (``conversation``, or the legacy ``route_on`` mapped onto them) and the session
        store a face routes chats with (typed errors for bad values)."""
        return ConversationOptions(settings_for(conversation, route_on, adapter="langchain"), session_store)

    def _route_messages(
        self, messages: Sequence[BaseMessage], session_id: Hashable | None, *, remember: bool = True
    ) -> Routed[Runnable[Any, Any]]:
        """Route a chat with :meth:`ir3de.Router.route_conversation` through the registry: the decision
        and the chosen expert's runnable, from one registry pairing. The previous expert comes from the
        session store (``session_id``), else from the route in the history's last routed answer; with
        ``remember`` the final decision is stored."""
        turns, history = chat_turns(messages)
        return route_chat(
            self._registry,
            self._conversation,
            turns,
            session_id=session_id,
            history_expert=history,
            remember=remember,
        )

    # ------------------------------------------------------------------ the expert's run
    @staticmethod
    def _expert_config(
        config: RunnableConfig | None, run_manager: BaseRunManager | None, name: str, confidence: float | None
    ) -> RunnableConfig:
        """The config of the expert's nested run: tagged ``route:<expert>``, with ``ir3de_expert`` and
        ``ir3de_confidence`` in its metadata (``config=None``: nothing else inherited)."""
        callbacks = None if run_manager is None else _child_callbacks(run_manager, f"route:{name}")
        child: RunnableConfig = (
            {"callbacks": callbacks} if config is None else patch_config(config, callbacks=callbacks)
        )
        child["metadata"] = {
            **(child.get("metadata") or {}),
            "ir3de_expert": name,
            "ir3de_confidence": confidence,
        }
        return child

    @staticmethod
    def _expert_error(name: str, error: Exception, decision: dict[str, Any] | None) -> ExpertInvocationError:
        """``error`` of expert ``name`` as an :class:`ExpertInvocationError` (its ``__cause__``)."""
        wrapped = ExpertInvocationError(name, error, decision)
        wrapped.__cause__ = error
        return wrapped


def _child_callbacks(run_manager: BaseRunManager, tag: str) -> CallbackManager | AsyncCallbackManager:
    """Callbacks for the expert's nested run (``ParentRunManager.get_child``, also for LLM runs)."""
    cls = AsyncCallbackManager if isinstance(run_manager, AsyncRunManager) else CallbackManager
    manager = cls(handlers=[], parent_run_id=run_manager.run_id)
    manager.set_handlers(run_manager.inheritable_handlers)
    manager.add_tags(run_manager.inheritable_tags)
    manager.add_metadata(run_manager.inheritable_metadata)
    manager.add_tags([tag], inherit=False)
    return manager
