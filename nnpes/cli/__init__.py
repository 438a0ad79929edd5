"""The ``nnpes`` command: thin argument parsing around the library (no physics here).

Each verb is one module of this package with ``register(subparsers)``; errors the user can
cause are :class:`nnpes.errors.NnpesError` and are printed as one line (exit status 2).
"""

from __future__ import annotations

import argparse
import sys

from nnpes.cli import evaluate, md, train
from nnpes.errors import NnpesError

VERBS = (train, evaluate, md)  # modules with register(subparsers)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="nnpes", description="Machine-learned interatomic potentials in JAX.")
    sub = parser.add_subparsers(dest="command", required=True)
    for verb in VERBS:
        verb.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    # key=value overrides may come after options (`nnpes train c.yaml --workdir d a.b=1`)
    if hasattr(args, "overrides"):
        args.overrides += [x for x in extra if "=" in x and not x.startswith("-")]
        extra = [x for x in extra if not ("=" in x and not x.startswith("-"))]
    if extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    try:
        return int(args.func(args) or 0)
    except NnpesError as e:
        print(f"nnpes {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"nnpes {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
