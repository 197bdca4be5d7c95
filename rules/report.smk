rule report:
    input:
        evaluations=get_evaluate_outputs(),
        grpo=lambda wc: [
            f"{RESULTS}/grpo/{model}/{reward_set}/samples.parquet"
            for model in get_run_models()
            for reward_set in get_reward_sets()
        ],
        images=rules.prepare_data.output.images,
    output:
        html=report(
            f"{RESULTS}/report/report.html",
            category="Report",
            caption="../workflow/report/report_page.rst",
        ),
        plots=report(
            directory(f"{RESULTS}/report/plots"),
            patterns=["{name}.png"],
            category="Plots",
            caption="../workflow/report/plots.rst",
        ),
        gallery=report(
            directory(f"{RESULTS}/report/gallery"),
            patterns=["{name}.png"],
            category="Saliency gallery",
            caption="../workflow/report/gallery.rst",
        ),
        summary=f"{RESULTS}/report/summary.md",
        answers=f"{RESULTS}/report/answers.parquet",
        saliency=f"{RESULTS}/report/saliency.parquet",
        run=f"{RESULTS}/report/run.json",
    log:
        f"{LOGS}/report.log",
    benchmark:
        f"{RESULTS}/benchmarks/report.tsv"
    conda:
        "../envs/lookright.yaml"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=30,
    params:
        debug=get_debug_flags("report"),
        cfg=stage_config("report"),
        code=code_fingerprint(*CORE_CODE, "report"),
        out=subpath(output.html, parent=True),
        data=subpath(input.images, parent=True),
        eval_dir=lambda wc: f"{RESULTS}/eval",  # every evaluation folder (inputs above)
        grpo_dir=lambda wc: f"{RESULTS}/grpo",
    shell:
        "lookright report --config-json {params.cfg:q} --eval-dir {params.eval_dir:q}"
        " --grpo-dir {params.grpo_dir:q} --data {params.data} --out {params.out:q}"
        " --tag snakemake.rule=report {params.debug} > {log:q} 2>&1"
