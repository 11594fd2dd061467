"""Pipeline stages, in order; each is `run(cfg, layout) -> metrics` (SPEC sec. 4)."""
