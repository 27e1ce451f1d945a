"""The package's layers (prunelab/__init__.py): a module imports only from its own layer and the layers above it,
so that, for example, compression never imports pruning for a general helper."""

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "prunelab"

LAYERS = {
    "the kit": ["_helpers", "data", "models", "training", "checkpoints", "baselines", "masks", "graph", "metrics",
                "live_accuracy", "encoding", "plots", "text", "text_baseline"],
    "pruning": ["scores", "data_criteria", "thresholds", "pruning", "schedules", "schedule_runs", "resets",
                "regularization", "sensitivity", "search", "shrink", "export", "one_shot", "heads", "sparse_matmul"],
    "compression": ["quantization", "qat", "mixed_precision", "weight_sharing", "lowrank", "distillation",
                    "compressed_file"],
    "teaching": ["exercises", "challenge", "editions", "explorers"],
}
PIPELINES = {"deep_compression": ("pruning", "compression"),   # prune → share → Huffman uses both on purpose
             "gptq": ("pruning", "compression"),               # k-bit grids with one_shot's OBS updates
             "integer_inference": ("pruning", "compression")}  # BatchNorm folded, then integer-only layers
ORDER = {"the kit": 0, "pruning": 1, "compression": 1, "teaching": 2}   # pruning and compression: side by side
LAYER_OF = {module: layer for layer, modules in LAYERS.items() for module in modules}


def imported_modules(path: Path) -> set[str]:
    """The prunelab modules that a file imports (relative imports, resolved to their top-level name)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level > 0:
            if node.module:                                      # from .masks import x / from ..pruning import y
                names.add(node.module.split(".")[0])
            elif node.level == 1 or path.parent.name == "explorers":  # from . import masks / from .. import masks
                names.update(alias.name for alias in node.names)
    return names - {""}


def modules():
    files = sorted(PACKAGE.glob("*.py")) + sorted((PACKAGE / "explorers").glob("*.py"))
    return [f for f in files if f.name != "__init__.py"]


def test_every_module_has_a_layer():
    names = {f.stem for f in PACKAGE.glob("*.py")} - {"__init__"}
    assert names - set(LAYER_OF) - set(PIPELINES) == set(), "add the new module to LAYERS (and to __init__'s list)"


@pytest.mark.parametrize("path", modules(), ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_a_module_imports_only_its_own_layer_and_those_above(path):
    module = "explorers" if path.parent.name == "explorers" else path.stem
    if module in PIPELINES:
        allowed = {m for m, layer in LAYER_OF.items() if layer in ("the kit", *PIPELINES[module])}
    else:
        rank = ORDER[LAYER_OF[module]]
        allowed = {m for m, layer in LAYER_OF.items() if ORDER[layer] < rank or layer == LAYER_OF[module]}
        if rank == max(ORDER.values()):
            allowed |= set(PIPELINES)                               # teaching may use everything
    wrong = sorted((imported_modules(path) & (set(LAYER_OF) | set(PIPELINES))) - allowed - {path.stem})
    assert not wrong, f"{module} ({LAYER_OF.get(module, 'a pipeline')}) imports {wrong} from a layer below or beside it"


def test_the_check_sees_a_forbidden_import(tmp_path):
    bad = tmp_path / "quantization.py"
    bad.write_text("from . import masks as M\nfrom .pruning import select_layers\nfrom ._helpers import in_mode\n")
    assert imported_modules(bad) == {"masks", "pruning", "_helpers"}
    assert "pruning" not in {m for m, layer in LAYER_OF.items() if layer in ("the kit", "compression")}
