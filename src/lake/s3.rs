//! A lake in an S3 bucket (AWS, or any S3-compatible server through `endpoint_url`).
//! Credentials come from aws-config's default chain (environment, profile, SSO, instance
//! role) and never appear in messages.

use std::time::Duration;

use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, Region};
use aws_sdk_s3::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
use aws_sdk_s3::Client;
use tokio::runtime::Runtime;

use super::ObjectStore;
use crate::error::{Error, Result};

/// Objects larger than this go up in parts of this size (like Kafka Connect's
/// `s3.part.size`), so one slow or failed request does not resend everything.
pub const DEFAULT_PART_SIZE: usize = 16 << 20;
/// S3 refuses smaller parts (except the last).
const MIN_PART_SIZE: usize = 5 << 20;

/// How to reach S3. Everything is optional: the defaults are aws-config's.
#[derive(Debug, Clone, Default)]
pub struct S3Options {
    /// An S3-compatible server (`http://127.0.0.1:9000`); implies path-style addressing.
    pub endpoint_url: Option<String>,
    pub region: Option<String>,
    /// A named profile from `~/.aws/config`.
    pub profile: Option<String>,
    /// Force (or forbid) path-style addressing; default: on with `endpoint_url`, off otherwise.
    pub path_style: Option<bool>,
    /// Multipart upload part size; `None` is [`DEFAULT_PART_SIZE`].
    pub part_size: Option<usize>,
}

/// A bucket and key prefix holding the lake.
pub struct S3Store {
    client: Client,
    bucket: String,
    prefix: String,
    part_size: usize,
    runtime: Runtime,
}

impl S3Store {
    /// Connects and checks that `bucket` exists and the credentials may use it.
    pub fn open(bucket: &str, prefix: &str, options: &S3Options) -> Result<Self> {
        let part_size = options.part_size.unwrap_or(DEFAULT_PART_SIZE);
        if part_size < MIN_PART_SIZE {
            return Err(Error::Config(format!(
                "s3_part_size must be at least {MIN_PART_SIZE} bytes (5 MiB), got {part_size}"
            )));
        }
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("stockstream-s3")
            .enable_all()
            .build()
            .map_err(|e| Error::Io(format!("cannot start the S3 client runtime: {e}")))?;
        let client = runtime.block_on(client(options));
        let store = S3Store {
            client,
            bucket: bucket.to_string(),
            prefix: prefix.to_string(),
            part_size,
            runtime,
        };
        store.check(options)?;
        Ok(store)
    }

    fn check(&self, options: &S3Options) -> Result<()> {
        let head = self
            .runtime
            .block_on(self.client.head_bucket().bucket(&self.bucket).send());
        let Err(err) = head else { return Ok(()) };
        let where_ = match &options.endpoint_url {
            Some(e) => format!("s3://{} at {e}", self.bucket),
            None => format!("s3://{}", self.bucket),
        };
        if credentials_missing(&err) {
            let from = options
                .profile
                .as_ref()
                .map_or(String::new(), |p| format!(" from profile {p:?}"));
            return Err(Error::Config(format!(
                "no AWS credentials could be loaded{from} for {where_}: set AWS_ACCESS_KEY_ID and \
                 AWS_SECRET_ACCESS_KEY, or name an existing profile (aws configure / aws sso login)"
            )));
        }
        Err(match err.raw_response().map(|r| r.status().as_u16()) {
            Some(404) => Error::NotFound(format!("bucket {where_} does not exist")),
            Some(301) => Error::Config(format!(
                "bucket {where_} is in another region than {:?}: set region",
                options.region.as_deref().unwrap_or("the default")
            )),
            Some(403) => Error::Config(format!(
                "access to bucket {where_} was denied: check the credentials (AWS_ACCESS_KEY_ID / \
                 AWS_PROFILE) and the bucket policy"
            )),
            _ => Error::Io(format!("cannot reach bucket {where_}: {}", describe(&err))),
        })
    }

    fn full_key(&self, key: &str) -> String {
        if self.prefix.is_empty() {
            key.to_string()
        } else {
            format!("{}/{key}", self.prefix)
        }
    }

    async fn put_multipart(&self, key: &str, body: &[u8]) -> Result<()> {
        let created = self
            .client
            .create_multipart_upload()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
            .map_err(|e| self.failed(key, &e))?;
        let upload_id = created.upload_id().unwrap_or_default().to_string();
        let uploaded = self.upload_parts(key, &upload_id, body).await;
        let completed = match uploaded {
            Ok(parts) => self
                .client
                .complete_multipart_upload()
                .bucket(&self.bucket)
                .key(key)
                .upload_id(&upload_id)
                .multipart_upload(
                    CompletedMultipartUpload::builder()
                        .set_parts(Some(parts))
                        .build(),
                )
                .send()
                .await
                .map(|_| ())
                .map_err(|e| self.failed(key, &e)),
            Err(e) => Err(e),
        };
        if completed.is_err() {
            // Abandoned parts are billed until aborted.
            let _ = self
                .client
                .abort_multipart_upload()
                .bucket(&self.bucket)
                .key(key)
                .upload_id(&upload_id)
                .send()
                .await;
        }
        completed
    }

    async fn upload_parts(
        &self,
        key: &str,
        upload_id: &str,
        body: &[u8],
    ) -> Result<Vec<CompletedPart>> {
        let mut parts = Vec::new();
        for (i, chunk) in body.chunks(self.part_size).enumerate() {
            let number = i as i32 + 1;
            let part = self
                .client
                .upload_part()
                .bucket(&self.bucket)
                .key(key)
                .upload_id(upload_id)
                .part_number(number)
                .body(ByteStream::from(chunk.to_vec()))
                .send()
                .await
                .map_err(|e| self.failed(key, &e))?;
            parts.push(
                CompletedPart::builder()
                    .part_number(number)
                    .set_e_tag(part.e_tag().map(str::to_string))
                    .build(),
            );
        }
        Ok(parts)
    }

    fn failed<E: ProvideErrorMetadata + std::error::Error + 'static, R: std::fmt::Debug>(
        &self,
        key: &str,
        err: &SdkError<E, R>,
    ) -> Error {
        Error::Io(format!(
            "writing s3://{}/{key} failed: {}",
            self.bucket,
            describe(err)
        ))
    }
}

impl ObjectStore for S3Store {
    fn put(&self, key: &str, body: &[u8]) -> Result<()> {
        let key = self.full_key(key);
        self.runtime.block_on(async {
            if body.len() > self.part_size {
                return self.put_multipart(&key, body).await;
            }
            self.client
                .put_object()
                .bucket(&self.bucket)
                .key(&key)
                .body(ByteStream::from(body.to_vec()))
                .send()
                .await
                .map(|_| ())
                .map_err(|e| self.failed(&key, &e))
        })
    }

    fn url(&self, key: &str) -> String {
        format!("s3://{}/{}", self.bucket, self.full_key(key))
    }
}

/// An S3 client from aws-config's default chain plus the caller's overrides. The SDK
/// retries throttling, 5xx and connection errors with exponential backoff.
async fn client(options: &S3Options) -> Client {
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
    let shared = loader.load().await;
    let mut config = aws_sdk_s3::config::Builder::from(&shared);
    if shared.region().is_none() {
        // S3-compatible servers ignore the region, but the SDK needs one to sign requests.
        config = config.region(Region::new("us-east-1"));
    }
    if let Some(endpoint) = &options.endpoint_url {
        config = config.endpoint_url(endpoint);
    }
    config = config.force_path_style(options.path_style.unwrap_or(options.endpoint_url.is_some()));
    Client::from_conf(config.build())
}

/// Whether a request failed because no credentials could be resolved.
fn credentials_missing(err: &(dyn std::error::Error + 'static)) -> bool {
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
fn describe<E: ProvideErrorMetadata + std::error::Error + 'static, R: std::fmt::Debug>(
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
