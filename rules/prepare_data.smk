rule prepare_data:
    output:
        images=f"{RESULTS}/data/images.parquet",
        samples=f"{RESULTS}/data/samples.parquet",
        rejected=f"{RESULTS}/data/rejected.parquet",
        summary=f"{RESULTS}/data/summary.json",
        run=f"{RESULTS}/data/run.json",
    params:
        cfg=stage_config("data"),
        code=code_fingerprint(*CORE_CODE, "data"),
        out=f"{RESULTS}/data",
    log:
        f"{LOGS}/prepare_data.log",
    benchmark:
        f"{RESULTS}/benchmarks/prepare_data.tsv"
    conda:
        "../envs/lookright.yaml"
    resources:
        mem_mb=8000,
        runtime=60,
    shell:
        "lookright prepare-data --config-json {params.cfg:q} --out {params.out}"
        " --results-dir {RESULTS} --tag snakemake.rule={rule} > {log} 2>&1"
