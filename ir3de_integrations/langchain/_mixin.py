"""What the LangChain faces share: runtime experts, the expert's nested run, and error wrapping."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from langchain_core.callbacks import AsyncCallbackManager, CallbackManager
from langchain_core.callbacks.manager import AsyncRunManager, BaseRunManager
from langchain_core.runnables import Runnable, RunnableConfig
from langchain_core.runnables.config import patch_config
from typing_extensions import Self

from .errors import ExpertInvocationError

if TYPE_CHECKING:
    from ._registry import ExpertRegistry


class ExpertsMixin:
    """``add_expert``/``remove_expert``/``update_expert``, the expert's run config and error wrapping
    of :class:`RouterRunnable` and :class:`RoutingChatModel` (both keep their registry in ``_registry``).

    Example:
        >>> chat.add_expert("legal", legal_chat, legal_texts).remove_expert("code")   # doctest: +SKIP
    """

    _registry: ExpertRegistry

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
