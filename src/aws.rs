//! Reaching AWS (S3, Glue, Athena) or an S3-compatible server: one resolved aws-config
//! shared by every client, so credentials, region and endpoint are configured once.
//! Credentials come from aws-config's default chain (environment, profile, SSO, instance
//! role) and never appear in messages.

use std::time::Duration;

use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_credential_types::provider::ProvideCredentials;
use aws_sdk_s3::config::http::HttpResponse;
use aws_sdk_s3::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use tokio::runtime::Runtime;

use crate::error::{Error, Result};

/// How to reach AWS. Everything is optional: the defaults are aws-config's.
#[derive(Debug, Clone, Default)]
pub struct AwsOptions {
    /// An S3-compatible server (`http://127.0.0.1:9000`); implies path-style addressing.
    /// Glue and Athena clients use it too (a test server serves them all on one port);
    /// `AWS_ENDPOINT_URL_S3` and friends set one service's endpoint alone.
    pub endpoint_url: Option<String>,
    pub region: Option<String>,
    /// A named profile from `~/.aws/config`.
    pub profile: Option<String>,
    /// Force (or forbid) path-style addressing; default: on with `endpoint_url`, off otherwise.
    pub path_style: Option<bool>,
    /// Multipart upload part size; `None` is the S3 store's default.
    pub part_size: Option<usize>,
}

impl AwsOptions {
    /// Whether S3 requests address the bucket in the path rather than the host name.
    pub fn path_style(&self) -> bool {
        self.path_style.unwrap_or(self.endpoint_url.is_some())
    }
}

/// A small runtime for the blocking calls the core makes to AWS.
pub fn runtime(name: &str) -> Result<Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name(name)
        .enable_all()
        .build()
        .map_err(|e| Error::io(format!("cannot start the {name} runtime: {e}")))
}

/// aws-config's default chain plus the caller's overrides. The SDK retries throttling, 5xx
/// and connection errors with exponential backoff.
pub async fn sdk_config(options: &AwsOptions) -> SdkConfig {
    let mut loader = aws_config::defaults(BehaviorVersion::latest())
        .retry_config(RetryConfig::standard().with_max_attempts(5))
        .timeout_config(
            TimeoutConfig::builder()
                .connect_timeout(Duration::from_secs(5))
                // A server that dies mid-request leaves the connection silent: give up on it
                // (and retry) rather than wait for the whole attempt timeout.
                .read_timeout(Duration::from_secs(10))
                .operation_attempt_timeout(Duration::from_secs(120))
                .build(),
        );
    if let Some(region) = &options.region {
        loader = loader.region(Region::new(region.clone()));
    }
    if let Some(profile) = &options.profile {
        // Only that profile's credentials: a misspelt profile must fail, not silently fall
        // back to whatever the environment holds.
        loader = loader.profile_name(profile).credentials_provider(
            aws_config::profile::ProfileFileCredentialsProvider::builder()
                .profile_name(profile)
                .build(),
        );
    }
    if let Some(endpoint) = &options.endpoint_url {
        loader = loader.endpoint_url(endpoint);
    }
    let config = loader.load().await;
    if config.region().is_none() {
        // S3-compatible servers ignore the region, but the SDK needs one to sign requests.
        return config
            .into_builder()
            .region(Region::new("us-east-1"))
            .build();
    }
    config
}

/// Credentials resolved now from `config`, for readers outside the SDK (Polars).
pub async fn credentials(
    config: &SdkConfig,
    options: &AwsOptions,
) -> Result<aws_credential_types::Credentials> {
    let Some(provider) = config.credentials_provider() else {
        return Err(missing_credentials(options, "AWS"));
    };
    provider
        .provide_credentials()
        .await
        .map_err(|_| missing_credentials(options, "AWS"))
}

/// The error for a request made without loadable credentials.
pub fn missing_credentials(options: &AwsOptions, what: &str) -> Error {
    let from = options
        .profile
        .as_ref()
        .map_or(String::new(), |p| format!(" from profile {p:?}"));
    Error::config(format!(
        "no AWS credentials could be loaded{from} for {what}: set AWS_ACCESS_KEY_ID and \
         AWS_SECRET_ACCESS_KEY, or name an existing profile (aws configure / aws sso login)"
    ))
}

/// Whether a request failed because no credentials could be resolved.
pub fn credentials_missing(err: &(dyn std::error::Error + 'static)) -> bool {
    let mut cause = Some(err);
    while let Some(e) = cause {
        if e.downcast_ref::<aws_credential_types::provider::error::CredentialsError>()
            .is_some()
        {
            return true;
        }
        cause = e.source();
    }
    false
}

/// The error's code and message, or its full cause chain when the service gave none
/// (connection refused, timeouts, missing credentials).
pub fn describe<E: ProvideErrorMetadata + std::error::Error + 'static, R: std::fmt::Debug>(
    err: &SdkError<E, R>,
) -> String {
    match err {
        SdkError::ServiceError(service) => {
            let e = service.err();
            match (e.code(), e.message()) {
                (Some(code), Some(message)) => format!("{code}: {message}"),
                (Some(code), None) => code.to_string(),
                _ => DisplayErrorContext(err).to_string(),
            }
        }
        _ => DisplayErrorContext(err).to_string(),
    }
}

/// The service's error code, if the request reached the service.
pub fn error_code<E: ProvideErrorMetadata, R>(err: &SdkError<E, R>) -> Option<&str> {
    match err {
        SdkError::ServiceError(service) => service.err().code(),
        _ => None,
    }
}

/// Whether a request that failed this way may succeed if sent again: no answer in time, a
/// connection that failed or broke, throttling, a server error. A request the service
/// refused for what it asked (access denied, no such bucket, a malformed request) fails
/// the same way every time.
pub fn transient<E: ProvideErrorMetadata>(err: &SdkError<E, HttpResponse>) -> bool {
    match err {
        SdkError::TimeoutError(_) | SdkError::DispatchFailure(_) | SdkError::ResponseError(_) => {
            true
        }
        SdkError::ServiceError(service) => {
            let status = service.raw().status().as_u16();
            status >= 500
                || status == 429
                || status == 408
                || matches!(
                    service.err().code(),
                    Some(
                        "Throttling"
                            | "ThrottlingException"
                            | "SlowDown"
                            | "RequestTimeout"
                            | "RequestLimitExceeded"
                            | "TooManyRequestsException"
                            | "InternalError"
                            | "ServiceUnavailable"
                            | "ConcurrentModificationException"
                    )
                )
        }
        _ => false,
    }
}

/// A failed AWS request as the core's error, naming `what` was asked: missing credentials
/// and refused access are configuration problems, missing things are not found, and
/// everything else an I/O failure, retryable when [`transient`].
pub fn request_failed<E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static>(
    options: &AwsOptions,
    what: &str,
    err: &SdkError<E, HttpResponse>,
) -> Error {
    if credentials_missing(err) {
        return missing_credentials(options, what);
    }
    match error_code(err) {
        Some("AccessDeniedException" | "AccessDenied" | "UnrecognizedClientException")
        | Some("InvalidClientTokenId" | "InvalidAccessKeyId" | "SignatureDoesNotMatch") => {
            Error::config(format!(
                "access denied for {what}: {} (check the credentials and IAM policy)",
                describe(err)
            ))
        }
        Some("EntityNotFoundException" | "NoSuchKey" | "NoSuchBucket") => {
            Error::not_found(format!("{what}: {}", describe(err)))
        }
        _ => Error::io(format!("{what} failed: {}", describe(err))).retryable(transient(err)),
    }
}
