"""The package's layout: imports go down the layer map of avb_minimal/__init__.py, never up
and never in a loop; no private name crosses a module boundary; imports inside functions
only where the module says why (the command line's per-command imports, cupy)."""
import ast
import os

import avb_minimal

PKG = os.path.dirname(os.path.abspath(avb_minimal.__file__))

# Top to bottom, as in the layer map: a module may import only modules further down.
ORDER = ["__main__", "chapter", "argcheck",
         "course.build", "course.grade", "course.tasks", "course.answers", "course.plugin",
         "fast.selfcheck", "fast.bench_step", "fast.bench_ais", "fast.bench_ops",
         "experiments.table1", "experiments.eight_schools", "experiments.mnist_study", "experiments.mnist",
         "experiments.plots",
         "bavae", "vi", "mcmc", "ais", "train", "fast.graph", "fast.device_ops", "fast.step", "evaluate",
         "related", "objectives", "models", "targets", "data", "checkpoint", "optim", "nn", "distributions", "ops", "trees",
         "progress", "fast.emulate", "backend"]
# Modules allowed to import inside functions, with the reason their source states.
INLINE_OK = {"__main__": "each command imports the modules it runs",
             "backend": "cupy is imported here and nowhere else"}


def modules():
    out = {}
    for dirpath, _, files in os.walk(PKG):
        for f in files:
            if f.endswith(".py") and f != "__init__.py":
                rel = os.path.relpath(os.path.join(dirpath, f), PKG)[:-3].replace(os.sep, ".")
                out[rel] = os.path.join(dirpath, f)
    return out


def imports(name, path):
    """[(imported module, [names], inside a function?)] of avb_minimal's own modules."""
    tree = ast.parse(open(path, encoding="utf-8").read())
    pkg = name.split(".")[:-1]
    found = []

    def visit(node, in_fn):
        for child in ast.iter_child_nodes(node):
            fn = in_fn or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef))
            if isinstance(child, ast.ImportFrom) and child.level:
                base = pkg[:len(pkg) - (child.level - 1)] if child.level > 1 else pkg
                mod = ".".join(base + ([child.module] if child.module else []))
                for a in child.names:
                    sub = f"{mod}.{a.name}" if mod else a.name
                    if sub in ORDER:                 # `from . import models`: a module
                        found.append((sub, [], fn))
                    else:
                        found.append((mod, [a.name], fn))
            elif isinstance(child, ast.ImportFrom) and (child.module or "").startswith("avb_minimal"):
                found.append((child.module[len("avb_minimal."):], [a.name for a in child.names], fn))
            visit(child, fn)
    visit(tree, False)
    return found


def test_every_module_is_on_the_layer_map():
    mods = set(modules())
    assert mods == set(ORDER), (sorted(mods - set(ORDER)), sorted(set(ORDER) - mods))
    doc = avb_minimal.__doc__
    for m in ORDER:                                  # and named in __init__'s docstring
        assert m.split(".")[-1] in doc, m


def test_imports_only_go_down_the_layer_map():
    rank = {m: i for i, m in enumerate(ORDER)}
    up = []
    for name, path in modules().items():
        for mod, _, _ in imports(name, path):
            if mod in rank and rank[mod] <= rank[name]:
                up.append(f"{name} imports {mod}")
    assert not up, up


def test_no_private_name_crosses_a_module():
    private = [f"{name} imports {mod}.{n}" for name, path in modules().items()
               for mod, names, _ in imports(name, path) for n in names if n.startswith("_")]
    assert not private, private


def test_imports_inside_functions_only_where_the_module_says_why():
    inline = {}
    for name, path in modules().items():
        tree = ast.parse(open(path, encoding="utf-8").read())
        for fn in ast.walk(tree):
            if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
                for node in ast.walk(fn):
                    if isinstance(node, (ast.Import, ast.ImportFrom)):
                        inline.setdefault(name, []).append(node.lineno)
    assert set(inline) <= set(INLINE_OK), {k: v for k, v in inline.items() if k not in INLINE_OK}
    for name in inline:
        text = open(modules()[name], encoding="utf-8").read()
        assert INLINE_OK[name].lower() in text.lower(), f"{name} should say why it imports inside functions"


def test_no_module_over_400_lines_without_a_reason_at_its_top():
    long = []
    for name, path in modules().items():
        text = open(path, encoding="utf-8").read()
        if text.count("\n") > 400 and "Longer than 400 lines because" not in text[:3000]:
            long.append((name, text.count("\n")))
    assert not long, long
