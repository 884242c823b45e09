"""The VPC (endpoints, flow logs, no NAT in dev) and the cache (TLS, at rest, AUTH, reachable from functions only)."""

from __future__ import annotations

from tests.infra.conftest import Synth, get_att, ref


def test_dev_has_no_nat_and_reaches_aws_through_endpoints(synth: Synth) -> None:
    assert synth.config.network.nat_gateways == 0
    assert not synth.resources("AWS::EC2::NatGateway")
    assert not synth.resources("AWS::EC2::InternetGateway")
    services = []
    for endpoint in synth.resources("AWS::EC2::VPCEndpoint").values():
        props = endpoint["Properties"]
        name = props["ServiceName"]
        service = (
            name if isinstance(name, str) else "".join(p for p in name["Fn::Join"][1] if isinstance(p, str))
        )
        services.append((service.rsplit(".", 1)[-1], props.get("VpcEndpointType", "Gateway")))
    assert sorted(services) == sorted(
        [
            ("dynamodb", "Gateway"),
            ("s3", "Gateway"),
            ("secretsmanager", "Interface"),
            ("sqs", "Interface"),
            ("events", "Interface"),
        ]
    )


def test_interface_endpoints_span_the_configured_azs(synth: Synth) -> None:
    expected = 1 if synth.config.network.endpoints_single_az else synth.config.network.max_azs
    interfaces = [
        e["Properties"]
        for e in synth.resources("AWS::EC2::VPCEndpoint").values()
        if e["Properties"].get("VpcEndpointType") == "Interface"
    ]
    functions_sg = get_att(synth.logical_id(synth.stack.network.functions_sg), "GroupId")
    for endpoint in interfaces:
        assert len(endpoint["SubnetIds"]) == expected
        assert endpoint["PrivateDnsEnabled"] is True
        (group,) = endpoint["SecurityGroupIds"]
        ingress = [
            r["Properties"]
            for r in synth.resources("AWS::EC2::SecurityGroupIngress").values()
            if r["Properties"]["GroupId"] == group
        ]
        assert [(i["FromPort"], i["SourceSecurityGroupId"]) for i in ingress] == [(443, functions_sg)]


def test_flow_logs_are_on(synth: Synth) -> None:
    (flow_log,) = synth.resources("AWS::EC2::FlowLog").values()
    assert flow_log["Properties"]["TrafficType"] == "ALL"
    assert flow_log["Properties"]["ResourceId"] == ref(synth.logical_id(synth.stack.network.vpc))


def test_cache_encrypts_in_transit_and_at_rest_and_requires_auth(synth: Synth) -> None:
    (group,) = synth.resources("AWS::ElastiCache::ReplicationGroup").values()
    props = group["Properties"]
    assert props["Engine"] in ("valkey", "redis")
    assert props["TransitEncryptionEnabled"] is True
    assert props["TransitEncryptionMode"] == "required"
    assert props["AtRestEncryptionEnabled"] is True
    assert props["NumCacheClusters"] == 1 + synth.config.redis.replicas
    assert props["CacheNodeType"] == synth.config.redis.node_type
    secret = synth.logical_id(synth.stack.cache.secret)
    assert props["AuthToken"] == {
        "Fn::Join": ["", ["{{resolve:secretsmanager:", ref(secret), ":SecretString:token::}}"]]
    }
    generated = synth.props(secret)["GenerateSecretString"]
    assert generated["ExcludePunctuation"] is True and generated["GenerateStringKey"] == "token"
    assert generated["PasswordLength"] >= 32


def test_only_the_functions_security_group_reaches_the_cache_on_6379(synth: Synth) -> None:
    cache_sg = get_att(synth.logical_id(synth.stack.cache.security_group), "GroupId")
    functions_sg = get_att(synth.logical_id(synth.stack.network.functions_sg), "GroupId")
    ingress = [
        r["Properties"]
        for r in synth.resources("AWS::EC2::SecurityGroupIngress").values()
        if r["Properties"]["GroupId"] == cache_sg
    ]
    assert ingress == [
        {
            "Description": "functions to the cache",
            "FromPort": 6379,
            "GroupId": cache_sg,
            "IpProtocol": "tcp",
            "SourceSecurityGroupId": functions_sg,
            "ToPort": 6379,
        }
    ]
    (cache_group,) = [
        r["Properties"]
        for lid, r in synth.resources("AWS::EC2::SecurityGroup").items()
        if lid == synth.logical_id(synth.stack.cache.security_group)
    ]
    assert "SecurityGroupIngress" not in cache_group
