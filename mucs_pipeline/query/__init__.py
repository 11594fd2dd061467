"""Query mode: attribute the user's own images with a trained model (`+query=folder`)."""

from mucs_pipeline.query.run import attribute_queries

__all__ = ["attribute_queries"]
