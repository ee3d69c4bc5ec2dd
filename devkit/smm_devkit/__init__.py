"""Test and demo support for smm_pipeline: the panel simulator (`smm_devkit.simulator`) and
the headless demo (`smm_devkit.demo`). Not part of the deployable code location."""
