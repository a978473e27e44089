//! Chat templates: rendering a conversation into the exact text the model sees.
//!
//! The template is the model's own Jinja `tokenizer.chat_template` from the GGUF (or
//! `tokenizer_config.json`), rendered with minijinja plus Python-method compatibility
//! (HF templates call `.strip()`, `.startswith()` ...). A registry entry may supply one
//! where the file has none. The rendered text, and its hash, are what results record.

use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Who speaks a turn.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    System,
    User,
    Assistant,
}

/// One turn of a conversation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    pub role: Role,
    pub content: String,
}

impl Message {
    pub fn system(text: impl Into<String>) -> Self {
        Self {
            role: Role::System,
            content: text.into(),
        }
    }
    pub fn user(text: impl Into<String>) -> Self {
        Self {
            role: Role::User,
            content: text.into(),
        }
    }
    pub fn assistant(text: impl Into<String>) -> Self {
        Self {
            role: Role::Assistant,
            content: text.into(),
        }
    }
}

/// A compiled chat template with the special-token strings it may refer to.
#[derive(Debug, Clone)]
pub struct ChatTemplate {
    source: String,
    bos_token: String,
    eos_token: String,
    /// Passed to the template as `enable_thinking` when set (Qwen 3's switch).
    enable_thinking: Option<bool>,
}

impl ChatTemplate {
    /// Checks the template compiles; errors carry minijinja's line information.
    pub fn new(source: &str, bos_token: &str, eos_token: &str) -> Result<Self> {
        let t = Self {
            source: source.to_string(),
            bos_token: bos_token.to_string(),
            eos_token: eos_token.to_string(),
            enable_thinking: None,
        };
        t.env()?;
        Ok(t)
    }

    fn env(&self) -> Result<minijinja::Environment<'static>> {
        let mut env = minijinja::Environment::new();
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_function(
            "raise_exception",
            |msg: String| -> std::result::Result<String, minijinja::Error> {
                Err(minijinja::Error::new(
                    minijinja::ErrorKind::InvalidOperation,
                    msg,
                ))
            },
        );
        // Templates that print a date get a fixed one: a rendered prompt must not depend
        // on the day it was rendered, or runs would not reproduce.
        env.add_function("strftime_now", |_fmt: String| "26 Jul 2024".to_string());
        env.add_template_owned("chat", self.source.clone())
            .map_err(|e| Error::ChatTemplate(format!("does not compile: {e:#}")))?;
        Ok(env)
    }

    /// Renders the conversation; `add_generation_prompt` opens an assistant turn.
    pub fn render(&self, messages: &[Message], add_generation_prompt: bool) -> Result<String> {
        let env = self.env()?;
        let tmpl = env.get_template("chat").expect("added in env()");
        let base = minijinja::context! {
            messages => messages,
            add_generation_prompt => add_generation_prompt,
            bos_token => self.bos_token,
            eos_token => self.eos_token,
        };
        // Undefined unless set: templates test `enable_thinking is defined`.
        let ctx = match self.enable_thinking {
            Some(on) => minijinja::context! { enable_thinking => on, ..base },
            None => base,
        };
        tmpl.render(ctx)
            .map_err(|e| Error::ChatTemplate(format!("rendering failed: {e:#}")))
    }

    /// Whether the template reads a thinking switch (`enable_thinking`, Qwen 3 and
    /// other hybrid reasoning models).
    pub fn has_thinking_switch(&self) -> bool {
        self.source.contains("enable_thinking")
    }

    /// Sets the thinking switch the template sees (None: leave it undefined, the
    /// template's own default).
    pub fn set_thinking(&mut self, on: Option<bool>) {
        self.enable_thinking = on;
    }

    /// sha256 of the template source (recorded with results).
    pub fn hash(&self) -> String {
        sha256_hex(self.source.as_bytes())
    }

    pub fn source(&self) -> &str {
        &self.source
    }
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    const CHATML: &str = "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}";

    #[test]
    fn the_thinking_switch_is_undefined_unless_set() {
        let src = "{{ messages[0].content }}{% if add_generation_prompt %}|a:{% if enable_thinking is defined and enable_thinking is false %}<think></think>{% endif %}{% endif %}";
        let mut t = ChatTemplate::new(src, "", "").unwrap();
        assert!(t.has_thinking_switch());
        assert_eq!(t.render(&[Message::user("q")], true).unwrap(), "q|a:");
        t.set_thinking(Some(false));
        assert_eq!(
            t.render(&[Message::user("q")], true).unwrap(),
            "q|a:<think></think>"
        );
        t.set_thinking(Some(true));
        assert_eq!(t.render(&[Message::user("q")], true).unwrap(), "q|a:");
        assert!(!ChatTemplate::new(CHATML, "", "")
            .unwrap()
            .has_thinking_switch());
    }

    #[test]
    fn renders_multi_turn_chatml() {
        let t = ChatTemplate::new(CHATML, "", "<|im_end|>").unwrap();
        let text = t
            .render(
                &[
                    Message::system("S"),
                    Message::user("U1"),
                    Message::assistant("A1"),
                    Message::user("U2"),
                ],
                true,
            )
            .unwrap();
        assert_eq!(
            text,
            "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nU1<|im_end|>\n<|im_start|>assistant\nA1<|im_end|>\n<|im_start|>user\nU2<|im_end|>\n<|im_start|>assistant\n"
        );
    }

    #[test]
    fn python_string_methods_work() {
        let t = ChatTemplate::new("{{ messages[0]['content'].strip() }}", "", "").unwrap();
        assert_eq!(t.render(&[Message::user("  hi  ")], false).unwrap(), "hi");
    }

    #[test]
    fn broken_template_is_a_clear_error() {
        let err = ChatTemplate::new("{% for x in %}", "", "")
            .unwrap_err()
            .to_string();
        assert!(err.contains("does not compile"), "{err}");
    }
}
