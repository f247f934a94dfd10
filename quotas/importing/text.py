"""The document as YAML or JSON text, and text read back with its lines.

Amounts are written as strings and read exactly (YAML and JSON numbers are read as
decimals too, never as floats), so nothing is ever rounded. Keys are read as the
text written (``123:`` and ``yes:`` are entity ids, not numbers or booleans), and
every mapping remembers the line of each key and the keys it held more than once,
so the reader can say where each problem is.
"""

import json
import re
from decimal import Decimal
from typing import Any

import yaml

from horizon_quota.amounts import ASCII_DECIMAL
from quotas.importing.document import FORMATS, Problem

YAML_HEADER = """\
# The horizon-quota hierarchy, written by `manage.py export_quotas`.
# `manage.py import_quotas FILE` makes the database match this file: quotas missing
# here are deleted. Amounts are strings so they stay exact; soft_limit and
# burst_limit may be left out, overcommit_ratio is 1 when left out. Under
# quotas: resource type → organizations → teams → users, keyed by entity id.
"""

# --------------------------------------------------------------------------- render

# A key or value written without quotes: a letter or "_" first, then only characters
# that mean nothing in YAML; anything else is quoted. The resolver check below
# catches the words YAML reads as booleans or null (yes, off, null, ...).
_PLAIN_SCALAR = re.compile(r"[A-Za-z_][A-Za-z0-9_.@-]*")
# YAML 1.1 booleans that PyYAML does not resolve but other parsers may.
_ONE_LETTER_BOOLEANS = frozenset("yYnN")
_RESOLVER = yaml.resolver.Resolver()
_STR_TAG = "tag:yaml.org,2002:str"
# Longer keys need YAML's "? key" form (parsers stop looking for the colon of an
# implicit key after 1024 characters); the generic emitter handles those.
_MAX_SIMPLE_KEY = 1000


class _NeedsGenericEmitter(Exception):
    pass


def _single_quotable(char: str) -> bool:
    """Printable in YAML and not a line break, so it can stand in '...' as is."""
    return (
        " " <= char <= "~"
        or "\xa0" <= char <= "\ud7ff"
        or ("\ue000" <= char <= "\ufffd" and char != "\ufeff")
        or char >= "\U00010000"
    ) and char not in "\u2028\u2029"


_ESCAPES = {
    "\\": "\\\\",
    '"': '\\"',
    "\n": "\\n",
    "\t": "\\t",
    "\r": "\\r",
    "\0": "\\0",
}


def _escaped(char: str) -> str:
    if char in _ESCAPES:
        return _ESCAPES[char]
    if _single_quotable(char):
        return char
    code = ord(char)
    if code < 0x100:
        return f"\\x{code:02X}"
    return f"\\u{code:04X}" if code < 0x10000 else f"\\U{code:08X}"


def _yaml_scalar(text: str) -> str:
    """``text`` as a YAML scalar that reads back as exactly this string."""
    if (
        _PLAIN_SCALAR.fullmatch(text)
        and text not in _ONE_LETTER_BOOLEANS
        and _RESOLVER.resolve(yaml.ScalarNode, text, (True, False)) == _STR_TAG
    ):
        return text
    if all(_single_quotable(char) for char in text):
        return "'" + text.replace("'", "''") + "'"
    return '"' + "".join(_escaped(char) for char in text) + '"'


def _yaml_block(mapping: dict[str, Any], *, depth: int, lines: list[str]) -> None:
    pad = "  " * depth
    for key, value in mapping.items():
        if not isinstance(key, str):
            raise _NeedsGenericEmitter
        written = _yaml_scalar(key)
        if len(written) > _MAX_SIMPLE_KEY:
            raise _NeedsGenericEmitter
        if isinstance(value, dict) and value:
            lines.append(f"{pad}{written}:")
            _yaml_block(value, depth=depth + 1, lines=lines)
        elif isinstance(value, dict):
            lines.append(f"{pad}{written}: {{}}")
        elif isinstance(value, str):
            lines.append(f"{pad}{written}: {_yaml_scalar(value)}")
        elif isinstance(value, int) and not isinstance(value, bool):
            lines.append(f"{pad}{written}: {value}")
        else:
            raise _NeedsGenericEmitter


class _Dumper(yaml.SafeDumper):
    def check_simple_key(self):
        # Entity ids run to 255 characters; PyYAML writes any key of 128 or more as
        # a "? key" complex key, which is valid but odd to edit. YAML allows plain
        # one-line keys up to 1024 characters.
        if isinstance(self.event, yaml.ScalarEvent):
            if self.analysis is None:
                self.analysis = self.analyze_scalar(self.event.value)
            return (
                not self.analysis.empty
                and not self.analysis.multiline
                and len(self.analysis.scalar) < _MAX_SIMPLE_KEY
            )
        return super().check_simple_key()


def _yaml_text(document: dict[str, Any]) -> str:
    """Block-style YAML, written directly: PyYAML's emitter takes half a minute
    for 100,000 quotas, this well under a second. Documents it does not cover (keys
    too long for a simple key, other value types) go through PyYAML."""
    lines: list[str] = []
    try:
        _yaml_block(document, depth=0, lines=lines)
    except _NeedsGenericEmitter:
        return yaml.dump(
            document,
            Dumper=_Dumper,
            sort_keys=False,
            allow_unicode=True,
            default_flow_style=False,
            width=1_000_000,
        )
    return "\n".join(lines) + "\n"


def hierarchy_render(*, document: dict[str, Any], fmt: str) -> str:
    """The document as text in ``fmt`` (``yaml`` or ``json``), ending in a newline."""
    if fmt == "json":
        return json.dumps(document, indent=2, ensure_ascii=False) + "\n"
    if fmt == "yaml":
        return YAML_HEADER + _yaml_text(document)
    raise ValueError(f"Unknown format {fmt!r}; valid: {', '.join(FORMATS)}.")


# ---------------------------------------------------------------------------- parse


class _Mapping(dict):
    """A mapping read from the file, remembering the line of each key (YAML only)
    and the keys it held more than once (both loaders keep the last value)."""

    def __init__(self):
        super().__init__()
        self.line: int | None = None
        self.key_lines: dict[str, int] = {}
        self.repeated: list[tuple[str, int | None, int | None]] = []

    def put(self, key: str, value: Any, *, line: int | None = None) -> None:
        if key in self:
            self.repeated.append((key, self.key_lines.get(key), line))
        self[key] = value
        if line is not None:
            self.key_lines[key] = line


class _Loader(getattr(yaml, "CSafeLoader", yaml.SafeLoader)):
    """A safe loader (libyaml's when PyYAML has it: four times faster) that reads
    every key as the text written (``123:`` and ``yes:`` are entity ids, not
    numbers or booleans), keeps lines, and reads floats as exact decimals."""


def _construct_mapping(loader: _Loader, node: yaml.MappingNode) -> _Mapping:
    loader.flatten_mapping(node)
    mapping = _Mapping()
    mapping.line = node.start_mark.line + 1
    for key_node, value_node in node.value:
        if not isinstance(key_node, yaml.ScalarNode):
            raise yaml.constructor.ConstructorError(
                None, None, "a key must be a single value", key_node.start_mark
            )
        value = loader.construct_object(value_node, deep=True)
        mapping.put(key_node.value, value, line=key_node.start_mark.line + 1)
    return mapping


def _construct_decimal(loader: _Loader, node: yaml.ScalarNode) -> Decimal | str:
    text = loader.construct_scalar(node).replace("_", "")
    # Exponents, infinities and NaN stay text, which the amount check refuses.
    return Decimal(text) if ASCII_DECIMAL.fullmatch(text) else text


_Loader.add_constructor("tag:yaml.org,2002:map", _construct_mapping)
_Loader.add_constructor("tag:yaml.org,2002:float", _construct_decimal)


def _json_mapping(pairs: list[tuple[str, Any]]) -> _Mapping:
    mapping = _Mapping()
    for key, value in pairs:
        mapping.put(key, value)
    return mapping


def detect_format(*, name: str, text: str) -> str:
    """``json`` for a ``.json`` file or one that starts with ``{``, else ``yaml``."""
    if name.lower().endswith(".json") or text.lstrip().startswith("{"):
        return "json"
    return "yaml"


def hierarchy_parse(*, text: str, fmt: str) -> tuple[Any, list[Problem]]:
    """The document in ``text``, or a problem saying where the syntax breaks."""
    if fmt == "json":
        try:
            return (
                json.loads(
                    text,
                    parse_float=Decimal,
                    parse_constant=str,  # NaN, Infinity: refused as amounts
                    object_pairs_hook=_json_mapping,
                ),
                [],
            )
        except json.JSONDecodeError as exc:
            return None, [
                Problem(
                    f"not valid JSON: {exc.msg} (column {exc.colno})", line=exc.lineno
                )
            ]
    try:
        # _Loader is a SafeLoader: no arbitrary objects.
        return yaml.load(text, Loader=_Loader), []
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        reason = ": ".join(part for part in (exc.context, exc.problem) if part)
        column = f" (column {mark.column + 1})" if mark else ""
        if mark and _character_at(text, line=mark.line, column=mark.column) == "\t":
            column += "; it is a tab: YAML indents with spaces"
        return None, [
            Problem(
                f"not valid YAML: {reason or exc}{column}",
                line=mark.line + 1 if mark else None,
            )
        ]
    except yaml.YAMLError as exc:
        return None, [Problem(f"not valid YAML: {exc}")]


def _character_at(text: str, *, line: int, column: int) -> str:
    lines = text.splitlines()
    if line < len(lines) and column < len(lines[line]):
        return lines[line][column]
    return ""
