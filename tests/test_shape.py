"""The code keeps the shape a newcomer can read: the annotation app and the audit in short
functions, the app factory and `run_audit` on one screen, no command-line module over 650 lines."""
import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "relkit"


def function_lengths(path: Path) -> dict[str, int]:
    """Lines from each function's `def` to the last line of its body, by qualified name."""
    lengths = {}

    def visit(node, prefix=""):
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                name = f"{prefix}{child.name}"
                lengths[name] = child.end_lineno - child.lineno + 1
                visit(child, name + ".")
            elif isinstance(child, ast.ClassDef):
                visit(child, f"{prefix}{child.name}.")

    visit(ast.parse(path.read_text()))
    return lengths


def test_function_lengths_are_measured_from_def_to_last_line(tmp_path):
    module = tmp_path / "m.py"
    module.write_text("def f():\n    x = 1\n\n    return x\n\n\nclass C:\n    def g(self):\n        pass\n")
    assert function_lengths(module) == {"f": 4, "C.g": 2}


def test_no_function_in_annotation_or_audit_is_over_60_lines():
    long = {f"{path.relative_to(SRC)}:{name}": n
            for package in ("annotation", "audit") for path in sorted((SRC / package).rglob("*.py"))
            for name, n in function_lengths(path).items() if n > 60}
    assert not long, f"functions over 60 lines: {long}"


def test_the_app_factory_and_run_audit_read_on_one_screen():
    assert function_lengths(SRC / "annotation" / "app.py")["create_app"] < 40
    assert function_lengths(SRC / "audit" / "core.py")["run_audit"] < 40


def test_the_command_line_modules_stay_under_650_lines():
    sizes = {path.name: len(path.read_text().splitlines()) for path in (SRC / "cli").glob("*.py")}
    assert sizes and max(sizes.values()) < 650, sizes
