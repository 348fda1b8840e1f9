"""`python -m ptjax.convert`: T5X <-> HF through the CLI."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from conftest import INLINE_CKPT, ROOT, TENSORSTORE_CKPT, TENSORSTORE_CONFIG, shared_fixture
from ptjax import convert
from ptjax.checkpoints import load_checkpoint
from ptjax.checkpoints.validate import flat


def test_cli_t5x_to_hf_and_back(tmp_path):
  src = shared_fixture(INLINE_CKPT)
  hf = str(tmp_path / "hf")
  proc = subprocess.run([sys.executable, "-m", "ptjax.convert", "--input", src, "--output", hf,
                         "--format", "hf", "--config", "tiny"], capture_output=True, text=True,
                        cwd=ROOT, check=True)
  summary = json.loads(proc.stdout.strip().splitlines()[-1])
  assert summary["input_format"] == "t5x" and summary["format"] == "hf"
  assert os.path.exists(os.path.join(hf, "model.safetensors"))
  assert convert.main(["--input", hf, "--output", str(tmp_path / "t5x"), "--format", "t5x"]) == 0
  _, original = load_checkpoint(src)
  _, back = load_checkpoint(str(tmp_path / "t5x"))
  for k, v in flat(original).items():
    assert np.array_equal(flat(back)[k], v), k


def test_cli_config_from_json_and_dtype(tmp_path):
  fields = {"emb_dim": 4, "num_heads": 2, "head_dim": 2, "mlp_dim": 8, "num_encoder_layers": 2,
            "num_decoder_layers": 2, "relative_attention_num_buckets": 4,
            "relative_attention_max_distance": 8}
  (tmp_path / "cfg.json").write_text(json.dumps(fields))
  assert convert.main(["--input", shared_fixture(TENSORSTORE_CKPT), "--output",
                       str(tmp_path / "hf"), "--format", "hf", "--config",
                       str(tmp_path / "cfg.json"), "--dtype", "bfloat16"]) == 0
  config, params = load_checkpoint(str(tmp_path / "hf"))
  assert config == TENSORSTORE_CONFIG
  assert {str(v.dtype) for v in flat(params).values()} == {"bfloat16"}


def test_cli_errors_are_one_line(tmp_path, capsys):
  src = shared_fixture(INLINE_CKPT)
  assert convert.main(["--input", src, "--output", str(tmp_path / "x"), "--format", "hf"]) == 2
  assert "needs --config" in capsys.readouterr().err
  (tmp_path / "full").mkdir()
  (tmp_path / "full" / "keep.txt").write_text("precious")
  assert convert.main(["--input", src, "--output", str(tmp_path / "full"), "--format", "t5x"]) == 2
  err = capsys.readouterr().err
  assert "already exists and is not empty" in err and "--overwrite" in err
  assert (tmp_path / "full" / "keep.txt").read_text() == "precious"
  assert convert.main(["--input", src, "--output", str(tmp_path / "y"), "--format", "hf",
                       "--config", "giant"]) == 2
  assert "neither a preset" in capsys.readouterr().err
  assert convert.main(["--input", str(tmp_path / "nope"), "--output", str(tmp_path / "z"),
                       "--format", "t5x"]) == 2
  assert "does not exist" in capsys.readouterr().err


def test_config_json_unknown_field(tmp_path):
  (tmp_path / "c.json").write_text(json.dumps({"d_model": 4}))
  with pytest.raises(ValueError, match=r"unknown T5Config field\(s\) \['d_model'\]"):
    convert.resolve_config(str(tmp_path / "c.json"))
