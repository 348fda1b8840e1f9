"""Launch scripts (`python -m ptjax.experiments launch`): written by the CLI, then run with
bash against stand-in `gcloud` / `ssh` / `pip` / `python` executables that record their
argv, so the tests check the exact calls a TPU slice's workers or a GPU host would get."""

import contextlib
import io
import json
import os
import re
import shlex
import subprocess
import sys
import textwrap

import pytest

from ptjax.experiments import __main__ as cli
from ptjax.experiments import launch

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
GRID = ["fig3a_prompt_length", "--sizes=xxl", "--seeds=0,1",
        "--set=ACTIVATION_DTYPE='bfloat16'", "--ensemble_size=3", "--adaptation_steps=0,100"]
# The options `run` gets on every worker: the grid's, completed with the CLI's defaults
# (the ensemble size and LM adaptation steps select cells too: carried when given).
RUN_ARGS = ["fig3a_prompt_length", "--family=t5", "--root=gs://bucket/exp", "--seeds=0,1",
            "--sizes=xxl", "--set=ACTIVATION_DTYPE='bfloat16'", "--ensemble_size=3",
            "--adaptation_steps=0,100", "--flags=--initialize_distributed"]
TPU_REMOTE_SSH = ["compute", "tpus", "tpu-vm", "ssh"]


def cli_launch(*argv: str) -> subprocess.CompletedProcess:
  """`python -m ptjax.experiments launch ARGV` in a subprocess (as a user runs it)."""
  return subprocess.run([sys.executable, "-m", "ptjax.experiments", "launch", *argv],
                        cwd=REPO, capture_output=True, text=True, timeout=120)


def stand_in(bin_dir, name: str, log) -> None:
  """An executable `name` in bin_dir that appends [name, *argv] as one JSON line to log."""
  bin_dir.mkdir(parents=True, exist_ok=True)
  path = bin_dir / name
  path.write_text(textwrap.dedent(f"""\
      #!{sys.executable}
      import json, sys
      with open({str(log)!r}, "a") as f:
        f.write(json.dumps([{name!r}, *sys.argv[1:]]) + "\\n")
      """))
  path.chmod(0o755)


def calls(log) -> list[list[str]]:
  return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []


def run_script(script, tmp_path, names=("gcloud", "ssh"), **env) -> tuple:
  """bash SCRIPT with recording stand-ins first on PATH; TPU/ZONE/PROJECT/HOST unset unless
  given. Returns (completed process, recorded calls)."""
  bin_dir, log = tmp_path / "bin", tmp_path / "calls.jsonl"
  for name in names:
    stand_in(bin_dir, name, log)
  if log.exists():
    log.unlink()
  environ = {k: v for k, v in os.environ.items()
             if k not in ("TPU", "ZONE", "PROJECT", "HOST")}
  environ.update(env, PATH=f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
  proc = subprocess.run(["bash", str(script)], env=environ, capture_output=True, text=True,
                        timeout=60, cwd=tmp_path)
  return proc, calls(log)


def option_value(argv, flag):
  """The value after `flag` (`--zone VALUE`), checking it is there exactly once."""
  assert argv.count(flag) == 1, argv
  return argv[argv.index(flag) + 1]


@pytest.fixture(scope="module")
def tpu_script(tmp_path_factory):
  path = tmp_path_factory.mktemp("launch") / "l.sh"
  proc = cli_launch(*GRID, "--target=tpu", "--root=gs://bucket/exp", "--host=my-tpu",
                    "--zone=us-central2-b", "--project=my-project", f"--out={path}")
  assert proc.returncode == 0, proc.stderr
  assert proc.stdout.strip().splitlines()[-1] == f"wrote {path}"
  return path


def test_tpu_script_runs_one_ssh_on_every_worker_with_the_same_run(tpu_script, tmp_path):
  assert os.stat(tpu_script).st_mode & 0o777 == 0o755
  proc, recorded = run_script(tpu_script, tmp_path)
  assert proc.returncode == 0, proc.stderr
  assert len(recorded) == 1, recorded
  argv = recorded[0]
  assert argv[:6] == ["gcloud", *TPU_REMOTE_SSH, "my-tpu"], argv
  assert argv.count("--worker=all") == 1
  assert option_value(argv, "--zone") == "us-central2-b"
  assert option_value(argv, "--project") == "my-project"
  assert sorted(argv[6:]) == sorted(["--zone", "us-central2-b", "--project", "my-project",
                                     "--worker=all", "--command", argv[-1]]), argv
  remote = option_value(argv, "--command")
  # The remote shell's view: enter the clone, install, then the same grid on every worker.
  assert remote.startswith("cd ~/ptjax || {")
  assert ' && pip install -e . "jax[tpu]" && ' in remote
  run = shlex.split(remote.split(" && ")[-1])
  assert run == ["python", "-m", "ptjax.experiments", "run", *RUN_ARGS], run


def test_the_remote_command_reaches_pip_and_python_as_written(tpu_script, tmp_path):
  """The --command string, run by a shell in a worker's home with a clone at ~/ptjax: pip
  installs ptjax and jax[tpu] there, python gets the run's argv word for word (the --set
  value's quotes survive both shells)."""
  _, recorded = run_script(tpu_script, tmp_path / "local")
  remote = option_value(recorded[0], "--command")
  home = tmp_path / "home"
  (home / "ptjax").mkdir(parents=True)
  bin_dir, log = tmp_path / "worker_bin", tmp_path / "worker.jsonl"
  for name in ("pip", "python", "hostname"):
    stand_in(bin_dir, name, log)
  env = dict(os.environ, HOME=str(home), PATH=f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
  proc = subprocess.run(["bash", "-c", remote], env=env, capture_output=True, text=True,
                        cwd=tmp_path, timeout=60)
  assert proc.returncode == 0, proc.stderr
  assert calls(log) == [["pip", "install", "-e", ".", "jax[tpu]"],
                        ["python", "-m", "ptjax.experiments", "run", *RUN_ARGS]]
  # A worker without the clone: a message naming it, nothing installed or run.
  log.unlink()
  (home / "ptjax").rmdir()
  proc = subprocess.run(["bash", "-c", remote], env=env, capture_output=True, text=True,
                        cwd=tmp_path, timeout=60)
  assert proc.returncode == 1
  assert "no ptjax clone at ~/ptjax: clone ptjax there" in proc.stderr, proc.stderr
  assert calls(log) == [["hostname"]]


def test_environment_overrides_the_tpu_zone_and_project(tpu_script, tmp_path):
  proc, recorded = run_script(tpu_script, tmp_path, TPU="other-tpu", ZONE="europe-west4-a")
  assert proc.returncode == 0, proc.stderr
  argv = recorded[0]
  assert argv[:6] == ["gcloud", *TPU_REMOTE_SSH, "other-tpu"], argv
  assert option_value(argv, "--zone") == "europe-west4-a"
  assert option_value(argv, "--project") == "my-project"


def test_unset_tpu_zone_or_project_stops_before_gcloud(tmp_path):
  path = tmp_path / "bare.sh"
  proc = cli_launch("fig1_scale", "--sizes=small", "--target=tpu",
                    "--root=gs://bucket/exp", f"--out={path}")
  assert proc.returncode == 0, proc.stderr
  expected = {"TPU": "set TPU=<TPU VM or pod slice name> (or pass --host=NAME to launch)",
              "ZONE": "set ZONE=<the TPU zone, e.g. us-central2-b> (or pass --zone=ZONE to "
                      "launch)",
              "PROJECT": "set PROJECT=<Google Cloud project> (or pass --project=PROJECT to "
                         "launch)"}
  env = {}
  for name, message in expected.items():
    proc, recorded = run_script(path, tmp_path, **env)
    assert proc.returncode != 0
    assert proc.stderr.strip().endswith(f"{name}: {message}"), proc.stderr
    assert recorded == []   # gcloud never called.
    env[name] = f"a-{name.lower()}"
  proc, recorded = run_script(path, tmp_path, **env)
  assert proc.returncode == 0, proc.stderr
  assert recorded[0][:6] == ["gcloud", *TPU_REMOTE_SSH, "a-tpu"]
  assert option_value(recorded[0], "--project") == "a-project"


def test_tpu_launch_with_a_local_root_exits_2_before_writing(tmp_path):
  path = tmp_path / "l.sh"
  proc = cli_launch("fig1_scale", "--root=/tmp/local", "--target=tpu", "--host=my-tpu",
                    f"--out={path}")
  assert proc.returncode == 2, proc.stderr
  assert proc.stderr.strip().splitlines()[-1] == (
      "error: launch --target=tpu: --root=/tmp/local is a local folder; every worker of a "
      "TPU slice must see the same files: pass --root=gs://BUCKET/...")
  assert "Traceback" not in proc.stderr
  assert proc.stdout == ""
  assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("root, what", [
    (None, "no root"), ("/tmp/local", "a local folder"), ("rel/exp", "a local folder"),
    ("s3://bucket/exp", "not a gs:// path"), ("gs://", "not a gs:// path")])
def test_tpu_launch_needs_a_gs_root(root, what):
  grid_args = ["fig1_scale"] + ([f"--root={root}"] if root is not None else [])
  with pytest.raises(ValueError) as e:
    launch.launch_script(grid_args, "tpu", host="t", zone="z", project="p")
  assert str(e.value) == (f"launch --target=tpu: --root={root or ''} is {what}; every worker "
                          "of a TPU slice must see the same files: pass --root=gs://BUCKET/...")


def test_gpu_script_runs_the_grid_detached_on_the_host(tmp_path):
  path = tmp_path / "gpu.sh"
  proc = cli_launch("table1_squad_to_mrqa", "--target=gpu", "--host=me@gpu-box",
                    "--root=/tmp/local", "--seeds=0", "--flags=--num_cpu_devices=2",
                    f"--out={path}")
  assert proc.returncode == 0, proc.stderr
  proc, recorded = run_script(path, tmp_path)
  assert proc.returncode == 0, proc.stderr
  assert len(recorded) == 1 and len(recorded[0]) == 3, recorded
  assert recorded[0][:2] == ["ssh", "me@gpu-box"]
  remote = recorded[0][2]
  assert ' && pip install -e . "jax[cuda12]" && { nohup ' in remote, remote
  assert remote.endswith(" > experiments.log 2>&1 < /dev/null & }")
  run = shlex.split(remote.split("{ nohup ", 1)[1].split(" > ")[0])
  assert run == ["python", "-m", "ptjax.experiments", "run", "table1_squad_to_mrqa",
                 "--family=t5", "--root=/tmp/local", "--seeds=0",
                 "--flags=--num_cpu_devices=2"], run
  assert proc.stdout == ("running on me@gpu-box; follow it: ssh me@gpu-box tail -f "
                         "~/ptjax/experiments.log\n")
  proc, recorded = run_script(path, tmp_path, HOST="other-box")
  assert recorded[0][:2] == ["ssh", "other-box"]
  # No host: a message, ssh never called.
  bare = tmp_path / "bare.sh"
  launch.write_script(str(bare), launch.launch_script(["fig1_scale", "--root=/x"], "gpu"))
  proc, recorded = run_script(bare, tmp_path)
  assert proc.returncode != 0 and recorded == []
  assert proc.stderr.strip().endswith(
      "HOST: set HOST=<[user@]ssh host> (or pass --host=HOST to launch)"), proc.stderr


def test_launch_all_writes_one_script_that_runs_every_grid(tmp_path):
  path = tmp_path / "all.sh"
  out = io.StringIO()
  with contextlib.redirect_stdout(out):
    assert cli.main(["launch", "all", "--root=gs://b/x", "--host=t", "--zone=z",
                     "--project=p", "--flags=--initialize_distributed",
                     f"--out={path}"]) == 0
  assert out.getvalue() == f"wrote {path}\n"
  _, recorded = run_script(path, tmp_path)
  run = shlex.split(option_value(recorded[0], "--command").split(" && ")[-1])
  # `run all` once; the distributed flag not doubled.
  assert run == ["python", "-m", "ptjax.experiments", "run", "all", "--family=t5",
                 "--root=gs://b/x", "--seeds=0,1,2",
                 "--flags=--initialize_distributed"], run


@pytest.mark.parametrize("kwargs, message", [
    ({"target": "cpu"}, "launch --target=cpu: unknown target"),
    ({"host": 'x"; rm -rf ~; "'}, "launch --host='x\"; rm -rf ~; \"': not a name"),
    ({"zone": "us central"}, "launch --zone='us central': not a name")])
def test_bad_targets_and_names_are_refused(kwargs, message):
  kwargs = {"target": "tpu", **kwargs}
  with pytest.raises(ValueError, match="^" + re.escape(message)):
    launch.launch_script(["fig1_scale", "--root=gs://b/x"], kwargs.pop("target"), **kwargs)


def test_the_script_is_written_to_a_local_path_only(tmp_path):
  with pytest.raises(ValueError, match=r"^launch --out=gs://b/l\.sh: the script runs on this "
                                       r"machine; pass a local path"):
    launch.write_script("gs://b/l.sh", "#!/bin/bash\n")
  path = tmp_path / "sub" / "l.sh"
  launch.write_script(str(path), "#!/bin/bash\necho hi\n")
  assert path.read_text() == "#!/bin/bash\necho hi\n"
  assert os.stat(path).st_mode & 0o777 == 0o755
  assert os.listdir(path.parent) == ["l.sh"]   # No temporary file left beside it.
