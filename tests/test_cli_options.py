"""Options made from config dataclasses: the fields are the one source of defaults and help."""

import argparse
import dataclasses
import re
from pathlib import Path
from typing import Literal

import pytest

from prosv_lens.cli import build_parser, mirrored_options
from prosv_lens.cli_options import add_options, field_default, field_help, option_values
from prosv_lens.models import default_layer

# The fewest arguments each command with mirrored options parses with.
REQUIRED = {
    "demo": [],
    "axbench-eval": ["--axbench", "a", "--out", "o"],
    "generate": ["a prompt"],
    "train": [],
    "reproduce": ["smollm2-l12"],
}
MIRRORS = mirrored_options()
IDS = [f"{m.command}:{m.config.__name__}" for m in MIRRORS]


def _subparser(command: str) -> argparse.ArgumentParser:
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    return sub.choices[command]


def _actions(command: str) -> dict[str, argparse.Action]:
    return {a.dest: a for a in _subparser(command)._actions}


def test_every_command_with_mirrored_options_is_covered():
    assert {m.command for m in MIRRORS} == set(REQUIRED)


@pytest.mark.parametrize("mirror", MIRRORS, ids=IDS)
def test_every_field_of_a_mirrored_config_has_help(mirror):
    for f in dataclasses.fields(mirror.config):
        assert field_help(mirror.config, f.name).strip(), f.name


@pytest.mark.parametrize("mirror", MIRRORS, ids=IDS)
def test_parser_defaults_are_the_dataclass_defaults(mirror):
    actions = _actions(mirror.command)
    args = build_parser().parse_args([mirror.command, *REQUIRED[mirror.command]])
    for name in mirror.names:
        action, default = actions[name], field_default(mirror.config, name)
        if mirror.merge:  # None: the preset's / config's own value applies
            assert action.default is None and getattr(args, name) is None, name
        elif default is not dataclasses.MISSING:
            assert action.default == default and getattr(args, name) == default, name
        else:
            assert action.required, name
    if mirror.merge:
        assert option_values(args, mirror.names, merge=True) == {}


@pytest.mark.parametrize("mirror", MIRRORS, ids=IDS)
def test_each_option_shows_its_fields_help_and_default(mirror):
    actions = _actions(mirror.command)
    for name in mirror.names:
        shown = (actions[name].help or "").replace("%%", "%")
        assert shown.startswith(field_help(mirror.config, name)), name
        f = next(f for f in dataclasses.fields(mirror.config) if f.name == name)
        default = field_default(mirror.config, name)
        if "default_help" in f.metadata:
            assert f"(default: {f.metadata['default_help']})" in shown, name
        elif default not in (None, dataclasses.MISSING) and not isinstance(default, bool):
            assert re.search(
                r"\(default: [^)]*"
                + re.escape(f"{default:g}" if isinstance(default, float) else str(default)),
                shown,
            ), (name, shown)


def test_help_pages_list_the_mirrored_options_with_defaults(capsys):
    with pytest.raises(SystemExit):
        build_parser().parse_args(["train", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert "--epochs EPOCHS passes over each concept's data (default: 12)" in out
    assert "--beta BETA factor init scale" in out and "(default: prosv 4 or fssv 2)" in out
    assert (
        "--layer LAYER block whose output (hook_resid_post) is steered (default: 40% of the depth)"
        in out
    )
    assert (
        "paper settings: prosv (f2+l2; beta 4, c 8, lr_alpha 10) or fssv (all; beta 2, c 1, lr_alpha 1)"
        in out
    )


def test_unset_options_build_the_default_configs():
    from prosv_lens.experiments.axbench_eval import AxBenchEvalConfig
    from prosv_lens.experiments.demo import DemoConfig
    from prosv_lens.generation import GenerationConfig

    parser = build_parser()
    names = {(m.command, m.config): m.names for m in MIRRORS}
    demo = parser.parse_args(["demo"])
    assert DemoConfig(**option_values(demo, names["demo", DemoConfig])) == DemoConfig()
    ax = parser.parse_args(["axbench-eval", *REQUIRED["axbench-eval"]])
    built = AxBenchEvalConfig(**option_values(ax, names["axbench-eval", AxBenchEvalConfig]))
    assert built == AxBenchEvalConfig(axbench="a", out="o")
    gen = parser.parse_args(["generate", "p"])
    values = option_values(gen, names["generate", GenerationConfig])
    assert GenerationConfig(**values) == GenerationConfig()


def test_default_layer_is_40_percent_of_the_depth_and_the_only_copy():
    assert (default_layer(30), default_layer(26), default_layer(42), default_layer(3)) == (
        12,
        10,
        17,
        1,
    )
    package = Path(__file__).resolve().parents[1] / "prosv_lens"
    copies = [
        str(p)
        for p in package.rglob("*.py")
        if re.search(r"0\.4\s*\*\s*\w*\.?n_layers", p.read_text())
    ]
    assert copies == [], copies


@dataclasses.dataclass(frozen=True)
class _Toy:
    name: str = dataclasses.field(metadata={"help": "a name"})
    mode: Literal["a", "b"] = dataclasses.field(default="a", metadata={"help": "a mode"})
    pick: str = dataclasses.field(default="x", metadata={"help": "a pick", "choices": ("x", "y")})
    count: int = dataclasses.field(default=2, metadata={"help": "how many", "min": 1})
    rate: float | None = dataclasses.field(default=None, metadata={"help": "a rate"})
    fast: bool = dataclasses.field(default=False, metadata={"help": "go fast"})
    share: float = dataclasses.field(default=0.5, metadata={"help": "50% of it"})


def _toy_parser(**kw) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="toy", exit_on_error=False)
    add_options(p, _Toy, [f.name for f in dataclasses.fields(_Toy)], **kw)
    return p


def test_add_options_types_choices_and_round_trip():
    p = _toy_parser()
    args = p.parse_args(
        ["--name", "n", "--mode", "b", "--pick", "y", "--count", "3", "--rate", "0.5", "--fast"]
    )
    values = option_values(args, [f.name for f in dataclasses.fields(_Toy)])
    assert _Toy(**values) == _Toy("n", "b", "y", 3, 0.5, True, 0.5)
    assert _Toy(**option_values(p.parse_args(["--name", "n"]), ["name"])) == _Toy("n")
    for bad in (["--mode", "c"], ["--pick", "z"], ["--count", "0"], ["--rate", "nan"]):
        with pytest.raises((argparse.ArgumentError, SystemExit)):
            p.parse_args(["--name", "n", *bad])
    assert "50% of it (default: 0.5)" in p.format_help()  # a % in help text is kept as is


def test_add_options_merge_leaves_unset_options_none():
    p = _toy_parser(merge=True, flags={"count": ["--n", "--count"]}, default_help={"rate": "auto"})
    args = p.parse_args(["--n", "4"])
    names = [f.name for f in dataclasses.fields(_Toy)]
    assert option_values(args, names, merge=True) == {"count": 4}
    assert "(default: auto)" in p.format_help() and "--n COUNT, --count COUNT" in p.format_help()


def test_a_field_without_help_or_parser_is_refused():
    @dataclasses.dataclass
    class Bad:
        quiet: int = 0
        ids: tuple[int, ...] = dataclasses.field(default=(), metadata={"help": "ids"})

    with pytest.raises(KeyError, match="Bad.quiet has no 'help'"):
        add_options(argparse.ArgumentParser(), Bad, ["quiet"])
    with pytest.raises(TypeError, match="Bad.ids: no command-line parser"):
        add_options(argparse.ArgumentParser(), Bad, ["ids"])
