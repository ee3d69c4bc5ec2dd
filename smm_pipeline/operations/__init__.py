"""Domain steps: each joins the protocol layer to the warehouse for one piece of work.

No Dagster here: the `defs/` functions call these and turn their results into metadata.
"""
