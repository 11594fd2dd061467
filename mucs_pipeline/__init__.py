"""mucs_pipeline: training data attribution for diffusion models, proven by retraining."""
