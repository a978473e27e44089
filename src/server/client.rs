//! The HTTP side of a server model: requests to an OpenAI-compatible `/v1` API with a
//! timeout, retries with backoff on what a busy or restarting server answers (429, 5xx,
//! a refused or dropped connection), and errors that name the fix (a refused key, a
//! model id the server does not serve, a server that gives no log-probabilities).
//!
//! What a server answers is not believed blindly: a reply larger than the limit is
//! refused as too large (not as an unreachable server), a reply from another model id
//! than the run's first stops the run, every error text has the key redacted, and a
//! stop signal cuts a backoff short.

use crate::endpoint::Endpoint;
use crate::error::{Error, Result};
use serde_json::{json, Value};
use std::sync::Mutex;
use std::time::Duration;

/// The largest reply read, in MiB, unless `AFFECTBENCH_SERVER_MAX_REPLY_MB` lowers it
/// (ureq reads at most 10 MB): a study's replies are a few KB (a 5-token answer, a
/// top-20 list), echoed prompts with log-probabilities a few hundred KB.
pub const DEFAULT_MAX_REPLY_MB: u64 = 10;

/// The environment variable that sets the reply limit.
pub const MAX_REPLY_ENV: &str = "AFFECTBENCH_SERVER_MAX_REPLY_MB";

/// The reply limit in bytes.
fn max_reply_bytes() -> u64 {
    std::env::var(MAX_REPLY_ENV)
        .ok()
        .and_then(|v| v.trim().parse::<u64>().ok())
        .filter(|&mb| mb > 0)
        .unwrap_or(DEFAULT_MAX_REPLY_MB)
        .min(DEFAULT_MAX_REPLY_MB)
        .saturating_mul(1 << 20)
}

/// How a client waits and retries.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Patience {
    /// One request's limit.
    pub timeout: Duration,
    /// Retries after the first try, on 429, 5xx and connection errors.
    pub retries: usize,
    /// The first backoff; each retry doubles it.
    pub backoff: Duration,
}

impl Default for Patience {
    fn default() -> Self {
        Patience {
            timeout: Duration::from_secs(120),
            retries: 5,
            backoff: Duration::from_millis(500),
        }
    }
}

/// What the server can give for the option-probability read-out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Logprobs {
    /// Log-probabilities of the prompt's own tokens (`echo` with `logprobs`): each
    /// option label's continuation is scored exactly.
    Prompt,
    /// Only the next token's top alternatives: a label outside them is unobserved.
    NextTokenTop,
    /// Neither: the choice read-out cannot run on this server.
    None,
}

impl Logprobs {
    pub fn name(self) -> &'static str {
        match self {
            Logprobs::Prompt => "prompt log-probabilities (echo + logprobs)",
            Logprobs::NextTokenTop => "next-token top log-probabilities only",
            Logprobs::None => "no log-probabilities",
        }
    }
}

/// A server and how to talk to it.
pub struct Client {
    pub endpoint: Endpoint,
    agent: ureq::Agent,
    patience: Patience,
    /// The `model` field of the first generation reply: every later one must match it.
    answering_model: Mutex<Option<String>>,
}

/// The outcome of one HTTP exchange, before retrying.
enum Attempt {
    Done(Value),
    /// Worth another try (429, 5xx, transport), with what went wrong and the HTTP
    /// status if the server answered at all.
    Retry(String, Option<u16>),
    /// Not worth another try, with the HTTP status where the server gave one.
    Fatal(Error, Option<u16>),
}

/// The text every capability probe sends: short, and tokenized alike by every model.
pub const PROBE_PROMPT: &str = "The sky is";

impl Client {
    pub fn new(endpoint: Endpoint, patience: Patience) -> Client {
        let agent = ureq::AgentBuilder::new().timeout(patience.timeout).build();
        Client {
            endpoint,
            agent,
            patience,
            answering_model: Mutex::new(None),
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}/{path}", self.endpoint.base_url)
    }

    fn error(&self, message: String) -> Error {
        Error::Server(crate::secrets::redact(&format!(
            "{}: {message}",
            self.endpoint.describe()
        )))
    }

    /// The fix for a status the server answered with.
    fn refusal(&self, status: u16, body: &str) -> Error {
        let body: String = body.chars().take(300).collect();
        match status {
            401 | 403 => self.error(format!(
                "the server refused the key (HTTP {status}); put the key it expects in the \
                 environment variable {} ({}), or name another variable with ?key_env=VAR",
                self.endpoint.key_env,
                if self.endpoint.api_key().is_some() {
                    "it is set, so the key is wrong"
                } else {
                    "it is not set, so no key was sent"
                }
            )),
            404 => self.error(format!(
                "HTTP 404 for a path every OpenAI-compatible server has: is the URL's path \
                 the API root (usually ending in /v1)? The server said: {body}"
            )),
            _ => self.error(format!("HTTP {status}: {body}")),
        }
    }

    fn attempt(&self, request: ureq::Request, body: Option<&Value>) -> Attempt {
        let request = match self.endpoint.api_key() {
            Some(key) => request.set("Authorization", &format!("Bearer {key}")),
            None => request,
        };
        let response = match body {
            Some(b) => request.send_json(b.clone()),
            None => request.call(),
        };
        match response {
            Ok(r) => match self.read_reply(r) {
                Ok(Err(fatal)) => Attempt::Fatal(fatal, None),
                Ok(Ok(text)) => match serde_json::from_str(&text) {
                    Ok(v) => Attempt::Done(v),
                    Err(e) => Attempt::Fatal(
                        self.error(format!(
                            "the reply is not JSON ({e}): {}",
                            text.chars().take(200).collect::<String>()
                        )),
                        None,
                    ),
                },
                Err(e) => Attempt::Retry(
                    crate::secrets::redact(&format!("reading the reply: {e}")),
                    None,
                ),
            },
            Err(ureq::Error::Status(status, r)) => {
                let text = match self.read_reply(r) {
                    Ok(Ok(text)) => text,
                    _ => String::new(),
                };
                if status == 429 || status >= 500 {
                    Attempt::Retry(
                        crate::secrets::redact(&format!(
                            "HTTP {status}: {}",
                            text.chars().take(300).collect::<String>()
                        )),
                        Some(status),
                    )
                } else {
                    Attempt::Fatal(self.refusal(status, &text), Some(status))
                }
            }
            Err(ureq::Error::Transport(t)) => {
                Attempt::Retry(crate::secrets::redact(&t.to_string()), None)
            }
        }
    }

    /// A reply's body, up to the limit: Ok(Err) names the limit where the reply is
    /// larger (a fault of the server or the request, not a reason to retry), Err is a
    /// connection that broke while reading. The body is read by ureq's `into_string`
    /// (which keeps the connection reusable; reading it through `into_reader` left the
    /// pooled connection broken for llama-cpp-python's server), whose own cap is 10 MB.
    fn read_reply(&self, r: ureq::Response) -> std::io::Result<Result<String>> {
        let limit = max_reply_bytes();
        let too_large = || {
            self.error(format!(
                "the reply is larger than {} MiB, the limit for one reply; a study's \
                 replies are a few KB, so the server is answering something else (or, \
                 for a legitimately large reply, raise the limit with {MAX_REPLY_ENV}=MB, \
                 at most {DEFAULT_MAX_REPLY_MB})",
                limit >> 20
            ))
        };
        let declared = r
            .header("content-length")
            .and_then(|l| l.trim().parse::<u64>().ok());
        if declared.is_some_and(|len| len > limit) {
            return Ok(Err(too_large()));
        }
        match r.into_string() {
            Ok(text) if text.len() as u64 > limit => Ok(Err(too_large())),
            Ok(text) => Ok(Ok(text)),
            Err(e)
                if e.kind() == std::io::ErrorKind::InvalidData
                    && e.to_string().contains("too big") =>
            {
                Ok(Err(too_large()))
            }
            Err(e) => Err(e),
        }
    }

    /// Waits `wait`, in short slices, ending early with an error where a stop signal
    /// arrived: a run asked to stop must not sit out a retry chain first.
    fn back_off(&self, wait: Duration) -> Result<()> {
        let slice = Duration::from_millis(20);
        let until = std::time::Instant::now() + wait;
        loop {
            if let Some(signal) = crate::interrupt::requested() {
                return Err(Error::ServerUnreachable(format!(
                    "{}: stopped waiting for the server ({} arrived during a retry)",
                    self.endpoint.describe(),
                    crate::interrupt::name(signal)
                )));
            }
            let now = std::time::Instant::now();
            if now >= until {
                return Ok(());
            }
            std::thread::sleep(slice.min(until - now));
        }
    }

    /// One request with retries; `body` None is a GET. A server that is down, restarting
    /// or overloaded (no connection, 429, 502-504) is waited for through every retry and
    /// then reported unreachable; an internal error (500) is tried twice, since a
    /// request it cannot handle fails the same way each time.
    fn send(&self, path: &str, body: Option<&Value>) -> Result<Value> {
        let mut wait = self.patience.backoff;
        for attempt in 0.. {
            if attempt > 0 {
                // A stop that arrived during the last try ends the chain before the next.
                self.back_off(Duration::ZERO)?;
            }
            let request = match body {
                Some(_) => self.agent.post(&self.url(path)),
                None => self.agent.get(&self.url(path)),
            };
            let (why, status) = match self.attempt(request, body) {
                Attempt::Done(v) => return Ok(v),
                Attempt::Fatal(e, _) => return Err(e),
                Attempt::Retry(why, status) => (why, status),
            };
            let limit = if status == Some(500) {
                self.patience.retries.min(1)
            } else {
                self.patience.retries
            };
            if attempt >= limit {
                let tries = attempt + 1;
                return Err(if status == Some(500) {
                    Error::ServerFailed(crate::secrets::redact(&format!(
                        "{}: the server failed the request {tries} times ({why}); the \
                         trial is not recorded, and `--resume` asks it again",
                        self.endpoint.describe()
                    )))
                } else {
                    Error::ServerUnreachable(crate::secrets::redact(&format!(
                        "{}: no answer after {tries} tries ({why}); is the server running \
                         and reachable from here?",
                        self.endpoint.describe()
                    )))
                });
            }
            self.back_off(wait)?;
            wait *= 2;
        }
        unreachable!("the loop returns")
    }

    /// The server's entries for the models it serves (`GET /models`), as it gives them.
    fn served_model_entries(&self) -> Result<Vec<Value>> {
        let v = self.send("models", None)?;
        Ok(v["data"].as_array().cloned().unwrap_or_default())
    }

    /// The server's `/models` entry for the model id, refusing an id it does not
    /// list (naming the ones it does).
    pub fn check_model(&self) -> Result<Value> {
        let entries = self.served_model_entries()?;
        if let Some(entry) = entries
            .iter()
            .find(|m| m["id"].as_str() == Some(self.endpoint.model.as_str()))
        {
            return Ok(entry.clone());
        }
        let served: Vec<&str> = entries.iter().filter_map(|m| m["id"].as_str()).collect();
        Err(self.error(format!(
            "the server does not serve '{}'; it serves: {} (put one of them after the #)",
            self.endpoint.model,
            if served.is_empty() {
                "nothing it names".to_string()
            } else {
                served.join(", ")
            }
        )))
    }

    /// `POST /completions` with `body` (the model id added).
    pub fn completion(&self, mut body: Value) -> Result<Value> {
        body["model"] = json!(self.endpoint.model);
        let reply = self.send("completions", Some(&body))?;
        self.check_same_model(&reply)?;
        Ok(reply)
    }

    /// Refuses a reply whose `model` field differs from the first reply's: a server
    /// swapped mid-run (another model loaded behind the same URL and id, a proxy that
    /// routes elsewhere) would otherwise have its numbers recorded as this model's.
    fn check_same_model(&self, reply: &Value) -> Result<()> {
        let Some(answering) = reply["model"].as_str() else {
            return Ok(());
        };
        let mut first = self
            .answering_model
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        match first.as_deref() {
            None => {
                *first = Some(answering.to_string());
                Ok(())
            }
            Some(f) if f == answering => Ok(()),
            Some(f) => Err(Error::ServerChanged(crate::secrets::redact(&format!(
                "{}: a reply came from model '{answering}', while the run's earlier replies \
                 came from '{f}'; the server behind this URL changed mid-run, so the run \
                 stops here with the trials before it kept (check what the server serves, \
                 then `--resume`)",
                self.endpoint.describe()
            )))),
        }
    }

    /// One try of `POST {path}` (the model id added), for finding out what the server
    /// accepts: Ok(None) where it answers with an HTTP error (llama-cpp-python answers
    /// 500 to a field it cannot parse), an error only where it cannot be reached.
    pub fn probe(&self, path: &str, mut body: Value) -> Result<Option<Value>> {
        body["model"] = json!(self.endpoint.model);
        match self.attempt(self.agent.post(&self.url(path)), Some(&body)) {
            Attempt::Done(v) => Ok(Some(v)),
            // A refused key is the caller's to fix, not a missing capability.
            Attempt::Fatal(e, Some(401 | 403)) => Err(e),
            Attempt::Fatal(..) => Ok(None),
            Attempt::Retry(_, Some(_)) => Ok(None),
            Attempt::Retry(why, None) => Err(Error::ServerUnreachable(crate::secrets::redact(
                &format!("{}: {why}", self.endpoint.describe()),
            ))),
        }
    }

    /// What the server says of its version (`GET /version` beside the API root, as vLLM
    /// and SGLang answer it), or None where it says nothing there.
    pub fn version(&self) -> Option<Value> {
        let root = self
            .endpoint
            .base_url
            .strip_suffix("/v1")
            .unwrap_or(&self.endpoint.base_url);
        match self.attempt(self.agent.get(&format!("{root}/version")), None) {
            Attempt::Done(v) => Some(v),
            _ => None,
        }
    }

    /// `POST /chat/completions` with `body` (the model id added).
    pub fn chat_completion(&self, mut body: Value) -> Result<Value> {
        body["model"] = json!(self.endpoint.model);
        let reply = self.send("chat/completions", Some(&body))?;
        self.check_same_model(&reply)?;
        Ok(reply)
    }

    /// What log-probabilities the server gives, from one short greedy completion that
    /// asks for the prompt's (echo) and the next token's top alternatives.
    pub fn logprob_support(&self) -> Result<(Logprobs, Value)> {
        let reply = self.probe(
            "completions",
            json!({
                "prompt": PROBE_PROMPT,
                "max_tokens": 1,
                "temperature": 0.0,
                "echo": true,
                "logprobs": 5,
            }),
        )?;
        // A server that refuses the fields is one without them.
        let Some(reply) = reply else {
            return Ok((Logprobs::None, Value::Null));
        };
        Ok((classify_logprobs(&reply), reply))
    }
}

/// What a greedy one-token completion with `echo` and `logprobs` shows of the server's
/// log-probabilities. Prompt log-probabilities count only where they are aligned: every
/// prompt token and the generated one are listed, and the generated (greedy) token is
/// the most probable entry of its own top list. llama-cpp-python 0.3.36 fails this: it
/// lists only the prompt tokens, and its list at position i holds the distribution of
/// token i + 1 (so a token's "own" value is read one position late).
pub fn classify_logprobs(reply: &Value) -> Logprobs {
    let lp = &reply["choices"][0]["logprobs"];
    let tokens = lp["tokens"].as_array().map_or(0, Vec::len);
    let values = lp["token_logprobs"].as_array();
    let tops = lp["top_logprobs"].as_array();
    let prompt = reply["usage"]["prompt_tokens"].as_u64().unwrap_or(0) as usize;
    let generated = reply["usage"]["completion_tokens"].as_u64().unwrap_or(0) as usize;
    let aligned = (|| {
        let last = tokens.checked_sub(1)?;
        let own = values?.get(last)?.as_f64()?;
        let best = tops?
            .get(last)?
            .as_object()?
            .values()
            .filter_map(Value::as_f64)
            .fold(f64::NEG_INFINITY, f64::max);
        Some(prompt > 1 && tokens == prompt + generated && (own - best).abs() < 1e-4)
    })()
    .unwrap_or(false);
    let any_top = tops.is_some_and(|t| t.iter().any(Value::is_object));
    if aligned {
        Logprobs::Prompt
    } else if any_top {
        Logprobs::NextTokenTop
    } else {
        Logprobs::None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn echoed_log_probabilities_count_only_when_aligned_with_their_tokens() {
        // What llama-cpp-python 0.3.36's server answered (2026-12-06) for "The sky is"
        // with echo, logprobs 3, one greedy token (" a"): the generated token is not
        // listed, and position 2's list is the distribution after " is".
        let shifted = json!({
            "choices": [{"text": "The sky is a", "logprobs": {
                "tokens": ["The", " sky", " is"],
                "token_logprobs": [null, -8.34, -11.62],
                "top_logprobs": [null,
                    {" was": -1.65, " is": -1.75, ",": -2.56, " sky": -8.34},
                    {" a": -1.05, " the": -2.93, " not": -3.18, " is": -11.62}]}}],
            "usage": {"prompt_tokens": 3, "completion_tokens": 1}
        });
        assert_eq!(classify_logprobs(&shifted), Logprobs::NextTokenTop);
        // The same reply as an aligned server gives it: four tokens, each list the
        // distribution of its own position, the greedy token its list's maximum.
        let aligned = json!({
            "choices": [{"text": "The sky is a", "logprobs": {
                "tokens": ["The", " sky", " is", " a"],
                "token_logprobs": [null, -8.34, -1.75, -1.05],
                "top_logprobs": [null,
                    {" was": -1.65, " is": -1.75},
                    {" was": -1.65, " is": -1.75},
                    {" a": -1.05, " the": -2.93}]}}],
            "usage": {"prompt_tokens": 3, "completion_tokens": 1}
        });
        assert_eq!(classify_logprobs(&aligned), Logprobs::Prompt);
        let none = json!({"choices": [{"text": "a", "logprobs": null}], "usage": {}});
        assert_eq!(classify_logprobs(&none), Logprobs::None);
    }
}
