"""Checkpoints: pytrees of arrays plus JSON metadata in one .npz, written atomically; JSON
results, written atomically with their provenance (`provenance`: which code, command, machine)."""
from __future__ import annotations

import ctypes
import datetime
import json
import os
import shlex
import subprocess
import sys
import tempfile
import zipfile

import numpy as np

import avb_minimal

from .trees import tree_leaves, tree_map_with_path

# appended to "this checkpoint is not for this run" errors: what the user can do about it
OTHER_RUN = "; it belongs to another run: delete it, or write this run elsewhere (--out / --checkpoint)"


def save_checkpoint(path: str, trees: dict, meta: dict) -> None:
    """Write {name: pytree} and a JSON-able `meta` dict to `path` atomically
    (temporary file in the same folder, then rename): a crash never leaves a
    half-written checkpoint behind."""
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    arrays = {}
    for name, tree in trees.items():
        for leaf_path, a in tree_leaves(tree):
            arrays[f"{name}/{leaf_path}" if leaf_path else name] = np.asarray(a)
    arrays["__meta__"] = np.array(json.dumps(meta))
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".npz", dir=folder)
    try:
        with os.fdopen(fd, "wb") as fh:
            np.savez(fh, **arrays)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def load_checkpoint(path: str, templates: dict) -> tuple:
    """Read a checkpoint written by `save_checkpoint`.  `templates` gives the
    expected pytree per name; every array must exist with the template's shape.
    Returns ({name: pytree}, meta).  Raises ValueError naming what is missing or
    mis-shaped."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"checkpoint {path!r} does not exist")
    with _open(path) as f:
        stored = {k: f[k] for k in f.files}
    if "__meta__" not in stored:
        raise _not_ours(path, "it has no '__meta__' entry")
    meta = json.loads(str(stored.pop("__meta__")))
    missing, misshaped = [], []

    def take(name):
        def fn(leaf_path, template):
            key = f"{name}/{leaf_path}" if leaf_path else name
            if key not in stored:
                missing.append(key)
                return template
            a = stored[key]
            if a.shape != np.shape(template):
                misshaped.append(f"{key}: expected {np.shape(template)}, found {a.shape}")
                return template
            return a.astype(np.asarray(template).dtype, copy=False)
        return fn

    out = {name: tree_map_with_path(take(name), tree) for name, tree in templates.items()}
    if missing or misshaped:
        msg = [f"checkpoint {path!r} does not match the model:"]
        if missing:
            msg.append(f"missing arrays: {', '.join(missing[:8])}" + (" ..." if len(missing) > 8 else ""))
        if misshaped:
            msg.append("mis-shaped arrays: " + "; ".join(misshaped[:8]))
        raise ValueError(" ".join(msg))
    return out, meta


def _not_ours(path, why):
    return ValueError(f"checkpoint {path!r} is not a checkpoint written by avb_minimal (an .npz "
                      f"with a '__meta__' entry): {why}" + OTHER_RUN)


def _open(path):
    """np.load of a checkpoint; ValueError naming the file if it is not an .npz (empty, cut
    short, a .npy, another format, or a folder).  Other OSErrors (permissions) pass through."""
    if os.path.isdir(path):
        raise _not_ours(path, "it is a folder")
    if not zipfile.is_zipfile(path):
        raise _not_ours(path, "it is not an .npz (zip) file")
    try:
        return np.load(path, allow_pickle=False)
    except (zipfile.BadZipFile, EOFError, ValueError) as e:
        raise _not_ours(path, f"{type(e).__name__}: {e}") from None


def read_meta(path: str) -> dict:
    """Only the metadata of a checkpoint (to check what it holds before loading it)."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"checkpoint {path!r} does not exist")
    with _open(path) as f:
        if "__meta__" not in f.files:
            raise _not_ours(path, "it has no '__meta__' entry")
        return json.loads(str(f["__meta__"]))


def package_version() -> str:
    """The package's version (avb_minimal.__version__)."""
    return avb_minimal.__version__


def git_commit(folder: str | None = None) -> dict:
    """{'git_commit': the HEAD commit of the git checkout the package runs from, 'git_dirty':
    whether its tracked files differ from it}; both None outside a checkout (an installed
    package, no git).  Never raises."""
    pkg = os.path.dirname(os.path.abspath(avb_minimal.__file__))
    root = folder or os.path.dirname(pkg)
    none = {"git_commit": None, "git_dirty": None}
    try:
        top = subprocess.run(["git", "-C", root, "rev-parse", "--show-toplevel", "HEAD"], capture_output=True,
                             text=True, timeout=10)
        lines = top.stdout.split()
        # the package's own checkout only, not a repository it happens to be installed inside
        if top.returncode != 0 or len(lines) != 2 or os.path.realpath(lines[0]) != os.path.realpath(root):
            return none
        dirty = subprocess.run(["git", "-C", root, "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10)
        return {"git_commit": lines[1], "git_dirty": bool(dirty.stdout.strip()) if dirty.returncode == 0 else None}
    except (OSError, subprocess.SubprocessError):
        return none


def blas_threads() -> int | None:
    """The thread count of the OpenBLAS numpy loaded (asked of the library itself), else the
    OPENBLAS_NUM_THREADS / OMP_NUM_THREADS setting, else None (unknown)."""
    try:
        with open("/proc/self/maps", encoding="utf-8") as fh:
            libs = {line.split()[-1] for line in fh if "openblas" in line.lower() and ".so" in line}
        for lib in sorted(libs):
            so = ctypes.CDLL(lib)
            for name in ("openblas_get_num_threads", "openblas_get_num_threads64_",
                         "scipy_openblas_get_num_threads64_", "scipy_openblas_get_num_threads"):
                fn = getattr(so, name, None)
                if fn is not None:
                    return int(fn())
    except (OSError, ValueError, IndexError):
        pass
    for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS"):
        if os.environ.get(var, "").isdigit():
            return int(os.environ[var])
    return None


def command_line(argv: list) -> str:
    """argv as one shell line a user can paste: `python -m avb_minimal ...` for the package's
    command line (sys.argv[0] is then the path of __main__.py), a script's path as given."""
    first = argv[0] if argv else ""
    if os.path.basename(first) == "__main__.py" and os.path.basename(os.path.dirname(first)) == "avb_minimal":
        first = "python -m avb_minimal"
    elif first.endswith(os.sep + "avb-minimal"):
        first = "avb-minimal"
    return " ".join([first, shlex.join(argv[1:])]).strip()


def provenance(device: str = "cpu", argv: list | None = None) -> dict:
    """Where a result comes from, recorded in every JSON the package writes: the package
    version, the git commit (None outside a checkout), the full command line (default
    sys.argv), the date (ISO 8601, UTC), the BLAS thread count and the device."""
    return {"package": "avb-minimal", "version": package_version(), **git_commit(),
            "command_line": command_line(sys.argv if argv is None else argv),
            "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "blas_threads": blas_threads(), "device": device}


def write_json(path: str, obj: object, device: str | None = None) -> None:
    """Write JSON atomically: a temporary file beside `path`, then a rename.  On any error
    the temporary file is removed and `path` is left as it was.  With `device` ('cpu' or
    'gpu'), a dict gets a "provenance" key (see `provenance`)."""
    if device is not None:
        obj = dict(obj, provenance=provenance(device))
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".tmp-{os.path.basename(path)}.", suffix=".json", dir=folder)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(obj, fh, indent=2, default=float)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
