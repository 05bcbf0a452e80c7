"""Reading run configs: YAML files (``base:`` first), ``--set key=value`` overrides, the method's own settings block,
and validation — every problem one line naming the key, file or line.

Relative data paths inside a YAML file are resolved against the YAML file's directory; paths given with ``--set``
are taken relative to the current directory. A method's settings live in its own block (``ta_sft:``, ``stl:``,
``kto:``, ``npo:``, ``simnpo:``; :data:`tasft.methods.METHODS`); a block of another method than the run's, or
TA-SFT's settings at the top level (their place before the blocks), is an error that names the right key.
"""

from __future__ import annotations

from pathlib import Path

import yaml

from .config import TrainConfig, from_dict, to_dict
from .config_checks import check_core
from .errors import TasftError
from .methods import METHODS, get_method

#: TA-SFT's settings as they were written before the method blocks, and where they live now
MOVED_KEYS = {k: f"ta_sft.{k}" for k in ("penalty", "lambda", "bound_constant", "target", "soft_top_k",
                                          "embedding_source", "penalty_first_tokens")}


class _UniqueKeyLoader(yaml.SafeLoader):
    """PyYAML's safe loader, except that a key written twice in one mapping is an error (YAML itself would keep
    the last one silently: ``learning_rate`` given twice trains with whichever came second)."""


def _unique_mapping(loader: yaml.SafeLoader, node: yaml.MappingNode, deep: bool = False) -> dict:
    seen: set = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=True)
        if key == "<<":
            continue
        try:
            duplicate = key in seen
        except TypeError:  # an unhashable key: the safe loader names it itself
            break
        if duplicate:
            raise yaml.constructor.ConstructorError(
                None, None, f"key '{key}' is given twice (YAML would keep only the last)", key_node.start_mark)
        seen.add(key)
    return loader.construct_mapping(node, deep=deep)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _unique_mapping)


def read_yaml(path: Path) -> dict:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise TasftError(f"{path}: config file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise TasftError(f"{path}: cannot read config file ({exc.__class__.__name__})") from None
    try:
        data = yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f":{mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or "invalid YAML"
        raise TasftError(f"{path}{line}: malformed YAML ({problem})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise TasftError(f"{path}: a config file must be a YAML mapping of keys to values")
    return data


def _resolve_paths(data: dict, base: Path) -> dict:
    """Make relative data paths in a YAML mapping relative to the YAML file's directory."""

    def fix(p: str) -> str:
        if ":" in p.split("/")[0] or Path(p).is_absolute():
            return p
        return str((base / p).resolve())

    path_keys = [("data_dir", None), ("contrastive", "safety_data")]
    path_keys += [(m.Settings.BLOCK, f) for m in METHODS.values() if m.Settings for f in m.Settings.PATH_FIELDS]
    for key, sub in path_keys:
        node = data.get(key)
        if sub is None and isinstance(node, str):
            data[key] = fix(node)
        elif sub is not None and isinstance(node, dict) and isinstance(node.get(sub), str):
            node[sub] = fix(node[sub])
    for key in ("train_data", "harmful_data", "eval_data"):
        src = data.get(key)
        if isinstance(src, str):
            data[key] = fix(src)
        elif isinstance(src, dict):
            if isinstance(src.get("path"), str):
                src["path"] = fix(src["path"])
            if isinstance(src.get("audit"), str):
                src["audit"] = fix(src["audit"])
            if isinstance(src.get("exclude"), list):
                src["exclude"] = [fix(p) if isinstance(p, str) else p for p in src["exclude"]]
    return data


def apply_overrides(data: dict, overrides: list[str]) -> dict:
    """Apply ``key=value`` overrides (dotted keys for nested settings; values parsed as YAML scalars)."""
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise TasftError(f"--set {item!r}: expected key=value")
        try:
            value = yaml.safe_load(raw) if raw != "" else ""
        except yaml.YAMLError:
            value = raw
        node = data
        parts = key.split(".")
        for part in parts[:-1]:
            child = node.get(part)
            if isinstance(child, str):
                child = {"path": child}
            if child is None and node is data and isinstance(_DEFAULTS.get(part), dict):
                child = dict(_DEFAULTS[part])
            if child is None:
                child = {}
            if not isinstance(child, dict):
                raise TasftError(f"--set {key}: '{part}' is not a nested setting")
            node[part] = child
            node = child
        node[parts[-1]] = value
    return data


_DEFAULTS = to_dict(TrainConfig())


def build_config(data: dict) -> TrainConfig:
    """A :class:`TrainConfig` from a merged YAML mapping: the top-level keys, then the run's method block (its
    settings dataclass, defaults for what is not given); then :func:`validate`."""
    data = dict(data)
    for key, new in MOVED_KEYS.items():
        if key in data:
            raise TasftError(f"{key}: TA-SFT's settings moved into their block: write {new} (ta_sft: {{{key}: ...}})")
    blocks = {m.Settings.BLOCK: m for m in METHODS.values() if m.Settings is not None}
    given = {key: data.pop(key) for key in list(data) if key in blocks}
    given = {key: value for key, value in given.items() if value is not None}  # ``block: null`` removes a block
    cfg = from_dict(TrainConfig, data)
    method = get_method(cfg.method)
    for key, owner in blocks.items():
        if key in given and owner is not method:
            raise TasftError(f"{key}: settings of method {owner.name}, but this run's method is {cfg.method} "
                             f"(remove the {key} block, e.g. --set {key}=null, or set method: {owner.name})")
    if method.Settings is not None:
        raw = given.get(method.Settings.BLOCK) or {}
        if not isinstance(raw, dict):
            raise TasftError(f"{method.Settings.BLOCK}: expected a mapping of {method.name} settings, got {raw!r}")
        cfg.method_settings = from_dict(method.Settings, raw, where=method.Settings.BLOCK)
    return validate(cfg)


def validate(cfg: TrainConfig) -> TrainConfig:
    """Check a config (built from YAML or in code): the method is registered, its settings (defaults if none were
    given) pass its own checks, and the core settings are in range; raise a one-line :class:`TasftError`."""
    method = get_method(cfg.method)
    if cfg.method_settings is None and method.Settings is not None:
        cfg.method_settings = method.Settings()
    if method.Settings is not None and not isinstance(cfg.method_settings, method.Settings):
        raise TasftError(f"method_settings: method {cfg.method} takes {method.Settings.__name__}, "
                         f"got {type(cfg.method_settings).__name__}")
    if method.Settings is None and cfg.method_settings is not None:
        raise TasftError(f"method_settings: method {cfg.method} has no settings")
    check_core(cfg)
    if method.needs_harmful and cfg.harmful_data is None:
        raise TasftError(f"harmful_data: method {cfg.method} needs a harmful data set (D_h)")
    method.check(cfg)
    return cfg


def _merge(base: dict, child: dict) -> dict:
    """``child`` over ``base``; nested mappings are merged key by key."""
    out = dict(base)
    for key, value in child.items():
        out[key] = _merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def read_config_file(path: Path, _seen: tuple[Path, ...] = ()) -> dict:
    """A YAML config with its relative paths resolved; ``base: OTHER.yaml`` (relative to this file) is read first
    and this file's keys override it."""
    resolved = path.resolve()
    if resolved in _seen:
        raise TasftError(f"{path}: 'base' files include each other in a cycle")
    data = _resolve_paths(read_yaml(path), resolved.parent)
    base = data.pop("base", None)
    if base is None:
        return data
    if not isinstance(base, str):
        raise TasftError(f"{path}: base: expected a file name, got {base!r}")
    return _merge(read_config_file(path.parent / base, (*_seen, resolved)), data)


def _setting_origin(path: Path, key: str) -> Path | None:
    """The file of ``path``'s ``base:`` chain (``path`` first) whose own keys set ``key``."""
    seen: set[Path] = set()
    while path.resolve() not in seen:
        seen.add(path.resolve())
        own = read_yaml(path)
        if key in own:
            return path
        if not isinstance(own.get("base"), str):
            return None
        path = path.parent / own["base"]
    return None


def _check_remote_code_consent(path: Path, data: dict, overrides: list[str]) -> None:
    """``trust_remote_code: true`` runs Python from the model's repository: it must come from the config the user
    names or from ``--set``, never silently from a file that config includes."""
    if data.get("trust_remote_code") is not True:
        return
    if any(item.partition("=")[0].strip() == "trust_remote_code" for item in overrides):
        return
    origin = _setting_origin(path, "trust_remote_code")
    if origin is not None and origin.resolve() != path.resolve():
        raise TasftError(f"trust_remote_code: true comes from {origin}, a file {path} includes (base:): it runs code "
                         f"from the model's repository, so confirm it with --set trust_remote_code=true or write it "
                         f"in {path} itself")


def load_train_config(path: str | None = None, overrides: list[str] | None = None) -> TrainConfig:
    """Read a YAML file (optional; its ``base:`` first), apply overrides, build and validate a :class:`TrainConfig`.
    ``trust_remote_code`` set by an included file needs the user's confirmation (:func:`_check_remote_code_consent`)."""
    data: dict = {}
    if path is not None:
        data = read_config_file(Path(path))
        _check_remote_code_consent(Path(path), data, overrides or [])
    data = apply_overrides(data, overrides or [])
    return build_config(data)
