//! An S3 store through a small TCP proxy (in this file) in front of the real
//! SeaweedFS server, which cuts responses after a number of bytes or answers
//! a kind of request with a refusal itself: a download whose connection breaks
//! mid-body resumes by range, of the same object version only; a server that
//! refuses DeleteObjects gets one delete per key.

mod common;

use std::collections::VecDeque;
use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::thread;

use bkp::store::s3::{S3Settings, S3Store};
use bkp::store::Store;

/// Bytes of a cut response (its head included) that reach the client: some of
/// the body.
const CUT_AFTER: usize = 64 * 1024;
const SIZE: usize = 1024 * 1024;

type Hook = Box<dyn Fn() + Send + Sync>;

/// What the proxy does to GETs of one path, and which requests it refuses.
#[derive(Default)]
struct Rules {
    /// `GET /bucket/key` as the request line starts.
    get: String,
    /// How many response bytes (head included) the next GETs of that path get
    /// before their connection is cut, in order; then `cut_rest` for the others.
    cuts: Mutex<VecDeque<usize>>,
    cut_rest: Option<usize>,
    /// Run once, before a ranged GET of that path is forwarded.
    before_ranged: Mutex<Option<Hook>>,
    /// Requests whose head starts so are answered by the proxy with
    /// `refusal` (or [`REFUSAL`]), their bodies read and dropped: they never
    /// reach the server.
    refuse: Option<String>,
    refusal: Option<&'static str>,
    /// Every request head seen, in order.
    heads: Mutex<Vec<String>>,
}

/// How S3-compatible servers that want a Content-MD5 on DeleteObjects refuse
/// the SDK's request, which carries another checksum.
const REFUSAL: &str = "HTTP/1.1 400 Bad Request\r\nContent-Type: application/xml\r\nContent-Length: 135\r\n\r\n<?xml version=\"1.0\" encoding=\"UTF-8\"?><Error><Code>InvalidRequest</Code><Message>Missing required header: Content-MD5</Message></Error>";

struct Proxy {
    endpoint: String,
    rules: Arc<Rules>,
}

impl Rules {
    fn next_cut(&self) -> Option<usize> {
        self.cuts.lock().unwrap().pop_front().or(self.cut_rest)
    }
}

impl Proxy {
    fn start(upstream: &str, rules: Rules) -> Proxy {
        let upstream = upstream.trim_start_matches("http://").to_string();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let endpoint = format!("http://{}", listener.local_addr().unwrap());
        let rules = Arc::new(rules);
        let r = rules.clone();
        thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { return };
                let server = TcpStream::connect(&upstream).unwrap();
                let r = r.clone();
                thread::spawn(move || relay(client, server, r));
            }
        });
        Proxy { endpoint, rules }
    }

    fn gets(&self) -> Vec<String> {
        self.heads(&self.rules.get)
    }

    /// The request heads seen that start with `start`.
    fn heads(&self, start: &str) -> Vec<String> {
        let heads = self.rules.heads.lock().unwrap();
        heads
            .iter()
            .filter(|h| h.starts_with(start))
            .cloned()
            .collect()
    }
}

/// The value of header `name` in a request head, if present.
fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.trim().eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

/// One client connection: requests go up as they are (their heads recorded),
/// responses come down, cut short when a rule says so.
fn relay(mut client: TcpStream, mut server: TcpStream, rules: Arc<Rules>) {
    // Response bytes still allowed through before the connection is cut.
    let budget = Arc::new(Mutex::new(None::<usize>));
    let (mut down_from, mut down_to) = (server.try_clone().unwrap(), client.try_clone().unwrap());
    let b = budget.clone();
    thread::spawn(move || {
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            let n = match down_from.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            let mut left = b.lock().unwrap();
            let pass = left.map_or(n, |l| l.min(n));
            if down_to.write_all(&buf[..pass]).is_err() {
                break;
            }
            if let Some(l) = left.as_mut() {
                *l -= pass;
                if *l == 0 {
                    break;
                }
            }
        }
        let _ = down_to.shutdown(Shutdown::Both);
        let _ = down_from.shutdown(Shutdown::Both);
    });
    // Request bodies go through untouched (a refused one is dropped); heads
    // are parsed.
    let (mut pending, mut body_left, mut refused) = (Vec::new(), 0usize, false);
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        match client.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => pending.extend_from_slice(&buf[..n]),
        }
        loop {
            if body_left > 0 {
                let k = body_left.min(pending.len());
                let body: Vec<u8> = pending.drain(..k).collect();
                if !refused && server.write_all(&body).is_err() {
                    return;
                }
                body_left -= k;
                if body_left > 0 {
                    break;
                }
            }
            if refused {
                // The whole request is in: the proxy answers it.
                let answer = rules.refusal.unwrap_or(REFUSAL);
                if client.write_all(answer.as_bytes()).is_err() {
                    return;
                }
                refused = false;
            }
            let Some(end) = pending.windows(4).position(|w| w == b"\r\n\r\n") else {
                break;
            };
            let head_bytes: Vec<u8> = pending.drain(..end + 4).collect();
            let head = String::from_utf8_lossy(&head_bytes).to_string();
            if head.starts_with(&rules.get) {
                if header(&head, "range").is_some() {
                    if let Some(hook) = rules.before_ranged.lock().unwrap().take() {
                        hook();
                    }
                }
                *budget.lock().unwrap() = rules.next_cut();
            }
            refused = rules.refuse.as_ref().is_some_and(|r| head.starts_with(r));
            rules.heads.lock().unwrap().push(head.clone());
            if !refused && server.write_all(&head_bytes).is_err() {
                return;
            }
            body_left = header(&head, "content-length")
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
        }
    }
    let _ = server.shutdown(Shutdown::Write);
}

fn store(s3: &common::S3Server, bucket: &str, endpoint: &str) -> S3Store {
    let settings = S3Settings {
        bucket: bucket.to_string(),
        prefix: "p".into(),
        region: Some(s3.region.clone()),
        endpoint: Some(endpoint.to_string()),
        path_style: true,
        ca_file: None,
        part_size: 5 * 1024 * 1024,
        concurrency: 2,
        object_lock: None,
        sse: None,
        storage_class: None,
        credentials_env: None,
    };
    S3Store::with_credentials(settings, &s3.access_key, &s3.secret_key).unwrap()
}

/// A store on a new bucket holding `p/obj` ([`SIZE`] bytes), the same bucket
/// through a proxy with these rules, and the object's bytes.
fn setup(
    cuts: (&[usize], Option<usize>),
    before_ranged: impl FnOnce(S3Store) -> Option<Hook>,
) -> (Proxy, S3Store, Vec<u8>) {
    let s3 = common::shared_s3();
    let bucket = s3.new_bucket("resume");
    let data = common::pattern(SIZE, 7);
    let direct = store(s3, &bucket, &s3.endpoint);
    direct.put_new("obj", &data, &Vec::new()).unwrap();
    let hook = before_ranged(store(s3, &bucket, &s3.endpoint));
    let proxy = Proxy::start(
        &s3.endpoint,
        Rules {
            get: format!("GET /{bucket}/p/obj"),
            cuts: Mutex::new(cuts.0.iter().copied().collect()),
            cut_rest: cuts.1,
            before_ranged: Mutex::new(hook),
            ..Rules::default()
        },
    );
    let through = store(s3, &bucket, &proxy.endpoint);
    (proxy, through, data)
}

#[test]
fn a_broken_download_resumes_by_range_of_the_same_version() {
    let (proxy, through, data) = setup((&[CUT_AFTER], None), |_| None);
    let mut got = Vec::new();
    through
        .open("obj")
        .unwrap()
        .read_to_end(&mut got)
        .expect("the download resumes after the cut");
    assert!(
        got == data,
        "resumed bytes differ ({} of {SIZE})",
        got.len()
    );

    let gets = proxy.gets();
    assert_eq!(gets.len(), 2, "{gets:#?}");
    assert_eq!(header(&gets[0], "range"), None, "{gets:#?}");
    let range = header(&gets[1], "range").expect("the second GET asks for the rest");
    let from: usize = range
        .strip_prefix("bytes=")
        .and_then(|r| r.split_once('-'))
        .map(|(a, _)| a.parse().unwrap())
        .unwrap();
    assert!(from > 0 && from < CUT_AFTER, "{range}");
    assert_eq!(range, format!("bytes={from}-{}", SIZE - 1));
    assert!(header(&gets[1], "if-match").is_some(), "{gets:#?}");
}

#[test]
fn an_object_replaced_mid_download_fails_instead_of_splicing() {
    let (proxy, through, _) = setup((&[CUT_AFTER], None), |direct| {
        Some(Box::new(move || {
            direct.delete("obj").unwrap();
            direct
                .put_new("obj", &common::pattern(SIZE, 9), &Vec::new())
                .unwrap();
        }))
    });
    let mut got = Vec::new();
    let err = through
        .open("obj")
        .unwrap()
        .read_to_end(&mut got)
        .expect_err("a replaced object must not be spliced");
    let err = anyhow::Error::new(err);
    let msg = format!("{err:#}");
    assert!(msg.contains("changed while being read"), "{msg}");
    assert_eq!(bkp::exit::exit_code(&err), bkp::exit::TRANSIENT, "{msg}");
    let gets = proxy.gets();
    assert_eq!(gets.len(), 2, "a single resumed request: {gets:#?}");
    assert!(header(&gets[1], "if-match").is_some(), "{gets:#?}");
}

#[test]
fn a_download_that_keeps_breaking_fails_as_transient() {
    let (proxy, through, _) = setup((&[CUT_AFTER], Some(100)), |_| None);
    let mut got = Vec::new();
    let err = through
        .open("obj")
        .unwrap()
        .read_to_end(&mut got)
        .expect_err("every response is cut");
    let err = anyhow::Error::new(err);
    let msg = format!("{err:#}");
    assert_eq!(bkp::exit::exit_code(&err), bkp::exit::TRANSIENT, "{msg}");
    // The SDK's default of 3 attempts: after the first request, two resumes
    // (each of which the SDK itself tries up to 3 times).
    assert!(msg.contains("after 2 resumed requests"), "{msg}");
    let gets = proxy.gets().len();
    assert!((3..=7).contains(&gets), "{gets} GETs: {msg}");
}

#[test]
fn a_server_that_refuses_batch_deletes_gets_one_delete_per_key() {
    let s3 = common::shared_s3();
    let bucket = s3.new_bucket("deletes");
    let direct = store(s3, &bucket, &s3.endpoint);
    let keys: Vec<String> = (0..3).map(|i| format!("gone/{i}")).collect();
    for k in keys.iter().chain([&"kept/0".to_string()]) {
        direct.put_new(k, b"bytes", &Vec::new()).unwrap();
    }
    let refused = format!("POST /{bucket}/?delete");
    let proxy = Proxy::start(
        &s3.endpoint,
        Rules {
            refuse: Some(refused.clone()),
            ..Rules::default()
        },
    );
    let through = store(s3, &bucket, &proxy.endpoint);
    assert!(through.deletes_in_batches());

    let mut deleted = through.delete_many(&keys).expect("deleted one by one");
    deleted.sort();
    assert_eq!(deleted, keys);
    let left: Vec<String> = direct
        .list("")
        .unwrap()
        .into_iter()
        .map(|o| o.key)
        .collect();
    assert_eq!(left, ["kept/0"]);
    // The batch was tried once, then each key had a request of its own.
    let all: Vec<String> = proxy
        .heads("")
        .iter()
        .map(|h| h.lines().next().unwrap_or_default().to_string())
        .collect();
    assert_eq!(proxy.heads(&refused).len(), 1, "{all:#?}");
    let each = proxy.heads(&format!("DELETE /{bucket}/p/gone/"));
    assert_eq!(each.len(), 3, "{each:#?}");
}

/// S3 refuses a HEAD with a status and no body (a HEAD has none): the error
/// says what the status means, not that something other than S3 answered.
#[test]
fn a_refused_head_says_what_its_status_means() {
    let s3 = common::shared_s3();
    let bucket = s3.new_bucket("headrefused");
    let direct = store(s3, &bucket, &s3.endpoint);
    direct.put_new("obj", b"bytes", &Vec::new()).unwrap();
    let proxy = Proxy::start(
        &s3.endpoint,
        Rules {
            refuse: Some(format!("HEAD /{bucket}/p/obj")),
            refusal: Some("HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n"),
            ..Rules::default()
        },
    );
    let through = store(s3, &bucket, &proxy.endpoint);
    let err = format!("{:#}", through.head("obj").expect_err("refused"));
    assert!(err.contains("HTTP 403 (access denied"), "{err}");
    assert!(!err.contains("no S3 error"), "{err}");
}
