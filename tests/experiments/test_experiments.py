"""Experiment grids: the paper's full grid as command lines, one tiny mini-world cell of
every grid run end to end through the CLI, tables against hand-computed values."""

import contextlib
import csv
import io
import json
import os
import shlex
import shutil

import numpy as np
import pytest

from ptjax import assets
from ptjax.analysis import tables
from ptjax.experiments import __main__ as cli
from ptjax.experiments import grids, runner
from ptjax.train import gin_utils



def run_cli(*argv) -> str:
  out = io.StringIO()
  with contextlib.redirect_stdout(out):
    assert cli.main(list(argv)) == 0
  return out.getvalue()


def test_list_prints_the_full_paper_grid_as_runnable_commands(tmp_path):
  text = run_cli("list", "all", f"--root={tmp_path}")
  # Hand count: 5 sizes; 8 SuperGLUE tasks; 3 seeds (prompt design: 1).
  expected = {"fig1_scale": 5 * 8 * (2 * 3 + 1), "fig3a_prompt_length": 5 * 8 * 5 * 3,
              "fig3b_init": 5 * 8 * 3 * 3, "fig3c_objective": 5 * 8 * 3 * 3,
              "fig3d_lm_adaptation_steps": 5 * 4 * 8 * 3, "table1_squad_to_mrqa": 2 * 3,
              "table2_qqp_mrpc": 2 * 2 * 3, "table3_ensemble": 8 * 3}
  runs = {"fig3d_lm_adaptation_steps": 480 + 5 * 2, "table3_ensemble": 24 * 6}
  headers = [l for l in text.splitlines() if l.startswith("# ")]
  for (grid, cells), header in zip(expected.items(), headers):
    assert header.startswith(f"# {grid}: {cells} cells (t5)")
  commands = [l for l in text.splitlines() if l and not l.startswith("#")]
  assert len(commands) == sum(runs.get(g, c) for g, c in expected.items())
  model_dirs = []
  for line in commands:
    argv = shlex.split(line)
    assert argv[:3] == ["python", "-m", "ptjax.main"]
    for arg in argv[3:]:
      if arg.startswith("--gin_file="):
        assert os.path.exists(gin_utils.resolve(arg.split("=", 1)[1])), arg
      else:
        assert arg.startswith("--gin.") and "=" in arg, arg
    model_dirs.append([a for a in argv if a.startswith("--gin.MODEL_DIR=")][0])
  assert len(set(model_dirs)) == len(model_dirs)  # One MODEL_DIR per run.


def test_paper_cells_are_the_papers_setups(tmp_path):
  def bindings(cell, i=-1):
    return dict(cell.runs[i].bindings)
  fig3c = grids.expand("fig3c_objective", root=str(tmp_path), sizes=["base"],
                       tasks=["pt_super_glue_rte_v102_taskless"], seeds=[0])
  by = {dict(c.coords)["objective"]: bindings(c) for c in fig3c}
  assert by["span_corruption_plus_sentinel"]["MIXTURE_OR_TASK_NAME"] == \
      "'pt_super_glue_rte_v102_taskless_sentinel'"
  assert "t5_1_1_base/checkpoint_1000000" in by["span_corruption"]["INITIAL_CHECKPOINT_PATH"]
  assert "t5_1_1_lm100k_base" in by["lm_adaptation"]["INITIAL_CHECKPOINT_PATH"]
  assert by["lm_adaptation"]["PROMPT_LENGTH"] == "100"
  assert by["lm_adaptation"]["CLASS_LABELS"] == "['entailment', 'not_entailment']"
  fig3d = grids.expand("fig3d_lm_adaptation_steps", root=str(tmp_path), sizes=["small"],
                       tasks=["pt_super_glue_rte_v102_taskless"], seeds=[0])
  cell = [c for c in fig3d if dict(c.coords)["lm_adaptation_steps"] == "10000"][0]
  adapt, tune = bindings(cell, 0), bindings(cell, 1)
  assert adapt["MIXTURE_OR_TASK_NAME"] == "'pt_c4_prefix_lm'" and adapt["TRAIN_STEPS_RELATIVE"] == "10000"
  assert tune["INITIAL_CHECKPOINT_PATH"] == repr(cell.runs[0].model_dir + "/checkpoint_1010000")
  wsc = grids.expand("fig1_scale", root=str(tmp_path), sizes=["xxl"], seeds=[0],
                     tasks=["pt_super_glue_wsc_v102_simple_train_taskless"])
  assert bindings(wsc[0])["train_eval/utils.DatasetConfig.mixture_or_task_name"] == \
      "'pt_super_glue_wsc_v102_simple_eval_taskless'"
  with pytest.raises(ValueError, match="Sizes \\['huge'\\] are not in the t5 family"):
    grids.expand("fig1_scale", sizes=["huge"])
  with pytest.raises(ValueError, match="Unknown grid 'fig9'"):
    grids.expand("fig9")


TINY = ["--family=mini", "--sizes=large", "--tasks=pt_mini_rte_taskless", "--seeds=0",
        "--set=TRAIN_STEPS_RELATIVE=2", "--set=EVAL_PERIOD=2", "--set=SAVING_PERIOD=2",
        "--set=BATCH_SIZE=4", "--set=MAX_EVAL_EXAMPLES=8", "--ensemble_size=2",
        "--adaptation_steps=2"]
ONE_CELL = {"fig1_scale": "method=prompt_tuning", "fig3a_prompt_length": "prompt_length=5/",
            "fig3b_init": "init=sampled_vocab", "fig3c_objective": "plus_sentinel",
            "fig3d_lm_adaptation_steps": ".", "table1_squad_to_mrqa": "method=prompt_tuning",
            "table2_qqp_mrpc": "qqp_to_mrpc/method=prompt_tuning", "table3_ensemble": "."}


@pytest.fixture(scope="module")
def tiny_grids(tmp_path_factory):
  """One tiny cell of every grid, run through the CLI on the shipped mini T5 (standing in
  for the span-corruption checkpoint too)."""
  root = tmp_path_factory.mktemp("experiments")
  pretrain = root / "pretrain"
  # The shipped model (step 500) re-saved at step 1500, as span corruption's checkpoint is.
  from ptjax.checkpoints import load_checkpoint, save_t5x
  _, params = load_checkpoint(assets.MINI_T5_CHECKPOINT)
  save_t5x(params, str(pretrain / "mini_large" / "span_corruption" / "checkpoint_1500"),
           step=1500)
  with pytest.MonkeyPatch.context() as mp:
    mp.setenv("PTJAX_PRETRAIN_ROOT", str(pretrain))
    mp.setenv("JAX_PLATFORMS", "cpu")
    outputs = {g: run_cli("run", g, f"--root={root}", f"--cells={c}", *TINY)
               for g, c in ONE_CELL.items()}
    again = "".join(run_cli("run", g, f"--root={root}", f"--cells={c}", *TINY)
                    for g, c in ONE_CELL.items())
    status = run_cli("status", "fig3d_lm_adaptation_steps", f"--root={root}", *TINY)
    table_out = {g: run_cli("table", g, f"--root={root}", f"--out={root}/tables",
                            f"--cells={c}", *TINY) for g, c in ONE_CELL.items()}
  return root, outputs, again, status, table_out


def test_one_tiny_cell_of_each_grid_runs_end_to_end(tiny_grids):
  root, outputs, again, status, _ = tiny_grids
  for grid, out in outputs.items():
    results = runner.load_results(str(root), grid)
    assert len(results) == 1, (grid, out)
    assert "runs done; 0 of 1 cells were already finished" in out
  # Resumable: the second pass finds every cell finished and runs nothing.
  assert again.count("0 runs done") == len(ONE_CELL)
  assert "1 done, 0 started, 0 pending of 1" in status
  fig3d = runner.load_results(str(root), "fig3d_lm_adaptation_steps")[0]
  adaptation = root / "fig3d_lm_adaptation_steps" / "adaptation" / "size=large" / "steps=2"
  assert (adaptation / "checkpoint_1502" / "checkpoint").exists()  # Absolute: 1500 + 2.
  assert fig3d["coords"]["lm_adaptation_steps"] == "2"
  fig3c = runner.load_results(str(root), "fig3c_objective")[0]
  rows = [json.loads(l) for l in open(os.path.join(
      root, "fig3c_objective", *fig3c["cell"].split("/"), "metrics.jsonl"))]
  assert fig3c["metrics"] == [r for r in rows if r["kind"] == "eval"][-1]
  # Tables 1-2: in domain and zero-shot evaluated together; checkpoints chosen in domain.
  table1 = runner.load_results(str(root), "table1_squad_to_mrqa")[0]
  assert {"pt_mini_squad_taskless/f1", "pt_mini_squad_ood_taskless/f1"} <= set(table1["metrics"])
  table2 = runner.load_results(str(root), "table2_qqp_mrpc")[0]
  assert {"pt_mini_qqp_taskless/accuracy",
          "pt_mini_mrpc_from_qqp_taskless/accuracy"} <= set(table2["metrics"])
  for result, best in ((table1, "pt_mini_squad_taskless/f1"),
                       (table2, "pt_mini_qqp_taskless/accuracy")):
    folder = os.path.join(root, result["grid"], *result["cell"].split("/"))
    assert f"BEST_METRIC = '{best}'" in open(os.path.join(folder, "config.gin")).read()
    assert json.load(open(os.path.join(folder, "best", "best.json")))["metric"] == best
  ensemble = runner.load_results(str(root), "table3_ensemble")[0]["metrics"]
  assert len(ensemble["members"]) == 2
  assert ensemble["average"]["accuracy"] == pytest.approx(
      np.mean([m["accuracy"] for m in ensemble["members"]]))


def test_a_run_shared_by_grids_runs_once(tiny_grids):
  root, outputs, _, _, _ = tiny_grids
  # Table 3's first member is Figure 1's prompt-tuning run (same gin, same seed).
  assert "1 identical runs of other grids reused" in outputs["table3_ensemble"]
  assert "reused" not in outputs["fig1_scale"]
  fig1 = root / "fig1_scale" / "size=large" / "task=pt_mini_rte_taskless" / \
      "method=prompt_tuning" / "seed_0"
  member = root / "table3_ensemble" / "size=large" / "task=pt_mini_rte_taskless" / "seed_0" / \
      "prompt_0"
  assert not member.is_symlink() and not (member / "cell.json").exists()
  assert (member / "metrics.jsonl").read_text() == (fig1 / "metrics.jsonl").read_text()
  assert json.loads((fig1 / "cell.json").read_text())["coords"]["method"] == "prompt_tuning"
  # Copies, never hard links: writing into the reused run cannot change the original.
  copied = [p for p in fig1.rglob("*") if p.is_file() and p.name != "cell.json"]
  assert copied and not any(os.path.samefile(p, member / p.relative_to(fig1)) for p in copied)
  assert all((member / p.relative_to(fig1)).read_bytes() == p.read_bytes() for p in copied)
  # Figure 1's seed 1 is the second member of Table 3's seed-0 ensemble: found, though
  # Table 3 for seed 1 alone would be other prompts (seeds 2 and 3 here).
  plan = run_cli("run", "fig1_scale", f"--root={root}", "--cells=method=prompt_tuning",
                 "--dry_run", *TINY, "--seeds=1")
  assert f"# reuses {member.parent / 'prompt_1'}\n" in plan


def test_tables_of_the_tiny_cells_hold_their_metrics(tiny_grids):
  root, _, _, _, table_out = tiny_grids
  fig1 = runner.load_results(str(root), "fig1_scale")[0]["metrics"]
  score = np.mean([fig1["accuracy"], fig1["macro_f1"]])
  assert f"| large | {score:.1f} |" in table_out["fig1_scale"]
  with open(root / "tables" / "fig1_scale.csv") as f:
    row = next(csv.DictReader(f))
  assert float(row["score_mean"]) == pytest.approx(score)
  for grid in tables.FIGURE_AXES:
    assert (root / "tables" / f"{grid}.png").stat().st_size > 1000
  assert "94.8 ± 0.1" in table_out["table1_squad_to_mrqa"]  # The paper's SQuAD row beside.
  assert "76.3 ± 0.1" in table_out["table2_qqp_mrpc"]  # The paper's QQP->MRPC prompt row.


def _result(coords, seed, metrics):
  return {"coords": coords, "seed": seed, "metrics": metrics}


def test_figure_table_is_mean_over_tasks_then_mean_std_over_seeds():
  results = [
      _result({"size": "small", "task": "a", "method": "prompt_tuning"}, 0, {"accuracy": 60.0}),
      _result({"size": "small", "task": "b", "method": "prompt_tuning"}, 0,
              {"accuracy": 70.0, "f1": 90.0, "loss": 3.0}),
      _result({"size": "small", "task": "a", "method": "prompt_tuning"}, 1, {"accuracy": 50.0}),
      _result({"size": "small", "task": "b", "method": "prompt_tuning"}, 1, {"accuracy": 70.0}),
  ]
  # Seed 0: mean(60, mean(70, 90)) = 70; seed 1: mean(50, 70) = 60 -> 65 +- std(70, 60).
  text, rows = tables.grid_table("fig1_scale", results)
  assert f"| small | 65.0 ± {np.std([70, 60], ddof=1):.1f} |" in text
  assert rows[0]["score_mean"] == 65.0 and rows[0]["seeds"] == 2


def test_tables_1_and_2_split_zero_shot_from_in_domain():
  results = [
      _result({"transfer": "qqp_to_mrpc", "method": "prompt_tuning"}, seed,
              {"pt_mini_qqp_taskless/accuracy": qqp, "pt_mini_qqp_taskless/f1": 1.0,
               "pt_mini_mrpc_from_qqp_taskless/accuracy": mrpc,
               "pt_mini_mrpc_from_qqp_taskless/f1": 70.0, "average_score": 5.0})
      for seed, qqp, mrpc in ((0, 90.0, 60.0), (1, 80.0, 70.0))]
  text, rows = tables.grid_table("table2_qqp_mrpc", results)
  std = f"{np.std([60, 70], ddof=1):.1f}"
  assert (f"| qqp_to_mrpc | prompt_tuning | 65.0 ± {std} | 70.0 ± 0.0 | 76.3 ± 0.1 | "
          f"84.3 ± 0.3 | 85.0 ± {std} |") in text
  assert rows[0]["in_domain_accuracy_mean"] == 85.0 and rows[0]["seeds"] == 2
  # Table 1: in domain first; beside the out-of-domain set, the mean of the paper's six
  # out-of-domain sets (a mean over sets: no ± of runs).
  text, rows = tables.grid_table("table1_squad_to_mrqa", [_result(
      {"method": "model_tuning"}, 0,
      {"pt_mini_squad_ood_taskless/f1": 2.0, "pt_mini_squad_taskless/f1": 50.0})])
  assert text.index("| pt_mini_squad_taskless | 50.0 | - | 94.9 ± 0.2 | 94.8 ± 0.1 |") < \
      text.index("| pt_mini_squad_ood_taskless | 2.0 | - | 69.7 | 71.7 |")
  assert [r["paper"] for r in rows if r["eval_set"].endswith("ood_taskless")] == \
      pytest.approx([418.2 / 6, 430.2 / 6])


def test_table3_puts_the_papers_row_beside_each_task():
  member = {"accuracy": 80.0}
  results = [_result({"size": "xxl", "task": "pt_super_glue_rte_v102_taskless"}, 0,
                     {"average": {"accuracy": 80.0}, "best": {"accuracy": 82.0},
                      "ensemble": {"accuracy": 84.0}, "members": [member]})]
  text, _ = tables.grid_table("table3_ensemble", results)
  assert "| pt_super_glue_rte_v102_taskless | 80.0 | 82.0 | 84.0 | 92.6 | 93.5 | 93.5 |" in text
  with pytest.raises(ValueError, match="No finished cells of fig3b_init"):
    tables.grid_table("fig3b_init", [])


def test_launch_scripts_run_the_same_cells_on_every_tpu_worker(tmp_path):
  path = tmp_path / "launch.sh"
  run_cli("launch", "fig3a_prompt_length", "--root=gs://bucket/exp", "--sizes=xxl",
          "--target=tpu", "--host=my-v4-64", "--zone=us-central2-b", f"--out={path}")
  script = path.read_text()
  assert os.access(path, os.X_OK)
  assert 'TPU="${TPU:-my-v4-64}"' in script and "--worker=all" in script
  assert "gcloud compute tpus tpu-vm ssh" in script
  remote = shlex.split(script.split("--command ", 1)[1])[0]
  assert 'pip install -e . "jax[tpu]"' in remote
  assert ("python -m ptjax.experiments run fig3a_prompt_length --family=t5 "
          "--root=gs://bucket/exp --seeds=0,1,2 --sizes=xxl "
          "--flags=--initialize_distributed") in remote
  run_cli("launch", "table1_squad_to_mrqa", "--target=gpu", "--host=gpu-box",
          f"--out={tmp_path / 'gpu.sh'}")
  gpu = (tmp_path / "gpu.sh").read_text()
  assert 'HOST="${HOST:-gpu-box}"' in gpu and '"jax[cuda12]"' in gpu and "nohup" in gpu
