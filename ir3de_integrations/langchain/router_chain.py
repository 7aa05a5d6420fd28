"""``Ir3deRouterChain``: the router of a classic ``MultiRouteChain`` (needs ``langchain-classic``)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from langchain_core.callbacks import CallbackManagerForChainRun
from pydantic import ConfigDict, Field

from ir3de.errors import EmptyPromptError, require

from ._registry import RouteOn, _check_route_on, input_text

require("langchain_classic", "Ir3deRouterChain", "pip install 'ir3de[langchain-classic]'")
from langchain_classic.chains.router.base import RouterChain  # noqa: E402 (after the check)

if TYPE_CHECKING:
    from pathlib import Path

    from ir3de import Router

__all__ = ["Ir3deRouterChain"]


class Ir3deRouterChain(RouterChain):
    """Route a ``MultiRouteChain``'s input with IR3DE: destination = the chosen expert's name, or
    ``None`` (the default chain) when the confidence is below ``threshold``, the router fell back,
    or the input has no countable token.

    The text is ``inputs[input_key]`` (a string, or messages: ``route_on`` picks which). The chain
    also outputs ``decision`` (the decision as a dict, ``None`` for an empty input).

    Example:
        >>> from langchain_classic.chains.router import MultiRouteChain                 # doctest: +SKIP
        >>> chain = MultiRouteChain(  # doctest: +SKIP
        ...     router_chain=Ir3deRouterChain(router=router, threshold=0.5),
        ...     destination_chains={"math": math_chain, "code": code_chain},
        ...     default_chain=general_chain,
        ... )
        >>> chain.invoke({"input": "Solve 2x + 3 = 7"})  # doctest: +SKIP
    """

    model_config = ConfigDict(arbitrary_types_allowed=True, extra="forbid")

    router: Any = Field(exclude=True)
    """A fitted :class:`ir3de.Router`."""
    input_key: str = "input"
    """The input key that holds the text to route."""
    threshold: float | None = None
    """Confidence below which the default chain answers (``None``: the router's own ``threshold``)."""
    route_on: RouteOn = "last_user"
    """For message inputs: ``"last_user"``, ``"conversation"`` or the last n turns."""

    def __init__(self, **data: Any) -> None:
        if "route_on" in data:
            data["route_on"] = _check_route_on(data["route_on"])
        super().__init__(**data)

    @classmethod
    def from_pretrained(
        cls, folder_or_repo: str | Path, *, threshold: float | None = None, **kwargs: Any
    ) -> Ir3deRouterChain:
        """Load a saved router with ``ir3de.Router.from_pretrained(folder_or_repo, **kwargs)``.

        Example:
            >>> Ir3deRouterChain.from_pretrained("my-router", threshold=0.5)   # doctest: +SKIP
        """
        from ir3de import Router

        return cls(router=Router.from_pretrained(folder_or_repo, **kwargs), threshold=threshold)

    @property
    def input_keys(self) -> list[str]:
        return [self.input_key]

    @property
    def output_keys(self) -> list[str]:
        return ["destination", "next_inputs", "decision"]

    @property
    def destinations(self) -> list[str]:
        """The expert names the chain can route to (the destination chains' keys)."""
        return list(self.router.experts)

    def _call(
        self, inputs: dict[str, Any], run_manager: CallbackManagerForChainRun | None = None
    ) -> dict[str, Any]:
        text = input_text(inputs, input_key=self.input_key, route_on=self.route_on)
        router: Router = self.router
        try:
            decision = router.route(text)
        except EmptyPromptError:
            return {"destination": None, "next_inputs": dict(inputs), "decision": None}
        threshold = router.config.threshold if self.threshold is None else self.threshold
        low = decision.fallback_used or decision.confidence < threshold
        return {
            "destination": None if low else decision.expert,
            "next_inputs": dict(inputs),
            "decision": decision.to_dict(),
        }
