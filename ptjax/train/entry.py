"""The run a gin file selects: `entry.execute.run = @trainer.train` (or evaluate / infer).

Kept apart from `ptjax.main` so gin can import it without re-defining the CLI flags.
"""

from typing import Callable, Optional


def execute(run: Optional[Callable[[], object]] = None):
  """Calls the run function bound by the gin files."""
  if run is None:
    raise ValueError("No run selected: include one of gin/runs/{prompt_tune,model_tune,eval,"
                     "infer}.gin (it binds entry.execute.run).")
  return run()
