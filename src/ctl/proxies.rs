//! Client proxies for the contract: gns3-qemuctl's, and the integration tests' (through
//! `gns3_qemuctl::proxies`), so both drive the daemon the same way. `tests/proxies.rs` checks
//! that they have exactly the members, and the types, of `dbus/*.xml`.

use std::collections::HashMap;
use zbus::proxy;
use zbus::{OwnedObjectPath, Variant};

#[proxy(
    interface = "org.gns3.Qemu.Manager",
    default_service = "org.gns3.Qemu",
    default_path = "/org/gns3/Qemu"
)]
pub trait Manager {
    #[zbus(name = "CreateVM")]
    fn create_vm(
        &self,
        name: &str,
        settings: HashMap<&str, Variant<'_>>,
    ) -> zbus::Result<OwnedObjectPath>;
    #[zbus(name = "GetVM")]
    fn get_vm(&self, name_or_id: &str) -> zbus::Result<OwnedObjectPath>;
    #[zbus(name = "ListVMs")]
    fn list_vms(&self) -> zbus::Result<Vec<(String, String, String, OwnedObjectPath)>>;
    fn qemu_binaries(&self) -> zbus::Result<Vec<(String, String)>>;
    fn allocate_udp_port(&self) -> zbus::Result<u16>;
    fn release_udp_port(&self, port: u16) -> zbus::Result<()>;
    fn connect(
        &self,
        a: &zbus::ObjectPath<'_>,
        adapter_a: u32,
        b: &zbus::ObjectPath<'_>,
        adapter_b: u32,
    ) -> zbus::Result<()>;
    fn disconnect(&self, vm: &zbus::ObjectPath<'_>, adapter: u32) -> zbus::Result<()>;
    fn stop_all(&self) -> zbus::Result<()>;
    #[zbus(property)]
    fn udp_host(&self) -> zbus::Result<String>;
    #[zbus(property)]
    fn version(&self) -> zbus::Result<String>;
    #[zbus(property)]
    fn console_host(&self) -> zbus::Result<String>;
}

#[proxy(interface = "org.gns3.Qemu.VM", default_service = "org.gns3.Qemu")]
pub trait Vm {
    fn start(&self) -> zbus::Result<()>;
    fn stop(&self) -> zbus::Result<()>;
    fn power_off(&self) -> zbus::Result<()>;
    fn suspend(&self) -> zbus::Result<()>;
    fn resume(&self) -> zbus::Result<()>;
    fn reload(&self) -> zbus::Result<()>;
    fn delete(&self) -> zbus::Result<()>;
    fn configure(&self, settings: HashMap<&str, Variant<'_>>) -> zbus::Result<()>;
    fn command_line(&self) -> zbus::Result<Vec<String>>;
    fn read_log(&self) -> zbus::Result<String>;
    fn open_console(&self, options: HashMap<&str, Variant<'_>>) -> zbus::Result<zbus::OwnedFd>;
    fn read_console(&self, max_bytes: u32) -> zbus::Result<Vec<u8>>;
    fn human_monitor_command(&self, command: &str) -> zbus::Result<String>;
    fn open_graphics(&self, options: HashMap<&str, Variant<'_>>) -> zbus::Result<zbus::OwnedFd>;
    fn add_udp_tunnel(
        &self,
        adapter: u32,
        local_port: u16,
        remote_host: &str,
        remote_port: u16,
    ) -> zbus::Result<()>;
    fn remove_udp_tunnel(&self, adapter: u32) -> zbus::Result<()>;
    fn set_link_suspended(&self, adapter: u32, suspended: bool) -> zbus::Result<()>;
    fn reset_disks(&self) -> zbus::Result<()>;
    fn discard_saved_state(&self) -> zbus::Result<()>;
    fn resize_disk(&self, disk: &str, bytes: u64) -> zbus::Result<()>;
    fn repair_disks(&self) -> zbus::Result<Vec<String>>;
    fn start_capture(
        &self,
        adapter: u32,
        options: HashMap<&str, Variant<'_>>,
    ) -> zbus::Result<String>;
    fn stop_capture(&self, adapter: u32) -> zbus::Result<()>;
    fn open_capture(&self, adapter: u32) -> zbus::Result<zbus::OwnedFd>;
    #[zbus(property)]
    fn captures(&self) -> zbus::Result<Vec<(u32, String)>>;

    #[zbus(property)]
    fn id(&self) -> zbus::Result<String>;
    #[zbus(property)]
    fn project(&self) -> zbus::Result<String>;
    #[zbus(property)]
    fn state(&self) -> zbus::Result<String>;
    #[zbus(property)]
    fn pid(&self) -> zbus::Result<u32>;
    #[zbus(property)]
    fn accelerated(&self) -> zbus::Result<bool>;
    #[zbus(property)]
    fn exit_status(&self) -> zbus::Result<i32>;
    #[zbus(property)]
    fn console_viewers(&self) -> zbus::Result<u32>;
    #[zbus(property)]
    fn saved_state(&self) -> zbus::Result<bool>;
    #[zbus(property)]
    fn last_error(&self) -> zbus::Result<String>;
    #[zbus(property)]
    fn name(&self) -> zbus::Result<String>;
    #[zbus(property)]
    fn set_name(&self, value: &str) -> zbus::Result<()>;
    #[zbus(property)]
    fn qemu_path(&self) -> zbus::Result<String>;
    #[zbus(property)]
    fn set_qemu_path(&self, value: &str) -> zbus::Result<()>;
    #[zbus(property)]
    fn ram(&self) -> zbus::Result<u32>;
    #[zbus(property)]
    fn set_ram(&self, value: u32) -> zbus::Result<()>;
    #[zbus(property)]
    fn hda_disk_image(&self) -> zbus::Result<String>;
    #[zbus(property)]
    fn set_hda_disk_image(&self, value: &str) -> zbus::Result<()>;
    #[zbus(property)]
    fn hdb_disk_image(&self) -> zbus::Result<String>;
    #[zbus(property)]
    fn set_hdb_disk_image(&self, value: &str) -> zbus::Result<()>;
    #[zbus(property)]
    fn options(&self) -> zbus::Result<String>;
    #[zbus(property)]
    fn set_options(&self, value: &str) -> zbus::Result<()>;
    #[zbus(property)]
    fn console_port(&self) -> zbus::Result<u16>;
    #[zbus(property)]
    fn set_console_port(&self, value: u16) -> zbus::Result<()>;
    #[zbus(property)]
    fn monitor_port(&self) -> zbus::Result<u16>;
    #[zbus(property)]
    fn set_monitor_port(&self, value: u16) -> zbus::Result<()>;
    #[zbus(property)]
    fn display(&self) -> zbus::Result<String>;
    #[zbus(property)]
    fn set_display(&self, value: &str) -> zbus::Result<()>;
    #[zbus(property)]
    fn vnc_port(&self) -> zbus::Result<u16>;
    #[zbus(property)]
    fn set_vnc_port(&self, value: u16) -> zbus::Result<()>;
    #[zbus(property)]
    fn process_priority(&self) -> zbus::Result<String>;
    #[zbus(property)]
    fn set_process_priority(&self, value: &str) -> zbus::Result<()>;
    #[zbus(property)]
    fn cpu_throttling(&self) -> zbus::Result<u32>;
    #[zbus(property)]
    fn set_cpu_throttling(&self, value: u32) -> zbus::Result<()>;
    #[zbus(property)]
    fn accelerator(&self) -> zbus::Result<String>;
    #[zbus(property)]
    fn set_accelerator(&self, value: &str) -> zbus::Result<()>;
    #[zbus(property)]
    fn mac_address(&self) -> zbus::Result<String>;
    #[zbus(property)]
    fn set_mac_address(&self, value: &str) -> zbus::Result<()>;
    #[zbus(property)]
    fn kernel_image(&self) -> zbus::Result<String>;
    #[zbus(property)]
    fn set_kernel_image(&self, value: &str) -> zbus::Result<()>;
    #[zbus(property)]
    fn initrd(&self) -> zbus::Result<String>;
    #[zbus(property)]
    fn set_initrd(&self, value: &str) -> zbus::Result<()>;
    #[zbus(property)]
    fn kernel_command_line(&self) -> zbus::Result<String>;
    #[zbus(property)]
    fn set_kernel_command_line(&self, value: &str) -> zbus::Result<()>;
    #[zbus(property)]
    fn adapters(&self) -> zbus::Result<u32>;
    #[zbus(property)]
    fn set_adapters(&self, value: u32) -> zbus::Result<()>;
    #[zbus(property)]
    fn adapter_type(&self) -> zbus::Result<String>;
    #[zbus(property)]
    fn set_adapter_type(&self, value: &str) -> zbus::Result<()>;
    #[zbus(property)]
    fn legacy_networking(&self) -> zbus::Result<bool>;
    #[zbus(property)]
    fn set_legacy_networking(&self, value: bool) -> zbus::Result<()>;
    #[zbus(property)]
    fn tunnels(&self) -> zbus::Result<Vec<(u32, u16, String, u16)>>;
    #[zbus(property)]
    fn cpus(&self) -> zbus::Result<u32>;
    #[zbus(property)]
    fn set_cpus(&self, value: u32) -> zbus::Result<()>;
    #[zbus(property)]
    fn max_cpus(&self) -> zbus::Result<u32>;
    #[zbus(property)]
    fn set_max_cpus(&self, value: u32) -> zbus::Result<()>;
    #[zbus(property)]
    fn cpu_model(&self) -> zbus::Result<String>;
    #[zbus(property)]
    fn set_cpu_model(&self, value: &str) -> zbus::Result<()>;
    #[zbus(property)]
    fn machine_type(&self) -> zbus::Result<String>;
    #[zbus(property)]
    fn set_machine_type(&self, value: &str) -> zbus::Result<()>;
    #[zbus(property)]
    fn hdc_disk_image(&self) -> zbus::Result<String>;
    #[zbus(property)]
    fn set_hdc_disk_image(&self, value: &str) -> zbus::Result<()>;
    #[zbus(property)]
    fn hdd_disk_image(&self) -> zbus::Result<String>;
    #[zbus(property)]
    fn set_hdd_disk_image(&self, value: &str) -> zbus::Result<()>;
    #[zbus(property)]
    fn hda_disk_interface(&self) -> zbus::Result<String>;
    #[zbus(property)]
    fn set_hda_disk_interface(&self, value: &str) -> zbus::Result<()>;
    #[zbus(property)]
    fn hdb_disk_interface(&self) -> zbus::Result<String>;
    #[zbus(property)]
    fn set_hdb_disk_interface(&self, value: &str) -> zbus::Result<()>;
    #[zbus(property)]
    fn hdc_disk_interface(&self) -> zbus::Result<String>;
    #[zbus(property)]
    fn set_hdc_disk_interface(&self, value: &str) -> zbus::Result<()>;
    #[zbus(property)]
    fn hdd_disk_interface(&self) -> zbus::Result<String>;
    #[zbus(property)]
    fn set_hdd_disk_interface(&self, value: &str) -> zbus::Result<()>;
    #[zbus(property)]
    fn cdrom_image(&self) -> zbus::Result<String>;
    #[zbus(property)]
    fn set_cdrom_image(&self, value: &str) -> zbus::Result<()>;
    #[zbus(property)]
    fn boot_order(&self) -> zbus::Result<String>;
    #[zbus(property)]
    fn set_boot_order(&self, value: &str) -> zbus::Result<()>;
    #[zbus(property)]
    fn firmware(&self) -> zbus::Result<String>;
    #[zbus(property)]
    fn set_firmware(&self, value: &str) -> zbus::Result<()>;
    #[zbus(property)]
    fn bios_image(&self) -> zbus::Result<String>;
    #[zbus(property)]
    fn set_bios_image(&self, value: &str) -> zbus::Result<()>;
    #[zbus(property)]
    fn tpm(&self) -> zbus::Result<bool>;
    #[zbus(property)]
    fn set_tpm(&self, value: bool) -> zbus::Result<()>;
    #[zbus(property)]
    fn linked_clone(&self) -> zbus::Result<bool>;
    #[zbus(property)]
    fn set_linked_clone(&self, value: bool) -> zbus::Result<()>;
    #[zbus(property)]
    fn replicate_link_state(&self) -> zbus::Result<bool>;
    #[zbus(property)]
    fn set_replicate_link_state(&self, value: bool) -> zbus::Result<()>;
    #[zbus(property)]
    fn links(&self) -> zbus::Result<Vec<(u32, bool, bool)>>;
    #[zbus(property)]
    fn custom_adapters(&self) -> zbus::Result<Vec<(u32, String, String)>>;
    #[zbus(property)]
    fn set_custom_adapters(&self, value: &[(u32, String, String)]) -> zbus::Result<()>;
    #[zbus(property)]
    fn on_stop(&self) -> zbus::Result<String>;
    #[zbus(property)]
    fn set_on_stop(&self, value: &str) -> zbus::Result<()>;
    #[zbus(property)]
    fn stop_timeout(&self) -> zbus::Result<u32>;
    #[zbus(property)]
    fn set_stop_timeout(&self, value: u32) -> zbus::Result<()>;
    #[zbus(property)]
    fn autostart(&self) -> zbus::Result<bool>;
    #[zbus(property)]
    fn set_autostart(&self, value: bool) -> zbus::Result<()>;
}
