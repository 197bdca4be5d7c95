rule pretrain:
    input:
        samples=rules.prepare_data.output.samples,
        images=rules.prepare_data.output.images,
        data_run=rules.prepare_data.output.run,
    output:
        model=f"{RESULTS}/pretrain/{{model}}/model/config.json",
        metrics=f"{RESULTS}/pretrain/{{model}}/metrics.json",
        run=f"{RESULTS}/pretrain/{{model}}/run.json",
    log:
        f"{LOGS}/pretrain/{{model}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/pretrain/{{model}}.tsv"
    conda:
        "../envs/lookright.yaml"
    threads: 2
    resources:
        mem_mb=8000,
        runtime=60,
        gpu=0,
    params:
        debug=get_debug_flags("pretrain"),
        cfg=lambda wc: stage_config_for_model(wc.model, "pretrain"),
        code=stage_code("pretrain"),
        out=subpath(output.metrics, parent=True),
        data=subpath(input.samples, parent=True),
    shell:
        "lookright pretrain --config-json {params.cfg:q} --data {params.data} --out {params.out}"
        " --upstream prepare_data={input.data_run}"
        " --tag snakemake.rule=pretrain --tag snakemake.wildcards=model={wildcards.model}"
        " {params.debug} > {log} 2>&1"
