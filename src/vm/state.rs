//! The states a VM goes through, which moves between them are legal, and which operation a
//! VM takes in which state: each decided by one function, with a test of every pair.

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

/// What a client asks of a VM, as far as its state matters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    Start,
    /// Stop as OnStop says.
    Stop,
    /// Stop at once (QMP quit, then signals), ending a shutdown under way.
    PowerOff,
    Suspend,
    Resume,
    Reload,
    Delete,
    /// Add, replace or remove a UDP tunnel.
    Rewire,
    /// Change settings a running QEMU takes or ignores until its next start.
    Configure,
    /// Change a setting a running QEMU holds (`When::Stopped` in the settings table).
    ConfigureStopped,
    /// Reach the console or the monitor of QEMU (OpenConsole, ReadConsole,
    /// HumanMonitorCommand).
    Console,
    /// Remove the VM's own disks, UEFI variables and TPM state (ResetDisks).
    ResetDisks,
    /// Grow a disk: `qemu-img resize` while stopped, `block_resize` while QEMU runs.
    ResizeDisk,
    /// Repair the VM's own disks (RepairDisks), which a running QEMU holds.
    RepairDisks,
    /// Start or read a packet capture (StartCapture, OpenCapture): QEMU writes it.
    Capture,
    /// Remove the saved state (DiscardSavedState), which only a stopped VM has.
    DiscardSavedState,
}

impl Op {
    pub const ALL: [Op; 16] = [
        Op::Start,
        Op::Stop,
        Op::PowerOff,
        Op::Suspend,
        Op::Resume,
        Op::Reload,
        Op::Delete,
        Op::Rewire,
        Op::Configure,
        Op::ConfigureStopped,
        Op::Console,
        Op::ResetDisks,
        Op::ResizeDisk,
        Op::RepairDisks,
        Op::Capture,
        Op::DiscardSavedState,
    ];
}

/// What a VM in a state does with an operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Do it.
    Go,
    /// It is already so: succeed without doing anything.
    Done,
    /// Do this other operation instead (Start of a paused VM resumes it).
    Instead(Op),
    /// A stop is under way: wait for it to end (a Stop during a shutdown).
    Join,
    /// Refused while a start or a stop is under way: try again once it is done.
    Busy,
    /// Refused: the VM's QEMU does not run.
    NotRunning,
    /// Refused: the VM's QEMU runs and holds what would change.
    Holds,
}

/// The only place that decides which operation a VM takes in which state.
pub fn verdict(state: State, op: Op) -> Verdict {
    use Op::*;
    use State::*;
    use Verdict::*;
    match (op, state) {
        (Start, Stopped) => Go,
        (Start, Running) => Done,
        (Start, Paused) => Instead(Resume),
        (Stop, Running | Paused) => Go,
        (Stop, Stopped) => Done,
        // A shutdown waits for the guest; another Stop waits with it, a PowerOff ends it.
        (Stop, Stopping) => Join,
        (PowerOff, Running | Paused | Stopping) => Go,
        (PowerOff, Stopped) => Done,
        (PowerOff, Starting) => Busy,
        (Suspend, Running) | (Resume, Paused) => Go,
        (Suspend, Paused) | (Resume, Running) => Done,
        (Suspend | Resume, Stopped) => NotRunning,
        (Reload, Running | Paused) => Go,
        (Reload | Console, Stopped) => NotRunning,
        // The console shows a guest shutting down too.
        (Console, Running | Paused | Stopping) => Go,
        (Delete | Rewire, Stopped | Running | Paused) => Go,
        (Configure, _) | (ConfigureStopped, Stopped) => Go,
        (ConfigureStopped, Running | Paused) => Holds,
        // A QEMU being started or stopped answers nothing else until that is over (a Stop
        // that timed out leaves the VM Stopping), and holds what it was started with.
        (Suspend | Resume | Reload | Console, Starting) => NotRunning,
        (Suspend | Resume | Reload, Stopping) => NotRunning,
        (ConfigureStopped, Starting | Stopping) => Holds,
        (Start | Stop | Delete | Rewire, Starting) | (Start | Delete | Rewire, Stopping) => Busy,
        // The files QEMU and swtpm have open are neither removed nor repaired under them.
        (ResetDisks | RepairDisks | DiscardSavedState, Stopped) => Go,
        (ResetDisks | RepairDisks | DiscardSavedState, Running | Paused) => Holds,
        (ResetDisks | RepairDisks | DiscardSavedState, Starting | Stopping) => Busy,
        (ResizeDisk, Stopped | Running | Paused) => Go,
        (ResizeDisk, Starting | Stopping) => Busy,
        (Capture, Running | Paused) => Go,
        (Capture, Stopped | Starting | Stopping) => NotRunning,
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
    fn every_operation_in_every_state() {
        use super::{verdict, Op, Verdict::*};
        // (state, operation, verdict): all 80 pairs, written out as the contract has them.
        let table = [
            (Stopped, Op::Start, Go),
            (Starting, Op::Start, Busy),
            (Running, Op::Start, Done),
            (Paused, Op::Start, Instead(Op::Resume)),
            (Stopping, Op::Start, Busy),
            (Stopped, Op::Stop, Done),
            (Starting, Op::Stop, Busy),
            (Running, Op::Stop, Go),
            (Paused, Op::Stop, Go),
            (Stopping, Op::Stop, Join),
            (Stopped, Op::PowerOff, Done),
            (Starting, Op::PowerOff, Busy),
            (Running, Op::PowerOff, Go),
            (Paused, Op::PowerOff, Go),
            (Stopping, Op::PowerOff, Go),
            (Stopped, Op::Suspend, NotRunning),
            (Starting, Op::Suspend, NotRunning),
            (Running, Op::Suspend, Go),
            (Paused, Op::Suspend, Done),
            (Stopping, Op::Suspend, NotRunning),
            (Stopped, Op::Resume, NotRunning),
            (Starting, Op::Resume, NotRunning),
            (Running, Op::Resume, Done),
            (Paused, Op::Resume, Go),
            (Stopping, Op::Resume, NotRunning),
            (Stopped, Op::Reload, NotRunning),
            (Starting, Op::Reload, NotRunning),
            (Running, Op::Reload, Go),
            (Paused, Op::Reload, Go),
            (Stopping, Op::Reload, NotRunning),
            (Stopped, Op::Delete, Go),
            (Starting, Op::Delete, Busy),
            (Running, Op::Delete, Go),
            (Paused, Op::Delete, Go),
            (Stopping, Op::Delete, Busy),
            (Stopped, Op::Rewire, Go),
            (Starting, Op::Rewire, Busy),
            (Running, Op::Rewire, Go),
            (Paused, Op::Rewire, Go),
            (Stopping, Op::Rewire, Busy),
            (Stopped, Op::Configure, Go),
            (Starting, Op::Configure, Go),
            (Running, Op::Configure, Go),
            (Paused, Op::Configure, Go),
            (Stopping, Op::Configure, Go),
            (Stopped, Op::ConfigureStopped, Go),
            (Starting, Op::ConfigureStopped, Holds),
            (Running, Op::ConfigureStopped, Holds),
            (Paused, Op::ConfigureStopped, Holds),
            (Stopping, Op::ConfigureStopped, Holds),
            (Stopped, Op::Console, NotRunning),
            (Starting, Op::Console, NotRunning),
            (Running, Op::Console, Go),
            (Paused, Op::Console, Go),
            (Stopping, Op::Console, Go),
            (Stopped, Op::ResetDisks, Go),
            (Starting, Op::ResetDisks, Busy),
            (Running, Op::ResetDisks, Holds),
            (Paused, Op::ResetDisks, Holds),
            (Stopping, Op::ResetDisks, Busy),
            (Stopped, Op::ResizeDisk, Go),
            (Starting, Op::ResizeDisk, Busy),
            (Running, Op::ResizeDisk, Go),
            (Paused, Op::ResizeDisk, Go),
            (Stopping, Op::ResizeDisk, Busy),
            (Stopped, Op::RepairDisks, Go),
            (Starting, Op::RepairDisks, Busy),
            (Running, Op::RepairDisks, Holds),
            (Paused, Op::RepairDisks, Holds),
            (Stopping, Op::RepairDisks, Busy),
            (Stopped, Op::Capture, NotRunning),
            (Starting, Op::Capture, NotRunning),
            (Running, Op::Capture, Go),
            (Paused, Op::Capture, Go),
            (Stopping, Op::Capture, NotRunning),
            (Stopped, Op::DiscardSavedState, Go),
            (Starting, Op::DiscardSavedState, Busy),
            (Running, Op::DiscardSavedState, Holds),
            (Paused, Op::DiscardSavedState, Holds),
            (Stopping, Op::DiscardSavedState, Busy),
        ];
        for (state, op, want) in table {
            assert_eq!(verdict(state, op), want, "{op:?} on a {state} VM");
        }
        for state in State::ALL {
            for op in Op::ALL {
                assert!(
                    table.iter().any(|(s, o, _)| (*s, *o) == (state, op)),
                    "{op:?} on a {state} VM is missing from the table"
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
