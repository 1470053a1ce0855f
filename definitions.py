"""The Dagster code location: wires the engine (playground/) into assets, jobs and sensors."""
import dagster as dg

defs = dg.Definitions()
