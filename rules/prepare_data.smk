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
        code=code_fingerprint(*CORE_CODE, "data"),
        out=subpath(output.summary, parent=True),
    shell:
        "lookright prepare-data --config-json {params.cfg:q} --out {params.out}"
        " --tag snakemake.rule=prepare_data {params.debug} > {log} 2>&1"
