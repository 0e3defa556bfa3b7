"""Entry point of the `arbiter` console script."""

from __future__ import annotations

import os

# Several OpenMP runtimes (LightGBM, numba, BLAS) share the process; passive waiting keeps
# idle threads from spinning on a 2-core machine.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import typer

from cli import decisions as decisions_cmds
from cli import features as features_cmds
from cli import keys as keys_cmds
from cli import notify as notify_cmds
from cli import policy as policy_cmds
from cli import privacy as privacy_cmds
from cli import serve as serve_cmds
from cli import simulate as simulate_cmds
from cli import train as train_cmds

app = typer.Typer(
    name="arbiter",
    help="Arbiter: a fraud decision engine with explanations.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
simulate_cmds.register(app)
features_cmds.register(app)
decisions_cmds.register(app)
train_cmds.register(app)
serve_cmds.register(app)
policy_cmds.register(app)
notify_cmds.register(app)
privacy_cmds.register(app)
keys_cmds.register(app)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
