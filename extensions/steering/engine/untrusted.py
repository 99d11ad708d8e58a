"""Reading files that may come from a stranger: recipes, character files, the runtime's data files,
GGUF control vectors and safetensors headers all come in through here, bounded before they are parsed.

Every limit is checked against what is read, never trusted from the file: a size before any byte is
parsed, YAML nesting and alias expansion from the parser's events before any node is built, JSON nesting
before ``json.loads`` recurses, and every count and length a binary header declares against the bytes
actually present. A file breaking one is refused with ``FileRefused``: one line naming the file and the
limit. Why each limit has its value: docs/sharing.md.
"""
from __future__ import annotations

import json
import mmap
import os
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml

_YAML_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml when present: the same result, 5x faster
MiB = 1 << 20
MAX_MESSAGE = 500  # characters: a message quotes what it refuses, which may be a file's whole content


def one_line(text: str, limit: int = MAX_MESSAGE) -> str:
    """``text`` as one line of at most ``limit`` characters, safe to print: line breaks become spaces and
    other control characters (a terminal's escape sequences) are shown escaped, as ``\x1b``."""
    text = " ".join(str(text).splitlines())
    if not text.isprintable():
        text = "".join(c if c.isprintable() else ascii(c)[1:-1] for c in text)
    return text if len(text) <= limit else text[:limit - 1] + "…"


class OneLineError(ValueError):
    """An error whose message is one line of bounded length, whatever it quotes from a file."""

    def __init__(self, message: object = ""):
        super().__init__(one_line(str(message)))


class FileRefused(OneLineError):
    """A file is unreadable, damaged or breaks a limit; the message names the file and which."""


@dataclass(frozen=True)
class TextLimits:
    """Limits for a text file of one kind (``kind`` is how the refusal names it)."""

    kind: str
    max_bytes: int
    max_depth: int = 64  # our files nest 5 levels at most; hand-written ones a few more
    # YAML values after alias expansion, what a reader of the data may walk: 50 000 prompt pairs, read
    # (PyYAML builds each value in Python, about 20 µs apiece) in about 2 s on an idle core
    max_nodes: int = 100_000


RECIPE = TextLimits("recipe", 8 * MiB)
CHARACTER = TextLimits("character file", 8 * MiB)
DATA_FILE = TextLimits("data file", 32 * MiB)


def _refuse(source: Any, problem: str) -> FileRefused:
    return FileRefused(f"{source}: {problem}")


def _size(n: int) -> str:
    return f"{n // MiB} MiB" if n >= MiB and n % MiB == 0 else f"{n:,} bytes"


def read_bytes(path: str | os.PathLike, max_bytes: int, kind: str) -> bytes:
    """The bytes of ``path``, refused unread when it holds more than ``max_bytes``."""
    try:
        with open(path, "rb") as handle:
            size = os.fstat(handle.fileno()).st_size
            # read(n) allocates n bytes up front: ask for what the file holds (one more shows it grew meanwhile)
            data = handle.read(size + 1) if size <= max_bytes else b""
            if len(data) > size:
                data += handle.read(max_bytes + 1 - len(data))
    except OSError as error:
        raise _refuse(path, f"cannot read it ({error.strerror or error})") from None
    if size > max_bytes or len(data) > max_bytes:
        raise _refuse(path, f"{_size(max(size, len(data)))}, over the {_size(max_bytes)} a {kind} may hold")
    return data


def read_text(path: str | os.PathLike, limits: TextLimits) -> str:
    try:
        return read_bytes(path, limits.max_bytes, limits.kind).decode("utf-8")
    except UnicodeDecodeError as error:
        raise _refuse(path, f"not UTF-8 text ({error})") from None


# -- YAML ---------------------------------------------------------------------------------------------
def parse_yaml(text: str, source: Any, limits: TextLimits) -> Any:
    """``yaml.safe_load(text)``, after the parser's events showed the document within the nesting and
    expanded-size limits (so neither the composer's recursion nor a reader walking an alias bomb can blow up)."""
    try:
        _check_yaml_events(text, source, limits)
        return yaml.load(text, Loader=_YAML_LOADER)
    except yaml.YAMLError as error:
        if "nesting depth" in str(error):  # libyaml's own bound (1000) met before ours
            raise _refuse(source, f"nested deeper than the {limits.max_depth} levels a {limits.kind} may have") from None
        raise _refuse(source, f"damaged YAML: {error}") from None
    except (ValueError, OverflowError) as error:  # e.g. an integer of 5000 digits, a date 2020-13-45
        if isinstance(error, FileRefused):
            raise
        raise _refuse(source, f"damaged YAML: {error}") from None


def _check_yaml_events(text: str, source: Any, limits: TextLimits) -> None:
    expanded = 0  # values the constructed data holds once every alias is followed
    anchored: dict[str, int] = {}  # anchor -> expanded size of the node it names
    open_nodes: list[tuple[str | None, int]] = []  # (anchor, expanded count at its start) of each open collection
    for event in yaml.parse(text, Loader=_YAML_LOADER):
        if isinstance(event, yaml.AliasEvent):
            if any(anchor == event.anchor for anchor, _ in open_nodes):
                raise _refuse(source, f"damaged YAML: the alias *{event.anchor} is inside the node it names (a structure containing itself)")
            expanded += anchored.get(event.anchor, 0)  # an unknown alias is the composer's error
        elif isinstance(event, yaml.ScalarEvent):
            expanded += 1
            if event.anchor:
                anchored[event.anchor] = 1
        elif isinstance(event, yaml.CollectionStartEvent):
            open_nodes.append((event.anchor, expanded))
            expanded += 1
            if len(open_nodes) > limits.max_depth:
                raise _refuse(source, f"nested deeper than the {limits.max_depth} levels a {limits.kind} may have")
        elif isinstance(event, yaml.CollectionEndEvent):
            anchor, start = open_nodes.pop()
            if anchor:
                anchored[anchor] = expanded - start
        if expanded > limits.max_nodes:
            raise _refuse(source, f"expands to more than the {limits.max_nodes:,} values a {limits.kind} may hold "
                                  "(YAML aliases counted each time they are used)")


# -- JSON ---------------------------------------------------------------------------------------------
_NOT_STRUCTURE = bytes(set(range(256)) - set(b'"[]{}'))  # every byte but quotes and brackets (never inside a UTF-8 character)


def json_depth(text: str, chunk: int = 1 << 20) -> int:
    """How deep the arrays and objects of a JSON text nest, brackets inside strings not counted: linear,
    in numpy, in chunks (memory stays a few MiB whatever the text)."""
    # In JSON every backslash starts a two-character escape: dropping \\ then \" leaves only the quotes
    # that open and close strings, so a bracket is inside a string when an odd number of quotes precede it.
    plain = text.replace("\\\\", "").replace('\\"', "").encode("utf-8", "surrogatepass").translate(None, _NOT_STRUCTURE)
    deepest = level = quotes = 0
    for start in range(0, len(plain), chunk):
        part = np.frombuffer(plain, dtype=np.uint8, count=min(chunk, len(plain) - start), offset=start)
        is_quote = part == ord('"')
        inside = (np.cumsum(is_quote, dtype=np.int64) + quotes) & 1
        quotes += int(is_quote.sum())
        brackets = part[(inside == 0) & ~is_quote]
        if brackets.size:
            levels = np.cumsum(np.where((brackets == ord("[")) | (brackets == ord("{")), 1, -1), dtype=np.int64) + level
            deepest, level = max(deepest, int(levels.max())), int(levels[-1])
    return deepest


def parse_json(text: str | bytes, source: Any, limits: TextLimits) -> Any:
    """``json.loads(text)`` after a scan showed its nesting within the limit (json recurses per level)."""
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError as error:
            raise _refuse(source, f"not UTF-8 text ({error})") from None
    if json_depth(text) > limits.max_depth:
        raise _refuse(source, f"nested deeper than the {limits.max_depth} levels a {limits.kind} may have")
    try:
        return json.loads(text)
    except (ValueError, RecursionError) as error:  # JSONDecodeError, an integer of 5000 digits (recursion: never, by the scan)
        raise _refuse(source, f"damaged JSON: {error}") from None


def load_text_file(path: str | os.PathLike, limits: TextLimits) -> Any:
    """The parsed contents of a YAML (``.yaml``/``.yml``) or JSON file, every limit checked; FileRefused otherwise."""
    text = read_text(path, limits)
    if Path(path).suffix.lower() in (".yaml", ".yml"):
        return parse_yaml(text, path, limits)
    return parse_json(text, path, limits)


# -- safetensors --------------------------------------------------------------------------------------
SAFETENSORS_HEADER = TextLimits("safetensors header", 8 * MiB, max_depth=8)
# The whole vector file, header and tensors: one direction for every layer of a 405B model (16 384 floats
# × 128 layers) is 8 MiB; ActAdd's per-position rows for a 2 000-token prompt at 16 384 wide are 128 MiB.
SAFETENSORS_VECTOR = TextLimits("safetensors vector file", 256 * MiB)


def read_safetensors(path: str | os.PathLike) -> tuple[bytes, dict[str, Any]]:
    """A safetensors vector file's bytes (refused unread over SAFETENSORS_VECTOR's size) and its JSON
    header, the declared header length checked against the bytes and the limit; the tensors themselves
    are then read from these bytes by the safetensors library, which checks their extents."""
    data = read_bytes(path, SAFETENSORS_VECTOR.max_bytes, SAFETENSORS_VECTOR.kind)
    if len(data) < 8:
        raise _refuse(path, f"damaged tensor file: {len(data)} bytes, too short for safetensors")
    length = int.from_bytes(data[:8], "little")
    if length > SAFETENSORS_HEADER.max_bytes:
        raise _refuse(path, f"damaged tensor file: it declares a {length:,}-byte header, over the {_size(SAFETENSORS_HEADER.max_bytes)} "
                            "a safetensors header may hold")
    if length > len(data) - 8:
        raise _refuse(path, f"damaged tensor file: it declares a {length:,}-byte header but holds {len(data) - 8:,} bytes after its length")
    header = parse_json(data[8:8 + length], path, SAFETENSORS_HEADER)
    if not isinstance(header, dict):
        raise _refuse(path, "damaged tensor file: its header is not a JSON object")
    meta = header.get("__metadata__") or {}
    if not isinstance(meta, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in meta.items()):
        raise _refuse(path, "damaged tensor file: its __metadata__ is not a mapping of texts")
    return data, header


# -- GGUF ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class GGUFLimits:
    kind: str
    max_bytes: int | None  # the whole file (None: a model file, only its header is read)
    max_metadata: int  # header, key-value pairs and tensor descriptions together
    max_array_items: int
    architecture: str | None = None  # what general.architecture must say, checked as soon as it is read


# A control vector is n_embd float32 values per layer (16384 × 128 layers is 8 MiB) and a few scalars.
CONTROL_VECTOR = GGUFLimits("control vector", 64 * MiB, max_metadata=1 * MiB, max_array_items=65_536, architecture="controlvector")
# A model's metadata holds its tokenizer: vocabularies of 256k tokens and as many merges.
MODEL = GGUFLimits("GGUF model", None, max_metadata=256 * MiB, max_array_items=4_000_000)

_SCALARS = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q", 12: "<d"}
_STRING, _ARRAY = 8, 9
_ELEMENT_BYTES = {0: 4, 1: 2}  # F32, F16: the tensor types a control vector may hold
TENSOR_TYPE_NAMES = {0: "F32", 1: "F16"}
MAX_DIMS = 4  # GGML_MAX_DIMS


@dataclass(frozen=True)
class GGUFArray:
    """A metadata array, measured but not read (no reader of ours needs one's items)."""

    item_type: int
    count: int


@dataclass(frozen=True)
class GGUFTensor:
    name: str
    shape: tuple[int, ...]  # as written: the first dimension varies fastest
    type: int  # ggml type: 0 F32, 1 F16, others quantised
    start: int  # offset of its data in the file
    nbytes: int | None  # None for types whose size is not computed here

    @property
    def n_elements(self) -> int:
        n = 1
        for d in self.shape:
            n *= d
        return n


@dataclass(frozen=True)
class GGUF:
    path: Path
    version: int
    fields: dict[str, Any]  # key -> int, float, bool, str or GGUFArray
    tensors: list[GGUFTensor]

    def tensor_data(self, tensor: GGUFTensor) -> bytes:
        """The bytes of an F32/F16 tensor (their extent was checked against the file when it was read)."""
        if tensor.nbytes is None:
            raise _refuse(self.path, f"tensor {tensor.name!r} has a type that cannot be read here")
        with open(self.path, "rb") as handle:
            handle.seek(tensor.start)
            data = handle.read(tensor.nbytes)
        if len(data) != tensor.nbytes:
            raise _refuse(self.path, f"tensor {tensor.name!r} is cut short: the file changed while it was read")
        return data


class _Cursor:
    """Reads a GGUF header from a buffer, every declared length checked against the bytes present."""

    def __init__(self, buffer: Any, path: Path, limits: GGUFLimits):
        self.buffer, self.path, self.limits, self.pos = buffer, path, limits, 0
        self.end = min(len(buffer), limits.max_metadata)

    def need(self, n: int, what: str) -> int:
        if n > self.end - self.pos:
            if self.pos + n > len(self.buffer):
                raise _damaged(self.path, f"{what} needs {n:,} bytes but {len(self.buffer) - self.pos:,} remain")
            raise _refuse(self.path, f"metadata over the {_size(self.limits.max_metadata)} a {self.limits.kind} may hold (at {what})")
        start = self.pos
        self.pos += n
        return start

    def unpack(self, fmt: str, what: str) -> Any:
        return struct.unpack_from(fmt, self.buffer, self.need(struct.calcsize(fmt), what))[0]

    def string(self, what: str) -> str:
        n = self.unpack("<Q", f"the length of {what}")
        start = self.need(n, what)
        try:
            return bytes(self.buffer[start:start + n]).decode("utf-8")
        except UnicodeDecodeError:
            raise _damaged(self.path, f"{what} is not UTF-8 text") from None

    def value(self, kind: int, key: str) -> Any:
        if kind in _SCALARS:
            return self.unpack(_SCALARS[kind], f"the value of {key!r}")
        if kind == _STRING:
            return self.string(f"the value of {key!r}")
        if kind != _ARRAY:
            raise _damaged(self.path, f"metadata {key!r} has unknown type {kind}")
        item, count = self.unpack("<I", f"the type of {key!r}"), self.unpack("<Q", f"the length of {key!r}")
        if count > self.limits.max_array_items:
            raise _refuse(self.path, f"metadata {key!r} declares {count:,} items, over the {self.limits.max_array_items:,} "
                                     f"an array in a {self.limits.kind} may hold")
        if item in _SCALARS:
            self.need(count * struct.calcsize(_SCALARS[item]), f"the items of {key!r}")
        elif item == _STRING:
            if count * 8 > len(self.buffer) - self.pos:
                raise _damaged(self.path, f"metadata {key!r} declares {count:,} texts, more than the file's bytes can hold")
            for _ in range(count):
                self.string(f"an item of {key!r}")
        else:
            raise _damaged(self.path, f"metadata {key!r} is an array of type {item}, which is not read here")
        return GGUFArray(item, count)


def read_gguf(path: str | os.PathLike, limits: GGUFLimits) -> GGUF:
    """The metadata and tensor descriptions of a GGUF file (version 2 or 3), read without trusting any count."""
    path = Path(path)
    try:
        with open(path, "rb") as handle:
            size = os.fstat(handle.fileno()).st_size
            if size == 0:
                raise _refuse(path, "the file is empty")
            with mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as buffer:
                gguf = _parse_gguf(buffer, path, limits)
    except OSError as error:
        raise _refuse(path, f"cannot read it ({error.strerror or error})") from None
    if limits.max_bytes is not None and size > limits.max_bytes:  # after the header, which may say it is a model
        raise _refuse(path, f"{_size(size)}, over the {_size(limits.max_bytes)} a {limits.kind} may hold")
    return gguf


def _damaged(path: Path, detail: str) -> FileRefused:
    return _refuse(path, f"damaged or truncated GGUF file: {detail}")


def _parse_gguf(buffer: Any, path: Path, limits: GGUFLimits) -> GGUF:
    cursor = _Cursor(buffer, path, limits)
    magic = bytes(buffer[:4])
    if magic != b"GGUF":
        raise _refuse(path, f"not a GGUF file (it starts with {magic!r}, not b'GGUF')")
    cursor.pos = 4
    version = cursor.unpack("<I", "the version")
    if version not in (2, 3):
        raise _damaged(path, f"GGUF version {version} (big-endian or unknown); versions 2 and 3 are read")
    n_tensors, n_fields = cursor.unpack("<Q", "the tensor count"), cursor.unpack("<Q", "the metadata count")
    left = len(buffer) - cursor.pos
    if n_fields * 13 > left or n_tensors * 24 > left:  # the smallest key-value pair and tensor description
        raise _damaged(path, f"it declares {n_fields:,} metadata pairs and {n_tensors:,} tensors, more than its {len(buffer):,} bytes can hold")
    fields: dict[str, Any] = {}
    for _ in range(n_fields):
        key = cursor.string("a metadata key")
        if key in fields:
            raise _damaged(path, f"metadata key {key!r} appears twice")
        fields[key] = cursor.value(cursor.unpack("<I", f"the type of {key!r}"), key)
        if key == "general.architecture" and limits.architecture and fields[key] != limits.architecture:
            raise _refuse(path, f"not a {limits.kind}: the file has architecture {fields[key]!r}, not {limits.architecture!r} (a model file?)")
    tensors = []
    alignment = fields.get("general.alignment", 32)
    if not isinstance(alignment, int) or isinstance(alignment, bool) or alignment < 1 or alignment & (alignment - 1):
        raise _damaged(path, f"general.alignment {alignment!r} is not a power of two")
    described, names = [], set()
    for _ in range(n_tensors):
        name = cursor.string("a tensor name")
        n_dims = cursor.unpack("<I", f"the dimensions of {name!r}")
        if n_dims > MAX_DIMS:
            raise _damaged(path, f"tensor {name!r} has {n_dims} dimensions; GGUF allows {MAX_DIMS}")
        shape = tuple(cursor.unpack("<Q", f"the shape of {name!r}") for _ in range(n_dims))
        described.append((name, shape, cursor.unpack("<I", f"the type of {name!r}"), cursor.unpack("<Q", f"the offset of {name!r}")))
    data_start = -(-cursor.pos // alignment) * alignment
    for name, shape, kind, offset in described:
        if name in names:
            raise _damaged(path, f"tensor {name!r} appears twice")
        names.add(name)
        if offset % alignment:
            raise _damaged(path, f"tensor {name!r} starts at {offset}, not a multiple of the alignment {alignment}")
        n = 1
        for d in shape:
            n *= d
        nbytes = n * _ELEMENT_BYTES[kind] if kind in _ELEMENT_BYTES else None
        if data_start + offset + (nbytes or 0) > len(buffer):
            raise _damaged(path, f"tensor {name!r} reaches past the end of the file ({len(buffer):,} bytes)")
        tensors.append(GGUFTensor(name, shape, kind, data_start + offset, nbytes))
    return GGUF(path, version, fields, tensors)
