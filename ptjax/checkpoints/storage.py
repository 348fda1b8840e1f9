"""Local and `gs://` paths through one interface: bytes and TensorStore kvstore specs.

Local paths use the file system; `gs://bucket/key` goes through TensorStore's `gcs`
kvstore driver (credentials from the environment, as on a TPU VM).
"""

import os

import tensorstore as ts


def is_gcs(path: str) -> bool:
  return path.startswith("gs://")


def join(path: str, *names: str) -> str:
  if is_gcs(path):
    return "/".join([path.rstrip("/"), *names])
  return os.path.join(path, *names)


def parent(path: str) -> str:
  if is_gcs(path):
    return path.rstrip("/").rsplit("/", 1)[0]
  return os.path.dirname(os.path.abspath(path))


def kvstore_spec(path: str) -> dict:
  """TensorStore kvstore spec of a file or folder path."""
  if is_gcs(path):
    bucket, _, key = path[len("gs://"):].partition("/")
    return {"driver": "gcs", "bucket": bucket, "path": key}
  return {"driver": "file", "path": os.path.abspath(path)}


def _gcs_store_and_key(path: str):
  spec = kvstore_spec(path)
  store = ts.KvStore.open({"driver": "gcs", "bucket": spec["bucket"]}).result()
  return store, spec["path"]


def key_exists(store: ts.KvStore, key: str) -> bool:
  """An object `key`, or a 'folder' (objects under `key/`), in a kvstore. Lists instead of
  reading: a single-file checkpoint can be gigabytes."""
  key = key.rstrip("/")
  if store.list(ts.KvStore.KeyRange(key, key + "\x00")).result():
    return True
  return bool(store.list(ts.KvStore.KeyRange(key + "/", key + "0")).result())


def exists(path: str) -> bool:
  """True for an existing file (gs: an object) or local folder."""
  if is_gcs(path):
    return key_exists(*_gcs_store_and_key(path))
  return os.path.exists(path)


def read_bytes(path: str) -> bytes:
  if is_gcs(path):
    store, key = _gcs_store_and_key(path)
    result = store.read(key).result()
    if result.state != "value":
      raise FileNotFoundError(path)
    return bytes(result.value)
  with open(path, "rb") as f:
    return f.read()


def write_bytes(path: str, data: bytes) -> None:
  if is_gcs(path):
    store, key = _gcs_store_and_key(path)
    store.write(key, data).result()
    return
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  tmp = path + ".tmp"
  with open(tmp, "wb") as f:
    f.write(data)
  os.replace(tmp, path)  # Readers never see a half-written file.
