"""The recipe settings object and `--set key=value` overrides.

`Config` is a nested dict with attribute access that holds plain values only
(str, int, float, bool, None, lists, nested Configs), so it round-trips through
`config.json`.
"""
import difflib
import json

from defrcn.errors import InputError


class Config(dict):
    """Nested settings: ``cfg.solver.base_lr`` and ``cfg["solver"]["base_lr"]``."""

    def __init__(self, *args, **kwargs):
        super().__init__()
        for key, value in dict(*args, **kwargs).items():
            self[key] = value

    def __setitem__(self, key, value):
        super().__setitem__(key, _wrap(value))

    def __getattr__(self, key):
        try:
            return self[key]
        except KeyError:
            raise AttributeError(key) from None

    def __setattr__(self, key, value):
        self[key] = value

    def __delattr__(self, key):
        del self[key]

    def copy(self):
        return Config(json.loads(json.dumps(self.to_dict())))

    def to_dict(self):
        return {k: v.to_dict() if isinstance(v, Config) else _plain(v) for k, v in self.items()}

    def flat_keys(self, prefix=""):
        """Every leaf key in dotted form (``solver.base_lr``)."""
        keys = []
        for key, value in self.items():
            dotted = f"{prefix}{key}"
            if isinstance(value, Config) and value:
                keys.extend(value.flat_keys(dotted + "."))
            else:
                keys.append(dotted)
        return keys

    def get_path(self, dotted):
        node = self
        for part in dotted.split("."):
            if not isinstance(node, dict) or part not in node:
                raise KeyError(dotted)
            node = node[part]
        return node

    def set_path(self, dotted, value):
        *parents, leaf = dotted.split(".")
        node = self
        for part in parents:
            node = node[part]
        node[leaf] = value


def _wrap(value):
    if isinstance(value, Config):
        return value
    if isinstance(value, dict):
        return Config(value)
    if isinstance(value, tuple):
        return [_wrap(v) for v in value]
    if isinstance(value, list):
        return [_wrap(v) for v in value]
    return value


def _plain(value):
    if isinstance(value, Config):
        return value.to_dict()
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def parse_value(key, text, current):
    """Parse the override text for `key` to the type of its current value."""
    if isinstance(current, bool):
        low = text.strip().lower()
        if low in _TRUE:
            return True
        if low in _FALSE:
            return False
        raise InputError(f"--set {key}: expected a bool (true/false), got {text!r}")
    if isinstance(current, int):
        try:
            return int(text)
        except ValueError:
            raise InputError(f"--set {key}: expected an int, got {text!r}") from None
    if isinstance(current, float):
        try:
            return float(text)
        except ValueError:
            raise InputError(f"--set {key}: expected a float, got {text!r}") from None
    if isinstance(current, list):
        if text.strip().startswith("["):
            return _parse_json_list(key, text, current)
        if current and isinstance(current[0], list):
            raise InputError(f"--set {key}: a list of lists, give it in JSON syntax such as "
                             f"{json.dumps(_plain(current))}")
        items = [t.strip() for t in text.split(",")] if text.strip() else []
        if current:
            return [parse_value(key, t, current[0]) for t in items]
        if key.endswith(("classes", "names")):  # class-name lists: names such as "7" stay strings
            return items
        return [_guess(t) for t in items]
    if isinstance(current, dict):
        raise InputError(f"--set {key}: is a group of settings, set one of its keys")
    if current is None:
        return _guess(text)
    return text


def _parse_json_list(key, text, current):
    """`[[800, 1344], [1344, 800]]`-style values for lists of lists (JSON syntax)."""
    try:
        value = json.loads(text)
    except ValueError:
        raise InputError(f"--set {key}: expected a JSON list such as [[256, 256]], got {text!r}") from None
    if not isinstance(value, list):
        raise InputError(f"--set {key}: expected a list, got {text!r}")
    if current and value and _kind(current[0]) != _kind(value[0]):
        raise InputError(
            f"--set {key}: expected items like {json.dumps(_plain(current[0]))}, got {json.dumps(value[0])}"
        )
    return value


def _kind(value):
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, (list, tuple)):
        return "list"
    return type(value).__name__


def _guess(text):
    low = text.strip().lower()
    if low in ("none", "null"):
        return None
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return text


def apply_overrides(cfg, overrides):
    """Apply ``key=value`` strings to cfg in place; unknown keys name the closest ones.

    The text is parsed to the type of the value it replaces: ``true/false`` for bools,
    ints, floats (an int is accepted for a float), strings as given; lists as
    ``a,b,c`` (each item parsed like the first existing item; items of an empty list
    are guessed, except in ``*classes``/``*names`` lists, which hold strings) or in JSON
    syntax (``[[800,1344],[1344,800]]``, required for lists of lists); an empty text
    gives an empty list. Setting a group
    (``--set solver=1``) or a key the recipe lacks is an `InputError`.
    """
    known = cfg.flat_keys()
    for item in overrides:
        if "=" not in item:
            raise InputError(f"--set {item!r}: expected key=value")
        key, text = item.split("=", 1)
        key = key.strip()
        try:
            current = cfg.get_path(key)
        except KeyError:
            close = difflib.get_close_matches(key, known, n=3, cutoff=0.5)
            hint = f"; did you mean {', '.join(close)}?" if close else ""
            raise InputError(f"--set {key}: unknown key{hint}") from None
        cfg.set_path(key, parse_value(key, text, current))
    return cfg
