"""The one Dagster resource: how runs and sensors reach the engine's Runtime."""

import dagster as dg

from playground.runtime import Runtime, RuntimeConfig


class PlaygroundResource(dg.ConfigurableResource):
    """Backend, GitOps origin and registry; unset fields come from the PLAYGROUND_* environment variables
    (see ``playground.runtime``), so `playground up` configures the daemon and webserver once."""

    backend: str | None = None
    home: str | None = None
    kubeconfig: str | None = None
    context: str | None = None
    gitops_url: str | None = None
    registry: str | None = None
    interval: str | None = None

    def runtime(self) -> Runtime:
        return Runtime(
            RuntimeConfig.from_env(
                backend=self.backend,
                home=self.home,
                kubeconfig=self.kubeconfig,
                context=self.context,
                gitops_url=self.gitops_url,
                registry=self.registry,
                interval=self.interval,
            )
        )
