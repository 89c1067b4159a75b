"""Command-line arguments checked before any work: integer types for argparse, and the
places results are written to.  Shared by `__main__` and the chapters.  (argparse prefixes
a type's message with "argument --flag:", so the types do not name their flag.)"""
import argparse
import os


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


def writable_folder(path, flag, create=True):
    """Check that files can be written in folder `path`; ValueError naming `flag` (the
    command-line argument) otherwise.  create=True makes it if needed; create=False
    changes nothing and checks the nearest folder that exists instead."""
    if os.path.exists(path) and not os.path.isdir(path):
        raise ValueError(f"{flag} {path!r} is a file, not a folder")
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


def writable_file(path, flag, create=True):
    """A file path whose folder can hold it (see `writable_folder`)."""
    if os.path.isdir(path):
        raise ValueError(f"{flag} {path!r} is a folder; give a file path")
    writable_folder(os.path.dirname(os.path.abspath(path)), f"{flag}'s folder", create)
    return path
