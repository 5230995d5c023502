"""Help that teaches: every `prov` command's ``--help`` ends with an "examples:" block of
real command lines, kept as written (one per line, never re-wrapped), and its
description paragraphs flow to the terminal's width instead of breaking where the
docstring's lines did.

`TaughtGroup` is the top-level Typer group class (``typer.Typer(cls=TaughtGroup)``): when
Typer builds the command tree it walks it once (`teach`). The examples live here, by
command path, so that one table shows them all; tests/test_help.py checks that every
command has 2-4 and that each names only options its command has.

Typer's options table lets Rich shrink every column, so at 80 columns it cut option
names (``--admin-token-f…``) and showed a type beside every flag, ``--help`` included.
`options_panel` replaces it: names never wrap or shorten (each on its own line), a type
shows only for what takes a value, and the help takes the rest of the width. Usage lines
name arguments as Click does (``FILES...``, not Typer's ``{files}...``).
"""

from __future__ import annotations

import re
from typing import Any

import typer.rich_utils
from rich.console import Console
from rich.markup import escape
from rich.panel import Panel
from rich.table import Table
from rich.text import Text
from typer.core import TyperArgument, TyperGroup, TyperOption

#: Example command lines by command path ("" is `prov` itself), each "COMMAND  # what".
EXAMPLES: dict[str, tuple[str, ...]] = {
    "": (
        "prov serve --db provenance.db  # run the server (operator)",
        "prov sign IMG_0001.jpg  # sign a capture (device)",
        "prov verify photo.jpg  # is it a signed original?",
        "prov scan /archive/photos --report scan.jsonl  # a whole archive",
    ),
    "serve": (
        "prov serve --db prov.db --ca ca/ --ca-passphrase-file /run/secrets/ca-pass",
        "prov serve --db :memory: --listen 127.0.0.1:0  # try it out: writes no file",
        "prov serve --db provenance.db --http 127.0.0.1:8080  # and the web page",
        "prov serve --db postgresql://prov@db/provenance --log-key /etc/prov/log.pem",
    ),
    "web": (
        "prov web --server 127.0.0.1:50051 --listen 127.0.0.1:8080",
        "prov web --server 127.0.0.1:50051 --listen 0.0.0.0:8080 --tiles-dir tiles/",
    ),
    "sign": (
        "prov sign IMG_0001.jpg IMG_0002.jpg  # writes IMG_0001.jpg.prov ...",
        "prov sign --server 127.0.0.1:50051 clip.mp4",
        "prov sign --c2pa IMG_0003.jpg  # also embed Content Credentials",
    ),
    "verify": (
        "prov verify photo.jpg  # uses photo.jpg.prov if present",
        "prov verify photo.jpg --sidecar other.prov --json",
        "prov verify photo.jpg --witness w1.vkey --witness w2.vkey --witness-quorum 1",
        "prov verify photo.jpg --witness w1.vkey --witness-url http://127.0.0.1:8090",
    ),
    "detect": (
        "prov detect image.png  # the server's model",
        "prov detect --local --json image.png  # the model on this machine",
    ),
    "scan": (
        "prov scan /archive/photos desk.zip --report scan.jsonl",
        "prov scan /archive/photos --report scan.jsonl --resume  # go on",
        "prov scan /archive/photos --report scan.jsonl --resume --retry-errors",
        "prov scan list.txt --report scan.jsonl --detect --workers 2",
    ),
    "admin": (
        'prov admin enroll-token --label "desk camera 3"',
        'prov admin revoke DEVICE_ID --reason "phone stolen"',
        "prov admin ca init --dir ca/",
    ),
    "admin enroll-token": (
        'prov admin enroll-token --label "desk camera 3"',
        "prov admin enroll-token --server 10.0.0.5:50051 --ttl 3600",
    ),
    "admin revoke": (
        'prov admin revoke DEVICE_ID --reason "phone stolen"',
        'prov admin revoke DEVICE_ID --reason "leaked" --since 2026-11-28T09:00:00Z',
    ),
    "admin ca": (
        "prov admin ca init --dir ca/  # prints the root certificate",
        'prov admin ca init --dir ca/ --name "Newsroom CA" --organization "Example"',
    ),
    "admin ca init": (
        "prov admin ca init --dir ca/  # passphrase prompted",
        "prov admin ca init --dir ca/ --passphrase-file /run/secrets/ca-pass",
        'prov admin ca init --dir ca/ --name "Newsroom CA" --organization "Example"',
    ),
    "device": (
        "prov device init",
        "prov device enroll --server 127.0.0.1:50051 --token TOKEN",
        "prov device sync",
        "prov device show",
    ),
    "device init": (
        "prov device init  # passphrase prompted",
        "PROV_PASSPHRASE=... prov device init --home /data/prov",
        "prov device init --force  # rotate: a new key; enroll it, revoke the old",
    ),
    "device enroll": (
        "prov device enroll --server 127.0.0.1:50051 --token TOKEN",
        "PROV_ENROLL_TOKEN=TOKEN prov device enroll  # not in the command line (ps)",
        "prov device enroll --server 127.0.0.1:50051 --certificate chain.pem",
    ),
    "device show": (
        "prov device show",
        "prov device show --home /data/prov",
    ),
    "device repair": (
        "prov device repair  # device.json damaged: rebuilt, the old kept aside",
        "prov device repair --server 127.0.0.1:50051  # its server lost too",
        "prov device repair && prov device sync  # then log what was queued",
    ),
    "device sync": (
        "prov device sync",
        "prov device sync --retry-set-aside  # after the cause was fixed",
    ),
    "log": (
        "prov log key",
        "prov log audit --state witness-state.json",
        "prov log export-tiles tiles/ --db provenance.db --follow",
    ),
    "log key": (
        "prov log key --server 127.0.0.1:50051",
        "prov log key --key-file provenance.db.logkey.pem > log.vkey  # offline",
    ),
    "log audit": (
        "prov log audit --state witness-state.json",
        "prov log audit --state s.json --tiles tiles/ --log-key log.vkey",
        "prov log audit --state s.json --db provenance.db --log-key log.vkey",
    ),
    "log export-tiles": (
        "prov log export-tiles tiles/ --db provenance.db",
        "prov log export-tiles tiles/ --db provenance.db --follow",
    ),
    "receipt": (
        "prov receipt verify IMG_0001.jpg.prov --log-key log.vkey",
        "prov receipt refresh IMG_0001.jpg.prov",
        "prov receipt export IMG_0001.jpg.prov --format tlog-proof",
    ),
    "receipt verify": (
        "prov receipt verify IMG_0001.jpg.prov --log-key log.vkey",
        "prov receipt verify a.jpg.tlog-proof --log-key log.vkey --sidecar a.jpg.prov",
        "prov receipt verify IMG_0001.jpg.prov --log-key log.vkey --witness w1.vkey",
    ),
    "receipt refresh": (
        "prov receipt refresh IMG_0001.jpg.prov",
        "prov receipt refresh IMG_0001.jpg.prov --witness w1.vkey --witness w2.vkey",
        "prov receipt refresh a.jpg.prov --witness w1.vkey --witness-url http://w1:8090",
    ),
    "receipt export": (
        "prov receipt export IMG_0001.jpg.prov --format tlog-proof",
        "prov receipt export IMG_0001.jpg.prov --format tlog-proof --output proof.txt",
    ),
    "witness": (
        "prov witness serve --key w1.pem --log-key log.vkey --state w1 --name ex.org/w1",
        "prov serve --db provenance.db --witness http://127.0.0.1:8090=w1.vkey",
    ),
    "witness serve": (
        "prov witness serve --key w1.pem --log-key log.vkey --state w1 --name ex.org/w1",
        "prov witness serve --key w.pem --log-key a.vkey --log-key b.vkey --state w",
    ),
    "detector": (
        "prov detector detect image.png",
        "prov detector train --out my.safetensors --seed 0 --epochs 8 --threads 1",
        "prov detector eval --out eval.json --threads 1 --device cpu",
    ),
    "detector train": (
        "prov detector train --out my.safetensors --seed 0 --epochs 8 --threads 1",
        "prov detector train --device cuda --out big.safetensors --model-id big",
    ),
    "detector eval": (
        "prov detector eval --out eval.json --threads 1 --device cpu",
        "prov detector eval --weights my.safetensors --out eval.json",
    ),
    "detector detect": (
        "prov detector detect image.png",
        "prov detector detect image.png --model npr --weights NPR.pth",
    ),
}

_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z`(])")


def reflow(text: str) -> str:
    """``text`` (a docstring, dedented) with each paragraph's lines joined, so the help
    renderer wraps it to the terminal's width; a paragraph that starts with ``\\b``
    (Click's "keep as is" mark) or has an indented line is kept as written. Text after
    a form feed (Click's end of help) is dropped."""
    import inspect

    text = inspect.cleandoc(text).partition("\f")[0]
    paragraphs = []
    for para in text.split("\n\n"):
        lines = para.split("\n")
        if para.startswith("\b") or any(line.startswith(" ") for line in lines[1:]):
            paragraphs.append(para)
        else:
            paragraphs.append(" ".join(line.strip() for line in lines))
    return "\n\n".join(paragraphs)


def first_sentence(text: str) -> str:
    """The first sentence of ``text``'s first paragraph (the command list's one line)."""
    para = text.split("\n\n", 1)[0]
    return _SENTENCE_END.split(para, maxsplit=1)[0]


def examples_epilog(lines: tuple[str, ...]) -> str:
    """The "examples:" block, its lines kept as written (rich markup escaped)."""
    return "examples:\n" + "\n".join(f"  {escape(line)}" for line in lines)


def teach(command: Any, path: str = "") -> None:
    """Reflow the help of ``command`` and every command under it, give each its one-line
    summary, and end it with its EXAMPLES (by command path)."""
    if command.help:
        command.help = reflow(command.help)
        if not command.short_help:
            command.short_help = first_sentence(command.help)
    if path in EXAMPLES:
        command.epilog = examples_epilog(EXAMPLES[path])
    for param in command.params:
        if isinstance(param, TyperArgument):  # FILES... in usage, as Click writes it
            param.get_usage_pieces = _usage_pieces(param)  # type: ignore[method-assign]
            param.get_error_hint = _error_hint(param)  # type: ignore[method-assign]
        elif isinstance(param, TyperOption):  # --ttl, as our own checks name it
            param.get_error_hint = _option_hint(param)  # type: ignore[method-assign]
    for name, sub in getattr(command, "commands", {}).items():
        teach(sub, f"{path} {name}".strip())


def argument_name(param: TyperArgument) -> str:
    """An argument as Click names it: its metavar, else its name in capitals, with
    ``...`` when it takes several values (``FILES...``)."""
    name = param.metavar or (param.name or "").upper()
    return f"{name}..." if param.metavar is None and param.nargs != 1 else name


def _usage_pieces(param: TyperArgument) -> Any:
    def pieces(ctx: Any) -> list[str]:
        name = argument_name(param)
        return [name if param.required else f"[{name}]"]

    return pieces


def _error_hint(param: TyperArgument) -> Any:
    """``param.get_error_hint``: its name in usage errors as the usage line names it
    ("Invalid value for FILE: path 'x' does not exist", "Missing argument DEVICE_ID."),
    not Typer's lower-case name in quotes ('file'), so that one argument reads the same
    whether Click or our own check (``param_hint="FILE"``) refused it."""

    def hint() -> str:
        return argument_name(param).removesuffix("...")

    return hint


def _option_hint(param: TyperOption) -> Any:
    """``param.get_error_hint``: the option bare, as our own checks name it
    ("Invalid value for --ttl: ...", "Missing option --key."), with the variable that
    can stand for it ("--log-key (or $PROV_LOG_KEY)"), not Typer's "'--ttl'"."""

    def hint() -> str:
        names = " / ".join(param.opts or [param.name or ""])
        if param.show_envvar and isinstance(param.envvar, str):
            return f"{names} (or ${param.envvar})"
        return names

    return hint


def _value_type(param: Any, ctx: Any) -> str:
    """The type shown beside a parameter that takes a value ("" for a flag), in Typer's
    plain words: ``<path>`` where Typer shows the annotation of a path it does not check
    itself (``<Path>``, for an option with a ``parser``), and one value's type where it
    shows a list's (``<list[Path]>``: ``FILES...`` and a repeatable option say several)."""
    if isinstance(param, TyperOption) and (param.is_flag or param.count):
        return ""
    shown = str(param.display_type_rich(ctx=ctx) or "")
    one = re.fullmatch(r"<list\[(.*)\]>", shown)
    if one:
        shown = f"<{one.group(1)}>"
    return "<path>" if shown == "<Path>" else shown


def flag_default(param: Any, help_text: str) -> str:
    """``help_text`` (Click's help record) with the default of an on/off flag pair said
    plainly: Click names the default's option without dashes, so ``--detect/--no-detect``
    read "[default: detect]" and "[default: no-detect]". A ``--X/--no-X`` pair now shows
    "[default: on]", or nothing when off (as a lone flag); another pair
    (``--full/--incremental``) names the option, "[default: --full]"."""
    if not (isinstance(param, TyperOption) and param.is_bool_flag and param.secondary_opts):
        return help_text
    chosen = (param.opts if param.default else param.secondary_opts)[0]
    old = f"default: {chosen.lstrip('-')}"
    primary = param.opts[0].lstrip("-")
    if not any(o.lstrip("-") == f"no-{primary}" for o in param.secondary_opts):
        return help_text.replace(old, f"default: {chosen}")
    if param.default:
        return help_text.replace(old, "default: on")
    for gone, kept in ((f"; {old}", ""), (f"[{old}; ", "["), (f"[{old}]", "")):
        help_text = help_text.replace(gone, kept)
    return help_text.rstrip()


def options_panel(
    *,
    name: str,
    params: list[Any],
    ctx: Any,
    markup_mode: Any,
    console: Console,
) -> None:
    """Print one panel ("Options", "Arguments") of ``params``: a required mark, the
    names (each on its own line, never wrapped or shortened, the value type after the
    first when it fits, else below), and the help with its ``[default: ...]`` (Click's
    help record; an on/off flag's as `flag_default` says it), wrapped in the width left. Replaces Typer's
    ``rich_utils._print_options_panel`` (same keywords); ``markup_mode`` is unused: help
    is shown as plain text."""
    rows = []
    for param in params:
        record = param.get_help_record(ctx)
        if record is None:
            continue
        if isinstance(param, TyperArgument):
            names = [argument_name(param)]
        else:
            names = [", ".join(param.opts)]
            if param.secondary_opts:
                names.append(", ".join(param.secondary_opts))
        help_text = flag_default(param, record[1])
        rows.append((param.required, names, _value_type(param, ctx), help_text))
    if not rows:
        return
    width = max(len(line) for _, names, kind, _ in rows for line in (*names, kind))
    table = Table(show_header=False, box=None, expand=True, padding=(0, 1), pad_edge=False)
    if any(required for required, *_ in rows):
        table.add_column(no_wrap=True, width=1)
    table.add_column(no_wrap=True, width=width, overflow="ignore")
    table.add_column(ratio=1, overflow="fold")
    for required, names, kind, help_text in rows:
        lines = list(names)
        if kind and len(lines[0]) + 1 + len(kind) <= width:
            lines[0] = f"{lines[0]} {kind}"
        elif kind:
            lines.append(kind)
        cell = Text("\n".join(lines), style="bold cyan")
        if kind:
            cell.highlight_words([kind], style="bold yellow")
        cells: list[Any] = [cell, Text(help_text)]
        if table.columns[0].width == 1:
            cells.insert(0, Text("*" if required else "", style="red"))
        table.add_row(*cells)
    console.print(Panel(table, border_style="dim", title=name, title_align="left"))


typer.rich_utils._print_options_panel = options_panel  # every prov --help, see module doc


class TaughtGroup(TyperGroup):
    """The ``prov`` group: Typer's, with `teach` applied to the whole tree it is built
    with."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        teach(self)
