"""scripts/ and bench/ are under `make lint`'s mypy --strict like the product, every file
of them: pyproject.toml's [tool.mypy] names both folders, excludes none of their files and
turns no error off for them, and `make lint` runs that configuration. (This test ran
`mypy scripts` itself, and test_bench_typed `mypy bench/bench_scan.py`: the same checks
`make lint` makes in CI, cold, 25-35 s each.)"""

from __future__ import annotations

import re
import tomllib
from typing import Any

from tests.conftest import ROOT


def test_make_lint_type_checks_every_script_and_bench() -> None:
    config: dict[str, Any] = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["mypy"]
    assert config["strict"] is True
    lint = (ROOT / "Makefile").read_text().split("\nlint:", 1)[1].split("\n\n", 1)[0]
    assert "\n\t$(BIN)/mypy\n" in lint + "\n", lint  # the configuration's files, no others
    excludes = config.get("exclude", [])
    excludes = [excludes] if isinstance(excludes, str) else excludes
    silenced = [
        o["module"]
        for o in config.get("overrides", [])
        if o.get("ignore_errors") or o.get("follow_imports") == "skip"
    ]
    for folder in ("scripts", "bench"):
        assert folder in config["files"], config["files"]
        files = sorted((ROOT / folder).rglob("*.py"))
        assert len(files) > 3, files
        for path in files:
            rel = path.relative_to(ROOT).as_posix()
            assert not any(re.search(p, rel) for p in excludes), f"{rel} is excluded"
            module = rel.removesuffix(".py").replace("/", ".")
            names = {module, path.stem}  # bench's scripts import one another by stem
            for pattern in silenced:
                for p in [pattern] if isinstance(pattern, str) else pattern:
                    assert not any(
                        n == p or (p.endswith(".*") and n.startswith(p[:-1])) for n in names
                    ), f"{rel}: errors off ({p})"
