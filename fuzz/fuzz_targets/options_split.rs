//! A VM's `Options`, as a client sets them: `split` reads them as a POSIX shell would (no
//! expansion), and `check` refuses what the daemon owns, under each of the four settings of
//! its console and monitor flags.
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
    let flags = [(false, false), (false, true), (true, false), (true, true)];
    let checked = flags.map(|(console, monitor)| check(options, console, monitor));
    let words = match words {
        Ok(words) => words,
        Err(e) => {
            assert!(matches!(e, Error::InvalidArgument(_)), "{e:?}");
            for c in &checked {
                assert!(matches!(c, Err(Error::InvalidArgument(_))), "{c:?}");
            }
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

    for ((console, monitor), result) in flags.into_iter().zip(&checked) {
        match result {
            Ok(()) => {
                for w in &words {
                    let opt = w.strip_prefix("--").or_else(|| w.strip_prefix('-'));
                    let refused = match opt {
                        Some("qmp" | "qmp-pretty" | "pidfile" | "daemonize" | "S") => true,
                        Some("serial") => console,
                        Some("monitor") => monitor,
                        Some("nographic") => console || monitor,
                        _ => false,
                    };
                    assert!(!refused, "{w:?} let through with {console}/{monitor}");
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
    }
    // The daemon owning more of the VM can only refuse more.
    for (i, (c1, m1)) in flags.into_iter().enumerate() {
        for (j, (c2, m2)) in flags.into_iter().enumerate() {
            if c1 <= c2 && m1 <= m2 && checked[i].is_err() {
                assert!(
                    checked[j].is_err(),
                    "{options:?}: {c1}/{m1} refused, {c2}/{m2} not"
                );
            }
        }
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
