//! Secrets the process has read (API keys from the environment), and the one redaction
//! applied to every text that leaves it: error messages, run.json's `error`, trial
//! records and stderr. A server or proxy that repeats the key in its error body (some
//! echo the `Authorization` header back) must not get it into a file or a job log.

use std::sync::RwLock;

static SECRETS: RwLock<Vec<String>> = RwLock::new(Vec::new());

/// What a redacted secret reads as.
pub const REDACTED: &str = "[redacted key]";

/// Remembers `secret` so that `redact` removes it from every later text. Secrets shorter
/// than 8 characters are not remembered: replacing them would mangle ordinary words (a
/// test key "wrong" turned "the key is wrong" into nonsense), and servers issue keys far
/// longer.
pub fn remember(secret: &str) {
    if secret.chars().count() < 8 {
        return;
    }
    let mut all = SECRETS.write().unwrap_or_else(|e| e.into_inner());
    if !all.iter().any(|s| s == secret) {
        all.push(secret.to_string());
        // Longest first, so a key that contains another is removed whole.
        all.sort_by_key(|s| std::cmp::Reverse(s.len()));
    }
}

/// `text` with every remembered secret replaced by `REDACTED`.
pub fn redact(text: &str) -> String {
    let all = SECRETS.read().unwrap_or_else(|e| e.into_inner());
    let mut out = text.to_string();
    for secret in all.iter() {
        if out.contains(secret.as_str()) {
            out = out.replace(secret.as_str(), REDACTED);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_remembered_key_is_removed_from_any_text_and_short_ones_are_not_remembered() {
        remember("sk-test-secrets-module-0123456789");
        remember("wrong");
        let text = "HTTP 401: bad key sk-test-secrets-module-0123456789 (Bearer sk-test-secrets-module-0123456789); wrong";
        let out = redact(text);
        assert!(!out.contains("sk-test-secrets-module"), "{out}");
        assert_eq!(out.matches(REDACTED).count(), 2, "{out}");
        assert!(out.ends_with("; wrong"), "{out}");
    }
}
