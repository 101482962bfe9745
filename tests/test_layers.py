"""The import direction of the layers: cli -> csi -> (daemon, client) -> (gateway, server) ->
engine -> store. A module imports only its own layer, the layers below it and
the leaves every layer shares (the generated contract, enums, errors, config).
The gateway and the server never import each other."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

# Rank of each layer: a module may import a layer of lower or equal rank, except
# that the gateway and the server (same rank) never import each other.
LAYERS = {
    "osd.cli": 6,
    "osd.daemon": 4,
    "osd.client": 4,
    "osd.csi": 5,
    "osd.ctl": 5,
    "gateway": 3,
    "osd.server": 3,
    "osd.engine": 2,
    "osd.store": 1,
}
LEAVES = (
    "osd.v1",
    "osd.csi.v1",
    "osd.enums",
    "osd.errors",
    "osd.config",
    "osd.contract",
    "osd.deadline",
    "osd.logs",
    "osd.tracing",
    "osd._otel",
)


def is_leaf(module: str) -> bool:
    return module == "osd" or any(module == m or module.startswith(m + ".") for m in LEAVES)


def layer_of(module: str) -> str | None:
    for name in sorted(LAYERS, key=len, reverse=True):
        if module == name or module.startswith(name + "."):
            return name
    return None


def is_module(name: str) -> bool:
    path = ROOT.joinpath(*name.split("."))
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def modules() -> list[tuple[str, Path]]:
    found = []
    for package in ("osd", "gateway"):
        for path in sorted((ROOT / package).rglob("*.py")):
            if "v1" in path.relative_to(ROOT).parts:
                continue
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            found.append((".".join(parts), path))
    return found


def imports_of(path: Path, module: str) -> set[str]:
    names: set[str] = set()
    is_package = path.name == "__init__.py"
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".")
                drop = node.level - 1 if is_package else node.level
                base = base[: len(base) - drop] if drop else base
                source = ".".join([*base, node.module] if node.module else base)
            else:
                source = node.module or ""
            names.add(source)
            # ``from osd import daemon`` imports the module osd.daemon.
            names.update(
                f"{source}.{alias.name}"
                for alias in node.names
                if is_module(f"{source}.{alias.name}")
            )
    return {n for n in names if n == "osd" or n.startswith(("osd.", "gateway"))}


def violations() -> list[str]:
    found = []
    for module, path in modules():
        found += violations_of(module, imports_of(path, module))
    return found


def violations_of(module: str, targets: set[str]) -> list[str]:
    found: list[str] = []
    own = layer_of(module)
    if own is None:
        found += [f"{module} (a leaf) imports {t}" for t in sorted(targets) if not is_leaf(t)]
    else:
        for target in sorted(targets):
            other = layer_of(target)
            if other is None or other == own:
                if other is None and not is_leaf(target):
                    found.append(f"{module} imports {target}, which belongs to no layer")
                continue
            if LAYERS[other] > LAYERS[own] or LAYERS[other] == LAYERS[own]:
                found.append(f"{module} ({own}) imports {target} ({other})")
    return found


def test_every_import_points_down_the_layers() -> None:
    assert violations() == []


def test_every_module_belongs_to_a_layer_or_is_a_leaf() -> None:
    loose = [m for m, _ in modules() if layer_of(m) is None and not is_leaf(m)]
    assert loose == []


@pytest.mark.parametrize(
    ("module", "target", "allowed"),
    [
        ("osd.engine.volumes.volumes", "osd.store.volumes", True),
        ("osd.engine.volumes.volumes", "osd.server.volume", False),
        ("osd.server.volume", "gateway.app", False),
        ("gateway.app", "osd.server.registry", False),
        ("osd.store.volumes", "osd.engine.engine", False),
        ("osd.daemon", "gateway.server", True),
        ("osd.cli", "osd.daemon", True),
        ("osd.engine.shared.sizes", "osd.enums", True),
        ("osd.errors", "osd.engine.shared.sizes", False),
    ],
)
def test_the_rule_itself(module: str, target: str, allowed: bool) -> None:
    found = [v for v in violations_of(module, {target})]
    assert (found == []) is allowed
