"""`python -m mucs_pipeline.report <runs dir>`: the report command, kept at this name; the
report itself is `mucs_pipeline.evaluation.report`."""

from mucs_pipeline.evaluation.report import main

if __name__ == "__main__":
    main()
