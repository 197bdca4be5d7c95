rule decode:
    input:
        samples=rules.prepare_data.output.samples,
        images=rules.prepare_data.output.images,
        model=lambda wc: f"{decode_model_dir(wc)}/config.json",
    output:
        answers=f"{RESULTS}/decode/{{model}}/{{source}}/{{strategy}}/answers.parquet",
        metrics=f"{RESULTS}/decode/{{model}}/{{source}}/{{strategy}}/metrics.json",
        run=f"{RESULTS}/decode/{{model}}/{{source}}/{{strategy}}/run.json",
    log:
        f"{LOGS}/decode/{{model}}/{{source}}/{{strategy}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/decode/{{model}}/{{source}}/{{strategy}}.tsv"
    wildcard_constraints:
        model="[^/]+",
        source="sft|grpo-[^/]+",
        strategy=DECODE_BRANCH,
    conda:
        "../envs/lookright.yaml"
    threads: config["resources"].get("decode_threads", 2)
    resources:
        mem_mb=16000,
        runtime=240,
        gpu=lambda wc: config["resources"].get("decode_gpus", 0),
    params:
        debug=get_debug_flags("decode"),
        cfg=lambda wc: branches.decode_config(config, wc.model, wc.strategy),
        code=stage_code("decode"),
        strategy=lambda wc: branches.split_strategy(wc.strategy)[0],
        model_dir=decode_model_dir,
        upstream=decode_upstream,
        out=subpath(output.answers, parent=True),
        data=subpath(input.samples, parent=True),
    shell:
        "lookright decode --config-json {params.cfg:q} --data {params.data}"
        " --model-dir {params.model_dir} --strategy {params.strategy:q} --out {params.out:q}"
        " {params.upstream} --tag snakemake.rule=decode"
        " --tag snakemake.wildcards=model={wildcards.model},source={wildcards.source},strategy={wildcards.strategy}"
        " {params.debug} > {log:q} 2>&1"
