//! The shipped scenario files load and meet the study's requirements; malformed files
//! give errors that name the file and line.

use affectbench::scenario::{Library, Study};
use std::path::Path;

fn library() -> Library {
    Library::load(Path::new("scenarios")).expect("shipped scenarios load")
}

#[test]
fn shipped_scenarios_meet_the_design() {
    let lib = library();
    for emotion in [
        "anxiety", "fear", "anger", "disgust", "sadness", "worry", "stress", "neutral",
    ] {
        let ind = lib
            .inductions
            .get(emotion)
            .unwrap_or_else(|| panic!("no {emotion} induction"));
        assert!(
            ind.variants.len() >= 5,
            "{emotion}: {} variants",
            ind.variants.len()
        );
        for v in &ind.variants {
            if v.is_text {
                let affectbench::scenario::Turn::User(t) = &v.turns[0] else {
                    panic!()
                };
                let words = t.split_whitespace().count();
                assert!(
                    (120..=250).contains(&words),
                    "{emotion}/{}: {words} words",
                    v.id
                );
            }
        }
    }
    let stress = &lib.inductions["stress"];
    assert!(
        stress
            .variants
            .iter()
            .all(|v| !v.is_text && v.turns.len() >= 8),
        "stress is a multi-turn protocol"
    );
    assert!(lib.regulations["breathing"].variants.len() >= 3);
    assert!(lib.regulations["reappraisal"].variants.len() >= 3);
    assert!(
        lib.regulations.contains_key("neutral-control") && lib.regulations.contains_key("none")
    );
    assert!(lib.instruments.contains_key("vas") && lib.instruments.contains_key("dass21"));
    for emotion in [
        "anxiety", "fear", "anger", "disgust", "sadness", "worry", "stress",
    ] {
        let s = &lib.instruments[&format!("{emotion}-state")];
        assert!(
            s.items.iter().any(|i| i.reverse),
            "{emotion}-state has a reverse-keyed item"
        );
    }
    assert!(lib.tasks["sentence-stems"].stems.len() >= 30);
    for study in ["affect-induction", "state-anxiety", "smoke"] {
        Study::load(
            &Path::new("scenarios/studies").join(format!("{study}.toml")),
            &lib,
        )
        .unwrap();
    }
    let lancet = Study::load(Path::new("scenarios/studies/affect-induction.toml"), &lib).unwrap();
    assert_eq!(lancet.conditions.len(), 2 + 7 * 4);
    assert_eq!((lancet.repetitions, lancet.temperature), (5, 0.5));
}

#[test]
fn reverse_keying_and_scoring() {
    let lib = library();
    let s = &lib.instruments["anxiety-state"];
    let at_ease = s.items.iter().find(|i| i.id == "at-ease").unwrap();
    assert_eq!(s.keyed_value(at_ease, 4.0), 1.0);
    assert_eq!(
        s.score(&[Some(1.0), Some(2.0), Some(3.0), Some(4.0)]),
        Some(2.5)
    );
    assert_eq!(s.score(&[Some(1.0), None]), None);
    let dass = &lib.instruments["dass21"];
    assert_eq!(
        dass.score(&[Some(1.0); 7]),
        Some(14.0),
        "DASS-21 sums are doubled"
    );
}

fn write(dir: &Path, rel: &str, text: &str) {
    let p = dir.join(rel);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, text).unwrap();
}

#[test]
fn malformed_files_name_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "inductions/x.toml", "id = \"x\"\nversion = 1\nemotion = \"x\"\ndescription = \"d\"\nsource = \"s\"\nlicence = \"l\"\n\n[[variant]]\nid = \"a\"\ntxet = \"typo\"\n");
    let err = Library::load(dir.path()).unwrap_err().to_string();
    assert!(err.contains("x.toml:10") && err.contains("txet"), "{err}");

    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "instruments/s.toml", "id = \"s\"\nversion = 1\ndescription = \"d\"\nsource = \"s\"\nlicence = \"l\"\ninstruction = \"i\"\ntime_frame = \"now\"\nscoring = \"median\"\nresponse = { kind = \"numeric\", min = 0, max = 10, choice_bins = [0, 10] }\n[[item]]\nid = \"a\"\ntext = \"t\"\n");
    let err = Library::load(dir.path()).unwrap_err().to_string();
    assert!(
        err.contains("s.toml:8") && err.contains("\"sum\" or \"mean\""),
        "{err}"
    );

    let lib = library();
    let study = dir.path().join("study.toml");
    std::fs::write(
        &study,
        std::fs::read_to_string("scenarios/studies/smoke.toml")
            .unwrap()
            .replace(
                "instruments = [\"sadness-state\"]\n\n[[condition]]",
                "instruments = [\"sadnes-state\"]\n\n[[condition]]",
            ),
    )
    .unwrap();
    let err = Study::load(&study, &lib).unwrap_err().to_string();
    assert!(
        err.contains("study.toml:") && err.contains("sadnes-state") && err.contains("known:"),
        "{err}"
    );
}
