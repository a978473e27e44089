//! A study's model on an OpenAI-compatible server: what the server was found to offer
//! when the run connected (how prompts go, how option probabilities are read), and the
//! three requests a trial makes of it: generate an answer, score the options of the
//! next answer, and generate a protocol turn. Prompts are rendered here with the
//! model's own chat template (`tokenizer=` in the spec) unless the chat mode asks the
//! server to render them.

use super::client::{Client, Logprobs, Patience, PROBE_PROMPT};
use crate::chat::{ChatTemplate, Message};
use crate::endpoint::Endpoint;
use crate::error::{Error, Result};
use crate::model::load_text_side;
use crate::registry::ModelRef;
use crate::tokenizer::ModelTokenizer;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

/// Who renders the conversation into the prompt.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// affectbench renders with the model's template and sends the text (or its token
    /// ids) to `/completions`: the same prompt as a local run of the same weights.
    Completions,
    /// The server renders the messages (`/chat/completions`) with its own template.
    Chat,
}

/// How the choice read-out's option probabilities are read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "method")]
pub enum OptionReadout {
    /// Each label's continuation scored from the prompt's echoed log-probabilities:
    /// exact, as the local engine scores it.
    PromptLogprobs,
    /// The next token's `top` most probable tokens: a label outside them counts 0 and
    /// the probability outside the list is recorded as unobserved.
    NextTokenTop { top: usize },
    /// Neither: studies with a choice read-out are refused.
    Unavailable { why: String },
}

/// How a completions-mode prompt is sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PromptForm {
    /// The local tokenizer's ids: the server sees exactly the local run's tokens.
    TokenIds,
    /// The rendered text, which the server tokenizes again (its tokenizer may merge
    /// some characters differently).
    Text,
}

/// What run.json records of a server model (never a key).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ServerRecord {
    /// Base URL and served model id.
    pub endpoint: String,
    pub served_model: String,
    pub mode: Mode,
    pub prompts: PromptForm,
    pub options: OptionReadout,
    /// The server's entry for the model in `GET /models`, as it gave it.
    #[serde(default)]
    pub models_entry: Value,
    /// What `GET /version` beside the API root answered (vLLM, SGLang), if anything.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<Value>,
    /// The sampling fields every generation request carries besides temperature, seed
    /// and length: those of a plain temperature sampler that this server accepted.
    #[serde(default)]
    pub sampling: Value,
    /// `system_fingerprint` from the server's first reply, where it gives one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub system_fingerprint: Option<String>,
    /// Where the tokenizer and chat template came from.
    pub tokenizer_from: String,
}

impl ServerRecord {
    /// What would make a resumed run's trials computed differently from its first
    /// part's: the mode, prompt form, option read-out, sampling fields and server
    /// version. (The models entry is left out: vLLM stamps it with the time of asking.)
    pub fn result_changing_differences(&self, other: &ServerRecord) -> Vec<String> {
        fn show<T: Serialize>(v: &T) -> String {
            serde_json::to_string(v).unwrap_or_default()
        }
        let pairs: [(&str, String, String); 5] = [
            ("mode", show(&self.mode), show(&other.mode)),
            ("prompts", show(&self.prompts), show(&other.prompts)),
            ("options", show(&self.options), show(&other.options)),
            (
                "sampling",
                self.sampling.to_string(),
                other.sampling.to_string(),
            ),
            ("version", show(&self.version), show(&other.version)),
        ];
        pairs
            .into_iter()
            .filter(|(_, a, b)| a != b)
            .map(|(name, a, b)| format!("server {name}: {a} vs {b}"))
            .collect()
    }

    /// One line: endpoint, mode, prompt form, option read-out, fingerprint.
    pub fn describe(&self) -> String {
        format!(
            "{}#{}{}, {}, prompts as {}, options from {}{}",
            self.endpoint,
            self.served_model,
            self.version
                .as_ref()
                .map(|v| format!(" (version {v})"))
                .unwrap_or_default(),
            match self.mode {
                Mode::Completions => "completions (rendered here)",
                Mode::Chat => "chat (rendered by the server)",
            },
            match self.prompts {
                PromptForm::TokenIds => "token ids",
                PromptForm::Text => "text (re-tokenized by the server)",
            },
            match &self.options {
                OptionReadout::PromptLogprobs => "prompt log-probabilities (exact)".to_string(),
                OptionReadout::NextTokenTop { top } =>
                    format!("the next token's top {top} (unobserved mass recorded)"),
                OptionReadout::Unavailable { why } => format!("nowhere ({why})"),
            },
            self.system_fingerprint
                .as_ref()
                .map(|f| format!(", fingerprint {f}"))
                .unwrap_or_default()
        )
    }
}

/// A connected server model.
pub struct ServerModel {
    pub label: String,
    pub client: Client,
    pub tokenizer: ModelTokenizer,
    pub chat_template: ChatTemplate,
    pub record: ServerRecord,
}

/// The sampling of one generation request.
#[derive(Debug, Clone, Copy)]
pub struct Sample {
    pub temperature: f64,
    pub max_tokens: usize,
    /// The request's `seed`, derived from the trial's stream.
    pub seed: u64,
}

/// A prompt in every form a request may need: the conversation as the template
/// receives it, its rendering, and its tokens.
pub struct Prompt<'a> {
    pub messages: &'a [Message],
    pub text: &'a str,
    pub tokens: &'a [u32],
}

/// Top-list sizes tried, largest first: llama.cpp's server takes any; vLLM's default
/// `--max-logprobs` is 20; OpenAI's own API allows 5.
const TOP_SIZES: [usize; 3] = [100, 20, 5];

impl ServerModel {
    /// Connects: the served id is checked, the text side loaded from `text_from`, and
    /// what the server offers (token-id prompts, log-probabilities) found out with a
    /// few one-token requests.
    pub fn connect(
        endpoint: Endpoint,
        text_from: Option<&ModelRef>,
        mode: Mode,
        patience: Patience,
    ) -> Result<ServerModel> {
        let text_from = text_from.ok_or_else(|| {
            Error::Server(format!(
                "{}: no tokenizer and chat template to render prompts with; add \
                 ?tokenizer=MODEL to the spec (a registry name, a .gguf file or a Hugging \
                 Face directory of the same model; its weights are not loaded), e.g. \
                 openai+{}?tokenizer=smollm2-135m-instruct#{}",
                endpoint.describe(),
                endpoint.base_url,
                endpoint.model
            ))
        })?;
        let side = load_text_side(text_from)?;
        let chat_template = side.chat_template.ok_or_else(|| {
            Error::Server(format!(
                "{}: {} has no chat template; studies are conversations: {}",
                endpoint.describe(),
                side.path.display(),
                text_from.missing_template_fix()
            ))
        })?;
        let client = Client::new(endpoint.clone(), patience);
        let models_entry = client.check_model()?;
        let probe_ids = side.tokenizer.encode(PROBE_PROMPT, false)?;
        let prompts = match client.probe(
            "completions",
            json!({"prompt": probe_ids, "max_tokens": 1, "temperature": 0.0}),
        )? {
            Some(_) => PromptForm::TokenIds,
            None => PromptForm::Text,
        };
        let (support, reply) = client.logprob_support()?;
        let system_fingerprint = reply["system_fingerprint"].as_str().map(String::from);
        let options = match mode {
            Mode::Chat => match largest_top(&client, true)? {
                Some(top) => OptionReadout::NextTokenTop { top },
                None => OptionReadout::Unavailable {
                    why: "its /chat/completions gives no top_logprobs".into(),
                },
            },
            // Exact scoring needs the prompt's own tokens, aligned, so it is used only
            // where the server takes token ids.
            Mode::Completions if support == Logprobs::Prompt && prompts == PromptForm::TokenIds => {
                OptionReadout::PromptLogprobs
            }
            Mode::Completions => match largest_top(&client, false)? {
                Some(top) => OptionReadout::NextTokenTop { top },
                None => OptionReadout::Unavailable {
                    why: "its /completions gives no log-probabilities (logprobs)".into(),
                },
            },
        };
        let sampling = accepted_sampling(&client, mode == Mode::Chat)?;
        let label = endpoint.label();
        Ok(ServerModel {
            label,
            record: ServerRecord {
                endpoint: endpoint.base_url.clone(),
                served_model: endpoint.model.clone(),
                mode,
                prompts,
                options,
                models_entry,
                version: client.version(),
                sampling,
                system_fingerprint,
                tokenizer_from: side.path.display().to_string(),
            },
            client,
            tokenizer: side.tokenizer,
            chat_template,
        })
    }

    /// The prompt text for a conversation, through the model's template.
    pub fn render(&self, messages: &[Message]) -> Result<String> {
        self.chat_template.render(messages, true)
    }

    /// A conversation's prompt text and its tokens: what a `Prompt` borrows.
    pub fn rendered(&self, messages: &[Message]) -> Result<(String, Vec<u32>)> {
        let text = self.render(messages)?;
        let tokens = self.tokenizer.encode(&text, false)?;
        Ok((text, tokens))
    }

    /// What the choice read-out cannot do on this server, if anything, for labels made
    /// of `label_tokens` (a top list shows single tokens only).
    pub fn option_readout_refusal(&self, label_tokens: &[Vec<u32>]) -> Option<String> {
        let fix = "serve the model from vLLM (prompt_logprobs through echo + logprobs, \
                   with token-id prompts) or a server whose /completions returns \
                   logprobs; or run a study with generated answers only";
        match &self.record.options {
            OptionReadout::Unavailable { why } => Some(format!(
                "{}: the choice read-out needs option log-probabilities and {why}: {fix}",
                self.client.endpoint.describe()
            )),
            OptionReadout::NextTokenTop { .. } => {
                label_tokens.iter().find(|t| t.len() != 1).map(|t| {
                    format!(
                        "{}: the server gives only the next token's top log-probabilities, \
                         and the label '{}' is {} tokens long, so its probability cannot be \
                         read: {fix}",
                        self.client.endpoint.describe(),
                        self.tokenizer.decode(t).unwrap_or_default(),
                        t.len()
                    )
                })
            }
            OptionReadout::PromptLogprobs => None,
        }
    }

    /// One generation: the reply's text and the tokens it used.
    pub fn generate(&self, prompt: &Prompt<'_>, sample: Sample) -> Result<(String, usize)> {
        let mut body = self.record.sampling.clone();
        body["max_tokens"] = json!(sample.max_tokens);
        body["temperature"] = json!(sample.temperature);
        body["seed"] = json!(sample.seed);
        let reply = match self.record.mode {
            Mode::Completions => {
                body["prompt"] = self.prompt_field(prompt);
                self.client.completion(body)?
            }
            Mode::Chat => {
                body["messages"] = chat_messages(prompt.messages);
                self.client.chat_completion(body)?
            }
        };
        let choice = &reply["choices"][0];
        let text = choice["text"]
            .as_str()
            .or_else(|| choice["message"]["content"].as_str())
            .ok_or_else(|| {
                Error::Server(crate::secrets::redact(&format!(
                    "{}: a reply without text: {}",
                    self.client.endpoint.describe(),
                    reply.to_string().chars().take(200).collect::<String>()
                )))
            })?;
        let used = reply["usage"]["completion_tokens"].as_u64().unwrap_or(0) as usize;
        Ok((text.to_string(), used))
    }

    /// The log-probability of each option's tokens after the prompt (negative infinity
    /// where a top list did not show it), and the probability outside the top list
    /// where that is how they were read.
    pub fn option_logprobs(
        &self,
        prompt: &Prompt<'_>,
        options: &[Vec<u32>],
    ) -> Result<(Vec<f64>, Option<f64>)> {
        if let Some(why) = self.option_readout_refusal(options) {
            return Err(Error::Server(why));
        }
        match self.record.options {
            OptionReadout::PromptLogprobs => self.echoed(prompt, options).map(|l| (l, None)),
            OptionReadout::NextTokenTop { top } => self.top_listed(prompt, options, top),
            OptionReadout::Unavailable { .. } => unreachable!("refused above"),
        }
    }

    /// Exact: every option's continuation sent after the prompt in one request, and the
    /// echoed log-probabilities of its own tokens summed.
    fn echoed(&self, prompt: &Prompt<'_>, options: &[Vec<u32>]) -> Result<Vec<f64>> {
        let prompts: Vec<Vec<u32>> = options
            .iter()
            .map(|o| [prompt.tokens, o].concat())
            .collect();
        let reply = self.client.completion(json!({
            "prompt": prompts, "max_tokens": 1, "temperature": 0.0,
            "echo": true, "logprobs": 1,
        }))?;
        echoed_option_sums(&reply, prompt.tokens.len(), options).map_err(|why| {
            Error::Server(format!(
                "{}: the echoed log-probabilities cannot be read as the options' ({why}); \
                 the trial is recorded as failed rather than with shifted or invented numbers",
                self.client.endpoint.describe()
            ))
        })
    }

    /// From the next token's top list: each single-token label's value where listed.
    fn top_listed(
        &self,
        prompt: &Prompt<'_>,
        options: &[Vec<u32>],
        top: usize,
    ) -> Result<(Vec<f64>, Option<f64>)> {
        let listed: Vec<(String, f64)> = match self.record.mode {
            Mode::Completions => {
                let reply = self.client.completion(json!({
                    "prompt": self.prompt_field(prompt), "max_tokens": 1,
                    "temperature": 0.0, "logprobs": top,
                }))?;
                completion_top_list(&reply)
            }
            Mode::Chat => {
                let reply = self.client.chat_completion(json!({
                    "messages": chat_messages(prompt.messages), "max_tokens": 1,
                    "temperature": 0.0, "logprobs": true, "top_logprobs": top,
                }))?;
                chat_top_list(&reply)
            }
        };
        if listed.is_empty() {
            return Err(Error::Server(format!(
                "{}: the reply lists no top log-probabilities",
                self.client.endpoint.describe()
            )));
        }
        if let Some((token, value)) = listed.iter().find(|(_, l)| !plausible_logprob(*l)) {
            return Err(Error::Server(format!(
                "{}: the reply's top list gives '{token}' the log-probability {value}, which \
                 no distribution has (a log-probability is at most 0); the trial is recorded \
                 as failed",
                self.client.endpoint.describe()
            )));
        }
        let mass: f64 = listed.iter().map(|(_, l)| l.exp()).sum();
        if mass > 1.0 + LOGPROB_SLACK * listed.len() as f64 {
            return Err(Error::Server(format!(
                "{}: the reply's top list holds a probability mass of {mass:.4}, more than 1; \
                 the trial is recorded as failed",
                self.client.endpoint.describe()
            )));
        }
        let labels = options
            .iter()
            .map(|o| self.tokenizer.decode(o))
            .collect::<Result<Vec<String>>>()?;
        let (values, unobserved) = label_values(&listed, &labels);
        Ok((values, Some(unobserved)))
    }

    fn prompt_field(&self, prompt: &Prompt<'_>) -> Value {
        match self.record.prompts {
            PromptForm::TokenIds => json!(prompt.tokens),
            PromptForm::Text => json!(prompt.text),
        }
    }
}

/// How far above 0 a log-probability may lie and still be read as 0: servers compute in
/// f32 (a certain token's value comes back as 1e-7 or so), never more than this.
const LOGPROB_SLACK: f64 = 1e-4;

/// Whether `l` can be a log-probability: at most 0 (with f32 rounding slack), or the
/// negative infinity of an impossible token; not NaN.
fn plausible_logprob(l: f64) -> bool {
    l <= LOGPROB_SLACK && !l.is_nan()
}

/// Each option's summed log-probability from an echoed completions reply holding one
/// choice per option (prompt then option tokens, then the one generated token that
/// `max_tokens: 1` asks for): positions `prompt_len..` of choice i's `token_logprobs`
/// are option i's tokens. The error says what is wrong where any option is not covered,
/// a choice lists another number of positions than was sent (its positions would be
/// read shifted), or a value is no log-probability.
fn echoed_option_sums(
    reply: &Value,
    prompt_len: usize,
    options: &[Vec<u32>],
) -> std::result::Result<Vec<f64>, String> {
    let mut out = vec![None; options.len()];
    let choices = reply["choices"]
        .as_array()
        .ok_or("the reply has no choices")?;
    for choice in choices {
        let i = choice["index"]
            .as_u64()
            .ok_or("a choice without its index")? as usize;
        let values = choice["logprobs"]["token_logprobs"]
            .as_array()
            .ok_or_else(|| format!("choice {i} has no token_logprobs"))?;
        let option = options
            .get(i)
            .ok_or_else(|| format!("choice {i} answers no option sent"))?;
        let sent = prompt_len + option.len();
        if values.len() != sent + 1 {
            return Err(format!(
                "choice {i} lists {} positions for the {sent} tokens sent and 1 generated",
                values.len()
            ));
        }
        let mut sum = 0.0;
        for (p, value) in values.iter().enumerate().take(sent).skip(prompt_len) {
            let value = value
                .as_f64()
                .ok_or_else(|| format!("choice {i} has no value at position {p}"))?;
            if !plausible_logprob(value) {
                return Err(format!(
                    "choice {i} gives position {p} the log-probability {value}, which no \
                     distribution has (a log-probability is at most 0)"
                ));
            }
            sum += value;
        }
        *out.get_mut(i).ok_or("an index out of range")? = Some(sum);
    }
    out.into_iter()
        .enumerate()
        .map(|(i, v)| v.ok_or_else(|| format!("no choice answers option {i}")))
        .collect()
}

/// The first generated token's top list from a completions reply: (token text, log p).
fn completion_top_list(reply: &Value) -> Vec<(String, f64)> {
    reply["choices"][0]["logprobs"]["top_logprobs"][0]
        .as_object()
        .map(|m| {
            m.iter()
                .filter_map(|(k, v)| Some((k.clone(), v.as_f64()?)))
                .collect()
        })
        .unwrap_or_default()
}

/// The first generated token's top list from a chat completions reply.
fn chat_top_list(reply: &Value) -> Vec<(String, f64)> {
    reply["choices"][0]["logprobs"]["content"][0]["top_logprobs"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|e| Some((e["token"].as_str()?.to_string(), e["logprob"].as_f64()?)))
                .collect()
        })
        .unwrap_or_default()
}

/// Each label's log-probability in a top list (negative infinity where unlisted) and
/// the probability the list leaves out.
fn label_values(listed: &[(String, f64)], labels: &[String]) -> (Vec<f64>, f64) {
    let seen: f64 = listed.iter().map(|(_, l)| l.exp()).sum();
    let values = labels
        .iter()
        .map(|label| {
            listed
                .iter()
                .filter(|(k, _)| k == label)
                .map(|(_, l)| *l)
                .fold(f64::NEG_INFINITY, f64::max)
        })
        .collect();
    (values, (1.0 - seen).max(0.0))
}

/// A one-token probe of `fields` on the chat or the completions route, asking about
/// the probe prompt.
fn probe_request(chat: bool, mut fields: Value) -> (&'static str, Value) {
    fields["max_tokens"] = json!(1);
    if chat {
        fields["messages"] = json!([{"role": "user", "content": PROBE_PROMPT}]);
        ("chat/completions", fields)
    } else {
        fields["prompt"] = json!(PROBE_PROMPT);
        ("completions", fields)
    }
}

/// The largest top list the server accepts (None: it lists none).
fn largest_top(client: &Client, chat: bool) -> Result<Option<usize>> {
    for top in TOP_SIZES {
        let fields = if chat {
            json!({"temperature": 0.0, "logprobs": true, "top_logprobs": top})
        } else {
            json!({"temperature": 0.0, "logprobs": top})
        };
        let (path, body) = probe_request(chat, fields);
        let Some(reply) = client.probe(path, body)? else {
            continue;
        };
        let listed = if chat {
            chat_top_list(&reply)
        } else {
            completion_top_list(&reply)
        };
        if !listed.is_empty() {
            return Ok(Some(top));
        }
    }
    Ok(None)
}

/// Fields that turn off what servers add to plain temperature sampling by default
/// (llama.cpp's top-k 40, min-p 0.05 and repeat penalty), so the study samples from the
/// model's own distribution as a local run does; each server reads the fields it knows
/// and ignores the others. Servers differ in how top-k is switched off (llama.cpp: 0,
/// older vLLM: -1), so candidates are tried in order at connection.
fn sampling_candidates() -> [Value; 3] {
    let plain = |top_k: Option<i64>| {
        let mut v = json!({
            "top_p": 1.0,
            "min_p": 0.0,
            "repeat_penalty": 1.0,
            "repetition_penalty": 1.0,
            "frequency_penalty": 0.0,
            "presence_penalty": 0.0,
        });
        if let Some(k) = top_k {
            v["top_k"] = json!(k);
        }
        v
    };
    [plain(Some(0)), plain(Some(-1)), json!({"top_p": 1.0})]
}

/// The first sampling candidate the server accepts in a one-token generation.
fn accepted_sampling(client: &Client, chat: bool) -> Result<Value> {
    for fields in sampling_candidates() {
        let mut body = fields.clone();
        body["temperature"] = json!(1.0);
        body["seed"] = json!(1);
        let (path, body) = probe_request(chat, body);
        if client.probe(path, body)?.is_some() {
            return Ok(fields);
        }
    }
    Err(Error::Server(format!(
        "{}: the server refused every generation request tried (temperature, top_p, seed)",
        client.endpoint.describe()
    )))
}

/// Messages as the chat API takes them (`{"role": "user", "content": ...}`).
fn chat_messages(messages: &[Message]) -> Value {
    serde_json::to_value(messages).unwrap_or(Value::Null)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn echoed_sums_read_each_options_own_tokens_after_the_prompt() {
        // vLLM's shape: one choice per prompt, the first prompt token's value null, the
        // generated token last; choices may come back in any order.
        let reply = json!({"choices": [
            {"index": 1, "logprobs": {"token_logprobs": [null, -0.5, -1.0, -2.0, -0.25, -9.0]}},
            {"index": 0, "logprobs": {"token_logprobs": [null, -0.5, -1.0, -3.0, -7.0]}},
        ]});
        let options = vec![vec![11], vec![12, 13]];
        assert_eq!(
            echoed_option_sums(&reply, 3, &options),
            Ok(vec![-3.0, -2.25])
        );
        // A reply that stops before an option's last token covers nothing.
        let short = json!({"choices": [
            {"index": 0, "logprobs": {"token_logprobs": [null, -0.5, -1.0, -3.0]}},
            {"index": 1, "logprobs": {"token_logprobs": [null, -0.5, -1.0, -2.0]}},
        ]});
        assert!(echoed_option_sums(&short, 3, &options).is_err());
        // A missing choice, or a null where an option token should be, likewise.
        let missing = json!({"choices": [
            {"index": 0, "logprobs": {"token_logprobs": [null, -0.5, -1.0, -3.0, -7.0]}},
        ]});
        assert!(echoed_option_sums(&missing, 3, &options).is_err());
        let null = json!({"choices": [
            {"index": 0, "logprobs": {"token_logprobs": [null, -0.5, -1.0, null, -7.0]}},
            {"index": 1, "logprobs": {"token_logprobs": [null, -0.5, -1.0, -2.0, -0.25]}},
        ]});
        assert!(echoed_option_sums(&null, 3, &options).is_err());
    }

    #[test]
    fn echoed_sums_refuse_a_reply_one_position_longer_than_was_sent() {
        // A server that prepends a token of its own (a second BOS) lists one position
        // more than was sent: read as before, every option value came one position
        // late and was recorded as valid.
        let shifted = json!({"choices": [
            {"index": 0, "logprobs": {"token_logprobs": [null, -0.1, -0.5, -1.0, -3.0, -7.0]}},
            {"index": 1, "logprobs": {"token_logprobs": [null, -0.1, -0.5, -1.0, -2.0, -0.25, -9.0]}},
        ]});
        let options = vec![vec![11], vec![12, 13]];
        let err = echoed_option_sums(&shifted, 3, &options).unwrap_err();
        assert!(err.contains("6 positions for the 4 tokens sent"), "{err}");
    }

    use proptest::prelude::*;

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig { cases: 300, failure_persistence: None, rng_seed: proptest::test_runner::RngSeed::Fixed(20261207), ..Default::default() })]

        /// Whatever a server puts in an echoed reply (values out of range, nulls, strings,
        /// positions missing or added, choices repeated or out of range), what is read is
        /// either refused or one sum per option of log-probabilities at most 0 taken from
        /// a choice of exactly the length sent.
        #[test]
        fn an_echoed_reply_is_read_only_when_every_number_can_be_a_log_probability(
            lengths in proptest::collection::vec(0usize..9, 0..4),
            indices in proptest::collection::vec(0u64..4, 0..4),
            values in proptest::collection::vec(
                proptest::prop_oneof![
                    (-20.0f64..0.0).prop_map(|v| json!(v)),
                    (0.0f64..40.0).prop_map(|v| json!(v)),
                    proptest::strategy::Just(Value::Null),
                    proptest::strategy::Just(json!("x")),
                ],
                9,
            ),
        ) {
            let options = vec![vec![11], vec![12, 13]];
            let prompt_len = 3;
            let choices: Vec<Value> = lengths
                .iter()
                .zip(&indices)
                .map(|(&n, &i)| json!({"index": i, "logprobs": {"token_logprobs": values[..n].to_vec()}}))
                .collect();
            let reply = json!({"choices": choices});
            if let Ok(sums) = echoed_option_sums(&reply, prompt_len, &options) {
                prop_assert_eq!(sums.len(), options.len());
                for (i, sum) in sums.iter().enumerate() {
                    prop_assert!(*sum <= LOGPROB_SLACK * 2.0, "{sum}");
                    let chosen = choices.iter().rev().find(|c| c["index"] == json!(i)).unwrap();
                    let listed = chosen["logprobs"]["token_logprobs"].as_array().unwrap().len();
                    prop_assert_eq!(listed, prompt_len + options[i].len() + 1);
                }
            }
        }
    }

    #[test]
    fn a_positive_log_probability_is_refused_not_recorded() {
        // 29.6 as an option's mass came from a server answering log p = 3.39.
        let positive = json!({"choices": [
            {"index": 0, "logprobs": {"token_logprobs": [null, -0.5, -1.0, 3.39, -7.0]}},
            {"index": 1, "logprobs": {"token_logprobs": [null, -0.5, -1.0, -2.0, -0.25, -9.0]}},
        ]});
        let options = vec![vec![11], vec![12, 13]];
        let err = echoed_option_sums(&positive, 3, &options).unwrap_err();
        assert!(err.contains("3.39") && err.contains("at most 0"), "{err}");
        // f32 rounding of a certain token stays readable.
        assert!(plausible_logprob(3e-7) && plausible_logprob(f64::NEG_INFINITY));
        assert!(!plausible_logprob(f64::NAN) && !plausible_logprob(0.01));
    }

    #[test]
    fn top_lists_give_listed_labels_their_value_and_the_rest_as_unobserved() {
        // llama.cpp's completions shape (as llama-cpp-python 0.3.36 replied) and the
        // chat shape carry the same list.
        let half = 0.5f64.ln();
        let completion = json!({"choices": [{"logprobs": {
            "tokens": ["2"], "token_logprobs": [half],
            "top_logprobs": [{"2": half, "3": -1.386_294_361_119_890_6}]
        }}]});
        let chat = json!({"choices": [{"logprobs": {"content": [{
            "token": "2", "logprob": half,
            "top_logprobs": [
                {"token": "2", "logprob": half},
                {"token": "3", "logprob": -1.386_294_361_119_890_6}
            ]
        }]}}]});
        let labels: Vec<String> = ["1", "2", "3"].iter().map(|s| s.to_string()).collect();
        for listed in [completion_top_list(&completion), chat_top_list(&chat)] {
            let (values, unobserved) = label_values(&listed, &labels);
            assert_eq!(values[0], f64::NEG_INFINITY);
            assert!((values[1].exp() - 0.5).abs() < 1e-12);
            assert!((values[2].exp() - 0.25).abs() < 1e-12);
            assert!((unobserved - 0.25).abs() < 1e-12);
        }
        assert!(completion_top_list(&json!({"choices": [{"logprobs": null}]})).is_empty());
    }

    fn record() -> ServerRecord {
        ServerRecord {
            endpoint: "http://127.0.0.1:8000/v1".into(),
            served_model: "smollm2".into(),
            mode: Mode::Completions,
            prompts: PromptForm::Text,
            options: OptionReadout::NextTokenTop { top: 100 },
            models_entry: json!({"id": "smollm2", "created": 1}),
            version: None,
            sampling: json!({"top_p": 1.0, "top_k": 0}),
            system_fingerprint: None,
            tokenizer_from: "smollm2-135m-instruct".into(),
        }
    }

    #[test]
    fn a_resume_is_refused_a_server_that_would_compute_trials_differently() {
        let first = record();
        // vLLM stamps its models entry with the time of asking; a restarted server
        // with the same settings is the same plan.
        let restarted = ServerRecord {
            models_entry: json!({"id": "smollm2", "created": 2}),
            system_fingerprint: Some("fp".into()),
            ..record()
        };
        assert!(first.result_changing_differences(&restarted).is_empty());
        let changed = ServerRecord {
            prompts: PromptForm::TokenIds,
            options: OptionReadout::PromptLogprobs,
            sampling: json!({"top_p": 1.0}),
            version: Some(json!({"version": "0.11.0"})),
            ..record()
        };
        let differences = first.result_changing_differences(&changed);
        for field in ["prompts", "options", "sampling", "version"] {
            assert!(
                differences
                    .iter()
                    .any(|d| d.starts_with(&format!("server {field}:"))),
                "{field} not named in {differences:?}"
            );
        }
        let chat = ServerRecord {
            mode: Mode::Chat,
            ..record()
        };
        assert_eq!(
            first.result_changing_differences(&chat),
            vec![r#"server mode: "completions" vs "chat""#.to_string()]
        );
    }
}
