//! An AWS endpoint in front of moto for what moto cannot do: an update that fails and rolls
//! back, a change set that replaces a resource, a load balancer target that fails its health
//! check. It speaks the query protocol (CloudFormation, Elastic Load Balancing). Every call is
//! forwarded to moto unless the test's script answers it from recorded responses
//! (`tests/fixtures/`) or rewrites moto's answer. The installer under test reaches it through
//! one service's endpoint variable (`AWS_ENDPOINT_URL_CLOUDFORMATION`, ...); every other
//! service still talks to moto directly.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};

/// One CloudFormation call as the installer sent it (the query protocol's form fields).
#[derive(Debug, Clone)]
pub struct Call {
    pub action: String,
    pub params: BTreeMap<String, String>,
}

impl Call {
    pub fn param(&self, name: &str) -> Option<&str> {
        self.params.get(name).map(String::as_str)
    }
}

/// The change set CloudFormation made for a stack, its ID learned from moto's answer, so that
/// a script can answer the calls that name it.
#[derive(Clone, Default)]
pub struct ChangeSet {
    id: Arc<Mutex<Option<String>>>,
}

impl ChangeSet {
    /// Forwards a CreateChangeSet call and keeps the ID moto answers with.
    pub fn learn(&self) -> Answer {
        let id = self.id.clone();
        Answer::Rewrite(Box::new(move |body| {
            *id.lock().expect("the change set") = element(&body, "Id").map(str::to_owned);
            body
        }))
    }

    /// Whether `call` names this change set.
    pub fn named_by(&self, call: &Call) -> bool {
        let id = self.id.lock().expect("the change set");
        id.is_some() && call.param("ChangeSetName") == id.as_deref()
    }
}

/// How the endpoint answers a call.
pub enum Answer {
    /// Moto answers.
    Forward,
    /// A recorded response, moto never sees the call.
    Replay(String),
    /// Moto answers and the script rewrites the body (successful answers only).
    Rewrite(Box<dyn FnOnce(String) -> String + Send>),
}

type Script = dyn Fn(&Call) -> Answer + Send + Sync;

pub struct Endpoint {
    pub url: String,
    calls: Arc<Mutex<Vec<String>>>,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Endpoint {
    /// Starts the endpoint on a free port of 127.0.0.1, forwarding to moto.
    pub fn start(script: impl Fn(&Call) -> Answer + Send + Sync + 'static) -> Endpoint {
        let upstream = super::moto::endpoint().trim_end_matches('/').to_owned();
        let script: Arc<Script> = Arc::new(script);
        let calls = Arc::new(Mutex::new(Vec::new()));
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
        listener
            .set_nonblocking(true)
            .expect("a non-blocking listener");
        let address: SocketAddr = listener.local_addr().expect("the port");
        let (shutdown, stopped) = tokio::sync::oneshot::channel::<()>();
        let recorded = calls.clone();
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a runtime");
            runtime.block_on(async move {
                let client = reqwest::Client::builder()
                    .no_proxy()
                    .build()
                    .expect("an HTTP client");
                let app = axum::Router::new().fallback(
                    move |uri: Uri, headers: HeaderMap, body: Bytes| {
                        let (script, client, upstream, recorded) = (
                            script.clone(),
                            client.clone(),
                            upstream.clone(),
                            recorded.clone(),
                        );
                        async move {
                            answer(&*script, &client, &upstream, &recorded, uri, headers, body)
                                .await
                        }
                    },
                );
                let listener =
                    tokio::net::TcpListener::from_std(listener).expect("a tokio listener");
                axum::serve(listener, app)
                    .with_graceful_shutdown(async {
                        let _ = stopped.await;
                    })
                    .await
                    .expect("the endpoint serves");
            });
        });
        Endpoint {
            url: format!("http://{address}"),
            calls,
            shutdown: Some(shutdown),
            thread: Some(thread),
        }
    }

    /// The actions called so far, in order.
    pub fn actions(&self) -> Vec<String> {
        self.calls.lock().expect("the call log").clone()
    }
}

impl Drop for Endpoint {
    fn drop(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

async fn answer(
    script: &Script,
    client: &reqwest::Client,
    upstream: &str,
    recorded: &Mutex<Vec<String>>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let params: BTreeMap<String, String> =
        url::form_urlencoded::parse(&body).into_owned().collect();
    let call = Call {
        action: params.get("Action").cloned().unwrap_or_default(),
        params,
    };
    recorded
        .lock()
        .expect("the call log")
        .push(call.action.clone());
    let rewrite = match script(&call) {
        Answer::Replay(body) => return xml(StatusCode::OK, body),
        Answer::Forward => None,
        Answer::Rewrite(rewrite) => Some(rewrite),
    };
    let mut request = client.post(format!("{upstream}{uri}")).body(body);
    for (name, value) in &headers {
        if name != header::HOST && name != header::CONTENT_LENGTH {
            request = request.header(name, value);
        }
    }
    let response = match request.send().await {
        Ok(response) => response,
        Err(error) => return (StatusCode::BAD_GATEWAY, error.to_string()).into_response(),
    };
    let status = StatusCode::from_u16(response.status().as_u16()).expect("a status");
    let text = response.text().await.unwrap_or_default();
    match rewrite {
        Some(rewrite) if status.is_success() => xml(status, rewrite(text)),
        _ => xml(status, text),
    }
}

fn xml(status: StatusCode, body: String) -> Response {
    (status, [(header::CONTENT_TYPE, "text/xml")], body).into_response()
}

/// A recorded response from `tests/fixtures/` (`cloudformation/NAME.xml`, ...), with `{key}`
/// placeholders filled.
pub fn fixture(name: &str, values: &[(&str, &str)]) -> String {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name);
    let mut text = std::fs::read_to_string(&path)
        .unwrap_or_else(|error| panic!("{}: {error}", path.display()));
    for (key, value) in values {
        text = text.replace(&format!("{{{key}}}"), value);
    }
    text
}

/// The text between `<tag>` and `</tag>`, the first time it occurs.
pub fn element<'a>(body: &'a str, tag: &str) -> Option<&'a str> {
    let open = format!("<{tag}>");
    let start = body.find(&open)? + open.len();
    let end = body[start..].find(&format!("</{tag}>"))? + start;
    Some(&body[start..end])
}
