"""Storage on AWS: the CloudFront distribution in front of the storage bucket's `public/` keys (Origin Access
Control, HTTPS only, logged), the bucket and key policies that let it read those and nothing else, the CDN base URL
every function gets, and CORS for browser uploads."""

from __future__ import annotations

import json
from typing import Any

import pytest
from underlay.storage.settings import PUBLIC_PREFIX

from infra.constructs.storage import CDN_BASE_URL_ENV, LOG_PREFIX
from infra.stage_config import STAGES_DIR, CdnConfig, load_stage_config, stage_file
from tests.infra.conftest import Synth, as_list, get_att, ref

CACHING_OPTIMIZED = "658327ea-f89d-4fab-a63d-7e88639e58f6"  # AWS managed cache policy
SECURITY_HEADERS = "67f7725c-6f97-4210-82d7-5512b31e9d03"  # AWS managed response headers policy


def _distribution(synth: Synth) -> tuple[str, dict[str, Any]]:
    (logical_id,) = synth.resources("AWS::CloudFront::Distribution")
    return logical_id, synth.props(logical_id)["DistributionConfig"]


def _bucket_id(synth: Synth) -> str:
    return synth.logical_id(synth.stack.data.buckets["storage"])


def _bucket_statements(synth: Synth) -> list[dict[str, Any]]:
    (policy,) = [
        p
        for p in synth.resources("AWS::S3::BucketPolicy").values()
        if p["Properties"]["Bucket"] == ref(_bucket_id(synth))
    ]
    return list(policy["Properties"]["PolicyDocument"]["Statement"])


def _objects(synth: Synth, pattern: str) -> dict[str, Any]:
    return {"Fn::Join": ["", [get_att(_bucket_id(synth)), f"/{pattern}"]]}


def test_the_stage_enables_the_cdn(synth: Synth) -> None:
    assert synth.config.cdn.enabled, "the default stage must have a CDN, or the assertions here test nothing"


def test_the_distribution_serves_the_bucket_over_https_through_origin_access_control(synth: Synth) -> None:
    _, config = _distribution(synth)
    (origin,) = config["Origins"]
    assert origin["DomainName"] == get_att(_bucket_id(synth), "RegionalDomainName")
    assert origin["S3OriginConfig"] == {"OriginAccessIdentity": ""}  # no legacy OAI
    (oac_id,) = synth.resources("AWS::CloudFront::OriginAccessControl")
    assert origin["OriginAccessControlId"] == get_att(oac_id, "Id")
    oac = synth.props(oac_id)["OriginAccessControlConfig"]
    assert (oac["OriginAccessControlOriginType"], oac["SigningBehavior"], oac["SigningProtocol"]) == (
        "s3",
        "always",
        "sigv4",
    )
    behavior = config["DefaultCacheBehavior"]
    assert behavior["ViewerProtocolPolicy"] == "https-only"
    assert behavior["AllowedMethods"] == ["GET", "HEAD"]
    assert behavior["CachePolicyId"] == CACHING_OPTIMIZED
    assert behavior["ResponseHeadersPolicyId"] == SECURITY_HEADERS
    assert "CacheBehaviors" not in config
    assert config["PriceClass"] == synth.config.cdn.price_class
    assert config["Logging"] == {
        "Bucket": get_att(synth.logical_id(synth.stack.data.access_logs), "RegionalDomainName"),
        "Prefix": LOG_PREFIX,
    }
    assert "WebACLId" not in config  # dev sets none (and says why in its acknowledgment)


def test_only_this_distribution_reads_the_bucket_and_only_public_keys(synth: Synth) -> None:
    distribution_id, _ = _distribution(synth)
    cloudfront = [
        s for s in _bucket_statements(synth) if s.get("Principal") == {"Service": "cloudfront.amazonaws.com"}
    ]
    allows = [s for s in cloudfront if s["Effect"] == "Allow"]
    assert [as_list(s["Action"]) for s in allows] == [["s3:GetObject"]]
    source = allows[0]["Condition"]["StringEquals"]["AWS:SourceArn"]
    assert ref(distribution_id) in source["Fn::Join"][1]  # this distribution, not any of the account's
    (deny,) = [s for s in cloudfront if s["Effect"] == "Deny"]
    assert deny["Action"] == "s3:*"
    assert deny["NotResource"] == _objects(synth, f"{PUBLIC_PREFIX}/*")
    assert PUBLIC_PREFIX == "public"
    # Nobody else is let in: the bucket still blocks public access.
    bucket = synth.props(_bucket_id(synth))
    assert all(bucket["PublicAccessBlockConfiguration"].values())
    assert not [s for s in _bucket_statements(synth) if s["Effect"] == "Allow" and s not in allows]


def test_cloudfront_may_only_decrypt_with_the_data_key(synth: Synth) -> None:
    key = synth.props(synth.logical_id(synth.stack.data.key))
    (statement,) = [
        s
        for s in key["KeyPolicy"]["Statement"]
        if s.get("Principal") == {"Service": "cloudfront.amazonaws.com"}
    ]
    assert statement["Action"] == "kms:Decrypt"
    arn = json.dumps(statement["Condition"]["ArnLike"]["AWS:SourceArn"])
    assert ":cloudfront::" in arn and ":distribution/" in arn


def test_every_function_gets_the_cdn_base_url(synth: Synth) -> None:
    distribution_id, _ = _distribution(synth)
    expected = {"Fn::Join": ["", ["https://", get_att(distribution_id, "DomainName")]]}
    for name, fn in synth.stack.functions.functions.items():
        env = synth.props(synth.logical_id(fn))["Environment"]["Variables"]
        assert env[CDN_BASE_URL_ENV] == expected, name
    assert CDN_BASE_URL_ENV == "UNDERLAY_STORAGE__CDN_BASE_URL"  # StorageSettings.cdn_base_url
    assert synth.template["Outputs"]["StorageCdnUrl"]["Value"] == expected


def test_browsers_may_post_uploads_from_the_stage_origins(synth: Synth) -> None:
    (rule,) = synth.props(_bucket_id(synth))["CorsConfiguration"]["CorsRules"]
    assert rule["AllowedOrigins"] == synth.config.api.cors_origins
    assert sorted(rule["AllowedMethods"]) == ["GET", "HEAD", "POST"]
    audit = synth.props(synth.logical_id(synth.stack.data.buckets["audit"]))
    assert "CorsConfiguration" not in audit


# --- the construct's other paths, in a small stack of its own (no full synth) -------------------


@pytest.fixture(scope="module")
def variants() -> dict[str, Any]:
    """`Storage` without a CDN and without CORS origins, and with a web ACL, on buckets of a bare stack."""
    import aws_cdk as cdk
    from aws_cdk import aws_s3 as s3
    from aws_cdk.assertions import Template
    from cdk_nag import AwsSolutionsChecks

    from infra.constructs.storage import Storage

    app = cdk.App()
    stack = cdk.Stack(app, "StorageVariants")
    logs = s3.Bucket(stack, "Logs", object_ownership=s3.ObjectOwnership.BUCKET_OWNER_PREFERRED)
    plain = Storage(
        stack, "Plain", stage="t", bucket=s3.Bucket(stack, "A"), log_bucket=logs, cors_origins=[], cdn=False
    )
    acl = "arn:aws:wafv2:us-east-1:123456789012:global/webacl/edge/0f3c1b2a-1111-2222-3333-444455556666"
    waf = Storage(
        stack,
        "Waf",
        stage="t",
        bucket=s3.Bucket(stack, "B"),
        log_bucket=logs,
        cors_origins=["*"],
        cdn=True,
        price_class="PriceClass_All",
        web_acl_arn=acl,
    )
    report = AwsSolutionsChecks().validate_scope(waf)
    cfr = sorted({v.rule_name for v in report.violations if v.rule_name.startswith("AwsSolutions-CFR")})
    return {
        "plain": plain,
        "waf": waf,
        "acl": acl,
        "template": Template.from_stack(stack).to_json(),
        "cfr": cfr,
    }


def test_without_a_cdn_there_is_no_distribution_and_no_base_url(variants: dict[str, Any]) -> None:
    assert variants["plain"].distribution is None and variants["plain"].cdn_base_url is None
    distributions = [
        r for r in variants["template"]["Resources"].values() if r["Type"].startswith("AWS::CloudFront")
    ]
    assert len([r for r in distributions if r["Type"] == "AWS::CloudFront::Distribution"]) == 1  # the WAF one
    buckets = {k: v for k, v in variants["template"]["Resources"].items() if v["Type"] == "AWS::S3::Bucket"}
    assert sum("CorsConfiguration" in b.get("Properties", {}) for b in buckets.values()) == 1  # "*" only


def test_a_web_acl_and_price_class_come_from_the_stage_and_leave_no_cloudfront_finding(
    variants: dict[str, Any],
) -> None:
    (distribution,) = [
        r for r in variants["template"]["Resources"].values() if r["Type"] == "AWS::CloudFront::Distribution"
    ]
    config = distribution["Properties"]["DistributionConfig"]
    assert config["WebACLId"] == variants["acl"]
    assert config["PriceClass"] == "PriceClass_All"
    assert variants["cfr"] == []


# --- stage config ---------------------------------------------------------------------------------


@pytest.mark.parametrize("stage", sorted(p.stem for p in STAGES_DIR.glob("*.json")))
def test_every_shipped_stage_has_a_cdn(stage: str) -> None:
    assert load_stage_config(stage_file(stage)).cdn.enabled


@pytest.mark.parametrize(
    "bad",
    [
        {"price_class": "PriceClass_50"},
        {"web_acl_arn": "arn:aws:wafv2:eu-west-1:123456789012:regional/webacl/x/0f3c1b2a"},
        {"enable": True},
    ],
)
def test_bad_cdn_config_is_refused(bad: dict[str, Any]) -> None:
    from pydantic import ValidationError

    with pytest.raises(ValidationError):
        CdnConfig.model_validate(bad)
    assert CdnConfig().enabled is False  # a stage file without `cdn` gets none
