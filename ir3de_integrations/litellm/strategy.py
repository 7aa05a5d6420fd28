"""ir3de as a LiteLLM custom routing strategy: the router picks which deployment serves each request.

LiteLLM (1.110) lets a ``CustomRoutingStrategyBase`` pick every deployment of a ``litellm.Router``,
registered with ``Router.register_plugin(strategy)`` (the older ``set_custom_routing_strategy`` is
its deprecated alias). :class:`Ir3deRoutingStrategy` does that: for a request to a routed model group
it routes the messages with ir3de and returns a healthy deployment of the chosen expert — the one
whose ``model_info`` carries ``ir3de_expert: <name>`` (or whose ``litellm_params.model`` the
``experts`` mapping names). Other model groups keep a plain random pick among healthy deployments.
LiteLLM's own retries, fallbacks, cooldowns and logging stay in charge; the decision is added to the
request's ``metadata["ir3de"]``.

Example:
    >>> import litellm                                                              # doctest: +SKIP
    >>> llm = litellm.Router(model_list=[  # doctest: +SKIP
    ...     {"model_name": "ir3de", "litellm_params": {"model": "openai/qwen2.5-math", "api_base": MATH_URL},
    ...      "model_info": {"ir3de_expert": "math"}},
    ...     {"model_name": "ir3de", "litellm_params": {"model": "openai/qwen2.5-coder", "api_base": CODE_URL},
    ...      "model_info": {"ir3de_expert": "code"}}])                              # doctest: +SKIP
    >>> use_ir3de(llm, Router.from_pretrained("my-router"))                       # doctest: +SKIP
    >>> await llm.acompletion(model="ir3de", messages=[{"role": "user", "content": "Solve 3x+5=11"}])  # doctest: +SKIP
"""

from __future__ import annotations

import logging
import random
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from litellm.types.router import CustomRoutingStrategyBase

from ir3de.errors import Ir3deError
from ir3de_integrations.serve.routing import GatewayDecision, SessionStore, route_messages

__all__ = ["Ir3deRoutingStrategy", "use_ir3de"]

logger = logging.getLogger("ir3de.litellm")

EXPERT_KEY = "ir3de_expert"


class Ir3deRoutingStrategy(CustomRoutingStrategyBase):
    """Pick the deployment of the expert an ir3de router chooses for the request's messages.

    Args:
        router: a fitted :class:`ir3de.Router`.
        litellm_router: the ``litellm.Router`` this strategy is registered on (for its healthy
            deployments; see :func:`use_ir3de`).
        model_groups: the model groups to route (default: every group with a deployment that names
            an expert). Other groups get a random healthy deployment, as LiteLLM's simple-shuffle.
        experts: expert → ``litellm_params.model`` for deployments without an ``ir3de_expert`` tag.
        fallback: expert for low-confidence or unroutable requests (and when the chosen expert has
            no healthy deployment).
        threshold: confidence below which ``fallback`` is taken.
        seed: seeds the random pick among several deployments of one expert.
    """

    def __init__(
        self,
        router: Any,
        litellm_router: Any,
        *,
        model_groups: Iterable[str] | None = None,
        experts: Mapping[str, str] | None = None,
        fallback: str | None = None,
        threshold: float = 0.0,
        seed: int | None = None,
    ) -> None:
        if not router.experts:
            raise Ir3deError("the ir3de router is not fitted: fit it or load it with Router.from_pretrained")
        self.router = router
        self.litellm_router = litellm_router
        self.model_groups = set(model_groups) if model_groups is not None else None
        self.by_model = {m: e for e, m in (experts or {}).items()}
        self.fallback = fallback
        self.threshold = float(threshold)
        self.sessions = SessionStore()
        self._random = random.Random(seed)

    # ------------------------------------------------------------------ LiteLLM's hook
    async def async_get_available_deployment(
        self,
        model: str,
        messages: list[dict[str, str]] | None = None,
        input: str | list[object] | None = None,
        specific_deployment: bool | None = False,
        request_kwargs: dict[str, object] | None = None,
    ) -> Any:
        """LiteLLM's async pick: the healthy deployments of ``model``, then ours among them."""
        healthy = await self.litellm_router.select(
            model,
            request_kwargs if request_kwargs is not None else {},
            kind="healthy",
            messages=messages,
            input=input,
            specific_deployment=specific_deployment,
        )
        if isinstance(healthy, dict):  # a specific deployment was asked for
            return healthy
        return self.pick(model, list(healthy or []), messages, request_kwargs)

    def get_available_deployment(
        self,
        model: str,
        messages: list[dict[str, str]] | None = None,
        input: str | list[object] | None = None,
        specific_deployment: bool | None = False,
        request_kwargs: dict[str, object] | None = None,
    ) -> Any:
        """LiteLLM's sync pick (``Router.completion``): the group's deployments, then ours among them."""
        deployments = self.litellm_router.registry().deployments(model)
        return self.pick(model, list(deployments or []), messages, request_kwargs)

    # ------------------------------------------------------------------ the decision
    def expert_of(self, deployment: Mapping[str, Any]) -> str | None:
        """The expert a deployment serves (its ``model_info.ir3de_expert``, or the ``experts`` mapping)."""
        info = deployment.get("model_info") or {}
        if isinstance(info, Mapping):
            expert = info.get(EXPERT_KEY)
            if isinstance(expert, str):
                return expert
        params = deployment.get("litellm_params") or {}
        model = params.get("model") if isinstance(params, Mapping) else None
        return self.by_model.get(model) if isinstance(model, str) else None

    def decide(
        self, messages: Sequence[Any], request_kwargs: Mapping[str, Any] | None = None
    ) -> GatewayDecision:
        """Route ``messages`` (the session is the request's ``user`` or ``metadata.session_id``)."""
        kwargs = request_kwargs or {}
        metadata = kwargs.get("metadata") if isinstance(kwargs.get("metadata"), Mapping) else {}
        session = kwargs.get("user") or (metadata or {}).get("session_id")
        return route_messages(
            self.router,
            messages,
            session_id=session if isinstance(session, str) else None,
            sessions=self.sessions,
            fallback=self.fallback,
            threshold=self.threshold,
        )

    def pick(
        self,
        model: str,
        deployments: list[Any],
        messages: Sequence[Any] | None,
        request_kwargs: dict[str, object] | None,
    ) -> Any:
        if not deployments:
            return None
        by_expert: dict[str, list[Any]] = {}
        for d in deployments:
            expert = self.expert_of(d) if isinstance(d, Mapping) else None
            if expert is not None:
                by_expert.setdefault(expert, []).append(d)
        routed = bool(by_expert) if self.model_groups is None else model in self.model_groups
        if not routed or not messages:
            return self._random.choice(deployments)
        decision = self.decide(messages, request_kwargs)
        chosen = by_expert.get(decision.expert)
        if not chosen and self.fallback is not None:
            logger.warning("ir3de: expert %r has no healthy deployment in %r; using fallback %r",
                           decision.expert, model, self.fallback)  # fmt: skip
            chosen = by_expert.get(self.fallback)
        if not chosen:
            logger.warning(
                "ir3de: expert %r has no healthy deployment in %r; picking any", decision.expert, model
            )
            chosen = deployments
        if request_kwargs is not None:
            metadata = request_kwargs.setdefault("metadata", {})
            if isinstance(metadata, dict):
                metadata["ir3de"] = decision.to_dict()
        return chosen[0] if len(chosen) == 1 else self._random.choice(chosen)


def use_ir3de(litellm_router: Any, router: Any, **options: Any) -> Ir3deRoutingStrategy:
    """Make ``router`` pick the deployments of ``litellm_router`` (``register_plugin``); returns the strategy.

    ``options`` go to :class:`Ir3deRoutingStrategy` (``model_groups``, ``experts``, ``fallback``,
    ``threshold``, ``seed``).

    Example:
        >>> strategy = use_ir3de(llm_router, Router.from_pretrained("my-router"), fallback="general")  # doctest: +SKIP
    """
    strategy = Ir3deRoutingStrategy(router, litellm_router, **options)
    litellm_router.register_plugin(strategy)
    return strategy
