"""Mixed-task serving (the paper's Figure 2): one frozen model loaded once, any number of
named prompts, and batches whose rows belong to different tasks answered in one forward
pass each (`prompts.MultiPromptT5`).

Python:
  server = PromptServer(config, "ptjax/assets/...", {"boolq": "/runs/boolq",
                        "rte": "rte.npy"}, vocabulary)
  server.answer([{"task": "boolq", "inputs": "..."}, {"task": "rte", "inputs": "..."}])
CLI (gin/runs/serve.gin): JSONL requests {"task": ..., "inputs": ...} in, the same
objects with "prediction" and "score" added out, one line per request line, in order.

A request that cannot be answered (not JSON, not an object, no "task" or "inputs", an
unknown task, "inputs" not a string or empty) gets an error object in its place, and the
other requests of its batch are still answered:
  {"error": "<one line: the problem and the fix>", "line": <n>, "id": <its "id", if any>}
"""

import contextlib
import io
import json
import sys
from typing import Any, Iterable, Iterator, Mapping, Optional, Sequence, Union

import jax
import numpy as np
import seqio

from ptjax import files, prompts
from ptjax.checkpoints import load_checkpoint
from ptjax.model import T5Config, inference

PromptSource = Union[str, np.ndarray]


class PromptServer:
  """Answers requests of many tasks with one frozen model and a prompt per task.

  Inputs are tokenized with `vocabulary`, given EOS and padded to `max_input_length`
  (one compiled program for every batch); batches have `batch_size` rows. Answers are
  decoded as `decoding` says (greedy by default; gin/decoding/*.gin), `decoding`'s
  max_decode_length (MAX_DECODE_LENGTH) tokens, or `max_decode_length` when it is None.
  Sampling draws the n-th batch this server decodes with `decoding.rng(n)`.
  """

  def __init__(self, model_config: T5Config, checkpoint: str,
               task_prompts: Mapping[str, PromptSource], vocabulary: seqio.Vocabulary, *,
               batch_size: int = 32, max_input_length: int = 512,
               max_decode_length: int = 16, params: Optional[Any] = None,
               decoding: inference.DecodingConfig = inference.DecodingConfig()):
    if not task_prompts:
      raise ValueError("PromptServer needs at least one prompt: {task name: .npy, PEFT "
                       "adapter folder, ptjax run folder or [P, embed] array}.")
    self.params = params if params is not None else load_checkpoint(
        checkpoint, model_config, dtype="float32")[1]
    self.tasks = list(task_prompts)
    arrays = [prompts.load_prompt(p) if isinstance(p, str) else np.asarray(p, np.float32)
              for p in task_prompts.values()]
    for task, array in zip(self.tasks, arrays):
      if array.shape[-1] != model_config.emb_dim:
        raise ValueError(f"Prompt for {task!r} is {array.shape}; the model's embed size is "
                         f"{model_config.emb_dim}.")
    self.prompt_table = prompts.stack_prompts(arrays)
    self.vocabulary = vocabulary
    self.batch_size, self.max_input_length = batch_size, max_input_length
    self.model = prompts.MultiPromptT5(model_config)
    self.decoding = decoding
    self._generate = decoding.jit_generate(self.model, decoding.length(max_decode_length))
    self._batches = 0  # Batches decoded so far: the sampling key of the next one.

  def _tokens(self, text: str) -> np.ndarray:
    return np.asarray(list(self.vocabulary.encode(text))[:self.max_input_length - 1] + [1],
                      np.int32)  # EOS.

  def answer(self, requests: Sequence[Any]) -> list[dict]:
    """[{'task', 'inputs', ...}] -> one dict per request, in order: the request with
    'prediction' and 'score' (the answer's log-likelihood; beam search: its
    length-normalised score) added, or, for a request that cannot be answered, an error object {'error': one line naming the problem and the
    fix, 'id': the request's 'id' if it has one}. Rows of any tasks share each forward pass;
    a bad request never stops the others."""
    out: list[Optional[dict]] = [None] * len(requests)
    rows, tasks, answered = [], [], []
    for i, request in enumerate(requests):
      problem = request_problem(request, self.tasks)
      if problem is None:
        try:
          rows.append(self._tokens(request["inputs"]))
        except Exception as e:  # pylint: disable=broad-except
          problem = (f'"inputs" could not be tokenized ({_one_line(e)}); send the text as '
                     f"plain UTF-8")
      if problem is not None:
        out[i] = error_object(problem, request)
      else:
        tasks.append(request["task"])
        answered.append(i)
    if rows:
      texts, scores = self.decode(rows, tasks)
      for i, text, score in zip(answered, texts, scores):
        out[i] = {**requests[i], "prediction": text, "score": score}
    return out

  def decode(self, token_rows: Sequence[np.ndarray],
             tasks: Sequence[str]) -> tuple[list[str], list[float]]:
    """Already tokenized inputs (each [length] ids ending in EOS, length <=
    max_input_length), row i under the prompt of tasks[i] -> (decoded texts, their
    scores). For a task's own preprocessed examples (sentinels, task indices)."""
    texts, scores = [], []
    for start in range(0, len(token_rows), self.batch_size):
      chunk = token_rows[start:start + self.batch_size]
      tokens = np.zeros((self.batch_size, self.max_input_length), np.int32)
      ids = np.zeros((self.batch_size,), np.int32)
      for row, (x, task) in enumerate(zip(chunk, tasks[start:start + self.batch_size])):
        if len(x) > self.max_input_length:
          raise ValueError(f"Input row {start + row} has {len(x)} tokens; this server takes "
                           f"at most max_input_length={self.max_input_length}.")
        tokens[row, :len(x)], ids[row] = x, self.tasks.index(task)
      variables = prompts.variables_for(self.params, self.prompt_table, ids)
      decoded, logp = jax.device_get(self._generate(
          variables, tokens, rng=self.decoding.rng(self._batches)))
      self._batches += 1
      texts += [self.vocabulary.decode([int(t) for t in decoded[row] if t > 1])
                for row in range(len(chunk))]
      scores += [float(logp[row]) for row in range(len(chunk))]
    return texts, scores


def _one_line(error: BaseException) -> str:
  return " ".join(f"{type(error).__name__}: {error}".split())


def _shorten(value: Any, limit: int = 60) -> str:
  text = repr(value)
  return text if len(text) <= limit else text[:limit - 3] + "..."


_JSON_KINDS = {list: "a JSON array", type(None): "null", bool: "a JSON boolean",
               str: "a JSON string", int: "a JSON number", float: "a JSON number"}
REQUEST_FORMAT = '{"task": ..., "inputs": "..."}'


def request_problem(request: Any, tasks: Sequence[str]) -> Optional[str]:
  """Why `request` cannot be answered by a server with prompts for `tasks` (one line:
  the problem and the fix), or None when it can."""
  if not isinstance(request, dict):
    kind = _JSON_KINDS.get(type(request), type(request).__name__)
    return (f"the request is {kind}, not a JSON object; send one object per line: "
            f"{REQUEST_FORMAT}")
  if "task" not in request:
    return f'the request has no "task"; add "task": one of {list(tasks)}'
  task = request["task"]
  if not isinstance(task, str) or task not in tasks:
    return (f"unknown task {_shorten(task)}: this server has prompts for {list(tasks)}; "
            f"ask for one of them, or restart serve with a prompt for it in TASK_PROMPTS")
  if "inputs" not in request:
    return f'the request has no "inputs"; add the input text: {REQUEST_FORMAT}'
  inputs = request["inputs"]
  if not isinstance(inputs, str):
    kind = _JSON_KINDS.get(type(inputs), "a JSON object")
    return f'"inputs" is {kind}, not a string; send the input text as one JSON string'
  if not inputs.strip():
    return '"inputs" is empty; send the text the model should answer'
  try:
    inputs.encode("utf-8")
  except UnicodeEncodeError as e:
    return (f'"inputs" holds a lone surrogate escape ({inputs[e.start]!r} at character '
            f"{e.start + 1}); send valid Unicode text")
  return None


def error_object(problem: str, request: Any = None, line: Optional[int] = None) -> dict:
  """{'error': problem, 'line': line (if given), 'id': the request's 'id' (if it has
  one)}: what serve writes in place of an answer."""
  out = {"error": " ".join(problem.split())}
  if line is not None:
    out["line"] = line
  if isinstance(request, dict) and "id" in request:
    out["id"] = request["id"]
  return out


def _parse(raw: Union[str, bytes]) -> tuple[Any, Optional[str]]:
  """A JSONL line -> (request, None), or (None, the problem) when it is not JSON."""
  if isinstance(raw, bytes):
    try:
      raw = raw.decode("utf-8")
    except UnicodeDecodeError as e:
      return None, (f"the line is not UTF-8 text (byte {e.start + 1}); send UTF-8 JSON, one "
                    f"object per line: {REQUEST_FORMAT}")
  try:
    return json.loads(raw.lstrip("\ufeff")), None  # A byte-order mark is not the request.
  except json.JSONDecodeError as e:
    return None, (f"not valid JSON ({e.msg} at column {e.colno}); send one JSON object per "
                  f"line: {REQUEST_FORMAT}")
  except RecursionError:
    return None, f"JSON nested too deeply; send one flat object per line: {REQUEST_FORMAT}"


def answer_lines(server: PromptServer, lines: Iterable[Union[str, bytes]]) -> Iterator[dict]:
  """JSONL request lines -> one answer or error object per non-blank line, in order
  (error objects carry the 1-based `line`). Requests are answered in batches of the
  server's batch_size as the lines arrive; nothing a line holds stops the stream."""
  pending: list[tuple[int, Any, Optional[str]]] = []   # (line, request, problem)

  def flush():
    good = [(n, r) for n, r, problem in pending if problem is None]
    try:
      answers = iter(server.answer([r for _, r in good]))
    except Exception as e:  # pylint: disable=broad-except
      # The model failed on this batch: its requests get the error, later batches go on.
      problem = (f"the server failed on this request's batch ({_one_line(e)}); send it again, "
                 f"and report the error if it persists")
      answers = iter([error_object(problem, r) for _, r in good])
    for n, request, problem in pending:
      if problem is not None:
        yield error_object(problem, request, n)
        continue
      out = next(answers)
      if "error" in out and "prediction" not in out:
        out = error_object(out["error"], request, n)
      yield out
    pending.clear()

  for n, raw in enumerate(lines, 1):
    if not raw.strip():
      continue
    request, problem = _parse(raw)
    pending.append((n, request, problem))
    if sum(problem is None for _, _, problem in pending) >= server.batch_size:
      yield from flush()
  if pending:
    yield from flush()


def serve(*, model_config: T5Config, vocabulary: seqio.Vocabulary,
          initial_checkpoint_path: str, task_prompts: Mapping[str, str],
          requests: str = "-", output: str = "-", batch_size: int = 32,
          max_input_length: int = 512, max_decode_length: int = 16,
          decoding: inference.DecodingConfig = inference.DecodingConfig()) -> int:
  """Reads JSONL requests (a path, or '-' for stdin) and writes JSONL answers (a path, or
  '-' for stdout), one line per request, in order, each batch as soon as it is answered; a
  request that cannot be answered gets an error object (`answer_lines`). Returns the number
  answered (error objects not counted; their count goes to stderr). Answers are decoded as
  `decoding` says (gin: DECODING_METHOD, gin/decoding/*.gin; its MAX_DECODE_LENGTH, when
  set, replaces `max_decode_length`)."""
  server = PromptServer(model_config, initial_checkpoint_path, task_prompts, vocabulary,
                        batch_size=batch_size, max_input_length=max_input_length,
                        max_decode_length=max_decode_length, decoding=decoding)
  answered = errors = 0
  remote_output = output != "-" and files.is_remote(output)
  with contextlib.ExitStack() as stack:
    # Bytes: a line that is not UTF-8 is that line's error, not the end of the stream.
    source = (getattr(sys.stdin, "buffer", sys.stdin) if requests == "-"
              else stack.enter_context(files.open_read(requests, binary=True)))
    # A gs:// output is one object: uploaded whole when the requests end (or fail).
    sink = (sys.stdout if output == "-" else io.StringIO() if remote_output
            else stack.enter_context(open(output, "w")))
    if remote_output:
      stack.callback(lambda: files.write_text(output, sink.getvalue()))
    for out in answer_lines(server, source):
      sink.write(json.dumps(out) + "\n")
      if "error" in out and "prediction" not in out:
        errors += 1
      else:
        answered += 1
      sink.flush()
  if errors:
    print(f"serve: answered {answered} requests; {errors} got an error object (see their "
          f'"error" and "line").', file=sys.stderr, flush=True)
  return answered
