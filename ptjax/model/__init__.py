"""Frozen T5 1.1 (T5X parameter names), presets and decoding. Imports nothing else from ptjax."""

from ptjax.model.config import PRESETS, T5Config, preset
from ptjax.model.network import (T5, abstract_params, count_params, init_params, param_axes,
                                 param_shapes)
