"""Dagster helpers shared by the modules of `defs/`: resources, metadata, the file-drop sensor
factory, the status sensors' poll requests and the replica publish hook. Nothing here is a
definition of its own: `defs/` holds every asset, job, sensor, schedule and check."""
