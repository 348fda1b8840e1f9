"""MIXTURE_OR_TASK_MODULE: the official task modules (not installable) map to ptjax's tasks
in one line; any other module that cannot be imported is a one-line error."""

import pytest
import seqio

from ptjax.train import utils


def test_official_task_module_maps_to_ptjax_tasks(capsys):
  import ptjax.data.tasks  # noqa: F401  (registers the tasks and their official names)
  from ptjax.data import pipeline
  utils.import_task_module("prompt_tuning.data.glue")
  out = capsys.readouterr().out
  assert out.count("\n") == 1 and "'prompt_tuning.data.glue' is not installed" in out
  assert pipeline.get_task("taskless_glue_sst2_v200_examples").name == \
      seqio.get_mixture_or_task("pt_glue_sst2_v002_taskless").name


def test_another_missing_module_is_one_line_error():
  with pytest.raises(ValueError, match=r"MIXTURE_OR_TASK_MODULE='my_tasks_nope' cannot be "
                                       r"imported .*PYTHONPATH"):
    utils.import_task_module("my_tasks_nope")
