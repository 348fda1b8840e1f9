"""A grid's results (cell.json files, `ptjax.experiments.runner`) as the paper's tables:
mean +- std over seeds, with the paper's numbers beside ours (ptjax/assets/paper).

Scores: a task's score is the mean of its quality metrics (SuperGLUE's convention); a
figure's point is the mean over its tasks per seed, then mean +- std over seeds.
"""

import collections
import json
import re
from typing import Optional, Sequence

import numpy as np

from ptjax import assets

NOT_QUALITY = {"kind", "step", "loss", "z_loss", "illegal_predictions", "split", "task",
               "examples", "trainable_parameters"}
FIGURE_AXES = {"fig1_scale": "method", "fig3a_prompt_length": "prompt_length",
               "fig3b_init": "init", "fig3c_objective": "objective",
               "fig3d_lm_adaptation_steps": "lm_adaptation_steps"}


def paper_numbers() -> dict:
  with open(assets.PAPER_NUMBERS) as f:
    return json.load(f)


def quality(metrics: dict, task: Optional[str] = None) -> float:
  """Mean of the quality metrics (of `task` within a mixture's '<task>/<metric>' keys)."""
  if task is not None:
    metrics = {k.split("/", 1)[1]: v for k, v in metrics.items() if k.startswith(task + "/")}
  values = [v for k, v in metrics.items()
            if k not in NOT_QUALITY and "/" not in k and k != "average_score"
            and isinstance(v, (int, float))]
  if not values:
    raise ValueError(f"No quality metric in {sorted(metrics)}.")
  return float(np.mean(values))


def paper_key(task: str) -> str:
  """'pt_super_glue_boolq_v102_taskless' / 'pt_mini_boolq_taskless' -> 'boolq'."""
  name = re.sub(r"^pt_(super_glue_|glue_|mrqa_|mini_)?", "", task)
  name = re.sub(r"_v\d+.*$|_taskless.*$|_simple_.*$", "", name)
  name = name.replace("_", "")
  return {"relationextraction": "re", "squadood": "ood"}.get(name, name)


def mean_std(values: Sequence[float]) -> str:
  if not values:
    return "-"
  if len(values) == 1:
    return f"{values[0]:.1f}"
  return f"{np.mean(values):.1f} ± {np.std(values, ddof=1):.1f}"


def _paper(value) -> str:
  if value is None:
    return "-"
  if isinstance(value, list) and len(value) == 2 and isinstance(value[1], float) and \
      value[1] < 10 and value[0] > 10:
    return f"{value[0]:.1f} ± {value[1]:.1f}"  # [mean, std]
  if isinstance(value, list):
    return " / ".join(f"{v:.1f}" for v in value)
  return f"{value:.1f}"


def _markdown(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
  lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
  lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
  return "\n".join(lines)


def ordered(values):
  """Distinct values sorted as a table reads them: model sizes small..xxl, then numbers
  (prompt lengths, steps) ascending, then names."""
  def key(v):
    sizes = ("tiny", "small", "base", "large", "xl", "xxl")
    return (0, sizes.index(v), "") if v in sizes else (
        (1, float(v), "") if re.fullmatch(r"[\d.]+", v) else (2, 0, v))
  return sorted(set(values), key=key)


def figure_points(results: Sequence[dict], axis: str) -> dict:
  """{(size, axis value): [per-seed mean over tasks]}."""
  per_seed = collections.defaultdict(list)
  for r in results:
    c = r["coords"]
    per_seed[(c["size"], c[axis], r["seed"])].append(quality(r["metrics"]))
  points = collections.defaultdict(list)
  for (size, value, _), scores in sorted(per_seed.items()):
    points[(size, value)].append(float(np.mean(scores)))
  return points


def figure_table(grid: str, results: Sequence[dict]) -> tuple[str, list[dict]]:
  axis = FIGURE_AXES[grid]
  points = figure_points(results, axis)
  sizes = ordered(s for s, _ in points)
  values = ordered(v for _, v in points)
  approx = paper_numbers()["figure1_approximate_unverified"]
  rows, csv = [], []
  for size in sizes:
    rows.append([size] + [mean_std(points.get((size, v), [])) for v in values])
    for v in values:
      if (size, v) in points:
        s = points[(size, v)]
        csv.append({"grid": grid, "size": size, axis: v, "score_mean": np.mean(s),
                    "score_std": np.std(s, ddof=1) if len(s) > 1 else 0.0, "seeds": len(s)})
  text = _markdown(["size"] + [f"{axis}={v}" for v in values], rows)
  tasks = sorted({r["coords"]["task"] for r in results})
  text += (f"\n\nScore: mean over tasks ({', '.join(tasks)}) of each task's mean metric on "
           "the validation split, best evaluation of each run; mean ± std over seeds.")
  if grid == "fig1_scale":
    text += f"\nThe paper (Figure 1, {approx})."
  else:
    text += ("\nThe paper's points are only in its Figure 3; its findings: " +
             _claim_for(grid))
  return text, csv


def _claim_for(grid: str) -> str:
  claims = paper_numbers()["text_anchors"]["claims"]
  word = {"fig3a_prompt_length": "Prompt length", "fig3b_init": "Init",
          "fig3c_objective": "Pre-training objective",
          "fig3d_lm_adaptation_steps": "LM adaptation steps"}[grid]
  return next(c for c in claims if c.startswith(word))


def table1(results: Sequence[dict]) -> tuple[str, list[dict]]:
  """Rows: evaluation sets (in domain first); F1 per tuning method, the paper's beside."""
  paper = {r["dataset"].lower(): r for r in paper_numbers()["table1_squad_to_mrqa_f1"]["rows"]}
  ood = [r for k, r in paper.items() if k != "squad"]
  # A mean over sets, not over runs: no ± to give.
  paper["ood"] = {m: float(np.mean([r[m][0] for r in ood]))
                  for m in ("model_tuning", "prompt_tuning")}
  scores = collections.defaultdict(list)
  for r in results:
    for key in r["metrics"]:
      if key.endswith("/f1"):
        scores[(key[:-3], r["coords"]["method"])].append(r["metrics"][key])
  sets = sorted({t for t, _ in scores}, key=lambda t: (paper_key(t) != "squad", t))
  rows, csv = [], []
  for t in sets:
    p = paper.get(paper_key(t), {})
    rows.append([t] + [mean_std(scores[(t, m)]) for m in ("model_tuning", "prompt_tuning")] +
                [_paper(p.get("model_tuning")), _paper(p.get("prompt_tuning"))])
    for m in ("model_tuning", "prompt_tuning"):
      csv.append({"grid": "table1_squad_to_mrqa", "eval_set": t, "method": m,
                  "f1_mean": np.mean(scores[(t, m)]) if scores[(t, m)] else None,
                  "seeds": len(scores[(t, m)]),
                  "paper": p[m][0] if isinstance(p.get(m), list) else p.get(m)})
  text = _markdown(["eval set", "model tuning F1", "prompt tuning F1", "paper: model tuning",
                    "paper: prompt tuning"], rows)
  text += ("\n\nThe paper: T5-XXL trained on SQuAD, zero-shot on MRQA's out-of-domain sets "
           "(mean ± std over 3 runs); beside a mini set, its analogue (SQuAD; 'ood' = the "
           "mean over the paper's out-of-domain sets).")
  return text, csv


def _split_transfer(metrics: dict) -> tuple[dict, dict]:
  """An evaluation of Table 2's mixture -> ({metric: value} of the training task in domain,
  of the zero-shot target: the task named '..._from_<source>'). Flat metrics (a run
  evaluated on the target alone) are the target's."""
  source, target = {}, {}
  for key, value in metrics.items():
    task, _, metric = key.rpartition("/")
    if metric in ("accuracy", "f1"):
      (target if not task or "_from_" in task else source)[metric] = value
  return source, target


def table2(results: Sequence[dict]) -> tuple[str, list[dict]]:
  """Rows: transfer x method; zero-shot accuracy and F1 on the target (the paper's beside)
  and in-domain accuracy on the training task, on which the checkpoint was chosen."""
  paper = {(r["train_eval"].lower().replace("->", "_to_"), r["tuning"]): r
           for r in paper_numbers()["table2_paraphrase_transfer"]["rows"]}
  scores = collections.defaultdict(lambda: collections.defaultdict(list))
  for r in results:
    c = r["coords"]
    source, target = _split_transfer(r["metrics"])
    for metric, value in target.items():
      scores[(c["transfer"], c["method"])][metric].append(value)
    if "accuracy" in source:
      scores[(c["transfer"], c["method"])]["in_domain"].append(source["accuracy"])
  rows, csv = [], []
  for (transfer, method), s in sorted(scores.items()):
    p = paper.get((transfer, method.split("_")[0]), {})
    rows.append([transfer, method, mean_std(s["accuracy"]), mean_std(s["f1"]),
                 _paper(p.get("accuracy")), _paper(p.get("f1")), mean_std(s["in_domain"])])
    csv.append({"grid": "table2_qqp_mrpc", "transfer": transfer, "method": method,
                "accuracy_mean": np.mean(s["accuracy"]) if s["accuracy"] else None,
                "f1_mean": np.mean(s["f1"]) if s["f1"] else None,
                "in_domain_accuracy_mean": np.mean(s["in_domain"]) if s["in_domain"] else None,
                "seeds": len(s["accuracy"]),
                "paper_accuracy": (p.get("accuracy") or [None])[0],
                "paper_f1": (p.get("f1") or [None])[0]})
  text = _markdown(["transfer", "method", "accuracy", "F1", "paper: accuracy", "paper: F1",
                    "in domain: accuracy"], rows)
  return text + ("\n\nZero-shot: trained on the first task, evaluated on the second; the "
                 "checkpoint is chosen on the first task's validation set (in domain)."), csv


def table3(results: Sequence[dict]) -> tuple[str, list[dict]]:
  paper = {r["task"].lower(): r for r in paper_numbers()["table3_prompt_ensemble_t5_xxl"]["rows"]}
  scores = collections.defaultdict(lambda: collections.defaultdict(list))
  for r in results:
    m = r["metrics"]
    for kind in ("average", "best", "ensemble"):
      scores[r["coords"]["task"]][kind].append(quality(m[kind]))
  rows, csv = [], []
  for task, s in sorted(scores.items()):
    p = paper.get(paper_key(task), {})
    rows.append([task] + [mean_std(s[k]) for k in ("average", "best", "ensemble")] +
                [_paper(p.get(k)) for k in ("average", "best", "ensemble")])
    csv.append({"grid": "table3_ensemble", "task": task,
                **{f"{k}_mean": np.mean(s[k]) for k in ("average", "best", "ensemble")},
                "repeats": len(s["ensemble"]),
                **{f"paper_{k}": json.dumps(p.get(k)) for k in ("average", "best", "ensemble")}})
  text = _markdown(["task", "average prompt", "best prompt", "5-prompt ensemble",
                    "paper: average", "paper: best", "paper: ensemble"], rows)
  return text + ("\n\nFive prompts on one frozen model, majority vote; scores are the mean "
                 "of the task's metrics (the paper: T5-XXL, SuperGLUE dev)."), csv


def grid_table(grid: str, results: Sequence[dict]) -> tuple[str, list[dict]]:
  """(Markdown, CSV rows) of a grid's results in the paper's layout."""
  if not results:
    raise ValueError(f"No finished cells of {grid} yet (no cell.json): run the grid first.")
  if grid in FIGURE_AXES:
    return figure_table(grid, results)
  return {"table1_squad_to_mrqa": table1, "table2_qqp_mrpc": table2,
          "table3_ensemble": table3}[grid](results)
