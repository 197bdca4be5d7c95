rule sft:
    input:
        samples=rules.prepare_data.output.samples,
        images=rules.prepare_data.output.images,
        base=get_base_model,
    output:
        model=f"{RESULTS}/sft/{{model}}/model/config.json",
        metrics=f"{RESULTS}/sft/{{model}}/metrics.json",
        run=f"{RESULTS}/sft/{{model}}/run.json",
    params:
        cfg=lambda wc: stage_config_for_model(wc.model, "sft"),
        code=code_fingerprint(*CORE_CODE, "models", "train", "eval/accuracy.py"),
        base=get_base_argument,
        base_run=lambda wc: get_base_run(wc),
        out=subpath(output.metrics, parent=True),
        data=subpath(input.samples, parent=True),
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
    shell:
        "lookright sft --config-json {params.cfg:q} --data {params.data} --base {params.base}"
        " --out {params.out} --results-dir {RESULTS} {params.base_run}"
        " --tag snakemake.rule={rule} --tag snakemake.wildcards=model={wildcards.model}"
        " > {log} 2>&1"
