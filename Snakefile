# lookright: prepare data -> pretrain (tiny base) -> SFT -> GRPO -> decode -> evaluate -> report.
# Thin on purpose: the rules live in rules/, the logic in src/lookright/ (called through its CLI).
from snakemake.utils import min_version, validate

min_version("9.0")


configfile: "config/config.yaml"


report: "workflow/report/workflow.rst"


validate(config, "workflow/schemas/config.schema.yaml")


include: "rules/common.smk"
include: "rules/prepare_data.smk"
include: "rules/pretrain.smk"
include: "rules/sft.smk"
include: "rules/grpo.smk"
include: "rules/decode.smk"
include: "rules/evaluate.smk"
include: "rules/report.smk"


onstart:
    shell("lookright tracking-init")


rule all:
    default_target: True
    input:
        get_final_outputs(),
