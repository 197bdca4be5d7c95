"""Training stages: ``pretrain`` (tiny base VLMs from scratch), ``sft`` and ``grpo``."""
