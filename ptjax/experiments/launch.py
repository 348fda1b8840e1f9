"""Launch scripts (`python -m ptjax.experiments launch GRID`): a bash script that installs
ptjax and runs `python -m ptjax.experiments run GRID ...` on every worker of a Cloud TPU VM
or pod slice (--target=tpu: one multi-host program per run) or on one GPU host
(--target=gpu, under nohup).

The script copies no code: ptjax must be cloned at REPO_DIR (the same commit) on every
worker / the host. A TPU slice's workers must share their files, so a TPU launch needs a
gs:// root; the TPU / host, zone and project are the script's defaults, overridden by the
environment (TPU=... ZONE=... PROJECT=... / HOST=...), and the script stops with a message
naming the variable when one is empty, before calling gcloud or ssh.
"""

import os
import re
import shlex
from typing import Optional, Sequence

from ptjax import files

INSTALL = {"tpu": 'pip install -e . "jax[tpu]"', "gpu": 'pip install -e . "jax[cuda12]"'}
REPO_DIR = "~/ptjax"
TARGETS = ("tpu", "gpu")
# Every run of a TPU launch is one multi-host program (ptjax.main's flag).
DISTRIBUTED_FLAG = "--flags=--initialize_distributed"
# A TPU name, zone, project or ssh host ([user@]host): written into the script in quotes.
_NAME = re.compile(r"[\w.@:-]*")


def option(grid_args: Sequence[str], name: str) -> Optional[str]:
  """The value of the last `--name=VALUE` of `grid_args`, or None."""
  values = [a.split("=", 1)[1] for a in grid_args if a.startswith(f"--{name}=")]
  return values[-1] if values else None


def check(grid_args: Sequence[str], target: str, **names: str) -> None:
  """ValueError (one line: the problem and the fix) for a launch that cannot work."""
  if target not in TARGETS:
    raise ValueError(f"launch --target={target}: unknown target; pass --target=tpu or "
                     "--target=gpu.")
  root = option(grid_args, "root")
  if target == "tpu" and not re.match(r"gs://[^/]+", root or ""):
    what = ("no root" if root is None else
            "not a gs:// path" if files.is_remote(root) else "a local folder")
    raise ValueError(f"launch --target=tpu: --root={root or ''} is {what}; every worker of a "
                     "TPU slice must see the same files: pass --root=gs://BUCKET/...")
  for flag, value in names.items():
    if not _NAME.fullmatch(value):
      raise ValueError(f"launch --{flag}={value!r}: not a name (letters, digits and . _ - @ :"
                       f" only); pass the plain {flag} name.")


def launch_script(grid_args: Sequence[str], target: str, *, host: str = "",
                  zone: str = "", project: str = "", repo_dir: str = REPO_DIR) -> str:
  """The bash script that runs `python -m ptjax.experiments run <grid_args>` on every worker
  of a TPU VM / pod slice (with --flags=--initialize_distributed) or on one GPU host,
  after installing ptjax. ValueError (see `check`) for a launch that cannot work."""
  check(grid_args, target, host=host, zone=zone, project=project)
  run = ["python", "-m", "ptjax.experiments", "run", *grid_args]
  if target == "tpu" and DISTRIBUTED_FLAG not in run:
    run.append(DISTRIBUTED_FLAG)
  experiments = shlex.join(run)
  launch = shlex.join(["python", "-m", "ptjax.experiments", "launch", *grid_args,
                       f"--target={target}"])
  # On the worker / host: its clone, or a message naming the missing clone.
  enter = (f'cd {repo_dir} || {{ echo "$(hostname): no ptjax clone at {repo_dir}: clone '
           f'ptjax there (the same commit) on every machine first" >&2; exit 1; }}')
  header = ["#!/usr/bin/env bash",
            "# Written by `" + launch + "`.",
            "# Runs, on " + ("every worker of a Cloud TPU VM / pod slice" if target == "tpu"
                            else "one GPU host") + ":",
            f"#   {experiments}",
            "#",
            f"# Copies no code: ptjax must be cloned at {repo_dir} on "
            + ("EVERY worker" if target == "tpu" else "the host") + ", at the same commit,",
            "# beforehand; the script installs it there (" + INSTALL[target] + ").",
            "# `python` and `pip` on the remote PATH must be the same Python (a venv or",
            "# python-is-python3). Finished runs are skipped: run the script again to resume."]
  if target == "tpu":
    remote = f"{enter} && {INSTALL['tpu']} && {experiments}"
    header += [
        "#",
        "# Every worker runs the same plan (fixed from the gs:// root before the first run);",
        "# each ptjax.main run is one multi-host program: --initialize_distributed calls",
        "# jax.distributed.initialize() with no arguments, which on Cloud TPU discovers the",
        "# coordinator address, the number of processes and each worker's process id from",
        "# the TPU metadata (no --coordinator_address / --num_processes / --process_id).",
        "# The runs last as long as this ssh session: start the script in tmux or screen.",
        "# Another TPU: TPU=<name> ZONE=<zone> PROJECT=<project> " + "<this script>",
        "set -euo pipefail",
        f'TPU="${{TPU:-{host}}}"',
        f'ZONE="${{ZONE:-{zone}}}"',
        f'PROJECT="${{PROJECT:-{project}}}"',
        ': "${TPU:?set TPU=<TPU VM or pod slice name> (or pass --host=NAME to launch)}"',
        ': "${ZONE:?set ZONE=<the TPU zone, e.g. us-central2-b> (or pass --zone=ZONE to '
        'launch)}"',
        ': "${PROJECT:?set PROJECT=<Google Cloud project> (or pass --project=PROJECT to '
        'launch)}"',
        'gcloud compute tpus tpu-vm ssh "$TPU" --zone "$ZONE" --project "$PROJECT" '
        "--worker=all \\",
        f"  --command {shlex.quote(remote)}"]
  else:
    # Detached: the grid outlives the ssh session; ssh returns once ptjax is installed.
    remote = (f"{enter} && {INSTALL['gpu']} && "
              f"{{ nohup {experiments} > experiments.log 2>&1 < /dev/null & }}")
    header += [
        "# Another host: HOST=<[user@]host> <this script>",
        "set -euo pipefail",
        f'HOST="${{HOST:-{host}}}"',
        ': "${HOST:?set HOST=<[user@]ssh host> (or pass --host=HOST to launch)}"',
        f"ssh \"$HOST\" {shlex.quote(remote)}",
        f'echo "running on $HOST; follow it: ssh $HOST tail -f {repo_dir}/experiments.log"']
  return "\n".join(header) + "\n"


def write_script(path: str, text: str) -> None:
  """`text` into the local file `path`, atomically, executable (rwxr-xr-x)."""
  if files.is_remote(path):
    raise ValueError(f"launch --out={path}: the script runs on this machine; pass a local "
                     "path (e.g. --out=launch.sh).")
  files.write_text(path, text)
  os.chmod(path, 0o755)
