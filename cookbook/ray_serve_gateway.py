"""Recipe: the ir3de gateway on Ray Serve, 2 replicas sharing one routing state, offline on one machine.

Run: ``python cookbook/ray_serve_gateway.py`` (needs ``pip install 'ir3de[serve-ray]'``; about a
minute: a local Ray starts)

1. Fit a router on three public domains and save it (replicas load it from the folder).
2. Start one instant echo server per expert (stand-ins for vLLM, Ollama, a hosted API…).
3. Start a local Ray and Ray Serve's HTTP proxy; deploy the gateway with 2 replicas of half a CPU
   each (``gateway_app``), both on one shared state folder (``state_dir``); the admin token reaches
   the replicas through Ray's ``runtime_env``.
4. The official ``openai`` client talks to Serve's proxy: every response names the expert, the
   router revision and the replica (worker) that routed it.
5. Add an expert through the admin API: whichever replica takes the call commits revision 2 to the
   state folder, the other one swaps to it within ``revision_poll_seconds``; probe until both route
   a medical prompt to the new expert.

On a cluster, ``state_dir`` must be a shared filesystem path every node mounts at the same place, and
``ray.init(address="auto")`` joins the running cluster instead of starting one.
"""

from __future__ import annotations

import logging
import socket
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from ir3de import Router, TokenEmbeddings
from ir3de.data.datasets import load_domain, load_suite

EXPERTS = ("math", "code", "multilingual")
TOKEN = "s3cret-admin"  # in production: a secret, put in the replicas' environment the same way


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main(
    embeddings: TokenEmbeddings | None = None, port: int | None = None, verbose: bool = True
) -> dict[str, Any]:
    """Run the recipe; returns what it saw (for the test). ``port``: Serve's HTTP port when Ray
    Serve already runs in this process (the test's), else a free one for a new local Ray."""
    import httpx
    import openai
    import ray
    from ray import serve

    from ir3de_integrations.serve import GatewayConfig
    from ir3de_integrations.serve.echo import EchoUpstream
    from ir3de_integrations.serve.ray_serve import gateway_app, http_options
    from ir3de_integrations.serve.server import ServerThread

    work = Path(tempfile.mkdtemp(prefix="ir3de-ray-serve-"))
    suite = load_suite("reasoning4", seed=0)
    router = Router(embeddings or TokenEmbeddings.default(), progress=False)
    router.fit({name: suite.train[name][:200] for name in EXPERTS})
    folder = router.save_pretrained(work / "router")
    medical = load_domain("medical")[:100]

    seen: dict[str, Any] = {"answers": [], "probe": {}}
    started_ray = not ray.is_initialized()
    with ExitStack() as stack:
        urls = {
            name: stack.enter_context(ServerThread(EchoUpstream(name))).url for name in (*EXPERTS, "medical")
        }
        if started_ray:
            port = free_port()
            ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level=logging.WARNING)
            stack.callback(ray.shutdown)
            serve.start(
                http_options=http_options(port=port),
                logging_config={"log_level": "WARNING"},
            )
            stack.callback(serve.shutdown)
        gateway = f"http://127.0.0.1:{port}"

        config = GatewayConfig.from_dict(
            {
                "router": str(folder),
                "experts": {name: {"base_url": f"{urls[name]}/v1"} for name in EXPERTS},
                "state_dir": str(work / "state"),  # on a cluster: a shared filesystem path
                "revision_poll_seconds": 0.2,
                "admin_token_env": "IR3DE_ADMIN_TOKEN",
            }
        )
        replica = {"num_cpus": 0.5, "runtime_env": {"env_vars": {"IR3DE_ADMIN_TOKEN": TOKEN}}}
        serve.run(
            gateway_app(config, num_replicas=2, ray_actor_options=replica), name="ir3de", route_prefix="/"
        )
        stack.callback(serve.delete, "ir3de")

        client = openai.OpenAI(base_url=f"{gateway}/v1", api_key="unused")
        for label in EXPERTS:
            prompt = suite.test[label][0]
            raw = client.chat.completions.with_raw_response.create(
                model="ir3de", messages=[{"role": "user", "content": prompt}]
            )
            h = raw.headers
            answer = raw.parse().choices[0].message.content
            seen["answers"].append(
                {"label": label, "expert": h["x-ir3de-expert"], "revision": int(h["x-ir3de-revision"]),
                 "worker": h["x-ir3de-worker"], "answer": answer}
            )  # fmt: skip

        admin = httpx.Client(base_url=gateway, headers={"authorization": f"Bearer {TOKEN}"}, timeout=300)
        added = admin.post(
            "/admin/experts",
            json={
                "name": "medical",
                "texts": medical[20:],
                "upstream": {"base_url": f"{urls['medical']}/v1"},
            },
        )
        added.raise_for_status()
        revision = int(added.headers["x-ir3de-revision"])

        # a held-out medical prompt the new expert takes (asked until a replica at that revision answers)
        def route(prompt: str) -> tuple[str, str, int]:
            h = client.chat.completions.with_raw_response.create(
                model="ir3de", messages=[{"role": "user", "content": prompt}]
            ).headers
            return h["x-ir3de-worker"], h["x-ir3de-expert"], int(h["x-ir3de-revision"])

        probe = next(p for p in medical[:20] for _ in range(4) if route(p)[1:] == ("medical", revision))
        # probe through the proxy until both replicas route it to the new expert
        deadline = time.monotonic() + 120
        while len(seen["probe"]) < 2 or any(e != "medical" for e in seen["probe"].values()):
            if time.monotonic() > deadline:
                raise RuntimeError(f"the replicas did not agree: {seen['probe']}")
            worker, expert, served = route(probe)
            if served >= revision:
                seen["probe"][worker] = expert
        seen["revision"] = revision
        seen["revisions"] = admin.get("/admin/revisions").json()

    if verbose:
        for a in seen["answers"]:
            print(
                f"{a['label']:>12} prompt -> {a['expert']!r} (revision {a['revision']}, worker {a['worker']})"
            )
        print(f"'medical' added: revision {revision}; the probe on each replica: {seen['probe']}")
        for w in seen["revisions"]["workers"]:
            print(f"  worker {w['worker']} serves revision {w['revision']}")
    return seen


if __name__ == "__main__":
    main()
