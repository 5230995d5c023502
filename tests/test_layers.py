"""The package layout is the architecture: each layer of `provenance/` imports only the
layers below it and nothing of clients/ but the web layer's client SDK, and the device SDK
never loads the server side (issue 12, README "How it works"). Read from the source with
`ast`, so a new import that crosses a layer fails here."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

#: provenance's layers, lowest first; a module may import its own layer and those before it.
LAYERS = [
    "core",  # pure: keys, claims, bindings, Merkle math, the verdict
    "metrics",
    "terminal",  # CLI consoles that escape control characters (Rich only)
    "cli",  # what the prov commands share: options and checks, passphrases (Typer)
    "v1",  # generated protobuf modules
    "wire",
    "store",
    "log",
    "c2pa",
    "media",
    "index",
    "web",
    "witness",
    "server",
]
#: SDK modules of clients/ (what a device or a scanner runs): wire contract, core, log and
#: media only; the `prov` CLI and the demos may also start servers.
CLIENT_SDK = [
    "clients/api.py",
    "clients/derived.py",
    "clients/device",
    "clients/device_repair.py",
    "clients/report.py",
    "clients/scan",
]
SERVER_SIDE = {"store", "index", "server"}
#: What of clients/ provenance/ may import: the web layer is a client of the gRPC service
#: (`clients.api`), renders the report of ``prov verify --json`` (`clients.report`) and
#: checks the service's answer as ``prov verify`` does (`clients.cited`, a near copy's
#: verdict `clients.derived`; its ``--log-key`` read by `clients.options.verifier_key`), by
#: design (provenance/web/__init__.py); no other layer imports clients/ at all.
CLIENTS_ALLOWED = {
    "web": {"clients.api", "clients.report", "clients.cited", "clients.derived", "clients.options"}
}


def _imports(path: Path, top: str = "provenance") -> list[tuple[int, str]]:
    """(line, imported module) for every import of package ``top`` or a module under it
    in `path`, including function-level ones; `from provenance import x` counts as
    `provenance.x`."""
    found: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module == top:
                found += [(node.lineno, f"{top}.{a.name}") for a in node.names]
            elif node.module.startswith(f"{top}."):
                found.append((node.lineno, node.module))
        elif isinstance(node, ast.Import):
            found += [
                (node.lineno, a.name)
                for a in node.names
                if a.name == top or a.name.startswith(f"{top}.")
            ]
    return found


def _layer_files(layer: str) -> list[Path]:
    base = ROOT / "provenance" / layer
    return sorted(base.rglob("*.py")) if base.is_dir() else [base.with_suffix(".py")]


def _layer(module: str) -> str:
    return module.split(".")[1]


def test_every_provenance_module_belongs_to_a_layer() -> None:
    tops = {
        p.name.removesuffix(".py")
        for p in (ROOT / "provenance").iterdir()
        if (p.is_dir() and (p / "__init__.py").exists())
        or (p.suffix == ".py" and p.stem != "__init__")
    }
    assert tops == set(LAYERS), f"add the new layer to LAYERS (and README): {tops ^ set(LAYERS)}"


@pytest.mark.parametrize("layer", LAYERS)
def test_a_layer_imports_only_the_layers_below_it(layer: str) -> None:
    allowed = set(LAYERS[: LAYERS.index(layer) + 1])
    wrong = [
        f"{f.relative_to(ROOT)}:{line} imports {mod}"
        for f in _layer_files(layer)
        for line, mod in _imports(f)
        if _layer(mod) not in allowed
    ]
    assert not wrong, f"{layer} may import only {sorted(allowed)}:\n" + "\n".join(wrong)


@pytest.mark.parametrize("layer", LAYERS)
def test_a_layer_imports_nothing_of_clients_but_the_webs_sdk(layer: str) -> None:
    allowed = CLIENTS_ALLOWED.get(layer, set())
    wrong = [
        f"{f.relative_to(ROOT)}:{line} imports {mod}"
        for f in _layer_files(layer)
        for line, mod in _imports(f, "clients")
        if mod not in allowed
    ]
    assert not wrong, f"{layer} may import of clients/ only {sorted(allowed)}:\n" + "\n".join(wrong)


def test_the_client_sdk_never_imports_the_server_side() -> None:
    files: list[Path] = []
    for entry in CLIENT_SDK:
        p = ROOT / entry
        files += sorted(p.rglob("*.py")) if p.is_dir() else [p]
    wrong = [
        f"{f.relative_to(ROOT)}:{line} imports {mod}"
        for f in files
        for line, mod in _imports(f)
        if _layer(mod) in SERVER_SIDE
    ]
    assert not wrong, "\n".join(wrong)


def test_the_checker_sees_a_crossing(tmp_path: Path) -> None:
    """The import reader finds top-level, function-level and `from provenance import x` forms."""
    f = tmp_path / "m.py"
    f.write_text(
        "from provenance.core.keys import DeviceKey\n"
        "from provenance import metrics\n"
        "def g():\n    from provenance.server.writer import Writer\n"
    )
    assert [_layer(m) for _, m in _imports(f)] == ["core", "metrics", "server"]
    f.write_text("import clients\nfrom clients import options\nimport clients.api as a\n")
    assert [m for _, m in _imports(f, "clients")] == ["clients", "clients.options", "clients.api"]


#: Calls that open a file or a connection by name, which the pure core never makes
#: (DESIGN.md, "Parts": "only server, store and clients touch the network and disk"; it
#: may read an open file object a caller hands it, as `video_binding.hash_file` does).
OPENERS = {
    "open",
    "os.open",
    "io.open",
    "read_bytes",
    "read_text",
    "write_bytes",
    "write_text",
    "urlopen",
    "socket.socket",
    "create_connection",
}


def _opens(path: Path) -> list[str]:
    """``line: call`` for each call in ``path`` whose callee's dotted name ends in an OPENERS
    entry (``open(...)``, ``os.open(...)``, ``p.read_bytes()``)."""
    found = []
    shown = path.relative_to(ROOT) if path.is_relative_to(ROOT) else path.name
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if not isinstance(node, ast.Call):
            continue
        parts, f = [], node.func
        while isinstance(f, ast.Attribute):
            parts.append(f.attr)
            f = f.value
        if isinstance(f, ast.Name):
            parts.append(f.id)
        name = ".".join(reversed(parts))
        if any(name == o or name.endswith("." + o) for o in OPENERS):
            found.append(f"{shown}:{node.lineno}: {name}(...)")
    return found


def test_the_core_opens_no_file_nor_connection() -> None:
    wrong = [x for f in sorted((ROOT / "provenance" / "core").glob("*.py")) for x in _opens(f)]
    assert not wrong, "the core takes bytes (or a caller's open file):\n" + "\n".join(wrong)


def test_the_opener_check_sees_an_open(tmp_path: Path) -> None:
    f = tmp_path / "m.py"
    f.write_text("import os\ndef g(p):\n    open(p)\n    os.open(p, 0)\n    p.read_bytes()\n")
    assert [x.split(": ")[1] for x in _opens(f)] == [
        "open(...)",
        "os.open(...)",
        "p.read_bytes(...)",
    ]


def test_the_database_audit_loads_nothing_of_the_server() -> None:
    """`prov log audit --db` (clients/logcmd.py) reads the store, never the server package:
    the meta key saying the key history is logged lives in provenance.store. Before
    (revregextra60) it imported provenance.server.service (gRPC and all) for that name."""
    wrong = [
        f"clients/logcmd.py:{line} imports {mod}"
        for line, mod in _imports(ROOT / "clients" / "logcmd.py")
        if _layer(mod) == "server"
    ]
    assert not wrong, "\n".join(wrong)
