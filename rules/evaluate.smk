rule evaluate_saliency:
    input:
        samples=rules.prepare_data.output.samples,
        images=rules.prepare_data.output.images,
        model=lambda wc: f"{decode_model_dir(wc)}/config.json",
    output:
        summary=f"{RESULTS}/eval/{{model}}/{{source}}/saliency/summary.parquet",
        per_sample=f"{RESULTS}/eval/{{model}}/{{source}}/saliency/saliency.parquet",
        curves=f"{RESULTS}/eval/{{model}}/{{source}}/saliency/curves.parquet",
        maps=f"{RESULTS}/eval/{{model}}/{{source}}/saliency/maps.parquet",
        predictions=f"{RESULTS}/eval/{{model}}/{{source}}/saliency/predictions.parquet",
        tokens=f"{RESULTS}/eval/{{model}}/{{source}}/saliency/tokens.parquet",
        metrics=f"{RESULTS}/eval/{{model}}/{{source}}/saliency/metrics.json",
        run=f"{RESULTS}/eval/{{model}}/{{source}}/saliency/run.json",
    log:
        f"{LOGS}/eval/{{model}}/{{source}}/saliency.log",
    benchmark:
        f"{RESULTS}/benchmarks/eval/{{model}}/{{source}}/saliency.tsv"
    wildcard_constraints:
        model="[^/]+",
        source="sft|grpo-[^/]+",
    conda:
        "../envs/lookright.yaml"
    threads: 2
    resources:
        mem_mb=16000,
        runtime=240,
        gpu=lambda wc: config["resources"].get("decode_gpus", 0),
    params:
        debug=get_debug_flags("evaluate_saliency"),
        cfg=lambda wc: branches.evaluate_saliency_config(config, wc.model),
        code=stage_code("evaluate_saliency"),
        model_dir=decode_model_dir,
        upstream=decode_upstream,
        ablation=ablation_params,
        out=subpath(output.metrics, parent=True),
        data=subpath(input.samples, parent=True),
    shell:
        "lookright evaluate-saliency --config-json {params.cfg:q} --data {params.data}"
        " --model-dir {params.model_dir} --out {params.out:q} {params.upstream}"
        " {params.ablation} --tag snakemake.rule=evaluate_saliency"
        " --tag snakemake.wildcards=model={wildcards.model},source={wildcards.source}"
        " {params.debug} > {log:q} 2>&1"


rule evaluate_answers:
    input:
        answers=rules.decode.output.answers,
        decode_run=rules.decode.output.run,
        samples=rules.prepare_data.output.samples,
    output:
        pope=f"{RESULTS}/eval/{{model}}/{{source}}/{{strategy}}/pope.parquet",
        chair=f"{RESULTS}/eval/{{model}}/{{source}}/{{strategy}}/chair.parquet",
        captions=f"{RESULTS}/eval/{{model}}/{{source}}/{{strategy}}/captions.parquet",
        metrics=f"{RESULTS}/eval/{{model}}/{{source}}/{{strategy}}/metrics.json",
        run=f"{RESULTS}/eval/{{model}}/{{source}}/{{strategy}}/run.json",
    log:
        f"{LOGS}/eval/{{model}}/{{source}}/{{strategy}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/eval/{{model}}/{{source}}/{{strategy}}.tsv"
    wildcard_constraints:
        model="[^/]+",
        source="sft|grpo-[^/]+",
        strategy=DECODE_BRANCH,
    conda:
        "../envs/lookright.yaml"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=30,
    params:
        debug=get_debug_flags("evaluate_answers"),
        cfg=lambda wc: branches.evaluate_answers_config(config, wc.model),
        code=stage_code("evaluate_answers"),
        ablation=ablation_params,
        out=subpath(output.metrics, parent=True),
        data=subpath(input.samples, parent=True),
    shell:
        "lookright evaluate-answers --config-json {params.cfg:q} --data {params.data}"
        " --answers {input.answers:q} --out {params.out:q} --upstream decode={input.decode_run:q}"
        " {params.ablation} --tag snakemake.rule=evaluate_answers"
        " --tag snakemake.wildcards=model={wildcards.model},source={wildcards.source},strategy={wildcards.strategy}"
        " {params.debug} > {log:q} 2>&1"
