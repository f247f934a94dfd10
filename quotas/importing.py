"""Export the quota hierarchy as a YAML or JSON document, and import one back.

The document (``manage.py export_quotas`` writes it, people edit it)::

    version: 1
    quotas:
      gpu_hours:                      # a resource type
        organizations:                # root quotas, by entity type
          acme:                       # entity_id
            limit_value: '10000'
            soft_limit: '8000'        # optional
            burst_limit: '12000'      # optional
            overcommit_ratio: '1'     # optional, 1 when left out
            teams:                    # an organization's children are teams
              acme-research:
                limit_value: '6000'
                users:                # a team's children are users
                  alice: {limit_value: '3000'}

Nesting carries the hierarchy, so a quota's parent and entity type are where it
stands. Amounts are written as strings and read exactly (YAML and JSON numbers are
read as decimals too, never as floats), so nothing is ever rounded. Exporting is
canonical (resource types, entity types and ids sorted), so export → import →
export gives back the same text.

Importing makes the database match the document, in two steps:

1. ``hierarchy_import_plan`` parses the text, builds the whole target state and
   checks every rule of DESIGN §3 on it in memory (plus what depends on current
   usage), collecting *every* problem with where it is in the file; when there are
   none it computes the operations that turn the database into the target.
2. ``hierarchy_import_apply`` runs the operations in one transaction through the
   quota services, so their checks and locks still apply, and rolls everything back
   on the first refusal. The order keeps every intermediate state valid (see
   ``_order_operations``), and the result is compared with the target before the
   commit.
"""

import json
import re
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, NamedTuple
from uuid import UUID

import yaml
from django.db import DatabaseError, transaction
from rest_framework.exceptions import ValidationError as FieldError

from horizon_quota.errors import ServiceError
from horizon_quota.fields import AmountField, normalize_amount
from quotas.locking import lock_quotas
from quotas.models import ApiKey, EntityType, Quota, ResourceType
from quotas.rules import PARENT_ENTITY_TYPE
from quotas.services import Actor, quota_create, quota_delete, quota_update

FORMAT_VERSION = 1
FORMATS = ("yaml", "json")
LIMIT_FIELDS = ("limit_value", "soft_limit", "burst_limit", "overcommit_ratio")
# The key that holds the quotas of each entity type, in document order.
GROUPS = {
    "organizations": EntityType.ORGANIZATION,
    "teams": EntityType.TEAM,
    "users": EntityType.USER,
}
GROUP_OF = {entity_type: group for group, entity_type in GROUPS.items()}
# The one group a quota of each entity type may hold (DESIGN §3: a team's parent is
# an organization, a user's parent is a team).
CHILD_GROUP = {
    EntityType.ORGANIZATION: "teams",
    EntityType.TEAM: "users",
    EntityType.USER: None,
}
ENTITY_ID_MAX_LENGTH = 255
YAML_HEADER = """\
# The horizon-quota hierarchy, written by `manage.py export_quotas`.
# `manage.py import_quotas FILE` makes the database match this file: quotas missing
# here are deleted. Amounts are strings so they stay exact; soft_limit and
# burst_limit may be left out, overcommit_ratio is 1 when left out. Under
# quotas: resource type → organizations → teams → users, keyed by entity id.
"""

_LIMIT_AMOUNT = AmountField()
# As the API takes it: 1.00–999.99, two decimal places (DESIGN §5).
_RATIO_AMOUNT = AmountField(
    integer_digits=3, places=2, minimum=Decimal("1"), maximum=Decimal("999.99")
)
_PLAIN_DECIMAL = re.compile(r"[+-]?([0-9]+(\.[0-9]*)?|\.[0-9]+)")


class QuotaKey(NamedTuple):
    """What identifies a quota in a document: one per entity and resource type."""

    resource_type: str
    entity_type: str
    entity_id: str

    def __str__(self) -> str:
        return f"{self.resource_type} {self.entity_type} {self.entity_id}"


def _key_of(quota: Quota) -> QuotaKey:
    return QuotaKey(quota.resource_type_id, quota.entity_type, quota.entity_id)


def _amount(value: Decimal | None) -> str:
    return "none" if value is None else f"{normalize_amount(value)}"


# --------------------------------------------------------------------------- export


def hierarchy_export() -> dict[str, Any]:
    """The whole hierarchy as a document (plain dicts, amounts as strings), read in
    one query."""
    # Sorted here rather than by the database, whose collation may order ids
    # differently on another server: the text must not depend on it.
    quotas = sorted(
        Quota.objects.all(), key=lambda q: (q.resource_type_id, q.entity_id)
    )
    children: dict[UUID | None, list[Quota]] = defaultdict(list)
    for quota in quotas:
        children[quota.parent_id].append(quota)

    def entry(quota: Quota) -> dict[str, Any]:
        values: dict[str, Any] = {"limit_value": _amount(quota.limit_value)}
        for name in ("soft_limit", "burst_limit"):
            if getattr(quota, name) is not None:
                values[name] = _amount(getattr(quota, name))
        values["overcommit_ratio"] = _amount(quota.overcommit_ratio)
        values.update(groups(children.get(quota.id, [])))
        return values

    def groups(members: list[Quota]) -> dict[str, Any]:
        grouped: dict[str, Any] = {}
        for group, entity_type in GROUPS.items():
            of_type = [quota for quota in members if quota.entity_type == entity_type]
            if of_type:
                grouped[group] = {quota.entity_id: entry(quota) for quota in of_type}
        return grouped

    by_resource: dict[str, list[Quota]] = defaultdict(list)
    for root in children.get(None, []):
        by_resource[root.resource_type_id].append(root)
    return {
        "version": FORMAT_VERSION,
        "quotas": {slug: groups(roots) for slug, roots in sorted(by_resource.items())},
    }


def hierarchy_size(*, document: dict[str, Any]) -> int:
    """How many quotas an exported document holds."""

    def count(holder: dict[str, Any]) -> int:
        return sum(
            1 + count(spec)
            for group in GROUPS
            for spec in (holder.get(group) or {}).values()
        )

    return sum(count(groups) for groups in document["quotas"].values())


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


@dataclass(frozen=True)
class Problem:
    """Something wrong with the file, and where: the keys leading to it and, for
    YAML, the line."""

    message: str
    path: tuple[str, ...] = ()
    line: int | None = None

    def __str__(self) -> str:
        where = [f"line {self.line}"] if self.line is not None else []
        if self.path:
            where.append(" › ".join(self.path))
        return f"{', '.join(where)}: {self.message}" if where else self.message


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
    return Decimal(text) if _PLAIN_DECIMAL.fullmatch(text) else text


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


# ---------------------------------------------------------------------- the target


@dataclass
class TargetQuota:
    """One quota as the document wants it."""

    key: QuotaKey
    parent: QuotaKey | None
    depth: int
    values: dict[str, Decimal | None]
    path: tuple[str, ...]
    line: int | None
    # The lines of its own keys (YAML), to point at the value at fault.
    key_lines: dict[str, int] = field(default_factory=dict)
    # False when a value could not be read; rules between quotas then skip it.
    readable: bool = True

    def problem(self, message: str, *, name: str | None = None) -> Problem:
        """A problem at this quota, or at one of its keys."""
        if name is None:
            return Problem(message, self.path, self.line)
        return Problem(message, (*self.path, name), self.key_lines.get(name, self.line))

    @property
    def effective_limit(self) -> Decimal:
        return self.values["limit_value"] * self.values["overcommit_ratio"]


class _Reader:
    """Walks a parsed document into TargetQuotas, collecting every problem."""

    def __init__(self, *, resource_types: Iterable[str]):
        self.resource_types = sorted(resource_types)
        self.targets: dict[QuotaKey, TargetQuota] = {}
        self.problems: list[Problem] = []

    def problem(self, message: str, path: tuple[str, ...], line: int | None) -> None:
        self.problems.append(Problem(message, path, line))

    def mapping(
        self, value: Any, *, path: tuple[str, ...], line: int | None, what: str
    ) -> _Mapping | None:
        """``value`` as a mapping (``None`` as an empty one), or a problem."""
        if value is None:
            return _Mapping()
        if not isinstance(value, dict):
            self.problem(f"{what} must be a mapping, not {_kind(value)}.", path, line)
            return None
        if isinstance(value, _Mapping):
            for key, first, again in value.repeated:
                self.problem(
                    f"{key!r} appears more than once here"
                    + (f" (first at line {first})." if first else "."),
                    (*path, key),
                    again,
                )
        return value

    def document(self, document: Any) -> None:
        if document is None:
            self.problem("The file is empty.", (), None)
            return
        root = self.mapping(document, path=(), line=None, what="The file's top level")
        if root is None:
            return
        for key in root:
            if key not in ("version", "quotas"):
                self.problem(
                    f"unknown key {key!r}; expected version and quotas.",
                    (key,),
                    root.key_lines.get(key),
                )
        version = root.get("version")
        if "version" not in root:
            self.problem(
                f"version is missing (this format is {FORMAT_VERSION}).", (), None
            )
        elif version != FORMAT_VERSION or isinstance(version, bool):
            self.problem(
                f"unsupported version {version!r}; this format is {FORMAT_VERSION}.",
                ("version",),
                root.key_lines.get("version"),
            )
        if "quotas" not in root:
            self.problem("quotas is missing.", (), None)
            return
        line = root.key_lines.get("quotas")
        by_resource = self.mapping(
            root["quotas"], path=("quotas",), line=line, what="quotas"
        )
        if by_resource is None:
            return
        seen: dict[str, str] = {}
        for written, tree in by_resource.items():
            path = ("quotas", written)
            line = by_resource.key_lines.get(written)
            slug = written.strip().lower()
            if slug not in self.resource_types:
                self.problem(
                    f"unknown resource type {written!r}; valid: "
                    f"{', '.join(self.resource_types)}.",
                    path,
                    line,
                )
            elif slug in seen:
                self.problem(
                    f"resource type {slug} appears twice (also as {seen[slug]!r}).",
                    path,
                    line,
                )
            seen.setdefault(slug, written)
            groups = self.mapping(tree, path=path, line=line, what="A resource type")
            if groups is not None:
                self.groups(groups, slug=slug, parent=None, path=path)

    def groups(
        self,
        holder: _Mapping,
        *,
        slug: str,
        parent: TargetQuota | None,
        path: tuple[str, ...],
        skip: Iterable[str] = (),
    ) -> None:
        """The entity groups in ``holder`` (a resource type, or a quota's children;
        ``skip`` are the quota's own fields)."""
        allowed = list(GROUPS) if parent is None else [CHILD_GROUP[parent.key[1]]]
        for group, entities in holder.items():
            if group in skip:
                continue
            line = holder.key_lines.get(group)
            if group not in GROUPS:
                expected = [*skip, *(name for name in allowed if name)]
                self.problem(
                    f"unknown key {group!r}; expected {_one_of(expected)}.",
                    (*path, group),
                    line,
                )
                continue
            if group not in allowed:
                self.problem(
                    _misplaced(GROUPS[group], under=parent.key.entity_type),
                    (*path, group),
                    line,
                )
                continue
            members = self.mapping(entities, path=(*path, group), line=line, what=group)
            if members is None:
                continue
            for entity_id, spec in members.items():
                self.quota(
                    spec,
                    key=QuotaKey(slug, GROUPS[group], entity_id),
                    parent=parent,
                    path=(*path, group, entity_id),
                    line=members.key_lines.get(entity_id),
                )

    def quota(
        self,
        spec: Any,
        *,
        key: QuotaKey,
        parent: TargetQuota | None,
        path: tuple[str, ...],
        line: int | None,
    ) -> None:
        entity_id = key.entity_id
        if not entity_id.strip():
            self.problem("an entity id must not be blank.", path, line)
        elif len(entity_id) > ENTITY_ID_MAX_LENGTH:
            self.problem(
                f"an entity id has at most {ENTITY_ID_MAX_LENGTH} characters "
                f"(this one has {len(entity_id)}).",
                path,
                line,
            )
        elif "\x00" in entity_id:
            self.problem("an entity id must not contain NUL characters.", path, line)
        if not isinstance(spec, dict):
            self.problem(
                f"a quota must be a mapping with at least limit_value, not "
                f"{_kind(spec)}.",
                path,
                line,
            )
            return
        spec = self.mapping(spec, path=path, line=line, what="A quota")
        lines = spec.key_lines
        values: dict[str, Any] = {}
        readable = True
        for name in LIMIT_FIELDS:
            raw = spec.get(name)
            if raw is None:
                if name == "limit_value":
                    self.problem("limit_value is missing.", path, line)
                    readable = False
                values[name] = Decimal("1") if name == "overcommit_ratio" else None
                continue
            amount = _RATIO_AMOUNT if name == "overcommit_ratio" else _LIMIT_AMOUNT
            try:
                values[name] = amount.to_internal_value(raw)
            except FieldError as exc:
                self.problem(
                    f"{name} {_shown(raw)} is not valid: {_first_error(exc)}",
                    (*path, name),
                    lines.get(name, line),
                )
                values[name] = None
                readable = readable and name in ("soft_limit", "burst_limit")
        target = TargetQuota(
            key=key,
            parent=parent.key if parent else None,
            depth=parent.depth + 1 if parent else 0,
            values=values,
            path=path,
            line=line,
            key_lines=lines,
            readable=readable,
        )
        limit, soft, burst = (values[name] for name in LIMIT_FIELDS[:3])
        if limit is not None and soft is not None and soft > limit:
            self.problems.append(
                target.problem(
                    f"soft_limit ({_amount(soft)}) must not exceed limit_value "
                    f"({_amount(limit)}).",
                    name="soft_limit",
                )
            )
        if limit is not None and burst is not None and burst < limit:
            self.problems.append(
                target.problem(
                    f"burst_limit ({_amount(burst)}) must be at least limit_value "
                    f"({_amount(limit)}).",
                    name="burst_limit",
                )
            )
        first = self.targets.get(key)
        if first is not None:
            self.problems.append(
                target.problem(
                    f"{key.entity_type} {key.entity_id} already has a {key[0]} quota "
                    f"at {_where(first)}; an entity has one quota per resource type."
                )
            )
        else:
            self.targets[key] = target
        self.groups(
            spec, slug=key.resource_type, parent=target, path=path, skip=LIMIT_FIELDS
        )

    def family_rules(self) -> None:
        """A child's limit_value ≤ its parent's; the children's limits sum to ≤ the
        parent's effective limit (DESIGN §3)."""
        children: dict[QuotaKey, list[TargetQuota]] = defaultdict(list)
        for target in self.targets.values():
            if target.parent is not None:
                children[target.parent].append(target)
        for parent_key, kids in children.items():
            parent = self.targets[parent_key]
            if not parent.readable:
                continue
            readable = [kid for kid in kids if kid.readable]
            for kid in readable:
                if kid.values["limit_value"] > parent.values["limit_value"]:
                    self.problems.append(
                        kid.problem(
                            f"limit_value ({_amount(kid.values['limit_value'])}) "
                            f"exceeds the parent's limit_value "
                            f"({_amount(parent.values['limit_value'])}, "
                            f"{_where(parent)}).",
                            name="limit_value",
                        )
                    )
            total = sum((kid.values["limit_value"] for kid in readable), Decimal(0))
            if total > parent.effective_limit:
                ratio = parent.values["overcommit_ratio"]
                self.problems.append(
                    parent.problem(
                        f"its children's limits sum to {_amount(total)}, above its "
                        f"effective limit ({_amount(parent.effective_limit)}"
                        + (
                            f" = {_amount(parent.values['limit_value'])} × "
                            f"{_amount(ratio)}"
                            if ratio != 1
                            else ""
                        )
                        + ")."
                    )
                )


def _misplaced(entity_type: str, *, under: str) -> str:
    """Why quotas of ``entity_type`` cannot stand under a quota of type ``under``."""
    parent_type = PARENT_ENTITY_TYPE.get(entity_type)
    where = (
        f"{GROUP_OF[entity_type]} go under {_article(parent_type)}'s "
        f"{GROUP_OF[entity_type]}"
        if parent_type
        else f"{GROUP_OF[entity_type]} have no parent (put them directly under the "
        "resource type)"
    )
    holds = (
        f"{_article(under)} holds {CHILD_GROUP[under]}"
        if CHILD_GROUP[under]
        else f"{_article(under)} has no children"
    )
    return (
        f"{_article(entity_type)} cannot have {_article(under)} "
        f"parent: {where}; {holds}."
    )


def _kind(value: Any) -> str:
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    return f"{_shown(value)}"


def _shown(value: Any) -> str:
    if isinstance(value, Decimal):
        return f"{value}"
    return repr(value)


def _first_error(exc: FieldError) -> str:
    detail = exc.detail
    while isinstance(detail, list | dict):
        detail = next(iter(detail.values() if isinstance(detail, dict) else detail))
    return str(detail)


def _article(entity_type: str) -> str:
    """'an organization', 'a team', 'a user'."""
    entity_type = str(entity_type)
    return f"{'an' if entity_type == EntityType.ORGANIZATION else 'a'} {entity_type}"


def _one_of(names: list[str]) -> str:
    if len(names) == 1:
        return names[0]
    return f"{', '.join(names[:-1])} or {names[-1]}"


def _where(target: TargetQuota) -> str:
    if target.line is not None:
        return f"line {target.line}"
    return " › ".join(target.path)


# ----------------------------------------------------------------------------- plan


@dataclass(frozen=True)
class Operation:
    """One service call of an import."""

    action: str  # "create", "update" or "delete"
    key: QuotaKey
    depth: int
    quota_id: UUID | None = None  # the quota to update or delete
    parent: QuotaKey | None = None  # the parent to create under
    old: dict[str, Decimal | None] = field(default_factory=dict)
    new: dict[str, Decimal | None] = field(default_factory=dict)
    note: str = ""

    def describe(self) -> str:
        if self.action == "create":
            under = f" under {_place(self.parent)}" if self.parent else ""
            values = ", ".join(
                f"{name} {_amount(self.new[name])}"
                for name in LIMIT_FIELDS
                if self.new[name] is not None
            )
            text = f"create {self.key}{under}: {values}"
        elif self.action == "update":
            changes = ", ".join(
                f"{name} {_amount(self.old[name])} → {_amount(self.new[name])}"
                for name in LIMIT_FIELDS
                if name in self.new
            )
            text = f"update {self.key}: {changes}"
        else:
            text = f"delete {self.key} (limit_value {_amount(self.old['limit_value'])})"
        return f"{text} {self.note}" if self.note else text


@dataclass
class ImportPlan:
    """The target state read from a file, what is wrong with it, and the
    operations that make the database match it, in the order to run them."""

    targets: dict[QuotaKey, TargetQuota] = field(default_factory=dict)
    problems: list[Problem] = field(default_factory=list)
    operations: list[Operation] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def counts(self) -> dict[str, int]:
        counts = {"create": 0, "update": 0, "delete": 0}
        for operation in self.operations:
            counts[operation.action] += 1
        return counts


def hierarchy_import_plan(*, text: str, fmt: str) -> ImportPlan:
    """Read ``text`` (``fmt`` is ``yaml`` or ``json``), check the whole target state
    and plan the operations. Writes nothing; reads the database in three queries.
    The plan's ``problems`` list everything wrong; operations are planned only
    when there is none."""
    document, problems = hierarchy_parse(text=text, fmt=fmt)
    if problems:
        return ImportPlan(problems=problems)
    reader = _Reader(resource_types=ResourceType.objects.values_list("slug", flat=True))
    reader.document(document)
    reader.family_rules()
    plan = ImportPlan(targets=reader.targets, problems=reader.problems)
    if all(target.readable for target in plan.targets.values()):
        # Even when the file breaks a rule, say what the database refuses too
        # (quotas in use), so that one run reports everything.
        _plan_operations(plan)
    if plan.problems:
        plan.operations, plan.warnings = [], []
    # File order, where the file has lines (YAML); stable otherwise.
    plan.problems.sort(key=lambda problem: (problem.line is None, problem.line or 0))
    return plan


def _plan_operations(plan: ImportPlan) -> None:
    quotas = list(Quota.objects.all())
    by_id = {quota.id: quota for quota in quotas}
    current = {_key_of(quota): quota for quota in quotas}

    def parent_key(quota: Quota) -> QuotaKey | None:
        return _key_of(by_id[quota.parent_id]) if quota.parent_id else None

    deletes: list[Operation] = []
    creates: list[Operation] = []
    updates: list[Operation] = []
    # Quotas the file moves to another parent (or whose parent moves) are deleted
    # and created again: parent_id never changes (DESIGN §3).
    recreated: set[QuotaKey] = set()
    for target in sorted(plan.targets.values(), key=lambda t: t.depth):
        new = {name: target.values[name] for name in LIMIT_FIELDS}
        existing = current.get(target.key)
        note = ""
        if existing is not None:
            moved_from = parent_key(existing)
            if moved_from == target.parent and target.parent not in recreated:
                old = {name: getattr(existing, name) for name in LIMIT_FIELDS}
                changed = {n: new[n] for n in LIMIT_FIELDS if new[n] != old[n]}
                if changed:
                    updates.append(
                        Operation(
                            action="update",
                            key=target.key,
                            depth=existing.depth,
                            quota_id=existing.id,
                            old=old,
                            new=changed,
                        )
                    )
                    _check_usage(plan, target=target, existing=existing, new=new)
                continue
            recreated.add(target.key)
            if moved_from != target.parent:
                note = f"(moving from {_place(moved_from)} to {_place(target.parent)})"
            else:
                note = "(re-created: its parent moves)"
        creates.append(
            Operation(
                action="create",
                key=target.key,
                depth=target.depth,
                parent=target.parent,
                new=new,
                note=note,
            )
        )
    for key, quota in current.items():
        if key in plan.targets and key not in recreated:
            continue
        old = {name: getattr(quota, name) for name in LIMIT_FIELDS}
        deletes.append(
            Operation(
                action="delete",
                key=key,
                depth=quota.depth,
                quota_id=quota.id,
                old=old,
                note="(to re-create it)" if key in recreated else "",
            )
        )
        if quota.used > 0:
            target = plan.targets.get(key)
            message = (
                f"{key} has {_amount(quota.used)} in use in its subtree, so it "
                + ("cannot move" if target else "cannot be deleted")
                + ": release its allocations first."
            )
            plan.problems.append(
                target.problem(message) if target else Problem(message)
            )
    if plan.problems:
        return
    plan.operations = _order_operations(
        deletes=deletes, updates=updates, creates=creates
    )
    scoped = ApiKey.objects.filter(
        scope_id__in=[op.quota_id for op in deletes]
    ).values_list("scope_id", flat=True)
    keys_by_quota: dict[UUID, int] = defaultdict(int)
    for scope_id in scoped:
        keys_by_quota[scope_id] += 1
    for operation in deletes:
        if keys_by_quota.get(operation.quota_id):
            count = keys_by_quota[operation.quota_id]
            plan.warnings.append(
                f"deleting {operation.key} also deletes the {count} API "
                f"key{'s' * (count != 1)} scoped to it."
            )


def _place(parent: QuotaKey | None) -> str:
    return f"{parent.entity_type} {parent.entity_id}" if parent else "the top"


def _check_usage(
    plan: ImportPlan,
    *,
    target: TargetQuota,
    existing: Quota,
    new: dict[str, Decimal | None],
) -> None:
    # The service refuses to lower an effective limit below current usage without
    # force; say so now, with the others, rather than fail halfway.
    effective = new["limit_value"] * new["overcommit_ratio"]
    if effective < existing.effective_limit and effective < existing.used:
        plan.problems.append(
            target.problem(
                f"the new effective limit ({_amount(effective)}) is below current "
                f"usage ({_amount(existing.used)}); release allocations first or "
                "lower it through the API with force.",
                name="limit_value",
            )
        )


def _order_operations(
    *,
    deletes: list[Operation],
    updates: list[Operation],
    creates: list[Operation],
) -> list[Operation]:
    """Order the operations so that every intermediate state keeps every rule, as
    the services check them one call at a time:

    1. Deletes, deepest first: a quota's children go before it, and removing a
       quota only loosens its parent's rules.
    2. Updates that lower a quota (a smaller limit_value, or the same limit_value
       and a smaller effective limit), deepest first: its children are already
       lowered, or are still at their old value, which was below its new one (the
       target says the new child ≤ the new parent), and its parent is still at its
       old, higher value.
    3. The other updates, shallowest first: the parent is already at its new
       value, the children are still at min(old, new), which fits both.
    4. Creates, shallowest first: every existing quota already has its final
       values, so a new quota is checked against the target state itself.

    Within a step, by resource type, entity type and entity id, so the same file
    always gives the same plan.
    """

    def stable(operation: Operation) -> tuple[str, int, str]:
        return (
            operation.key.resource_type,
            list(GROUPS.values()).index(operation.key.entity_type),
            operation.key.entity_id,
        )

    def lowers(operation: Operation) -> bool:
        old, new = operation.old, {**operation.old, **operation.new}
        if new["limit_value"] != old["limit_value"]:
            return new["limit_value"] < old["limit_value"]
        return new["overcommit_ratio"] < old["overcommit_ratio"]

    def deepest_first(operation: Operation) -> tuple:
        return (-operation.depth, *stable(operation))

    def shallowest_first(operation: Operation) -> tuple:
        return (operation.depth, *stable(operation))

    return [
        *sorted(deletes, key=deepest_first),
        *sorted(filter(lowers, updates), key=deepest_first),
        *sorted((u for u in updates if not lowers(u)), key=shallowest_first),
        *sorted(creates, key=shallowest_first),
    ]


# ---------------------------------------------------------------------------- apply


class ImportFailed(Exception):
    """An import refused while applying; nothing of it was written."""


def hierarchy_import_apply(
    *,
    plan: ImportPlan,
    actor: Actor | None = None,
    reason: str = "",
    progress: Callable[[int, int], None] | None = None,
) -> dict[str, int]:
    """Run the plan's operations in one transaction through the quota services, so
    every database-side check and lock applies and each change enters the audit
    trail with ``actor`` and ``reason``; any refusal rolls back all of them and
    raises ``ImportFailed``. Returns the counts of each action.

    The quotas it changes (and their parents) stay locked until the commit, so
    allocations against them wait for the import to finish.
    """
    if plan.problems:
        raise ImportFailed(f"The plan has {len(plan.problems)} problems.")
    total = len(plan.operations)
    try:
        # Durable: the import is all-or-nothing only as the outermost transaction.
        with transaction.atomic(durable=True):
            rows = list(
                Quota.objects.only(
                    "id", "parent_id", "resource_type_id", "entity_type", "entity_id"
                )
            )
            ids = {_key_of(quota): quota.id for quota in rows}
            parent_ids = {quota.id: quota.parent_id for quota in rows}
            # Take every lock the import needs in one call, in the global order
            # (quotas/locking.py), before the first change. Each service
            # below then locks only rows this transaction already holds or has
            # just created, so the import cannot deadlock with allocations or
            # other edits, as several lock_quotas calls in a row could.
            lock_quotas(_rows_to_lock(plan, ids=ids, parent_ids=parent_ids))
            for done, operation in enumerate(plan.operations, start=1):
                try:
                    _apply(operation, ids=ids, actor=actor, reason=reason)
                except ServiceError as exc:
                    raise ImportFailed(
                        f"{operation.describe()}: {exc.message}"
                    ) from None
                if progress is not None:
                    progress(done, total)
            _verify(plan)
    except DatabaseError as exc:
        if getattr(exc.__cause__, "sqlstate", None) == "55P03":  # lock_timeout
            raise ImportFailed(
                "A quota it changes stayed locked by another transaction too long; "
                "run it again."
            ) from None
        raise ImportFailed(
            f"The database refused it ({exc.__class__.__name__}: "
            f"{(str(exc).strip().splitlines() or [''])[0]})."
        ) from None
    return plan.counts()


def _rows_to_lock(
    plan: ImportPlan,
    *,
    ids: dict[QuotaKey, UUID],
    parent_ids: dict[UUID, UUID | None],
) -> set[UUID]:
    """The existing quotas the services will lock: each quota updated or deleted
    and its parent, and the existing parent of each quota created."""
    rows: set[UUID] = set()
    for operation in plan.operations:
        if operation.quota_id is not None:
            rows.add(operation.quota_id)
            rows.add(parent_ids.get(operation.quota_id))
        elif operation.parent is not None:
            rows.add(ids.get(operation.parent))
    rows.discard(None)
    return rows


def _apply(
    operation: Operation,
    *,
    ids: dict[QuotaKey, UUID],
    actor: Actor | None,
    reason: str,
) -> None:
    audit = {"actor": actor, "reason": reason}
    if operation.action == "delete":
        quota_delete(quota_id=operation.quota_id, **audit)
        del ids[operation.key]
    elif operation.action == "update":
        quota_update(quota_id=operation.quota_id, changes=dict(operation.new), **audit)
    else:
        quota = quota_create(
            **audit,
            entity_type=operation.key.entity_type,
            entity_id=operation.key.entity_id,
            resource_type=operation.key.resource_type,
            parent_id=ids[operation.parent] if operation.parent else None,
            **{name: operation.new[name] for name in LIMIT_FIELDS},
        )
        ids[operation.key] = quota.id


def _verify(plan: ImportPlan) -> None:
    """Compare the database with the target before committing: a quota changed by
    someone else between planning and applying would otherwise survive the import
    unnoticed."""
    quotas = list(Quota.objects.all())
    by_id = {quota.id: quota for quota in quotas}
    actual = {
        _key_of(quota): (
            _key_of(by_id[quota.parent_id]) if quota.parent_id else None,
            *(getattr(quota, name) for name in LIMIT_FIELDS),
        )
        for quota in quotas
    }
    wanted = {
        key: (target.parent, *(target.values[name] for name in LIMIT_FIELDS))
        for key, target in plan.targets.items()
    }
    if actual != wanted:
        differing = sorted(
            str(key)
            for key in set(actual) | set(wanted)
            if actual.get(key) != wanted.get(key)
        )
        raise ImportFailed(
            "The quotas changed while the import ran ("
            + ", ".join(differing[:5])
            + (", …" if len(differing) > 5 else "")
            + "); run it again."
        )
