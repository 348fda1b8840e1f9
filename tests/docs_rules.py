"""Machinery for tests/test_docs_commands.py: finds the commands that README.md and
docs/**/*.md show, and runs commands (subprocesses, or `python -m` in-process) with the
offline environment. The rules themselves (what each command becomes here) live in the
test module, whose docstring lists them."""

import contextlib
import dataclasses
import glob
import io
import os
import re
import runpy
import shlex
import subprocess
import sys
import threading
import time
import traceback
import warnings
from typing import Callable, Optional, Sequence
from unittest import mock

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# A fenced block is shell when its info string is one of these ("" = no language).
SHELL_FENCES = ("", "bash", "sh", "shell")
# A line of a shell block is a command when it starts with one of these.
COMMAND_STARTS = ("python", "./", "bash", "pip", "gcloud", ".venv/")
# An inline code span is a command when it starts with one of these.
INLINE_STARTS = ("python -m ptjax", "./scripts/")

# Environment of every command run here (plus a shared XLA compilation cache: the same
# shrunk programs compile once per session).
BASE_ENV = {"JAX_PLATFORMS": "cpu", "TF_CPP_MIN_LOG_LEVEL": "3"}


def doc_files() -> list[str]:
  """README.md and docs/**/*.md, relative to the repository root."""
  docs = sorted(glob.glob(os.path.join(ROOT, "docs", "**", "*.md"), recursive=True))
  return ["README.md"] + [os.path.relpath(p, ROOT) for p in docs]


@dataclasses.dataclass
class Command:
  file: str           # relative to the repository root
  line: int           # 1-based line of the command's first line
  text: str           # continuations joined, comment removed, whitespace normalised
  block: Optional[int] = None            # index of its fenced block (None: inline span)
  previous: Optional["Command"] = dataclasses.field(default=None, repr=False)

  @property
  def id(self) -> str:
    return f"{self.file}:{self.line}"

  @property
  def inline(self) -> bool:
    return self.block is None


def strip_comment(line: str) -> str:
  """`cmd args  # comment` -> `cmd args` (a `#` inside quotes is kept)."""
  quote = None
  for i, ch in enumerate(line):
    if quote:
      if ch == quote:
        quote = None
    elif ch in "'\"":
      quote = ch
    elif ch == "#" and (i == 0 or line[i - 1].isspace()):
      return line[:i].rstrip()
  return line.rstrip()


def normalise(text: str) -> str:
  return " ".join(text.split())


def extract(relpath: str, text: Optional[str] = None) -> list[Command]:
  """The commands of one Markdown file, in order."""
  if text is None:
    with open(os.path.join(ROOT, relpath), encoding="utf-8") as f:
      text = f.read()
  lines = text.split("\n")
  commands: list[Command] = []
  prose: list[tuple[int, str]] = []   # (line number, text) outside fenced blocks
  fence = None                        # (marker, info, block index) while inside a block
  blocks = 0
  pending: Optional[tuple[int, str]] = None   # a command continued with a backslash
  previous: Optional[Command] = None
  for number, line in enumerate(lines, 1):
    stripped = line.strip()
    if fence is None:
      match = re.match(r"^(`{3,}|~{3,})\s*([\w+-]*)", stripped)
      if match:
        fence = (match.group(1), match.group(2).lower(), blocks)
        blocks += 1
        previous = None
        prose.append((number, ""))
      else:
        prose.append((number, line))
      continue
    if stripped.startswith(fence[0]) and not stripped[len(fence[0]):].strip():
      fence = None
      pending = None
      prose.append((number, ""))
      continue
    prose.append((number, ""))
    if fence[1] not in SHELL_FENCES:
      continue
    if pending is not None:
      start, joined = pending
      joined += " " + stripped
    elif stripped.startswith(COMMAND_STARTS):
      start, joined = number, stripped
    else:
      continue
    if joined.endswith("\\"):
      pending = (start, joined[:-1])
      continue
    pending = None
    command = Command(relpath, start, normalise(strip_comment(joined)), fence[2], previous)
    commands.append(command)
    previous = command
  # Inline code spans in the prose (a span may run over a line break, not a blank line).
  prose_text = "\n".join(t for _, t in prose)
  starts = [0]
  for _, t in prose:
    starts.append(starts[-1] + len(t) + 1)
  for match in re.finditer(r"(?<!`)`([^`]+)`(?!`)", prose_text):
    span = match.group(1)
    if "\n\n" in span:
      continue
    body = normalise(span)
    if body.startswith(INLINE_STARTS):
      line = sum(1 for s in starts[1:] if s <= match.start()) + 1
      commands.append(Command(relpath, line, body))
  commands.sort(key=lambda c: c.line)
  return commands


def all_commands() -> list[Command]:
  return [c for path in doc_files() for c in extract(path)]


# --- Filling placeholders ----------------------------------------------------------------

def macro_bindings(tokens: Sequence[str]) -> dict[str, str]:
  """{NAME: token} for every `--gin.NAME=VALUE` with an upper-case NAME (a gin macro)."""
  out = {}
  for token in tokens:
    match = re.match(r"^--gin\.([A-Z][A-Z0-9_]*)=", token)
    if match:
      out[match.group(1)] = token
  return out


def fill_ellipsis(command: Command, not_carried: Sequence[str] = ()) -> list[str]:
  """Tokens of a command whose standalone `...` stands for the preceding command's flags in
  the same block: its gin macro bindings (`--gin.NAME=`, NAME upper case) that this line
  does not set itself, except `not_carried` (what only the preceding run reads). Gin files
  are not carried over: a line names its own run."""
  tokens = shlex.split(command.text)
  if "..." not in tokens:
    return tokens
  if command.previous is None:
    raise AssertionError(f"{command.id}: `...` with no preceding command in its block to "
                         f"fill it from: {command.text}")
  own = macro_bindings(tokens)
  carried = [t for name, t in macro_bindings(shlex.split(command.previous.text)).items()
             if name not in own and name not in not_carried]
  i = tokens.index("...")
  return tokens[:i] + carried + tokens[i + 1:]


def gin_texts() -> str:
  """Every gin file of the repository, concatenated (to check binding names exist)."""
  texts = []
  for path in glob.glob(os.path.join(ROOT, "**", "*.gin"), recursive=True):
    if "/.venv/" in path or "/build/" in path:
      continue
    with open(path, encoding="utf-8") as f:
      texts.append(f.read())
  return "\n".join(texts)


def unknown_bindings(flags: Sequence[str]) -> list[str]:
  """The `--gin.NAME=...` flags whose macro (NAME upper case) or scoped configurable
  (`scope/module.fn.param`) no gin file of the repository mentions: a rename upstream that
  would make a shrinking binding silently do nothing."""
  text = gin_texts()
  bad = []
  for flag in flags:
    name = flag[len("--gin."):].split("=", 1)[0].strip()
    if re.fullmatch(r"[A-Z][A-Z0-9_]*", name):
      if not re.search(rf"(^|\n)\s*{name}\s*=|%{name}\b", text):
        bad.append(flag)
    elif "/" in name:
      scope_fn = name.rsplit(".", 1)[0]   # model_tuning/trainer.train
      if scope_fn not in text:
        bad.append(flag)
  return bad


# --- Running --------------------------------------------------------------------------------

@dataclasses.dataclass
class Result:
  argv: list
  cwd: str
  returncode: int
  stdout: str
  stderr: str
  seconds: float

  @property
  def output(self) -> str:
    return self.stdout + self.stderr

  def last_error_line(self) -> str:
    lines = [l for l in self.output.strip().splitlines() if l.strip()]
    for line in reversed(lines):
      if line.startswith(("error:", "Error", "ERROR")) or "Error" in line.split(":")[0]:
        return line.strip()
    return lines[-1].strip() if lines else "(no output)"

  def describe(self) -> str:
    return (f"$ (cd {self.cwd} && {shlex.join(map(str, self.argv))})\n"
            f"exit {self.returncode} after {self.seconds:.0f} s\n"
            f"--- stdout (tail) ---\n{self.stdout[-3000:]}\n"
            f"--- stderr (tail) ---\n{self.stderr[-3000:]}")


def environment(extra: Optional[dict] = None, unset: Sequence[str] = ()) -> dict:
  env = {**os.environ, **BASE_ENV, **(extra or {})}
  for name in unset:
    env.pop(name, None)
  return env


def run(argv: Sequence[str], cwd: str, *, env: Optional[dict] = None, timeout: float = 300,
        stdin_path: Optional[str] = None, unset: Sequence[str] = (),
        on_first_stdout: Optional[Callable[[], None]] = None) -> Result:
  """A subprocess with BASE_ENV (+ env), a timeout (the whole process group is killed),
  output captured. `on_first_stdout` is called once, when the command first writes to
  stdout or ends (the scripts write nothing there while scripts/venv.sh installs)."""
  tic = time.perf_counter()
  stdin = open(stdin_path) if stdin_path else subprocess.DEVNULL
  called = threading.Event()

  def signal():
    if on_first_stdout is not None and not called.is_set():
      called.set()
      on_first_stdout()
  try:
    proc = subprocess.Popen(list(map(str, argv)), cwd=cwd, env=environment(env, unset), stdin=stdin,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            start_new_session=True)
    chunks: dict = {"out": [], "err": []}

    def read(stream, name, first):
      while True:
        data = stream.read1(65536) if hasattr(stream, "read1") else stream.read(65536)
        if not data:
          break
        if first:
          signal()
        chunks[name].append(data)
    readers = [threading.Thread(target=read, args=(proc.stdout, "out", True), daemon=True),
               threading.Thread(target=read, args=(proc.stderr, "err", False), daemon=True)]
    for reader in readers:
      reader.start()
    try:
      code = proc.wait(timeout=timeout)
      timed_out = False
    except subprocess.TimeoutExpired:
      with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, 9)
      code, timed_out = proc.wait(), True
    for reader in readers:
      reader.join(timeout=10)
    out = b"".join(chunks["out"]).decode(errors="replace")
    err = b"".join(chunks["err"]).decode(errors="replace")
    if timed_out:
      code = 124
      err += (f"\nerror: timed out after {timeout} s (a shrinking binding may have stopped "
              "working)")
  finally:
    signal()
    if stdin_path:
      stdin.close()
  return Result(list(argv), cwd, code, out, err, time.perf_counter() - tic)


_IN_PROCESS = threading.Lock()


def run_module_in_process(module: str, args: Sequence[str], cwd: str,
                          env: Optional[dict] = None) -> Result:
  """`python -m MODULE ARGS` as the interpreter runs it (runpy, run_name='__main__', so the
  module's own `if __name__ == '__main__'` error handling applies), in this process: saves
  the ~5 s interpreter and TensorFlow start-up of a subprocess. stdout/stderr captured;
  SystemExit gives the exit status. Only for modules without process-global state (argparse
  CLIs); never from two threads at once."""
  out, err = io.StringIO(), io.StringIO()
  code = 0
  tic = time.perf_counter()
  with _IN_PROCESS:
    old_argv, old_cwd = sys.argv[:], os.getcwd()
    with mock.patch.dict(os.environ, {**BASE_ENV, **(env or {})}), \
        contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
      try:
        os.chdir(cwd)
        sys.argv = [module, *args]
        with warnings.catch_warnings():
          # Imported before (e.g. by tests/experiments): harmless for a fresh __main__ run.
          warnings.filterwarnings("ignore", message=".*found in sys.modules after import",
                                  category=RuntimeWarning)
          runpy.run_module(module, run_name="__main__", alter_sys=True)
      except SystemExit as e:
        if e.code is None:
          code = 0
        elif isinstance(e.code, int):
          code = e.code
        else:
          print(e.code, file=sys.stderr)
          code = 1
      except BaseException:  # pylint: disable=broad-except
        traceback.print_exc()
        code = 1
      finally:
        sys.argv = old_argv
        os.chdir(old_cwd)
  return Result(["python", "-m", module, *args], cwd, code, out.getvalue(), err.getvalue(),
                time.perf_counter() - tic)


def scratch_clone(folder: str) -> str:
  """A folder that mirrors the repository's top level by symlinks: relative paths of the
  docs (gin/..., ptjax/assets/...) resolve, and what a command writes into its cwd
  (train.tsv, launch scripts, results/) stays out of the repository."""
  os.makedirs(folder, exist_ok=True)
  for name in os.listdir(ROOT):
    if name in (".git",):
      continue
    link = os.path.join(folder, name)
    if not os.path.lexists(link):
      os.symlink(os.path.join(ROOT, name), link)
  return folder


STAND_IN = """#!/usr/bin/env bash
# Stand-in for {name} (tests/test_docs_commands.py): records its argv, does nothing.
{{ printf '%s' "{name}"; for a in "$@"; do printf '\\037%s' "$a"; done; printf '\\036'; }} \\
  >> "{log}"
"""


def stand_ins(folder: str, names: Sequence[str] = ("gcloud", "ssh", "scp")) -> tuple[str, str]:
  """A bin folder whose `names` record their argv to a log; returns (bin, log)."""
  bin_dir = os.path.join(folder, "bin")
  os.makedirs(bin_dir, exist_ok=True)
  log = os.path.join(folder, "calls.log")
  for name in names:
    path = os.path.join(bin_dir, name)
    with open(path, "w") as f:
      f.write(STAND_IN.format(name=name, log=log))
    os.chmod(path, 0o755)
  return bin_dir, log


def recorded_calls(log: str) -> list[list[str]]:
  if not os.path.exists(log):
    return []
  with open(log) as f:
    text = f.read()
  return [record.split("\x1f") for record in text.split("\x1e") if record]


class Once:
  """Runs each keyed job once per session, in whichever thread asks first; others wait.
  Jobs never wait on a job that has not started (they run it themselves), so a pool of
  threads prefetching jobs cannot deadlock."""

  def __init__(self):
    self._lock = threading.Lock()
    self._entries: dict = {}

  def __call__(self, key, fn: Callable):
    with self._lock:
      entry = self._entries.get(key)
      owner = entry is None
      if owner:
        entry = self._entries[key] = {"event": threading.Event()}
    if owner:
      try:
        entry["value"] = fn()
      except BaseException as e:  # pylint: disable=broad-except
        entry["error"] = e
      finally:
        entry["event"].set()
    else:
      entry["event"].wait()
    if "error" in entry:
      raise entry["error"]   # The job's own exception (pytest's skip / fail included).
    return entry["value"]
