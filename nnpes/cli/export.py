"""``nnpes export MODEL OUT [--dtype float32|float64|both] [--platforms cpu,cuda]``: a model as
``jax.export`` programs that run without its Python code (:mod:`nnpes.export`); ``nnpes.load(OUT)``
reads them back."""

from __future__ import annotations

DEFAULT_PLATFORMS = "cpu,cuda"  # as nnpes.exported.DEFAULT_PLATFORMS (not imported: keeps --help fast)


def register(subparsers) -> None:
    p = subparsers.add_parser("export", help="write a model as jax.export programs that run without its Python code")
    p.add_argument("model", help="model directory or run directory")
    p.add_argument("out", help="export directory to write (new or empty, or an earlier export, which is replaced)")
    p.add_argument(
        "--dtype",
        choices=["float32", "float64", "both"],
        default="both",
        help="which programs to write (default both: the command switches on jax_enable_x64 for the float64 ones; "
        "the float32 programs still compute in float32)",
    )
    p.add_argument(
        "--platforms",
        default=DEFAULT_PLATFORMS,
        help=f"comma-separated jax platforms to lower for: cpu, cuda, rocm, tpu (default {DEFAULT_PLATFORMS})",
    )
    p.set_defaults(func=run)


def run(args) -> int:
    import os

    import jax

    if args.dtype != "float32":
        jax.config.update("jax_enable_x64", True)  # before any array: the float64 programs need it
    from nnpes.export import check_replaceable, export
    from nnpes.potential import load

    check_replaceable(os.path.abspath(args.out))  # before the work, not after it
    dtypes = ("float32", "float64") if args.dtype == "both" else (args.dtype,)
    platforms = tuple(p.strip() for p in args.platforms.split(",") if p.strip())
    files = export(load(args.model), args.out, dtypes, platforms)
    size = sum(os.path.getsize(os.path.join(args.out, f)) for f in files)
    print(f"nnpes export: wrote {args.out} ({', '.join(dtypes)} for {', '.join(platforms)}; {size / 1e3:.0f} kB)")
    return 0
