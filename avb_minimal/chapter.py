"""The command line every chapter script shares: --quick, --full, --out, --seed."""
import argparse
import os


def chapter_args(description, quick_help, full_help, default_out, argv=None):
    """Parse a chapter's arguments.  --quick and --full exclude each other, and --out
    must be a writable folder (checked before any work starts, so a long run never
    fails at the end for want of a place to put its figure)."""
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--quick", action="store_true", help=quick_help)
    p.add_argument("--full", action="store_true", help=full_help)
    p.add_argument("--out", metavar="DIR", default=default_out, help="where the figure goes (default: runs/chapters)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    args = p.parse_args(argv)
    if args.quick and args.full:
        p.error("--quick and --full exclude each other")
    try:
        os.makedirs(args.out, exist_ok=True)
        probe = os.path.join(args.out, f".probe-{os.getpid()}")
        open(probe, "w").close()
        os.remove(probe)
    except OSError as e:
        p.error(f"--out {args.out!r} is not a writable folder ({e.strerror or e})")
    return args
