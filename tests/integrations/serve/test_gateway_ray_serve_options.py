"""The Ray Serve deployment's options, checks and paths, without starting Ray (fast)."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("ray.serve")

from ir3de.cli.main import build_parser
from ir3de_integrations.serve import ConfigError, GatewayConfig
from ir3de_integrations.serve.ray_serve import (
    DEPLOYMENT_NAME,
    LIVE_SETTINGS,
    _absolute,
    _live_config,
    build_app,
    gateway_app,
    gateway_deployment,
)

EXPERTS = {"math": "http://127.0.0.1:1/v1", "code": "http://127.0.0.1:2/v1"}


def test_deployment_options_reach_ray_serve():
    d = gateway_deployment(
        num_replicas=2, ray_actor_options={"num_cpus": 0.5}, user_config={"threshold": 0.2}
    )
    assert d.name == DEPLOYMENT_NAME and d.num_replicas == 2
    assert d.ray_actor_options["num_cpus"] == 0.5 and d.user_config == {"threshold": 0.2}
    assert d.max_ongoing_requests == 256  # a gateway replica waits on upstreams: not Ray's default of 5
    auto = gateway_deployment(
        autoscaling_config={"min_replicas": 1, "max_replicas": 4, "target_ongoing_requests": 64}
    )
    autoscaling = auto._deployment_config.autoscaling_config  # no public accessor in Ray Serve 2.60
    assert (autoscaling.min_replicas, autoscaling.max_replicas) == (1, 4)
    with pytest.raises(ConfigError, match="either num_replicas=3"):
        gateway_deployment(num_replicas=3, autoscaling_config={"max_replicas": 4})
    with pytest.raises(ConfigError, match="cannot change on running replicas"):
        gateway_deployment(user_config={"timeout": 5})


def test_several_replicas_need_a_state_dir():
    config = GatewayConfig.from_dict({"router": "r", "experts": EXPERTS})
    for options in (
        {"num_replicas": 2},
        {"num_replicas": "auto"},
        {"autoscaling_config": {"max_replicas": 3}},
    ):
        with pytest.raises(ConfigError, match="set state_dir in the gateway config"):
            gateway_app(config, **options)
    gateway_app(config, num_replicas=1)
    gateway_app(
        GatewayConfig.from_dict({"router": "r", "experts": EXPERTS, "state_dir": "s"}), num_replicas=2
    )


def test_live_settings_are_checked_by_the_gateway_config():
    config = GatewayConfig.from_dict({"router": "r", "experts": EXPERTS})
    live = _live_config(config, {"threshold": 0.4, "fallback": "code", "margin": 0.3})
    assert (live.threshold, live.fallback, live.conversation_settings().margin) == (0.4, "code", 0.3)
    assert _live_config(config, None) is config and _live_config(config, {}) == config
    assert _live_config(config, {"head": 7}) == config  # an announcement, no setting
    for bad, match in [
        ({"threshold": 0.4}, "needs a fallback expert"),
        ({"threshold": 0.4, "fallback": "law"}, "'law' has no upstream"),
        ({"margin": 2.0}, "margin must be in"),
        ({"router": "other"}, "live settings are"),
        (["threshold"], "must be a mapping"),
        ({"head": 0}, "'head' must be a revision number"),
        ({"head": "7"}, "'head' must be a revision number"),
    ]:
        with pytest.raises(ConfigError, match=match):
            _live_config(config, bad)
    with pytest.raises(ConfigError, match="has no upstream"):  # checked before any replica starts
        gateway_app(config, user_config={"threshold": 0.4, "fallback": "law"})
    assert set(LIVE_SETTINGS) < {f for f in GatewayConfig.__dataclass_fields__}


def test_paths_become_absolute_for_replicas(tmp_path):
    (tmp_path / "router").mkdir()
    assert _absolute("router", tmp_path, local=False) == str(tmp_path / "router")
    assert _absolute("./later", tmp_path, local=False) == str(tmp_path / "later")
    assert _absolute("org/hub-router", tmp_path, local=False) == "org/hub-router"  # a Hub repo id
    assert _absolute("state", tmp_path, local=True) == str(tmp_path / "state")  # need not exist yet
    assert _absolute("/srv/state", tmp_path, local=True) == "/srv/state"


def test_build_app_reads_the_gateway_config_file(tmp_path, monkeypatch):
    folder = tmp_path / "deploy"
    folder.mkdir()
    (folder / "gateway.json").write_text(
        json.dumps({"router": "./router", "experts": EXPERTS, "state_dir": "state"})
    )
    monkeypatch.chdir(tmp_path)  # relative paths follow the config file, not the working directory
    app = build_app({"config": str(folder / "gateway.json"), "threshold": 0.2, "fallback": "math"})
    (data,) = app._bound_deployment.init_args  # what every replica receives (plain JSON data)
    assert json.loads(json.dumps(data)) == data
    assert data["router"] == str(folder / "router") and data["state_dir"] == str(folder / "state")
    assert (data["threshold"], data["fallback"]) == (0.2, "math")
    with pytest.raises(ConfigError, match="build_app needs args"):
        build_app({})
    with pytest.raises(ConfigError, match="cannot read the gateway config"):
        build_app({"config": str(folder / "missing.yaml")})


def _serve_args(*flags: str):
    return build_parser().parse_args(["serve", "--router", "r", *flags])


def test_cli_ray_flags():
    from ir3de_integrations.serve.cli import cmd_serve, ray_options

    assert ray_options(_serve_args("--ray", "--replicas", "2", "--replica-cpus", "0.5")) == {
        "num_replicas": 2,
        "ray_actor_options": {"num_cpus": 0.5},
    }
    assert ray_options(_serve_args("--ray", "--max-replicas", "4")) == {
        "autoscaling_config": {"min_replicas": 1, "max_replicas": 4, "target_ongoing_requests": 64.0}
    }
    for flags, match in [
        (("--ray", "--replicas", "2", "--max-replicas", "3"), "not both"),
        (("--ray", "--min-replicas", "3", "--max-replicas", "2"), "--min-replicas <= --max-replicas"),
        (("--ray", "--replicas", "0"), "at least 1"),
    ]:
        with pytest.raises(SystemExit, match=match):
            ray_options(_serve_args(*flags))
    with pytest.raises(SystemExit, match="--replicas need --ray"):
        cmd_serve(_serve_args("--replicas", "2"))
    with pytest.raises(SystemExit, match="on Ray Serve give --replicas"):
        cmd_serve(_serve_args("--ray", "--workers", "4"))
