"""The application bucket's delivery: browser uploads (CORS for presigned POSTs) and, when the stage config says
so, a CloudFront distribution that serves its `public/` keys (`underlay.storage.cdn_url`).

The distribution reads the bucket through Origin Access Control (SigV4-signed requests from this distribution
only), HTTPS only, GET and HEAD only. The bucket stays private: its policy lets this distribution GET objects and
then denies CloudFront everything outside `public/`, so a private key (`private/invoices/...`) is refused at the
edge even to someone who knows it; those are reached through presigned downloads alone.

The bucket is SSE-KMS with the stack's data key. CloudFront decrypts through the key policy statement CDK adds for
OAC, whose condition names any distribution of this account (`distribution/*`): naming this one would make the
key depend on the distribution that depends on the bucket that depends on the key. It grants no object by
itself: only this distribution may read the bucket.
"""

from __future__ import annotations

from aws_cdk import Annotations, Duration
from aws_cdk import aws_cloudfront as cloudfront
from aws_cdk import aws_cloudfront_origins as origins
from aws_cdk import aws_iam as iam
from aws_cdk import aws_s3 as s3
from constructs import Construct
from underlay.storage.settings import PUBLIC_PREFIX

from infra.constructs import acknowledge

# StorageSettings.cdn_base_url (underlay.storage.settings): UNDERLAY_STORAGE__CDN_BASE_URL
CDN_BASE_URL_ENV = "UNDERLAY_STORAGE__CDN_BASE_URL"
PRICE_CLASSES = {
    "PriceClass_100": cloudfront.PriceClass.PRICE_CLASS_100,
    "PriceClass_200": cloudfront.PriceClass.PRICE_CLASS_200,
    "PriceClass_All": cloudfront.PriceClass.PRICE_CLASS_ALL,
}
LOG_PREFIX = "cdn/"
# Presigned POSTs come straight from browsers; how long they may cache the preflight.
UPLOAD_CORS_MAX_AGE = Duration.hours(1)
OAC_KEY_WARNING = "@aws-cdk/aws-cloudfront-origins:wildcardKeyPolicyForOac"


class Storage(Construct):
    """CORS for uploads to `bucket` from `cors_origins`, and, with `cdn=True`, the distribution.

    `cdn_base_url` is `https://<distribution domain>` (a token) when there is a CDN, else None.
    """

    def __init__(
        self,
        scope: Construct,
        id: str,
        *,
        stage: str,
        bucket: s3.Bucket,
        log_bucket: s3.IBucket,
        cors_origins: list[str],
        cdn: bool,
        price_class: str = "PriceClass_100",
        web_acl_arn: str | None = None,
    ) -> None:
        super().__init__(scope, id)
        self.bucket = bucket
        if cors_origins:
            # A browser POSTs the form to the bucket and may GET a presigned download from a page's script.
            bucket.add_cors_rule(
                allowed_methods=[s3.HttpMethods.POST, s3.HttpMethods.GET, s3.HttpMethods.HEAD],
                allowed_origins=list(cors_origins),
                allowed_headers=["*"],
                exposed_headers=["ETag"],
                max_age=int(UPLOAD_CORS_MAX_AGE.to_seconds()),
            )
        self.distribution: cloudfront.Distribution | None = None
        self.cdn_base_url: str | None = None
        if cdn:
            self.distribution = self._distribution(stage, bucket, log_bucket, price_class, web_acl_arn)
            self.cdn_base_url = f"https://{self.distribution.distribution_domain_name}"

    def _distribution(
        self,
        stage: str,
        bucket: s3.Bucket,
        log_bucket: s3.IBucket,
        price_class: str,
        web_acl_arn: str | None,
    ) -> cloudfront.Distribution:
        distribution = cloudfront.Distribution(
            self,
            "Distribution",
            comment=f"Underlay {stage}: public objects of the storage bucket",
            default_behavior=cloudfront.BehaviorOptions(
                origin=origins.S3BucketOrigin.with_origin_access_control(
                    bucket, origin_access_levels=[cloudfront.AccessLevel.READ]
                ),
                viewer_protocol_policy=cloudfront.ViewerProtocolPolicy.HTTPS_ONLY,
                allowed_methods=cloudfront.AllowedMethods.ALLOW_GET_HEAD,
                cached_methods=cloudfront.CachedMethods.CACHE_GET_HEAD,
                # Keys name one version of an object for good (a new upload gets a new id), so cache long.
                cache_policy=cloudfront.CachePolicy.CACHING_OPTIMIZED,
                # nosniff above all: an uploaded file is only ever what its Content-Type says.
                response_headers_policy=cloudfront.ResponseHeadersPolicy.SECURITY_HEADERS,
                compress=True,
            ),
            price_class=PRICE_CLASSES[price_class],
            http_version=cloudfront.HttpVersion.HTTP2_AND_3,
            enable_logging=True,
            log_bucket=log_bucket,
            log_file_prefix=LOG_PREFIX,
            web_acl_id=web_acl_arn,
        )
        # OAC's grant covers every object; CloudFront may read `public/` keys and nothing else.
        bucket.add_to_resource_policy(
            iam.PolicyStatement(
                sid="CdnServesPublicKeysOnly",
                effect=iam.Effect.DENY,
                principals=[iam.ServicePrincipal("cloudfront.amazonaws.com")],
                actions=["s3:*"],
                not_resources=[bucket.arn_for_objects(f"{PUBLIC_PREFIX}/*")],
            )
        )
        if bucket.encryption_key is not None:
            Annotations.of(bucket.encryption_key.node.scope or self).acknowledge_warning(
                OAC_KEY_WARNING,
                "The key policy names any distribution of this account to avoid a key -> distribution cycle; "
                "the bucket policy lets only this distribution read, and only public/ keys.",
            )
        acknowledge(
            distribution,
            "AwsSolutions-CFR1",
            "Public objects are served worldwide on purpose; a stage that must not can add a geo restriction "
            "here, as it is a business rule rather than a security control of the storage bucket.",
        )
        if web_acl_arn is None:
            acknowledge(
                distribution,
                "AwsSolutions-CFR2",
                "The distribution serves static public objects (GET and HEAD only, nothing reaches a function); "
                "a stage that wants WAF rate rules sets cdn.web_acl_arn to a CLOUDFRONT-scope web ACL.",
            )
        acknowledge(
            distribution,
            "AwsSolutions-CFR4",
            "The distribution uses its cloudfront.net name and CloudFront's default certificate, whose minimum "
            "TLS version CloudFront fixes; a custom domain with its own ACM certificate would allow TLSv1.2_2021.",
        )
        return distribution
