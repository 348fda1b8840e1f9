"""Parsing a run's gin: ptjax's files found whatever the working directory holds, any
order of files, and every setting the user gave read by the run or refused by name.

`parse(files, bindings)`:
  1. ptjax/gin/defaults.gin first (every macro's default and its wiring), then the user's
     files in their order, then the bindings (`--gin.NAME=VALUE`).
  2. File lookup (`resolve`), instead of gin's search (which tries the working directory
     first and treats `runs/x.gin` as a Python package when a `runs/` folder is there):
     an absolute path is itself; `./x.gin` or a path that exists only in the working
     directory is the user's file; a name of ptjax's (`runs/eval.gin`, `gin/runs/eval.gin`)
     is the package's file, also when a folder of that name is in the working directory;
     a name that is both is an error. Includes inside ptjax's files are always ptjax's.
     `--gin_search_paths` folders come before the package for the user's names.
  3. After parsing, `check_read`: starting from `entry.execute`, follows every reference
     the run will evaluate (gin's own scoping rules) and fails, in one line, for each
     macro or parameter the user's files or bindings set that the run never reads (a typo
     like TRAIN_STEP, a T5X name ptjax spells differently), with ptjax's name when one
     exists (`t5x_names`).
"""

import contextlib
import dataclasses
import os
import re
from typing import Optional, Sequence

import gin
from gin import config as gin_config

from ptjax.train import t5x_names

GIN_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "gin")
DEFAULTS = os.path.join(GIN_DIR, "defaults.gin")
# ptjax's own files whose settings may go unread: the defaults, and model files (a model
# file sets VOCABULARY, MODEL_CHECKPOINT_PATH, ... for the runs that need them).
_LIBRARY = (DEFAULTS, os.path.join(GIN_DIR, "models") + os.sep)
_BINDINGS = "--gin_bindings"
_IF_READ = "--gin_bindings_if_read"
# Why one of ptjax's own settings may go unread, when that is not obvious.
_UNREAD_HINTS = {
    "VOCAB_PATH": "it sets the gin VOCABULARY, which only text-file tasks and vocabulary-based "
                  "prompt inits read; registered tasks read $PTJAX_T5_VOCAB",
}


class GinConfigError(ValueError):
  """A configuration mistake, said in one line."""


def _package_file(name: str) -> Optional[str]:
  for candidate in (name, name[len("gin/"):] if name.startswith("gin/") else None):
    if candidate:
      path = os.path.normpath(os.path.join(GIN_DIR, candidate))
      if path.startswith(GIN_DIR + os.sep) and os.path.isfile(path):
        return path
  return None


def resolve(name: str, including: Optional[str] = None,
            search_paths: Sequence[str] = ()) -> str:
  """The file a gin name stands for (rules in the module docstring); GinConfigError if none.

  `including`: the file whose `include` names it (None: a --gin_file)."""
  if including is not None and including.startswith(GIN_DIR + os.sep):
    path = _package_file(name)
    if path is None:
      raise GinConfigError(f"ptjax's {including} includes {name!r}, which ptjax does not have "
                           f"(a broken installation?).")
    return path
  if os.path.isabs(name):
    if not os.path.isfile(name):
      raise GinConfigError(f"gin file {name} does not exist.")
    return name
  if name.startswith("./") or name.startswith("../"):
    if not os.path.isfile(name):
      raise GinConfigError(f"gin file {name} does not exist.")
    return os.path.abspath(name)
  local = os.path.abspath(name) if os.path.isfile(name) else None
  if local is None and including is not None:
    beside = os.path.join(os.path.dirname(including), name)
    local = os.path.abspath(beside) if os.path.isfile(beside) else None
  for folder in search_paths:
    if local is None and os.path.isfile(os.path.join(folder, name)):
      local = os.path.abspath(os.path.join(folder, name))
  package = _package_file(name)
  if local and package and os.path.realpath(local) != os.path.realpath(package):
    with open(local, "rb") as a, open(package, "rb") as b:
      if a.read() != b.read():
        raise GinConfigError(
            f"gin file {name!r} is both {local} and ptjax's {package}: pass ./{name} for "
            f"yours or gin/{name.removeprefix('gin/')} for ptjax's after renaming yours.")
  if local or package:
    return package or local
  raise GinConfigError(f"gin file {name!r} not found: not a path from here, not in "
                       f"--gin_search_paths {list(search_paths)}, not one of ptjax's "
                       f"(ptjax/gin/: models/, prompts/, runs/, tasks/, decoding/).")


@dataclasses.dataclass
class _Reader:
  """gin file reader that resolves names itself and records which file set what."""
  search_paths: Sequence[str]
  stack: list = dataclasses.field(default_factory=list)
  origin: dict = dataclasses.field(default_factory=dict)  # binding key -> source
  resolved: dict = dataclasses.field(default_factory=dict)

  def exists(self, name: str) -> bool:
    # Claims every name, so gin never falls back to its own lookup; errors come from open.
    self.resolved[name] = resolve(name, self.stack[-1] if self.stack else None,
                                  self.search_paths)
    return True

  @contextlib.contextmanager
  def open(self, name: str):
    path = self.resolved.get(name) or resolve(name, self.stack[-1] if self.stack else None,
                                              self.search_paths)
    self.stack.append(path)
    try:
      with open(path) as f:
        yield f
    finally:
      self.stack.pop()

  def bind_parameter(self, binding_key, value):
    """gin's bind_parameter, recording the file (or the bindings) that made the binding."""
    _BIND_PARAMETER(binding_key, value)
    key = gin_config.ParsedBindingKey.parse(binding_key)
    self.origin[(key.scope, key.complete_selector, key.arg_name)] = (
        self.stack[-1] if self.stack else _BINDINGS)


_BIND_PARAMETER = gin_config.bind_parameter


def parse(files: Sequence[str], bindings: Sequence[str],
          search_paths: Sequence[str] = (), bindings_if_read: Sequence[str] = ()) -> dict:
  """Parses defaults + `files` + `bindings`, checks every user setting is read, finalizes.

  Returns {binding key: source file or '--gin_bindings'}. Raises GinConfigError (one line)
  for a file not found, an unknown configurable (with ptjax's name for a T5X one), a
  setting nothing reads, or a macro that is used but set nowhere. `bindings_if_read` come
  last and may go unread (a grid-wide setting that some runs of the grid do not use)."""
  reader = _Reader(list(search_paths))
  saved_readers = list(gin_config._FILE_READERS)
  saved_prefixes = list(gin_config._LOCATION_PREFIXES)
  gin_config._FILE_READERS[:] = [(reader.open, reader.exists)]
  gin_config._LOCATION_PREFIXES[:] = [""]
  gin_config.bind_parameter = reader.bind_parameter
  try:
    for path in [DEFAULTS, *files]:
      _parse_or_explain(lambda: gin.parse_config_file(path))
    _parse_or_explain(lambda: gin.parse_config(list(bindings)))
    reader.stack.append(_IF_READ)
    _parse_or_explain(lambda: gin.parse_config(list(bindings_if_read)))
    reader.stack.pop()
  finally:
    gin_config._FILE_READERS[:] = saved_readers
    gin_config._LOCATION_PREFIXES[:] = saved_prefixes
    gin_config.bind_parameter = _BIND_PARAMETER
  check_read(reader.origin)
  _parse_or_explain(gin.finalize)
  return reader.origin


def _parse_or_explain(fn):
  try:
    return fn()
  except GinConfigError:
    raise
  except Exception as e:  # gin's parse errors: unknown configurable, syntax, unset macro.
    message = " ".join(str(e).split())
    if "No bindings specified for '" in message:
      name = message.split("No bindings specified for '")[1].split("/gin.macro'")[0]
      raise GinConfigError(f"macro {name} is used but set nowhere: set it "
                           f"(--gin.{name}=...) or fix its spelling.") from None
    for marker in ("No configurable matching '", "No configurable matching reference '@"):
      if marker in message:
        selector = message.split(marker)[1].split("'")[0]
        # gin quotes the offending line: recover the parameter, for a precise hint.
        param = re.search(re.escape(selector) + r"\.(\w+)", message.split(marker)[1])
        hint = ((param and t5x_names.hint(f"{selector}.{param.group(1)}")) or
                t5x_names.hint(selector) or t5x_names.hint(selector.rsplit(".", 1)[0]))
        raise GinConfigError(
            f"{selector}: no such configurable in ptjax" +
            (f"; {hint}" if hint else " (see docs/coming_from_t5x.md)") + ".") from None
    if "doesn't have a parameter named '" in message:
      configurable = message.split("Configurable '")[1].split("'")[0]
      param = message.split("doesn't have a parameter named '")[1].split("'")[0]
      name = f"{configurable}.{param}"
      hint = t5x_names.hint(name)
      raise GinConfigError(f"{name}: {configurable} has no parameter {param!r}" +
                           (f"; {hint}" if hint else " (fix its spelling; "
                            "docs/coming_from_t5x.md lists T5X's names)") + ".") from None
    token = re.search(r"Failed to parse token '([^']*)'", message)
    if token and "malformed node or string" in message:
      # An unquoted word (`--gin.FROZEN_DTYPE=bfloat16`): Python's literal parser refused it.
      word = token.group(1)
      if word.lower() in ("true", "false", "none"):  # Python's spelling, not a string.
        raise GinConfigError(
            f"gin value {word!r} is not a Python literal: write {word.capitalize()} "
            f"(Python's spelling), e.g. --gin.NAME={word.capitalize()}.") from None
      raise GinConfigError(
          f"gin value {word!r} is not a Python literal: quote strings, e.g. "
          f"--gin.NAME=\"'{word}'\" (a reference is written @name()).") from None
    if "config string:" in message:  # gin appends the whole config; keep the first part.
      message = message.split("config string:")[0].rstrip(" :")
    raise GinConfigError(message[:500]) from None


def _reachable() -> set:
  """Binding keys (scope, selector, param) the run reads, by gin's rules: a reference
  `@a/fn` calls fn in scope ['a'] (replacing the current one), `@fn` in the caller's scope,
  `%M` reads macro M in scope ['M']; a call in scope S reads the bindings of every prefix
  of S, later prefixes overriding earlier ones."""
  config = gin_config._CONFIG
  read, seen = set(), set()
  entry = gin.get_configurable("ptjax.train.entry.execute")
  stack = [(entry.__module__ + "." + entry.__name__, ())]
  while stack:
    selector, scope = stack.pop()
    if (selector, scope) in seen:
      continue
    seen.add((selector, scope))
    merged = {}
    for i in range(len(scope) + 1):
      prefix = "/".join(scope[:i])
      for param, value in config.get((prefix, selector), {}).items():
        merged[param] = ((prefix, selector, param), value)
    for key, value in merged.values():
      read.add(key)
      for item in gin_config._iterate_flattened_values(value):
        if isinstance(item, gin_config.ConfigurableReference):
          stack.append((item.configurable.selector, tuple(item.scopes) or scope))
  return read


def check_read(origin: dict) -> None:
  """GinConfigError for the first setting from the user's files or bindings that the run
  will not read, or that ptjax refuses (a T5X name with another ptjax spelling). ptjax's
  defaults and model files may set what a run does not need."""
  read = _reachable()
  user = [(key, source) for key, source in origin.items() if not source.startswith(_LIBRARY)]
  optional = {key for key, source in user if source == _IF_READ}
  for key, source in user:  # Refusals first: they explain what else goes unread.
    refusal = t5x_names.refused(_name(key))
    if refusal:
      raise GinConfigError(f"{_name(key)} (set by {_where(source)}): {refusal}.")
  for key, source in user:
    if key not in read and key not in optional:
      hint = t5x_names.hint(_name(key)) or _UNREAD_HINTS.get(_name(key))
      raise GinConfigError(
          f"{_name(key)} (set by {_where(source)}) is not read by this run: " +
          (hint if hint else "remove it or fix its spelling (docs/coming_from_t5x.md lists "
           "T5X's names and ptjax's)") + ".")


def write_config(path: str) -> None:
  """The run's whole gin config (defaults included), written whole: what reproduces it."""
  from ptjax import files  # pylint: disable=g-import-not-at-top
  files.write_text(path, gin.config_str())


def _where(source: str) -> str:
  if source == _BINDINGS:
    return "a --gin binding"
  if source == _IF_READ:
    return "a --gin_bindings_if_read binding"
  if source.startswith(GIN_DIR + os.sep):
    return "ptjax's gin/" + os.path.relpath(source, GIN_DIR)
  return os.path.relpath(source)


def _name(key) -> str:
  scope, selector, param = key
  if selector == "gin.macro":
    return scope
  short = ".".join(selector.split(".")[-2:])  # module.name, as gin files write it.
  return f"{scope + '/' if scope else ''}{short}.{param}"
