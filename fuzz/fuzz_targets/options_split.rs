//! A VM's `Options`, as a client sets them: `split` reads them as a POSIX shell would (no
//! expansion), and `check` refuses what the daemon owns (QMP, the pid file, its console's
//! monitor and display).
#![no_main]

use gns3_qemud::vm::options::{check, split};
use gns3_qemud::vm::Error;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // D-Bus strings are UTF-8: nothing else reaches `Options`.
    let Ok(options) = std::str::from_utf8(data) else {
        return;
    };
    let words = split(options);
    let checked = check(options);
    let words = match words {
        Ok(words) => words,
        Err(e) => {
            assert!(matches!(e, Error::InvalidArgument(_)), "{e:?}");
            assert!(
                matches!(checked, Err(Error::InvalidArgument(_))),
                "{checked:?}"
            );
            return;
        }
    };

    // Quotes and backslashes only take characters away: every word, and all of them in a
    // row, are the input with some characters left out.
    let all: String = words.concat();
    assert!(subsequence(&all, options), "{words:?} from {options:?}");
    // An empty word needs quotes (`''`, `""`); blanks alone never make one.
    if words.iter().any(String::is_empty) {
        assert!(options.contains(['\'', '"']), "{words:?} from {options:?}");
    }
    // Quoted back, each word comes out whole.
    let requoted: Vec<String> = words.iter().map(|w| quote(w)).collect();
    match split(&requoted.join(" ")) {
        Ok(again) => assert_eq!(again, words, "{options:?} requoted as {requoted:?}"),
        Err(e) => panic!("{words:?} requoted as {requoted:?}: {e}"),
    }

    match checked {
        Ok(()) => {
            for w in &words {
                let opt = w.strip_prefix("--").or_else(|| w.strip_prefix('-'));
                let refused = matches!(
                    opt,
                    Some(
                        "qmp"
                            | "qmp-pretty"
                            | "pidfile"
                            | "daemonize"
                            | "S"
                            | "sandbox"
                            | "monitor"
                            | "mon"
                            | "nographic"
                            | "vnc"
                            | "spice"
                    )
                );
                assert!(!refused, "{w:?} let through");
            }
        }
        Err(Error::InvalidArgument(msg)) => {
            assert!(
                words.iter().any(|w| msg.contains(&format!("'{w}'"))),
                "{msg}"
            );
        }
        Err(e) => panic!("{e:?}"),
    }
});

fn subsequence(needle: &str, haystack: &str) -> bool {
    let mut rest = haystack.chars();
    needle.chars().all(|c| rest.any(|h| h == c))
}

/// Single quotes keep everything but a single quote, which is closed, escaped, reopened.
fn quote(word: &str) -> String {
    format!("'{}'", word.replace('\'', r"'\''"))
}
