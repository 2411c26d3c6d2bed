"""CLI plumbing shared by every domain's commands: the parser, groups, exit codes.

The ``siyu`` command itself is the root's (``siyu.cli``); each domain adds its
subcommands in its own ``cli.py`` through ``register(subparsers, ctx)``.  This
module knows no domain.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import Any

from core.db import SchemaNotMigrated
from core.settings import SettingsError

Subparsers = argparse._SubParsersAction


class CommandGroups:
    """Which group (domain) added which command, for a grouped ``siyu --help``."""

    def __init__(self, sub: Subparsers[argparse.ArgumentParser]) -> None:
        self.sub = sub
        self.groups: list[tuple[str, list[str]]] = []

    def register(
        self, group: str, add: Callable[[Subparsers[argparse.ArgumentParser]], None]
    ) -> None:
        before = set(self.sub.choices)
        add(self.sub)
        added = [name for name in self.sub.choices if name not in before]
        self.groups.append((group, added))

    def epilog(self) -> str:
        helps = {a.dest: a.help or "" for a in self.sub._choices_actions}
        lines = ["commands, by the part of siyu that owns them:"]
        for group, names in self.groups:
            if not names:
                continue
            lines.append(f"\n  {group}:")
            for name in names:
                lines.append(f"    {name:<12} {helps.get(name, '')}".rstrip())
        return "\n".join(lines)


def new_parser(prog: str, description: str) -> tuple[argparse.ArgumentParser, CommandGroups]:
    p = argparse.ArgumentParser(
        prog=prog, description=description, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = p.add_subparsers(dest="command", required=True, metavar="<command>")
    return p, CommandGroups(sub)


def run_command(func: Callable[[argparse.Namespace], Any], args: argparse.Namespace) -> int:
    """Run one command; configuration and schema problems exit 2 with one clear line."""
    try:
        return int(func(args) or 0)
    except SettingsError as exc:
        print(f"siyu: configuration error: {exc}", file=sys.stderr)
        return 2
    except SchemaNotMigrated as exc:
        print(f"siyu: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


def finish_help(parser: argparse.ArgumentParser, groups: CommandGroups) -> None:
    """List the commands once, grouped, instead of argparse's flat list."""
    parser.epilog = groups.epilog()
    groups.sub._choices_actions.clear()
