"""Users' TSV/JSONL tasks and the batch pipeline."""

import json

import numpy as np
import pytest
import seqio

from ptjax.data import pipeline, text_tasks

VOCAB = seqio.ByteVocabulary()


def test_tsv_with_and_without_header_and_jsonl(tmp_path):
  (tmp_path / "a.tsv").write_text("inputs\ttargets\nhello\tworld\nfoo bar\tbaz\n")
  (tmp_path / "b.tsv").write_text("hello\tworld\n")
  (tmp_path / "c.jsonl").write_text(json.dumps({"inputs": "x", "targets": 1}) + "\n\n")
  assert text_tasks.read_examples(str(tmp_path / "a.tsv")) == [
      {"inputs": "hello", "targets": "world"}, {"inputs": "foo bar", "targets": "baz"}]
  assert text_tasks.read_examples(str(tmp_path / "b.tsv")) == [
      {"inputs": "hello", "targets": "world"}]
  assert text_tasks.read_examples(str(tmp_path / "c.jsonl")) == [{"inputs": "x", "targets": "1"}]


@pytest.mark.parametrize("name,content,message", [
    ("bad.tsv", "one\ttwo\tthree\n", r"bad.tsv:1: expected 2 tab-separated columns"),
    ("bad.jsonl", '{"inputs": "x"}\n', r"bad.jsonl:1: expected a JSON object with 'inputs'"),
    ("empty.tsv", "inputs\ttargets\n", "holds no examples"),
    ("data.csv", "a,b\n", "use a .tsv or .jsonl file"),
])
def test_file_errors(tmp_path, name, content, message):
  (tmp_path / name).write_text(content)
  with pytest.raises(ValueError, match=message):
    text_tasks.read_examples(str(tmp_path / name))
  with pytest.raises(ValueError, match="does not exist"):
    text_tasks.read_examples(str(tmp_path / "missing.tsv"))


@pytest.fixture(scope="module")
def task(tmp_path_factory):
  folder = tmp_path_factory.mktemp("task")
  rows = "".join(f"question {i}\tanswer {i}\n" for i in range(16))
  (folder / "train.tsv").write_text(rows)
  (folder / "validation.tsv").write_text(rows[:60])
  return text_tasks.text_task("ptjax_test_text_task",
                              {"train": str(folder / "train.tsv"),
                               "validation": str(folder / "validation.tsv")}, VOCAB)


def test_registered_task_tokenizes_with_eos(task):
  example = next(iter(seqio.get_mixture_or_task(task).get_dataset(
      {"inputs": 32, "targets": 16}, split="train", shuffle=False)))
  assert VOCAB.decode(example["inputs"].numpy().tolist()) == "question 0"
  assert example["targets"].numpy()[-1] == 1  # EOS appended.


def test_batches_encdec_features_hosts_and_skip(task):
  lengths = {"inputs": 16, "targets": 12}
  full = next(pipeline.batches(task, lengths, "train", 4, shuffle=False))
  assert set(full) == {"encoder_input_tokens", "decoder_input_tokens", "decoder_target_tokens",
                       "decoder_loss_weights"}
  assert full["encoder_input_tokens"].shape == (4, 16)
  np.testing.assert_array_equal(full["decoder_input_tokens"][:, 1:],
                                full["decoder_target_tokens"][:, :-1])
  halves = [next(pipeline.batches(task, lengths, "train", 4, shuffle=False, host_index=i,
                                  host_count=2))["encoder_input_tokens"] for i in range(2)]
  np.testing.assert_array_equal(np.concatenate(halves), full["encoder_input_tokens"])
  second = next(pipeline.batches(task, lengths, "train", 4, shuffle=False, skip_batches=1))
  it = pipeline.batches(task, lengths, "train", 4, shuffle=False)
  next(it)
  np.testing.assert_array_equal(next(it)["encoder_input_tokens"],
                                second["encoder_input_tokens"])


def test_batches_refuse_packing_and_uneven_hosts(task):
  with pytest.raises(ValueError, match="Packing is not supported with prompt tuning"):
    pipeline.batches(task, {"inputs": 8, "targets": 8}, "train", 4, pack=True)
  with pytest.raises(ValueError, match="BATCH_SIZE=5 must be divisible by the 2 hosts"):
    pipeline.batches(task, {"inputs": 8, "targets": 8}, "train", 5, host_count=2)
  with pytest.raises(ValueError, match="Unknown task 'nope'"):
    pipeline.batches("nope", {"inputs": 8, "targets": 8}, "train", 4)
