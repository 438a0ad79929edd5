"""The ``nnpes`` command: thin argument parsing around the library (no physics here)."""

from __future__ import annotations

import argparse
import sys

from nnpes.errors import NnpesError


def _train(args) -> int:
    from nnpes.train import load_config, train

    cfg = load_config(args.config, args.overrides, workdir=args.workdir)
    train(cfg, args.config)
    return 0


def _evaluate(args) -> int:
    from nnpes.evaluate_cli import run

    return run(args)


def _config(args) -> int:
    from nnpes.train.config import load_config, reference_markdown

    if args.config is None:
        print(reference_markdown())
        return 0
    import yaml

    cfg = load_config(args.config, args.overrides)
    print(yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False), end="")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="nnpes", description="Machine-learned interatomic potentials in JAX.")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("train", help="train a potential from a YAML config (resumes from the run directory)")
    p.add_argument("config", help="YAML config file")
    p.add_argument("overrides", nargs="*", help="key.sub=value overrides")
    p.add_argument("--workdir", help="run directory (wins over the config's workdir)")
    p.set_defaults(func=_train)

    p = sub.add_parser("evaluate", help="errors of a model on labelled files")
    p.add_argument("model", help="model directory or run directory")
    p.add_argument("data", nargs="+", help="ASE-readable labelled files")
    p.add_argument("--json", help="write metrics as JSON to this file")
    p.add_argument("--plot", help="write energy and force parity plots to this PNG")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--dtype", choices=["float32", "float64"], default="float32")
    p.add_argument("--energy-key", default="energy")
    p.add_argument("--forces-key", default="forces")
    p.add_argument("--stress-key", default="stress")
    p.set_defaults(func=_evaluate)

    p = sub.add_parser("config", help="validate and print a config; without one, print the config reference")
    p.add_argument("config", nargs="?", help="YAML config file")
    p.add_argument("overrides", nargs="*", help="key.sub=value overrides")
    p.set_defaults(func=_config)

    try:
        from nnpes.md.cli import register
    except ImportError:  # the md verb lands with the MD module
        register = None
    if register is not None:
        register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    # key=value overrides may come after options (`nnpes train c.yaml --workdir d a.b=1`)
    if args.command in ("train", "config"):
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
