"""Command-line arguments checked before any work: integer types for argparse, and the
places results are written to.  Shared by `__main__` and the chapters.  (argparse prefixes
a type's message with "argument --flag:", so the types do not name their flag.)"""
import argparse
import os

from .backend import device_module
from .data import data_dir


def positive_int(s):
    """argparse type: an integer >= 1."""
    try:
        v = int(s)
    except ValueError:
        v = 0
    if v < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {s!r}")
    return v


def non_negative_int(s):
    """argparse type: an integer >= 0."""
    try:
        v = int(s)
    except ValueError:
        v = -1
    if v < 0:
        raise argparse.ArgumentTypeError(f"must be a non-negative integer, got {s!r}")
    return v


def writable_folder(path, flag, create=True, created=None):
    """Check that files can be written in folder `path`; ValueError naming `flag` (the
    command-line argument) otherwise.  create=True makes it if needed (and appends the
    topmost folder it made to the list `created`); create=False changes nothing and checks
    the nearest folder that exists instead."""
    if os.path.exists(path) and not os.path.isdir(path):
        raise ValueError(f"{flag} {path!r} is a file, not a folder")
    top = os.path.abspath(path)
    while not os.path.exists(os.path.dirname(top)) and os.path.dirname(top) != top:
        top = os.path.dirname(top)
    if created is not None and not os.path.exists(top):
        created.append(top)
    if not create:
        base = os.path.abspath(path)
        while not os.path.exists(base):
            base = os.path.dirname(base)
        if not os.path.isdir(base):
            raise ValueError(f"{flag} {path!r} cannot be made: {base!r} is a file, not a folder")
        if not os.access(base, os.W_OK | os.X_OK):
            raise ValueError(f"{flag} {path!r} is not a writable folder ({base!r} cannot be written)")
        return path
    try:
        os.makedirs(path, exist_ok=True)
        probe = os.path.join(path, f".probe-{os.getpid()}")
        open(probe, "w").close()
        os.remove(probe)
    except OSError as e:
        raise ValueError(f"{flag} {path!r} is not a writable folder ({e.strerror or e})") from None
    return path


def writable_file(path, flag, create=True, created=None):
    """A file path whose folder can hold it (see `writable_folder`)."""
    if os.path.isdir(path):
        raise ValueError(f"{flag} {path!r} is a folder; give a file path")
    writable_folder(os.path.dirname(os.path.abspath(path)), f"{flag}'s folder", create, created)
    return path


def remove_created_folders(args):
    """After a refused or failed command: remove the folders `check_paths` made for it if
    they are still empty, so that a refused run leaves nothing behind."""
    for top in reversed(getattr(args, "created_folders", [])):
        for folder, _, _ in sorted(os.walk(top), key=lambda w: -len(w[0])):     # deepest first
            try:
                os.rmdir(folder)
            except OSError:
                pass


def check_paths(args):
    """The command line's paths, checked before any work, each error naming its flag: first
    the checks that change nothing (a file where a folder is wanted, the --data folder, the
    bench options that go together), then --out and the output files' folders are made."""
    if getattr(args, "device", "cpu") == "gpu":          # no GPU, no cupy: one line, before any work
        device_module("gpu")
    reproduce = args.command == "reproduce"          # (assignments build's OUT is build()'s own check)
    outputs = [(getattr(args, f), "--" + f) for f in ("json", "plot", "checkpoint") if getattr(args, f, None)]
    seen = {}
    for path, flag in outputs:          # two outputs in one file: the last writer would silently win
        real = os.path.realpath(path)
        if real in seen:
            raise ValueError(f"{flag} {path!r} is the same file as {seen[real]}: give each output its own file")
        seen[real] = f"{flag} {path!r}"
    args.created_folders = []
    table_only = reproduce and args.experiment == "mnist" and args.table     # reads one file, writes nothing
    for create in (False, True):
        if reproduce and not table_only:
            writable_folder(args.out, "--out", create, args.created_folders)
        for path, flag in outputs:
            writable_file(path, flag, create, args.created_folders)
        if create:
            break
        for path in args.table if table_only else ():
            if not os.path.isfile(path):
                raise ValueError(f"--table {path!r}: no such file (a JSON written by reproduce mnist --json)")
        if reproduce and args.experiment == "mnist" and not table_only:
            data_dir(args.data)
            if args.pretrained and not os.path.isdir(args.pretrained):
                raise ValueError(f"--pretrained {args.pretrained!r}: no such folder (it should hold "
                                 "<model>_z<latent>.npz files, e.g. results/mnist)")
        if args.command == "bench" and args.what == "step":
            modes = [m for m in ("sweep", "profile", "time_to_result") if getattr(args, m)]
            if len(modes) > 1:
                raise ValueError(f"--{', --'.join(m.replace('_', '-') for m in modes)}: choose one")
            if args.plot and not args.sweep:
                raise ValueError("--plot draws a --sweep: add --sweep")
            if (args.also or args.plot_cpu) and not args.plot:
                raise ValueError("--also and --plot-cpu go with --plot (and --sweep)")
            for path in args.also:
                if not os.path.isfile(path):
                    raise ValueError(f"--also {path!r}: no such file (a JSON written by bench step --sweep --json)")
        if args.command == "bench" and args.what == "ais":
            for path, flag in ((args.data, "--data"), (args.model, "--model")):
                if path is not None and not os.path.isfile(path):
                    raise ValueError(f"{flag} {path!r}: no such file")


def seed_list(s):
    """argparse type of --seeds: 'N' (one integer, no comma) means the seeds 0..N-1; a comma
    list 'A,B,C' means those seeds, in that order (one seed S: --seed S).  -> tuple of ints."""
    if "," not in s:
        return tuple(range(positive_int(s)))
    parts = [p.strip() for p in s.split(",") if p.strip()]
    seeds = tuple(non_negative_int(p) for p in parts)
    if not seeds or len(set(seeds)) != len(seeds):
        raise argparse.ArgumentTypeError(f"takes N (the seeds 0..N-1) or a comma list of distinct seeds "
                                         f"such as 0,1,2; got {s!r}")
    return seeds
