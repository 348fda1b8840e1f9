r"""python -m ptjax.experiments list|run|status|table|launch GRID [options]

  list    GRID|all          every run of the grid as a command line (the paper's full grid
                            by default); without GRID: the grids and their cell counts
  run     GRID|all          run the unfinished cells here, one after another (resumable);
                            --dry_run prints what would run
  status  GRID|all          done / started / pending cells
  table   GRID|all          Markdown + CSV (+ PNG for figures) in the paper's layout, the
                            paper's numbers beside ours, into --out
  launch  GRID|all          a bash script that installs ptjax and runs the grid on a TPU VM
                            or pod slice (--target=tpu, every worker) or a GPU host

  --family t5|mini  --sizes small,base  --tasks ...  --seeds 0,1,2  --root DIR
  --cells REGEX (only matching cells)  --set NAME=VALUE (gin binding for every run)
See docs/experiments.md.
"""

import argparse
import io
import os
import re
import sys

from ptjax import console

if __name__ == "__main__":
  console.quiet_startup()  # Before TensorFlow is imported (its C++ start-up lines).
  console.silence_storage_retries()

from ptjax import files  # noqa: E402
from ptjax.experiments import families, grids, launch, runner


def _parser() -> argparse.ArgumentParser:
  p = console.ArgumentParser(prog="python -m ptjax.experiments",
                              description=__doc__.split("\n\n")[0],
                              formatter_class=argparse.RawDescriptionHelpFormatter,
                              epilog=__doc__.split("\n", 2)[2])
  p.add_argument("command", choices=("list", "run", "status", "table", "launch"))
  p.add_argument("grid", nargs="?", help=f"one of {sorted(grids.GRIDS)} or 'all'")
  p.add_argument("--family", default="t5", choices=sorted(families.FAMILIES))
  p.add_argument("--root", default="/tmp/ptjax_experiments",
                 help="where every cell's MODEL_DIR goes (a gs:// bucket on TPU)")
  p.add_argument("--sizes", type=lambda s: s.split(","), help="default: the family's ladder")
  p.add_argument("--tasks", type=lambda s: s.split(","), help="default: SuperGLUE(-like)")
  p.add_argument("--seeds", type=lambda s: [int(x) for x in s.split(",")],
                 default=list(grids.SEEDS))
  p.add_argument("--cells", help="regular expression: only cells whose name matches")
  p.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                 help="a gin binding added to every run (e.g. TRAIN_STEPS=100)")
  p.add_argument("--ensemble_size", type=int, default=grids.ENSEMBLE_SIZE)
  p.add_argument("--adaptation_steps", type=lambda s: [int(x) for x in s.split(",")],
                 help="Figure 3d's LM adaptation steps (default: the family's)")
  p.add_argument("--dry_run", action="store_true", help="run: print, do not run")
  p.add_argument("--flags", action="append", default=[],
                 help="a flag for every ptjax.main run (e.g. --flags=--initialize_distributed)")
  p.add_argument("--out", help="table: folder (default ROOT/tables); launch: script path")
  p.add_argument("--target", choices=("tpu", "gpu"), default="tpu")
  p.add_argument("--host", default="", help="launch: TPU name or GPU host")
  p.add_argument("--zone", default="")
  p.add_argument("--project", default="")
  return p


def _cells(args, grid, select=True, seeds=None):
  cells = grids.expand(grid, args.family, args.root, args.sizes, args.tasks,
                       seeds or args.seeds, args.ensemble_size, args.adaptation_steps)
  if args.cells and select:
    cells = [c for c in cells if re.search(args.cells, c.name)]
  bindings = []
  macros = _known_macros()
  for item in args.set:
    name, sep, value = item.partition("=")
    if not sep:
      raise ValueError(f"--set {item!r}: expected NAME=VALUE (a gin binding).")
    name = name.strip()
    # A grid-wide binding may go unread by some runs (--gin_bindings_if_read), so a misspelt
    # macro would be read by none: refused here. (gin refuses unknown configurables itself.)
    if "." not in name and name not in macros:
      raise ValueError(f"--set {name}: no ptjax macro has that name (see "
                       f"ptjax/gin/defaults.gin and docs/coming_from_t5x.md).")
    bindings.append((name, value.strip()))
  return [grids.with_bindings(c, bindings) for c in cells]


def _known_macros() -> set[str]:
  """Every macro ptjax's gin files set (defaults.gin holds them all)."""
  gin_dir = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "gin")
  with open(os.path.join(gin_dir, "defaults.gin")) as f:
    return set(re.findall(r"^([A-Z][A-Z0-9_]*) =", f.read(), re.M))


def _grid_args(args, grid) -> list[str]:
  """The options that select these cells again (for launch scripts)."""
  out = [grid, f"--family={args.family}", f"--root={args.root}",
         f"--seeds={','.join(map(str, args.seeds))}"]
  for name in ("sizes", "tasks"):
    if getattr(args, name):
      out.append(f"--{name}={','.join(getattr(args, name))}")
  if args.cells:
    out.append(f"--cells={args.cells}")
  out += [f"--set={s}" for s in args.set]
  return out


def main(argv=None) -> int:
  args = _parser().parse_args(argv)
  if args.command == "list" and not args.grid:
    for name in grids.GRIDS:
      cells = grids.expand(name, args.family, args.root)
      runs = len({r.model_dir for c in cells for r in c.runs})
      summary = grids.GRIDS[name].__doc__.splitlines()[0]
      print(f"{name}: {len(cells)} cells, {runs} runs  ({summary})")
    return 0
  if not args.grid:
    raise ValueError(f"{args.command} needs a GRID: one of {sorted(grids.GRIDS)} or 'all'.")
  names = list(grids.GRIDS) if args.grid == "all" else [args.grid]
  for name in names:
    cells = _cells(args, name)
    if args.command == "run":
      # Finished runs of every grid (these options), for the points grids share; made
      # anew per grid, as the grids run before it (`run all`) may have finished some.
      # Seeds from 0 up: Figure 1's seed 1 is a member of Table 3's seed-0 ensemble.
      seeds = range(max(args.seeds) + 1)
      finished = runner.finished_runs(
          c for g in grids.GRIDS for c in _cells(args, g, False, seeds))
    if args.command == "list" or (args.command == "run" and args.dry_run):
      # list: the whole grid; run --dry_run: what is left to run.
      plan = runner.unfinished(cells) if args.command == "run" else [
          (c, list(c.runs)) for c in cells]
      print(f"# {name}: {len(cells)} cells ({args.family}), {len(plan)} to run")
      printed = set()
      for _, runs in plan:
        for run in runs:
          if run.model_dir not in printed:
            printed.add(run.model_dir)
            source = args.command == "run" and finished.get(runner.signature(run))
            if source and source != run.model_dir:
              print(f"# reuses {source}")
            print(" ".join([run.command(), *args.flags]))
    elif args.command == "run":
      counts = runner.run_cells(cells, flags=args.flags, finished=finished)
      print(f"{name}: {counts['runs']} runs done; {counts['skipped']} of {counts['cells']} "
            "cells were already finished." +
            (f" {counts['reused']} identical runs of other grids reused." if counts["reused"]
             else ""))
    elif args.command == "status":
      s = runner.status(cells)
      print(f"{name}: {len(s['done'])} done, {len(s['started'])} started, "
            f"{len(s['pending'])} pending of {len(cells)}")
      for cell in s["started"]:
        print(f"  started: {cell}")
    elif args.command == "table":
      _table(args, name, cells)
    elif args.command == "launch":
      # One script for the whole selection (`launch all`: one `run all` on every worker), with
      # every option that selects or runs the cells; checked before anything is written.
      grid_args = _grid_args(args, args.grid)
      if args.ensemble_size != grids.ENSEMBLE_SIZE:
        grid_args.append(f"--ensemble_size={args.ensemble_size}")
      if args.adaptation_steps:
        grid_args.append(f"--adaptation_steps={','.join(map(str, args.adaptation_steps))}")
      grid_args += [f"--flags={f}" for f in args.flags]
      path = args.out or f"launch_{args.grid}_{args.target}.sh"
      launch.write_script(path, launch.launch_script(
          grid_args, args.target, host=args.host, zone=args.zone, project=args.project))
      print(f"wrote {path}")
      break
  return 0


def _table(args, grid, cells):
  import csv

  from ptjax.analysis import figures, tables
  wanted = {c.name for c in cells}
  results = [r for r in runner.load_results(args.root, grid) if r["cell"] in wanted]
  if not results:
    print(f"{grid}: no finished cells under {args.root}/{grid}.")
    return
  text, rows = tables.grid_table(grid, results)
  out = args.out or files.join(args.root, "tables")
  title = f"## {grid} ({args.family}; {len(results)} of {len(cells)} cells finished)\n\n"
  files.write_text(files.join(out, f"{grid}.md"), title + text + "\n")
  csv_text = io.StringIO(newline="")
  writer = csv.DictWriter(csv_text, list(dict.fromkeys(k for r in rows for k in r)))
  writer.writeheader()
  writer.writerows(rows)
  files.write_text(files.join(out, f"{grid}.csv"), csv_text.getvalue())
  if grid in tables.FIGURE_AXES:
    figures.plot_grid(grid, results, files.join(out, f"{grid}.png"))
  print(title + text)


if __name__ == "__main__":
  try:
    sys.exit(main())
  except (ValueError, OSError, RuntimeError) as e:  # OSError: files.StorageError included.
    print(f"error: {' '.join(str(e).split())}", file=sys.stderr)
    sys.exit(2)
