"""The command line's arguments: every command, its flags and their checks, and reading the values that name
files or presets (--steer, --monitor, --character). cli.py runs the commands."""
from __future__ import annotations

import argparse
import os
from pathlib import Path

from .characters import read_character
from .engine import validation
from .engine.apply import MODES
from .engine.build import READINGS
from .engine.generation import Sampling
from .engine.methods import PROMPT_LAYERS, PROMPT_METHODS
from .engine.presets import PresetStore
from .engine.recipe import Recipe, read_recipe


class UsageError(Exception):
    """Bad command-line input: printed as one 'error:' line, exit code 2."""


class Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, like every other error of ours
        raise UsageError(message)


def default_presets_dir() -> Path:
    return Path(os.environ.get("STEERING_PRESETS", Path.home() / ".local" / "share" / "steering" / "presets"))


def _argument(check):
    """An argparse type from a validation check (its message becomes the usage error)."""
    def parse(text: str):
        try:
            return check(text)
        except ValueError as error:
            raise argparse.ArgumentTypeError(str(error)) from None

    parse.__name__ = check.__name__
    return parse


finite = _argument(lambda text: validation.finite(text, "the value"))
strength = _argument(validation.strength)
strength_spec = _argument(validation.strength_spec)
dose = _argument(validation.dose)
layer_spec = _argument(validation.layer_spec)
seed = _argument(validation.seed)
max_new_tokens = _argument(validation.max_new_tokens)
temperature = _argument(validation.temperature)
top_p = _argument(validation.top_p)


def _common(parser: argparse.ArgumentParser, model: bool = True) -> None:
    parser.add_argument("--presets", type=Path, default=None, help="user preset folder (default: $STEERING_PRESETS or ~/.local/share/steering/presets)")
    if model:
        parser.add_argument("--model", default=None, help="Transformers folder or .gguf file (default: the embedded SmolLM2-135M-Instruct)")
        parser.add_argument("--layers-path", default=None, metavar="PATH",
                            help="attribute path of the model's decoder blocks (e.g. model.layers), for an architecture not found by itself")


def make_parser() -> Parser:
    parser = Parser(prog="python -m extensions.steering", description="Activation steering: build, apply and store steering vectors.")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=Parser)

    build = commands.add_parser("build", help="build a vector from prompts and save it as a preset")
    build.add_argument("name")
    build.add_argument("--positive", action="append", required=True, help="positive prompt (repeat for many pairs)")
    build.add_argument("--negative", action="append", default=[],
                       help="negative prompt (repeat for many pairs); left out, English when --positive is one language name such as Spanish")
    build.add_argument("--layer", action="append", type=layer_spec,
                       help=(f"auto (chosen per model by measurement; mean/pca's default), a layer index or a share of depth such as 20% "
                             f"(repeatable; actadd's default {' '.join(PROMPT_LAYERS)})").replace("%", "%%"))
    build.add_argument("--strength", "--coefficient", dest="strength", type=strength_spec, default=None,
                       help="auto (calibrated to a fixed KL budget per model; mean/pca's default) or a fixed number (actadd's default 4)")
    build.add_argument("--dose", type=dose, default=None, help="with --strength auto: the strength relative to calibration (default 1)")
    build.add_argument("--mode", choices=MODES, default=None, help="default: actadd for actadd, all for mean/pca")
    build.add_argument("--method", choices=PROMPT_METHODS, default=None, help="default: mean (one direction, all positions)")
    build.add_argument("--reading", choices=READINGS, default="mean", help="positions read for mean/pca")
    build.add_argument("--no-expand", action="store_true",
                       help="read one pair as written (by default one pair of words or of sentences is expanded into many framed pairs)")
    build.add_argument("--description", default="")
    build.add_argument("--overwrite", action="store_true", help="replace an existing user preset")
    build.add_argument("--check", action="store_true", help="first say whether one pair is likely to move this model (see the check command)")
    _common(build)

    check = commands.add_parser("check", help="before building: is a vector from this pair likely to move this model? (a few seconds)")
    check.add_argument("--positive", required=True, help="the positive side, as for build")
    check.add_argument("--negative", default=None, help="the negative side, as for build (English when --positive is one language name)")
    check.add_argument("--details", action="store_true", help="also the numbers behind the answer")
    check.add_argument("--json", action="store_true", help="the answer and its numbers as one JSON object")
    _common(check)

    generate = commands.add_parser("generate", help="complete a prompt, steered by presets")
    generate.add_argument("--prompt", required=True)
    generate.add_argument("--chat", action="store_true", help="wrap the prompt in the model's chat template")
    generate.add_argument("--system", default=None, help="system message (with --chat)")
    generate.add_argument("--steer", action="append", default=[], metavar="NAME[:STRENGTH]",
                          help="preset name or recipe file, optional strength (a dose for a calibrated preset: 1 = calibrated)")
    generate.add_argument("--n", type=int, default=1)
    generate.add_argument("--seed", type=seed, default=0, help=f"the first seed, 0 to {validation.MAX_SEED}")
    generate.add_argument("--max-new-tokens", type=max_new_tokens, default=Sampling.max_new_tokens,
                          help=f"1 to {validation.MAX_NEW_TOKENS}, and the prompt's tokens plus these within the model's context")
    generate.add_argument("--temperature", type=temperature, default=Sampling.temperature,
                          help=f"0 (greedy) or at least {validation.MIN_TEMPERATURE:g}")
    generate.add_argument("--top-p", type=top_p, default=Sampling.top_p)
    generate.add_argument("--compare", action="store_true", help="also the unsteered completion from each seed")
    generate.add_argument("--json", action="store_true", help="one JSON object per completion")
    generate.add_argument("--monitor", action="append", default=[], metavar="NAME[,NAME]",
                          help="read each completion along these presets (and those of --steer): σ of unsteered replies (docs/monitor.md)")
    _common(generate)

    commands.add_parser("list", help="list presets").add_argument("--presets", type=Path, default=None)
    for name in ("show", "delete"):
        sub = commands.add_parser(name, help=f"{name} a preset")
        sub.add_argument("name")
        _common(sub, model=False)
    rename = commands.add_parser("rename", help="rename a user preset")
    rename.add_argument("old")
    rename.add_argument("new")
    _common(rename, model=False)
    ui = commands.add_parser("ui", help="the Steering tab on its own page (needs gradio 4.37: .ci/ui-setup.sh)")
    ui.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    ui.add_argument("--port", type=int, default=7861)
    _common(ui)
    export = commands.add_parser("export", help="write a preset as a GGUF control vector (llama.cpp, ik_llama.cpp, repeng)")
    export.add_argument("name")
    export.add_argument("out", type=Path, metavar="OUT.gguf")
    export.add_argument("--strength", type=strength, default=None, help="strength baked into the file (default: the preset's); llama.cpp's scale 1 then means it")
    export.add_argument("--overwrite", action="store_true", help="replace an existing OUT file")
    _common(export)
    imported = commands.add_parser("import", help="make a preset from a GGUF control vector (repeng, llama-cvector-generator, ours)")
    imported.add_argument("file", type=Path, metavar="FILE.gguf")
    imported.add_argument("name")
    imported.add_argument("--description", default="")
    imported.add_argument("--overwrite", action="store_true", help="replace an existing user preset")
    _common(imported)
    commands.add_parser("where-model", help="print the path of the default model's GGUF file (for llama-server -m)")
    add_distill_commands(commands)
    return parser


def add_distill_commands(commands) -> None:
    from .engine import distill as d

    sub = commands.add_parser("distill", help="replace a system prompt (or a character's context) with a steering preset")
    sub.add_argument("name")
    source = sub.add_mutually_exclusive_group(required=True)
    source.add_argument("--system", help="the system prompt to distil")
    source.add_argument("--character", type=Path, help="a webui character file (.yaml/.json) whose context to distil")
    sub.add_argument("--via", choices=d.VIAS, default=d.DistillOptions.via,
                     help="kl: fit a direction per layer to the with-S next-token distributions (default); "
                          "contrast: mean activation difference with/without S over generic chats; direct: S against a neutral prompt")
    sub.add_argument("--layer", action="append", type=layer_spec, help="layer index or share of depth (repeatable; default: " + "; ".join(f"{via} {' '.join(map(str, layers))}" for via, layers in d.DEFAULT_LAYERS.items()).replace("%", "%%") + ")")
    sub.add_argument("--steps", type=int, default=None, help=f"optimisation steps of --via kl, at most (default {d.DistillOptions.steps})")
    sub.add_argument("--lr", type=finite, default=None, help=f"Adam learning rate of --via kl (default {d.DistillOptions.lr})")
    sub.add_argument("--messages", type=int, default=None, help=f"training messages used (default {d.DistillOptions.messages})")
    sub.add_argument("--plateau", type=finite, default=None,
                     help="--via kl stops early once a pass over the training messages lowers the loss by less than this share "
                          f"(0: never; default {d.DistillOptions.plateau})")
    sub.add_argument("--time-limit", type=finite, default=None, metavar="SECONDS",
                     help="--via kl stops fitting after this many seconds (default: none, so the same options give the same vector "
                          "on any machine); a fit cut short says so and its preset records it")
    sub.add_argument("--instead", default=None, metavar="TEXT",
                     help="the system message the steered chat will send in place of S, e.g. the one line a character keeps (default: none)")
    sub.add_argument("--metric", default=None, help="behaviour score for evaluate: json, sentiment, pirate, ... (default: guessed from the prompt)")
    sub.add_argument("--description", default="")
    sub.add_argument("--overwrite", action="store_true", help="replace an existing user preset")
    sub.add_argument("--evaluate", action="store_true", help="then measure it on the held-out messages")
    _common(sub)

    ev = commands.add_parser("evaluate", help="measure presets as stand-ins for a system prompt on held-out messages")
    ev.add_argument("presets_to_test", nargs="+", metavar="PRESET", help="preset name or recipe file, optional :STRENGTH")
    ev.add_argument("--system", default=None, help="the system prompt (default: the distill recipe's own)")
    ev.add_argument("--character", type=Path, default=None, help="a character file whose context is the system prompt")
    ev.add_argument("--instead", default=None, metavar="TEXT",
                    help="the system message the steered chat sends in place of S, e.g. a character's one-line context (default: the recipe's, else none)")
    ev.add_argument("--held-out", type=int, default=None, help="how many held-out messages (default: all)")
    ev.add_argument("--metric", default=None, help="behaviour score (default: the recipe's, else guessed from the prompt)")
    ev.add_argument("--ttft-rounds", type=int, default=2, help="timed requests per message and condition")
    ev.add_argument("--behaviour-tokens", type=max_new_tokens, default=48,
                    help=f"length of the greedy replies scored for behaviour (1 to {validation.MAX_NEW_TOKENS})")
    ev.add_argument("--json", action="store_true", help="one JSON object per preset instead of the table")
    _common(ev)


def parse_steer(spec: str, store: PresetStore) -> tuple[Recipe, float | None]:
    """'NAME', 'NAME:COEF', 'path/to/recipe.yaml' or 'path/to/recipe.yaml:COEF'."""
    try:
        target, strength = validation.split_spec(spec)
    except ValueError as error:
        raise UsageError(f"--steer {spec!r}: {error}") from None
    if target.endswith((".yaml", ".yml")) or os.sep in target:
        path = Path(target)
        if not path.is_file():
            raise UsageError(f"--steer {spec!r}: no recipe file {path}")
        return read_recipe(path), strength
    return store.recipe(target), strength


def monitored(args, store: PresetStore, steered: list[Recipe]) -> dict[str, Recipe]:
    """With --monitor: the presets to read, those of --steer first (empty without --monitor)."""
    if not args.monitor:
        return {}
    named = [name.strip() for spec in args.monitor for name in spec.split(",") if name.strip()]
    if not named:
        raise UsageError("--monitor needs preset names, e.g. --monitor love,kind")
    recipes = {recipe.name: recipe for recipe in steered}
    for name in named:
        recipes.setdefault(name, store.recipe(name))
    return recipes


def system_text(args) -> str | None:
    """The system prompt of --system, or the context of the --character file."""
    if getattr(args, "character", None):
        return read_character(args.character).context
    return args.system
