"""Ray start-up for the counting jobs: the optional import, quiet logs, joining or starting a cluster,
and how many counting actors to run.

Example:
    >>> import ray                                                     # doctest: +SKIP
    >>> ray.init(include_dashboard=False, **quiet_ray_logging())  # doctest: +SKIP
"""

from __future__ import annotations

import logging
from typing import Any

from ir3de.errors import require

__all__ = ["actor_plan", "ensure_ray", "quiet_ray_logging", "require_ray"]


def require_ray() -> Any:
    """The ``ray`` module, with Ray Data imported (else :class:`~ir3de.errors.MissingDependencyError`)."""
    require("ray.data", "distributed fitting", "pip install 'ir3de[ray]'")
    return require("ray", "distributed fitting", "pip install 'ir3de[ray]'")


def quiet_ray_logging() -> dict[str, Any]:
    """Silence Ray's INFO logs (start-up, Ray Data's execution plans and per-operator bars) and
    return the ``ray.init`` keyword arguments that keep it quiet; warnings and errors still show.

    Example:
        >>> import ray                                                     # doctest: +SKIP
        >>> ray.init(include_dashboard=False, **quiet_ray_logging())  # doctest: +SKIP
    """
    import ray.data

    ctx = ray.data.DataContext.get_current()
    ctx.print_on_execution_start = False
    ctx.enable_auto_log_stats = False
    ctx.verbose_stats_logs = False
    for name in ("ray", "ray.data", "ray.data._internal"):
        logging.getLogger(name).setLevel(logging.WARNING)
    return {"logging_level": logging.WARNING, "log_to_driver": False}


def ensure_ray(address: str | None, num_cpus: int | None) -> Any:
    """The ``ray`` module, joined to ``address`` or a local Ray started (quiet) when none is running."""
    ray = require_ray()
    quiet = quiet_ray_logging()
    if not ray.is_initialized():
        kwargs: dict[str, Any] = {"address": address, "include_dashboard": False, **quiet}
        if address is None and num_cpus is not None:
            kwargs["num_cpus"] = num_cpus
        ray.init(**kwargs)
    return ray


def actor_plan(ray: Any, pools: int, concurrency: int | None) -> tuple[int, float]:
    """Actors per pool and CPUs per actor, leaving one CPU free for the datasets' read tasks.

    Counting actors hold their CPUs for the whole job; if they took every CPU (one pool per dataset,
    each as large as the cluster), the read tasks that feed them would never be scheduled and the
    job would hang. So all pools together reserve at most ``CPUs - 1`` (fractional CPUs per actor
    when there are more pools than that), and nothing at all on a one-CPU cluster.
    """
    cpus = float(ray.cluster_resources().get("CPU", 1))
    spare = max(cpus - 1.0, 0.0)
    size = concurrency or max(1, int(spare) // pools)
    per_actor = min(1.0, spare / (pools * size)) if spare else 0.0
    return size, per_actor
