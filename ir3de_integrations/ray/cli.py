"""``ir3de fit --engine ray``: count a sharded corpus on Ray Data, registered as a fitting engine.

The core's ``ir3de fit`` finds this engine through the ``ir3de.fit_engines`` entry-point group
(``ray = "ir3de_integrations.ray.cli:fit_on_ray"`` in pyproject.toml), so the core never names
this package.
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from ir3de.cli.options import CliUsageError, descriptions, expert_fields, expert_files, status
from ir3de.errors import require

if TYPE_CHECKING:
    from ir3de.router import Router

__all__ = ["fit_on_ray"]


def fit_on_ray(args: argparse.Namespace, router: Router) -> None:
    """Fit ``router`` from the parsed ``ir3de fit`` arguments on Ray Data (a local Ray unless --address).

    Example:
        >>> from ir3de.cli import main                                   # doctest: +SKIP
        >>> main(["fit", "--engine", "ray", "--expert", "math=shards/*.jsonl", "-o", "r"])  # doctest: +SKIP
        0
    """
    ray = require("ray", "--engine ray", "pip install 'ir3de[ray]'")
    from ir3de_integrations.ray import fit_router, quiet_ray_logging

    experts = expert_files(args)
    fields = set(expert_fields(args, list(experts)).values())
    if len(fields) > 1:
        raise CliUsageError("--engine ray reads every expert's shards with one --field; give one FIELD")
    started_here = not ray.is_initialized()
    if started_here:
        where = "starting a local Ray …" if args.address is None else f"joining Ray at {args.address} …"
        status(args, where)
        ray.init(address=args.address, include_dashboard=False, **quiet_ray_logging())
    try:
        _, report = fit_router(
            experts,
            router=router,
            descriptions=descriptions(args),
            field=fields.pop(),
            whole_file=True if args.whole_file else None,
            skip_bad=args.skip_bad,
        )
    finally:
        if started_here:
            ray.shutdown()
    print(report.summary())
