"""``nnpes train CONFIG`` and ``nnpes config [CONFIG]``."""

from __future__ import annotations

import argparse


def register(subparsers) -> None:
    p = subparsers.add_parser("train", help="train a potential from a YAML config (resumes from the run directory)")
    p.add_argument("config", help="YAML config file")
    p.add_argument("overrides", nargs="*", help="key.sub=value overrides")
    p.add_argument("--workdir", help="run directory (wins over the config's workdir)")
    p.set_defaults(func=run_train)

    p = subparsers.add_parser("config", help="validate and print a config; without one, print the config reference")
    p.add_argument("config", nargs="?", help="YAML config file")
    p.add_argument("overrides", nargs="*", help="key.sub=value overrides")
    p.set_defaults(func=run_config)


def run_train(args: argparse.Namespace) -> int:
    from nnpes.train import load_config, train

    cfg = load_config(args.config, args.overrides, workdir=args.workdir)
    if cfg.dtype == "float64":  # the entry point, not the library, flips process-wide settings
        import jax

        jax.config.update("jax_enable_x64", True)
    train(cfg)
    return 0


def run_config(args: argparse.Namespace) -> int:
    from nnpes.train.config import load_config
    from nnpes.train.config_reference import reference_markdown

    if args.config is None:
        print(reference_markdown())
        return 0
    import yaml

    cfg = load_config(args.config, args.overrides)
    print(yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False), end="")
    return 0
