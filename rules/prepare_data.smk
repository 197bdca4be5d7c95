rule prepare_data:
    output:
        images=f"{RESULTS}/data/images.parquet",
        samples=f"{RESULTS}/data/samples.parquet",
        rejected=f"{RESULTS}/data/rejected.parquet",
        summary=f"{RESULTS}/data/summary.json",
        run=f"{RESULTS}/data/run.json",
    log:
        f"{LOGS}/prepare_data.log",
    benchmark:
        f"{RESULTS}/benchmarks/prepare_data.tsv"
    conda:
        "../envs/lookright.yaml"
    resources:
        mem_mb=8000,
        runtime=60,
    params:
        debug=get_debug_flags("prepare_data"),
        cfg=stage_config("data"),
        code=stage_code("prepare_data"),
        out=subpath(output.summary, parent=True),
        # outside the outputs: a failed job's outputs are deleted, this copy stays
        keep_rejected=f"{LOGS}/prepare_data.rejected.parquet",
    shell:
        "lookright prepare-data --config-json {params.cfg:q} --out {params.out}"
        " --keep-rejected {params.keep_rejected:q}"
        " --tag snakemake.rule=prepare_data {params.debug} > {log} 2>&1"
