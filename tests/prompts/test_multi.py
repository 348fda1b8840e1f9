"""Many prompts in one forward pass: each row equals its single-prompt run (mixed tasks,
prompts of different lengths), ensembles equal N separate runs, majority vote, serving."""

import functools
import json
import re

import jax
import numpy as np
import pytest
import seqio

from ptjax import prompts, serve
from ptjax.model import T5Config, inference, init_params
from ptjax.model.inference import shift_right

CONFIG = T5Config(vocab_size=260, emb_dim=16, num_heads=2, head_dim=8, mlp_dim=32,
                  num_encoder_layers=2, num_decoder_layers=2,
                  relative_attention_num_buckets=8, relative_attention_max_distance=16)
RNG = np.random.default_rng(0)
INPUTS = np.array([[5, 6, 7, 1, 0, 0, 0], [9, 10, 11, 12, 13, 14, 1], [9, 1, 0, 0, 0, 0, 0],
                   [20, 21, 22, 1, 0, 0, 0]], np.int32)
TARGETS = np.array([[3, 4, 1], [7, 1, 0], [8, 9, 1], [30, 1, 0]], np.int32)
# Three "tasks" with prompts of different lengths.
PROMPTS = [RNG.uniform(-0.5, 0.5, (n, 16)).astype(np.float32) for n in (3, 5, 1)]


@pytest.fixture(scope="module")
def params():
  return jax.tree.map(np.asarray, init_params(CONFIG, jax.random.key(0)))


def single(params, prompt):
  return prompts.PromptT5(CONFIG, prompt_length=len(prompt)), {
      "params": params, "prompt": {"prompt": prompt}}


def test_stack_prompts_right_aligns():
  table = prompts.stack_prompts(PROMPTS)
  assert table["prompts"].shape == (3, 5, 16) and table["lengths"].tolist() == [3, 5, 1]
  np.testing.assert_array_equal(table["prompts"][0, 2:], PROMPTS[0])
  np.testing.assert_array_equal(table["prompts"][0, :2], 0)
  with pytest.raises(ValueError, match="one embed size"):
    prompts.stack_prompts([np.zeros((2, 16)), np.zeros((2, 8))])


def test_mixed_task_batch_equals_each_task_alone(params):
  ids = np.array([2, 0, 1, 0], np.int32)
  multi = prompts.MultiPromptT5(CONFIG)
  variables = prompts.variables_for(params, prompts.stack_prompts(PROMPTS), ids)
  logits = multi.apply(variables, INPUTS, shift_right(TARGETS), TARGETS)
  for row, task in enumerate(ids):
    model, alone = single(params, PROMPTS[task])
    expected = model.apply(alone, INPUTS[row:row + 1], shift_right(TARGETS[row:row + 1]),
                           TARGETS[row:row + 1])
    # Padded target positions attend to nothing real (their logits are never used).
    valid = TARGETS[row] > 0
    np.testing.assert_allclose(logits[row][valid], expected[0][valid], atol=2e-5, rtol=1e-5)


def test_ensemble_in_one_pass_equals_separate_runs(params):
  ensemble = [RNG.uniform(-0.5, 0.5, (4, 16)).astype(np.float32) for _ in range(3)]
  tokens, ids = prompts.replicate_for_ensemble(INPUTS, 3)
  assert tokens.shape == (12, 7) and ids.tolist() == [0] * 4 + [1] * 4 + [2] * 4
  generate = functools.partial(inference.generate, max_decode_length=5)
  variables = prompts.variables_for(params, prompts.stack_prompts(ensemble), ids)
  together, scores = generate(prompts.MultiPromptT5(CONFIG), variables, tokens)
  for n, prompt in enumerate(ensemble):
    model, alone = single(params, prompt)
    expected, expected_scores = generate(model, alone, INPUTS)
    np.testing.assert_array_equal(together[4 * n:4 * n + 4], expected)
    np.testing.assert_allclose(scores[4 * n:4 * n + 4], expected_scores, atol=1e-4)


def test_majority_vote_with_ties_to_the_first_prompt():
  assert prompts.majority_vote([["yes", "no", "a"], ["no", "no", "b"], ["yes", "yes", "c"]]
                               ) == ["yes", "no", "a"]


def test_missing_routing_is_explained(params):
  with pytest.raises(ValueError, match="variables_for"):
    prompts.MultiPromptT5(CONFIG).apply({"params": params}, INPUTS, method="encode_inputs")


def test_server_answers_a_mixed_batch_like_each_task_alone(params, tmp_path):
  vocab = seqio.ByteVocabulary()
  np.save(tmp_path / "b.npy", PROMPTS[1])
  sources = {"a": PROMPTS[0], "b": str(tmp_path / "b.npy")}
  requests = [{"task": t, "inputs": s} for t, s in
              (("a", "hello"), ("b", "world"), ("a", "prompt tuning"), ("b", "x"))]
  server = serve.PromptServer(CONFIG, "", sources, vocab, batch_size=3, max_input_length=16,
                              max_decode_length=4, params=params)
  mixed = server.answer(requests)
  for task, source in sources.items():
    alone = serve.PromptServer(CONFIG, "", {task: source}, vocab, batch_size=2,
                               max_input_length=16, max_decode_length=4, params=params)
    expected = alone.answer([r for r in requests if r["task"] == task])
    got = [m for m in mixed if m["task"] == task]
    assert [g["prediction"] for g in got] == [e["prediction"] for e in expected]
    np.testing.assert_allclose([g["score"] for g in got], [e["score"] for e in expected],
                               atol=1e-4)
  assert mixed[0]["inputs"] == "hello" and set(mixed[0]) == {"task", "inputs", "prediction",
                                                              "score"}
  # An unknown task is that request's error object, not an exception for the batch.
  (error,) = server.answer([{"task": "c", "inputs": "?", "id": 3}])
  assert set(error) == {"error", "id"} and error["id"] == 3
  assert re.fullmatch(r"unknown task 'c': this server has prompts for \['a', 'b'\]; .*",
                      error["error"])


def test_serve_reads_and_writes_jsonl(params, tmp_path, monkeypatch):
  from ptjax.checkpoints import save_t5x
  checkpoint = save_t5x(params, str(tmp_path / "checkpoint_0"))
  np.save(tmp_path / "a.npy", PROMPTS[0])
  (tmp_path / "in.jsonl").write_text('{"task": "a", "inputs": "hi"}\n\n'
                                     '{"task": "a", "inputs": "there", "id": 7}\n')
  n = serve.serve(model_config=CONFIG, vocabulary=seqio.ByteVocabulary(),
                  initial_checkpoint_path=checkpoint,
                  task_prompts={"a": str(tmp_path / "a.npy")},
                  requests=str(tmp_path / "in.jsonl"), output=str(tmp_path / "out.jsonl"),
                  batch_size=4, max_input_length=8, max_decode_length=3)
  out = [json.loads(l) for l in open(tmp_path / "out.jsonl")]
  assert n == 2 and [o["inputs"] for o in out] == ["hi", "there"] and out[1]["id"] == 7
  # A line that is not JSON is answered with an error object; the stream goes on.
  (tmp_path / "bad.jsonl").write_text('not json\n{"task": "a", "inputs": "there", "id": 7}\n')
  n = serve.serve(model_config=CONFIG, vocabulary=seqio.ByteVocabulary(),
                  initial_checkpoint_path=checkpoint, task_prompts={"a": PROMPTS[0]},
                  requests=str(tmp_path / "bad.jsonl"), output=str(tmp_path / "o.jsonl"),
                  batch_size=4, max_input_length=8, max_decode_length=3)
  bad = [json.loads(l) for l in open(tmp_path / "o.jsonl")]
  assert n == 1 and set(bad[0]) == {"error", "line"} and bad[0]["line"] == 1
  assert bad[0]["error"].startswith("not valid JSON (Expecting value at column 1)")
  assert bad[1] == out[1]
