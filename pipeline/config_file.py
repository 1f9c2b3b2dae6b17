"""Reading a config file: safe YAML (duplicate keys refused, ``1e-3`` read as a float), ``base:`` chains,
``key=value`` overrides, and validation errors that name the file, the key and the fix."""
from __future__ import annotations

import copy
import difflib
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml
from pydantic import BaseModel, ValidationError

from .yaml_words import construct_bool

if TYPE_CHECKING:
    from .config import Config

REPO_ROOT = Path(__file__).resolve().parent.parent
CONFIG_SUFFIX = ".yaml"
# a run name: one path component of runs/ (Config.name, teacher_from and cache.ensemble use it)
RUN_NAME = r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$"


def shipped_configs() -> Path:
    """The shipped configs: ``pipeline/configs`` in an installed wheel, else the clone's ``configs/`` (their source)."""
    installed = Path(__file__).resolve().parent / "configs"
    return installed if installed.is_dir() else REPO_ROOT / "configs"


def find_config(path: str | Path) -> Path:
    """``path`` when it is a file; else a shipped config by name: ``demo``, ``demo.yaml``, ``configs/demo.yaml``
    (``seeds/mnist-kd`` for a sub-folder). A path found nowhere is returned as given (its reader says so)."""
    p = Path(path)
    if p.is_file():
        return p
    rest = Path(*p.parts[1:]) if len(p.parts) > 1 and p.parts[0] == "configs" else p
    if p.is_absolute() or not rest.parts:
        return p
    for cand in (shipped_configs() / rest, shipped_configs() / rest.with_name(rest.name + CONFIG_SUFFIX)):
        if cand.is_file():
            return cand
    return p


class ConfigError(ValueError):
    """A configuration file or override is invalid; the message says which key and how to fix it."""


# a config has a few hundred values; aliases (``*name``) that would add more than this many nodes are refused
# (a 457-byte file of nested aliases otherwise expands to hundreds of millions of items)
ALIAS_NODE_BUDGET = 10_000
# error messages quote at most this many characters of a value the user gave
QUOTE_CHARS = 200


def quote(value: Any, limit: int = QUOTE_CHARS) -> str:
    """``repr(value)`` cut to ``limit`` characters (``...`` and the full length appended when cut)."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"


def _alias_expansion(root: yaml.Node) -> int:
    """How many nodes the aliases (``*name``) under ``root`` add once each is expanded in place (a node
    written once counts nothing; each further use of it counts its whole expanded size); an alias that
    contains itself is refused."""
    sizes: dict[int, int] = {}
    open_ids: set[int] = set()
    added = 0

    def size(node: yaml.Node) -> int:
        nonlocal added
        key = id(node)
        if key in sizes:
            added += sizes[key]
            return sizes[key]
        if key in open_ids:
            raise yaml.composer.ComposerError(None, None, "an alias (*name) refers to the node that contains it",
                                              node.start_mark)
        open_ids.add(key)
        if isinstance(node, yaml.SequenceNode):
            children: list[yaml.Node] = list(node.value)
        elif isinstance(node, yaml.MappingNode):
            children = [n for pair in node.value for n in pair]
        else:
            children = []
        total = 1 + sum(size(child) for child in children)
        open_ids.discard(key)
        sizes[key] = total
        return total

    size(root)
    return added


class _Loader(yaml.SafeLoader):
    """SafeLoader that also reads ``1e-3`` as a float (PyYAML's YAML 1.1 rules read it as a string) and
    refuses aliases that expand past ``ALIAS_NODE_BUDGET`` nodes."""

    def get_single_node(self) -> yaml.Node | None:
        node = super().get_single_node()
        if node is not None and _alias_expansion(node) > ALIAS_NODE_BUDGET:
            raise yaml.composer.ComposerError(
                None, None, f"aliases (*name) expand to more than {ALIAS_NODE_BUDGET} values; a config needs "
                "a few hundred: write the values out or use fewer nested aliases")
        return node


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(
        r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
        |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
        |\.[0-9_]+(?:[eE][-+][0-9]+)?
        |[-+]?\.(?:inf|Inf|INF)
        |\.(?:nan|NaN|NAN))$""",
        re.X,
    ),
    list("-+0123456789."),
)


def _mapping_without_duplicates(loader: yaml.SafeLoader, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
    seen: dict[Any, int] = {}
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=True)
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r} (first on line {seen[key] + 1}, again on line "
                f"{key_node.start_mark.line + 1}): YAML keeps only one; merge the two blocks", key_node.start_mark)
        seen[key] = key_node.start_mark.line
    return loader.construct_mapping(node, deep=deep)


_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _mapping_without_duplicates)


class _WordLoader(_Loader):
    """_Loader that keeps YAML 1.1's boolean words (yes/no/on/off) as written (pipeline.yaml_words)."""


_WordLoader.add_constructor("tag:yaml.org,2002:bool", construct_bool)


def yaml_load(text: str, words: bool = False) -> Any:
    """Safe YAML (no tags that build objects), ``1e-3`` read as a float, duplicate keys refused; ``words``: YAML
    1.1's yes/no/on/off become ``YamlWord``s, settled into a string or a boolean by the schema (config files)."""
    return yaml.load(text, Loader=_WordLoader if words else _Loader)


def _set_dotted(d: dict[str, Any], dotted: str, value: Any, src: str) -> None:
    """Set ``a.b.c`` in nested dicts (created as needed); a number indexes an existing list
    (``student.losses.1.kwargs.temperature``)."""
    keys = dotted.split(".")
    cur: Any = d
    for k in keys[:-1]:
        if isinstance(cur, list):
            cur = _list_item(cur, k, dotted, src)
            continue
        nxt = cur.setdefault(k, {})
        if not isinstance(nxt, (dict, list)):
            raise ConfigError(f"{src}: override {dotted!r}: {k!r} is not a section")
        cur = nxt
    if isinstance(cur, list):
        i = int(keys[-1]) if keys[-1].isdigit() else None
        _list_item(cur, keys[-1], dotted, src)
        cur[i] = value  # type: ignore[index]
    else:
        cur[keys[-1]] = value


def _list_item(items: list[Any], k: str, dotted: str, src: str) -> Any:
    if not k.isdigit() or int(k) >= len(items):
        raise ConfigError(f"{src}: override {dotted!r}: {k!r} is not an index of a list of {len(items)}")
    return items[int(k)]


def parse_overrides(items: list[str]) -> list[tuple[str, Any]]:
    """``["student.epochs=3", "data.root=/x"]`` -> ``[("student.epochs", 3), ...]`` (values parsed as YAML)."""
    out = []
    for item in items:
        if "=" not in item:
            raise ConfigError(f"override {quote(item)} is not key=value (e.g. student.epochs=3)")
        key, raw = item.split("=", 1)
        try:
            value = yaml_load(raw, words=True) if raw != "" else ""
        except yaml.YAMLError:
            value = raw
        out.append((key.strip(), value))
    return out


def _field_names(model: type[BaseModel], loc: tuple[Any, ...]) -> list[str]:
    cur: Any = model
    for part in loc:
        if isinstance(part, int):
            continue
        fld = getattr(cur, "model_fields", {}).get(part)
        if fld is None:
            break
        ann = fld.annotation
        args = getattr(ann, "__args__", ()) or ()
        cand = [a for a in (ann, *args) if isinstance(a, type) and issubclass(a, BaseModel)]
        if not cand:
            return []
        cur = cand[0]
    return list(getattr(cur, "model_fields", {}))


def _format_errors(err: ValidationError, src: str) -> str:
    from .config import Config

    lines = [f"invalid config {src}:"]
    for e in err.errors():
        loc = tuple(e["loc"])
        key = ".".join(str(p) for p in loc) or "(top level)"
        msg = e["msg"]
        if e["type"] == "extra_forbidden":
            known = _field_names(Config, loc[:-1])
            close = difflib.get_close_matches(str(loc[-1]), known, n=1)
            hint = f"; did you mean {'.'.join([*map(str, loc[:-1]), close[0]])!r}?" if close else ""
            msg = f"unknown key{hint} (valid keys here: {', '.join(known)})"
        elif e["type"] == "missing":
            msg = "required key is missing"
        elif e["type"] == "value_error":  # our validators: the message names the value already
            msg = msg.removeprefix("Value error, ")
        else:
            msg = f"{msg} (got {quote(e.get('input'))})"
        lines.append(f"  {key[:QUOTE_CHARS]}: {msg[:2 * QUOTE_CHARS]}")
    return "\n".join(lines)


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for k, v in over.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else copy.deepcopy(v)
    return out


def _read_yaml(path: Path, seen: tuple[Path, ...] = ()) -> dict[str, Any]:
    """Read a config file; ``base: other.yaml`` (relative to this file) is read first and deep-merged under it."""
    src = str(path)
    if path.is_dir():
        raise ConfigError(f"config {src} is a folder, not a file: give a YAML file, e.g. --config {src}/<name>.yaml")
    if not path.is_file():
        shipped = ", ".join(sorted(p.stem for p in shipped_configs().glob("*.yaml")))
        raise ConfigError(f"config file {src} not found in {Path.cwd()}, nor a shipped config of that name "
                          f"(shipped: {shipped})")
    if path.resolve() in seen:
        raise ConfigError(f"config {src}: base: chain loops back to itself")
    try:
        raw = yaml_load(path.read_text(), words=True) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"config {src} is not valid YAML: {exc}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"config {src} must be a YAML mapping of sections (data:, teacher:, ...)")
    base = raw.pop("base", None)
    if base is None:
        return raw
    if not isinstance(base, str):
        raise ConfigError(f"config {src}: base must be a file name, e.g. base: food11-hw13.yaml")
    return _merge(_read_yaml(path.parent / base, (*seen, path.resolve())), raw)


def load_config(path: str | Path, overrides: list[str] | None = None) -> "Config":
    """Read YAML ``path`` (and its ``base:``), apply ``key=value`` overrides, validate, and name the run
    after the file stem."""
    from .config import Config

    path = find_config(path)
    src = str(path)
    raw = _read_yaml(path)
    pairs = parse_overrides(overrides or [])
    # a key through a list index (student.losses.1.kwargs.temperature) applies to the resolved config,
    # where lists left at their defaults exist
    indexed = [(k, v) for k, v in pairs if any(p.isdigit() for p in k.split("."))]
    for key, value in pairs:
        if (key, value) not in indexed:
            _set_dotted(raw, key, value, src)
    if not raw.get("name"):
        raw["name"] = path.stem
        if not re.match(RUN_NAME, path.stem):  # the pattern error alone would not say where the name came from
            fix = re.sub(r"[^A-Za-z0-9_.-]+", "-", path.stem).strip("-.") or "my-run"
            raise ConfigError(f"config {src}: the run name (runs/<name>/) comes from the file name, and {path.stem!r} "
                              "is not one (letters, digits, _ . - only); rename the file (e.g. "
                              f"{fix}{path.suffix}) or set name: {fix} in it")
    try:
        cfg = Config.model_validate(raw)
        if indexed:
            resolved = cfg.to_dict()
            for key, value in indexed:
                _set_dotted(resolved, key, value, src)
            cfg = Config.model_validate(resolved)
    except ValidationError as exc:
        raise ConfigError(_format_errors(exc, src)) from None
    return cfg


def config_from_dict(raw: dict[str, Any], src: str = "<checkpoint>") -> "Config":
    """Validate a config dict (one a checkpoint carries) into a ``Config``; errors name ``src``."""
    from .config import Config

    try:
        return Config.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(_format_errors(exc, src)) from None
