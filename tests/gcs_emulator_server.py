"""`python tests/gcs_emulator_server.py HOST PORT BUCKET DATA_DIR`: gcp-storage-emulator with
the object download response that real Cloud Storage gives and TensorStore relies on.

The emulator's media download sends no `x-goog-generation` header and ignores
`ifGenerationMatch` / `ifGenerationNotMatch`; TensorStore (orbax's arrays, T5X zarr leaves)
reads an object's generation from that header to revalidate its cache, and under load failed
with "Malformed StorageGeneration". This adds the header (and metageneration) and answers
the two conditions as Cloud Storage does (304 / 412), before the server imports its routes.
"""

import sys
from http import HTTPStatus

from gcp_storage_emulator.handlers import objects

_download = objects.download


def download(request, response, storage, *args, **kwargs):
  try:
    obj = storage.get_file_obj(request.params["bucket_name"], request.params["object_id"])
  except Exception:  # Not found: the emulator's own handler answers 404.
    obj = None
  if obj is not None:
    generation, query = str(obj["generation"]), request.query
    if query.get("ifGenerationNotMatch", [None])[0] == generation:
      response.status = HTTPStatus.NOT_MODIFIED
      return None
    wanted = query.get("ifGenerationMatch", [None])[0]
    if wanted is not None and wanted != generation:
      response.status = HTTPStatus.PRECONDITION_FAILED
      return None
    response["x-goog-generation"] = generation
    response["x-goog-metageneration"] = str(obj.get("metageneration", "1"))
  return _download(request, response, storage, *args, **kwargs)


objects.download = download

if __name__ == "__main__":
  from gcp_storage_emulator.server import create_server
  host, port, bucket, data_dir = sys.argv[1:5]
  create_server(host, int(port), in_memory=False, default_bucket=bucket,
                data_dir=data_dir).run()
