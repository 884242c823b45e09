from __future__ import annotations

from aws_cdk import CfnOutput, RemovalPolicy, Stack
from constructs import Construct

from infra.parts.api import Api
from infra.parts.cache import Cache
from infra.parts.data import Data
from infra.parts.functions import Functions
from infra.parts.messaging import Messaging
from infra.parts.monitoring import Monitoring
from infra.parts.network import Network
from infra.stage_config import StageConfig


class UnderlayStack(Stack):
    """Composes the constructs; every resource comes from `underlay.declaration` and the stage config."""

    def __init__(
        self, scope: Construct, id: str, *, config: StageConfig, version: str, **kwargs: object
    ) -> None:
        super().__init__(scope, id, **kwargs)  # type: ignore[arg-type]
        removal = RemovalPolicy.DESTROY if config.removal_policy == "destroy" else RemovalPolicy.RETAIN
        self.network = Network(self, "Network")
        self.data = Data(self, "Data", removal=removal, audit_retention_days=config.audit_retention_days)
        self.cache = Cache(
            self,
            "Cache",
            vpc=self.network.vpc,
            clients=self.network.functions_sg,
            node_type=config.redis_node_type,
            replicas=config.redis_replicas,
        )
        self.messaging = Messaging(self, "Messaging", stage=config.stage)
        self.functions = Functions(
            self,
            "Functions",
            config=config,
            vpc=self.network.vpc,
            security_group=self.network.functions_sg,
            data=self.data,
            cache=self.cache,
            messaging=self.messaging,
            version=version,
        )
        self.api = Api(self, "Api", config=config, functions=dict(self.functions.functions))
        self.monitoring = Monitoring(
            self,
            "Monitoring",
            config=config,
            api=self.api.api,
            functions=self.functions.functions,
            dlqs=self.messaging.dlqs,
        )
        CfnOutput(self, "ApiUrl", value=self.api.url or "")
