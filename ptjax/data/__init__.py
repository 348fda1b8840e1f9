"""seqio tasks, vocabularies, metrics and the batch pipeline. No JAX model code here."""
