"""Similarity metrics, statistics and reports of the leave-k-out evaluation."""
