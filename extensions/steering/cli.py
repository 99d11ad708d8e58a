"""Command line: python -m extensions.steering {build,check,generate,list,show,rename,delete,export,import,distill,evaluate,ui,where-model} ..."""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import textwrap
import time
from dataclasses import asdict
from pathlib import Path
from typing import Sequence

from .engine import validation
from .engine.apply import MODES, Steer
from .engine.build import READINGS
from .engine.expansion import VERSIONS as EXPANSIONS
from .engine.feasibility import check_pair
from .engine.generation import Sampling, check_room, completions
from .engine.languages import language_recipe
from .engine.layers import UnsupportedModelError
from .engine.methods import DEFAULT as DEFAULT_METHOD
from .engine.methods import PROMPT_LAYERS, PROMPT_METHODS, build_vector, default_expand, measuring
from .engine.models import ModelLoadError, load_context
from .engine.monitor import Monitor, labels
from .engine.presets import PresetError, PresetStore
from .engine.recipe import Recipe, read_recipe
from .engine.tokens import prompt_ids
from .engine.untrusted import one_line
from .engine.wording import first_stage, plain_summary


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
    build.add_argument("--negative", action="append", required=True, help="negative prompt (repeat for many pairs)")
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
    check.add_argument("--negative", required=True, help="the negative side, as for build")
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


def store_for(args) -> PresetStore:
    folder = args.presets or default_presets_dir()
    if folder.exists() and not folder.is_dir():
        raise UsageError(f"--presets {folder}: not a folder")
    return PresetStore(folder)


def context_for(args):
    """The model of --model (the default model without it), its blocks found or named by --layers-path."""
    return load_context(args.model, layers_path=args.layers_path)


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


def cmd_build(args) -> int:
    method = args.method or DEFAULT_METHOD
    if args.dose is not None and args.strength not in (None, validation.AUTO):
        raise UsageError("--dose is relative to a calibrated strength: use it with --strength auto, not a number")
    if args.dose is not None or args.strength == validation.AUTO:
        strength, calibrated = (1.0 if args.dose is None else args.dose), True
    else:  # a number is fixed; nothing at all is the method's default
        strength, calibrated = args.strength, None if args.strength is None else False
    recipe = language_recipe(Recipe(  # a language name alone is built from its distilled instruction
        name=args.name,
        positive=args.positive,
        negative=args.negative,
        description=args.description,
        method=method,
        layers=args.layer,
        strength=strength,
        calibrated=calibrated,
        mode=args.mode,
        reading=args.reading,
        expand=None if args.no_expand else default_expand(method, args.positive, args.negative),
    ))
    store = store_for(args)
    if store.is_shipped(recipe.name) or (store.exists(recipe.name) and not args.overwrite):
        raise PresetError(f"a preset named {recipe.name!r} exists; choose another name" + ("" if store.is_shipped(recipe.name) else " or pass --overwrite"))
    ctx = context_for(args)
    if args.check:
        if len(args.positive) != 1 or len(args.negative) != 1:
            raise UsageError("--check looks at one pair: give one --positive and one --negative")
        checked = check_pair(ctx, args.positive[0], args.negative[0])
        print(f"check: {checked.line}\n  ({checked.details()})", flush=True)
    built = build_vector(recipe, ctx, progress=_build_progress(recipe))
    vector, found = built.vector, built.calibration
    path = store.save(recipe, vector, ctx, overwrite=args.overwrite, calibration=found)
    print(f"{recipe.name}: {plain_summary(recipe, vector.layers, recipe.auto_layers)}")  # plain words first, then the details
    if recipe.expand:
        print(f"expanded ({recipe.expand}): {EXPANSIONS[recipe.expand].summary} (--no-expand reads it as written)")
    for layer in vector.layers:
        relative = vector.relative_norm(layer)
        print(f"layer {layer}: {vector.positions} row(s), norm {vector.norm(layer):.1f}" + (f" ({relative:.2f}× the residual norm)" if relative else ""))
    if found is not None and recipe.auto_layers:
        scores = ", ".join(f"{layer}: {score:.3f}" for layer, score in found.scores.items())
        print(f"layer chosen: {found.layers[0]} (effect along the contrast at the KL budget, per candidate layer: {scores})")
    if found is not None:
        print(f"calibrated scale {found.scale:.4g} (mean KL {found.kl:.3f} for a budget of {found.budget:g} nats/token, "
              f"{found.steps} passes, {found.seconds:.1f} s)" + ("" if recipe.calibrated else "; the fixed strength applies to the unscaled vector"))
    applied = f"dose {recipe.strength:g} of the calibrated strength" if recipe.calibrated else f"strength {recipe.strength:g}"
    print(f"saved {recipe.name} to {path} ({applied}, mode {recipe.mode})")
    return 0


def _build_progress(recipe: Recipe):
    """progress(done, total) of reading the prompt pairs on stderr, then what is measured next."""
    pairs, then = _progress_line(first_stage(recipe)), measuring(recipe)

    def show(done: int, total: int) -> None:
        pairs(done, total)
        if done >= total and then:
            print(f"{then}…", file=sys.stderr, flush=True)

    return show


def cmd_check(args) -> int:
    found = check_pair(context_for(args), args.positive, args.negative)
    if args.json:
        print(json.dumps(asdict(found), ensure_ascii=False))
        return 0
    print(found.line)
    if args.details:
        print(found.details())
    return 0


def cmd_generate(args) -> int:
    if args.n < 1:
        raise UsageError("--n must be at least 1")
    validation.seed(args.seed + args.n - 1, "the last seed (--seed + --n - 1)")
    sampling = Sampling(args.max_new_tokens, args.temperature, args.top_p)
    store = store_for(args)
    wanted = [parse_steer(spec, store) for spec in args.steer]
    if args.compare and not wanted:
        raise UsageError("--compare needs at least one --steer")
    if args.system and not args.chat:
        raise UsageError("--system needs --chat (a system message belongs to a chat template)")
    read = monitored(args, store, [recipe for recipe, _ in wanted])
    ctx = context_for(args)
    if args.chat and not getattr(ctx.tokenizer, "chat_template", None):
        raise UsageError("this model's tokenizer has no chat template; leave out --chat")
    ids = prompt_ids(ctx, args.prompt, args.chat, args.system)
    check_room(ctx, ids, sampling)  # before any vector is built
    steers = []
    for recipe, strength in wanted:
        vector = store.vector(recipe, ctx)
        steers.append(Steer(vector, recipe.strength if strength is None else strength, recipe.mode))
    seeds = range(args.seed, args.seed + args.n)
    monitor = Monitor.of(ctx, {name: store.vector(recipe, ctx) for name, recipe in read.items()}, store.folder / "baselines") if read else None
    results = completions(ctx, ids, steers, seeds, sampling, compare=args.compare, monitor=monitor)
    if args.json:
        for c in results:
            row = {"text": c.text, "steered": c.steered, "seed": c.seed, "prompt": args.prompt, "prompt_tokens": c.prompt_tokens}
            if monitor is not None:
                row["readings"] = [reading.to_dict() for reading in c.readings]
            print(json.dumps(row), flush=True)
    elif args.compare:
        print_side_by_side(results)
    else:
        for c in results:
            read = f" [{labels(c.readings)}]" if c.readings else ""
            print(f"--- seed {c.seed}{' (steered)' if c.steered else ''}{read}\n{args.prompt}{c.text}\n", flush=True)
    return 0


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


def print_side_by_side(results) -> None:
    width = max(30, (shutil.get_terminal_size((120, 20)).columns - 3) // 2)
    pending = {}
    for c in results:
        pending[c.steered] = c
        if len(pending) < 2:
            continue
        left = textwrap.wrap(pending[True].text.replace("\n", " ⏎ "), width) or [""]
        right = textwrap.wrap(pending[False].text.replace("\n", " ⏎ "), width) or [""]
        left_head, right_head = (f"{kind}, seed {c.seed}" + (f" [{labels(pending[steered].readings)}]" if pending[steered].readings else "")
                                 for kind, steered in (("steered", True), ("unsteered", False)))
        print(f"{left_head:<{width}} | {right_head}")
        print(f"{'-' * width}-+-{'-' * width}")
        for i in range(max(len(left), len(right))):
            a = left[i] if i < len(left) else ""
            b = right[i] if i < len(right) else ""
            print(f"{a:<{width}} | {b}")
        print(flush=True)
        pending = {}


def cmd_list(args) -> int:
    found = store_for(args).list()
    width = max([16] + [len(info.name) for info in found])
    for info in found:
        try:
            recipe = read_recipe(info.path)
            strength = f"auto × {recipe.strength:g}" if recipe.calibrated else f"{recipe.strength:g}"
            summary = f"{recipe.method}, layers {recipe.layers}, strength {strength}, mode {recipe.mode}"
            detail = f"  {one_line(recipe.description)}" if recipe.description else ""  # a stranger's text, never raw
        except PresetError as error:
            summary, detail = f"damaged: {error}", ""
        print(f"{info.name:<{width}} {'shipped' if info.shipped else 'user':<8} {summary}{detail}")
    return 0


def cmd_show(args) -> int:
    store = store_for(args)
    path = store.path(args.name)
    recipe = store.recipe(args.name)
    print(f"# {path}{' (shipped, read-only)' if store.is_shipped(args.name) else ''}")
    print(recipe.to_yaml(), end="")
    if recipe.note():
        print(f"# {recipe.note()}")
    for fingerprint, meta in store.cache_entries(recipe):
        line = f"# cached for model {meta.get('model', '?')} ({fingerprint})"
        if "calibration_scale" in meta:
            line += (f": calibrated scale {meta['calibration_scale']}, KL budget {meta['calibration_budget']} nats/token, "
                     f"KL reached {meta['calibration_kl']}, layers {meta['layers_chosen']}, {meta['calibration_seconds']} s")
        if "layer_scores" in meta:
            line += f"; layer scores {meta['layer_scores']}"
        print(one_line(line, limit=10_000))
    return 0


def cmd_delete(args) -> int:
    store_for(args).delete(args.name)
    print(f"deleted {args.name}")
    return 0


def cmd_rename(args) -> int:
    path = store_for(args).rename(args.old, args.new)
    print(f"renamed {args.old} to {args.new} ({path})")
    return 0


def cmd_ui(args) -> int:
    try:
        from .ui import standalone
    except ImportError as error:
        raise UsageError(f"the ui command needs gradio 4.37 ({error}); make its environment with .ci/ui-setup.sh") from None
    presets = args.presets or default_presets_dir()
    print(f"loading {args.model or 'the default model'}; then serving http://{args.host}:{args.port}/", flush=True)
    standalone.serve(standalone.make_runtime(args.model, presets, presets.parent / "state", args.layers_path), args.host, args.port)
    return 0


def cmd_export(args) -> int:
    from .engine.interchange import check_export_path, export_preset

    if args.out.exists() and not args.overwrite:
        raise UsageError(f"{args.out} exists; choose another file or pass --overwrite")
    check_export_path(args.out, args.overwrite)
    store = store_for(args)
    store.recipe(args.name)  # an unknown preset is said before the model loads
    print(export_preset(store, args.name, context_for(args), args.out, args.strength, args.overwrite).summary())
    return 0


def cmd_import(args) -> int:
    from .engine.control_vectors import read_control_vector
    from .engine.interchange import import_control_vector

    store = store_for(args)
    validation.check_name(args.name)
    if store.is_shipped(args.name) or (store.exists(args.name) and not args.overwrite):
        raise PresetError(f"a preset named {args.name!r} exists; choose another name" + ("" if store.is_shipped(args.name) else " or pass --overwrite"))
    if not args.file.is_file():
        raise UsageError(f"{args.file}: no such file")
    read_control_vector(args.file)  # a bad file is refused before the model loads
    print(import_control_vector(store, args.file, args.name, context_for(args), args.description, args.overwrite).summary())
    return 0


def cmd_where_model(args) -> int:
    from .engine.models import default_gguf

    print(default_gguf())
    return 0


COMMANDS = {"where-model": cmd_where_model, "build": cmd_build, "check": cmd_check, "generate": cmd_generate, "list": cmd_list, "show": cmd_show, "delete": cmd_delete, "rename": cmd_rename, "ui": cmd_ui,
            "export": cmd_export, "import": cmd_import}


def main(argv: Sequence[str] | None = None) -> int:
    try:
        args = make_parser().parse_args(argv)
        return COMMANDS[args.command](args)
    except BrokenPipeError:  # the reader went away (`| head`): not an error of ours
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except (UsageError, PresetError, ModelLoadError, UnsupportedModelError, ValueError, OSError) as error:
        print(f"error: {error}".replace("\n", " "), file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130


# -- distil a system prompt into a preset, and measure it (engine/distill/) --------------------------------
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


def _system_text(args) -> str | None:
    from .characters import read_character

    if getattr(args, "character", None):
        return read_character(args.character).context
    return args.system


def cmd_distill(args) -> int:
    from .engine import distill as d
    from .engine.distill.recipes import distill_recipe
    from .reports import markdown_table

    system = _system_text(args)
    if not system.strip():
        raise UsageError("--system is empty: give the system prompt to distil")
    for flag, value in (("--steps", args.steps), ("--messages", args.messages)):
        if value is not None and value < (0 if flag == "--steps" else 1):
            raise UsageError(f"{flag} must be {'0' if flag == '--steps' else '1'} or more")
    if args.time_limit is not None and args.time_limit <= 0:
        raise UsageError("--time-limit must be a positive number of seconds (leave it out for no limit)")
    recipe = distill_recipe(args.name, system, args.layer, via=args.via, description=args.description, steps=args.steps,
                           lr=args.lr, messages=args.messages, plateau=args.plateau, metric=args.metric, instead=args.instead)
    store = store_for(args)
    if store.is_shipped(recipe.name) or (store.exists(recipe.name) and not args.overwrite):
        raise PresetError(f"a preset named {recipe.name!r} exists; choose another name" + ("" if store.is_shipped(recipe.name) else " or pass --overwrite"))
    ctx = context_for(args)
    options = recipe.options
    limit = args.time_limit
    plan = (f": {options.messages} training messages, {options.steps} steps"
            + (f", stopping at your time limit of {limit:g} s" if limit else "") if options.via == "kl" else "")
    print(f"distilling {len(ctx.tokens(system))} system-prompt tokens via {options.via}{plan}", flush=True)
    fitting = _fit_lines(options.steps, limit)
    vector = build_vector(recipe, ctx, progress=fitting).vector
    if fitting.stopped:
        print(d.stop_note(fitting, options.steps), flush=True)
    recipe.options = d.fitted_options(options, fitting)  # cut short: the recipe says how far it got, so it rebuilds to the same vector
    path = store.save(recipe, vector, ctx, overwrite=args.overwrite)
    print(f"saved {recipe.name} to {path} (strength {recipe.strength:g}, mode {recipe.mode}, layers {vector.layers})"
          + (f"; {recipe.note()}" if recipe.note() else ""))
    if args.evaluate:
        target = recipe.target()
        result = d.evaluate(ctx, system, vector, recipe.strength, recipe.mode, metric=target.metric,
                            progress=_progress_line("evaluating"), instead=target.instead)
        print(markdown_table([(recipe.name, result)]))
    return 0


def _fit_lines(steps: int, time_limit: float | None):
    """A Fitting that prints a line per stage and ``step 40/120 loss 0.0123 (31 s)`` lines: the first, about ten more, the last (stderr)."""
    from .engine.progress import Fitting

    started, every = time.perf_counter(), max(1, steps // 10)

    def stage(done: int, total: int) -> None:
        if done <= 2 and total > 2:  # the steps say the rest
            what = "the prompted model's replies to the training messages" if done == 1 else "their next-token distributions"
            print(f"  {what}: done ({time.perf_counter() - started:.0f} s)", file=sys.stderr, flush=True)
        elif done >= total and total <= 2:
            print(f"  done ({time.perf_counter() - started:.0f} s)", file=sys.stderr, flush=True)

    def loss(step: int, steps: int, value: float) -> None:
        if step == 1 or step % every == 0 or step == steps:
            print(f"  step {step}/{steps}  loss {value:.4f}  ({time.perf_counter() - started:.0f} s)", file=sys.stderr, flush=True)

    return Fitting(stage, loss, time_limit)


def cmd_evaluate(args) -> int:
    from .engine import distill as d
    from .reports import markdown_table

    if args.held_out is not None and args.held_out < 1:
        raise UsageError("--held-out must be 1 or more")
    if args.ttft_rounds < 1:
        raise UsageError("--ttft-rounds must be 1 or more")
    store = store_for(args)
    wanted = [parse_steer(spec, store) for spec in args.presets_to_test]
    given = _system_text(args)
    groups: dict[tuple[str, str | None, str | None], list] = {}  # presets standing in for one prompt share its baseline
    for (recipe, strength), spec in zip(wanted, args.presets_to_test):
        target = recipe.target()
        system = given or target.system
        if not system:
            raise UsageError(f"{spec}: the recipe names no system prompt it stands in for (stands_in_for.system); give one with --system or --character")
        instead = args.instead if args.instead is not None else target.instead
        groups.setdefault((system, args.metric or target.metric, instead), []).append((spec, recipe, recipe.strength if strength is None else strength))
    ctx = context_for(args)
    messages = d.held_out_messages(args.held_out)
    results = []
    for (system, metric, instead), plans in groups.items():
        candidates = []
        for spec, recipe, strength in plans:
            vector = store.cached_vector(recipe, ctx)
            if vector is None:
                wall, cpu = time.perf_counter(), time.process_time()
                vector = store.vector(recipe, ctx, progress=_progress_line(f"building {recipe.name}"))
                print(f"built {recipe.name} in {time.perf_counter() - wall:.0f} s ({time.process_time() - cpu:.0f} s of CPU time)", file=sys.stderr, flush=True)
            candidates.append((spec, [Steer(vector, strength, recipe.mode)]))
        measured = d.evaluate_many(ctx, system, candidates, messages, metric, behaviour_tokens=args.behaviour_tokens,
                                   ttft_rounds=args.ttft_rounds, progress=_progress_line(f"evaluating {', '.join(s for s, _, _ in plans)}"),
                                   instead=instead)
        for (spec, result), (_, recipe, strength) in zip(measured, plans):
            results.append((spec, result))
            if args.json:
                print(json.dumps({**result.to_dict(), "preset": spec, "strength": strength, "mode": recipe.mode, "system": system}), flush=True)
    if not args.json:
        print(markdown_table(results))
        for spec, result in results:
            if result.instead:
                print(f"{spec}: the chat without S sends the system message {result.instead!r} in its place")
        print(f"\nheld-out messages: {len(messages)} (every third of extensions/steering/data/distill_messages.txt), greedy replies; "
              f"KL over the first {d.EVAL_REPLY_TOKENS} reply tokens; behaviour on {args.behaviour_tokens}-token replies; "
              "TTFT median of alternating runs in this process")
    return 0


def _progress_line(what: str):
    """progress(done, total) printing one updating line on stderr."""
    def show(done: int, total: int) -> None:
        print(f"\r{what}: {done}/{total}", end="\n" if done >= total else "", file=sys.stderr, flush=True)

    return show


COMMANDS.update(distill=cmd_distill, evaluate=cmd_evaluate)
