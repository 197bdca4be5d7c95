rule grpo:
    input:
        samples=rules.prepare_data.output.samples,
        images=rules.prepare_data.output.images,
        base=rules.sft.output.model,
        base_run=rules.sft.output.run,
    output:
        model=f"{RESULTS}/grpo/{{model}}/{{reward_set}}/model/config.json",
        metrics=f"{RESULTS}/grpo/{{model}}/{{reward_set}}/metrics.json",
        samples=f"{RESULTS}/grpo/{{model}}/{{reward_set}}/samples.parquet",
        run=f"{RESULTS}/grpo/{{model}}/{{reward_set}}/run.json",
    log:
        f"{LOGS}/grpo/{{model}}/{{reward_set}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/grpo/{{model}}/{{reward_set}}.tsv"
    wildcard_constraints:
        model="[^/]+",
        reward_set="[^/]+",
    conda:
        "../envs/lookright.yaml"
    threads: 2
    resources:
        mem_mb=16000,
        runtime=480,
        gpu=lambda wc: config["resources"]["train_gpus"],
    params:
        debug=get_debug_flags("grpo"),
        cfg=lambda wc: branches.grpo_config(config, wc.model, wc.reward_set),
        code=lambda wc: stage_code(
            "grpo", *branches.grpo_modules(config, wc.reward_set)
        ),
        out=subpath(output.metrics, parent=True),
        data=subpath(input.samples, parent=True),
        base=subpath(input.base, parent=True),
    shell:
        "python -m lookright.launch --stage grpo --gpus {resources.gpu} --cpus {threads} --"
        " --config-json {params.cfg:q} --data {params.data} --base {params.base}"
        " --out {params.out} --upstream sft={input.base_run}"
        " --tag snakemake.rule=grpo"
        " --tag snakemake.wildcards=model={wildcards.model},reward_set={wildcards.reward_set}"
        " {params.debug} > {log} 2>&1"
