//! A scripted OpenAI-compatible server on 127.0.0.1 for the hostile-server tests: it
//! answers `/v1/models`, `/version` and `/v1/completions` in vLLM's shape (token-id
//! prompts, echoed prompt log-probabilities aligned with their tokens), so that a study
//! connects with the exact read-out, and then misbehaves on the study's own requests
//! as a test asks (`Fault`). Connection probes are always answered honestly, so every
//! fault is met where a run is under way.
//!
//! Each connection gets one reply and is closed; the listener stops when the value is
//! dropped. It only ever listens on the loopback interface.

use serde_json::{json, Value};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

/// The id the server says it serves.
pub const SERVED: &str = "fake-model";

/// How the server misbehaves on a study's requests (never on the connection probes).
#[derive(Clone, Debug, PartialEq)]
pub enum Fault {
    /// Honest replies throughout.
    None,
    /// An echoed option token with log-probability +3.39.
    PositiveLogprob,
    /// Echoed replies listing one position more than was sent (a prepended token).
    ExtraPosition,
    /// Replies from another model id after this many study requests.
    SwitchModelAfter(usize),
    /// HTTP 500 on every study request.
    Fail500,
    /// HTTP 400 whose body repeats the request's Authorization header.
    EchoKey,
    /// The same, on the option read-out's requests only (a trial's own request).
    EchoKeyOnOptions,
    /// A reply of this many bytes (valid JSON padded with spaces).
    Huge(usize),
    /// HTTP 503 on every study request (a server that is restarting).
    Unavailable,
}

/// What the server saw, for the tests to read.
#[derive(Default)]
pub struct Seen {
    pub study_requests: AtomicUsize,
    pub authorization: Mutex<Vec<String>>,
}

pub struct FakeServer {
    pub port: u16,
    pub seen: Arc<Seen>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl FakeServer {
    pub fn start(fault: Fault) -> FakeServer {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let stop = Arc::new(AtomicBool::new(false));
        let seen = Arc::new(Seen::default());
        let (stop2, seen2) = (stop.clone(), seen.clone());
        let thread = std::thread::spawn(move || {
            for stream in listener.incoming() {
                if stop2.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(stream) = stream else { continue };
                let (fault, seen) = (fault.clone(), seen2.clone());
                std::thread::spawn(move || {
                    let _ = serve(stream, &fault, &seen);
                });
            }
        });
        FakeServer {
            port,
            seen,
            stop,
            thread: Some(thread),
        }
    }

    /// The spec of a run on this server, its prompts rendered with `tokenizer` (a
    /// .gguf file), with `extra` options (`&key_env=VAR`).
    pub fn spec(&self, tokenizer: &std::path::Path, extra: &str) -> String {
        format!(
            "openai+http://127.0.0.1:{}/v1?tokenizer={}{extra}#{SERVED}",
            self.port,
            tokenizer.display()
        )
    }
}

impl Drop for FakeServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(("127.0.0.1", self.port));
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn serve(stream: TcpStream, fault: &Fault, seen: &Seen) -> std::io::Result<()> {
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut request_line = String::new();
    reader.read_line(&mut request_line)?;
    let mut length = 0usize;
    let mut authorization = String::new();
    loop {
        let mut line = String::new();
        reader.read_line(&mut line)?;
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        let (name, value) = line.split_once(':').unwrap_or((line, ""));
        match name.to_ascii_lowercase().as_str() {
            "content-length" => length = value.trim().parse().unwrap_or(0),
            "authorization" => authorization = value.trim().to_string(),
            _ => {}
        }
    }
    let mut body = vec![0u8; length];
    reader.read_exact(&mut body)?;
    if !authorization.is_empty() {
        seen.authorization
            .lock()
            .unwrap()
            .push(authorization.clone());
    }
    let path = request_line.split_whitespace().nth(1).unwrap_or("");
    let (status, reply) = match path {
        "/v1/models" => (
            200,
            json!({"object": "list", "data": [{"id": SERVED}]}).to_string(),
        ),
        "/v1/completions" => {
            let request: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
            completion(&request, fault, seen, &authorization)
        }
        _ => (404, json!({"error": "not found"}).to_string()),
    };
    let mut stream = stream;
    let reason = match status {
        200 => "OK",
        400 => "Bad Request",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        _ => "Not Found",
    };
    write!(
        stream,
        "HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        reply.len()
    )?;
    stream.write_all(reply.as_bytes())?;
    stream.flush()
}

/// Whether a completions request is one of a study's, not a connection probe: the
/// option read-out sends several token-id prompts at once, generation asks for more
/// than one token.
fn is_study_request(request: &Value) -> bool {
    request["prompt"]
        .as_array()
        .is_some_and(|p| p.first().is_some_and(Value::is_array))
        || request["max_tokens"].as_u64().unwrap_or(1) > 1
}

fn completion(request: &Value, fault: &Fault, seen: &Seen, authorization: &str) -> (u16, String) {
    let study = is_study_request(request);
    let n = if study {
        seen.study_requests.fetch_add(1, Ordering::SeqCst) + 1
    } else {
        0
    };
    let mut model = SERVED.to_string();
    if study {
        match fault {
            Fault::Fail500 => return (500, json!({"error": "internal error"}).to_string()),
            Fault::Unavailable => return (503, json!({"error": "loading"}).to_string()),
            Fault::EchoKey => {
                return (
                    400,
                    json!({"error": format!("bad request from {authorization}")}).to_string(),
                )
            }
            Fault::EchoKeyOnOptions if request["echo"].as_bool() == Some(true) => {
                return (
                    400,
                    json!({"error": format!("bad request from {authorization}")}).to_string(),
                )
            }
            Fault::SwitchModelAfter(k) if n > *k => model = "another-model".into(),
            _ => {}
        }
    }
    let echo = request["echo"].as_bool().unwrap_or(false) && !request["logprobs"].is_null();
    let mut reply = if echo {
        echoed(request, if study { fault } else { &Fault::None })
    } else {
        // A generation: a digit answer, with a top list where one is asked for.
        json!({
            "choices": [{"index": 0, "text": "2", "finish_reason": "stop",
                "logprobs": {"tokens": ["2"], "token_logprobs": [-0.5],
                    "top_logprobs": [{"1": -1.5, "2": -0.5, "3": -2.5, "4": -3.0}]}}],
            "usage": {"prompt_tokens": 3, "completion_tokens": 1}
        })
    };
    reply["model"] = json!(model);
    let mut text = reply.to_string();
    if let (true, Fault::Huge(bytes)) = (study, fault) {
        text.push_str(&" ".repeat(bytes.saturating_sub(text.len())));
    }
    (200, text)
}

/// An echoed reply: per prompt, its tokens' log-probabilities (null first), then one
/// generated token, each position's top list led by its own token.
fn echoed(request: &Value, fault: &Fault) -> Value {
    let prompts: Vec<usize> = match &request["prompt"] {
        Value::String(s) => vec![s.split_whitespace().count()],
        Value::Array(a) if a.first().is_some_and(Value::is_array) => {
            a.iter().map(|p| p.as_array().map_or(0, Vec::len)).collect()
        }
        Value::Array(a) => vec![a.len()],
        _ => vec![1],
    };
    let choices: Vec<Value> = prompts
        .iter()
        .enumerate()
        .map(|(i, &len)| {
            let positions = len + 1 + usize::from(*fault == Fault::ExtraPosition);
            let values: Vec<Value> = (0..positions)
                .map(|p| {
                    if p == 0 {
                        Value::Null
                    } else if *fault == Fault::PositiveLogprob && p == len - 1 {
                        json!(3.39)
                    } else {
                        json!(-0.25 * (1 + (i + p) % 4) as f64)
                    }
                })
                .collect();
            let tops: Vec<Value> = values
                .iter()
                .enumerate()
                .map(|(p, v)| match v.as_f64() {
                    None => Value::Null,
                    Some(l) => json!({ format!("t{p}"): l, "other": l - 2.0 }),
                })
                .collect();
            let tokens: Vec<Value> = (0..positions).map(|p| json!(format!("t{p}"))).collect();
            json!({"index": i, "text": "", "finish_reason": "length",
                "logprobs": {"tokens": tokens, "token_logprobs": values, "top_logprobs": tops}})
        })
        .collect();
    let sent: usize = prompts.iter().sum();
    json!({"choices": choices,
        "usage": {"prompt_tokens": sent, "completion_tokens": prompts.len()}})
}
