"""The ``nnpes`` command: thin argument parsing around the library (no physics here).

Each verb is one module of this package with ``register(subparsers)``; errors the user can
cause are :class:`nnpes.errors.NnpesError` and are printed as one line (exit status 2).
"""

from __future__ import annotations

import argparse
import contextlib
import signal
import sys
import warnings

from nnpes.cli import evaluate, export, learn, md, train
from nnpes.errors import LabelWarning, NnpesError

VERBS = (train, evaluate, md, export, learn)  # modules with register(subparsers)


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors (``nnpes VERB: error: ...``; ``--help`` still shows the usage)."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    from nnpes import __version__

    parser = _Parser(prog="nnpes", description="Machine-learned interatomic potentials in JAX.")
    parser.add_argument("--version", action="version", version=f"nnpes {__version__}")
    parser.add_argument(
        "--no-compile-cache",
        action="store_true",
        help="do not use the persistent compilation cache (default: on, in $NNPES_CACHE_DIR or ~/.cache/nnpes/jax; "
        "NNPES_NO_COMPILE_CACHE=1 does the same)",
    )
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
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
        hint = "; overrides look like key.sub=value" if hasattr(args, "overrides") else ""
        parser.error(f"unrecognized arguments: {' '.join(extra)}{hint}")
    if not args.no_compile_cache:
        from nnpes import compilation

        compilation.enable_persistent_cache()  # the entry point, not the library, sets process-wide options
    terminated = []
    try:
        with warnings.catch_warnings(), _sigterm_as_interrupt(terminated):
            warnings.showwarning = _one_line_warning(args.command)
            warnings.simplefilter("always", LabelWarning)  # one per file and label, even when repeated
            return int(args.func(args) or 0)
    except NnpesError as e:
        print(f"nnpes {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as e:
        how = "terminated (SIGTERM)" if terminated else "interrupted"
        print(f"nnpes {args.command}: {how}" + (f": {e}" if str(e) else ""), file=sys.stderr)
        return 128 + (signal.SIGTERM if terminated else signal.SIGINT)


@contextlib.contextmanager
def _sigterm_as_interrupt(received: list):
    """SIGTERM (what batch schedulers send before their time limit, and ``kill``'s default) ends a
    verb the way Ctrl-C does, so training writes its checkpoint and model and MD its frames;
    ``received`` records that it came. Only the main thread can take signals: elsewhere, nothing."""

    def handler(signum, frame):
        received.append(signum)
        raise KeyboardInterrupt

    try:
        previous = signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not the main thread
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _one_line_warning(command: str):
    """A ``warnings.showwarning`` printing each warning as one line, ``nnpes VERB: warning: ...``."""

    def show(message, category, filename, lineno, file=None, line=None):
        text = str(message).strip().splitlines()[0] if str(message).strip() else category.__name__
        print(f"nnpes {command}: warning: {text}", file=file or sys.stderr, flush=True)

    return show


if __name__ == "__main__":
    sys.exit(main())
