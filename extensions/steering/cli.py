"""Command line: python -m extensions.steering {build,check,generate,list,show,rename,delete,export,import,distill,evaluate,ui,where-model} ...

Each command reads its arguments (cli_arguments.py), calls its use case (usecases/) and prints the result."""
from __future__ import annotations

import functools
import json
import os
import shutil
import sys
import textwrap
import time
from dataclasses import asdict
from typing import Sequence

from .cli_arguments import UsageError, default_presets_dir, make_parser, monitored, parse_steer, system_text
from .engine.layers import UnsupportedModelError
from .engine.models import ModelLoadError, load_context
from .engine.monitor import labels
from .reports import markdown_table
from .usecases import PresetError, PresetStore, Recipe, Strength, Workspace, build, distill, evaluate, interchange, presets, validation
from .usecases.describe import built_lines
from .usecases.generate import Request, Sampling, generate


def store_for(args) -> PresetStore:
    folder = args.presets or default_presets_dir()
    if folder.exists() and not folder.is_dir():
        raise UsageError(f"--presets {folder}: not a folder")
    return PresetStore(folder)


def context_for(args):
    """The model of --model (the default model without it), its blocks found or named by --layers-path."""
    return load_context(args.model, layers_path=args.layers_path)


def workspace(args, store: PresetStore | None = None) -> Workspace:
    """The use cases' view of the arguments: the preset folder, and the model, loaded when first asked for."""
    return Workspace(store or store_for(args), functools.cache(lambda: context_for(args)), overwrite_hint="pass --overwrite",
                     system_hint="give one with --system or --character")


def cmd_build(args) -> int:
    request = build.BuildRequest(args.name, args.positive, args.negative, args.method, args.layer, Strength(args.strength, args.dose),
                                 args.mode, args.reading, not args.no_expand, args.description)
    recipe = request.recipe()
    ws = workspace(args)
    ws.check_new_name(recipe.name, args.overwrite)
    if args.check:
        if len(args.positive) != 1 or len(args.negative) > 1:
            raise UsageError("--check looks at one pair: give one --positive and one --negative")
        checked = build.check(ws, args.positive[0], args.negative[0] if args.negative else None)
        print(f"check: {checked.line}\n  ({checked.details()})", flush=True)
    pairs, then = _progress_line(build.first_stage(recipe)), build.measuring(recipe)

    def progress(done: int, total: int) -> None:  # the pairs read, then what is measured next
        pairs(done, total)
        if done >= total and then:
            print(f"{then}…", file=sys.stderr, flush=True)

    built = build.build(ws, recipe, progress)
    print("\n".join(built_lines(built, build.save(ws, built, overwrite=args.overwrite))))
    return 0


def cmd_check(args) -> int:
    found = build.check(workspace(args), args.positive, args.negative)
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
    ws = workspace(args)
    wanted = [parse_steer(spec, ws.store) for spec in args.steer]
    if args.compare and not wanted:
        raise UsageError("--compare needs at least one --steer")
    if args.system and not args.chat:
        raise UsageError("--system needs --chat (a system message belongs to a chat template)")
    read = monitored(args, ws.store, [recipe for recipe, _ in wanted])
    if args.chat and not getattr(ws.model().tokenizer, "chat_template", None):
        raise UsageError("this model's tokenizer has no chat template; leave out --chat")
    request = Request(args.prompt, args.seed, Sampling(args.max_new_tokens, args.temperature, args.top_p), args.chat, args.system, args.n)
    results = generate(ws, request, wanted, read, compare=args.compare)
    if args.json:
        for c in results:
            row = {"text": c.text, "steered": c.steered, "seed": c.seed, "prompt": args.prompt, "prompt_tokens": c.prompt_tokens}
            if read:
                row["readings"] = [reading.to_dict() for reading in c.readings]
            print(json.dumps(row), flush=True)
    elif args.compare:
        print_side_by_side(results)
    else:
        for c in results:
            shown = f" [{labels(c.readings)}]" if c.readings else ""
            print(f"--- seed {c.seed}{' (steered)' if c.steered else ''}{shown}\n{args.prompt}{c.text}\n", flush=True)
    return 0


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
            print(f"{left[i] if i < len(left) else '':<{width}} | {right[i] if i < len(right) else ''}")
        print(flush=True)
        pending = {}


def cmd_list(args) -> int:
    found = presets.listing(store_for(args))
    width = max([16] + [len(listed.name) for listed in found])
    for listed in found:
        detail = f"  {listed.description}" if listed.description else ""
        print(f"{listed.name:<{width}} {'shipped' if listed.shipped else 'user':<8} {listed.summary}{detail}")
    return 0


def cmd_show(args) -> int:
    shown = presets.show(store_for(args), args.name)
    print(f"# {shown.path}{' (shipped, read-only)' if shown.shipped else ''}")
    print(shown.yaml, end="")
    for line in ([shown.note] if shown.note else []) + shown.cached:
        print(f"# {line}")
    return 0


def cmd_delete(args) -> int:
    presets.delete(store_for(args), args.name)
    print(f"deleted {args.name}")
    return 0


def cmd_rename(args) -> int:
    path = presets.rename(store_for(args), args.old, args.new)
    print(f"renamed {args.old} to {args.new} ({path})")
    return 0


def cmd_ui(args) -> int:
    try:
        from .ui import standalone
    except ImportError as error:
        raise UsageError(f"the ui command needs gradio 4.37 ({error}); make its environment with .ci/ui-setup.sh") from None
    folder = args.presets or default_presets_dir()
    print(f"loading {args.model or 'the default model'}; then serving http://{args.host}:{args.port}/", flush=True)
    standalone.serve(standalone.make_runtime(args.model, folder, folder.parent / "state", args.layers_path), args.host, args.port)
    return 0


def cmd_export(args) -> int:
    if args.out.exists() and not args.overwrite:
        raise UsageError(f"{args.out} exists; choose another file or pass --overwrite")
    print(interchange.export(workspace(args), args.name, args.out, args.strength, args.overwrite).summary())
    return 0


def cmd_import(args) -> int:
    print(interchange.import_file(workspace(args), args.file, args.name, args.description, args.overwrite).summary())
    return 0


def cmd_where_model(args) -> int:
    from .engine.models import default_gguf

    print(default_gguf())
    return 0


def cmd_distill(args) -> int:
    system = system_text(args)
    if not system.strip():
        raise UsageError("--system is empty: give the system prompt to distil")
    for flag, value in (("--steps", args.steps), ("--messages", args.messages)):
        if value is not None and value < (0 if flag == "--steps" else 1):
            raise UsageError(f"{flag} must be {'0' if flag == '--steps' else '1'} or more")
    if args.time_limit is not None and args.time_limit <= 0:
        raise UsageError("--time-limit must be a positive number of seconds (leave it out for no limit)")
    recipe = distill.DistillRequest(args.name, system, args.via, args.layer, args.steps, args.lr, args.messages, args.plateau,
                                    args.instead, args.metric, args.description).recipe()
    ws = workspace(args)
    ws.check_new_name(recipe.name, args.overwrite)
    options, limit = recipe.options, args.time_limit
    plan = (f": {options.messages} training messages, {options.steps} steps"
            + (f", stopping at your time limit of {limit:g} s" if limit else "") if options.via == "kl" else "")
    print(f"distilling {len(ws.model().tokens(system))} system-prompt tokens via {options.via}{plan}", flush=True)
    fitting = _fit_lines(options.steps, limit)
    done = distill.distill(ws, recipe, fitting, overwrite=args.overwrite)
    if fitting.stopped:
        print(done.fit, flush=True)
    note = done.recipe.note()
    print(f"saved {recipe.name} to {done.path} (strength {recipe.strength:g}, mode {recipe.mode}, layers {done.vector.layers})"
          + (f"; {note}" if note else ""))
    if args.evaluate:
        result = evaluate.evaluate_one(ws, done.recipe, done.vector, ttft_rounds=2, progress=_progress_line("evaluating"))
        print(markdown_table([(recipe.name, result)]))
    return 0


def _fit_lines(steps: int, time_limit: float | None):
    """A Fitting that prints a line per stage and ``step 40/120 loss 0.0123 (31 s)`` lines: the first, about ten more, the last (stderr)."""
    from .usecases import Fitting

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
    if args.held_out is not None and args.held_out < 1:
        raise UsageError("--held-out must be 1 or more")
    if args.ttft_rounds < 1:
        raise UsageError("--ttft-rounds must be 1 or more")
    ws = workspace(args)
    candidates = [evaluate.Candidate(spec, *parse_steer(spec, ws.store)) for spec in args.presets_to_test]
    request = evaluate.EvaluateRequest(candidates, system_text(args), args.metric, args.instead, args.held_out,
                                       args.behaviour_tokens, args.ttft_rounds)

    def built(recipe: Recipe, wall: float, cpu: float) -> None:
        print(f"built {recipe.name} in {wall:.0f} s ({cpu:.0f} s of CPU time)", file=sys.stderr, flush=True)

    results = evaluate.evaluate(ws, request, _progress_line, built)
    for measured in results if args.json else ():
        print(json.dumps({**measured.result.to_dict(), "preset": measured.candidate.label, "strength": measured.strength,
                          "mode": measured.candidate.recipe.mode, "system": measured.system}), flush=True)
    if not args.json:
        print(markdown_table([(m.candidate.label, m.result) for m in results]))
        for m in results:
            if m.result.instead:
                print(f"{m.candidate.label}: the chat without S sends the system message {m.result.instead!r} in its place")
        print(f"\nheld-out messages: {results[0].result.held_out} (every third of extensions/steering/data/distill_messages.txt), "
              f"greedy replies; KL over the first {evaluate.EVAL_REPLY_TOKENS} reply tokens; behaviour on {args.behaviour_tokens}-token replies; "
              "TTFT median of alternating runs in this process")
    return 0


def _progress_line(what: str):
    """progress(done, total) printing one updating line on stderr."""
    def show(done: int, total: int) -> None:
        print(f"\r{what}: {done}/{total}", end="\n" if done >= total else "", file=sys.stderr, flush=True)

    return show


COMMANDS = {"where-model": cmd_where_model, "build": cmd_build, "check": cmd_check, "generate": cmd_generate, "list": cmd_list,
            "show": cmd_show, "delete": cmd_delete, "rename": cmd_rename, "ui": cmd_ui, "export": cmd_export, "import": cmd_import,
            "distill": cmd_distill, "evaluate": cmd_evaluate}


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
