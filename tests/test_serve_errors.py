"""Serving a stream that holds bad requests (issue 15): every request line gets its answer
or an error object naming the problem and the fix, in order; the good requests of the
same batches are answered exactly as in a stream of only good requests. Through ptjax.serve
in-process, with the shipped mini T5."""

import io
import json
import re
import sys

import numpy as np
import pytest

from ptjax import assets, serve
from ptjax.data import mini_tasks
from ptjax.model import config as presets

CONFIG = presets.preset("mini_large")
PROMPTS = {task: np.random.default_rng(k).uniform(-0.5, 0.5, (4, CONFIG.emb_dim)).astype(
    np.float32) for k, task in enumerate(("rte", "boolq"))}
SETTINGS = dict(batch_size=2, max_input_length=48, max_decode_length=4)
GOOD = [{"task": "rte", "inputs": "Ana Bel lives in Orvik. Claim: Ana Bel lives in Orvik.",
         "id": "g1"},
        {"task": "boolq", "inputs": "Ana Bel works at Kestrel. Does Ana Bel work at Kestrel?"},
        {"task": "rte", "inputs": "Ana Bel works at Kestrel. Claim: Ana Bel lives in Dunmore.",
         "id": 3},
        {"task": "boolq", "inputs": "Is Orvik on a river?"}]
TASKS = r"\['rte', 'boolq'\]"
# (request line, its "id" if any, the error it gets).
BAD = [
    (b"not json", None, r"not valid JSON \(Expecting value at column 1\); send one JSON "
                        r'object per line: \{"task": \.\.\., "inputs": "\.\.\."\}'),
    (b'[{"task": "rte", "inputs": "x"}]', None,
     r"the request is a JSON array, not a JSON object; send one object per line: .*"),
    (b"null", None, r"the request is null, not a JSON object; .*"),
    (b"42", None, r"the request is a JSON number, not a JSON object; .*"),
    (b'"rte"', None, r"the request is a JSON string, not a JSON object; .*"),
    (b'{"inputs": "x", "id": 5}', 5, r'the request has no "task"; add "task": one of ' + TASKS),
    (b'{"task": "rte", "id": "b"}', "b", r'the request has no "inputs"; add the input text: .*'),
    (b'{"task": "cb", "inputs": "x"}', None,
     r"unknown task 'cb': this server has prompts for " + TASKS + r"; ask for one of them, .*"),
    (b'{"task": ["rte"], "inputs": "x"}', None, r"unknown task \['rte'\]: .*"),
    (b'{"task": "rte", "inputs": 5, "id": [1]}', [1],
     r'"inputs" is a JSON number, not a string; send the input text as one JSON string'),
    (b'{"task": "rte", "inputs": null}', None, r'"inputs" is null, not a string; .*'),
    (b'{"task": "rte", "inputs": {"text": "x"}}', None, r'"inputs" is a JSON object, not a .*'),
    (b'{"task": "rte", "inputs": "  "}', None, r'"inputs" is empty; send the text .*'),
    (b'{"task": "rte", "inputs": "a \\ud800 b"}', None,
     r'"inputs" holds a lone surrogate escape .*; send valid Unicode text'),
    (b'\xff{"task": "rte", "inputs": "x"}', None, r"the line is not UTF-8 text \(byte 1\); .*"),
    (b'{"task": "rte", "inputs": "x"', None, r"not valid JSON \(Expecting ',' delimiter .*"),
]


def line(request: dict) -> bytes:
  return json.dumps(request).encode()


@pytest.fixture(scope="module")
def server():
  return serve.PromptServer(CONFIG, assets.MINI_T5_CHECKPOINT, PROMPTS,
                            mini_tasks.mini_vocabulary(), **SETTINGS)


@pytest.fixture(scope="module")
def good_only(server):
  """What a stream of only the good requests gets."""
  out = list(serve.answer_lines(server, [line(r) for r in GOOD]))
  assert [set(o) - set(r) for o, r in zip(out, GOOD)] == [{"prediction", "score"}] * len(GOOD)
  return out


def assert_same_answers(got: list, want: list):
  assert [{k: v for k, v in g.items() if k != "score"} for g in got] == [
      {k: v for k, v in w.items() if k != "score"} for w in want]
  np.testing.assert_allclose([g["score"] for g in got], [w["score"] for w in want],
                             atol=1e-5)


def test_two_good_and_one_bad_request_get_two_answers_and_one_error(server, good_only):
  """The issue's report: the bad request no longer takes the good ones down with it."""
  out = server.answer([GOOD[0], {"task": "rte"}, GOOD[1]])
  assert out[1] == {"error": 'the request has no "inputs"; add the input text: '
                             '{"task": ..., "inputs": "..."}'}
  assert_same_answers([out[0], out[2]], good_only[:2])


def test_serve_answers_every_line_of_a_stream_with_bad_requests(good_only, capsys,
                                                                monkeypatch):
  # Bad lines before, between and after the good ones, blank lines too; batches of 2.
  lines = [BAD[0][0], line(GOOD[0]), b""]
  lines += [bad for bad, _, _ in BAD[1:8]] + [line(GOOD[1]), line(GOOD[2])]
  lines += [bad for bad, _, _ in BAD[8:]] + [b"   ", line(GOOD[3]), BAD[0][0]]
  monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b"\n".join(lines) + b"\n")))
  n = serve.serve(model_config=CONFIG, vocabulary=mini_tasks.mini_vocabulary(),
                  initial_checkpoint_path=assets.MINI_T5_CHECKPOINT, task_prompts=PROMPTS,
                  requests="-", output="-", **SETTINGS)
  captured = capsys.readouterr()
  out = [json.loads(l) for l in captured.out.splitlines()]
  expected = {**{line(g): ("answer", g) for g in GOOD},
              **{bad: ("error", (i, pattern)) for bad, i, pattern in BAD}}
  numbered = [(k, raw) for k, raw in enumerate(lines, 1) if raw.strip()]
  assert n == len(GOOD) and len(out) == len(numbered)  # One line out per request line.
  answers = []
  for (k, raw), got in zip(numbered, out):
    kind, what = expected[raw]
    if kind == "answer":
      answers.append(got)
      continue
    request_id, pattern = what
    assert got["line"] == k, (raw, got)
    assert set(got) == ({"error", "line"} | ({"id"} if request_id is not None else set()))
    assert got.get("id") == request_id
    assert "\n" not in got["error"] and re.fullmatch(pattern, got["error"]), (raw, got)
  assert_same_answers(answers, good_only)
  assert f"answered {len(GOOD)} requests; {len(out) - len(GOOD)} got an error object" \
      in captured.err


def test_a_batch_the_model_fails_on_is_that_batchs_errors(server, good_only, monkeypatch):
  real = server.decode
  calls = []

  def flaky(rows, tasks):
    calls.append(len(rows))
    if len(calls) == 1:
      raise RuntimeError("device lost\nsecond line")
    return real(rows, tasks)
  monkeypatch.setattr(server, "decode", flaky)
  out = list(serve.answer_lines(server, [line(g) for g in GOOD]))
  assert calls == [2, 2]
  assert out[0] == {"error": "the server failed on this request's batch (RuntimeError: device "
                             "lost second line); send it again, and report the error if it "
                             "persists", "line": 1, "id": "g1"}
  assert set(out[1]) == {"error", "line"} and out[1]["line"] == 2
  assert_same_answers(out[2:], good_only[2:])
