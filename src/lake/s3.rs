//! A lake in an S3 bucket (AWS, or any S3-compatible server through `endpoint_url`).

use aws_config::SdkConfig;
use aws_sdk_s3::config::http::HttpResponse;
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart, Delete, ObjectIdentifier};
use aws_sdk_s3::Client;
use polars::prelude::cloud::{AmazonS3ConfigKey, CloudOptions};
use std::time::{Duration, Instant};

use tokio::runtime::Runtime;

use super::{ByteRange, ObjectMeta, ObjectStore, Put};
use crate::aws::{self, describe, AwsOptions};
use crate::error::{Error, Result};

/// Objects larger than this go up in parts of this size (like Kafka Connect's
/// `s3.part.size`), so one slow or failed request does not resend everything.
pub const DEFAULT_PART_SIZE: usize = 16 << 20;
/// S3 refuses smaller parts (except the last).
const MIN_PART_SIZE: usize = 5 << 20;

/// A bucket and key prefix holding the lake.
pub struct S3Store {
    client: Client,
    bucket: String,
    prefix: String,
    part_size: usize,
    runtime: Runtime,
    sdk: SdkConfig,
    options: AwsOptions,
}

impl S3Store {
    /// Connects and checks that `bucket` exists and the credentials may use it.
    pub fn open(bucket: &str, prefix: &str, options: &AwsOptions) -> Result<Self> {
        let part_size = options.part_size.unwrap_or(DEFAULT_PART_SIZE);
        if part_size < MIN_PART_SIZE {
            return Err(Error::config(format!(
                "s3_part_size must be at least {MIN_PART_SIZE} bytes (5 MiB), got {part_size}"
            )));
        }
        let runtime = aws::runtime("stockstream-s3")?;
        let sdk = runtime.block_on(aws::sdk_config(options));
        let config = aws_sdk_s3::config::Builder::from(&sdk).force_path_style(options.path_style());
        let store = S3Store {
            client: Client::from_conf(config.build()),
            bucket: bucket.to_string(),
            prefix: prefix.to_string(),
            part_size,
            runtime,
            sdk,
            options: options.clone(),
        };
        store.check(options)?;
        Ok(store)
    }

    fn check(&self, options: &AwsOptions) -> Result<()> {
        let head = self
            .runtime
            .block_on(self.client.head_bucket().bucket(&self.bucket).send());
        let Err(err) = head else { return Ok(()) };
        let where_ = match &options.endpoint_url {
            Some(e) => format!("s3://{} at {e}", self.bucket),
            None => format!("s3://{}", self.bucket),
        };
        if aws::credentials_missing(&err) {
            return Err(aws::missing_credentials(options, &where_));
        }
        Err(match err.raw_response().map(|r| r.status().as_u16()) {
            Some(404) => Error::not_found(format!("bucket {where_} does not exist")),
            Some(301) => Error::config(format!(
                "bucket {where_} is in another region than {:?}: set region",
                options.region.as_deref().unwrap_or("the default")
            )),
            Some(403) => Error::config(format!(
                "access to bucket {where_} was denied: check the credentials (AWS_ACCESS_KEY_ID / \
                 AWS_PROFILE) and the bucket policy"
            )),
            _ => Error::io(format!("cannot reach bucket {where_}: {}", describe(&err))),
        })
    }

    fn full_key(&self, key: &str) -> String {
        if self.prefix.is_empty() {
            key.to_string()
        } else {
            format!("{}/{key}", self.prefix)
        }
    }

    /// What a write needs, cloneable into concurrent tasks.
    fn writer(&self) -> Writer {
        Writer {
            client: self.client.clone(),
            bucket: self.bucket.clone(),
            part_size: self.part_size,
        }
    }
}

/// Writes objects to one bucket.
#[derive(Clone)]
struct Writer {
    client: Client,
    bucket: String,
    part_size: usize,
}

impl Writer {
    /// Writes `body` at the full key `key`, giving up after a deadline that grows with the
    /// body: a server that stops answering mid-request must not hold a writer for ever
    /// (the SDK's read timeout does not cover a stalled upload, and it retries).
    /// `Ok(false)` if `mode` is `Put::Create` and an object is there.
    async fn put(&self, key: &str, body: &[u8], mode: Put) -> Result<bool> {
        let deadline = put_deadline(body.len());
        if body.len() > self.part_size {
            return self.put_multipart(key, body, mode, deadline).await;
        }
        let write = async {
            let request = self
                .client
                .put_object()
                .bucket(&self.bucket)
                .key(key)
                .body(ByteStream::from(body.to_vec()));
            let request = match mode {
                Put::Replace => request,
                Put::Create => request.if_none_match("*"),
            };
            self.written(key, mode, request.send().await)
        };
        self.within(deadline, key, write).await
    }

    /// `write` of `key`, failed if it takes longer than `deadline`.
    async fn within<T>(
        &self,
        deadline: Duration,
        key: &str,
        write: impl std::future::Future<Output = Result<T>>,
    ) -> Result<T> {
        tokio::time::timeout(deadline, write)
            .await
            .unwrap_or_else(|_| {
                Err(Error::io(format!(
                    "writing s3://{}/{key} timed out after {} s",
                    self.bucket,
                    deadline.as_secs()
                )))
            })
    }

    /// A multipart upload, aborted if it fails or runs out of time: abandoned parts are
    /// stored (and billed) until aborted.
    async fn put_multipart(
        &self,
        key: &str,
        body: &[u8],
        mode: Put,
        deadline: Duration,
    ) -> Result<bool> {
        let started = Instant::now();
        let created = tokio::time::timeout(
            deadline,
            self.client
                .create_multipart_upload()
                .bucket(&self.bucket)
                .key(key)
                .send(),
        )
        .await
        .map_err(|_| {
            Error::io(format!(
                "starting the upload of s3://{}/{key} timed out",
                self.bucket
            ))
        })?
        .map_err(|e| self.failed(key, &e))?;
        let upload_id = created.upload_id().unwrap_or_default().to_string();
        let upload = async {
            let parts = self.upload_parts(key, &upload_id, body).await?;
            let complete = self
                .client
                .complete_multipart_upload()
                .bucket(&self.bucket)
                .key(key)
                .upload_id(&upload_id)
                .multipart_upload(
                    CompletedMultipartUpload::builder()
                        .set_parts(Some(parts))
                        .build(),
                );
            let complete = match mode {
                Put::Replace => complete,
                Put::Create => complete.if_none_match("*"),
            };
            self.written(key, mode, complete.send().await)
        };
        let left = deadline.saturating_sub(started.elapsed());
        let e = match self.within(left, key, upload).await {
            Ok(true) => return Ok(true),
            // Refused because the object is there: the parts are nobody's.
            Ok(false) => {
                return match self.abort_upload(key, &upload_id).await {
                    Ok(()) => Ok(false),
                    Err(abort) => Err(abort),
                }
            }
            Err(e) => e,
        };
        match self.abort_upload(key, &upload_id).await {
            Ok(()) => Err(e),
            Err(abort) => Err(Error::io(format!("{e}; {abort}"))),
        }
    }

    /// Aborts a failed upload, trying a few times (each try bounded: the server may be the
    /// reason the upload failed).
    async fn abort_upload(&self, key: &str, upload_id: &str) -> Result<()> {
        let mut last = String::new();
        for attempt in 0..ABORT_TRIES {
            if attempt > 0 {
                tokio::time::sleep(Duration::from_millis(250 << attempt)).await;
            }
            let abort = self
                .client
                .abort_multipart_upload()
                .bucket(&self.bucket)
                .key(key)
                .upload_id(upload_id)
                .send();
            match tokio::time::timeout(ABORT_DEADLINE, abort).await {
                Ok(Ok(_)) => return Ok(()),
                Ok(Err(e)) => last = describe(&e),
                Err(_) => last = format!("no answer within {} s", ABORT_DEADLINE.as_secs()),
            }
        }
        Err(Error::io(format!(
            "the incomplete upload {upload_id} of s3://{}/{key} could not be aborted ({last}); \
             its parts stay stored until removed: an S3 lifecycle rule that aborts incomplete \
             multipart uploads does it (see the README)",
            self.bucket
        )))
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

    fn failed<E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static>(
        &self,
        key: &str,
        err: &SdkError<E, HttpResponse>,
    ) -> Error {
        failed(&self.bucket, key, err)
    }

    /// The outcome of the request that puts `key` in place (a PUT, or the completion of a
    /// multipart upload): `Ok(false)` if a create found an object there.
    fn written<T, E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static>(
        &self,
        key: &str,
        mode: Put,
        answer: std::result::Result<T, SdkError<E, HttpResponse>>,
    ) -> Result<bool> {
        match answer {
            Ok(_) => Ok(true),
            // Only a create can be refused for what is there; a replace refused so
            // (409 OperationAborted) has failed, and is retried as such.
            Err(e) if mode == Put::Create && precondition_failed(&e) => Ok(false),
            Err(e) => Err(self.failed(key, &e)),
        }
    }
}

/// Whether a conditional write was refused because of the object there: S3 answers 412,
/// or 409 when another conditional write to the key is under way (then the other
/// writer's object is there, or will be, which for a create is the same).
fn precondition_failed<E: ProvideErrorMetadata>(err: &SdkError<E, HttpResponse>) -> bool {
    matches!(
        aws::error_code(err),
        Some("PreconditionFailed" | "ConditionalRequestConflict")
    ) || matches!(
        err.raw_response().map(|r| r.status().as_u16()),
        Some(412 | 409)
    )
}

fn failed<E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static>(
    bucket: &str,
    key: &str,
    err: &SdkError<E, HttpResponse>,
) -> Error {
    let why = describe(err);
    let message = format!("writing s3://{bucket}/{key} failed: {why}");
    match aws::error_code(err) {
        Some("AccessDenied" | "InvalidAccessKeyId" | "SignatureDoesNotMatch") => Error::config(
            format!("{message} (check the credentials and bucket policy)"),
        ),
        Some("NoSuchBucket") => Error::not_found(message),
        _ => Error::io(message).retryable(aws::transient(err)),
    }
}

/// How long one object's write may take: 15 s, plus a second per MiB.
fn put_deadline(bytes: usize) -> Duration {
    Duration::from_secs(15 + (bytes >> 20) as u64)
}

/// Tries, and the time each may take, to abort a failed multipart upload.
const ABORT_TRIES: u32 = 3;
const ABORT_DEADLINE: Duration = Duration::from_secs(5);

/// Objects written at once by `put_all`.
const IN_FLIGHT: usize = 8;
/// How long writes under way may still finish once the writer is asked to stop.
const STOP_GRACE: Duration = Duration::from_secs(2);

impl ObjectStore for S3Store {
    fn put(&self, key: &str, body: &[u8]) -> Result<()> {
        let key = self.full_key(key);
        self.runtime
            .block_on(self.writer().put(&key, body, Put::Replace))
            .map(|_| ())
    }

    fn put_new(&self, key: &str, body: &[u8]) -> Result<bool> {
        let key = self.full_key(key);
        self.runtime
            .block_on(self.writer().put(&key, body, Put::Create))
    }

    /// Up to [`IN_FLIGHT`] writes at once, as tasks of the store's runtime; dropping them
    /// (asked to stop) cancels their requests.
    fn put_all(
        &self,
        objects: &[(&str, &[u8])],
        mode: Put,
        stop: &mut dyn FnMut() -> bool,
    ) -> Option<Vec<Result<bool>>> {
        let mut results: Vec<Option<Result<bool>>> = objects.iter().map(|_| None).collect();
        let mut queued = objects.iter().enumerate();
        self.runtime.block_on(async {
            let mut running = tokio::task::JoinSet::new();
            let mut tasks = std::collections::HashMap::new();
            let mut stop_asked: Option<Instant> = None;
            loop {
                while running.len() < IN_FLIGHT {
                    let Some((i, (key, body))) = queued.next() else {
                        break;
                    };
                    let (writer, key, body) = (self.writer(), self.full_key(key), body.to_vec());
                    let task = running.spawn(async move { writer.put(&key, &body, mode).await });
                    tasks.insert(task.id(), i);
                }
                let finished = tokio::select! {
                    finished = running.join_next_with_id() => finished,
                    () = tokio::time::sleep(crate::kafka::TICK) => {
                        if stop_asked.is_none() && stop() {
                            stop_asked = Some(Instant::now());
                        }
                        if stop_asked.is_some_and(|t| t.elapsed() >= STOP_GRACE) {
                            return None;
                        }
                        continue;
                    }
                };
                let Some(finished) = finished else {
                    return Some(());
                };
                let (id, result) = match finished {
                    Ok((id, result)) => (id, result),
                    Err(e) => (e.id(), Err(Error::io(format!("a write failed: {e}")))),
                };
                if let Some(i) = tasks.remove(&id) {
                    results[i] = Some(result);
                }
            }
        })?;
        Some(
            results
                .into_iter()
                .map(|r| r.unwrap_or_else(|| Err(Error::io("a write was lost"))))
                .collect(),
        )
    }

    fn url(&self, key: &str) -> String {
        format!("s3://{}/{}", self.bucket, self.full_key(key))
    }

    fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>> {
        let full = self.full_key(prefix);
        let strip = if self.prefix.is_empty() {
            0
        } else {
            self.prefix.len() + 1
        };
        self.runtime.block_on(async {
            let mut pages = self
                .client
                .list_objects_v2()
                .bucket(&self.bucket)
                .prefix(&full)
                .into_paginator()
                .send();
            let mut out = Vec::new();
            while let Some(page) = pages.next().await {
                let page = page.map_err(|e| {
                    aws::request_failed(
                        &self.options,
                        &format!("listing s3://{}/{full}", self.bucket),
                        &e,
                    )
                })?;
                for object in page.contents() {
                    let Some(key) = object.key() else { continue };
                    out.push(ObjectMeta {
                        key: key[strip.min(key.len())..].to_string(),
                        size: object.size().unwrap_or(0).max(0) as u64,
                        modified_ms: (object.last_modified())
                            .and_then(|t| t.to_millis().ok())
                            .unwrap_or(0),
                    });
                }
            }
            Ok(out)
        })
    }

    fn read(&self, key: &str, range: ByteRange) -> Result<Vec<u8>> {
        self.get(key, range)
    }

    fn cloud_options(&self) -> Result<Option<CloudOptions>> {
        let credentials = self
            .runtime
            .block_on(aws::credentials(&self.sdk, &self.options))?;
        let mut config = vec![
            (
                AmazonS3ConfigKey::AccessKeyId,
                credentials.access_key_id().to_string(),
            ),
            (
                AmazonS3ConfigKey::SecretAccessKey,
                credentials.secret_access_key().to_string(),
            ),
            (
                AmazonS3ConfigKey::VirtualHostedStyleRequest,
                (!self.options.path_style()).to_string(),
            ),
        ];
        if let Some(token) = credentials.session_token() {
            config.push((AmazonS3ConfigKey::Token, token.to_string()));
        }
        if let Some(region) = self.sdk.region() {
            config.push((AmazonS3ConfigKey::Region, region.to_string()));
        }
        if let Some(endpoint) = self.sdk.endpoint_url() {
            config.push((AmazonS3ConfigKey::Endpoint, endpoint.to_string()));
        }
        Ok(Some(CloudOptions::default().with_aws(config)))
    }

    fn delete(&self, keys: &[String]) -> Result<()> {
        // DeleteObjects takes at most 1,000 keys a request.
        for chunk in keys.chunks(1000) {
            let objects = chunk
                .iter()
                .map(|k| {
                    ObjectIdentifier::builder()
                        .key(self.full_key(k))
                        .build()
                        .map_err(|e| Error::io(format!("bad key {k:?}: {e}")))
                })
                .collect::<Result<Vec<_>>>()?;
            let delete = Delete::builder()
                .set_objects(Some(objects))
                .quiet(true)
                .build()
                .map_err(|e| Error::io(format!("bad delete request: {e}")))?;
            let out = self
                .runtime
                .block_on(
                    self.client
                        .delete_objects()
                        .bucket(&self.bucket)
                        .delete(delete)
                        .send(),
                )
                .map_err(|e| {
                    aws::request_failed(
                        &self.options,
                        &format!("deleting objects in s3://{}", self.bucket),
                        &e,
                    )
                })?;
            if let Some(err) = out.errors().first() {
                return Err(Error::io(format!(
                    "deleting s3://{}/{} failed: {}",
                    self.bucket,
                    err.key().unwrap_or("?"),
                    err.message().unwrap_or("unknown error")
                )));
            }
        }
        Ok(())
    }
}

impl S3Store {
    /// An object's bytes, or part of them.
    fn get(&self, key: &str, range: ByteRange) -> Result<Vec<u8>> {
        let full = self.full_key(key);
        let header = match range {
            ByteRange::All => None,
            ByteRange::Head(n) => Some(format!("bytes=0-{}", n.max(1) - 1)),
            ByteRange::Tail(n) => Some(format!("bytes=-{}", n.max(1))),
        };
        self.runtime.block_on(async {
            let got = self
                .client
                .get_object()
                .bucket(&self.bucket)
                .key(&full)
                .set_range(header)
                .send()
                .await;
            let output = match got {
                Ok(output) => output,
                // A range of an empty object cannot be satisfied: the object is just empty.
                Err(e) if aws::error_code(&e) == Some("InvalidRange") => return Ok(Vec::new()),
                Err(e) if aws::error_code(&e) == Some("NoSuchKey") => {
                    return Err(Error::not_found(format!(
                        "s3://{}/{full} does not exist",
                        self.bucket
                    )))
                }
                Err(e) => {
                    return Err(aws::request_failed(
                        &self.options,
                        &format!("reading s3://{}/{full}", self.bucket),
                        &e,
                    ))
                }
            };
            let body = output.body.collect().await.map_err(|e| {
                Error::io(format!("reading s3://{}/{full} failed: {e}", self.bucket))
            })?;
            Ok(body.into_bytes().to_vec())
        })
    }
}

#[cfg(test)]
mod tests {
    use aws_sdk_s3::config::{BehaviorVersion, Region};
    use aws_sdk_s3::error::ErrorMetadata;
    use aws_sdk_s3::operation::put_object::PutObjectError;
    use aws_sdk_s3::primitives::SdkBody;

    use super::*;
    use crate::error::Kind;

    /// What S3 answers: an HTTP status and, where the service says one, an error code.
    fn answer(status: u16, code: Option<&str>) -> SdkError<PutObjectError, HttpResponse> {
        let mut meta = ErrorMetadata::builder().message("refused");
        if let Some(code) = code {
            meta = meta.code(code);
        }
        let raw = HttpResponse::new(status.try_into().unwrap(), SdkBody::empty());
        SdkError::service_error(PutObjectError::generic(meta.build()), raw)
    }

    #[test]
    fn a_create_refused_because_an_object_is_there_is_told_from_a_failure() {
        for (status, code) in [
            (412, Some("PreconditionFailed")),
            // Another conditional write to the key is under way: its object is there, or will be.
            (409, Some("ConditionalRequestConflict")),
            (412, None),
        ] {
            assert!(
                precondition_failed(&answer(status, code)),
                "{status} {code:?}"
            );
        }
        for (status, code) in [
            (403, Some("AccessDenied")),
            (503, Some("SlowDown")),
            (400, Some("InvalidRequest")),
        ] {
            assert!(
                !precondition_failed(&answer(status, code)),
                "{status} {code:?}"
            );
        }
        let timeout: SdkError<PutObjectError, HttpResponse> = SdkError::timeout_error("slow");
        assert!(!precondition_failed(&timeout));
    }

    #[test]
    fn a_failed_write_is_retried_only_when_sending_it_again_may_succeed() {
        let e = failed("b", "lake/t/x", &answer(403, Some("AccessDenied")));
        assert!(e.is(Kind::Config) && !e.is_retryable(), "{e}");
        assert!(e.to_string().contains("s3://b/lake/t/x") && e.to_string().contains("credentials"));
        let e = failed("b", "k", &answer(404, Some("NoSuchBucket")));
        assert!(e.is(Kind::NotFound) && !e.is_retryable(), "{e}");
        for (status, code) in [
            (503, Some("SlowDown")),
            (500, None),
            (400, Some("RequestTimeout")),
        ] {
            let e = failed("b", "k", &answer(status, code));
            assert!(e.is(Kind::Io) && e.is_retryable(), "{status} {code:?}: {e}");
        }
        let e = failed("b", "k", &answer(400, Some("InvalidArgument")));
        assert!(e.is(Kind::Io) && !e.is_retryable(), "{e}");
        let e = failed(
            "b",
            "k",
            &SdkError::<PutObjectError, _>::timeout_error("slow"),
        );
        assert!(e.is_retryable(), "{e}");
    }

    fn client() -> Client {
        let config = aws_sdk_s3::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new("us-east-1"))
            .build();
        Client::from_conf(config)
    }

    #[test]
    fn a_stalled_write_fails_at_its_deadline_and_may_be_retried() {
        // 15 s covers any request's round trips; larger bodies get a second per MiB.
        assert_eq!(put_deadline(0), Duration::from_secs(15));
        assert_eq!(put_deadline((1 << 20) - 1), Duration::from_secs(15));
        assert_eq!(put_deadline(100 << 20), Duration::from_secs(115));
        let writer = Writer {
            client: client(),
            bucket: "b".into(),
            part_size: DEFAULT_PART_SIZE,
        };
        let runtime = aws::runtime("test-s3").unwrap();
        let started = Instant::now();
        let stalled = std::future::pending::<Result<bool>>();
        let e = runtime
            .block_on(writer.within(Duration::from_millis(100), "t/x", stalled))
            .unwrap_err();
        assert!(started.elapsed() < Duration::from_secs(5));
        assert!(
            e.is_retryable() && e.to_string().contains("s3://b/t/x timed out"),
            "{e}"
        );
        let done = runtime
            .block_on(writer.within(Duration::from_secs(1), "t/x", async { Ok(true) }))
            .unwrap();
        assert!(done);
    }

    #[test]
    fn keys_go_below_the_prefix_and_parts_s3_refuses_are_refused_first() {
        let store = |prefix: &str| S3Store {
            client: client(),
            bucket: "b".into(),
            prefix: prefix.into(),
            part_size: DEFAULT_PART_SIZE,
            runtime: aws::runtime("test-s3").unwrap(),
            sdk: SdkConfig::builder().build(),
            options: AwsOptions::default(),
        };
        assert_eq!(store("lake/v1").full_key("t/x.json"), "lake/v1/t/x.json");
        assert_eq!(store("lake/v1").url("t/x.json"), "s3://b/lake/v1/t/x.json");
        assert_eq!(store("").full_key("t/x.json"), "t/x.json");
        assert_eq!(store("").url("t/x.json"), "s3://b/t/x.json");
        // Refused before any request: no bucket is reached for this.
        let options = AwsOptions {
            part_size: Some(MIN_PART_SIZE - 1),
            endpoint_url: Some("http://127.0.0.1:9".into()),
            ..AwsOptions::default()
        };
        let e = S3Store::open("b", "", &options).err().unwrap();
        assert!(
            e.is(Kind::Config) && e.to_string().contains("s3_part_size"),
            "{e}"
        );
    }
}
