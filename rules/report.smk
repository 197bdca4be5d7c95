rule report:
    input:
        evaluations=get_evaluate_outputs(),
        grpo=get_grpo_samples(),
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
        code=stage_code("report"),
        out=subpath(output.html, parent=True),
        data=subpath(input.images, parent=True),
        # exactly the folders and files declared as inputs above
        evaluations=" ".join(
            f"--evaluation {shlex.quote(f)}" for f in get_evaluation_folders()
        ),
        grpo=" ".join(f"--grpo-samples {shlex.quote(f)}" for f in get_grpo_samples()),
    shell:
        "lookright report --config-json {params.cfg:q} {params.evaluations}"
        " {params.grpo} --data {params.data} --out {params.out:q}"
        " --tag snakemake.rule=report {params.debug} > {log:q} 2>&1"
