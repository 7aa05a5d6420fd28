"""The gateway's routing function on the real router: the core's decision, the session written once."""

from __future__ import annotations

import pytest

from ir3de.routing.conversation import ConversationSettings
from ir3de.serving.sessions import SessionStore
from ir3de_integrations.serve.errors import GatewayError
from ir3de_integrations.serve.routing import route_messages, route_request
from ir3de_integrations.serve.upstreams import Upstreams

MATH = "Natalia sold clips to 48 of her friends in April, and then half as many in May. How many in total?"


def test_route_messages_is_route_conversation_and_remembers_final_decisions_only(gateway_router):
    store = SessionStore(ttl=60, max_sessions=10)
    chat = [{"role": "user", "content": MATH}]
    d = route_messages(gateway_router, chat, session_id="a", sessions=store)
    core = gateway_router.route_conversation(chat, settings=ConversationSettings())
    assert (d.expert, d.top_expert, d.abstained) == (core.expert, core.top_expert, False)
    assert d.confidence == pytest.approx(core.confidence) and store.get("a") == core.expert
    # below the threshold the gateway's fallback answers, and the session is not overwritten with it
    low = route_messages(
        gateway_router, chat, session_id="a", sessions=store, fallback="instructions", threshold=1.0
    )
    assert low.expert == "instructions" and low.abstained and low.switched
    assert store.get("a") == core.expert
    with pytest.raises(GatewayError) as info:
        route_messages(gateway_router, [{"role": "robot", "content": "hi"}])
    assert info.value.status == 400 and info.value.code == "invalid_messages"


def test_route_request_returns_the_upstream_of_the_decided_expert(gateway_router):
    from ir3de_integrations.serve.config import UpstreamConfig

    configs = {n: UpstreamConfig(f"http://127.0.0.1:1/{n}", n) for n in gateway_router.experts}
    upstreams = Upstreams(gateway_router, configs)
    decision, upstream = route_request(upstreams.registry, [{"role": "user", "content": MATH}])
    assert upstream is not None and upstream.name == decision.expert == "math"
    assert upstream.url == "http://127.0.0.1:1/math/chat/completions"
