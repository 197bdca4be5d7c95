"""Training building blocks: resumable TRL trainers and their checkpoints (:mod:`.common`),
datasets from the prepared Parquet tables (:mod:`.datasets`) and GRPO with lookright's rewards
(:mod:`.grpo`). The stages that train (``pretrain``, ``sft``, ``grpo``) are in
:mod:`lookright.stages`."""
