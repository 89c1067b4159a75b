"""Checkpoints: pytrees of arrays plus JSON metadata in one .npz, written atomically."""
from __future__ import annotations

import json
import os
import tempfile
import zipfile

import numpy as np

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


def write_json(path: str, obj: object) -> None:
    """Write JSON atomically: a temporary file beside `path`, then a rename.  On any error
    the temporary file is removed and `path` is left as it was."""
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
