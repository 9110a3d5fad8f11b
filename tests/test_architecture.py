"""The layer order of docs/architecture.md, enforced: every package is in one layer, and every import points down."""

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src" / "difflab"


def layers() -> dict[str, int]:
    """{package: layer} from the table under '<!-- layers: ... -->' in docs/architecture.md."""
    text = (ROOT / "docs" / "architecture.md").read_text()
    table = text[text.index("<!-- layers:"):]
    out: dict[str, int] = {}
    for line in table.splitlines()[1:]:
        if not line.startswith("|"):
            if out:
                break
            continue
        m = re.match(r"\|\s*(\d+)\s*\|([^|]*)\|", line)
        if m:
            for name in re.findall(r"`([a-z_]+)`", m.group(2)):
                assert name not in out, f"{name} is in two layers"
                out[name] = int(m.group(1))
    return out


def package_of(path: Path) -> str:
    """'difflab' for the package root, else the first component under src/difflab (a package or a top-level module)."""
    rel = path.relative_to(SRC)
    if rel.parts == ("__init__.py",):
        return "difflab"
    return rel.parts[0].removesuffix(".py")


def module_of(path: Path) -> str:
    rel = path.relative_to(SRC).with_suffix("")
    parts = ["difflab", *rel.parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path) -> list[tuple[int, str]]:
    """(line, module) of every difflab import in the file, at any depth (imports inside functions count too)."""
    out = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and (node.module == "difflab" or node.module.startswith("difflab.")):
            assert node.level == 0, f"{path}:{node.lineno}: use absolute imports"
            if node.module == "difflab":  # `from difflab import api`: the names are modules
                out += [(node.lineno, f"difflab.{a.name}") for a in node.names]
            else:
                out.append((node.lineno, node.module))
        elif isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names if a.name.startswith("difflab")]
    return out


def target_package(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "difflab"


FILES = sorted(SRC.rglob("*.py"))


def test_every_package_has_one_layer():
    table = layers()
    found = {package_of(p) for p in FILES}
    assert found - set(table) == set(), f"packages missing from docs/architecture.md's layer table: {sorted(found - set(table))}"
    assert set(table) - found == set(), f"the layer table names packages that do not exist: {sorted(set(table) - found)}"


def test_imports_point_down():
    table = layers()
    bad = []
    for path in FILES:
        mine = package_of(path)
        for line, module in imports(path):
            theirs = target_package(module)
            if theirs != mine and table[theirs] >= table[mine]:
                bad.append(f"{path.relative_to(ROOT)}:{line}: {mine} (layer {table[mine]}) imports {module} (layer {table[theirs]})")
    assert not bad, "imports that point up or sideways:\n" + "\n".join(bad)


def test_no_import_cycle_between_modules():
    """Within a package too: no module reaches itself through imports (lazy ones included)."""
    graph: dict[str, set[str]] = {}
    modules = {module_of(p): p for p in FILES}
    for mod, path in modules.items():
        deps = set()
        for _, target in imports(path):
            # `from difflab.x.y import z` where z is a module counts as importing z's module too
            deps.add(target if target in modules else target.rsplit(".", 1)[0] if target.rsplit(".", 1)[0] in modules else target)
        graph[mod] = {d for d in deps if d in modules and d != mod}
    cycles = find_cycles(graph)
    assert not cycles, "import cycles:\n" + "\n".join(cycles)


def find_cycles(graph: dict[str, set[str]]) -> list[str]:
    """Every back edge of a depth-first search, as 'a -> b -> a'."""
    state: dict[str, int] = {}
    cycles: list[str] = []

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycles.append(" -> ".join(stack[stack.index(nxt):] + [nxt]))
            elif nxt not in state:
                visit(nxt, stack + [nxt])
        state[node] = 2

    for mod in sorted(graph):
        if mod not in state:
            visit(mod, [mod])
    return cycles


def test_the_check_can_fail(tmp_path):
    """The rule itself, on a made-up upward import: nets (layer 1) importing runs (layer 7) is refused."""
    table = layers()
    assert table["nets"] < table["runs"] and table["cli"] == max(table.values()) and table["errors"] == 0 < table["configs"]
    fake = tmp_path / "x.py"
    fake.write_text("def f():\n    from difflab.runs import load_run\n")
    assert imports(fake) == [(2, "difflab.runs")]
    assert find_cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == ["a -> b -> c -> a"]
    assert find_cycles({"a": {"b"}, "b": set(), "c": {"a", "b"}}) == []
