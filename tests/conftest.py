"""Shared test helpers: the real T5X fixtures in ../shared/fixtures and their configs."""

import os

import pytest

from ptjax.model import T5Config, preset

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED_FIXTURES = os.path.normpath(os.path.join(ROOT, "..", "shared", "fixtures"))
LOCAL_FIXTURES = os.path.join(ROOT, "tests", "fixtures")

# Configs stated in ../shared/fixtures/README.md.
TENSORSTORE_CKPT = "t5x/tiny_tensorstore_checkpoint_3"
TENSORSTORE_CONFIG = T5Config(emb_dim=4, num_heads=2, head_dim=2, mlp_dim=8,
                              num_encoder_layers=2, num_decoder_layers=2,
                              relative_attention_num_buckets=4,
                              relative_attention_max_distance=8)
INLINE_CKPT = "t5x/tiny_inline.checkpoint_0"
INLINE_CONFIG = preset("tiny")


def shared_fixture(relative: str) -> str:
  """Path of a file in ../shared/fixtures: fails under CI=true if absent, skips elsewhere."""
  path = os.path.join(SHARED_FIXTURES, relative)
  if not os.path.exists(path):
    message = f"shared fixture {relative} not found at {path}"
    if os.environ.get("CI") == "true":
      pytest.fail(message + " (CI must have ../shared beside the clone)")
    pytest.skip(message + " (a user's clone has no ../shared)")
  return path


# A tiny random T5 with a 128-token vocabulary, saved as a T5X checkpoint by ptjax.
RANDOM_CONFIG = T5Config(vocab_size=128, emb_dim=64, num_heads=4, head_dim=16, mlp_dim=128,
                         num_encoder_layers=2, num_decoder_layers=2)


@pytest.fixture(scope="session")
def random_t5x_checkpoint(tmp_path_factory):
  import jax

  from ptjax.checkpoints import save_t5x
  from ptjax.model import init_params
  path = str(tmp_path_factory.mktemp("random_t5") / "checkpoint_0")
  save_t5x(init_params(RANDOM_CONFIG, jax.random.PRNGKey(0)), path)
  return path


# The Cloud Storage emulator of the gs:// tests (tests/cloud/).
from gcs_emulator import gcs  # noqa: E402,F401
