"""The names of the audit stages, in order. A light module: DAG files read it at parse time,
while `pipeline.audit.STAGES` (which imports the heavy stage modules) must list the same names."""

STAGE_NAMES = ("ingest", "acquire_images", "score", "aggregate", "networks", "flag", "report", "summarize")
