"""A Cloud Storage emulator (`gcp-storage-emulator`, a test dependency, with the download
headers of real Cloud Storage: tests/gcs_emulator_server.py) on 127.0.0.1 for
the gs:// tests (fixture `gcs`, registered by tests/conftest.py): one server
process per test session, its objects on disk under a
temporary folder so that stopping and restarting it keeps them (the outage test).

The session's environment gets STORAGE_EMULATOR_HOST (gcsfs, hence ptjax.files and orbax's
epath) and, through `ptjax.files.configure_storage_env`, TensorStore's endpoint; every CLI
run a test starts inherits them. Nothing leaves the loopback interface."""

import os
import socket
import subprocess
import sys
import time
import urllib.request

import pytest

BUCKET = "ptjax-test"
_ENV_KEYS = ("STORAGE_EMULATOR_HOST", "TENSORSTORE_GCS_HTTP_URL",
             "GOOGLE_AUTH_TOKEN_FOR_TESTING", "GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT")


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


class Emulator:
  """The emulator server process: start / stop / restart, and gcsfs helpers for tests."""

  def __init__(self, folder: str):
    self.folder, self.port, self.proc = folder, _free_port(), None
    self.url = f"http://127.0.0.1:{self.port}"

  def start(self):
    self.proc = subprocess.Popen(
        [sys.executable, os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                      "gcs_emulator_server.py"),
         "127.0.0.1", str(self.port), BUCKET, self.folder],
        cwd=self.folder, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 60
    while True:
      try:
        urllib.request.urlopen(f"{self.url}/storage/v1/b/{BUCKET}", timeout=2).read()
        return
      except OSError:
        if time.time() > deadline or self.proc.poll() is not None:
          raise RuntimeError("the Cloud Storage emulator did not start") from None
        time.sleep(0.1)

  def stop(self):
    if self.proc is not None and self.proc.poll() is None:
      self.proc.terminate()
      self.proc.wait(timeout=30)
    self.proc = None

  @property
  def fs(self):
    import gcsfs
    return gcsfs.GCSFileSystem(token="anon", endpoint_url=self.url)

  def upload(self, local: str, remote: str):
    """A local file or folder (recursively) to gs://BUCKET/... ."""
    if os.path.isdir(local):
      for folder, _, names in os.walk(local):
        for name in names:
          rel = os.path.relpath(os.path.join(folder, name), local)
          self.fs.pipe(f"{remote}/{rel}", open(os.path.join(folder, name), "rb").read())
    else:
      self.fs.pipe(remote, open(local, "rb").read())

  def listing(self, remote: str) -> set[str]:
    """Paths of every object under `remote`, relative to it."""
    prefix = remote[len("gs://"):].rstrip("/") + "/"
    return {p[len(prefix):] for p in self.fs.find(remote) if p.startswith(prefix)}


@pytest.fixture(scope="session")
def gcs(tmp_path_factory):
  """The running emulator; the session's environment points gs:// at it."""
  saved = {k: os.environ.get(k) for k in _ENV_KEYS}
  emulator = Emulator(str(tmp_path_factory.mktemp("gcs_emulator")))
  emulator.start()
  os.environ["STORAGE_EMULATOR_HOST"] = emulator.url
  from ptjax import files
  files.configure_storage_env()
  try:
    yield emulator
  finally:
    emulator.stop()
    for k, v in saved.items():
      if v is None:
        os.environ.pop(k, None)
      else:
        os.environ[k] = v

