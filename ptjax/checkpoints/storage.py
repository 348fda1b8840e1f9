"""TensorStore kvstore specs of local and `gs://` paths (arrays of T5X checkpoints).

Files go through `ptjax.files`; arrays through TensorStore: a local path uses the `file`
driver, `gs://bucket/key` the `gcs` driver (credentials from the environment, as on a TPU
VM; with STORAGE_EMULATOR_HOST, `files.configure_storage_env` points it at the emulator).
"""

import os

from ptjax import files


def kvstore_spec(path: str) -> dict:
  """TensorStore kvstore spec of a file or folder path."""
  if files.is_remote(path):
    scheme, _, rest = path.partition("://")
    if scheme != "gs":
      raise ValueError(f"{path}: TensorStore arrays are read from local or gs:// paths only.")
    bucket, _, key = rest.partition("/")
    return {"driver": "gcs", "bucket": bucket, "path": key}
  return {"driver": "file", "path": os.path.abspath(path)}

