"""Soft prompts: the `prompt` variable collection, prepended to the encoder input.

Imports only `ptjax.model`.
"""

from ptjax.prompts.initializers import (class_labels, from_array, from_file, from_text,
                                        random_uniform, sampled_vocab)
from ptjax.prompts.io import (FoundPrompt, PromptFileError, find_prompt, load_prompt,
                              save_npy, save_numpy_checkpoint, save_peft)
from ptjax.prompts.module import PROMPT_AXES, PromptT5, prepend_prompt
from ptjax.prompts.multi import (MultiPromptT5, majority_vote, replicate_for_ensemble,
                                 stack_prompts, variables_for)
