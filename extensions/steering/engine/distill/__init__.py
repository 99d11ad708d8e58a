"""Distilling a system prompt (a character's context) into a steering vector, and measuring it.

- ``options``: DistillOptions, what a ``method: distill`` recipe stores (part of its tensor key).
- ``messages``: the training and held-out chat messages.
- ``chats``: chats with and without the system prompt, as token ids, batches and greedy replies.
- ``training``: fitting the vector (``distill``; ``build_distilled`` for engine/methods/distill.py).
- ``evaluation``: KL recovery, behaviour and time to first token on held-out messages.
- ``recipes``: ``distill_recipe``, the recipe of a distilled preset; imported by name, not from here
  (it sits above engine.recipe, which reaches this package through the distill method).
"""
from .chats import Batch, chat_ids, greedy_replies, reply_logprobs, token_kl
from .evaluation import EVAL_REPLY_TOKENS, Evaluation, Example, evaluate, evaluate_many, kl_divergences, recovery
from .messages import held_out_messages, load_messages, split_messages, training_messages
from .options import BASELINES, DEFAULT_LAYERS, DIRECT_STRENGTH, LEGACY, VIAS, CutShort, DistillOptions
from .training import TrainableSteering, build_distilled, distill, fitted_options, stop_note

__all__ = [
    "BASELINES", "Batch", "CutShort", "DEFAULT_LAYERS", "DIRECT_STRENGTH", "DistillOptions", "EVAL_REPLY_TOKENS", "Evaluation", "Example", "LEGACY",
    "TrainableSteering", "VIAS", "build_distilled", "chat_ids", "distill", "evaluate", "evaluate_many", "fitted_options",
    "greedy_replies", "held_out_messages", "kl_divergences", "load_messages", "recovery", "reply_logprobs", "split_messages",
    "stop_note", "token_kl", "training_messages",
]
