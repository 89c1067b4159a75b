"""Checkpoints: pytrees of arrays plus JSON metadata in one .npz, written atomically; one
writer per checkpoint (`hold`, a lock file); JSON results, written atomically with their
provenance (`provenance`: which code, command, machine)."""
from __future__ import annotations

import ctypes
import datetime
import json
import os
import re
import shlex
import subprocess
import sys
import tempfile
import zipfile
import zlib
from contextlib import contextmanager

import numpy as np

import avb_minimal

from .trees import tree_leaves, tree_map_with_path

try:                       # POSIX; where there is no fcntl (Windows) `hold` cannot lock (README)
    import fcntl
except ImportError:        # pragma: no cover
    fcntl = None

# appended to "this checkpoint is not for this run" errors: what the user can do about it
OTHER_RUN = "; it belongs to another run: delete it, or write this run elsewhere (--out / --checkpoint)"
# what a temporary file of an interrupted checkpoint write of an older version is called
_OLD_PARTIAL = re.compile(r"^\.tmp-[a-z0-9_]{8}\.npz$")


class CheckpointBusy(ValueError):
    """Another running process holds the checkpoint (see `hold`)."""


def _partial_prefix(path):
    return f".tmp-{os.path.basename(path)}."


def _write_failed(what, path, e, existed):
    """OSError naming the file that could not be written (a full disk says only [Errno 28])
    and what became of the previous version."""
    err = OSError(f"could not write {what} {path!r} ({e.strerror or e}); "
                  + ("the previous version is intact" if existed else "nothing was written there"))
    err.errno = e.errno
    return err


def save_checkpoint(path: str, trees: dict, meta: dict) -> None:
    """Write {name: pytree} and a JSON-able `meta` dict to `path` atomically
    (temporary file in the same folder, then rename): a crash never leaves a
    half-written checkpoint behind.  A failed write (a full disk) raises an OSError that
    names the file and says that the previous checkpoint is intact."""
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    arrays = {}
    for name, tree in trees.items():
        for leaf_path, a in tree_leaves(tree):
            arrays[f"{name}/{leaf_path}" if leaf_path else name] = np.asarray(a)
    arrays["__meta__"] = np.array(json.dumps(meta))
    existed = os.path.exists(path)
    tmp = None
    try:
        os.makedirs(folder, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=_partial_prefix(path), suffix=".npz", dir=folder)
        with os.fdopen(fd, "wb") as fh:
            np.savez(fh, **arrays)
        os.replace(tmp, path)
    except OSError as e:
        _remove(tmp)
        raise _write_failed("checkpoint", path, e, existed) from None
    except BaseException:
        _remove(tmp)
        raise


def _remove(tmp):
    if tmp is not None and os.path.exists(tmp):
        os.remove(tmp)


def remove_partials(path: str) -> list:
    """Remove the temporary files that killed writes of checkpoint `path` left in its folder
    (only safe while holding it: see `hold`).  Returns their paths."""
    folder = os.path.dirname(os.path.abspath(path))
    prefix, gone = _partial_prefix(path), []
    for name in os.listdir(folder) if os.path.isdir(folder) else []:
        if (name.startswith(prefix) and name.endswith(".npz")) or _OLD_PARTIAL.match(name):
            try:
                os.remove(os.path.join(folder, name))
                gone.append(os.path.join(folder, name))
            except OSError:
                pass
    return gone


@contextmanager
def hold(path: str):
    """One writer per checkpoint: an exclusive lock (fcntl.flock) on `<path>.lock`, which
    holds the holder's process id, for as long as the `with` block runs.  A second process
    asking for the same checkpoint gets CheckpointBusy naming the holder.  The operating
    system releases the lock when its process dies, so the lock file a killed run leaves is
    simply taken over.  On entry, the partial files of killed writes are removed."""
    path = os.fspath(path)
    lock = path + ".lock"
    fd = None
    if fcntl is not None:
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        while fd is None:
            fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.read(fd, 32).decode(errors="replace").strip() or "unknown"
                os.close(fd)
                raise CheckpointBusy(f"checkpoint {path!r} is being written by another run (process {holder}, "
                                     f"lock {lock!r}); wait for it to finish, or write this run elsewhere "
                                     "(--checkpoint / --out)") from None
            try:                 # the file we locked may have been removed by a holder that just ended
                same = os.fstat(fd).st_ino == os.stat(lock).st_ino
            except FileNotFoundError:
                same = False
            if not same:
                os.close(fd)
                fd = None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
    try:
        remove_partials(path)
        yield path
    finally:
        if fd is not None:
            try:
                os.remove(lock)             # still ours: removed before the lock is released
            except OSError:
                pass
            os.close(fd)


def load_checkpoint(path: str, templates: dict) -> tuple:
    """Read a checkpoint written by `save_checkpoint`.  `templates` gives the
    expected pytree per name; every array must exist with the template's shape and be
    finite.  Returns ({name: pytree}, meta).  Raises ValueError naming the file and what is
    missing, mis-shaped, non-finite or unreadable."""
    path = os.fspath(path)
    stored = _read(path)
    meta = _meta(path, stored.pop("__meta__", None))
    missing, misshaped, bad = [], [], []

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
            if not np.issubdtype(a.dtype, np.number):
                misshaped.append(f"{key}: expected numbers, found dtype {a.dtype}")
                return template
            if not np.all(np.isfinite(a)):
                bad.append(key)
            return a.astype(np.asarray(template).dtype, copy=False)
        return fn

    out = {name: tree_map_with_path(take(name), tree) for name, tree in templates.items()}
    if missing or misshaped or bad:
        msg = [f"checkpoint {path!r} does not match the model:"]
        if missing:
            msg.append(f"missing arrays: {', '.join(missing[:8])}" + (" ..." if len(missing) > 8 else ""))
        if misshaped:
            msg.append("mis-shaped arrays: " + "; ".join(misshaped[:8]))
        if bad:
            msg.append("arrays holding NaN or inf (a corrupted or diverged run): " + ", ".join(bad[:8])
                       + (" ..." if len(bad) > 8 else ""))
        raise ValueError(" ".join(msg))
    return out, meta


def _not_ours(path, why):
    return ValueError(f"checkpoint {path!r} is not a checkpoint written by avb_minimal (an .npz "
                      f"with a '__meta__' entry): {why}" + OTHER_RUN)


def _read(path, keys=None):
    """{key: array} of the checkpoint's entries (`keys`: only those); ValueError naming the
    file for every way it can be unreadable: missing, a folder, not an .npz (empty, cut short,
    a .npy, a pickle), flipped bytes, bad deflate data, Python objects.  Permission errors
    pass through (they name the file)."""
    if not os.path.exists(path):
        raise FileNotFoundError(f"checkpoint {path!r} does not exist")
    if os.path.isdir(path):
        raise _not_ours(path, "it is a folder")
    if not zipfile.is_zipfile(path):
        raise _not_ours(path, "it is not an .npz (zip) file")
    try:
        with np.load(path, allow_pickle=False) as f:
            return {k: f[k] for k in f.files if keys is None or k in keys}
    except ValueError as e:
        if "allow_pickle" in str(e) or "pickle" in str(e):
            raise _not_ours(path, "it holds Python objects (pickled data), which are never loaded") from None
        raise _not_ours(path, f"{type(e).__name__}: {e}") from None
    except (zipfile.BadZipFile, zlib.error, EOFError, KeyError, NotImplementedError, TypeError) as e:
        raise _not_ours(path, f"it is damaged ({type(e).__name__}: {e})") from None


def _meta(path, raw):
    if raw is None:
        raise _not_ours(path, "it has no '__meta__' entry")
    try:
        meta = json.loads(str(raw))
    except ValueError:
        meta = None
    if not isinstance(meta, dict):
        raise _not_ours(path, "its '__meta__' entry is not a JSON object")
    return meta


def read_meta(path: str) -> dict:
    """Only the metadata of a checkpoint (to check what it holds before loading it)."""
    path = os.fspath(path)
    return _meta(path, _read(path, {"__meta__"}).get("__meta__"))


def check_meta(path: str, meta: dict, fields: dict) -> dict:
    """Validate metadata: `fields` maps each required key to its type(s) (int excludes bool)
    and, for numbers, the least value allowed.  ValueError naming the file and the first bad
    field; returns `meta`."""
    for key, (types, least) in fields.items():
        v = meta.get(key)
        ok = isinstance(v, types) and not (isinstance(v, bool) and bool not in types)
        if ok and least is not None and not v >= least:
            ok = False
        if not ok:
            want = " or ".join(t.__name__ for t in types) + (f" >= {least}" if least is not None else "")
            raise ValueError(f"checkpoint {path!r} has unreadable metadata: {key!r} should be {want}, "
                             f"found {v!r}" + ("" if key in meta else " (missing)") + OTHER_RUN)
    return meta


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


_STARTED_FROM = {}      # git_commit() when the command started (note_start), else empty


def note_start() -> None:
    """Take the git state when a command starts, so that a result written hours later names
    the code that ran, not what the checkout holds by then (the command line calls it)."""
    _STARTED_FROM.clear()
    _STARTED_FROM.update(git_commit())


def provenance(device: str = "cpu", argv: list | None = None) -> dict:
    """Where a result comes from, recorded in every JSON the package writes: the package
    version, the git commit (None outside a checkout; taken when the command started, see
    `note_start`, else now), the full command line (default sys.argv), the date the JSON
    was written (ISO 8601, UTC), the BLAS thread count and the device."""
    return {"package": "avb-minimal", "version": package_version(), **(_STARTED_FROM or git_commit()),
            "command_line": command_line(sys.argv if argv is None else argv),
            "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "blas_threads": blas_threads(), "device": device}


def write_json(path: str, obj: object, device: str | None = None) -> None:
    """Write JSON atomically: a temporary file beside `path`, then a rename.  On any error
    the temporary file is removed and `path` is left as it was (an OSError names the file).
    With `device` ('cpu' or 'gpu'), a dict gets a "provenance" key (see `provenance`)."""
    path = os.fspath(path)
    if device is not None:
        obj = dict(obj, provenance=provenance(device))
    folder = os.path.dirname(os.path.abspath(path))
    existed, tmp = os.path.exists(path), None
    try:
        text = json.dumps(obj, indent=2, default=float)
        os.makedirs(folder, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".tmp-{os.path.basename(path)}.", suffix=".json", dir=folder)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.replace(tmp, path)
    except OSError as e:
        _remove(tmp)
        raise _write_failed("file", path, e, existed) from None
    except BaseException:
        _remove(tmp)
        raise
