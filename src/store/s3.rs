//! A store in an S3 bucket (AWS S3 or any S3-compatible service).
//!
//! Only portable S3 behaviour is used: path-style addressing when configured,
//! `If-None-Match: *` for create-only writes, multipart uploads for large objects,
//! `ListObjectsV2` pagination. Optionally, every object written carries an S3
//! Object Lock retention (with the Content-MD5 that S3 then requires) and asks
//! for server-side encryption; with Object Lock, deletes remove every version of
//! a key (the bucket is versioned) and a still-retained one is a [`Retained`]
//! error. Uploads stream: the writer fills one part buffer at a
//! time and keeps at most `concurrency` parts in flight, so memory stays at about
//! `part_size × (concurrency + 1)` whatever the object's size.
//!
//! The rest of bkp is synchronous; this module owns a small tokio runtime and
//! blocks on it at the edge.

use std::collections::{HashMap, VecDeque};
use std::io::{self, Read, Write};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use aws_sdk_s3::config::http::HttpResponse;
use aws_sdk_s3::error::SdkError;
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart, Delete, ObjectIdentifier};
use aws_sdk_s3::Client;
use time::OffsetDateTime;
use tokio::runtime::Runtime;
use tokio::task::JoinHandle;

use super::{
    already_exists, check_key, not_found, Metadata, ObjectInfo, ObjectWriter, Store, Unfinished,
};
use crate::exit::{coded, Code};

mod hold;
mod read;
use read::S3Reader;

/// Connection settings for an S3 store. Credentials come from the standard AWS
/// chain (environment, profile, web identity, instance metadata) unless
/// `credentials_env` names the environment variables that hold them.
#[derive(Debug, Clone)]
pub struct S3Settings {
    pub bucket: String,
    pub prefix: String,
    /// The region as configured; `None` leaves it to the SDK's region chain
    /// (`AWS_REGION`, `AWS_DEFAULT_REGION`, the profile, instance metadata), then
    /// [`DEFAULT_REGION`].
    pub region: Option<String>,
    pub endpoint: Option<String>,
    pub path_style: bool,
    /// A PEM bundle of extra root CAs to trust (private endpoints), if any.
    pub ca_file: Option<std::path::PathBuf>,
    pub part_size: usize,
    pub concurrency: usize,
    /// Retention every object written gets (S3 Object Lock), if any.
    pub object_lock: Option<ObjectLock>,
    /// Server-side encryption every object written asks for, if any.
    pub sse: Option<Sse>,
    /// The storage class data objects are written in, if not the bucket's
    /// default (see [`DataClass`]).
    pub storage_class: Option<DataClass>,
    /// The names of the environment variables holding this store's access key
    /// and secret key, when it is reached with another identity than the
    /// standard chain's (a copy in another account); never the keys themselves.
    pub credentials_env: Option<(String, String)>,
}

/// A storage class for data objects: written only to keys under
/// `prefixes` (the kinds' folders and the WAL archive). Every other object
/// (manifests, catalogs, heads, the store marker, leases, reports) stays in
/// the bucket's default class: every run reads them, and an archived one
/// would stop every run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataClass {
    /// S3's name of the class, as `PutObject` takes it (`STANDARD_IA`,
    /// `GLACIER_IR`, `DEEP_ARCHIVE`, …).
    pub class: String,
    /// Key prefixes (ending in `/`) whose objects take the class.
    pub prefixes: Vec<String>,
    /// How the keys end, under those prefixes, that stay in the default
    /// class all the same (chunk lists: a restore reads them first).
    pub standard_suffixes: Vec<String>,
}

impl DataClass {
    /// The class object `key` is written in, if not the default.
    fn of(this: Option<&DataClass>, key: &str) -> Option<aws_sdk_s3::types::StorageClass> {
        let c = this?;
        let data = c.prefixes.iter().any(|p| key.starts_with(p.as_str()))
            && !c
                .standard_suffixes
                .iter()
                .any(|s| key.ends_with(s.as_str()));
        data.then(|| aws_sdk_s3::types::StorageClass::from(c.class.as_str()))
    }
}

/// S3 Object Lock retention modes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LockMode {
    /// Users with `s3:BypassGovernanceRetention` can still delete.
    Governance,
    /// Nobody can delete, not even the account's root user.
    Compliance,
}

/// The retention given to every object bkp writes: `mode` until `days` after the write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ObjectLock {
    pub mode: LockMode,
    pub days: u32,
}

impl ObjectLock {
    fn sdk_mode(&self) -> aws_sdk_s3::types::ObjectLockMode {
        match self.mode {
            LockMode::Governance => aws_sdk_s3::types::ObjectLockMode::Governance,
            LockMode::Compliance => aws_sdk_s3::types::ObjectLockMode::Compliance,
        }
    }

    /// The retain-until date of an object written now.
    fn until(&self) -> aws_sdk_s3::primitives::DateTime {
        let at = OffsetDateTime::now_utc() + time::Duration::days(i64::from(self.days));
        aws_sdk_s3::primitives::DateTime::from_secs(at.unix_timestamp())
    }
}

/// Server-side encryption requested on every write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sse {
    /// `AES256`: keys managed by S3 (SSE-S3).
    Aes256,
    /// `aws:kms`: SSE-KMS under `key_id`, or the account's default S3 key.
    Kms { key_id: Option<String> },
}

impl Sse {
    fn sdk(&self) -> aws_sdk_s3::types::ServerSideEncryption {
        match self {
            Sse::Aes256 => aws_sdk_s3::types::ServerSideEncryption::Aes256,
            Sse::Kms { .. } => aws_sdk_s3::types::ServerSideEncryption::AwsKms,
        }
    }

    fn key_id(&self) -> Option<String> {
        match self {
            Sse::Aes256 => None,
            Sse::Kms { key_id } => key_id.clone(),
        }
    }
}

/// Adds the configured retention and encryption headers to a request that creates
/// an object (PutObject, CreateMultipartUpload, CopyObject).
macro_rules! protect {
    ($req:expr, $lock:expr, $sse:expr, $class:expr) => {{
        let mut req = $req.set_storage_class($class);
        if let Some(lock) = $lock {
            req = req
                .object_lock_mode(lock.sdk_mode())
                .object_lock_retain_until_date(lock.until());
        }
        if let Some(sse) = $sse {
            req = req
                .server_side_encryption(sse.sdk())
                .set_ssekms_key_id(sse.key_id());
        }
        req
    }};
}

/// The base64 Content-MD5 of `data`: S3 requires an integrity header on writes to
/// a bucket with Object Lock, and MD5 is the one every S3-compatible service knows.
fn content_md5(data: &[u8]) -> String {
    use base64::Engine;
    use md5::Digest;
    base64::engine::general_purpose::STANDARD.encode(md5::Md5::digest(data))
}

/// An object that cannot be deleted yet: its Object Lock retention has not ended.
#[derive(Debug)]
pub struct Retained {
    pub key: String,
    pub until: Option<OffsetDateTime>,
}

impl std::fmt::Display for Retained {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.until.and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        }) {
            Some(t) => write!(f, "{} is kept until {t} by Object Lock", self.key),
            None => write!(f, "{} is kept by Object Lock", self.key),
        }
    }
}

impl std::error::Error for Retained {}

/// Buckets whose Object Lock configuration this process has already verified.
static LOCK_VERIFIED: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());

/// The region used when neither the config nor the SDK's chain names one.
pub const DEFAULT_REGION: &str = "us-east-1";

/// The HTTPS client every S3 client uses (the store, replicate's S3 source, and
/// the SDK's credential and region providers): rustls on ring with the
/// platform's root CAs, plus those in the PEM bundle at `ca_file`
/// (store.ca_file) if one is named. The bundle is checked here: the SDK would
/// only parse it on the first connection, and panic.
fn https_client(ca_file: Option<&std::path::Path>) -> Result<aws_sdk_s3::config::SharedHttpClient> {
    use aws_smithy_http_client::tls;
    let mut builder = aws_smithy_http_client::Builder::new().tls_provider(tls::Provider::Rustls(
        tls::rustls_provider::CryptoMode::Ring,
    ));
    if let Some(path) = ca_file {
        builder = builder.tls_context(tls_context_trusting(path)?);
    }
    Ok(builder.build_https())
}

/// The platform's root CAs plus those in the PEM bundle at `path`.
fn tls_context_trusting(path: &std::path::Path) -> Result<aws_smithy_http_client::tls::TlsContext> {
    use aws_smithy_http_client::tls;
    use rustls_pki_types::pem::PemObject;
    let bad = |why: String| {
        coded(
            Code::Config,
            format!(
                "store.ca_file {}: {why}; name a PEM file of root certificates (-----BEGIN CERTIFICATE-----)",
                path.display()
            ),
        )
    };
    let pem = std::fs::read(path).map_err(|e| bad(format!("cannot read it: {e}")))?;
    let certs = rustls_pki_types::CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad(format!("not valid PEM: {e}")))?;
    if certs.is_empty() {
        return Err(bad("holds no certificate".into()));
    }
    let mut roots = rustls::RootCertStore::empty();
    for cert in certs {
        roots
            .add(cert)
            .map_err(|e| bad(format!("a certificate cannot be a root CA: {e}")))?;
    }
    let trust = tls::TrustStore::default().with_pem_certificate(pem);
    tls::TlsContext::builder()
        .with_trust_store(trust)
        .build()
        .map_err(|e| bad(format!("{e}")))
}

/// S3's smallest allowed part (except the last).
pub const MIN_PART_SIZE: usize = 5 * 1024 * 1024;
/// S3's largest part (and the cap for grown parts).
pub const MAX_PART_SIZE: usize = 5 * 1024 * 1024 * 1024;
/// S3's largest part number.
const MAX_PARTS: i32 = 10_000;

#[derive(Clone)]
pub struct S3Store {
    rt: Arc<Runtime>,
    client: Client,
    // Behind a pointer: the handle stays small (it is an enum variant).
    s: Arc<S3Settings>,
    /// The keys whose retention this handle already extended (see `hold.rs`),
    /// and the note set when the region is the fallback [`DEFAULT_REGION`]:
    /// behind one pointer, to keep the handle small.
    held: Arc<(hold::Held, Option<String>)>,
}

impl S3Store {
    pub fn new(settings: S3Settings) -> Result<Self> {
        let Some((access, secret)) = settings.credentials_env.clone() else {
            return Self::build(settings, None);
        };
        let get = |v: &str| {
            std::env::var(v).map_err(|_| {
                coded(
                    Code::Config,
                    format!("the store s3://{}/{} takes its credentials from {v}, which is not set: export the store's access key and secret key", settings.bucket, settings.prefix),
                )
            })
        };
        let (a, k) = (get(&access)?, get(&secret)?);
        Self::with_credentials(settings, &a, &k)
    }

    /// Like [`S3Store::new`], but with these static credentials instead of the
    /// standard AWS chain (a source bucket read with another identity).
    pub fn with_credentials(
        settings: S3Settings,
        access_key: &str,
        secret_key: &str,
    ) -> Result<Self> {
        let creds = aws_sdk_s3::config::Credentials::new(access_key, secret_key, None, None, "bkp");
        Self::build(settings, Some(creds))
    }

    fn build(settings: S3Settings, creds: Option<aws_sdk_s3::config::Credentials>) -> Result<Self> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(settings.concurrency.clamp(2, 8))
            .thread_name("bkp-s3")
            .enable_all()
            .build()
            .context("failed to start the S3 client runtime")?;
        let http = https_client(settings.ca_file.as_deref())?;
        let (client, region_note) = rt.block_on(async {
            // The one HTTPS client serves the credential and region providers too.
            let mut loader =
                aws_config::defaults(aws_config::BehaviorVersion::latest()).http_client(http);
            // Without a configured region the loader runs the SDK's own region
            // chain; retries (AWS_MAX_ATTEMPTS, AWS_RETRY_MODE) and an endpoint
            // from AWS_ENDPOINT_URL(_S3) are left to it as well.
            if let Some(r) = &settings.region {
                loader = loader.region(aws_config::Region::new(r.clone()));
            }
            if let Some(ep) = &settings.endpoint {
                loader = loader.endpoint_url(ep);
            }
            if let Some(c) = creds {
                loader = loader.credentials_provider(c);
            }
            let shared = loader.load().await;
            let timeouts = aws_config::timeout::TimeoutConfig::builder()
                .connect_timeout(Duration::from_secs(10))
                .operation_attempt_timeout(Duration::from_secs(600))
                .build();
            let mut conf = aws_sdk_s3::config::Builder::from(&shared);
            let region_note = if shared.region().is_none() {
                conf = conf.region(aws_config::Region::new(DEFAULT_REGION));
                Some(format!(
                    "region {DEFAULT_REGION} by default: neither store.region, BKP_S3_REGION, AWS_REGION, AWS_DEFAULT_REGION nor the AWS profile names one"
                ))
            } else {
                None
            };
            let conf = conf
                .force_path_style(settings.path_style)
                .timeout_config(timeouts)
                // Only send checksums S3 requires: several S3-compatible services
                // reject the SDK's default trailing checksums. Integrity is
                // guaranteed end to end by bkp's own SHA-256 anyway.
                .request_checksum_calculation(
                    aws_sdk_s3::config::RequestChecksumCalculation::WhenRequired,
                )
                .response_checksum_validation(
                    aws_sdk_s3::config::ResponseChecksumValidation::WhenRequired,
                )
                .build();
            (Client::from_conf(conf), region_note)
        });
        Ok(S3Store {
            rt: Arc::new(rt),
            client,
            s: Arc::new(settings),
            held: Arc::new((hold::Held::default(), region_note)),
        })
    }

    /// The body of `out` (a GetObject of `full`, the full key of `key`) as a
    /// reader that resumes a broken download (see [`read`]).
    fn reader(
        &self,
        full: &str,
        key: &str,
        out: aws_sdk_s3::operation::get_object::GetObjectOutput,
    ) -> S3Reader {
        S3Reader::new(
            self.rt.clone(),
            self.client.clone(),
            &self.s.bucket,
            full,
            self.where_(key),
            out,
        )
    }

    fn full_key(&self, key: &str) -> Result<String> {
        check_key(key)?;
        Ok(if self.s.prefix.is_empty() {
            key.to_string()
        } else {
            format!("{}/{}", self.s.prefix, key)
        })
    }

    fn strip(&self, full: &str) -> Option<String> {
        if self.s.prefix.is_empty() {
            Some(full.to_string())
        } else {
            full.strip_prefix(&format!("{}/", self.s.prefix))
                .map(str::to_string)
        }
    }

    fn where_(&self, key: &str) -> String {
        format!(
            "s3://{}/{}",
            self.s.bucket,
            self.full_key(key).unwrap_or_default()
        )
    }
}

/// Turns an SDK error into an error that names the object and is classified:
/// network trouble, timeouts, throttling and 5xx answers are transient (retry
/// later); a refusal (403, a missing bucket, a bad region) is a configuration
/// problem.
fn sdk_error<E>(err: SdkError<E, HttpResponse>, what: String) -> anyhow::Error
where
    E: std::error::Error + aws_sdk_s3::error::ProvideErrorMetadata + Send + Sync + 'static,
{
    use aws_sdk_s3::error::ProvideErrorMetadata;
    let status = status_of(&err);
    let transient = match &err {
        SdkError::TimeoutError(_) | SdkError::DispatchFailure(_) | SdkError::ResponseError(_) => {
            true
        }
        SdkError::ServiceError(_) => status.is_some_and(|s| s >= 500 || s == 429 || s == 408),
        _ => false,
    };
    // One line in bkp's words: the SDK's whole chain (its Debug output of
    // every layer) only with `-v`.
    let detail = if crate::ui::error_detail() {
        aws_sdk_s3::error::DisplayErrorContext(&err).to_string()
    } else {
        match (err.code(), err.message()) {
            (Some(code), Some(message)) => format!("{code}: {}", printable_short(message)),
            (Some(code), None) => printable_short(code),
            _ => not_s3(&err).unwrap_or_else(|| root_cause(&err)),
        }
    };
    if let Some(c) = credentials_error(&err) {
        let more = if crate::ui::error_detail() {
            format!(": {detail}")
        } else {
            "; `-v` shows the SDK's detail".to_string()
        };
        return coded(
            Code::Config,
            format!("{what}: no S3 credentials could be loaded ({c}); set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or AWS_PROFILE, or give the host a role (on a host that has one, the instance metadata service did not answer){more}"),
        );
    }
    if err.code() == Some("InvalidObjectState") {
        return coded(
            Code::Archived,
            format!("{what}: it is in an archive storage class (S3 Glacier Flexible Retrieval or Deep Archive) and cannot be read until restored ({detail}); ask the provider for a restored copy (`bkp restore … --request-restore` asks for every object a restore needs), and run again once it is readable: minutes to 48 hours, by retrieval tier"),
        );
    }
    if transient {
        coded(
            Code::Transient,
            format!("{what}: the object store could not be reached or answered with a temporary error ({detail}); retry later, and check store.endpoint, store.path_style and the network if it persists"),
        )
    } else if status.is_some_and(|s| (400..500).contains(&s)) {
        coded(
            Code::Config,
            format!("{what}: the object store refused the request ({detail}); check store.bucket, store.region, store.endpoint and the credentials (AWS_ACCESS_KEY_ID / profile / role) and their permissions"),
        )
    } else {
        anyhow::anyhow!("{what}: {detail}")
    }
}

/// The innermost error of `err`'s chain, in one short line: what actually
/// went wrong ("connection refused", "dns error: …", a service's message).
fn root_cause(err: &(dyn std::error::Error + 'static)) -> String {
    let mut last = err;
    while let Some(next) = last.source() {
        last = next;
    }
    let text = printable_short(&last.to_string());
    if text.is_empty() {
        printable_short(&err.to_string())
    } else {
        text
    }
}

/// An answer without an S3 error code: its status, and the start of its
/// body when it has one (a proxy's or a web server's page says what
/// answered). An empty body is S3's own answer to a HEAD, which carries no
/// error document: then the status alone (403: access denied, 404: no such
/// key or bucket, 301: another region).
fn not_s3<E>(err: &SdkError<E, HttpResponse>) -> Option<String> {
    let r = err.raw_response()?;
    let status = r.status().as_u16();
    let body = r.body().bytes().unwrap_or_default();
    if body.iter().all(u8::is_ascii_whitespace) {
        let meaning = match status {
            301 => " (the bucket is in another region: set store.region)",
            400 => " (bad request)",
            403 => " (access denied: check the credentials and the bucket policy)",
            404 => " (no such bucket or key)",
            _ => "",
        };
        return Some(format!("HTTP {status}{meaning}"));
    }
    let start = String::from_utf8_lossy(&body[..body.len().min(120)]).into_owned();
    Some(format!(
        "HTTP {status} with no S3 error in it: {}",
        printable_short(&start)
    ))
}

/// A server's or library's text, one line of at most 300 characters.
fn printable_short(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(300)
        .collect()
}

/// The credentials error in `err`'s chain that means none are configured (as
/// opposed to a provider that timed out or failed on the network).
fn credentials_error(err: &(dyn std::error::Error + 'static)) -> Option<String> {
    use aws_credential_types::provider::error::CredentialsError;
    let mut next = Some(err);
    while let Some(e) = next {
        if let Some(c) = e.downcast_ref::<CredentialsError>() {
            return matches!(
                c,
                CredentialsError::CredentialsNotLoaded(_)
                    | CredentialsError::InvalidConfiguration(_)
            )
            .then(|| c.to_string());
        }
        next = e.source();
    }
    None
}

/// Answers that mean "the key exists" to a create-only write: 412 Precondition
/// Failed, and 409 ConditionalRequestConflict (AWS, on a concurrent write).
fn is_exists(status: Option<u16>) -> bool {
    matches!(status, Some(412) | Some(409))
}

fn status_of<E>(err: &SdkError<E, HttpResponse>) -> Option<u16> {
    err.raw_response().map(|r| r.status().as_u16())
}

fn to_time(dt: Option<&aws_sdk_s3::primitives::DateTime>) -> Option<OffsetDateTime> {
    dt.and_then(|d| OffsetDateTime::from_unix_timestamp(d.secs()).ok())
}

fn meta_map(metadata: &Metadata) -> HashMap<String, String> {
    metadata.iter().cloned().collect()
}

struct S3Writer {
    rt: Arc<Runtime>,
    client: Client,
    bucket: String,
    key: String,
    full_key: String,
    metadata: HashMap<String, String>,
    buf: Vec<u8>,
    part_size: usize,
    concurrency: usize,
    upload_id: Option<String>,
    next_part: i32,
    in_flight: VecDeque<JoinHandle<Result<CompletedPart>>>,
    done: Vec<CompletedPart>,
    size: u64,
    finished: bool,
    lock: Option<ObjectLock>,
    sse: Option<Sse>,
    class: Option<aws_sdk_s3::types::StorageClass>,
}

impl S3Writer {
    fn where_(&self) -> String {
        format!("s3://{}/{}", self.bucket, self.full_key)
    }

    /// Part size for the next part: doubles every 2,000 parts (up to S3's 5 GiB
    /// part limit) so that a stream of unknown length does not run out of S3's
    /// 10,000 part numbers. With 16 MiB parts the first 31 GiB use the configured
    /// size, and so the configured memory.
    fn target_part_size(&self) -> usize {
        let doublings = ((self.next_part - 1).max(0) / 2000) as u32;
        self.part_size
            .saturating_mul(1usize << doublings.min(8))
            .min(MAX_PART_SIZE)
    }

    fn start_multipart(&mut self) -> Result<String> {
        if let Some(id) = &self.upload_id {
            return Ok(id.clone());
        }
        let out = self
            .rt
            .block_on(
                protect!(
                    self.client
                        .create_multipart_upload()
                        .bucket(&self.bucket)
                        .key(&self.full_key)
                        .set_metadata(Some(self.metadata.clone())),
                    &self.lock,
                    &self.sse,
                    self.class.clone()
                )
                .send(),
            )
            .map_err(|e| {
                sdk_error(
                    e,
                    format!("failed to start the upload of {}", self.where_()),
                )
            })?;
        let id = out
            .upload_id()
            .context("the object store returned no upload id")?
            .to_string();
        self.upload_id = Some(id.clone());
        Ok(id)
    }

    fn wait_oldest(&mut self) -> Result<()> {
        if let Some(h) = self.in_flight.pop_front() {
            let part = self.rt.block_on(h).context("an upload task panicked")??;
            self.done.push(part);
        }
        Ok(())
    }

    fn send_part(&mut self, data: Vec<u8>) -> Result<()> {
        if self.next_part > MAX_PARTS {
            anyhow::bail!(
                "{} exceeds S3's 10,000 parts: raise store.part_size",
                self.where_()
            );
        }
        let upload_id = self.start_multipart()?;
        while self.in_flight.len() >= self.concurrency {
            self.wait_oldest()?;
        }
        let n = self.next_part;
        self.next_part += 1;
        let client = self.client.clone();
        let (bucket, key, where_) = (self.bucket.clone(), self.full_key.clone(), self.where_());
        let md5 = self.lock.is_some().then(|| content_md5(&data));
        self.in_flight.push_back(self.rt.spawn(async move {
            let out = client
                .upload_part()
                .bucket(bucket)
                .key(key)
                .upload_id(upload_id)
                .part_number(n)
                .set_content_md5(md5)
                .body(ByteStream::from(data))
                .send()
                .await
                .map_err(|e| sdk_error(e, format!("failed to upload part {n} of {where_}")))?;
            Ok(CompletedPart::builder()
                .part_number(n)
                .set_e_tag(out.e_tag().map(str::to_string))
                .build())
        }));
        crate::failpoint::hit("store-write");
        Ok(())
    }

    fn abort_upload(&mut self) {
        for h in self.in_flight.drain(..) {
            h.abort();
        }
        if let Some(id) = self.upload_id.take() {
            let _ = self.rt.block_on(
                self.client
                    .abort_multipart_upload()
                    .bucket(&self.bucket)
                    .key(&self.full_key)
                    .upload_id(id)
                    .send(),
            );
        }
    }

    fn complete(&mut self) -> Result<Option<String>> {
        if self.upload_id.is_none() {
            // Small object: one conditional PUT.
            let body = std::mem::take(&mut self.buf);
            let md5 = self.lock.is_some().then(|| content_md5(&body));
            let res = self.rt.block_on(
                protect!(
                    self.client
                        .put_object()
                        .bucket(&self.bucket)
                        .key(&self.full_key)
                        .set_metadata(Some(self.metadata.clone()))
                        .if_none_match("*")
                        .set_content_md5(md5)
                        .body(ByteStream::from(body)),
                    &self.lock,
                    &self.sse,
                    self.class.clone()
                )
                .send(),
            );
            return match res {
                Ok(out) => Ok(out.e_tag().map(str::to_string)),
                Err(e) if is_exists(status_of(&e)) => {
                    Err(already_exists(&format!("s3://{}", self.bucket), &self.key))
                }
                Err(e) => Err(sdk_error(e, format!("failed to upload {}", self.where_()))),
            };
        }
        if !self.buf.is_empty() {
            let last = std::mem::take(&mut self.buf);
            self.send_part(last)?;
        }
        while !self.in_flight.is_empty() {
            self.wait_oldest()?;
        }
        self.done.sort_by_key(|p| p.part_number());
        let upload = CompletedMultipartUpload::builder()
            .set_parts(Some(std::mem::take(&mut self.done)))
            .build();
        let id = self.upload_id.clone().unwrap_or_default();
        let res = self.rt.block_on(
            self.client
                .complete_multipart_upload()
                .bucket(&self.bucket)
                .key(&self.full_key)
                .upload_id(id)
                .multipart_upload(upload)
                .if_none_match("*")
                .send(),
        );
        match res {
            Ok(out) => {
                self.upload_id = None;
                Ok(out.e_tag().map(str::to_string))
            }
            Err(e) if is_exists(status_of(&e)) => {
                Err(already_exists(&format!("s3://{}", self.bucket), &self.key))
            }
            Err(e) => Err(sdk_error(
                e,
                format!("failed to complete the upload of {}", self.where_()),
            )),
        }
    }
}

impl Write for S3Writer {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let target = self.target_part_size();
        let room = target - self.buf.len();
        let n = room.min(data.len());
        self.buf.extend_from_slice(&data[..n]);
        self.size += n as u64;
        if self.buf.len() >= target {
            let next = Vec::with_capacity(self.target_part_size());
            let full = std::mem::replace(&mut self.buf, next);
            self.send_part(full).map_err(crate::exit::to_io)?;
        }
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl ObjectWriter for S3Writer {
    fn finish(mut self: Box<Self>) -> Result<ObjectInfo> {
        self.finished = true;
        let etag = match self.complete() {
            Ok(etag) => etag,
            Err(e) => {
                self.abort_upload();
                return Err(e);
            }
        };
        Ok(ObjectInfo {
            key: self.key.clone(),
            size: self.size,
            modified: Some(OffsetDateTime::now_utc()),
            etag,
        })
    }

    fn abort(mut self: Box<Self>) -> Result<()> {
        self.finished = true;
        self.abort_upload();
        Ok(())
    }
}

impl Drop for S3Writer {
    fn drop(&mut self) {
        // Reached without finish/abort only on an error path: do not leave a
        // multipart upload behind (they are billed and invisible).
        if !self.finished {
            self.abort_upload();
        }
    }
}

impl Store for S3Store {
    fn as_s3(&self) -> Option<&S3Store> {
        Some(self)
    }

    /// `s3://bucket/prefix`: stable however the endpoint is spelt, since the ledger
    /// derives the store's account from it.
    fn identity(&self) -> String {
        format!("s3://{}/{}", self.s.bucket, self.s.prefix)
    }

    fn note(&self) -> Option<String> {
        self.held.1.clone()
    }

    fn create(&self, key: &str, metadata: &Metadata) -> Result<Box<dyn ObjectWriter>> {
        self.full_key(key)?;
        self.preflight_writes()?;
        // A fast, friendly refusal when the key exists, before a long upload. The
        // conditional write is what guarantees create-only; write-only credentials
        // may not be allowed to HEAD, so a refused HEAD is not an error here.
        if self.head(key)?.is_some() {
            return Err(already_exists(&format!("s3://{}", self.s.bucket), key));
        }
        Ok(Box::new(self.writer(key, metadata)?))
    }

    /// One conditional PUT: a small object needs no HEAD first, the PUT's
    /// `If-None-Match` refuses a key that exists.
    fn put_new(&self, key: &str, bytes: &[u8], metadata: &Metadata) -> Result<ObjectInfo> {
        self.preflight_writes()?;
        let mut w = Box::new(self.writer(key, metadata)?);
        if let Err(e) = w.write_all(bytes) {
            let _ = w.abort();
            return Err(anyhow::Error::new(e).context(format!("failed to write {key}")));
        }
        w.finish()
    }

    fn open(&self, key: &str) -> Result<Box<dyn Read + Send>> {
        let full = self.full_key(key)?;
        let res = self.rt.block_on(
            self.client
                .get_object()
                .bucket(&self.s.bucket)
                .key(&full)
                .send(),
        );
        match res {
            Ok(out) => Ok(Box::new(self.reader(&full, key, out))),
            Err(e) if status_of(&e) == Some(404) => Err(not_found(&self.identity(), key)),
            Err(e) => Err(sdk_error(e, format!("failed to read {}", self.where_(key)))),
        }
    }

    fn parallelism(&self) -> usize {
        self.s.concurrency
    }

    /// Large objects as `store.concurrency` ranged GETs of `store.part_size`
    /// at once, every one pinned to the ETag a HEAD found (`If-Match`), so a
    /// replaced object fails the read instead of splicing two versions.
    fn open_parallel(&self, key: &str) -> Result<Box<dyn Read + Send>> {
        let part = self.s.part_size as u64;
        let Some(info) = self.head_with_etag(key)? else {
            return Err(not_found(&self.identity(), key));
        };
        let size = info.size;
        let Some(etag) = info.etag.filter(|_| size > part && self.s.concurrency > 1) else {
            return self.open(key);
        };
        let me = self.clone();
        let key = key.to_string();
        let open: Arc<super::parallel::OpenRange> = Arc::new(move |a, b| {
            let range = format!("bytes={a}-{}", b - 1);
            me.open_if_match(&key, Some(&etag), Some(&range))?
                .ok_or_else(|| {
                    coded(
                        Code::Transient,
                        format!(
                            "failed to read {}: it changed while being read (its ETag is no longer {etag}); retry",
                            me.where_(&key)
                        ),
                    )
                })
        });
        Ok(Box::new(super::parallel::ParallelReader::new(
            size,
            part,
            self.s.concurrency,
            open,
        )?))
    }

    fn head(&self, key: &str) -> Result<Option<ObjectInfo>> {
        self.head_with_etag(key)
    }

    fn archived(&self, key: &str) -> Result<Option<super::Archived>> {
        let Some(out) = self.head_object(key)? else {
            return Err(not_found(&self.identity(), key));
        };
        let class = out.storage_class().map(|c| c.as_str().to_string());
        let cold = matches!(class.as_deref(), Some("GLACIER" | "DEEP_ARCHIVE"))
            || out.archive_status().is_some();
        // `x-amz-restore`: `ongoing-request="true"` while it runs, "false"
        // (with an expiry date) once a restored copy is readable.
        let restore = out.restore().unwrap_or_default();
        Ok(
            (cold && !restore.contains("ongoing-request=\"false\"")).then(|| super::Archived {
                class: class.unwrap_or_else(|| "INTELLIGENT_TIERING".into()),
                restoring: restore.contains("ongoing-request=\"true\""),
            }),
        )
    }

    fn request_restore(
        &self,
        key: &str,
        state: &super::Archived,
        days: u32,
        tier: super::RetrievalTier,
    ) -> Result<()> {
        use aws_sdk_s3::types::{GlacierJobParameters, RestoreRequest, Tier};
        let full = self.full_key(key)?;
        let job = GlacierJobParameters::builder()
            .tier(Tier::from(tier.as_str()))
            .build()
            .context("a restore request")?;
        // Intelligent-Tiering's archive tiers take no number of days: the
        // object moves back to its frequent access tier.
        let tiering = state.class == "INTELLIGENT_TIERING";
        let request = RestoreRequest::builder()
            .set_days((!tiering).then_some(days as i32))
            .glacier_job_parameters(job)
            .build();
        let res = self.rt.block_on(
            self.client
                .restore_object()
                .bucket(&self.s.bucket)
                .key(&full)
                .restore_request(request)
                .send(),
        );
        match res {
            Ok(_) => Ok(()),
            Err(e)
                if aws_sdk_s3::error::ProvideErrorMetadata::code(&e)
                    == Some("RestoreAlreadyInProgress") =>
            {
                Ok(())
            }
            Err(e) => Err(sdk_error(
                e,
                format!("failed to request the restore of {}", self.where_(key)),
            )),
        }
    }

    fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>> {
        self.list_with_etags(prefix)
    }

    fn list_after(&self, prefix: &str, after: &str) -> Result<Vec<ObjectInfo>> {
        self.list_pages(prefix, Some(after))
    }

    // Page by page: a listing of years of keys is not held as objects.
    fn list_each(&self, prefix: &str, each: &mut dyn FnMut(ObjectInfo)) -> Result<()> {
        self.each_listed(prefix, None, each)
    }

    fn sweep_unfinished(&self, before: OffsetDateTime, dry_run: bool) -> Result<Vec<Unfinished>> {
        let prefix = if self.s.prefix.is_empty() {
            String::new()
        } else {
            format!("{}/", self.s.prefix)
        };
        let mut stale = Vec::new();
        let (mut key_marker, mut id_marker): (Option<String>, Option<String>) = (None, None);
        loop {
            let page = self
                .rt
                .block_on(
                    self.client
                        .list_multipart_uploads()
                        .bucket(&self.s.bucket)
                        .prefix(&prefix)
                        .set_key_marker(key_marker.take())
                        .set_upload_id_marker(id_marker.take())
                        .send(),
                )
                .map_err(|e| {
                    sdk_error(
                        e,
                        format!(
                            "failed to list unfinished uploads in s3://{}/{prefix}",
                            self.s.bucket
                        ),
                    )
                })?;
            for u in page.uploads() {
                let started = to_time(u.initiated());
                let old = started.is_some_and(|t| t < before);
                if let (true, Some(k), Some(id)) = (old, u.key(), u.upload_id()) {
                    stale.push((k.to_string(), id.to_string(), started));
                }
            }
            if page.is_truncated() != Some(true) {
                break;
            }
            key_marker = page.next_key_marker().map(str::to_string);
            id_marker = page.next_upload_id_marker().map(str::to_string);
            if key_marker.is_none() {
                break;
            }
        }
        let mut found = Vec::new();
        for (key, id, started) in stale {
            found.push(Unfinished {
                key: key.strip_prefix(&prefix).unwrap_or(&key).to_string(),
                started,
            });
            if dry_run {
                continue;
            }
            self.rt
                .block_on(
                    self.client
                        .abort_multipart_upload()
                        .bucket(&self.s.bucket)
                        .key(&key)
                        .upload_id(id)
                        .send(),
                )
                .map_err(|e| {
                    sdk_error(
                        e,
                        format!(
                            "failed to discard the unfinished upload of s3://{}/{key}",
                            self.s.bucket
                        ),
                    )
                })?;
        }
        Ok(found)
    }

    fn preflight_writes(&self) -> Result<()> {
        if self.s.object_lock.is_none() {
            return Ok(());
        }
        let bucket = &self.s.bucket;
        if LOCK_VERIFIED
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains(bucket)
        {
            return Ok(());
        }
        let res = self.rt.block_on(
            self.client
                .get_object_lock_configuration()
                .bucket(bucket)
                .send(),
        );
        let enabled = match res {
            Ok(out) => out
                .object_lock_configuration()
                .and_then(|c| c.object_lock_enabled())
                .is_some_and(|e| *e == aws_sdk_s3::types::ObjectLockEnabled::Enabled),
            Err(e) if lock_not_configured(&e) => false,
            Err(e) => {
                return Err(sdk_error(
                    e,
                    format!("failed to read the Object Lock configuration of bucket {bucket}"),
                ))
            }
        };
        if !enabled {
            return Err(coded(
                Code::Config,
                format!("store.object_lock_mode is set but bucket {bucket} does not have Object Lock enabled, so its objects could not be retained: enable Object Lock on the bucket (it can be turned on for an existing bucket, with versioning) or remove store.object_lock_mode and store.object_lock_days"),
            ));
        }
        LOCK_VERIFIED
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(bucket.clone());
        Ok(())
    }

    fn altered(&self, prefix: &str) -> Result<Option<Vec<(String, String)>>> {
        if self.s.object_lock.is_none() {
            return Ok(None);
        }
        self.altered_versions(prefix).map(Some)
    }

    fn retained_until(&self, key: &str) -> Result<Option<OffsetDateTime>> {
        // Only asked where retention is configured: one HEAD per object otherwise
        // wasted on every deletion.
        if self.s.object_lock.is_none() {
            return Ok(None);
        }
        let full = self.full_key(key)?;
        let res = self.rt.block_on(
            self.client
                .head_object()
                .bucket(&self.s.bucket)
                .key(&full)
                .send(),
        );
        match res {
            Ok(out) => Ok(to_time(out.object_lock_retain_until_date())
                .filter(|t| *t > OffsetDateTime::now_utc())),
            Err(e) if status_of(&e) == Some(404) => Ok(None),
            Err(e) => Err(sdk_error(
                e,
                format!("failed to look up the retention of {}", self.where_(key)),
            )),
        }
    }

    fn extend_retention(&self, keys: &[String]) -> Result<usize> {
        self.hold(keys)
    }

    fn delete(&self, key: &str) -> Result<()> {
        let full = self.full_key(key)?;
        if self.s.object_lock.is_some() {
            return self.delete_versions(key, &full);
        }
        self.rt
            .block_on(
                self.client
                    .delete_object()
                    .bucket(&self.s.bucket)
                    .key(&full)
                    .send(),
            )
            .map_err(|e| sdk_error(e, format!("failed to delete {}", self.where_(key))))?;
        Ok(())
    }

    /// Without Object Lock a delete is one request per key, and
    /// DeleteObjects takes up to 1,000 of them at once.
    fn deletes_in_batches(&self) -> bool {
        self.s.object_lock.is_none()
    }

    fn delete_many(&self, keys: &[String]) -> Result<Vec<String>> {
        if !self.deletes_in_batches() {
            return Ok(super::delete_each(self, keys));
        }
        let mut deleted = Vec::with_capacity(keys.len());
        for batch in keys.chunks(1000) {
            let full = batch
                .iter()
                .map(|k| self.full_key(k))
                .collect::<Result<Vec<_>>>()?;
            let mut ids = Vec::with_capacity(batch.len());
            for f in &full {
                ids.push(ObjectIdentifier::builder().key(f).build()?);
            }
            let delete = Delete::builder()
                .set_objects(Some(ids))
                .quiet(true)
                .build()?;
            let sent = self.rt.block_on(
                self.client
                    .delete_objects()
                    .bucket(&self.s.bucket)
                    .delete(delete)
                    .send(),
            );
            let out = match sent {
                Ok(out) => out,
                // A server that answers but does not take DeleteObjects (some
                // S3-compatible ones want a Content-MD5 the client does not
                // send): one request per key.
                Err(SdkError::ServiceError(_)) => {
                    deleted.extend(super::delete_each(self, batch));
                    continue;
                }
                Err(e) => {
                    let what = format!(
                        "failed to delete {} objects of {}",
                        batch.len(),
                        self.where_("")
                    );
                    return Err(sdk_error(e, what));
                }
            };
            // Quiet: the answer names only the keys that were not deleted.
            let failed: std::collections::HashSet<&str> =
                out.errors().iter().filter_map(|e| e.key()).collect();
            for (key, f) in batch.iter().zip(&full) {
                if !failed.contains(f.as_str()) {
                    deleted.push(key.clone());
                }
            }
        }
        Ok(deleted)
    }
}

/// GetObjectLockConfiguration's answer for a bucket without Object Lock.
fn lock_not_configured<E>(err: &SdkError<E, HttpResponse>) -> bool
where
    E: aws_sdk_s3::error::ProvideErrorMetadata,
{
    let code = match err {
        SdkError::ServiceError(s) => s.err().code().map(str::to_string),
        _ => None,
    };
    status_of(err) == Some(404) || code.is_some_and(|c| c == "ObjectLockConfigurationNotFoundError")
}

impl S3Store {
    /// [`Store::altered`] on a versioned bucket: one ListObjectVersions
    /// listing of `prefix`, page by page.
    fn altered_versions(&self, prefix: &str) -> Result<Vec<(String, String)>> {
        let full = self.full_key(prefix.trim_end_matches('/'))? + "/";
        // Per key: object versions, and whether a delete marker is current.
        let mut seen: std::collections::BTreeMap<String, (usize, bool)> = Default::default();
        let (mut key_marker, mut id_marker): (Option<String>, Option<String>) = (None, None);
        loop {
            let page = self
                .rt
                .block_on(
                    self.client
                        .list_object_versions()
                        .bucket(&self.s.bucket)
                        .prefix(&full)
                        .set_key_marker(key_marker.take())
                        .set_version_id_marker(id_marker.take())
                        .send(),
                )
                .map_err(|e| {
                    sdk_error(
                        e,
                        format!(
                            "failed to list the versions under {}",
                            self.where_(prefix.trim_end_matches('/'))
                        ),
                    )
                })?;
            for v in page.versions() {
                if let Some(k) = v.key().and_then(|k| self.strip(k)) {
                    seen.entry(k).or_default().0 += 1;
                }
            }
            for m in page.delete_markers() {
                if let Some(k) = m.key().and_then(|k| self.strip(k)) {
                    let e = seen.entry(k).or_default();
                    e.1 |= m.is_latest() == Some(true);
                }
            }
            if page.is_truncated() != Some(true) {
                break;
            }
            key_marker = page.next_key_marker().map(str::to_string);
            id_marker = page.next_version_id_marker().map(str::to_string);
            if key_marker.is_none() {
                break;
            }
        }
        let mut out = Vec::new();
        for (key, (versions, hidden)) in seen {
            let shown = crate::ui::printable(&key);
            if hidden {
                out.push((
                    key.clone(),
                    format!(
                        "a delete marker hides {shown} ({} kept)",
                        crate::units::count(versions as u64, "version")
                    ),
                ));
            } else if versions > 1 {
                out.push((
                    key.clone(),
                    format!("{shown} was overwritten: it has {versions} versions, and bkp writes each key once"),
                ));
            }
        }
        Ok(out)
    }

    /// Deletes every version of `key` (and its delete markers). A bucket with
    /// Object Lock is versioned: a plain delete would only hide the object behind
    /// a delete marker and keep paying for its bytes. A version still under
    /// retention is refused by S3; that is a [`Retained`] error.
    fn delete_versions(&self, key: &str, full: &str) -> Result<()> {
        let mut ids = Vec::new();
        let (mut key_marker, mut id_marker): (Option<String>, Option<String>) = (None, None);
        loop {
            let page = self
                .rt
                .block_on(
                    self.client
                        .list_object_versions()
                        .bucket(&self.s.bucket)
                        .prefix(full)
                        .set_key_marker(key_marker.take())
                        .set_version_id_marker(id_marker.take())
                        .send(),
                )
                .map_err(|e| {
                    sdk_error(
                        e,
                        format!("failed to list the versions of {}", self.where_(key)),
                    )
                })?;
            for v in page.versions() {
                if v.key() == Some(full) {
                    ids.push(v.version_id().map(str::to_string));
                }
            }
            for m in page.delete_markers() {
                if m.key() == Some(full) {
                    ids.push(m.version_id().map(str::to_string));
                }
            }
            if page.is_truncated() != Some(true) {
                break;
            }
            key_marker = page.next_key_marker().map(str::to_string);
            id_marker = page.next_version_id_marker().map(str::to_string);
            if key_marker.is_none() {
                break;
            }
        }
        for id in ids {
            let res = self.rt.block_on(
                self.client
                    .delete_object()
                    .bucket(&self.s.bucket)
                    .key(full)
                    .set_version_id(id)
                    .send(),
            );
            match res {
                Ok(_) => {}
                Err(e) if status_of(&e) == Some(404) => {}
                Err(e) if status_of(&e) == Some(403) => {
                    // Refused because of retention, or for want of permission
                    // (s3:DeleteObjectVersion): only the first is expected.
                    if let Some(until) = self.retained_until(key).ok().flatten() {
                        return Err(anyhow::Error::new(Retained {
                            key: key.to_string(),
                            until: Some(until),
                        }));
                    }
                    return Err(sdk_error(
                        e,
                        format!("failed to delete {}", self.where_(key)),
                    ));
                }
                Err(e) => {
                    return Err(sdk_error(
                        e,
                        format!("failed to delete {}", self.where_(key)),
                    ))
                }
            }
        }
        Ok(())
    }
}

/// Percent-encodes a key for the `x-amz-copy-source` header (`/` kept).
fn encode_copy_source(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~/".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Reads and server-side copies used when this store is a replication source or
/// target. A `None` answer means a precondition failed: the object changed since
/// the ETag was seen.
impl S3Store {
    pub fn settings(&self) -> &S3Settings {
        &self.s
    }

    /// The store's own (prefixed) key, as another bucket's copy source names it.
    pub fn full_key_of(&self, key: &str) -> Result<String> {
        self.full_key(key)
    }

    /// A streaming, create-only write of `key` (no check that it exists yet).
    fn writer(&self, key: &str, metadata: &Metadata) -> Result<S3Writer> {
        let full_key = self.full_key(key)?;
        Ok(S3Writer {
            rt: self.rt.clone(),
            client: self.client.clone(),
            bucket: self.s.bucket.clone(),
            key: key.to_string(),
            full_key,
            metadata: meta_map(metadata),
            buf: Vec::with_capacity(self.s.part_size.min(1 << 20)),
            part_size: self.s.part_size.max(MIN_PART_SIZE),
            concurrency: self.s.concurrency.max(1),
            upload_id: None,
            next_part: 1,
            in_flight: VecDeque::new(),
            done: Vec::new(),
            size: 0,
            finished: false,
            lock: self.s.object_lock,
            sse: self.s.sse.clone(),
            class: DataClass::of(self.s.storage_class.as_ref(), key),
        })
    }

    /// [`Store::list`]: each object's ETag is in its [`ObjectInfo`] (a
    /// replication source names it in every read, as a change detector).
    pub fn list_with_etags(&self, prefix: &str) -> Result<Vec<ObjectInfo>> {
        self.list_pages(prefix, None)
    }

    /// Every page of a listing of `prefix`, from after `after` when given,
    /// in key order.
    fn list_pages(&self, prefix: &str, after: Option<&str>) -> Result<Vec<ObjectInfo>> {
        super::gather_sorted(|each| self.each_listed(prefix, after, each))
    }

    /// [`S3Store::list_pages`], each object handed to `each` as its page
    /// arrives.
    fn each_listed(
        &self,
        prefix: &str,
        after: Option<&str>,
        each: &mut dyn FnMut(ObjectInfo),
    ) -> Result<()> {
        let start_after = after.map(|a| {
            if self.s.prefix.is_empty() {
                a.to_string()
            } else {
                format!("{}/{}", self.s.prefix, a)
            }
        });
        let full_prefix = if self.s.prefix.is_empty() {
            prefix.to_string()
        } else {
            format!("{}/{}", self.s.prefix, prefix)
        };
        let mut token: Option<String> = None;
        loop {
            let page = self
                .rt
                .block_on(
                    self.client
                        .list_objects_v2()
                        .bucket(&self.s.bucket)
                        .prefix(&full_prefix)
                        .set_start_after(start_after.clone())
                        .set_continuation_token(token.take())
                        .send(),
                )
                .map_err(|e| {
                    sdk_error(
                        e,
                        format!("failed to list s3://{}/{}", self.s.bucket, full_prefix),
                    )
                })?;
            for obj in page.contents() {
                let Some(k) = obj.key().and_then(|k| self.strip(k)) else {
                    continue;
                };
                each(ObjectInfo {
                    key: k,
                    size: obj.size().unwrap_or(0).max(0) as u64,
                    modified: to_time(obj.last_modified()),
                    etag: obj.e_tag().map(str::to_string),
                });
            }
            match page.next_continuation_token() {
                Some(t) if page.is_truncated() == Some(true) => token = Some(t.to_string()),
                _ => break,
            }
        }
        Ok(())
    }

    /// [`Store::head`]: facts and ETag of `key`, or `None` if it does not
    /// exist.
    pub fn head_with_etag(&self, key: &str) -> Result<Option<ObjectInfo>> {
        Ok(self.head_object(key)?.map(|out| ObjectInfo {
            key: key.to_string(),
            size: out.content_length().unwrap_or(0).max(0) as u64,
            modified: to_time(out.last_modified()),
            etag: out.e_tag().map(str::to_string),
        }))
    }

    /// S3's answer to a HEAD of `key`; `None` when there is no such object.
    fn head_object(
        &self,
        key: &str,
    ) -> Result<Option<aws_sdk_s3::operation::head_object::HeadObjectOutput>> {
        let full = self.full_key(key)?;
        let res = self.rt.block_on(
            self.client
                .head_object()
                .bucket(&self.s.bucket)
                .key(&full)
                .send(),
        );
        match res {
            Ok(out) => Ok(Some(out)),
            Err(e) if status_of(&e) == Some(404) => Ok(None),
            Err(e) => Err(sdk_error(
                e,
                format!("failed to look up {}", self.where_(key)),
            )),
        }
    }

    /// Opens `key` (optionally only bytes `range`, an HTTP range such as
    /// `bytes=-65536`) if its ETag is still `etag`.
    pub fn open_if_match(
        &self,
        key: &str,
        etag: Option<&str>,
        range: Option<&str>,
    ) -> Result<Option<Box<dyn Read + Send>>> {
        let full = self.full_key(key)?;
        let res = self.rt.block_on(
            self.client
                .get_object()
                .bucket(&self.s.bucket)
                .key(&full)
                .set_if_match(etag.map(str::to_string))
                .set_range(range.map(str::to_string))
                .send(),
        );
        match res {
            Ok(out) => Ok(Some(Box::new(self.reader(&full, key, out)))),
            Err(e) if status_of(&e) == Some(412) => Ok(None),
            Err(e) if status_of(&e) == Some(404) => Err(not_found(&self.identity(), key)),
            Err(e) => Err(sdk_error(e, format!("failed to read {}", self.where_(key)))),
        }
    }

    /// Copies `source_bucket/source_key` (a full key in that bucket, on the same
    /// service) to `key` in this store without the bytes leaving the service:
    /// CopyObject up to 5 GiB, a multipart upload of UploadPartCopy parts above.
    /// Create-only like every write; the copy is of the version whose ETag is
    /// `etag`, or `None` is returned.
    pub fn copy_from(
        &self,
        source_bucket: &str,
        source_key: &str,
        etag: &str,
        size: u64,
        key: &str,
        metadata: &Metadata,
    ) -> Result<Option<ObjectInfo>> {
        let full = self.full_key(key)?;
        if self.head(key)?.is_some() {
            return Err(already_exists(&format!("s3://{}", self.s.bucket), key));
        }
        let source = encode_copy_source(&format!("{source_bucket}/{source_key}"));
        let what = || {
            format!(
                "failed to copy s3://{source_bucket}/{source_key} to {}",
                self.where_(key)
            )
        };
        if size <= MAX_PART_SIZE as u64 {
            let res = self.rt.block_on(
                protect!(
                    self.client
                        .copy_object()
                        .bucket(&self.s.bucket)
                        .key(&full)
                        .copy_source(&source)
                        .copy_source_if_match(etag)
                        .metadata_directive(aws_sdk_s3::types::MetadataDirective::Replace)
                        .set_metadata(Some(meta_map(metadata)))
                        .if_none_match("*"),
                    &self.s.object_lock,
                    &self.s.sse,
                    DataClass::of(self.s.storage_class.as_ref(), key)
                )
                .send(),
            );
            return match res {
                Ok(_) => Ok(Some(ObjectInfo {
                    key: key.to_string(),
                    size,
                    modified: Some(OffsetDateTime::now_utc()),
                    etag: None,
                })),
                Err(e) if status_of(&e) == Some(412) && self.head(key)?.is_none() => Ok(None),
                Err(e) if is_exists(status_of(&e)) => {
                    Err(already_exists(&format!("s3://{}", self.s.bucket), key))
                }
                Err(e) => Err(sdk_error(e, what())),
            };
        }
        self.copy_in_parts(source_bucket, source_key, etag, size, key, metadata)
    }

    /// The multipart half of [`S3Store::copy_from`] (objects over 5 GiB): a
    /// multipart upload of UploadPartCopy parts of `part_size`, each pinned to
    /// `etag`. Callers use `copy_from`; this is public so that it can be tested
    /// without 5 GiB objects.
    pub fn copy_in_parts(
        &self,
        source_bucket: &str,
        source_key: &str,
        etag: &str,
        size: u64,
        key: &str,
        metadata: &Metadata,
    ) -> Result<Option<ObjectInfo>> {
        let full = self.full_key(key)?;
        let source = encode_copy_source(&format!("{source_bucket}/{source_key}"));
        let what = || {
            format!(
                "failed to copy s3://{source_bucket}/{source_key} to {}",
                self.where_(key)
            )
        };
        // Parts of the configured size (grown to stay under 10,000 parts).
        let mut part = self.s.part_size.max(MIN_PART_SIZE) as u64;
        while size.div_ceil(part) > MAX_PARTS as u64 {
            part *= 2;
        }
        let up = self
            .rt
            .block_on(
                protect!(
                    self.client
                        .create_multipart_upload()
                        .bucket(&self.s.bucket)
                        .key(&full)
                        .set_metadata(Some(meta_map(metadata))),
                    &self.s.object_lock,
                    &self.s.sse,
                    DataClass::of(self.s.storage_class.as_ref(), key)
                )
                .send(),
            )
            .map_err(|e| sdk_error(e, what()))?;
        let upload_id = up
            .upload_id()
            .context("the object store returned no upload id")?
            .to_string();
        let abort = || {
            let _ = self.rt.block_on(
                self.client
                    .abort_multipart_upload()
                    .bucket(&self.s.bucket)
                    .key(&full)
                    .upload_id(&upload_id)
                    .send(),
            );
        };
        let mut parts = Vec::new();
        let mut start = 0u64;
        let mut n = 1;
        while start < size {
            let end = (start + part).min(size) - 1;
            let res = self.rt.block_on(
                self.client
                    .upload_part_copy()
                    .bucket(&self.s.bucket)
                    .key(&full)
                    .upload_id(&upload_id)
                    .part_number(n)
                    .copy_source(&source)
                    .copy_source_if_match(etag)
                    .copy_source_range(format!("bytes={start}-{end}"))
                    .send(),
            );
            match res {
                Ok(out) => {
                    let tag = out.copy_part_result().and_then(|r| r.e_tag());
                    let part = CompletedPart::builder().part_number(n);
                    parts.push(part.set_e_tag(tag.map(str::to_string)).build())
                }
                Err(e) => {
                    abort();
                    if status_of(&e) == Some(412) {
                        return Ok(None);
                    }
                    return Err(sdk_error(e, what()));
                }
            }
            start = end + 1;
            n += 1;
        }
        let res = self.rt.block_on(
            self.client
                .complete_multipart_upload()
                .bucket(&self.s.bucket)
                .key(&full)
                .upload_id(&upload_id)
                .multipart_upload(
                    CompletedMultipartUpload::builder()
                        .set_parts(Some(parts))
                        .build(),
                )
                .if_none_match("*")
                .send(),
        );
        match res {
            Ok(_) => Ok(Some(ObjectInfo {
                key: key.to_string(),
                size,
                modified: Some(OffsetDateTime::now_utc()),
                etag: None,
            })),
            Err(e) => {
                abort();
                if is_exists(status_of(&e)) {
                    return Err(already_exists(&format!("s3://{}", self.s.bucket), key));
                }
                Err(sdk_error(e, what()))
            }
        }
    }
}
