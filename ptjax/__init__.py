"""ptjax: prompt tuning (Lester et al., 2021) on a frozen, T5X-compatible T5 in JAX/Flax."""

from ptjax import files as _files

_files.configure_storage_env()  # Before orbax or TensorStore touch gs:// (see ptjax.files).

__version__ = "0.1.0"
