"""The prompt-design separator survives tokenisation (issue 15): '\\n' encodes exactly like a
space in both SentencePiece vocabularies, so the default is a visible ' ;; ', and the
prompt-design inputs hold it between the instruction, each shot and the input."""

import json

import numpy as np
import pytest
import seqio

from conftest import shared_fixture
from ptjax.data import mini_tasks, pipeline, text_tasks
from ptjax.train import evaluation

SEPARATOR = evaluation.PromptDesign().separator
LENGTHS = {"inputs": 128, "targets": 8}
TRAIN = [("Does Ana Bel live in Orvik?", "yes"), ("Is Orvik on a river?", "no"),
         ("Does Ana Bel work at Kestrel?", "yes")]
INPUT = "Does Ana Bel live in Dunmore?"
INSTRUCTION = "Answer yes or no."


@pytest.fixture(scope="module", params=["t5", "mini"])
def vocab(request):
  if request.param == "t5":
    return seqio.SentencePieceVocabulary(shared_fixture("t5_vocab/sentencepiece.model"), 100)
  return mini_tasks.mini_vocabulary()


@pytest.fixture(scope="module")
def task(vocab, tmp_path_factory):
  folder = tmp_path_factory.mktemp("separator")
  files = {}
  for split, rows in (("train", TRAIN), ("validation", [(INPUT, "no")])):
    files[split] = str(folder / f"{split}.jsonl")
    with open(files[split], "w") as f:
      f.writelines(json.dumps({"inputs": i, "targets": t}) + "\n" for i, t in rows)
  name = text_tasks.text_task("test_prompt_design_separator", files, vocab)
  yield seqio.get_mixture_or_task(name)
  seqio.TaskRegistry.remove(name)


def test_default_separator_is_not_a_space_after_tokenisation(vocab):
  text = f"{INSTRUCTION}{SEPARATOR}{TRAIN[0][0]} yes{SEPARATOR}{INPUT}"
  assert vocab.decode(vocab.encode(text)) == text  # encode(decode) keeps it, visibly.
  assert vocab.encode(vocab.decode(vocab.encode(f"a{SEPARATOR}b"))) != vocab.encode("a b")
  assert vocab.unk_id not in vocab.encode(SEPARATOR)
  # The old default: SentencePiece normalises whitespace, '\n' is a space.
  assert vocab.encode("a\nb") == vocab.encode("a b")


def test_prompt_design_inputs_hold_the_separator_between_shots(vocab, task):
  design = evaluation.PromptDesign(instruction=INSTRUCTION, num_shots=2)
  examples = pipeline.eval_examples(task.name, LENGTHS, "validation")
  (out,) = evaluation._with_demonstrations(task, examples, design, LENGTHS)
  ids = [int(t) for t in out["inputs"]]
  assert ids[-1] == 1  # EOS.
  parts = vocab.decode(ids[:-1]).split(SEPARATOR)
  shots = {f"{i} {t}" for i, t in TRAIN}
  assert len(parts) == 4 and parts[0] == INSTRUCTION and parts[3] == INPUT, parts
  assert parts[1] in shots and parts[2] in shots and parts[1] != parts[2]
  # Token level: the separator's own pieces between the instruction, each shot and the input.
  separator_ids = list(vocab.encode(SEPARATOR))
  want = list(vocab.encode(parts[0]))
  for part in parts[1:]:
    want += separator_ids + list(vocab.encode(part))
  assert ids == want + [1]
  assert out["inputs_pretokenized"].decode() == SEPARATOR.join(parts)


@pytest.mark.parametrize("separator", ["\n", "\n\n", "\t"])
def test_a_separator_that_reads_as_a_space_is_refused(vocab, task, separator):
  examples = pipeline.eval_examples(task.name, LENGTHS, "validation")
  design = evaluation.PromptDesign(instruction=INSTRUCTION, num_shots=1, separator=separator)
  with pytest.raises(ValueError, match=r"tokenizes exactly like a space in "
                                       r"test_prompt_design_separator's vocabulary"):
    evaluation._with_demonstrations(task, examples, design, LENGTHS)
  # Without an instruction or shots there is nothing to separate: inputs unchanged.
  plain = evaluation._with_demonstrations(
      task, examples, evaluation.PromptDesign(separator=separator), LENGTHS)
  np.testing.assert_array_equal(plain[0]["inputs"], examples[0]["inputs"])


def test_unknown_characters_are_refused_in_the_mini_vocabulary():
  design = evaluation.PromptDesign(separator=" | ")
  with pytest.raises(ValueError, match=r"' \| ' has characters pt_mini_rte's vocabulary "
                                       r"does not know"):
    design.check_separator(mini_tasks.mini_vocabulary(), "pt_mini_rte")
  evaluation.PromptDesign().check_separator(mini_tasks.mini_vocabulary(), "pt_mini_rte")
