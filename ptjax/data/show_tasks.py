r"""Lists ptjax's registered tasks, or prints a task's formatted examples.

  python -m ptjax.data.show_tasks --list
  python -m ptjax.data.show_tasks pt_super_glue_rte_v102_taskless --split validation -n 3
  python -m ptjax.data.show_tasks pt_super_glue_rte_v102 --mock   # offline, TFDS mock data
"""

import argparse
import contextlib
import sys
from typing import Optional, Sequence

from ptjax import console

if __name__ == "__main__":
  console.quiet_startup()  # Before seqio imports TensorFlow (its C++ start-up lines).
  console.silence_storage_retries()

import seqio  # noqa: E402
from ptjax.data import catalog


def _text(value) -> str:
  return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def main(argv: Optional[Sequence[str]] = None) -> int:
  parser = console.ArgumentParser(prog="python -m ptjax.data.show_tasks", description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("name", nargs="?", help="A task or mixture name.")
  parser.add_argument("--list", action="store_true", help="List tasks and mixtures.")
  parser.add_argument("--split", default="validation")
  parser.add_argument("-n", type=int, default=3, help="Examples to print.")
  parser.add_argument("--mock", action="store_true", help="Use TFDS mock data (offline).")
  args = parser.parse_args(argv)
  import ptjax.data.mini_tasks  # noqa: F401  # Registers the paper's and the mini tasks.
  import ptjax.data.tasks  # noqa: F401
  if args.list or not args.name:
    for name in sorted(n for n in seqio.TaskRegistry.names() if n.startswith("pt_")):
      labels = catalog.labels_of(name)
      print(f"task     {name}" + (f"  labels: {', '.join(labels)}" if labels else ""))
    for name in sorted(n for n in seqio.MixtureRegistry.names() if n.startswith("pt_")):
      print(f"mixture  {name}")
    return 0
  from ptjax.data import pipeline
  import tensorflow_datasets as tfds
  mock = tfds.testing.mock_data(num_examples=args.n) if args.mock else contextlib.nullcontext()
  try:
    with mock:
      provider = pipeline.get_task(args.name)
      for task in getattr(provider, "tasks", [provider]):
        examples = pipeline.eval_examples(task.name, {"inputs": 100000, "targets": 100000},
                                          args.split, args.n)
        for i, ex in enumerate(examples):
          print(f"[{task.name} {args.split} {i}]")
          print(f"  inputs:  {_text(ex.get('inputs_pretokenized', ex['inputs']))}")
          print(f"  targets: {_text(ex.get('targets_pretokenized', ex['targets']))}")
  except (ValueError, KeyError, OSError) as e:  # OSError: files.StorageError included.
    print(f"error: {' '.join(str(e).split())}", file=sys.stderr)
    return 2
  return 0


if __name__ == "__main__":
  sys.exit(main())
