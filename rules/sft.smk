rule sft:
    input:
        samples=rules.prepare_data.output.samples,
        images=rules.prepare_data.output.images,
        base=get_base_model,
    output:
        model=f"{RESULTS}/sft/{{model}}/model/config.json",
        metrics=f"{RESULTS}/sft/{{model}}/metrics.json",
        run=f"{RESULTS}/sft/{{model}}/run.json",
    log:
        f"{LOGS}/sft/{{model}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/sft/{{model}}.tsv"
    conda:
        "../envs/lookright.yaml"
    threads: 2
    resources:
        mem_mb=16000,
        runtime=240,
        gpu=lambda wc: config["resources"]["train_gpus"],
    params:
        debug=get_debug_flags("sft"),
        cfg=lambda wc: stage_config_for_model(wc.model, "sft"),
        code=stage_code("sft"),
        base=get_base_argument,
        base_run=lambda wc: get_base_run(wc),
        out=subpath(output.metrics, parent=True),
        data=subpath(input.samples, parent=True),
    shell:
        "python -m lookright.launch --stage sft --gpus {resources.gpu} --cpus {threads} --"
        " --config-json {params.cfg:q} --data {params.data} --base {params.base}"
        " --out {params.out} {params.base_run}"
        " --tag snakemake.rule=sft --tag snakemake.wildcards=model={wildcards.model}"
        " {params.debug} > {log} 2>&1"
