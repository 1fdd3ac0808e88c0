"""Every public option has one default: the Python signature, the type stub and the CLI agree."""

import argparse
import ast
import inspect
from pathlib import Path

import pytest

import stockstream as ss
from stockstream import _core, cli

STUB = ast.parse((Path(_core.__file__).parent / "_core.pyi").read_text())


# What the CLI's subcommands build, and which of their options fill an option object's field.
def fields(cls, mapping: dict) -> dict:
    return {dest: (cls, field) for field, dest in mapping.items()}


COMMANDS = {
    "sink": (ss.LakeSink, {**fields(ss.RollPolicy, cli.ROLL), **fields(ss.AwsOptions, cli.AWS),
                           **fields(ss.TickSchema, cli.SINK_SCHEMA)}),
    "analyze": (ss.Analytics, {**fields(ss.TickSchema, cli.ANALYTICS_SCHEMA),
                               **fields(ss.Outputs, cli.OUTPUTS)}),
    "produce": (ss.Producer.send_csv, fields(ss.TickSchema, cli.PRODUCE_SCHEMA)),
    "crawl": (ss.crawl, {}),
    "compact": (ss.Lake.compact, {}),
    "query": (ss.Lake, {}),
}  # fmt: skip


# Defaults the binding cannot spell in a signature (``help()`` shows ``...``): what they are.
UNSPELLED = {("LakeSink", "catalog"): "local", ("TickSchema", "volume"): "Volume"}


def runtime_defaults(obj) -> dict:
    """The defaults ``help()`` shows for ``obj``'s parameters."""
    defaults = {}
    for name, p in inspect.signature(obj).parameters.items():
        if p.default is inspect.Parameter.empty:
            continue
        if p.default is Ellipsis:
            key = (obj.__qualname__, name)
            assert key in UNSPELLED, f"{key}: a default help() does not show"
            defaults[name] = UNSPELLED[key]
        else:
            defaults[name] = p.default
    return defaults


def stub_defaults(path: str) -> dict:
    """The literal defaults the stub gives ``path`` (``Class`` for its ``__new__``,
    ``Class.method`` or ``function``); ``...`` (a default the stub does not spell) left out."""
    names = path.split(".")
    body = STUB.body
    for name in names:
        node = next(n for n in body if getattr(n, "name", None) == name)
        body = getattr(node, "body", [])
    if isinstance(node, ast.ClassDef):
        node = next(n for n in node.body if getattr(n, "name", None) == "__new__")
    args = node.args
    positional = args.posonlyargs + args.args
    pairs = list(zip(positional[len(positional) - len(args.defaults) :], args.defaults))
    pairs += [(a, d) for a, d in zip(args.kwonlyargs, args.kw_defaults) if d is not None]
    return {
        a.arg: ast.literal_eval(d)
        for a, d in pairs
        if not (isinstance(d, ast.Constant) and d.value is Ellipsis)
    }


PUBLIC = [
    "LakeSink", "Analytics", "Lake", "Lake.sql", "Lake.compact", "Producer", "Producer.send_async",
    "Producer.send", "TickSchema", "RollPolicy", "AwsOptions", "Outputs", "TickSource.csv",
    "TickSource.synthetic", "crawl", "read_topic", "read_ticks", "synthetic_ticks",
    "EmbeddedKafka", "Pipeline.run", "Pipeline.start",
]  # fmt: skip


@pytest.mark.parametrize("path", PUBLIC)
def test_the_stub_shows_the_defaults_the_module_has(path):
    obj = _core
    for name in path.split("."):
        obj = getattr(obj, name)
    runtime, stub = runtime_defaults(obj), stub_defaults(path)
    assert stub, f"{path}: the stub gives no defaults"
    for name, default in stub.items():
        assert name in runtime, f"{path}: {name} has a default in the stub only"
        assert runtime[name] == default, f"{path}({name}=): stub {default!r}, {runtime[name]!r}"


def subcommand(name: str) -> argparse.ArgumentParser:
    sub = next(a for a in cli.parser()._actions if isinstance(a, argparse._SubParsersAction))
    return sub.choices[name]


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_the_cli_takes_its_defaults_from_the_api(command):
    target, fields = COMMANDS[command]
    own = runtime_defaults(target)
    checked = 0
    for action in subcommand(command)._actions:
        if action.dest in fields:
            cls, field = fields[action.dest]
            expected, where = runtime_defaults(cls).get(field), f"{cls.__name__}({field}=)"
        elif action.dest in own:
            expected, where = own[action.dest], f"{getattr(target, '__qualname__', target)}"
        else:
            continue
        checked += 1
        # None: not given on the command line, so the API's default applies.
        if action.default is not None:
            assert action.default == expected, (
                f"stockstream {command} {action.option_strings or action.dest}: "
                f"default {action.default!r}, but {where} defaults to {expected!r}"
            )
    assert checked >= 3, f"stockstream {command}: no option matched the API"
