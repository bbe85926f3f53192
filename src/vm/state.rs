//! The states a VM goes through, and the one function that says which moves are legal.

use serde::{Deserialize, Serialize};
use std::fmt;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    Stopped,
    Starting,
    Running,
    Paused,
    Stopping,
}

impl State {
    pub const ALL: [State; 5] = [
        State::Stopped,
        State::Starting,
        State::Running,
        State::Paused,
        State::Stopping,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            State::Stopped => "stopped",
            State::Starting => "starting",
            State::Running => "running",
            State::Paused => "paused",
            State::Stopping => "stopping",
        }
    }

    /// Whether a QEMU process exists (or is being made) for the VM.
    pub fn is_active(self) -> bool {
        self != State::Stopped
    }

    /// The only place that decides which state changes are legal.
    ///
    /// Any active state may fall to `Stopped`: QEMU can die at any moment (a crash, a
    /// `kill -9` from outside, a guest that powers itself off). `Paused` is reachable from
    /// `Running` both by `Suspend` and by a user typing `stop` on the HMP monitor.
    pub fn can_become(self, next: State) -> bool {
        use State::*;
        matches!(
            (self, next),
            (Stopped, Starting)
                | (Starting, Running)
                | (Starting, Stopped)
                | (Running, Paused)
                | (Running, Stopping)
                | (Running, Stopped)
                | (Paused, Running)
                | (Paused, Stopping)
                | (Paused, Stopped)
                | (Stopping, Stopped)
        )
    }
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::State::{self, *};

    #[test]
    fn every_pair_of_states() {
        // (from, to, legal): all 25 pairs, written out so a change to the rules is a
        // deliberate change to this table.
        let table: [(State, State, bool); 25] = [
            (Stopped, Stopped, false),
            (Stopped, Starting, true),
            (Stopped, Running, false),
            (Stopped, Paused, false),
            (Stopped, Stopping, false),
            (Starting, Stopped, true),
            (Starting, Starting, false),
            (Starting, Running, true),
            (Starting, Paused, false),
            (Starting, Stopping, false),
            (Running, Stopped, true),
            (Running, Starting, false),
            (Running, Running, false),
            (Running, Paused, true),
            (Running, Stopping, true),
            (Paused, Stopped, true),
            (Paused, Starting, false),
            (Paused, Running, true),
            (Paused, Paused, false),
            (Paused, Stopping, true),
            (Stopping, Stopped, true),
            (Stopping, Starting, false),
            (Stopping, Running, false),
            (Stopping, Paused, false),
            (Stopping, Stopping, false),
        ];
        for (from, to, legal) in table {
            assert_eq!(from.can_become(to), legal, "{from} -> {to}");
        }
        let covered: std::collections::HashSet<_> =
            table.iter().map(|(a, b, _)| (*a, *b)).collect();
        for a in State::ALL {
            for b in State::ALL {
                assert!(
                    covered.contains(&(a, b)),
                    "pair {a} -> {b} missing from the table"
                );
            }
        }
    }

    #[test]
    fn names_are_the_contract() {
        let names: Vec<_> = State::ALL.iter().map(|s| s.as_str()).collect();
        assert_eq!(
            names,
            ["stopped", "starting", "running", "paused", "stopping"]
        );
    }
}
