//! What Start runs: the files checked again (the base images with what they open, see
//! `bases`), the disks prepared and checked (`disk_care`), QEMU spawned on the QMP socket
//! bound for it, then, while its CPUs are still stopped (-S), tunnels, links and limits put
//! in place.

use nix::sys::signal::Signal;
use std::os::fd::OwnedFd;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::UnixStream;
use tokio::sync::mpsc;
use tokio::time::timeout;

use super::Actor;
use crate::model::Accelerator;
use crate::vm::capture::clock::Clock;
use crate::vm::claims::Claims;
use crate::vm::error::{Error, Result};
use crate::vm::firmware::{self, Ovmf};
use crate::vm::process::{Exit, Process};
use crate::vm::qemu::{Qemu, Wiring, QMP_TIMEOUT};
use crate::vm::qmp::{self, Qmp};
use crate::vm::tpm::{self, Swtpm};
use crate::vm::tunnel::{self, Backend};
use crate::vm::{bases, cmdline, disk_care, disks, drives, paths, Pool};

impl Actor {
    fn use_kvm(&self) -> Result<bool> {
        let usable = || {
            std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open("/dev/kvm")
                .map(drop)
        };
        match self.record.settings.accelerator {
            Accelerator::Tcg => Ok(false),
            Accelerator::Auto => Ok(usable().is_ok()),
            Accelerator::Kvm => usable().map(|_| true).map_err(|e| {
                let user = nix::unistd::User::from_uid(nix::unistd::geteuid())
                    .ok()
                    .flatten()
                    .map_or_else(|| nix::unistd::geteuid().to_string(), |u| u.name);
                Error::StartFailed(format!(
                    "VM '{}' asks for KVM (Accelerator=kvm) but /dev/kvm is not usable by user {user}: {e}. \
                     Add {user} to group kvm (and check the CPU's virtualization is on), or set Accelerator to auto or tcg",
                    self.name()
                ))
            }),
        }
    }

    fn launch_plan(&self, kvm: bool, ovmf: Option<&Ovmf>) -> Result<Vec<String>> {
        let pidfile = self.runtime.pidfile();
        let tpm_socket = self.runtime.tpm_socket();
        cmdline::build(&cmdline::Launch {
            settings: &self.record.settings,
            id: &self.record.id,
            project: &self.record.project,
            vm_dir: &self.vm_dir(),
            pidfile: &pidfile,
            kvm,
            sandbox: self.ctx.sandbox,
            ovmf,
            tpm_socket: &tpm_socket,
            formats: &self.record.image_formats,
        })
    }

    pub(super) fn command_line(&self) -> Result<Vec<String>> {
        let ovmf = firmware::find(self.record.settings.firmware)?;
        self.launch_plan(self.use_kvm()?, ovmf.as_ref())
    }

    /// Every base of the VM checked, with what it makes QEMU open; each format found at
    /// first use kept (in the record, saved whole) and given from then on.
    pub(super) async fn checked_bases(&mut self) -> Result<bases::Formats> {
        let (s, known) = (&self.record.settings, &self.record.image_formats);
        let formats = bases::check(s, None, known, &self.ctx.image_dirs, &self.ctx.vetted).await?;
        if formats != *known {
            let mut record = self.record.clone();
            record.image_formats = formats.clone();
            self.save(record.clone()).await?;
            self.record = record;
        }
        Ok(formats)
    }

    /// Everything Start does; on error the caller cleans up and nothing is left running
    /// (it ends the swtpm left in `tpm`). On success `tpm` holds the VM's swtpm, if any.
    pub(super) async fn launch(&mut self, tpm: &mut Option<Swtpm>) -> Result<(Qemu, bool)> {
        let s = self.record.settings.clone();
        // Files may have gone since they were set.
        paths::resolve_qemu_path(&s.qemu_path)?;
        for (key, path) in [
            ("HdaDiskImage", &s.hda_disk_image),
            ("HdbDiskImage", &s.hdb_disk_image),
            ("HdcDiskImage", &s.hdc_disk_image),
            ("HddDiskImage", &s.hdd_disk_image),
            ("CdromImage", &s.cdrom_image),
            ("KernelImage", &s.kernel_image),
            ("Initrd", &s.initrd),
            ("BiosImage", &s.bios_image),
        ] {
            paths::check_file(key, path)?;
        }
        let swtpm = s.tpm.then(tpm::binary).transpose()?;
        // A VM loaded beside another that used one of its bases first holds it only now.
        let mut claims = Claims::new(&self.ctx);
        claims.bases(&s, self.id())?;
        claims.commit();
        // Before anything runs: every base with what it makes QEMU open.
        let formats = self.checked_bases().await?;
        let kvm = self.use_kvm()?;
        let ovmf = firmware::find(s.firmware)?;
        let caps = self.ctx.binaries.probe(&s.qemu_path).await?;
        if self.ctx.sandbox && !caps.sandbox {
            return Err(Error::StartFailed(format!(
                "QEMU binary {} has no seccomp sandbox (-sandbox is not in its -help), which the \
                 daemon runs every QEMU in; install a QEMU built with seccomp (Debian's is), or \
                 set qemu_sandbox = false in the daemon's configuration",
                s.qemu_path
            )));
        }
        drives::check_binary(&caps, &s.qemu_path, &s)
            .map_err(|e| Error::StartFailed(e.to_string()))?;
        if !self.record.tunnels.is_empty() {
            let allow = self.ctx.allow_unsafe_tunnels;
            Backend::allowed(self.name(), s.legacy_networking, &caps, allow)
                .map_err(|e| Error::StartFailed(e.to_string()))?;
        }
        // Before anything is made: a port another program holds stops the start here.
        self.hold_tunnel_ports()?;
        let listeners = self.bind_listeners()?;
        let vm_dir = self.vm_dir();
        let mut made = disks::prepare(&vm_dir, &s, &formats).await?;
        let qemu_img = disks::qemu_img(&s.qemu_path)?;
        if let Some(ovmf) = &ovmf {
            if firmware::prepare(&qemu_img, &vm_dir, ovmf, &self.ctx.vars_templates).await? {
                made.push(firmware::vars(&vm_dir));
            }
        }
        // What was just made is sound; what earlier runs wrote is checked.
        let mut own = disk_care::own_files(&vm_dir, &s);
        own.retain(|f| !made.contains(f));
        disk_care::check_at_start(&qemu_img, self.name(), &own).await?;
        let cmd = self.launch_plan(kvm, ovmf.as_ref())?;

        let sockets = self.runtime.bind().map_err(Error::Internal)?;
        if let Some(swtpm) = &swtpm {
            let (socket, pidfile) = (self.runtime.tpm_socket(), self.runtime.tpm_pidfile());
            *tpm = Some(Swtpm::start(swtpm, &vm_dir, &socket, &pidfile)?);
        }
        let log_path = vm_dir.join("qemu.log");
        let log = std::fs::File::create(&log_path)
            .map_err(|e| Error::Internal(format!("cannot create {}: {e}", log_path.display())))?;

        tracing::info!(vm_id = %self.id(), vm_name = %self.name(), command = %cmd.join(" "), "starting QEMU");
        let fds = sockets.map(OwnedFd::from);
        let nice = self.record.settings.process_priority.nice();
        let mut process = Process::spawn(&cmd, &vm_dir, log, &[&fds[0], &fds[1]], nice)
            .map_err(|e| Error::StartFailed(format!("cannot run {}: {e}", s.qemu_path)))?;
        drop(fds);

        let (events_tx, events) = mpsc::unbounded_channel();
        let clock = Arc::new(Clock::fresh(self.runtime.clock()));
        let connect = async {
            let stream = UnixStream::connect(self.runtime.qmp_socket())
                .await
                .map_err(qmp::Error::Io)?;
            Qmp::handshake(stream, events_tx, Some(clock.clone()), QMP_TIMEOUT).await
        };
        let qmp = tokio::select! {
            qmp = connect => qmp,
            exit = process.exited() => return Err(self.did_not_start(exit)),
        };
        let qmp = match qmp {
            Ok(qmp) => qmp,
            Err(e) => {
                // QEMU usually closes the socket because it is exiting on a bad argument:
                // give it a moment to say so, which is the message that helps.
                if let Ok(exit) = timeout(Duration::from_secs(1), process.exited()).await {
                    return Err(self.did_not_start(exit));
                }
                process.signal(Signal::SIGKILL).ok();
                process.exited().await;
                return Err(Error::StartFailed(format!(
                    "QEMU of VM '{}' did not answer on QMP: {e}. {}",
                    self.name(),
                    self.log_tail()
                )));
            }
        };
        let mut qemu = Qemu {
            process,
            qmp,
            caps,
            events,
            clock,
            shutdown: None,
            throttled: false,
            console: None,
            tpm: None,
        };
        let ready = async {
            self.attach_console(&mut qemu, listeners).await?;
            self.prepare_guest(&mut qemu).await
        };
        match ready.await {
            Ok(()) => Ok((qemu, kvm)),
            Err(e) => {
                qemu.process.signal(Signal::SIGKILL).ok();
                qemu.process.exited().await;
                self.release(&qemu).await;
                Err(e)
            }
        }
    }

    fn did_not_start(&self, exit: Exit) -> Error {
        Error::StartFailed(format!(
            "QEMU did not start VM '{}': {}. {}",
            self.name(),
            exit.describe(),
            self.log_tail()
        ))
    }

    /// The tunnels' ports, held since they were taken, unless another program took one
    /// while no daemon ran; the tunnel moves its socket to its own family when it plugs.
    fn hold_tunnel_ports(&self) -> Result<()> {
        let mut ports = self.ctx.ports(Pool::Udp);
        for t in &self.record.tunnels {
            if !ports.is_bound(t.local_port) {
                ports.bind_at(t.local_port, tunnel::likely_local(t, self.ctx.udp_host))?;
            }
        }
        Ok(())
    }

    /// While QEMU is still paused (-S): tunnels attached, links down where there is none
    /// (or sinks, see ReplicateLinkState), then go. Attaching over QMP here is the same path as attaching to a running VM.
    async fn prepare_guest(&mut self, qemu: &mut Qemu) -> Result<()> {
        // The saved state first: loading it puts back the NICs' links as they were saved,
        // which the tunnels below then set as they are now.
        self.resume_saved(qemu).await?;
        let wiring = Wiring::of(&self.record.settings, &self.ctx);
        for n in 0..self.record.settings.adapters {
            match self.record.tunnels.iter().find(|t| t.adapter == n) {
                Some(t) => qemu
                    .plug(t, &wiring)
                    .await
                    .map_err(|e| {
                        Error::StartFailed(format!(
                            "cannot attach the UDP tunnel of adapter {n} of VM '{}' (local port {}, to {}:{}): {e}",
                            self.name(),
                            t.local_port,
                            t.remote_host,
                            t.remote_port
                        ))
                    })?,
                // A hub whose only port is the NIC's stalls the NIC for good: its link is
                // down (what the guest should see without a cable), or it gets a sink.
                None => qemu.unwired(n, &wiring).await?,
            }
        }
        let s = &self.record.settings;
        qemu.limit(&self.ctx.privilege, &s.name, None, s).await?;
        qemu.qmp.execute("cont", None, QMP_TIMEOUT).await?;
        Ok(())
    }
}
