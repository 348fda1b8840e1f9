"""The path layer: every file ptjax reads or writes, local or `gs://`, goes through here.

Local paths use the file system as before; a path with a scheme (`gs://bucket/key`) goes
through `etils.epath` with its fsspec backend, i.e. `gcsfs` for `gs://` — the same library
orbax uses for run state, so run files and checkpoints reach the same server. Arrays go
through TensorStore (`checkpoints.storage.kvstore_spec`), run state through orbax.

Why gcsfs and not TensorFlow's `tf.io.gfile`: gcsfs honours `STORAGE_EMULATOR_HOST`, so the
whole cloud path is tested against a Cloud Storage emulator on 127.0.0.1; gfile (and epath's
TensorFlow backend) always talk to Google. `configure_storage_env()` (run when ptjax is
imported) therefore sets `EPATH_USE_TF=false` unless the user set it, and with
`STORAGE_EMULATOR_HOST` points TensorStore at the same emulator.

Whole-file writes: a file is either its old contents or its new ones, never a torn mix. A
local file is written to a temporary file in the same folder and renamed over the target
(`os.replace`, atomic on POSIX); a Cloud Storage object is replaced whole by one upload
(object semantics: readers see the old or the new object). `append_line` appends one whole
line (locally one `write`; on gs:// the object is rewritten whole); `read_jsonl` skips a
torn last line (what a kill during a local append leaves) and fails, naming the file, on
any other.

Errors: a remote operation that fails for any reason but a missing file raises
`StorageError`, one line naming the path (a stopped server, lost credentials, a bucket that
does not exist) and saying that a rerun resumes from the last checkpoint.
"""

import contextlib
import io
import json
import os
import posixpath
import tempfile
from typing import Any, Callable, Iterable, Iterator, Optional

import numpy as np


class StorageError(OSError):
  """A remote read or write failed (not a missing file); one line naming the path."""


def configure_storage_env() -> None:
  """Environment defaults of the cloud path, set only where the user set nothing.

  - `EPATH_USE_TF=false`: orbax's epath uses fsspec/gcsfs for gs://, like ptjax.
  - With `STORAGE_EMULATOR_HOST` (the Cloud Storage emulator convention, honoured by
    gcsfs): TensorStore gets the same endpoint (`TENSORSTORE_GCS_HTTP_URL`) and a test token
    (`GOOGLE_AUTH_TOKEN_FOR_TESTING`), and gcsfs skips its gRPC bucket-type probe
    (`GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT=false`; against an emulator each probe waits 60 s).
  """
  os.environ.setdefault("EPATH_USE_TF", "false")
  host = os.environ.get("STORAGE_EMULATOR_HOST", "")
  if host and host != "default":
    url = host if host.startswith(("http://", "https://")) else "http://" + host
    os.environ.setdefault("TENSORSTORE_GCS_HTTP_URL", url)
    os.environ.setdefault("GOOGLE_AUTH_TOKEN_FOR_TESTING", "emulator")
    os.environ.setdefault("GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT", "false")


def is_remote(path: str) -> bool:
  """True for a path with a scheme (`gs://bucket/key`)."""
  return "://" in str(path)


def join(path: str, *names: str) -> str:
  if is_remote(path):
    return posixpath.join(str(path).rstrip("/"), *names)
  return os.path.join(path, *names)


def dirname(path: str) -> str:
  if is_remote(path):
    return posixpath.dirname(str(path).rstrip("/"))
  return os.path.dirname(os.path.abspath(path))


def basename(path: str) -> str:
  return posixpath.basename(str(path).rstrip("/")) if is_remote(path) else os.path.basename(path)


def abspath(path: str) -> str:
  """A local path made absolute (symlinks resolved); a remote path unchanged."""
  return path if is_remote(path) else os.path.realpath(path)


def _epath(path: str):
  from etils import epath
  return epath.Path(path)


@contextlib.contextmanager
def _remote(path: str, doing: str) -> Iterator[None]:
  """Turns any failure of a remote call but a missing file into one-line StorageError."""
  try:
    yield
  except (FileNotFoundError, StorageError, IsADirectoryError, NotADirectoryError):
    raise
  except Exception as e:  # gcsfs / aiohttp / google-auth errors have no common base.
    reason = str(e).strip().splitlines()[0] if str(e).strip() else ""
    raise StorageError(
        f"{path}: cannot {doing} ({type(e).__name__}{': ' + reason[:200] if reason else ''}); "
        f"check that the bucket exists and is reachable (STORAGE_EMULATOR_HOST="
        f"{os.environ.get('STORAGE_EMULATOR_HOST', 'unset')}).") from None


def _call(path: str, doing: str, local: Callable[[], Any], remote: Callable[[], Any]) -> Any:
  if not is_remote(path):
    return local()
  with _remote(path, doing):
    return remote()


# --- Queries ----------------------------------------------------------------------------

def exists(path: str) -> bool:
  """A file or folder (gs://: an object, or objects under `path/`)."""
  return _call(path, "check", lambda: os.path.exists(path), lambda: _epath(path).exists())


def isdir(path: str) -> bool:
  return _call(path, "check", lambda: os.path.isdir(path), lambda: _epath(path).is_dir())


def isfile(path: str) -> bool:
  return _call(path, "check", lambda: os.path.isfile(path), lambda: _epath(path).is_file())


def listdir(path: str) -> list[str]:
  """Names in a folder (FileNotFoundError when there is none)."""
  def remote():
    p = _epath(path)
    if not p.is_dir():
      raise FileNotFoundError(path)
    return [c.name for c in p.iterdir()]
  return sorted(_call(path, "list", lambda: os.listdir(path), remote))


def walk(path: str) -> Iterator[tuple[str, list[str]]]:
  """(folder, file names) of every folder under `path`, `path` included."""
  if not is_remote(path):
    for folder, _, names in os.walk(path):
      yield folder, names
    return
  scheme = str(path).split("://", 1)[0] + "://"
  with _remote(path, "list"):
    found = list(_epath(path).walk())
  for folder, _, names in found:
    folder = str(folder)  # fsspec walks without the scheme: 'bucket/key'.
    yield (folder if folder.startswith(scheme) else scheme + folder), list(names)


def getsize(path: str) -> int:
  def remote():
    p = _epath(path)
    return p.stat().length
  return _call(path, "stat", lambda: os.path.getsize(path), remote)


# --- Reads ------------------------------------------------------------------------------

def read_bytes(path: str) -> bytes:
  def local():
    with open(path, "rb") as f:
      return f.read()
  return _call(path, "read", local, lambda: _epath(path).read_bytes())


def read_text(path: str) -> str:
  return read_bytes(path).decode("utf-8")


@contextlib.contextmanager
def open_read(path: str, binary: bool = False) -> Iterator[Any]:
  """A file object to read `path` (remote: the object read whole, then served from memory)."""
  if not is_remote(path):
    with open(path, "rb" if binary else "r", encoding=None if binary else "utf-8",
              newline=None if binary else "") as f:
      yield f
    return
  data = read_bytes(path)
  yield io.BytesIO(data) if binary else io.StringIO(data.decode("utf-8"), newline="")


def read_json(path: str) -> Any:
  """json.load with a one-line ValueError naming the file when it is not JSON."""
  text = read_text(path)
  try:
    return json.loads(text)
  except json.JSONDecodeError as e:
    raise ValueError(f"{path} is not valid JSON ({e}); it was not written by this version "
                     f"of ptjax or was edited: restore or remove it.") from None


def read_jsonl(path: str) -> list:
  """The records of a JSONL file; a torn last line (a kill during an append) is skipped."""
  records = []
  lines = read_text(path).split("\n")
  for i, line in enumerate(lines):
    if not line.strip():
      continue
    try:
      records.append(json.loads(line))
    except json.JSONDecodeError as e:
      if i == len(lines) - 1:  # No newline after it: a torn append.
        break
      raise ValueError(f"{path}, line {i + 1}, is not valid JSON ({e}): restore or remove "
                       f"that line.") from None
  return records


def load_npy(path: str) -> np.ndarray:
  """np.load of a .npy file, never unpickling."""
  if not is_remote(path):
    return np.load(path, allow_pickle=False)
  return np.load(io.BytesIO(read_bytes(path)), allow_pickle=False)


# --- Writes -----------------------------------------------------------------------------

def makedirs(path: str) -> None:
  """A local folder (and its parents); nothing for a remote path (objects need none)."""
  if not is_remote(path):
    os.makedirs(path, exist_ok=True)


_UMASK = os.umask(0)  # Read once (setting it is the only way to read it), then restored.
os.umask(_UMASK)


@contextlib.contextmanager
def atomic_path(path: str) -> Iterator[str]:
  """Yields a local temporary path beside `path`; renamed onto `path` when the block
  succeeds, removed when it fails. For writers that need a real file name (np.save,
  safetensors); a remote `path` gets a local temporary file uploaded whole at the end."""
  if is_remote(path):
    with tempfile.TemporaryDirectory(prefix="ptjax-upload-") as folder:
      tmp = os.path.join(folder, basename(path))
      yield tmp
      with open(tmp, "rb") as f:
        write_bytes(path, f.read())
    return
  folder = os.path.dirname(os.path.abspath(path))
  os.makedirs(folder, exist_ok=True)
  fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(path) + ".", suffix=".tmp",
                             dir=folder)
  os.close(fd)
  os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp's 0600 would outlive the rename: as open() makes.
  try:
    yield tmp
    os.replace(tmp, path)
  except BaseException:
    with contextlib.suppress(OSError):
      os.remove(tmp)
    raise


def write_bytes(path: str, data: bytes) -> None:
  """`path` holds exactly `data` afterwards, or its old contents if this failed."""
  if is_remote(path):
    with _remote(path, "write"):
      _epath(path).write_bytes(data)
    return
  with atomic_path(path) as tmp:
    with open(tmp, "wb") as f:
      f.write(data)
      f.flush()
      os.fsync(f.fileno())


def write_text(path: str, text: str) -> None:
  write_bytes(path, text.encode("utf-8"))


def write_json(path: str, value: Any, indent: Optional[int] = None) -> None:
  write_text(path, json.dumps(value, indent=indent) + ("\n" if indent else ""))


def save_npy(path: str, array: np.ndarray) -> None:
  buffer = io.BytesIO()
  np.save(buffer, np.asarray(array), allow_pickle=False)
  write_bytes(path, buffer.getvalue())


def append_bytes(path: str, data: bytes) -> None:
  """Appends `data` in one write (gs://: the object is rewritten whole with `data` added)."""
  if is_remote(path):
    old = read_bytes(path) if exists(path) else b""
    write_bytes(path, old + data)
    return
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  with open(path, "ab") as f:
    f.write(data)


def append_line(path: str, line: str) -> None:
  """Appends `line` (no newline) as one write of one whole line."""
  append_bytes(path, (line + "\n").encode("utf-8"))


def remove(path: str) -> None:
  _call(path, "remove", lambda: os.remove(path), lambda: _epath(path).unlink())


def rmtree(path: str) -> None:
  """Removes a folder and everything under it (gs://: every object under `path/`)."""
  import shutil
  _call(path, "remove", lambda: shutil.rmtree(path), lambda: _epath(path).rmtree())


def copytree(source: str, target: str, skip: Iterable[str] = ()) -> None:
  """Copies every file under `source` to the same relative path under `target` (either
  may be remote), skipping files named in `skip`."""
  skip = set(skip)
  for folder, names in walk(source):
    rel = os.path.relpath(folder, source) if not is_remote(source) else \
        posixpath.relpath(folder.rstrip("/"), source.rstrip("/"))
    for name in names:
      if name in skip:
        continue
      out = join(target, name) if rel == "." else join(target, *rel.split("/"), name)
      write_bytes(out, read_bytes(join(folder, name)))
