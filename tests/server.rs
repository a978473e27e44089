//! `affectbench models check-server` where no server is needed to know the answer: a
//! spec with credentials is refused without echoing them, and an unreachable server is
//! named with what to check. (Against a real llama.cpp server: tests/server_run.rs.)

use crate::common;

#[test]
fn a_server_spec_with_credentials_is_refused_without_printing_them() {
    let o = common::affectbench(&[
        "models",
        "check-server",
        "openai+http://alice:hunter2@127.0.0.1:9/v1#m",
    ]);
    assert!(!o.status.success());
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(!all.contains("hunter2") && !all.contains("alice"), "{all}");
    assert!(all.contains("key_env"), "{all}");
}

#[test]
fn an_unreachable_server_is_named_with_what_to_check() {
    // Nothing listens on the discard port of the loopback interface here.
    let o = common::affectbench(&[
        "models",
        "check-server",
        "openai+http://127.0.0.1:9/v1#m",
        "--retries",
        "0",
        "--timeout",
        "2",
    ]);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("http://127.0.0.1:9/v1#m") && err.contains("is the server running"),
        "{err}"
    );
}
