"""Attribution methods: one interface, one scores format ([m, |Z|] float32)."""

from mucs_pipeline.attribution.base import Context, Method, build_method

__all__ = ["Context", "Method", "build_method"]
