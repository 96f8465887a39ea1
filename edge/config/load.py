"""Load the station YAML and report every problem with file, line and key path.

`config check` prints problems as `station.yaml:14 stations[1].printer: unknown printer
'bar2'` (CONTRACT section 1), so each one carries the line of the key it is about.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import ValidationError
from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.error import MarkedYAMLError

from edge.config.menu import Menu
from edge.config.models import Config
from edge.config.secrets import MIN_TOKEN_LENGTH, token_file_problem

Loc = Sequence[str | int]


@dataclass(frozen=True)
class Problem:
    file: str
    line: int
    path: str
    message: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}"
        return f"{where} {self.path}: {self.message}" if self.path else f"{where} {self.message}"


class ConfigError(Exception):
    def __init__(self, problems: list[Problem]) -> None:
        self.problems = problems
        super().__init__("\n".join(str(p) for p in problems))


def format_path(loc: Loc) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


def _line_of(root: Any, loc: Loc) -> int:
    """1-based line of the deepest node of `loc` that exists in the document."""
    node, line = root, 1
    for part in loc:
        if isinstance(node, CommentedMap) and part in node:
            line = node.lc.key(part)[0] + 1
            node = node[part]
        elif isinstance(node, CommentedSeq) and isinstance(part, int) and part < len(node):
            line = node.lc.item(part)[0] + 1
            node = node[part]
        else:
            break
    return line


def _plain(node: Any) -> Any:
    if isinstance(node, dict):
        return {str(k): _plain(v) for k, v in node.items()}
    if isinstance(node, list):
        return [_plain(v) for v in node]
    return node


_RELATIVE_PATHS: list[Loc] = [
    ("state_dir",),
    ("mqtt", "password_file"),
    ("upstream", "token_file"),
    ("menu",),
    ("http", "operator_token_file"),
    ("aggregator", "token_file"),
    ("aggregator", "webhook_token_file"),
    ("aggregator", "tls_cert_file"),
    ("aggregator", "tls_key_file"),
]


# Paths inside each entry of a list: (list key, key in the entry).
_RELATIVE_LIST_PATHS: list[tuple[str, str]] = [
    ("marketplaces", "token_file"),
]


def _resolve_paths(data: dict[str, Any], base: Path) -> None:
    for name, field in _RELATIVE_LIST_PATHS:
        for entry in _items(data, name):
            if isinstance(entry.get(field), str):
                path = Path(entry[field]).expanduser()
                entry[field] = str(path if path.is_absolute() else base / path)
    for loc in _RELATIVE_PATHS:
        parent: Any = data
        for part in loc[:-1]:
            parent = parent.get(part) if isinstance(parent, dict) else None
        key = loc[-1]
        if isinstance(parent, dict) and isinstance(parent.get(key), str):
            value = Path(parent[key]).expanduser()
            parent[key] = str(value if value.is_absolute() else base / value)


def _pydantic_message(err: Any) -> str:
    msg = str(err["msg"])
    if err["type"] == "extra_forbidden":
        return "unknown key"
    if err["type"] == "missing":
        return "required key is missing"
    return msg.removeprefix("Value error, ")


def _items(data: dict[str, Any], key: str) -> list[dict[str, Any]]:
    value = data.get(key)
    if not isinstance(value, list):
        return []
    return [v if isinstance(v, dict) else {} for v in value]


CodepageCheck = Callable[[str | None, str | None], str | None]


def _cross_checks(data: dict[str, Any], add: Any,
                  codepage_check: CodepageCheck | None = None) -> None:
    """Checks across keys; they read the raw data so they run even when a field is invalid."""
    printers, stations = _items(data, "printers"), _items(data, "stations")
    for kind, entries in (("printers", printers), ("stations", stations),
                          ("marketplaces", _items(data, "marketplaces"))):
        seen: set[str] = set()
        for i, entry in enumerate(entries):
            ident = entry.get("id")
            if isinstance(ident, str):
                if ident in seen:
                    add((kind, i, "id"), f"duplicate id '{ident}'")
                seen.add(ident)
    known = {p.get("id") for p in printers}
    for i, printer in enumerate(printers):
        profile, codepage = printer.get("profile"), printer.get("codepage")
        if codepage_check is not None and (isinstance(profile, str) or
                                           isinstance(codepage, str)):
            problem = codepage_check(profile if isinstance(profile, str) else None,
                                     codepage if isinstance(codepage, str) else None)
            if problem:
                key = "codepage" if isinstance(codepage, str) else "profile"
                add(("printers", i, key), problem)
    routing = data.get("routing") if isinstance(data.get("routing"), dict) else {}
    default = routing.get("default_station") if isinstance(routing, dict) else None
    for i, station in enumerate(stations):
        primary, backup = station.get("printer"), station.get("backup")
        if isinstance(primary, str) and primary not in known:
            add(("stations", i, "printer"), f"unknown printer '{primary}'")
        if isinstance(backup, str):
            if backup == primary:
                add(("stations", i, "backup"), "backup is the same printer as the primary")
            elif backup not in known:
                add(("stations", i, "backup"), f"unknown printer '{backup}'")
        listed = station.get("categories") or station.get("all")
        if not listed and default != station.get("id"):
            add(("stations", i), f"station '{station.get('id')}' has no categories and is "
                "neither the default nor an all-items station: nothing would print there")
    station_ids = {s.get("id") for s in stations}
    if default is None:
        if stations and not any(s.get("all") for s in stations):
            add(("routing", "default_station"),
                "required: items whose category no station lists would reach no station")
    elif default not in station_ids:
        add(("routing", "default_station"), f"unknown station '{default}'")
    if not stations:
        add(("stations",), "no stations: no ticket could ever print")
    _token_file_checks(data, add)
    tables = data.get("tables")
    if isinstance(tables, list):
        seen_tables: set[str] = set()
        for i, table_id in enumerate(tables):
            if isinstance(table_id, str) and table_id in seen_tables:
                add(("tables", i), f"duplicate table '{table_id}'")
            seen_tables.add(str(table_id))
    aggregator = data.get("aggregator")
    if isinstance(aggregator, dict):
        for key, what in (("tls_cert_file", "certificate file"), ("tls_key_file", "key file")):
            named = aggregator.get(key)
            if isinstance(named, str) and not Path(named).is_file():
                add(("aggregator", key), f"{what} {named} does not exist")
    http = data.get("http")
    if isinstance(http, dict):
        for i, station in enumerate(stations):
            if station.get("id") == "all":
                add(("stations", i, "id"), "'all' is the kitchen display's page of every "
                    "station (/kds/all): name this station otherwise")
    mqtt = data.get("mqtt")
    if isinstance(mqtt, dict) and isinstance(mqtt.get("password_file"), str):
        if not Path(mqtt["password_file"]).is_file():
            add(("mqtt", "password_file"),
                f"password file {mqtt['password_file']} does not exist")
        if mqtt.get("username") is None:
            add(("mqtt", "username"), "password_file is set but username is not")


def _token_file_checks(data: dict[str, Any], add: Any) -> None:
    """Every token file by the same rules (edge.config.secrets: a file only the service user
    may read, not empty), the operator's also of the daemon's own token shape."""
    named: list[tuple[tuple[str | int, ...], Any, int]] = []
    for section, key in (("upstream", "token_file"), ("aggregator", "token_file"),
                         ("aggregator", "webhook_token_file")):
        values = data.get(section)
        if isinstance(values, dict):
            named.append(((section, key), values.get(key), 1))
    http = data.get("http")
    if isinstance(http, dict):
        named.append((("http", "operator_token_file"), http.get("operator_token_file"),
                      MIN_TOKEN_LENGTH))
    for i, market in enumerate(_items(data, "marketplaces")):
        named.append((("marketplaces", i, "token_file"), market.get("token_file"), 1))
    for where, path, min_length in named:
        if isinstance(path, str):
            problem = token_file_problem(Path(path), min_length=min_length)
            if problem:
                add(where, problem)


def _read_yaml(text: str, name: str) -> CommentedMap:
    yaml = YAML(typ="rt")
    try:
        doc = yaml.load(io.StringIO(text))
    except MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else 1
        raise ConfigError([Problem(name, line, "", f"YAML syntax error: {exc.problem}")]) from None
    if not isinstance(doc, CommentedMap):
        raise ConfigError([Problem(name, 1, "", "the file must be a mapping of keys")])
    return doc


def _errors(exc: ValidationError, add: Any) -> None:
    for err in exc.errors():
        loc = [p for p in err["loc"] if not (isinstance(p, str) and "[" in p)]
        add(loc, _pydantic_message(err))


def load_menu(path: Path) -> Menu:
    """The menu file (`edge.config.menu`), checked like the station config: ConfigError
    listing every problem as `menu.yaml:7 products[2].price: ...`."""
    name = path.name
    try:
        text = path.read_text("utf-8")
    except OSError as exc:
        raise ConfigError([Problem(name, 0, "", f"cannot read: {exc.strerror}")]) from None
    doc = _read_yaml(text, name)
    problems: list[Problem] = []

    def add(loc: Loc, message: str) -> None:
        problems.append(Problem(name, _line_of(doc, loc), format_path(loc), message))

    menu: Menu | None = None
    try:
        menu = Menu.model_validate(_plain(doc))
    except ValidationError as exc:
        _errors(exc, add)
    seen: set[str] = set()
    for i, product in enumerate(_items(_plain(doc), "products")):
        ident = product.get("id")
        if isinstance(ident, str):
            if ident in seen:
                add(("products", i, "id"), f"duplicate product id '{ident}'")
            seen.add(ident)
    if problems or menu is None:
        raise ConfigError(sorted(dict.fromkeys(problems), key=lambda p: p.line))
    return menu


def _with_menu(data: dict[str, Any], doc: CommentedMap,
               name: str) -> tuple[Menu | None, list[Problem]]:
    """The menu the config names, or the problems it has (in the menu file's own lines)."""
    value = data.get("menu")
    if not isinstance(value, str):
        return None, []
    menu_path = Path(value)
    if not menu_path.is_file():
        return None, [Problem(name, _line_of(doc, ("menu",)), "menu",
                              f"menu file {menu_path} does not exist")]
    try:
        return load_menu(menu_path), []
    except ConfigError as exc:
        return None, exc.problems


def parse_config(text: str, path: Path, *,
                 codepage_check: CodepageCheck | None = None) -> Config:
    """Parse YAML text as if read from `path`; raise ConfigError listing every problem.
    `codepage_check(profile, codepage)` names what a printer cannot print (it knows the
    printers' capabilities: `edge.printing.codepages.check_codepage`, passed in by the
    daemon and the CLI, since configuration sits below printing)."""
    name = path.name
    doc = _read_yaml(text, name)
    data = _plain(doc)
    _resolve_paths(data, path.parent.resolve())
    problems: list[Problem] = []

    def add(loc: Loc, message: str) -> None:
        problems.append(Problem(name, _line_of(doc, loc), format_path(loc), message))

    cfg: Config | None = None
    try:
        cfg = Config.model_validate(data)
    except ValidationError as exc:
        _errors(exc, add)
    _cross_checks(data, add, codepage_check)
    menu, menu_problems = _with_menu(data, doc, name)
    if problems or menu_problems or cfg is None:
        unique = list(dict.fromkeys(problems))
        unique.sort(key=lambda p: p.line)
        raise ConfigError(unique + menu_problems)
    return cfg.with_menu(menu)


def load_config(path: Path, *, codepage_check: CodepageCheck | None = None) -> Config:
    try:
        text = path.read_text("utf-8")
    except OSError as exc:
        raise ConfigError([Problem(path.name, 0, "", f"cannot read: {exc.strerror}")]) from None
    return parse_config(text, path, codepage_check=codepage_check)
