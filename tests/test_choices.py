"""Chat choices (runtime/choices.py): sessions never flip back on, keys never collide, ids and the file stay bounded."""
from __future__ import annotations

import json

import pytest

from extensions.steering.engine.presets import PresetError, PresetStore, Recipe
from extensions.steering.runtime import MAX_SESSIONS, ChatChoice, SteeringRuntime, chat_key, state_key
from extensions.steering.runtime import choices as choices_module


@pytest.fixture
def rt(tmp_path):
    store = PresetStore(tmp_path / "presets", shipped=None)
    store.save(Recipe("up", positive=["Love"], negative=["Hate"], method="mean", mode="all", layers=[1], strength=2.0))
    (tmp_path / "characters").mkdir()
    runtime = SteeringRuntime(store, tmp_path / "data", lambda: None, characters_dir=tmp_path / "characters", multi_user=True)
    runtime.set_active([("up", 2.0)])
    return runtime


def session(name: str) -> dict:
    return {"steering_chat": True, "mode": "chat", "character_menu": "Alice", "unique_id": None, "steering_session": name}


def chat(character: str = "Alice", unique_id: str = "20260101-10-00-00") -> dict:
    return {"steering_chat": True, "mode": "chat", "character_menu": character, "unique_id": unique_id}


def chats_file(tmp_path):
    return tmp_path / "data" / "chats.json"


# -- sessions (--multi-user) ------------------------------------------------------------------------------------
def test_a_session_switched_off_stays_off_after_any_number_of_others(rt):
    rt.save_chat_view(session("mine"), False, {})
    for index in range(MAX_SESSIONS + 5):  # its choice is dropped from memory...
        rt.save_chat_view(session(f"other{index}"), True, {"up": 1.0})
    assert rt.chat_view(session("other4")).dropped and not rt.chat_view(session("other5")).dropped  # MAX_SESSIONS kept
    assert rt.plan(session("mine")) == []  # ...and it still reads as off, never back on
    view = rt.chat_view(session("mine"))
    assert not view.enabled and view.dropped
    assert (f"⚠ This server keeps the steering choices of {MAX_SESSIONS} browser sessions at most and no longer has this one's: "
            "steering is off for this chat until you switch it on again.") in view.text()
    assert rt.plan(session("new")) == [("up", 2.0)] and not rt.chat_view(session("new")).dropped  # a new session: the default
    rt.save_chat_view(session("mine"), True, {})  # switched on again by its user
    assert rt.plan(session("mine")) == [("up", 2.0)] and not rt.chat_view(session("mine")).dropped


def test_a_session_switched_on_with_steering_off_by_default_falls_back_to_off(tmp_path, rt):
    off = SteeringRuntime(rt.store, tmp_path / "data", lambda: None, default_enabled=False, multi_user=True)
    off.set_active([("up", 2.0)])
    off.save_chat_view(session("mine"), True, {"up": 3.0})
    for index in range(MAX_SESSIONS):
        off.save_chat_view(session(f"other{index}"), True, {})
    assert off.plan(session("mine")) == [] and off.chat_view(session("mine")).dropped


def test_once_even_the_dropped_sessions_overflow_no_unknown_session_reads_as_on(rt, monkeypatch):
    monkeypatch.setattr(choices_module, "MAX_SESSIONS", 2)
    monkeypatch.setattr(choices_module, "MAX_DROPPED", 3)
    rt.save_chat_view(session("mine"), False, {})
    for index in range(6):
        rt.save_chat_view(session(f"other{index}"), False, {})
    # "mine" is no longer even known as dropped: it, and any session without a kept choice, reads as off and says so
    assert rt.plan(session("mine")) == [] and rt.chat_view(session("mine")).dropped
    assert rt.plan(session("new")) == [] and rt.chat_view(session("new")).dropped
    assert rt.plan(session("other5")) == []  # a kept choice is as it was
    rt.save_chat_view(session("mine"), True, {})
    assert rt.plan(session("mine")) == [("up", 2.0)]


def test_a_session_key_is_bounded_whatever_the_browser_sends(rt):
    huge = "x" * 1_000_000
    assert len(state_key(session(huge))) < 80
    rt.save_chat_view(session(huge), False, {})
    assert rt.plan(session(huge)) == [] and rt.plan(session("x" * 999_999)) == [("up", 2.0)]


# -- keys of saved chats ----------------------------------------------------------------------------------------
def test_keys_cannot_collide(rt, tmp_path):
    assert chat_key("chat", "A/B", "C") != chat_key("chat", "A", "B/C")
    assert chat_key("chat", "A%2FB", "C") != chat_key("chat", "A/B", "C")
    assert chat_key("chat", "#" + "0" * 32, "C") != chat_key("chat", "é" * 200, "C")  # an escaped part vs a digest
    assert chat_key("chat", "Alice", "20260101-10-00-00") == "chat/Alice/20260101-10-00-00"  # the usual keys read as before
    rt.save_chat_view(chat("A/B", "C"), False, {})
    rt.save_chat_view(chat("A", "B/C"), True, {"up": 0.5})
    assert rt.chat_choice(state_key(chat("A/B", "C"))) == ChatChoice(False, {})
    assert rt.chat_choice(state_key(chat("A", "B/C"))) == ChatChoice(True, {"up": 0.5})
    assert len(json.loads(chats_file(tmp_path).read_text())["chats"]) == 2


def test_a_format_1_chats_file_is_migrated_and_every_choice_survives(rt, tmp_path):
    old = {
        "chat/Alice/20260101-10-00-00": {"enabled": False, "strengths": {}},
        "chat/Alice/My chat: 100% #1": {"enabled": True, "strengths": {"up": 0.5}},  # the webui's renamed chats take any text
        "chat//20260102-10-00-00": {"enabled": False, "strengths": {}},  # no character
        "chat/Bob/a/b": {"enabled": False, "strengths": {"up": 3.0}},  # a character is a file stem: the id is "a/b"
        "instruct/20260103-10-00-00": {"enabled": True, "strengths": {"up": 1.0}},
    }
    chats_file(tmp_path).parent.mkdir(parents=True, exist_ok=True)
    chats_file(tmp_path).write_text(json.dumps(old))
    again = SteeringRuntime(rt.store, tmp_path / "data", lambda: None)
    assert again.chat_choice(state_key(chat("Alice", "20260101-10-00-00"))) == ChatChoice(False, {})
    assert again.chat_choice(state_key(chat("Alice", "My chat: 100% #1"))) == ChatChoice(True, {"up": 0.5})
    assert again.chat_choice(state_key(chat("", "20260102-10-00-00"))).enabled is False
    assert again.chat_choice(state_key(chat("Bob", "a/b"))) == ChatChoice(False, {"up": 3.0})
    instruct = {"steering_chat": True, "mode": "instruct", "character_menu": "Alice", "unique_id": "20260103-10-00-00"}
    assert again.chat_choice(state_key(instruct)) == ChatChoice(True, {"up": 1.0})
    assert json.loads(chats_file(tmp_path).read_text()) == old  # reading never writes
    again.save_chat_view(chat("Alice", "other"), False, {})  # the next save writes the new format, every choice kept
    written = json.loads(chats_file(tmp_path).read_text())
    assert written["format"] == 2 and len(written["chats"]) == 6 and "chat/Alice/My chat: 100%25 %231" in written["chats"]


def test_a_chats_file_of_a_newer_format_is_never_overwritten(rt, tmp_path):
    chats_file(tmp_path).parent.mkdir(parents=True, exist_ok=True)
    chats_file(tmp_path).write_text(json.dumps({"format": 3, "chats": {}, "more": 1}))
    before = chats_file(tmp_path).read_bytes()
    assert rt.plan(chat()) == [("up", 2.0)] and "not a format this version reads (format 3)" in rt.last_error
    with pytest.raises(ValueError, match="not a format this version reads"):
        rt.save_chat_view(chat(), False, {})
    assert chats_file(tmp_path).read_bytes() == before


# -- bounded ids and file -------------------------------------------------------------------------------------
def test_a_character_name_longer_than_a_file_name_is_handled(rt, tmp_path):
    name = "é" * 200  # 400 bytes: no file can have this name
    assert rt.plan(chat(name)) == [("up", 2.0)]
    view = rt.chat_view(chat(name))
    assert view.character == name and [row.name for row in view.rows] == ["up"]
    rt.save_chat_view(chat(name), False, {})
    assert rt.plan(chat(name)) == []
    with pytest.raises(PresetError, match="a character name has at most 255 bytes .* this one has 400"):
        rt.attach(name, [("up", 1.0)])
    assert not (tmp_path / "data" / "characters.yaml").exists()
    api = {"steering_chat": True, "mode": "instruct", "character": "x" * 300}  # the API's character
    assert rt.plan(api) == [("up", 2.0)]


def test_chat_ids_are_bounded_in_the_file(rt, tmp_path):
    for index in range(20):
        rt.save_chat_view(chat("Alice", f"{index}" + "x" * 1_000_000), False, {})
    assert all(not rt.chat_choice(state_key(chat("Alice", f"{index}" + "x" * 1_000_000))).enabled for index in range(20))
    assert chats_file(tmp_path).stat().st_size < 20 * 200
    incognito = chat("Alice", "incognito-" + "x" * 1_000_000)
    rt.save_chat_view(incognito, False, {})
    assert rt.plan(incognito) == [] and len(json.loads(chats_file(tmp_path).read_text())["chats"]) == 20  # still in memory only


def test_the_file_keeps_at_most_max_chats_and_says_so(rt, tmp_path, monkeypatch):
    monkeypatch.setattr(choices_module, "MAX_CHATS", 3)
    for index in range(3):
        rt.save_chat_view(chat("Alice", f"c{index}"), False, {})
    before = chats_file(tmp_path).read_bytes()
    with pytest.raises(ValueError) as refused:
        rt.save_chat_view(chat("Alice", "c3"), False, {})
    assert str(refused.value) == (f"{chats_file(tmp_path)} already keeps the choices of 3 chats, the most it keeps: this chat's is not "
                                  "remembered; set other chats back to the defaults to make room")
    assert chats_file(tmp_path).read_bytes() == before  # nothing lost
    assert rt.plan(chat("Alice", "c3")) == [("up", 2.0)]
    rt.save_chat_view(chat("Alice", "c0"), False, {"up": 1.0})  # a kept chat still changes
    rt.save_chat_view(chat("Alice", "c1"), True, {})  # back to the default: room for another
    rt.save_chat_view(chat("Alice", "c3"), False, {})
    assert rt.plan(chat("Alice", "c3")) == []
