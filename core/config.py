"""One loader for every party's TOML config file, overridable by ``HEDUI_<SETTING>`` variables.

A party's settings are a frozen dataclass; :func:`load_settings` fills its scalar fields (str,
int, float, bool, Path, and tuples of str) from one table of the file, then from the
environment, checks their types and names a wrong one. The environment is read once, at the
edge, and passed in.
"""

from __future__ import annotations

import dataclasses
import tomllib
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

from hedui.core.errors import ConfigFileError

T = TypeVar("T")

ENV_PREFIX = "HEDUI_"


def read_toml(path: Path, hint: str) -> dict[str, Any]:
    """The parsed file; a missing or malformed one is a :class:`ConfigFileError` that says what
    to do (``hint``)."""
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigFileError(f"{path} does not exist; {hint}") from None
    except OSError as e:
        raise ConfigFileError(f"cannot read {path}: {e.strerror}") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigFileError(f"{path}: not valid TOML: {e}") from None


def section(doc: Mapping[str, Any], name: str, where: object) -> dict[str, Any]:
    """The table ``[name]`` of a parsed config (empty when absent); anything else there is a
    :class:`ConfigFileError` naming it."""
    found = doc.get(name, {})
    if not isinstance(found, dict):
        raise ConfigFileError(
            f"{where}: {name} must be a table ([{name}] followed by its settings), not {found!r}"
        )
    return found


def coerce(name: str, value: Any, kind: Any, source: str) -> Any:
    """``value`` as ``kind`` (a TOML value or an environment string), or a clear error."""
    if kind is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("1", "true", "yes", "0", "false", "no"):
            return value.lower() in ("1", "true", "yes")
    elif kind is float and isinstance(value, int | float | str) and not isinstance(value, bool):
        try:
            return float(value)
        except ValueError:
            pass
    elif kind is int and isinstance(value, int | str) and not isinstance(value, bool):
        try:
            return int(value)
        except ValueError:
            pass
    elif kind is str and isinstance(value, str):
        return value
    elif kind is Path and isinstance(value, str) and value:
        return Path(value)
    elif kind == tuple[str, ...]:
        if isinstance(value, str):
            return tuple(v.strip() for v in value.split(",") if v.strip())
        if isinstance(value, list) and all(isinstance(v, str) for v in value):
            return tuple(value)
    shown = getattr(kind, "__name__", str(kind))
    raise ConfigFileError(f"{source}: {name} must be a {shown}, got {value!r}")


def scalar_fields(cls: type[Any]) -> dict[str, Any]:
    """The fields of a settings dataclass a file or a variable may set, with their types."""
    hints = typing.get_type_hints(cls)
    out = {}
    for f in dataclasses.fields(cls):
        kind = hints[f.name]
        if isinstance(kind, types.UnionType):  # X | None: the X
            kind = next(a for a in typing.get_args(kind) if a is not type(None))
        if kind in (str, int, float, bool, Path) or kind == tuple[str, ...]:
            out[f.name] = kind
    return out


def load_settings(
    cls: type[T],
    table: Mapping[str, Any],
    env: Mapping[str, str],
    source: str,
    **fixed: Any,
) -> T:
    """``cls`` from one TOML table, then ``HEDUI_<FIELD>`` variables of ``env``; ``fixed``
    gives fields that are not scalars (or that the caller computed). A required field that
    neither sets is named."""
    values: dict[str, Any] = dict(fixed)
    kinds = scalar_fields(cls)
    unknown = sorted(set(table) - set(kinds) - set(fixed))
    if unknown:
        raise ConfigFileError(f"{source}: unknown setting(s) {', '.join(unknown)}")
    for name, kind in kinds.items():
        if name in table:
            values[name] = coerce(name, table[name], kind, source)
        env_name = ENV_PREFIX + name.upper()
        if env_name in env:
            values[name] = coerce(name, env[env_name], kind, env_name)
    required = [
        f.name
        for f in dataclasses.fields(cls)  # type: ignore[arg-type]
        if f.default is dataclasses.MISSING
        and f.default_factory is dataclasses.MISSING
        and f.name not in values
    ]
    if required:
        raise ConfigFileError(f"{source}: {', '.join(required)} required")
    return cls(**values)


def toml_value(v: object) -> str:
    """One value as TOML (for the config files `hedui up` writes)."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int | float):
        return str(v)
    if isinstance(v, tuple | list):
        return "[" + ", ".join(toml_value(x) for x in v) + "]"
    return '"' + str(v).replace("\\", "\\\\").replace('"', '\\"') + '"'


def to_toml(settings: object, title: str, table: str) -> str:
    """A settings dataclass as one TOML table (its scalar fields)."""
    lines = [f"# {title}", f"[{table}]"]
    for name in scalar_fields(type(settings)):
        value = getattr(settings, name)
        if value is not None:
            lines.append(f"{name} = {toml_value(value)}")
    return "\n".join(lines) + "\n"


def unusable_url(e: Exception) -> str:
    """Why a database URL was refused, without echoing it (it may hold a password)."""
    if isinstance(e, ImportError):
        return f"its driver {e.name or 'module'} is not installed"
    return "not a URL SQLAlchemy can use"
