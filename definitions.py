"""The Dagster code location: wires the engine (playground/) into assets, jobs and sensors."""

import dagster as dg

from assets import ASSET_CHECKS, ASSETS
from assets.history import HISTORY_ASSETS
from jobs import canary_release, gitops_sync
from jobs.resources import PlaygroundResource
from sensors import SENSORS

defs = dg.Definitions(
    assets=[*ASSETS, *HISTORY_ASSETS],
    asset_checks=ASSET_CHECKS,
    jobs=[gitops_sync, canary_release],
    sensors=SENSORS,
    resources={"playground": PlaygroundResource()},
)
