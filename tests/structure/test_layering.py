"""The import graph of the installed package runs one way.

Rooms, bottom first; a module may import its own room and the rooms below it, never one
above, and no chain of imports (module-level or inside a function) may come back to where
it started:

    errors      the one exception type the tools turn into a one-line message
    utils       leaves: atomic writes, fault points, drawing, event-file reading
    config      Config, typed overrides, recipe loading, config.json
    data        catalogs, class splits, the resolved data spec, transforms, pipeline
    modeling    the detector's Cells
    solver      optimizer parameter groups, LR schedule
    checkpoint  save / load policy / resume, surgery, weight conversion
    pcb         prototypical calibration
    evaluation  COCO / VOC evaluators, the seed aggregate
    inference   detections over a data set, images, export, evaluation pictures
    engine      runtime, TrainStep, the Model.train loop, train / eval drivers, checks, CLI
    callbacks   the training callbacks (top-level `callbacks/`, installed as defrcn.callbacks)
    apps        demo, benchmark, self-check
    recipes     the recipe files and their shared parts (`recipes/`, as defrcn.recipes)
    testing     helpers for the tests

The graph is read from the source files (ast), so the test needs no import of MindSpore.
"""
import ast
from pathlib import Path


REPO = Path(__file__).resolve().parents[2]
ROOMS = ("errors", "utils", "config", "data", "modeling", "solver", "checkpoint", "pcb", "evaluation",
         "inference", "engine", "callbacks", "apps", "recipes", "testing")
# where each installed package's files live (setup.py's package_dir)
SOURCE_ROOTS = {"defrcn": REPO / "defrcn", "defrcn.callbacks": REPO / "callbacks",
                "defrcn.recipes": REPO / "recipes"}


def module_files(roots=None):
    """{dotted module name: file} of every module of the installed package."""
    modules = {}
    for package, folder in (roots or SOURCE_ROOTS).items():
        for path in sorted(folder.rglob("*.py")):
            parts = list(path.relative_to(folder).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            modules[".".join([package, *parts])] = path
    return modules


def imports_of(path, module, known):
    """The package modules `path` imports anywhere in its body (function-level imports too)."""
    found = set()
    tree = ast.parse(path.read_text(), str(path))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(tree):
        names = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[:len(anchor) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            names = [base] + [f"{base}.{alias.name}" for alias in node.names]
        for name in names:
            while name and name not in known:
                name = name.rpartition(".")[0]
            if name and name != module:
                found.add(name)
    return found


def import_graph(roots=None):
    files = module_files(roots)
    return {module: imports_of(path, module, files) for module, path in files.items()}


def room_of(module):
    parts = module.split(".")
    if len(parts) == 1:
        return None  # the package's own __init__
    return parts[1]


def upward_imports(graph):
    """(importer, imported) pairs where the imported module's room is above the importer's."""
    bad = []
    for module, targets in sorted(graph.items()):
        here = room_of(module)
        for target in sorted(targets):
            there = room_of(target)
            if here is None or there is None:
                continue
            if here not in ROOMS or there not in ROOMS:
                bad.append((module, target))
            elif ROOMS.index(there) > ROOMS.index(here):
                bad.append((module, target))
    return bad


def find_cycle(graph):
    """One cycle as a list of modules (first == last), or None."""
    state = {}
    stack = []

    def visit(node):
        state[node] = "open"
        stack.append(node)
        for target in sorted(graph.get(node, ())):
            if state.get(target) == "open":
                return stack[stack.index(target):] + [target]
            if target not in state:
                cycle = visit(target)
                if cycle:
                    return cycle
        stack.pop()
        state[node] = "done"
        return None

    for node in sorted(graph):
        if node not in state:
            cycle = visit(node)
            if cycle:
                return cycle
    return None


def test_every_module_belongs_to_a_room():
    graph = import_graph()
    assert len(graph) > 50
    strays = [m for m in graph if room_of(m) is not None and room_of(m) not in ROOMS]
    assert strays == []


def test_no_import_runs_up_the_rooms():
    assert upward_imports(import_graph()) == []


def test_no_import_cycle():
    assert find_cycle(import_graph()) is None


def test_the_checks_catch_an_upward_import_and_a_cycle(tmp_path):
    pkg = tmp_path / "defrcn"
    for room, source in {"data": "from defrcn.engine.run import go\n",
                         "engine": "def go():\n    from defrcn.data.read import load\n"}.items():
        (pkg / room).mkdir(parents=True)
        (pkg / room / "__init__.py").write_text("")
    (pkg / "__init__.py").write_text("")
    (pkg / "data" / "read.py").write_text("from defrcn.engine.run import go\n\ndef load():\n    pass\n")
    (pkg / "engine" / "run.py").write_text("def go():\n    from defrcn.data.read import load\n")
    graph = import_graph({"defrcn": pkg})
    assert upward_imports(graph) == [("defrcn.data.read", "defrcn.engine.run")]
    assert find_cycle(graph) == ["defrcn.data.read", "defrcn.engine.run", "defrcn.data.read"]


def test_the_library_never_imports_the_recipes():
    graph = import_graph()
    offenders = [(m, t) for m, ts in graph.items() for t in ts
                 if t.startswith("defrcn.recipes") and not m.startswith(("defrcn.recipes", "defrcn.testing"))]
    assert offenders == []
