//! OnStop shutdown: the ACPI power button, then a hard stop if the guest has not powered
//! off within StopTimeout. The actor goes on serving commands meanwhile, so that a PowerOff
//! can end it; every Stop that comes during it waits for the same end.

use std::time::Duration;
use tokio::time::Instant;

use super::Actor;
use crate::model::OnStop;
use crate::vm::error::{Error, Result};
use crate::vm::qemu::QMP_TIMEOUT;
use crate::vm::runtime::Stopping;
use crate::vm::state::Op;
use crate::vm::{Reply, State};

/// A shutdown under way: when it turns into a power-off, and who waits for its end.
pub(super) struct Shutdown {
    deadline: Instant,
    waiters: Vec<Reply<()>>,
}

/// How a VM's QEMU came to end, for its LastError.
pub(super) enum Ending {
    /// Nobody asked: QEMU crashed, was killed, or the guest powered itself off.
    Unasked,
    /// A client asked (Stop, PowerOff, Delete), or the guest obeyed the power button.
    Asked,
    /// A client asked, and the VM had to be powered off: why.
    Forced(String),
}

impl Actor {
    /// A Stop as the actor takes it: refused, done already, joined to the shutdown under
    /// way, the start of a shutdown (answered when it ends), or a stop run now.
    pub(super) async fn stop_command(&mut self, reply: Reply<()>) {
        match self.admit(Op::Stop) {
            Err(e) => {
                let _ = reply.send(Err(e));
            }
            Ok(None) => {
                let _ = reply.send(Ok(()));
            }
            Ok(Some(_)) => {
                if let Some(shutdown) = &mut self.shutdown {
                    shutdown.waiters.push(reply);
                } else if self.state != State::Stopping
                    && self.record.settings.on_stop == OnStop::Shutdown
                {
                    let timeout = Duration::from_secs(self.record.settings.stop_timeout.into());
                    let stopping = Stopping::within(OnStop::Shutdown, timeout);
                    self.begin_shutdown(stopping, Some(reply)).await;
                } else {
                    // Stopping with no shutdown under way is a power-off that failed: again.
                    let _ = reply.send(Box::pin(self.stop()).await);
                }
            }
        }
    }

    /// Presses the power button; the guest has until the end of `stopping` to power off.
    /// A paused guest is resumed first, or it could not hear the button.
    pub(super) async fn begin_shutdown(&mut self, stopping: Stopping, waiter: Option<Reply<()>>) {
        let was_paused = self.state == State::Paused;
        self.set_state(State::Stopping);
        if let Err(e) = self.runtime.begin_stop(&stopping) {
            tracing::warn!(vm_id = %self.id(), "a daemon started during this shutdown will not know of it: {e}");
        }
        let left = stopping.left();
        self.shutdown = Some(Shutdown {
            deadline: Instant::now() + left,
            waiters: waiter.into_iter().collect(),
        });
        let pressed: Result<()> = async {
            let qemu = self.running()?;
            if was_paused {
                qemu.qmp.execute("cont", None, QMP_TIMEOUT).await?;
            }
            qemu.qmp
                .execute("system_powerdown", None, QMP_TIMEOUT)
                .await?;
            Ok(())
        }
        .await;
        match pressed {
            Ok(()) => {
                tracing::info!(vm_id = %self.id(), vm_name = %self.name(), timeout_s = left.as_secs(), "power button pressed");
            }
            Err(e) => {
                let why =
                    format!("the power button could not be pressed ({e}); it was powered off");
                self.end_shutdown(Ending::Forced(why)).await;
            }
        }
    }

    /// Goes on with the stop a previous daemon had under way on the QEMU adopted. The
    /// button is pressed again, as that daemon may have died before it pressed it.
    pub(super) async fn go_on_with(&mut self, left: Stopping) {
        tracing::info!(vm_id = %self.id(), vm_name = %self.name(), on_stop = left.on_stop.as_str(), "going on with the stop the previous daemon had under way");
        match left.on_stop {
            OnStop::Shutdown => self.begin_shutdown(left, None).await,
            OnStop::SaveState => {
                if let Err(e) = Box::pin(self.save_and_stop()).await {
                    tracing::warn!(vm_id = %self.id(), "the save the previous daemon began: {e}");
                }
            }
            OnStop::PowerOff => {
                if let Err(e) = Box::pin(self.power_off()).await {
                    tracing::warn!(vm_id = %self.id(), "the power-off the previous daemon began: {e}");
                }
            }
        }
    }

    /// When the shutdown under way turns into a power-off; None if there is none.
    pub(super) fn shutdown_deadline(&self) -> Option<Instant> {
        self.shutdown.as_ref().map(|s| s.deadline)
    }

    /// The guest did not power off in time.
    pub(super) async fn shutdown_overdue(&mut self) {
        let timeout = self.record.settings.stop_timeout;
        let why = format!(
            "the guest did not power off within {timeout} s of the power button; it was powered off"
        );
        tracing::warn!(vm_id = %self.id(), vm_name = %self.name(), "{why}");
        self.end_shutdown(Ending::Forced(why)).await;
    }

    /// Powers the VM off, unless it is stopped already, and answers whoever waits for the
    /// shutdown.
    pub(super) async fn end_shutdown(&mut self, ending: Ending) {
        let result = match self.qemu.is_some() {
            true => Box::pin(self.pull_cord(ending)).await,
            false => Ok(()),
        };
        self.answer_shutdown(&result);
    }

    /// Answers whoever waits for the shutdown: the VM is stopped, or why not.
    pub(super) fn answer_shutdown(&mut self, result: &Result<()>) {
        let Some(shutdown) = self.shutdown.take() else {
            return;
        };
        for waiter in shutdown.waiters {
            let _ = waiter.send(match result {
                Ok(()) => Ok(()),
                Err(e) => Err(Error::Timeout(e.to_string())),
            });
        }
    }

    /// How QEMU's exit now is to be told: asked for while a shutdown is under way.
    pub(super) fn ending_now(&self) -> Ending {
        match self.shutdown {
            Some(_) => Ending::Asked,
            None => Ending::Unasked,
        }
    }
}
