"""``recall new-plugin``: scaffold an installable third-party source plugin package.

The package is rendered from the flat ``*.tmpl`` files of ``recall_cli.templates``
with :class:`string.Template` (``$name``, ``$module``, ``$class_name``,
``$recall_version``): ``$`` placeholders never clash with the braces of Python
and TOML the way ``str.format`` fields would.
"""

from __future__ import annotations

import re
import shutil
import uuid
from importlib.resources import files
from pathlib import Path
from string import Template
from typing import Annotated

import typer

from recall_cli import common
from recall_core.errors import ConfigError

NAME_PATTERN = re.compile(r"[a-z][a-z0-9]*(?:[-_][a-z0-9]+)*")
"""A kind name that is also a distribution-name suffix and, with '-' → '_', a module name."""

TEMPLATES: dict[str, str] = {
    "pyproject.toml.tmpl": "pyproject.toml",
    "README.md.tmpl": "README.md",
    "init.py.tmpl": "src/$module/__init__.py",
    "plugin.py.tmpl": "src/$module/plugin.py",
    "test_contract.py.tmpl": "tests/test_contract.py",
}
"""Template file → path in the generated package (itself a template)."""


def register(app: typer.Typer) -> None:
    app.command("new-plugin")(new_plugin)


def new_plugin(
    name: Annotated[str, typer.Argument(
        metavar="NAME",
        help="The source kind, also the package suffix: recall-NAME (e.g. next-item).")],
    dir: Annotated[Path, typer.Option(  # noqa: A002 - the option is --dir
        "--dir", "-d", help="Where to create the recall-NAME/ folder.")] = Path("."),
) -> None:
    """Scaffold a plugin package recall-NAME with a working example source of kind NAME.

    The package has its `recall` entry point, the example source (numpy only)
    and a test running recall's source contract; after `pip install -e` the kind
    appears in `recall sources`.
    """
    values = placeholders(name)
    target = dir / f"recall-{name}"
    if target.exists():
        raise ConfigError(f"{target} already exists; remove it or choose another --dir")
    installed = common.host().kinds
    if name in installed:
        raise ConfigError(f"source kind {name!r} is already provided by "
                          f"{installed[name].origin.package}; choose another name")
    render(target, values)
    typer.echo(f"created {target}/ (package recall-{name}, source kind {name!r})")
    steps = [(f"pip install -e {target}", "registers the entry point"),
             ("recall sources", f"lists the kind {name!r}"),
             (f"pytest {target / 'tests'}", "runs recall's source contract test")]
    width = max(len(command) for command, _ in steps)
    typer.echo("next steps:")
    for command, why in steps:
        typer.echo(f"  {command.ljust(width)}  # {why}")


def placeholders(name: str) -> dict[str, str]:
    """The template values for kind ``name``; a name that cannot be one is a ConfigError."""
    from recall_core import __version__

    if not NAME_PATTERN.fullmatch(name):
        raise ConfigError(
            f"invalid plugin name {name!r}: use lowercase letters and digits separated by "
            "single '-' or '_', starting with a letter (e.g. next-item)")
    words = re.split(r"[-_]", name)
    return {
        "name": name,
        "module": "recall_" + name.replace("-", "_"),
        "class_name": "".join(word[:1].upper() + word[1:] for word in words),
        "recall_version": __version__,
    }


def render(target: Path, values: dict[str, str]) -> None:
    """Write every template into ``target``, all or nothing.

    The files go to a hidden sibling first and are renamed into place, so an
    interrupted run never leaves a half-written package that blocks the next one.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = target.with_name(f".{target.name}.tmp-{uuid.uuid4().hex[:8]}")
    templates = files("recall_cli.templates")
    try:
        for template_name, relative in TEMPLATES.items():
            path = staging / Template(relative).substitute(values)
            text = templates.joinpath(template_name).read_text(encoding="utf-8")
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(Template(text).substitute(values), encoding="utf-8")
        staging.rename(target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
