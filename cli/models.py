"""``aiops models``, ``aiops promote`` and ``aiops rollback``: the registered versions and
the champion alias, moved by people (with a reason, recorded with who and when).

Named after the ``aiops models`` command rather than "registry", which is the
package that reaches MLflow's registry.
"""

from __future__ import annotations

import argparse

from registry import DEFAULT_MODEL_NAME


def _cmd_promote(args: argparse.Namespace) -> int:
    from training.promotion import set_champion
    from training.tracking import configure_tracking

    configure_tracking()
    move = set_champion(args.model_name, args.version, action="promote", reason=args.reason,
                        by=args.by)
    print(f"{args.model_name}: champion is now version {move.version} (was "
          f"{move.previous or 'none'}); by {move.by} at {move.at}: {move.reason}")
    return 0


def _cmd_rollback(args: argparse.Namespace) -> int:
    from training.promotion import rollback
    from training.tracking import configure_tracking

    configure_tracking()
    move = rollback(args.model_name, reason=args.reason, by=args.by)
    print(f"{args.model_name}: rolled back to version {move.version} (was {move.previous}); "
          f"by {move.by} at {move.at}: {move.reason}")
    return 0


def _cmd_models(args: argparse.Namespace) -> int:
    from training.promotion import model_versions
    from training.tracking import configure_tracking

    configure_tracking()
    for row in model_versions(args.model_name):
        aliases = ",".join(row["aliases"]) or "-"
        print(f"{row['version']:>4}  {aliases:<22} {row['created']}  run {row['run_id']}  "
              f"{row['promotion']}")
    return 0


def add_commands(commands: argparse._SubParsersAction) -> None:
    """``aiops promote``, ``aiops rollback`` and ``aiops models``."""
    pr = commands.add_parser("promote", help="make a registered version the champion")
    pr.add_argument("version")
    pr.add_argument("--reason", required=True, help="why, recorded with who and when")
    pr.add_argument("--by", help="who (default: the login name)")
    pr.add_argument("--model-name", default=DEFAULT_MODEL_NAME)
    pr.set_defaults(func=_cmd_promote)

    rb = commands.add_parser("rollback", help="put back the champion the current one replaced")
    rb.add_argument("--reason", required=True, help="why, recorded with who and when")
    rb.add_argument("--by", help="who (default: the login name)")
    rb.add_argument("--model-name", default=DEFAULT_MODEL_NAME)
    rb.set_defaults(func=_cmd_rollback)

    ls = commands.add_parser("models", help="list registered versions, their aliases and promotion")
    ls.add_argument("--model-name", default=DEFAULT_MODEL_NAME)
    ls.set_defaults(func=_cmd_models)
