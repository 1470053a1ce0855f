"""The one Dagster resource: how runs and sensors reach the engine's Runtime."""

import dagster as dg
from pydantic import PrivateAttr

from playground.runtime import Runtime, RuntimeConfig


class PlaygroundResource(dg.ConfigurableResource):
    """Backend, GitOps origin and registry; unset fields come from the PLAYGROUND_* environment variables
    (see ``playground.runtime``), so `playground up` configures the daemon and webserver once.

    One ``Runtime`` per run or sensor evaluation: built in ``setup_for_execution`` and closed in
    ``teardown_after_execution`` (its cluster client and every git checkout it handed out), so no run or
    sensor tick leaves a client or a checkout open, whatever the op or sensor does."""

    backend: str | None = None
    home: str | None = None
    kubeconfig: str | None = None
    context: str | None = None
    gitops_url: str | None = None
    registry: str | None = None
    interval: str | None = None

    _runtime: Runtime | None = PrivateAttr(default=None)

    def runtime_config(self) -> RuntimeConfig:
        return RuntimeConfig.from_env(
            backend=self.backend,
            home=self.home,
            kubeconfig=self.kubeconfig,
            context=self.context,
            gitops_url=self.gitops_url,
            registry=self.registry,
            interval=self.interval,
        )

    def setup_for_execution(self, context: dg.InitResourceContext) -> None:
        self._runtime = Runtime(self.runtime_config())

    def teardown_after_execution(self, context: dg.InitResourceContext) -> None:
        runtime, self._runtime = self._runtime, None
        if runtime is not None:
            runtime.close()

    def runtime(self) -> Runtime:
        """The runtime of this run or sensor evaluation (closed by the resource's teardown)."""
        if self._runtime is None:
            raise dg.DagsterInvariantViolationError(
                "PlaygroundResource.runtime() outside a run or sensor evaluation: the resource was not set up"
            )
        return self._runtime
