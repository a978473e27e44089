//! An OpenAI-compatible server named as a model: `openai+http://node12:8000/v1#served-id`
//! (vLLM, SGLang, llama.cpp's server, Ollama), with options in the query:
//! `tokenizer=MODEL` (the local tokenizer and chat template), `label=NAME`, `mode=chat`
//! and `key_env=VAR`. The key never appears in the spec: it is
//! read from an environment variable (`?key_env=NAME`, default `OPENAI_API_KEY`) when a
//! request is made, and the URL recorded anywhere is the one without credentials.

use crate::error::{Error, Result};

/// The scheme prefix that marks a model argument as a server.
pub const PREFIX: &str = "openai+";

/// The environment variable the key is read from unless the spec names another.
pub const DEFAULT_KEY_ENV: &str = "OPENAI_API_KEY";

/// A server and the model it serves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// `http(s)://host[:port]/path` with no credentials, no query and no fragment: what
    /// requests go to (`{base_url}/completions`) and what provenance records.
    pub base_url: String,
    /// The served model id (`"model"` in every request).
    pub model: String,
    /// The environment variable holding the API key (unset: no key is sent).
    pub key_env: String,
    /// Where the matching tokenizer and chat template come from (a registry name, a
    /// .gguf file or a safetensors directory of the same weights), if given.
    pub tokenizer: Option<String>,
    /// `label=NAME`: the model's name in results (default: the served id's last part).
    /// Trials' ids, option orders and seeds derive from it, so a server run labelled as
    /// a local run of the same weights asks exactly the same trials.
    pub label: Option<String>,
    /// `mode=chat`: the server renders the conversation with its own template
    /// (`/chat/completions`); otherwise affectbench renders it (`/completions`).
    pub chat: bool,
}

fn spec_error(spec: &str, why: &str) -> Error {
    Error::Server(format!(
        "'{}' is not a server model: {why}; write \
         openai+http://HOST:PORT/v1#SERVED_MODEL_ID (optionally \
         ?tokenizer=MODEL&label=NAME&mode=chat&key_env=VAR before the #)",
        shown(spec)
    ))
}

/// The options a spec may carry, whose values are names, never secrets.
const OPTIONS: [&str; 4] = ["key_env", "tokenizer", "label", "mode"];

/// A spec as an error message may show it: the value of any query field that is not
/// one of ours is masked, since a user who put `?api_key=sk-...` there has put a key
/// where it must not be, and the refusal must not print it to a terminal or job log.
fn shown(spec: &str) -> String {
    let Some((before, rest)) = spec.split_once('?') else {
        return spec.to_string();
    };
    let (query, fragment) = match rest.split_once('#') {
        Some((q, f)) => (q, Some(f)),
        None => (rest, None),
    };
    let masked: Vec<String> = query.split('&').map(shown_pair).collect();
    let mut out = format!("{before}?{}", masked.join("&"));
    if let Some(f) = fragment {
        out.push('#');
        out.push_str(f);
    }
    out
}

/// One `name=value` of a spec's query, the value masked unless the name is ours.
fn shown_pair(pair: &str) -> String {
    match pair.split_once('=') {
        Some((name, _)) if !OPTIONS.contains(&name) => format!("{name}=…"),
        _ => pair.to_string(),
    }
}

/// Whether a query field's name says it holds a credential.
fn looks_like_a_key(name: &str) -> bool {
    let n = name.to_ascii_lowercase();
    !OPTIONS.contains(&n.as_str())
        && ["key", "token", "secret", "password", "auth"]
            .iter()
            .any(|w| n.contains(w))
}

impl Endpoint {
    /// Whether a model argument names a server rather than a file or registry entry.
    pub fn is_spec(arg: &str) -> bool {
        arg.starts_with(PREFIX)
    }

    /// Parses `openai+http(s)://host[:port]/path[?key_env=VAR&tokenizer=MODEL]#model`.
    /// Credentials in the URL are refused: a key belongs in the environment, where it
    /// is never printed, logged or written to run.json.
    pub fn parse(spec: &str) -> Result<Endpoint> {
        let rest = spec
            .strip_prefix(PREFIX)
            .ok_or_else(|| spec_error(spec, "it does not start with openai+"))?;
        let (url, model) = rest
            .split_once('#')
            .ok_or_else(|| spec_error(spec, "the served model id after '#' is missing"))?;
        let model = model.trim();
        if model.is_empty() {
            return Err(spec_error(spec, "the served model id after '#' is empty"));
        }
        let (url, query) = match url.split_once('?') {
            Some((u, q)) => (u, Some(q)),
            None => (url, None),
        };
        let (scheme, after) = url
            .split_once("://")
            .ok_or_else(|| spec_error(spec, "the URL has no scheme"))?;
        if scheme != "http" && scheme != "https" {
            return Err(spec_error(
                spec,
                &format!("the scheme is '{scheme}', not http or https"),
            ));
        }
        let authority = after.split('/').next().unwrap_or("");
        if authority.contains('@') {
            // Say so without repeating what came before the '@'.
            return Err(Error::Server(format!(
                "a server model's URL must not carry credentials ({scheme}://…@{}); put \
                 the key in an environment variable and name it with ?key_env=VAR \
                 (default {DEFAULT_KEY_ENV})",
                authority.rsplit('@').next().unwrap_or("")
            )));
        }
        if authority.is_empty() {
            return Err(spec_error(spec, "the URL has no host"));
        }
        let mut endpoint = Endpoint {
            base_url: format!("{scheme}://{}", after.trim_end_matches('/')),
            model: model.to_string(),
            key_env: DEFAULT_KEY_ENV.to_string(),
            tokenizer: None,
            label: None,
            chat: false,
        };
        for pair in query.into_iter().flat_map(|q| q.split('&')) {
            match pair.split_once('=') {
                Some(("key_env", v)) if !v.is_empty() => endpoint.key_env = v.to_string(),
                Some(("tokenizer", v)) if !v.is_empty() => endpoint.tokenizer = Some(v.to_string()),
                Some(("label", v)) if !v.is_empty() => endpoint.label = Some(v.to_string()),
                Some(("mode", "chat")) => endpoint.chat = true,
                Some(("mode", "completions")) => endpoint.chat = false,
                Some((name, _)) if looks_like_a_key(name) => {
                    return Err(Error::Server(format!(
                        "'{}': a key must not be written in the spec ('{name}=' holds one); \
                         put it in an environment variable and name that with \
                         ?key_env=VAR (default {DEFAULT_KEY_ENV})",
                        shown(spec)
                    )))
                }
                _ => {
                    return Err(spec_error(
                        spec,
                        &format!(
                            "'{}' is not an option (key_env=VAR, tokenizer=MODEL, \
                             label=NAME or mode=chat|completions)",
                            shown_pair(pair)
                        ),
                    ))
                }
            }
        }
        Ok(endpoint)
    }

    /// What provenance and messages show: the URL and the served model id, never a key.
    pub fn describe(&self) -> String {
        format!("{}#{}", self.base_url, self.model)
    }

    /// The model's name in results: `label=`, else the served id's last path part.
    pub fn label(&self) -> String {
        self.label.clone().unwrap_or_else(|| {
            self.model
                .rsplit('/')
                .next()
                .unwrap_or(&self.model)
                .to_string()
        })
    }

    /// The spec again (no key is ever in it): what run.json records as the model's
    /// path, so `--resume` reaches the same server.
    pub fn spec(&self) -> String {
        let mut query = Vec::new();
        if self.key_env != DEFAULT_KEY_ENV {
            query.push(format!("key_env={}", self.key_env));
        }
        if let Some(t) = &self.tokenizer {
            query.push(format!("tokenizer={t}"));
        }
        if let Some(l) = &self.label {
            query.push(format!("label={l}"));
        }
        if self.chat {
            query.push("mode=chat".to_string());
        }
        let query = if query.is_empty() {
            String::new()
        } else {
            format!("?{}", query.join("&"))
        };
        format!("{PREFIX}{}{query}#{}", self.base_url, self.model)
    }

    /// The key from the environment, if its variable is set and not empty. A key read
    /// is remembered for `secrets::redact`, so no text this process writes repeats it.
    pub fn api_key(&self) -> Option<String> {
        let key = std::env::var(&self.key_env)
            .ok()
            .filter(|k| !k.is_empty())?;
        crate::secrets::remember(&key);
        Some(key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_in_the_specs_query_is_refused_without_printing_it() {
        for spec in [
            "openai+http://127.0.0.1:8000/v1?api_key=sk-live-0123456789abcdef#m",
            "openai+http://127.0.0.1:8000/v1?tokenizer=x&apikey=sk-live-0123456789abcdef#m",
            "openai+http://127.0.0.1:8000/v1?zzz=sk-live-0123456789abcdef#m",
        ] {
            let err = Endpoint::parse(spec).unwrap_err().to_string();
            assert!(!err.contains("sk-live"), "{err}");
            assert!(
                err.contains("key_env") || err.contains("not an option"),
                "{err}"
            );
        }
    }

    #[test]
    fn a_spec_gives_the_url_the_served_id_and_the_options() {
        let e = Endpoint::parse(
            "openai+http://node12:8000/v1/?key_env=VLLM_KEY&tokenizer=smollm2-135m-instruct&label=llama70#meta-llama/Llama-3.1-70B-Instruct",
        )
        .unwrap();
        assert_eq!(e.base_url, "http://node12:8000/v1");
        assert_eq!(e.model, "meta-llama/Llama-3.1-70B-Instruct");
        assert_eq!(e.key_env, "VLLM_KEY");
        assert_eq!(e.tokenizer.as_deref(), Some("smollm2-135m-instruct"));
        assert_eq!(e.label(), "llama70");
        assert_eq!(
            e.describe(),
            "http://node12:8000/v1#meta-llama/Llama-3.1-70B-Instruct"
        );
        assert_eq!(Endpoint::parse(&e.spec()).unwrap(), e, "{}", e.spec());
        let chat = Endpoint::parse("openai+http://h:1/v1?mode=chat#m").unwrap();
        assert!(chat.chat);
        assert_eq!(Endpoint::parse(&chat.spec()).unwrap(), chat);
        let plain = Endpoint::parse("openai+https://host/v1#org/m").unwrap();
        assert_eq!(plain.label(), "m");
        assert_eq!(
            (plain.key_env.as_str(), plain.tokenizer),
            (DEFAULT_KEY_ENV, None)
        );
    }

    #[test]
    fn credentials_in_the_url_are_refused_without_repeating_them() {
        let err = Endpoint::parse("openai+http://alice:s3cret@host:8000/v1#m")
            .unwrap_err()
            .to_string();
        assert!(!err.contains("s3cret") && !err.contains("alice"), "{err}");
        assert!(err.contains("key_env"), "{err}");
    }

    #[test]
    fn a_malformed_spec_says_how_to_write_one() {
        for bad in [
            "openai+http://host/v1",
            "openai+http://host/v1#",
            "openai+ftp://host/v1#m",
            "openai+host/v1#m",
            "openai+http:///v1#m",
            "openai+http://host/v1?colour=red#m",
        ] {
            let err = Endpoint::parse(bad).unwrap_err().to_string();
            assert!(
                err.contains("openai+http://HOST:PORT/v1#SERVED_MODEL_ID")
                    || err.contains("not an option"),
                "{bad}: {err}"
            );
        }
        assert!(Endpoint::is_spec("openai+http://h/v1#m"));
        assert!(!Endpoint::is_spec("smollm2-135m-instruct"));
    }
}
